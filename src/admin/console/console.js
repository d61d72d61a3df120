// ringlog console: plain JavaScript, no framework, no request to any host
// but the node that served the page (spec §9). One page for every path;
// the path picks the view.
"use strict";

const SAMPLE_INTERVAL_MS = 2000;          // overview samples, node list and topic refresh
const HISTORY_MS = 10 * 60 * 1000;        // charts cover the last 10 minutes
const MAX_SAMPLES = HISTORY_MS / SAMPLE_INTERVAL_MS + 1;
const TOKEN_KEY = "ringlog-admin-token";  // sessionStorage: this tab only
const API_TIMEOUT_MS = 5000;              // longest wait for one API answer

const console_state = { samples: [], overview: null, nodes: null, view: "overview", topic: null };

// ---- small helpers --------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Each cell carries its column's name, which the phone layout shows above
// the value (the header row is hidden there).
function labelCells(row, table) {
  const names = [...document.querySelectorAll(`${table} thead th`)].map((cell) => cell.textContent.trim());
  [...row.children].forEach((cell, index) => cell.setAttribute("data-label", names[index] || ""));
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function formatBytes(value) {
  if (value === null || value === undefined || !isFinite(value)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let index = 0;
  while (Math.abs(value) >= 1024 && index < units.length - 1) { value /= 1024; index += 1; }
  return (index === 0 ? Math.round(value).toString() : value.toFixed(1)) + " " + units[index];
}

function formatCount(value) {
  if (value === null || value === undefined || !isFinite(value)) return "–";
  if (Math.abs(value) >= 1e6) return (value / 1e6).toFixed(2) + " M";
  if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + " k";
  return (Math.round(value * 10) / 10).toLocaleString("en");
}

function formatDuration(milliseconds) {
  const seconds = Math.floor(milliseconds / 1000);
  const days = Math.floor(seconds / 86400), hours = Math.floor(seconds / 3600) % 24;
  const minutes = Math.floor(seconds / 60) % 60;
  if (days > 0) return `${days} d ${hours} h`;
  if (hours > 0) return `${hours} h ${minutes} min`;
  if (minutes > 0) return `${minutes} min ${seconds % 60} s`;
  return `${seconds} s`;
}

function showAlert(message) { setText($("#alert"), message || ""); }

function showBanner(message) {
  const banner = $("#banner");
  banner.hidden = !message;
  setText(banner, message || "");
}

// ---- the API --------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// Calls the node's admin API. Mutations carry the bearer token when the node
// wants one; a 401 forgets the stored token and asks for it again.
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && token()) headers.Authorization = "Bearer " + token();
  // A node that accepts the connection but never answers must not stall
  // the refresh loop: every call gives up after API_TIMEOUT_MS.
  let response, text;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
    text = await response.text();
  } catch (failure) {
    // Status 0: no answer at all (node down, refused, timed out).
    return { status: 0, json: null, error: `no answer from ${location.host}: ${failure.message}` };
  }
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (response.status === 401 && method !== "GET") {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken();
  }
  return { status: response.status, json, error: (json && json.error) || text || response.statusText };
}

function askForToken() {
  const form = $("#token-form");
  form.hidden = false;
  $("#token-input").value = "";
}

function setupTokenForm() {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("#token-form").hidden = true;
    showAlert("");
  });
}

// ---- overview samples and charts ---------------------------------------------

function rate(current, previous, pick) {
  const seconds = (current.uptime_ms - previous.uptime_ms) / 1000;
  const difference = pick(current) - pick(previous);
  // A restarted node starts its counters again: no rate across a restart.
  if (seconds <= 0 || difference < 0) return null;
  return difference / seconds;
}

