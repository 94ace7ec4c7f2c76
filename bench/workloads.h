/*
 * workloads.h — the throughput workloads: one thread in a tight loop (W1),
 * and N threads checking out, optionally working while holding, and
 * checking in (W2, W3, the thread sweep and the scale runs).
 */
#ifndef BENCH_WORKLOADS_H
#define BENCH_WORKLOADS_H

#include <stdint.h>

#include "contenders.h"
#include "harness.h"

/* One thread, checkout + checkin in a loop on a fresh pool of pool_size for
 * about `seconds`: nanoseconds per pair. */
double run_uncontended(const contender_t *c, unsigned pool_size, double seconds);

typedef struct contended_params {
    unsigned threads;
    unsigned pool_size;
    uint64_t hold_ns; /* busy work while holding a resource; 0 = none */
    double seconds;
} contended_params_t;

typedef struct contended_result {
    double pairs_per_s; /* checkout+checkin pairs per second, all threads */
    double fairness;    /* fewest pairs of a thread / most pairs of a thread */
    uint64_t wait_p50_ns, wait_p99_ns, wait_max_ns; /* time inside checkout */
} contended_result_t;

/* `threads` threads on a fresh pool, each looping checkout, hold, checkin
 * from a common start: a quarter of `seconds` of warm-up, then `seconds`
 * measured. When waits is not NULL, the duration of every measured checkout
 * is added to it. */
contended_result_t run_contended(const contender_t *c, const contended_params_t *params,
                                 histogram_t *waits);

#endif /* BENCH_WORKLOADS_H */
