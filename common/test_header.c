/* test_header - the header-section scanner (fed in every split) and the
 * Received / Date / Message-ID formatters, including header injection
 * through every peer-controlled value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <locale.h>

#include "mx_alloc.h"
#include "mx_header.h"

/* ---- scanner ------------------------------------------------------------ */

static const char *const scan_names[] = { "Date", "Message-ID", "From", "Sender", "Received" };
enum { N_DATE, N_MSGID, N_FROM, N_SENDER, N_RECEIVED, N_COUNT };

struct scan_case {
    const char *name;
    const char *msg;       /* NUL-terminated */
    unsigned counts[N_COUNT];
    uint64_t header_size;  /* octets of the header section incl. empty line */
    bool has_empty_line;
    uint64_t fields;
    uint64_t malformed;
};

static const struct scan_case scan_cases[] = {
    { "typical",
      "Received: from a\r\n\tby b; date\r\nReceived: from c\r\nDate: Mon, 1 Jan 2024\r\n"
      "From: x@y\r\nSubject: hi\r\nMessage-ID: <1@y>\r\n\r\nbody\r\nDate: not a header\r\n",
      { 1, 1, 1, 0, 2 }, 117, true, 6, 0 },
    { "case-insensitive, WSP before colon",
      "DATE: x\r\nmessage-id : <a@b>\r\nreceived\t: x\r\nFROM:x\r\n\r\n",
      { 1, 1, 1, 0, 1 }, 53, true, 4, 0 },
    { "look-alike names do not count",
      "X-Received: a\r\nReceived-SPF: pass\r\nReceivedx: 1\r\nDates: 2\r\nFro: 3\r\n\r\n",
      { 0, 0, 0, 0, 0 }, 69, true, 5, 0 },
    { "continuation lines are not fields",
      "Subject: a\r\n Received: fake\r\n\tDate: fake\r\nSender: s\r\n\r\n",
      { 0, 0, 0, 1, 0 }, 55, true, 2, 0 },
    { "no body separator: all header",
      "From: a\r\nDate: b\r\n", { 1, 0, 1, 0, 0 }, 18, false, 2, 0 },
    { "no final CRLF",
      "From: a\r\nDate: b", { 1, 0, 1, 0, 0 }, 16, false, 2, 0 },
    { "empty header section", "\r\nReceived: body\r\n", { 0 }, 2, true, 0, 0 },
    { "empty message", "", { 0 }, 0, false, 0, 0 },
    { "LF line endings (Maildir)",
      "Received: a\nReceived: b\nDate: c\n\nReceived: body\n",
      { 1, 0, 0, 0, 2 }, 33, true, 3, 0 },
    { "malformed lines are skipped, not the end",
      "From a@b Mon Jan 1\r\n: empty name\r\nDate: x\r\n\rjunk\r\nbad name: x\r\nReceived: y\r\n\r\n",
      { 1, 0, 0, 0, 1 }, 78, true, 2, 4 },
    { "line without colon at the end of message", "Date: x\r\nnocolon", { 1 }, 16, false, 1, 1 },
    { "field name longer than the match buffer",
      "X-Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: 1\r\n"
      "Received: y\r\n\r\n", { 0, 0, 0, 0, 1 }, 96, true, 2, 0 },
    { "CR inside a name", "Da\rte: x\r\nDate: y\r\n\r\n", { 1 }, 21, true, 1, 1 },
};

static void scan_split(const char *msg, size_t len, size_t cut1, size_t cut2,
                       struct mx_header_scan *scan)
{
    const char *error = NULL;
    assert_int_equal(mx_header_scan_init(scan, scan_names, N_COUNT, &error), 0);
    size_t cuts[3] = { cut1, cut2, len };
    size_t pos = 0, consumed = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t n = mx_header_scan_feed(scan, msg + pos, cuts[i] - pos);
        consumed += n;
        if (n < cuts[i] - pos) {
            assert_true(scan->done); /* only the end of the section stops it */
            break;
        }
        pos = cuts[i];
    }
    mx_header_scan_finish(scan);
    assert_int_equal(consumed, scan->header_size);
    /* after done, nothing more is taken */
    assert_int_equal(mx_header_scan_feed(scan, "Date: x\r\n", 9), 0);
}

