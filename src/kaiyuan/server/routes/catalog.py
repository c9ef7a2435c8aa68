"""/v1/kaiyuan/catalog: the catalogue with what fits here (memory, the measured bandwidth)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request

from kaiyuan import machine
from kaiyuan.engines.pool import EnginePool
from kaiyuan.protocol.kaiyuan.catalog import Catalog, CatalogEntry, Fit, Machine
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute
from kaiyuan.store import catalog, recommend

router = APIRouter(tags=["models"], route_class=ApiRoute, responses=ERROR_RESPONSES)


@router.get("/v1/kaiyuan/catalog", response_model=Catalog)
async def list_catalog(request: Request) -> Catalog:
    pool: EnginePool = request.app.state.pool
    cache = request.app.state.settings.home / "cache"
    return await asyncio.to_thread(_catalog, pool, cache)


def _catalog(pool: EnginePool, cache_dir: Path) -> Catalog:
    here = machine.this_machine()
    memory = machine.model_memory(here)
    bandwidth = machine.memory_bandwidth(cache_dir)  # measured once, then cached
    installed = {r.id for r in pool.records()}
    entries = []
    for m in catalog.models():
        options = recommend.options(m, memory, bandwidth)
        best = options[0] if options else None
        fit = (
            Fit(
                quantisation=best.quant,
                size_gb=round(best.size_gb, 2),
                tokens_per_second=round(best.tok_s, 1) if best.tok_s else None,
                pull=m.id + (f":{best.quant}" if best.quant and not best.default else ""),
            )
            if best
            else None
        )
        entries.append(
            CatalogEntry(
                id=m.id,
                title=m.title,
                family=m.family,
                publisher=m.publisher,
                origin=m.origin,
                licence=m.licence,
                capabilities=list(m.capabilities),
                format=m.format,
                parameters_b=m.params_b,
                context_length=m.context_length,
                installed=m.id in installed,
                fit=fit,
            )
        )
    machine_info = Machine(cpus=here.cpus, memory_bytes=memory, gpus=len(here.gpus))
    return Catalog(machine=machine_info, data=entries)
