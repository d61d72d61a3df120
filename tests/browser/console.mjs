// Drives the ringlog console in Debian's headless Chromium against a real
// cluster that tests/it/console.rs started (addresses in CONSOLE_* env).
// Exits non-zero on the first failed check; prints one line per check.
import { spawn, execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`missing environment variable ${name}`);
  return value;
};
const leader = `http://${env("CONSOLE_LEADER_ADMIN")}`;
const follower = `http://${env("CONSOLE_FOLLOWER_ADMIN")}`;
const tokenNode = `http://${env("CONSOLE_TOKEN_ADMIN")}`;
const aliveId = env("CONSOLE_ALIVE_FOLLOWER_ID");
const victimId = env("CONSOLE_VICTIM_ID");
const screenshots = env("CONSOLE_SCREENSHOTS");
const ringlog = env("RINGLOG_BIN");
const started = Date.now();

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  console.log(`ok ${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
}

// Poll `probe` until it returns a truthy value; fail with `what` after `limit_ms`.
async function eventually(probe, what, limit_ms = 15000) {
  const deadline = Date.now() + limit_ms;
  let last;
  while (Date.now() < deadline) {
    try { last = await probe(); if (last) { check(true, what); return last; } } catch (error) { last = error.message; }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  throw new Error(`timed out after ${limit_ms} ms: ${what} (last: ${JSON.stringify(last)})`);
}

const rowTexts = (page) => page.$$eval("#nodes tbody tr", (rows) => rows.map((row) => ({
  id: row.dataset.nodeId, cells: [...row.children].map((cell) => cell.textContent.trim()),
  forget: !!row.querySelector("button"),
})));

async function nodesPage(page) {
  await page.goto(`${leader}/nodes`);
  const headers = await page.$$eval("#nodes thead th", (cells) => cells.map((cell) => cell.textContent.trim()));
  for (const name of ["ID", "Role", "Address", "Connected", "In sync", "Lag (records)", "Lag (bytes)"]) {
    check(headers.includes(name), `#nodes has the header cell ${name}`);
  }
  const rows = await eventually(async () => {
    const all = await rowTexts(page);
    return all.length === 3 && all.every((row) => row.cells[3] === "yes" && row.cells[4] === "yes") && all;
  }, "three rows, every replica connected and in sync");
  const expected = ["1", ...[aliveId, victimId].sort()].join();
  check(rows.map((row) => row.id).join() === expected, `leader first, then by id (${expected})`);
  check(rows[0].cells[1].startsWith("leader") && !rows[0].forget, "the leader row has no Forget button");
  check(rows.every((row) => !row.forget), "no Forget button while every replica is connected");
  const summary = await page.textContent("#nodes-summary");
  check(/Leader: node 1 · epoch \d+ · in sync: 3 of 3 \(min_insync_replicas 1\)/.test(summary), `summary: ${summary}`);
  await page.screenshot({ path: `${screenshots}/nodes.png`, fullPage: true });
}

// A refusal shows the API's words: the page is shown node 2 as disconnected
// (only the listing is rewritten), so the real DELETE meets a live node: 409.
async function refusedForget(page) {
  await page.route("**/api/nodes", async (route) => {
    const response = await route.fetch();
    const nodes = await response.json();
    // The leader is shown disconnected too: it must still get no button.
    for (const node of nodes) if (String(node.id) === aliveId || node.role === "leader") node.connected = false;
    // And node 3 connected but behind: marked too.
    for (const node of nodes) if (String(node.id) === victimId) node.lag_records = 5;
    await route.fulfill({ response, json: nodes });
  });
  const button = page.locator(`#nodes tr[data-node-id="${aliveId}"] button`, { hasText: "Forget" });
  await button.waitFor({ timeout: 5000 });
  const shown = await rowTexts(page);
  check(shown[0].cells[1] === "leader" && shown[0].cells[3] === "no" && !shown[0].forget,
    "a leader shown as disconnected still has no Forget button");
  const marked = await page.$$eval("#nodes tbody tr", (rows) => rows.map((row) => row.classList.contains("attention")));
  check(marked.join() === "true,true,true", "in sync but disconnected, and connected but behind, are marked attention");
  page.once("dialog", (dialog) => dialog.accept());
  await button.click();
  const alert = page.locator('[role="alert"]');
  await eventually(async () => /409.*node \d+ is registered and connected; stop it first/.test(await alert.textContent()),
    "a 409 from DELETE /api/nodes shows in role=alert with the API's words");
  await page.unroute("**/api/nodes");
  await eventually(async () => (await rowTexts(page)).length === 3, "the refused node keeps its row");
}

