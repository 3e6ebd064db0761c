#!/usr/bin/env bash
# Checks of the deployment files (SPEC §13), one ctest test per check (tests/CMakeLists.txt):
#   check_deploy.sh compose|dockerfile|systemd|install|variables|shellcheck
# Environment (ctest sets it): IMAGEWORKS_SOURCE_DIR, IMAGEWORKS_PROXY_BIN (the built binary),
# IMAGEWORKS_BUILD_DIR (its build tree, for `cmake --install`), IMAGEWORKS_CMAKE.
# The tools are installed by scripts/setup; a missing one is a failure, not a skip.
set -euo pipefail

src=${IMAGEWORKS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${IMAGEWORKS_PROXY_BIN:-$src/build-asan/imageworks-chat-proxy}
build=${IMAGEWORKS_BUILD_DIR:-$(dirname "$bin")}
cmake_cmd=${IMAGEWORKS_CMAKE:-cmake}
cd "$src"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }
need() {
  command -v "$1" >/dev/null || {
    echo "FAIL: $1 is not installed (scripts/setup installs it)" >&2
    exit 1
  }
}
finish() {
  if ((failures)); then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The proxy binary with no CHAT_PROXY_* from the caller's environment.
proxy() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" ASAN_OPTIONS="${ASAN_OPTIONS:-}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" "$@"
}

# cmake --install of the built tree into DESTDIR=$1 with prefix $2.
install_tree() {
  local destdir=$1 prefix=$2
  [ -x "$bin" ] || {
    echo "FAIL: no built binary at $bin" >&2
    exit 1
  }
  DESTDIR=$destdir "$cmake_cmd" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || {
    cat "$tmp/install.log" >&2
    echo "FAIL: cmake --install $build --prefix $prefix" >&2
    exit 1
  }
}

check_compose() {
  need docker-compose
  need python3
  local f
  for f in docker-compose.chat-proxy.yml docker-compose.openwebui.yml; do
    if docker-compose -f "$f" config -q; then ok "docker-compose -f $f config -q"; else fail "docker-compose -f $f config -q"; fi
  done
  # The documented combination (OpenWebUI in front of the GPU stack).
  if docker-compose -f docker-compose.chat-proxy.yml -f docker-compose.openwebui.yml config -q; then
    ok "the two files together"
  else
    fail "docker-compose -f docker-compose.chat-proxy.yml -f docker-compose.openwebui.yml config -q"
  fi
  # What the files must say, read from the resolved configuration.
  IMAGEWORKS_MODELS_DIR=/data/weights docker-compose -f docker-compose.chat-proxy.yml config >"$tmp/stack.yml"
  IMAGEWORKS_MODELS_DIR=/data/weights docker-compose -f docker-compose.openwebui.yml config >"$tmp/webui.yml"
  docker-compose -f docker-compose.chat-proxy.yml -f docker-compose.openwebui.yml config >"$tmp/both.yml"
  python3 "$src/tests/deploy/check_compose.py" "$tmp/stack.yml" "$tmp/webui.yml" "$tmp/both.yml" /data/weights ||
    fail "compose contents (above)"
}

# The runtime packages the binary needs: ldd -> dpkg -S, minus what debian:12-slim has and the
# sanitizer runtimes of a test build.
runtime_packages() {
  ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
    dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1 ||
      dpkg -S "$lib" | head -1 | cut -d: -f1
  done | sort -u | grep -v -x -E 'libc6|libgcc-s1|libstdc\+\+6|libasan[0-9]+|libubsan[0-9]+|liblsan[0-9]+'
}

