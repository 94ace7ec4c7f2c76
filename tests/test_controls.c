/*
 * test_controls.c — the operator controls and what is built on them:
 * detach, pause/resume, evict all, load shedding (max_waiting, deadline
 * admission), the readiness fd, and fork safety.
 *
 * Suites: detach, pause, evict, shed, ready_fd, fork.
 */
#include <criterion/criterion.h>

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "respool.h"
#include "support/fake_factory.h"
#include "support/test_helpers.h"

static fake_factory_t fk;

static respool_t *make_with(respool_config_t cfg, respool_factory_t factory)
{
    respool_t *pool = NULL;
    CHECK_RC(respool_create(&pool, &cfg, &factory), RESPOOL_OK);
    return pool;
}

static char *error_text(void)
{
    static _Thread_local char text[1024];
    respool_checkout_error(text, sizeof text);
    return text;
}

/* A checkout on its own thread, for waiting in line. */
typedef struct borrower {
    pthread_t thread;
    respool_t *pool;
    long timeout_ms;
    int rc;
    respool_lease_t lease;
    atomic_int done;
} borrower_t;

static void *borrow(void *arg)
{
    borrower_t *b = arg;
    b->rc = respool_checkout(b->pool, b->timeout_ms, &b->lease);
    atomic_store(&b->done, 1);
    return NULL;
}

static void borrower_start(borrower_t *b, respool_t *pool, long timeout_ms)
{
    memset(b, 0, sizeof *b);
    b->pool = pool;
    b->timeout_ms = timeout_ms;
    cr_assert_eq(pthread_create(&b->thread, NULL, borrow, b), 0);
}

static void borrower_join(borrower_t *b)
{
    pthread_join(b->thread, NULL);
}

static bool idle_and_created(const respool_stats_t *s, void *arg)
{
    const unsigned *want = arg;
    return s->idle == want[0] && s->created == want[1];
}

/* ---- detach ------------------------------------------------------------------ */

Test(detach, resource_leaves_and_is_replaced)
{
    fake_init(&fk);
    respool_factory_t factory = fake_factory_minimal(&fk);
    respool_t *pool = make_with(quiet_config(2, 0), factory);
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_OK);
    respool_lease_t copy = lease;
    void *resource = NULL;
    CHECK_RC(respool_detach(pool, &lease, &resource), RESPOOL_OK);
    cr_assert_eq(resource, copy.resource);
    cr_assert_null(lease.resource);
    CHECK_RC(respool_detach(pool, &copy, &resource), RESPOOL_EINVAL); /* stale */
    CHECK_RC(respool_checkin(pool, &copy), RESPOOL_EINVAL);
    CHECK_RC(respool_detach(pool, NULL, &resource), RESPOOL_EINVAL);
    CHECK_RC(respool_detach(NULL, &copy, &resource), RESPOOL_EINVAL);

    unsigned want[2] = {2, 3}; /* the replacement makes the pool whole */
    cr_assert(pool_wait(pool, idle_and_created, want, 5000));
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.detached, 1);
    ASSERT_EQ_U(s.busy, 0);
    CHECK_RC(respool_shutdown(pool, 1000), RESPOOL_OK);
    s = stats_of(pool);
    ASSERT_EQ_U(s.created, s.destroyed + s.detached);
    respool_free(pool);
    factory.destroy(factory.ctx, resource); /* ours now */
    fake_fini(&fk);
}

/* ---- pause --------------------------------------------------------------------- */

Test(pause, checkouts_wait_while_leases_come_back)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(1, 0), fake_factory_minimal(&fk));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    CHECK_RC(respool_pause(pool), RESPOOL_OK);
    CHECK_RC(respool_pause(pool), RESPOOL_OK); /* idempotent */
    cr_assert(stats_of(pool).paused);

    borrower_t b;
    borrower_start(&b, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 5000));
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK); /* comes back, stays idle */
    cr_assert(pool_wait_idle(pool, 1, 5000));
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_EFULL);
    cr_assert(strstr(error_text(), "the pool is paused"), "%s", error_text());
    CHECK_RC(respool_checkout(pool, 20, &lease), RESPOOL_ETIMEDOUT);
    cr_assert_eq(atomic_load(&b.done), 0, "served while paused");
    ASSERT_EQ_U(stats_of(pool).waiting, 1);

    CHECK_RC(respool_resume(pool), RESPOOL_OK);
    borrower_join(&b);
    CHECK_RC(b.rc, RESPOOL_OK);
    cr_assert(!stats_of(pool).paused);
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_OK); /* the fast path is back */
    CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Paused, only hand-offs stop: overflow that comes back is still
 * dismissed, so the pool does not keep it after resume. */
