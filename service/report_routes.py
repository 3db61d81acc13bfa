"""Routes of the sweep report: PNG plots, the HTML results page and the HTML index.

NOTE: a browser sends no API key with a page or its img requests, so where the service
requires a key for reads (public_reads off), these pages open only through a client that
adds the header; the PNG endpoints work for any client that sends the key.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from service import pages, plots
from service.results import sweep_rows
from service.sweeps import get_sweep, list_sweeps
from worker.store import JobNotFound

logger = logging.getLogger(__name__)

router = APIRouter()

RECENT_SWEEPS = 20
RECENT_JOBS = 30

# Plots of a running sweep change with every job that ends, so browsers must revalidate.
PNG_HEADERS = {"Cache-Control": "no-cache"}


@router.get("/v1/sweeps/{sweep_id}/plots/frontier.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def frontier_png(sweep_id: str, request: Request, accuracy: str = "box_max_log10",
                 time: str = "solve_s") -> Response:
    """Plot accuracy against time per configuration, with the frontier of each series, as PNG."""
    sweep, rows = _sweep_and_rows(request, sweep_id)
    try:
        image = plots.frontier_plot(rows, sweep.get("varied") or [], accuracy, time,
                                    title=_title(sweep, "accuracy against time"))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return Response(image, media_type="image/png", headers=PNG_HEADERS)


@router.get("/v1/sweeps/{sweep_id}/plots/{metric}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def metric_png(sweep_id: str, metric: str, request: Request, x: str | None = None) -> Response:
    """Plot a result metric against a varied field (default: the first numeric one, else n_params) as PNG."""
    sweep, rows = _sweep_and_rows(request, sweep_id)
    varied = sweep.get("varied") or []
    x = x or plots.default_x(rows, varied)
    title = _title(sweep, f"{plots.metric_label(metric)} against {plots.field_label(x)}")
    try:
        image = plots.metric_plot(rows, metric, x, varied, title=title)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return Response(image, media_type="image/png", headers=PNG_HEADERS)


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(sweep_id: str, request: Request) -> HTMLResponse:
    """Show a sweep's results page: sortable table, plots, slopes and spec."""
    try:
        sweep, rows = _sweep_and_rows(request, sweep_id)
    except HTTPException as exc:
        logger.info("GET /sweeps/%s returned %d: %s", sweep_id, exc.status_code, exc.detail)
        return HTMLResponse(pages.render_not_found(str(exc.detail)), status_code=exc.status_code)
    return HTMLResponse(pages.render_sweep_page(sweep, rows))


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request) -> HTMLResponse:
    """List recent sweeps and jobs."""
    store = request.app.state.store
    sweeps = list_sweeps(store, RECENT_SWEEPS)
    jobs, _ = store.list(limit=RECENT_JOBS)
    return HTMLResponse(pages.render_index(sweeps, jobs))


def _sweep_and_rows(request: Request, sweep_id: str) -> tuple[dict, list[dict]]:
    """Return a sweep and its result rows, or raise HTTP 404."""
    store = request.app.state.store
    try:
        sweep = get_sweep(store, sweep_id)
    except JobNotFound:
        raise HTTPException(404, f"sweep {sweep_id} not found") from None
    return sweep, sweep_rows(store, sweep)


def _title(sweep: dict, subject: str) -> str:
    """Return a plot title: its subject, then the sweep's name when it has one."""
    return f"{subject}: {sweep['name']}" if sweep.get("name") else subject
