// Submit: a form generated from the config's JSON schema (GET /v1/config/schema), filled from a preset
// (GET /v1/presets), checked by the service (POST /v1/jobs/validate; each error shown next to its field),
// then submitted. The service is the only validator: the form sends what was typed.

import { ApiError, apiJSON } from "./api.js";
import { h } from "./dom.js";

const VALIDATE_DELAY_MS = 400;
const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function resolve(schema, node) {
  return node.$ref ? schema.$defs[node.$ref.split("/").pop()] : node;
}

// What kind of input a leaf field gets: {kind: enum|choice|bool|number|text|json, nullable, options}.
function kindOf(prop) {
  const alts = prop.anyOf || [prop];
  const nullable = alts.some((a) => a.type === "null");
  const main = alts.filter((a) => a.type !== "null");
  const first = main[0] || {};
  if (main.length === 1 && first.enum) return { kind: "enum", nullable, options: first.enum };
  if (main.length === 1 && first.type === "boolean") return { kind: "bool", nullable };
  // a few values of mixed types (env.atari: true, false or "auto"): a dropdown whose options keep their type
  if (main.length > 1 && main.every((a) => a.type === "boolean" || a.enum || a.const !== undefined)) {
    const options = main.flatMap((a) => (a.type === "boolean" ? [true, false] : a.enum || [a.const]));
    return { kind: "choice", nullable, options: nullable ? [null, ...options] : options };
  }
  if (main.every((a) => ["integer", "number"].includes(a.type) || a.const !== undefined)) {
    return { kind: "number", nullable };
  }
  if (main.length === 1 && first.type === "string") return { kind: "text", nullable };
  return { kind: "json", nullable };
}

function buildFields(schema, node, path, fields) {
  const section = resolve(schema, node);
  const children = [];
  for (const [name, prop] of Object.entries(section.properties)) {
    const fieldPath = [...path, name];
    const dotted = fieldPath.join(".");
    const target = resolve(schema, prop);
    if (target.properties) {
      children.push(h("fieldset", { dataset: { section: dotted } },
        h("legend", { title: prop.description || "" }, name),
        h("span", { class: "field-error", dataset: { errorFor: dotted } }),
        buildFields(schema, prop, fieldPath, fields)));
      continue;
    }
    const kind = kindOf(prop);
    let input;
    if (kind.kind === "enum") {
      input = h("select", {}, [...(kind.nullable ? [""] : []), ...kind.options]
        .map((o) => h("option", { value: o }, o === "" ? "(none)" : o)));
    } else if (kind.kind === "choice") {
      input = h("select", {}, kind.options.map((o) => h("option", { value: JSON.stringify(o) },
        o === null ? "(none)" : String(o))));
    } else if (kind.kind === "bool") {
      input = h("input", { type: "checkbox" });
    } else {
      input = h("input", { type: "text", spellcheck: "false",
        placeholder: kind.nullable ? "(none)" : kind.kind === "json" ? "JSON" : "" });
    }
    input.name = dotted;
    input.id = `f-${dotted}`;
    fields.push({ path: fieldPath, dotted, kind, input });
    children.push(h("div", { class: "field", dataset: { field: dotted } },
      h("label", { for: input.id }, name), input,
      h("span", { class: "field-error", dataset: { errorFor: dotted } }),
      h("small", { class: "hint" }, prop.description || "")));
  }
  return children;
}

function setValue(field, value) {
  const { kind, input } = field;
  if (kind.kind === "bool") input.checked = Boolean(value);
  else if (kind.kind === "enum") input.value = value ?? "";
  else if (kind.kind === "choice") input.value = JSON.stringify(value ?? null);
  else if (kind.kind === "json") input.value = value === null || value === undefined ? "" : JSON.stringify(value);
  else input.value = value === null || value === undefined ? "" : String(value);
}

