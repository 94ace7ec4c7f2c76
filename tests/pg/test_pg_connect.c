/*
 * test_pg_connect.c — create() against servers that refuse or never
 * answer, and conninfo that does not parse: a clear error within the
 * connect timeout and never a password in any message.
 */
#include "pg_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Connect failures                                                          */
/* ------------------------------------------------------------------------ */

#define SECRET "wr0ng-Secret-XyZ"

static void expect_no_secret(const char *what, const char *text)
{
    cr_expect(strstr(text, SECRET) == NULL, "%s shows the password: %s", what, text);
}

static void wrong_password_case(const char *conninfo)
{
    logbuf_t log;
    memset(&log, 0, sizeof log);
    pthread_mutex_init(&log.lock, NULL);
    respool_pg_options_t opt = {0};
    opt.connect_timeout_ms = 3000;

    /* Prefill fails: respool_pg_pool_create reports it. */
    respool_config_t cfg = quiet_cfg(1, 0);
    cfg.log = log_capture;
    cfg.log_ctx = &log;
    respool_t *pool = NULL;
    char err[1024] = "";
    int64_t t0 = mono_ms();
    int rc = respool_pg_pool_create(&pool, conninfo, &cfg, &opt, err, sizeof err);
    int64_t took = mono_ms() - t0;
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s", respool_strerror(rc));
    cr_expect_null(pool);
    cr_expect_lt(took, 3000 + 500, "took %lld ms", (long long)took);
    cr_expect(strstr(err, "password authentication failed") != NULL, "err: %s", err);
    expect_no_secret("err", err);

    /* Lazily: a pool with nothing prefilled, a checkout that fails. */
    cfg.size = 0;
    cfg.max_overflow = 1;
    rc = respool_pg_pool_create(&pool, conninfo, &cfg, &opt, err, sizeof err);
    cr_assert_eq(rc, RESPOOL_OK, "%s", err);
    respool_lease_t l;
    rc = respool_checkout(pool, 0, &l);
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s", respool_strerror(rc));
    char last[1024];
    size_t n = respool_last_error(pool, last, sizeof last);
    cr_expect_gt(n, 0);
    cr_expect(strstr(last, "password authentication failed") != NULL, "last: %s", last);
    expect_no_secret("respool_last_error", last);
    /* the adapter's own record of it, through the pool's factory */
    char adapter_last[1024];
    respool_pg_factory_t *factory = respool_pg_pool_factory(pool);
    cr_expect_not_null(factory);
    cr_expect_gt(respool_pg_last_error(factory, adapter_last, sizeof adapter_last), 0);
    cr_expect_str_eq(adapter_last, last);
    cr_expect_null(respool_pg_pool_factory(NULL));
    respool_pg_pool_free(pool);

    pthread_mutex_lock(&log.lock);
    cr_expect_gt(log.count, 0, "the core logged the failure");
    expect_no_secret("log", log.text);
    pthread_mutex_unlock(&log.lock);
    pthread_mutex_destroy(&log.lock);
}

Test(pg, wrong_password, .timeout = 30)
{
    char url[1200];
    snprintf(url, sizeof url, "%s password=" SECRET, pg_tcp_url());
    wrong_password_case(url);
}

Test(pg, wrong_password_uri, .timeout = 30)
{
    char url[1200];
    snprintf(url, sizeof url, "postgresql://respool:" SECRET "@127.0.0.1:%s/respool",
             pg_port());
    wrong_password_case(url);
}

Test(pg, right_password_tcp, .timeout = 30)
{
    char url[1200];
    snprintf(url, sizeof url, "%s password=respool-test-pw", pg_tcp_url());
    respool_t *pool = make_pool(url, 1, 0, NULL);
    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    char *v = query1(c, "SELECT 1");
    cr_expect_str_eq(v, "1");
    free(v);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    shutdown_and_check_balanced(pool);
}

/* Over the unix socket (trust: the password is not asked for, but it is in
 * the conninfo and must not appear in the error). */
Test(pg, unknown_database, .timeout = 30)
{
    char url[1200], err[1024] = "";
    snprintf(url, sizeof url, "%s dbname=respool_no_such_db password=" SECRET, pg_url());
    respool_config_t cfg = quiet_cfg(1, 0);
    respool_t *pool = NULL;
    int64_t t0 = mono_ms();
    int rc = respool_pg_pool_create(&pool, url, &cfg, NULL, err, sizeof err);
    int64_t took = mono_ms() - t0;
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s", respool_strerror(rc));
    cr_expect_null(pool);
    cr_expect_lt(took, 5000, "took %lld ms", (long long)took);
    cr_expect(strstr(err, "database \"respool_no_such_db\" does not exist") != NULL,
              "err: %s", err);
    expect_no_secret("err", err);
}

