"""The benchmarks as a reader runs them (``benchmarks/``, figures in ``benchmarks/RESULTS.md``).

Only what takes a second or two: the benchmarks themselves take minutes.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/common.py, found through the path above)

# Every script a reader runs (RESULTS.md and README name them).
ENTRY_POINTS = (
    "run_all",
    "quality",
    "cascade_quality",
    "speed",
    "memory",
    "service",
    "overhead",
    "scale",
    "api_speed",
    "msst_speed",
    "arch_speed",
    "mdx_net",
    "recipes",
    "gpu_check",
    "soak",
    "page_memory",
    "quality_levels",
    "model_load",
    "bandit_speed",
    "apollo_speed",
    "vr_speed",
    "demucs_msst",
)


def test_every_benchmark_script_is_listed() -> None:
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"common"}
    assert scripts == set(ENTRY_POINTS)


@pytest.mark.parametrize("script", list(ENTRY_POINTS))
def test_benchmark_answers_help(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--help`` imports the script (demixer's names it uses, its own modules) and prints its
    options, without measuring anything or touching RESULTS.md."""
    path = ROOT / "benchmarks" / f"{script}.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(path), run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_results_say_make_bench_only_for_what_it_runs() -> None:
    """A section that tells the reader `make bench` reproduces it names a script run_all.py
    runs; the others say how they are run instead."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text("utf-8")
    claim = r"`make bench` \(everything\) or `\.venv/bin/python benchmarks/(\w+)\.py`"
    named = re.findall(claim, results)
    assert named and set(named) <= set(common.MAKE_BENCH)
    assert "not part of `make bench`" in common.header("msst_speed.py", "msst")
    assert "`make bench` (everything)" in common.header("quality.py")
