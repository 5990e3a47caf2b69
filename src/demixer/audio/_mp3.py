"""Streaming MP3 encoding: lameenc at 320 kbps CBR, plus the LAME "Info" tag lameenc omits.

lameenc writes bare MPEG frames. Without an Info tag a decoder cannot know LAME's encoder delay
or end padding, so every decoded stem would start ~25 ms late and end with padding; stems
must line up with the mix sample for sample. So the file starts with a placeholder frame that
:meth:`Mp3File.close` overwrites with a standard Xing/LAME Info frame (frame count, byte count,
seek table, encoder delay and padding), as the ``lame`` command line tool does. Decoders that
know the tag (FFmpeg, browsers, iTunes, foobar2000) then return exactly the samples that went
in; ones that do not play the stem 2257 samples late (51 ms at 44.1 kHz: the tag's own silent
frame, LAME's 576 samples of delay and the decoder's 529), with the encoder's padding after it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import lameenc
import numpy as np

from demixer.audio.resample import StreamResampler

__all__ = ["MP3_RATES", "Mp3File", "mp3_rate"]

MP3_RATES = (32_000, 44_100, 48_000)  # Hz: the only rates of MPEG-1 Layer III
BIT_RATE_KBPS = 320
_SAMPLES_PER_FRAME = 1152  # MPEG-1 Layer III
_ENCODER_DELAY = 576  # samples LAME prepends (lame_get_encoder_delay, since LAME 3.99)
_BITRATES_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_RATE_INDEX = {44_100: 0, 48_000: 1, 32_000: 2}


def mp3_rate(rate: int) -> int:
    """The rate (Hz) an MP3 of ``rate`` Hz input is written at.

    320 kbps exists only in MPEG-1, i.e. at 32, 44.1 or 48 kHz. Other rates are resampled:
    to 44.1 kHz when they are a multiple of 11.025 kHz (22.05, 88.2, 176.4 kHz), else 48 kHz
    (8, 16, 24, 96, 192 kHz…), so the conversion ratio stays simple.
    """
    if rate in MP3_RATES:
        return rate
    return 44_100 if rate % 11_025 == 0 else 48_000


def _frame_length(header: bytes) -> int:
    """Bytes of the MPEG-1 Layer III frame whose 4-byte header is ``header``; 0 if not one."""
    if len(header) < 4 or header[0] != 0xFF or (header[1] & 0xFE) != 0xFA:
        return 0
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if not 0 < bitrate_index < 15 or rate_index == 3:
        return 0
    rate = (44_100, 48_000, 32_000)[rate_index]
    return 144_000 * _BITRATES_KBPS[bitrate_index] // rate + ((header[2] >> 1) & 1)


def _crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005 reflected), the checksum of a LAME tag."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _info_frame(header: bytes, length: int, frames: int, size: int, padding: int) -> bytes:
    """A silent frame carrying the Xing "Info" tag and LAME extension for a CBR stream.

    Args:
        header: the first audio frame's header; reused with its padding bit cleared.
        length: bytes of that unpadded frame (the placeholder's size).
        frames: audio frames after this one.
        size: bytes of the whole file, this frame included.
        padding: samples of encoder padding at the end of the last frame.
    """
    mono = (header[3] >> 6) == 3
    frame = bytearray(length)
    frame[0:4] = bytes((header[0], header[1], header[2] & ~0x02 & 0xFF, header[3]))
    pos = 4 + (17 if mono else 32)  # zero side info: a decoder that ignores the tag plays silence
    toc = bytes(min(255, i * 256 // 100) for i in range(100))  # CBR: bytes grow linearly
    frame[pos : pos + 120] = b"Info" + struct.pack(">III", 0x0F, frames, size) + toc + bytes(4)
    pos += 120
    delays = (_ENCODER_DELAY << 12) | min(padding, 0xFFF)
    lame = b"LAME3.100" + bytes((0x01, 0)) + bytes(8) + bytes((0, min(BIT_RATE_KBPS, 255)))
    lame += delays.to_bytes(3, "big") + bytes(4) + struct.pack(">IH", size, 0)
    frame[pos : pos + len(lame)] = lame
    pos += len(lame)
    frame[pos : pos + 2] = struct.pack(">H", _crc16(bytes(frame[:pos])))
    return bytes(frame)


# ID3v2.4 text frames for the tags demixer carries from an input to its stems.
_ID3_FRAMES = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "date": "TDRC",
    "genre": "TCON",
    "tracknumber": "TRCK",
}


def _synchsafe(n: int) -> bytes:
    return bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3_tag(tags: Mapping[str, str]) -> bytes:
    """An ID3v2.4 tag of ``tags`` (title, artist, album, date, genre, track; UTF-8), or
    nothing."""
    frames = b""
    for name, frame_id in _ID3_FRAMES.items():
        text = tags.get(name)
        if text:
            data = b"\x03" + text.encode("utf-8")  # 3: UTF-8
            frames += frame_id.encode() + _synchsafe(len(data)) + b"\x00\x00" + data
    return b"ID3\x04\x00\x00" + _synchsafe(len(frames)) + frames if frames else b""


class Mp3File:
    """Writes float32 blocks to one MP3 file: 320 kbps CBR, MPEG-1, mono or stereo.

    Input at a rate MPEG-1 lacks is resampled with :class:`StreamResampler` (see
    :func:`mp3_rate`). Samples beyond ±1 (after any resampling) are clipped; counting them is
    the caller's job, on the input it knows.
    """

    def __init__(
        self, path: Path, sample_rate: int, channels: int, tags: Mapping[str, str] | None = None
    ) -> None:
        if channels not in (1, 2):
            raise ValueError(f"MP3 holds 1 or 2 channels, not {channels}")
        self.path = path
        self.channels = channels
        self.rate = mp3_rate(sample_rate)
        self._resampler = (
            None if self.rate == sample_rate else StreamResampler(sample_rate, self.rate, channels)
        )
        self._encoder = lameenc.Encoder()
        self._encoder.set_bit_rate(BIT_RATE_KBPS)
        self._encoder.set_in_sample_rate(self.rate)
        self._encoder.set_out_sample_rate(self.rate)
        self._encoder.set_channels(channels)
        self._encoder.set_quality(2)  # LAME -q 2: its recommended high-quality setting
        self._placeholder = 144_000 * BIT_RATE_KBPS // self.rate
        self._samples = 0  # per channel, at self.rate
        self._file: BinaryIO = path.open("wb")
        self._id3 = id3_tag(tags or {})
        self._file.write(self._id3)
        self._file.write(bytes(self._placeholder))

    def write(self, block: np.ndarray) -> None:
        """Encode ``block``: ``(channels, n)`` float32 at the input rate."""
        if self._resampler is not None:
            block = self._resampler.process(block)
        self._encode(block)

    def _encode(self, block: np.ndarray) -> None:
        if block.shape[1] == 0:
            return
        self._samples += block.shape[1]
        pcm = np.clip(np.rint(block.T * 32767.0), -32768, 32767).astype("<i2")
        self._file.write(bytes(self._encoder.encode(np.ascontiguousarray(pcm))))

    def close(self) -> None:
        """Flush the encoder, write the Info tag and close the file."""
        if self._resampler is not None:
            self._encode(self._resampler.process(np.zeros((self.channels, 0)), last=True))
        if self._samples:
            self._file.write(bytes(self._encoder.flush()))
        self._file.flush()
        size = self._file.tell()
        self._file.close()
        self._write_tag(size)

    def abort(self) -> None:
        """Close the file without finishing it (the caller deletes it)."""
        self._file.close()

    def _write_tag(self, size: int) -> None:
        start = len(self._id3)  # the Info frame comes after the ID3 tag, if any
        with self.path.open("r+b") as f:
            f.seek(start + self._placeholder)
            first = f.read(4)
            if not _frame_length(first):
                # No audio frames at all: a file of just the placeholder is no MP3.
                f.truncate(0)
                return
            frames, pos = 0, start + self._placeholder
            while pos < size:
                f.seek(pos)
                length = _frame_length(f.read(4))
                if not length:
                    break
                frames += 1
                pos += length
            padding = frames * _SAMPLES_PER_FRAME - _ENCODER_DELAY - self._samples
            f.seek(start)
            f.write(_info_frame(first, self._placeholder, frames, size - start, max(0, padding)))
