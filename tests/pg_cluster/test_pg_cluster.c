/*
 * test_pg_cluster.c — the multi-host cluster pool against a real primary and
 * streaming replica (scripts/pg-cluster, run through scripts/with-pg-cluster,
 * which exports RESPOOL_PG_CLUSTER_URL). Tests that stop or promote a node
 * put the cluster back (scripts/pg-cluster reset) before and after.
 *
 * Each test prints one line of figures on stderr (spread, failover time).
 */
#include "pg_support.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The cluster under test                                                    */
/* ------------------------------------------------------------------------ */

/* Run `scripts/pg-cluster ARGS`; its stdout's first line into out (if
 * given). Fails the test on a non-zero exit. */
static void cluster_cmd(const char *args, char *out, size_t outlen)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "scripts/pg-cluster %s", args);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    char line[1024] = "";
    if (!fgets(line, sizeof line, p))
        line[0] = '\0';
    while (fgetc(p) != EOF) {
    }
    int status = pclose(p);
    cr_assert_eq(status, 0, "`%s` failed (status %d)", cmd, status);
    line[strcspn(line, "\r\n")] = '\0';
    if (out)
        snprintf(out, outlen, "%s", line);
}

/* The cluster's multi-host conninfo; the cluster is put back to a fresh
 * primary + streaming replica first when it is not in that state. */
static const char *cluster_url(void)
{
    static char url[1024];
    FILE *p = popen("scripts/pg-cluster status 2>/dev/null", "r");
    char status[256] = "";
    size_t n = p ? fread(status, 1, sizeof status - 1, p) : 0;
    status[n] = '\0';
    int rc = p ? pclose(p) : -1;
    if (rc != 0 || !strstr(status, "primary: running primary") ||
        !strstr(status, "replica: running standby"))
        cluster_cmd("reset", url, sizeof url);
    else
        cluster_cmd("url", url, sizeof url);
    cr_assert(url[0], "no cluster url");
    return url;
}

static void node_url(const char *node, char *out, size_t outlen)
{
    char args[64];
    snprintf(args, sizeof args, "url %s", node);
    cluster_cmd(args, out, outlen);
}

static respool_pg_cluster_config_t cluster_cfg(unsigned per_host)
{
    respool_pg_cluster_config_t cfg = {0};
    cfg.host = quiet_cfg(per_host, 0);
    cfg.host.retry_initial_ms = 20;
    cfg.host.retry_max_ms = 200;
    cfg.failover_poll_ms = 50;
    return cfg;
}

static respool_pg_cluster_t *make_cluster(const char *url, unsigned per_host)
{
    respool_pg_cluster_config_t cfg = cluster_cfg(per_host);
    respool_pg_cluster_t *c = NULL;
    char err[1024];
    int rc = respool_pg_cluster_create(&c, url, &cfg, NULL, err, sizeof err);
    cr_assert_eq(rc, RESPOOL_OK, "respool_pg_cluster_create: %s", err);
    return c;
}

static respool_pg_host_info_t host_info(respool_pg_cluster_t *c, size_t i)
{
    respool_pg_host_info_t info;
    cr_assert_eq(respool_pg_cluster_host(c, i, &info), RESPOOL_OK);
    return info;
}

/* Wait (bounded) until host i is in state (and, unless UNKNOWN, role);
 * returns when that was seen (mono_ms). */
static int64_t await_host(respool_pg_cluster_t *c, size_t i, respool_pg_host_state_t state,
                          respool_pg_role_t role, long within_ms)
{
    int64_t start = mono_ms();
    for (;;) {
        respool_pg_host_info_t info = host_info(c, i);
        if (info.state == state && (role == RESPOOL_PG_ROLE_UNKNOWN || info.role == role))
            return mono_ms();
        cr_assert(mono_ms() - start < within_ms, "host %zu (%s) is %s/%s, not %s after %ld ms",
                  i, info.name, respool_pg_host_state_name(info.state),
                  respool_pg_role_name(info.role), respool_pg_host_state_name(state), within_ms);
        usleep(2000);
    }
}

