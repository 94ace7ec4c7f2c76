/*
 * test_observability.c — checkout errors that name the holders (call site,
 * thread, hold time), the leak report's holder, and the latency histograms
 * in the stats and in the Prometheus text.
 *
 * Suites: holders, histograms.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "respool.h"
#include "support/fake_factory.h"
#include "support/test_helpers.h"

static fake_factory_t fk;

static respool_t *make(respool_config_t cfg, respool_factory_t factory)
{
    respool_t *pool = NULL;
    CHECK_RC(respool_create(&pool, &cfg, &factory), RESPOOL_OK);
    return pool;
}

/* The checkout whose call site the errors must name, on hold_one_line. */
static const int hold_one_line = __LINE__ + 4;
static respool_lease_t hold_one(respool_t *pool)
{
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_OK);
    return lease;
}

static char *last_checkout_error(void)
{
    static _Thread_local char text[1024];
    respool_checkout_error(text, sizeof text);
    return text;
}

static void assert_contains(const char *text, const char *part)
{
    cr_assert(strstr(text, part), "\"%s\" not found in \"%s\"", part, text);
}

/* ---- holders ---------------------------------------------------------------- */

/* A timeout names the counts and the holder's site and thread. */
Test(holders, timeout_names_the_holder)
{
    fake_init(&fk);
    respool_t *pool = make(quiet_config(1, 0), fake_factory_minimal(&fk));
    respool_lease_t held = hold_one(pool);
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 20, &lease), RESPOOL_ETIMEDOUT);

    char *text = last_checkout_error();
    char site[128];
    snprintf(site, sizeof site, "test_observability.c:%d in hold_one() thread %ld", hold_one_line,
             (long)syscall(SYS_gettid));
    assert_contains(text, "checkout timed out after ");
    assert_contains(text, "1 total (1 busy, 0 idle), 0 waiting, 0 creating");
    assert_contains(text, site);
    cr_assert(!strstr(text, " for "), "no hold time without tracking: %s", text);

    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* With hold times tracked, the holders come oldest first with their times. */
