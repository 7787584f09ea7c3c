// The live map: it draws /api/view and lists /api/events, and redraws on
// every event of the /events stream (and once a second, for RTTs and flows).
"use strict";

const svg = document.getElementById("map");
const NS = "http://www.w3.org/2000/svg";
const palette = ["#1e88e5", "#d81b60", "#00897b", "#f4511e", "#5e35b1", "#7cb342", "#6d4c41", "#00acc1"];
let view = null;

// el makes an SVG element with attributes, and appends it to parent.
function el(parent, tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}

function groupColor(i) { return palette[i % palette.length]; }

// layout places the proxies by cluster, in a row of cluster boxes, and
// each proxy's targets and clients in a column below it.
function layout(v) {
  const clusters = new Map();
  for (const p of v.proxies) {
    const c = p.cluster || "?";
    if (!clusters.has(c)) clusters.set(c, []);
    clusters.get(c).push(p);
  }
  const pos = new Map(), boxes = [];
  let x = 20;
  for (const [name, ps] of [...clusters].sort()) {
    const w = Math.max(150, ps.length * 120);
    boxes.push({ name, x, w });
    ps.forEach((p, i) => pos.set(p.name, { x: x + 60 + i * 120, y: 150 }));
    x += w + 20;
  }
  return { pos, boxes, width: Math.max(x, 600) };
}

function draw(v) {
  view = v;
  document.getElementById("title").textContent = v.role === "lab" ? "the demo's whole overlay" : v.role + " " + v.node + "'s view";
  const { pos, boxes, width } = layout(v);
  // Below each proxy: its targets (by group), then its clients.
  const below = new Map();
  const place = (proxy) => {
    const n = below.get(proxy) || 0;
    below.set(proxy, n + 1);
    const p = pos.get(proxy);
    return p ? { x: p.x, y: p.y + 70 + n * 24 } : null;
  };
  const groupIndex = new Map(v.groups.map((g, i) => [g.group, i]));
  const targets = [];
  for (const g of v.groups)
    for (const t of g.targets) targets.push({ t, g, at: place(t.jap) });
  const edges = [];
  for (const e of v.edges) {
    if (targets.some((x) => x.t.name === e.name)) { // a target: drawn once, with its groups
      const x = targets.find((x) => x.t.name === e.name);
      pos.set(e.name, x.at);
      continue;
    }
    const at = place(e.proxy);
    if (at) { pos.set(e.name, at); edges.push({ e, at }); }
  }
  const height = Math.max(300, 240 + 24 * Math.max(0, ...below.values()));
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.replaceChildren();

  for (const b of boxes) {
    el(svg, "rect", { class: "cluster", x: b.x, y: 60, width: b.w, height: height - 80, rx: 10 });
    el(svg, "text", { x: b.x + 8, y: 78, class: "small" }, "cluster " + b.name);
  }
  // Probe links, as arcs above the row, with their RTT.
  for (const l of v.links) {
    const a = pos.get(l.from), b = pos.get(l.to);
    if (!a || !b) continue;
    const mx = (a.x + b.x) / 2, my = Math.min(a.y, b.y) - 25 - Math.abs(a.x - b.x) / 6;
    el(svg, "path", { class: "link" + (l.live ? "" : " down"), d: `M${a.x},${a.y - 22} Q${mx},${my} ${b.x},${b.y - 22}`,
      "data-link": l.from + ">" + l.to });
    if (l.rtt_ms > 0) el(svg, "text", { class: "rtt", x: mx - 14, y: (a.y + my) / 2 - 2 }, l.rtt_ms.toFixed(2) + " ms");
  }
  for (const p of v.proxies) {
    const at = pos.get(p.name);
    const g = el(svg, "g", { "data-proxy": p.name, "data-state": p.state });
    el(g, "circle", { cx: at.x, cy: at.y, r: 22, class: p.state + (p.self ? " self" : "") });
    el(g, "text", { x: at.x, y: at.y + 4, "text-anchor": "middle", class: "name", fill: "#fff" }, p.name);
    const raps = v.groups.filter((gr) => gr.raps.includes(p.name)).length;
    let info = p.state;
    if (p.flows >= 0) info += ", " + p.flows + " flows";
    if (raps) info += ", RAP of " + raps;
    el(g, "text", { x: at.x, y: at.y + 38, "text-anchor": "middle", class: "small" }, info);
  }
  for (const { t, g, at } of targets) {
    if (!at) continue;
    const c = groupColor(groupIndex.get(g.group));
    const tg = el(svg, "g", { "data-target": t.name || "", "data-group": g.group });
    el(tg, "line", { class: "attach", x1: at.x, y1: at.y - 8, x2: pos.get(t.jap).x, y2: pos.get(t.jap).y + 22 });
    el(tg, "rect", { x: at.x - 50, y: at.y - 9, width: 100, height: 18, rx: 3, fill: "#fff", stroke: c, "stroke-width": 2,
      "stroke-dasharray": t.draining ? "3 2" : "" });
    let label = (t.name || "target") + (t.flows ? " · " + t.flows + " flows" : "");
    el(tg, "text", { x: at.x, y: at.y + 4, "text-anchor": "middle", fill: c }, label);
  }
  for (const { e, at } of edges) {
    const eg = el(svg, "g", { "data-edge": e.name });
    const p = pos.get(e.proxy);
    el(eg, "line", { class: "attach", x1: at.x, y1: at.y - 8, x2: p.x, y2: p.y + 22 });
    el(eg, "polygon", { points: `${at.x},${at.y - 9} ${at.x + 40},${at.y} ${at.x},${at.y + 9} ${at.x - 40},${at.y}`, fill: "#fff", stroke: "#546e7a" });
    el(eg, "text", { x: at.x, y: at.y + 4, "text-anchor": "middle" }, e.name);
  }
  drawGroups(v);
}

