"""call_model: reserve, call, settle and trace, with the scripted double and a real tiny model."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ttc.backends.errors import BackendError, BadInputError
from ttc.backends.scripted import ScriptedBackend
from ttc.backends.types import SamplingParams
from ttc.core.budget import Budget, Ledger
from ttc.core.calls import call_model
from ttc.core.cost import call_cost
from ttc.core.tracing import NullTracer, Span, Tracer

sys.path.insert(0, str(Path(__file__).parent))


class RecSpan:
    span_id = None

    def __init__(self, kind: str, name: str, attributes: dict[str, Any]):
        self.kind, self.name, self.attributes = kind, name, dict(attributes)
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.model = self.finish_reason = None
        self.candidates: list[dict] = []
        self.error: BaseException | None = None

    def set(self, **attributes: Any) -> None:
        self.attributes.update(attributes)

    def record_usage(self, *, input_tokens=0, output_tokens=0, model=None, finish_reason=None) -> None:
        self.usage["input_tokens"] += input_tokens
        self.usage["output_tokens"] += output_tokens
        self.model, self.finish_reason = model or self.model, finish_reason or self.finish_reason

    def add_candidates(self, candidates):
        self.candidates.extend(candidates)


class RecTracer:
    trace_id = "t-1"

    def __init__(self):
        self.spans: list[RecSpan] = []

    @contextmanager
    def span(self, kind: str, name: str, **attributes: Any):
        s = RecSpan(kind, name, attributes)
        self.spans.append(s)
        try:
            yield s
        except BaseException as exc:
            s.error = exc
            raise


def test_test_tracer_fits_the_protocol():
    assert isinstance(RecTracer(), Tracer)
    assert isinstance(RecSpan("llm", "x", {}), Span)
    assert isinstance(NullTracer(), Tracer)


def echo(text: str) -> ScriptedBackend:
    return ScriptedBackend(lambda prompt, i, params: text)


# ---------------------------------------------------------------- budget is never exceeded


def test_repeated_calls_never_exceed_token_budget_until_exhausted():
    budget = Budget(tokens=200)
    ledger = Ledger(budget)
    backend = ScriptedBackend(lambda prompt, i, params: "x" * (7 + 5 * i))  # longer per sample
    params = SamplingParams(n=3, max_tokens=20)
    calls = 0
    while not ledger.exhausted:
        res = call_model(backend, ["abcde", "fg"], params, ledger, min_tokens=1)
        calls += 1
        assert ledger.spent.tokens <= budget.tokens
        assert ledger.remaining_tokens() == budget.tokens - ledger.spent.tokens  # nothing left held
        if not res.generations:
            break
        assert calls < 100
    assert ledger.spent.tokens <= budget.tokens
    assert not ledger.overdrawn
    # It stopped only because not even the first prompt plus one token fits any more.
    assert ledger.remaining_tokens() < len("abcde") + 1


def test_spend_matches_what_the_backend_billed():
    ledger = Ledger(Budget(tokens=1000))
    backend = echo("hello world")
    res = call_model(backend, ["abc", "defgh"], SamplingParams(n=2, max_tokens=50), ledger)
    assert res.usage.prompt_tokens == 3 + 5  # each prompt once, though n = 2
    assert res.usage.completion_tokens == 4 * 11
    assert res.usage.calls == 2
    s = ledger.spent
    assert (s.prompt_tokens, s.completion_tokens, s.calls, s.samples) == (8, 44, 2, 4)
    expected = call_cost(backend.info, 3, [11, 11]) + call_cost(backend.info, 5, [11, 11])
    assert res.cost == expected
    assert s.flops == pytest.approx(expected.flops)
    assert s.eflops == pytest.approx(expected.eflops)
    assert s.paper_flops == pytest.approx(expected.paper_flops)


def test_skipped_prompts():
    ledger = Ledger(Budget(tokens=30))
    backend = echo("0123456789")
    res = call_model(backend, ["aaaa", "bbbb", "cccc"], SamplingParams(max_tokens=10), ledger)
    assert res.skipped == 1
    assert len(res.generations) == 2
    assert backend.calls[0][0] == ["aaaa", "bbbb"]
    assert ledger.spent.tokens == 28
    again = call_model(backend, ["cccc"], SamplingParams(max_tokens=10), ledger)
    assert again.skipped == 1 and again.generations == [] and again.params is None
    assert len(backend.calls) == 1  # no call was made


def test_nothing_fits_makes_no_call_and_no_span():
    tracer = RecTracer()
    ledger = Ledger(Budget(tokens=5))
    backend = echo("x")
    res = call_model(backend, ["abcdef"], SamplingParams(max_tokens=1), ledger, tracer)
    assert res.skipped == 1 and res.generations == [] and backend.calls == []
    assert tracer.spans == []
    assert ledger.spent.tokens == 0


def test_params_actually_used_shrink_n_then_max_tokens():
    backend = echo("z" * 100)
    ledger = Ledger(Budget(tokens=50))
    res = call_model(backend, ["abcd"], SamplingParams(n=8, max_tokens=10, temperature=0.5), ledger)
    assert (res.params.n, res.params.max_tokens, res.params.temperature) == (4, 10, 0.5)
    assert backend.calls[-1][1] == res.params
    assert ledger.spent.tokens == 44

    ledger = Ledger(Budget(tokens=20))
    res = call_model(backend, ["abcd"], SamplingParams(n=3, max_tokens=50), ledger, min_tokens=5)
    assert (res.params.n, res.params.max_tokens) == (1, 16)
    assert res.generations[0].completions[0].completion_tokens == 16
    assert ledger.spent.tokens == 20
    assert ledger.exhausted


def test_all_admitted_prompts_share_the_smallest_shrink():
    backend = echo("q" * 100)
    ledger = Ledger(Budget(tokens=100))
    # First prompt: room 96 -> n 4 x 20 = 80 (84 held). Second: room 16 - 2 -> n 1 x 14.
    res = call_model(backend, ["abcd", "ef", "gh"], SamplingParams(n=4, max_tokens=20), ledger, min_tokens=10)
    assert res.skipped == 1
    assert (res.params.n, res.params.max_tokens) == (1, 14)
    assert all(len(g.completions) == 1 for g in res.generations)
    assert ledger.spent.tokens == 4 + 14 + 2 + 14
    assert ledger.remaining_tokens() == 100 - ledger.spent.tokens


def test_samples_budget_limits_n():
    ledger = Ledger(Budget(samples=5))
    backend = echo("ok")
    res = call_model(backend, ["p"], SamplingParams(n=4, max_tokens=5), ledger)
    assert res.params.n == 4
    res = call_model(backend, ["p"], SamplingParams(n=4, max_tokens=5), ledger)
    assert res.params.n == 1
    assert ledger.spent.samples == 5
    assert call_model(backend, ["p"], SamplingParams(n=4, max_tokens=5), ledger).generations == []


# ---------------------------------------------------------------- tracing


def test_span_records_the_llm_call():
    tracer = RecTracer()
    ledger = Ledger(Budget(tokens=1000))
    backend = ScriptedBackend(lambda prompt, i, params: "short" if i == 0 else "x" * 50, name="m1")
    res = call_model(backend, ["abc", "de"], SamplingParams(n=2, max_tokens=10, seed=4), ledger, tracer,
                     name="sample")
    assert len(tracer.spans) == 1
    s = tracer.spans[0]
    assert (s.kind, s.name, s.error) == ("llm", "sample", None)
    a = s.attributes
    assert a["gen_ai.request.model"] == "m1"
    assert a["gen_ai.request.max_tokens"] == 10
    assert a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.request.seed"] == 4
    assert a["ttc.prompts"] == 2
    assert a["ttc.flops"] == pytest.approx(res.cost.flops) and a["ttc.flops"] > 0
    assert a["ttc.eflops"] == pytest.approx(res.cost.eflops)
    assert a["ttc.paper_flops"] == pytest.approx(res.cost.paper_flops)
    assert s.usage == {"input_tokens": 5, "output_tokens": 2 * (5 + 10)}
    assert s.model == "m1"
    assert set(s.finish_reason.split(",")) == {"length", "stop"}


# ---------------------------------------------------------------- failures release holds


class Boom(ScriptedBackend):
    def generate(self, prompts, params):
        raise BackendError("model fell over")


def test_backend_exception_releases_reservations_and_marks_span():
    tracer = RecTracer()
    ledger = Ledger(Budget(tokens=100))
    with pytest.raises(BackendError):
        call_model(Boom(["x"]), ["abc", "def"], SamplingParams(max_tokens=10), ledger, tracer)
    assert ledger.remaining_tokens() == 100
    assert ledger.spent.tokens == 0 and ledger.spent.calls == 0
    assert isinstance(tracer.spans[0].error, BackendError)


class TooLong(ScriptedBackend):
    def count_tokens(self, text):
        if len(text) > 5:
            raise BadInputError("prompt does not fit the context")
        return len(text)


def test_count_tokens_failure_releases_earlier_reservations():
    ledger = Ledger(Budget(tokens=100))
    with pytest.raises(BadInputError):
        call_model(TooLong(["x"]), ["abc", "def", "much too long"], SamplingParams(max_tokens=10), ledger)
    assert ledger.remaining_tokens() == 100


def test_a_string_is_not_a_list_of_prompts():
    ledger = Ledger(Budget(tokens=100))
    with pytest.raises(BadInputError):
        call_model(echo("x"), "abc", SamplingParams(max_tokens=10), ledger)
    assert ledger.remaining_tokens() == 100


class Short(ScriptedBackend):
    def generate(self, prompts, params):
        return super().generate(prompts[:1], params)


def test_backend_answering_fewer_prompts_releases_the_rest():
    ledger = Ledger(Budget(tokens=100))
    res = call_model(Short(["hi"]), ["abc", "def"], SamplingParams(max_tokens=10), ledger)
    assert len(res.generations) == 1
    assert ledger.spent.tokens == 5
    assert ledger.remaining_tokens() == 95


# ---------------------------------------------------------------- real tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster, and the CPUs are shared
    from _tiny import make_checkpoint

    from ttc.backends.transformers_backend import TransformersBackend

    yield TransformersBackend(make_checkpoint(tmp_path_factory.mktemp("calls") / "tiny"), device="cpu")
    torch.set_num_threads(before)


def test_real_model_never_exceeds_budget(tiny):
    budget = Budget(tokens=150)
    ledger = Ledger(budget)
    tracer = RecTracer()
    params = SamplingParams(n=3, max_tokens=12, temperature=1.0, seed=0)
    for _ in range(20):
        res = call_model(tiny, ["12+7=", "abc"], params, ledger, tracer, min_tokens=2)
        assert ledger.spent.tokens <= budget.tokens
        if not res.generations:
            break
        for g in res.generations:
            assert len(g.completions) == res.params.n
            assert all(c.completion_tokens <= res.params.max_tokens for c in g.completions)
    assert ledger.exhausted or not res.generations
    assert not ledger.overdrawn
    assert ledger.spent.tokens == sum(s.usage["input_tokens"] + s.usage["output_tokens"] for s in tracer.spans)
    assert ledger.spent.calls == sum(s.attributes["ttc.prompts"] for s in tracer.spans)
    assert all(s.kind == "llm" and s.model == tiny.name for s in tracer.spans)
    assert ledger.remaining_tokens() == budget.tokens - ledger.spent.tokens


def test_real_model_prompt_counted_once_and_cost_charged(tiny):
    ledger = Ledger(Budget(tokens=10_000))
    res = call_model(tiny, ["hello"], SamplingParams(n=4, max_tokens=6, temperature=0), ledger)
    g = res.generations[0]
    assert ledger.spent.prompt_tokens == tiny.count_tokens("hello") == 6
    assert ledger.spent.completion_tokens == sum(c.completion_tokens for c in g.completions)
    assert res.cost == call_cost(tiny.info, 6, [c.completion_tokens for c in g.completions])
    assert ledger.spent.flops == pytest.approx(res.cost.flops)
