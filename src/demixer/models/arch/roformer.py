"""The pieces BS-RoFormer and Mel-Band RoFormer share: norms, attention and the axial transformer
stack (options in :mod:`.options`; band split, mask estimation and STFT in :mod:`.bands`).

Every module here has exactly the parameter names and shapes of the reference implementation
(ZFTurbo's Music-Source-Separation-Training, after lucidrains' BS-RoFormer), so the community's
checkpoints load into it unchanged; the arithmetic is the reference's, computed with fused torch
kernels (``scaled_dot_product_attention``, rotary tables computed once per sequence length, norm
gains folded into the matmul that follows). Inference only: dropout is left out.

Shapes use ``b`` batch, ``t`` STFT frames, ``k`` bands, ``d`` model width, ``h`` heads,
``e`` head width, ``n`` stems, ``s`` audio channels, ``F`` STFT bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from demixer.errors import InvalidModelConfig
from demixer.models.arch.options import ConformerOptions, RoformerOptions

__all__ = [
    "Conformer",
    "PolarEmbedding",
    "RMSNorm",
    "active_heads",
    "axial_layers",
    "check_channels",
    "run_axial",
    "unit_rows",
]


class RMSNorm(nn.Module):
    """``x / ||x|| * sqrt(d) * gamma`` over the last axis (the reference's RMSNorm).

    The norm is clamped at 1e-12 as the reference's ``F.normalize`` does; written as a vector
    norm and one scaling (torch's ``rms_norm`` is several times slower on CPU here). Where a
    linear layer follows, :meth:`fold` moves ``sqrt(d) * gamma`` into its weight, so the norm
    itself is one division written straight in the compute dtype (:func:`unit_rows`).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))
        self._fold_key: tuple[Any, ...] | None = None
        self._folded: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
        out: torch.Tensor = x / norm * (self.gamma * self.scale).to(x.dtype)
        return out

    def fold(self, *linears: nn.Linear) -> list[torch.Tensor]:
        """The weights of ``linears`` (which this norm feeds) times ``sqrt(d) * gamma``, so that
        ``linear(norm(x)) == F.linear(unit_rows(x), folded, linear.bias)``; cached until the
        parameters change."""
        params = (self.gamma, *(lin.weight for lin in linears))
        key = tuple((p.data_ptr(), p.dtype, p._version) for p in params)
        if key != self._fold_key:
            with torch.no_grad(), torch.inference_mode(False):
                g = self.gamma.float() * self.scale
                self._folded = [(lin.weight.float() * g).to(lin.weight.dtype) for lin in linears]
            self._fold_key = key
        return self._folded


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x / max(||x||, 1e-12)`` over the last axis, written in the compute dtype (bf16 under
    bf16 autocast: the cast the next matmul would make, done in the same pass)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    if dtype == x.dtype:
        unit: torch.Tensor = x / norm
        return unit
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    torch.div(x, norm, out=out)
    return out


