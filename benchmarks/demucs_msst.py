"""Speed and memory of MSST's Demucs models (``--arch htdemucs``) in demixer and in MSST.

Model: MSST's published HTDemucs vocals config (``tests/data/msst/config_vocals_htdemucs.yaml``:
11-s chunks, ``num_overlap`` 2, ``batch_size`` 8) at full size, with random weights (MSST's own
``get_model_from_config`` builds the network, every weight perturbed, seeded; saved once to
``.cache/msst``). The systems run as in ``msst_speed.py`` (its subprocess runner), each in a
fresh subprocess of the project venv on 2 threads, alternating per round:

- **MSST** (PyPI ``msst`` 0.1.0): ``get_model_from_config``, ``load_state_dict`` and ``demix``
  in its "demucs" mode (what its ``inference.py`` runs for this model type), fp32;
- **demixer**: ``Separator`` of ``demixer.models.msst.user.open_files`` on the same files, at
  its default precision (fp32 for this model type).

Reported: the separation call alone (model loaded) per audio second, the speed-up in wall and
CPU time, and the agreement of demixer's stems with MSST's (SNR, dB). With ``--memory``: the peak
RSS of each whole subprocess on 1- and 10-minute songs (MSST reads the file whole and runs
``demix``; demixer runs ``Separator.separate_file``), the network shrunk (:data:`SHRINK`) so
that MSST's 10 minutes finish on 2 shared cores.

    .venv/bin/python benchmarks/demucs_msst.py [--rounds 2] [--seconds 30]
    .venv/bin/python benchmarks/demucs_msst.py --memory [--minutes 1 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml  # type: ignore[import-untyped]

import common
import msst_speed

CONFIG = common.ROOT / "tests" / "data" / "msst" / "config_vocals_htdemucs.yaml"
LABEL = "MSST HTDemucs vocals (config_vocals_htdemucs)"
#: the memory runs' network: the published config with these ``htdemucs:`` settings
SHRINK = {"channels": 8, "bottom_channels": 64, "t_layers": 1}
SYSTEMS = {"msst": "MSST 0.1.0 `demix` (fp32)", "demixer": "demixer (default precision)"}
SECTION = "demucs-msst"


def model_files(*, shrink: bool = False) -> tuple[Path, Path]:
    """(config, checkpoint), made once (see the module docstring)."""
    from omegaconf import OmegaConf

    tag = "htdemucs-vocals" + ("-shrunk" if shrink else "")
    config_path = msst_speed.MSST_DIR / f"{tag}.yaml"
    checkpoint = msst_speed.MSST_DIR / f"{tag}.ckpt"
    if config_path.is_file() and checkpoint.is_file():
        return config_path, checkpoint
    msst_speed.MSST_DIR.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(OmegaConf.load(CONFIG))  # as MSST reads it (1e-3: a float)
    assert isinstance(config, dict)
    if shrink:
        config["htdemucs"].update(SHRINK)
    config_path.write_text(yaml.dump(config))
    msst_speed.build_checkpoint("htdemucs", config_path, checkpoint)
    return config_path, checkpoint


def speed(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    config, checkpoint = model_files()
    wav = common.long_mix(args.seconds, "wav")
    runs: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
    with common.tempdir("demucs-msst") as tmp:
        for r in range(args.rounds):
            outs = {}
            for system in SYSTEMS:
                common.wait_quiet(args.quiet_wait)
                print(f"demucs msst: round {r + 1}/{args.rounds} {system}", flush=True)
                out = Path(tmp) / f"{system}.npz"
                res = msst_speed.launch(system, "htdemucs", config, checkpoint, wav, out)
                if "error" not in res:
                    outs[system] = dict(np.load(out))
                print("   ", json.dumps(res), flush=True)
                runs[system].append(res)
            if len(outs) == 2:
                runs["demixer"][-1]["snr_db"] = msst_speed.agreement(outs["msst"], outs["demixer"])
    return runs


def memory(args: argparse.Namespace) -> list[list[Any]]:
    """[system, minutes, run] for each length and system."""
    config, checkpoint = model_files(shrink=True)
    rows = []
    for minutes in args.minutes:
        wav = common.long_mix(minutes * 60, "wav")
        for system in SYSTEMS:
            common.wait_quiet(args.quiet_wait)
            print(f"demucs msst memory: {minutes:g} min {system}", flush=True)
            res = msst_speed.launch(system, "htdemucs", config, checkpoint, wav, Path("none"))
            print("   ", json.dumps(res), flush=True)
            rows.append([system, minutes, res])
    return rows


def render(payload: dict[str, Any]) -> str:
    out = [
        f"## MSST's Demucs models (`--arch htdemucs`){common.KIND_TITLES[common.cpu_kind()]}",
        "",
        common.header(
            "demucs_msst.py",
            "msst",
            command="`.venv/bin/python benchmarks/demucs_msst.py` and `... --memory`",
        ),
        "demixer's MSST backend on an MSST-trained HTDemucs next to MSST's own inference "
        f"(PyPI `msst` 0.1.0), on the same config and checkpoint: {LABEL}, 11-s chunks, "
        "`num_overlap` 2, at full size with random weights (seeded). The network is demucs' "
        "own class in both (MSST's copy of it equals demucs' for this config), so the "
        'difference is the inference around it: MSST\'s `demix` in its "demucs" mode over the '
        "whole song, demixer's streamed one. Each run is a fresh subprocess on 2 threads, the "
        "systems alternating within a round; *separation*: the separation call alone, model "
        "loaded; *speed-up*: MSST's time over demixer's, per round, median; *CPU*: the same in "
        "CPU seconds (user + system); *agreement*: SNR of demixer's stems against MSST's; "
        "*other load*: the share of both cores other processes used (the largest).\n",
    ]
    speed_json = payload.get("speed")
    if speed_json:
        args, runs = speed_json["args"], speed_json["runs"]
        out.append(
            f"**Speed** ({speed_json['measured']}): {args['seconds']:g} s of the MUSDB18 "
            f"excerpt's mix looped (stereo 44.1 kHz), {args['rounds']} round(s). Reproduce: "
            f"`.venv/bin/python benchmarks/demucs_msst.py --rounds {args['rounds']} --seconds "
            f"{args['seconds']:g}`.\n"
        )
        head = ["system", "separation s (each round)", "s per audio s", "speed-up",
                "speed-up (CPU)", "agreement dB", "prec.", "other load"]  # fmt: skip
        rows = []
        reference = runs["msst"]
        for system, label in SYSTEMS.items():
            ok = [r for r in runs[system] if "error" not in r]
            if not ok:
                rows.append([label, "failed", *["–"] * 6])
                continue
            pairs = [
                (m, r)
                for m, r in zip(reference, runs[system], strict=False)
                if "error" not in m and "error" not in r
            ]
            wall = statistics.median(m["separate_s"] / r["separate_s"] for m, r in pairs)
            cpu = statistics.median(m["separate_cpu_s"] / r["separate_cpu_s"] for m, r in pairs)
            snrs = [r["snr_db"] for r in ok if "snr_db" in r]
            loads = [r["foreign_load"] for r in ok if r.get("foreign_load") is not None]
            times = [r["separate_s"] for r in ok]
            rows.append([
                label, ", ".join(f"{t:.1f}" for t in times),
                common.fmt(statistics.median(times) / args["seconds"]),
                "–" if system == "msst" else f"{wall:.2f}x",
                "–" if system == "msst" else f"{cpu:.2f}x",
                "–" if not snrs else common.fmt(statistics.median(snrs), 1),
                ok[0]["precision"], "–" if not loads else f"{100 * max(loads):.0f} %",
            ])  # fmt: skip
        out += [common.table(head, rows), ""]
    memory_json = payload.get("memory")
    if memory_json:
        shrunk = ", ".join(f"`{k}: {v}`" for k, v in SHRINK.items())
        out.append(
            f"**Memory** ({memory_json['measured']}): peak RSS (`ru_maxrss`) of the whole "
            "subprocess, model load included, separating the excerpt's mix looped to each "
            "length (stereo 44.1 kHz float32 wav). MSST: the file read whole, then `demix`; "
            "demixer: `Separator.separate_file`, file to stem files (what `demixer separate` "
            f"and the workers run). The network is shrunk ({shrunk}) so that MSST's 10 minutes "
            "finish on 2 shared cores: what grows with the song is the audio MSST holds whole, "
            "not the network. *growth*: the peak minus the shortest song's. Reproduce: "
            "`.venv/bin/python benchmarks/demucs_msst.py --memory --minutes "
            f"{' '.join(f'{m:g}' for m in memory_json['minutes'])}`.\n"
        )
        records = [
            (SYSTEMS[s].split(" (")[0], m, None if "error" in r else {**r, "seconds": r["wall_s"]})
            for s, m, r in memory_json["rows"]
        ]
        labels = [label.split(" (")[0] for label in SYSTEMS.values()]
        head = ["system", "song", "peak RSS", "growth", "wall s"]
        out.append(common.table(head, common.growth_rows(records, labels, with_time=True)))
        lengths = sorted({m for _, m, _ in records})
        if len(lengths) > 2:  # the first minutes settle buffers and the allocator: the rest
            a, b = lengths[-2], lengths[-1]
            peaks = {(s, m): r["peak_rss_mb"] for s, m, r in records if r is not None}
            steps = [
                f"{label} {peaks[label, b] - peaks[label, a]:+.0f} MB"
                for label in labels
                if (label, a) in peaks and (label, b) in peaks
            ]
            out.append(f"\nFrom {a:g} to {b:g} minutes: {', '.join(steps)}.")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--memory", action="store_true", help="measure peak memory instead")
    ap.add_argument("--minutes", nargs="*", type=float, default=[1.0, 10.0])
    ap.add_argument("--quiet-wait", type=float, default=30.0)
    args = ap.parse_args()
    cache = common.CACHE / f"{common.kind_section(SECTION)}.json"
    payload: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    measured = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {common.git_rev()}"
    if args.memory:
        payload["memory"] = {"measured": measured, "minutes": args.minutes, "rows": memory(args)}
    else:
        payload["speed"] = {"measured": measured, "args": vars(args), "runs": speed(args)}
    common.CACHE.mkdir(exist_ok=True)
    cache.write_text(json.dumps(payload, indent=1))
    common.write_section(common.kind_section(SECTION), render(payload))
    print(f"wrote {common.RESULTS} ({common.kind_section(SECTION)})")


if __name__ == "__main__":
    main()
