/*
 * test_poolboy.c — Poolboy's published test scenarios (test/poolboy_tests.erl)
 * rewritten for respool. Poolboy's status tuple {StateName, AvailWorkers,
 * Overflow, Monitors} maps to respool_stats {state, idle, overflow, busy};
 * killing a worker maps to respool_destroyed; a spawned process maps to a
 * thread.
 *
 * Suites: poolboy_startup, poolboy_overflow, poolboy_empty, poolboy_death,
 * poolboy_nonblocking, poolboy_status, poolboy_strategy, poolboy_timeout,
 * poolboy_transaction.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "respool.h"
#include "support/fake_factory.h"
#include "support/test_helpers.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static respool_t *new_pool(fake_factory_t *f, unsigned size, unsigned max_overflow,
                           respool_strategy_t strategy)
{
    respool_config_t cfg = quiet_config(size, max_overflow);
    cfg.strategy = strategy;
    respool_factory_t fac = fake_factory(f);
    respool_t *pool = NULL;
    int rc = respool_create(&pool, &cfg, &fac);
    cr_assert_eq(rc, RESPOOL_OK, "respool_create(%u, %u): %s", size, max_overflow,
                 respool_strerror(rc));
    return pool;
}

/* Poolboy's status/1 plus the live count: {state, idle, overflow, busy}. */
static void assert_status_at(respool_t *pool, respool_state_t state, unsigned idle,
                             unsigned overflow, unsigned busy, int line)
{
    respool_stats_t s = stats_of(pool);
    cr_assert(s.state == state && s.idle == idle && s.overflow == overflow && s.busy == busy,
              "line %d: status {%s, idle %u, overflow %u, busy %u}, expected {%s, %u, %u, %u}",
              line, respool_state_name(s.state), s.idle, s.overflow, s.busy,
              respool_state_name(state), idle, overflow, busy);
    /* overflow is max(0, live - size) */
    unsigned live = s.idle + s.busy;
    cr_assert_eq(s.overflow, live > s.size ? live - s.size : 0, "line %d: overflow != live - size",
                 line);
}
#define ASSERT_STATUS(pool, state, idle, overflow, busy)                                         \
    assert_status_at((pool), (state), (idle), (overflow), (busy), __LINE__)

/* Poolboy's get_avail_workers / get_all_workers. */
static void assert_workers_at(respool_t *pool, unsigned avail, unsigned all, int line)
{
    respool_stats_t s = stats_of(pool);
    cr_assert(s.idle == avail && s.idle + s.busy == all,
              "line %d: avail %u all %u, expected avail %u all %u", line, s.idle,
              s.idle + s.busy, avail, all);
}
#define ASSERT_WORKERS(pool, avail, all) assert_workers_at((pool), (avail), (all), __LINE__)

/* checkout(Pool) that must succeed at once; the test thread holds it. */
static respool_lease_t checkout_ok(respool_t *pool)
{
    respool_lease_t lease;
    memset(&lease, 0, sizeof lease);
    int rc = respool_checkout(pool, 0, &lease);
    cr_assert_eq(rc, RESPOOL_OK, "checkout: %s", respool_strerror(rc));
    cr_assert_not_null(lease.resource);
    fake_hold(lease.resource);
    return lease;
}

static void checkin_ok(respool_t *pool, respool_lease_t *lease)
{
    fake_unhold(lease->resource);
    int rc = respool_checkin(pool, lease);
    cr_assert_eq(rc, RESPOOL_OK, "checkin: %s", respool_strerror(rc));
    cr_assert_null(lease->resource);
}

/* kill_worker(Worker): report the resource broken. */
static void kill_worker(respool_t *pool, respool_lease_t *lease)
{
    fake_unhold(lease->resource);
    int rc = respool_destroyed(pool, lease);
    cr_assert_eq(rc, RESPOOL_OK, "destroyed: %s", respool_strerror(rc));
    cr_assert_null(lease->resource);
}

/* Wait until the pool's destroy() count reached n (destroy runs on the
 * manager) and the fake agrees. */
static void wait_destroyed(respool_t *pool, fake_factory_t *f, uint64_t n)
{
    cr_assert(pool_wait_destroyed(pool, n, 2000), "stats.destroyed never reached %llu",
              (unsigned long long)n);
    cr_assert(fake_wait_destroyed(f, n, 2000), "fake destroyed never reached %llu",
              (unsigned long long)n);
}

/* created == destroyed + live, in the pool's stats and in the fake. */
static void assert_books_balance(respool_t *pool, fake_factory_t *f)
{
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.creating, 0);
    cr_assert_eq(s.created, s.destroyed + s.idle + s.busy,
                 "created %llu != destroyed %llu + idle %u + busy %u",
                 (unsigned long long)s.created, (unsigned long long)s.destroyed, s.idle, s.busy);
    cr_assert_eq(FAKE_GET(f, created), s.created);
    cr_assert_eq(FAKE_GET(f, destroyed), s.destroyed);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A spawned process doing checkout(Pool, true, Timeout). */