/* Wait (bounded) until host i's pool holds `size` connections, none being
 * made: round-robin prefers hosts with an idle connection, so a host still
 * connecting is skipped. */
static void await_filled(respool_pg_cluster_t *c, size_t i, unsigned size)
{
    int64_t deadline = mono_ms() + 10000;
    for (;;) {
        respool_pg_host_info_t info = host_info(c, i);
        if (info.stats.idle + info.stats.busy == size && info.stats.creating == 0)
            return;
        cr_assert(mono_ms() < deadline, "host %zu (%s) has %u idle, %u busy, %u creating", i,
                  info.name, info.stats.idle, info.stats.busy, info.stats.creating);
        usleep(2000);
    }
}

/* Is the server behind conn in recovery (a replica)? */
static bool in_recovery(PGconn *conn)
{
    char *v = query1(conn, "SELECT pg_is_in_recovery()");
    bool yes = v && v[0] == 't';
    free(v);
    return yes;
}

static void free_balanced(respool_pg_cluster_t *c)
{
    cr_expect_eq(respool_pg_cluster_shutdown(c, 10000), RESPOOL_OK);
    respool_stats_t total;
    respool_pg_cluster_stats(c, &total);
    cr_expect_eq(total.created, total.destroyed, "created %llu, destroyed %llu",
                 (unsigned long long)total.created, (unsigned long long)total.destroyed);
    respool_pg_cluster_free(c);
}

/* ------------------------------------------------------------------------ */
/* Roles and routing                                                         */
/* ------------------------------------------------------------------------ */

/* Each host's role is learned on connect; PRIMARY checkouts reach the
 * primary, REPLICA checkouts the replica. */
Test(cluster, roles_learned_and_routed, .timeout = 60)
{
    respool_pg_cluster_t *c = make_cluster(cluster_url(), 2);
    cr_assert_eq(respool_pg_cluster_host_count(c), 2);
    await_host(c, 0, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_PRIMARY, 10000);
    await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 10000);
    cr_expect(host_info(c, 0).writer);
    cr_expect(!host_info(c, 1).writer);

    for (int i = 0; i < 6; i++) {
        respool_lease_t lease;
        cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 2000, &lease), RESPOOL_OK);
        cr_expect(!in_recovery(respool_pg_conn(&lease)), "a PRIMARY checkout reached a replica");
        cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
        cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_REPLICA, 2000, &lease), RESPOOL_OK);
        cr_expect(in_recovery(respool_pg_conn(&lease)), "a REPLICA checkout reached the primary");
        cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
    }
    cr_expect_eq(host_info(c, 0).checkouts, 6);
    cr_expect_eq(host_info(c, 1).checkouts, 6);
    free_balanced(c);
}

/* RESPOOL_PG_ANY goes round-robin: sequential checkouts alternate, and
 * under load from 8 threads both hosts carry a fair share. */
typedef struct {
    respool_pg_cluster_t *cluster;
    respool_pg_target_t target;
    int rounds;
    atomic_long ok, failed_checkouts, failed_queries;
    atomic_bool stop;
    long timeout_ms;
} load_t;

static void *load_worker(void *arg)
{
    load_t *load = arg;
    for (int i = 0; load->rounds ? i < load->rounds : !atomic_load(&load->stop); i++) {
        respool_lease_t lease;
        int rc = respool_pg_cluster_checkout(load->cluster, load->target, load->timeout_ms, &lease);
        if (rc != RESPOOL_OK) {
            char why[1024];
            respool_pg_cluster_error(why, sizeof why);
            fprintf(stderr, "checkout failed: %s: %s\n", respool_strerror(rc), why);
            atomic_fetch_add(&load->failed_checkouts, 1);
            continue;
        }
        PGconn *conn = respool_pg_conn(&lease);
        PGresult *r = PQexec(conn, "SELECT 1");
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (ok) {
            atomic_fetch_add(&load->ok, 1);
            respool_pg_cluster_checkin(load->cluster, &lease);
        } else {
            atomic_fetch_add(&load->failed_queries, 1);
            respool_pg_cluster_destroyed(load->cluster, &lease);
        }
    }
    return NULL;
}

