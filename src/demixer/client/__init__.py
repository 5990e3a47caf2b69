"""A Python client for a demixer server (``demixer serve``), blocking and async.

::

    from demixer import Client

    with Client("http://127.0.0.1:8000", api_key="dmx_...") as client:
        paths = client.separate("song.mp3", stems=["vocals"], directory="out")
    # {"vocals": Path("out/song_vocals.wav"), "residual": Path("out/song_residual.wav")}

Step by step: :meth:`Client.upload` -> :meth:`Client.submit` -> :meth:`Client.wait` ->
:meth:`Client.result` -> :meth:`Client.download`; then :meth:`Client.delete` and
:meth:`Client.delete_file` remove a job and its upload at once. :meth:`Client.list_requests`,
:meth:`Client.list_files`, :meth:`Client.models` and :meth:`Client.usage` read the account and
the server.
:class:`AsyncClient` has the same methods as coroutines. Webhook receivers verify
deliveries with :func:`demixer.webhooks.verify`.
"""

from __future__ import annotations

from demixer.client.aio import AsyncClient
from demixer.client.errors import (
    ApiError,
    BadResponse,
    ClientError,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    WaitTimeout,
)
from demixer.client.sync import Client
from demixer.client.types import (
    Allowance,
    EngineModel,
    ErrorInfo,
    FileInfo,
    FilePage,
    Job,
    LogLine,
    Models,
    OutputFile,
    RequestPage,
    Result,
    Status,
    StorageUse,
    Usage,
    UsageLine,
    WebhookInfo,
)

__all__ = [
    "Allowance",
    "ApiError",
    "AsyncClient",
    "BadResponse",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "EngineModel",
    "ErrorInfo",
    "FileInfo",
    "FilePage",
    "Job",
    "JobCancelled",
    "JobFailed",
    "LogLine",
    "Models",
    "OutputFile",
    "RequestPage",
    "Result",
    "Status",
    "StorageUse",
    "Usage",
    "UsageLine",
    "WaitTimeout",
    "WebhookInfo",
]
