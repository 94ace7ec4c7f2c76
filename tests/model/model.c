/*
 * model.c — see model.h. Four parts: the byte decoder (and its inverse),
 * the reference model of the contract, the executor that runs a sequence
 * against a real pool and compares after every step, and the shrinker.
 *
 * How the model stays exact although the manager thread works
 * asynchronously:
 *
 *  - The test is single-threaded, so after a call returns, every piece of
 *    asynchronous work it caused is visible in the stats at once (a doomed
 *    resource in `destroying`, a planned create() in `creating`), with one
 *    exception: a create() that waits out the retry backoff, which happens
 *    only while create() is failing and the pool is short of `size`. So the
 *    pool is *settled* when creating == destroying == waiting == 0 and it is
 *    not (failing and short). Every step awaits that condition by polling
 *    respool_stats against a deadline, then compares every counter exactly.
 *  - Where the contract leaves a choice open, the model accepts the set of
 *    allowed outcomes and learns which one happened from the environment
 *    (the fake factory's own counters: was create() called, did it
 *    succeed), then checks the pool's stats against that branch exactly.
 *    The open choices are: a checkout with timeout 0 while the factory is
 *    failing (RESPOOL_EFACTORY at once inside the backoff, or a probe
 *    create() whose outcome decides), and everything while create() fails
 *    for good and the pool is short (below).
 *  - "Probing": fail_always on and the pool short of `size`. The manager
 *    then retries in the background forever, so the pool never settles and
 *    create_failures, consecutive_create_failures and waits cannot be
 *    predicted. The model then checks what stays exact (idle, busy,
 *    created, destroyed, checkouts, dismissed, ...), bounds the rest
 *    (creating <= 1, failures only grow and never reach 0 in a row), and
 *    takes their values from the pool; at the next settled point they must
 *    agree with the fake factory's own counts again.
 *
 * Which resource a checkout gets is part of the contract too (LIFO: the most
 * recently returned; FIFO: the least recently; a resize dismisses the oldest
 * idle first), so the model keeps the idle list as resource ids. Resources
 * made in parallel arrive in an order the contract does not fix; the model
 * keeps them as "unidentified" entries (any of that batch may be taken)
 * unless the configuration makes creates serial (max_creating 1).
 */
#include "model/model.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "respool.h"
#include "support/fake_factory.h"

/* ======================================================================== */
/* Decoding                                                                  */
/* ======================================================================== */

/* How many of the 64 opcode values stand for each kind: checkouts and
 * checkins dominate, shutdown is rare (after it little else can happen). */
static const uint8_t kind_weight[MODEL_OP_KIND_COUNT] = {
    [MODEL_OP_CHECKOUT] = 20, [MODEL_OP_CHECKIN] = 14,   [MODEL_OP_DESTROYED] = 6,
    [MODEL_OP_RESIZE] = 7,    [MODEL_OP_SHUTDOWN] = 1,   [MODEL_OP_FAIL_NEXT] = 4,
    [MODEL_OP_FAIL_ALWAYS] = 6, [MODEL_OP_BAD_LEASE] = 6,
};

#define OPCODE_RANGE 64
#define CONFIG_BYTES 3
#define PREFILL_FAILS_NIBBLE 0xF0

/* The kind an opcode byte stands for. */
static uint8_t kind_of_opcode(uint8_t opcode)
{
    unsigned v = opcode % OPCODE_RANGE;
    for (uint8_t k = 0; k < MODEL_OP_KIND_COUNT; k++) {
        if (v < kind_weight[k])
            return k;
        v -= kind_weight[k];
    }
    return MODEL_OP_CHECKOUT; /* unreachable: the weights add up to 64 */
}

/* The smallest opcode byte that stands for a kind (its canonical encoding). */
static uint8_t opcode_of_kind(uint8_t kind)
{
    unsigned v = 0;
    for (uint8_t k = 0; k < kind; k++)
        v += kind_weight[k];
    return (uint8_t)v;
}

/* Does an operation of this kind read an argument byte? */
static bool kind_takes_arg(uint8_t kind)
{
    return kind != MODEL_OP_CHECKOUT && kind != MODEL_OP_SHUTDOWN;
}

void model_decode(const uint8_t *data, size_t len, size_t max_ops, model_seq_t *seq)
{
    uint8_t config[CONFIG_BYTES] = {0};
    for (size_t i = 0; i < CONFIG_BYTES && i < len; i++)
        config[i] = data[i];
    memset(seq, 0, sizeof *seq);
    seq->config.size = config[0] % 4;
    seq->config.max_overflow = config[1] % 4;
    if (seq->config.size == 0 && seq->config.max_overflow == 0)
        seq->config.size = 1;
    seq->config.fifo = config[2] & 1;
    seq->config.full_factory = config[2] & 2;
    seq->config.overflow_kept = config[2] & 4;
    seq->config.serial = config[2] & 8;
    seq->config.prefill_fails = (config[2] & PREFILL_FAILS_NIBBLE) == PREFILL_FAILS_NIBBLE;

    if (max_ops > MODEL_MAX_OPS)
        max_ops = MODEL_MAX_OPS;
    size_t pos = CONFIG_BYTES;
    while (seq->count < max_ops && pos < len) {
        model_op_t op = {kind_of_opcode(data[pos++]), 0};
        if (kind_takes_arg(op.kind))
            op.arg = pos < len ? data[pos++] : 0;
        seq->ops[seq->count++] = op;
    }
}

size_t model_encode(const model_seq_t *seq, uint8_t *out, size_t cap)
{
    const model_config_t *c = &seq->config;
    uint8_t bytes[CONFIG_BYTES] = {
        (uint8_t)c->size, (uint8_t)c->max_overflow,
        (uint8_t)((c->fifo ? 1 : 0) | (c->full_factory ? 2 : 0) | (c->overflow_kept ? 4 : 0) |
                  (c->serial ? 8 : 0) | (c->prefill_fails ? PREFILL_FAILS_NIBBLE : 0))};
    size_t n = 0;
    for (size_t i = 0; i < CONFIG_BYTES; i++, n++)
        if (n < cap)
            out[n] = bytes[i];
    for (size_t i = 0; i < seq->count; i++) {
        if (n < cap)
            out[n] = opcode_of_kind(seq->ops[i].kind);
        n++;
        if (kind_takes_arg(seq->ops[i].kind)) {
            if (n < cap)
                out[n] = seq->ops[i].arg;
            n++;
        }
    }
    return n;
}

/* splitmix64: the byte stream a seed stands for. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void model_seq_from_seed(uint64_t seed, size_t steps, model_seq_t *seq)
{
    if (steps > MODEL_MAX_OPS)
        steps = MODEL_MAX_OPS;
    uint8_t bytes[CONFIG_BYTES + 2 * MODEL_MAX_OPS];
    size_t len = CONFIG_BYTES + 2 * steps; /* enough: an operation takes at most 2 bytes */
    uint64_t state = seed;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t word = splitmix64(&state);
        for (size_t k = 0; k < 8 && i + k < len; k++)
            bytes[i + k] = (uint8_t)(word >> (8 * k));
    }
    model_decode(bytes, len, steps, seq);
}

/* ======================================================================== */
/* Formatting                                                                */
/* ======================================================================== */

/* The arguments of the operations, decoded from the raw byte. */
static unsigned op_pick(const model_op_t *op) { return op->arg & 0x1F; }
static bool op_breaks(const model_op_t *op) { return op->arg >= 0xE0; }
static unsigned op_resize_size(const model_op_t *op) { return (op->arg % 16) % (MODEL_MAX_SIZE + 1); }
static unsigned op_resize_overflow(const model_op_t *op) { return (op->arg / 16) % (MODEL_MAX_OVERFLOW + 1); }
static int op_fail_count(const model_op_t *op) { return 1 + op->arg % 3; }
static bool op_fail_on(const model_op_t *op) { return op->arg % 3 == 0; }
static unsigned op_bad_variant(const model_op_t *op) { return op->arg % MODEL_BAD_COUNT; }
static bool op_bad_via_destroyed(const model_op_t *op) { return op->arg & 8; }
static unsigned op_bad_pick(const model_op_t *op) { return op->arg >> 4; }

