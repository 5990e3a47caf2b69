"""MusicGPT-style stem extraction (see ``routes``)."""