const SERIES = [
  { id: "chart-produce-bytes", title: "Produce", format: (v) => formatBytes(v) + "/s",
    value: (c, p) => rate(c, p, (s) => s.counters.produce_bytes_total) },
  { id: "chart-produce-records", title: "Produce", format: (v) => formatCount(v) + " records/s",
    value: (c, p) => rate(c, p, (s) => s.counters.produce_records_total) },
  { id: "chart-consume-bytes", title: "Consume (fetched)", format: (v) => formatBytes(v) + "/s",
    value: (c, p) => rate(c, p, (s) => s.counters.fetch_bytes_total) },
  { id: "chart-consume-records", title: "Consume", format: (v) => formatCount(v) + " records/s",
    value: (c, p) => rate(c, p, (s) => s.counters.fetch_records_total) },
  { id: "chart-fsync", title: "fsync latency (mean)", format: (v) => v.toFixed(2) + " ms",
    value: (c, p) => {
      const count = c.counters.fsync_latency_count - p.counters.fsync_latency_count;
      const sum = c.counters.fsync_latency_sum_us - p.counters.fsync_latency_sum_us;
      return count > 0 && sum >= 0 ? sum / count / 1000 : 0;
    } },
  { id: "chart-lag", title: "Follower lag (largest)", format: (v) => formatCount(v) + " records",
    value: (c) => (c.followers.length ? Math.max(...c.followers.map((f) => f.lag_records)) : null) },
];

