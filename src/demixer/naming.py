"""What separated files are called, everywhere: ``{track}_{stem}.{ext}``.

One scheme for ``demixer separate``, the server's downloads (``file_name`` in results, so
``demixer remote separate``, the Python client and the web page too): every file carries the
song's name, so stems dragged out of their folder into a DAW still say whose they are, and the
stems of one song sort together.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_TEMPLATE",
    "SECRET_QUERY",
    "input_name",
    "is_residual_maker",
    "model_name",
    "output_name",
    "renamed",
    "residual_maker",
    "shown_name",
    "shown_url",
    "track_name",
    "url_file_name",
]

DEFAULT_TEMPLATE = "{track}_{stem}.{ext}"
# What made the residual, in ``made_by`` (an output -> what made it): no model, a subtraction.
_RESIDUAL_MAKER = "the input minus "
# Characters Windows refuses in a file name (and SMB shares with it; ":" would even name an
# NTFS alternate stream of another file, a silent loss).
_NOT_PORTABLE = frozenset('<>:"/\\|?*')


def input_name(raw: str) -> str:
    """The name a server job gives its input ``raw`` (an upload's file name, or a URL's last
    path segment), which its downloads are named after: a plain name, no folders (``\\`` is
    one too) or control characters, a hidden or dots-only name as ``audio``, at most its last
    120 characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    if not name.strip(".") or name.startswith("."):
        name = "audio" + PurePosixPath(name).suffix
    return name[-120:]


def url_file_name(url: str) -> str:
    """The file name an ``audio_url`` names: its path's last segment (``""`` when it has
    none). Never its query or fragment, nor its host, user name or password: a URL with no
    path (``https://user:secret@cdn.example.com``) names no file."""
    return urlsplit(url).path.rsplit("/", 1)[-1]


# Query (or fragment) parameters whose values are credentials: presigned S3, GCS and CloudFront
# URLs' signatures and keys, Azure's SAS ``sig``, a CDN's ``token``, an API key. A URL shown to
# anyone (an error message, a job's log, a webhook, the access log) has them as ``…``.
SECRET_QUERY = re.compile(
    r"(?i)([?&#](?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
    r"x-goog-signature|x-goog-credential|policy|key-pair-id|api_key|apikey|key|token|"
    r"access_token|auth|password)=)[^&#\s\"]*"
)
# The user name and password of ``scheme://user:password@host``: up to the last ``@`` before
# the path, as a URL parser reads it.
_USERINFO = re.compile(r"^(\s*[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")


def shown_url(url: str, limit: int = 200) -> str:
    """``url`` as demixer shows or stores it for people to read (an ``audio_url`` in an error
    message, a job's log, a failure webhook): its user name and password as ``***``, the
    values of :data:`SECRET_QUERY`'s parameters as ``…``, at most its first ``limit``
    characters. A ``https://user:pass@host/x.mp3?X-Amz-Signature=...`` is a credential its
    owner gave this server alone; the job's log and webhook reach other places."""
    shown = _USERINFO.sub(r"\1***@", url, count=1)
    return SECRET_QUERY.sub(r"\1…", shown)[:limit]


def output_name(track: str, stem: str, ext: str) -> str:
    """The file name of ``stem`` of the song ``track`` (a file name without its extension, as
    :func:`track_name` spells it in a file name)."""
    return DEFAULT_TEMPLATE.format(track=track_name(track), stem=stem, ext=ext)


def _portable(name: str) -> str:
    return "".join("_" if c in _NOT_PORTABLE else c for c in name)


def model_name(model_id: str) -> str:
    """``model_id`` as a file or folder name (an output template's ``{model}``) that Windows
    and SMB shares take too: the characters they refuse (``<>:"/\\|?*``), such as the ``:``
    of an ensemble's ``max:a+b``, as ``_`` (``max_a+b``). Catalogue ids and ``models add``
    names hold none of them, and stay as they are."""
    return _portable(model_id)


def track_name(track: str) -> str:
    """``track`` (a song's file name without its extension) as an output name's ``{track}``:
    as :func:`shown_name` shows it, with the characters Windows and SMB shares refuse
    (``<>:"/\\|?*``; a ``:`` would name an NTFS stream of another file) and a trailing dot or
    space (which Windows drops from a folder's name) as ``_``: ``What? (Live).`` ->
    ``What_ (Live)_``. Linux takes them all, so a song's name may hold them; an ordinary name
    stays as it is."""
    name = _portable(shown_name(track))
    kept = name.rstrip(". ")
    return kept + "_" * (len(name) - len(kept))


def renamed(file_name: str, track: str, new_track: str) -> str:
    """``file_name``, named after ``track`` by :data:`DEFAULT_TEMPLATE`, named after
    ``new_track`` instead (unchanged if it is not ``track``'s). Both are spelled as
    :func:`track_name` spells them; a name written before it did (``a:b_vocals.wav``) is
    ``track``'s too."""
    new = track_name(new_track)
    for old in dict.fromkeys((track_name(track), track)):
        if file_name.startswith(f"{old}_"):
            return f"{new}_{file_name[len(old) + 1 :]}"
    return file_name


def shown_name(name: str) -> str:
    """``name`` (a file name, as the OS gave it) as every tool can show and store it: bytes
    that are not UTF-8 (an old Latin-1 name) as U+FFFD, control characters (a newline) as
    ``_``. Output files are named with it, and it is what the CLI prints."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join("_" if unicodedata.category(c) == "Cc" else c for c in text)


def residual_maker(stems: Iterable[str]) -> str:
    """What made a residual, said in ``made_by``: ``the input minus vocals, drums``."""
    return _RESIDUAL_MAKER + ", ".join(stems)


def is_residual_maker(made_by: str) -> bool:
    """Whether a ``made_by`` value is :func:`residual_maker`'s (a residual's, not a model's)."""
    return made_by.startswith(_RESIDUAL_MAKER)
