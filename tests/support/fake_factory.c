/* fake_factory.c — see fake_factory.h. */
#include "support/fake_factory.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fake_init(fake_factory_t *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->changed, NULL);
}

void fake_fini(fake_factory_t *f)
{
    for (unsigned i = 0; i < f->count; i++) {
        fake_resource_t *r = f->all[i];
        if (atomic_load(&r->destroyed) != 1) {
            fprintf(stderr, "fake_factory: resource %u was never destroyed\n", r->id);
            abort();
        }
        free(r);
    }
    if (f->created != f->destroyed) {
        fprintf(stderr, "fake_factory: created %llu != destroyed %llu\n",
                (unsigned long long)f->created, (unsigned long long)f->destroyed);
        abort();
    }
    pthread_cond_destroy(&f->changed);
    pthread_mutex_destroy(&f->lock);
}

bool fake_reconcile(fake_factory_t *f, char *why, size_t whylen)
{
    pthread_mutex_lock(&f->lock);
    bool ok = true;
    for (unsigned i = 0; i < f->count && ok; i++) {
        int destroyed = atomic_load(&f->all[i]->destroyed);
        if (destroyed != 1) {
            snprintf(why, whylen, "fake_factory: resource %u was destroyed %d times",
                     f->all[i]->id, destroyed);
            ok = false;
        }
    }
    if (ok && f->created != f->destroyed) {
        snprintf(why, whylen, "fake_factory: created %llu != destroyed %llu",
                 (unsigned long long)f->created, (unsigned long long)f->destroyed);
        ok = false;
    }
    pthread_mutex_unlock(&f->lock);
    return ok;
}

void fake_release(fake_factory_t *f)
{
    for (unsigned i = 0; i < f->count; i++)
        free(f->all[i]);
    f->count = 0;
    pthread_cond_destroy(&f->changed);
    pthread_mutex_destroy(&f->lock);
}

