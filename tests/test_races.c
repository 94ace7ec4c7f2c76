/*
 * test_races.c — race hunters: the same few operations repeated many times
 * with their timing varied around the instant where they conflict.
 *
 *   races_deadline   100,000 iterations (RESPOOL_RACE_ITERATIONS) of a 1 ms
 *                    checkout on a pool of one whose holder checks in at
 *                    about the waiter's deadline. 1 ms is the smallest
 *                    timeout that waits, and a waiter cannot reach its
 *                    deadline sooner, so the iterations run on 40 pools at
 *                    once (a waiter and a holder thread each): mostly
 *                    asleep, they share the 2 cores, and 100,000 take about
 *                    3.5 s. The holder aims at the waiter's own start time
 *                    + 1 ms + an offset (half within +-50 us, half within
 *                    +-400 us), with the kernel's timer slack off. Each
 *                    iteration must end with the resource either leased to
 *                    the waiter or idle. Then 20,000 rounds with a second
 *                    waiter queued behind the first: whichever way the
 *                    first one's deadline race goes, the second is served
 *                    before its own deadline.
 *   races_shutdown   rounds of a dozen threads checking out (timeouts 0, 1,
 *                    3 ms or none) while shutdown begins at a random instant
 *                    with leases out and creates in flight
 *   races_resize     respool_destroyed on leases while two threads grow and
 *                    shrink the pool; it must settle at the last size set
 *
 * Outcomes are awaited with barriers, joins and stats polls; the sleeps
 * here only place an operation in time, and each outcome is checked
 * whichever way the race went.
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
#define MS_NS 1000000L

/* ------------------------------------------------------------------------ */
/* A checkout's deadline racing a checkin                                   */

#define RACE_PAIRS 40
#define RACE_TIMEOUT_MS 1
/* Histogram of when the checkin began relative to the waiter's deadline
 * (its start + 1 ms; the true deadline is a little later). */
#define RACE_BINS 8
static const int64_t race_bin_edges_us[RACE_BINS - 1] = {-200, -50, -10, 0, 10, 50, 200};

typedef struct race_pair {
    respool_t *pool;
    unsigned iterations;
    long fairness_us;
    pthread_barrier_t start, done;
    int holder;                   /* which thread (0 or 1) holds the resource this round */
    respool_lease_t lease[2];     /* each thread's lease while it holds one */
    atomic_llong waiter_start_ns; /* published by the waiter just before its checkout */
    int waiter_rc;
    int64_t waiter_t0, waiter_t1; /* around the waiter's checkout */
    int64_t checkin_t0, checkin_t1; /* around the holder's checkin */
    /* Outcomes. */
    uint64_t iterations_done;
    uint64_t early;      /* checkin returned before the deadline: must be served  */
    uint64_t late;       /* waiter returned before the checkin began: timed out   */
    uint64_t contested_ok, contested_timeout; /* the two overlapped               */
    uint64_t served_after_deadline; /* OK returned past start + 1 ms            */
    uint64_t bins[RACE_BINS];
    int bad;
    char why[256];
    stress_thread_t threads[2];
} race_pair_t;

typedef struct {
    race_pair_t *pair;
    int me;
} race_party_t;

/* Record the first problem of a pair. */
static void pair_bad(race_pair_t *p, unsigned iteration, const char *what, int rc)
{
    if (p->bad++ == 0)
        snprintf(p->why, sizeof p->why, "iteration %u: %s (rc %d %s, fairness %ld us)",
                 iteration, what, rc, respool_strerror(rc), p->fairness_us);
}

/* Where the holder aims its checkin relative to the waiter's deadline. */
static int64_t race_offset_ns(uint32_t *seed)
{
    if (stress_below(seed, 2) == 0)
        return ((int64_t)stress_below(seed, 100001) - 50000); /* +-50 us  */
    return ((int64_t)stress_below(seed, 800001) - 400000);    /* +-400 us */
}

/* The holder's half of an iteration: wait until about the waiter's
 * deadline, then check the resource in. */
static void race_hold_and_return(race_pair_t *p, int me, uint32_t *seed, unsigned i)
{
    int64_t go = stress_now_ns();
    int64_t offset = race_offset_ns(seed);
    /* The waiter publishes its start just before calling checkout; look at
     * it once it has surely done so (offsets reach at most 400 us early). */
    stress_sleep_until_ns(go + 300000);
    int64_t base = atomic_load(&p->waiter_start_ns);
    if (base == 0)
        base = go;
    stress_sleep_until_ns(base + RACE_TIMEOUT_MS * MS_NS + offset);
    fake_unhold(p->lease[me].resource);
    p->checkin_t0 = stress_now_ns();
    int rc = respool_checkin(p->pool, &p->lease[me]);
    p->checkin_t1 = stress_now_ns();
    if (rc != RESPOOL_OK)
        pair_bad(p, i, "holder's checkin failed", rc);
}

/* The waiter's half: a checkout with the smallest timeout that waits. */
static void race_wait(race_pair_t *p, int me)
{
    respool_lease_t lease;
    int64_t t0 = stress_now_ns();
    atomic_store(&p->waiter_start_ns, t0);
    int rc = respool_checkout(p->pool, RACE_TIMEOUT_MS, &lease);
    p->waiter_t1 = stress_now_ns();
    p->waiter_t0 = t0;
    p->waiter_rc = rc;
    if (rc == RESPOOL_OK) {
        fake_hold(lease.resource); /* aborts if the holder still had it */
        p->lease[me] = lease;
    }
}

/* After both halves (run by the thread that held the resource): the pool
 * must show exactly one outcome; classify the timing; make sure someone
 * holds the resource for the next round. */
