"""Gaudio Developers (GSEP) compatibility router, mounted under ``/developers/api``.

See ``../shared/docs/vendor-apis.md`` section 1. ``envelope`` holds the wire envelope and the one
table from demixer's errors to Gaudio's codes, ``multipart`` the chunked upload, ``routes`` the
endpoints (jobs go through the native submit path). Gaudio sends no webhooks.
"""
