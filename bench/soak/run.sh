#!/usr/bin/env bash
# make bench-soak / make bench-memory (and the short soak at the end of make bench).
#
#   bash bench/soak/run.sh soak   [policyctl bench soak flags...]    e.g. -d 30m
#   bash bench/soak/run.sh memory [policyctl bench memory flags...]
#
# Env knobs: PEERS_DIR (default ../shared/peers; only read), GO. Needs lib/ (make native).
# Writes build/bench/<run-id>/ (soak: report.json, report.txt, samples.csv; memory:
# memory.json, memory.txt; both: the repository, server configs and logs) and build/soak-lib/.
# The servers listen on 127.0.0.1 only and are stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

what=${1:-}
case $what in
  soak|memory) shift ;;
  *) echo "usage: bash bench/soak/run.sh soak|memory [flags...]" >&2; exit 2 ;;
esac
PEERS_DIR=${PEERS_DIR:-../shared/peers}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

[[ -f $PEERS_DIR/models/models.json ]] || { echo "bench-$what: $PEERS_DIR/models/models.json is missing (PEERS_DIR)" >&2; exit 1; }
[[ -f lib/libpolicyd.so ]] || { echo "bench-$what: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }

# A private copy of lib/ (a concurrent `make native` rewrites lib/*.so in place); the backend
# plugin is found beside the libpolicyd.so that is loaded.
rm -rf build/soak-lib && mkdir -p build/soak-lib
cp lib/*.so build/soak-lib/
export LD_LIBRARY_PATH="$PWD/build/soak-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

mkdir -p bin
"$GO" build -o bin/policyd ./cmd/policyd
"$GO" build -o bin/policyctl ./cmd/policyctl
exec bin/policyctl bench "$what" -peers "$PEERS_DIR" "$@"
