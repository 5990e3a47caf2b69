"""Audio in and out: decode any input to float32 blocks, resample, encode stems.

Arrays are always float32 ``(channels, samples)``; rates are in Hz. Every input problem is an
:class:`~demixer.errors.InvalidAudio`, every output problem an
:class:`~demixer.errors.InvalidOutput`.
"""

from __future__ import annotations

from demixer.audio.decode import (
    AudioInfo,
    AudioReader,
    duration_refusal,
    load,
    probe,
    track_refusal,
)
from demixer.audio.encode import FORMATS, OutputFormat, StemSetWriter, WriteReport
from demixer.audio.queue import SampleQueue
from demixer.audio.resample import StreamResampler, fit_length, resample, resampled_length

__all__ = [
    "FORMATS",
    "AudioInfo",
    "AudioReader",
    "OutputFormat",
    "SampleQueue",
    "StemSetWriter",
    "StreamResampler",
    "WriteReport",
    "duration_refusal",
    "fit_length",
    "load",
    "probe",
    "resample",
    "resampled_length",
    "track_refusal",
]
