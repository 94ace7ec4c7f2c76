/*
 * respool.h — a Poolboy-style generic resource checkout pool.
 *
 * A pool holds `size` permanent resources plus up to `max_overflow` extra ones,
 * all made by a user factory. One manager thread per pool runs the factory
 * (create, replace, retry with backoff, reap, health checks, shutdown); client
 * threads check resources out with a timeout, check them in, or report them
 * destroyed. See docs/api.md for the reference of every function and
 * docs/design.md for how the parts fit.
 *
 * Return codes: every int-returning function returns one of the RESPOOL_E*
 * codes below (RESPOOL_OK = 0). respool_strerror() names them.
 *
 * Thread safety: every function is thread-safe, except that respool_free() is
 * called once, after every other call on the pool has returned.
 */
#ifndef RESPOOL_H
#define RESPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(RESPOOL_STATIC_ONLY)
#define RESPOOL_API __attribute__((visibility("default")))
#else
#define RESPOOL_API
#endif

#define RESPOOL_VERSION_MAJOR 0
#define RESPOOL_VERSION_MINOR 1
#define RESPOOL_VERSION_PATCH 0
#define RESPOOL_VERSION_STRING "0.1.0"

/* Upper bound on size + max_overflow: larger values are rejected as absurd. */
#define RESPOOL_MAX_RESOURCES (1u << 24)

typedef struct respool respool_t; /* opaque */

/* Return codes of every int-returning function (values fixed: ABI). */
enum {
    RESPOOL_OK = 0,
    RESPOOL_ETIMEDOUT, /* blocking checkout: nothing became available in time   */
    RESPOOL_EFULL,     /* checkout with timeout 0: nothing idle, no room to grow */
    RESPOOL_ESHUTDOWN, /* the pool is shutting down or has shut down             */
    RESPOOL_EINVAL,    /* NULL argument, bad config, stale/double/foreign lease  */
    RESPOOL_EFACTORY,  /* the factory's create() failed                          */
    RESPOOL_ENOMEM,
    RESPOOL_EBUSY,     /* shutdown deadline passed with leases still out         */
};

/* A short English description of a return code. Never NULL: an unknown code
 * gives "unknown respool error code". */
RESPOOL_API const char *respool_strerror(int code);

/* ------------------------------------------------------------------------ */
/* The factory: how the pool makes, checks, cleans and destroys resources.   */
/* ------------------------------------------------------------------------ */

typedef struct respool_factory {
    /* Make one resource. Return 0 with *resource set (non-NULL) on success;
     * non-zero on failure, with a NUL-terminated reason written into
     * err[errlen] where useful (the pool keeps it: respool_last_error()).
     * Runs on the manager thread or one of its helpers, never with a pool
     * lock held, possibly several at once (config.max_creating). A success
     * with a NULL resource is treated as a failure. */
    int (*create)(void *ctx, void **resource, char *err, size_t errlen);
    /* Called exactly once for every resource that create() made, on the
     * manager thread or one of its helpers, never with a pool lock held. */
    void (*destroy)(void *ctx, void *resource);
    /* Optional (NULL = always usable): is this idle resource still usable?
     * Runs on the thread calling respool_checkout() before a resource that has
     * been idle longer than config.validate_idle_ms is handed out, and on the
     * manager thread for keepalive checks (config.keepalive_ms). false = the
     * resource is destroyed and the checkout goes on with another. */
    bool (*validate)(void *ctx, void *resource);
    /* Optional (NULL = nothing to do): clean a resource on checkin, on the
     * thread calling respool_checkin(); false = it cannot be reused, destroy
     * it instead. */
    bool (*reset)(void *ctx, void *resource);
    void *ctx; /* passed to every callback; must outlive the pool */
} respool_factory_t;

/* Which idle resource a checkout gets: the most recently returned (LIFO, the
 * default: keeps a warm working set and lets the rest age out) or the least
 * recently returned (FIFO: spreads use over every resource). */
typedef enum { RESPOOL_LIFO = 0, RESPOOL_FIFO = 1 } respool_strategy_t;

