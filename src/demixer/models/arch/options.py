"""The ``model:`` options of MSST's BS-RoFormer and Mel-Band RoFormer, checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from demixer.errors import InvalidModelConfig
from demixer.models.arch.limits import (
    frame_problem,
    many_layers_problem,
    stacked_layers_problem,
    stems_problem,
)

__all__ = ["ConformerOptions", "RoformerOptions"]

# Options that change only training (losses, checkpointing, dropout) or that a fork added as a
# speed-up computing the same attention (SageAttention): accepted and ignored at inference.
_IGNORED = frozenset(
    {
        "attn_dropout",
        "ff_dropout",
        "dim_freqs_in",
        "multi_stft_resolution_loss_weight",
        "multi_stft_resolutions_window_sizes",
        "multi_stft_hop_size",
        "multi_stft_normalized",
        "use_torch_checkpoint",
        "sage_attention",
        "match_input_audio_length",
        "norm",
    }
)
_COMMON = frozenset(
    {
        "dim",
        "depth",
        "stereo",
        "num_stems",
        "time_transformer_depth",
        "freq_transformer_depth",
        "linear_transformer_depth",
        "dim_head",
        "heads",
        "flash_attn",
        "stft_n_fft",
        "stft_hop_length",
        "stft_win_length",
        "stft_normalized",
        "zero_dc",
        "mask_estimator_depth",
        "mlp_expansion_factor",
        "skip_connection",
        "use_pope",
    }
)


def _int(model: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = model.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidModelConfig(f"model.{key} must be an integer >= {minimum}, not {value!r}")
    return value


def _bool(model: Mapping[str, Any], key: str, default: bool) -> bool:
    value = model.get(key, default)
    if not isinstance(value, bool):
        raise InvalidModelConfig(f"model.{key} must be true or false, not {value!r}")
    return value


# A Conformer config names its depths so (the BS- and Mel-Band Conformers of MSST).
_CONFORMER_DEPTHS = {
    "time_conformer_depth": "time_transformer_depth",
    "freq_conformer_depth": "freq_transformer_depth",
    "linear_conformer_depth": "linear_transformer_depth",
}
_CONFORMER_OWN = frozenset({"ff_mult", "conv_expansion_factor", "conv_kernel_size", "conv_dropout"})


@dataclass(frozen=True)
class ConformerOptions:
    """The Conformer blocks' own options (MSST's ``bs_conformer``, ``mel_band_conformer``)."""

    ff_mult: float  # the feed-forwards' width over ``dim`` (both halves of the macaron)
    conv_expansion: int  # the convolution module's width over ``dim``
    conv_kernel: int  # its depthwise kernel, odd


@dataclass(frozen=True)
class RoformerOptions:
    """The ``model:`` options both RoFormers read, checked, with the reference's defaults.

    ``mask_estimator_depth`` defaults differ per architecture and are passed in.
    """

    dim: int
    depth: int
    stereo: bool
    num_stems: int
    time_depth: int
    freq_depth: int
    linear_depth: int
    dim_head: int
    heads: int
    n_fft: int
    hop_length: int
    win_length: int
    normalized: bool
    zero_dc: bool
    mask_depth: int
    mlp_expansion: int
    skip_connection: bool
    pope: bool = False  # use_pope: PoPE positions in place of rotary ones
    conformer: ConformerOptions | None = None  # Conformer blocks in place of transformers

    @classmethod
    def read(
        cls,
        model: Mapping[str, Any],
        *,
        arch: str,
        own: frozenset[str],
        mask_depth: int,
        hop_length: int = 512,
    ) -> RoformerOptions:
        """Check ``model`` (the YAML ``model:`` section) and read it.

        Raises:
            InvalidModelConfig: a missing or ill-typed option, an option this architecture does
                not have, or settings no network can run (a window longer than the frame, a hop
                longer than the window, an odd head width with rotary positions).
        """
        unknown = sorted(set(model) - _COMMON - _IGNORED - own)
        conformer = sorted(set(unknown) & {*_CONFORMER_DEPTHS, *_CONFORMER_OWN})
        if conformer and "roformer" in arch:
            other = arch.replace("roformer", "conformer")
            raise InvalidModelConfig(
                f"{arch}: it is a config for {other} (it has model.{conformer[0]}, an option of "
                f"MSST's Conformers): run it with --arch {other}"
            )
        if unknown:
            raise InvalidModelConfig(
                f"{arch}: unknown model option(s) {', '.join(unknown)}; demixer computes "
                f"exactly what the reference computes and will not guess what they mean"
            )
        if "dim" not in model or "depth" not in model:
            raise InvalidModelConfig(f"{arch}: model.dim and model.depth are required")
        n_fft = _int(model, "stft_n_fft", 2048, 2)
        too_big = frame_problem("model.stft_n_fft", n_fft)
        if too_big:
            raise InvalidModelConfig(f"{arch}: {too_big}")
        # The reference's window defaults to 2048 samples whatever stft_n_fft is (not to
        # n_fft): a config of n_fft 4096 that names no window runs a 2048-sample one there.
        win_length = _int(model, "stft_win_length", 2048)
        if win_length > n_fft:  # torch's STFT takes no window longer than its frame
            given = "" if "stft_win_length" in model else " (the reference's default)"
            raise InvalidModelConfig(
                f"{arch}: model.stft_win_length {win_length}{given} exceeds model.stft_n_fft "
                f"{n_fft}: the window must fit in the frame"
            )
        hop = _int(model, "stft_hop_length", hop_length)
        if hop > win_length:
            raise InvalidModelConfig(
                f"{arch}: model.stft_hop_length {hop} exceeds the window ({win_length} samples, "
                "model.stft_win_length): frames would leave gaps that no inverse "
                "STFT can fill"
            )
        dim_head = _int(model, "dim_head", 64, 2)
        pope = _bool(model, "use_pope", False)
        if dim_head % 2 and not pope:  # rotary embeddings turn the head's features in pairs
            raise InvalidModelConfig(
                f"{arch}: model.dim_head must be even (rotary embeddings rotate pairs of "
                f"features), not {dim_head}"
            )
        opts = cls(
            dim=_int(model, "dim", 0),
            depth=_int(model, "depth", 0),
            stereo=_bool(model, "stereo", False),
            num_stems=_int(model, "num_stems", 1),
            time_depth=_int(model, "time_transformer_depth", 2),
            freq_depth=_int(model, "freq_transformer_depth", 2),
            linear_depth=_int(model, "linear_transformer_depth", 0, 0),
            dim_head=dim_head,
            heads=_int(model, "heads", 8),
            n_fft=n_fft,
            hop_length=hop,
            win_length=win_length,
            normalized=_bool(model, "stft_normalized", False),
            zero_dc=_bool(model, "zero_dc", True),
            mask_depth=_int(model, "mask_estimator_depth", mask_depth),
            mlp_expansion=_int(model, "mlp_expansion_factor", 4),
            skip_connection=_bool(model, "skip_connection", False),
            pope=pope,
        )
        too_many = opts.size_problem()
        if too_many:
            raise InvalidModelConfig(f"{arch}: {too_many}")
        return opts

    def size_problem(self) -> str | None:
        """Why the network these options describe is too big to build, or None."""
        depths = {
            "model.depth": self.depth,
            "model.time_transformer_depth": self.time_depth,
            "model.freq_transformer_depth": self.freq_depth,
            "model.linear_transformer_depth": self.linear_depth,
            "model.mask_estimator_depth": self.mask_depth,
        }
        stacked = self.depth * (self.time_depth + self.freq_depth + self.linear_depth)
        return (
            many_layers_problem(depths)
            or stacked_layers_problem(
                "model.depth x (time_transformer_depth + freq_transformer_depth + "
                "linear_transformer_depth)",
                stacked,
            )
            or stems_problem("model.num_stems", self.num_stems)
        )

    @classmethod
    def read_conformer(
        cls, model: Mapping[str, Any], *, arch: str, own: frozenset[str], mask_depth: int
    ) -> RoformerOptions:
        """Check and read a Conformer's ``model`` section: the RoFormer's options (its depths
        named ``*_conformer_depth``, no PoPE) and :class:`ConformerOptions`."""
        foreign = sorted(set(model) & ({*_CONFORMER_DEPTHS.values(), "use_pope"}))
        if foreign:
            raise InvalidModelConfig(
                f"{arch}: model.{foreign[0]} is not an option of the reference's {arch} (a "
                "RoFormer's; a Conformer names its depths time_conformer_depth, "
                "freq_conformer_depth and linear_conformer_depth)"
            )
        renamed = {_CONFORMER_DEPTHS.get(k, k): v for k, v in model.items()}
        try:
            opts = cls.read(
                {k: v for k, v in renamed.items() if k not in _CONFORMER_OWN},
                arch=arch,
                own=own,
                mask_depth=mask_depth,
            )
        except InvalidModelConfig as exc:  # in the config's own words
            message = exc.message
            for name, transformer_name in _CONFORMER_DEPTHS.items():
                message = message.replace(transformer_name, name)
            raise InvalidModelConfig(message) from None
        ff_mult = model.get("ff_mult", 4)
        if isinstance(ff_mult, bool) or not isinstance(ff_mult, int | float) or ff_mult <= 0:
            raise InvalidModelConfig(f"{arch}: model.ff_mult must be a number > 0, not {ff_mult!r}")
        if int(opts.dim * ff_mult) < 1:
            raise InvalidModelConfig(f"{arch}: model.ff_mult {ff_mult} leaves no feed-forward")
        kernel = _int(model, "conv_kernel_size", 31)
        if kernel % 2 != 1:
            raise InvalidModelConfig(
                f"{arch}: model.conv_kernel_size must be odd (the reference's padding keeps the "
                f"length only so), not {kernel}"
            )
        blocks = ConformerOptions(
            ff_mult=float(ff_mult),
            conv_expansion=_int(model, "conv_expansion_factor", 2),
            conv_kernel=kernel,
        )
        return replace(opts, conformer=blocks)

    @property
    def channels(self) -> int:
        """Audio channels the model takes: 2 when ``stereo``, else 1."""
        return 2 if self.stereo else 1