check_dockerfile() {
  need python3
  local df=Dockerfile.chat-proxy
  [ -f "$df" ] || {
    fail "$df is missing"
    finish
  }
  # The build stage runs what CI runs: scripts/setup, then scripts/build (which scripts/test
  # and scripts/run call too), then installs.
  local build_stage runtime_stage
  build_stage=$(awk '/^FROM /{stage=$NF} stage=="build"' "$df")
  runtime_stage=$(awk '/^FROM /{stage=$NF} stage=="chat-proxy"' "$df")
  grep -qx 'ARG DEBIAN_IMAGE=debian:12' "$df" || fail "DEBIAN_IMAGE is not debian:12"
  grep -qx 'ARG DEBIAN_SLIM_IMAGE=debian:12-slim' "$df" || fail "DEBIAN_SLIM_IMAGE is not debian:12-slim"
  # shellcheck disable=SC2016 # ${...} is Dockerfile text here, not shell
  grep -qx 'FROM ${DEBIAN_IMAGE} AS build' "$df" || fail "the build stage is not FROM debian:12"
  # shellcheck disable=SC2016
  grep -qx 'FROM ${DEBIAN_SLIM_IMAGE} AS chat-proxy' "$df" || fail "the chat-proxy stage is not FROM debian:12-slim"
  grep -q 'RUN .*\./scripts/setup' <<<"$build_stage" || fail "the build stage does not run ./scripts/setup"
  grep -Eq '\./scripts/build [^ ]+ .*-DCMAKE_BUILD_TYPE=Release' <<<"$build_stage" ||
    fail "the build stage does not run ./scripts/build with a Release build"
  grep -q -- '-DIMAGEWORKS_TESTS=OFF' <<<"$build_stage" || fail "the image builds the tests"
  grep -q -- '-DIMAGEWORKS_BENCH=OFF' <<<"$build_stage" || fail "the image builds the bench tools"
  grep -q 'cmake --install build-docker --prefix /usr/local' <<<"$build_stage" || fail "no cmake --install in the build stage"
  grep -Eq '^RUN .*cmake' <<<"$runtime_stage" && fail "the runtime stage runs cmake"
  local s
  for s in scripts/test scripts/run; do
    grep -Eq '^(exec )?(nice )?\./scripts/build ' "$s" || fail "$s does not build through scripts/build"
  done
  grep -Eq '^\./scripts/test' .ci/run || fail ".ci/run does not run scripts/test"
  grep -Eq '^\./scripts/setup' scripts/test || fail "scripts/test does not run scripts/setup"
  ok "the image builds with scripts/setup + scripts/build, as CI does"

  # The runtime stage: the binary's libraries, non-root, healthcheck, port, entrypoint.
  need ldd
  need dpkg
  local pkgs p
  pkgs=$(runtime_packages)
  [ -n "$pkgs" ] || fail "found no runtime package of $bin"
  for p in $pkgs; do
    grep -Eq "^ +.*[ ]${p//+/\\+}( |$)" <<<"$runtime_stage" || fail "runtime package $p (ldd $bin) is not installed by the chat-proxy stage"
  done
  ok "runtime packages: $(echo "$pkgs" | tr '\n' ' ')"
  grep -Eq 'apt-get install .*-dev|[a-z0-9]-dev( |$)' <<<"$runtime_stage" && fail "the runtime stage installs -dev packages"
  grep -Eq '^USER (imageworks|10001)$' <<<"$runtime_stage" || fail "the runtime stage does not run as the imageworks user"
  grep -Eq 'useradd .*--uid 10001 ' <<<"$runtime_stage" || fail "no imageworks user with uid 10001"
  grep -Eq '^EXPOSE 8100$' <<<"$runtime_stage" || fail "no EXPOSE 8100"
  grep -Eq 'CHAT_PROXY_HOST=0\.0\.0\.0' <<<"$runtime_stage" || fail "CHAT_PROXY_HOST is not 0.0.0.0 in the image"
  grep -Eq '^HEALTHCHECK ' <<<"$runtime_stage" || fail "no HEALTHCHECK"
  grep -Eq 'CMD curl -fsS "?http://127\.0\.0\.1:[^/]*/v1/health' <<<"$runtime_stage" || fail "the HEALTHCHECK does not curl /v1/health"
  grep -Eq ' curl ' <<<"$runtime_stage" || fail "curl (for the HEALTHCHECK) is not installed"
  grep -Eq '^ENTRYPOINT \[.*"imageworks-chat-proxy"\]$' <<<"$runtime_stage" || fail "the ENTRYPOINT is not the binary"
  if ! grep -Eq 'mkdir -p .*logs _staging' <<<"$runtime_stage" ||
    ! grep -Eq 'chown imageworks:imageworks logs _staging' <<<"$runtime_stage"; then
    fail "logs/ and _staging/ are not made writable for the user"
  fi
  [ "$(grep '^FROM ' "$df" | tail -1)" = "FROM chat-proxy AS default" ] ||
    fail "the last stage (the default target) is not the proxy image"
  ok "runtime stage"

  # The build context: what the Dockerfile copies is in it, build trees and .git are not
  # (docker-py's own .dockerignore matcher, the one docker-compose 1.29 builds with).
  python3 - "$df" <<'PY' || fail "build context (above)"
import os, re, sys
from docker.utils.build import exclude_paths
pats = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
ctx = exclude_paths(".", pats)
bad = 0
def want(path, present):
    global bad
    if (path in ctx) != present:
        print(f"{path} is {'missing from' if present else 'in'} the build context")
        bad += 1
for line in open(sys.argv[1]):
    m = re.match(r"COPY (?!--from)(\S+) ", line)
    if m and m.group(1) != ".":
        want(m.group(1), True)
for p in ["CMakeLists.txt", "scripts/setup", "scripts/build", "bench/CMakeLists.txt",
          "src/main.cpp", "configs/model_registry.curated.json", "configs/chat_templates/chatml.jinja",
          "docker/systemd/imageworks-chat-proxy.service", "docker/systemd/chat-proxy.env.example"]:
    want(p, True)
for d in os.listdir("."):
    if d.startswith("build") and os.path.isdir(d):
        for root, _, files in os.walk(d):
            for f in files[:3]:
                want(os.path.relpath(os.path.join(root, f)), False)
            break
for p in ctx:
    if p.startswith((".git/", "logs/", "_staging/")) or "node_modules/" in p:
        print(f"{p} is in the build context"); bad += 1; break
sys.exit(1 if bad else 0)
PY
  ok ".dockerignore"

  # The image's configure arguments: no test and no bench targets, the install rules there.
  need "$cmake_cmd"
  if "$cmake_cmd" -S . -B "$tmp/cfg" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIMAGEWORKS_TESTS=OFF \
    -DIMAGEWORKS_BENCH=OFF >"$tmp/cfg.log" 2>&1; then
    local targets
    need ninja
    targets=$(ninja -C "$tmp/cfg" -t targets all)
    grep -q '^imageworks-chat-proxy:' <<<"$targets" || fail "no imageworks-chat-proxy target"
    grep -Eq '^([a-z]+/)*(bench_loadgen|bench_fake_upstream|unit_tests|e2e_tests|fake_vllm):' <<<"$targets" &&
      fail "-DIMAGEWORKS_TESTS=OFF -DIMAGEWORKS_BENCH=OFF still builds tests or bench tools"
    grep -q '^install:' <<<"$targets" || fail "no install target"
    ok "configure as the image does: the binary only"
  else
    cat "$tmp/cfg.log" >&2
    fail "configure with the image's arguments"
  fi
  finish
}

