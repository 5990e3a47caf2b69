"""The networks of UVR's VR architecture (tsurumeso's vocal-remover, as UVR grew it).

Two generations, told apart by the checkpoint's own tensors (UVR tells them apart by the file's
size in KiB, which this replaces: the names and shapes say the same thing exactly):

- :class:`CascadedAspp` (UVR's ``nets.py``, the "v5" models: ``1_HP-UVR``, ``5_HP-Karaoke``,
  ``UVR-DeEcho-DeReverb``, ...): three stages of U-Nets whose bottleneck is an atrous spatial
  pyramid (ASPP). The first stage splits the bins in two halves; each later stage sees the
  input and every earlier stage's features through a 1x1 "bridge". The width ``ch`` (16, 32 or
  64), the pyramid's branch count (5, 6 or 7) and a fifth encoder level are read from the
  tensors. UVR's 6- and 7-branch pyramids use one module for their last two branches, so its
  checkpoints hold the same tensors twice and the last one loaded serves both: here too.
- :class:`CascadedLstm` (UVR's ``nets_new.py``, the "v5.1" models: ``UVR-De-Echo-Normal``,
  ``UVR-DeNoise``, ``UVR-BVE-4B_SN``, ...): four-level U-Nets with a bidirectional LSTM across
  frequency beside the last decoder, low and high band nets in two stages and a full band net.

Both give a sigmoid mask over ``bins + 1`` bins (the last one repeated) for the middle of a
window of frames: :meth:`predict_mask` drops ``offset`` frames of context at each side. The
state-dict names are UVR's, so its ``.pth`` files load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from demixer.errors import CheckpointMismatch

__all__ = ["CascadedAspp", "CascadedLstm", "VrNetwork", "build"]


class _ConvBnAct(nn.Module):
    """``conv``: Conv2d (no bias), BatchNorm2d, activation (``Conv2DBNActiv``)."""

    def __init__(
        self,
        nin: int,
        nout: int,
        ksize: int = 3,
        stride: int = 1,
        pad: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        leaky: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nout, ksize, stride, pad, dilation, bias=False),
            nn.BatchNorm2d(nout),
            nn.LeakyReLU() if leaky else nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class _SeparableConvBnAct(nn.Module):
    """``conv``: a depthwise 3x3 (dilated), a pointwise 1x1, BatchNorm2d, ReLU."""

    def __init__(self, nin: int, nout: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nin, 3, 1, dilation, dilation, groups=nin, bias=False),
            nn.Conv2d(nin, nout, 1, bias=False),
            nn.BatchNorm2d(nout),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


def _centre(skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``skip`` cut to ``like``'s frame count, keeping its middle."""
    extra = skip.shape[3] - like.shape[3]
    if extra < 0:
        raise ValueError("a skip connection is shorter than the decoder's input")
    start = extra // 2
    return skip[:, :, :, start : start + like.shape[3]]


