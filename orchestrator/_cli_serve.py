"""``ttc serve``: the OpenAI-compatible server (see ``ttc.orchestrator.serve``).

The server binds 127.0.0.1 unless told otherwise. SIGTERM (or SIGINT) stops it cleanly:
no new connections, requests in flight get ``--drain-timeout`` seconds to finish, runs
still open after that are marked ``interrupted``, and the command exits 143 (130).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Annotated

import typer
from ttc.backends.errors import BadInputError

from ._cli_common import (
    bind_socket,
    NO_REMOTE,
    DbOption,
    RemoteOptions,
    check_int,
    esc,
    open_orchestrator,
    stderr,
    with_remote_options,
)
from ._run_guard import RunStopped

__all__ = ["parse_pairs", "serve"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_pairs(values: list[str] | None, flag: str, what: str) -> dict[str, str]:
    """``NAME=VALUE`` flag values as a dict.

    Raises:
        BadInputError: A value without ``=``, an empty side, or a name given twice.
    """
    out: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise BadInputError(f"{flag} expects NAME={what}, got {item!r}")
        if name in out:
            raise BadInputError(f"{flag} {name} is given twice")
        out[name] = value
    return out


def _server_class():
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn's server, minus its habit of re-raising the stop signal after a graceful
        shutdown: the command exits 130/143 itself, after the store is up to date."""

        stopped_by: int | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        def _stop(self, signum: int, _frame) -> None:
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C stops waiting for requests in flight
            self.stopped_by = self.stopped_by or signum
            self.should_exit = True

    return _Server


@with_remote_options
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default; others need care).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8000,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="TTC_SERVE_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 and the viewer.")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", help="Requests running at once; their calls to one in-process model are batched.")] = 8,
    max_queued: Annotated[int | None, typer.Option("--max-queued", help="Requests waiting beyond those before a 429 (default: 4 x --max-concurrency).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", metavar="NAME=PATH", help="Serve a checkpoint directory as NAME; repeatable.")] = None,
    upstream: Annotated[list[str] | None, typer.Option("--upstream", metavar="NAME=BASE_URL", help="Serve model NAME of an OpenAI-compatible server (e.g. vLLM); repeatable.")] = None,
    max_request_tokens: Annotated[int, typer.Option("--max-request-tokens", metavar="N", help="Most tokens one request run by ttc may spend (0: no limit).")] = 100_000,
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", metavar="SECONDS", help="On SIGTERM, how long requests in flight may take to finish.")] = 30.0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    remote: RemoteOptions = NO_REMOTE,
    db: DbOption = None,
) -> None:
    """Serve built-in and configured models behind an OpenAI-compatible API, with ttc's strategies."""
    import uvicorn

    from .serve.app import create_app

    check_int(port, "--port", lo=0, hi=65535)
    check_int(max_concurrency, "--max-concurrency", lo=1, hi=4096)
    if max_queued is not None:
        check_int(max_queued, "--max-queued", lo=0, hi=1_000_000)
    check_int(max_request_tokens, "--max-request-tokens", lo=0)
    if not drain_timeout >= 0:
        raise BadInputError(f"--drain-timeout must be >= 0 seconds, got {drain_timeout}")
    models = parse_pairs(model, "--model", "PATH")
    upstreams = parse_pairs(upstream, "--upstream", "BASE_URL")
    with open_orchestrator(db, device, remote) as orc:
        app = create_app(orc, api_key=api_key, max_concurrency=max_concurrency, max_queued=max_queued,
                         models=models, upstreams=upstreams, max_request_tokens=max_request_tokens or None)
        sock = bind_socket(host, port)
        bound = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=drain_timeout)
        server = _server_class()(config)
        shown = f"[{host}]" if ":" in host else host
        stderr.print(f"ttc serve: listening on http://{esc(shown)}:{bound}/v1 "
                     f"({len(app.state.ttc.catalog.entries())} models; Ctrl-C or SIGTERM stops)", highlight=False,
                     soft_wrap=True)
        if host not in _LOOPBACK and api_key is None:
            stderr.print(f"[yellow]warning: {esc(host)} is reachable from other machines and no --api-key is set[/]")
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
        interrupted = app.state.ttc.interrupted
    if server.stopped_by is not None:
        name = signal.Signals(server.stopped_by).name
        raise RunStopped(f"ttc serve stopped by {name}; {interrupted} run(s) still open were marked interrupted",
                         128 + server.stopped_by)
