"""``ttc serve`` under hostile input and stop signals: hypothesis sends malformed bodies and
bytes (always a 400 or 404 in OpenAI's error shape, never a 500); a subprocess gets SIGTERM
while a request is in flight (drained, or marked interrupted, and exit 143)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import USER, Upstream
from ttc.orchestrator.api import Orchestrator
from ttc.orchestrator.serve import create_app
from ttc.orchestrator.serve.threaded import ThreadedServer
from ttc.store import TraceStore


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    db = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'ttc.db'}"
    with Orchestrator(db=db, device="cpu") as orc, ThreadedServer(create_app(orc)) as srv:
        yield srv
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- hostile bodies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(["model", "messages", "prompt", "n", "temperature", "top_p", "stop", "seed", "stream",
                        "stream_options", "logprobs", "ttc", "user", "tools"])
ttc_values = st.fixed_dictionaries({}, optional={
    "strategy": st.sampled_from(["sample", "best_of_n", "nope"]) | json_values,
    "task": st.sampled_from(["countdown", "nope"]) | json_values,
    "budget": st.dictionaries(st.sampled_from(["tokens", "calls", "x"]), json_values, max_size=2) | json_values,
    "models": st.dictionaries(st.sampled_from(["judge", "policy"]), st.sampled_from(["countdown-direct", "nope"])),
    "params": st.dictionaries(st.sampled_from(["n", "temperature", "bogus"]), json_values, max_size=2)})
bodies = st.dictionaries(keys, json_values | st.sampled_from(["countdown-direct", "3 5>8:", USER]), max_size=6)
HOSTILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _assert_answered(r: httpx.Response) -> None:
    assert r.status_code in (200, 400, 404), r.text
    if r.status_code != 200:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


@HOSTILE
@given(bodies, ttc_values, st.sampled_from(["chat/completions", "completions"]))
def test_hostile_bodies_get_a_400_or_404_never_a_500(server, body, ttc, endpoint):
    body = {"model": "countdown-direct", "messages": USER, "prompt": "3 5>8:", **body, "ttc": ttc,
            "max_tokens": 2, "stream": False}
    # json.dumps, not httpx: it writes NaN and Infinity, which a hostile client may send too.
    _assert_answered(httpx.post(f"{server.url}/{endpoint}", content=json.dumps(body), timeout=60))


@HOSTILE
@given(st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()))
def test_hostile_bytes_get_a_400(server, raw):
    r = httpx.post(f"{server.url}/chat/completions", content=raw, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------------- SIGTERM


def _start_cli(tmp_path: Path, upstream_url: str, drain: float) -> tuple[subprocess.Popen, str, str]:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "ttc", "serve", "--port", "0", "--db", db, "--upstream",
                             f"slow={upstream_url}", "--drain-timeout", str(drain)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"})
    line = proc.stderr.readline()
    assert "listening on" in line, line + proc.stderr.read()
    url = line.split("listening on ")[1].split()[0]
    return proc, url, db


def _wait_until_closed(url: str) -> None:
    while True:
        try:
            httpx.get(url.removesuffix("/v1") + "/health", timeout=5)
        except httpx.TransportError:
            return
        time.sleep(0.05)


def _post_in_thread(url: str) -> dict:
    out: dict = {}

    def post():
        try:
            out["response"] = httpx.post(f"{url}/chat/completions", json={"model": "slow", "messages": USER},
                                         timeout=60)
        except httpx.HTTPError as exc:
            out["error"] = exc

    out["thread"] = threading.Thread(target=post)
    out["thread"].start()
    return out


@pytest.mark.parametrize("released", [True, False], ids=["drained", "interrupted"])
def test_sigterm_drains_requests_marks_open_runs_interrupted_and_exits_143(tmp_path, released):
    held = Upstream(hold=True)
    try:
        proc, url, db = _start_cli(tmp_path, held.url, drain=30 if released else 0.5)
        req = _post_in_thread(url)
        assert held.arrived.wait(30)
        proc.send_signal(signal.SIGTERM)
        if released:
            _wait_until_closed(url)  # the server stopped listening: it is draining, the request still in flight
            held.gate.set()
        code = proc.wait(60)
        req["thread"].join(60)
        assert code == 143, proc.stderr.read()
        assert "SIGTERM" in proc.stderr.read()
    finally:
        held.close()
    with TraceStore.open(db) as store:
        runs = store.list_runs(kind="serve")
    assert len(runs) == 1
    if released:
        assert req["response"].status_code == 200 and runs[0].status == "ok"
    else:
        assert runs[0].status == "interrupted"
