#!/bin/sh
# run-fuzz.sh [SECONDS [NAME]] - a longer fuzzing session by hand.
#
# Configures a clang build in $MX_FUZZ_BUILD_DIR (default <source>/build-fuzz)
# with -DMX_FUZZ=ON, builds fuzz_NAME (default: wire; others: smtp_cmd,
# smtp_data, mailbox_name, mime_cache) and runs it for SECONDS (default 600)
# seeded from the committed tests/fuzz/corpus/NAME, which is only read.
# Exits non-zero if the fuzzer found a crash; crashing inputs are kept in
# $MX_FUZZ_ARTIFACTS (default ./fuzz-artifacts). MX_FUZZ_CORPUS_OUT=DIR keeps
# the grown corpus for inspection.
set -eu

secs=${1:-600}
name=${2:-wire}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${MX_FUZZ_BUILD_DIR:-$src/build-fuzz}
cmake -S "$src" -B "$build" -DMX_FUZZ=ON -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build "$build" --target "fuzz_$name" -j"$(nproc)"

work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz_$name.XXXXXX")
trap 'rm -rf "$work"' EXIT
rc=0
"$here/smoke.sh" "$work" "$build/tests/fuzz/fuzz_$name" "$here/corpus/$name" 65536 "$secs" || rc=$?
if [ -n "${MX_FUZZ_CORPUS_OUT:-}" ]; then
    mkdir -p "$MX_FUZZ_CORPUS_OUT"
    cp "$work"/corpus/* "$MX_FUZZ_CORPUS_OUT"/ 2>/dev/null || true
fi
if [ "$rc" -ne 0 ]; then
    keep=${MX_FUZZ_ARTIFACTS:-$PWD/fuzz-artifacts}
    mkdir -p "$keep"
    cp "$work"/artifacts/* "$keep"/ 2>/dev/null || true
    echo "run-fuzz.sh: fuzz_$name failed (exit $rc); crashing inputs in $keep" >&2
    exit 1
fi
echo "run-fuzz.sh: fuzz_$name ran ${secs}s without finding a crash"
