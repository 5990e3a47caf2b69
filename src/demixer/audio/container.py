"""Opening a file with FFmpeg, choosing the audio track a player plays, and what it holds
without decoding it (:func:`probe`).

Only the demuxers in :data:`DEMUXERS` open a file (audio and video containers; no playlists,
concat scripts, image sequences or network protocols, so a crafted file cannot make FFmpeg
read another path or a URL), and every way that can fail is one
:class:`~demixer.errors.InvalidAudio`. :mod:`demixer.audio.decode` reads the track chosen
here; :func:`probe` counts its packets (bounded by a duration limit) so that a hidden or
understated length shows at upload, where the job would find it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.audio.stream import AudioStream
from av.container import InputContainer

from demixer.audio.declared import (
    checked_declared,
    declared_seconds,
    quoted_name,
    slack,
    start_seconds,
    truncated,
)
from demixer.errors import DurationLimit, InputNotFound, InvalidAudio, UnsupportedSampleRate
from demixer.naming import shown_name

__all__ = [
    "DEMUXERS",
    "FOREIGN",
    "MAX_HOLE_SECONDS",
    "MAX_SAMPLE_RATE",
    "MIN_HOLE_SECONDS",
    "MIN_SAMPLE_RATE",
    "AudioInfo",
    "audio_info",
    "duration_refusal",
    "from_start",
    "is_timed",
    "open_file",
    "over_limit",
    "probe",
    "track_refusal",
    "unreadable",
]


MIN_SAMPLE_RATE = 8_000  # Hz; below this there is nothing left of music to separate


MAX_SAMPLE_RATE = 192_000  # Hz; the highest rate studio formats use


# A gap in a video's audio timestamps read as silence: from two AAC frames (shorter ones are a
# muxer's rounding) to a minute (a longer jump is a broken clock, not a pause in the sound).
MIN_HOLE_SECONDS = 0.05


MAX_HOLE_SECONDS = 60.0


# The containers whose audio timestamps place the sound against the picture: MP4 and MOV,
# Matroska and WebM, MPEG transport and program streams (broadcast and camcorder recordings,
# DVD video), FLV, ASF (WMV). Not AVI: its demuxer numbers audio chunks one after another,
# skipping the empty ones a muxer writes for a gap, so no gap shows in its timestamps.
_TIMED = ("mov", "matroska", "mpegts", "mpeg", "flv", "asf")


# FFmpeg's demuxers for the audio and video files users send. Anything else (concat scripts, HLS
# and DASH playlists, image sequences, raw streams, lavfi, network protocols...) is refused
# before it can open another file or a URL.
DEMUXERS = (
    "wav", "w64", "flac", "mp3", "aac", "ac3", "eac3", "dts", "truehd", "ogg", "aiff", "caf",
    "au", "wv", "ape", "tta", "mpc", "mpc8", "amr", "asf", "xwma", "dsf", "mov", "matroska",
    "avi", "flv", "mpegts", "mpeg",
)  # fmt: skip


_OPEN_OPTIONS = {"format_whitelist": ",".join(DEMUXERS), "protocol_whitelist": "file"}


# Exceptions PyAV and the OS raise while opening or decoding; all become InvalidAudio here.
# av.error.FFmpegError subclasses OSError/ValueError/EOFError, listed for clarity.
FOREIGN = (av.error.FFmpegError, OSError, EOFError, ValueError, IndexError)


@dataclass(frozen=True)
class AudioInfo:
    """What a file says about the audio track it is read for, before decoding.

    That track is the one asked for, else the one a player plays (:func:`_chosen_stream`):
    the first audio track flagged default, else the first audio track.

    Attributes:
        sample_rate: Hz of the decoded stream (the input rate; nothing is resampled).
        channels: channels of the audio track as stored (may be more than 2).
        duration: seconds from the file's start to the audio's declared end (``offset``
            included: the length of the stems), ``None`` when the audio declares no length.
        codec: FFmpeg's codec name, e.g. ``"mp3"``, ``"aac"``, ``"pcm_s16le"``.
        container: FFmpeg's demuxer name, e.g. ``"mp3"``, ``"mov,mp4,m4a,3gp,3g2,mj2"``.
        offset: seconds of the file's timeline (a video's) before the audio's first sample;
            read as silence, so the stems keep the audio's place against the picture.
        track: which audio track is read, counted from 1.
        tracks: how many audio tracks the file has.
        asked: whether ``track`` was asked for (else it is the one players play).
    """

    sample_rate: int
    channels: int
    duration: float | None
    codec: str
    container: str
    offset: float = 0.0
    track: int = 1
    tracks: int = 1
    asked: bool = False

    def track_note(self, name: str) -> str | None:
        """What a user with several audio tracks in ``name`` is told: which one is read;
        ``None`` for a file with one, or when the track was asked for."""
        if self.tracks < 2 or self.asked:
            return None
        return (
            f"{name} has {self.tracks} audio tracks; track {self.track} (the one players play) "
            "is separated: to separate another, ask for it (CLI --audio-track, API "
            "input.audio_track)"
        )


def open_file(path: Path) -> InputContainer:
    """Open ``path`` with PyAV, turning every way that can fail into one InvalidAudio."""
    # Checked before FFmpeg sees the file: its messages for these cases are generic.
    if not path.exists():
        raise InputNotFound(f"file not found: {shown_name(str(path))}")
    if path.is_dir():
        raise InvalidAudio(f"{path} is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InvalidAudio(f"cannot read {quoted_name(path)}: {e.strerror or e}") from e
    if size == 0:
        raise InvalidAudio(f"{quoted_name(path)} is empty (0 bytes)")
    try:
        # A tag that is not the UTF-8 it claims (a Latin-1 title in an ID3v2.4 frame, which
        # taggers write) made PyAV's strict decoding refuse the whole file as not audio.
        return av.open(
            str(path), mode="r", container_options=_OPEN_OPTIONS, metadata_errors="replace"
        )
    except PermissionError as e:
        raise InvalidAudio(f"cannot read {quoted_name(path)}: permission denied") from e
    except EOFError as e:
        raise InvalidAudio(
            f"{quoted_name(path)} ends before its headers are complete: the file is truncated "
            "or corrupt"
        ) from e
    except FOREIGN as e:
        raise InvalidAudio(
            f"{quoted_name(path)} cannot be read: it is not an audio or video file demixer takes, "
            f"or it is corrupt or truncated (FFmpeg: {_reason(e)})"
        ) from e


def _reason(error: BaseException) -> str:
    """FFmpeg's own words for ``error``, without the errno and file name PyAV adds."""
    if isinstance(error, av.error.FFmpegError) and error.strerror:
        return str(error.strerror)
    return str(error) or type(error).__name__


