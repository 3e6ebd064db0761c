#!/usr/bin/env python3
"""What the compose files must say (SPEC §13), read from `docker-compose config` output.

check_compose.py STACK_YML WEBUI_YML BOTH_YML WEIGHTS_DIR
  STACK_YML  docker-compose.chat-proxy.yml resolved (IMAGEWORKS_MODELS_DIR=WEIGHTS_DIR)
  WEBUI_YML  docker-compose.openwebui.yml resolved (same)
  BOTH_YML   the two files together (the stack's settings must win for chat-proxy)
Prints one line per failed expectation; exits 1 if there is any.
"""
import sys
from urllib.parse import urlparse

import yaml

failures = []


def expect(cond, what):
    if not cond:
        failures.append(what)


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)["services"]


def env(svc):
    e = svc.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) if "=" in item else (item, None) for item in e)
    return {k: ("" if v is None else str(v)) for k, v in e.items()}


def published(svc):
    """container port -> host address:port strings, from the resolved short syntax."""
    out = {}
    for p in svc.get("ports") or []:
        spec = p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p['published']}:{p['target']}"
        spec = spec.split("/")[0]
        parts = spec.split(":")
        out[int(parts[-1])] = ":".join(parts[:-1])
    return out


def mounts(svc):
    """container path -> (source, mode)"""
    out = {}
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out[v["target"]] = (v.get("source"), "ro" if v.get("read_only") else "rw")
        else:
            parts = v.split(":")
            out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return out


def gpu(svc):
    devs = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devs)


def healthcheck(svc):
    return " ".join(str(x) for x in (svc.get("healthcheck") or {}).get("test") or [])


def seconds(text):
    text = str(text or "0s")
    total, num = 0, ""
    for ch in text:
        if ch.isdigit():
            num += ch
        else:
            total += int(num or 0) * {"s": 1, "m": 60, "h": 3600}.get(ch, 0)
            num = ""
    return total + int(num or 0)


def check_proxy(name, svc, weights):
    e = env(svc)
    build = svc.get("build") or {}
    expect(build.get("dockerfile") == "Dockerfile.chat-proxy" and build.get("target") == "chat-proxy",
           f"{name}: chat-proxy is not built from Dockerfile.chat-proxy, target chat-proxy")
    expect(svc.get("container_name") == "imageworks-chat-proxy", f"{name}: container_name is not imageworks-chat-proxy")
    port = int(e.get("CHAT_PROXY_PORT", "8100"))
    expect(port == 8100, f"{name}: the proxy does not listen on 8100")
    expect(e.get("CHAT_PROXY_HOST") == "0.0.0.0", f"{name}: CHAT_PROXY_HOST is not 0.0.0.0 (other containers could not reach it)")
    expect(8100 in published(svc), f"{name}: port 8100 is not published")
    expect(f"http://127.0.0.1:{port}/v1/health" in healthcheck(svc), f"{name}: the healthcheck is not /v1/health on {port}")
    m = mounts(svc)
    expect(m.get(weights) == (weights, "ro"), f"{name}: the weights are not mounted read-only at the same path ({m.get(weights)})")
    reg = e.get("CHAT_PROXY_REGISTRY_DIR", "")
    expect(reg in m and m[reg][1] == "ro", f"{name}: the registry directory {reg!r} is not mounted read-only")
    expect((m.get(reg, ("", ""))[0] or "").endswith("/configs"), f"{name}: the registry is not ./configs by default")
    tpl = e.get("CHAT_PROXY_TEMPLATE_DIR", reg + "/chat_templates")
    expect(tpl in m or tpl.startswith(reg + "/"), f"{name}: the chat templates {tpl!r} are not mounted")
    log_dir = e.get("CHAT_PROXY_LOG_PATH", "").rsplit("/", 1)[0]
    state_dir = e.get("CHAT_PROXY_VLLM_STATE_PATH", "").rsplit("/", 1)[0]
    for what, d in (("logs", log_dir), ("_staging", state_dir)):
        expect(d in m and m[d][1] == "rw" and not m[d][0].startswith("/"),
               f"{name}: {what} ({d!r}) is not a writable named volume")
    expect(seconds(svc.get("stop_grace_period")) >= 60, f"{name}: stop_grace_period below 60 s (drain + GPU release)")
    return e


