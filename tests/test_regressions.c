/*
 * test_regressions.c — one test per bug fixed in "Fix six bugs found in a
 * race review": each drives the pool to the exact interleaving that showed
 * the bug (threads frozen at a gate in validate(), in a blocked create(), or
 * in a signal handler) and waits, with a bound, for the outcome the fix
 * gives. Before the fix every test here fails an assertion.
 *
 * Not covered: planned creates not waking the manager when no helper thread
 * could start (it needs pthread_create to fail, which cannot be arranged in
 * this shared test binary without affecting the other tests).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support/fake_factory.h"
#include "support/test_helpers.h"

#define WAIT_MS 1000L  /* bound on every wait for something the fix makes happen */
#define LONG_MS 5000L  /* a checkout timeout that outlasts WAIT_MS */
#define SLOW_FAIRNESS_US (10L * 1000 * 1000) /* returns idle + kick, no hand-off */

static fake_factory_t fk;

/* ---- bounded waits ------------------------------------------------------- */

static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void monotonic_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

/* ---- a checkout (or a shutdown) on its own thread ------------------------ */

typedef struct {
    respool_t *pool;
    long timeout;
    bool shutdown; /* run respool_shutdown(pool, timeout) instead */
    int rc;
    respool_lease_t lease;
    pthread_mutex_t lock;
    pthread_cond_t finished;
    bool done;
    pthread_t thread;
} task_t;

static void *task_main(void *arg)
{
    task_t *t = arg;
    int rc = t->shutdown ? respool_shutdown(t->pool, t->timeout)
                         : respool_checkout(t->pool, t->timeout, &t->lease);
    pthread_mutex_lock(&t->lock);
    t->rc = rc;
    t->done = true;
    pthread_cond_broadcast(&t->finished);
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static void task_start(task_t *t, respool_t *pool, long timeout, bool shutdown)
{
    memset(t, 0, sizeof *t);
    t->pool = pool;
    t->timeout = timeout;
    t->shutdown = shutdown;
    t->rc = -1;
    pthread_mutex_init(&t->lock, NULL);
    monotonic_cond_init(&t->finished);
    cr_assert_eq(pthread_create(&t->thread, NULL, task_main, t), 0);
}

/* Wait (at most timeout_ms) for the task to finish; joins it if it did. */
static bool task_wait(task_t *t, long timeout_ms)
{
    struct timespec until;
    deadline_in(&until, timeout_ms);
    pthread_mutex_lock(&t->lock);
    while (!t->done && pthread_cond_timedwait(&t->finished, &t->lock, &until) != ETIMEDOUT) {
    }
    bool done = t->done;
    pthread_mutex_unlock(&t->lock);
    if (done)
        pthread_join(t->thread, NULL);
    return done;
}

/* ---- a validate() that stops at a gate ----------------------------------- */

/* Once armed, the next validate() call blocks until gate_release() (or a
 * safety bound), then returns the answer given there; every other call is
 * the fake factory's. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    respool_factory_t base;
    bool armed, inside, open, answer;
} gate;

static bool gated_validate(void *ctx, void *resource)
{
    pthread_mutex_lock(&gate.lock);
    if (!gate.armed) {
        pthread_mutex_unlock(&gate.lock);
        return gate.base.validate(ctx, resource);
    }
    gate.armed = false;
    gate.inside = true;
    pthread_cond_broadcast(&gate.changed);
    struct timespec until;
    deadline_in(&until, 10 * LONG_MS); /* never forever, even if a test bails out */
    while (!gate.open && pthread_cond_timedwait(&gate.changed, &gate.lock, &until) != ETIMEDOUT) {
    }
    bool answer = gate.open ? gate.answer : true;
    gate.inside = false;
    pthread_mutex_unlock(&gate.lock);
    return answer;
}

/* The fake factory with the gated validate() (and no reset() unless asked). */
static respool_factory_t gated_factory(bool with_reset)
{
    pthread_mutex_init(&gate.lock, NULL);
    monotonic_cond_init(&gate.changed);
    gate.base = fake_factory(&fk);
    gate.armed = gate.inside = gate.open = false;
    respool_factory_t factory = gate.base;
    factory.validate = gated_validate;
    if (!with_reset)
        factory.reset = NULL;
    return factory;
}

static void gate_arm(void)
{
    pthread_mutex_lock(&gate.lock);
    gate.armed = true;
    gate.open = false;
    pthread_mutex_unlock(&gate.lock);
}

/* Wait (bounded) until a thread is held at the gate. */
static bool gate_wait_inside(long timeout_ms)
{
    struct timespec until;
    deadline_in(&until, timeout_ms);
    pthread_mutex_lock(&gate.lock);
    while (!gate.inside && pthread_cond_timedwait(&gate.changed, &gate.lock, &until) != ETIMEDOUT) {
    }
    bool inside = gate.inside;
    pthread_mutex_unlock(&gate.lock);
    return inside;
}

