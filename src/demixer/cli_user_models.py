"""``demixer models add`` / ``remove``: the user's own models (MSST, UVR MDX-Net) in the model
directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from demixer.cli_output import fail
from demixer.errors import DemixerError

__all__ = ["register"]

_out = Console(soft_wrap=True)


def models_add(
    name: Annotated[str, typer.Argument(help="The id to run it by (`demixer separate -m NAME`).")],
    arch: Annotated[
        str,
        typer.Option(
            "--arch",
            help="Its architecture: bs_roformer, mel_band_roformer, bs_conformer, "
            "mel_band_conformer, mdx23c, scnet, scnet_masked, scnet_tran, bandit, bandit_v2, "
            "htdemucs or apollo "
            "(MSST format), mdx_net (a UVR MDX-Net .onnx) or vr (a UVR VR .pth).",
        ),
    ],
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="Its MSST YAML config; for mdx_net and vr its parameters (YAML or JSON): "
            "demixer's arch_params, one UVR model-data entry, or UVR's whole model_data.json.",
        ),
    ],
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint", help="Its checkpoint (.ckpt / .pt / .pth; mdx_net: .onnx; vr: .pth)."
        ),
    ],
) -> None:
    """Add your own model to the model directory: MSST format (YAML config + checkpoint),
    UVR MDX-Net (--arch mdx_net: parameters + .onnx) or UVR VR (--arch vr: parameters + .pth).

    Checks that the checkpoint fits the network the config describes (an .onnx: that
    onnxruntime loads it and its shapes fit the parameters), then copies both to
    $DEMIXER_MODEL_DIR/NAME/ with their SHA-256, checked at every load.
    `separate -m NAME`, `serve` and `worker` then run it like a catalogue model.

    An mdx_net parameters file is demixer's arch_params ({dim_f: 3072, dim_t: 256,
    n_fft: 7680, compensate: 1.035, primary_stem: vocals}), one entry of UVR's model
    data ({"mdx_dim_f_set": 3072, "mdx_dim_t_set": 8, ...}), or UVR's whole
    model_data.json, where the entry under the .onnx's UVR hash is used. A vr
    parameters file is one entry of UVR's VR model data ({vr_model_param: 4band_v3,
    primary_stem: Instrumental}; demixer ships UVR's band layouts), UVR's whole VR
    model_data.json, or a band layout of your own with a primary_stem added.
    """
    try:
        from demixer.models import own

        spec = own.add(name, arch=arch, config=config, checkpoint=checkpoint)
    except DemixerError as e:
        raise fail(e) from None
    _out.print(
        f"{spec.id}: {spec.arch}, stems {', '.join(spec.stems)}, {spec.sample_rate} Hz; "
        f"run it with `demixer separate FILE -m {spec.id}`",
        highlight=False,
    )


def models_remove(
    name: Annotated[str, typer.Argument(help="A model added with `demixer models add`.")],
) -> None:
    """Remove a model you added (catalogue weights are never touched)."""
    from demixer.models.user_models import remove_user_model

    try:
        directory = remove_user_model(name)
    except DemixerError as e:
        raise fail(e) from None
    _out.print(f"removed {escape(str(directory))}", highlight=False)


def register(models_app: typer.Typer) -> None:
    """Add the commands to ``demixer models``."""
    models_app.command("add", short_help="Add your own MSST or MDX-Net model.")(models_add)
    models_app.command("remove")(models_remove)