# Verifies the unit installed under prefix $2 in DESTDIR $1: systemd-analyze with that tree as
# root (so ExecStart= is checked where the install put it), the host's units beside it for
# the dependencies (sysinit.target, ...). Any message is a failure.
verify_unit() {
  local destdir=$1 prefix=$2 unit
  unit=$prefix/lib/systemd/system/imageworks-chat-proxy.service
  [ -f "$destdir$unit" ] || {
    fail "no unit at $unit"
    return
  }
  mkdir -p "$destdir/usr/lib/systemd"
  [ -d "$destdir/usr/lib/systemd/system" ] || cp -a /usr/lib/systemd/system "$destdir/usr/lib/systemd/"
  # systemd reads units from /usr/local/lib/systemd/system and /usr/lib/systemd/system; from
  # another prefix an admin links the unit into /etc/systemd/system (systemctl link).
  local loaded=$unit out
  case "$prefix" in
    /usr | /usr/local) ;;
    *)
      mkdir -p "$destdir/etc/systemd/system"
      cp "$destdir$unit" "$destdir/etc/systemd/system/"
      loaded=/etc/systemd/system/imageworks-chat-proxy.service
      ;;
  esac
  if out=$(systemd-analyze verify --root="$destdir" "$loaded" 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify --root=DESTDIR $unit"
  else
    fail "systemd-analyze verify $unit: $out"
  fi
  # The unit's paths exist in the installed tree.
  local exe registry
  exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$destdir$unit")
  registry=$(sed -n 's/^Environment=CHAT_PROXY_REGISTRY_DIR=//p' "$destdir$unit")
  [ "$exe" = "$prefix/bin/imageworks-chat-proxy" ] || fail "ExecStart=$exe, not $prefix/bin/imageworks-chat-proxy"
  [ -x "$destdir$exe" ] || fail "ExecStart $exe is not an installed executable"
  [ -f "$destdir$registry/model_registry.curated.json" ] || fail "the unit's registry $registry is not installed"
}

