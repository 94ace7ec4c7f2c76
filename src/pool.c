/*
 * pool.c — the public calls and the state machine of a resource.
 *
 * Checkout and checkin are the fast path: one lock round trip, O(1), no
 * allocation, no syscall and no clock read when uncontended (a clock read
 * only when a feature needs timestamps: validate window, overflow idle
 * time, lifetime, keepalive, leak detection). Everything slow — create(),
 * destroy(), timers — belongs to the manager (manager.c); waiting belongs to
 * the waiter queue (waiters.c).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* ---- clock ------------------------------------------------------------ */

int64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec timespec_from_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    return ts;
}

/* Milliseconds to nanoseconds, saturating: a duration of centuries is
 * simply "never". */
static int64_t ms_to_ns(long ms)
{
    return ms >= INT64_MAX / 1000000 ? INT64_MAX : (int64_t)ms * 1000000;
}

/* A true deadline `timeout_ms` after now_ns; NO_DEADLINE if it would
 * overflow. */
int64_t deadline_after_ms(int64_t now_ns, long timeout_ms)
{
    int64_t span = ms_to_ns(timeout_ms);
    return span >= NO_DEADLINE - now_ns ? NO_DEADLINE : now_ns + span;
}

/* ---- creation --------------------------------------------------------- */

/* Check a configuration and fill in its defaults. */
static int config_normalize(respool_config_t *c, const respool_factory_t *factory)
{
    uint64_t capacity = (uint64_t)c->size + c->max_overflow;
    if (capacity == 0 || capacity > RESPOOL_MAX_RESOURCES)
        return RESPOOL_EINVAL;
    if (!factory->create || !factory->destroy)
        return RESPOOL_EINVAL;
    if (c->strategy != RESPOOL_LIFO && c->strategy != RESPOOL_FIFO)
        return RESPOOL_EINVAL;
    if (c->fairness_us < RESPOOL_FAIRNESS_STRICT || c->max_creating > RESPOOL_MAX_CREATING)
        return RESPOOL_EINVAL;
    const long durations[] = {c->retry_initial_ms, c->retry_max_ms,  c->overflow_idle_ms,
                              c->max_lifetime_ms,  c->validate_idle_ms, c->keepalive_ms,
                              c->leak_threshold_ms, c->fairness_us / 1000};
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++)
        if (durations[i] < 0 || durations[i] > RESPOOL_MAX_DURATION_MS)
            return RESPOOL_EINVAL;
    if (c->retry_initial_ms > 0 && c->retry_max_ms > 0 && c->retry_initial_ms > c->retry_max_ms)
        return RESPOOL_EINVAL;
    if (c->fairness_us == 0)
        c->fairness_us = 1000;
    if (c->max_creating == 0)
        c->max_creating = 16;
    if (c->retry_initial_ms == 0)
        c->retry_initial_ms = 10;
    if (c->retry_max_ms == 0)
        c->retry_max_ms = c->retry_initial_ms > 2000 ? c->retry_initial_ms : 2000;
    if (c->retry_initial_ms > c->retry_max_ms)
        c->retry_initial_ms = c->retry_max_ms;
    return RESPOOL_OK;
}