static const char *const bad_lease_names[MODEL_BAD_COUNT] = {
    [MODEL_BAD_STALE] = "stale copy",        [MODEL_BAD_ZEROED] = "zeroed",
    [MODEL_BAD_RESOURCE] = "altered resource", [MODEL_BAD_GENERATION] = "altered generation",
    [MODEL_BAD_SLOT] = "altered slot",       [MODEL_BAD_FOREIGN] = "foreign pool",
    [MODEL_BAD_NULL] = "NULL",
};

void model_format_op(const model_op_t *op, char *buf, size_t len)
{
    switch (op->kind) {
    case MODEL_OP_CHECKOUT:
        snprintf(buf, len, "checkout(timeout 0)");
        break;
    case MODEL_OP_CHECKIN:
        snprintf(buf, len, "checkin(held lease pick %u%s)", op_pick(op),
                 op_breaks(op) ? ", broken first" : "");
        break;
    case MODEL_OP_DESTROYED:
        snprintf(buf, len, "destroyed(held lease pick %u)", op_pick(op));
        break;
    case MODEL_OP_RESIZE:
        snprintf(buf, len, "resize(size %u, max_overflow %u)", op_resize_size(op),
                 op_resize_overflow(op));
        break;
    case MODEL_OP_SHUTDOWN:
        snprintf(buf, len, "shutdown(timeout 0)");
        break;
    case MODEL_OP_FAIL_NEXT:
        snprintf(buf, len, "factory: fail next %d create()", op_fail_count(op));
        break;
    case MODEL_OP_FAIL_ALWAYS:
        snprintf(buf, len, "factory: fail always %s", op_fail_on(op) ? "on" : "off");
        break;
    case MODEL_OP_BAD_LEASE:
        snprintf(buf, len, "%s(%s lease, pick %u)",
                 op_bad_via_destroyed(op) ? "destroyed" : "checkin",
                 bad_lease_names[op_bad_variant(op)], op_bad_pick(op));
        break;
    default:
        snprintf(buf, len, "unknown op %u", op->kind);
    }
}

/* The configuration in one line. */
static void format_config(const model_config_t *c, char *buf, size_t len)
{
    snprintf(buf, len,
             "size %u, max_overflow %u, %s, factory %s, overflow %s, creates %s, prefill %s",
             c->size, c->max_overflow, c->fifo ? "FIFO" : "LIFO",
             c->full_factory ? "with validate/reset" : "create/destroy only",
             c->overflow_kept ? "kept idle (overflow_idle_ms 1 h)" : "dismissed at checkin",
             c->serial ? "one at a time" : "parallel",
             c->prefill_fails ? "first create() fails" : "ok");
}

void model_print_seq(FILE *out, const model_seq_t *seq)
{
    char line[256];
    format_config(&seq->config, line, sizeof line);
    fprintf(out, "  config: %s\n", line);
    for (size_t i = 0; i < seq->count; i++) {
        model_format_op(&seq->ops[i], line, sizeof line);
        fprintf(out, "  %3zu. %s\n", i + 1, line);
    }
    uint8_t bytes[CONFIG_BYTES + 2 * MODEL_MAX_OPS];
    size_t n = model_encode(seq, bytes, sizeof bytes);
    fprintf(out, "  bytes (hex, for build/fuzz/fuzz_model after xxd -r -p): ");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%02x", bytes[i]);
    fprintf(out, "\n");
}

/* ======================================================================== */
/* The model                                                                 */
/* ======================================================================== */

#define MAX_LIVE 64        /* far above any capacity the decoder can make */
#define STALE_KEPT 8       /* leases given back, kept for doubled checkins */
#define UNIDENTIFIED 0u    /* an idle entry made in parallel: any of its batch */
#define FRESH_PENDING (~0u) /* an idle entry a refill will make: id known once settled */
#define OVERFLOW_KEPT_MS (3600L * 1000)

typedef struct held_lease {
    respool_lease_t lease;
    unsigned id;  /* the fake factory's resource id */
    bool broken;  /* fake_break() was called on it */
} held_lease_t;

/* What the pool must look like at the next settled point. */
typedef struct model {
    /* The configuration now (resize changes it). */
    unsigned size, max_overflow;
    bool fifo, full_factory, overflow_kept, serial;

    /* The idle list, [0] the least recently returned; entries are resource
     * ids, UNIDENTIFIED or FRESH_PENDING. */
    unsigned idle_ids[MAX_LIVE];
    unsigned idle;
    held_lease_t held[MAX_LIVE];
    unsigned held_count;
    /* Ids behind the UNIDENTIFIED idle entries, and how many of those
     * entries were destroyed (resize, shutdown) since the last check. */
    unsigned unidentified_ids[MAX_LIVE];
    unsigned unidentified_count;
    unsigned unidentified_lost;
    unsigned known_resources; /* fake ids 1..this are accounted for */

    /* Counters of respool_stats, predicted. */
    uint64_t created, destroyed, checkouts, timeouts, create_failures, waits;
    uint64_t reported_broken, reset_failures, dismissed;
    unsigned consecutive_failures;
    bool create_failures_known;  /* false: learnt from the pool at the next settle */
    bool consecutive_known;
    unsigned waits_slack;        /* checkouts that may or may not have queued */

    /* The fake factory's knobs (environment). */
    int fail_next;
    bool fail_next_known;
    bool fail_always;

    bool shutdown, shutdown_done;
    /* fail_always and short of size: the manager probes in the background. */
    bool probing;

    respool_lease_t stale[STALE_KEPT];
    unsigned stale_count, stale_next;

    unsigned planted_idle_error; /* model_options_t.plant_model_fault */
} model_t;

/* The fake factory's counters at one instant. */
typedef struct fake_counts {
    uint64_t create_calls, created, create_failed, destroyed;
    unsigned count;
    int fail_next;
} fake_counts_t;

/* One run: the pool, its factory, the model and where we are. */
typedef struct runner {
    const model_seq_t *seq;
    const model_options_t *options;
    model_result_t *result;
    respool_t *pool;
    fake_factory_t *fake;
    model_t m;
    fake_counts_t baseline; /* the factory's counts when this pool was made */
    size_t step;
    char outcome[256]; /* what the current step did, for the trace */
} runner_t;

static unsigned wedged_pools;
/* The fake factory of the last run, kept for the next: it is 512 KiB, and
 * mapping and touching that afresh for every run is a good part of a short
 * run's cost (under ASan especially). A wedged run's factory is not kept. */
static fake_factory_t *spare_factory;
/* For crash handlers and the watchdog: the run in progress. */
static _Atomic(const runner_t *) running;

unsigned model_wedged_pools(void)
{
    return wedged_pools;
}

/* CLOCK_MONOTONIC in microseconds: deadlines and the watchdog. */
static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Sleep for us microseconds (only while polling for a settled pool). */
static void pause_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the watchdog --------------------------------------------------------- */

/* A pool call that blocks (checkout waiting for its create(), shutdown for
 * destroys, create for its prefill) and never returns cannot be seen by the
 * step's comparison. With model_options_t.watchdog, a thread that lives as
 * long as the run notes a call outstanding longer than its bound, prints
 * the sequence and step, and aborts (the test's crash handler reports
 * that). It ends with the run: a thread left running would, among other
 * things, make ThreadSanitizer sleep a second at every process exit. */
static _Atomic int64_t call_started_us; /* 0: no pool call in progress */
static _Atomic long call_bound_ms;

typedef struct watchdog {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t stop_signal;
    bool stop;
} watchdog_t;


/* The watchdog thread: every 50 ms until stopped, abort if a pool call has
 * outlived its bound. */
