/*
 * report.c — the tables on stdout and the TSV files (see report.h).
 *
 * TSV files, written into the directory named by RESPOOL_BENCH_OUT (created
 * if missing; `make bench` sets it to build/bench/results unless given).
 * Each file: one header line of column names, then one line per row;
 * fields separated by one tab; numbers in C locale, plain decimals (no
 * exponent): measurements with one decimal ("%.1f"), ratios and fractions
 * with four ("%.4f"), counts as integers; no comment lines. "Over rounds": every round runs every contender once,
 * so each contender has one value per round; median/min/max are taken over
 * those values. ratio = this contender's median / respool's median, in the
 * file's unit (ns: above 1 is slower than respool; pairs/s: above 1 is
 * faster). Contender names: respool, floor-mutex, floor-fifo, apr-reslist,
 * memcached-pool (and futex-floor, sequential where said).
 *
 *   w1.tsv         W1: 1 thread, pool of 8, checkout+checkin in a loop
 *                  contender  median_ns  min_ns  max_ns  ratio
 *                  (ns per pair)
 *   w2.tsv         W2: 2 threads, pool of 8, nothing held
 *                  contender  median_pairs_per_s  min_pairs_per_s
 *                  max_pairs_per_s  ratio
 *   w3.tsv         W3: 16 threads, pool of 4, ~1 us busy loop while holding
 *                  contender  median_pairs_per_s  min_pairs_per_s
 *                  max_pairs_per_s  ratio  fairness  wait_p50_ns
 *                  wait_p99_ns  wait_max_ns
 *                  fairness = fewest / most pairs of one thread in a run
 *                  (median over rounds); wait = time inside checkout,
 *                  p50/p99 of each run (median over rounds), max = the
 *                  longest of all rounds. Percentiles are histogram bucket
 *                  upper bounds (at most 6.25 % above the true value).
 *   w4.tsv         W4: hand-off latency, pool of 1: checkin call -> return
 *                  of the checkout of a thread verified parked, both
 *                  threads pinned to one CPU
 *                  contender  p50_ns  p50_min_ns  p50_max_ns  p99_ns
 *                  p99_min_ns  p99_max_ns  ratio
 *                  (p50/p99 over the iterations of a run, then median, min,
 *                  max over rounds; ratio of p50; first row: futex-floor,
 *                  a bare FUTEX_WAKE to a thread in FUTEX_WAIT)
 *   threads.tsv    W3-style throughput against thread count (pool of 4,
 *                  ~1 us held), long format, one line per (contender,
 *                  thread count), thread counts 1 2 4 8 16 32 (16 is W3):
 *                  contender  threads  median_pairs_per_s  min_pairs_per_s
 *                  max_pairs_per_s
 *                  e.g. gnuplot, one contender:
 *                    set datafile separator "\t"
 *                    plot 'threads.tsv' using 2:(strcol(1) eq "respool" ?
 *                         $3 : NaN) with linespoints
 *   scale.tsv      long format, one line per (case, contender):
 *                  case  contender  unit  median  min  max  ratio
 *                  cases: w1_pool8 (ns), w1_pool65536 (ns), w3_pool8
 *                  (pairs/s), w3_pool65536 (pairs/s), w3_1000threads
 *                  (pairs/s), w3_1000threads_fairness (fraction),
 *                  w3_1000threads_wait_p99 (ns), heap_per_resource
 *                  (bytes; malloc bytes in use, mallinfo2: misses APR,
 *                  whose allocator maps its own memory), rss_per_resource
 *                  (bytes; resident set growth; both measured in a fresh
 *                  process, pool open, trivial resources); pool and thread
 *                  counts are the defaults (65536 resources, 1000
 *                  threads, pool of 4 for the 1000-thread case); a
 *                  contender not run in a case has no line for it
 *   coldstart.tsv  pool of 64 whose factory sleeps 20 ms: time until the
 *                  create call returns
 *                  contender  median_ms  min_ms  max_ms  ratio
 *                  factory_latencies
 *                  (factory_latencies = median / factory sleep; rows:
 *                  respool, sequential = 64 creations one after another
 *                  (the floors' fill), apr-reslist)
 *   waits_<contender>.tsv   W3 wait-time distribution, every checkout of
 *                  every round: upper_ns  count
 *                  one line per histogram bucket from the first to the last
 *                  non-empty one (empty ones in between included); a bucket
 *                  holds the waits in (previous line's upper_ns, upper_ns];
 *                  16 buckets per power of two above 16 ns, one per ns
 *                  below.
 */