enum { LOAD_THREADS = 8 };

static void load_start(load_t *load, pthread_t *threads, respool_pg_cluster_t *c,
                       respool_pg_target_t target, int rounds)
{
    memset(load, 0, sizeof *load);
    load->cluster = c;
    load->target = target;
    load->rounds = rounds;
    load->timeout_ms = 5000;
    for (int i = 0; i < LOAD_THREADS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, load_worker, load), 0);
}

static void load_stop(load_t *load, pthread_t *threads)
{
    atomic_store(&load->stop, true);
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_join(threads[i], NULL);
}

static void await_ok(load_t *load, long at_least, long within_ms)
{
    int64_t deadline = mono_ms() + within_ms;
    while (atomic_load(&load->ok) < at_least) {
        cr_assert(mono_ms() < deadline, "only %ld successes of %ld", atomic_load(&load->ok),
                  at_least);
        usleep(1000);
    }
}

Test(cluster, round_robin_spread, .timeout = 60)
{
    respool_pg_cluster_t *c = make_cluster(cluster_url(), 3);
    await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 10000);
    await_filled(c, 0, 3);
    await_filled(c, 1, 3);
    for (int i = 0; i < 100; i++) {
        respool_lease_t lease;
        cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_ANY, 2000, &lease), RESPOOL_OK);
        cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
    }
    uint64_t a = host_info(c, 0).checkouts, b = host_info(c, 1).checkouts;
    cr_expect_eq(a, 50, "sequential: %llu on the primary, %llu on the replica",
                 (unsigned long long)a, (unsigned long long)b);
    cr_expect_eq(b, 50);

    load_t load;
    pthread_t threads[LOAD_THREADS];
    load_start(&load, threads, c, RESPOOL_PG_ANY, 250);
    load_stop(&load, threads);
    uint64_t a2 = host_info(c, 0).checkouts - a, b2 = host_info(c, 1).checkouts - b;
    cr_expect_eq(atomic_load(&load.failed_checkouts), 0);
    cr_expect_eq(a2 + b2, (uint64_t)LOAD_THREADS * 250);
    double share = (double)(a2 < b2 ? a2 : b2) / (double)(a2 + b2);
    cr_expect_geq(share, 0.35, "under load: %llu on the primary, %llu on the replica",
                  (unsigned long long)a2, (unsigned long long)b2);
    fprintf(stderr, "round_robin_spread: sequential %llu/%llu; %d threads %llu/%llu "
                    "(primary/replica, smaller share %.2f)\n",
            (unsigned long long)a, (unsigned long long)b, LOAD_THREADS, (unsigned long long)a2,
            (unsigned long long)b2, share);
    free_balanced(c);
}

/* A row committed through a PRIMARY checkout becomes visible to REPLICA
 * checkouts (streaming replication is asynchronous: bounded polling). */
