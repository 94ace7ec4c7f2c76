/*
 * test_waiters.c — blocking checkouts: true deadlines, unlimited waits, FIFO
 * order of waiters, direct hand-off, stats.waiting, the timeout 0 rules and a
 * waiter's deadline racing a checkin.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "support/fake_factory.h"
#include "support/test_helpers.h"

static fake_factory_t fk;

/* Join within timeout_ms; false if the thread is still running. */
static void finish(respool_t *pool)
{
    respool_free(pool);
    fake_fini(&fk);
}

/* ------------------------------------------------------------------------ */

/* A checkout with a timeout never returns ETIMEDOUT before that much time has passed. */
Test(waiters_deadline, never_early)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t held = {0};
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);

    static const long timeouts[] = {1, 2, 5, 20, 100};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        respool_lease_t lease = {0};
        lease.resource = &fk; /* must be cleared on failure */
        int64_t t0 = now_us();
        CHECK_RC(respool_checkout(pool, timeouts[i], &lease), RESPOOL_ETIMEDOUT);
        int64_t elapsed = now_us() - t0;
        cr_assert_geq(elapsed, timeouts[i] * 1000, "timeout %ld ms returned after %lld us",
                      timeouts[i], (long long)elapsed);
        cr_assert_lt(elapsed, timeouts[i] * 1000 + 500000, "timeout %ld ms took %lld us",
                     timeouts[i], (long long)elapsed);
        cr_assert_null(lease.resource, "lease.resource not cleared on ETIMEDOUT");
    }
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.timeouts, 5, "timeouts %llu", (unsigned long long)s.timeouts);
    cr_assert_eq(s.waiting, 0, "waiting %u", s.waiting);
    cr_assert_eq(s.checkouts, 1, "checkouts %llu", (unsigned long long)s.checkouts);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    finish(pool);
}

/* A negative timeout waits without limit until a resource is returned. */
Test(waiters_deadline, negative_waits_until_served)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t held = {0};
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    void *res = held.resource;

    co_t a, b;
    co_start(&a, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000), "first waiter never queued");
    co_start(&b, pool, -1000);
    cr_assert(pool_wait_waiting(pool, 2, 2000), "second waiter never queued");
    cr_assert_not(co_join(&a, 200), "checkout(-1) returned (rc %d) with nothing returned", a.rc);
    ASSERT_EQ_U(stats_of(pool).waiting, 2);

    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    cr_assert(co_join(&a, 2000), "waiter not served after checkin");
    CHECK_RC(a.rc, RESPOOL_OK);
    cr_assert_eq(a.lease.resource, res);
    cr_assert_not(co_join(&b, 100), "second waiter returned (rc %d) while resource held", b.rc);
    CHECK_RC(respool_checkin(pool, &a.lease), RESPOOL_OK);
    cr_assert(co_join(&b, 2000), "second waiter not served");
    CHECK_RC(b.rc, RESPOOL_OK);
    cr_assert_eq(b.lease.resource, res);
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    ASSERT_EQ_U(stats_of(pool).timeouts, 0);
    ASSERT_EQ_U(FAKE_GET(&fk, created), 1);
    finish(pool);
}

/* A waiter for a replacement still being made times out on time; the replacement is kept. */
Test(waiters_deadline, replacement_outlives_waiter)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    fake_set_block(&fk, true);
    CHECK_RC(respool_destroyed(pool, &l), RESPOOL_OK);
    cr_assert(fake_wait_blocked(&fk, 1, 2000), "no replacement create() after destroyed");

    int64_t t0 = now_us();
    CHECK_RC(respool_checkout(pool, 50, &l), RESPOOL_ETIMEDOUT);
    cr_assert_geq(now_us() - t0, 50000);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.creating, 1, "creating %u", s.creating);
    cr_assert_eq(s.waiting, 0, "waiting %u", s.waiting);

    fake_set_block(&fk, false);
    cr_assert(pool_wait_idle(pool, 1, 2000), "replacement did not become idle");
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    ASSERT_EQ_U(fake_id(l.resource), 2);
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* FIFO order                                                               */

#define FIFO_WAITERS 8

typedef struct {
    respool_t *pool;
    int index;
    int rc;
    respool_lease_t lease;
    pthread_t thread;
} fifo_waiter_t;

static pthread_mutex_t fifo_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fifo_cond = PTHREAD_COND_INITIALIZER;
static int fifo_served[FIFO_WAITERS];
static int fifo_count;

