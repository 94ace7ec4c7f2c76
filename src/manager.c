/*
 * manager.c — the manager thread and its create helpers.
 *
 * The manager owns the slow work. It runs destroy() for every doomed
 * resource, spawns helper threads (at most config.max_creating) that run
 * create(), times the retry backoff, reaps idle overflow, and sweeps for
 * expired lifetimes, keepalive checks and leaked leases. Any thread may
 * *plan* creates (plan_creates, under the lock): planning only counts jobs
 * and wakes a helper, so a checkout never waits behind the manager.
 */
#include <stdio.h>

#include "internal.h"

#define KEEPALIVE_BATCH 8 /* idle resources taken out at once for keepalive */
#define LEAK_BATCH 16     /* leaks reported per sweep (the rest next sweep)  */

static void *helper_main(void *arg);

/* ---- wake-ups --------------------------------------------------------- */

void manager_notify(respool_t *pool)
{
    if (pool->manager_sleeping)
        pthread_cond_signal(&pool->manager_wake);
}

void settled_broadcast(respool_t *pool)
{
    if (pool->settle_waiters)
        pthread_cond_broadcast(&pool->settled);
}

/* ---- planning ---------------------------------------------------------- */

/* Decide how many create() calls the pool needs now and hand them to the
 * helpers. The pool wants live = max(size, live + waiters not covered by
 * idle resources), capped at size + max_overflow; creates already planned
 * count. A healthy factory gets up to max_creating calls in flight; a
 * failing one gets a single probe once its backoff has passed. Also: a
 * checkout with timeout 0 that no create() is coming for fails with EFULL. */
void plan_creates(respool_t *pool)
{
    if (pool->shutting_down || pool->prefill_failed)
        return;
    const respool_config_t *c = &pool->config;
    unsigned live = pool->idle + pool->busy;
    unsigned capacity = c->size + c->max_overflow;
    /* Paused, waiters are not served, so they ask for no resources. */
    unsigned uncovered = !pool->paused && pool->waiters.count > pool->idle
                             ? pool->waiters.count - pool->idle
                             : 0;
    uint64_t want = (uint64_t)live + uncovered;
    if (want < c->size)
        want = c->size;
    if (want > capacity)
        want = capacity;
    int64_t need = (int64_t)want - live - pool->creating;

    if (need < 0 && pool->create_jobs > 0) {
        /* After a shrink or a hand-off: drop planned jobs nobody needs. */
        unsigned drop = (uint64_t)-need < pool->create_jobs ? (unsigned)-need : pool->create_jobs;
        pool->create_jobs -= drop;
        pool->creating -= drop;
    } else if (need > 0) {
        if (pool->consecutive_failures > 0) {
            need = pool->creating == 0 && clock_now_ns() >= pool->retry_at_ns ? 1 : 0;
        } else if (need > (int64_t)c->max_creating - pool->creating) {
            need = pool->creating < c->max_creating ? c->max_creating - pool->creating : 0;
        }
        pool->create_jobs += (unsigned)need;
        pool->creating += (unsigned)need;
        for (int64_t i = 0; i < need && i < pool->helpers_idle; i++)
            pthread_cond_signal(&pool->helper_wake);
        if (pool->create_jobs > pool->helpers_idle &&
            (pool->helper_count < pool->helper_limit || pool->helper_count == 0))
            manager_notify(pool); /* spawn a helper, or run it there if none can start */
        if (pool->consecutive_failures > 0 && need == 0)
            manager_notify(pool); /* time the next probe */
    }
    if (pool->creating == 0 && pool->waiters.zero_timeout_count > 0)
        waiters_fail(pool, RESPOOL_EFULL, true);
}

/* ---- create ------------------------------------------------------------ */

/* Uniform in [0, bound). */
static uint64_t random_below(respool_t *pool, uint64_t bound)
{
    uint64_t x = pool->random_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    pool->random_state = x;
    return bound ? x % bound : 0;
}

/* What a finished create() asks to be logged, once the lock is released. */
typedef struct create_report {
    respool_log_level_t level;
    bool log;
    char message[640];
} create_report_t;

/* Record the outcome of one create() (lock held). `index` is its reserved
 * slot (NO_SLOT if none could be had); `probe` says it started while the
 * factory was failing. */
