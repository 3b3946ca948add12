/* test_imap_seqset - sequence-set parsing, "*" resolution, queries and
 * formatting, and the cost bounds for hostile sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "imap_seqset.h"
#include "mx_alloc.h"

/* parse_format - parse, expect success, and return the formatted text. */
static char *parse_format(const char *text, struct imap_seqset *set)
{
    const char *err = NULL;
    if (imap_seqset_parse(text, strlen(text), set, &err) != 0) {
        print_error("\"%s\" refused: %s\n", text, err);
        fail();
    }
    return imap_seqset_format(set);
}

static void expect_normal(const char *text, const char *normal)
{
    struct imap_seqset set;
    char *f = parse_format(text, &set);
    if (strcmp(f, normal) != 0) {
        print_error("\"%s\" -> \"%s\", want \"%s\"\n", text, f, normal);
        fail();
    }
    /* the formatted text parses back to the same set */
    struct imap_seqset again;
    char *g = parse_format(f, &again);
    assert_string_equal(f, g);
    free(f);
    free(g);
    imap_seqset_free(&set);
    imap_seqset_free(&again);
}

static void expect_invalid(const char *text, const char *why)
{
    struct imap_seqset set;
    const char *err = NULL;
    if (imap_seqset_parse(text, strlen(text), &set, &err) == 0) {
        print_error("\"%s\" accepted\n", text);
        fail();
    }
    assert_non_null(err);
    if (strstr(err, why) == NULL) {
        print_error("\"%s\": \"%s\" lacks \"%s\"\n", text, err, why);
        fail();
    }
    assert_int_equal(set.n, 0);
    assert_null(set.ranges);
}

static void test_parse_normalize(void **state)
{
    (void)state;
    expect_normal("1", "1");
    expect_normal("1,3:5,7:*,$", "1,3:5,7:*,$");
    expect_normal("5:3", "3:5");
    expect_normal("1,2,3,4", "1:4");
    expect_normal("9,1,5:7,2,8", "1:2,5:9");
    expect_normal("10:20,15:25,1:9", "1:25");
    expect_normal("4294967295", "4294967295");
    expect_normal("4294967294:4294967295,1", "1,4294967294:4294967295");
    expect_normal("*", "*");
    expect_normal("*:*", "*");
    expect_normal("*:4", "4:*");
    expect_normal("7:*,3:*,*", "3:*");
    expect_normal("$", "$");
    expect_normal("1:5,3:4,2", "1:5");
}

static void test_parse_invalid(void **state)
{
    (void)state;
    expect_invalid("", "empty");
    expect_invalid("0", "0 or leading zero");
    expect_invalid("1:0", "0 or leading zero");
    expect_invalid("01", "leading zero");
    expect_invalid("4294967296", "too large");
    expect_invalid("99999999999999999999999", "too large");
    expect_invalid("1,", "expected a number");
    expect_invalid(",1", "expected a number");
    expect_invalid("1,,2", "expected a number");
    expect_invalid("1:", "expected a number");
    expect_invalid(":1", "expected a number");
    expect_invalid("1:2:3", "invalid character");
    expect_invalid("1 2", "invalid character");
    expect_invalid("$:1", "invalid character");
    expect_invalid("-1", "expected a number");
    expect_invalid("1;2", "invalid character");
}

static void test_resolve(void **state)
{
    (void)state;
    struct imap_seqset s;
    char *f;
    /* "4:*" in a mailbox of 3 is 3 (RFC 9051 6.4.8) */
    free(parse_format("4:*", &s));
    imap_seqset_resolve(&s, 3);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "3");
    free(f);
    imap_seqset_free(&s);

    free(parse_format("1,7:*", &s));
    imap_seqset_resolve(&s, 10);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "1,7:10");
    free(f);
    assert_int_equal(imap_seqset_count(&s), 5);
    imap_seqset_free(&s);

    free(parse_format("*", &s));
    imap_seqset_resolve(&s, 42);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "42");
    free(f);
    imap_seqset_free(&s);

    /* empty mailbox: "*" matches nothing; plain numbers stay */
    free(parse_format("2,1:*", &s));
    imap_seqset_resolve(&s, 0);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "2");
    free(f);
    assert_int_equal(imap_seqset_highest(&s), 2);
    imap_seqset_clamp(&s, 0);
    assert_int_equal(imap_seqset_count(&s), 0);
    imap_seqset_free(&s);

    free(parse_format("1:3,8,20:30", &s));
    imap_seqset_clamp(&s, 25);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "1:3,8,20:25");
    free(f);
    imap_seqset_clamp(&s, 5);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "1:3");
    free(f);
    imap_seqset_free(&s);
}

