"""The status page: one HTML document with a small inline script polling /api/status and /api/events.

No build step and no external assets (a Pi may have no internet); data is written with textContent only.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>facepipe edge</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem; background: #f6f7f9; color: #1d2330; }
  h1 { font-size: 1.3rem; margin: 0 0 .8rem; } h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .grid { display: grid; grid-template-columns: minmax(320px, 2fr) minmax(260px, 1fr); gap: 1rem; }
  section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .8rem; }
  table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .2rem .4rem; }
  tr + tr td { border-top: 1px solid #eef0f3; }
  #frame { max-width: 100%; background: #222; min-height: 120px; }
  .events img { width: 96px; height: 72px; object-fit: cover; border-radius: 3px; background: #ddd; }
  .ok { color: #1a7f37; } .bad { color: #c62828; } .num { text-align: right; font-variant-numeric: tabular-nums; }
  pre { font-size: 12px; overflow: auto; max-height: 24rem; margin: 0; }
  .muted { color: #6b7280; }
</style>
</head>
<body>
<h1>facepipe edge: <span id="device">...</span> <small class="muted" id="updated"></small></h1>
<div class="grid">
  <section>
    <h2>Latest answered frame</h2>
    <img id="frame" alt="latest annotated frame (none yet)">
    <p class="muted" id="frame-at"></p>
  </section>
  <section>
    <h2>Health</h2>
    <table id="health"></table>
    <h2 style="margin-top:.8rem">Counters</h2>
    <table id="counters"></table>
  </section>
  <section>
    <h2>Open tracks</h2>
    <table id="tracks"><tr><td class="muted">none</td></tr></table>
    <h2 style="margin-top:.8rem">Last events</h2>
    <table class="events" id="events"><tr><td class="muted">none yet</td></tr></table>
  </section>
  <section>
    <h2>People <small class="muted" id="away-after"></small></h2>
    <table class="events" id="people"><tr><td class="muted">nobody seen yet</td></tr></table>
    <p>Here now: <span id="here" class="muted">nobody</span></p>
    <p>Last unknown face: <span id="unknown-face" class="muted">none yet</span></p>
  </section>
  <section>
    <h2>Config in force (secrets redacted)</h2>
    <pre id="config"></pre>
  </section>
</div>
<script>
"use strict";
const COUNTERS = ["captured", "gated", "sent", "answered", "unanswered", "spooled", "dropped", "rejected",
                  "events", "output_errors"];
function clock(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : ""; }
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls; return td;
}
function fill(table, rows, empty) {
  table.replaceChildren();
  if (!rows.length) { cell(table.insertRow(), empty, "muted"); return; }
  for (const build of rows) build(table.insertRow());
}
async function json(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}
async function refreshStatus() {
  const s = await json("/api/status");
  document.getElementById("device").textContent = s.device_id;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  fill(document.getElementById("counters"), COUNTERS.map(name => row => {
    cell(row, name); cell(row, s.counts[name], "num").id = "count-" + name;
  }), "");
  const h = s.health;
  const cameraOk = h.camera === "delivering" || h.camera === "finished";
  const latency = s.latency_median_s === null ? "n/a" : s.latency_median_s.toFixed(3) + " s";
  fill(document.getElementById("health"), [
    row => { cell(row, "pipeline"); cell(row, h.ok ? "ok" : "NOT OK", h.ok ? "ok" : "bad").id = "health-ok"; },
    row => { cell(row, "camera"); cell(row, h.camera, cameraOk ? "ok" : "bad"); },
    row => { cell(row, "endpoint"); cell(row, h.endpoint_up ? "up" : "DOWN, spooling", h.endpoint_up ? "ok" : "bad"); },
    row => { cell(row, "in flight / spooled"); cell(row, h.in_flight + " / " + h.spool_frames, "num"); },
    row => { cell(row, "latency median"); cell(row, latency, "num"); },
  ], "");
  fill(document.getElementById("tracks"), s.tracks.map(t => row => {
    cell(row, t.name); cell(row, "since " + clock(t.start)); cell(row, t.frames + " frame(s)", "num");
  }), "none");
  document.getElementById("config").textContent = JSON.stringify(s.config, null, 2);
  showPresence(s.presence);
  if (s.latest_frame_at) {
    document.getElementById("frame").src = "/api/frame.jpg?at=" + s.latest_frame_at;
    document.getElementById("frame-at").textContent = "captured " + clock(s.latest_frame_at);
  }
}
function showPresence(p) {
  document.getElementById("away-after").textContent = "home until " + p.away_after_s + " s after the last sighting";
  fill(document.getElementById("people"), p.people.map(person => row => {
    row.id = "person-" + person.id;
    const picture = cell(row, "");
    if (person.picture) {
      const img = document.createElement("img");
      img.src = "/api/people/" + encodeURIComponent(person.id) + ".jpg?at=" + person.at; img.alt = person.name;
      picture.appendChild(img);
    }
    cell(row, person.name).className = "name";
    cell(row, person.home ? "home" : "away", person.home ? "ok" : "muted").className += " presence";
    cell(row, "last seen " + clock(person.at) + " on " + person.camera);
    cell(row, person.best_distance === null ? "" : "d " + person.best_distance.toFixed(2), "num");
  }), "nobody seen yet");
  document.getElementById("here").textContent = p.here.length ? p.here.join(", ") : "nobody";
  const u = p.unknown_face;
  document.getElementById("unknown-face").textContent = u ? clock(u.at) + " on " + u.camera : "none yet";
}
async function refreshEvents() {
  const events = await json("/api/events");
  fill(document.getElementById("events"), events.map(e => row => {
    row.id = "event-" + e.event_id;
    const picture = cell(row, "");
    if (e.picture) {
      const img = document.createElement("img");
      img.src = "/api/events/" + e.event_id + ".jpg"; img.alt = e.name; picture.appendChild(img);
    }
    cell(row, e.name).className = "name";
    cell(row, clock(e.start) + (e.end ? " - " + clock(e.end) : " (here)"));
    cell(row, e.frames + " frame(s)", "num");
    cell(row, e.best_distance === null ? "" : "d " + e.best_distance.toFixed(2), "num");
  }), "none yet");
}
async function tick() {
  try { await refreshStatus(); await refreshEvents(); }
  catch (error) { document.getElementById("updated").textContent = "daemon unreachable: " + error.message; }
}
tick();
setInterval(tick, 2000);
</script>
</body>
</html>
"""
