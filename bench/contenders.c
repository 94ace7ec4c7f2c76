/*
 * contenders.c — the list of contenders, the trivial resource, and respool
 * behind the benchmark interface.
 */
#include "contenders.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "harness.h"

const contender_t *const all_contenders[CONTENDER_COUNT] = {
    &respool_contender,     &floor_mutex_contender,    &floor_fifo_contender,
    &apr_reslist_contender, &memcached_pool_contender,
};

void *trivial_resource(void)
{
    static char arena[4096];
    static atomic_uint next;
    return &arena[atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % sizeof arena];
}

/* ---- respool ------------------------------------------------------------ */

/* respool's factory create(): ctx is the bench_make_fn (NULL = trivial). */
static int respool_make(void *ctx, void **resource, char *err, size_t errlen)
{
    bench_make_fn make = *(bench_make_fn *)ctx;
    *resource = make ? make() : trivial_resource();
    return 0;
}

static void respool_unmake(void *ctx, void *resource) {}

typedef struct respool_bench_pool {
    respool_t *pool;
    bench_make_fn make; /* the factory's ctx: must outlive the pool */
} respool_bench_pool_t;

/* A respool of `size` permanent resources, no overflow, default settings
 * but max_creating (0 = the default; RESPOOL_BENCH_FAIRNESS_US overrides
 * fairness_us, for experiments). */
static void *respool_open_creating(unsigned size, bench_make_fn make, unsigned max_creating)
{
    respool_bench_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        bench_fail("respool: out of memory");
    p->make = make;
    respool_config_t config = {0};
    config.size = size;
    config.max_creating = max_creating;
    const char *fairness = getenv("RESPOOL_BENCH_FAIRNESS_US");
    if (fairness)
        config.fairness_us = atol(fairness);
    respool_factory_t factory = {respool_make, respool_unmake, NULL, NULL, &p->make};
    int rc = respool_create(&p->pool, &config, &factory);
    if (rc != RESPOOL_OK)
        bench_fail("respool_create(size %u): %s", size, respool_strerror(rc));
    return p;
}

static void *respool_open(unsigned size, bench_make_fn make)
{
    return respool_open_creating(size, make, 0);
}

static void *respool_open_wide(unsigned size, bench_make_fn make)
{
    return respool_open_creating(size, make, 64);
}

/* Checkout without a time limit. */
static void respool_get(void *pool, bench_lease_t *lease)
{
    respool_bench_pool_t *p = pool;
    int rc = respool_checkout(p->pool, -1, &lease->respool);
    if (rc != RESPOOL_OK)
        bench_fail("respool_checkout: %s", respool_strerror(rc));
    lease->resource = lease->respool.resource;
}

/* Checkin of the lease taken by respool_get. */
static void respool_put(void *pool, bench_lease_t *lease)
{
    respool_bench_pool_t *p = pool;
    int rc = respool_checkin(p->pool, &lease->respool);
    if (rc != RESPOOL_OK)
        bench_fail("respool_checkin: %s", respool_strerror(rc));
}

/* Shut down (every lease is back) and free. */
static void respool_close(void *pool)
{
    respool_bench_pool_t *p = pool;
    respool_free(p->pool);
    free(p);
}

/* The pool's own count of blocked checkouts. */
static int respool_waiting(void *pool)
{
    respool_bench_pool_t *p = pool;
    respool_stats_t stats;
    respool_stats(p->pool, &stats);
    return (int)stats.waiting;
}

const contender_t respool_contender = {
    .name = "respool",
    .open = respool_open,
    .get = respool_get,
    .put = respool_put,
    .close = respool_close,
    .waiting = respool_waiting,
    .takes_factory = true,
};

const contender_t respool_wide_contender = {
    .name = "respool-wide",
    .open = respool_open_wide,
    .get = respool_get,
    .put = respool_put,
    .close = respool_close,
    .waiting = respool_waiting,
    .takes_factory = true,
};

/* ---- unpooled: the scheduler ceiling for W3 --------------------------------- */

static void *unpooled_open(unsigned size, bench_make_fn make)
{
    (void)size;
    (void)make;
    static char nothing;
    return &nothing;
}

static void unpooled_get(void *pool, bench_lease_t *lease)
{
    lease->resource = pool;
}

static void unpooled_put(void *pool, bench_lease_t *lease)
{
    (void)pool;
    (void)lease;
}

static void unpooled_close(void *pool)
{
    (void)pool;
}

static int unpooled_waiting(void *pool)
{
    (void)pool;
    return 0;
}

const contender_t unpooled_contender = {
    .name = "unpooled",
    .open = unpooled_open,
    .get = unpooled_get,
    .put = unpooled_put,
    .close = unpooled_close,
    .waiting = unpooled_waiting,
    .takes_factory = false,
};
