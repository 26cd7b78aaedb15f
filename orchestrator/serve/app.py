"""The ``ttc serve`` application: an OpenAI-compatible API with test-time compute behind it.

Routes: ``GET /health``, ``GET /v1/models`` (and ``/v1/models/{model}``),
``POST /v1/chat/completions`` and ``POST /v1/completions``, streaming (SSE) or not; the
trace viewer at ``/`` when its module is installed. A model name picks a strategy
(``best_of_n/countdown-direct``) or, bare, gets one plain sample; ``ttc`` in the body
sets strategy, task, budget, other roles and strategy parameters (see
:mod:`ttc.orchestrator.chat`). Bodies are read by hand rather than by FastAPI's models, so
any JSON reaches ttc's own checks and every rejection is a 400 in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ttc.backends.base import Backend
from ttc.backends.errors import BadInputError
from ttc.tasks.registry import builtin_models, find_builtin

from ..chat import (
    ChatPlan,
    chat_completion,
    plan_chat,
    plan_completion,
    text_completion,
)
from .errors import ApiError, ModelNotFoundError, error_for, install_error_handlers
from .streaming import DONE, StreamFormat, sse
from .work import Admission, Done, Job, OpenRuns

__all__ = ["DEFAULT_MAX_REQUEST_TOKENS", "Catalog", "ServeState", "create_app"]

#: Largest request body accepted (a chat with a long context is a few hundred KiB).
MAX_BODY_BYTES = 8 * 2**20
#: Default cap on the tokens one request run by ttc may spend (all samples, judge calls...).
DEFAULT_MAX_REQUEST_TOKENS = 100_000


class Catalog:
    """The models this server serves: built-in checkpoints, ``--model NAME=PATH`` and
    ``--upstream NAME=BASE_URL``. Any other name is a 404: a request never makes the
    server load a path of its choosing."""

    def __init__(self, orc: Any, models: dict[str, str] | None = None, upstreams: dict[str, str] | None = None):
        self.orc = orc
        self.local = dict(models or {})
        self.upstreams = dict(upstreams or {})
        for name, path in self.local.items():
            if not (Path(path).expanduser() / "config.json").is_file():
                raise BadInputError(f"--model {name}={path}: not a checkpoint directory (no config.json)")
        for name, url in self.upstreams.items():
            if not url.startswith(("http://", "https://")):
                raise BadInputError(f"--upstream {name}={url}: the base URL looks like http://HOST:PORT/v1")

    def entries(self) -> list[tuple[str, str]]:
        """(name, owner) of every model served."""
        names = [(m.name, "ttc") for m in builtin_models() if m.name not in self.local and m.name not in self.upstreams]
        return names + [(n, "local") for n in self.local] + [(n, "upstream") for n in self.upstreams]

    def has(self, name: str) -> bool:
        return name in self.local or name in self.upstreams or find_builtin(name) is not None

    def check(self, plan: ChatPlan) -> None:
        """Raises ModelNotFoundError (404) for a model the plan names that is not served."""
        if not self.has(plan.model):
            raise ModelNotFoundError(plan.model)
        for role, name in plan.models.items():
            if not self.has(name):
                raise ModelNotFoundError(name, param=f"ttc.models.{role}")

    def upstream_url(self, name: str) -> str | None:
        return self.upstreams.get(name)

    def load(self, name: str) -> Backend:
        """The backend of a served model (loaded once, shared by every request)."""
        if name in self.local:
            return self.orc.backend(self.local[name])
        if name in self.upstreams:
            return self.orc.backend(name, base_url=self.upstreams[name])
        if find_builtin(name) is not None:
            return self.orc.backend(name)
        raise ModelNotFoundError(name)


class ServeState:
    """What the routes share: orchestrator, catalog, admission, open runs, HTTP client."""

    def __init__(self, orc: Any, catalog: Catalog, admission: Admission, api_key: str | None,
                 max_request_tokens: int | None = None):
        self.orc, self.catalog, self.admission, self.api_key = orc, catalog, admission, api_key
        self.max_request_tokens = max_request_tokens
        self.runs = OpenRuns(orc.store)
        self.artifacts = orc.artifacts()
        self.http = httpx.Client(timeout=httpx.Timeout(600.0, connect=5.0))
        #: Runs the last shutdown marked interrupted (the CLI reports it).
        self.interrupted = 0


def _check_key(request: Request) -> None:
    state: ServeState = request.app.state.ttc
    if state.api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.api_key.encode()):
        raise ApiError(401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'",
                       code="invalid_api_key")


async def _read_json(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes", code="request_too_large")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes", code="request_too_large")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"the request body is not valid JSON: {str(exc).splitlines()[0][:120]}",
                       code="invalid_json") from None


def _body(done: Done, plan: ChatPlan, trace_id: str) -> dict[str, Any]:
    if done.proxied is not None:
        return {**(done.proxied.body or {}), "ttc": done.ttc}
    assert done.outcome is not None
    build = chat_completion if plan.kind == "chat" else text_completion
    return build(trace_id, plan.model, done.outcome.choices, done.outcome.usage, done.ttc)


async def _events(job: Job, plan: ChatPlan, trace_id: str) -> AsyncIterator[str]:
    fmt = StreamFormat(plan.kind, trace_id, plan.model, plan.include_usage)
    try:
        if job.upstream is None:
            for i in range(plan.sampling.n * len(plan.prompts)):
                start = fmt.start(i)
                if start is not None:
                    yield start
        while True:
            event = await job.events.get()
            if event[0] == "delta":
                yield fmt.delta(event[1], event[2])
            elif event[0] == "raw":
                yield event[1]
            elif event[0] == "error":
                yield sse(error_for(event[1]).body())
                yield DONE
                return
            elif event[0] == "done":
                done: Done = event[1]
                if done.outcome is not None:
                    last = len(done.outcome.choices) - 1
                    for i, c in enumerate(done.outcome.choices):
                        yield fmt.finish(i, c["finish_reason"], done.ttc if i == last else None)
                    usage = fmt.usage(done.outcome.usage, done.ttc)
                    if usage is not None:
                        yield usage
                elif plan.include_usage and done.proxied is not None and done.proxied.usage_chunk is not None:
                    yield sse({**done.proxied.usage_chunk, "ttc": done.ttc})
                yield DONE
                return
    finally:
        job.cancel.set()  # a client that left stops the work at its next delta


async def _handle(request: Request, kind: str) -> Response:
    state: ServeState = request.app.state.ttc
    try:
        body = await _read_json(request)
        plan = plan_chat(body) if kind == "chat" else plan_completion(body)
        state.catalog.check(plan)
        state.admission.enter()
    except Exception as exc:  # noqa: BLE001 - answered in OpenAI's shape
        return error_for(exc).response()
    job = Job(state, plan, body, asyncio.get_running_loop())
    job.start()
    event = await job.events.get()
    if event[0] == "error":
        return error_for(event[1]).response()
    trace_id = event[1]
    if plan.stream:
        return StreamingResponse(_events(job, plan, trace_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    while True:
        event = await job.events.get()
        if event[0] == "error":
            return error_for(event[1]).response()
        if event[0] == "done":
            return JSONResponse(_body(event[1], plan, trace_id))


def create_app(orc: Any, *, api_key: str | None = None, max_concurrency: int = 8, max_queued: int | None = None,
               models: dict[str, str] | None = None, upstreams: dict[str, str] | None = None,
               max_request_tokens: int | None = DEFAULT_MAX_REQUEST_TOKENS, viewer: bool = True) -> FastAPI:
    """The FastAPI application of ``ttc serve``.

    Args:
        orc: The Orchestrator (its store records every request; its models are shared).
            In-process models loaded from now on batch concurrent requests' decodes.
        api_key: When set, ``/v1/*`` (and the viewer) need ``Authorization: Bearer KEY``.
        max_concurrency: Requests running at once.
        max_queued: Requests waiting beyond those (default: 4 x max_concurrency); any more
            are answered 429.
        models: Served name -> checkpoint directory.
        upstreams: Served name -> base URL of the OpenAI-compatible server that serves it.
        max_request_tokens: The most tokens one request run by ttc may spend (its
            ``ttc.budget.tokens`` is lowered to it); None: no limit. Requests passed
            through to an upstream are the upstream's to limit.
        viewer: Mount the trace viewer at ``/`` when ``ttc.orchestrator.viewer`` exists.

    Raises:
        BadInputError: A bad ``--model`` path or ``--upstream`` URL, or a bad capacity.
    """
    if max_concurrency < 1 or (max_queued is not None and max_queued < 0):
        raise BadInputError("max_concurrency must be at least 1 and max_queued at least 0")
    if max_request_tokens is not None and max_request_tokens < 1:
        raise BadInputError("max_request_tokens must be at least 1 (None: no limit)")
    orc.batch_generation = True  # concurrent requests on one in-process model decode together
    catalog = Catalog(orc, models, upstreams)
    queued = 4 * max_concurrency if max_queued is None else max_queued
    state = ServeState(orc, catalog, Admission(max_concurrency, queued), api_key, max_request_tokens)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Requests still open here outlived the drain: their runs end interrupted.
        state.interrupted += state.runs.interrupt_all("stopped: the server shut down")
        state.http.close()

    app = FastAPI(title="ttc serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.ttc = state
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **state.admission.stats(), "open_runs": len(state.runs)}

    api = APIRouter(prefix="/v1", dependencies=[Depends(_check_key)])

    @api.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": o}
                                           for n, o in catalog.entries()]}

    @api.get("/models/{model:path}")
    async def get_model(model: str) -> Response:
        owner = dict(catalog.entries()).get(model)
        if owner is None:
            return error_for(ModelNotFoundError(model)).response()
        return JSONResponse({"id": model, "object": "model", "created": 0, "owned_by": owner})

    @api.post("/chat/completions")
    async def chat(request: Request) -> Response:
        return await _handle(request, "chat")

    @api.post("/completions")
    async def completions(request: Request) -> Response:
        return await _handle(request, "completion")

    app.include_router(api)
    if viewer:
        _mount_viewer(app, orc, api_key)
    return app


def _mount_viewer(app: FastAPI, orc: Any, api_key: str | None) -> bool:
    try:
        from ..viewer import make_viewer_router
    except ModuleNotFoundError as exc:
        if exc.name != "ttc.orchestrator.viewer":
            raise  # the viewer is there but broken: say so rather than serve without it
        return False  # the trace viewer is not part of this install
    app.include_router(make_viewer_router(lambda: orc.store.engine, api_key))
    return True
