"""Bandit v2 (Watcharasupat, Wu and Orife, 2024), MSST's ``bandit_v2``: a film's or a video's
sound split into dialogue, music and effects (cinematic audio source separation).

The network, as in the authors' code (kwatcharasupat/bandit-v2, Apache-2.0) that MSST carries:

- each audio channel is separated on its own (the network is mono: ``in_channels`` 1); its
  STFT is centred, padded by ``pad_mode``, windowed by ``window_fn`` and, with ``normalized``,
  divided by the window's L2 norm (torchaudio's ``Spectrogram``, which the reference uses);
- the bins are split into ``n_bands`` overlapping bands spaced evenly in pitch (the "musical"
  band layout, :func:`musical_bands`); each band's real and imaginary parts are normalised
  (LayerNorm) and mapped to ``emb_dim`` features;
- ``n_sqm_modules`` pairs of residual recurrent layers (LayerNorm, a bidirectional GRU or
  LSTM, a linear map back, the input added), the first of each pair along time, the second
  across bands;
- per stem, per band, an MLP (LayerNorm, ``mlp_dim`` with ``hidden_activation``, a GLU) gives a
  complex mask for the band's bins; overlapping bands' masks are summed, each weighted by the
  share of the bin its band holds (``use_freq_weights``), and applied to the mixture's STFT,
  which is inverted (torchaudio's ``InverseSpectrogram``).

Output: ``(batch, stems, channels, samples)``, the stems being ``stems`` of the config's
``kwargs:`` section (MSST builds this network from ``kwargs:``, not ``model:``).

The state_dict is the reference's: its ``combined`` sequences name the same layers a second
time, its STFT windows are stored, and its band weights are float64 buffers named
``freq_weights/{band}``, so a checkpoint converted for MSST loads as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules import activation

from demixer.models.arch import check_named_in_order
from demixer.models.stft import stft_problem

__all__ = ["Bandit", "BanditOptions", "build", "musical_bands", "options"]

_WINDOWS = ("hann_window", "hamming_window", "blackman_window", "bartlett_window")
_RNNS = ("GRU", "LSTM", "RNN")
# Options the reference accepts that change nothing at inference: the precisions training ran
# at (the reference never reads them), and a check every musical layout passes (no bin is left
# out of all bands). `fs` stays: the layout is computed at it (it scales with the rate, but its
# rounding to whole bins is the reference's own at that rate).
_UNUSED = frozenset(
    {"stft_precisions", "bandsplit_precisions", "tf_model_precisions"}
    | {"mask_estim_precisions", "require_no_gap"}
)
_DEFAULTS: dict[str, Any] = {
    "in_channels": 1,
    "band_type": "musical",
    "n_bands": 64,
    "require_no_overlap": False,
    "normalize_channel_independently": False,
    "treat_channel_as_feature": True,
    "n_sqm_modules": 12,
    "emb_dim": 128,
    "rnn_dim": 256,
    "bidirectional": True,
    "rnn_type": "LSTM",
    "mlp_dim": 512,
    "hidden_activation": "Tanh",
    "hidden_activation_kwargs": None,
    "complex_mask": True,
    "use_freq_weights": True,
    "n_fft": 2048,
    "win_length": 2048,
    "hop_length": 512,
    "window_fn": "hann_window",
    "wkwargs": None,
    "power": None,
    "center": True,
    "normalized": True,
    "pad_mode": "constant",
    "onesided": True,
    "fs": 44100,
}


@dataclass(frozen=True)
class BanditOptions:
    """The ``kwargs:`` options of MSST's ``bandit_v2`` that change what it computes."""

    stems: tuple[str, ...]
    n_bands: int
    n_sqm_modules: int
    emb_dim: int
    rnn_dim: int
    bidirectional: bool
    rnn_type: str
    mlp_dim: int
    hidden_activation: str
    hidden_activation_kwargs: Mapping[str, Any]
    complex_mask: bool
    use_freq_weights: bool
    n_fft: int
    win_length: int
    hop_length: int
    window_fn: str
    wkwargs: Mapping[str, Any]
    center: bool
    normalized: bool
    pad_mode: str
    onesided: bool
    fs: float


