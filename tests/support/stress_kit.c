/* stress_kit.c — see stress_kit.h. */
#include "support/stress_kit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

/* ---- knobs ---------------------------------------------------------------- */

long stress_env_long(const char *name, long fallback, long min, long max)
{
    const char *text = getenv(name);
    if (!text || !*text)
        return fallback;
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return fallback;
    return value < min ? min : value > max ? max : value;
}

long stress_duration_ms(void)
{
    return stress_env_long("RESPOOL_STRESS_MS", 2000, 20, 600000);
}

/* ---- small tools ------------------------------------------------------------ */

uint32_t stress_rand(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

uint32_t stress_below(uint32_t *state, uint32_t n)
{
    return (uint32_t)(((uint64_t)stress_rand(state) * n) >> 32);
}

int64_t stress_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void stress_sleep_until_ns(int64_t when_ns)
{
    struct timespec ts = {(time_t)(when_ns / 1000000000), (long)(when_ns % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

void stress_precise_timers(void)
{
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* best effort */
}

void stress_report(const char *format, ...)
{
    char line[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    fprintf(stderr, "[figures] %s\n", line);
    fflush(stderr);
}

/* The body of every stress_thread: run, then say so under the lock. */
static void *stress_thread_main(void *arg)
{
    stress_thread_t *t = arg;
    void *result = t->fn(t->arg);
    pthread_mutex_lock(&t->lock);
    t->ended = true;
    pthread_cond_signal(&t->ended_cond);
    pthread_mutex_unlock(&t->lock);
    return result;
}

int stress_thread_start(stress_thread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
                        void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->ended = false;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->ended_cond, &cattr);
    pthread_condattr_destroy(&cattr);
    int err = pthread_create(&t->id, attr, stress_thread_main, t);
    if (err != 0) {
        pthread_cond_destroy(&t->ended_cond);
        pthread_mutex_destroy(&t->lock);
    }
    return err;
}

bool stress_thread_join(stress_thread_t *t, long timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->lock);
    while (!t->ended && pthread_cond_timedwait(&t->ended_cond, &t->lock, &until) != ETIMEDOUT) {
    }
    bool ended = t->ended;
    pthread_mutex_unlock(&t->lock);
    if (!ended)
        return false;
    pthread_join(t->id, NULL);
    pthread_cond_destroy(&t->ended_cond);
    pthread_mutex_destroy(&t->lock);
    return true;
}

void stress_clear_faults(fake_factory_t *f)
{
    pthread_mutex_lock(&f->lock);
    f->fail_next = 0;
    f->fail_always = false;
    f->create_delay_ms = 0;
    f->destroy_delay_ms = 0;
    f->block_creates = false;
    pthread_cond_broadcast(&f->changed); /* releases blocked creates */
    pthread_mutex_unlock(&f->lock);
}

/* ---- the checker ---------------------------------------------------------------- */

/* The snapshot in one line, for failure messages. */
static void describe(const respool_stats_t *s, char *out, size_t outlen)
{
    snprintf(out, outlen,
             "state %s size %u max_overflow %u idle %u busy %u overflow %u creating %u "
             "waiting %u destroying %u created %" PRIu64 " destroyed %" PRIu64
             " checkouts %" PRIu64 " timeouts %" PRIu64 " create_failures %" PRIu64
             " broken %" PRIu64,
             respool_state_name(s->state), s->size, s->max_overflow, s->idle, s->busy,
             s->overflow, s->creating, s->waiting, s->destroying, s->created, s->destroyed,
             s->checkouts, s->timeouts, s->create_failures, s->reported_broken);
}

/* Write "what: snapshot" into why. Returns false, for `return fail(...)`. */
static bool fail(char *why, size_t whylen, const respool_stats_t *s, const char *format, ...)
{
    char what[200], snapshot[400];
    va_list args;
    va_start(args, format);
    vsnprintf(what, sizeof what, format, args);
    va_end(args);
    describe(s, snapshot, sizeof snapshot);
    snprintf(why, whylen, "%s [%s]", what, snapshot);
    return false;
}

bool stats_consistent(const respool_stats_t *s, char *why, size_t whylen)
{
    unsigned live = s->idle + s->busy;
    if (s->destroyed > s->created)
        return fail(why, whylen, s, "destroyed > created");
    /* Every resource made and not yet destroyed is idle, busy (leased or
     * being checked) or waiting for / inside destroy(). */
    if (s->created - s->destroyed != (uint64_t)live + s->destroying)
        return fail(why, whylen, s, "created - destroyed != idle + busy + destroying");
    if (s->overflow != (live > s->size ? live - s->size : 0))
        return fail(why, whylen, s, "overflow != max(0, idle + busy - size)");
    if (s->consecutive_create_failures > s->create_failures)
        return fail(why, whylen, s, "consecutive_create_failures > create_failures");
    if (s->wait_ns_max > s->wait_ns_total)
        return fail(why, whylen, s, "wait_ns_max > wait_ns_total");
    if (s->state == RESPOOL_SHUTDOWN) {
        if (s->idle != 0)
            return fail(why, whylen, s, "idle resources during shutdown");
        return true;
    }
    respool_state_t want;
    if (s->idle > 0)
        want = RESPOOL_READY;
    else if (s->max_overflow > 0 && live + s->creating < s->size + s->max_overflow)
        want = RESPOOL_OVERFLOW;
    else
        want = RESPOOL_FULL;
    if (s->state != want)
        return fail(why, whylen, s, "state is not %s", respool_state_name(want));
    return true;
}

/* Was `value` one of the n listed? */
static bool listed(unsigned value, const unsigned *list, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (list[i] == value)
            return true;
    return false;
}

/* The 64-bit counters of a snapshot that only ever grow. */
#define MONOTONIC_FIELDS(X)                                                                   \
    X(created) X(destroyed) X(checkouts) X(timeouts) X(create_failures) X(waits)             \
    X(wait_ns_total) X(wait_ns_max) X(reported_broken) X(validate_failures)                  \
    X(reset_failures) X(dismissed) X(expired) X(leaks)

/* One sample's checks beyond the exact identities: bounds, counters that
 * must not go back, shutdown's rules, and the sandwich comparisons with the
 * ledger and the factory. */
static bool check_sample(stats_checker_t *c, const respool_stats_t *s,
                         const respool_stats_t *prev, bool shutdown_called_by_now,
                         const uint64_t before[5], const uint64_t after[5], char *why,
                         size_t whylen)
{
    enum { ACQUIRED, DESTROY_DONE, TIMEOUTS, FK_CREATED, FK_DESTROYED }; /* before[] */
    enum { RELEASED = 0, DESTROY_BEGUN = 1, ACQUIRED_AFTER = 2, FK_CREATED_AFTER = 3,
           FK_DESTROYED_AFTER = 4 }; /* after[] */
    if (!stats_consistent(s, why, whylen))
        return false;
    unsigned live = s->idle + s->busy;
    if ((uint64_t)live + s->creating > c->capacity_bound)
        return fail(why, whylen, s, "idle + busy + creating > %u (largest capacity set)",
                    c->capacity_bound);
    if (s->creating > c->max_creating)
        return fail(why, whylen, s, "creating > max_creating %u", c->max_creating);
    if (s->waiting > c->threads)
        return fail(why, whylen, s, "waiting > %u threads", c->threads);
    if (c->n_sizes && !listed(s->size, c->sizes, c->n_sizes))
        return fail(why, whylen, s, "size never set by the test");
    if (c->n_overflows && !listed(s->max_overflow, c->overflows, c->n_overflows))
        return fail(why, whylen, s, "max_overflow never set by the test");
    if (s->state == RESPOOL_SHUTDOWN && !shutdown_called_by_now)
        return fail(why, whylen, s, "state shutdown before respool_shutdown was called");

    if (prev) {
#define NOT_BACKWARDS(field)                                                                  \
    if (s->field < prev->field)                                                               \
        return fail(why, whylen, s, #field " went backwards from %" PRIu64, prev->field);
        MONOTONIC_FIELDS(NOT_BACKWARDS)
#undef NOT_BACKWARDS
        if (prev->state == RESPOOL_SHUTDOWN) {
            if (s->state != RESPOOL_SHUTDOWN)
                return fail(why, whylen, s, "left state shutdown");
            /* No create() starts once shutdown has begun: every change of
             * `creating` is a create() in flight finishing. */
            if (s->creating > prev->creating)
                return fail(why, whylen, s, "creating grew during shutdown (was %u)",
                            prev->creating);
            uint64_t finished = (s->created - prev->created) +
                                (s->create_failures - prev->create_failures);
            if (finished != prev->creating - s->creating)
                return fail(why, whylen, s,
                            "during shutdown %" PRIu64 " creates finished but creating went "
                            "from %u",
                            finished, prev->creating);
        }
    }

    if (c->ledger) {
        /* Leases our threads held at the snapshot: at least acquired(before)
         * - released(after); each is counted busy. */
        int64_t held_at_least = (int64_t)before[ACQUIRED] - (int64_t)after[RELEASED];
        if (held_at_least > (int64_t)s->busy)
            return fail(why, whylen, s, "threads hold at least %" PRId64 " leases, busy %u",
                        held_at_least, s->busy);
        if (before[ACQUIRED] > s->checkouts)
            return fail(why, whylen, s, "threads got %" PRIu64 " leases, stats count fewer",
                        before[ACQUIRED]);
        if (s->checkouts > after[ACQUIRED_AFTER] + c->threads)
            return fail(why, whylen, s,
                        "stats count more checkouts than threads got (%" PRIu64 " + %u)",
                        after[ACQUIRED_AFTER], c->threads);
        if (before[DESTROY_DONE] > s->reported_broken ||
            s->reported_broken > after[DESTROY_BEGUN])
            return fail(why, whylen, s,
                        "reported_broken outside [%" PRIu64 ", %" PRIu64 "] of the calls made",
                        before[DESTROY_DONE], after[DESTROY_BEGUN]);
        if (before[TIMEOUTS] > s->timeouts)
            return fail(why, whylen, s, "threads saw %" PRIu64 " timeouts, stats count fewer",
                        before[TIMEOUTS]);
    }
    if (c->factory) {
        /* create() counts a resource before the pool does (it is `creating`
         * meanwhile); destroy() counts it before the pool does (it is
         * `destroying` meanwhile). */
        if (before[FK_CREATED] > s->created + s->creating || s->created > after[FK_CREATED_AFTER])
            return fail(why, whylen, s, "factory made %" PRIu64 "..%" PRIu64 " resources",
                        before[FK_CREATED], after[FK_CREATED_AFTER]);
        if (before[FK_DESTROYED] > s->destroyed + s->destroying ||
            s->destroyed > after[FK_DESTROYED_AFTER])
            return fail(why, whylen, s, "factory destroyed %" PRIu64 "..%" PRIu64 " resources",
                        before[FK_DESTROYED], after[FK_DESTROYED_AFTER]);
    }
    return true;
}

/* Read the factory's created and destroyed counters in one hold of its lock. */
static void factory_counts(fake_factory_t *f, uint64_t *created, uint64_t *destroyed)
{
    if (!f) {
        *created = *destroyed = 0;
        return;
    }
    pthread_mutex_lock(&f->lock);
    *created = f->created;
    *destroyed = f->destroyed;
    pthread_mutex_unlock(&f->lock);
}

/* The checker thread: sample, check, record the first violation. */
static void *checker_main(void *arg)
{
    stats_checker_t *c = arg;
    respool_stats_t prev;
    bool have_prev = false;
    op_ledger_t none;
    memset(&none, 0, sizeof none);
    op_ledger_t *l = c->ledger ? c->ledger : &none;
    while (!atomic_load(&c->stop)) {
        uint64_t before[5], after[5];
        before[0] = atomic_load(&l->acquired);
        before[1] = atomic_load(&l->destroy_done);
        before[2] = atomic_load(&l->timeouts);
        factory_counts(c->factory, &before[3], &before[4]);
        respool_stats_t s;
        respool_stats(c->pool, &s);
        after[0] = atomic_load(&l->released);
        after[1] = atomic_load(&l->destroy_begun);
        after[2] = atomic_load(&l->acquired);
        factory_counts(c->factory, &after[3], &after[4]);
        /* Read after the snapshot: the test sets it before it calls
         * respool_shutdown, so if it is still clear, shutdown had not begun
         * when the snapshot was taken. */
        bool shutdown_called_by_now = atomic_load(&c->shutdown_called);

        c->samples++;
        if (s.state == RESPOOL_SHUTDOWN)
            c->shutdown_samples++;
        if (s.waiting > c->max_waiting_seen)
            c->max_waiting_seen = s.waiting;
        if (s.busy > c->max_busy_seen)
            c->max_busy_seen = s.busy;
        if (s.creating > c->max_creating_seen)
            c->max_creating_seen = s.creating;
        char why[sizeof c->first - 64];
        if (!check_sample(c, &s, have_prev ? &prev : NULL, shutdown_called_by_now, before,
                          after, why, sizeof why)) {
            if (c->violations++ == 0)
                snprintf(c->first, sizeof c->first, "sample %" PRIu64 ": %s", c->samples, why);
        }
        prev = s;
        have_prev = true;
        struct timespec pause = {0, c->sleepy ? 50000 : 20000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

void checker_start(stats_checker_t *c)
{
    atomic_store(&c->stop, false);
    if (stress_thread_start(&c->thread, NULL, checker_main, c) != 0) {
        fprintf(stderr, "stress_kit: cannot start the checker thread\n");
        abort();
    }
}

bool checker_stop(stats_checker_t *c)
{
    atomic_store(&c->stop, true);
    return stress_thread_join(&c->thread, 10000);
}
