/* test_imap_message - the pure helpers of the IMAP message commands:
 * HEADER.FIELDS filtering, Content-Transfer-Encoding detection, base64 and
 * quoted-printable decoding for BINARY, the APPEND date-time, keywords. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "imap_message_util.h"

/* ---- HEADER.FIELDS ------------------------------------------------------ */

static const char header[] =
    "Received: from a\r\n\tby b\r\n"
    "From: Alice <a@example.org>\r\n"
    "To: bob@example.org,\r\n carol@example.org\r\n"
    "Subject: hello\r\n"
    "X-Spam: no\r\n"
    "\r\n";

static void assert_filter(const char *hdr, char *const *names, size_t n, bool exclude,
                          const char *expected)
{
    size_t len;
    char *out = imap_header_filter(hdr, strlen(hdr), names, n, exclude, &len);
    assert_int_equal(len, strlen(expected));
    assert_memory_equal(out, expected, len);
    free(out);
}

static void test_filter_fields(void **state)
{
    (void)state;
    char *names[] = { "subject", "TO" };
    /* the order of the message, not of the request; folding kept */
    assert_filter(header, names, 2, false,
                  "To: bob@example.org,\r\n carol@example.org\r\nSubject: hello\r\n\r\n");
}

static void test_filter_not(void **state)
{
    (void)state;
    char *names[] = { "received", "x-spam", "to" };
    assert_filter(header, names, 3, true,
                  "From: Alice <a@example.org>\r\nSubject: hello\r\n\r\n");
}

static void test_filter_none_matching(void **state)
{
    (void)state;
    char *names[] = { "Cc" };
    /* only the blank line that ends the header section */
    assert_filter(header, names, 1, false, "\r\n");
}

static void test_filter_no_blank_line_and_bare_lf(void **state)
{
    (void)state;
    char *names[] = { "a" };
    /* a header without its blank line (a message without body): no blank
     * line is added (RFC 3501 6.4.5); a last line without line break */
    assert_filter("A: 1\nB: 2\nA: 3", names, 1, false, "A: 1\nA: 3\r\n");
    assert_filter("A: 1\r\nB: 2\r\n", names, 1, false, "A: 1\r\n");
    /* bare-LF blank line: the blank line is sent as CRLF */
    assert_filter("A: 1\nB: 2\n\nbody", names, 1, false, "A: 1\n\r\n");
    /* the empty header of a part that is not a message: nothing at all */
    assert_filter("", names, 1, false, "");
    assert_filter("\r\n", names, 1, false, "\r\n");
}

static void test_filter_stops_at_body(void **state)
{
    (void)state;
    char *names[] = { "subject" };
    assert_filter("Subject: x\r\n\r\nSubject: in the body\r\n", names, 1, false,
                  "Subject: x\r\n\r\n");
}

static void test_filter_name_prefix_and_space(void **state)
{
    (void)state;
    char *names[] = { "Sub" };
    /* "Subject" is not "Sub"; "Sub :" (space before colon) is */
    assert_filter("Subject: a\r\nSub : b\r\nnot a field\r\n\r\n", names, 1, false,
                  "Sub : b\r\n\r\n");
}

/* ---- CTE ---------------------------------------------------------------- */

static void test_cte(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;
        enum imap_cte cte;
    } cases[] = {
        { "Content-Type: text/plain\r\n\r\n", IMAP_CTE_IDENTITY },
        { "Content-Transfer-Encoding: base64\r\n\r\n", IMAP_CTE_BASE64 },
        { "content-transfer-encoding:  BASE64 (comment)\r\n\r\n", IMAP_CTE_BASE64 },
        { "Content-Transfer-Encoding:\r\n Quoted-Printable\r\n\r\n", IMAP_CTE_QUOTED_PRINTABLE },
        { "Content-Transfer-Encoding: 8bit\r\n", IMAP_CTE_IDENTITY },
        { "Content-Transfer-Encoding: binary\r\n", IMAP_CTE_IDENTITY },
        { "Content-Transfer-Encoding: x-uuencode\r\n", IMAP_CTE_UNKNOWN },
        { "Content-Transfer-Encoding: base64x\r\n", IMAP_CTE_UNKNOWN },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(imap_cte_of_header(cases[i].hdr, strlen(cases[i].hdr)), cases[i].cte);
}

/* ---- base64 ------------------------------------------------------------- */

static void assert_b64(const char *in, const void *expected, size_t expected_len)
{
    size_t len = strlen(in);
    unsigned char *out = malloc(len / 4 * 3 + 4);
    size_t n = imap_base64_decode(in, len, out);
    assert_int_equal(n, expected_len);
    if (n)
        assert_memory_equal(out, expected, n);
    free(out);
}

