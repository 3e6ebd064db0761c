#!/usr/bin/env bash
# Builds the fuzz targets with clang's libFuzzer (+ ASan + UBSan) in a build tree of their own
# and fuzzes each for a bounded time from its committed seed corpus (fuzz/corpus/<target>).
# New inputs and crash artifacts go to a work directory (a temp dir unless --work-dir), never
# into the repository. Exits non-zero on any finding, printing the input's path and base64.
#
#   fuzz/run.sh [--seconds N] [--build-dir DIR] [--work-dir DIR] [target...] [-- libFuzzer flags]
#
# ctest's fuzz.libfuzzer runs it with 25 s per target; fuzz/README.md has the longer run.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
seconds=25
build="$src/build-fuzz"
work=""
targets=()
extra=()
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(http_front_door sse_parser registry request_normalize stream_rules)
cmake_cmd=${IMAGEWORKS_CMAKE:-cmake}

for tool in clang clang++ ninja "$cmake_cmd"; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (scripts/setup installs it)" >&2; exit 1; }
done

t0=$SECONDS
# No ccache (a launcher from the environment would be picked up otherwise), no precompiled
# headers: this tree shares nothing with the GCC build.
CC=clang CXX=clang++ "$cmake_cmd" -S "$src/fuzz/libfuzzer" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER_LAUNCHER= >/dev/null
"$cmake_cmd" --build "$build" -j "$(nproc)"
echo "run.sh: clang build took $((SECONDS - t0)) s"

keep_work=1
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/imageworks-fuzz.XXXXXX")
  keep_work=0
fi

failed=()
for t in "${targets[@]}"; do
  seeds="$src/fuzz/corpus/$t"
  [ -d "$seeds" ] || { echo "run.sh: no seed corpus $seeds" >&2; exit 2; }
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  echo "run.sh: fuzzing $t for $seconds s"
  # The first corpus directory receives the new inputs; the seeds are only read.
  if "$build/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t/" "${extra[@]}" "$work/corpus/$t" "$seeds" \
      >"$work/$t.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$work/$t.log" | tr '\n' ' '
    echo
  else
    failed+=("$t")
    tail -n 60 "$work/$t.log"
    for a in "$work/artifacts/$t"/*; do
      [ -f "$a" ] || continue
      echo "run.sh: FINDING in $t: $a ($(wc -c <"$a") bytes)"
      if [ "$(wc -c <"$a")" -le 65536 ]; then
        echo "run.sh: base64: $(base64 -w0 "$a")"
      fi
    done
  fi
done

echo "run.sh: total $((SECONDS - t0)) s"
if ((${#failed[@]})); then
  echo "run.sh: findings in: ${failed[*]} (inputs and logs kept in $work)" >&2
  exit 1
fi
if ((keep_work)); then
  echo "run.sh: new inputs in $work/corpus"
else
  rm -rf "$work"
fi
