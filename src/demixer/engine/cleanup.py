"""Clean-up by a model before the separation: de-reverb, de-echo (MusicGPT's ``Dereverb`` and
``Deecho``), as a block-stream transform like :func:`demixer.audio.denoise.denoise_blocks`.

The clean-up model runs through the same engine stream as any separation (windows, resampling,
bounded memory), and only the stem it keeps goes on to the separation: stems + residual then add
up to the cleaned input, as they do after ``denoise``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from demixer.engine.separator import PreprocessFn, Separator

__all__ = ["keep_stem"]


def keep_stem(separator: Separator, stem: str) -> PreprocessFn:
    """A transform ``(blocks, sample_rate) -> blocks`` keeping ``separator``'s ``stem`` of
    each block (``(channels, n)`` float32 in and out, the same total length)."""
    plan = separator.plan([stem])
    kept = plan.targets[0]

    def run(blocks: Iterable[np.ndarray], rate: int) -> Iterator[np.ndarray]:
        for out in separator.stream(blocks, rate, plan):
            yield out[kept]

    return run
