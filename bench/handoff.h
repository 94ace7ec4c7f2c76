/*
 * handoff.h — W4: how long a checkin takes to wake a parked checkout.
 */
#ifndef BENCH_HANDOFF_H
#define BENCH_HANDOFF_H

#include <stdint.h>

#include "contenders.h"

typedef struct handoff_result {
    uint64_t p50_ns, p99_ns;
} handoff_result_t;

/* Pool of 1 held by this thread; a waiter thread blocks in checkout; once it
 * is verified parked (state 'S' in /proc, and counted by the pool where the
 * pool can count), this thread checks in. Latency = from the checkin call
 * to the waiter's return from checkout; `iterations` times, both threads on
 * one CPU. c == NULL measures the futex floor instead: FUTEX_WAKE to a
 * thread in FUTEX_WAIT, in the same way. */
handoff_result_t run_handoff(const contender_t *c, int iterations);

#endif /* BENCH_HANDOFF_H */
