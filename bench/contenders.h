/*
 * contenders.h — the pools under comparison, behind one interface.
 *
 *   respool         the pool under test (contenders.c)
 *   floor-mutex     a stack under one pthread mutex + one condition
 *                   variable; waiters barge: throughput without fairness
 *   floor-fifo      the same with strict FIFO hand-off to per-waiter
 *                   condition variables: fairness without throughput
 *                   (both floors: floors.c)
 *   apr-reslist     APR-util's apr_reslist (peers.c)
 *   memcached-pool  libmemcachedutil's memcached_pool; its resources are
 *                   memcached_st clones, lazy (no server is contacted)
 *
 * Every contender blocks without limit in get() and aborts the benchmark on
 * any error: a benchmark that silently skips failures measures nothing.
 */
#ifndef BENCH_CONTENDERS_H
#define BENCH_CONTENDERS_H

#include <stdbool.h>
#include <stddef.h>

#include "respool.h"

/* Makes one resource for a pool that is being filled (may be slow). */
typedef void *(*bench_make_fn)(void);

/* What a checkout hands to the caller; kept by the caller until put(). */
typedef struct bench_lease {
    void *resource;
    respool_lease_t respool; /* respool's own lease; unused by the others */
} bench_lease_t;

typedef struct contender {
    const char *name;
    /* A pool of `size` resources, all made (by make, or by a trivial maker
     * when make is NULL) before it returns. */
    void *(*open)(unsigned size, bench_make_fn make);
    void (*get)(void *pool, bench_lease_t *lease);
    void (*put)(void *pool, bench_lease_t *lease);
    void (*close)(void *pool);
    /* Threads blocked in get(), or -1 when the pool cannot tell. */
    int (*waiting)(void *pool);
    /* false: open() ignores make (its resources are its own kind), so a
     * slow factory cannot be measured. */
    bool takes_factory;
} contender_t;

/* A trivial resource: a distinct pointer into a static array, made in
 * nanoseconds; what `make == NULL` means. */
void *trivial_resource(void);

extern const contender_t respool_contender;
/* No pool: get and put do nothing, so every thread always has "a
 * resource". W3 with it measures what the scheduler alone gives 16 busy
 * threads on this machine: the ceiling of fairness and throughput. Never
 * blocks, so it is not a W4 contender. */
extern const contender_t unpooled_contender;
/* respool with max_creating = 64: the cold start row that fills in one wave */
extern const contender_t respool_wide_contender;
extern const contender_t floor_mutex_contender;
extern const contender_t floor_fifo_contender;
extern const contender_t apr_reslist_contender;
extern const contender_t memcached_pool_contender;

/* Every contender, respool first (the reference of every ratio). */
#define CONTENDER_COUNT 5
extern const contender_t *const all_contenders[CONTENDER_COUNT];

#endif /* BENCH_CONTENDERS_H */
