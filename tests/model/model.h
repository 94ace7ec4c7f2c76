/*
 * model.h — a model-based test of the pool's sequential contract.
 *
 * A sequence is a pool configuration and a list of operations: checkout with
 * timeout 0, checkin or destroyed of a held lease, resize, shutdown with
 * timeout 0, injected factory failures, and checkins of stale, doubled or
 * altered leases. model_run executes it single-threaded against a real pool
 * (on the fault-injecting fake factory) and, step by step, against a small
 * reference model of docs/api.md written here; after every step it awaits
 * the pool's settled state (a condition on respool_stats, never a sleep) and
 * compares the stats, the return codes and which resource each checkout gets
 * with the model's prediction. Poolboy's QuickCheck model is the precedent.
 *
 * The same byte decoder feeds the Criterion test (tests/test_model.c: bytes
 * from a seeded generator) and the libFuzzer target (fuzz/fuzz_model.c: the
 * fuzzer's bytes), so a failing input of either replays in the other.
 *
 * Byte format (missing bytes read as 0):
 *   byte 0  size % 4            byte 1  max_overflow % 4 (both 0: size 1)
 *   byte 2  bit 0 FIFO, bit 1 factory with validate/reset, bit 2 overflow
 *           kept idle (overflow_idle_ms of an hour instead of 0), bit 3
 *           max_creating 1 (creates in order); high nibble 0xF: the first
 *           create() of the prefill fails
 *   then    per operation: an opcode byte (kind = table[opcode % 64]) and,
 *           for kinds that take one, an argument byte.
 */
#ifndef RESPOOL_TEST_MODEL_H
#define RESPOOL_TEST_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Most operations in one sequence (the fuzzer uses fewer). */
#define MODEL_MAX_OPS 512
/* Bounds of the generated pools (resize ranges over them too). */
#define MODEL_MAX_SIZE 5     /* resize sizes 0..5 */
#define MODEL_MAX_OVERFLOW 4 /* resize max_overflow 0..4 */

typedef enum {
    MODEL_OP_CHECKOUT = 0, /* respool_checkout(pool, 0, &lease)                  */
    MODEL_OP_CHECKIN,      /* a held lease (arg picks it; arg >= 0xE0 breaks it first) */
    MODEL_OP_DESTROYED,    /* respool_destroyed of a held lease (arg picks it)   */
    MODEL_OP_RESIZE,       /* size = arg % 16 % 6, max_overflow = arg / 16 % 5   */
    MODEL_OP_SHUTDOWN,     /* respool_shutdown(pool, 0)                          */
    MODEL_OP_FAIL_NEXT,    /* the next 1 + arg % 3 create() calls fail           */
    MODEL_OP_FAIL_ALWAYS,  /* every create() fails from now: on when arg % 3 == 0, else off */
    MODEL_OP_BAD_LEASE,    /* a lease that must get RESPOOL_EINVAL (see model_bad_lease_t) */
    MODEL_OP_KIND_COUNT
} model_op_kind_t;

/* The leases MODEL_OP_BAD_LEASE passes (variant = arg % 7; arg & 8 passes it
 * to respool_destroyed instead of respool_checkin; arg / 16 picks the lease
 * it is made from). Each must return RESPOOL_EINVAL and change nothing. */
typedef enum {
    MODEL_BAD_STALE = 0,   /* a copy of a lease already given back (doubled checkin) */
    MODEL_BAD_ZEROED,      /* an all-zero lease                                   */
    MODEL_BAD_RESOURCE,    /* a held lease's copy with another resource pointer   */
    MODEL_BAD_GENERATION,  /* a held lease's copy with the generation moved on    */
    MODEL_BAD_SLOT,        /* a held lease's copy naming the next slot            */
    MODEL_BAD_FOREIGN,     /* a held lease's copy that names another pool         */
    MODEL_BAD_NULL,        /* a NULL lease pointer                                */
    MODEL_BAD_COUNT
} model_bad_lease_t;

