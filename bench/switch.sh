#!/usr/bin/env bash
# Switch benchmark: proxy overhead of a cold model switch and the wait of a queued request
# under steady traffic (bench/switch.py), on a Release build with the fake vLLM executable.
#   bench/switch.sh [--switches N] [--trials N] [--load-ms MS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-release}
# fake_vllm is a test target: scripts/run configures the same directory with the tests off
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIMAGEWORKS_TESTS=ON >/dev/null
cmake --build "$BUILD" --target imageworks-chat-proxy fake_vllm >/dev/null
exec python3 "$ROOT/bench/switch.py" --proxy "$BUILD/imageworks-chat-proxy" --fake-vllm "$BUILD/tests/fake_vllm" "$@"
