"""OpenAIBackend against untrusted servers: usage checks, timeouts, retries, options.

The endpoint is faked as in test_openai_backend (``httpx.MockTransport``), and a fake
clock that the injected sleep (and a simulated slow connect) advances stands in for wall
time, so retry schedules are asserted exactly and nothing waits.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from test_openai_backend import URL, Server, WordTokenizer, completion, raises, sse, status

from ttc.backends.errors import BackendError, BadInputError, EndpointError, InvalidUsageError
from ttc.backends.openai_backend import OpenAIBackend
from ttc.backends.types import SamplingParams

TTC_VARS = ("TTC_CONNECT_TIMEOUT", "TTC_TIMEOUT", "TTC_MAX_RETRIES", "TTC_TOKENIZER")


@pytest.fixture(autouse=True)
def _no_ttc_env(monkeypatch):
    # A developer's own TTC_* settings must not change what these tests see.
    for name in TTC_VARS:
        monkeypatch.delenv(name, raising=False)


class FakeTime:
    """A monotonic clock that only moves when slept on or told to."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(server, **kwargs):
    fake = FakeTime()
    backend = OpenAIBackend(
        URL, "tiny", http_client=httpx.Client(transport=httpx.MockTransport(server)),
        sleep=fake.sleep, clock=fake.clock, **kwargs,
    )
    return backend, fake


def usage_body(usage) -> bytes:
    """A /completions response whose ``usage`` is exactly ``usage`` (any JSON)."""
    body = {"id": "c", "object": "text_completion", "created": 0, "model": "tiny",
            "choices": [{"index": 0, "text": "t", "finish_reason": "stop", "logprobs": None}],
            "usage": usage}
    return json.dumps(body).encode()


def answer(raw: bytes):
    return lambda request: httpx.Response(
        200, content=raw, headers={"content-type": "application/json"})


# -- usage a server reports -------------------------------------------------------------


