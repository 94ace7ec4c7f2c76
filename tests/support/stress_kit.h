/*
 * stress_kit.h — shared pieces of the stress and race tests (test_stress.c,
 * test_races.c): knobs read from the environment, a per-thread random
 * generator, bounded joins, a ledger of what the test's threads did, and a
 * checker thread that samples respool_stats continuously and asserts the
 * invariants a snapshot must satisfy (each snapshot is taken under the
 * pool's lock, so the identities between its fields are exact; comparisons
 * with the test's own counters are made race-free by sandwiching the
 * snapshot between two readings of monotonic counters).
 *
 * Knobs (environment, read on every call):
 *   RESPOOL_STRESS_MS       length of each storm, ms (default 2000); the
 *                           shorter races derive their budgets from it
 *   RESPOOL_STRESS_WAITERS  threads of the many-waiters case (default 1000)
 *   RESPOOL_RACE_ITERATIONS iterations of the deadline-vs-checkin race
 *                           (default 100000)
 * The valgrind targets of the Makefile set small values.
 */
#ifndef STRESS_KIT_H
#define STRESS_KIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "respool.h"
#include "support/fake_factory.h"

/* ---- knobs ---------------------------------------------------------------- */

/* An integer from the environment, clamped to [min, max]; `fallback` when
 * unset or not a number. */
long stress_env_long(const char *name, long fallback, long min, long max);
/* RESPOOL_STRESS_MS: how long each storm runs (default 2000 ms). */
long stress_duration_ms(void);

/* ---- small tools ------------------------------------------------------------ */

/* xorshift32: a cheap per-thread random stream (state must not be 0). */
uint32_t stress_rand(uint32_t *state);
/* Uniform in [0, n) (n > 0). */
uint32_t stress_below(uint32_t *state, uint32_t n);
/* Monotonic nanoseconds. */
int64_t stress_now_ns(void);
/* Sleep until an absolute CLOCK_MONOTONIC time (to shape timing only). */
void stress_sleep_until_ns(int64_t when_ns);
/* Ask the kernel to wake the calling thread's timed waits without the usual
 * 50 us of timer slack, so a planned instant is hit closely. */
void stress_precise_timers(void);
/* Print one line of a run's figures on stderr ("[figures] ..."). Not
 * cr_log_warn: a warning makes Criterion's exit status non-zero. */
void stress_report(const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* A thread that can be joined with a bound. pthread_timedjoin_np would do,
 * but helgrind does not know it, so it would see no order between the
 * thread's last writes and the joiner's reads: the thread signals its end
 * under a lock and the joiner then calls pthread_join. */
typedef struct stress_thread {
    pthread_t id;
    void *(*fn)(void *);
    void *arg;
    pthread_mutex_t lock;
    pthread_cond_t ended_cond;
    bool ended;
} stress_thread_t;

/* Start fn(arg) on a new thread (attr may be NULL); 0 or pthread_create's
 * error. */
int stress_thread_start(stress_thread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                        void *arg);
/* Join within timeout_ms; false (thread left running) if it has not ended. */
bool stress_thread_join(stress_thread_t *t, long timeout_ms);
/* Clear every fault knob of the fake factory: no failure, delay or block. */
void stress_clear_faults(fake_factory_t *f);

/* ---- the ledger --------------------------------------------------------------- */

/* What the test's threads did, counted at the moments that make the
 * checker's sandwich comparisons sound: `acquired` after a checkout returned
 * RESPOOL_OK; `released` before a checkin or respool_destroyed is called;
 * `destroy_begun` before respool_destroyed is called and `destroy_done` after
 * it returned; `timeouts` after a checkout returned ETIMEDOUT or EFULL. */
typedef struct op_ledger {
    atomic_uint_fast64_t acquired, released;
    atomic_uint_fast64_t destroy_begun, destroy_done;
    atomic_uint_fast64_t timeouts;
} op_ledger_t;

/* ---- the checker thread --------------------------------------------------------- */

typedef struct stats_checker {
    /* Set before checker_start. */
    respool_t *pool;
    fake_factory_t *factory;   /* its counters are compared with the pool's */
    op_ledger_t *ledger;       /* may be NULL: no ledger comparisons        */
    unsigned capacity_bound;   /* the largest size + max_overflow ever set  */
    unsigned threads;          /* threads that may wait in checkout at once */
    unsigned max_creating;     /* config.max_creating (after its default)   */
    /* Every size / max_overflow the test may set (a snapshot must show one
     * of them); n_sizes == 0 skips the check. */
    unsigned sizes[16], overflows[16];
    unsigned n_sizes, n_overflows;
    bool sleepy;               /* pause 50 us between samples (default: yield) */

    /* Set by the test just before it calls respool_shutdown. */
    atomic_bool shutdown_called;
    atomic_bool stop;

    /* Results (read after checker_stop). */
    uint64_t samples;
    uint64_t shutdown_samples; /* samples taken in state SHUTDOWN */
    unsigned max_waiting_seen, max_busy_seen, max_creating_seen;
    int violations;
    char first[512];           /* the first violation, with its snapshot */
    stress_thread_t thread;
} stats_checker_t;

/* Start sampling (the caller has zeroed *c and filled the inputs). */
void checker_start(stats_checker_t *c);
/* Stop and join the checker (bounded: false if it did not stop). */
bool checker_stop(stats_checker_t *c);
/* Check one snapshot against the exact identities (usable on its own). */
bool stats_consistent(const respool_stats_t *s, char *why, size_t whylen);

#endif
