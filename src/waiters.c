/*
 * waiters.c — the FIFO queue of blocked checkouts and the hand-off rule.
 *
 * Each blocked checkout is a waiter_t on its own stack with its own parker
 * (parking.c), so a hand-off wakes exactly the thread it serves, and a
 * completed waiter returns without taking the pool lock again.
 * Fairness with throughput (bounded barging, as in Go's sync.Mutex
 * starvation mode): while the longest waiter has waited less than the
 * fairness bound, a returned resource becomes idle and the longest waiter is
 * woken to take it, but a thread already running may take it first; once the
 * longest waiter has waited past the bound, returned resources are handed to
 * it directly and running threads queue behind it. A strict bound hands off
 * always. All functions here run with the pool lock held.
 */
#include "internal.h"

void waiter_enqueue(respool_t *pool, waiter_t *waiter)
{
    waiter_queue_t *q = &pool->waiters;
    waiter->next = NULL;
    waiter->prev = q->tail;
    if (q->tail)
        q->tail->next = waiter;
    else
        q->head = waiter;
    q->tail = waiter;
    q->count++;
    if (waiter->zero_timeout)
        q->zero_timeout_count++;
    waiter->in_queue = true;
}

/* Put back at the head a waiter that was first in line and lost its
 * resource to validate(): it keeps its place. */
void waiter_enqueue_front(respool_t *pool, waiter_t *waiter)
{
    waiter_queue_t *q = &pool->waiters;
    waiter->prev = NULL;
    waiter->next = q->head;
    if (q->head)
        q->head->prev = waiter;
    else
        q->tail = waiter;
    q->head = waiter;
    q->count++;
    if (waiter->zero_timeout)
        q->zero_timeout_count++;
    waiter->in_queue = true;
}

void waiter_dequeue(respool_t *pool, waiter_t *waiter)
{
    waiter_queue_t *q = &pool->waiters;
    if (waiter->prev)
        waiter->prev->next = waiter->next;
    else
        q->head = waiter->next;
    if (waiter->next)
        waiter->next->prev = waiter->prev;
    else
        q->tail = waiter->prev;
    waiter->prev = waiter->next = NULL;
    q->count--;
    if (waiter->zero_timeout)
        q->zero_timeout_count--;
    waiter->in_queue = false;
}

/* End a waiter's wait: it leaves the queue with an outcome (RESPOOL_OK with
 * its lease issued here, or an error), its wait is counted, and its parker
 * is finished. The waiter may return at once, so nothing here touches it
 * after parker_wake. If it had been woken for an idle resource it will now
 * not take, the next in line is woken instead. */
void waiter_complete(respool_t *pool, waiter_t *waiter, int outcome, uint32_t slot)
{
    if (pool->deferred_wake == &waiter->parker) { /* finishing wakes it: drop the plain wake */
        pool->deferred_wake = NULL;
        parker_notify_done(&waiter->parker);
    }
    waiter_dequeue(pool, waiter);
    waiter->outcome = outcome;
    waiter->slot = slot;
    if (outcome == RESPOOL_OK)
        lease_issue(pool, slot, &waiter->lease, waiter->site);
    else if (outcome == RESPOOL_ETIMEDOUT || outcome == RESPOOL_EFULL)
        pool->timeouts++;
    record_wait(pool, waiter, clock_now_ns(), outcome == RESPOOL_OK);
    parker_wake(&waiter->parker, true);
    waiters_kick(pool);
}

/* Has the longest waiter waited past the fairness bound? Then nobody may
 * barge ahead of it. Call only with waiters queued. */
bool waiters_head_starving(const respool_t *pool, int64_t now_ns)
{
    return pool->fairness_ns < 0 || now_ns - pool->waiters.head->enqueued_ns >= pool->fairness_ns;
}

/* Offer a returned or new resource (slot counted busy, out of every list) to
 * the waiters. A fresh resource always goes to the longest waiter; a returned
 * one only when that waiter is starving (else the caller makes it idle and
 * kicks). Waiters whose deadline has already passed are completed with
 * ETIMEDOUT on the way, so a resource is never handed to a waiter that could
 * not take it: it goes to the next one or back to the pool. */
bool waiters_hand_off(respool_t *pool, uint32_t index, int64_t now_ns)
{
    while (pool->waiters.head) {
        waiter_t *head = pool->waiters.head;
        if (head->deadline_ns <= now_ns) {
            waiter_complete(pool, head, RESPOOL_ETIMEDOUT, NO_SLOT);
            continue;
        }
        waiter_complete(pool, head, RESPOOL_OK, index);
        return true;
    }
    return false;
}

/* Keep the queue moving: when resources are idle and threads wait, the
 * longest waiter must be awake (or about to be) to take one. At most one
 * outstanding wake-up, so a burst of checkins costs one signal. The wake-up
 * itself is delivered when the lock is released (pool_unlock), so the
 * woken thread finds the lock free. */
void waiters_kick(respool_t *pool)
{
    waiter_t *head = pool->waiters.head;
    if (head && pool->idle > 0 && !head->signalled) {
        head->signalled = true;
        parker_wake_deferred(pool, &head->parker);
    }
}

/* Complete every waiter (or only those with timeout 0) with an error. */
void waiters_fail(respool_t *pool, int outcome, bool zero_timeout_only)
{
    waiter_t *w = pool->waiters.head;
    while (w && (!zero_timeout_only || pool->waiters.zero_timeout_count > 0)) {
        waiter_t *next = w->next;
        if (!zero_timeout_only || w->zero_timeout)
            waiter_complete(pool, w, outcome, NO_SLOT);
        w = next;
    }
}