#include "report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const unsigned sweep_threads[SWEEP_POINTS] = {1, 2, 4, 8, 16, 32};
const char *const coldstart_names[COLD_ROWS] = {"respool", "respool-wide", "sequential",
                                                 "apr-reslist"};

void contended_series_add(contended_series_t *series, const contended_result_t *result)
{
    series_add(&series->pairs_per_s, result->pairs_per_s);
    series_add(&series->fairness, result->fairness);
    series_add(&series->wait_p50_ns, (double)result->wait_p50_ns);
    series_add(&series->wait_p99_ns, (double)result->wait_p99_ns);
    series_add(&series->wait_max_ns, (double)result->wait_max_ns);
}

/* this / reference, or 0 when there is no reference. */
static double ratio_of(double value, double reference)
{
    return reference > 0 ? value / reference : 0;
}

/* ---- tables on stdout --------------------------------------------------------- */

/* Median, min, max and ratio of one contender's series, `scale` dividing
 * every value (e.g. 1e3 for ns shown as us), or "n/a" when not measured. */
static void print_series_row(const char *name, const series_t *series, const series_t *reference,
                             double scale, const char *number_format)
{
    printf("    %-16s", name);
    if (series->count == 0) {
        printf(" %12s\n", "n/a");
        return;
    }
    summary_t s = series_summary(series);
    double values[3] = {s.median / scale, s.min / scale, s.max / scale};
    for (int i = 0; i < 3; i++) {
        printf(" ");
        printf(number_format, values[i]);
    }
    printf(" %9.2fx\n", ratio_of(s.median, series_summary(reference).median));
}

/* One table: a series per contender. */
static void print_series_table(const char *heading, const char *unit, const series_t *series,
                               double scale, const char *number_format)
{
    printf("%s\n", heading);
    printf("    %-16s %12s %12s %12s %10s\n", "contender", unit, "min", "max", "x respool");
    for (size_t i = 0; i < CONTENDER_COUNT; i++)
        print_series_row(all_contenders[i]->name, &series[i], &series[0], scale, number_format);
    printf("\n");
}

/* One table of a contended workload: throughput, fairness, waits. */
static void print_contended_table(const char *heading, const contended_series_t *series)
{
    printf("%s\n", heading);
    printf("    %-16s %11s %11s %11s %10s %8s %9s %9s %11s\n", "contender", "pairs/s", "min",
           "max", "x respool", "fairness", "p50 us", "p99 us", "max wait us");
    double reference = series_summary(&series[0].pairs_per_s).median;
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        const contended_series_t *s = &series[i];
        printf("    %-16s", all_contenders[i]->name);
        if (s->pairs_per_s.count == 0) {
            printf(" %11s\n", "n/a");
            continue;
        }
        summary_t tp = series_summary(&s->pairs_per_s);
        printf(" %11.0f %11.0f %11.0f %9.2fx %8.2f %9.2f %9.2f %11.0f\n", tp.median, tp.min,
               tp.max, ratio_of(tp.median, reference), series_summary(&s->fairness).median,
               series_summary(&s->wait_p50_ns).median / 1e3,
               series_summary(&s->wait_p99_ns).median / 1e3,
               series_summary(&s->wait_max_ns).max / 1e3);
    }
}

/* W4: p50 and p99 per contender, the futex floor first. */
static void print_handoff_table(const bench_results_t *r)
{
    printf("W4  hand-off latency: pool of 1, checkin -> return of a checkout verified parked\n"
           "    (both threads on one CPU; us; p50 and p99 of %d hand-offs per round,\n"
           "    median [min-max] over rounds)\n",
           r->setup.handoff_iterations);
    printf("    %-16s %9s %19s %9s %19s %10s\n", "contender", "p50", "[min - max]", "p99",
           "[min - max]", "x respool");
    double reference = series_summary(&r->w4_p50_ns[0]).median;
    for (size_t row = 0; row < HANDOFF_ROWS; row++) {
        size_t i = row == 0 ? FUTEX_ROW : row - 1; /* futex floor first */
        summary_t p50 = series_summary(&r->w4_p50_ns[i]), p99 = series_summary(&r->w4_p99_ns[i]);
        printf("    %-16s %9.1f [%7.1f - %7.1f] %9.1f [%7.1f - %7.1f] %9.2fx\n",
               i == FUTEX_ROW ? "futex-floor" : all_contenders[i]->name, p50.median / 1e3,
               p50.min / 1e3, p50.max / 1e3, p99.median / 1e3, p99.min / 1e3, p99.max / 1e3,
               ratio_of(p50.median, reference));
    }
    printf("\n");
}

