"""Models in the format of Music-Source-Separation-Training (MSST): a YAML config + a checkpoint.

- :mod:`~demixer.models.msst.config`: the YAML read safely into a typed view;
- :mod:`~demixer.models.msst.checkpoint`: tensors-only loading and one clear mismatch error;
- :mod:`~demixer.models.msst.inference`: MSST's chunked inference, streamed;
- :mod:`~demixer.models.msst.backend`: the registry loader (``demixer.models.msst:load``);
- :mod:`~demixer.models.msst.user`: a user's own models in the model directory.

The architectures themselves live in :mod:`demixer.models.arch`.
"""

from demixer.models.msst.backend import MsstBackend, backend_for, load
from demixer.models.msst.config import MsstConfig, parse_config, read_config

__all__ = ["MsstBackend", "MsstConfig", "backend_for", "load", "parse_config", "read_config"]
