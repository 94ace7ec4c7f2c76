/*
 * test_pg.c — the PostgreSQL adapter (src/respool_pg.c) against a real server.
 *
 * The server's conninfo comes from RESPOOL_PG_URL (unix socket form
 * "host=<dir> port=N dbname=respool user=respool"); when it is unset the
 * tests run `scripts/pg-sandbox start` (from the repository root) and use
 * its output. TCP tests use host=127.0.0.1 and the same port
 * (RESPOOL_PG_TCP_URL overrides), where role respool has a password.
 *
 * Build by hand (from the repository root):
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Werror -Iinclude \
 *      -I/usr/include/postgresql tests/pg/test_pg.c src/respool_pg.c \
 *      build/librespool.a -lpq -lcriterion -pthread
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "respool.h"
#include "respool_pg.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static char g_url[1024];
static char g_tcp[1024];

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *pg_url(void)
{
    if (g_url[0])
        return g_url;
    const char *env = getenv("RESPOOL_PG_URL");
    if (env && *env) {
        snprintf(g_url, sizeof g_url, "%s", env);
    } else {
        FILE *p = popen("scripts/pg-sandbox start", "r");
        cr_assert_not_null(p, "popen scripts/pg-sandbox start");
        char line[1024] = "";
        char *got = fgets(line, sizeof line, p);
        int status = pclose(p);
        cr_assert(got && status == 0, "scripts/pg-sandbox start failed (status %d)", status);
        line[strcspn(line, "\r\n")] = '\0';
        snprintf(g_url, sizeof g_url, "%s", line);
    }
    return g_url;
}

/* The port of the sandbox, from its conninfo. */
static const char *pg_port(void)
{
    static char port[32];
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(pg_url(), &perr);
    cr_assert_not_null(opts, "parse %s: %s", pg_url(), perr ? perr : "?");
    snprintf(port, sizeof port, "5432");
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "port") == 0 && o->val)
            snprintf(port, sizeof port, "%s", o->val);
    PQconninfoFree(opts);
    return port;
}

static const char *pg_tcp_url(void)
{
    if (g_tcp[0])
        return g_tcp;
    const char *env = getenv("RESPOOL_PG_TCP_URL");
    if (env && *env)
        snprintf(g_tcp, sizeof g_tcp, "%s", env);
    else
        snprintf(g_tcp, sizeof g_tcp, "host=127.0.0.1 port=%s dbname=respool user=respool",
                 pg_port());
    return g_tcp;
}

/* A conninfo: the sandbox's plus extra "key=value" settings. */
static const char *url_with(char *buf, size_t len, const char *extra)
{
    snprintf(buf, len, "%s %s", pg_url(), extra);
    return buf;
}

/* Collected log messages of a pool. */
typedef struct {
    pthread_mutex_t lock;
    char text[8192];
    size_t len;
    int count;
} logbuf_t;

static void log_capture(void *ctx, respool_log_level_t level, const char *message)
{
    logbuf_t *l = ctx;
    pthread_mutex_lock(&l->lock);
    int n = snprintf(l->text + l->len, sizeof l->text - l->len, "[%d] %s\n", (int)level, message);
    if (n > 0 && l->len + (size_t)n < sizeof l->text)
        l->len += (size_t)n;
    l->count++;
    pthread_mutex_unlock(&l->lock);
}

static respool_config_t quiet_cfg(unsigned size, unsigned max_overflow)
{
    respool_config_t c;
    memset(&c, 0, sizeof c);
    c.size = size;
    c.max_overflow = max_overflow;
    c.log = respool_log_discard;
    return c;
}

static respool_t *make_pool(const char *conninfo, unsigned size, unsigned max_overflow,
                            const respool_pg_options_t *opt)
{
    respool_config_t cfg = quiet_cfg(size, max_overflow);
    respool_t *pool = NULL;
    char err[512];
    int rc = respool_pg_pool_create(&pool, conninfo, &cfg, opt, err, sizeof err);
    cr_assert_eq(rc, RESPOOL_OK, "respool_pg_pool_create: %s: %s", respool_strerror(rc), err);
    cr_assert_not_null(pool);
    return pool;
}