static void gate_release(bool answer)
{
    pthread_mutex_lock(&gate.lock);
    gate.answer = answer;
    gate.open = true;
    pthread_cond_broadcast(&gate.changed);
    pthread_mutex_unlock(&gate.lock);
}

/* ---- freezing a blocked waiter in a signal handler ------------------------ */

/* A thread blocked in respool_checkout (inside pthread_cond_wait, so without
 * the pool lock) is held in this handler: a wake-up sent to it meanwhile
 * stays unconsumed, as if it had not been scheduled yet. Only
 * async-signal-safe calls; bounded so it cannot hold a thread forever. */
static atomic_int frozen, thaw;

static void freeze_handler(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_store(&frozen, 1);
    for (int i = 0; i < 20000 && !atomic_load(&thaw); i++)
        poll(NULL, 0, 1);
    errno = saved;
}

static void freeze_thread(pthread_t thread)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = freeze_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    atomic_store(&frozen, 0);
    atomic_store(&thaw, 0);
    cr_assert_eq(pthread_kill(thread, SIGUSR1), 0);
}

static bool wait_frozen(long timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (!atomic_load(&frozen)) {
        if (now_ms() >= end)
            return false;
        poll(NULL, 0, 1);
    }
    return true;
}

/* ---- stats predicates ------------------------------------------------------ */

static bool waiting_creating(const respool_stats_t *s, void *arg)
{
    const unsigned *want = arg; /* {waiting, creating} */
    return s->waiting == want[0] && s->creating == want[1];
}

static bool creating_zero(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->creating == 0;
}

static bool shutting_down(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->state == RESPOOL_SHUTDOWN;
}

static bool live_at_most(const respool_stats_t *s, void *arg)
{
    return s->idle + s->busy <= *(const unsigned *)arg && s->destroyed >= 1;
}

typedef struct shutdown_call {
    respool_t *pool;
    int rc;
    atomic_int done;
} shutdown_call_t;

static void *call_shutdown(void *arg)
{
    shutdown_call_t *call = arg;
    call->rc = respool_shutdown(call->pool, 5000);
    atomic_store(&call->done, 1);
    return NULL;
}

static void *call_shutdown_now(void *arg)
{
    shutdown_call_t *call = arg;
    call->rc = respool_shutdown(call->pool, 0);
    atomic_store(&call->done, 1);
    return NULL;
}

/* ---- the regressions ------------------------------------------------------- */

/* Bug: a waiter woken for an idle resource but completed by a hand-off did not pass the wake-up on. */
Test(regression_lost_wakeup, completed_waiter_passes_wakeup_on)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 1);
    cfg.fairness_us = SLOW_FAIRNESS_US;
    respool_t *pool = make_pool(cfg, fake_factory_minimal(&fk));
    respool_lease_t r1;
    CHECK_RC(respool_checkout(pool, 0, &r1), RESPOOL_OK);

    fake_set_block(&fk, true);
    task_t a, b;
    task_start(&a, pool, LONG_MS, false); /* waits for the create planned for it */
    unsigned a_waits[2] = {1, 1};
    cr_assert(pool_wait(pool, waiting_creating, a_waits, WAIT_MS));
    cr_assert(fake_wait_blocked(&fk, 1, WAIT_MS));
    task_start(&b, pool, LONG_MS, false); /* no room: waits for a holder */
    cr_assert(pool_wait_waiting(pool, 2, WAIT_MS));

    freeze_thread(a.thread);
    cr_assert(wait_frozen(WAIT_MS), "waiter A never entered the signal handler");
    CHECK_RC(respool_checkin(pool, &r1), RESPOOL_OK); /* idle; A (frozen) is woken */
    fake_set_block(&fk, false);                       /* the new one is handed to A */
    cr_assert(pool_wait(pool, creating_zero, NULL, WAIT_MS));
    /* The completion of A passes A's wake-up on: B takes the idle one
     * while A is still frozen. */
    cr_assert(task_wait(&b, WAIT_MS), "B still asleep with a resource idle");
    CHECK_RC(b.rc, RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.waiting, 0);
    atomic_store(&thaw, 1);

    cr_assert(task_wait(&a, WAIT_MS));
    CHECK_RC(a.rc, RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &a.lease), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &b.lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug: a waiter that lost its resource to validate() rejoined the queue with no create planned for it. */