/* Severity of a message given to config.log. */
typedef enum {
    RESPOOL_LOG_ERROR = 0, /* create() failures, leaked leases               */
    RESPOOL_LOG_WARN = 1,  /* degraded but working (no helper thread could start) */
    RESPOOL_LOG_INFO = 2,  /* create() works again after failures            */
} respool_log_level_t;

/* Receives the pool's diagnostic messages, on the thread that noticed (most
 * often the manager), never with a pool lock held. */
typedef void (*respool_log_fn)(void *log_ctx, respool_log_level_t level, const char *message);

/* config.log value that discards every message. */
RESPOOL_API void respool_log_discard(void *log_ctx, respool_log_level_t level, const char *message);

/* config.fairness_us value for strict FIFO hand-off (no barging at all). */
#define RESPOOL_FAIRNESS_STRICT (-1L)

/* Pool configuration. Every field's zero value is its documented default, so
 * `respool_config_t c = {0}; c.size = 5;` is valid. Durations are in
 * milliseconds unless named otherwise; negative values (except where one is
 * documented) and values above 10^12 ms (~31 years) are rejected with
 * RESPOOL_EINVAL. */
typedef struct respool_config {
    unsigned size;               /* permanent resources; created before respool_create returns */
    unsigned max_overflow;       /* extra resources made on demand when none is idle */
    respool_strategy_t strategy; /* which idle resource a checkout gets; LIFO default */

    /* Fairness bound in microseconds: a running thread may take a returned
     * resource ahead of a waiter (barging, for throughput) only while no
     * waiter has waited longer than this. 0 = 1000 us (1 ms);
     * RESPOOL_FAIRNESS_STRICT = always hand off to the longest waiter. */
    long fairness_us;

    /* Most create() calls in flight at once while the factory is healthy
     * (0 = 16; at most 256). While create() keeps failing the manager probes
     * with one call at a time whatever this says. */
    unsigned max_creating;

    /* Retry of a failing create(): the delay starts at retry_initial_ms
     * (0 = 10) and doubles up to retry_max_ms (0 = 2000, or retry_initial_ms
     * if larger), each delay drawn at random from its upper half (jitter).
     * Both set with retry_initial_ms > retry_max_ms is RESPOOL_EINVAL. */
    long retry_initial_ms;
    long retry_max_ms;

    /* How long an idle resource beyond `size` (overflow) may stay idle before
     * the manager destroys it. 0 = destroy it at checkin, as Poolboy does. */
    long overflow_idle_ms;

    /* Resources older than this are destroyed (when idle, or when they come
     * back) and replaced; each resource's lifetime is shortened by a random
     * 0-10 % so a pool filled at once does not expire at once. 0 = no limit. */
    long max_lifetime_ms;

    /* validate() runs at checkout on an idle resource not known good (made,
     * returned or validated) for at least this long. 0 = on every checkout
     * from the idle list. A resource handed straight to a waiter (just made
     * or just returned) is not validated. */
    long validate_idle_ms;

    /* When > 0 and validate() is given, the manager validates idle resources
     * not used or checked for this long (keepalive). 0 = off. */
    long keepalive_ms;

    /* When > 0, a lease held longer than this is reported once through the
     * log (level ERROR) with its age, call site and thread: leak detection.
     * 0 = off. */
    long leak_threshold_ms;

    /* Stamp every checkout and checkin with the clock, so hold times appear
     * in checkout errors, in the leak report and in stats.hold. Costs two
     * clock reads per checkout+checkin pair (docs/performance.md); on by
     * itself whenever validate_idle_ms, overflow_idle_ms, max_lifetime_ms,
     * keepalive_ms or leak_threshold_ms needs timestamps anyway. */
    bool track_hold_times;

    /* Load shedding. max_waiting > 0 caps the queue: a checkout that would
     * wait behind that many fails at once with RESPOOL_EFULL. With
     * deadline_admission, a checkout whose expected wait — its place in the
     * queue times the recent hold time, over size + max_overflow — exceeds
     * its timeout fails at once with RESPOOL_EFULL instead of waiting in
     * vain (turns on track_hold_times). */
    unsigned max_waiting;
    bool deadline_admission;

    /* The factory's fork hook (here rather than in respool_factory_t, so
     * that the contract's five-field factory initialisers keep compiling).
     * Optional: release a resource inherited across fork() without touching
     * what it shares with the parent — no goodbye on a shared socket (for
     * libpq: close the descriptor, never PQfinish). respool_free in a child
     * process calls it once per inherited resource, with factory.ctx,
     * instead of destroy(). NULL = inherited resources are left alone
     * (their memory is not freed). See respool_free and docs/api.md. */
    void (*abandon)(void *ctx, void *resource);

    /* Diagnostics sink. NULL = one line on stderr for ERROR and WARN
     * messages; respool_log_discard = silence. */
    respool_log_fn log;
    void *log_ctx;
} respool_config_t;

