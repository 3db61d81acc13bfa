"""The HTTP API: submit solve jobs, follow them, and read their results.

Run it with `eulerbench api`; the OpenAPI page is at `/docs`.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import BaseModel
from redis import RedisError

from service import report_routes, sweep_routes
from service.sweep_routes import MAX_OFFSET
from service.sweeps import size_limit_problem
from service.auth import Caller, check_owner, current_caller, install_auth
from service.errors import describe_errors, summarize
from service.idempotency import IdempotencyKey, IdempotencyStore, request_sha256
from service.limits import install_request_limit
from service.metrics import install_metrics
from solvers.record import STATUSES, JobRecord
from solvers.spec import JobSpec, bounded, describe_catalogue
from worker.celery_app import QUEUES, create_celery, job_time_limits
from worker.settings import Settings, get_settings
from worker.store import MAX_PAGE, JobNotFound, JobStateError, JobStore, RecordUnreadable

logger = logging.getLogger(__name__)

TASK_NAME = "eulerbench.run_job"
# Seconds the API waits for one Redis reply before it returns 503.
STORE_SOCKET_TIMEOUT_S = 10.0


class JobAccepted(BaseModel):
    """Reply to a submitted job."""

    id: str
    status: str
    url: str


class JobPage(BaseModel):
    """One page of job records, newest first."""

    items: list[JobRecord]
    total: int
    limit: int
    offset: int


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for the Redis named in settings."""
    settings = settings or get_settings()
    app = FastAPI(title="eulerbench", version="1", lifespan=_warm_up, description=(
        "Solve jobs for dynamic economic models, with Euler-equation errors and timings "
        "measured one way for every method. Non-finite floats in records are written as "
        "the strings \"NaN\", \"Infinity\" and \"-Infinity\"."))
    app.state.store = JobStore.from_url(settings.redis_url, settings.key_prefix,
                                        socket_timeout=STORE_SOCKET_TIMEOUT_S)
    app.state.celery = create_celery(settings.redis_url)
    app.state.settings = settings
    app.state.idempotency = IdempotencyStore(app.state.store.client, settings.key_prefix,
                                             settings.idempotency_ttl_s)
    _add_error_handlers(app)
    _add_job_routes(app)
    app.include_router(sweep_routes.router)
    app.include_router(report_routes.router)
    # Middleware added last runs first: metrics see every reply, auth runs before the size check.
    install_request_limit(app, settings.max_request_bytes)
    install_auth(app, settings)
    install_metrics(app)
    return app


@asynccontextmanager
async def _warm_up(app: FastAPI) -> AsyncIterator[None]:
    """Open the Redis and broker connections and build Celery's message sender before the
    first request, so that it is not slower than the rest.

    A broker that is down is logged, and requests then get 503.
    """
    try:
        app.state.store.ping()
        celery = app.state.celery
        celery.backend, celery.amqp.send_task_message  # built on first use: about 30 ms
        with celery.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1)
            for queue in QUEUES:
                producer.maybe_declare(celery.amqp.queues[queue])
        logger.info("API connected to Redis and the broker")
    except (OperationalError, RedisError, OSError) as exc:
        logger.warning("API started without a broker connection: %s", exc)
    yield


