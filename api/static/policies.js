// Policies: the list; "try it" (an observation in, the action, V(s) and action probabilities out) and
// "watch an episode" (a GIF the service renders; fetched with the token, shown from a blob URL).

import { ApiError, api, apiJSON } from "./api.js";
import { fmt, h } from "./dom.js";

function zeros(shape) {
  return shape.length ? Array.from({ length: shape[0] }, () => zeros(shape.slice(1))) : 0;
}

function describeAction(space) {
  return space.kind === "discrete" ? `Discrete(${space.n})` : `Box(${space.shape.join("×")})`;
}

function tryPanel(policy) {
  const discrete = policy.action_space.kind === "discrete";
  const obs = h("textarea", { class: "obs", rows: 3, spellcheck: "false" },
    JSON.stringify(zeros(policy.observation_shape)));
  const greedy = h("input", { type: "checkbox", checked: true });
  const out = h("div", { class: "act-result" });
  const actBtn = h("button", { class: "act", type: "button" }, "Act");
  actBtn.addEventListener("click", async () => {
    out.replaceChildren(h("span", { class: "muted" }, "…"));
    let observation;
    try {
      observation = JSON.parse(obs.value);
    } catch {
      out.replaceChildren(h("span", { class: "error" }, "The observation is not valid JSON."));
      return;
    }
    try {
      const r = await apiJSON(`/v1/policies/${encodeURIComponent(policy.id)}/act`, { method: "POST",
        body: { observations: [observation], deterministic: greedy.checked, return_values: true,
          return_probs: discrete } });
      const rows = [h("div", {}, "action: ", h("b", { class: "action" }, JSON.stringify(r.actions[0]))),
        h("div", {}, "value V(s): ", h("b", { class: "value" }, fmt(r.values[0], 3)))];
      if (r.probs) {
        rows.push(h("div", { class: "probs" }, r.probs[0].map((p, i) => h("div", { class: "prob" },
          h("span", {}, `${i}`), h("meter", { min: 0, max: 1, value: p }), h("span", {}, p.toFixed(3))))));
      }
      out.replaceChildren(...rows);
    } catch (err) {
      out.replaceChildren(h("span", { class: "error" }, err.message));
    }
  });

  const seed = h("input", { type: "number", min: 0, value: 0, class: "seed" });
  const gif = h("div", { class: "gif" });
  const watchBtn = h("button", { class: "watch", type: "button" }, "Watch an episode");
  watchBtn.addEventListener("click", async () => {
    watchBtn.disabled = true;
    gif.replaceChildren(h("span", { class: "muted" }, "Rendering…"));
    try {
      const q = new URLSearchParams({ seed: seed.value || "0" });
      const resp = await api(`/v1/policies/${encodeURIComponent(policy.id)}/episode.gif?${q}`);
      if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
      const url = URL.createObjectURL(await resp.blob());
      const img = h("img", { src: url, alt: `episode of ${policy.id}` });
      img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
      gif.replaceChildren(img, h("div", { class: "muted" },
        `return ${resp.headers.get("X-Episode-Return")}, ${resp.headers.get("X-Episode-Length")} steps, ` +
        `${resp.headers.get("X-Checkpoint")}, seed ${q.get("seed")}`));
    } catch (err) {
      gif.replaceChildren(h("span", { class: "error" }, err.message));
    } finally {
      watchBtn.disabled = false;
    }
  });

  return h("div", { class: "try" },
    h("label", {}, `Observation, shape [${policy.observation_shape.join(", ")}]`), obs,
    h("div", { class: "row" }, actBtn, h("label", {}, greedy, " greedy")), out,
    h("div", { class: "row" }, watchBtn, h("label", {}, "seed ", seed)), gif);
}

export function policiesPage(view) {
  const list = h("div", { id: "policies" }, h("p", { class: "muted" }, "Loading…"));
  view.append(h("h1", {}, "Policies"), list);
  (async () => {
    try {
      const { policies } = await apiJSON("/v1/policies");
      if (!policies.length) {
        list.replaceChildren(h("p", { class: "muted" }, "No trained policies yet: a job shows here once it "
          + "writes a checkpoint."));
        return;
      }
      list.replaceChildren(...policies.map((p) => {
        const panel = h("div", { class: "try-host" });
        const tryBtn = h("button", { class: "try-it", type: "button" }, "Try it");
        tryBtn.addEventListener("click", () => {
          panel.replaceChildren(panel.childElementCount ? "" : tryPanel(p));
        });
        return h("div", { class: "card policy", dataset: { policyId: p.id } },
          h("div", { class: "row" }, h("b", { class: "policy-name" }, p.job_name || p.id),
            p.job_name ? h("span", { class: "muted policy-id" }, p.id) : null, h("span", {}, p.env_id),
            h("span", { class: "muted" }, `${p.checkpoint} · ${fmt(p.env_steps)} env steps · eval return `
              + `${fmt(p.eval_return)} · obs [${p.observation_shape.join(", ")}] · ${describeAction(p.action_space)}`),
            h("a", { href: `#/jobs/${encodeURIComponent(p.job_id)}` }, "job"), tryBtn),
          panel);
      }));
    } catch (err) {
      list.replaceChildren(h("p", { class: "error" }, `Could not load policies: ${err.message}`));
    }
  })();
  return () => {};
}
