#!/usr/bin/env bash
# Builds the multi-threaded code's tests with ThreadSanitizer (GCC, -fsanitize=thread, no ASan)
# in a build tree of its own and runs them: tsan_tests (tests/CMakeLists.txt) — the GPU
# coordinator, the request log writer and the metrics shards in process, and the GPU
# end-to-end tests against the TSan-built daemon (IMAGEWORKS_TEST_PROXY_THREADS event loops)
# and fake vLLM. Every process writes its reports to one directory; any report fails the run
# and is printed, whichever process (test, daemon, fake) it came from.
#
#   tests/tsan/run.sh [--build-dir DIR] [-- gtest flags]     e.g. -- --gtest_filter='GpuCoordinator.*'
#
# ctest's tsan.threads runs it. IMAGEWORKS_BUILD_JOBS (default: nproc) sets the parallelism.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
build="$src/build-tsan"
gtest_args=()
while (($#)); do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --) shift; gtest_args=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cmake_cmd=${IMAGEWORKS_CMAKE:-cmake}
jobs=${IMAGEWORKS_BUILD_JOBS:-$(nproc)}

t0=$SECONDS
# -O1: TSan's recommended level (compiles as fast as -O0 here, runs faster); -g1: line tables,
# enough for file:line in reports. The benchmark tools and fuzz targets are not needed.
"$cmake_cmd" -S "$src" -B "$build" -G Ninja -DIMAGEWORKS_SANITIZE=thread -DCMAKE_BUILD_TYPE=None \
  "-DCMAKE_CXX_FLAGS=-O1 -g1" -DIMAGEWORKS_BENCH=OFF -DIMAGEWORKS_FUZZ=OFF >/dev/null
"$cmake_cmd" --build "$build" -j "$jobs" --target tsan_tests
echo "run.sh: TSan build took $((SECONDS - t0)) s"

reports=$(mktemp -d "${TMPDIR:-/tmp}/imageworks-tsan.XXXXXX")
trap 'rm -rf "$reports"' EXIT
# halt_on_error=0: a race is reported and the test goes on, so one run shows every race;
# log_path: the daemon's and the fake vLLM's stderr belong to the tests, reports go here.
export TSAN_OPTIONS="log_path=$reports/tsan second_deadlock_stack=1 history_size=4 halt_on_error=0 suppressions=$src/tests/tsan/suppressions.txt ${TSAN_OPTIONS:-}"
export IMAGEWORKS_SOURCE_DIR="$src"
export IMAGEWORKS_PROXY_BIN="$build/imageworks-chat-proxy"
export IMAGEWORKS_FAKE_VLLM_BIN="$build/tests/fake_vllm"
export IMAGEWORKS_TEST_PROXY_THREADS=${IMAGEWORKS_TEST_PROXY_THREADS:-4}

# GCC 12's TSan runtime can fail with "unexpected memory mapping" on kernels that randomise
# mmap with more bits than it expects (vm.mmap_rnd_bits 32 on some distributions; 28 works):
# without address randomisation it always works. The personality is inherited, so the daemon and the fake vLLM run the same way.
launcher=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
  launcher=(setarch "$(uname -m)" -R)
fi

t1=$SECONDS
status=0
"${launcher[@]}" "$build/tests/tsan_tests" --gtest_brief=1 "${gtest_args[@]}" || status=$?
echo "run.sh: tests took $((SECONDS - t1)) s (daemon with $IMAGEWORKS_TEST_PROXY_THREADS event-loop threads)"

# A process's file holds its reports, or only the suppressions it matched (printed at exit).
shopt -s nullglob
found=()
for f in "$reports"/tsan.*; do
  if grep -qE '(WARNING|ERROR|FATAL): ThreadSanitizer' "$f"; then
    found+=("$f")
    echo "=== ThreadSanitizer report from pid ${f##*.} ==="
  fi
  cat "$f"
done
if ((${#found[@]})); then
  echo "run.sh: ThreadSanitizer reported in ${#found[@]} process(es)" >&2
  exit 1
fi
if ((status)); then
  echo "run.sh: tsan_tests failed (exit $status)" >&2
  exit "$status"
fi
echo "run.sh: no ThreadSanitizer report; total $((SECONDS - t0)) s"