typedef struct waiter {
    respool_t *pool;
    long timeout_ms;
    int rc;
    respool_lease_t lease;
    int64_t took_ns;
    atomic_bool done;
    pthread_t thread;
} waiter_t;

static void *waiter_main(void *arg)
{
    waiter_t *w = arg;
    int64_t t0 = mono_ns();
    w->rc = respool_checkout(w->pool, w->timeout_ms, &w->lease);
    w->took_ns = mono_ns() - t0;
    if (w->rc == RESPOOL_OK)
        fake_hold(w->lease.resource);
    atomic_store(&w->done, true);
    return NULL;
}

static void waiter_start(waiter_t *w, respool_t *pool, long timeout_ms)
{
    memset(w, 0, sizeof *w);
    w->pool = pool;
    w->timeout_ms = timeout_ms;
    w->rc = -1;
    atomic_init(&w->done, false);
    cr_assert_eq(pthread_create(&w->thread, NULL, waiter_main, w), 0);
}

/* Wait (polling, bounded) for the thread to have returned from checkout,
 * then join it. */
static bool waiter_finish(waiter_t *w, long timeout_ms)
{
    if (!wait_flag(&w->done, timeout_ms))
        return false;
    pthread_join(w->thread, NULL);
    return true;
}

/* ------------------------------------------------------------------------ */
/* pool_startup                                                              */
/* ------------------------------------------------------------------------ */

/* Poolboy pool_startup: "It starts ... and returns once size resources
 * exist (stats.idle == size)"; busy 0. */
Test(poolboy_startup, size_idle_after_create)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 10, 5, RESPOOL_LIFO);
    ASSERT_WORKERS(pool, 10, 10);
    ASSERT_STATUS(pool, RESPOOL_READY, 10, 0, 0);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.created, 10);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.creating, 0);
    cr_assert_eq(FAKE_GET(&f, created), 10);

    respool_lease_t w = checkout_ok(pool);
    ASSERT_WORKERS(pool, 9, 10);
    checkin_ok(pool, &w);
    ASSERT_WORKERS(pool, 10, 10);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* pool_overflow                                                             */
/* ------------------------------------------------------------------------ */

/* Checkout: "if there is room ... the manager makes a new resource";
 * checkin: "if nobody waits and live > size, it is destroyed" (dismissal). */
Test(poolboy_overflow, overflow_and_dismissal)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 5, RESPOOL_LIFO);
    respool_lease_t w[10];
    for (unsigned k = 1; k <= 10; k++) {
        w[k - 1] = checkout_ok(pool);
        unsigned id = fake_id(w[k - 1].resource);
        if (k <= 5)
            cr_assert(id >= 1 && id <= 5, "checkout %u got new resource %u, not an idle one", k, id);
        else
            cr_assert_eq(id, k, "checkout %u should be the new overflow resource %u, got %u", k, k,
                         id);
        respool_stats_t s = stats_of(pool);
        cr_assert_eq(s.busy, k);
        cr_assert_eq(s.idle, k <= 5 ? 5 - k : 0);
        cr_assert_eq(s.overflow, k <= 5 ? 0 : k - 5, "after %u checkouts overflow %u", k,
                     s.overflow);
        cr_assert_eq(s.created, k <= 5 ? 5 : k);
    }
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 5, 10);

    /* Check in newest first: the first five returns find live > size and
     * are dismissed; the last five become idle. */
    for (unsigned k = 10; k >= 1; k--) {
        checkin_ok(pool, &w[k - 1]);
        respool_stats_t s = stats_of(pool);
        unsigned live = k - 1 > 5 ? k - 1 : 5; /* live after this checkin */
        cr_assert_eq(s.busy, k - 1, "after checkin of #%u busy %u", k, s.busy);
        cr_assert_eq(s.idle + s.busy, live, "after checkin of #%u live %u, expected %u", k,
                     s.idle + s.busy, live);
        cr_assert_eq(s.overflow, live - 5);
    }
    ASSERT_STATUS(pool, RESPOOL_READY, 5, 0, 0);
    wait_destroyed(pool, &f, 5);
    for (unsigned id = 1; id <= 10; id++)
        cr_assert_eq(atomic_load(&f.all[id - 1]->destroyed), id > 5 ? 1 : 0,
                     "resource %u destroyed=%d", id, atomic_load(&f.all[id - 1]->destroyed));
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.dismissed, 5);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy pool_overflow, step for step (size 5, max_overflow 5, 7 out). */
Test(poolboy_overflow, poolboy_sequence)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 5, RESPOOL_LIFO);
    respool_lease_t w[7];
    for (int i = 0; i < 7; i++)
        w[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 7);
    checkin_ok(pool, &w[0]); /* A */
    checkin_ok(pool, &w[1]); /* B */
    ASSERT_WORKERS(pool, 0, 5);
    checkin_ok(pool, &w[2]); /* C */
    checkin_ok(pool, &w[3]); /* D */
    ASSERT_WORKERS(pool, 2, 5);
    checkin_ok(pool, &w[4]); /* E */
    checkin_ok(pool, &w[5]); /* F */
    ASSERT_WORKERS(pool, 4, 5);
    checkin_ok(pool, &w[6]); /* G */
    ASSERT_WORKERS(pool, 5, 5);
    wait_destroyed(pool, &f, 2);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* pool_empty / pool_empty_no_overflow                                       */