def _int(m: Mapping[str, Any], key: str) -> int:
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"bandit_v2: kwargs.{key} must be an integer >= 1, not {value!r}")
    return value


def _bool(m: Mapping[str, Any], key: str) -> bool:
    value = m[key]
    if not isinstance(value, bool):
        raise ValueError(f"bandit_v2: kwargs.{key} must be true or false, not {value!r}")
    return value


def _mapping(m: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = m[key]
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(v, int | float | bool) for v in value.values()
    ):
        raise ValueError(f"bandit_v2: kwargs.{key} must map names to numbers, not {value!r}")
    return dict(value)


def _refused(m: Mapping[str, Any]) -> str | None:
    """Why the reference could not build or run these options (None: it can)."""
    if m["band_type"] != "musical":
        return (
            "band_type must be musical (the only layout the reference builds), not "
            f"{m['band_type']!r}"
        )
    if m["in_channels"] != 1:
        return (
            f"in_channels must be 1, not {m['in_channels']!r}: MSST's bandit_v2 separates each "
            "audio channel on its own"
        )
    independent, as_feature = m["normalize_channel_independently"], m["treat_channel_as_feature"]
    if independent is not False or as_feature is not True:
        return (
            "normalize_channel_independently must be false and treat_channel_as_feature true "
            "(the reference implements nothing else)"
        )
    if m["require_no_overlap"] is not False:
        return "require_no_overlap must be false: the musical bands overlap"
    if m["power"] is not None:
        return f"power must be null (a complex spectrogram), not {m['power']!r}"
    if m["rnn_type"] not in _RNNS:
        return f"rnn_type must be one of {', '.join(_RNNS)}, not {m['rnn_type']!r}"
    if m["window_fn"] not in _WINDOWS:
        return f"window_fn must be one of {', '.join(_WINDOWS)}, not {m['window_fn']!r}"
    if m["pad_mode"] not in ("constant", "reflect", "replicate", "circular"):
        return f"pad_mode must be constant, reflect, replicate or circular, not {m['pad_mode']!r}"
    name = m["hidden_activation"]
    if not isinstance(name, str) or name not in activation.__all__:
        return f"hidden_activation must name a torch.nn activation (Tanh, ReLU, ...), not {name!r}"
    return None


