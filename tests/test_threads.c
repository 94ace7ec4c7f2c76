/*
 * test_threads.c — concurrency: many threads doing random operations against
 * a small pool with a stats invariant checker, and 1,000 blocked waiters.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/fake_factory.h"
#include "support/test_helpers.h"

static fake_factory_t fk;

static bool timed_join(pthread_t t, long timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* ------------------------------------------------------------------------ */
/* Random operations                                                        */

#define STRESS_THREADS 16
#define STRESS_SIZE 4
#define STRESS_OVERFLOW 2

typedef struct {
    respool_t *pool;
    uint32_t seed;
    uint64_t ok, timedout, full, efactory, checkins, destroyeds;
    int bad;
    char why[160];
    pthread_t thread;
} worker_t;

static atomic_bool stop;

static void worker_bad(worker_t *w, const char *op, long timeout, int rc)
{
    if (w->bad++ == 0)
        snprintf(w->why, sizeof w->why, "%s (timeout %ld) returned %d (%s)", op, timeout, rc,
                 respool_strerror(rc));
}

static void *worker_main(void *arg)
{
    static const long timeouts[] = {0, 0, 1, 2, 5, 10, 20, -1};
    worker_t *w = arg;
    while (!atomic_load(&stop)) {
        uint32_t r = xorshift(&w->seed);
        long timeout = timeouts[r % 8];
        respool_lease_t lease = {0};
        int rc = respool_checkout(w->pool, timeout, &lease);
        switch (rc) {
        case RESPOOL_OK: {
            w->ok++;
            if (!lease.resource) {
                worker_bad(w, "checkout gave NULL resource", timeout, rc);
                break;
            }
            fake_hold(lease.resource); /* aborts on a double hand-out */
            uint32_t r2 = xorshift(&w->seed);
            if (r2 % 4 == 0)
                pass_time_us((long)(r2 >> 8) % 400);
            fake_unhold(lease.resource);
            int rc2;
            if (r2 % 10 == 1) {
                rc2 = respool_destroyed(w->pool, &lease);
                w->destroyeds++;
            } else {
                rc2 = respool_checkin(w->pool, &lease);
                w->checkins++;
            }
            if (rc2 != RESPOOL_OK || lease.resource != NULL)
                worker_bad(w, "checkin/destroyed", timeout, rc2);
            break;
        }
        case RESPOOL_ETIMEDOUT:
            w->timedout++;
            if (timeout <= 0)
                worker_bad(w, "checkout", timeout, rc);
            break;
        case RESPOOL_EFULL:
            w->full++;
            if (timeout != 0)
                worker_bad(w, "checkout", timeout, rc);
            break;
        case RESPOOL_EFACTORY:
            w->efactory++;
            if (timeout != 0)
                worker_bad(w, "checkout", timeout, rc);
            break;
        default:
            worker_bad(w, "checkout", timeout, rc);
            break;
        }
        if (rc != RESPOOL_OK && lease.resource != NULL)
            worker_bad(w, "failed checkout left a resource", timeout, rc);
        if (r % 256 == 7)
            fake_set_fail_next(&fk, 1 + (int)((r >> 8) % 3));
    }
    return NULL;
}

typedef struct {
    respool_t *pool;
    uint64_t samples;
    int bad;
    char why[256];
} checker_t;

static void checker_bad(checker_t *c, const respool_stats_t *s, const char *what)
{
    if (c->bad++ == 0)
        snprintf(c->why, sizeof c->why,
                 "%s: state %d idle %u busy %u overflow %u creating %u waiting %u size %u "
                 "max_overflow %u created %llu destroyed %llu",
                 what, (int)s->state, s->idle, s->busy, s->overflow, s->creating, s->waiting,
                 s->size, s->max_overflow, (unsigned long long)s->created,
                 (unsigned long long)s->destroyed);
}

