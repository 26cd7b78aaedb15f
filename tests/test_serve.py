"""``ttc serve`` end to end on loopback: the official ``openai`` client against a real server
(uvicorn on a thread) with the real built-in model, and a scripted upstream for proxying
and capacity. Hostile bodies and SIGTERM: tests/test_serve_hostile.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from ttc.backends.queue import GenerationQueue
from ttc.orchestrator.api import Orchestrator
from ttc.orchestrator.chat import render_messages
from ttc.orchestrator.serve import create_app
from ttc.orchestrator.serve.threaded import ThreadedServer

PROBLEM = json.dumps({"numbers": [3, 5, 7], "target": 22})
USER = [{"role": "user", "content": "48 27 5 81>30:"}]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two shared cores: torch's default thread count makes every decode step fight for them.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Upstream:
    """A scripted OpenAI-compatible server: records bodies, answers with fixed text and usage,
    streams when asked, and (with ``hold``) keeps each request until ``release``."""

    def __init__(self, hold: bool = False):
        self.bodies: list[dict] = []
        self.arrived = threading.Event()
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.bodies.append(body)
                outer.arrived.set()
                outer.gate.wait(30)
                chat = self.path.endswith("/chat/completions")
                n = body.get("n", 1)
                usage = {"prompt_tokens": 7, "completion_tokens": 3 * n, "total_tokens": 7 + 3 * n}
                if body.get("stream"):
                    events = []
                    for i in range(n):
                        part = {"delta": {"content": "up"}} if chat else {"text": "up"}
                        events.append({"id": "u", "object": "chunk", "model": body["model"],
                                       "choices": [{"index": i, "finish_reason": None, **part}]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        events.append({"id": "u", "object": "chunk", "model": body["model"], "choices": [],
                                       "usage": usage})
                    data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                    self._send(data.encode(), "text/event-stream")
                    return
                choice = ({"message": {"role": "assistant", "content": "upstream says hi"}} if chat
                          else {"text": "upstream says hi"})
                reply = {"id": "u", "object": "chat.completion" if chat else "text_completion", "model": body["model"],
                         "choices": [{"index": i, "finish_reason": "stop", **choice} for i in range(n)],
                         "usage": usage}
                self._send(json.dumps(reply).encode(), "application/json")

            def _send(self, data: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def upstream():
    up = Upstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def orc(tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'ttc.db'}"
    with Orchestrator(db=db, device="cpu") as o:
        yield o


@pytest.fixture(scope="module")
def server(orc, upstream):
    with ThreadedServer(create_app(orc, upstreams={"up": upstream.url}, max_concurrency=4)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="anything", max_retries=0)


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


# ---------------------------------------------------------------------- models and plain samples


def test_models_lists_builtin_and_upstream_models_and_health_answers(client, server):
    ids = {m.id for m in client.models.list().data}
    assert {"countdown-direct", "sudoku-direct", "up"} <= ids
    assert client.models.retrieve("countdown-direct").id == "countdown-direct"
    health = httpx.get(f"{server.root}/health").json()
    assert health["status"] == "ok" and health["max_concurrency"] == 4


def test_bare_model_is_one_plain_sample_traced_in_the_store(client, orc):
    r = client.chat.completions.create(model="countdown-direct", messages=USER, max_tokens=8, seed=3)
    assert len(r.choices) == 1 and r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    ttc = r.model_extra["ttc"]
    assert ttc["strategy"] is None and ttc["verifier"] is None
    assert ttc["tokens"] == r.usage.total_tokens and ttc["flops"] > 0
    assert r.id == f"chatcmpl-{ttc['trace_id']}"
    run = orc.get_run(ttc["trace_id"])
    assert run.run.kind == "serve" and run.run.status == "ok" and run.run.attributes["model"] == "countdown-direct"
    llm = [s for s in run.spans if s.kind == "llm"]
    assert sum(s.input_tokens + s.output_tokens for s in llm) == r.usage.total_tokens
    # Concurrent requests on the model decode together through the generation queue.
    assert isinstance(orc.backend("countdown-direct"), GenerationQueue)


def test_same_seed_gives_the_same_sample(client):
    a, b = (client.chat.completions.create(model="countdown-direct", messages=USER, max_tokens=8, seed=11,
                                           temperature=1.0) for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completions_take_a_list_of_prompts_and_n(client):
    r = client.completions.create(model="countdown-direct", prompt=["48 27 5 81>30:", "3 5 7>22:"], n=2,
                                  max_tokens=4, stop=["."])
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.object == "text_completion" and r.usage.completion_tokens <= 16


def test_any_sequence_of_roles_works(client):
    messages = [{"role": "system", "content": ""}, {"role": "system", "content": "be brief"},
                {"role": "user", "content": "3 5"}, {"role": "assistant", "content": "7"},
                {"role": "developer", "content": [{"type": "text", "text": "7>22:"}]}, {"role": "user", "content": None}]
    r = client.chat.completions.create(model="countdown-direct", messages=messages, max_tokens=4)
    assert r.choices[0].message.role == "assistant"


def test_long_prompt_is_cut_from_the_left_never_rejected(client):
    # countdown-direct has a context of 128: half of it stays for generation.
    r = client.completions.create(model="countdown-direct", prompt="1 2 3 " * 100, max_tokens=1000, temperature=0)
    assert r.model_extra["ttc"]["prompt_tokens_cut"] > 0
    assert r.usage.prompt_tokens <= 64 and r.usage.prompt_tokens + r.usage.completion_tokens <= 128
    small = client.completions.create(model="countdown-direct", prompt="1 2 3 " * 100, max_tokens=3)
    assert small.usage.prompt_tokens > 64 and small.usage.completion_tokens <= 3


def test_logprobs_come_back_one_per_token(client):
    r = client.completions.create(model="countdown-direct", prompt="3 5 7>22:", max_tokens=5, logprobs=1)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == r.usage.completion_tokens and all(x <= 0 for x in lp.token_logprobs)


# ---------------------------------------------------------------------- streaming


def test_chat_stream_with_include_usage_ends_with_the_request_usage(client):
    chunks = list(client.chat.completions.create(model="countdown-direct", messages=USER, max_tokens=10, seed=5,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens <= 10
    assert all(c.usage is None for c in body)
    assert last.usage.total_tokens == last.model_extra["ttc"]["tokens"]
    assert len(text) >= last.usage.completion_tokens - 1  # one character per token, EOS aside


def test_completions_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.completions.create(model="countdown-direct", prompt="3 5 7>22:", max_tokens=6,
                                            stream=True))
    assert all(c.choices for c in chunks) and all(getattr(c, "usage", None) is None for c in chunks)
    assert "".join(c.choices[0].text for c in chunks)


def test_multi_sample_strategy_streams_the_answer_it_chose(client):
    body = {"ttc": {"task": "countdown", "params": {"n": 3}}}
    chunks = list(client.chat.completions.create(model="best_of_n/countdown-direct",
                                                 messages=[{"role": "user", "content": PROBLEM}], stream=True,
                                                 stream_options={"include_usage": True}, extra_body=body))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ttc = chunks[-1].model_extra["ttc"]
    assert ttc["strategy"] == "best_of_n" and ttc["samples"] == 3
    assert chunks[-1].usage.total_tokens == ttc["tokens"]
    assert isinstance(streamed, str)


# ---------------------------------------------------------------------- strategies


def test_strategy_by_model_name_runs_n_times_under_one_budget(client, orc):
    r = client.chat.completions.create(model="best_of_n/countdown-direct", n=2,
                                       messages=[{"role": "user", "content": PROBLEM}],
                                       extra_body={"ttc": {"task": "countdown", "budget": {"tokens": 400},
                                                           "params": {"n": 2}}})
    ttc = r.model_extra["ttc"]
    assert len(r.choices) == 2 and ttc["strategy"] == "best_of_n" and ttc["verifier"] == "CountdownVerifier"
    assert len(ttc["correct"]) == 2 and r.usage.total_tokens <= 400
    spans = orc.get_run(ttc["trace_id"]).spans
    assert {"strategy", "verifier", "llm", "choice"} <= {s.kind for s in spans}


def test_strategy_by_extra_body_and_prefix_only_splits_off_strategies(client):
    r = client.chat.completions.create(model="countdown-direct", messages=[{"role": "user", "content": PROBLEM}],
                                       extra_body={"ttc": {"strategy": "majority_vote", "task": "countdown",
                                                           "params": {"n": 2}}})
    assert r.model_extra["ttc"]["strategy"] == "majority_vote"
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="Qwen/countdown-direct", messages=USER, max_tokens=2)
    assert _error(exc.value)["code"] == "model_not_found"


def test_the_server_caps_what_one_request_may_spend(orc):
    with ThreadedServer(create_app(orc, max_request_tokens=300)) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0)
        r = c.chat.completions.create(model="best_of_n/countdown-direct",
                                      messages=[{"role": "user", "content": PROBLEM}],
                                      extra_body={"ttc": {"task": "countdown", "params": {"n": 10**9},
                                                          "budget": {"tokens": 10**6}}})
    assert r.model_extra["ttc"]["budget"] == {"tokens": 300} and 0 < r.usage.total_tokens <= 300


def test_free_form_chat_uses_the_judge_and_counts_its_tokens(client, orc):
    body = {"ttc": {"models": {"judge": "countdown-direct"}, "params": {"n": 2}, "rubric": "It is arithmetic."}}
    r = client.chat.completions.create(model="best_of_n/countdown-direct", messages=USER, max_tokens=6,
                                       extra_body=body)
    ttc = r.model_extra["ttc"]
    assert ttc["verifier"] == "JudgeVerifier" and ttc["task"] is None
    spans = orc.get_run(ttc["trace_id"]).spans
    llm = [s for s in spans if s.kind == "llm"]
    assert any(s.name.startswith("judge") for s in llm)
    assert r.usage.total_tokens == sum(s.input_tokens + s.output_tokens for s in llm)


def test_free_form_chat_without_judge_takes_verifier_free_strategies_only(client):
    r = client.chat.completions.create(model="majority_vote/countdown-direct", messages=USER, max_tokens=6,
                                       extra_body={"ttc": {"params": {"n": 2}}})
    assert r.model_extra["ttc"]["verifier"] is None and r.model_extra["ttc"]["samples"] == 2
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="best_of_n/countdown-direct", messages=USER, max_tokens=6)
    assert "judge" in _error(exc.value)["message"]


# ---------------------------------------------------------------------- upstream models


def test_upstream_model_gets_the_body_with_unknown_parameters(client, upstream):
    r = client.chat.completions.create(model="up", messages=USER, max_tokens=5,
                                       extra_body={"top_k": 4, "ttc": {"budget": {"tokens": 500}}})
    sent = upstream.bodies[-1]
    assert sent["top_k"] == 4 and "ttc" not in sent and sent["max_tokens"] == 5
    assert r.choices[0].message.content == "upstream says hi" and r.usage.total_tokens == 10
    assert r.model_extra["ttc"]["upstream"] == upstream.url and r.model_extra["ttc"]["tokens"] == 10


def test_upstream_stream_is_passed_through_with_its_usage(client, upstream):
    chunks = list(client.completions.create(model="up", prompt="x", max_tokens=3, n=2, stream=True,
                                            stream_options={"include_usage": True}))
    assert upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    assert [c.choices[0].text for c in chunks if c.choices] == ["up", "up"]
    assert chunks[-1].usage.total_tokens == 13 and chunks[-1].model_extra["ttc"]["tokens"] == 13


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, status, param", [
    ({"model": "nope", "messages": USER}, 404, "model"),
    ({"model": "countdown-direct", "messages": USER, "extra_body": {"ttc": {"models": {"judge": "nope"}}}}, 404,
     "ttc.models.judge"),
    ({"model": "countdown-direct", "messages": USER, "extra_body": {"ttc": {"bogus": 1}}}, 400, "ttc.bogus"),
    ({"model": "countdown-direct", "messages": USER, "temperature": 9}, 400, "temperature"),
    ({"model": "countdown-direct", "messages": []}, 400, "messages"),
    ({"model": "countdown-direct", "messages": USER, "extra_body": {"ttc": {"task": "countdown"}}}, 400, None),
    ({"model": "countdown-direct", "messages": USER, "extra_body": {"ttc": {"budget": {"coins": 3}}}}, 400,
     "ttc.budget"),
])
def test_bad_requests_get_openai_shaped_errors(client, kwargs, status, param):
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(max_tokens=2, **kwargs)
    assert exc.value.status_code == status
    err = _error(exc.value)
    assert err["type"] == "invalid_request_error" and (param is None or err["param"] == param)


def test_malformed_json_and_unknown_routes_are_not_422_or_500(server):
    for raw in (b"{nope", b"\xff\xfe", b"[1, 2]", b"null", b"{}"):
        r = httpx.post(f"{server.url}/chat/completions", content=raw)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/nothing").status_code == 404
    assert httpx.get(f"{server.url}/chat/completions").json()["error"]["code"] == "method_not_allowed"


def test_api_key_is_required_when_set(orc):
    with ThreadedServer(create_app(orc, api_key="s3cret")) as srv:
        for key in ("wrong", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = httpx.get(f"{srv.url}/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=srv.url, api_key="s3cret", max_retries=0)
        assert ok.completions.create(model="countdown-direct", prompt="3 5>8:", max_tokens=2).choices
        assert httpx.get(f"{srv.root}/health").status_code == 200


def test_over_capacity_is_a_429(orc):
    held = Upstream(hold=True)
    try:
        app = create_app(orc, upstreams={"slow": held.url}, max_concurrency=1, max_queued=0)
        with ThreadedServer(app) as srv:
            c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0)
            first = threading.Thread(target=lambda: c.chat.completions.create(model="slow", messages=USER))
            first.start()
            assert held.arrived.wait(30)
            with pytest.raises(openai.RateLimitError) as exc:
                c.chat.completions.create(model="countdown-direct", messages=USER, max_tokens=2)
            assert _error(exc.value)["code"] == "rate_limit_exceeded"
            assert exc.value.response.headers["retry-after"] == "1"
            held.gate.set()
            first.join(30)
            # The client may have its reply a moment before the server frees the slot.
            for _ in range(100):
                try:
                    assert c.chat.completions.create(model="countdown-direct", messages=USER, max_tokens=2).choices
                    break
                except openai.RateLimitError:
                    time.sleep(0.05)
            else:
                pytest.fail("the freed slot never took a request")
    finally:
        held.close()


def test_the_trace_viewer_shares_the_server_and_shows_serve_runs(client, server):
    pytest.importorskip("ttc.orchestrator.viewer")
    client.completions.create(model="countdown-direct", prompt="3 5>8:", max_tokens=2)
    page = httpx.get(f"{server.root}/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    runs = httpx.get(f"{server.root}/api/runs").json()["runs"]
    assert any(r["kind"] == "serve" for r in runs)


# ---------------------------------------------------------------------- chat templates


def test_a_model_with_a_chat_template_gets_it_and_one_without_gets_ttcs(orc, tiny_checkpoint, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    templated = tmp_path / "templated"
    shutil.copytree(tiny_checkpoint, templated)
    tok = AutoTokenizer.from_pretrained(templated)
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}>"
    tok.save_pretrained(templated)
    messages = [{"role": "system", "content": "hi"}, {"role": "user", "content": "abc"}]
    with ThreadedServer(create_app(orc, models={"plain": tiny_checkpoint, "templated": str(templated)})) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0)
        plain = c.chat.completions.create(model="plain", messages=messages, max_tokens=2)
        fancy = c.chat.completions.create(model="templated", messages=messages, max_tokens=2)
    ids = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert plain.usage.prompt_tokens == len(tok(render_messages(messages))["input_ids"])
    assert fancy.usage.prompt_tokens == len(tok(ids)["input_ids"])
