// Sweeps: the list, and one sweep's page: its trials in a table sortable by any column (the metric's best by
// default), every trial's curve of the metric on one chart (the best drawn thick, early-stopped ones dashed),
// a link from each trial to its job page, and Stop. Only the public /v1/sweeps and /v1/jobs API.

import { ApiError, apiJSON } from "./api.js";
import { TERMINAL, age, fmt, h, statusBadge } from "./dom.js";

const LIST_REFRESH_MS = 3000;
const SWEEP_REFRESH_MS = 2000;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
  "#4b5563", "#65a30d"];

// A searched value: small and large ones in exponent form (a learning rate of 1e-5 reads as such).
function param(v) {
  if (typeof v !== "number" || Number.isInteger(v)) return fmt(v);
  return Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5 ? v.toExponential(2) : String(Number(v.toPrecision(4)));
}

// The legend shows each trial's newest value without hovering, and under the cursor its value there.
function legendValue(u, _raw, si, idx) {
  const d = u.data[si];
  let i = idx ?? d.length - 1;
  while (i >= 0 && (d[i] === null || d[i] === undefined)) i--;
  return i < 0 ? "–" : fmt(d[i]);
}

const jobLink = (t) => h("a", { href: `#/jobs/${encodeURIComponent(t.job_id)}` }, t.id);
const better = (mode) => (a, b) => (mode === "min" ? a < b : a > b);

