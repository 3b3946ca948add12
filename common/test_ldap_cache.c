/* test_ldap_cache - TTLs, LRU eviction, deep copies and counters of the LDAP
 * answer cache, on a hand-driven clock; plus the entry helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_alloc.h"
#include "mx_ldap.h"
#include "mx_ldap_cache.h"

static uint64_t fake_now_ms;

static uint64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now_ms;
}

/* One entry dn with attribute "mail" = mail and "mxAccountStatus" = status. */
static struct mx_ldap_entry *make_entry(const char *dn, const char *mail, const char *status)
{
    struct mx_ldap_entry *e = mx_calloc(1, sizeof *e);

    e->dn = mx_strdup(dn);
    e->n_attrs = 2;
    e->attrs = mx_calloc(2, sizeof *e->attrs);
    e->attrs[0].name = mx_strdup("mail");
    e->attrs[0].n_values = 1;
    e->attrs[0].values = mx_calloc(1, sizeof *e->attrs[0].values);
    e->attrs[0].values[0].data = mx_strdup(mail);
    e->attrs[0].values[0].len = strlen(mail);
    e->attrs[1].name = mx_strdup("mxAccountStatus");
    e->attrs[1].n_values = 1;
    e->attrs[1].values = mx_calloc(1, sizeof *e->attrs[1].values);
    e->attrs[1].values[0].data = mx_strdup(status);
    e->attrs[1].values[0].len = strlen(status);
    return e;
}

static struct mx_ldap_cache *new_cache(size_t max, unsigned pos, unsigned neg)
{
    fake_now_ms = 1000000;
    return mx_ldap_cache_new(max, pos, neg, fake_clock, NULL);
}

static void test_positive_ttl_boundary(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(10, 60, 30);
    struct mx_ldap_entry *e = make_entry("uid=alice,ou=people,dc=example,dc=test",
                                         "alice@example.test", "active");
    struct mx_ldap_entry *got = NULL;
    size_t n = 99;
    uint64_t t0 = fake_now_ms;

    assert_true(mx_ldap_cache_put(c, "k", e, 1));
    fake_now_ms = t0 + 60000 - 1; /* last millisecond of validity */
    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_POSITIVE);
    assert_int_equal(n, 1);
    assert_string_equal(got[0].dn, "uid=alice,ou=people,dc=example,dc=test");
    mx_ldap_entries_free(&got, n);
    assert_null(got);

    fake_now_ms = t0 + 60000; /* exactly at the TTL: gone */
    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_MISS);
    assert_null(got);
    assert_int_equal(n, 0);

    struct mx_ldap_cache_stats st;
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);

    mx_ldap_entries_free(&e, 1);
    mx_ldap_cache_free(&c);
    assert_null(c);
}

static void test_negative_ttl_differs(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(10, 60, 30);
    struct mx_ldap_entry *e = make_entry("uid=bob,ou=people,dc=example,dc=test",
                                         "bob@example.test", "disabled");
    struct mx_ldap_entry *got = NULL;
    size_t n = 0;
    uint64_t t0 = fake_now_ms;

    assert_true(mx_ldap_cache_put(c, "neg", NULL, 0));
    assert_true(mx_ldap_cache_put(c, "pos", e, 1));

    fake_now_ms = t0 + 30000 - 1;
    assert_int_equal(mx_ldap_cache_get(c, "neg", &got, &n), MX_LDAP_CACHE_NEGATIVE);
    assert_null(got);
    assert_int_equal(n, 0);

    fake_now_ms = t0 + 30000;
    assert_int_equal(mx_ldap_cache_get(c, "neg", &got, &n), MX_LDAP_CACHE_MISS);
    assert_int_equal(mx_ldap_cache_get(c, "pos", &got, &n), MX_LDAP_CACHE_POSITIVE);
    mx_ldap_entries_free(&got, n);

    fake_now_ms = t0 + 60000;
    assert_int_equal(mx_ldap_cache_get(c, "pos", &got, &n), MX_LDAP_CACHE_MISS);

    struct mx_ldap_cache_stats st;
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.negative_hits, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.expired, 2);
    assert_int_equal(st.inserts, 2);

    mx_ldap_entries_free(&e, 1);
    mx_ldap_cache_free(&c);
}