static void check_scan(const struct scan_case *c, const struct mx_header_scan *scan,
                       size_t cut1, size_t cut2)
{
    bool ok = scan->header_size == c->header_size &&
              scan->has_empty_line == c->has_empty_line && scan->done &&
              scan->fields == c->fields && scan->malformed_lines == c->malformed;
    for (size_t i = 0; i < N_COUNT; i++)
        ok = ok && mx_header_scan_count(scan, i) == c->counts[i];
    if (!ok) {
        fprintf(stderr, "case '%s' cuts %zu/%zu: size %llu empty %d fields %llu "
                "malformed %llu counts %u %u %u %u %u\n", c->name, cut1, cut2,
                (unsigned long long)scan->header_size, scan->has_empty_line,
                (unsigned long long)scan->fields,
                (unsigned long long)scan->malformed_lines, scan->counts[0],
                scan->counts[1], scan->counts[2], scan->counts[3], scan->counts[4]);
        fail();
    }
}

static void test_scan_table(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(scan_cases) / sizeof(scan_cases[0]); k++) {
        const struct scan_case *c = &scan_cases[k];
        size_t len = strlen(c->msg);
        struct mx_header_scan scan;
        /* whole, every 2-way and every 3-way split */
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                scan_split(c->msg, len, i, j, &scan);
                check_scan(c, &scan, i, j);
            }
        }
        /* one byte at a time */
        const char *error;
        assert_int_equal(mx_header_scan_init(&scan, scan_names, N_COUNT, &error), 0);
        for (size_t i = 0; i < len; i++)
            mx_header_scan_feed(&scan, c->msg + i, 1);
        mx_header_scan_finish(&scan);
        check_scan(c, &scan, 1, 1);
    }
}

/* Loop detection counts many Received fields; O(1) memory whatever the size. */
static void test_scan_many_received(void **state)
{
    (void)state;
    struct mx_header_scan scan;
    assert_int_equal(mx_header_scan_init(&scan, scan_names, N_COUNT, NULL), 0);
    static const char line[] = "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n";
    for (int i = 0; i < 150; i++)
        assert_int_equal(mx_header_scan_feed(&scan, line, sizeof(line) - 1), sizeof(line) - 1);
    assert_int_equal(mx_header_scan_feed(&scan, "\r\nbody", 6), 2);
    assert_true(scan.done);
    assert_int_equal(mx_header_scan_count(&scan, N_RECEIVED), 150);
    assert_int_equal(mx_header_scan_count(&scan, 99), 0); /* out of range */
    assert_int_equal(scan.header_size, 150 * (sizeof(line) - 1) + 2);
}

