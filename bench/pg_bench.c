/*
 * pg_bench.c — respool's PostgreSQL adapter against the usual alternatives.
 *
 *   scripts/with-pg-sandbox build/bench/pg_bench      (from the repository root)
 *   build/bench/pg_bench [conninfo]                   (default: $RESPOOL_PG_URL)
 *
 * 32 client threads run one workload for a fixed time through one contender.
 * Workloads (the same SQL, the same checks, for every contender):
 *   select  SELECT 1; the result must be one row holding 1
 *   rw      BEGIN; UPDATE one random row of a 1000-row table (n = n + 1);
 *           SELECT that row; COMMIT. The UPDATE must touch one row, the
 *           SELECT return it, the COMMIT commit; after each run the table's
 *           sum(n) must have grown by exactly the number of COMMITs counted.
 * Contenders:
 *   respool    respool_pg_pool_create, 8 connections, respool_pg_run with a
 *              10 s checkout timeout
 *   dedicated  32 connections, one per thread: the ceiling
 *   new-conn   PQconnectdb + PQfinish around every transaction
 *   pgbouncer  PgBouncer in transaction pooling mode with 8 server
 *              connections (scripts/pgbouncer-sandbox), 127.0.0.1; each
 *              thread holds its own client connection to it
 * The direct contenders use the given conninfo (the sandbox's unix socket).
 *
 * Each run: connections opened (not timed), a warm-up (a tenth of the time,
 * 0.2-1 s), then the measured window. Throughput counts the transactions
 * that finished inside the window; latency is per transaction, from before
 * the checkout (respool) or connect (new-conn) to after the checkin or
 * PQfinish. Rounds are interleaved (each round runs every contender on both
 * workloads, starting with a different contender each round); the report
 * gives the median and min-max of tx/s over rounds, the median of the rounds'
 * p99, and ratios to respool. Any error (failed query, wrong result, checkout
 * timeout, lost COMMIT) is counted, and flagged in the table.
 *
 * Environment:
 *   RESPOOL_PG_URL               conninfo when no argument is given
 *   RESPOOL_BENCH_SECONDS        measured seconds per contender and round (5)
 *   RESPOOL_BENCH_ROUNDS         rounds (3)
 *   RESPOOL_BENCH_QUICK          set and not "0": 2 s and 1 round by default
 *   RESPOOL_BENCH_OUT            a directory: pg.tsv is written there
 *   RESPOOL_BENCH_PGBOUNCER_URL  a running PgBouncer to use instead of
 *                                starting scripts/pgbouncer-sandbox (which
 *                                the bench stops again if it started it)
 * Exit status: 0 when every contender ran without an error, 1 otherwise,
 * 2 for a usage error. The conninfo is never printed: it may hold a password.
 *
 * The bench creates, and drops at the end, the table respool_bench_rows.
 * One idle extra thread runs throughout, as in core_bench.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "respool.h"
#include "respool_pg.h"
#include "harness.h"

#define THREADS 32
#define POOL_SIZE 8
#define ROWS 1000
#define CHECKOUT_TIMEOUT_MS 10000L
#define SHUTDOWN_TIMEOUT_MS 10000L
#define ERROR_TEXT 256
#define TABLE "respool_bench_rows"
#define BOUNCER_SCRIPT "scripts/pgbouncer-sandbox"

/* ------------------------------------------------------------------------ */
/* Time, random numbers, small helpers                                       */
/* ------------------------------------------------------------------------ */

/* Scramble a seed (splitmix64), so that similar seeds give unrelated streams. */
static uint64_t scramble(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

/* Next number of a per-thread xorshift64* generator (state never 0). */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1du;
}

/* Copy libpq's (or our) message into err[errlen] as one line, without a
 * trailing newline, passwords scrubbed. */
