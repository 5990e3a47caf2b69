"""Speed, agreement, FLOPs and memory of demixer's MSST models next to MSST's own inference.

Models: the published configs of Kimberley Jensen's Mel-Band RoFormer vocals model and viperx's
BS-RoFormer vocals model ("1297"), full size, with random weights (the real checkpoints cannot
be fetched here; speed does not depend on the values); with ``--models scnet``, MSST's
config_musdb18_scnet too (FLOPs are counted for the RoFormers only). MSST's own classes build each
network (seeded, every weight perturbed) and save its state_dict once to ``.cache/msst``.

Systems, each run in a fresh subprocess of the project venv on 2 threads, alternating per round:

- **MSST** (PyPI ``msst`` 0.1.0, ZFTurbo's Music-Source-Separation-Training): its
  ``get_model_from_config``, ``load_state_dict`` and ``demix`` (what its ``inference.py`` runs with
  default options: no TTA, one "bigshift"), in fp32, ``torch.inference_mode``;
- **demixer**: ``Separator`` of ``demixer.models.msst.user.open_files`` on the same files,
  default precision (bf16 where the CPU has it natively, as here), and ``DEMIXER_PRECISION=fp32``.

Reported: the separation call alone (model already loaded), as seconds per audio second and real
time factor; demixer's agreement with MSST (SNR of the stems, dB, over the whole output); FLOPs
per audio second (matmuls and attention counted per layer, 2 FLOPs per multiply-add) and the
share of this machine's measured matmul peak reached.

Memory (``--memory``): peak RSS of each whole subprocess on long inputs, for the two RoFormers
and for MDX23C and SCNet (MSST's configs/config_vocals_mdx23c.yaml and config_musdb18_scnet.yaml,
built from ``arch_speed.py``'s dicts). MSST reads the file whole and runs ``demix``; demixer runs
``Separator.separate_file`` (file to stem files, what ``demixer separate`` and the workers run).
The networks are shrunk there (:data:`SHRINK`: fewer blocks, narrower), so that MSST's 10 minutes
finish on 2 shared cores (minutes each; MDX23C's about a quarter of an hour): what grows with
the song is the audio arrays MSST holds whole, not the network, whose share is the same at any
length.

    .venv/bin/python benchmarks/msst_speed.py [--rounds 2] [--seconds 10]
        [--models kim-mel viperx-bs scnet] [--memory --minutes 1 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml  # type: ignore[import-untyped]

import common

CONFIGS = common.ROOT / "tests" / "data" / "msst"
MODELS = {  # name -> (config file in CONFIGS, or "" for one built here; arch; label)
    "kim-mel": (
        "config_vocals_mel_band_roformer_kj.yaml",
        "mel_band_roformer",
        "Kim Mel-Band RoFormer vocals",
    ),
    "viperx-bs": (
        "model_bs_roformer_ep_317_sdr_12.9755.yaml",
        "bs_roformer",
        "viperx BS-RoFormer 1297 vocals",
    ),
    "crowd-mel": (
        "config_melband_roformer_crowd_aufr33_viperx_sdr_8.7144.yaml",
        "mel_band_roformer",
        "aufr33/viperx Mel-Band RoFormer crowd (num_overlap 4)",
    ),
    "mdx23c": ("", "mdx23c", "MDX23C vocals + instrumental (MSST config_vocals_mdx23c)"),
    "scnet": ("", "scnet", "SCNet 4 stems (MSST config_musdb18_scnet)"),
}
ROFORMERS = ["kim-mel", "viperx-bs"]  # the default speed comparison (--models adds SCNet)
# --memory: each network shrunk (model section overrides) so that MSST's 10 minutes finish.
SHRINK: dict[str, dict[str, Any]] = {
    "kim-mel": {"depth": 1, "dim": 64, "heads": 2, "dim_head": 32},
    "viperx-bs": {"depth": 1, "dim": 64, "heads": 2, "dim_head": 32},
    "crowd-mel": {"depth": 1, "dim": 64, "heads": 2, "dim_head": 32},
    "mdx23c": {"num_channels": 16, "growth": 16},
    "scnet": {"dims": [4, 8, 16, 32], "num_dplayer": 2},
}
# Where the CPU has no native bf16, demixer's default is fp32 and the fp32 run would repeat it.
SYSTEMS = {
    "msst": ("MSST 0.1.0 `demix` (fp32)", {}),
    "demixer": (f"demixer (default: {'bf16' if common.native_bf16() else 'fp32'} here)", {}),
    "demixer-fp32": ("demixer, `DEMIXER_PRECISION=fp32`", {"DEMIXER_PRECISION": "fp32"}),
}
if not common.native_bf16():
    del SYSTEMS["demixer-fp32"]
# the cached speed runs, one file per input length; each kind of CPU keeps its own
_KIND = common.cpu_kind()
SPEED_CACHE = "msst_speed" + ("" if _KIND == common.AMX else "_" + _KIND.replace("-", "_"))
MSST_DIR = common.CACHE / "msst"


# --- model files -----------------------------------------------------------------------------


def _built_config(name: str) -> dict[str, Any]:
    """MSST's YAML config for MDX23C or SCNet, from ``arch_speed.py``'s published dicts and the
    inference sections of MSST's config_vocals_mdx23c.yaml / config_musdb18_scnet.yaml."""
    from arch_speed import _SCNET, MDX23C, SCNET_CHUNK

    if name == "mdx23c":
        return {
            "audio": {**MDX23C["audio"], "min_mean_abs": 0.0},
            "model": dict(MDX23C["model"]),
            "training": {"instruments": list(MDX23C["instruments"]), "target_instrument": None},
            "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 4},
        }
    sources = list(_SCNET["sources"])
    audio = {"chunk_size": SCNET_CHUNK, "num_channels": 2, "sample_rate": 44100}
    return {
        "audio": {**audio, "min_mean_abs": 0.0},
        "model": dict(_SCNET),
        "training": {"instruments": sources, "target_instrument": None},
        "inference": {"batch_size": 8, "dim_t": 256, "num_overlap": 4},
    }


