#!/bin/sh
# run-fuzz.sh [SECONDS [FUZZER]] - fuzz the wire frame parser.
#
# Without FUZZER: configures a clang build in $MX_FUZZ_BUILD_DIR (default
# <source>/build-fuzz) with -DMX_FUZZ=ON and builds fuzz_wire. Then runs the
# fuzzer for SECONDS (default 60) on a temporary COPY of the committed
# corpus tests/fuzz/corpus/wire, so the committed seeds never change behind
# anyone's back. Exits non-zero if the fuzzer found a crash; the crashing
# input is kept in $MX_FUZZ_ARTIFACTS (default ./fuzz-artifacts).
# MX_FUZZ_CORPUS_OUT=DIR keeps the grown corpus for inspection.
set -eu

secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

if [ $# -ge 2 ]; then
    fuzzer=$2
else
    build=${MX_FUZZ_BUILD_DIR:-$src/build-fuzz}
    cmake -S "$src" -B "$build" -DMX_FUZZ=ON -DCMAKE_C_COMPILER=clang >/dev/null
    cmake --build "$build" --target fuzz_wire -j"$(nproc)"
    fuzzer=$build/tests/fuzz/fuzz_wire
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz_wire.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/artifacts"
cp "$here"/corpus/wire/* "$work/corpus/"

rc=0
"$fuzzer" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" || rc=$?

if [ -n "${MX_FUZZ_CORPUS_OUT:-}" ]; then
    mkdir -p "$MX_FUZZ_CORPUS_OUT"
    cp "$work"/corpus/* "$MX_FUZZ_CORPUS_OUT"/
fi
if [ "$rc" -ne 0 ]; then
    keep=${MX_FUZZ_ARTIFACTS:-$PWD/fuzz-artifacts}
    mkdir -p "$keep"
    cp "$work"/artifacts/* "$keep"/ 2>/dev/null || true
    echo "run-fuzz.sh: fuzz_wire failed (exit $rc); crashing inputs in $keep" >&2
    exit 1
fi
echo "run-fuzz.sh: fuzz_wire ran ${secs}s without finding a crash"
