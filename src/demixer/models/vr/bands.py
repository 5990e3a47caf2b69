"""A VR model's band layout and its multi-band spectrogram, computed as UVR computes it.

A VR model sees the song as one spectrogram stitched from several STFTs: the top band at the
model's rate, each lower band at a lower rate (resampled from the band above it), all with
the same hop in time. Each band contributes the bins between its ``crop_start`` and
``crop_stop``; the top bins get a gentle roll-off (``pre_filter_start`` to ``_stop``).
Back to a wave, each band's bins go back in place, are faded in and out
(``hpf_start``/``_stop``, ``lpf_start``/``_stop``), and the bands are summed from the
lowest up, resampled to the next band's rate at each step.

The layout is UVR's model-parameters file (``lib_v5/vr_network/modelparams/4band_v3.json``,
...): :func:`parse_layout` reads it. What UVR computes with librosa, this computes the same
way without it: librosa's STFT (centred, zero padding, periodic Hann) and inverse STFT,
its ``polyphase`` resampling (scipy's ``resample_poly``), and its ``sinc_*`` resampling
(libsamplerate, which librosa calls through the same ``samplerate`` package); UVR resamples
back up with ``sinc_fastest`` (on ARM it uses ``polyphase``; this follows the x86 build).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from demixer.audio import fit_length
from demixer.errors import InvalidModelConfig
from demixer.models.arch.limits import frame_problem

__all__ = [
    "Band",
    "Layout",
    "analyse",
    "high_end_bins",
    "mirrored_high_end",
    "parse_layout",
    "resample",
    "synthesise",
]

#: librosa's res_type names this reproduces (resampy's ``kaiser_*`` need resampy: a band that
#: names one is refused where it would be used, below the top band)
_SINC = ("sinc_best", "sinc_medium", "sinc_fastest", "linear", "zero_order_hold")
_SOXR = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq")
#: how UVR turns a band's bins back into a wave at the next band's rate (x86 builds)
SYNTHESIS_RES_TYPE = "sinc_fastest"


@dataclass(frozen=True)
class Band:
    sr: int
    hl: int
    n_fft: int
    crop_start: int
    crop_stop: int
    res_type: str
    hpf_start: int = -1
    hpf_stop: int = -1
    lpf_start: int = -1
    lpf_stop: int = -1
    convert_channels: str | None = None


@dataclass(frozen=True)
class Layout:
    """UVR's model parameters: the bands (lowest first), ``bins`` in the stitched spectrogram
    (the network sees ``bins + 1``), the top roll-off and the channel coding."""

    bands: tuple[Band, ...]
    bins: int
    sr: int
    pre_filter_start: int
    pre_filter_stop: int
    mid_side: bool = False
    mid_side_b2: bool = False
    reverse: bool = False
    aggr_correction: tuple[float, float] | None = None

    @property
    def hop_seconds(self) -> float:
        return self.bands[-1].hl / self.bands[-1].sr


def _int(data: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidModelConfig(f"{where}: {key} must be a whole number, not {value!r}")
    return value


def _band(data: Any, where: str) -> Band:
    if not isinstance(data, Mapping):
        raise InvalidModelConfig(f"{where} must be a mapping")
    band = Band(
        sr=_int(data, "sr", where),
        hl=_int(data, "hl", where),
        n_fft=_int(data, "n_fft", where),
        crop_start=_int(data, "crop_start", where),
        crop_stop=_int(data, "crop_stop", where),
        res_type=str(data.get("res_type", "polyphase")),
        hpf_start=_int(data, "hpf_start", where, -1),
        hpf_stop=_int(data, "hpf_stop", where, -1),
        lpf_start=_int(data, "lpf_start", where, -1),
        lpf_stop=_int(data, "lpf_stop", where, -1),
        convert_channels=data.get("convert_channels"),
    )
    if band.sr <= 0 or band.hl <= 0 or band.n_fft < 2 or band.n_fft % 2:
        raise InvalidModelConfig(f"{where}: sr and hl must be positive, n_fft even")
    too_big = frame_problem(
        "n_fft",
        band.n_fft,
        "320 to 2048",
        "each band's window and spectrogram are computed for every chunk, and this would not "
        "fit in memory",
    )
    if too_big:
        raise InvalidModelConfig(f"{where}: {too_big}")
    if not 0 <= band.crop_start < band.crop_stop <= band.n_fft // 2 + 1:
        raise InvalidModelConfig(
            f"{where}: crop_start {band.crop_start} to crop_stop {band.crop_stop} must lie "
            f"within the band's {band.n_fft // 2 + 1} bins"
        )
    return band


def parse_layout(data: Any, *, source: str) -> Layout:
    """UVR's model-parameters mapping (its JSON, parsed) as a :class:`Layout`.

    Raises:
        InvalidModelConfig: a key missing or of the wrong kind, bands that do not add up.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("band"), Mapping):
        raise InvalidModelConfig(
            f"{source}: not a VR band layout: it has no 'band' mapping (UVR's model parameters, "
            "e.g. lib_v5/vr_network/modelparams/4band_v3.json)"
        )
    raw = data["band"]
    keys = sorted(raw, key=lambda k: int(k) if str(k).isdigit() else -1)
    if [str(k) for k in keys] != [str(i) for i in range(1, len(keys) + 1)]:
        raise InvalidModelConfig(f"{source}: bands must be numbered 1, 2, ... without gaps")
    bands = tuple(_band(raw[k], f"{source}: band {k}") for k in keys)
    bins = _int(data, "n_bins" if "n_bins" in data else "bins", source)
    correction = data.get("aggr_correction")
    layout = Layout(
        bands=bands,
        bins=bins,
        sr=_int(data, "sr", source, 44100),
        pre_filter_start=_int(data, "pre_filter_start", source, -1),
        pre_filter_stop=_int(data, "pre_filter_stop", source, -1),
        mid_side=bool(data.get("mid_side", False)),
        mid_side_b2=bool(data.get("mid_side_b2", False)),
        reverse=bool(data.get("reverse", False)),
        aggr_correction=(
            (float(correction["left"]), float(correction["right"]))
            if isinstance(correction, Mapping)
            else None
        ),
    )
    stitched = sum(b.crop_stop - b.crop_start for b in bands)
    if stitched > bins:
        raise InvalidModelConfig(
            f"{source}: the bands' crops add up to {stitched} bins, more than bins {bins}"
        )
    if bands[-1].sr != layout.sr:
        raise InvalidModelConfig(
            f"{source}: the top band's sr {bands[-1].sr} must be the model's sr {layout.sr}"
        )
    hops = {b.hl / b.sr for b in bands}
    if len(hops) != 1:
        raise InvalidModelConfig(f"{source}: every band must step the same time (hl / sr)")
    for band in bands[:-1]:
        if band.res_type not in ("polyphase", *_SINC, *_SOXR):
            raise InvalidModelConfig(
                f"{source}: res_type {band.res_type!r} (a lower band's resampler) is not one "
                f"demixer has: polyphase, {', '.join(_SINC + _SOXR)}"
            )
    return layout


