// Jobs: the list (refreshes itself) and one job's page (live curves over SSE, config, log tail,
// checkpoints, stop).

import { ApiError, MetricStream, api, apiJSON } from "./api.js";
import { TERMINAL, age, fmt, h, statusBadge } from "./dom.js";
import { deployForm } from "./deployments.js";

const LIST_REFRESH_MS = 2000;
const JOB_REFRESH_MS = 3000;
const LOG_LINES = 60;

export function jobsPage(view) {
  const body = h("tbody", { id: "jobs-body" });
  const more = h("button", { id: "jobs-more", hidden: true }, "Older jobs");
  const note = h("p", { class: "muted", id: "jobs-note" }, "Loading…");
  view.append(
    h("div", { class: "row" }, h("h1", {}, "Jobs"), h("a", { class: "button", href: "#/submit" }, "New job")),
    h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, ["Name", "Status", "Algo", "Env", "Env steps", "Episode return",
        "Eval return", "Age"].map((t, i) => h("th", { class: i >= 4 ? "num" : null }, t)))),
      body),
    more, note);
  let pages = 1; // how many pages the user asked for: refreshes keep showing them all
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const jobs = [];
      let cursor = null;
      for (let i = 0; i < pages; i++) {
        const q = new URLSearchParams({ limit: "50" });
        if (cursor) q.set("cursor", cursor);
        const page = await apiJSON(`/v1/jobs?${q}`);
        jobs.push(...page.jobs);
        cursor = page.next_cursor;
        if (!cursor) break;
      }
      if (stopped) return;
      body.replaceChildren(...jobs.map((j) => h("tr", { dataset: { jobId: j.id }, class: "clickable",
        onclick: () => { location.hash = `#/jobs/${encodeURIComponent(j.id)}`; } },
      h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.name || j.id)),
      h("td", {}, statusBadge(j.status)), h("td", {}, j.algo), h("td", {}, j.env_id),
      h("td", { class: "num" }, fmt(j.env_steps)), h("td", { class: "num" }, fmt(j.episode_return)),
      h("td", { class: "num" }, fmt(j.eval_return)), h("td", { class: "num" }, age(j.created_at)))));
      more.hidden = !cursor;
      note.textContent = jobs.length ? `Updated ${new Date().toLocaleTimeString()}` : "No jobs yet.";
    } catch (err) {
      note.textContent = `Could not load jobs: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(refresh, LIST_REFRESH_MS);
  }
  more.addEventListener("click", () => { pages += 1; clearTimeout(timer); refresh(); });
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

// Each chart: a title and the record keys it plots against time/env_steps. fromZero: returns are drawn from 0
// (when none is negative), so a drop from 500 to 427 looks like the 15 % it is, not a crash; right: keys on
// their own axis at the right (the value loss is often 100x the policy loss and the entropy).
const CHARTS = [
  { id: "episode", title: "Episode return (training)", keys: ["rollout/episode_return_mean"], fromZero: true },
  { id: "eval", title: "Eval return (greedy)", keys: ["eval/return_mean"], fromZero: true },
  { id: "losses", title: "Losses (value loss: right axis)",
    keys: ["train/policy_loss", "train/value_loss", "train/entropy"], right: ["train/value_loss"] },
  { id: "sps", title: "Env steps / s", keys: ["time/sps"], fromZero: true },
];
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];

function chartWidth(host) {
  return Math.max(300, host.clientWidth - 10);
}

// A legend number: thousands separated when large, three significant digits otherwise.
function legendNumber(v) {
  return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en") : Number(v.toPrecision(3)).toString();
}

// The legend shows the newest value without hovering (idx null), and under the cursor the newest value at or
// before it (evaluations are sparse: most records have none).
function legendValue(u, _raw, si, idx) {
  const d = u.data[si];
  let i = idx ?? d.length - 1;
  while (i >= 0 && (d[i] === null || d[i] === undefined)) i--;
  return i < 0 ? "–" : legendNumber(d[i]);
}

function fromZero(_u, min, max) {
  if (min === null || max === null) return [0, 1];
  return min >= 0 ? [0, max > 0 ? max * 1.05 : 1] : uPlot.rangeNum(min, max, 0.1, true);
}

function makeChart(spec, host) {
  const right = spec.right || [];
  const opts = {
    width: chartWidth(host), height: 220, title: spec.title,
    scales: { x: { time: false }, y: spec.fromZero ? { range: fromZero } : {}, ...(right.length ? { right: {} } : {}) },
    axes: [{ label: "env steps" }, { size: 64 },
      ...(right.length ? [{ scale: "right", side: 1, size: 64, grid: { show: false }, stroke: COLORS[1] }] : [])],
    series: [{ label: "env steps", value: legendValue }, ...spec.keys.map((k, i) => ({
      label: k.split("/")[1], stroke: COLORS[i], width: 1.5, spanGaps: true, value: legendValue,
      scale: right.includes(k) ? "right" : "y", points: { show: spec.id === "eval" },
    }))],
  };
  return new uPlot(opts, [[], ...spec.keys.map(() => [])], host);
}

export function jobPage(view, jobId) {
  const title = h("h1", {}, jobId);
  const badge = h("span", { id: "job-status" });
  const stopBtn = h("button", { id: "stop-job", class: "danger", disabled: true }, "Stop");
  const resumeBtn = h("button", { id: "resume-job", hidden: true }, "Resume");
  const deleteBtn = h("button", { id: "delete-job", class: "danger", hidden: true }, "Delete");
  const streamState = h("span", { id: "stream-state", class: "muted" });
  const points = h("span", { id: "points", class: "muted" }, "0 records");
  const charts = h("div", { class: "charts" });
  const config = h("pre", { id: "job-config", class: "scroll" });
  const logs = h("pre", { id: "job-logs", class: "scroll" });
  const ckpts = h("tbody", { id: "job-checkpoints" });
  const deploy = deployForm(jobId);
  const error = h("pre", { id: "job-error", class: "error", hidden: true });
  view.append(
    h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    h("div", { class: "row" }, title, badge, stopBtn, resumeBtn, deleteBtn, streamState, points),
    error, charts,
    h("div", { class: "cols" },
      h("section", {}, h("h2", {}, "Checkpoints"), h("table", {}, h("thead", {}, h("tr", {},
        ["Checkpoint", "Env steps", "Version", "Eval return", ""].map((t, i) => h("th", { class: i ? "num" : null }, t)))),
      ckpts), h("h2", {}, "Deploy"), deploy.el),
      h("section", {}, h("h2", {}, "Config"), config)),
    h("section", {}, h("h2", {}, "Log tail"), logs));

  const data = { jobId, x: [], series: CHARTS.map((c) => c.keys.map(() => [])), ids: [] };
  // all hosts first, so the grid has its final columns when each chart measures its width
  const hosts = CHARTS.map((spec) => charts.appendChild(h("div", { class: "chart", id: `chart-${spec.id}` })));
  const plots = CHARTS.map((spec, i) => makeChart(spec, hosts[i]));
  const resize = new ResizeObserver(() => plots.forEach((p, i) => p.setSize({ width: chartWidth(hosts[i]),
    height: 220 })));
  resize.observe(charts);
  let drawPending = false;
  function draw() {
    drawPending = false;
    plots.forEach((plot, i) => {
      plot.setData([data.x, ...data.series[i]]);
      plot.setLegend({ idx: plot.cursor.idx ?? null }); // the newest values, unless the cursor points elsewhere
    });
    points.textContent = `${data.x.length} records`;
  }
  function onRecord(id, record) {
    data.ids.push(id);
    data.x.push(record["time/env_steps"] ?? id);
    CHARTS.forEach((spec, i) => spec.keys.forEach((k, j) => data.series[i][j].push(record[k] ?? null)));
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(draw);
    }
  }

  let status = null;
  let timer = null;
  let closed = false;
  function showJob(job) {
    status = job.status;
    title.textContent = job.name ? `${job.name} (${job.id})` : job.id;
    badge.replaceChildren(statusBadge(job.status));
    stopBtn.disabled = TERMINAL.has(job.status);
    resumeBtn.hidden = deleteBtn.hidden = !TERMINAL.has(job.status);
    resumeBtn.disabled = !job.checkpoints.length;
    config.textContent = JSON.stringify(job.config, null, 2);
    error.hidden = !job.error;
    error.textContent = job.error || "";
    ckpts.replaceChildren(...job.checkpoints.map((c) => h("tr", {}, h("td", {}, c.name),
      h("td", { class: "num" }, fmt(c.env_steps)), h("td", { class: "num" }, fmt(c.version)),
      h("td", { class: "num" }, fmt(c.eval_return)),
      h("td", {}, h("button", { type: "button", class: "deploy-row", onclick: () => deploy.select(c.env_steps) },
        "Deploy…")))));
    deploy.update(job.checkpoints);
  }
  let logSize = null, logText = "";
  async function refresh() {
    try {
      showJob(await apiJSON(`/v1/jobs/${encodeURIComponent(jobId)}`));
      // only the bytes written since the last answer (X-Log-Size); the first answer is the log's tail
      const since = logSize === null ? "" : `?offset=${logSize}`;
      const resp = await api(`/v1/jobs/${encodeURIComponent(jobId)}/logs${since}`);
      if (resp.ok) {
        const size = Number(resp.headers.get("X-Log-Size"));
        const text = await resp.text();
        logSize = size < (logSize ?? 0) ? null : Number(resp.headers.get("X-Log-Start")) + new Blob([text]).size;
        logText = (logSize === null ? "" : logText) + text;
        logText = logText.split("\n").slice(-LOG_LINES - 1).join("\n");
        logs.textContent = logText.trimEnd();
      }
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        view.replaceChildren(h("p", { class: "error" }, err.message), h("a", { href: "#/jobs" }, "Jobs"));
        closed = true;
        return;
      }
    }
    if (!closed && !TERMINAL.has(status)) timer = setTimeout(refresh, JOB_REFRESH_MS);
  }

  const stream = new MetricStream(jobId, {
    onRecord,
    onStatus: () => { streamState.textContent = "finished"; clearTimeout(timer); refresh(); },
    onState: (s) => { streamState.textContent = s; streamState.dataset.state = s; },
  });
  window.rayacStream = stream; // for the browser test: drop() a connection, then read ids/gaps
  window.rayacData = data;
  window.rayacPlots = plots; // for the browser test: axis ranges

  // a finished job: continue it from its latest checkpoint as a new job (its page opens), or delete it
  resumeBtn.addEventListener("click", async () => {
    const steps = prompt("Train until how many env steps in all? (empty: the job's own total)", "");
    if (steps === null) return;
    try {
      const body = steps.trim() ? { total_env_steps: Number(steps) } : {};
      const job = await apiJSON(`/v1/jobs/${encodeURIComponent(jobId)}/resume`, { method: "POST", body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      error.hidden = false;
      error.textContent = `Resume failed: ${err.message}`;
    }
  });
  deleteBtn.addEventListener("click", async () => {
    if (!confirm(`Delete ${jobId} with its run directory?`)) return;
    const resp = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
    if (resp.ok) { location.hash = "#/jobs"; return; }
    error.hidden = false;
    error.textContent = `Delete failed: ${(await resp.json().catch(() => ({}))).detail || resp.status}`;
  });
  stopBtn.addEventListener("click", async () => {
    stopBtn.disabled = true;
    stopBtn.textContent = "Stopping…";
    try {
      showJob(await apiJSON(`/v1/jobs/${encodeURIComponent(jobId)}/stop`, { method: "POST" }));
    } catch (err) {
      error.hidden = false;
      error.textContent = `Stop failed: ${err.message}`;
    }
    stopBtn.textContent = "Stop";
    clearTimeout(timer);
    refresh();
  });
  refresh();
  stream.run();
  return () => { closed = true; clearTimeout(timer); stream.close(); resize.disconnect();
    plots.forEach((p) => p.destroy()); };
}
