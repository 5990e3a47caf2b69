"""BandIt (Watcharasupat, Wu and Orife, 2023) and Bandit v2 (2024), MSST's ``bandit`` and
``bandit_v2``: a film's or a video's sound split into dialogue, music and effects (cinematic
audio source separation).

Both networks are the authors' band-split recurrent network (kwatcharasupat/bandit, and
kwatcharasupat/bandit-v2, Apache-2.0, which MSST carries):

- each audio channel is separated on its own (the network is mono: ``in_channel(s)`` 1); its
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

What tells them apart (:class:`Layout`):

- ``bandit`` (BandIt; MSST builds ``MultiMaskMultiSourceBandSplitRNNSimple`` from ``model:``,
  as for its BandIt Plus checkpoint): a band's numbers enter its LayerNorm as all the real
  parts, then all the imaginary parts; its STFT is the reference's default (2048 points, hop
  512, Hann, normalized) whatever the config's spectral options say, as the reference's wrapper
  never passes them on (``n_fft`` sets the bands, so only 2048 runs); its weights sit under
  ``bsrnn.``, its band weights stored even where unused;
- ``bandit_v2`` (built from ``kwargs:``, not ``model:``): real and imaginary parts
  interleaved, bin by bin; its ``combined`` sequences name the same layers a second time.

Output: ``(batch, stems, channels, samples)``, the stems being the section's ``stems``.

The state_dict is the reference's: its STFT windows are stored, and its band weights are
float64 buffers named ``freq_weights/{band}``, so a checkpoint converted for MSST loads as it
is.
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
from demixer.models.arch.limits import bands_problem, frame_problem, layers_problem, stems_problem
from demixer.models.stft import stft_problem

__all__ = [
    "BANDIT",
    "BANDIT_V2",
    "Bandit",
    "BanditOptions",
    "Layout",
    "build",
    "build_v2",
    "musical_bands",
    "options",
]

_WINDOWS = ("hann_window", "hamming_window", "blackman_window", "bartlett_window")
_RNNS = ("GRU", "LSTM", "RNN")
# The STFT the references build by default (and BandIt's whatever its config says).
_STFT: dict[str, Any] = {
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
}
# The reference's defaults for what both take (each Layout adds its own).
_SHARED_DEFAULTS: dict[str, Any] = {
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
    **_STFT,
    "fs": 44100,
}


@dataclass(frozen=True)
class Layout:
    """How one of the two references names and arranges what they share."""

    arch: str
    #: the config section holding the options, as messages name it
    section: str
    #: the option naming the audio channels the network takes (it must be 1)
    channels: str
    #: the option choosing the band layout, and the values of it that build the musical one
    bands: str
    #: options of its own, with the reference's defaults (None: no default, must be given)
    defaults: Mapping[str, Any]
    #: options the reference accepts that change nothing at inference
    unused: frozenset[str]
    #: a band's numbers enter its LayerNorm interleaved (re, im per bin), or all real parts then
    #: all imaginary parts
    interleaved: bool
    #: the prefix of the band split's, the sequence model's and the masks' weights
    prefix: str
    #: Bandit v2's names: the band and mask MLPs also stored under ``combined`` (the same
    #: layers), the sequence model's axis swaps numbered among its layers
    v2_names: bool
    #: the STFT is the reference's default whatever the section says (BandIt's wrapper calls
    #: its spectral base class without arguments): only ``n_fft`` is read, for the bands
    fixed_stft: bool
    #: the band weights are stored even where ``use_freq_weights`` is false (and not used)
    weights_always_stored: bool


BANDIT_V2 = Layout(
    arch="bandit_v2",
    section="kwargs",
    channels="in_channels",
    bands="band_type",
    defaults={"in_channels": 1, "band_type": "musical", "n_bands": 64},
    # The precisions training ran at (the reference never reads them), and a check every
    # musical layout passes (no bin is left out of all bands). `fs` stays: the layout is
    # computed at it (it scales with the rate, but its rounding to whole bins is the
    # reference's own at that rate).
    unused=frozenset(
        {"stft_precisions", "bandsplit_precisions", "tf_model_precisions"}
        | {"mask_estim_precisions", "require_no_gap"}
    ),
    interleaved=True,
    prefix="",
    v2_names=True,
    fixed_stft=False,
    weights_always_stored=False,
)
BANDIT = Layout(
    arch="bandit",
    section="model",
    channels="in_channel",
    bands="band_specs",
    defaults={"in_channel": None, "band_specs": None, "n_bands": None, "mult_add_mask": False},
    # require_no_gap as above; normalize_input is stored and never read, freeze_encoder only
    # stops training, and cond_dim never reaches the overlapping bands' mask estimators.
    unused=frozenset({"require_no_gap", "normalize_input", "freeze_encoder", "cond_dim"}),
    interleaved=False,
    prefix="bsrnn",
    v2_names=False,
    fixed_stft=True,
    weights_always_stored=True,
)


@dataclass(frozen=True)
class BanditOptions:
    """The options of MSST's ``bandit`` / ``bandit_v2`` that change what it computes."""

    layout: Layout
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


