/*
 * test_manager.c — the manager thread: prefill, failures with probe and
 * backoff, recovery, validate/reset rejections, overflow idle time,
 * lifetimes, keepalive, leak detection and the replacement rule.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
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

static void fake_set_null_next(void)
{
    pthread_mutex_lock(&fk.lock);
    fk.null_next = true;
    pthread_mutex_unlock(&fk.lock);
}

static void fake_set_validate_false(bool on)
{
    pthread_mutex_lock(&fk.lock);
    fk.validate_false = on;
    pthread_mutex_unlock(&fk.lock);
}

static void fake_set_reset_false(bool on)
{
    pthread_mutex_lock(&fk.lock);
    fk.reset_false = on;
    pthread_mutex_unlock(&fk.lock);
}

static unsigned fake_creating_peak_reset(void)
{
    pthread_mutex_lock(&fk.lock);
    unsigned now = fk.creating_now;
    fk.creating_peak = now;
    pthread_mutex_unlock(&fk.lock);
    return now;
}

static unsigned fake_creating_peak(void)
{
    pthread_mutex_lock(&fk.lock);
    unsigned peak = fk.creating_peak;
    pthread_mutex_unlock(&fk.lock);
    return peak;
}

static bool failed_at_least(fake_factory_t *f, void *arg)
{
    return f->create_failed >= *(uint64_t *)arg;
}

static bool wait_failed(uint64_t n, long timeout_ms)
{
    return fake_wait(&fk, failed_at_least, &n, timeout_ms);
}

typedef struct {
    unsigned idle;
    uint64_t created;
} idle_created_t;

static bool idle_and_created(const respool_stats_t *s, void *arg)
{
    const idle_created_t *want = arg;
    return s->idle == want->idle && s->created >= want->created;
}

/* Poll until stats.idle == idle and stats.created >= created. */
static bool wait_idle_created(respool_t *pool, unsigned idle, uint64_t created, long timeout_ms)
{
    idle_created_t want = {idle, created};
    return pool_wait(pool, idle_and_created, &want, timeout_ms);
}

/* A log sink that keeps counts. */
static struct {
    pthread_mutex_t lock;
    int messages;
    int errors;
    int held_for;        /* messages containing "held for" */
    int held_for_errors; /* ... at level ERROR */
    int injected_errors; /* ERROR messages naming the fake's failure */
    char last[512];
} logcap = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, ""};

static void capture_log(void *ctx, respool_log_level_t level, const char *message)
{
    pthread_mutex_lock(&logcap.lock);
    logcap.messages++;
    if (level == RESPOOL_LOG_ERROR)
        logcap.errors++;
    if (message && strstr(message, "held for")) {
        logcap.held_for++;
        if (level == RESPOOL_LOG_ERROR)
            logcap.held_for_errors++;
    }
    if (message && level == RESPOOL_LOG_ERROR && strstr(message, "injected failure"))
        logcap.injected_errors++;
    snprintf(logcap.last, sizeof logcap.last, "%s", message ? message : "(null)");
    pthread_mutex_unlock(&logcap.lock);
}

/* ------------------------------------------------------------------------ */
/* Prefill                                                                  */

/* A failed create() while prefilling: EFACTORY, *out NULL, everything made destroyed, reason logged. */
Test(manager_prefill, failure_destroys_everything)
{
    fake_init(&fk);
    fake_set_fail_next(&fk, 1);
    respool_config_t cfg = quiet_config(3, 0);
    cfg.log = capture_log;
    respool_factory_t factory = fake_factory(&fk);
    respool_t *pool = (respool_t *)&fk; /* must be overwritten with NULL */
    CHECK_RC(respool_create(&pool, &cfg, &factory), RESPOOL_EFACTORY);
    cr_assert_null(pool);
    ASSERT_EQ_U(FAKE_GET(&fk, create_failed), 1);
    cr_assert_eq(FAKE_GET(&fk, created), FAKE_GET(&fk, destroyed),
                 "created %llu, destroyed %llu at return",
                 (unsigned long long)FAKE_GET(&fk, created),
                 (unsigned long long)FAKE_GET(&fk, destroyed));
    pthread_mutex_lock(&logcap.lock);
    int injected = logcap.injected_errors;
    pthread_mutex_unlock(&logcap.lock);
    cr_assert_geq(injected, 1, "the failure reason was not logged at ERROR (last: \"%s\")",
                  logcap.last);
    fake_fini(&fk);
}

