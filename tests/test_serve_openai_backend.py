"""The OpenAI backend's behaviour against a real ``ttc serve`` on loopback.

tests/test_openai_backend.py checks ``OpenAIBackend`` against a scripted transport; here a
representative subset runs against ttc's own server and the built-in model: usage split
over ``n`` samples, exact prompt counts with the model's tokenizer, logprobs, chat mode,
streams (whole and closed early), client errors not retried, a 429 retried after its
Retry-After, seeds, a budgeted call, and a strategy run by ttc through ttc serve.
"""

from __future__ import annotations

import json
import threading

import pytest
from test_serve import USER, Upstream
from ttc.backends.errors import BackendError, BadInputError, EndpointError
from ttc.backends.openai_backend import OpenAIBackend
from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget, Ledger
from ttc.core.calls import call_model
from ttc.orchestrator.api import Orchestrator
from ttc.orchestrator.serve import create_app
from ttc.orchestrator.serve.threaded import ThreadedServer
from ttc.tasks.registry import find_builtin

PROMPT = "48 27 5 81>30:"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_ttc_env(monkeypatch):
    for name in ("TTC_CONNECT_TIMEOUT", "TTC_TIMEOUT", "TTC_MAX_RETRIES", "TTC_TOKENIZER", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def orc(tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('serve-backend') / 'ttc.db'}"
    with Orchestrator(db=db, device="cpu") as o:
        yield o


@pytest.fixture(scope="module")
def server(orc):
    with ThreadedServer(create_app(orc, api_key="k")) as srv:
        yield srv


def _backend(server, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("tokenizer", find_builtin("countdown-direct").path)
    kwargs.setdefault("api_key", "k")
    return OpenAIBackend(server.url, "countdown-direct", max_retries=0, **kwargs)


def test_n_samples_share_the_prompt_and_the_usage_splits_exactly(server):
    backend = _backend(server)
    (gen,) = backend.generate([PROMPT], SamplingParams(n=3, max_tokens=6, seed=1))
    assert len(gen.completions) == 3 and gen.usage.calls == 1
    assert gen.prompt_tokens == backend.count_tokens(PROMPT)  # the same tokenizer: an exact count
    assert sum(c.completion_tokens for c in gen.completions) == gen.usage.completion_tokens <= 18


def test_logprobs_give_exact_lengths(server):
    (gen,) = _backend(server).generate([PROMPT], SamplingParams(n=2, max_tokens=5, seed=2, logprobs=True))
    for c in gen.completions:
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens


def test_chat_mode_sends_one_user_message(server):
    backend = _backend(server, mode="chat")
    (gen,) = backend.generate([PROMPT], SamplingParams(max_tokens=4, seed=3))
    assert gen.prompt_tokens == backend.count_tokens(PROMPT) and gen.completions[0].text is not None
    reply = backend.chat([{"role": "system", "content": "x"}, *USER], SamplingParams(max_tokens=3))
    assert reply.usage.completion_tokens <= 3


def test_same_seed_same_completions(server):
    backend = _backend(server)
    a, b = (backend.generate([PROMPT], SamplingParams(n=2, max_tokens=6, seed=9))[0] for _ in range(2))
    assert [c.text for c in a.completions] == [c.text for c in b.completions]


def test_stream_yields_chunks_and_records_usage(server):
    backend = _backend(server)
    stream = backend.stream(PROMPT, SamplingParams(max_tokens=8, seed=4))
    text = "".join(stream)
    assert stream.generation is not None and stream.generation.completions[0].text == text
    assert 0 < stream.usage.completion_tokens <= 8 and stream.usage.prompt_tokens == backend.count_tokens(PROMPT)


def test_stream_closed_early_bills_what_was_received(server):
    backend = _backend(server)
    stream = backend.stream(PROMPT, SamplingParams(max_tokens=30, seed=4, ignore_eos=True))
    received = next(stream) + next(stream)
    stream.close()
    assert stream.generation.completions[0].finish_reason == "stop"
    assert stream.usage.completion_tokens == len(backend._tokenizer.encode(received, add_special_tokens=False))


def test_stream_needs_n_1(server):
    with pytest.raises(BadInputError):
        _backend(server).stream(PROMPT, SamplingParams(n=2))


def test_client_errors_are_reported_not_retried(server):
    with pytest.raises(BackendError) as exc:
        OpenAIBackend(server.url, "no-such-model", api_key="k", max_retries=3).generate([PROMPT], SamplingParams())
    assert not isinstance(exc.value, EndpointError) and "does not exist" in str(exc.value)
    with pytest.raises(BackendError) as exc:
        _backend(server, api_key="wrong").generate([PROMPT], SamplingParams(max_tokens=2))
    assert "API key" in str(exc.value)


def test_a_429_is_retried_after_its_retry_after(orc):
    held = Upstream(hold=True)
    try:
        app = create_app(orc, upstreams={"slow": held.url}, max_concurrency=1, max_queued=0)
        with ThreadedServer(app) as srv:
            blocker = OpenAIBackend(srv.url, "slow", mode="chat", max_retries=0, tokenizer=None)
            first = threading.Thread(target=lambda: blocker.generate(["x"], SamplingParams(max_tokens=2)))
            first.start()
            assert held.arrived.wait(30)
            waits: list[float] = []

            def sleep(seconds: float) -> None:  # the server is full until the held request ends
                waits.append(seconds)
                held.gate.set()
                first.join(30)

            backend = OpenAIBackend(srv.url, "countdown-direct", max_retries=2, sleep=sleep,
                                    tokenizer=find_builtin("countdown-direct").path)
            (gen,) = backend.generate([PROMPT], SamplingParams(max_tokens=3))
            # Each 429 says Retry-After: 1. Under load the held request's slot may be freed a
            # moment after it returns, so a second 429 (and wait) can come before the answer.
            assert waits and set(waits) == {1.0} and gen.usage.completion_tokens <= 3
    finally:
        held.close()


def test_a_budgeted_call_settles_the_server_usage(server):
    ledger = Ledger(Budget(tokens=60))
    call = call_model(_backend(server), [PROMPT, PROMPT], SamplingParams(n=2, max_tokens=10, seed=5), ledger)
    assert ledger.spent.tokens == call.usage.total_tokens <= 60 and not ledger.overdrawn
    assert call.skipped >= 0 and all(len(g.completions) <= 2 for g in call.generations)


def test_ttc_runs_a_strategy_through_ttc_serve(orc, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    problem = {"numbers": [3, 5, 7], "target": 22}
    result = orc.solve("countdown", json.dumps(problem), strategy="best_of_n", model="countdown-direct",
                       base_url=server.url, budget=Budget(tokens=2000), n=3)
    assert len(result.candidates) == 3 and result.tokens <= 2000
    served = orc.list_runs(kind="serve", limit=10)
    assert served and all(r.status == "ok" for r in served)
