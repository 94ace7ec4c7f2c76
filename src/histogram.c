/*
 * histogram.c — latency histograms with fixed memory and no dependency.
 *
 * Log-linear buckets (as in HdrHistogram, at low precision): values below
 * 16 ns have a bucket each; above, every power of two is cut into 16
 * equal buckets, so a bucket is at most 1/16 (6.25%) of its value wide.
 * Values of 2^48 ns (about 3 days) and more share the last bucket. A
 * percentile is reported as the upper edge of the bucket that holds it,
 * never above the exact maximum, which is kept beside the buckets.
 * Recording is a handful of instructions; reading walks the buckets.
 * Every function here runs under the pool lock.
 */
#include "internal.h"

/* The bucket a value falls in. */
static unsigned bucket_of(uint64_t value)
{
    if (value < HISTOGRAM_SUB_BUCKETS)
        return (unsigned)value;
    unsigned exponent = 63u - (unsigned)__builtin_clzll(value); /* >= 4 */
    if (exponent >= HISTOGRAM_MAX_EXPONENT)
        return HISTOGRAM_BUCKETS - 1;
    unsigned sub = (unsigned)(value >> (exponent - HISTOGRAM_SUB_BITS)) & (HISTOGRAM_SUB_BUCKETS - 1);
    return (exponent - HISTOGRAM_SUB_BITS + 1) * HISTOGRAM_SUB_BUCKETS + sub;
}

/* The largest value that falls in bucket `index`. */
static uint64_t bucket_upper_edge(unsigned index)
{
    if (index < HISTOGRAM_SUB_BUCKETS)
        return index;
    if (index == HISTOGRAM_BUCKETS - 1)
        return UINT64_MAX;
    unsigned exponent = index / HISTOGRAM_SUB_BUCKETS + HISTOGRAM_SUB_BITS - 1;
    uint64_t sub = index % HISTOGRAM_SUB_BUCKETS;
    uint64_t width = (uint64_t)1 << (exponent - HISTOGRAM_SUB_BITS);
    return ((uint64_t)1 << exponent) + (sub + 1) * width - 1;
}

void histogram_record(histogram_t *h, uint64_t value_ns)
{
    h->buckets[bucket_of(value_ns)]++;
    h->count++;
    h->sum_ns += value_ns;
    if (value_ns > h->max_ns)
        h->max_ns = value_ns;
}

/* Percentiles over the recorded values plus `zeros` values of 0 (the
 * checkouts that did not wait are counted, not recorded). */
void histogram_summary(const histogram_t *h, uint64_t zeros, respool_latency_t *out)
{
    static const double quantiles[4] = {0.50, 0.90, 0.99, 0.999};
    uint64_t *targets[4] = {&out->p50_ns, &out->p90_ns, &out->p99_ns, &out->p999_ns};
    uint64_t total = h->count + zeros;
    out->count = total;
    out->max_ns = h->max_ns;
    out->sum_ns = h->sum_ns;
    for (int q = 0; q < 4; q++) {
        *targets[q] = 0;
        if (total == 0)
            continue;
        /* The rank of the quantile, 1-based: the smallest value with at
         * least that fraction of the samples at or below it. */
        uint64_t rank = (uint64_t)(quantiles[q] * (double)total);
        if ((double)rank < quantiles[q] * (double)total || rank == 0)
            rank++;
        if (rank <= zeros)
            continue;
        uint64_t seen = zeros;
        for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
            seen += h->buckets[i];
            if (seen >= rank) {
                uint64_t edge = bucket_upper_edge(i);
                *targets[q] = edge < h->max_ns ? edge : h->max_ns;
                break;
            }
        }
    }
}