static void *fifo_main(void *arg)
{
    fifo_waiter_t *w = arg;
    w->rc = respool_checkout(w->pool, -1, &w->lease);
    if (w->rc == RESPOOL_OK)
        fake_hold(w->lease.resource); /* released by the main thread */
    pthread_mutex_lock(&fifo_lock);
    fifo_served[fifo_count++] = w->index;
    pthread_cond_broadcast(&fifo_cond);
    pthread_mutex_unlock(&fifo_lock);
    return NULL;
}

static bool fifo_wait_served(int n, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&fifo_lock);
    while (fifo_count < n && now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&fifo_cond, &fifo_lock, &ts);
    }
    bool ok = fifo_count >= n;
    pthread_mutex_unlock(&fifo_lock);
    return ok;
}

static void fifo_run(long fairness_us)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.fairness_us = fairness_us;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t first = {0}, second = {0};
    CHECK_RC(respool_checkout(pool, 0, &first), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &second), RESPOOL_OK);

    static fifo_waiter_t w[FIFO_WAITERS];
    fifo_count = 0;
    for (int i = 0; i < FIFO_WAITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].pool = pool;
        w[i].index = i;
        w[i].rc = -1;
        cr_assert_eq(pthread_create(&w[i].thread, NULL, fifo_main, &w[i]), 0);
        cr_assert(pool_wait_waiting(pool, (unsigned)i + 1, 2000), "waiter %d never queued", i);
    }

    /* Return resources one at a time; each must go to the longest waiter. */
    CHECK_RC(respool_checkin(pool, &first), RESPOOL_OK);
    cr_assert(fifo_wait_served(1, 2000), "nobody served after the first checkin");
    cr_assert_eq(fifo_served[0], 0, "first checkin served waiter %d", fifo_served[0]);
    CHECK_RC(respool_checkin(pool, &second), RESPOOL_OK);
    cr_assert(fifo_wait_served(2, 2000), "nobody served after the second checkin");
    cr_assert_eq(fifo_served[1], 1, "second checkin served waiter %d", fifo_served[1]);

    for (int k = 2; k < FIFO_WAITERS; k++) {
        fifo_waiter_t *done = &w[fifo_served[k - 2]];
        pthread_join(done->thread, NULL);
        CHECK_RC(done->rc, RESPOOL_OK);
        fake_unhold(done->lease.resource);
        CHECK_RC(respool_checkin(pool, &done->lease), RESPOOL_OK);
        cr_assert(fifo_wait_served(k + 1, 2000), "nobody served after checkin %d", k + 1);
        cr_assert_eq(fifo_served[k], k, "checkin %d served waiter %d, want %d", k + 1,
                     fifo_served[k], k);
    }
    for (int k = FIFO_WAITERS - 2; k < FIFO_WAITERS; k++) {
        fifo_waiter_t *done = &w[fifo_served[k]];
        pthread_join(done->thread, NULL);
        CHECK_RC(done->rc, RESPOOL_OK);
        fake_unhold(done->lease.resource);
        CHECK_RC(respool_checkin(pool, &done->lease), RESPOOL_OK);
    }
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 2);
    ASSERT_EQ_U(s.waiting, 0);
    ASSERT_EQ_U(s.checkouts, 2 + FIFO_WAITERS);
    ASSERT_EQ_U(s.created, 2);
    finish(pool);
}

/* Waiters are served in arrival order under strict hand-off. */
Test(waiters_fifo, strict_arrival_order)
{
    fifo_run(RESPOOL_FAIRNESS_STRICT);
}

/* Waiters are served in arrival order with the default fairness bound too. */
Test(waiters_fifo, default_fairness_arrival_order)
{
    fifo_run(0);
}

/* ------------------------------------------------------------------------ */
/* Hand-off                                                                 */

/* Under strict fairness a checkin hands the resource straight to the waiter. */
Test(waiters_handoff, direct_to_waiter)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.fairness_us = RESPOOL_FAIRNESS_STRICT;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t held = {0};
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    void *res = held.resource;

    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    cr_assert_null(held.resource, "checkin did not clear the lease");

    respool_lease_t barger = {0};
    CHECK_RC(respool_checkout(pool, 0, &barger), RESPOOL_EFULL);
    cr_assert_null(barger.resource);
    cr_assert(co_join(&w, 2000), "waiter not served");
    CHECK_RC(w.rc, RESPOOL_OK);
    cr_assert_eq(w.lease.resource, res);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.busy, 1);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.checkouts, 2);
    ASSERT_EQ_U(s.timeouts, 1);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    finish(pool);
}

