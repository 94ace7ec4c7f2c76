/*
 * test_pg_health.c — connections that die while pooled: terminated
 * backends, a backend that stops answering the ping, and a server restart
 * under load.
 */
#include "pg_support.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

    terminate_backends(pids, N);

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

/* The same with the default options, right after checkin (well inside
 * validate_idle_ms, so no ping is due): the zero-round-trip check on every
 * checkout still sees the termination, and the connection is replaced. */
Test(pg, terminated_inside_ping_window_replaced, .timeout = 30)
{
    respool_t *pool = make_pool(pg_url(), 1, 0, NULL);
    respool_lease_t l;
    int pid = PQbackendPID(checkout(pool, &l));
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);

    terminate_backends(&pid, 1);

    PGconn *c = checkout(pool, &l);
    cr_expect_neq(PQbackendPID(c), pid, "the terminated connection was handed out");
    char *v = query1(c, "SELECT 1");
    cr_expect_str_eq(v, "1");
    free(v);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.validate_failures, 1);
    cr_expect_eq(s.created, 2);
    shutdown_and_check_balanced(pool);
}

/* keepalive calls validate, which pings only connections not known good
 * for the adapter's validate_idle_ms: a keepalive_ms below it would never
 * ping, so respool_pg_pool_create refuses the pair. */
Test(pg, keepalive_below_ping_window_refused, .timeout = 30)
{
    respool_config_t cfg = quiet_cfg(1, 0);
    cfg.keepalive_ms = 500; /* validate_idle_ms defaults to 1000 */
    respool_t *pool = (respool_t *)(void *)&cfg;
    char err[512] = "";
    int rc = respool_pg_pool_create(&pool, pg_url(), &cfg, NULL, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_EINVAL, "rc %s", respool_strerror(rc));
    cr_expect_null(pool);
    cr_expect(strstr(err, "keepalive_ms") != NULL, "err: %s", err);

    respool_pg_options_t opt = {0};
    opt.validate_idle_ms = 500;
    pool = make_pool(pg_url(), 1, 0, &opt); /* equal: fine (make_pool: no keepalive) */
    respool_pg_pool_free(pool);
    rc = respool_pg_pool_create(&pool, pg_url(), &cfg, &opt, err, sizeof err);
    cr_expect_eq(rc, RESPOOL_OK, "%s", err);
    respool_pg_pool_free(pool);
}

/* ------------------------------------------------------------------------ */
/* A backend that stops answering: the ping times out, the connection is    */
/* replaced                                                                  */
/* ------------------------------------------------------------------------ */

/* SIGSTOP freezes the backend without closing its socket, as a hung server
 * or a half-open TCP connection would: only the ping's own timeout can tell. */
Test(pg, ping_timeout_replaces_connection, .timeout = 30)
{
    respool_pg_options_t opt = {0};
    opt.validate_idle_ms = RESPOOL_PG_VALIDATE_ALWAYS;
    opt.ping_timeout_ms = 300;
    respool_t *pool = make_pool(pg_url(), 1, 0, &opt);

    respool_lease_t l;
    int pid = PQbackendPID(checkout(pool, &l));
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_assert_eq(kill(pid, SIGSTOP), 0, "SIGSTOP backend %d", pid);

    int64_t t0 = mono_ms();
    int rc = respool_checkout(pool, 10000, &l);
    int64_t took = mono_ms() - t0;
    kill(pid, SIGCONT); /* it then reads the Terminate PQfinish sent, and exits */
    cr_assert_eq(rc, RESPOOL_OK, "checkout: %s", respool_strerror(rc));
    PGconn *c = respool_pg_conn(&l);
    cr_expect_neq(PQbackendPID(c), pid, "the frozen backend was not handed out");
    char *v = query1(c, "SELECT 1");
    cr_expect_str_eq(v, "1");
    free(v);
    cr_assert_eq(respool_checkin(pool, &l), RESPOOL_OK);
    cr_expect_geq(took, 300, "the ping waited its timeout (took %lld ms)", (long long)took);

    respool_stats_t s = stats_of(pool);
    cr_expect_eq(s.validate_failures, 1);
    cr_expect_eq(s.created, 2);
    shutdown_and_check_balanced(pool);
}

/* ------------------------------------------------------------------------ */
/* Server stop/start and restart under load                                  */
/* ------------------------------------------------------------------------ */

/* Threads running SELECT 1 through respool_pg_run, counting outcomes. */
typedef struct {
    respool_t *pool;
    long timeout_ms;
    atomic_bool stop;
    atomic_long ok;            /* fn ran and succeeded                        */
    atomic_long timed_out;     /* checkout: RESPOOL_ETIMEDOUT                 */
    atomic_long work_failed;   /* fn ran, the query failed (server went away) */
    atomic_long other;         /* any other code: never expected              */
    atomic_llong late_ms;      /* worst lateness of a timed-out checkout      */
} load_t;

