#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# scripts/build-progress.sh on recorded `cmake --build` output
# (tests/fixtures/build: Makefiles building relinkd from scratch until a link
# error, an incremental build of relinkd and relinkctl, an up-to-date one, and
# Ninja building relink_engine from scratch).
#
# Usage: build_progress_test.sh SOURCE_DIR
set -uo pipefail
src=$1
fixtures=$src/tests/fixtures/build
fail=0

expect() {  # FIXTURE EXPECTED-OUTPUT (elapsed times blanked to M:SS)
  local got
  got=$(bash "$src/scripts/build-progress.sh" <"$fixtures/$1" | sed -E 's/[0-9]+:[0-9]{2}/M:SS/')
  if [ "$got" == "$2" ]; then
    echo "ok: $1"
  else
    echo "FAILED: $1"; diff <(echo "$2") <(echo "$got") | sed 's/^/  /'; fail=1
  fi
}

expect make-failed-link.txt "\
  [  2%]  M:SS  src/util/defer_queue.cc
  [ 13%]  M:SS  src/util/trusted_dir.cc
  [ 23%]  M:SS  src/passt/pidfile.cc
  [ 34%]  M:SS  src/macvtap/tap_device.cc
  [ 44%]  M:SS  src/netlink/link.cc
  [ 57%]  M:SS  src/qemu/qmp_client.cc
  [ 68%]  M:SS  src/engine/binding.cc
  [ 78%]  M:SS  src/daemon/control_server.cc
  [ 89%]  M:SS  src/daemon/qemu_names.cc
  [100%]  M:SS  linking relinkd
  build failed after M:SS (29 compiled before it)"

expect make-incremental.txt "\
  [ 21%]  M:SS  src/passt/passt.cc
  [ 39%]  M:SS  src/config/config.cc
  [ 97%]  M:SS  linking relinkd
  [100%]  M:SS  done: 4 compiled, linked relinkd relinkctl"

expect make-up-to-date.txt "  up to date: nothing to compile"

expect ninja-engine.txt "\
  [ 10%]  M:SS  src/util/defer_queue.cc
  [ 20%]  M:SS  src/util/log.cc
  [ 30%]  M:SS  src/util/mac.cc
  [ 40%]  M:SS  src/util/path_watch.cc
  [ 50%]  M:SS  src/util/trusted_dir.cc
  [ 60%]  M:SS  src/util/untrusted.cc
  [ 80%]  M:SS  src/engine/binding.cc
  [ 90%]  M:SS  src/engine/passt_binding.cc
  [100%]  M:SS  done: 8 compiled"

# A larger step condenses more; no input at all is "up to date".
lines=$(bash "$src/scripts/build-progress.sh" 25 <"$fixtures/make-failed-link.txt" | wc -l)
[ "$lines" -eq 5 ] && echo "ok: step 25 gives 4 progress lines and the verdict" ||
  { echo "FAILED: step 25 gave $lines lines"; fail=1; }
[ "$(bash "$src/scripts/build-progress.sh" </dev/null)" == "  up to date: nothing to compile" ] &&
  echo "ok: empty input" || { echo "FAILED: empty input"; fail=1; }
exit $fail