function svgElement(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// Chart geometry in SVG units (the viewBox scales it to the box).
const CHART = { width: 360, height: 150, left: 58, right: 352, top: 24, bottom: 128 };

function chartPoints(series) {
  const samples = console_state.samples;
  const points = [];
  for (let index = 1; index < samples.length; index += 1) {
    const value = series.value(samples[index], samples[index - 1]);
    if (value !== null && isFinite(value)) points.push({ at: samples[index].received_ms, value });
  }
  return points;
}

function drawChart(series) {
  const figure = document.getElementById(series.id);
  const points = chartPoints(series);
  // The title tells the newest sample, not the last one that had a value:
  // a leader that stepped down has no follower lag any more.
  const samples = console_state.samples;
  const newest = samples.length > 1 ? series.value(samples[samples.length - 1], samples[samples.length - 2]) : null;
  const latest = newest !== null && isFinite(newest) ? newest : null;
  const caption = latest === null
    ? `${series.title}: ${series.id === "chart-lag" ? "on the leader only" : "waiting for samples"}`
    : `${series.title}: ${series.format(latest)}`;
  setText(figure.querySelector("figcaption"), caption);
  figure.dataset.latest = latest === null ? "" : String(latest);
  figure.dataset.points = String(points.length);
  const svg = figure.querySelector("svg");
  svg.setAttribute("viewBox", `0 0 ${CHART.width} ${CHART.height}`);
  svg.setAttribute("aria-label", caption);
  svg.replaceChildren(...chartShapes(series, points));
}

// The time axis spans what the page has seen, at least a minute and at
// most HISTORY_MS: a fresh page shows its first seconds legibly.
function chartSpan(now) {
  const first = console_state.samples.length ? console_state.samples[0].received_ms : now;
  return Math.min(HISTORY_MS, Math.max(60000, now - first));
}

function formatAgo(milliseconds) {
  const seconds = Math.round(milliseconds / 1000);
  return seconds >= 120 ? `−${Math.round(seconds / 60)} min` : `−${seconds} s`;
}

function chartShapes(series, points) {
  const now = performance.now();
  const span = chartSpan(now);
  const visible = points.filter((p) => now - p.at <= span);
  const maximum = Math.max(1e-9, ...visible.map((p) => p.value)) * 1.1;
  const x = (at) => CHART.left + (CHART.right - CHART.left) * (1 - (now - at) / span);
  const y = (value) => CHART.bottom - (CHART.bottom - CHART.top) * (value / maximum);
  const shapes = [];
  for (const fraction of [0, 0.5, 1]) {
    const level = y(maximum * fraction);
    shapes.push(svgElement("line", { class: "grid", x1: CHART.left, x2: CHART.right, y1: level, y2: level }));
    const label = svgElement("text", { class: "axis", x: CHART.left - 4, y: level + 3, "text-anchor": "end" });
    label.textContent = visible.length ? series.format(maximum * fraction).replace(/ records\/s| records/, "") : "";
    shapes.push(label);
  }
  for (const [fraction, anchor] of [[1, "start"], [0.5, "middle"], [0, "end"]]) {
    const label = svgElement("text", { class: "axis", x: x(now - fraction * span), y: CHART.height - 6, "text-anchor": anchor });
    label.textContent = fraction === 0 ? "now" : formatAgo(fraction * span);
    shapes.push(label);
  }
  const unit = svgElement("text", { class: "axis", x: 2, y: 10 });
  unit.textContent = document.getElementById(series.id).dataset.unit;
  shapes.push(unit);
  if (visible.length > 1) {
    const line = visible.map((p) => `${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
    const first = x(visible[0].at).toFixed(1), last = x(visible[visible.length - 1].at).toFixed(1);
    shapes.push(svgElement("polygon", { class: "area", points: `${first},${CHART.bottom} ${line} ${last},${CHART.bottom}` }));
    shapes.push(svgElement("polyline", { class: "line", points: line }));
  }
  return shapes;
}

// ---- overview -------------------------------------------------------------

async function sampleOverview() {
  const answer = await api("GET", "/api/overview");
  if (answer.status !== 200 || !answer.json) {
    showBanner(answer.status === 0 ? `Cannot reach this node: ${answer.error}`
      : `This node answered ${answer.status}: ${answer.error}`);
    return;
  }
  const overview = answer.json;
  overview.received_ms = performance.now();
  console_state.overview = overview;
  console_state.samples.push(overview);
  if (console_state.samples.length > MAX_SAMPLES) console_state.samples.shift();
  showBanner(clusterProblem(overview));
  renderIdentity(overview);
  renderPermissions(overview);
  if (console_state.view === "overview") renderOverview(overview);
  if (console_state.view === "topics") renderTopics();
  setText($("#refreshed"), `Updated ${new Date().toLocaleTimeString("en-GB")}.`);
}

function clusterProblem(overview) {
  if (overview.role === "standalone") return "";
  if (overview.etcd === "unreachable") return `This node cannot reach etcd; what it shows may be stale.`;
  if (overview.leader_id === null || overview.leader_id === undefined) {
    return "This node cannot reach a leader: the cluster has no leader it can see.";
  }
  return "";
}

function renderIdentity(overview) {
  const id = overview.node_id === null ? "standalone node" : `node ${overview.node_id}`;
  setText($("#identity"), `${id} · ${overview.role} · ${location.host}`);
}

function renderPermissions(overview) {
  const allowed = overview.mutations_allowed;
  for (const button of document.querySelectorAll("[data-mutates]")) button.disabled = !allowed;
  setText($("#mutations-note"), allowed ? (overview.admin_token_required ? "Changes need the admin token." : "")
    : "Changes are allowed only from loopback when admin_token is unset; buttons are disabled.");
  if (overview.admin_token_required && !token() && $("#token-form").hidden) askForToken();
}

function renderOverview(overview) {
  setText($("#fact-node"), overview.node_id === null ? "standalone" : String(overview.node_id));
  setText($("#fact-role"), overview.role);
  setText($("#fact-health"), overview.status);
  $("#fact-health").className = overview.status === "ok" ? "yes" : "no";
  setText($("#fact-uptime"), formatDuration(overview.uptime_ms));
  const leader = overview.role === "standalone" ? "–"
    : overview.leader_id === null ? "none" : `node ${overview.leader_id} · epoch ${overview.leader_epoch}`;
  setText($("#fact-leader"), leader);
  const reason = $("#fact-reason");
  reason.hidden = !overview.reason;
  setText(reason, overview.reason ? `Reason: ${overview.reason}` : "");
  for (const series of SERIES) drawChart(series);
}

// ---- nodes ----------------------------------------------------------------

async function refreshNodes() {
  const answer = await api("GET", "/api/nodes");
  if (answer.status !== 200 || !Array.isArray(answer.json)) {
    // The overview's refresh sets the banner too: keep what it knows (etcd
    // unreachable, no leader) in front, or the two refreshes would take
    // turns hiding each other's reason.
    const known = console_state.overview ? clusterProblem(console_state.overview) : "";
    const failure = answer.status === 0 ? `Cannot reach this node: ${answer.error}`
      : `This node cannot list the replicas (${answer.status}): ${answer.error}`;
    showBanner([known, failure].filter(Boolean).join(" "));
    return;
  }
  const nodes = answer.json.slice().sort((a, b) =>
    (a.role === "leader" ? 0 : 1) - (b.role === "leader" ? 0 : 1) || a.id - b.id);
  console_state.nodes = nodes;
  renderNodes(nodes);
}

function nodeCells(node) {
  return [String(node.id), node.role, node.address, node.connected ? "yes" : "no", node.in_sync ? "yes" : "no",
    node.lag_records.toLocaleString("en"), formatBytes(node.lag_bytes)];
}

function renderNodeRow(row, node) {
  const cells = nodeCells(node);
  cells.forEach((text, index) => {
    const cell = row.children[index];
    setText(cell, text);
    if (index === 3 || index === 4) cell.className = text;
  });
  // In sync but gone, or connected but behind: the operator should look.
  const attention = (node.in_sync && !node.connected) || (node.connected && node.lag_records > 0);
  row.classList.toggle("attention", attention);
  row.classList.toggle("down", !node.connected);
  const actions = row.children[7];
  const wantsForget = !node.connected && node.role !== "leader";
  const button = actions.querySelector("button");
  if (wantsForget && !button) {
    const forget = element("button", { type: "button", class: "danger", "data-mutates": "" }, "Forget");
    forget.disabled = console_state.overview ? !console_state.overview.mutations_allowed : false;
    forget.addEventListener("click", () => forgetNode(node.id));
    actions.append(forget);
  } else if (!wantsForget && button) {
    button.remove();
  }
}

function renderNodes(nodes) {
  const body = $("#nodes tbody");
  const rows = new Map([...body.children].map((row) => [row.dataset.nodeId, row]));
  nodes.forEach((node, index) => {
    let row = rows.get(String(node.id));
    if (!row) {
      row = element("tr", { "data-node-id": String(node.id) });
      for (let cell = 0; cell < 8; cell += 1) row.append(element("td", cell >= 5 && cell < 7 ? { class: "number" } : {}));
      row.children[7].className = "actions";
      labelCells(row, "#nodes");
    }
    rows.delete(String(node.id));
    renderNodeRow(row, node);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  for (const stale of rows.values()) stale.remove();
  renderNodesSummary(nodes);
}

function renderNodesSummary(nodes) {
  const overview = console_state.overview;
  const leader = nodes.find((node) => node.role === "leader");
  const inSync = nodes.filter((node) => node.in_sync).length;
  const minimum = overview && overview.min_insync_replicas !== null ? overview.min_insync_replicas : "–";
  const epoch = overview && overview.leader_epoch !== undefined ? overview.leader_epoch : "–";
  const text = nodes.length === 0 ? "A standalone node has no replicas."
    : `Leader: ${leader ? "node " + leader.id : "none"} · epoch ${epoch} · in sync: ${inSync} of ${nodes.length}` +
      ` (min_insync_replicas ${minimum})`;
  setText($("#nodes-summary"), text);
}

async function forgetNode(id) {
  if (!window.confirm(`Forget node ${id}? It is removed from the cluster for good; its data directory must be wiped before it can rejoin.`)) return;
  const answer = await api("DELETE", `/api/nodes/${encodeURIComponent(id)}`);
  if (answer.status === 204) {
    showAlert("");
    const row = document.querySelector(`#nodes tr[data-node-id="${id}"]`);
    if (row) row.remove();
    return;
  }
  showAlert(`Forget node ${id} refused (${answer.status}): ${answer.error}`);
}

// ---- topics ---------------------------------------------------------------

function topicRates(name) {
  const samples = console_state.samples;
  if (samples.length < 2) return { produce: null, consume: null };
  const current = samples[samples.length - 1], previous = samples[samples.length - 2];
  const pick = (sample, field) => {
    const topic = sample.topics.find((t) => t.name === name);
    return topic ? topic[field] : NaN;
  };
  const produce = rate(current, previous, (s) => pick(s, "log_end_offset_total"));
  const consume = rate(current, previous, (s) => pick(s, "fetched_bytes_total"));
  return { produce: isNaN(produce) ? null : produce, consume: isNaN(consume) ? null : consume };
}

function renderTopics() {
  const overview = console_state.overview;
  if (!overview) return;
  const body = $("#topics tbody");
  const rows = new Map([...body.children].map((row) => [row.dataset.topic, row]));
  const topics = overview.topics.slice().sort((a, b) => a.name.localeCompare(b.name));
  topics.forEach((topic, index) => {
    let row = rows.get(topic.name);
    if (!row) row = newTopicRow(topic.name);
    rows.delete(topic.name);
    const rates = topicRates(topic.name);
    const texts = [null, String(topic.partitions), formatBytes(topic.bytes), topic.records.toLocaleString("en"),
      rates.produce === null ? "–" : `${formatCount(rates.produce)} records/s`,
      rates.consume === null ? "–" : `${formatBytes(rates.consume)}/s`];
    texts.forEach((text, cell) => { if (text !== null) setText(row.children[cell], text); });
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  for (const stale of rows.values()) stale.remove();
}

function newTopicRow(name) {
  const row = element("tr", { "data-topic": name });
  const link = element("a", { href: `/topics/${encodeURIComponent(name)}` }, name);
  row.append(element("td"));
  row.children[0].append(link);
  for (let cell = 1; cell < 6; cell += 1) row.append(element("td", { class: "number" }));
  const actions = element("td", { class: "actions" });
  const remove = element("button", { type: "button", class: "danger", "data-mutates": "" }, "Delete");
  remove.disabled = !console_state.overview.mutations_allowed;
  remove.addEventListener("click", () => deleteTopic(name));
  actions.append(remove);
  row.append(actions);
  labelCells(row, "#topics");
  return row;
}

async function deleteTopic(name) {
  if (!window.confirm(`Delete topic ${name} and all of its records? This cannot be undone.`)) return false;
  const answer = await api("DELETE", `/api/topics/${encodeURIComponent(name)}`);
  if (answer.status === 204) {
    showAlert("");
    const row = document.querySelector(`#topics tr[data-topic="${CSS.escape(name)}"]`);
    if (row) row.remove();
    return true;
  }
  showAlert(`Delete topic ${name} refused (${answer.status}): ${answer.error}`);
  return false;
}

function setupCreateForm() {
  const form = $("#create-topic");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: String(data.get("name")).trim() };
    for (const field of ["partitions", "retention_bytes", "retention_ms", "segment_bytes"]) {
      body[field] = Number(data.get(field) || 0);
    }
    const answer = await api("POST", "/api/topics", body);
    if (answer.status === 201) {
      showAlert("");
      form.reset();
      await sampleOverview();
      return;
    }
    showAlert(`Create topic ${body.name} refused (${answer.status}): ${answer.error}`);
  });
}

async function refreshTopic() {
  const name = console_state.topic;
  const answer = await api("GET", `/api/topics/${encodeURIComponent(name)}`);
  if (answer.status !== 200 || !answer.json) {
    showAlert(`Topic ${name} (${answer.status}): ${answer.error}`);
    return;
  }
  const body = $("#partitions tbody");
  const partitions = answer.json.partitions;
  while (body.children.length > partitions.length) body.lastElementChild.remove();
  partitions.forEach((partition, index) => {
    let row = body.children[index];
    if (!row) {
      row = element("tr");
      for (let cell = 0; cell < 7; cell += 1) row.append(element("td", { class: "number" }));
      labelCells(row, "#partitions");
      body.append(row);
    }
    row.dataset.partition = String(partition.partition);
    // null: not re-established yet after a restart or a leader change.
    const texts = [partition.partition, partition.log_start_offset, partition.log_end_offset, partition.high_watermark ?? "—",
      partition.segments, formatBytes(partition.bytes), partition.leader_epoch];
    texts.forEach((text, cell) => setText(row.children[cell], typeof text === "number" ? text.toLocaleString("en") : text));
  });
}

// ---- routing and the refresh loop ---------------------------------------------

function route() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  if (path === "/nodes") return { view: "nodes" };
  if (path === "/topics") return { view: "topics" };
  if (path.startsWith("/topics/")) return { view: "topic", topic: decodeURIComponent(path.slice("/topics/".length)) };
  return { view: "overview" };
}

async function tick() {
  await sampleOverview();
  if (console_state.view === "nodes") await refreshNodes();
  if (console_state.view === "topic") await refreshTopic();
}

function start() {
  const { view, topic } = route();
  console_state.view = view;
  console_state.topic = topic || null;
  for (const section of document.querySelectorAll("[data-view]")) section.hidden = section.dataset.view !== view;
  const current = view === "topic" ? "topics" : view;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === current) link.setAttribute("aria-current", "page");
  }
  if (view === "topic") {
    setText($("#topic-name"), topic);
    document.title = `${topic} · ringlog console`;
    $("#delete-topic").addEventListener("click", async () => { if (await deleteTopic(topic)) location.assign("/topics"); });
  } else {
    document.title = `${view[0].toUpperCase()}${view.slice(1)} · ringlog console`;
  }
  setupTokenForm();
  setupCreateForm();
  const loop = async () => {
    try { await tick(); } catch (failure) { showBanner(`Refresh failed: ${failure.message}`); }
    setTimeout(loop, SAMPLE_INTERVAL_MS);
  };
  loop();
}

document.addEventListener("DOMContentLoaded", start);
