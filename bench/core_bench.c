/*
 * core_bench.c — respool's core against the hardware floor, in one run.
 *
 *   build/bench/core_bench [seconds-per-round] [rounds]
 *
 * Contenders, same harness, interleaved rounds (median and min-max reported):
 *   respool         the pool under test
 *   floor-mutex     a stack of pointers under one pthread mutex + one cond
 *                   (waiters barge: throughput without fairness)
 *   floor-fifo      the same with a strict FIFO hand-off queue of per-thread
 *                   condition variables (fairness without throughput)
 * Workloads:
 *   W1  1 thread, pool of 8: checkout+checkin pair, ns per pair
 *   W3  16 threads, pool of 4, ~1 us of work while holding: pairs/s, wait
 *       p50/p99/max (time inside checkout), fairness = min/max pairs/thread
 * One idle extra thread runs in the process throughout: glibc skips atomics
 * in a single-threaded process, which would flatter everyone.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "respool.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the contenders behind one interface ---------------------------- */

typedef struct contender {
    const char *name;
    void *(*open)(unsigned size);
    void *(*get)(void *pool, void **token);
    void (*put)(void *pool, void *resource, void *token);
    void (*close)(void *pool);
} contender_t;

/* respool */
static int trivial_create(void *ctx, void **resource, char *err, size_t len)
{
    static char dummy[4096];
    static atomic_uint next;
    *resource = &dummy[atomic_fetch_add(&next, 1) % sizeof dummy];
    return 0;
}
static void trivial_destroy(void *ctx, void *resource) {}

typedef struct respool_token {
    respool_lease_t lease;
} respool_token_t;

static void *rp_open(unsigned size)
{
    respool_config_t c = {0};
    c.size = size;
    const char *fairness = getenv("RESPOOL_BENCH_FAIRNESS_US"); /* experiments */
    if (fairness)
        c.fairness_us = atol(fairness);
    respool_factory_t f = {trivial_create, trivial_destroy, NULL, NULL, NULL};
    respool_t *pool;
    if (respool_create(&pool, &c, &f) != RESPOOL_OK)
        abort();
    return pool;
}
static _Thread_local respool_lease_t rp_lease;
static void *rp_get(void *pool, void **token)
{
    if (respool_checkout(pool, -1, &rp_lease) != RESPOOL_OK)
        abort();
    return rp_lease.resource;
}
static void rp_put(void *pool, void *resource, void *token)
{
    if (respool_checkin(pool, &rp_lease) != RESPOOL_OK)
        abort();
}
static void rp_close(void *pool) { respool_free(pool); }

/* floor-mutex: a stack under a mutex, one shared condition variable */
typedef struct floor_pool {
    pthread_mutex_t lock;
    pthread_cond_t available;
    void **stack;
    unsigned top;
    /* FIFO variant: queue of waiters with their own cond */
    struct floor_waiter *head, *tail;
} floor_pool_t;

typedef struct floor_waiter {
    pthread_cond_t cond;
    void *resource;
    struct floor_waiter *next;
} floor_waiter_t;

static void *floor_open(unsigned size)
{
    floor_pool_t *p = calloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->available, NULL);
    p->stack = calloc(size, sizeof *p->stack);
    static char dummy[64];
    for (unsigned i = 0; i < size; i++)
        p->stack[p->top++] = &dummy[i % 64];
    return p;
}
static void floor_close(void *pool)
{
    floor_pool_t *p = pool;
    free(p->stack);
    free(p);
}
static void *mutex_get(void *pool, void **token)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    while (p->top == 0)
        pthread_cond_wait(&p->available, &p->lock);
    void *r = p->stack[--p->top];
    pthread_mutex_unlock(&p->lock);
    return r;
}
static void mutex_put(void *pool, void *resource, void *token)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    p->stack[p->top++] = resource;
    pthread_cond_signal(&p->available);
    pthread_mutex_unlock(&p->lock);
}
static void *fifo_get(void *pool, void **token)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    if (p->top > 0 && !p->head) {
        void *r = p->stack[--p->top];
        pthread_mutex_unlock(&p->lock);
        return r;
    }
    floor_waiter_t w = {.resource = NULL, .next = NULL};
    pthread_cond_init(&w.cond, NULL);
    if (p->tail)
        p->tail->next = &w;
    else
        p->head = &w;
    p->tail = &w;
    while (!w.resource)
        pthread_cond_wait(&w.cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_cond_destroy(&w.cond);
    return w.resource;
}
static void fifo_put(void *pool, void *resource, void *token)
{
    floor_pool_t *p = pool;
    pthread_mutex_lock(&p->lock);
    floor_waiter_t *w = p->head;
    if (w) {
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        w->resource = resource;
        pthread_cond_signal(&w->cond);
    } else {
        p->stack[p->top++] = resource;
    }
    pthread_mutex_unlock(&p->lock);
}

