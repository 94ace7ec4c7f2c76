/*
 * test_api.c — the public contract's argument checks, lease validation,
 * names of codes and states, diagnostics (last error, Prometheus text,
 * logging) and the transaction helper.
 *
 * Suites: api_create, api_null, api_names, api_stats, api_lease,
 * api_last_error, api_prometheus, api_transaction, api_log.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "respool.h"
#include "support/fake_factory.h"
#include "support/test_helpers.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static char out_sentinel;

/* A pool pointer that is not NULL and not a pool: respool_create must
 * overwrite it with NULL on failure. */
static respool_t *not_a_pool(void)
{
    return (respool_t *)(void *)&out_sentinel;
}

static respool_t *pool_of_size(fake_factory_t *f, unsigned size, unsigned max_overflow)
{
    respool_config_t cfg = quiet_config(size, max_overflow);
    respool_factory_t fac = fake_factory(f);
    respool_t *pool = NULL;
    int rc = respool_create(&pool, &cfg, &fac);
    cr_assert_eq(rc, RESPOOL_OK, "respool_create: %s", respool_strerror(rc));
    cr_assert_not_null(pool);
    return pool;
}

/* Every field of two snapshots is equal (field by field: padding may differ). */
static void assert_stats_same(const respool_stats_t *a, const respool_stats_t *b)
{
    cr_assert_eq(a->state, b->state, "state %d -> %d", (int)a->state, (int)b->state);
    cr_assert_eq(a->size, b->size);
    cr_assert_eq(a->max_overflow, b->max_overflow);
    cr_assert_eq(a->idle, b->idle, "idle %u -> %u", a->idle, b->idle);
    cr_assert_eq(a->busy, b->busy, "busy %u -> %u", a->busy, b->busy);
    cr_assert_eq(a->overflow, b->overflow);
    cr_assert_eq(a->creating, b->creating);
    cr_assert_eq(a->waiting, b->waiting);
    cr_assert_eq(a->created, b->created);
    cr_assert_eq(a->destroyed, b->destroyed, "destroyed %llu -> %llu",
                 (unsigned long long)a->destroyed, (unsigned long long)b->destroyed);
    cr_assert_eq(a->checkouts, b->checkouts);
    cr_assert_eq(a->timeouts, b->timeouts);
    cr_assert_eq(a->create_failures, b->create_failures);
    cr_assert_eq(a->destroying, b->destroying);
    cr_assert_eq(a->waits, b->waits);
    cr_assert_eq(a->reported_broken, b->reported_broken);
    cr_assert_eq(a->validate_failures, b->validate_failures);
    cr_assert_eq(a->reset_failures, b->reset_failures);
    cr_assert_eq(a->dismissed, b->dismissed);
    cr_assert_eq(a->expired, b->expired);
}

/* Checkout with timeout 0 that must succeed; the test thread holds it. */
static respool_lease_t take(respool_t *pool)
{
    respool_lease_t lease;
    memset(&lease, 0, sizeof lease);
    int rc = respool_checkout(pool, 0, &lease);
    cr_assert_eq(rc, RESPOOL_OK, "checkout: %s", respool_strerror(rc));
    cr_assert_not_null(lease.resource);
    fake_hold(lease.resource);
    return lease;
}

static void give_back(respool_t *pool, respool_lease_t *lease)
{
    fake_unhold(lease->resource);
    int rc = respool_checkin(pool, lease);
    cr_assert_eq(rc, RESPOOL_OK, "checkin: %s", respool_strerror(rc));
    cr_assert_null(lease->resource);
}

/* A lease filled with a recognisable pattern. */
static respool_lease_t garbage_lease(void)
{
    respool_lease_t lease;
    memset(&lease, 0xA5, sizeof lease);
    return lease;
}

/* respool_create on a config that must be rejected: EINVAL, *out NULL and
 * the factory never called. */
static void assert_create_rejected(const respool_config_t *cfg, const respool_factory_t *fac,
                                   fake_factory_t *f, const char *what)
{
    respool_t *pool = not_a_pool();
    int rc = respool_create(&pool, cfg, fac);
    cr_assert_eq(rc, RESPOOL_EINVAL, "%s: expected EINVAL, got %d (%s)", what, rc,
                 respool_strerror(rc));
    cr_assert_null(pool, "%s: *out must be NULL after a failure", what);
    cr_assert_eq(FAKE_GET(f, create_calls), 0, "%s: create() was called", what);
}

/* `line` appears in `text` as a whole line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        bool starts = p == text || p[-1] == '\n';
        bool ends = p[n] == '\n' || p[n] == '\0';
        if (starts && ends)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* api_create: argument checks                                               */
/* ------------------------------------------------------------------------ */

/* "Any int-returning function given a NULL ... required pointer returns
 * RESPOOL_EINVAL" (respool_create: NULL out, cfg or factory; *out NULL). */
Test(api_create, null_arguments)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = quiet_config(2, 0);
    respool_factory_t fac = fake_factory(&f);

    cr_assert_eq(respool_create(NULL, &cfg, &fac), RESPOOL_EINVAL);

    respool_t *pool = not_a_pool();
    cr_assert_eq(respool_create(&pool, NULL, &fac), RESPOOL_EINVAL);
    cr_assert_null(pool);

    pool = not_a_pool();
    cr_assert_eq(respool_create(&pool, &cfg, NULL), RESPOOL_EINVAL);
    cr_assert_null(pool);

    cr_assert_eq(FAKE_GET(&f, create_calls), 0);
    fake_fini(&f);
}

/* "It returns RESPOOL_EINVAL for size + max_overflow == 0 ... then *out is NULL." */
Test(api_create, zero_capacity)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(0, 0);
    assert_create_rejected(&cfg, &fac, &f, "size 0, max_overflow 0");

    respool_config_t zero;
    memset(&zero, 0, sizeof zero); /* all defaults: size 0 too */
    assert_create_rejected(&zero, &fac, &f, "zeroed config");
    fake_fini(&f);
}

/* Header: EINVAL for "size + max_overflow ... above RESPOOL_MAX_RESOURCES"
 * (including sums that wrap around in unsigned arithmetic). */
Test(api_create, above_max_resources)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);

    respool_config_t cfg = quiet_config(RESPOOL_MAX_RESOURCES + 1u, 0);
    assert_create_rejected(&cfg, &fac, &f, "size above max");
    cfg = quiet_config(RESPOOL_MAX_RESOURCES, 1);
    assert_create_rejected(&cfg, &fac, &f, "size max + overflow 1");
    cfg = quiet_config(1, RESPOOL_MAX_RESOURCES);
    assert_create_rejected(&cfg, &fac, &f, "size 1 + overflow max");
    cfg = quiet_config(UINT_MAX, 2); /* sum wraps to 1 */
    assert_create_rejected(&cfg, &fac, &f, "size UINT_MAX + overflow 2 (wraps)");
    cfg = quiet_config(2, UINT_MAX); /* sum wraps to 1 */
    assert_create_rejected(&cfg, &fac, &f, "size 2 + overflow UINT_MAX (wraps)");
    fake_fini(&f);
}

