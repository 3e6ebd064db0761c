// Drives headless Chromium (Debian's `chromium`) over the DevTools protocol to check the
// status page as a browser renders it. Node 20's WebSocket (--experimental-websocket); no
// npm package. Prints one JSON line per step on stdout; the C++ test asserts on them.
//
//   node --experimental-websocket status_page.mjs --url http://127.0.0.1:P/ --out DIR
//        [--key KEY] [--wait-holder NAME]
//
// Steps: "loaded" (desktop, 1280 wide: DOM facts, screenshot DIR/status-desktop.png),
// "holder" (with --wait-holder: waits for the page's own refresh to show NAME as the GPU
// holder), "phone" (390 wide: horizontal overflow, DIR/status-phone.png), "requests" (every
// URL the page asked for). Exits non-zero on any failure (timeouts included).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
if (!args.url || !args.out) {
  console.error("usage: status_page.mjs --url URL --out DIR [--key KEY] [--wait-holder NAME]");
  process.exit(2);
}
const STEP_MS = 30000;
const emit = (step, data) => console.log(JSON.stringify({ step, ...data }));
// The timer is cleared when `p` settles (not unref'd: with nothing else pending, Node would
// exit 13 on an unsettled top-level await instead of reporting the timeout).
function withTimeout(p, ms, what) {
  let timer;
  const expired = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error("timed out: " + what)), ms); });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

const profile = mkdtempSync(join(tmpdir(), "imageworks-chromium-"));
const browser = spawn(process.env.CHROMIUM || "chromium", [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
  "--disable-extensions", "--disable-background-networking", "--disable-component-update",
  "--user-data-dir=" + profile, "--remote-debugging-port=0", "about:blank"], { stdio: ["ignore", "ignore", "pipe"] });

let cleaned = false;
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  try { browser.kill("SIGKILL"); } catch {}
  try { rmSync(profile, { recursive: true, force: true }); } catch {}
}
process.on("exit", cleanup);

// The browser prints its DevTools endpoint on stderr.
const endpoint = await withTimeout(new Promise((resolve, reject) => {
  let err = "";
  browser.stderr.on("data", (d) => {
    err += d;
    const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
    if (m) resolve(m[1]);
  });
  browser.on("exit", (code) => reject(new Error("chromium exited (" + code + "): " + err.slice(-2000))));
  browser.on("error", reject);
}), STEP_MS, "chromium's DevTools endpoint");

const ws = new WebSocket(endpoint);
await withTimeout(new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error("websocket")); }), STEP_MS, "websocket");
let nextId = 1;
const pending = new Map(), listeners = [];
ws.onmessage = (ev) => {
  const msg = JSON.parse(ev.data);
  if (msg.id && pending.has(msg.id)) {
    const { resolve, reject } = pending.get(msg.id);
    pending.delete(msg.id);
    msg.error ? reject(new Error(JSON.stringify(msg.error))) : resolve(msg.result);
  } else if (msg.method) {
    for (const l of listeners) l(msg);
  }
};
let session;
const send = (method, params = {}, sid = session) => withTimeout(new Promise((resolve, reject) => {
  const id = nextId++;
  pending.set(id, { resolve, reject });
  ws.send(JSON.stringify({ id, method, params, ...(sid ? { sessionId: sid } : {}) }));
}), STEP_MS, method);
const once = (method) => new Promise((resolve) => {
  const l = (m) => { if (m.method === method && m.sessionId === session) { listeners.splice(listeners.indexOf(l), 1); resolve(m.params); } };
  listeners.push(l);
});
// Evaluates an expression in the page; a promise is awaited; the value comes back as JSON.
async function evaluate(expression) {
  const r = await send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
  if (r.exceptionDetails) throw new Error("page script failed: " + JSON.stringify(r.exceptionDetails));
  return r.result.value;
}
// Resolves when `cond` (an expression) is true, re-checked on every DOM mutation: no polling.
const waitFor = (cond, what) => withTimeout(evaluate(`new Promise((resolve) => {
  const ok = () => { try { return !!(${cond}); } catch { return false; } };
  if (ok()) return resolve(true);
  const mo = new MutationObserver(() => { if (ok()) { mo.disconnect(); resolve(true); } });
  mo.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
})`), STEP_MS, what);