static void test_scan_init_errors(void **state)
{
    (void)state;
    struct mx_header_scan scan;
    const char *error = NULL;
    const char *const bad_colon[] = { "Date:" };
    const char *const bad_space[] = { "Da te" };
    const char *const bad_empty[] = { "" };
    const char *const bad_null[] = { NULL };
    char longname[MX_HEADER_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    const char *const bad_long[] = { longname };
    const char *many[MX_HEADER_SCAN_MAX_NAMES + 1];
    for (size_t i = 0; i < MX_HEADER_SCAN_MAX_NAMES + 1; i++)
        many[i] = "X";

    assert_int_equal(mx_header_scan_init(&scan, bad_colon, 1, &error), -1);
    assert_non_null(error);
    assert_int_equal(mx_header_scan_init(&scan, bad_space, 1, &error), -1);
    assert_int_equal(mx_header_scan_init(&scan, bad_empty, 1, &error), -1);
    assert_int_equal(mx_header_scan_init(&scan, bad_null, 1, &error), -1);
    assert_int_equal(mx_header_scan_init(&scan, bad_long, 1, &error), -1);
    assert_int_equal(mx_header_scan_init(&scan, many, MX_HEADER_SCAN_MAX_NAMES + 1, &error), -1);
    assert_int_equal(mx_header_scan_init(&scan, many, MX_HEADER_SCAN_MAX_NAMES, &error), 0);
    longname[MX_HEADER_NAME_MAX] = '\0'; /* exactly the maximum: fine */
    assert_int_equal(mx_header_scan_init(&scan, bad_long, 1, &error), 0);
    assert_int_equal(mx_header_scan_init(&scan, NULL, 0, &error), 0);
}

/* ---- Date ----------------------------------------------------------------- */

static void test_date(void **state)
{
    (void)state;
    static const struct {
        long long t;
        const char *want;
    } cases[] = {
        { 0, "Thu, 1 Jan 1970 00:00:00 +0000" },
        { 1795428000, "Mon, 23 Nov 2026 10:00:00 +0000" },
        { 1709251199, "Thu, 29 Feb 2024 23:59:59 +0000" },
        { 946684800, "Sat, 1 Jan 2000 00:00:00 +0000" },
        { 253402300799LL, "Fri, 31 Dec 9999 23:59:59 +0000" },
        { -2208988800LL, "Mon, 1 Jan 1900 00:00:00 +0000" },
    };
    char buf[128];
    const char *error = NULL;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(mx_header_format_date_value(buf, sizeof(buf), (time_t)cases[i].t,
                                                     &error), 0);
        assert_string_equal(buf, cases[i].want);
        char field[160];
        snprintf(field, sizeof(field), "Date: %s\r\n", cases[i].want);
        assert_int_equal(mx_header_format_date(buf, sizeof(buf), (time_t)cases[i].t, &error), 0);
        assert_string_equal(buf, field);
    }
    /* out of RFC 5322 range */
    assert_int_equal(mx_header_format_date(buf, sizeof(buf), (time_t)253402300800LL, &error), -1);
    assert_string_equal(buf, "");
    assert_non_null(error);
    assert_int_equal(mx_header_format_date(buf, sizeof(buf), (time_t)-2208988801LL, &error), -1);
    /* buffer exactly big enough, and one short */
    const size_t need = strlen("Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n") + 1;
    assert_int_equal(mx_header_format_date(buf, need, 1795428000, &error), 0);
    assert_int_equal(mx_header_format_date(buf, need - 1, 1795428000, &error), -1);
    assert_string_equal(buf, "");
    assert_int_equal(mx_header_format_date_value(buf, 10, 1795428000, &error), -1);
    assert_string_equal(buf, "");
    assert_int_equal(mx_header_format_date(buf, 0, 0, NULL), -1); /* error_r optional */
}

/* Names must not follow the locale (strftime %a/%b would). */
static void test_date_locale(void **state)
{
    (void)state;
    static const char *const locales[] = { "de_DE.UTF-8", "fr_FR.UTF-8", "C.UTF-8", "" };
    char buf[128];
    for (size_t i = 0; i < sizeof(locales) / sizeof(locales[0]); i++) {
        if (setlocale(LC_ALL, locales[i]) == NULL)
            continue;
        assert_int_equal(mx_header_format_date_value(buf, sizeof(buf), 1795428000, NULL), 0);
        assert_string_equal(buf, "Mon, 23 Nov 2026 10:00:00 +0000");
    }
    setlocale(LC_ALL, "C");
}

/* ---- Message-ID ----------------------------------------------------------- */

