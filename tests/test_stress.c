/*
 * test_stress.c — storms of random operations against a small pool whose
 * factory fails and stalls at random, with a checker thread asserting the
 * stats invariants all along (tests/support/stress_kit.h):
 *
 *   stress_storm       16 and 32 threads: checkouts with random timeouts,
 *                      holds, nested leases, checkins, respool_destroyed,
 *                      transactions and resizes for RESPOOL_STRESS_MS (2 s);
 *                      a chaos thread makes create() fail (fail_next,
 *                      fail_always), stall (create and destroy delays) and
 *                      block, and resizes too
 *   stress_waiters     1,000 threads queued on a pool of 3: each is served
 *                      or times out (never early); served in arrival order
 *   stress_shutdown    the storm with respool_shutdown called in its middle
 *
 * Every held resource is marked with fake_hold, so one handed to two threads
 * aborts the test; at the end shutdown must return RESPOOL_OK, the factory's
 * created must equal its destroyed and every lease must have come back.
 * Each run prints its figures (threads, operations by kind, faults) with
 * stress_report (stderr).
 */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/fake_factory.h"
#include "support/stress_kit.h"
#include "support/test_helpers.h"

static fake_factory_t fk;

#define JOIN_MS 20000L /* bound on every join and settle: a stuck thread fails the test */

/* The sizes and overflows a storm may resize to (the checker knows them). */
static const unsigned storm_sizes[] = {1, 2, 3, 4, 5, 6};
static const unsigned storm_overflows[] = {0, 1, 2, 3, 4};
#define N_SIZES (sizeof storm_sizes / sizeof storm_sizes[0])
#define N_OVERFLOWS (sizeof storm_overflows / sizeof storm_overflows[0])
#define STORM_CAPACITY_BOUND 10 /* 6 + 4 */
#define FINAL_SIZE 4
#define FINAL_OVERFLOW 2

/* ------------------------------------------------------------------------ */
/* A storm                                                                  */

typedef struct storm_plan {
    const char *name;
    unsigned threads;
    bool full_factory;     /* validate() and reset() too (no fast paths)     */
    bool shutdown_midway;  /* respool_shutdown in the middle of the storm    */
    respool_config_t config;
} storm_plan_t;

typedef struct storm storm_t;

/* One client thread's counts; `bad` and `why` record the first thing it saw
 * go wrong (asserting from a non-test thread would not stop the test). */
typedef struct storm_worker {
    storm_t *storm;
    uint32_t seed;
    uint64_t checkout_calls, ok, timedout, full, efactory, eshutdown;
    uint64_t served_in_shutdown; /* OK for a checkout queued before shutdown began */
    uint64_t nested;             /* a second lease while holding one              */
    uint64_t checkins, destroyeds, marked_broken;
    uint64_t transactions, transactions_broken;
    uint64_t resizes, resizes_refused;
    int64_t leases_out;          /* got minus given back: 0 at the end            */
    bool refused_once;           /* has seen ESHUTDOWN                            */
    int bad;
    char why[256];
    stress_thread_t thread;
} storm_worker_t;

struct storm {
    const storm_plan_t *plan;
    respool_t *pool;
    op_ledger_t ledger;
    stats_checker_t checker;
    atomic_bool stop, chaos_stop;
    atomic_bool shutdown_visible; /* the test saw state SHUTDOWN */
    storm_worker_t *workers;
    /* The chaos thread's counts. */
    uint64_t fault_fail_next, fault_fail_always, fault_create_delay, fault_destroy_delay;
    uint64_t fault_block, chaos_resizes, chaos_resizes_refused;
    int chaos_bad;
    char chaos_why[160];
    stress_thread_t chaos;
};

/* Record the first problem a worker saw. */
static void worker_bad(storm_worker_t *w, const char *what, long timeout, int rc)
{
    if (w->bad++ == 0)
        snprintf(w->why, sizeof w->why, "%s (timeout %ld): rc %d (%s)", what, timeout, rc,
                 respool_strerror(rc));
}

/* A random checkout timeout: mostly 0 and short ones, a few longer, and
 * now and then none at all (safe: the end of a storm clears the faults
 * before the workers stop, so every wait is eventually served). */
static long random_timeout(uint32_t *seed)
{
    uint32_t r = stress_below(seed, 100);
    if (r < 20)
        return 0;
    if (r < 35)
        return 1;
    if (r < 45)
        return 2;
    if (r < 65)
        return 5;
    if (r < 85)
        return 20;
    if (r < 96)
        return 100;
    return -1;
}

/* Hold a resource for a random short while: mostly not at all or a few
 * tens of microseconds, sometimes up to 2 ms. */
static void random_hold(uint32_t *seed)
{
    uint32_t r = stress_below(seed, 100);
    if (r < 50)
        return;
    pass_time_us(r < 90 ? (long)stress_below(seed, 200) : (long)stress_below(seed, 2000));
}

/* Classify a failed checkout's return code: what it may be for this
 * timeout and this moment of the pool's life. */
