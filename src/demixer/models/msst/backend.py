"""The backend for MSST-format models: config + checkpoint -> a streaming separator.

``load`` is the registry loader of every spec whose ``arch`` is an MSST ``model_type``: it
verifies both files by SHA-256, reads the config safely, builds the architecture
(:mod:`demixer.models.arch`), loads the checkpoint tensors-only and checks they fit. The backend
then runs MSST's chunked inference (:mod:`demixer.models.msst.inference`) over the engine's block
stream, so its stems are the ones MSST computes, in memory that does not grow with the input.

Precision follows ``DEMIXER_PRECISION`` (:mod:`demixer.models.precision`): with ``fp32`` the
stems equal MSST's own inference to float rounding; by default the networks run under bf16
autocast where the CPU or GPU has native bf16, except those in
:data:`~demixer.models.arch.FP32_BY_DEFAULT` (MDX23C), which stay fp32 unless asked.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from demixer.audio import SampleQueue
from demixer.errors import (
    ChunkTooLarge,
    InvalidModelConfig,
    ModelFailed,
    ModelUnavailable,
    WeightsChecksumMismatch,
)
from demixer.models.arch import FP32_BY_DEFAULT, build_model, chunk_problem
from demixer.models.base import InputStats
from demixer.models.loading import no_random_fill, resolve_weight, verified_weights
from demixer.models.memory import machine_memory
from demixer.models.msst.checkpoint import check_fit, load_weights, read_state_dict
from demixer.models.msst.config import MsstConfig, read_config
from demixer.models.msst.inference import Chunking, demix_stream
from demixer.models.precision import autocast, requested_precision, resolve_precision
from demixer.models.quality import Quality
from demixer.models.registry import ModelSpec

__all__ = [
    "FAST_OVERLAP",
    "MsstBackend",
    "backend_for",
    "build_network",
    "load",
    "mono_mix_stats",
    "store_weights_in",
]


#: ``inference.num_overlap`` at the ``fast`` quality level, where the config sets more: the
#: overlap most published RoFormer configs use (Kim's, viperx's, the SW model's).
FAST_OVERLAP = 2


class MsstBackend:
    """A loaded MSST model (:class:`~demixer.models.base.StreamingBackend`).

    Attributes:
        sample_rate: Hz (``audio.sample_rate``).
        channels: ``audio.num_channels``; mono input to a stereo model is duplicated and the
            first channel of each output kept (as MSST does); stereo input to a mono model is
            separated channel by channel.
        stems: the config's stems (lowercased): its instruments, or its target instrument and,
            for two instruments, the other one as the input minus the target (as MSST's
            ``--extract_instrumental``, but for ``normalize``: :attr:`MsstConfig.complement`).
        window: samples per chunk; overlap: ``chunk - step`` (informative: the backend does its
            own windowing in :meth:`stream`).
        needs_stats: whether the config normalises the input (``inference.normalize``).
        precision: the resolved compute precision (fp32, bf16, fp16).
        tta: MSST's test-time augmentation (``--use_tta``), the ``best`` quality level: see
            :meth:`with_quality`.
    """

    def __init__(
        self,
        network: nn.Module,
        config: MsstConfig,
        *,
        device: torch.device,
        precision: str,
        compute_batch: int | None = None,
    ) -> None:
        self.config = config
        self.sample_rate = config.sample_rate
        self.channels = config.channels
        self.stems = config.stems
        self.window = config.chunk_size
        self.overlap = config.chunk_size - config.step
        self.needs_stats = config.normalize
        self.device = device
        self.precision = precision
        self.tta = False
        self._network = network
        self._model_channels = int(getattr(network, "audio_channels", config.channels))
        self._chunking = Chunking(
            config.chunk_size,
            config.num_overlap,
            config.batch_size,
            demucs=config.arch == "htdemucs",  # MSST's "demucs" inference
        )
        # On a CPU one chunk per call costs no speed (the matmuls are large already) and gives
        # progress and cancellation per chunk; a GPU wants the config's batch.
        self._compute_batch = compute_batch or (1 if device.type == "cpu" else config.batch_size)
        target = config.target_instrument
        self._target = config.instruments.index(target) if target else None
        self._complement = config.complement
        self._computed = self.stems[:1] if self._complement else self.stems

    def with_quality(self, quality: Quality) -> MsstBackend:
        """The backend at ``quality`` (:class:`~demixer.models.quality.Tunable`), sharing the
        loaded network. ``balanced`` is MSST's inference as the config sets it. ``fast`` is
        MSST's with ``inference.num_overlap`` at most :data:`FAST_OVERLAP` (each sample in two
        chunks rather than the config's four or eight: half or a quarter of the work; the same
        as ``balanced`` for a config that sets 2 or 1). ``best`` is MSST's with ``--use_tta``:
        each chunk is separated three times, as it is, with its channels swapped, and inverted,
        and the three estimates (swapped back, inverted back) are averaged: three times the
        work, the same stems as MSST's ``--use_tta``."""
        tta = quality == "best"
        overlap = self.config.num_overlap
        if quality == "fast":
            overlap = min(overlap, FAST_OVERLAP)
        if tta == self.tta and overlap == self._chunking.num_overlap:
            return self
        tuned = copy.copy(self)
        tuned.tta = tta
        tuned._chunking = replace(self._chunking, num_overlap=overlap)
        tuned.overlap = tuned._chunking.border
        return tuned

    def _run(self, chunks: np.ndarray) -> torch.Tensor:
        """``(k, c, chunk)`` -> ``(k, stems, c, chunk)`` float32 (``c`` the input's channels), on
        the model's device."""
        k, channels, samples = chunks.shape
        x = torch.from_numpy(chunks).to(self.device)
        if channels < self._model_channels:
            x = x.expand(k, self._model_channels, samples)
        elif channels > self._model_channels:
            x = x.reshape(k * channels, 1, samples)
        y = self._forward(x)
        if self.tta:
            # MSST's apply_tta on the model's input (a mono song as the stereo copy it makes):
            # the original, the channels swapped (swapped back) minus the inverted, over 3.
            # Summed per chunk rather than per song: the same, as the windowed sum is linear.
            y = (y + self._forward(x.flip(1)).flip(2) - self._forward(-x)) / 3
        if channels < self._model_channels:
            y = y[:, :, :channels]
        elif channels > self._model_channels:
            y = y.reshape(k, channels, -1, samples).transpose(1, 2)
        return y

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on ``(k, model channels, chunk)``: ``(k, stems, model channels, chunk)``
        float32, the stems demixer computes (MSST keeps a target model's target alone)."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            y: torch.Tensor = self._network(x)
        y = y.float()
        if y.ndim == 3:
            y = y[:, None]
        instruments = len(self.config.instruments)
        if self._target is not None and y.shape[1] == instruments > 1:
            y = y[:, self._target : self._target + 1]  # MSST keeps only the target
        if y.shape[1] != len(self._computed):
            raise ModelFailed(
                f"the network gave {y.shape[1]} stem(s) but its config names "
                f"{len(self._computed)} ({', '.join(self._computed)})"
            )
        return y

    def stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        before_run: Callable[[int], None] | None = None,
        stats: InputStats | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Separate a whole input given as ``(channels, n)`` blocks at ``sample_rate``.

        Yields stem -> ``(channels, m)`` float32 for consecutive ranges covering the input; see
        :class:`~demixer.models.base.StreamingBackend`.
        """
        mean, std = 0.0, 1.0
        if self.needs_stats:
            if stats is None:
                raise ValueError(f"{self.config.source} normalises its input: pass its stats")
            mean, std = stats.mean, stats.std
            # MSST: a silent (or constant) input is left at its level.
            if not math.isfinite(std) or std <= float(np.finfo(np.float32).eps):
                std = 1.0
        mix = SampleQueue()  # the input not yet matched by output, for the complement

        def model_input() -> Iterator[np.ndarray]:
            for block in blocks:
                block = np.asarray(block, np.float32)
                if self._complement:
                    mix.push(block)
                yield (block - mean) / std if self.needs_stats else block

        for out in demix_stream(
            model_input(),
            self._chunking,
            self._run,
            compute_batch=self._compute_batch,
            before_run=before_run,
        ):
            if self.needs_stats:
                out = out * std + mean
            stems = {stem: out[i] for i, stem in enumerate(self._computed)}
            if self._complement:
                target = out[0]
                stems[self._complement] = mix.pop(target.shape[1]) - target
            yield stems

    def separate(self, mix: np.ndarray) -> dict[str, np.ndarray]:
        """MSST's inference of one whole ``(channels, samples)`` float32 signal."""
        stats = mono_mix_stats(mix) if self.needs_stats else None
        parts = list(self.stream([mix], stats=stats))
        return {s: np.concatenate([p[s] for p in parts], axis=1) for s in self.stems}


def mono_mix_stats(audio: np.ndarray) -> InputStats:
    """MSST's normalisation statistics of ``(channels, samples)`` audio, whole."""
    mono = np.asarray(audio, np.float32).mean(axis=0)
    return InputStats(mean=float(mono.mean()), std=float(mono.std()))


def build_network(config: MsstConfig, checkpoint: Path) -> nn.Module:
    """The architecture ``config`` describes, with ``checkpoint``'s weights, in eval mode.

    Raises:
        UnknownArchitecture, InvalidModelConfig: the config names no architecture demixer has,
            options it cannot compute, or a network that cannot run its chunks (checked here,
            before any song: the message names the config file).
        ChunkTooLarge: one chunk cannot fit in this machine's memory.
        ModelUnavailable, CheckpointMismatch: the checkpoint is unreadable or does not fit.
    """

    memory = machine_memory()
    problem = config.chunk_memory_problem(memory) if memory else None
    if problem:  # before anything is built or read: the job would fail on this allocation
        raise ChunkTooLarge(f"{config.source}: {problem}")

    def build() -> nn.Module:
        try:
            return build_model(
                config.arch,
                config.model_dict(),
                config.audio_dict(),
                config.instruments,
                config.target_instrument,
            )
        except InvalidModelConfig as exc:  # the architecture's words; name the file to fix
            raise InvalidModelConfig(f"{config.source}: {exc.message}") from None

    # First the network's shapes alone (the meta device: no memory, no initialisation): a
    # config that does not fit its checkpoint (a typo'd dim: 4096) allocated and initialised
    # the whole network first, 6 GB and 35 s for a 1.5 G-parameter one, or was killed for
    # memory, before saying so. Past the check the network is as big as the checkpoint.
    with torch.device("meta"):
        shapes = build()
    state = read_state_dict(checkpoint)
    check_fit(shapes, state, checkpoint=str(checkpoint), config=config.source, arch=config.arch)
    with no_random_fill():  # every parameter is the checkpoint's (checked just above)
        network = build()
    problem = chunk_problem(network, config.chunk_size)  # reads its STFT window's values
    if problem:
        raise InvalidModelConfig(
            f"{config.source}: {config.chunk_key} {config.chunk_size} does not fit the "
            f"network: {problem}"
        )
    load_weights(network, state, checkpoint=str(checkpoint), config=config.source)
    return network


def _files(spec: ModelSpec, model_dir: Path | None, model_path: Path | None) -> tuple[Path, Path]:
    """(config, checkpoint) of ``spec``: registered files SHA-256 verified, or ``model_path``."""
    config_file = next((w for w in spec.weights if w.name == spec.config_name), None)
    checkpoints = [w for w in spec.weights if w is not config_file]
    if config_file is None or len(checkpoints) != 1:
        raise ModelUnavailable(f"model {spec.id!r} does not list a config and one checkpoint")
    if model_path is None:
        verified_weights(spec, model_dir)
        checkpoint = resolve_weight(spec, checkpoints[0], model_dir)
    else:
        checkpoint = Path(model_path)
        if not checkpoint.is_file():
            raise ModelUnavailable(f"--model-path {checkpoint} is not a file")
        try:
            verified_weights(replace(spec, weights=(config_file,)), model_dir)  # the config alone
        except WeightsChecksumMismatch:
            raise
        except ModelUnavailable:
            raise ModelUnavailable(
                f"--model-path runs {spec.id!r} with its published config, {config_file.name}, "
                f"which is not here; `demixer models pull {spec.id}` fetches it (with the "
                f"catalogue's checkpoint), or run your files as they are: --arch {spec.arch} "
                "--model-config CONFIG.yaml --model-path CHECKPOINT"
            ) from None
    return resolve_weight(spec, config_file, model_dir), checkpoint


def load(
    spec: ModelSpec,
    *,
    model_dir: Path | None = None,
    model_path: Path | None = None,
    device: str = "cpu",
    precision: str | None = None,
) -> MsstBackend:
    """Load a registered MSST-format model.

    Args:
        spec: its registry entry (``arch`` set, ``config_name`` naming the YAML file).
        model_dir: weights directory (default ``$DEMIXER_MODEL_DIR``).
        model_path: a local checkpoint to use with the registered config (read tensors-only,
            not checked against any pin).
        device: torch device string.
        precision: auto, fp32, bf16 or fp16 (default ``$DEMIXER_PRECISION``, else auto).

    Raises:
        ModelUnavailable (and its WeightsChecksumMismatch, InvalidModelConfig,
        CheckpointMismatch), UnknownArchitecture.
    """
    config_path, checkpoint = _files(spec, model_dir, model_path)
    config = read_config(config_path, arch=spec.arch)
    if config.stems != spec.stems:
        raise ModelUnavailable(
            f"model {spec.id!r} declares stems {list(spec.stems)} but its config gives "
            f"{list(config.stems)}"
        )
    return backend_for(config, checkpoint, device=device, precision=precision)


def backend_for(
    config: MsstConfig, checkpoint: Path, *, device: str = "cpu", precision: str | None = None
) -> MsstBackend:
    """An :class:`MsstBackend` for a config and checkpoint already on disk (no pins)."""
    network = build_network(config, checkpoint)
    try:
        target = torch.device(device)
        network.to(target)
    except (RuntimeError, AssertionError) as exc:
        raise ModelUnavailable(f"cannot run the model on {device!r}: {exc}") from exc
    resolved = resolve_precision(
        requested_precision(precision), target, low_ok=config.arch not in FP32_BY_DEFAULT
    )
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolved)
    if low is not None:
        store_weights_in(network, low)
    return MsstBackend(network, config, device=target, precision=resolved)


_MATMUL_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.LSTM,
)


def store_weights_in(network: nn.Module, dtype: torch.dtype) -> None:
    """Keep the weights of ``network``'s linear, convolution and LSTM layers in ``dtype``.

    Under autocast those layers compute in ``dtype`` anyway, but autocast casts fp32 weights
    anew at every call in inference mode (its cache serves autograd only): for a RoFormer that
    re-copied every weight per chunk, for SCNet every LSTM's weights per call (SCNet 1.28x ->
    1.51x of MSST's float32 module on a quarter chunk, before its LSTM padding). Cast once
    here, the arithmetic is the same (the same round-to-nearest) and those weights take half
    the memory. A module marked ``keep_float32 = True`` (one an architecture runs with autocast
    off, as SCNet's first encoder block) keeps its weights, and those of everything inside it,
    in float32.
    """
    exact = [m for m in network.modules() if getattr(m, "keep_float32", False)]
    kept = {id(inner) for m in exact for inner in m.modules()}
    for module in network.modules():
        if isinstance(module, _MATMUL_LAYERS) and id(module) not in kept:
            module.to(dtype)