static void *watchdog_main(void *arg)
{
    watchdog_t *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += 50 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->stop_signal, &w->lock, &until);
        int64_t started = atomic_load(&call_started_us);
        if (started && monotonic_us() - started > (int64_t)atomic_load(&call_bound_ms) * 1000) {
            fprintf(stderr, "model: a pool call has not returned for %ld ms (a lost wake-up?)\n",
                    atomic_load(&call_bound_ms));
            model_describe_running(stderr);
            fflush(NULL); /* a trace in a buffered stream */
            abort();
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Start the run's watchdog; false if no thread could be started (the run
 * then goes on without one). */
static bool watchdog_start(watchdog_t *w)
{
    w->stop = false;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->stop_signal, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&w->thread, NULL, watchdog_main, w) == 0)
        return true;
    pthread_cond_destroy(&w->stop_signal);
    pthread_mutex_destroy(&w->lock);
    return false;
}

/* Stop and join the run's watchdog. */
static void watchdog_stop(watchdog_t *w)
{
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->stop_signal);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->stop_signal);
    pthread_mutex_destroy(&w->lock);
}

/* Around every pool call that may block. */
static void call_begin(const runner_t *r)
{
    long bound = r->options->settle_ms * 2;
    atomic_store(&call_bound_ms, bound < 2000 ? 2000 : bound);
    atomic_store(&call_started_us, monotonic_us());
}

/* The pool call returned. */
static void call_end(void)
{
    atomic_store(&call_started_us, 0);
}

/* Record a failure of the current step (the first one wins). Returns false,
 * so callers can `return fail(...)`. */
__attribute__((format(printf, 2, 3))) static bool fail(runner_t *r, const char *format, ...)
{
    if (r->result->failed)
        return false;
    r->result->failed = true;
    r->result->step = r->step;
    char op[128] = "setup";
    if (r->step == r->seq->count)
        snprintf(op, sizeof op, "teardown");
    else if (r->step < r->seq->count)
        model_format_op(&r->seq->ops[r->step], op, sizeof op);
    int n = snprintf(r->result->message, sizeof r->result->message, "%s: ", op);
    if (n < 0 || (size_t)n >= sizeof r->result->message)
        return false;
    va_list args;
    va_start(args, format);
    vsnprintf(r->result->message + n, sizeof r->result->message - (size_t)n, format, args);
    va_end(args);
    return false;
}

/* Append to the current step's outcome text. */
__attribute__((format(printf, 2, 3))) static void note(runner_t *r, const char *format, ...)
{
    size_t used = strlen(r->outcome);
    va_list args;
    va_start(args, format);
    vsnprintf(r->outcome + used, sizeof r->outcome - used, format, args);
    va_end(args);
}

/* A consistent snapshot of the fake factory's counters and knobs. */
static fake_counts_t read_fake(fake_factory_t *f)
{
    pthread_mutex_lock(&f->lock);
    fake_counts_t c = {f->create_calls, f->created, f->create_failed, f->destroyed, f->count,
                       f->fail_next};
    pthread_mutex_unlock(&f->lock);
    return c;
}

/* The fake factory's id of a resource the pool handed out, or 0 if it is not
 * one the factory made (checked by address, never by reading through it). */
static unsigned resource_id(fake_factory_t *f, const void *resource)
{
    unsigned id = 0;
    pthread_mutex_lock(&f->lock);
    for (unsigned i = 0; i < f->count && !id; i++)
        if (f->all[i] == resource)
            id = i + 1;
    pthread_mutex_unlock(&f->lock);
    return id;
}

/* Has destroy() been called for resource `id` (or is it unknown)? */
static bool resource_destroyed(fake_factory_t *f, unsigned id)
{
    pthread_mutex_lock(&f->lock);
    fake_resource_t *res = id >= 1 && id <= f->count ? f->all[id - 1] : NULL;
    pthread_mutex_unlock(&f->lock);
    return !res || atomic_load(&res->destroyed) != 0;
}

/* Where resource `id` is among the model's leases, or -1. */
static int held_index_of_id(const model_t *m, unsigned id)
{
    for (unsigned i = 0; i < m->held_count; i++)
        if (m->held[i].id == id)
            return (int)i;
    return -1;
}

/* Where resource `id` is in the model's idle list, or -1. */
static int idle_index_of_id(const model_t *m, unsigned id)
{
    for (unsigned i = 0; i < m->idle; i++)
        if (m->idle_ids[i] == id)
            return (int)i;
    return -1;
}

/* Where `id` is among the ids behind unidentified idle entries, or -1. */
static int unidentified_index_of_id(const model_t *m, unsigned id)
{
    for (unsigned i = 0; i < m->unidentified_count; i++)
        if (m->unidentified_ids[i] == id)
            return (int)i;
    return -1;
}

/* Forget one id behind the unidentified entries (it was taken or destroyed). */
static void unidentified_remove(model_t *m, unsigned index)
{
    m->unidentified_ids[index] = m->unidentified_ids[--m->unidentified_count];
}

/* Take the idle entry at `index` out of the idle list. */
static unsigned idle_remove_at(model_t *m, unsigned index)
{
    unsigned id = m->idle_ids[index];
    memmove(&m->idle_ids[index], &m->idle_ids[index + 1], (m->idle - index - 1) * sizeof(unsigned));
    m->idle--;
    return id;
}

/* An idle resource the pool destroys (resize, shutdown): oldest first. */
static void idle_destroy_oldest(model_t *m)
{
    unsigned id = idle_remove_at(m, 0);
    if (id == UNIDENTIFIED)
        m->unidentified_lost++;
    m->destroyed++;
}

/* An entry becomes the most recently returned idle resource. */
static bool idle_push_newest(runner_t *r, unsigned id)
{
    if (r->m.idle == MAX_LIVE)
        return fail(r, "model: more than %d idle resources", MAX_LIVE);
    r->m.idle_ids[r->m.idle++] = id;
    return true;
}

/* Keep a copy of a lease just given back, for doubled checkins later. */
static void remember_stale(model_t *m, const respool_lease_t *lease)
{
    m->stale[m->stale_next] = *lease;
    m->stale_next = (m->stale_next + 1) % STALE_KEPT;
    if (m->stale_count < STALE_KEPT)
        m->stale_count++;
}

/* The lease at `index` is no longer held. */
static void held_remove(model_t *m, unsigned index)
{
    memmove(&m->held[index], &m->held[index + 1], (m->held_count - index - 1) * sizeof m->held[0]);
    m->held_count--;
}

/* After every change: is the pool short of `size`? Then either the manager
 * refills it (the factory will succeed sooner or later: every pending
 * injected failure is used up first, then the rest succeed) or, with
 * fail_always on, it probes in the background until something changes. */
static bool model_replenish(runner_t *r)
{
    model_t *m = &r->m;
    unsigned live = m->idle + m->held_count;
    if (m->shutdown || live >= m->size) {
        m->probing = false;
        return true;
    }
    if (m->fail_always) {
        if (!m->probing) {
            m->probing = true;
            m->create_failures_known = m->consecutive_known = false;
            m->fail_next_known = false;
        }
        return true;
    }
    unsigned shortfall = m->size - live;
    for (unsigned i = 0; i < shortfall; i++)
        if (!idle_push_newest(r, FRESH_PENDING))
            return false;
    m->created += shortfall;
    if (m->fail_next_known && m->create_failures_known)
        m->create_failures += (uint64_t)m->fail_next;
    else
        m->create_failures_known = false;
    m->fail_next = 0; /* every injected failure is used up before a success */
    m->fail_next_known = true;
    m->consecutive_failures = 0; /* the refill ends with a success */
    m->consecutive_known = true;
    m->probing = false;
    return true;
}

/* ======================================================================== */
/* Settling and comparing                                                    */
/* ======================================================================== */

/* Nothing in flight, nothing left for the manager to do on its own. */
static bool stats_settled(const respool_stats_t *s)
{
    return s->creating == 0 && s->destroying == 0 && s->waiting == 0 &&
           (s->consecutive_create_failures == 0 || s->idle + s->busy >= s->size ||
            s->state == RESPOOL_SHUTDOWN);
}

