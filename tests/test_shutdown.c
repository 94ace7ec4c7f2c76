/*
 * test_shutdown.c — safe shutdown (OK, EBUSY, waiters, late returns), free,
 * and resize up, down and invalid.
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

static void finish(respool_t *pool)
{
    respool_free(pool);
    fake_fini(&fk);
}


static bool state_is_shutdown(const respool_stats_t *s, void *arg)
{
    return s->state == RESPOOL_SHUTDOWN;
}

static bool wait_shutdown_state(respool_t *pool)
{
    return pool_wait(pool, state_is_shutdown, NULL, 2000);
}

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

/* A shutdown run on its own thread; records the fake's destroyed count at its return. */
typedef struct {
    respool_t *pool;
    long timeout;
    int rc;
    int64_t elapsed_ms;
    uint64_t destroyed_at_return;
    pthread_t thread;
} sd_t;

static void *sd_main(void *arg)
{
    sd_t *s = arg;
    int64_t t0 = now_ms();
    s->rc = respool_shutdown(s->pool, s->timeout);
    s->destroyed_at_return = FAKE_GET(&fk, destroyed);
    s->elapsed_ms = now_ms() - t0;
    return NULL;
}

static void sd_start(sd_t *s, respool_t *pool, long timeout)
{
    memset(s, 0, sizeof *s);
    s->pool = pool;
    s->timeout = timeout;
    s->rc = -1;
    cr_assert_eq(pthread_create(&s->thread, NULL, sd_main, s), 0);
}

/* ------------------------------------------------------------------------ */
/* Shutdown                                                                 */

/* No lease out: shutdown(0) returns OK after every destroy() returned; later calls return OK at once. */
Test(shutdown_idle, ok_at_once_even_timeout0)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(3, 2), fake_factory(&fk));
    fake_set_destroy_delay(&fk, 20);
    int64_t t0 = now_ms();
    CHECK_RC(respool_shutdown(pool, 0), RESPOOL_OK);
    cr_assert_lt(now_ms() - t0, 1000);
    cr_assert_eq(FAKE_GET(&fk, destroyed), 3, "shutdown returned OK before every destroy()");
    ASSERT_EQ_U(FAKE_GET(&fk, created), 3);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.state, RESPOOL_SHUTDOWN);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.busy, 0);
    ASSERT_EQ_U(s.destroyed, 3);
    cr_assert_str_eq(respool_state_name(s.state), "shutdown");

    static const long again[] = {0, -1, 1000};
    for (int i = 0; i < 3; i++) {
        t0 = now_ms();
        CHECK_RC(respool_shutdown(pool, again[i]), RESPOOL_OK);
        cr_assert_lt(now_ms() - t0, 250, "shutdown(%ld) after OK waited", again[i]);
    }
    finish(pool);
}

/* After shutdown, checkout (any timeout) and resize return ESHUTDOWN. */
Test(shutdown_after, refuses_checkout_and_resize)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 1), fake_factory(&fk));
    CHECK_RC(respool_shutdown(pool, -1), RESPOOL_OK);
    static const long timeouts[] = {0, 1000, -1};
    for (int i = 0; i < 3; i++) {
        respool_lease_t l = {0};
        l.resource = &fk;
        int64_t t0 = now_ms();
        CHECK_RC(respool_checkout(pool, timeouts[i], &l), RESPOOL_ESHUTDOWN);
        cr_assert_lt(now_ms() - t0, 250, "checkout(%ld) after shutdown waited", timeouts[i]);
        cr_assert_null(l.resource);
    }
    CHECK_RC(respool_resize(pool, 3, 1), RESPOOL_ESHUTDOWN);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.size, 2);
    ASSERT_EQ_U(s.checkouts, 0);
    ASSERT_EQ_U(FAKE_GET(&fk, created), 2);
    finish(pool);
}

/* From shutdown's first instant (a lease still out) new checkouts and resize fail; idle is destroyed at once. */
Test(shutdown_after, refused_from_first_instant)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    sd_t sd;
    sd_start(&sd, pool, -1);
    cr_assert(wait_shutdown_state(pool), "state never became shutdown");
    cr_assert(fake_wait_destroyed(&fk, 1, 2000), "idle resource not destroyed at shutdown");

    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_ESHUTDOWN);
    int64_t t0 = now_ms();
    CHECK_RC(respool_checkout(pool, 1000, &l), RESPOOL_ESHUTDOWN);
    cr_assert_lt(now_ms() - t0, 250);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(timed_join(w.thread, 2000), "checkout(-1) during shutdown blocked");
    CHECK_RC(w.rc, RESPOOL_ESHUTDOWN);
    CHECK_RC(respool_resize(pool, 4, 0), RESPOOL_ESHUTDOWN);
    cr_assert_not(timed_join(sd.thread, 50), "shutdown returned %d with a lease out", sd.rc);

    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    cr_assert(timed_join(sd.thread, 2000), "shutdown did not finish after the last checkin");
    CHECK_RC(sd.rc, RESPOOL_OK);
    cr_assert_eq(sd.destroyed_at_return, 2, "shutdown OK before every destroy() returned");
    finish(pool);
}