/* Header: only values *above* RESPOOL_MAX_RESOURCES are absurd; exactly the
 * maximum (here as overflow room) is a valid pool. */
Test(api_create, max_resources_boundary_accepted)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(1, RESPOOL_MAX_RESOURCES - 1u);
    respool_t *pool = NULL;
    int rc = respool_create(&pool, &cfg, &fac);
    cr_assert_eq(rc, RESPOOL_OK, "size 1 + overflow max-1: %s", respool_strerror(rc));
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.idle, 1);
    cr_assert_eq(s.size, 1);
    cr_assert_eq(s.max_overflow, RESPOOL_MAX_RESOURCES - 1u);
    respool_free(pool);
    fake_fini(&f);
}

/* "RESPOOL_EINVAL for ... a missing create or destroy". */
Test(api_create, missing_create_or_destroy)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = quiet_config(2, 1);

    respool_factory_t fac = fake_factory(&f);
    fac.create = NULL;
    assert_create_rejected(&cfg, &fac, &f, "no create");

    fac = fake_factory(&f);
    fac.destroy = NULL;
    assert_create_rejected(&cfg, &fac, &f, "no destroy");

    fac = fake_factory(&f);
    fac.create = NULL;
    fac.destroy = NULL;
    assert_create_rejected(&cfg, &fac, &f, "neither");
    fake_fini(&f);
}

/* "RESPOOL_EINVAL for ... an unknown strategy". */
Test(api_create, unknown_strategy)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.strategy = (respool_strategy_t)7;
    assert_create_rejected(&cfg, &fac, &f, "strategy 7");
    cfg.strategy = (respool_strategy_t)2;
    assert_create_rejected(&cfg, &fac, &f, "strategy 2");
    fake_fini(&f);
}

/* Durations: negative, or above 10^12 ms (10^15 us for fairness_us), are
 * absurd; RESPOOL_EINVAL, *out NULL, no create() called. */
Test(api_create, absurd_durations)
{
    static const struct {
        const char *field;
        size_t offset;
        long value;
    } cases[] = {
#define DURATION_CASE(field, value) {#field " = " #value, offsetof(respool_config_t, field), value}
        DURATION_CASE(retry_initial_ms, -1),
        DURATION_CASE(retry_max_ms, -1),
        DURATION_CASE(retry_max_ms, LONG_MIN),
        DURATION_CASE(overflow_idle_ms, -1),
        DURATION_CASE(max_lifetime_ms, -1),
        DURATION_CASE(validate_idle_ms, -1),
        DURATION_CASE(keepalive_ms, -1),
        DURATION_CASE(leak_threshold_ms, -1),
        DURATION_CASE(fairness_us, -2),
        DURATION_CASE(fairness_us, LONG_MIN),
        DURATION_CASE(retry_initial_ms, 1000000000001L),
        DURATION_CASE(retry_max_ms, 1000000000001L),
        DURATION_CASE(overflow_idle_ms, 1000000000001L),
        DURATION_CASE(max_lifetime_ms, 1000000000001L),
        DURATION_CASE(validate_idle_ms, 1000000000001L),
        DURATION_CASE(keepalive_ms, 1000000000001L),
        DURATION_CASE(leak_threshold_ms, 1000000000001L),
        DURATION_CASE(fairness_us, 1000000000001000L),
        DURATION_CASE(max_lifetime_ms, LONG_MAX),
#undef DURATION_CASE
    };
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        respool_config_t cfg = quiet_config(2, 0);
        *(long *)((char *)&cfg + cases[i].offset) = cases[i].value;
        assert_create_rejected(&cfg, &fac, &f, cases[i].field);
    }
    /* Both retry bounds given, initial above max. */
    respool_config_t cfg = quiet_config(2, 0);
    cfg.retry_initial_ms = 500;
    cfg.retry_max_ms = 100;
    assert_create_rejected(&cfg, &fac, &f, "retry_initial_ms 500 > retry_max_ms 100");
    fake_fini(&f);
}

/* The largest durations that are not absurd are accepted. */
Test(api_create, largest_durations_accepted)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(1, 0);
    cfg.overflow_idle_ms = cfg.max_lifetime_ms = cfg.validate_idle_ms = 1000000000000L;
    cfg.keepalive_ms = cfg.leak_threshold_ms = 1000000000000L;
    cfg.fairness_us = 1000000000000000L;
    respool_t *pool = NULL;
    int rc = respool_create(&pool, &cfg, &fac);
    cr_assert_eq(rc, RESPOOL_OK, "got %d (%s)", rc, respool_strerror(rc));
    respool_lease_t l;
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_OK);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&f);
}

/* "RESPOOL_EINVAL for ... absurd values": max_creating is "at most 256"
 * (read as: 257 is rejected, 256 accepted). */
Test(api_create, max_creating_bound)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.max_creating = 257;
    assert_create_rejected(&cfg, &fac, &f, "max_creating 257");
    cfg.max_creating = 256;
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_OK);
    cr_assert_eq(stats_of(pool).idle, 2);
    respool_free(pool);
    fake_fini(&f);
}

/* "RESPOOL_FAIRNESS_STRICT" (-1) is a documented negative value: accepted. */
Test(api_create, fairness_strict_is_valid)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(2, 0);
    cfg.fairness_us = RESPOOL_FAIRNESS_STRICT;
    cr_assert_eq(RESPOOL_FAIRNESS_STRICT, -1L);
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_OK);
    cr_assert_eq(stats_of(pool).idle, 2);
    respool_free(pool);
    fake_fini(&f);
}

/* "Every field's zero value is its documented default, so
 * `respool_config_t c = {0}; c.size = 5;` is valid" and create "returns once
 * size resources exist (stats.idle == size)". */
Test(api_create, zero_config_with_size_is_valid)
{
    fake_factory_t f;
    fake_init(&f);
    respool_factory_t fac = fake_factory_minimal(&f);
    respool_config_t c = {0};
    c.size = 5;
    c.log = respool_log_discard;
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &c, &fac), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.idle, 5);
    cr_assert_eq(s.busy, 0);
    cr_assert_eq(s.size, 5);
    cr_assert_eq(s.max_overflow, 0);
    cr_assert_eq(s.created, 5);
    cr_assert_eq(FAKE_GET(&f, created), 5);
    respool_free(pool);
    fake_fini(&f);
}

/* "respool_create copies *cfg and *factory": changing or destroying the
 * caller's copies after create does not affect the pool. */
