// Deployments: deploy a job's checkpoint under a name (from the job's page), see every deployment's versions,
// roll back, delete, download the ONNX / TorchScript export. Only the public /v1/deployments API.

import { ApiError, api, apiJSON } from "./api.js";
import { age, fmt, h } from "./dom.js";

// The deploy form under a job's checkpoint table; update(checkpoints) refreshes its choices.
export function deployForm(jobId) {
  const name = h("input", { id: "deploy-name", type: "text", placeholder: "deployment name", size: 18 });
  const choice = h("select", { id: "deploy-checkpoint" });
  const replace = h("input", { id: "deploy-replace", type: "checkbox" });
  const result = h("span", { id: "deploy-result" });
  const button = h("button", { id: "deploy-btn", type: "button", class: "primary" }, "Deploy");
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.replaceChildren(h("span", { class: "muted" }, "…"));
    const value = choice.value;
    try {
      const d = await apiJSON("/v1/deployments", { method: "POST", body: { name: name.value.trim(),
        policy: jobId, checkpoint: /^\d+$/.test(value) ? Number(value) : value, replace: replace.checked } });
      result.replaceChildren(h("span", { class: "ok" }, `${d.name} v${d.version}: ${d.checkpoint} `),
        h("a", { href: "#/deployments" }, "deployments"));
    } catch (err) {
      const hint = err.status === 409 ? " (tick 'new version' to re-point it)" : "";
      result.replaceChildren(h("span", { class: "error" }, err.message + hint));
    } finally {
      button.disabled = false;
    }
  });
  const el = h("div", { class: "row deploy" }, name, choice,
    h("label", {}, replace, " new version"), button, result);
  function update(checkpoints) {
    const keep = choice.value;
    const options = [["latest", "latest"], ["best", "best (evaluation)"],
      ...checkpoints.map((c) => [String(c.env_steps), `${c.name} (${fmt(c.eval_return)})`])];
    choice.replaceChildren(...options.map(([v, label]) => h("option", { value: v }, label)));
    if (options.some(([v]) => v === keep)) choice.value = keep;
  }
  return { el, update, select: (steps) => { choice.value = String(steps); name.focus(); } };
}

async function download(name, format) {
  const resp = await api(`/v1/deployments/${encodeURIComponent(name)}/export?format=${format}`);
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
  const url = URL.createObjectURL(await resp.blob());
  const a = h("a", { href: url, download: `${name}.${format === "onnx" ? "onnx" : "pt"}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function card(d, reload, problem) {
  const path = `/v1/deployments/${encodeURIComponent(d.name)}`;
  const older = d.history.some((v) => v.version < d.version);
  const act = (label, cls, fn, disabled = false) => {
    const b = h("button", { type: "button", class: cls, disabled }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await fn();
        await reload();
      } catch (err) {
        problem.textContent = `${d.name}: ${err.message}`;
        b.disabled = false;
      }
    });
    return b;
  };
  const rows = d.history.slice().reverse().map((v) => h("tr", { class: v.active ? "active" : null,
    dataset: { version: v.version } },
  h("td", {}, `v${v.version}${v.active ? " (serving)" : ""}`),
  h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(v.job_id)}` }, v.job_id)), h("td", {}, v.checkpoint),
  h("td", {}, v.requested), h("td", { class: "num" }, fmt(v.env_steps)), h("td", { class: "num" }, fmt(v.eval_return)),
  h("td", { class: "num" }, age(v.created_at)),
  h("td", {}, v.active ? "" : act("Serve this", "serve-version",
    () => apiJSON(`${path}/rollback`, { method: "POST", body: { version: v.version } })))));
  return h("div", { class: "card deployment", dataset: { name: d.name } },
    h("div", { class: "row" }, h("b", {}, d.name), h("span", { class: "version" }, `v${d.version}`),
      h("span", { class: "muted" }, `${d.env_id} · ${d.checkpoint} · eval return ${fmt(d.eval_return)}`),
      act("Roll back", "rollback", () => apiJSON(`${path}/rollback`, { method: "POST" }), !older),
      act("ONNX", "export", () => download(d.name, "onnx")),
      act("TorchScript", "export", () => download(d.name, "torchscript")),
      act("Delete", "danger", async () => {
        if (window.confirm(`Delete ${d.name} and all its versions?`)) await api(path, { method: "DELETE" });
      })),
    h("table", {}, h("thead", {}, h("tr", {}, ["Version", "Job", "Checkpoint", "Asked for", "Env steps",
      "Eval return", "Age", ""].map((t, i) => h("th", { class: i >= 4 && i <= 6 ? "num" : null }, t)))),
    h("tbody", {}, rows)));
}

export function deploymentsPage(view) {
  const list = h("div", { id: "deployments" }, h("p", { class: "muted" }, "Loading…"));
  const problem = h("p", { class: "error", id: "deployments-error" });
  view.append(h("h1", {}, "Deployments"), h("p", { class: "muted" }, "A deployment serves one pinned "
    + "checkpoint at POST /v1/deployments/{name}/act, whatever its job writes later. Deploy from a job's page."),
  problem, list);
  async function reload() {
    try {
      const { deployments } = await apiJSON("/v1/deployments");
      list.replaceChildren(...(deployments.length ? deployments.map((d) => card(d, reload, problem))
        : [h("p", { class: "muted" }, "No deployments yet.")]));
    } catch (err) {
      problem.textContent = `Could not load deployments: ${err.message}`;
    }
  }
  reload();
  return () => {};
}