def options(kwargs: Mapping[str, Any]) -> BanditOptions:
    """Check the ``kwargs:`` section (the reference's defaults fill what it leaves out)."""
    unknown = sorted(set(kwargs) - set(_DEFAULTS) - _UNUSED - {"stems"})
    if unknown:
        # The reference takes the section as keyword arguments: it fails on these too.
        raise ValueError(f"bandit_v2: unknown kwargs option(s): {', '.join(unknown)}")
    m = {**_DEFAULTS, **kwargs}
    stems = m.get("stems")
    if (
        not isinstance(stems, list | tuple)
        or not stems
        or not all(isinstance(s, str) for s in stems)
    ):
        raise ValueError(f"bandit_v2: kwargs.stems must be a list of stem names, not {stems!r}")
    if len(set(stems)) != len(stems):  # one mask estimator per name: a repeat would be lost
        raise ValueError(f"bandit_v2: kwargs.stems repeats a name: {list(stems)}")
    problem = _refused(m)
    if problem:
        raise ValueError(f"bandit_v2: kwargs.{problem}")
    n_fft = _int(m, "n_fft")
    win_length = n_fft if m["win_length"] is None else _int(m, "win_length")
    hop = win_length // 2 if m["hop_length"] is None else _int(m, "hop_length")
    if n_fft < 4 or win_length > n_fft or hop > win_length:
        raise ValueError(
            f"bandit_v2: kwargs.win_length ({win_length}) must be at most n_fft ({n_fft}) and "
            f"hop_length ({hop}) at most win_length: a window must fit its frame, and frames "
            "further apart than it leave gaps no inverse STFT can fill"
        )
    fs = m["fs"]
    if isinstance(fs, bool) or not isinstance(fs, int | float) or fs <= 0:
        raise ValueError(f"bandit_v2: kwargs.fs must be a positive number, not {fs!r}")
    return BanditOptions(
        stems=tuple(stems),
        n_bands=_int(m, "n_bands"),
        n_sqm_modules=_int(m, "n_sqm_modules"),
        emb_dim=_int(m, "emb_dim"),
        rnn_dim=_int(m, "rnn_dim"),
        bidirectional=_bool(m, "bidirectional"),
        rnn_type=m["rnn_type"],
        mlp_dim=_int(m, "mlp_dim"),
        hidden_activation=m["hidden_activation"],
        hidden_activation_kwargs=_mapping(m, "hidden_activation_kwargs"),
        complex_mask=_bool(m, "complex_mask"),
        use_freq_weights=_bool(m, "use_freq_weights"),
        n_fft=n_fft,
        win_length=win_length,
        hop_length=hop,
        window_fn=m["window_fn"],
        wkwargs=_mapping(m, "wkwargs"),
        center=_bool(m, "center"),
        normalized=_bool(m, "normalized"),
        pad_mode=m["pad_mode"],
        onesided=_bool(m, "onesided"),
        fs=float(fs),
    )


def musical_bands(
    n_bands: int, n_fft: int, fs: float
) -> tuple[list[tuple[int, int]], list[torch.Tensor]]:
    """The musical band layout: ``[start, end)`` bins of each band and, per band, the share of
    each of its bins it holds (float64), as the reference computes them.

    Band centres are spaced evenly in MIDI pitch from one bin's frequency to Nyquist; each
    band reaches ``n_octaves / n_bands`` octaves either side of its centre (rounded outwards
    to whole bins); the first band also takes every bin below it, the last every bin above.
    A band that holds no bin is left out, as the reference leaves it out.
    """
    bins = n_fft // 2 + 1
    nfft = 2 * (bins - 1)
    df = fs / nfft
    f_min, f_max = fs / nfft, fs / 2
    per_band = np.power(2.0, np.log2(f_max / f_min) / n_bands)

    def midi(hz: Any) -> Any:  # librosa's hz_to_midi, the reference's
        return 12 * (np.log2(np.asanyarray(hz)) - np.log2(440.0)) + 69

    pitches = np.linspace(max(0, midi(f_min)), midi(f_max), n_bands)
    centres = 440.0 * (2.0 ** ((pitches - 69.0) / 12.0))  # librosa's midi_to_hz
    low = np.floor(centres / per_band / df).astype(int)
    high = np.ceil(centres * per_band / df).astype(int)
    bank = np.zeros((n_bands, bins))
    for i in range(n_bands):
        bank[i, low[i] : high[i] + 1] = 1.0
    bank[0, : low[0]] = 1.0
    bank[-1, high[-1] + 1 :] = 1.0
    shares = bank / bank.sum(axis=0, keepdims=True)
    specs, weights = [], []
    for i in range(n_bands):
        active = np.flatnonzero(bank[i])
        if not active.size:
            continue
        start, end = int(active[0]), int(active[-1]) + 1
        specs.append((start, end))
        # numpy, then from_numpy: a CPU tensor even while a network is built on the meta device
        weights.append(torch.from_numpy(shares[i, start:end].copy()))
    return specs, weights


