/*
 * fork.c — fork safety: a child process never uses the parent's resources.
 *
 * Every pool is on a process-wide list. Around fork() (pthread_atfork) the
 * forking thread takes the list's lock and every pool's lock, so the child
 * gets each pool in a consistent state, never mid-change. In the child the
 * manager and helper threads do not exist, and every resource — a socket
 * shared with the parent, say — still belongs to the parent: the child's
 * copy of each pool is marked `forked`, after which checkout fails with
 * RESPOOL_ESHUTDOWN (and says why), checkin and destroyed change nothing,
 * and respool_free hands each resource to config.abandon instead of
 * destroy(), frees the memory and joins no thread. Nothing is validated,
 * reset or gracefully closed in the child: libpq's PQfinish, for one, would
 * send Terminate over the parent's socket and end the parent's session.
 */
#include <stdlib.h>

#include "internal.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;
static respool_t **registry;
static size_t registry_count, registry_capacity;

/* Before fork: hold every pool still, in list order. */
static void before_fork(void)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < registry_count; i++)
        pthread_mutex_lock(&registry[i]->lock);
}

static void after_fork_in_parent(void)
{
    for (size_t i = registry_count; i-- > 0;)
        pthread_mutex_unlock(&registry[i]->lock);
    pthread_mutex_unlock(&registry_lock);
}

/* The child's copies: mark them and let go. */
static void after_fork_in_child(void)
{
    for (size_t i = registry_count; i-- > 0;) {
        respool_t *pool = registry[i];
        pool->forked = true;
        fast_paths_update(pool);
        pthread_mutex_unlock(&pool->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

static void install_fork_handlers(void)
{
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

int fork_register(respool_t *pool)
{
    pthread_once(&registry_once, install_fork_handlers);
    pthread_mutex_lock(&registry_lock);
    if (registry_count == registry_capacity) {
        size_t capacity = registry_capacity ? registry_capacity * 2 : 8;
        respool_t **grown = realloc(registry, capacity * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&registry_lock);
            return RESPOOL_ENOMEM;
        }
        registry = grown;
        registry_capacity = capacity;
    }
    registry[registry_count++] = pool;
    pthread_mutex_unlock(&registry_lock);
    return RESPOOL_OK;
}

void fork_unregister(respool_t *pool)
{
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < registry_count; i++) {
        if (registry[i] == pool) {
            registry[i] = registry[--registry_count];
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

/* respool_free in a child: abandon every resource, free the memory. No
 * thread is joined (none runs here) and no condition variable is destroyed
 * (glibc's destroy would wait for the parent's waiters, which never come). */
void fork_free_in_child(respool_t *pool)
{
    fork_unregister(pool);
    void (*abandon)(void *, void *) = pool->config.abandon;
    for (uint32_t i = 0; i < pool->slot_count; i++) {
        slot_t *s = slot_at(pool, i);
        bool holds = s->state == SLOT_IDLE || s->state == SLOT_BUSY ||
                     s->state == SLOT_CHECKING || s->state == SLOT_DOOMED ||
                     s->state == SLOT_DESTROYING;
        if (holds && s->resource && abandon)
            abandon(pool->factory.ctx, s->resource);
    }
    for (uint32_t c = 0; c < pool->chunk_count; c++)
        free(pool->chunks[c]);
    free(pool->chunks);
    free(pool->idle_ring);
    free(pool->helpers);
    free(pool);
}