typedef struct model_op {
    uint8_t kind; /* model_op_kind_t */
    uint8_t arg;  /* the raw argument byte; its meaning depends on kind */
} model_op_t;

typedef struct model_config {
    unsigned size, max_overflow;
    bool fifo;          /* RESPOOL_FIFO instead of RESPOOL_LIFO                  */
    bool full_factory;  /* fake_factory (validate + reset) instead of the minimal one */
    bool overflow_kept; /* overflow_idle_ms of an hour: overflow stays idle      */
    bool serial;        /* max_creating 1: fresh resources arrive in create order */
    bool prefill_fails; /* the prefill's first create() fails                    */
} model_config_t;

typedef struct model_seq {
    model_config_t config;
    size_t count;
    model_op_t ops[MODEL_MAX_OPS];
} model_seq_t;

/* How model_run behaves. */
typedef struct model_options {
    long settle_ms; /* bound on awaiting a settled pool (and teardown's shutdown) */
    FILE *trace;    /* when set: one line per step (operation -> outcome) */
    /* A thread for the run that aborts, naming the sequence and step, if a
     * pool call does not return within 2 x settle_ms (at least 2 s). */
    bool watchdog;
    /* Make the model itself wrong on purpose, to test the failure path and
     * the shrinker without touching the library: the model expects one more
     * idle resource after every successful resize. */
    bool plant_model_fault;
} model_options_t;

typedef struct model_result {
    bool failed;
    size_t step;       /* the failing operation's index; count = teardown; SIZE_MAX = setup */
    bool wedged;       /* the pool could not be shut down: it (and its factory) were leaked */
    char message[2048];
} model_result_t;

/* Decode bytes into a sequence of at most max_ops operations (and at most
 * MODEL_MAX_OPS). Never fails: every byte string is a valid sequence. */
void model_decode(const uint8_t *data, size_t len, size_t max_ops, model_seq_t *seq);

/* The bytes model_decode turns back into `seq` (its canonical encoding).
 * Returns the length; writes at most cap bytes. */
size_t model_encode(const model_seq_t *seq, uint8_t *out, size_t cap);

/* The sequence of `steps` operations that seed stands for (a splitmix64
 * stream of bytes through model_decode). */
void model_seq_from_seed(uint64_t seed, size_t steps, model_seq_t *seq);

/* One operation, readably: "checkin(lease 2 of held, broken)". */
void model_format_op(const model_op_t *op, char *buf, size_t len);

/* The configuration and the numbered operations, one a line, and the
 * canonical bytes in hex (for `xxd -r -p > file; build/fuzz/fuzz_model file`). */
void model_print_seq(FILE *out, const model_seq_t *seq);

/* Run seq against a fresh pool and the model. Returns true when every step
 * matched and teardown reconciled every resource (each destroyed exactly
 * once); else false with *result saying where and how. One run at a time
 * per process (it keeps a little state between runs: see model.c). */
bool model_run(const model_seq_t *seq, const model_options_t *options, model_result_t *result);

/* Find a shorter sequence that still fails: delete chunks of operations
 * (halving the chunk size down to single operations), then simplify the
 * configuration, each candidate replayed against a fresh pool. Bounded by
 * max_runs replays and max_seconds. Writes the shortest failing sequence
 * found to *out (seq itself if nothing shorter fails) and returns the number
 * of replays made. */
unsigned model_shrink(const model_seq_t *seq, const model_options_t *options, unsigned max_runs,
                      double max_seconds, model_seq_t *out);

/* For crash handlers (an abort in the fake factory, a sanitizer's report):
 * print the sequence being run and the step it is at. Not async-signal-safe;
 * meant only for the way down. Prints nothing when no run is in progress. */
void model_describe_running(FILE *out);

/* Pools leaked by runs whose pool could not be shut down (a wedged pool keeps
 * its threads). The shrinker stops replaying when this grows too large. */
unsigned model_wedged_pools(void);

#endif