/* Throughput against thread count: one column per contender. */
static void print_sweep_table(const bench_results_t *r)
{
    printf("Threads  pairs/s against thread count: pool of 4, ~%.1f us held (median over rounds)\n",
           (double)r->setup.hold_ns / 1e3);
    printf("    %7s", "threads");
    for (size_t i = 0; i < CONTENDER_COUNT; i++)
        printf(" %15s", all_contenders[i]->name);
    printf("\n");
    for (size_t p = 0; p < SWEEP_POINTS; p++) {
        printf("    %7u", sweep_threads[p]);
        for (size_t i = 0; i < CONTENDER_COUNT; i++)
            printf(" %15.0f", series_summary(&r->sweep_pairs_per_s[p][i]).median);
        printf("\n");
    }
    printf("\n");
}

/* A group of the scale table: one row per contender measured in the case. */
static void print_scale_group(const char *label, const series_t *series, double scale,
                              const char *number_format)
{
    printf("  %s\n", label);
    for (size_t i = 0; i < CONTENDER_COUNT; i++)
        if (series[i].count)
            print_series_row(all_contenders[i]->name, &series[i], &series[0], scale,
                             number_format);
}

/* Big pools, 1,000 threads and memory, one group per case. */
static void print_scale_table(const bench_results_t *r)
{
    const bench_setup_t *s = &r->setup;
    char label[320];
    series_t fairness[CONTENDER_COUNT], p99[CONTENDER_COUNT], tp[3][CONTENDER_COUNT];
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        tp[0][i] = r->small_w3[i].pairs_per_s;
        tp[1][i] = r->big_w3[i].pairs_per_s;
        tp[2][i] = r->crowd_w3[i].pairs_per_s;
        fairness[i] = r->crowd_w3[i].fairness;
        p99[i] = r->crowd_w3[i].wait_p99_ns;
    }
    printf("Scale  (median, min, max over rounds; x respool in the same unit)\n");
    printf("    %-16s %12s %12s %12s %10s\n", "contender", "median", "min", "max", "x respool");
    print_scale_group("W1 1 thread, pool of 8 (ns/pair)", r->w1_ns, 1, "%12.1f");
    snprintf(label, sizeof label, "W1 1 thread, pool of %u (ns/pair)", s->big_pool);
    print_scale_group(label, r->big_w1_ns, 1, "%12.1f");
    print_scale_group("W3 16 threads, pool of 8 (pairs/s)", tp[0], 1, "%12.0f");
    snprintf(label, sizeof label, "W3 16 threads, pool of %u (pairs/s)", s->big_pool);
    print_scale_group(label, tp[1], 1, "%12.0f");
    snprintf(label, sizeof label, "W3 %u threads, pool of 4 (pairs/s)", s->crowd);
    print_scale_group(label, tp[2], 1, "%12.0f");
    snprintf(label, sizeof label, "W3 %u threads: fairness (fewest/most pairs per thread)",
             s->crowd);
    print_scale_group(label, fairness, 1, "%12.3f");
    snprintf(label, sizeof label, "W3 %u threads: wait p99 (us)", s->crowd);
    print_scale_group(label, p99, 1e3, "%12.1f");
    snprintf(label, sizeof label,
             "memory per resource, pool of %u, fresh process: malloc heap, bytes (mallinfo2;\n"
             "    APR's allocator maps its own memory, not counted here; memcached-pool's\n"
             "    resources are its own memcached_st clones, counted)",
             s->big_pool);
    print_scale_group(label, r->heap_per_resource, 1, "%12.1f");
    snprintf(label, sizeof label,
             "memory per resource, pool of %u, fresh process: resident set growth, bytes",
             s->big_pool);
    print_scale_group(label, r->rss_per_resource, 1, "%12.1f");
    printf("\n");
}

