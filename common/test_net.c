/* test_net - "ip:port" parsing, CIDR lists (IPv4-mapped IPv6 included),
 * numeric address text and the monotonic clock. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "mx_net.h"

static void test_hostport_ipv4(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    assert_int_equal(mx_net_parse_hostport("192.0.2.7:2525", &ss, &len), 0);
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&ss;
    assert_int_equal(in4->sin_family, AF_INET);
    assert_int_equal(len, sizeof *in4);
    assert_int_equal(ntohs(in4->sin_port), 2525);
    char text[INET6_ADDRSTRLEN];
    assert_string_equal(mx_net_addr_text((const struct sockaddr *)&ss, text, sizeof text), "192.0.2.7");

    /* "*" and an empty host mean every IPv4 address. */
    assert_int_equal(mx_net_parse_hostport("*:25", &ss, &len), 0);
    assert_int_equal(in4->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(ntohs(in4->sin_port), 25);
    assert_int_equal(mx_net_parse_hostport(":143", &ss, &len), 0);
    assert_int_equal(ntohs(in4->sin_port), 143);
    assert_int_equal(mx_net_parse_hostport("0.0.0.0:0", &ss, &len), 0);
    assert_int_equal(mx_net_parse_hostport("1.2.3.4:65535", &ss, &len), 0);
    assert_int_equal(ntohs(in4->sin_port), 65535);
}

static void test_hostport_ipv6(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    assert_int_equal(mx_net_parse_hostport("[::1]:993", &ss, &len), 0);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(in6->sin6_family, AF_INET6);
    assert_int_equal(len, sizeof *in6);
    assert_int_equal(ntohs(in6->sin6_port), 993);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
    assert_int_equal(mx_net_parse_hostport("[2001:db8::25]:25", &ss, &len), 0);
    char text[INET6_ADDRSTRLEN];
    assert_string_equal(mx_net_addr_text((const struct sockaddr *)&ss, text, sizeof text),
                        "2001:db8::25");
}

static void test_hostport_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:+25", "1.2.3.4: 25",
        "1.2.3.4:25x", "1.2.3.4:999999999999999999999", "::1:25" /* needs brackets */,
        "[::1]25", "[::1:25", "[::1]:", "mail.example.test:25" /* no DNS here */,
        "256.1.1.1:25", "[1.2.3.4]:25x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        if (mx_net_parse_hostport(bad[i], &ss, &len) != -1)
            fail_msg("\"%s\" was accepted", bad[i]);
    }
    /* A host longer than any address must be refused, not overflow. */
    char long_host[600];
    memset(long_host, '1', sizeof long_host - 4);
    memcpy(long_host + sizeof long_host - 4, ":25", 4);
    struct sockaddr_storage ss;
    socklen_t len = 0;
    assert_int_equal(mx_net_parse_hostport(long_host, &ss, &len), -1);
    long_host[0] = '[';
    assert_int_equal(mx_net_parse_hostport(long_host, &ss, &len), -1);
}

static void test_addr_text_edges(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    char text[INET6_ADDRSTRLEN] = "junk";
    assert_string_equal(mx_net_addr_text((const struct sockaddr *)&ss, text, sizeof text), "");
    socklen_t len;
    assert_int_equal(mx_net_parse_hostport("[2001:db8::1]:1", &ss, &len), 0);
    char small[8] = "junk";
    assert_string_equal(mx_net_addr_text((const struct sockaddr *)&ss, small, sizeof small), "");
}

static struct mx_cidr_list *parse_ok(const char *const *items, size_t n)
{
    struct mx_cidr_list *list = NULL;
    char *error = NULL;
    if (mx_cidr_list_parse(items, n, &list, &error) != 0)
        fail_msg("parse failed: %s", error ? error : "(no error)");
    assert_non_null(list);
    return list;
}

