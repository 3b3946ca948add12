/* test_ldap_escape - RFC 4515 escaping of filter values and filter templates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_ldap.h"

struct escape_case {
    const char *name;
    const char *in;
    size_t len; /* explicit: inputs may hold NUL */
    const char *out;
};

#define CASE(n, i, o) { (n), (i), sizeof(i) - 1, (o) }

static const struct escape_case escape_cases[] = {
    CASE("plain address", "alice@example.test", "alice@example.test"),
    CASE("empty", "", ""),
    CASE("star", "*", "\\2a"),
    CASE("open paren", "(", "\\28"),
    CASE("close paren", ")", "\\29"),
    CASE("backslash", "\\", "\\5c"),
    CASE("all specials", "a*b(c)d\\e", "a\\2ab\\28c\\29d\\5ce"),
    CASE("NUL inside", "a\0b", "a\\00b"),
    CASE("only NUL", "\0", "\\00"),
    CASE("NUL at end", "alice@example.test\0", "alice@example.test\\00"),
    CASE("prefix wildcard", "alice*", "alice\\2a"),
    CASE("already escaped is escaped again", "\\2a", "\\5c2a"),
    CASE("classic injection", "*)(uid=*))(|(uid=*",
         "\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a"),
    CASE("attribute injection", "*)(mail=*", "\\2a\\29\\28mail=\\2a"),
    CASE("CR LF TAB", "a\r\nb\tc", "a\\0d\\0ab\\09c"),
    CASE("DEL", "\x7f", "\\7f"),
    CASE("printable punctuation kept", "a=b&c|d!e~f<g>h", "a=b&c|d!e~f<g>h"),
    CASE("UTF-8 two bytes", "j\xc3\xbcrgen@ex\xc3\xa4mple.test", "j\xc3\xbcrgen@ex\xc3\xa4mple.test"),
    CASE("UTF-8 three bytes", "\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac"),
    CASE("UTF-8 four bytes", "\xf0\x9f\x93\xa7", "\xf0\x9f\x93\xa7"),
    CASE("invalid byte FF", "a\xff" "b", "a\\ffb"),
    CASE("lone continuation", "\x80", "\\80"),
    CASE("overlong slash", "\xc0\xaf", "\\c0\\af"),
    CASE("surrogate", "\xed\xa0\x80", "\\ed\\a0\\80"),
    CASE("truncated sequence", "\xe6\x97", "\\e6\\97"),
    CASE("above U+10FFFF", "\xf4\x90\x80\x80", "\\f4\\90\\80\\80"),
    CASE("UTF-8 then star", "\xc3\xa9*", "\xc3\xa9\\2a"),
};

static void test_escape_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof escape_cases / sizeof *escape_cases; i++) {
        const struct escape_case *c = &escape_cases[i];
        char *out = mx_ldap_escape_filter_value(c->in, c->len);
        if (strcmp(out, c->out) != 0)
            fail_msg("case '%s': got '%s', want '%s'", c->name, out, c->out);
        free(out);
    }
}

static void test_escape_null_value(void **state)
{
    (void)state;
    char *out = mx_ldap_escape_filter_value(NULL, 5);
    assert_string_equal(out, "");
    free(out);
}

/* Decode \XX escapes; returns the byte count or -1 on a malformed escape. */
static long unescape(const char *s, unsigned char *out)
{
    long n = 0;
    while (*s != '\0') {
        if (*s == '\\') {
            unsigned v;
            if (sscanf(s + 1, "%2x", &v) != 1 || s[1] == '\0' || s[2] == '\0')
                return -1;
            out[n++] = (unsigned char)v;
            s += 3;
        } else {
            out[n++] = (unsigned char)*s++;
        }
    }
    return n;
}

/* Random byte strings: the output never holds a filter metacharacter, every
 * backslash starts a two-digit hex escape, and decoding gives the input back
 * (escaping changes the representation, never the value). */
