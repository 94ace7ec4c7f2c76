/*
 * internal.h — the pool's private state, shared by the files of src/.
 *
 * One mutex (pool->lock) guards everything below that is not marked
 * otherwise. No user callback ever runs while it is held. The files:
 *   pool.c        the public calls and the state machine of a resource
 *   slots.c       the slot table (one record per resource) and the idle list
 *   waiters.c     the FIFO queue of blocked checkouts and the hand-off rule
 *   manager.c     the manager thread, its create helpers, planning, timers
 *   diagnostics.c errors, logging, stats, Prometheus text
 * docs/design.md draws how they fit.
 */
#ifndef RESPOOL_INTERNAL_H
#define RESPOOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "respool.h"

#define NO_SLOT UINT32_MAX
#define RESPOOL_MAX_DURATION_MS 1000000000000L /* ~31 years: larger is absurd   */
#define RESPOOL_MAX_CREATING 256
#define NO_DEADLINE INT64_MAX

/* Slots live in fixed chunks that never move, so a slot pointer stays valid
 * for the pool's lifetime and a lease can name its slot by index. */
#define SLOT_CHUNK_SHIFT 8
#define SLOT_CHUNK_SIZE (1u << SLOT_CHUNK_SHIFT)

/* Where a slot's resource is in its life (docs/design.md has the diagram). */
typedef enum {
    SLOT_FREE = 0,   /* no resource; on the free list                        */
    SLOT_CREATING,   /* reserved by a helper whose create() is running        */
    SLOT_IDLE,       /* in the pool, on the idle list                         */
    SLOT_BUSY,       /* checked out under a lease (the only state a lease matches) */
    SLOT_CHECKING,   /* out of the pool for validate()/reset(), by a caller or
                        the manager's keepalive: counted busy                 */
    SLOT_DOOMED,     /* on the doomed list, waiting for the manager's destroy() */
    SLOT_DESTROYING, /* destroy() is running on the manager thread            */
} slot_state_t;

/* One resource's record. `next` chains the free list and the doomed list;
 * idle slots are named by the idle ring instead. */
typedef struct slot {
    void *resource;
    uint32_t generation; /* +1 at each checkout and each return: a lease is
                            valid only while its generation is current       */
    uint32_t next;
    uint8_t state;         /* slot_state_t */
    bool leak_reported;    /* this checkout was already reported as a leak  */
    uint32_t epoch;        /* pool->epoch when its create() began: a resource
                              of an older epoch is destroyed when it comes back
                              (respool_evict_all)                            */
    int64_t expires_ns;    /* end of life (max_lifetime_ms), 0 = never      */
    int64_t idle_since_ns; /* when it last became idle (if times are kept)  */
    int64_t verified_ns;   /* last known good: made, returned or validated  */
    int64_t checkout_ns;   /* when the current lease began (if times kept)  */
    /* Who holds the current lease (respool_checkout_at): for checkout
     * errors and the leak report. site NULL = not recorded. */
    const char *site;           /* "file:line"                               */
    const char *site_function;
    uint32_t site_thread;       /* kernel thread id of the holder            */
    uint64_t checkout_sequence; /* pool->checkouts when it was taken: the
                                   order of the holders, with or without times */
} slot_t;

/* A latency histogram (histogram.c): log-linear buckets, fixed memory. */
#define HISTOGRAM_SUB_BITS 4
#define HISTOGRAM_SUB_BUCKETS (1u << HISTOGRAM_SUB_BITS)
#define HISTOGRAM_MAX_EXPONENT 48 /* 2^48 ns and above share the last bucket */
#define HISTOGRAM_BUCKETS                                                              \
    ((HISTOGRAM_MAX_EXPONENT - HISTOGRAM_SUB_BITS + 1) * HISTOGRAM_SUB_BUCKETS + 1)
typedef struct histogram {
    uint64_t count, max_ns, sum_ns;
    uint64_t buckets[HISTOGRAM_BUCKETS];
} histogram_t;

/* Where a blocked checkout sleeps (parking.c): a word it sleeps on
 * without holding any lock. Bit 0 = finished; the rest counts wake-ups. */
