"""Collection routes: ingest documents, follow jobs, search, delete documents, list collections.

With Redis (queued mode) an ingest request is validated, recorded and queued, and answers 202
with a job id at once. In in-process mode (no Redis) the whole job runs in this process and the
request answers 200 with the finished job's status; its record stays readable at /v1/jobs/{id}.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.auth import JOB_ID, Caller, CreateAccess, ReadAccess, WriteAccess
from app.api.schemas import DeleteRequest, DocumentsRequest, SearchRequest, openapi_body, read_body
from app.errors import NotFound
from app.ingest import job_status, submit
from app.logs import request_id
from app.query import delete_documents, list_collections, search
from app.service import Cdeq

router = APIRouter()


def _service(request: Request) -> Cdeq:
    service: Cdeq = request.app.state.service
    return service


@router.post(
    "/v1/collections/{name}/documents",
    dependencies=[CreateAccess],
    openapi_extra=openapi_body(DocumentsRequest),
    status_code=202,
    summary="Ingest documents (202 + job id with a queue; 200 + finished job in-process)",
)
async def add_documents(name: str, request: Request) -> Response:
    service = _service(request)
    req = await read_body(request, DocumentsRequest)
    if service.queued:  # validating and queueing holds the documents: bounded, like embedding
        async with request.app.state.ingest_in_flight.slot():
            job_id = await run_in_threadpool(
                lambda: submit(name, req.documents, service=service, request_id=request_id.get())
            )
        return JSONResponse(
            {"job_id": job_id}, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"}
        )
    # In-process: refuse at once when the model server is full; once accepted, the job's
    # batches wait for room in the queue instead of failing half-way.
    served = service.serve_model()
    served.check_room()

    def run() -> str:
        with served.waiting_for_room():
            return submit(name, req.documents, service=service, request_id=request_id.get())

    job_id = await run_in_threadpool(run)
    status = await run_in_threadpool(lambda: job_status(job_id, service=service))
    return JSONResponse(
        status.to_dict(), status_code=200, headers={"Location": f"/v1/jobs/{job_id}"}
    )


@router.get(
    "/v1/jobs/{job_id}", dependencies=[ReadAccess], summary="A queued job's state and counts"
)
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    service = _service(request)
    if not JOB_ID.fullmatch(job_id):
        raise NotFound("job not found (job ids are letters, digits, '-' and '_')")
    status = await run_in_threadpool(lambda: job_status(job_id, service=service))
    return status.to_dict()


@router.post(
    "/v1/collections/{name}/search",
    dependencies=[ReadAccess],
    openapi_extra=openapi_body(SearchRequest),
    summary="Search a collection with its own context",
)
async def search_collection(name: str, request: Request) -> dict[str, Any]:
    service = _service(request)
    req = await read_body(request, SearchRequest)
    hits = await run_in_threadpool(
        lambda: search(
            name,
            req.text,
            req.top_k,
            req.filter,
            mode=req.mode,
            group=req.group,
            service=service,
        )
    )
    return {"results": [h.to_dict() for h in hits]}


@router.delete(
    "/v1/collections/{name}/documents",
    dependencies=[WriteAccess],
    openapi_extra=openapi_body(DeleteRequest),
    summary="Delete documents by id",
)
async def remove_documents(name: str, request: Request) -> dict[str, int]:
    service = _service(request)
    req = await read_body(request, DeleteRequest)
    deleted = await run_in_threadpool(
        lambda: delete_documents(name, req.document_ids(), service=service)
    )
    return {"deleted": deleted}


@router.get("/v1/collections", summary="Collections with sizes and context versions")
async def get_collections(
    request: Request, caller: Annotated[Caller, ReadAccess]
) -> dict[str, Any]:
    service = _service(request)
    infos = await run_in_threadpool(lambda: list_collections(service=service))
    infos = [c for c in infos if caller.sees(c.name)]  # only those the key may see
    return {
        "object": "list",
        "data": [
            {
                "name": c.name,
                "documents": c.documents,
                "points": c.points,
                "context_version": c.context_version,
                "sparse": c.sparse,
            }
            for c in infos
        ],
    }
