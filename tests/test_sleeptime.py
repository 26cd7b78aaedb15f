"""Sleep-time compute: artifact storage and keys, the sleep and test phases, fallback,
counterfactuals, the free-text form, the CLI; and one real-model run.

Control flow runs on a scripted backend that plays a perfect stateful-arith model (its
texts come from the task's own derivation code, in the test only); the real-model test
uses the shipped ``stateful-arith`` checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import ttc.tasks.stateful_arith as sa
from ttc.backends.errors import BadInputError
from ttc.backends.scripted import ScriptedBackend
from ttc.backends.types import ModelInfo
from ttc.core.artifacts import Artifact, ArtifactStore, artifact_key, config_hash, context_hash
from ttc.core.budget import Budget, Ledger
from ttc.orchestrator.api import Orchestrator
from ttc.orchestrator._sleep_api import SleepMixin
from ttc.store import TraceStore
from ttc.store.artifacts import ArtifactTable
from ttc.strategies.sleeptime import (
    FreeTextRecord, SleepConfig, check_test_strategy, combine_notes, free_text_session, is_counterfactual,
    precompute_notes,
)
from ttc.tasks.registry import CHECKPOINT_DIR, get_task

TASK = get_task("stateful-arith")
CTX = "a=7;b=a*3;c=b-4;d=c+a"
# The lead adds SleepMixin to Orchestrator's bases; until then the tests mix it in here.
Orc = Orchestrator if issubclass(Orchestrator, SleepMixin) else type("Orc", (SleepMixin, Orchestrator), {})


def perfect(prompt: str, i: int, params) -> str:
    """A perfect stateful-arith model: notes, answers from notes, derivations."""
    if prompt.endswith("#"):
        return sa.notes_text(prompt[:-1]) + "."
    body, _, query = prompt[:-1].rpartition("?")
    if "|" in body:
        ctx, _, _notes = body.partition("|")
        return sa.derivation(ctx, query, with_notes=True) + "."
    return sa.derivation(body, query) + "."


def backend(handler=perfect, digest: str | None = "digest-1", name: str = "arith-fake") -> ScriptedBackend:
    info = ModelInfo(name=name, parameters=10**6, layers=4, hidden_size=128, checkpoint_digest=digest)
    return ScriptedBackend(handler, name=name, info=info)


def kinds_of(b: ScriptedBackend) -> list[str]:
    """Which formats a scripted backend was asked for, call by call."""
    out = []
    for prompts, _ in b.calls:
        p = prompts[0]
        out.append("notes" if p.endswith("#") else "with_notes" if "|" in p else "direct")
    return out


@pytest.fixture
def orc(sqlite_url):
    with Orc(db=sqlite_url) as o:
        yield o


# ---------------------------------------------------------------------- store and keys


def _record(key: str = "k1", **changes) -> dict:
    art = Artifact(key=key, task="stateful-arith", context_hash=context_hash(CTX), checkpoint_digest="d",
                   config_hash="c", notes={"a": 7, "b": 21}, notes_text=["a=7,b=7*3=21"], notes_tokens=[12])
    return {**art.to_record(), **changes}


def test_artifact_table_round_trip_and_upsert(db_url):
    with TraceStore.open(db_url) as store:
        table = ArtifactTable(store.engine)
        assert isinstance(table, ArtifactStore)
        assert table.get_artifact("k1") is None
        table.put_artifact(_record(prompt_tokens=10, completion_tokens=20))
        table.put_artifact(_record("k2", context_hash="other"))
        got = Artifact.from_record(table.get_artifact("k1"))
        assert got.notes == {"a": 7, "b": 21} and got.usage.total_tokens == 30 and got.notes_tokens == [12]
        table.put_artifact(_record(payload={"notes": {"a": 8}}))  # same key: replaced, not duplicated
        assert Artifact.from_record(table.get_artifact("k1")).notes == {"a": 8}
        assert {r["key"] for r in table.list_artifacts(context_hash=context_hash(CTX))} == {"k1"}
        assert len(table.list_artifacts(task="stateful-arith")) == 2
        assert table.delete_artifacts(context_hash="other") == 1 and table.get_artifact("k2") is None


def test_key_changes_with_context_checkpoint_and_config():
    cfg = SleepConfig().key_fields("stateful-arith")
    key = artifact_key(CTX, "d1", cfg)
    assert artifact_key(CTX + "\n", "d1", cfg) == key  # a trailing newline from @file is the same context
    assert artifact_key(CTX.replace("c=b-4", "c=b-5"), "d1", cfg) != key
    assert artifact_key(CTX, "d2", cfg) != key
    assert artifact_key(CTX, "d1", SleepConfig(notes=2).key_fields("stateful-arith")) != key
    assert artifact_key(CTX, "d1", config_hash(cfg)) == key


# ---------------------------------------------------------------------- sleep and test phases


def test_precompute_then_ask_reuses_the_notes(orc):
    b = backend()
    pre = orc.precompute("stateful-arith", CTX, model=b, config={"notes": 3})
    assert not pre.reused and pre.artifact.notes == {"a": 7, "b": 21, "c": 17, "d": 24}
    assert pre.sleep_tokens == pre.artifact.usage.total_tokens > 0
    assert orc.get_run(pre.trace_id).run.status == "ok"
    again = orc.precompute("stateful-arith", CTX, model=b, config={"notes": 3})
    assert again.reused and again.key == pre.key and kinds_of(b) == ["notes"]  # nothing spent the second time
    out = orc.ask("stateful-arith", CTX, "c+a", model=b, config={"notes": 3})
    assert (out.answer, out.correct, out.artifact_hit, out.route) == ("24", True, True, "notes")
    assert out.sleep_tokens == pre.sleep_tokens and out.key == pre.key
    assert kinds_of(b) == ["notes", "with_notes"]  # ask never writes notes
    cold = orc.ask("stateful-arith", CTX, "c+a", model=b, config={"notes": 4})  # another config: no artifacts
    assert (cold.answer, cold.artifact_hit, cold.route) == ("24", False, "fallback")
    assert out.test_generated_tokens < cold.test_generated_tokens


def test_ask_without_artifacts_falls_back_and_never_precomputes(orc):
    b = backend()
    out = orc.ask("stateful-arith", CTX, "d", model=b, fallback="sample")
    assert (out.answer, out.correct, out.artifact_hit, out.route, out.sleep_tokens) == ("24", True, False,
                                                                                        "fallback", 0)
    assert kinds_of(b) == ["direct"]
    assert orc.artifact_store().list_artifacts() == []


def test_stale_artifacts_are_never_reused(orc):
    orc.precompute("stateful-arith", CTX, model=backend(digest="digest-1"))
    changed = CTX.replace("a=7", "a=8")
    for ctx, b in ((changed, backend(digest="digest-1")), (CTX, backend(digest="digest-2"))):
        out = orc.ask("stateful-arith", ctx, "d", model=b)
        assert not out.artifact_hit and out.route == "fallback" and out.correct
    assert orc.ask("stateful-arith", CTX, "d", model=backend(digest="digest-1")).artifact_hit


def test_notes_without_an_answer_fall_back_to_derivation(orc):
    def no_answer_from_notes(prompt, i, params):
        return "?." if "|" in prompt else perfect(prompt, i, params)

    b = backend(no_answer_from_notes)
    orc.precompute("stateful-arith", CTX, model=b)
    out = orc.ask("stateful-arith", CTX, "c", model=b)
    assert out.artifact_hit and out.route == "fallback" and out.answer == "17"
    assert kinds_of(b)[-2:] == ["with_notes", "direct"]


def test_notes_are_combined_by_a_vote_per_quantity_of_the_model_own_notes():
    assert combine_notes([{"a": 7, "b": 21}, {"a": 7, "b": 20, "c": 3}, {"a": 6, "b": 20}]) == {"a": 7, "b": 20, "c": 3}
    assert combine_notes([{}, {"a": 1}], "first") == {"a": 1}

    def noisy(prompt, i, params):  # the second of three notes gets b wrong
        text = perfect(prompt, i, params)
        return text.replace("b=7*3=21", "b=7*3=22") if i == 1 else text

    art = precompute_notes(TASK, [CTX], backend(noisy), Ledger(), config=SleepConfig(notes=3))[0]
    assert art.notes["b"] == 21 and len(art.notes_text) == 3 and art.usage.calls == 1


def test_sleep_budget_is_charged_and_never_exceeded(orc):
    b = backend()
    ledger = Ledger(Budget(tokens=400))
    arts = precompute_notes(TASK, [CTX, "a=2;b=a+1"], b, ledger, config=SleepConfig(notes=5))
    assert ledger.spent.tokens <= 400
    assert ledger.spent.tokens == sum(a.usage.total_tokens for a in arts if a is not None)
    with pytest.raises(BadInputError, match="sleep budget"):
        orc.precompute("stateful-arith", CTX, model=b, budget=Budget(tokens=10))


def test_test_budget_is_charged(orc):
    b = backend()
    orc.precompute("stateful-arith", CTX, model=b)
    out = orc.ask("stateful-arith", CTX, "c+a", model=b, budget=Budget(tokens=300))
    assert 0 < out.test_tokens <= 300 and out.route == "notes"
    starved = orc.ask("stateful-arith", CTX, "c+a", model=b, budget=Budget(tokens=100))
    assert (starved.answer, starved.route, starved.test_tokens) == (None, "none", 0)  # nothing fits: nothing spent
    run = orc.get_run(out.trace_id)
    assert sum(s.input_tokens + s.output_tokens for s in run.spans if s.kind == "llm") == out.test_tokens


# ---------------------------------------------------------------------- counterfactuals, anticipation


def test_counterfactual_queries_are_rederived_not_looked_up(orc):
    b = backend()
    orc.precompute("stateful-arith", CTX, model=b)
    assert is_counterfactual("if a=9,c") and not is_counterfactual("c+a")
    out = orc.ask("stateful-arith", CTX, "if a = 9, what is c?", model=b)
    assert (out.answer, out.correct, out.route) == ("23", True, "notes")  # not the notes' stale c=17
    own = orc.ask("stateful-arith", CTX, "if a=9,c", model=b, counterfactuals="fallback")
    assert (own.answer, own.artifact_hit, own.route) == ("23", True, "fallback")


class _Anticipating(type(TASK)):
    """stateful-arith with a skill (d) format, to test reuse of anticipated answers."""

    @staticmethod
    def anticipate_prompt(context: str) -> str:
        return sa.notes_prompt(context)[:-1] + "@"


def test_anticipated_answers_are_reused_only_on_an_exact_match(orc, monkeypatch):
    task = _Anticipating()

    def model(prompt, i, params):
        return ["c+a", "d"][i % 2] if prompt.endswith("@") else perfect(prompt, i, params)

    b = backend(model)
    arts = precompute_notes(task, [CTX], b, Ledger(), config=SleepConfig(notes=1, anticipate=2))
    assert arts[0].anticipated == {"c+a": "24", "d": "24"}
    monkeypatch.setattr("ttc.orchestrator._sleep_api.get_task", lambda name: task)
    orc.artifact_store().put_artifact(arts[0].to_record())
    calls = len(b.calls)
    hit = orc.ask("stateful-arith", CTX, "c + a", model=b, config={"notes": 1, "anticipate": 2})
    assert (hit.answer, hit.correct, hit.exact_hit, hit.route) == ("24", True, True, "anticipated")
    assert len(b.calls) == calls and 0 < hit.test_tokens == hit.test_tokens - hit.test_generated_tokens
    near = orc.ask("stateful-arith", CTX, "c-a", model=b, config={"notes": 1, "anticipate": 2})
    assert (near.answer, near.exact_hit, near.route) == ("10", False, "notes")  # c-a never matches c+a


# ---------------------------------------------------------------------- free-text form (control flow only)


def test_free_text_form_control_flow():
    def chat(prompt, i, params):
        if prompt.endswith("Notes:\n"):
            return "Alice has 3 apples.\nQ: How many apples does Alice have? A: 3\n"
        return "42" if "Notes:" in prompt else "41"

    recs = [FreeTextRecord(context="Alice has 3 apples.", queries=["How many apples does Alice have?",
                                                                   "How many apples has Alice got?", "Why?"],
                           answers=["3", "4", "?"])]
    b = ScriptedBackend(chat, name="chat-fake")
    out = free_text_session(recs, b, sleep_ledger=Ledger(), test_budget=Ledger)
    routes = [(r["route"], r["match"]) for r in out["answers"]]
    assert routes == [("anticipated", "exact"), ("notes", None), ("notes", None)]
    assert out["similar_hits"] == 0 and out["sleep_tokens"] > 0 and out["answers"][0]["test_tokens"] > 0
    sim = free_text_session(recs, b, sleep_ledger=Ledger(), test_budget=Ledger, similarity=0.5)
    assert sim["answers"][1]["match"] == "similar" and sim["false_hits"] == 1 and sim["false_hit_rate"] == 1.0
    with pytest.raises(BadInputError):
        FreeTextRecord(context="x", queries=[])


# ---------------------------------------------------------------------- CLI


def ttc(capsys, *args: str) -> tuple[int, str, str]:
    from ttc.orchestrator.cli import app, main

    if not any(getattr(g, "name", None) == "sleep" for g in app.registered_groups):
        from ttc.orchestrator._cli_sleep import sleep_app

        app.add_typer(sleep_app, name="sleep")
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def fake_models(monkeypatch):
    """``--model fake`` loads the perfect scripted model."""
    import ttc.orchestrator._cli_common as common

    def open_orc(db, device="auto", remote=None):
        o = Orc(db=db)
        o._backends[("fake", None)] = backend()
        return o

    monkeypatch.setattr(common, "open_orchestrator", open_orc)
    monkeypatch.setattr("ttc.orchestrator._cli_sleep.open_orchestrator", open_orc)


def test_cli_precompute_and_ask_json(capsys, sqlite_url, fake_models, tmp_path):
    ctx_file = tmp_path / "ctx.txt"
    ctx_file.write_text(CTX + "\n")
    code, out, _ = ttc(capsys, "sleep", "ask", "--task", "stateful-arith", "--context", f"@{ctx_file}",
                       "--query", "c+a", "--model", "fake", "--db", sqlite_url, "--json")
    cold = json.loads(out)
    assert code == 0 and cold["artifact_hit"] is False and cold["answer"] == "24"
    code, out, _ = ttc(capsys, "sleep", "precompute", "--task", "stateful-arith", "--context", f"@{ctx_file}",
                       "--model", "fake", "--db", sqlite_url, "--json")
    pre = json.loads(out)
    assert code == 0 and pre["notes"]["d"] == 24 and pre["sleep_tokens"] > 0 and pre["trace_id"]
    code, out, _ = ttc(capsys, "sleep", "ask", "--task", "stateful-arith", "--context", CTX, "--query", "c+a",
                       "--model", "fake", "--db", sqlite_url, "--json")
    warm = json.loads(out)
    assert code == 0 and out.count("\n") == 1
    assert {"answer", "artifact_hit", "sleep_tokens", "test_tokens", "trace_id"} <= set(warm)
    assert warm["artifact_hit"] and warm["answer"] == "24" and warm["sleep_tokens"] == pre["sleep_tokens"]
    assert warm["test_tokens"] > 0


@pytest.mark.parametrize("args, message", [
    (["--task", "nope", "--context", CTX], "nope"),
    (["--task", "countdown", "--context", CTX], "sleep-time formats"),
    (["--task", "stateful-arith", "--context", "a=7;b=q*3"], "bad context"),
    (["--task", "stateful-arith", "--context", "  "], "empty"),
    (["--task", "stateful-arith", "--context", "a=700;b=a*3"], "outside 0..99"),
    (["--task", "stateful-arith", "--context", "a=999;b=a*a;c=b*b;d=c*c;e=d*d;f=e*e;g=f*f;h=g*g"], "outside 0..99"),
    (["--task", "stateful-arith", "--context", "@/no/such/file"], "cannot read"),
    (["--task", "stateful-arith", "--context", CTX, "--notes", "0"], "--notes"),
    (["--task", "stateful-arith", "--context", CTX, "--db", "ttc.db"], "sqlite:///"),
])
def test_cli_bad_input_exits_2(capsys, sqlite_url, fake_models, args, message):
    db = [] if "--db" in args else ["--db", sqlite_url]
    for command in (["precompute"], ["ask", "--query", "c"]):
        code, out, err = ttc(capsys, "sleep", *command, *args, "--model", "fake", *db, "--json")
        assert code == 2, (command, err)
        assert message in json.loads(out)["error"]["message"] and "Traceback" not in err
    code, out, err = ttc(capsys, "sleep", "ask", "--task", "stateful-arith", "--context", CTX, "--query", "zz",
                         "--model", "fake", "--db", sqlite_url, "--json")
    assert code == 2 and "Traceback" not in err


def test_budget_shrunk_notes_are_not_stored_under_the_full_configuration_key(orc):
    # A sleep budget that holds one of five notes: call_model shrinks n, so the artifact is
    # keyed by the notes written; the full configuration neither reuses nor asks with it.
    b = backend()
    first = orc.precompute("stateful-arith", CTX, model=b, config={"notes": 5}, budget=Budget(tokens=400))
    written = len(first.artifact.notes_text)
    assert 1 <= written < 5  # the budget did shrink the sleep phase
    assert first.artifact.config["notes"] == written
    assert first.key == orc.precompute("stateful-arith", CTX, model=b, config={"notes": written}).key
    assert orc.ask("stateful-arith", CTX, "d", model=b, config={"notes": 5}).artifact_hit is False
    again = orc.precompute("stateful-arith", CTX, model=b, config={"notes": 5})
    assert not again.reused and len(again.artifact.notes_text) == 5 and again.key != first.key


def test_a_graded_verifier_refuses_strategies_that_select_by_its_score(orc):
    # stateful-arith's verifier solves the query exactly: best_of_n would pick the right
    # sample in any order (an oracle). Selecting strategies are refused; voting is not.
    def wrong_then_right(prompt, i, params):
        return perfect(prompt, i, params) if i == 1 else "d=99."

    def right_then_wrong(prompt, i, params):
        return perfect(prompt, i, params) if i == 0 else "d=99."

    assert TASK.verifier.graded is True
    for kw in ({"fallback": "best_of_n"}, {"fallback": "weighted_vote"}, {"strategy": "tree_search"}):
        with pytest.raises(BadInputError, match="selects by the verifier's score"):
            orc.ask("stateful-arith", CTX, "d", model=backend(), **kw)
    with pytest.raises(BadInputError, match="selects by the verifier's score"):
        check_test_strategy(TASK.verifier, "best_of_n")
    check_test_strategy(object(), "best_of_n")  # an ordinary verifier may select
    outs = [orc.ask("stateful-arith", CTX, "d", model=backend(h), fallback="majority_vote",
                    fallback_params={"n": 2}) for h in (wrong_then_right, right_then_wrong)]
    assert [o.route for o in outs] == ["fallback", "fallback"]
    assert [o.correct for o in outs] == [False, True]  # the tie goes to the first sample, not the right one


def test_cli_ask_with_a_selecting_fallback_exits_2(capsys, sqlite_url, fake_models):
    code, out, err = ttc(capsys, "sleep", "ask", "--task", "stateful-arith", "--context", CTX, "--query", "d",
                         "--fallback", "best_of_n", "--model", "fake", "--db", sqlite_url, "--json")
    assert code == 2 and "selects by the verifier's score" in json.loads(out)["error"]["message"]
    assert "Traceback" not in err


# ---------------------------------------------------------------------- real model

# The shipped checkpoint; TTC_TEST_ARITH_CHECKPOINT points the test at another build of it.
CHECKPOINT = Path(os.environ.get("TTC_TEST_ARITH_CHECKPOINT", CHECKPOINT_DIR / "stateful-arith"))


@pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file(),
                    reason=f"the stateful-arith checkpoint is not built yet ({CHECKPOINT})")
def test_real_model_precompute_then_ask(sqlite_url):
    import torch

    torch.set_num_threads(1)
    problems = [p for p in TASK.make_problems(3, seed=7, split="test", queries=4) if p["kind"] != "counterfactual"]
    model = str(CHECKPOINT)
    with Orc(db=sqlite_url, device="cpu") as o:
        cold = [o.ask("stateful-arith", p["context"], p["query"], model=model, config={"notes": 2}) for p in problems]
        for ctx in dict.fromkeys(p["context"] for p in problems):
            pre = o.precompute("stateful-arith", ctx, model=model, config={"notes": 2})
            assert pre.sleep_tokens > 0 and len(pre.artifact.notes_text) == 2 and pre.artifact.checkpoint_digest
        warm = [o.ask("stateful-arith", p["context"], p["query"], model=model, config={"notes": 2}) for p in problems]
    assert not any(a.artifact_hit for a in cold) and all(a.route == "fallback" for a in cold)
    assert all(a.artifact_hit and a.sleep_tokens > 0 and a.test_tokens > 0 for a in warm)
    # Reading an answer off the notes takes far fewer generated tokens than deriving it.
    assert sum(a.test_generated_tokens for a in warm) < sum(a.test_generated_tokens for a in cold)