#define PARKER_FINISHED 1u
typedef struct parker {
    _Atomic uint32_t word;
#if !defined(__linux__) || defined(RESPOOL_PORTABLE_PARKING)
    pthread_mutex_t lock;
    pthread_cond_t wake;
#elif defined(RESPOOL_VALGRIND)
    /* Valgrind builds: futex wakes announced and not yet made (parking.c). */
    _Atomic uint32_t notifying;
#endif
} parker_t;

/* Where a checkout was called from (respool_checkout_at) and by whom. */
typedef struct call_site {
    const char *site;     /* "file:line"; NULL: not recorded (plain respool_checkout) */
    const char *function;
    uint32_t thread;      /* kernel thread id                           */
} call_site_t;

/* A thread blocked in respool_checkout. Lives on that thread's stack; it is
 * in the queue exactly while `in_queue`, and only the lock holder touches
 * the queue links or completes it. Completing it (waiter_complete) writes
 * outcome, slot and lease, then finishes the parker: from then on the
 * waiter owns every field again and returns without taking the lock. */
typedef struct waiter {
    struct waiter *prev, *next;
    parker_t parker;
    int64_t enqueued_ns; /* when it started waiting: fairness and stats   */
    int64_t deadline_ns; /* NO_DEADLINE when it waits without limit      */
    uint32_t slot;       /* the slot handed to it, NO_SLOT until then    */
    int outcome;         /* WAITER_PENDING until completed               */
    respool_lease_t lease; /* issued by the completer when outcome is OK */
    const call_site_t *site; /* recorded on the lease it is issued       */
    bool in_queue;
    bool zero_timeout;   /* timeout 0: fails when its create() fails     */
    bool signalled;      /* woken and not yet running: no second wake    */
} waiter_t;

#define WAITER_PENDING (-1)

typedef struct waiter_queue {
    waiter_t *head, *tail; /* head = longest waiting */
    unsigned count;
    unsigned zero_timeout_count;
} waiter_queue_t;

struct respool {
    /* ---- The hot part. Everything the uncontended checkout and checkin
     * touch is in the first two cache lines (the struct is 64-byte
     * aligned): the lock's line and the next, which ends with config.size.
     * Keep it so: a fast path pair then moves two lines between cores
     * instead of five. ---- */
    pthread_mutex_t lock;

    /* The fast paths are allowed (no clock, no callback, no shutdown):
     * set at create from the config, cleared when shutdown begins. */
    bool fast_checkout; /* no validate(), no timestamps                     */
    bool fast_checkin;  /* no reset(), no timestamps                        */
    bool fifo;          /* config.strategy == RESPOOL_FIFO (read-only), here
                           so that the fast paths need no third line      */

    /* The idle ring: slot indices in the order they became idle, oldest at
     * idle_ring[idle_oldest], `idle` of them. LIFO takes the newest end,
     * FIFO the oldest; the reaper and sweeps work from the oldest end.
     * Capacity is a power of two >= slot_count, so it never overflows. */
    uint32_t idle_mask;             /* capacity - 1                        */
    uint32_t *idle_ring;
    uint32_t idle_oldest;

    /* Counts. live = idle + busy. Invariants: idle = length of the idle
     * list; busy = slots BUSY or CHECKING; doomed = slots DOOMED or
     * DESTROYING; creating = create_jobs + slots CREATING. */
    unsigned idle, busy;

    /* Slot table. Invariants: slot_count = chunk_count * SLOT_CHUNK_SIZE;
     * every slot is in exactly one place: the free list, the idle ring, the
     * doomed list, or out (BUSY/CHECKING/CREATING/DESTROYING). */
    uint32_t slot_count;
    slot_t **chunks;

    waiter_queue_t waiters;
    uint64_t checkouts; /* for respool_stats, with the counters below      */
    uint32_t epoch;     /* +1 at each respool_evict_all                    */

    /* Configuration (copied at create; size and max_overflow change with
     * respool_resize under the lock; the rest is read-only after create). */
    respool_config_t config;
    /* ---- end of the hot part ---- */

    /* A waiter's wake-up to deliver after the lock is released (Linux), so
     * the woken thread does not run into the lock its waker still holds.
     * NULL whenever the lock is free: every unlock outside the fast paths
     * goes through pool_unlock, every wait on a pool condition variable
     * through pool_flush_wakes first. The fast paths never defer. */
    parker_t *deferred_wake;

