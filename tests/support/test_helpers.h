/*
 * test_helpers.h — small assertions and helpers shared by the core's test
 * files. Include after <criterion/criterion.h>.
 */
#ifndef TEST_HELPERS_H
#define TEST_HELPERS_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "respool.h"

/* Assert a respool call's return code, naming both codes on failure. */
#define CHECK_RC(expr, want)                                                                 \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        cr_assert_eq(rc_, (want), "%s returned %d (%s), want %s", #expr, rc_,                \
                     respool_strerror(rc_), #want);                                          \
    } while (0)

/* Assert an unsigned count, printing both values on failure. */
#define ASSERT_EQ_U(actual, want)                                                            \
    do {                                                                                     \
        unsigned long long a_ = (unsigned long long)(actual);                                \
        unsigned long long w_ = (unsigned long long)(want);                                  \
        cr_assert_eq(a_, w_, "%s is %llu, want %llu", #actual, a_, w_);                      \
    } while (0)

static inline int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Let time pass (to age a resource or outlast a deadline), never to wait
 * for another thread: use pool_wait_* / fake_wait_* for that. */
static inline void pass_time_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline void pass_time_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Await a flag another thread sets (polling every 200 us); false if it is
 * still clear after timeout_ms. */
static inline bool wait_flag(atomic_bool *flag, long timeout_ms)
{
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    while (!atomic_load(flag)) {
        if (now_us() >= deadline)
            return false;
        pass_time_us(200);
    }
    return true;
}

static inline respool_stats_t stats_of(respool_t *pool)
{
    respool_stats_t s;
    memset(&s, 0, sizeof s);
    respool_stats(pool, &s);
    return s;
}

static inline respool_t *make_pool(respool_config_t cfg, respool_factory_t factory)
{
    respool_t *pool = NULL;
    CHECK_RC(respool_create(&pool, &cfg, &factory), RESPOOL_OK);
    cr_assert_not_null(pool);
    return pool;
}

/* A checkout run on its own thread: co_start, then co_join (bounded). */
typedef struct {
    respool_t *pool;
    long timeout;
    int rc;
    respool_lease_t lease;
    pthread_t thread;
} co_t;

static inline void *co_main(void *arg)
{
    co_t *c = arg;
    c->rc = respool_checkout(c->pool, c->timeout, &c->lease);
    return NULL;
}

static inline void co_start(co_t *c, respool_t *pool, long timeout)
{
    memset(c, 0, sizeof *c);
    c->pool = pool;
    c->timeout = timeout;
    c->rc = -1;
    cr_assert_eq(pthread_create(&c->thread, NULL, co_main, c), 0);
}

/* Join the checkout thread within timeout_ms; false if it is still running. */
static inline bool co_join(co_t *c, long timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np's clock */
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(c->thread, NULL, &ts) == 0;
}

#endif