function getValue(field) {
  const { kind, input } = field;
  if (kind.kind === "bool") return input.checked;
  if (kind.kind === "choice") return JSON.parse(input.value);
  const raw = input.value.trim();
  if (raw === "" && kind.nullable) return null;
  if (kind.kind === "number") return NUMBER.test(raw) ? Number(raw) : raw; // "auto", or a mistake to report
  if (kind.kind === "json") {
    try {
      return JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  return input.value;
}

function lookup(obj, path) {
  return path.reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
}

export function submitPage(view) {
  const presetSel = h("select", { id: "preset" });
  const nameInput = h("input", { id: "job-name", type: "text", placeholder: "a name for people" });
  const form = h("form", { id: "submit-form", novalidate: true });
  const summary = h("p", { id: "form-status", class: "muted" });
  const validateBtn = h("button", { type: "button", id: "validate" }, "Validate");
  const submitBtn = h("button", { type: "submit", id: "submit-job", class: "primary" }, "Submit job");
  view.append(h("h1", {}, "Submit a job"),
    h("div", { class: "row" }, h("label", { for: "preset" }, "Start from preset"), presetSel,
      h("label", { for: "job-name" }, "Name"), nameInput),
    form, h("div", { class: "row sticky" }, validateBtn, submitBtn, summary));

  let fields = [];
  let presets = [];
  let timer = null;
  let seq = 0;

  function body() {
    const config = {};
    for (const f of fields) {
      let node = config;
      for (const k of f.path.slice(0, -1)) node = node[k] ??= {};
      node[f.path.at(-1)] = getValue(f);
    }
    return { name: nameInput.value.trim() || null, config };
  }

  function showErrors(errors) {
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
    const general = [];
    for (const e of errors) {
      // "config.algo.gamma" → the input algo.gamma, or the nearest section that has an error slot
      const parts = e.field.replace(/^config\.?/, "").split(".").filter(Boolean);
      let slot = null;
      for (let n = parts.length; n > 0 && !slot; n--) {
        slot = form.querySelector(`[data-error-for="${CSS.escape(parts.slice(0, n).join("."))}"]`);
      }
      if (!slot) {
        general.push(`${e.field}: ${e.msg}`);
        continue;
      }
      slot.textContent = slot.textContent ? `${slot.textContent}; ${e.msg}` : e.msg;
      slot.parentElement.classList.add("invalid");
    }
    return general;
  }

  async function validate() {
    const mine = ++seq;
    try {
      await apiJSON("/v1/jobs/validate", { method: "POST", body: body() });
      if (mine !== seq) return false;
      showErrors([]);
      summary.textContent = "Valid.";
      summary.className = "ok";
      return true;
    } catch (err) {
      if (mine !== seq) return false;
      const errors = err instanceof ApiError ? err.body?.errors || [{ field: "", msg: err.message }] : [];
      const general = showErrors(errors);
      summary.textContent = general.length ? general.join("; ") : `${errors.length} problem(s): see the fields marked.`;
      summary.className = "error";
      return false;
    }
  }

  function validateSoon() {
    clearTimeout(timer);
    timer = setTimeout(validate, VALIDATE_DELAY_MS);
  }

  function fill(name) {
    const preset = presets.find((p) => p.name === name);
    for (const f of fields) setValue(f, lookup(preset.config, f.path));
    nameInput.value = name;
    validateSoon();
  }

  form.addEventListener("input", validateSoon);
  form.addEventListener("change", validateSoon);
  validateBtn.addEventListener("click", () => { clearTimeout(timer); validate(); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearTimeout(timer);
    submitBtn.disabled = true;
    try {
      if (!(await validate())) return;
      const job = await apiJSON("/v1/jobs", { method: "POST", body: body() });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      summary.textContent = `Submit failed: ${err.message}`;
      summary.className = "error";
    } finally {
      submitBtn.disabled = false;
    }
  });
  submitBtn.setAttribute("form", "submit-form");

  (async () => {
    try {
      const [schema, list] = await Promise.all([apiJSON("/v1/config/schema"), apiJSON("/v1/presets")]);
      presets = list.presets;
      presetSel.replaceChildren(...presets.map((p) => h("option", { value: p.name, title: p.summary },
        `${p.name} — ${p.summary}`)));
      form.replaceChildren(...buildFields(schema, schema, [], fields));
      presetSel.addEventListener("change", () => fill(presetSel.value));
      const first = presets.find((p) => p.name === "a2c_cartpole") || presets[0];
      presetSel.value = first.name;
      fill(first.name);
    } catch (err) {
      form.replaceChildren(h("p", { class: "error" }, `Could not load the config schema: ${err.message}`));
    }
  })();
  return () => clearTimeout(timer);
}
