// The ttc trace viewer: runs, a run's span tree and candidates, plots, comparisons.
// Everything from the store goes into the DOM as text (textContent or text nodes);
// no HTML is ever parsed from data, and nothing is inline (CSP default-src 'self').
"use strict";

(() => {
  const main = document.getElementById("main");
  const errorBox = document.getElementById("error");
  const FILTERS = ["kind", "status", "task", "strategy", "model", "stage", "since", "until", "limit"];
  const KINDS = ["eval", "solve", "generate", "batch", "graph", "allocate", "bench", "serve", "calibration"];
  const STATUSES = ["running", "ok", "error", "interrupted"];
  let routeToken = 0;

  // ------------------------------------------------------------------ DOM helpers

  // el("td", {class: "x"}, "text", node): strings become text nodes, never markup.
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid !== null && kid !== undefined && kid !== false) e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }

  const runHref = (id) => "#/run/" + encodeURIComponent(id);
  const short = (id) => (id.length > 12 ? id.slice(0, 12) : id);
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function fmtNum(v, digits = 3) {
    if (!isNum(v)) return "-";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e7 || a < 1e-3)) return v.toExponential(2);
    return a >= 100 ? v.toFixed(0) : String(+v.toPrecision(digits));
  }
  const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC") : "-");
  const fmtMs = (s) => (!isNum(s) ? "" : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
  const fmtCi = (ci) => (Array.isArray(ci) ? `${fmtNum(ci[0], 2)}–${fmtNum(ci[1], 2)}` : "-");
  const pick = (attrs, ...keys) => keys.map((k) => attrs[k]).find((v) => v !== undefined && v !== null);

  function verdict(v) {
    if (v === true) return el("span", { class: "verdict ok", data: { verdict: "correct" } }, "correct");
    if (v === false) return el("span", { class: "verdict bad", data: { verdict: "wrong" } }, "wrong");
    return el("span", { class: "verdict unknown", data: { verdict: "unknown" } }, "unknown");
  }

  function statusBadge(status) {
    return el("span", { class: `status status-${String(status).replace(/[^a-z]/g, "")}` }, status);
  }

  function table(headers, rows, props) {
    return el("table", props || {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }

  // ------------------------------------------------------------------ fetching and routing

  async function api(path, params) {
    const url = new URL(path, document.baseURI);
    for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${r.status}`);
    return body;
  }

  function parseHash() {
    const h = location.hash.replace(/^#\/?/, "");
    const q = h.indexOf("?");
    const path = q < 0 ? h : h.slice(0, q);
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent),
      params: new URLSearchParams(q < 0 ? "" : h.slice(q + 1)) };
  }

  function setHash(view, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    const s = q.toString();
    location.hash = `#/${view}${s ? "?" + s : ""}`;
  }

  async function route() {
    const token = ++routeToken;
    const { parts, params } = parseHash();
    const view = parts[0] || "runs";
    errorBox.hidden = true;
    main.dataset.state = "loading";
    main.dataset.view = view;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === `nav-${view}`);
    const views = { runs: showRuns, run: showRun, compare: showCompare, plot: showPlot };
    try {
      const content = await (views[view] || notFound)(parts, params);
      if (token !== routeToken) return; // a later navigation won
      main.replaceChildren(content);
      main.dataset.state = "ready";
    } catch (err) {
      if (token !== routeToken) return;
      errorBox.textContent = err.message;
      errorBox.hidden = false;
      main.replaceChildren();
      main.dataset.state = "error";
    }
  }

  async function notFound(parts) {
    throw new Error(`no view ${JSON.stringify(parts.join("/"))}`);
  }

  // ------------------------------------------------------------------ filters

  function filterForm(view, params, extra) {
    const val = (k) => params.get(k) || "";
    const kinds = el("datalist", { id: "kinds" }, KINDS.map((k) => el("option", { value: k })));
    const status = el("select", { name: "status" }, el("option", { value: "" }, "any"),
      STATUSES.map((s) => el("option", { value: s, selected: val("status") === s }, s)));
    const field = (name, label, input) => el("label", {}, label, " ", input || el("input", { name, value: val(name),
      size: 12 }));
    const form = el("form", { id: "filters", class: "filters" },
      field("kind", "kind", el("input", { name: "kind", value: val("kind"), list: "kinds", size: 8 })), kinds,
      field("status", "status", status), field("task", "task"), field("strategy", "strategy"),
      field("model", "model"), field("stage", "stage"),
      field("since", "since", el("input", { name: "since", value: val("since"), placeholder: "2h, 3d, 2026-01-31",
        size: 12 })),
      field("until", "until", el("input", { name: "until", value: val("until"), size: 12 })),
      field("limit", "limit", el("input", { name: "limit", value: val("limit"), type: "number", min: 1, size: 5 })),
      extra || null,
      el("button", { type: "submit" }, "Filter"), " ", el("a", { href: `#/${view}` }, "clear"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      setHash(view, Object.fromEntries(new FormData(form).entries()));
    });
    return form;
  }

  const filterParams = (params) => Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));

  // ------------------------------------------------------------------ runs

  async function showRuns(_parts, params) {
    const data = await api("api/runs", filterParams(params));
    const rows = data.runs.map((r) => {
      const a = r.attributes || {};
      return el("tr", { class: "run-row", data: { runId: r.id, kind: r.kind, status: r.status } },
        el("td", {}, el("a", { href: runHref(r.id), class: "run-link", title: r.id }, short(r.id))),
        el("td", {}, r.kind), el("td", { class: "run-name" }, r.name), el("td", {}, statusBadge(r.status)),
        el("td", {}, fmtTime(r.created_at)), el("td", {}, a.task ?? ""), el("td", {}, a.strategy ?? ""),
        el("td", {}, a.model ?? ""),
        el("td", { class: "num" }, isNum(a.accuracy) ? fmtNum(a.accuracy)
          : typeof a.correct === "boolean" ? verdict(a.correct) : ""),
        el("td", { class: "num" }, `${r.input_tokens} / ${r.output_tokens}`));
    });
    const filtered = Object.keys(data.filters).some((k) => k !== "limit");
    return el("section", { id: "runs" }, el("h2", {}, "Runs"), filterForm("runs", params),
      el("p", { class: "count", id: "runs-count" }, !rows.length ? (filtered ? "no runs match" : "no runs recorded yet")
        : rows.length === data.filters.limit ? `the newest ${rows.length} runs (raise the limit for more)`
          : `${rows.length} run${rows.length === 1 ? "" : "s"}`),
      rows.length ? table(["id", "kind", "name", "status", "started", "task", "strategy", "model", "accuracy",
        "tokens in / out"], rows, { id: "runs-table" }) : null);
  }

  // ------------------------------------------------------------------ one run

  async function showRun(parts) {
    const id = parts[1];
    if (!id) throw new Error("no run id given");
    const [detail, points] = await Promise.all([api(`api/runs/${encodeURIComponent(id)}`),
      api(`api/runs/${encodeURIComponent(id)}/points`)]);
    const r = detail.run, a = r.attributes || {};
    document.title = `ttc traces: ${r.kind} ${r.name}`;
    const facts = [["id", r.id], ["status", statusBadge(r.status)], ["started", fmtTime(r.created_at)],
      ["ended", fmtTime(r.ended_at)], ["tokens", `${r.input_tokens} in, ${r.output_tokens} out`]];
    for (const k of ["task", "strategy", "model", "n_problems", "seed"]) if (a[k] !== undefined) facts.push([k, String(a[k])]);
    if (isNum(a.accuracy)) facts.push(["accuracy", `${fmtNum(a.accuracy)} (95% CI ${fmtCi(a.ci95)})`]);
    if (isNum(a.flops)) facts.push(["FLOPs", fmtNum(a.flops)]);
    if (r.error) facts.push(["error", el("span", { class: "error-text" }, r.error)]);
    const section = el("section", { id: "run", data: { runId: r.id } },
      el("h2", {}, el("span", { class: "kind" }, r.kind), " ", el("span", { id: "run-name" }, r.name)),
      el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("p", {}, el("a", { href: `#/compare?a=${encodeURIComponent(r.id)}` }, "compare with another run…")));
    section.append(runPlot(r, points));
    section.append(spanTree(detail));
    section.append(el("details", { class: "attributes" }, el("summary", {}, "run attributes (JSON)"),
      el("pre", {}, JSON.stringify(a, null, 2))));
    return section;
  }

  function runPlot(run, data) {
    const box = el("section", { id: "run-plot" }, el("h3", {}, "Accuracy vs compute"));
    const graded = data.outcomes.filter((o) => o.correct !== null && isNum(o.tokens));
    if (!data.run || !data.run.known) {
      box.append(el("p", { class: "muted" }, "No graded outcomes in this run."));
      return box;
    }
    const pt = (p, highlight) => ({ x: p.mean_tokens, y: p.accuracy, lo: p.ci95 && p.ci95[0], hi: p.ci95 && p.ci95[1],
      id: p.run_id, highlight, title: `${p.name} (${short(p.run_id)}): ${p.strategy || "?"}, accuracy ` +
        `${fmtNum(p.accuracy)} over ${p.known}, ${fmtNum(p.mean_tokens)} tokens per problem` });
    // Share of all graded problems solved within t tokens: the run's own accuracy-vs-compute curve.
    const sorted = [...graded].sort((x, y) => x.tokens - y.tokens);
    let solved = 0;
    const step = [];
    for (const o of sorted) {
      if (o.correct) solved += 1;
      step.push({ x: o.tokens, y: solved / sorted.length });
    }
    const series = [];
    if (data.peers.length) series.push({ name: "other runs of this task", cls: "peers", colour: "#9a9a9a",
      points: data.peers.filter((p) => p.known).map((p) => pt(p, false)) });
    series.push({ name: "solved within t tokens", cls: "solved-curve", kind: "step", colour: "#4c72b0", points: step });
    series.push({ name: "this run (mean, 95% CI)", cls: "this-run", colour: "#d95f02", points: [pt(data.run, true)] });
    box.append(window.ttcPlot.draw({ xLabel: "tokens per problem", series,
      title: `accuracy vs tokens: ${run.name}` }));
    box.append(el("p", { class: "muted" }, `The orange point is this run: accuracy over ${data.run.known} graded ` +
      `problems (95% Wilson interval) at its mean tokens per problem; the blue steps, the share of its problems ` +
      `solved within t tokens; grey points, the ${data.peers.length} newest other ${run.kind} runs of the same task.`));
    return box;
  }

  function spanTree(detail) {
    const spans = detail.spans, byId = new Map(spans.map((s) => [s.id, s]));
    const children = new Map(), cands = new Map(), orphans = [];
    for (const s of spans) {
      const parent = s.parent_id && byId.has(s.parent_id) ? s.parent_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(s);
    }
    for (const c of detail.candidates) {
      if (c.span_id && byId.has(c.span_id)) {
        if (!cands.has(c.span_id)) cands.set(c.span_id, []);
        cands.get(c.span_id).push(c);
      } else orphans.push(c);
    }

    function label(s) {
      const a = s.attributes || {};
      const bits = [el("span", { class: `span-kind kind-${s.kind.replace(/[^a-z_]/g, "")}` }, s.kind), " ",
        el("span", { class: "span-name" }, s.name)];
      if (s.model) bits.push(" ", el("span", { class: "span-model" }, s.model));
      const c = pick(a, "correct", "ttc.correct");
      if (typeof c === "boolean") bits.push(" ", verdict(c));
      const tok = pick(a, "tokens", "ttc.tokens");
      if (s.input_tokens || s.output_tokens) bits.push(" ", el("span", { class: "tokens" }, `${s.input_tokens} in, ${s.output_tokens} out`));
      else if (isNum(tok)) bits.push(" ", el("span", { class: "tokens" }, `${tok} tokens`));
      if (s.finish_reason) bits.push(" ", el("span", { class: "muted" }, `finish ${s.finish_reason}`));
      if (isNum(s.latency_s)) bits.push(" ", el("span", { class: "muted" }, fmtMs(s.latency_s)));
      if (cands.has(s.id)) bits.push(" ", el("span", { class: "muted" }, `${cands.get(s.id).length} candidates`));
      if (s.status === "error") bits.push(" ", el("span", { class: "error-text" }, `error: ${s.error || ""}`));
      return bits;
    }

    function body(s) {
      const a = s.attributes || {};
      const parts = [];
      const answer = pick(a, "answer", "ttc.answer");
      if (answer !== undefined) parts.push(el("p", { class: "answer" }, "answer: ", el("code", {}, String(answer))));
      if (cands.has(s.id)) parts.push(candidateTable(cands.get(s.id)));
      if (Object.keys(a).length) parts.push(el("details", { class: "span-attrs" }, el("summary", {}, "attributes"),
        el("pre", {}, JSON.stringify(a, null, 2))));
      const kids = children.get(s.id) || [];
      if (kids.length) parts.push(el("ul", { class: "span-children" }, kids.map(node)));
      return parts;
    }

    // A node's body is built when it is first opened: a run of thousands of spans stays light.
    function node(s) {
      const details = el("details", { class: "span-node" }, el("summary", {}, label(s)));
      let built = false;
      const build = () => {
        if (!built) { built = true; details.append(...body(s)); }
      };
      details.addEventListener("toggle", () => details.open && build());
      details.ttcBuild = build;
      return el("li", { class: "span", data: { spanId: s.id, kind: s.kind } }, details);
    }

    function setAll(root, open) {
      for (const d of root.querySelectorAll("details.span-node")) {
        if (open) { d.ttcBuild(); d.open = true; } else d.open = false;
      }
      // Opening builds children, whose own nodes are opened in the next pass.
      if (open && [...root.querySelectorAll("details.span-node")].some((d) => !d.open)) setAll(root, true);
    }

    const roots = el("ul", { class: "span-tree", id: "span-tree" }, (children.get(null) || []).map(node));
    for (const d of roots.querySelectorAll(":scope > li > details")) { d.ttcBuild(); d.open = true; }
    const section = el("section", { id: "spans" }, el("h3", {}, `Spans (${spans.length}) and candidates ` +
      `(${detail.candidates.length})`),
      el("p", {}, el("button", { type: "button", id: "expand-all", onclick: () => setAll(roots, true) }, "expand all"),
        " ", el("button", { type: "button", id: "collapse-all", onclick: () => setAll(roots, false) }, "collapse all")),
      roots);
    if (orphans.length) section.append(el("h4", {}, "Candidates without a span"), candidateTable(orphans));
    return section;
  }

  function candidateTable(cands) {
    const rows = cands.map((c) => el("tr", { class: "candidate", data: { correct: String(c.correct) } },
      el("td", { class: "num" }, String(c.idx)), el("td", {}, el("code", { class: "cand-answer" }, c.answer ?? "")),
      el("td", {}, verdict(c.correct)), el("td", { class: "num" }, isNum(c.score) ? fmtNum(c.score) : ""),
      el("td", { class: "num" }, String(c.tokens)), el("td", {}, (c.attributes || {}).finish_reason ?? ""),
      el("td", { class: "cand-reason" }, c.reason), el("td", {}, el("pre", { class: "cand-text" }, c.text))));
    return table(["#", "answer", "verdict", "score", "tokens", "finish", "reason", "text"], rows,
      { class: "candidates" });
  }

  // ------------------------------------------------------------------ plot of many runs

  async function showPlot(_parts, params) {
    const x = params.get("x") === "flops" ? "flops" : "tokens";
    const data = await api("api/points", filterParams(params));
    const xsel = el("label", {}, "x ", el("select", { name: "x" }, ["tokens", "flops"].map((v) =>
      el("option", { value: v, selected: v === x }, v))));
    const usable = data.points.filter((p) => p.known && isNum(p[`mean_${x}`]));
    const groups = new Map();
    for (const p of usable) {
      const key = p.strategy || "?";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(p);
    }
    const series = [...groups.keys()].sort().map((k) => ({ name: k, line: true, points: groups.get(k).map((p) => ({
      x: p[`mean_${x}`], y: p.accuracy, lo: p.ci95 && p.ci95[0], hi: p.ci95 && p.ci95[1], id: p.run_id,
      title: `${p.name} (${short(p.run_id)}), ${p.model || "?"}: ${fmtNum(p.accuracy)} over ${p.known}` })) }));
    const rows = data.points.map((p) => el("tr", { class: "point-row", data: { runId: p.run_id } },
      el("td", {}, el("a", { href: runHref(p.run_id) }, short(p.run_id))), el("td", {}, p.name),
      el("td", {}, p.strategy ?? "-"), el("td", {}, p.model ?? "-"), el("td", { class: "num" }, String(p.problems)),
      el("td", { class: "num" }, p.known ? `${fmtNum(p.accuracy)} (${p.correct}/${p.known})` : "-"),
      el("td", {}, fmtCi(p.ci95)), el("td", { class: "num" }, fmtNum(p.mean_tokens)),
      el("td", { class: "num" }, fmtNum(p.mean_flops))));
    return el("section", { id: "plot" }, el("h2", {}, "Accuracy vs compute"),
      filterForm("plot", params, xsel),
      el("p", { class: "muted" }, "One point per run (evals unless a kind is given): accuracy over its graded " +
        `problems with its 95% Wilson interval, against mean ${x} per problem; one colour per strategy.`),
      window.ttcPlot.draw({ xLabel: `mean ${x} per problem`, series }),
      rows.length ? table(["run", "name", "strategy", "model", "n", "accuracy", "95% CI", "tokens", "FLOPs"], rows,
        { id: "points-table" }) : el("p", {}, "no runs match"));
  }

  // ------------------------------------------------------------------ compare two runs

  async function showCompare(_parts, params) {
    const a = params.get("a") || "", b = params.get("b") || "";
    const [list, cmp] = await Promise.all([api("api/runs", { kind: "eval", limit: 200 }),
      a && b ? api("api/compare", { a, b }) : null]);
    const choose = (name, chosen) => {
      const ids = new Set(list.runs.map((r) => r.id));
      const opts = list.runs.map((r) => el("option", { value: r.id, selected: r.id === chosen },
        `${r.name} · ${short(r.id)} · ${fmtTime(r.created_at)}`));
      if (chosen && !ids.has(chosen)) opts.unshift(el("option", { value: chosen, selected: true }, chosen));
      return el("select", { name, id: `cmp-${name}` }, el("option", { value: "" }, "choose an eval run"), opts);
    };
    const form = el("form", { id: "compare-form", class: "filters" }, el("label", {}, "A ", choose("a", a)),
      el("label", {}, "B ", choose("b", b)), el("button", { type: "submit" }, "Compare"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      setHash("compare", Object.fromEntries(new FormData(form).entries()));
    });
    const section = el("section", { id: "compare" }, el("h2", {}, "Compare two runs problem by problem"), form);
    if (cmp) section.append(compareResult(cmp));
    return section;
  }

  function compareResult(c) {
    const cell = (key, v) => el("td", { class: "num", data: { count: key } }, String(v));
    const onlyDiff = el("input", { type: "checkbox", id: "only-diff" });
    const rows = c.problems.map((p) => el("tr", { class: `problem-row${p.a !== p.b ? " differs" : ""}`,
      data: { key: p.key } }, el("td", {}, p.key), el("td", {}, verdict(p.a)), el("td", {}, verdict(p.b))));
    const problems = table(["problem", "A", "B"], rows, { id: "cmp-problems" });
    onlyDiff.addEventListener("change", () => problems.classList.toggle("only-diff", onlyDiff.checked));
    const acc = c.matched ? `accuracy A ${fmtNum(c.accuracy_a)} (95% CI ${fmtCi(c.ci95_a)}), B ${fmtNum(c.accuracy_b)} ` +
      `(95% CI ${fmtCi(c.ci95_b)})` : "no problem graded in both";
    return el("div", { id: "compare-result" },
      el("p", {}, "A = ", el("a", { href: runHref(c.a), id: "cmp-a-name" }, c.a_name), ` (${short(c.a)})`),
      el("p", {}, "B = ", el("a", { href: runHref(c.b), id: "cmp-b-name" }, c.b_name), ` (${short(c.b)})`),
      el("table", { id: "cmp-table", class: "contingency" },
        el("thead", {}, el("tr", {}, el("th", {}), el("th", {}, "B correct"), el("th", {}, "B wrong"))),
        el("tbody", {}, el("tr", {}, el("th", {}, "A correct"), cell("both", c.both), cell("only_a", c.only_a)),
          el("tr", {}, el("th", {}, "A wrong"), cell("only_b", c.only_b), cell("neither", c.neither)))),
      el("p", { id: "cmp-summary" }, `${c.matched} problems graded in both; ${acc}; exact McNemar p = ` +
        `${fmtNum(c.mcnemar_p)}; graded in A only ${c.unmatched_a}, in B only ${c.unmatched_b}.`),
      el("p", {}, el("label", {}, onlyDiff, " only problems where they differ")), problems);
  }

  window.addEventListener("hashchange", route);
  route();
})();
