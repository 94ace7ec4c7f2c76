/*
 * report.h — every measurement of a run, and how it is shown: one table per
 * workload on stdout, and one TSV file per workload for plotting.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stdint.h>

#include "contenders.h"
#include "harness.h"
#include "workloads.h"

/* Thread counts of the throughput-against-threads sweep. */
#define SWEEP_POINTS 6
extern const unsigned sweep_threads[SWEEP_POINTS];

/* W4 rows: the contenders, then the futex floor. */
#define HANDOFF_ROWS (CONTENDER_COUNT + 1)
#define FUTEX_ROW CONTENDER_COUNT

/* Cold-start rows. */
enum { COLD_RESPOOL, COLD_RESPOOL_WIDE, COLD_SEQUENTIAL, COLD_APR, COLD_ROWS };
extern const char *const coldstart_names[COLD_ROWS];

/* The per-round results of one contended workload. */
typedef struct contended_series {
    series_t pairs_per_s, fairness, wait_p50_ns, wait_p99_ns, wait_max_ns;
} contended_series_t;

/* What each workload is made of (for the table headings). */
typedef struct bench_setup {
    int rounds;
    double seconds;       /* of a W3 run; the other runs derive from it */
    unsigned big_pool;    /* the scale runs' pool size */
    unsigned crowd;       /* the scale run's thread count */
    int handoff_iterations;
    unsigned cold_pool;
    int64_t cold_factory_ns;
    uint64_t hold_ns;
} bench_setup_t;

typedef struct bench_results {
    bench_setup_t setup;
    series_t w1_ns[CONTENDER_COUNT];           /* 1 thread, pool of 8 */
    series_t w2_pairs_per_s[CONTENDER_COUNT];  /* 2 threads, pool of 8 */
    contended_series_t w3[CONTENDER_COUNT];    /* 16 threads, pool of 4 */
    contended_series_t w3_unpooled; /* the same threads and work, no pool at all */
    histogram_t w3_waits[CONTENDER_COUNT];     /* every W3 checkout, all rounds */
    series_t sweep_pairs_per_s[SWEEP_POINTS][CONTENDER_COUNT];
    series_t w4_p50_ns[HANDOFF_ROWS], w4_p99_ns[HANDOFF_ROWS];
    series_t big_w1_ns[CONTENDER_COUNT];         /* W1, big pool */
    contended_series_t small_w3[CONTENDER_COUNT]; /* W3, pool of 8 */
    contended_series_t big_w3[CONTENDER_COUNT];   /* W3, big pool */
    contended_series_t crowd_w3[CONTENDER_COUNT]; /* W3-like, `crowd` threads */
    series_t heap_per_resource[CONTENDER_COUNT], rss_per_resource[CONTENDER_COUNT];
    series_t coldstart_ms[COLD_ROWS];
} bench_results_t;

/* Add one run's result to a workload's series. */
void contended_series_add(contended_series_t *series, const contended_result_t *result);

/* Every table, on stdout. */
void print_report(const bench_results_t *results);

/* Every TSV file into directory `dir` (created if missing); false (with a
 * message on stderr) when a file cannot be written. */
bool write_tsv_files(const bench_results_t *results, const char *dir);

#endif /* BENCH_REPORT_H */