Test(api_create, copies_config_and_factory)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = NULL;
    {
        respool_config_t cfg = quiet_config(1, 1);
        respool_factory_t fac = fake_factory(&f);
        cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_OK);
        memset(&cfg, 0xFF, sizeof cfg);
        memset(&fac, 0, sizeof fac);
    }
    respool_lease_t a = take(pool);
    respool_lease_t b = take(pool); /* overflow: needs the copied create() */
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.size, 1);
    cr_assert_eq(s.max_overflow, 1);
    cr_assert_eq(s.busy, 2);
    give_back(pool, &a);
    give_back(pool, &b);
    respool_free(pool);
    fake_fini(&f);
}

/* "If create() fails while prefilling, everything made so far is destroyed
 * before it returns, *out is NULL, and it returns RESPOOL_EFACTORY." */
Test(api_create, prefill_failure)
{
    fake_factory_t f;
    fake_init(&f);
    fake_set_fail_next(&f, 1);
    respool_factory_t fac = fake_factory(&f);
    respool_config_t cfg = quiet_config(4, 0);
    respool_t *pool = not_a_pool();
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_EFACTORY);
    cr_assert_null(pool);
    cr_assert_eq(FAKE_GET(&f, create_failed), 1);
    cr_assert_eq(FAKE_GET(&f, destroyed), FAKE_GET(&f, created),
                 "everything made must be destroyed before respool_create returns");
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_null: NULL pool / NULL lease                                          */
/* ------------------------------------------------------------------------ */

/* "Any int-returning function given a NULL pool or NULL required pointer
 * returns RESPOOL_EINVAL" and "changes nothing, including the lease". */
Test(api_null, null_pool)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    respool_lease_t lease = take(pool);
    respool_lease_t copy = lease;
    respool_stats_t before = stats_of(pool);

    respool_lease_t g = garbage_lease();
    respool_lease_t g0 = g;
    cr_assert_eq(respool_checkout(NULL, 0, &g), RESPOOL_EINVAL);
    cr_assert_eq(respool_checkout(NULL, -1, &g), RESPOOL_EINVAL);
    cr_assert_eq(respool_checkout(NULL, 10, &g), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&g, &g0, sizeof g), 0, "EINVAL checkout changed the lease");

    cr_assert_eq(respool_checkin(NULL, &lease), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&lease, &copy, sizeof lease), 0);
    cr_assert_eq(respool_destroyed(NULL, &lease), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&lease, &copy, sizeof lease), 0);
    cr_assert_eq(respool_resize(NULL, 1, 1), RESPOOL_EINVAL);
    cr_assert_eq(respool_shutdown(NULL, 0), RESPOOL_EINVAL);
    cr_assert_eq(respool_shutdown(NULL, -1), RESPOOL_EINVAL);

    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);

    give_back(pool, &lease);
    respool_free(pool);
    fake_fini(&f);
}

/* Same rule for a NULL lease pointer: EINVAL and nothing checked out/in. */
Test(api_null, null_lease)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 1);
    respool_lease_t lease = take(pool);
    respool_stats_t before = stats_of(pool);

    cr_assert_eq(respool_checkout(pool, 0, NULL), RESPOOL_EINVAL);
    cr_assert_eq(respool_checkout(pool, 10, NULL), RESPOOL_EINVAL);
    cr_assert_eq(respool_checkout(pool, -1, NULL), RESPOOL_EINVAL);
    cr_assert_eq(respool_checkin(pool, NULL), RESPOOL_EINVAL);
    cr_assert_eq(respool_destroyed(pool, NULL), RESPOOL_EINVAL);

    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(after.idle, 1);
    cr_assert_eq(after.busy, 1);

    give_back(pool, &lease);
    respool_free(pool);
    fake_fini(&f);
}

/* "respool_free(NULL) does nothing." */
Test(api_null, free_null)
{
    respool_free(NULL);
    cr_assert(true);
}

/* Header: respool_resize "RESPOOL_EINVAL (0 and 0, or above
 * RESPOOL_MAX_RESOURCES)" and an EINVAL call changes nothing. */
Test(api_null, resize_bad_arguments)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 1);
    respool_stats_t before = stats_of(pool);
    cr_assert_eq(respool_resize(pool, 0, 0), RESPOOL_EINVAL);
    cr_assert_eq(respool_resize(pool, RESPOOL_MAX_RESOURCES + 1u, 0), RESPOOL_EINVAL);
    cr_assert_eq(respool_resize(pool, RESPOOL_MAX_RESOURCES, 1), RESPOOL_EINVAL);
    cr_assert_eq(respool_resize(pool, UINT_MAX, 2), RESPOOL_EINVAL);
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    respool_free(pool);
    fake_fini(&f);
}

/* respool_transaction: "RESPOOL_EINVAL for a NULL pool or work". */
static respool_verdict_t never_called(void *resource, void *arg)
{
    atomic_int *calls = arg;
    atomic_fetch_add(calls, 1);
    return RESPOOL_KEEP;
}