/* Probing: the destroys are done and only the single probe may be in flight. */
static bool stats_probing_settled(const respool_stats_t *s)
{
    return s->destroying == 0 && s->waiting == 0 && s->creating <= 1 &&
           s->consecutive_create_failures > 0;
}

/* Poll respool_stats until pred holds or the deadline passes: yield for the
 * first 300 us (a destroy or create on the manager side is usually done by
 * then, and a sleep would cost a timer slack of ~50 us at least), then sleep
 * 50 us, then 500 us at a time (the retry backoff is milliseconds). An
 * awaited condition, never a fixed sleep. */
static bool await_stats(runner_t *r, bool (*pred)(const respool_stats_t *), long timeout_ms,
                        respool_stats_t *out)
{
    int64_t start = monotonic_us();
    int64_t deadline = start + (int64_t)timeout_ms * 1000;
    for (;;) {
        respool_stats(r->pool, out);
        if (pred(out))
            return true;
        int64_t now = monotonic_us();
        if (now >= deadline)
            return false;
        if (now - start < 300)
            sched_yield();
        else
            pause_us(now - start < 3000 ? 50 : 500);
    }
}

/* The stats the model predicts (creating as observed when probing). */
static respool_stats_t expected_stats(const model_t *m, unsigned creating)
{
    respool_stats_t e;
    memset(&e, 0, sizeof e);
    unsigned live = m->idle + m->held_count;
    if (m->shutdown)
        e.state = RESPOOL_SHUTDOWN;
    else if (m->idle > 0)
        e.state = RESPOOL_READY;
    else if (m->max_overflow > 0 && live + creating < m->size + m->max_overflow)
        e.state = RESPOOL_OVERFLOW;
    else
        e.state = RESPOOL_FULL;
    e.size = m->size;
    e.max_overflow = m->max_overflow;
    e.idle = m->idle + m->planted_idle_error;
    e.busy = m->held_count;
    e.overflow = live > m->size ? live - m->size : 0;
    e.creating = creating;
    e.created = m->created;
    e.destroyed = m->destroyed;
    e.checkouts = m->checkouts;
    e.timeouts = m->timeouts;
    e.create_failures = m->create_failures;
    e.waits = m->waits;
    e.reported_broken = m->reported_broken;
    e.reset_failures = m->reset_failures;
    e.dismissed = m->dismissed;
    e.consecutive_create_failures = m->consecutive_failures;
    return e;
}

/* The differences found in one comparison, as one line of text. */
typedef struct diff {
    char text[1200];
    size_t used;
} diff_t;

/* Note a field whose value differs from the model's. */
static void diff_add(diff_t *d, const char *field, unsigned long long want, unsigned long long got)
{
    if (want == got || d->used >= sizeof d->text)
        return;
    int n = snprintf(d->text + d->used, sizeof d->text - d->used, "%s%s: model %llu, pool %llu",
                     d->used ? "; " : "", field, want, got);
    if (n > 0)
        d->used += (size_t)n;
}