Test(holders, oldest_first_with_hold_times)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.track_hold_times = true;
    respool_t *pool = make(cfg, fake_factory_minimal(&fk));
    respool_lease_t first = hold_one(pool);
    respool_lease_t second;
    CHECK_RC(respool_checkout(pool, 0, &second), RESPOOL_OK);
    int second_line = __LINE__ - 1;
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_EFULL);

    char *text = last_checkout_error();
    assert_contains(text, "checkout found the pool full: 2 total (2 busy, 0 idle)");
    char second_site[96];
    snprintf(second_site, sizeof second_site, "test_observability.c:%d", second_line);
    const char *at_first = strstr(text, "in hold_one()");
    const char *at_second = strstr(text, second_site);
    cr_assert(at_first && at_second, "both holders named: %s", text);
    cr_assert(at_first < at_second, "oldest first: %s", text);
    assert_contains(text, " s; ");
    assert_contains(at_second, " for 0.");

    CHECK_RC(respool_checkin(pool, &first), RESPOOL_OK);
    CHECK_RC(respool_checkin(pool, &second), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* The factory's last error is part of the explanation. */
Test(holders, factory_error_is_named)
{
    fake_init(&fk);
    respool_t *pool = make(quiet_config(0, 1), fake_factory_minimal(&fk));
    fake_set_fail_always(&fk, true);
    respool_lease_t lease;
    int rc = respool_checkout(pool, 0, &lease);
    cr_assert(rc == RESPOOL_EFACTORY, "got %s", respool_strerror(rc));
    char *text = last_checkout_error();
    assert_contains(text, "the factory could not create a resource");
    assert_contains(text, "last factory error: ");
    assert_contains(text, "no lease is out");
    fake_set_fail_always(&fk, false);
    respool_free(pool);
    fake_fini(&fk);
}

/* The plain function (no macro) works and says the site is unknown. */
Test(holders, plain_function_has_no_site)
{
    fake_init(&fk);
    respool_t *pool = make(quiet_config(1, 0), fake_factory_minimal(&fk));
    respool_lease_t held, lease;
    CHECK_RC((respool_checkout)(pool, 0, &held), RESPOOL_OK);
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_EFULL);
    assert_contains(last_checkout_error(), "an unrecorded call site thread ");
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

static void *fail_one_checkout(void *arg)
{
    respool_lease_t lease;
    int rc = respool_checkout(arg, 0, &lease);
    cr_assert(rc == RESPOOL_EFULL || rc == RESPOOL_OK);
    char text[256];
    cr_assert(respool_checkout_error(text, sizeof text) > 0);
    return NULL;
}

/* The text is per thread: another thread's failure does not show, and a
 * thread that never failed reads nothing. A short buffer is cut and
 * terminated, and the full length is returned. */
Test(holders, error_text_is_per_thread)
{
    fake_init(&fk);
    respool_t *pool = make(quiet_config(1, 0), fake_factory_minimal(&fk));
    respool_lease_t held = hold_one(pool);
    char text[8] = "xxxxxxx";
    cr_assert_eq(respool_checkout_error(text, sizeof text), 0);
    cr_assert_str_eq(text, "");
    pthread_t other;
    cr_assert_eq(pthread_create(&other, NULL, fail_one_checkout, pool), 0);
    pthread_join(other, NULL);
    cr_assert_eq(respool_checkout_error(text, sizeof text), 0, "another thread's error leaked");
    respool_lease_t lease;
    CHECK_RC(respool_checkout(pool, 0, &lease), RESPOOL_EFULL);
    size_t full = respool_checkout_error(text, sizeof text);
    cr_assert_gt(full, sizeof text);
    cr_assert_eq(strlen(text), sizeof text - 1);
    cr_assert_eq(respool_checkout_error(NULL, 0), full);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* The leak report names where the leaked lease was taken. */
static struct {
    pthread_mutex_t lock;
    char message[512];
} leak_log = {PTHREAD_MUTEX_INITIALIZER, ""};

static void keep_leak_message(void *ctx, respool_log_level_t level, const char *message)
{
    (void)ctx;
    pthread_mutex_lock(&leak_log.lock);
    if (level == RESPOOL_LOG_ERROR && strstr(message, "leak threshold"))
        snprintf(leak_log.message, sizeof leak_log.message, "%s", message);
    pthread_mutex_unlock(&leak_log.lock);
}

static bool leak_reported(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->leaks >= 1;
}

Test(holders, leak_report_names_the_site)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.leak_threshold_ms = 10;
    cfg.log = keep_leak_message;
    respool_t *pool = make(cfg, fake_factory_minimal(&fk));
    respool_lease_t held = hold_one(pool);
    cr_assert(pool_wait(pool, leak_reported, NULL, 5000));
    char expected[128];
    snprintf(expected, sizeof expected, "test_observability.c:%d in hold_one() thread %ld",
             hold_one_line, (long)syscall(SYS_gettid));
    pthread_mutex_lock(&leak_log.lock);
    char message[512];
    snprintf(message, sizeof message, "%s", leak_log.message);
    pthread_mutex_unlock(&leak_log.lock);
    assert_contains(message, "held for ");
    assert_contains(message, ", taken at ");
    assert_contains(message, expected);
    CHECK_RC(respool_checkin(pool, &held), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&fk);
}

/* ---- histograms ----------------------------------------------------------- */

/* Checkouts that did not wait count as zero waits. */
Test(histograms, fast_checkouts_are_zero_waits)
{
    fake_init(&fk);
    respool_t *pool = make(quiet_config(2, 0), fake_factory_minimal(&fk));
    for (int i = 0; i < 100; i++) {
        respool_lease_t lease = hold_one(pool);
        CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    }
    respool_stats_t s;
    respool_stats(pool, &s);
    ASSERT_EQ_U(s.checkout_wait.count, 100);
    ASSERT_EQ_U(s.checkout_wait.p999_ns, 0);
    ASSERT_EQ_U(s.checkout_wait.max_ns, 0);
    ASSERT_EQ_U(s.hold.count, 0); /* hold times are not tracked */
    ASSERT_EQ_U(s.create.count, 2);
    respool_free(pool);
    fake_fini(&fk);
}

typedef struct delayed_checkin {
    respool_t *pool;
    respool_lease_t lease;
} delayed_checkin_t;

static void *check_in_later(void *arg)
{
    delayed_checkin_t *d = arg;
    cr_assert(pool_wait_waiting(d->pool, 1, 5000));
    usleep(30000); /* shapes the wait being measured; the outcome is checked either way */
    CHECK_RC(respool_checkin(d->pool, &d->lease), RESPOOL_OK);
    return NULL;
}

/* A measured wait lands in the tail; percentiles stay ordered and never
 * exceed the maximum. */
Test(histograms, waits_and_holds_are_measured)
{
    fake_init(&fk);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.track_hold_times = true;
    respool_t *pool = make(cfg, fake_factory_minimal(&fk));
    for (int i = 0; i < 98; i++) {
        respool_lease_t lease = hold_one(pool);
        CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    }
    delayed_checkin_t d = {pool, hold_one(pool)};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, check_in_later, &d), 0);
    respool_lease_t lease;
    int64_t before = now_us();
    CHECK_RC(respool_checkout(pool, 5000, &lease), RESPOOL_OK);
    uint64_t waited_ns = (uint64_t)(now_us() - before) * 1000;
    pthread_join(thread, NULL);
    CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);

    respool_stats_t s;
    respool_stats(pool, &s);
    ASSERT_EQ_U(s.checkout_wait.count, 100);
    cr_assert_geq(s.checkout_wait.max_ns, 30000000, "max %llu", (unsigned long long)s.checkout_wait.max_ns);
    cr_assert_leq(s.checkout_wait.max_ns, waited_ns + 1000);
    cr_assert_eq(s.checkout_wait.p99_ns, 0, "99 of 100 did not wait");
    cr_assert_eq(s.checkout_wait.p999_ns, s.checkout_wait.max_ns);
    ASSERT_EQ_U(s.hold.count, 100);
    cr_assert_geq(s.hold.max_ns, 30000000);
    cr_assert_leq(s.hold.p50_ns, s.hold.p90_ns);
    cr_assert_leq(s.hold.p90_ns, s.hold.p99_ns);
    cr_assert_leq(s.hold.p99_ns, s.hold.max_ns);
    respool_free(pool);
    fake_fini(&fk);
}

