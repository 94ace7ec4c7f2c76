/*
 * pg_support.h — helpers shared by the PostgreSQL adapter tests.
 *
 * The server's conninfo comes from RESPOOL_PG_URL (unix socket form
 * "host=<dir> port=N dbname=respool user=respool"); when it is unset the
 * first test that needs it runs `scripts/pg-sandbox start` (from the
 * repository root) and uses its output. TCP tests use host=127.0.0.1 and
 * the same port (RESPOOL_PG_TCP_URL overrides), where role respool has the
 * password respool-test-pw.
 *
 * Helpers that take no error path (checkout, query1, exec_ok, ...) fail the
 * calling test with a message instead of returning an error.
 */
#ifndef RESPOOL_TESTS_PG_SUPPORT_H
#define RESPOOL_TESTS_PG_SUPPORT_H

#include <criterion/criterion.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "respool.h"
#include "respool_pg.h"

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t mono_ms(void);

/* The sandbox's unix-socket conninfo, its port, and its TCP conninfo
 * (without password). */
const char *pg_url(void);
const char *pg_port(void);
const char *pg_tcp_url(void);

/* buf = the sandbox's conninfo plus extra "key=value" settings; returns buf. */
const char *url_with(char *buf, size_t len, const char *extra);

/* Log messages of a pool, collected by log_capture (config.log_ctx = &buf;
 * initialise with memset 0 + pthread_mutex_init). */
typedef struct {
    pthread_mutex_t lock;
    char text[8192];
    size_t len;
    int count;
} logbuf_t;
void log_capture(void *ctx, respool_log_level_t level, const char *message);

/* A config of size/max_overflow with logging discarded. */
respool_config_t quiet_cfg(unsigned size, unsigned max_overflow);

/* respool_pg_pool_create with quiet_cfg; fails the test on error. */
respool_t *make_pool(const char *conninfo, unsigned size, unsigned max_overflow,
                     const respool_pg_options_t *opt);

respool_stats_t stats_of(respool_t *pool);

/* Check out within 5 s (else fail the test); returns the connection. */
PGconn *checkout(respool_t *pool, respool_lease_t *lease);

/* Run sql, expecting success; query1 returns the first value of the first
 * row as a malloc'd string (NULL when there is none). */
char *query1(PGconn *c, const char *sql);
void exec_ok(PGconn *c, const char *sql);

/* Shut down (expecting OK), check created == destroyed, free the pool. */
void shutdown_and_check_balanced(respool_t *pool);

/* A plain connection outside any pool. */
PGconn *side_conn(const char *conninfo);

/* A TCP port on 127.0.0.1 where nothing listens (bound, then closed). */
int closed_port(void);

/* A listening socket on 127.0.0.1 that never answers (the kernel completes
 * the TCP handshake into its backlog); *port is its port. Close it after. */
int black_hole(int *port);

/* pg_terminate_backend() each pid (from a side connection) and wait, up to
 * 10 s, until they are gone from pg_stat_activity. */
void terminate_backends(const int *pids, int n);

/* Is the server under test the sandbox of this checkout (so a test may stop
 * and restart it with scripts/pg-sandbox)? */
bool pg_is_sandbox(void);

#endif