static const contender_t contenders[] = {
    {"respool", rp_open, rp_get, rp_put, rp_close},
    {"floor-mutex", floor_open, mutex_get, mutex_put, floor_close},
    {"floor-fifo", floor_open, fifo_get, fifo_put, floor_close},
};
#define N_CONTENDERS (sizeof contenders / sizeof contenders[0])

/* ---- workloads --------------------------------------------------------- */

static volatile uint64_t spin_sink;
static uint64_t spins_per_us = 100;

static void busy_work(uint64_t spins)
{
    uint64_t x = spin_sink;
    for (uint64_t i = 0; i < spins; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    spin_sink = x;
}

static void calibrate(void)
{
    uint64_t n = 1000000;
    int64_t t0 = now_ns();
    busy_work(n);
    int64_t dt = now_ns() - t0;
    spins_per_us = dt > 0 ? n * 1000 / (uint64_t)dt : 100;
    if (spins_per_us == 0)
        spins_per_us = 1;
}

static double w1(const contender_t *c, double seconds)
{
    void *pool = c->open(8);
    uint64_t pairs = 0;
    int64_t end = now_ns() + (int64_t)(seconds * 1e9);
    int64_t t0 = now_ns();
    while (now_ns() < end) {
        for (int i = 0; i < 1000; i++) {
            void *token;
            void *r = c->get(pool, &token);
            c->put(pool, r, token);
        }
        pairs += 1000;
    }
    double ns = (double)(now_ns() - t0) / (double)pairs;
    c->close(pool);
    return ns;
}

#define W3_THREADS 16
#define W3_SIZE 4
#define MAX_SAMPLES (1 << 20)

typedef struct w3_thread {
    const contender_t *c;
    void *pool;
    atomic_bool *stop;
    uint64_t pairs;
    uint32_t *waits; /* wait times in ns (saturated), sampled */
    size_t nwaits;
} w3_thread_t;

static void *w3_worker(void *arg)
{
    w3_thread_t *t = arg;
    while (!atomic_load_explicit(t->stop, memory_order_relaxed)) {
        void *token;
        int64_t t0 = now_ns();
        void *r = t->c->get(t->pool, &token);
        int64_t waited = now_ns() - t0;
        busy_work(spins_per_us);
        t->c->put(t->pool, r, token);
        if (t->nwaits < MAX_SAMPLES / W3_THREADS)
            t->waits[t->nwaits++] = waited > UINT32_MAX ? UINT32_MAX : (uint32_t)waited;
        t->pairs++;
    }
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct w3_result {
    double pairs_per_s, p50_us, p99_us, max_us, fairness;
} w3_result_t;

static w3_result_t w3(const contender_t *c, double seconds)
{
    void *pool = c->open(W3_SIZE);
    atomic_bool stop = false;
    w3_thread_t t[W3_THREADS];
    pthread_t th[W3_THREADS];
    uint32_t *samples = calloc(MAX_SAMPLES, sizeof *samples);
    for (int i = 0; i < W3_THREADS; i++) {
        t[i] = (w3_thread_t){c, pool, &stop, 0, samples + (size_t)i * (MAX_SAMPLES / W3_THREADS), 0};
        pthread_create(&th[i], NULL, w3_worker, &t[i]);
    }
    int64_t t0 = now_ns();
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    for (int i = 0; i < W3_THREADS; i++)
        pthread_join(th[i], NULL);
    double elapsed = (double)(now_ns() - t0) / 1e9;
    uint64_t total = 0, min = UINT64_MAX, max = 0;
    size_t n = 0;
    for (int i = 0; i < W3_THREADS; i++) {
        total += t[i].pairs;
        min = t[i].pairs < min ? t[i].pairs : min;
        max = t[i].pairs > max ? t[i].pairs : max;
        memmove(samples + n, t[i].waits, t[i].nwaits * sizeof *samples);
        n += t[i].nwaits;
    }
    qsort(samples, n, sizeof *samples, cmp_u32);
    w3_result_t r = {total / elapsed, n ? samples[n / 2] / 1e3 : 0,
                     n ? samples[(size_t)(n * 0.99)] / 1e3 : 0, n ? samples[n - 1] / 1e3 : 0,
                     max ? (double)min / (double)max : 0};
    free(samples);
    c->close(pool);
    return r;
}

/* ---- reporting --------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void *idle_thread(void *arg)
{
    pthread_mutex_t *m = arg;
    pthread_mutex_lock(m); /* parks until exit */
    pthread_mutex_unlock(m);
    return NULL;
}

#define MAX_ROUNDS 15

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (rounds < 1 || rounds > MAX_ROUNDS)
        rounds = 5;
    pthread_mutex_t park = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&park);
    pthread_t idle;
    pthread_create(&idle, NULL, idle_thread, &park);
    calibrate();

    static double w1_ns[N_CONTENDERS][MAX_ROUNDS];
    static w3_result_t w3_r[N_CONTENDERS][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        for (size_t c = 0; c < N_CONTENDERS; c++)
            w1_ns[c][r] = w1(&contenders[c], seconds / 2);
        for (size_t c = 0; c < N_CONTENDERS; c++)
            w3_r[c][r] = w3(&contenders[c], seconds);
    }

    printf("W1  uncontended checkout+checkin, 1 thread, pool of 8 (%d rounds of %.2fs)\n", rounds,
           seconds / 2);
    printf("    %-12s %10s %10s %10s %12s\n", "contender", "median ns", "min", "max", "vs respool");
    double base = 0;
    for (size_t c = 0; c < N_CONTENDERS; c++) {
        double v[MAX_ROUNDS];
        memcpy(v, w1_ns[c], sizeof v);
        double m = median(v, rounds);
        if (c == 0)
            base = m;
        printf("    %-12s %10.1f %10.1f %10.1f %11.2fx\n", contenders[c].name, m, v[0],
               v[rounds - 1], m / base);
    }
    printf("\nW3  %d threads, pool of %d, ~1 us held (%d rounds of %.2fs; medians)\n", W3_THREADS,
           W3_SIZE, rounds, seconds);
    printf("    %-12s %12s %10s %10s %10s %10s %9s %12s\n", "contender", "pairs/s", "min", "max",
           "p50 us", "p99 us", "fairness", "max wait us");
    double base_tp = 0;
    for (size_t c = 0; c < N_CONTENDERS; c++) {
        double tp[MAX_ROUNDS], p50[MAX_ROUNDS], p99[MAX_ROUNDS], fair[MAX_ROUNDS], worst = 0;
        for (int r = 0; r < rounds; r++) {
            tp[r] = w3_r[c][r].pairs_per_s;
            p50[r] = w3_r[c][r].p50_us;
            p99[r] = w3_r[c][r].p99_us;
            fair[r] = w3_r[c][r].fairness;
            worst = w3_r[c][r].max_us > worst ? w3_r[c][r].max_us : worst;
        }
        double m = median(tp, rounds);
        if (c == 0)
            base_tp = m;
        printf("    %-12s %12.0f %10.0f %10.0f %10.1f %10.1f %9.2f %12.0f   (%.2fx respool)\n",
               contenders[c].name, m, tp[0], tp[rounds - 1], median(p50, rounds),
               median(p99, rounds), median(fair, rounds), worst, m / base_tp);
    }
    pthread_mutex_unlock(&park);
    pthread_join(idle, NULL);
    return 0;
}
