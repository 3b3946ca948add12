/* test_address - RFC 5321 path parsing: a table of valid and invalid paths
 * with every output field, the relay battery, each limit at and one past
 * its boundary, address literals, UTF-8 with and without SMTPUTF8.
 *
 * Every input is copied to the very end of a malloc'd block without a
 * terminating NUL, so an overread is an ASan error, not a silent pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_address.h"

#define N MX_ADDRESS_ALLOW_NULL
#define U MX_ADDRESS_ALLOW_UTF8
#define P MX_ADDRESS_ALLOW_POSTMASTER
#define B MX_ADDRESS_ALLOW_NO_BRACKETS
#define ALL_FLAGS (N | U | P | B)

/* expected boolean outputs */
#define F_NULL   (1u << 0)
#define F_PM     (1u << 1)
#define F_ROUTE  (1u << 2)
#define F_QUOTED (1u << 3)
#define F_LIT    (1u << 4)
#define F_UTF8   (1u << 5)

#define E(name) MX_ADDRESS_ERR_##name
#define OK MX_ADDRESS_OK

struct path_case {
    const char *in;
    size_t len;             /* 0: strlen(in) */
    unsigned flags;
    enum mx_address_error err;
    const char *local;      /* NULL: same as expected addr's local part skipped */
    const char *canon;
    const char *domain;
    const char *addr;
    unsigned bits;
    enum mx_address_route route;
};

/* parse_exact - parse a copy placed flush against the end of its block. */
static int parse_exact(const char *in, size_t len, unsigned flags,
                       struct mx_address *a, const char **err)
{
    char *buf = malloc(len > 0 ? len : 1);
    assert_non_null(buf);
    char *at = buf + (len > 0 ? 0 : 1);
    memcpy(at, in, len);
    int ret = mx_address_parse_path(at, len, flags, a, err);
    free(buf);
    return ret;
}

static unsigned bits_of(const struct mx_address *a)
{
    return (a->is_null ? F_NULL : 0) | (a->is_postmaster ? F_PM : 0) |
           (a->had_source_route ? F_ROUTE : 0) | (a->local_quoted ? F_QUOTED : 0) |
           (a->domain_literal ? F_LIT : 0) | (a->utf8 ? F_UTF8 : 0);
}

static const struct mx_address zero_address;

static void check_case(const struct path_case *c, unsigned flags)
{
    size_t len = c->len != 0 ? c->len : strlen(c->in);
    struct mx_address a;
    const char *err = NULL;
    int ret = parse_exact(c->in, len, flags, &a, &err);
    if (c->err != OK) {
        if (ret != -1 || a.error != c->err)
            fail_msg("'%s' flags=%#x: expected error %s, got ret=%d error=%s",
                     c->in, flags, mx_address_error_text(c->err), ret,
                     mx_address_error_text(a.error));
        assert_string_equal(err, mx_address_error_text(c->err));
        /* nothing half-filled is left behind */
        a.error = OK;
        assert_memory_equal(&a, &zero_address, sizeof(a));
        return;
    }
    if (ret != 0)
        fail_msg("'%s' flags=%#x: expected success, got %s", c->in, flags, err);
    assert_int_equal(a.error, OK);
    assert_string_equal(a.local, c->local);
    assert_string_equal(a.local_canon, c->canon != NULL ? c->canon : c->local);
    assert_string_equal(a.domain, c->domain);
    assert_string_equal(a.addr, c->addr);
    if (bits_of(&a) != c->bits)
        fail_msg("'%s': flags %#x, expected %#x", c->in, bits_of(&a), c->bits);
    assert_int_equal(mx_address_classify(&a), c->route);
}

