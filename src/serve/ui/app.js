// cutover dashboard: polls the /rollouts API every second and draws what it answers.
// Everything from the API is put on the page with textContent (never parsed as HTML).
"use strict";

const KEY = "cutover-api-key";
const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const ACTIVE = ["running", "paused"];

const $ = (id) => document.getElementById(id);
let definition = null; // {id, states}
let pending = false;

function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

// One call to the API: {status, body} (body: the parsed JSON, or {error: text}).
async function api(path, init) {
  const options = init || {};
  const headers = Object.assign({}, options.headers);
  if (apiKey()) headers["x-api-key"] = apiKey();
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers, credentials: "omit", cache: "no-store" }));
  } catch (e) {
    return { status: 0, body: { error: "the daemon cannot be reached (" + e.message + ")" } };
  }
  let body;
  try {
    body = await response.json();
  } catch (e) {
    body = { error: "HTTP " + response.status };
  }
  return { status: response.status, body };
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function ms(at) {
  const t = Date.parse(at);
  return Number.isNaN(t) ? null : t;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function weightsText(w) {
  return w ? "blue " + w.blue + "% / green " + w.green + "%" : "—";
}

// The step a person cares about: the wait it is in rather than the control loop's state.
function stepOf(r) {
  return (ACTIVE.includes(r.phase) && r.window ? r.window.name : r.step) || "—";
}

function phaseBadge(node, phase) {
  node.textContent = phase;
  node.className = "phase phase-" + phase;
}

function selected() {
  const m = location.hash.match(/^#\/rollout\/(.+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function notice(text) {
  $("notice").textContent = text || "";
}

function refused(status, body) {
  if (status === 401) {
    return "Refused: the daemon needs credentials — enter the API key above. (" + (body.error || "401") + ")";
  }
  return "HTTP " + status + ": " + (body.error || "error");
}

// ---- the list ----

// The rows are kept and updated in place (not rebuilt each second), so a link that has the
// keyboard's focus keeps it.
const rowsById = new Map();

function row(id) {
  let tr = rowsById.get(id);
  if (!tr) {
    tr = el("tr");
    tr.dataset.id = id;
    const name = el("td");
    const link = el("a");
    link.href = "#/rollout/" + encodeURIComponent(id);
    link.title = id;
    name.append(link);
    const phase = el("td");
    phase.append(el("span"));
    tr.append(name, phase, el("td"), el("td"), el("td"));
    rowsById.set(id, tr);
  }
  return tr;
}

function renderList(rollouts) {
  const id = selected();
  const sorted = rollouts.slice().sort((a, b) => {
    const act = Number(ACTIVE.includes(b.phase)) - Number(ACTIVE.includes(a.phase));
    return act !== 0 ? act : String(b.started).localeCompare(String(a.started));
  });
  const rows = sorted.map((r) => {
    const tr = row(r.id);
    tr.className = r.id === id ? "selected" : "";
    const cells = tr.children;
    cells[0].firstChild.textContent = r.deployment || r.id;
    phaseBadge(cells[1].firstChild, r.phase);
    cells[2].textContent = stepOf(r);
    cells[3].textContent = weightsText(r.weights);
    const started = ms(r.started);
    const end = r.ended ? ms(r.ended) : Date.now();
    cells[4].textContent = started ? duration((end - started) / 1000) : "—";
    return tr;
  });
  const body = $("rollouts");
  const same = rows.length === body.children.length && rows.every((tr, i) => body.children[i] === tr);
  if (!same) body.replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
}

// ---- one rollout ----

// The canary's main path (its shifts, bakes and checks in order, then the success) and the
// way out (the rollback and the failure it ends in), from the definition.
function paths(states) {
  const names = Object.keys(states || {});
  const main = names.filter((n) => /^(Shift|Bake|Check)\d+$/.test(n));
  if (names.includes("Promoted")) main.push("Promoted");
  return { main, out: names.includes("Rollback") ? ["Rollback"] : [] };
}

function renderGraph(rollout, history) {
  const { main, out } = paths(definition && definition.states);
  const seen = new Set();
  for (const line of history) {
    if (line.kind === "state" && line.detail && line.detail.state) seen.add(line.detail.state);
  }
  if (rollout.window) seen.add(rollout.window.name);
  const active = ACTIVE.includes(rollout.phase);
  let current = null;
  if (active) {
    current = rollout.window ? rollout.window.name : rollout.step;
    if (!main.includes(current)) current = main.filter((n) => seen.has(n)).pop() || null;
  }
  const failedEnd = ["rolled-back", "aborted", "failed"].includes(rollout.phase);
  const lastMain = main.filter((n) => seen.has(n)).pop();
  const nodes = [];
  const box = (name, status, extra) => {
    const li = el("li", null, [status, extra].filter(Boolean).join(" "));
    li.dataset.state = name;
    const icon = { done: "✓ ", current: "▶ ", failed: "✗ " }[status] || "";
    li.append(el("span", icon + name, "name"), el("span", status || "not reached", "word"));
    nodes.push(li);
  };
  for (const name of main) {
    let status = seen.has(name) ? "done" : "";
    if (name === current) status = "current";
    if (failedEnd && name === lastMain) status = "failed";
    if (name === "Promoted" && rollout.phase === "succeeded") status = "done";
    box(name, status);
  }
  if (failedEnd || out.some((n) => seen.has(n))) {
    for (const name of out) box(name, seen.has(name) ? "done" : "", "failure-path");
    if (failedEnd && rollout.step && !out.includes(rollout.step)) box(rollout.step, "failed", "failure-path");
  }
  $("graph").replaceChildren(...nodes);
}

// Green's weight over time as a step line (blue dashed), with each health result on the same
// time axis.
function renderChart(rollout, history) {
  const start = ms(rollout.started) || Date.now();
  // The engine's clock may run faster than this one (the demo's speed-up): the last event
  // counts as "now" when it is later, plus the time the current wait has run on that clock.
  const last = history.reduce((m, l) => Math.max(m, ms(l.at) || 0), 0);
  const waited = rollout.window ? (rollout.window.elapsed || 0) * 1000 : 0;
  const now = rollout.ended ? ms(rollout.ended) || last : Math.max(Date.now(), last + waited);
  const end = Math.max(now, last, start + 1000);
  const W = 600, H = 220, L = 40, R = 10, T = 24, B = 30;
  const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
  const y = (pct) => T + (1 - pct / 100) * (H - T - B);
  const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  const weights = history.filter((l) => l.kind === "weights" && l.detail);
  const health = history.filter((l) => l.kind === "health");
  const greens = [0];
  let green = 0;
  const steps = [[start, 0]];
  for (const line of weights) {
    const t = ms(line.at);
    if (t === null) continue;
    steps.push([t, green]);
    green = Number(line.detail.green) || 0;
    steps.push([t, green]);
    if (greens[greens.length - 1] !== green) greens.push(green);
  }
  steps.push([end, green]);
  const points = (share) => steps.map(([t, g]) => x(t).toFixed(1) + "," + y(share(g)).toFixed(1)).join(" ");
  root.append(svg("title", {}, "green's share of the traffic over time, with the health checks"));
  for (const pct of [0, 50, 100]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(pct), y2: y(pct), class: "axis" }));
    root.append(svg("text", { x: 4, y: y(pct) + 3 }, pct + "%"));
  }
  root.append(svg("polyline", { points: points((g) => 100 - g), class: "blue" }));
  root.append(svg("polyline", { points: points((g) => g), class: "green" }));
  for (const line of health) {
    const t = ms(line.at);
    if (t === null) continue;
    const ok = Boolean(line.detail) && String(line.detail.State).toLowerCase() === "healthy";
    const mark = svg("g", {});
    mark.append(svg("title", {}, line.text));
    mark.append(svg("circle", { cx: x(t), cy: 12, r: 5, class: ok ? "ok" : "bad" }));
    mark.append(svg("text", { x: x(t) - 3, y: T + 8 }, ok ? "✓" : "✗"));
    root.append(mark);
  }
  root.append(svg("text", { x: L, y: H - 8 }, "0 s"));
  root.append(svg("text", { x: W - R - 50, y: H - 8 }, duration((end - start) / 1000)));
  root.append(svg("text", { x: W / 2 - 60, y: H - 8 }, "green solid, blue dashed"));
  $("chart").replaceChildren(root);
  const healthWords = health.map((l) => (l.detail && l.detail.State) || "?");
  $("chart-steps").textContent = "green: " + greens.map((g) => g + "%").join(" → ") +
    (healthWords.length ? "; health checks: " + healthWords.join(", ") : "");
  $("chart").dataset.greens = greens.join(",");
}

