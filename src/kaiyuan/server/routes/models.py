"""GET /v1/models and /v1/models/{id}: every servable model, with its provenance."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import ModelNotFound, did_you_mean
from kaiyuan.protocol.openai.models import Model, ModelList
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute
from kaiyuan.store.records import ModelRecord

router = APIRouter(tags=["models"], route_class=ApiRoute)


def _model(record: ModelRecord, pool: EnginePool) -> Model:
    loaded = pool.loaded().get(record.id)
    data = record.public()
    if loaded is not None:
        # What is being served wins over what the file says (e.g. a capped context).
        data["context_length"] = loaded.info.context_length
    return Model(
        **data,
        created=loaded.info.created if loaded else 0,
        owned_by=record.publisher or "kaiyuan",
        loaded=loaded is not None,
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    pool: EnginePool = request.app.state.pool
    return ModelList(data=[_model(record, pool) for record in pool.records()])


@router.get(
    "/v1/models/{model_id:path}",
    response_model=Model,
    responses={404: ERROR_RESPONSES[404]},
)
async def get_model(model_id: str, request: Request) -> Model:
    pool: EnginePool = request.app.state.pool
    records = pool.records()
    for record in records:
        if record.id == model_id:
            return _model(record, pool)
    hint = did_you_mean(model_id, [r.id for r in records])
    raise ModelNotFound(f"model '{model_id}' does not exist{hint}", param="model")