static void test_message_id(void **state)
{
    (void)state;
    char buf[512];
    const char *error = NULL;
    assert_int_equal(mx_header_format_message_id(buf, sizeof(buf), "01JD3K4ZB7Q8XYZ",
                                                 "mx1.example.org", &error), 0);
    assert_string_equal(buf, "Message-ID: <01JD3K4ZB7Q8XYZ@mx1.example.org>\r\n");
    assert_int_equal(mx_header_format_message_id(buf, sizeof(buf), "a.b+c=d",
                                                 "example.org", &error), 0);
    assert_string_equal(buf, "Message-ID: <a.b+c=d@example.org>\r\n");

    static const char *const bad_ids[] = { "", "a b", "a..b", ".a", "a.", "<x>", "a@b",
                                           "a\r\nX: y", "a\"b", "\xc3\xa9" };
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        error = NULL;
        assert_int_equal(mx_header_format_message_id(buf, sizeof(buf), bad_ids[i],
                                                     "example.org", &error), -1);
        assert_non_null(error);
        assert_string_equal(buf, "");
    }
    static const char *const bad_domains[] = { "", "exa mple.org", "example.org.",
                                               "-a.org", "a\r\n.org", "[1.2.3.4]", "a..b" };
    for (size_t i = 0; i < sizeof(bad_domains) / sizeof(bad_domains[0]); i++)
        assert_int_equal(mx_header_format_message_id(buf, sizeof(buf), "id",
                                                     bad_domains[i], &error), -1);
    assert_int_equal(mx_header_format_message_id(buf, sizeof(buf), NULL, "a.org", &error), -1);
    assert_int_equal(mx_header_format_message_id(buf, sizeof(buf), "id", NULL, &error), -1);
    /* exactly fits / one short */
    size_t need = strlen("Message-ID: <id@a.org>\r\n") + 1;
    assert_int_equal(mx_header_format_message_id(buf, need, "id", "a.org", &error), 0);
    assert_int_equal(mx_header_format_message_id(buf, need - 1, "id", "a.org", &error), -1);
    assert_string_equal(buf, "");
}

/* ---- Received ------------------------------------------------------------- */

/* check_header_safe - the structural promise: one header field, CRLF only
 * as fold (followed by TAB) or at the very end, nothing but printable
 * ASCII and TAB (8-bit only where allowed), lines below 78 unless a single
 * word is longer, comments balanced. */
static void check_header_safe(const char *h, bool allow_8bit)
{
    size_t len = strlen(h);
    assert_true(len >= 2);
    assert_memory_equal(h + len - 2, "\r\n", 2);
    size_t line_start = 0;
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '\r') {
            assert_int_equal(h[i + 1], '\n');
            assert_true(i + 2 == len || h[i + 2] == '\t');
            size_t line_len = i - line_start;
            if (line_len > MX_HEADER_FOLD_WIDTH) {
                /* only a single over-long word: no space after the TAB */
                const char *sp = memchr(h + line_start + 1, ' ', line_len - 1);
                assert_null(sp);
            }
            assert_true(line_len <= 998);
            line_start = i + 2;
            i++;
            continue;
        }
        assert_int_not_equal(c, '\n');
        assert_true(c == '\t' || (c >= 32 && c < 127) || (allow_8bit && c >= 0x80));
        if (c == '\\') {
            assert_true(depth > 0); /* quoted-pairs only inside comments */
            i++;
            assert_true(h[i] == '(' || h[i] == ')' || h[i] == '\\');
        } else if (c == '(') {
            depth++;
        } else if (c == ')') {
            assert_true(depth > 0);
            depth--;
        }
    }
    assert_int_equal(depth, 0);
    /* exactly one field: "Received:" at the start and no other line
     * starts without WSP */
    assert_memory_equal(h, "Received: ", 10);
}

static const struct mx_received_info base_info = {
    .helo = "mail.example.com",
    .rdns = "mail.example.com",
    .ip = "192.0.2.1",
    .by_host = "mx1.example.org",
    .id = "01JD3K4ZB7Q8XYZABCDEFGHJKM",
    .rcpt = "user@example.org",
    .esmtp = true,
    .date = 1795428000,
};

