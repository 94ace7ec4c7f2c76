/*
 * slots.c — the slot table (one record per resource) and the idle list.
 *
 * A slot is reserved before create() runs and freed after destroy() has
 * returned, so every created resource has a record until it is gone. Slots
 * are allocated in chunks that never move or shrink: a lease names its slot
 * by index, and a stale index can always be looked up safely. Every function
 * here is O(1) and runs with the pool lock held.
 */
#include <stdlib.h>

#include "internal.h"

slot_t *slot_at(const respool_t *pool, uint32_t index)
{
    return &pool->chunks[index >> SLOT_CHUNK_SHIFT][index & (SLOT_CHUNK_SIZE - 1)];
}

/* Add one chunk of free slots. The only allocation the table makes; it runs
 * when a create() needs a record and none is free, never on checkout or
 * checkin. */
static int slots_grow(respool_t *pool)
{
    if (pool->chunk_count == pool->chunk_capacity) {
        uint32_t capacity = pool->chunk_capacity ? pool->chunk_capacity * 2 : 4;
        slot_t **chunks = realloc(pool->chunks, capacity * sizeof *chunks);
        if (!chunks)
            return RESPOOL_ENOMEM;
        pool->chunks = chunks;
        pool->chunk_capacity = capacity;
    }
    slot_t *chunk = calloc(SLOT_CHUNK_SIZE, sizeof *chunk);
    if (!chunk)
        return RESPOOL_ENOMEM;
    uint32_t first = pool->slot_count;
    pool->chunks[pool->chunk_count++] = chunk;
    pool->slot_count += SLOT_CHUNK_SIZE;
    /* Link the new slots onto the free list, lowest index first. */
    for (uint32_t i = SLOT_CHUNK_SIZE; i-- > 0;) {
        chunk[i].state = SLOT_FREE;
        chunk[i].older = pool->free_head;
        pool->free_head = first + i;
    }
    return RESPOOL_OK;
}

/* Take a free slot for a resource about to be created. */
int slot_reserve(respool_t *pool, uint32_t *index)
{
    if (pool->free_head == NO_SLOT) {
        int rc = slots_grow(pool);
        if (rc != RESPOOL_OK)
            return rc;
    }
    uint32_t i = pool->free_head;
    slot_t *s = slot_at(pool, i);
    pool->free_head = s->older;
    s->state = SLOT_CREATING;
    s->resource = NULL;
    s->newer = s->older = NO_SLOT;
    s->leak_reported = false;
    s->expires_ns = s->idle_since_ns = s->verified_ns = s->checkout_ns = 0;
    *index = i;
    return RESPOOL_OK;
}

/* Give a slot back once its resource is gone (or was never made). The
 * generation is kept, so leases issued for the slot stay stale forever. */
void slot_release(respool_t *pool, uint32_t index)
{
    slot_t *s = slot_at(pool, index);
    s->state = SLOT_FREE;
    s->resource = NULL;
    s->newer = NO_SLOT;
    s->older = pool->free_head;
    pool->free_head = index;
}

/* The idle list is ordered by when resources became idle: the head is the
 * newest, the tail the oldest. LIFO takes the head, FIFO the tail; the
 * reaper and keepalive look at the tail. */
void idle_push_newest(respool_t *pool, uint32_t index)
{
    slot_t *s = slot_at(pool, index);
    s->state = SLOT_IDLE;
    s->newer = NO_SLOT;
    s->older = pool->idle_head;
    if (pool->idle_head != NO_SLOT)
        slot_at(pool, pool->idle_head)->newer = index;
    else
        pool->idle_tail = index;
    pool->idle_head = index;
    pool->idle++;
}

void idle_push_oldest(respool_t *pool, uint32_t index)
{
    slot_t *s = slot_at(pool, index);
    s->state = SLOT_IDLE;
    s->older = NO_SLOT;
    s->newer = pool->idle_tail;
    if (pool->idle_tail != NO_SLOT)
        slot_at(pool, pool->idle_tail)->older = index;
    else
        pool->idle_head = index;
    pool->idle_tail = index;
    pool->idle++;
}

void idle_remove(respool_t *pool, uint32_t index)
{
    slot_t *s = slot_at(pool, index);
    if (s->newer != NO_SLOT)
        slot_at(pool, s->newer)->older = s->older;
    else
        pool->idle_head = s->older;
    if (s->older != NO_SLOT)
        slot_at(pool, s->older)->newer = s->newer;
    else
        pool->idle_tail = s->newer;
    s->newer = s->older = NO_SLOT;
    pool->idle--;
}

/* Take the idle resource the strategy names; the caller checks idle > 0. */
uint32_t idle_take(respool_t *pool)
{
    uint32_t index = pool->config.strategy == RESPOOL_FIFO ? pool->idle_tail : pool->idle_head;
    idle_remove(pool, index);
    return index;
}

/* Condemn a resource that is out of the pool (busy or being checked) or
 * idle: it leaves the live count and waits on the doomed list for the
 * manager's destroy(). */
void slot_doom(respool_t *pool, uint32_t index)
{
    slot_t *s = slot_at(pool, index);
    if (s->state == SLOT_IDLE)
        idle_remove(pool, index);
    else
        pool->busy--;
    s->state = SLOT_DOOMED;
    s->older = pool->doomed_head;
    pool->doomed_head = index;
    pool->doomed++;
    manager_notify(pool);
}

/* The slot a lease names, or NULL if the lease is not a current lease of
 * this pool: foreign, stale (already returned), doubled, or altered. */
slot_t *lease_slot(const respool_t *pool, const respool_lease_t *lease)
{
    if (lease->private_.pool != pool || lease->private_.slot >= pool->slot_count)
        return NULL;
    slot_t *s = slot_at(pool, lease->private_.slot);
    if (s->state != SLOT_BUSY || s->generation != lease->private_.generation ||
        s->resource != lease->resource)
        return NULL;
    return s;
}