/* A prefill failure while other slow create() calls are in flight waits for them and destroys them. */
Test(manager_prefill, failure_with_slow_creates_in_flight)
{
    fake_init(&fk);
    fake_set_fail_next(&fk, 1);
    fake_set_create_delay(&fk, 30);
    respool_config_t cfg = quiet_config(6, 0);
    respool_factory_t factory = fake_factory(&fk);
    respool_t *pool = (respool_t *)&fk;
    CHECK_RC(respool_create(&pool, &cfg, &factory), RESPOOL_EFACTORY);
    cr_assert_null(pool);
    pthread_mutex_lock(&fk.lock);
    unsigned creating = fk.creating_now;
    uint64_t created = fk.created, destroyed = fk.destroyed;
    pthread_mutex_unlock(&fk.lock);
    cr_assert_eq(creating, 0, "%u create() calls still running after respool_create returned",
                 creating);
    cr_assert_eq(created, destroyed, "created %llu, destroyed %llu", (unsigned long long)created,
                 (unsigned long long)destroyed);
    fake_fini(&fk);
}

/* Prefill runs create() calls in parallel, at most the default max_creating (16) at once. */
Test(manager_prefill, parallel)
{
    fake_init(&fk);
    fake_set_create_delay(&fk, 50);
    int64_t t0 = now_ms();
    respool_t *pool = make_pool(quiet_config(20, 0), fake_factory(&fk));
    int64_t elapsed = now_ms() - t0;
    cr_assert_lt(elapsed, 500, "prefill of 20 x 50 ms took %lld ms", (long long)elapsed);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 20);
    ASSERT_EQ_U(s.created, 20);
    unsigned peak = fake_creating_peak();
    cr_assert_gt(peak, 1, "creating_peak %u", peak);
    cr_assert_leq(peak, 16, "creating_peak %u above the default max_creating 16", peak);
    finish(pool);
}

/* config.max_creating bounds the create() calls in flight. */
Test(manager_prefill, max_creating_bound)
{
    fake_init(&fk);
    fake_set_create_delay(&fk, 30);
    respool_config_t cfg = quiet_config(6, 0);
    cfg.max_creating = 2;
    int64_t t0 = now_ms();
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    int64_t elapsed = now_ms() - t0;
    unsigned peak = fake_creating_peak();
    cr_assert_eq(peak, 2, "creating_peak %u with max_creating 2", peak);
    cr_assert_geq(elapsed, 90, "6 creates of 30 ms, 2 at a time, took only %lld ms",
                  (long long)elapsed);
    ASSERT_EQ_U(stats_of(pool).idle, 6);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Failures, probe, backoff, recovery                                       */

static bool failures_at_least(const respool_stats_t *s, void *arg)
{
    return s->create_failures >= *(uint64_t *)arg &&
           s->consecutive_create_failures >= *(uint64_t *)arg;
}

/* create() failing later is retried; once it recovers the pool refills. */
Test(manager_failure, recovery_refills)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.retry_initial_ms = 10;
    cfg.retry_max_ms = 40;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t a = {0}, b = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);
    fake_set_fail_always(&fk, true);
    CHECK_RC(respool_destroyed(pool, &a), RESPOOL_OK);
    uint64_t want = 3;
    cr_assert(pool_wait(pool, failures_at_least, &want, 3000),
              "replacement not retried: %llu failures",
              (unsigned long long)stats_of(pool).create_failures);
    respool_stats_t s = stats_of(pool);
    cr_assert_geq(s.create_failures, 3);
    cr_assert_geq(s.consecutive_create_failures, 3);
    char buf[128];
    size_t n = respool_last_error(pool, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_not_null(strstr(buf, "fake: injected failure"), "last error \"%s\"", buf);

    fake_set_fail_always(&fk, false);
    cr_assert(wait_idle_created(pool, 1, 3, 3000), "pool did not refill after recovery");
    s = stats_of(pool);
    ASSERT_EQ_U(s.consecutive_create_failures, 0);
    ASSERT_EQ_U(s.busy, 1);
    CHECK_RC(respool_checkin(pool, &b), RESPOOL_OK);
    ASSERT_EQ_U(stats_of(pool).idle, 2);
    finish(pool);
}