static void check_refusal(storm_worker_t *w, long timeout, int rc, int64_t elapsed_ns)
{
    storm_t *st = w->storm;
    switch (rc) {
    case RESPOOL_ETIMEDOUT:
        w->timedout++;
        atomic_fetch_add(&st->ledger.timeouts, 1);
        if (timeout <= 0)
            worker_bad(w, "ETIMEDOUT without a positive timeout", timeout, rc);
        else if (elapsed_ns < (int64_t)timeout * 1000000)
            worker_bad(w, "ETIMEDOUT before the deadline", timeout, rc);
        break;
    case RESPOOL_EFULL:
        w->full++;
        atomic_fetch_add(&st->ledger.timeouts, 1);
        if (timeout != 0)
            worker_bad(w, "EFULL with a timeout", timeout, rc);
        break;
    case RESPOOL_EFACTORY:
        w->efactory++;
        if (timeout != 0)
            worker_bad(w, "EFACTORY with a timeout", timeout, rc);
        break;
    case RESPOOL_ESHUTDOWN:
        w->eshutdown++;
        w->refused_once = true;
        if (!atomic_load(&st->checker.shutdown_called))
            worker_bad(w, "ESHUTDOWN before shutdown was called", timeout, rc);
        break;
    default:
        worker_bad(w, "unexpected checkout result", timeout, rc);
        break;
    }
}

/* Give a held lease back: checkin, or (about one in seven) report it
 * destroyed; with validate()/reset() some are first marked broken, so
 * reset() rejects them. */
static void give_back(storm_worker_t *w, respool_lease_t *lease)
{
    storm_t *st = w->storm;
    uint32_t r = stress_below(&w->seed, 100);
    if (st->plan->full_factory && r < 4) {
        fake_break(lease->resource);
        w->marked_broken++;
    }
    fake_unhold(lease->resource);
    atomic_fetch_add(&st->ledger.released, 1);
    int rc;
    if (r >= 86) {
        atomic_fetch_add(&st->ledger.destroy_begun, 1);
        rc = respool_destroyed(st->pool, lease);
        atomic_fetch_add(&st->ledger.destroy_done, 1);
        w->destroyeds++;
    } else {
        rc = respool_checkin(st->pool, lease);
        w->checkins++;
    }
    w->leases_out--;
    if (rc != RESPOOL_OK || lease->resource != NULL)
        worker_bad(w, "checkin/destroyed of a valid lease", 0, rc);
}

/* One checkout with a random timeout, its result checked, the resource held
 * for a while (sometimes with a second lease taken meanwhile) and given
 * back. */
static void checkout_cycle(storm_worker_t *w)
{
    storm_t *st = w->storm;
    long timeout = random_timeout(&w->seed);
    bool began_after_shutdown = atomic_load(&st->shutdown_visible);
    respool_lease_t lease;
    memset(&lease, 0xa5, sizeof lease);
    int64_t t0 = stress_now_ns();
    w->checkout_calls++;
    int rc = respool_checkout(st->pool, timeout, &lease);
    int64_t elapsed = stress_now_ns() - t0;
    if (began_after_shutdown && rc != RESPOOL_ESHUTDOWN)
        worker_bad(w, "checkout begun after shutdown was not refused", timeout, rc);
    if (w->refused_once && rc != RESPOOL_ESHUTDOWN)
        worker_bad(w, "checkout after an ESHUTDOWN was not refused", timeout, rc);
    if (rc != RESPOOL_OK) {
        if (lease.resource != NULL)
            worker_bad(w, "failed checkout left lease.resource set", timeout, rc);
        check_refusal(w, timeout, rc, elapsed);
        if (rc == RESPOOL_ESHUTDOWN)
            pass_time_us(100); /* nothing more to do but be refused: don't spin */
        return;
    }
    w->ok++;
    w->leases_out++;
    atomic_fetch_add(&st->ledger.acquired, 1);
    if (atomic_load(&st->checker.shutdown_called))
        w->served_in_shutdown++;
    if (lease.resource == NULL) {
        worker_bad(w, "checkout OK with a NULL resource", timeout, rc);
        return;
    }
    fake_hold(lease.resource); /* aborts if another thread holds it */

    if (stress_below(&w->seed, 16) == 0) {
        /* A second lease at once, with a short timeout only: waiting without
         * limit while holding one could wait for ever on a pool of one. */
        long timeout2 = (long)stress_below(&w->seed, 3);
        respool_lease_t second;
        w->checkout_calls++;
        t0 = stress_now_ns();
        int rc2 = respool_checkout(st->pool, timeout2, &second);
        elapsed = stress_now_ns() - t0;
        if (rc2 == RESPOOL_OK) {
            w->ok++;
            w->nested++;
            w->leases_out++;
            atomic_fetch_add(&st->ledger.acquired, 1);
            if (atomic_load(&st->checker.shutdown_called))
                w->served_in_shutdown++;
            if (second.resource == lease.resource)
                worker_bad(w, "the same resource leased twice to one thread", timeout2, rc2);
            fake_hold(second.resource);
            random_hold(&w->seed);
            give_back(w, &second);
        } else {
            check_refusal(w, timeout2, rc2, elapsed);
        }
    }
    random_hold(&w->seed);
    give_back(w, &lease);
}

