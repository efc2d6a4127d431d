// The quantcoach console: plain JavaScript, no dependencies. Everything comes from this
// server's own API; every value from it is put in the page as text, never as HTML.
"use strict";

const KEY_STORE = "quantcoach.api_key";
const $ = (id) => document.getElementById(id);

// ---- small helpers --------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clock(s) {
  if (typeof s !== "number" || !isFinite(s)) return "--:--";
  s = Math.max(0, Math.floor(s));
  const m = Math.floor(s / 60);
  return String(m).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
}

function when(unix) {
  if (typeof unix !== "number") return "";
  return new Date(unix * 1000).toLocaleString();
}

function roleName(role) {
  if (!role) return "Speaker";
  return role.charAt(0).toUpperCase() + role.slice(1);
}

function roleClass(role) {
  return "role-" + (/^[a-z]+$/.test(role || "") ? role : "other");
}

// ---- the API, with the key the operator gave --------------------------------------------

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

let keyPrompt = null; // one dialog at a time; callers that got 401 wait on it

async function api(method, path, body, opts) {
  opts = opts || {};
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = {};
    if (apiKey()) headers["Authorization"] = "Bearer " + apiKey();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, "UNREACHABLE", "the server does not answer (" + e.message + ")");
    }
    if (res.status === 401 && !opts.noPrompt) {
      const ok = await askKey("The server refused the request (401): it needs an API key.");
      if (ok) continue;
    }
    const type = res.headers.get("content-type") || "";
    const data = type.includes("json") ? await res.json().catch(() => null) : await res.text();
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      throw new ApiError(res.status, err.code || "HTTP_" + res.status, err.message || res.statusText);
    }
    return data;
  }
  throw new ApiError(401, "UNAUTHORIZED", "no API key accepted");
}

function askKey(why) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  $("key-why").textContent = (why ? why + " " : "") + "The key is kept in this tab only (sessionStorage).";
  $("key-input").value = apiKey();
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      keyPrompt = null;
      if (dialog.returnValue === "save" && $("key-input").value.trim() !== "") {
        sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
        resolve(true);
      } else {
        if (dialog.returnValue === "forget") sessionStorage.removeItem(KEY_STORE);
        resolve(false);
      }
      updateKeyButton();
    }, { once: true });
  });
  dialog.showModal();
  $("key-input").focus();
  return keyPrompt;
}

function updateKeyButton() {
  $("key-button").textContent = apiKey() ? "API key (set)" : "API key";
}

// ---- health -------------------------------------------------------------------------------

async function refreshHealth() {
  const box = $("health");
  try {
    const h = await api("GET", "/health", undefined, { noPrompt: true });
    const p = h.policies || {};
    const parts = [
      el("span", { class: h.status === "ok" ? "ok" : "degraded" }, h.status),
      " · v" + h.version + " · up " + clock(h.uptime_s).replace(/^(\d+):/, "$1m ") + "s",
      " · policies generation " + p.generation + (p.reloaded_at ? " (reloaded " + p.reloaded_at + ")" : ""),
      h.stt ? " · STT " + h.stt.engine + " " + h.stt.state : "",
      h.tracks ? " · " + h.tracks.live + " live tracks" : "",
    ];
    box.replaceChildren(...parts);
    if (p.reload_error) box.append(el("div", { class: "error" }, "last reload failed: " + p.reload_error));
  } catch (e) {
    box.replaceChildren(el("span", { class: "down" }, "server unreachable"), " · " + e.message);
  }
}

// ---- rooms ------------------------------------------------------------------------------

function copyButton(text, label) {
  return el("button", {
    type: "button", class: "secondary", "aria-label": "Copy " + label,
    onclick: async (ev) => {
      const b = ev.currentTarget;
      try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; }
      catch (_) {
        // Without clipboard access (plain http on another host): select it for Ctrl+C.
        const code = b.previousSibling;
        const range = document.createRange();
        range.selectNodeContents(code);
        getSelection().removeAllRanges(); getSelection().addRange(range);
        b.textContent = "Selected: Ctrl+C";
      }
      setTimeout(() => { b.textContent = "Copy"; }, 2000);
    },
  }, "Copy");
}

function joinLink(url, token) {
  // LiveKit's own sample client joins any server with a URL and a token.
  return "https://meet.livekit.io/custom?liveKitUrl=" + encodeURIComponent(url) + "&token=" + encodeURIComponent(token);
}