function renderHistory(history) {
  const items = history.map((line) => {
    const li = el("li", null, "line-" + line.kind);
    const at = ms(line.at);
    li.append(
      el("span", at ? new Date(at).toISOString().slice(11, 19) : line.at, "at"),
      el("span", line.kind, "kind"),
      el("span", line.text, "text"),
    );
    return li;
  });
  $("history").replaceChildren(...items);
}

function renderDetail(rollout, history) {
  $("detail").hidden = false;
  $("detail-title").textContent = (rollout.deployment || "rollout") + " — " + rollout.id;
  phaseBadge($("detail-phase"), rollout.phase);
  $("detail-step").textContent = "step: " + stepOf(rollout);
  $("detail-weights").textContent = weightsText(rollout.weights);
  $("time-left").textContent = rollout.window && ACTIVE.includes(rollout.phase)
    ? rollout.window.name + ": " + duration(rollout.time_left || 0) + " left of " + duration(rollout.window.seconds)
    : "";
  const h = rollout.health;
  $("detail-health").textContent = h ? "last health check: " + (h.State || "?") + (h.reason ? " — " + h.reason : "") : "";
  $("detail-health").hidden = !h;
  renderGraph(rollout, history);
  renderChart(rollout, history);
  renderHistory(history);
  $("actions-note").textContent = apiKey()
    ? "Actions are sent with the API key of this tab."
    : "Actions need the API key (enter it above); without it this page is read-only.";
}