static void race_settle(race_pair_t *p, int me, unsigned i)
{
    int rc = p->waiter_rc;
    int64_t deadline = p->waiter_t0 + RACE_TIMEOUT_MS * MS_NS;
    respool_stats_t s = stats_of(p->pool);
    if (rc == RESPOOL_OK) {
        if (!(s.busy == 1 && s.idle == 0 && s.waiting == 0))
            pair_bad(p, i, "waiter served but the pool does not show one lease out", rc);
    } else if (rc == RESPOOL_ETIMEDOUT) {
        if (!(s.idle == 1 && s.busy == 0 && s.waiting == 0))
            pair_bad(p, i, "waiter timed out but the resource is not idle (lost)", rc);
        if (p->waiter_t1 < deadline)
            pair_bad(p, i, "timed out before its deadline", rc);
    } else {
        pair_bad(p, i, "unexpected checkout result", rc);
    }
    if (s.created != 1 || s.destroyed != 0)
        pair_bad(p, i, "a resource was made or destroyed", rc);

    if (p->checkin_t1 < deadline) {
        p->early++;
        if (rc != RESPOOL_OK)
            pair_bad(p, i, "returned before the waiter's deadline, yet not given to it", rc);
    } else if (p->checkin_t0 > p->waiter_t1) {
        p->late++;
        if (rc != RESPOOL_ETIMEDOUT)
            pair_bad(p, i, "the waiter left before the checkin but was served", rc);
    } else if (rc == RESPOOL_OK) {
        p->contested_ok++;
    } else {
        p->contested_timeout++;
    }
    if (rc == RESPOOL_OK && p->waiter_t1 >= deadline)
        p->served_after_deadline++;
    int64_t delta_us = (p->checkin_t0 - deadline) / 1000;
    int bin = 0;
    while (bin < RACE_BINS - 1 && delta_us >= race_bin_edges_us[bin])
        bin++;
    p->bins[bin]++;
    p->iterations_done++;

    atomic_store(&p->waiter_start_ns, 0);
    if (rc == RESPOOL_OK) {
        p->holder = 1 - me; /* the waiter keeps it and holds next round */
    } else {
        int rc2 = respool_checkout(p->pool, 0, &p->lease[me]);
        if (rc2 != RESPOOL_OK)
            pair_bad(p, i, "the idle resource could not be checked out", rc2);
        else
            fake_hold(p->lease[me].resource);
    }
}

/* One of the two threads of a pair; the roles follow the resource. */
static void *race_party_main(void *arg)
{
    race_party_t *party = arg;
    race_pair_t *p = party->pair;
    int me = party->me;
    uint32_t seed = 0x2545f491u ^ (uint32_t)((uintptr_t)p >> 4) ^ (uint32_t)me;
    stress_precise_timers();
    for (unsigned i = 0; i < p->iterations; i++) {
        pthread_barrier_wait(&p->start);
        if (p->bad)
            break; /* both threads see it after the barrier: the pair stops */
        bool holding = p->holder == me; /* read once: the holder rewrites it below */
        if (holding)
            race_hold_and_return(p, me, &seed, i);
        else
            race_wait(p, me);
        pthread_barrier_wait(&p->done);
        if (holding)
            race_settle(p, me, i);
    }
    return NULL;
}

/* RESPOOL_RACE_ITERATIONS (100,000) iterations of a waiter's 1 ms deadline
 * racing a checkin on a pool of one, spread over 40 pools run at once
 * (fairness: default, strict hand-off, and a bound so long that returns
 * always go idle with a wake-up). Each must end with the resource leased to
 * the waiter or idle; a return completed before the deadline must be
 * served; a timeout never comes early. */
