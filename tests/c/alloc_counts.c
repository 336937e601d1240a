/* alloc_counts.c - a C program with exactly known allocations, run under
 * LD_PRELOAD=libmemprof.so by the integration tests. Each of its N rounds
 * makes 12 allocations of 107,705 bytes in all (requested sizes), 12 frees,
 * and leaks one calloc of 500 bytes; one realloc per round fails and must
 * leave its block live. Usage: alloc_counts N [THREADS] (rounds per thread). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;

static void round_once(void)
{
    void *p = malloc(100);
    sink = p;
    free(p);
    sink = calloc(10, 50); /* leaked */
    p = realloc(NULL, 10);
    p = realloc(p, 1000);
    p = realloc(p, 100000);
    free(p);
    if (posix_memalign(&p, 64, 256) == 0)
        free(p);
    /* through `sink`, so that the compiler cannot drop an unused pair */
    free(sink = aligned_alloc(128, 512));
    free(sink = memalign(32, 100));
    free(sink = valloc(5000));
    free(sink = pvalloc(100));
    free(sink = reallocarray(NULL, 7, 9));
    void *q = malloc(64);
    void *r = realloc(q, (size_t)1 << 62); /* fails: q stays live */
    if (r)
        abort();
    free(q);
}

static long rounds;

static void *thread_main(void *arg)
{
    (void)arg;
    for (long i = 0; i < rounds; i++)
        round_once();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    rounds = strtol(argv[1], NULL, 10);
    int nthreads = argc > 2 ? atoi(argv[2]) : 0;
    if (nthreads <= 0) {
        thread_main(NULL);
        return 0;
    }
    pthread_t t[64];
    if (nthreads > 64)
        return 2;
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&t[i], NULL, thread_main, NULL))
            return 3;
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    return 0;
}
