#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct rda_pool {
    int32_t threads;
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t idle;
    uint64_t generation; /* bumped per run; workers wait for a new one */
    int32_t busy;        /* workers still inside the current run */
    int stop;
    /* the current run */
    rda_pool_fn fn;
    void *arg;
    int64_t n;
    _Atomic int64_t next;
};

typedef struct {
    rda_pool *pool;
    int32_t id;
} worker_arg;

static void drain(rda_pool *p, int32_t thread) {
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n) break;
        p->fn(p->arg, i, thread);
    }
}

static void *worker_main(void *a) {
    worker_arg *wa = a;
    rda_pool *p = wa->pool;
    int32_t id = wa->id;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p, id);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

rda_pool *rda_pool_create(int32_t threads) {
    if (threads < 1) threads = 1;
    rda_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    if (threads > 1) {
        p->workers = calloc((size_t)threads - 1, sizeof(pthread_t));
        if (!p->workers) {
            rda_pool_destroy(p);
            return NULL;
        }
        for (int32_t t = 1; t < threads; t++) {
            worker_arg *wa = malloc(sizeof(*wa));
            if (!wa) {
                p->threads = t;
                rda_pool_destroy(p);
                return NULL;
            }
            wa->pool = p;
            wa->id = t;
            if (pthread_create(&p->workers[t - 1], NULL, worker_main, wa) != 0) {
                free(wa);
                p->threads = t;
                rda_pool_destroy(p);
                return NULL;
            }
        }
    }
    return p;
}

void rda_pool_destroy(rda_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int32_t t = 1; t < p->threads; t++) pthread_join(p->workers[t - 1], NULL);
    free(p->workers);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    free(p);
}

int32_t rda_pool_threads(const rda_pool *p) { return p ? p->threads : 1; }

void rda_pool_run(rda_pool *p, int64_t n, rda_pool_fn fn, void *arg) {
    if (n <= 0) return;
    if (p->threads == 1 || n == 1) {
        for (int64_t i = 0; i < n; i++) fn(arg, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->busy = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