/* ------------------------------------------------------------------------ */

/* "timeout_ms == 0 ... returns RESPOOL_EFULL at once when there is no room";
 * "timeout_ms > 0 returns RESPOOL_ETIMEDOUT once it has passed" and "a call
 * never returns RESPOOL_ETIMEDOUT early". */
Test(poolboy_empty, no_overflow_full_and_timeout)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 0, RESPOOL_LIFO);
    respool_lease_t w[5];
    for (int i = 0; i < 5; i++)
        w[i] = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 5);

    respool_lease_t l;
    int64_t t0 = mono_ns();
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_EFULL);
    int64_t took_full = mono_ns() - t0;
    cr_assert_null(l.resource);
    cr_assert_lt(took_full, 50 * 1000000LL, "EFULL took %lld ns: it must not wait",
                 (long long)took_full);
    cr_assert_eq(stats_of(pool).timeouts, 1);

    t0 = mono_ns();
    cr_assert_eq(respool_checkout(pool, 50, &l), RESPOOL_ETIMEDOUT);
    int64_t took = mono_ns() - t0;
    cr_assert_null(l.resource);
    cr_assert_geq(took, 50 * 1000000LL, "ETIMEDOUT after %lld ns, before 50 ms", (long long)took);
    cr_assert_lt(took, 1000 * 1000000LL, "ETIMEDOUT after %lld ns", (long long)took);

    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.timeouts, 2);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.created, 5, "no resource may be made beyond size + max_overflow");
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 5);
    for (int i = 0; i < 5; i++)
        checkin_ok(pool, &w[i]);
    ASSERT_STATUS(pool, RESPOOL_READY, 5, 0, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy pool_empty (5, 2): a checkout on a full pool waits in the queue;
 * "the resource goes to the first waiter" on checkin; the extra returns
 * are dismissed. */
Test(poolboy_empty, with_overflow_waiter_served)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 2, RESPOOL_LIFO);
    respool_lease_t w[7];
    for (int i = 0; i < 7; i++)
        w[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 7);

    waiter_t t;
    waiter_start(&t, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 2000), "the spawned checkout does not wait");
    cr_assert(!atomic_load(&t.done), "the spawned checkout should block");
    cr_assert_eq(stats_of(pool).waiting, 1);

    void *a = w[0].resource;
    checkin_ok(pool, &w[0]); /* A goes to the waiter */
    cr_assert(waiter_finish(&t, 2000), "the waiter was not served by a checkin");
    cr_assert_eq(t.rc, RESPOOL_OK);
    cr_assert_eq(t.lease.resource, a, "the waiter must get the returned resource");
    checkin_ok(pool, &w[1]); /* B is dismissed */
    ASSERT_WORKERS(pool, 0, 6);
    cr_assert_eq(stats_of(pool).waiting, 0);

    checkin_ok(pool, &t.lease); /* dismissed too */
    ASSERT_WORKERS(pool, 0, 5);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 0, 5);
    wait_destroyed(pool, &f, 2);

    for (int i = 2; i < 7; i++)
        checkin_ok(pool, &w[i]);
    ASSERT_WORKERS(pool, 5, 5);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy pool_empty_no_overflow (5, 0): the waiter gets the first returned
 * resource; later returns become idle. */
Test(poolboy_empty, no_overflow_waiter_served)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 0, RESPOOL_LIFO);
    respool_lease_t w[5];
    for (int i = 0; i < 5; i++)
        w[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 5);

    waiter_t t;
    waiter_start(&t, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    cr_assert(!atomic_load(&t.done), "the spawned checkout should block");

    void *a = w[0].resource;
    checkin_ok(pool, &w[0]);
    cr_assert(waiter_finish(&t, 2000));
    cr_assert_eq(t.rc, RESPOOL_OK);
    cr_assert_eq(t.lease.resource, a);
    checkin_ok(pool, &w[1]);
    ASSERT_WORKERS(pool, 1, 5);
    checkin_ok(pool, &t.lease);
    ASSERT_WORKERS(pool, 2, 5);
    cr_assert_eq(FAKE_GET(&f, destroyed), 0);
    for (int i = 2; i < 5; i++)
        checkin_ok(pool, &w[i]);
    ASSERT_WORKERS(pool, 5, 5);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* State: READY "at least one idle", OVERFLOW "none idle, but room",
 * FULL "none idle and overflow exhausted", through a pool's life. */
Test(poolboy_empty, state_transitions)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 2, RESPOOL_LIFO);
    respool_lease_t w[7];
    for (unsigned k = 1; k <= 7; k++) {
        w[k - 1] = checkout_ok(pool);
        respool_state_t want = k < 5 ? RESPOOL_READY : k < 7 ? RESPOOL_OVERFLOW : RESPOOL_FULL;
        respool_stats_t s = stats_of(pool);
        cr_assert_eq(s.state, want, "after %u checkouts state %s, expected %s", k,
                     respool_state_name(s.state), respool_state_name(want));
    }
    /* Returns: 7 -> 6 live (dismissed, overflow state), 6 -> 5 (dismissed),
     * then idle -> ready. */
    checkin_ok(pool, &w[6]);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 1, 6);
    checkin_ok(pool, &w[5]);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 0, 5);
    checkin_ok(pool, &w[4]);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 4);
    for (int i = 3; i >= 0; i--)
        checkin_ok(pool, &w[i]);
    ASSERT_STATUS(pool, RESPOOL_READY, 5, 0, 0);
    wait_destroyed(pool, &f, 2);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* worker_death*                                                             */
