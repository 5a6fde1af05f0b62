#!/usr/bin/env bash
# What shadow evaluation costs the primary (docs/rollout.md, What the primary pays): mlp-med at
# batch 1, 16 connections, JSON over loopback TCP, the primary shadowed at 100 % ("on") or not
# ("off"), alternated ROUNDS times (default 5) with N requests each (default 20000: long enough
# that the CPU budget, not its 50 ms burst, decides; SHADOW_CPU_SHARE overrides the server's
# default share for the "on" runs). Prints each run and the medians: p50, p99 (µs), throughput (req/s), on/off ratios, and the share of the
# sampled requests the shadow compared (the rest dropped, mostly by the CPU budget,
# server.shadow_cpu_share; docs/rollout.md).
#
#   bash bench/shadow/run.sh            # or ROUNDS=9 N=40000 bash bench/shadow/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
N=${N:-20000}
export PATH=/usr/local/go/bin:$PATH GOTOOLCHAIN=${GOTOOLCHAIN:-local}
mkdir -p build
go test -c -o build/shadow-bench.test ./server/
cd server
for i in $(seq "$ROUNDS"); do
	for v in off on; do
		../build/shadow-bench.test -test.run '^$' -test.bench "BenchmarkShadowOverhead/$v\$" -test.benchtime "${N}x" | grep '^BenchmarkShadowOverhead'
	done
done | awk '
function median(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ print; v = ($1 ~ /\/on/) ? "on" : "off"; k = ++n[v]
  for (i = 2; i < NF; i++) { if ($(i+1) == "p50-µs") p50[v, k] = $i; if ($(i+1) == "p99-µs") p99[v, k] = $i; if ($(i+1) == "req/s") rps[v, k] = $i; if ($(i+1) == "compared/op") cmp[k] = $i } }
END {
  for (v in n) { for (k = 1; k <= n[v]; k++) { a[k] = p50[v, k]; b[k] = p99[v, k]; c[k] = rps[v, k] }
    m50[v] = median(a, n[v]); m99[v] = median(b, n[v]); mr[v] = median(c, n[v]) }
  for (k = 1; k <= n["on"]; k++) d[k] = cmp[k] + 0; mc = median(d, n["on"])
  printf "median of %d rounds   p50 µs   p99 µs   req/s\n", n["off"]
  printf "shadow off           %7.0f  %7.0f  %7.0f\n", m50["off"], m99["off"], mr["off"]
  printf "shadow on (100 %%)    %7.0f  %7.0f  %7.0f\n", m50["on"], m99["on"], mr["on"]
  printf "on / off             %7.2f  %7.2f  %7.2f\n", m50["on"] / m50["off"], m99["on"] / m99["off"], mr["on"] / mr["off"]
  printf "sampled requests compared (median): %.3f\n", mc
}'