static void set_error(char *err, size_t errlen, const char *what, const char *detail)
{
    char text[ERROR_TEXT * 2];
    snprintf(text, sizeof text, "%s%s%s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == ' ')
        text[--n] = '\0';
    respool_pg_scrub(NULL, text, err, errlen);
}

/* A notice receiver that drops notices (the admin connection's DROP TABLE IF
 * EXISTS would print one). */
static void ignore_notice(void *arg, const PGresult *res) {}

/* ------------------------------------------------------------------------ */
/* Runs, workers and the two workloads                                       */
/* ------------------------------------------------------------------------ */

struct run;

/* One client thread of a run. */
typedef struct worker {
    struct run *run;
    PGconn *conn;        /* dedicated and pgbouncer: this thread's connection */
    uint64_t rng;
    uint64_t done;       /* transactions finished inside the window */
    uint64_t commits;    /* rw: COMMITs that committed, whole run */
    uint64_t errors;     /* failed transactions, whole run */
    uint64_t *latency_ns; /* of the transactions finished inside the window */
    size_t latencies, latency_cap;
    char first_error[ERROR_TEXT];
} worker_t;

/* A workload: one transaction's SQL and checks, on a connection. */
typedef struct workload {
    const char *name;  /* TSV */
    const char *title; /* table */
    bool (*exec)(PGconn *conn, worker_t *w, char *err, size_t errlen);
    bool updates_table; /* check the table's sum(n) against the COMMITs counted */
} workload_t;

/* A contender: how a thread gets a connection for one transaction. */
typedef struct contender {
    const char *name;  /* TSV */
    const char *label; /* table */
    bool via_bouncer;  /* uses the PgBouncer conninfo */
    bool (*open)(struct run *run, char *err, size_t errlen);
    bool (*transact)(worker_t *w, char *err, size_t errlen);
    void (*close)(struct run *run);
} contender_t;

/* Everything one contender's run on one workload needs. */
typedef struct run {
    const contender_t *contender;
    const workload_t *workload;
    const char *conninfo; /* the server's, or PgBouncer's for via_bouncer */
    respool_t *pool;      /* respool */
    respool_stats_t stats; /* respool, taken before the pool is freed */
    int64_t t_start, t_end; /* the measured window (monotonic ns) */
    pthread_barrier_t go;
    worker_t workers[THREADS];
} run_t;

/* Does res have the status `want`? If not, describe the failure in err. */
static bool result_is(PGconn *conn, PGresult *res, ExecStatusType want, const char *what,
                      char *err, size_t errlen)
{
    if (res && PQresultStatus(res) == want)
        return true;
    set_error(err, errlen, what, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    return false;
}

/* Run a command without parameters and check its status; false with err. */
static bool exec_command(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = result_is(conn, res, PGRES_COMMAND_OK, sql, err, errlen);
    PQclear(res);
    return ok;
}

/* Workload select: SELECT 1 must return one row, one column, "1". */
static bool select_one(PGconn *conn, worker_t *w, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, "SELECT 1");
    bool ok = result_is(conn, res, PGRES_TUPLES_OK, "SELECT 1", err, errlen);
    if (ok && (PQntuples(res) != 1 || PQnfields(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "1"))) {
        set_error(err, errlen, "SELECT 1 returned something else than one row holding 1", NULL);
        ok = false;
    }
    PQclear(res);
    return ok;
}

/* The UPDATE and the SELECT of workload rw on row `id`; false with err. */
static bool update_and_read(PGconn *conn, const char *id, char *err, size_t errlen)
{
    const char *params[1] = {id};
    PGresult *res = PQexecParams(conn, "UPDATE " TABLE " SET n = n + 1 WHERE id = $1", 1, NULL,
                                 params, NULL, NULL, 0);
    bool ok = result_is(conn, res, PGRES_COMMAND_OK, "UPDATE", err, errlen);
    if (ok && strcmp(PQcmdTuples(res), "1") != 0) {
        set_error(err, errlen, "UPDATE did not update exactly one row", PQcmdTuples(res));
        ok = false;
    }
    PQclear(res);
    if (!ok)
        return false;
    res = PQexecParams(conn, "SELECT n FROM " TABLE " WHERE id = $1", 1, NULL, params, NULL, NULL,
                       0);
    ok = result_is(conn, res, PGRES_TUPLES_OK, "SELECT n", err, errlen);
    if (ok && (PQntuples(res) != 1 || PQnfields(res) != 1 || atoll(PQgetvalue(res, 0, 0)) < 1)) {
        set_error(err, errlen, "SELECT n did not return the updated row", NULL);
        ok = false;
    }
    PQclear(res);
    return ok;
}

/* Workload rw: BEGIN; UPDATE a random row; SELECT it; COMMIT. A failure
 * rolls back what is open, so no contender keeps a broken transaction. */
static bool read_write(PGconn *conn, worker_t *w, char *err, size_t errlen)
{
    char id[16];
    snprintf(id, sizeof id, "%u", (unsigned)(1 + next_random(&w->rng) % ROWS));
    bool ok = exec_command(conn, "BEGIN", err, errlen) && update_and_read(conn, id, err, errlen);
    if (ok) {
        PGresult *res = PQexec(conn, "COMMIT");
        ok = result_is(conn, res, PGRES_COMMAND_OK, "COMMIT", err, errlen);
        if (ok && strcmp(PQcmdStatus(res), "COMMIT") != 0) { /* "ROLLBACK": it aborted */
            set_error(err, errlen, "COMMIT did not commit", PQcmdStatus(res));
            ok = false;
        }
        PQclear(res);
        if (ok)
            w->commits++;
    }
    if (!ok && PQstatus(conn) == CONNECTION_OK &&
        (PQtransactionStatus(conn) == PQTRANS_INTRANS ||
         PQtransactionStatus(conn) == PQTRANS_INERROR)) {
        PQclear(PQexec(conn, "ROLLBACK"));
    }
    return ok;
}

static const workload_t workloads[] = {
    {"select1", "SELECT 1", select_one, false},
    {"rw", "read-write transaction (BEGIN; UPDATE 1 random row of 1000; SELECT it; COMMIT)",
     read_write, true},
};
#define N_WORKLOADS (sizeof workloads / sizeof workloads[0])

/* ------------------------------------------------------------------------ */
/* The contenders                                                            */
/* ------------------------------------------------------------------------ */

/* respool: a pool of POOL_SIZE connections made by the adapter. */
static bool respool_open(run_t *run, char *err, size_t errlen)
{
    respool_config_t cfg = {0};
    cfg.size = POOL_SIZE;
    char why[ERROR_TEXT];
    int rc = respool_pg_pool_create(&run->pool, run->conninfo, &cfg, NULL, why, sizeof why);
    if (rc != RESPOOL_OK) {
        set_error(err, errlen, respool_strerror(rc), why);
        return false;
    }
    return true;
}

/* What respool_pg_run passes to respool_job. */
typedef struct respool_job_arg {
    worker_t *w;
    char *err;
    size_t errlen;
} respool_job_arg_t;

/* The workload on a checked-out connection (respool_pg_run's fn). */
static bool respool_job(PGconn *conn, void *arg)
{
    respool_job_arg_t *job = arg;
    return job->w->run->workload->exec(conn, job->w, job->err, job->errlen);
}

/* respool: checkout (waiting up to 10 s), the workload, checkin. */
static bool respool_transact(worker_t *w, char *err, size_t errlen)
{
    respool_job_arg_t job = {w, err, errlen};
    int rc = respool_pg_run(w->run->pool, CHECKOUT_TIMEOUT_MS, respool_job, &job);
    if (rc == RESPOOL_OK)
        return true;
    if (rc != RESPOOL_PG_EWORK) /* the workload did not run: the checkout failed */
        set_error(err, errlen, "checkout", respool_strerror(rc));
    return false;
}

/* respool: keep the pool's stats, shut it down and free it. */
static void respool_close(run_t *run)
{
    respool_stats(run->pool, &run->stats);
    respool_shutdown(run->pool, SHUTDOWN_TIMEOUT_MS);
    respool_pg_pool_free(run->pool);
    run->pool = NULL;
}

/* dedicated, pgbouncer: one connection per thread, opened before the run. */
static bool connections_open(run_t *run, char *err, size_t errlen)
{
    for (int i = 0; i < THREADS; i++) {
        PGconn *conn = PQconnectdb(run->conninfo);
        run->workers[i].conn = conn;
        if (PQstatus(conn) != CONNECTION_OK) {
            set_error(err, errlen, "connect", PQerrorMessage(conn));
            return false;
        }
    }
    return true;
}

/* dedicated, pgbouncer: the workload on the thread's own connection, which
 * is reconnected first if an earlier transaction broke it. */
static bool connection_transact(worker_t *w, char *err, size_t errlen)
{
    if (PQstatus(w->conn) != CONNECTION_OK) {
        PQreset(w->conn);
        if (PQstatus(w->conn) != CONNECTION_OK) {
            set_error(err, errlen, "reconnect", PQerrorMessage(w->conn));
            return false;
        }
    }
    return w->run->workload->exec(w->conn, w, err, errlen);
}

/* dedicated, pgbouncer: close every thread's connection. */
static void connections_close(run_t *run)
{
    for (int i = 0; i < THREADS; i++) {
        PQfinish(run->workers[i].conn); /* NULL is fine */
        run->workers[i].conn = NULL;
    }
}

/* new-conn: nothing to open before the run. */
static bool nothing_open(run_t *run, char *err, size_t errlen) { return true; }

/* new-conn: connect, run the workload, disconnect. */
static bool new_connection_transact(worker_t *w, char *err, size_t errlen)
{
    PGconn *conn = PQconnectdb(w->run->conninfo);
    bool ok;
    if (PQstatus(conn) != CONNECTION_OK) {
        set_error(err, errlen, "connect", PQerrorMessage(conn));
        ok = false;
    } else {
        ok = w->run->workload->exec(conn, w, err, errlen);
    }
    PQfinish(conn);
    return ok;
}

/* new-conn: nothing to close. */
static void nothing_close(run_t *run) {}

static const contender_t contenders[] = {
    {"respool", "respool, 8 connections", false, respool_open, respool_transact, respool_close},
    {"dedicated", "dedicated, 32 connections", false, connections_open, connection_transact,
     connections_close},
    {"new-conn", "new connection per tx", false, nothing_open, new_connection_transact,
     nothing_close},
    {"pgbouncer", "PgBouncer, 8 server conns", true, connections_open, connection_transact,
     connections_close},
};
#define N_CONTENDERS (sizeof contenders / sizeof contenders[0])
#define RESPOOL_INDEX 0

/* ------------------------------------------------------------------------ */
/* One run                                                                   */
/* ------------------------------------------------------------------------ */

/* What one run measured. */
typedef struct result {
    bool ran;              /* false: skipped (no PgBouncer) */
    double tx_per_s;
    double p99_us;
    uint64_t errors;
    uint64_t commits;
    char first_error[ERROR_TEXT];
    respool_stats_t stats; /* respool only */
} result_t;

/* Keep one latency sample (growing the worker's array as needed). */
static void record_latency(worker_t *w, uint64_t ns)
{
    if (w->latencies == w->latency_cap) {
        size_t cap = w->latency_cap ? w->latency_cap * 2 : 4096;
        uint64_t *grown = realloc(w->latency_ns, cap * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "pg_bench: out of memory\n");
            abort();
        }
        w->latency_ns = grown;
        w->latency_cap = cap;
    }
    w->latency_ns[w->latencies++] = ns;
}

