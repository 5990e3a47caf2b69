"""Decode any audio or video file PyAV can open into float32 ``(channels, samples)`` blocks.

This module is the one boundary between demixer and FFmpeg's demuxers and decoders: every
failure on the way in (missing, empty or non-media file, no audio stream, an unsupported
channel count or sample rate, a truncated or corrupt file, zero samples) leaves it as a single
:class:`~demixer.errors.InvalidAudio` whose message says what is wrong. No ``av.error``,
``OSError`` or ``IndexError`` escapes.

Truncation is caught three ways, because no single signal covers every container:

* the container cannot be opened at all (MP4 without its ``moov`` atom, Ogg without headers);
* the decoder reports corrupt data (FLAC frames cut mid-way fail their CRC);
* fewer samples decode than the file declares: the stream's duration (MP3 Xing/Info frame
  count, FLAC STREAMINFO, MP4 sample tables, Matroska segment duration), or for WAV the
  ``data`` chunk size in the RIFF header (FFmpeg clamps a WAV's duration to the bytes present,
  so its own figure cannot show the cut). A shortfall of more than
  :data:`TRUNCATION_TOLERANCE` of the declared length (and at least
  :data:`TRUNCATION_MIN_SECONDS`) is reported as truncation. The slack absorbs encoder
  padding and bitrate-estimated durations of header-less MP3s; a cut inside that slack, or in
  a format that states no length (a CBR MP3 without an Info frame, the last Ogg page), cannot
  be told from a shorter file and is accepted.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import av
import av.error
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer

from demixer.errors import InputNotFound, InvalidAudio

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "TRUNCATION_MIN_SECONDS",
    "TRUNCATION_TOLERANCE",
    "AudioInfo",
    "AudioReader",
    "load",
    "probe",
]

MIN_SAMPLE_RATE = 8_000  # Hz; below this there is nothing left of music to separate
MAX_SAMPLE_RATE = 192_000  # Hz; the highest rate studio formats use
TRUNCATION_TOLERANCE = 0.02  # fraction of the declared length that may fail to decode
TRUNCATION_MIN_SECONDS = 0.1  # never call a shortfall shorter than this truncation

# Exceptions PyAV and the OS raise while opening or decoding; all become InvalidAudio here.
# av.error.FFmpegError subclasses OSError/ValueError/EOFError, listed for clarity.
_FOREIGN = (av.error.FFmpegError, OSError, EOFError, ValueError, IndexError)


@dataclass(frozen=True)
class AudioInfo:
    """What a file says about its first audio stream, before decoding.

    Attributes:
        sample_rate: Hz of the decoded stream (the input rate; nothing is resampled).
        channels: channels of the first audio stream as stored (may be more than 2).
        duration: seconds the container declares, ``None`` when it declares none.
        codec: FFmpeg's codec name, e.g. ``"mp3"``, ``"aac"``, ``"pcm_s16le"``.
        container: FFmpeg's demuxer name, e.g. ``"mp3"``, ``"mov,mp4,m4a,3gp,3g2,mj2"``.
    """

    sample_rate: int
    channels: int
    duration: float | None
    codec: str
    container: str


def _name(path: Path) -> str:
    return f"'{path.name}'"


def _open(path: Path) -> InputContainer:
    """Open ``path`` with PyAV, turning every way that can fail into one InvalidAudio."""
    # Checked before FFmpeg sees the file: its messages for these cases are generic.
    if not path.exists():
        raise InputNotFound(f"file not found: {path}")
    if path.is_dir():
        raise InvalidAudio(f"{path} is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InvalidAudio(f"cannot read {_name(path)}: {e.strerror or e}") from e
    if size == 0:
        raise InvalidAudio(f"{_name(path)} is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except PermissionError as e:
        raise InvalidAudio(f"cannot read {_name(path)}: permission denied") from e
    except EOFError as e:
        raise InvalidAudio(
            f"{_name(path)} ends before its headers are complete: the file is truncated or corrupt"
        ) from e
    except _FOREIGN as e:
        raise InvalidAudio(
            f"{_name(path)} cannot be read: it is not an audio or video file, or it is "
            f"corrupt or truncated (FFmpeg: {_reason(e)})"
        ) from e


def _reason(error: BaseException) -> str:
    """FFmpeg's own words for ``error``, without the errno and file name PyAV adds."""
    if isinstance(error, av.error.FFmpegError) and error.strerror:
        return str(error.strerror)
    return str(error) or type(error).__name__


