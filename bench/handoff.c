/*
 * handoff.c — W4, hand-off latency (see handoff.h).
 *
 * The two threads step in lock-step through atomics (spinning with
 * sched_yield, so neither sleeps outside the wait being measured):
 *   main:   holds the only resource, announces iteration i (go = i)
 *   waiter: sees go = i, calls checkout (or FUTEX_WAIT) and parks
 *   main:   polls until the waiter is parked, reads the clock, checks in
 *   waiter: returns, reads the clock, checks in, reports done = i
 *   main:   latency = waiter's clock - main's clock; takes the resource back
 * Both threads are pinned to the CPU the measuring thread was on, so every
 * hand-off takes the same path: the wake-up, one context switch on that
 * CPU, and the pool's own code on both sides. Unpinned, the scheduler woke
 * the waiter on the other, idle CPU most of the time and on the same CPU
 * otherwise: on a 2-CPU VM that made the figures bimodal (about 19 us or
 * about 8 us, the IPI and idle exit dominating) and said more about the
 * scheduler's choice than about the pools. Pinned to two different CPUs,
 * another process's load on the waiter's CPU showed up as milliseconds.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "handoff.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"

/* How long a waiter may take to park before the run is declared broken. */
#define PARK_DEADLINE_NS 2000000000LL

typedef struct handoff_run {
    const contender_t *c; /* NULL: the futex floor */
    void *pool;
    atomic_int futex_word; /* futex floor: 0 = keep waiting */
    atomic_int go;         /* iteration the waiter is to start; -1 = quit */
    atomic_int done;       /* iteration the waiter has finished */
    _Atomic int64_t woke_at;
    _Atomic pid_t waiter_tid;
} handoff_run_t;

/* The raw futex system call, without timeout. */
static long futex(atomic_int *word, int op, int value)
{
    return syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

/* Block until the contender's checkout (or the futex) lets this thread go. */
static void wait_for_handoff(handoff_run_t *run, bench_lease_t *lease)
{
    if (run->c) {
        run->c->get(run->pool, lease);
        return;
    }
    while (atomic_load(&run->futex_word) == 0)
        futex(&run->futex_word, FUTEX_WAIT_PRIVATE, 0);
}

/* The waiter: one checkout per announced iteration. */
static void *handoff_waiter(void *arg)
{
    handoff_run_t *run = arg;
    atomic_store(&run->waiter_tid, gettid());
    bench_lease_t lease;
    for (int i = 1;; i++) {
        int go;
        while ((go = atomic_load(&run->go)) != i && go != -1)
            sched_yield();
        if (go == -1)
            return NULL;
        wait_for_handoff(run, &lease);
        atomic_store(&run->woke_at, now_ns());
        if (run->c)
            run->c->put(run->pool, &lease);
        atomic_store(&run->done, i);
    }
}

/* Poll until the waiter sleeps in the kernel ('S') and, where the pool
 * counts its waiters, the pool counts it. */
static void await_parked(handoff_run_t *run, pid_t tid)
{
    int64_t deadline = now_ns() + PARK_DEADLINE_NS;
    for (;;) {
        if (thread_state(tid) == 'S') {
            int waiting = run->c ? run->c->waiting(run->pool) : -1;
            if (waiting != 0)
                return;
        }
        if (now_ns() > deadline)
            bench_fail("W4: the %s waiter never parked", run->c ? run->c->name : "futex");
        sched_yield();
    }
}

/* qsort order of int64_t, ascending. */
static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

handoff_result_t run_handoff(const contender_t *c, int iterations)
{
    handoff_run_t run = {.c = c, .pool = c ? c->open(1, NULL) : NULL};
    atomic_init(&run.futex_word, 0);
    atomic_init(&run.go, 0);
    atomic_init(&run.done, 0);
    atomic_init(&run.woke_at, 0);
    atomic_init(&run.waiter_tid, 0);
    int64_t *latency = calloc((size_t)iterations, sizeof *latency);
    if (!latency)
        bench_fail("out of memory");
    cpu_set_t saved_affinity, this_cpu;
    pthread_getaffinity_np(pthread_self(), sizeof saved_affinity, &saved_affinity);
    CPU_ZERO(&this_cpu);
    CPU_SET(sched_getcpu(), &this_cpu);
    pthread_setaffinity_np(pthread_self(), sizeof this_cpu, &this_cpu);
    pthread_t waiter;
    spawn_thread(&waiter, 0, handoff_waiter, &run);
    pthread_setaffinity_np(waiter, sizeof this_cpu, &this_cpu);
    pid_t tid;
    while ((tid = atomic_load(&run.waiter_tid)) == 0)
        sched_yield();

    bench_lease_t lease;
    for (int i = 1; i <= iterations; i++) {
        if (c)
            c->get(run.pool, &lease); /* free: the waiter put it back */
        else
            atomic_store(&run.futex_word, 0);
        atomic_store(&run.go, i);
        await_parked(&run, tid);
        int64_t start = now_ns();
        if (c) {
            c->put(run.pool, &lease);
        } else {
            atomic_store(&run.futex_word, 1);
            futex(&run.futex_word, FUTEX_WAKE_PRIVATE, 1);
        }
        while (atomic_load(&run.done) != i)
            sched_yield();
        int64_t woke = atomic_load(&run.woke_at) - start;
        latency[i - 1] = woke > 0 ? woke : 0;
    }
    atomic_store(&run.go, -1);
    pthread_join(waiter, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof saved_affinity, &saved_affinity);
    if (c)
        c->close(run.pool);

    qsort(latency, (size_t)iterations, sizeof *latency, compare_int64);
    handoff_result_t result = {(uint64_t)latency[iterations / 2],
                               (uint64_t)latency[(size_t)iterations * 99 / 100]};
    free(latency);
    return result;
}
