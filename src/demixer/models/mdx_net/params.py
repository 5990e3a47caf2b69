"""The per-model parameters of a UVR MDX-Net model, read from a registry entry's ``arch_params``.

UVR publishes them in ``models/MDX_Net_Models/model_data/model_data.json``, keyed by an MD5 of
the ONNX file's last 10 000 KiB. The names here are UVR's with its encodings undone:

=================  ==========================  ==============================================
``arch_params``    UVR's model data            meaning
=================  ==========================  ==============================================
``dim_f``          ``mdx_dim_f_set``           STFT bins the network sees (the lowest ones)
``dim_t``          ``2 ** mdx_dim_t_set``      frames per chunk the network was trained on
``n_fft``          ``mdx_n_fft_scale_set``     STFT frame length in samples
``compensate``     ``compensate``              gain applied to the model's output
``primary_stem``   ``primary_stem``            what the network outputs (``Vocals`` ...)
=================  ==========================  ==============================================

and UVR's inference settings, each defaulting to UVR's own default:

- ``segment_size`` (256): frames per chunk actually run; UVR's GUI default is 256 for every
  model, including those trained with ``dim_t`` 512.
- ``overlap`` (``"default"``): UVR's "Default" steps chunks by ``chunk - n_fft`` samples; a
  number in [0, 1) steps them by ``int((1 - overlap) * chunk)`` (audio-separator's 0.25 is one).
- ``denoise`` (false): UVR's "Denoise Output: Standard", which runs the network on the
  spectrogram and on its negation and averages ``f(x)`` and ``-f(-x)``; it doubles the compute.
- ``hop_length`` (1024): STFT hop in samples (fixed in UVR for ONNX models).
- ``batch_size`` (0 = automatic): chunks per network call; it changes speed, never the output.

``is_karaoke`` (UVR's flag for its UI) is accepted and unused. Any other key is refused, so a
misspelt parameter cannot silently fall back to a default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from demixer.errors import InvalidModelConfig
from demixer.models.arch.limits import frame_problem
from demixer.models.spec import check_uvr_keys
from demixer.models.stft import stft_problem

__all__ = ["ARCH_PARAMS", "DEFAULT_OVERLAP", "MdxParams"]

DEFAULT_OVERLAP = "default"
#: every key :meth:`MdxParams.from_arch_params` reads; any other key is refused as a typo.
ARCH_PARAMS = (
    "dim_f",
    "dim_t",
    "n_fft",
    "compensate",
    "primary_stem",
    "segment_size",
    "overlap",
    "denoise",
    "hop_length",
    "batch_size",
    "is_karaoke",
)


@dataclass(frozen=True)
class MdxParams:
    """Validated MDX-Net parameters (see the module docstring for each).

    Attributes:
        dim_f: spectrogram bins fed to the network, ``<= n_fft // 2 + 1``.
        dim_t: frames per chunk the network was trained with.
        n_fft: STFT frame length, samples (even).
        hop_length: STFT hop, samples.
        compensate: gain on the network's output (UVR multiplies the primary stem by it).
        primary_stem: the stem the network outputs, lower case (``vocals``).
        segment_size: frames per chunk run (the network's time axis at inference).
        overlap: ``"default"`` (UVR) or a fraction in [0, 1).
        denoise: run the network on ``x`` and ``-x`` and average ``f(x)`` and ``-f(-x)``.
        batch_size: chunks per network call (0: chosen by the backend).
    """

    dim_f: int
    dim_t: int
    n_fft: int
    hop_length: int = 1024
    compensate: float = 1.0
    primary_stem: str | None = None
    segment_size: int = 256
    overlap: float | str = DEFAULT_OVERLAP
    denoise: bool = False
    batch_size: int = 0

    @property
    def chunk(self) -> int:
        """Samples per chunk: ``hop_length * (segment_size - 1)`` (the STFT gives that + 1)."""
        return self.hop_length * (self.segment_size - 1)

    @property
    def trim(self) -> int:
        """Zeros (samples) UVR puts before the signal: half a frame, so the centred STFT's
        reflection padding never reaches the first real sample."""
        return self.n_fft // 2

    @property
    def step(self) -> int:
        """Samples between consecutive chunk starts."""
        if self.overlap == DEFAULT_OVERLAP:
            return self.chunk - self.n_fft
        return int((1 - float(self.overlap)) * self.chunk)

    @property
    def windowed(self) -> bool:
        """Whether chunks are Hann-weighted (all but ``overlap=0``, which just adds them)."""
        return self.overlap == DEFAULT_OVERLAP or float(self.overlap) != 0

    @classmethod
    def from_arch_params(
        cls, params: Mapping[str, Any], *, model_id: str, source: str | None = None
    ) -> MdxParams:
        """Validate a registry entry's ``arch_params``.

        Args:
            params: the parameters, by the names above.
            model_id: the model they are for, named in messages.
            source: where they were read (a user's parameters file), named in messages
                instead of the model.

        Raises:
            InvalidModelConfig: a required key is missing, a key is unknown, or a value is out
                of range; the message names the model (or ``source``) and the key.
        """
        where = f"{source}:" if source is not None else f"model {model_id!r}: arch_params"

        def bad(message: str) -> InvalidModelConfig:
            return InvalidModelConfig(f"{where} {message}")

        check_uvr_keys(params, known=ARCH_PARAMS, required=("dim_f", "dim_t", "n_fft"), where=where)

        def integer(key: str, default: int, low: int) -> int:
            value = params.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise bad(f"{key}={value!r}: expected an integer >= {low}")
            return value

        n_fft = integer("n_fft", 0, 2)
        too_big = frame_problem("n_fft", n_fft, "4096 to 16384")  # before its window is made
        if too_big:
            raise bad(too_big)
        if n_fft % 2:
            raise bad(f"n_fft={n_fft}: expected an even frame length")
        dim_f = integer("dim_f", 0, 1)
        if dim_f > n_fft // 2 + 1:
            raise bad(f"dim_f={dim_f} exceeds the {n_fft // 2 + 1} bins of n_fft={n_fft}")
        hop = integer("hop_length", 1024, 1)
        if hop > n_fft:  # frames would leave gaps: no inverse STFT can rebuild the signal
            raise bad(f"hop_length={hop} exceeds n_fft={n_fft}: frames must overlap")
        segment = integer("segment_size", 256, 2)
        if hop * (segment - 1) <= n_fft:
            raise bad(f"segment_size={segment}: a chunk must be longer than n_fft={n_fft}")
        # A Hann window's tails are tiny: frames more than half a window apart can leave
        # samples torch's inverse STFT refuses to rebuild (hop_length = n_fft always does).
        problem = stft_problem(
            torch.hann_window(n_fft), n_fft=n_fft, hop=hop, samples=hop * (segment - 1)
        )
        if problem:
            raise bad(f"hop_length={hop} with n_fft={n_fft}: {problem}")
        compensate = params.get("compensate", 1.0)
        if isinstance(compensate, bool) or not isinstance(compensate, int | float):
            raise bad(f"compensate={compensate!r}: expected a number")
        if not math.isfinite(compensate) or compensate <= 0:
            raise bad(f"compensate={compensate!r}: expected a positive gain")
        overlap = params.get("overlap", DEFAULT_OVERLAP)
        if overlap != DEFAULT_OVERLAP:
            if isinstance(overlap, bool) or not isinstance(overlap, int | float):
                raise bad(f"overlap={overlap!r}: expected {DEFAULT_OVERLAP!r} or a number")
            if not 0 <= overlap < 1 or int((1 - overlap) * hop * (segment - 1)) < 1:
                raise bad(f"overlap={overlap!r}: expected a fraction in [0, 1)")
            overlap = float(overlap)
        denoise = params.get("denoise", False)
        if not isinstance(denoise, bool):
            raise bad(f"denoise={denoise!r}: expected true or false")
        primary = params.get("primary_stem")
        if primary is not None and not isinstance(primary, str):
            raise bad(f"primary_stem={primary!r}: expected a stem name")
        return cls(
            dim_f=dim_f,
            dim_t=integer("dim_t", 0, 2),
            n_fft=n_fft,
            hop_length=hop,
            compensate=float(compensate),
            primary_stem=primary.lower() if primary else None,
            segment_size=segment,
            overlap=overlap,
            denoise=denoise,
            batch_size=integer("batch_size", 0, 0),
        )