/* A transaction's work: hold the resource a while; about one in ten is
 * reported broken. */
static respool_verdict_t storm_work(void *resource, void *arg)
{
    storm_worker_t *w = arg;
    storm_t *st = w->storm;
    atomic_fetch_add(&st->ledger.acquired, 1);
    fake_hold(resource);
    random_hold(&w->seed);
    bool broken = stress_below(&w->seed, 10) == 0;
    fake_unhold(resource);
    atomic_fetch_add(&st->ledger.released, 1);
    if (broken) {
        atomic_fetch_add(&st->ledger.destroy_begun, 1);
        w->transactions_broken++;
    }
    return broken ? RESPOOL_BROKEN : RESPOOL_KEEP;
}

/* respool_transaction with a short timeout, its result checked. */
static void transaction_cycle(storm_worker_t *w)
{
    storm_t *st = w->storm;
    long timeout = (long)stress_below(&w->seed, 3) * 5; /* 0, 5 or 10 ms */
    bool began_after_shutdown = atomic_load(&st->shutdown_visible);
    uint64_t broken_before = w->transactions_broken;
    int64_t t0 = stress_now_ns();
    w->checkout_calls++;
    int rc = respool_transaction(st->pool, timeout, storm_work, w);
    int64_t elapsed = stress_now_ns() - t0;
    if (began_after_shutdown && rc != RESPOOL_ESHUTDOWN)
        worker_bad(w, "transaction begun after shutdown was not refused", timeout, rc);
    if (rc == RESPOOL_OK) {
        w->ok++;
        w->transactions++;
        if (w->transactions_broken != broken_before)
            atomic_fetch_add(&st->ledger.destroy_done, 1);
        if (atomic_load(&st->checker.shutdown_called))
            w->served_in_shutdown++;
    } else {
        check_refusal(w, timeout, rc, elapsed);
    }
}

/* respool_resize to a random size and overflow from the storm's lists. */
static int random_resize(storm_t *st, uint32_t *seed)
{
    unsigned size = storm_sizes[stress_below(seed, N_SIZES)];
    unsigned overflow = storm_overflows[stress_below(seed, N_OVERFLOWS)];
    return respool_resize(st->pool, size, overflow);
}

/* A worker's resize, its result checked against the shutdown state. */
static void resize_cycle(storm_worker_t *w)
{
    storm_t *st = w->storm;
    bool began_after_shutdown = atomic_load(&st->shutdown_visible);
    int rc = random_resize(st, &w->seed);
    if (rc == RESPOOL_OK && !began_after_shutdown) {
        w->resizes++;
    } else if (rc == RESPOOL_ESHUTDOWN && atomic_load(&st->checker.shutdown_called)) {
        w->resizes_refused++;
        pass_time_us(100);
    } else {
        worker_bad(w, "resize", 0, rc);
    }
}

/* A client thread: random operations until told to stop. */
static void *storm_worker_main(void *arg)
{
    storm_worker_t *w = arg;
    while (!atomic_load(&w->storm->stop)) {
        uint32_t r = stress_below(&w->seed, 100);
        if (r < 2)
            resize_cycle(w);
        else if (r < 8)
            transaction_cycle(w);
        else
            checkout_cycle(w);
    }
    return NULL;
}

/* The chaos thread: every 1-4 ms, make create() fail or stall, destroy()
 * stall, creates block for a moment, or the pool change size. */
static void *chaos_main(void *arg)
{
    storm_t *st = arg;
    uint32_t seed = 0xc4a05u * st->plan->threads;
    while (!atomic_load(&st->chaos_stop)) {
        switch (stress_below(&seed, 8)) {
        case 0:
            fake_set_fail_next(&fk, 1 + (int)stress_below(&seed, 3));
            st->fault_fail_next++;
            break;
        case 1: /* an outage: every create() fails for a few ms */
            fake_set_fail_always(&fk, true);
            st->fault_fail_always++;
            pass_time_us(1000 + (long)stress_below(&seed, 7000));
            fake_set_fail_always(&fk, false);
            break;
        case 2:
            fake_set_create_delay(&fk, (long)stress_below(&seed, 4));
            st->fault_create_delay++;
            break;
        case 3:
            fake_set_destroy_delay(&fk, (long)stress_below(&seed, 3));
            st->fault_destroy_delay++;
            break;
        case 4: /* create() hangs for a moment */
            fake_set_block(&fk, true);
            st->fault_block++;
            pass_time_us(500 + (long)stress_below(&seed, 3500));
            fake_set_block(&fk, false);
            break;
        case 5: {
            bool after = atomic_load(&st->shutdown_visible);
            int rc = random_resize(st, &seed);
            if (rc == RESPOOL_OK && !after) {
                st->chaos_resizes++;
            } else if (rc == RESPOOL_ESHUTDOWN && atomic_load(&st->checker.shutdown_called)) {
                st->chaos_resizes_refused++;
            } else if (st->chaos_bad++ == 0) {
                snprintf(st->chaos_why, sizeof st->chaos_why, "resize returned %d (%s)", rc,
                         respool_strerror(rc));
            }
            break;
        }
        default:
            break;
        }
        pass_time_us(1000 + (long)stress_below(&seed, 3000));
    }
    stress_clear_faults(&fk);
    return NULL;
}