/* Time to fill a pool with a slow factory. */
static void print_coldstart_table(const bench_results_t *r)
{
    const bench_setup_t *s = &r->setup;
    double factory_ms = (double)s->cold_factory_ns / 1e6;
    printf("Cold start  pool of %u, factory sleeps %.0f ms: ms until create returns\n",
           s->cold_pool, factory_ms);
    printf("    %-16s %12s %12s %12s %10s %10s\n", "contender", "median ms", "min", "max",
           "x respool", "factories");
    double reference = series_summary(&r->coldstart_ms[COLD_RESPOOL]).median;
    for (size_t i = 0; i < COLD_ROWS; i++) {
        summary_t c = series_summary(&r->coldstart_ms[i]);
        printf("    %-16s %12.1f %12.1f %12.1f %9.2fx %10.1f\n", coldstart_names[i], c.median,
               c.min, c.max, ratio_of(c.median, reference), c.median / factory_ms);
    }
    printf("    (factories = median / factory latency: how many factory latencies in a row;\n"
           "     respool: default max_creating 16, so 64 resources take 4 waves;\n"
           "     respool-wide: max_creating %u, one wave)\n\n",
           s->cold_pool);
}

void print_report(const bench_results_t *r)
{
    const bench_setup_t *s = &r->setup;
    char heading[200];
    snprintf(heading, sizeof heading,
             "W1  uncontended: 1 thread, pool of 8, checkout+checkin (ns/pair; %d rounds of "
             "%.2f s)",
             s->rounds, s->seconds / 2);
    print_series_table(heading, "median ns", r->w1_ns, 1, "%12.1f");
    snprintf(heading, sizeof heading,
             "W2  2 threads, pool of 8, nothing held (pairs/s; %d rounds of %.2f s)", s->rounds,
             s->seconds / 2);
    print_series_table(heading, "pairs/s", r->w2_pairs_per_s, 1, "%12.0f");
    snprintf(heading, sizeof heading,
             "W3  16 threads, pool of 4, ~%.1f us held (%d rounds of %.2f s; medians; "
             "wait = time inside checkout)",
             (double)s->hold_ns / 1e3, s->rounds, s->seconds);
    print_contended_table(heading, r->w3);
    if (!r->w3_unpooled.pairs_per_s.count) {
        printf("\n");
    } else {
        const contended_series_t *u = &r->w3_unpooled;
        summary_t tp = series_summary(&u->pairs_per_s);
        printf("    %-16s %11.0f %11.0f %11.0f %9.2fx %8.2f   (no pool: the scheduler's own\n"
               "    %-16s ceiling of throughput and fairness for 16 busy threads on this machine)\n\n",
               unpooled_contender.name, tp.median, tp.min, tp.max,
               ratio_of(tp.median, series_summary(&r->w3[0].pairs_per_s).median),
               series_summary(&u->fairness).median, "");
    }
    print_handoff_table(r);
    print_sweep_table(r);
    print_scale_table(r);
    print_coldstart_table(r);
}

/* ---- TSV files ------------------------------------------------------------------ */

/* Open dir/name for writing; NULL with a message on failure. */
static FILE *open_tsv(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "core_bench: cannot write %s: %s\n", path, strerror(errno));
    return f;
}

/* Close a TSV file; false if anything failed to be written. */
static bool close_tsv(FILE *f)
{
    bool ok = !ferror(f);
    return fclose(f) == 0 && ok;
}

/* median min max ratio of a series, tab-separated, after a tab; the three
 * values in `value_format` (e.g. "%.1f"), the ratio in "%.4f". */
static void write_summary_fields(FILE *f, const series_t *series, const series_t *reference,
                                 const char *value_format)
{
    summary_t s = series_summary(series);
    double values[3] = {s.median, s.min, s.max};
    for (int i = 0; i < 3; i++) {
        fputc('\t', f);
        fprintf(f, value_format, values[i]);
    }
    fprintf(f, "\t%.4f", ratio_of(s.median, series_summary(reference).median));
}