def model_files(name: str, shrink: bool = False) -> tuple[Path, Path, str]:
    """(config, checkpoint, arch) for ``name`` (shrunk by :data:`SHRINK`), made once with MSST's
    classes (seeded)."""
    file, arch, _ = MODELS[name]
    tag = f"{name}-shrunk" if shrink else name
    config_path = MSST_DIR / f"{tag}.yaml"
    checkpoint = MSST_DIR / f"{tag}.ckpt"
    if checkpoint.is_file() and config_path.is_file():
        return config_path, checkpoint, arch
    MSST_DIR.mkdir(parents=True, exist_ok=True)
    if file:
        config = yaml.load((CONFIGS / file).read_text(), Loader=yaml.FullLoader)
    else:
        config = _built_config(name)
    if shrink:
        config["model"].update(SHRINK[name])
    config_path.write_text(yaml.dump(config))
    build_checkpoint(arch, config_path, checkpoint)
    return config_path, checkpoint, arch


def build_checkpoint(arch: str, config_path: Path, checkpoint: Path) -> None:
    """MSST's network for ``config_path`` (its ``get_model_from_config``), every weight
    perturbed (seeded), saved to ``checkpoint`` (in a subprocess)."""
    code = (
        "import sys, torch\n"
        "from msst.utils.settings import get_model_from_config\n"
        "from demixer.models.demucs_backend import openunmix_without_init\n"
        "with openunmix_without_init():  # MSST's htdemucs imports Open-Unmix's filter\n"
        "    model, _ = get_model_from_config(sys.argv[1], sys.argv[2])\n"
        "g = torch.Generator().manual_seed(0)\n"
        "with torch.no_grad():\n"
        "    for n, p in model.named_parameters():\n"
        "        if not n.endswith('freqs'): p.add_(torch.randn(p.shape, generator=g) * 0.02)\n"
        "torch.save(model.state_dict(), sys.argv[3] + '.part')\n"
    )
    subprocess.run(
        [str(common.MAIN_PY), "-c", code, arch, str(config_path), str(checkpoint)], check=True
    )
    Path(str(checkpoint) + ".part").rename(checkpoint)


# --- one run (in its own process) ------------------------------------------------------------