def _int(m: Mapping[str, Any], key: str, layout: Layout, least: int = 1) -> int:
    value = m[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(
            f"{layout.arch}: {layout.section}.{key} must be an integer >= {least}, not {value!r}"
        )
    return value


def _bool(m: Mapping[str, Any], key: str, layout: Layout) -> bool:
    value = m[key]
    if not isinstance(value, bool):
        raise ValueError(
            f"{layout.arch}: {layout.section}.{key} must be true or false, not {value!r}"
        )
    return value


def _mapping(m: Mapping[str, Any], key: str, layout: Layout) -> Mapping[str, Any]:
    value = m[key]
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(v, int | float | bool) for v in value.values()
    ):
        raise ValueError(
            f"{layout.arch}: {layout.section}.{key} must map names to numbers, not {value!r}"
        )
    return dict(value)


def _musical(value: Any, layout: Layout) -> bool:
    """Whether the reference builds the musical band layout for this value of the option."""
    if layout is BANDIT_V2:
        return bool(value == "musical")
    # MSST's get_band_specs tests the names in this order, by substring: "musical" wins only
    # where no earlier name is in the string.
    earlier = ("dnr:speech", "dnr:vox7", "musdb:vocals", "musdb:vox7")
    return (
        isinstance(value, str)
        and value not in earlier
        and not any(name in value for name in ("tribark", "bark", "erb"))
        and "musical" in value
    )


def _refused(m: Mapping[str, Any], layout: Layout) -> str | None:
    """Why the reference could not build or run these options, or demixer does not build the
    layout they ask for (None: it can)."""
    if not _musical(m[layout.bands], layout):
        why = (
            "the only layout the reference builds"
            if layout is BANDIT_V2
            else f"the layout of every published {layout.arch} model; demixer builds no other"
        )
        return f"{layout.bands} must be musical ({why}), not {m[layout.bands]!r}"
    if m[layout.channels] != 1:
        return (
            f"{layout.channels} must be 1, not {m[layout.channels]!r}: MSST's {layout.arch} "
            "separates each audio channel on its own"
        )
    independent, as_feature = m["normalize_channel_independently"], m["treat_channel_as_feature"]
    if independent is not False or as_feature is not True:
        return (
            "normalize_channel_independently must be false and treat_channel_as_feature true "
            "(the reference implements nothing else)"
        )
    if m["require_no_overlap"] is not False:
        return "require_no_overlap must be false: the musical bands overlap"
    if m.get("mult_add_mask", False) is not False:
        return "mult_add_mask must be false: the reference's masks for it are not defined"
    if m["rnn_type"] not in _RNNS:
        return f"rnn_type must be one of {', '.join(_RNNS)}, not {m['rnn_type']!r}"
    if layout.fixed_stft:  # its spectral options are never read
        return None
    if m["power"] is not None:
        return f"power must be null (a complex spectrogram), not {m['power']!r}"
    if m["window_fn"] not in _WINDOWS:
        return f"window_fn must be one of {', '.join(_WINDOWS)}, not {m['window_fn']!r}"
    if m["pad_mode"] not in ("constant", "reflect", "replicate", "circular"):
        return f"pad_mode must be constant, reflect, replicate or circular, not {m['pad_mode']!r}"
    name = m["hidden_activation"]
    if not isinstance(name, str) or name not in activation.__all__:
        return f"hidden_activation must name a torch.nn activation (Tanh, ReLU, ...), not {name!r}"
    return None


