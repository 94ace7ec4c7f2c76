/*
 * workloads.c — the throughput workloads (see workloads.h).
 */
#include "workloads.h"

#include <stdatomic.h>
#include <stdlib.h>

/* Worker threads need little stack; small stacks let a run start 1,000. */
#define WORKER_STACK (256 * 1024)

/* Unmeasured warm-up before each contended run, as a fraction of its
 * measured time: every thread has started and queued by then. */
#define WARMUP_FRACTION 0.25

double run_uncontended(const contender_t *c, unsigned pool_size, double seconds)
{
    void *pool = c->open(pool_size, NULL);
    bench_lease_t lease;
    uint64_t pairs = 0;
    int64_t start = now_ns();
    int64_t end = start + (int64_t)(seconds * 1e9);
    int64_t finish;
    do {
        for (int i = 0; i < 1000; i++) {
            c->get(pool, &lease);
            c->put(pool, &lease);
        }
        pairs += 1000;
    } while ((finish = now_ns()) < end);
    c->close(pool);
    return (double)(finish - start) / (double)pairs;
}

/* Phases of a contended run: threads warm up (all started, queues
 * formed), then are measured, then stop. */
enum { PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };

/* Shared by the threads of one contended run. */
typedef struct contended_run {
    const contender_t *c;
    void *pool;
    uint64_t hold_spins;
    pthread_mutex_t gate_lock; /* the start gate: threads park until it opens */
    pthread_cond_t gate_opened;
    bool gate_open;
    atomic_int phase;
} contended_run_t;

typedef struct contended_thread {
    contended_run_t *run;
    uint64_t pairs; /* completed while measured */
    histogram_t waits;
} contended_thread_t;

/* Wait at the gate, then checkout (timed), hold, checkin until stopped;
 * pairs and waits count only while the phase is PHASE_MEASURE. */
static void *contended_worker(void *arg)
{
    contended_thread_t *t = arg;
    contended_run_t *run = t->run;
    pthread_mutex_lock(&run->gate_lock);
    while (!run->gate_open)
        pthread_cond_wait(&run->gate_opened, &run->gate_lock);
    pthread_mutex_unlock(&run->gate_lock);

    bench_lease_t lease;
    int phase;
    while ((phase = atomic_load_explicit(&run->phase, memory_order_relaxed)) != PHASE_STOP) {
        int64_t t0 = now_ns();
        run->c->get(run->pool, &lease);
        int64_t waited = now_ns() - t0;
        if (run->hold_spins)
            busy_work(run->hold_spins);
        run->c->put(run->pool, &lease);
        if (phase == PHASE_MEASURE) {
            hist_record(&t->waits, waited > 0 ? (uint64_t)waited : 0);
            t->pairs++;
        }
    }
    return NULL;
}

contended_result_t run_contended(const contender_t *c, const contended_params_t *params,
                                 histogram_t *waits)
{
    unsigned n = params->threads;
    contended_run_t run = {.c = c,
                           .pool = c->open(params->pool_size, NULL),
                           .hold_spins = params->hold_ns ? busy_spins_for_ns(params->hold_ns) : 0};
    pthread_mutex_init(&run.gate_lock, NULL);
    pthread_cond_init(&run.gate_opened, NULL);
    atomic_init(&run.phase, PHASE_WARMUP);
    contended_thread_t *threads = calloc(n, sizeof *threads);
    pthread_t *ids = calloc(n, sizeof *ids);
    if (!threads || !ids)
        bench_fail("out of memory for %u threads", n);
    for (unsigned i = 0; i < n; i++) {
        threads[i].run = &run;
        spawn_thread(&ids[i], WORKER_STACK, contended_worker, &threads[i]);
    }

    pthread_mutex_lock(&run.gate_lock);
    run.gate_open = true;
    pthread_cond_broadcast(&run.gate_opened);
    pthread_mutex_unlock(&run.gate_lock);
    sleep_ns((int64_t)(params->seconds * WARMUP_FRACTION * 1e9));
    atomic_store(&run.phase, PHASE_MEASURE);
    int64_t start = now_ns();
    sleep_ns((int64_t)(params->seconds * 1e9));
    atomic_store(&run.phase, PHASE_STOP);
    int64_t elapsed = now_ns() - start;
    for (unsigned i = 0; i < n; i++)
        pthread_join(ids[i], NULL);

    histogram_t *all = calloc(1, sizeof *all);
    if (!all)
        bench_fail("out of memory");
    uint64_t total = 0, fewest = UINT64_MAX, most = 0;
    for (unsigned i = 0; i < n; i++) {
        total += threads[i].pairs;
        fewest = threads[i].pairs < fewest ? threads[i].pairs : fewest;
        most = threads[i].pairs > most ? threads[i].pairs : most;
        hist_merge(all, &threads[i].waits);
    }
    contended_result_t result = {
        .pairs_per_s = (double)total * 1e9 / (double)elapsed,
        .fairness = most ? (double)fewest / (double)most : 0,
        .wait_p50_ns = hist_percentile(all, 0.50),
        .wait_p99_ns = hist_percentile(all, 0.99),
        .wait_max_ns = all->max,
    };
    if (waits)
        hist_merge(waits, all);
    free(all);
    free(threads);
    free(ids);
    pthread_cond_destroy(&run.gate_opened);
    pthread_mutex_destroy(&run.gate_lock);
    c->close(run.pool);
    return result;
}