static void test_cidr_match(void **state)
{
    (void)state;
    static const char *const items[] = { "127.0.0.0/8", "::1/128", "10.1.2.3", "192.0.2.128/25",
                                         "2001:db8:100::/40", "172.16.0.0/12" };
    struct mx_cidr_list *list = parse_ok(items, sizeof items / sizeof items[0]);
    static const struct { const char *ip; bool match; } rows[] = {
        { "127.0.0.1", true },      { "127.255.255.255", true }, { "128.0.0.1", false },
        { "::1", true },            { "::2", false },            { "10.1.2.3", true },
        { "10.1.2.4", false },      { "192.0.2.128", true },     { "192.0.2.255", true },
        { "192.0.2.127", false },   { "2001:db8:100::1", true }, { "2001:db8:1ff:ffff::1", true },
        { "2001:db8:200::1", false }, { "2001:db8:ff::1", false },  { "172.31.255.1", true },
        { "172.32.0.1", false },    { "172.15.255.255", false },
        /* dual-stack sockets show IPv4 clients like this */
        { "::ffff:127.0.0.1", true }, { "::ffff:10.1.2.3", true }, { "::ffff:10.1.2.4", false },
        /* IPv4-compatible (deprecated) and NAT64 forms are not IPv4 */
        { "::127.0.0.1", false },   { "64:ff9b::7f00:1", false },
        { "not-an-ip", false },     { "", false },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (mx_cidr_list_match_text(list, rows[i].ip) != rows[i].match)
            fail_msg("%s: expected %s", rows[i].ip, rows[i].match ? "match" : "no match");

    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(mx_net_parse_hostport("[::ffff:172.20.0.9]:1", &ss, &len), 0);
    assert_true(mx_cidr_list_match(list, (const struct sockaddr *)&ss));
    assert_int_equal(mx_net_parse_hostport("203.0.113.1:1", &ss, &len), 0);
    assert_false(mx_cidr_list_match(list, (const struct sockaddr *)&ss));
    ss.ss_family = AF_UNIX;
    assert_false(mx_cidr_list_match(list, (const struct sockaddr *)&ss));
    mx_cidr_list_free(&list);
    assert_null(list);
    mx_cidr_list_free(&list); /* NULL is fine */
}

static void test_cidr_mapped_ipv6_entry(void **state)
{
    (void)state;
    /* An operator may write the mapped form: it matches mapped clients. */
    static const char *const items[] = { "::ffff:192.0.2.0/120", "0.0.0.0/0" };
    struct mx_cidr_list *list = parse_ok(items, 1);
    assert_true(mx_cidr_list_match_text(list, "::ffff:192.0.2.77"));
    assert_false(mx_cidr_list_match_text(list, "::ffff:192.0.3.77"));
    mx_cidr_list_free(&list);
    /* /0 matches every IPv4 client, and no IPv6 one. */
    list = parse_ok(items + 1, 1);
    assert_true(mx_cidr_list_match_text(list, "203.0.113.9"));
    assert_true(mx_cidr_list_match_text(list, "::ffff:203.0.113.9"));
    assert_false(mx_cidr_list_match_text(list, "2001:db8::1"));
    mx_cidr_list_free(&list);
}

static void test_cidr_empty(void **state)
{
    (void)state;
    struct mx_cidr_list *list = parse_ok(NULL, 0);
    assert_false(mx_cidr_list_match_text(list, "127.0.0.1"));
    mx_cidr_list_free(&list);
    assert_false(mx_cidr_list_match_text(NULL, "127.0.0.1"));
}

static void test_cidr_invalid(void **state)
{
    (void)state;
    static const struct { const char *item; const char *reason; } rows[] = {
        { "", "not an IPv4 or IPv6" },
        { "10.0.0.0/33", "longer than the address" },
        { "::/129", "longer than the address" },
        { "10.1.2.3/8", "bits set beyond" },
        { "2001:db8::1/32", "bits set beyond" },
        { "10.0.0.0/", "not a number" },
        { "10.0.0.0/8x", "not a number" },
        { "10.0.0.0/-8", "not a number" },
        { "10.0.0.0/0008", "not a number" },
        { "/8", "not an IPv4 or IPv6" },
        { "localhost", "not an IPv4 or IPv6" },
        { "10.0.0", "not an IPv4 or IPv6" },
        { "[::1]/128", "not an IPv4 or IPv6" },
        { "1111:2222:3333:4444:5555:6666:7777:8888:9999/128", "not an IPv4 or IPv6" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        /* The bad item comes after a good one: nothing may leak. */
        const char *items[2] = { "127.0.0.0/8", rows[i].item };
        struct mx_cidr_list *list = NULL;
        char *error = NULL;
        if (mx_cidr_list_parse(items, 2, &list, &error) != -1)
            fail_msg("\"%s\" was accepted", rows[i].item);
        assert_null(list);
        assert_non_null(error);
        if (strstr(error, rows[i].reason) == NULL || strstr(error, rows[i].item) == NULL)
            fail_msg("\"%s\": error \"%s\" lacks \"%s\" or the item", rows[i].item, error,
                     rows[i].reason);
        free(error);
    }
}

static void test_now_ms_monotonic(void **state)
{
    (void)state;
    uint64_t before = mx_now_ms();
    struct timespec pause = { 0, 20 * 1000 * 1000 };
    nanosleep(&pause, NULL);
    uint64_t after = mx_now_ms();
    assert_true(after >= before + 19);
    assert_true(after < before + 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostport_ipv4),
        cmocka_unit_test(test_hostport_ipv6),
        cmocka_unit_test(test_hostport_invalid),
        cmocka_unit_test(test_addr_text_edges),
        cmocka_unit_test(test_cidr_match),
        cmocka_unit_test(test_cidr_mapped_ipv6_entry),
        cmocka_unit_test(test_cidr_empty),
        cmocka_unit_test(test_cidr_invalid),
        cmocka_unit_test(test_now_ms_monotonic),
    };
    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