Test(races_deadline, timeout_vs_checkin_at_deadline, .timeout = 180)
{
    long total = stress_env_long("RESPOOL_RACE_ITERATIONS", 100000, 1, 100000000);
    /* 40 pools at full size; fewer for a short run (under valgrind, where
     * every thread is one more to schedule on its single lock). */
    unsigned pairs = total / 250 < RACE_PAIRS ? (unsigned)(total / 250) : RACE_PAIRS;
    if (pairs == 0)
        pairs = 1;
    static race_pair_t p[RACE_PAIRS];
    static race_party_t parties[RACE_PAIRS][2];
    memset(p, 0, sizeof p);
    fake_init(&fk);
    static const long fairness[3] = {0, RESPOOL_FAIRNESS_STRICT, 10L * 1000 * 1000};
    for (unsigned k = 0; k < pairs; k++) {
        respool_config_t cfg = quiet_config(1, 0);
        cfg.fairness_us = fairness[k % 3];
        p[k].fairness_us = cfg.fairness_us;
        p[k].pool = make_pool(cfg, fake_factory_minimal(&fk));
        p[k].iterations = (unsigned)(total / pairs + ((long)k < total % pairs ? 1 : 0));
        pthread_barrier_init(&p[k].start, NULL, 2);
        pthread_barrier_init(&p[k].done, NULL, 2);
        CHECK_RC(respool_checkout(p[k].pool, 0, &p[k].lease[0]), RESPOOL_OK);
        fake_hold(p[k].lease[0].resource);
        p[k].holder = 0;
    }
    int64_t t0 = stress_now_ns();
    for (unsigned k = 0; k < pairs; k++)
        for (int me = 0; me < 2; me++) {
            parties[k][me] = (race_party_t){&p[k], me};
            cr_assert_eq(stress_thread_start(&p[k].threads[me], NULL, race_party_main,
                                        &parties[k][me]),
                         0);
        }
    for (unsigned k = 0; k < pairs; k++)
        for (int me = 0; me < 2; me++)
            cr_assert(stress_thread_join(&p[k].threads[me], 170000), "pair %u thread %d stuck", k, me);
    double took = (double)(stress_now_ns() - t0) / 1e9;

    uint64_t done = 0, early = 0, late = 0, contested_ok = 0, contested_timeout = 0;
    uint64_t after_deadline = 0, bins[RACE_BINS] = {0};
    for (unsigned k = 0; k < pairs; k++) {
        cr_assert_eq(p[k].bad, 0, "pair %u: %d problems, first: %s", k, p[k].bad, p[k].why);
        done += p[k].iterations_done;
        early += p[k].early;
        late += p[k].late;
        contested_ok += p[k].contested_ok;
        contested_timeout += p[k].contested_timeout;
        after_deadline += p[k].served_after_deadline;
        for (int b = 0; b < RACE_BINS; b++)
            bins[b] += p[k].bins[b];
        /* The last holder gives it back: one resource, idle, never destroyed. */
        respool_lease_t *last = &p[k].lease[p[k].holder];
        fake_unhold(last->resource);
        CHECK_RC(respool_checkin(p[k].pool, last), RESPOOL_OK);
        respool_stats_t s = stats_of(p[k].pool);
        cr_assert(s.idle == 1 && s.busy == 0 && s.created == 1 && s.destroyed == 0,
                  "pair %u: idle %u busy %u created %" PRIu64 " destroyed %" PRIu64, k, s.idle,
                  s.busy, s.created, s.destroyed);
        uint64_t served = p[k].early + p[k].contested_ok;
        uint64_t timed_out = p[k].late + p[k].contested_timeout;
        cr_assert_eq(s.timeouts, timed_out, "pair %u: stats.timeouts %" PRIu64 ", saw %" PRIu64,
                     k, s.timeouts, timed_out);
        /* The holder's own checkouts: the first, and one after each timeout. */
        cr_assert_eq(s.checkouts, served + 1 + timed_out);
        respool_free(p[k].pool);
        pthread_barrier_destroy(&p[k].start);
        pthread_barrier_destroy(&p[k].done);
    }
    ASSERT_EQ_U(done, (uint64_t)total);
    fake_fini(&fk);
    stress_report("race deadline-vs-checkin: %" PRIu64 " iterations on %u pools (%u threads) in "
                "%.2f s: %" PRIu64 " returned before the deadline (all served), %" PRIu64
                " after the waiter left (all timed out), %" PRIu64 " overlapping: %" PRIu64
                " served, %" PRIu64 " timed out; %" PRIu64 " served past start + 1 ms",
                done, pairs, 2 * pairs, took, early, late, contested_ok + contested_timeout,
                contested_ok, contested_timeout, after_deadline);
    stress_report("race deadline-vs-checkin: checkin start - deadline (us): <-200 %" PRIu64
                ", -200..-50 %" PRIu64 ", -50..-10 %" PRIu64 ", -10..0 %" PRIu64 ", 0..10 %"
                PRIu64 ", 10..50 %" PRIu64 ", 50..200 %" PRIu64 ", >=200 %" PRIu64,
                bins[0], bins[1], bins[2], bins[3], bins[4], bins[5], bins[6], bins[7]);
    /* The race must actually have been run, not only its two easy sides. */
    if (total >= 10000)
        cr_assert_gt(contested_ok + contested_timeout, 0, "no iteration overlapped");
}

/* ------------------------------------------------------------------------ */
/* A deadline racing the wake-up for a returned resource                    */

#define TRIOS 16
#define SECOND_TIMEOUT_MS 1000 /* far beyond any wake-up: reached only if one is lost */

typedef struct trio {
    respool_t *pool;
    unsigned iterations;
    long fairness_us;
    pthread_barrier_t start, done;
    respool_lease_t held;        /* the holder's lease                        */
    atomic_llong first_start_ns; /* the first waiter's start, for the holder  */
    atomic_bool first_returned;  /* the first waiter's checkout has returned  */
    int first_rc, second_rc;
    int64_t first_t0, first_t1, second_waited_ns;
    uint64_t first_served, first_timed_out;
    int bad;
    char why[256];
    stress_thread_t threads[3];
} trio_t;

typedef struct {
    trio_t *trio;
    int role; /* 0 holder, 1 first waiter (1 ms), 2 second waiter */
} trio_party_t;

/* Record the first problem of a trio. */
static void trio_bad(trio_t *t, unsigned iteration, const char *what, int rc)
{
    if (t->bad++ == 0)
        snprintf(t->why, sizeof t->why, "iteration %u: %s (rc %d %s, fairness %ld us)",
                 iteration, what, rc, respool_strerror(rc), t->fairness_us);
}

/* The holder: check the resource in at about the first waiter's deadline;
 * after the round, check that it is back and take it again. */
static void trio_holder(trio_t *t, uint32_t *seed, unsigned i)
{
    int64_t go = stress_now_ns();
    int64_t offset = race_offset_ns(seed);
    stress_sleep_until_ns(go + 300000);
    int64_t base = atomic_load(&t->first_start_ns);
    stress_sleep_until_ns((base ? base : go) + RACE_TIMEOUT_MS * MS_NS + offset);
    fake_unhold(t->held.resource);
    int rc = respool_checkin(t->pool, &t->held);
    if (rc != RESPOOL_OK)
        trio_bad(t, i, "holder's checkin failed", rc);
}

/* The first waiter: 1 ms; if served, give it back at once. */
static void trio_first(trio_t *t, unsigned i)
{
    respool_lease_t lease;
    int64_t t0 = stress_now_ns();
    atomic_store(&t->first_start_ns, t0);
    int rc = respool_checkout(t->pool, RACE_TIMEOUT_MS, &lease);
    t->first_t1 = stress_now_ns();
    t->first_t0 = t0;
    t->first_rc = rc;
    atomic_store(&t->first_returned, true);
    if (rc == RESPOOL_OK) {
        fake_hold(lease.resource);
        fake_unhold(lease.resource);
        int rc2 = respool_checkin(t->pool, &lease);
        if (rc2 != RESPOOL_OK)
            trio_bad(t, i, "first waiter's checkin failed", rc2);
    }
}

/* The second waiter: queue behind the first, with a timeout that only a
 * lost wake-up can exhaust; give the resource back at once. */