/* Stats predicate: the pool is at rest at its final size. */
static bool settled_at_final_size(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->idle == FINAL_SIZE && s->busy == 0 && s->creating == 0 && s->destroying == 0 &&
           s->waiting == 0;
}

/* Stats predicate: leases out and checkouts queued (a moment to shut down in). */
static bool leases_out(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->busy >= 2 && s->waiting >= 1;
}

/* Stats predicate: shutdown has begun. */
static bool state_shutdown(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->state == RESPOOL_SHUTDOWN;
}

/* respool_shutdown(pool, -1) on its own thread (the storm goes on meanwhile). */
typedef struct {
    respool_t *pool;
    int rc;
    int64_t took_ns;
    stress_thread_t thread;
} shutdown_task_t;

/* The shutdown thread's body: call it and time it. */
static void *shutdown_main(void *arg)
{
    shutdown_task_t *t = arg;
    int64_t t0 = stress_now_ns();
    t->rc = respool_shutdown(t->pool, -1);
    t->took_ns = stress_now_ns() - t0;
    return NULL;
}

/* Totals over every worker. */
typedef struct {
    uint64_t calls, ok, timedout, full, efactory, eshutdown, served_in_shutdown, nested;
    uint64_t checkins, destroyeds, marked_broken, transactions, transactions_broken;
    uint64_t resizes, resizes_refused;
} storm_totals_t;

/* Add up the workers' counts. */
static storm_totals_t storm_sum(const storm_t *st)
{
    storm_totals_t t;
    memset(&t, 0, sizeof t);
    for (unsigned i = 0; i < st->plan->threads; i++) {
        const storm_worker_t *w = &st->workers[i];
        t.calls += w->checkout_calls;
        t.ok += w->ok;
        t.timedout += w->timedout;
        t.full += w->full;
        t.efactory += w->efactory;
        t.eshutdown += w->eshutdown;
        t.served_in_shutdown += w->served_in_shutdown;
        t.nested += w->nested;
        t.checkins += w->checkins;
        t.destroyeds += w->destroyeds;
        t.marked_broken += w->marked_broken;
        t.transactions += w->transactions;
        t.transactions_broken += w->transactions_broken;
        t.resizes += w->resizes;
        t.resizes_refused += w->resizes_refused;
    }
    return t;
}