static int fake_create(void *ctx, void **resource, char *err, size_t errlen)
{
    fake_factory_t *f = ctx;
    pthread_mutex_lock(&f->lock);
    f->create_calls++;
    f->creating_now++;
    if (f->creating_now > f->creating_peak)
        f->creating_peak = f->creating_now;
    long delay = f->create_delay_ms;
    pthread_cond_broadcast(&f->changed);
    if (f->block_creates) {
        f->blocked_now++;
        pthread_cond_broadcast(&f->changed);
        while (f->block_creates)
            pthread_cond_wait(&f->changed, &f->lock);
        f->blocked_now--;
    }
    pthread_mutex_unlock(&f->lock);

    if (delay > 0)
        sleep_ms(delay);

    pthread_mutex_lock(&f->lock);
    int rc = 0;
    if (f->fail_always || f->fail_next > 0) {
        if (f->fail_next > 0)
            f->fail_next--;
        snprintf(err, errlen, "fake: injected failure #%llu",
                 (unsigned long long)f->create_failed + 1);
        f->create_failed++;
        rc = -1;
    } else if (f->null_next) {
        f->null_next = false;
        f->create_failed++;
        *resource = NULL;
    } else if (f->count == FAKE_MAX_RESOURCES) {
        snprintf(err, errlen, "fake: out of test resources");
        f->create_failed++;
        rc = -1;
    } else {
        fake_resource_t *r = calloc(1, sizeof *r);
        if (!r)
            abort();
        r->magic = FAKE_RESOURCE_MAGIC;
        r->id = f->count + 1;
        f->all[f->count++] = r;
        f->created++;
        *resource = r;
    }
    f->creating_now--;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static fake_resource_t *check_resource(void *resource, const char *who)
{
    fake_resource_t *r = resource;
    if (!r || r->magic != FAKE_RESOURCE_MAGIC) {
        fprintf(stderr, "fake_factory: %s got a bad resource %p\n", who, resource);
        abort();
    }
    if (atomic_load(&r->destroyed)) {
        fprintf(stderr, "fake_factory: %s got destroyed resource %u\n", who, r->id);
        abort();
    }
    return r;
}

static void fake_destroy(void *ctx, void *resource)
{
    fake_factory_t *f = ctx;
    fake_resource_t *r = check_resource(resource, "destroy");
    if (atomic_load(&r->holders) != 0) {
        fprintf(stderr, "fake_factory: resource %u destroyed while held\n", r->id);
        abort();
    }
    pthread_mutex_lock(&f->lock);
    long delay = f->destroy_delay_ms;
    pthread_mutex_unlock(&f->lock);
    if (delay > 0)
        sleep_ms(delay);
    if (atomic_exchange(&r->destroyed, 1) != 0) {
        fprintf(stderr, "fake_factory: resource %u destroyed twice\n", r->id);
        abort();
    }
    pthread_mutex_lock(&f->lock);
    f->destroyed++;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

static bool fake_validate(void *ctx, void *resource)
{
    fake_factory_t *f = ctx;
    fake_resource_t *r = check_resource(resource, "validate");
    pthread_mutex_lock(&f->lock);
    f->validated++;
    bool ok = !f->validate_false && !atomic_load(&r->broken);
    pthread_mutex_unlock(&f->lock);
    return ok;
}

static bool fake_reset(void *ctx, void *resource)
{
    fake_factory_t *f = ctx;
    fake_resource_t *r = check_resource(resource, "reset");
    pthread_mutex_lock(&f->lock);
    f->resets++;
    bool ok = !f->reset_false && !atomic_load(&r->broken);
    pthread_mutex_unlock(&f->lock);
    return ok;
}

respool_factory_t fake_factory(fake_factory_t *f)
{
    respool_factory_t factory = {fake_create, fake_destroy, fake_validate, fake_reset, f};
    return factory;
}

respool_factory_t fake_factory_minimal(fake_factory_t *f)
{
    respool_factory_t factory = {fake_create, fake_destroy, NULL, NULL, f};
    return factory;
}

void fake_set_fail_next(fake_factory_t *f, int n)
{
    pthread_mutex_lock(&f->lock);
    f->fail_next = n;
    pthread_mutex_unlock(&f->lock);
}

void fake_set_fail_always(fake_factory_t *f, bool on)
{
    pthread_mutex_lock(&f->lock);
    f->fail_always = on;
    pthread_mutex_unlock(&f->lock);
}

void fake_set_block(fake_factory_t *f, bool on)
{
    pthread_mutex_lock(&f->lock);
    f->block_creates = on;
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

void fake_set_create_delay(fake_factory_t *f, long ms)
{
    pthread_mutex_lock(&f->lock);
    f->create_delay_ms = ms;
    pthread_mutex_unlock(&f->lock);
}

void fake_set_destroy_delay(fake_factory_t *f, long ms)
{
    pthread_mutex_lock(&f->lock);
    f->destroy_delay_ms = ms;
    pthread_mutex_unlock(&f->lock);
}

uint64_t fake_get_u64(fake_factory_t *f, const uint64_t *field)
{
    pthread_mutex_lock(&f->lock);
    uint64_t value = *field;
    pthread_mutex_unlock(&f->lock);
    return value;
}

bool fake_wait(fake_factory_t *f, bool (*cond)(fake_factory_t *, void *), void *arg,
               long timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline); /* pthread_cond_timedwait's default clock */
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->lock);
    bool ok;
    while (!(ok = cond(f, arg))) {
        if (pthread_cond_timedwait(&f->changed, &f->lock, &deadline) == ETIMEDOUT) {
            ok = cond(f, arg);
            break;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return ok;
}

static bool blocked_at_least(fake_factory_t *f, void *arg)
{
    return f->blocked_now >= *(unsigned *)arg;
}

bool fake_wait_blocked(fake_factory_t *f, unsigned n, long timeout_ms)
{
    return fake_wait(f, blocked_at_least, &n, timeout_ms);
}

static bool destroyed_at_least(fake_factory_t *f, void *arg)
{
    return f->destroyed >= *(uint64_t *)arg;
}

bool fake_wait_destroyed(fake_factory_t *f, uint64_t n, long timeout_ms)
{
    return fake_wait(f, destroyed_at_least, &n, timeout_ms);
}

static bool resource_destroyed(fake_factory_t *f, void *resource)
{
    (void)f;
    return fake_is_destroyed(resource);
}

bool fake_wait_resource_destroyed(fake_factory_t *f, void *resource, long timeout_ms)
{
    return fake_wait(f, resource_destroyed, resource, timeout_ms);
}

static bool create_calls_at_least(fake_factory_t *f, void *arg)
{
    return f->create_calls >= *(uint64_t *)arg;
}

bool fake_wait_create_calls(fake_factory_t *f, uint64_t n, long timeout_ms)
{
    return fake_wait(f, create_calls_at_least, &n, timeout_ms);
}

void fake_hold(void *resource)
{
    fake_resource_t *r = check_resource(resource, "hold");
    if (atomic_fetch_add(&r->holders, 1) != 0) {
        fprintf(stderr, "fake_factory: resource %u held by two threads\n", r->id);
        abort();
    }
}

void fake_unhold(void *resource)
{
    fake_resource_t *r = check_resource(resource, "unhold");
    if (atomic_fetch_sub(&r->holders, 1) != 1) {
        fprintf(stderr, "fake_factory: resource %u unheld but not held\n", r->id);
        abort();
    }
}

void fake_break(void *resource)
{
    atomic_store(&check_resource(resource, "break")->broken, 1);
}

unsigned fake_id(const void *resource)
{
    return ((const fake_resource_t *)resource)->id;
}

bool fake_is_destroyed(const void *resource)
{
    return atomic_load(&((const fake_resource_t *)resource)->destroyed) != 0;
}

bool pool_wait(respool_t *pool, bool (*pred)(const respool_stats_t *, void *), void *arg,
               long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        respool_stats_t stats;
        respool_stats(pool, &stats);
        if (pred(&stats, arg))
            return true;
        if (now_ms() >= deadline)
            return false;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

static bool idle_is(const respool_stats_t *s, void *arg) { return s->idle == *(unsigned *)arg; }
static bool waiting_is(const respool_stats_t *s, void *arg) { return s->waiting == *(unsigned *)arg; }
static bool destroyed_is(const respool_stats_t *s, void *arg)
{
    return s->destroyed >= *(uint64_t *)arg;
}

bool pool_wait_idle(respool_t *pool, unsigned idle, long timeout_ms)
{
    return pool_wait(pool, idle_is, &idle, timeout_ms);
}

bool pool_wait_waiting(respool_t *pool, unsigned waiting, long timeout_ms)
{
    return pool_wait(pool, waiting_is, &waiting, timeout_ms);
}

bool pool_wait_destroyed(respool_t *pool, uint64_t destroyed, long timeout_ms)
{
    return pool_wait(pool, destroyed_is, &destroyed, timeout_ms);
}

respool_config_t quiet_config(unsigned size, unsigned max_overflow)
{
    respool_config_t config = {0};
    config.size = size;
    config.max_overflow = max_overflow;
    config.log = respool_log_discard;
    return config;
}
