"""The trace viewer (``ttc.orchestrator.viewer``, ``ttc traces serve``): its JSON, its guards, its page.

The API tests read a store filled by two real evals of the built-in countdown-direct model
(``sample`` and ``best_of_n``, six problems each), on SQLite and, copied row by row, on
PostgreSQL; every figure is checked against the eval reports. The guards (API key, CSP,
escaping) are tested on a small hand-written store. The page is driven in headless
Chromium (the system browser, through Playwright) and checked by reading its DOM; it is
skipped when no browser is installed, and fails instead when ``CI`` is set.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from ttc.orchestrator.cli import main
from ttc.orchestrator.viewer import ASSETS, make_viewer_router, viewer_app
from ttc.store import CandidateRecord, SpanRecord, TraceStore, make_engine, migrate
from ttc.store.schema import Candidate, Job, Run, Span
from ttc.tasks.countdown import COUNTDOWN

KEY = "s3cret-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">[/b]'
PROBLEMS = COUNTDOWN.make_problems(6, seed=0, split="test")
CSP = "default-src 'self'"


def write_evil_run(url: str) -> str:
    """A solve run whose name, strategy, answer, candidate text and reason are all markup."""
    with TraceStore.open(url) as store:
        run_id = store.start_run("solve", EVIL, {"task": "countdown", "strategy": EVIL, "model": "m", "correct": False})
        root = SpanRecord(run_id=run_id, kind="run", name=EVIL, latency_s=0.5)
        strat = SpanRecord(run_id=run_id, parent_id=root.id, kind="strategy", name=EVIL, latency_s=0.4,
                           attributes={"ttc.answer": EVIL, "ttc.correct": False})
        store.add_span(strat)
        store.add_span(root)
        store.add_candidates([CandidateRecord(run_id=run_id, span_id=strat.id, idx=0, text=EVIL, answer=EVIL,
                                              correct=False, reason=EVIL, tokens=7)])
        store.end_run(run_id)
    return run_id


@dataclass
class Evals:
    url: str
    a: object  # EvalReport of `sample`
    b: object  # EvalReport of `best_of_n` (n=2)
    evil: str


@pytest.fixture(scope="module")
def evals(tmp_path_factory) -> Evals:
    """Two real evals of six problems and the markup run, in one SQLite store."""
    import torch

    from ttc.orchestrator import Orchestrator

    url = f"sqlite:///{tmp_path_factory.mktemp('viewer') / 'ttc.db'}"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-core machine: one busy thread per process is fastest overall
    try:
        with Orchestrator(db=url, device="cpu") as orc:
            a = orc.evaluate("countdown", PROBLEMS, strategy="sample", model="countdown-direct")
            b = orc.evaluate("countdown", PROBLEMS, strategy="best_of_n", model="countdown-direct", n=2)
    finally:
        torch.set_num_threads(before)
    return Evals(url, a, b, write_evil_run(url))


def copy_store(src_url: str, dst_url: str) -> None:
    """Every row of one store into another (same ids, times and attributes)."""
    src, dst = make_engine(src_url), make_engine(dst_url)
    migrate(dst)
    try:
        with src.connect() as s, dst.begin() as d:
            for table in (Run.__table__, Span.__table__, Candidate.__table__, Job.__table__):
                rows = [dict(r._mapping) for r in s.execute(select(table))]
                if rows:
                    d.execute(insert(table), rows)
    finally:
        src.dispose()
        dst.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def eval_url(request, evals) -> str:
    if request.param == "sqlite":
        return evals.url
    url = request.getfixturevalue("new_pg_database")()
    copy_store(evals.url, url)
    return url


@pytest.fixture(scope="module")
def api(eval_url):
    with TestClient(viewer_app(eval_url, api_key=KEY), headers=BEARER) as client:
        yield client


def verdicts(report) -> dict[str, bool]:
    return {row["id"]: row["correct"] for row in report.problems}


# ---------------------------------------------------------------------- JSON over real evals


@pytest.mark.slow
def test_runs_list_and_filters(api, evals):
    def ids(**params):
        r = api.get("/api/runs", params=params)
        assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
        return [run["id"] for run in r.json()["runs"]]

    a, b = evals.a.trace_id, evals.b.trace_id
    assert ids() == [evals.evil, b, a]  # newest first
    assert ids(kind="eval") == [b, a]
    assert ids(strategy="best_of_n") == [b]
    assert ids(task="countdown", model="countdown-direct") == [b, a]
    assert ids(status="ok", since="1h") == [evals.evil, b, a]
    assert ids(until="2000-01-01") == []
    assert ids(limit=1) == [evals.evil]
    run = api.get("/api/runs", params={"kind": "eval", "limit": 1}).json()["runs"][0]
    assert run["attributes"]["accuracy"] == pytest.approx(evals.b.accuracy)


@pytest.mark.slow
def test_run_detail_has_span_tree_candidates_verdicts_and_tokens(api, evals):
    b = evals.b
    detail = api.get(f"/api/runs/{b.trace_id[:8]}").json()  # a unique prefix is enough
    assert set(detail) == {"run", "spans", "candidates"} and detail["run"]["id"] == b.trace_id
    spans = {s["id"]: s for s in detail["spans"]}
    problems = [s for s in spans.values() if s["kind"] == "problem"]
    assert {p["name"]: p["attributes"]["correct"] for p in problems} == verdicts(b)
    assert sum(p["attributes"]["tokens"] for p in problems) == b.tokens
    llm = [s for s in spans.values() if s["kind"] == "llm"]
    assert sum(s["input_tokens"] + s["output_tokens"] for s in llm) == b.tokens
    assert len(detail["candidates"]) == 2 * len(PROBLEMS)  # n=2 per problem
    assert all(c["span_id"] in spans and c["correct"] in (True, False) for c in detail["candidates"])
    root = [s for s in spans.values() if s["parent_id"] is None]
    assert [s["kind"] for s in root] == ["run"]
    assert all(p["parent_id"] == root[0]["id"] for p in problems)


@pytest.mark.slow
def test_run_points_give_the_runs_accuracy_against_compute(api, evals):
    b = evals.b
    data = api.get(f"/api/runs/{b.trace_id}/points").json()
    p = data["run"]
    assert (p["problems"], p["known"], p["correct"]) == (6, 6, b.n_correct)
    assert p["accuracy"] == pytest.approx(b.accuracy) and p["mean_tokens"] == pytest.approx(b.mean_tokens)
    assert p["ci95"] == pytest.approx(b.ci95)
    assert [q["run_id"] for q in data["peers"]] == [evals.a.trace_id]  # the other eval of the task
    assert {o["key"]: o["correct"] for o in data["outcomes"]} == verdicts(b)
    assert {o["key"]: o["tokens"] for o in data["outcomes"]} == {r["id"]: r["tokens"] for r in b.problems}
    everything = api.get("/api/points").json()["points"]  # evals only by default
    assert sorted(q["run_id"] for q in everything) == sorted([evals.a.trace_id, b.trace_id])
    assert api.get(f"/api/runs/{b.trace_id}/points", params={"peers": 0}).json()["peers"] == []


@pytest.mark.slow
def test_compare_counts_match_the_reports(api, evals):
    va, vb = verdicts(evals.a), verdicts(evals.b)
    c = api.get("/api/compare", params={"a": evals.a.trace_id, "b": evals.b.trace_id}).json()
    assert c["matched"] == len(PROBLEMS)
    assert c["both"] == sum(va[k] and vb[k] for k in va)
    assert c["only_a"] == sum(va[k] and not vb[k] for k in va)
    assert c["only_b"] == sum(vb[k] and not va[k] for k in va)
    assert c["neither"] == sum(not va[k] and not vb[k] for k in va)
    assert {p["key"]: (p["a"], p["b"]) for p in c["problems"]} == {k: (va[k], vb[k]) for k in va}
    assert c["accuracy_a"] == pytest.approx(evals.a.accuracy) and c["ci95_b"] == pytest.approx(evals.b.ci95)


@pytest.mark.slow
@pytest.mark.parametrize(("path", "params", "status", "needle"), [
    ("/api/runs", {"status": "done"}, 400, "status"),
    ("/api/runs", {"since": "yesterday"}, 400, "since must be an ISO time"),
    ("/api/runs", {"limit": 0}, 400, "limit"),
    ("/api/compare", {"a": "whatever"}, 400, "b"),
    ("/api/runs/ffffffffffff", {}, 404, "no run"),
    ("/api/runs/ffffffffffff/points", {}, 404, "no run"),
    ("/api/compare", {"a": "ffffffffffff", "b": "eeeeeeeeeeee"}, 404, "no run"),
    ("/static/nothing.js", {}, 404, "no asset"),
])
def test_bad_requests_get_an_error_object(api, path, params, status, needle):
    r = api.get(path, params=params)
    assert r.status_code == status and r.headers["content-security-policy"] == CSP
    err = r.json()["error"]
    assert needle in err["message"] and "--" not in err["message"] and err["type"]


# ---------------------------------------------------------------------- guards


@pytest.fixture
def small_url(db_url) -> tuple[str, str]:
    return db_url, write_evil_run(db_url)


ROUTES = ["/", "/static/viewer.js", "/static/viewer.css", "/api/runs", "/api/runs/{id}", "/api/runs/{id}/points",
          "/api/points", "/api/compare?a={id}&b={id}"]


def test_every_route_wants_the_key_and_every_response_has_the_csp(small_url):
    url, run_id = small_url
    with TestClient(viewer_app(url, api_key=KEY)) as client:
        for route in ROUTES:
            path = route.format(id=run_id)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = client.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["content-security-policy"] == CSP
                assert KEY not in r.text
            r = client.get(path, headers=BEARER)
            assert r.status_code == 200, path
            assert r.headers["content-security-policy"] == CSP and r.headers["x-content-type-options"] == "nosniff"
        assert client.get("/api/runs").json()["error"]["type"] == "unauthorized"
        assert client.get("/no/such/page").headers["content-security-policy"] == CSP
    with TestClient(viewer_app(url)) as open_client:  # no key: open (for loopback)
        assert open_client.get("/api/runs").status_code == 200


def test_a_browser_gets_a_session_cookie_from_the_key_once(small_url):
    url, _ = small_url
    with TestClient(viewer_app(url, api_key=KEY)) as client:
        r = client.get("/?key=wrong", follow_redirects=False)
        assert r.status_code == 401 and "set-cookie" not in r.headers and "<form" in r.text
        r = client.get(f"/?key={KEY}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and KEY not in cookie
        assert client.get("/api/runs").status_code == 200  # the cookie alone now
        assert client.get("/").text.startswith("<!doctype html>")
    with TestClient(viewer_app(url, api_key=KEY)) as client:
        assert client.post("/login", data={"key": "nope"}, follow_redirects=False).status_code == 401
        r = client.post("/login", data={"key": KEY}, follow_redirects=False)
        assert r.status_code == 303 and client.get("/api/points").status_code == 200


def test_markup_in_data_stays_data(small_url):
    url, run_id = small_url
    with TestClient(viewer_app(url)) as client:
        page = client.get("/")
        assert page.headers["content-type"].startswith("text/html") and "<script>window" not in page.text
        r = client.get(f"/api/runs/{run_id}")
        assert r.headers["content-type"] == "application/json"
        detail = r.json()
        assert detail["run"]["name"] == EVIL and detail["candidates"][0]["text"] == EVIL
    # The page's own code never parses data as HTML, and nothing in it is inline (the CSP forbids it).
    js = "".join(_asset(n) for n in ASSETS if n.endswith(".js"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    html = _asset("index.html")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="static/plot.js" defer>',
                                                    '<script src="static/viewer.js" defer>']
    assert re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL) == ["", ""]  # no inline code
    assert not re.search(r"\s(style|on\w+)=|<style", html)
    assert not re.search(r"https?://", html + _asset("viewer.css") + js.replace("http://www.w3.org/2000/svg", ""))


def _asset(name: str) -> str:
    return resources.files("ttc.orchestrator.viewer").joinpath("static", name).read_text(encoding="utf-8")


def test_the_router_mounts_in_another_app(small_url):
    url, _ = small_url
    engine = make_engine(url)
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    app.include_router(make_viewer_router(lambda: engine, api_key=KEY))
    try:
        with TestClient(app) as client:
            assert client.get("/health").json() == {"ok": True}
            r = client.get("/api/runs")
            assert r.status_code == 401 and r.headers["content-security-policy"] == CSP
            assert client.get("/api/runs", headers=BEARER).json()["runs"][0]["name"] == EVIL
            assert client.get("/static/plot.js", headers=BEARER).headers["content-type"].startswith("text/javascript")
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- ttc traces serve


def test_cli_serve_answers_with_the_key_and_stops_on_sigterm(sqlite_url):
    write_evil_run(sqlite_url)
    proc = subprocess.Popen([sys.executable, "-m", "ttc", "traces", "serve", "--port", "0", "--db", sqlite_url,
                             "--api-key", KEY], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        base = f"http://127.0.0.1:{m[1]}"
        assert httpx.get(f"{base}/api/runs", timeout=30).status_code == 401
        r = httpx.get(f"{base}/api/runs", headers=BEARER, timeout=30)
        assert r.status_code == 200 and r.json()["runs"][0]["name"] == EVIL
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize(("args", "code"), [(["--db", "ttc.db"], 2), (["--api-key", ""], 2), (["--port", "70000"], 2)])
def test_cli_serve_bad_input_exits_2(args, code, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["traces", "serve", *args])
    assert exc.value.code == code and "error" in capsys.readouterr().err


# ---------------------------------------------------------------------- the page in headless Chromium


def _browser_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        reason = "no system chromium (apt-get install chromium) or no playwright (pip install playwright)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@contextmanager
def served(app):
    """The app under uvicorn in a thread, on a free loopback port; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the viewer did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.mark.slow