Test(api_null, transaction_null)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    atomic_int calls = 0;
    respool_stats_t before = stats_of(pool);
    cr_assert_eq(respool_transaction(NULL, 0, never_called, &calls), RESPOOL_EINVAL);
    cr_assert_eq(respool_transaction(NULL, -1, never_called, &calls), RESPOOL_EINVAL);
    cr_assert_eq(respool_transaction(pool, 0, NULL, &calls), RESPOOL_EINVAL);
    cr_assert_eq(respool_transaction(pool, -1, NULL, NULL), RESPOOL_EINVAL);
    cr_assert_eq(atomic_load(&calls), 0);
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(after.checkouts, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_names: fixed enum values, strerror, state names                       */
/* ------------------------------------------------------------------------ */

/* "The enum values are fixed as listed (ABI)." */
Test(api_names, enum_values_fixed)
{
    cr_assert_eq(RESPOOL_OK, 0);
    cr_assert_eq(RESPOOL_ETIMEDOUT, 1);
    cr_assert_eq(RESPOOL_EFULL, 2);
    cr_assert_eq(RESPOOL_ESHUTDOWN, 3);
    cr_assert_eq(RESPOOL_EINVAL, 4);
    cr_assert_eq(RESPOOL_EFACTORY, 5);
    cr_assert_eq(RESPOOL_ENOMEM, 6);
    cr_assert_eq(RESPOOL_EBUSY, 7);
    cr_assert_eq(RESPOOL_LIFO, 0);
    cr_assert_eq(RESPOOL_FIFO, 1);
    cr_assert_eq(RESPOOL_READY, 0);
    cr_assert_eq(RESPOOL_OVERFLOW, 1);
    cr_assert_eq(RESPOOL_FULL, 2);
    cr_assert_eq(RESPOOL_SHUTDOWN, 3);
    cr_assert_eq(RESPOOL_KEEP, 0);
    cr_assert_eq(RESPOOL_BROKEN, 1);
    cr_assert_eq(RESPOOL_LOG_ERROR, 0);
    cr_assert_eq(RESPOOL_LOG_WARN, 1);
    cr_assert_eq(RESPOOL_LOG_INFO, 2);
}

/* "respool_strerror ... never return[s] NULL": every code has its own
 * non-empty text, distinct from the others. */
Test(api_names, strerror_known_codes)
{
    const char *texts[RESPOOL_EBUSY + 1];
    const char *unknown = "unknown respool error code";
    for (int code = RESPOOL_OK; code <= RESPOOL_EBUSY; code++) {
        texts[code] = respool_strerror(code);
        cr_assert_not_null(texts[code], "strerror(%d) is NULL", code);
        cr_assert_gt(strlen(texts[code]), 0, "strerror(%d) is empty", code);
        cr_assert_str_neq(texts[code], unknown, "strerror(%d) says unknown", code);
        for (int other = RESPOOL_OK; other < code; other++)
            cr_assert_str_neq(texts[code], texts[other], "strerror(%d) == strerror(%d)", code,
                              other);
    }
}

/* "an unknown value gives a text that says so" (header: exactly
 * "unknown respool error code"). */
Test(api_names, strerror_unknown_codes)
{
    const int codes[] = {-1, RESPOOL_EBUSY + 1, 100, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *text = respool_strerror(codes[i]);
        cr_assert_not_null(text, "strerror(%d) is NULL", codes[i]);
        cr_assert_str_eq(text, "unknown respool error code", "strerror(%d)", codes[i]);
    }
}

/* respool_state_name: "ready", "overflow", "full", "shutdown". */
Test(api_names, state_names)
{
    cr_assert_str_eq(respool_state_name(RESPOOL_READY), "ready");
    cr_assert_str_eq(respool_state_name(RESPOOL_OVERFLOW), "overflow");
    cr_assert_str_eq(respool_state_name(RESPOOL_FULL), "full");
    cr_assert_str_eq(respool_state_name(RESPOOL_SHUTDOWN), "shutdown");
}

/* respool_state_name: "never NULL ("unknown" otherwise)". */
Test(api_names, state_name_unknown)
{
    const int states[] = {4, 5, 99, -1};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        const char *name = respool_state_name((respool_state_t)states[i]);
        cr_assert_not_null(name, "state_name(%d) is NULL", states[i]);
        cr_assert_str_eq(name, "unknown", "state_name(%d)", states[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* api_stats                                                                 */
/* ------------------------------------------------------------------------ */

/* Header: respool_stats "Does nothing if pool or out is NULL." */
Test(api_stats, null_arguments)
{
    respool_stats_t s;
    memset(&s, 0x5A, sizeof s);
    respool_stats_t copy = s;
    respool_stats(NULL, &s);
    cr_assert_eq(memcmp(&s, &copy, sizeof s), 0, "respool_stats(NULL, &s) wrote into s");
    respool_stats(NULL, NULL);

    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    respool_stats(pool, NULL);
    cr_assert_eq(stats_of(pool).idle, 1);
    respool_free(pool);
    fake_fini(&f);
}

/* "live means idle + busy; overflow in the stats is max(0, live - size)" and
 * the configuration fields report the current configuration. */
Test(api_stats, fresh_pool_snapshot)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 3, 2);
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.state, RESPOOL_READY);
    cr_assert_eq(s.size, 3);
    cr_assert_eq(s.max_overflow, 2);
    cr_assert_eq(s.idle, 3);
    cr_assert_eq(s.busy, 0);
    cr_assert_eq(s.overflow, 0);
    cr_assert_eq(s.creating, 0);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.created, 3);
    cr_assert_eq(s.destroyed, 0);
    cr_assert_eq(s.checkouts, 0);
    cr_assert_eq(s.timeouts, 0);
    cr_assert_eq(s.create_failures, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_lease: stale, doubled, foreign and forged leases                      */
/* ------------------------------------------------------------------------ */

/* Checkin: "The lease is cleared (lease.resource == NULL)"; respool_destroyed:
 * "The lease is cleared." */
Test(api_lease, checkin_and_destroyed_clear_lease)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    respool_lease_t a = take(pool);
    respool_lease_t b = take(pool);
    fake_unhold(a.resource);
    cr_assert_eq(respool_checkin(pool, &a), RESPOOL_OK);
    cr_assert_null(a.resource);
    fake_unhold(b.resource);
    cr_assert_eq(respool_destroyed(pool, &b), RESPOOL_OK);
    cr_assert_null(b.resource);
    cr_assert(pool_wait_destroyed(pool, 1, 2000));
    cr_assert(pool_wait_idle(pool, 2, 2000), "the destroyed resource is replaced");
    respool_free(pool);
    fake_fini(&f);
}

/* "A call that returns RESPOOL_EINVAL changes nothing, including the lease":
 * a doubled checkin. */
Test(api_lease, double_checkin)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    respool_lease_t lease = take(pool);
    respool_lease_t copy = lease;
    give_back(pool, &lease);

    respool_stats_t before = stats_of(pool);
    respool_lease_t copy0 = copy;
    cr_assert_eq(respool_checkin(pool, &copy), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&copy, &copy0, sizeof copy), 0, "EINVAL checkin changed the lease");
    cr_assert_eq(respool_checkin(pool, &lease), RESPOOL_EINVAL, "cleared lease checked in");
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(after.idle, 2);
    cr_assert_eq(after.busy, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* A stale lease whose resource was handed out again is still rejected (the
 * generation changed), and the new holder's lease keeps working. */
Test(api_lease, stale_after_reissue)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    respool_lease_t first = take(pool);
    respool_lease_t stale = first;
    give_back(pool, &first);
    respool_lease_t second = take(pool);
    cr_assert_eq(second.resource, stale.resource, "size 1: the same resource again");

    respool_stats_t before = stats_of(pool);
    respool_lease_t stale0 = stale;
    cr_assert_eq(respool_checkin(pool, &stale), RESPOOL_EINVAL);
    cr_assert_eq(respool_destroyed(pool, &stale), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&stale, &stale0, sizeof stale), 0);
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(after.busy, 1);
    cr_assert_eq(FAKE_GET(&f, destroyed), 0);

    give_back(pool, &second);
    cr_assert_eq(stats_of(pool).idle, 1);
    respool_free(pool);
    fake_fini(&f);
}

/* EINVAL changes nothing: checkin of a lease already reported destroyed. */
Test(api_lease, checkin_after_destroyed)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    respool_lease_t lease = take(pool);
    respool_lease_t copy = lease;
    fake_unhold(lease.resource);
    cr_assert_eq(respool_destroyed(pool, &lease), RESPOOL_OK);
    cr_assert_null(lease.resource);
    cr_assert(fake_wait_destroyed(&f, 1, 2000));
    cr_assert(pool_wait_destroyed(pool, 1, 2000));
    cr_assert(pool_wait_idle(pool, 2, 2000));

    respool_stats_t before = stats_of(pool);
    respool_lease_t copy0 = copy;
    cr_assert_eq(respool_checkin(pool, &copy), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&copy, &copy0, sizeof copy), 0);
    cr_assert_eq(respool_destroyed(pool, &copy), RESPOOL_EINVAL, "destroyed twice");
    cr_assert_eq(memcmp(&copy, &copy0, sizeof copy), 0);
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(FAKE_GET(&f, destroyed), 1);
    respool_free(pool);
    fake_fini(&f);
}

