/* Four threads call malloc a known number of times each (1001, 2001, 3001, 4001: one of them for a
 * large block, 100000 bytes times the thread's number), then the program prints each thread's id,
 * how many times it called malloc and the largest size it asked for, for a tracer's counts to be
 * compared with. With an argument, it then waits that many milliseconds before it exits (for the
 * maps to be read while it runs).
 *
 *   cc -O1 -pthread malloc_threads.c -o malloc_threads */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4

struct worker {
    pthread_t thread;
    pid_t tid;
    unsigned long calls;
    unsigned long largest;
};

static struct worker workers[THREADS];

static void *run(void *arg)
{
    struct worker *w = arg;
    unsigned long n = 1000 * (unsigned long)(w - workers + 1);
    void *volatile keep;
    w->tid = gettid();
    w->largest = 100000 * (unsigned long)(w - workers + 1);
    keep = malloc(w->largest);
    free(keep);
    for (unsigned long i = 0; i < n; i++) {
        keep = malloc(16 + i % 64);
        free(keep);
    }
    w->calls = n + 1;
    return NULL;
}

int main(int argc, char **argv)
{
    for (int i = 0; i < THREADS; i++)
        pthread_create(&workers[i].thread, NULL, run, &workers[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(workers[i].thread, NULL);
    for (int i = 0; i < THREADS; i++)
        printf("thread %d called malloc %lu times (largest: %lu bytes)\n", workers[i].tid, workers[i].calls,
               workers[i].largest);
    fflush(stdout);
    if (argc > 1) {
        long ms = atol(argv[1]);
        struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep(&t, NULL);
    }
    return 0;
}
