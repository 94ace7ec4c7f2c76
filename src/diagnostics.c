/*
 * diagnostics.c — error names, logging, the stats snapshot, the factory's
 * last error and the Prometheus rendering.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

const char *respool_strerror(int code)
{
    switch (code) {
    case RESPOOL_OK: return "success";
    case RESPOOL_ETIMEDOUT: return "timed out waiting for a resource";
    case RESPOOL_EFULL: return "no idle resource and no room to make one";
    case RESPOOL_ESHUTDOWN: return "the pool is shutting down or has shut down";
    case RESPOOL_EINVAL: return "invalid argument, configuration or lease";
    case RESPOOL_EFACTORY: return "the factory failed to create a resource";
    case RESPOOL_ENOMEM: return "out of memory";
    case RESPOOL_EBUSY: return "shutdown deadline passed with leases still out";
    default: return "unknown respool error code";
    }
}

const char *respool_state_name(respool_state_t state)
{
    switch (state) {
    case RESPOOL_READY: return "ready";
    case RESPOOL_OVERFLOW: return "overflow";
    case RESPOOL_FULL: return "full";
    case RESPOOL_SHUTDOWN: return "shutdown";
    default: return "unknown";
    }
}

/* An snprintf that appends and keeps counting past the end of the buffer. */
typedef struct text_out {
    char *buf;
    size_t cap, len;
} text_out_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void text_append(text_out_t *t, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    size_t room = t->len < t->cap ? t->cap - t->len : 0;
    int n = vsnprintf(room ? t->buf + t->len : NULL, room, format, args);
    va_end(args);
    if (n > 0)
        t->len += (size_t)n;
}

/* ---- logging -------------------------------------------------------------- */

void respool_log_discard(void *log_ctx, respool_log_level_t level, const char *message)
{
    (void)log_ctx;
    (void)level;
    (void)message;
}

/* Format a message and give it to config.log, or to stderr by default (ERROR
 * and WARN only). Never called with the pool lock held: the log callback is
 * user code. */
void pool_log(respool_t *pool, respool_log_level_t level, const char *format, ...)
{
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (pool->config.log)
        pool->config.log(pool->config.log_ctx, level, message);
    else if (level <= RESPOOL_LOG_WARN)
        fprintf(stderr, "respool: %s\n", message);
}

size_t respool_last_error(respool_t *pool, char *buf, size_t buflen)
{
    if (!pool) {
        if (buf && buflen)
            buf[0] = '\0';
        return 0;
    }
    pthread_mutex_lock(&pool->lock);
    size_t length = strlen(pool->last_error);
    if (buf && buflen)
        snprintf(buf, buflen, "%s", pool->last_error);
    pool_unlock(pool);
    return length;
}

/* ---- stats ------------------------------------------------------------------ */

void respool_stats(respool_t *pool, respool_stats_t *out)
{
    if (!pool || !out)
        return;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&pool->lock);
    const respool_config_t *c = &pool->config;
    unsigned live = pool->idle + pool->busy;
    if (pool->shutting_down)
        out->state = RESPOOL_SHUTDOWN;
    else if (pool->idle > 0)
        out->state = RESPOOL_READY;
    else if (c->max_overflow > 0 && live + pool->creating < c->size + c->max_overflow)
        out->state = RESPOOL_OVERFLOW;
    else
        out->state = RESPOOL_FULL;
    out->size = c->size;
    out->max_overflow = c->max_overflow;
    out->idle = pool->idle;
    out->busy = pool->busy;
    out->overflow = live > c->size ? live - c->size : 0;
    out->creating = pool->creating;
    out->waiting = pool->waiters.count;
    out->created = pool->created;
    out->destroyed = pool->destroyed;
    out->checkouts = pool->checkouts;
    out->timeouts = pool->timeouts;
    out->create_failures = pool->create_failures;
    out->destroying = pool->doomed;
    out->waits = pool->waits;
    out->wait_ns_total = pool->wait_ns_total;
    out->wait_ns_max = pool->wait_ns_max;
    out->reported_broken = pool->reported_broken;
    out->validate_failures = pool->validate_failures;
    out->reset_failures = pool->reset_failures;
    out->dismissed = pool->dismissed;
    out->expired = pool->expired;
    out->leaks = pool->leaks;
    out->consecutive_create_failures = pool->consecutive_failures;
    out->evicted = pool->evicted;
    out->detached = pool->detached;
    out->shed = pool->shed;
    out->paused = pool->paused;
    uint64_t waited = pool->wait_histogram.count;
    histogram_summary(&pool->wait_histogram, pool->checkouts > waited ? pool->checkouts - waited : 0,
                      &out->checkout_wait);
    histogram_summary(&pool->hold_histogram, 0, &out->hold);
    histogram_summary(&pool->create_histogram, 0, &out->create);
    histogram_summary(&pool->validate_histogram, 0, &out->validate);
    pool_unlock(pool);
}

/* ---- who holds the resources ---------------------------------------------- */