/* A client thread: transactions until the window closes. A failed one is
 * counted, its first message kept, and followed by a 1 ms pause so that a
 * contender that fails fast does not spin. */
static void *worker_main(void *arg)
{
    worker_t *w = arg;
    run_t *run = w->run;
    pthread_barrier_wait(&run->go); /* t_start and t_end are set */
    for (;;) {
        int64_t t0 = now_ns();
        if (t0 >= run->t_end)
            break;
        char err[ERROR_TEXT] = "";
        bool ok = run->contender->transact(w, err, sizeof err);
        int64_t t1 = now_ns();
        if (!ok) {
            w->errors++;
            if (!w->first_error[0])
                snprintf(w->first_error, sizeof w->first_error, "%s",
                         err[0] ? err : "unknown error");
            sleep_ns(1000000);
        } else if (t1 >= run->t_start && t1 <= run->t_end) {
            w->done++;
            record_latency(w, (uint64_t)(t1 - t0));
        }
    }
    return NULL;
}

/* Order uint64_t values for qsort. */
static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The 99th percentile (nearest rank) of every worker's samples, in us. */
static double p99_us(run_t *run)
{
    size_t n = 0;
    for (int i = 0; i < THREADS; i++)
        n += run->workers[i].latencies;
    if (n == 0)
        return 0;
    uint64_t *all = malloc(n * sizeof *all);
    if (!all) {
        fprintf(stderr, "pg_bench: out of memory\n");
        abort();
    }
    size_t at = 0;
    for (int i = 0; i < THREADS; i++) {
        memcpy(all + at, run->workers[i].latency_ns,
               run->workers[i].latencies * sizeof *all);
        at += run->workers[i].latencies;
    }
    qsort(all, n, sizeof *all, compare_u64);
    size_t rank = (99 * n + 99) / 100; /* ceil(0.99 n) */
    double us = (double)all[rank - 1] / 1e3;
    free(all);
    return us;
}

