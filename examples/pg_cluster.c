/*
 * pg_cluster.c — read/write split over a primary and its replicas with one
 * respool cluster pool.
 *
 *   pg_cluster [CONNINFO]
 *
 * CONNINFO is a libpq multi-host conninfo ("host=db1,db2 port=5432,5432
 * dbname=app user=app"); default: $RESPOOL_PG_CLUSTER_URL, which
 * `scripts/with-pg-cluster build/examples/pg_cluster` sets to a throwaway
 * primary + streaming replica. Writes go to the primary
 * (RESPOOL_PG_PRIMARY), reads to a replica (RESPOOL_PG_REPLICA, or the
 * primary when no replica is up); then each host's role and load is shown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "respool_pg.h"

/* One write on the primary. */
static bool record_visit(PGconn *conn, void *arg)
{
    const char *page = arg;
    const char *params[1] = {page};
    PGresult *r = PQexecParams(conn, "INSERT INTO visits (page) VALUES ($1)", 1, NULL, params,
                               NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "insert: %s", PQerrorMessage(conn));
    PQclear(r);
    return ok;
}

/* One read on a replica: how many visits it has seen so far (replication
 * is asynchronous, so a replica may lag the primary a little). */
static bool count_visits(PGconn *conn, void *arg)
{
    long *count = arg;
    PGresult *r = PQexec(conn, "SELECT count(*) FROM visits");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok)
        *count = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok;
}

static bool create_table(PGconn *conn, void *arg)
{
    (void)arg;
    PGresult *r = PQexec(conn, "CREATE TABLE IF NOT EXISTS visits (page text, at timestamptz "
                               "DEFAULT now())");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "create table: %s", PQerrorMessage(conn));
    PQclear(r);
    return ok;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("RESPOOL_PG_CLUSTER_URL");
    if (!conninfo) {
        fprintf(stderr, "usage: pg_cluster CONNINFO (or set RESPOOL_PG_CLUSTER_URL)\n");
        return 2;
    }
    respool_pg_cluster_config_t cfg = {0};
    cfg.host.size = 4; /* connections per host */
    respool_pg_cluster_t *cluster;
    char err[1024];
    int rc = respool_pg_cluster_create(&cluster, conninfo, &cfg, NULL, err, sizeof err);
    if (rc != RESPOOL_OK) {
        fprintf(stderr, "respool_pg_cluster_create: %s: %s\n", respool_strerror(rc), err);
        return 1;
    }

    int failures = 0;
    if (respool_pg_cluster_run(cluster, RESPOOL_PG_PRIMARY, 5000, create_table, NULL) !=
        RESPOOL_OK)
        failures++;
    /* The replica gets the new table through streaming replication, a
     * little later than the primary: wait (bounded) until it can read it. */
    long seen = 0;
    for (int tries = 0; tries < 500; tries++) {
        if (respool_pg_cluster_run(cluster, RESPOOL_PG_REPLICA, 5000, count_visits, &seen) ==
            RESPOOL_OK)
            break;
        usleep(10 * 1000);
    }
    static const char *const pages[] = {"/", "/about", "/pricing", "/docs"};
    for (int i = 0; i < 40; i++) {
        rc = respool_pg_cluster_run(cluster, RESPOOL_PG_PRIMARY, 5000, record_visit,
                                    (void *)pages[i % 4]);
        if (rc == RESPOOL_OK)
            rc = respool_pg_cluster_run(cluster, RESPOOL_PG_REPLICA, 5000, count_visits, &seen);
        if (rc != RESPOOL_OK) {
            char why[1024];
            respool_pg_cluster_error(why, sizeof why);
            fprintf(stderr, "round %d: %s (%s)\n", i,
                    rc == RESPOOL_PG_EWORK ? "the query failed" : respool_strerror(rc), why);
            failures++;
        }
    }
    printf("the last read saw %ld visits\n", seen);

    for (size_t i = 0; i < respool_pg_cluster_host_count(cluster); i++) {
        respool_pg_host_info_t host;
        if (respool_pg_cluster_host(cluster, i, &host) != RESPOOL_OK)
            break;
        printf("%-40s %-8s %-6s%s %llu checkouts, %u connections\n", host.name,
               respool_pg_role_name(host.role), respool_pg_host_state_name(host.state),
               host.writer ? " writer" : "", (unsigned long long)host.checkouts,
               host.stats.idle + host.stats.busy);
    }
    rc = respool_pg_cluster_shutdown(cluster, 5000);
    respool_pg_cluster_free(cluster);
    return failures == 0 && rc == RESPOOL_OK ? 0 : 1;
}
