"""Write a set of stems to WAV, FLAC or MP3, streaming, all-or-nothing.

A :class:`StemSetWriter` takes float32 ``(channels, n)`` blocks for every stem at once and
keeps the set consistent: the same length, one common gain when rescaling, and either every
file in place under its final name after :meth:`~StemSetWriter.close` or none of them (each is
written to a hidden temporary name in its target directory and renamed at the end).

Clipping rules: float WAV (``32f``) is written as is, never clipped, so values beyond ±1
survive. 16/24-bit WAV and FLAC and MP3 clip at ±1 and report how many samples were clipped
per stem; an MP3's count is that or, when more, its decoded samples past full scale (what a
player clips: the encoder overshoots what it is given). With ``rescale=True`` nothing is
clipped: every stem is first streamed to a float32 temporary file, and on close all of them
are scaled by one common gain, ``1 / peak`` over all stems, so the stems still add up to the
(equally scaled) mix, while being transcoded to the final format; MP3s are then decoded and,
while one would clip, encoded again a little quieter. Memory stays bounded by the block size
throughout.

The stems of a set are encoded side by side, one thread each: they are independent, and the
encoders (LAME, libsndfile's FLAC) release the GIL. An MP3 stem at 320 kbps takes about as
long to encode as Spleeter takes to separate it, so encoding them one after the other made an
MP3 job's encoding as long as the separation per stem (benchmarks/RESULTS.md, "Service
overhead").

No NaN or infinity reaches a file. A model whose arithmetic overflows gives them (half
precision on a loud float input; samples near float32's largest in any precision): a float WAV
would keep them, an integer format or MP3 would hold whatever the cast makes of them. They are
written as silence, and a warning says how many there were.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import numpy as np
import soundfile as sf

from demixer.audio._mp3 import Mp3File, mp3_rate
from demixer.audio.decode import TAGS, AudioReader
from demixer.errors import InvalidOutput, StorageFull
from demixer.filemode import check_folder, new_temporary, unwritable

__all__ = [
    "BIT_DEPTHS",
    "DEFAULT_BIT_DEPTHS",
    "FORMATS",
    "OutputFormat",
    "StemSetWriter",
    "WriteReport",
    "check_folder",
    "mp3_rate",
    "unwritable",
]

FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS: dict[str, tuple[str, ...]] = {"wav": ("16", "24", "32f"), "flac": ("16", "24")}
DEFAULT_BIT_DEPTHS: dict[str, str | None] = {"wav": "16", "flac": "16", "mp3": None}
_CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
_SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
_RESCALE_BLOCK = 1 << 16  # frames per read when transcoding the float32 temporaries
# The most sample bytes a plain WAV stem holds (its sizes are 32-bit; room is left for the
# header and its tags): a longer one is written as RF64.
_WAV_MAX_DATA = 0xFFFFFFFF - (1 << 20)

log = logging.getLogger("demixer.audio")


@dataclass(frozen=True)
class OutputFormat:
    """A validated output format.

    Attributes:
        format: ``"wav"``, ``"flac"`` or ``"mp3"``.
        bit_depth: ``"16"``, ``"24"`` or ``"32f"`` (32-bit float, WAV only); ``None`` for MP3,
            which is always 320 kbps CBR.
    """

    format: str
    bit_depth: str | None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidOutput(
                f"unknown output format {self.format!r}; choose one of {', '.join(FORMATS)}"
            )
        allowed = BIT_DEPTHS.get(self.format, ())
        if self.format == "mp3" and self.bit_depth is not None:
            raise InvalidOutput(
                "mp3 takes no bit depth (it is always 320 kbps CBR); "
                "use wav or flac for a chosen bit depth"
            )
        if self.format != "mp3" and self.bit_depth not in allowed:
            raise InvalidOutput(
                f"bit depth {self.bit_depth!r} is not available for {self.format}; "
                f"choose one of {', '.join(allowed)}"
            )

    @classmethod
    def parse(cls, format: str, bit_depth: str | None) -> OutputFormat:
        """Validate user input (case and spaces ignored); ``None`` bit depth = the default.

        Raises:
            InvalidOutput: unknown format or a bit depth the format lacks, listing valid ones.
        """
        name = format.strip().lower().lstrip(".")
        depth = bit_depth.strip().lower() if bit_depth is not None else None
        if depth == "":
            depth = None
        if depth is None and name in DEFAULT_BIT_DEPTHS:
            depth = DEFAULT_BIT_DEPTHS[name]
        return cls(name, depth)

    @property
    def extension(self) -> str:
        """File name extension without the dot, e.g. ``"flac"``."""
        return self.format

    @property
    def suffix(self) -> str:
        """File name extension with the dot, as :attr:`pathlib.Path.suffix` has it."""
        return "." + self.format

    @property
    def content_type(self) -> str:
        """MIME type for HTTP responses."""
        return _CONTENT_TYPES[self.format]

    @property
    def is_float(self) -> bool:
        """Whether samples are stored as float (and so never clipped)."""
        return self.bit_depth == "32f"


@dataclass(frozen=True)
class WriteReport:
    """What happened to the samples of each stem.

    Attributes:
        peaks: stem -> max ``|sample|`` as given to :meth:`StemSetWriter.write`, before any
            scaling.
        clipped: stem -> samples (counting each channel) beyond ±1 that were clipped (an
            MP3's: or, when more, decoded past ±1); always 0 for float output and with
            ``rescale=True``.
        gain: the common linear gain applied to every stem: 1.0, or ``1 / max(peaks)`` when
            ``rescale=True`` and some peak exceeded 1 (lower for MP3 when its encoding
            would have decoded past full scale).
    """

    peaks: dict[str, float]
    clipped: dict[str, int]
    gain: float


class _Sink(Protocol):
    def write(self, block: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def _native(path: Path) -> str | bytes:
    """``path`` as libsndfile is to be given it: its bytes on POSIX. soundfile encodes a text
    path strictly, so a folder whose name is not UTF-8 (an old Latin-1 ``Café``, which Python
    holds as a lone surrogate) ended the run with a UnicodeEncodeError traceback after the
    separation; Windows takes the text itself (soundfile opens it as wide characters)."""
    return str(path) if os.name == "nt" else os.fsencode(path)


class _SoundFileSink:
    """WAV/FLAC through libsndfile. Integer depths are rounded here, to the nearest step of
    full scale (1/32768 at 16 bits), and handed over as integers: libsndfile's own float-to-PCM
    conversion truncates for WAV (up to one step low, half a step on average: a DC offset and
    more distortion), though it rounds for FLAC.

    A WAV's sizes are 32-bit: past 4 GiB libsndfile writes 0xFFFFFFFF, which FFmpeg reads to
    the end but libsndfile's own readers (Audacity, sox, soundfile) cut at 4 GiB, hours short
    of a long stem at 96 kHz or in float. A WAV stem that grows past :data:`_WAV_MAX_DATA`
    becomes RF64 (EBU Tech 3306, the 64-bit WAV they read), by copying once what was written
    so far; a smaller one stays the plain WAV every player reads."""

    def __init__(
        self, path: Path, rate: int, channels: int, fmt: OutputFormat, tags: Mapping[str, str]
    ) -> None:
        depth = fmt.bit_depth or "16"  # OutputFormat gives wav/flac a depth
        self._path, self._rate, self._channels = path, rate, channels
        self._subtype, self._tags = _SUBTYPES[depth], tags
        self._bits = int(depth) if depth.isdigit() else None
        # Bytes per frame in the file (24-bit samples take 3), to see the 4 GiB coming.
        self._frame_bytes = channels * (self._bits // 8 if self._bits else 4)
        self._data_bytes = 0
        self._wav = fmt.format == "wav"
        self._old: Path | None = None  # the plain WAV being copied into RF64
        self._file = self._open(path, fmt.format.upper())

    def _open(self, path: Path, container: str) -> sf.SoundFile:
        file = sf.SoundFile(
            _native(path),
            "w",
            samplerate=self._rate,
            channels=self._channels,
            subtype=self._subtype,
            format=container,
        )
        for name in TAGS:  # WAV's LIST INFO chunk, FLAC's Vorbis comments
            if self._tags.get(name):
                setattr(file, name, self._tags[name])
        return file

    def write(self, block: np.ndarray) -> None:
        self._data_bytes += block.shape[1] * self._frame_bytes
        if self._wav and self._data_bytes > _WAV_MAX_DATA:
            self._to_rf64()
        if self._bits is None:
            self._file.write(block.T)
            return
        top = float(1 << (self._bits - 1))
        steps = np.clip(np.rint(block.T.astype(np.float64) * top), -top, top - 1)
        if self._bits == 16:
            self._file.write(steps.astype(np.int16))
        else:  # libsndfile takes the top 24 bits of an int32
            self._file.write(steps.astype(np.int32) << (32 - self._bits))

    def _to_rf64(self) -> None:
        """Go on in an RF64 file at the same path, holding every sample written so far (the
        samples are copied as stored: integers stay the same integers)."""
        self._wav = False
        self._file.close()
        self._old = self._path.with_name(self._path.name + ".wav")
        os.replace(self._path, self._old)
        self._file = self._open(self._path, "RF64")
        dtype = {16: "int16", 24: "int32"}.get(self._bits or 0, "float32")
        with sf.SoundFile(_native(self._old)) as old:
            for block in old.blocks(_RESCALE_BLOCK, dtype=dtype, always_2d=True):
                self._file.write(block)
        self._old.unlink()
        self._old = None

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()
        if self._old is not None:  # stopped while copying into RF64
            self._old.unlink(missing_ok=True)


class _RawFloatSink:
    """Headerless interleaved float32, the rescale temporary (no 4 GiB WAV limit)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")

    def write(self, block: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(block.T, dtype="<f4").tobytes())

    def close(self) -> None:
        self._file.close()

    abort = close


def _open_sink(
    path: Path, rate: int, channels: int, fmt: OutputFormat, tags: Mapping[str, str]
) -> _Sink:
    if fmt.format == "mp3":
        return Mp3File(path, rate, channels, tags)
    return _SoundFileSink(path, rate, channels, fmt, tags)


# mp3 rescaling: how many times a set may be encoded again, each time divided by the decoded
# peak and this margin (the encoder's overshoot does not scale exactly with its input).
_MP3_RESCALE_TRIES = 3
_MP3_MARGIN = 1.002


def _decoded_peak(path: Path) -> tuple[float, int]:
    """An mp3's largest decoded ``|sample|``, and how many samples (each channel counted)
    a player clips: past full scale."""
    peak, over = 0.0, 0
    if path.stat().st_size == 0:
        # No samples at the mp3's rate (a stem of one sample at 192 kHz is a quarter of one
        # at 48 kHz): an empty file, nothing to decode.
        return peak, over
    with AudioReader(path) as reader:
        for block in reader.blocks(1 << 16):
            magnitude = np.abs(block)
            peak = max(peak, float(magnitude.max()))
            over += int(np.count_nonzero(magnitude > 1.0))
    return peak, over


class StemSetWriter:
    """Streams a set of stems to their files; see the module docstring for the rules.

    Use as a context manager (an exception inside the block aborts) or call :meth:`close`
    or :meth:`abort` yourself. After :meth:`close`, :attr:`report` holds the result.

    MP3 output above 48 kHz (or at any rate MPEG-1 lacks) is resampled to 48 kHz, or
    44.1 kHz for multiples of 11.025 kHz, with :class:`~demixer.audio.resample.StreamResampler`
    (see :func:`mp3_rate`): 320 kbps exists only at 32, 44.1 and 48 kHz.
    """

    def __init__(
        self,
        paths: Mapping[str, Path],
        sample_rate: int,
        channels: int,
        fmt: OutputFormat,
        *,
        rescale: bool = False,
        tags: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Open a temporary file per stem.

        Args:
            paths: stem name -> final file path; parent directories are created.
            sample_rate: Hz of the blocks given to :meth:`write`.
            channels: channels of those blocks (1 or 2 for MP3).
            fmt: the output format.
            rescale: scale all stems by one gain so none exceeds ±1, instead of clipping.
            tags: stem name -> its tags (:data:`TAGS`: title, artist, ...), written in the
                format's own way (WAV LIST INFO, FLAC Vorbis comments, MP3 ID3v2.4).

        Raises:
            InvalidOutput: a target cannot be created (permissions, a file in the way…).
        """
        if not paths:
            raise ValueError("StemSetWriter needs at least one stem")
        finals = {stem: Path(p) for stem, p in paths.items()}
        if len({p.resolve() for p in finals.values()}) != len(finals):
            raise InvalidOutput("two stems would be written to the same file")
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"bad sample rate {sample_rate} Hz or channel count {channels}")
        if fmt.format == "mp3" and channels > 2:
            raise InvalidOutput(f"mp3 holds mono or stereo, not {channels} channels")
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = fmt
        self.rescale = rescale
        self._finals = finals
        self._tags = {stem: dict((tags or {}).get(stem, {})) for stem in finals}
        # Temporaries, deleted on abort: float32 stems (rescale only) and final-format files.
        self._raws: dict[str, Path] = {}
        self._parts: dict[str, Path] = {}
        self._sinks: dict[str, _Sink] = {}
        self._peaks = dict.fromkeys(finals, 0.0)
        self._clipped = dict.fromkeys(finals, 0)
        self._nonfinite = dict.fromkeys(finals, 0)  # NaN or infinite samples written as 0
        self._state = "open"
        self.report: WriteReport | None = None
        # One thread per stem (see the module docstring); none for a single stem.
        self._pool = (
            ThreadPoolExecutor(len(finals), thread_name_prefix="demixer-encode")
            if len(finals) > 1
            else None
        )
        self._guard(self._open_sinks)

    def _open_sinks(self) -> None:
        for stem, final in self._finals.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            if self.rescale:
                raw = new_temporary(final, ".f32", self._raws, stem)
                self._sinks[stem] = _RawFloatSink(raw)
            else:
                part = new_temporary(final, ".part", self._parts, stem)
                self._sinks[stem] = _open_sink(
                    part, self.sample_rate, self.channels, self.format, self._tags[stem]
                )

    def _each(self, action: Callable[[str], None], stems: Iterable[str]) -> None:
        """``action(stem)`` for every stem, side by side on the writer's threads; returns
        once all have ended (none still writes when an error is raised, or when abort deletes
        the files), raising the first stem's error."""
        stems = list(stems)
        if self._pool is None or len(stems) < 2:
            for stem in stems:
                action(stem)
            return
        futures: list[Future[None]] = [self._pool.submit(action, stem) for stem in stems]
        try:
            wait(futures)
        finally:
            # Interrupted while waiting (Ctrl-C, SIGTERM's handler): what has not started never
            # will, and what runs ends before anyone cleans up.
            for future in futures:
                future.cancel()
            wait(futures)
        for future in futures:
            future.result()

    def _guard(self, action: Callable[[], None]) -> None:
        """Run ``action()``; on any failure abort, translating I/O errors to InvalidOutput."""
        try:
            action()
        except BaseException as e:
            # OSError: disk full, permissions; RuntimeError: libsndfile and lameenc failures
            # (libsndfile says only "System error" when the disk is full: the disk says it,
            # before the aborted temporaries free their space).
            where = next(iter(self._finals.values())).parent
            full = isinstance(e, OSError | RuntimeError) and StorageFull.caused(
                e, where if where.is_dir() else None
            )
            self.abort()
            if full:
                raise StorageFull("cannot write the stems: the disk is full") from e
            if isinstance(e, OSError) and (e.strerror or e.filename):
                raise unwritable(e) from e
            if isinstance(e, (OSError, RuntimeError)):
                raise InvalidOutput(f"cannot write the stems: {e}") from e
            raise

    def write(self, blocks: Mapping[str, np.ndarray]) -> None:
        """Append one block per stem: each ``(channels, n)`` float32, the same ``n`` for all."""
        if self._state != "open":
            raise RuntimeError(f"StemSetWriter is {self._state}")
        if blocks.keys() != self._finals.keys():
            raise ValueError(f"expected blocks for {sorted(self._finals)}, got {sorted(blocks)}")
        arrays = {stem: np.asarray(b, dtype=np.float32) for stem, b in blocks.items()}
        lengths = {a.shape[1] if a.ndim == 2 else -1 for a in arrays.values()}
        shapes_ok = all(a.ndim == 2 and a.shape[0] == self.channels for a in arrays.values())
        if not shapes_ok or len(lengths) != 1:
            shapes = {stem: a.shape for stem, a in arrays.items()}
            raise ValueError(f"blocks must all be ({self.channels}, n) with one n, got {shapes}")
        self._guard(lambda: self._write(arrays))

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        self._each(lambda stem: self._write_stem(stem, arrays[stem]), arrays)

    def _write_stem(self, stem: str, block: np.ndarray) -> None:
        """One stem's block: NaN and infinities silenced, peak noted, clipped (and counted)
        unless rescaling or float, then to its file. Touches only ``stem``'s entries."""
        if block.size == 0:
            return
        bad = ~np.isfinite(block)
        if bad.any():
            self._nonfinite[stem] += int(np.count_nonzero(bad))
            block = np.where(bad, np.float32(0.0), block)
        magnitude = np.abs(block)
        self._peaks[stem] = max(self._peaks[stem], float(magnitude.max()))
        if not (self.rescale or self.format.is_float):
            over = int(np.count_nonzero(magnitude > 1.0))
            if over:
                self._clipped[stem] += over
                block = np.clip(block, -1.0, 1.0)
        self._sinks[stem].write(block)

    def close(self, drop: Collection[str] = ()) -> WriteReport:
        """Finish every file and move it to its final name; returns the :class:`WriteReport`.

        Args:
            drop: stems not to keep after all (e.g. a residual that turned out silent): their
                files are deleted instead of appearing under their final names.

        Raises:
            InvalidOutput: a file could not be finished (disk full…); nothing is left behind.
        """
        if self._state == "closed" and self.report is not None:
            return self.report
        if self._state != "open":
            raise RuntimeError(f"StemSetWriter is {self._state}")
        self._guard(lambda: self._finish(set(drop)))
        assert self.report is not None
        return self.report

    def _finish(self, drop: set[str]) -> None:
        self._each(lambda stem: self._sinks[stem].close(), list(self._sinks))
        for stem in drop & self._finals.keys():
            for temporaries in (self._raws, self._parts):
                if stem in temporaries:
                    temporaries.pop(stem).unlink(missing_ok=True)
            del self._finals[stem], self._peaks[stem], self._clipped[stem]
        gain = 1.0
        if self.rescale:
            gain = 1.0 / self._rescale()
        elif self.format.format == "mp3":
            # The encoder's output overshoots what it was given (most on transients): what a
            # player will clip, decoding the file, counts when it is more than was clipped
            # going in.
            def count_decoded(stem: str) -> None:
                over = _decoded_peak(self._parts[stem])[1]
                self._clipped[stem] = max(self._clipped[stem], over)

            self._each(count_decoded, list(self._parts))
        renaming: list[str] = []
        try:
            for stem, final in self._finals.items():
                renaming.append(stem)  # before: an exception can land right after the rename
                os.replace(self._parts[stem], final)
        except BaseException:
            # The set must stay consistent: no half set of new stems under final names. A part
            # gone was renamed (abort deletes the others).
            for stem in renaming:
                if not self._parts[stem].exists():
                    self._finals[stem].unlink(missing_ok=True)
            raise
        self._parts.clear()
        self._state = "closed"
        self._stop_threads()
        for stem, count in self._nonfinite.items():
            if count and stem in self._finals:
                name = self._finals[stem].name
                log.warning("%s: %d samples were NaN or infinite: written as silence", name, count)
        self.report = WriteReport(dict(self._peaks), dict(self._clipped), gain)

    def _rescale(self) -> float:
        """Transcode the float32 temporaries to the final format, every one divided by one
        divisor so none exceeds full scale; returns it.

        An mp3 decodes past the peak it was given (0.5 dB on music, 4 dB on a click), so
        each mp3 is decoded as a player would and, while one would clip, made again quieter.
        """
        peak = max(self._peaks.values())
        divisor = max(peak, 1.0)
        self._transcode(divisor)
        if self.format.format == "mp3":
            peaks: dict[str, float] = {}

            def measure(stem: str) -> None:
                peaks[stem] = _decoded_peak(self._parts[stem])[0]

            for _ in range(_MP3_RESCALE_TRIES):
                self._each(measure, list(self._parts))
                decoded = max(peaks.values())
                if decoded <= 1.0:
                    break
                divisor *= decoded * _MP3_MARGIN
                self._transcode(divisor)
        for raw in self._raws.values():
            raw.unlink()
        self._raws.clear()
        return divisor

    def _transcode(self, divisor: float) -> None:
        """Scale every float32 temporary by ``1 / divisor`` into the final format (a file
        made before by another divisor is replaced)."""
        self._each(lambda stem: self._transcode_stem(stem, divisor), list(self._finals))

    def _transcode_stem(self, stem: str, divisor: float) -> None:
        """One stem of :meth:`_transcode`; touches only ``stem``'s entries."""
        frame_bytes = 4 * self.channels
        final = self._finals[stem]
        if stem in self._parts:
            self._parts[stem].unlink()
            del self._parts[stem]
        part = new_temporary(final, ".part", self._parts, stem)
        sink = _open_sink(part, self.sample_rate, self.channels, self.format, self._tags[stem])
        self._sinks[stem] = sink
        with self._raws[stem].open("rb") as f:
            while chunk := f.read(_RESCALE_BLOCK * frame_bytes):
                block = np.frombuffer(chunk, dtype="<f4").reshape(-1, self.channels).T
                # Division, not multiplication by 1/peak: the peak sample becomes exactly
                # 1.0, so nothing rounds past full scale and clips.
                sink.write(block / np.float32(divisor))
        sink.close()

    def _stop_threads(self) -> None:
        """End the writer's threads, once whatever they run has ended."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        """Stop and delete every file written so far; nothing appears under a final name."""
        if self._state == "closed":
            return
        self._state = "aborted"
        self._stop_threads()  # none may still write into a file deleted below
        for sink in self._sinks.values():
            # Best effort: the file is deleted next whether or not it closed cleanly.
            with contextlib.suppress(Exception):
                sink.abort()
        for path in [*self._raws.values(), *self._parts.values()]:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        self._raws.clear()
        self._parts.clear()

    def __enter__(self) -> StemSetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.close()
