#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds relink and runs every test: unit tests, integration tests in
# throwaway network namespaces with a real QEMU, and the end-to-end test with
# a booted guest; then the same tests again built with AddressSanitizer and
# UndefinedBehaviorSanitizer (relinkd included), and the fuzzers for a
# bounded time. Run as root on Debian 12.
#
# Usage: scripts/test.sh [BUILD_DIR]
# Environment:
#   RELINK_TEST_STAGES   which stages to run (default "main asan fuzz"):
#                        main: build in BUILD_DIR, ctest
#                        asan: ASan+UBSan build in BUILD_DIR-asan, ctest there
#                        fuzz: scripts/fuzz.sh in BUILD_DIR-fuzz
#   RELINK_FUZZ_SECONDS  fuzzing time per target (default 10; ten targets,
#                        two at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
asan_build=$build-asan
stages=" ${RELINK_TEST_STAGES:-main asan fuzz} "
fuzz_seconds=${RELINK_FUZZ_SECONDS:-10}
has_stage() { [[ $stages == *" $1 "* ]]; }

bash scripts/install-deps.sh

# Debug information as line tables only (-g1): stack traces (gdb, ASan,
# UBSan) still name files and lines, and the builds take about a fifth less.
line_tables=-g1
# ccache, where the machine keeps its cache between runs (a fresh machine
# compiles everything once; a fresh clone elsewhere still hits: paths are
# made relative to the source directory).
launcher=()
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-/var/cache/relink/ccache} CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
  mkdir -p "$CCACHE_DIR"
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

timings=()
stage_start=0
begin() { stage_start=$(date +%s); echo "test.sh: === $1"; }
end() { timings+=("$(printf '%-34s %5d s' "$1" $(( $(date +%s) - stage_start )))"); }

if has_stage main || has_stage asan; then
  # The guest image for the end-to-end test (cached in the build directory).
  bash tests/guest/build-guest.sh "$build/guest"

  # Namespaces left by an earlier run that was killed (a destructor that never
  # ran) are not this run's fault: remove them first, and say so.
  for ns in $(ip netns list 2>/dev/null | grep -o '^relink-[^ ]*' || true); do
    echo "test.sh: removing stale namespace $ns from an earlier run"
    ip netns del "$ns" 2>/dev/null || true
  done
fi

status=0

# Work started in the background (images, builds ahead) stops with the run.
# shellcheck disable=SC2317  # called from the EXIT trap
kill_tree() { local c; for c in $(pgrep -P "$1" || true); do kill_tree "$c"; done; kill "$1" 2>/dev/null || true; }
# shellcheck disable=SC2317
stop_background() { local p; for p in $(jobs -rp); do kill_tree "$p"; done; }
trap stop_background EXIT

# On a machine with nothing cached, the tiers' images (the Debian 13 and
# Debian 12 root filesystems, the host VM) are downloaded and unpacked while
# the build compiles: mostly network and disk, they would otherwise add their
# minutes to the tiers'. Each builder takes a lock, so a tier that needs an
# image before it is done waits for it; a failure here only means the tier
# builds it itself. Nothing to do where they are cached.
prefetch_pid=
if has_stage main; then
  mkdir -p "$build"
  (bash tests/systemd/build-rootfs.sh trixie && bash tests/hostvm/build-hostvm.sh) >"$build/prefetch.log" 2>&1 &
  prefetch_pid=$!
fi

# Tests must leave nothing behind: no namespaces, no QEMU, no relinkd, no libvirtd, no
# passt (tests run it as "passt -f --fd 3 ..." or on a /tmp/relink-* socket).
check_leftovers() {
  local leftovers procs
  leftovers=$(ip netns list 2>/dev/null | grep -o '^relink-[^ ]*' || true)
  procs=$(pgrep -a -f "$1/relinkd|qemu-system-x86_64 .*relink|/usr/sbin/libvirtd|qemu-system-x86_64 -name guest=|passt(\.avx2)? -f (--fd 3|--socket /tmp/relink-)" || true)
  if [ -n "$leftovers$procs" ]; then
    echo "test.sh: tests ($1) left things behind:" >&2
    [ -n "$leftovers" ] && echo "  namespaces: $leftovers" >&2
    [ -n "$procs" ] && echo "  processes: $procs" >&2
    for ns in $leftovers; do ip netns del "$ns" 2>/dev/null || true; done
    pkill -9 -f "passt(\.avx2)? -f (--fd 3|--socket /tmp/relink-)" 2>/dev/null || true
    status=1
  fi
}

