/*
 * fake_factory.h — a fault-injecting factory for the core's tests.
 *
 * Real enough to find bugs: every resource is a heap record that knows
 * whether it is in use (two holders at once are caught), whether it was
 * destroyed (a second destroy aborts the test process), and the factory
 * can fail, stall, or block until released. Counters reconcile created
 * against destroyed.
 */
#ifndef FAKE_FACTORY_H
#define FAKE_FACTORY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "respool.h"

#define FAKE_RESOURCE_MAGIC 0x5e50001u
#define FAKE_MAX_RESOURCES 65536

typedef struct fake_resource {
    unsigned magic;       /* FAKE_RESOURCE_MAGIC while alive */
    unsigned id;          /* 1, 2, 3 ... in order of creation */
    atomic_int holders;   /* fake_hold()/fake_unhold(): must never exceed 1 */
    atomic_int destroyed; /* set by destroy(); a second destroy aborts */
    atomic_int broken;    /* validate() and reset() return false when set */
} fake_resource_t;

typedef struct fake_factory {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* broadcast on every create/destroy/release */

    /* Knobs (set under lock with the fake_set_* helpers, or before use). */
    int fail_next;          /* fail this many of the next create() calls */
    bool fail_always;       /* every create() fails while set */
    bool null_next;         /* next create() "succeeds" with a NULL resource */
    long create_delay_ms;   /* every create() sleeps this long first */
    bool block_creates;     /* create() blocks until fake_unblock() */
    long destroy_delay_ms;  /* every destroy() sleeps this long first */
    bool validate_false;    /* validate() returns false for every resource */
    bool reset_false;       /* reset() returns false for every resource */

    /* Counters (read with fake_get or under lock). */
    uint64_t create_calls;  /* create() entered */
    uint64_t created;       /* create() succeeded */
    uint64_t create_failed; /* create() failed (including NULL successes) */
    uint64_t destroyed;     /* destroy() returned */
    uint64_t validated;     /* validate() calls */
    uint64_t resets;        /* reset() calls */
    unsigned creating_now;  /* create() calls in progress */
    unsigned creating_peak; /* most create() calls ever in progress at once */
    unsigned blocked_now;   /* create() calls parked by block_creates */

    fake_resource_t *all[FAKE_MAX_RESOURCES]; /* every resource ever made */
    unsigned count;
} fake_factory_t;

void fake_init(fake_factory_t *f);
/* Checks every resource ever made was destroyed exactly once, frees them. */
void fake_fini(fake_factory_t *f);
/* The check fake_fini makes, without aborting: true when every resource ever
 * made was destroyed exactly once; otherwise false with the first problem
 * written into why[whylen]. Frees nothing. */
bool fake_reconcile(fake_factory_t *f, char *why, size_t whylen);
/* Free every resource and the factory's lock without checking anything: for
 * tearing down after a run that already failed (the pool must be gone). */
void fake_release(fake_factory_t *f);

/* The factory to hand to respool_create: with validate and reset, or only
 * create and destroy. */
respool_factory_t fake_factory(fake_factory_t *f);
respool_factory_t fake_factory_minimal(fake_factory_t *f);

/* Knob setters (take the lock). */
void fake_set_fail_next(fake_factory_t *f, int n);
void fake_set_fail_always(fake_factory_t *f, bool on);
void fake_set_block(fake_factory_t *f, bool on); /* off releases blocked */
void fake_set_create_delay(fake_factory_t *f, long ms);
void fake_set_destroy_delay(fake_factory_t *f, long ms);

/* Counter read under lock: FAKE_GET(f, created). */
uint64_t fake_get_u64(fake_factory_t *f, const uint64_t *field);
#define FAKE_GET(f, field) fake_get_u64((f), &(f)->field)

/* Block until cond(f) holds (evaluated under the factory lock at each change)
 * or timeout_ms passes; returns whether it holds. */
bool fake_wait(fake_factory_t *f, bool (*cond)(fake_factory_t *, void *), void *arg,
               long timeout_ms);
/* Common waits. */
bool fake_wait_blocked(fake_factory_t *f, unsigned n, long timeout_ms);
bool fake_wait_destroyed(fake_factory_t *f, uint64_t n, long timeout_ms);
bool fake_wait_create_calls(fake_factory_t *f, uint64_t n, long timeout_ms);
/* Until this particular resource has been destroyed. */
bool fake_wait_resource_destroyed(fake_factory_t *f, void *resource, long timeout_ms);

/* Mark a checked-out resource held by the calling test thread; aborts the
 * test if another holder has it. fake_unhold before checkin. */
void fake_hold(void *resource);
void fake_unhold(void *resource);
/* Make validate()/reset() fail for one resource. */
void fake_break(void *resource);
unsigned fake_id(const void *resource);
/* Has destroy() run on this resource? (The record outlives it.) */
bool fake_is_destroyed(const void *resource);

/* Poll respool_stats until pred(stats) holds or timeout_ms passes (polls every
 * 200 us: an awaited condition, not a sleep). */
bool pool_wait(respool_t *pool, bool (*pred)(const respool_stats_t *, void *), void *arg,
               long timeout_ms);
/* Common waits on the stats. */
bool pool_wait_idle(respool_t *pool, unsigned idle, long timeout_ms);
bool pool_wait_waiting(respool_t *pool, unsigned waiting, long timeout_ms);
bool pool_wait_destroyed(respool_t *pool, uint64_t destroyed, long timeout_ms);

/* A config with quiet logging (tests that inspect logs install their own). */
respool_config_t quiet_config(unsigned size, unsigned max_overflow);

/* Monotonic milliseconds, for measuring elapsed time in tests. */
int64_t now_ms(void);

#endif
