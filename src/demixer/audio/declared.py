"""What an audio or video file says about its length before it is decoded, and the checks on it
that need no decoding.

A length is read where the file states one (:func:`declared_seconds`): the stream's own
duration (an MP3's Xing, Info or VBRI frame count, FLAC's STREAMINFO, MP4's sample tables), a
Matroska track's DURATION tag, else the container's where the audio is its only timed stream;
a raw stream (ADTS AAC, AC-3, DTS...) states none. For WAV, RF64, Wave64 and uncompressed CAF
the ``data`` chunk's size in the header is read too (:func:`checked_declared`), since FFmpeg
clamps their duration to the bytes present. :mod:`demixer.audio.decode` holds the samples it
decodes against these figures (:func:`slack`, :func:`truncated`).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Literal

import av
from av.audio.stream import AudioStream
from av.container import InputContainer

from demixer.errors import InvalidAudio
from demixer.naming import shown_name

__all__ = [
    "PCM_HEADERS",
    "TRUNCATION_MIN_SECONDS",
    "TRUNCATION_TOLERANCE",
    "checked_declared",
    "declared_seconds",
    "quoted_name",
    "slack",
    "start_seconds",
    "truncated",
]


TRUNCATION_TOLERANCE = 0.02  # fraction of the declared length that may fail to decode


# Matroska's times are whole milliseconds: a block's start and its length each rounded, and
# the first block's start too, so a length can read up to 1.5 ms long.
_MATROSKA_ROUNDING = 0.002


TRUNCATION_MIN_SECONDS = 0.1  # never call a shortfall shorter than this truncation


def quoted_name(path: Path) -> str:
    return f"'{shown_name(path.name)}'"


# A Matroska track's length as its statistics tag states it ("00:03:25.120000000"); FFmpeg names
# the tag DURATION, or DURATION-eng when the tag has a language (mkvmerge's).
_TAG_DURATION = re.compile(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _tagged_seconds(stream: AudioStream) -> float | None:
    for key, value in stream.metadata.items():
        if key.split("-")[0].upper() == "DURATION" and isinstance(value, str):
            found = _TAG_DURATION.fullmatch(value.strip())
            if found:
                hours, minutes, seconds = found.groups()
                total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
                return total or None  # a placeholder never filled in states nothing
    return None


# Raw audio streams, whose files state no length: FFmpeg's duration for them is the bytes after
# the first frame at the first frame's bit rate, a guess from the bytes present that can never
# show a cut, and is wrong (by minutes) when the bit rate changes: a VBR stream that starts
# quietly, or two files joined end to end.
_UNDECLARED = ("aac", "ac3", "eac3", "dts", "truehd", "amr")


def declared_seconds(path: Path, container: InputContainer, stream: AudioStream) -> float | None:
    """Seconds the audio stream declares: its own duration, else its Matroska track's
    DURATION tag (which FFmpeg's muxer writes as the track's end time: less its start, where
    the sound starts after the picture), else the container's, but only when no other timed
    stream shares the file.
    The container's duration is its longest stream's: a video running on past the song, or a
    longer second audio track, would read as a cut audio stream (refused as truncated).
    A raw stream declares nothing, and an MP3 only the length its Xing, Info or VBRI tag
    counts. ASF (WMV, WMA) gives every stream the file's play time: beside a picture that
    runs on past the sound (a screen recording), the audio's own length is not declared."""
    name = container.format.name
    if name in _UNDECLARED:
        return None
    others = [
        s
        for s in container.streams
        if s is not stream
        and s.type in ("audio", "video", "subtitle", "data")
        and not s.disposition & av.stream.Disposition.attached_pic  # a cover picture
    ]
    if name == "asf" and others:
        return None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if name == "mp3":
            # FFmpeg guesses from the bit rate where the tag is missing, or where the file is
            # longer than the tag says (MP3s joined end to end, each with its own tag).
            tagged = _mp3_tag_seconds(path)
            return None if tagged is None else min(seconds, tagged)
        if name == "ogg":
            # An Ogg Opus stream's length counts its pre-skip: a file of exactly the duration
            # limit read as 6.5 ms over it.
            seconds -= _pre_skip_seconds(stream)
        return seconds
    tagged = _tagged_seconds(stream)
    if tagged is not None:
        tagged = max(tagged - max(start_seconds(stream), 0.0), 0.0)
        if name == "matroska,webm" and stream.codec_context.name == "opus":
            # As in Ogg, the length counts the pre-skip (it runs from the first block's time,
            # 6.5 ms before zero), and Matroska's times are whole milliseconds, each rounded:
            # a WebM of exactly the duration limit read as 8 ms over it. Take the length it
            # surely has; the samples decoded hold the limit exactly.
            return max(tagged - _pre_skip_seconds(stream) - _MATROSKA_ROUNDING, 0.0)
        return tagged
    if container.duration is not None and not others:
        return float(container.duration) / av.time_base
    return None


