"""Decode any audio or video file PyAV can open into float32 ``(channels, samples)`` blocks.

This module is the one boundary between demixer and FFmpeg's demuxers and decoders: every
failure on the way in (missing, empty or non-media file, no audio stream, an unsupported
channel count or sample rate, a truncated or corrupt file, zero samples) leaves it as a single
:class:`~demixer.errors.InvalidAudio` whose message says what is wrong. No ``av.error``,
``OSError`` or ``IndexError`` escapes.

Truncation is caught three ways, because no single signal covers every container:

* the container cannot be opened at all (MP4 without its ``moov`` atom, Ogg without headers);
* the decoder reports corrupt data at the end of the stream (FLAC frames cut mid-way fail
  their CRC). Damage with good audio after it is a glitch, concealed as silence
  (:meth:`AudioReader._decoded`);
* fewer samples decode than the file declares: the stream's duration (MP3 Xing/Info frame
  count, FLAC STREAMINFO, MP4 sample tables, a Matroska track's DURATION tag, else the
  container's length where the audio is its only stream: a longer video is no cut), or for
  WAV, RF64, Wave64 and uncompressed CAF the ``data`` chunk size in the header (FFmpeg clamps
  the duration of all but RF64 to the bytes present: its figure cannot show the cut). A shortfall of
  more than :data:`TRUNCATION_TOLERANCE` of the declared length (and at least
  :data:`TRUNCATION_MIN_SECONDS`) is reported as truncation. The slack absorbs encoder
  padding; a cut inside it, or in a format that states no length (a raw stream: ADTS AAC,
  AC-3, DTS, an MP3 without a Xing, Info or VBRI tag, whose length FFmpeg only guesses from
  its bit rate; the last Ogg page), cannot be told from a shorter file and is accepted. What a
  file declares, and the checks that need no decoding, are :mod:`demixer.audio.declared`'s.

A video's sound is read as a player plays it, so that stems put back on the picture keep
lip sync: the audio track flagged default (else the first), from the file's start, the
stretch before the audio's first sample (sound that starts after the picture) and any gap in
its timestamps (:class:`_Holes`) read as silence.

What a file declares is never trusted as a bound. FFmpeg opens inputs
(:mod:`demixer.audio.container`) only with the demuxers in :data:`DEMUXERS` (audio and video
containers; no playlists, concat scripts, image sequences or network protocols, so a crafted
file cannot make it read another path or a URL). A duration limit (``max_seconds``) holds on the
samples actually decoded, and :func:`probe` counts the stream's packets (bounded by the same
limit) so a hidden or understated length shows at upload, where the job would find it. Progress
(:attr:`AudioReader.fraction_read`) follows the bytes read, not the declared length.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.error
import numpy as np
from av.audio.stream import AudioStream

from demixer.audio.container import (
    DEMUXERS,
    FOREIGN,
    MAX_HOLE_SECONDS,
    MAX_SAMPLE_RATE,
    MIN_HOLE_SECONDS,
    MIN_SAMPLE_RATE,
    AudioInfo,
    audio_info,
    duration_refusal,
    from_start,
    is_timed,
    open_file,
    over_limit,
    probe,
    track_refusal,
    unreadable,
)
from demixer.audio.declared import (
    TRUNCATION_MIN_SECONDS,
    TRUNCATION_TOLERANCE,
    checked_declared,
    quoted_name,
    slack,
    truncated,
)
from demixer.errors import InvalidAudio

__all__ = [
    "DEMUXERS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "TAGS",
    "TRUNCATION_MIN_SECONDS",
    "TRUNCATION_TOLERANCE",
    "AudioInfo",
    "AudioReader",
    "duration_refusal",
    "load",
    "probe",
    "track_refusal",
]

log = logging.getLogger("demixer.audio")

#: The tags carried from an input to its stems (every output format holds these six; the
#: names are libsndfile's, and FFmpeg reads ``tracknumber`` as ``track``).
TAGS = ("title", "artist", "album", "date", "genre", "tracknumber")
# Samples an MP4's last AAC frames (an MP3's last frame) may decode past its edit list (its LAME
# tag): the encoder's padding, under 2 frames.
_EDIT_PADDING = 4096
# The longest run of damaged frames read as silence (a glitch); more is a broken file.
_MAX_DAMAGED_SECONDS = 0.5


class AudioReader:
    """Streams the first audio stream of any container PyAV opens, as float32 blocks.

    Decoded frames go through PyAV's :class:`av.AudioResampler` (format ``fltp``, the stream's
    own rate), which also fixes the channel layout: mono stays mono, stereo stays stereo (one
    or two channels as they are, whatever speakers the file names), and with ``downmix=True``
    more channels are folded to stereo by FFmpeg's default (libswresample) matrix: front
    left/right at 1, centre and surrounds at -3 dB (×0.707) into their side, LFE dropped, no
    normalisation, so a loud 5.1 mix can exceed ±1 (left for the writer to handle).

    Use as a context manager; :meth:`blocks` may be iterated once.

    Args:
        path: the file.
        downmix: fold more than two channels to stereo (else such a file is refused).
        max_seconds: the most audio to decode (None: no limit). A file declaring more is
            refused at once, one declaring less (or nothing) as soon as the decoded samples
            pass the limit: :class:`~demixer.errors.DurationLimit`.
        track: the audio track to read, counted from 1 (None: the one players play); one the
            file does not have is :class:`~demixer.errors.InvalidAudio`.

    Attributes:
        info: what the file declares (channels as stored, before any downmix).
        channels: channels of the blocks :meth:`blocks` yields: 1 or 2.
        sample_rate: Hz of those blocks (always ``info.sample_rate``).
        path: the file being read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        downmix: bool = False,
        max_seconds: float | None = None,
        track: int | None = None,
    ) -> None:
        self.path = Path(path)
        self._container = open_file(self.path)
        try:
            self.info, self._stream = audio_info(self.path, self._container, track)
            if self.info.channels > 2 and not downmix:
                raise InvalidAudio(
                    f"{quoted_name(self.path)} has {self.info.channels} channels; demixer "
                    "separates mono or stereo. Ask for a downmix to fold it to stereo first (CLI "
                    "--downmix, API input.downmix: true)."
                )
            # The audio's own length; info.duration adds its offset (the stems' length).
            self._declared: float | None = checked_declared(
                self.path, self.info.container, self.info.duration
            )
            self.info = from_start(self.info, self.info.duration)
            length = (self._declared or 0.0) + self.info.offset
            if max_seconds is not None and length > max_seconds:
                raise over_limit(self.path, length, max_seconds, "it declares")
            self._size = self.path.stat().st_size
        except BaseException:
            self._container.close()
            raise
        self.max_seconds = max_seconds
        self.channels = 1 if self.info.channels == 1 else 2
        self.sample_rate = self.info.sample_rate
        self._lead = round(self.info.offset * self.sample_rate)  # samples of silence first
        self._layout = "mono" if self.channels == 1 else "stereo"
        self._iterated = False
        self._read_to = 0  # bytes of the file demuxed so far

    @property
    def tags(self) -> dict[str, str]:
        """The file's title, artist, album, date, genre and track number, where it names them
        (the container's metadata, else the audio stream's: an Ogg file keeps them there)."""
        found: dict[str, str] = {}
        for source in (self._stream.metadata, self._container.metadata):
            for key, value in source.items():
                name = {"track": "tracknumber"}.get(key.lower(), key.lower())
                if name in TAGS and isinstance(value, str) and value.strip():
                    found[name] = " ".join(value.split())[:200]  # one line, bounded
        return found

    @property
    def fraction_read(self) -> float:
        """How much of the file has been demuxed (0–1, by bytes): a progress measure that no
        declared length can make wrong."""
        return min(1.0, self._read_to / self._size) if self._size else 0.0

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
        The blocks start at the file's start: an audio track that starts later (``info.offset``)
        is preceded by that much silence.

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
        limit = None if self.max_seconds is None else round(self.max_seconds * self.sample_rate)
        nonfinite = 0
        for array in self._after_lead(self._within_edit_list(self._decoded()), frames):
            bad = ~np.isfinite(array)  # a float file's NaN or Inf would spread through a model
            if bad.any():
                nonfinite += int(bad.sum())
                array = np.where(bad, np.float32(0.0), array)
            pos, n = 0, array.shape[1]
            total += n
            if limit is not None and total > limit:
                raise over_limit(
                    self.path,
                    total / self.sample_rate,
                    self.max_seconds or 0.0,
                    "decoding stopped after",
                )
            while pos < n:
                take = min(frames - fill, n - pos)
                block[:, fill : fill + take] = array[:, pos : pos + take]
                fill += take
                pos += take
                if fill == frames:
                    yield block
                    block = np.empty((self.channels, frames), dtype=np.float32)
                    fill = 0
        if total == self._lead:
            if self._declared:  # it promised audio: a cut file, not an empty one
                raise truncated(self.path, 0.0, self._declared, "decoded")
            raise InvalidAudio(f"{quoted_name(self.path)} contains no audio samples (zero length)")
        if nonfinite:
            log.warning(
                "%s: %d samples were NaN or infinite: read as silence",
                quoted_name(self.path),
                nonfinite,
            )
        self._check_complete(total - self._lead)
        if fill:
            yield np.ascontiguousarray(block[:, :fill])

    def _after_lead(self, arrays: Iterator[np.ndarray], frames: int) -> Iterator[np.ndarray]:
        """``arrays`` after :attr:`_lead` samples of silence, in pieces of at most ``frames``."""
        yield from _silence(self.channels, self._lead, frames)
        yield from arrays

    def _within_edit_list(self, arrays: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """``arrays`` ending where an MP4/MOV file's edit list, or an MP3's LAME tag, says
        the audio ends.

        An AAC encoder pads its last frame; the edit list (whose length is the stream's
        duration) says where the real audio stops, and FFmpeg here skips the priming at the
        start but decodes the padding at the end (820 samples of ringing after a 3 s song).
        An MP3's padding FFmpeg drops by the packets' timestamps, which a damaged frame
        header puts a frame early (the damaged run is fewer packets than it held frames):
        then it dropped none, and the song ran 227 samples long. What decodes past the
        declared length is held back, and dropped if the stream ends within
        :data:`_EDIT_PADDING` samples of it; a longer tail means the declared length was not
        the audio's, and is passed on whole.
        """
        name = self._container.format.name.split(",")[0]
        if name not in ("mov", "mp3") or self._declared is None:
            yield from arrays
            return
        keep = round(self._declared * self.sample_rate)
        emitted, held, held_n = 0, [], 0
        for array in arrays:
            if held_n > _EDIT_PADDING:  # not padding: everything goes on
                yield array
                continue
            take = min(array.shape[1], max(0, keep - emitted))
            if take:
                yield array[:, :take]
                emitted += take
            if take < array.shape[1]:
                held.append(array[:, take:])
                held_n += array.shape[1] - take
                if held_n > _EDIT_PADDING:
                    yield from held
                    held = []

    def _decoded(self) -> Iterator[np.ndarray]:
        """Every decoded frame as float32 ``(channels, n)``, FFmpeg errors translated.

        A damaged frame with good audio after it is concealed as players conceal it: read as
        silence of its length (so what follows keeps its time, against a video too), and
        said in a warning. In a constant-bit-rate stream that length is that of the frames
        its bytes held (:meth:`_GoodPackets.span`), else the damaged packets' own. Damage at
        the end (a cut file), a damaged run longer than :data:`_MAX_DAMAGED_SECONDS`, or more
        than :data:`TRUNCATION_TOLERANCE` of the audio damaged (and more than that run) is
        refused as corrupt.
        """
        resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self.sample_rate)
        signature: tuple[str, str, int] | None = None
        damaged: list[float] = []  # seconds of each damaged packet not yet concealed
        run_from: int | None = None  # the byte where that run starts
        run_to: int | None = None  # and the byte of the good packet after it
        good = _GoodPackets()
        holes = _Holes(is_timed(self._container))
        concealed = packets = 0
        concealed_seconds = frame_seconds = good_seconds = 0.0
        try:
            for packet in self._container.demux(self._stream):
                if packet.pos is not None and packet.pos >= 0:
                    self._read_to = max(self._read_to, packet.pos + packet.size)
                if packet.size == 0:  # the demuxer's end-of-stream flush
                    decoded = packet.decode()
                else:
                    packets += 1
                    try:
                        decoded = packet.decode()
                    except av.error.InvalidDataError as e:
                        if not damaged:
                            run_from, run_to = packet.pos, None
                        damaged.append(_seconds(packet.duration, packet.time_base) or frame_seconds)
                        if sum(damaged) > _MAX_DAMAGED_SECONDS:
                            raise self._corrupt(e) from e
                        error = e
                        continue
                    if damaged and run_to is None:
                        run_to = packet.pos
                    good.add(packet)
                if damaged and decoded:
                    run, frames = good.span(run_from, run_to, len(damaged)) or (
                        sum(damaged), len(damaged)
                    )  # fmt: skip
                    yield np.zeros((self.channels, round(run * self.sample_rate)), np.float32)
                    concealed += frames
                    concealed_seconds += run
                    damaged = []
                for frame in map(_as_mono_or_stereo, decoded):
                    hole = holes.before(frame, good_seconds + concealed_seconds)
                    yield from _silence(self.channels, round(hole * self.sample_rate), 1 << 16)
                    frame_seconds = frame.samples / frame.sample_rate
                    good_seconds += frame_seconds
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if signature is not None and key != signature:
                        # A resampler is tied to one input format; some streams change
                        # layout or rate mid-way (broadcast AAC, concatenated MP3s).
                        yield from _arrays(resampler.resample(None))
                        resampler = av.AudioResampler(
                            format="fltp", layout=self._layout, rate=self.sample_rate
                        )
                    signature = key
                    yield from _arrays(self._converted(resampler, frame))
            yield from _arrays(resampler.resample(None))
        except InvalidAudio:
            raise
        except FOREIGN as e:
            raise self._corrupt(e) from e
        if damaged:  # nothing good after it: the file ends damaged, or cut
            raise self._corrupt(error)
        if concealed and concealed_seconds > max(
            _MAX_DAMAGED_SECONDS, TRUNCATION_TOLERANCE * (good_seconds + concealed_seconds)
        ):
            raise InvalidAudio(
                f"{quoted_name(self.path)} is corrupt: {concealed} of its {packets} audio frames "
                f"({concealed_seconds:.2f} s) are damaged"
            )
        if concealed:
            log.warning(
                "%s: %d damaged audio frame%s (%.2f s) read as silence",
                quoted_name(self.path), concealed, "" if concealed == 1 else "s", concealed_seconds,
            )  # fmt: skip
        if holes.count:
            log.warning(
                "%s: %d gap%s in its sound (%.2f s) read as silence, so that what follows "
                "keeps its place against the picture",
                quoted_name(self.path), holes.count, "" if holes.count == 1 else "s", holes.seconds,
            )  # fmt: skip

    def _converted(self, resampler: av.AudioResampler, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """``frame`` through ``resampler``; a downmix FFmpeg has no matrix for is said so.

        libswresample knows speaker positions for up to 24 unnamed channels, and cannot map
        a layout without front channels (say back and side left/right only) to stereo: a
        32-track recording asked to be folded was refused as "corrupt or truncated".
        """
        try:
            return resampler.resample(frame)
        except av.error.ArgumentError as e:
            channels = frame.layout.nb_channels
            if channels <= 2:
                raise
            what = frame.layout.name  # "5.1(side)", "4 channels (BL+BR+SL+SR)", "32 channels"
            if what == f"{channels} channels":
                what += ", no speakers named"
            raise InvalidAudio(
                f"{quoted_name(self.path)} has {what}: FFmpeg cannot fold that to stereo; mix it "
                "down to stereo first"
            ) from e

    def _corrupt(self, error: BaseException) -> InvalidAudio:
        return unreadable(self.path, self.info.container, error, "decoding failed")

    def _check_complete(self, decoded: int) -> None:
        self._read_to = self._size
        declared = self._declared
        if declared is None:
            return
        got = decoded / self.sample_rate
        if got < declared - slack(declared):
            raise truncated(self.path, got, declared, "decoded")


@dataclass
class _GoodPackets:
    """The sizes and lengths of the packets that decoded, for the length of a damaged run."""

    count: int = 0
    size: int = 0  # bytes, all together
    seconds: float = 0.0  # all together
    smallest: int = 0
    largest: int = 0

    def add(self, packet: av.Packet[AudioStream]) -> None:
        self.count += 1
        self.size += packet.size
        self.seconds += _seconds(packet.duration, packet.time_base)
        self.smallest = min(self.smallest or packet.size, packet.size)
        self.largest = max(self.largest, packet.size)

    def span(self, start: int | None, end: int | None, packets: int) -> tuple[float, int] | None:
        """Seconds and frames a damaged run of ``packets`` packets, from byte ``start`` to
        byte ``end``, held, when every good packet so far was one size, give or take a
        padding byte (a constant bit rate: an MP3's frames); None in any other stream, one
        too short to tell, or where the bytes say more than twice or under half the packets.

        A damaged MP3 frame header hides where frames begin: FFmpeg's parser then cuts the
        run into fewer packets than it held frames, and silence of their length put what
        followed a frame early (and every stem a frame short). Its bytes do not lie."""
        if start is None or end is None or end <= start or self.count < 8 or not self.seconds:
            return None
        if self.largest - self.smallest > 1:
            return None
        frames = round((end - start) * self.count / self.size)
        if not packets / 2 <= frames <= packets * 2:  # the sizes so far were no guide
            return None
        return frames * self.seconds / self.count, frames


@dataclass
class _Holes:
    """Gaps in a video's audio timestamps: a recorder that paused its sound (a muted
    microphone, a dropped device) while the picture ran on. Decoded frames are put end to
    end, so all that followed such a gap came early, out of sync with the picture, and the
    file read as truncated (fewer samples than its length). Players keep each frame at its
    time; so does :meth:`before`, with silence.

    Attributes:
        timed: whether the container's timestamps are to be trusted (:func:`is_timed`).
        origin: the first frame's time, seconds.
        count: gaps found.
        seconds: their length, all together.
    """

    timed: bool
    origin: float | None = None
    count: int = 0
    seconds: float = 0.0

    def before(self, frame: av.AudioFrame, read: float) -> float:
        """Seconds of silence to put before ``frame``, ``read`` seconds of audio (frames and
        concealed damage, not gaps) after the first: how much later it starts than that."""
        if not self.timed or frame.time is None:
            return 0.0
        if self.origin is None:
            self.origin = frame.time
            return 0.0
        hole = frame.time - self.origin - read - self.seconds
        if not MIN_HOLE_SECONDS <= hole <= MAX_HOLE_SECONDS:
            return 0.0
        self.count += 1
        self.seconds += hole
        return hole


def _silence(channels: int, samples: int, frames: int) -> Iterator[np.ndarray]:
    """``samples`` of silence, float32 ``(channels, n)``, in pieces of at most ``frames``."""
    for start in range(0, samples, frames):
        yield np.zeros((channels, min(frames, samples - start)), np.float32)


def _seconds(duration: int | None, time_base: Fraction | None) -> float:
    """A packet's duration in seconds (0 when it states none, or a negative one)."""
    return max(0.0, float(duration * time_base)) if duration and time_base else 0.0


def _as_mono_or_stereo(frame: av.AudioFrame) -> av.AudioFrame:
    """``frame`` as it is when it has more than two channels; else its one or two channels
    labelled mono or stereo, whatever speaker positions the file names for them.

    A pair named, say, back left/right (a surround stem exported as a WAV of its own) or
    centre + LFE would be remixed by FFmpeg towards the front: failing ("Invalid argument":
    no front channel to map to), or dropping the LFE and doubling the centre. A mono or
    stereo file is separated as its channels are, so its stems add up to it.
    """
    channels = frame.layout.nb_channels
    if channels > 2 or frame.layout.name in ("mono", "stereo"):
        return frame
    try:
        samples = frame.to_ndarray()
    except ValueError:  # a sample format numpy has no type for (s64): as FFmpeg names it
        return frame
    plain = av.AudioFrame.from_ndarray(
        samples, format=frame.format.name, layout="mono" if channels == 1 else "stereo"
    )
    plain.sample_rate, plain.pts = frame.sample_rate, frame.pts
    if frame.time_base is not None:
        plain.time_base = frame.time_base
    return plain


def _arrays(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    for frame in frames:
        if frame.samples:
            yield frame.to_ndarray()


def load(
    path: str | os.PathLike[str],
    *,
    downmix: bool = False,
    max_seconds: float | None = None,
    track: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode a whole file (audio track ``track``, from 1; None: the one players play):
    ``((channels, samples) float32, sample_rate in Hz)``.

    Memory is the decoded length; use :class:`AudioReader` to stream long inputs.
    """
    with AudioReader(path, downmix=downmix, max_seconds=max_seconds, track=track) as reader:
        chunks = list(reader.blocks(1 << 16))
        return np.concatenate(chunks, axis=1), reader.sample_rate
