"""Context lifecycle routes: inspect, rebuild, roll back and prune a collection's context, and
drop a whole collection. Thin: parse, call `app.lifecycle`, answer.

A rebuild with Redis is queued for the workers and answers 202 with its job id (follow it at
/v1/jobs/{id}); in in-process mode it runs here and answers 200 with the finished job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminAccess, ReadAccess
from app.api.schemas import openapi_body, read_body
from app.ingest import job_status
from app.lifecycle import context_info, drop_collection, prune, rebuild_context, rollback
from app.logs import request_id
from app.service import Cdeq

router = APIRouter()


class RebuildRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    sample_size: int | None = Field(
        None, description="stored texts sampled for stage 1 (CDEQ_INGEST__CONTEXT_SAMPLE_SIZE)"
    )
    seed: int | None = Field(None, description="sampling seed (CDEQ_INGEST__CONTEXT_SEED)")
    context_texts: list[str] | None = Field(
        None, description="build the context from these texts instead of a sample"
    )


def _service(request: Request) -> Cdeq:
    service: Cdeq = request.app.state.service
    return service


@router.get(
    "/v1/collections/{name}/context",
    dependencies=[ReadAccess],
    summary="The live context: version, source, model, growth; drift with ?drift=true",
)
async def get_context(
    name: str,
    request: Request,
    drift: bool = False,
    drift_sample: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    service = _service(request)
    info = await run_in_threadpool(
        lambda: context_info(
            name, drift=drift, drift_sample=drift_sample, seed=seed, service=service
        )
    )
    return info.to_dict()


@router.post(
    "/v1/collections/{name}/context/rebuild",
    dependencies=[AdminAccess],
    openapi_extra={
        "requestBody": {**openapi_body(RebuildRequest)["requestBody"], "required": False}
    },
    status_code=202,
    summary="Rebuild the context from the whole collection (202 + job id; 200 in-process)",
)
async def rebuild(name: str, request: Request) -> Response:
    service = _service(request)
    body = await request.body()
    req = (
        await read_body(request, RebuildRequest)
        if body.strip()
        else RebuildRequest.model_validate({})
    )

    def start() -> str:
        return rebuild_context(
            name,
            sample_size=req.sample_size,
            seed=req.seed,
            context_texts=req.context_texts,
            service=service,
            request_id=request_id.get(),
        )

    if service.queued:
        job_id = await run_in_threadpool(start)
        return JSONResponse(
            {"job_id": job_id}, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"}
        )
    job_id = await run_in_threadpool(start)  # in-process: the whole rebuild runs here
    status = await run_in_threadpool(lambda: job_status(job_id, service=service))
    return JSONResponse(
        status.to_dict(), status_code=200, headers={"Location": f"/v1/jobs/{job_id}"}
    )


@router.post(
    "/v1/collections/{name}/context/rollback",
    dependencies=[AdminAccess],
    summary="Make the previous kept context version live again",
)
async def rollback_context(name: str, request: Request) -> dict[str, Any]:
    service = _service(request)
    # May re-embed what changed since the swap, through the model like any other request.
    version = await run_in_threadpool(lambda: rollback(name, service=service))
    return {"collection": name, "version": version}


@router.post(
    "/v1/collections/{name}/context/prune",
    dependencies=[AdminAccess],
    summary="Delete every context version but the live one",
)
async def prune_context(name: str, request: Request) -> dict[str, Any]:
    service = _service(request)
    removed = await run_in_threadpool(lambda: prune(name, service=service))
    return {"collection": name, "removed": removed}


@router.delete(
    "/v1/collections/{name}",
    dependencies=[AdminAccess],
    summary="Delete a collection: alias, every version and every context",
)
async def delete_collection(name: str, request: Request, force: bool = False) -> dict[str, Any]:
    """409 while a rebuild of it runs, unless `force=true`, which cancels the rebuild."""
    service = _service(request)
    await run_in_threadpool(lambda: drop_collection(name, service=service, force=force))
    return {"collection": name, "dropped": True}