typedef struct {
    respool_t *pool;
    respool_lease_t lease;
    long hold_ms;
    int rc;
} returner_t;

static void *returner_main(void *arg)
{
    returner_t *r = arg;
    pass_time_ms(r->hold_ms); /* simulates work with the resource */
    r->rc = respool_checkin(r->pool, &r->lease);
    return NULL;
}

/* Shutdown with a lease out and a long timeout returns OK once another thread checks it in. */
Test(shutdown_lease, returned_in_time)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    returner_t r = {pool, {0}, 60, -1};
    CHECK_RC(respool_checkout(pool, 0, &r.lease), RESPOOL_OK);
    pthread_t t;
    int64_t t0 = now_ms();
    cr_assert_eq(pthread_create(&t, NULL, returner_main, &r), 0);
    CHECK_RC(respool_shutdown(pool, 2000), RESPOOL_OK);
    int64_t elapsed = now_ms() - t0;
    cr_assert_geq(elapsed, 60, "shutdown OK after %lld ms with the lease held 60 ms",
                  (long long)elapsed);
    cr_assert_lt(elapsed, 2000);
    pthread_join(t, NULL);
    CHECK_RC(r.rc, RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, destroyed), 2);
    ASSERT_EQ_U(stats_of(pool).busy, 0);
    finish(pool);
}

/* A checkout waiting when shutdown begins is served by a returned lease; its own checkin destroys it. */
Test(shutdown_waiter, served_by_returned_lease)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    void *res = a.resource;
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    sd_t sd;
    sd_start(&sd, pool, -1);
    cr_assert(wait_shutdown_state(pool));
    cr_assert_not(timed_join(w.thread, 50), "waiter failed (%d) while a lease could come back",
                  w.rc);

    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    cr_assert(timed_join(w.thread, 2000), "waiter not served by the returned lease");
    CHECK_RC(w.rc, RESPOOL_OK);
    cr_assert_eq(w.lease.resource, res);
    cr_assert_not(fake_is_destroyed(res));
    cr_assert_not(timed_join(sd.thread, 50), "shutdown returned %d with the waiter's lease out",
                  sd.rc);

    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    cr_assert(timed_join(sd.thread, 2000));
    CHECK_RC(sd.rc, RESPOOL_OK);
    ASSERT_EQ_U(sd.destroyed_at_return, 1);
    ASSERT_EQ_U(stats_of(pool).checkouts, 2);
    finish(pool);
}

/* A waiter that can never be served (nothing busy, no create in flight) fails with ESHUTDOWN. */
Test(shutdown_waiter, unservable_fails)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    sd_t sd;
    sd_start(&sd, pool, -1);
    cr_assert(wait_shutdown_state(pool));
    CHECK_RC(respool_destroyed(pool, &a), RESPOOL_OK);
    cr_assert(timed_join(w.thread, 2000), "unservable waiter still waiting");
    CHECK_RC(w.rc, RESPOOL_ESHUTDOWN);
    cr_assert_null(w.lease.resource);
    cr_assert(timed_join(sd.thread, 2000));
    CHECK_RC(sd.rc, RESPOOL_OK);
    cr_assert_eq(FAKE_GET(&fk, created), 1, "a resource was made during shutdown");
    ASSERT_EQ_U(sd.destroyed_at_return, 1);
    finish(pool);
}

/* EBUSY: the deadline passes with a lease out; waiters fail, a late checkin destroys, then OK. */
Test(shutdown_ebusy, deadline_with_waiter)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    void *res = a.resource;
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));

    int64_t t0 = now_ms();
    CHECK_RC(respool_shutdown(pool, 50), RESPOOL_EBUSY);
    cr_assert_geq(now_ms() - t0, 50, "EBUSY after %lld ms", (long long)(now_ms() - t0));
    cr_assert(timed_join(w.thread, 2000), "waiter not failed after EBUSY");
    CHECK_RC(w.rc, RESPOOL_ESHUTDOWN);
    cr_assert_null(w.lease.resource);
    cr_assert_not(fake_is_destroyed(res));

    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    cr_assert_null(a.resource);
    cr_assert(fake_wait_resource_destroyed(&fk, res, 2000), "late checkin not destroyed");
    CHECK_RC(respool_shutdown(pool, -1), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.busy, 0);
    ASSERT_EQ_U(s.idle, 0);
    finish(pool);
}

