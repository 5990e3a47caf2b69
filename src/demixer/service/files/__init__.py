"""Uploaded inputs: the owner of a file's states (``lifecycle``)."""