static void test_received_typical(void **state)
{
    (void)state;
    char buf[MX_HEADER_RECEIVED_MAX];
    const char *error = NULL;

    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &base_info, &error), 0);
    assert_string_equal(buf,
        "Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
        "\tby mx1.example.org (mxcluster) with ESMTP id 01JD3K4ZB7Q8XYZABCDEFGHJKM\r\n"
        "\tfor <user@example.org>; Mon, 23 Nov 2026 10:00:00 +0000\r\n");
    check_header_safe(buf, false);

    struct mx_received_info info = base_info;
    info.tls_version = "TLSv1.3";
    info.tls_cipher = "TLS_AES_256_GCM_SHA384";
    info.auth_user = "alice";
    info.show_auth_user = true;
    info.rdns = NULL;
    info.rcpt = NULL;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_string_equal(buf,
        "Received: from mail.example.com (unknown [192.0.2.1])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        "\t(Authenticated sender: alice)\r\n"
        "\tby mx1.example.org (mxcluster) with ESMTPSA id 01JD3K4ZB7Q8XYZABCDEFGHJKM;\r\n"
        "\tMon, 23 Nov 2026 10:00:00 +0000\r\n");
    check_header_safe(buf, false);

    /* privacy: AUTH without show_auth_user names no one */
    info.show_auth_user = false;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_null(strstr(buf, "alice"));
    assert_null(strstr(buf, "Authenticated"));
    assert_non_null(strstr(buf, "with ESMTPSA"));

    /* HELO (not EHLO), IPv6, address-literal HELO, TLS without cipher */
    info = base_info;
    info.esmtp = false;
    info.helo = "[IPv6:2001:db8::1]";
    info.ip = "2001:db8::1";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_non_null(strstr(buf, "Received: from [IPv6:2001:db8::1] "
                                "(mail.example.com [IPv6:2001:db8::1])\r\n"));
    assert_non_null(strstr(buf, " with SMTP id "));
    check_header_safe(buf, false);
    info.tls_version = "TLSv1.2";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_non_null(strstr(buf, "(using TLSv1.2)"));
    assert_non_null(strstr(buf, " with ESMTPS id ")); /* TLS implies EHLO */
    check_header_safe(buf, false);
}

static void test_received_protocols(void **state)
{
    (void)state;
    assert_string_equal(mx_header_with_protocol(false, false, false, false), "SMTP");
    assert_string_equal(mx_header_with_protocol(true, false, false, false), "ESMTP");
    assert_string_equal(mx_header_with_protocol(true, true, false, false), "ESMTPS");
    assert_string_equal(mx_header_with_protocol(true, false, true, false), "ESMTPA");
    assert_string_equal(mx_header_with_protocol(true, true, true, false), "ESMTPSA");
    assert_string_equal(mx_header_with_protocol(true, false, false, true), "UTF8SMTP");
    assert_string_equal(mx_header_with_protocol(true, true, false, true), "UTF8SMTPS");
    assert_string_equal(mx_header_with_protocol(true, false, true, true), "UTF8SMTPA");
    assert_string_equal(mx_header_with_protocol(true, true, true, true), "UTF8SMTPSA");
}

