"""An application served by uvicorn on a thread of this process, on a free loopback port.

For tests, benches and notebooks that want a real HTTP server (real sockets, real SSE)
without a second process::

    with ThreadedServer(create_app(orc)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="-")
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """Runs an ASGI app with uvicorn on a daemon thread.

    Args:
        app: The ASGI application.
        host: Address to bind (loopback).
        port: Port (0: a free one).
        startup_timeout: Seconds to wait for the server to accept connections.

    Attributes:
        url: The API root, ``http://HOST:PORT/v1``; ``root`` without ``/v1``.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0):
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(1024)
        self.port = self._sock.getsockname()[1]
        self.root = f"http://{host}:{self.port}"
        self.url = f"{self.root}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="ttc-threaded-server", daemon=True)
        self._startup_timeout = startup_timeout

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Asks the server to finish (requests in flight drain) and waits for its thread."""
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()