/* EINVAL changes nothing: destroyed on a lease already checked in (the idle
 * resource is not destroyed). */
Test(api_lease, destroyed_after_checkin)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    respool_lease_t lease = take(pool);
    respool_lease_t copy = lease;
    give_back(pool, &lease);

    respool_stats_t before = stats_of(pool);
    respool_lease_t copy0 = copy;
    cr_assert_eq(respool_destroyed(pool, &copy), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&copy, &copy0, sizeof copy), 0);
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(after.idle, 2);
    cr_assert_eq(FAKE_GET(&f, destroyed), 0);

    /* The resource is still good: both can be checked out. */
    respool_lease_t a = take(pool);
    respool_lease_t b = take(pool);
    give_back(pool, &a);
    give_back(pool, &b);
    respool_free(pool);
    fake_fini(&f);
}

/* "the other members ... let the pool reject a ... foreign lease with
 * RESPOOL_EINVAL": a lease from another pool changes neither pool. */
Test(api_lease, foreign_lease)
{
    fake_factory_t f1, f2;
    fake_init(&f1);
    fake_init(&f2);
    respool_t *p1 = pool_of_size(&f1, 1, 0);
    respool_t *p2 = pool_of_size(&f2, 1, 0);
    respool_lease_t l1 = take(p1);
    respool_lease_t l2 = take(p2); /* same slot/generation shape in p2 */

    respool_stats_t b1 = stats_of(p1), b2 = stats_of(p2);
    respool_lease_t copy = l1;
    cr_assert_eq(respool_checkin(p2, &l1), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&l1, &copy, sizeof l1), 0);
    cr_assert_eq(respool_destroyed(p2, &l1), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&l1, &copy, sizeof l1), 0);
    respool_stats_t a1 = stats_of(p1), a2 = stats_of(p2);
    assert_stats_same(&b1, &a1);
    assert_stats_same(&b2, &a2);
    cr_assert_eq(a2.busy, 1);

    give_back(p1, &l1);
    give_back(p2, &l2);
    respool_free(p1);
    respool_free(p2);
    fake_fini(&f1);
    fake_fini(&f2);
}

/* A zeroed lease (never issued) is rejected and left as is. */
Test(api_lease, zeroed_lease)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    respool_lease_t held = take(pool); /* something is out, slot 0 busy */
    respool_lease_t z;
    memset(&z, 0, sizeof z);
    respool_lease_t z0 = z;
    respool_stats_t before = stats_of(pool);
    cr_assert_eq(respool_checkin(pool, &z), RESPOOL_EINVAL);
    cr_assert_eq(respool_destroyed(pool, &z), RESPOOL_EINVAL);
    cr_assert_eq(memcmp(&z, &z0, sizeof z), 0);
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    give_back(pool, &held);
    respool_free(pool);
    fake_fini(&f);
}

/* A lease whose resource pointer was altered (another live resource, a
 * random address, NULL) no longer matches: EINVAL, nothing changes. */
Test(api_lease, altered_resource_pointer)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    respool_lease_t a = take(pool);
    respool_lease_t b = take(pool);
    int local = 0;
    void *fakes[3] = {b.resource, &local, NULL};

    respool_stats_t before = stats_of(pool);
    for (int i = 0; i < 3; i++) {
        respool_lease_t bad = a;
        bad.resource = fakes[i];
        respool_lease_t bad0 = bad;
        cr_assert_eq(respool_checkin(pool, &bad), RESPOOL_EINVAL, "altered #%d checkin", i);
        cr_assert_eq(memcmp(&bad, &bad0, sizeof bad), 0);
        cr_assert_eq(respool_destroyed(pool, &bad), RESPOOL_EINVAL, "altered #%d destroyed", i);
        cr_assert_eq(memcmp(&bad, &bad0, sizeof bad), 0);
    }
    respool_stats_t after = stats_of(pool);
    assert_stats_same(&before, &after);
    cr_assert_eq(FAKE_GET(&f, destroyed), 0);

    give_back(pool, &a);
    give_back(pool, &b);
    cr_assert_eq(stats_of(pool).idle, 2);
    respool_free(pool);
    fake_fini(&f);
}

/* Header: "On failure lease->resource is NULL (except for EINVAL)":
 * EFULL, ETIMEDOUT, EFACTORY and ESHUTDOWN. */
Test(api_lease, failed_checkout_clears_resource)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    respool_lease_t held = take(pool);

    respool_lease_t l = garbage_lease();
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_EFULL);
    cr_assert_null(l.resource, "EFULL left lease.resource set");
    l = garbage_lease();
    cr_assert_eq(respool_checkout(pool, 5, &l), RESPOOL_ETIMEDOUT);
    cr_assert_null(l.resource, "ETIMEDOUT left lease.resource set");

    give_back(pool, &held);
    cr_assert_eq(respool_shutdown(pool, 1000), RESPOOL_OK);
    l = garbage_lease();
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_ESHUTDOWN);
    cr_assert_null(l.resource, "ESHUTDOWN left lease.resource set");
    respool_free(pool);
    fake_fini(&f);

    /* EFACTORY: room to grow, the one create() made for it fails. */
    fake_init(&f);
    pool = pool_of_size(&f, 0, 1);
    fake_set_fail_next(&f, 1);
    l = garbage_lease();
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_EFACTORY);
    cr_assert_null(l.resource, "EFACTORY left lease.resource set");
    respool_free(pool);
    fake_fini(&f);
}

/* "A lease may be checked in or reported destroyed from any thread." */
typedef struct lease_job {
    respool_t *pool;
    respool_lease_t lease;
    bool destroy;
    int rc;
} lease_job_t;

static void *lease_job_main(void *arg)
{
    lease_job_t *job = arg;
    job->rc = job->destroy ? respool_destroyed(job->pool, &job->lease)
                           : respool_checkin(job->pool, &job->lease);
    return NULL;
}