class _Spectrogram(nn.Module):
    """torchaudio's ``Spectrogram(power=None)`` (complex), window stored as it stores it."""

    window: torch.Tensor

    def __init__(self, o: BanditOptions) -> None:
        super().__init__()
        self.o = o
        window = getattr(torch, o.window_fn)(o.win_length, **o.wkwargs)
        self.register_buffer("window", window)

    def _norm(self) -> torch.Tensor:
        return self.window.pow(2.0).sum().sqrt()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        o = self.o
        spec = torch.stft(
            wave.reshape(-1, wave.shape[-1]), n_fft=o.n_fft, hop_length=o.hop_length,
            win_length=o.win_length, window=self.window, center=o.center, pad_mode=o.pad_mode,
            normalized=False, onesided=o.onesided, return_complex=True,
        )  # fmt: skip
        spec = spec.reshape(wave.shape[:-1] + spec.shape[-2:])
        return spec / self._norm() if o.normalized else spec

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """torchaudio's ``InverseSpectrogram`` of ``spec`` (``(..., bins, frames)``)."""
        o = self.o
        if o.normalized:
            spec = spec * self._norm()
        wave = torch.istft(
            spec.reshape(-1, *spec.shape[-2:]), n_fft=o.n_fft, hop_length=o.hop_length,
            win_length=o.win_length, window=self.window, center=o.center, normalized=False,
            onesided=o.onesided, length=length, return_complex=False,
        )  # fmt: skip
        return wave.reshape(spec.shape[:-2] + wave.shape[-1:])


class _BandEmbedding(nn.Module):
    """One band's bins (real and imaginary) -> ``emb_dim`` features: LayerNorm, Linear."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.combined = nn.Sequential(nn.LayerNorm(width * 2), nn.Linear(width * 2, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.combined(x)
        return out


class _BandSplit(nn.Module):
    def __init__(self, bands: Sequence[tuple[int, int]], emb_dim: int) -> None:
        super().__init__()
        self.bands = list(bands)
        self.emb_dim = emb_dim
        self.norm_fc_modules = nn.ModuleList(_BandEmbedding(e - s, emb_dim) for s, e in bands)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``(items, 1, bins, frames)`` complex -> ``(items, bands, frames, emb_dim)``."""
        items, _, _, frames = spec.shape
        x = spec.permute(0, 3, 1, 2)  # (items, frames, 1, bins)
        z = spec.new_empty((items, len(self.bands), frames, self.emb_dim), dtype=torch.float32)
        for i, (start, end) in enumerate(self.bands):
            band = torch.view_as_real(x[..., start:end]).reshape(items, frames, -1)
            z[:, i] = self.norm_fc_modules[i](band)
        return z


class _ResidualRNN(nn.Module):
    """LayerNorm, a (bidirectional) recurrent layer along axis 2, a linear map back, plus
    the input, on ``(items, rows, steps, emb_dim)``."""

    def __init__(self, o: BanditOptions) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(o.emb_dim)
        self.rnn = getattr(nn, o.rnn_type)(
            input_size=o.emb_dim, hidden_size=o.rnn_dim, num_layers=1, batch_first=True,
            bidirectional=o.bidirectional,
        )  # fmt: skip
        self.fc = nn.Linear(o.rnn_dim * (2 if o.bidirectional else 1), o.emb_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        items, rows, steps, features = z.shape
        y = self.rnn(self.norm(z).reshape(items * rows, steps, features))[0]
        out: torch.Tensor = self.fc(y.reshape(items, rows, steps, -1)) + z
        return out


class _Transpose(nn.Module):  # holds no weights: it keeps the reference's layer numbering
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.transpose(1, 2)


class _SequenceModel(nn.Module):
    def __init__(self, o: BanditOptions) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2 * o.n_sqm_modules):  # along time, then across bands, in turn
            layers += [_ResidualRNN(o), _Transpose()]
        self.seqband = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.seqband(z)
        return out


