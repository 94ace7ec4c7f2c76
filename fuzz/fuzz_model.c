/*
 * fuzz_model.c — libFuzzer target for the model-based test.
 *
 * Each input is decoded by model_decode (tests/model/model.h: 3 bytes of
 * configuration, then an opcode byte and an argument byte per operation),
 * capped at FUZZ_MAX_OPS operations, and run against a fresh pool and the
 * reference model exactly as tests/test_model.c runs its seeded sequences.
 * A mismatch prints the sequence, the step-by-step replay and the
 * difference, then aborts, so libFuzzer saves the input as a crash file.
 *
 *   make fuzz                              build, then fuzz for FUZZ_SECONDS
 *   build/fuzz/fuzz_model crash-<sha1>     replay one input (prints its trace
 *                                          when it fails)
 *   xxd -r -p <<< 01000a002f14f3 > case    an input from the hex the model
 *                                          test prints for a shrunk sequence
 *
 * Each input makes its own pool (a manager thread and helpers, joined at the
 * end) on its own fake factory: deterministic per input, no state between
 * inputs. RESPOOL_FUZZ_SETTLE_MS bounds the wait for a settled pool
 * (default 5000; the pool normally settles within microseconds).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/model.h"

/* Operations per input: long enough for refills, failures and shutdown to
 * interleave, short enough to keep thousands of inputs a second. */
#define FUZZ_MAX_OPS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The settle bound: RESPOOL_FUZZ_SETTLE_MS, default 5000 ms. */
static long settle_ms(void)
{
    static long value;
    if (!value) {
        const char *text = getenv("RESPOOL_FUZZ_SETTLE_MS");
        value = text && atol(text) > 0 ? atol(text) : 5000;
    }
    return value;
}

/* One input: decode, run against the model; on a mismatch report and abort. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static model_seq_t seq; /* large: keep it off the stack */
    model_decode(data, size, FUZZ_MAX_OPS, &seq);
    model_options_t options = {0};
    options.settle_ms = settle_ms();
    model_result_t result;
    if (model_run(&seq, &options, &result))
        return 0;

    fprintf(stderr, "\nfuzz_model: the pool disagrees with the model: %s\n", result.message);
    fprintf(stderr, "fuzz_model: the sequence:\n");
    model_print_seq(stderr, &seq);
    fprintf(stderr, "fuzz_model: its replay:\n");
    options.trace = stderr;
    if (model_run(&seq, &options, &result))
        fprintf(stderr, "fuzz_model: (passed on replay: the failure depends on timing)\n");
    abort();
}
