#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/), replays each checked-in corpus
# (tests/data/{ir,npy,metadata}/fuzz_corpus.b64), then fuzzes each target for SECONDS (default 60) from that
# corpus with a fixed seed. A crash fails the script and prints the input in base64: add it to the
# corpus file and fix the code. Needs clang with libFuzzer: `bash scripts/setup.sh --fuzz`.
#
#   bash scripts/fuzz.sh [SECONDS]       FUZZ_SEED=N picks the seed (default 1)
#   FUZZ_RUNS=1000000 bash scripts/fuzz.sh   a fixed number of inputs per target instead of a time
#   FUZZ_MERGE=1 bash scripts/fuzz.sh    afterwards, merge what was found into the corpus files
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLAFUSE_CUDA=OFF \
  -DMLAFUSE_TESTS=OFF -DMLAFUSE_FUZZ=ON >/dev/null
cmake --build build-fuzz -j2 --target ir_parse_fuzzer npy_parse_fuzzer metadata_fuzzer
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for entry in ir:ir_parse_fuzzer npy:npy_parse_fuzzer metadata:metadata_fuzzer; do
  target="${entry%%:*}"
  fuzzer="build-fuzz/fuzz/${entry#*:}"
  corpus="tests/data/$target/fuzz_corpus.b64"
  mkdir -p "$work/$target/seed" "$work/$target/new" "$work/$target/merged"
  n=0
  while read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    printf '%s' "$line" | base64 -d >"$work/$target/seed/$n"
    n=$((n + 1))
  done <"$corpus"
  echo "== $target: replaying $n corpus inputs"
  "$fuzzer" "$work/$target/seed"/* >"$work/$target/replay.log" 2>&1 ||
    { tail -30 "$work/$target/replay.log"; exit 1; }
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); else limit=(-max_total_time="$secs"); fi
  echo "== $target: fuzzing (${limit[*]}, seed ${FUZZ_SEED:-1})"
  dict=()
  [ -f "fuzz/$target.dict" ] && dict=(-dict="fuzz/$target.dict")
  if ! "$fuzzer" "${limit[@]}" -seed="${FUZZ_SEED:-1}" "${dict[@]}" -max_len=4096 \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$target/" \
      "$work/$target/new" "$work/$target/seed" >"$work/$target/fuzz.log" 2>&1; then
    tail -40 "$work/$target/fuzz.log"
    for a in "$work/$target"/crash-* "$work/$target"/timeout-* "$work/$target"/oom-*; do
      [ -f "$a" ] && echo "finding $(basename "$a"), base64 for $corpus:" && base64 -w0 "$a" && echo
    done
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$work/$target/fuzz.log"
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    "$fuzzer" -merge=1 -max_len=4096 "$work/$target/merged" "$work/$target/seed" \
      "$work/$target/new" >/dev/null 2>&1
    { grep '^#' "$corpus"; for f in "$work/$target/merged"/*; do base64 -w0 "$f"; echo; done; } \
      >"$work/$target/corpus.b64"
    mv "$work/$target/corpus.b64" "$corpus"
    echo "merged: $(grep -vc '^#' "$corpus") inputs in $corpus"
  fi
done