static void test_zero_ttl_not_stored(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(10, 60, 0);
    struct mx_ldap_entry *e = make_entry("uid=carol,ou=people,dc=example,dc=test",
                                         "carol@example.test", "active");
    struct mx_ldap_entry *got = NULL;
    size_t n = 0;

    assert_false(mx_ldap_cache_put(c, "k", NULL, 0));
    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_MISS);

    /* A positive answer is replaced by a newer negative one even when
     * negatives are not cached: the old answer must not outlive it. */
    assert_true(mx_ldap_cache_put(c, "k", e, 1));
    assert_false(mx_ldap_cache_put(c, "k", NULL, 0));
    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_MISS);

    struct mx_ldap_cache_stats st;
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 0);

    mx_ldap_entries_free(&e, 1);
    mx_ldap_cache_free(&c);
}

static void test_replace_answer(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(10, 60, 30);
    struct mx_ldap_entry *e1 = make_entry("uid=dave,dc=x", "dave@example.test", "active");
    struct mx_ldap_entry *e2 = make_entry("uid=dave,dc=x", "dave@example.test", "disabled");
    struct mx_ldap_entry *got = NULL;
    size_t n = 0;

    mx_ldap_cache_put(c, "k", NULL, 0);
    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_NEGATIVE);
    mx_ldap_cache_put(c, "k", e1, 1);
    fake_now_ms += 50000;
    mx_ldap_cache_put(c, "k", e2, 1); /* refreshes the TTL too */
    fake_now_ms += 50000;
    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_POSITIVE);
    assert_string_equal(mx_ldap_entry_get_first(&got[0], "mxAccountStatus"), "disabled");
    mx_ldap_entries_free(&got, n);

    struct mx_ldap_cache_stats st;
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 1);

    mx_ldap_entries_free(&e1, 1);
    mx_ldap_entries_free(&e2, 1);
    mx_ldap_cache_free(&c);
}

static void test_lru_eviction_keeps_recent(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(3, 60, 30);
    struct mx_ldap_entry *got = NULL;
    size_t n = 0;

    mx_ldap_cache_put(c, "a", NULL, 0);
    mx_ldap_cache_put(c, "b", NULL, 0);
    mx_ldap_cache_put(c, "c", NULL, 0);
    /* a becomes the most recently used; b is now the oldest. */
    assert_int_equal(mx_ldap_cache_get(c, "a", &got, &n), MX_LDAP_CACHE_NEGATIVE);
    mx_ldap_cache_put(c, "d", NULL, 0);

    assert_int_equal(mx_ldap_cache_get(c, "b", &got, &n), MX_LDAP_CACHE_MISS);
    assert_int_equal(mx_ldap_cache_get(c, "a", &got, &n), MX_LDAP_CACHE_NEGATIVE);
    assert_int_equal(mx_ldap_cache_get(c, "c", &got, &n), MX_LDAP_CACHE_NEGATIVE);
    assert_int_equal(mx_ldap_cache_get(c, "d", &got, &n), MX_LDAP_CACHE_NEGATIVE);

    /* Now a, c, d in use order a < c < d: the next insert evicts a. */
    mx_ldap_cache_put(c, "e", NULL, 0);
    assert_int_equal(mx_ldap_cache_get(c, "a", &got, &n), MX_LDAP_CACHE_MISS);
    assert_int_equal(mx_ldap_cache_get(c, "e", &got, &n), MX_LDAP_CACHE_NEGATIVE);

    struct mx_ldap_cache_stats st;
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.evictions, 2);
    assert_int_equal(st.entries, 3);
    mx_ldap_cache_free(&c);
}

static void test_many_keys_bounded(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(1000, 60, 30);
    struct mx_ldap_entry *got = NULL;
    size_t n = 0;
    char key[64];

    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "user%d@example.test", i);
        mx_ldap_cache_put(c, key, NULL, 0);
    }
    struct mx_ldap_cache_stats st;
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 1000);
    assert_int_equal(st.evictions, 9000);
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "user%d@example.test", i);
        assert_int_equal(mx_ldap_cache_get(c, key, &got, &n),
                         i >= 9000 ? MX_LDAP_CACHE_NEGATIVE : MX_LDAP_CACHE_MISS);
    }
    assert_true(mx_ldap_cache_remove(c, "user9999@example.test"));
    assert_false(mx_ldap_cache_remove(c, "user9999@example.test"));
    assert_false(mx_ldap_cache_remove(c, "user1@example.test"));
    mx_ldap_cache_clear(c);
    mx_ldap_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(mx_ldap_cache_get(c, "user9998@example.test", &got, &n),
                     MX_LDAP_CACHE_MISS);
    /* Still usable after clear. */
    assert_true(mx_ldap_cache_put(c, "again", NULL, 0));
    assert_int_equal(mx_ldap_cache_get(c, "again", &got, &n), MX_LDAP_CACHE_NEGATIVE);
    mx_ldap_cache_free(&c);
}

