#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "tests.h"

struct gate {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int arrived;
        bool open;
};

/* Blocks until the gate opens: a job that holds its thread, like an ExecSync. */
static void wait_at_gate(void *arg)
{
        struct gate *g = arg;
        pthread_mutex_lock(&g->lock);
        g->arrived++;
        pthread_cond_broadcast(&g->cond);
        while (!g->open)
                pthread_cond_wait(&g->cond, &g->lock);
        pthread_mutex_unlock(&g->lock);
}

static void count(void *arg)
{
        atomic_fetch_add((atomic_int *)arg, 1);
}

static void test_blocked_jobs_do_not_stall_others(void **state)
{
        (void)state;
        struct rm_pool *p = rm_pool_new(256, 60000);
        struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false};
        for (int i = 0; i < 64; i++)
                rm_pool_submit(p, wait_at_gate, &g);
        /* All 64 run at once: each got a thread of its own. */
        pthread_mutex_lock(&g.lock);
        while (g.arrived < 64)
                pthread_cond_wait(&g.cond, &g.lock);
        pthread_mutex_unlock(&g.lock);
        size_t busy = 0;
        assert_int_equal(rm_pool_threads(p, &busy), 64);
        assert_int_equal(busy, 64);

        /* A job submitted now still runs while the 64 wait. */
        atomic_int n = 0;
        rm_pool_submit(p, count, &n);
        for (int i = 0; i < 2000 && atomic_load(&n) == 0; i++)
                usleep(1000);
        assert_int_equal(atomic_load(&n), 1);

        pthread_mutex_lock(&g.lock);
        g.open = true;
        pthread_cond_broadcast(&g.cond);
        pthread_mutex_unlock(&g.lock);
        rm_pool_drain(p);
        assert_int_equal(rm_pool_threads(p, &busy), 65);
        assert_int_equal(busy, 0);
        rm_pool_free(p);
}

static void test_idle_threads_retire(void **state)
{
        (void)state;
        struct rm_pool *p = rm_pool_new(8, 50);
        struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, true};
        for (int i = 0; i < 20; i++)
                rm_pool_submit(p, wait_at_gate, &g);
        rm_pool_drain(p);
        /* Bounded: never more than the maximum. */
        assert_true(rm_pool_threads(p, NULL) <= 8);
        for (int i = 0; i < 200 && rm_pool_threads(p, NULL) > 0; i++)
                usleep(10000);
        assert_int_equal(rm_pool_threads(p, NULL), 0);
        /* And it grows again afterwards. */
        atomic_int n = 0;
        for (int i = 0; i < 10; i++)
                rm_pool_submit(p, count, &n);
        rm_pool_drain(p);
        assert_int_equal(atomic_load(&n), 10);
        rm_pool_free(p);
}

static void test_bounded_pool_queues(void **state)
{
        (void)state;
        struct rm_pool *p = rm_pool_new(2, 60000);
        struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false};
        for (int i = 0; i < 5; i++)
                rm_pool_submit(p, wait_at_gate, &g);
        pthread_mutex_lock(&g.lock);
        while (g.arrived < 2)
                pthread_cond_wait(&g.cond, &g.lock);
        pthread_mutex_unlock(&g.lock);
        usleep(20000);
        assert_int_equal(rm_pool_threads(p, NULL), 2);
        pthread_mutex_lock(&g.lock);
        assert_int_equal(g.arrived, 2);
        g.open = true;
        pthread_cond_broadcast(&g.cond);
        pthread_mutex_unlock(&g.lock);
        /* Free runs what was queued before stopping. */
        rm_pool_free(p);
        assert_int_equal(g.arrived, 5);
}

int run_pool_tests(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_blocked_jobs_do_not_stall_others),
            cmocka_unit_test(test_idle_threads_retire),
            cmocka_unit_test(test_bounded_pool_queues),
        };
        return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
