"""The OpenAPI document: every error response in the one error shape.

FastAPI documents its validation errors as a 422 ``HTTPValidationError``; demixer answers them
as 400 ``ErrorResponse`` (see ``api/errors.py``), so the generated document is corrected here
to say what the server really does. The errors any operation of a kind can answer are added
here too, beside each route's own: a key's 401/403/429; everywhere the 400/408/413/414/431 of
a request URL, head or body refused before routing; and (health checks aside) the 503 of a
database or store outage and the 507 of a full disk (even a read counts the key's requests in
the database). Each GET gets a HEAD beside it: the server answers HEAD wherever it answers
GET (``api/head.py``), though no route names it; a HEAD's answers declare headers, no body.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from demixer.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from demixer.api.idempotency import REPLAYED_HEADER
from demixer.api.schemas import ErrorResponse

__all__ = ["document", "error_responses", "operation_id"]

_DESCRIPTIONS = {
    400: "Invalid request (`INVALID_REQUEST`, `SIZE_MISMATCH`, `INVALID_OUTPUT`, …)",
    401: "Missing or invalid API key (`UNAUTHENTICATED`)",
    402: "The account's monthly allowance of audio minutes cannot take this input "
    "(`QUOTA_EXCEEDED`); the message says the minutes left and when the allowance resets "
    "(the first of next month, UTC). An `audio_url` is measured once fetched: a request too "
    "long for what is left then fails with this code",
    403: "The key lacks the scope (`PERMISSION_DENIED`), or a bad signature (`INVALID_SIGNATURE`)",
    404: "No such object for this caller (`NOT_FOUND`, `UNKNOWN_MODEL`)",
    409: "Not in a state that allows this (`NOT_READY`, `FILE_NOT_READY`, `JOB_CONFLICT`, "
    "`IDEMPOTENCY_KEY_REUSED`, …)",
    408: "The request body stopped arriving (`REQUEST_TIMEOUT`: nothing for "
    "`DEMIXER_BODY_TIMEOUT_SECONDS`, or under 1 KiB/s on average past that time), or the "
    "request's headers were not whole within that time; what came was dropped",
    410: "Expired (`URL_EXPIRED`, `FILE_EXPIRED`, `RESULT_EXPIRED`)",
    413: "Too large: an upload (`FILE_TOO_LARGE`) or a request body (`REQUEST_TOO_LARGE`) over "
    "its limit, nothing past the limit was read; or a new upload that does not fit in what "
    "the account's files and results may hold at once, or a new request once they hold all "
    "of it (`STORAGE_QUOTA_EXCEEDED`, nothing stored: the message says the bytes held and the "
    "cap, `GET /v1/usage` shows them; deleting files or results, or their expiry, makes "
    "room)",
    414: "The URL is over 8 KiB (`URL_TOO_LONG`); the connection is closed",
    415: "Unsupported media type (`UNSUPPORTED_MEDIA_TYPE`, `CONTENT_TYPE_MISMATCH`), or a "
    "body sent compressed (`UNSUPPORTED_ENCODING`: a `Content-Encoding`, or a "
    "`Transfer-Encoding` other than `chunked`)",
    416: "The `Range` starts past the end of the file (`RANGE_NOT_SATISFIABLE`); "
    "`Content-Range: bytes */SIZE` gives its size",
    422: "Unprocessable (`INVALID_AUDIO`, `DURATION_LIMIT`, `UNKNOWN_STEM`, "
    "`NO_STEMS_REQUESTED`, `UNKNOWN_QUALITY`, `UNSUPPORTED_PROMPT`, `MODEL_UNAVAILABLE`, a "
    "failed request's code)",
    431: "The request's head (its line and headers) is over 64 KiB (`HEADERS_TOO_LARGE`); "
    "the connection is closed",
    429: "Rate limited (`RATE_LIMITED`, `TOO_MANY_CONCURRENT_JOBS`); see `Retry-After`",
    500: "Internal error (`INTERNAL`); details are in the server log",
    503: "Object storage or the database unavailable (`STORAGE_UNAVAILABLE`, "
    "`DATABASE_UNAVAILABLE`, or `DATABASE_READ_ONLY`: it takes no writes, as a standby after "
    "a failover); nothing was done, retry after `Retry-After`",
    507: "The server's disk is full (`STORAGE_FULL`); nothing was stored, retry after "
    "`Retry-After`",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# The headers the server puts on its answers (api/errors.py, api/limits.py, api/caching.py,
# RequestIdMiddleware), declared once in `components` and referred to from each response that
# carries them.
_HEADERS: dict[str, dict[str, Any]] = {
    "x-request-id": {
        "description": "This request's id (an error's `request_id` too): quote it in a report.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`no-store`: an API answer is one caller's, and true for a moment; no "
        "cache may keep it (api/caching.py).",
        "required": True,
        "schema": {"type": "string", "enum": ["no-store"]},
    },
    "Retry-After": {
        "description": "Seconds after which the same request may succeed.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "`Bearer`: the scheme the API key goes in.",
        "required": True,
        "schema": {"type": "string"},
    },
    REPLAYED_HEADER: {
        "description": "`true` on a repeat with the same `Idempotency-Key`: the first answer.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "RateLimit-Limit": {
        "description": "Requests the key may make in a minute (while the server limits them).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Remaining": {
        "description": "Requests left to the key in this minute.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until this minute's count starts again.",
        "schema": {"type": "integer", "minimum": 0},
    },
}
_METRICS_TOKEN = {
    "type": "http",
    "scheme": "bearer",
    "description": "`DEMIXER_METRICS_TOKEN`, the operator's token for `GET /metrics`; never an "
    "API key.",
}
_RETRY = (429, 503, 507)  # the error answers that carry Retry-After (api/errors.py)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer ``statuses`` (all in the error shape)."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }


def operation_id(route: APIRoute) -> str:
    """An operation's id: its route function's name (``queue_separate``), which a client
    generator turns into the method's name. FastAPI's own joined the name, path and method
    (``queue_separate_v1_queue_audio_separate_post``), and a generated client's methods were
    named so (``queueSeparateV1QueueAudioSeparatePost``)."""
    return route.name


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas.setdefault(model.__name__, schema)


def _add_heads(paths: dict[str, Any]) -> None:
    """A HEAD operation beside each GET that has none: ``api/head.py`` answers HEAD wherever
    GET is (the same status and headers, no body), but no route names it, so FastAPI leaves it
    out of the document and a client generated from it could not send one."""
    for path_item in paths.values():
        get = path_item.get("get")
        if get is None or "head" in path_item:
            continue
        head = copy.deepcopy(get)
        head["operationId"] = get["operationId"] + "_head"
        head["description"] = (
            f"{get.get('description', '')}\n\nHEAD: the GET's status and headers, no body."
        ).strip()
        path_item["head"] = head


def document(
    app: FastAPI, extra_models: tuple[type[BaseModel], ...] = (), *, base_path: str = ""
) -> dict[str, Any]:
    """The app's OpenAPI 3.1 document (built once, then cached on the app). ``base_path``: the
    path a reverse proxy serves the API under (``/demixer``), named as its server, so that the
    docs page's "Try it out" sends its requests there, not to the proxy's root."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        license_info=app.license_info,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=[{"url": base_path}] if base_path else None,
    )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    _add_model(schemas, ErrorResponse)
    for model in extra_models:
        _add_model(schemas, model)
    _add_heads(schema.get("paths", {}))
    error = {"description": "", "content": {"application/json": {"schema": _ERROR_REF}}}
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            validation = responses.get("422")
            if validation is not None and "HTTPValidationError" in str(validation):
                del responses["422"]
            # Before any route is chosen, the HTTP layer (server/protocol.py) answers a request
            # head that is too long (414, 431) or stalls (408), the request-id middleware a URL
            # with a NUL in it (400), and the body limit (api/bodies.py) a body over it (413),
            # sent with any method: every operation, health included.
            common = [400, 408, 413, 414, 431, 500]
            # The health checks touch neither the database nor storage for a caller (readyz
            # declares its own 503), and metrics show an outage as a figure: they answer no
            # outage or full-disk status.
            if not {"health", "monitoring"}.intersection(operation.get("tags", ())):
                common += [503, 507]
            if operation.get("security"):
                common += [401, 403, 429]
            for status in common:
                responses.setdefault(str(status), {**error, "description": _DESCRIPTIONS[status]})
            parameters = operation.get("parameters", [])
            for status, response in responses.items():
                names = ["x-request-id"]
                if "application/json" in response.get("content", {}):
                    names.append("Cache-Control")
                if (
                    int(status) in _RETRY
                    and response.get("content", {}).get("application/json", {}).get("schema")
                    == _ERROR_REF
                ):  # (readyz's own 503 is no such error)
                    names.append("Retry-After")
                if status == "401":
                    names.append("WWW-Authenticate")
                idempotent = any(p["name"] == IDEMPOTENCY_HEADER for p in parameters)
                if idempotent and status.startswith("2"):
                    names.append(REPLAYED_HEADER)
                if operation.get("security"):  # a counted key's answers
                    names += ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]
                headers = {name: {"$ref": f"#/components/headers/{name}"} for name in names}
                responses[status] = {
                    **response,
                    "headers": {**response.get("headers", {}), **headers},
                }
                if method == "head":
                    # The GET's headers (its Content-Type and Content-Length too), no body: a
                    # body declared here had generated clients parse the empty answer as JSON.
                    responses[status].pop("content", None)
            # Said outright where no API key is taken (a signed URL, a probe), so that a
            # generated client sends none and a linter (redocly's `security-defined`) finds
            # each operation's; /metrics takes its own token, never a key.
            if "security" not in operation:
                monitoring = "monitoring" in operation.get("tags", ())
                operation["security"] = [{"MetricsToken": []}] if monitoring else []
    schema["components"]["headers"] = _HEADERS
    schema["components"].setdefault("securitySchemes", {})["MetricsToken"] = _METRICS_TOKEN
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    app.openapi_schema = schema
    return schema