/* Run one storm as planned, check everything, print its figures. */
static void storm_run(const storm_plan_t *plan)
{
    long run_ms = stress_duration_ms();
    fake_init(&fk);
    respool_config_t cfg = plan->config;
    cfg.size = FINAL_SIZE;
    cfg.max_overflow = FINAL_OVERFLOW;
    cfg.log = respool_log_discard;
    respool_factory_t factory = plan->full_factory ? fake_factory(&fk) : fake_factory_minimal(&fk);

    static storm_t st;
    memset(&st, 0, sizeof st);
    st.plan = plan;
    st.pool = make_pool(cfg, factory);
    st.workers = calloc(plan->threads, sizeof *st.workers);
    cr_assert_not_null(st.workers);

    stats_checker_t *c = &st.checker;
    c->pool = st.pool;
    c->factory = &fk;
    c->ledger = &st.ledger;
    c->capacity_bound = STORM_CAPACITY_BOUND;
    c->threads = plan->threads;
    c->max_creating = cfg.max_creating ? cfg.max_creating : 16;
    memcpy(c->sizes, storm_sizes, sizeof storm_sizes);
    c->n_sizes = N_SIZES;
    memcpy(c->overflows, storm_overflows, sizeof storm_overflows);
    c->n_overflows = N_OVERFLOWS;
    checker_start(c);

    int64_t t0 = stress_now_ns();
    cr_assert_eq(stress_thread_start(&st.chaos, NULL, chaos_main, &st), 0);
    for (unsigned i = 0; i < plan->threads; i++) {
        st.workers[i].storm = &st;
        st.workers[i].seed = 0x9e3779b9u * (i + 1) ^ 0x5bd1e995u;
        cr_assert_eq(stress_thread_start(&st.workers[i].thread, NULL, storm_worker_main,
                                    &st.workers[i]),
                     0);
    }

    shutdown_task_t sd = {.pool = st.pool, .rc = -1};
    respool_stats_t at_shutdown;
    memset(&at_shutdown, 0, sizeof at_shutdown);
    if (plan->shutdown_midway) {
        pass_time_ms(run_ms / 2); /* the storm before shutdown */
        /* Shape the timing (checked either way): begin shutdown while some
         * leases are out, so it has returns to wait for and queued
         * checkouts to serve; give up on that after a second. */
        pool_wait(st.pool, leases_out, NULL, 1000);
        at_shutdown = stats_of(st.pool);
        atomic_store(&c->shutdown_called, true);
        cr_assert_eq(stress_thread_start(&sd.thread, NULL, shutdown_main, &sd), 0);
        cr_assert(pool_wait(st.pool, state_shutdown, NULL, JOIN_MS));
        atomic_store(&st.shutdown_visible, true);
        if (!stress_thread_join(&sd.thread, JOIN_MS)) {
            checker_stop(c);
            cr_assert(0, "respool_shutdown did not return (busy %u); checker: %d violations, "
                      "first: %s", stats_of(st.pool).busy, c->violations, c->first);
        }
        CHECK_RC(sd.rc, RESPOOL_OK);
        /* Shutdown returned OK: every lease is back and every resource made
         * has been destroyed, while the storm still runs. */
        pthread_mutex_lock(&fk.lock);
        uint64_t made = fk.created, gone = fk.destroyed;
        pthread_mutex_unlock(&fk.lock);
        cr_assert_eq(made, gone, "shutdown returned OK with %" PRIu64 " made, %" PRIu64
                     " destroyed", made, gone);
        respool_stats_t s = stats_of(st.pool);
        cr_assert(s.idle == 0 && s.busy == 0 && s.creating == 0 && s.destroying == 0,
                  "after shutdown: idle %u busy %u creating %u destroying %u", s.idle, s.busy,
                  s.creating, s.destroying);
        pass_time_ms(run_ms / 10 + 20); /* the storm goes on against a shut pool */
    } else {
        pass_time_ms(run_ms);
    }

    /* Calm the factory first, so every checkout still waiting (some have
     * no timeout) can be served; then stop the workers. */
    atomic_store(&st.chaos_stop, true);
    cr_assert(stress_thread_join(&st.chaos, JOIN_MS), "chaos thread stuck");
    atomic_store(&st.stop, true);
    int stuck = -1;
    for (unsigned i = 0; i < plan->threads && stuck < 0; i++)
        if (!stress_thread_join(&st.workers[i].thread, JOIN_MS))
            stuck = (int)i;
    int64_t ran_ns = stress_now_ns() - t0;
    cr_assert(checker_stop(c), "checker stuck");
    /* The checker's finding first: it usually explains a stuck worker. */
    cr_assert_eq(c->violations, 0, "%d invariant violations in %" PRIu64 " samples, first: %s",
                 c->violations, c->samples, c->first);
    cr_assert_eq(stuck, -1, "worker %d stuck (pool: busy %u idle %u waiting %u)", stuck,
                 stats_of(st.pool).busy, stats_of(st.pool).idle, stats_of(st.pool).waiting);

    for (unsigned i = 0; i < plan->threads; i++) {
        cr_assert_eq(st.workers[i].bad, 0, "worker %u: %d problems, first: %s", i,
                     st.workers[i].bad, st.workers[i].why);
        cr_assert_eq(st.workers[i].leases_out, 0, "worker %u kept %" PRId64 " leases", i,
                     st.workers[i].leases_out);
    }
    cr_assert_eq(st.chaos_bad, 0, "chaos: %s", st.chaos_why);

    storm_totals_t t = storm_sum(&st);
    respool_stats_t s = stats_of(st.pool);
    ASSERT_EQ_U(s.busy, 0);
    ASSERT_EQ_U(s.waiting, 0);
    cr_assert_eq(s.checkouts, t.ok, "stats.checkouts %" PRIu64 ", threads got %" PRIu64,
                 s.checkouts, t.ok);
    cr_assert_eq(s.timeouts, t.timedout + t.full, "stats.timeouts %" PRIu64 ", threads saw %"
                 PRIu64, s.timeouts, t.timedout + t.full);
    ASSERT_EQ_U(s.reported_broken, t.destroyeds + t.transactions_broken);
    cr_assert_gt(t.ok, 0, "no successful checkout");

    if (!plan->shutdown_midway) {
        /* The pool settles at its configured size, then shuts down cleanly. */
        CHECK_RC(respool_resize(st.pool, FINAL_SIZE, FINAL_OVERFLOW), RESPOOL_OK);
        cr_assert(pool_wait(st.pool, settled_at_final_size, NULL, JOIN_MS),
                  "pool did not settle at size %d (idle %u busy %u creating %u)", FINAL_SIZE,
                  stats_of(st.pool).idle, stats_of(st.pool).busy, stats_of(st.pool).creating);
        CHECK_RC(respool_shutdown(st.pool, -1), RESPOOL_OK);
    } else {
        cr_assert_gt(t.eshutdown, 0, "no checkout was refused after shutdown");
        CHECK_RC(respool_shutdown(st.pool, 0), RESPOOL_OK); /* at once, again */
    }
    pthread_mutex_lock(&fk.lock);
    uint64_t made = fk.created, gone = fk.destroyed, failed = fk.create_failed;
    uint64_t create_calls = fk.create_calls, validated = fk.validated, resets = fk.resets;
    pthread_mutex_unlock(&fk.lock);
    cr_assert_eq(made, gone, "created %" PRIu64 " != destroyed %" PRIu64, made, gone);
    s = stats_of(st.pool);
    ASSERT_EQ_U(s.created, made);
    ASSERT_EQ_U(s.destroyed, gone);
    ASSERT_EQ_U(s.create_failures, failed);

    stress_report("%s: %u threads + chaos + checker, %.2f s: %" PRIu64 " checkout calls "
                "(%" PRIu64 " ok incl. %" PRIu64 " nested and %" PRIu64 " transactions, %"
                PRIu64 " timed out, %" PRIu64 " full, %" PRIu64 " efactory, %" PRIu64
                " eshutdown), %" PRIu64 " checkins, %" PRIu64 " destroyed (+%" PRIu64
                " broken transactions, %" PRIu64 " marked broken for reset), %" PRIu64
                " resizes by workers",
                plan->name, plan->threads, (double)ran_ns / 1e9, t.calls, t.ok, t.nested,
                t.transactions, t.timedout, t.full, t.efactory, t.eshutdown, t.checkins,
                t.destroyeds, t.transactions_broken, t.marked_broken, t.resizes);
    stress_report("%s: faults: %" PRIu64 " fail_next, %" PRIu64 " outages (fail_always), %" PRIu64
                " create delays, %" PRIu64 " destroy delays, %" PRIu64 " create blocks, %" PRIu64
                " chaos resizes; factory: %" PRIu64 " create calls, %" PRIu64 " failed, %" PRIu64
                " made = destroyed, %" PRIu64 " validate, %" PRIu64 " reset; pool: %" PRIu64
                " dismissed, %" PRIu64 " expired, %" PRIu64 " validate / %" PRIu64
                " reset failures, %" PRIu64 " leaks reported; checker: %" PRIu64
                " samples (max waiting %u, busy %u, creating %u)",
                plan->name, st.fault_fail_next, st.fault_fail_always, st.fault_create_delay,
                st.fault_destroy_delay, st.fault_block, st.chaos_resizes, create_calls, failed,
                made, validated, resets, s.dismissed, s.expired, s.validate_failures,
                s.reset_failures, s.leaks, c->samples, c->max_waiting_seen, c->max_busy_seen,
                c->max_creating_seen);
    if (plan->shutdown_midway)
        stress_report("%s: shutdown began with %u busy, %u waiting, %u creating; returned OK "
                    "after %.1f ms; %" PRIu64 " leases handed out after it began (to "
                    "checkouts already queued), %" PRIu64 " checkouts and %" PRIu64
                    " resizes refused, %" PRIu64 " samples in state shutdown",
                    plan->name, at_shutdown.busy, at_shutdown.waiting, at_shutdown.creating,
                    (double)sd.took_ns / 1e6, t.served_in_shutdown, t.eshutdown,
                    t.resizes_refused + st.chaos_resizes_refused, c->shutdown_samples);
    respool_free(st.pool);
    free(st.workers);
    fake_fini(&fk);
}