Test(api_lease, return_from_other_thread)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    lease_job_t in = {pool, take(pool), false, -1};
    lease_job_t out = {pool, take(pool), true, -1};
    fake_unhold(in.lease.resource);
    fake_unhold(out.lease.resource);
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, lease_job_main, &in), 0);
    cr_assert_eq(pthread_create(&t2, NULL, lease_job_main, &out), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_eq(in.rc, RESPOOL_OK);
    cr_assert_eq(out.rc, RESPOOL_OK);
    cr_assert_null(in.lease.resource);
    cr_assert_null(out.lease.resource);
    cr_assert(pool_wait_destroyed(pool, 1, 2000));
    cr_assert(pool_wait_idle(pool, 2, 2000));
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_last_error                                                            */
/* ------------------------------------------------------------------------ */

/* Header: respool_last_error returns "0 when create() has never failed" and
 * the buffer is "always NUL-terminated when buflen > 0". */
Test(api_last_error, never_failed)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 2, 0);
    char buf[32];
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_last_error(pool, buf, sizeof buf), 0);
    cr_assert_eq(buf[0], '\0');
    cr_assert_eq(respool_last_error(pool, NULL, 0), 0);
    respool_free(pool);
    fake_fini(&f);
}

/* Header: create()'s err text is kept: respool_last_error copies the most
 * recent failure text, truncates like snprintf and returns the full length. */
Test(api_last_error, injected_failure_text)
{
    const char *expected = "fake: injected failure #1";
    const size_t len = strlen(expected);
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 0, 1);
    fake_set_fail_next(&f, 1);
    respool_lease_t l;
    cr_assert_eq(respool_checkout(pool, 0, &l), RESPOOL_EFACTORY);
    cr_assert_eq(stats_of(pool).create_failures, 1);

    char buf[64];
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_last_error(pool, buf, sizeof buf), len);
    cr_assert_str_eq(buf, expected);

    /* NULL / 0: only the length. */
    cr_assert_eq(respool_last_error(pool, NULL, 0), len);

    /* Truncation: buflen 5 gives 4 characters and a NUL, nothing beyond. */
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_last_error(pool, buf, 5), len);
    cr_assert_str_eq(buf, "fake");
    for (size_t i = 5; i < sizeof buf; i++)
        cr_assert_eq(buf[i], 'X', "wrote past buflen at %zu", i);

    /* buflen 1: just the NUL. */
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_last_error(pool, buf, 1), len);
    cr_assert_eq(buf[0], '\0');
    cr_assert_eq(buf[1], 'X');

    /* buflen exactly len: all but the last character. */
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_last_error(pool, buf, len), len);
    cr_assert_eq(strlen(buf), len - 1);
    cr_assert_eq(strncmp(buf, expected, len - 1), 0);

    /* buflen 0 with a real buffer: nothing written. */
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_last_error(pool, buf, 0), len);
    cr_assert_eq(buf[0], 'X');

    respool_free(pool);
    fake_fini(&f);
}

/* "most recent create() failure text": after retries, the latest failure,
 * even once create() succeeds again. */
Test(api_last_error, most_recent_failure)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = quiet_config(0, 1);
    cfg.retry_initial_ms = 1;
    cfg.retry_max_ms = 5;
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_OK);
    fake_set_fail_next(&f, 2);
    respool_lease_t l;
    /* "while the factory fails, the manager keeps retrying and the caller
     * keeps waiting" */
    cr_assert_eq(respool_checkout(pool, 5000, &l), RESPOOL_OK);
    cr_assert_eq(FAKE_GET(&f, create_failed), 2);
    char buf[64];
    cr_assert_eq(respool_last_error(pool, buf, sizeof buf), strlen("fake: injected failure #2"));
    cr_assert_str_eq(buf, "fake: injected failure #2");
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_prometheus                                                            */
/* ------------------------------------------------------------------------ */

static char *prometheus_text(respool_t *pool, const char *name)
{
    size_t len = respool_stats_prometheus(pool, name, NULL, 0);
    cr_assert_gt(len, 0);
    char *buf = malloc(len + 1);
    cr_assert_not_null(buf);
    memset(buf, 'X', len + 1);
    size_t written = respool_stats_prometheus(pool, name, buf, len + 1);
    cr_assert_eq(written, len, "length with NULL/0 (%zu) != length written (%zu)", len, written);
    cr_assert_eq(strlen(buf), len, "strlen %zu != returned %zu", strlen(buf), len);
    return buf;
}

/* Header: "each metric named respool_* with the label pool="<name>"",
 * "Returns the full length like snprintf; buf may be NULL when buflen is 0". */
Test(api_prometheus, format_and_length)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 3, 1);
    char *text = prometheus_text(pool, "x");
    cr_assert(has_line(text, "respool_idle{pool=\"x\"} 3"), "no idle line in:\n%s", text);
    cr_assert(has_line(text, "respool_created_total{pool=\"x\"} 3"), "no created line in:\n%s",
              text);
    cr_assert(has_line(text, "# TYPE respool_idle gauge"), "no idle TYPE in:\n%s", text);
    cr_assert(has_line(text, "# TYPE respool_created_total counter"), "no created TYPE in:\n%s",
              text);
    cr_assert_eq(text[strlen(text) - 1], '\n', "text does not end with a newline");
    /* Every non-comment line is a respool_* sample with the pool label. */
    char *copy = strdup(text);
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        cr_assert_eq(strncmp(line, "respool_", 8), 0, "bad metric line: %s", line);
        cr_assert(strstr(line, "{pool=\"x\"} ") || strstr(line, "{pool=\"x\","),
                  "no pool label first: %s", line);
    }
    free(copy);
    free(text);

    /* The numbers follow the pool. */
    respool_lease_t l = take(pool);
    text = prometheus_text(pool, "x");
    cr_assert(has_line(text, "respool_idle{pool=\"x\"} 2"), "after checkout:\n%s", text);
    cr_assert(has_line(text, "respool_created_total{pool=\"x\"} 3"), "after checkout:\n%s", text);
    free(text);
    give_back(pool, &l);
    respool_free(pool);
    fake_fini(&f);
}

/* snprintf-style truncation: NUL-terminated prefix, full length returned,
 * nothing written past buflen. */
Test(api_prometheus, truncation)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 3, 0);
    char *full = prometheus_text(pool, "x");
    size_t len = strlen(full);
    cr_assert_gt(len, 20);

    char buf[32];
    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_stats_prometheus(pool, "x", buf, 10), len);
    cr_assert_eq(buf[9], '\0');
    cr_assert_eq(strncmp(buf, full, 9), 0);
    for (size_t i = 10; i < sizeof buf; i++)
        cr_assert_eq(buf[i], 'X', "wrote past buflen at %zu", i);

    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_stats_prometheus(pool, "x", buf, 1), len);
    cr_assert_eq(buf[0], '\0');
    cr_assert_eq(buf[1], 'X');

    memset(buf, 'X', sizeof buf);
    cr_assert_eq(respool_stats_prometheus(pool, "x", buf, 0), len);
    cr_assert_eq(buf[0], 'X');

    char *exact = malloc(len);
    cr_assert_eq(respool_stats_prometheus(pool, "x", exact, len), len);
    cr_assert_eq(strlen(exact), len - 1);
    cr_assert_eq(strncmp(exact, full, len - 1), 0);
    free(exact);
    free(full);
    respool_free(pool);
    fake_fini(&f);
}