export function sweepsPage(view) {
  const body = h("tbody", { id: "sweeps-body" });
  const note = h("p", { class: "muted", id: "sweeps-note" }, "Loading…");
  view.append(h("h1", {}, "Sweeps"),
    h("p", { class: "muted" }, "A sweep trains many trials of one config over a search space (POST /v1/sweeps, "
      + "or `rayac sweep` on the cluster). Each trial is a job of its own."),
    h("table", { class: "sweeps" }, h("thead", {}, h("tr", {}, ["Sweep", "Status", "Scheduler", "Metric",
      "Trials", "Best", "Age"].map((t, i) => h("th", { class: i >= 4 ? "num" : null }, t)))), body), note);
  let timer = null;
  let stopped = false;
  async function refresh() {
    try {
      const { sweeps } = await apiJSON("/v1/sweeps");
      if (stopped) return;
      body.replaceChildren(...sweeps.map((s) => {
        const best = s.trials.find((t) => t.id === s.best_trial);
        return h("tr", { class: "clickable", dataset: { sweepId: s.id },
          onclick: () => { location.hash = `#/sweeps/${encodeURIComponent(s.id)}`; } },
        h("td", {}, h("a", { href: `#/sweeps/${encodeURIComponent(s.id)}` }, s.name || s.id)),
        h("td", {}, statusBadge(s.status)), h("td", {}, s.scheduler), h("td", {}, `${s.metric} (${s.mode})`),
        h("td", { class: "num" }, `${s.trials.length}/${s.samples}`), h("td", { class: "num" }, fmt(best?.best)),
        h("td", { class: "num" }, age(s.created_at)));
      }));
      note.textContent = sweeps.length ? `Updated ${new Date().toLocaleTimeString()}` : "No sweeps yet.";
    } catch (err) {
      note.textContent = `Could not load sweeps: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(refresh, LIST_REFRESH_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

// Every trial's points on one x axis (the union of their env steps; a trial without a point there is null).
function align(trials, curves) {
  const xs = [...new Set(trials.flatMap((t) => (curves.get(t.id)?.x ?? [])))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = trials.map((t) => {
    const col = new Array(xs.length).fill(null);
    const c = curves.get(t.id);
    c?.x.forEach((x, i) => { col[at.get(x)] = c.y[i]; });
    return col;
  });
  return [xs, ...ys];
}

function chartWidth(host) {
  return Math.max(300, host.clientWidth - 10);
}

// A trial's label in the legend says what the table says: the best one and the early-stopped ones.
function seriesFor(t, i, bestId) {
  const best = t.id === bestId;
  const early = t.status === "stopped_early";
  return { label: `${best ? "★ " : ""}${t.id}${early ? " (stopped early)" : ""}`, stroke: COLORS[i % COLORS.length],
    width: best ? 3.5 : 1.25, dash: early ? [6, 4] : undefined, spanGaps: true, points: { show: true, size: 4 },
    value: legendValue };
}

export function sweepPage(view, sweepId) {
  const title = h("h1", { id: "sweep-title" }, sweepId);
  const badge = h("span", { id: "sweep-status" });
  const stopBtn = h("button", { id: "stop-sweep", class: "danger", disabled: true }, "Stop all trials");
  const summary = h("p", { id: "sweep-summary", class: "muted" });
  const error = h("pre", { id: "sweep-error", class: "error", hidden: true });
  const host = h("div", { class: "chart", id: "sweep-chart" });
  const head = h("thead", {});
  const body = h("tbody", { id: "trials-body" });
  view.append(h("p", {}, h("a", { href: "#/sweeps" }, "← Sweeps")),
    h("div", { class: "row" }, title, badge, stopBtn), summary, error, host,
    h("h2", {}, "Trials"), h("p", { class: "muted" }, "Click a column to sort; a trial's id opens its job page."),
    h("table", { class: "trials" }, head, body));

  const curves = new Map(); // trial id -> { next, x: [], y: [] }
  let sweep = null;
  let plot = null;
  let plotKey = "";
  let sort = null; // { key, dir }: null sorts by the metric's best, best first
  let timer = null;
  let closed = false;
  const state = { sweepId, sweep: null, curves, plot: () => plot }; // for the browser test
  window.rayacSweep = state;

  function columns(s) {
    const keys = Object.keys(s.search);
    return [
      { key: "id", label: "Trial", cell: jobLink, value: (t) => t.id },
      { key: "status", label: "Status", cell: (t) => statusBadge(t.status), value: (t) => t.status },
      ...keys.map((k) => ({ key: `config.${k}`, label: k, num: true, cell: (t) => param(t.config[k]),
        value: (t) => t.config[k] })),
      { key: "env_steps", label: "Env steps", num: true, cell: (t) => fmt(t.env_steps), value: (t) => t.env_steps },
      { key: "best", label: `Best ${s.metric}`, num: true, cell: (t) => fmt(t.best), value: (t) => t.best },
    ];
  }

  function sorted(s, cols) {
    const trials = s.trials.slice();
    const col = sort ? cols.find((c) => c.key === sort.key) : cols.find((c) => c.key === "best");
    const dir = sort ? sort.dir : (s.mode === "min" ? 1 : -1);
    return trials.sort((a, b) => {
      const va = col.value(a), vb = col.value(b);
      if (va === null || va === undefined) return 1; // no value yet: last, whichever way
      if (vb === null || vb === undefined) return -1;
      return (va < vb ? -1 : va > vb ? 1 : 0) * dir;
    });
  }

  function showTable(s) {
    const cols = columns(s);
    head.replaceChildren(h("tr", {}, cols.map((c) => {
      const arrow = sort?.key === c.key ? (sort.dir > 0 ? " ▲" : " ▼") : "";
      return h("th", { class: `sortable${c.num ? " num" : ""}`, dataset: { sort: c.key },
        onclick: () => {
          sort = { key: c.key, dir: sort?.key === c.key ? -sort.dir : (c.num ? -1 : 1) };
          showTable(s);
        } }, c.label + arrow);
    })));
    body.replaceChildren(...sorted(s, cols).map((t) => h("tr", { class: t.id === s.best_trial ? "best" : null,
      dataset: { trial: t.id, status: t.status } }, cols.map((c) => h("td", { class: c.num ? "num" : null },
      c.cell(t))))));
  }

  function showChart(s) {
    const key = `${s.trials.map((t) => `${t.id}:${t.status}`).join(",")}|${s.best_trial}`;
    const data = align(s.trials, curves);
    if (!plot || key !== plotKey) { // new trials, a new best or a trial stopped early: new series styles
      plot?.destroy();
      plotKey = key;
      plot = new uPlot({ width: chartWidth(host), height: 300, title: `${s.metric} per trial`,
        scales: { x: { time: false } }, axes: [{ label: "env steps" }, { size: 64 }],
        series: [{ label: "env steps", value: legendValue }, ...s.trials.map((t, i) => seriesFor(t, i, s.best_trial))] }, data, host);
    } else {
      plot.setData(data);
    }
  }

  async function fetchCurves(s) {
    await Promise.all(s.trials.map(async (t) => {
      const c = curves.get(t.id) ?? { next: 0, x: [], y: [] };
      curves.set(t.id, c);
      try {
        const page = await apiJSON(`/v1/jobs/${encodeURIComponent(t.job_id)}/metrics?since=${c.next}`);
        for (const r of page.records) {
          if (r[s.metric] === undefined || r[s.metric] === null) continue;
          c.x.push(r["time/env_steps"] ?? c.x.length);
          c.y.push(r[s.metric]);
        }
        c.next = page.next;
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw err; // not started yet: no metrics
      }
    }));
  }

  async function refresh() {
    try {
      const s = await apiJSON(`/v1/sweeps/${encodeURIComponent(sweepId)}`);
      if (closed) return;
      sweep = state.sweep = s;
      title.textContent = s.name ? `${s.name} (${s.id})` : s.id;
      badge.replaceChildren(statusBadge(s.status));
      stopBtn.disabled = TERMINAL.has(s.status);
      const search = Object.entries(s.search).map(([k, v]) => `${k} = ${v}`).join(", ");
      summary.textContent = `${s.trials.length}/${s.samples} trials · scheduler ${s.scheduler} · ${s.metric} `
        + `(${s.mode}) · ${search}${s.best_trial ? ` · best: ${s.best_trial}` : ""}`;
      error.hidden = !s.error;
      error.textContent = s.error || "";
      await fetchCurves(s);
      if (closed) return;
      showTable(s);
      showChart(s);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        view.replaceChildren(h("p", { class: "error" }, err.message), h("a", { href: "#/sweeps" }, "Sweeps"));
        closed = true;
        return;
      }
      error.hidden = false;
      error.textContent = `Could not load the sweep: ${err.message}`;
    }
    if (!closed && !(sweep && TERMINAL.has(sweep.status) && sweep.trials.every((t) => t.status !== "running"))) {
      timer = setTimeout(refresh, SWEEP_REFRESH_MS);
    }
  }

  stopBtn.addEventListener("click", async () => {
    if (!confirm(`Stop every trial of ${sweepId}?`)) return;
    stopBtn.disabled = true;
    try {
      await apiJSON(`/v1/sweeps/${encodeURIComponent(sweepId)}/stop`, { method: "POST" });
    } catch (err) {
      error.hidden = false;
      error.textContent = `Stop failed: ${err.message}`;
    }
    clearTimeout(timer);
    refresh();
  });
  const resize = new ResizeObserver(() => plot?.setSize({ width: chartWidth(host), height: 300 }));
  resize.observe(host);
  refresh();
  return () => { closed = true; clearTimeout(timer); resize.disconnect(); plot?.destroy(); };
}