static respool_stats_t stats_of(respool_t *pool)
{
    respool_stats_t s;
    memset(&s, 0, sizeof s);
    respool_stats(pool, &s);
    return s;
}

static PGconn *checkout(respool_t *pool, respool_lease_t *lease)
{
    int rc = respool_checkout(pool, 5000, lease);
    cr_assert_eq(rc, RESPOOL_OK, "checkout: %s", respool_strerror(rc));
    PGconn *c = respool_pg_conn(lease);
    cr_assert_not_null(c);
    return c;
}

/* Run sql, expect success; returns the first value of the first row as a
 * malloc'd string (or NULL when there is none). */
static char *query1(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    cr_assert(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s", sql,
              PQerrorMessage(c));
    char *v = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void exec_ok(PGconn *c, const char *sql)
{
    free(query1(c, sql));
}

static void shutdown_and_check_balanced(respool_t *pool)
{
    int rc = respool_shutdown(pool, 10000);
    cr_assert_eq(rc, RESPOOL_OK, "shutdown: %s", respool_strerror(rc));
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.created, s.destroyed, "created %llu destroyed %llu",
                 (unsigned long long)s.created, (unsigned long long)s.destroyed);
    respool_pg_pool_free(pool);
}

/* A plain connection outside any pool. */
static PGconn *side_conn(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    cr_assert(PQstatus(c) == CONNECTION_OK, "side connection: %s", PQerrorMessage(c));
    return c;
}

/* A TCP port on 127.0.0.1 where nothing listens (bound, then closed). */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------------ */
/* Many threads                                                              */
/* ------------------------------------------------------------------------ */

#define THREADS 8
#define ROUNDS 40

static atomic_int g_ok;

static bool add_one(PGconn *c, void *arg)
{
    int n = *(int *)arg;
    char num[32];
    snprintf(num, sizeof num, "%d", n);
    const char *params[1] = {num};
    PGresult *r = PQexecParams(c, "SELECT $1::int + 1", 1, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == n + 1;
    PQclear(r);
    return ok;
}

static void *worker(void *arg)
{
    respool_t *pool = arg;
    for (int i = 0; i < ROUNDS; i++) {
        int rc = respool_pg_run(pool, 10000, add_one, &i);
        if (rc == RESPOOL_OK)
            atomic_fetch_add(&g_ok, 1);
    }
    return NULL;
}

Test(pg, many_threads, .timeout = 60)
{
    respool_t *pool = make_pool(pg_url(), 3, 2, NULL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker, pool), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(atomic_load(&g_ok), THREADS * ROUNDS);
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.busy, 0);
    cr_expect_eq(s.checkouts, (uint64_t)THREADS * ROUNDS);
    cr_expect_eq(s.reset_failures, 0);
    cr_expect_eq(s.validate_failures, 0);
    shutdown_and_check_balanced(pool);
}

/* ------------------------------------------------------------------------ */
/* Terminated backends are caught by validate and replaced                    */
/* ------------------------------------------------------------------------ */

Test(pg, terminated_backends_replaced, .timeout = 60)
{
    enum { N = 3 };
    char url[1200];
    respool_pg_options_t opt = {0};
    opt.validate_idle_ms = RESPOOL_PG_VALIDATE_ALWAYS;
    respool_t *pool = make_pool(url_with(url, sizeof url, "application_name=respool_pg_term"),
                                N, 0, &opt);

    respool_lease_t l[N];
    int pids[N];
    for (int i = 0; i < N; i++)
        pids[i] = PQbackendPID(checkout(pool, &l[i]));
    for (int i = 0; i < N; i++)
        cr_assert_eq(respool_checkin(pool, &l[i]), RESPOOL_OK);

    /* Terminate them from outside, and wait until they are gone. */
    PGconn *side = side_conn(pg_url());
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT pg_terminate_backend(p) FROM unnest("
             "ARRAY[%d,%d,%d]) AS p) x",
             pids[0], pids[1], pids[2]);
    exec_ok(side, sql);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE pid IN (%d,%d,%d)", pids[0],
             pids[1], pids[2]);
    int64_t deadline = mono_ms() + 10000;
    for (;;) {
        char *v = query1(side, sql);
        bool gone = strcmp(v, "0") == 0;
        free(v);
        if (gone)
            break;
        cr_assert(mono_ms() < deadline, "backends still alive after 10 s");
        exec_ok(side, "SELECT pg_sleep(0.01)"); /* polling a condition, bounded */
    }
    PQfinish(side);

    /* Every checkout now gets a working, new connection. */
    for (int i = 0; i < N; i++) {
        PGconn *c = checkout(pool, &l[i]);
        char *v = query1(c, "SELECT 1");
        cr_expect_str_eq(v, "1");
        free(v);
        int pid = PQbackendPID(c);
        cr_expect(pid != pids[0] && pid != pids[1] && pid != pids[2], "old backend %d", pid);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(respool_checkin(pool, &l[i]), RESPOOL_OK);

    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.validate_failures, N, "validate_failures %llu",
                 (unsigned long long)s.validate_failures);
    cr_expect_eq(s.created, 2 * N, "created %llu", (unsigned long long)s.created);
    cr_expect_eq(s.idle, N);
    shutdown_and_check_balanced(pool);
}

