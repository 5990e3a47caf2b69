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
from urllib.parse import unquote, urlsplit

from demixer.filemode import NAME_MAX

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
    "stored_name",
    "track_name",
    "url_file_name",
]

DEFAULT_TEMPLATE = "{track}_{stem}.{ext}"
# What made the residual, in ``made_by`` (an output -> what made it): no model, a subtraction.
_RESIDUAL_MAKER = "the input minus "
# Characters Windows refuses in a file name (and SMB shares with it; ":" would even name an
# NTFS alternate stream of another file, a silent loss).
_NOT_PORTABLE = frozenset('<>:"/\\|?*')
# Names Windows keeps for devices, in any case, with or without an extension (and spaces before
# it): a folder or file called CON, aux.mp3 or "nul .wav" is the device, where a write is lost
# or the folder cannot be made. Microsoft's "Naming Files" lists COM0 and the superscripts too.
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
# Invisible, yet part of how a name is spelled: the zero-width non-joiner (U+200C) of
# Persian, where "songs" is آهنگ, U+200C, ها (without it the letters join into another
# spelling), and of Indic scripts; the joiner (U+200D) of emoji sequences (man, U+200D,
# woman, U+200D, girl is one family, not three people). Other format characters go, the bidi
# overrides above all.
_JOINERS = frozenset("\u200c\u200d")


def _visible(name: str) -> str:
    """``name`` without control characters (a newline) and invisible format characters (the
    bidi override U+202E shows ``evil``, U+202E, ``gnp.wav`` as ``evilvaw.png``), the joiners
    a name is spelled with (:data:`_JOINERS`) and spaces (U+3000, U+00A0) kept."""
    return "".join(
        c for c in name if c.isprintable() or c in _JOINERS or unicodedata.category(c) == "Zs"
    )


def stored_name(raw: str) -> str:
    """An upload's ``file_name`` (a JSON field or a form part's, as a client sent it) as demixer
    stores and lists it (``GET /v1/files``, the jobs made from it, the web page's history): as
    :func:`input_name` reads its characters (:func:`_visible`), ``upload`` when none is left;
    an ordinary name stays byte for byte as it was sent, folders and length too."""
    return _visible(raw) or "upload"


def input_name(raw: str) -> str:
    """The name a server job gives its input ``raw`` (an upload's file name, or a URL's last
    path segment), which its downloads are named after: a plain name, no folders (``\\`` is
    one too) or control characters, a hidden or dots-only name as ``audio``, at most its last
    120 characters and of those at most the last 255 bytes of UTF-8 (90 米 are 270): the
    worker saves the input under this name, and a file system takes no longer one."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _visible(name).strip()
    if not name.strip(".") or name.startswith("."):
        name = "audio" + PurePosixPath(name).suffix
    # Cut between characters: half a UTF-8 character is a name macOS refuses.
    return name[-120:].encode()[-NAME_MAX:].decode("utf-8", "ignore")


def url_file_name(url: str) -> str:
    """The file name an ``audio_url`` names: its path's last segment, percent-decoded as UTF-8
    (``%E7%B1%B3%20Lemon.mp3`` is ``米 Lemon.mp3``, as a browser shows it; bytes that are not
    UTF-8 as U+FFFD; control characters, ``%00`` or ``%0A``, and bidi overrides left out, as
    :func:`stored_name` leaves them out of an upload's), ``""`` when it has
    none. Never its query or fragment, nor its host, user name or password: a URL with no path
    (``https://user:secret@cdn.example.com``) names no file."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1], errors="replace")
    return _visible(name)


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
    :func:`track_name` spells it in a file name), ``track`` cut short at its end where the
    whole would be longer than the 255 bytes a file system takes (:func:`_named`)."""
    return _named(track_name(track), f"_{stem}.{ext}")


def _portable(name: str) -> str:
    """``name`` with the characters Windows refuses as ``_``, and a device's name (CON,
    ``aux.live``) with ``_`` after it (``CON_``, ``aux_.live``)."""
    name = "".join("_" if c in _NOT_PORTABLE else c for c in name)
    base = name.split(".", 1)[0].rstrip(" ")
    if base.upper() in _RESERVED:
        name = base + "_" + name[len(base) :]
    return name


def _named(track: str, tail: str) -> str:
    """``track`` followed by ``tail`` (``_vocals.wav``), in at most :data:`NAME_MAX` bytes of
    UTF-8: a song's name is a legal name of up to 255 bytes (85 characters of 米津玄師, 127 of
    Cyrillic), and the one with its stem added can be too long to be written. Cut between
    characters: half a UTF-8 character is a name macOS refuses."""
    room = max(NAME_MAX - len(tail.encode()), 0)
    return track.encode()[:room].decode("utf-8", "ignore") + tail


def model_name(model_id: str) -> str:
    """``model_id`` as a file or folder name (an output template's ``{model}``) that Windows
    and SMB shares take too: the characters they refuse (``<>:"/\\|?*``), such as the ``:``
    of an ensemble's ``max:a+b``, as ``_`` (``max_a+b``), and a Windows device's name (``aux``)
    with ``_`` after it. Catalogue ids and ``models add`` names hold none of them, and stay as
    they are."""
    return _portable(model_id)


def track_name(track: str) -> str:
    """``track`` (a song's file name without its extension) as an output name's ``{track}``:
    as :func:`shown_name` shows it, with the characters Windows and SMB shares refuse
    (``<>:"/\\|?*``; a ``:`` would name an NTFS stream of another file) and a trailing dot or
    space (which Windows drops from a folder's name) as ``_``: ``What? (Live).`` ->
    ``What_ (Live)_``; a Windows device's name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, in any
    case, with or without an extension) with ``_`` after it: ``con.live`` -> ``con_.live``, so
    neither a ``{track}/`` folder nor a file named after the song is the device. Linux takes
    them all, so a song's name may hold them; an ordinary name stays as it is."""
    name = _portable(shown_name(track))
    kept = name.rstrip(". ")
    return kept + "_" * (len(name) - len(kept))


def renamed(file_name: str, track: str, new_track: str) -> str:
    """``file_name``, named after ``track`` by :func:`output_name`, named after ``new_track``
    instead (unchanged if it is not ``track``'s). Both are spelled as :func:`track_name`
    spells them; a name written before it did (``a:b_vocals.wav``) is ``track``'s too."""
    new = track_name(new_track)
    for old in dict.fromkeys((track_name(track), track)):
        if file_name.startswith(f"{old}_"):
            return _named(new, file_name[len(old) :])
        # ``old`` cut short: its tail (``_vocals.wav``) starts at a "_" no later than where
        # the two names part.
        pairs = zip(file_name, old, strict=False)
        same = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(file_name), len(old)))
        for start in range(min(same, len(file_name) - 1), -1, -1):
            tail = file_name[start:]
            if tail.startswith("_") and _named(old, tail) == file_name:
                return _named(new, tail)
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