Test(cluster, replica_reads_see_primary_writes, .timeout = 60)
{
    respool_pg_cluster_t *c = make_cluster(cluster_url(), 1);
    await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 10000);
    respool_lease_t lease;
    cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 2000, &lease), RESPOOL_OK);
    PGconn *w = respool_pg_conn(&lease);
    exec_ok(w, "CREATE TABLE IF NOT EXISTS cluster_rw (token text)");
    char token[64], insert[160], select[160];
    snprintf(token, sizeof token, "t-%d-%lld", (int)getpid(), (long long)mono_ms());
    snprintf(insert, sizeof insert, "INSERT INTO cluster_rw VALUES ('%s')", token);
    snprintf(select, sizeof select, "SELECT count(*) FROM cluster_rw WHERE token = '%s'", token);
    exec_ok(w, insert);
    int64_t committed = mono_ms();
    cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);

    int64_t seen_after = -1;
    while (mono_ms() - committed < 10000) {
        cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_REPLICA, 2000, &lease), RESPOOL_OK);
        PGconn *r = respool_pg_conn(&lease);
        cr_assert(in_recovery(r));
        /* Before the CREATE TABLE arrives the query fails: not seen yet. */
        PGresult *res = PQexec(r, select);
        bool seen = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                    strcmp(PQgetvalue(res, 0, 0), "1") == 0;
        PQclear(res);
        cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
        if (seen) {
            seen_after = mono_ms() - committed;
            break;
        }
        usleep(2000);
    }
    cr_expect_geq(seen_after, 0, "the replica never saw the primary's row");
    cr_expect_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_REPLICA, 2000, &lease), RESPOOL_OK);
    PGresult *refused = PQexec(respool_pg_conn(&lease), "INSERT INTO cluster_rw VALUES ('x')");
    cr_expect_eq(PQresultStatus(refused), PGRES_FATAL_ERROR, "a replica accepted a write");
    PQclear(refused);
    respool_pg_cluster_checkin(c, &lease);
    fprintf(stderr, "replica_reads_see_primary_writes: visible on the replica %lld ms after "
                    "commit\n",
            (long long)seen_after);
    free_balanced(c);
}

/* ------------------------------------------------------------------------ */
/* Failure                                                                   */
/* ------------------------------------------------------------------------ */

/* The replica stops under load: only queries in flight on it fail, no
 * checkout fails, traffic moves to the primary; it comes back and is used
 * again once restarted. */
Test(cluster, replica_stop_under_load, .timeout = 120)
{
    const unsigned per_host = 3;
    respool_pg_cluster_t *c = make_cluster(cluster_url(), per_host);
    await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 10000);
    load_t load;
    pthread_t threads[LOAD_THREADS];
    load_start(&load, threads, c, RESPOOL_PG_REPLICA, 0);
    await_ok(&load, 200, 10000);
    uint64_t replica_before = host_info(c, 1).checkouts;
    cr_expect_gt(replica_before, 0);

    int64_t stop_at = mono_ms();
    cluster_cmd("stop-node replica", NULL, 0);
    int64_t down_at = await_host(c, 1, RESPOOL_PG_HOST_DOWN, RESPOOL_PG_ROLE_UNKNOWN, 10000);
    uint64_t primary_at_down = host_info(c, 0).checkouts;
    long ok_at_down = atomic_load(&load.ok);
    await_ok(&load, ok_at_down + 300, 10000);
    uint64_t primary_after = host_info(c, 0).checkouts;
    /* A host counts a checkout when it is made, the load a success when its
     * query returns: up to one per thread in flight between the two reads
     * above belongs to neither window. */
    cr_expect_geq(primary_after - primary_at_down, 300 - LOAD_THREADS,
                  "reads did not move to the primary (%llu)",
                  (unsigned long long)(primary_after - primary_at_down));
    long failed_queries = atomic_load(&load.failed_queries);

    int64_t start_at = mono_ms();
    cluster_cmd("start-node replica", NULL, 0);
    int64_t back_at = await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 20000);
    uint64_t replica_back = host_info(c, 1).checkouts;
    await_ok(&load, atomic_load(&load.ok) + 300, 10000);
    load_stop(&load, threads);
    cr_expect_gt(host_info(c, 1).checkouts, replica_back, "the replica got no reads back");

    cr_expect_eq(atomic_load(&load.failed_checkouts), 0, "checkouts failed");
    /* In flight on the replica: at most one query per connection it had. */
    cr_expect_leq(failed_queries, (long)per_host, "%ld queries failed", failed_queries);
    fprintf(stderr, "replica_stop_under_load: marked down %lld ms after `stop-node replica` "
                    "began, %ld queries failed in flight, %ld checkouts failed; up again %lld "
                    "ms after `start-node replica` began\n",
            (long long)(down_at - stop_at), failed_queries,
            atomic_load(&load.failed_checkouts), (long long)(back_at - start_at));
    free_balanced(c);
}