static void trio_second(trio_t *t, unsigned i)
{
    /* Behind the first in line (unless it has already left): an awaited
     * condition, polled. */
    while (!atomic_load(&t->first_returned) && stats_of(t->pool).waiting == 0)
        pass_time_us(10);
    respool_lease_t lease;
    int64_t t0 = stress_now_ns();
    int rc = respool_checkout(t->pool, SECOND_TIMEOUT_MS, &lease);
    t->second_waited_ns = stress_now_ns() - t0;
    t->second_rc = rc;
    if (rc == RESPOOL_OK) {
        fake_hold(lease.resource);
        fake_unhold(lease.resource);
        int rc2 = respool_checkin(t->pool, &lease);
        if (rc2 != RESPOOL_OK)
            trio_bad(t, i, "second waiter's checkin failed", rc2);
    }
}

/* After a round (holder's thread): both waiters' outcomes, the resource
 * idle; then the holder takes it for the next round. */
static void trio_settle(trio_t *t, unsigned i)
{
    /* A waiter that takes an idle resource when its own timer wakes it is
     * served too, so "served" is not enough: it must be before its
     * deadline, long after the resource came back. */
    if (t->second_rc != RESPOOL_OK || t->second_waited_ns >= SECOND_TIMEOUT_MS * MS_NS)
        trio_bad(t, i, "second waiter not served before its deadline though the resource "
                       "came back (a lost wake-up)", t->second_rc);
    if (t->first_rc == RESPOOL_OK) {
        t->first_served++;
    } else if (t->first_rc == RESPOOL_ETIMEDOUT) {
        t->first_timed_out++;
        if (t->first_t1 - t->first_t0 < RACE_TIMEOUT_MS * MS_NS)
            trio_bad(t, i, "first waiter timed out before its deadline", t->first_rc);
    } else {
        trio_bad(t, i, "first waiter: unexpected result", t->first_rc);
    }
    respool_stats_t s = stats_of(t->pool);
    if (!(s.idle == 1 && s.busy == 0 && s.waiting == 0))
        trio_bad(t, i, "after the round the resource is not idle", 0);
    atomic_store(&t->first_start_ns, 0);
    atomic_store(&t->first_returned, false);
    int rc = respool_checkout(t->pool, 0, &t->held);
    if (rc != RESPOOL_OK)
        trio_bad(t, i, "the idle resource could not be checked out", rc);
    else
        fake_hold(t->held.resource);
}

/* One of the three threads of a trio. */
static void *trio_party_main(void *arg)
{
    trio_party_t *party = arg;
    trio_t *t = party->trio;
    uint32_t seed = 0x68e31da4u ^ (uint32_t)((uintptr_t)t >> 4);
    stress_precise_timers();
    for (unsigned i = 0; i < t->iterations; i++) {
        pthread_barrier_wait(&t->start);
        if (t->bad)
            break; /* all three see it after the barrier */
        if (party->role == 0)
            trio_holder(t, &seed, i);
        else if (party->role == 1)
            trio_first(t, i);
        else
            trio_second(t, i);
        pthread_barrier_wait(&t->done);
        if (party->role == 0)
            trio_settle(t, i);
    }
    return NULL;
}

/* A fifth of RESPOOL_RACE_ITERATIONS (20,000) rounds on 16 pools of one: the
 * resource comes back at about the first waiter's 1 ms deadline, so that
 * waiter's wake-up (idle resource + kick; or a hand-off) races its timeout.
 * Whichever wins, the second waiter in line must be served: a first waiter
 * that times out holding a wake-up must pass it on. */
Test(races_deadline, timeout_passes_wakeup_on, .timeout = 180)
{
    long total = stress_env_long("RESPOOL_RACE_ITERATIONS", 100000, 1, 100000000) / 5;
    if (total < 1)
        total = 1;
    unsigned trios = total / 250 < TRIOS ? (unsigned)(total / 250) : TRIOS;
    if (trios == 0)
        trios = 1;
    static trio_t t[TRIOS];
    static trio_party_t parties[TRIOS][3];
    memset(t, 0, sizeof t);
    fake_init(&fk);
    static const long fairness[3] = {10L * 1000 * 1000, 0, RESPOOL_FAIRNESS_STRICT};
    for (unsigned k = 0; k < trios; k++) {
        respool_config_t cfg = quiet_config(1, 0);
        cfg.fairness_us = fairness[k % 3];
        t[k].fairness_us = cfg.fairness_us;
        t[k].pool = make_pool(cfg, fake_factory_minimal(&fk));
        t[k].iterations = (unsigned)(total / trios + ((long)k < total % trios ? 1 : 0));
        pthread_barrier_init(&t[k].start, NULL, 3);
        pthread_barrier_init(&t[k].done, NULL, 3);
        CHECK_RC(respool_checkout(t[k].pool, 0, &t[k].held), RESPOOL_OK);
        fake_hold(t[k].held.resource);
    }
    int64_t t0 = stress_now_ns();
    for (unsigned k = 0; k < trios; k++)
        for (int role = 0; role < 3; role++) {
            parties[k][role] = (trio_party_t){&t[k], role};
            cr_assert_eq(stress_thread_start(&t[k].threads[role], NULL, trio_party_main,
                                             &parties[k][role]),
                         0);
        }
    for (unsigned k = 0; k < trios; k++)
        for (int role = 0; role < 3; role++)
            cr_assert(stress_thread_join(&t[k].threads[role], 170000), "trio %u thread %d stuck",
                      k, role);
    double took = (double)(stress_now_ns() - t0) / 1e9;
    uint64_t served = 0, timed_out = 0;
    for (unsigned k = 0; k < trios; k++) {
        cr_assert_eq(t[k].bad, 0, "trio %u: %d problems, first: %s", k, t[k].bad, t[k].why);
        served += t[k].first_served;
        timed_out += t[k].first_timed_out;
        fake_unhold(t[k].held.resource);
        CHECK_RC(respool_checkin(t[k].pool, &t[k].held), RESPOOL_OK);
        respool_stats_t s = stats_of(t[k].pool);
        cr_assert(s.idle == 1 && s.created == 1 && s.destroyed == 0);
        respool_free(t[k].pool);
        pthread_barrier_destroy(&t[k].start);
        pthread_barrier_destroy(&t[k].done);
    }
    ASSERT_EQ_U(served + timed_out, (uint64_t)total);
    fake_fini(&fk);
    stress_report("race deadline-vs-wakeup: %ld rounds on %u pools (%u threads) in %.2f s: "
                  "first waiter served %" PRIu64 ", timed out %" PRIu64
                  "; second waiter served every time",
                  total, trios, 3 * trios, took, served, timed_out);
}

