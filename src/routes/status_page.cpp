// GET /: the operator's status page (§14). One self-contained HTML document: inline CSS and
// JS, nothing from another host (the Content-Security-Policy forbids it too), so it works on
// an offline workstation. It polls /v1/status every 5 s while visible (a hidden tab stops
// polling: light enough to leave open all day), builds the DOM with textContent only (model
// names come from files, never markup), and asks for an API key when /v1/status answers
// 401, keeping it in sessionStorage and sending it as a bearer token.
#include "routes/routes.hpp"

namespace imageworks::routes {

namespace {

constexpr std::string_view kPage = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>imageworks-chat-proxy</title>
<link rel="icon" href="data:,">
<style>
:root{--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--ok:#12805c;--warn:#b54708;--bad:#c0262d;--accent:#2d5bd3}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1a1f26;--fg:#e6e9ee;--muted:#98a2b3;--line:#2b323c;--ok:#3ccb8f;--warn:#f5a524;--bad:#f2555a;--accent:#7aa2ff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:baseline;padding:.8rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header h1{font-size:1.05rem;margin:0}
header .meta{color:var(--muted);font-size:.85rem}
#conn{margin-left:auto;font-size:.85rem}
#conn::before{content:"";display:inline-block;width:.6rem;height:.6rem;border-radius:50%;margin-right:.35rem;background:var(--muted);vertical-align:middle}
#conn.ok::before{background:var(--ok)}#conn.degraded::before{background:var(--warn)}#conn.down::before{background:var(--bad)}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,330px),1fr));gap:1rem;padding:1rem;max-width:1280px;margin:0 auto}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:.9rem 1rem;min-width:0}
section.wide{grid-column:1/-1}
h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:0 0 .6rem}
.big{font-size:1.6rem;font-weight:650;word-break:break-word}
.sub{color:var(--muted);word-break:break-word}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .9rem;margin:.7rem 0 0}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;font-weight:600;border:1px solid currentColor}
.s-ready,.r-ok{color:var(--ok)}.s-starting,.s-stopping,.s-switching{color:var(--warn)}.s-none{color:var(--muted)}.r-bad{color:var(--bad)}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(95px,1fr));gap:.6rem}
.stat b{display:block;font-size:1.25rem}.stat span{color:var(--muted);font-size:.8rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:600;font-size:.8rem}
td.name{white-space:normal;word-break:break-word}
tr.active td{font-weight:650}
tr.active td:first-child::before{content:"\25CF ";color:var(--ok)}
.empty{color:var(--muted);font-style:italic}
.error{color:var(--bad);white-space:pre-wrap;word-break:break-word}
form{display:flex;gap:.5rem;flex-wrap:wrap}
input{flex:1;min-width:12rem;padding:.45rem .6rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
button{padding:.45rem .9rem;border:0;border-radius:6px;background:var(--accent);color:#fff;font-weight:600}
[hidden]{display:none!important}
@media (max-width:640px){main{padding:.6rem;gap:.6rem}th,td{white-space:normal}td.name{min-width:8.5rem}.opt{display:none}.big{font-size:1.3rem}}
</style>
</head>
<body data-loaded="0">
<header>
  <h1>imageworks-chat-proxy</h1>
  <span class="meta">version <span id="version">–</span> · up <span id="uptime">–</span></span>
  <span id="conn">connecting…</span>
</header>
<main>
  <section id="key-box" class="wide" hidden>
    <h2>API key</h2>
    <p id="key-msg">This proxy needs an API key to show its status.</p>
    <form id="key-form"><input id="key-input" type="password" autocomplete="current-password" placeholder="Bearer key" aria-label="API key"><button type="submit">Show status</button></form>
  </section>
  <section id="gpu">
    <h2>GPU holder</h2>
    <div class="big" id="holder-name">–</div>
    <div class="sub" id="holder-id"></div>
    <dl>
      <dt>State</dt><dd><span class="badge s-none" id="holder-state">–</span> <span id="switching"></span></dd>
      <dt>Backend</dt><dd id="holder-backend">–</dd>
      <dt>Since</dt><dd id="holder-since">–</dd>
      <dt>PID</dt><dd id="holder-pid">–</dd>
      <dt>Port</dt><dd id="holder-port">–</dd>
      <dt>Running</dt><dd><span id="in-flight">0</span> request(s) on it</dd>
    </dl>
  </section>
  <section id="traffic">
    <h2>Traffic <span id="window"></span></h2>
    <div class="stats" id="stats">
      <div class="stat"><b id="rps">–</b><span>req/s</span></div>
      <div class="stat"><b id="requests">–</b><span>requests</span></div>
      <div class="stat"><b id="errors">–</b><span>errors</span></div>
      <div class="stat"><b id="p50">–</b><span>latency p50</span></div>
      <div class="stat"><b id="p95">–</b><span>latency p95</span></div>
      <div class="stat"><b id="ttft">–</b><span>first token p50</span></div>
      <div class="stat"><b id="streams">–</b><span>streams now</span></div>
    </div>
    <p id="errors-by-code" class="sub"></p>
    <p id="metrics-off" class="empty" hidden>Metrics are off: start the proxy with CHAT_PROXY_ENABLE_METRICS=1 to see request rate, latency and errors here.</p>
  </section>
  <section id="waiting">
    <h2>Waiting for a switch</h2>
    <div class="scroll"><table><thead><tr><th>Model</th><th>Waiting</th></tr></thead><tbody id="queue"></tbody></table></div>
    <p id="queue-empty" class="empty">No request is waiting.</p>
  </section>
  <section id="history" class="wide">
    <h2>Last switches <span id="switches-total"></span></h2>
    <div class="scroll"><table><thead><tr><th>From → to</th><th>Took</th><th>When</th><th>Result</th></tr></thead><tbody id="switches"></tbody></table></div>
    <p id="switches-empty" class="empty">No switch yet.</p>
  </section>
  <section id="models-box" class="wide">
    <h2>Models (<span id="models-count">0</span>)</h2>
    <div class="scroll"><table><thead><tr><th>Model</th><th>Backend</th><th>GPU</th><th class="opt">Installed</th><th>Requests</th><th class="opt">p50</th></tr></thead><tbody id="models"></tbody></table></div>
    <p id="models-empty" class="empty" hidden>No model is listed: check the registry below.</p>
  </section>
  <section id="registry" class="wide">
    <h2>Registry</h2>
    <dl>
      <dt>Models listed</dt><dd id="reg-models">–</dd>
      <dt>Entries</dt><dd id="reg-entries">–</dd>
      <dt>Directory</dt><dd id="reg-dir">–</dd>
      <dt>Loaded at</dt><dd id="reg-loaded">–</dd>
      <dt>Last error</dt><dd id="reg-error">none</dd>
    </dl>
  </section>
</main>
<script>
"use strict";
(function () {
  const EVERY_MS = 5000, KEY = "imageworks-chat-proxy-key";
  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem(KEY) || "", timer = 0, busy = false;

  const text = (id, v) => { $(id).textContent = v === null || v === undefined || v === "" ? "–" : String(v); };
  function cell(v, cls) { const td = document.createElement("td"); td.textContent = v === null || v === undefined ? "–" : String(v); if (cls) td.className = cls; return td; }
  function row(cells, cls) { const tr = document.createElement("tr"); if (cls) tr.className = cls; tr.append(...cells); return tr; }
  function dur(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (d) return d + " d " + (h % 24) + " h";
    if (h) return h + " h " + (m % 60) + " min";
    return m + " min" + (Math.floor(s % 60) ? " " + Math.floor(s % 60) + " s" : "");
  }
  const ms = (v) => v === null || v === undefined ? "–" : v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(2) + " s";
  function ago(iso, now) {
    if (!iso) return "–";
    const t = Date.parse(iso), n = Date.parse(now);
    if (isNaN(t)) return iso;
    const age = Math.max(0, (n - t) / 1000), d = new Date(t);
    return dur(age) + " ago (" + (age < 86400 ? d.toLocaleTimeString() : d.toLocaleString()) + ")";
  }

  function renderGpu(g, now) {
    const h = g && g.holder;
    text("holder-name", h ? (h.logical_name || "Ollama") : "nothing");
    $("holder-id").textContent = h && h.listed_id ? h.listed_id : (h ? "" : "The GPU is free.");
    const state = h ? h.state : "none";
    const badge = $("holder-state");
    badge.textContent = h ? state : "idle";
    badge.className = "badge s-" + state;
    $("switching").textContent = g && g.switching ? "switching to " + g.switching + "…" : "";
    text("holder-backend", h && h.backend);
    $("holder-since").textContent = h ? ago(h.since, now) : "–";
    text("holder-pid", h && h.pid);
    text("holder-port", h && h.port);
    $("in-flight").textContent = g ? g.in_flight : 0;
    document.body.dataset.holder = h ? (h.logical_name || "") : "";

    const q = (g && g.queue) || [];
    $("queue").replaceChildren(...q.map((r) => row([cell(r.listed_id || r.model, "name"), cell(dur(r.waited_s))])));
    $("queue-empty").hidden = q.length > 0;

    const sw = (g && g.last_switches) || [];
    $("switches").replaceChildren(...sw.map((r) => row([
      cell(r.from + " → " + r.to, "name"), cell(ms(r.duration_ms)), cell(ago(r.at, now)),
      cell(r.result, r.result === "ok" ? "r-ok" : "r-bad name")])));
    $("switches-empty").hidden = sw.length > 0;
    $("switches-total").textContent = g ? "(" + g.switches_total + " since start)" : "";
  }

  function renderTraffic(m) {
    $("metrics-off").hidden = !!m;
    $("stats").hidden = !m;
    if (!m) { $("window").textContent = ""; $("errors-by-code").textContent = ""; return; }
    $("window").textContent = "(last " + dur(m.window_s) + ")";
    text("rps", m.requests_per_s.toFixed(m.requests_per_s < 10 ? 2 : 0));
    text("requests", m.requests);
    text("errors", m.errors + (m.requests ? " (" + (100 * m.error_rate).toFixed(1) + " %)" : ""));
    text("p50", ms(m.latency_ms.p50));
    text("p95", ms(m.latency_ms.p95));
    text("ttft", ms(m.ttft_ms.p50));
    text("streams", m.active_streams);
    const codes = Object.entries(m.errors_by_code || {}).map(([c, n]) => c + " " + n);
    $("errors-by-code").textContent = codes.length ? "Errors by code: " + codes.join(", ") : "";
  }

  function renderModels(models, m) {
    const per = (m && m.models) || {};
    $("models").replaceChildren(...models.map((x) => {
      const t = per[x.id];
      const tr = row([cell(x.id, "name"), cell(x.backend), cell(x.active ? "holds it" : x.gpu_managed ? "switched in on demand" : "not managed"),
        cell(x.installed ? "yes" : "no", "opt"), cell(t ? t.requests : 0), cell(t ? ms(t.latency_ms.p50) : "–", "opt")], x.active ? "active" : "");
      tr.dataset.id = x.id;
      tr.dataset.logicalName = x.logical_name;
      return tr;
    }));
    $("models-count").textContent = models.length;
    $("models-empty").hidden = models.length > 0;
  }

  function renderRegistry(r) {
    text("reg-models", r.models);
    text("reg-entries", r.entries);
    text("reg-dir", r.dir);
    text("reg-loaded", r.loaded_at ? new Date(Date.parse(r.loaded_at)).toLocaleString() + " (" + r.loaded_at + ")" : null);
    const e = $("reg-error");
    e.textContent = r.error || "none";
    e.className = r.error ? "error" : "";
  }

  function render(s) {
    text("version", s.version);
    text("uptime", dur(s.uptime_s));
    renderGpu(s.gpu, s.now);
    renderTraffic(s.metrics);
    renderModels(s.models || [], s.metrics);
    renderRegistry(s.registry);
    conn(s.status === "ok" ? "ok" : "degraded", s.status === "ok" ? "updated " + new Date().toLocaleTimeString() : "registry degraded · updated " + new Date().toLocaleTimeString());
    document.body.dataset.loaded = "1";
  }

  function conn(cls, msg) { const c = $("conn"); c.className = cls; c.textContent = msg; }

  function askKey(msg) {
    $("key-box").hidden = false;
    $("key-msg").textContent = msg;
    $("key-input").focus();
  }

  async function refresh() {
    clearTimeout(timer);
    if (busy) return;
    busy = true;
    const ctl = new AbortController(), abort = setTimeout(() => ctl.abort(), 4000);
    let again = true;
    try {
      const headers = key ? { Authorization: "Bearer " + key } : {};
      const r = await fetch("v1/status", { headers, cache: "no-store", signal: ctl.signal });
      if (r.status === 401) {
        again = false;
        askKey(key ? "That key was refused: enter another." : "This proxy needs an API key to show its status.");
        conn("down", "API key needed");
      } else if (!r.ok) {
        conn("down", "status answered HTTP " + r.status);
      } else {
        $("key-box").hidden = true;
        render(await r.json());
      }
    } catch (e) {
      conn("down", "proxy unreachable (" + (e.name === "AbortError" ? "timeout" : e.message) + ")");
    } finally {
      clearTimeout(abort);
      busy = false;
      if (again && !document.hidden) timer = setTimeout(refresh, EVERY_MS);
    }
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    refresh();
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); else clearTimeout(timer); });
  refresh();
})();
</script>
</body>
</html>
)html";

}  // namespace

std::string_view status_page_html() { return kPage; }

Task<void> status_page(App& app, Exchange& ex) {
  // The browser enforces "nothing from another host": only this origin's /v1/status.
  ex.add_header("Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'");
  ex.add_header("X-Content-Type-Options", "nosniff");
  ex.add_header("Cache-Control", "no-cache");
  co_await ex.send(http::status::ok, std::string(kPage), "text/html; charset=utf-8");
}

}  // namespace imageworks::routes