async function forgetKilledFollower(page) {
  // A page served by the victim itself says so once its node is gone.
  const orphan = await page.context().newPage();
  await orphan.goto(`http://${env("CONSOLE_VICTIM_ADMIN")}/nodes`);
  await orphan.locator("#nodes tbody tr").first().waitFor({ timeout: 10000 });
  process.kill(Number(env("CONSOLE_VICTIM_PID")), "SIGKILL");
  await eventually(async () => await orphan.isVisible("#banner") && /Cannot reach this node/.test(await orphan.textContent("#banner")),
    "a page whose node was killed says it cannot reach it");
  await orphan.close();
  const victim = `#nodes tr[data-node-id="${victimId}"]`;
  await eventually(async () => {
    const row = (await rowTexts(page)).find((r) => r.id === victimId);
    return row && row.cells[3] === "no" && row.forget;
  }, "the SIGKILLed follower reads Connected no and has a Forget button");
  const leaderRow = (await rowTexts(page))[0];
  check(leaderRow.cells[1].startsWith("leader") && !leaderRow.forget, "the leader still has no Forget button");
  check(await page.$eval(victim, (row) => row.classList.contains("attention") || row.classList.contains("down")),
    "the disconnected replica is marked");
  await page.screenshot({ path: `${screenshots}/nodes-forget.png`, fullPage: true });
  let dismissed = 0;
  page.on("dialog", (dialog) => { dismissed += 1; dialog.accept(); });
  // Its etcd lease outlives the connection by up to the TTL: until then the
  // API refuses (409, "registered"), which the page shows; then it forgets.
  await eventually(async () => {
    if (!(await page.$(victim))) return true;
    await page.locator(`${victim} button`).click();
    await page.waitForTimeout(400);
    return !(await page.$(victim));
  }, "confirming Forget removes the row", 20000);
  check(dismissed >= 1, "Forget asked for confirmation");
  const listed = JSON.parse(execFileSync(ringlog, ["nodes", "--json", "--admin", env("CONSOLE_LEADER_ADMIN")]));
  check(listed.length === 2 && !listed.some((node) => String(node.id) === victimId),
    `ringlog nodes --json no longer lists node ${victimId}`);
  await page.waitForTimeout(2500);
  check((await rowTexts(page)).length === 2, "the forgotten node stays gone after a refresh");
  page.removeAllListeners("dialog");
}

async function createTopic(page, fields) {
  for (const [name, value] of Object.entries(fields)) await page.fill(`#create-topic [name="${name}"]`, String(value));
  await page.click('#create-topic button[type="submit"]');
}

async function topicsPage(page) {
  await page.goto(`${follower}/topics`);
  await createTopic(page, { name: "console-orders", partitions: 3, retention_ms: 600000, segment_bytes: 1048576 });
  const row = page.locator('#topics tr[data-topic="console-orders"]');
  await row.waitFor({ timeout: 10000 });
  await eventually(async () => (await row.locator("td").nth(1).textContent()) === "3",
    "a topic created from a follower's page is listed with its 3 partitions");
  const created = (await (await fetch(`${leader}/api/topics`)).json()).find((t) => t.name === "console-orders");
  check(created && created.segment_bytes === 1048576 && created.retention_ms === 600000,
    `the form's segment size and retention reached the topic: ${JSON.stringify(created)}`);
  await createTopic(page, { name: "console-orders", partitions: 1 });
  await eventually(async () => /409/.test(await page.textContent('[role="alert"]')), "creating it again shows 409");
  await createTopic(page, { name: "bad/name", partitions: 1 });
  await eventually(async () => /400/.test(await page.textContent('[role="alert"]')), "an invalid name shows 400");
  await page.screenshot({ path: `${screenshots}/topics.png`, fullPage: true });
  await page.goto(`${leader}/topics/console-orders`);
  await eventually(async () => (await page.$$("#partitions tbody tr")).length === 3, "the topic page lists 3 partitions");
  const header = await page.$$eval("#partitions thead th", (cells) => cells.map((cell) => cell.textContent.trim()));
  check(["Log start", "Log end", "High watermark", "Segments", "Bytes", "Leader epoch"].every((h) => header.includes(h)),
    "partition columns: log start, log end, high watermark, segments, bytes, leader epoch");
  await page.screenshot({ path: `${screenshots}/topic.png`, fullPage: true });
}

async function deleteFromPage(page) {
  await page.goto(`${leader}/topics`);
  const row = page.locator('#topics tr[data-topic="console-orders"]');
  await row.waitFor({ timeout: 10000 });
  page.once("dialog", (dialog) => dialog.accept());
  await row.locator("button", { hasText: "Delete" }).click();
  await row.waitFor({ state: "detached", timeout: 10000 });
  const listed = await (await fetch(`${leader}/api/topics`)).json();
  check(!listed.some((topic) => topic.name === "console-orders"), "Delete removed the topic (GET /api/topics)");
  await page.waitForTimeout(2500);
  check(!(await page.$('#topics tr[data-topic="console-orders"]')), "the deleted topic stays gone after a refresh");
}