/* Note a difference described in words. */
static void diff_add_text(diff_t *d, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void diff_add_text(diff_t *d, const char *format, ...)
{
    if (d->used >= sizeof d->text)
        return;
    if (d->used) {
        int n = snprintf(d->text + d->used, sizeof d->text - d->used, "; ");
        if (n > 0)
            d->used += (size_t)n;
    }
    va_list args;
    va_start(args, format);
    int n = vsnprintf(d->text + d->used, sizeof d->text - d->used, format, args);
    va_end(args);
    if (n > 0)
        d->used += (size_t)n;
}

/* The invariants every snapshot must satisfy, whatever the model says. */
static void check_invariants(const respool_stats_t *s, diff_t *d)
{
    unsigned live = s->idle + s->busy;
    if (s->created != s->destroyed + s->destroying + live)
        diff_add_text(d, "invariant created == destroyed + destroying + idle + busy broken "
                         "(%llu != %llu + %u + %u)",
                      (unsigned long long)s->created, (unsigned long long)s->destroyed,
                      s->destroying, live);
    if (s->overflow != (live > s->size ? live - s->size : 0))
        diff_add_text(d, "invariant overflow == max(0, idle + busy - size) broken (%u)",
                      s->overflow);
    if (s->creating > 0 && live + s->creating > s->size + s->max_overflow)
        diff_add_text(d, "create() planned beyond capacity: idle %u + busy %u + creating %u > %u",
                      s->idle, s->busy, s->creating, s->size + s->max_overflow);
    if (s->waiting != 0)
        diff_add_text(d, "waiting %u with no thread in checkout", s->waiting);
    if (s->validate_failures || s->expired || s->leaks)
        diff_add_text(d, "validate_failures %llu, expired %llu, leaks %llu (none can happen here)",
                      (unsigned long long)s->validate_failures, (unsigned long long)s->expired,
                      (unsigned long long)s->leaks);
}

/* Compare a snapshot with the model. `probing`: only the fields that stay
 * exact while the manager probes are compared exactly. */
static void compare_stats(const model_t *m, const respool_stats_t *s, bool probing, diff_t *d)
{
    respool_stats_t e = expected_stats(m, probing ? s->creating : 0);
    if (e.state != s->state)
        diff_add_text(d, "state: model %s, pool %s", respool_state_name(e.state), respool_state_name(s->state));
    diff_add(d, "size", e.size, s->size);
    diff_add(d, "max_overflow", e.max_overflow, s->max_overflow);
    diff_add(d, "idle", e.idle, s->idle);
    diff_add(d, "busy", e.busy, s->busy);
    diff_add(d, "overflow", e.overflow, s->overflow);
    if (probing) {
        if (s->creating > 1)
            diff_add_text(d, "creating %u while probing (at most 1)", s->creating);
    } else {
        diff_add(d, "creating", 0, s->creating);
    }
    diff_add(d, "waiting", 0, s->waiting);
    diff_add(d, "created", e.created, s->created);
    diff_add(d, "destroyed", e.destroyed, s->destroyed);
    diff_add(d, "destroying", 0, s->destroying);
    diff_add(d, "checkouts", e.checkouts, s->checkouts);
    diff_add(d, "timeouts", e.timeouts, s->timeouts);
    diff_add(d, "reported_broken", e.reported_broken, s->reported_broken);
    diff_add(d, "reset_failures", e.reset_failures, s->reset_failures);
    diff_add(d, "dismissed", e.dismissed, s->dismissed);
    if (m->create_failures_known)
        diff_add(d, "create_failures", e.create_failures, s->create_failures);
    else if (s->create_failures < e.create_failures)
        diff_add_text(d, "create_failures went down: %llu -> %llu",
                      (unsigned long long)e.create_failures,
                      (unsigned long long)s->create_failures);
    if (m->consecutive_known)
        diff_add(d, "consecutive_create_failures", e.consecutive_create_failures,
                 s->consecutive_create_failures);
    if (s->waits < e.waits || s->waits > e.waits + m->waits_slack)
        diff_add_text(d, "waits: model %llu..%llu, pool %llu", (unsigned long long)e.waits,
                      (unsigned long long)(e.waits + m->waits_slack),
                      (unsigned long long)s->waits);
    check_invariants(s, d);
}

/* Account for the resources the factory made since the last check (the
 * refill's, which the model queued as FRESH_PENDING), and check that every
 * resource is alive exactly when the model has a place for it. Runs at a
 * settled point (no destroy in flight). */
static bool check_resources(runner_t *r)
{
    model_t *m = &r->m;
    fake_factory_t *f = r->fake;
    pthread_mutex_lock(&f->lock);
    unsigned count = f->count;
    pthread_mutex_unlock(&f->lock);

    unsigned pending = 0;
    for (unsigned i = 0; i < m->idle; i++)
        pending += m->idle_ids[i] == FRESH_PENDING;
    if (count - m->known_resources != pending)
        return fail(r, "the factory made %u new resources, the model expected %u",
                    count - m->known_resources, pending);
    unsigned next_id = m->known_resources + 1;
    for (unsigned i = 0; i < m->idle; i++) {
        if (m->idle_ids[i] != FRESH_PENDING)
            continue;
        if (m->serial) {
            m->idle_ids[i] = next_id++; /* one create at a time: they arrive in order */
        } else {
            m->idle_ids[i] = UNIDENTIFIED;
            m->unidentified_ids[m->unidentified_count++] = next_id++;
        }
    }
    m->known_resources = count;

    unsigned unidentified_dead = 0;
    for (unsigned id = 1; id <= count; id++) {
        bool dead = resource_destroyed(f, id);
        int u = unidentified_index_of_id(m, id);
        if (held_index_of_id(m, id) >= 0 || idle_index_of_id(m, id) >= 0) {
            if (dead)
                return fail(r, "resource #%u was destroyed but the model has it %s", id,
                            held_index_of_id(m, id) >= 0 ? "checked out" : "idle");
        } else if (u >= 0) {
            if (dead) {
                unidentified_dead++;
                unidentified_remove(m, (unsigned)u);
            }
        } else if (!dead) {
            return fail(r, "resource #%u is alive but is neither idle nor checked out in the model",
                        id);
        }
    }
    if (unidentified_dead != m->unidentified_lost)
        return fail(r, "%u unidentified idle resources were destroyed, the model expected %u",
                    unidentified_dead, m->unidentified_lost);
    m->unidentified_lost = 0;
    return true;
}

/* After a step: await the settled pool and compare it with the model. */
static bool settle_and_compare(runner_t *r)
{
    model_t *m = &r->m;
    respool_stats_t s;
    bool probing = m->probing;
    bool settled = await_stats(r, probing ? stats_probing_settled : stats_settled,
                               r->options->settle_ms, &s);
    diff_t d = {.used = 0};
    if (!settled)
        diff_add_text(&d, "did not settle within %ld ms (creating %u, destroying %u, waiting %u, "
                          "consecutive failures %u)",
                      r->options->settle_ms, s.creating, s.destroying, s.waiting,
                      s.consecutive_create_failures);
    compare_stats(m, &s, probing, &d);
    if (!probing && settled) {
        /* Settled: the pool's counts must agree with the factory's own. */
        fake_counts_t fc = read_fake(r->fake);
        fc.created -= r->baseline.created;
        fc.destroyed -= r->baseline.destroyed;
        fc.create_failed -= r->baseline.create_failed;
        if (s.created != fc.created || s.destroyed != fc.destroyed ||
            s.create_failures != fc.create_failed)
            diff_add_text(&d, "pool and factory disagree: created %llu/%llu, destroyed %llu/%llu, "
                              "create failures %llu/%llu",
                          (unsigned long long)s.created, (unsigned long long)fc.created,
                          (unsigned long long)s.destroyed, (unsigned long long)fc.destroyed,
                          (unsigned long long)s.create_failures,
                          (unsigned long long)fc.create_failed);
        if (!m->fail_next_known) {
            m->fail_next = fc.fail_next; /* the environment's state, now at rest */
            m->fail_next_known = true;
        } else if (fc.fail_next != m->fail_next) {
            /* Each create() call uses up one injected failure. */
            diff_add_text(&d, "injected failures left: model %d, factory %d (create() called "
                              "%s often than the model expects)",
                          m->fail_next, fc.fail_next, fc.fail_next < m->fail_next ? "more" : "less");
        }
    }
    if (probing && s.consecutive_create_failures == 0)
        diff_add_text(&d, "consecutive_create_failures 0 although every create() fails");
    if (d.used)
        return fail(r, "%s", d.text);
    /* What the model could not predict, it now takes from the pool (checked
     * above for the bounds it can vouch for). */
    m->waits = s.waits;
    m->waits_slack = 0;
    if (!m->create_failures_known)
        m->create_failures = s.create_failures;
    if (!m->consecutive_known)
        m->consecutive_failures = s.consecutive_create_failures;
    if (!probing)
        m->create_failures_known = m->consecutive_known = true;
    return check_resources(r);
}

/* ======================================================================== */
/* The operations                                                            */
/* ======================================================================== */

static bool expect_rc(runner_t *r, int rc, int want)
{
    if (rc != want)
        return fail(r, "returned %s, the model expects %s", respool_strerror(rc),
                    respool_strerror(want));
    return true;
}

/* A checkout succeeded: check the resource and record the lease. `expected_id`
 * is the id the model predicts, UNIDENTIFIED for any of the unidentified
 * batch. */
static bool take_lease(runner_t *r, const respool_lease_t *lease, unsigned expected_id)
{
    model_t *m = &r->m;
    if (!lease->resource)
        return fail(r, "RESPOOL_OK with a NULL resource");
    unsigned id = resource_id(r->fake, lease->resource);
    if (!id)
        return fail(r, "RESPOOL_OK with %p, not a resource the factory made", lease->resource);
    if (resource_destroyed(r->fake, id))
        return fail(r, "handed out resource #%u, which was destroyed", id);
    if (held_index_of_id(m, id) >= 0)
        return fail(r, "handed out resource #%u, which is already checked out", id);
    if (expected_id == UNIDENTIFIED) {
        int u = unidentified_index_of_id(m, id);
        if (u < 0)
            return fail(r, "handed out resource #%u, not one of the unidentified idle ones", id);
        unidentified_remove(m, (unsigned)u);
    } else if (id != expected_id) {
        return fail(r, "handed out resource #%u, the model expects #%u (%s)", id, expected_id,
                    m->fifo ? "FIFO: least recently returned" : "LIFO: most recently returned");
    }
    if (m->held_count == MAX_LIVE)
        return fail(r, "model: more than %d leases", MAX_LIVE);
    m->held[m->held_count++] = (held_lease_t){*lease, id, false};
    m->checkouts++;
    note(r, ": resource #%u", id);
    return true;
}

/* A failed checkout must leave lease->resource NULL and private_ as it was. */
static bool check_failed_lease(runner_t *r, const respool_lease_t *before,
                               const respool_lease_t *after)
{
    if (after->resource != NULL)
        return fail(r, "failed checkout left lease.resource %p", after->resource);
    if (memcmp(&before->private_, &after->private_, sizeof before->private_) != 0)
        return fail(r, "failed checkout changed the lease's private members");
    return true;
}

/* respool_checkout(pool, 0, &lease), step 2 and 3 of its description in
 * docs/api.md. */
static bool op_checkout(runner_t *r)
{
    model_t *m = &r->m;
    respool_lease_t lease, before;
    memset(&lease, 0x5A, sizeof lease);
    before = lease;
    fake_counts_t fc0 = read_fake(r->fake);
    call_begin(r);
    int rc = respool_checkout(r->pool, 0, &lease);
    call_end();
    fake_counts_t fc1 = read_fake(r->fake);
    note(r, "%s", respool_strerror(rc));
    if (rc != RESPOOL_OK && !check_failed_lease(r, &before, &lease))
        return false;

    if (m->shutdown)
        return expect_rc(r, rc, RESPOOL_ESHUTDOWN);
    if (m->idle > 0) {
        /* Step 2: an idle resource (validate() passes: nothing is broken
         * while idle). */
        if (!expect_rc(r, rc, RESPOOL_OK))
            return false;
        unsigned index = m->fifo ? 0 : m->idle - 1;
        unsigned want = idle_remove_at(m, index);
        return take_lease(r, &lease, want);
    }
    unsigned capacity = m->size + m->max_overflow;
    unsigned live = m->held_count; /* nothing idle */
    if (m->probing) {
        /* The contract leaves this open: the probe may be in flight (then it
         * counts against the room: RESPOOL_EFULL if it takes the last of
         * it), or the backoff runs (RESPOOL_EFACTORY at once), or a probe
         * starts and fails (RESPOOL_EFACTORY after a wait). */
        bool may_be_full = live + 1 >= capacity;
        if (live >= capacity) {
            if (!expect_rc(r, rc, RESPOOL_EFULL))
                return false;
        } else if (!(rc == RESPOOL_EFACTORY || (rc == RESPOOL_EFULL && may_be_full))) {
            return fail(r, "returned %s; while probing the model allows RESPOOL_EFACTORY%s",
                        respool_strerror(rc), may_be_full ? " or RESPOOL_EFULL" : "");
        }
        if (rc == RESPOOL_EFULL)
            m->timeouts++;
        m->waits_slack++;
        return true;
    }
    if (live >= capacity) {
        if (!expect_rc(r, rc, RESPOOL_EFULL))
            return false;
        m->timeouts++;
        return true;
    }
    /* Room and nothing idle: a create() for this checkout, or (factory
     * failing, inside its backoff) RESPOOL_EFACTORY at once. Which one is
     * open; the factory's counters tell which happened. */
    uint64_t calls = fc1.create_calls - fc0.create_calls;
    bool create_fails = m->fail_always || m->fail_next > 0;
    if (m->consecutive_failures == 0 && calls != 1)
        return fail(r, "%llu create() calls for a checkout of a healthy pool with room, want 1",
                    (unsigned long long)calls);
    if (calls > 1)
        return fail(r, "%llu create() calls for one checkout", (unsigned long long)calls);
    if (calls == 0) {
        note(r, " (in backoff, no create())");
        return expect_rc(r, rc, RESPOOL_EFACTORY);
    }
    m->waits++;
    if (m->fail_next > 0)
        m->fail_next--;
    if (create_fails) {
        note(r, " (its create() failed)");
        if (!expect_rc(r, rc, RESPOOL_EFACTORY))
            return false;
        m->create_failures++;
        m->consecutive_failures++;
        return true;
    }
    if (!expect_rc(r, rc, RESPOOL_OK))
        return false;
    m->created++;
    m->consecutive_failures = 0;
    if (fc1.count != fc0.count + 1)
        return fail(r, "the factory made %u resources for one checkout", fc1.count - fc0.count);
    m->known_resources = fc1.count;
    note(r, ", made for it");
    return take_lease(r, &lease, fc1.count); /* the one just made, handed over */
}

/* Pick a held lease by the operation's argument; -1 when none is held. */
static int pick_held(const model_t *m, unsigned pick)
{
    return m->held_count ? (int)(pick % m->held_count) : -1;
}

/* respool_checkin of a held lease (broken first: reset() rejects it), and
 * where the resource goes: the routing rules of docs/api.md, in order. */
static bool op_checkin(runner_t *r, unsigned pick, bool breaks)
{
    model_t *m = &r->m;
    int k = pick_held(m, pick);
    if (k < 0) {
        note(r, "nothing held: skipped");
        return true;
    }
    held_lease_t h = m->held[k];
    if (breaks) {
        fake_break(h.lease.resource);
        h.broken = true;
    }
    respool_lease_t lease = h.lease;
    int rc = respool_checkin(r->pool, &lease);
    note(r, "resource #%u: %s", h.id, respool_strerror(rc));
    if (!expect_rc(r, rc, RESPOOL_OK))
        return false;
    if (lease.resource != NULL)
        return fail(r, "lease.resource not cleared by checkin");
    remember_stale(m, &h.lease);
    held_remove(m, (unsigned)k);
    unsigned live = m->idle + m->held_count + 1; /* counting the one returned */
    /* reset() runs before routing, during shutdown too: docs/api.md says so
     * under respool_checkin ("reset() runs on every checkin, during shutdown
     * too") and commit 2ef6482 made the code do it, although three older
     * sentences of docs/api.md still say it is skipped once shutdown began. */
    if (m->full_factory && h.broken) {
        note(r, ", reset() false: destroyed");
        m->reset_failures++;
        m->destroyed++;
    } else if (m->shutdown) {
        note(r, ", destroyed (shutdown)");
        m->destroyed++;
    } else if (live > m->size + m->max_overflow) {
        note(r, ", beyond capacity: dismissed");
        m->dismissed++;
        m->destroyed++;
    } else if (live > m->size && !m->overflow_kept) {
        note(r, ", overflow: dismissed");
        m->dismissed++;
        m->destroyed++;
    } else {
        note(r, ", idle");
        if (!idle_push_newest(r, h.id))
            return false;
    }
    return model_replenish(r);
}

/* respool_destroyed of a held lease: destroyed, replaced if the pool is short. */
static bool op_destroyed(runner_t *r, unsigned pick)
{
    model_t *m = &r->m;
    int k = pick_held(m, pick);
    if (k < 0) {
        note(r, "nothing held: skipped");
        return true;
    }
    held_lease_t h = m->held[k];
    respool_lease_t lease = h.lease;
    int rc = respool_destroyed(r->pool, &lease);
    note(r, "resource #%u: %s", h.id, respool_strerror(rc));
    if (!expect_rc(r, rc, RESPOOL_OK))
        return false;
    if (lease.resource != NULL)
        return fail(r, "lease.resource not cleared by destroyed");
    remember_stale(m, &h.lease);
    held_remove(m, (unsigned)k);
    m->reported_broken++;
    m->destroyed++;
    return model_replenish(r);
}

/* respool_resize: argument check, shutdown check, then the shrink rule for
 * idle resources and the refill for growth. */
static bool op_resize(runner_t *r, unsigned size, unsigned max_overflow)
{
    model_t *m = &r->m;
    int rc = respool_resize(r->pool, size, max_overflow);
    note(r, "%s", respool_strerror(rc));
    if (size + max_overflow == 0)
        return expect_rc(r, rc, RESPOOL_EINVAL);
    if (m->shutdown)
        return expect_rc(r, rc, RESPOOL_ESHUTDOWN);
    if (!expect_rc(r, rc, RESPOOL_OK))
        return false;
    m->size = size;
    m->max_overflow = max_overflow;
    /* Idle beyond the new size is overflow: dismissed at once (oldest
     * first) when overflow_idle_ms is 0; kept for the reaper otherwise. */
    while (!m->overflow_kept && m->idle > 0 && m->idle + m->held_count > size) {
        idle_destroy_oldest(m);
        m->dismissed++;
    }
    if (r->options->plant_model_fault)
        m->planted_idle_error = 1;
    return model_replenish(r);
}

/* respool_shutdown: the first call destroys the idle; RESPOOL_OK once
 * nothing is out, RESPOOL_EBUSY at the deadline with leases out. */
static bool op_shutdown(runner_t *r, long timeout_ms)
{
    model_t *m = &r->m;
    bool probe_may_run = m->probing;
    call_begin(r);
    int rc = respool_shutdown(r->pool, timeout_ms);
    call_end();
    note(r, "%s", respool_strerror(rc));
    if (m->shutdown_done)
        return expect_rc(r, rc, RESPOOL_OK);
    if (!m->shutdown) {
        m->shutdown = true;
        while (m->idle > 0)
            idle_destroy_oldest(m); /* not counted as dismissed */
    }
    m->probing = false;
    if (m->held_count > 0) {
        if (!expect_rc(r, rc, RESPOOL_EBUSY))
            return false;
    } else if (probe_may_run && timeout_ms == 0) {
        /* A probe create() may be running: it counts as outstanding. */
        if (rc != RESPOOL_OK && rc != RESPOOL_EBUSY)
            return fail(r, "returned %s; with a probe perhaps running the model allows "
                           "RESPOOL_OK or RESPOOL_EBUSY",
                        respool_strerror(rc));
    } else if (!expect_rc(r, rc, RESPOOL_OK)) {
        return false;
    }
    if (rc == RESPOOL_OK) {
        /* OK means every destroy() has returned, right now. */
        m->shutdown_done = true;
        respool_stats_t s;
        respool_stats(r->pool, &s);
        if (s.destroying != 0 || s.destroyed != m->destroyed || s.busy != 0 || s.creating != 0)
            return fail(r, "RESPOOL_OK before the end: destroying %u, destroyed %llu (model "
                           "%llu), busy %u, creating %u",
                        s.destroying, (unsigned long long)s.destroyed,
                        (unsigned long long)m->destroyed, s.busy, s.creating);
    }
    return true;
}

/* The factory fails its next `count` create() calls. */
static bool op_fail_next(runner_t *r, int count)
{
    fake_set_fail_next(r->fake, count);
    r->m.fail_next = count;
    r->m.fail_next_known = !r->m.probing; /* probes use them up meanwhile */
    return true;
}

/* The factory fails every create() while on. */
static bool op_fail_always(runner_t *r, bool on)
{
    fake_set_fail_always(r->fake, on);
    r->m.fail_always = on;
    return model_replenish(r); /* off while probing: the pool refills */
}

static unsigned char foreign_pool_marker;

/* Checkin or destroyed of a lease that is not current: RESPOOL_EINVAL, and
 * neither the pool nor the lease changes. */
static bool op_bad_lease(runner_t *r, unsigned variant, bool via_destroyed, unsigned pick)
{
    model_t *m = &r->m;
    respool_lease_t lease;
    memset(&lease, 0, sizeof lease);
    int k = pick_held(m, pick);
    bool from_held = variant == MODEL_BAD_RESOURCE || variant == MODEL_BAD_GENERATION ||
                     variant == MODEL_BAD_SLOT || variant == MODEL_BAD_FOREIGN;
    if (variant == MODEL_BAD_STALE && m->stale_count > 0) {
        lease = m->stale[pick % m->stale_count];
    } else if (from_held && k >= 0) {
        lease = m->held[k].lease;
        if (variant == MODEL_BAD_RESOURCE)
            lease.resource = &foreign_pool_marker;
        else if (variant == MODEL_BAD_GENERATION)
            lease.private_.generation++;
        else if (variant == MODEL_BAD_SLOT)
            lease.private_.slot++;
        else
            lease.private_.pool = &foreign_pool_marker;
    } else if (variant != MODEL_BAD_NULL && variant != MODEL_BAD_ZEROED) {
        note(r, "(none to copy: zeroed) ");
    }
    respool_lease_t before = lease;
    respool_lease_t *arg = variant == MODEL_BAD_NULL ? NULL : &lease;
    int rc = via_destroyed ? respool_destroyed(r->pool, arg) : respool_checkin(r->pool, arg);
    note(r, "%s", respool_strerror(rc));
    if (!expect_rc(r, rc, RESPOOL_EINVAL))
        return false;
    if (memcmp(&before, &lease, sizeof lease) != 0)
        return fail(r, "RESPOOL_EINVAL but the lease was changed");
    return true;
}

/* Run one operation: the call, the model's transition, then settle and
 * compare. */
static bool run_op(runner_t *r, const model_op_t *op)
{
    bool ok;
    switch (op->kind) {
    case MODEL_OP_CHECKOUT: ok = op_checkout(r); break;
    case MODEL_OP_CHECKIN: ok = op_checkin(r, op_pick(op), op_breaks(op)); break;
    case MODEL_OP_DESTROYED: ok = op_destroyed(r, op_pick(op)); break;
    case MODEL_OP_RESIZE: ok = op_resize(r, op_resize_size(op), op_resize_overflow(op)); break;
    case MODEL_OP_SHUTDOWN: ok = op_shutdown(r, 0); break;
    case MODEL_OP_FAIL_NEXT: ok = op_fail_next(r, op_fail_count(op)); break;
    case MODEL_OP_FAIL_ALWAYS: ok = op_fail_always(r, op_fail_on(op)); break;
    case MODEL_OP_BAD_LEASE:
        ok = op_bad_lease(r, op_bad_variant(op), op_bad_via_destroyed(op), op_bad_pick(op));
        break;
    default: ok = fail(r, "unknown operation kind %u", op->kind);
    }
    return ok && settle_and_compare(r);
}

/* ======================================================================== */
/* Setup, teardown, the run                                                  */
/* ======================================================================== */

static bool setup(runner_t *r)
{
    const model_config_t *c = &r->seq->config;
    model_t *m = &r->m;
    m->size = c->size;
    m->max_overflow = c->max_overflow;
    m->fifo = c->fifo;
    m->full_factory = c->full_factory;
    m->overflow_kept = c->overflow_kept;
    m->serial = c->serial;
    m->create_failures_known = m->consecutive_known = m->fail_next_known = true;

    respool_config_t cfg = quiet_config(c->size, c->max_overflow);
    cfg.strategy = c->fifo ? RESPOOL_FIFO : RESPOOL_LIFO;
    cfg.overflow_idle_ms = c->overflow_kept ? OVERFLOW_KEPT_MS : 0;
    cfg.max_creating = c->serial ? 1 : 0;
    cfg.retry_initial_ms = 1; /* a failing factory is retried within milliseconds */
    cfg.retry_max_ms = 1;
    respool_factory_t factory = c->full_factory ? fake_factory(r->fake)
                                                : fake_factory_minimal(r->fake);

    if (c->prefill_fails) {
        /* The prefill's first failure fails respool_create, which destroys
         * everything it made before returning. */
        fake_set_fail_next(r->fake, 1);
        respool_t *pool = NULL;
        call_begin(r);
        int rc = respool_create(&pool, &cfg, &factory);
        call_end();
        if (c->size == 0 || rc == RESPOOL_OK)
            r->pool = pool; /* torn down whatever happens next */
        if (c->size == 0) {
            /* Nothing to prefill: the failure stays pending. */
            m->fail_next = 1;
            if (!expect_rc(r, rc, RESPOOL_OK))
                return false;
            note(r, "respool_create: OK (size 0, the failure stays pending)");
            return settle_and_compare(r);
        }
        note(r, "respool_create: %s; ", respool_strerror(rc));
        if (!expect_rc(r, rc, RESPOOL_EFACTORY))
            return false;
        if (pool != NULL)
            return fail(r, "respool_create failed but *out is %p", (void *)pool);
        fake_counts_t fc = read_fake(r->fake);
        char why[256];
        if (fc.create_failed != 1 || !fake_reconcile(r->fake, why, sizeof why))
            return fail(r, "after the failed prefill: %llu create failures, %s",
                        (unsigned long long)fc.create_failed,
                        fc.create_failed != 1 ? "want 1" : why);
        m->known_resources = fc.count;
        r->baseline = fc; /* the next pool's counters start from 0 */
    }
    call_begin(r);
    int rc = respool_create(&r->pool, &cfg, &factory);
    call_end();
    note(r, "respool_create: %s", respool_strerror(rc));
    if (!expect_rc(r, rc, RESPOOL_OK))
        return false;
    /* The prefill is a refill from nothing, and must be complete already. */
    for (unsigned i = 0; i < c->size; i++)
        if (!idle_push_newest(r, FRESH_PENDING))
            return false;
    m->created = c->size;
    respool_stats_t s;
    respool_stats(r->pool, &s);
    if (s.idle + s.busy != c->size)
        return fail(r, "respool_create returned with idle + busy = %u, want size %u",
                    s.idle + s.busy, c->size);
    return settle_and_compare(r);
}

/* Normal end: give every lease back (each a checked step), shut down, free,
 * and check every resource was destroyed exactly once. */
static bool teardown(runner_t *r)
{
    model_t *m = &r->m;
    while (m->held_count > 0) {
        r->outcome[0] = '\0';
        if (!op_checkin(r, 0, false) || !settle_and_compare(r))
            return false;
    }
    r->outcome[0] = '\0';
    if (!op_shutdown(r, r->options->settle_ms) || !settle_and_compare(r))
        return false;
    if (m->created != m->destroyed)
        return fail(r, "after shutdown the model counts %llu created, %llu destroyed",
                    (unsigned long long)m->created, (unsigned long long)m->destroyed);
    call_begin(r);
    respool_free(r->pool);
    call_end();
    r->pool = NULL;
    char why[256];
    if (!fake_reconcile(r->fake, why, sizeof why))
        return fail(r, "%s", why);
    return true;
}

/* After a failure: return what is held and try to shut down; a pool that
 * will not shut down is leaked with its factory (its threads still use it). */
static void abandon(runner_t *r)
{
    if (r->pool) {
        for (unsigned i = 0; i < r->m.held_count; i++)
            (void)respool_checkin(r->pool, &r->m.held[i].lease);
        /* Short: a failed pool is often one that cannot finish. */
        long bound = r->options->settle_ms < 200 ? r->options->settle_ms : 200;
        if (respool_shutdown(r->pool, bound) != RESPOOL_OK) {
            r->result->wedged = true;
            wedged_pools++;
            r->fake = NULL; /* leaked on purpose */
            return;
        }
        call_begin(r);
        respool_free(r->pool);
        call_end();
        r->pool = NULL;
    }
    fake_release(r->fake);
    spare_factory = r->fake;
    r->fake = NULL;
}

/* The model's state in a few words, for the trace: configuration, idle
 * resources from the least recently returned ("?" for one of a parallel
 * batch), the resources checked out, and the factory's knobs. */
static void format_state(const model_t *m, char *buf, size_t len)
{
    size_t used = 0;
#define PUT(...)                                                                  \
    do {                                                                          \
        int n_ = snprintf(buf + used, used < len ? len - used : 0, __VA_ARGS__); \
        if (n_ > 0)                                                               \
            used += (size_t)n_;                                                   \
    } while (0)
    PUT("[%u+%u%s idle:", m->size, m->max_overflow, m->shutdown ? " shut down" : "");
    for (unsigned i = 0; i < m->idle; i++) {
        if (m->idle_ids[i] == UNIDENTIFIED)
            PUT(" ?");
        else
            PUT(" #%u", m->idle_ids[i]);
    }
    PUT(" | out:");
    for (unsigned i = 0; i < m->held_count; i++)
        PUT(" #%u", m->held[i].id);
    if (m->fail_always)
        PUT(" | create fails always");
    else if (m->fail_next > 0)
        PUT(" | next %d create fail", m->fail_next);
    if (m->consecutive_failures > 0)
        PUT(" | %u failures in a row", m->consecutive_failures);
    if (m->probing)
        PUT(" | probing");
    PUT("]");
#undef PUT
    if (used >= len && len > 0)
        buf[len - 1] = '\0';
}

/* Trace line for the step just run: what it was, what happened, the model's
 * state after it. */
static void trace_step(const runner_t *r, const char *what)
{
    if (!r->options->trace)
        return;
    char state[256];
    format_state(&r->m, state, sizeof state);
    fprintf(r->options->trace, "  %-44s -> %s  %s\n", what, r->outcome, state);
}

bool model_run(const model_seq_t *seq, const model_options_t *options, model_result_t *result)
{
    memset(result, 0, sizeof *result);
    runner_t *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->seq = seq;
    r->options = options;
    r->result = result;
    r->fake = spare_factory ? spare_factory : malloc(sizeof *r->fake);
    spare_factory = NULL;
    if (!r->fake)
        abort();
    fake_init(r->fake);
    atomic_store(&running, r);
    watchdog_t watchdog;
    bool watched = options->watchdog && watchdog_start(&watchdog);

    r->step = SIZE_MAX;
    bool ok = setup(r);
    if (options->trace) {
        char config[256];
        format_config(&seq->config, config, sizeof config);
        fprintf(options->trace, "  config: %s\n", config);
        trace_step(r, "setup");
    }
    for (size_t i = 0; ok && i < seq->count; i++) {
        r->step = i;
        r->outcome[0] = '\0';
        ok = run_op(r, &seq->ops[i]);
        if (options->trace) {
            char what[128], numbered[160];
            model_format_op(&seq->ops[i], what, sizeof what);
            snprintf(numbered, sizeof numbered, "%zu. %s", i + 1, what);
            trace_step(r, numbered);
        }
    }
    if (ok) {
        r->step = seq->count;
        r->outcome[0] = '\0';
        ok = teardown(r);
        trace_step(r, "teardown");
    }
    if (ok) {
        fake_fini(r->fake); /* checked by fake_reconcile already: cannot abort */
        spare_factory = r->fake;
    } else {
        if (options->trace)
            fprintf(options->trace, "  FAILED at %s\n", result->message);
        abandon(r);
    }
    if (watched)
        watchdog_stop(&watchdog);
    atomic_store(&running, NULL);
    free(r);
    return ok;
}

void model_describe_running(FILE *out)
{
    const runner_t *r = atomic_load(&running);
    if (!r)
        return;
    fprintf(out, "model: the run in progress was at step %zu of this sequence:\n",
             r->step == SIZE_MAX ? 0 : r->step + 1);
    model_print_seq(out, r->seq);
}

/* ======================================================================== */
/* Shrinking                                                                 */
/* ======================================================================== */

static double seconds_since(int64_t start_us)
{
    return (double)(monotonic_us() - start_us) / 1e6;
}

/* Does the candidate still fail? One replay against a fresh pool. */
static bool still_fails(const model_seq_t *candidate, const model_options_t *options,
                        unsigned *runs)
{
    model_result_t result;
    (*runs)++;
    return !model_run(candidate, options, &result);
}

/* `seq` without operations [start, start + n). */
static void without_ops(const model_seq_t *seq, size_t start, size_t n, model_seq_t *out)
{
    out->config = seq->config;
    out->count = 0;
    for (size_t i = 0; i < seq->count; i++)
        if (i < start || i >= start + n)
            out->ops[out->count++] = seq->ops[i];
}

unsigned model_shrink(const model_seq_t *seq, const model_options_t *options, unsigned max_runs,
                      double max_seconds, model_seq_t *out)
{
    model_options_t quiet = *options;
    quiet.trace = NULL;
    unsigned runs = 0;
    int64_t start_us = monotonic_us();
    model_seq_t *candidate = malloc(sizeof *candidate);
    if (!candidate)
        abort();
    *out = *seq;
#define BUDGET_LEFT() \
    (runs < max_runs && seconds_since(start_us) < max_seconds && model_wedged_pools() < 32)

    /* Delete chunks, halving their size down to single operations. */
    size_t chunk = out->count / 2 ? out->count / 2 : 1;
    while (chunk >= 1 && out->count > 0 && BUDGET_LEFT()) {
        bool removed = false;
        for (size_t at = 0; at < out->count && BUDGET_LEFT();) {
            without_ops(out, at, chunk, candidate);
            if (still_fails(candidate, &quiet, &runs)) {
                *out = *candidate;
                removed = true;
            } else {
                at += chunk;
            }
        }
        if (!removed) {
            if (chunk == 1)
                break;
            chunk /= 2;
        } else if (chunk > out->count) {
            chunk = out->count ? out->count : 1;
        }
    }

    /* Simplify the configuration, one setting at a time. */
    for (int change = 0; change < 7 && BUDGET_LEFT(); change++) {
        *candidate = *out;
        model_config_t *c = &candidate->config;
        switch (change) {
        case 0: c->prefill_fails = false; break;
        case 1: c->full_factory = false; break;
        case 2: c->overflow_kept = false; break;
        case 3: c->fifo = false; break;
        case 4: c->serial = true; break; /* creates in order: the trace names every resource */
        case 5: if (c->max_overflow > 0 && c->size + c->max_overflow > 1) c->max_overflow--; break;
        case 6: if (c->size > (c->max_overflow ? 0u : 1u)) c->size--; break;
        }
        if (memcmp(&candidate->config, &out->config, sizeof out->config) == 0)
            continue;
        if (still_fails(candidate, &quiet, &runs)) {
            *out = *candidate;
            if (change >= 5)
                change--; /* a smaller size may shrink again */
        }
    }
#undef BUDGET_LEFT
    free(candidate);
    return runs;
}
