"""Service settings: one object, built once at the entry point and passed down.

Every field can be set from the environment as ``DEMIXER_<FIELD>`` (e.g. ``DEMIXER_DATA_DIR``).
The defaults run embedded: SQLite and a storage directory inside the data directory, no other
server.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from platformdirs import user_data_dir
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from demixer.defaults import DEFAULT_MODEL
from demixer.errors import InvalidDataDir, UnknownQuality
from demixer.models.quality import DEFAULT_QUALITY, Quality, parse_quality

__all__ = [
    "ENV_FILE",
    "MIN_BODY_RATE",
    "Settings",
    "is_secret",
    "load_env_file",
    "parse_cors_origins",
    "parse_proxies",
    "unknown_variables",
]

#: Read into the environment by every ``demixer`` command (variables already set win).
ENV_FILE = ".env"

#: Bytes a second a body must average once it has taken longer than its time limit: an
#: upload's body past ``body_timeout_seconds`` (else 408), an ``audio_url``'s past
#: ``url_fetch_timeout_seconds`` (else the job fails). A peer trickling a byte just inside
#: the per-read timeout would hold its connection, or a worker slot, for days otherwise.
MIN_BODY_RATE = 1024

# DEMIXER_* names that are not Settings fields but are read elsewhere: the clients
# (DEMIXER_SERVER, DEMIXER_API_KEY), `models pull`, the precision override, and the compose
# files' own variables. DEMIXER_TEST_* belong to the test suite.
_OTHER_VARIABLES = frozenset(
    {
        "API_KEY",
        "SERVER",
        "MODEL_BASE_URL",
        "PRECISION",
        "API_REPLICAS",
        "API_PORTS",
        "WORKER_REPLICAS",
        "SLOTS",
        "S3_PORT",
        "S3_PUBLIC_URL",
        "IMAGE",
    }
)

GIB = 1 << 30
#: The longest a presigned S3 URL may work (SigV4's X-Amz-Expires: 7 days).
S3_MAX_URL_SECONDS = 7 * 24 * 3600
#: The fewest characters of DEMIXER_METRICS_TOKEN (128 bits of `openssl rand -hex 16`).
METRICS_TOKEN_MIN_LENGTH = 32
#: The size of the URL-signing key made in the data directory (HMAC-SHA256's block of 256 bits).
SIGNING_KEY_BYTES = 32
#: What ``DEMIXER_LOG_LEVEL`` takes (in any case).
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(BaseSettings):
    """Configuration of the API, the workers and storage."""

    model_config = SettingsConfigDict(env_prefix="DEMIXER_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(user_data_dir("demixer")))
    database_url: str | None = None  # default: sqlite:///<data_dir>/demixer.db
    storage_url: str | None = None  # default: file://<data_dir>/storage
    # How long a starting process waits for its database (started together with it).
    database_wait_seconds: float = Field(60.0, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = None  # base of signed URLs; default http://<host>:<port>
    workers: int = 1
    model_dir: Path | None = None
    device: str = "cpu"  # cpu, cuda, cuda:N, or auto (a CUDA GPU when torch sees one, else cpu)
    # Threads each separation child gives torch on the CPU (default: cores ÷ slots, all the
    # cores with one slot). Set it when several worker processes share one machine.
    threads: int | None = None
    default_model: str = DEFAULT_MODEL
    # Quality level of requests that name none: the vendor protocols' requests, and native ones
    # without `input.quality` (fast, balanced or best; see demixer.models.quality).
    quality: Quality = DEFAULT_QUALITY
    # The web page's local session (GET /v1/session hands a browser on this machine a key
    # without asking): only when turned on (`make run` and `serve --local-session` do), and
    # then only on loopback. Off, the page asks for an API key: a reverse proxy on the same
    # host could otherwise make every visitor look local.
    local_session: bool = False
    # Browser apps on other origins that may call the API (CORS): comma-separated exact
    # origins (https://app.example.com), or * for any. Empty (the default): none; the bundled
    # web page is served from the API's own origin and needs none.
    cors_origins: str = ""
    # The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (the client
    # address logged and given to the local session's loopback check): addresses or networks
    # (10.0.0.0/8), comma-separated, or * for any. Empty: none, when nothing proxies the API.
    forwarded_allow_ips: str = "127.0.0.1,::1"

    # Jobs and workers.
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(2.0, gt=0)
    # A worker that cannot reach object storage keeps its job (and lease) and retries reading
    # the input or writing the stems this long before giving the attempt back.
    storage_outage_seconds: float = Field(300.0, ge=0)
    poll_seconds: float = Field(0.5, gt=0)
    # The longest one attempt at a job runs, from its claim to its stored outputs; one whose
    # pace projects it well past this is ended as soon as that is measured (worker/lease.py).
    job_timeout_seconds: float = Field(3600.0, gt=0)
    # An attempt whose separation reports no progress (nor a new stage) for this long is hung:
    # ended JOB_TIMEOUT and retried. The child reports progress at each model window (some
    # models within one too), but nothing while it loads a model: keep this above the longest
    # load and the longest window.
    job_stall_seconds: float = Field(600.0, gt=0)
    max_attempts: int = Field(3, ge=1)

    # Limits checked before a job is queued, and again on the bytes and samples themselves.
    max_upload_bytes: int = Field(GIB, ge=1)
    # The most bytes of uploads (pending ones at their announced size) and of stems one
    # account may hold at once, so that no one key fills the disk within the retentions; 0:
    # no cap.
    max_account_storage_bytes: int = Field(20 * GIB, ge=0)
    max_duration_seconds: float = Field(20 * 60.0, gt=0)
    # Any request body but an upload (a JSON request is a few hundred bytes): 413 past it.
    max_json_body_bytes: int = Field(256 * 1024, ge=1024)
    # Seconds a request body may pause between two of its pieces before it is dropped (408),
    # the most a request's head (request line and headers) may take to arrive, and the most
    # a response may wait for its client to take any of it (server/protocol.py).
    body_timeout_seconds: float = Field(60.0, gt=0)
    # How long a connection may sit idle between a response and the next request before the
    # server closes it (uvicorn's default, 5 s). Behind a load balancer that keeps connections
    # to the server open (AWS ALB: 60 s idle), set it above the balancer's idle timeout, or the
    # balancer now and then sends a request on a connection the server is closing: a 502.
    keep_alive_seconds: float = Field(5.0, gt=0)
    # What `serve` and `worker` write to stderr: demixer's lines and uvicorn's (the access log
    # is INFO), this level and above.
    log_level: LogLevel = "INFO"
    # Each of those lines starts with its time (ISO 8601, UTC, milliseconds); off for a log
    # that stamps lines itself (journald).
    log_timestamps: bool = True

    # Signed URLs.
    upload_url_ttl_seconds: int = Field(3600, ge=1)
    # The Gaudio-compatible multipart upload: its `chunkSize` (Gaudio's documented default,
    # 1 GiB: a file up to Gaudio's 1 GB limit is one part) and how long its part URLs work
    # (24 h, as Gaudio documents).
    gaudio_chunk_bytes: int = Field(GIB, ge=1)
    gaudio_part_url_ttl_seconds: int = Field(24 * 3600, ge=1)
    download_url_ttl_seconds: int = Field(48 * 3600, ge=1)

    # Retention (like the vendors: uploads 72 h, results 48 h); the sweeper deletes after.
    upload_retention_seconds: int = Field(72 * 3600, ge=1)
    result_retention_seconds: int = Field(48 * 3600, ge=1)
    # A finished request's record (status, log, webhook deliveries with their secret and
    # payload) and a gone upload's row are deleted this long after, never before its result
    # or upload expired; 0 keeps them for good.
    record_retention_seconds: int = Field(30 * 24 * 3600, ge=0)
    sweep_interval_seconds: float = Field(300.0, gt=0)

    # Requests demixer makes on a user's behalf, each its operator's to turn off (a team whose
    # audio, and what is known of it, may not leave its network): fetching an `audio_url`
    # (every protocol's URL input), and sending webhooks (every protocol's callbacks). Off, a
    # request asking for one is refused TURNED_OFF (400) before anything is looked up.
    audio_urls: bool = True
    webhooks: bool = True
    # audio_url and webhook URLs: hosts or addresses allowed despite the private-address guard.
    url_allowlist: str = ""  # comma-separated
    url_fetch_timeout_seconds: float = Field(60.0, gt=0)

    # Webhooks.
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    # First retry step; steps grow 4x to 12 h (see demixer.service.delivery.backoff): ~a day.
    webhook_backoff_seconds: float = Field(60.0, ge=0)

    # Per-key limits (0: unlimited).
    rate_limit_per_minute: int = Field(600, ge=0)
    max_concurrent_jobs: int = Field(8, ge=0)
    # The highest request priority a key may ask for: the queue's order is the whole server's,
    # over every account, so a shared server sets 0 and no tenant jumps another's requests.
    max_priority: int = Field(100, ge=0, le=100)
    # Each API process counts requests in memory and adds them to the shared table this often;
    # other processes see them within twice this (service/accounts/ratecache.py states the
    # bound).
    rate_flush_seconds: float = Field(0.5, gt=0)
    # A key is trusted this long after its row was read: a key revoked by another process is
    # refused here at most this much later (0: read it on every request).
    key_cache_seconds: float = Field(2.0, ge=0)

    # GET /metrics (Prometheus): off (404) unless set; then it answers only
    # `Authorization: Bearer <this token>`, an operator's secret, never an API key.
    metrics_token: SecretStr | None = None

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        token = value.get_secret_value().strip() if value is not None else ""
        if not token:
            return None  # DEMIXER_METRICS_TOKEN= (empty): metrics stay off
        printable = token.isascii() and token.isprintable() and " " not in token
        if len(token) < METRICS_TOKEN_MIN_LENGTH or not printable:
            # A short token can be guessed by asking; a space or a non-ASCII character does
            # not survive an HTTP header and a Prometheus credentials file alike.
            raise ValueError(
                f"the metrics token must be at least {METRICS_TOKEN_MIN_LENGTH} printable ASCII "
                "characters without spaces (e.g. from `openssl rand -hex 32`)"
            )
        return SecretStr(token)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Absolute, so the SQLite and storage URLs built from it do not depend on the cwd.
        return value.expanduser().resolve()

    @field_validator("model_dir")
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        # "~/models" from a .env file reaches here unexpanded (as default_model_dir expands it).
        return value.expanduser() if value is not None else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        # "warning" as uvicorn's; a word that is no level stays as typed, so the error shows
        # what the user wrote ('loud', not 'LOUD').
        if isinstance(value, str) and value.upper() in get_args(LogLevel):
            return value.upper()
        return value

    @field_validator("quality", mode="before")
    @classmethod
    def _quality(cls, value: object) -> Quality:
        try:
            return parse_quality(str(value))
        except UnknownQuality as exc:
            raise ValueError(exc.message) from None

    @field_validator(
        "upload_url_ttl_seconds", "gaudio_part_url_ttl_seconds", "download_url_ttl_seconds"
    )
    @classmethod
    def _signable(cls, value: int, info: ValidationInfo) -> int:
        # S3 (and the stores that speak it: MinIO, R2, GCS) refuses a presigned URL asking for
        # more than 7 days: every URL would be handed out, then answer 400 at the bucket.
        if (info.data.get("storage_url") or "").startswith("s3://") and value > S3_MAX_URL_SECONDS:
            raise ValueError(
                f"S3 signs URLs for at most {S3_MAX_URL_SECONDS} s (7 days); the bucket refuses "
                "a longer one"
            )
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        return ",".join(parse_cors_origins(value))

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        # Every URL an answer holds starts with it: "stems.example.com" (no scheme) made
        # "stems.example.com/v1/blobs/...", which no client can follow.
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
            usable = usable and (parts.port or 0) >= 0  # raises for a port that is no number
        except ValueError:
            usable = False
        if not usable:
            raise ValueError(
                "write the address clients use, with its scheme: https://stems.example.com, "
                "or https://example.com/demixer under a path"
            )
        if parts.query or parts.fragment or parts.username is not None:
            raise ValueError("the URLs handed out are made from it: give no query, # or user")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips(cls, value: str) -> str:
        return ",".join(parse_proxies(value))

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if value < 0:
            raise ValueError("workers must be >= 0")
        return value

    @property
    def database(self) -> str:
        """The SQLAlchemy URL in force."""
        return self.database_url or f"sqlite:///{_in_url(self.data_dir / 'demixer.db')}"

    @property
    def storage(self) -> str:
        """The storage URL in force."""
        return self.storage_url or f"file://{_in_url(self.data_dir / 'storage')}"

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The origins browser apps may call the API from (``("*",)``: any; empty: none)."""
        return tuple(self.cors_origins.split(",")) if self.cors_origins else ()

    @property
    def base_url(self) -> str:
        """Where clients reach this server (for the URLs the API hands out)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def base_path(self) -> str:
        """The path of :attr:`base_url`: "" at a host's root, ``/demixer`` for a server that a
        reverse proxy serves under that path (``DEMIXER_PUBLIC_URL=https://example.com/demixer``).
        """
        return urlsplit(self.base_url).path

    def signing_key(self) -> bytes:
        """The HMAC key for signed URLs, created once in the data directory (mode 0600).

        Processes starting together on a new data directory (serve and workers) agree on one
        key: each writes its own temporary file and links it into place only if none exists.
        """
        path = self.data_dir / "signing.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".signing.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            with tmp.open("wb") as file:
                file.write(secrets.token_bytes(SIGNING_KEY_BYTES))
                # On disk before it is linked into place: a crash could leave the name with
                # no bytes behind it (an empty key).
                os.fsync(file.fileno())
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race: use its key
            finally:
                tmp.unlink(missing_ok=True)
        key = path.read_bytes()
        if len(key) < SIGNING_KEY_BYTES:
            # An empty (or cut) key signs URLs anyone can make: every blob, any expiry.
            raise InvalidDataDir(
                f"the URL-signing key {path} holds {len(key)} bytes, not "
                f"{SIGNING_KEY_BYTES}: it is damaged; delete it and a new one is made (URLs "
                "handed out before stop working)"
            )
        return key


def is_secret(name: str) -> bool:
    """Whether setting ``name`` holds a secret (never shown, even when it is refused)."""
    field = Settings.model_fields.get(name)
    return field is not None and field.annotation in (SecretStr, SecretStr | None)


def load_env_file(path: str | os.PathLike[str] = ENV_FILE) -> Path | None:
    """Read ``path`` (``KEY=value`` lines, as docker compose and systemd read them) into the
    environment, leaving variables already set alone; the file read, or None when there is
    none. Every variable counts, not only DEMIXER_* ones: boto reads AWS_* from there too."""
    from dotenv import load_dotenv

    file = Path(path)
    if not file.is_file():
        return None
    load_dotenv(file, override=False)
    return file


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``DEMIXER_*`` variable that no part of demixer reads (a typo such as
    DEMIXER_STORAGE_ULR would otherwise leave the default in force without a word), naming
    the setting it most likely meant."""
    import difflib

    env = os.environ if environ is None else environ
    known = {name.upper() for name in Settings.model_fields} | _OTHER_VARIABLES
    warnings = []
    for name in sorted(env):
        if not name.startswith("DEMIXER_") or name.startswith("DEMIXER_TEST_"):
            continue
        if (short := name.removeprefix("DEMIXER_")) in known:
            continue
        close = difflib.get_close_matches(short, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean DEMIXER_{close[0]}?" if close else ""
        warnings.append(f"{name} is not a demixer setting and is ignored{hint}")
    return warnings


def parse_proxies(value: str) -> list[str]:
    """``DEMIXER_FORWARDED_ALLOW_IPS`` as a list of addresses and networks, or ``["*"]``.

    uvicorn takes any other word as a name to compare the peer's address with, which never
    matches: a mistyped address (``10.0.0.300``) trusted no proxy, and every visitor was logged
    as the proxy's address. Each one is refused here (ValueError) instead.
    """
    proxies = [part.strip() for part in value.split(",") if part.strip()]
    if "*" in proxies:
        if len(proxies) > 1:
            raise ValueError("* trusts every address: give it alone, or list addresses")
        return proxies
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(
                f"{proxy!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)"
            ) from None
    return proxies


def parse_cors_origins(value: str) -> list[str]:
    """``DEMIXER_CORS_ORIGINS`` as a list of origins, each exactly as a browser sends it in its
    ``Origin`` header (scheme, host, a port only when not the default), or ``["*"]``.

    A browser's ``Origin`` is compared as a string: ``https://app.example.com/`` (a path),
    ``https://App.example.com`` or ``https://app.example.com:443`` would never match, and the
    app would fail with no word why. Each is refused here (ValueError) naming what to write.
    ``null`` (sandboxed frames, ``file://`` pages: any page can be one) is refused too.
    """
    origins = [part.strip() for part in value.split(",") if part.strip()]
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("* allows every origin: give it alone, or list origins without it")
        return origins
    return [_origin(origin) for origin in origins]


def _origin(text: str) -> str:
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:  # an unclosed [ or a port that is not a number
        host = port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValueError(
            f"{text!r} is not an origin: write the scheme and host a browser shows, e.g. "
            "https://app.example.com or http://localhost:3000"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} is not an origin: it has a user name")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[parts.scheme]:
        netloc += f":{port}"
    origin = f"{parts.scheme}://{netloc}"
    if text != origin:  # a path, query, upper case or default port: never what a browser sends
        raise ValueError(f"{text!r} is not an origin as browsers send it: write {origin}")
    return origin


def _in_url(path: Path) -> str:
    """``path`` as the path of a URL: a data directory called ``C# songs`` or ``take?``
    put the database (at ``?``) and the store's files (at ``#``) beside it, in ``C`` or
    ``take``, as a URL's query and fragment start there. Only what ends a URL's path is
    escaped (and ``%``, which starts an escape): ``/srv/démixer`` stays readable in
    messages."""
    return str(path).replace("%", "%25").replace("#", "%23").replace("?", "%3F")
