"""The per-model parameters of a UVR VR model, read from a registry entry's ``arch_params``.

UVR keys its VR models' data (``models/VR_Models/model_data/model_data.json``) by an MD5 of the
``.pth``'s last 10 000 KiB; an entry names the band layout and the stem the mask keeps. The
names here are UVR's:

=====================  ==========================================================
``vr_model_param``     the band layout: one UVR ships (``4band_v3``: the layouts in
                       :mod:`demixer.models.vr.layouts`), or a mapping of its own
``primary_stem``       what the mask keeps (``Instrumental``, ``No Echo``, ...)
=====================  ==========================================================

and UVR's inference settings, each defaulting to UVR's (and audio-separator's) own default:

- ``aggression`` (5): how hard the mask is pushed, -100 to 100 (UVR's "Aggression Setting").
- ``window_size`` (512): frames per network call, the middle ``window_size - 2 * offset`` of
  which are kept (UVR's "Window Size": 320, 512 or 1024).
- ``tta`` (false): UVR's "TTA": a second pass shifted by half a kept window, averaged.
- ``post_process`` (false) and ``post_process_threshold`` (0.2): UVR's "Post-Process": frames
  where the mask keeps more than the threshold of every bin for over 64 frames are faded into
  keeping all of them (what is left of the primary stem in the secondary, as UVR puts it).
- ``high_end_process`` (false): UVR's "High-End Process": the bins above the top band's crop
  are put back from the input, at most as loud as the stem's bins mirrored from below.
- ``batch_size`` (0 = automatic): windows per network call; it changes speed, never the output.

UVR's flags for its own UI (``is_karaoke``, ``is_bv_model``, ``is_bv_model_rebalanced``) and the
widths of v5.1 nets (``nout``, ``nout_lstm``: the checkpoint's tensors give them) are accepted
and unused. Any other key is refused, so a misspelt parameter cannot silently fall back to a
default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from demixer.errors import InvalidModelConfig
from demixer.models.spec import check_uvr_keys
from demixer.models.vr.bands import Layout, parse_layout

__all__ = ["ARCH_PARAMS", "LAYOUTS", "VrParams", "shipped_layout"]

ARCH_PARAMS = (
    "vr_model_param",
    "primary_stem",
    "aggression",
    "window_size",
    "tta",
    "post_process",
    "post_process_threshold",
    "high_end_process",
    "batch_size",
    "is_karaoke",
    "is_bv_model",
    "is_bv_model_rebalanced",
    "nout",
    "nout_lstm",
)
_LAYOUT_DIR = resources.files("demixer.models.vr") / "layouts"
#: the band layouts UVR ships, by name (``4band_v3``)
LAYOUTS = tuple(
    sorted(p.name.removesuffix(".json") for p in _LAYOUT_DIR.iterdir() if p.name.endswith(".json"))
)


def shipped_layout(name: str, *, where: str) -> Layout:
    """One of the layouts UVR ships, by its name (``4band_v3``, with or without ``.json``)."""
    stem = name.removesuffix(".json")
    if stem not in LAYOUTS:
        raise InvalidModelConfig(
            f"{where} vr_model_param {name!r} is not a band layout UVR ships; known: "
            f"{', '.join(LAYOUTS)} (or give the layout's own mapping)"
        )
    data = json.loads((_LAYOUT_DIR / f"{stem}.json").read_text(encoding="utf-8"))
    return parse_layout(data, source=f"UVR's {stem}.json")


@dataclass(frozen=True)
class VrParams:
    """Validated VR parameters (see the module docstring for each)."""

    layout: Layout
    primary_stem: str
    aggression: int = 5
    window_size: int = 512
    tta: bool = False
    post_process: bool = False
    post_process_threshold: float = 0.2
    high_end_process: bool = False
    batch_size: int = 0

    @classmethod
    def from_arch_params(
        cls, params: Mapping[str, Any], *, model_id: str, source: str | None = None
    ) -> VrParams:
        """Validate a registry entry's (or a user's file's) parameters.

        Raises:
            InvalidModelConfig: a required key is missing, a key is unknown, or a value is out
                of range; the message names the model (or ``source``) and the key.
        """
        where = f"{source}:" if source is not None else f"model {model_id!r}: arch_params"

        def bad(message: str) -> InvalidModelConfig:
            return InvalidModelConfig(f"{where} {message}")

        required = ("vr_model_param", "primary_stem")
        check_uvr_keys(params, known=ARCH_PARAMS, required=required, where=where)
        layout_value = params["vr_model_param"]
        if isinstance(layout_value, str):
            layout = shipped_layout(layout_value, where=where)
        else:
            layout = parse_layout(layout_value, source=f"{where.rstrip(':')} vr_model_param")

        def integer(key: str, default: int, low: int, high: int) -> int:
            value = params.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise bad(f"{key}={value!r}: expected a whole number from {low} to {high}")
            return value

        primary = params["primary_stem"]
        if not isinstance(primary, str) or not primary.strip():
            raise bad(f"primary_stem={primary!r}: expected a stem name")

        def flag(key: str) -> bool:
            value = params.get(key, False)
            if not isinstance(value, bool):
                raise bad(f"{key}={value!r}: expected true or false")
            return value

        threshold = params.get("post_process_threshold", 0.2)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise bad(f"post_process_threshold={threshold!r}: expected a number")
        if not 0 < threshold < 1:
            raise bad(f"post_process_threshold={threshold!r}: expected a fraction in (0, 1)")
        return cls(
            layout=layout,
            primary_stem=primary,
            aggression=integer("aggression", 5, -100, 100),
            window_size=integer("window_size", 512, 1, 1 << 14),
            tta=flag("tta"),
            post_process=flag("post_process"),
            post_process_threshold=float(threshold),
            high_end_process=flag("high_end_process"),
            batch_size=integer("batch_size", 0, 0, 1 << 10),
        )