def _record_response(record: JobRecord, status_code: int = 200) -> Response:
    """Serialise a record with the project's rule for non-finite floats."""
    return Response(record.model_dump_json(), status_code=status_code, media_type="application/json")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type and await request.body():
            logger.info("%s %s rejected (415): content-type %r", request.method, request.url.path, content_type)
            return JSONResponse({"message": f"send the body as JSON with content-type "
                                            f"application/json; got {content_type or 'none'!r}",
                                 "detail": []}, status_code=415)
        root = JobSpec if request.url.path.startswith("/v1/jobs") else BaseModel
        detail = describe_errors(list(exc.errors()), root)
        logger.info("%s %s rejected (422): %s", request.method, request.url.path, summarize(detail)[:300])
        return JSONResponse({"message": f"invalid request: {summarize(detail)}", "detail": detail},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else summarize(exc.detail)
        logger.info("%s %s returned %d: %s", request.method, request.url.path, exc.status_code, message[:300])
        return JSONResponse({"message": message, "detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RecordUnreadable)
    async def unreadable_record(request: Request, exc: RecordUnreadable) -> JSONResponse:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"message": str(exc)}, status_code=500)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        logger.error("Redis error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"message": f"the job store is unavailable: {exc}"}, status_code=503)


def _add_job_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Report whether the job store (Redis) replies to PING, and the live workers per queue."""
        ok = app.state.store.ping()
        workers = {queue: len(app.state.store.workers(queue)) for queue in QUEUES} if ok else {}
        return JSONResponse({"status": "ok" if ok else "unavailable", "redis": ok, "workers": workers},
                            status_code=200 if ok else 503)

    @app.get("/v1/catalogue")
    def catalogue() -> dict:
        """List every model, basis, residual, objective and algorithm with its settings,
        defaults and valid combinations."""
        return describe_catalogue()

    @app.post("/v1/jobs", status_code=202, response_model=JobAccepted)
    async def submit_job(spec: JobSpec, idempotency_key: IdempotencyKey = None,
                         caller: Caller = Depends(current_caller)) -> JobAccepted:
        """Queue a solve job; the reply carries its id. A retry with the same
        Idempotency-Key and body returns the first reply."""
        # NOTE: this handler makes its Redis and broker calls on the event loop. Each is a
        # round trip of well under a millisecond to a nearby Redis, and handing the work
        # to the thread pool would cost more CPU than the calls themselves, which caps
        # submissions per second. A Redis that stops replying blocks this API process
        # for up to STORE_SOCKET_TIMEOUT_S.
        limit = app.state.settings.max_time_limit_s
        if spec.time_limit_s > limit:
            detail = [{"field": "time_limit_s", "loc": ["body", "time_limit_s"],
                       "input": spec.time_limit_s, "type": "limit",
                       "msg": f"{spec.time_limit_s:g} s exceeds this service's limit of {limit:g} s"}]
            raise HTTPException(422, detail)
        if spec.device == "gpu" and not app.state.store.workers("gpu"):
            raise HTTPException(409, "no worker is consuming the gpu queue, so this job would "
                                "wait for ever; start one with `eulerbench worker --queues gpu` "
                                "on a machine with a CUDA device, or use device 'cpu' or 'auto'")
        problem = size_limit_problem(spec, app.state.settings)
        if problem is not None:
            raise HTTPException(422, [{"field": "method.basis", "loc": ["body", "method", "basis"],
                                       "input": spec.method.basis.kind, "type": "limit", "msg": problem}])
        try:
            app.state.store.source_for(spec)
        except ValueError as exc:
            detail = [{"field": "method.residual.policy.job_id",
                       "loc": ["body", "method", "residual", "policy", "job_id"],
                       "input": spec.method.residual.policy.job_id, "type": "policy_source", "msg": str(exc)}]
            raise HTTPException(422, detail) from None

        job_id = uuid.uuid4().hex
        reply = JobAccepted(id=job_id, status="queued", url=f"/v1/jobs/{job_id}")
        claim = None
        if idempotency_key is not None:
            request_hash = request_sha256(spec.model_dump(mode="json"))
            claim = app.state.idempotency.claim("jobs", caller.submitter, idempotency_key,
                                                request_hash, reply.model_dump())
        record = app.state.store.create(spec, submitter=caller.submitter, job_id=job_id, claim=claim)
        if record is None:
            return JobAccepted(**await app.state.idempotency.replay(claim, idempotency_key, request_hash))
        try:
            _enqueue(app, record)
        except BaseException:
            if claim is not None:
                app.state.idempotency.release(claim)
            raise
        return reply

    @app.get("/v1/jobs/{job_id}", response_model=JobRecord)
    def get_job(job_id: str) -> Response:
        """Return one job's record: status, progress, errors and timings."""
        return _record_response(_get(app, job_id))

    @app.get("/v1/jobs", response_model=JobPage)
    def list_jobs(model: Literal["growth", "savings", "multi_country"] | None = None,
                  basis: Literal["monomial", "chebyshev", "spline", "grid", "nn"] | None = None,
                  status: Literal[STATUSES] | None = None,  # type: ignore[valid-type]
                  limit: bounded(1, MAX_PAGE, integer=True, strict=False) = 50,
                  offset: bounded(0, MAX_OFFSET, integer=True, strict=False) = 0) -> Response:
        """List jobs, newest first, filtered by model, basis kind and status."""
        items, total = app.state.store.list(model, basis, status, limit, offset)
        page = JobPage(items=items, total=total, limit=limit, offset=offset)
        return Response(page.model_dump_json(), media_type="application/json")

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobRecord)
    def cancel_job(job_id: str, caller: Caller = Depends(current_caller)) -> Response:
        """Cancel a queued job, or ask a running one to stop at its next iteration."""
        check_owner(caller, _get(app, job_id).submitter, f"cancel job {job_id}")
        try:
            record = app.state.store.request_cancel(job_id)
            return _record_response(record, status_code=202 if record.status == "running" else 200)
        except JobNotFound:
            raise HTTPException(404, f"job {job_id} not found") from None
        except JobStateError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.delete("/v1/jobs/{job_id}", status_code=204)
    def delete_job(job_id: str, caller: Caller = Depends(current_caller)) -> Response:
        """Delete an ended job's record and policy."""
        check_owner(caller, _get(app, job_id).submitter, f"delete job {job_id}")
        try:
            app.state.store.delete(job_id)
        except JobNotFound:
            raise HTTPException(404, f"job {job_id} not found") from None
        except JobStateError as exc:
            raise HTTPException(409, str(exc)) from None
        return Response(status_code=204)

    @app.get("/v1/jobs/{job_id}/policy")
    def get_policy(job_id: str) -> dict:
        """Return the fitted policy's parameters (coefficients or network weights)."""
        _get(app, job_id)
        try:
            return app.state.store.get_policy(job_id)
        except JobNotFound:
            raise HTTPException(404, f"job {job_id} has no fitted policy") from None


def _get(app: FastAPI, job_id: str) -> JobRecord:
    """Return a record, or raise HTTP 404."""
    try:
        return app.state.store.get(job_id)
    except JobNotFound:
        raise HTTPException(404, f"job {job_id} not found") from None


def queue_for(spec: JobSpec, store: JobStore) -> str:
    """Return the queue a job goes to: 'gpu' for device 'gpu', and for device 'auto' when
    the job trains a network and a worker consumes the gpu queue; 'cpu' otherwise."""
    if spec.device == "gpu":
        return "gpu"
    if spec.device == "auto" and spec.method.basis.kind == "nn" and store.workers("gpu"):
        return "gpu"
    return "cpu"


def _enqueue(app: FastAPI, record: JobRecord) -> None:
    """Send the job to its queue; mark it failed and return 503 when the broker is down."""
    spec = record.spec
    settings: Settings = app.state.settings
    queue = queue_for(spec, app.state.store)
    soft, hard = job_time_limits(spec.time_limit_s, settings)
    try:
        app.state.celery.send_task(TASK_NAME, args=[record.id], queue=queue,
                                   soft_time_limit=soft, time_limit=hard)
    except (OperationalError, RedisError) as exc:
        logger.error("job %s could not be queued: %s", record.id, exc)
        app.state.store.finish(record.id, "failed", {"error": f"could not be queued: {exc}"})
        raise HTTPException(503, f"the broker is unavailable; job {record.id} was not queued") from exc
    try:
        app.state.store.mark_sent(record.id)
    except RedisError as exc:
        # The job is on the broker, so the reply stays 202. The worker clears the mark when
        # the job starts, or else the sweeper sends a spare message that the worker drops.
        logger.warning("job %s queued, but its unsent mark stays: %s", record.id, exc)
    logger.info("job %s queued on %s", record.id, queue)


def __getattr__(name: str):
    """Build the module-level `app` for `uvicorn service.app:app` on first access."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
