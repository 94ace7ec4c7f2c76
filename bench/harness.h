/*
 * harness.h — what every benchmark shares: the clock, a calibrated busy
 * loop, per-round sample series, wait-time histograms, thread helpers and
 * the /proc readers (thread state, resident memory).
 */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- time ------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t now_ns(void);

/* Sleep for ns nanoseconds (restarts after a signal). */
void sleep_ns(int64_t ns);

/* Measure the busy loop's speed; call once, with the machine otherwise idle. */
void calibrate_busy_loop(void);

/* Loop iterations that take about ns nanoseconds of CPU (at least 1). */
uint64_t busy_spins_for_ns(uint64_t ns);

/* Burn CPU for `spins` iterations (see busy_spins_for_ns). */
void busy_work(uint64_t spins);

/* ---- series: one value per round ---------------------------------------- */

#define MAX_ROUNDS 15

typedef struct series {
    double value[MAX_ROUNDS];
    int count; /* 0 = not measured */
} series_t;

typedef struct summary {
    double median, min, max;
} summary_t;

/* Append one round's value. */
void series_add(series_t *series, double value);

/* Median, min and max of the rounds (all 0 for an empty series). */
summary_t series_summary(const series_t *series);

/* ---- histograms of durations ------------------------------------------- */

/* Log-linear buckets: exact below 16 ns, then 16 buckets per power of two
 * (each at most 6.25 % wide), up to the whole uint64_t range. */
#define HIST_SUB_BUCKETS 16
#define HIST_BUCKETS (64 * HIST_SUB_BUCKETS)

typedef struct histogram {
    uint64_t count[HIST_BUCKETS];
    uint64_t total; /* number of values recorded */
    uint64_t max;   /* exact largest value */
} histogram_t;

/* Record one duration in ns. */
void hist_record(histogram_t *hist, uint64_t ns);

/* Add every count of `from` into `into`. */
void hist_merge(histogram_t *into, const histogram_t *from);

/* The value below or at which a fraction q (0..1) of the values lie, as the
 * upper bound of its bucket (0 for an empty histogram). */
uint64_t hist_percentile(const histogram_t *hist, double q);

/* Largest value that falls into bucket `index`. */
uint64_t hist_bucket_upper(size_t index);

/* ---- threads ------------------------------------------------------------ */

/* Start a thread with a given stack size (0 = the default); aborts with a
 * message on failure. */
void spawn_thread(pthread_t *thread, size_t stack_size, void *(*fn)(void *), void *arg);

/* Start the idle extra thread that keeps glibc in multi-threaded mode (a
 * single-threaded process skips atomics, which would flatter everyone);
 * stop_idle_thread() ends it. */
void start_idle_thread(void);
/* mkdir -p dir (for the TSV results); false, errno set, on failure. */
bool make_directories(const char *dir);
void stop_idle_thread(void);

/* The kernel's scheduler state letter of one of this process's threads
 * ('R' running, 'S' sleeping, ...), from /proc/self/task/<tid>/stat;
 * '?' when it cannot be read. */
char thread_state(pid_t tid);

/* ---- memory -------------------------------------------------------------- */

/* Resident set size of the process in bytes (/proc/self/statm). */
int64_t resident_bytes(void);

/* Bytes the malloc heap has handed out and not taken back (mallinfo2:
 * in-use chunks in every arena plus mmapped chunks). */
int64_t heap_bytes_in_use(void);

/* ---- failure ------------------------------------------------------------- */

/* Print "core_bench: <message>" on stderr and exit(1). */
_Noreturn void bench_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif /* BENCH_HARNESS_H */
