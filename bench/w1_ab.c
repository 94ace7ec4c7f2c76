/*
 * w1_ab.c — W1 alone (respool, floor-mutex, memcached-pool, apr-reslist,
 * interleaved rounds), for comparing two builds of the library A/B: build
 * this file against each librespool.a and run them alternately.
 *
 *   lib=<dir with include/ and build/librespool.a>
 *   cc -std=c11 -D_GNU_SOURCE -O2 -pthread -I$lib/include -Ibench \
 *      $(pkg-config --cflags apr-util-1 apr-1 libmemcached) -o w1_ab bench/w1_ab.c \
 *      bench/harness.c bench/contenders.c bench/floors.c bench/peers.c bench/workloads.c \
 *      $lib/build/librespool.a $(pkg-config --libs apr-util-1 apr-1 libmemcached) -lm
 *   ./w1_ab [rounds]
 */
#include <stdio.h>
#include <stdlib.h>

#include "contenders.h"
#include "harness.h"
#include "workloads.h"

#define MAX_AB_ROUNDS MAX_ROUNDS

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 9;
    if (rounds < 1 || rounds > MAX_AB_ROUNDS)
        rounds = 9;
    start_idle_thread();
    const contender_t *contenders[] = {&respool_contender, &floor_mutex_contender,
                                       &memcached_pool_contender, &apr_reslist_contender};
    enum { COUNT = sizeof contenders / sizeof contenders[0] };
    series_t ns[COUNT] = {0};
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < COUNT; k++) {
            int i = (k + r) % COUNT;
            series_add(&ns[i], run_uncontended(contenders[i], 8, 0.25));
        }
    for (int i = 0; i < COUNT; i++) {
        summary_t s = series_summary(&ns[i]);
        printf("%-16s median %.2f min %.2f max %.2f ns/pair\n", contenders[i]->name, s.median,
               s.min, s.max);
    }
    return 0;
}
