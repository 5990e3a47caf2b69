"""Hostile and careless inputs, made by the tests: the crafted-file catalogue.

Each maker writes one file that lies about itself or tries to make FFmpeg do more than decode
one stream: a length hidden from the header or understated by it, a header promising hours the
file does not hold, a tiny file that decodes to an hour, many channels, and playlists or concat
scripts that point FFmpeg at other files. All are built from real encoders (PyAV, libsndfile)
with a few header bytes patched by hand; nothing is downloaded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from audiofiles import encode, tone

__all__ = [
    "CRAFTED",
    "concat_script",
    "hls_playlist",
    "lying_xing_mp3",
    "many_channels_wav",
    "silent_flac_without_length",
    "wav_promising",
]


def lying_xing_mp3(path: Path, seconds: float = 40.0, declared_frames: int = 38) -> Path:
    """A VBR-tagged MP3 whose seek header (Xing) counts ``declared_frames`` frames (about one
    second) while ``seconds`` of frames follow: FFmpeg trusts the tag, so the declared
    duration is a small fraction of what decodes."""
    rate = 44100
    encode(path, tone(seconds, rate, (440.0, 660.0)), rate, "libmp3lame", bit_rate=64_000,
           container_format="mp3")  # fmt: skip
    data = bytearray(path.read_bytes())
    at = data.find(b"Info")  # the CBR tag FFmpeg's muxer writes: made a VBR one
    assert at > 0, "no Info tag in the encoded MP3"
    data[at : at + 4] = b"Xing"
    data[at + 8 : at + 12] = declared_frames.to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def silent_flac_without_length(path: Path, seconds: float = 3300.0, rate: int = 8000) -> Path:
    """``seconds`` of digital silence as FLAC (under 100 kB for an hour) with STREAMINFO's
    total-samples field zeroed ("unknown", as a streamed encoder writes it): a tiny file that
    decodes to a long one and declares no length at all."""
    sf.write(path, np.zeros(round(seconds * rate), np.float32), rate, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    at = 8 + 10  # "fLaC", the block header, then block sizes (4 bytes) and frame sizes (6)
    (packed,) = struct.unpack(">Q", data[at : at + 8])
    data[at : at + 8] = struct.pack(">Q", packed & ~((1 << 36) - 1))  # total samples: 0
    path.write_bytes(bytes(data))
    return path


def wav_promising(path: Path, promised_seconds: float = 36_000.0, seconds: float = 1.0) -> Path:
    """A 16-bit stereo WAV whose ``data`` chunk promises ``promised_seconds`` (ten hours) but
    holds ``seconds``: FFmpeg alone clamps the length to the bytes present."""
    rate = 44100
    sf.write(path, tone(seconds, rate, (440.0, 660.0)).T, rate, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    promised = min(0xFFFFFFFE, round(promised_seconds * rate) * 4)
    data[at + 4 : at + 8] = struct.pack("<I", promised)
    data[4:8] = struct.pack("<I", min(0xFFFFFFFE, promised + at - 4))
    path.write_bytes(bytes(data))
    return path


def many_channels_wav(path: Path, channels: int = 24, seconds: float = 1.0) -> Path:
    """``channels`` channels of tones (a multitrack export sent as one file)."""
    rate = 48000
    freqs = [200.0 + 50 * i for i in range(channels)]
    sf.write(path, tone(seconds, rate, freqs).T, rate, subtype="PCM_16")
    return path


def concat_script(path: Path, target: Path) -> Path:
    """An FFmpeg concat script (``ffconcat``) naming another file on the server's disk: opened
    as such, FFmpeg would decode ``target`` instead."""
    path.write_text(f"ffconcat version 1.0\nfile '{target}'\nfile '{target}'\n")
    return path


def hls_playlist(path: Path, target: Path) -> Path:
    """An HLS playlist whose segments are a file on the server's disk and a URL."""
    path.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-VERSION:3\n"
        f"#EXTINF:10.0,\n{target}\n#EXTINF:10.0,\nhttp://127.0.0.1:9/segment.ts\n#EXT-X-ENDLIST\n"
    )
    return path


def _plain(path: Path, seconds: float, channels: int = 2, rate: int = 44100) -> Path:
    freqs = (440.0, 660.0, 330.0, 110.0, 550.0, 770.0)[:channels]
    sf.write(path, tone(seconds, rate, freqs).T, rate, subtype="PCM_16")
    return path


#: file name -> maker(path, a real audio file elsewhere on the disk)
CRAFTED: dict[str, Callable[[Path, Path], Path]] = {
    "lying-xing.mp3": lambda p, _: lying_xing_mp3(p),
    "silent-hour.flac": lambda p, _: silent_flac_without_length(p, seconds=3600.0, rate=8000),
    "promises-10h.wav": lambda p, _: wav_promising(p),
    "surround-6ch.wav": lambda p, _: _plain(p, 1.0, channels=6),
    "multitrack-24ch.wav": lambda p, _: many_channels_wav(p, seconds=0.5),
    "concat.mp3": concat_script,
    "playlist.m3u8": hls_playlist,
    "empty.wav": lambda p, _: (p.write_bytes(b""), p)[1],
    "text.mp3": lambda p, _: (p.write_text("not audio at all\n" * 100), p)[1],
    "rate4k.wav": lambda p, _: _plain(p, 1.0, channels=1, rate=4000),
    "fine.wav": lambda p, _: _plain(p, 2.0),
}
