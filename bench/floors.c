/*
 * floors.c — the two simplest correct pools, as floors for the others.
 *
 * floor-mutex: a stack of resources under one mutex and one condition
 * variable; a checkin signals one waiter, but any running thread may take
 * the resource first (barging): the most throughput a lock can give.
 * floor-fifo: the same stack plus a FIFO queue of waiters, each with its own
 * condition variable; a checkin hands the resource straight to the oldest
 * waiter: strict fairness at one context switch per hand-off.
 * Both fill the stack in open(), one resource after another.
 */
#include <pthread.h>
#include <stdlib.h>

#include "contenders.h"
#include "harness.h"

typedef struct floor_waiter {
    pthread_cond_t wake;
    void *resource; /* set by the checkin that serves this waiter */
    struct floor_waiter *next;
} floor_waiter_t;

typedef struct floor_pool {
    pthread_mutex_t lock;
    pthread_cond_t available; /* floor-mutex only */
    void **stack;
    unsigned top;
    int waiting;                /* threads blocked in get() */
    floor_waiter_t *head, *tail; /* floor-fifo's queue */
} floor_pool_t;

/* Fill a stack of `size` resources, made in turn (sequentially). */
static void *floor_open(unsigned size, bench_make_fn make)
{
    floor_pool_t *p = calloc(1, sizeof *p);
    if (!p || !(p->stack = calloc(size, sizeof *p->stack)))
        bench_fail("floor: out of memory");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->available, NULL);
    for (unsigned i = 0; i < size; i++)
        p->stack[p->top++] = make ? make() : trivial_resource();
    return p;
}

/* Free a floor pool (every resource is back). */
static void floor_close(void *pool)
{
    floor_pool_t *p = pool;
    pthread_cond_destroy(&p->available);
    pthread_mutex_destroy(&p->lock);
    free(p->stack);
    free(p);
}

/* Threads blocked in get(), counted under the lock. */
static int floor_waiting(void *pool)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    int n = p->waiting;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* ---- floor-mutex --------------------------------------------------------- */

static void mutex_get(void *pool, bench_lease_t *lease)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    while (p->top == 0) {
        p->waiting++;
        pthread_cond_wait(&p->available, &p->lock);
        p->waiting--;
    }
    lease->resource = p->stack[--p->top];
    pthread_mutex_unlock(&p->lock);
}

/* Push the resource and wake one waiter (which may lose it to a barger). */
static void mutex_put(void *pool, bench_lease_t *lease)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    p->stack[p->top++] = lease->resource;
    pthread_cond_signal(&p->available);
    pthread_mutex_unlock(&p->lock);
}

const contender_t floor_mutex_contender = {
    .name = "floor-mutex",
    .open = floor_open,
    .get = mutex_get,
    .put = mutex_put,
    .close = floor_close,
    .waiting = floor_waiting,
    .takes_factory = true,
};

/* ---- floor-fifo ---------------------------------------------------------- */

/* Take an idle resource only when nobody queues; otherwise queue and wait
 * to be handed one. */
static void fifo_get(void *pool, bench_lease_t *lease)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    if (p->top > 0 && !p->head) {
        lease->resource = p->stack[--p->top];
        pthread_mutex_unlock(&p->lock);
        return;
    }
    floor_waiter_t self = {.resource = NULL, .next = NULL};
    pthread_cond_init(&self.wake, NULL);
    if (p->tail)
        p->tail->next = &self;
    else
        p->head = &self;
    p->tail = &self;
    p->waiting++;
    while (!self.resource)
        pthread_cond_wait(&self.wake, &p->lock);
    p->waiting--;
    pthread_mutex_unlock(&p->lock);
    pthread_cond_destroy(&self.wake);
    lease->resource = self.resource;
}

/* Hand the resource to the oldest waiter, or stack it when none. */
static void fifo_put(void *pool, bench_lease_t *lease)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    floor_waiter_t *w = p->head;
    if (w) {
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        w->resource = lease->resource;
        pthread_cond_signal(&w->wake);
    } else {
        p->stack[p->top++] = lease->resource;
    }
    pthread_mutex_unlock(&p->lock);
}

const contender_t floor_fifo_contender = {
    .name = "floor-fifo",
    .open = floor_open,
    .get = fifo_get,
    .put = fifo_put,
    .close = floor_close,
    .waiting = floor_waiting,
    .takes_factory = true,
};