/* contender, median, min, max, ratio per contender. */
static bool write_series_tsv(const char *dir, const char *name, const char *header,
                             const series_t *series)
{
    FILE *f = open_tsv(dir, name);
    if (!f)
        return false;
    fprintf(f, "%s\n", header);
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        fprintf(f, "%s", all_contenders[i]->name);
        write_summary_fields(f, &series[i], &series[0], "%.1f");
        fprintf(f, "\n");
    }
    return close_tsv(f);
}

/* w3.tsv: throughput, fairness and waits per contender. */
static bool write_w3_tsv(const char *dir, const bench_results_t *r)
{
    FILE *f = open_tsv(dir, "w3.tsv");
    if (!f)
        return false;
    fprintf(f, "contender\tmedian_pairs_per_s\tmin_pairs_per_s\tmax_pairs_per_s\tratio\t"
               "fairness\twait_p50_ns\twait_p99_ns\twait_max_ns\n");
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        const contended_series_t *s = &r->w3[i];
        fprintf(f, "%s", all_contenders[i]->name);
        write_summary_fields(f, &s->pairs_per_s, &r->w3[0].pairs_per_s, "%.1f");
        fprintf(f, "\t%.4f\t%.0f\t%.0f\t%.0f\n", series_summary(&s->fairness).median,
                series_summary(&s->wait_p50_ns).median, series_summary(&s->wait_p99_ns).median,
                series_summary(&s->wait_max_ns).max);
    }
    if (r->w3_unpooled.pairs_per_s.count) {
        const contended_series_t *u = &r->w3_unpooled;
        fprintf(f, "%s", unpooled_contender.name);
        write_summary_fields(f, &u->pairs_per_s, &r->w3[0].pairs_per_s, "%.1f");
        fprintf(f, "\t%.4f\t-\t-\t-\n", series_summary(&u->fairness).median);
    }
    return close_tsv(f);
}

/* w4.tsv: hand-off p50 and p99, the futex floor first. */
static bool write_w4_tsv(const char *dir, const bench_results_t *r)
{
    FILE *f = open_tsv(dir, "w4.tsv");
    if (!f)
        return false;
    fprintf(f, "contender\tp50_ns\tp50_min_ns\tp50_max_ns\tp99_ns\tp99_min_ns\tp99_max_ns"
               "\tratio\n");
    double reference = series_summary(&r->w4_p50_ns[0]).median;
    for (size_t row = 0; row < HANDOFF_ROWS; row++) {
        size_t i = row == 0 ? FUTEX_ROW : row - 1;
        summary_t p50 = series_summary(&r->w4_p50_ns[i]), p99 = series_summary(&r->w4_p99_ns[i]);
        fprintf(f, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.4f\n",
                i == FUTEX_ROW ? "futex-floor" : all_contenders[i]->name, p50.median, p50.min,
                p50.max, p99.median, p99.min, p99.max, ratio_of(p50.median, reference));
    }
    return close_tsv(f);
}

/* threads.tsv: one line per (contender, thread count). */
static bool write_threads_tsv(const char *dir, const bench_results_t *r)
{
    FILE *f = open_tsv(dir, "threads.tsv");
    if (!f)
        return false;
    fprintf(f, "contender\tthreads\tmedian_pairs_per_s\tmin_pairs_per_s\tmax_pairs_per_s\n");
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        for (size_t p = 0; p < SWEEP_POINTS; p++) {
            summary_t s = series_summary(&r->sweep_pairs_per_s[p][i]);
            fprintf(f, "%s\t%u\t%.1f\t%.1f\t%.1f\n", all_contenders[i]->name, sweep_threads[p],
                    s.median, s.min, s.max);
        }
    }
    return close_tsv(f);
}

/* Lines of scale.tsv for one case: every contender measured in it. */
static void write_scale_case(FILE *f, const char *name, const char *unit, const series_t *series)
{
    const char *value_format = strcmp(unit, "fraction") == 0 ? "%.4f" : "%.1f";
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        if (series[i].count == 0)
            continue;
        fprintf(f, "%s\t%s\t%s", name, all_contenders[i]->name, unit);
        write_summary_fields(f, &series[i], &series[0], value_format);
        fprintf(f, "\n");
    }
}