/* create() and validate() durations are measured, to within a bucket. */
Test(histograms, create_and_validate_durations)
{
    fake_init(&fk);
    fake_set_create_delay(&fk, 20);
    respool_config_t cfg = quiet_config(3, 0);
    respool_t *pool = make(cfg, fake_factory(&fk));
    for (int i = 0; i < 5; i++) {
        respool_lease_t lease = hold_one(pool);
        CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    }
    respool_stats_t s;
    respool_stats(pool, &s);
    ASSERT_EQ_U(s.create.count, 3);
    cr_assert_geq(s.create.p50_ns, 20000000);
    cr_assert_geq(s.create.sum_ns, 60000000);
    ASSERT_EQ_U(s.validate.count, FAKE_GET(&fk, validated));
    cr_assert_geq(s.validate.count, 5);
    respool_free(pool);
    fake_fini(&fk);
}

/* The Prometheus text carries each histogram as a summary. */
Test(histograms, prometheus_summaries)
{
    fake_init(&fk);
    respool_t *pool = make(quiet_config(1, 0), fake_factory_minimal(&fk));
    respool_lease_t lease = hold_one(pool);
    CHECK_RC(respool_checkin(pool, &lease), RESPOOL_OK);
    char text[16384];
    size_t n = respool_stats_prometheus(pool, "db", text, sizeof text);
    cr_assert_lt(n, sizeof text);
    assert_contains(text, "# TYPE respool_checkout_wait_seconds summary\n");
    assert_contains(text, "respool_checkout_wait_seconds{pool=\"db\",quantile=\"0.99\"} 0\n");
    assert_contains(text, "respool_checkout_wait_seconds_count{pool=\"db\"} 1\n");
    assert_contains(text, "respool_create_seconds_count{pool=\"db\"} 1\n");
    assert_contains(text, "# TYPE respool_hold_seconds summary\n");
    assert_contains(text, "respool_validate_seconds{pool=\"db\",quantile=\"0.999\"} 0\n");
    respool_free(pool);
    fake_fini(&fk);
}