Test(pause, overflow_is_still_dismissed)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(1, 1), fake_factory_minimal(&fk));
    respool_lease_t first, second;
    CHECK_RC(respool_checkout(pool, 0, &first), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 5000, &second), RESPOOL_OK); /* the overflow one */
    CHECK_RC(respool_pause(pool), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &first), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &second), RESPOOL_OK);
    cr_assert(pool_wait_destroyed(pool, 1, 5000), "the overflow resource was kept");
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 1);
    ASSERT_EQ_U(s.dismissed, 1);
    CHECK_RC(respool_resume(pool), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

static void *shut_down(void *pool)
{
    CHECK_RC(respool_shutdown(pool, 5000), RESPOOL_OK);
    return NULL;
}

static bool is_shutting_down(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->state == RESPOOL_SHUTDOWN;
}

Test(pause, shutdown_ends_a_pause)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(1, 0), fake_factory_minimal(&fk));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    CHECK_RC(respool_pause(pool), RESPOOL_OK);
    borrower_t b;
    borrower_start(&b, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 5000));
    pthread_t closer;
    cr_assert_eq(pthread_create(&closer, NULL, shut_down, pool), 0);
    cr_assert(pool_wait(pool, is_shutting_down, NULL, 5000));
    cr_assert(!stats_of(pool).paused);
    CHECK_RC(respool_pause(pool), RESPOOL_ESHUTDOWN);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK); /* serves the waiter, as shutdown does */
    borrower_join(&b);
    CHECK_RC(b.rc, RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    pthread_join(closer, NULL);
    respool_free(pool);
    fake_fini(&fk);
}

/* ---- evict -------------------------------------------------------------------- */

Test(evict, idle_now_busy_on_return_and_refill)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(2, 0), fake_factory_minimal(&fk));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    CHECK_RC(respool_evict_all(pool), RESPOOL_OK);
    unsigned want[2] = {1, 3}; /* the idle one destroyed and replaced */
    cr_assert(pool_wait(pool, idle_and_created, want, 5000));
    ASSERT_EQ_U(stats_of(pool).evicted, 1);

    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK); /* old: destroyed on return */
    unsigned refilled[2] = {2, 4};
    cr_assert(pool_wait(pool, idle_and_created, refilled, 5000));
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.evicted, 2);
    respool_lease_t first, second;
    CHECK_RC(respool_checkout(pool, 0, &first), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &second), RESPOOL_OK);
    /* The two made before the evict were 1 and 2. */
    cr_assert_gt(fake_id(first.resource), 2, "an evicted resource came back");
    cr_assert_gt(fake_id(second.resource), 2, "an evicted resource came back");
    CHECK_RC(respool_checkin(pool, &first), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &second), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* A create() running when evict_all is called makes an old resource. */
Test(evict, create_in_flight_is_not_kept)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(0, 1), fake_factory_minimal(&fk));
    fake_set_block(&fk, true);
    borrower_t b;
    borrower_start(&b, pool, 5000);
    cr_assert(fake_wait_blocked(&fk, 1, 5000));
    CHECK_RC(respool_evict_all(pool), RESPOOL_OK);
    fake_set_block(&fk, false);
    borrower_join(&b);
    CHECK_RC(b.rc, RESPOOL_OK);
    cr_assert_eq(fake_id(b.lease.resource), 2, "got the create that began before the evict");
    ASSERT_EQ_U(stats_of(pool).evicted, 1);
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* ---- shed --------------------------------------------------------------------- */

Test(shed, max_waiting_fails_at_once)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.max_waiting = 2;
    respool_t *pool = make_with(cfg, fake_factory_minimal(&fk));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    borrower_t a, b;
    borrower_start(&a, pool, 5000);
    borrower_start(&b, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 2, 5000));
    respool_lease_t lease;
    int64_t before = now_us();
    CHECK_RC(respool_checkout(pool, 5000, &lease), RESPOOL_EFULL);
    cr_assert_lt(now_us() - before, 1000000, "shedding waited");
    cr_assert(strstr(error_text(), "shed: max_waiting"), "%s", error_text());
    ASSERT_EQ_U(stats_of(pool).shed, 1);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    /* Either may have queued first: serve whichever got it, then the other. */
    while (!atomic_load(&a.done) && !atomic_load(&b.done))
        usleep(1000);
    borrower_t *first = atomic_load(&a.done) ? &a : &b, *second = first == &a ? &b : &a;
    borrower_join(first);
    CHECK_RC(first->rc, RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &first->lease), RESPOOL_OK);
    borrower_join(second);
    CHECK_RC(second->rc, RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &second->lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

Test(shed, deadline_admission_refuses_hopeless_waits)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.deadline_admission = true;
    respool_t *pool = make_with(cfg, fake_factory_minimal(&fk));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    usleep(50000); /* the recent hold time: at least 50 ms */
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);

    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 5, &lease), RESPOOL_EFULL); /* 50 ms expected > 5 ms */
    cr_assert(strstr(error_text(), "shed: the expected wait"), "%s", error_text());
    ASSERT_EQ_U(stats_of(pool).shed, 1);
    ASSERT_EQ_U(stats_of(pool).waits, 0); /* it never queued */
    borrower_t b;
    borrower_start(&b, pool, 5000); /* 50 ms expected < 5 s: admitted */
    cr_assert(pool_wait_waiting(pool, 1, 5000));
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    borrower_join(&b);
    CHECK_RC(b.rc, RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* ---- ready_fd ----------------------------------------------------------------- */

static bool readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

Test(ready_fd, follows_what_a_zero_timeout_checkout_would_find)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(1, 0), fake_factory_minimal(&fk));
    int fd = respool_ready_fd(pool);
    cr_assert_geq(fd, 0);
    cr_assert_eq(respool_ready_fd(pool), fd, "the same fd each time");
    cr_assert(readable(fd), "idle resource: readable");
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_OK);
    cr_assert(!readable(fd), "nothing idle: not readable");
    CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    cr_assert(readable(fd));
    CHECK_RC(respool_pause(pool), RESPOOL_OK);
    cr_assert(!readable(fd), "paused: not readable");
    CHECK_RC(respool_resume(pool), RESPOOL_OK);
    cr_assert(readable(fd));

    /* A waiter ahead: the idle resource is not for a newcomer. */
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_OK);
    borrower_t b;
    borrower_start(&b, pool, 5000);
    cr_assert(pool_wait_waiting(pool, 1, 5000));
    cr_assert(!readable(fd));
    CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    borrower_join(&b);
    CHECK_RC(b.rc, RESPOOL_OK);
    cr_assert(!readable(fd));
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    cr_assert(readable(fd));
    CHECK_RC(respool_shutdown(pool, 1000), RESPOOL_OK);
    cr_assert(!readable(fd), "shut down: not readable");
    respool_free(pool);
    fake_fini(&fk);
}