/* "characters other than [A-Za-z0-9_.:-] are replaced with '_'" and
 * "name may be NULL: "default"". */
Test(api_prometheus, label_sanitised)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 3, 0);

    char *text = prometheus_text(pool, "a b\"c");
    cr_assert(has_line(text, "respool_idle{pool=\"a_b_c\"} 3"), "sanitised name:\n%s", text);
    cr_assert_null(strstr(text, "a b"), "raw name leaked:\n%s", text);
    free(text);

    text = prometheus_text(pool, "x\ny\\z{}");
    cr_assert(has_line(text, "respool_idle{pool=\"x_y_z__\"} 3"), "sanitised name:\n%s", text);
    free(text);

    text = prometheus_text(pool, "db-1.main:rw_2");
    cr_assert(has_line(text, "respool_idle{pool=\"db-1.main:rw_2\"} 3"), "allowed chars:\n%s",
              text);
    free(text);

    text = prometheus_text(pool, NULL);
    cr_assert(has_line(text, "respool_idle{pool=\"default\"} 3"), "NULL name:\n%s", text);
    cr_assert(has_line(text, "respool_created_total{pool=\"default\"} 3"), "NULL name:\n%s",
              text);
    free(text);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_transaction                                                           */
/* ------------------------------------------------------------------------ */

typedef struct tx_probe {
    respool_t *pool;
    respool_verdict_t verdict;
    int calls;
    void *resource;
    unsigned id;
    bool same_thread;
    pthread_t caller;
    unsigned busy_inside, idle_inside;
} tx_probe_t;

static respool_verdict_t tx_work(void *resource, void *arg)
{
    tx_probe_t *p = arg;
    p->calls++;
    p->resource = resource;
    p->id = fake_id(resource);
    p->same_thread = pthread_equal(pthread_self(), p->caller) != 0;
    fake_hold(resource);
    respool_stats_t s;
    respool_stats(p->pool, &s);
    p->busy_inside = s.busy;
    p->idle_inside = s.idle;
    fake_unhold(resource);
    return p->verdict;
}

static tx_probe_t tx_probe(respool_t *pool, respool_verdict_t verdict)
{
    tx_probe_t p;
    memset(&p, 0, sizeof p);
    p.pool = pool;
    p.verdict = verdict;
    p.caller = pthread_self();
    return p;
}

/* Header: transaction runs work(resource, arg) on this thread, then checks
 * in (RESPOOL_KEEP): the resource is reused. */
Test(api_transaction, keep_checks_in)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    tx_probe_t p = tx_probe(pool, RESPOOL_KEEP);
    cr_assert_eq(respool_transaction(pool, 0, tx_work, &p), RESPOOL_OK);
    cr_assert_eq(p.calls, 1);
    cr_assert(p.same_thread, "work did not run on the calling thread");
    cr_assert_eq(p.busy_inside, 1);
    cr_assert_eq(p.idle_inside, 0);
    unsigned first = p.id;
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.idle, 1);
    cr_assert_eq(s.busy, 0);
    cr_assert_eq(s.checkouts, 1);
    cr_assert_eq(s.destroyed, 0);

    cr_assert_eq(respool_transaction(pool, -1, tx_work, &p), RESPOOL_OK);
    cr_assert_eq(p.calls, 2);
    cr_assert_eq(p.id, first, "KEEP: the same resource is reused");
    s = stats_of(pool);
    cr_assert_eq(s.created, 1);
    cr_assert_eq(s.checkouts, 2);
    cr_assert_eq(FAKE_GET(&f, destroyed), 0);
    respool_free(pool);
    fake_fini(&f);
}

/* Header: transaction reports the resource destroyed when work returns
 * RESPOOL_BROKEN: it is destroyed and replaced. */
Test(api_transaction, broken_destroys)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    tx_probe_t p = tx_probe(pool, RESPOOL_BROKEN);
    cr_assert_eq(respool_transaction(pool, 0, tx_work, &p), RESPOOL_OK);
    cr_assert_eq(p.calls, 1);
    unsigned first = p.id;
    cr_assert(fake_wait_destroyed(&f, 1, 2000), "broken resource not destroyed");
    cr_assert(pool_wait_destroyed(pool, 1, 2000), "stats.destroyed never reached 1");
    cr_assert(pool_wait_idle(pool, 1, 2000), "broken resource not replaced");
    cr_assert_eq(f.all[first - 1]->destroyed, 1);

    p.verdict = RESPOOL_KEEP;
    cr_assert_eq(respool_transaction(pool, 1000, tx_work, &p), RESPOOL_OK);
    cr_assert_eq(p.calls, 2);
    cr_assert_neq(p.id, first, "a broken resource was given out again");
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.created, 2);
    cr_assert_eq(s.destroyed, 1);
    cr_assert_eq(s.reported_broken, 1);
    cr_assert_eq(s.idle, 1);
    respool_free(pool);
    fake_fini(&f);
}

/* Header: "Returns the checkout's code (work did not run unless it is
 * RESPOOL_OK)": EFULL, ETIMEDOUT, ESHUTDOWN. */
Test(api_transaction, checkout_error_propagated)
{
    fake_factory_t f;
    fake_init(&f);
    respool_t *pool = pool_of_size(&f, 1, 0);
    respool_lease_t held = take(pool);
    tx_probe_t p = tx_probe(pool, RESPOOL_KEEP);
    cr_assert_eq(respool_transaction(pool, 0, tx_work, &p), RESPOOL_EFULL);
    cr_assert_eq(respool_transaction(pool, 20, tx_work, &p), RESPOOL_ETIMEDOUT);
    cr_assert_eq(p.calls, 0, "work ran without a resource");
    respool_stats_t s = stats_of(pool);
    cr_assert_eq(s.timeouts, 2);
    cr_assert_eq(s.busy, 1);
    cr_assert_eq(s.waiting, 0);
    give_back(pool, &held);

    cr_assert_eq(respool_shutdown(pool, 1000), RESPOOL_OK);
    cr_assert_eq(respool_transaction(pool, 0, tx_work, &p), RESPOOL_ESHUTDOWN);
    cr_assert_eq(p.calls, 0);
    respool_free(pool);
    fake_fini(&f);

    /* EFACTORY: the checkout's create() failed. */
    fake_init(&f);
    pool = pool_of_size(&f, 0, 1);
    fake_set_fail_next(&f, 1);
    p = tx_probe(pool, RESPOOL_KEEP);
    cr_assert_eq(respool_transaction(pool, 0, tx_work, &p), RESPOOL_EFACTORY);
    cr_assert_eq(p.calls, 0);
    respool_free(pool);
    fake_fini(&f);
}