/* ------------------------------------------------------------------------ */

/* Poolboy worker_death (5, 2): "respool_destroyed ... is given to destroy()";
 * replacement rule "whenever live + in-flight creates < size". */
Test(poolboy_death, worker_death)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 2, RESPOOL_LIFO);
    respool_lease_t w = checkout_ok(pool);
    unsigned dead = fake_id(w.resource);
    kill_worker(pool, &w);
    wait_destroyed(pool, &f, 1);
    cr_assert(pool_wait_idle(pool, 5, 2000), "the dead worker was not replaced");
    ASSERT_WORKERS(pool, 5, 5);
    cr_assert_eq(atomic_load(&f.all[dead - 1]->destroyed), 1);
    assert_books_balance(pool, &f);

    respool_lease_t ws[7];
    for (int i = 0; i < 7; i++) {
        ws[i] = checkout_ok(pool);
        cr_assert_neq(fake_id(ws[i].resource), dead, "a destroyed resource was given out");
    }
    ASSERT_WORKERS(pool, 0, 7);

    kill_worker(pool, &ws[0]); /* A: live 7 -> 6, no replacement */
    wait_destroyed(pool, &f, 2);
    ASSERT_WORKERS(pool, 0, 6);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 1, 6);

    kill_worker(pool, &ws[1]); /* B: live 5 */
    kill_worker(pool, &ws[2]); /* C: live 4 < size: replaced */
    wait_destroyed(pool, &f, 4);
    cr_assert(pool_wait_idle(pool, 1, 2000), "live fell below size and was not refilled");
    ASSERT_WORKERS(pool, 1, 5);
    assert_books_balance(pool, &f);
    cr_assert_eq(stats_of(pool).reported_broken, 4);

    for (int i = 3; i < 7; i++)
        checkin_ok(pool, &ws[i]);
    ASSERT_WORKERS(pool, 5, 5);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy worker_death_while_full (5, 2): replacement rule "or a checkout
 * waits and there is room" — the queued checkout gets the replacement. */
