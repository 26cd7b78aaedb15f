"""OpenAIBackend against a scripted server behind ``httpx.MockTransport`` (no network).

Backoff waits go to a recorder instead of ``time.sleep``, so retry tests take
milliseconds and can assert the waits that would have been slept.
"""

from __future__ import annotations

import json

import httpx
import pytest

from ttc.backends.base import Backend
from ttc.backends.errors import BackendError, BadInputError, EndpointError
from ttc.backends.openai_backend import OpenAIBackend
from ttc.backends.types import ModelInfo, SamplingParams

URL = "http://fake:8000/v1"


@pytest.fixture(autouse=True)
def _no_ttc_env(monkeypatch):
    # TTC_TIMEOUT, TTC_TOKENIZER... set in a developer's shell would change the defaults.
    for name in ("TTC_CONNECT_TIMEOUT", "TTC_TIMEOUT", "TTC_MAX_RETRIES", "TTC_TOKENIZER"):
        monkeypatch.delenv(name, raising=False)


# -- a scripted server ------------------------------------------------------------------


class Server:
    """Answers each request with the next step; the last step repeats forever."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return step(request)

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def completion(*texts, finish="stop", usage=(5, 3), logprobs=None, order=None):
    """A /completions response with one choice per text."""
    finishes = finish if isinstance(finish, (list, tuple)) else [finish] * len(texts)
    choices = [
        {
            "index": i,
            "text": t,
            "finish_reason": finishes[i],
            "logprobs": logprobs and {"token_logprobs": logprobs[i]},
        }
        for i, t in enumerate(texts)
    ]
    if order is not None:
        choices = [choices[i] for i in order]
    body = {"id": "c", "object": "text_completion", "created": 0, "model": "tiny",
            "choices": choices}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                         "total_tokens": sum(usage)}
    return lambda request: httpx.Response(200, json=body)


def chat_reply(content, finish="stop", usage=(9, 2), logprobs=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": content},
              "finish_reason": finish, "logprobs": None}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": lp, "bytes": None,
                                           "top_logprobs": []} for lp in logprobs]}
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "tiny",
            "choices": [choice],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": sum(usage)}}
    return lambda request: httpx.Response(200, json=body)


def status(code, message="boom", headers=None):
    body = {"object": "error", "message": message, "type": "Error", "code": code}
    return lambda request: httpx.Response(code, json=body, headers=headers)


def raises(exc_type, message="network trouble"):
    def step(request):
        raise exc_type(message, request=request)
    return step


class _SSE(httpx.SyncByteStream):
    """Server-sent events that optionally drop the connection after the last event."""

    def __init__(self, events, cut):
        self.events, self.cut = events, cut

    def __iter__(self):
        for event in self.events:
            yield f"data: {json.dumps(event)}\n\n".encode()
        if self.cut:
            raise httpx.ReadError("connection reset by peer")
        yield b"data: [DONE]\n\n"


def sse(*texts, finish="stop", usage=(4, 2), cut=False, chat=False):
    """A streamed completion: one chunk per text, a finish chunk, a usage chunk."""
    def chunk(text, reason=None):
        choice = ({"index": 0, "delta": {"content": text}, "finish_reason": reason} if chat
                  else {"index": 0, "text": text, "finish_reason": reason, "logprobs": None})
        return {"id": "s", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 0, "model": "tiny", "choices": [choice]}

    events = [chunk(t) for t in texts]
    if finish is not None:
        events.append(chunk("", finish))
    if usage is not None:
        events.append({"id": "s", "object": "text_completion", "created": 0, "model": "tiny",
                       "choices": [], "usage": {"prompt_tokens": usage[0],
                                                "completion_tokens": usage[1],
                                                "total_tokens": sum(usage)}})
    return lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_SSE(events, cut)
    )


class WordTokenizer:
    """Stands in for an HF tokenizer: one token per word, plus BOS when asked."""

    def encode(self, text, add_special_tokens=True):
        return ([0] if add_special_tokens else []) + [1] * len(text.split())


def make(server, **kwargs):
    sleeps: list[float] = []
    kwargs.setdefault("max_retries", 3)
    kwargs.setdefault("backoff_initial", 0.001)
    kwargs.setdefault("backoff_max", 0.01)
    backend = OpenAIBackend(
        URL, "tiny", http_client=httpx.Client(transport=httpx.MockTransport(server)),
        sleep=sleeps.append, **kwargs,
    )
    return backend, sleeps


# -- requests and parsing ---------------------------------------------------------------


def test_request_body_carries_sampling_fields(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = Server(completion("a", "b", logprobs=[[-0.1], [-0.2, -0.3]]))
    backend, _ = make(server)
    params = SamplingParams(n=2, max_tokens=16, temperature=0.5, top_p=0.9, stop=("\n", "END"),
                            seed=7, logprobs=True)
    backend.generate(["2+2="], params)
    (request,) = server.requests
    assert request.url.path == "/v1/completions"
    assert request.headers["authorization"] == "Bearer EMPTY"
    body = server.bodies[0]
    assert body == {"model": "tiny", "prompt": "2+2=", "n": 2, "max_tokens": 16,
                    "temperature": 0.5, "top_p": 0.9, "stop": ["\n", "END"], "seed": 7,
                    "logprobs": 1}


def test_unset_optional_fields_are_omitted_and_ignore_eos_goes_in_body(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = Server(completion("a"))
    backend, _ = make(server)
    backend.generate(["p"], SamplingParams())
    backend.generate(["p"], SamplingParams(ignore_eos=True))
    first, second = server.bodies
    assert not {"stop", "seed", "logprobs", "ignore_eos"} & first.keys()
    assert second["ignore_eos"] is True
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"


def test_one_request_per_prompt_with_usage_and_latency():
    server = Server(completion("4", usage=(5, 3)), completion("9", usage=(6, 1)))
    backend, _ = make(server)
    gens = backend.generate(["2+2=", "3*3="], SamplingParams(max_tokens=8))
    assert [b["prompt"] for b in server.bodies] == ["2+2=", "3*3="]
    assert [g.completions[0].text for g in gens] == ["4", "9"]
    assert [g.completions[0].completion_tokens for g in gens] == [3, 1]
    assert [(g.usage.prompt_tokens, g.usage.completion_tokens, g.usage.calls) for g in gens] == [
        (5, 3, 1), (6, 1, 1)]
    assert gens[0].prompt_tokens == 5 and gens[0].model == "tiny" and gens[0].latency_s >= 0


def test_n_samples_share_the_prompt_and_logprobs_give_exact_lengths():
    # Choices arrive out of order; lengths come from the per-token logprobs.
    server = Server(completion("a", "bb", "ccc", usage=(10, 6), order=[2, 0, 1],
                               logprobs=[[-1.0], [-1.0, -2.0], [-0.5, -0.5, -0.5]]))
    backend, _ = make(server)
    (gen,) = backend.generate(["p"], SamplingParams(n=3, logprobs=True))
    assert [c.text for c in gen.completions] == ["a", "bb", "ccc"]
    assert [c.completion_tokens for c in gen.completions] == [1, 2, 3]
    assert gen.completions[1].logprobs == [-1.0, -2.0]
    # The prompt is billed once for all three samples, as the server reports it.
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (10, 6)


def test_n_samples_without_logprobs_split_the_server_total():
    server = Server(
        completion("x" * 40, "short", finish=["length", "stop"], usage=(3, 9)),
        completion("aaaa", "a", "", usage=(3, 7)),
    )
    backend, _ = make(server)
    params = SamplingParams(n=2, max_tokens=5)
    (gen,) = backend.generate(["p"], params)
    # A choice cut by length has exactly max_tokens tokens; the rest goes to the other.
    assert [c.completion_tokens for c in gen.completions] == [5, 4]
    (gen,) = backend.generate(["p"], params.model_copy(update={"n": 3}))
    counts = [c.completion_tokens for c in gen.completions]
    assert sum(counts) == 7 and counts[0] >= counts[1] >= counts[2]


def test_n_samples_split_by_tokenizer_counts():
    server = Server(completion("one two three", "four", usage=(3, 4)))
    backend, _ = make(server, tokenizer=WordTokenizer())
    (gen,) = backend.generate(["p"], SamplingParams(n=2))
    assert [c.completion_tokens for c in gen.completions] == [3, 1]


@pytest.mark.parametrize(
    "server_reason, expected",
    [("stop", "stop"), ("length", "length"), ("eos", "stop"), ("abort", "stop"),
     ("content_filter", "stop"), (None, "stop")],
)
def test_finish_reasons_map_to_stop_or_length(server_reason, expected):
    backend, _ = make(Server(completion("t", finish=server_reason)))
    (gen,) = backend.generate(["p"], SamplingParams())
    assert gen.completions[0].finish_reason == expected


def test_chat_mode_sends_one_user_message():
    server = Server(chat_reply("4", finish="length", usage=(12, 1), logprobs=[-0.25]))
    backend, _ = make(server, mode="chat")
    (gen,) = backend.generate(["2+2?"], SamplingParams(logprobs=True, seed=3))
    assert server.requests[0].url.path == "/v1/chat/completions"
    body = server.bodies[0]
    assert body["messages"] == [{"role": "user", "content": "2+2?"}]
    assert body["logprobs"] is True and body["seed"] == 3
    done = gen.completions[0]
    assert (done.text, done.finish_reason, done.completion_tokens, done.logprobs) == (
        "4", "length", 1, [-0.25])
    assert gen.usage.prompt_tokens == 12


def test_chat_method_sends_the_given_messages():
    server = Server(chat_reply(None))  # a reply with no content is empty text, not None
    backend, _ = make(server)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    gen = backend.chat(messages, SamplingParams())
    assert server.bodies[0]["messages"] == messages
    assert gen.completions[0].text == ""


def test_missing_usage_without_tokenizer_is_an_error():
    backend, _ = make(Server(completion("t", usage=None)))
    with pytest.raises(BackendError, match="no token usage"):
        backend.generate(["p"], SamplingParams())


def test_missing_usage_is_counted_with_a_tokenizer():
    server = Server(completion("three word answer", "two words", usage=None))
    backend, _ = make(server, tokenizer=WordTokenizer())
    (gen,) = backend.generate(["a b c d"], SamplingParams(n=2))
    assert gen.prompt_tokens == 5  # four words plus BOS
    assert [c.completion_tokens for c in gen.completions] == [3, 2]
    assert gen.usage.completion_tokens == 5


# -- retries ----------------------------------------------------------------------------


def test_429_honours_retry_after_then_succeeds():
    server = Server(status(429, headers={"Retry-After": "7"}), completion("ok"))
    backend, sleeps = make(server, backoff_initial=0.001, backoff_max=20.0)
    (gen,) = backend.generate(["p"], SamplingParams())
    assert gen.completions[0].text == "ok"
    assert len(server.requests) == 2 and sleeps == [7.0]


def test_retry_after_ms_and_cap_at_backoff_max():
    server = Server(status(429, headers={"retry-after-ms": "250"}),
                    status(503, headers={"Retry-After": "3600"}), completion("ok"))
    backend, sleeps = make(server, backoff_max=30.0)
    backend.generate(["p"], SamplingParams())
    assert sleeps == [0.25, 30.0]


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_is_retried_then_succeeds(code):
    server = Server(status(code), status(code), completion("ok"))
    backend, sleeps = make(server)
    (gen,) = backend.generate(["p"], SamplingParams())
    assert gen.completions[0].text == "ok" and len(server.requests) == 3
    assert len(sleeps) == 2 and all(0.001 <= s <= 0.01 for s in sleeps)


@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError,
                                      httpx.RemoteProtocolError])
def test_timeouts_and_connection_errors_are_retried(exc_type):
    server = Server(raises(exc_type), completion("ok"))
    backend, _ = make(server)
    (gen,) = backend.generate(["p"], SamplingParams())
    assert gen.completions[0].text == "ok" and len(server.requests) == 2


def test_persistent_failure_raises_endpoint_error_after_max_retries_plus_one():
    server = Server(status(503, "overloaded\nplease wait"))
    backend, sleeps = make(server, max_retries=4)
    with pytest.raises(EndpointError) as info:
        backend.generate(["p"], SamplingParams())
    assert len(server.requests) == 5 and len(sleeps) == 4
    err = info.value
    assert err.endpoint == URL and err.exit_code == 1
    message = str(err)
    assert message.startswith(URL) and "503" in message and "after 5 attempts" in message
    assert "\n" not in message and "overloaded please wait" in message


def test_persistent_timeout_names_the_timeout():
    server = Server(raises(httpx.ReadTimeout, "read took too long"))
    backend, _ = make(server, max_retries=2)
    with pytest.raises(EndpointError, match=r"timed out.*after 3 attempts"):
        backend.generate(["p"], SamplingParams())
    assert len(server.requests) == 3


def test_backoff_grows_with_jitter_and_stays_bounded():
    server = Server(status(500))
    backend, sleeps = make(server, max_retries=6, backoff_initial=1.0, backoff_max=5.0)
    with pytest.raises(EndpointError):
        backend.generate(["p"], SamplingParams())
    assert len(sleeps) == 6 and all(1.0 <= s <= 5.0 for s in sleeps)
    assert sleeps[0] <= 2.0 and sleeps[-1] == 5.0


@pytest.mark.parametrize("code, message", [
    (400, "max_tokens is too large:\n4096 > 2048"),
    (401, "Invalid API key"),
    (404, "The model `tiny` does not exist."),
    (422, "field required"),
])
def test_client_errors_are_not_retried(code, message):
    server = Server(status(code, message), completion("never"))
    backend, sleeps = make(server)
    with pytest.raises(BackendError) as info:
        backend.generate(["p"], SamplingParams())
    assert not isinstance(info.value, EndpointError)
    assert len(server.requests) == 1 and sleeps == []
    text = str(info.value)
    assert f"HTTP {code}" in text and " ".join(message.split()) in text and "\n" not in text


def test_openai_style_nested_error_message_is_reported():
    body = {"error": {"message": "Unknown model tiny", "type": "invalid_request_error"}}
    server = Server(lambda request: httpx.Response(404, json=body))
    backend, _ = make(server)
    with pytest.raises(BackendError, match="Unknown model tiny"):
        backend.generate(["p"], SamplingParams())


def test_connection_refused_on_a_closed_port_is_an_endpoint_error():
    sleeps: list[float] = []
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "tiny", max_retries=2, timeout=5.0,
                            backoff_initial=0.001, backoff_max=0.002, sleep=sleeps.append)
    with backend, pytest.raises(EndpointError, match="after 3 attempts") as info:
        backend.generate(["p"], SamplingParams())
    assert info.value.endpoint == "http://127.0.0.1:9/v1" and len(sleeps) == 2


# -- streaming --------------------------------------------------------------------------


def test_stream_yields_chunks_and_records_usage():
    server = Server(sse("Hel", "lo", usage=(4, 2)))
    backend, _ = make(server)
    chunks = list(backend.stream("Say hello", SamplingParams(max_tokens=4, logprobs=True)))
    assert chunks == ["Hel", "lo"]
    body = server.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "logprobs" not in body
    assert (backend.last_usage.prompt_tokens, backend.last_usage.completion_tokens) == (4, 2)
    stream = backend.stream("Say hello", SamplingParams())
    assert "".join(stream) == "Hello" and stream.generation == backend.last_generation
    done = stream.generation.completions[0]
    assert (done.text, done.finish_reason, done.completion_tokens) == ("Hello", "stop", 2)


def test_stream_in_chat_mode():
    server = Server(sse("4", "2", finish="length", chat=True))
    backend, _ = make(server, mode="chat")
    assert list(backend.stream("6*7?", SamplingParams())) == ["4", "2"]
    assert server.requests[0].url.path == "/v1/chat/completions"
    assert backend.last_generation.completions[0].finish_reason == "length"


def test_stream_needs_n_1_and_says_so_at_the_call():
    backend, _ = make(Server(sse("x")))
    with pytest.raises(BadInputError, match="n=1"):
        backend.stream("p", SamplingParams(n=2))


def test_stream_cut_after_chunks_is_an_error_not_a_short_completion():
    server = Server(sse("a", "b", finish=None, usage=None, cut=True), sse("never"))
    backend, _ = make(server)
    stream = backend.stream("p", SamplingParams())
    got = []
    with pytest.raises(BackendError, match="cut after 2 chunks"):
        for chunk in stream:
            got.append(chunk)
    assert got == ["a", "b"] and len(server.requests) == 1
    # Not a finished completion, but the tokens it spent are still billed.
    assert stream.generation is None and backend.last_generation is None
    assert stream.usage.completion_tokens == 2
    assert stream.usage.prompt_tokens == backend.count_tokens("p")


def test_stream_closed_early_bills_what_was_received():
    server = Server(sse("one ", "two ", "three ", usage=(3, 3)))
    backend, _ = make(server, tokenizer=WordTokenizer())
    stream = backend.stream("a b", SamplingParams(max_tokens=50))
    assert next(stream) == "one "
    stream.close()
    stream.close()
    done = stream.generation.completions[0]
    assert (done.text, done.finish_reason, done.completion_tokens) == ("one ", "stop", 1)
    assert stream.usage.prompt_tokens == 3 and backend.last_usage == stream.usage
    assert list(stream) == []


def test_stream_closed_early_uses_per_chunk_usage_when_the_server_sends_it():
    # vLLM's continuous_usage_stats puts running usage on every chunk.
    def step(request):
        events = [{"id": "s", "object": "text_completion", "created": 0, "model": "tiny",
                   "choices": [{"index": 0, "text": t, "finish_reason": None}],
                   "usage": {"prompt_tokens": 7, "completion_tokens": k, "total_tokens": 7 + k}}
                  for k, t in enumerate(["x", "yz", "w"], start=1)]
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=_SSE(events, cut=False))
    backend, _ = make(Server(step))
    stream = backend.stream("p", SamplingParams())
    assert [next(stream), next(stream)] == ["x", "yz"]
    stream.close()
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (7, 2)


def test_stream_closed_before_it_starts_sends_nothing():
    server = Server(sse("x"))
    backend, _ = make(server)
    with backend.stream("p", SamplingParams()) as stream:
        pass
    assert server.requests == [] and stream.usage is None and stream.generation is None


def test_stream_dropped_after_its_finish_reason_is_complete():
    # The connection died after the finish chunk, so only the usage chunk was lost.
    server = Server(sse("a", "b", usage=None, cut=True))
    backend, _ = make(server)
    stream = backend.stream("p", SamplingParams())
    assert list(stream) == ["a", "b"]
    assert stream.generation.completions[0].text == "ab"
    assert stream.usage.completion_tokens == 2  # one token per chunk, as estimated


def test_stream_that_ends_cleanly_without_finish_reason_is_an_error():
    server = Server(sse("a", finish=None, usage=None))
    backend, _ = make(server)
    with pytest.raises(BackendError, match="cut after 1 chunks"):
        list(backend.stream("p", SamplingParams()))


def test_stream_failing_before_first_chunk_is_retried():
    server = Server(status(503), sse(finish=None, usage=None, cut=True),
                    raises(httpx.ReadTimeout), sse("ok", usage=(2, 1)))
    backend, sleeps = make(server)
    assert list(backend.stream("p", SamplingParams())) == ["ok"]
    assert len(server.requests) == 4 and len(sleeps) == 3
    assert backend.last_usage.completion_tokens == 1


def test_stream_that_never_starts_raises_endpoint_error():
    server = Server(sse(finish=None, usage=None, cut=True))
    backend, _ = make(server, max_retries=1)
    with pytest.raises(EndpointError, match="after 2 attempts"):
        list(backend.stream("p", SamplingParams()))


def test_stream_without_usage_needs_a_tokenizer():
    backend, _ = make(Server(sse("a", usage=None)))
    with pytest.raises(BackendError, match="no token usage"):
        list(backend.stream("p", SamplingParams()))
    backend, _ = make(Server(sse("two ", "words", usage=None)), tokenizer=WordTokenizer())
    assert "".join(backend.stream("one", SamplingParams())) == "two words"
    assert (backend.last_usage.prompt_tokens, backend.last_usage.completion_tokens) == (2, 2)


def test_an_empty_completion_streams_nothing_and_finishes():
    backend, _ = make(Server(sse(usage=(3, 1))))
    assert list(backend.stream("p", SamplingParams())) == []
    assert backend.last_usage.completion_tokens == 1


# -- the rest of the protocol -----------------------------------------------------------


def test_count_tokens_is_exact_with_tokenizer_else_an_upper_bound():
    backend, _ = make(Server(completion("x")))
    assert backend.count_tokens("héllo") >= len("héllo".encode())
    assert backend.count_tokens("") >= 1  # a BOS token is still billed
    chat, _ = make(Server(completion("x")), mode="chat")
    assert chat.count_tokens("hi") > backend.count_tokens("hi")  # room for the template
    exact, _ = make(Server(completion("x")), tokenizer=WordTokenizer())
    assert exact.count_tokens("a b c") == 4


def test_info_name_and_protocol():
    backend, _ = make(Server(completion("x")))
    assert isinstance(backend, Backend)
    assert backend.name == "tiny" and backend.info == ModelInfo(name="tiny")
    info = ModelInfo(name="tiny", parameters=1000, layers=2)
    given, _ = make(Server(completion("x")), info=info)
    assert given.info is info


def test_close_is_idempotent_and_closes_the_client():
    client = httpx.Client(transport=httpx.MockTransport(Server(completion("x"))))
    with OpenAIBackend(URL, "tiny", http_client=client) as backend:
        backend.generate(["p"], SamplingParams())
    assert client.is_closed
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.generate(["p"], SamplingParams())


@pytest.mark.parametrize("kwargs", [
    {"base_url": "localhost:8000/v1"},
    {"base_url": "ftp://host/v1"},
    {"mode": "completion"},
    {"max_retries": -1},
])
def test_bad_construction_arguments_are_bad_input(kwargs):
    kwargs = {"base_url": URL, "model": "tiny", **kwargs}
    with pytest.raises(BadInputError):
        OpenAIBackend(**kwargs)


def test_a_single_string_is_not_a_list_of_prompts():
    backend, _ = make(Server(completion("x")))
    with pytest.raises(BadInputError):
        backend.generate("p", SamplingParams())


def test_malformed_success_body_is_a_backend_error():
    server = Server(lambda request: httpx.Response(200, text="<html>proxy</html>"))
    backend, _ = make(server)
    with pytest.raises(BackendError):
        backend.generate(["p"], SamplingParams())


# -- a real socket, so the default client (not the mock transport) is exercised ---------


@pytest.fixture
def live_server():
    """A local HTTP server whose stream sends two chunks and then drops the connection."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    chunks = [{"id": "s", "object": "text_completion", "created": 0, "model": "tiny",
               "choices": [{"index": 0, "text": t, "finish_reason": None, "logprobs": None}]}
              for t in ("a", "b")]
    payload = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload) + 1000))  # promise more
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_stream_dropped_by_a_real_server_is_an_error(live_server):
    with OpenAIBackend(live_server, "tiny", timeout=5.0, max_retries=0) as backend:
        got = []
        with pytest.raises(BackendError, match="cut after 2 chunks"):
            for chunk in backend.stream("p", SamplingParams()):
                got.append(chunk)
    assert got == ["a", "b"]


def test_a_hugging_face_tokenizer_directory_makes_counts_exact(tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "<s>", "user", "assistant", ":", "hello", "world"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", bos_token="<s>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    tok.save_pretrained(tmp_path)

    plain = OpenAIBackend(URL, "tiny", tokenizer=str(tmp_path))
    assert plain.count_tokens("hello world") == len(tok.encode("hello world"))
    chat = OpenAIBackend(URL, "tiny", tokenizer=tmp_path, mode="chat")
    assert chat.count_tokens("hello world") == 6  # user : hello world assistant :
    with pytest.raises(BadInputError, match="does not exist"):
        OpenAIBackend(URL, "tiny", tokenizer=str(tmp_path / "missing"))