/* A checked-out resource. Returned by value; `resource` is the user's object.
 * The other members are private: they let the pool reject a stale, doubled or
 * foreign lease with RESPOOL_EINVAL instead of corrupting itself. */
typedef struct respool_lease {
    void *resource;
    struct {
        const void *pool;    /* the pool that issued the lease */
        uint32_t slot;       /* index of the pool's record of the resource */
        uint32_t generation; /* changes on every checkout and checkin */
    } private_;
} respool_lease_t;

/* ------------------------------------------------------------------------ */
/* Life of a pool                                                            */
/* ------------------------------------------------------------------------ */

/* Make a pool. Copies *cfg and *factory, starts the manager thread and
 * returns once `size` resources exist. On success *out is the pool.
 *   RESPOOL_EINVAL    NULL argument, size + max_overflow == 0 or above
 *                     RESPOOL_MAX_RESOURCES, missing create or destroy,
 *                     unknown strategy, negative durations
 *   RESPOOL_EFACTORY  create() failed while prefilling: everything made so
 *                     far was destroyed; the reason went to config.log
 *   RESPOOL_ENOMEM    memory or thread creation failed
 * On any failure *out is NULL. */
RESPOOL_API int respool_create(respool_t **out, const respool_config_t *cfg,
                               const respool_factory_t *factory);

/* Check out a resource into *lease.
 * timeout_ms < 0 waits without limit; > 0 waits until that deadline
 * (CLOCK_MONOTONIC, counted from the call), then RESPOOL_ETIMEDOUT; == 0
 * never waits for another holder: RESPOOL_EFULL at once when nothing is idle
 * for it and there is no room, else it waits in line for a create()
 * (RESPOOL_EFACTORY if a create() fails meanwhile or the factory is in its
 * retry backoff; RESPOOL_EFULL if the new resource went to an earlier
 * waiter and the room is gone).
 *   RESPOOL_OK, RESPOOL_ETIMEDOUT, RESPOOL_EFULL, RESPOOL_EFACTORY,
 *   RESPOOL_ESHUTDOWN (shutdown began), RESPOOL_EINVAL (NULL argument).
 * On failure lease->resource is NULL (except for EINVAL, which changes
 * nothing). Waiters are served in arrival order, with bounded barging
 * (config.fairness_us). */
RESPOOL_API int respool_checkout(respool_t *pool, long timeout_ms, respool_lease_t *lease);

/* respool_checkout, recording where it was called ("file:line" and the
 * function) and the calling thread on the lease's record: a checkout that
 * fails names the oldest holders by these (respool_checkout_error), and so
 * does the leak report. The macro below makes every respool_checkout call
 * do this (cost: docs/performance.md); define RESPOOL_NO_CALL_SITES before
 * including this header to call the plain function. The strings are kept,
 * not copied: pass string literals, as the macro does. */
RESPOOL_API int respool_checkout_at(respool_t *pool, long timeout_ms, respool_lease_t *lease,
                                    const char *site, const char *function);
#define RESPOOL_STRINGIFY_(x) #x
#define RESPOOL_STRINGIFY(x) RESPOOL_STRINGIFY_(x)
/* "file:line" of the place it is written, as one string literal. */
#define RESPOOL_HERE __FILE__ ":" RESPOOL_STRINGIFY(__LINE__)
#ifndef RESPOOL_NO_CALL_SITES
#define respool_checkout(pool, timeout_ms, lease)                                        \
    respool_checkout_at((pool), (timeout_ms), (lease), RESPOOL_HERE, __func__)