def options(section: Mapping[str, Any], layout: Layout = BANDIT_V2) -> BanditOptions:
    """Check the options section (the reference's defaults fill what it leaves out)."""
    where = f"{layout.arch}: {layout.section}"
    defaults = {**_SHARED_DEFAULTS, **layout.defaults}
    unknown = sorted(set(section) - set(defaults) - layout.unused - {"stems"})
    if unknown:
        # The reference takes the section as keyword arguments: it fails on these too.
        raise ValueError(f"{layout.arch}: unknown {layout.section} option(s): {', '.join(unknown)}")
    m = {**defaults, **section}
    # The reference takes these without a default (n_bands: the musical layout asserts it).
    missing = [k for k, v in layout.defaults.items() if v is None and m[k] is None]
    if missing:
        raise ValueError(f"{where}.{missing[0]} must be given (the reference has no default)")
    stems = m.get("stems")
    if (
        not isinstance(stems, list | tuple)
        or not stems
        or not all(isinstance(s, str) for s in stems)
    ):
        raise ValueError(f"{where}.stems must be a list of stem names, not {stems!r}")
    if len(set(stems)) != len(stems):  # one mask estimator per name: a repeat would be lost
        raise ValueError(f"{where}.stems repeats a name: {list(stems)}")
    if layout is BANDIT and "mne:+" in stems:
        raise ValueError(f"{where}.stems names 'mne:+', for which the reference estimates no stem")
    problem = _refused(m, layout)
    if problem:
        raise ValueError(f"{where}.{problem}")
    if layout.fixed_stft:
        if m["n_fft"] != _STFT["n_fft"]:
            raise ValueError(
                f"{where}.n_fft must be {_STFT['n_fft']}, not {m['n_fft']!r}: MSST's "
                f"{layout.arch} computes its STFT with {_STFT['n_fft']} points whatever the "
                "config says (its spectral options never reach it) and its bands and masks "
                "with n_fft's bins, so no other value runs"
            )
        m.update(_STFT)
    n_fft, n_bands = _int(m, "n_fft", layout), _int(m, "n_bands", layout)
    too_big = frame_problem(f"{layout.section}.n_fft", n_fft) or bands_problem(
        f"{layout.section}.n_bands", n_bands
    )
    if too_big:
        raise ValueError(f"{layout.arch}: {too_big}")
    win_length = n_fft if m["win_length"] is None else _int(m, "win_length", layout)
    hop = win_length // 2 if m["hop_length"] is None else _int(m, "hop_length", layout)
    if n_fft < 4 or win_length > n_fft or hop > win_length:
        raise ValueError(
            f"{where}.win_length ({win_length}) must be at most n_fft ({n_fft}) and "
            f"hop_length ({hop}) at most win_length: a window must fit its frame, and frames "
            "further apart than it leave gaps no inverse STFT can fill"
        )
    fs = m["fs"]
    if isinstance(fs, bool) or not isinstance(fs, int | float) or fs <= 0:
        raise ValueError(f"{where}.fs must be a positive number, not {fs!r}")
    n_sqm_modules = _int(m, "n_sqm_modules", layout)
    too_many = layers_problem(f"{layout.section}.n_sqm_modules", n_sqm_modules) or stems_problem(
        f"{layout.section}.stems", len(stems)
    )
    if too_many:
        raise ValueError(f"{layout.arch}: {too_many}")
    return BanditOptions(
        layout=layout,
        stems=tuple(stems),
        n_bands=n_bands,
        n_sqm_modules=n_sqm_modules,
        emb_dim=_int(m, "emb_dim", layout),
        rnn_dim=_int(m, "rnn_dim", layout),
        bidirectional=_bool(m, "bidirectional", layout),
        rnn_type=m["rnn_type"],
        mlp_dim=_int(m, "mlp_dim", layout),
        hidden_activation=m["hidden_activation"],
        hidden_activation_kwargs=_mapping(m, "hidden_activation_kwargs", layout),
        complex_mask=_bool(m, "complex_mask", layout),
        use_freq_weights=_bool(m, "use_freq_weights", layout),
        n_fft=n_fft,
        win_length=win_length,
        hop_length=hop,
        window_fn=m["window_fn"],
        wkwargs=_mapping(m, "wkwargs", layout),
        center=_bool(m, "center", layout),
        normalized=_bool(m, "normalized", layout),
        pad_mode=m["pad_mode"],
        onesided=_bool(m, "onesided", layout),
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

    def __init__(self, width: int, emb_dim: int, layout: Layout) -> None:
        super().__init__()
        norm, fc = nn.LayerNorm(width * 2), nn.Linear(width * 2, emb_dim)
        if layout.v2_names:
            self.combined = nn.Sequential(norm, fc)
        else:
            self.norm, self.fc = norm, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "combined"):
            out: torch.Tensor = self.combined(x)
        else:
            out = self.fc(self.norm(x))
        return out


class _BandSplit(nn.Module):
    def __init__(self, bands: Sequence[tuple[int, int]], emb_dim: int, layout: Layout) -> None:
        super().__init__()
        self.bands = list(bands)
        self.emb_dim = emb_dim
        self.interleaved = layout.interleaved
        self.norm_fc_modules = nn.ModuleList(
            _BandEmbedding(e - s, emb_dim, layout) for s, e in bands
        )

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``(items, 1, bins, frames)`` complex -> ``(items, bands, frames, emb_dim)``."""
        items, _, _, frames = spec.shape
        x = spec.permute(0, 3, 1, 2)  # (items, frames, 1, bins)
        z = spec.new_empty((items, len(self.bands), frames, self.emb_dim), dtype=torch.float32)
        for i, (start, end) in enumerate(self.bands):
            band = torch.view_as_real(x[..., start:end])  # (items, frames, 1, width, 2)
            if not self.interleaved:  # BandIt: the real parts, then the imaginary parts
                band = band.transpose(-1, -2)
            z[:, i] = self.norm_fc_modules[i](band.reshape(items, frames, -1))
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
    """``2 * n_sqm_modules`` residual recurrent layers, along time, then across bands, in
    turn, the axes swapped after each. Bandit v2's reference numbers the swaps among its
    layers (``seqband.1`` is one), BandIt's does not."""

    def __init__(self, o: BanditOptions) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2 * o.n_sqm_modules):
            layers += [_ResidualRNN(o), _Transpose()] if o.layout.v2_names else [_ResidualRNN(o)]
        self.seqband = nn.Sequential(*layers)
        self.swap = not o.layout.v2_names

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.seqband:
            z = layer(z)
            if self.swap:
                z = z.transpose(1, 2)
        return z


