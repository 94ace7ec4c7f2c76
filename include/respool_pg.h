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

/* ------------------------------------------------------------------------ */
/* Several hosts: one pool over a primary and its streaming replicas         */
/* ------------------------------------------------------------------------ */
/*
 * A cluster pool keeps one core pool per host (config.host.size connections
 * each), learns each host's role when it connects (the server's
 * in_hot_standby report, or SELECT pg_is_in_recovery() before PostgreSQL
 * 14) and routes each checkout by what it asks for:
 *
 *   RESPOOL_PG_ANY      any host that is up, round-robin
 *   RESPOOL_PG_PRIMARY  the primary (read-write)
 *   RESPOOL_PG_REPLICA  a replica (read-only), round-robin; the primary when
 *                       no replica is up
 *
 * Round-robin takes the next eligible host with an idle connection (or room
 * to make one); when every eligible host is exhausted the checkout waits on
 * the least busy one. A host whose connect fails is marked down at once:
 * its pool is shut down (waiting checkouts move to the other hosts, its
 * connections are destroyed, those in use when they come back) and a fresh
 * pool retries it with the core's backoff and refills it once it answers.
 * A monitor thread re-checks roles (every role_check_ms; every
 * failover_poll_ms while no primary is known), so a promoted replica is
 * found without a restart. Leases are ordinary respool leases:
 * respool_pg_conn(&lease) gives the connection; give them back with
 * respool_pg_cluster_checkin or respool_pg_cluster_destroyed.
 * docs/postgres.md ("Running over a cluster") has the details.
 */
typedef struct respool_pg_cluster respool_pg_cluster_t; /* opaque */

typedef enum {
    RESPOOL_PG_ANY = 0,     /* any host that is up                         */
    RESPOOL_PG_PRIMARY = 1, /* the primary: read-write                     */
    RESPOOL_PG_REPLICA = 2, /* a replica; the primary when none is up       */
} respool_pg_target_t;

typedef enum {
    RESPOOL_PG_ROLE_UNKNOWN = 0, /* never connected                          */
    RESPOOL_PG_ROLE_PRIMARY = 1, /* accepts writes                           */
    RESPOOL_PG_ROLE_REPLICA = 2, /* a hot standby (in recovery)              */
} respool_pg_role_t;

typedef enum {
    RESPOOL_PG_HOST_CONNECTING = 0, /* first connect still running          */
    RESPOOL_PG_HOST_UP = 1,         /* connected; checkouts go there        */
    RESPOOL_PG_HOST_DOWN = 2,       /* connect failed; retried with backoff */
    RESPOOL_PG_HOST_FENCED = 3,     /* a second primary: nothing goes there  */
} respool_pg_host_state_t;

/* Cluster configuration; the zero value of each field is its default. */
typedef struct respool_pg_cluster_config {
    /* Each host's pool, as for respool_create: host.size connections per
     * host (at least 1: 0 is RESPOOL_EINVAL), retry backoff,
     * lifetimes, keepalive, log. The adapter's settings are applied
     * (respool_pg_config_apply). */
    respool_config_t host;
    /* How often the monitor asks each up host for its role (a query on an
     * idle connection). 0 = 5000. */
    long role_check_ms;
    /* The same while no primary is known (after the primary went down),
     * so a promoted replica is found quickly. 0 = 100. */
    long failover_poll_ms;
} respool_pg_cluster_config_t;

/* Make a cluster pool over the hosts of conninfo: a libpq multi-host
 * conninfo ("host=a,b port=5432,5433 dbname=app", or the URI form
 * postgresql://a:5432,b:5433/app). Every other keyword applies to every
 * host. target_session_attrs other than "any" is RESPOOL_EINVAL: ask for a
 * role per checkout instead. cfg and opt may be NULL (defaults: 1
 * connection per host). Returns once every host has either connected or
 * failed its first attempt:
 *   RESPOOL_OK        at least one host is up (the others are retried)
 *   RESPOOL_EFACTORY  no host could be reached: err names each host's error
 *   RESPOOL_EINVAL    NULL out or conninfo, malformed conninfo, a host
 *                     listed twice, bad config or options (err says which)
 *   RESPOOL_ENOMEM
 * On failure *out is NULL. err[errlen] never contains a password. */
RESPOOL_API int respool_pg_cluster_create(respool_pg_cluster_t **out, const char *conninfo,
                                          const respool_pg_cluster_config_t *cfg,
                                          const respool_pg_options_t *opt, char *err,
                                          size_t errlen);

/* The same over a list of conninfo strings, one or more hosts each (every
 * entry is split like conninfo above); count > 0. */
RESPOOL_API int respool_pg_cluster_create_list(respool_pg_cluster_t **out,
                                               const char *const *conninfos, size_t count,
                                               const respool_pg_cluster_config_t *cfg,
                                               const respool_pg_options_t *opt, char *err,
                                               size_t errlen);

/* Replace the host list while the pool runs (same forms as create). A host
 * is the same host when its conninfo is the same: it keeps its pool. Hosts
 * no longer listed are drained (waiting checkouts move to other hosts,
 * idle connections are destroyed now, those in use when they come back);
 * new hosts are connected and filled in the background. Does not wait.
 *   RESPOOL_OK, RESPOOL_EINVAL (as create; the list is left as it was),
 *   RESPOOL_ESHUTDOWN, RESPOOL_ENOMEM. */
RESPOOL_API int respool_pg_cluster_set_hosts(respool_pg_cluster_t *cluster, const char *conninfo,
                                             char *err, size_t errlen);