def start_seconds(stream: av.stream.Stream) -> float:
    """The time of the stream's first sample, seconds (0 when it states none)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _pre_skip_seconds(stream: AudioStream) -> float:
    """Seconds of an Opus stream's pre-skip (312 samples from FFmpeg's and libopus' encoders),
    which its length counts and the decoder drops; 0 for other codecs (their delay is decoded:
    AAC's priming comes out as samples)."""
    if stream.codec_context.name != "opus":
        return 0.0
    return (stream.codec_context.delay or 0) / stream.codec_context.sample_rate


def _mp3_tag_seconds(path: Path) -> float | None:
    """Seconds of audio an MP3's first frame says the file holds: the frame count of its Xing
    or Info tag (LAME's, FFmpeg's) or VBRI tag (Fraunhofer's), times the samples in a frame;
    encoder delay and padding included. ``None`` when the first frame (after any ID3v2 tag)
    has no such count, or the file does not parse."""
    try:
        with path.open("rb") as f:
            start = 0
            head = f.read(10)
            while head[:3] == b"ID3" and len(head) == 10:  # ID3v2 tags before the first frame
                size = 0
                for byte in head[6:10]:  # "synchsafe": 7 bits a byte
                    size = size << 7 | byte & 0x7F
                start += 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a footer
                f.seek(start)
                head = f.read(10)
            f.seek(start)
            frame = f.read(200)  # the header and every place a tag may start
    except OSError:
        return None
    if len(frame) < 4 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        return None
    version, layer, rate_index = (frame[1] >> 3) & 3, (frame[1] >> 1) & 3, (frame[2] >> 2) & 3
    if version == 1 or layer == 0 or rate_index == 3:  # reserved values: not a frame
        return None
    mpeg1, mono = version == 3, frame[3] >> 6 == 3
    rate = (44_100, 48_000, 32_000)[rate_index] >> {3: 0, 2: 1, 0: 2}[version]
    samples = {3: 384, 2: 1152}.get(layer, 1152 if mpeg1 else 576)  # layer I, II, III
    xing = 4 + (17 if mono else 32) if mpeg1 else 4 + (9 if mono else 17)  # after side info
    frames = 0
    if frame[xing : xing + 4] in (b"Xing", b"Info") and frame[xing + 7] & 1:  # frames field set
        frames = int.from_bytes(frame[xing + 8 : xing + 12], "big")
    elif frame[36:40] == b"VBRI":
        frames = int.from_bytes(frame[50:54], "big")
    return frames * samples / rate if frames else None


# Sony Wave64, WAV with 64-bit sizes: its chunks are named by GUIDs, the "riff" one and those
# that start with a RIFF name ("wave", "fmt ", "data") followed by this tail.
_W64_RIFF = b"riff" + bytes.fromhex("2e91cf11a5d628db04c10000")


_W64_TAIL = bytes.fromhex("f3acd3118cd100c04f8edb8a")


# The containers whose header states the length of the audio in bytes (:func:`_pcm_seconds`).
PCM_HEADERS = ("wav", "w64", "caf")


def _pcm_seconds(path: Path) -> tuple[float, float] | None:
    """Seconds of audio a PCM file's header promises (its ``data`` chunk's size / the byte
    rate), and seconds present in the file after the header (at the same byte rate).

    Read for WAV (RIFF), RF64 and BW64 (WAV whose 64-bit ``data`` size is in a ``ds64``
    chunk), Sony Wave64 and Apple's CAF holding uncompressed audio. FFmpeg makes the length of
    a WAV, Wave64 or CAF that of the bytes present, so only the header shows that it was cut;
    an RF64's cut showed, but only once decoded (a job failed that the upload could refuse).

    Returns ``None`` for streamed headers (size 0, 0xFFFFFFFF or CAF's -1 with data
    following), for a compressed CAF (its packet table states its length; :func:`probe`
    counts its packets against it) and for anything that does not parse: the caller then has
    no header evidence and falls back to FFmpeg's duration.
    """
    byte_rate = 0.0
    wide = -1  # RF64's data size, from its ds64 chunk
    try:
        with path.open("rb") as f:
            head = f.read(40)
            order: Literal["little", "big"] = "little"
            if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
                # 4-byte names and sizes; a size counts the data only; word-aligned.
                name_bytes, size_bytes, counted, align = 4, 4, 0, 2
                f.seek(12)
            elif head[:16] == _W64_RIFF and head[24:40] == b"wave" + _W64_TAIL:
                # 16-byte GUIDs, 8-byte sizes counting the 24-byte chunk header; 8-aligned.
                name_bytes, size_bytes, counted, align = 16, 8, 24, 8
            elif head[:4] == b"caff":
                # Big-endian 8-byte sizes counting the data only; not aligned.
                name_bytes, size_bytes, counted, align, order = 4, 8, 0, 1, "big"
                f.seek(8)
            else:
                return None
            # Bounded walk: real files put the format and "data" within the first few chunks.
            for _ in range(64):
                chunk = f.read(name_bytes + size_bytes)
                if len(chunk) < name_bytes + size_bytes:
                    return None
                kind = chunk[:4] if name_bytes == 4 or chunk[4:16] == _W64_TAIL else b""
                length = int.from_bytes(chunk[name_bytes:], order) - counted
                if length < 0:
                    return None
                if kind == b"ds64" and length >= 16:  # RIFF size, then data size (8 bytes each)
                    wide = int.from_bytes(f.read(16)[8:], "little")
                    length -= 16
                elif kind == b"fmt " and length >= 16:
                    byte_rate = int.from_bytes(f.read(16)[8:12], "little")
                    length -= 16
                elif kind == b"desc" and length >= 32:  # CAF's format
                    desc = f.read(32)
                    rate = struct.unpack(">d", desc[:8])[0]
                    packet_bytes, packet_frames = struct.unpack(">II", desc[16:24])
                    if packet_bytes and packet_frames and 0 < rate < 1e7:
                        byte_rate = packet_bytes * rate / packet_frames
                    length -= 32
                elif kind == b"data":
                    if order == "big":
                        if length == (1 << 64) - 1:  # -1: written while streaming
                            return None
                        f.seek(4, os.SEEK_CUR)  # CAF data starts with an edit count
                        length -= 4
                    streamed = size_bytes == 4 and length == 0xFFFFFFFF
                    if streamed and wide >= 0:
                        length, streamed = wide, False
                    present = path.stat().st_size - f.tell()
                    if byte_rate <= 0 or streamed or (length <= 0 and present > 0):
                        return None
                    return length / byte_rate, present / byte_rate
                f.seek(length + (-length % align), os.SEEK_CUR)  # padded to alignment
    except (OSError, struct.error):
        return None
    return None


def _first_bytes(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _ogg_ends_mid_page(path: Path) -> bool:
    """Whether an Ogg file's last page is cut short (the file was truncated).

    FFmpeg drops a partial last page silently and takes the duration from the last whole one,
    so neither decoding nor the declared length shows an Ogg cut; the page framing does. Only
    the tail is read: a page is at most 65 307 bytes.
    """
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 65_536))
            tail = f.read()
    except OSError:
        return False
    start = tail.rfind(b"OggS")
    # A capture pattern with a bad version byte is payload that happens to read "OggS".
    while start >= 0 and start + 4 < len(tail) and tail[start + 4] != 0:
        start = tail.rfind(b"OggS", 0, start)
    if start < 0:
        return False
    page = tail[start:]
    if len(page) < 27 or len(page) < 27 + page[26]:
        return True
    body = sum(page[27 : 27 + page[26]])
    return len(page) < 27 + page[26] + body