/* Run `workload` through `contender` with THREADS threads: open, warm up
 * for warmup_s, measure for seconds, close. */
static result_t run_contender(const contender_t *contender, const workload_t *workload,
                              const char *conninfo, double seconds, double warmup_s,
                              uint64_t seed)
{
    static run_t run; /* big; one run at a time */
    memset(&run, 0, sizeof run);
    run.contender = contender;
    run.workload = workload;
    run.conninfo = conninfo;
    result_t out = {.ran = true};

    char err[ERROR_TEXT] = "";
    if (!contender->open(&run, err, sizeof err)) {
        contender->close(&run);
        out.errors = 1;
        snprintf(out.first_error, sizeof out.first_error, "setup: %s", err);
        return out;
    }
    pthread_barrier_init(&run.go, NULL, THREADS + 1);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        worker_t *w = &run.workers[i];
        w->run = &run;
        w->rng = scramble(seed * THREADS + (uint64_t)i) | 1;
        if (pthread_create(&threads[i], NULL, worker_main, w) != 0) {
            fprintf(stderr, "pg_bench: cannot start thread %d\n", i);
            exit(1);
        }
    }
    run.t_start = now_ns() + (int64_t)(warmup_s * 1e9);
    run.t_end = run.t_start + (int64_t)(seconds * 1e9);
    pthread_barrier_wait(&run.go);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&run.go);

    uint64_t done = 0;
    for (int i = 0; i < THREADS; i++) {
        worker_t *w = &run.workers[i];
        done += w->done;
        out.errors += w->errors;
        out.commits += w->commits;
        if (!out.first_error[0] && w->first_error[0])
            snprintf(out.first_error, sizeof out.first_error, "%s", w->first_error);
    }
    out.tx_per_s = (double)done / seconds;
    out.p99_us = p99_us(&run);
    contender->close(&run);
    out.stats = run.stats;
    for (int i = 0; i < THREADS; i++)
        free(run.workers[i].latency_ns);
    return out;
}