static void *checker_main(void *arg)
{
    checker_t *c = arg;
    const unsigned cap = STRESS_SIZE + STRESS_OVERFLOW;
    while (!atomic_load(&stop)) {
        respool_stats_t s = stats_of(c->pool);
        c->samples++;
        unsigned live = s.idle + s.busy;
        if (s.size != STRESS_SIZE || s.max_overflow != STRESS_OVERFLOW)
            checker_bad(c, &s, "configuration changed");
        if (live > cap)
            checker_bad(c, &s, "idle + busy > size + max_overflow");
        if (live + s.creating > cap)
            checker_bad(c, &s, "idle + busy + creating > size + max_overflow");
        if (s.overflow != (live > STRESS_SIZE ? live - STRESS_SIZE : 0))
            checker_bad(c, &s, "overflow != max(0, live - size)");
        if (s.creating > 8)
            checker_bad(c, &s, "creating > max_creating");
        if (s.waiting > STRESS_THREADS)
            checker_bad(c, &s, "waiting > threads");
        if (s.state == RESPOOL_SHUTDOWN)
            checker_bad(c, &s, "state shutdown");
        if ((s.idle > 0) != (s.state == RESPOOL_READY))
            checker_bad(c, &s, "state READY iff idle > 0");
        if (s.destroyed > s.created)
            checker_bad(c, &s, "destroyed > created");
        pass_time_us(50);
    }
    return NULL;
}

static void stress_run(long fairness_us, respool_strategy_t strategy, long run_ms)
{
    fake_init(&fk);
    fake_set_create_delay(&fk, 1);
    respool_config_t cfg = quiet_config(STRESS_SIZE, STRESS_OVERFLOW);
    cfg.fairness_us = fairness_us;
    cfg.strategy = strategy;
    cfg.retry_initial_ms = 2;
    cfg.retry_max_ms = 20;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));

    static worker_t workers[STRESS_THREADS];
    static checker_t checker;
    memset(workers, 0, sizeof workers);
    memset(&checker, 0, sizeof checker);
    atomic_store(&stop, false);
    checker.pool = pool;
    pthread_t checker_thread;
    cr_assert_eq(pthread_create(&checker_thread, NULL, checker_main, &checker), 0);
    for (int i = 0; i < STRESS_THREADS; i++) {
        workers[i].pool = pool;
        workers[i].seed = 0x12345u * (uint32_t)(i + 1) + 1u;
        cr_assert_eq(pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]), 0);
    }
    pass_time_us(run_ms * 1000); /* the run itself */
    atomic_store(&stop, true);
    for (int i = 0; i < STRESS_THREADS; i++)
        cr_assert(timed_join(workers[i].thread, 5000), "worker %d stuck", i);
    cr_assert(timed_join(checker_thread, 5000));

    uint64_t ok = 0, timedout = 0, full = 0, efactory = 0, destroyeds = 0;
    for (int i = 0; i < STRESS_THREADS; i++) {
        cr_assert_eq(workers[i].bad, 0, "worker %d: %s", i, workers[i].why);
        ok += workers[i].ok;
        timedout += workers[i].timedout;
        full += workers[i].full;
        efactory += workers[i].efactory;
        destroyeds += workers[i].destroyeds;
    }
    cr_assert_eq(checker.bad, 0, "%d invariant violations, first: %s", checker.bad, checker.why);
    cr_log_info("stress: %llu ok, %llu timed out, %llu full, %llu efactory, %llu destroyed, "
                "%llu samples",
                (unsigned long long)ok, (unsigned long long)timedout, (unsigned long long)full,
                (unsigned long long)efactory, (unsigned long long)destroyeds,
                (unsigned long long)checker.samples);
    cr_assert_gt(ok, 100, "only %llu successful checkouts", (unsigned long long)ok);

    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.busy, 0);
    ASSERT_EQ_U(s.waiting, 0);
    cr_assert_eq(s.checkouts, ok, "stats.checkouts %llu, workers saw %llu",
                 (unsigned long long)s.checkouts, (unsigned long long)ok);
    cr_assert_eq(s.timeouts, timedout + full, "stats.timeouts %llu, workers saw %llu",
                 (unsigned long long)s.timeouts, (unsigned long long)(timedout + full));
    ASSERT_EQ_U(s.reported_broken, destroyeds);

    fake_set_fail_next(&fk, 0);
    CHECK_RC(respool_shutdown(pool, -1), RESPOOL_OK);
    pthread_mutex_lock(&fk.lock);
    uint64_t created = fk.created, destroyed = fk.destroyed, failed = fk.create_failed;
    pthread_mutex_unlock(&fk.lock);
    cr_assert_eq(created, destroyed, "after shutdown OK: created %llu, destroyed %llu",
                 (unsigned long long)created, (unsigned long long)destroyed);
    s = stats_of(pool);
    ASSERT_EQ_U(s.created, created);
    ASSERT_EQ_U(s.destroyed, destroyed);
    ASSERT_EQ_U(s.create_failures, failed);
    respool_free(pool);
    fake_fini(&fk);
}

