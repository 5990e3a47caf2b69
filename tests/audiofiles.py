"""Real audio and video files for the audio-layer tests, encoded with PyAV into a temp dir.

Nothing here is mocked: every file is written by FFmpeg's own muxers and encoders (through
PyAV), so the decoder under test sees exactly what it would see from a user's upload. Signals
are short (a second or two) so the whole set is made in well under a second or two.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np

__all__ = [
    "LAYOUTS",
    "STEMPEG_EXAMPLE",
    "AudioFiles",
    "Made",
    "dominant_frequency",
    "encode",
    "encode_tracks",
    "stempeg_example",
    "tone",
    "with_cover",
]

# FFmpeg channel layouts by channel count; the layout (not just the count) is written into the
# file so a downmix knows which channel is the centre and which the LFE.
LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 6: "5.1"}

STEMPEG_EXAMPLE = "The Easton Ellises - Falcon 69.stem.mp4"


def stempeg_example() -> Path:
    """The MUSDB18 excerpt stempeg ships (5 AAC streams, 44.1 kHz stereo, ~6 s).

    Found without importing stempeg, whose import fails when no ffmpeg binary is on PATH.
    stempeg is a test dependency (`make test` installs it): its absence is a failure, not a skip.
    """
    spec = importlib.util.find_spec("stempeg")
    assert spec is not None and spec.submodule_search_locations, "stempeg is not installed"
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / STEMPEG_EXAMPLE
        if path.is_file():
            return path
    raise AssertionError(f"stempeg is installed without its {STEMPEG_EXAMPLE}")


def decode_stream(path: Path, index: int = 0) -> np.ndarray:
    """Audio stream ``index`` of ``path`` decoded by PyAV, ``(channels, samples)`` float32."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        resampler = av.AudioResampler(format="fltp")
        blocks = [b.to_ndarray() for f in container.decode(stream) for b in resampler.resample(f)]
        blocks += [b.to_ndarray() for b in resampler.resample(None)]
    return np.concatenate(blocks, axis=1).astype(np.float32)


def tone(seconds: float, rate: int, freqs: Sequence[float], amplitude: float = 0.5) -> np.ndarray:
    """One sine per channel: ``(len(freqs), round(seconds * rate))`` float32, frequencies in Hz."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """The frequency (Hz) of the largest FFT bin of a 1-D signal, Hann-windowed."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