/* 16 threads, create and destroy only (the fast paths), LIFO, default
 * fairness, overflow dismissed at checkin. */
Test(stress_storm, sixteen_threads_fast_paths, .timeout = 120)
{
    static const storm_plan_t plan = {
        .name = "storm-16",
        .threads = 16,
        .config = {.max_creating = 4, .retry_initial_ms = 1, .retry_max_ms = 20},
    };
    storm_run(&plan);
}

/* 32 threads, validate() (every checkout from idle) and reset(), FIFO,
 * strict hand-off, and every timer on: overflow idle time, a 5 ms lifetime,
 * keepalive, leak sweep. */
Test(stress_storm, thirty_two_threads_all_features, .timeout = 120)
{
    static const storm_plan_t plan = {
        .name = "storm-32",
        .threads = 32,
        .full_factory = true,
        .config = {.strategy = RESPOOL_FIFO,
                   .fairness_us = RESPOOL_FAIRNESS_STRICT,
                   .max_creating = 8,
                   .retry_initial_ms = 1,
                   .retry_max_ms = 20,
                   .overflow_idle_ms = 3,
                   .max_lifetime_ms = 5,
                   .validate_idle_ms = 0,
                   .keepalive_ms = 5,
                   .leak_threshold_ms = 1},
    };
    storm_run(&plan);
}

/* 24 threads with respool_shutdown called halfway: leases out come back,
 * queued checkouts are served or refused, new ones are refused, and
 * shutdown returns OK with every resource destroyed once. */
Test(stress_shutdown, shutdown_in_the_storm, .timeout = 120)
{
    static const storm_plan_t plan = {
        .name = "storm-shutdown",
        .threads = 24,
        .full_factory = true,
        .shutdown_midway = true,
        .config = {.max_creating = 4, .retry_initial_ms = 1, .retry_max_ms = 20},
    };
    storm_run(&plan);
}

/* ------------------------------------------------------------------------ */
/* Many waiters on a small pool                                             */

#define WAITERS_SIZE 2
#define WAITERS_OVERFLOW 1