/* While create() keeps failing at most one create() is in flight; after recovery refill is parallel. */
Test(manager_failure, probe_one_at_a_time)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(4, 0);
    cfg.retry_initial_ms = 5;
    cfg.retry_max_ms = 20;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t l[4];
    memset(l, 0, sizeof l);
    for (int i = 0; i < 4; i++)
        CHECK_RC(respool_checkout(pool, 0, &l[i]), RESPOOL_OK);
    fake_set_create_delay(&fk, 10);
    fake_set_fail_always(&fk, true);
    for (int i = 0; i < 4; i++)
        CHECK_RC(respool_destroyed(pool, &l[i]), RESPOOL_OK);
    cr_assert(wait_failed(4, 3000), "first failure wave never finished");

    unsigned in_flight = fake_creating_peak_reset();
    cr_assert_leq(in_flight, 1, "%u create() calls in flight after the first failure wave",
                  in_flight);
    /* Checkouts arriving while a probe is in flight must not start more creates. */
    uint64_t until = FAKE_GET(&fk, create_failed) + 6;
    unsigned max_creating_seen = 0;
    int64_t give_up = now_ms() + 3000;
    while (FAKE_GET(&fk, create_failed) < until && now_ms() < give_up) {
        respool_lease_t w = {0};
        CHECK_RC(respool_checkout(pool, 3, &w), RESPOOL_ETIMEDOUT);
        unsigned creating = stats_of(pool).creating;
        if (creating > max_creating_seen)
            max_creating_seen = creating;
    }
    cr_assert_geq(FAKE_GET(&fk, create_failed), until, "failing create() not retried");
    cr_assert_leq(max_creating_seen, 1, "stats.creating reached %u while failing",
                  max_creating_seen);
    unsigned peak = fake_creating_peak();
    cr_assert_leq(peak, 1, "%u create() calls at once while failing", peak);
    ASSERT_EQ_U(stats_of(pool).idle, 0);

    fake_creating_peak_reset();
    fake_set_fail_always(&fk, false);
    cr_assert(pool_wait_idle(pool, 4, 3000), "pool did not refill (idle %u)",
              stats_of(pool).idle);
    peak = fake_creating_peak();
    cr_assert_geq(peak, 2, "refill after recovery not parallel (peak %u)", peak);
    finish(pool);
}

/* create() call start times, through a wrapper factory. */
static struct {
    respool_factory_t base;
    pthread_mutex_t lock;
    int n;
    int64_t start_us[64];
} timed = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int timed_create(void *ctx, void **resource, char *err, size_t errlen)
{
    pthread_mutex_lock(&timed.lock);
    if (timed.n < 64)
        timed.start_us[timed.n++] = now_us();
    pthread_mutex_unlock(&timed.lock);
    return timed.base.create(timed.base.ctx, resource, err, errlen);
}

static void timed_destroy(void *ctx, void *resource)
{
    timed.base.destroy(timed.base.ctx, resource);
}

