/*
 * pg_support.c — shared helpers of the PostgreSQL adapter tests (tests/pg):
 * where the server is, pools with quiet logs, and one-line query helpers
 * that fail the calling test on error. See pg_support.h.
 */
#include "pg_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char g_url[1024];
static char g_tcp[1024];

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *pg_url(void)
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
const char *pg_port(void)
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

const char *pg_tcp_url(void)
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
const char *url_with(char *buf, size_t len, const char *extra)
{
    snprintf(buf, len, "%s %s", pg_url(), extra);
    return buf;
}


void log_capture(void *ctx, respool_log_level_t level, const char *message)
{
    logbuf_t *l = ctx;
    pthread_mutex_lock(&l->lock);
    int n = snprintf(l->text + l->len, sizeof l->text - l->len, "[%d] %s\n", (int)level, message);
    if (n > 0 && l->len + (size_t)n < sizeof l->text)
        l->len += (size_t)n;
    l->count++;
    pthread_mutex_unlock(&l->lock);
}

respool_config_t quiet_cfg(unsigned size, unsigned max_overflow)
{
    respool_config_t c;
    memset(&c, 0, sizeof c);
    c.size = size;
    c.max_overflow = max_overflow;
    c.log = respool_log_discard;
    return c;
}

respool_t *make_pool(const char *conninfo, unsigned size, unsigned max_overflow,
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

respool_stats_t stats_of(respool_t *pool)
{
    respool_stats_t s;
    memset(&s, 0, sizeof s);
    respool_stats(pool, &s);
    return s;
}

PGconn *checkout(respool_t *pool, respool_lease_t *lease)
{
    int rc = respool_checkout(pool, 5000, lease);
    cr_assert_eq(rc, RESPOOL_OK, "checkout: %s", respool_strerror(rc));
    PGconn *c = respool_pg_conn(lease);
    cr_assert_not_null(c);
    return c;
}

/* Run sql, expect success; returns the first value of the first row as a
 * malloc'd string (or NULL when there is none). */
char *query1(PGconn *c, const char *sql)
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

void exec_ok(PGconn *c, const char *sql)
{
    free(query1(c, sql));
}

void shutdown_and_check_balanced(respool_t *pool)
{
    int rc = respool_shutdown(pool, 10000);
    cr_assert_eq(rc, RESPOOL_OK, "shutdown: %s", respool_strerror(rc));
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.created, s.destroyed, "created %llu destroyed %llu",
                 (unsigned long long)s.created, (unsigned long long)s.destroyed);
    respool_pg_pool_free(pool);
}

/* A plain connection outside any pool. */
PGconn *side_conn(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    cr_assert(PQstatus(c) == CONNECTION_OK, "side connection: %s", PQerrorMessage(c));
    return c;
}

/* A TCP socket bound to a free port on 127.0.0.1; *port is that port. */
static int loopback_socket(int *port)
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
    *port = ntohs(a.sin_port);
    return s;
}

int closed_port(void)
{
    int port;
    close(loopback_socket(&port));
    return port;
}

int black_hole(int *port)
{
    int s = loopback_socket(port);
    cr_assert_eq(listen(s, 16), 0);
    return s;
}

void terminate_backends(const int *pids, int n)
{
    char list[512] = "";
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof list - 16; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", i ? "," : "", pids[i]);
    PGconn *side = side_conn(pg_url());
    char sql[700];
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(p)) FROM unnest(ARRAY[%s]) AS p", list);
    exec_ok(side, sql);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid IN (%s)", list);
    int64_t deadline = mono_ms() + 10000;
    for (;;) {
        char *v = query1(side, sql);
        bool gone = strcmp(v, "0") == 0;
        free(v);
        if (gone)
            break;
        cr_assert(mono_ms() < deadline, "backends %s still alive after 10 s", list);
        exec_ok(side, "SELECT pg_sleep(0.01)"); /* polling a condition, bounded */
    }
    PQfinish(side);
}

bool pg_is_sandbox(void)
{
    FILE *p = popen("scripts/pg-sandbox url 2>/dev/null", "r");
    if (!p)
        return false;
    char line[1024] = "";
    char *got = fgets(line, sizeof line, p);
    int status = pclose(p);
    line[strcspn(line, "\r\n")] = '\0';
    return got && status == 0 && strcmp(line, pg_url()) == 0;
}
