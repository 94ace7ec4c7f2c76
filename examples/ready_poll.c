/*
 * ready_poll.c — one pool shared by an event loop and blocking threads.
 *
 * The event loop never blocks in the pool: it polls the pool's readiness fd
 * (respool_ready_fd) next to its other descriptors — here a timer pipe that
 * stands in for sockets — and checks out with timeout 0 only when the fd is
 * readable. Another thread may take the resource first (RESPOOL_EFULL):
 * the loop simply polls again. Meanwhile four ordinary threads check out
 * with a timeout, as any blocking code would. Prints what each side got.
 *
 *   cc -std=c11 ready_poll.c -lrespool -pthread      (or: make examples)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "respool.h"

#define LOOP_JOBS 500
#define THREAD_JOBS 500
#define WORK_US 50 /* each use holds the resource this long */
#define THREADS 4

static int make_counter(void *ctx, void **resource, char *err, size_t errlen)
{
    (void)ctx, (void)err, (void)errlen;
    *resource = calloc(1, sizeof(long));
    return *resource ? 0 : -1;
}

static void free_counter(void *ctx, void *resource)
{
    (void)ctx;
    free(resource);
}

static atomic_bool loop_done;

/* A blocking user: checkout with a timeout, use, checkin. */
static void *blocking_worker(void *arg)
{
    respool_t *pool = arg;
    for (int i = 0; i < THREAD_JOBS; i++) {
        respool_lease_t lease;
        int rc = respool_checkout(pool, 2000, &lease);
        if (rc != RESPOOL_OK) {
            char why[512];
            respool_checkout_error(why, sizeof why);
            fprintf(stderr, "worker: %s\n", why);
            exit(1);
        }
        (*(long *)lease.resource)++;
        usleep(WORK_US);
        respool_checkin(pool, &lease);
    }
    return NULL;
}

/* Writes a byte every millisecond: the loop's "other" descriptor. */
static void *ticker(void *arg)
{
    int fd = *(int *)arg;
    while (!atomic_load(&loop_done)) {
        if (write(fd, "t", 1) != 1)
            break;
        usleep(1000);
    }
    return NULL;
}

int main(void)
{
    respool_config_t config = {0};
    config.size = 2;
    respool_factory_t factory = {make_counter, free_counter, NULL, NULL, NULL};
    respool_t *pool;
    if (respool_create(&pool, &config, &factory) != RESPOOL_OK)
        return 1;
    int ready = respool_ready_fd(pool);
    int timer[2];
    if (ready < 0 || pipe(timer) != 0) {
        perror("ready_poll");
        return 1;
    }
    pthread_t workers[THREADS], tick;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&workers[i], NULL, blocking_worker, pool);
    pthread_create(&tick, NULL, ticker, &timer[1]);

    /* The event loop. */
    int served = 0, lost_races = 0, ticks = 0;
    while (served < LOOP_JOBS) {
        struct pollfd fds[2] = {{ready, POLLIN, 0}, {timer[0], POLLIN, 0}};
        if (poll(fds, 2, 2000) <= 0) {
            fprintf(stderr, "event loop: nothing for 2 s\n");
            return 1;
        }
        if (fds[1].revents & POLLIN) {
            char buf[64];
            ticks += (int)read(timer[0], buf, sizeof buf);
        }
        if (fds[0].revents & POLLIN) {
            respool_lease_t lease;
            int rc = respool_checkout(pool, 0, &lease); /* never blocks */
            if (rc == RESPOOL_EFULL) {
                lost_races++; /* a blocking thread was quicker: poll again */
                continue;
            }
            if (rc != RESPOOL_OK) {
                fprintf(stderr, "event loop: %s\n", respool_strerror(rc));
                return 1;
            }
            (*(long *)lease.resource)++;
            usleep(WORK_US);
            respool_checkin(pool, &lease);
            served++;
        }
    }
    atomic_store(&loop_done, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(workers[i], NULL);
    pthread_join(tick, NULL);

    respool_stats_t s;
    respool_stats(pool, &s);
    printf("event loop: %d checkouts through poll(), %d lost races, %d timer ticks handled\n",
           served, lost_races, ticks);
    printf("threads:    %d checkouts with a timeout\n", THREADS * THREAD_JOBS);
    printf("pool:       %llu checkouts, wait p99 %.1f us, max %.1f us\n",
           (unsigned long long)s.checkouts, s.checkout_wait.p99_ns / 1e3,
           s.checkout_wait.max_ns / 1e3);
    int rc = respool_shutdown(pool, 1000);
    respool_free(pool);
    return rc == RESPOOL_OK && s.checkouts == (uint64_t)(served + THREADS * THREAD_JOBS) ? 0 : 1;
}