// The produce chart moves while `ringlog bench produce` runs, and nothing
// on the page shifts while it refreshes.
// The topics table shows a live rate for console-bench in column `cell`.
async function topicRates(context, what, cell, unit) {
  const topics = await context.newPage();
  await topics.goto(`${leader}/topics`);
  const rate = topics.locator('#topics tr[data-topic="console-bench"] td').nth(cell);
  const text = await eventually(async () => {
    const shown = (await rate.textContent()).trim();
    return unit.test(shown) && parseFloat(shown) > 0 && shown;
  }, `the topics table shows console-bench's ${what} rate`, 20000);
  check(true, `${what} rate: ${text}`);
  await topics.close();
}

async function overviewChart(page) {
  await page.goto(`${leader}/`);
  await eventually(async () => (await page.textContent("#fact-role")) === "leader", "overview shows the role");
  check((await page.textContent("#fact-health")) === "ok", "overview shows health ok");
  const bench = spawn(ringlog, ["bench", "produce", "--topic", "console-bench", "--partitions", "2", "--producers", "2",
    "--record-bytes", "200", "--total-bytes", "2000000000", "--acks", "leader", "--server", env("CONSOLE_LEADER_CLIENT")],
  { stdio: "ignore" });
  try {
    const latest = await eventually(async () => {
      const value = Number(await page.getAttribute("#chart-produce-records", "data-latest"));
      return value > 0 && value;
    }, "the produce records/s chart shows a non-zero rate while bench produce runs", 30000);
    const caption = await page.textContent("#chart-produce-records figcaption");
    check(/^Produce: .* records\/s$/.test(caption), `the chart title carries the current value: ${caption}`);
    await eventually(async () => (await page.$$("#chart-produce-records polyline")).length === 1,
      "the chart draws a line through its samples", 10000);
    await page.waitForTimeout(4000);
    await page.screenshot({ path: `${screenshots}/overview.png`, fullPage: true });
    await topicRates(page.context(), "produce", 4, /records\/s$/);
  } finally {
    bench.kill("SIGKILL");
  }
  const consumer = spawn(ringlog, ["bench", "consume", "--topic", "console-bench", "--producers", "1",
    "--server", env("CONSOLE_LEADER_CLIENT")], { stdio: "ignore" });
  try {
    await topicRates(page.context(), "consume", 5, /B\/s$/);
  } finally {
    consumer.kill("SIGKILL");
  }
  const shift = await page.evaluate(() => window.__layoutShift);
  check(shift < 0.01, `no layout shift while refreshing (cumulative ${shift})`);
}

async function phoneAndKeyboard(browser) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: "dark", isMobile: true });
  const page = await context.newPage();
  await page.goto(`${leader}/nodes`);
  await eventually(async () => (await rowTexts(page)).length === 2, "the phone view lists the nodes");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 0, `no sideways scrolling of the page at phone width (overflow ${overflow}px)`);
  const cells = await page.$$eval("#nodes tbody td", (all) => all.map((cell) => cell.getBoundingClientRect().right));
  check(cells.every((right) => right <= 390), "every cell of the nodes table is on screen at phone width");
  const labels = await page.$$eval("#nodes tbody tr:first-child td", (all) => all.map((cell) => cell.dataset.label));
  check(labels.slice(0, 7).join() === "ID,Role,Address,Connected,In sync,Lag (records),Lag (bytes)",
    "each phone card names its values");
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(background === "rgb(21, 24, 27)", `dark colour scheme applies (${background})`);
  await page.screenshot({ path: `${screenshots}/nodes-phone-dark.png`, fullPage: true });
  await context.close();
  const desk = await browser.newPage();
  await desk.goto(`${leader}/topics`);
  const focused = [];
  for (let step = 0; step < 4; step += 1) {
    await desk.keyboard.press("Tab");
    focused.push(await desk.evaluate(() => document.activeElement.textContent.trim()));
  }
  check(focused.join("|") === "Skip to content|ringlog|Overview|Nodes", `keyboard order: ${focused.join(" → ")}`);
  await desk.close();
}

