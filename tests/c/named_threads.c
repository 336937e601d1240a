/* named_threads.c - 8 threads, each named, make N malloc/free pairs each at
 * once; run under LD_PRELOAD=libmemprof.so by the integration tests.
 * Names: threads 0 and 1 name themselves with pthread_setname_np, the main
 * thread names threads 2 and 3 with pthread_setname_np before they record
 * anything, threads 4-7 name themselves with prctl(PR_SET_NAME), and the
 * main thread calls itself "mp-main" with prctl. Thread i's blocks are
 * 1000 + 8 i bytes, so N rounds make 8 N allocations and 8 N frees of
 * 8224 N bytes in all. Usage: named_threads N. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>

#define THREADS 8

static long rounds;
static pthread_barrier_t named; /* the 8 threads and main: every name is given */
static void *volatile sink;

static void *thread_main(void *arg)
{
    unsigned i = (unsigned)(long)arg;
    char name[16];
    snprintf(name, sizeof name, "mp-%s-%u", i < 4 ? "setname" : "prctl", i % 10);
    if (i < 2 && pthread_setname_np(pthread_self(), name) != 0)
        abort();
    if (i >= 4 && prctl(PR_SET_NAME, name, 0, 0, 0) != 0)
        abort();
    pthread_barrier_wait(&named);
    size_t size = 1000 + 8 * (size_t)i;
    for (long r = 0; r < rounds; r++)
        free(sink = malloc(size)); /* through `sink`: the compiler cannot drop the pair */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    rounds = strtol(argv[1], NULL, 10);
    if (prctl(PR_SET_NAME, "mp-main", 0, 0, 0) != 0 || pthread_barrier_init(&named, NULL, THREADS + 1) != 0)
        return 3;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)i) != 0)
            return 3;
    if (pthread_setname_np(t[2], "mp-setname-2") != 0 || pthread_setname_np(t[3], "mp-setname-3") != 0)
        return 4;
    pthread_barrier_wait(&named);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    return 0;
}
