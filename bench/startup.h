/*
 * startup.h — what making a pool costs: memory per resource, and the time
 * to fill a pool whose factory is slow (cold start).
 */
#ifndef BENCH_STARTUP_H
#define BENCH_STARTUP_H

#include <stdint.h>

#include "contenders.h"

typedef struct memory_result {
    double heap_per_resource; /* malloc bytes in use (mallinfo2) / resources */
    double rss_per_resource;  /* resident set growth (/proc/self/statm) / resources */
} memory_result_t;

/* Growth of a fresh process while a pool of `resources` trivial resources
 * is open (measured after open returns, before close), in a child process
 * running this program with MEASURE_MEMORY_FLAG. */
memory_result_t measure_memory(const contender_t *c, unsigned resources);

/* The child's side: `core_bench --measure-memory <contender> <resources>`
 * prints "<heap bytes per resource> <rss bytes per resource>"; returns the
 * exit status. */
#define MEASURE_MEMORY_FLAG "--measure-memory"
int measure_memory_child(const char *contender, const char *resources);

/* Milliseconds until c->open(resources) returns when each resource takes
 * factory_ns to make (c must take a factory). */
double run_coldstart(const contender_t *c, unsigned resources, int64_t factory_ns);

#endif /* BENCH_STARTUP_H */