static void finish_create(respool_t *pool, uint32_t index, bool probe, void *resource,
                          const char *error, create_report_t *report)
{
    pool->creating--;
    int64_t now = clock_now_ns();
    if (!error) {
        pool->created++;
        if (pool->consecutive_failures > 0) {
            report->log = true;
            report->level = RESPOOL_LOG_INFO;
            snprintf(report->message, sizeof report->message,
                     "create() succeeded again after %u failures", pool->consecutive_failures);
        }
        pool->consecutive_failures = 0;
        pool->retry_delay_ns = (int64_t)pool->config.retry_initial_ms * 1000000;
        slot_t *s = slot_at(pool, index);
        s->resource = resource;
        if (pool->config.max_lifetime_ms > 0) {
            int64_t life = (int64_t)pool->config.max_lifetime_ms * 1000000;
            s->expires_ns = now + life - (int64_t)random_below(pool, (uint64_t)life / 10 + 1);
        }
        route_resource(pool, index, true);
    } else {
        pool->create_failures++;
        snprintf(pool->last_error, sizeof pool->last_error, "%s", error);
        if (index != NO_SLOT)
            slot_release(pool, index);
        if (pool->prefilling)
            pool->prefill_failed = true;
        /* The first failure of an outage, and each failed probe, set the next
         * try; creates that were already in flight when the outage began
         * only count. Each delay is drawn from the upper half of the
         * current step, and the step doubles up to retry_max_ms. */
        if (probe || pool->consecutive_failures == 0) {
            int64_t step = pool->retry_delay_ns;
            int64_t delay = step / 2 + (int64_t)random_below(pool, (uint64_t)(step - step / 2) + 1);
            pool->retry_at_ns = now + delay;
            int64_t max = (int64_t)pool->config.retry_max_ms * 1000000;
            pool->retry_delay_ns = step > max / 2 ? max : step * 2;
            report->log = true;
            report->level = RESPOOL_LOG_ERROR;
            if (pool->prefilling)
                snprintf(report->message, sizeof report->message,
                         "create() failed while prefilling; respool_create gives up: %s", error);
            else
                snprintf(report->message, sizeof report->message,
                         "create() failed (%u in a row; next try in %lld ms): %s",
                         pool->consecutive_failures + 1, (long long)(delay / 1000000), error);
        }
        pool->consecutive_failures++;
        waiters_fail(pool, RESPOOL_EFACTORY, true); /* timeout 0 waited for this one */
        manager_notify(pool);
    }
    plan_creates(pool);
    shutdown_progress(pool);
    settled_broadcast(pool);
}

/* Take one planned job and run create() for it without the lock. Called by
 * helpers (and by the manager if no helper could be started). */
static void run_one_create(respool_t *pool)
{
    pool->create_jobs--;
    bool probe = pool->consecutive_failures > 0;
    uint32_t index;
    create_report_t report = {0};
    if (slot_reserve(pool, &index) != RESPOOL_OK) {
        finish_create(pool, NO_SLOT, probe, NULL, "out of memory for the pool's slot table",
                      &report);
    } else {
        const respool_factory_t *f = &pool->factory;
        pool_unlock(pool);
        char error[512] = "";
        void *resource = NULL;
        int64_t started = clock_now_ns();
        int rc = f->create(f->ctx, &resource, error, sizeof error);
        int64_t finished = clock_now_ns();
        error[sizeof error - 1] = '\0';
        if (rc == 0 && !resource)
            snprintf(error, sizeof error, "create() reported success but gave a NULL resource");
        else if (rc != 0 && error[0] == '\0')
            snprintf(error, sizeof error, "create() failed with %d and gave no reason", rc);
        pthread_mutex_lock(&pool->lock);
        histogram_record(&pool->create_histogram, (uint64_t)(finished - started));
        finish_create(pool, index, probe, resource, rc == 0 && resource ? NULL : error, &report);
    }
    if (report.log) {
        pool_unlock(pool);
        pool_log(pool, report.level, "%s", report.message);
        pthread_mutex_lock(&pool->lock);
    }
}

static void *helper_main(void *arg)
{
    respool_t *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        if (pool->create_jobs > 0) {
            run_one_create(pool);
            continue;
        }
        if (pool->stopping)
            break;
        pool->helpers_idle++;
        pool_cond_wait(pool, &pool->helper_wake, NO_DEADLINE);
        pool->helpers_idle--;
    }
    pool_unlock(pool);
    return NULL;
}

/* ---- destroy ------------------------------------------------------------- */

/* Run destroy() for the first doomed resource (lock held on entry and exit). */
static void destroy_one(respool_t *pool)
{
    uint32_t index = pool->doomed_head;
    slot_t *s = slot_at(pool, index);
    pool->doomed_head = s->next;
    s->state = SLOT_DESTROYING;
    void *resource = s->resource;
    const respool_factory_t *f = &pool->factory;
    pool_unlock(pool);
    f->destroy(f->ctx, resource);
    pthread_mutex_lock(&pool->lock);
    pool->destroyed++;
    pool->doomed--;
    slot_release(pool, index);
    settled_broadcast(pool);
}

/* ---- timers ---------------------------------------------------------------- */