# The ASan+UBSan build (Debug, -O0: with ASan, -O2 compiles about four times
# slower, daemon.cc 140 s against 30 s, more than the tests gain from running
# faster), without the benchmarks.
build_asan() {
  cmake -S . -B "$asan_build" -DCMAKE_BUILD_TYPE=Debug -DRELINK_WERROR=ON \
    -DCMAKE_CXX_FLAGS_DEBUG="$line_tables" "${launcher[@]}" \
    -DRELINK_SANITIZE=ON -DRELINK_BUILD_BENCH=OFF >/dev/null
  cmake --build "$asan_build" -j"$(nproc)"
}

if has_stage main; then
  begin "build"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELINK_WERROR=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$line_tables -O2 -DNDEBUG" "${launcher[@]}" >/dev/null
  cmake --build "$build" -j"$(nproc)"
  end "build"
  # While the tests run, the sanitized build and the fuzzers compile at the
  # idle scheduling class (SCHED_IDLE): they get only the CPU time the tests
  # leave unused (the tests mostly wait on guests, QEMU and timers), so the
  # tests see no load from them. On a machine with nothing cached this takes
  # their 10 minutes of compiling off the run; with a warm ccache there is
  # little to do. The stages below build again in the foreground: nothing
  # left to do when this finished, the compiler's errors when it failed.
  ahead_pid=
  if has_stage asan || has_stage fuzz; then
    mkdir -p "$asan_build"
    rm -f "$asan_build/.ahead-done"
    (
      chrt --idle -p 0 "$BASHPID" >/dev/null 2>&1 || renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
      t=$(date +%s)
      if has_stage asan; then build_asan || true; fi
      echo "asan build ahead: $(( $(date +%s) - t )) s"
      touch "$asan_build/.ahead-done"
      t=$(date +%s)
      if has_stage fuzz; then RELINK_FUZZ_BUILD="$build-fuzz" bash scripts/fuzz.sh --build-only || true; fi
      echo "fuzz build ahead: $(( $(date +%s) - t )) s"
    ) >"$build/ahead.log" 2>&1 &
    ahead_pid=$!
  fi
  begin "tests"
  ctest --test-dir "$build" --output-on-failure --timeout 900 || status=$?
  end "tests"
  wait "$prefetch_pid" || echo "test.sh: building the tiers' images ahead failed ($build/prefetch.log): the tiers built them"
  check_leftovers "$build"
fi

if has_stage asan; then
  # The same tests with ASan+UBSan in every process built here: the test
  # binaries and the relinkd (and relinkctl) the integration tests start.
  # ASan and LeakSanitizer reports go to files (log_path), not stderr:
  # relinkd's log lives in a test's temporary directory, which the test
  # removes, and a leak report is written at exit, after any test could look.
  # gcc's UBSan ignores log_path and prints to stderr: it aborts the process
  # (a test fails, or relinkd dies under its test), and the ctest log is
  # searched for its reports as well. Any report fails the run.
  begin "asan: build"
  if [ -n "${ahead_pid:-}" ]; then
    while [ ! -e "$asan_build/.ahead-done" ] && kill -0 "$ahead_pid" 2>/dev/null; do sleep 2; done
    grep -h "ahead:" "$build/ahead.log" || true
  fi
  build_asan
  end "asan: build"
  begin "asan: tests"
  reports=$(realpath -m "$asan_build/sanitizer-reports")
  rm -rf "$reports" && mkdir -p "$reports"
  asan_status=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$reports/asan \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$reports/ubsan \
    ctest --test-dir "$asan_build" --output-on-failure --timeout 900 || asan_status=$?
  end "asan: tests"
  grep -E -B2 -A30 "ERROR: (Address|Leak)Sanitizer|runtime error:" \
    "$asan_build/Testing/Temporary/LastTest.log" >"$reports/from-ctest-log" || rm -f "$reports/from-ctest-log"
  if [ -n "$(ls -A "$reports")" ]; then
    echo "test.sh: sanitizer reports ($reports):" >&2
    for f in "$reports"/*; do echo "--- $f" >&2; head -60 "$f" >&2; done
    asan_status=1
  fi
  [ $asan_status -eq 0 ] || { echo "test.sh: the sanitized test run failed" >&2; status=1; }
  check_leftovers "$asan_build"
fi

if has_stage fuzz; then
  begin "fuzz: build and ${fuzz_seconds} s per target"
  if [ -n "${ahead_pid:-}" ]; then
    wait "$ahead_pid" || true
    grep -h "fuzz build ahead:" "$build/ahead.log" || true
  fi
  RELINK_FUZZ_BUILD="$build-fuzz" bash scripts/fuzz.sh "$fuzz_seconds" || status=1
  end "fuzz: build and ${fuzz_seconds} s per target"
fi

echo "test.sh: stage times"
printf '  %s\n' "${timings[@]}"
exit $status