static const struct path_case cases[] = {
    /* ---- plain, case, normalisation ---- */
    { "<user@example.test>", 0, 0, OK, "user", NULL, "example.test", "user@example.test", 0, 0 },
    { "<User.Name@EXAMPLE.Test>", 0, 0, OK, "User.Name", NULL, "example.test",
      "User.Name@example.test", 0, 0 },
    { "<user@EXAMPLE.TEST>", 0, 0, OK, "user", NULL, "example.test", "user@example.test", 0, 0 },
    { "<a@b>", 0, 0, OK, "a", NULL, "b", "a@b", 0, 0 },
    { "<u@localhost>", 0, 0, OK, "u", NULL, "localhost", "u@localhost", 0, 0 },
    { "<u@a-b.test>", 0, 0, OK, "u", NULL, "a-b.test", "u@a-b.test", 0, 0 },
    { "<u@a--b.test>", 0, 0, OK, "u", NULL, "a--b.test", "u@a--b.test", 0, 0 },
    { "<u@xn--bcher-kva.test>", 0, 0, OK, "u", NULL, "xn--bcher-kva.test",
      "u@xn--bcher-kva.test", 0, 0 },
    { "<u@1.2.3.4>", 0, 0, OK, "u", NULL, "1.2.3.4", "u@1.2.3.4", 0, 0 },
    { "<u@0example.test>", 0, 0, OK, "u", NULL, "0example.test", "u@0example.test", 0, 0 },
    { "<first.middle.last@example.test>", 0, 0, OK, "first.middle.last", NULL,
      "example.test", "first.middle.last@example.test", 0, 0 },
    { "<user+tag@example.test>", 0, 0, OK, "user+tag", NULL, "example.test",
      "user+tag@example.test", 0, 0 },
    /* every atext special; '%' and '!' make it a relay hack (percent first) */
    { "<!#$%&'*+-/=?^_`{|}~@example.test>", 0, 0, OK, "!#$%&'*+-/=?^_`{|}~", NULL,
      "example.test", "!#$%&'*+-/=?^_`{|}~@example.test", 0, MX_ADDRESS_PERCENT_HACK },
    /* sub-slice: only len octets count */
    { "<a@b.test>TRAILING", 10, 0, OK, "a", NULL, "b.test", "a@b.test", 0, 0 },

    /* ---- null path ---- */
    { "<>", 0, N, OK, "", NULL, "", "", F_NULL, 0 },
    { "<>", 0, 0, E(NULL_PATH), 0, 0, 0, 0, 0, 0 },
    { "<>", 0, U | P | B, E(NULL_PATH), 0, 0, 0, 0, 0, 0 },
    { "<> ", 0, N, E(TRAILING), 0, 0, 0, 0, 0, 0 },
    { "<>x", 0, N, E(TRAILING), 0, 0, 0, 0, 0, 0 },
    { "<>>", 0, N, E(TRAILING), 0, 0, 0, 0, 0, 0 },
    { "< >", 0, N, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "", 0, N, E(EMPTY), 0, 0, 0, 0, 0, 0 },
    { "", 0, ALL_FLAGS, E(EMPTY), 0, 0, 0, 0, 0, 0 },

    /* ---- postmaster ---- */
    { "<Postmaster>", 0, P, OK, "Postmaster", NULL, "", "Postmaster", F_PM, 0 },
    { "<POSTMASTER>", 0, P, OK, "POSTMASTER", NULL, "", "POSTMASTER", F_PM, 0 },
    { "<postmaster>", 0, P, OK, "postmaster", NULL, "", "postmaster", F_PM, 0 },
    { "<postmaster>", 0, N | U | B, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<\"postmaster\">", 0, P, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<@a.test:postmaster>", 0, P, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<postmastery>", 0, P, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<postmaste>", 0, P, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<postmaster@example.test>", 0, P, OK, "postmaster", NULL, "example.test",
      "postmaster@example.test", 0, 0 },
    { "postmaster", 0, P | B, OK, "postmaster", NULL, "", "postmaster", F_PM, 0 },
    { "postmaster", 0, P, E(BRACKETS), 0, 0, 0, 0, 0, 0 },

    /* ---- the relay battery (inbound-context.md) ---- */
    { "<user%other.test@example.test>", 0, 0, OK, "user%other.test", NULL, "example.test",
      "user%other.test@example.test", 0, MX_ADDRESS_PERCENT_HACK },
    { "<other.test!user@example.test>", 0, 0, OK, "other.test!user", NULL, "example.test",
      "other.test!user@example.test", 0, MX_ADDRESS_BANG_PATH },
    { "<\"user@other.test\"@example.test>", 0, 0, OK, "user@other.test",
      "\"user@other.test\"", "example.test", "\"user@other.test\"@example.test",
      F_QUOTED, MX_ADDRESS_QUOTED_AT },
    { "<@example.test:user@other.test>", 0, 0, OK, "user", NULL, "other.test",
      "user@other.test", F_ROUTE, MX_ADDRESS_SOURCE_ROUTED },
    { "<@other.test:user@example.test>", 0, 0, OK, "user", NULL, "example.test",
      "user@example.test", F_ROUTE, MX_ADDRESS_SOURCE_ROUTED },
    { "<@a.test,@b.test:user@example.test>", 0, 0, OK, "user", NULL, "example.test",
      "user@example.test", F_ROUTE, MX_ADDRESS_SOURCE_ROUTED },
    { "<user@other.test@example.test>", 0, 0, E(TWO_AT), 0, 0, 0, 0, 0, 0 },
    { "<user@other.test@example.test>", 0, ALL_FLAGS, E(TWO_AT), 0, 0, 0, 0, 0, 0 },
    { "<user@@example.test>", 0, 0, E(TWO_AT), 0, 0, 0, 0, 0, 0 },
    { "<user@[127.0.0.1]>", 0, 0, OK, "user", NULL, "[127.0.0.1]", "user@[127.0.0.1]",
      F_LIT, 0 },
    { "<user@example.test.>", 0, 0, E(TRAILING_DOT), 0, 0, 0, 0, 0, 0 },
    { "<user@EXAMPLE.TEST>", 0, 0, OK, "user", NULL, "example.test", "user@example.test", 0, 0 },
    /* variants of the battery */
    { "<\"user%other.test\"@example.test>", 0, 0, OK, "user%other.test", NULL,
      "example.test", "user%other.test@example.test", F_QUOTED, MX_ADDRESS_PERCENT_HACK },
    { "<\"other!user\"@example.test>", 0, 0, OK, "other!user", NULL, "example.test",
      "other!user@example.test", F_QUOTED, MX_ADDRESS_BANG_PATH },
    { "<\"user\"@example.test>", 0, 0, OK, "user", NULL, "example.test", "user@example.test",
      F_QUOTED, 0 },
    { "<user%other.test>", 0, P, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<@example.test:user%other@example.test>", 0, 0, OK, "user%other", NULL,
      "example.test", "user%other@example.test", F_ROUTE, MX_ADDRESS_SOURCE_ROUTED },
    { "<user@[IPv6:::1]>", 0, 0, OK, "user", NULL, "[IPv6:::1]", "user@[IPv6:::1]", F_LIT, 0 },

    /* ---- LDAP filter metacharacters: legal atext stays verbatim ---- */
    { "<a*b@example.test>", 0, 0, OK, "a*b", NULL, "example.test", "a*b@example.test", 0, 0 },
    { "<*@example.test>", 0, 0, OK, "*", NULL, "example.test", "*@example.test", 0, 0 },
    { "<a(b@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<a)b@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<a\\2ab@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<\"a*(b)\\\\\"@example.test>", 0, 0, OK, "a*(b)\\", "\"a*(b)\\\\\"", "example.test",
      "\"a*(b)\\\\\"@example.test", F_QUOTED, 0 },
    { "<\"*)(uid=*\"@example.test>", 0, 0, OK, "*)(uid=*", "\"*)(uid=*\"", "example.test",
      "\"*)(uid=*\"@example.test", F_QUOTED, 0 },

    /* ---- quoted local parts ---- */
    { "<\"a b\"@example.test>", 0, 0, OK, "a b", "\"a b\"", "example.test",
      "\"a b\"@example.test", F_QUOTED, 0 },
    { "<\"a\\\"b\"@example.test>", 0, 0, OK, "a\"b", "\"a\\\"b\"", "example.test",
      "\"a\\\"b\"@example.test", F_QUOTED, 0 },
    { "<\"a\\bc\"@example.test>", 0, 0, OK, "abc", "abc", "example.test",
      "abc@example.test", F_QUOTED, 0 },
    { "<\"a>b\"@example.test>", 0, 0, OK, "a>b", "\"a>b\"", "example.test",
      "\"a>b\"@example.test", F_QUOTED, 0 },
    { "<\"a.b\"@example.test>", 0, 0, OK, "a.b", "a.b", "example.test", "a.b@example.test",
      F_QUOTED, 0 },
    { "<\".a\"@example.test>", 0, 0, OK, ".a", "\".a\"", "example.test",
      "\".a\"@example.test", F_QUOTED, 0 },
    { "<\"a..b\"@example.test>", 0, 0, OK, "a..b", "\"a..b\"", "example.test",
      "\"a..b\"@example.test", F_QUOTED, 0 },
    { "<\"\\\\\"@example.test>", 0, 0, OK, "\\", "\"\\\\\"", "example.test",
      "\"\\\\\"@example.test", F_QUOTED, 0 },
    { "<\" \"@example.test>", 0, 0, OK, " ", "\" \"", "example.test", "\" \"@example.test",
      F_QUOTED, 0 },
    { "<\"\"@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<\"abc@example.test>", 0, 0, E(QUOTE), 0, 0, 0, 0, 0, 0 },
    { "<\"abc\\\">", 0, 0, E(QUOTE), 0, 0, 0, 0, 0, 0 },
    { "<\"abc\\", 0, 0, E(QUOTE), 0, 0, 0, 0, 0, 0 },
    { "<\"a\"b@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<a\"b\"@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<\"a\".\"b\"@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },

    /* ---- dot-string syntax ---- */
    { "<.user@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<user.@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<us..er@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<user name@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "< user@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<user,x@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<user;x@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<user:x@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<us[er@example.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<<user@example.test>>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<user>", 0, 0, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "<user>", 0, ALL_FLAGS, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },

    /* ---- brackets and trailing text ---- */
    { "user@example.test", 0, 0, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "user@example.test", 0, B, OK, "user", NULL, "example.test", "user@example.test", 0, 0 },
    { "user@example.test>", 0, B, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test", 0, 0, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test", 0, B, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test>>", 0, 0, E(TRAILING), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test> SIZE=10", 0, 0, E(TRAILING), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test >", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "user@example.test ", 0, B, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { ">", 0, 0, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "@a.test:user@example.test", 0, B, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "user", 0, B, E(NO_DOMAIN), 0, 0, 0, 0, 0, 0 },
    { "u@[127.0.0.1]@example.test", 0, B, E(TWO_AT), 0, 0, 0, 0, 0, 0 },
    { "u@[127.0.0.1]>", 0, B, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "u@[127.0.0.1]", 0, B, OK, "u", NULL, "[127.0.0.1]", "u@[127.0.0.1]", F_LIT, 0 },
    { "\"a b\"@example.test", 0, B, OK, "a b", "\"a b\"", "example.test",
      "\"a b\"@example.test", F_QUOTED, 0 },

    /* ---- control characters anywhere ---- */
    { "<us\0er@example.test>", 20, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test\0>", 20, ALL_FLAGS, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test>\0", 20, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<user@exa\rmple.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<user@example.test\r\n>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<us\ner@example.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<us\ter@example.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<us\x7f" "er@example.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<\"a\rb\"@example.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<\"a\\\nb\"@example.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<\x1b" "a@example.test>", 0, 0, E(CONTROL), 0, 0, 0, 0, 0, 0 },

    /* ---- domains ---- */
    { "<u@>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@-a.test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a-.test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a.test->", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a..test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@.a.test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@.>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a.>", 0, 0, E(TRAILING_DOT), 0, 0, 0, 0, 0, 0 },
    { "<u@a..>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a_b.test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a b.test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a.test x>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a.test(comment)>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a*.test>", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@a.test\">", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<u@\"a.test\">", 0, 0, E(DOMAIN_SYNTAX), 0, 0, 0, 0, 0, 0 },

    /* ---- address literals ---- */
    { "<u@[192.0.2.1]>", 0, 0, OK, "u", NULL, "[192.0.2.1]", "u@[192.0.2.1]", F_LIT, 0 },
    { "<u@[0.0.0.0]>", 0, 0, OK, "u", NULL, "[0.0.0.0]", "u@[0.0.0.0]", F_LIT, 0 },
    { "<u@[255.255.255.255]>", 0, 0, OK, "u", NULL, "[255.255.255.255]",
      "u@[255.255.255.255]", F_LIT, 0 },
    { "<u@[256.0.0.1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[1.2.3]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[1.2.3.4.5]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[010.0.0.1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[0x7f.0.0.1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[2130706433]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[ 127.0.0.1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[127.0.0.1>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[127.0.0.1]]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[127.0.0.1]x>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[127.0.0.1]@example.test>", 0, 0, E(TWO_AT), 0, 0, 0, 0, 0, 0 },
    { "<u@[127.0.0.1]", 0, 0, E(BRACKETS), 0, 0, 0, 0, 0, 0 },
    { "<u@[[127.0.0.1]]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[127.0.0.1\\]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[x-tag:content]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:2001:db8::1]>", 0, 0, OK, "u", NULL, "[IPv6:2001:db8::1]",
      "u@[IPv6:2001:db8::1]", F_LIT, 0 },
    { "<u@[ipv6:2001:DB8:0:0:0:0:0:1]>", 0, 0, OK, "u", NULL, "[IPv6:2001:db8::1]",
      "u@[IPv6:2001:db8::1]", F_LIT, 0 },
    { "<u@[IPV6:::]>", 0, 0, OK, "u", NULL, "[IPv6:::]", "u@[IPv6:::]", F_LIT, 0 },
    { "<u@[IPv6:::ffff:192.0.2.1]>", 0, 0, OK, "u", NULL, "[IPv6:::ffff:192.0.2.1]",
      "u@[IPv6:::ffff:192.0.2.1]", F_LIT, 0 },
    { "<u@[IPv6:1:2:3:4:5:6:7:8]>", 0, 0, OK, "u", NULL, "[IPv6:1:2:3:4:5:6:7:8]",
      "u@[IPv6:1:2:3:4:5:6:7:8]", F_LIT, 0 },
    { "<u@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:1.2.3.4]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[2001:db8::1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:fe80::1%eth0]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:2001:db8::1::2]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:12345::1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:gggg::1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6::1]>", 0, 0, E(LITERAL), 0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:0000:0000:0000:0000:0000:0000:0000:0001:1]>", 0, 0, E(LITERAL),
      0, 0, 0, 0, 0, 0 },
    { "<u@[IPv6:0000:0000:0000:0000:0000:0000:0000:0001]>", 0, 0, OK, "u", NULL,
      "[IPv6:::1]", "u@[IPv6:::1]", F_LIT, 0 },
    { "<u@[1.2.3.\xc3\xa9]>", 0, U, E(LITERAL), 0, 0, 0, 0, 0, 0 },

    /* ---- source routes ---- */
    { "<@a.test:u@b.test>", 0, 0, OK, "u", NULL, "b.test", "u@b.test", F_ROUTE,
      MX_ADDRESS_SOURCE_ROUTED },
    { "<@:u@b.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test u@b.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test,b.test:u@c.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test,:u@c.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test.:u@c.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@[192.0.2.1]:u@c.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test;@b.test:u@c.test>", 0, 0, E(ROUTE), 0, 0, 0, 0, 0, 0 },
    { "<@a.test:>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<@a.test:@b.test:u@c.test>", 0, 0, E(LOCAL_SYNTAX), 0, 0, 0, 0, 0, 0 },
    { "<@a.test:u@b.test", 0, 0, E(BRACKETS), 0, 0, 0, 0, 0, 0 },

    /* ---- UTF-8 (RFC 6531) ---- */
    { "<pel\xc3\xa9@example.test>", 0, 0, E(NEED_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<pel\xc3\xa9@example.test>", 0, N | P | B, E(NEED_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<pel\xc3\xa9@example.test>", 0, U, OK, "pel\xc3\xa9", NULL, "example.test",
      "pel\xc3\xa9@example.test", F_UTF8, 0 },
    { "<user@b\xc3\xbc" "cher.test>", 0, 0, E(NEED_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<user@B\xc3\x9c" "CHER.Test>", 0, U, OK, "user", NULL, "b\xc3\x9c" "cher.test",
      "user@b\xc3\x9c" "cher.test", F_UTF8, 0 },
    { "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.test>", 0, U, OK,
      "\xe7\x94\xa8\xe6\x88\xb7", NULL, "\xe4\xbe\x8b\xe5\xad\x90.test",
      "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.test", F_UTF8, 0 },
    { "<\xf0\x9f\x98\x80@example.test>", 0, U, OK, "\xf0\x9f\x98\x80", NULL, "example.test",
      "\xf0\x9f\x98\x80@example.test", F_UTF8, 0 },
    { "<\xf4\x8f\xbf\xbf@example.test>", 0, U, OK, "\xf4\x8f\xbf\xbf", NULL, "example.test",
      "\xf4\x8f\xbf\xbf@example.test", F_UTF8, 0 },
    { "<\"p\xc3\xa9 l\xc3\xa9\"@example.test>", 0, U, OK, "p\xc3\xa9 l\xc3\xa9",
      "\"p\xc3\xa9 l\xc3\xa9\"", "example.test", "\"p\xc3\xa9 l\xc3\xa9\"@example.test",
      F_QUOTED | F_UTF8, 0 },
    { "<\"\\\xc3\xa9\"@example.test>", 0, U, E(QUOTE), 0, 0, 0, 0, 0, 0 },
    /* a UTF-8 route is dropped and does not make the address UTF-8 */
    { "<@b\xc3\xbc.test:user@example.test>", 0, U, OK, "user", NULL, "example.test",
      "user@example.test", F_ROUTE, MX_ADDRESS_SOURCE_ROUTED },
    { "<@b\xc3\xbc.test:user@example.test>", 0, 0, E(NEED_UTF8), 0, 0, 0, 0, 0, 0 },
    /* invalid UTF-8 with the flag; NEED_UTF8 without it */
    { "<\xc0\xaf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xc0\xaf@example.test>", 0, 0, E(NEED_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xc1\xbf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xe0\x80\xaf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xe0\x9f\xbf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xf0\x80\x80\xaf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xf0\x8f\xbf\xbf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xed\xa0\x80@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xed\xbf\xbf@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xf4\x90\x80\x80@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xf5\x80\x80\x80@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\xff@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<\x80@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<a\xc3@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<a@example.test\xe2\x82>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<a@example.test>\xe2\x82", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    { "<a\xe2\x28\xa1@example.test>", 0, U, E(BAD_UTF8), 0, 0, 0, 0, 0, 0 },
    /* C1 controls: valid UTF-8 but controls */
    { "<a\xc2\x85@example.test>", 0, U, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<a\xc2\x80@example.test>", 0, U, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<a\xc2\x9f@example.test>", 0, U, E(CONTROL), 0, 0, 0, 0, 0, 0 },
    { "<a\xc2\xa0@example.test>", 0, U, OK, "a\xc2\xa0", NULL, "example.test",
      "a\xc2\xa0@example.test", F_UTF8, 0 },
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], cases[i].flags);
}

/* Allowing more can never refuse what was accepted, nor change the result
 * (the flags only open doors). */
static void test_flags_only_widen(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].err != OK)
            continue;
        for (unsigned extra = 0; extra <= ALL_FLAGS; extra++)
            check_case(&cases[i], cases[i].flags | extra);
    }
}

/* ---- limits, at and one past each boundary ---------------------------- */

static char *repeat(char *dst, char c, size_t n)
{
    memset(dst, c, n);
    return dst + n;
}

static int parse_str(const char *s, unsigned flags, struct mx_address *a)
{
    return parse_exact(s, strlen(s), flags, a, NULL);
}

static void test_local_limit(void **state)
{
    (void)state;
    char buf[512], *p;
    struct mx_address a;

    p = buf;
    *p++ = '<';
    p = repeat(p, 'a', 64);
    strcpy(p, "@example.test>");
    assert_int_equal(parse_str(buf, 0, &a), 0);
    assert_int_equal(strlen(a.local), 64);

    p = buf;
    *p++ = '<';
    p = repeat(p, 'a', 65);
    strcpy(p, "@example.test>");
    assert_int_equal(parse_str(buf, ALL_FLAGS, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_LOCAL_TOO_LONG);

    /* quoted: the 64 octets include both quotes */
    p = buf;
    *p++ = '<';
    *p++ = '"';
    p = repeat(p, 'b', 61);
    *p++ = ' ';
    *p++ = '"';
    strcpy(p, "@example.test>");
    assert_int_equal(parse_str(buf, 0, &a), 0);
    assert_int_equal(strlen(a.local), 62);
    assert_true(a.local_quoted);
    assert_int_equal(strlen(a.local_canon), 64);

    p = buf;
    *p++ = '<';
    *p++ = '"';
    p = repeat(p, 'b', 63);
    *p++ = '"';
    strcpy(p, "@example.test>");
    assert_int_equal(parse_str(buf, 0, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_LOCAL_TOO_LONG);

    /* quoted-pairs count as sent: 1 + 60 + 2 + 1 = 64, then 65 */
    p = buf;
    *p++ = '<';
    *p++ = '"';
    p = repeat(p, 'c', 60);
    strcpy(p, "\\\"\"@example.test>");
    assert_int_equal(parse_str(buf, 0, &a), 0);
    assert_int_equal(strlen(a.local), 61);
    assert_string_equal(a.local + 60, "\"");
    assert_int_equal(strlen(a.local_canon), 64);
    p = buf;
    *p++ = '<';
    *p++ = '"';
    p = repeat(p, 'c', 61);
    strcpy(p, "\\\"\"@example.test>");
    assert_int_equal(parse_str(buf, 0, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_LOCAL_TOO_LONG);

    /* UTF-8: the limit stays in octets (32 x U+00E9 = 64 octets) */
    p = buf;
    *p++ = '<';
    for (int i = 0; i < 32; i++) {
        *p++ = '\xc3';
        *p++ = '\xa9';
    }
    strcpy(p, "@example.test>");
    assert_int_equal(parse_str(buf, U, &a), 0);
    assert_int_equal(strlen(a.local), 64);
    assert_true(a.utf8);
    p[0] = 'x';
    strcpy(p + 1, "@example.test>");
    assert_int_equal(parse_str(buf, U, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_LOCAL_TOO_LONG);
}

/* labels: build "<u@" + label + ".test>" */
static void test_label_limit(void **state)
{
    (void)state;
    char buf[512], *p;
    struct mx_address a;
    for (size_t n = 62; n <= 64; n++) {
        p = buf;
        p = stpcpy(p, "<u@");
        p = repeat(p, 'l', n);
        strcpy(p, ".test>");
        int ret = parse_str(buf, 0, &a);
        if (n <= 63) {
            assert_int_equal(ret, 0);
            assert_int_equal(strlen(a.domain), n + 5);
        } else {
            assert_int_equal(ret, -1);
            assert_int_equal(a.error, MX_ADDRESS_ERR_LABEL_TOO_LONG);
        }
    }
    /* a single-label domain and the last label are held to it too */
    p = stpcpy(buf, "<u@a.");
    p = repeat(p, 'z', 64);
    strcpy(p, ">");
    assert_int_equal(parse_str(buf, 0, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_LABEL_TOO_LONG);
    const char *err = NULL;
    char label[64];
    memset(label, 'q', 63);
    assert_int_equal(mx_address_check_domain(label, 63, false, &err), 0);
    char label64[64 + 1];
    memset(label64, 'q', 64);
    assert_int_equal(mx_address_check_domain(label64, 64, false, &err), -1);
    assert_string_equal(err, mx_address_error_text(MX_ADDRESS_ERR_LABEL_TOO_LONG));
}

/* make_domain - n octets of labels of <= 63 octets separated by dots. */
static char *make_domain(char *dst, size_t n)
{
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        bool dot = label == 62 && i + 1 < n; /* the last label may reach 63 */
        dst[i] = dot ? '.' : 'd';
        label = dot ? 0 : label + 1;
    }
    return dst + n;
}

static void test_domain_limit(void **state)
{
    (void)state;
    char buf[1024], *p;
    const char *err;
    struct mx_address a;

    /* the domain alone: 255 ok, 256 too long */
    make_domain(buf, 255);
    assert_int_equal(mx_address_check_domain(buf, 255, false, &err), 0);
    make_domain(buf, 256);
    err = NULL;
    assert_int_equal(mx_address_check_domain(buf, 256, true, &err), -1);
    assert_string_equal(err, mx_address_error_text(MX_ADDRESS_ERR_DOMAIN_TOO_LONG));

    /* in a path a 255-octet domain passes the domain limit but not the
     * 256-octet path limit; 256 octets hits the domain limit first */
    p = stpcpy(buf, "<u@");
    p = make_domain(p, 255);
    strcpy(p, ">");
    assert_int_equal(parse_str(buf, ALL_FLAGS, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_PATH_TOO_LONG);
    p = stpcpy(buf, "<u@");
    p = make_domain(p, 256);
    strcpy(p, ">");
    assert_int_equal(parse_str(buf, ALL_FLAGS, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_DOMAIN_TOO_LONG);
    /* a very long domain is refused as too long, not scanned for ever */
    p = stpcpy(buf, "<u@");
    p = make_domain(p, 900);
    strcpy(p, ">");
    assert_int_equal(parse_str(buf, 0, &a), -1);
    assert_int_equal(a.error, MX_ADDRESS_ERR_DOMAIN_TOO_LONG);

    /* check_domain shares the path rules */
    assert_int_equal(mx_address_check_domain("example.test", 12, false, NULL), 0);
    assert_int_equal(mx_address_check_domain("example.test.", 13, false, &err), -1);
    assert_string_equal(err, mx_address_error_text(MX_ADDRESS_ERR_TRAILING_DOT));
    assert_int_equal(mx_address_check_domain("", 0, false, NULL), -1);
    assert_int_equal(mx_address_check_domain("a\0b", 3, false, &err), -1);
    assert_string_equal(err, mx_address_error_text(MX_ADDRESS_ERR_CONTROL));
    assert_int_equal(mx_address_check_domain("[1.2.3.4]", 9, false, NULL), -1);
    assert_int_equal(mx_address_check_domain("b\xc3\xbc.test", 8, false, &err), -1);
    assert_string_equal(err, mx_address_error_text(MX_ADDRESS_ERR_NEED_UTF8));
    assert_int_equal(mx_address_check_domain("b\xc3\xbc.test", 8, true, NULL), 0);
    assert_int_equal(mx_address_check_domain("b\xc3.test", 7, true, &err), -1);
    assert_string_equal(err, mx_address_error_text(MX_ADDRESS_ERR_BAD_UTF8));
}

static void test_path_limit(void **state)
{
    (void)state;
    char buf[1024], *p;
    struct mx_address a;

    /* 1 + 64 + 1 + 189 + 1 = 256 */
    for (size_t dlen = 189; dlen <= 190; dlen++) {
        p = buf;
        *p++ = '<';
        p = repeat(p, 'a', 64);
        *p++ = '@';
        p = make_domain(p, dlen);
        strcpy(p, ">");
        assert_int_equal(strlen(buf), 256 + (dlen - 189));
        int ret = parse_str(buf, 0, &a);
        if (dlen == 189) {
            assert_int_equal(ret, 0);
            assert_int_equal(strlen(a.addr), 254);
        } else {
            assert_int_equal(ret, -1);
            assert_int_equal(a.error, MX_ADDRESS_ERR_PATH_TOO_LONG);
        }
        /* without brackets the same mailbox is judged as if bracketed */
        assert_int_equal(parse_exact(buf + 1, strlen(buf) - 2, B, &a, NULL), ret);
    }

    /* a source route counts toward the path: "<@" + 60 + ":" + ... */
    for (size_t extra = 0; extra <= 1; extra++) {
        p = stpcpy(buf, "<@");
        p = make_domain(p, 60);
        *p++ = ':';
        p = repeat(p, 'a', 64);
        *p++ = '@';
        p = make_domain(p, 127 + extra); /* 2 + 60 + 1 + 64 + 1 + 127 + 1 */
        strcpy(p, ">");
        size_t total = strlen(buf);
        int ret = parse_str(buf, 0, &a);
        if (total <= 256) {
            assert_int_equal(ret, 0);
            assert_true(a.had_source_route);
        } else {
            assert_int_equal(ret, -1);
            assert_int_equal(a.error, MX_ADDRESS_ERR_PATH_TOO_LONG);
        }
        assert_int_equal(total, 256 + extra);
    }
}

/* ---- helpers ----------------------------------------------------------- */

static void test_domain_equal(void **state)
{
    (void)state;
    assert_true(mx_address_domain_equal("example.test", "EXAMPLE.TEST"));
    assert_true(mx_address_domain_equal("Example.Test", "example.test"));
    assert_true(mx_address_domain_equal("", ""));
    assert_true(mx_address_domain_equal("[IPv6:::1]", "[ipv6:::1]"));
    assert_false(mx_address_domain_equal("example.test", "example.tes"));
    assert_false(mx_address_domain_equal("example.tes", "example.test"));
    assert_false(mx_address_domain_equal("example.test", "example.test."));
    assert_false(mx_address_domain_equal("example.test", ""));
    /* no folding beyond ASCII: U+00DC vs U+00FC differ */
    assert_false(mx_address_domain_equal("b\xc3\x9c", "b\xc3\xbc"));
    assert_true(mx_address_domain_equal("b\xc3\xbc", "B\xc3\xbc"));
    /* '@' (0x40) and '`' (0x60) are not letters and must not fold */
    assert_false(mx_address_domain_equal("a@", "a`"));
    assert_false(mx_address_domain_equal("[", "{"));
}

static void test_error_texts(void **state)
{
    (void)state;
    for (int i = 1; i < MX_ADDRESS_ERR_COUNT_; i++) {
        const char *t = mx_address_error_text((enum mx_address_error)i);
        assert_non_null(t);
        assert_true(strlen(t) > 0);
        for (int j = 1; j < i; j++)
            assert_string_not_equal(t, mx_address_error_text((enum mx_address_error)j));
    }
    assert_string_equal(mx_address_error_text(MX_ADDRESS_ERR_COUNT_), "unknown address error");
    assert_string_equal(mx_address_route_name(MX_ADDRESS_PLAIN), "plain");
    assert_string_equal(mx_address_route_name(MX_ADDRESS_BANG_PATH), "bang-path");
}

static void test_utf8_valid(void **state)
{
    (void)state;
    static const struct { const char *s; bool ok; } v[] = {
        { "", true }, { "abc", true }, { "\xc3\xa9", true }, { "\xe2\x82\xac", true },
        { "\xf0\x9f\x98\x80", true }, { "\xef\xbb\xbf", true }, { "\xc2\x85", true },
        { "\xc3", false }, { "\xe2\x82", false }, { "\xf0\x9f\x98", false },
        { "\xc0\x80", false }, { "\xc1\xbf", false }, { "\xe0\x80\x80", false },
        { "\xed\xa0\x80", false }, { "\xed\x9f\xbf", true }, { "\xee\x80\x80", true },
        { "\xf4\x8f\xbf\xbf", true }, { "\xf4\x90\x80\x80", false },
        { "\xf8\x88\x80\x80\x80", false }, { "\xbf", false }, { "\xc3\x28", false },
        { "a\xc3\xa9\xc3", false },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t len = strlen(v[i].s);
        char *buf = malloc(len + 1);
        memcpy(buf, v[i].s, len);
        if (mx_address_utf8_valid(buf, len) != v[i].ok)
            fail_msg("utf8 case %zu", i);
        free(buf);
    }
}

/* Parsing the canonical form again gives the same address. */
static void test_canonical_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct path_case *c = &cases[i];
        if (c->err != OK)
            continue;
        struct mx_address a, b;
        size_t len = c->len != 0 ? c->len : strlen(c->in);
        assert_int_equal(parse_exact(c->in, len, c->flags, &a, NULL), 0);
        char path[600];
        snprintf(path, sizeof(path), "<%s>", a.addr);
        assert_int_equal(parse_str(path, c->flags | N | P, &b), 0);
        assert_string_equal(a.addr, b.addr);
        assert_string_equal(a.local, b.local);
        assert_string_equal(a.local_canon, b.local_canon);
        assert_string_equal(a.domain, b.domain);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_flags_only_widen),
        cmocka_unit_test(test_local_limit),
        cmocka_unit_test(test_label_limit),
        cmocka_unit_test(test_domain_limit),
        cmocka_unit_test(test_path_limit),
        cmocka_unit_test(test_domain_equal),
        cmocka_unit_test(test_error_texts),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_canonical_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
