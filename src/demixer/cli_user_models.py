"""``demixer models add`` / ``remove``: the user's own MSST models in the model directory."""

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
            "--arch", help="Its architecture: bs_roformer, mel_band_roformer, mdx23c or scnet."
        ),
    ],
    config: Annotated[Path, typer.Option("--config", help="Its MSST YAML config.")],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="Its checkpoint (.ckpt / .pt / .pth).")
    ],
) -> None:
    """Add your own MSST-format model (config + checkpoint) to the model directory.

    Checks that the checkpoint fits the network the config describes, then copies
    both to $DEMIXER_MODEL_DIR/NAME/ with their SHA-256, checked at every load.
    `separate -m NAME`, `serve` and `worker` then run it like a catalogue model.
    """
    from demixer.models.msst.user import add

    try:
        spec = add(name, arch=arch, config=config, checkpoint=checkpoint)
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
    models_app.command("add")(models_add)
    models_app.command("remove")(models_remove)
