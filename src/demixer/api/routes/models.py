"""``GET /v1/models``: the queue models, the engine models installed on this server, and the
whole model catalogue."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from demixer.api.auth import MODELS_READ, ModelsRead, authorize, bearer_secret
from demixer.api.lanes import Lane
from demixer.api.openapi import error_responses
from demixer.api.schemas import (
    EngineModel,
    Limits,
    ModelList,
    OutputFile,
    QueueModel,
    SeparateOutput,
    SeparateRequest,
    StemsRequest,
)
from demixer.api.submit import SEPARATE, STEMS, install_command, installed_models
from demixer.api.uploads import INPUT_FORMATS
from demixer.audio.encode import BIT_DEPTHS, FORMATS
from demixer.models.loading import is_installed
from demixer.models.registry import ModelSpec, list_specs
from demixer.service.batchread import Batched
from demixer.service.context import Services
from demixer.service.jobs.prompts import separable
from demixer.service.worker.registry import advertised_models

__all__ = ["DISK_SECONDS", "LANES", "ModelLists", "model_list", "router"]

router = APIRouter(prefix="/v1", tags=["models"])


def _stems_output_schema() -> dict[str, Any]:
    file_schema = OutputFile.model_json_schema()
    return {
        "title": "StemsOutput",
        "description": "One file per requested stem (named after it), plus `residual` "
        "(everything the stems leave out) when the stems do not cover the model and it is "
        "audible, or when it was asked for.",
        "type": "object",
        "properties": {
            "residual": file_schema,
            "duration": {"type": "number", "description": "Seconds."},
            "sample_rate": {"type": "integer", "description": "Hz."},
        },
        "required": ["duration", "sample_rate"],
        "additionalProperties": file_schema,
    }


def model_list(services: Services, installed: list[ModelSpec] | None = None) -> ModelList:
    """What ``GET /v1/models`` answers (``installed``: :func:`installed_models`, when the caller
    has it)."""
    settings = services.settings
    if installed is None:
        installed = installed_models(services)
    limits = Limits(
        max_file_size=settings.max_upload_bytes,
        max_duration=settings.max_duration_seconds,
        input_formats=INPUT_FORMATS,
        output_formats=list(FORMATS),
        bit_depths={fmt: list(depths) for fmt, depths in BIT_DEPTHS.items()},
    )
    here = {spec.id for spec in installed}
    catalogue = [
        _engine_model(spec, spec.id in here, limits, settings.model_dir)
        for spec in list_specs(settings.model_dir)
    ]
    engines = [model for model in catalogue if model.installed]
    stems = sorted({stem for spec in installed for stem in spec.stems})
    queue_models = [
        QueueModel(
            id=SEPARATE,
            description="Separate the sound a text prompt names: `target` is that sound, "
            "`residual` everything else (target + residual = input).",
            input=SeparateRequest.model_json_schema(),
            output=SeparateOutput.model_json_schema(),
            engine_models=[spec.id for spec in installed],
            separable=separable(installed),
        ),
        QueueModel(
            id=STEMS,
            description="Separate named stems with one engine model: one file per stem, "
            "plus `residual` (the input minus the stems) when that is not silent.",
            input=StemsRequest.model_json_schema(),
            output=_stems_output_schema(),
            engine_models=[spec.id for spec in installed],
            separable=stems,
        ),
    ]
    return ModelList(
        data=queue_models,
        engine_models=engines,
        catalogue=catalogue,
        default_model=settings.default_model,
    )


def _engine_model(
    spec: ModelSpec, installed: bool, limits: Limits, model_dir: Path | None
) -> EngineModel:
    record = spec.summary()
    fields = {name: record[name] for name in EngineModel.model_fields if name in record}
    install = None if installed else install_command(spec, model_dir)
    return EngineModel(**fields, installed=installed, install=install, limits=limits)


@router.get("/models", response_model=ModelList, responses=error_responses(401, 403))
async def get_models(request: Request, _identity: ModelsRead) -> Response:
    """The queue models (`data`), the engine models installed here (`engine_models`) and every
    registered engine model with its licence class and published figures (`catalogue`)."""
    return await _answer(request)


async def _answer(request: Request) -> Response:
    lists: ModelLists = request.app.state.model_lists
    if lists.services.db.dialect == "sqlite":
        body = lists.body()  # a local read: in the event loop
    else:  # concurrent requests share one read, in a worker thread
        body = await lists.shared.get(None)
    return Response(body, media_type="application/json")


async def _lane(request: Request) -> Response:
    """``GET /v1/models`` without a query: the route above without FastAPI's routing and
    dependency injection (see :mod:`demixer.api.lanes`)."""
    await authorize(request, await bearer_secret(request), MODELS_READ)
    return await _answer(request)


LANES = (Lane("GET", router.prefix + "/models", _lane),)
"""This module's fast lanes (``create_app`` puts them first)."""

#: Seconds the weights found on this machine are trusted before they are looked for again: a
#: ``demixer models pull`` here shows in the list at most this much later.
DISK_SECONDS = 1.0


class ModelLists:
    """``GET /v1/models``'s JSON, built again only when the models it lists change.

    The list depends on the settings (fixed), the registry (the catalogue, and the models and
    recipes added to the model directory), the models whose weights are on this machine (both
    looked for at most every ``disk_seconds``: that is a file check per weight of every model)
    and the models live workers advertise (read on every call: one indexed
    query, so a worker's models are listed as soon as it has registered).

    Args:
        services: the process's services.
        disk_seconds: see :data:`DISK_SECONDS`.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        services: Services,
        *,
        disk_seconds: float = DISK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.disk_seconds = disk_seconds
        self.clock = clock
        self._specs: tuple[ModelSpec, ...] = ()  # every model, in the registry's order
        self._on_disk: frozenset[str] = frozenset()
        self._disk_due = -math.inf
        # (what the body was built from: the models listed and the ids installed, the body)
        self._built: tuple[tuple[tuple[ModelSpec, ...], frozenset[str]], bytes] | None = None
        self.shared = Batched(lambda _keys: {None: self.body()})  # one read for many requests

    def body(self) -> bytes:
        """The JSON body (blocking: a database read, and a file check now and then)."""
        services = self.services
        model_dir = services.settings.model_dir
        if self.clock() >= self._disk_due:
            # The server's model directory, as the jobs use it: its own models and recipes are
            # listed too, and one added (a recipe whose models are not here) shows at once.
            specs = tuple(list_specs(model_dir))
            # Compared whole, not by id: a recipe file edited under the same id (other stems)
            # is listed as it is now. The same models keep the tuple already held, so the
            # comparison below stays one of identity on every request.
            if specs != self._specs:
                self._specs = specs
            self._on_disk = frozenset(s.id for s in self._specs if is_installed(s, model_dir))
            self._disk_due = self.clock() + self.disk_seconds
        with services.db.snapshot() as conn:
            advertised = advertised_models(conn, services.db.clock())
        ids = self._on_disk | advertised
        built = self._built
        if built is None or built[0] != (self._specs, ids):
            # The models read at the last check: the model directory is not read again here.
            installed = [spec for spec in self._specs if spec.id in ids]  # in order
            body = model_list(services, installed).model_dump_json().encode()
            built = self._built = ((self._specs, ids), body)
        return built[1]