Test(poolboy_death, while_full_waiter_gets_replacement)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 2, RESPOOL_LIFO);
    respool_lease_t w = checkout_ok(pool);
    kill_worker(pool, &w);
    cr_assert(pool_wait_idle(pool, 5, 2000));
    wait_destroyed(pool, &f, 1);
    ASSERT_WORKERS(pool, 5, 5);

    respool_lease_t ws[7];
    for (int i = 0; i < 7; i++)
        ws[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 7);
    uint64_t made_before = FAKE_GET(&f, created);

    waiter_t t;
    waiter_start(&t, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    cr_assert(!atomic_load(&t.done), "the spawned checkout should block");

    unsigned a_id = fake_id(ws[0].resource);
    kill_worker(pool, &ws[0]);
    cr_assert(waiter_finish(&t, 2000), "the waiter did not get a replacement");
    cr_assert_eq(t.rc, RESPOOL_OK, "waiter: %s", respool_strerror(t.rc));
    cr_assert_neq(fake_id(t.lease.resource), a_id);
    cr_assert_gt(fake_id(t.lease.resource), made_before,
                 "the waiter must get the new replacement resource");
    wait_destroyed(pool, &f, 2);
    ASSERT_WORKERS(pool, 0, 7);
    cr_assert_eq(stats_of(pool).waiting, 0);

    /* A worker dies while full with no queued checkout: live 6 >= size, not
     * replaced. */
    kill_worker(pool, &ws[1]);
    wait_destroyed(pool, &f, 3);
    ASSERT_WORKERS(pool, 0, 6);
    assert_books_balance(pool, &f);

    checkin_ok(pool, &t.lease);
    for (int i = 2; i < 7; i++)
        checkin_ok(pool, &ws[i]);
    ASSERT_WORKERS(pool, 5, 5);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy worker_death_while_full_no_overflow (5, 0). */
Test(poolboy_death, while_full_no_overflow)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 0, RESPOOL_LIFO);
    respool_lease_t w = checkout_ok(pool);
    kill_worker(pool, &w);
    cr_assert(pool_wait_idle(pool, 5, 2000));
    wait_destroyed(pool, &f, 1);

    respool_lease_t ws[5];
    for (int i = 0; i < 5; i++)
        ws[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 5);

    waiter_t t;
    waiter_start(&t, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    cr_assert(!atomic_load(&t.done));

    kill_worker(pool, &ws[0]);
    cr_assert(waiter_finish(&t, 2000), "the waiter did not get a replacement");
    cr_assert_eq(t.rc, RESPOOL_OK);
    cr_assert_eq(fake_id(t.lease.resource), 7, "expected the replacement (resource 7)");
    ASSERT_WORKERS(pool, 0, 5);

    kill_worker(pool, &ws[1]);
    cr_assert(pool_wait_idle(pool, 1, 2000));
    ASSERT_WORKERS(pool, 1, 5);
    kill_worker(pool, &ws[2]);
    cr_assert(pool_wait_idle(pool, 2, 2000));
    ASSERT_WORKERS(pool, 2, 5);
    wait_destroyed(pool, &f, 4);
    assert_books_balance(pool, &f);

    checkin_ok(pool, &t.lease);
    checkin_ok(pool, &ws[3]);
    checkin_ok(pool, &ws[4]);
    ASSERT_WORKERS(pool, 5, 5);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy reuses_waiting_monitor_on_worker_exit (1, 0): a thread holding the
 * only resource waits for a second one; the first is reported destroyed from
 * another thread ("A lease may be ... reported destroyed from any thread")
 * and the replacement goes to the waiter. */
typedef struct double_taker {
    respool_t *pool;
    respool_lease_t first, second;
    int rc1, rc2;
    atomic_bool have_first;
    atomic_bool done;
    pthread_t thread;
} double_taker_t;

static void *double_taker_main(void *arg)
{
    double_taker_t *d = arg;
    d->rc1 = respool_checkout(d->pool, 0, &d->first);
    atomic_store(&d->have_first, true);
    if (d->rc1 == RESPOOL_OK)
        d->rc2 = respool_checkout(d->pool, 5000, &d->second);
    atomic_store(&d->done, true);
    return NULL;
}

Test(poolboy_death, waiter_holding_one_gets_replacement)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    double_taker_t d;
    memset(&d, 0, sizeof d);
    d.pool = pool;
    d.rc2 = -1;
    cr_assert_eq(pthread_create(&d.thread, NULL, double_taker_main, &d), 0);
    cr_assert(pool_wait_waiting(pool, 1, 2000), "second checkout does not wait");
    cr_assert(atomic_load(&d.have_first));
    cr_assert_eq(d.rc1, RESPOOL_OK);
    cr_assert(!atomic_load(&d.done));
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);

    cr_assert_eq(respool_destroyed(pool, &d.first), RESPOOL_OK);
    cr_assert(wait_flag(&d.done, 2000), "the waiter did not get the replacement");
    pthread_join(d.thread, NULL);
    cr_assert_eq(d.rc2, RESPOOL_OK);
    cr_assert_eq(fake_id(d.second.resource), 2);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.busy, 1);
    cr_assert_eq(s.idle, 0);
    cr_assert_eq(respool_checkin(pool, &d.second), RESPOOL_OK);
    wait_destroyed(pool, &f, 1);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* pool_full_nonblocking*                                                    */
/* ------------------------------------------------------------------------ */

/* Poolboy pool_full_nonblocking_no_overflow (5, 0): EFULL at once, counted in
 * stats.timeouts; once a dead worker's replacement is idle, a non-blocking
 * checkout gets it. */
Test(poolboy_nonblocking, full_no_overflow)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 0, RESPOOL_LIFO);
    respool_lease_t w[5];
    for (int i = 0; i < 5; i++)
        w[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 5);

    respool_lease_t l;
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_EFULL);
    cr_assert_null(l.resource);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.timeouts, 1);
    cr_assert_eq(s.checkouts, 5);
    cr_assert_eq(s.waiting, 0);

    kill_worker(pool, &w[0]);
    cr_assert(pool_wait_idle(pool, 1, 2000), "the dead worker was not replaced");
    w[0] = checkout_ok(pool);
    cr_assert_eq(fake_id(w[0].resource), 6);
    s = stats_of(pool);
    cr_assert_eq(s.checkouts, 6);
    cr_assert_eq(s.timeouts, 1);
    ASSERT_WORKERS(pool, 0, 5);
    for (int i = 0; i < 5; i++)
        checkin_ok(pool, &w[i]);
    wait_destroyed(pool, &f, 1);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy pool_full_nonblocking (5, 5): EFULL when overflow is exhausted;
 * after a death there is room, and timeout 0 "waits for that one create()"
 * ("Poolboy's non-blocking checkout also starts a worker"). */