Test(regression_no_replacement, waiter_rejoining_after_validate_gets_a_create)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 1);
    cfg.fairness_us = SLOW_FAIRNESS_US;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t r1, r2;
    CHECK_RC(respool_checkout(pool, LONG_MS, &r1), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, LONG_MS, &r2), RESPOOL_OK); /* overflow: now full */

    task_t w;
    task_start(&w, pool, LONG_MS, false);
    cr_assert(pool_wait_waiting(pool, 1, WAIT_MS));
    pthread_mutex_lock(&fk.lock);
    fk.validate_false = true;
    pthread_mutex_unlock(&fk.lock);
    CHECK_RC(respool_checkin(pool, &r2), RESPOOL_OK); /* idle; W takes it, validate() says no */

    cr_assert(task_wait(&w, WAIT_MS), "W waits with room and no create() planned");
    CHECK_RC(w.rc, RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, create_calls), 3);
    pthread_mutex_lock(&fk.lock);
    fk.validate_false = false;
    pthread_mutex_unlock(&fk.lock);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &r1), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug: a timeout-0 checkout whose resource failed validate() rejoined the queue and waited for a holder without limit. */
Test(regression_zero_timeout_hang, zero_timeout_waiter_does_not_hang_after_validate)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 1);
    cfg.fairness_us = SLOW_FAIRNESS_US;
    respool_t *pool = make_pool(cfg, gated_factory(false));
    respool_lease_t r1;
    CHECK_RC(respool_checkout(pool, LONG_MS, &r1), RESPOOL_OK);

    fake_set_block(&fk, true);
    task_t z, y;
    task_start(&z, pool, 0, false); /* room: waits for its create() */
    unsigned z_waits[2] = {1, 1};
    cr_assert(pool_wait(pool, waiting_creating, z_waits, WAIT_MS));
    cr_assert(fake_wait_blocked(&fk, 1, WAIT_MS));
    task_start(&y, pool, LONG_MS, false); /* no room, no create for Y */
    cr_assert(pool_wait_waiting(pool, 2, WAIT_MS));

    gate_arm();
    CHECK_RC(respool_checkin(pool, &r1), RESPOOL_OK); /* idle; Z takes it to validate */
    cr_assert(gate_wait_inside(WAIT_MS));
    fake_set_block(&fk, false); /* Z's create() finishes: handed to Y, first in line */
    cr_assert(task_wait(&y, WAIT_MS));
    CHECK_RC(y.rc, RESPOOL_OK);
    gate_release(false); /* R1 rejected: Z goes back in line */

    cr_assert(task_wait(&z, WAIT_MS), "timeout-0 checkout still blocked");
    CHECK_RC(z.rc, RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &z.lease), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &y.lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug: a waiter whose resource failed validate() during shutdown rejoined the queue after shutdown returned OK and blocked forever. */
Test(regression_shutdown_hang, waiter_rejoining_during_shutdown_fails)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.fairness_us = SLOW_FAIRNESS_US;
    respool_t *pool = make_pool(cfg, gated_factory(false));
    respool_lease_t r1;
    CHECK_RC(respool_checkout(pool, LONG_MS, &r1), RESPOOL_OK);

    task_t w, sd;
    task_start(&w, pool, -1, false);
    cr_assert(pool_wait_waiting(pool, 1, WAIT_MS));
    gate_arm();
    CHECK_RC(respool_checkin(pool, &r1), RESPOOL_OK); /* idle; W takes it to validate */
    cr_assert(gate_wait_inside(WAIT_MS));
    task_start(&sd, pool, -1, true);
    cr_assert(pool_wait(pool, shutting_down, NULL, WAIT_MS));
    gate_release(false); /* R1 rejected: W goes back in line */

    cr_assert(task_wait(&sd, WAIT_MS));
    CHECK_RC(sd.rc, RESPOOL_OK);
    cr_assert(task_wait(&w, WAIT_MS), "checkout blocked after shutdown returned");
    CHECK_RC(w.rc, RESPOOL_ESHUTDOWN);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug: shutdown's deadline counted a keepalive validate() on the manager as a lease out (EBUSY). */
