#!/usr/bin/env bash
# Turn a benchmark run's TSV files into docs/performance.md and the plots in
# docs/img/ (gnuplot, SVG).
#
#   bench/report.sh RESULTS_DIR [DOC] [IMG_DIR]
#
# RESULTS_DIR holds what the benchmarks wrote (RESPOOL_BENCH_OUT): one TSV
# per table (first line: the column names), threads.tsv (throughput against
# thread count, long format: contender, threads, pairs_per_s) and
# waits_<contender>.tsv (W3 wait histogram: upper bound in ns, count).
# Every table present is rendered in a fixed order; missing ones are skipped
# with a note, so a partial run still gives a readable page.
set -euo pipefail

results=${1:?usage: bench/report.sh RESULTS_DIR [DOC] [IMG_DIR]}
doc=${2:-docs/performance.md}
img=${3:-docs/img}
mkdir -p "$img" "$(dirname "$doc")"
img_rel=$(realpath --relative-to="$(dirname "$doc")" "$img")

# tsv_table FILE: the TSV as a markdown table.
tsv_table() {
    awk -F '\t' '
        NR == 1 { row = "|"; sep = "|"
                  for (i = 1; i <= NF; i++) { row = row " " $i " |"; sep = sep "---|" }
                  print row; print sep; next }
        { row = "|"; for (i = 1; i <= NF; i++) row = row " " $i " |"; print row }' "$1"
}

# version_of COMMAND...: the first line it prints, or "not installed".
version_of() {
    "$@" 2>/dev/null | head -n 1 || true
}

machine() {
    local cpu
    cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
    echo "| item | value |"
    echo "|---|---|"
    echo "| CPU | ${cpu:-unknown}, $(nproc) cores online |"
    echo "| kernel | $(uname -sr) |"
    echo "| compiler | $(version_of "${CC:-cc}" --version) |"
    echo "| glibc | $(version_of ldd --version) |"
    echo "| libpq / server | $(version_of pg_config --version) |"
    echo "| APR-util | $(pkg-config --modversion apr-util-1 2>/dev/null || echo not installed) |"
    echo "| libmemcached | $(pkg-config --modversion libmemcached 2>/dev/null || echo not installed) |"
    echo "| PgBouncer | $(version_of /usr/sbin/pgbouncer --version) |"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
}

# plot_threads: throughput against thread count, one line per contender.
plot_threads() {
    local data="$results/threads.tsv" out="$img/throughput-vs-threads.svg"
    [ -f "$data" ] || return 1
    local plots="" contender
    while read -r contender; do
        awk -F '\t' -v c="$contender" 'NR > 1 && $1 == c { print $2 "\t" $3 }' "$data" \
            >"$results/.threads_$contender.dat"
        plots="$plots${plots:+, }'$results/.threads_$contender.dat' using 1:(\$2/1e6) with linespoints title '$contender'"
    done < <(awk -F '\t' 'NR > 1 { print $1 }' "$data" | awk '!seen[$0]++')
    gnuplot <<EOF
set terminal svg size 720,420 font "sans,12" noenhanced
set output '$out'
set title 'Throughput against thread count (pool of 4, ~1 µs held)'
set xlabel 'threads'
set ylabel 'million checkout+checkin pairs/s'
set logscale x 2
set key outside right
set grid
plot $plots
EOF
}