/* ------------------------------------------------------------------------ */
/* Checkouts racing shutdown                                                */

#define SD_CLIENTS 12
#define SD_HELD_MAX 2

typedef struct sd_round sd_round_t;

typedef struct sd_client {
    sd_round_t *round;
    uint32_t seed;
    uint64_t calls, ok, eshutdown, timedout, full, efactory, checkins, destroyeds;
    uint64_t served_in_shutdown;
    int bad;
    char why[200];
    stress_thread_t thread;
} sd_client_t;

struct sd_round {
    respool_t *pool;
    pthread_barrier_t go;
    atomic_bool shutdown_called;   /* set just before respool_shutdown   */
    atomic_bool shutdown_returned; /* set after it returned (any result) */
    respool_lease_t held[SD_HELD_MAX];
    unsigned n_held;
    long return_after_us;          /* the returner's delay               */
    uint32_t seed;
    sd_client_t clients[SD_CLIENTS];
    stress_thread_t returner;
};

/* Record a client's first problem. */
static void sd_bad(sd_client_t *c, const char *what, long timeout, int rc)
{
    if (c->bad++ == 0)
        snprintf(c->why, sizeof c->why, "%s (timeout %ld): rc %d (%s)", what, timeout, rc,
                 respool_strerror(rc));
}

/* A client: checkouts with random timeouts until refused by shutdown (and
 * once more to see the refusal stick). */
static void *sd_client_main(void *arg)
{
    static const long timeouts[] = {0, 1, 3, -1};
    sd_client_t *c = arg;
    sd_round_t *r = c->round;
    pthread_barrier_wait(&r->go);
    int refusals = 0;
    while (refusals < 2) {
        long timeout = timeouts[stress_below(&c->seed, 4)];
        bool after_return = atomic_load(&r->shutdown_returned);
        respool_lease_t lease;
        c->calls++;
        int rc = respool_checkout(r->pool, timeout, &lease);
        if ((after_return || refusals > 0) && rc != RESPOOL_ESHUTDOWN)
            sd_bad(c, "checkout after shutdown was not refused", timeout, rc);
        switch (rc) {
        case RESPOOL_OK: {
            c->ok++;
            if (atomic_load(&r->shutdown_called))
                c->served_in_shutdown++;
            fake_hold(lease.resource);
            pass_time_us((long)stress_below(&c->seed, 100));
            fake_unhold(lease.resource);
            int rc2;
            if (stress_below(&c->seed, 5) == 0) {
                rc2 = respool_destroyed(r->pool, &lease);
                c->destroyeds++;
            } else {
                rc2 = respool_checkin(r->pool, &lease);
                c->checkins++;
            }
            if (rc2 != RESPOOL_OK)
                sd_bad(c, "giving a lease back failed", timeout, rc2);
            break;
        }
        case RESPOOL_ESHUTDOWN:
            c->eshutdown++;
            refusals++;
            if (!atomic_load(&r->shutdown_called))
                sd_bad(c, "ESHUTDOWN before shutdown", timeout, rc);
            break;
        case RESPOOL_ETIMEDOUT:
            c->timedout++;
            if (timeout <= 0)
                sd_bad(c, "ETIMEDOUT without a timeout", timeout, rc);
            break;
        case RESPOOL_EFULL:
            c->full++;
            if (timeout != 0)
                sd_bad(c, "EFULL with a timeout", timeout, rc);
            break;
        case RESPOOL_EFACTORY:
            c->efactory++;
            if (timeout != 0)
                sd_bad(c, "EFACTORY with a timeout", timeout, rc);
            break;
        default:
            sd_bad(c, "unexpected checkout result", timeout, rc);
            break;
        }
    }
    return NULL;
}

/* Returns the leases the round began with, a little after the start. */
static void *sd_returner_main(void *arg)
{
    sd_round_t *r = arg;
    pthread_barrier_wait(&r->go);
    pass_time_us(r->return_after_us);
    for (unsigned i = 0; i < r->n_held; i++) {
        fake_unhold(r->held[i].resource);
        int rc = i % 2 ? respool_destroyed(r->pool, &r->held[i])
                       : respool_checkin(r->pool, &r->held[i]);
        if (rc != RESPOOL_OK)
            abort(); /* a valid lease refused: reported by the crash */
    }
    return NULL;
}

/* respool_shutdown(pool, timeout) on its own thread. */
typedef struct {
    respool_t *pool;
    long timeout;
    int rc;
    stress_thread_t thread;
} shutdown_call_t;

/* The shutdown thread's body. */
static void *shutdown_call_main(void *arg)
{
    shutdown_call_t *call = arg;
    call->rc = respool_shutdown(call->pool, call->timeout);
    return NULL;
}

/* Totals of every round. */
typedef struct {
    uint64_t rounds, ebusy_rounds, calls, ok, eshutdown, timedout, full, efactory;
    uint64_t checkins, destroyeds, served_in_shutdown, create_failures, created;
    uint64_t busy_at_shutdown, waiting_at_shutdown, creating_at_shutdown;
} sd_totals_t;

/* One round: a fresh pool, clients released together, shutdown at a random
 * instant; everything checked. */