static bool select_one(PGconn *c, void *arg)
{
    (void)arg;
    PGresult *r = PQexec(c, "SELECT 1");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static void *load_worker(void *arg)
{
    load_t *load = arg;
    while (!atomic_load(&load->stop)) {
        int64_t t0 = mono_ms();
        int rc = respool_pg_run(load->pool, load->timeout_ms, select_one, NULL);
        int64_t late = mono_ms() - t0 - load->timeout_ms;
        if (rc == RESPOOL_OK) {
            atomic_fetch_add(&load->ok, 1);
        } else if (rc == RESPOOL_ETIMEDOUT) {
            atomic_fetch_add(&load->timed_out, 1);
            long long worst = atomic_load(&load->late_ms);
            while (late > worst && !atomic_compare_exchange_weak(&load->late_ms, &worst, late))
                ;
        } else if (rc == RESPOOL_PG_EWORK) {
            atomic_fetch_add(&load->work_failed, 1);
        } else {
            atomic_fetch_add(&load->other, 1);
        }
    }
    return NULL;
}

/* Wait (bounded) until counter reaches at least target. */
static void await_count(atomic_long *counter, long target, int64_t within_ms, const char *what)
{
    int64_t deadline = mono_ms() + within_ms;
    while (atomic_load(counter) < target) {
        cr_assert(mono_ms() < deadline, "%s: %ld of %ld after %lld ms", what,
                  atomic_load(counter), target, (long long)within_ms);
        usleep(1000); /* polling a condition, bounded by the deadline */
    }
}

static void sandbox(const char *command)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "scripts/pg-sandbox %s >/dev/null 2>&1", command);
    cr_assert_eq(system(cmd), 0, "%s failed (see build/pg-sandbox/server.log)", cmd);
}

/* Failed connection attempts so far. Successes are left out on purpose: the
 * server accepts connections a little before `pg_ctl start -w` notices it is
 * up, and the refill made in that window is not a probe. */
static uint64_t failed_connect_attempts(respool_t *pool)
{
    return stats_of(pool).create_failures;
}

/* Wait (bounded) until the pool is full again and return the time. */
static int64_t await_refilled(respool_t *pool, unsigned size)
{
    int64_t deadline = mono_ms() + 10000;
    for (;;) {
        respool_stats_t s = stats_of(pool);
        if (s.idle + s.busy == size && s.creating == 0)
            return mono_ms();
        cr_assert(mono_ms() < deadline, "pool not refilled: idle %u busy %u creating %u",
                  s.idle, s.busy, s.creating);
        usleep(1000);
    }
}

enum { LOAD_THREADS = 6, LOAD_POOL = 4, RETRY_INITIAL_MS = 50, RETRY_MAX_MS = 1000 };

static respool_t *start_load(load_t *load, pthread_t *threads)
{
    cr_assert(pg_is_sandbox(), "this test stops and restarts the server: it needs "
                               "RESPOOL_PG_URL unset or equal to `scripts/pg-sandbox url`");
    respool_config_t cfg = quiet_cfg(LOAD_POOL, 0);
    cfg.retry_initial_ms = RETRY_INITIAL_MS;
    cfg.retry_max_ms = RETRY_MAX_MS;
    respool_pg_options_t opt = {0};
    opt.connect_timeout_ms = 2000;
    respool_t *pool = NULL;
    char err[512];
    int rc = respool_pg_pool_create(&pool, pg_url(), &cfg, &opt, err, sizeof err);
    cr_assert_eq(rc, RESPOOL_OK, "%s", err);
    memset(load, 0, sizeof *load);
    load->pool = pool;
    load->timeout_ms = 300;
    for (int i = 0; i < LOAD_THREADS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, load_worker, load), 0);
    await_count(&load->ok, 50, 10000, "successes before the outage");
    return pool;
}

static void stop_load(load_t *load, pthread_t *threads)
{
    atomic_store(&load->stop, true);
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_join(threads[i], NULL);
    cr_expect_eq(atomic_load(&load->other), 0, "unexpected return codes");
    /* A timed-out checkout returned within its timeout (plus scheduling). */
    cr_expect_lt(atomic_load(&load->late_ms), 250, "a checkout returned %lld ms late",
                 (long long)atomic_load(&load->late_ms));
}

/* The server goes away for a while under load: checkouts fail with
 * RESPOOL_ETIMEDOUT within their timeout, the last error names the problem,
 * the manager probes with backoff (a bounded number of connection attempts,
 * not one per checkout), and the pool refills by itself once the server is
 * back. */
