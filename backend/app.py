"""create_app(): the API routers under /api, the static dashboard at /, JSON error handlers, and the front
door (backend.guard) in front of them all."""
from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import jobs
from .config import get_settings
from .db import new_session, upgrade_database
from .errors import DomainError
from .guard import Guard
from .schemas import BAD_INPUT
from .routes import jobs as jobs_routes
from .routes import meta, networks, results

log = logging.getLogger("toroid.api")
FRONTEND = Path(__file__).resolve().parent.parent / "frontend"


def plotly_js() -> Path:
    """plotly.js as shipped inside the plotly Python package: the dashboard works offline."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class ErrorOut(BaseModel):
    detail: str


# Every error the API answers with, in the OpenAPI description (422 FastAPI adds itself).
ERROR_RESPONSES = {status: {"model": ErrorOut, "description": text} for status, text in (
    (400, "bad input: the message says what to change"),
    (401, "an API token is required (Authorization: Bearer <token>) or the one sent is unknown"),
    (403, "the thing belongs to someone else"),
    (404, "no such thing, or not visible to the caller"),
    (408, "the request body stalled"),
    (409, "conflicts with the current state (e.g. an Idempotency-Key reused for another request)"),
    (413, "body over its limit, or the storage quota is full"),
    (429, "the caller's limit of unfinished jobs is reached"),
)}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


CLEAN_RESULTS_EVERY = 3600.0  # seconds between two cleanups of the Celery result backend


async def _reconcile_forever(every: float) -> None:
    """Re-send lost jobs and re-queue those whose worker died (backend.jobs.reconcile); once an hour (and at
    start) delete expired chunk results of fanned-out jobs (workers.glue.app.clean_results)."""
    first, cleaned = True, -math.inf
    while True:
        try:
            with new_session() as session:
                done = await asyncio.to_thread(jobs.reconcile, session, first)
            if done["requeued"] or (done["resent"] and not first):
                log.warning("reconciler: re-queued %s, re-sent %s", done["requeued"], done["resent"])
        except Exception:  # noqa: BLE001 - the database or broker may be briefly away; try again later
            log.exception("reconciler pass failed")
        if time.monotonic() - cleaned >= CLEAN_RESULTS_EVERY:
            cleaned = time.monotonic()
            try:
                from workers.glue.app import clean_results  # (lazily, as lifecycle.enqueue: the app of the settings)

                await asyncio.to_thread(clean_results)
            except Exception:  # noqa: BLE001 - the result backend may be briefly away
                log.exception("cleaning the result backend failed")
        first = False
        if every <= 0:
            return
        await asyncio.sleep(every)


def create_app(migrate: bool = True, require_auth: bool | None = None, reconcile: bool = True) -> FastAPI:
    """The service. ``require_auth`` None follows TOROID_AUTH ("on" requires a token)."""
    settings = get_settings()
    settings.ensure_dirs()
    if migrate:
        upgrade_database()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Threads for database work: few enough that they do not fight over the interpreter, as many
        # as the pool keeps connections for (backend.db)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        # The process holds ~250k long-lived objects (torch, the catalogues): a full garbage collection
        # walking them all took ~110 ms, a pause every request in flight waited for. They live as long
        # as the process, so the collector is told to leave them alone.
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(_reconcile_forever(settings.reconcile_every)) if reconcile else None
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(title="Toroid", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Explorer of the error landscapes of trained neural networks.")
    app.state.require_auth = settings.auth == "on" if require_auth is None else require_auth

    app.add_middleware(Guard)  # authentication, body limits and unexpected errors (backend.guard)

    @app.exception_handler(RequestValidationError)
    async def validation_handler(_request: Request, exc: RequestValidationError):
        # NULs and over-long or over-deep free-form JSON are the caller's mistake in so many words: 400
        status = 400 if any(e.get("type") == BAD_INPUT for e in exc.errors()) else 422
        return JSONResponse({"detail": _validation_message(exc)}, status_code=status)

    @app.exception_handler(DomainError)
    async def domain_handler(_request: Request, exc: DomainError):
        # the one mapping of domain errors to HTTP (backend/errors.py): each class says its status
        return JSONResponse({"detail": exc.detail, **exc.more}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_handler(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    for router in (meta.router, networks.router, jobs_routes.router, results.router):
        app.include_router(router, prefix="/api", responses=ERROR_RESPONSES)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        from .metrics import check_scraper, render

        if app.state.require_auth:
            await check_scraper(request)
        return Response(await run_in_threadpool(render), media_type=CONTENT_TYPE_LATEST)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> FileResponse:
        return FileResponse(plotly_js(), media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    # /docs: Swagger UI 5 (reads OpenAPI 3.1) as shipped in the fastapi-offline package, served here: no CDN
    from importlib.util import find_spec

    from fastapi.openapi.docs import get_swagger_ui_html

    swagger = Path(find_spec("fastapi_offline").submodule_search_locations[0]) / "static"
    app.mount("/vendor/swagger-ui", StaticFiles(directory=str(swagger)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> Response:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="Toroid API", swagger_favicon_url="/favicon.svg",
                                   swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/vendor/swagger-ui/swagger-ui.css")

    app.mount("/", StaticFiles(directory=FRONTEND, html=True), name="frontend")
    return app