#endif

/* Why the calling thread's most recent failed checkout failed, as one line:
 * the code, how long it waited, the pool's counts (total, busy, idle,
 * waiting, creating), the last factory error, and the oldest holders with
 * their call sites, threads and (with hold times tracked) hold times, e.g.
 *   "checkout timed out after 100 ms: 4 total (4 busy, 0 idle), 2 waiting,
 *    0 creating; oldest holders: worker.c:42 in handle() thread 4711 for
 *    2.250 s; ..."
 * Copied into buf (always NUL-terminated when buflen > 0); returns the full
 * length like snprintf, 0 when this thread has had no failed checkout. Per
 * thread, so it is safe to call from anywhere; never contains resource
 * contents. */
RESPOOL_API size_t respool_checkout_error(char *buf, size_t buflen);

/* Give a resource back. reset() (where given) runs on this thread first; a
 * resource it rejects, one past its lifetime, or one beyond the pool's
 * current capacity is destroyed; otherwise it goes to the longest waiter or
 * becomes idle (overflow beyond `size` with nobody waiting is dismissed, see
 * config.overflow_idle_ms). The lease is cleared.
 *   RESPOOL_OK, RESPOOL_EINVAL (NULL, stale, doubled or foreign lease:
 *   nothing changes). Blocks only for reset(); never waits for create() or
 *   destroy(), which run on the manager side. */
RESPOOL_API int respool_checkin(respool_t *pool, respool_lease_t *lease);

/* Report a checked-out resource broken: it is given to destroy() on the
 * manager thread and never handed out again; the manager replaces it when
 * the pool needs one. The lease is cleared.
 *   RESPOOL_OK, RESPOOL_EINVAL (as for respool_checkin). */
RESPOOL_API int respool_destroyed(respool_t *pool, respool_lease_t *lease);

/* Change size and max_overflow while the pool runs. Growth is filled by the
 * manager and serves waiting checkouts; idle resources beyond the new size
 * become overflow (dismissed by the usual rule); busy ones beyond
 * size + max_overflow are destroyed when they come back.
 *   RESPOOL_OK, RESPOOL_EINVAL (NULL pool, 0 and 0, or above
 *   RESPOOL_MAX_RESOURCES), RESPOOL_ESHUTDOWN. */
RESPOOL_API int respool_resize(respool_t *pool, unsigned size, unsigned max_overflow);

/* Take a checked-out resource out of the pool for good (puddle's Hijack):
 * the pool forgets it — it is never validated, reset, destroyed or counted
 * again — and makes a replacement when it needs one. *resource receives it;
 * destroying it is now the caller's job. The lease is cleared. Counted in
 * stats.detached (created == destroyed + detached once all is done).
 *   RESPOOL_OK, RESPOOL_EINVAL (NULL argument, or a lease as for checkin). */
RESPOOL_API int respool_detach(respool_t *pool, respool_lease_t *lease, void **resource);

/* Pause (PgBouncer's PAUSE, HikariCP's suspend): nothing is handed out
 * until respool_resume. Checkouts wait within their timeouts (timeout 0
 * fails at once with RESPOOL_EFULL); leases still come back and become
 * idle. Idempotent. Shutdown ends a pause.
 *   RESPOOL_OK, RESPOOL_EINVAL (NULL), RESPOOL_ESHUTDOWN. */
RESPOOL_API int respool_pause(respool_t *pool);
/* End a pause: waiting checkouts are served in arrival order.
 *   RESPOOL_OK, RESPOOL_EINVAL (NULL), RESPOOL_ESHUTDOWN (fork() child). */
RESPOOL_API int respool_resume(respool_t *pool);

/* Evict all (pgxpool's Reset, HikariCP's soft evict), e.g. after rotating
 * credentials or a failover: idle resources are destroyed now, checked-out
 * ones when they come back, those being created when their create()
 * returns; the pool refills with new ones. Counted in stats.evicted.
 *   RESPOOL_OK, RESPOOL_EINVAL (NULL), RESPOOL_ESHUTDOWN. */