// Seen from a non-loopback address without admin_token the node answers
// mutations_allowed false (a Rust unit test covers that rule); here the
// page is handed that answer and must grey out every change and say why.
async function remoteViewer(browser) {
  const page = await browser.newPage();
  await page.route("**/api/overview", async (route) => {
    const response = await route.fetch();
    const overview = await response.json();
    overview.mutations_allowed = false;
    await route.fulfill({ response, json: overview });
  });
  await page.goto(`${leader}/topics`);
  await page.locator("#topics tbody tr").first().waitFor({ timeout: 10000 });
  await eventually(async () => /only from loopback/.test(await page.textContent("#mutations-note")),
    "a page that may not mutate says changes are allowed only from loopback");
  check(await page.isDisabled('#create-topic button[type="submit"]'), "its Create button is disabled");
  const deletes = await page.$$eval("#topics tbody button", (buttons) => buttons.map((b) => b.disabled));
  check(deletes.length > 0 && deletes.every(Boolean), "its Delete buttons are disabled");
  await page.close();
}

async function tokenFlow(browser) {
  const page = await browser.newPage();
  await page.goto(`${tokenNode}/topics`);
  await page.locator("#token-form").waitFor({ state: "visible", timeout: 10000 });
  check(true, "with admin_token set the page asks for the token");
  await page.fill("#token-input", "wrong-token");
  await page.click('#token-form button[type="submit"]');
  await createTopic(page, { name: "secured", partitions: 1 });
  await eventually(async () => /401.*missing or wrong bearer token/.test(await page.textContent('[role="alert"]')),
    "a wrong token is refused (401, in the API's words)");
  await page.locator("#token-form").waitFor({ state: "visible", timeout: 5000 });
  await page.fill("#token-input", env("CONSOLE_TOKEN"));
  await page.click('#token-form button[type="submit"]');
  await createTopic(page, { name: "secured", partitions: 1 });
  await page.locator('#topics tr[data-topic="secured"]').waitFor({ timeout: 10000 });
  check(true, "the right token is accepted: the topic is created");
  check(await page.evaluate(() => sessionStorage.getItem("ringlog-admin-token")) === env("CONSOLE_TOKEN"),
    "the token is kept in the tab's session storage");
  await page.screenshot({ path: `${screenshots}/token.png`, fullPage: true });
  await page.close();
}

// Run after the Rust side stopped etcd: the pages say what is wrong. Both
// pages are watched at once; the nodes notice within a few lease TTLs.
async function etcdDown(browser) {
  const nodes = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const overview = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await Promise.all([nodes.goto(`${follower}/nodes`), overview.goto(`${leader}/`)]);
  await Promise.all([
    eventually(async () => await nodes.isVisible("#banner") && /cannot reach etcd/.test(await nodes.textContent("#banner")),
      "a follower's nodes page says it cannot reach etcd", 120000),
    eventually(async () => (await overview.textContent("#fact-health")) !== "ok" && await overview.isVisible("#fact-reason"),
      "the former leader's overview shows its health is not ok, with the reason", 45000),
  ]);
  const health = await overview.textContent("#fact-health");
  const reason = await overview.textContent("#fact-reason");
  check(/^Reason: .+/.test(reason), `overview: health ${health}, ${reason}`);
  await eventually(async () => (await overview.textContent("#fact-role")) !== "leader" &&
    /on the leader only/.test(await overview.textContent("#chart-lag figcaption")),
  "a leader that stepped down no longer charts follower lag", 10000);
  await overview.screenshot({ path: `${screenshots}/overview-unhealthy.png`, fullPage: true });
  await nodes.close();
  await overview.close();
}

async function cluster(browser) {
  const hosts = new Set();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
  context.on("request", (request) => hosts.add(new URL(request.url()).host));
  await context.addInitScript(() => {
    window.__layoutShift = 0;
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__layoutShift += entry.value;
    }).observe({ type: "layout-shift", buffered: true });
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => { console.log(`page error: ${error.message}`); process.exitCode = 1; });
  await nodesPage(page);
  await refusedForget(page);
  await forgetKilledFollower(page);
  await topicsPage(page);
  await overviewChart(page);
  await deleteFromPage(page);
  const allowed = new Set([env("CONSOLE_LEADER_ADMIN"), env("CONSOLE_FOLLOWER_ADMIN"), env("CONSOLE_VICTIM_ADMIN")]);
  check([...hosts].every((host) => allowed.has(host)), `requests went only to the nodes: ${[...hosts].join(", ")}`);
  await context.close();
  await phoneAndKeyboard(browser);
  await remoteViewer(browser);
  await tokenFlow(browser);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const phase = process.env.CONSOLE_PHASE || "cluster";
try {
  await (phase === "etcd-down" ? etcdDown(browser) : cluster(browser));
} finally {
  await browser.close();
}
if (process.exitCode) throw new Error("the page raised an error");
console.log(`console browser test (${phase}): all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
