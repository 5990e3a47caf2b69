"""Shared fixtures for every test module.

``no_dns`` (autouse): the URL guard (``demixer.service.urlguard``) resolves host names with a
fake resolver, so no test ever sends a DNS query. Literal addresses resolve to themselves (as
they do without DNS), ``localhost`` to loopback, names registered in ``FAKE_DNS`` to their
addresses, and every other name fails to resolve (``UnresolvableHost``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from demixer.service import urlguard

#: name -> addresses the fake resolver answers (tests may add entries with monkeypatch).
FAKE_DNS: dict[str, list[str]] = {}


def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """``socket.getaddrinfo`` without DNS: literals, localhost and ``FAKE_DNS`` only."""
    name = str(host).lower().rstrip(".")
    if name in FAKE_DNS:
        answers = FAKE_DNS[name]
    elif name == "localhost":
        answers = ["127.0.0.1"]
    else:
        try:  # a numeric host (127.1, 2130706433, ::1): parsed locally, never sent to DNS
            return socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            raise socket.gaierror(
                socket.EAI_NONAME, f"{name}: not in the tests' fake DNS"
            ) from None
    out = []
    for address in answers:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 0), 0, 0) if ":" in address else (address, int(port or 0))
        out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    return out


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """Route the URL guard's lookups to :func:`fake_getaddrinfo`; yields ``FAKE_DNS``."""
    monkeypatch.setattr(urlguard, "getaddrinfo", fake_getaddrinfo)
    saved = dict(FAKE_DNS)
    yield FAKE_DNS
    FAKE_DNS.clear()
    FAKE_DNS.update(saved)