function showCreated(room) {
  const box = $("create-result");
  const dl = el("dl");
  const row = (label, value) => dl.append(el("dt", {}, label), el("dd", {}, el("code", { title: value }, value), copyButton(value, label)));
  row("Room", room.name);
  row("LiveKit URL", room.url);
  for (const role of ["interviewer", "candidate", "agent"]) {
    const token = room[role + "_token"];
    if (!token) continue;
    row(roleName(role) + " token", token);
    row(roleName(role) + " link", joinLink(room.url, token));
  }
  box.replaceChildren(el("p", {}, "Created ", el("strong", {}, room.name), ". ",
    el("a", { href: "#room=" + encodeURIComponent(room.name) }, "Watch it live")), dl);
  box.hidden = false;
}

async function createRoom(ev) {
  ev.preventDefault();
  const body = {};
  const name = $("create-name").value.trim();
  if (name) body.room_name = name;
  const max = parseInt($("create-max").value, 10);
  if (max > 0) body.max_participants = max;
  const button = $("create-submit");
  button.disabled = true;
  try {
    showCreated(await api("POST", "/rooms/create", body));
    refreshRooms();
  } catch (e) {
    const box = $("create-result");
    box.replaceChildren(el("p", { class: "error", role: "alert" }, "Not created: " + e.message + " (" + e.code + ")"));
    box.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function refreshRooms() {
  const msg = $("rooms-message");
  const tbody = $("rooms-table").tBodies[0];
  msg.className = "message";
  msg.textContent = "loading…";
  try {
    const data = await api("GET", "/rooms");
    const rooms = (data.rooms || []).slice().sort((a, b) => (b.creation_time || 0) - (a.creation_time || 0));
    tbody.replaceChildren(...rooms.map((r) => el("tr", {},
      el("td", {}, el("a", { href: "#room=" + encodeURIComponent(r.name) }, r.name)),
      el("td", {}, r.status),
      el("td", {}, (r.num_participants ?? 0) + (r.max_participants ? " / " + r.max_participants : "")),
      el("td", {}, when(r.creation_time)),
      el("td", {}, el("a", { href: "#room=" + encodeURIComponent(r.name), "aria-label": "Watch " + r.name }, "Watch")))));
    msg.textContent = rooms.length ? "" : "No rooms yet.";
  } catch (e) {
    tbody.replaceChildren();
    msg.className = "message error";
    msg.textContent = "Rooms not listed: " + e.message + " (" + e.code + "). A room can still be opened by name.";
  }
}

// ---- one room, live ------------------------------------------------------------------------

const room = {
  name: null, ws: null, lastSeq: 0, retry: 0, timer: null, closing: false,
  people: new Map(), heard: new Map(), partials: new Map(), windows: new Map(),
};

function liveState(text, cls) {
  const b = $("live-state");
  b.textContent = text;
  b.className = "badge " + (cls || "");
}

function openRoom(name) {
  closeRoom();
  room.name = name;
  $("home-view").hidden = true;
  $("room-view").hidden = false;
  $("room-title").textContent = "Room " + name;
  for (const id of ["transcript", "windows", "people", "heard", "events", "partials"]) $(id).replaceChildren();
  $("people").append(el("li", { class: "muted" }, "no join or leave seen yet"));
  $("report-panel").hidden = true;
  document.title = name + " · quantcoach console";
  connect();
  $("main").focus();
}

function closeRoom() {
  room.closing = true;
  if (room.ws) room.ws.close(1000, "console left the room");
  clearTimeout(room.timer);
  Object.assign(room, { name: null, ws: null, lastSeq: 0, retry: 0, timer: null, closing: false });
  room.people.clear(); room.heard.clear(); room.partials.clear(); room.windows.clear();
}

function connect() {
  const name = room.name;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = proto + "//" + location.host + "/rooms/" + encodeURIComponent(name) + "/live?since=" + room.lastSeq;
  if (apiKey()) url += "&token=" + encodeURIComponent(apiKey());
  liveState(room.lastSeq ? "resuming from " + room.lastSeq + "…" : "connecting…", "retrying");
  const ws = new WebSocket(url);
  room.ws = ws;
  let opened = false;
  ws.onopen = () => { opened = true; room.retry = 0; liveState("live", "live"); };
  ws.onmessage = (m) => {
    if (room.ws !== ws) return;
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    handle(ev);
  };
  ws.onclose = async (c) => {
    if (room.ws !== ws || room.closing || room.name !== name) return;
    room.ws = null;
    // A refused upgrade shows as 1006 before open: the key may be missing or wrong.
    if (!opened && room.retry >= 1) {
      try { await api("GET", "/rooms/" + encodeURIComponent(name) + "/transcript"); } catch (_) { /* shown below */ }
    }
    const wait = Math.min(10000, 500 * 2 ** room.retry++);
    liveState("disconnected (" + c.code + (c.reason ? ": " + c.reason : "") + "), retrying in " + Math.round(wait / 1000) + " s", "retrying");
    room.timer = setTimeout(() => { if (room.name === name) connect(); }, wait);
  };
}

function handle(ev) {
  if (ev.partial) return showPartial(ev);
  if (typeof ev.seq === "number") {
    if (ev.seq <= room.lastSeq) return; // already seen before a reconnect
    room.lastSeq = ev.seq;
  }
  switch (ev.type) {
    case "transcript": return addFinal(ev);
    case "participant": return addParticipant(ev);
    case "window": return addWindow(ev);
    case "evaluation": return addEvaluation(ev);
    case "stt": return addEvent("STT " + ev.state + " for " + (ev.identity || "?") + (ev.detail ? ": " + ev.detail : ""));
    default: return undefined;
  }
}

function speakerKey(ev) { return (ev.identity || "") + "/" + (ev.track || ""); }

function showPartial(ev) {
  const key = speakerKey(ev);
  let line = room.partials.get(key);
  if (!line) {
    line = el("div", { class: roleClass(ev.role) });
    room.partials.set(key, line);
    $("partials").append(line);
  }
  line.replaceChildren(el("span", { class: "who" }, roleName(ev.role)), " … " + (ev.text || ""));
}

function addFinal(ev) {
  if (ev.identity && !room.heard.has(ev.identity)) {
    room.heard.set(ev.identity, ev.role);
    $("heard").append(el("li", { class: roleClass(ev.role) }, el("span", { class: "who" }, roleName(ev.role)), " " + ev.identity));
  }
  const partial = room.partials.get(speakerKey(ev));
  if (partial) { partial.remove(); room.partials.delete(speakerKey(ev)); }
  const list = $("transcript");
  const li = el("li", { class: "final " + roleClass(ev.role), "data-start": ev.start, "data-role": ev.role || "" },
    el("span", { class: "time" }, "[" + clock(ev.start) + "] "),
    el("span", { class: "who", title: ev.identity || "" }, roleName(ev.role)),
    el("span", { class: "muted" }, " (" + (ev.identity || "?") + ")"), ": ", ev.text || "");
  // Keep the lines in order of time across speakers (finals of two tracks can arrive out of order).
  let before = null;
  for (let n = list.lastElementChild; n; n = n.previousElementSibling) {
    if (parseFloat(n.dataset.start) <= ev.start) break;
    before = n;
  }
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 30;
  list.insertBefore(li, before);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function addEvent(text) {
  const list = $("events");
  list.append(el("li", {}, text));
  list.scrollTop = list.scrollHeight;
}

function addParticipant(ev) {
  const who = (ev.identity || "?") + " (" + roleName(ev.role) + ")";
  addEvent((ev.at ? new Date(ev.at * 1000).toLocaleTimeString() + " " : "") + who + " " + ev.event);
  if (ev.event === "joined") room.people.set(ev.identity, ev.role);
  else room.people.delete(ev.identity);
  $("people").replaceChildren(...[...room.people].map(([id, role]) =>
    el("li", { class: roleClass(role) }, el("span", { class: "who" }, roleName(role)), " " + id)));
  if (!room.people.size) $("people").append(el("li", { class: "muted" }, "nobody in the room"));
}

function windowItem(index) {
  let w = room.windows.get(index);
  if (!w) {
    const title = el("h4", {}, index === 0 ? "Whole interview" : "Window " + index);
    w = { li: el("li", { class: "window", "data-index": index }, title), evals: el("div", { class: "evals" }) };
    w.li.append(w.evals);
    room.windows.set(index, w);
    // Ascending by index, the whole interview (0) last.
    const list = $("windows");
    let before = null;
    for (const n of list.children) {
      const i = parseInt(n.dataset.index, 10);
      if (index !== 0 && (i === 0 || i > index)) { before = n; break; }
    }
    list.insertBefore(w.li, before);
  }
  return w;
}

function addWindow(ev) {
  const w = windowItem(ev.index);
  w.li.querySelector("h4").textContent = "Window " + ev.index + " · " + clock(ev.start) + "–" + clock(ev.end);
  const old = w.li.querySelector(".text");
  if (old) old.remove();
  w.li.insertBefore(el("div", { class: "text" }, ev.text || ""), w.evals);
  w.li.scrollIntoView({ block: "nearest" });
}

function stat(label, value) { return el("div", {}, el("span", { class: "muted" }, label + " "), value); }

function analytics(r) {
  const box = el("div", { class: "stats" });
  for (const [role, s] of Object.entries(r.roles || {})) {
    box.append(stat(roleName(role), Math.round((s.talk_ratio || 0) * 100) + "% talk, " + Math.round(s.wpm || 0) + " wpm"));
  }
  box.append(stat("turns", r.turns ?? 0), stat("questions", r.questions ?? 0),
    stat("interruptions", r.interruptions ?? 0),
    stat("overlaps", (r.overlaps ? r.overlaps.count : 0)),
    stat("silences", r.silences ? r.silences.count + " (" + r.silences.seconds + " s)" : 0),
    stat("fillers", Object.values(r.fillers || {}).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0)));
  return box;
}

function rubric(r) {
  const box = el("div", { class: "stats" });
  for (const k of ["correctness", "approach", "communication", "hints_needed"]) {
    if (r[k] !== undefined) box.append(stat(k.replace("_", " "), r[k]));
  }
  const out = el("div", {}, box);
  if (r.feedback) out.append(el("p", {}, r.feedback));
  if (r.summary) out.append(el("p", {}, r.summary));
  return out;
}

function addEvaluation(ev) {
  const w = windowItem(ev.window);
  const key = "eval-" + ev.evaluator;
  let box = w.evals.querySelector("[data-key='" + CSS.escape(key) + "']");
  const fresh = el("div", { class: "eval", "data-key": key },
    el("strong", {}, ev.evaluator), " ",
    el("span", { class: "status-" + ev.status }, ev.status),
    ev.usage ? el("span", { class: "muted" }, " · tokens " + (ev.usage.input || 0) + " in, " + (ev.usage.output || 0) + " out") : null);
  if (ev.status === "ok" && ev.result && typeof ev.result === "object") {
    fresh.append(ev.evaluator === "analytics" ? analytics(ev.result) : rubric(ev.result));
  } else if (ev.error) {
    fresh.append(el("div", { class: "error" }, ev.error));
  }
  if (box) box.replaceWith(fresh); else w.evals.append(fresh);
}

async function showReport() {
  const panel = $("report-panel");
  const pre = $("report");
  panel.hidden = false;
  pre.textContent = "loading…";
  try {
    pre.textContent = await api("GET", "/rooms/" + encodeURIComponent(room.name) + "/report?format=md");
  } catch (e) {
    pre.textContent = "No report: " + e.message + " (" + e.code + ")";
  }
  pre.focus();
}

// ---- navigation ---------------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#room=(.+)$/);
  if (m) {
    let name;
    try { name = decodeURIComponent(m[1]); } catch (_) { name = m[1]; }
    if (name !== room.name) openRoom(name);
    return;
  }
  closeRoom();
  document.title = "quantcoach console";
  $("room-view").hidden = true;
  $("home-view").hidden = false;
  refreshRooms();
}

document.addEventListener("DOMContentLoaded", () => {
  updateKeyButton();
  $("create-form").addEventListener("submit", createRoom);
  $("rooms-refresh").addEventListener("click", refreshRooms);
  $("open-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("open-name").value.trim();
    if (name) location.hash = "room=" + encodeURIComponent(name);
  });
  $("report-button").addEventListener("click", showReport);
  $("back-link").addEventListener("click", (ev) => { ev.preventDefault(); location.hash = ""; });
  $("home-link").addEventListener("click", (ev) => { ev.preventDefault(); location.hash = ""; });
  $("key-button").addEventListener("click", async () => {
    if (await askKey("")) { refreshRooms(); if (room.name) { const n = room.name; closeRoom(); openRoom(n); } }
  });
  window.addEventListener("hashchange", route);
  refreshHealth();
  setInterval(refreshHealth, 5000);
  route();
});
