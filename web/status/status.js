// The starling admin status page (served at `/` by the admin listener).
//
// Polls GET /api/v1/stats every second, with the API key from sessionStorage
// when there is one; on 401 asks for the key. Rates are differences between
// successive polls over the elapsed time. No libraries: the charts are SVG
// drawn here, and all data goes into the page through textContent.
// `window.statusState` is for tests (tests/js/status_page_test.mjs).

const STATS_URL = "/api/v1/stats";
const KEY_STORAGE = "starling-admin-key";
const POLL_MS = 1000;
const MAX_POINTS = 120;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { ready: false, polls: 0, stats: null, rates: { received: [], sent: [] }, error: null };
window.statusState = state;

const $ = (id) => document.getElementById(id);
let previous = null; // { at, received, sent, uptime } of the last successful poll
let timer = null;
let waitingForKey = false;

// ---- formatting ------------------------------------------------------------

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);

function formatCount(n) {
  n = num(n);
  if (Math.abs(n) < 10_000) return String(Math.round(n * 100) / 100);
  const units = [["G", 1e9], ["M", 1e6], ["k", 1e3]];
  const [suffix, size] = units.find(([, size]) => Math.abs(n) >= size);
  return `${(n / size).toFixed(1)}${suffix}`;
}

function formatBytes(n) {
  n = num(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function formatRate(r) {
  return r >= 100 ? String(Math.round(r)) : String(Math.round(r * 10) / 10);
}

function formatUptime(secs) {
  secs = Math.floor(num(secs));
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  const parts = d ? [`${d}d`, `${h}h`, `${m}m`] : h ? [`${h}h`, `${m}m`, `${s}s`] : m ? [`${m}m`, `${s}s`] : [`${s}s`];
  return parts.join(" ");
}

// ---- DOM helpers -----------------------------------------------------------

function setText(id, text) {
  const node = $(id);
  if (node) node.textContent = text;
}

/** A <td> holding `text` (as text, never markup), with optional classes. */
function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function pill(good, goodText, badText) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = good ? "pill ok" : "pill";
  span.textContent = good ? goodText : badText;
  td.append(span);
  return td;
}

/** Replaces the rows of `tbody`; an empty list shows one row saying `empty`. */
function fillRows(id, items, columns, empty, toCells) {
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    tr.append(...toCells(item));
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = columns;
    tr.append(td);
    rows.push(tr);
  }
  $(id).replaceChildren(...rows);
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- chart -----------------------------------------------------------------

/** Draws `points` (newest last) as a line over the last MAX_POINTS polls. */
function drawChart(id, points, color) {
  const chart = $(id);
  const width = Math.max(chart.clientWidth, 200);
  const height = Math.max(chart.clientHeight, 100);
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const pad = { left: 44, right: 10, top: 10, bottom: 18 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const top = niceMax(Math.max(...points, 0));
  const x = (i) => pad.left + (w * (MAX_POINTS - points.length + i)) / (MAX_POINTS - 1);
  const y = (v) => pad.top + h - (h * v) / top;

  const nodes = [];
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    nodes.push(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
    nodes.push(svg("text", { class: "axis", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, formatCount(v)));
  }
  nodes.push(svg("text", { class: "axis", x: pad.left, y: height - 4 }, `-${MAX_POINTS}s`));
  nodes.push(svg("text", { class: "axis", x: width - pad.right, y: height - 4, "text-anchor": "end" }, "now"));
  if (points.length > 0) {
    const line = points.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
    const area = `${line}L${x(points.length - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`;
    nodes.push(svg("path", { class: "area", d: area, fill: color }));
    nodes.push(svg("path", { class: "line", d: line, stroke: color }));
  }
  chart.replaceChildren(...nodes);
}

/** A round number at least `v` (1, 2 or 5 times a power of ten). */
function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

// ---- rendering -------------------------------------------------------------

function pushRate(series, value) {
  series.push(value);
  if (series.length > MAX_POINTS) series.splice(0, series.length - MAX_POINTS);
}

function updateRates(stats) {
  const now = performance.now();
  const current = {
    at: now,
    received: num(stats.messages?.received),
    sent: num(stats.messages?.sent),
    uptime: num(stats.uptime_secs),
  };
  // A restarted broker starts its counters again: start the rates again too.
  const restarted =
    previous && (current.uptime < previous.uptime || current.received < previous.received || current.sent < previous.sent);
  if (previous && !restarted) {
    const elapsed = (now - previous.at) / 1000;
    if (elapsed > 0) {
      pushRate(state.rates.received, (current.received - previous.received) / elapsed);
      pushRate(state.rates.sent, (current.sent - previous.sent) / elapsed);
    }
  }
  previous = current;
}

function render(stats) {
  setText("version", stats.version ?? "?");
  setText("uptime", formatUptime(stats.uptime_secs));

  const connections = stats.connections ?? {};
  setText("connections-total", String(num(connections.total)));
  const breakdown = Object.entries(connections.by_transport ?? {}).map(([transport, n]) => {
    const li = document.createElement("li");
    li.textContent = transport;
    const b = document.createElement("b");
    b.textContent = String(num(n));
    li.append(b);
    return li;
  });
  $("connections-breakdown").replaceChildren(...breakdown);

  setText("sessions-online", String(num(stats.sessions?.online)));
  setText("sessions-offline", String(num(stats.sessions?.offline)));
  setText("subscriptions", String(num(stats.subscriptions)));
  setText("retained-count", String(num(stats.retained?.count)));
  setText("retained-bytes", formatBytes(stats.retained?.bytes));
  setText("queued", String(num(stats.queued)));
  setText("inflight", String(num(stats.inflight)));
  setText("messages-received", formatCount(stats.messages?.received));
  setText("messages-sent", formatCount(stats.messages?.sent));
  setText("bytes-total", `${formatBytes(stats.bytes?.received)} in · ${formatBytes(stats.bytes?.sent)} out`);

  const { received, sent } = state.rates;
  setText("rate-received", received.length ? formatRate(received.at(-1)) : "–");
  setText("rate-sent", sent.length ? formatRate(sent.at(-1)) : "–");
  drawChart("chart-received", received, "#7aa2ff");
  drawChart("chart-sent", sent, "#7be0a8");

  fillRows("top-topics", stats.top_topics ?? [], 2, "no traffic", (t) => [
    cell(t.topic, "mono"),
    cell(formatRate(num(t.messages_per_sec)), "num"),
  ]);

  fillRows("canary", stats.canary ?? [], 4, "no canary results", (c) => {
    const row = [
      cell(c.listener),
      pill(c.ok, "ok", "failing"),
      cell(c.rtt_ms == null ? "–" : num(c.rtt_ms).toFixed(2), "num"),
      cell(c.error ?? "", "err"),
    ];
    if (c.checked_at_ms) row[0].title = `checked ${new Date(c.checked_at_ms).toLocaleString()}`;
    return row;
  });

  fillRows("bridges", stats.bridges ?? [], 7, "no bridges configured", (b) => [
    cell(b.name),
    cell(b.address, "mono"),
    pill(b.connected, "up", "down"),
    cell(String(num(b.messages_in)), "num"),
    cell(String(num(b.messages_out)), "num"),
    cell(String(num(b.queue_depth)), "num"),
    cell(b.last_error ?? "", "err"),
  ]);
}

function setError(message) {
  state.error = message;
  setText("error", message ?? "");
  const status = $("status");
  status.textContent = message ? (waitingForKey ? "API key needed" : "unreachable") : "live";
  status.classList.toggle("ok", !message);
}

// ---- polling and the API key -----------------------------------------------

function askForKey(refused) {
  waitingForKey = true;
  $("auth-hint").textContent = refused
    ? "That key was refused (HTTP 401). Try another one."
    : "The admin API asks for a key (HTTP 401). It is kept in this tab only.";
  $("auth-form").hidden = false;
  $("api-key").focus();
}

async function poll() {
  timer = null;
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  try {
    const response = await fetch(STATS_URL, { headers, cache: "no-store" });
    if (response.status === 401) {
      // Stop polling until a key is given: each refusal counts as an auth failure.
      askForKey(Boolean(key));
      setError("unauthorized: the admin API key is missing or wrong");
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
    const stats = await response.json();
    updateRates(stats);
    render(stats);
    state.stats = stats;
    state.polls += 1;
    state.ready = true;
    setError(null);
  } catch (e) {
    setError(`poll failed: ${e.message}`);
  }
  timer = setTimeout(poll, POLL_MS);
}

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("auth-form").hidden = true;
  waitingForKey = false;
  if (timer !== null) clearTimeout(timer);
  poll();
});

poll();
