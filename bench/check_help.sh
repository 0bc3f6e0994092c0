#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# check_help.sh BENCH FLAG: `BENCH FLAG` (--help or -h) must exit 0 within a
# few seconds and print its usage, what it measures and how long it takes.
set -uo pipefail
bench=$1 flag=$2
start=$(date +%s%N)
out=$(timeout 5 "$bench" "$flag" </dev/null 2>&1)
status=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf '%s\n' "$out"
echo "---- $(basename "$bench") $flag: exit $status after $ms ms"
fail=0
[ "$status" -eq 0 ] || { echo "FAILED: exit status $status, not 0"; fail=1; }
[ "$ms" -lt 3000 ] || { echo "FAILED: took $ms ms, not at once"; fail=1; }
grep -qi '^usage: ' <<<"$out" || { echo "FAILED: no 'usage:' line"; fail=1; }
grep -qi 'takes about\|a run .*takes' <<<"$out" || { echo "FAILED: does not say how long a run takes"; fail=1; }
grep -qi 'measure' <<<"$out" || { echo "FAILED: does not say what it measures"; fail=1; }
grep -q -- '--help' <<<"$out" || { echo "FAILED: does not list its options"; fail=1; }
exit $fail