def test_the_page_in_headless_chromium(evals, tmp_path):
    chromium = _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    a, b = evals.a, evals.b
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    with served(viewer_app(evals.url, api_key=KEY)) as base, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                    headless=True, args=args)
        try:
            problems = []
            page = ctx.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}?key={KEY}")  # sets the session cookie and drops the key from the URL
            assert "key=" not in page.url
            main = page.locator("#main[data-state=ready]")

            # The runs, and the markup run's name as text.
            expect(page.locator("#main[data-state=ready][data-view=runs]")).to_be_visible()
            rows = page.locator("#runs-table tr.run-row")
            expect(rows).to_have_count(3)
            assert page.locator(f"tr[data-run-id='{evals.evil}'] .run-name").text_content() == EVIL
            assert main.locator("script, img").count() == 0

            # Filter, then open the eval.
            page.fill("#filters input[name=strategy]", "best_of_n")
            page.click("#filters button[type=submit]")
            expect(rows).to_have_count(1)
            assert rows.first.get_attribute("data-run-id") == b.trace_id and "strategy=best_of_n" in page.url
            rows.first.locator("a.run-link").click()
            expect(page.locator("#main[data-state=ready][data-view=run]")).to_be_visible()
            assert page.locator("#run-name").text_content() == "countdown/best_of_n"

            # The span tree: six problems under the run, each with its verdict; every candidate after expanding.
            problem_nodes = page.locator("#span-tree li.span[data-kind=problem]")
            expect(problem_nodes).to_have_count(len(PROBLEMS))
            shown = problem_nodes.locator(":scope > details > summary [data-verdict=correct]").count()
            assert shown == b.n_correct
            page.click("#expand-all")
            cands = page.locator("#span-tree table.candidates tr.candidate")
            expect(cands).to_have_count(2 * len(PROBLEMS))
            detail = httpx.get(f"{base}api/runs/{b.trace_id}", headers=BEARER, timeout=30).json()
            first = detail["candidates"][0]
            assert cands.first.locator(".cand-answer").text_content() == (first["answer"] or "")
            llm_spans = sum(s["kind"] == "llm" for s in detail["spans"])
            assert page.locator("#span-tree li.span[data-kind=llm]").count() == llm_spans

            # The plot: this run highlighted, the other eval as a peer, the solved-within curve.
            plot = page.locator("#run-plot svg.plot")
            expect(plot).to_have_count(1)
            assert plot.locator("circle.highlight").get_attribute("data-run-id") == b.trace_id
            assert plot.locator(f"circle[data-run-id='{a.trace_id}']").count() == 1
            assert plot.locator("g.solved-curve path").count() == 1

            # Compare: B (this run) against A, counts from the reports.
            page.click("text=compare with another run…")
            expect(page.locator("#main[data-state=ready][data-view=compare]")).to_be_visible()
            page.select_option("#cmp-b", a.trace_id)
            page.click("#compare-form button[type=submit]")
            expect(page.locator("#cmp-table")).to_be_visible()
            va, vb = verdicts(a), verdicts(b)
            want = {"both": sum(vb[k] and va[k] for k in va), "only_a": sum(vb[k] and not va[k] for k in va),
                    "only_b": sum(va[k] and not vb[k] for k in va), "neither": sum(not va[k] and not vb[k] for k in va)}
            got = {k: int(page.locator(f"#cmp-table [data-count={k}]").text_content()) for k in want}
            assert got == want
            expect(page.locator("#cmp-problems tr.problem-row")).to_have_count(len(PROBLEMS))

            # The accuracy-vs-compute page over every eval.
            page.click("#nav-plot")
            expect(page.locator("#main[data-state=ready][data-view=plot]")).to_be_visible()
            expect(page.locator("#plot svg.plot circle.point")).to_have_count(2)

            # The markup run: every field shows as text, nothing runs.
            page.goto(f"{base}#/run/{evals.evil}")
            expect(page.locator("#main[data-state=ready][data-view=run]")).to_be_visible()
            page.click("#expand-all")
            assert page.locator("#run-name").text_content() == EVIL
            assert page.locator("pre.cand-text").text_content() == EVIL
            assert page.locator(".cand-reason").text_content() == EVIL
            assert main.locator("script, img").count() == 0
            assert problems == []  # no script error, no CSP violation
        finally:
            ctx.close()