Test(regression_keepalive_ebusy, keepalive_check_is_not_a_lease)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.keepalive_ms = 20;
    respool_factory_t factory = gated_factory(true);
    gate_arm();
    respool_t *pool = make_pool(cfg, factory);
    cr_assert(gate_wait_inside(WAIT_MS)); /* the manager is validating the only resource */
    ASSERT_EQ_U(stats_of(pool).busy, 1);

    /* Shutdown waits for the check (like a destroy, without limit: the
     * resource might still go to a queued checkout) and then returns OK,
     * not EBUSY, even with timeout 0. */
    shutdown_call_t call = {pool, -1, 0};
    pthread_t closer;
    cr_assert_eq(pthread_create(&closer, NULL, call_shutdown_now, &call), 0);
    cr_assert(pool_wait(pool, shutting_down, NULL, WAIT_MS));
    gate_release(true);
    pthread_join(closer, NULL);
    CHECK_RC(call.rc, RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug: the leak sweep reported a resource handed to a waiter before its lease was issued (no checkout time). */
Test(regression_leak_false, handed_off_resource_is_not_a_leak)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.fairness_us = RESPOOL_FAIRNESS_STRICT; /* returns are handed off */
    cfg.keepalive_ms = 20;
    cfg.leak_threshold_ms = 10000; /* the leak sweep runs right after keepalive */
    respool_factory_t factory = gated_factory(true);
    gate_arm();
    respool_t *pool = make_pool(cfg, factory);
    cr_assert(gate_wait_inside(WAIT_MS)); /* keepalive has the only resource */

    task_t a;
    task_start(&a, pool, LONG_MS, false);
    cr_assert(pool_wait_waiting(pool, 1, WAIT_MS));
    gate_release(true); /* handed to A, then the leak sweep, in one hold of the lock */
    cr_assert(task_wait(&a, WAIT_MS));
    CHECK_RC(a.rc, RESPOOL_OK);
    ASSERT_EQ_U(stats_of(pool).leaks, 0);
    CHECK_RC(respool_checkin(pool, &a.lease), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug: keepalive pushed checked resources back idle past a shrink that came meanwhile. */
Test(regression_keepalive_shrink, keepalive_respects_shrink)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.keepalive_ms = 20;
    respool_t *pool = make_pool(cfg, gated_factory(true));
    respool_lease_t held;
    CHECK_RC(respool_checkout(pool, LONG_MS, &held), RESPOOL_OK);
    gate_arm();
    cr_assert(gate_wait_inside(WAIT_MS)); /* keepalive has the other one */
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.busy, 2);

    CHECK_RC(respool_resize(pool, 1, 0), RESPOOL_OK);
    gate_release(true);
    unsigned capacity = 1;
    cr_assert(pool_wait(pool, live_at_most, &capacity, WAIT_MS),
              "a resource beyond the new capacity stayed idle");
    s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.busy, 1);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* Bug (race review of the parker change, pre-existing): shutdown returned OK
 * while the only resource was inside the manager's keepalive validate() and
 * a checkout was queued; that checkout then got a lease after shutdown had
 * said everything was back. */
static atomic_int keepalive_inside, keepalive_release;
static atomic_int keepalive_destroyed;

static int gate_create(void *ctx, void **resource, char *err, size_t errlen)
{
    (void)ctx, (void)err, (void)errlen;
    *resource = malloc(8);
    return *resource ? 0 : -1;
}

static void gate_destroy(void *ctx, void *resource)
{
    (void)ctx;
    free(resource);
    atomic_fetch_add(&keepalive_destroyed, 1);
}

/* Keepalive's validate(): parks until the test opens the gate. */
static bool gate_validate(void *ctx, void *resource)
{
    (void)ctx, (void)resource;
    atomic_store(&keepalive_inside, 1);
    for (int i = 0; i < 10000 && !atomic_load(&keepalive_release); i++)
        usleep(1000);
    return true;
}

static bool keepalive_started(const respool_stats_t *s, void *arg)
{
    (void)s, (void)arg;
    return atomic_load(&keepalive_inside) == 1;
}


Test(regression_shutdown_keepalive, shutdown_waits_for_keepalive_check)
{
    respool_config_t cfg = quiet_config(1, 0);
    cfg.keepalive_ms = 5;
    cfg.validate_idle_ms = 1000000; /* not at checkout: only keepalive validates */
    respool_factory_t factory = {gate_create, gate_destroy, gate_validate, NULL, NULL};
    respool_t *pool = make_pool(cfg, factory);
    cr_assert(pool_wait(pool, keepalive_started, NULL, WAIT_MS));
    task_t waiter;
    task_start(&waiter, pool, -1, false);
    cr_assert(pool_wait_waiting(pool, 1, WAIT_MS));

    shutdown_call_t call = {pool, -1, 0};
    pthread_t shutdown_thread;
    cr_assert_eq(pthread_create(&shutdown_thread, NULL, call_shutdown, &call), 0);
    cr_assert(pool_wait(pool, shutting_down, NULL, WAIT_MS));
    usleep(20000); /* gives a wrong shutdown time to return; checked either way */
    cr_assert_eq(atomic_load(&call.done), 0, "shutdown returned %d with a keepalive check out",
                 call.rc);

    atomic_store(&keepalive_release, 1);
    cr_assert(task_wait(&waiter, WAIT_MS));
    CHECK_RC(waiter.rc, RESPOOL_OK); /* the queued checkout is still served */
    cr_assert_eq(atomic_load(&call.done), 0, "shutdown returned with a lease out");
    CHECK_RC(respool_checkin(pool, &waiter.lease), RESPOOL_OK);
    pthread_join(shutdown_thread, NULL);
    CHECK_RC(call.rc, RESPOOL_OK);
    cr_assert_eq(atomic_load(&keepalive_destroyed), 1);
    respool_free(pool);
}