# plot_waits: W3 wait-time distribution (fraction of checkouts waiting at
# least x), one line per contender, log-log.
plot_waits() {
    local out="$img/w3-wait-distribution.svg" plots="" file contender
    for file in "$results"/waits_*.tsv; do
        [ -f "$file" ] || return 1
        contender=$(basename "$file" .tsv)
        contender=${contender#waits_}
        awk -F '\t' 'NR > 1 { bound[NR] = $1; count[NR] = $2; total += $2; n = NR }
            END { left = total
                  for (i = 2; i <= n; i++) {
                      if (left > 0) print bound[i] / 1000 "\t" left / total
                      left -= count[i] } }' "$file" >"$results/.waits_$contender.dat"
        plots="$plots${plots:+, }'$results/.waits_$contender.dat' using 1:2 with steps title '$contender'"
    done
    gnuplot <<EOF
set terminal svg size 720,420 font "sans,12" noenhanced
set output '$out'
set title 'W3: time inside checkout (16 threads, pool of 4)'
set xlabel 'wait (µs)'
set ylabel 'fraction of checkouts waiting at least this long'
set logscale xy
set key outside right
set grid
plot $plots
EOF
}

section() { # section FILE TITLE TEXT
    local file="$results/$1.tsv"
    printf '\n### %s\n\n%s\n\n' "$2" "$3"
    if [ -f "$file" ]; then
        tsv_table "$file"
    else
        echo "_Not measured in this run ($1.tsv missing)._"
    fi
}

{
    cat <<'EOF'
# respool performance

Written by `make bench` (bench/report.sh) from one run; do not edit by
hand. Every contender is measured in the same process design and harness,
in interleaved rounds (each round runs every contender once, in rotating
order); tables give the median over rounds with the min–max range, and each
contender's ratio to respool. This machine is shared and small (see below):
compare ratios within one table, not absolute times across runs.

Every benchmark process runs one idle extra thread, so glibc's
single-thread shortcuts (no atomics) flatter no one.

## Contenders

- **respool** — this library.
- **floor-mutex** — a stack of pointers under one `pthread_mutex` with one
  `pthread_cond`; waiters barge (the throughput floor).
- **floor-fifo** — the same with a strict FIFO hand-off to per-thread
  condition variables (the fairness floor).
- **apr_reslist** — APR-util's resource list.
- **memcached_pool** — libmemcachedutil's connection pool (lazy
  connections: no server involved).
- Postgres: respool with 8 connections, 32 dedicated connections (the
  ceiling), a new connection per transaction, and PgBouncer in transaction
  mode with 8 server connections.

## Results
EOF
    section w1 "W1 — uncontended" "1 thread, pool of 8: one checkout+checkin pair, ns per pair."
    section w2 "W2 — two threads" "2 threads, pool of 8: pairs/s."
    section w3 "W3 — oversubscribed" "16 threads, pool of 4, each holding the resource for a calibrated ~1 µs: pairs/s, time inside checkout (p50/p99/max), fairness = min/max cycles per thread."
    section w4 "W4 — hand-off latency" "Pool of 1: one thread parked in checkout, another checks in; time from the checkin call to the waiter's return."
    section scale "Scale" "W1 and W3 with pools of 8 and 65,536 resources, W3 with 1,000 waiting threads, and memory per resource."
    section coldstart "Cold start" "A pool of 64 whose factory takes 20 ms: time until respool_create returns, against creating them one after another."
    section pg "PostgreSQL" "32 threads for a fixed time: SELECT 1 and a small read-write transaction; transactions/s and p99 latency."

    printf '\n## Plots\n\n'
    if plot_threads; then
        printf '![Throughput against thread count](%s/throughput-vs-threads.svg)\n\n' "$img_rel"
    else
        printf '_No thread sweep in this run._\n\n'
    fi
    if plot_waits; then
        printf '![W3 wait-time distribution](%s/w3-wait-distribution.svg)\n\n' "$img_rel"
    else
        printf '_No wait distributions in this run._\n\n'
    fi

    printf '## Machine and versions\n\n'
    machine
    printf '\n## Reproduce\n\n```sh\nmake bench            # full run (a few minutes)\nmake bench QUICK=1    # under a minute: fewer, shorter rounds\n```\n'
} >"$doc.tmp"
mv "$doc.tmp" "$doc"
rm -f "$results"/.threads_*.dat "$results"/.waits_*.dat
echo "bench/report.sh: wrote $doc and plots in $img" >&2
