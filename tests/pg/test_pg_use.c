/*
 * test_pg_use.c — using pooled connections: checkout, query, checkin from
 * many threads; respool_pg_run and a connection that breaks inside it.
 */
#include "pg_support.h"

#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Many threads                                                              */
/* ------------------------------------------------------------------------ */

/* The plain cycle: check out, query, check in; the same connection comes
 * back on the next checkout, and shutdown destroys what was created. */
Test(pg, checkout_query_checkin, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    respool_lease_t l;
    PGconn *c = checkout(pool, &l);
    int pid = PQbackendPID(c);
    char *v = query1(c, "SELECT current_database()");
    cr_expect_str_eq(v, "respool");
    free(v);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_expect_eq(PQbackendPID(checkout(pool, &l)), pid);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.created, 1);
    cr_expect_eq(s.checkouts, 2);
    shutdown_and_check_balanced(pool);
}

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

/* fork() with connections out and idle: the child frees its copy of the
 * pool (each inherited connection abandoned: nothing sent on the parent's
 * sockets), and the parent's sessions live on — the same backends answer. */
Test(pg, fork_child_leaves_parent_sessions_alone, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 2, 0, NULL);
    respool_lease_t out, idle;
    PGconn *held = checkout(pool, &out);
    PGconn *other = checkout(pool, &idle);
    int held_pid = PQbackendPID(held), other_pid = PQbackendPID(other);
    cr_assert_eq(respool_checkin(pool, &idle), RESPOOL_OK);

    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        respool_lease_t lease;
        int rc = respool_checkout(pool, 0, &lease);
        respool_pg_pool_free(pool); /* abandons both connections */
        _exit(rc == RESPOOL_ESHUTDOWN ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    char *v = query1(held, "SELECT pg_backend_pid()");
    cr_expect_eq(atoi(v), held_pid, "the leased session survived the child");
    free(v);
    cr_assert_eq(respool_checkin(pool, &out), RESPOOL_OK);
    respool_lease_t again;
    PGconn *c = checkout(pool, &again);
    v = query1(c, "SELECT pg_backend_pid()");
    int pid = atoi(v);
    free(v);
    cr_expect(pid == held_pid || pid == other_pid, "a surviving session, not a new one");
    cr_assert_eq(respool_checkin(pool, &again), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.created, 2, "no connection had to be replaced");
    shutdown_and_check_balanced(pool);
}