/* EBUSY destroys the idle resources; a second call waits its own timeout; a late destroyed() is OK. */
Test(shutdown_ebusy, idle_destroyed_and_late_destroyed)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    void *res = a.resource;
    int64_t t0 = now_ms();
    CHECK_RC(respool_shutdown(pool, 50), RESPOOL_EBUSY);
    cr_assert_geq(now_ms() - t0, 50);
    cr_assert(fake_wait_destroyed(&fk, 1, 2000), "idle resource not destroyed");
    cr_assert_not(fake_is_destroyed(res));
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.busy, 1);
    ASSERT_EQ_U(s.state, RESPOOL_SHUTDOWN);

    t0 = now_ms();
    CHECK_RC(respool_shutdown(pool, 30), RESPOOL_EBUSY);
    cr_assert_geq(now_ms() - t0, 30, "second shutdown did not wait its own timeout");

    CHECK_RC(respool_destroyed(pool, &a), RESPOOL_OK);
    cr_assert_null(a.resource);
    cr_assert(fake_wait_resource_destroyed(&fk, res, 2000));
    CHECK_RC(respool_shutdown(pool, 0), RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, destroyed), 2);
    finish(pool);
}

/* shutdown(0) with a lease out returns EBUSY at once. */
Test(shutdown_ebusy, timeout0_lease_out)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    int64_t t0 = now_ms();
    CHECK_RC(respool_shutdown(pool, 0), RESPOOL_EBUSY);
    cr_assert_lt(now_ms() - t0, 250);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    CHECK_RC(respool_shutdown(pool, 0), RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, destroyed), 1);
    finish(pool);
}

/* EBUSY while a create() is still out fails the waiter; the late resource is destroyed, not lost. */
Test(shutdown_ebusy, create_in_flight)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(0, 1), fake_factory(&fk));
    fake_set_block(&fk, true);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(fake_wait_blocked(&fk, 1, 2000));
    int64_t t0 = now_ms();
    CHECK_RC(respool_shutdown(pool, 50), RESPOOL_EBUSY);
    cr_assert_geq(now_ms() - t0, 50);
    cr_assert(timed_join(w.thread, 2000), "waiter not failed after EBUSY");
    CHECK_RC(w.rc, RESPOOL_ESHUTDOWN);
    fake_set_block(&fk, false);
    cr_assert(fake_wait_destroyed(&fk, 1, 2000), "resource made during shutdown not destroyed");
    CHECK_RC(respool_shutdown(pool, -1), RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, created), 1);
    ASSERT_EQ_U(FAKE_GET(&fk, destroyed), 1);
    finish(pool);
}

/* respool_free without shutdown destroys everything once every lease is back; free(NULL) is a no-op. */
Test(shutdown_free, everything_returned)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 2), fake_factory(&fk));
    respool_lease_t l[4];
    memset(l, 0, sizeof l);
    for (int i = 0; i < 4; i++)
        CHECK_RC(respool_checkout(pool, 0, &l[i]), RESPOOL_OK);
    for (int i = 0; i < 4; i++)
        CHECK_RC(respool_checkin(pool, &l[i]), RESPOOL_OK);
    respool_free(pool);
    ASSERT_EQ_U(FAKE_GET(&fk, created), 4);
    ASSERT_EQ_U(FAKE_GET(&fk, destroyed), 4);
    respool_free(NULL);
    fake_fini(&fk);
}

/* respool_free after an EBUSY shutdown and a late checkin. */
Test(shutdown_free, after_ebusy)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_shutdown(pool, 10), RESPOOL_EBUSY);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Resize                                                                   */

/* Growing size: the manager fills the growth. */
Test(resize_up, growth_filled)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    CHECK_RC(respool_resize(pool, 3, 0), RESPOOL_OK);
    cr_assert(pool_wait_idle(pool, 3, 2000), "growth not filled (idle %u)", stats_of(pool).idle);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.size, 3);
    ASSERT_EQ_U(s.max_overflow, 0);
    ASSERT_EQ_U(s.created, 3);
    ASSERT_EQ_U(s.overflow, 0);
    finish(pool);
}

