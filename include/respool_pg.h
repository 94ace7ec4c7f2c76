/*
 * respool_pg.h — PostgreSQL (libpq) adapter for respool.
 *
 * A respool factory whose resources are libpq connections (PGconn *):
 *
 *   create    non-blocking connect (PQconnectStartParams + PQconnectPoll +
 *             poll()) bounded by connect_timeout_ms as a true deadline on
 *             CLOCK_MONOTONIC. Error text is libpq's on one line, with
 *             passwords scrubbed.
 *   validate  on every checkout from the idle list: a zero-round-trip check
 *             (PQstatus, and if the socket is readable: PQconsumeInput to
 *             absorb a pending FATAL or EOF, e.g. after pg_terminate_backend
 *             or idle_session_timeout), then, for a connection not known
 *             good for validate_idle_ms, an empty-query round trip bounded
 *             by ping_timeout_ms. Keepalive checks call it too.
 *   reset     on checkin: a connection in a transaction (open or failed) is
 *             rolled back; one mid-command/COPY, in pipeline mode, in an
 *             unknown state or broken is destroyed; then reset_query (if
 *             set) runs. Both are bounded by reset_timeout_ms. Notifications
 *             (LISTEN) already received are dropped.
 *   destroy   PQfinish; a connection still mid-command or in a pipeline has
 *             its socket shut down first, so unsent data (COPY rows) cannot
 *             make PQfinish wait for a backend that is not reading.
 *
 * A lease's resource is the adapter's record of the connection: get the
 * PGconn * with respool_pg_conn(&lease), never by casting lease.resource.
 * Each connection gets the adapter's notice receiver (PQsetNoticeReceiver):
 * it prints notices on stderr as libpq's default does, but a notice
 * processor set later with PQsetNoticeProcessor is not called (set a notice
 * receiver instead; the adapter's FATAL-while-idle detection then relies on
 * EOF and the ping only).
 * Build: compile src/respool_pg.c with the libpq headers on the include path
 * (pkg-config --cflags libpq) and link with -lpq.
 *
 * Limits: host names are resolved with a blocking getaddrinfo() inside libpq,
 * which the deadline cannot interrupt; use hostaddr= for a strict bound when
 * DNS may hang.
 */
#ifndef RESPOOL_PG_H
#define RESPOOL_PG_H

#include <stdbool.h>
#include <stddef.h>

/* libpq's header is in /usr/include/postgresql on Debian-like systems;
 * accept both layouts so a build without pkg-config flags still compiles. */
#if defined(__has_include)
#if __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif
#else
#include <libpq-fe.h>
#endif

