"""The community catalogue: the public checkpoints people separate with today.

Each entry names its files by a URL pinned to one revision where the host allows it (a Hugging
Face revision, a git commit), with the full SHA-256 and size of every file, where those digests
were found (``pin_sources``), the licence exactly as its authors state it, and the figures its
authors published. Nothing here is guessed: a model whose digest no public source records is left
out (see the model cards and README for what was left out and why).

Conventions (shared with the architecture loaders):

- MSST models (``arch`` = ``bs_roformer``, ``mel_band_roformer``, ``mdx23c``, ``scnet``) have two
  files: the YAML config, named by ``config_name``, and the checkpoint; ``stems`` are the
  config's ``training.instruments``, verbatim.
- MDX-Net models (``arch`` = ``mdx_net``) have one ONNX file and their STFT settings in
  ``arch_params`` (see :class:`~demixer.models.spec.ModelSpec`), as UVR's ``model_data.json``
  gives them under the MD5 of the file's last 10 000 KiB (an identity check only, not a pin).
"""

from __future__ import annotations

from demixer.models.catalogue.builtin import BUILTIN
from demixer.models.catalogue.convnets import OTHERS
from demixer.models.catalogue.recipes import recipes
from demixer.models.catalogue.roformer import ROFORMERS
from demixer.models.spec import ModelSpec

__all__ = ["BUILTIN", "CATALOGUE", "SHIPPED", "SHIPPED_IDS"]

CATALOGUE: tuple[ModelSpec, ...] = (*ROFORMERS, *OTHERS)
_MODELS = (*BUILTIN, *CATALOGUE)
#: Every entry demixer ships, in display order: its own models, the community catalogue, then
#: the recipes chaining them.
SHIPPED: tuple[ModelSpec, ...] = (*_MODELS, *recipes({spec.id: spec for spec in _MODELS}))
SHIPPED_IDS: frozenset[str] = frozenset(spec.id for spec in SHIPPED)
