"""What an operator reads in the log of `demixer serve` and `demixer worker` (stderr): each of
demixer's lines with its level, INFO included, and a failure the caller was answered with the
request id the caller saw."""

from __future__ import annotations

import io
import logging
import logging.config
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from api_support import Api, make_api  # noqa: F401 (a fixture)
from demixer.api import access_log
from demixer.api.access_log import log_config
from demixer.cli_service import http_config
from demixer.errors import StorageUnavailable
from demixer.service.worker.lease import Lease
from demixer.settings import Settings
from service_harness import free_port
from worker_support import wait_until


@pytest.fixture
def logged_at() -> Iterator[Callable[[str], io.StringIO]]:
    """Set this process's logging up as `demixer serve` and `demixer worker` do at a level
    (:func:`log_config`), writing into the buffer returned instead of stderr; undone after
    (the loggers' handlers, levels and propagation, which the other tests rely on); each line
    without its time unless ``timestamps`` (``DEMIXER_LOG_TIMESTAMPS``) says."""
    names = ["", "demixer", "uvicorn", "uvicorn.error", "uvicorn.access", "python_multipart"]
    saved = [(logging.getLogger(n), logging.getLogger(n).__dict__.copy()) for n in names]

    def configure(level: str, timestamps: bool | str = False) -> io.StringIO:
        # Without the time by default: the tests compare whole lines.
        settings = Settings(log_level=level, log_timestamps=timestamps)
        config = log_config(settings.log_level, timestamps=settings.log_timestamps)
        stderr = io.StringIO()
        for handler in config["handlers"].values():
            handler["stream"] = stderr
        logging.config.dictConfig(config)
        return stderr

    yield configure
    for logger, state in saved:
        logger.__dict__.clear()
        logger.__dict__.update(state)


@pytest.fixture
def server_log(logged_at: Callable[[str], io.StringIO]) -> io.StringIO:
    """The log at the default level (INFO)."""
    return logged_at("INFO")


def test_demixer_lines_reach_stderr_at_info_with_their_level(server_log: io.StringIO) -> None:
    # Without a handler of their own, demixer's records went to Python's last resort: WARNING
    # and above as the bare message (no level), INFO (a job started or completed, a webhook's
    # outcome, a worker registered) never written at all.
    logging.getLogger("demixer.worker").info("w1: job req_1 attempt 1 started")
    logging.getLogger("demixer.webhooks").warning("dispatch-1: the database is unavailable")
    assert server_log.getvalue().splitlines() == [
        "INFO:     w1: job req_1 attempt 1 started",
        "WARNING:  dispatch-1: the database is unavailable",
    ]


def test_each_line_starts_with_the_utc_time_it_was_written(
    logged_at: Callable[[str, bool | str], io.StringIO],
) -> None:
    # `docker logs` and a log file keep no time of their own: an operator could not tell when
    # a job failed. demixer's lines, the access log's and other libraries' all carry it.
    log = logged_at("INFO", Settings.model_fields["log_timestamps"].default)  # the default
    logging.getLogger("demixer.worker").error("w1: job req_1: the separation failed")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/models", "1.1", 200
    )
    logging.getLogger("botocore.credentials").warning("Refreshing temporary credentials failed")
    now = datetime.now(UTC)
    lines = log.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "ERROR:    w1: job req_1: the separation failed",
        'INFO:     127.0.0.1:5 - "GET /v1/models HTTP/1.1" 200 OK',
        "WARNING:  Refreshing temporary credentials failed",
    ]
    for line in lines:
        stamp = line.split(" ", 1)[0]
        assert len(stamp) == len("2026-12-05T23:27:00.123Z") and stamp.endswith("Z"), line
        assert now - timedelta(seconds=1) <= datetime.fromisoformat(stamp) <= now, line


def test_log_timestamps_false_leaves_the_time_to_journald(
    logged_at: Callable[[str, bool | str], io.StringIO],
) -> None:
    log = logged_at("INFO", "false")  # as DEMIXER_LOG_TIMESTAMPS=false reads
    logging.getLogger("demixer.worker").info("w1: job req_1 attempt 1 started")
    assert log.getvalue().splitlines() == ["INFO:     w1: job req_1 attempt 1 started"]