/* Initial-exec: a plain %fs-relative load on the checkout fast path, even
 * in the shared library (4 bytes of static TLS). */
__attribute__((tls_model("initial-exec"))) _Thread_local uint32_t thread_id_cache;

uint32_t thread_id_fetch(void)
{
    thread_id_cache = (uint32_t)syscall(SYS_gettid);
    return thread_id_cache;
}

/* "file:line in function() thread N for 1.250 s" (the time only when asked
 * and the pool keeps times), appended to t. */
static void describe_holder(text_out_t *t, const respool_t *pool, const slot_t *s, int64_t now,
                            bool with_time)
{
    if (s->site)
        text_append(t, "%s in %s()", s->site, s->site_function ? s->site_function : "?");
    else
        text_append(t, "an unrecorded call site");
    if (s->site_thread)
        text_append(t, " thread %u", s->site_thread);
    if (with_time && pool->keep_times && s->checkout_ns)
        text_append(t, " for %.3f s", (double)(now - s->checkout_ns) / 1e9);
}

void leak_describe(const respool_t *pool, const slot_t *s, int64_t now, char *buf, size_t buflen)
{
    text_out_t t = {buf, buflen, 0};
    buf[0] = '\0';
    describe_holder(&t, pool, s, now, false);
}

/* The oldest leases out (lowest checkout sequence), at most `max`, oldest
 * first. O(slots): runs only when a checkout fails. */
static unsigned oldest_holders(const respool_t *pool, const slot_t **out, unsigned max)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < pool->slot_count; i++) {
        const slot_t *s = slot_at(pool, i);
        if (s->state != SLOT_BUSY)
            continue;
        unsigned at = n < max ? n++ : max;
        while (at > 0 && out[at - 1]->checkout_sequence > s->checkout_sequence) {
            if (at < max)
                out[at] = out[at - 1];
            at--;
        }
        if (at < max)
            out[at] = s;
    }
    return n;
}

#define CHECKOUT_ERROR_SIZE 1024
#define HOLDERS_NAMED 3

/* This thread's last checkout error ("" = none yet). A thread-local
 * buffer: no allocation, nothing to free at thread exit. */
static _Thread_local char checkout_error_text[CHECKOUT_ERROR_SIZE];

void checkout_error_record(respool_t *pool, int code, int64_t started_ns, const char *detail)
{
    char *buf = checkout_error_text;
    int64_t now = clock_now_ns();
    text_out_t t = {buf, CHECKOUT_ERROR_SIZE, 0};
    switch (code) {
    case RESPOOL_ETIMEDOUT:
        text_append(&t, "checkout timed out after %lld ms", (long long)((now - started_ns) / 1000000));
        break;
    case RESPOOL_EFULL: text_append(&t, "checkout found the pool full"); break;
    case RESPOOL_EFACTORY:
        text_append(&t, "checkout failed: the factory could not create a resource");
        break;
    case RESPOOL_ESHUTDOWN: text_append(&t, "checkout failed: the pool is shutting down"); break;
    default: text_append(&t, "checkout failed: %s", respool_strerror(code)); break;
    }
    if (detail)
        text_append(&t, " (%s)", detail);
    text_append(&t, ": %u total (%u busy, %u idle), %u waiting, %u creating", pool->idle + pool->busy,
                pool->busy, pool->idle, pool->waiters.count, pool->creating);
    if (pool->last_error[0])
        text_append(&t, "; last factory error: %s", pool->last_error);
    const slot_t *holders[HOLDERS_NAMED];
    unsigned n = oldest_holders(pool, holders, HOLDERS_NAMED);
    if (n == 0) {
        text_append(&t, "; no lease is out");
    } else {
        text_append(&t, "; oldest holders: ");
        for (unsigned k = 0; k < n; k++) {
            if (k)
                text_append(&t, "; ");
            describe_holder(&t, pool, holders[k], now, true);
        }
    }
    if (t.len >= CHECKOUT_ERROR_SIZE)
        memcpy(buf + CHECKOUT_ERROR_SIZE - 4, "...", 4); /* cut: say so */
}

size_t respool_checkout_error(char *buf, size_t buflen)
{
    const char *text = checkout_error_text;
    size_t length = strlen(text);
    if (buf && buflen) {
        size_t n = length < buflen - 1 ? length : buflen - 1;
        memcpy(buf, text, n);
        buf[n] = '\0';
    }
    return length;
}

/* ---- Prometheus text exposition ------------------------------------------ */

typedef struct metric {
    const char *name, *type, *help;
    double value;
} metric_t;

