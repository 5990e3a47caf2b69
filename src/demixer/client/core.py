"""What the sync and async clients share: building requests and reading answers. When to
send a call again is :mod:`demixer.client.retries`; the song's bytes on this machine (checked
before an upload, downloads written whole) are :mod:`demixer.client.transfers`.

No I/O happens here. :class:`~demixer.client.Client` and :class:`~demixer.client.AsyncClient`
only send the :class:`Call` objects built here (with httpx, blocking or not), and hand the
answers back to the parsers here, so every operation's wire format is written once.
"""

from __future__ import annotations

import html
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from demixer import __version__
from demixer.client.errors import (
    ApiError,
    BadResponse,
    JobCancelled,
    JobFailed,
    shown_url,
)
from demixer.client.retries import Call, Deadline
from demixer.client.types import Status
from demixer.defaults import DEFAULT_MODEL
from demixer.errors import (
    UnsupportedPrompt,
    unknown_model,
)
from demixer.models.catalogue.ensembles import ensemble_members
from demixer.models.spec import MODEL_ID_LENGTH
from demixer.naming import shown_name
from demixer.service.jobs.prompts import read_prompt

__all__ = [
    "CHUNK",
    "DEFAULT_MODEL",
    "DEFAULT_URL",
    "ClientBase",
    "SpanLike",
    "StatusStream",
    "When",
    "check",
    "check_put",
    "clean_api_key",
    "is_http_url",
    "no_body",
    "server_root",
    "settle",
    "span_json",
    "usage_params",
    "walk_pages",
    "walk_pages_async",
]

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK = 1 << 20  # bytes read or written at a time: uploads and downloads never sit in memory
STREAM_READ_TIMEOUT = 30.0  # seconds: the server sends a frame at least every 10

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Page(Protocol[T_co]):
    """One page of a listing (:class:`RequestPage`, :class:`FilePage`)."""

    @property
    def items(self) -> Sequence[T_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


def walk_pages(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every item of a listing, page after page as the iteration reaches them: ``fetch(cursor)``
    reads the page from ``cursor`` (None: the first)."""
    cursor = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def walk_pages_async(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """:func:`walk_pages` for the async client."""
    cursor = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def check_put(response: httpx.Response) -> None:
    """Check the answer to an upload's PUT; a repeated PUT whose first send landed (its
    answer was lost with the connection) is answered FILE_ALREADY_UPLOADED: that is success."""
    try:
        check(response)
    except ApiError as exc:
        if exc.code != "FILE_ALREADY_UPLOADED":
            raise


def check(response: httpx.Response) -> None:
    """Raise :class:`ApiError` for an error answer (the body must have been read)."""
    if response.status_code < 400:
        return
    body: Any = None
    with suppress(ValueError, UnicodeDecodeError):
        body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    rid = response.headers.get("x-request-id")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        raise ApiError(
            response.status_code,
            error["code"],
            str(error.get("message") or error["code"]),
            error.get("param") if isinstance(error.get("param"), str) else None,
            error.get("request_id") if isinstance(error.get("request_id"), str) else rid,
        )
    # Not demixer's shape: a proxy, a load balancer or object storage answered.
    text = _page_text(response)[:200] or response.reason_phrase
    raise ApiError(response.status_code, f"HTTP_{response.status_code}", text, None, rid)


def _page_text(response: httpx.Response) -> str:
    """An error page's words on one line: an HTML page's title (nginx: "413 Request Entity
    Too Large"), else its text without the markup; any other body as it is."""
    text = response.text
    if "html" in response.headers.get("content-type", "") or text.lstrip().startswith("<"):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if title is not None and title[1].strip():
            text = title[1]
        else:
            text = re.sub(r"<(script|style)\b.*?</\1>|<[^>]*>", " ", text, flags=re.I | re.S)
        text = html.unescape(text)
    return " ".join(text.split())


def no_body(response: httpx.Response) -> None:
    """Check a successful answer whose body is not read (``DELETE``'s 204), as
    :func:`json_body` does: an error raises :class:`ApiError`, a redirect is said."""
    check(response)
    if response.is_redirect:
        to = shown_url(response.headers["location"])
        raise BadResponse(
            f"{shown_url(response.request.url)}: the server redirects to {to}; give the "
            "address it redirects to as the server's URL"
        )


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer (after :func:`check`).

    A redirect (an ``http://`` address a proxy sends on to ``https://``) is not followed:
    httpx would send a POST on as a GET, or drop the API key on the way to another origin.
    It is said instead, with the address to use.
    """
    no_body(response)
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise BadResponse(
            f"{shown_url(response.request.url)}: expected a JSON object, got "
            f"{response.text[:200]!r}"
        )
    return body


def _idempotent(key: str | None = None) -> dict[str, str]:
    """An ``Idempotency-Key`` header: the caller's key, or a new one for this call."""
    return {"Idempotency-Key": key or f"dmxc-{uuid.uuid4().hex}"}


class StreamUnusable(Exception):
    """The SSE stream cannot be followed (wrong answer, an error frame, bad data): poll."""


class StatusStream:
    """Reads ``text/event-stream`` lines and returns each ``event: status`` frame's Status."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    @staticmethod
    def accept(response: httpx.Response) -> None:
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not content_type.startswith("text/event-stream"):
            raise StreamUnusable(f"{response.status_code} {content_type}")

    def feed(self, line: str) -> Status | None:
        """One line (without its newline); a Status when it completed a status frame."""
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
            return None
        event, data = self._event, "\n".join(self._data)
        self._event, self._data = "message", []
        if not data or event != "status":
            if event == "error":  # e.g. the request was deleted meanwhile: polling will say
                raise StreamUnusable(data)
            return None
        try:
            return Status.from_json(json.loads(data))
        except (ValueError, BadResponse) as exc:
            raise StreamUnusable(str(exc)) from exc


def settle(status: Status) -> Status:
    """A final status: returned if COMPLETED, raised as JobFailed/JobCancelled otherwise."""
    if status.status == "FAILED":
        error = status.error
        raise JobFailed(
            status.request_id,
            error.code if error else "FAILED",
            error.message if error else "the job failed",
        )
    if status.status == "CANCELLED":
        raise JobCancelled(status.request_id)
    return status


When = datetime | date | str
"""A point in time for ``usage``: a datetime (naive: UTC), a date (its whole day), or the
API's own ISO 8601 text."""


def usage_params(start: When | None, end: When | None) -> dict[str, str]:
    """``GET /v1/usage``'s query: ``from`` and ``to``, each when given."""
    params = {}
    for name, when in (("from", start), ("to", end)):
        if when is not None:
            params[name] = when if isinstance(when, str) else when.isoformat()
    return params


SpanLike = tuple[float, float] | tuple[float, float, bool] | Mapping[str, Any]
"""A span of a prompt's target, in seconds: ``(start, end)`` (kept there), ``(start, end,
False)`` (taken out there), or the API's own ``{"start", "end", "include"}``."""


def span_json(span: SpanLike) -> dict[str, Any]:
    """``span`` as the API's ``input.spans`` item."""
    if isinstance(span, Mapping):
        return dict(span)
    start, end, *rest = span
    include = rest[0] if rest else True
    # bool() would read a "false" (from a CSV, a form) as true and keep the sound where the
    # caller asked to take it out; the server refuses anything but true or false.
    if include not in (True, False):
        raise ValueError(f"a span's third item is True (keep) or False (take out), not {include!r}")
    # float(): a NumPy float32 (onset times, a model's output) is no JSON number to httpx.
    return {"start": float(start), "end": float(end), "include": bool(include)}


def clean_api_key(key: str | None) -> str | None:
    """``key`` without the spaces and line break around it (a key read from a file or a
    mounted secret often ends with a newline), or None for none.

    A key with any other character than visible ASCII in it is refused with ValueError (no
    key has one, and HTTP could not send it): said at once, and without the key in the
    message, since an error line ends up in logs and the key is a secret.
    """
    if key is None or not key.strip():
        return None
    key = key.strip()
    if not all("!" <= ch <= "~" for ch in key):
        raise ValueError(
            "the API key has a character no key has (a space, a control character or a "
            "non-ASCII letter)"
        )
    return key


def server_root(base_url: str) -> str:
    """The server's root for a base URL as given (``http://host:8000/v1/`` too): every path
    the client asks for starts with /v1 itself."""
    return base_url.strip().rstrip("/").removesuffix("/v1")


def is_http_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL with a host (and a usable port, if any)."""
    try:
        parts = urlsplit(text)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or bracketed host
        return False


class ClientBase:
    """Settings and request building shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        max_tries: int,
        poll_interval: float,
    ) -> None:
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if not is_http_url(base_url.strip()):
            raise ValueError(f"{base_url!r} is not an http(s) URL, e.g. {DEFAULT_URL}")
        self.base_url = server_root(base_url)
        self.api_key = clean_api_key(
            api_key if api_key is not None else os.environ.get("DEMIXER_API_KEY")
        )
        self.timeout = timeout
        self.max_tries = max_tries
        self.poll_interval = poll_interval
        # Model ids the server listed, and prompts it can serve: `separate` asks GET /v1/models
        # once per id or prompt, not per song.
        self._listed_models: set[str] = set()
        self._read_prompts: set[str] = set()

    def _headers(self, call: Call) -> dict[str, str]:
        headers = {"User-Agent": f"demixer-client/{__version__}", **call.headers}
        if self.api_key and not call.signed:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _build(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call,
        content: Any,
        files: dict[str, Any] | None,
        timeout: httpx.Timeout | None,
    ) -> httpx.Request:
        """The request for ``call`` with this client's headers (same for sync and async)."""
        return http.build_request(
            call.method,
            call.url,
            params=call.params,
            json=call.json,
            headers=self._headers(call),
            content=content,
            files=files,
            timeout=timeout or self.timeout,
        )

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _request_url(self, request_id: str, tail: str) -> str:
        return self._url(f"/v1/queue/requests/{quote(request_id, safe='')}{tail}")

    # --- a model or prompt checked before an upload ----------------------------------------

    def _models_to_check(self, model: str | None, prompt: str | None) -> list[str]:
        """The model ids ``separate`` should look up in the server's model list before it
        uploads a whole song only to hear an id is a typo: a plain id (a model, recipe or
        alias, which the list names), or an ensemble's members (``max:a+b``), not listed
        before. Anything the list cannot settle is left to the server, as is ``model`` beside
        a prompt (which ignores it)."""
        if model is None or prompt is not None:
            return []
        ids = ensemble_members(model) or [model]
        if any(not 0 < len(i) <= MODEL_ID_LENGTH or "+" in i or ":" in i for i in ids):
            return []
        return [i for i in dict.fromkeys(ids) if i not in self._listed_models]

    def _prompt_to_check(self, prompt: str | None) -> str | None:
        """The prompt ``separate`` should read before it uploads a song, or None (none, or one
        read before)."""
        return prompt if prompt is not None and prompt not in self._read_prompts else None

    def _models_call(self) -> Call:
        return Call("GET", self._url("/v1/models"))

    def _health_call(self) -> Call:
        return Call("GET", self._url("/healthz"))

    def _check_listed(
        self,
        models: Sequence[str],
        prompt: str | None,
        listing: Mapping[str, Any],
        version: object = None,
    ) -> None:
        """Raise the :class:`ApiError` the server answers a job for ``models`` or ``prompt``
        when its model list (``GET /v1/models``'s answer) shows it would: 404
        ``UNKNOWN_MODEL`` (``param`` ``input.model``) for an id it names nowhere; 422
        ``UNSUPPORTED_PROMPT`` (``input.prompt``) for a prompt its ``separable`` list cannot
        serve, read as the server reads it, only when the server is this client's ``version``
        (``GET /healthz``'s): another version may read prompts otherwise. Nothing when the
        answer is not the shape this client knows (another version's server decides)."""
        if prompt is not None and version == __version__:
            self._check_prompt(prompt, listing)
        catalogue = listing.get("catalogue")
        if not models or not isinstance(catalogue, list) or not catalogue:
            return
        ids: list[str] = []
        aliases: dict[str, str] = {}
        for entry in catalogue:
            if not isinstance(entry, dict):
                return
            model_id, names = entry.get("id"), entry.get("aliases")
            if not isinstance(model_id, str) or not isinstance(names, list):
                return
            ids.append(model_id)
            aliases.update({str(name): model_id for name in names})
        for model in models:
            if model in ids or model in aliases:
                self._listed_models.add(model)
                continue
            error = unknown_model(model, ids, aliases)
            # 404, as the server's status table (demixer.api.errors) answers UNKNOWN_MODEL
            raise ApiError(404, error.code, error.message, "input.model")

    def _check_prompt(self, prompt: str, listing: Mapping[str, Any]) -> None:
        queue_models = listing.get("data")
        if not isinstance(queue_models, list):
            return
        for entry in queue_models:
            if isinstance(entry, dict) and entry.get("id") == "audio/separate":
                can = entry.get("separable")
                if isinstance(can, list) and all(isinstance(c, str) for c in can):
                    break
        else:
            return
        try:
            read_prompt(prompt, can)
        except UnsupportedPrompt as e:
            # 422, as the server's status table answers UNSUPPORTED_PROMPT
            raise ApiError(422, e.code, e.message, e.param) from None
        self._read_prompts.add(prompt)

    # --- calls ---------------------------------------------------------------------------

    def _announce_call(self, path: Path, size: int, content_type: str) -> Call:
        body = {
            "file_name": shown_name(path.name),  # JSON carries no undecodable bytes
            "content_type": content_type,
            "file_size": size,
            "purpose": "audio.separate.input",
        }
        # The key makes a repeat after a broken connection safe (one file, not two).
        return Call("POST", self._url("/v1/files"), json=body, headers=_idempotent())

    @staticmethod
    def _put_call(announced: Mapping[str, Any], size: int) -> Call:
        url = announced.get("upload_url")
        headers = announced.get("headers") or {}
        if not isinstance(url, str) or not isinstance(headers, dict):
            raise BadResponse(f"no upload_url in the answer to POST /v1/files: {announced}")
        method = str(announced.get("upload_method") or "PUT")
        headers = {str(k): str(v) for k, v in headers.items()} | {"Content-Length": str(size)}
        return Call(method, url, headers=headers, signed=True)

    def _complete_call(self, announced: Mapping[str, Any]) -> Call:
        file_id = announced.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise BadResponse(f"no file_id in the answer to POST /v1/files: {announced}")
        url = self._url(f"/v1/files/{quote(file_id, safe='')}/complete")
        return Call("POST", url, repeatable=True)

    def _multipart_call(self) -> Call:
        return Call("POST", self._url("/v1/files"))

    def _submit_call(
        self,
        file_id: str | None,
        audio_url: str | None,
        *,
        stems: Sequence[str] | str | None,
        model: str | None,
        prompt: str | None,
        output_format: str,
        bit_depth: str | int | None,
        webhook_url: str | None,
        webhook_secret: str | None,
        idempotency_key: str | None,
        quality: str | None = None,
        downmix: bool = False,
        rescale: bool = False,
        spans: Sequence[SpanLike] | None = None,
        audio_track: int | None = None,
    ) -> Call:
        if (file_id is None) == (audio_url is None):
            raise ValueError("give exactly one of file_id and audio_url")
        if isinstance(stems, str):  # "vocals" or "vocals,drums": not its letters
            stems = stems.split(",")
        source = {"file_id": file_id} if file_id is not None else {"audio_url": audio_url}
        inp: dict[str, Any] = {**source, "output_format": output_format}
        if bit_depth is not None:
            inp["bit_depth"] = str(bit_depth)
        if quality is not None:
            inp["quality"] = quality
        if downmix:
            inp["downmix"] = True
        if audio_track is not None:
            inp["audio_track"] = audio_track
        if rescale:
            inp["rescale"] = True
        if spans is not None and prompt is None:
            raise ValueError("spans limit a prompt's target: give a prompt with them")
        if prompt is not None:
            if stems:
                raise ValueError("give stems or a prompt, not both")
            inp["prompt"] = prompt
            if spans is not None:
                inp["spans"] = [span_json(span) for span in spans]
            path = "/v1/queue/audio/separate"
        else:
            if stems is not None:  # left out: every stem of the model ([] is refused)
                inp["stems"] = list(stems)
            if model is not None:
                inp["model"] = model
            path = "/v1/queue/audio/stems"
        body: dict[str, Any] = {"input": inp}
        if webhook_url is not None:
            body["webhook"] = {"url": webhook_url, "secret": webhook_secret}
        return Call("POST", self._url(path), json=body, headers=_idempotent(idempotency_key))

    def _status_call(self, request_id: str, logs: bool = False) -> Call:
        params = {"logs": "true"} if logs else None
        return Call("GET", self._request_url(request_id, "/status"), params)

    def _stream_call(self, request_id: str) -> Call:
        interval = str(max(1.0, self.poll_interval))
        url = self._request_url(request_id, "/status/stream")
        return Call("GET", url, {"interval": interval}, fallback=True)

    def _result_call(self, request_id: str) -> Call:
        return Call("GET", self._request_url(request_id, "/result"))

    def _cancel_call(self, request_id: str) -> Call:
        return Call("PUT", self._request_url(request_id, "/cancel"))

    def _delete_call(self, request_id: str) -> Call:
        return Call("DELETE", self._request_url(request_id, ""))

    def _list_call(self, path: str, cursor: str | None, limit: int) -> Call:
        """One page of a listing at ``path`` (``/v1/queue/requests``, ``/v1/files``)."""
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        return Call("GET", self._url(path), params)

    def _file_call(self, file_id: str, method: str = "GET") -> Call:
        return Call(method, self._url(f"/v1/files/{quote(file_id, safe='')}"))

    def _usage_call(self, start: When | None, end: When | None) -> Call:
        return Call("GET", self._url("/v1/usage"), usage_params(start, end))

    @staticmethod
    def _blob_call(url: str, start: int = 0) -> Call:
        """GET a signed output URL, from byte ``start`` on (``Range``) to resume a download."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        return Call("GET", url, headers=headers, signed=True)

    def _stream_timeout(self, deadline: Deadline) -> httpx.Timeout:
        """The event stream's timeouts: a read may wait for a frame longer than other calls,
        but not past the wait's deadline (a proxy that buffers the stream sends nothing until
        the job ends; ``wait(timeout=...)`` must still end on time)."""
        read = deadline.nap(max(self.timeout, STREAM_READ_TIMEOUT))
        return httpx.Timeout(self.timeout, read=max(read, 0.1))