static void test_escape_random_roundtrip(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    unsigned char in[64], back[64];

    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(round % 40);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* bias towards the interesting bytes */
            unsigned r = (seed >> 16) & 0xff;
            in[i] = (r & 1) ? (unsigned char)"*()\\\0aZ\xc3\xa9\xff"[r % 11] : (unsigned char)r;
        }
        char *out = mx_ldap_escape_filter_value((const char *)in, len);
        assert_null(strpbrk(out, "*()"));
        for (const char *p = out; *p; p++) {
            assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
            if (*p == '\\') {
                assert_non_null(strchr("0123456789abcdef", p[1]));
                assert_non_null(strchr("0123456789abcdef", p[2]));
                assert_true(p[1] != '\0' && p[2] != '\0');
            }
        }
        long n = unescape(out, back);
        assert_int_equal(n, (long)len);
        assert_memory_equal(back, in, len);
        free(out);
    }
}

static void test_format_basic(void **state)
{
    (void)state;
    char *f = mx_ldap_filter_format(
        "(&(objectClass=mxAccount)(|(mail=%s)(mxAlternateAddress=%s)))",
        "alice@example.test", "alice@example.test");
    assert_string_equal(f, "(&(objectClass=mxAccount)(|(mail=alice@example.test)"
                           "(mxAlternateAddress=alice@example.test)))");
    free(f);
}

static void test_format_escapes_values_not_template(void **state)
{
    (void)state;
    char *f = mx_ldap_filter_format("(&(uid=*)(mail=%s))", "*)(uid=*))(|(uid=*");
    /* The template's own '*' stays a wildcard; the value's become literals. */
    assert_string_equal(f, "(&(uid=*)(mail=\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a))");
    free(f);
}

static void test_format_percent(void **state)
{
    (void)state;
    char *f = mx_ldap_filter_format("(description=100%%%s)", "%s");
    /* %% is a literal '%'; a value's "%s" is text, not a directive. */
    assert_string_equal(f, "(description=100%%s)");
    free(f);

    f = mx_ldap_filter_format("(objectClass=*)");
    assert_string_equal(f, "(objectClass=*)");
    free(f);
}

static void test_format_empty_value(void **state)
{
    (void)state;
    char *f = mx_ldap_filter_format("(mail=%s)", "");
    assert_string_equal(f, "(mail=)");
    free(f);
}

static void test_format_bad_template(void **state)
{
    (void)state;
    /* A valid printf directive that is not ours must still be refused. */
    assert_null(mx_ldap_filter_format("(uidNumber=%d)", 5));
    const char *volatile null_value = NULL; /* hidden from -Wformat-overflow */
    assert_null(mx_ldap_filter_format("(mail=%s)", null_value));
}

static void test_expand(void **state)
{
    (void)state;
    const char *error = NULL;
    const char *vals[] = { "bob@example.test", "x*" };
    char *f = mx_ldap_filter_expand("(|(mail=%s)(cn=%s))", vals, 2, &error);

    assert_non_null(f);
    assert_string_equal(f, "(|(mail=bob@example.test)(cn=x\\2a))");
    free(f);

    f = mx_ldap_filter_expand("(mail=%s)", vals, 2, &error);
    assert_null(f);
    assert_non_null(strstr(error, "fewer"));

    error = NULL;
    f = mx_ldap_filter_expand("(|(mail=%s)(cn=%s))", vals, 1, &error);
    assert_null(f);
    assert_non_null(strstr(error, "more"));

    static const char *const bad[] = { "(mail=%)", "(mail=%", "(mail=%x)", "(a=%1s)" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        error = NULL;
        f = mx_ldap_filter_expand(bad[i], vals, 1, &error);
        if (f != NULL)
            fail_msg("template '%s' accepted as '%s'", bad[i], f);
        assert_non_null(error);
    }

    error = NULL;
    assert_null(mx_ldap_filter_expand(NULL, vals, 0, &error));
    assert_non_null(error);

    f = mx_ldap_filter_expand("(objectClass=mxAlias)", NULL, 0, &error);
    assert_string_equal(f, "(objectClass=mxAlias)");
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_table),
        cmocka_unit_test(test_escape_null_value),
        cmocka_unit_test(test_escape_random_roundtrip),
        cmocka_unit_test(test_format_basic),
        cmocka_unit_test(test_format_escapes_values_not_template),
        cmocka_unit_test(test_format_percent),
        cmocka_unit_test(test_format_empty_value),
        cmocka_unit_test(test_format_bad_template),
        cmocka_unit_test(test_expand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
