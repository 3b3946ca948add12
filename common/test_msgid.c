/* test_msgid - uniqueness, strict order through clock steps and counter
 * wrap, the Crockford text form and its parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_msgid.h"

/* ---- a scripted clock ------------------------------------------------ */

static const uint64_t *script;
static size_t script_len, script_pos;

static uint64_t scripted_clock(void)
{
    uint64_t t = script[script_pos < script_len ? script_pos : script_len - 1];
    script_pos++;
    return t;
}

static void use_script(const uint64_t *s, size_t n)
{
    script = s;
    script_len = n;
    script_pos = 0;
    mx_msgid_set_clock_for_test(scripted_clock);
}

static int teardown(void **state)
{
    (void)state;
    mx_msgid_set_clock_for_test(NULL);
    return 0;
}

static uint32_t part32(const struct mx_msgid *id, int at)
{
    const uint8_t *b = id->bytes + at;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t rng_state = UINT64_C(0x2545f4914f6cdd1d);

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(0x2545f4914f6cdd1d);
}

static void random_id(struct mx_msgid *id)
{
    uint64_t a = rng(), b = rng();
    for (int i = 0; i < 8; i++) {
        id->bytes[i] = (uint8_t)(a >> (8 * i));
        id->bytes[8 + i] = (uint8_t)(b >> (8 * i));
    }
}

/* ---- generation ------------------------------------------------------ */

static void test_layout_node_and_time(void **state)
{
    (void)state;
    mx_msgid_init(0xbeef);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    struct mx_msgid a, b;
    mx_msgid_next(&a);
    mx_msgid_next(&b);
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t after = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;

    assert_int_equal(mx_msgid_node(&a), 0xbeef);
    assert_int_equal(a.bytes[6], 0xbe);
    assert_int_equal(a.bytes[7], 0xef);
    assert_true(mx_msgid_millis(&a) >= before && mx_msgid_millis(&b) <= after + 1);
    assert_false(mx_msgid_is_zero(&a));
    /* same process: same random part, counter + 1 */
    assert_int_equal(part32(&a, 8), part32(&b, 8));
    assert_int_equal(part32(&b, 12), part32(&a, 12) + 1);

    uint64_t fixed[] = { UINT64_C(0x0123456789ab) };
    use_script(fixed, 1);
    mx_msgid_init(7);
    mx_msgid_next(&a);
    assert_true(mx_msgid_millis(&a) == UINT64_C(0x0123456789ab));
    assert_int_equal(a.bytes[0], 0x01);
    assert_int_equal(a.bytes[5], 0xab);
    assert_int_equal(mx_msgid_node(&a), 7);
}

static void test_million_ids_strictly_increasing(void **state)
{
    (void)state;
    mx_msgid_init(1);
    enum { N = 1000000 };
    struct mx_msgid *ids = mx_malloc(N * sizeof *ids);
    for (size_t i = 0; i < N; i++)
        mx_msgid_next(&ids[i]);
    /* strictly increasing => all distinct */
    for (size_t i = 1; i < N; i++) {
        if (mx_msgid_compare(&ids[i - 1], &ids[i]) >= 0)
            fail_msg("id %zu not greater than id %zu", i, i - 1);
    }
    free(ids);
}

static void test_clock_steps_back(void **state)
{
    (void)state;
    /* a clock that stalls, jumps back an hour, then recovers */
    static const uint64_t steps[] = { 10000000, 10000000, 9999999, 6400000, 10000001,
                                      10000001, 20000000, 15000000, 20000001 };
    static const uint64_t want_millis[] = { 10000000, 10000000, 10000000, 10000000, 10000001,
                                            10000001, 20000000, 20000000, 20000001 };
    use_script(steps, sizeof steps / sizeof steps[0]);
    mx_msgid_init(3);
    struct mx_msgid prev, id;
    char prev_text[MX_MSGID_TEXT_LEN + 1], text[MX_MSGID_TEXT_LEN + 1];
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        mx_msgid_next(&id);
        assert_true(mx_msgid_millis(&id) == want_millis[i]);
        mx_msgid_format(&id, text);
        if (i > 0) {
            assert_int_equal(mx_msgid_compare(&prev, &id), -1);
            assert_true(strcmp(prev_text, text) < 0); /* file names sort too */
        }
        prev = id;
        memcpy(prev_text, text, sizeof text);
    }
}

