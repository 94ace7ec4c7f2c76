/*
 * core_bench.c — respool's core against the floors and the C peers.
 *
 *   build/bench/core_bench [seconds] [rounds]
 *
 * seconds (default 0.5): measured length of a W3 run; the other timed runs
 * derive from it (half of it for W1, W2, the thread sweep and the scale
 * runs; each multi-threaded run is preceded by an unmeasured warm-up of a
 * quarter of its length; W4 does seconds x 2000 hand-offs, at least 100). rounds (default 5, at most
 * 15): every round runs every workload for every contender once, starting
 * with a different contender each round; tables show the median and the
 * min-max over rounds, never a single sample. RESPOOL_BENCH_OUT=<dir>
 * also writes one TSV per workload there (formats: report.c).
 *
 * Contenders (contenders.h): respool, floor-mutex, floor-fifo, apr-reslist,
 * memcached-pool. Workloads, all on trivial resources:
 *   W1  1 thread, pool of 8: checkout+checkin, ns per pair
 *   W2  2 threads, pool of 8, nothing held: pairs/s
 *   W3  16 threads, pool of 4, ~1 us calibrated busy loop while holding:
 *       pairs/s, wait p50/p99/max (time inside checkout), fairness
 *   W4  hand-off latency, pool of 1, waiter verified parked, both threads
 *       on one CPU; and the futex floor
 *   Threads  W3 with 1, 2, 4, 8, 16, 32 threads
 *   Scale  W1 and W3 with pools of 8 and 65,536; W3 with 1,000 threads
 *       (respool and the floors); memory per resource of a pool of 65,536
 *       (in a fresh child process: this program with --measure-memory)
 *   Cold start  pool of 64, factory sleeping 20 ms: time until create
 *       returns, against 64 creations in a row
 * One idle extra thread runs in the process throughout: glibc skips atomics
 * in a single-threaded process, which would flatter everyone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "contenders.h"
#include "handoff.h"
#include "harness.h"
#include "report.h"
#include "startup.h"
#include "workloads.h"

#define HOLD_NS 1000          /* W3's work while holding a resource */
#define BIG_POOL 65536        /* the scale runs' pool size */
#define CROWD_THREADS 1000    /* the scale run's thread count */
#define CROWD_CONTENDERS 3    /* respool and the two floors */
#define COLD_POOL 64
#define COLD_FACTORY_NS 20000000LL /* 20 ms */

/* The contender at position k of round `round`: the order rotates by one
 * each round, so none always runs first (cold) or last (warm). */
static size_t rotated(size_t k, int round, size_t count)
{
    return (k + (size_t)round) % count;
}

/* W1, W2, W3 and the thread sweep (its 16-thread point is W3's). */
static void run_core_workloads(bench_results_t *r, int round)
{
    const bench_setup_t *s = &r->setup;
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        series_add(&r->w1_ns[i], run_uncontended(all_contenders[i], 8, s->seconds / 2));
    }
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        contended_params_t p = {2, 8, 0, s->seconds / 2};
        contended_result_t res = run_contended(all_contenders[i], &p, NULL);
        series_add(&r->w2_pairs_per_s[i], res.pairs_per_s);
    }
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        contended_params_t p = {16, 4, s->hold_ns, s->seconds};
        contended_result_t res = run_contended(all_contenders[i], &p, &r->w3_waits[i]);
        contended_series_add(&r->w3[i], &res);
    }
    {
        contended_params_t p = {16, 4, s->hold_ns, s->seconds};
        contended_result_t res = run_contended(&unpooled_contender, &p, NULL);
        contended_series_add(&r->w3_unpooled, &res);
    }
    for (size_t point = 0; point < SWEEP_POINTS; point++) {
        for (size_t k = 0; k < CONTENDER_COUNT; k++) {
            size_t i = rotated(k, round, CONTENDER_COUNT);
            series_t *out = &r->sweep_pairs_per_s[point][i];
            if (sweep_threads[point] == 16) { /* the same run as W3 */
                series_add(out, r->w3[i].pairs_per_s.value[round]);
                continue;
            }
            contended_params_t p = {sweep_threads[point], 4, s->hold_ns, s->seconds / 2};
            series_add(out, run_contended(all_contenders[i], &p, NULL).pairs_per_s);
        }
    }
}

/* W4: every contender and the futex floor. */
static void run_handoffs(bench_results_t *r, int round)
{
    for (size_t k = 0; k < HANDOFF_ROWS; k++) {
        size_t i = rotated(k, round, HANDOFF_ROWS);
        const contender_t *c = i == FUTEX_ROW ? NULL : all_contenders[i];
        handoff_result_t res = run_handoff(c, r->setup.handoff_iterations);
        series_add(&r->w4_p50_ns[i], (double)res.p50_ns);
        series_add(&r->w4_p99_ns[i], (double)res.p99_ns);
    }
}

