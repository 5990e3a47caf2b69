"""podman for the image test, set up the way these machines need it, with no image registry.

- ``runc`` as the runtime and no default ulimits (the VM refuses podman's default
  ``RLIMIT_NPROC``): a ``containers.conf`` of our own, named by ``CONTAINERS_CONF`` for every
  podman call made here (nothing in /etc is changed).
- The base image is Debian bookworm made by ``debootstrap --variant=minbase`` from the mirror
  this machine's apt uses, imported with ``podman import`` (the same packages as
  ``debian:bookworm-slim``, which the Containerfile defaults to).
- pip inside the build uses the host's index settings (``pip config list``): they go in as a
  ``pipconf`` build secret, the CA bundle pip trusts as a ``cacert`` secret, and local wheel
  directories or ``file://`` indexes are bind-mounted read-only for the build only. None of it
  is written into the image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BASE_IMAGE", "Podman", "debian_mirror", "pip_build_options"]

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/demixer-test-base:bookworm"
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
runtime = "runc"
"""
# pip settings carried from the host into the build (the rest, e.g. `cert`, are handled apart).
_PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "constraint", "timeout")


@dataclass
class Podman:
    """``podman`` with this test's configuration; ``work`` holds its files."""

    work: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if shutil.which("podman") is None:
            raise AssertionError("podman is not installed (make test-image installs it)")
        conf = self.work / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def build(self, *args: str, log: Path, timeout: float = 1800) -> None:
        """``podman build`` (Docker image format: OCI images drop HEALTHCHECK), logged."""
        with log.open("w") as out:
            done = subprocess.run(
                ["podman", "build", "--format", "docker", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if done.returncode != 0:
            raise AssertionError(f"podman build failed:\n{log.read_text()[-6000:]}")

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def base_image(self) -> str:
        """:data:`BASE_IMAGE`, made once per machine (kept in podman's store afterwards)."""
        if self.image_exists(BASE_IMAGE):
            return BASE_IMAGE
        rootfs = self.work / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
            check=True,
            capture_output=True,
            timeout=1800,
        )
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        done = subprocess.run(
            ["podman", "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            env=self.env,
            capture_output=True,
            timeout=600,
        )
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        assert done.returncode == 0 and tar.returncode == 0, done.stderr
        return BASE_IMAGE


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses for bookworm (deb822 or one-line sources)."""
    sources = Path("/etc/apt")
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE))
            suites = fields.get("Suites", "").split()
            if "bookworm" in suites and "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0]
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2] == "bookworm":
                    return parts[1]
    return "http://deb.debian.org/debian"


def _pip_settings() -> dict[str, str]:
    """The host's effective pip settings (files, then ``PIP_*`` variables over them)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in listed.splitlines():
        match = re.match(r"^([^.]*)\.([\w-]+)='(.*)'$", line)
        if match:
            where, key, value = match.groups()
            (env if where == ":env:" else found)[key] = value
    settings = {**found, **env}
    if "default-timeout" in settings:
        settings.setdefault("timeout", settings["default-timeout"])
    return settings


def _local_path(value: str) -> Path | None:
    path = Path(value[len("file://") :] if value.startswith("file://") else value)
    return path if path.is_absolute() and path.exists() else None


def pip_build_options(work: Path) -> list[str]:
    """``podman build`` options that give pip in the build the host's index settings."""
    settings = _pip_settings()
    lines = ["[global]"]
    options: list[str] = []
    mounted: set[Path] = set()
    for key in _PIP_KEYS:
        if key not in settings:
            continue
        lines.append(f"{key} = {settings[key]}")
        for value in settings[key].split():
            path = _local_path(value)
            if path is not None and key.endswith("index-url"):
                path = path.parent  # a local index links to files beside it (../../files/…)
            if path is not None and path not in mounted:
                mounted.add(path)
                options += ["--volume", f"{path}:{path}:ro"]
    conf = work / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    options += ["--secret", f"id=pipconf,src={conf}"]
    cert = settings.get("cert") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(cert).is_file():
        options += ["--secret", f"id=cacert,src={cert}"]
    return options