    respool_factory_t factory;
    int64_t fairness_ns;  /* < 0: strict hand-off                       */
    bool keep_times;      /* some feature needs timestamps on the fast path */

    uint32_t chunk_count, chunk_capacity;
    uint32_t free_head;             /* free list (via `next`)              */
    uint32_t doomed_head;           /* doomed list (via `next`)            */

    unsigned doomed;
    unsigned creating;    /* create() calls planned or running          */
    unsigned keepalive_checking; /* of busy: idle ones the manager is validating */
    unsigned create_jobs; /* planned, not yet taken by a helper          */

    /* Factory health. failing while create() keeps failing: then at most
     * one create() (a probe) is planned, not before retry_at_ns. */
    unsigned consecutive_failures;
    int64_t retry_delay_ns;  /* the delay the next failure will draw from */
    int64_t retry_at_ns;
    uint64_t random_state;   /* xorshift64 for jitter                     */
    char last_error[512];

    /* Life of the pool. */
    bool prefilling;         /* respool_create is waiting for `size`     */
    bool prefill_failed;
    bool shutting_down;      /* respool_shutdown has begun               */
    bool shutdown_done;      /* it returned RESPOOL_OK once              */
    bool paused;             /* respool_pause: nothing is handed out      */
    bool forked;             /* this is a child process's copy (fork.c)   */

    /* Load shedding: the recent hold time (EWMA, from track_hold_times),
     * for deadline-aware admission. 0 = not known yet. */
    int64_t hold_estimate_ns;

    /* respool_ready_fd: an eventfd readable while a checkout with timeout
     * 0 would find a resource idle for it (-1 = not requested), and
     * whether it is readable now. Synchronised at each pool_unlock. */
    int ready_fd;
    bool ready_fd_readable;
    bool stopping;           /* respool_free: manager and helpers exit   */

    /* The manager and its helpers. The manager destroys, keeps time and
     * spawns helpers; helpers only run create(). */
    pthread_t manager;
    pthread_cond_t manager_wake;  /* doomed work, timers, spawn requests */
    pthread_cond_t helper_wake;   /* create jobs                         */
    pthread_cond_t settled;       /* creates/destroys/leases finished: respool_create, shutdown */
    pthread_t *helpers;
    unsigned helper_count;        /* started helpers                     */
    unsigned helper_limit;        /* max_creating, lowered if a start fails */
    unsigned helpers_idle;        /* helpers waiting on helper_wake      */
    unsigned settle_waiters;      /* threads waiting on `settled`        */
    bool manager_sleeping;        /* manager waits on manager_wake       */

    /* Counters for respool_stats. */
    uint64_t created, destroyed, timeouts, create_failures;
    uint64_t waits, wait_ns_total, wait_ns_max;
    uint64_t reported_broken, validate_failures, reset_failures;
    uint64_t dismissed, expired, leaks;
    uint64_t evicted, detached, shed;

    /* Latency histograms for respool_stats (the checkouts that did not
     * wait are counted by `checkouts`, not recorded). */
    histogram_t wait_histogram, hold_histogram, create_histogram, validate_histogram;

    pthread_condattr_t monotonic_condattr; /* for every cond we time-wait on */
};

/* ---- clock (pool.c) ---- */
int64_t clock_now_ns(void);
struct timespec timespec_from_ns(int64_t ns);
int64_t deadline_after_ms(int64_t now_ns, long timeout_ms);

/* ---- slots.c (the O(1) pieces inline: they are the fast path) ---- */
static inline slot_t *slot_at(const respool_t *pool, uint32_t index)
{
    return &pool->chunks[index >> SLOT_CHUNK_SHIFT][index & (SLOT_CHUNK_SIZE - 1)];
}

/* The slot a lease names, or NULL if the lease is not a current lease of
 * this pool: foreign, stale (already returned), doubled, or altered. */
static inline slot_t *lease_slot(const respool_t *pool, const respool_lease_t *lease)
{
    if (lease->private_.pool != pool || lease->private_.slot >= pool->slot_count)
        return NULL;
    slot_t *s = slot_at(pool, lease->private_.slot);
    if (s->state != SLOT_BUSY || s->generation != lease->private_.generation ||
        s->resource != lease->resource)
        return NULL;
    return s;
}