static void sd_round(sd_totals_t *tot, uint32_t seed)
{
    static sd_round_t r;
    memset(&r, 0, sizeof r);
    r.seed = seed;
    fake_init(&fk);
    fake_set_create_delay(&fk, (long)stress_below(&r.seed, 2));
    respool_config_t cfg = quiet_config(2, 2);
    cfg.fairness_us = stress_below(&r.seed, 2) ? RESPOOL_FAIRNESS_STRICT : 0;
    cfg.max_creating = 2;
    cfg.retry_initial_ms = 1;
    cfg.retry_max_ms = 5;
    r.pool = make_pool(cfg, fake_factory_minimal(&fk));
    fake_set_fail_next(&fk, (int)stress_below(&r.seed, 3));
    r.n_held = stress_below(&r.seed, SD_HELD_MAX + 1);
    for (unsigned i = 0; i < r.n_held; i++) {
        CHECK_RC(respool_checkout(r.pool, 0, &r.held[i]), RESPOOL_OK);
        fake_hold(r.held[i].resource);
    }
    r.return_after_us = (long)stress_below(&r.seed, 3000);
    pthread_barrier_init(&r.go, NULL, SD_CLIENTS + 2);
    /* Small stacks: a fresh 8 MB stack per thread and round is slow to map
     * under valgrind. */
    pthread_attr_t small_stack;
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 256 * 1024);
    for (unsigned i = 0; i < SD_CLIENTS; i++) {
        r.clients[i].round = &r;
        r.clients[i].seed = seed * 2654435761u + i + 1;
        cr_assert_eq(stress_thread_start(&r.clients[i].thread, &small_stack, sd_client_main,
                                    &r.clients[i]),
                     0);
    }
    cr_assert_eq(stress_thread_start(&r.returner, &small_stack, sd_returner_main, &r), 0);
    pthread_attr_destroy(&small_stack);

    pthread_barrier_wait(&r.go);

    pass_time_us((long)stress_below(&r.seed, 1500));
    /* Mostly without a deadline (must return OK); sometimes with 0-2 ms,
     * which may end in EBUSY while leases are still out. On its own thread,
     * so that a shutdown that never returns fails the test in bounded time. */
    long deadline = stress_below(&r.seed, 4) == 0 ? (long)stress_below(&r.seed, 3) : -1;
    respool_stats_t before = stats_of(r.pool);
    atomic_store(&r.shutdown_called, true);
    shutdown_call_t call = {.pool = r.pool, .timeout = deadline, .rc = -1};
    cr_assert_eq(stress_thread_start(&call.thread, NULL, shutdown_call_main, &call), 0);
    cr_assert(stress_thread_join(&call.thread, JOIN_MS), "round %" PRIu64 ": respool_shutdown("
              "%ld) did not return (%u leases out)", tot->rounds, deadline, stats_of(r.pool).busy);
    int rc = call.rc;
    atomic_store(&r.shutdown_returned, true);
    if (rc == RESPOOL_EBUSY) {
        cr_assert_geq(deadline, 0, "EBUSY from a shutdown without deadline");
        tot->ebusy_rounds++;
    } else {
        CHECK_RC(rc, RESPOOL_OK);
        /* OK: every lease came back and every resource made is destroyed. */
        ASSERT_EQ_U(FAKE_GET(&fk, created), FAKE_GET(&fk, destroyed));
    }
    for (unsigned i = 0; i < SD_CLIENTS; i++)
        cr_assert(stress_thread_join(&r.clients[i].thread, JOIN_MS), "client %u stuck", i);
    cr_assert(stress_thread_join(&r.returner, JOIN_MS), "returner stuck");
    CHECK_RC(respool_shutdown(r.pool, JOIN_MS), RESPOOL_OK); /* nothing is out any more */
    ASSERT_EQ_U(FAKE_GET(&fk, created), FAKE_GET(&fk, destroyed));

    uint64_t ok = 0, destroyeds = 0;
    for (unsigned i = 0; i < SD_CLIENTS; i++) {
        sd_client_t *c = &r.clients[i];
        cr_assert_eq(c->bad, 0, "round %" PRIu64 " client %u: %s", tot->rounds, i, c->why);
        ok += c->ok;
        destroyeds += c->destroyeds;
        tot->calls += c->calls;
        tot->eshutdown += c->eshutdown;
        tot->timedout += c->timedout;
        tot->full += c->full;
        tot->efactory += c->efactory;
        tot->checkins += c->checkins;
        tot->served_in_shutdown += c->served_in_shutdown;
    }
    respool_stats_t s = stats_of(r.pool);
    cr_assert(s.idle == 0 && s.busy == 0 && s.waiting == 0 && s.creating == 0 &&
                  s.destroying == 0 && s.created == s.destroyed,
              "round %" PRIu64 " after shutdown: idle %u busy %u waiting %u creating %u "
              "destroying %u created %" PRIu64 " destroyed %" PRIu64,
              tot->rounds, s.idle, s.busy, s.waiting, s.creating, s.destroying, s.created,
              s.destroyed);
    ASSERT_EQ_U(s.checkouts, ok + r.n_held);
    ASSERT_EQ_U(s.reported_broken, destroyeds + r.n_held / 2);
    tot->ok += ok;
    tot->destroyeds += destroyeds;
    tot->create_failures += s.create_failures;
    tot->created += s.created;
    tot->busy_at_shutdown += before.busy;
    tot->waiting_at_shutdown += before.waiting;
    tot->creating_at_shutdown += before.creating;
    tot->rounds++;
    pthread_barrier_destroy(&r.go);
    respool_free(r.pool);
    fake_fini(&fk);
}

/* Rounds (for half of RESPOOL_STRESS_MS, at least 20) of 12 threads checking
 * out while shutdown begins; every checkout ends OK (lease returned),
 * refused, timed out, or full/failed for timeout 0; after shutdown returned
 * every checkout is refused; shutdown returns OK (or EBUSY for a deadline)
 * and every resource is destroyed exactly once. */
