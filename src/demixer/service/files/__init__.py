"""Uploaded inputs: a file's states (``states``) and their one owner (``lifecycle``)."""
