/**
 * The starling web demo, served by the broker at http://127.0.0.1:8083/ (the
 * WebSocket port). One starling.v1 connection (web/starling-client.js) and
 * three panels, one per shipped topic class (topics/*.toml, docs/scenarios.md):
 *
 * - Chat, `chat/demo`: subscribe, fetch the room's history, show both in
 *   message-id order; send at QoS 1. Payload: JSON `{"name": "ada", "text":
 *   "hi"}` (any other payload is shown as plain text). Files: drop or paste
 *   one (or pick it with the paper clip); web/starling-files.js uploads it to /files/
 *   with tus-js-client (a progress bar; instant when this browser's address
 *   uploaded the same content before) and sends the file message of
 *   docs/scenarios.md plus `"from"`, the sender. Pictures show as thumbnails.
 * - Live stream, `live/demo/danmaku`: comments (plain text) fly over a fake
 *   video; sent at QoS 0. The broker keeps the room's viewer count in the
 *   retained topic `$SYS/viewers/live/demo/danmaku` and answers a viewer over
 *   the rate limit with Error 0x96, shown as a polite notice.
 * - Fleet, `fleet/demo/+/location`: payload JSON `{"x": 0.42, "y": 0.17}`, the
 *   position on the map as fractions of its width (x, to the right) and height
 *   (y, downwards). The map draws the newest position of each vehicle.
 *   "Simulate fleet" drives vehicles along the map's streets from this page,
 *   as `starling simulate fleet` does from a terminal.
 *
 * `window.demoState` holds what the panels show, for tests and curious readers.
 */
import { StarlingClient } from "/web/starling-client.js";
import { fileMessage, isFileMessage, uploadFile } from "/web/starling-files.js";

const ROOM = "chat/demo";
const LIVE = "live/demo/danmaku";
const VIEWERS = `$SYS/viewers/${LIVE}`;
const FLEET = "fleet/demo/+/location";
const RATE_TOO_HIGH = 0x96;
const GRID = 8; // streets every 1/8 of the map, as in src/simulate.rs
const STALE_MS = 10_000; // a vehicle silent this long is drawn faded...
const FORGET_MS = 300_000; // ...and removed after the location class's retained TTL

const $ = (id) => document.getElementById(id);
const state = (window.demoState = {
  ready: false, // subscribed and history loaded
  connected: false,
  clientId: "",
  chat: [], // {id (BigInt message id), name, text, at, file?}, in message-id order
  uploads: [], // files this page sent: {name, size, progress (0..1), progressEvents, instant, done, error}
  danmaku: [], // comments received, oldest first
  viewers: 0,
  vehicles: {}, // vehicle id -> {x, y, at}
  notices: [], // refusals shown: {code, text}
});

// ---- connection -------------------------------------------------------------

const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = await StarlingClient.connect(url).catch((e) => {
  setStatus(`offline: ${e.message}; reload to retry`, false);
  throw e;
});
client.on("message", (m) => {
  if (m.topic === ROOM) addChat(m);
  else if (m.topic === LIVE) showComment(m.text());
  else if (m.topic === VIEWERS) setViewers(m.text());
  else if (m.topic.startsWith("fleet/demo/")) updateVehicle(m);
});
client.on("error", (e) => {
  if (e.code === RATE_TOO_HIGH) refused($("danmaku-notice"), e); // QoS 0 refusals come as Error frames
});
client.on("connect", ({ clientId, reconnected }) => {
  setStatus(`connected as ${clientId}`, true);
  // Fill the gap in the chat while we were away (subscriptions are renewed by the client).
  if (reconnected) loadHistory(state.chat.at(-1)?.id ?? 0n).catch(() => {}); // lost again: the next connect retries
});
client.on("disconnect", ({ willReconnect }) => setStatus(willReconnect ? "reconnecting…" : "disconnected", false));
setStatus(`connected as ${client.clientId}`, true);

await client.subscribe([{ filter: ROOM, qos: 1 }, LIVE, VIEWERS, FLEET]);
await loadHistory(0n);
state.ready = true;

