"""Quality levels: how much work a model spends per window, for how much better stems.

Every surface (``demixer separate --quality``, the API's ``input.quality``, the Python client,
the web page, ``DEMIXER_QUALITY`` for the vendor protocols) takes one of :data:`QUALITIES`. A
backend that has something to offer for a level implements :class:`Tunable`; for the others the
level is accepted and changes nothing. What each level does for ``spleeter-2stems`` (and so for
``cascade-4stems``) is in :data:`demixer.models.spleeter.QUALITY_PLANS` and its model card, with
the measurements it was chosen from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, get_args, runtime_checkable

from demixer.errors import UnknownQuality

if TYPE_CHECKING:  # numpy, which base imports, is not needed to parse a level
    from demixer.models.base import Backend

__all__ = ["DEFAULT_QUALITY", "QUALITIES", "Quality", "Tunable", "parse_quality", "tuned"]

Quality = Literal["fast", "balanced", "best"]
QUALITIES: tuple[Quality, ...] = get_args(Quality)
# Chosen from benchmarks/RESULTS.md: `balanced` is better than `fast` and than Deezer's own
# pipeline on every condition measured (plain SDR and BSS Eval, both stems) and costs about the
# same (it changes how the two U-Nets' masks are combined, not how often they run), so it is
# well above 40x real time on 2 cores.
DEFAULT_QUALITY: Quality = "balanced"


def parse_quality(value: str) -> Quality:
    """``value`` as a :data:`Quality`; raises :class:`UnknownQuality` naming the levels."""
    level = value.strip().lower()
    for known in QUALITIES:
        if level == known:
            return known
    raise UnknownQuality(f"unknown quality {value[:50]!r}; choose one of {', '.join(QUALITIES)}")


@runtime_checkable
class Tunable(Protocol):
    """A backend with work to offer at some quality levels."""

    def with_quality(self, quality: Quality) -> Backend:
        """The backend as it runs at ``quality`` (sharing this one's loaded weights)."""
        ...


def tuned(backend: Backend, quality: Quality) -> Backend:
    """``backend`` at ``quality``: itself when it has nothing to offer at any level."""
    return backend.with_quality(quality) if isinstance(backend, Tunable) else backend
