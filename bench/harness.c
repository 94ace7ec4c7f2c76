/*
 * harness.c — clock, busy loop, series, histograms, threads, /proc readers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- time ------------------------------------------------------------ */

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static volatile uint64_t spin_sink;
static uint64_t spins_per_ms = 100000;

void busy_work(uint64_t spins)
{
    uint64_t x = spin_sink;
    for (uint64_t i = 0; i < spins; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    spin_sink = x;
}

/* Best of five timings of a fixed loop, so a preemption does not count. */
void calibrate_busy_loop(void)
{
    const uint64_t spins = 2000000;
    int64_t best = INT64_MAX;
    for (int i = 0; i < 5; i++) {
        int64_t t0 = now_ns();
        busy_work(spins);
        int64_t dt = now_ns() - t0;
        if (dt > 0 && dt < best)
            best = dt;
    }
    if (best != INT64_MAX)
        spins_per_ms = spins * 1000000 / (uint64_t)best;
    if (spins_per_ms == 0)
        spins_per_ms = 1;
}

uint64_t busy_spins_for_ns(uint64_t ns)
{
    uint64_t spins = spins_per_ms * ns / 1000000;
    return spins ? spins : 1;
}

/* ---- series ------------------------------------------------------------ */

void series_add(series_t *series, double value)
{
    if (series->count < MAX_ROUNDS)
        series->value[series->count++] = value;
}

/* qsort order of doubles, ascending. */
static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

summary_t series_summary(const series_t *series)
{
    summary_t s = {0, 0, 0};
    int n = series->count;
    if (n == 0)
        return s;
    double sorted[MAX_ROUNDS];
    memcpy(sorted, series->value, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    s.median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    s.min = sorted[0];
    s.max = sorted[n - 1];
    return s;
}

/* ---- histograms ----------------------------------------------------------- */

/* Bucket of a value: values below 16 have their own; above, the power of two
 * (msb) and the next four bits choose one of 16 sub-buckets. */
static size_t hist_index(uint64_t v)
{
    if (v < HIST_SUB_BUCKETS)
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    size_t sub = (size_t)(v >> (msb - 4)) & (HIST_SUB_BUCKETS - 1);
    return (size_t)(msb - 3) * HIST_SUB_BUCKETS + sub;
}

uint64_t hist_bucket_upper(size_t index)
{
    if (index < HIST_SUB_BUCKETS)
        return index;
    int msb = (int)(index / HIST_SUB_BUCKETS) + 3;
    uint64_t sub = index % HIST_SUB_BUCKETS;
    uint64_t next_lower = (HIST_SUB_BUCKETS + sub + 1) << (msb - 4);
    return next_lower == 0 ? UINT64_MAX : next_lower - 1; /* top bucket wraps */
}

void hist_record(histogram_t *hist, uint64_t ns)
{
    hist->count[hist_index(ns)]++;
    hist->total++;
    if (ns > hist->max)
        hist->max = ns;
}

void hist_merge(histogram_t *into, const histogram_t *from)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        into->count[i] += from->count[i];
    into->total += from->total;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_percentile(const histogram_t *hist, double q)
{
    if (hist->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)hist->total);
    if (rank >= hist->total)
        rank = hist->total - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += hist->count[i];
        if (seen > rank) {
            uint64_t upper = hist_bucket_upper(i);
            return upper < hist->max ? upper : hist->max;
        }
    }
    return hist->max;
}

/* ---- threads ---------------------------------------------------------------- */

void spawn_thread(pthread_t *thread, size_t stack_size, void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack_size)
        pthread_attr_setstacksize(&attr, stack_size);
    int rc = pthread_create(thread, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        bench_fail("pthread_create: %s", strerror(rc));
}

static pthread_mutex_t idle_gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_t idle_thread;

/* Parks on the gate until stop_idle_thread() opens it. */
static void *idle_main(void *arg)
{
    pthread_mutex_lock(&idle_gate);
    pthread_mutex_unlock(&idle_gate);
    return NULL;
}

bool make_directories(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return false;
    }
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(path, 0777) != 0 && errno != EEXIST)
                return false;
            *p = saved;
            if (saved == '\0')
                return true;
        }
    }
}

void start_idle_thread(void)
{
    pthread_mutex_lock(&idle_gate);
    spawn_thread(&idle_thread, 0, idle_main, NULL);
}

void stop_idle_thread(void)
{
    pthread_mutex_unlock(&idle_gate);
    pthread_join(idle_thread, NULL);
}

/* Read a small /proc file into buf (NUL-terminated); false on failure. */
static bool read_proc_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

char thread_state(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    if (!read_proc_file(path, buf, sizeof buf))
        return '?';
    /* "tid (comm) S ...": comm may hold spaces and ')', so use the last ')'. */
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] ? close_paren[2] : '?';
}

/* ---- memory ------------------------------------------------------------------- */

int64_t resident_bytes(void)
{
    char buf[256];
    long pages_total, pages_resident;
    if (!read_proc_file("/proc/self/statm", buf, sizeof buf) ||
        sscanf(buf, "%ld %ld", &pages_total, &pages_resident) != 2)
        return 0;
    return (int64_t)pages_resident * sysconf(_SC_PAGESIZE);
}

int64_t heap_bytes_in_use(void)
{
    struct mallinfo2 info = mallinfo2();
    return (int64_t)(info.uordblks + info.hblkhd);
}

/* ---- failure ---------------------------------------------------------------- */

void bench_fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("core_bench: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}
