"""GET /v1/models, /health and /metrics."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lite.serve.errors import APIError
from lite.serve.protocol import ErrorResponse, HealthStatus, LiteModelDetails, ModelCard, ModelList
from lite.serve.state import ServerState, get_state

router = APIRouter()


def _card(state: ServerState, name: str) -> ModelCard:
    info = state.model_info
    details = LiteModelDetails(backend=info.backend, dtype=info.dtype,
                               weight_quantization=info.weight_quantization,
                               kv_cache_dtype=info.kv_cache_dtype, vision=info.is_vision,
                               generation_defaults=info.generation_defaults)
    return ModelCard(id=name, created=state.created, max_model_len=state.max_model_len, lite=details)


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: ServerState = Depends(get_state)) -> ModelList:
    return ModelList(data=[_card(state, name) for name in state.config.served_model_names])


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses={404: {"model": ErrorResponse}})
async def retrieve_model(model: str, state: ServerState = Depends(get_state)) -> ModelCard:
    state.check_model(model)
    return _card(state, model)


@router.get("/health", response_model=HealthStatus, responses={503: {"model": ErrorResponse}})
async def health(state: ServerState = Depends(get_state)) -> HealthStatus:
    if not state.engine.is_running:
        raise APIError(503, f"the engine loop has stopped: {state.engine.error!r}", code="engine_dead")
    return HealthStatus()


@router.get("/metrics", response_class=Response)
async def metrics(state: ServerState = Depends(get_state)) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
