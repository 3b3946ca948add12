/* test_proxy_v2 - PROXY v2 header parsing, including every truncation. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_proxy_v2.h"

static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static size_t make_v4(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const char *src, uint16_t sport,
                      size_t tlv_len)
{
    memcpy(buf, sig, 12);
    buf[12] = ver_cmd;
    buf[13] = fam;
    size_t body = 12 + tlv_len;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    inet_pton(AF_INET, src, buf + 16);
    inet_pton(AF_INET, "192.0.2.10", buf + 20);
    uint16_t sp = htons(sport), dp = htons(25);
    memcpy(buf + 24, &sp, 2);
    memcpy(buf + 26, &dp, 2);
    memset(buf + 28, 0x04, tlv_len); /* TLV bytes are skipped, whatever they say */
    return 16 + body;
}

static void test_ipv4_and_truncations(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = make_v4(buf, 0x21, 0x11, "203.0.113.7", 40000, 5);
    struct mx_proxy_v2_result r;
    const char *error = NULL;
    assert_int_equal(mx_proxy_v2_parse(buf, n, &r, &error), (int)n);
    assert_int_equal(r.local, 0);
    struct sockaddr_in *src = (struct sockaddr_in *)&r.source;
    char text[INET_ADDRSTRLEN];
    assert_string_equal(inet_ntop(AF_INET, &src->sin_addr, text, sizeof text), "203.0.113.7");
    assert_int_equal(ntohs(src->sin_port), 40000);
    /* Every proper prefix asks for more; SMTP bytes after it are not eaten. */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mx_proxy_v2_parse(buf, i, &r, &error), 0);
    memcpy(buf + n, "EHLO x\r\n", 8);
    assert_int_equal(mx_proxy_v2_parse(buf, n + 8, &r, &error), (int)n);
}

static void test_ipv6(void **state)
{
    (void)state;
    uint8_t buf[64] = { 0 };
    memcpy(buf, sig, 12);
    buf[12] = 0x21;
    buf[13] = 0x21;
    buf[15] = 36;
    inet_pton(AF_INET6, "2001:db8::7", buf + 16);
    inet_pton(AF_INET6, "2001:db8::1", buf + 32);
    buf[48] = 0x9c;
    buf[49] = 0x40;
    struct mx_proxy_v2_result r;
    const char *error;
    assert_int_equal(mx_proxy_v2_parse(buf, 52, &r, &error), 52);
    char text[INET6_ADDRSTRLEN];
    struct sockaddr_in6 *src = (struct sockaddr_in6 *)&r.source;
    assert_string_equal(inet_ntop(AF_INET6, &src->sin6_addr, text, sizeof text), "2001:db8::7");
    assert_int_equal(ntohs(src->sin6_port), 40000);
}

static void test_local_command(void **state)
{
    (void)state;
    uint8_t buf[16];
    memcpy(buf, sig, 12);
    buf[12] = 0x20;
    buf[13] = 0x00;
    buf[14] = buf[15] = 0;
    struct mx_proxy_v2_result r;
    const char *error;
    assert_int_equal(mx_proxy_v2_parse(buf, 16, &r, &error), 16);
    assert_int_equal(r.local, 1);
}

static void test_invalid_headers(void **state)
{
    (void)state;
    struct mx_proxy_v2_result r;
    const char *error = NULL;
    /* A client that speaks SMTP (or PROXY v1) at once is refused at once. */
    assert_int_equal(mx_proxy_v2_parse((const uint8_t *)"EHLO", 4, &r, &error), -1);
    assert_int_equal(mx_proxy_v2_parse((const uint8_t *)"PROXY TCP4 1.2.3.4 ", 19, &r, &error), -1);
    assert_int_equal(mx_proxy_v2_parse((const uint8_t *)"\r\n\r\nX", 5, &r, &error), -1);

    /* Rows: version/command, family/transport, body length, expected error. */
    static const struct {
        uint8_t ver_cmd, fam;
        uint16_t body;
        const char *error;
    } rows[] = {
        { 0x11, 0x11, 12, "version is not 2" },
        { 0x22, 0x11, 12, "command unknown" },
        { 0x21, 0x12, 12, "transport is not STREAM" },
        { 0x21, 0x31, 12, "family not INET" },
        { 0x21, 0x11, 11, "too short for IPv4" },
        { 0x21, 0x21, 35, "too short for IPv6" },
        { 0x21, 0x11, 2000, "too long" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t buf[2100] = { 0 };
        memcpy(buf, sig, 12);
        buf[12] = rows[i].ver_cmd;
        buf[13] = rows[i].fam;
        buf[14] = (uint8_t)(rows[i].body >> 8);
        buf[15] = (uint8_t)rows[i].body;
        error = NULL;
        assert_int_equal(mx_proxy_v2_parse(buf, 16 + rows[i].body, &r, &error), -1);
        if (error == NULL || strstr(error, rows[i].error) == NULL)
            fail_msg("row %zu: error %s lacks %s", i, error ? error : "(none)", rows[i].error);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_and_truncations),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_local_command),
        cmocka_unit_test(test_invalid_headers),
    };
    return cmocka_run_group_tests_name("proxy_v2", tests, NULL, NULL);
}