/* HELO is whatever the client typed: it must never break out. */
static void test_received_helo_injection(void **state)
{
    (void)state;
    static const struct {
        const char *helo;
        const char *shown; /* expected escaped comment text, or NULL */
    } cases[] = {
        { "evil\r\nX-Injected: yes", "(invalid HELO: evil??X-Injected:?yes)" },
        { "evil\nX-Injected: yes", "(invalid HELO: evil?X-Injected:?yes)" },
        { "evil\rX-Injected: yes", "(invalid HELO: evil?X-Injected:?yes)" },
        { "a)(b", "(invalid HELO: a\\)\\(b)" },
        { "x\\", "(invalid HELO: x\\\\)" },
        { "((((", "(invalid HELO: \\(\\(\\(\\()" },
        { "host; for <victim@x>", "(invalid HELO: host;?for?<victim@x>)" },
        { "\xc3\xa9xample.com", "(invalid HELO: ??xample.com)" },
        { "a\tb\x01\x7f", "(invalid HELO: a?b?" "?)" }, /* no trigraph */
        { "under_score.example", "(invalid HELO: under_score.example)" },
        { "[999.1.1.1]", "(invalid HELO: [999.1.1.1])" },
        { "", "(no HELO)" },
    };
    char buf[MX_HEADER_RECEIVED_MAX];
    const char *error = NULL;
    struct mx_received_info info = base_info;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        info.helo = cases[i].helo;
        assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
        check_header_safe(buf, false);
        assert_memory_equal(buf, "Received: from unknown (mail.example.com [192.0.2.1])\r\n\t",
                            strlen("Received: from unknown (mail.example.com [192.0.2.1])\r\n\t"));
        if (strstr(buf, cases[i].shown) == NULL) {
            fprintf(stderr, "helo case %zu: want %s in:\n%s", i, cases[i].shown, buf);
            fail();
        }
        assert_null(strstr(buf, "\nX-Injected"));
    }
    info.helo = NULL;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_non_null(strstr(buf, "(no HELO)"));

    /* a 1000-octet HELO is capped */
    char longhelo[1001];
    memset(longhelo, 'h', 1000);
    longhelo[1000] = '\0';
    info.helo = longhelo;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    check_header_safe(buf, false);
    assert_true(strlen(buf) < 600);
    assert_non_null(strstr(buf, "...)"));

    /* a valid 253-octet domain HELO is used as is: one long word */
    char bighelo[254];
    for (size_t i = 0; i < 253; i++)
        bighelo[i] = (i % 50 == 49) ? '.' : 'd';
    bighelo[253] = '\0';
    info.helo = bighelo;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    check_header_safe(buf, false);
    assert_non_null(strstr(buf, bighelo));
}

/* rDNS comes from a PTR record the client's owner controls; the user name
 * and the TLS strings are escaped too; the recipient is omitted rather than
 * quoted when it has anything unusual. */
static void test_received_other_values(void **state)
{
    (void)state;
    char buf[MX_HEADER_RECEIVED_MAX];
    const char *error = NULL;
    struct mx_received_info info = base_info;

    info.rdns = "evil\r\nX-Injected: 1";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    check_header_safe(buf, false);
    assert_non_null(strstr(buf, "(unknown [192.0.2.1])"));

    info = base_info;
    info.auth_user = "bob)\r\nX-Injected: (1";
    info.show_auth_user = true;
    info.tls_version = "TLS\r\n1";
    info.tls_cipher = "A(B";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    check_header_safe(buf, false);
    assert_non_null(strstr(buf, "(Authenticated sender: bob\\)??X-Injected:?\\(1)"));
    assert_non_null(strstr(buf, "(using TLS??1 with cipher A\\(B)"));

    static const char *const dropped[] = {
        "\"quoted user\"@example.org", "a;b@example.org", "a(b)@example.org",
        "a b@example.org", "a\r\nX: y@example.org", "<a@example.org>", "noat",
        "\xc3\xa9@example.org", "",
    };
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++) {
        info = base_info;
        info.rcpt = dropped[i];
        assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
        check_header_safe(buf, false);
        assert_null(strstr(buf, " for "));
        assert_non_null(strstr(buf, " id 01JD3K4ZB7Q8XYZABCDEFGHJKM;\r\n\tMon, 23 Nov 2026"));
    }
    /* UTF-8 recipient in an SMTPUTF8 transaction is shown */
    info = base_info;
    info.utf8 = true;
    info.rcpt = "j\xc3\xb6rg@example.org";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    check_header_safe(buf, true);
    assert_non_null(strstr(buf, "for <j\xc3\xb6rg@example.org>;"));
    assert_non_null(strstr(buf, "with UTF8SMTP id"));
    /* invalid UTF-8 is not */
    info.rcpt = "j\xc3\x28rg@example.org";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_null(strstr(buf, " for "));
    /* address-literal recipient domain is fine */
    info = base_info;
    info.rcpt = "postmaster@[192.0.2.7]";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
    assert_non_null(strstr(buf, "for <postmaster@[192.0.2.7]>;"));
}