/* scale.tsv: one line per (case, contender). */
static bool write_scale_tsv(const char *dir, const bench_results_t *r)
{
    FILE *f = open_tsv(dir, "scale.tsv");
    if (!f)
        return false;
    series_t small[CONTENDER_COUNT], big[CONTENDER_COUNT], crowd[CONTENDER_COUNT],
        fairness[CONTENDER_COUNT], p99[CONTENDER_COUNT];
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        small[i] = r->small_w3[i].pairs_per_s;
        big[i] = r->big_w3[i].pairs_per_s;
        crowd[i] = r->crowd_w3[i].pairs_per_s;
        fairness[i] = r->crowd_w3[i].fairness;
        p99[i] = r->crowd_w3[i].wait_p99_ns;
    }
    fprintf(f, "case\tcontender\tunit\tmedian\tmin\tmax\tratio\n");
    write_scale_case(f, "w1_pool8", "ns", r->w1_ns);
    write_scale_case(f, "w1_pool65536", "ns", r->big_w1_ns);
    write_scale_case(f, "w3_pool8", "pairs/s", small);
    write_scale_case(f, "w3_pool65536", "pairs/s", big);
    write_scale_case(f, "w3_1000threads", "pairs/s", crowd);
    write_scale_case(f, "w3_1000threads_fairness", "fraction", fairness);
    write_scale_case(f, "w3_1000threads_wait_p99", "ns", p99);
    write_scale_case(f, "heap_per_resource", "bytes", r->heap_per_resource);
    write_scale_case(f, "rss_per_resource", "bytes", r->rss_per_resource);
    return close_tsv(f);
}

/* coldstart.tsv: one line per way of filling the pool. */
static bool write_coldstart_tsv(const char *dir, const bench_results_t *r)
{
    FILE *f = open_tsv(dir, "coldstart.tsv");
    if (!f)
        return false;
    double factory_ms = (double)r->setup.cold_factory_ns / 1e6;
    fprintf(f, "contender\tmedian_ms\tmin_ms\tmax_ms\tratio\tfactory_latencies\n");
    for (size_t i = 0; i < COLD_ROWS; i++) {
        fprintf(f, "%s", coldstart_names[i]);
        write_summary_fields(f, &r->coldstart_ms[i], &r->coldstart_ms[COLD_RESPOOL], "%.1f");
        fprintf(f, "\t%.2f\n", series_summary(&r->coldstart_ms[i]).median / factory_ms);
    }
    return close_tsv(f);
}

/* waits_<contender>.tsv: the merged W3 histogram, first to last used bucket. */
static bool write_waits_tsv(const char *dir, const char *contender, const histogram_t *h)
{
    char name[128];
    snprintf(name, sizeof name, "waits_%s.tsv", contender);
    FILE *f = open_tsv(dir, name);
    if (!f)
        return false;
    fprintf(f, "upper_ns\tcount\n");
    size_t first = 0, last = 0;
    bool any = false;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        if (h->count[i]) {
            if (!any)
                first = i;
            last = i;
            any = true;
        }
    }
    for (size_t i = first; any && i <= last; i++)
        fprintf(f, "%llu\t%llu\n", (unsigned long long)hist_bucket_upper(i),
                (unsigned long long)h->count[i]);
    return close_tsv(f);
}

bool write_tsv_files(const bench_results_t *r, const char *dir)
{
    if (!make_directories(dir)) {
        fprintf(stderr, "core_bench: cannot create %s: %s\n", dir, strerror(errno));
        return false;
    }
    bool ok = write_series_tsv(dir, "w1.tsv", "contender\tmedian_ns\tmin_ns\tmax_ns\tratio",
                               r->w1_ns);
    ok &= write_series_tsv(dir, "w2.tsv",
                           "contender\tmedian_pairs_per_s\tmin_pairs_per_s\tmax_pairs_per_s\tratio",
                           r->w2_pairs_per_s);
    ok &= write_w3_tsv(dir, r);
    ok &= write_w4_tsv(dir, r);
    ok &= write_threads_tsv(dir, r);
    ok &= write_scale_tsv(dir, r);
    ok &= write_coldstart_tsv(dir, r);
    for (size_t i = 0; i < CONTENDER_COUNT; i++)
        ok &= write_waits_tsv(dir, all_contenders[i]->name, &r->w3_waits[i]);
    return ok;
}