RESPOOL_API int respool_pg_cluster_set_host_list(respool_pg_cluster_t *cluster,
                                                 const char *const *conninfos, size_t count,
                                                 char *err, size_t errlen);

/* Check out a connection of a host that fits target (see above), with
 * timeout_ms as for respool_checkout: < 0 no limit, 0 never wait for a
 * holder. While no host fits (the primary is down and no replica has been
 * promoted yet, or every host is down) a checkout waits for one within its
 * timeout. Returns the codes of respool_checkout: RESPOOL_ETIMEDOUT,
 * RESPOOL_EFULL (timeout 0: every fitting host is exhausted),
 * RESPOOL_EFACTORY (timeout 0: no fitting host is up), RESPOOL_ESHUTDOWN,
 * RESPOOL_EINVAL (NULL argument, unknown target).
 * respool_pg_cluster_error() explains a failure. */
RESPOOL_API int respool_pg_cluster_checkout(respool_pg_cluster_t *cluster,
                                            respool_pg_target_t target, long timeout_ms,
                                            respool_lease_t *lease);
/* The same recording the caller's site (as respool_checkout_at); the macro
 * makes every call do so unless RESPOOL_NO_CALL_SITES. */
RESPOOL_API int respool_pg_cluster_checkout_at(respool_pg_cluster_t *cluster,
                                               respool_pg_target_t target, long timeout_ms,
                                               respool_lease_t *lease, const char *site,
                                               const char *function);
#ifndef RESPOOL_NO_CALL_SITES
#define respool_pg_cluster_checkout(cluster, target, timeout_ms, lease)                  \
    respool_pg_cluster_checkout_at((cluster), (target), (timeout_ms), (lease), RESPOOL_HERE, \
                                   __func__)
#endif

/* Give a lease back, as respool_checkin / respool_destroyed. RESPOOL_EINVAL
 * for NULL, or a lease not from this cluster (or stale, doubled). */
RESPOOL_API int respool_pg_cluster_checkin(respool_pg_cluster_t *cluster,
                                           respool_lease_t *lease);
RESPOOL_API int respool_pg_cluster_destroyed(respool_pg_cluster_t *cluster,
                                             respool_lease_t *lease);

/* respool_pg_run over a cluster: check out for target, run fn(conn, arg),
 * give the connection back (destroyed when it broke). */
RESPOOL_API int respool_pg_cluster_run(respool_pg_cluster_t *cluster, respool_pg_target_t target,
                                       long timeout_ms, respool_pg_fn fn, void *arg);
RESPOOL_API int respool_pg_cluster_run_at(respool_pg_cluster_t *cluster,
                                          respool_pg_target_t target, long timeout_ms,
                                          respool_pg_fn fn, void *arg, const char *site,
                                          const char *function);
#ifndef RESPOOL_NO_CALL_SITES
#define respool_pg_cluster_run(cluster, target, timeout_ms, fn, arg)                     \
    respool_pg_cluster_run_at((cluster), (target), (timeout_ms), (fn), (arg), RESPOOL_HERE,  \
                              __func__)
#endif

/* Why the calling thread's most recent failed cluster checkout failed, one
 * line naming the hosts and their states, or the host pool's own checkout
 * error. Returns the full length like snprintf; 0 when none. */
RESPOOL_API size_t respool_pg_cluster_error(char *buf, size_t buflen);

/* One host, as the cluster sees it now. */
typedef struct respool_pg_host_info {
    char name[128];                /* "host:port" (never a password)          */
    respool_pg_role_t role;        /* last known                              */
    respool_pg_host_state_t state;
    bool writer;                   /* RESPOOL_PG_PRIMARY checkouts go here     */
    uint64_t checkouts;            /* successful cluster checkouts it served   */
    unsigned times_down;           /* times it was marked down                 */
    char last_error[256];          /* its last connect failure ("" if none)    */
    respool_stats_t stats;         /* its current pool                         */
} respool_pg_host_info_t;

/* Number of hosts in the current list (0 for NULL). */
RESPOOL_API size_t respool_pg_cluster_host_count(respool_pg_cluster_t *cluster);
/* Host index (0-based, list order) into *out. RESPOOL_EINVAL for NULL or an
 * index out of range. */
RESPOOL_API int respool_pg_cluster_host(respool_pg_cluster_t *cluster, size_t index,
                                        respool_pg_host_info_t *out);
/* The sum over the hosts' current pools (counts added; for each latency,
 * count, sum and max are exact, the percentiles are the largest host's:
 * an upper bound). state is the best of the hosts'. */
RESPOOL_API void respool_pg_cluster_stats(respool_pg_cluster_t *cluster, respool_stats_t *out);

/* "unknown", "primary", "replica"; "connecting", "up", "down", "fenced". */
RESPOOL_API const char *respool_pg_role_name(respool_pg_role_t role);
RESPOOL_API const char *respool_pg_host_state_name(respool_pg_host_state_t state);

/* Safe shutdown of every host's pool (respool_shutdown semantics, one
 * deadline for all). RESPOOL_OK, RESPOOL_EBUSY, RESPOOL_EINVAL (NULL). */
RESPOOL_API int respool_pg_cluster_shutdown(respool_pg_cluster_t *cluster, long timeout_ms);

/* Shut down without a deadline, stop the monitor and free everything.
 * NULL: nothing. Call once, after every other call has returned. */
RESPOOL_API void respool_pg_cluster_free(respool_pg_cluster_t *cluster);

#ifdef __cplusplus
}
#endif
#endif /* RESPOOL_PG_H */
