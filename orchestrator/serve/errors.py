"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure ``ttc serve`` answers goes through here, so clients written for OpenAI read
it: 400 for invalid requests (FastAPI's default 422 included), 401 for a missing or wrong
API key, 404 for an unknown model or route, 429 when the server is at capacity, 502 when
an upstream model server fails, and 500 only for a fault of ttc itself, never for bad
input.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from ttc.backends.errors import BackendError, BadInputError, TTCError

__all__ = ["ApiError", "ModelNotFoundError", "error_body", "error_for", "install_error_handlers"]

log = logging.getLogger("ttc.serve")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          502: "upstream_error", 503: "server_error"}


class ModelNotFoundError(BadInputError):
    """A request names a model this server does not serve (404)."""

    def __init__(self, name: str, param: str = "model"):
        super().__init__(f"The model {name!r} does not exist on this server; GET /v1/models lists the models served "
                         "(a strategy prefix goes before a model name: best_of_n/countdown-direct)")
        self.param = param


class ApiError(Exception):
    """An error answered as it is: status, OpenAI error fields and extra headers."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.type = type or _TYPES.get(status, "server_error")
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_for(exc: BaseException) -> ApiError:
    """The answer to an exception raised while handling a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, str(exc), param=exc.param, code="model_not_found")
    if isinstance(exc, BadInputError):
        return ApiError(400, str(exc), param=getattr(exc, "param", None), code="invalid_request")
    if isinstance(exc, BackendError):
        # A model server behind this one failed (unreachable, rejected the call, bad usage).
        return ApiError(502, str(exc).strip().splitlines()[0] or type(exc).__name__, code="upstream_error")
    if isinstance(exc, TTCError):
        return ApiError(500, str(exc).strip().splitlines()[0] or type(exc).__name__, type="server_error",
                        code="internal_error")
    log.error("request failed", exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__}); see the server log", type="server_error",
                    code="internal_error")


def _validation_param(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    where = ".".join(loc) or None
    return (f"{where}: {err.get('msg', 'invalid value')}" if where else str(err.get("msg", "invalid request"))), where


def install_error_handlers(app: FastAPI) -> None:
    """Makes every error ``app`` answers OpenAI-shaped (FastAPI's 422 becomes a 400)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_param(exc)
        return ApiError(400, message, param=param, code="invalid_request").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, str(exc.detail), code=code,
                        headers=dict(exc.headers or {})).response()

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(TTCError)
    async def _ttc(_: Request, exc: TTCError) -> JSONResponse:
        return error_for(exc).response()

    @app.exception_handler(Exception)
    async def _other(_: Request, exc: Exception) -> JSONResponse:
        return error_for(exc).response()