static void test_counter_wrap_advances_millis(void **state)
{
    (void)state;
    static const uint64_t stuck[] = { 5000 };
    use_script(stuck, 1);
    mx_msgid_init(3);
    mx_msgid_set_counter_for_test(UINT32_MAX - 2);
    struct mx_msgid ids[5];
    for (int i = 0; i < 5; i++)
        mx_msgid_next(&ids[i]);
    assert_int_equal(part32(&ids[0], 12), UINT32_MAX - 1);
    assert_int_equal(part32(&ids[1], 12), UINT32_MAX);
    assert_int_equal(part32(&ids[2], 12), 0);
    assert_true(mx_msgid_millis(&ids[1]) == 5000);
    assert_true(mx_msgid_millis(&ids[2]) == 5001); /* artificial step */
    assert_true(mx_msgid_millis(&ids[4]) == 5001); /* stays ahead of the stuck clock */
    for (int i = 1; i < 5; i++)
        assert_int_equal(mx_msgid_compare(&ids[i - 1], &ids[i]), -1);

    /* wrap while the clock moves forward: the clock's millis win */
    static const uint64_t moving[] = { 7000, 7001 };
    use_script(moving, 2);
    mx_msgid_set_counter_for_test(UINT32_MAX - 1);
    mx_msgid_next(&ids[0]);
    mx_msgid_next(&ids[1]);
    assert_true(mx_msgid_millis(&ids[0]) == 7000);
    assert_true(mx_msgid_millis(&ids[1]) == 7001);
    assert_int_equal(part32(&ids[1], 12), 0);
    assert_int_equal(mx_msgid_compare(&ids[0], &ids[1]), -1);
}

struct thread_arg {
    struct mx_msgid *ids;
    size_t n;
};

static void *mint_thread(void *p)
{
    struct thread_arg *arg = p;
    for (size_t i = 0; i < arg->n; i++)
        mx_msgid_next(&arg->ids[i]);
    return NULL;
}

static int cmp_ids(const void *a, const void *b)
{
    return mx_msgid_compare(a, b);
}

static void test_threads_never_collide(void **state)
{
    (void)state;
    enum { THREADS = 4, PER = 50000 };
    mx_msgid_init(9);
    struct mx_msgid *ids = mx_malloc(THREADS * PER * sizeof *ids);
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (struct thread_arg){ ids + t * PER, PER };
        assert_int_equal(pthread_create(&th[t], NULL, mint_thread, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    /* each thread sees its own ids increase... */
    for (int t = 0; t < THREADS; t++)
        for (size_t i = 1; i < PER; i++)
            assert_int_equal(mx_msgid_compare(&ids[t * PER + i - 1], &ids[t * PER + i]), -1);
    /* ...and no id appears twice across threads */
    qsort(ids, THREADS * PER, sizeof *ids, cmp_ids);
    for (size_t i = 1; i < THREADS * PER; i++)
        assert_int_not_equal(mx_msgid_compare(&ids[i - 1], &ids[i]), 0);
    free(ids);
}

/* A forked child must not mint the parent's next ids. */
static void test_fork_draws_new_random(void **state)
{
    (void)state;
    static const uint64_t stuck[] = { 123456 };
    use_script(stuck, 1);
    mx_msgid_init(2);
    struct mx_msgid parent_id, child_id;
    mx_msgid_next(&parent_id);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct mx_msgid id;
        mx_msgid_next(&id);
        ssize_t w = write(fds[1], id.bytes, sizeof id.bytes);
        _exit(w == (ssize_t)sizeof id.bytes ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], child_id.bytes, sizeof child_id.bytes),
                     (ssize_t)sizeof child_id.bytes);
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    struct mx_msgid parent_next;
    mx_msgid_next(&parent_next);
    /* the child would otherwise have produced exactly parent_next */
    assert_int_not_equal(mx_msgid_compare(&child_id, &parent_next), 0);
    /* (fails with probability 2^-32 per run: the kernel drew the same) */
    assert_int_not_equal(part32(&child_id, 8), part32(&parent_id, 8));
    assert_int_equal(mx_msgid_node(&child_id), 2);
}

/* ---- text form ------------------------------------------------------- */

struct text_vector {
    uint8_t bytes[MX_MSGID_SIZE];
    const char *text;
};

/* Computed independently: Python int.from_bytes(b, 'big') in base 32. */
static const struct text_vector vectors[] = {
    { { 0 }, "00000000000000000000000000" },
    { { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, "00000000000000000000000001" },
    { { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 }, "00041061050R3GG28A1C60T3GF" },
    { { 0x01, 0x8f, 0x3a, 0x5c, 0x7e, 0x11, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1 },
      "01HWX5RZGHQVQXXBDYXW000001" },
    { { 0x80 }, "40000000000000000000000000" },
    { { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff },
      "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" },
};

static void test_text_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        struct mx_msgid id, back;
        char buf[MX_MSGID_TEXT_LEN + 1];
        memcpy(id.bytes, vectors[i].bytes, MX_MSGID_SIZE);
        assert_ptr_equal(mx_msgid_format(&id, buf), buf);
        assert_string_equal(buf, vectors[i].text);
        memset(&back, 0x55, sizeof back);
        assert_int_equal(mx_msgid_parse(vectors[i].text, &back), 0);
        assert_memory_equal(back.bytes, id.bytes, MX_MSGID_SIZE);
    }
}

