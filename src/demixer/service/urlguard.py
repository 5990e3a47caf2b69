"""Where demixer may connect when it fetches a URL a user gave it (``audio_url``, webhooks).

An SSRF guard. A URL passes when it is http(s), has a host, and *every* address its host
resolves to is a public one: not loopback, private, link-local, site-local, multicast,
unspecified, reserved, shared (100.64/10), a cloud metadata address, nor one of those wrapped
in IPv6 (IPv4-mapped, 6to4, NAT64). The operator may allow hosts or addresses anyway with
``DEMIXER_URL_ALLOWLIST`` (comma-separated host names, addresses or networks).

Checking the URL is not enough on its own: DNS may answer a public address to the check and a
private one to the connection a moment later (DNS rebinding). So the connection itself goes
through :class:`GuardedTransport`, an httpx transport whose network backend resolves the host,
checks every address, and then connects to one of *those checked addresses* (never to the name
again). httpx still sends ``Host:`` and TLS SNI/certificate checks for the URL's host name,
because httpcore takes both from the request's origin, not from what the backend dialled. The
transport, not :func:`check_url`, is the security boundary; the URL check gives early errors.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from socket import getaddrinfo  # module attribute: tests swap in a fake resolver here
from typing import Any

import httpcore
import httpx

from demixer.errors import InvalidRequest
from demixer.naming import shown_url

__all__ = [
    "AUDIO_URLS_OFF",
    "METADATA_ADDRESSES",
    "WEBHOOKS_OFF",
    "GuardedBackend",
    "GuardedTransport",
    "IPAddress",
    "UnresolvableHost",
    "UrlRefused",
    "check_address",
    "check_url",
    "guarded_client",
    "parse_allowlist",
    "resolve",
    "time_limit",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services that a plain range test would miss (169.254.169.254 is link-local anyway).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean …
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "168.63.129.16",  # Azure wire server (a public address!)
        "100.100.100.200",  # Alibaba Cloud
    )
)
#: Why a request is refused where the operator turned the feature off (``TURNED_OFF``): in
#: words every protocol's users can act on, whatever its field is called.
AUDIO_URLS_OFF = (
    "this server fetches no audio from URLs (its operator turned DEMIXER_AUDIO_URLS off): "
    "upload the file itself"
)
WEBHOOKS_OFF = (
    "this server sends no webhooks or callbacks (its operator turned DEMIXER_WEBHOOKS off): "
    "leave the callback URL out and ask for the request's status instead"
)

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix embeds an IPv4 address


class UrlRefused(InvalidRequest):
    """A URL demixer will not connect to: not http(s), no host, or a forbidden address.

    The guard's own code, ``URL_REFUSED`` (HTTP 400). Each caller answers in the code its
    protocol documents: an ``audio_url`` is ``INVALID_AUDIO_URL`` (submit, and the worker's
    fetch), a webhook URL keeps ``URL_REFUSED``.
    """

    code = "URL_REFUSED"


class UnresolvableHost(UrlRefused):
    """The host name did not resolve (so its addresses could not be checked).

    A subclass of :class:`UrlRefused`, so the guard fails closed; callers that only want to
    refuse *forbidden* addresses early (submit) may let this one pass and rely on the check
    made again when connecting.
    """


def parse_allowlist(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"Media.Example.com, 10.0.0.5,10.1.0.0/16"`` -> normalised entries (lower case)."""
    items = value.split(",") if isinstance(value, str) else value
    out = []
    for item in items:
        entry = item.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
        if entry:
            out.append(entry)
    return tuple(out)


def _split(allowlist: Collection[str] | str) -> tuple[frozenset[str], list[_Network]]:
    names: set[str] = set()
    networks: list[_Network] = []
    for entry in parse_allowlist(allowlist):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry)
    return frozenset(names), networks


def _as_ip(value: str | IPAddress) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(value.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        raise UrlRefused(f"{value!r} is not an IP address") from None


def _forbidden(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be connected to (a noun phrase), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _forbidden(embedded)
            return f"{inner} (embedded in IPv6)" if inner else None
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])  # drop a zone id
        # Deprecated (RFC 3879) but still routed, e.g. QEMU's user network (host at fec0::2);
        # Python counts these as global.
        if ip.is_site_local:
            return "site-local address"
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    checks = (
        (ip.is_loopback, "loopback address"),
        (ip.is_unspecified, "unspecified address"),
        (ip.is_link_local, "link-local address"),
        (ip.is_multicast, "multicast address"),
        (ip in _SHARED, "shared (carrier-grade NAT) address"),
        (ip.is_private, "private address"),
        (ip.is_reserved, "reserved address"),
        (not ip.is_global, "non-public address"),
    )
    for hit, why in checks:
        if hit:
            return why
    return None