def _declared_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


def _info(path: Path, container: InputContainer) -> tuple[AudioInfo, AudioStream]:
    """The first audio stream and what it declares; raises for files that can never work."""
    if not container.streams.audio:
        what = "a video stream but no" if container.streams.video else "no"
        raise InvalidAudio(f"{_name(path)} has {what} audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise InvalidAudio(f"{_name(path)}: FFmpeg has no decoder for its audio codec")
    rate = int(ctx.sample_rate or 0)
    channels = int(ctx.channels or 0)
    if rate <= 0 or channels <= 0:
        raise InvalidAudio(
            f"{_name(path)}: the audio stream declares no sample rate or channel count; "
            "the file is corrupt"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(
            f"{_name(path)} has a sample rate of {rate} Hz; demixer accepts "
            f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz"
        )
    duration = _declared_seconds(container, stream)
    if duration is not None and duration <= 0:
        raise InvalidAudio(f"{_name(path)} contains no audio: its duration is 0 (zero length)")
    info = AudioInfo(
        sample_rate=rate,
        channels=channels,
        duration=duration,
        codec=str(ctx.codec.canonical_name),
        container=str(container.format.name),
    )
    return info, stream


def _wav_declared_seconds(path: Path) -> float | None:
    """Seconds of audio a RIFF WAV's header promises: ``data`` chunk size / byte rate.

    Returns ``None`` for RF64/W64, for streamed headers (size 0 or 0xFFFFFFFF with data
    following) and for anything that does not parse: the caller then has no WAV-specific
    evidence and falls back to FFmpeg's duration.
    """
    byte_rate = 0
    try:
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            # Bounded walk: real files put "fmt " and "data" within the first few chunks.
            for _ in range(64):
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, length = chunk[:4], int(struct.unpack("<I", chunk[4:])[0])
                if kind == b"fmt " and length >= 16:
                    fmt = f.read(16)
                    byte_rate = int(struct.unpack("<I", fmt[8:12])[0])
                    length -= 16
                elif kind == b"data":
                    present = path.stat().st_size - f.tell()
                    if byte_rate <= 0 or length == 0xFFFFFFFF or (length == 0 and present > 0):
                        return None
                    return length / byte_rate
                f.seek(length + (length & 1), os.SEEK_CUR)  # chunks are word-aligned
    except (OSError, struct.error):
        return None
    return None


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


class AudioReader:
    """Streams the first audio stream of any container PyAV opens, as float32 blocks.

    Decoded frames go through PyAV's :class:`av.AudioResampler` (format ``fltp``, the stream's
    own rate), which also fixes the channel layout: mono stays mono, stereo stays stereo, and
    with ``downmix=True`` more channels are folded to stereo by FFmpeg's default (libswresample)
    matrix: front left/right at 1, centre and surrounds at -3 dB (×0.707) into their side, LFE
    dropped, no normalisation, so a loud 5.1 mix can exceed ±1 (left for the writer to handle).

    Use as a context manager; :meth:`blocks` may be iterated once.

    Attributes:
        info: what the file declares (channels as stored, before any downmix).
        channels: channels of the blocks :meth:`blocks` yields: 1 or 2.
        sample_rate: Hz of those blocks (always ``info.sample_rate``).
        path: the file being read.
    """

    def __init__(self, path: str | os.PathLike[str], *, downmix: bool = False) -> None:
        self.path = Path(path)
        self._container = _open(self.path)
        try:
            self.info, self._stream = _info(self.path, self._container)
            if self.info.channels > 2 and not downmix:
                raise InvalidAudio(
                    f"{_name(self.path)} has {self.info.channels} channels; demixer separates "
                    "mono or stereo. Use --downmix (downmix=True) to fold it to stereo first."
                )
            self._declared: float | None = self.info.duration
            if self.info.container == "ogg" and _ogg_ends_mid_page(self.path):
                raise InvalidAudio(
                    f"{_name(self.path)} is truncated: its last Ogg page is cut short "
                    "(an incomplete download or copy?)"
                )
            if self.info.container == "wav":
                # FFmpeg clamps a WAV's duration to the bytes present; the header still says
                # how long the file was meant to be, which is what exposes a cut.
                from_header = _wav_declared_seconds(self.path)
                if from_header is not None:
                    self._declared = from_header
                if self._declared == 0:
                    raise InvalidAudio(
                        f"{_name(self.path)} contains no audio samples (zero length)"
                    )
        except BaseException:
            self._container.close()
            raise
        self.channels = 1 if self.info.channels == 1 else 2
        self.sample_rate = self.info.sample_rate
        self._layout = "mono" if self.channels == 1 else "stereo"
        self._iterated = False

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file; safe to call more than once."""
        self._container.close()

    def blocks(self, frames: int) -> Iterator[np.ndarray]:
        """Yield the audio as float32 ``(channels, frames)`` blocks at :attr:`sample_rate`.

        Every block has exactly ``frames`` samples except the last, which may be shorter.
        Memory is bounded by ``frames`` plus one decoded frame, never the file length.

        Raises:
            InvalidAudio: mid-stream when the data turns out corrupt, and at the latest when
                iteration ends if the file held no samples or fewer than it declared.
        """
        if frames <= 0:
            raise ValueError(f"frames must be positive, got {frames}")
        if self._iterated:
            raise RuntimeError("AudioReader.blocks() can only be iterated once")
        self._iterated = True
        block = np.empty((self.channels, frames), dtype=np.float32)
        fill = 0
        total = 0
        for array in self._decoded():
            pos, n = 0, array.shape[1]
            total += n
            while pos < n:
                take = min(frames - fill, n - pos)
                block[:, fill : fill + take] = array[:, pos : pos + take]
                fill += take
                pos += take
                if fill == frames:
                    yield block
                    block = np.empty((self.channels, frames), dtype=np.float32)
                    fill = 0
        if total == 0:
            raise InvalidAudio(f"{_name(self.path)} contains no audio samples (zero length)")
        self._check_complete(total)
        if fill:
            yield np.ascontiguousarray(block[:, :fill])

    def _decoded(self) -> Iterator[np.ndarray]:
        """Every decoded frame as float32 ``(channels, n)``, FFmpeg errors translated."""
        resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self.sample_rate)
        signature: tuple[str, str, int] | None = None
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if signature is not None and key != signature:
                        # A resampler is tied to one input format; some streams change
                        # layout or rate mid-way (broadcast AAC, concatenated MP3s).
                        yield from _arrays(resampler.resample(None))
                        resampler = av.AudioResampler(
                            format="fltp", layout=self._layout, rate=self.sample_rate
                        )
                    signature = key
                    yield from _arrays(resampler.resample(frame))
            yield from _arrays(resampler.resample(None))
        except InvalidAudio:
            raise
        except _FOREIGN as e:
            raise InvalidAudio(
                f"{_name(self.path)} is corrupt or truncated: decoding failed "
                f"(FFmpeg: {_reason(e)})"
            ) from e

    def _check_complete(self, decoded: int) -> None:
        declared = self._declared
        if declared is None:
            return
        got = decoded / self.sample_rate
        slack = max(TRUNCATION_MIN_SECONDS, TRUNCATION_TOLERANCE * declared)
        if got < declared - slack:
            raise InvalidAudio(
                f"{_name(self.path)} is truncated or damaged: only {got:.2f} s of audio "
                f"decoded but the file declares {declared:.2f} s (an incomplete download or copy?)"
            )


def _arrays(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    for frame in frames:
        if frame.samples:
            yield frame.to_ndarray()


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """What ``path`` declares, without decoding any audio (cheap: headers only).

    Raises:
        InvalidAudio: the file is missing, empty, not media, has no audio stream, declares a
            sample rate outside 8–192 kHz or a zero duration. Channel counts above 2 are
            reported, not rejected (``downmix`` may still make them usable); truncation and
            corruption are only found by decoding.
    """
    p = Path(path)
    container = _open(p)
    try:
        return _info(p, container)[0]
    finally:
        container.close()


def load(path: str | os.PathLike[str], *, downmix: bool = False) -> tuple[np.ndarray, int]:
    """Decode a whole file: ``((channels, samples) float32, sample_rate in Hz)``.

    Memory is the decoded length; use :class:`AudioReader` to stream long inputs.
    """
    with AudioReader(path, downmix=downmix) as reader:
        chunks = list(reader.blocks(1 << 16))
        return np.concatenate(chunks, axis=1), reader.sample_rate