def resample(y: np.ndarray, orig_sr: int, target_sr: int, res_type: str) -> np.ndarray:
    """librosa's ``resample(y, orig_sr=, target_sr=, res_type=)`` of each channel of ``y``
    (``(channels, n)``), for the resamplers a band layout names (same length, same dtype as
    librosa gives)."""
    if orig_sr == target_sr:
        return y
    n = math.ceil(y.shape[-1] * target_sr / orig_sr)
    if res_type == "polyphase":
        from scipy.signal import resample_poly

        g = math.gcd(orig_sr, target_sr)
        out = resample_poly(y, target_sr // g, orig_sr // g, axis=-1)
    elif res_type in _SINC:
        import samplerate

        ratio = target_sr / orig_sr
        out = np.stack([samplerate.resample(r, ratio, converter_type=res_type) for r in y])
    elif res_type in _SOXR:
        import soxr

        out = np.stack([soxr.resample(r, orig_sr, target_sr, quality=res_type) for r in y])
    else:
        raise InvalidModelConfig(f"res_type {res_type!r} is not a resampler demixer has")
    return np.asarray(fit_length(out, n), dtype=y.dtype)


def _stft(wave: np.ndarray, band: Band) -> np.ndarray:
    """librosa's ``stft`` of each channel: centred with zero padding, periodic Hann."""
    x = torch.from_numpy(np.ascontiguousarray(wave))
    window = torch.hann_window(band.n_fft, dtype=x.dtype)
    spec = torch.stft(
        x, band.n_fft, band.hl, window=window, center=True, pad_mode="constant",
        return_complex=True,
    )  # fmt: skip
    return spec.numpy()


def _istft(spec: np.ndarray, band: Band) -> np.ndarray:
    """librosa's ``istft`` of each channel (``length`` unset: ``hl * (frames - 1)`` samples)."""
    x = torch.from_numpy(np.ascontiguousarray(spec))
    window = torch.hann_window(band.n_fft, dtype=torch.float64)
    return torch.istft(x, band.n_fft, band.hl, window=window, center=True).numpy()


def _to_channels(wave: np.ndarray, layout: Layout, lstm: bool) -> np.ndarray:
    """The v5 nets' channel coding before the STFT (the LSTM nets code the spectrogram)."""
    if lstm:
        return wave
    left, right = wave[0], wave[1]
    if layout.reverse:
        return np.stack([left[::-1], right[::-1]])
    if layout.mid_side:
        return np.stack([(left + right) / 2, left - right])
    if layout.mid_side_b2:
        return np.stack([right + left * 0.5, left - right * 0.5])
    return wave


def _convert_channels(spec: np.ndarray, band: Band) -> np.ndarray:
    """The LSTM nets' per-band channel coding of the spectrogram."""
    left, right = spec[0], spec[1]
    if band.convert_channels == "mid_side_c":
        return np.stack([left + right * 0.25, right - left * 0.25])
    if band.convert_channels == "mid_side":
        return np.stack([(left + right) / 2, left - right])
    if band.convert_channels == "stereo_n":
        return np.stack([(left + right * 0.25) / 0.9375, (right + left * 0.25) / 0.9375])
    return spec


def _from_channels(wave: np.ndarray, layout: Layout, band: Band, lstm: bool) -> np.ndarray:
    left, right = wave[0], wave[1]
    if lstm:
        if band.convert_channels == "mid_side_c":
            return np.stack([left / 1.0625 - right / 4.25, right / 1.0625 + left / 4.25])
        if band.convert_channels == "mid_side":
            return np.stack([left + right / 2, left - right / 2])
        if band.convert_channels == "stereo_n":
            return np.stack([left - right * 0.25, right - left * 0.25])
        return wave
    if layout.reverse:
        return np.stack([left[::-1], right[::-1]])
    if layout.mid_side:
        return np.stack([left + right / 2, left - right / 2])
    if layout.mid_side_b2:
        return np.stack([right / 1.25 + 0.4 * left, left / 1.25 - 0.4 * right])
    return wave


def _lp_mask(n_bins: int, start: int, stop: int) -> np.ndarray:
    return np.concatenate(
        [np.ones(start - 1), np.linspace(1, 0, stop - start + 1), np.zeros(n_bins - stop)]
    )[:, None]


def _hp_mask(n_bins: int, start: int, stop: int) -> np.ndarray:
    return np.concatenate(
        [np.zeros(stop + 1), np.linspace(0, 1, 1 + start - stop), np.ones(n_bins - start - 2)]
    )[:, None]


def _lp_ramp(spec: np.ndarray, start: int, stop: int) -> np.ndarray:
    """UVR's ``fft_lp_filter``: gains falling by 1/(stop-start) per bin, nothing from stop."""
    g = 1.0
    for b in range(start, stop):
        g -= 1 / (stop - start)
        spec[:, b, :] *= g
    spec[:, stop:, :] = 0
    return spec


def _hp_ramp(spec: np.ndarray, start: int, stop: int) -> np.ndarray:
    """UVR's ``fft_hp_filter``: gains falling downwards from ``start``, nothing to ``stop``."""
    g = 1.0
    for b in range(start, stop, -1):
        g -= 1 / (start - stop)
        spec[:, b, :] *= g
    spec[:, 0 : stop + 1, :] = 0
    return spec


def high_end_bins(layout: Layout) -> int:
    """How many of the top band's highest bins UVR's "High-End Process" keeps from the input:
    those above the band's crop and the roll-off's width."""
    top = layout.bands[-1]
    return (top.n_fft // 2 - top.crop_stop) + (layout.pre_filter_stop - layout.pre_filter_start)


def _high_pass(part: np.ndarray, band: Band, lstm: bool) -> np.ndarray:
    """A band's fade-in from ``hpf_stop - 1`` up to ``hpf_start``: the LSTM nets' linear
    mask, the v5 nets' ramp (UVR's two ways)."""
    if lstm:
        masked: np.ndarray = part * _hp_mask(part.shape[1], band.hpf_start, band.hpf_stop - 1)
        return masked
    return _hp_ramp(part, band.hpf_start, band.hpf_stop - 1)


def _low_pass(part: np.ndarray, band: Band, lstm: bool) -> np.ndarray:
    """A band's fade-out from ``lpf_start`` to ``lpf_stop``, UVR's two ways."""
    if lstm:
        masked: np.ndarray = part * _lp_mask(part.shape[1], band.lpf_start, band.lpf_stop)
        return masked
    return _lp_ramp(part, band.lpf_start, band.lpf_stop)


def analyse(
    mix: np.ndarray, layout: Layout, *, lstm: bool, high_end: list[np.ndarray] | None = None
) -> np.ndarray:
    """The stitched spectrogram of ``mix`` (``(2, n)`` float32 at ``layout.sr``):
    ``(2, bins + 1, frames)`` complex64 (UVR's ``loading_mix`` with ``combine_spectrograms``).
    ``lstm``: the network is a v5.1 (LSTM) one, whose channel coding and roll-off differ.
    ``high_end``: a list to append the top band's :func:`high_end_bins` highest bins to (below
    its Nyquist bin), for :func:`synthesise` to put back."""
    specs: list[np.ndarray] = []
    wave = np.asarray(mix, dtype=np.float32)
    bands = layout.bands
    for i in range(len(bands) - 1, -1, -1):
        if i < len(bands) - 1:
            wave = resample(wave, bands[i + 1].sr, bands[i].sr, bands[i].res_type)
        spec = _stft(_to_channels(wave, layout, lstm), bands[i])
        specs.insert(0, _convert_channels(spec, bands[i]) if lstm else spec)
    if high_end is not None:
        nyquist, h = bands[-1].n_fft // 2, high_end_bins(layout)
        high_end.append(specs[-1][:, nyquist - h : nyquist, :])
    frames = min(s.shape[2] for s in specs)
    out = np.zeros((2, layout.bins + 1, frames), dtype=np.complex64)
    offset = 0
    for band, spec in zip(bands, specs, strict=True):
        h = band.crop_stop - band.crop_start
        out[:, offset : offset + h] = spec[:, band.crop_start : band.crop_stop, :frames]
        offset += h
    start, stop = layout.pre_filter_start, layout.pre_filter_stop
    if start > 0:
        if lstm:
            out *= _lp_mask(out.shape[1], start, stop)
        elif len(bands) == 1:
            out = _lp_ramp(out, start, stop)
        else:
            gp = 1.0
            for b in range(start + 1, stop):
                g = math.pow(10, -(b - start) * (3.5 - gp) / 20.0)
                gp = g
                out[:, b, :] *= g
    return out


def mirrored_high_end(spec: np.ndarray, high_end: np.ndarray, layout: Layout) -> np.ndarray:
    """UVR's "High-End Process" (its ``mirroring``): the input's highest bins (``high_end``,
    from :func:`analyse`), each taken at most as loud as the stem's bins just under the
    roll-off, mirrored upwards, with the input's phase."""
    frames = min(spec.shape[2], high_end.shape[2])
    high_end = high_end[:, :, :frames]
    top = layout.pre_filter_start - 10
    mirror = np.flip(np.abs(spec[:, top - high_end.shape[1] : top, :frames]), 1)
    mirror = mirror * np.exp(1j * np.angle(high_end))
    return np.where(np.abs(high_end) <= np.abs(mirror), high_end, mirror)


def synthesise(
    spec: np.ndarray, layout: Layout, *, lstm: bool, high_end: np.ndarray | None = None
) -> np.ndarray:
    """The wave of a stitched spectrogram (UVR's ``cmb_spectrogram_to_wave``):
    ``(2, hl * (frames - 1))`` float64 at ``layout.sr``; ``high_end``: bins to put under the
    top band's Nyquist bin (:func:`mirrored_high_end`)."""
    bands = layout.bands
    offset = 0
    wave: np.ndarray | None = None
    for i, band in enumerate(bands):
        part = np.zeros((2, band.n_fft // 2 + 1, spec.shape[2]), dtype=np.complex128)
        h = band.crop_stop - band.crop_start
        part[:, band.crop_start : band.crop_stop] = spec[:, offset : offset + h]
        offset += h
        top = i == len(bands) - 1
        if top and high_end is not None and high_end.shape[1]:
            nyquist, h = band.n_fft // 2, high_end.shape[1]
            part[:, nyquist - h : nyquist, : high_end.shape[2]] = high_end[:, :h]
        if band.hpf_start > 0 if top else i > 0:  # every band above the first fades in
            part = _high_pass(part, band, lstm)
        if not top:  # and every band below the top fades out
            part = _low_pass(part, band, lstm)
        own = _from_channels(_istft(part, band), layout, band, lstm)
        summed = own if wave is None else wave + own
        if top:
            return summed
        wave = resample(summed, band.sr, bands[i + 1].sr, SYNTHESIS_RES_TYPE)
    raise AssertionError("a layout has at least one band")