Test(pg, server_outage_under_load, .timeout = 90)
{
    load_t load;
    pthread_t threads[LOAD_THREADS];
    respool_t *pool = start_load(&load, threads);

    uint64_t attempts_before = failed_connect_attempts(pool);
    uint64_t created_before = stats_of(pool).created;
    int64_t down_at = mono_ms();
    sandbox("stop");

    /* The outage is seen: checkouts time out, and the last error is the
     * server's absence (unix socket gone), not a vague timeout. */
    long timeouts_at_stop = atomic_load(&load.timed_out);
    await_count(&load.timed_out, timeouts_at_stop + 3 * LOAD_THREADS, 10000,
                "timed-out checkouts during the outage");
    char last[1024] = "";
    int64_t deadline = mono_ms() + 10000;
    while (respool_last_error(pool, last, sizeof last) == 0 ||
           strstr(last, "No such file or directory") == NULL) {
        cr_assert(mono_ms() < deadline, "last error: %s", last);
        usleep(1000);
    }
    cr_expect(strstr(last, "connection to server") != NULL, "last error: %s", last);
    cr_expect_gt(stats_of(pool).consecutive_create_failures, 0);

    long ok_before_start = atomic_load(&load.ok);
    sandbox("start");
    int64_t up_at = mono_ms();
    uint64_t attempts_outage = failed_connect_attempts(pool) - attempts_before;
    uint64_t created_outage = stats_of(pool).created - created_before;
    int64_t outage_ms = up_at - down_at;

    await_count(&load.ok, ok_before_start + 1, 10000, "a success after the restart");
    int64_t first_ok_ms = mono_ms() - up_at;
    int64_t refilled_ms = await_refilled(pool, LOAD_POOL) - up_at;
    stop_load(&load, threads);

    /* Backoff bound: the first wave (at most one create per connection lost)
     * plus one probe per backoff step; steps double from RETRY_INITIAL_MS to
     * RETRY_MAX_MS and each waits at least half its step. A reconnect storm
     * (a create per checkout) would be hundreds. */
    uint64_t bound = LOAD_POOL + 1;
    for (int64_t step = RETRY_INITIAL_MS, t = 0; t < outage_ms;
         step = step * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : step * 2) {
        t += step / 2;
        bound++;
    }
    cr_expect_leq(attempts_outage, bound, "%llu failed connection attempts in a %lld ms outage",
                  (unsigned long long)attempts_outage, (long long)outage_ms);
    cr_expect_lt(first_ok_ms, RETRY_MAX_MS + 2000, "first success %lld ms after start",
                 (long long)first_ok_ms);
    fprintf(stderr, "server_outage_under_load: outage %lld ms, %llu failed connection attempts "
                    "(bound %llu) and %llu successful ones, first success %lld ms / pool full "
                    "%lld ms after start\n",
            (long long)outage_ms, (unsigned long long)attempts_outage,
            (unsigned long long)bound, (unsigned long long)created_outage, (long long)first_ok_ms,
            (long long)refilled_ms);
    shutdown_and_check_balanced(pool);
}

/* pg_ctl restart (fast mode) under load: every connection is terminated
 * by the server; the pool recovers by itself and no caller gets anything but
 * success, a timeout or its own failed query. */
Test(pg, server_restart_under_load, .timeout = 90)
{
    load_t load;
    pthread_t threads[LOAD_THREADS];
    respool_t *pool = start_load(&load, threads);
    int64_t before = mono_ms();
    sandbox("restart");
    int64_t up_at = mono_ms();
    long ok_at_up = atomic_load(&load.ok);
    await_count(&load.ok, ok_at_up + 1, 10000, "a success after the restart");
    int64_t first_ok_ms = mono_ms() - up_at;
    int64_t refilled_ms = await_refilled(pool, LOAD_POOL) - up_at;
    /* ... and keeps working */
    await_count(&load.ok, atomic_load(&load.ok) + 100, 10000, "successes after recovery");
    stop_load(&load, threads);
    fprintf(stderr, "server_restart_under_load: pg_ctl restart took %lld ms; first success "
                    "%lld ms / pool full %lld ms after it returned; %ld timeouts, %ld failed "
                    "queries\n",
            (long long)(up_at - before), (long long)first_ok_ms, (long long)refilled_ms,
            atomic_load(&load.timed_out), atomic_load(&load.work_failed));
    respool_stats_t s = stats_of(pool);
    cr_expect_geq(s.created, 2 * LOAD_POOL, "every connection was replaced");
    shutdown_and_check_balanced(pool);
}
