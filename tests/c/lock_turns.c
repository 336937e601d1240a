/* lock_turns.c - threads that allocate in bursts and pause between them, so
 * that the writer lock's bias (preload/recorder.c) passes from one to
 * another many times. Usage: lock_turns BURSTS THREADS: each thread makes
 * BURSTS x 5000 malloc/free pairs of 64 to 71 bytes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

static long bursts;

static void *run(void *arg)
{
    (void)arg;
    for (long b = 0; b < bursts; b++) {
        for (int i = 0; i < 5000; i++) {
            void *volatile p = malloc(64 + (size_t)(i & 7)); /* volatile: the pair cannot be dropped */
            free(p);
        }
        if (b % 3 == 0)
            sched_yield();
        if (b % 7 == 0)
            nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    bursts = strtol(argv[1], NULL, 10);
    int n = atoi(argv[2]);
    pthread_t t[64];
    if (n < 1 || n > 64)
        return 2;
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, run, NULL))
            return 1;
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    return 0;
}