static void test_queries(void **state)
{
    (void)state;
    struct imap_seqset s;
    free(parse_format("3:5,10,4294967290:4294967295", &s));
    assert_false(imap_seqset_contains(&s, 1));
    assert_true(imap_seqset_contains(&s, 3));
    assert_true(imap_seqset_contains(&s, 5));
    assert_false(imap_seqset_contains(&s, 6));
    assert_true(imap_seqset_contains(&s, 10));
    assert_true(imap_seqset_contains(&s, 4294967295u));
    assert_false(imap_seqset_contains(&s, 4294967289u));
    assert_int_equal(imap_seqset_count(&s), 3 + 1 + 6);
    assert_int_equal(imap_seqset_highest(&s), 4294967295u);

    uint32_t want[] = { 3, 4, 5, 10, 4294967290u, 4294967291u, 4294967292u, 4294967293u,
                        4294967294u, 4294967295u };
    struct imap_seqset_iter it;
    imap_seqset_iter_init(&it);
    uint32_t n;
    size_t k = 0;
    while (imap_seqset_iter_next(&s, &it, &n)) {
        assert_true(k < sizeof(want) / sizeof(want[0]));
        assert_int_equal(n, want[k]);
        k++;
    }
    assert_int_equal(k, sizeof(want) / sizeof(want[0]));
    assert_false(imap_seqset_iter_next(&s, &it, &n)); /* stays finished */
    imap_seqset_free(&s);

    /* the whole 32-bit space counts without overflow */
    free(parse_format("1:4294967295", &s));
    assert_int_equal(imap_seqset_count(&s), 4294967295ull);
    imap_seqset_free(&s);
}

static void test_add(void **state)
{
    (void)state;
    struct imap_seqset s;
    imap_seqset_init(&s);
    for (uint32_t i = 1; i <= 1000; i++)
        imap_seqset_add(&s, i, i);
    assert_int_equal(s.n, 1);
    imap_seqset_add(&s, 2000, 1500);
    imap_seqset_add(&s, 1200, 1210);
    imap_seqset_add(&s, 1001, 1001);
    imap_seqset_add(&s, 1211, 1499);
    char *f = imap_seqset_format(&s);
    assert_string_equal(f, "1:1001,1200:2000");
    free(f);
    imap_seqset_free(&s);
    f = imap_seqset_format(&s);
    assert_string_equal(f, "");
    free(f);
}

/* 10,000 repeats of a range and 100,000 descending ranges stay cheap; one
 * more than the range cap is refused. */
static void test_hostile_sizes(void **state)
{
    (void)state;
    size_t reps = 10000;
    char *buf = mx_malloc(reps * 12 + 16);
    size_t len = 0;
    for (size_t i = 0; i < reps; i++)
        len += (size_t)sprintf(buf + len, "1:*,");
    struct imap_seqset s;
    const char *err;
    /* with the trailing comma: invalid */
    assert_int_equal(imap_seqset_parse(buf, len, &s, &err), -1);
    /* without: one star range */
    assert_int_equal(imap_seqset_parse(buf, len - 1, &s, &err), 0);
    assert_true(s.has_star);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.star_from, 1);
    imap_seqset_free(&s);
    len = 0;
    for (size_t i = 0; i < reps; i++)
        len += (size_t)sprintf(buf + len, "%s1:5", i ? "," : "");
    assert_int_equal(imap_seqset_parse(buf, len, &s, &err), 0);
    assert_int_equal(s.n, 1);
    assert_true(s.cap <= 8);
    imap_seqset_free(&s);
    free(buf);

    size_t many = 100000;
    buf = mx_malloc(many * 12 + 16);
    len = 0;
    for (size_t i = 0; i < many; i++)
        len += (size_t)sprintf(buf + len, "%s%zu", i ? "," : "", (many - i) * 2);
    clock_t t0 = clock();
    assert_int_equal(imap_seqset_parse(buf, len, &s, &err), 0);
    assert_int_equal(s.n, many);
    assert_int_equal(s.ranges[0].lo, 2);
    assert_true(clock() - t0 < 2 * CLOCKS_PER_SEC);
    imap_seqset_free(&s);
    len += (size_t)sprintf(buf + len, ",1");
    assert_int_equal(imap_seqset_parse(buf, len, &s, &err), -1);
    assert_non_null(strstr(err, "too many ranges"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_normalize),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_hostile_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