/* ------------------------------------------------------------------------ */
/* The table, the server's identity, PgBouncer                               */
/* ------------------------------------------------------------------------ */

/* Run one SQL string on the admin connection; false with a message. */
static bool admin_exec(PGconn *admin, const char *sql)
{
    PGresult *res = PQexec(admin, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        char err[ERROR_TEXT];
        set_error(err, sizeof err, "", PQresultErrorMessage(res));
        fprintf(stderr, "pg_bench: %s failed%s\n", sql, err);
    }
    PQclear(res);
    return ok;
}

/* Make the table of workload rw: ROWS rows (id, n = 0). */
static bool create_table(PGconn *admin)
{
    return admin_exec(admin, "DROP TABLE IF EXISTS " TABLE) &&
           admin_exec(admin, "CREATE TABLE " TABLE " (id integer PRIMARY KEY, n bigint NOT NULL)") &&
           admin_exec(admin, "INSERT INTO " TABLE " SELECT g, 0 FROM generate_series(1, 1000) g") &&
           admin_exec(admin, "VACUUM ANALYZE " TABLE);
}

/* sum(n) of the table, or -1 (with a message) on failure. */
static long long table_sum(PGconn *admin)
{
    PGresult *res = PQexec(admin, "SELECT sum(n) FROM " TABLE);
    long long sum = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        sum = atoll(PQgetvalue(res, 0, 0));
    else
        fprintf(stderr, "pg_bench: SELECT sum(n) failed: %s", PQerrorMessage(admin));
    PQclear(res);
    return sum;
}

/* The server a connection reaches, as "version|port|start time" (to check
 * that PgBouncer fronts the same server); false with err. */
static bool server_identity(const char *conninfo, char *out, size_t outlen, char *err,
                            size_t errlen)
{
    PGconn *conn = PQconnectdb(conninfo);
    bool ok = false;
    if (PQstatus(conn) != CONNECTION_OK) {
        set_error(err, errlen, "connect", PQerrorMessage(conn));
    } else {
        PGresult *res = PQexec(conn, "SELECT current_setting('server_version') || '|' || "
                                     "current_setting('port') || '|' || "
                                     "pg_postmaster_start_time()::text");
        ok = result_is(conn, res, PGRES_TUPLES_OK, "identity query", err, errlen) &&
             PQntuples(res) == 1;
        if (ok)
            snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    PQfinish(conn);
    return ok;
}

/* Where scripts/pgbouncer-sandbox is: in the working directory (the
 * repository root, as make runs us), else two levels above this binary
 * (build/bench/pg_bench). Empty when neither has it. */
static void find_bouncer_script(char *path, size_t len)
{
    path[0] = '\0';
    if (access(BOUNCER_SCRIPT, X_OK) == 0) {
        snprintf(path, len, "%s", BOUNCER_SCRIPT);
        return;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    for (int up = 0; up < 3; up++) { /* strip pg_bench, bench, build */
        char *slash = strrchr(exe, '/');
        if (!slash)
            return;
        *slash = '\0';
    }
    char candidate[4200];
    int n_written = snprintf(candidate, sizeof candidate, "%s/%s", exe, BOUNCER_SCRIPT);
    if (n_written > 0 && (size_t)n_written < len && access(candidate, X_OK) == 0 &&
        !strchr(candidate, '\''))
        memcpy(path, candidate, (size_t)n_written + 1);
}

/* Run `'script' command` through the shell; its first stdout line goes into
 * line[len] (may be NULL). Returns the exit status (-1: could not run). */
static int run_script(const char *script, const char *command, char *line, size_t len)
{
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "'%s' %s", script, command);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char buf[1024] = "";
    if (!fgets(buf, sizeof buf, p))
        buf[0] = '\0';
    while (fgetc(p) != EOF) {
    }
    int status = pclose(p);
    buf[strcspn(buf, "\n")] = '\0';
    if (line)
        snprintf(line, len, "%s", buf);
    return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The PgBouncer state of this run of the bench. */
typedef struct bouncer {
    char conninfo[1024]; /* empty: not available */
    char why_not[ERROR_TEXT + 32];
    char script[4096];   /* set when we started it (and must stop it) */
} bouncer_t;

/* Find or start PgBouncer and check that it fronts the server `identity`. */
static void bouncer_setup(bouncer_t *b, const char *identity)
{
    const char *given = getenv("RESPOOL_BENCH_PGBOUNCER_URL");
    if (given && *given) {
        snprintf(b->conninfo, sizeof b->conninfo, "%s", given);
    } else {
        char script[4096];
        find_bouncer_script(script, sizeof script);
        if (!script[0]) {
            snprintf(b->why_not, sizeof b->why_not,
                     BOUNCER_SCRIPT " not found (run from the repository root, or set "
                                    "RESPOOL_BENCH_PGBOUNCER_URL)");
            return;
        }
        bool was_running = run_script(script, "status >/dev/null 2>&1", NULL, 0) == 0;
        if (run_script(script, "start", b->conninfo, sizeof b->conninfo) != 0 ||
            !b->conninfo[0]) {
            b->conninfo[0] = '\0';
            snprintf(b->why_not, sizeof b->why_not, BOUNCER_SCRIPT " start failed (see above)");
            return;
        }
        if (!was_running)
            snprintf(b->script, sizeof b->script, "%s", script);
    }
    char theirs[512], err[ERROR_TEXT];
    if (!server_identity(b->conninfo, theirs, sizeof theirs, err, sizeof err)) {
        snprintf(b->why_not, sizeof b->why_not, "PgBouncer: %s", err);
        b->conninfo[0] = '\0';
    } else if (strcmp(theirs, identity) != 0) {
        snprintf(b->why_not, sizeof b->why_not,
                 "PgBouncer fronts another server than the given conninfo");
        b->conninfo[0] = '\0';
    }
}

/* Stop PgBouncer if this bench started it. */
static void bouncer_teardown(bouncer_t *b)
{
    if (b->script[0] && run_script(b->script, "stop", NULL, 0) != 0)
        fprintf(stderr, "pg_bench: " BOUNCER_SCRIPT " stop failed\n");
}

/* ------------------------------------------------------------------------ */
/* Settings and the report                                                   */
/* ------------------------------------------------------------------------ */

/* What the command line and the environment ask for. */
typedef struct settings {
    const char *conninfo;
    double seconds;
    unsigned rounds;
    const char *out_dir;
} settings_t;

/* Read a number in (0, maximum] from the environment variable `name`; false
 * (with a message) if it is set but not such a number. */
static bool read_number(const char *name, double fallback, double maximum, double *out)
{
    const char *text = getenv(name);
    *out = fallback;
    if (!text || !*text)
        return true;
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value > 0 && value <= maximum)) {
        fprintf(stderr, "pg_bench: %s must be a number above 0, at most %g (got \"%s\")\n", name,
                maximum, text);
        return false;
    }
    *out = value;
    return true;
}