/* What a queued thread was asked to do. */
typedef enum { ROLE_SHORT, ROLE_LONG, ROLE_FOREVER } waiter_role_t;

typedef struct queued {
    respool_t *pool;
    op_ledger_t *ledger;
    waiter_role_t role;
    long timeout;
    int rc, rc2;
    int64_t elapsed_ns;
    int served_at; /* order of service among those served, -1 if not */
    bool destroyed;
} queued_t;

static atomic_int service_seq;

/* A queued thread: one checkout; if served, hold briefly (one in ten is
 * reported destroyed, so a replacement is made for the queue). */
static void *queued_main(void *arg)
{
    queued_t *q = arg;
    respool_lease_t lease;
    int64_t t0 = stress_now_ns();
    q->rc = respool_checkout(q->pool, q->timeout, &lease);
    q->elapsed_ns = stress_now_ns() - t0;
    if (q->rc != RESPOOL_OK) {
        if (q->rc == RESPOOL_ETIMEDOUT)
            atomic_fetch_add(&q->ledger->timeouts, 1);
        return NULL;
    }
    atomic_fetch_add(&q->ledger->acquired, 1);
    fake_hold(lease.resource);
    q->served_at = atomic_fetch_add(&service_seq, 1);
    uint32_t seed = (uint32_t)q->served_at * 2654435761u + 1u;
    pass_time_us((long)stress_below(&seed, 100));
    q->destroyed = stress_below(&seed, 10) == 0;
    fake_unhold(lease.resource);
    atomic_fetch_add(&q->ledger->released, 1);
    if (q->destroyed) {
        atomic_fetch_add(&q->ledger->destroy_begun, 1);
        q->rc2 = respool_destroyed(q->pool, &lease);
        atomic_fetch_add(&q->ledger->destroy_done, 1);
    } else {
        q->rc2 = respool_checkin(q->pool, &lease);
    }
    return NULL;
}

/* Stats predicate: the first n threads have queued (or already timed out). */
static bool queue_reached(const respool_stats_t *s, void *arg)
{
    const uint64_t *want = arg; /* {queued or timed out, timeouts before} */
    return s->waiting + (s->timeouts - want[1]) >= want[0];
}

/* RESPOOL_STRESS_WAITERS (1,000) threads queue one by one on a pool of 2 + 1
 * whose three resources are held: one in five with a short timeout (1-30
 * ms, or 30-180 ms for the last fifth to arrive), the rest with a long one
 * or none. Then the holds end, some served
 * threads report their resource destroyed and the factory fails a few
 * times. Every thread must end: the long and unlimited ones served, the
 * short ones served or timed out (never early), in arrival order. */
