/*
 * pg_demo.c — many threads sharing a few PostgreSQL connections through respool.
 *
 * 32 worker threads move money between 1000 bank accounts for 10 seconds,
 * sharing a pool of only 8 libpq connections. Each transfer checks a
 * connection out of the pool, runs one transaction (BEGIN; two UPDATEs;
 * COMMIT) and checks the connection back in. A progress line is printed every
 * second. At the end the program shows the throughput, how long threads waited
 * in respool_checkout (p50, p99, max), how many connections the pool opened
 * and closed, and checks that no money was created or lost on the way.
 *
 * Run it with `make demo`, or by hand from the repository root:
 *
 *   scripts/pg-sandbox start          starts a throwaway server, prints its conninfo
 *   build/examples/pg_demo "$(scripts/pg-sandbox url)"
 *
 * Usage: pg_demo [conninfo]      (default: the environment variable RESPOOL_PG_URL)
 * Environment: RESPOOL_DEMO_SECONDS (10), RESPOOL_DEMO_THREADS (32),
 *              RESPOOL_DEMO_POOL (8: connections in the pool).
 * Exit status: 0 when money is conserved, every connection opened was closed
 * and at least one transfer committed; 1 otherwise; 2 for a usage error.
 * The conninfo is never printed: it may hold a password.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "respool.h"
#include "respool_pg.h"

#define ACCOUNT_COUNT 1000
#define INITIAL_BALANCE 1000
#define MAX_TRANSFER_AMOUNT 100
#define CHECKOUT_TIMEOUT_MS 5000L
#define SHUTDOWN_TIMEOUT_MS 10000L
#define MAX_PROBLEMS_SHOWN 5 /* worker errors printed; the rest are only counted */

/* ------------------------------------------------------------------------ */
/* Settings                                                                  */
/* ------------------------------------------------------------------------ */

/* What the command line and the environment ask for. */
typedef struct settings {
    const char *conninfo;
    double seconds;
    unsigned threads;
    unsigned pool_size;
} settings_t;

/* Print how to run the program. */
static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: pg_demo [conninfo]\n"
            "  conninfo   a libpq connection string or postgres:// URI;\n"
            "             default: the environment variable RESPOOL_PG_URL\n"
            "             e.g. pg_demo \"$(scripts/pg-sandbox url)\"\n"
            "environment:\n"
            "  RESPOOL_DEMO_SECONDS   how long the workers run (default 10)\n"
            "  RESPOOL_DEMO_THREADS   worker threads (default 32)\n"
            "  RESPOOL_DEMO_POOL      connections in the pool (default 8)\n");
}

/* Read a positive number of seconds from the environment variable `name`;
 * false (with a message) if it is set but not a number in (0, 3600]. */
static bool read_seconds(const char *name, double fallback, double *out)
{
    const char *text = getenv(name);
    *out = fallback;
    if (!text || !*text)
        return true;
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value > 0 && value <= 3600)) {
        fprintf(stderr, "pg_demo: %s must be a number of seconds from 0 to 3600 (got \"%s\")\n",
                name, text);
        return false;
    }
    *out = value;
    return true;
}

/* Read a whole number in [minimum, maximum] from the environment variable
 * `name`; false (with a message) if it is set but not such a number. */
static bool read_count(const char *name, unsigned fallback, unsigned minimum, unsigned maximum,
                       unsigned *out)
{
    const char *text = getenv(name);
    *out = fallback;
    if (!text || !*text)
        return true;
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < (long)minimum ||
        value > (long)maximum) {
        fprintf(stderr, "pg_demo: %s must be a whole number from %u to %u (got \"%s\")\n", name,
                minimum, maximum, text);
        return false;
    }
    *out = (unsigned)value;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Time and random numbers                                                   */
/* ------------------------------------------------------------------------ */

/* Nanoseconds on the monotonic clock (not affected by clock changes). */
static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* Sleep until the monotonic clock reads `deadline_ns`. */
static void sleep_until(uint64_t deadline_ns)
{
    struct timespec until = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                             .tv_nsec = (long)(deadline_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
    }
}

/* Scramble a number well (splitmix64): turns similar seeds into unrelated ones. */
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

/* ------------------------------------------------------------------------ */
/* Checkout wait histogram                                                   */
/* ------------------------------------------------------------------------ */