static void pool_release_memory(respool_t *pool)
{
    for (uint32_t c = 0; c < pool->chunk_count; c++)
        free(pool->chunks[c]);
    free(pool->chunks);
    free(pool->idle_ring);
    free(pool->helpers);
    if (pool->ready_fd >= 0)
        close(pool->ready_fd);
    pthread_cond_destroy(&pool->manager_wake);
    pthread_cond_destroy(&pool->helper_wake);
    pthread_cond_destroy(&pool->settled);
    pthread_condattr_destroy(&pool->monotonic_condattr);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

int respool_create(respool_t **out, const respool_config_t *cfg, const respool_factory_t *factory)
{
    if (!out)
        return RESPOOL_EINVAL;
    *out = NULL;
    if (!cfg || !factory)
        return RESPOOL_EINVAL;
    respool_config_t config = *cfg;
    int rc = config_normalize(&config, factory);
    if (rc != RESPOOL_OK)
        return rc;

    /* Cache-line aligned, so the hot part really is two lines. */
    respool_t *pool = aligned_alloc(64, (sizeof *pool + 63) / 64 * 64);
    if (!pool)
        return RESPOOL_ENOMEM;
    memset(pool, 0, sizeof *pool);
    pool->ready_fd = -1;
    pool->helpers = calloc(config.max_creating, sizeof *pool->helpers);
    if (!pool->helpers) {
        free(pool);
        return RESPOOL_ENOMEM;
    }
    pool->config = config;
    pool->fifo = config.strategy == RESPOOL_FIFO;
    pool->factory = *factory;
    pool->helper_limit = config.max_creating;
    pool->fairness_ns = config.fairness_us < 0 ? -1 : (int64_t)config.fairness_us * 1000;
    pool->keep_times = (factory->validate && config.validate_idle_ms > 0) ||
                       config.overflow_idle_ms > 0 || config.max_lifetime_ms > 0 ||
                       (factory->validate && config.keepalive_ms > 0) ||
                       config.leak_threshold_ms > 0 || config.track_hold_times ||
                       config.deadline_admission;
    fast_paths_update(pool);
    pool->free_head = pool->doomed_head = NO_SLOT;
    pool->retry_delay_ns = ms_to_ns(config.retry_initial_ms);
    pool->random_state = (uint64_t)clock_now_ns() ^ (uint64_t)(uintptr_t)pool;
    if (pool->random_state == 0)
        pool->random_state = 0x9e3779b97f4a7c15u;

    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_init(&pool->monotonic_condattr);
    pthread_condattr_setclock(&pool->monotonic_condattr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->manager_wake, &pool->monotonic_condattr);
    pthread_cond_init(&pool->helper_wake, NULL);
    pthread_cond_init(&pool->settled, &pool->monotonic_condattr);

    if (manager_start(pool) != RESPOOL_OK) {
        pool_release_memory(pool);
        return RESPOOL_ENOMEM;
    }

    /* Prefill: the manager makes `size` resources; wait until they exist or
     * one create() fails. */
    pthread_mutex_lock(&pool->lock);
    pool->prefilling = true;
    plan_creates(pool);
    pool->settle_waiters++;
    while (!pool->prefill_failed && pool->idle + pool->busy < pool->config.size)
        pool_cond_wait(pool, &pool->settled, NO_DEADLINE);
    pool->settle_waiters--;
    pool->prefilling = false;
    bool failed = pool->prefill_failed;
    pool_unlock(pool);

    if (failed) {
        respool_free(pool); /* waits for creates in flight, destroys all */
        return RESPOOL_EFACTORY;
    }
    if (fork_register(pool) != RESPOOL_OK) {
        respool_free(pool);
        return RESPOOL_ENOMEM;
    }
    *out = pool;
    return RESPOOL_OK;
}

/* ---- where a resource goes next --------------------------------------- */

/* Move a resource that is out of every list and counted busy into the idle
 * list. */
static void make_idle(respool_t *pool, uint32_t index, int64_t now_ns)
{
    slot_t *s = slot_at(pool, index);
    pool->busy--;
    s->idle_since_ns = now_ns;
    idle_push_newest(pool, index);
}

/* Route a resource that just came back (checkin, keepalive) or was just made
 * (fresh: its slot is CREATING and not yet counted). In order: shutdown
 * serves only waiters already queued; beyond capacity or past its lifetime
 * it is destroyed; a waiter gets it (fresh: always directly; returned:
 * directly once the longest waiter starves, else it turns idle and that
 * waiter is woken — bounded barging); with nobody waiting, overflow is
 * dismissed (or idles for overflow_idle_ms); else it turns idle. */
void route_resource(respool_t *pool, uint32_t index, bool fresh)
{
    slot_t *s = slot_at(pool, index);
    if (fresh) {
        pool->busy++;
        s->state = SLOT_CHECKING;
    }
    int64_t now = (pool->keep_times || pool->waiters.count) ? clock_now_ns() : 0;
    s->verified_ns = now;

    if (pool->shutting_down) {
        if (!(pool->waiters.count && waiters_hand_off(pool, index, now)))
            slot_doom(pool, index);
        shutdown_progress(pool);
        return;
    }
    unsigned live = pool->idle + pool->busy;
    if (live > pool->config.size + pool->config.max_overflow) {
        pool->dismissed++;
        slot_doom(pool, index);
        return;
    }
    if (s->epoch != pool->epoch) { /* made before respool_evict_all */
        pool->evicted++;
        slot_doom(pool, index);
        plan_creates(pool);
        return;
    }
    if (s->expires_ns && now >= s->expires_ns) {
        pool->expired++;
        slot_doom(pool, index);
        plan_creates(pool);
        return;
    }
    if (pool->waiters.count && !pool->paused) { /* paused: served at resume */
        if (fresh || waiters_head_starving(pool, now)) {
            if (waiters_hand_off(pool, index, now))
                return;
        } else {
            make_idle(pool, index, now);
            waiters_kick(pool);
            return;
        }
    }
    if (live > pool->config.size) {
        if (pool->config.overflow_idle_ms == 0) {
            pool->dismissed++;
            slot_doom(pool, index);
            return;
        }
        make_idle(pool, index, now);
        manager_notify(pool); /* the reaper times it */
        return;
    }
    make_idle(pool, index, now); /* a fresh one: finish_create wakes prefill */
}

/* During shutdown: waiters that nothing can serve any more (no lease out, no
 * create() in flight) fail, and shutdown callers re-check for completion. */
void shutdown_progress(respool_t *pool)
{
    if (!pool->shutting_down)
        return;
    /* A checkout with timeout 0 waits only for a create(), and no new one
     * starts now; the others can still be served by returning leases. */
    if (pool->creating == 0 && pool->waiters.count)
        waiters_fail(pool, RESPOOL_ESHUTDOWN, pool->busy > 0);
    settled_broadcast(pool);
}

/* Which fast paths are allowed: none while shutting down, paused (checkout),
 * with timestamps kept, a readiness fd to maintain, or in a forked child;
 * checkout not with validate(), checkin not with reset(). Call after any of
 * those changes. */
void fast_paths_update(respool_t *pool)
{
    bool plain = !pool->keep_times && !pool->shutting_down && pool->ready_fd < 0 && !pool->forked;
    pool->fast_checkout = plain && !pool->factory.validate && !pool->paused;
    pool->fast_checkin = plain && !pool->factory.reset;
}

/* ---- checkout ----------------------------------------------------------- */

static bool has_room(const respool_t *pool)
{
    return pool->idle + pool->busy + pool->creating < pool->config.size + pool->config.max_overflow;
}

/* Fill a lease for a slot now owned by the checkout it is for (the caller's
 * own, or a waiter's being completed): the slot turns BUSY. */
void lease_issue(respool_t *pool, uint32_t index, respool_lease_t *lease, const call_site_t *site)
{
    slot_t *s = slot_at(pool, index);
    s->state = SLOT_BUSY;
    s->generation++;
    s->leak_reported = false;
    if (pool->keep_times)
        s->checkout_ns = clock_now_ns();
    s->site = site->site;
    s->site_function = site->function;
    s->site_thread = site->thread;
    s->checkout_sequence = pool->checkouts++;
    lease->resource = s->resource;
    lease->private_.pool = pool;
    lease->private_.slot = index;
    lease->private_.generation = s->generation;
}

/* Take an idle resource for the calling thread: expired ones are destroyed,
 * validate() (where due) runs without the lock. Returns NO_SLOT when the one
 * taken turned out unusable (the caller loops); the lock may have been
 * released and retaken in between. */
static uint32_t take_idle(respool_t *pool)
{
    uint32_t index = idle_take(pool);
    slot_t *s = slot_at(pool, index);
    pool->busy++;
    s->state = SLOT_CHECKING;
    int64_t now = pool->keep_times ? clock_now_ns() : 0;
    if (s->expires_ns && now >= s->expires_ns) {
        pool->expired++;
        slot_doom(pool, index);
        plan_creates(pool);
        return NO_SLOT;
    }
    const respool_factory_t *f = &pool->factory;
    if (f->validate && (pool->config.validate_idle_ms == 0 ||
                        now - s->verified_ns >= ms_to_ns(pool->config.validate_idle_ms))) {
        void *resource = s->resource;
        pool_unlock(pool);
        int64_t started = clock_now_ns();
        bool usable = f->validate(f->ctx, resource);
        int64_t finished = clock_now_ns();
        pthread_mutex_lock(&pool->lock);
        histogram_record(&pool->validate_histogram, (uint64_t)(finished - started));
        if (!usable) {
            pool->validate_failures++;
            slot_doom(pool, index);
            plan_creates(pool);
            shutdown_progress(pool);
            return NO_SLOT;
        }
        s->verified_ns = now;
    }
    return index;
}

/* Load shedding before a checkout joins the queue: the queue is at
 * max_waiting, or (deadline_admission) the wait expected at the back of the
 * queue — its position times the recent hold time, over the pool's
 * capacity — exceeds the checkout's timeout. */
static const char *admission_refused(const respool_t *pool, long timeout_ms)
{
    const respool_config_t *c = &pool->config;
    if (c->max_waiting > 0 && pool->waiters.count >= c->max_waiting)
        return "shed: max_waiting threads are already waiting";
    if (!c->deadline_admission || timeout_ms <= 0 || pool->hold_estimate_ns == 0)
        return NULL;
    uint64_t position = (uint64_t)pool->waiters.count + 1;
    uint64_t capacity = (uint64_t)c->size + c->max_overflow;
    double expected_ns = (double)position * (double)pool->hold_estimate_ns / (double)capacity;
    if (expected_ns > (double)timeout_ms * 1e6)
        return "shed: the expected wait (queue position x recent hold time / capacity) exceeds the timeout";
    return NULL;
}

/* Count a finished wait in the stats (and, when it ends with a resource,
 * in the wait histogram). */
void record_wait(respool_t *pool, const waiter_t *w, int64_t now_ns, bool served)
{
    uint64_t waited = (uint64_t)(now_ns - w->enqueued_ns);
    if (served)
        histogram_record(&pool->wait_histogram, waited);
    pool->waits++;
    pool->wait_ns_total += waited;
    if (waited > pool->wait_ns_max)
        pool->wait_ns_max = waited;
}

/* The end of a wait completed by waiter_complete: the outcome and lease are
 * the completer's, already counted. Runs without the lock (a failure takes
 * it once more, to explain itself). */
static int waiter_finish(respool_t *pool, waiter_t *w, respool_lease_t *lease)
{
    int rc = w->outcome;
    if (rc == RESPOOL_OK) {
        *lease = w->lease;
    } else {
        pthread_mutex_lock(&pool->lock);
        checkout_error_record(pool, rc, w->enqueued_ns, NULL);
        pool_unlock(pool);
    }
    parker_destroy(&w->parker);
    return rc;
}

/* Everything but the fast path: waiting, validation, timestamps, shutdown.
 * Called with the lock held; returns with it released. */
__attribute__((noinline, cold)) static int checkout_slow(respool_t *pool, long timeout_ms,
                                                         respool_lease_t *lease,
                                                         const call_site_t *site)
{
    /* The deadline counts from here, before any validate() runs. */
    int64_t started = clock_now_ns();
    if (pool->shutting_down || pool->forked) {
        checkout_error_record(pool, RESPOOL_ESHUTDOWN, started,
                              pool->forked ? "this is a fork() child: the resources are the parent's"
                                           : NULL);
        pool_unlock(pool);
        return RESPOOL_ESHUTDOWN;
    }
    int64_t deadline = timeout_ms > 0 ? deadline_after_ms(started, timeout_ms) : NO_DEADLINE;

    waiter_t w;
    bool queued_once = false; /* w is initialised (and may be in the queue) */
    const char *detail = NULL; /* for the error text: why, beyond the code */
    int rc;
    uint32_t index;
    for (;;) {
        if (queued_once && w.outcome != WAITER_PENDING) {
            /* Completed by someone else (waiter_complete issued the lease
             * and counted the wait) while this thread was not asleep. */
            pool_unlock(pool);
            return waiter_finish(pool, &w, lease);
        }
        /* An idle resource may be taken by a thread not yet queued when
         * nobody waits or the longest waiter is within the fairness bound
         * (barging), and by a queued thread when it is first in line. */
        bool may_take;
        if (pool->idle == 0 || pool->paused)
            may_take = false;
        else if (queued_once)
            may_take = pool->waiters.head == &w;
        else
            may_take = pool->waiters.count == 0 ||
                       !waiters_head_starving(pool, clock_now_ns());
        if (may_take) {
            if (queued_once)
                waiter_dequeue(pool, &w);
            index = take_idle(pool);
            if (index != NO_SLOT) {
                rc = RESPOOL_OK;
                if (queued_once)
                    waiters_kick(pool); /* more idle? wake the next in line */
                break;
            }
            if (queued_once && w.outcome == WAITER_PENDING) {
                /* Back in line at its place; while it was out, planning and
                 * shutdown did not count it. */
                waiter_enqueue_front(pool, &w);
                plan_creates(pool);
                shutdown_progress(pool);
            }
            continue;
        }

        if (!queued_once) {
            if (pool->shutting_down) {
                rc = RESPOOL_ESHUTDOWN;
                break;
            }
            if (timeout_ms == 0 && (!has_room(pool) || pool->paused)) {
                pool->timeouts++;
                rc = RESPOOL_EFULL;
                detail = pool->paused ? "the pool is paused" : NULL;
                break;
            }
            if ((detail = admission_refused(pool, timeout_ms)) != NULL) {
                pool->shed++;
                rc = RESPOOL_EFULL;
                break;
            }
            if (timeout_ms == 0 && pool->consecutive_failures > 0 && pool->creating == 0 &&
                clock_now_ns() < pool->retry_at_ns) {
                rc = RESPOOL_EFACTORY; /* in retry backoff: no create() to wait for */
                break;
            }
            /* Start waiting. */
            int64_t now = clock_now_ns();
            w.enqueued_ns = now;
            w.deadline_ns = deadline;
            w.slot = NO_SLOT;
            w.outcome = WAITER_PENDING;
            w.zero_timeout = timeout_ms == 0;
            w.signalled = false;
            w.site = site;
            parker_init(&w.parker);
            waiter_enqueue(pool, &w);
            queued_once = true;
            plan_creates(pool); /* a create() for this checkout, if there is room */
            continue;
        }

        if (w.deadline_ns != NO_DEADLINE && clock_now_ns() >= w.deadline_ns) {
            waiter_dequeue(pool, &w);
            waiters_kick(pool); /* it may have been the one woken for an idle resource */
            pool->timeouts++;
            rc = RESPOOL_ETIMEDOUT;
            break;
        }
        /* Sleep without the lock. The ticket is read under it, so a wake-up
         * or completion after this point makes parker_wait return. */
        w.signalled = false; /* awake and about to sleep: the next wake-up counts */
        uint32_t ticket = parker_ticket(&w.parker);
        pool_unlock(pool);
        parker_wait(&w.parker, ticket, w.deadline_ns);
        if (parker_finished(&w.parker))
            return waiter_finish(pool, &w, lease); /* handed a resource or failed */
        pthread_mutex_lock(&pool->lock);
    }

    if (queued_once) {
        record_wait(pool, &w, clock_now_ns(), rc == RESPOOL_OK);
        parker_destroy(&w.parker);
    }
    if (rc == RESPOOL_OK)
        lease_issue(pool, index, lease, site);
    else
        checkout_error_record(pool, rc, started, detail);
    pool_unlock(pool);
    return rc;
}

/* The fast path: an idle resource, nobody waiting, nothing to check. Records
 * the call site on the slot: three stores and a thread-local read. */
int respool_checkout_at(respool_t *pool, long timeout_ms, respool_lease_t *lease,
                        const char *site, const char *function)
{
    if (!pool || !lease)
        return RESPOOL_EINVAL;
    pthread_mutex_lock(&pool->lock);
    if (!(pool->idle > 0 && pool->waiters.count == 0 && pool->fast_checkout)) {
        lease->resource = NULL;
        call_site_t caller = {site, function, current_thread_id()};
        return checkout_slow(pool, timeout_ms, lease, &caller);
    }
    uint32_t index = idle_take(pool);
    slot_t *s = slot_at(pool, index);
    s->state = SLOT_BUSY;
    s->site = site;
    s->site_function = function;
    s->site_thread = current_thread_id();
    s->checkout_sequence = pool->checkouts++;
    pool->busy++;
    /* The lease is filled under the lock: nothing stays live across the
     * unlock call but the return value. */
    lease->resource = s->resource;
    lease->private_.pool = pool;
    lease->private_.slot = index;
    lease->private_.generation = ++s->generation;
    pthread_mutex_unlock(&pool->lock); /* fast path: no wake-up was deferred */
    return RESPOOL_OK;
}

/* The contract's checkout: no call site (the header's macro routes calls
 * through respool_checkout_at; the parentheses keep it off this name). */
int(respool_checkout)(respool_t *pool, long timeout_ms, respool_lease_t *lease)
{
    return respool_checkout_at(pool, timeout_ms, lease, NULL, NULL);
}

/* ---- checkin and destroyed --------------------------------------------- */

/* A lease ends: its hold time goes to the histogram and to the estimate
 * deadline-aware admission uses (an EWMA with weight 1/8), when times are
 * kept. */
void record_hold(respool_t *pool, const slot_t *s)
{
    if (!pool->keep_times)
        return;
    int64_t held = clock_now_ns() - s->checkout_ns;
    histogram_record(&pool->hold_histogram, (uint64_t)held);
    pool->hold_estimate_ns =
        pool->hold_estimate_ns ? pool->hold_estimate_ns + (held - pool->hold_estimate_ns) / 8 : held;
}

/* Take the lock and find the slot of a current lease. NULL (lock released)
 * for a NULL argument or a stale, doubled, foreign or altered lease. */
slot_t *lock_lease(respool_t *pool, const respool_lease_t *lease)
{
    if (!pool || !lease)
        return NULL;
    pthread_mutex_lock(&pool->lock);
    slot_t *s = lease_slot(pool, lease);
    if (!s)
        pool_unlock(pool);
    return s;
}

/* Everything but the fast path: reset(), waiters, dismissal, shutdown. Lock
 * held on entry, released on return. */
__attribute__((noinline, cold)) static int checkin_slow(respool_t *pool, slot_t *s, respool_lease_t *lease)
{
    uint32_t index = lease->private_.slot;
    if (pool->forked) { /* the parent's resource: never reset or reused here */
        pool_unlock(pool);
        return RESPOOL_EINVAL;
    }
    record_hold(pool, s);
    s->state = SLOT_CHECKING;
    const respool_factory_t *f = &pool->factory;
    if (f->reset) {
        void *resource = s->resource;
        pool_unlock(pool);
        bool reusable = f->reset(f->ctx, resource);
        pthread_mutex_lock(&pool->lock);
        if (!reusable) {
            pool->reset_failures++;
            slot_doom(pool, index);
            plan_creates(pool);
            shutdown_progress(pool);
            pool_unlock(pool);
            lease->resource = NULL;
            return RESPOOL_OK;
        }
    }
    route_resource(pool, index, false);
    pool_unlock(pool);
    lease->resource = NULL;
    return RESPOOL_OK;
}

/* The fast path: a valid lease, nobody waiting, not overflow, nothing to
 * reset or time: the resource goes straight back to the idle ring. */
int respool_checkin(respool_t *pool, respool_lease_t *lease)
{
    if (!pool || !lease)
        return RESPOOL_EINVAL;
    pthread_mutex_lock(&pool->lock); /* lock_lease, inlined: this is the fast path */
    slot_t *s = lease_slot(pool, lease);
    if (!s) {
        pool_unlock(pool);
        return RESPOOL_EINVAL;
    }
    s->generation++; /* from here the lease is stale: a second checkin fails */
    if (!(pool->fast_checkin && pool->waiters.count == 0 &&
          pool->idle + pool->busy <= pool->config.size && s->epoch == pool->epoch))
        return checkin_slow(pool, s, lease);
    pool->busy--;
    idle_push_newest(pool, lease->private_.slot);
    pthread_mutex_unlock(&pool->lock); /* fast path: no wake-up was deferred */
    lease->resource = NULL;
    return RESPOOL_OK;
}

int respool_destroyed(respool_t *pool, respool_lease_t *lease)
{
    slot_t *s = lock_lease(pool, lease);
    if (!s)
        return RESPOOL_EINVAL;
    if (pool->forked) { /* the parent's resource: leave it alone */
        pool_unlock(pool);
        return RESPOOL_EINVAL;
    }
    s->generation++;
    record_hold(pool, s);
    pool->reported_broken++;
    slot_doom(pool, lease->private_.slot);
    plan_creates(pool); /* the replacement rule */
    shutdown_progress(pool);
    pool_unlock(pool);
    lease->resource = NULL;
    return RESPOOL_OK;
}

/* ---- resize ------------------------------------------------------------- */

int respool_resize(respool_t *pool, unsigned size, unsigned max_overflow)
{
    uint64_t capacity = (uint64_t)size + max_overflow;
    if (!pool || capacity == 0 || capacity > RESPOOL_MAX_RESOURCES)
        return RESPOOL_EINVAL;
    pthread_mutex_lock(&pool->lock);
    if (pool->shutting_down || pool->forked) {
        pool_unlock(pool);
        return RESPOOL_ESHUTDOWN;
    }
    pool->config.size = size;
    pool->config.max_overflow = max_overflow;
    /* Idle resources beyond the new size are overflow: dismissed now, or
     * reaped by the manager after overflow_idle_ms. Oldest first. */
    if (pool->config.overflow_idle_ms == 0) {
        while (pool->idle > 0 && pool->idle + pool->busy > size) {
            pool->dismissed++;
            slot_doom(pool, idle_take_oldest(pool));
        }
    } else {
        manager_notify(pool);
    }
    plan_creates(pool); /* growth; fewer planned creates after a shrink */
    pool_unlock(pool);
    return RESPOOL_OK;
}

/* ---- shutdown and free ---------------------------------------------------- */

int respool_shutdown(respool_t *pool, long timeout_ms)
{
    if (!pool)
        return RESPOOL_EINVAL;
    int64_t deadline = timeout_ms < 0 ? NO_DEADLINE : deadline_after_ms(clock_now_ns(), timeout_ms);
    pthread_mutex_lock(&pool->lock);
    if (pool->shutdown_done || pool->forked) { /* a fork child has nothing to wait for */
        pool_unlock(pool);
        return RESPOOL_OK;
    }
    if (!pool->shutting_down) {
        pool->shutting_down = true;
        pool->paused = false; /* shutdown serves the waiters it can */
        fast_paths_update(pool);
        /* No new resources: drop the planned creates, destroy the idle. */
        pool->creating -= pool->create_jobs;
        pool->create_jobs = 0;
        while (pool->idle > 0)
            slot_doom(pool, idle_take_oldest(pool));
        shutdown_progress(pool);
    }
    int rc;
    pool->settle_waiters++;
    for (;;) {
        bool outstanding = pool->busy > pool->keepalive_checking || pool->creating > 0;
        /* Keepalive checks in flight are waited for like destroys: the
         * resource they hold may still go to a queued checkout. */
        if (!outstanding && pool->doomed == 0 && pool->idle == 0 &&
            pool->keepalive_checking == 0) {
            pool->shutdown_done = true;
            rc = RESPOOL_OK;
            break;
        }
        /* The deadline bounds the wait for leases and creates; destroys of
         * our own resources are always waited for. */
        if (outstanding && deadline != NO_DEADLINE && clock_now_ns() >= deadline) {
            waiters_fail(pool, RESPOOL_ESHUTDOWN, false);
            rc = RESPOOL_EBUSY;
            break;
        }
        pool_cond_wait(pool, &pool->settled, outstanding ? deadline : NO_DEADLINE);
    }
    pool->settle_waiters--;
    pool_unlock(pool);
    return rc;
}

void respool_free(respool_t *pool)
{
    if (!pool)
        return;
    if (pool->forked) { /* a fork() child's copy: abandon, free, join nothing */
        if (pool->ready_fd >= 0)
            close(pool->ready_fd);
        fork_free_in_child(pool);
        return;
    }
    fork_unregister(pool);
    respool_shutdown(pool, -1);
    manager_stop(pool);
    pool_release_memory(pool);
}

/* ---- transaction ---------------------------------------------------------- */

int respool_transaction_at(respool_t *pool, long timeout_ms, respool_work_fn work, void *arg,
                           const char *site, const char *function)
{
    if (!pool || !work)
        return RESPOOL_EINVAL;
    respool_lease_t lease;
    int rc = respool_checkout_at(pool, timeout_ms, &lease, site, function);
    if (rc != RESPOOL_OK)
        return rc;
    if (work(lease.resource, arg) == RESPOOL_BROKEN)
        respool_destroyed(pool, &lease);
    else
        respool_checkin(pool, &lease);
    return RESPOOL_OK;
}

int(respool_transaction)(respool_t *pool, long timeout_ms, respool_work_fn work, void *arg)
{
    return respool_transaction_at(pool, timeout_ms, work, arg, NULL, NULL);
}