/* Failed attempts are spaced by doubling delays drawn from each delay's upper half, capped at retry_max_ms. */
Test(manager_backoff, spacing)
{
    fake_init(&fk);
    timed.base = fake_factory_minimal(&fk);
    timed.n = 0;
    respool_factory_t factory = {timed_create, timed_destroy, NULL, NULL, NULL};
    respool_config_t cfg = quiet_config(1, 0);
    cfg.retry_initial_ms = 20;
    cfg.retry_max_ms = 80;
    respool_t *pool = make_pool(cfg, factory);
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    fake_set_fail_always(&fk, true);
    CHECK_RC(respool_destroyed(pool, &l), RESPOOL_OK);
    cr_assert(wait_failed(7, 3000), "only %llu failed attempts",
              (unsigned long long)FAKE_GET(&fk, create_failed));

    pthread_mutex_lock(&timed.lock);
    int n = timed.n;
    int64_t start[64];
    memcpy(start, timed.start_us, sizeof start);
    pthread_mutex_unlock(&timed.lock);
    cr_assert_geq(n, 8); /* the prefill plus seven failed attempts */
    /* start[1] is the first attempt to replace; start[k+1] follows failure k. */
    for (int k = 1; k + 1 < 8; k++) {
        long delay = 20L << (k - 1);
        if (delay > 80)
            delay = 80;
        int64_t gap = start[k + 1] - start[k];
        cr_assert_geq(gap, (delay / 2 - 1) * 1000,
                      "attempt %d followed attempt %d after %lld us (delay %ld ms, want >= %ld)",
                      k + 1, k, (long long)gap, delay, delay / 2);
        cr_assert_leq(gap, (80 + 60) * 1000, "attempts %d and %d are %lld us apart", k, k + 1,
                      (long long)gap);
    }
    fake_set_fail_always(&fk, false);
    cr_assert(pool_wait_idle(pool, 1, 2000), "no recovery");
    finish(pool);
}

/* A checkout with timeout 100 while create() always fails: ETIMEDOUT after >= 100 ms, the reason kept. */
Test(manager_failure, timeout_while_failing)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 1), fake_factory(&fk));
    char buf[128] = "x";
    cr_assert_eq(respool_last_error(pool, buf, sizeof buf), 0);
    cr_assert_str_empty(buf);

    respool_lease_t a = {0}, l = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    fake_set_fail_always(&fk, true);
    int64_t t0 = now_us();
    CHECK_RC(respool_checkout(pool, 100, &l), RESPOOL_ETIMEDOUT);
    int64_t elapsed = now_us() - t0;
    cr_assert_geq(elapsed, 100000, "ETIMEDOUT after %lld us", (long long)elapsed);
    cr_assert_lt(elapsed, 1000000);
    cr_assert_null(l.resource);
    respool_stats_t s = stats_of(pool);
    cr_assert_geq(s.create_failures, 2, "manager did not keep retrying: %llu failures",
                  (unsigned long long)s.create_failures);
    ASSERT_EQ_U(s.waiting, 0);
    ASSERT_EQ_U(s.timeouts, 1);
    size_t n = respool_last_error(pool, buf, sizeof buf);
    ASSERT_EQ_U(n, strlen(buf));
    cr_assert_not_null(strstr(buf, "fake: injected failure"), "last error \"%s\"", buf);

    fake_set_fail_always(&fk, false);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    finish(pool);
}

/* Retries stop once nothing needs a resource (live >= size, nobody waiting). */
Test(manager_failure, no_retry_without_demand)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 1);
    cfg.retry_initial_ms = 10;
    cfg.retry_max_ms = 40;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t a = {0}, l = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    fake_set_fail_always(&fk, true);
    CHECK_RC(respool_checkout(pool, 60, &l), RESPOOL_ETIMEDOUT);
    pass_time_ms(100); /* longer than retry_max_ms: any retry armed for the waiter has fired */
    uint64_t calls = FAKE_GET(&fk, create_calls);
    pass_time_ms(300);
    cr_assert_eq(FAKE_GET(&fk, create_calls), calls,
                 "create() retried with nobody needing a resource");
    fake_set_fail_always(&fk, false);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    finish(pool);
}

/* A create() that succeeds with a NULL resource counts as a failure and nothing is destroyed for it. */
Test(manager_factory, null_resource_is_failure)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 1), fake_factory(&fk));
    respool_lease_t a = {0}, l = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    fake_set_null_next();
    l.resource = &fk;
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_EFACTORY);
    cr_assert_null(l.resource);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.create_failures, 1);
    ASSERT_EQ_U(s.created, 1);
    ASSERT_EQ_U(s.busy, 1);
    ASSERT_EQ_U(s.idle, 0);

    CHECK_RC(respool_checkout(pool, 1000, &l), RESPOOL_OK);
    ASSERT_EQ_U(fake_id(l.resource), 2);
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* validate and reset                                                       */