/* Fill s from argv and the environment; false (with a message) on misuse. */
static bool read_settings(int argc, char **argv, settings_t *s)
{
    if (argc > 2 || (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
        fprintf(stderr, "usage: pg_bench [conninfo]   (default: $RESPOOL_PG_URL)\n"
                        "environment: RESPOOL_BENCH_SECONDS (5), RESPOOL_BENCH_ROUNDS (3),\n"
                        "  RESPOOL_BENCH_QUICK=1 (2 s, 1 round), RESPOOL_BENCH_OUT (directory\n"
                        "  for pg.tsv), RESPOOL_BENCH_PGBOUNCER_URL (a running PgBouncer)\n"
                        "e.g. scripts/with-pg-sandbox build/bench/pg_bench\n");
        return false;
    }
    s->conninfo = argc == 2 ? argv[1] : getenv("RESPOOL_PG_URL");
    if (!s->conninfo || !*s->conninfo) {
        fprintf(stderr, "pg_bench: no conninfo: give one or set RESPOOL_PG_URL "
                        "(scripts/with-pg-sandbox does)\n");
        return false;
    }
    const char *quick = getenv("RESPOOL_BENCH_QUICK");
    bool is_quick = quick && *quick && strcmp(quick, "0") != 0;
    double rounds;
    if (!read_number("RESPOOL_BENCH_SECONDS", is_quick ? 2 : 5, 3600, &s->seconds) ||
        !read_number("RESPOOL_BENCH_ROUNDS", is_quick ? 1 : 3, MAX_ROUNDS, &rounds))
        return false;
    s->rounds = (unsigned)rounds;
    if ((double)s->rounds != rounds) {
        fprintf(stderr, "pg_bench: RESPOOL_BENCH_ROUNDS must be a whole number\n");
        return false;
    }
    s->out_dir = getenv("RESPOOL_BENCH_OUT");
    return true;
}

/* Median of v[n], through the harness's series. */
static double median(const double *v, unsigned n)
{
    series_t series = {.count = 0};
    for (unsigned i = 0; i < n; i++)
        series_add(&series, v[i]);
    return series_summary(&series).median;
}

/* One contender's summary over the rounds of one workload. */
typedef struct contender_summary {
    bool ran;
    double tx_median, tx_min, tx_max, p99_median_us;
    uint64_t errors;
    const char *first_error;
} contender_summary_t;

/* Summarize results[rounds] of one contender and workload. */
static contender_summary_t summarize(const result_t *results, unsigned rounds)
{
    contender_summary_t s = {.ran = results[0].ran};
    if (!s.ran)
        return s;
    double tx[MAX_ROUNDS], p99[MAX_ROUNDS];
    for (unsigned r = 0; r < rounds; r++) {
        tx[r] = results[r].tx_per_s;
        p99[r] = results[r].p99_us;
        s.errors += results[r].errors;
        if (!s.first_error && results[r].first_error[0])
            s.first_error = results[r].first_error;
    }
    series_t series = {.count = 0};
    for (unsigned r = 0; r < rounds; r++)
        series_add(&series, tx[r]);
    summary_t tx_summary = series_summary(&series);
    s.tx_median = tx_summary.median;
    s.tx_min = tx_summary.min;
    s.tx_max = tx_summary.max;
    s.p99_median_us = median(p99, rounds);
    return s;
}

/* The respool line under a table: how many checkouts waited and how long. */
static void print_respool_waits(const result_t *results, unsigned rounds)
{
    double share[MAX_ROUNDS], mean_ms[MAX_ROUNDS], max_ms = 0;
    for (unsigned r = 0; r < rounds; r++) {
        const respool_stats_t *st = &results[r].stats;
        share[r] = st->checkouts ? 100.0 * (double)st->waits / (double)st->checkouts : 0;
        mean_ms[r] = st->waits ? (double)st->wait_ns_total / (double)st->waits / 1e6 : 0;
        if ((double)st->wait_ns_max / 1e6 > max_ms)
            max_ms = (double)st->wait_ns_max / 1e6;
    }
    printf("  respool checkouts that waited: %.0f%%, mean wait %.2f ms (medians over rounds, "
           "warm-up included); longest %.1f ms\n",
           median(share, rounds), median(mean_ms, rounds), max_ms);
}

/* Print the table of one workload, and append its rows to tsv (may be NULL).
 * Returns whether every contender ran without an error. */
static bool report_workload(const workload_t *wl, result_t results[][MAX_ROUNDS],
                            unsigned rounds, const bouncer_t *bouncer, FILE *tsv)
{
    contender_summary_t sum[N_CONTENDERS];
    for (size_t c = 0; c < N_CONTENDERS; c++)
        sum[c] = summarize(results[c], rounds);
    const contender_summary_t *base = &sum[RESPOOL_INDEX];
    bool clean = true;

    printf("\n%s\n", wl->title);
    printf("  %-27s %9s %17s %9s %9s %9s %7s\n", "contender", "tx/s", "[min - max]",
           "vs respool", "p99 ms", "vs respool", "errors");
    for (size_t c = 0; c < N_CONTENDERS; c++) {
        const contender_summary_t *s = &sum[c];
        if (!s->ran) {
            printf("  %-27s skipped: %s\n", contenders[c].label, bouncer->why_not);
            clean = false;
            continue;
        }
        double tx_ratio = base->tx_median > 0 ? s->tx_median / base->tx_median : 0;
        double p99_ratio = base->p99_median_us > 0 ? s->p99_median_us / base->p99_median_us : 0;
        char range[40], p99[24] = "-", p99_vs[24] = "-";
        snprintf(range, sizeof range, "[%.0f - %.0f]", s->tx_min, s->tx_max);
        if (s->p99_median_us > 0)
            snprintf(p99, sizeof p99, "%.2f", s->p99_median_us / 1e3);
        if (p99_ratio > 0)
            snprintf(p99_vs, sizeof p99_vs, "%.2fx", p99_ratio);
        printf("  %-27s %9.0f %17s %8.2fx %9s %9s %7" PRIu64 "%s\n", contenders[c].label,
               s->tx_median, range, tx_ratio, p99, p99_vs, s->errors,
               s->errors ? "  << ERRORS" : "");
        if (s->errors)
            clean = false;
        if (tsv)
            fprintf(tsv, "%s\t%s\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%" PRIu64 "\n", wl->name,
                    contenders[c].name, s->tx_median, s->tx_min, s->tx_max, s->p99_median_us,
                    tx_ratio, s->errors);
    }
    if (sum[RESPOOL_INDEX].ran)
        print_respool_waits(results[RESPOOL_INDEX], rounds);
    for (size_t c = 0; c < N_CONTENDERS; c++)
        if (sum[c].ran && sum[c].errors)
            printf("  %s: %" PRIu64 " errors; first: %s\n", contenders[c].name, sum[c].errors,
                   sum[c].first_error ? sum[c].first_error : "?");
    return clean;
}

/* Open $RESPOOL_BENCH_OUT/pg.tsv (making the directory) with its header;
 * NULL with a message on failure. */
static FILE *open_tsv(const char *dir)
{
    if (!make_directories(dir)) {
        fprintf(stderr, "pg_bench: cannot make %s: %s\n", dir, strerror(errno));
        return NULL;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/pg.tsv", dir) >= (int)sizeof path) {
        fprintf(stderr, "pg_bench: RESPOOL_BENCH_OUT is too long\n");
        return NULL;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "pg_bench: cannot write %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "workload\tcontender\ttx_per_s_median\ttx_per_s_min\ttx_per_s_max\tp99_us\t"
               "ratio\terrors\n");
    return f;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

/* Run one contender on one workload and check the rw table afterwards: its
 * sum(n) must have grown by the COMMITs counted (a mismatch is an error). */
static result_t measure(PGconn *admin, const contender_t *c, const workload_t *wl,
                        const char *conninfo, const settings_t *s, double warmup_s,
                        unsigned round, uint64_t seed)
{
    bool rw = wl->updates_table;
    long long before = 0;
    if (rw) {
        admin_exec(admin, "VACUUM " TABLE); /* every contender starts from a clean table */
        before = table_sum(admin);
    }
    result_t r = run_contender(c, wl, conninfo, s->seconds, warmup_s, seed);
    if (rw) {
        long long after = table_sum(admin);
        if (before < 0 || after < 0 || (uint64_t)(after - before) != r.commits) {
            r.errors++;
            if (!r.first_error[0])
                snprintf(r.first_error, sizeof r.first_error,
                         "sum(n) grew by %lld, but %" PRIu64 " COMMITs succeeded",
                         after - before, r.commits);
        }
    }
    fprintf(stderr,
            "pg_bench: round %u/%u %-8s %-10s %8.0f tx/s  p99 %8.2f ms  errors %" PRIu64 "\n",
            round + 1, s->rounds, wl->name, c->name, r.tx_per_s, r.p99_us / 1e3, r.errors);
    return r;
}

int main(int argc, char **argv)
{
    settings_t s;
    if (!read_settings(argc, argv, &s))
        return 2;
    double warmup_s = s.seconds / 10;
    warmup_s = warmup_s < 0.2 ? 0.2 : warmup_s > 1 ? 1 : warmup_s;

    start_idle_thread();

    PGconn *admin = PQconnectdb(s.conninfo);
    if (PQstatus(admin) != CONNECTION_OK) {
        char err[ERROR_TEXT];
        set_error(err, sizeof err, "cannot connect", PQerrorMessage(admin));
        fprintf(stderr, "pg_bench: %s\n", err);
        return 1;
    }
    PQsetNoticeReceiver(admin, ignore_notice, NULL);
    char identity[512], err[ERROR_TEXT];
    if (!create_table(admin)) {
        PQfinish(admin);
        return 1;
    }
    if (!server_identity(s.conninfo, identity, sizeof identity, err, sizeof err)) {
        fprintf(stderr, "pg_bench: %s\n", err);
        PQfinish(admin);
        return 1;
    }
    bouncer_t bouncer = {0};
    bouncer_setup(&bouncer, identity);
    if (!bouncer.conninfo[0])
        fprintf(stderr, "pg_bench: PgBouncer contender skipped: %s\n", bouncer.why_not);

    int64_t t0 = now_ns();
    static result_t results[N_WORKLOADS][N_CONTENDERS][MAX_ROUNDS];
    for (unsigned r = 0; r < s.rounds; r++) {
        for (size_t w = 0; w < N_WORKLOADS; w++) {
            for (size_t k = 0; k < N_CONTENDERS; k++) {
                size_t c = (k + r) % N_CONTENDERS; /* a different first one each round */
                const contender_t *con = &contenders[c];
                if (con->via_bouncer && !bouncer.conninfo[0])
                    continue; /* results stay .ran = false */
                results[w][c][r] = measure(admin, con, &workloads[w],
                                           con->via_bouncer ? bouncer.conninfo : s.conninfo,
                                           &s, warmup_s, r, r * 1000 + w * 100 + c);
            }
        }
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    bouncer_teardown(&bouncer);
    admin_exec(admin, "DROP TABLE IF EXISTS " TABLE);
    PQfinish(admin);

    printf("pg_bench: %d threads, %u round%s of %.1f s per contender and workload "
           "(+%.1f s warm-up), interleaved; PostgreSQL %.*s; took %.0f s\n",
           THREADS, s.rounds, s.rounds == 1 ? "" : "s", s.seconds, warmup_s,
           (int)strcspn(identity, "|"), identity, elapsed);
    printf("tx/s: median [min - max] over rounds; p99: median over rounds of the p99 latency per "
           "transaction (checkout or connect included)\n");
    FILE *tsv = s.out_dir && *s.out_dir ? open_tsv(s.out_dir) : NULL;
    bool clean = true;
    for (size_t w = 0; w < N_WORKLOADS; w++)
        clean &= report_workload(&workloads[w], results[w], s.rounds, &bouncer, tsv);
    if (tsv && fclose(tsv) != 0) {
        fprintf(stderr, "pg_bench: writing pg.tsv failed\n");
        clean = false;
    }
    if (s.out_dir && *s.out_dir && !tsv)
        clean = false;

    stop_idle_thread();
    return clean ? 0 : 1;
}
