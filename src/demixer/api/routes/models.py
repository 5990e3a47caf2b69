"""``GET /v1/models``: the queue models, the engine models installed on this server, and the
whole model catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from demixer.api.auth import ModelsRead, ServicesDep
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
from demixer.api.submit import SEPARATE, STEMS, installed_models
from demixer.api.uploads import INPUT_FORMATS
from demixer.audio.encode import BIT_DEPTHS, FORMATS
from demixer.models.registry import ModelSpec, list_specs
from demixer.service.context import Services
from demixer.service.jobs.prompts import separable

__all__ = ["router"]

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


def model_list(services: Services) -> ModelList:
    """What ``GET /v1/models`` answers."""
    settings = services.settings
    installed = installed_models(services)
    limits = Limits(
        max_file_size=settings.max_upload_bytes,
        max_duration=settings.max_duration_seconds,
        input_formats=INPUT_FORMATS,
        output_formats=list(FORMATS),
        bit_depths={fmt: list(depths) for fmt, depths in BIT_DEPTHS.items()},
    )
    here = {spec.id for spec in installed}
    catalogue = [_engine_model(spec, spec.id in here, limits) for spec in list_specs()]
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
    return ModelList(data=queue_models, engine_models=engines, catalogue=catalogue)


def _engine_model(spec: ModelSpec, installed: bool, limits: Limits) -> EngineModel:
    record = spec.summary()
    fields = {name: record[name] for name in EngineModel.model_fields if name in record}
    install = None if installed else _install_command(spec)
    return EngineModel(**fields, installed=installed, install=install, limits=limits)


def _install_command(spec: ModelSpec) -> str:
    """``demixer models pull ID`` for weights with a download URL, else the model's hint."""
    if spec.weights and all(w.url for w in spec.weights):
        return f"demixer models pull {spec.id}"
    return spec.install_hint


@router.get("/models", responses=error_responses(401, 403))
def get_models(services: ServicesDep, _identity: ModelsRead) -> ModelList:
    """The queue models (`data`), the engine models installed here (`engine_models`) and every
    registered engine model with its licence class and published figures (`catalogue`)."""
    return model_list(services)