def _audio_frames(
    signal: np.ndarray, rate: int, layout: str, size: int, first: int = 0
) -> list[av.AudioFrame]:
    """``signal`` in frames of ``size`` samples, the first at sample ``first`` of the file."""
    frames = []
    for start in range(0, signal.shape[1], size):
        chunk = np.ascontiguousarray(signal[:, start : start + size], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = first + start
        frame.time_base = Fraction(1, rate)
        frames.append(frame)
    return frames


def encode(
    path: Path,
    signal: np.ndarray | None,
    rate: int,
    codec: str | None,
    *,
    container_format: str | None = None,
    sample_format: str | None = None,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
    video: str | None = None,
    video_seconds: float = 1.0,
    container_options: dict[str, str] | None = None,
    audio_start: float = 0.0,
    gap: tuple[float, float] | None = None,
) -> Path:
    """Write ``signal`` ((channels, samples) float32 at ``rate`` Hz) with FFmpeg encoder ``codec``.

    ``video`` adds a small video stream first (codec name, e.g. ``"mpeg4"``), so the audio is
    the second stream as in a phone recording; ``signal=None`` writes a video with no audio.
    ``audio_start``: seconds into the file where the audio starts (after the picture).
    ``gap``: (after, seconds): the audio's timestamps jump ``seconds`` on from ``after``
    seconds into the signal (a recorder that paused its sound).
    """
    with av.open(
        str(path), "w", format=container_format, container_options=container_options or {}
    ) as out:
        vstream = None if video is None else _video_stream(out, video)
        astream: av.AudioStream | None = None
        if signal is not None and codec is not None:
            layout = LAYOUTS[signal.shape[0]]
            astream = cast(av.AudioStream, out.add_stream(codec, rate=rate, options=options or {}))
            astream.layout = layout
            if sample_format is not None:
                astream.format = sample_format
            if bit_rate is not None:
                astream.bit_rate = bit_rate
        # Started explicitly so a file with no packets at all (zero samples) still gets a header.
        out.start_encoding()
        if vstream is not None:
            _write_video(out, vstream, video_seconds)
        if astream is not None and signal is not None:
            size = astream.codec_context.frame_size or 1024
            first = round(audio_start * rate)
            after, jump = (round(gap[0] * rate), round(gap[1] * rate)) if gap else (0, 0)
            for frame in _audio_frames(signal, rate, astream.layout.name, size, first):
                if after and frame.pts is not None and frame.pts - first >= after:
                    frame.pts += jump
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
    return path


def _video_stream(out: av.container.OutputContainer, codec: str) -> av.VideoStream:
    """A small (32x32, 10 frames a second) video stream of ``codec`` in ``out``."""
    stream = cast(av.VideoStream, out.add_stream(codec, rate=10))
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    return stream


def _write_video(out: av.container.OutputContainer, stream: av.VideoStream, seconds: float) -> None:
    for i in range(round(seconds * 10)):
        image = np.full((32, 32, 3), (i * 20) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def encode_tracks(
    path: Path,
    signals: Sequence[np.ndarray],
    rate: int,
    *,
    default: int | None = None,
    video_seconds: float | None = None,
    audio_start: float = 0.0,
) -> Path:
    """A Matroska file of several FLAC audio tracks (``signals``, each ``(2, samples)`` float32
    at ``rate`` Hz), the one at index ``default`` flagged default (players play it), none else;
    with ``video_seconds`` of MPEG-4 video first, the audio starting ``audio_start`` s in."""
    with av.open(str(path), "w", format="matroska") as out:
        video = None if video_seconds is None else _video_stream(out, "mpeg4")
        streams = [cast(av.AudioStream, out.add_stream("flac", rate=rate)) for _ in signals]
        for i, stream in enumerate(streams):
            stream.layout = "stereo"
            flag = av.stream.Disposition.default if i == default else av.stream.Disposition(0)
            stream.disposition = flag
        if video is not None and video_seconds is not None:
            _write_video(out, video, video_seconds)
        for stream, signal in zip(streams, signals, strict=True):
            for frame in _audio_frames(signal, rate, "stereo", 4096, round(audio_start * rate)):
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return path


# A 1x1 PNG: the smallest cover picture.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def with_cover(path: Path) -> Path:
    """``path`` (an MP3) with an ID3v2.3 tag holding a cover picture (an APIC frame) put in
    front, as taggers and stores write them: FFmpeg reads it as an attached-picture stream."""
    body = b"\x00image/png\x00\x03cover\x00" + _PNG
    frame = b"APIC" + len(body).to_bytes(4, "big") + b"\x00\x00" + body
    size = len(frame)
    synchsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    path.write_bytes(b"ID3\x03\x00\x00" + synchsafe + frame + path.read_bytes())
    return path


@dataclass(frozen=True)
class Made:
    """A generated file and the signal that went into it."""

    path: Path
    signal: np.ndarray  # (channels, samples) float32; (0, 0) when the file has no audio
    rate: int  # Hz the signal was generated at (the file's rate)

    @property
    def seconds(self) -> float:
        return int(self.signal.shape[1]) / self.rate


@dataclass
class AudioFiles:
    """Makes each named test file once per ``root`` (a pytest tmp dir) and remembers it."""

    root: Path
    _made: dict[str, Made] = field(default_factory=dict)

    def get(self, name: str) -> Made:
        """The file called ``name`` (a key of :data:`RECIPES`), made on first use."""
        if name not in self._made:
            self._made[name] = RECIPES[name](self.root / name)
        return self._made[name]

    def bytes_file(self, name: str, data: bytes) -> Path:
        """A file holding exactly ``data`` (for empty, text and truncated inputs)."""
        path = self.root / name
        path.write_bytes(data)
        return path

    def truncated(self, name: str, fraction: float) -> Path:
        """The first ``fraction`` of the bytes of :meth:`get` ``(name)``, as a new file."""
        data = self.get(name).path.read_bytes()
        return self.bytes_file(
            f"truncated-{fraction:.2f}-{name}", data[: int(len(data) * fraction)]
        )


def _recipe(
    rate: int,
    freqs: Sequence[float],
    codec: str | None,
    seconds: float = 1.5,
    **kwargs: object,
) -> Callable[[Path], Made]:
    def make(path: Path) -> Made:
        signal = tone(seconds, rate, freqs)
        encode(path, signal, rate, codec, **kwargs)  # type: ignore[arg-type]
        return Made(path, signal, rate)

    return make


def _video_only(path: Path) -> Made:
    encode(path, None, 44100, None, video="mpeg4")
    return Made(path, np.zeros((0, 0), dtype=np.float32), 0)


_STEREO = (440.0, 660.0)
_MONO = (440.0,)

# name (with the extension the container gets) -> how to make it
RECIPES: dict[str, Callable[[Path], Made]] = {
    "stereo.wav": _recipe(44100, _STEREO, "pcm_s16le"),
    "mono.wav": _recipe(44100, _MONO, "pcm_s16le"),
    "float.wav": _recipe(48000, _STEREO, "pcm_f32le"),
    "stereo.flac": _recipe(44100, _STEREO, "flac"),
    "mono.flac": _recipe(22050, _MONO, "flac"),
    "stereo.mp3": _recipe(44100, _STEREO, "libmp3lame", bit_rate=192_000),
    "mono.mp3": _recipe(44100, _MONO, "libmp3lame", bit_rate=128_000),
    "stereo.m4a": _recipe(44100, _STEREO, "aac", bit_rate=192_000),
    "opus.ogg": _recipe(48000, _STEREO, "libopus", bit_rate=128_000),
    "vorbis.ogg": _recipe(
        44100, _STEREO, "vorbis", options={"strict": "experimental"}, container_format="ogg"
    ),
    "video.mp4": _recipe(44100, _STEREO, "aac", video="mpeg4", bit_rate=128_000),
    "video.mov": _recipe(48000, _STEREO, "pcm_s16le", video="mpeg4"),
    "video.mkv": _recipe(48000, _STEREO, "flac", video="mpeg4"),
    "video.webm": _recipe(48000, _STEREO, "libopus", video="vp8", bit_rate=96_000),
    "silent-video.mp4": _video_only,
    "three.wav": _recipe(44100, (440.0, 660.0, 880.0), "pcm_s16le"),
    "surround.flac": _recipe(48000, (300.0, 500.0, 700.0, 100.0, 900.0, 1100.0), "flac"),
    "surround.m4a": _recipe(48000, (300.0, 500.0, 700.0, 100.0, 900.0, 1100.0), "aac"),
    "rate8k.wav": _recipe(8000, _MONO, "pcm_s16le"),
    "rate96k.flac": _recipe(96000, _STEREO, "flac", seconds=1.0),
    "rate192k.wav": _recipe(192000, _STEREO, "pcm_s16le", seconds=1.0),
    "rate4k.wav": _recipe(4000, _MONO, "pcm_s16le", seconds=1.0),
    "rate384k.wav": _recipe(384000, _MONO, "pcm_s16le", seconds=0.25),
    "empty.wav": _recipe(44100, _STEREO, "pcm_s16le", seconds=0.0),
    "empty.flac": _recipe(44100, _STEREO, "flac", seconds=0.0),
    "long.mp3": _recipe(44100, _STEREO, "libmp3lame", seconds=3.0, bit_rate=128_000),
    "long.flac": _recipe(44100, _STEREO, "flac", seconds=3.0),
    "long.wav": _recipe(44100, _STEREO, "pcm_s16le", seconds=3.0),
}
