"""The benchmarks as a reader runs them (``benchmarks/``, figures in ``benchmarks/RESULTS.md``).

Only what takes a second or two: the benchmarks themselves take minutes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from demixer.service.db import Database
from demixer.service.migrate import migrate
from demixer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/common.py, found through the path above)

# Every script a reader runs (RESULTS.md and README name them), and whether it needs psutil
# (the dev extra has it; a venv installed before it was added skips those).
ENTRY_POINTS = {
    "run_all": False,
    "quality": False,
    "cascade_quality": False,
    "speed": False,
    "memory": True,
    "service": True,
    "scale": True,
    "api_speed": True,
    "msst_speed": False,
    "arch_speed": False,
    "mdx_net": False,
    "recipes": False,
    "gpu_check": False,
}


def test_every_benchmark_script_is_listed() -> None:
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"common"}
    assert scripts == set(ENTRY_POINTS)


@pytest.mark.parametrize("script", list(ENTRY_POINTS))
def test_benchmark_answers_help(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--help`` imports the script (demixer's names it uses, its own modules) and prints its
    options, without measuring anything or touching RESULTS.md."""
    if ENTRY_POINTS[script] and importlib.util.find_spec("psutil") is None:
        pytest.skip("psutil is not installed (`make install` adds it: the dev extra)")
    path = ROOT / "benchmarks" / f"{script}.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(path), run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


# api_speed.py's BASELINE, the commit its *before* server runs, read from its text (importing it
# needs psutil, which a venv installed before the dev extra had it lacks).
_API_SPEED = (ROOT / "benchmarks" / "api_speed.py").read_text("utf-8")
_baseline = re.search(r'^BASELINE = "(\w+)"', _API_SPEED, re.M)
assert _baseline is not None
API_BASELINE = _baseline[1]


def test_api_speed_baseline_starts_on_a_database_this_tree_made(tmp_path: Path) -> None:
    """api_speed.py runs its *before* server (an older commit's src) on the database this tree
    migrated: the old ``demixer migrate`` must accept it, or that server exits at start and the
    whole benchmark with it ("Can't locate revision identified by '0005'")."""
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{API_BASELINE}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if known.returncode != 0:
        pytest.skip(f"this clone does not have commit {API_BASELINE}")
    data = tmp_path / "data"
    migrate(Database(Settings(data_dir=data).database))
    src = common.baseline_src(API_BASELINE, cache=tmp_path / "cache")
    env = {**os.environ, "PYTHONPATH": str(src)}
    old = subprocess.run(
        [sys.executable, "-m", "demixer", "migrate", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert old.returncode == 0, old.stderr[-600:]


def test_results_say_make_bench_only_for_what_it_runs() -> None:
    """A section that tells the reader `make bench` reproduces it names a script run_all.py
    runs; the others say how they are run instead."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text("utf-8")
    claim = r"`make bench` \(everything\) or `\.venv/bin/python benchmarks/(\w+)\.py`"
    named = re.findall(claim, results)
    assert named and set(named) <= set(common.MAKE_BENCH)
    assert "not part of `make bench`" in common.header("msst_speed.py", "msst")
    assert "`make bench` (everything)" in common.header("quality.py")