Test(poolboy_nonblocking, full_with_overflow)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 5, 5, RESPOOL_LIFO);
    respool_lease_t w[10];
    for (int i = 0; i < 10; i++)
        w[i] = checkout_ok(pool);
    ASSERT_WORKERS(pool, 0, 10);

    respool_lease_t l;
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_EFULL);
    cr_assert_null(l.resource);
    cr_assert_eq(stats_of(pool).timeouts, 1);

    kill_worker(pool, &w[0]); /* live 9 >= size: no replacement by itself */
    wait_destroyed(pool, &f, 1);
    ASSERT_WORKERS(pool, 0, 9);
    w[0] = checkout_ok(pool);
    cr_assert_eq(fake_id(w[0].resource), 11, "a new worker should be started for it");
    ASSERT_WORKERS(pool, 0, 10);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.timeouts, 1);
    cr_assert_eq(s.checkouts, 11);
    for (int i = 0; i < 10; i++)
        checkin_ok(pool, &w[i]);
    ASSERT_WORKERS(pool, 5, 5);
    wait_destroyed(pool, &f, 6);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* pool_returns_status                                                       */
/* ------------------------------------------------------------------------ */

/* Poolboy pool_returns_status, pool (2, 0). */
Test(poolboy_status, size2_overflow0)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 2, 0, RESPOOL_LIFO);
    ASSERT_STATUS(pool, RESPOOL_READY, 2, 0, 0);
    respool_lease_t a = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 1);
    respool_lease_t b = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 2);
    checkin_ok(pool, &a);
    checkin_ok(pool, &b);
    ASSERT_STATUS(pool, RESPOOL_READY, 2, 0, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy pool_returns_status, pool (1, 1). */
Test(poolboy_status, size1_overflow1)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 1, RESPOOL_LIFO);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    respool_lease_t a = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 0, 1);
    respool_lease_t b = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 1, 2);
    checkin_ok(pool, &a); /* dismissed */
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 0, 1);
    checkin_ok(pool, &b);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    wait_destroyed(pool, &f, 1);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy pool_returns_status, pool (0, 2): nothing made at start. */
Test(poolboy_status, size0_overflow2)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 0, 2, RESPOOL_LIFO);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 0, 0);
    cr_assert_eq(stats_of(pool).created, 0);
    respool_lease_t a = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 1, 1);
    respool_lease_t b = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 2, 2);
    checkin_ok(pool, &a);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 1, 1);
    checkin_ok(pool, &b);
    ASSERT_STATUS(pool, RESPOOL_OVERFLOW, 0, 0, 0);
    wait_destroyed(pool, &f, 2);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy's new_pool(0, 0) is {full, 0, 0, 0}; respool: "unlike Poolboy, a
 * pool that can never hold anything is an error". */
Test(poolboy_status, size0_overflow0_rejected)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = quiet_config(0, 0);
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_EINVAL);
    cr_assert_null(pool);
    fake_fini(&f);
}

/* "stats.waiting counts every thread inside respool_checkout that has no
 * resource yet": waiting, state and counts agree at each step. */
Test(poolboy_status, waiting_counted)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    respool_lease_t a = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);
    waiter_t t1, t2;
    waiter_start(&t1, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    waiter_start(&t2, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 2, 2000));
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);

    checkin_ok(pool, &a); /* goes to t1 (arrival order) */
    cr_assert(waiter_finish(&t1, 2000));
    cr_assert_eq(t1.rc, RESPOOL_OK);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    cr_assert(!atomic_load(&t2.done));
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);

    checkin_ok(pool, &t1.lease);
    cr_assert(waiter_finish(&t2, 2000));
    cr_assert_eq(t2.rc, RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.checkouts, 3);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);
    checkin_ok(pool, &t2.lease);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* strategies                                                                */
/* ------------------------------------------------------------------------ */

/* Return a, b, c in that order, then check out three and record ids. */
static void strategy_order(respool_strategy_t strategy, unsigned got[3], unsigned returned[3])
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 3, 0, strategy);
    respool_lease_t w[3];
    for (int i = 0; i < 3; i++)
        w[i] = checkout_ok(pool);
    const int order[3] = {1, 2, 0}; /* return B, C, A */
    for (int i = 0; i < 3; i++) {
        returned[i] = fake_id(w[order[i]].resource);
        checkin_ok(pool, &w[order[i]]);
    }
    for (int i = 0; i < 3; i++) {
        w[i] = checkout_ok(pool);
        got[i] = fake_id(w[i].resource);
    }
    for (int i = 0; i < 3; i++)
        checkin_ok(pool, &w[i]);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy default_strategy_lifo: "LIFO default": check in A then B, the next
 * checkout gets B, then A. */
Test(poolboy_strategy, default_is_lifo)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = quiet_config(2, 0); /* strategy left at 0 */
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_OK);

    respool_lease_t w1 = checkout_ok(pool);
    void *r1 = w1.resource;
    checkin_ok(pool, &w1);
    w1 = checkout_ok(pool);
    cr_assert_eq(w1.resource, r1, "LIFO: the worker just returned comes back first");

    respool_lease_t a = w1, b = checkout_ok(pool);
    void *ra = a.resource, *rb = b.resource;
    checkin_ok(pool, &a);
    checkin_ok(pool, &b);
    respool_lease_t x = checkout_ok(pool);
    respool_lease_t y = checkout_ok(pool);
    cr_assert_eq(x.resource, rb, "LIFO: B (returned last) first");
    cr_assert_eq(y.resource, ra);
    checkin_ok(pool, &x);
    checkin_ok(pool, &y);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy lifo_strategy: RESPOOL_LIFO gives "the most recently returned". */
