/*
 * peers.c — existing C pools behind the benchmark interface.
 *
 * apr-reslist: APR-util's apr_reslist with min = smax = hmax = size (all
 * made in apr_reslist_create, never expired). Its durations (ttl, and the
 * acquire timeout of apr_reslist_timeout_set) are apr_interval_time_t
 * microseconds; timeout 0, the default kept here, waits forever. The
 * constructor runs under the list's lock, one resource after another, and
 * every release takes the lock twice (release, then apr_reslist_maintain).
 * Idle resources are a LIFO ring; a release signals one waiter, and running
 * threads may take the resource first (barging).
 *
 * memcached-pool: libmemcachedutil's memcached_pool over memcached_create(
 * NULL) with no servers: its resources are memcached_st clones, made in
 * memcached_pool_create and connecting lazily, so no server is needed and
 * none is contacted. The user's factory cannot be replaced (so no
 * cold-start figure). A fetch waits on one condition variable until a
 * deadline built from time(NULL) (whole seconds of CLOCK_REALTIME); a
 * release broadcasts to every waiter, but only when the stack goes from
 * empty to one.
 */
#include <apr_allocator.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_reslist.h>
#include <libmemcachedutil-1.0/util.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "contenders.h"
#include "harness.h"

/* ---- apr-reslist ----------------------------------------------------------- */

typedef struct apr_bench_pool {
    apr_pool_t *memory; /* owns its allocator: destroying it frees everything */
    apr_reslist_t *list;
    bench_make_fn make;
} apr_bench_pool_t;

static pthread_once_t apr_once = PTHREAD_ONCE_INIT;

/* apr_initialize, once per process. */
static void bench_apr_start(void)
{
    if (apr_initialize() != APR_SUCCESS)
        bench_fail("apr_initialize failed");
}

/* apr_reslist constructor: params is the apr_bench_pool_t. */
static apr_status_t bench_apr_make(void **resource, void *params, apr_pool_t *memory)
{
    apr_bench_pool_t *p = params;
    *resource = p->make ? p->make() : trivial_resource();
    return APR_SUCCESS;
}

/* apr_reslist destructor: trivial resources need nothing. */
static apr_status_t bench_apr_unmake(void *resource, void *params, apr_pool_t *memory)
{
    return APR_SUCCESS;
}

/* A reslist of `size` resources in its own APR pool and allocator (so that
 * memory measurements see every byte, and close() returns them). */
static void *bench_apr_open(unsigned size, bench_make_fn make)
{
    pthread_once(&apr_once, bench_apr_start);
    apr_bench_pool_t *p = calloc(1, sizeof *p);
    apr_allocator_t *allocator;
    if (!p || apr_allocator_create(&allocator) != APR_SUCCESS)
        bench_fail("apr-reslist: out of memory");
    if (apr_pool_create_ex(&p->memory, NULL, NULL, allocator) != APR_SUCCESS)
        bench_fail("apr_pool_create_ex failed");
    apr_allocator_owner_set(allocator, p->memory);
    p->make = make;
    apr_status_t rc = apr_reslist_create(&p->list, (int)size, (int)size, (int)size, 0,
                                         bench_apr_make, bench_apr_unmake, p, p->memory);
    if (rc != APR_SUCCESS)
        bench_fail("apr_reslist_create(size %u) failed: %d", size, rc);
    return p;
}

/* apr_reslist_acquire, waiting forever (timeout 0). */
static void bench_apr_get(void *pool, bench_lease_t *lease)
{
    apr_bench_pool_t *p = pool;
    apr_status_t rc = apr_reslist_acquire(p->list, &lease->resource);
    if (rc != APR_SUCCESS)
        bench_fail("apr_reslist_acquire failed: %d", rc);
}

/* apr_reslist_release (which also runs apr_reslist_maintain). */
static void bench_apr_put(void *pool, bench_lease_t *lease)
{
    apr_bench_pool_t *p = pool;
    apr_status_t rc = apr_reslist_release(p->list, lease->resource);
    if (rc != APR_SUCCESS)
        bench_fail("apr_reslist_release failed: %d", rc);
}

/* Destroy the list, then its APR pool and allocator. */
static void bench_apr_close(void *pool)
{
    apr_bench_pool_t *p = pool;
    apr_reslist_destroy(p->list);
    apr_pool_destroy(p->memory);
    free(p);
}

/* apr_reslist has no waiter count. */
static int bench_apr_waiting(void *pool) { return -1; }

const contender_t apr_reslist_contender = {
    .name = "apr-reslist",
    .open = bench_apr_open,
    .get = bench_apr_get,
    .put = bench_apr_put,
    .close = bench_apr_close,
    .waiting = bench_apr_waiting,
    .takes_factory = true,
};

/* ---- memcached-pool ------------------------------------------------------------ */

typedef struct memcached_bench_pool {
    memcached_st *master; /* the handle every resource is cloned from */
    memcached_pool_st *pool;
} memcached_bench_pool_t;

/* A pool of `size` clones of a server-less handle (make is not used: the
 * pool clones its master itself). */
static void *bench_memcached_open(unsigned size, bench_make_fn make)
{
    memcached_bench_pool_t *p = calloc(1, sizeof *p);
    if (!p || !(p->master = memcached_create(NULL)))
        bench_fail("memcached-pool: out of memory");
    p->pool = memcached_pool_create(p->master, size, size);
    if (!p->pool)
        bench_fail("memcached_pool_create(size %u) failed", size);
    return p;
}

/* memcached_pool_fetch with a deadline far enough to mean "forever". */
static void bench_memcached_get(void *pool, bench_lease_t *lease)
{
    memcached_bench_pool_t *p = pool;
    /* "Forever": a relative timeout of a year (the pool has no unbounded
     * wait; memcached_pool_pop(block = true) gives up after 5 s). */
    struct timespec year = {365 * 24 * 3600, 0};
    memcached_return_t rc;
    lease->resource = memcached_pool_fetch(p->pool, &year, &rc);
    if (!lease->resource)
        bench_fail("memcached_pool_fetch: %s", memcached_strerror(NULL, rc));
}

/* memcached_pool_release of a fetched clone. */
static void bench_memcached_put(void *pool, bench_lease_t *lease)
{
    memcached_bench_pool_t *p = pool;
    memcached_return_t rc = memcached_pool_release(p->pool, lease->resource);
    if (rc != MEMCACHED_SUCCESS)
        bench_fail("memcached_pool_release: %s", memcached_strerror(NULL, rc));
}

/* Destroy the pool (it frees its clones), then the master. */
static void bench_memcached_close(void *pool)
{
    memcached_bench_pool_t *p = pool;
    memcached_pool_destroy(p->pool); /* returns the master, which we own */
    memcached_free(p->master);
    free(p);
}

/* memcached_pool has no waiter count. */
static int bench_memcached_waiting(void *pool) { return -1; }

const contender_t memcached_pool_contender = {
    .name = "memcached-pool",
    .open = bench_memcached_open,
    .get = bench_memcached_get,
    .put = bench_memcached_put,
    .close = bench_memcached_close,
    .waiting = bench_memcached_waiting,
    .takes_factory = false,
};
