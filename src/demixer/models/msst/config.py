"""MSST model configs (YAML), read safely into a typed, frozen view.

Music-Source-Separation-Training describes a model by a YAML file with the sections ``audio``,
``model``, ``training`` and ``inference``. MSST reads it with ``yaml.FullLoader``, which builds
Python objects the file names; demixer reads it with a ``SafeLoader`` that additionally
understands ``!!python/tuple`` (the community configs write band layouts that way) and nothing
else: any other ``!!python/...`` tag is refused, so a config can never run code.

What MSST's inference reads, with its precedence and defaults:

- ``inference.chunk_size``, else ``audio.chunk_size``: samples per chunk;
- ``inference.num_overlap``: chunks covering each sample (step = chunk_size // num_overlap);
- ``inference.batch_size``: chunks per batch (it decides which windows fade, see inference.py);
  MSST needs it, audio-separator takes 1 where a config leaves it out (UVR's copy of Kim's
  Mel-Band RoFormer config does), and so does demixer;
- ``inference.normalize`` (default false): normalise the whole input by its mean and std;
- ``audio.sample_rate`` (default 44100; 8 to 384 kHz) and ``audio.num_channels`` (default 2);
- ``training.instruments`` and ``training.target_instrument`` (the one stem such a model
  outputs); ``training.model_type``, when present, overrides the architecture asked for;
- the network's options from ``model:``, or for ``bandit_v2`` from ``kwargs:`` (MSST builds
  that one as ``Bandit(**config.kwargs)``).

An ``htdemucs`` config is read as MSST reads it, with OmegaConf's YAML (:class:`OmegaConfLoader`):
``model:`` names one of demucs' networks (:data:`DEMUCS_NETWORKS`) and the section holding its
options, the network's channels, rate and segment are ``training.channels``, ``samplerate``
and ``segment``, and a chunk is ``samplerate * segment`` samples (``audio.chunk_size`` is not
read).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml  # type: ignore[import-untyped]

from demixer.errors import InvalidModelConfig
from demixer.models.arch import SIGNATURES
from demixer.models.arch.limits import stems_problem
from demixer.models.memory import bytes_text

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_VALUES",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "STEM_PATTERN",
    "ConfigLoader",
    "MsstConfig",
    "load_yaml",
    "parse_config",
    "read_config",
    "read_config_text",
    "stem_name",
]

MAX_CONFIG_BYTES = 1 << 20  # real configs are a few kB
#: values a config may hold with its aliases (``*name``) written out, and how deeply nested:
#: real configs hold a few hundred, four levels deep. Ten short lines of aliases of aliases
#: stand for billions of values, and a message quoting one (``not [[['x', ...``) or a copy of
#: the section writes them all out: gigabytes, then the process killed.
MAX_CONFIG_VALUES, MAX_CONFIG_DEPTH = 100_000, 32
#: the audio.sample_rate a config may give, Hz: telephone speech to the highest studio rate
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 384000
#: the section holding the network's options, where it is not ``model:`` (MSST's own choice:
#: ``Bandit(**config.kwargs)``; for htdemucs the section ``model:`` names, by default this)
_OPTIONS_SECTION = {"bandit_v2": "kwargs", "htdemucs": "htdemucs"}
#: the networks MSST's ``htdemucs`` model type builds, as the config's ``model:`` names them
#: (demucs' own classes: Demucs v2, Hybrid Demucs v3, Hybrid Transformer Demucs v4)
DEMUCS_NETWORKS = ("demucs", "hdemucs", "htdemucs")
#: htdemucs' options MSST takes from ``training:`` (option -> ``training:`` key)
_HTDEMUCS_FROM_TRAINING = {
    "audio_channels": "channels",
    "samplerate": "samplerate",
    "segment": "segment",
}


class ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.SafeLoader`` plus ``!!python/tuple`` (built as a tuple); nothing else executes."""


def _construct_tuple(loader: ConfigLoader, node: yaml.Node) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node, deep=True))


ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)


class OmegaConfLoader(ConfigLoader):
    """:class:`ConfigLoader` reading plain values as OmegaConf's loader does, which MSST reads an
    htdemucs config with (``OmegaConf.load``; other configs with ``yaml.FullLoader``): a float
    needs no decimal point (``1e-3`` is 0.001, not the string ``'1e-3'``) and no value is a
    date."""


OmegaConfLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in ConfigLoader.yaml_implicit_resolvers.items()
}
OmegaConfLoader.add_implicit_resolver(  # OmegaConf 2.4's own float pattern
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
         [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

#: what a stem name may be (file names are made of it); ``residual`` is the engine's own.
STEM_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.+-]*")


@dataclass(frozen=True)
class MsstConfig:
    """What demixer uses of an MSST config.

    Attributes:
        arch: the architecture (MSST ``model_type``), e.g. ``bs_roformer``.
        model: the network's options, the ``model:`` section (``kwargs:`` for
            ``bandit_v2``; read-only; nested values as YAML gave them).
        audio: the ``audio:`` section (read-only).
        instruments: ``training.instruments`` as written.
        target_instrument: ``training.target_instrument``, or None.
        sample_rate: Hz the model runs at.
        channels: ``audio.num_channels`` (1 or 2).
        chunk_size: samples per chunk at ``sample_rate``.
        num_overlap: chunks covering each sample.
        batch_size: chunks per batch in MSST's inference.
        normalize: whether the input is normalised by its mean and standard deviation.
        source: where the config came from (for messages).
        chunk_key: which key gave ``chunk_size`` (``inference.chunk_size`` or
            ``audio.chunk_size``; for htdemucs, the product of two; for messages).
    """

    arch: str
    model: Mapping[str, Any]
    audio: Mapping[str, Any]
    instruments: tuple[str, ...]
    target_instrument: str | None
    sample_rate: int
    channels: int
    chunk_size: int
    num_overlap: int
    batch_size: int
    normalize: bool
    source: str
    chunk_key: str = "audio.chunk_size"

    @property
    def stems(self) -> tuple[str, ...]:
        """The stems the model gives, as demixer names them (lowercase, ``_`` for spaces): every
        instrument, or the target instrument followed by :attr:`complement` when there is one."""
        if not self.target_instrument:
            return tuple(stem_name(n) for n in self.instruments)
        rest = (self.complement,) if self.complement else ()
        return (stem_name(self.target_instrument), *rest)

    @property
    def complement(self) -> str | None:
        """For a target-instrument model of two instruments, the other one's stem name: the
        mixture minus the target, as MSST computes it (``--extract_instrumental``) without
        ``normalize``; with it MSST's is at another level, and demixer's stays the mixture
        minus the target (docs/models.md). None for other models (with more instruments, the
        engine's residual is the rest)."""
        if not self.target_instrument or len(self.instruments) != 2:
            return None
        return next(stem_name(i) for i in self.instruments if i != self.target_instrument)

    @property
    def step(self) -> int:
        """Samples between chunk starts: ``chunk_size // num_overlap``."""
        return self.chunk_size // self.num_overlap

    def chunk_memory_problem(self, memory: int) -> str | None:
        """Why one chunk cannot fit in ``memory`` bytes; None when it may.

        The need is a floor that holds on any device and for any network: one chunk in and the
        network's stems for it out, float32 (demixer runs one chunk at a time on a CPU, a GPU
        ``batch_size`` at once). The network's own work (its STFT, attention) comes on top and
        is not guessed at, so no chunk that could run is refused, whatever the machine: the
        largest published chunks (11 s) need a few tens of MB here. Users raise
        ``chunk_size`` on purpose, so there is no fixed upper bound.
        """
        outputs = 1 if self.target_instrument else len(self.instruments)
        need = (1 + outputs) * self.channels * self.chunk_size * 4
        if need <= memory:
            return None
        return (
            f"{self.chunk_key} {self.chunk_size} does not fit in memory: one chunk alone needs "
            f"at least {bytes_text(need)} ({self.channels} channel(s) in and {outputs} stem(s) "
            f"out, float32), more than this machine's {bytes_text(memory)}; set "
            f"{self.chunk_key} to a few seconds of audio, as published configs do (8 s is "
            f"{8 * self.sample_rate} samples at {self.sample_rate} Hz)"
        )

    def model_dict(self) -> dict[str, Any]:
        """A fresh, mutable deep copy of ``model`` (what an architecture's ``build`` takes)."""
        return copy.deepcopy(dict(self.model))

    def audio_dict(self) -> dict[str, Any]:
        """A fresh, mutable deep copy of ``audio``."""
        return copy.deepcopy(dict(self.audio))


def stem_name(instrument: str) -> str:
    """demixer's name for an MSST instrument: lowercase, spaces as ``_``."""
    return instrument.strip().lower().replace(" ", "_")


def _section(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidModelConfig(f"{source}: `{name}:` must be a mapping")
    return value


def _positive(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidModelConfig(f"{source}: {what} must be a positive integer, not {value!r}")
    return value


def _instruments(training: Mapping[str, Any], source: str) -> tuple[str, ...]:
    raw = training.get("instruments")
    if not isinstance(raw, (list, tuple)) or not raw or not all(isinstance(i, str) for i in raw):
        raise InvalidModelConfig(f"{source}: training.instruments must be a list of stem names")
    too_many = stems_problem("training.instruments", len(raw))
    if too_many:
        raise InvalidModelConfig(f"{source}: {too_many}")
    names = [stem_name(i) for i in raw]
    for original, name in zip(raw, names, strict=True):
        if not STEM_PATTERN.fullmatch(name) or name == "residual":
            raise InvalidModelConfig(
                f"{source}: instrument {original!r} cannot be a stem name (letters, digits, "
                "'_', '.', '+', '-'; not 'residual')"
            )
    if len(set(names)) != len(names):
        raise InvalidModelConfig(f"{source}: training.instruments repeats a name: {list(raw)}")
    return tuple(raw)


def _channels(value: Any, what: str, source: str) -> int:
    if value not in (1, 2) or isinstance(value, bool):
        raise InvalidModelConfig(f"{source}: {what} must be 1 or 2, not {value!r}")
    return int(value)


def _rate(value: Any, what: str, source: str) -> int:
    rate = _positive(value, what, source)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        # Every song is resampled to it: 1 Hz leaves nothing to separate, 10**9 Hz makes a
        # second of audio 4 GB per channel (a worker killed for memory).
        raise InvalidModelConfig(
            f"{source}: {what} {rate} Hz is not an audio rate a model runs at "
            f"({MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz)"
        )
    return rate


def _htdemucs_options(
    name: str,
    section: Mapping[str, Any],
    training: Mapping[str, Any],
    audio: Mapping[str, Any],
    source: str,
) -> tuple[dict[str, Any], int, int, int]:
    """An htdemucs config's network options, rate, channels and chunk, as MSST takes them: the
    section ``name`` (the network ``model:`` names) with ``training.channels``, ``samplerate``
    and ``segment`` added, and ``model``: ``name`` (``audio.sample_rate`` and
    ``audio.num_channels``, where given, must agree); chunks of ``round(samplerate * segment)``
    samples (MSST's "demucs" inference)."""
    for option, key in _HTDEMUCS_FROM_TRAINING.items():
        if option in section:
            raise InvalidModelConfig(
                f"{source}: {name}.{option} is not read: MSST gives the network "
                f"training.{key} (remove {name}.{option})"
            )
    if "sources" in section:
        raise InvalidModelConfig(
            f"{source}: {name}.sources is not read: MSST names the network's sources by "
            f"training.instruments (remove {name}.sources)"
        )
    if "model" in section:  # no demucs network takes it (and it is where ours is named)
        raise InvalidModelConfig(f"{source}: {name}.model is not an option of demucs' {name}")
    rate = _rate(training.get("samplerate"), "training.samplerate", source)
    channels = _channels(training.get("channels"), "training.channels", source)
    segment = training.get("segment")
    if (
        isinstance(segment, bool)
        or not isinstance(segment, (int, float))
        or not math.isfinite(segment)
        or round(rate * segment) < 1
    ):
        raise InvalidModelConfig(
            f"{source}: training.segment must be a positive number of seconds, not {segment!r}"
        )
    for key, trained, value in (
        ("sample_rate", "samplerate", rate),
        ("num_channels", "channels", channels),
    ):
        if key in audio and audio[key] != value:
            raise InvalidModelConfig(
                f"{source}: audio.{key} {audio[key]!r} and training.{trained} {value!r} "
                "differ: the network runs at the latter"
            )
    options = {
        **section,
        "audio_channels": channels,
        "samplerate": rate,
        "segment": segment,
        "model": name,
    }
    return options, rate, channels, round(rate * segment)


def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    """A config YAML could not read, in words: where (line and column, from 1) and what; for a
    refused tag, that only plain YAML and ``!!python/tuple`` are read."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    message = f"{source} is not a usable model config{where}: {problem}"
    if isinstance(exc, yaml.constructor.ConstructorError):
        message += " (only plain YAML and !!python/tuple are read; nothing in a config is executed)"
    return message


def _expanded_size(node: yaml.Node, source: str, sizes: dict[int, int], depth: int = 0) -> int:
    """How many values ``node`` holds once its aliases are written out (each shared node is
    counted once per use, but walked once: ``sizes`` keeps what is known).

    Raises:
        InvalidModelConfig: nested over :data:`MAX_CONFIG_DEPTH`, or an alias inside the very
            list or mapping it names (a value that holds itself).
    """
    known = sizes.get(id(node))
    if known is not None:
        if known < 0:
            raise InvalidModelConfig(
                f"{source} is not a usable model config at line {node.start_mark.line + 1}: "
                "an alias (*name) inside the list or mapping it names holds itself"
            )
        return known
    if depth > MAX_CONFIG_DEPTH:
        raise InvalidModelConfig(
            f"{source} is not a usable model config: nested over {MAX_CONFIG_DEPTH} levels "
            f"deep at line {node.start_mark.line + 1}"
        )
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    sizes[id(node)] = -1  # being counted: meeting it again inside itself is a cycle
    size = 1 + sum(_expanded_size(child, source, sizes, depth + 1) for child in children)
    sizes[id(node)] = size
    return size


def load_yaml(text: str, source: str, loader_class: type[ConfigLoader] = ConfigLoader) -> Any:
    """The YAML ``text`` read with :class:`ConfigLoader` or a subclass (nothing in it is
    executed).

    Raises:
        InvalidModelConfig: not YAML, or a refused tag (says where: ``source``, line, column);
            aliases that write out to over :data:`MAX_CONFIG_VALUES` values, nesting over
            :data:`MAX_CONFIG_DEPTH` levels, or a value that holds itself.
    """
    loader = loader_class(text)
    try:
        node = loader.get_single_node()  # yaml.load's own steps, with a look between them
        if node is None:
            return None
        size = _expanded_size(node, source, {})
        if size > MAX_CONFIG_VALUES:
            raise InvalidModelConfig(
                f"{source} is not a usable model config: it holds {size} values with its "
                f"aliases (*name) written out, over the {MAX_CONFIG_VALUES} a model config may "
                "hold"
            )
        return loader.construct_document(node)  # a SafeLoader: nothing is executed
    except yaml.YAMLError as exc:
        raise InvalidModelConfig(_yaml_problem(source, exc)) from None
    except RecursionError:  # PyYAML reads nested lists by recursion: deeper than Python's stack
        raise InvalidModelConfig(
            f"{source} is not a usable model config: nested over {MAX_CONFIG_DEPTH} levels deep"
        ) from None
    finally:
        loader.dispose()


def _missing_options(data: Mapping[str, Any], arch: str, section: str, source: str) -> str:
    """Why a config without the section ``arch`` reads its options from cannot run, naming
    the architecture it is for when its options are in the other architectures' section."""
    if section == "model" and isinstance(data.get("kwargs"), Mapping) and data["kwargs"]:
        return (
            f"{source}: it is a config for bandit_v2 (its options are under `kwargs:`), not for "
            f"{arch}: run it with --arch bandit_v2"
        )
    if section != "model" and isinstance(data.get("model"), Mapping) and data["model"]:
        other = next((a for a, key in SIGNATURES.items() if key in data["model"]), None)
        if other is not None:
            return (
                f"{source}: it is a config for {other} (it has model.{SIGNATURES[other]}), not "
                f"for {arch}: run it with --arch {other}"
            )
        return (
            f"{source}: the `{section}:` section {arch} reads is missing; its options are "
            "under `model:`, as in a config for another architecture (say which with --arch)"
        )
    return f"{source}: the `{section}:` section is missing"


def parse_config(text: str, *, arch: str | None, source: str = "<config>") -> MsstConfig:
    """Read an MSST config from YAML text.

    Args:
        text: the YAML.
        arch: the architecture asked for (``--arch``); ``training.model_type`` in the config
            overrides it, as in MSST. None: the config must name it.
        source: a name for messages (the file's path).

    Raises:
        InvalidModelConfig: not YAML, a refused tag, a missing or ill-typed field, or a sample
            rate outside :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE`.
    """
    data = load_yaml(text, source)
    if not isinstance(data, Mapping):
        raise InvalidModelConfig(f"{source}: a model config is a YAML mapping")
    training = _section(data, "training", source)
    chosen = training.get("model_type") or arch
    if not isinstance(chosen, str) or not chosen:
        raise InvalidModelConfig(f"{source}: say which architecture it is (--arch)")
    named = data.get("model")  # a section, or which section holds the options (htdemucs)
    if chosen == "htdemucs":
        data = load_yaml(text, source, OmegaConfLoader)  # as MSST reads it: OmegaConf.load
        training = _section(data, "training", source)
        if named is not None and named not in DEMUCS_NETWORKS:
            raise InvalidModelConfig(
                f"{source}: `model: {named}` is not a network MSST's htdemucs builds (demucs' "
                f"{', '.join(DEMUCS_NETWORKS)})"
            )
    elif isinstance(named, str):
        raise InvalidModelConfig(
            f"{source}: it is a config for {named} (`model: {named}`), not for {chosen}"
            + (": run it with --arch htdemucs" if named in DEMUCS_NETWORKS else "")
        )
    audio = _section(data, "audio", source)
    inference = _section(data, "inference", source)
    options = _OPTIONS_SECTION.get(chosen, "model")
    if chosen == "htdemucs" and isinstance(named, str):
        options = named
    model = _section(data, options, source)
    if not model:
        raise InvalidModelConfig(_missing_options(data, chosen, options, source))
    instruments = _instruments(training, source)
    target = training.get("target_instrument") or None
    if target is not None and target not in instruments:
        raise InvalidModelConfig(
            f"{source}: training.target_instrument {target!r} is not in training.instruments"
        )
    if chosen == "htdemucs":
        model, rate, channels, chunk_size = _htdemucs_options(
            options, model, training, audio, source
        )
        chunk_key = "the chunk (training.samplerate * training.segment)"
    else:
        chunk_key = "inference.chunk_size" if "chunk_size" in inference else "audio.chunk_size"
        chunk = inference["chunk_size"] if "chunk_size" in inference else audio.get("chunk_size")
        chunk_size = _positive(chunk, "inference.chunk_size (or audio.chunk_size)", source)
        channels = _channels(audio.get("num_channels", 2), "audio.num_channels", source)
        rate = _rate(audio.get("sample_rate", 44100), "audio.sample_rate", source)
    num_overlap = _positive(inference.get("num_overlap"), "inference.num_overlap", source)
    if num_overlap > chunk_size:
        raise InvalidModelConfig(
            f"{source}: inference.num_overlap {num_overlap} exceeds the chunk size {chunk_size}"
        )
    normalize = inference.get("normalize", False)
    if not isinstance(normalize, bool):
        raise InvalidModelConfig(f"{source}: inference.normalize must be true or false")
    return MsstConfig(
        arch=chosen,
        model=MappingProxyType(copy.deepcopy(dict(model))),
        audio=MappingProxyType(copy.deepcopy(dict(audio))),
        instruments=instruments,
        target_instrument=target,
        sample_rate=rate,
        channels=channels,
        chunk_size=chunk_size,
        num_overlap=num_overlap,
        batch_size=_positive(inference.get("batch_size", 1), "inference.batch_size", source),
        normalize=normalize,
        source=source,
        chunk_key=chunk_key,
    )


def read_config(path: Path, *, arch: str | None = None) -> MsstConfig:
    """:func:`parse_config` of the file at ``path`` (at most :data:`MAX_CONFIG_BYTES`)."""
    return parse_config(read_config_text(path), arch=arch, source=str(path))


def read_config_text(path: Path) -> str:
    """The text of the model config at ``path``: UTF-8, at most :data:`MAX_CONFIG_BYTES`.

    Raises:
        InvalidModelConfig: unreadable, too long or not UTF-8.
    """
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InvalidModelConfig(f"cannot read model config {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidModelConfig(f"{path} is over {MAX_CONFIG_BYTES} bytes: not a model config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModelConfig(f"{path} is not UTF-8 text: not a model config") from None
    return text