def main():
    stack_path, webui_path, both_path, weights = sys.argv[1:5]
    stack, webui, both = load(stack_path), load(webui_path), load(both_path)

    # docker-compose.chat-proxy.yml
    expect(set(stack) >= {"chat-proxy", "imageworks-ollama", "vllm-executor"}, f"stack services: {sorted(stack)}")
    proxy = stack.get("chat-proxy", {})
    ollama = stack.get("imageworks-ollama", {})
    vllm = stack.get("vllm-executor", {})
    e = check_proxy("stack", proxy, weights)
    expect(e.get("CHAT_PROXY_ENABLE_METRICS") == "1", "stack: CHAT_PROXY_ENABLE_METRICS is not 1")
    deps = proxy.get("depends_on") or {}
    for dep in ("imageworks-ollama", "vllm-executor"):
        expect(isinstance(deps, dict) and (deps.get(dep) or {}).get("condition") == "service_healthy",
               f"stack: chat-proxy does not wait for {dep} to be healthy")

    expect(str(ollama.get("image", "")).startswith("ollama/ollama"), "stack: imageworks-ollama is not ollama/ollama")
    expect(ollama.get("container_name") == "imageworks-ollama", "stack: ollama container_name")
    expect(11434 in published(ollama), "stack: ollama port 11434 is not published")
    expect(gpu(ollama), "stack: ollama has no nvidia GPU reservation")
    expect(mounts(ollama).get("/root/.ollama", ("", ""))[0].endswith("/ollama-data"), "stack: ./ollama-data is not /root/.ollama")
    hc = healthcheck(ollama)
    expect(hc and "curl" not in hc, "stack: ollama needs a healthcheck without curl (the image has none)")
    url = urlparse(e.get("CHAT_PROXY_OLLAMA_BASE_URL", ""))
    expect(url.hostname == ollama.get("container_name") and url.port == 11434,
           f"stack: CHAT_PROXY_OLLAMA_BASE_URL {url.geturl()!r} is not the ollama container")

    ve = env(vllm)
    expect(vllm.get("container_name") == "imageworks-vllm", "stack: the executor's container_name is not imageworks-vllm")
    expect((vllm.get("build") or {}).get("target") == "vllm-executor", "stack: the executor is not the vllm-executor image")
    # The image's ENTRYPOINT is the binary: the command is its arguments.
    expect(vllm.get("command") == ["vllm-executor"] and "entrypoint" not in vllm,
           f"stack: the executor's command {vllm.get('command')!r} does not run `imageworks-chat-proxy vllm-executor`")
    vport = int(ve.get("CHAT_PROXY_PORT", "0"))
    expect(vport == 8600 and 8600 in published(vllm), "stack: the executor does not listen on / publish 8600")
    expect(ve.get("CHAT_PROXY_HOST") == "0.0.0.0", "stack: the executor listens on loopback only")
    expect(f"http://127.0.0.1:{vport}/health" in healthcheck(vllm), "stack: the executor's healthcheck is not its /health")
    expect(gpu(vllm), "stack: the executor has no nvidia GPU reservation")
    expect(ve.get("CHAT_PROXY_VLLM_COMMAND", "").startswith("/opt/vllm/"), "stack: the executor's vLLM is not the image's venv")
    vm = mounts(vllm)
    expect(vm.get(weights) == (weights, "ro"), "stack: the executor does not see the weights read-only at the same path")
    expect(ve.get("CHAT_PROXY_REGISTRY_DIR") in vm, "stack: the executor has no registry")
    state_dir = ve.get("CHAT_PROXY_VLLM_STATE_PATH", "").rsplit("/", 1)[0]
    expect(state_dir in vm and vm[state_dir][1] == "rw", "stack: the executor's state directory is not writable")
    expect(seconds(vllm.get("stop_grace_period")) >= 30, "stack: the executor's stop_grace_period is below vLLM's stop grace")
    url = urlparse(e.get("CHAT_PROXY_VLLM_REMOTE_URL", ""))
    expect(url.hostname == vllm.get("container_name") and url.port == vport,
           f"stack: CHAT_PROXY_VLLM_REMOTE_URL {url.geturl()!r} is not the executor")

    # docker-compose.openwebui.yml
    expect(set(webui) >= {"chat-proxy", "openwebui"}, f"openwebui services: {sorted(webui)}")
    check_proxy("openwebui", webui.get("chat-proxy", {}), weights)
    ui = webui.get("openwebui", {})
    expect(str(ui.get("image", "")).startswith("ghcr.io/open-webui/open-webui"), "openwebui: not the open-webui image")
    ue = env(ui)
    want = {"OPENAI_API_BASE_URL": "http://chat-proxy:8100/v1", "OPENAI_API_KEY": "EMPTY",
            "ENABLE_OLLAMA_API": "false", "OLLAMA_BASE_URLS": "", "OLLAMA_API_CONFIGS": "",
            "RESET_CONFIG_ON_START": "true", "ENABLE_FORWARD_USER_INFO_HEADERS": "true"}
    for k, v in want.items():
        expect(k in ue and ue[k] == v, f"openwebui: {k}={ue.get(k)!r}, want {v!r}")
    expect(((ui.get("depends_on") or {}).get("chat-proxy") or {}).get("condition") == "service_healthy",
           "openwebui: does not wait for a healthy chat-proxy")
    we = env(webui.get("chat-proxy", {}))
    expect(bool(we.get("CHAT_PROXY_OLLAMA_BASE_URL")) and bool(we.get("CHAT_PROXY_VLLM_REMOTE_URL")),
           "openwebui: the proxy has no backends (its env_file)")

    # Together: OpenWebUI in front of the stack, whose backend settings win.
    be = env(both.get("chat-proxy", {}))
    expect(be.get("CHAT_PROXY_OLLAMA_BASE_URL") == env(proxy).get("CHAT_PROXY_OLLAMA_BASE_URL")
           and be.get("CHAT_PROXY_VLLM_REMOTE_URL") == env(proxy).get("CHAT_PROXY_VLLM_REMOTE_URL"),
           "both files: the proxy does not use the stack's Ollama and vLLM executor")
    expect(set(both) >= {"chat-proxy", "imageworks-ollama", "vllm-executor", "openwebui"}, "both files: services missing")

    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print("ok: compose contents")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