def truncated(path: Path, have: float, declared: float, how: str) -> InvalidAudio:
    return InvalidAudio(
        f"{quoted_name(path)} is truncated or damaged: only {have:.2f} s of audio {how} but the "
        f"file declares {declared:.2f} s (an incomplete download or copy?)"
    )


def slack(declared: float) -> float:
    return max(TRUNCATION_MIN_SECONDS, TRUNCATION_TOLERANCE * declared)


def checked_declared(path: Path, container: str, declared: float | None) -> float | None:
    """The length ``path`` (opened by FFmpeg's ``container`` demuxer) declares, given the
    ``declared`` seconds FFmpeg reads (:func:`declared_seconds`), after the checks that need no
    decoding (the probe and the reader make the same ones, so an upload and its job give one
    answer): an Ogg file whose last page is cut, or a WAV (RF64, Wave64, CAF) with fewer bytes
    than its header promises, is truncated; a big-endian WAV is refused."""
    if container == "ogg" and _ogg_ends_mid_page(path):
        raise InvalidAudio(
            f"{quoted_name(path)} is truncated: its last Ogg page is cut short "
            "(an incomplete download or copy?)"
        )
    if container == "wav" and _first_bytes(path, 4) == b"RIFX":
        # FFmpeg reads a big-endian WAV's header right but its samples as little-endian ones:
        # full-scale noise (a float one: values of 1e38), separated into noise stems.
        raise InvalidAudio(
            f"{quoted_name(path)} is a big-endian WAV (RIFX), which FFmpeg decodes as noise; "
            "convert it to a standard WAV or to FLAC first"
        )
    if container in PCM_HEADERS:
        # FFmpeg clamps a WAV's duration to the bytes present; the header still says how long
        # the file was meant to be, which is what exposes a cut.
        header = _pcm_seconds(path)
        if header is not None:
            declared, present = header
            if present < declared - slack(declared):
                raise truncated(path, present, declared, "is present")
        if declared == 0:
            raise InvalidAudio(f"{quoted_name(path)} contains no audio samples (zero length)")
    return declared
