"""``GET /metrics``: the Prometheus text an operator scrapes, on the real app (``TestClient``)
over SQLite + local storage and PostgreSQL + S3 (conftest.py).

Requests are made through the API and moved through the real queue (claim, fail); the
database's clock is a fixed one the tests move, and the metrics' cache runs on a clock the
tests move too, so ages and counts are exact. Every answer is read by :func:`parse`, a strict
reader of the text exposition format 0.0.4 (prometheus_client is not a dependency).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from sqlalchemy import event

from api_support import Api, make_api
from demixer import __version__
from demixer.api.routes.metrics import CACHE_SECONDS, ClusterReader
from demixer.cli_startup import load_settings
from demixer.service.db import Database
from demixer.service.metrics import ENSEMBLE, model_label, read_cluster
from demixer.service.migrate import migrate
from demixer.service.worker.registry import Presence
from demixer.settings import Settings
from servers import free_port

__all__ = ["make_api"]

on_both = pytest.mark.usefixtures("backend")

TOKEN = "m" * 40
T0 = datetime(2030, 1, 1, tzinfo=UTC)
MODEL = "spleeter-2stems"

# --- a strict reader of the text format 0.0.4 ------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _labels(text: str) -> frozenset[tuple[str, str]]:
    labels, at = [], 0
    while at < len(text):
        match = _LABEL.match(text, at)
        assert match is not None, f"bad labels: {text!r}"
        labels.append((match.group(1), match.group(2)))
        at = match.end()
    names = [name for name, _ in labels]
    assert len(names) == len(set(names)), f"a label twice: {text!r}"
    return frozenset(labels)


def parse(body: str) -> Series:
    """Every sample of ``body`` as ``{(name, labels): value}``; fails on anything the format
    does not allow: a sample before its family's ``# TYPE``, a family declared twice, a series
    twice, a histogram whose buckets are not cumulative or disagree with its count."""
    assert body.endswith("\n")
    kinds: dict[str, str] = {}
    series: Series = {}
    current = None
    for line in body[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(_NAME, name), line
            assert name not in kinds, f"{name} declared twice"
            current = name
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in _SUFFIXES, line
            kinds[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a sample: {line!r}"
        name, labels, value = match.group(1), _labels(match.group(2) or ""), match.group(3)
        assert current is not None and current in kinds, f"sample before its TYPE: {line!r}"
        assert name in {current + s for s in _SUFFIXES[kinds[current]]}, line
        assert (name, labels) not in series, f"series twice: {line!r}"
        series[(name, labels)] = float(value)  # +Inf, NaN and numbers only
    for family, kind in kinds.items():
        if kind == "histogram":
            _check_histogram(series, family)
    return series


def _check_histogram(series: Series, family: str) -> None:
    groups: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for (name, labels), value in series.items():
        if name == family + "_bucket":
            le = dict(labels)["le"]
            rest = frozenset(item for item in labels if item[0] != "le")
            groups.setdefault(rest, []).append((float(le), value))
    for rest, buckets in groups.items():
        counts = [count for _, count in sorted(buckets)]
        assert counts == sorted(counts), f"{family} buckets not cumulative"
        assert sorted(buckets)[-1][0] == math.inf
        assert counts[-1] == series[(family + "_count", rest)]


def sample(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def family(series: Series, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in series.items() if n == name}


# --- the app under a moved clock ---------------------------------------------------------------


class Clock:
    """A clock the test moves: the database's (a datetime) and the cache's (seconds)."""

    def __init__(self) -> None:
        self.now = T0
        self.seconds = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.seconds += seconds


def metrics_api(make_api: Callable[..., Api], **settings: object) -> tuple[Api, Clock]:
    api = make_api(metrics_token=TOKEN, **settings)
    clock = Clock()
    api.services.db.clock = clock
    api.client.app.state.cluster_reader = ClusterReader(  # type: ignore[attr-defined]
        api.services, monotonic=clock.monotonic
    )
    return api, clock


def scrape(api: Api) -> str:
    r = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return str(r.text)


def cluster_lines(text: str) -> list[str]:
    """The samples that come from the database (not the build or the HTTP figures)."""
    return [
        line
        for line in text.splitlines()
        if not line.startswith(("#", "demixer_http_", "demixer_build_info"))
    ]


@on_both
def test_the_queue_failures_workers_deliveries_and_uploads_of_known_jobs(
    make_api: Callable[..., Api], no_dns: dict[str, list[str]]
) -> None:
    no_dns["hooks.example.com"] = ["93.184.216.34"]
    api, clock = metrics_api(make_api)
    file_id = api.upload()

    def submit(priority: int, **extra: object) -> str:
        r = api.queue_separate(file_id, priority=priority, **extra)
        assert r.status_code == 202, r.text
        return str(r.json()["request_id"])

    # Claimed highest priority first: the first fails (its webhook is to be sent), the second
    # runs, two stay queued.
    ids = [submit(5, webhook={"url": "https://hooks.example.com/demixer"}), submit(3)]
    ids += [submit(0), submit(0)]
    clock.advance(30)
    api.announce()  # an upload whose bytes never come
    queue = api.services.queue
    for slot, job_id in enumerate(ids[:2]):
        claim = queue.claim(f"box:1:{slot}:tail")
        assert claim is not None and claim.id == job_id
    queue.fail(ids[0], "box:1:0:tail", code="INVALID_AUDIO", message="x", retryable=False)
    clock.advance(60)
    presence = Presence(
        api.services.db, api.services.settings, worker_id="box:1:tail", device="cpu",
        models=[MODEL], slots=2,
    )  # fmt: skip
    presence.beat()

    text = scrape(api)

    parse(text)
    assert cluster_lines(text) == [
        "demixer_database_up 1",
        f'demixer_jobs{{status="IN_PROGRESS",model="{MODEL}"}} 1',
        f'demixer_jobs{{status="IN_QUEUE",model="{MODEL}"}} 2',  # two ids: one series
        f'demixer_queue_oldest_age_seconds{{model="{MODEL}"}} 90',
        f'demixer_jobs_finished_recent{{status="FAILED",model="{MODEL}"}} 1',
        f'demixer_jobs_failed_recent{{model="{MODEL}",code="INVALID_AUDIO"}} 1',
        "demixer_workers_live 1",
        "demixer_worker_slots_live 2",
        'demixer_webhook_deliveries{status="pending"} 1',
        'demixer_webhook_deliveries{status="failed"} 0',
        "demixer_webhook_oldest_pending_age_seconds 60",
        "demixer_uploads_pending 1",
        "demixer_uploads_oldest_pending_age_seconds 60",
    ]
    assert f'demixer_build_info{{version="{__version__}"}} 1' in text.splitlines()
    # Nothing that names a tenant: no request, file, account or key id, no key, no URL.
    for secret in [*ids, file_id, api.account, api.key, api.key[:12], "hooks.example.com"]:
        assert secret not in text


@on_both
def test_requests_finished_in_the_last_hour_by_status_and_model(
    make_api: Callable[..., Api],
) -> None:
    """Only failures were counted: an alert on the share of requests failing, or on the
    completed ones stopping, had nothing to divide by. Finished requests of the last hour are
    counted by final status and model; one that finished before is not."""
    api, clock = metrics_api(make_api)
    file_id = api.upload()
    queue = api.services.queue
    # Claimed highest priority first; the last stays queued.
    ids = [api.queue_separate(file_id, priority=p).json()["request_id"] for p in range(4, -1, -1)]
    api.worker_done(ids[0])  # finished an hour and a second before the scrape
    clock.advance(3601 - 60)
    api.worker_done(ids[1])
    claim = queue.claim("box:1:0:tail")
    assert claim is not None and claim.id == ids[2]
    queue.fail(ids[2], "box:1:0:tail", code="INVALID_AUDIO", message="x", retryable=False)
    assert queue.cancel(ids[3]) == "CANCELLED"
    clock.advance(60)

    finished = family(parse(scrape(api)), "demixer_jobs_finished_recent")

    assert finished == {
        frozenset({("status", status), ("model", MODEL)}): 1.0
        for status in ("CANCELLED", "COMPLETED", "FAILED")
    }


def test_finished_requests_are_counted_through_an_index_not_the_whole_table(
    tmp_path: Path,
) -> None:
    """The last hour's finished requests are read through `ix_jobs_finished` (the plan of the
    statement `read_cluster` sends): without it, every scrape read every finished row that
    record retention keeps."""
    db = Database(f"sqlite:///{tmp_path / 'demixer.db'}")
    migrate(db)
    sent: list[tuple[str, Any]] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append((a[2], a[3])))
    with db.read() as s:
        read_cluster(s, Settings(data_dir=tmp_path), T0)
    statement, params = next((q, p) for q, p in sent if "UNION ALL" in q)
    with db.engine.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
    assert "SEARCH jobs USING INDEX ix_jobs_finished (status=? AND finished_at>?)" in plan, plan
    db.dispose()


@on_both
def test_a_scrape_storm_reads_the_database_once_per_cache_period(
    make_api: Callable[..., Api],
) -> None:
    api, clock = metrics_api(make_api)
    reader = api.client.app.state.cluster_reader  # type: ignore[attr-defined]
    reads = []
    read = reader._read
    reader._read = lambda: reads.append(1) or read()
    file_id = api.upload()
    api.queue_separate(file_id)
    queued = f'demixer_jobs{{status="IN_QUEUE",model="{MODEL}"}} '
    age = f'demixer_queue_oldest_age_seconds{{model="{MODEL}"}} '

    first = scrape(api).splitlines()
    api.queue_separate(file_id)
    clock.advance(CACHE_SECONDS - 1)
    storm = [scrape(api).splitlines() for _ in range(20)]

    assert len(reads) == 1
    assert queued + "1" in first and age + "0" in first
    # The second request is not read yet; the age grows with the clock all the same.
    assert all(queued + "1" in lines and age + "4" in lines for lines in storm)
    clock.advance(1)
    assert queued + "2" in scrape(api).splitlines()
    assert len(reads) == 2


@on_both
def test_a_database_down_is_a_figure_not_a_failed_scrape(make_api: Callable[..., Api]) -> None:
    api, _ = metrics_api(make_api)
    api.client.get("/healthz")
    api.services.db = Database(f"postgresql+psycopg://demixer@127.0.0.1:{free_port()}/demixer")
    text = scrape(api)
    assert cluster_lines(text) == ["demixer_database_up 0"]
    series = parse(text)
    assert (
        sample(series, "demixer_http_requests_total", route="/healthz", method="GET", status="2xx")
        == 1
    )


def test_http_answers_are_counted_by_route_template_never_by_path(
    make_api: Callable[..., Api],
) -> None:
    api, _ = metrics_api(make_api)
    file_id = api.upload()
    first, second = (api.queue_separate(file_id).json()["request_id"] for _ in range(2))
    for job_id in (first, second):  # the fast lane, then the route (a query)
        assert api.get(f"/v1/queue/requests/{job_id}/status").status_code == 200
        assert api.get(f"/v1/queue/requests/{job_id}/status?logs=true").status_code == 200
    assert api.get("/v1/queue/requests/req_nope/status").status_code == 404
    assert api.client.head("/v1/models").status_code == 401  # HEAD, answered by the GET route
    for path in ("/nope/1", "/nope/2", "/.env"):
        assert api.client.get(path).status_code == 404
    assert api.client.request("BREW", "/healthz").status_code == 405

    def crash() -> None:
        raise RuntimeError("a bug")

    api.client.app.add_api_route("/crash/{thing}", crash)  # type: ignore[attr-defined]
    assert api.client.get("/crash/1").status_code == 500

    text = scrape(api)

    series = parse(text)
    requests = family(series, "demixer_http_requests_total")
    status = "/v1/queue/requests/{request_id}/status"
    assert sample(series, "demixer_http_requests_total", route=status, method="GET",
                  status="2xx") == 4  # fmt: skip
    assert sample(series, "demixer_http_requests_total", route=status, method="GET",
                  status="4xx") == 1  # fmt: skip
    assert sample(series, "demixer_http_requests_total", route="/v1/models", method="HEAD",
                  status="4xx") == 1  # fmt: skip
    assert sample(series, "demixer_http_requests_total", route="unmatched", method="GET",
                  status="4xx") == 3  # fmt: skip
    assert sample(series, "demixer_http_requests_total", route="/healthz", method="other",
                  status="4xx") == 1  # fmt: skip
    assert sample(series, "demixer_http_requests_total", route="/crash/{thing}", method="GET",
                  status="5xx") == 1  # fmt: skip
    assert sample(series, "demixer_http_request_duration_seconds_count", route=status,
                  method="GET") == 5  # fmt: skip
    for labels in requests:
        assert not any(job in value for job in (first, second, "nope") for _, value in labels)
    assert first not in text and second not in text and "/nope" not in text


def test_metrics_are_off_without_a_token_and_refused_without_it(
    make_api: Callable[..., Api],
) -> None:
    off = make_api()
    r = off.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "NOT_FOUND")

    api, _ = metrics_api(make_api)
    for headers in (
        {},
        {"Authorization": f"Bearer {api.key}"},  # an API key opens nothing here
        {"Authorization": f"Bearer {TOKEN[:-1]}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        r = api.client.get("/metrics", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "UNAUTHENTICATED"), headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert "demixer_" not in r.text
    head = api.client.head("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (head.status_code, head.content) == (200, b"")


@pytest.mark.parametrize("token", ["short", " ", "é" * 40, "a b" * 20])
def test_a_metrics_token_that_could_be_guessed_or_mangled_is_refused_at_start(token: str) -> None:
    if not token.strip():
        assert Settings(metrics_token=token).metrics_token is None  # empty: metrics off
        return
    with pytest.raises(ValidationError, match="metrics token must be at least 32"):
        Settings(metrics_token=token)


def test_a_refused_metrics_token_is_not_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEMIXER_METRICS_TOKEN", "almost-a-secret")
    with pytest.raises(typer.Exit):
        load_settings(None)
    err = capsys.readouterr().err
    assert "DEMIXER_METRICS_TOKEN=***: the metrics token must be at least 32" in " ".join(
        err.split()
    )
    assert "almost-a-secret" not in err


def test_an_ensemble_made_up_per_request_is_one_model_label() -> None:
    assert model_label("max:htdemucs+spleeter-2stems") == ENSEMBLE
    assert model_label("htdemucs+spleeter-2stems") == ENSEMBLE
    assert model_label(MODEL) == MODEL