/* With the default bound, a running thread cannot take a resource once a waiter waited > 1 ms. */
Test(waiters_handoff, no_barging_past_fairness_bound)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t held = {0};
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    void *res = held.resource;

    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    pass_time_us(20000); /* the waiter has now waited far beyond the 1 ms bound */
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_lease_t barger = {0};
    CHECK_RC(respool_checkout(pool, 0, &barger), RESPOOL_EFULL);
    cr_assert(co_join(&w, 2000), "waiter not served");
    CHECK_RC(w.rc, RESPOOL_OK);
    cr_assert_eq(w.lease.resource, res);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* stats.waiting                                                            */

/* stats.waiting counts a checkout waiting for the create() made for it. */
Test(waiters_stats, waiting_counts_create_wait)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(0, 1), fake_factory(&fk));
    fake_set_block(&fk, true);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(fake_wait_blocked(&fk, 1, 2000), "checkout did not start a create()");
    cr_assert(pool_wait_waiting(pool, 1, 2000), "stats.waiting does not count it: %u",
              stats_of(pool).waiting);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.creating, 1, "creating %u", s.creating);
    cr_assert_eq(s.idle + s.busy, 0);

    /* No room while that create() is in flight: timeout 0 fails at once. */
    respool_lease_t l = {0};
    int64_t t0 = now_ms();
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_EFULL);
    cr_assert_lt(now_ms() - t0, 100);

    fake_set_block(&fk, false);
    cr_assert(co_join(&w, 2000));
    CHECK_RC(w.rc, RESPOOL_OK);
    ASSERT_EQ_U(fake_id(w.lease.resource), 1);
    s = stats_of(pool);
    ASSERT_EQ_U(s.waiting, 0);
    ASSERT_EQ_U(s.busy, 1);
    ASSERT_EQ_U(s.overflow, 1);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* timeout 0                                                                */

/* timeout 0 gets an idle resource, and EFULL at once when none is idle and there is no room. */
Test(waiters_nonblocking, efull_at_once)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 1), fake_factory(&fk));
    respool_lease_t a = {0}, b = {0}, c = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK); /* overflow, made for it */
    ASSERT_EQ_U(FAKE_GET(&fk, create_calls), 2);
    c.resource = &fk;
    int64_t t0 = now_ms();
    CHECK_RC(respool_checkout(pool, 0, &c), RESPOOL_EFULL);
    cr_assert_lt(now_ms() - t0, 100);
    cr_assert_null(c.resource);
    cr_assert_eq(FAKE_GET(&fk, create_calls), 2, "EFULL checkout started a create()");
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.timeouts, 1);
    ASSERT_EQ_U(s.checkouts, 2);
    ASSERT_EQ_U(s.state, RESPOOL_FULL);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &b), RESPOOL_OK);
    finish(pool);
}

/* timeout 0 with room waits for the one create() made for it. */
Test(waiters_nonblocking, waits_for_its_create)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(0, 1), fake_factory(&fk));
    fake_set_block(&fk, true);
    co_t w;
    co_start(&w, pool, 0);
    cr_assert(fake_wait_blocked(&fk, 1, 2000), "timeout 0 with room did not start a create()");
    cr_assert_not(co_join(&w, 150), "checkout(0) returned %d before its create() finished", w.rc);
    fake_set_block(&fk, false);
    cr_assert(co_join(&w, 2000));
    CHECK_RC(w.rc, RESPOOL_OK);
    cr_assert_not_null(w.lease.resource);
    ASSERT_EQ_U(stats_of(pool).timeouts, 0);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    finish(pool);
}

/* timeout 0 returns EFACTORY when the create() made for it fails. */
Test(waiters_nonblocking, efactory_when_create_fails)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(0, 1), fake_factory(&fk));
    fake_set_fail_next(&fk, 1);
    respool_lease_t l = {0};
    l.resource = &fk;
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_EFACTORY);
    cr_assert_null(l.resource);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.create_failures, 1);
    cr_assert_eq(s.timeouts, 0, "EFACTORY counted as a timeout");
    ASSERT_EQ_U(s.waiting, 0);
    ASSERT_EQ_U(FAKE_GET(&fk, create_calls), 1);
    ASSERT_EQ_U(FAKE_GET(&fk, created), 0);
    finish(pool);
}