def storage_down(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Object storage refuses every write, as during an outage."""

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("object storage is unavailable; retry shortly")

    monkeypatch.setattr(api.services.storage, "put", unreachable)
    monkeypatch.setattr(api.services.storage, "put_file", unreachable)


def test_a_5xx_is_logged_with_the_request_id_its_caller_was_answered(
    make_api: Callable[..., Api],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The error body names a request_id for the caller to quote; the log line said only
    # "POST /v1/files failed: STORAGE_UNAVAILABLE", so the complaint matched no line.
    api = make_api()
    storage_down(api, monkeypatch)
    song = api.files.get("stereo.wav").path.read_bytes()
    r = api.post("/v1/files", files={"file": ("a.wav", song, "audio/wav")})
    assert r.status_code == 503, r.text
    rid = r.json()["error"]["request_id"]
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors == [
        f"POST /v1/files failed: STORAGE_UNAVAILABLE: object storage is unavailable; retry "
        f"shortly (request {rid})"
    ]


def test_each_record_is_one_line_of_the_log(server_log: io.StringIO) -> None:
    # psycopg's message has its hint on a second line: "WARNING:  ... Connection refused" and
    # then "\tIs the server running ...", a line with no level that `grep WARNING` missed.
    refused = (
        'connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    log = logging.getLogger("demixer.limits")
    log.warning("adding request counts to the shared table failed (%s); kept", refused)
    log.info("a name with \x1b[31mcolour\x1b[0m and\r\nINFO:     a forged line")
    assert server_log.getvalue().splitlines() == [
        "WARNING:  adding request counts to the shared table failed (connection to server at "
        '"127.0.0.1", port 5432 failed: Connection refused Is the server running on that host '
        "and accepting TCP/IP connections?); kept",
        "INFO:     a name with \\x1b[31mcolour\\x1b[0m and INFO:     a forged line",
    ]


def test_other_libraries_warnings_have_a_level_but_not_a_malformed_uploads(
    server_log: io.StringIO,
) -> None:
    # They went to Python's last resort as bare lines; python-multipart's came once per
    # malformed upload ("Expected boundary character 45, got 123 at index 2"), which its
    # client is answered (400 INVALID_REQUEST) and the access log shows.
    logging.getLogger("botocore.credentials").warning("Refreshing temporary credentials failed")
    logging.getLogger("python_multipart.multipart").warning("Expected boundary character 45")
    assert server_log.getvalue().splitlines() == [
        "WARNING:  Refreshing temporary credentials failed"
    ]


def test_log_level_warning_leaves_info_and_the_access_log_out(
    logged_at: Callable[[str], io.StringIO],
) -> None:
    # DEMIXER_LOG_LEVEL did not exist (serve warned it was ignored); with INFO written, a
    # busy server's operator needs a way to keep only what to act on.
    log = logged_at("warning")  # as DEMIXER_LOG_LEVEL=warning reads
    logging.getLogger("demixer.worker").info("w1: job req_1 attempt 1 started")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/models", "1.1", 200
    )
    logging.getLogger("demixer.worker").warning("w1: job req_1: the disk is full")
    assert log.getvalue().splitlines() == ["WARNING:  w1: job req_1: the disk is full"]


def test_a_5xx_a_vendor_protocol_answers_is_logged_with_its_request_id(
    make_api: Callable[..., Api],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # MusicGPT's, sunoapi's and Gaudio's routes answer demixer's errors in their own envelopes:
    # an outage they answered 503 left no line but the access log's.
    api = make_api()
    storage_down(api, monkeypatch)
    song = api.files.get("stereo.wav").path.read_bytes()
    r = api.client.post(
        "/api/public/v1/Extraction",
        headers={"Authorization": api.key},
        files={"audio_file": ("a.wav", song, "audio/wav")},
        data={"stems": '["vocals"]'},
    )
    assert (r.status_code, r.json()["error"]) == (503, "STORAGE_UNAVAILABLE"), r.text
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors == [
        "POST /api/public/v1/Extraction failed: STORAGE_UNAVAILABLE: object storage is "
        f"unavailable; retry shortly (request {r.headers['x-request-id']})"
    ]


def test_a_database_outage_is_one_heartbeat_warning_a_job_not_one_a_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each running job's heartbeat (every 2 s) wrote "heartbeat for req_... failed; retrying"
    # at WARNING for as long as the outage lasted.
    outage = [True, True, True, False]

    class Queue:
        def heartbeat(self, *args: Any) -> bool:
            if outage.pop(0):
                raise OSError("the database is unavailable")
            return False

    services = SimpleNamespace(settings=Settings(), queue=Queue())
    lease = Lease(
        SimpleNamespace(services=services, worker_id="w1"),  # type: ignore[arg-type]
        SimpleNamespace(id="req_1"),  # type: ignore[arg-type]
        threading.Event(),
    )
    with caplog.at_level("INFO", logger="demixer.worker"):
        for _ in range(4):
            lease.next_beat = 0.0  # a beat is due
            lease.tick()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "heartbeat for req_1 failed; retrying"),
        ("INFO", "heartbeat for req_1 works again"),
    ]


def test_the_access_line_names_the_request_id_its_caller_was_answered(
    make_api: Callable[..., Api],  # noqa: F811
    logged_at: Callable[[str], io.StringIO],
) -> None:
    # A user quotes the request_id of a 4xx (no error line is written for those): the access
    # line said only '127.0.0.1:5 - "GET /v1/files/x HTTP/1.1" 401', the same for every one.
    log = logged_at("INFO")
    app = make_api().client.app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, log_level=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the server")
        r = httpx.get(f"http://127.0.0.1:{port}/v1/files/file_x")
    finally:
        server.should_exit = True
        thread.join(30)
    rid = r.json()["error"]["request_id"]
    (line,) = [line for line in log.getvalue().splitlines() if "/v1/files/file_x" in line]
    assert line.startswith("INFO:     127.0.0.1:"), line
    assert line.endswith(f'"GET /v1/files/file_x HTTP/1.1" 401 Unauthorized (request {rid})')


def test_a_traceback_from_the_separation_child_follows_its_line(server_log: io.StringIO) -> None:
    # The message is one line; the child's traceback (passed along as text) keeps its lines
    # after it, as this process's own tracebacks do.
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'
    logging.getLogger("demixer.worker").error(
        "w1: job req_1: the separation failed", extra={"trace": trace}
    )
    assert server_log.getvalue().splitlines() == [
        "ERROR:    w1: job req_1: the separation failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "ValueError: boom",
    ]


def test_a_python_warning_is_one_line_with_its_time_and_level() -> None:
    # warnings.warn (a library's deprecation notice) printed "file:line: UserWarning: ..."
    # and its source line, bare, amid lines that all start with the time and the level.
    # A process of its own: the warnings module is set up for the process, as serve and
    # worker set it (configure_logging).
    script = (
        "import warnings\n"
        "from demixer.api.access_log import configure_logging\n"
        "configure_logging()\n"
        "warnings.warn('a library is deprecated\\nsee its notes')\n"
    )
    here = str(Path(access_log.__file__).parents[2])  # this checkout's demixer, not another
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stderr.splitlines()
    stamp, rest = line.split(" ", 1)
    assert len(stamp) == len("2026-12-05T23:27:00.123Z") and stamp.endswith("Z"), line
    assert rest.startswith("WARNING:  ") and "UserWarning: a library is deprecated see" in rest
    assert line == line.rstrip()  # its text's closing line break is not left as a space


@pytest.mark.parametrize(
    ("proxies", "logged"), [("", "127.0.0.1"), ("127.0.0.1,::1", "203.0.113.9")]
)
def test_the_access_line_names_the_forwarded_client_only_from_a_trusted_proxy(
    make_api: Callable[..., Api],  # noqa: F811
    logged_at: Callable[[str], io.StringIO],
    proxies: str,
    logged: str,
) -> None:
    """With nothing in front of the API (DEMIXER_FORWARDED_ALLOW_IPS empty), a client's own
    X-Forwarded-For named whatever address it liked in the log; and a proxy on another machine
    could not be trusted but by uvicorn's FORWARDED_ALLOW_IPS, which no demixer page named. By
    default the proxy on this machine (loopback) is believed."""
    log = logged_at("INFO")
    settings = Settings(port=free_port(), forwarded_allow_ips=proxies)
    server = uvicorn.Server(
        http_config(make_api().client.app, settings, log_config=None, log_level=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the server")
        url = f"http://127.0.0.1:{settings.port}/healthz"
        assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
    (line,) = [line for line in log.getvalue().splitlines() if "/healthz" in line]
    assert line.startswith(f"INFO:     {logged}:"), line
