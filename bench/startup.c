/*
 * startup.c — memory per resource and cold start (see startup.h).
 *
 * Memory is measured in a fresh process (this program run again with
 * MEASURE_MEMORY_FLAG): in this one, pages and free chunks left by earlier
 * workloads would absorb part of the growth.
 */
#include "startup.h"

#include <errno.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* Growth of this process while a pool of `resources` is open. */
static memory_result_t measure_memory_here(const contender_t *c, unsigned resources)
{
    int64_t heap_before = heap_bytes_in_use();
    int64_t rss_before = resident_bytes();
    void *pool = c->open(resources, NULL);
    int64_t heap_after = heap_bytes_in_use();
    int64_t rss_after = resident_bytes();
    c->close(pool);
    memory_result_t result = {(double)(heap_after - heap_before) / resources,
                              (double)(rss_after - rss_before) / resources};
    return result;
}

int measure_memory_child(const char *contender, const char *resources)
{
    unsigned n = (unsigned)strtoul(resources, NULL, 10);
    for (size_t i = 0; i < CONTENDER_COUNT; i++) {
        if (n > 0 && strcmp(all_contenders[i]->name, contender) == 0) {
            memory_result_t m = measure_memory_here(all_contenders[i], n);
            printf("%.3f %.3f\n", m.heap_per_resource, m.rss_per_resource);
            return 0;
        }
    }
    fprintf(stderr, "core_bench: %s: no such contender, or no resources\n", contender);
    return 2;
}

memory_result_t measure_memory(const contender_t *c, unsigned resources)
{
    char count[16], output[128];
    snprintf(count, sizeof count, "%u", resources);
    char *argv[] = {"core_bench", MEASURE_MEMORY_FLAG, (char *)c->name, count, NULL};
    int out[2];
    if (pipe(out) != 0)
        bench_fail("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, out[1]);
    pid_t child;
    int rc = posix_spawn(&child, "/proc/self/exe", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    if (rc != 0)
        bench_fail("cannot start the memory measurement: %s", strerror(rc));
    size_t used = 0;
    ssize_t got;
    while (used < sizeof output - 1 &&
           (got = read(out[0], output + used, sizeof output - 1 - used)) > 0)
        used += (size_t)got;
    output[used] = '\0';
    close(out[0]);
    int status;
    memory_result_t m;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        sscanf(output, "%lf %lf", &m.heap_per_resource, &m.rss_per_resource) != 2)
        bench_fail("the memory measurement of %s failed", c->name);
    return m;
}

/* The slow factory's latency; set by run_coldstart before any call. */
static _Atomic int64_t slow_factory_ns;

/* A trivial resource, after sleeping for slow_factory_ns. */
static void *slow_make(void)
{
    sleep_ns(atomic_load(&slow_factory_ns));
    return trivial_resource();
}

double run_coldstart(const contender_t *c, unsigned resources, int64_t factory_ns)
{
    atomic_store(&slow_factory_ns, factory_ns);
    int64_t start = now_ns();
    void *pool = c->open(resources, slow_make);
    double ms = (double)(now_ns() - start) / 1e6;
    c->close(pool);
    return ms;
}
