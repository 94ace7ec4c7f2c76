/*
 * pg_internal.h — what the PostgreSQL adapter (respool_pg.c) shares with the
 * multi-host cluster pool (respool_pg_cluster.c). Not installed; nothing here
 * is exported (-fvisibility=hidden).
 */
#ifndef RESPOOL_PG_INTERNAL_H
#define RESPOOL_PG_INTERNAL_H

#include <stdint.h>

#include "respool_pg.h"

/* One pooled connection: the resource the core holds (lease->resource).
 * Only its holder touches it (the core hands a resource to one thread at a
 * time: a borrower, or the manager for keepalive and destroy). */
typedef struct pg_connection {
    PGconn *conn;
    int64_t known_good_ms; /* when the server last answered us: connect, ping,
                              or the last checkin (CLOCK_MONOTONIC ms) */
} pg_connection_t;

/* Longest duration any option accepts, as the core: ~31 years. */
#define MAX_DURATION_MS 1000000000000L

/* *out = v, or dflt when v is 0; -1 (nothing set) when v is negative or
 * above MAX_DURATION_MS. */
int pg_check_duration(long v, long dflt, long *out);

/* Copy src into dst[dstlen], truncating, always NUL-terminated; nothing
 * when dst is NULL or dstlen is 0. */
void pg_copy_str(char *dst, size_t dstlen, const char *src);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t pg_now_ms(void);

/* Run sql on c until deadline (CLOCK_MONOTONIC ms), as the adapter runs its
 * own commands (non-blocking, bounded). true iff every result succeeded and
 * the connection is fine; when first_value is not NULL it receives the first
 * row's first column of the first result that has one ("" when none). */
bool pg_exec_bounded_value(PGconn *c, const char *sql, int64_t deadline, char *first_value,
                           size_t first_value_len);

/* The factory's effective durations (defaults applied). */
long pg_factory_connect_timeout_ms(const respool_pg_factory_t *f);
long pg_factory_ping_timeout_ms(const respool_pg_factory_t *f);
long pg_factory_validate_idle_ms(const respool_pg_factory_t *f);

/* printf into err[errlen] (one line), with the factory's passwords hidden. */
void pg_factory_error(const respool_pg_factory_t *f, char *err, size_t errlen, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

#endif /* RESPOOL_PG_INTERNAL_H */
