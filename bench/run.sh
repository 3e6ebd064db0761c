#!/usr/bin/env bash
# Load benchmark: the same load against a fast fake upstream three ways — direct, through
# nginx proxy_pass, through imageworks-chat-proxy — and a Markdown table of req/s, latency,
# CPU time per request and peak RSS of the middle box, with the proxy/nginx ratios and the
# target verdicts. Writes the table into docs/benchmarks.md (between its result markers).
# st_tools (a stream in the legacy function_call dialect, which the proxy normalises) runs
# direct and through the proxy only, and is compared with the proxy's plain stream.
#
#   bench/run.sh [--quick] [--repeats N] [--duration S] [--threads N] [--pin|--no-pin]
#                [--only ns_closed,ns_rate,st_closed,st_rate,st_tools] [--no-build] [--no-doc] [--keep-tmp]
#
# Needs: cmake, ninja, a C++20 compiler, nginx (nginx-light), python3. Runs as any user.
# BENCH_BUILD_DIR picks the build directory, BENCH_PROXY_BIN another proxy binary (A/B runs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-release}
DOC=$ROOT/docs/benchmarks.md
REPEATS=5
DURATION=5          # seconds per measured run
WARMUP=0.5          # seconds of unmeasured load before each measured run
BOX_THREADS=1       # nginx worker_processes and CHAT_PROXY_THREADS
PIN=1               # middle box on CPU 1, load generator and upstream on CPU 0
BUILD_FIRST=1
WRITE_DOC=1
KEEP_TMP=0
NONSTREAM_CONNS=32
STREAM_CONNS=16
RATE=2000           # fixed-rate non-stream run, req/s
STREAM_RATE=200     # fixed-rate stream run (time to first event), streams/s ...
EVENT_GAP_US=1000   # ... whose events the upstream paces this far apart, like a fast model
ONLY=ns_closed,ns_rate,st_closed,st_rate,st_tools
ARGS_SEEN="$*"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --quick) REPEATS=1; DURATION=3 ;;
    --repeats) REPEATS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --threads) BOX_THREADS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --pin) PIN=1 ;;
    --no-pin) PIN=0 ;;
    --no-build) BUILD_FIRST=0 ;;
    --no-doc) WRITE_DOC=0 ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done
NCPU=$(nproc)
# Pinning needs a core for the box and one for the rest; a multi-threaded box is not pinned.
if ((PIN)) && ((NCPU < 2 || BOX_THREADS > 1)); then PIN=0; fi

log() { printf '[bench] %s\n' "$*" >&2; }

# ---- build ---------------------------------------------------------------------------
if ((BUILD_FIRST)); then
  log "building Release in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" -j2 --target imageworks-chat-proxy bench_fake_upstream bench_loadgen >&2
fi
PROXY_BIN=${BENCH_PROXY_BIN:-$BUILD/imageworks-chat-proxy}  # another build, for an A/B comparison
UPSTREAM_BIN=$BUILD/bench/bench_fake_upstream
LOADGEN_BIN=$BUILD/bench/bench_loadgen
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
for b in "$PROXY_BIN" "$UPSTREAM_BIN" "$LOADGEN_BIN" "$NGINX_BIN"; do
  [[ -x $b ]] || { echo "missing executable: $b" >&2; exit 1; }
done

# ---- processes -----------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/imageworks-bench.XXXXXX")
chmod 755 "$TMP"  # nginx workers run as an unprivileged user when started by root
UPSTREAM_PID="" NGINX_PID="" PROXY_PID=""