/* validate() false at checkout: that resource is destroyed, the checkout gets another, a replacement follows. */
Test(manager_validate, rejected_at_checkout)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    void *broken = l.resource;
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    fake_break(broken); /* idle now; the next LIFO checkout meets it first */

    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    cr_assert_neq(l.resource, broken, "a resource validate() rejected was handed out");
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.validate_failures, 1);
    cr_assert(fake_wait_resource_destroyed(&fk, broken, 2000), "rejected resource not destroyed");
    cr_assert(wait_idle_created(pool, 1, 3, 2000), "rejected resource not replaced");
    cr_assert(pool_wait_destroyed(pool, 1, 2000), "stats.destroyed never counted it");
    s = stats_of(pool);
    cr_assert_eq(s.destroyed, 1, "stats.destroyed %llu", (unsigned long long)s.destroyed);
    ASSERT_EQ_U(s.busy, 1);
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    finish(pool);
}

/* validate_idle_ms 0 validates every checkout from idle; > 0 only after that much idle time. */
Test(manager_validate, idle_threshold)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t l = {0};
    for (int i = 0; i < 3; i++) {
        CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
        CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    }
    cr_assert_eq(FAKE_GET(&fk, validated), 3, "validate_idle_ms 0: %llu validations for 3 checkouts",
                 (unsigned long long)FAKE_GET(&fk, validated));
    respool_free(pool);
    fake_fini(&fk);

    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.validate_idle_ms = 60;
    pool = make_pool(cfg, fake_factory(&fk));
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    void *r = l.resource;
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    fake_break(r); /* not validated while fresh: still handed out */
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    cr_assert_eq(l.resource, r);
    cr_assert_eq(FAKE_GET(&fk, validated), 0, "validated a resource idle < validate_idle_ms");
    /* the lease goes back through respool_destroyed: reset() would reject it anyway */
    CHECK_RC(respool_destroyed(pool, &l), RESPOOL_OK);
    cr_assert(wait_idle_created(pool, 1, 2, 2000), "no replacement");
    pass_time_ms(100); /* the replacement now sat idle longer than 60 ms */
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    cr_assert_eq(FAKE_GET(&fk, validated), 1, "no validate() after 100 ms idle");
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    finish(pool);
}

/* Every idle resource rejected: the checkout goes on until a fresh one is handed to it unvalidated. */
Test(manager_validate, all_rejected_then_fresh)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    fake_set_validate_false(true);
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 1000, &l), RESPOOL_OK);
    fake_set_validate_false(false);
    cr_assert_gt(fake_id(l.resource), 2, "got rejected resource %u", fake_id(l.resource));
    cr_assert_not(fake_is_destroyed(l.resource));
    /* Replacements that reached the idle list before the checkout queued were
     * validated (and rejected) too, so the count is at least 2, not exactly. */
    respool_stats_t s = stats_of(pool);
    cr_assert_geq(s.validate_failures, 2, "validate_failures %llu",
                  (unsigned long long)s.validate_failures);
    ASSERT_EQ_U(FAKE_GET(&fk, validated), s.validate_failures);
    cr_assert(pool_wait_destroyed(pool, s.validate_failures, 2000));
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    cr_assert(pool_wait_idle(pool, 2, 2000));
    finish(pool);
}

/* reset() false at checkin: the resource is destroyed (reset_failures) and replaced. */
Test(manager_reset, false_destroys_and_replaces)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    void *r = l.resource;
    fake_set_reset_false(true);
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    cr_assert_null(l.resource);
    fake_set_reset_false(false);
    ASSERT_EQ_U(FAKE_GET(&fk, resets), 1);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.reset_failures, 1);
    ASSERT_EQ_U(s.busy, 0);
    cr_assert(fake_wait_resource_destroyed(&fk, r, 2000), "reset-rejected resource not destroyed");
    cr_assert(wait_idle_created(pool, 1, 2, 2000), "not replaced");
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    ASSERT_EQ_U(fake_id(l.resource), 2);
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Overflow idle time, lifetime, keepalive, leaks                           */