Test(races_shutdown, checkouts_vs_shutdown, .timeout = 120)
{
    long budget_ms = stress_duration_ms() / 2;
    sd_totals_t tot;
    memset(&tot, 0, sizeof tot);
    int64_t t0 = stress_now_ns();
    uint32_t seed = 0x51ed270bu;
    while (tot.rounds < 20 || stress_now_ns() - t0 < budget_ms * MS_NS) {
        sd_round(&tot, stress_rand(&seed));
        if (tot.rounds >= 100000)
            break;
    }
    stress_report("race checkouts-vs-shutdown: %" PRIu64 " rounds of %d threads in %.2f s "
                "(%" PRIu64 " with an EBUSY deadline): %" PRIu64 " checkouts: %" PRIu64
                " ok (%" PRIu64 " served after shutdown began), %" PRIu64 " eshutdown, %" PRIu64
                " timed out, %" PRIu64 " full, %" PRIu64 " efactory; %" PRIu64 " checkins, %"
                PRIu64 " destroyed; %" PRIu64 " resources made and destroyed, %" PRIu64
                " create failures; at shutdown on average %.2f busy, %.2f waiting, %.2f "
                "creating",
                tot.rounds, SD_CLIENTS, (double)(stress_now_ns() - t0) / 1e9, tot.ebusy_rounds,
                tot.calls, tot.ok, tot.served_in_shutdown, tot.eshutdown, tot.timedout,
                tot.full, tot.efactory, tot.checkins, tot.destroyeds, tot.created,
                tot.create_failures, (double)tot.busy_at_shutdown / tot.rounds,
                (double)tot.waiting_at_shutdown / tot.rounds,
                (double)tot.creating_at_shutdown / tot.rounds);
}

/* ------------------------------------------------------------------------ */
/* respool_destroyed racing respool_resize                                  */

#define RZ_WORKERS 8
#define RZ_RESIZERS 2
#define RZ_FINAL_SIZE 3
#define RZ_FINAL_OVERFLOW 1

typedef struct rz_run rz_run_t;

typedef struct rz_worker {
    rz_run_t *run;
    uint32_t seed;
    uint64_t calls, ok, timedout, full, efactory, checkins, destroyeds, resizes;
    int bad;
    char why[200];
    stress_thread_t thread;
} rz_worker_t;

struct rz_run {
    respool_t *pool;
    op_ledger_t ledger;
    stats_checker_t checker;
    atomic_bool stop_resizing, stop;
    rz_worker_t workers[RZ_WORKERS];
    rz_worker_t resizers[RZ_RESIZERS];
};

/* Record a thread's first problem. */
static void rz_bad(rz_worker_t *w, const char *what, long timeout, int rc)
{
    if (w->bad++ == 0)
        snprintf(w->why, sizeof w->why, "%s (timeout %ld): rc %d (%s)", what, timeout, rc,
                 respool_strerror(rc));
}

/* A worker: check out, hold briefly, and mostly report the resource
 * destroyed (so replacements are always being made), else check it in. */
static void *rz_worker_main(void *arg)
{
    static const long timeouts[] = {0, 2, 10};
    rz_worker_t *w = arg;
    rz_run_t *run = w->run;
    while (!atomic_load(&run->stop)) {
        long timeout = timeouts[stress_below(&w->seed, 3)];
        respool_lease_t lease;
        w->calls++;
        int rc = respool_checkout(run->pool, timeout, &lease);
        if (rc == RESPOOL_OK) {
            w->ok++;
            atomic_fetch_add(&run->ledger.acquired, 1);
            fake_hold(lease.resource);
            pass_time_us((long)stress_below(&w->seed, 100));
            fake_unhold(lease.resource);
            atomic_fetch_add(&run->ledger.released, 1);
            int rc2;
            if (stress_below(&w->seed, 10) < 6) {
                atomic_fetch_add(&run->ledger.destroy_begun, 1);
                rc2 = respool_destroyed(run->pool, &lease);
                atomic_fetch_add(&run->ledger.destroy_done, 1);
                w->destroyeds++;
            } else {
                rc2 = respool_checkin(run->pool, &lease);
                w->checkins++;
            }
            if (rc2 != RESPOOL_OK)
                rz_bad(w, "giving a lease back failed", timeout, rc2);
        } else if (rc == RESPOOL_ETIMEDOUT && timeout > 0) {
            w->timedout++;
            atomic_fetch_add(&run->ledger.timeouts, 1);
        } else if (rc == RESPOOL_EFULL && timeout == 0) {
            w->full++;
            atomic_fetch_add(&run->ledger.timeouts, 1);
        } else if (rc == RESPOOL_EFACTORY && timeout == 0) {
            w->efactory++;
        } else {
            rz_bad(w, "unexpected checkout result", timeout, rc);
        }
    }
    return NULL;
}

/* A resizer: grow and shrink at random (size 0-8, overflow 0-4, not both 0)
 * every 0-300 us. */
static void *rz_resizer_main(void *arg)
{
    rz_worker_t *w = arg;
    rz_run_t *run = w->run;
    while (!atomic_load(&run->stop_resizing)) {
        unsigned size = stress_below(&w->seed, 9);
        unsigned overflow = stress_below(&w->seed, 5);
        if (size + overflow == 0)
            overflow = 1;
        int rc = respool_resize(run->pool, size, overflow);
        if (rc != RESPOOL_OK)
            rz_bad(w, "resize", 0, rc);
        w->resizes++;
        pass_time_us((long)stress_below(&w->seed, 300));
    }
    return NULL;
}

/* Stats predicate: the pool is at rest at the last size set. */
static bool rz_settled(const respool_stats_t *s, void *arg)
{
    (void)arg;
    return s->size == RZ_FINAL_SIZE && s->idle == RZ_FINAL_SIZE && s->busy == 0 &&
           s->creating == 0 && s->destroying == 0 && s->waiting == 0;
}

/* One run: workers reporting leases destroyed while resizers resize, for
 * run_ms; then the last size is set and the pool must settle there. */
