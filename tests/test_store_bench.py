"""``ttc bench store`` at tiny sizes: its JSON, its counts, and that it leaves nothing behind."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from recording import run_cli
from ttc.orchestrator.bench.store_bench import GOALS, make_spans, run_store_bench

# Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def _check_block(block: dict, n: int, stats_n: int) -> None:
    assert block["skipped"] is False and block["server_version"]
    ins, st = block["inserts"], block["stats"]
    assert ins["n"] == n and len(ins["store_wall_s"]) == len(ins["raw_wall_s"]) == ins["rounds"]
    assert ins["store_rows_per_s"] > 0 and ins["raw_rows_per_s"] > 0
    assert ins["insert_vs_raw"] == pytest.approx(ins["store_rows_per_s"] / ins["raw_rows_per_s"])
    assert st["n_spans"] == stats_n and st["same_answer"] is True
    # Half the generated spans are llm calls: the GROUP BY reads exactly those.
    assert st["llm_spans"] == stats_n // 2
    assert st["store_s"] > 0 and st["raw_s"] > 0
    assert st["stats_vs_raw"] == pytest.approx(st["store_s"] / st["raw_s"])
    assert block["goals_met"] == {"insert_vs_raw": ins["insert_vs_raw"] >= GOALS["insert_vs_raw_at_least"],
                                  "stats_vs_raw": st["stats_vs_raw"] <= GOALS["stats_vs_raw_at_most"]}


def test_spans_are_deterministic_and_unique():
    a, b = make_spans(300, "r"), make_spans(300, "r")
    assert [s.model_dump() for s in a] == [s.model_dump() for s in b]
    assert len({s.id for s in a + make_spans(300, "r", start=300)}) == 600
    assert sum(s.kind == "llm" for s in a) == 150


@pytest.mark.postgres
def test_bench_on_sqlite_and_postgresql_counts_every_span_and_drops_its_schemas(pg_url, tmp_path, monkeypatch):
    ttc_db = tmp_path / "never.db"
    monkeypatch.setenv("TTC_DB", f"sqlite:///{ttc_db}")
    r = run_store_bench(quick=True, pg_url=pg_url, n=120, stats_n=400, writer_n=60, rounds=2, out_dir=tmp_path)
    assert json.loads((tmp_path / "store.json").read_text()) == r
    assert r["bench"] == "store" and r["seed"] == 0 and "git_commit" in r
    assert r["n"] == {"inserts": 120, "stats_spans": 400, "writer_spans_each": 60}
    assert r["goals"] == {"insert_vs_raw_at_least": 0.5, "stats_vs_raw_at_most": 3}
    for backend in ("sqlite", "postgresql"):
        _check_block(r[backend], 120, 400)
    w = r["concurrent_writers"]
    assert (w["processes"], w["spans_each"], w["stored"], w["lost"]) == (4, 60, 240, 0)
    assert w["spans_per_run"] == [60] * 4 and w["runs_ended_ok"] == 4
    assert not ttc_db.exists()
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ttc_bench_%'")).scalar()
    engine.dispose()
    assert left == 0


def test_unreachable_postgresql_is_reported_skipped_and_sqlite_still_measured(tmp_path):
    r = run_store_bench(quick=True, pg_url=UNREACHABLE_PG, n=50, stats_n=200, rounds=1, out_dir=tmp_path)
    _check_block(r["sqlite"], 50, 200)
    assert r["postgresql"]["skipped"] is True and "unreachable" in r["postgresql"]["reason"]
    assert r["concurrent_writers"]["skipped"] is True and r["concurrent_writers"]["lost"] is None


def test_cli_prints_one_json_object_and_refuses_bad_flags(tmp_path):
    args = ["bench", "store", "--spans", "40", "--stats-spans", "100", "--writer-spans", "10", "--rounds", "1",
            "--pg-url", UNREACHABLE_PG, "--out", str(tmp_path), "--json"]
    code, out, _err = run_cli(args)
    assert code == 0
    r = json.loads(out)
    assert r["sqlite"]["inserts"]["n"] == 40 and r["sqlite"]["stats"]["n_spans"] == 100
    assert r["postgresql"]["skipped"] is True
    assert r["files"]["json"] == str(tmp_path / "store.json") and (tmp_path / "store.json").is_file()
    code, out, _err = run_cli(args)  # the JSON is there now: refused without --force
    assert code == 2 and "already exists" in json.loads(out)["error"]["message"]
    code, out, _err = run_cli(["bench", "store", "--pg-url", "sqlite:///x.db", "--out", str(tmp_path / "o"),
                               "--json"])
    assert code == 2 and "postgresql" in json.loads(out)["error"]["message"]
