"""The container files agree with the Makefile (the image itself is tested by
``make test-image``, tests/image): the same torch pin, and a build context that holds every
file the Containerfile copies."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_image_pins_the_torch_make_install_pins() -> None:
    makefile = (REPO / "Makefile").read_text()
    containerfile = (REPO / "Containerfile").read_text()
    pinned = set(re.findall(r"\btorch==([0-9][\w.]*)", makefile))
    image = re.findall(r"^ARG TORCH_VERSION=(\S+)$", containerfile, re.MULTILINE)
    assert pinned == {"2.13.0"}
    assert image == ["2.13.0"]


def test_the_build_context_holds_what_the_containerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = re.findall(r"^COPY (.+) \S+$", (REPO / "Containerfile").read_text(), re.MULTILINE)
    sources = [source for line in copied for source in line.split()]
    assert sources, "the Containerfile copies nothing?"
    for source in sources:
        assert (REPO / source).exists(), source
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