#include "respool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* options.validate_idle_ms value: validate (ping) on every checkout from the
 * idle list (the core's validate_idle_ms = 0). */
#define RESPOOL_PG_VALIDATE_ALWAYS (-1L)

/* Returned by respool_pg_run() when fn ran and returned false (outside the
 * core's code range: respool_strerror() does not know it). */
#define RESPOOL_PG_EWORK 64

/* Adapter options. The zero value of every field is its default, so
 * `respool_pg_options_t o = {0};` (or a NULL pointer) gives the defaults.
 * Durations in milliseconds; negative values other than those documented
 * are rejected with RESPOOL_EINVAL. */
typedef struct respool_pg_options {
    /* Deadline for one connect attempt (all hosts of a multi-host conninfo
     * together), TCP connect, TLS and authentication included. 0 = the
     * conninfo's connect_timeout (seconds; 1 counts as 2, as in libpq) if
     * it has one above 0, else 5000. */
    long connect_timeout_ms;
    /* Ping a connection at checkout only if it has not been known good (a
     * connect, a ping or a checkin) for this long. The zero-round-trip check
     * runs on every checkout regardless. 0 = 1000;
     * RESPOOL_PG_VALIDATE_ALWAYS = ping on every checkout from the idle
     * list. */
    long validate_idle_ms;
    /* Bound of the validation round trip. 0 = 2000. */
    long ping_timeout_ms;
    /* SQL run on every checkin after the rollback (e.g. "DISCARD ALL"),
     * sent as one simple-protocol query; NULL or "" = none. Copied. Note that
     * a multi-statement string runs in an implicit transaction block, where
     * DISCARD ALL is refused: use DISCARD ALL alone (it already includes
     * SET SESSION AUTHORIZATION DEFAULT, which also resets SET ROLE), or
     * statements that may run in a transaction. A failing reset_query
     * destroys the connection. */
    const char *reset_query;
    /* Bound of each checkin command (ROLLBACK, reset_query); when it passes
     * the connection is destroyed. 0 = 5000. */
    long reset_timeout_ms;
} respool_pg_options_t;

typedef struct respool_pg_factory respool_pg_factory_t; /* opaque */

/* Parse conninfo (a "key=value ..." string or a postgres:// URI, as libpq
 * accepts) and make a factory. On failure *out is NULL and err[errlen] (if
 * given) holds the reason, with any password scrubbed:
 *   RESPOOL_EINVAL  NULL out or conninfo, malformed conninfo (libpq's parse
 *                   message), bad options
 *   RESPOOL_ENOMEM
 * The factory is immutable after this call and may be shared by pools; it
 * must outlive every pool using it. */
RESPOOL_API int respool_pg_factory_init(respool_pg_factory_t **out, const char *conninfo,
                                        const respool_pg_options_t *opt, char *err,
                                        size_t errlen);

/* The respool factory (callbacks + ctx) for respool_create(). */
RESPOOL_API respool_factory_t respool_pg_factory(respool_pg_factory_t *f);

/* Set the core config fields the adapter relies on (today: validate_idle_ms
 * = 0, so validate runs on every checkout from the idle list and decides
 * about the ping itself). For pools made with respool_create() directly;
 * respool_pg_pool_create() does it. */
RESPOOL_API void respool_pg_config_apply(const respool_pg_factory_t *f, respool_config_t *cfg);

/* The text of the most recent create() failure of this factory (scrubbed),
 * like respool_last_error(); 0 when none. Usable when no pool exists (e.g.
 * after respool_create failed). */
RESPOOL_API size_t respool_pg_last_error(respool_pg_factory_t *f, char *buf, size_t buflen);

/* Free a factory (NULL: nothing). Only after every pool using it is freed. */
RESPOOL_API void respool_pg_factory_free(respool_pg_factory_t *f);

/* Convenience: a factory plus a pool that owns it. cfg may be NULL (size 1,
 * no overflow); respool_pg_config_apply() is applied to a copy of it.
 * Returns the codes of respool_pg_factory_init and respool_create; on
 * RESPOOL_EFACTORY err holds the connect failure (scrubbed). RESPOOL_EINVAL
 * also when 0 < cfg->keepalive_ms < the options' validate_idle_ms: keepalive
 * runs validate, which pings only connections not known good for
 * validate_idle_ms, so such a keepalive would never ping. On failure *out
 * is NULL and nothing is left allocated.
 * Free the pool with respool_pg_pool_free() (respool_free() alone would leak
 * the factory). */
RESPOOL_API int respool_pg_pool_create(respool_t **out, const char *conninfo,
                                       const respool_config_t *cfg,
                                       const respool_pg_options_t *opt, char *err,
                                       size_t errlen);

/* respool_free(pool), then free the factory respool_pg_pool_create made for
 * it. On a pool not made by respool_pg_pool_create it is just respool_free.
 * NULL: nothing. */
RESPOOL_API void respool_pg_pool_free(respool_t *pool);

/* The factory respool_pg_pool_create made for pool (for
 * respool_pg_last_error and respool_pg_scrub); NULL for a pool it did not
 * make, or NULL. Valid until respool_pg_pool_free(pool). */
RESPOOL_API respool_pg_factory_t *respool_pg_pool_factory(respool_t *pool);

/* The connection of a lease (NULL for a NULL lease or an empty one).
 * Give it back with respool_checkin() in every state: reset rolls back what
 * was left open, and a connection that broke (CONNECTION_BAD) or cannot be
 * cleaned fails reset and is closed and replaced (stats.reset_failures).
 * respool_destroyed() does the same without trying reset, and counts it in
 * stats.reported_broken. As with any resource, the PGconn * is the lease
 * holder's only until checkin: a copy of the lease kept after it is stale,
 * and respool_pg_conn() on it reads freed memory. */
RESPOOL_API PGconn *respool_pg_conn(const respool_lease_t *lease);

typedef bool (*respool_pg_fn)(PGconn *conn, void *arg);

/* Check out a connection (as respool_checkout with timeout_ms), run
 * fn(conn, arg) on this thread, then check it in (reset rolls back whatever
 * transaction fn left open) or, if the connection is broken (PQstatus is
 * CONNECTION_BAD), report it destroyed. Returns the checkout's code if fn
 * did not run, RESPOOL_OK if fn returned true, RESPOOL_PG_EWORK if it
 * returned false; RESPOOL_EINVAL for a NULL pool or fn. */
RESPOOL_API int respool_pg_run(respool_t *pool, long timeout_ms, respool_pg_fn fn, void *arg);
/* respool_pg_run recording the caller's site (as respool_checkout_at); the
 * macro makes every respool_pg_run call do so unless RESPOOL_NO_CALL_SITES. */
RESPOOL_API int respool_pg_run_at(respool_t *pool, long timeout_ms, respool_pg_fn fn, void *arg,
                                  const char *site, const char *function);
#ifndef RESPOOL_NO_CALL_SITES
#define respool_pg_run(pool, timeout_ms, fn, arg)                                        \
    respool_pg_run_at((pool), (timeout_ms), (fn), (arg), RESPOOL_HERE, __func__)
#endif

/* Copy src into dst[dstlen] (always NUL-terminated when dstlen > 0) with
 * password values hidden: "password=..." values (quoted or not), the
 * password part of URIs (scheme://user:PASSWORD@) and every occurrence of
 * the conninfo's password(s) known to the factory f (may be NULL): as
 * written, decoded (%XX, backslash escapes), and the pieces libpq may echo
 * when it splits a URI password at '/', '?', '#' or ':'. src and dst may
 * overlap (in-place scrubbing works). Returns dst. */
RESPOOL_API char *respool_pg_scrub(const respool_pg_factory_t *f, const char *src, char *dst,
                                   size_t dstlen);

#ifdef __cplusplus
}
#endif
#endif /* RESPOOL_PG_H */