/* Big pools, many threads, memory per resource. */
static void run_scale(bench_results_t *r, int round)
{
    const bench_setup_t *s = &r->setup;
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        double ns = run_uncontended(all_contenders[i], s->big_pool, s->seconds / 2);
        series_add(&r->big_w1_ns[i], ns);
    }
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        contended_params_t small = {16, 8, s->hold_ns, s->seconds / 2};
        contended_result_t res = run_contended(all_contenders[i], &small, NULL);
        contended_series_add(&r->small_w3[i], &res);
    }
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        contended_params_t big = {16, s->big_pool, s->hold_ns, s->seconds / 2};
        contended_result_t res = run_contended(all_contenders[i], &big, NULL);
        contended_series_add(&r->big_w3[i], &res);
    }
    for (size_t k = 0; k < CROWD_CONTENDERS; k++) {
        size_t i = rotated(k, round, CROWD_CONTENDERS);
        contended_params_t crowd = {s->crowd, 4, s->hold_ns, s->seconds};
        contended_result_t res = run_contended(all_contenders[i], &crowd, NULL);
        contended_series_add(&r->crowd_w3[i], &res);
    }
    for (size_t k = 0; k < CONTENDER_COUNT; k++) {
        size_t i = rotated(k, round, CONTENDER_COUNT);
        memory_result_t m = measure_memory(all_contenders[i], s->big_pool);
        series_add(&r->heap_per_resource[i], m.heap_per_resource);
        series_add(&r->rss_per_resource[i], m.rss_per_resource);
    }
}

/* Cold start: respool, sequential creation (the floors' fill), APR. */
static void run_coldstarts(bench_results_t *r, int round)
{
    static const contender_t *const makers[COLD_ROWS] = {
        [COLD_RESPOOL] = &respool_contender,
        [COLD_RESPOOL_WIDE] = &respool_wide_contender,
        [COLD_SEQUENTIAL] = &floor_mutex_contender,
        [COLD_APR] = &apr_reslist_contender,
    };
    for (size_t k = 0; k < COLD_ROWS; k++) {
        size_t i = rotated(k, round, COLD_ROWS);
        series_add(&r->coldstart_ms[i],
                   run_coldstart(makers[i], r->setup.cold_pool, r->setup.cold_factory_ns));
    }
}

/* Say how to call this program and exit with status 2. */
static void usage(void)
{
    fprintf(stderr, "usage: core_bench [seconds (0 < s <= 60)] [rounds (1..%d)]\n", MAX_ROUNDS);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], MEASURE_MEMORY_FLAG) == 0)
        return measure_memory_child(argv[2], argv[3]);
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (argc > 3 || !(seconds > 0 && seconds <= 60) || rounds < 1 || rounds > MAX_ROUNDS)
        usage();

    start_idle_thread();
    calibrate_busy_loop();
    static bench_results_t results;
    int iterations = (int)(seconds * 2000);
    results.setup = (bench_setup_t){
        .rounds = rounds,
        .seconds = seconds,
        .big_pool = BIG_POOL,
        .crowd = CROWD_THREADS,
        .handoff_iterations = iterations < 100 ? 100 : iterations,
        .cold_pool = COLD_POOL,
        .cold_factory_ns = COLD_FACTORY_NS,
        .hold_ns = HOLD_NS,
    };

    int64_t start = now_ns();
    for (int round = 0; round < rounds; round++) {
        fprintf(stderr, "core_bench: round %d/%d: W1-W3, threads", round + 1, rounds);
        run_core_workloads(&results, round);
        fprintf(stderr, ", W4");
        run_handoffs(&results, round);
        fprintf(stderr, ", scale");
        run_scale(&results, round);
        fprintf(stderr, ", cold start");
        run_coldstarts(&results, round);
        fprintf(stderr, " (%.1f s so far)\n", (double)(now_ns() - start) / 1e9);
    }

    printf("core_bench: %d rounds, %ld CPUs online, contenders in rotated order each round\n\n",
           rounds, sysconf(_SC_NPROCESSORS_ONLN));
    print_report(&results);
    const char *out = getenv("RESPOOL_BENCH_OUT");
    int status = 0;
    if (out && *out) {
        if (write_tsv_files(&results, out))
            printf("TSV files written to %s\n", out);
        else
            status = 1;
    }
    stop_idle_thread();
    return status;
}