RESPOOL_API int respool_evict_all(respool_t *pool);

/* A file descriptor (Linux eventfd) that is readable exactly while a
 * checkout with timeout 0 would find an idle resource for it — not paused,
 * nobody waiting ahead — so code built on poll, epoll, libuv or libevent
 * can share the pool with blocking threads: wait for POLLIN, then
 * respool_checkout(pool, 0, ...), which may still lose the race to another
 * thread (RESPOOL_EFULL: wait again). Level-triggered; never read it
 * yourself. Made on the first call (the same fd after that), owned and
 * closed by the pool. Once requested, checkout and checkin keep it current:
 * a system call when the pool goes between "something idle" and "nothing
 * idle", and the fast paths are off (docs/performance.md).
 *   >= 0 the fd; -1 for a NULL pool, in a fork() child (EINVAL), or when
 *   eventfd is not available (errno tells). */
RESPOOL_API int respool_ready_fd(respool_t *pool);

/* Safe shutdown. From its first instant new checkouts fail with
 * RESPOOL_ESHUTDOWN and no new resources are made; checkouts already waiting
 * are still served by resources that come back (and by create() calls
 * already running). Returns RESPOOL_OK once every lease has come back and
 * every destroy() has returned (at once when no lease is out, even for
 * timeout 0: the destroys of idle resources are always waited for). If
 * timeout_ms (>= 0) passes first with leases still out — or a create(), or
 * the validate()/reset() of a checkout or checkin in progress — the waiting
 * checkouts fail with RESPOOL_ESHUTDOWN, idle resources are destroyed and it
 * returns RESPOOL_EBUSY; a lease that comes back later is destroyed at once.
 * timeout_ms < 0 waits without limit. Calling it again waits again; after
 * RESPOOL_OK it returns RESPOOL_OK at once. Must not be called from a
 * factory callback. */
RESPOOL_API int respool_shutdown(respool_t *pool, long timeout_ms);

/* Shut down without a deadline if that has not completed (this waits for
 * every lease to come back), join the manager and free everything.
 * respool_free(NULL) does nothing. Call once, after every other call on the
 * pool has returned. */
RESPOOL_API void respool_free(respool_t *pool);

/* ------------------------------------------------------------------------ */
/* Conveniences                                                              */
/* ------------------------------------------------------------------------ */

/* What a transaction's work function says of the resource it used. */
typedef enum {
    RESPOOL_KEEP = 0,   /* fine: check it in */
    RESPOOL_BROKEN = 1, /* broken: report it destroyed */
} respool_verdict_t;

typedef respool_verdict_t (*respool_work_fn)(void *resource, void *arg);

/* Poolboy's transaction: check out (as respool_checkout), run work(resource,
 * arg) on this thread, then check in, or report destroyed when work returns
 * RESPOOL_BROKEN. Returns the checkout's code (work did not run unless it is
 * RESPOOL_OK) or RESPOOL_EINVAL for a NULL pool or work. */
RESPOOL_API int respool_transaction(respool_t *pool, long timeout_ms,
                                    respool_work_fn work, void *arg);
/* respool_transaction recording the call site, as respool_checkout_at. */
RESPOOL_API int respool_transaction_at(respool_t *pool, long timeout_ms, respool_work_fn work,
                                       void *arg, const char *site, const char *function);
#ifndef RESPOOL_NO_CALL_SITES
#define respool_transaction(pool, timeout_ms, work, arg)                                 \
    respool_transaction_at((pool), (timeout_ms), (work), (arg), RESPOOL_HERE, __func__)
#endif

/* ------------------------------------------------------------------------ */
/* State, statistics and diagnostics                                         */
/* ------------------------------------------------------------------------ */

typedef enum {
    RESPOOL_READY = 0, /* at least one idle resource                              */
    RESPOOL_OVERFLOW,  /* none idle, but room to make overflow resources          */
    RESPOOL_FULL,      /* none idle and overflow exhausted (or max_overflow == 0) */
    RESPOOL_SHUTDOWN,  /* shutdown has begun                                      */
} respool_state_t;