const facts = `(() => {
  const $ = (id) => document.getElementById(id);
  const t = (id) => $(id) ? $(id).textContent.trim() : null;
  return {
    title: document.title,
    loaded: document.body.dataset.loaded,
    holder: t("holder-name"), holder_id: t("holder-id"), holder_state: t("holder-state"),
    holder_backend: t("holder-backend"), holder_pid: t("holder-pid"), holder_port: t("holder-port"),
    holder_since: t("holder-since"), version: t("version"), uptime: t("uptime"), conn: t("conn"),
    key_box_visible: !$("key-box").hidden,
    models: [...document.querySelectorAll("#models tr")].map((tr) => ({
      id: tr.dataset.id, logical_name: tr.dataset.logicalName, active: tr.classList.contains("active"),
      cells: [...tr.cells].map((c) => c.textContent) })),
    switches: [...document.querySelectorAll("#switches tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    queue: [...document.querySelectorAll("#queue tr")].map((tr) => [...tr.cells].map((c) => c.textContent)),
    metrics_off_visible: !$("metrics-off").hidden,
    requests: t("requests"), rps: t("rps"), p50: t("p50"), p95: t("p95"), errors: t("errors"),
    registry_models: t("reg-models"), registry_error: t("reg-error"), registry_loaded: t("reg-loaded"),
    scroll_width: document.documentElement.scrollWidth, viewport_width: window.innerWidth,
  };
})()`;

async function screenshot(file) {
  const m = await send("Page.getLayoutMetrics");
  const size = m.cssContentSize || m.contentSize;
  const shot = await send("Page.captureScreenshot", {
    format: "png", captureBeyondViewport: true,
    clip: { x: 0, y: 0, width: size.width, height: size.height, scale: 1 } });
  writeFileSync(file, Buffer.from(shot.data, "base64"));
}

try {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" }, null);
  ({ sessionId: session } = await send("Target.attachToTarget", { targetId, flatten: true }, null));
  const requested = [];
  listeners.push((m) => { if (m.method === "Network.requestWillBeSent" && m.sessionId === session) requested.push(m.params.request.url); });
  const consoleErrors = [];
  listeners.push((m) => {
    if (m.sessionId !== session) return;
    if (m.method === "Runtime.exceptionThrown") consoleErrors.push(m.params.exceptionDetails.text + " " + JSON.stringify(m.params.exceptionDetails.exception || {}));
    if (m.method === "Log.entryAdded" && m.params.entry.level === "error" && !/status of 401/.test(m.params.entry.text)) consoleErrors.push(m.params.entry.text);
  });
  await send("Network.enable");
  await send("Runtime.enable");
  await send("Log.enable");
  await send("Page.enable");
  await send("Emulation.setDeviceMetricsOverride", { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
  const loadEvent = once("Page.loadEventFired");
  await send("Page.navigate", { url: args.url });
  await withTimeout(loadEvent, STEP_MS, "the page's load event");
  await waitFor(`document.body.dataset.loaded === "1" || !document.getElementById("key-box").hidden`, "first render or key prompt");

  if (args.key !== undefined) {
    const before = await evaluate(facts);
    emit("key_prompt", { key_box_visible: before.key_box_visible, loaded: before.loaded, conn: before.conn });
    await evaluate(`(() => { document.getElementById("key-input").value = ${JSON.stringify(args.key)};
      document.getElementById("key-form").requestSubmit(); return true; })()`);
    await waitFor(`document.body.dataset.loaded === "1"`, "render after the key");
  }
  await screenshot(join(args.out, "status-desktop.png"));
  emit("loaded", await evaluate(facts));

  if (args["wait-holder"]) {
    await waitFor(`document.body.dataset.holder === ${JSON.stringify(args["wait-holder"])} &&
      document.getElementById("holder-state").textContent === "ready"`, "the page to show the new holder");
    await screenshot(join(args.out, "status-switched.png"));
    emit("holder", await evaluate(facts));
  }

  await send("Emulation.setDeviceMetricsOverride", { width: 390, height: 844, deviceScaleFactor: 2, mobile: true });
  await waitFor(`window.innerWidth === 390`, "the phone viewport");
  await screenshot(join(args.out, "status-phone.png"));
  emit("phone", await evaluate(facts));
  emit("requests", { urls: requested, console_errors: consoleErrors });
  cleanup();  // kills the browser: its answer to a Browser.close might never come
  process.exit(0);
} catch (e) {
  console.error(String(e && e.stack || e));
  cleanup();
  process.exit(1);
}
