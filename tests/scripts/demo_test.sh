#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# scripts/demo.sh as a newcomer runs it, with its output piped (as in CI or
# `| tee`): it must succeed, report its progress step by step, print no
# terminal escape codes, give the spread of its reattach and recovery times,
# and leave no namespace behind. It reuses BUILD_DIR (built by then), so it
# neither configures nor compiles. Needs root; exits 77 (skipped) otherwise.
#
# Usage: demo_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
src=$1 build=$2
if [ "$(id -u)" -ne 0 ]; then echo "skipped: the demo needs root (namespaces, macvtap, QEMU)"; exit 77; fi

out=$(mktemp /tmp/relink-demo-test.XXXXXX)
demo_pid=
# ctest's timeout, or ^C: the demo's own trap removes what it made.
trap '[ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null; wait; rm -f "$out"; exit 1' INT TERM
trap 'rm -f "$out"' EXIT

before=$(ip netns list | grep -c '^relink-demo' || true)
RELINK_BUILD_DIR=$build RELINK_DEMO_FLAPS=2 bash "$src/scripts/demo.sh" >"$out" 2>&1 &
demo_pid=$!
wait "$demo_pid"
status=$?
demo_pid=

cat "$out"  # for ctest --output-on-failure
echo "---- checks"
fail=0
check() {  # DESCRIPTION GREP-ARGS...
  local what=$1; shift
  if grep -q "$@" "$out"; then echo "ok: $what"; else echo "FAILED: $what"; fail=1; fi
}
[ "$status" -eq 0 ] && echo "ok: the demo exits 0" || { echo "FAILED: the demo exited $status"; fail=1; }
if grep -q $'\x1b' "$out"; then
  echo "FAILED: escape codes in piped output:"; grep -n $'\x1b' "$out" | cat -v | head -5; fail=1
else
  echo "ok: no escape codes"
fi
check "says up front what the run does" -E "^demo: (reusing the build in |the first run installs packages, builds relink \\(about 7 minutes)"
check "step 1/3 heading" -E '^== \[1/3\] dependencies'
check "step 2/3 heading" -E '^== \[2/3\] building relinkd and relinkctl'
check "the build reports progress or up to date" -E '^  (up to date: nothing to compile|\[100%\] .* done: )'
check "it did not configure again" -F "configured already: reusing it"
check "step 3/3 heading" -E '^== \[3/3\] the guest image'
check "each step says how long it took" -E '^  done in [0-9]+:[0-9]{2}$'
check "each flap reports its reattach time" -E '^  relinkd reattached the NIC in [0-9.]+ ms$'
check "each kill reports its recovery time" -E "QEMU's stream connected again [0-9.]+ ms after the old one died$"
check "reattach spread, not the last sample" -E "^  reattach, .*: +median [0-9.]+ ms \(min [0-9.]+, max [0-9.]+, 2 samples\)$"
check "the libvirt scene starts" -F "<interface type='direct'> on eth1, <interface type='bridge'> on br0"
check "virsh domiflist before and after" -E '^  virsh domiflist demo-libvirt, after:$'
check "the libvirt macvtap is re-plugged" -E '^  relinkd re-plugged the direct interface through libvirt \(a new macvtap\) in [0-9.]+ ms,$'
check "the tap re-joins the new bridge" -E '^  and put the tap back into the new br0 \(no call to libvirt\) in [0-9.]+ ms$'
check "the libvirt guest answers on its macvtap after" -E '^  guest answers on its macvtap \(192.0.2.34\)$'
check "the libvirt guest answers on its bridge tap after" -E '^  guest answers on its bridge tap \(192.0.2.50\)$'
check "recovery spread" -E "^  passt recovery, .*: +median [0-9.]+ ms \(min [0-9.]+, max [0-9.]+, 2 samples\)$"
if grep -qE 'relinkd \| .* info +passt: ' "$out"; then
  echo "FAILED: passt's chatter reached relinkd's info log:"; grep -E 'relinkd \| .* info +passt: ' "$out" | head -5; fail=1
else
  echo "ok: passt's start-up banner stays at debug"
fi
after=$(ip netns list | grep -c '^relink-demo' || true)
[ "$after" -le "$before" ] && echo "ok: no namespace left" || { echo "FAILED: relink-demo namespaces left"; fail=1; }
exit $fail
