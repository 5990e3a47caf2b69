"""UVR's MDX-Net models (KUIELab's TFC-TDF U-Net, exported to ONNX), run with onnxruntime.

Kim_Vocal_2, UVR-MDX-NET-Inst_HQ_3/4/5, UVR_MDXNET_KARA_2, Reverb_HQ_By_FoxJoy and the rest are
single ``.onnx`` files whose STFT settings live outside the file, in UVR's model data; a
registry entry carries them in ``arch_params`` (see :mod:`demixer.models.mdx_net.params`).

The inference is UVR's own (:mod:`demixer.models.mdx_net.chunks`), with UVR's defaults: 256-frame
chunks stepped by ``chunk - n_fft``, Hann-weighted overlap-add, no "denoise" pass (the ``best``
quality level adds it), and the output multiplied by the model's ``compensate`` gain: UVR's
"primary stem". A registry entry
may also list the secondary stem (``stems=("vocals", "instrumental")``), which is the input
minus the primary, exactly as UVR computes it.

The engine hands this backend the whole input as blocks (it is a ``StreamingBackend``), and
:meth:`MdxNetBackend.stream` runs UVR's loop over that stream with no seams: the stems are
UVR's at every sample, however long the input (other rates are resampled as a stream, exactly
as a whole-array resample would). :meth:`MdxNetBackend.separate` splits one window the same
way, for a caller that has windows (an engine without the streaming hook).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from demixer.errors import ModelUnavailable
from demixer.models.loading import network_file
from demixer.models.mdx_net.chunks import ChunkStream, Spectrogram
from demixer.models.mdx_net.params import ARCH_PARAMS, MdxParams
from demixer.models.mdx_net.session import OnnxNetwork
from demixer.models.quality import Quality
from demixer.models.registry import ModelSpec

__all__ = ["ARCH_PARAMS", "WINDOW_STEPS", "MdxNetBackend", "MdxParams", "OnnxNetwork", "load"]

#: chunk steps per window for a caller that runs :meth:`MdxNetBackend.separate` window by window
#: (57.5 s for Kim_Vocal_2's 5.75 s step, plus the one-chunk cross-fade): few seams, while the
#: per-window arrays stay a few tens of MB. The engine streams instead: no windows, no seams.
WINDOW_STEPS = 10
#: the chunks one onnxruntime call runs when ``batch_size`` is 0: on a CPU, one (the network's
#: activations are ~150 MB per tensor at batch 1 and a batch gains nothing per chunk); on a GPU,
#: a few, to keep it busy.
_CPU_BATCH = 1
_GPU_BATCH = 4


class MdxNetBackend:
    """A loaded MDX-Net model.

    Attributes:
        sample_rate: 44100 Hz for every published MDX-Net model.
        channels: 2 (the engine duplicates mono, as UVR does).
        stems: the registry's stems: the primary (the network's output) and, if listed, the
            secondary (input minus primary), in the registry's order.
        primary: the stem the network outputs.
        window: samples per engine window: ``WINDOW_STEPS`` chunk steps plus ``overlap``, so
            that every window's chunks fall on the grid of UVR's whole-track chunks.
        overlap: samples cross-faded between windows: one chunk.
        needs_stats: false: UVR does not normalise the input.
        params: the model's parameters.
    """

    channels = 2
    needs_stats = False

    def __init__(
        self,
        network: OnnxNetwork,
        params: MdxParams,
        *,
        stems: tuple[str, ...],
        primary: str | None = None,
        sample_rate: int = 44100,
        batch: int = _CPU_BATCH,
    ) -> None:
        self.sample_rate = sample_rate
        self.stems = stems
        self.primary = primary or stems[0]
        self._secondary = next((s for s in stems if s != self.primary), None)
        self.params = params
        self.overlap = params.chunk
        self.window = WINDOW_STEPS * params.step + self.overlap
        self._network = network
        self._spectrogram = Spectrogram(params)
        self._batch = max(1, min(params.batch_size or batch, network.max_batch))

    def with_quality(self, quality: Quality) -> MdxNetBackend:
        """The backend at ``quality`` (:class:`~demixer.models.quality.Tunable`), sharing the
        loaded network. ``fast`` and ``balanced`` run the model as its parameters set it;
        ``best`` adds UVR's "Denoise Output: Standard" (audio-separator's ``enable_denoise``)
        where they do not: each chunk also separated inverted, twice the work."""
        if quality != "best" or self.params.denoise:
            return self
        tuned = copy.copy(self)
        tuned.params = replace(self.params, denoise=True)
        return tuned

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        """Split one window as UVR splits a whole track.

        Args:
            mix: ``(2, samples)`` float32 at 44.1 kHz.

        Returns:
            stem -> ``(2, samples)`` float32: the primary is the network's output times
            ``compensate``; the secondary (when listed) is ``mix`` minus it.
        """
        if mix.ndim != 2 or mix.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, samples) audio, got shape {mix.shape}")
        stream = self._stream()
        head = stream.feed(np.asarray(mix, dtype=np.float32))
        tail = stream.finish()
        return self._stems(
            np.concatenate([head[0], tail[0]], axis=1),
            np.concatenate([head[1], tail[1]], axis=1),
            mono=False,
        )

    def stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        before_run: Callable[[int], None] | None = None,
        stats: object = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Split a whole track that arrives in blocks, exactly as UVR splits it at once.

        This is the streaming-backend form (the engine hands over the whole input instead of
        windows, so there are no seams); ``stats`` is unused (:attr:`needs_stats` is false).

        Args:
            blocks: ``(channels, n)`` float32 at 44.1 kHz, 1 or 2 channels, in order; mono is
                run as two identical channels, as UVR does, and averaged back.
            before_run: called before each network call with the input position (samples)
                of its first chunk; raise from it to stop.

        Yields:
            stem -> ``(channels, m)`` float32 blocks that, concatenated, are the track's stems;
            they lag the input by up to two chunks (about 12 s) and memory stays at about that.
        """
        stream = self._stream(before_run)
        mono = False
        for block in blocks:
            mono = block.shape[0] == 1
            wave = np.repeat(block, 2, axis=0) if mono else block
            mix, out = stream.feed(np.asarray(wave, dtype=np.float32))
            if out.shape[1]:
                yield self._stems(mix, out, mono=mono)
        yield self._stems(*stream.finish(), mono=mono)

    def _stems(self, mix: np.ndarray, out: np.ndarray, *, mono: bool) -> dict[str, np.ndarray]:
        """The stems for network output ``out`` over input ``mix`` (both ``(2, m)``)."""
        if self.params.compensate != 1.0:
            out = out * np.float32(self.params.compensate)
        stems = {self.primary: out}
        if self._secondary is not None:
            stems[self._secondary] = mix - out
        if mono:
            stems = {name: y.mean(axis=0, keepdims=True) for name, y in stems.items()}
        return {name: stems[name] for name in self.stems}

    def _stream(self, before_run: Callable[[int], None] | None = None) -> ChunkStream:
        return ChunkStream(
            self.params, self._separate_chunks, batch=self._batch, before_run=before_run
        )

    @torch.inference_mode()
    def _separate_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """``(batch, 2, chunk)`` mixture chunks -> ``(batch, 2, chunk)`` network output waves."""
        spec = self._spectrogram.forward(torch.from_numpy(chunks))
        x = spec.numpy()
        if self.params.denoise:
            # UVR's "Denoise Output: Standard": average f(x) and -f(-x), which cancels the
            # part of the output that does not flip sign with the input.
            both = self._run(np.concatenate([-x, x]))
            y = both[len(x) :] * 0.5 - both[: len(x)] * 0.5
        else:
            y = self._run(x)
        return self._spectrogram.inverse(torch.from_numpy(y)).numpy()

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) <= self._network.max_batch:
            return self._network(x)
        step = self._network.max_batch
        return np.concatenate([self._network(x[i : i + step]) for i in range(0, len(x), step)])


