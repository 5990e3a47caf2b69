"""sunoapi-style vocal removal (see ``routes``)."""
