/*
 * runner.c — main() for test binaries built against tests/shim (see
 * criterion/criterion.h there). Runs every registered test in a forked
 * child, two at a time, each bounded by a timeout, and prints one line per
 * test and a summary.
 *
 *   respool_tests_tsan [--filter=GLOB] [--timeout=SECONDS] [-jN]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "criterion/criterion.h"

#define MAX_TESTS 2048

static struct test {
    const char *suite, *name;
    void (*fn)(void);
} tests[MAX_TESTS];
static int test_count;

void crs_register(const char *suite, const char *name, void (*fn)(void))
{
    if (test_count == MAX_TESTS) {
        fprintf(stderr, "shim: more than %d tests\n", MAX_TESTS);
        abort();
    }
    tests[test_count++] = (struct test){suite, name, fn};
}

/* Set in the test's child process by a failed cr_expect. */
static bool expectation_failed;

static void report_failure(const char *file, int line, const char *expression,
                           const char *format, va_list args)
{
    fprintf(stderr, "[----] %s:%d: Assertion failed: %s\n", file, line, expression);
    if (format && format[0]) {
        fprintf(stderr, "[----]   ");
        vfprintf(stderr, format, args);
        fprintf(stderr, "\n");
    }
    fflush(stderr);
}

void crs_fail(const char *file, int line, const char *expression, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    report_failure(file, line, expression, format, args);
    va_end(args);
    _exit(1);
}

void crs_expect_fail(const char *file, int line, const char *expression, const char *format,
                     ...)
{
    va_list args;
    va_start(args, format);
    report_failure(file, line, expression, format, args);
    va_end(args);
    expectation_failed = true;
}

void crs_log(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "[----] ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
}

typedef struct running {
    pid_t pid;
    int index;
    struct timespec started;
} running_t;

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    int timeout = 300, jobs = 2;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strncmp(argv[i], "--timeout=", 10) == 0)
            timeout = atoi(argv[i] + 10);
        else if (strncmp(argv[i], "-j", 2) == 0 && argv[i][2])
            jobs = atoi(argv[i] + 2);
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            timeout = atoi(argv[++i]);
    }
    if (jobs < 1)
        jobs = 1;
    running_t slots[64];
    if (jobs > 64)
        jobs = 64;
    int active = 0, next = 0, passed = 0, failed = 0, crashed = 0, tested = 0;
    for (;;) {
        while (active < jobs && next < test_count) {
            int i = next++;
            char full[512];
            snprintf(full, sizeof full, "%s/%s", tests[i].suite, tests[i].name);
            if (filter && fnmatch(filter, full, 0) != 0)
                continue;
            fflush(NULL);
            pid_t pid = fork();
            if (pid < 0) {
                perror("fork");
                return 2;
            }
            if (pid == 0) {
                alarm((unsigned)timeout);
                tests[i].fn();
                fflush(NULL);
                _exit(expectation_failed ? 1 : 0);
            }
            slots[active].pid = pid;
            slots[active].index = i;
            clock_gettime(CLOCK_MONOTONIC, &slots[active].started);
            active++;
            tested++;
        }
        if (active == 0)
            break;
        int status;
        pid_t done = wait(&status);
        if (done < 0)
            break;
        for (int k = 0; k < active; k++) {
            if (slots[k].pid != done)
                continue;
            struct test *t = &tests[slots[k].index];
            double took = seconds_since(&slots[k].started);
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                passed++;
                printf("[PASS] %s::%s: (%.2fs)\n", t->suite, t->name, took);
            } else if (WIFEXITED(status)) {
                failed++;
                printf("[FAIL] %s::%s: exit %d (%.2fs)\n", t->suite, t->name,
                       WEXITSTATUS(status), took);
            } else {
                crashed++;
                printf("[FAIL] %s::%s: CRASH: %s (%.2fs)\n", t->suite, t->name,
                       strsignal(WTERMSIG(status)), took);
            }
            fflush(stdout);
            slots[k] = slots[--active];
            break;
        }
    }
    printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d\n", tested,
           passed, failed, crashed);
    return failed || crashed ? 1 : 0;
}