def _primary_stem(spec: ModelSpec, params: MdxParams) -> str:
    """The registry stem the network outputs: ``primary_stem`` (any case), else the first."""
    if not 1 <= len(spec.stems) <= 2:
        raise ModelUnavailable(
            f"model {spec.id!r} declares stems {list(spec.stems)}; an MDX-Net model has its "
            "primary stem and, optionally, the secondary (the input minus the primary)"
        )
    if params.primary_stem is None:
        return spec.stems[0]
    for stem in spec.stems:
        if stem.lower() == params.primary_stem:
            return stem
    raise ModelUnavailable(
        f"model {spec.id!r}: arch_params primary_stem {params.primary_stem!r} is not one of "
        f"its stems {list(spec.stems)}"
    )


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> MdxNetBackend:
    """Load a registered MDX-Net model.

    Args:
        spec: its registry entry (``arch="mdx_net"``; ``arch_params`` as in
            :mod:`demixer.models.mdx_net.params`; stems: the primary, optionally the secondary;
            ``weights``: the ``.onnx``, and for a user's model its parameters file, named by
            ``config_name``).
        model_dir: weights cache directory (default ``$DEMIXER_MODEL_DIR``).
        model_path: a local ``.onnx`` to use instead of the registered (SHA-256 pinned) file.
        device: ``cpu``, or ``cuda[:N]`` with the onnxruntime-gpu build (else the CPU runs it).
        threads: onnxruntime's intra-op threads (None: torch's thread setting).

    Raises:
        ModelUnavailable: bad ``arch_params`` (InvalidModelConfig), a missing or corrupt file,
            or a file whose input shape contradicts ``arch_params`` (CheckpointMismatch).
        WeightsChecksumMismatch: the registered file does not match its pin.
    """
    params = MdxParams.from_arch_params(spec.arch_params, model_id=spec.id)
    primary = _primary_stem(spec, params)
    network = OnnxNetwork(
        network_file(spec, model_dir, model_path, one="an MDX-Net model is one .onnx"),
        params,
        device=device,
        threads=threads,
    )
    batch = _GPU_BATCH if device.startswith("cuda") else _CPU_BATCH
    return MdxNetBackend(
        network,
        params,
        stems=spec.stems,
        primary=primary,
        sample_rate=spec.sample_rate,
        batch=batch,
    )