/* overflow_idle_ms: returned overflow stays idle (reusable) that long, then is dismissed. */
Test(manager_overflow, idle_time_then_dismissed)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 1);
    cfg.overflow_idle_ms = 100;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t a = {0}, b = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);
    void *rb = b.resource;
    CHECK_RC(respool_checkin(pool, &b), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 1);
    ASSERT_EQ_U(s.overflow, 1);
    ASSERT_EQ_U(s.dismissed, 0);

    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);
    cr_assert_eq(b.resource, rb, "idle overflow not reused");
    ASSERT_EQ_U(FAKE_GET(&fk, create_calls), 2);
    int64_t t0 = now_ms();
    CHECK_RC(respool_checkin(pool, &b), RESPOOL_OK);
    cr_assert(fake_wait_resource_destroyed(&fk, rb, 2000), "idle overflow never dismissed");
    int64_t lived = now_ms() - t0;
    cr_assert_geq(lived, 100, "idle overflow dismissed after %lld ms", (long long)lived);
    s = stats_of(pool);
    ASSERT_EQ_U(s.dismissed, 1);
    ASSERT_EQ_U(s.overflow, 0);
    ASSERT_EQ_U(s.idle, 0);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    ASSERT_EQ_U(stats_of(pool).idle, 1);
    finish(pool);
}

/* Default overflow_idle_ms 0: overflow returned with nobody waiting is dismissed at checkin. */
Test(manager_overflow, dismissed_at_checkin)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 1), fake_factory(&fk));
    respool_lease_t a = {0}, b = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &b), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 0);
    ASSERT_EQ_U(s.busy, 1);
    ASSERT_EQ_U(s.overflow, 0);
    ASSERT_EQ_U(s.dismissed, 1);
    cr_assert(fake_wait_destroyed(&fk, 1, 2000));
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    s = stats_of(pool);
    ASSERT_EQ_U(s.idle, 1);
    ASSERT_EQ_U(s.dismissed, 1);
    finish(pool);
}

/* max_lifetime_ms: idle resources expire (not before lifetime - 10 %) and are replaced. */
Test(manager_lifetime, idle_expire_and_replaced)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.max_lifetime_ms = 100;
    int64_t t0 = now_ms();
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    cr_assert(fake_wait_destroyed(&fk, 1, 2000), "no idle resource expired");
    int64_t first = now_ms() - t0;
    cr_assert_geq(first, 90, "a resource expired after %lld ms (lifetime 100)", (long long)first);
    idle_created_t want = {2, 4};
    cr_assert(pool_wait(pool, idle_and_created, &want, 2000), "expired resources not replaced");
    respool_stats_t s = stats_of(pool);
    cr_assert_geq(s.expired, 2);
    finish(pool);
}

/* A busy resource past its lifetime is not touched while out, and is destroyed when it comes back. */
Test(manager_lifetime, busy_expires_on_checkin)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.max_lifetime_ms = 100;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    void *r = l.resource;
    fake_hold(r); /* destroying it while held aborts */
    pass_time_ms(150);
    cr_assert_not(fake_is_destroyed(r));
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.busy, 1);
    ASSERT_EQ_U(s.expired, 0);
    fake_unhold(r);
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    cr_assert(fake_wait_resource_destroyed(&fk, r, 2000), "expired resource kept after checkin");
    cr_assert_geq(stats_of(pool).expired, 1);
    cr_assert(wait_idle_created(pool, 1, 2, 2000), "expired resource not replaced");
    finish(pool);
}

/* keepalive_ms: the manager validates idle resources; a broken one is destroyed and replaced unasked. */
Test(manager_keepalive, broken_idle_replaced)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.keepalive_ms = 30;
    cfg.validate_idle_ms = 60000;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    void *r = l.resource;
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    fake_break(r);
    cr_assert(fake_wait_resource_destroyed(&fk, r, 2000), "keepalive did not find the broken resource");
    cr_assert(wait_idle_created(pool, 2, 3, 2000), "broken idle resource not replaced");
    respool_stats_t s = stats_of(pool);
    cr_assert_geq(s.validate_failures, 1);
    cr_assert(pool_wait_destroyed(pool, 1, 2000), "stats.destroyed never counted it");
    s = stats_of(pool);
    cr_assert_eq(s.destroyed, 1, "stats.destroyed %llu", (unsigned long long)s.destroyed);
    ASSERT_EQ_U(s.checkouts, 1);
    finish(pool);
}

static bool leak_reported(const respool_stats_t *s, void *arg)
{
    return s->leaks >= 1;
}