def _offset_seconds(container: InputContainer, stream: AudioStream) -> float:
    """Seconds from the file's start (its earliest sound or picture, as players count time)
    to the audio's first sample: a phone's or a screen recorder's sound that starts after the
    picture. Stems that started at the audio's first sample were that much early against the
    video they are put back on. A cover picture has no time of its own: FFmpeg gives an MP3's
    its sound's, late by the encoder delay (25 ms), and may give it another."""
    starts = [
        start_seconds(s)
        for s in container.streams
        if s.type in ("audio", "video")
        and s.start_time is not None
        and not s.disposition & av.stream.Disposition.attached_pic
    ]
    return max(0.0, start_seconds(stream) - min(starts, default=start_seconds(stream)))


def _chosen_stream(path: Path, container: InputContainer, track: int | None) -> AudioStream:
    """Audio track ``track`` (from 1), else the one a player plays: the first flagged default,
    else the first. A film's or a download's second track (another language, the music
    without commentary) is often the default one."""
    audio = container.streams.audio
    if track is not None:
        refusal = track_refusal(quoted_name(path), len(audio), track)
        if refusal is not None:
            raise refusal
        return audio[track - 1]
    default = av.stream.Disposition.default
    return next((s for s in audio if s.disposition & default), audio[0])


def audio_info(
    path: Path, container: InputContainer, track: int | None = None
) -> tuple[AudioInfo, AudioStream]:
    """The audio stream to read (``track``, from 1; None: the one players play) and what it
    declares (``duration``: the audio's own length, without ``offset``); raises for files that
    can never work, and for a track the file does not have."""
    if not container.streams.audio:
        what = "a video stream but no" if container.streams.video else "no"
        raise InvalidAudio(f"{quoted_name(path)} has {what} audio stream")
    stream = _chosen_stream(path, container, track)
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise InvalidAudio(f"{quoted_name(path)}: FFmpeg has no decoder for its audio codec")
    rate = int(ctx.sample_rate or 0)
    channels = int(ctx.channels or 0)
    if rate <= 0 or channels <= 0:
        raise InvalidAudio(
            f"{quoted_name(path)}: the audio stream declares no sample rate or channel count; "
            "the file is corrupt"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnsupportedSampleRate(
            f"{quoted_name(path)} has a sample rate of {rate} Hz; demixer accepts "
            f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz",
            sample_rate=rate,
        )
    duration = declared_seconds(path, container, stream)
    if duration is not None and duration <= 0:
        raise InvalidAudio(
            f"{quoted_name(path)} contains no audio: its duration is 0 (zero length)"
        )
    info = AudioInfo(
        sample_rate=rate,
        channels=channels,
        duration=duration,
        codec=str(ctx.codec.canonical_name),
        container=str(container.format.name),
        offset=_offset_seconds(container, stream),
        track=list(container.streams.audio).index(stream) + 1,
        tracks=len(container.streams.audio),
        asked=track is not None,
    )
    return info, stream


def from_start(info: AudioInfo, declared: float | None) -> AudioInfo:
    """``info`` with ``duration`` the audio's ``declared`` length plus its offset."""
    return dataclasses.replace(info, duration=None if declared is None else declared + info.offset)


def unreadable(path: Path, container: str, error: BaseException, how: str) -> InvalidAudio:
    """The refusal of ``path`` when FFmpeg fails part-way through reading it (``how``)."""
    if container == "ogg" and isinstance(error, av.error.PatchWelcomeError):
        # Ogg files joined end to end are one chained file; FFmpeg's Ogg demuxer refuses a
        # part whose Opus or Vorbis header names another channel count or (Vorbis) sample
        # rate ("Channel change is not supported", "Not yet implemented"): no damage.
        return InvalidAudio(
            f"{quoted_name(path)} joins Ogg streams of different channel counts or sample rates (a "
            "mono part after a stereo one, say), which FFmpeg cannot read; send the parts "
            "separately, or converted to one format"
        )
    return InvalidAudio(
        f"{quoted_name(path)} is corrupt or truncated: {how} (FFmpeg: {_reason(error)})"
    )


def over_limit(path: Path, seconds: float, limit: float, how: str) -> DurationLimit:
    # Just past the limit, tenths would read as within it ("the limit of 2 s (it declares 2.0 s)").
    figure = f"{seconds:.1f}" if round(seconds, 1) > limit else f"{seconds:.3f}"
    return DurationLimit(
        f"{quoted_name(path)} is longer than the limit of {limit:g} s ({how} {figure} s); "
        "send a shorter file"
    )


def _packet_seconds(
    container: InputContainer, stream: AudioStream, limit: float | None
) -> float | None:
    """Seconds of audio the stream's packets hold (their durations added up, and in a video
    the gaps between them that decoding reads as silence, as
    :class:`~demixer.audio.decode.AudioReader` does), read without decoding; counting stops
    past ``limit``. None when the packets state no durations.

    A gap is taken from one packet's end to the next one's start, not from the durations
    added up since the first: FLV's and ASF's times are whole milliseconds, and so are their
    packets' durations, so a sum drifts by up to a millisecond a packet (the decoder counts
    samples, which do not)."""
    if stream.time_base is None:
        return None
    base = float(stream.time_base)
    timed = is_timed(container)
    total = 0
    gaps = 0.0
    end: float | None = None  # the last packet's end, seconds
    for packet in container.demux(stream):
        if timed and packet.size and packet.pts is not None:
            start = packet.pts * base
            if end is not None and MIN_HOLE_SECONDS <= start - end <= MAX_HOLE_SECONDS:
                gaps += start - end
            # A packet that states no duration (some parsers') ends where nobody knows.
            end = start + packet.duration * base if packet.duration else None
        total += packet.duration or 0
        if limit is not None and total * base + gaps > limit:
            break
    return total * base + gaps if total else None


def is_timed(container: InputContainer) -> bool:
    """Whether ``container``'s audio timestamps place its sound against the picture
    (:data:`_TIMED`)."""
    return container.format.name.split(",")[0] in _TIMED


def duration_refusal(
    name: str, duration: float | None, max_seconds: float | None
) -> DurationLimit | None:
    """The refusal of audio ``name`` that :func:`probe` found ``duration`` seconds long, when
    that is over ``max_seconds`` (past the limit probe stops counting: the figure is a lower
    bound, said as "or more"); None when it is within it."""
    if max_seconds is None or duration is None or duration <= max_seconds:
        return None
    # Counted just past the limit, the figure would read as within it ("10.0 s or more").
    figure = f" ({duration:.1f} s or more)" if round(duration, 1) > max_seconds else ""
    return DurationLimit(
        f"{name} is longer than this server's limit of {max_seconds:g} s{figure}; "
        "send a shorter file"
    )


def track_refusal(name: str, tracks: int, track: int) -> InvalidAudio | None:
    """The refusal of audio track ``track`` (from 1) of ``name``, which has ``tracks``; None
    when it has that track."""
    if 1 <= track <= tracks:
        return None
    count = f"{tracks} audio track{'s' if tracks != 1 else ''}"
    return InvalidAudio(f"{name} has {count}; there is no audio track {track} to separate")


# Containers whose packets state exactly the samples they hold, and whose header states the
# length apart from them (FLAC's STREAMINFO, AIFF's COMM chunk, AU's data size, a compressed
# CAF's packet table): packets that add up to less than the header says are a cut file, found
# without decoding. (WAV, Wave64 and an uncompressed CAF have their own check: FFmpeg makes
# their length that of the bytes present.)
_COUNTED_EXACTLY = ("flac", "aiff", "au", "caf")


def probe(
    path: str | os.PathLike[str], *, max_seconds: float | None = None, track: int | None = None
) -> AudioInfo:
    """What ``path`` holds, without decoding any audio.

    Headers, plus the checks that need no decoding (a WAV, RF64, Wave64 or CAF shorter than its
    header, an Ogg file cut mid-page, a FLAC, AIFF, AU or compressed CAF whose packets hold less
    than its header's length), plus a count of the audio packets' durations (demuxing only; it
    stops past ``max_seconds``): when the packets hold more than the header declares (a hidden
    or understated length), ``duration`` is what the packets hold, so the limit that the job
    would hit is seen at upload.

    Raises:
        InvalidAudio: the file is missing, empty, not media, has no audio stream, declares a
            sample rate outside 8–192 kHz or a zero duration, or is truncated as above.
            Channel counts above 2 are reported, not rejected (a downmix may still make them
            usable); corruption inside the stream is only found by decoding.
    """
    p = Path(path)
    container = open_file(p)
    try:
        info, stream = audio_info(p, container, track)
        declared = checked_declared(p, info.container, info.duration)
        try:
            counted = _packet_seconds(container, stream, max_seconds)
        except FOREIGN as e:
            raise unreadable(p, info.container, e, "reading it failed") from e
        if counted is not None and (declared is None or counted > declared + slack(declared)):
            declared = counted
        elif (
            info.container in _COUNTED_EXACTLY
            and counted is not None
            and declared is not None
            and (max_seconds is None or counted <= max_seconds)  # counted to the end
            and counted < declared - slack(declared)
        ):
            raise truncated(p, counted, declared, "is present")
        return from_start(info, declared)
    finally:
        container.close()