/* A latency distribution: percentiles from a log-linear histogram (each
 * at most 6.25% above the true value, never above max_ns). */
typedef struct respool_latency {
    uint64_t count;  /* samples */
    uint64_t sum_ns; /* of all samples */
    uint64_t p50_ns, p90_ns, p99_ns, p999_ns, max_ns;
} respool_latency_t;

typedef struct respool_stats {
    respool_state_t state;
    unsigned size, max_overflow; /* current configuration                         */
    unsigned idle;               /* made and waiting in the pool                  */
    unsigned busy;               /* checked out, or out of the pool for validate()/reset() */
    unsigned overflow;           /* live resources beyond `size` (idle or busy)   */
    unsigned creating;           /* create() calls in flight (or planned)         */
    unsigned waiting;            /* threads blocked in respool_checkout           */
    uint64_t created, destroyed; /* factory calls that succeeded / destroy calls  */
    uint64_t checkouts;          /* successful checkouts                          */
    uint64_t timeouts;           /* checkouts that ended ETIMEDOUT or EFULL       */
    uint64_t create_failures;    /* create() calls that failed                    */
    /* Fields beyond the contract's. */
    unsigned destroying;         /* resources waiting for or inside destroy()     */
    uint64_t waits;              /* checkouts that had to wait (any outcome)      */
    uint64_t wait_ns_total;      /* time those checkouts spent waiting            */
    uint64_t wait_ns_max;        /* longest single wait                           */
    uint64_t reported_broken;    /* respool_destroyed() calls                     */
    uint64_t validate_failures;  /* validate() returned false                     */
    uint64_t reset_failures;     /* reset() returned false                        */
    uint64_t dismissed;          /* overflow destroyed when idle or at checkin,
                                    and resources beyond capacity after a shrink */
    uint64_t expired;            /* destroyed for max_lifetime_ms                 */
    uint64_t leaks;              /* leases reported past leak_threshold_ms        */
    unsigned consecutive_create_failures; /* 0 while the factory is healthy       */
    uint64_t evicted;            /* destroyed because of respool_evict_all        */
    uint64_t detached;           /* taken out for good by respool_detach          */
    uint64_t shed;               /* checkouts refused at once by max_waiting or
                                    deadline_admission (not in timeouts)          */
    bool paused;                 /* respool_pause is in effect                    */
    /* Latency histograms since the pool was made. */
    respool_latency_t checkout_wait; /* time inside respool_checkout of every
                                        successful checkout (0 when nothing
                                        had to be waited for)            */
    respool_latency_t hold;          /* checkout to checkin (or destroyed);
                                        only while hold times are tracked */
    respool_latency_t create;        /* each create() call, failed ones too */
    respool_latency_t validate;      /* each validate() call              */
} respool_stats_t;

/* One consistent snapshot of the pool, taken atomically with respect to
 * every other call. Does nothing if pool or out is NULL. May be called from
 * factory callbacks. */
RESPOOL_API void respool_stats(respool_t *pool, respool_stats_t *out);

/* "ready", "overflow", "full", "shutdown"; never NULL ("unknown" otherwise). */
RESPOOL_API const char *respool_state_name(respool_state_t state);

/* Copy the factory's most recent create() failure text into buf (always
 * NUL-terminated when buflen > 0). Returns the text's full length (0 when
 * create() has never failed), like snprintf. */
RESPOOL_API size_t respool_last_error(respool_t *pool, char *buf, size_t buflen);

/* Render the stats in the Prometheus text exposition format, each metric
 * named respool_* with the label pool="<name>" (NULL or "": "default";
 * characters other than [A-Za-z0-9_.:-] are replaced with '_'; at most 127
 * characters are kept). Returns the full length like snprintf (0 for a NULL
 * pool); nothing is written when buf is NULL. */
RESPOOL_API size_t respool_stats_prometheus(respool_t *pool, const char *name,
                                            char *buf, size_t buflen);

#ifdef __cplusplus
}
#endif
#endif /* RESPOOL_H */