stop_pid() {  # stop_pid PID SIGNAL: signal one process we started, wait up to 5 s, then KILL
  local pid=$1 sig=$2
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_pid "$PROXY_PID" TERM
  stop_pid "$NGINX_PID" TERM   # the master takes its workers down with it
  stop_pid "$UPSTREAM_PID" TERM
  if ((rc != 0)) || ((KEEP_TMP)); then
    log "logs kept in $TMP"
    if ((rc != 0)); then
      for f in "$TMP"/proxy.err "$TMP"/nginx/error.log "$TMP"/upstream.err; do
        [[ -s $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
      done
    fi
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Pinning keeps the single-threaded middle box on its own core, so runs compare across
# boxes and repeat; the load generator and the upstream share the other core.
LOAD_CPU=() BOX_CPU=()
if ((PIN)); then LOAD_CPU=(taskset -c 0); BOX_CPU=(taskset -c 1); fi

wait_for_line() {  # wait_for_line FILE PATTERN PID -> prints the port of the first match
  local file=$1 pattern=$2 pid=$3
  for _ in $(seq 200); do
    if grep -q "$pattern" "$file" 2>/dev/null; then
      sed -n "s|.*$pattern.*127\.0\.0\.1:\([0-9]*\).*|\1|p" "$file" | head -n1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before listening" >&2; return 1; }
    sleep 0.05
  done
  echo "timed out waiting for '$pattern' in $file" >&2
  return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"${LOAD_CPU[@]}" "$UPSTREAM_BIN" --port 0 >"$TMP/upstream.out" 2>"$TMP/upstream.err" &
UPSTREAM_PID=$!
UPSTREAM_PORT=$(wait_for_line "$TMP/upstream.out" "listening on http://" "$UPSTREAM_PID")
log "fake upstream pid $UPSTREAM_PID on port $UPSTREAM_PORT"

mkdir -p "$TMP/nginx"
NGINX_PORT=$(free_port)
sed -e "s|@PREFIX@|$TMP/nginx|g" -e "s|@WORKERS@|$BOX_THREADS|g" -e "s|@PORT@|$NGINX_PORT|g" \
    -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" "$ROOT/bench/nginx.conf.in" >"$TMP/nginx/nginx.conf"
"${BOX_CPU[@]}" "$NGINX_BIN" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
  >"$TMP/nginx.out" 2>&1 &
NGINX_PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx.out" "$TMP/nginx/error.log" >&2; exit 1; }
  sleep 0.05
done
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[[ -n $NGINX_WORKERS ]] || { echo "no nginx worker processes found" >&2; exit 1; }
log "nginx master $NGINX_PID, worker(s) $NGINX_WORKERS on port $NGINX_PORT"

mkdir -p "$TMP/registry" "$TMP/proxy"
printf '[{"name":"bench","backend":"openai","backend_config":{"base_url":"http://127.0.0.1:%s"}}]\n' \
  "$UPSTREAM_PORT" >"$TMP/registry/model_registry.json"
(cd "$TMP/proxy" && exec env CHAT_PROXY_REGISTRY_DIR="$TMP/registry" CHAT_PROXY_LOG_LEVEL=warn \
   CHAT_PROXY_REQUIRE_TEMPLATE=0 CHAT_PROXY_THREADS="$BOX_THREADS" CHAT_PROXY_SHUTDOWN_GRACE_MS=1000 \
   CHAT_PROXY_LOG_PATH="$TMP/proxy/chat_proxy.jsonl" \
   "${BOX_CPU[@]}" "$PROXY_BIN" serve --port 0 >"$TMP/proxy.out" 2>"$TMP/proxy.err") &
PROXY_PID=$!
PROXY_PORT=$(wait_for_line "$TMP/proxy.out" "imageworks-chat-proxy listening on http://" "$PROXY_PID")
log "proxy pid $PROXY_PID on port $PROXY_PORT"

BODY='{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY='{"model":"bench","messages":[{"role":"user","content":"hello"}],"stream":true}'
TOOLS_HEADER=x-bench-dialect:legacy-tools  # the upstream answers in legacy function_call deltas
declare -A PORT=([direct]=$UPSTREAM_PORT [nginx]=$NGINX_PORT [proxy]=$PROXY_PORT)
declare -A BOX=([direct]=$UPSTREAM_PID [nginx]=$NGINX_WORKERS [proxy]=$PROXY_PID)

# Every path must answer correctly before anything is timed.
for t in direct nginx proxy; do
  url="http://127.0.0.1:${PORT[$t]}/v1/chat/completions"
  out=$(curl -sS -H 'Content-Type: application/json' -d "$BODY" "$url")
  [[ $out == *'"chat.completion"'* ]] || { echo "$t: unexpected reply: $out" >&2; exit 1; }
  out=$(curl -sS -N -H 'Content-Type: application/json' -d "$STREAM_BODY" "$url")
  [[ $out == *'data: [DONE]'* && $(grep -c '^data: {' <<<"$out") -ge 64 ]] ||
    { echo "$t: unexpected stream: ${out:0:300}" >&2; exit 1; }
done
# st_tools: the upstream's legacy stream, and what the proxy makes of it (nginx is not in it).
TOOLS_NORMALISED=""
if [[ ,$ONLY, == *,st_tools,* ]]; then
  for t in direct proxy; do
    url="http://127.0.0.1:${PORT[$t]}/v1/chat/completions"
    out=$(curl -sS -N -H 'Content-Type: application/json' -H "$TOOLS_HEADER" -d "$STREAM_BODY" "$url")
    [[ $out == *'data: [DONE]'* && $(grep -c '^data: {' <<<"$out") -ge 64 ]] ||
      { echo "$t: unexpected st_tools stream: ${out:0:300}" >&2; exit 1; }
    [[ $out == *'"function_call"'* || $out == *'"tool_calls"'* ]] ||
      { echo "$t: st_tools stream is not a tool-call stream (x-bench-dialect lost?): ${out:0:300}" >&2; exit 1; }
  done
  # The last $out is the proxy's: it must have rewritten function_call into tool_calls.
  if [[ $out == *'"tool_calls"'* && $out != *'"function_call":{'* ]]; then TOOLS_NORMALISED=1; else TOOLS_NORMALISED=0; fi
  ((TOOLS_NORMALISED)) || { echo "proxy: the st_tools stream was not normalised to tool_calls: ${out:0:300}" >&2; exit 1; }
fi

# ---- measurement ---------------------------------------------------------------------
cpu_ticks() {  # "utime stime" (clock ticks), each summed over the given pids
  local user=0 sys=0 pid stat rest
  for pid in "$@"; do
    stat=$(<"/proc/$pid/stat")
    rest=${stat##*) }          # fields from 3 (state) on; comm may contain spaces
    read -r -a f <<<"$rest"
    user=$((user + f[11])) sys=$((sys + f[12]))
  done
  echo "$user $sys"
}
machine_ticks() {  # user+nice+system ticks of all CPUs: compared with ours, shows other load
  local user nice system
  read -r _ user nice system _ </proc/stat
  echo $((user + nice + system))
}
hwm_kib() {  # VmHWM summed over the given pids
  local total=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    total=$((total + v))
  done
  echo "$total"
}

declare -A SCEN_ARGS=(
  [ns_closed]="--connections $NONSTREAM_CONNS"
  [ns_rate]="--rate $RATE --connections 16"
  [st_closed]="--stream --connections $STREAM_CONNS"
  [st_rate]="--stream --rate $STREAM_RATE --connections 64 --header x-bench-event-interval-us:$EVENT_GAP_US"
  [st_tools]="--stream --connections $STREAM_CONNS --header $TOOLS_HEADER"
)
# Paths per scenario: nginx does not normalise, so st_tools has nothing to compare with it.
declare -A SCEN_TARGETS=([st_tools]="direct proxy")
targets_of() { echo "${SCEN_TARGETS[$1]:-direct nginx proxy}"; }
IFS=, read -r -a SCENARIOS <<<"$ONLY"
for scen in "${SCENARIOS[@]}"; do
  [[ -n ${SCEN_ARGS[$scen]:-} ]] || { echo "unknown scenario: $scen" >&2; exit 2; }
done
CLK_TCK_NOW=$(getconf CLK_TCK)
RESULTS=$TMP/results.tsv
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TS=$(date +%s)

measure() {  # measure SCENARIO TARGET REPEAT
  local scen=$1 target=$2 rep=$3 body=$BODY url json
  [[ ${SCEN_ARGS[$scen]} == *--stream* ]] && body=$STREAM_BODY
  url="http://127.0.0.1:${PORT[$target]}/v1/chat/completions"
  # shellcheck disable=SC2086  # the scenario arguments are meant to split
  "${LOAD_CPU[@]}" "$LOADGEN_BIN" --url "$url" --body "$body" ${SCEN_ARGS[$scen]} --duration "$WARMUP" \
    >/dev/null || true
  local bu0 bs0 bu1 bs1 uu0 us0 uu1 us1 box_pids m0 m1
  read -r -a box_pids <<<"${BOX[$target]}"
  m0=$(machine_ticks)
  read -r bu0 bs0 <<<"$(cpu_ticks "${box_pids[@]}")"
  read -r uu0 us0 <<<"$(cpu_ticks "$UPSTREAM_PID")"
  # shellcheck disable=SC2086
  json=$("${LOAD_CPU[@]}" "$LOADGEN_BIN" --url "$url" --body "$body" ${SCEN_ARGS[$scen]} --duration "$DURATION") ||
    log "$scen/$target: the load generator reported errors: $json"
  read -r bu1 bs1 <<<"$(cpu_ticks "${box_pids[@]}")"
  read -r uu1 us1 <<<"$(cpu_ticks "$UPSTREAM_PID")"
  m1=$(machine_ticks)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$target" "$rep" "$((bu1 - bu0))" "$((bs1 - bs0))" \
    "$((uu1 + us1 - uu0 - us0))" "$((m1 - m0))" "$(hwm_kib "${box_pids[@]}")" "$json" >>"$RESULTS"
  log "$(printf '%-9s %-6s run %s: %s' "$scen" "$target" "$rep" "$json")"
}

busy0=$(machine_ticks); sleep 1; busy1=$(machine_ticks)
if ((busy1 - busy0 > CLK_TCK_NOW / 5)); then
  log "WARNING: the machine is busy ($(((busy1 - busy0) * 100 / CLK_TCK_NOW)) % of a core used by other processes); results will be disturbed"
fi
total_runs=0
for scen in "${SCENARIOS[@]}"; do
  read -r -a targets <<<"$(targets_of "$scen")"
  total_runs=$((total_runs + REPEATS * ${#targets[@]}))
done
log "$total_runs runs of ${DURATION}s (load average now: $LOAD_BEFORE; pinned: $PIN)"
# Repeats are interleaved (every path once, then again) so a drift in the machine's load
# spreads over all three paths instead of biasing one.
for rep in $(seq "$REPEATS"); do
  for scen in "${SCENARIOS[@]}"; do
    read -r -a targets <<<"$(targets_of "$scen")"
    for target in "${targets[@]}"; do measure "$scen" "$target" "$rep"; done
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report --------------------------------------------------------------------------
export RESULTS DOC WRITE_DOC REPEATS DURATION BOX_THREADS PIN NCPU LOAD_BEFORE LOAD_AFTER \
       NONSTREAM_CONNS STREAM_CONNS RATE STREAM_RATE EVENT_GAP_US ARGS_SEEN START_TS TOOLS_NORMALISED
CLK_TCK=$CLK_TCK_NOW
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -r)
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's|.*nginx/||')
export CLK_TCK CPU_MODEL KERNEL NGINX_VERSION PROXY_BIN
python3 "$ROOT/bench/report.py"
