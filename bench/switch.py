#!/usr/bin/env python3
"""Switch benchmark (issue 8): what the proxy adds to a model switch, and how long a request
for another model waits under steady traffic.

The proxy runs two managed vLLM entries whose command is the fake vLLM executable (real
child processes, a fixed load time). Measured, on loopback:

1. cold switch overhead: a streaming request for the model that is not running, time to its
   first content byte, minus what the fake itself spends (stopping the old server: SIGTERM to
   exit, starting the new one: exec to healthy, both from the fakes' own event timestamps).
   The rest is the proxy: the switch decision, the Ollama check, spawning, health polling,
   the relay. Target: p50 <= 50 ms.
2. queued wait under steady traffic: 4 clients loop streams of known length on model A; a
   request for B arrives; its wait is compared with the bound of SPEC §5 (the streams running
   when it arrived + one switch).

Usage: bench/switch.py --proxy BIN --fake-vllm BIN [--switches N] [--trials N]
Prints a Markdown table. Loopback only; every loop is bounded.
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, threading, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stream_ttfb(port, model, timeout=60.0):
    """POST a streaming chat; returns (seconds to the first reply chunk, total seconds)."""
    body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(req)
    buf, first, scanned = b"", None, 0
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        while first is None:  # the first data event (the role chunk: the backend's first byte)
            start = buf.find(b"data: {", scanned)
            end = buf.find(b"\n", start) if start >= 0 else -1
            if end < 0:
                break
            scanned = end
            try:
                event = json.loads(buf[start + 6:end])
            except ValueError:
                continue  # a chunk-size line split the event: good enough to skip it
            if event.get("choices"):
                first = time.perf_counter() - t0
        if b"data: [DONE]" in buf:
            break
    s.close()
    if b" 200 " not in buf[:20] or b"data: [DONE]" not in buf or b'"error"' in buf:
        raise RuntimeError(f"bad stream for {model}: {buf[:300]!r}")
    return first, time.perf_counter() - t0


def events(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def start_proxy(proxy_bin, env):
    p = subprocess.Popen([proxy_bin, "serve", "--port", "0"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if "listening on" not in line:
        p.kill()
        raise RuntimeError("proxy did not start: " + line)
    return p, int(line.strip().rsplit(":", 1)[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--fake-vllm", required=True)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--load-ms", type=int, default=300)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="iwcp-switch-")
    ev_path = os.path.join(tmp, "events.jsonl")
    stream_chunks, chunk_ms = 10, 50  # an A stream lasts ~0.5 s
    entries = []
    for name in ("a", "b"):
        entries.append({"name": name, "backend": "vllm", "served_model_id": "served-" + name,
                        "backend_config": {"model_path": "/models/" + name, "extra_args": [
                            "--fake-events", ev_path, "--fake-load-ms", str(a.load_ms), "--fake-stop-delay-ms", "0",
                            "--fake-chunks", str(stream_chunks), "--fake-chunk-delay-ms", str(chunk_ms),
                            "--fake-max-lifetime-s", "600"]}})
    os.makedirs(os.path.join(tmp, "reg"))
    with open(os.path.join(tmp, "reg", "model_registry.json"), "w") as f:
        json.dump(entries, f)
    env = dict(os.environ, CHAT_PROXY_REGISTRY_DIR=os.path.join(tmp, "reg"), CHAT_PROXY_REQUIRE_TEMPLATE="0",
               CHAT_PROXY_VLLM_COMMAND=a.fake_vllm, CHAT_PROXY_VLLM_PORT=str(free_port()),
               CHAT_PROXY_VLLM_STATE_PATH=os.path.join(tmp, "_staging", "active.json"),
               CHAT_PROXY_OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}", CHAT_PROXY_LOG_LEVEL="warn",
               CHAT_PROXY_THREADS="1")
    proxy, port = start_proxy(a.proxy, env)
    try:
        # 1. cold switches, alternating a/b
        overheads, ttfbs, loads, stops = [], [], [], []
        stream_ttfb(port, "a")
        for i in range(a.switches):
            model = "b" if i % 2 == 0 else "a"
            before = len(events(ev_path))
            ttfb, _ = stream_ttfb(port, model)
            new = events(ev_path)[before:]
            started = next(e for e in new if e["event"] == "started")
            healthy = next(e for e in new if e["event"] == "healthy")
            sigterm = next(e for e in new if e["event"] == "sigterm")
            exited = next(e for e in new if e["event"] == "exit")
            load = (healthy["t_ms"] - started["t_ms"]) / 1000
            stop = (exited["t_ms"] - sigterm["t_ms"]) / 1000
            # The fake sends its first chunk (the role) as soon as it is asked.
            overheads.append(ttfb - load - stop)
            ttfbs.append(ttfb)
            loads.append(load)
            stops.append(stop)

        # 2. a request for b under steady traffic on a
        waits, bounds = [], []
        for _ in range(a.trials):
            stream_ttfb(port, "a")
            stop_flag = threading.Event()
            def loop():
                for _ in range(400):
                    if stop_flag.is_set():
                        return
                    stream_ttfb(port, "a")
            threads = [threading.Thread(target=loop) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.3)  # the loops are streaming
            t0 = time.perf_counter()
            ttfb_b, _ = stream_ttfb(port, "b")
            waits.append(ttfb_b)
            stop_flag.set()
            for t in threads:
                t.join()
            stream_len = stream_chunks * chunk_ms / 1000
            bounds.append(stream_len + a.load_ms / 1000 + 0.1)  # running streams + one switch (+ fake stop)
    finally:
        proxy.terminate()
        proxy.wait(timeout=60)
        for e in events(ev_path):
            for key in ("pid", "worker_pid"):
                if key in e:
                    try:
                        os.kill(e[key], 9)
                    except OSError:
                        pass

    ms = lambda x: f"{x * 1000:.1f}"
    print("| measure | p50 | p95 | max | n | target |")
    print("|---|--:|--:|--:|--:|---|")
    print(f"| cold switch: time to first byte | {ms(pct(ttfbs,50))} ms | {ms(pct(ttfbs,95))} ms | {ms(max(ttfbs))} ms | {len(ttfbs)} | |")
    print(f"| — fake vLLM load (exec → healthy) | {ms(pct(loads,50))} ms | {ms(pct(loads,95))} ms | {ms(max(loads))} ms | {len(loads)} | |")
    print(f"| — fake vLLM stop (SIGTERM → exit) | {ms(pct(stops,50))} ms | {ms(pct(stops,95))} ms | {ms(max(stops))} ms | {len(stops)} | |")
    verdict = "met" if pct(overheads, 50) <= 0.050 else "NOT met"
    print(f"| **proxy overhead of a switch** | **{ms(pct(overheads,50))} ms** | {ms(pct(overheads,95))} ms | {ms(max(overheads))} ms | {len(overheads)} | p50 ≤ 50 ms: {verdict} |")
    verdict = "met" if max(w - b for w, b in zip(waits, bounds)) <= 0 else "NOT met"
    print(f"| B's wait under steady A traffic (4 looping clients, 0.5 s streams) | {ms(pct(waits,50))} ms | {ms(pct(waits,95))} ms | {ms(max(waits))} ms | {len(waits)} | ≤ running streams + one switch ({ms(bounds[0])} ms): {verdict} |")


if __name__ == "__main__":
    sys.exit(main())