// ---- polling ----

async function poll() {
  if (pending) return;
  pending = true;
  try {
    const list = await api("/rollouts?all=true");
    if (list.status !== 200) {
      // What was shown stays (marked stale by the notice): the operator may be changing keys.
      notice(refused(list.status, list.body) + " What is shown may be out of date.");
      return;
    }
    notice(apiKey() ? "" : "Read-only: rollouts are shown without credentials here; actions need the API key.");
    renderList(list.body.rollouts || []);
    const id = selected();
    if (!id) {
      $("detail").hidden = true;
      return;
    }
    if (!definition || definition.id !== id) {
      const def = await api("/rollouts/" + encodeURIComponent(id) + "/definition");
      if (def.status === 200) definition = { id, states: def.body.definition.States || {} };
    }
    const shown = await api("/rollouts/" + encodeURIComponent(id) + "/history");
    if (shown.status !== 200) {
      notice(refused(shown.status, shown.body));
      if (shown.status === 404) $("detail").hidden = true;
      return;
    }
    renderDetail(shown.body.rollout, shown.body.history || []);
  } finally {
    pending = false;
  }
}

async function act(action) {
  const id = selected();
  const result = $("action-result");
  result.className = "";
  const reason = $("reason").value.trim();
  if (!id) return;
  if (!reason) {
    result.className = "refused";
    result.textContent = "Give a reason first: it goes to the audit log.";
    $("reason").focus();
    return;
  }
  const full = action === "promote-full";
  const body = JSON.stringify(full ? { reason, full: true } : { reason });
  const path = "/rollouts/" + encodeURIComponent(id) + "/" + (full ? "promote" : action);
  result.textContent = action + ": sending…";
  const answer = await api(path, { method: "POST", headers: { "content-type": "application/json" }, body });
  if (answer.status === 200) {
    result.textContent = action + " accepted: " + reason;
    $("reason").value = "";
  } else {
    result.className = "refused";
    result.textContent = action + " " + refused(answer.status, answer.body);
  }
  poll();
}

function showKeyState() {
  $("key-state").textContent = apiKey() ? "key set for this tab" : "no key";
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("api-key").value.trim();
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
    $("api-key").value = "";
    showKeyState();
    poll();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showKeyState();
    poll();
  });
  $("actions").addEventListener("submit", (e) => e.preventDefault());
  for (const button of document.querySelectorAll("#actions button[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  window.addEventListener("hashchange", () => {
    $("action-result").textContent = "";
    poll();
  });
  showKeyState();
  poll();
  setInterval(poll, POLL_MS);
});
