"""The viewer's guards: security headers on every response, errors as JSON, and the API key.

Every route of the viewer's router is a :class:`SecureRoute`, so its responses, errors
included, carry ``Content-Security-Policy: default-src 'self'`` (scripts and styles from
the viewer's own ``static/`` files only: data the page shows can never run) and the
other headers below, whichever app mounts the router.

With an API key, a request is let in by ``Authorization: Bearer KEY`` (scripts, curl) or
by the session cookie a browser gets from ``GET /?key=KEY`` or the login form (``POST
/login``). The cookie holds an HMAC of the key, not the key; it is HttpOnly and
SameSite=Strict, so neither page scripts nor other sites' pages can use it.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute

from ttc.store.analysis import BadFilter
from ttc.store.engine import StoreError
from ttc.store.queries import RunNotFound

__all__ = ["CSP", "SECURITY_HEADERS", "SESSION_COOKIE", "KeyGuard", "SecureRoute", "api_error", "login_page"]

CSP = "default-src 'self'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The page is fetched once as /?key=KEY: that URL must not travel on in a Referer.
    "Referrer-Policy": "no-referrer",
}
SESSION_COOKIE = "ttc_viewer_session"


def api_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in the CLI's ``--json`` shape: ``{"error": {"type": ..., "message": ...}}``."""
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    err = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
    return f"{where}: {err.get('msg', 'invalid value')}" if where else str(err.get("msg", "invalid request"))


def _error_response(exc: Exception) -> Response | None:
    # Bad input is a 400, an unknown run a 404, a store that cannot answer a 503; never a 500 for input.
    if isinstance(exc, HTTPException):
        if isinstance(exc.detail, Response):
            return exc.detail
        kind = {401: "unauthorized", 404: "not_found"}.get(exc.status_code, "bad_request")
        return api_error(exc.status_code, kind, str(exc.detail), dict(exc.headers or {}))
    if isinstance(exc, RequestValidationError):
        return api_error(400, "bad_request", _validation_message(exc))
    if isinstance(exc, RunNotFound):
        return api_error(404, "not_found", str(exc))
    if isinstance(exc, BadFilter):
        # The store words its messages for CLI flags (--since); here they are query parameters.
        return api_error(400, "bad_request", re.sub(r"(?<![\w-])--(?=[a-z])", "", str(exc)))
    if isinstance(exc, StoreError):
        return api_error(503, "store_unavailable", str(exc))
    return None


class SecureRoute(APIRoute):
    """An API route whose every response, errors included, carries :data:`SECURITY_HEADERS`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                response = _error_response(exc)
                if response is None:
                    raise
            for name, value in SECURITY_HEADERS.items():
                response.headers[name] = value
            # Data pages change as runs go on; assets may be kept, but are checked again each time.
            response.headers.setdefault("Cache-Control", "no-cache" if "/static/" in self.path else "no-store")
            return response

        return secured


def login_page(message: str = "", status: int = 401) -> HTMLResponse:
    """The login form: plain HTML with no script or style, so it needs nothing the key guards."""
    note = f"<p><strong>{html.escape(message)}</strong></p>" if message else ""
    body = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ttc traces: log in</title></head>"
        "<body><h1>ttc traces</h1>" + note +
        "<form method=\"post\" action=\"login\"><label>API key <input type=\"password\" name=\"key\" "
        "autocomplete=\"current-password\" autofocus></label> <button type=\"submit\">Log in</button></form>"
        "<p>Scripts send <code>Authorization: Bearer KEY</code> instead.</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


class KeyGuard:
    """Checks a request against the API key (no key: every request passes).

    Args:
        api_key: The key, or None for an open viewer (bind it to loopback then).
    """

    def __init__(self, api_key: str | None):
        if api_key is not None and not api_key:
            raise ValueError("the API key must not be empty")
        self.api_key = api_key
        self.session = (hmac.new(api_key.encode(), b"ttc viewer session", hashlib.sha256).hexdigest()
                        if api_key else None)

    @property
    def enabled(self) -> bool:
        return self.api_key is not None

    def key_ok(self, key: str | None) -> bool:
        """Whether ``key`` is the API key (compared in constant time)."""
        return self.api_key is None or (key is not None and hmac.compare_digest(key.encode(), self.api_key.encode()))

    def allows(self, request: Request) -> bool:
        """Whether the request carries the key as a bearer token or the session cookie."""
        if self.api_key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.key_ok(token.strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    def require(self, request: Request) -> None:
        """A FastAPI dependency: 401 unless :meth:`allows`.

        Raises:
            HTTPException: 401 with ``WWW-Authenticate: Bearer``.
        """
        if not self.allows(request):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY', "
                                     "or open the viewer at /?key=KEY in a browser",
                                headers={"WWW-Authenticate": "Bearer"})

    def set_session(self, response: Response, request: Request) -> None:
        """Give the browser the session cookie (HttpOnly, SameSite=Strict; Secure over https)."""
        if self.session is not None:
            response.set_cookie(SESSION_COOKIE, self.session, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