Test(poolboy_strategy, lifo)
{
    unsigned got[3], ret[3];
    strategy_order(RESPOOL_LIFO, got, ret);
    cr_assert(got[0] == ret[2] && got[1] == ret[1] && got[2] == ret[0],
              "LIFO: returned %u %u %u, got %u %u %u", ret[0], ret[1], ret[2], got[0], got[1],
              got[2]);

    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 2, 0, RESPOOL_LIFO);
    respool_lease_t w1 = checkout_ok(pool);
    void *r1 = w1.resource;
    checkin_ok(pool, &w1);
    w1 = checkout_ok(pool);
    cr_assert_eq(w1.resource, r1);
    checkin_ok(pool, &w1);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy fifo_strategy: RESPOOL_FIFO gives "the least recently returned". */
Test(poolboy_strategy, fifo)
{
    unsigned got[3], ret[3];
    strategy_order(RESPOOL_FIFO, got, ret);
    cr_assert(got[0] == ret[0] && got[1] == ret[1] && got[2] == ret[2],
              "FIFO: returned %u %u %u, got %u %u %u", ret[0], ret[1], ret[2], got[0], got[1],
              got[2]);

    /* Poolboy's exact sequence (2, 0, fifo). */
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 2, 0, RESPOOL_FIFO);
    respool_lease_t w1 = checkout_ok(pool);
    void *r1 = w1.resource;
    checkin_ok(pool, &w1);
    respool_lease_t w2 = checkout_ok(pool);
    cr_assert_neq(w2.resource, r1, "FIFO: the other, longer idle worker first");
    respool_lease_t w3 = checkout_ok(pool);
    cr_assert_eq(w3.resource, r1);
    checkin_ok(pool, &w2);
    checkin_ok(pool, &w3);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* timed-out checkouts (demonitors_when_checkout_cancelled)                  */
/* ------------------------------------------------------------------------ */

/* "A waiter whose deadline passes ... neither keeps nor loses" a resource:
 * after a timed-out checkout the returned resource becomes idle, not lost. */
Test(poolboy_timeout, cancelled_checkout_leaves_pool_consistent)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    respool_lease_t a = checkout_ok(pool);
    void *ra = a.resource;

    waiter_t t;
    waiter_start(&t, pool, 30);
    cr_assert(waiter_finish(&t, 2000));
    cr_assert_eq(t.rc, RESPOOL_ETIMEDOUT);
    cr_assert_null(t.lease.resource);
    cr_assert_geq(t.took_ns, 30 * 1000000LL, "timed out early: %lld ns", (long long)t.took_ns);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.timeouts, 1);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);

    checkin_ok(pool, &a);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    a = checkout_ok(pool);
    cr_assert_eq(a.resource, ra);
    checkin_ok(pool, &a);
    cr_assert_eq(FAKE_GET(&f, destroyed), 0);
    respool_free(pool);
    fake_fini(&f);
}

/* Several timed-out waiters on a pool with overflow: afterwards every
 * resource can be checked out again (nothing lost, nothing leaked). */
Test(poolboy_timeout, nothing_lost_after_timeouts)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 3, 2, RESPOOL_LIFO);
    respool_lease_t w[5];
    for (int i = 0; i < 5; i++)
        w[i] = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 2, 5);

    waiter_t t[3];
    for (int i = 0; i < 3; i++)
        waiter_start(&t[i], pool, 40);
    for (int i = 0; i < 3; i++) {
        cr_assert(waiter_finish(&t[i], 2000));
        cr_assert_eq(t[i].rc, RESPOOL_ETIMEDOUT, "waiter %d: %s", i, respool_strerror(t[i].rc));
        cr_assert_geq(t[i].took_ns, 40 * 1000000LL);
    }
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.timeouts, 3);
    cr_assert_eq(s.checkouts, 5);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 2, 5);

    for (int i = 0; i < 5; i++)
        checkin_ok(pool, &w[i]);
    ASSERT_STATUS(pool, RESPOOL_READY, 3, 0, 0);
    wait_destroyed(pool, &f, 2);

    for (int i = 0; i < 5; i++)
        w[i] = checkout_ok(pool);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 2, 5);
    for (int i = 0; i < 5; i++)
        checkin_ok(pool, &w[i]);
    wait_destroyed(pool, &f, 4);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* A timed-out waiter ahead in the queue does not take the resource from the
 * waiter behind it ("Waiters are served in arrival order"; a waiter that
 * has left the queue gets nothing). */