function setStatus(text, ok) {
  Object.assign(state, { connected: ok, clientId: ok ? client.clientId : "" });
  $("status").textContent = text;
  $("status").classList.toggle("ok", ok);
}

/** A refusal by the broker, said kindly; it fades after a few seconds. */
function refused(where, error) {
  const text =
    error.code === RATE_TOO_HIGH
      ? "Easy there! Each person may only send a few messages a second here. Try again in a moment."
      : `Not sent: ${error.message}`;
  state.notices.push({ code: error.code, text });
  where.textContent = text;
  clearTimeout(where.timer);
  where.timer = setTimeout(() => (where.textContent = ""), 5000);
}

// ---- chat ---------------------------------------------------------------------

const nameInput = $("chat-name");
nameInput.value = localStorage.getItem("starling-demo-name") ?? `guest-${Math.floor(Math.random() * 900 + 100)}`;
nameInput.addEventListener("change", () => localStorage.setItem("starling-demo-name", nameInput.value));

async function loadHistory(afterMessageId) {
  for (const m of await client.history(ROOM, { afterMessageId })) addChat(m);
}

/** Adds a message once, in message-id order: history and live messages may overlap. */
function addChat(m) {
  if (state.chat.some((c) => c.id === m.messageId)) return;
  let name = "";
  let text = m.text();
  let file;
  try {
    const payload = JSON.parse(text);
    if (isFileMessage(payload)) {
      file = payload;
      ({ from: name, name: text } = payload);
    } else {
      ({ name, text } = payload);
    }
  } catch {
    // not the demo's JSON: show the payload as it is
  }
  const entry = { id: m.messageId, name: String(name ?? ""), text: String(text ?? ""), at: m.timestampMs, file };
  const index = state.chat.findIndex((c) => c.id > entry.id);
  const at = index < 0 ? state.chat.length : index;
  state.chat.splice(at, 0, entry);

  const li = document.createElement("li");
  const who = li.appendChild(document.createElement("b"));
  who.textContent = entry.name || "mqtt";
  who.style.color = color(entry.name);
  if (file) showFile(li, file);
  else li.append(" ", entry.text);
  const time = li.appendChild(document.createElement("time"));
  time.textContent = new Date(entry.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const log = $("chat-log");
  log.insertBefore(li, log.children[at] ?? null);
  log.scrollTop = log.scrollHeight;
}

/** A file message: a thumbnail for pictures, a download link for the rest. */
function showFile(li, file) {
  const href = `/files/${file.id}`;
  const link = li.appendChild(document.createElement("a"));
  link.href = href;
  link.target = "_blank";
  link.rel = "noopener";
  if (String(file.mime).startsWith("image/")) {
    const img = link.appendChild(document.createElement("img"));
    img.className = "thumb";
    img.src = href;
    img.alt = String(file.name);
    img.loading = "lazy";
  } else {
    link.textContent = `📄 ${file.name} (${Math.ceil(Number(file.size) / 1024)} KB)`;
  }
}

/** Uploads a dropped, pasted or picked file, then sends its message to the room. */
async function sendFile(file) {
  const upload = { name: file.name, size: file.size, progress: 0, progressEvents: 0, instant: false, done: false };
  state.uploads.push(upload);
  const bar = $("chat-progress");
  bar.hidden = false;
  bar.value = 0;
  try {
    const uploaded = await uploadFile(file, {
      endpoint: `${location.origin}/files/`,
      onProgress: (sent, total) => {
        upload.progressEvents += 1;
        upload.progress = bar.value = total ? sent / total : 1;
      },
    });
    upload.instant = uploaded.instant;
    await client.publish(ROOM, JSON.stringify({ ...fileMessage(uploaded), from: nameInput.value }), { qos: 1 });
    upload.done = true;
    if (uploaded.instant) notice($("chat-notice"), `${file.name}: sent at once (already uploaded before)`);
  } catch (error) {
    upload.error = error.message;
    refused($("chat-notice"), error);
  } finally {
    bar.hidden = true;
  }
}

function notice(where, text) {
  where.textContent = text;
  clearTimeout(where.timer);
  where.timer = setTimeout(() => (where.textContent = ""), 5000);
}

const chatPanel = $("chat");
chatPanel.addEventListener("dragover", (e) => {
  e.preventDefault();
  chatPanel.classList.add("dropping");
});
chatPanel.addEventListener("dragleave", () => chatPanel.classList.remove("dropping"));
chatPanel.addEventListener("drop", (e) => {
  e.preventDefault();
  chatPanel.classList.remove("dropping");
  for (const file of e.dataTransfer?.files ?? []) sendFile(file);
});
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files ?? [])];
  if (files.length === 0) return; // text: the input takes it
  e.preventDefault();
  for (const file of files) sendFile(file);
});
$("chat-file").addEventListener("change", (e) => {
  for (const file of e.target.files) sendFile(file);
  e.target.value = "";
});

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await client.publish(ROOM, JSON.stringify({ name: nameInput.value, text }), { qos: 1 });
  } catch (error) {
    input.value = text; // give it back to try again
    refused($("chat-notice"), error);
  }
});