function drawGroups(v) {
  const box = document.getElementById("groups");
  box.replaceChildren();
  v.groups.forEach((g, i) => {
    const d = document.createElement("div");
    d.className = "group";
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.style.background = groupColor(i);
    const name = document.createElement("b");
    name.textContent = g.group;
    const japs = g.japs.map((j) => `${j.name}×${j.targets}`).join(" ");
    d.append(chip, name, ` ${g.policy || ""} RAPs ${g.raps.join(", ")}; JAPs ${japs || "none known"}`);
    box.appendChild(d);
  });
}

function addEvent(e, fresh) {
  const ol = document.getElementById("timeline");
  const li = document.createElement("li");
  li.className = e.kind + (fresh ? " new" : "");
  const t = new Date(e.time).toISOString().slice(11, 23);
  const parts = [t, e.proxy, e.kind, e.name, e.group, e.target, e.reason].filter((s) => s);
  li.textContent = parts.join(" ");
  ol.prepend(li);
  while (ol.children.length > 200) ol.lastChild.remove();
  if (fresh) setTimeout(() => li.classList.remove("new"), 3000);
}

// refresh fetches the view and draws it; asked again while a fetch is
// under way, it fetches once more when that one is done.
let pending = false, again = false;
async function refresh() {
  if (pending) { again = true; return; }
  pending = true;
  try {
    const r = await fetch("/api/view", { cache: "no-store" });
    if (r.ok) draw(await r.json());
  } catch (err) {
    // the node may be gone; the next tick tries again
  } finally {
    pending = false;
    if (again) { again = false; refresh(); }
  }
}

async function start() {
  await refresh();
  try {
    const r = await fetch("/api/events", { cache: "no-store" });
    if (r.ok) for (const e of await r.json()) addEvent(e, false);
  } catch (err) {}
  const live = document.getElementById("live");
  const es = new EventSource("/events");
  es.onopen = () => { live.textContent = "live"; live.className = "on"; };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "off"; };
  es.onmessage = (m) => { addEvent(JSON.parse(m.data), true); refresh(); };
  setInterval(refresh, 1000);
}

start();