/* Growing max_overflow gives room that serves a checkout already waiting. */
Test(resize_up, overflow_serves_waiter)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    CHECK_RC(respool_resize(pool, 1, 1), RESPOOL_OK);
    cr_assert(timed_join(w.thread, 2000), "waiter not served after max_overflow grew");
    CHECK_RC(w.rc, RESPOOL_OK);
    ASSERT_EQ_U(fake_id(w.lease.resource), 2);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.overflow, 1);
    ASSERT_EQ_U(s.max_overflow, 1);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK); /* overflow, nobody waits: dismissed */
    cr_assert(fake_wait_destroyed(&fk, 1, 2000));
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    ASSERT_EQ_U(stats_of(pool).idle, 1);
    finish(pool);
}

/* Shrinking size: idle resources beyond it are overflow and dismissed (overflow_idle_ms 0). */
Test(resize_down, idle_dismissed)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(4, 0), fake_factory(&fk));
    CHECK_RC(respool_resize(pool, 1, 5), RESPOOL_OK);
    cr_assert(pool_wait_idle(pool, 1, 2000), "idle beyond the new size kept (idle %u)",
              stats_of(pool).idle);
    cr_assert(fake_wait_destroyed(&fk, 3, 2000));
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.size, 1);
    ASSERT_EQ_U(s.max_overflow, 5);
    ASSERT_EQ_U(s.overflow, 0);
    ASSERT_EQ_U(s.dismissed, 3);
    ASSERT_EQ_U(s.created, 4);
    finish(pool);
}

/* Shrinking size with overflow_idle_ms: idle beyond size stays that long, then is dismissed. */
Test(resize_down, idle_overflow_waits_idle_time)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(3, 0);
    cfg.overflow_idle_ms = 100;
    int64_t t0 = now_ms(); /* idle since they were made */
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    CHECK_RC(respool_resize(pool, 1, 2), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 3);
    ASSERT_EQ_U(s.overflow, 2);
    cr_assert(fake_wait_destroyed(&fk, 2, 2000), "idle overflow never dismissed");
    cr_assert_geq(now_ms() - t0, 100);
    cr_assert(pool_wait_idle(pool, 1, 2000));
    ASSERT_EQ_U(stats_of(pool).overflow, 0);
    finish(pool);
}

/* Shrinking below the busy count: a busy resource beyond size + max_overflow is destroyed on checkin. */
Test(resize_down, busy_beyond_capacity_destroyed_on_checkin)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(3, 0);
    cfg.overflow_idle_ms = 10000; /* overflow within capacity stays idle */
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t l[3];
    memset(l, 0, sizeof l);
    void *r[3];
    for (int i = 0; i < 3; i++) {
        CHECK_RC(respool_checkout(pool, 0, &l[i]), RESPOOL_OK);
        r[i] = l[i].resource;
    }
    CHECK_RC(respool_resize(pool, 1, 1), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.busy, 3, "resize touched busy resources");
    ASSERT_EQ_U(s.overflow, 2);

    CHECK_RC(respool_checkin(pool, &l[0]), RESPOOL_OK); /* live 3 > 1 + 1: destroyed */
    cr_assert(fake_wait_resource_destroyed(&fk, r[0], 2000), "resource beyond capacity kept");
    s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.busy, 2);

    CHECK_RC(respool_checkin(pool, &l[1]), RESPOOL_OK); /* within capacity: idle overflow */
    CHECK_RC(respool_checkin(pool, &l[2]), RESPOOL_OK);
    s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 2);
    ASSERT_EQ_U(s.overflow, 1);
    cr_assert_not(fake_is_destroyed(r[1]));
    cr_assert_not(fake_is_destroyed(r[2]));
    cr_assert_eq(FAKE_GET(&fk, created), 3, "a replacement was made after shrinking");
    finish(pool);
}

/* resize(0, 0), above RESPOOL_MAX_RESOURCES or with a NULL pool returns EINVAL and changes nothing. */
Test(resize_invalid, zero_zero)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 1), fake_factory(&fk));
    CHECK_RC(respool_resize(pool, 0, 0), RESPOOL_EINVAL);
    CHECK_RC(respool_resize(pool, RESPOOL_MAX_RESOURCES, 1), RESPOOL_EINVAL);
    CHECK_RC(respool_resize(NULL, 3, 0), RESPOOL_EINVAL);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.size, 2);
    ASSERT_EQ_U(s.max_overflow, 1);
    ASSERT_EQ_U(s.idle, 2);
    ASSERT_EQ_U(s.state, RESPOOL_READY);
    ASSERT_EQ_U(FAKE_GET(&fk, create_calls), 2);
    ASSERT_EQ_U(FAKE_GET(&fk, destroyed), 0);
    finish(pool);
}