Test(stress_waiters, thousand_queued_served_or_timed_out, .timeout = 120)
{
    unsigned n = (unsigned)stress_env_long("RESPOOL_STRESS_WAITERS", 1000, 10, 5000);
    fake_init(&fk);
    respool_config_t cfg = quiet_config(WAITERS_SIZE, WAITERS_OVERFLOW);
    cfg.fairness_us = RESPOOL_FAIRNESS_STRICT; /* every return goes to the longest waiter */
    cfg.retry_initial_ms = 1;
    cfg.retry_max_ms = 10;
    respool_t *pool = make_pool(cfg, fake_factory_minimal(&fk));

    static op_ledger_t ledger;
    memset(&ledger, 0, sizeof ledger);
    static stats_checker_t checker;
    memset(&checker, 0, sizeof checker);
    checker.pool = pool;
    checker.factory = &fk;
    checker.ledger = &ledger;
    checker.capacity_bound = WAITERS_SIZE + WAITERS_OVERFLOW;
    checker.threads = n + 1;
    checker.max_creating = 16;
    checker.sizes[0] = WAITERS_SIZE;
    checker.n_sizes = 1;
    checker.overflows[0] = WAITERS_OVERFLOW;
    checker.n_overflows = 1;
    checker.sleepy = true;
    checker_start(&checker);

    respool_lease_t held[WAITERS_SIZE + WAITERS_OVERFLOW];
    for (int i = 0; i < WAITERS_SIZE + WAITERS_OVERFLOW; i++) {
        CHECK_RC(respool_checkout(pool, 0, &held[i]), RESPOOL_OK);
        atomic_fetch_add(&ledger.acquired, 1);
    }

    queued_t *q = calloc(n, sizeof *q);
    stress_thread_t *threads = calloc(n, sizeof *threads);
    cr_assert(q && threads);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    atomic_store(&service_seq, 0);
    uint64_t timeouts_before = stats_of(pool).timeouts;
    uint32_t seed = 0x1234567u;
    int64_t t0 = stress_now_ns();
    for (unsigned i = 0; i < n; i++) {
        uint32_t kind = stress_below(&seed, 5);
        q[i] = (queued_t){.pool = pool, .ledger = &ledger, .rc = -1, .rc2 = -1, .served_at = -1};
        q[i].role = kind == 0 ? ROLE_SHORT : kind == 1 ? ROLE_FOREVER : ROLE_LONG;
        /* Short timeouts run out while the queue builds up; those of the
         * last fifth (30-180 ms) run out, or not, while it drains. */
        long short_timeout = i < n - n / 5 ? 1 + (long)stress_below(&seed, 30)
                                           : 30 + (long)stress_below(&seed, 150);
        q[i].timeout = q[i].role == ROLE_SHORT     ? short_timeout
                       : q[i].role == ROLE_FOREVER ? -1
                                                   : 60000;
        int err = stress_thread_start(&threads[i], &attr, queued_main, &q[i]);
        cr_assert_eq(err, 0, "pthread_create %u: %s", i, strerror(err));
        /* Queue them one at a time, so arrival order is known. */
        uint64_t want[2] = {i + 1, timeouts_before};
        cr_assert(pool_wait(pool, queue_reached, want, JOIN_MS), "thread %u never queued", i);
    }
    pthread_attr_destroy(&attr);
    int64_t queued_ns = stress_now_ns() - t0;
    unsigned queued_peak = stats_of(pool).waiting;

    fake_set_fail_next(&fk, 3); /* the first replacements fail: the queue waits out retries */
    for (int i = 0; i < WAITERS_SIZE + WAITERS_OVERFLOW; i++) {
        atomic_fetch_add(&ledger.released, 1);
        CHECK_RC(respool_checkin(pool, &held[i]), RESPOOL_OK);
    }
    int stuck = -1;
    for (unsigned i = 0; i < n && stuck < 0; i++)
        if (!stress_thread_join(&threads[i], JOIN_MS))
            stuck = (int)i;
    int64_t drained_ns = stress_now_ns() - t0 - queued_ns;
    cr_assert(checker_stop(&checker));
    cr_assert_eq(checker.violations, 0, "%d invariant violations, first: %s", checker.violations,
                 checker.first);
    cr_assert_eq(stuck, -1, "thread %d never returned", stuck);

    unsigned served = 0, timed_out = 0, short_served = 0, destroyed = 0;
    unsigned by_role_served[3] = {0}, by_role[3] = {0};
    long total_displacement = 0;
    int max_displacement = 0;
    for (unsigned i = 0; i < n; i++) {
        by_role[q[i].role]++;
        if (q[i].rc == RESPOOL_OK) {
            CHECK_RC(q[i].rc2, RESPOOL_OK);
            /* Arrival rank among the served = those served before it in the
             * queue; strict hand-off serves them in that order. */
            int d = abs(q[i].served_at - (int)served);
            total_displacement += d;
            if (d > max_displacement)
                max_displacement = d;
            served++;
            by_role_served[q[i].role]++;
            destroyed += q[i].destroyed;
            if (q[i].role == ROLE_SHORT)
                short_served++;
            continue;
        }
        cr_assert_eq(q[i].role, ROLE_SHORT, "thread %u (timeout %ld) got %d (%s)", i,
                     q[i].timeout, q[i].rc, respool_strerror(q[i].rc));
        CHECK_RC(q[i].rc, RESPOOL_ETIMEDOUT);
        cr_assert_geq(q[i].elapsed_ns, (int64_t)q[i].timeout * 1000000,
                      "thread %u timed out after %.3f ms, its timeout is %ld ms", i,
                      (double)q[i].elapsed_ns / 1e6, q[i].timeout);
        timed_out++;
    }
    double mean = served ? (double)total_displacement / served : 0;
    respool_stats_t s = stats_of(pool);
    ASSERT_EQ_U(served + timed_out, n);
    ASSERT_EQ_U(s.waiting, 0);
    ASSERT_EQ_U(s.busy, 0);
    ASSERT_EQ_U(s.checkouts, served + WAITERS_SIZE + WAITERS_OVERFLOW);
    ASSERT_EQ_U(s.timeouts, timed_out);
    ASSERT_EQ_U(s.reported_broken, destroyed);
    stress_report("waiters: %u threads queued in %.0f ms (peak %u waiting), drained in %.0f ms: "
                "%u served (%u of %u unlimited, %u of %u long, %u of %u short), %u timed out "
                "(all short, none early), %u reported destroyed, %" PRIu64
                " create failures injected and retried; service order vs arrival: mean "
                "displacement %.2f, max %d; checker: %" PRIu64 " samples",
                n, (double)queued_ns / 1e6, queued_peak, (double)drained_ns / 1e6, served,
                by_role_served[ROLE_FOREVER], by_role[ROLE_FOREVER], by_role_served[ROLE_LONG],
                by_role[ROLE_LONG], short_served, by_role[ROLE_SHORT], timed_out, destroyed,
                s.create_failures, mean, max_displacement, checker.samples);
    cr_assert_leq(mean, 4.0, "served out of arrival order (mean displacement %.2f, max %d)",
                  mean, max_displacement);
    cr_assert_leq(max_displacement, 200, "served far out of arrival order (displacement %d)",
                  max_displacement);

    CHECK_RC(respool_shutdown(pool, -1), RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, created), FAKE_GET(&fk, destroyed));
    respool_free(pool);
    free(q);
    free(threads);
    fake_fini(&fk);
}
