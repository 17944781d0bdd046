// The one way the page talks to the service: same-origin fetch with the bearer token from sessionStorage.
// The token is never put in a URL; a 401 asks for it (once, however many calls failed) and retries.

const TOKEN_KEY = "rayac.token";
let asking = null;

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function askToken(message) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-error").textContent = message || "";
  dialog.hidden = false;
  input.value = "";
  input.focus();
  asking = new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      dialog.hidden = true;
      document.getElementById("forget-token").hidden = false;
      asking = null;
      resolve();
    };
  });
  return asking;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  for (;;) {
    const h = { ...headers };
    const token = getToken();
    if (token) h.Authorization = `Bearer ${token}`;
    if (body !== undefined) h["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers: h, signal, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status !== 401) return resp;
    forgetToken();
    await askToken(token ? "That token was refused; try again." : "");
  }
}

export async function apiJSON(path, opts) {
  const resp = await api(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Server-Sent Events over fetch (EventSource cannot send an Authorization header). Reconnects after a drop
// with Last-Event-ID = the last record seen, so the server resumes right after it: no gaps, no repeats.
export class MetricStream {
  constructor(jobId, { onRecord, onStatus, onState }) {
    Object.assign(this, { jobId, onRecord, onStatus, onState });
    this.lastId = -1;
    this.reconnects = 0;
    this.gaps = 0; // records skipped between two received ids: must stay 0
    this.closed = false;
    this.conn = null;
  }

  close() {
    this.closed = true;
    this.conn?.abort();
  }

  // Ends the current connection only, as a network drop would (the test uses it to check resuming).
  drop() {
    this.conn?.abort();
  }

  async run() {
    let backoff = 500;
    while (!this.closed) {
      this.conn = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        if (this.lastId >= 0) headers["Last-Event-ID"] = String(this.lastId);
        const resp = await api(`/v1/jobs/${encodeURIComponent(this.jobId)}/metrics/stream`,
          { headers, signal: this.conn.signal });
        if (resp.status === 404) {
          this.onState("gone");
          return;
        }
        if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
        this.onState("live");
        backoff = 500;
        if (await this.read(resp.body)) return; // the final status arrived
      } catch (err) {
        if (this.closed) return;
      }
      if (this.closed) return;
      this.reconnects += 1;
      this.onState("reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  // Parses the event stream (lines end in \r\n, \n or \r; a blank line ends an event). True at "status".
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buf += value;
      for (;;) {
        const m = /\r\n|\n|\r/.exec(buf);
        if (!m) break;
        if (m[0] === "\r" && m.index === buf.length - 1) break; // maybe the first half of \r\n
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === "") {
          if (event.data.length && this.dispatch(event)) {
            reader.cancel().catch(() => {});
            return true;
          }
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: keep-alive ping
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event.type = val;
        else if (field === "data") event.data.push(val);
        else if (field === "id") event.id = val;
      }
    }
  }

  dispatch(event) {
    const data = event.data.join("\n");
    if (event.type === "status") {
      this.onStatus(JSON.parse(data));
      return true;
    }
    if (event.type === "metrics" && event.id !== null) {
      const id = Number(event.id);
      if (id <= this.lastId) return false; // already shown (never expected: the server resumes after lastId)
      this.gaps += id - this.lastId - 1;
      this.lastId = id;
      this.onRecord(id, JSON.parse(data));
    }
    return false;
  }
}