// ---- live stream ------------------------------------------------------------

const LANE_PX = 30;
const SPEED_PX_PER_SEC = 140;
const laneFreeAt = []; // per lane: when its last comment has fully entered the stage

/** Flies a comment from right to left in the lane that has been free longest. */
function showComment(text) {
  state.danmaku.push(text);
  const stage = $("danmaku");
  const el = stage.appendChild(document.createElement("span"));
  el.className = "comment";
  el.textContent = text;
  const lanes = Math.max(1, Math.floor((stage.clientHeight - 50) / LANE_PX)); // below the badges
  let lane = 0;
  for (let i = 0; i < lanes; i++) if ((laneFreeAt[i] ?? 0) < (laneFreeAt[lane] ?? 0)) lane = i;
  const now = performance.now();
  laneFreeAt[lane] = Math.max(now, laneFreeAt[lane] ?? 0) + ((el.offsetWidth + 40) / SPEED_PX_PER_SEC) * 1000;
  el.style.top = `${40 + lane * LANE_PX}px`;
  const from = stage.clientWidth;
  const to = -el.offsetWidth;
  const duration = ((from - to) / SPEED_PX_PER_SEC) * 1000;
  const keyframes = [{ transform: `translateX(${from}px)` }, { transform: `translateX(${to}px)` }];
  el.animate(keyframes, { duration, easing: "linear" }).finished.then(() => el.remove());
}

function setViewers(text) {
  state.viewers = Number(text) || 0; // an empty retained message means nobody
  $("viewers").textContent = state.viewers;
}

$("danmaku-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("danmaku-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  // QoS 0: nothing to wait for. A refusal arrives as an Error frame (see above).
  client.publish(LIVE, text).catch((error) => refused($("danmaku-notice"), error));
});

// ---- fleet ----------------------------------------------------------------------

function updateVehicle(m) {
  const id = m.topic.split("/")[2];
  if (m.payload.length === 0) return delete state.vehicles[id]; // a cleared retained message
  let p;
  try {
    p = JSON.parse(m.text());
  } catch {
    return;
  }
  if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) return;
  // A retained message may be old: its timestamp says when the vehicle reported.
  state.vehicles[id] = { x: p.x, y: p.y, at: m.retain ? m.timestampMs : Date.now() };
}

const drawn = new Map(); // vehicle id -> where it is drawn: it glides to its newest position