/* An event-loop thread (poll) and blocking threads share one pool. */
typedef struct loop_state {
    respool_t *pool;
    int fd;
    int served;
} loop_state_t;

static void *event_loop(void *arg)
{
    loop_state_t *st = arg;
    while (st->served < 200) {
        struct pollfd p = {st->fd, POLLIN, 0};
        cr_assert_eq(poll(&p, 1, 5000), 1, "the loop starved");
        respool_lease_t lease;
        int rc = respool_checkout(st->pool, 0, &lease);
        if (rc == RESPOOL_EFULL)
            continue; /* lost the race: wait again */
        CHECK_RC(rc, RESPOOL_OK);
        CHECK_RC(respool_checkin(st->pool, &lease), RESPOOL_OK);
        st->served++;
    }
    return NULL;
}

static void *blocking_user(void *arg)
{
    for (int i = 0; i < 500; i++) {
        respool_lease_t lease;
        CHECK_RC(respool_checkout(arg, 5000, &lease), RESPOOL_OK);
        CHECK_RC(respool_checkin(arg, &lease), RESPOOL_OK);
    }
    return NULL;
}

Test(ready_fd, event_loop_shares_with_blocking_threads)
{
    fake_init(&fk);
    respool_t *pool = make_with(quiet_config(2, 0), fake_factory_minimal(&fk));
    loop_state_t st = {pool, respool_ready_fd(pool), 0};
    cr_assert_geq(st.fd, 0);
    pthread_t loop, users[3];
    cr_assert_eq(pthread_create(&loop, NULL, event_loop, &st), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&users[i], NULL, blocking_user, pool), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(users[i], NULL);
    pthread_join(loop, NULL);
    cr_assert_eq(st.served, 200);
    respool_free(pool);
    fake_fini(&fk);
}

/* ---- fork --------------------------------------------------------------------- */

static atomic_int abandoned;

static void count_abandon(void *ctx, void *resource)
{
    (void)ctx, (void)resource;
    atomic_fetch_add(&abandoned, 1);
}

/* In the child: nothing is handed out, validated, reset or destroyed;
 * respool_free abandons every resource. Exit status 0 = all as expected. */
static int child_checks(respool_t *pool, respool_lease_t *held)
{
    uint64_t validated = fk.validated, resets = fk.resets, destroyed = fk.destroyed;
    respool_lease_t lease;
    if (respool_checkout(pool, 0, &lease) != RESPOOL_ESHUTDOWN)
        return 1;
    if (!strstr(error_text(), "fork() child"))
        return 2;
    if (respool_checkin(pool, held) != RESPOOL_EINVAL)
        return 3;
    if (respool_shutdown(pool, 1000) != RESPOOL_OK)
        return 4;
    if (respool_resume(pool) != RESPOOL_ESHUTDOWN || respool_ready_fd(pool) != -1)
        return 7;
    respool_free(pool);
    if (atomic_load(&abandoned) != 3) /* two idle and one out */
        return 5;
    if (fk.validated != validated || fk.resets != resets || fk.destroyed != destroyed)
        return 6;
    return 0;
}

Test(fork, child_abandons_and_parent_goes_on)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(3, 0);
    cfg.abandon = count_abandon;
    respool_t *pool = make_with(cfg, fake_factory(&fk));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, 0, &held), RESPOOL_OK);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0)
        _exit(child_checks(pool, &held));
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child check %d failed",
              WEXITSTATUS(status));
    /* The parent's pool is untouched. */
    ASSERT_EQ_U(atomic_load(&abandoned), 0);
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}