static inline void idle_push_newest(respool_t *pool, uint32_t index)
{
    slot_at(pool, index)->state = SLOT_IDLE;
    pool->idle_ring[(pool->idle_oldest + pool->idle) & pool->idle_mask] = index;
    pool->idle++;
}

static inline void idle_push_oldest(respool_t *pool, uint32_t index)
{
    slot_at(pool, index)->state = SLOT_IDLE;
    pool->idle_oldest = (pool->idle_oldest - 1) & pool->idle_mask;
    pool->idle_ring[pool->idle_oldest] = index;
    pool->idle++;
}

/* Take from the oldest end (idle > 0). */
static inline uint32_t idle_take_oldest(respool_t *pool)
{
    uint32_t index = pool->idle_ring[pool->idle_oldest];
    pool->idle_oldest = (pool->idle_oldest + 1) & pool->idle_mask;
    pool->idle--;
    return index;
}

/* Take the idle resource the strategy names (idle > 0). */
static inline uint32_t idle_take(respool_t *pool)
{
    if (pool->fifo)
        return idle_take_oldest(pool);
    pool->idle--;
    return pool->idle_ring[(pool->idle_oldest + pool->idle) & pool->idle_mask];
}

/* The k-th idle slot from the oldest end (k < idle). */
static inline uint32_t idle_at(const respool_t *pool, uint32_t k)
{
    return pool->idle_ring[(pool->idle_oldest + k) & pool->idle_mask];
}

int slot_reserve(respool_t *pool, uint32_t *index);
void slot_release(respool_t *pool, uint32_t index);
unsigned idle_extract(respool_t *pool, bool (*pick)(const slot_t *slot, int64_t arg),
                      int64_t arg, uint32_t *out, unsigned max);
void slot_doom(respool_t *pool, uint32_t index);

/* ---- parking.c ---- */
/* Helgrind does not know that an acquire load which sees the finished bit
 * orders the waiter after its completer (the waiter takes no lock after a
 * hand-off): the valgrind build (-DRESPOOL_VALGRIND) says so explicitly. */
#if defined(RESPOOL_VALGRIND)
#include <valgrind/helgrind.h>
#define PARKER_HAPPENS_BEFORE(parker) ANNOTATE_HAPPENS_BEFORE(&(parker)->word)
#define PARKER_HAPPENS_AFTER(parker) ANNOTATE_HAPPENS_AFTER(&(parker)->word)
#else
#define PARKER_HAPPENS_BEFORE(parker) ((void)0)
#define PARKER_HAPPENS_AFTER(parker) ((void)0)
#endif
void parker_init(parker_t *parker);
void parker_destroy(parker_t *parker);
void parker_wait(parker_t *parker, uint32_t ticket, int64_t deadline_ns);
void parker_wake(parker_t *parker, bool finish);
void parker_wake_deferred(respool_t *pool, parker_t *parker);
void parker_notify(parker_t *parker);
/* A wake-up announced and then not made (its waiter was completed, which
 * wakes it anyway): counted off without a system call. */
#if defined(RESPOOL_VALGRIND) && defined(__linux__) && !defined(RESPOOL_PORTABLE_PARKING)
void parker_notify_done(parker_t *parker);
#else
#define parker_notify_done(parker) ((void)(parker))
#endif

/* The word to pass to parker_wait; read it under the pool lock. */
static inline uint32_t parker_ticket(parker_t *parker)
{
    return atomic_load_explicit(&parker->word, memory_order_relaxed);
}

/* Has a completer finished the waiter? (acquire: its outcome and lease are
 * then visible without the lock) */
static inline bool parker_finished(parker_t *parker)
{
    bool finished = atomic_load_explicit(&parker->word, memory_order_acquire) & PARKER_FINISHED;
    if (finished)
        PARKER_HAPPENS_AFTER(parker);
    return finished;
}

/* Deliver a deferred wake-up now (before waiting on a condition variable
 * of the pool, which releases the lock). */