/* leak_threshold_ms: a lease held longer is reported once, at ERROR, with "held for". */
Test(manager_leak, reported_once)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.leak_threshold_ms = 50;
    cfg.log = capture_log;
    respool_t *pool = make_pool(cfg, fake_factory(&fk));
    respool_lease_t l = {0};
    int64_t t0 = now_ms();
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    cr_assert(pool_wait(pool, leak_reported, NULL, 2000), "leak not reported");
    cr_assert_geq(now_ms() - t0, 50, "leak reported after %lld ms (threshold 50)",
                  (long long)(now_ms() - t0));
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.leaks, 1);
    pass_time_ms(200); /* several more manager periods: must stay at one report */
    s = stats_of(pool);
    ASSERT_EQ_U(s.leaks, 1);
    pthread_mutex_lock(&logcap.lock);
    int held_for = logcap.held_for, held_for_errors = logcap.held_for_errors;
    pthread_mutex_unlock(&logcap.lock);
    cr_assert_eq(held_for, 1, "%d \"held for\" messages", held_for);
    cr_assert_eq(held_for_errors, 1, "leak report not at RESPOOL_LOG_ERROR");
    CHECK_RC(respool_checkin(pool, &l), RESPOOL_OK);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Replacement rule and growth                                              */

/* respool_destroyed: the resource is destroyed and replaced (live + creating < size). */
Test(manager_replace, after_destroyed)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(2, 0), fake_factory(&fk));
    respool_lease_t l = {0};
    CHECK_RC(respool_checkout(pool, 0, &l), RESPOOL_OK);
    void *r = l.resource;
    respool_lease_t stale = l;
    CHECK_RC(respool_destroyed(pool, &l), RESPOOL_OK);
    cr_assert_null(l.resource);
    CHECK_RC(respool_checkin(pool, &stale), RESPOOL_EINVAL);
    cr_assert(fake_wait_resource_destroyed(&fk, r, 2000));
    cr_assert(wait_idle_created(pool, 2, 3, 2000), "not replaced");
    respool_stats_t s = stats_of(pool);
    cr_assert(pool_wait_destroyed(pool, 1, 2000), "stats.destroyed never counted it");
    s = stats_of(pool);
    cr_assert_eq(s.destroyed, 1, "stats.destroyed %llu", (unsigned long long)s.destroyed);
    ASSERT_EQ_U(s.reported_broken, 1);
    ASSERT_EQ_U(s.created, 3);
    finish(pool);
}

/* Destroying an overflow resource when live stays >= size makes no replacement. */
Test(manager_replace, overflow_not_replaced)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 1), fake_factory(&fk));
    respool_lease_t a = {0}, b = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &b), RESPOOL_OK);
    CHECK_RC(respool_destroyed(pool, &b), RESPOOL_OK);
    cr_assert(fake_wait_destroyed(&fk, 1, 2000));
    pass_time_ms(50);
    cr_assert_eq(FAKE_GET(&fk, create_calls), 2, "replaced an overflow resource");
    ASSERT_EQ_U(stats_of(pool).creating, 0);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    finish(pool);
}

/* A destroyed resource with a checkout waiting: the replacement serves that waiter. */
Test(manager_replace, destroyed_serves_waiter)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    CHECK_RC(respool_destroyed(pool, &a), RESPOOL_OK);
    cr_assert(co_join(&w, 2000), "waiter not served by the replacement");
    CHECK_RC(w.rc, RESPOOL_OK);
    ASSERT_EQ_U(fake_id(w.lease.resource), 2);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    finish(pool);
}

/* Growth by resize serves a checkout already waiting. */
Test(manager_grow, resize_serves_waiter)
{
    fake_init(&fk);
    respool_t *pool = make_pool(quiet_config(1, 0), fake_factory(&fk));
    respool_lease_t a = {0};
    CHECK_RC(respool_checkout(pool, 0, &a), RESPOOL_OK);
    co_t w;
    co_start(&w, pool, -1);
    cr_assert(pool_wait_waiting(pool, 1, 2000));
    CHECK_RC(respool_resize(pool, 2, 0), RESPOOL_OK);
    cr_assert(co_join(&w, 2000), "waiter not served by growth");
    CHECK_RC(w.rc, RESPOOL_OK);
    ASSERT_EQ_U(fake_id(w.lease.resource), 2);
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(s.size, 2);
    ASSERT_EQ_U(s.busy, 2);
    CHECK_RC(respool_checkin(pool, &w.lease), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &a), RESPOOL_OK);
    ASSERT_EQ_U(stats_of(pool).idle, 2);
    finish(pool);
}