/* The primary stops and the replica is promoted: writes wait (within their
 * timeout) and then succeed on the new primary, with no application restart;
 * the old primary is never written to again. */
typedef struct {
    respool_pg_cluster_t *cluster;
    atomic_bool stop;
    atomic_long writes, failed;
    atomic_llong last_ok_ms; /* mono_ms of the latest successful write */
    char token[64];
} writer_t;

static void *write_worker(void *arg)
{
    writer_t *w = arg;
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO cluster_failover VALUES ('%s', now())", w->token);
    while (!atomic_load(&w->stop)) {
        respool_lease_t lease;
        int rc = respool_pg_cluster_checkout(w->cluster, RESPOOL_PG_PRIMARY, 500, &lease);
        if (rc != RESPOOL_OK) {
            atomic_fetch_add(&w->failed, 1);
            continue;
        }
        PGconn *conn = respool_pg_conn(&lease);
        PGresult *r = PQexec(conn, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok) {
            atomic_fetch_add(&w->writes, 1);
            atomic_store(&w->last_ok_ms, (long long)mono_ms());
            respool_pg_cluster_checkin(w->cluster, &lease);
        } else {
            atomic_fetch_add(&w->failed, 1);
            respool_pg_cluster_destroyed(w->cluster, &lease);
        }
    }
    return NULL;
}

