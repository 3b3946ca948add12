#!/bin/sh
# smoke.sh WORKDIR FUZZER CORPUS MAX_LEN SECONDS - one bounded fuzzing run
# for ctest. The committed CORPUS is only read: libFuzzer writes new inputs
# to WORKDIR/corpus, crashing inputs to WORKDIR/artifacts. Exits non-zero on
# any crash, leak, sanitizer report or broken invariant (abort()).
set -eu
work=$1 fuzzer=$2 corpus=$3 max_len=$4 secs=$5
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
exec "$fuzzer" -max_total_time="$secs" -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$corpus"