class Msst:
    """MSST's network (``get_model_from_config``, the checkpoint loaded) and its ``demix`` on
    ``device``; stems named as demixer names them ("Vocals" -> "vocals"), so that they pair up."""

    def __init__(self, arch: str, config: Path, checkpoint: Path, device: Any) -> None:
        import torch
        from msst.utils.settings import get_model_from_config

        from demixer.models.demucs_backend import openunmix_without_init

        self.arch, self.device = arch, device
        with openunmix_without_init():  # MSST's htdemucs imports Open-Unmix's filter
            self.model, self.cfg = get_model_from_config(arch, str(config))
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.to(device).eval()

    def separate(self, mix: np.ndarray, *, amp: bool) -> dict[str, np.ndarray]:
        """``demix`` of a whole ``(channels, samples)`` mix; ``amp``: MSST's autocast (fp16,
        CUDA only; its ``training.use_amp``, on by default)."""
        import torch
        from msst.utils.model_utils import demix

        from demixer.models.msst.config import stem_name

        self.cfg.training.use_amp = amp
        with torch.inference_mode():
            stems = demix(self.cfg, self.model, mix, self.device, self.arch)
        return {stem_name(name): np.asarray(audio) for name, audio in stems.items()}


def run_one(system: str, arch: str, config: Path, checkpoint: Path, wav: Path, out: Path) -> None:
    """The subprocess side: load, separate once (timed), write stems and a result JSON."""
    started = time.perf_counter()
    import soundfile as sf
    import torch

    torch.set_num_threads(2)
    streaming = out.name == "none" and system != "msst"  # --memory: what `demixer separate` runs
    if not streaming:
        mix = np.ascontiguousarray(sf.read(str(wav), dtype="float32", always_2d=True)[0].T)
    t0 = time.perf_counter()
    cpu = 0.0
    stems: dict[str, np.ndarray] = {}
    if system == "msst":
        msst = Msst(arch, config, checkpoint, torch.device("cpu"))
        loaded, cpu = time.perf_counter(), _cpu_s()
        stems = msst.separate(mix, amp=False)
        precision = "fp32"
    else:
        from demixer.engine import Separator
        from demixer.models.msst.user import open_files

        spec, backend = open_files(arch, config, checkpoint)
        separator = Separator.from_backend(spec, backend)
        loaded, cpu = time.perf_counter(), _cpu_s()
        if streaming:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="msst-memory-") as tmp:
                separator.separate_file(wav, tmp)
        else:
            stems = separator.separate_array(mix, 44100)
        precision = backend.precision
    done, cpu = time.perf_counter(), _cpu_s() - cpu
    if out.name != "none":
        np.savez(out, **stems)
    result = {
        "load_s": loaded - t0,
        "separate_s": done - loaded,
        "separate_cpu_s": cpu,
        "startup_s": t0 - started,
        "precision": precision,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("RESULT " + json.dumps(result))


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used: less sensitive than wall time to
    other work on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def launch(
    system: str, arch: str, config: Path, checkpoint: Path, wav: Path, out: Path
) -> dict[str, Any]:
    env = {**common._env(), **SYSTEMS[system][1]}
    cmd = [str(common.MAIN_PY), __file__, "--run", system, arch, str(config), str(checkpoint)]
    cmd += [str(wav), str(out)]
    with common.CpuWatch() as watch:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(common.ROOT))
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        return {"error": f"exit {proc.returncode}: {tail}", "wall_s": watch.wall}
    res: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    res["wall_s"], res["foreign_load"] = watch.wall, watch.foreign
    return res


# --- FLOPs ----------------------------------------------------------------------------------