class RotaryEmbedding(nn.Module):
    """Rotary position embedding on interleaved pairs, as ``rotary_embedding_torch`` computes it.

    ``freqs`` ``(e // 2,)`` is a parameter of the reference, so checkpoints carry it (one copy
    per attention layer sharing it) and it is loaded, not recomputed. Position ``p`` turns the
    pair ``(x0, x1)`` by the angle ``p * freq``: ``(x0 cos - x1 sin, x1 cos + x0 sin)``. The
    tables ``(positions, e)`` (cos, and sin with its sign for each half of the pair) are
    computed once per sequence length, device and dtype, in float32 and then rounded.
    """

    def __init__(self, dim_head: int) -> None:
        super().__init__()
        exponent = torch.arange(0, dim_head, 2)[: dim_head // 2].float() / dim_head
        self.freqs = nn.Parameter(1.0 / (10000**exponent), requires_grad=False)
        self._tables: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}
        self._turns: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self.register_load_state_dict_post_hook(_clear_tables)  # type: ignore[no-untyped-call]

    def tables(
        self, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and signed ``sin`` ``(length, e)`` for positions ``0 .. length - 1``."""
        key = (length, device, dtype)
        cached = self._tables.get(key)
        if cached is None:
            positions = torch.arange(length, device=device, dtype=torch.float32)
            angles = positions[:, None] * self.freqs.detach().float()[None, :]
            angles = angles.repeat_interleave(2, dim=-1)
            sin = angles.sin()
            sin[:, 0::2].neg_()  # x0' = x0 cos + x1 (-sin); x1' = x1 cos + x0 sin
            cached = (angles.cos().to(dtype), sin.to(dtype))
            self._tables[key] = cached
        return cached[0], cached[1]

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(..., positions, e)``; same shape and dtype out."""
        if x.dtype in (torch.float32, torch.float64):
            # Each pair as one complex number times e^(i p freq): one kernel, no copy of x
            # (a pair's two values are adjacent), where swapping the pairs took a strided copy.
            turns = self.turns(x.shape[-2], x.device, x.dtype)
            pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # type: ignore[no-untyped-call]
            return torch.view_as_real(pairs * turns).flatten(-2)
        cos, sin = self.tables(x.shape[-2], x.device, x.dtype)  # no complex bf16 / fp16 here
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # type: ignore[no-untyped-call]
        return torch.addcmul(x * cos, swapped, sin)

    def turns(self, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``e^(i p freq)`` ``(length, e // 2)`` complex, from the same cos and sin tables."""
        key = (length, device, torch.complex64 if dtype == torch.float32 else torch.complex128)
        cached = self._turns.get(key)
        if cached is None:
            cos, sin = self.tables(length, device, dtype)
            cached = torch.complex(cos[:, 0::2], sin[:, 1::2])
            self._turns[key] = cached
        return cached


class PolarEmbedding(nn.Module):
    """PoPE, polar coordinate positions (Gopalakrishnan et al., 2025), as PoPE-pytorch computes
    them (MSST's ``use_pope``: its BS PolarFormer).

    Each of a head's ``e`` query and key features becomes a magnitude (its softplus) and a phase:
    ``p * inv_freqs`` at position ``p`` for queries, plus a learned per-head ``bias`` (clamped to
    ``[-2 pi, 0]``) for keys; a feature is the pair ``(m cos phase, m sin phase)``, so that
    ``q . k`` sums ``|q| |k| cos(phase difference)`` and attention sees relative positions.
    ``inv_freqs`` ``(e,)`` (``theta ** -(j / e)``, all ``e`` of them, not ``e / 2``) is a buffer
    of the reference kept in its checkpoints and loaded, not recomputed; ``bias`` ``(heads, e)``
    is a parameter. The attention scale stays ``e ** -0.5`` though the pairs double the width.
    """

    def __init__(self, dim_head: int, heads: int, theta: float = 10000.0) -> None:
        super().__init__()
        exponent = torch.arange(dim_head).float() / dim_head
        self.register_buffer("inv_freqs", theta**-exponent)
        self.bias = nn.Parameter(torch.zeros(heads, dim_head))
        self._tables: dict[tuple[int, torch.device], tuple[torch.Tensor, ...]] = {}
        self.register_load_state_dict_post_hook(_clear_tables)  # type: ignore[no-untyped-call]

    def tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """float32 ``cos`` and ``sin`` of the query phases ``(length, e)`` and of the key
        phases ``(heads, length, e)``, for positions ``0 .. length - 1``."""
        key = (length, device)
        cached = self._tables.get(key)
        if cached is None:
            inv_freqs: torch.Tensor = self.get_buffer("inv_freqs")
            positions = torch.arange(length, device=device, dtype=inv_freqs.dtype)
            phases = (positions[:, None] * inv_freqs[None, :]).float()
            keys = phases + self.bias.detach().float().clamp(-2.0 * math.pi, 0.0)[:, None, :]
            cached = (phases.cos(), phases.sin(), keys.cos(), keys.sin())
            self._tables[key] = cached
        return cached

    def apply_to(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys ``(b, h, n, e)`` as ``(b, h, n, 2 e)`` float32 pairs (the
        reference's arithmetic promotes them so, whatever autocast computed them in)."""
        q_cos, q_sin, k_cos, k_sin = self.tables(q.shape[-2], q.device)
        q_mag, k_mag = F.softplus(q).float(), F.softplus(k).float()
        q2 = torch.stack((q_mag * q_cos, q_mag * q_sin), dim=-1).flatten(-2)
        k2 = torch.stack((k_mag * k_cos, k_mag * k_sin), dim=-1).flatten(-2)
        return q2, k2


def _clear_tables(module: nn.Module, _keys: object) -> None:
    # New freqs (or PoPE's bias) were loaded: the tables made from the old ones are stale.
    if isinstance(module, RotaryEmbedding):
        module._tables.clear()
        module._turns.clear()
    if isinstance(module, PolarEmbedding):
        module._tables.clear()


Positions = RotaryEmbedding | PolarEmbedding


class Attention(nn.Module):
    """Gated multi-head self-attention with rotary (or PoPE) positions (pre-norm).

    Parameters as the reference: ``norm``, ``to_qkv`` (no bias), ``to_gates``, ``to_out.0``
    (no bias), ``rotary_embed.freqs`` (or ``pope_embed.inv_freqs`` and ``pope_embed.bias``).
    Attention is ``scaled_dot_product_attention`` (the reference's flash path; its non-flash
    path is the same softmax attention written out).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, positions: Positions) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False))
        if isinstance(positions, PolarEmbedding):
            self.pope_embed = positions
        else:
            self.rotary_embed = positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, n, d)`` -> ``(b, n, d)`` (without the residual)."""
        b, n, _ = x.shape
        h, e = self.heads, self.dim_head
        x = unit_rows(x)
        w_qkv, w_gates = self.norm.fold(self.to_qkv, self.to_gates)
        qkv = F.linear(x, w_qkv).view(b, n, 3, h, e).permute(2, 0, 3, 1, 4)  # (3, b, h, n, e)
        pope: PolarEmbedding | None = getattr(self, "pope_embed", None)
        if pope is not None:
            q, k = pope.apply_to(qkv[0], qkv[1])
            v = qkv[2]
            out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), scale=e**-0.5).to(v.dtype)
        else:
            qk = self.rotary_embed.rotate(qkv[:2])
            out = F.scaled_dot_product_attention(qk[0], qk[1], qkv[2])  # (b, h, n, e)
        gates = F.linear(x, w_gates, self.to_gates.bias).transpose(1, 2).sigmoid()  # (b, h, n)
        out = (out * gates[..., None]).transpose(1, 2).reshape(b, n, h * e)
        result: torch.Tensor = self.to_out(out)
        return result


class LinearAttention(nn.Module):
    """Cross-covariance ("linear") attention of El-Nouby et al., the reference's flavour.

    Attends over the ``e`` features of each head with the ``n`` tokens as the vector axis:
    queries and keys are L2-normalised over tokens, queries scaled by ``exp(temperature)``, and
    the similarities by 8. Parameters: ``norm``, ``to_qkv.0``, ``temperature``, ``to_out.1``.
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(nn.Linear(dim, inner * 3, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(nn.Identity(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, n, d)`` -> ``(b, n, d)`` (without the residual)."""
        b, n, _ = x.shape
        h, e = self.heads, self.dim_head
        (w_qkv,) = self.norm.fold(self.to_qkv[0])  # type: ignore[arg-type]
        qkv = F.linear(unit_rows(x), w_qkv).view(b, n, 3, h, e).permute(2, 0, 3, 4, 1)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, h, e, n)
        q = F.normalize(q, dim=-1) * self.temperature.exp()
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-1, -2) * 8.0).softmax(dim=-1)  # (b, h, e, e)
        out = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, h * e)
        result: torch.Tensor = self.to_out(out)
        return result