Test(cluster, failover_to_promoted_replica, .timeout = 120)
{
    const char *url = cluster_url();
    respool_pg_cluster_t *c = make_cluster(url, 2);
    await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 10000);
    respool_lease_t lease;
    cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 2000, &lease), RESPOOL_OK);
    exec_ok(respool_pg_conn(&lease),
            "CREATE TABLE IF NOT EXISTS cluster_failover (token text, at timestamptz)");
    cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);

    writer_t w;
    memset(&w, 0, sizeof w);
    w.cluster = c;
    snprintf(w.token, sizeof w.token, "f-%d-%lld", (int)getpid(), (long long)mono_ms());
    enum { WRITERS = 4 };
    pthread_t threads[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, write_worker, &w), 0);
    int64_t deadline = mono_ms() + 10000;
    while (atomic_load(&w.writes) < 100)
        cr_assert(mono_ms() < deadline, "no writes before the failover");

    int64_t stop_at = mono_ms();
    cluster_cmd("stop-node primary", NULL, 0);
    int64_t stopped_at = mono_ms();
    long writes_at_stop = atomic_load(&w.writes);
    cluster_cmd("promote", NULL, 0);
    int64_t promoted_at = mono_ms();

    /* The first successful write after the promotion. */
    deadline = promoted_at + 15000;
    while (atomic_load(&w.last_ok_ms) < promoted_at) {
        cr_assert(mono_ms() < deadline, "no write succeeded within 15 s of the promotion");
        usleep(1000);
    }
    int64_t first_write_at = atomic_load(&w.last_ok_ms);
    while (atomic_load(&w.writes) < writes_at_stop + 100)
        cr_assert(mono_ms() < deadline, "writes did not resume");
    atomic_store(&w.stop, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(threads[i], NULL);

    respool_pg_host_info_t old_primary = host_info(c, 0), promoted = host_info(c, 1);
    cr_expect_eq(old_primary.state, RESPOOL_PG_HOST_DOWN);
    cr_expect(promoted.writer, "the promoted replica is not the writer");
    cr_expect_eq(promoted.role, RESPOOL_PG_ROLE_PRIMARY);
    /* Every write after the promotion is on the promoted node. */
    cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 2000, &lease), RESPOOL_OK);
    cr_expect(!in_recovery(respool_pg_conn(&lease)));
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM cluster_failover WHERE token = '%s'",
             w.token);
    char *rows = query1(respool_pg_conn(&lease), sql);
    cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
    long on_new = rows ? atol(rows) : 0;
    free(rows);
    /* The new primary has what was replicated before the stop plus every
     * write since: at least the writes counted after the promotion. */
    cr_expect_geq(on_new, atomic_load(&w.writes) - writes_at_stop);

    /* The old primary comes back on its own, a second primary (split
     * brain): it is fenced, and neither writes nor reads go to it. */
    cluster_cmd("start-node primary", NULL, 0);
    await_host(c, 0, RESPOOL_PG_HOST_FENCED, RESPOOL_PG_ROLE_PRIMARY, 10000);
    cr_expect(host_info(c, 1).writer, "the writer moved to the returning old primary");
    uint64_t fenced_before = host_info(c, 0).checkouts;
    for (int i = 0; i < 20; i++) {
        respool_pg_target_t target = i % 2 ? RESPOOL_PG_PRIMARY : RESPOOL_PG_ANY;
        cr_assert_eq(respool_pg_cluster_checkout(c, target, 2000, &lease), RESPOOL_OK);
        cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
    }
    cr_expect_eq(host_info(c, 0).checkouts, fenced_before, "a fenced host got checkouts");

    fprintf(stderr, "failover_to_promoted_replica: first write on the new primary %lld ms "
                    "after `stop-node primary` began (stop took %lld ms, promote %lld ms, "
                    "then %lld ms to the first write); %ld checkouts or writes failed "
                    "meanwhile\n",
            (long long)(first_write_at - stop_at), (long long)(stopped_at - stop_at),
            (long long)(promoted_at - stopped_at), (long long)(first_write_at - promoted_at),
            atomic_load(&w.failed));
    free_balanced(c);
    cluster_cmd("reset", NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Live host-list updates                                                    */
/* ------------------------------------------------------------------------ */

/* Start with the primary alone, add the replica under load, reorder (the
 * same hosts keep their pools), then remove the replica: its connections
 * are drained and no checkout fails. */
Test(cluster, host_list_update_under_load, .timeout = 120)
{
    cluster_url(); /* a fresh primary + replica: the nodes' own urls follow */
    char primary[1024], replica[1024], err[1024];
    node_url("primary", primary, sizeof primary);
    node_url("replica", replica, sizeof replica);
    respool_pg_cluster_t *c = make_cluster(primary, 2);
    cr_assert_eq(respool_pg_cluster_host_count(c), 1);

    load_t load;
    pthread_t threads[LOAD_THREADS];
    load_start(&load, threads, c, RESPOOL_PG_ANY, 0);
    await_ok(&load, 100, 10000);

    const char *both[] = {primary, replica};
    cr_assert_eq(respool_pg_cluster_set_host_list(c, both, 2, err, sizeof err), RESPOOL_OK, "%s",
                 err);
    cr_assert_eq(respool_pg_cluster_host_count(c), 2);
    int64_t update_at = mono_ms();
    int64_t added_ms = await_host(c, 1, RESPOOL_PG_HOST_UP, RESPOOL_PG_ROLE_REPLICA, 10000) -
                       update_at;
    await_ok(&load, atomic_load(&load.ok) + 200, 10000);
    uint64_t replica_used = host_info(c, 1).checkouts;
    cr_expect_gt(replica_used, 0, "the added replica got no checkouts");

    /* The same hosts in the other order keep their pools. */
    await_filled(c, 0, 2);
    uint64_t primary_created = host_info(c, 0).stats.created;
    const char *reordered[] = {replica, primary};
    cr_assert_eq(respool_pg_cluster_set_host_list(c, reordered, 2, err, sizeof err), RESPOOL_OK,
                 "%s", err);
    respool_pg_host_info_t first = host_info(c, 0);
    cr_expect_eq(first.role, RESPOOL_PG_ROLE_REPLICA, "the list order is the caller's");
    cr_expect_geq(first.checkouts, replica_used, "a kept host lost its pool");
    await_ok(&load, atomic_load(&load.ok) + 100, 10000);
    cr_expect_eq(host_info(c, 1).stats.created, primary_created,
                 "the primary made new connections after the reorder");

    /* Remove the replica. */
    cr_assert_eq(respool_pg_cluster_set_hosts(c, primary, err, sizeof err), RESPOOL_OK, "%s",
                 err);
    cr_assert_eq(respool_pg_cluster_host_count(c), 1);
    cr_expect_eq(host_info(c, 0).role, RESPOOL_PG_ROLE_PRIMARY);
    await_ok(&load, atomic_load(&load.ok) + 200, 10000);
    load_stop(&load, threads);
    cr_expect_eq(host_info(c, 0).stats.created, primary_created,
                 "the primary made new connections after the removal");
    cr_expect_eq(atomic_load(&load.failed_checkouts), 0);
    cr_expect_eq(atomic_load(&load.failed_queries), 0);

    /* The removed replica's sessions end: only the primary's remain. */
    PGconn *side = side_conn(replica);
    int64_t deadline = mono_ms() + 10000;
    for (;;) {
        char *n = query1(side, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'respool' "
                               "AND pid <> pg_backend_pid()");
        bool none = n && strcmp(n, "0") == 0;
        free(n);
        if (none)
            break;
        cr_assert(mono_ms() < deadline, "the removed replica's connections were not closed");
        usleep(5000);
    }
    PQfinish(side);
    fprintf(stderr, "host_list_update_under_load: added replica up %lld ms after the update; "
                    "0 checkouts failed\n",
            (long long)added_ms);
    free_balanced(c);
}

/* ------------------------------------------------------------------------ */
/* Bad input and unreachable hosts                                           */
/* ------------------------------------------------------------------------ */

Test(cluster, bad_input, .timeout = 60)
{
    respool_pg_cluster_t *c = (respool_pg_cluster_t *)1;
    char err[512];
    cr_expect_eq(respool_pg_cluster_create(NULL, "host=a", NULL, NULL, err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect_eq(respool_pg_cluster_create(&c, NULL, NULL, NULL, err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect_null(c);
    cr_expect_eq(respool_pg_cluster_create(&c, "host=a,b,c port=1,2", NULL, NULL, err,
                                           sizeof err),
                 RESPOOL_EINVAL);
    cr_expect(strstr(err, "port") != NULL, "%s", err);
    cr_expect_eq(respool_pg_cluster_create(&c, "host=a,a port=1", NULL, NULL, err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect(strstr(err, "listed twice") != NULL, "%s", err);
    cr_expect_eq(respool_pg_cluster_create(&c, "host=a,b target_session_attrs=read-write", NULL,
                                           NULL, err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect(strstr(err, "RESPOOL_PG_PRIMARY") != NULL, "%s", err);
    cr_expect_eq(respool_pg_cluster_create(&c, "host=a nonsense=1 password=s3cret", NULL, NULL,
                                           err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect(strstr(err, "s3cret") == NULL, "password in %s", err);
    respool_pg_cluster_config_t zero = {0};
    cr_expect_eq(respool_pg_cluster_create(&c, "host=a", &zero, NULL, err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect_null(c);

    respool_lease_t lease;
    cr_expect_eq(respool_pg_cluster_checkout(NULL, RESPOOL_PG_ANY, 0, &lease), RESPOOL_EINVAL);
    cr_expect_eq(respool_pg_cluster_checkin(NULL, &lease), RESPOOL_EINVAL);
    cr_expect_eq(respool_pg_cluster_host_count(NULL), 0);
    cr_expect_eq(respool_pg_cluster_shutdown(NULL, 0), RESPOOL_EINVAL);
    respool_pg_cluster_free(NULL);

    /* A lease of another pool, unknown targets. */
    c = make_cluster(cluster_url(), 1);
    cr_expect_eq(respool_pg_cluster_checkout(c, (respool_pg_target_t)7, 0, &lease),
                 RESPOOL_EINVAL);
    memset(&lease, 0, sizeof lease);
    cr_expect_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_EINVAL);
    cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_ANY, 2000, &lease), RESPOOL_OK);
    respool_lease_t copy = lease;
    cr_expect_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
    cr_expect_eq(respool_pg_cluster_checkin(c, &copy), RESPOOL_EINVAL, "a doubled lease");
    cr_expect_eq(respool_pg_cluster_set_hosts(c, "host=a port=1,2,3 hostaddr=1.2.3.4,5.6.7.8",
                                              err, sizeof err),
                 RESPOOL_EINVAL);
    cr_expect_eq(respool_pg_cluster_host_count(c), 2, "a refused update changed the list");
    free_balanced(c);
}

/* No host answers: create fails with each host's reason; one host down at
 * start: the pool starts on the others and routes around it. */
Test(cluster, unreachable_hosts, .timeout = 60)
{
    char url[256], err[2048];
    int p1 = closed_port(), p2 = closed_port();
    while (p2 == p1)
        p2 = closed_port();
    snprintf(url, sizeof url,
             "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=respool user=respool "
             "password=hunter2-secret",
             p1, p2);
    respool_pg_cluster_config_t cfg = cluster_cfg(1);
    respool_pg_cluster_t *c = NULL;
    cr_expect_eq(respool_pg_cluster_create(&c, url, &cfg, NULL, err, sizeof err),
                 RESPOOL_EFACTORY);
    cr_expect_null(c);
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "127.0.0.1:%d", p1);
    snprintf(n2, sizeof n2, "127.0.0.1:%d", p2);
    cr_expect(strstr(err, n1) && strstr(err, n2), "%s", err);
    cr_expect(strstr(err, "hunter2") == NULL, "password in %s", err);

    char primary[1024];
    cluster_url();
    node_url("primary", primary, sizeof primary);
    const char *list[] = {url, primary};
    cr_assert_eq(respool_pg_cluster_create_list(&c, list, 2, &cfg, NULL, err, sizeof err),
                 RESPOOL_OK, "%s", err);
    cr_expect_eq(respool_pg_cluster_host_count(c), 3);
    cr_expect_eq(host_info(c, 0).state, RESPOOL_PG_HOST_DOWN);
    cr_expect_eq(host_info(c, 1).state, RESPOOL_PG_HOST_DOWN);
    cr_expect_eq(host_info(c, 2).state, RESPOOL_PG_HOST_UP);
    cr_expect(strstr(host_info(c, 0).last_error, "hunter2") == NULL);
    for (int i = 0; i < 10; i++) {
        respool_lease_t lease;
        cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_ANY, 1000, &lease), RESPOOL_OK);
        cr_assert_eq(respool_pg_cluster_checkin(c, &lease), RESPOOL_OK);
    }
    cr_expect_eq(host_info(c, 2).checkouts, 10);
    /* No replica anywhere: a REPLICA checkout falls back to the primary. */
    respool_lease_t lease;
    cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_REPLICA, 1000, &lease), RESPOOL_OK);
    cr_expect(!in_recovery(respool_pg_conn(&lease)));
    respool_pg_cluster_checkin(c, &lease);
    /* Timeout 0 with the only fitting host busy: EFULL, explained. */
    cr_assert_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 0, &lease), RESPOOL_OK);
    respool_lease_t second;
    cr_expect_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 0, &second), RESPOOL_EFULL);
    cr_expect_eq(respool_pg_cluster_checkout(c, RESPOOL_PG_PRIMARY, 100, &second),
                 RESPOOL_ETIMEDOUT);
    char why[1024];
    cr_expect_gt(respool_pg_cluster_error(why, sizeof why), 0);
    cr_expect(strstr(why, "timed out") != NULL, "%s", why);
    cr_expect(strstr(why, "test_pg_cluster.c:") != NULL, "the holder's site is not named: %s",
              why);
    respool_pg_cluster_checkin(c, &lease);
    free_balanced(c);
}