/* 16 threads doing random operations on a 4 + 2 pool with slow, sometimes failing creates. */
Test(threads_stress, random_ops)
{
    stress_run(0, RESPOOL_LIFO, 700);
}

/* The same under strict hand-off and FIFO strategy. */
Test(threads_stress, random_ops_strict_fifo)
{
    stress_run(RESPOOL_FAIRNESS_STRICT, RESPOOL_FIFO, 600);
}

/* ------------------------------------------------------------------------ */
/* 1,000 waiters                                                            */

#define MANY 1000

typedef struct {
    respool_t *pool;
    int index;
    int rc, rc2;
    int served_at;
} many_t;

static atomic_int many_seq;

static void *many_main(void *arg)
{
    many_t *m = arg;
    respool_lease_t lease = {0};
    m->rc = respool_checkout(m->pool, -1, &lease);
    if (m->rc != RESPOOL_OK)
        return NULL;
    fake_hold(lease.resource);
    m->served_at = atomic_fetch_add(&many_seq, 1);
    fake_unhold(lease.resource);
    m->rc2 = respool_checkin(m->pool, &lease);
    return NULL;
}

/* 1,000 threads blocked on a pool of 2 are all served, about in arrival order, nothing lost. */
Test(threads_many, thousand_waiters)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    respool_lease_t a = {0}, b = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);

    static many_t m[MANY];
    static pthread_t threads[MANY];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    atomic_store(&many_seq, 0);
    for (int i = 0; i < MANY; i++) {
        m[i] = (many_t){pool, i, -1, -1, -1};
        int err = pthread_create(&threads[i], &attr, many_main, &m[i]);
        cr_assert_eq(err, 0, "pthread_create %d: %s", i, strerror(err));
        cr_assert(pool_wait_waiting(pool, (unsigned)i + 1, 5000), "waiter %d never queued (%u)",
                  i, stats_of(pool).waiting);
    }
    pthread_attr_destroy(&attr);

    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &b), RESPOOL_OK);
    for (int i = 0; i < MANY; i++)
        cr_assert(timed_join(threads[i], 10000), "waiter %d never served", i);

    /* Two resources are handed out at a time and a woken thread may run late, so
     * neighbours can swap; LIFO or random service would give a mean displacement
     * of hundreds. */
    int max_displacement = 0;
    long total_displacement = 0;
    for (int i = 0; i < MANY; i++) {
        CHECK_RC(m[i].rc, RESPOOL_OK);
        CHECK_RC(m[i].rc2, RESPOOL_OK);
        int d = abs(m[i].served_at - i);
        total_displacement += d;
        if (d > max_displacement)
            max_displacement = d;
    }
    double mean = (double)total_displacement / MANY;
    cr_log_info("thousand waiters: displacement from arrival order: mean %.2f, max %d", mean,
                max_displacement);
    cr_assert_leq(mean, 4.0, "served out of arrival order (mean displacement %.2f, max %d)", mean,
                  max_displacement);
    cr_assert_leq(max_displacement, 200, "served far out of arrival order (displacement %d)",
                  max_displacement);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 2);
    ASSERT_EQ_U(s.waiting, 0);
    ASSERT_EQ_U(s.checkouts, MANY + 2);
    ASSERT_EQ_U(s.timeouts, 0);
    ASSERT_EQ_U(s.created, 2);
    respool_free(pool);
    fake_fini(&fk);
}