def roformer_flops(config_path: Path) -> dict[str, float]:
    """FLOPs of one chunk through the network, counted per layer from the config (matmuls and
    attention; norms, activations, STFT and masks are elementwise or O(n log n): left out)."""
    from demixer.models.arch.mel_band_roformer import band_membership
    from demixer.models.msst.config import read_config

    arch = "mel_band_roformer" if "mel" in config_path.name else "bs_roformer"
    cfg = read_config(config_path, arch=arch)
    m = dict(cfg.model)
    d, depth = m["dim"], m["depth"]
    heads, dim_head = m.get("heads", 8), m.get("dim_head", 64)
    inner = heads * dim_head
    hop = m.get("stft_hop_length", 512)
    frames = cfg.chunk_size // hop + 1
    channels = 2 if m.get("stereo") else 1
    if arch == "mel_band_roformer":
        member = band_membership(
            m.get("sample_rate", 44100), m.get("stft_n_fft", 2048), m.get("num_bands", 60)
        )
        bins_per_band = [int(x) for x in member.sum(axis=1)]
        mask_layers = m.get("mask_estimator_depth", 1) + 1
    else:
        bins_per_band = list(m["freqs_per_bands"])
        mask_layers = m.get("mask_estimator_depth", 2)
    bands = len(bins_per_band)
    dims_in = [2 * channels * f for f in bins_per_band]
    tokens = frames * bands
    per_token = 3 * inner * d + heads * d + inner * d + 2 * d * 4 * d  # qkv, gates, out, FF
    layers = depth * (m.get("time_transformer_depth", 2) + m.get("freq_transformer_depth", 2))
    macs = {
        "transformer projections + feed-forward": tokens * per_token * layers,
        "attention (QK and AV)": depth
        * (
            m.get("time_transformer_depth", 2) * bands * 2 * frames * frames * inner
            + m.get("freq_transformer_depth", 2) * frames * 2 * bands * bands * inner
        ),
        "band split": frames * sum(dims_in) * d,
        "mask estimators": frames
        * m.get("num_stems", 1)
        * sum(
            d * d * m.get("mlp_expansion_factor", 4)
            + (mask_layers - 2) * (d * m.get("mlp_expansion_factor", 4)) ** 2
            + d * m.get("mlp_expansion_factor", 4) * 2 * n
            for n in dims_in
        ),
    }
    chunk_s = cfg.chunk_size / cfg.sample_rate
    chunks_per_s = cfg.num_overlap / chunk_s  # each sample is in num_overlap chunks
    total = 2 * sum(macs.values())
    return {
        **{f"gflop_chunk {k}": 2 * v / 1e9 for k, v in macs.items()},
        "gflop_chunk": total / 1e9,
        "gflop_per_audio_s": total * chunks_per_s / 1e9,
    }


def chunk_count(config_path: Path, seconds: float, *, skip_right_padding: bool = False) -> int:
    """Chunks MSST's inference runs for ``seconds`` of audio (edge padding included), or with
    ``skip_right_padding`` demixer's, which leaves out those starting in the right padding."""
    from demixer.models.msst.config import read_config

    cfg = read_config(config_path, arch="bs_roformer")
    n = round(seconds * cfg.sample_rate)
    border = cfg.chunk_size - cfg.step
    padded = n > 2 * border and border > 0
    end = n + border * padded * (1 if skip_right_padding else 2)
    return -(-end // cfg.step)


# The commit from which demixer does not run the chunks that start in the right padding.
SKIPS_PADDING_SINCE = "01ba1ee"


def skips_padding(speed_json: dict[str, Any]) -> bool:
    """Whether demixer skipped those chunks in this run: it was measured at a commit that
    holds :data:`SKIPS_PADDING_SINCE` (older runs, or an unknown commit: it did not)."""
    commit = str(speed_json.get("measured", "")).rpartition("commit ")[2]
    ancestor = ["git", "merge-base", "--is-ancestor", SKIPS_PADDING_SINCE, commit or "?"]
    return subprocess.run(ancestor, cwd=common.ROOT, capture_output=True).returncode == 0


# --- the comparison --------------------------------------------------------------------------


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    ref64 = ref.astype(np.float64)
    err = np.sum((ref64 - est.astype(np.float64)) ** 2)
    return float(10 * np.log10(np.sum(ref64**2) / max(err, 1e-30)))


def agreement(ref: dict[str, np.ndarray], est: dict[str, np.ndarray]) -> float:
    """The lowest SNR (dB) of ``est``'s stems against ``ref``'s."""
    return min(snr(ref[stem], est[stem]) for stem in ref)


def speed(args: argparse.Namespace) -> dict[str, Any]:
    wav = common.long_mix(args.seconds, "wav")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {s: [] for s in SYSTEMS} for m in args.models
    }
    with common.tempdir("msst") as tmp:
        for r in range(args.rounds):
            for name in args.models:
                config, checkpoint, arch = model_files(name)
                outs = {}
                for system in SYSTEMS:
                    common.wait_quiet(args.quiet_wait)
                    print(f"msst speed: round {r + 1}/{args.rounds} {name} {system}", flush=True)
                    out = Path(tmp) / f"{name}-{system}.npz"
                    res = launch(system, arch, config, checkpoint, wav, out)
                    res["round"] = r + 1
                    if "error" not in res:
                        outs[system] = dict(np.load(out))
                    print("   ", json.dumps(res), flush=True)
                    runs[name][system].append(res)
                for system in ("demixer", "demixer-fp32"):
                    if "msst" in outs and system in outs:
                        ref = outs["msst"]
                        runs[name][system][-1]["snr_db"] = agreement(ref, outs[system])
    return runs


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """model -> "system minutes min" -> the run's result (peak RSS among it)."""
    out: dict[str, Any] = {}
    for name in args.models:
        config, checkpoint, arch = model_files(name, shrink=True)
        out[name] = {}
        for minutes in args.minutes:
            wav = common.long_mix(minutes * 60, "wav")
            for system in ("demixer", "msst"):
                common.wait_quiet(args.quiet_wait)
                print(f"msst memory: {name} {minutes:g} min {system}", flush=True)
                res = launch(system, arch, config, checkpoint, wav, Path("none"))
                print("   ", json.dumps(res), flush=True)
                out[name][f"{system} {minutes:g} min"] = res
    return out