static void test_received_errors(void **state)
{
    (void)state;
    char buf[MX_HEADER_RECEIVED_MAX];
    const char *error;
    struct mx_received_info info;
    static const char *const bad_ips[] = { "", "1.2.3", "192.0.2.1\r\n", "host", "::g" };
    for (size_t i = 0; i < sizeof(bad_ips) / sizeof(bad_ips[0]); i++) {
        info = base_info;
        info.ip = bad_ips[i];
        error = NULL;
        assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);
        assert_non_null(error);
        assert_string_equal(buf, "");
    }
    info = base_info;
    info.ip = NULL;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);
    info = base_info;
    info.by_host = "bad host";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);
    info.by_host = NULL;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);
    info = base_info;
    info.id = "id;x";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);
    info.id = "";
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);
    info = base_info;
    info.date = (time_t)253402300800LL;
    assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), -1);

    /* every buffer size: either the full header or -1 and "" */
    info = base_info;
    info.tls_version = "TLSv1.3";
    char full[MX_HEADER_RECEIVED_MAX];
    assert_int_equal(mx_header_format_received(full, sizeof(full), &info, &error), 0);
    size_t need = strlen(full) + 1;
    for (size_t size = 0; size <= need; size++) {
        char *small = mx_malloc(size > 0 ? size : 1);
        int rc = mx_header_format_received(small, size, &info, &error);
        if (size == need) {
            assert_int_equal(rc, 0);
            assert_string_equal(small, full);
        } else {
            assert_int_equal(rc, -1);
            if (size > 0)
                assert_string_equal(small, "");
        }
        free(small);
    }
}

static uint64_t rng_state = UINT64_C(0x853c49e6748fea9b);

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(0x2545f4914f6cdd1d);
}

static void random_text(char *s, size_t max)
{
    size_t len = (size_t)(rng() % max);
    for (size_t i = 0; i < len; i++) {
        /* lean towards the dangerous bytes */
        static const char nasty[] = "\r\n()\\;<>\" \t.@[]:";
        s[i] = rng() % 3 == 0 ? nasty[rng() % (sizeof(nasty) - 1)]
                              : (char)(1 + rng() % 255);
    }
    s[len] = '\0';
}

/* Random bytes in every peer-controlled value: always one safe field. */
static void test_received_random(void **state)
{
    (void)state;
    char buf[MX_HEADER_RECEIVED_MAX];
    char helo[400], rdns[300], user[200], rcpt[300], ver[40], cipher[100];
    for (int iter = 0; iter < 20000; iter++) {
        random_text(helo, sizeof(helo));
        random_text(rdns, sizeof(rdns));
        random_text(user, sizeof(user));
        random_text(rcpt, sizeof(rcpt));
        random_text(ver, sizeof(ver));
        random_text(cipher, sizeof(cipher));
        struct mx_received_info info = base_info;
        info.helo = helo;
        info.rdns = rdns;
        info.auth_user = user;
        info.show_auth_user = rng() & 1;
        info.rcpt = rcpt;
        info.tls_version = rng() & 1 ? ver : NULL;
        info.tls_cipher = rng() & 1 ? cipher : NULL;
        info.utf8 = rng() & 1;
        info.esmtp = rng() & 1;
        const char *error = NULL;
        assert_int_equal(mx_header_format_received(buf, sizeof(buf), &info, &error), 0);
        check_header_safe(buf, info.utf8);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_table),
        cmocka_unit_test(test_scan_many_received),
        cmocka_unit_test(test_scan_init_errors),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_date_locale),
        cmocka_unit_test(test_message_id),
        cmocka_unit_test(test_received_typical),
        cmocka_unit_test(test_received_protocols),
        cmocka_unit_test(test_received_helo_injection),
        cmocka_unit_test(test_received_other_values),
        cmocka_unit_test(test_received_errors),
        cmocka_unit_test(test_received_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