static inline void pool_flush_wakes(respool_t *pool)
{
    parker_t *parker = pool->deferred_wake;
    if (parker) {
        pool->deferred_wake = NULL;
        parker_notify(parker);
    }
}

/* Wait on one of the pool's condition variables (which releases the lock)
 * until signalled or deadline_ns (NO_DEADLINE = no limit); a deferred
 * wake-up is delivered first. */
static inline void pool_cond_wait(respool_t *pool, pthread_cond_t *cond, int64_t deadline_ns)
{
    pool_flush_wakes(pool);
    if (deadline_ns == NO_DEADLINE) {
        pthread_cond_wait(cond, &pool->lock);
    } else {
        struct timespec until = timespec_from_ns(deadline_ns);
        pthread_cond_timedwait(cond, &pool->lock, &until);
    }
}

/* Make the readiness fd's state match the pool's (admin.c). */
void ready_fd_sync(respool_t *pool);

/* Release the pool lock, then deliver the deferred wake-up, if any. */
static inline void pool_unlock(respool_t *pool)
{
    if (pool->ready_fd >= 0)
        ready_fd_sync(pool);
    parker_t *parker = pool->deferred_wake;
    pool->deferred_wake = NULL;
    pthread_mutex_unlock(&pool->lock);
    if (parker)
        parker_notify(parker);
}

/* ---- histogram.c ---- */
void histogram_record(histogram_t *h, uint64_t value_ns);
void histogram_summary(const histogram_t *h, uint64_t zeros, respool_latency_t *out);

/* ---- waiters.c ---- */
void waiter_enqueue(respool_t *pool, waiter_t *waiter);
void waiter_enqueue_front(respool_t *pool, waiter_t *waiter);
void waiter_dequeue(respool_t *pool, waiter_t *waiter);
void waiter_complete(respool_t *pool, waiter_t *waiter, int outcome, uint32_t slot);
bool waiters_head_starving(const respool_t *pool, int64_t now_ns);
bool waiters_hand_off(respool_t *pool, uint32_t index, int64_t now_ns);
void waiters_kick(respool_t *pool);
void waiters_fail(respool_t *pool, int outcome, bool zero_timeout_only);

/* ---- pool.c: where a resource goes next ---- */
void fast_paths_update(respool_t *pool);
void lease_issue(respool_t *pool, uint32_t index, respool_lease_t *lease, const call_site_t *site);
/* Take the lock and find the slot of a current lease; NULL (lock released)
 * for a NULL argument or a stale, doubled, foreign or altered lease. */
slot_t *lock_lease(respool_t *pool, const respool_lease_t *lease);
/* A lease ends (checkin, destroyed, detach): its hold time is recorded. */
void record_hold(respool_t *pool, const slot_t *s);
void record_wait(respool_t *pool, const waiter_t *waiter, int64_t now_ns, bool served);
void route_resource(respool_t *pool, uint32_t index, bool fresh);
void shutdown_progress(respool_t *pool);

/* ---- fork.c ---- */
int fork_register(respool_t *pool);
void fork_unregister(respool_t *pool);
void fork_free_in_child(respool_t *pool);

/* ---- manager.c ---- */
int manager_start(respool_t *pool);
void manager_stop(respool_t *pool);
void plan_creates(respool_t *pool);
void manager_notify(respool_t *pool);
void settled_broadcast(respool_t *pool);

/* ---- diagnostics.c ---- */
/* The calling thread's kernel id: a thread-local read after the first call. */
extern __attribute__((tls_model("initial-exec"))) _Thread_local uint32_t thread_id_cache;
uint32_t thread_id_fetch(void);
static inline uint32_t current_thread_id(void)
{
    uint32_t id = thread_id_cache;
    return __builtin_expect(id != 0, 1) ? id : thread_id_fetch();
}
/* Write the calling thread's checkout error (lock held): why `code`, after
 * waiting since started_ns, with the counts and the oldest holders. */
void checkout_error_record(respool_t *pool, int code, int64_t started_ns, const char *detail);
/* "file:line in function() thread N": who holds slot s (leak report). */
void leak_describe(const respool_t *pool, const slot_t *s, int64_t now, char *buf, size_t buflen);
void pool_log(respool_t *pool, respool_log_level_t level, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif /* RESPOOL_INTERNAL_H */