Test(poolboy_timeout, expired_waiter_skipped)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    respool_lease_t a = checkout_ok(pool);
    waiter_t early, late;
    waiter_start(&early, pool, 20);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    waiter_start(&late, pool, 5000);
    cr_assert(waiter_finish(&early, 2000));
    cr_assert_eq(early.rc, RESPOOL_ETIMEDOUT);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    cr_assert(!atomic_load(&late.done));

    void *ra = a.resource;
    checkin_ok(pool, &a);
    cr_assert(waiter_finish(&late, 2000));
    cr_assert_eq(late.rc, RESPOOL_OK);
    cr_assert_eq(late.lease.resource, ra);
    checkin_ok(pool, &late.lease);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* transaction                                                               */
/* ------------------------------------------------------------------------ */

typedef struct tx_state {
    int calls;
    unsigned id;
    respool_verdict_t verdict;
} tx_state_t;

static respool_verdict_t tx_use(void *resource, void *arg)
{
    tx_state_t *s = arg;
    fake_hold(resource);
    s->calls++;
    s->id = fake_id(resource);
    fake_unhold(resource);
    return s->verdict;
}

/* Poolboy transaction_timeout_without_exit / transaction_timeout (1, 0):
 * after a transaction the same single worker is there, status unchanged. */
Test(poolboy_transaction, worker_returned)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    tx_state_t st = {0, 0, RESPOOL_KEEP};
    cr_assert_eq(respool_transaction(pool, 0, tx_use, &st), RESPOOL_OK);
    cr_assert_eq(st.calls, 1);
    cr_assert_eq(st.id, 1);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    cr_assert_eq(respool_transaction(pool, 5000, tx_use, &st), RESPOOL_OK);
    cr_assert_eq(st.calls, 2);
    cr_assert_eq(st.id, 1, "the same worker after a transaction");
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.created, 1);
    cr_assert_eq(s.checkouts, 2);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy checkin_after_exception_in_transaction (2, 0): whatever work did,
 * the worker comes back (KEEP) and the pool has 2 available again. */
Test(poolboy_transaction, checkin_after_failed_work)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 2, 0, RESPOOL_LIFO);
    ASSERT_WORKERS(pool, 2, 2);
    tx_state_t st = {0, 0, RESPOOL_KEEP};
    cr_assert_eq(respool_transaction(pool, 1000, tx_use, &st), RESPOOL_OK);
    ASSERT_WORKERS(pool, 2, 2);
    st.verdict = RESPOOL_BROKEN; /* the worker itself broke */
    cr_assert_eq(respool_transaction(pool, 1000, tx_use, &st), RESPOOL_OK);
    wait_destroyed(pool, &f, 1);
    cr_assert(pool_wait_idle(pool, 2, 2000));
    ASSERT_WORKERS(pool, 2, 2);
    assert_books_balance(pool, &f);
    respool_free(pool);
    fake_fini(&f);
}

/* Poolboy transaction/3 with a timeout on a full pool: the checkout's
 * ETIMEDOUT is returned and work never runs. */
Test(poolboy_transaction, timeout_on_full_pool)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    respool_lease_t a = checkout_ok(pool);
    tx_state_t st = {0, 0, RESPOOL_KEEP};
    int64_t t0 = mono_ns();
    cr_assert_eq(respool_transaction(pool, 30, tx_use, &st), RESPOOL_ETIMEDOUT);
    cr_assert_geq(mono_ns() - t0, 30 * 1000000LL);
    cr_assert_eq(st.calls, 0);
    ASSERT_STATUS(pool, RESPOOL_FULL, 0, 0, 1);
    checkin_ok(pool, &a);
    respool_free(pool);
    fake_fini(&f);
}

/* A transaction that waits is served when a worker comes back, runs work,
 * and returns the worker. */
typedef struct tx_thread {
    respool_t *pool;
    tx_state_t st;
    int rc;
    atomic_bool done;
} tx_thread_t;

static void *tx_thread_main(void *arg)
{
    tx_thread_t *t = arg;
    t->rc = respool_transaction(t->pool, 5000, tx_use, &t->st);
    atomic_store(&t->done, true);
    return NULL;
}

Test(poolboy_transaction, waits_for_worker)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = new_pool(&f, 1, 0, RESPOOL_LIFO);
    respool_lease_t a = checkout_ok(pool);
    tx_thread_t t;
    memset(&t, 0, sizeof t);
    t.pool = pool;
    t.st.verdict = RESPOOL_KEEP;
    t.rc = -1;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, tx_thread_main, &t), 0);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    cr_assert_eq(t.st.calls, 0);
    checkin_ok(pool, &a);
    cr_assert(wait_flag(&t.done, 2000), "the waiting transaction was not served");
    pthread_join(th, NULL);
    cr_assert_eq(t.rc, RESPOOL_OK);
    cr_assert_eq(t.st.calls, 1);
    cr_assert_eq(t.st.id, 1);
    ASSERT_STATUS(pool, RESPOOL_READY, 1, 0, 0);
    respool_free(pool);
    fake_fini(&f);
}
