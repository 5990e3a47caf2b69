"""Model registry, weights handling and the model backends."""

from demixer.models.registry import ModelSpec, WeightFile, get_spec, list_specs

__all__ = ["ModelSpec", "WeightFile", "get_spec", "list_specs"]