/* ------------------------------------------------------------------------ */
/* api_log                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct log_capture {
    pthread_mutex_t lock;
    const char *needle;
    unsigned messages;
    unsigned errors;
    bool null_message;
    bool found_error;  /* an ERROR message containing needle */
    bool found_other;  /* a non-ERROR message containing needle */
    bool bad_ctx;
    char first[256];
} log_capture_t;

static void capture_log(void *ctx, respool_log_level_t level, const char *message)
{
    log_capture_t *c = ctx;
    if (c == NULL || c->needle == NULL) {
        /* wrong log_ctx: remember nothing else, the test checks messages */
        return;
    }
    pthread_mutex_lock(&c->lock);
    c->messages++;
    if (message == NULL) {
        c->null_message = true;
    } else {
        if (c->messages == 1)
            snprintf(c->first, sizeof c->first, "%s", message);
        if (strstr(message, c->needle)) {
            if (level == RESPOOL_LOG_ERROR)
                c->found_error = true;
            else
                c->found_other = true;
        }
    }
    if (level == RESPOOL_LOG_ERROR)
        c->errors++;
    pthread_mutex_unlock(&c->lock);
}

/* Header: create's failure reason "went to config.log", at level ERROR
 * ("factory failures"), with log_ctx passed through. */
Test(api_log, custom_logger_gets_factory_error)
{
    fake_factory_t f;
    fake_init(&f);
    fake_set_fail_next(&f, 1);
    log_capture_t cap;
    memset(&cap, 0, sizeof cap);
    pthread_mutex_init(&cap.lock, NULL);
    cap.needle = "fake: injected failure #1";

    respool_config_t cfg = quiet_config(3, 0);
    cfg.log = capture_log;
    cfg.log_ctx = &cap;
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = not_a_pool();
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_EFACTORY);
    cr_assert_null(pool);

    pthread_mutex_lock(&cap.lock);
    bool found = cap.found_error, null_message = cap.null_message;
    unsigned errors = cap.errors, messages = cap.messages;
    pthread_mutex_unlock(&cap.lock);
    cr_assert_gt(messages, 0, "no message logged");
    cr_assert(!null_message, "a NULL message was logged");
    cr_assert_geq(errors, 1, "no ERROR message");
    cr_assert(found, "no ERROR message mentions the factory's text; first message: %s", cap.first);
    pthread_mutex_destroy(&cap.lock);
    fake_fini(&f);
}

/* Header: "NULL = one line on stderr for ERROR and WARN messages": a config
 * with log = NULL is valid. */
Test(api_log, default_logger_valid)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = {0};
    cfg.size = 2;
    cfg.max_overflow = 1;
    cr_assert_null(cfg.log);
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = NULL;
    cr_assert_eq(respool_create(&pool, &cfg, &fac), RESPOOL_OK);
    respool_lease_t a = take(pool);
    respool_lease_t b = take(pool);
    respool_lease_t c = take(pool);
    give_back(pool, &a);
    give_back(pool, &b);
    give_back(pool, &c);
    respool_free(pool);
    fake_fini(&f);
}

typedef struct stderr_capture {
    int saved_fd;
    FILE *file;
} stderr_capture_t;

static void stderr_capture_start(stderr_capture_t *c)
{
    fflush(stderr);
    c->file = tmpfile();
    cr_assert_not_null(c->file);
    c->saved_fd = dup(STDERR_FILENO);
    cr_assert_geq(c->saved_fd, 0);
    cr_assert_geq(dup2(fileno(c->file), STDERR_FILENO), 0);
}

static void stderr_capture_stop(stderr_capture_t *c, char *buf, size_t buflen)
{
    fflush(stderr);
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    rewind(c->file);
    size_t n = fread(buf, 1, buflen - 1, c->file);
    buf[n] = '\0';
    fclose(c->file);
}

/* "NULL = one line on stderr for ERROR and WARN messages": the factory's
 * failure reaches stderr, as whole lines. */
Test(api_log, default_logger_writes_errors_to_stderr)
{
    fake_factory_t f;
    fake_init(&f);
    fake_set_fail_next(&f, 1);
    respool_config_t cfg = {0};
    cfg.size = 2;
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = not_a_pool();
    stderr_capture_t cap;
    char text[4096];
    stderr_capture_start(&cap);
    int rc = respool_create(&pool, &cfg, &fac);
    stderr_capture_stop(&cap, text, sizeof text);
    cr_assert_eq(rc, RESPOOL_EFACTORY);
    cr_assert_null(pool);
    cr_assert_not_null(strstr(text, "fake: injected failure #1"), "stderr was: \"%s\"", text);
    cr_assert_eq(text[strlen(text) - 1], '\n', "stderr output is not whole lines: \"%s\"", text);
    fake_fini(&f);
}

/* "NULL = ... ERROR and WARN messages" only: a healthy pool's life (create,
 * checkouts, overflow, shutdown, free) writes nothing to stderr. */
Test(api_log, default_logger_silent_when_healthy)
{
    fake_factory_t f;
    fake_init(&f);
    respool_config_t cfg = {0};
    cfg.size = 2;
    cfg.max_overflow = 1;
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = NULL;
    stderr_capture_t cap;
    char text[4096];
    stderr_capture_start(&cap);
    int rc = respool_create(&pool, &cfg, &fac);
    int rc2 = -1;
    if (rc == RESPOOL_OK) {
        respool_lease_t l[3];
        for (int i = 0; i < 3; i++)
            respool_checkout(pool, 0, &l[i]);
        for (int i = 0; i < 3; i++)
            respool_checkin(pool, &l[i]);
        rc2 = respool_shutdown(pool, 1000);
        respool_free(pool);
    }
    stderr_capture_stop(&cap, text, sizeof text);
    cr_assert_eq(rc, RESPOOL_OK);
    cr_assert_eq(rc2, RESPOOL_OK);
    cr_assert_str_eq(text, "", "healthy pool wrote to stderr: \"%s\"", text);
    fake_fini(&f);
}

/* respool_log_discard "discards every message": callable directly, and a
 * failing pool with it writes nothing to stderr. */
Test(api_log, discard_is_silent)
{
    respool_log_discard(NULL, RESPOOL_LOG_ERROR, "x");
    respool_log_discard(NULL, RESPOOL_LOG_INFO, NULL);

    fake_factory_t f;
    fake_init(&f);
    fake_set_fail_next(&f, 1);
    respool_config_t cfg = quiet_config(2, 0);
    respool_factory_t fac = fake_factory(&f);
    respool_t *pool = not_a_pool();
    stderr_capture_t cap;
    char text[4096];
    stderr_capture_start(&cap);
    int rc = respool_create(&pool, &cfg, &fac);
    stderr_capture_stop(&cap, text, sizeof text);
    cr_assert_eq(rc, RESPOOL_EFACTORY);
    cr_assert_str_eq(text, "", "respool_log_discard pool wrote to stderr: \"%s\"", text);
    fake_fini(&f);
}
