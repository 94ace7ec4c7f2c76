/*
 * admin.c — operator controls: detach a resource, pause and resume, evict
 * all, and the readiness fd for event loops.
 *
 * Each is a small change of state under the lock; the state machine in
 * pool.c and the planner in manager.c do the rest (route_resource destroys
 * resources of an older epoch and keeps returns idle while paused;
 * plan_creates asks nothing for waiters while paused).
 */
#include <errno.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#include "internal.h"

int respool_detach(respool_t *pool, respool_lease_t *lease, void **resource)
{
    if (!resource)
        return RESPOOL_EINVAL;
    slot_t *s = lock_lease(pool, lease);
    if (!s)
        return RESPOOL_EINVAL;
    if (pool->forked) { /* the parent's resource: leave it alone */
        pool_unlock(pool);
        return RESPOOL_EINVAL;
    }
    s->generation++; /* the lease is stale from here */
    record_hold(pool, s);
    *resource = s->resource;
    pool->busy--;
    pool->detached++;
    slot_release(pool, lease->private_.slot);
    plan_creates(pool); /* the replacement, when the pool needs one */
    shutdown_progress(pool);
    pool_unlock(pool);
    lease->resource = NULL;
    return RESPOOL_OK;
}

/* Take the lock of a pool that can still change. RESPOOL_OK with the lock
 * held; otherwise the code to return, without the lock. */
static int lock_running_pool(respool_t *pool)
{
    if (!pool)
        return RESPOOL_EINVAL;
    pthread_mutex_lock(&pool->lock);
    if (pool->shutting_down || pool->forked) {
        pool_unlock(pool);
        return RESPOOL_ESHUTDOWN;
    }
    return RESPOOL_OK;
}

int respool_pause(respool_t *pool)
{
    int rc = lock_running_pool(pool);
    if (rc != RESPOOL_OK)
        return rc;
    pool->paused = true;
    fast_paths_update(pool);
    /* Checkouts with timeout 0 in line would wait for nothing now. */
    waiters_fail(pool, RESPOOL_EFULL, true);
    plan_creates(pool);
    pool_unlock(pool);
    return RESPOOL_OK;
}

int respool_resume(respool_t *pool)
{
    if (!pool)
        return RESPOOL_EINVAL;
    pthread_mutex_lock(&pool->lock);
    if (pool->forked) {
        pool_unlock(pool);
        return RESPOOL_ESHUTDOWN;
    }
    if (pool->paused) {
        pool->paused = false;
        fast_paths_update(pool);
        /* The longest waiter takes an idle one and wakes the next while
         * more are idle; creates are planned for the rest. */
        waiters_kick(pool);
        plan_creates(pool);
    }
    pool_unlock(pool);
    return RESPOOL_OK;
}

int respool_evict_all(respool_t *pool)
{
    int rc = lock_running_pool(pool);
    if (rc != RESPOOL_OK)
        return rc;
    pool->epoch++;
    while (pool->idle > 0) {
        pool->evicted++;
        slot_doom(pool, idle_take_oldest(pool));
    }
    plan_creates(pool);
    pool_unlock(pool);
    return RESPOOL_OK;
}

/* ---- readiness fd ----------------------------------------------------------- */

/* Readable while a timeout-0 checkout would find an idle resource for it. */
static bool ready_now(const respool_t *pool)
{
    return pool->idle > 0 && pool->waiters.count == 0 && !pool->paused && !pool->shutting_down;
}

void ready_fd_sync(respool_t *pool)
{
    if (pool->forked)
        return; /* the eventfd is the parent's too */
    bool want = ready_now(pool);
    if (want == pool->ready_fd_readable)
        return;
#if defined(__linux__)
    uint64_t value = 1;
    ssize_t n = want ? write(pool->ready_fd, &value, sizeof value)
                     : read(pool->ready_fd, &value, sizeof value);
    (void)n; /* nonblocking: a full counter or an empty one is already right */
#endif
    pool->ready_fd_readable = want;
}

int respool_ready_fd(respool_t *pool)
{
    if (!pool) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->forked) { /* the eventfd, if any, is shared with the parent */
        pool_unlock(pool);
        errno = EINVAL;
        return -1;
    }
    if (pool->ready_fd < 0) {
#if defined(__linux__)
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
#else
        int fd = -1;
        errno = ENOSYS;
#endif
        if (fd >= 0) {
            pool->ready_fd = fd;
            pool->ready_fd_readable = false;
            fast_paths_update(pool); /* checkout and checkin now keep it current */
        }
    }
    int fd = pool->ready_fd;
    int saved = errno;
    pool_unlock(pool); /* makes it readable at once if something is idle */
    errno = saved;
    return fd;
}