static bool failed_at_least_one(fake_factory_t *f, void *arg)
{
    return f->create_failed >= 1;
}

/* timeout 0 returns EFACTORY at once while the factory is in its retry backoff. */
Test(waiters_nonblocking, efactory_during_backoff)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 1);
    cfg.retry_initial_ms = 1000;
    cfg.retry_max_ms = 2000;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t a = {0}, b = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);
    fake_set_fail_always(&fk, true);
    CHECK_RC(respool_destroyed(pool, &b), RESPOOL_OK);
    cr_assert(fake_wait(&fk, failed_at_least_one, NULL, 2000), "replacement never attempted");
    uint64_t calls = FAKE_GET(&fk, create_calls);

    respool_lease_t l = {0};
    int64_t t0 = now_ms();
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_EFACTORY);
    cr_assert_lt(now_ms() - t0, 200, "checkout(0) during backoff took %lld ms",
                 (long long)(now_ms() - t0));
    cr_assert_null(l.resource);
    cr_assert_eq(FAKE_GET(&fk, create_calls), calls, "checkout(0) during backoff called create()");

    fake_set_fail_always(&fk, false);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* A waiter's deadline racing a checkin                                     */

#define RACE_ITERATIONS 1500

typedef struct {
    respool_t *pool;
    pthread_barrier_t start, end;
    int ok, timedout, bad;
    int bad_rc;
} race_t;

static void *race_waiter(void *arg)
{
    race_t *r = arg;
    for (int i = 0; i < RACE_ITERATIONS; i++) {
        pthread_barrier_wait(&r->start);
        respool_lease_t l = {0};
        int rc = respool_checkout(r->pool, 1, &l);
        if (rc == RESPOOL_OK) {
            r->ok++;
            fake_hold(l.resource);
            fake_unhold(l.resource);
            int rc2 = respool_checkin(r->pool, &l);
            if (rc2 != RESPOOL_OK) {
                r->bad++;
                r->bad_rc = 100 + rc2;
            }
        } else if (rc == RESPOOL_ETIMEDOUT && l.resource == NULL) {
            r->timedout++;
        } else {
            r->bad++;
            r->bad_rc = rc;
        }
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

static uint64_t race_rng = 0x9e3779b97f4a7c15ull;

static unsigned race_rand(unsigned n)
{
    race_rng ^= race_rng << 13;
    race_rng ^= race_rng >> 7;
    race_rng ^= race_rng << 17;
    return (unsigned)(race_rng % n);
}

/* A waiter whose 1 ms deadline races a checkin either gets the resource or leaves it idle. */
Test(waiters_race, deadline_vs_checkin)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    static race_t r;
    memset(&r, 0, sizeof r);
    r.pool = pool;
    pthread_barrier_init(&r.start, NULL, 2);
    pthread_barrier_init(&r.end, NULL, 2);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, race_waiter, &r), 0);

    for (int i = 0; i < RACE_ITERATIONS; i++) {
        respool_lease_t l = {0};
        CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
        pthread_barrier_wait(&r.start);
        pass_time_us(150 + (long)race_rand(1150)); /* straddles the waiter's 1 ms deadline */
        CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
        pthread_barrier_wait(&r.end);
        respool_stats_t s = stats_of(pool);
        cr_assert(s.idle == 1 && s.busy == 0 && s.waiting == 0,
                  "iteration %d: idle %u busy %u waiting %u (waiter ok %d timedout %d)", i,
                  s.idle, s.busy, s.waiting, r.ok, r.timedout);
        cr_assert_eq(r.bad, 0, "iteration %d: waiter saw rc %d", i, r.bad_rc);
    }
    pthread_join(t, NULL);
    cr_log_info("race: %d served, %d timed out", r.ok, r.timedout);
    cr_assert_eq(r.ok + r.timedout, RACE_ITERATIONS);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.idle, 1, "resource lost: idle %u", s.idle);
    ASSERT_EQ_U(s.created, 1);
    ASSERT_EQ_U(s.destroyed, 0);
    ASSERT_EQ_U(s.checkouts, (uint64_t)RACE_ITERATIONS + (uint64_t)r.ok);
    ASSERT_EQ_U(s.timeouts, (uint64_t)r.timedout);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    finish(pool);
    /* fake_fini checked created == destroyed after free */
}
