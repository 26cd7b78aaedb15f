"""Hostile input to the batch runner, property-based: any line, any file, any flag value gives
an error line or a one-line error with exit 2 — never a traceback, never a lost line."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recording import run_cli
from ttc.backends.errors import BadInputError
from ttc.orchestrator.batch import read_batch_file
from ttc.orchestrator.batch.lines import parse_line
from ttc.orchestrator.chat import plan_chat
from ttc.store import TraceStore

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
body_keys = st.sampled_from(["task", "problem", "strategy", "allocation", "budget", "model", "models", "params",
                             "seed", "messages", "ttc", "n", "max_tokens", "temperature", "stop"])
bodies = st.dictionaries(body_keys, json_values | st.sampled_from(["countdown", "sample", "plan-solve"]), max_size=5)
lines = st.one_of(
    st.text(max_size=40),
    st.builds(lambda cid, body: json.dumps({"custom_id": cid, "body": body}),
              st.one_of(st.text(max_size=6), st.integers(), st.none()), bodies),
    json_values.map(json.dumps),
)
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@QUICK
@given(lines)
def test_any_line_parses_to_a_job_or_an_error_line(text):
    line = parse_line(3, text)
    assert (line.error is None) == (line.kind is not None)
    if line.error is not None:
        assert "\n" not in line.error and line.error


@QUICK
@given(bodies)
def test_any_chat_body_is_planned_or_bad_input(body):
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "countdown-direct", **body}
    try:
        plan_chat(body)
    except BadInputError as exc:
        assert str(exc)


@QUICK
@given(st.binary(max_size=200))
def test_any_file_reads_or_is_one_bad_input_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("raw") / "in.jsonl"
    path.write_bytes(data)
    try:
        read = read_batch_file(path)
    except BadInputError as exc:
        assert "not UTF-8" in str(exc)
        return
    assert all(x.error or x.kind for x in read)


# Lines that fail before any model loads, so each example runs in milliseconds.
bad_lines = st.lists(st.one_of(st.text(alphabet="{}[]\":,abc 1", max_size=20).filter(lambda t: "\n" not in t),
                               st.builds(lambda cid: json.dumps({"custom_id": cid, "body": {"task": "nope"}}),
                                         st.text(max_size=4))),
                     min_size=1, max_size=8)
flag_values = st.one_of(st.none(), st.text(max_size=6), st.integers(-3, 5).map(str))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad_lines, flag_values, flag_values, flag_values)
def test_cli_gives_every_line_its_output_line_or_exits_2(tmp_path_factory, texts, shard, limit, conc):
    d = tmp_path_factory.mktemp("cli")
    src, out, db = d / "in.jsonl", d / "out.jsonl", f"sqlite:///{d / 't.db'}"
    src.write_text("\n".join(texts) + "\n")
    args = ["batch", "run", str(src), "-o", str(out), "--db", db, "--json"]
    for flag, value in (("--shard", shard), ("--limit", limit), ("--max-concurrency", conc)):
        if value is not None:
            args += [flag, value]
    code, stdout, stderr = run_cli(args)
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert code in (0, 2), stderr
    if code == 2:
        assert json.loads(stdout)["error"]["message"]
        return
    summary = json.loads(stdout)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(written) == summary["jobs"] == summary["failed"]
    expected = sum(1 for t in texts if t.strip())
    if shard is None and limit is None:
        assert summary["jobs"] == expected
    with TraceStore.open(db) as store:
        assert len(store.list_jobs(summary["run_id"])) == summary["jobs"]  # every line is in the store
