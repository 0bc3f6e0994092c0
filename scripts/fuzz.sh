#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the libFuzzer targets (fuzz/*_fuzz.cc, clang, ASan+UBSan) and runs
# each for a bounded time, two at a time. Fails on any finding: a crash, a
# sanitizer report, a failed FUZZ_CHECK, a leak or a timeout. Prints the
# executions per second of each target.
#
# Usage: scripts/fuzz.sh [SECONDS]   (per target, default 45)
#        scripts/fuzz.sh --build-only  (build the targets, run nothing)
# Environment:
#   RELINK_FUZZ_BUILD    build directory (default build-fuzz)
#   RELINK_FUZZ_TARGETS  names to run, e.g. "untrusted config" (default: all)
#   RELINK_FUZZ_JOBS     targets run at once (default 2)
#
# Each target starts from its seeds: fuzz/corpus/<name>/ (hand-written,
# including known-bad inputs) plus the matching fixtures under tests/fixtures
# and contrib/. Every seed is first run once in full (they can be larger than
# the fuzzing length limit), then libFuzzer mutates them; what it learns is
# kept in BUILD/fuzz-run/<name>/corpus for the next run, and a finding is
# written to BUILD/fuzz-run/<name>/crash-* (or leak-*, timeout-*, oom-*).
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
if [[ ${1:-} == --build-only ]]; then build_only=1; shift; fi
secs=${1:-45}
build=${RELINK_FUZZ_BUILD:-build-fuzz}
jobs=${RELINK_FUZZ_JOBS:-2}

start=$(date +%s)
# ccache when there is one (scripts/test.sh sets where its cache lives);
# line tables are all the crash reports need.
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" "${launcher[@]}" \
  -DRELINK_FUZZ=ON -DRELINK_BUILD_TESTS=OFF -DRELINK_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j2 --target relink_fuzzers
echo "fuzz.sh: built in $(( $(date +%s) - start )) s"
((build_only)) && exit 0

targets=${RELINK_FUZZ_TARGETS:-$(cd fuzz && ls -1 *_fuzz.cc | sed 's/_fuzz\.cc$//')}

# Seeds beyond fuzz/corpus/<name>: recorded fixtures of what the peer sends.
fixtures() {
  case "$1" in
    netlink) ls tests/fixtures/netlink/*.bin ;;
    info_network) ls tests/fixtures/qemu/*.txt ;;
    passt_help) ls tests/fixtures/passt/* ;;
    config) echo contrib/relinkd.toml ;;
    domain_xml) ls tests/fixtures/libvirt/*.xml ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  local t=$1 bin="$build/fuzz/$1_fuzz" dir="$build/fuzz-run/$1"
  rm -rf "$dir/seeds" "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-*
  mkdir -p "$dir/seeds" "$dir/corpus"
  [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/"$t"/* "$dir/seeds/" 2>/dev/null || true
  for f in $(fixtures "$t"); do cp "$f" "$dir/seeds/"; done
  # Known inputs in full first; then fuzzing with a length limit that keeps
  # executions fast (deep nesting and long lines are in the seeds).
  if [ -n "$(ls -A "$dir/seeds")" ] && ! "$bin" -artifact_prefix="$dir/" "$dir"/seeds/* >"$dir/seeds.log" 2>&1; then
    echo "FINDING $t: a seed fails, see $dir/seeds.log"
    return 1
  fi
  if ! "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" "$dir/seeds" >"$dir/fuzz.log" 2>&1; then
    echo "FINDING $t: see $dir/fuzz.log and $(ls "$dir"/{crash,leak,timeout,oom}-* 2>/dev/null | tr '\n' ' ')"
    return 1
  fi
  local execs rate
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/fuzz.log" | tail -1)
  printf 'fuzz.sh: %-16s %10s exec/s  %10s runs  %5s corpus files\n' "$t" "$rate" "$execs" \
    "$(ls "$dir/corpus" | wc -l)"
}

status=0
mkdir -p "$build/fuzz-run"
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  rm -f "$build/fuzz-run/$t.status"
  ( if run_one "$t"; then r=0; else r=1; fi; echo $r >"$build/fuzz-run/$t.status" ) &
done
wait
for t in $targets; do
  if [ "$(cat "$build/fuzz-run/$t.status" 2>/dev/null)" != 0 ]; then
    status=1
    echo "--- $t: tail of the log" >&2
    tail -40 "$build/fuzz-run/$t/seeds.log" "$build/fuzz-run/$t/fuzz.log" >&2 2>/dev/null || true
  fi
done
echo "fuzz.sh: $(echo $targets | wc -w) targets, ${secs} s each, done in $(( $(date +%s) - start )) s"
[ $status -eq 0 ] || echo "fuzz.sh: FINDINGS (see above); a finding becomes a test: docs/operations.md" >&2
exit $status
