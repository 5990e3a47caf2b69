"""The one tree of errors demixer raises, and their mapping to CLI exit codes.

Every error a user can cause is a :class:`DemixerError` with a stable machine-readable ``code``
and a message that says what is wrong and, where it can, what to do. Third-party exceptions
(PyAV, soundfile, torch, urllib) are translated into this tree at the boundary that calls them,
so nothing above the engine ever sees a foreign traceback.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "DemixerError",
    "DownloadFailed",
    "InvalidAudio",
    "InvalidOutput",
    "ModelFailed",
    "ModelUnavailable",
    "UnknownModel",
    "UnknownStem",
    "WeightsChecksumMismatch",
    "exit_code_for",
]


class DemixerError(Exception):
    """Base of every error demixer raises on purpose."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidAudio(DemixerError):
    """The input cannot be used as audio: empty, corrupt, no audio stream, bad channel count…"""

    code = "INVALID_AUDIO"


class InvalidOutput(DemixerError):
    """The requested output cannot be written (format, bit depth, name template)."""

    code = "INVALID_OUTPUT"


class UnknownModel(DemixerError):
    """No model with that id is registered."""

    code = "UNKNOWN_MODEL"


class UnknownStem(DemixerError):
    """A requested stem is not one the model produces."""

    code = "UNKNOWN_STEM"


class ModelUnavailable(DemixerError):
    """The model is registered but its weights are missing or cannot be loaded."""

    code = "MODEL_UNAVAILABLE"


class WeightsChecksumMismatch(ModelUnavailable):
    """A weights file's SHA-256 is not the pinned one: it is never loaded."""

    code = "WEIGHTS_CHECKSUM_MISMATCH"


class DownloadFailed(ModelUnavailable):
    """Fetching weights failed (network, HTTP status, size or checksum)."""

    code = "DOWNLOAD_FAILED"


class ModelFailed(DemixerError):
    """The model raised while separating: not the user's fault."""

    code = "MODEL_FAILED"


class Cancelled(DemixerError):
    """``should_cancel`` returned true: the separation stopped and wrote nothing more."""

    code = "CANCELLED"


# CLI exit codes: 0 ok, 2 usage, 3 bad input, 4 model unavailable, 1 anything else.
_EXIT_CODES: dict[type[DemixerError], int] = {
    UnknownStem: 2,
    UnknownModel: 2,
    InvalidOutput: 2,
    InvalidAudio: 3,
    ModelUnavailable: 4,
    Cancelled: 130,
}


def exit_code_for(error: DemixerError) -> int:
    """The CLI exit code for ``error`` (the most specific registered class wins)."""
    for cls in type(error).__mro__:
        if cls in _EXIT_CODES:
            return _EXIT_CODES[cls]
    return 1