/* Log-linear buckets of nanoseconds: every power of two is split into 16
 * equal sub-buckets, so a bucket is at most ~6 % wide, in fixed memory. */
#define SUB_BUCKETS 16
#define SUB_BUCKET_BITS 4
#define HISTOGRAM_BUCKETS (64 * SUB_BUCKETS)

typedef struct wait_histogram {
    uint64_t counts[HISTOGRAM_BUCKETS];
    uint64_t samples;
    uint64_t max_ns;
} wait_histogram_t;

/* The bucket that holds `ns`: values below 16 have one each; above, the
 * bucket is picked by the top bit and the 4 bits after it. */
static unsigned bucket_of(uint64_t ns)
{
    if (ns < SUB_BUCKETS)
        return (unsigned)ns;
    unsigned top_bit = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = top_bit - SUB_BUCKET_BITS;
    return (shift + 1) * SUB_BUCKETS + (unsigned)((ns >> shift) & (SUB_BUCKETS - 1));
}

/* The middle of the range of values bucket `bucket` holds. */
static uint64_t bucket_middle(unsigned bucket)
{
    if (bucket < SUB_BUCKETS)
        return bucket;
    unsigned shift = bucket / SUB_BUCKETS - 1;
    uint64_t low = (uint64_t)(SUB_BUCKETS + bucket % SUB_BUCKETS) << shift;
    return low + (((uint64_t)1 << shift) >> 1);
}