def check_address(
    ip: str | IPAddress, allowlist: Collection[str] | str = (), *, host: str | None = None
) -> None:
    """Raise :class:`UrlRefused` unless demixer may connect to ``ip``.

    Args:
        ip: the address (a string such as ``"::ffff:10.0.0.1"``, or an ``ipaddress`` object).
        allowlist: host names, addresses and networks allowed anyway (``parse_allowlist``).
        host: the URL's host name, which allows every address it resolves to when listed.
    """
    address = _as_ip(ip)
    names, networks = _split(allowlist)
    if host is not None and host.lower().rstrip(".") in names:
        return
    if any(address.version == net.version and address in net for net in networks):
        return
    why = _forbidden(address)
    if why is not None:
        shown = f"{host} ({address})" if host and host != str(address) else str(address)
        raise UrlRefused(
            f"{shown} is not a public address ({why}): demixer does not connect to it (an "
            "operator can allow it with DEMIXER_URL_ALLOWLIST)"
        )


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to (a literal address resolves to itself, no DNS).

    Raises:
        UnresolvableHost: the name does not resolve.
    """
    host = host.lower().rstrip(".")
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    # RFC 6761: "localhost" names are loopback and ".invalid" never resolves; no DNS for them.
    if host == "localhost" or host.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if host == "invalid" or host.endswith(".invalid"):
        raise UnresolvableHost(f"host {host!r} does not resolve")
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise UnresolvableHost(f"host {host!r} does not resolve: {exc}") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if ip not in found:
            found.append(ip)
    if not found:
        raise UnresolvableHost(f"host {host!r} resolves to no address")
    return found


def _checked(host: str, port: int, allowlist: Collection[str] | str) -> list[IPAddress]:
    addresses = resolve(host, port)
    for ip in addresses:  # every one: a name may answer a public and a private address
        check_address(ip, allowlist, host=host)
    return addresses


# A host name's label (letters, digits, '-' inside, '_'; IDNA-encoded), an IPv6 address's text.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")


def _resolvable(host: str) -> bool:
    """Whether ``host`` could ever resolve: an IPv6 address's text, or a name (an IPv4
    address's text among them) of 1-63 character labels, 253 characters at most."""
    if ":" in host:
        return bool(_IPV6.fullmatch(host))
    name = host.removesuffix(".")
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def check_url(url: str, allowlist: Collection[str] | str = ()) -> list[IPAddress]:
    """Check ``url`` and return the (checked) addresses its host resolves to.

    Only ``http`` and ``https`` URLs with a host pass, and only when every address the host
    resolves to passes :func:`check_address` (or the host name is allowlisted).

    Raises:
        UrlRefused: the URL may not be fetched (:class:`UnresolvableHost` when its host
            does not resolve).
    """
    shown = shown_url(url)
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UrlRefused(f"{shown!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused(
            f"{shown!r} is not an http or https URL (scheme {parsed.scheme or 'missing'!r})"
        )
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded, brackets stripped
    if not host:
        raise UrlRefused(f"{shown!r} has no host")
    if not _resolvable(host):  # a space, a %-escape, an empty label: no name server answers it
        raise UrlRefused(f"{shown!r} has no valid host name ({host[:100]!r})")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise UrlRefused(f"{shown!r} has port {port}, outside 1-65535")
    return _checked(host, port, allowlist)


_limit = threading.local()  # .at: the monotonic time this thread's request must end by


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Every read, write and handshake of a guarded connection made by this thread ends within
    ``seconds`` from now, all together (httpx's own timeouts bound each read alone: a peer
    sending one byte a second never trips them). Past the limit a read raises
    ``httpcore.ReadTimeout`` (httpx's ``ReadTimeout``)."""
    _limit.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _limit.at = None


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to what this thread's :func:`time_limit` leaves (raises ``error`` past
    it); ``timeout`` as it is outside one."""
    at: float | None = getattr(_limit, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request took longer than its time limit")
    return left if timeout is None else min(timeout, left)


class _LimitedStream(httpcore.NetworkStream):
    """A connection whose every operation keeps to the calling thread's :func:`time_limit`."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        limit = _left(timeout, httpcore.ConnectTimeout)
        return _LimitedStream(self.inner.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that connects only to addresses that passed the guard.

    ``connect_tcp`` resolves the host once, checks every address, and dials the checked
    addresses themselves (in order, until one answers), so a second DNS answer can never
    swap in another address between the check and the connection.
    """

    def __init__(
        self, allowlist: Collection[str] | str = (), inner: httpcore.NetworkBackend | None = None
    ) -> None:
        self.allowlist = parse_allowlist(allowlist)
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        for ip in _checked(host, port, self.allowlist):
            try:
                limit = _left(timeout, httpcore.ConnectTimeout)
                stream = self.inner.connect_tcp(str(ip), port, limit, local_address, socket_options)
                return _LimitedStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # _checked returns at least one address
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise UrlRefused("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


_tls = threading.local()  # .context: this thread's SSL context for guarded connections


def _ssl_context() -> ssl.SSLContext:
    """The TLS settings guarded connections use (httpx's: certificate checks against its CA
    bundle), made once per thread. Loading the bundle takes about 50 ms, and every
    ``audio_url`` fetch builds a transport (which loaded it twice). Per thread, not per
    process: httpcore sets the context's ALPN protocols as it opens each connection, and
    OpenSSL does not allow changing a context while another thread opens a connection with
    it (a worker's slots fetch at the same time, each from its own thread)."""
    context: ssl.SSLContext | None = getattr(_tls, "context", None)
    if context is None:
        context = _tls.context = httpx.create_ssl_context()
    return context


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections go through :class:`GuardedBackend`.

    No proxy support on purpose: a proxy would connect on our behalf to unchecked addresses.
    """

    def __init__(self, allowlist: Collection[str] | str = (), **kwargs: Any) -> None:
        context = _ssl_context()
        super().__init__(verify=context, **kwargs)  # its own pool, replaced below
        limits = httpx.Limits()
        # httpx builds its httpcore pool without a network-backend option; build the same pool
        # with ours (this is the only hook httpcore offers for where a connection goes).
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allowlist),
        )


def guarded_client(allowlist: Collection[str] | str, timeout: float) -> httpx.Client:
    """An httpx client that follows no redirects, ignores proxy variables and is guarded."""
    return httpx.Client(
        transport=GuardedTransport(allowlist),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