check_systemd() {
  need systemd-analyze
  local unit=docker/systemd/imageworks-chat-proxy.service
  # The shipped file, installed with the default prefix: byte for byte, then verified.
  install_tree "$tmp/root" /usr/local
  cmp "$unit" "$tmp/root/usr/local/lib/systemd/system/imageworks-chat-proxy.service" ||
    fail "the unit installed for /usr/local differs from $unit"
  verify_unit "$tmp/root" /usr/local
  # Another prefix: the install rewrites the unit's paths to it.
  install_tree "$tmp/opt" /opt/imageworks
  verify_unit "$tmp/opt" /opt/imageworks
  grep -q /usr/local "$tmp/opt/opt/imageworks/lib/systemd/system/imageworks-chat-proxy.service" &&
    fail "the unit installed for /opt/imageworks still names /usr/local"

  # What the unit must say.
  local key
  for key in 'KillMode=mixed' 'Restart=on-failure' 'ProtectSystem=strict' 'DynamicUser=yes' \
    'EnvironmentFile=-/etc/imageworks-chat-proxy/chat-proxy.env' 'StateDirectory=imageworks-chat-proxy' \
    'LogsDirectory=imageworks-chat-proxy' 'WorkingDirectory=%S/imageworks-chat-proxy'; do
    grep -qx -- "$key" "$unit" || fail "the unit lacks $key"
  done
  # State and log paths inside the directories systemd makes writable.
  grep -qx 'Environment=CHAT_PROXY_VLLM_STATE_PATH=%S/imageworks-chat-proxy/[^ ]*' "$unit" ||
    fail "the vLLM state file is not in the StateDirectory"
  grep -qx 'Environment=CHAT_PROXY_LOG_PATH=%L/imageworks-chat-proxy/[^ ]*' "$unit" ||
    fail "the request log is not in the LogsDirectory"
  # TimeoutStopSec above the proxy's own stop budget, from the binary's defaults: drain,
  # the 2 s to end what is left, 5 s for a switch under way, vLLM's SIGTERM grace + 5 s after
  # SIGKILL, Ollama unloads.
  local stop budget
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$unit")
  budget=$(proxy CHAT_PROXY_REGISTRY_DIR="$src/configs" "$bin" config | python3 -c '
import json, sys
c = json.load(sys.stdin)
ms = int(c["CHAT_PROXY_SHUTDOWN_GRACE_MS"]) + 2000 + 5000 + int(c["CHAT_PROXY_VLLM_STOP_GRACE_S"]) * 1000 + 5000 \
     + int(c["CHAT_PROXY_OLLAMA_UNLOAD_TIMEOUT_MS"])
print((ms + 999) // 1000)')
  if [ -n "$stop" ] && [ -n "$budget" ] && ((stop > budget + 10)); then
    ok "TimeoutStopSec=$stop > the proxy's stop budget of ${budget} s (+10 s)"
  else
    fail "TimeoutStopSec=${stop:-unset} is not above the stop budget of ${budget:-?} s + 10 s"
  fi
  finish
}

check_install() {
  install_tree "$tmp/root" /usr/local
  local root=$tmp/root/usr/local
  if [ ! -x "$root/bin/imageworks-chat-proxy" ] || [ -L "$root/bin/imageworks-chat-proxy" ]; then
    fail "bin/imageworks-chat-proxy is not an installed executable"
  fi
  [ -L "$root/bin/imageworks-models" ] || fail "bin/imageworks-models is not a symlink"
  [ "$(readlink "$root/bin/imageworks-models")" = imageworks-chat-proxy ] ||
    fail "bin/imageworks-models -> $(readlink "$root/bin/imageworks-models"), not the relative imageworks-chat-proxy"
  local f
  for f in lib/systemd/system/imageworks-chat-proxy.service \
    share/doc/imageworks-chat-proxy/chat-proxy.env.example \
    share/imageworks-chat-proxy/configs/model_registry.curated.json \
    share/imageworks-chat-proxy/configs/model_registry.discovered.json \
    share/imageworks-chat-proxy/configs/chat_templates/chatml.jinja; do
    [ -f "$root/$f" ] || fail "$f is not installed"
  done
  grep -q "imageworks-models" "$build/install_manifest.txt" || fail "the symlink is not in install_manifest.txt"

  # imageworks-models runs the models subcommands: the same output as `... models list`.
  local reg=$root/share/imageworks-chat-proxy/configs args
  for args in "list" "list --json"; do
    # shellcheck disable=SC2086 # $args is two words on purpose
    proxy CHAT_PROXY_REGISTRY_DIR="$reg" CHAT_PROXY_INCLUDE_NON_INSTALLED=1 \
      "$root/bin/imageworks-chat-proxy" models $args >"$tmp/direct.out" 2>"$tmp/direct.err" ||
      fail "imageworks-chat-proxy models $args: $(cat "$tmp/direct.err")"
    # shellcheck disable=SC2086
    proxy CHAT_PROXY_REGISTRY_DIR="$reg" CHAT_PROXY_INCLUDE_NON_INSTALLED=1 \
      "$root/bin/imageworks-models" $args >"$tmp/link.out" 2>"$tmp/link.err" ||
      fail "imageworks-models $args: $(cat "$tmp/link.err")"
    grep -q qwen "$tmp/direct.out" || fail "models $args on the installed example registry printed no model"
    if cmp -s "$tmp/direct.out" "$tmp/link.out"; then
      ok "imageworks-models $args = imageworks-chat-proxy models $args ($(wc -l <"$tmp/direct.out") lines)"
    else
      fail "imageworks-models $args differs from imageworks-chat-proxy models $args"
      diff "$tmp/direct.out" "$tmp/link.out" >&2 || true
    fi
  done
  finish
}

# Every CHAT_PROXY_* variable the deployment files set is one the binary reads (a typo would
# only be a warning at startup).
check_variables() {
  local known used v
  known=$(proxy CHAT_PROXY_REGISTRY_DIR="$src/configs" "$bin" config | grep -o '"CHAT_PROXY_[A-Z0-9_]*"' | tr -d '"' | sort -u)
  [ "$(wc -l <<<"$known")" -gt 40 ] || fail "the binary's config printed too few variables"
  used=$(grep -ohE '\bCHAT_PROXY_[A-Z0-9_]+' Dockerfile.chat-proxy docker-compose.chat-proxy.yml \
    docker-compose.openwebui.yml docker/openwebui-backends.env docker/systemd/imageworks-chat-proxy.service \
    docker/systemd/chat-proxy.env.example | sort -u)
  [ "$(wc -l <<<"$used")" -gt 30 ] || fail "found too few variables in the deployment files"
  for v in $used; do
    grep -qx "$v" <<<"$known" || fail "$v (deployment files) is not a variable of the proxy"
  done
  # The env example names every commonly set variable (SPEC §11's seeds list and the GPU ones).
  for v in CHAT_PROXY_HOST CHAT_PROXY_PORT CHAT_PROXY_REGISTRY_DIR CHAT_PROXY_LOG_PATH \
    CHAT_PROXY_ENABLE_METRICS CHAT_PROXY_INCLUDE_NON_INSTALLED CHAT_PROXY_OLLAMA_BASE_URL \
    CHAT_PROXY_VLLM_COMMAND CHAT_PROXY_VLLM_STATE_PATH CHAT_PROXY_VLLM_REMOTE_URL \
    CHAT_PROXY_API_KEYS CHAT_PROXY_AUTOSTART_MAP CHAT_PROXY_SHUTDOWN_GRACE_MS; do
    grep -q "^#\?$v=" docker/systemd/chat-proxy.env.example || fail "chat-proxy.env.example lacks $v"
  done
  ok "$(wc -l <<<"$used") variables in the deployment files, all known to the proxy"
  finish
}

# Every shell script of the repository (found by its #! line), through shellcheck.
check_shellcheck() {
  need shellcheck
  local scripts=() f first
  while IFS= read -r -d '' f; do
    IFS= read -r first <"$f" || true
    if [[ $first =~ ^#!.*(/|env[[:space:]]+)(ba|da|k)?sh([[:space:]]|$) ]]; then
      scripts+=("${f#./}")
    fi
  done < <(find . \( -type d \( -name node_modules -o -name 'build*' -o -name .git -o -name _staging -o -name logs \) \) \
    -prune -o -type f -print0)
  for f in .ci/run scripts/setup scripts/test scripts/run scripts/build tests/deploy/check_deploy.sh bench/run.sh; do
    grep -qx "$f" <<<"$(printf '%s\n' "${scripts[@]}")" || fail "the script finder missed $f"
  done
  if shellcheck -x "${scripts[@]}"; then
    ok "shellcheck: ${#scripts[@]} scripts: ${scripts[*]}"
  else
    fail "shellcheck (above)"
  fi
  finish
}

case "${1:-}" in
  compose) check_compose ;;
  dockerfile) check_dockerfile ;;
  systemd) check_systemd ;;
  install) check_install ;;
  variables) check_variables ;;
  shellcheck) check_shellcheck ;;
  *)
    echo "usage: $0 compose|dockerfile|systemd|install|variables|shellcheck" >&2
    exit 2
    ;;
esac
finish