/* Count one wait. */
static void histogram_record(wait_histogram_t *h, uint64_t ns)
{
    h->counts[bucket_of(ns)]++;
    h->samples++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

/* Add the counts of `from` into `into`. */
static void histogram_merge(wait_histogram_t *into, const wait_histogram_t *from)
{
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->samples += from->samples;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

/* The wait that `fraction` (0..1) of all waits were at most, to within a bucket. */
static uint64_t histogram_percentile(const wait_histogram_t *h, double fraction)
{
    uint64_t rank = (uint64_t)(fraction * (double)h->samples + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t middle = bucket_middle(i);
            return middle < h->max_ns ? middle : h->max_ns;
        }
    }
    return h->max_ns;
}

/* Write a duration in a unit that suits its size: "850 ns", "12 µs", "1.2 ms". */
static void format_duration(uint64_t ns, char *out, size_t size)
{
    if (ns < 1000)
        snprintf(out, size, "%" PRIu64 " ns", ns);
    else if (ns < 10000)
        snprintf(out, size, "%.1f µs", (double)ns / 1e3);
    else if (ns < 1000000)
        snprintf(out, size, "%.0f µs", (double)ns / 1e3);
    else if (ns < 100000000)
        snprintf(out, size, "%.1f ms", (double)ns / 1e6);
    else if (ns < 1000000000)
        snprintf(out, size, "%.0f ms", (double)ns / 1e6);
    else
        snprintf(out, size, "%.2f s", (double)ns / 1e9);
}

/* ------------------------------------------------------------------------ */
/* Output shared by the threads                                              */
/* ------------------------------------------------------------------------ */

static pthread_mutex_t output_lock = PTHREAD_MUTEX_INITIALIZER;
static bool stdout_is_terminal;
static bool progress_line_open; /* a '\r' progress line without its newline (output_lock) */
static unsigned problems_seen;  /* worker problems so far (output_lock) */
static atomic_bool pool_is_open; /* respool_pg_pool_create has succeeded */

/* End an open progress line so the next message starts on a line of its own
 * (output_lock held). */
static void close_progress_line(void)
{
    if (progress_line_open) {
        fputc('\n', stdout);
        fflush(stdout);
        progress_line_open = false;
    }
}

/* Print the progress line: rewritten in place on a terminal, one line per
 * report otherwise. */
static void print_progress(double elapsed_seconds, uint64_t committed, double per_second,
                           uint64_t failed)
{
    pthread_mutex_lock(&output_lock);
    printf("%s  %5.1f s   %9" PRIu64 " committed   %7.0f tx/s   %" PRIu64 " failed%s",
           stdout_is_terminal ? "\r" : "", elapsed_seconds, committed, per_second, failed,
           stdout_is_terminal ? "   " /* covers a longer previous line */ : "\n");
    fflush(stdout);
    progress_line_open = stdout_is_terminal;
    pthread_mutex_unlock(&output_lock);
}

/* Print a line on stderr without mangling the progress line. */
static void print_message(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pthread_mutex_lock(&output_lock);
    close_progress_line();
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    pthread_mutex_unlock(&output_lock);
    va_end(args);
}

/* Report a failed transfer: the first few are printed, later ones only counted. */
static void report_problem(unsigned worker, const char *what, const char *detail)
{
    pthread_mutex_lock(&output_lock);
    unsigned seen = ++problems_seen;
    pthread_mutex_unlock(&output_lock);
    if (seen <= MAX_PROBLEMS_SHOWN)
        print_message("pg_demo: worker %u: %s: %s", worker, what, detail);
    if (seen == MAX_PROBLEMS_SHOWN)
        print_message("pg_demo: (further failures are only counted)");
}

/* The pool's diagnostics (config.log): e.g. failed reconnects while the
 * server restarts, and the recovery after. Until the pool is open they only
 * repeat (once per connection attempt) the error respool_pg_pool_create
 * returns, which main prints. */
static void print_pool_message(void *context, respool_log_level_t level, const char *message)
{
    if (!atomic_load(&pool_is_open))
        return;
    static const char *const level_names[] = {"error", "warning", "info"};
    const char *name = (unsigned)level < 3 ? level_names[level] : "note";
    print_message("pg_demo: pool %s: %s", name, message);
}

/* ------------------------------------------------------------------------ */
/* One transfer                                                              */
/* ------------------------------------------------------------------------ */

/* Run one command and check the tag it returns (e.g. "UPDATE 1": exactly one
 * row). On failure, write why into error[error_size]. */
static bool run_command(PGconn *conn, const char *sql, int param_count,
                        const char *const *params, const char *expected_tag, char *error,
                        size_t error_size)
{
    PGresult *result = PQexecParams(conn, sql, param_count, NULL, params, NULL, NULL, 0);
    bool ok = false;
    if (!result) {
        snprintf(error, error_size, "%s", PQerrorMessage(conn));
    } else if (PQresultStatus(result) != PGRES_COMMAND_OK) {
        snprintf(error, error_size, "%s", PQresultErrorMessage(result));
    } else if (strcmp(PQcmdStatus(result), expected_tag) != 0) {
        snprintf(error, error_size, "%s gave \"%s\", not \"%s\"", sql, PQcmdStatus(result),
                 expected_tag);
    } else {
        ok = true;
    }
    PQclear(result);
    if (!ok) {
        error[strcspn(error, "\n")] = '\0'; /* libpq's first line says it */
        if (error[0] == '\0')
            snprintf(error, error_size, "%s failed (no message from libpq)", sql);
    }
    return ok;
}

/* Add `delta` to the balance of account `id`, inside the open transaction. */
static bool add_to_balance(PGconn *conn, int id, int delta, char *error, size_t error_size)
{
    char id_text[16], delta_text[16];
    snprintf(id_text, sizeof id_text, "%d", id);
    snprintf(delta_text, sizeof delta_text, "%d", delta);
    const char *const params[2] = {id_text, delta_text};
    return run_command(conn,
                       "UPDATE respool_demo_accounts SET balance = balance + $2 WHERE id = $1",
                       2, params, "UPDATE 1", error, error_size);
}

/* Move `amount` from account `from` to account `to` in one transaction.
 * Accounts are updated in ascending id order, so two transfers between the
 * same accounts cannot deadlock. Balances may go negative. On failure the
 * transaction is left open or failed; the adapter's reset rolls it back at
 * checkin. */
static bool transfer(PGconn *conn, int from, int to, int amount, char *error, size_t error_size)
{
    if (!run_command(conn, "BEGIN", 0, NULL, "BEGIN", error, error_size))
        return false;
    bool updated = from < to ? add_to_balance(conn, from, -amount, error, error_size) &&
                                   add_to_balance(conn, to, amount, error, error_size)
                             : add_to_balance(conn, to, amount, error, error_size) &&
                                   add_to_balance(conn, from, -amount, error, error_size);
    return updated && run_command(conn, "COMMIT", 0, NULL, "COMMIT", error, error_size);
}

/* ------------------------------------------------------------------------ */
/* Worker threads                                                            */
/* ------------------------------------------------------------------------ */

static atomic_bool stop_requested;

typedef struct worker {
    /* Read by the main thread for the progress line while the worker runs. */
    _Alignas(64) atomic_uint_fast64_t committed;
    atomic_uint_fast64_t failed;
    /* The worker's own; the main thread reads them after joining it. */
    respool_t *pool;
    unsigned number;
    uint64_t random_state;
    uint64_t checkout_failures;  /* checkouts that timed out or failed */
    uint64_t transfer_failures;  /* transactions that failed */
    uint64_t broken_connections; /* connections reported to the pool as broken */
    wait_histogram_t checkout_waits;
} worker_t;

/* A worker: transfers between random accounts until told to stop. */
static void *worker_main(void *argument)
{
    worker_t *w = argument;
    char error[256];
    while (!atomic_load_explicit(&stop_requested, memory_order_relaxed)) {
        int from = (int)(next_random(&w->random_state) % ACCOUNT_COUNT) + 1;
        int to = (int)(next_random(&w->random_state) % (ACCOUNT_COUNT - 1)) + 1;
        if (to >= from)
            to++; /* any account but `from` */
        int amount = (int)(next_random(&w->random_state) % MAX_TRANSFER_AMOUNT) + 1;

        respool_lease_t lease;
        uint64_t asked = monotonic_ns();
        int rc = respool_checkout(w->pool, CHECKOUT_TIMEOUT_MS, &lease);
        uint64_t waited = monotonic_ns() - asked;
        if (rc != RESPOOL_OK) {
            w->checkout_failures++;
            atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
            report_problem(w->number, "checkout failed", respool_strerror(rc));
            if (rc == RESPOOL_ESHUTDOWN)
                break;
            continue;
        }
        histogram_record(&w->checkout_waits, waited);

        PGconn *conn = respool_pg_conn(&lease);
        if (transfer(conn, from, to, amount, error, sizeof error)) {
            atomic_fetch_add_explicit(&w->committed, 1, memory_order_relaxed);
            respool_checkin(w->pool, &lease);
            continue;
        }
        w->transfer_failures++;
        atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
        report_problem(w->number, "transfer failed", error);
        if (PQstatus(conn) == CONNECTION_BAD) {
            w->broken_connections++;
            respool_destroyed(w->pool, &lease); /* the pool closes it and opens another */
        } else {
            respool_checkin(w->pool, &lease); /* reset rolls the transaction back */
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The accounts table                                                        */
/* ------------------------------------------------------------------------ */

/* Run a simple-protocol query expecting `expected` status; on failure
 * write why into error[error_size]. The result is returned on success (the
 * caller clears it), NULL on failure. */
static PGresult *run_query(PGconn *conn, const char *sql, ExecStatusType expected, char *error,
                           size_t error_size)
{
    PGresult *result = PQexec(conn, sql);
    if (result && PQresultStatus(result) == expected)
        return result;
    snprintf(error, error_size, "%s", result ? PQresultErrorMessage(result) : PQerrorMessage(conn));
    error[strcspn(error, "\n")] = '\0'; /* libpq's first line says it */
    if (error[0] == '\0')
        snprintf(error, error_size, "unexpected result %s",
                 PQresStatus(result ? PQresultStatus(result) : PGRES_FATAL_ERROR));
    PQclear(result);
    return NULL;
}

/* Give a connection back after setup or the final check: checked in, or
 * reported broken if libpq says it is. */
static void give_back(respool_t *pool, respool_lease_t *lease)
{
    if (PQstatus(respool_pg_conn(lease)) == CONNECTION_BAD)
        respool_destroyed(pool, lease);
    else
        respool_checkin(pool, lease);
}

/* Create the accounts table afresh with every balance at INITIAL_BALANCE, in
 * one round trip (the statements run as one implicit transaction), and
 * say which server it is on. */
static bool create_accounts(respool_t *pool)
{
    char sql[512], error[512];
    snprintf(sql, sizeof sql,
             "SET client_min_messages = warning;" /* no NOTICE when the table is absent */
             "DROP TABLE IF EXISTS respool_demo_accounts;"
             "CREATE TABLE respool_demo_accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
             "INSERT INTO respool_demo_accounts (id, balance)"
             " SELECT g, %d FROM generate_series(1, %d) AS g;"
             "RESET client_min_messages",
             INITIAL_BALANCE, ACCOUNT_COUNT);
    /* A second try if the connection was broken (say, the server restarted
     * after the pool connected). */
    for (int attempt = 1; attempt <= 2; attempt++) {
        respool_lease_t lease;
        int rc = respool_checkout(pool, CHECKOUT_TIMEOUT_MS, &lease);
        if (rc != RESPOOL_OK) {
            print_message("pg_demo: setup: checkout failed: %s", respool_strerror(rc));
            return false;
        }
        PGconn *conn = respool_pg_conn(&lease);
        PGresult *result = run_query(conn, sql, PGRES_COMMAND_OK, error, sizeof error);
        if (result) {
            /* Host, port, database and user only: never the conninfo itself. */
            const char *version = PQparameterStatus(conn, "server_version");
            printf("  server: PostgreSQL %s, host %s, port %s, database %s, user %s\n",
                   version ? version : "?", PQhost(conn), PQport(conn), PQdb(conn),
                   PQuser(conn));
            printf("  %d accounts of %d each in table respool_demo_accounts\n", ACCOUNT_COUNT,
                   INITIAL_BALANCE);
            fflush(stdout);
            PQclear(result);
            give_back(pool, &lease);
            return true;
        }
        bool broken = PQstatus(conn) == CONNECTION_BAD;
        give_back(pool, &lease);
        if (!broken || attempt == 2)
            break;
    }
    print_message("pg_demo: setup: could not create the accounts: %s", error);
    return false;
}

typedef struct final_check {
    bool checked;     /* the sum and count were read */
    bool dropped;     /* the table is gone */
    long long sum;    /* sum of all balances */
    long long count;  /* number of accounts */
    char error[512];  /* why the check or the drop failed */
} final_check_t;

/* Read the sum of all balances and the number of accounts, then drop the
 * table. Retried a few times (for at most ~9 s), in case the server was just
 * restarted. */
static void check_and_drop_accounts(respool_t *pool, final_check_t *check)
{
    for (int attempt = 0; attempt < 4 && !check->dropped; attempt++) {
        if (attempt > 0)
            sleep_until(monotonic_ns() + 200000000u); /* 0.2 s */
        respool_lease_t lease;
        int rc = respool_checkout(pool, 2000, &lease);
        if (rc != RESPOOL_OK) {
            snprintf(check->error, sizeof check->error, "checkout failed: %s",
                     respool_strerror(rc));
            continue;
        }
        PGconn *conn = respool_pg_conn(&lease);
        if (!check->checked) {
            PGresult *result = run_query(conn,
                                         "SELECT sum(balance), count(*) FROM respool_demo_accounts",
                                         PGRES_TUPLES_OK, check->error, sizeof check->error);
            if (result && PQntuples(result) == 1) {
                check->sum = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
                check->count = strtoll(PQgetvalue(result, 0, 1), NULL, 10);
                check->checked = true;
            }
            PQclear(result);
        }
        if (check->checked) {
            PGresult *result = run_query(conn, "DROP TABLE respool_demo_accounts",
                                         PGRES_COMMAND_OK, check->error, sizeof check->error);
            check->dropped = result != NULL;
            PQclear(result);
        }
        give_back(pool, &lease);
    }
}

/* ------------------------------------------------------------------------ */
/* Main                                                                      */
/* ------------------------------------------------------------------------ */

/* Read the command line and the environment; false on a usage error. */
static bool read_settings(int argc, char **argv, settings_t *settings)
{
    if (argc > 2) {
        print_usage(stderr);
        return false;
    }
    settings->conninfo = argc == 2 ? argv[1] : getenv("RESPOOL_PG_URL");
    if (!settings->conninfo || !*settings->conninfo) {
        fprintf(stderr, "pg_demo: no conninfo: give one as the argument or set RESPOOL_PG_URL\n");
        print_usage(stderr);
        return false;
    }
    return read_seconds("RESPOOL_DEMO_SECONDS", 10, &settings->seconds) &&
           read_count("RESPOOL_DEMO_THREADS", 32, 1, 1024, &settings->threads) &&
           read_count("RESPOOL_DEMO_POOL", 8, 1, 1000, &settings->pool_size);
}

/* Every worker's committed and failed counts so far. */
static void count_progress(worker_t *workers, unsigned count, uint64_t *committed,
                           uint64_t *failed)
{
    *committed = *failed = 0;
    for (unsigned i = 0; i < count; i++) {
        *committed += atomic_load_explicit(&workers[i].committed, memory_order_relaxed);
        *failed += atomic_load_explicit(&workers[i].failed, memory_order_relaxed);
    }
}

/* Run the workers for the set time, printing a progress line every second,
 * then stop and join them. Returns how many were started (0: none could be). */
static unsigned run_workers(respool_t *pool, const settings_t *settings, worker_t *workers,
                            pthread_t *threads)
{
    uint64_t start = monotonic_ns();
    unsigned started = 0;
    for (unsigned i = 0; i < settings->threads; i++) {
        worker_t *w = &workers[i];
        atomic_init(&w->committed, 0);
        atomic_init(&w->failed, 0);
        w->pool = pool;
        w->number = i + 1;
        w->random_state = scramble(start ^ scramble(i)) | 1; /* xorshift needs non-zero */
        int rc = pthread_create(&threads[i], NULL, worker_main, w);
        if (rc != 0) {
            print_message("pg_demo: could not start worker %u: %s", i + 1, strerror(rc));
            break;
        }
        started++;
    }

    uint64_t end = start + (uint64_t)(settings->seconds * 1e9);
    uint64_t last_time = start, last_committed = 0;
    for (uint64_t second = 1; started > 0; second++) {
        uint64_t next = start + second * 1000000000u;
        sleep_until(next < end ? next : end);
        uint64_t now = monotonic_ns(), committed, failed;
        count_progress(workers, started, &committed, &failed);
        double interval = (double)(now - last_time) / 1e9;
        print_progress((double)(now - start) / 1e9, committed,
                       (double)(committed - last_committed) / interval, failed);
        last_time = now;
        last_committed = committed;
        if (now >= end)
            break;
    }

    atomic_store(&stop_requested, true);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_lock(&output_lock);
    close_progress_line();
    pthread_mutex_unlock(&output_lock);
    return started;
}

/* What all the workers did, added up. */
typedef struct run_totals {
    uint64_t committed, checkout_failures, transfer_failures, broken_connections;
    wait_histogram_t checkout_waits;
} run_totals_t;

/* Add up the results of the first `count` workers (all joined). */
static void add_up_workers(worker_t *workers, unsigned count, run_totals_t *totals)
{
    memset(totals, 0, sizeof *totals);
    for (unsigned i = 0; i < count; i++) {
        totals->committed += atomic_load(&workers[i].committed);
        totals->checkout_failures += workers[i].checkout_failures;
        totals->transfer_failures += workers[i].transfer_failures;
        totals->broken_connections += workers[i].broken_connections;
        histogram_merge(&totals->checkout_waits, &workers[i].checkout_waits);
    }
}

/* Is the money all there: the starting total, over every account? */
static bool money_is_conserved(const final_check_t *check)
{
    return check->checked && check->count == ACCOUNT_COUNT &&
           check->sum == (long long)ACCOUNT_COUNT * INITIAL_BALANCE;
}

/* Print the final table. */
static void print_results(unsigned threads, unsigned pool_size, double run_seconds,
                          const run_totals_t *totals, const respool_stats_t *stats,
                          const final_check_t *check)
{
    uint64_t failed = totals->checkout_failures + totals->transfer_failures;
    printf("\nrespool pg_demo: %u threads, pool of %u connections, %.1f s\n", threads,
           pool_size, run_seconds);
    printf("  transactions committed   %" PRIu64 "  (%.0f tx/s)\n", totals->committed,
           (double)totals->committed / run_seconds);
    printf("  failed                   %" PRIu64, failed);
    if (failed > 0)
        printf("  (%" PRIu64 " checkouts, %" PRIu64 " transactions; %" PRIu64
               " connections reported broken)",
               totals->checkout_failures, totals->transfer_failures,
               totals->broken_connections);
    printf("\n");
    const wait_histogram_t *waits = &totals->checkout_waits;
    if (waits->samples > 0) {
        char p50[32], p99[32], max[32];
        format_duration(histogram_percentile(waits, 0.50), p50, sizeof p50);
        format_duration(histogram_percentile(waits, 0.99), p99, sizeof p99);
        format_duration(waits->max_ns, max, sizeof max);
        printf("  checkout wait            p50 %s   p99 %s   max %s\n", p50, p99, max);
    } else {
        printf("  checkout wait            (no checkout succeeded)\n");
    }
    printf("  connections              created %" PRIu64 ", destroyed %" PRIu64 "\n",
           stats->created, stats->destroyed);
    if (check->checked)
        printf("  money conserved          %s (sum %lld over %lld accounts)\n",
               money_is_conserved(check) ? "yes" : "NO", check->sum, check->count);
    else
        printf("  money conserved          unknown (%s)\n", check->error);
    fflush(stdout);
}

/* Did the run end well? Says on stderr what went wrong, if anything. */
static bool results_are_good(const run_totals_t *totals, const respool_stats_t *stats,
                             const final_check_t *check, int shutdown_rc)
{
    bool good = true;
    if (!check->checked) {
        fprintf(stderr, "pg_demo: FAILED: could not read the balances back\n");
        good = false;
    } else if (!money_is_conserved(check)) {
        fprintf(stderr, "pg_demo: FAILED: expected a sum of %lld over %d accounts\n",
                (long long)ACCOUNT_COUNT * INITIAL_BALANCE, ACCOUNT_COUNT);
        good = false;
    }
    if (check->checked && !check->dropped)
        fprintf(stderr, "pg_demo: warning: could not drop respool_demo_accounts: %s\n",
                check->error);
    if (shutdown_rc != RESPOOL_OK) {
        fprintf(stderr, "pg_demo: FAILED: respool_shutdown: %s\n", respool_strerror(shutdown_rc));
        good = false;
    }
    if (stats->created != stats->destroyed) {
        fprintf(stderr, "pg_demo: FAILED: %" PRIu64 " connections opened but %" PRIu64
                        " closed\n", stats->created, stats->destroyed);
        good = false;
    }
    if (totals->committed == 0) {
        fprintf(stderr, "pg_demo: FAILED: no transaction committed\n");
        good = false;
    }
    return good;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        print_usage(stdout);
        return 0;
    }
    settings_t settings;
    if (!read_settings(argc, argv, &settings))
        return 2;
    stdout_is_terminal = isatty(STDOUT_FILENO);

    printf("respool pg_demo: %u threads share a pool of %u connections for %.1f s\n",
           settings.threads, settings.pool_size, settings.seconds);
    fflush(stdout);

    respool_config_t config = {0};
    config.size = settings.pool_size;
    config.max_overflow = 0;
    config.log = print_pool_message;
    respool_pg_options_t options = {0}; /* the adapter's defaults; no reset_query */
    respool_t *pool;
    char error[512];
    int rc = respool_pg_pool_create(&pool, settings.conninfo, &config, &options, error,
                                    sizeof error);
    if (rc != RESPOOL_OK) {
        fprintf(stderr, "pg_demo: could not open the pool (%s): %s\n", respool_strerror(rc),
                error);
        return 1;
    }
    atomic_store(&pool_is_open, true);
    if (!create_accounts(pool)) {
        respool_shutdown(pool, SHUTDOWN_TIMEOUT_MS);
        respool_pg_pool_free(pool);
        return 1;
    }

    /* Workers are cache-line aligned so their counters do not share lines. */
    size_t workers_size = settings.threads * sizeof(worker_t);
    worker_t *workers = aligned_alloc(_Alignof(worker_t), workers_size);
    pthread_t *threads = calloc(settings.threads, sizeof *threads);
    if (!workers || !threads) {
        fprintf(stderr, "pg_demo: out of memory\n");
        free(workers);
        free(threads);
        respool_shutdown(pool, SHUTDOWN_TIMEOUT_MS);
        respool_pg_pool_free(pool);
        return 1;
    }
    memset(workers, 0, workers_size);

    uint64_t run_start = monotonic_ns();
    unsigned started = run_workers(pool, &settings, workers, threads);
    double run_seconds = (double)(monotonic_ns() - run_start) / 1e9;

    final_check_t check = {0};
    check_and_drop_accounts(pool, &check);
    int shutdown_rc = respool_shutdown(pool, SHUTDOWN_TIMEOUT_MS);
    respool_stats_t stats;
    respool_stats(pool, &stats);
    respool_pg_pool_free(pool);

    run_totals_t totals;
    add_up_workers(workers, started, &totals);
    free(workers);
    free(threads);

    print_results(started, settings.pool_size, run_seconds, &totals, &stats, &check);
    return results_are_good(&totals, &stats, &check, shutdown_rc) ? 0 : 1;
}