class FeedForward(nn.Module):
    """Pre-norm MLP ``d -> mult d -> d`` with GELU; parameters ``net.0``, ``net.1``, ``net.4``."""

    def __init__(self, dim: int, mult: float = 4) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, inner),
            nn.GELU(),
            nn.Identity(),  # the reference's dropout
            nn.Linear(inner, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm: RMSNorm = self.net[0]  # type: ignore[assignment]
        first: nn.Linear = self.net[1]  # type: ignore[assignment]
        (weight,) = norm.fold(first)
        hidden = F.linear(unit_rows(x), weight, first.bias)
        # In place when no gradient is wanted: the widest activation of the block, not twice.
        hidden = torch.ops.aten.gelu_(hidden) if not torch.is_grad_enabled() else F.gelu(hidden)
        out: torch.Tensor = self.net[4](hidden)
        return out


class Transformer(nn.Module):
    """``depth`` x (attention + feed-forward, residual each), then an optional RMSNorm."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        *,
        rotary: Positions | None,
        norm_output: bool,
    ) -> None:
        super().__init__()
        layers = []
        for _ in range(depth):
            attn: nn.Module = (
                LinearAttention(dim, heads, dim_head)
                if rotary is None
                else Attention(dim, heads, dim_head, rotary)
            )
            layers.append(nn.ModuleList([attn, FeedForward(dim)]))
        self.layers = nn.ModuleList(layers)
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, n, d)`` -> ``(b, n, d)``."""
        for layer in self.layers:
            attn: nn.Module
            ff: nn.Module
            attn, ff = layer  # type: ignore[misc]
            x = attn(x) + x
            x = ff(x) + x
        out: torch.Tensor = self.norm(x)
        return out


class _Macaron(nn.Module):
    """Half a feed-forward (``ff``: the reference's name), as a Conformer block has two."""

    def __init__(self, dim: int, mult: float) -> None:
        super().__init__()
        self.ff = FeedForward(dim, mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ff(x) * 0.5
        return out


class _ConvModule(nn.Module):
    """A Conformer's convolution module on ``(b, n, d)`` (``net``: items 0-9 of the reference's
    ``nn.Sequential``, its rearranges and dropout as identities): RMSNorm, pointwise conv to
    2x ``expansion`` width, GLU, depthwise conv, BatchNorm (its running statistics), SiLU,
    pointwise conv back."""

    def __init__(self, dim: int, opts: ConformerOptions) -> None:
        super().__init__()
        inner = dim * opts.conv_expansion
        kernel = opts.conv_kernel
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Identity(),
            nn.Conv1d(dim, inner * 2, 1),
            nn.GLU(dim=1),
            nn.Conv1d(inner, inner, kernel, padding=(kernel - 1) // 2, groups=inner),
            nn.BatchNorm1d(inner),
            nn.SiLU(),
            nn.Conv1d(inner, dim, 1),
            nn.Identity(),
            nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net[0](x).transpose(1, 2)  # (b, d, n)
        for layer in list(self.net)[2:8]:
            h = layer(h)
        out: torch.Tensor = h.transpose(1, 2)
        return out


class _ConformerBlock(nn.Module):
    """Half a feed-forward, attention, convolution, half a feed-forward (each with a residual),
    then an RMSNorm (``ff1``, ``attn``, ``conv``, ``ff2``, ``out_norm``)."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, rotary: Positions, opts: ConformerOptions
    ) -> None:
        super().__init__()
        self.ff1 = _Macaron(dim, opts.ff_mult)
        self.attn = Attention(dim, heads, dim_head, rotary)
        self.conv = _ConvModule(dim, opts)
        self.ff2 = _Macaron(dim, opts.ff_mult)
        self.out_norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ff1(x)
        x = x + self.attn(x)
        x = x + self.conv(x)
        x = x + self.ff2(x)
        out: torch.Tensor = self.out_norm(x)
        return out


class Conformer(nn.Module):
    """``depth`` Conformer blocks (``layers``), then an optional RMSNorm (``norm``): what MSST's
    BS- and Mel-Band Conformers run along each axis where the RoFormers run a transformer."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        *,
        rotary: Positions,
        opts: ConformerOptions,
        norm_output: bool,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _ConformerBlock(dim, heads, dim_head, rotary, opts) for _ in range(depth)
        )
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, n, d)`` -> ``(b, n, d)``."""
        for block in self.layers:
            x = block(x)
        out: torch.Tensor = self.norm(x)
        return out


def axial_layers(opts: RoformerOptions, *, norm_output: bool) -> nn.ModuleList:
    """``depth`` axial blocks, each [linear transformer over all tokens], time, frequency.

    Returned as the reference's ``layers`` (block ``i`` holds its transformers in that order);
    all time transformers share one rotary embedding (PoPE with ``use_pope``), all frequency
    transformers another. With ``opts.conformer`` the time and frequency transformers are
    :class:`Conformer` stacks (MSST's BS- and Mel-Band Conformers); a linear one stays a
    transformer.
    """
    time_rotary: Positions
    freq_rotary: Positions
    if opts.pope:
        time_rotary = PolarEmbedding(opts.dim_head, opts.heads)
        freq_rotary = PolarEmbedding(opts.dim_head, opts.heads)
    else:
        time_rotary = RotaryEmbedding(opts.dim_head)
        freq_rotary = RotaryEmbedding(opts.dim_head)
    kw: dict[str, Any] = {
        "dim": opts.dim,
        "heads": opts.heads,
        "dim_head": opts.dim_head,
        "norm_output": norm_output,
    }
    blocks = []
    for _ in range(opts.depth):
        block: list[nn.Module] = []
        if opts.linear_depth > 0:
            block.append(Transformer(depth=opts.linear_depth, rotary=None, **kw))
        if opts.conformer is None:
            block.append(Transformer(depth=opts.time_depth, rotary=time_rotary, **kw))
            block.append(Transformer(depth=opts.freq_depth, rotary=freq_rotary, **kw))
        else:
            conf = {**kw, "opts": opts.conformer}
            block.append(Conformer(depth=opts.time_depth, rotary=time_rotary, **conf))
            block.append(Conformer(depth=opts.freq_depth, rotary=freq_rotary, **conf))
        blocks.append(nn.ModuleList(block))
    return nn.ModuleList(blocks)


def run_axial(layers: nn.ModuleList, x: torch.Tensor, *, skip_connection: bool) -> torch.Tensor:
    """Run :func:`axial_layers` on ``(b, t, k, d)`` band features; same shape out.

    With ``skip_connection`` every block's input adds the outputs of all earlier blocks.
    """
    b, t, k, d = x.shape
    store: list[torch.Tensor] = []
    for block in layers:
        transformers: list[nn.Module] = list(block)  # type: ignore[call-overload]
        *linear, time, freq = transformers
        if linear:
            x = linear[0](x.reshape(b, t * k, d)).reshape(b, t, k, d)
        if skip_connection:
            for earlier in store:
                x = x + earlier
        x = time(x.transpose(1, 2).reshape(b * k, t, d)).reshape(b, k, t, d)
        x = freq(x.transpose(1, 2).reshape(b * t, k, d)).reshape(b, t, k, d)
        if skip_connection:
            store.append(x)
    return x


def check_channels(audio: torch.Tensor, channels: int, arch: str) -> None:
    """Refuse ``(b, s, T)`` audio whose ``s`` is not the model's channel count."""
    if audio.ndim != 3 or audio.shape[1] != channels:
        raise ValueError(
            f"{arch} takes (batch, {channels}, samples) audio, got shape {tuple(audio.shape)}"
        )


def active_heads(
    num_stems: int, instruments: Sequence[str], target_instrument: str | None, arch: str
) -> list[int]:
    """Which mask estimators to run: MSST runs only the target's when a model has one estimator
    per instrument and the config names a ``target_instrument``; otherwise all of them.

    Raises:
        InvalidModelConfig: ``num_stems`` fits neither: one estimator per instrument, or (with
            a target) one estimator, the target's. MSST would pair the stems with the wrong
            names, or fail.
    """
    fits = (1, len(instruments)) if target_instrument else (len(instruments),)
    if num_stems not in fits:
        which = "1 (the target's) or " if target_instrument else ""
        # UVR ships such a config (a one-mask network over two instruments, no target): MSST
        # gives its one estimate to every instrument. Which one it is only its trainer knows.
        hint = (
            "" if target_instrument or num_stems != 1
            else "; a one-mask network names the instrument it predicts in "
            "training.target_instrument"
        )  # fmt: skip
        raise InvalidModelConfig(
            f"{arch}: model.num_stems {num_stems} does not fit training.instruments "
            f"({len(instruments)}: {', '.join(instruments)}): it must be {which}"
            f"{len(instruments)}, one mask per instrument{hint}"
        )
    if target_instrument and num_stems == len(instruments) and target_instrument in instruments:
        return [list(instruments).index(target_instrument)]
    return list(range(num_stems))