def _upsample(x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """Twice the size (bilinear, corners aligned), the skip's middle appended as channels."""
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return x if skip is None else torch.cat([x, _centre(skip, x)], dim=1)


def _pooled(pool_conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pyramid's image-level branch: mean over frequency, 1x1 conv, stretched back."""
    return F.interpolate(pool_conv(x), size=x.shape[2:], mode="bilinear", align_corners=True)


def _replicate_last_bin(mask: torch.Tensor, bins: int) -> torch.Tensor:
    return F.pad(mask, (0, 0, 0, bins - mask.shape[2]), mode="replicate")


# -- v5: the ASPP nets ----------------------------------------------------------------------


class _AsppEncoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = _ConvBnAct(nin, nout, 3, 1, 1, leaky=True)
        self.conv2 = _ConvBnAct(nout, nout, 3, 2, 1, leaky=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv1(x)
        return self.conv2(skip), skip


class _AsppDecoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv = _ConvBnAct(nin, nout, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.conv(_upsample(x, skip))
        return out


class _Aspp(nn.Module):
    """The pyramid: pooled, 1x1 and dilated separable branches (4, 8, 16; a 6th and 7th branch
    at 16 share one module), concatenated and squeezed by a 1x1."""

    def __init__(self, nin: int, nout: int, branches: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), _ConvBnAct(nin, nin, 1, 1, 0))
        self.conv2 = _ConvBnAct(nin, nin, 1, 1, 0)
        self.conv3 = _SeparableConvBnAct(nin, nin, 4)
        self.conv4 = _SeparableConvBnAct(nin, nin, 8)
        self.conv5 = _SeparableConvBnAct(nin, nin, 16)
        self.extra = branches - 5
        if self.extra:
            shared = _SeparableConvBnAct(nin, nin, 16)
            self.conv6 = shared
            if self.extra == 2:
                self.conv7 = shared
        self.bottleneck = nn.Sequential(
            _ConvBnAct(nin * branches, nout, 1, 1, 0), nn.Dropout2d(0.1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [_pooled(self.conv1, x), self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)]
        if self.extra:
            feats += [self.conv6(x)] * self.extra  # one module: computed once
        out: torch.Tensor = self.bottleneck(torch.cat(feats, dim=1))
        return out


class _AsppUNet(nn.Module):
    """Four (or five) encoder levels, the pyramid, the decoders back (``BaseASPPNet``)."""

    def __init__(self, nin: int, ch: int, *, branches: int, five_levels: bool) -> None:
        super().__init__()
        self.five_levels = five_levels
        self.enc1 = _AsppEncoder(nin, ch)
        self.enc2 = _AsppEncoder(ch, ch * 2)
        self.enc3 = _AsppEncoder(ch * 2, ch * 4)
        self.enc4 = _AsppEncoder(ch * 4, ch * 8)
        deepest = ch * 8
        if five_levels:
            self.enc5 = _AsppEncoder(ch * 8, ch * 16)
            self.dec5 = _AsppDecoder(ch * (16 + 32), ch * 16)
            deepest = ch * 16
        self.aspp = _Aspp(deepest, deepest * 2, branches)
        self.dec4 = _AsppDecoder(ch * (8 + 16), ch * 8)
        self.dec3 = _AsppDecoder(ch * (4 + 8), ch * 4)
        self.dec2 = _AsppDecoder(ch * (2 + 4), ch * 2)
        self.dec1 = _AsppDecoder(ch * (1 + 2), ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, e1 = self.enc1(x)
        h, e2 = self.enc2(h)
        h, e3 = self.enc3(h)
        h, e4 = self.enc4(h)
        if self.five_levels:
            h, e5 = self.enc5(h)
            h = self.dec5(self.aspp(h), e5)
        else:
            h = self.aspp(h)
        out: torch.Tensor = self.dec1(self.dec2(self.dec3(self.dec4(h, e4), e3), e2), e1)
        return out


class CascadedAspp(nn.Module):
    """UVR's ``CascadedASPPNet`` for ``bins`` input bins, width ``ch``."""

    offset = 128

    def __init__(self, bins: int, ch: int, *, branches: int = 5, five_levels: bool = False):
        super().__init__()
        net = {"branches": branches, "five_levels": five_levels}
        self.stg1_low_band_net = _AsppUNet(2, ch, **net)  # type: ignore[arg-type]
        self.stg1_high_band_net = _AsppUNet(2, ch, **net)  # type: ignore[arg-type]
        self.stg2_bridge = _ConvBnAct(ch + 2, ch // 2, 1, 1, 0)
        self.stg2_full_band_net = _AsppUNet(ch // 2, ch, **net)  # type: ignore[arg-type]
        self.stg3_bridge = _ConvBnAct(2 * ch + 2, ch, 1, 1, 0)
        self.stg3_full_band_net = _AsppUNet(ch, 2 * ch, **net)  # type: ignore[arg-type]
        self.out = nn.Conv2d(2 * ch, 2, 1, bias=False)
        self.aux1_out = nn.Conv2d(ch, 2, 1, bias=False)  # training only; in the checkpoints
        self.aux2_out = nn.Conv2d(ch, 2, 1, bias=False)
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, : self.bins]
        half = x.shape[2] // 2
        aux1 = torch.cat(
            [self.stg1_low_band_net(x[:, :, :half]), self.stg1_high_band_net(x[:, :, half:])],
            dim=2,
        )
        aux2 = self.stg2_full_band_net(self.stg2_bridge(torch.cat([x, aux1], dim=1)))
        h = self.stg3_full_band_net(self.stg3_bridge(torch.cat([x, aux1, aux2], dim=1)))
        return _replicate_last_bin(torch.sigmoid(self.out(h)), self.bins + 1)

    def predict_mask(self, x: torch.Tensor) -> torch.Tensor:
        mask: torch.Tensor = self.forward(x)
        return mask[:, :, :, self.offset : -self.offset]


# -- v5.1: the LSTM nets --------------------------------------------------------------------


class _LstmEncoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = _ConvBnAct(nin, nout, 3, 2, 1, leaky=True)
        self.conv2 = _ConvBnAct(nout, nout, 3, 1, 1, leaky=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv2(self.conv1(x))
        return out


class _LstmDecoder(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = _ConvBnAct(nin, nout, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.conv1(_upsample(x, skip))
        return out


class _LstmAspp(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), _ConvBnAct(nin, nout, 1, 1, 0))
        self.conv2 = _ConvBnAct(nin, nout, 1, 1, 0)
        self.conv3 = _ConvBnAct(nin, nout, 3, 1, (4, 2), (4, 2))
        self.conv4 = _ConvBnAct(nin, nout, 3, 1, (8, 4), (8, 4))
        self.conv5 = _ConvBnAct(nin, nout, 3, 1, (12, 6), (12, 6))
        self.bottleneck = _ConvBnAct(nout * 5, nout, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [_pooled(self.conv1, x), self.conv2(x), self.conv3(x), self.conv4(x), self.conv5(x)]
        out: torch.Tensor = self.bottleneck(torch.cat(feats, dim=1))
        return out


class _FrequencyLstm(nn.Module):
    """One channel from a 1x1 conv, a bidirectional LSTM over frames whose features are the
    bins, a dense layer back to the bins (``LSTMModule``)."""

    def __init__(self, nin_conv: int, bins: int, hidden: int) -> None:
        super().__init__()
        self.conv = _ConvBnAct(nin_conv, 1, 1, 1, 0)
        self.lstm = nn.LSTM(input_size=bins, hidden_size=hidden // 2, bidirectional=True)
        self.dense = nn.Sequential(nn.Linear(hidden, bins), nn.BatchNorm1d(bins), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, bins, frames = x.shape
        h = self.conv(x)[:, 0].permute(2, 0, 1)  # frames, batch, bins
        h, _ = self.lstm(h)
        dense: torch.Tensor = self.dense(h.reshape(-1, h.shape[-1]))
        return dense.reshape(frames, batch, 1, bins).permute(1, 2, 3, 0)


class _LstmUNet(nn.Module):
    """``BaseNet``: five levels, the pyramid, three decoders, the LSTM beside the last."""

    def __init__(self, nin: int, nout: int, lstm_bins: int, lstm_hidden: int) -> None:
        super().__init__()
        self.enc1 = _ConvBnAct(nin, nout, 3, 1, 1)
        self.enc2 = _LstmEncoder(nout, nout * 2)
        self.enc3 = _LstmEncoder(nout * 2, nout * 4)
        self.enc4 = _LstmEncoder(nout * 4, nout * 6)
        self.enc5 = _LstmEncoder(nout * 6, nout * 8)
        self.aspp = _LstmAspp(nout * 8, nout * 8)
        self.dec4 = _LstmDecoder(nout * (6 + 8), nout * 6)
        self.dec3 = _LstmDecoder(nout * (4 + 6), nout * 4)
        self.dec2 = _LstmDecoder(nout * (2 + 4), nout * 2)
        self.lstm_dec2 = _FrequencyLstm(nout * 2, lstm_bins, lstm_hidden)
        self.dec1 = _LstmDecoder(nout * (1 + 2) + 1, nout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        h = self.dec2(self.dec3(self.dec4(self.aspp(self.enc5(e4)), e4), e3), e2)
        out: torch.Tensor = self.dec1(torch.cat([h, self.lstm_dec2(h)], dim=1), e1)
        return out


class CascadedLstm(nn.Module):
    """UVR's ``CascadedNet`` for ``bins`` input bins, width ``nout``, LSTM width ``lstm``."""

    offset = 64

    def __init__(self, bins: int, nout: int = 32, lstm: int = 128) -> None:
        super().__init__()
        quarter_bins = bins // 4  # the LSTM's features: half the bins of half the band
        self.stg1_low_band_net = nn.Sequential(
            _LstmUNet(2, nout // 2, quarter_bins, lstm), _ConvBnAct(nout // 2, nout // 4, 1, 1, 0)
        )
        self.stg1_high_band_net = _LstmUNet(2, nout // 4, quarter_bins, lstm // 2)
        self.stg2_low_band_net = nn.Sequential(
            _LstmUNet(nout // 4 + 2, nout, quarter_bins, lstm), _ConvBnAct(nout, nout // 2, 1, 1, 0)
        )
        self.stg2_high_band_net = _LstmUNet(nout // 4 + 2, nout // 2, quarter_bins, lstm // 2)
        self.stg3_full_band_net = _LstmUNet(3 * nout // 4 + 2, nout, bins // 2, lstm)
        self.out = nn.Conv2d(nout, 2, 1, bias=False)
        self.aux_out = nn.Conv2d(3 * nout // 4, 2, 1, bias=False)  # training only
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, : self.bins]
        half = x.shape[2] // 2
        low, high = x[:, :, :half], x[:, :, half:]
        l1 = self.stg1_low_band_net(low)
        h1 = self.stg1_high_band_net(high)
        l2 = self.stg2_low_band_net(torch.cat([low, l1], dim=1))
        h2 = self.stg2_high_band_net(torch.cat([high, h1], dim=1))
        aux1 = torch.cat([l1, h1], dim=2)
        aux2 = torch.cat([l2, h2], dim=2)
        f3 = self.stg3_full_band_net(torch.cat([x, aux1, aux2], dim=1))
        mask: torch.Tensor = torch.sigmoid(self.out(f3))
        return _replicate_last_bin(mask, self.bins + 1)

    def predict_mask(self, x: torch.Tensor) -> torch.Tensor:
        mask: torch.Tensor = self.forward(x)
        return mask[:, :, :, self.offset : -self.offset]


VrNetwork = CascadedAspp | CascadedLstm


def _shape(state: Mapping[str, torch.Tensor], name: str, source: str) -> tuple[int, ...]:
    if name not in state:
        raise CheckpointMismatch(f"{source}: not a UVR VR model: it has no tensor {name!r}")
    return tuple(state[name].shape)


def build(state: Mapping[str, torch.Tensor], bins: int, *, source: str) -> VrNetwork:
    """The network ``state`` (a UVR VR ``.pth``'s state dict) is the weights of, for ``bins``
    input bins (the band layout's ``bins``), not yet loaded.

    Raises:
        CheckpointMismatch: ``state`` is neither generation's.
    """
    if "stg3_full_band_net.lstm_dec2.lstm.weight_hh_l0" in state:
        nout = _shape(state, "stg3_full_band_net.enc1.conv.0.weight", source)[0]
        hidden = _shape(state, "stg3_full_band_net.lstm_dec2.lstm.weight_hh_l0", source)[1]
        return CascadedLstm(bins, nout, 2 * hidden)
    ch = _shape(state, "stg1_low_band_net.enc1.conv1.conv.0.weight", source)[0]
    branches = 5 + sum(f"stg1_low_band_net.aspp.conv{i}.conv.0.weight" in state for i in (6, 7))
    five = "stg1_low_band_net.enc5.conv1.conv.0.weight" in state
    return CascadedAspp(bins, ch, branches=branches, five_levels=five)
