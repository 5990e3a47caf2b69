"""What `pip install demixer` installs: every file of the package that is not Python source is
named by pyproject.toml's package-data, or a wheel or sdist built from this tree lacks it (the
web page's assets, the migrations' template, the model cards), and an installed demixer fails
where a checkout works. Checked without building (a build takes longer than the suite allows
for this); `make dist-check` builds both, installs the wheel outside the checkout and runs it."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "demixer"


def test_package_data_names_every_file_that_is_not_python() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = declared["tool"]["setuptools"]["package-data"]["demixer"]
    # As setuptools expands them: glob patterns relative to the package's folder.
    shipped = {name for pattern in patterns for name in glob.glob(pattern, root_dir=PACKAGE)}
    data = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert data, "no data files found: has the package moved?"
    assert sorted(data - shipped) == []


def test_the_minimums_make_dist_check_installs_are_the_bounds_pyproject_declares() -> None:
    """requirements/minimums.txt is what `make dist-check` proves works; a bound raised or
    lowered in pyproject.toml without it would be a claim nothing checks."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds: dict[str, Version] = {}
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "torch":  # pinned by the README's install, not by its bound
            continue
        lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line}: one lower bound (>=)"
        bounds[name] = lower[0]
    pins: dict[str, Version] = {}
    for line in (REPO / "requirements" / "minimums.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    assert pins == bounds
