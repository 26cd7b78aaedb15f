"""The trace viewer: a page over the trace store and the JSON it reads.

``make_viewer_router`` gives the routes (``ttc serve`` mounts them at ``/``);
``viewer_app`` wraps them in an app of their own (``ttc traces serve``). Routes:

- ``/``: the page (``static/index.html``); ``/?key=KEY`` sets the session cookie once.
- ``/login`` (POST, form field ``key``): the same for a person typing the key.
- ``/static/{name}``: the page's script and style, shipped as package data.
- ``/api/runs``: runs with filters (kind, status, task, strategy, model, stage, since,
  until, limit), newest first.
- ``/api/runs/{id}``: a run with its spans and candidates (id or unique prefix).
- ``/api/runs/{id}/points``: that run's accuracy-vs-compute plot data.
- ``/api/points``: one point per matching run (evals by default).
- ``/api/compare?a=&b=``: two runs compared problem by problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine

from ._data import compare_json, points_json, run_detail_json, run_points_json, runs_json
from ._security import SECURITY_HEADERS, KeyGuard, SecureRoute, api_error, login_page

__all__ = ["ASSETS", "make_viewer_router", "viewer_app"]

#: The files under ``static/`` the viewer serves, with their media types (nothing else is).
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "plot.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "viewer.css": "text/css; charset=utf-8",
}
_MAX_LOGIN_BODY = 4096


@cache
def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _finite(value: Any) -> Any:
    # JSON has no NaN or infinity; a stored attribute may hold one (SQLite keeps what Python wrote).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json(content: Any) -> Response:
    try:
        body = json.dumps(content, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = json.dumps(_finite(content), separators=(",", ":"))
    return Response(body, media_type="application/json")


Text = Annotated[str | None, Query(max_length=1000)]


def make_viewer_router(engine_getter: Callable[[], Engine], api_key: str | None = None) -> APIRouter:
    """The viewer's routes, to mount at the root of an app.

    Args:
        engine_getter: Returns the (migrated) store engine; called once per request.
        api_key: With a key, every route but the login form wants it (see ``_security``).

    Returns:
        A router whose every response carries ``Content-Security-Policy: default-src 'self'``.
    """
    guard = KeyGuard(api_key)
    router = APIRouter(route_class=SecureRoute)
    auth = [Depends(guard.require)]

    @router.get("/", include_in_schema=False)
    def page(request: Request, key: Annotated[str | None, Query(max_length=1000)] = None) -> Response:
        if key is not None:  # ?key=KEY: the cookie once, then the URL without the key
            if not guard.key_ok(key):
                return login_page("wrong API key")
            response = RedirectResponse(request.url.path, status_code=303)
            guard.set_session(response, request)
            return response
        if not guard.allows(request):
            return login_page()
        return Response(_asset("index.html"), media_type=ASSETS["index.html"])

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_LOGIN_BODY:
                return login_page("request too large", status=413)
        key = parse_qs(body.decode("utf-8", "replace")).get("key", [None])[0]
        if not guard.enabled:
            return RedirectResponse("./", status_code=303)
        if not guard.key_ok(key):
            return login_page("wrong API key")
        response = RedirectResponse("./", status_code=303)
        guard.set_session(response, request)
        return response

    @router.get("/static/{name}", dependencies=auth, include_in_schema=False)
    def static(name: str) -> Response:
        if name not in ASSETS:
            return api_error(404, "not_found", f"no asset {name!r}")
        return Response(_asset(name), media_type=ASSETS[name])

    @router.get("/api/runs", dependencies=auth)
    def api_runs(kind: Text = None, status: Text = None, task: Text = None, strategy: Text = None,
                 model: Text = None, stage: Text = None, since: Text = None, until: Text = None,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Response:
        """Runs with filters, newest first (large attributes left out; see ``attributes_omitted``)."""
        return _json(runs_json(engine_getter(), {
            "kind": kind, "status": status, "task": task, "strategy": strategy, "model": model, "stage": stage,
            "since": since, "until": until, "limit": limit}))

    @router.get("/api/runs/{run_id}", dependencies=auth)
    def api_run(run_id: str) -> Response:
        """One run (id or unique prefix) with its spans and candidates."""
        return _json(run_detail_json(engine_getter(), run_id))

    @router.get("/api/runs/{run_id}/points", dependencies=auth)
    def api_run_points(run_id: str, peers: Annotated[int, Query(ge=0, le=500)] = 30) -> Response:
        """A run's accuracy-vs-compute data: its point, its peers' points and its outcomes."""
        return _json(run_points_json(engine_getter(), run_id, peers=peers))

    @router.get("/api/points", dependencies=auth)
    def api_points(kind: Text = None, status: Text = None, task: Text = None, strategy: Text = None,
                   model: Text = None, stage: Text = None, since: Text = None, until: Text = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> Response:
        """Accuracy against mean compute, one point per matching run (kind defaults to eval)."""
        return _json(points_json(engine_getter(), {
            "kind": kind, "status": status, "task": task, "strategy": strategy, "model": model, "stage": stage,
            "since": since, "until": until, "limit": limit}))

    @router.get("/api/compare", dependencies=auth)
    def api_compare(a: Annotated[str, Query(min_length=1, max_length=100)],
                    b: Annotated[str, Query(min_length=1, max_length=100)]) -> Response:
        """Two runs problem by problem: both correct, only A, only B, neither, McNemar's p."""
        return _json(compare_json(engine_getter(), a, b))

    return router


def viewer_app(db_url: str | None = None, api_key: str | None = None) -> FastAPI:
    """The viewer alone, as an app (``ttc traces serve``).

    The store is opened (and migrated) now, so a bad or unreachable database fails here,
    before anything listens.

    Args:
        db_url: SQLAlchemy URL (None: ``TTC_DB``, then ``sqlite:///ttc.db``).
        api_key: See :func:`make_viewer_router`.

    Raises:
        BadDatabaseURL: The URL is not valid.
        StoreError: The database is unreachable or cannot be migrated.
    """
    from ttc.store.engine import make_engine, migrate, resolve_db_url

    engine = make_engine(resolve_db_url(db_url))
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    # No /docs: its page loads scripts from a CDN, which the viewer's CSP forbids.
    app = FastAPI(title="ttc traces", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.include_router(make_viewer_router(lambda: engine, api_key))

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        # The router's responses have these already; this covers the app's own (an unknown path's 404).
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