static void rz_run(const char *name, long overflow_idle_ms, long run_ms)
{
    fake_init(&fk);
    fake_set_create_delay(&fk, 1); /* creates are in flight when shrinks come */
    respool_config_t cfg = quiet_config(4, 2);
    cfg.overflow_idle_ms = overflow_idle_ms;
    cfg.retry_initial_ms = 1;
    cfg.retry_max_ms = 5;
    static rz_run_t run;
    memset(&run, 0, sizeof run);
    run.pool = make_pool(cfg, fake_factory_minimal(&fk));

    stats_checker_t *c = &run.checker;
    c->pool = run.pool;
    c->factory = &fk;
    c->ledger = &run.ledger;
    c->capacity_bound = 8 + 4;
    c->threads = RZ_WORKERS;
    c->max_creating = 16;
    for (unsigned i = 0; i <= 8; i++)
        c->sizes[i] = i;
    c->n_sizes = 9;
    for (unsigned i = 0; i <= 4; i++)
        c->overflows[i] = i;
    c->n_overflows = 5;
    checker_start(c);

    int64_t t0 = stress_now_ns();
    for (unsigned i = 0; i < RZ_WORKERS; i++) {
        run.workers[i] = (rz_worker_t){.run = &run, .seed = 0x8badf00du + i * 7919u};
        cr_assert_eq(stress_thread_start(&run.workers[i].thread, NULL, rz_worker_main,
                                    &run.workers[i]),
                     0);
    }
    for (unsigned i = 0; i < RZ_RESIZERS; i++) {
        run.resizers[i] = (rz_worker_t){.run = &run, .seed = 0xfeedbeefu + i * 104729u};
        cr_assert_eq(stress_thread_start(&run.resizers[i].thread, NULL, rz_resizer_main,
                                    &run.resizers[i]),
                     0);
    }
    pass_time_ms(run_ms);
    atomic_store(&run.stop_resizing, true);
    for (unsigned i = 0; i < RZ_RESIZERS; i++) {
        cr_assert(stress_thread_join(&run.resizers[i].thread, JOIN_MS));
        cr_assert_eq(run.resizers[i].bad, 0, "resizer %u: %s", i, run.resizers[i].why);
    }
    CHECK_RC(respool_resize(run.pool, RZ_FINAL_SIZE, RZ_FINAL_OVERFLOW), RESPOOL_OK);
    pass_time_ms(run_ms / 10); /* the workers go on at the final size */
    atomic_store(&run.stop, true);
    int stuck = -1;
    for (unsigned i = 0; i < RZ_WORKERS && stuck < 0; i++)
        if (!stress_thread_join(&run.workers[i].thread, JOIN_MS))
            stuck = (int)i;
    fake_set_create_delay(&fk, 0);
    bool settled = stuck < 0 && pool_wait(run.pool, rz_settled, NULL, JOIN_MS);
    double took = (double)(stress_now_ns() - t0) / 1e9;
    cr_assert(checker_stop(c));
    /* The checker's finding first: it usually explains the rest. */
    cr_assert_eq(c->violations, 0, "%s: %d invariant violations in %" PRIu64 " samples, "
                 "first: %s", name, c->violations, c->samples, c->first);
    cr_assert_eq(stuck, -1, "%s: worker %d stuck", name, stuck);
    cr_assert(settled,
              "%s: the pool did not settle at size %d: idle %u busy %u creating %u "
              "destroying %u",
              name, RZ_FINAL_SIZE, stats_of(run.pool).idle, stats_of(run.pool).busy,
              stats_of(run.pool).creating, stats_of(run.pool).destroying);

    uint64_t calls = 0, ok = 0, timedout = 0, full = 0, efactory = 0, checkins = 0;
    uint64_t destroyeds = 0, resizes = 0;
    for (unsigned i = 0; i < RZ_WORKERS; i++) {
        rz_worker_t *w = &run.workers[i];
        cr_assert_eq(w->bad, 0, "%s worker %u: %s", name, i, w->why);
        calls += w->calls;
        ok += w->ok;
        timedout += w->timedout;
        full += w->full;
        efactory += w->efactory;
        checkins += w->checkins;
        destroyeds += w->destroyeds;
    }
    for (unsigned i = 0; i < RZ_RESIZERS; i++)
        resizes += run.resizers[i].resizes;
    respool_stats_t s = stats_of(run.pool);
    ASSERT_EQ_U(s.created - s.destroyed, RZ_FINAL_SIZE);
    ASSERT_EQ_U(s.checkouts, ok);
    ASSERT_EQ_U(s.reported_broken, destroyeds);
    ASSERT_EQ_U(s.timeouts, timedout + full);
    CHECK_RC(respool_shutdown(run.pool, -1), RESPOOL_OK);
    ASSERT_EQ_U(FAKE_GET(&fk, created), FAKE_GET(&fk, destroyed));
    stress_report("race destroyed-vs-resize (%s): %d workers + %d resizers, %.2f s: %" PRIu64
                " checkouts (%" PRIu64 " ok, %" PRIu64 " timed out, %" PRIu64 " full, %" PRIu64
                " efactory), %" PRIu64 " destroyed, %" PRIu64 " checkins, %" PRIu64
                " resizes; pool: %" PRIu64 " made, %" PRIu64 " dismissed by shrinks or as "
                "overflow, settled at %u idle; checker: %" PRIu64 " samples",
                name, RZ_WORKERS, RZ_RESIZERS, took, calls, ok, timedout, full, efactory,
                destroyeds, checkins, resizes, s.created, s.dismissed, s.idle, c->samples);
    respool_free(run.pool);
    fake_fini(&fk);
}

/* Overflow dismissed at checkin (Poolboy): shrinks destroy idle at once. */
Test(races_resize, destroyed_vs_resize_dismiss_at_checkin, .timeout = 120)
{
    rz_run("overflow_idle_ms 0", 0, stress_duration_ms() / 3);
}

/* Overflow left idle for 4 ms: shrinks leave idle overflow to the reaper. */
Test(races_resize, destroyed_vs_resize_reaper, .timeout = 120)
{
    rz_run("overflow_idle_ms 4", 4, stress_duration_ms() / 3);
}
