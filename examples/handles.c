/*
 * handles.c — pool any expensive handle through a factory.
 *
 * Each pooled resource here is a connected pair of UNIX sockets standing in
 * for a network connection: create() opens it, validate() checks it is still
 * open, reset() drains bytes a borrower left unread (so nothing of one
 * borrower reaches the next), destroy() closes it. Eight threads share a pool
 * of 4 (+2 overflow); now and then one finds its handle broken and reports it
 * destroyed, and the pool replaces it. A safe shutdown ends the run.
 *
 *   cc -std=c11 handles.c -lrespool -pthread      (or: make examples)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "respool.h"

typedef struct handle {
    int fds[2]; /* fds[0] is "ours", fds[1] the far end */
} handle_t;

static int handle_create(void *ctx, void **resource, char *err, size_t errlen)
{
    handle_t *h = malloc(sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, h->fds) != 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        free(h);
        return -1;
    }
    *resource = h;
    return 0;
}

static void handle_destroy(void *ctx, void *resource)
{
    handle_t *h = resource;
    close(h->fds[0]);
    close(h->fds[1]);
    free(h);
}

/* Still usable? Both ends open. (A network handle would poll for EOF.) */
static bool handle_validate(void *ctx, void *resource)
{
    handle_t *h = resource;
    return fcntl(h->fds[0], F_GETFD) != -1 && fcntl(h->fds[1], F_GETFD) != -1;
}

/* On checkin: drain what the borrower left unread. */
static bool handle_reset(void *ctx, void *resource)
{
    handle_t *h = resource;
    char buf[256];
    ssize_t n;
    while ((n = read(h->fds[1], buf, sizeof buf)) > 0) {
    }
    return n == 0 ? false /* far end closed */ : errno == EAGAIN || errno == EWOULDBLOCK;
}

/* One request: send a message through the handle and read it back. */
static bool handle_roundtrip(handle_t *h, unsigned worker, unsigned i)
{
    char out[64], in[64];
    int len = snprintf(out, sizeof out, "worker %u request %u", worker, i);
    if (write(h->fds[0], out, (size_t)len) != len)
        return false;
    if (read(h->fds[1], in, sizeof in) != len)
        return false;
    return memcmp(in, out, (size_t)len) == 0;
}

typedef struct worker {
    respool_t *pool;
    unsigned id, done, broken, timeouts;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (unsigned i = 0; i < 2000; i++) {
        respool_lease_t lease;
        int rc = respool_checkout(w->pool, 1000, &lease);
        if (rc != RESPOOL_OK) {
            w->timeouts++;
            continue;
        }
        handle_t *h = lease.resource;
        bool ok = handle_roundtrip(h, w->id, i);
        if (i % 500 == 499) /* simulate a handle that broke in use */
            ok = false;
        if (ok) {
            w->done++;
            respool_checkin(w->pool, &lease);
        } else {
            w->broken++;
            respool_destroyed(w->pool, &lease); /* the pool replaces it */
        }
    }
    return NULL;
}

int main(void)
{
    respool_config_t config = {0};
    config.size = 4;
    config.max_overflow = 2;
    respool_factory_t factory = {handle_create, handle_destroy, handle_validate, handle_reset,
                                 NULL};
    respool_t *pool;
    int rc = respool_create(&pool, &config, &factory);
    if (rc != RESPOOL_OK) {
        fprintf(stderr, "respool_create: %s\n", respool_strerror(rc));
        return 1;
    }

    enum { WORKERS = 8 };
    pthread_t threads[WORKERS];
    worker_t workers[WORKERS];
    for (unsigned i = 0; i < WORKERS; i++) {
        workers[i] = (worker_t){pool, i, 0, 0, 0};
        pthread_create(&threads[i], NULL, worker_main, &workers[i]);
    }
    unsigned done = 0, broken = 0, timeouts = 0;
    for (unsigned i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        done += workers[i].done;
        broken += workers[i].broken;
        timeouts += workers[i].timeouts;
    }

    rc = respool_shutdown(pool, 5000); /* safe shutdown: every handle closed once */
    respool_stats_t s;
    respool_stats(pool, &s);
    respool_free(pool);

    printf("handles: %u requests by %u threads through a pool of %u (+%u overflow)\n", done,
           WORKERS, s.size, s.max_overflow);
    printf("handles: %u reported broken and replaced, %u checkout timeouts\n", broken, timeouts);
    printf("handles: %llu handles created, %llu destroyed, %llu checkouts waited\n",
           (unsigned long long)s.created, (unsigned long long)s.destroyed,
           (unsigned long long)s.waits);
    printf("handles: shutdown: %s\n", respool_strerror(rc));
    if (rc != RESPOOL_OK || s.created != s.destroyed || done + broken != WORKERS * 2000u) {
        fprintf(stderr, "handles: FAILED: the numbers above do not add up\n");
        return 1;
    }
    return 0;
}
