/*
 * parking.c — where a blocked checkout sleeps: one parker per waiter.
 *
 * Why not a condition variable on the pool lock: a thread woken from
 * pthread_cond_wait must take the pool lock again before it can return,
 * and the thread that woke it still holds that lock, so every hand-off
 * costs the waiter a second sleep (on the mutex) and a second wake-up. A
 * parker is a 32-bit word the waiter sleeps on without any lock: the
 * completer fills in the waiter's outcome and lease under the pool lock,
 * then finishes the parker, and the waiter returns the moment it runs.
 *
 * The word: bit 0 is FINISHED (the waiter is complete: outcome and lease
 * are written and will not change); the other bits count plain wake-ups
 * ("an idle resource is there, come and take it"). A waiter reads its
 * ticket (the word) under the pool lock, drops the lock and sleeps while
 * the word still equals the ticket, so no wake-up between the two is lost.
 *
 * Lifetime: the parker lives on the waiter's stack. Once FINISHED is set the
 * waiter may return at any moment, so the waker touches nothing after it:
 *   - Linux: the word is changed with one atomic and a futex wake follows
 *     on its address. A wake on an address whose owner has returned is
 *     harmless (at worst a spurious wake-up for whoever sleeps there next,
 *     which every futex sleeper tolerates). The valgrind build, which
 *     cannot tell, makes the waiter wait for such wakes (below).
 *   - elsewhere: a mutex and condition variable per parker; the word
 *     changes under that mutex, and parker_destroy takes the mutex once,
 *     so the waiter cannot free it while a waker is still inside.
 * Deadlines are CLOCK_MONOTONIC in both.
 */
#include <errno.h>

#include "internal.h"

#if defined(__linux__) && !defined(RESPOOL_PORTABLE_PARKING)

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Valgrind builds only. Valgrind models the futex system call as a read of
 * the word, so a wake made after its waiter returned looks to memcheck like
 * a read of a dead stack slot, and to helgrind like a race with whatever the
 * waiter's thread writes there next. There, every wake is announced before
 * the word changes (so a waiter that sees the change sees the announcement)
 * and counted off after its system call, and parker_destroy waits for the
 * count to reach zero: the parker outlives every system call on it. Other
 * builds compile none of this; a late wake is harmless there (above). */
#if defined(RESPOOL_VALGRIND)
#include <sched.h>

static void notify_announce(parker_t *parker)
{
    atomic_fetch_add_explicit(&parker->notifying, 1, memory_order_relaxed);
}

void parker_notify_done(parker_t *parker)
{
    ANNOTATE_HAPPENS_BEFORE(&parker->notifying);
    atomic_fetch_sub_explicit(&parker->notifying, 1, memory_order_release);
}
#else
static void notify_announce(parker_t *parker)
{
    (void)parker;
}
#endif

void parker_init(parker_t *parker)
{
    atomic_init(&parker->word, 0);
#if defined(RESPOOL_VALGRIND)
    atomic_init(&parker->notifying, 0);
#endif
}

void parker_destroy(parker_t *parker)
{
#if defined(RESPOOL_VALGRIND)
    while (atomic_load_explicit(&parker->notifying, memory_order_acquire) != 0)
        sched_yield();
    ANNOTATE_HAPPENS_AFTER(&parker->notifying);
#else
    (void)parker;
#endif
}

/* Sleep while the word equals `ticket`, until deadline_ns (CLOCK_MONOTONIC,
 * absolute; NO_DEADLINE = no limit). May return early (a signal, a stale
 * wake): callers re-check. */
void parker_wait(parker_t *parker, uint32_t ticket, int64_t deadline_ns)
{
    struct timespec until;
    const struct timespec *timeout = NULL;
    if (deadline_ns != NO_DEADLINE) {
        until = timespec_from_ns(deadline_ns);
        timeout = &until;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (plain
     * FUTEX_WAIT would take a relative one). */
    syscall(SYS_futex, &parker->word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, ticket, timeout,
            NULL, FUTEX_BITSET_MATCH_ANY);
}

/* Change the word (release: everything written before is visible to the
 * waiter once it sees the change) and wake the sleeper. */
void parker_wake(parker_t *parker, bool finish)
{
    notify_announce(parker);
    if (finish) {
        PARKER_HAPPENS_BEFORE(parker);
        atomic_fetch_or_explicit(&parker->word, PARKER_FINISHED, memory_order_release);
    }
    else
        atomic_fetch_add_explicit(&parker->word, 2, memory_order_release);
    parker_notify(parker);
}

/* The system call half of a wake-up: wake the thread sleeping on the word
 * (if any). Safe on a parker whose waiter has returned (see above). */
void parker_notify(parker_t *parker)
{
    syscall(SYS_futex, &parker->word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
    parker_notify_done(parker);
}

/* A plain wake-up (come and take an idle resource) from a lock holder: the
 * word changes now, under the lock, so the waiter cannot miss it; the
 * system call waits for pool_unlock, so the waiter does not wake into the
 * lock. One wake-up is kept; a second in the same critical section (rare)
 * delivers the first at once. */
void parker_wake_deferred(respool_t *pool, parker_t *parker)
{
    notify_announce(parker);
    atomic_fetch_add_explicit(&parker->word, 2, memory_order_release);
    pool_flush_wakes(pool);
    pool->deferred_wake = parker;
}

#else /* portable: a mutex and a condition variable per parker */

void parker_init(parker_t *parker)
{
    atomic_init(&parker->word, 0);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&parker->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    pthread_mutex_init(&parker->lock, NULL);
}

/* Waits out a waker still inside parker_wake, then frees. */
void parker_destroy(parker_t *parker)
{
    pthread_mutex_lock(&parker->lock);
    pthread_mutex_unlock(&parker->lock);
    pthread_mutex_destroy(&parker->lock);
    pthread_cond_destroy(&parker->wake);
}

void parker_wait(parker_t *parker, uint32_t ticket, int64_t deadline_ns)
{
    pthread_mutex_lock(&parker->lock);
    int rc = 0;
    while (rc != ETIMEDOUT && atomic_load_explicit(&parker->word, memory_order_relaxed) == ticket) {
        if (deadline_ns == NO_DEADLINE) {
            rc = pthread_cond_wait(&parker->wake, &parker->lock);
        } else {
            struct timespec until = timespec_from_ns(deadline_ns);
            rc = pthread_cond_timedwait(&parker->wake, &parker->lock, &until);
        }
    }
    pthread_mutex_unlock(&parker->lock);
}

/* Nothing is ever deferred here: the waker may not touch the parker once
 * the lock is released. */
void parker_wake_deferred(respool_t *pool, parker_t *parker)
{
    (void)pool;
    parker_wake(parker, false);
}

void parker_notify(parker_t *parker)
{
    (void)parker; /* never called: nothing is deferred */
}

void parker_wake(parker_t *parker, bool finish)
{
    pthread_mutex_lock(&parker->lock);
    if (finish) {
        PARKER_HAPPENS_BEFORE(parker);
        atomic_fetch_or_explicit(&parker->word, PARKER_FINISHED, memory_order_release);
    }
    else
        atomic_fetch_add_explicit(&parker->word, 2, memory_order_release);
    pthread_cond_signal(&parker->wake);
    pthread_mutex_unlock(&parker->lock);
}

#endif