/* ------------------------------------------------------------------------ */
/* Transactions left open are rolled back on checkin                          */
/* ------------------------------------------------------------------------ */

Test(pg, uncommitted_rolled_back, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    char table[64], sql[256];
    snprintf(table, sizeof table, "respool_pg_t%d", (int)getpid());

    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (x int)", table, table);
    exec_ok(c, sql);
    exec_ok(c, "BEGIN");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", table);
    exec_ok(c, sql);
    cr_assert_eq(PQtransactionStatus(c), PQTRANS_INTRANS);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    c = checkout(pool, &l);
    cr_expect_eq(PQbackendPID(c), pid, "the same connection is reused");
    cr_expect_eq(PQtransactionStatus(c), PQTRANS_IDLE);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    char *v = query1(c, sql);
    cr_expect_str_eq(v, "0", "the uncommitted row is not visible");
    free(v);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    exec_ok(c, sql);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_expect_eq(stats_of(pool).reset_failures, 0);
    shutdown_and_check_balanced(pool);
}

Test(pg, failed_transaction_rolled_back, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    exec_ok(c, "BEGIN");
    PGresult *r = PQexec(c, "SELECT 1/0");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    cr_assert_eq(PQtransactionStatus(c), PQTRANS_INERROR);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    c = checkout(pool, &l);
    cr_expect_eq(PQbackendPID(c), pid);
    cr_expect_eq(PQtransactionStatus(c), PQTRANS_IDLE);
    char *v = query1(c, "SELECT 41 + 1");
    cr_expect_str_eq(v, "42");
    free(v);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_expect_eq(stats_of(pool).reset_failures, 0);
    shutdown_and_check_balanced(pool);
}

/* A command still in progress (results not read) cannot be cleaned: the
 * connection is destroyed and replaced. */
Test(pg, active_command_destroyed, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    cr_assert(PQsendQuery(c, "SELECT 1"));
    cr_assert_eq(PQtransactionStatus(c), PQTRANS_ACTIVE);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    c = checkout(pool, &l);
    cr_expect_neq(PQbackendPID(c), pid, "a new connection");
    cr_expect_eq(PQtransactionStatus(c), PQTRANS_IDLE);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_expect_eq(stats_of(pool).reset_failures, 1);
    shutdown_and_check_balanced(pool);
}

/* ------------------------------------------------------------------------ */
/* reset_query                                                               */
/* ------------------------------------------------------------------------ */

/* Make role respool_sub (granted to respool) through the unix socket as the
 * superuser; false if that is not possible (e.g. a foreign server). */
static bool make_sub_role(void)
{
    char url[1200];
    PGconn *c = PQconnectdb(url_with(url, sizeof url, "user=postgres"));
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE "
                                "rolname = 'respool_sub') THEN CREATE ROLE respool_sub; "
                                "END IF; END$$; GRANT respool_sub TO respool");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