Test(pg, nothing_listening, .timeout = 30)
{
    char url[256], err[1024] = "";
    snprintf(url, sizeof url, "host=127.0.0.1 port=%d dbname=respool user=respool "
                              "password=" SECRET, closed_port());
    respool_pg_options_t opt = {0};
    opt.connect_timeout_ms = 5000;
    respool_config_t cfg = quiet_cfg(1, 0);
    respool_t *pool = NULL;
    int64_t t0 = mono_ms();
    int rc = respool_pg_pool_create(&pool, url, &cfg, &opt, err, sizeof err);
    int64_t took = mono_ms() - t0;
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s", respool_strerror(rc));
    cr_expect_null(pool);
    cr_expect_lt(took, 1000, "took %lld ms", (long long)took);
    cr_expect(strstr(err, "refused") != NULL, "err: %s", err);
    cr_expect(strchr(err, '\n') == NULL, "one line: %s", err);
    expect_no_secret("err", err);
}

Test(pg, malformed_conninfo, .timeout = 30)
{
    char err[1024] = "";
    respool_pg_factory_t *f = (respool_pg_factory_t *)(void *)err; /* not NULL */
    int rc = respool_pg_factory_init(&f, "host=localhost port", NULL, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
    cr_expect_null(f);
    cr_expect(strstr(err, "missing \"=\" after \"port\"") != NULL, "err: %s", err);

    /* libpq echoes the whole URI here: the password must not come through. */
    rc = respool_pg_factory_init(&f, "postgresql://u:" SECRET "@[::1/db", NULL, err,
                                 sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
    cr_expect(strstr(err, "IPv6") != NULL, "err: %s", err);
    expect_no_secret("err (URI)", err);

    /* A bad percent-escape in the password: libpq quotes the token. */
    rc = respool_pg_factory_init(&f, "postgresql://u:" SECRET "%zz@localhost/db", NULL, err,
                                 sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
    cr_expect(strstr(err, "percent") != NULL, "err: %s", err);
    expect_no_secret("err (percent)", err);

    rc = respool_pg_factory_init(&f, "password=" SECRET " host='unterminated", NULL, err,
                                 sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
    cr_expect(strstr(err, "unterminated") != NULL, "err: %s", err);
    expect_no_secret("err (keyword)", err);

    respool_t *pool = (respool_t *)(void *)err;
    rc = respool_pg_pool_create(&pool, "host=localhost port", NULL, NULL, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
    cr_expect_null(pool);

    /* libpq's URI parser reads the user info differently from a naive
     * scan ('?', '#', spaces, quotes and '/' in the password; encoded
     * query keys; bad escapes): no form may show the password. */
    static const char *const tricky[] = {
        "postgresql://app:" SECRET "?9z#Q@[::1/appdb",
        "postgres://u:ab " SECRET "@[::1]x/db",
        "postgres://u:ab\"" SECRET "@[::1]x/db",
        "postgres://u:" SECRET "?b%ZZ@h/db",
        "postgres://h/db?pass%77ord=" SECRET "%ZZ",
        "password='" SECRET " x\\' host='unterminated",
    };
    for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++) {
        rc = respool_pg_factory_init(&f, tricky[i], NULL, err, sizeof err);
        cr_expect_eq(rc, RESPOOL_EINVAL, "%zu: rc %d", i, rc);
        expect_no_secret("err (tricky URI)", err);
    }

    /* An unencoded '/' in a URI password: libpq parses the part before it
     * as host:port and quotes it when the port is refused. */
    respool_config_t cfg = quiet_cfg(1, 0);
    rc = respool_pg_pool_create(&pool, "postgresql://respool:" SECRET "/Zx4@127.0.0.1/respool",
                                &cfg, NULL, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s: %s", respool_strerror(rc), err);
    expect_no_secret("err (slash)", err);

    respool_pg_options_t bad = {0};
    bad.connect_timeout_ms = -5;
    rc = respool_pg_factory_init(&f, pg_url(), &bad, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
}

/* A server that accepts TCP connections (the kernel completes the handshake
 * into the backlog) and never answers: create fails at the deadline. */

/* Create against a black hole: fails at the deadline (expected_ms), with
 * a one-line message that says so and shows no password. */
static void expect_black_hole_timeout(const char *extra, const respool_pg_options_t *opt,
                                      int64_t expected_ms)
{
    int port;
    int s = black_hole(&port);
    char url[256], err[1024] = "";
    snprintf(url, sizeof url, "host=127.0.0.1 port=%d dbname=respool user=respool "
                              "password=" SECRET " %s", port, extra);
    respool_config_t cfg = quiet_cfg(1, 0);
    respool_t *pool = NULL;
    int64_t t0 = mono_ms();
    int rc = respool_pg_pool_create(&pool, url, &cfg, opt, err, sizeof err);
    int64_t took = mono_ms() - t0;
    close(s);
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s", respool_strerror(rc));
    cr_expect_null(pool);
    cr_expect_geq(took, expected_ms, "took %lld ms", (long long)took);
    cr_expect_lt(took, expected_ms + 700, "took %lld ms", (long long)took);
    cr_expect(strstr(err, "timed out") != NULL, "err: %s", err);
    cr_expect(strchr(err, '\n') == NULL, "one line: %s", err);
    cr_expect(strstr(err, "earlier") == NULL, "no dangling fragment: %s", err);
    expect_no_secret("err", err);
}

Test(pg, black_hole_times_out, .timeout = 30)
{
    respool_pg_options_t opt = {0};
    opt.connect_timeout_ms = 300;
    expect_black_hole_timeout("", &opt, 300);
}

/* Without the option, libpq's connect_timeout key (seconds) sets it. */
Test(pg, conninfo_connect_timeout_honoured, .timeout = 30)
{
    expect_black_hole_timeout("connect_timeout=2", NULL, 2000);
}

/* ------------------------------------------------------------------------ */
/* Scrubbing (no server needed)                                              */
/* ------------------------------------------------------------------------ */

Test(pg, scrub)
{
    char out[512];
    respool_pg_scrub(NULL, "a password=abc b", out, sizeof out);
    cr_expect_str_eq(out, "a password=*** b");
    respool_pg_scrub(NULL, "PASSWORD = 'x y\\' z' c", out, sizeof out);
    cr_expect_str_eq(out, "PASSWORD = *** c");
    respool_pg_scrub(NULL, "\"postgresql://me:pw@host:5/db\"", out, sizeof out);
    cr_expect_str_eq(out, "\"postgresql://me:***@host:5/db\"");
    respool_pg_scrub(NULL, "postgres://host/db?password=pw&x=1", out, sizeof out);
    cr_expect_str_eq(out, "postgres://host/db?password=***&x=1");
    respool_pg_scrub(NULL, "postgresql://me@host:5432/db", out, sizeof out);
    cr_expect_str_eq(out, "postgresql://me@host:5432/db");
    respool_pg_scrub(NULL, "no secrets", out, 4);
    cr_expect_str_eq(out, "no ");

    respool_pg_factory_t *f = NULL;
    char err[256];
    cr_assert_eq(respool_pg_factory_init(&f, "host=h password=" SECRET, NULL, err, sizeof err),
                 RESPOOL_OK, "%s", err);
    respool_pg_scrub(f, "token \"" SECRET "\" echoed", out, sizeof out);
    cr_expect_str_eq(out, "token \"***\" echoed");
    respool_pg_factory_free(f);

    /* Values libpq ends only at whitespace; a secret that is a prefix of
     * another; scrubbing in place. */
    cr_assert_eq(respool_pg_factory_init(&f, "host=x password=ab'cd&ef password=ab", NULL, err,
                                         sizeof err),
                 RESPOOL_OK, "%s", err);
    respool_pg_scrub(f, "host=x password=ab'cd&ef", out, sizeof out);
    cr_expect_str_eq(out, "host=x password=***");
    respool_pg_scrub(f, "sent ab'cd&ef", out, sizeof out);
    cr_expect_str_eq(out, "sent ***");
    respool_pg_factory_free(f);
    respool_pg_scrub(NULL, "password=abc\\ def x", out, sizeof out);
    cr_expect_str_eq(out, "password=*** x");
    char inplace[64] = "host=h password=a user=bob";
    respool_pg_scrub(NULL, inplace, inplace, sizeof inplace);
    cr_expect_str_eq(inplace, "host=h password=*** user=bob");
}
