#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The shipped unit's sandbox, as systemd rates it: `systemd-analyze security
# --offline=yes` on the unit configured in the build directory must give an
# overall exposure of at most 5.5 (systemd's "MEDIUM"). Prints the score and
# what still counts against it.
#
#   unit_security_test.sh BUILD_DIR
set -euo pipefail

build=${1:?usage: unit_security_test.sh BUILD_DIR}
max=5.5
unit=$build/relinkd.service
[[ -f $unit ]] || { echo "FAIL: $unit is missing (configure the build directory)"; exit 1; }
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is not installed"
  exit 77
fi

# Offline, the unit's own file is analysed, not what a running manager has
# loaded; systemd-analyze exits non-zero on its own threshold, so it is
# judged by the score alone.
out=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for relinkd.service: \([0-9][0-9.]*\).*/\1/p' <<<"$out")
if [[ -z $score ]]; then
  echo "FAIL: no exposure level in the output of systemd-analyze security --offline=yes $unit:"
  echo "$out"
  exit 1
fi
echo "relinkd.service exposure: $score (at most $max)"
if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
  echo "FAIL: relinkd.service scores $score, above $max. What counts against it:"
  grep '✗' <<<"$out" || true
  exit 1
fi
echo "PASS"