static void test_text_round_trip_and_order(void **state)
{
    (void)state;
    for (int i = 0; i < 100000; i++) {
        struct mx_msgid a, b, back;
        char ta[MX_MSGID_TEXT_LEN + 1], tb[MX_MSGID_TEXT_LEN + 1];
        random_id(&a);
        b = a;
        /* often differ only late, so order is decided deep in the text */
        if (i % 2)
            b.bytes[15 - (i / 2) % 16] ^= (uint8_t)(1u << (i % 8));
        else
            random_id(&b);
        mx_msgid_format(&a, ta);
        mx_msgid_format(&b, tb);
        assert_int_equal(strlen(ta), MX_MSGID_TEXT_LEN);
        assert_true(ta[0] >= '0' && ta[0] <= '7');
        assert_int_equal(mx_msgid_parse(ta, &back), 0);
        assert_memory_equal(back.bytes, a.bytes, MX_MSGID_SIZE);
        int by_text = strcmp(ta, tb);
        by_text = (by_text > 0) - (by_text < 0);
        assert_int_equal(by_text, mx_msgid_compare(&a, &b));
    }
}

static void test_parse_lenient_spellings(void **state)
{
    (void)state;
    struct mx_msgid id;
    assert_int_equal(mx_msgid_parse("01hwx5rzghqvqxxbdyxw000001", &id), 0);
    assert_memory_equal(id.bytes, vectors[3].bytes, MX_MSGID_SIZE);
    /* I and L read as 1, O as 0 */
    assert_int_equal(mx_msgid_parse("OIHWX5RZGHQVQXXBDYXWoooooL", &id), 0);
    assert_memory_equal(id.bytes, vectors[3].bytes, MX_MSGID_SIZE);
    assert_int_equal(mx_msgid_parse("0000000000000000000000000i", &id), 0);
    assert_memory_equal(id.bytes, vectors[1].bytes, MX_MSGID_SIZE);
}

static void test_parse_rejects_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "0",
        "0000000000000000000000000",   /* 25 */
        "000000000000000000000000000", /* 27 */
        "80000000000000000000000000",  /* first digit > 7: bit 129 */
        "Z0000000000000000000000000",
        "G0000000000000000000000000",  /* would alias to 0 if bits were dropped */
        "0000000000000000000000000U",  /* U is not Crockford */
        "000000000000000000000000-0",
        "0000000000000 000000000000",
        "00000000000000000000000000\n",
        "0000000000000000000000000\x80",
        "0000000000000000000000000*",
        "000000000000000000000000[0",  /* just after Z */
        "000000000000000000000000@0",  /* just before A */
        "0000000000000000000000000/",  /* just before 0 */
        "0000000000000000000000000:",  /* just after 9 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mx_msgid id;
        if (mx_msgid_parse(bad[i], &id) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    /* every byte value in every position: only the alphabet and its
     * aliases pass */
    char text[MX_MSGID_TEXT_LEN + 1];
    for (int pos = 0; pos < MX_MSGID_TEXT_LEN; pos++) {
        int accepted = 0;
        for (int c = 1; c < 256; c++) {
            memset(text, '0', MX_MSGID_TEXT_LEN);
            text[MX_MSGID_TEXT_LEN] = '\0';
            text[pos] = (char)c;
            struct mx_msgid id;
            if (mx_msgid_parse(text, &id) == 0)
                accepted++;
        }
        /* 32 digits x 2 cases - 10 caseless digits + I L O x 2 = 60; the
         * first position takes only 0-7 (plus O o I i L l) */
        assert_int_equal(accepted, pos == 0 ? 14 : 60);
    }
}

static void test_zero_and_compare(void **state)
{
    (void)state;
    struct mx_msgid zero = { { 0 } }, one = { { 0 } }, top;
    one.bytes[15] = 1;
    memset(top.bytes, 0xff, sizeof top.bytes);
    assert_true(mx_msgid_is_zero(&zero));
    assert_false(mx_msgid_is_zero(&one));
    assert_int_equal(mx_msgid_compare(&zero, &one), -1);
    assert_int_equal(mx_msgid_compare(&top, &one), 1);
    assert_int_equal(mx_msgid_compare(&one, &one), 0);
    assert_true(mx_msgid_millis(&top) == (UINT64_C(1) << 48) - 1);
    assert_int_equal(mx_msgid_node(&top), 0xffff);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_layout_node_and_time, teardown),
        cmocka_unit_test_teardown(test_million_ids_strictly_increasing, teardown),
        cmocka_unit_test_teardown(test_clock_steps_back, teardown),
        cmocka_unit_test_teardown(test_counter_wrap_advances_millis, teardown),
        cmocka_unit_test_teardown(test_threads_never_collide, teardown),
        cmocka_unit_test_teardown(test_fork_draws_new_random, teardown),
        cmocka_unit_test(test_text_vectors),
        cmocka_unit_test(test_text_round_trip_and_order),
        cmocka_unit_test(test_parse_lenient_spellings),
        cmocka_unit_test(test_parse_rejects_bad_input),
        cmocka_unit_test(test_zero_and_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
