"""demixer: self-hostable music source separation."""

from demixer.errors import DemixerError, InvalidAudio, ModelUnavailable, UnknownStem

__version__ = "0.1.0"

__all__ = ["DemixerError", "InvalidAudio", "ModelUnavailable", "UnknownStem", "__version__"]