function drawMap() {
  const canvas = $("map");
  const size = Math.round(canvas.clientWidth * devicePixelRatio);
  if (canvas.width !== size) canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d");
  const margin = 12 * devicePixelRatio;
  const place = (c) => margin + c * (size - 2 * margin); // map fraction -> canvas pixel
  ctx.fillStyle = "#101826";
  ctx.fillRect(0, 0, size, size);
  ctx.strokeStyle = "#1f2d44";
  ctx.lineWidth = 6 * devicePixelRatio;
  for (let i = 0; i <= GRID; i++) {
    const at = place(i / GRID);
    ctx.beginPath();
    ctx.moveTo(at, margin);
    ctx.lineTo(at, size - margin);
    ctx.moveTo(margin, at);
    ctx.lineTo(size - margin, at);
    ctx.stroke();
  }
  const now = Date.now();
  for (const [id, v] of Object.entries(state.vehicles)) {
    if (now - v.at > FORGET_MS) {
      delete state.vehicles[id];
      drawn.delete(id);
      continue;
    }
    const d = drawn.get(id) ?? { x: v.x, y: v.y };
    d.x += (v.x - d.x) * 0.08;
    d.y += (v.y - d.y) * 0.08;
    drawn.set(id, d);
    ctx.globalAlpha = now - v.at > STALE_MS ? 0.3 : 1;
    ctx.fillStyle = color(id);
    ctx.beginPath();
    ctx.arc(place(d.x), place(d.y), 5 * devicePixelRatio, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.globalAlpha = 1;
  $("vehicle-count").textContent = Object.keys(state.vehicles).length;
  requestAnimationFrame(drawMap);
}
requestAnimationFrame(drawMap);

/** The fleet simulator of src/simulate.rs: vehicles drive along the streets and turn at random at crossings. */
function newVehicle(id) {
  const street = Math.floor(Math.random() * (GRID + 1));
  const along = Math.random() * GRID;
  const horizontal = Math.random() < 0.5;
  const [x, y] = horizontal ? [along, street] : [street, along];
  return { id, x, y, dx: horizontal ? 1 : 0, dy: horizontal ? 0 : 1, speed: 0.5 + Math.random() }; // blocks/s
}

function drive(v, secs) {
  let left = v.speed * secs;
  while (left > 0) {
    const axis = v.dx ? "x" : "y";
    const dir = v.dx || v.dy;
    const crossing = dir > 0 ? Math.floor(v[axis]) + 1 : Math.ceil(v[axis]) - 1;
    const gap = Math.abs(crossing - v[axis]);
    if (left < gap) {
      v[axis] += dir * left;
      return;
    }
    v[axis] = crossing;
    left -= gap;
    // At a crossing: any way that stays on the map, except back.
    const ways = [[1, 0], [-1, 0], [0, 1], [0, -1]].filter(
      ([dx, dy]) => !(dx === -v.dx && dy === -v.dy) && inside(v.x + dx) && inside(v.y + dy),
    );
    [v.dx, v.dy] = ways[Math.floor(Math.random() * ways.length)];
  }
}

const inside = (c) => c >= 0 && c <= GRID;
const round = (c) => Math.round((c / GRID) * 10_000) / 10_000;

const sim = { timer: 0, vehicles: [] };
$("simulate").addEventListener("click", () => {
  if (sim.timer) {
    clearInterval(sim.timer);
    sim.timer = 0;
    $("simulate").textContent = "Simulate fleet";
    return;
  }
  const tag = Math.random().toString(36).slice(2, 6);
  sim.vehicles = Array.from({ length: 12 }, (_, i) => newVehicle(`web-${tag}-${i + 1}`));
  const report = (secs) => {
    for (const v of sim.vehicles) {
      drive(v, secs);
      const position = JSON.stringify({ x: round(v.x), y: round(v.y) });
      client.publish(`fleet/demo/${v.id}/location`, position).catch(() => {}); // offline: skip this one
    }
  };
  report(0);
  sim.timer = setInterval(() => report(0.5), 500);
  $("simulate").textContent = "Stop simulation";
});

// ---- helpers ------------------------------------------------------------------

/** A stable, pleasant colour per name (FNV-1a hash to a hue). */
function color(name) {
  let hash = 0x811c9dc5;
  for (const c of String(name)) hash = Math.imul(hash ^ c.codePointAt(0), 16777619);
  return `hsl(${(hash >>> 0) % 360} 75% 65%)`;
}