# --- RESULTS.md ------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# Each family the speed section can hold: its models, its name in the title, what it says of it.
_FAMILIES = (
    (
        frozenset(ROFORMERS),
        "the RoFormers",
        "the published configs of Kimberley Jensen's Mel-Band RoFormer vocals model and viperx's "
        "BS-RoFormer 1297 vocals model",
    ),
    (
        frozenset({"scnet"}),
        "SCNet",
        "MSST's config_musdb18_scnet (SCNet 4 stems: `chunk_size` 11 s, `num_overlap` 4, "
        "`batch_size` 8)",
    ),
    (
        frozenset({"mdx23c"}),
        "MDX23C",
        "MSST's config_vocals_mdx23c (MDX23C vocals + instrumental, the network of UVR's "
        "MDX23C-8KFFT-InstVoc_HQ: `chunk_size` 5.92 s, `num_overlap` 4, `batch_size` 1)",
    ),
)


def render(speed_runs: list[dict[str, Any]], memory_json: dict[str, Any] | None) -> str:
    """The RESULTS.md section: each speed run (longest input first), then memory."""
    kind = _KIND
    native = kind != common.NO_BF16
    measured = {m for run in speed_runs for m in run["runs"]}
    present = [(label, text) for names, label, text in _FAMILIES if names & measured]
    labels = [label for label, _ in present]
    title = "## MSST models: " + " and ".join(filter(None, [", ".join(labels[:-1]), labels[-1]]))
    title += common.KIND_TITLES[kind]
    # A run measures one input length into .cache; --render writes the section from them all.
    runs_then_render = (
        "the run named under each input below, then "
        "`.venv/bin/python benchmarks/msst_speed.py --render`"
    )
    out = [title, "", common.header("msst_speed.py", "msst", command=runs_then_render)]
    if kind == common.AVX512_BF16:
        out.append(
            "This CPU computes bf16 natively in AVX-512 (AVX512-BF16) but has no AMX tiles, as "
            "AMD's Zen 4: its bf16 matmuls run at a little over twice its fp32 rate, where the "
            "AMX Xeon's of the first section ran at 6x (see *FLOPs*). demixer's default "
            "precision is bf16 here too.\n"
        )
    if not native:
        out.append(
            "This CPU has no native bf16 (AVX2 only: emulated bf16 runs at about 1 % of fp32's "
            "rate, see *FLOPs*), so demixer's default precision here is fp32 and this section "
            "has no bf16 rows; the section above was measured on a CPU with native bf16.\n"
        )
    out.append(
        "demixer's MSST backend next to MSST's own inference (PyPI `msst` 0.1.0: "
        "`get_model_from_config`, `load_state_dict`, `demix`, fp32) on the same config and "
        "checkpoint: "
        + "; ".join(text for _, text in present)
        + "; at full size, with random weights "
        "(seeded; speed does not depend on the values). Each run is a fresh subprocess on 2 "
        "threads; the systems alternate within a round. *separation*: the separation call "
        "alone, model loaded; *speed-up*: MSST's time over demixer's, per round, median; "
        "*CPU s*: the CPU seconds (user + system) the separation used, and its speed-up, which "
        "depend less on other work than wall time does (where a run recorded them). "
        "*agreement*: SNR of demixer's stem against MSST's (dB). *other load*: the share of "
        "both cores other processes used during the run (the largest over the rounds); where "
        "it is high, absolute times are pessimistic, and the peers ran side by side under the "
        "same conditions. Where a song is padded (longer than twice `chunk - step`), demixer "
        "does not run the chunks that start in the right padding, which MSST runs although "
        "they only reach samples it cuts off (stems the same bit for bit): about `num_overlap "
        "- 1` per song, which weighs most on short inputs (*chunks* under each input).\n"
    )
    for speed_json in sorted(speed_runs, key=lambda run: -run["args"]["seconds"]):
        args = speed_json["args"]
        skips = skips_padding(speed_json)
        seconds = f"{args['seconds']:g} s"
        out.append(
            f"**{seconds} input** ({speed_json.get('measured', 'date not recorded')}): {seconds} "
            f"of the MUSDB18 excerpt's mix (stereo 44.1 kHz), "
            f"{args['rounds']} round(s). Reproduce: `.venv/bin/python benchmarks/msst_speed.py "
            f"--rounds {args['rounds']} --seconds {args['seconds']:g}"
            + ("" if args["models"] == ROFORMERS else f" --models {' '.join(args['models'])}")
            + "`."
            + (
                " Shorter than one chunk: every system runs one whole chunk (as for a song's "
                "edge), so *s per audio s* is one chunk's, not a long song's; the speed-ups "
                "compare the same chunk."
                if all(chunk_count(model_files(m)[0], args["seconds"]) == 1 for m in args["models"])
                else ""
            )
            + " *chunks* run, MSST and demixer: "
            + "; ".join(
                f"{MODELS[m][2]} {chunk_count(model_files(m)[0], args['seconds'])} and "
                f"{chunk_count(model_files(m)[0], args['seconds'], skip_right_padding=skips)} "
                f"(on a 3-minute song {chunk_count(model_files(m)[0], 180)} and "
                f"{chunk_count(model_files(m)[0], 180, skip_right_padding=True)})"
                for m in args["models"]
            )
            + ".\n"
        )
        head = ["model", "system", "separation s (each round)", "s per audio s", "speed-up",
                "CPU s", "speed-up (CPU)", "agreement dB", "prec.", "other load"]  # fmt: skip
        rows = []
        for model, systems in speed_json["runs"].items():
            ref = systems.get("msst", [])
            for system, runs in systems.items():
                ok = [r for r in runs if "error" not in r]
                if not ok:
                    rows.append([MODELS[model][2], SYSTEMS[system][0], "failed", *["–"] * 7])
                    continue
                times = [r["separate_s"] for r in ok]
                ratios = [
                    m["separate_s"] / r["separate_s"]
                    for m, r in zip(ref, runs, strict=False)
                    if "error" not in m and "error" not in r
                ]
                cpu = [r.get("separate_cpu_s") for r in ok]
                cpu_ratios = [
                    m["separate_cpu_s"] / r["separate_cpu_s"]
                    for m, r in zip(ref, runs, strict=False)
                    if "separate_cpu_s" in m and "separate_cpu_s" in r
                ]
                snrs = [r["snr_db"] for r in ok if "snr_db" in r]
                loads = [r["foreign_load"] for r in ok if r.get("foreign_load") is not None]
                rows.append([
                    MODELS[model][2], SYSTEMS[system][0],
                    ", ".join(f"{t:.0f}" for t in times),
                    common.fmt(_median(times) / args["seconds"]),
                    "–" if system == "msst" else f"{_median(ratios):.2f}x",
                    "–" if None in cpu else ", ".join(f"{t:.0f}" for t in cpu if t is not None),
                    "–" if system == "msst" or not cpu_ratios else f"{_median(cpu_ratios):.2f}x",
                    "–" if not snrs else common.fmt(_median(snrs), 1),
                    ok[0]["precision"],
                    "–" if not loads else f"{100 * max(loads):.0f} %",
                ])  # fmt: skip
        out += [f"### Speed, {seconds} input", "", common.table(head, rows)]
        if not speed_json["flops"]:  # counted for the RoFormers only
            continue
        gflops = speed_json["machine_gflops"]
        peak = {p: max(v for k, v in gflops.items() if k.startswith(p)) for p in ("fp32", "bf16")}
        out += [f"### FLOPs, {seconds} input", ""]
        out.append(
            "Counted per layer from the config, 2 FLOPs per multiply-add: the transformers' "
            "projections and feed-forward layers, attention (QK and AV), band split and mask "
            "estimators; norms, activations, STFTs and the masking are elementwise and left "
            "out. Per audio second: each sample is in `num_overlap` chunks. The machine's peak is "
            f"its measured matmul throughput on 2 threads: fp32 {peak['fp32']:.0f}, bf16 "
            f"{peak['bf16']:.0f} GFLOP/s"
            + (" (emulated)" if any("emulated" in k for k in gflops) else "")
            + ". *achieved*: FLOPs of the chunks run over the "
            "median separation time (the short input's edge chunks included).\n"
        )
        head = ["model", "GFLOP per chunk (parts)", "GFLOP per audio s", "system",
                "achieved GFLOP/s", "share of peak"]  # fmt: skip
        rows = []
        for model, flops in speed_json["flops"].items():
            parts = ", ".join(
                f"{k.removeprefix('gflop_chunk ')} {v:.0f}"
                for k, v in flops.items()
                if k.startswith("gflop_chunk ")
            )
            for system, runs in speed_json["runs"][model].items():
                ok = [r for r in runs if "error" not in r]
                if not ok:
                    continue
                skipped = skips and system != "msst"
                chunks = chunk_count(
                    model_files(model)[0], args["seconds"], skip_right_padding=skipped
                )
                achieved = flops["gflop_chunk"] * chunks / _median([r["separate_s"] for r in ok])
                rows.append([
                    MODELS[model][2], f"{flops['gflop_chunk']:.0f} ({parts})",
                    f"{flops['gflop_per_audio_s']:.0f}", SYSTEMS[system][0],
                    f"{achieved:.0f}", f"{100 * achieved / peak[ok[0]['precision']]:.0f} %",
                ])  # fmt: skip
        out.append(common.table(head, rows))
    cpu_ratios: dict[str, list[float]] = {}
    for speed_json in speed_runs:
        for systems in speed_json["runs"].values():
            for system, runs in systems.items():
                cpu_ratios.setdefault(system, []).extend(
                    m["separate_cpu_s"] / r["separate_cpu_s"]
                    for m, r in zip(systems.get("msst", []), runs, strict=False)
                    if system != "msst" and "separate_cpu_s" in m and "separate_cpu_s" in r
                )
    spans = [
        f"{SYSTEMS[system][0]} {min(v):.2f}-{max(v):.2f}x" for system, v in cpu_ratios.items() if v
    ]
    if spans:
        out.append(
            "In CPU time (the measure least moved by other work), over every run and model "
            f"that recorded it, MSST's time over demixer's: {'; '.join(spans)}.\n"
        )
    memory_text = render_memory(memory_json, ROFORMERS) if memory_json else ""
    if memory_text:
        out += ["### Memory", "", memory_text]
    return "\n".join(out)


