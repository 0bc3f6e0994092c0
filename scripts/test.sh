#!/usr/bin/env bash
# Builds relink and runs every test: unit tests, integration tests in
# throwaway network namespaces with a real QEMU, and the end-to-end test with
# a booted guest. Run as root on Debian 12. Usage: scripts/test.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

bash scripts/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELINK_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"

# The guest image for the end-to-end test (cached in the build directory).
bash tests/guest/build-guest.sh "$build/guest"

# Namespaces left by an earlier run that was killed (a destructor that never
# ran) are not this run's fault: remove them first, and say so.
for ns in $(ip netns list 2>/dev/null | grep -o '^relink-[^ ]*' || true); do
  echo "test.sh: removing stale namespace $ns from an earlier run"
  ip netns del "$ns" 2>/dev/null || true
done

status=0
ctest --test-dir "$build" --output-on-failure --timeout 900 || status=$?

# Tests must leave nothing behind: no namespaces, no QEMU, no relinkd, no
# passt (tests run it as "passt -f --fd 3 ..." or on a /tmp/relink-* socket).
leftovers=$(ip netns list 2>/dev/null | grep -o '^relink-[^ ]*' || true)
procs=$(pgrep -a -f "$build/relinkd|qemu-system-x86_64 .*relink|passt(\.avx2)? -f (--fd 3|--socket /tmp/relink-)" || true)
if [ -n "$leftovers$procs" ]; then
  echo "test.sh: tests left things behind:" >&2
  [ -n "$leftovers" ] && echo "  namespaces: $leftovers" >&2
  [ -n "$procs" ] && echo "  processes: $procs" >&2
  for ns in $leftovers; do ip netns del "$ns" 2>/dev/null || true; done
  pkill -9 -f "passt(\.avx2)? -f (--fd 3|--socket /tmp/relink-)" 2>/dev/null || true
  status=1
fi
exit $status