/* ------------------------------------------------------------------------ */
/* Where callbacks run                                                      */

static struct {
    respool_factory_t base;
    _Atomic(respool_t *) pool;
    pthread_t caller;
    atomic_int create_on_caller, destroy_on_caller, validate_off_caller, reset_off_caller;
    atomic_int validates, resets, stats_calls;
} cbt;

static void cbt_stats(void)
{
    respool_t *pool = atomic_load(&cbt.pool);
    if (pool) {
        respool_stats_t s;
        respool_stats(pool, &s); /* deadlocks if the pool lock is held */
        atomic_fetch_add(&cbt.stats_calls, 1);
    }
}

static int cbt_create(void *ctx, void **resource, char *err, size_t errlen)
{
    if (pthread_equal(pthread_self(), cbt.caller))
        atomic_fetch_add(&cbt.create_on_caller, 1);
    cbt_stats();
    return cbt.base.create(cbt.base.ctx, resource, err, errlen);
}

static void cbt_destroy(void *ctx, void *resource)
{
    if (pthread_equal(pthread_self(), cbt.caller))
        atomic_fetch_add(&cbt.destroy_on_caller, 1);
    cbt_stats();
    cbt.base.destroy(cbt.base.ctx, resource);
}

static bool cbt_validate(void *ctx, void *resource)
{
    if (!pthread_equal(pthread_self(), cbt.caller))
        atomic_fetch_add(&cbt.validate_off_caller, 1);
    atomic_fetch_add(&cbt.validates, 1);
    cbt_stats();
    return cbt.base.validate(cbt.base.ctx, resource);
}

static bool cbt_reset(void *ctx, void *resource)
{
    if (!pthread_equal(pthread_self(), cbt.caller))
        atomic_fetch_add(&cbt.reset_off_caller, 1);
    atomic_fetch_add(&cbt.resets, 1);
    cbt_stats();
    return cbt.base.reset(cbt.base.ctx, resource);
}

/* create/destroy run off the caller's thread, validate/reset on it, none under the pool lock. */
Test(manager_factory, callback_threads_and_no_lock)
{
    fake_init(&fk);
    memset(&cbt, 0, sizeof cbt);
    cbt.base = fake_factory(&fk);
    cbt.caller = pthread_self();
    respool_factory_t factory = {cbt_create, cbt_destroy, cbt_validate, cbt_reset, NULL};
    respool_t *pool = make_pool(quiet_config(2, 1), factory);
    atomic_store(&cbt.pool, pool);

    respool_lease_t l[3];
    memset(l, 0, sizeof l);
    for (int i = 0; i < 3; i++) /* two from idle (validated), one overflow made for it */
        CHECK_RC(respool_checkout(pool, 0, &l[i]), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &l[0]), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &l[1]), RESPOOL_OK); /* live 2 == size: stays */
    CHECK_RC(respool_destroyed(pool, &l[2]), RESPOOL_OK);
    cr_assert(pool_wait_destroyed(pool, 1, 2000));
    CHECK_RC(respool_checkout(pool, 0, &l[0]), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &l[0]), RESPOOL_OK);
    atomic_store(&cbt.pool, NULL);
    respool_free(pool);

    ASSERT_EQ_U(atomic_load(&cbt.create_on_caller), 0);
    ASSERT_EQ_U(atomic_load(&cbt.destroy_on_caller), 0);
    ASSERT_EQ_U(atomic_load(&cbt.validate_off_caller), 0);
    ASSERT_EQ_U(atomic_load(&cbt.reset_off_caller), 0);
    ASSERT_EQ_U(atomic_load(&cbt.resets), 3);
    cr_assert_geq(atomic_load(&cbt.validates), 3);
    cr_assert_gt(atomic_load(&cbt.stats_calls), 0);
    fake_fini(&fk);
}
