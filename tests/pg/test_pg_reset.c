/*
 * test_pg_reset.c — what checkin cleans: transactions left open or failed
 * are rolled back, a command in progress destroys the connection, and
 * reset_query (DISCARD ALL) clears the borrower's session state.
 */
#include "pg_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

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
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP TABLE IF EXISTS %s; "
                              "CREATE TABLE %s (x int); RESET client_min_messages", table, table);
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
        PGresult *r = PQexec(c, "SET client_min_messages = warning; "
                                "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE "
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

/* A notification that reached the connection while one borrower held it is
 * not delivered to the next one. */
Test(pg, notifications_do_not_leak, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    exec_ok(c, "LISTEN respool_channel");
    /* A session's own NOTIFY comes back with the reply to it (at commit):
     * after PQexec it waits in libpq's queue, which this borrower never
     * reads. */
    exec_ok(c, "NOTIFY respool_channel, 'for the first borrower'");
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    c = checkout(pool, &l);
    cr_expect_eq(PQbackendPID(c), pid, "the same connection is reused");
    PGnotify *n = PQnotifies(c);
    cr_expect_null(n, "the next borrower got a notification: %s", n ? n->extra : "");
    if (n)
        PQfreemem(n);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    shutdown_and_check_balanced(pool);
}

/* A borrower checks in mid-COPY with data libpq could not send, because the
 * backend waits on a lock and reads nothing. The connection is destroyed
 * (not cleanable), and destroying it must not wait for the backend: PQfinish
 * would flush the unsent data in blocking mode first. */
Test(pg, stuck_copy_destroyed_without_blocking, .timeout = 60)
{
    char table[64], sql[256];
    snprintf(table, sizeof table, "respool_copy_%d", (int)getpid());
    PGconn *side = side_conn(pg_url());
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP TABLE IF EXISTS %s; "
                              "CREATE TABLE %s (k int PRIMARY KEY)", table, table);
    exec_ok(side, sql);
    exec_ok(side, "BEGIN");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", table);
    exec_ok(side, sql); /* holds key 1 until the ROLLBACK below */

    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", table);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COPY_IN, "%s", PQerrorMessage(c));
    PQclear(r);
    /* Row 1 conflicts with side's uncommitted key 1, but COPY inserts in
     * batches of 1,000 rows, so send 2,000 (14 kB: a few writes, well
     * within the socket buffer) and await the backend's lock wait. */
    cr_assert_eq(PQputCopyData(c, "1\n", 2), 1);
    for (int rows = 0; rows < 2000; rows++)
        cr_assert_eq(PQputCopyData(c, "2\n", 2), 1);
    cr_assert_eq(PQflush(c), 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event_type = 'Lock'",
             pid);
    int64_t deadline = mono_ms() + 30000;
    for (;;) { /* the backend may still be reading what it has: await */
        char *v = query1(side, sql);
        bool waiting = strcmp(v, "1") == 0;
        free(v);
        if (waiting)
            break;
        if (mono_ms() >= deadline) {
            /* Say what the backend is doing instead, for the next look. */
            char what[256];
            snprintf(what, sizeof what,
                     "SELECT coalesce(state, '?') || ' / ' || coalesce(wait_event_type, '-') || "
                     "' / ' || coalesce(wait_event, '-') FROM pg_stat_activity WHERE pid = %d",
                     pid);
            char *state = query1(side, what);
            cr_assert(false, "the backend never waited on side's lock (state / wait: %s)",
                      state ? state : "gone");
        }
        usleep(1000); /* polling a condition, bounded */
    }
    /* Now that it reads nothing, fill the socket's send buffer, one
     * flushed row at a time; then, back in blocking mode, one more row that
     * stays in libpq's own buffer (it flushes at 8 kB). On a unix socket
     * SIOCOUTQ counts what the buffer holds. (Filling first raced: a
     * backend slow to read could let the buffer fill before it had read
     * 1,000 rows, and then never wait on the lock.) */
    int fd = PQsocket(c), sndbuf = 0;
    socklen_t optlen = sizeof sndbuf;
    cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &optlen), 0);
    cr_assert_eq(PQsetnonblocking(c, 1), 0);
    for (int rows = 0;; rows++) {
        int queued = 0;
        cr_assert_eq(ioctl(fd, SIOCOUTQ, &queued), 0);
        if (queued >= sndbuf)
            break;
        cr_assert_eq(PQputCopyData(c, "2\n", 2), 1);
        cr_assert_eq(PQflush(c), 0, "the socket filled before SIOCOUTQ said so");
        cr_assert_lt(rows, 10000000, "the socket never filled");
    }
    cr_assert_eq(PQsetnonblocking(c, 0), 0); /* nothing pending: no flush */
    cr_assert_eq(PQputCopyData(c, "3\n", 2), 1);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    /* The manager destroys it while the lock is still held. */
    deadline = mono_ms() + 10000;
    while (stats_of(pool).destroyed < 1) {
        cr_assert(mono_ms() < deadline, "destroy blocked: %u destroying",
                  stats_of(pool).destroying);
        usleep(1000);
    }
    cr_expect_eq(stats_of(pool).reset_failures, 1);
    PGconn *fresh = checkout(pool, &l);
    cr_expect_neq(PQbackendPID(fresh), pid);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    shutdown_and_check_balanced(pool);

    exec_ok(side, "ROLLBACK");
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    exec_ok(side, sql);
    PQfinish(side);
}
