"""What separated files are called, everywhere: ``{track}_{stem}.{ext}``.

One scheme for ``demixer separate``, the server's downloads (``file_name`` in results, so
``demixer remote separate``, the Python client and the web page too): every file carries the
song's name, so stems dragged out of their folder into a DAW still say whose they are, and the
stems of one song sort together.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TEMPLATE", "output_name"]

DEFAULT_TEMPLATE = "{track}_{stem}.{ext}"


def output_name(track: str, stem: str, ext: str) -> str:
    """The file name of ``stem`` of the song ``track`` (a file name without its extension)."""
    return DEFAULT_TEMPLATE.format(track=track, stem=stem, ext=ext)