def render_memory(memory_json: dict[str, Any], models: list[str]) -> str:
    """The memory table of ``models`` (those measured): per input length and system, the peak
    RSS. ``arch_speed.py`` renders MDX23C's and SCNet's in its section."""
    models = [m for m in models if m in memory_json["memory"]]
    if not models:
        return ""
    shrunk = "; ".join(
        f"{MODELS[m][2]}: " + ", ".join(f"`{k}: {v}`" for k, v in SHRINK[m].items()) for m in models
    )
    text = (
        f"Measured {'; '.join(memory_json['measured'])}. Peak RSS (`ru_maxrss`) of the whole "
        "subprocess, model load included, separating the excerpt's mix looped to each length "
        "(stereo 44.1 kHz float32 wav). MSST: the file read whole, then `demix` (as its "
        "`inference.py`); demixer: `Separator.separate_file`, file to stem files (what "
        "`demixer separate` and the workers run), at its default precision. Each network is "
        "**shrunk** (its published config with these `model` settings changed: "
        f"{shrunk}), so that MSST's 10 minutes finish in under half an hour on these 2 shared "
        "cores: what grows with the song is the audio arrays MSST holds whole (the padded "
        "mix, one sum and one count per stem, the stems), "
        "not the network, whose own share (weights, one batch of chunks) is the same at any "
        "length and larger at full size for both systems alike. *growth*: the peak minus the "
        "shortest input's; demixer's moves by a few tens of MB either way from run to run, "
        "not with the length. Only memory is reported: the separation times ran on a "
        "shared machine with shrunk networks and say nothing about speed. Reproduce: "
        f"`.venv/bin/python benchmarks/msst_speed.py --memory --models {' '.join(models)} "
        "--minutes 1 10`.\n"
    )
    rows = []
    for model in models:
        runs = memory_json["memory"][model]
        for system in ("msst", "demixer"):
            peaks = {
                key.split(" ", 1)[1]: r.get("peak_rss_mb")
                for key, r in runs.items()
                if key.split(" ", 1)[0] == system
            }
            lengths = sorted(peaks, key=lambda length: float(length.split(" ")[0]))
            for length in lengths:
                peak, first = peaks[length], peaks[lengths[0]]
                growth = "–"
                if length != lengths[0] and peak is not None and first is not None:
                    growth = f"{peak - first:+.0f} MB"
                rows.append([
                    MODELS[model][2], SYSTEMS[system][0].split(" (")[0], length,
                    "failed" if peak is None else f"{peak:.0f} MB", growth,
                ])  # fmt: skip
    head = ["model", "system", "input", "peak RSS", "growth"]
    return text + "\n" + common.table(head, rows)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run"]:
        system, arch, config, checkpoint, wav, out = argv[1:7]
        run_one(system, arch, Path(config), Path(checkpoint), Path(wav), Path(out))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument(
        "--models", nargs="*", choices=list(MODELS), help="default: the RoFormers; --memory: all"
    )
    ap.add_argument("--memory", action="store_true", help="measure peak memory instead")
    ap.add_argument("--minutes", nargs="*", type=float, default=[1.0, 10.0])
    ap.add_argument("--quiet-wait", type=float, default=30.0)
    ap.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from .cache")
    args = ap.parse_args(argv)
    if args.models is None:
        args.models = list(MODELS) if args.memory else ROFORMERS
    if args.render:
        common.write_section(
            common.kind_section("msst"),
            render(
                [json.loads(p.read_text()) for p in common.CACHE.glob(f"{SPEED_CACHE}-*.json")],
                _load(common.CACHE / "msst_memory.json") if _KIND == common.AMX else None,
            ),
        )
        return
    speed_file = f"{SPEED_CACHE}-{args.seconds:g}s.json"  # one per input length, all rendered
    results_file = common.CACHE / ("msst_memory.json" if args.memory else speed_file)
    common.CACHE.mkdir(exist_ok=True)
    if args.memory:  # merged into earlier runs' figures (runs per model or length add up)
        payload: dict[str, Any] = _load(results_file) or {"memory": {}}
        for name, runs in memory(args).items():
            payload["memory"].setdefault(name, {}).update(runs)
        run = f"{' '.join(args.models)}, {' '.join(f'{m:g}' for m in args.minutes)} min"
        payload["measured"] = [
            *payload.get("measured", []),
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {common.git_rev()}: "
            + run,
        ]
    else:
        from speed import machine_gflops

        runs = speed(args)
        flops = {m: roformer_flops(model_files(m)[0]) for m in args.models if m in ROFORMERS}
        payload = {
            "measured": f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit "
            f"{common.git_rev()}",
            "runs": runs,
            "flops": flops,
            "machine_gflops": machine_gflops(args.quiet_wait),
            "args": vars(args),
        }
    results_file.write_text(json.dumps(payload, indent=1))
    print(f"written to {results_file}")


if __name__ == "__main__":
    main()
