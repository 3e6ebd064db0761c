#!/usr/bin/env bash
# Load benchmark: the same load against a fast fake upstream three ways — direct, through
# nginx proxy_pass, through imageworks-chat-proxy — and a Markdown table of req/s, latency,
# CPU time per request and peak RSS of the middle box, with the proxy/nginx ratios and the
# target verdicts. Writes the table into docs/benchmarks.md (between its result markers).
# st_tools (legacy function_call stream, normalised by the proxy) runs direct and proxy only.
# Recording mode (ns_rec, st_rec): nginx_rec (access_log ... buffer=64k) against proxy_rec
# (JSONL request log + metrics), and the plain proxy (log, metrics off): the cost of recording.
#
#   bench/run.sh [--quick] [--repeats N] [--duration S] [--threads N] [--pin|--no-pin]
#                [--only ns_closed,ns_rate,st_closed,st_rate,st_tools,ns_rec,st_rec]
#                [--no-build] [--no-doc] [--keep-tmp]
#
# Needs: cmake, ninja, a C++20 compiler, nginx (nginx-light), python3, curl. Runs as any user.
# BENCH_BUILD_DIR picks the build directory, BENCH_PROXY_BIN another proxy binary (A/B runs);
# BENCH_SKIP_RECORD_CHECKS=1 makes the recording mode's failed pre-flight checks warnings.
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
ONLY=ns_closed,ns_rate,st_closed,st_rate,st_tools,ns_rec,st_rec
ARGS_SEEN="$*"
SKIP_RECORD_CHECKS=${BENCH_SKIP_RECORD_CHECKS:-0}

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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

# ---- scenarios -----------------------------------------------------------------------
BODY='{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY='{"model":"bench","messages":[{"role":"user","content":"hello"}],"stream":true}'
TOOLS_HEADER=x-bench-dialect:legacy-tools  # the upstream answers in legacy function_call deltas
declare -A SCEN_ARGS=(
  [ns_closed]="--connections $NONSTREAM_CONNS"
  [ns_rate]="--rate $RATE --connections 16"
  [st_closed]="--stream --connections $STREAM_CONNS"
  [st_rate]="--stream --rate $STREAM_RATE --connections 64 --header x-bench-event-interval-us:$EVENT_GAP_US"
  [st_tools]="--stream --connections $STREAM_CONNS --header $TOOLS_HEADER"
  [ns_rec]="--connections $NONSTREAM_CONNS"      # ns_closed's load, ...
  [st_rec]="--stream --connections $STREAM_CONNS"  # ... st_closed's load, on the recording boxes
)
# Paths per scenario: nginx does not normalise, so st_tools has nothing to compare with it.
# The recording scenarios run both recording boxes and the plain proxy, whose rows in the
# same interleaved repeats are the baseline of the proxy's cost of recording (on vs off).
declare -A SCEN_TARGETS=([st_tools]="direct proxy" [ns_rec]="nginx_rec proxy_rec proxy"
                         [st_rec]="nginx_rec proxy_rec proxy")
targets_of() { echo "${SCEN_TARGETS[$1]:-direct nginx proxy}"; }
IFS=, read -r -a SCENARIOS <<<"$ONLY"
declare -A NEEDED=([direct]=1)  # the paths some scenario runs: only these are started
for scen in "${SCENARIOS[@]}"; do
  [[ -n ${SCEN_ARGS[$scen]:-} ]] || { echo "unknown scenario: $scen" >&2; exit 2; }
  for t in $(targets_of "$scen"); do NEEDED[$t]=1; done
done
RECORDING=0
if [[ -n ${NEEDED[proxy_rec]:-} ]]; then RECORDING=1; fi

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
# Per path: the process we started (nginx: the master), its port, and the pids whose CPU
# and RSS are measured (nginx: the worker(s); the proxy: its one process, all threads).
declare -A PID_OF=() PORT=() BOX=()
PROXY_REC_LOG=$TMP/proxy_rec/chat_proxy.jsonl
NGINX_REC_LOG=$TMP/nginx_rec/access.log
RECORD_CHECKS_FAILED=0

