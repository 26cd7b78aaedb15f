// Accuracy-vs-compute plots drawn as SVG from JSON. Every label is set as text
// (textContent), never as markup, and colours are attributes, not inline styles (CSP).
"use strict";

window.ttcPlot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 380, M = { left: 64, right: 180, top: 20, bottom: 52 };
  const PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#4c72b0"];

  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    }
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
    return ticks;
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e6 || a < 1e-2) return v.toExponential(1).replace("e+", "e");
    return a >= 100 ? v.toFixed(0) : String(+v.toPrecision(3));
  }

  // xScale over positive or non-negative values: log when they span more than 20x.
  function xScale(values) {
    const pos = values.filter((v) => v > 0);
    let lo = Math.min(...values), hi = Math.max(...values);
    const log = pos.length === values.length && pos.length > 1 && hi / lo > 20;
    if (log) {
      const l0 = Math.floor(Math.log10(lo)), l1 = Math.ceil(Math.log10(hi));
      const to = (v) => M.left + ((Math.log10(v) - l0) / Math.max(l1 - l0, 1e-9)) * (W - M.left - M.right);
      const ticks = [];
      for (let e = l0; e <= l1; e++) ticks.push(Math.pow(10, e));
      return { to, ticks, log };
    }
    lo = Math.min(0, lo);
    if (hi <= lo) hi = lo + 1;
    hi *= 1.05;
    const to = (v) => M.left + ((v - lo) / (hi - lo)) * (W - M.left - M.right);
    return { to, ticks: niceTicks(lo, hi, 6), log };
  }

  // spec: {xLabel, series: [{name, kind: "points"|"step", cls, points: [{x, y, lo, hi, title, highlight}]}]}
  function draw(spec) {
    const svg = svgEl("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img" });
    svg.append(svgEl("title", {}, spec.title || "accuracy vs compute"));
    const all = spec.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (!all.length) {
      svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "plot-empty" },
        "no graded outcomes to plot"));
      return svg;
    }
    const sx = xScale(all.map((p) => p.x));
    const sy = (v) => H - M.bottom - v * (H - M.top - M.bottom);
    const grid = svgEl("g", { class: "plot-grid" });
    for (const t of niceTicks(0, 1, 5)) {
      grid.append(svgEl("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t) }));
      grid.append(svgEl("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
    }
    for (const t of sx.ticks) {
      const x = sx.to(t);
      if (x < M.left - 1 || x > W - M.right + 1) continue;
      grid.append(svgEl("line", { x1: x, x2: x, y1: M.top, y2: H - M.bottom }));
      grid.append(svgEl("text", { x, y: H - M.bottom + 16, "text-anchor": "middle" }, fmt(t)));
    }
    svg.append(grid);
    svg.append(svgEl("text", { x: (M.left + W - M.right) / 2, y: H - 12, "text-anchor": "middle", class: "plot-label" },
      spec.xLabel + (sx.log ? " (log scale)" : "")));
    svg.append(svgEl("text", { x: 14, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", class: "plot-label",
      transform: `rotate(-90 14 ${(M.top + H - M.bottom) / 2})` }, "accuracy"));
    const legend = svgEl("g", { class: "plot-legend" });
    spec.series.forEach((s, i) => {
      const colour = s.colour || PALETTE[i % PALETTE.length];
      const g = svgEl("g", { class: `series ${s.cls || ""}`, "data-series": s.name });
      const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
      if (s.kind === "step" && pts.length) {
        let d = `M ${sx.to(pts[0].x)} ${sy(0)}`;
        for (const p of pts) d += ` H ${sx.to(p.x)} V ${sy(p.y)}`;
        g.append(svgEl("path", { d, fill: "none", stroke: colour, "stroke-width": 2 }));
      } else {
        if (s.line && pts.length > 1) {
          const sorted = [...pts].sort((a, b) => a.x - b.x);
          g.append(svgEl("polyline", { points: sorted.map((p) => `${sx.to(p.x)},${sy(p.y)}`).join(" "),
            fill: "none", stroke: colour, "stroke-width": 1.5 }));
        }
        for (const p of pts) {
          const x = sx.to(p.x);
          if (Number.isFinite(p.lo) && Number.isFinite(p.hi)) {
            g.append(svgEl("line", { x1: x, x2: x, y1: sy(p.lo), y2: sy(p.hi), stroke: colour, class: "ci" }));
          }
          const dot = svgEl("circle", { cx: x, cy: sy(p.y), r: p.highlight ? 7 : 4.5, fill: colour,
            class: p.highlight ? "point highlight" : "point", "data-run-id": p.id });
          dot.append(svgEl("title", {}, p.title || ""));
          g.append(dot);
        }
      }
      svg.append(g);
      const ly = M.top + 8 + i * 18;
      legend.append(svgEl("rect", { x: W - M.right + 14, y: ly - 8, width: 10, height: 10, fill: colour }));
      legend.append(svgEl("text", { x: W - M.right + 30, y: ly + 1 }, s.name));
    });
    svg.append(legend);
    return svg;
  }

  return { draw, PALETTE };
})();