@pytest.mark.parametrize("usage, shown", [
    ({"prompt_tokens": 5, "completion_tokens": -3}, "completion_tokens=-3"),
    ({"prompt_tokens": -1, "completion_tokens": 3}, "prompt_tokens=-1"),
    ({"prompt_tokens": 5, "completion_tokens": 3.5}, "completion_tokens=3.5"),
    ({"prompt_tokens": 5.0, "completion_tokens": 3}, "prompt_tokens=5.0"),
    ({"prompt_tokens": 5, "completion_tokens": 10**20}, f"completion_tokens={10**20}"),
    ({"prompt_tokens": 10**20, "completion_tokens": 3}, f"prompt_tokens={10**20}"),
    ({"prompt_tokens": 5, "completion_tokens": 2**31}, f"completion_tokens={2**31}"),
    ({"prompt_tokens": True, "completion_tokens": 3}, "prompt_tokens=True"),
    ({"prompt_tokens": 5, "completion_tokens": "7"}, "completion_tokens='7'"),
    ({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": -8}, "total_tokens=-8"),
    (17, "usage=17"),
])
def test_invalid_usage_is_a_one_line_error_and_not_retried(usage, shown):
    server = Server(answer(usage_body(usage)), completion("never"))
    backend, fake = make(server)
    with pytest.raises(InvalidUsageError) as info:
        backend.generate(["p"], SamplingParams())
    message = str(info.value)
    assert message == f"{URL}: server reported invalid usage: {shown}"
    assert isinstance(info.value, BackendError) and not isinstance(info.value, EndpointError)
    assert info.value.exit_code == 1
    assert len(server.requests) == 1 and fake.sleeps == []


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_usage_is_an_error_not_an_overflow(literal):
    # Python's JSON parser accepts these, and int(inf) would raise OverflowError.
    raw = usage_body({"prompt_tokens": 5, "completion_tokens": 0}).replace(
        b'"completion_tokens": 0', f'"completion_tokens": {literal}'.encode())
    backend, _ = make(Server(answer(raw)))
    with pytest.raises(InvalidUsageError, match="completion_tokens="):
        backend.generate(["p"], SamplingParams())


def test_a_huge_usage_message_stays_short():
    backend, _ = make(Server(answer(usage_body(
        {"prompt_tokens": 5, "completion_tokens": "x" * 10_000}))))
    with pytest.raises(InvalidUsageError) as info:
        backend.generate(["p"], SamplingParams())
    assert len(str(info.value)) < 200 and "\n" not in str(info.value)


def test_the_largest_valid_counts_and_zero_are_charged():
    server = Server(completion("t", usage=(0, 2**31 - 1)))
    backend, _ = make(server)
    (gen,) = backend.generate(["p"], SamplingParams())
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (0, 2**31 - 1)


def test_invalid_usage_in_chat_mode_is_an_error():
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "tiny",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": -1}}
    backend, _ = make(Server(answer(json.dumps(body).encode())), mode="chat")
    with pytest.raises(InvalidUsageError, match="completion_tokens=-1"):
        backend.generate(["2+2?"], SamplingParams())


def test_invalid_usage_at_the_end_of_a_stream_is_an_error():
    backend, _ = make(Server(sse("a", "b", usage=(4, -2))))
    stream = backend.stream("p", SamplingParams())
    with pytest.raises(InvalidUsageError, match="completion_tokens=-2"):
        list(stream)
    assert stream.usage is None and backend.last_usage is None


@pytest.mark.parametrize("usage", [None, {}, {"completion_tokens": 3},
                                   {"prompt_tokens": 5, "completion_tokens": None}])
def test_missing_usage_needs_a_tokenizer(usage):
    raw = usage_body(usage)
    backend, _ = make(Server(answer(raw)))
    with pytest.raises(BackendError, match="no token usage") as info:
        backend.generate(["p"], SamplingParams())
    assert not isinstance(info.value, InvalidUsageError)
    counted, _ = make(Server(answer(raw)), tokenizer=WordTokenizer())
    (gen,) = counted.generate(["a b"], SamplingParams())
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (3, 1)


# -- timeouts and retries ---------------------------------------------------------------


def test_defaults_and_the_timeouts_each_request_carries():
    server = Server(completion("x"))
    backend, _ = make(server)
    assert (backend.connect_timeout, backend.timeout, backend.max_retries) == (5.0, 600.0, 3)
    assert backend.pools_tokens is False
    backend.generate(["p"], SamplingParams())
    timeout = server.requests[0].extensions["timeout"]
    assert timeout == {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}


def test_connection_errors_back_off_exponentially_and_latency_uses_the_clock():
    server = Server(raises(httpx.ConnectError), raises(httpx.ConnectError),
                    raises(httpx.ConnectError), completion("ok"))
    backend, fake = make(server)
    (gen,) = backend.generate(["p"], SamplingParams())
    assert gen.completions[0].text == "ok" and len(server.requests) == 4
    # 0.5 s doubling, plus up to 0.5 s of jitter each.
    assert [int(s * 2) for s in fake.sleeps] == [1, 2, 4]
    assert gen.latency_s == pytest.approx(sum(fake.sleeps))


def test_429_waits_as_asked_and_5xx_backs_off():
    server = Server(status(429, headers={"Retry-After": "2"}), status(500), status(502),
                    completion("ok"))
    backend, fake = make(server)
    backend.generate(["p"], SamplingParams())
    assert len(server.requests) == 4
    assert fake.sleeps[0] == 2.0 and 1.0 <= fake.sleeps[1] <= 1.5 and 2.0 <= fake.sleeps[2] <= 2.5


@pytest.mark.parametrize("code", [400, 404, 422])
def test_client_errors_are_not_retried(code):
    server = Server(status(code, "bad request"), completion("never"))
    backend, fake = make(server)
    with pytest.raises(BackendError, match=f"HTTP {code}") as info:
        backend.generate(["p"], SamplingParams())
    assert not isinstance(info.value, EndpointError)
    assert len(server.requests) == 1 and fake.sleeps == [] and fake.now == 100.0


def test_persistent_5xx_gives_up_after_the_default_attempts_and_says_how_long():
    server = Server(status(503))
    backend, fake = make(server)
    with pytest.raises(EndpointError) as info:
        backend.generate(["p"], SamplingParams())
    assert len(server.requests) == 4 and len(fake.sleeps) == 3
    assert f"after 4 attempts in {sum(fake.sleeps):.1f} s" in str(info.value)


def test_an_endpoint_where_nothing_answers_fails_within_30_seconds():
    # A blackholed host: each connect attempt uses up the whole connect timeout.
    fake = FakeTime()

    def silent(request):
        fake.now += request.extensions["timeout"]["connect"]
        raise httpx.ConnectTimeout("connect timed out", request=request)

    server = Server(silent)
    backend = OpenAIBackend(URL, "tiny", sleep=fake.sleep, clock=fake.clock,
                            http_client=httpx.Client(transport=httpx.MockTransport(server)))
    with pytest.raises(EndpointError, match="timed out.*after 4 attempts"):
        backend.generate(["p"], SamplingParams())
    spent = fake.now - 100.0
    assert spent == pytest.approx(4 * 5.0 + sum(fake.sleeps)) and spent <= 30.0


def test_a_closed_local_port_fails_with_a_bounded_schedule():
    with socket.socket() as s:  # a port that was free a moment ago, so nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeTime()
    url = f"http://127.0.0.1:{port}/v1"
    with OpenAIBackend(url, "tiny", sleep=fake.sleep, clock=fake.clock) as backend:
        with pytest.raises(EndpointError, match="connection failed.*after 4 attempts") as info:
            backend.generate(["p"], SamplingParams())
    assert info.value.endpoint == url and len(fake.sleeps) == 3
    assert 3.5 <= sum(fake.sleeps) <= 5.0  # 0.5 + 1 + 2, plus jitter


def test_max_retries_zero_makes_one_attempt():
    server = Server(raises(httpx.ReadTimeout))
    backend, fake = make(server, max_retries=0)
    with pytest.raises(EndpointError, match="after 1 attempt in"):
        backend.generate(["p"], SamplingParams())
    assert len(server.requests) == 1 and fake.sleeps == []


# -- options and their environment defaults ---------------------------------------------


def test_environment_sets_the_defaults(monkeypatch):
    monkeypatch.setenv("TTC_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("TTC_TIMEOUT", " 30 ")
    monkeypatch.setenv("TTC_MAX_RETRIES", "1")
    server = Server(status(503))
    backend, fake = make(server)
    assert (backend.connect_timeout, backend.timeout, backend.max_retries) == (2.5, 30.0, 1)
    with pytest.raises(EndpointError, match="after 2 attempts"):
        backend.generate(["p"], SamplingParams())
    assert server.requests[0].extensions["timeout"]["connect"] == 2.5
    assert server.requests[0].extensions["timeout"]["read"] == 30.0


def test_arguments_beat_the_environment_and_blank_variables_are_unset(monkeypatch):
    monkeypatch.setenv("TTC_CONNECT_TIMEOUT", "2.5")
    monkeypatch.setenv("TTC_TIMEOUT", "")
    monkeypatch.setenv("TTC_MAX_RETRIES", "  ")
    backend, _ = make(Server(completion("x")), connect_timeout=1, max_retries=0)
    assert (backend.connect_timeout, backend.timeout, backend.max_retries) == (1.0, 600.0, 0)


@pytest.mark.parametrize("name, value", [
    ("TTC_CONNECT_TIMEOUT", "abc"), ("TTC_CONNECT_TIMEOUT", "-1"), ("TTC_CONNECT_TIMEOUT", "0"),
    ("TTC_TIMEOUT", "inf"), ("TTC_TIMEOUT", "nan"), ("TTC_TIMEOUT", "-5"),
    ("TTC_MAX_RETRIES", "-1"), ("TTC_MAX_RETRIES", "2.5"), ("TTC_MAX_RETRIES", "many"),
    ("TTC_MAX_RETRIES", "1000"),
])
def test_bad_environment_values_are_bad_input_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(BadInputError, match=name) as info:
        OpenAIBackend(URL, "tiny")
    assert info.value.exit_code == 2 and repr(value) in str(info.value)


@pytest.mark.parametrize("kwargs, name", [
    ({"connect_timeout": -1}, "connect_timeout"), ({"connect_timeout": 0}, "connect_timeout"),
    ({"timeout": -0.5}, "timeout"), ({"timeout": float("nan")}, "timeout"),
    ({"timeout": True}, "timeout"), ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 2.0}, "max_retries"), ({"max_retries": True}, "max_retries"),
    ({"backoff_initial": -1.0}, "backoff_initial"),
])
def test_bad_option_values_are_bad_input(kwargs, name):
    with pytest.raises(BadInputError, match=name):
        OpenAIBackend(URL, "tiny", **kwargs)


# -- tokenizers -------------------------------------------------------------------------


@pytest.fixture
def tokenizer_dir(tmp_path):
    """A word-level Hugging Face tokenizer saved to a directory."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "hello", "world"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]").save_pretrained(tmp_path)
    return tmp_path


def test_ttc_tokenizer_sets_the_default_tokenizer(monkeypatch, tokenizer_dir):
    monkeypatch.setenv("TTC_TOKENIZER", str(tokenizer_dir))
    assert OpenAIBackend(URL, "tiny").count_tokens("hello world hello") == 3
    # An explicit tokenizer wins over the variable.
    assert OpenAIBackend(URL, "tiny", tokenizer=WordTokenizer()).count_tokens("a b") == 3
    monkeypatch.setenv("TTC_TOKENIZER", str(tokenizer_dir / "missing"))
    with pytest.raises(BadInputError, match="TTC_TOKENIZER.*does not exist"):
        OpenAIBackend(URL, "tiny")


def test_a_tokenizer_that_would_run_its_own_code_needs_trust(monkeypatch, tokenizer_dir):
    config = tokenizer_dir / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    config.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="own code.*trust-remote-code"):
        OpenAIBackend(URL, "tiny", tokenizer=str(tokenizer_dir))

    import ttc.backends.transformers_backend as tb

    seen = {}

    def loader(path, trust_remote_code=False):
        seen.update(path=path, trust_remote_code=trust_remote_code)
        return WordTokenizer()

    monkeypatch.setattr(tb, "load_tokenizer", loader)
    backend = OpenAIBackend(URL, "tiny", tokenizer=tokenizer_dir, trust_remote_code=True)
    assert seen == {"path": tokenizer_dir, "trust_remote_code": True}
    assert backend.count_tokens("a b") == 3


def test_a_hub_name_is_loaded_with_trust_remote_code_passed_on(monkeypatch):
    transformers = pytest.importorskip("transformers")
    calls = []

    def from_pretrained(name, **kwargs):
        calls.append((name, kwargs))
        return WordTokenizer()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    OpenAIBackend(URL, "tiny", tokenizer="org/model")
    OpenAIBackend(URL, "tiny", tokenizer="org/model", trust_remote_code=True)
    assert calls == [("org/model", {"trust_remote_code": False}),
                     ("org/model", {"trust_remote_code": True})]


def test_an_empty_tokenizer_is_bad_input():
    with pytest.raises(BadInputError, match="tokenizer must not be empty"):
        OpenAIBackend(URL, "tiny", tokenizer=" ")


# -- load_backend -----------------------------------------------------------------------


def test_load_backend_passes_the_remote_options(monkeypatch):
    from ttc.orchestrator.models import load_backend

    backend = load_backend("tiny", base_url=URL, connect_timeout=2, timeout=30, max_retries=0)
    assert isinstance(backend, OpenAIBackend) and backend.pools_tokens is False
    assert (backend.connect_timeout, backend.timeout, backend.max_retries) == (2.0, 30.0, 0)
    monkeypatch.setenv("TTC_MAX_RETRIES", "7")
    assert load_backend("tiny", base_url=URL).max_retries == 7  # None: the variable
    monkeypatch.setenv("TTC_TIMEOUT", "soon")
    with pytest.raises(BadInputError, match="TTC_TIMEOUT"):
        load_backend("tiny", base_url=URL)


def test_load_backend_resolves_a_built_in_tokenizer_name(monkeypatch):
    pytest.importorskip("transformers")
    from ttc.backends.transformers_backend import load_tokenizer
    from ttc.orchestrator.models import load_backend
    from ttc.tasks.registry import builtin_models

    if not builtin_models():
        pytest.skip("no built-in checkpoints shipped")
    builtin = builtin_models()[0]
    reference = load_tokenizer(builtin.path)
    text = "3 + 4 = 7"
    expected = len(reference.encode(text))
    backend = load_backend(builtin.name, base_url=URL, tokenizer=builtin.name)
    assert backend.count_tokens(text) == expected
    monkeypatch.setenv("TTC_TOKENIZER", builtin.name)
    assert load_backend(builtin.name, base_url=URL).count_tokens(text) == expected


def test_load_backend_passes_trust_remote_code_to_a_local_checkpoint(monkeypatch):
    import ttc.backends.transformers_backend as tb
    from ttc.orchestrator.models import load_backend

    made = []

    class Recorder:
        def __init__(self, path, **kwargs):
            made.append((path, kwargs))

    monkeypatch.setattr(tb, "TransformersBackend", Recorder)
    model = "countdown-search"
    load_backend(model, device="cpu", trust_remote_code=True)
    load_backend(model)
    assert [kw for _, kw in made] == [
        {"name": model, "device": "cpu", "trust_remote_code": True},
        {"name": model, "device": "auto", "trust_remote_code": False},
    ]


def test_load_backend_refuses_remote_options_for_a_local_checkpoint():
    from ttc.orchestrator.models import load_backend

    with pytest.raises(BadInputError, match="timeout, tokenizer apply only to a served model"):
        load_backend("countdown-search", timeout=5, tokenizer="x")