static void test_deep_copy_independence(void **state)
{
    (void)state;
    struct mx_ldap_cache *c = new_cache(10, 60, 30);
    struct mx_ldap_entry *src = make_entry("uid=erin,dc=x", "erin@example.test", "active");
    struct mx_ldap_entry *got = NULL;
    size_t n = 0;

    mx_ldap_cache_put(c, "k", src, 1);
    /* Mutate, then free, the source: the cache must not notice. */
    src[0].dn[0] = 'X';
    src[0].attrs[0].values[0].data[0] = 'X';
    mx_ldap_entries_free(&src, 1);

    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_POSITIVE);
    assert_string_equal(got[0].dn, "uid=erin,dc=x");
    assert_string_equal(mx_ldap_entry_get_first(&got[0], "mail"), "erin@example.test");
    /* Mutating what get returned must not reach the cache either. */
    got[0].attrs[0].values[0].data[0] = 'Y';
    mx_ldap_entries_free(&got, n);

    assert_int_equal(mx_ldap_cache_get(c, "k", &got, &n), MX_LDAP_CACHE_POSITIVE);
    assert_string_equal(mx_ldap_entry_get_first(&got[0], "mail"), "erin@example.test");
    mx_ldap_entries_free(&got, n);
    mx_ldap_cache_free(&c);
}

static void test_key_unambiguous(void **state)
{
    (void)state;
    const char *mail[] = { "mail", NULL };
    const char *mail_uid[] = { "mail", "uid", NULL };
    const char *mailuid[] = { "mailuid", NULL };
    char *keys[] = {
        mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=a)", NULL, 0),
        mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=a)", mail, 0),
        mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=a)", mail_uid, 0),
        mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=a)", mailuid, 0),
        mx_ldap_cache_key("dc=example,dc=test", 1, "(mail=a)", NULL, 0),
        mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=a)", NULL, 1),
        mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=b)", NULL, 0),
        mx_ldap_cache_key("a", 2, "bc", NULL, 0),
        mx_ldap_cache_key("ab", 2, "c", NULL, 0),
        mx_ldap_cache_key("", 2, "", NULL, 0),
    };
    size_t nk = sizeof keys / sizeof *keys;

    for (size_t i = 0; i < nk; i++)
        for (size_t j = i + 1; j < nk; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                fail_msg("keys %zu and %zu collide: %s", i, j, keys[i]);
    char *again = mx_ldap_cache_key("dc=example,dc=test", 2, "(mail=a)", mail, 0);
    assert_string_equal(again, keys[1]);
    free(again);
    for (size_t i = 0; i < nk; i++)
        free(keys[i]);
}

static void test_entry_helpers(void **state)
{
    (void)state;
    struct mx_ldap_entry *e = make_entry("uid=frank,dc=x", "frank@example.test", "active");
    const struct mx_ldap_attr *a = mx_ldap_entry_get(e, "MAIL");

    assert_non_null(a);
    assert_int_equal(a->n_values, 1);
    assert_string_equal(mx_ldap_entry_get_first(e, "mxaccountstatus"), "active");
    assert_null(mx_ldap_entry_get(e, "mailx"));
    assert_null(mx_ldap_entry_get_first(e, "userPassword"));

    /* Binary values keep their length and NUL bytes through a copy. */
    free(e->attrs[0].values[0].data);
    e->attrs[0].values[0].data = mx_memdup("a\0b\0", 5);
    e->attrs[0].values[0].len = 4;
    struct mx_ldap_entry *copy = mx_ldap_entries_dup(e, 1);
    assert_int_equal(copy[0].attrs[0].values[0].len, 4);
    assert_memory_equal(copy[0].attrs[0].values[0].data, "a\0b\0", 5);
    assert_null(mx_ldap_entries_dup(e, 0));
    mx_ldap_entries_free(&copy, 1);
    mx_ldap_entries_free(&e, 1);
    mx_ldap_entries_free(&e, 1); /* NULL: no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positive_ttl_boundary),
        cmocka_unit_test(test_negative_ttl_differs),
        cmocka_unit_test(test_zero_ttl_not_stored),
        cmocka_unit_test(test_replace_answer),
        cmocka_unit_test(test_lru_eviction_keeps_recent),
        cmocka_unit_test(test_many_keys_bounded),
        cmocka_unit_test(test_deep_copy_independence),
        cmocka_unit_test(test_key_unambiguous),
        cmocka_unit_test(test_entry_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