class _BandMask(nn.Module):
    """One band's features -> its mask: LayerNorm, Linear, activation, Linear, GLU. Bandit
    v2's reference names the three parts twice (``norm``/``hidden``/``output`` and
    ``combined``)."""

    def __init__(self, o: BanditOptions, width: int) -> None:
        super().__init__()
        self.width = width
        self.reim = 2 if o.complex_mask else 1
        self.norm = nn.LayerNorm(o.emb_dim)
        act = getattr(activation, o.hidden_activation)(**o.hidden_activation_kwargs)
        self.hidden = nn.Sequential(nn.Linear(o.emb_dim, o.mlp_dim), act)
        self.output = nn.Sequential(nn.Linear(o.mlp_dim, width * self.reim * 2), nn.GLU(dim=-1))
        if o.layout.v2_names:
            self.combined = nn.Sequential(self.norm, self.hidden, self.output)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``(items, frames, emb_dim)`` -> ``(items, 1, width, frames)`` (complex if so)."""
        m: torch.Tensor = self.output(self.hidden(self.norm(q)))
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
        if self.weighted or o.layout.weights_always_stored:
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
    """MSST's ``bandit`` (BandIt) or ``bandit_v2`` for inference (see the module docstring)."""

    def __init__(self, o: BanditOptions) -> None:
        super().__init__()
        self.opts = o
        bands, weights = musical_bands(o.n_bands, o.n_fft, o.fs)
        self.stft = _Spectrogram(o)
        self.istft = _Spectrogram(o)  # the reference's InverseSpectrogram keeps its own window
        band_split = _BandSplit(bands, o.emb_dim, o.layout)
        tf_model = _SequenceModel(o)
        masks = nn.ModuleDict({s: _MaskEstimator(o, bands, weights) for s in o.stems})
        # BandIt keeps these in a module of their own (`bsrnn`), Bandit v2 in itself; a tuple
        # holds them for the forward pass without registering them a second time.
        parts = nn.Module() if o.layout.prefix else self
        parts.band_split, parts.tf_model, parts.mask_estim = band_split, tf_model, masks
        if o.layout.prefix:
            self.add_module(o.layout.prefix, parts)
        self._parts = (band_split, tf_model, masks)

    def chunk_problem(self, samples: int) -> str | None:
        """Why the network cannot run ``samples``-sample chunks (None if it can)."""
        o = self.opts
        return stft_problem(self.stft.window, n_fft=o.n_fft, hop=o.hop_length, samples=samples)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        batch, channels, samples = wave.shape
        band_split, tf_model, masks = self._parts
        with torch.autocast(wave.device.type, enabled=False):
            spec = self.stft(wave.float().reshape(-1, 1, samples))  # each channel alone
        q = tf_model(band_split(spec))
        stems = []
        for estimator in masks.values():
            mask = estimator(q)  # complex64, whatever precision its layers ran in
            with torch.autocast(wave.device.type, enabled=False):
                stem = self.istft.inverse(spec * mask, samples)
            stems.append(stem.reshape(batch, channels, -1))
        return torch.stack(stems, dim=1)


def _build(layout: Layout, section: Mapping[str, Any], instruments: Sequence[str]) -> Bandit:
    opts = options(section, layout)
    check_named_in_order(layout.arch, f"{layout.section}.stems", opts.stems, instruments, "stem")
    return Bandit(opts).eval()


def build(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> Bandit:
    """BandIt from an MSST config's ``model:`` section, in eval mode.

    The stems are ``model.stems``; ``training.instruments`` names them for the output, in
    order, and must name as many.
    """
    return _build(BANDIT, model, instruments)


def build_v2(
    model: Mapping[str, Any],
    audio: Mapping[str, Any],
    instruments: Sequence[str],
    target_instrument: str | None,
) -> Bandit:
    """Bandit v2 from an MSST config's ``kwargs:`` section, in eval mode (as :func:`build`)."""
    return _build(BANDIT_V2, model, instruments)