static void test_base64(void **state)
{
    (void)state;
    assert_b64("aGVsbG8=", "hello", 5);
    assert_b64("aGVs\r\nbG8gd29y\r\nbGQ=\r\n", "hello world", 11);
    assert_b64("AAEC/w==", "\x00\x01\x02\xff", 4);
    assert_b64("", "", 0);
    assert_b64("aGVsbG8", "hello", 5);        /* missing pad */
    assert_b64("a G*V s#b G 8 =", "hello", 5); /* junk outside the alphabet ignored */
    assert_b64("aGk=aGk=", "hi", 2);          /* stops at the pad */
    assert_b64("Q", "", 0);                   /* 6 bits: no whole byte */
}

/* ---- quoted-printable --------------------------------------------------- */

static void assert_qp(const char *in, const char *expected)
{
    size_t len = strlen(in);
    unsigned char *out = malloc(len + 1);
    size_t n = imap_qp_decode(in, len, out);
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(out, expected, n);
    free(out);
}

static void test_qp(void **state)
{
    (void)state;
    assert_qp("caf=C3=A9\r\n", "caf\xc3\xa9\r\n");
    assert_qp("soft=\r\nbreak", "softbreak");
    assert_qp("soft= \t\r\nbreak", "softbreak");             /* white space after "=" */
    assert_qp("trailing   \r\nspace\t\n", "trailing\r\nspace\n"); /* rule 3 */
    assert_qp("lower=3d=c3=a9", "lower=\xc3\xa9");
    assert_qp("bad=ZZ and =4", "bad=ZZ and =4");             /* kept literally */
    assert_qp("end=", "end");
}

static void test_qp_nul_length(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(imap_qp_decode("a=00b", 5, out), 3);
    assert_memory_equal(out, "a\0b", 3);
}

/* ---- date-time ---------------------------------------------------------- */

static void test_datetime_valid(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(imap_parse_datetime("17-Jul-1996 02:44:25 -0700", 26, &ms), 0);
    assert_int_equal(ms, 837596665000LL);
    assert_int_equal(imap_parse_datetime(" 1-jan-1970 00:00:00 +0000", 26, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(imap_parse_datetime("01-JAN-1970 01:00:00 +0100", 26, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(imap_parse_datetime("29-Feb-2024 23:59:59 +0000", 26, &ms), 0);
    assert_int_equal(ms, 1709251199000LL);
    assert_int_equal(imap_parse_datetime("31-Dec-1969 23:00:00 +0000", 26, &ms), 0);
    assert_int_equal(ms, -3600000LL);
}

static void test_datetime_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "29-Feb-2023 00:00:00 +0000", /* not a leap year */
        "31-Apr-2024 00:00:00 +0000",
        "00-Jan-2024 00:00:00 +0000",
        "1-Jan-2024 00:00:00 +0000",  /* day without its space */
        " 0-Jan-2024 00:00:00 +0000",
        "01-Jam-2024 00:00:00 +0000",
        "01-Jan-2024 24:00:00 +0000",
        "01-Jan-2024 00:60:00 +0000",
        "01-Jan-2024 00:00:00 0000",
        "01-Jan-2024 00:00:00 +0060",
        "01-Jan-2024 00:00:00 +1500",
        "01-Jan-2024T00:00:00 +0000",
        "01-Jan-2024 00:00:00 +0000 ",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 42;
        assert_int_equal(imap_parse_datetime(bad[i], strlen(bad[i]), &ms), -1);
        assert_int_equal(ms, 42);
    }
}

/* ---- keywords ----------------------------------------------------------- */

static void test_keywords(void **state)
{
    (void)state;
    assert_true(imap_keyword_valid("$Forwarded", 10));
    assert_true(imap_keyword_valid("Junk", 4));
    assert_false(imap_keyword_valid("", 0));
    assert_false(imap_keyword_valid("a b", 3));
    assert_false(imap_keyword_valid("a(b", 3));
    assert_false(imap_keyword_valid("a]", 2));
    assert_false(imap_keyword_valid("a%", 2));
    assert_false(imap_keyword_valid("\\Seen", 5));
    assert_false(imap_keyword_valid("caf\xc3\xa9", 5));
    assert_false(imap_keyword_valid("a\0b", 3));
    char long_kw[300];
    memset(long_kw, 'k', sizeof long_kw);
    assert_true(imap_keyword_valid(long_kw, 255));
    assert_false(imap_keyword_valid(long_kw, 256));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_fields),
        cmocka_unit_test(test_filter_not),
        cmocka_unit_test(test_filter_none_matching),
        cmocka_unit_test(test_filter_no_blank_line_and_bare_lf),
        cmocka_unit_test(test_filter_stops_at_body),
        cmocka_unit_test(test_filter_name_prefix_and_space),
        cmocka_unit_test(test_cte),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_qp),
        cmocka_unit_test(test_qp_nul_length),
        cmocka_unit_test(test_datetime_valid),
        cmocka_unit_test(test_datetime_invalid),
        cmocka_unit_test(test_keywords),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
