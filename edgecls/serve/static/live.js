// The live page of `edgecls serve`: the MJPEG stream, the labels with probability bars, FPS and latency, and the
// label changes over Server-Sent Events. Plain JS, no dependency, works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const COOKIE = "edgecls_api_key";
const FEED_KEPT = 50;
// RFC 6265 cookie-octets: what a cookie value carries without quoting.
const COOKIE_SAFE = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+$/;
let events = null;

function status(text) { $("status").textContent = text || ""; }

function showKeyForm(again) {
  $("live").hidden = true;
  $("keyform").hidden = false;
  status(again ? "That key was not accepted." : "");
  $("key").focus();
}

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("key").value.trim();
  if (!COOKIE_SAFE.test(key)) { status("This key has characters a cookie cannot carry."); return; }
  document.cookie = `${COOKIE}=${key}; path=/; SameSite=Strict`;
  sessionStorage.setItem("edgecls_key_tried", "1");
  location.reload();
});

function render(s) {
  $("source").textContent = s.source || "";
  $("fps").textContent = s.fps.toFixed(1);
  $("latency").textContent = s.latency_ms.toFixed(1);
  $("frames").textContent = String(s.frames);
  $("dropped").textContent = String(s.dropped_frames);
  $("labels").textContent = s.labels.length ? s.labels.join(", ") : "(none)";
  status(s.connected ? "" : (s.error || "waiting for the camera…"));
  const on = new Set(s.labels);
  const bars = $("bars");
  const names = Object.keys(s.probabilities).sort((a, b) => s.probabilities[b] - s.probabilities[a]);
  bars.replaceChildren(...names.map((name) => {
    const p = s.probabilities[name];
    const row = document.createElement("div");
    row.className = on.has(name) ? "row on" : "row";
    row.dataset.label = name;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.round(p * 100)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "p";
    value.textContent = p.toFixed(2);
    row.append(label, track, value);
    return row;
  }));
}

function addChange(ev) {
  const li = document.createElement("li");
  const when = document.createElement("time");
  when.textContent = new Date(ev.time * 1000).toLocaleTimeString();
  const text = document.createElement("span");
  const names = (labels) => (labels.length ? labels.join(", ") : "none");
  text.textContent = ev.previous === null ? names(ev.labels) : `${names(ev.labels)} (was ${names(ev.previous)})`;
  li.append(when, text);
  const feed = $("feed");
  feed.prepend(li);
  while (feed.children.length > FEED_KEPT) feed.lastChild.remove();
}

function startStream() {
  const img = $("stream");
  img.onerror = () => { setTimeout(() => { img.src = `/v1/stream.mjpg?t=${Date.now()}`; }, 2000); };
  img.src = "/v1/stream.mjpg";
}

function startEvents() {
  if (events) events.close();
  events = new EventSource("/v1/events");
  events.addEventListener("state", (e) => render(JSON.parse(e.data)));
  events.addEventListener("labels", (e) => addChange(JSON.parse(e.data)));
  events.onerror = () => status("connection lost, reconnecting…");
}

async function start() {
  let r;
  try {
    r = await fetch("/v1/live", { credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    status("the server does not answer; trying again…");
    setTimeout(start, 2000);
    return;
  }
  if (r.status === 401 || r.status === 403) {
    showKeyForm(sessionStorage.getItem("edgecls_key_tried") === "1");
    return;
  }
  sessionStorage.removeItem("edgecls_key_tried");
  if (!r.ok) { status(`the server answered ${r.status}`); setTimeout(start, 2000); return; }
  $("keyform").hidden = true;
  $("live").hidden = false;
  render(await r.json());
  startStream();
  startEvents();
}

start();