Test(pg, discard_all_cleans_session, .timeout = 30)
{
    bool have_role = make_sub_role();
    respool_pg_options_t opt = {0};
    opt.reset_query = "DISCARD ALL";
    respool_t *pool = make_pool(pg_url(), 1, 0, &opt);

    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    char *orig_path = query1(c, "SHOW search_path");
    exec_ok(c, "SET search_path TO pg_catalog");
    exec_ok(c, "CREATE TEMP TABLE respool_tmp (x int)");
    exec_ok(c, "PREPARE respool_stmt AS SELECT 1");
    if (have_role)
        exec_ok(c, "SET ROLE respool_sub");
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    c = checkout(pool, &l);
    cr_expect_eq(PQbackendPID(c), pid, "the same connection is reused");
    char *v = query1(c, "SHOW search_path");
    cr_expect_str_eq(v, orig_path);
    free(v);
    v = query1(c, "SELECT to_regclass('pg_temp.respool_tmp') IS NULL");
    cr_expect_str_eq(v, "t", "temp table gone");
    free(v);
    v = query1(c, "SELECT count(*) FROM pg_prepared_statements");
    cr_expect_str_eq(v, "0", "prepared statement gone");
    free(v);
    v = query1(c, "SELECT current_user");
    cr_expect_str_eq(v, "respool", "role reset");
    free(v);
    /* the prepared statement's name is free again */
    exec_ok(c, "PREPARE respool_stmt AS SELECT 2");
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    free(orig_path);
    cr_expect_eq(stats_of(pool).reset_failures, 0);
    if (!have_role)
        cr_log_warn("role respool_sub could not be made: SET ROLE part not checked");
    shutdown_and_check_balanced(pool);
}

/* A reset_query that fails destroys the connection (here: DISCARD ALL in a
 * multi-statement string, which PostgreSQL refuses). */
Test(pg, failing_reset_query_destroys, .timeout = 30)
{
    respool_pg_options_t opt = {0};
    opt.reset_query = "DISCARD ALL; RESET ROLE";
    respool_t *pool = make_pool(pg_url(), 1, 0, &opt);
    respool_lease_t l;
    int pid = PQbackendPID(checkout(pool, &l));
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    PGconn *c = checkout(pool, &l);
    cr_expect_neq(PQbackendPID(c), pid);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_expect_eq(stats_of(pool).reset_failures, 2);
    shutdown_and_check_balanced(pool);
}

/* ------------------------------------------------------------------------ */
/* respool_pg_run with a connection that breaks                               */
/* ------------------------------------------------------------------------ */

static bool kill_self(PGconn *c, void *arg)
{
    PGresult *r = PQexec(c, "SELECT pg_terminate_backend(pg_backend_pid())");
    PQclear(r);
    return false;
}

Test(pg, run_broken_reported_destroyed, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    cr_expect_eq(respool_pg_run(pool, 5000, kill_self, NULL), RESPOOL_PG_EWORK);
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.reported_broken, 1);
    cr_expect_eq(s.reset_failures, 0);
    cr_expect_eq(respool_pg_run(pool, 5000, add_one, &(int){1}), RESPOOL_OK);
    shutdown_and_check_balanced(pool);
}

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

    respool_pg_options_t bad = {0};
    bad.connect_timeout_ms = -5;
    rc = respool_pg_factory_init(&f, pg_url(), &bad, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL);
}

/* A server that accepts TCP connections (the kernel completes the handshake
 * into the backlog) and never answers: create fails at the deadline. */
Test(pg, black_hole_times_out, .timeout = 30)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s, 16), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);

    char url[256], err[1024] = "";
    snprintf(url, sizeof url, "host=127.0.0.1 port=%d dbname=respool user=respool "
                              "password=" SECRET, ntohs(a.sin_port));
    respool_pg_options_t opt = {0};
    opt.connect_timeout_ms = 300;
    respool_config_t cfg = quiet_cfg(1, 0);
    respool_t *pool = NULL;
    int64_t t0 = mono_ms();
    int rc = respool_pg_pool_create(&pool, url, &cfg, &opt, err, sizeof err);
    int64_t took = mono_ms() - t0;
    close(s);
    cr_expect_eq(rc, RESPOOL_EFACTORY, "rc %s", respool_strerror(rc));
    cr_expect_null(pool);
    cr_expect_geq(took, 300, "took %lld ms", (long long)took);
    cr_expect_lt(took, 300 + 700, "took %lld ms", (long long)took);
    cr_expect(strstr(err, "timed out") != NULL, "err: %s", err);
    expect_no_secret("err", err);
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
}