static int64_t min_deadline(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* The overflow reaper: destroy the oldest idle resource beyond `size` once it
 * has idled overflow_idle_ms. Returns when to look again. */
static int64_t reap_overflow(respool_t *pool, int64_t now)
{
    int64_t linger = (int64_t)pool->config.overflow_idle_ms * 1000000;
    while (linger > 0 && pool->idle > 0 && pool->idle + pool->busy > pool->config.size) {
        slot_t *oldest = slot_at(pool, idle_at(pool, 0));
        if (now - oldest->idle_since_ns < linger)
            return oldest->idle_since_ns + linger;
        pool->dismissed++;
        slot_doom(pool, idle_take_oldest(pool));
    }
    return NO_DEADLINE;
}

/* How often the sweep runs: a quarter of the shortest period it serves,
 * between 5 ms and 1 s; 0 when nothing needs sweeping. */
static int64_t sweep_period_ns(const respool_t *pool)
{
    const respool_config_t *c = &pool->config;
    long shortest = 0;
    long periods[3] = {c->max_lifetime_ms, pool->factory.validate ? c->keepalive_ms : 0,
                       c->leak_threshold_ms};
    for (int i = 0; i < 3; i++)
        if (periods[i] > 0 && (shortest == 0 || periods[i] < shortest))
            shortest = periods[i];
    if (shortest == 0)
        return 0;
    int64_t period = (int64_t)shortest * 1000000 / 4;
    if (period < 5000000)
        period = 5000000;
    if (period > 1000000000)
        period = 1000000000;
    return period;
}

static bool is_expired(const slot_t *s, int64_t now)
{
    return s->expires_ns && now >= s->expires_ns;
}

static bool is_due_for_keepalive(const slot_t *s, int64_t due_before)
{
    return s->verified_ns <= due_before;
}

/* Destroy idle resources past their lifetime. */
static void sweep_lifetimes(respool_t *pool, int64_t now)
{
    uint32_t batch[64];
    unsigned n, total = 0;
    do {
        n = idle_extract(pool, is_expired, now, batch, 64);
        for (unsigned k = 0; k < n; k++) {
            slot_at(pool, batch[k])->state = SLOT_CHECKING; /* out of the ring */
            pool->busy++;
            pool->expired++;
            slot_doom(pool, batch[k]);
        }
        total += n;
    } while (n == 64);
    if (total)
        plan_creates(pool);
}

/* Validate idle resources not known good for keepalive_ms, a batch at a
 * time, without the lock. Healthy ones go back at the oldest end, keeping
 * their idle age; broken ones are destroyed and replaced. */
static void sweep_keepalive(respool_t *pool, int64_t now)
{
    int64_t due_before = now - (int64_t)pool->config.keepalive_ms * 1000000;
    uint32_t batch[KEEPALIVE_BATCH];
    unsigned n;
    do {
        n = idle_extract(pool, is_due_for_keepalive, due_before, batch, KEEPALIVE_BATCH);
        if (n == 0)
            return;
        const respool_factory_t *f = &pool->factory;
        bool usable[KEEPALIVE_BATCH];
        void *resources[KEEPALIVE_BATCH];
        for (unsigned k = 0; k < n; k++) {
            slot_t *s = slot_at(pool, batch[k]);
            s->state = SLOT_CHECKING;
            pool->busy++;
            resources[k] = s->resource;
        }
        pool->keepalive_checking += n;
        pool_unlock(pool);
        for (unsigned k = 0; k < n; k++)
            usable[k] = f->validate(f->ctx, resources[k]);
        pthread_mutex_lock(&pool->lock);
        pool->keepalive_checking -= n;
        int64_t checked = clock_now_ns();
        for (unsigned k = n; k-- > 0;) { /* back in their old order */
            slot_t *s = slot_at(pool, batch[k]);
            if (!usable[k]) {
                pool->validate_failures++;
                slot_doom(pool, batch[k]);
            } else if (pool->shutting_down || pool->waiters.count || s->epoch != pool->epoch ||
                       pool->idle + pool->busy > pool->config.size ||
                       (s->expires_ns && checked >= s->expires_ns)) {
                /* Shutdown, waiters, a shrink or the end of its life came
                 * while it was checked: the usual rules decide. */
                route_resource(pool, batch[k], false);
            } else {
                s->verified_ns = checked;
                pool->busy--;
                idle_push_oldest(pool, batch[k]);
            }
        }
        plan_creates(pool);
        shutdown_progress(pool);
    } while (n == KEEPALIVE_BATCH);
}

/* Report leases held past leak_threshold_ms, once per checkout. */
static void sweep_leaks(respool_t *pool, int64_t now)
{
    int64_t threshold = (int64_t)pool->config.leak_threshold_ms * 1000000;
    struct {
        void *resource;
        int64_t age_ms;
        char holder[256];
    } found[LEAK_BATCH];
    unsigned n = 0;
    for (uint32_t i = 0; i < pool->slot_count && n < LEAK_BATCH; i++) {
        slot_t *s = slot_at(pool, i);
        if (s->state == SLOT_BUSY && !s->leak_reported && now - s->checkout_ns >= threshold) {
            s->leak_reported = true;
            pool->leaks++;
            found[n].resource = s->resource;
            found[n].age_ms = (now - s->checkout_ns) / 1000000;
            leak_describe(pool, s, now, found[n].holder, sizeof found[n].holder);
            n++;
        }
    }
    if (n == 0)
        return;
    pool_unlock(pool);
    for (unsigned k = 0; k < n; k++)
        pool_log(pool, RESPOOL_LOG_ERROR,
                 "lease of resource %p held for %lld ms (leak threshold %ld ms), taken at %s",
                 found[k].resource, (long long)found[k].age_ms, pool->config.leak_threshold_ms,
                 found[k].holder);
    pthread_mutex_lock(&pool->lock);
}

static void sweep(respool_t *pool, int64_t now)
{
    if (pool->config.max_lifetime_ms > 0)
        sweep_lifetimes(pool, now);
    if (pool->config.keepalive_ms > 0 && pool->factory.validate && !pool->shutting_down)
        sweep_keepalive(pool, now);
    if (pool->config.leak_threshold_ms > 0)
        sweep_leaks(pool, now);
}

/* ---- the manager thread ------------------------------------------------------ */

static void *manager_main(void *arg)
{
    respool_t *pool = arg;
    int64_t period = sweep_period_ns(pool);
    pthread_mutex_lock(&pool->lock);
    int64_t sweep_at = period ? clock_now_ns() + period : NO_DEADLINE; /* manager's own */
    for (;;) {
        if (pool->doomed_head != NO_SLOT) {
            destroy_one(pool);
            continue;
        }
        if (pool->create_jobs > pool->helpers_idle && pool->helper_count < pool->helper_limit &&
            !pool->stopping) {
            unsigned n = pool->helper_count++;
            pool_unlock(pool);
            int rc = pthread_create(&pool->helpers[n], NULL, helper_main, pool);
            pthread_mutex_lock(&pool->lock);
            if (rc != 0) {
                /* Out of threads: make do with the helpers we have (or, with
                 * none, run creates here) instead of retrying in a loop. */
                pool->helper_count--;
                pool->helper_limit = pool->helper_count;
                unsigned helpers = pool->helper_count;
                pool_unlock(pool);
                pool_log(pool, RESPOOL_LOG_WARN,
                         "could not start a create helper thread (error %d); continuing with %u",
                         rc, helpers);
                pthread_mutex_lock(&pool->lock);
            }
            continue;
        }
        if (pool->create_jobs > 0 && pool->helper_count == 0) {
            run_one_create(pool); /* no helper could be started: do it here */
            continue;
        }
        if (pool->stopping)
            break;

        int64_t now = clock_now_ns();
        int64_t next = NO_DEADLINE;
        if (pool->consecutive_failures > 0 && pool->creating == 0 && !pool->shutting_down) {
            if (now >= pool->retry_at_ns) {
                plan_creates(pool);
                if (pool->creating > 0)
                    continue;
            } else {
                next = pool->retry_at_ns;
            }
        }
        if (pool->config.overflow_idle_ms > 0 && !pool->shutting_down) {
            next = min_deadline(next, reap_overflow(pool, now));
            if (pool->doomed_head != NO_SLOT)
                continue;
        }
        if (period) {
            if (now >= sweep_at) {
                sweep_at = now + period;
                sweep(pool, now);
                continue;
            }
            next = min_deadline(next, sweep_at);
        }

        pool->manager_sleeping = true;
        pool_cond_wait(pool, &pool->manager_wake, next);
        pool->manager_sleeping = false;
    }
    /* Stopping: every create and destroy is done (shutdown completed). */
    pthread_cond_broadcast(&pool->helper_wake);
    unsigned helpers = pool->helper_count;
    pool_unlock(pool);
    for (unsigned i = 0; i < helpers; i++)
        pthread_join(pool->helpers[i], NULL);
    return NULL;
}

int manager_start(respool_t *pool)
{
    return pthread_create(&pool->manager, NULL, manager_main, pool) == 0 ? RESPOOL_OK
                                                                           : RESPOOL_ENOMEM;
}

/* Stop and join the manager (and through it the helpers). Called by
 * respool_free after shutdown completed. */
void manager_stop(respool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_signal(&pool->manager_wake);
    pool_unlock(pool);
    pthread_join(pool->manager, NULL);
}