class _BandMask(nn.Module):
    """One band's features -> its mask: LayerNorm, Linear, activation, Linear, GLU. The
    reference names the three parts twice (``norm``/``hidden``/``output`` and ``combined``)."""

    def __init__(self, o: BanditOptions, width: int) -> None:
        super().__init__()
        self.width = width
        self.reim = 2 if o.complex_mask else 1
        self.norm = nn.LayerNorm(o.emb_dim)
        act = getattr(activation, o.hidden_activation)(**o.hidden_activation_kwargs)
        self.hidden = nn.Sequential(nn.Linear(o.emb_dim, o.mlp_dim), act)
        self.output = nn.Sequential(nn.Linear(o.mlp_dim, width * self.reim * 2), nn.GLU(dim=-1))
        self.combined = nn.Sequential(self.norm, self.hidden, self.output)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``(items, frames, emb_dim)`` -> ``(items, 1, width, frames)`` (complex if so)."""
        m: torch.Tensor = self.combined(q)
        items, frames, _ = m.shape
        if self.reim == 2:
            m = torch.view_as_complex(m.float().reshape(items, frames, 1, self.width, 2))
        else:
            m = m.float().reshape(items, frames, 1, self.width)
        return m.permute(0, 2, 3, 1)


class _MaskEstimator(nn.Module):
    def __init__(
        self, o: BanditOptions, bands: Sequence[tuple[int, int]], weights: Sequence[torch.Tensor]
    ) -> None:
        super().__init__()
        self.bands = list(bands)
        self.bins = o.n_fft // 2 + 1
        self.weighted = o.use_freq_weights
        self.norm_mlp = nn.ModuleList(_BandMask(o, e - s) for s, e in bands)
        if self.weighted:
            # One tensor per band shared by every stem's estimator, as the reference shares it
            # (a checkpoint stores it once).
            for i, weight in enumerate(weights):
                self.register_buffer(f"freq_weights/{i}", weight)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``(items, bands, frames, emb_dim)`` -> ``(items, 1, bins, frames)`` complex64."""
        items, _, frames, _ = q.shape
        masks = torch.zeros((items, 1, self.bins, frames), dtype=torch.complex64, device=q.device)
        for i, ((start, end), mlp) in enumerate(zip(self.bands, self.norm_mlp, strict=True)):
            mask = mlp(q[:, i])
            if self.weighted:  # float64 shares, as the reference's: the sum is cast back
                mask = mask * self.get_buffer(f"freq_weights/{i}")[:, None]
            masks[:, :, start:end, :] += mask
        return masks


class Bandit(nn.Module):
    """MSST's ``bandit_v2.Bandit`` for inference (see the module docstring)."""

    def __init__(self, o: BanditOptions) -> None:
        super().__init__()
        self.opts = o
        bands, weights = musical_bands(o.n_bands, o.n_fft, o.fs)
        self.stft = _Spectrogram(o)
        self.istft = _Spectrogram(o)  # the reference's InverseSpectrogram keeps its own window
        self.band_split = _BandSplit(bands, o.emb_dim)
        self.tf_model = _SequenceModel(o)
        self.mask_estim = nn.ModuleDict({s: _MaskEstimator(o, bands, weights) for s in o.stems})

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks (None if it can)."""
        o = self.opts
        return stft_problem(self.stft.window, n_fft=o.n_fft, hop=o.hop_length, samples=samples)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        batch, channels, samples = wave.shape
        with torch.autocast(wave.device.type, enabled=False):
            spec = self.stft(wave.float().reshape(-1, 1, samples))  # each channel alone
        q = self.tf_model(self.band_split(spec))
        stems = []
        for estimator in self.mask_estim.values():
            mask = estimator(q)  # complex64, whatever precision its layers ran in
            with torch.autocast(wave.device.type, enabled=False):
                stem = self.istft.inverse(spec * mask, samples)
            stems.append(stem.reshape(batch, channels, -1))
        return torch.stack(stems, dim=1)


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> Bandit:
    """Bandit v2 from an MSST config's ``kwargs:`` section, in eval mode.

    The stems are ``kwargs.stems``; ``training.instruments`` names them for the output, in
    order, and must name as many.
    """
    opts = options(model)
    check_named_in_order("bandit_v2", "kwargs.stems", opts.stems, instruments, "stem")
    return Bandit(opts).eval()