stop_pid() {  # stop_pid PID SIGNAL: signal one process we started, wait up to 5 s, then KILL
  local pid=$1 sig=$2
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? t f
  for t in proxy_rec proxy nginx_rec nginx direct; do
    stop_pid "${PID_OF[$t]:-}" TERM  # an nginx master takes its workers down with it
  done
  if ((rc != 0)) || ((KEEP_TMP)); then
    log "logs kept in $TMP"
    if ((rc != 0)); then
      for f in "$TMP"/*.err "$TMP"/*/error.log; do
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
# boxes and repeat; the load generator and the upstream share the other core. Every middle
# box (plain or recording) gets CPU 1; only one of them is under load at a time.
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

start_nginx() {  # start_nginx NAME ACCESS_LOG: nginx in $TMP/NAME with `access_log ACCESS_LOG;`
  local name=$1 access=$2 dir=$TMP/$1 port pid workers
  mkdir -p "$dir"
  port=$(free_port)
  # @ACCESS_LOG@ first: its value may hold @PREFIX@.
  sed -e "s|@ACCESS_LOG@|$access|g" -e "s|@PREFIX@|$dir|g" -e "s|@WORKERS@|$BOX_THREADS|g" \
      -e "s|@PORT@|$port|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" "$ROOT/bench/nginx.conf.in" >"$dir/nginx.conf"
  "${BOX_CPU[@]}" "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$TMP/$name.out" 2>&1 &
  pid=$!
  PID_OF[$name]=$pid
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.out" "$dir/error.log" >&2; exit 1; }
    sleep 0.05
  done
  workers=$(pgrep -P "$pid" | tr '\n' ' ')
  [[ -n $workers ]] || { echo "$name: no nginx worker processes found" >&2; exit 1; }
  PORT[$name]=$port BOX[$name]=${workers% }
  log "$name master $pid, worker(s) ${BOX[$name]} on port $port"
}

start_proxy() {  # start_proxy NAME [VAR=VALUE...] -- [PROXY_FLAG...]: a proxy run in $TMP/NAME
  local name=$1 dir=$TMP/$1 pid port
  shift
  local -a vars=()
  while (($#)) && [[ $1 != -- ]]; do vars+=("$1"); shift; done
  (($#)) && shift
  mkdir -p "$dir"
  (cd "$dir" && exec env CHAT_PROXY_REGISTRY_DIR="$TMP/registry" CHAT_PROXY_LOG_LEVEL=warn \
     CHAT_PROXY_REQUIRE_TEMPLATE=0 CHAT_PROXY_THREADS="$BOX_THREADS" CHAT_PROXY_SHUTDOWN_GRACE_MS=1000 \
     "${vars[@]}" "${BOX_CPU[@]}" "$PROXY_BIN" serve --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err") &
  pid=$!
  PID_OF[$name]=$pid
  port=$(wait_for_line "$TMP/$name.out" "imageworks-chat-proxy listening on http://" "$pid")
  PORT[$name]=$port BOX[$name]=$pid
  log "$name pid $pid on port $port"
}

"${LOAD_CPU[@]}" "$UPSTREAM_BIN" --port 0 >"$TMP/upstream.out" 2>"$TMP/upstream.err" &
UPSTREAM_PID=$!
PID_OF[direct]=$UPSTREAM_PID
UPSTREAM_PORT=$(wait_for_line "$TMP/upstream.out" "listening on http://" "$UPSTREAM_PID")
PORT[direct]=$UPSTREAM_PORT BOX[direct]=$UPSTREAM_PID
log "fake upstream pid $UPSTREAM_PID on port $UPSTREAM_PORT"

# The plain nginx logs nothing; nginx_rec logs every request the way a deployment does: the
# `bench` format of nginx.conf.in, written in 64 KiB batches (no flush=, so a line waits in
# the buffer until 64 KiB of lines have gathered or the worker exits).
if [[ -n ${NEEDED[nginx]:-} ]]; then start_nginx nginx off; fi
if [[ -n ${NEEDED[nginx_rec]:-} ]]; then start_nginx nginx_rec "@PREFIX@/access.log bench buffer=64k"; fi

mkdir -p "$TMP/registry"
printf '[{"name":"bench","backend":"openai","backend_config":{"base_url":"http://127.0.0.1:%s"}}]\n' \
  "$UPSTREAM_PORT" >"$TMP/registry/model_registry.json"
# The plain proxy records nothing: request log off (an empty path, as flag and variable),
# metrics off. proxy_rec records every request: the JSONL log (its writer thread is part of
# the process, so its CPU counts) and the metrics. The log rotates at the default
# CHAT_PROXY_MAX_LOG_BYTES (50 MB), as deployed: rotation is part of the cost. Rotated files
# are all kept (CHAT_PROXY_LOG_KEEP_FILES=100, ≈ 5 GB at most) so the lines can be counted.
if [[ -n ${NEEDED[proxy]:-} ]]; then
  start_proxy proxy CHAT_PROXY_LOG_PATH= CHAT_PROXY_ENABLE_METRICS=0 -- --log-path ""
fi
if ((RECORDING)); then
  start_proxy proxy_rec CHAT_PROXY_LOG_PATH="$PROXY_REC_LOG" CHAT_PROXY_ENABLE_METRICS=1 \
    CHAT_PROXY_LOG_KEEP_FILES=100 --
fi
STARTED=()
for t in direct nginx proxy nginx_rec proxy_rec; do
  if [[ -n ${PORT[$t]:-} ]]; then STARTED+=("$t"); fi
done

# Every path must answer correctly before anything is timed.
for t in "${STARTED[@]}"; do
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

# Recording mode: each recording box must record, and the plain proxy must not, or the
# rows compare the wrong things. Fatal, unless BENCH_SKIP_RECORD_CHECKS=1 (then a warning,
# and the report says so).
record_problem() {
  if [[ $SKIP_RECORD_CHECKS == 1 ]]; then
    log "WARNING (BENCH_SKIP_RECORD_CHECKS=1, going on): $*"
    RECORD_CHECKS_FAILED=1
    return 0
  fi
  echo "$*" >&2
  echo "(BENCH_SKIP_RECORD_CHECKS=1 runs the benchmark anyway)" >&2
  exit 1
}
wait_for_text() {  # wait_for_text TEXT FILE: up to 5 s for TEXT to appear in FILE
  for _ in $(seq 50); do
    grep -qsF -- "$1" "$2" && return 0
    sleep 0.1
  done
  return 1
}
if ((RECORDING)); then
  check_id=bench-check-$$-$RANDOM
  url="http://127.0.0.1:${PORT[proxy_rec]}/v1/chat/completions"
  out=$(curl -sS -H 'Content-Type: application/json' -H "x-request-id: $check_id" -d "$BODY" "$url")
  [[ $out == *'"chat.completion"'* ]] || { echo "proxy_rec: unexpected reply: $out" >&2; exit 1; }
  # The log's writer thread writes batches every ≈ 200 ms.
  if wait_for_text "$check_id" "$PROXY_REC_LOG"; then
    log "proxy_rec logs: $(grep -F -- "$check_id" "$PROXY_REC_LOG" | head -n1)"
  else
    record_problem "proxy_rec: the request log does not record requests (no line with x-request-id" \
      "$check_id in $PROXY_REC_LOG within 5 s of the reply; CHAT_PROXY_LOG_PATH not honoured?)"
  fi
  code=$(curl -sS -o "$TMP/proxy_rec.metrics" -w '%{http_code}' "http://127.0.0.1:${PORT[proxy_rec]}/metrics" || true)
  if [[ $code != 200 ]] || ! grep -q 'imageworks_requests_total' "$TMP/proxy_rec.metrics"; then
    record_problem "proxy_rec: the metrics are not on (GET /metrics answered $code" \
      "without imageworks_requests_total; CHAT_PROXY_ENABLE_METRICS=1 not honoured?)"
  fi
  if [[ -n ${PORT[proxy]:-} ]]; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[proxy]}/metrics" || true)
    [[ $code == 404 ]] ||
      record_problem "proxy: GET /metrics answered $code, not 404: the plain proxy must run with metrics off"
    f=$(find "$TMP/proxy" -type f -name '*.jsonl*' -print -quit)
    [[ -z $f ]] ||
      record_problem "proxy: the plain proxy writes a request log ($f): it must run with the log off (--log-path \"\")"
  fi
fi
if [[ -n ${PORT[nginx_rec]:-} ]]; then
  # nginx_rec: its line waits in the 64 KiB buffer; a thousand more requests push it out.
  check_id=bench-check-$$-$RANDOM
  url="http://127.0.0.1:${PORT[nginx_rec]}/v1/chat/completions"
  curl -sS -o /dev/null -A "$check_id" -H 'Content-Type: application/json' -d "$BODY" "$url"
  "${LOAD_CPU[@]}" "$LOADGEN_BIN" --url "$url" --body "$BODY" --connections 4 --requests 1000 --duration 10 \
    >/dev/null || true
  if wait_for_text "$check_id" "$NGINX_REC_LOG"; then
    log "nginx_rec logs: $(grep -F -- "$check_id" "$NGINX_REC_LOG" | head -n1)"
  else
    record_problem "nginx_rec: the access log does not record requests (no line with user agent" \
      "$check_id in $NGINX_REC_LOG after 1,000 more requests)"
  fi
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

CLK_TCK_NOW=$(getconf CLK_TCK)
RESULTS=$TMP/results.tsv
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TS=$(date +%s)
# Requests the load generator completed per path: all (warm-ups included) and measured.
declare -A REQS_ALL=() REQS_RUN=()
requests_of() { sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$1" | head -n1; }

measure() {  # measure SCENARIO TARGET REPEAT
  local scen=$1 target=$2 rep=$3 body=$BODY url json warm n
  [[ ${SCEN_ARGS[$scen]} == *--stream* ]] && body=$STREAM_BODY
  url="http://127.0.0.1:${PORT[$target]}/v1/chat/completions"
  # shellcheck disable=SC2086  # the scenario arguments are meant to split
  warm=$("${LOAD_CPU[@]}" "$LOADGEN_BIN" --url "$url" --body "$body" ${SCEN_ARGS[$scen]} --duration "$WARMUP") || true
  n=$(requests_of "$warm")
  REQS_ALL[$target]=$((${REQS_ALL[$target]:-0} + ${n:-0}))
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
  n=$(requests_of "$json")
  REQS_ALL[$target]=$((${REQS_ALL[$target]:-0} + ${n:-0}))
  REQS_RUN[$target]=$((${REQS_RUN[$target]:-0} + ${n:-0}))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$target" "$rep" "$((bu1 - bu0))" "$((bs1 - bs0))" \
    "$((uu1 + us1 - uu0 - us0))" "$((m1 - m0))" "$(hwm_kib "${box_pids[@]}")" "$json" >>"$RESULTS"
  log "$(printf '%-9s %-9s run %s: %s' "$scen" "$target" "$rep" "$json")"
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

# ---- what the recording boxes wrote ---------------------------------------------------
# Both recording boxes are stopped first (gracefully), so that the proxy's writer thread and
# nginx's 64 KiB buffer have written every line; then lines are counted against the
# requests the load generator completed through each (its warm-ups included; the pre-flight
# checks add a few lines more). Nothing may be lost: lines ≥ requests.
PROXY_REC_LINES="" PROXY_REC_FILES="" PROXY_REC_DROPPED="" NGINX_REC_LINES="" PLAIN_PROXY_LOG=""
count_lines() {  # count_lines DIR NAME_GLOB: lines in the matching files (rotated ones too)
  find "$1" -maxdepth 1 -type f -name "$2" -exec cat {} + | wc -l
}
if ((RECORDING)); then
  # A dropped-lines figure, if the metrics expose one (queue full or failed writes).
  PROXY_REC_DROPPED=$(curl -s "http://127.0.0.1:${PORT[proxy_rec]}/metrics" |
    awk '/^imageworks_[a-z_]*dropped[a-z_]*[ {]/ {print $NF; exit}' || true)
  stop_pid "${PID_OF[proxy_rec]}" TERM
  stop_pid "${PID_OF[nginx_rec]}" QUIT   # graceful: the worker writes its buffer and exits
  PID_OF[proxy_rec]="" PID_OF[nginx_rec]=""
  PROXY_REC_LINES=$(count_lines "$TMP/proxy_rec" 'chat_proxy.jsonl*')
  PROXY_REC_FILES=$(find "$TMP/proxy_rec" -maxdepth 1 -type f -name 'chat_proxy.jsonl*' | wc -l)
  NGINX_REC_LINES=$(count_lines "$TMP/nginx_rec" 'access.log')
  msg="proxy_rec: $PROXY_REC_LINES lines in $PROXY_REC_FILES request log file(s) for ${REQS_ALL[proxy_rec]:-0}"
  msg+=" requests completed through it (${REQS_RUN[proxy_rec]:-0} in measured runs, the rest warm-ups)"
  if [[ -n $PROXY_REC_DROPPED ]]; then msg+="; dropped lines per its metrics: $PROXY_REC_DROPPED"; fi
  log "$msg"
  log "nginx_rec: $NGINX_REC_LINES access log lines for ${REQS_ALL[nginx_rec]:-0} requests" \
      "(${REQS_RUN[nginx_rec]:-0} in measured runs, the rest warm-ups)"
  for t in proxy_rec nginx_rec; do
    lines=$PROXY_REC_LINES
    [[ $t == nginx_rec ]] && lines=$NGINX_REC_LINES
    if ((lines < ${REQS_ALL[$t]:-0})); then
      log "WARNING: $t logged fewer lines ($lines) than requests completed through it (${REQS_ALL[$t]:-0})"
    fi
  done
  if [[ -n ${PORT[proxy]:-} ]]; then
    PLAIN_PROXY_LOG=$(find "$TMP/proxy" -type f -name '*.jsonl*' -print -quit)
    [[ -z $PLAIN_PROXY_LOG ]] ||
      log "WARNING: the plain proxy wrote a file ($PLAIN_PROXY_LOG): its rows may not be \"not recording\""
  fi
fi

# ---- report --------------------------------------------------------------------------
export RESULTS DOC WRITE_DOC REPEATS DURATION BOX_THREADS PIN NCPU LOAD_BEFORE LOAD_AFTER \
       NONSTREAM_CONNS STREAM_CONNS RATE STREAM_RATE EVENT_GAP_US ARGS_SEEN START_TS TOOLS_NORMALISED
# Recording mode: what the recording boxes wrote, and whether the pre-flight checks failed.
PROXY_REC_REQS=${REQS_ALL[proxy_rec]:-} NGINX_REC_REQS=${REQS_ALL[nginx_rec]:-}
export RECORDING RECORD_CHECKS_FAILED PROXY_REC_LINES PROXY_REC_FILES PROXY_REC_REQS PROXY_REC_DROPPED \
       NGINX_REC_LINES NGINX_REC_REQS PLAIN_PROXY_LOG
CLK_TCK=$CLK_TCK_NOW
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -r)
NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's|.*nginx/||')
export CLK_TCK CPU_MODEL KERNEL NGINX_VERSION PROXY_BIN
python3 "$ROOT/bench/report.py"
