/*
 * slots.c — the slot table (one record per resource) and the idle ring.
 *
 * A slot is reserved before create() runs and freed after destroy() has
 * returned, so every created resource has a record until it is gone. Slots
 * are allocated in chunks that never move or shrink: a lease names its slot
 * by index, and a stale index can always be looked up safely. The O(1)
 * pieces used by checkout and checkin are inline in internal.h. Everything
 * here runs with the pool lock held.
 */
#include <stdlib.h>

#include "internal.h"

/* Make the idle ring hold at least `capacity` indices (a power of two),
 * keeping its order. */
static int idle_ring_reserve(respool_t *pool, uint32_t capacity)
{
    uint32_t old_capacity = pool->idle_ring ? pool->idle_mask + 1 : 0;
    if (capacity <= old_capacity)
        return RESPOOL_OK;
    uint32_t size = old_capacity ? old_capacity : 1;
    while (size < capacity)
        size *= 2;
    uint32_t *ring = malloc((size_t)size * sizeof *ring);
    if (!ring)
        return RESPOOL_ENOMEM;
    for (uint32_t k = 0; k < pool->idle; k++)
        ring[k] = idle_at(pool, k);
    free(pool->idle_ring);
    pool->idle_ring = ring;
    pool->idle_mask = size - 1;
    pool->idle_oldest = 0;
    return RESPOOL_OK;
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
    if (idle_ring_reserve(pool, pool->slot_count + SLOT_CHUNK_SIZE) != RESPOOL_OK)
        return RESPOOL_ENOMEM;
    slot_t *chunk = calloc(SLOT_CHUNK_SIZE, sizeof *chunk);
    if (!chunk)
        return RESPOOL_ENOMEM;
    uint32_t first = pool->slot_count;
    pool->chunks[pool->chunk_count++] = chunk;
    pool->slot_count += SLOT_CHUNK_SIZE;
    /* Link the new slots onto the free list, lowest index first. */
    for (uint32_t i = SLOT_CHUNK_SIZE; i-- > 0;) {
        chunk[i].state = SLOT_FREE;
        chunk[i].next = pool->free_head;
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
    pool->free_head = s->next;
    s->state = SLOT_CREATING;
    s->epoch = pool->epoch;
    s->resource = NULL;
    s->next = NO_SLOT;
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
    s->next = pool->free_head;
    pool->free_head = index;
}

/* Take out of the idle ring, oldest first, up to `max` slots that `pick`
 * chooses, writing their indices to `out`; the rest keep their order.
 * O(idle): for the manager's sweeps, never the fast path. */
unsigned idle_extract(respool_t *pool, bool (*pick)(const slot_t *slot, int64_t arg),
                      int64_t arg, uint32_t *out, unsigned max)
{
    unsigned taken = 0;
    uint32_t kept = 0, count = pool->idle;
    for (uint32_t k = 0; k < count; k++) {
        uint32_t index = idle_at(pool, k);
        if (taken < max && pick(slot_at(pool, index), arg))
            out[taken++] = index;
        else
            pool->idle_ring[(pool->idle_oldest + kept++) & pool->idle_mask] = index;
    }
    pool->idle = kept;
    return taken;
}

/* Condemn a resource that is out of the pool (busy or being checked; idle
 * ones are taken out of the ring first): it leaves the live count and waits
 * on the doomed list for the manager's destroy(). */
void slot_doom(respool_t *pool, uint32_t index)
{
    slot_t *s = slot_at(pool, index);
    if (s->state != SLOT_IDLE)
        pool->busy--;
    s->state = SLOT_DOOMED;
    s->next = pool->doomed_head;
    pool->doomed_head = index;
    pool->doomed++;
    manager_notify(pool);
}
