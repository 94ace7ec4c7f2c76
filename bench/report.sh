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

# The issue's targets, each checked against this run's own figures.
targets() {
    awk -F'\t' '
        function verdict(ok) { return ok ? "met" : "**missed**" }
        function row(target, measured, ok) {
            printf "| %s | %s | %s |\n", target, measured, verdict(ok)
        }
        FILENAME ~ /w1.tsv$/ && FNR > 1 { w1[$1] = $2 }
        FILENAME ~ /w2.tsv$/ && FNR > 1 { w2[$1] = $2 }
        FILENAME ~ /w3.tsv$/ && FNR > 1 { w3[$1] = $2; fair[$1] = $6; maxwait[$1] = $9 }
        FILENAME ~ /w4.tsv$/ && FNR > 1 { w4[$1] = $2 }
        FILENAME ~ /scale.tsv$/ && FNR > 1 { scale[$1 "/" $2] = $4 }
        FILENAME ~ /coldstart.tsv$/ && FNR > 1 { cold[$1] = $6 }
        FILENAME ~ /pg.tsv$/ && FNR > 1 { pg[$1 "/" $2] = $3 }
        END {
            print "| target | this run | |"
            print "|---|---|---|"
            if (("respool" in w1) && ("floor-mutex" in w1)) {
                r = w1["respool"] / w1["floor-mutex"]
                row("W1: at most 1.3x the mutex floor", sprintf("%.2fx (%.1f ns against %.1f ns)", r, w1["respool"], w1["floor-mutex"]), r <= 1.3)
                fastest = ""; best = 1e18
                for (c in w1) if (c != "respool" && c !~ /^floor/ && w1[c] < best) { best = w1[c]; fastest = c }
                if (fastest != "")
                    row("W1: faster than every peer", sprintf("respool %.1f ns; fastest peer %s %.1f ns", w1["respool"], fastest, best), w1["respool"] < best)
            }
            if (("respool" in w2) && ("floor-mutex" in w2)) {
                r = w2["respool"] / w2["floor-mutex"]
                row("W2: at least 0.8x the mutex floor", sprintf("%.2fx", r), r >= 0.8)
            }
            if (("respool" in w3) && ("floor-mutex" in w3)) {
                r = w3["respool"] / w3["floor-mutex"]
                row("W3: throughput at least the barging floor", sprintf("%.2fx (%.2f M/s)", r, w3["respool"] / 1e6), r >= 1)
                row("W3: fairness at least 0.9", sprintf("%.2f (floor-mutex %.2f)", fair["respool"], fair["floor-mutex"]), fair["respool"] >= 0.9)
                row("W3: max wait at most 5 ms", sprintf("%.1f ms (floor-mutex %.1f ms)", maxwait["respool"] / 1e6, maxwait["floor-mutex"] / 1e6), maxwait["respool"] <= 5e6)
            }
            if (("respool" in w4) && ("futex-floor" in w4)) {
                r = w4["respool"] / w4["futex-floor"]
                row("W4: no worse than a futex wake", sprintf("%.2fx (p50 %.1f us against %.1f us)", r, w4["respool"] / 1e3, w4["futex-floor"] / 1e3), r <= 1.1)
            }
            if ((("w1_pool8/respool") in scale) && (("w1_pool65536/respool") in scale)) {
                r = scale["w1_pool65536/respool"] / scale["w1_pool8/respool"]
                row("Scale: W1 at 65,536 within 1.2x of W1 at 8", sprintf("%.2fx", r), r <= 1.2)
            }
            if ("respool" in cold)
                row("Cold start: within 4 factory latencies (default max_creating 16)", sprintf("%.2f", cold["respool"]), cold["respool"] <= 4)
            if ("respool-wide" in cold)
                row("Cold start: within 4 factory latencies (max_creating 64)", sprintf("%.2f", cold["respool-wide"]), cold["respool-wide"] <= 4)
            n = split("select1 rw", workloads, " ")
            for (k = 1; k <= n; k++) {
                w = workloads[k]
                if (((w "/respool") in pg) && ((w "/dedicated") in pg)) {
                    r = pg[w "/respool"] / pg[w "/dedicated"]
                    row("Postgres " w ": at least 0.9x dedicated connections", sprintf("%.2fx", r), r >= 0.9)
                }
                if (((w "/respool") in pg) && ((w "/pgbouncer") in pg)) {
                    r = pg[w "/respool"] / pg[w "/pgbouncer"]
                    row("Postgres " w ": ahead of PgBouncer", sprintf("%.2fx PgBouncer", r), r > 1)
                }
            }
        }' "$results"/w1.tsv "$results"/w2.tsv "$results"/w3.tsv "$results"/w4.tsv \
           "$results"/scale.tsv "$results"/coldstart.tsv "$results"/pg.tsv 2>/dev/null
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

## Targets

The targets of the benchmark issue, checked against this run (ratios
within the run; W4 allows 10% over the bare futex wake for the pool's own
lock and bookkeeping). Why a missed target is missed: `docs/performance-notes.md`.

EOF
    targets
    cat <<'EOF'

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
