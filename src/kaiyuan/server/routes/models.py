"""GET /v1/models and /v1/models/{id}: every servable model, with its provenance."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import ModelNotFound, did_you_mean
from kaiyuan.protocol.openai.models import Model, ModelList
from kaiyuan.server.auth import visible
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


def _listed(pool: EnginePool) -> list[Model]:
    """Every servable model, then each alias of one (config ``aliases``) under its own id."""
    models = [_model(record, pool) for record in pool.records()]
    by_id = {m.id: m for m in models}
    for alias, target in pool.settings.aliases.items():
        if target in by_id and alias not in by_id:
            models.append(by_id[target].model_copy(update={"id": alias, "alias_of": target}))
    return models


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=visible(request, _listed(request.app.state.pool)))


@router.get(
    "/v1/models/{model_id:path}",
    response_model=Model,
    responses={404: ERROR_RESPONSES[404]},
)
async def get_model(model_id: str, request: Request) -> Model:
    models = visible(request, _listed(request.app.state.pool))
    for model in models:
        if model.id == model_id:
            return model
    hint = did_you_mean(model_id, [m.id for m in models])
    raise ModelNotFound(f"model '{model_id}' does not exist{hint}", param="model")
