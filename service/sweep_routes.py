"""Routes of sweeps: submit one, follow it, list them, cancel one, and download its results."""

from __future__ import annotations

import json
import logging
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from service.auth import Caller, check_owner, current_caller
from service.idempotency import IdempotencyKey, request_sha256
from service.results import aggregate_rows, json_rows, sweep_rows, to_csv, to_json, to_parquet
from service.sweeps import (NoGpuWorker, SweepInvalid, SweepNotQueued, SweepSpec, cancel_sweep,
                            create_sweep, get_sweep, list_sweeps)
from solvers.record import JobRecord
from solvers.schema import bounded
from worker.store import JobNotFound, SweepStateError

logger = logging.getLogger(__name__)

router = APIRouter()

MAX_SWEEP_PAGE = 100
MAX_OFFSET = 10**9  # beyond any real listing, and within Redis's 64-bit range arguments
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8",
               "parquet": "application/vnd.apache.parquet"}


class SweepAccepted(BaseModel):
    """Reply to a submitted sweep."""

    id: str
    status: str
    n_jobs: int
    url: str
    page: str


@router.post("/v1/sweeps", status_code=202, response_model=SweepAccepted)
def submit_sweep(sweep: SweepSpec, request: Request, idempotency_key: IdempotencyKey = None,
                 caller: Caller = Depends(current_caller)) -> Response:
    """Validate every expanded spec of a sweep, then create and queue its jobs; one invalid
    spec rejects the whole sweep (422, with its index and the reason). A retry with the
    same Idempotency-Key and body returns the first reply."""
    app = request.app

    def create() -> dict:
        record = create_sweep(app.state.store, sweep, _enqueuer(app), submitter=caller.submitter,
                              max_time_limit_s=app.state.settings.max_time_limit_s)
        return SweepAccepted(id=record["id"], status=record["status"], n_jobs=len(record["job_ids"]),
                             url=f"/v1/sweeps/{record['id']}", page=f"/sweeps/{record['id']}").model_dump()

    try:
        reply, _ = app.state.idempotency.submit("sweeps", caller.submitter, idempotency_key,
                                                request_sha256(sweep.model_dump(mode="json")), create)
    except SweepInvalid as exc:
        logger.info("POST /v1/sweeps rejected (422): %s", str(exc)[:300])
        return JSONResponse({"message": str(exc), "detail": [_with_location(item) for item in exc.detail]},
                            status_code=422)
    except NoGpuWorker as exc:
        raise HTTPException(409, str(exc)) from None
    except SweepNotQueued as exc:
        raise HTTPException(503, f"the broker is unavailable; the sweep's jobs were not all "
                                 f"queued, so the sweep was ended: {exc}") from None
    return JSONResponse(reply, status_code=202)


def _with_location(item: dict) -> dict:
    """Give a sweep problem the `loc` and `type` keys of FastAPI's validation errors, so the
    422 reply matches the documented schema."""
    field = str(item.get("field") or "")
    location = ["body", *[int(part) if part.isdigit() else part for part in field.split(".") if part]]
    return {"loc": location, "type": "sweep_invalid", **item}


@router.get("/v1/sweeps")
def list_all(request: Request, limit: bounded(1, MAX_SWEEP_PAGE, integer=True, strict=False) = 20,
             offset: bounded(0, MAX_OFFSET, integer=True, strict=False) = 0) -> dict:
    """List sweeps, newest first, with their counts by status and progress."""
    store = request.app.state.store
    return {"items": list_sweeps(store, limit, offset), "total": store.sweep_ids(1)[1],
            "limit": limit, "offset": offset}


@router.get("/v1/sweeps/{sweep_id}")
def get_one(sweep_id: str, request: Request, rows: bool = True) -> Response:
    """Return a sweep: its grid, counts by status, progress, and (unless rows=false) one
    result row per job so far."""
    store = request.app.state.store
    sweep = _get(store, sweep_id)
    body = dict(sweep)
    if rows:
        body["rows"], _ = json_rows(sweep_rows(store, sweep))
    return Response(json.dumps(body), media_type="application/json")


@router.delete("/v1/sweeps/{sweep_id}")
def cancel(sweep_id: str, request: Request, caller: Caller = Depends(current_caller)) -> dict:
    """Cancel a sweep's queued jobs (running ones finish) and mark the sweep cancelled."""
    try:
        submitter = request.app.state.store.get_sweep(sweep_id).get("submitter")
        check_owner(caller, submitter, f"cancel sweep {sweep_id}")
        sweep, cancelled = cancel_sweep(request.app.state.store, sweep_id)
    except JobNotFound:
        raise HTTPException(404, f"sweep {sweep_id} not found") from None
    except SweepStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return {**sweep, "cancelled": cancelled}


@router.get("/v1/sweeps/{sweep_id}/results", response_class=Response,
            responses={200: {"content": {media: {} for media in MEDIA_TYPES.values()}}})
def results(sweep_id: str, request: Request, format: Literal["json", "csv", "parquet"] = "json",
            aggregate: bool = False) -> Response:
    """Download the result rows, one per job (or, with aggregate=true, one per configuration
    with medians and spreads over repeats), as JSON, CSV or Parquet."""
    store = request.app.state.store
    sweep = _get(store, sweep_id)
    rows = sweep_rows(store, sweep)
    if aggregate:
        rows = aggregate_rows(rows)
    name = f"sweep-{sweep_id}{'-aggregated' if aggregate else ''}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "csv":
        content: str | bytes = to_csv(rows)
    elif format == "parquet":
        content = to_parquet(rows, sweep_id=sweep_id, aggregated=str(aggregate).lower())
    else:
        content = to_json(rows, sweep_id=sweep_id, aggregated=aggregate, status=sweep["status"])
    return Response(content, media_type=MEDIA_TYPES[format], headers=headers)


def _get(store, sweep_id: str) -> dict:
    """Return a sweep with its current counts, or raise HTTP 404."""
    try:
        return get_sweep(store, sweep_id)
    except JobNotFound:
        raise HTTPException(404, f"sweep {sweep_id} not found") from None


def _enqueuer(app: FastAPI):
    """Return a function that queues one job the way POST /v1/jobs does, raising
    SweepNotQueued when the broker fails (the failed job is marked failed)."""
    from service.app import _enqueue

    def enqueue(record: JobRecord) -> None:
        try:
            _enqueue(app, record)
        except HTTPException as exc:
            raise SweepNotQueued(str(exc.detail)) from exc

    return enqueue