size_t respool_stats_prometheus(respool_t *pool, const char *name, char *buf, size_t buflen)
{
    if (buf && buflen)
        buf[0] = '\0';
    if (!pool)
        return 0;
    char label[128];
    const char *source = name && name[0] ? name : "default";
    size_t i = 0;
    for (; source[i] && i < sizeof label - 1; i++) {
        char ch = source[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == ':' || ch == '-';
        label[i] = ok ? ch : '_';
    }
    label[i] = '\0';

    respool_stats_t s;
    respool_stats(pool, &s);
    const metric_t metrics[] = {
        {"respool_size", "gauge", "Permanent resources configured.", s.size},
        {"respool_max_overflow", "gauge", "Overflow resources allowed.", s.max_overflow},
        {"respool_idle", "gauge", "Resources idle in the pool.", s.idle},
        {"respool_busy", "gauge", "Resources checked out.", s.busy},
        {"respool_overflow", "gauge", "Live resources beyond size.", s.overflow},
        {"respool_creating", "gauge", "create() calls in flight.", s.creating},
        {"respool_waiting", "gauge", "Threads waiting in checkout.", s.waiting},
        {"respool_destroying", "gauge", "Resources waiting for destroy().", s.destroying},
        {"respool_consecutive_create_failures", "gauge", "create() failures in a row.",
         s.consecutive_create_failures},
        {"respool_wait_seconds_max", "gauge", "Longest checkout wait.", s.wait_ns_max / 1e9},
        {"respool_created_total", "counter", "Resources created.", (double)s.created},
        {"respool_destroyed_total", "counter", "Resources destroyed.", (double)s.destroyed},
        {"respool_checkouts_total", "counter", "Successful checkouts.", (double)s.checkouts},
        {"respool_timeouts_total", "counter", "Checkouts that timed out or found the pool full.",
         (double)s.timeouts},
        {"respool_create_failures_total", "counter", "create() calls that failed.",
         (double)s.create_failures},
        {"respool_waits_total", "counter", "Checkouts that had to wait.", (double)s.waits},
        {"respool_wait_seconds_total", "counter", "Time spent waiting in checkout.",
         s.wait_ns_total / 1e9},
        {"respool_reported_broken_total", "counter", "Resources reported destroyed by users.",
         (double)s.reported_broken},
        {"respool_validate_failures_total", "counter", "validate() rejections.",
         (double)s.validate_failures},
        {"respool_reset_failures_total", "counter", "reset() rejections.",
         (double)s.reset_failures},
        {"respool_dismissed_total", "counter", "Overflow resources dismissed.",
         (double)s.dismissed},
        {"respool_expired_total", "counter", "Resources destroyed at end of life.",
         (double)s.expired},
        {"respool_leaks_total", "counter", "Leases reported past the leak threshold.",
         (double)s.leaks},
        {"respool_evicted_total", "counter", "Resources destroyed by evict-all.",
         (double)s.evicted},
        {"respool_detached_total", "counter", "Resources taken out for good.",
         (double)s.detached},
        {"respool_shed_total", "counter", "Checkouts refused at once by load shedding.",
         (double)s.shed},
        {"respool_paused", "gauge", "1 while the pool is paused.", s.paused},
    };
    text_out_t t = {buf, buf ? buflen : 0, 0};
    for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
        text_append(&t, "# HELP %s %s\n# TYPE %s %s\n%s{pool=\"%s\"} %.15g\n", metrics[m].name,
                    metrics[m].help, metrics[m].name, metrics[m].type, metrics[m].name, label,
                    metrics[m].value);
    }
    const struct {
        const char *name, *help;
        const respool_latency_t *latency;
    } summaries[] = {
        {"respool_checkout_wait_seconds", "Time inside checkout of successful checkouts.",
         &s.checkout_wait},
        {"respool_hold_seconds", "Checkout to checkin, while hold times are tracked.", &s.hold},
        {"respool_create_seconds", "Duration of create() calls.", &s.create},
        {"respool_validate_seconds", "Duration of validate() calls.", &s.validate},
    };
    for (size_t m = 0; m < sizeof summaries / sizeof summaries[0]; m++) {
        const char *metric = summaries[m].name;
        const respool_latency_t *l = summaries[m].latency;
        const struct {
            const char *quantile;
            uint64_t ns;
        } points[] = {{"0.5", l->p50_ns}, {"0.9", l->p90_ns}, {"0.99", l->p99_ns},
                      {"0.999", l->p999_ns}, {"1", l->max_ns}};
        text_append(&t, "# HELP %s %s\n# TYPE %s summary\n", metric, summaries[m].help, metric);
        for (size_t q = 0; q < sizeof points / sizeof points[0]; q++)
            text_append(&t, "%s{pool=\"%s\",quantile=\"%s\"} %.9g\n", metric, label,
                        points[q].quantile, points[q].ns / 1e9);
        text_append(&t, "%s_sum{pool=\"%s\"} %.9g\n%s_count{pool=\"%s\"} %llu\n", metric, label,
                    l->sum_ns / 1e9, metric, label, (unsigned long long)l->count);
    }
    text_append(&t, "# HELP respool_state Pool state (1 for the current one).\n"
                    "# TYPE respool_state gauge\n");
    for (int st = RESPOOL_READY; st <= RESPOOL_SHUTDOWN; st++)
        text_append(&t, "respool_state{pool=\"%s\",state=\"%s\"} %d\n", label,
                    respool_state_name((respool_state_t)st), s.state == (respool_state_t)st);
    return t.len;
}
