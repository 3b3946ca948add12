/* test_smtp_data - the DATA decoder and BDAT reader.
 *
 * Every table case is decoded whole, one byte at a time, in every 2-way
 * split and (for short inputs) every 3-way split, and must give the same
 * status, problem line, decoded bytes, consumed count and size each time:
 * a state machine that only works when the terminator arrives in one read
 * is the classic SMTP smuggling bug. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_alloc.h"
#include "smtp_data.h"

/* ---- a growing sink --------------------------------------------------- */

struct sink_buf {
    unsigned char *data;
    size_t len, cap;
    size_t calls;
    size_t fail_at_call; /* 1-based call that returns -1; 0 = never */
};

static int sink_collect(void *ctx, const void *d, size_t n)
{
    struct sink_buf *sb = ctx;
    sb->calls++;
    assert_true(n > 0); /* never called with nothing */
    if (sb->fail_at_call != 0 && sb->calls == sb->fail_at_call)
        return -1;
    if (sb->len + n > sb->cap) {
        sb->cap = (sb->len + n) * 2 + 64;
        sb->data = mx_realloc(sb->data, sb->cap);
    }
    memcpy(sb->data + sb->len, d, n);
    sb->len += n;
    return 0;
}

static void sink_reset(struct sink_buf *sb)
{
    free(sb->data);
    memset(sb, 0, sizeof(*sb));
}

/* ---- running one input in pieces -------------------------------------- */

struct result {
    enum smtp_data_status status;
    uint64_t line;
    uint64_t size;
    size_t consumed;
    bool done;
    struct sink_buf out;
};

/* decode_split - feed in[0..len) cut at the sorted positions cuts[0..ncuts);
 * after the terminator the rest of the input is offered again to check
 * that a finished decoder consumes nothing. */
static void decode_split(const struct smtp_data_limits *limits, const char *in,
                         size_t len, const size_t *cuts, size_t ncuts,
                         struct result *r)
{
    struct smtp_data_decoder dec;
    memset(r, 0, sizeof(*r));
    smtp_data_init(&dec, limits, sink_collect, &r->out);

    size_t pos = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t stop = i < ncuts ? cuts[i] : len;
        size_t chunk = stop - pos;
        bool done = false;
        size_t n = smtp_data_feed(&dec, in + pos, chunk, &done);
        assert_true(n <= chunk);
        r->consumed += n;
        if (done) {
            r->done = true;
            break;
        }
        assert_int_equal(n, chunk); /* not done: everything consumed */
        pos = stop;
    }
    if (r->done) {
        bool done = false;
        assert_int_equal(smtp_data_feed(&dec, in + r->consumed,
                                        len - r->consumed, &done), 0);
        assert_true(done);
    }
    assert_int_equal(smtp_data_is_done(&dec), r->done);
    r->status = smtp_data_status(&dec);
    r->line = smtp_data_problem_line(&dec);
    r->size = smtp_data_size(&dec);
}

struct data_case {
    const char *name;
    const char *in;
    size_t in_len;
    enum smtp_data_status status;
    uint64_t line;     /* problem line (0 when OK) */
    const char *out;   /* decoded bytes handed to the sink */
    size_t out_len;
    size_t consumed;
    bool done;
    struct smtp_data_limits limits; /* max_line 0 here means "default 1000" */
    uint64_t size;     /* decoded size if it differs from out_len (capped output) */
};

#define S(s) (s), (sizeof(s) - 1)

static void check_result(const struct data_case *c, const struct result *r,
                         const char *how)
{
    if (r->status != c->status || r->line != c->line || r->consumed != c->consumed ||
        r->done != c->done || r->out.len != c->out_len ||
        (c->out_len > 0 && memcmp(r->out.data, c->out, c->out_len) != 0) ||
        r->size != (c->size != 0 ? c->size : c->out_len)) {
        fprintf(stderr,
                "case '%s' (%s): status %s/%s line %llu/%llu consumed %zu/%zu "
                "done %d/%d out_len %zu/%zu size %llu\n",
                c->name, how, smtp_data_status_name(r->status),
                smtp_data_status_name(c->status), (unsigned long long)r->line,
                (unsigned long long)c->line, r->consumed, c->consumed, r->done,
                c->done, r->out.len, c->out_len, (unsigned long long)r->size);
        fail();
    }
}

static void run_case(const struct data_case *c)
{
    struct smtp_data_limits limits = c->limits;
    if (limits.max_line == 0)
        limits.max_line = SMTP_DATA_MAX_LINE_DEFAULT;
    struct result r;
    size_t len = c->in_len;

    /* whole */
    decode_split(&limits, c->in, len, NULL, 0, &r);
    check_result(c, &r, "whole");
    sink_reset(&r.out);

    /* one byte at a time */
    size_t *cuts = mx_calloc(len + 2, sizeof(*cuts));
    for (size_t i = 0; i + 1 < len; i++)
        cuts[i] = i + 1;
    decode_split(&limits, c->in, len, cuts, len > 0 ? len - 1 : 0, &r);
    check_result(c, &r, "bytewise");
    sink_reset(&r.out);

    /* every 2-way split, including empty first and last chunks */
    for (size_t i = 0; i <= len; i++) {
        cuts[0] = i;
        decode_split(&limits, c->in, len, cuts, 1, &r);
        check_result(c, &r, "2-way");
        sink_reset(&r.out);
    }

    /* every 3-way split of short inputs */
    if (len <= 48) {
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                cuts[0] = i;
                cuts[1] = j;
                decode_split(&limits, c->in, len, cuts, 2, &r);
                check_result(c, &r, "3-way");
                sink_reset(&r.out);
            }
        }
    }
    free(cuts);
}

/* ---- the table -------------------------------------------------------- */

#define OK_CASE(nm, input, output)                                             \
    { .name = (nm), .in = input, .in_len = sizeof(input) - 1,                  \
      .status = SMTP_DATA_OK, .out = output, .out_len = sizeof(output) - 1,    \
      .consumed = sizeof(input) - 1, .done = true }

#define BAD_CASE(nm, input, st, ln, output)                                    \
    { .name = (nm), .in = input, .in_len = sizeof(input) - 1, .status = (st),  \
      .line = (ln), .out = output, .out_len = sizeof(output) - 1,              \
      .consumed = sizeof(input) - 1, .done = true }

static const struct data_case basic_cases[] = {
    OK_CASE("normal", "Subject: hi\r\n\r\nbody\r\n.\r\n", "Subject: hi\r\n\r\nbody\r\n"),
    OK_CASE("empty message", ".\r\n", ""),
    OK_CASE("one empty line", "\r\n.\r\n", "\r\n"),
    OK_CASE("dot-stuffed line", "a\r\n..hidden\r\n.\r\n", "a\r\n.hidden\r\n"),
    OK_CASE("double dot alone", "..\r\n.\r\n", ".\r\n"),
    OK_CASE("triple dot", "...\r\n.\r\n", "..\r\n"),
    OK_CASE("unstuffed leading dot (RFC 5321 4.5.2 removes it)", ".abc\r\n.\r\n",
            "abc\r\n"),
    OK_CASE("dot not at line start kept", "a.b\r\n a.\r\n.\r\n", "a.b\r\n a.\r\n"),
    OK_CASE("dot-space line is data", ". \r\n.\r\n", " \r\n"),
    OK_CASE("8-bit bytes pass", "\xc3\xa9t\xc3\xa9\r\n\xff\x80\r\n.\r\n",
            "\xc3\xa9t\xc3\xa9\r\n\xff\x80\r\n"),
    OK_CASE("many dot lines", "..\r\n..\r\n...\r\n.x\r\n.\r\n", ".\r\n.\r\n..\r\nx\r\n"),
    OK_CASE("tab and controls other than CR LF NUL pass", "a\tb\x01\x7f\r\n.\r\n",
            "a\tb\x01\x7f\r\n"),
};

/* Pipelined commands after the terminator stay with the caller. */
static const struct data_case pipelining_cases[] = {
    { .name = "pipelined QUIT", .in = S("hi\r\n.\r\nQUIT\r\n"), .status = SMTP_DATA_OK,
      .out = S("hi\r\n"), .consumed = 7, .done = true },
    { .name = "pipelined MAIL RCPT DATA",
      .in = S(".\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
      .status = SMTP_DATA_OK, .out = S(""), .consumed = 3, .done = true },
    { .name = "second terminator is the next command's", .in = S("hi\r\n.\r\n.\r\n"),
      .status = SMTP_DATA_OK, .out = S("hi\r\n"), .consumed = 7, .done = true },
    { .name = "bad message then pipelined", .in = S("a\nb\r\n.\r\nRSET\r\n"),
      .status = SMTP_DATA_BARE_LF, .line = 1, .out = S("a\nb\r\n"), .consumed = 8,
      .done = true },
};

/* Not finished yet: everything consumed, decoder waits for more. */
static const struct data_case incomplete_cases[] = {
    { .name = "nothing", .in = S(""), .out = S(""), .consumed = 0 },
    { .name = "no terminator", .in = S("hi\r\n"), .out = S("hi\r\n"), .consumed = 4 },
    { .name = "dot pending", .in = S("hi\r\n."), .out = S("hi\r\n"), .consumed = 5 },
    { .name = "dot CR pending", .in = S("hi\r\n.\r"), .out = S("hi\r\n"), .consumed = 6 },
    { .name = "CR pending", .in = S("hi\r"), .out = S("hi\r"), .consumed = 3 },
    { .name = "dot at start pending", .in = S("."), .out = S(""), .consumed = 1 },
    { .name = "bare LF terminator is not one", .in = S("hi\n.\n"), .status = SMTP_DATA_BARE_LF,
      .line = 1, .out = S("hi\n.\n"), .consumed = 5 },
};

/* SMTP smuggling: every look-alike of <CRLF>.<CRLF> is data and makes the
 * message invalid; only the real terminator at the end finishes it. */
static const struct data_case smuggling_cases[] = {
    BAD_CASE("\\n.\\n", "a\n.\nMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_LF, 1,
             "a\n.\nMAIL FROM:<x>\r\n"),
    BAD_CASE("\\r\\n.\\n", "a\r\n.\nMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_LF, 2,
             "a\r\n\nMAIL FROM:<x>\r\n"),
    BAD_CASE("\\n.\\r\\n", "a\n.\r\nMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_LF, 1,
             "a\n.\r\nMAIL FROM:<x>\r\n"),
    BAD_CASE("\\r.\\r\\n", "a\r.\r\nMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_CR, 1,
             "a\r.\r\nMAIL FROM:<x>\r\n"),
    BAD_CASE("\\r\\n.\\r", "a\r\n.\rMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_CR, 2,
             "a\r\n\rMAIL FROM:<x>\r\n"),
    BAD_CASE("\\r.\\r", "a\r.\rMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_CR, 1,
             "a\r.\rMAIL FROM:<x>\r\n"),
    BAD_CASE("\\n.\\r", "a\n.\rMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_LF, 1,
             "a\n.\rMAIL FROM:<x>\r\n"),
    BAD_CASE("\\r\\n.\\r\\r\\n", "a\r\n.\r\r\nMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_CR, 2,
             "a\r\n\r\r\nMAIL FROM:<x>\r\n"),
    BAD_CASE("\\r\\n.\\n\\r\\n.\\r\\n", "a\r\n.\n\r\n.\r\n", SMTP_DATA_BARE_LF, 2,
             "a\r\n\n\r\n"),
    BAD_CASE("\\n.\\r\\n at DATA start", "\n.\r\nMAIL FROM:<x>\r\n.\r\n", SMTP_DATA_BARE_LF, 1,
             "\n.\r\nMAIL FROM:<x>\r\n"),
    BAD_CASE(".\\n at DATA start", ".\nx\r\n.\r\n", SMTP_DATA_BARE_LF, 1, "\nx\r\n"),
    BAD_CASE(".\\r\\r\\n at DATA start", ".\r\r\n.\r\n", SMTP_DATA_BARE_CR, 1, "\r\r\n"),
    BAD_CASE("\\r.\\n", "a\r.\nb\r\n.\r\n", SMTP_DATA_BARE_CR, 1, "a\r.\nb\r\n"),
    BAD_CASE("\\r\\r\\n then end", "a\r\r\n.\r\n", SMTP_DATA_BARE_CR, 1, "a\r\r\n"),
    BAD_CASE("\\n\\r\\n.\\r\\n (LF before the real CRLF)", "a\n\r\n.\r\n", SMTP_DATA_BARE_LF, 1,
             "a\n\r\n"),
    BAD_CASE("\\r\\n\\r.\\r\\n", "a\r\n\r.\r\n.\r\n", SMTP_DATA_BARE_CR, 2, "a\r\n\r.\r\n"),
    BAD_CASE("\\r\\n..\\n", "a\r\n..\nb\r\n.\r\n", SMTP_DATA_BARE_LF, 2, "a\r\n.\nb\r\n"),
    BAD_CASE("line number after 3 lines", "l1\r\nl2\r\nl3\nx\r\n.\r\n", SMTP_DATA_BARE_LF, 3,
             "l1\r\nl2\r\nl3\nx\r\n"),
    BAD_CASE("first problem wins (CR before LF)", "a\rb\nc\r\n.\r\n", SMTP_DATA_BARE_CR, 1,
             "a\rb\nc\r\n"),
    BAD_CASE("first problem wins (LF before CR)", "a\nb\rc\r\n.\r\n", SMTP_DATA_BARE_LF, 1,
             "a\nb\rc\r\n"),
    BAD_CASE("NUL refused", "a\0b\r\n.\r\n", SMTP_DATA_NUL, 1, "a\0b\r\n"),
    BAD_CASE("NUL at line start", "x\r\n\0\r\n.\r\n", SMTP_DATA_NUL, 2, "x\r\n\0\r\n"),
    BAD_CASE("NUL then bare LF", "\0\n\r\n.\r\n", SMTP_DATA_NUL, 1, "\0\n\r\n"),
};

static const struct data_case limit_cases[] = {
    { .name = "NUL allowed", .in = S("a\0b\r\n.\r\n"), .status = SMTP_DATA_OK,
      .out = S("a\0b\r\n"), .consumed = 8, .done = true,
      .limits = { .allow_nul = true } },
    { .name = "size exactly at limit", .in = S("hello\r\n.\r\n"), .status = SMTP_DATA_OK,
      .out = S("hello\r\n"), .consumed = 10, .done = true, .limits = { .max_size = 7 } },
    { .name = "size over limit: output capped", .in = S("hello\r\n.\r\n"),
      .status = SMTP_DATA_TOO_BIG, .line = 1, .out = S("hello"), .size = 7,
      .consumed = 10, .done = true, .limits = { .max_size = 5 } },
    { .name = "size over limit on line 3", .in = S("ab\r\ncd\r\nef\r\n.\r\n"),
      .status = SMTP_DATA_TOO_BIG, .line = 3, .out = S("ab\r\ncd\r\n"), .size = 12,
      .consumed = 15, .done = true, .limits = { .max_size = 8 } },
    { .name = "stuffing dot not counted in size", .in = S("..\r\n.\r\n"),
      .status = SMTP_DATA_OK, .out = S(".\r\n"), .consumed = 7, .done = true,
      .limits = { .max_size = 3 } },
    { .name = "small max_line: exactly", .in = S("abc\r\n.\r\n"), .status = SMTP_DATA_OK,
      .out = S("abc\r\n"), .consumed = 8, .done = true, .limits = { .max_line = 5 } },
    { .name = "small max_line: one over", .in = S("abcd\r\n.\r\n"),
      .status = SMTP_DATA_LINE_TOO_LONG, .line = 1, .out = S("abcd\r\n"), .consumed = 9,
      .done = true, .limits = { .max_line = 5 } },
    { .name = "max_line excludes the stuffing dot", .in = S("..bc\r\n.\r\n"),
      .status = SMTP_DATA_OK, .out = S(".bc\r\n"), .consumed = 9, .done = true,
      .limits = { .max_line = 5 } },
    { .name = "max_line on line 2", .in = S("ab\r\nabcdef\r\n.\r\n"),
      .status = SMTP_DATA_LINE_TOO_LONG, .line = 2, .out = S("ab\r\nabcdef\r\n"),
      .consumed = 15, .done = true, .limits = { .max_line = 5 } },
    { .name = "line and size crossed on the same byte: line first",
      .in = S("abcdef\r\n.\r\n"), .status = SMTP_DATA_LINE_TOO_LONG, .line = 1,
      .out = S("abcde"), .size = 8, .consumed = 11, .done = true,
      .limits = { .max_line = 5, .max_size = 5 } },
    { .name = "size crossed before line", .in = S("abcdef\r\n.\r\n"),
      .status = SMTP_DATA_TOO_BIG, .line = 1, .out = S("abcd"), .size = 8,
      .consumed = 11, .done = true, .limits = { .max_line = 5, .max_size = 4 } },
    { .name = "line crossed before size", .in = S("abcdefgh\r\n.\r\n"),
      .status = SMTP_DATA_LINE_TOO_LONG, .line = 1, .out = S("abcdef"), .size = 10,
      .consumed = 13, .done = true, .limits = { .max_line = 5, .max_size = 6 } },
    { .name = "bare CR before size crossed on the next byte", .in = S("abc\rd\r\n.\r\n"),
      .status = SMTP_DATA_BARE_CR, .line = 1, .out = S("abc\r"), .size = 7,
      .consumed = 10, .done = true, .limits = { .max_size = 4 } },
    { .name = "size crossed by the CR itself", .in = S("abc\rd\r\n.\r\n"),
      .status = SMTP_DATA_TOO_BIG, .line = 1, .out = S("abc"), .size = 7,
      .consumed = 10, .done = true, .limits = { .max_size = 3 } },
    { .name = "held-back CR after a line-start dot is data", .in = S(".\rx\r\n.\r\n"),
      .status = SMTP_DATA_BARE_CR, .line = 1, .out = S("\rx\r\n"), .consumed = 8,
      .done = true },
    { .name = "held-back CR fits, next byte crosses size: bare CR first",
      .in = S(".\rx\r\n.\r\n"), .status = SMTP_DATA_BARE_CR, .line = 1, .out = S("\r"),
      .size = 4, .consumed = 8, .done = true, .limits = { .max_size = 1 } },
    { .name = "held-back CR crosses size", .in = S("a\r\n.\rx\r\n.\r\n"),
      .status = SMTP_DATA_TOO_BIG, .line = 2, .out = S("a\r\n"), .size = 7,
      .consumed = 11, .done = true, .limits = { .max_size = 3 } },
    { .name = "held-back CR: bare CR before the line gets too long",
      .in = S("\r\n.\rx\r\n.\r\n"), .status = SMTP_DATA_BARE_CR, .line = 2,
      .out = S("\r\n\rx\r\n"), .consumed = 10, .done = true, .limits = { .max_line = 2 } },
};

static void test_basic(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(basic_cases) / sizeof(basic_cases[0]); i++)
        run_case(&basic_cases[i]);
}

static void test_pipelining(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(pipelining_cases) / sizeof(pipelining_cases[0]); i++)
        run_case(&pipelining_cases[i]);
}

static void test_incomplete(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(incomplete_cases) / sizeof(incomplete_cases[0]); i++)
        run_case(&incomplete_cases[i]);
}

static void test_smuggling(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(smuggling_cases) / sizeof(smuggling_cases[0]); i++)
        run_case(&smuggling_cases[i]);
}

static void test_limits(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(limit_cases) / sizeof(limit_cases[0]); i++)
        run_case(&limit_cases[i]);
}

/* Lines of exactly 1000 and 1001 octets including CRLF, with and without
 * a stuffing dot (which does not count). */
static void test_line_length_1000(void **state)
{
    (void)state;
    static char in[1100], out[1100];
    struct data_case c = { .name = "1000" };

    /* 998 text + CRLF = 1000: fine */
    memset(in, 'x', 998);
    memcpy(in + 998, "\r\n.\r\n", 5);
    c.in = in; c.in_len = 1003; c.consumed = 1003; c.done = true;
    c.out = in; c.out_len = 1000; c.status = SMTP_DATA_OK; c.line = 0;
    run_case(&c);

    /* 999 text + CRLF = 1001: too long */
    c.name = "1001";
    memset(in, 'x', 999);
    memcpy(in + 999, "\r\n.\r\n", 5);
    c.in_len = 1004; c.consumed = 1004; c.out_len = 1001;
    c.status = SMTP_DATA_LINE_TOO_LONG; c.line = 1;
    run_case(&c);

    /* ".": 1 stuffing dot + 998 decoded text + CRLF: 1001 on the wire, 1000 decoded */
    c.name = "1000 after unstuffing";
    in[0] = '.';
    in[1] = '.';
    memset(in + 2, 'y', 997);
    memcpy(in + 999, "\r\n.\r\n", 5);
    memcpy(out, in + 1, 1000);
    c.in_len = 1004; c.consumed = 1004; c.out = out; c.out_len = 1000;
    c.status = SMTP_DATA_OK; c.line = 0;
    run_case(&c);

    /* second line too long, first fine */
    c.name = "1001 on line 2";
    memcpy(in, "ok\r\n", 4);
    memset(in + 4, 'z', 999);
    memcpy(in + 1003, "\r\n.\r\n", 5);
    c.in = in; c.in_len = 1008; c.consumed = 1008; c.out = in; c.out_len = 1005;
    c.status = SMTP_DATA_LINE_TOO_LONG; c.line = 2;
    run_case(&c);
}

/* A terminator split across feeds, checked feed by feed. */
static void test_terminator_across_feeds(void **state)
{
    (void)state;
    struct sink_buf sb = { 0 };
    struct smtp_data_decoder dec;
    bool done;
    smtp_data_init(&dec, NULL, sink_collect, &sb);

    assert_int_equal(smtp_data_feed(&dec, "hello\r\n.", 8, &done), 8);
    assert_false(done);
    assert_int_equal(smtp_data_feed(&dec, "\r", 1, &done), 1);
    assert_false(done);
    assert_int_equal(smtp_data_feed(&dec, "", 0, &done), 0);
    assert_false(done);
    assert_int_equal(smtp_data_feed(&dec, "\nQUIT\r\n", 7, &done), 1);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_OK);
    assert_int_equal(sb.len, 7);
    assert_memory_equal(sb.data, "hello\r\n", 7);
    /* done_r is optional */
    assert_int_equal(smtp_data_feed(&dec, "x", 1, NULL), 0);
    sink_reset(&sb);

    /* ".\r" then not LF across feeds: the CR is emitted from the decoder */
    smtp_data_init(&dec, NULL, sink_collect, &sb);
    assert_int_equal(smtp_data_feed(&dec, "a\r\n.\r", 5, &done), 5);
    assert_int_equal(smtp_data_feed(&dec, "X\r\n.\r\n", 6, &done), 6);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_BARE_CR);
    assert_int_equal(smtp_data_problem_line(&dec), 2);
    assert_int_equal(sb.len, 7);
    assert_memory_equal(sb.data, "a\r\n\rX\r\n", 7);
    sink_reset(&sb);
}

/* Large runs must be emitted as runs, not a byte per call. */
static void test_emits_in_runs(void **state)
{
    (void)state;
    struct sink_buf sb = { 0 };
    struct smtp_data_decoder dec;
    const char *in = "line one\r\nline two\r\n..three\r\nfour\r\n.\r\n";
    smtp_data_init(&dec, NULL, sink_collect, &sb);
    assert_int_equal(smtp_data_feed(&dec, in, strlen(in), NULL), strlen(in));
    /* one run before the stuffing dot, one after */
    assert_int_equal(sb.calls, 2);
    assert_int_equal(sb.len, strlen(in) - 4);
    sink_reset(&sb);
}

/* NULL sink: validation and end detection only. */
static void test_null_sink(void **state)
{
    (void)state;
    struct smtp_data_decoder dec;
    bool done;
    smtp_data_init(&dec, NULL, NULL, NULL);
    assert_int_equal(smtp_data_feed(&dec, "a\r\n\n.\r\n.\r\nQUIT", 14, &done), 10);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_BARE_LF);
    assert_int_equal(smtp_data_size(&dec), 7);
}

static void test_sink_failure(void **state)
{
    (void)state;
    struct sink_buf sb = { .fail_at_call = 1 };
    struct smtp_data_decoder dec;
    bool done;
    const char *in = "a\r\n..b\r\nc\r\n.\r\nQUIT\r\n";

    smtp_data_init(&dec, NULL, sink_collect, &sb);
    /* keeps consuming to the terminator after the failure */
    assert_int_equal(smtp_data_feed(&dec, in, 4, &done), 4);
    assert_false(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_SINK_FAILED);
    assert_int_equal(smtp_data_feed(&dec, in + 4, strlen(in) - 4, &done), 14 - 4 + 0);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_SINK_FAILED);
    assert_int_equal(sb.calls, 1); /* never called again after -1 */
    assert_int_equal(sb.len, 0);
    struct smtp_reply_err r;
    assert_int_equal(smtp_data_reply(smtp_data_status(&dec), &r), 0);
    assert_int_equal(r.code, 451);
    assert_string_equal(r.enhanced, "4.3.0");
    sink_reset(&sb);

    /* failure on the second call: the first run arrived */
    sb.fail_at_call = 2;
    smtp_data_init(&dec, NULL, sink_collect, &sb);
    assert_int_equal(smtp_data_feed(&dec, in, strlen(in), &done), 14);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_SINK_FAILED);
    assert_int_equal(sb.calls, 2);
    assert_int_equal(sb.len, 3);
    sink_reset(&sb);

    /* a content problem outranks our own failure: the message is refused
     * with 5xx whatever our disk did */
    sb.fail_at_call = 1;
    smtp_data_init(&dec, NULL, sink_collect, &sb);
    assert_int_equal(smtp_data_feed(&dec, "x\r\ny\nz\r\n.\r\n", 11, &done), 11);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_BARE_LF);
    sink_reset(&sb);
}

static void test_reply(void **state)
{
    (void)state;
    static const struct {
        enum smtp_data_status st;
        int code;
        const char *enhanced;
    } map[] = {
        { SMTP_DATA_BARE_LF, 550, "5.6.0" },
        { SMTP_DATA_BARE_CR, 550, "5.6.0" },
        { SMTP_DATA_LINE_TOO_LONG, 500, "5.5.2" },
        { SMTP_DATA_TOO_BIG, 552, "5.3.4" },
        { SMTP_DATA_NUL, 550, "5.6.0" },
        { SMTP_DATA_SINK_FAILED, 451, "4.3.0" },
    };
    struct smtp_reply_err r = { 0 };
    assert_int_equal(smtp_data_reply(SMTP_DATA_OK, &r), -1);
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        assert_int_equal(smtp_data_reply(map[i].st, &r), 0);
        assert_int_equal(r.code, map[i].code);
        assert_string_equal(r.enhanced, map[i].enhanced);
        assert_int_equal(r.enhanced[0], '0' + r.code / 100); /* class agrees */
        assert_non_null(r.text);
        assert_null(strpbrk(r.text, "\r\n"));
        assert_string_not_equal(smtp_data_status_name(map[i].st), "unknown");
    }
    assert_non_null(strstr(smtp_data_reply(SMTP_DATA_BARE_LF, &r) == 0 ? r.text : "",
                           "bare CR or LF"));
}

/* ---- random differential: any split gives the same result -------------- */

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(0x2545f4914f6cdd1d);
}

static void test_random_splits(void **state)
{
    (void)state;
    static const char alphabet[] = { 'a', '.', '\r', '\n', '\r', '\n', '.', '\0' };
    char in[40];
    size_t cuts[40];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(rng() % sizeof(in));
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng() % sizeof(alphabet)];
        struct smtp_data_limits limits = {
            .max_line = (size_t)(rng() % 8), .max_size = rng() % 12,
            .allow_nul = rng() & 1 };
        struct result whole, split;
        decode_split(&limits, in, len, NULL, 0, &whole);
        size_t ncuts = len > 0 ? (size_t)(rng() % len) : 0;
        for (size_t i = 0; i < ncuts; i++)
            cuts[i] = (size_t)(rng() % (len + 1));
        /* sort the cuts */
        for (size_t i = 1; i < ncuts; i++)
            for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                size_t t = cuts[j];
                cuts[j] = cuts[j - 1];
                cuts[j - 1] = t;
            }
        decode_split(&limits, in, len, cuts, ncuts, &split);
        assert_int_equal(whole.status, split.status);
        assert_int_equal(whole.line, split.line);
        assert_int_equal(whole.consumed, split.consumed);
        assert_int_equal(whole.done, split.done);
        assert_int_equal(whole.size, split.size);
        assert_int_equal(whole.out.len, split.out.len);
        if (whole.out.len > 0)
            assert_memory_equal(whole.out.data, split.out.data, whole.out.len);
        assert_true(whole.out.len <= whole.consumed);
        if (limits.max_size != 0)
            assert_true(whole.out.len <= limits.max_size);
        sink_reset(&whole.out);
        sink_reset(&split.out);
    }
}

/* ---- 20 MB message in 64 KiB chunks ------------------------------------ */

struct verify_sink {
    const unsigned char *expect;
    size_t expect_len;
    size_t pos;
    size_t calls;
    bool mismatch;
};

static int sink_verify(void *ctx, const void *d, size_t n)
{
    struct verify_sink *v = ctx;
    v->calls++;
    if (v->pos + n > v->expect_len || memcmp(v->expect + v->pos, d, n) != 0)
        v->mismatch = true;
    v->pos += n;
    return 0;
}

static void test_20mb(void **state)
{
    (void)state;
    const size_t target = 20u * 1024 * 1024;
    /* wire form and expected decoded form, built together */
    unsigned char *wire = mx_malloc(target + 4096);
    unsigned char *plain = mx_malloc(target + 4096);
    size_t wl = 0, pl = 0;
    size_t lines = 0;
    while (wl < target) {
        size_t n = (size_t)(rng() % 999); /* text octets: <= 998 + CRLF */
        /* one line in 7 starts with a dot (forced), others by chance */
        bool dot = rng() % 7 == 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)(' ' + rng() % 95);
            if (i == 0 && dot)
                c = '.';
            if (i == 0 && c == '.')
                wire[wl++] = '.'; /* transparency dot */
            wire[wl++] = c;
            plain[pl++] = c;
        }
        memcpy(wire + wl, "\r\n", 2);
        memcpy(plain + pl, "\r\n", 2);
        wl += 2;
        pl += 2;
        lines++;
    }
    memcpy(wire + wl, ".\r\nQUIT\r\n", 9);
    size_t msg_end = wl + 3;
    wl += 9;

    struct verify_sink v = { .expect = plain, .expect_len = pl };
    struct smtp_data_limits limits = { .max_line = 1000, .max_size = 25u * 1024 * 1024 };
    struct smtp_data_decoder dec;
    smtp_data_init(&dec, &limits, sink_verify, &v);
    size_t pos = 0;
    bool done = false;
    while (!done) {
        size_t chunk = wl - pos < 65536 ? wl - pos : 65536;
        assert_true(chunk > 0);
        size_t n = smtp_data_feed(&dec, wire + pos, chunk, &done);
        pos += n;
    }
    assert_int_equal(pos, msg_end);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_OK);
    assert_false(v.mismatch);
    assert_int_equal(v.pos, pl);
    assert_int_equal(smtp_data_size(&dec), pl);
    /* runs, not bytes: at most ~2 calls per line plus one per chunk */
    assert_true(v.calls <= 2 * lines + wl / 65536 + 2);

    /* the same message with a limit of 10 MB: refused, sink capped */
    v = (struct verify_sink){ .expect = plain, .expect_len = pl };
    limits.max_size = 10u * 1024 * 1024;
    smtp_data_init(&dec, &limits, sink_verify, &v);
    pos = 0;
    done = false;
    while (!done) {
        size_t chunk = wl - pos < 65536 ? wl - pos : 65536;
        pos += smtp_data_feed(&dec, wire + pos, chunk, &done);
    }
    assert_int_equal(pos, msg_end);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_TOO_BIG);
    assert_false(v.mismatch);
    assert_int_equal(v.pos, limits.max_size);
    assert_int_equal(smtp_data_size(&dec), pl);

    free(wire);
    free(plain);
}

/* A 10 MB single line (the "client sends one endless line" attack) is
 * consumed in O(1) memory and refused as too long. */
static void test_endless_line(void **state)
{
    (void)state;
    static unsigned char chunk[65536];
    memset(chunk, 'A', sizeof(chunk));
    struct smtp_data_decoder dec;
    struct smtp_data_limits limits = { .max_line = 1000, .max_size = 20u * 1024 * 1024 };
    smtp_data_init(&dec, &limits, NULL, NULL);
    bool done = false;
    for (int i = 0; i < 160; i++)
        assert_int_equal(smtp_data_feed(&dec, chunk, sizeof(chunk), &done), sizeof(chunk));
    assert_false(done);
    assert_int_equal(smtp_data_feed(&dec, "\r\n.\r\n", 5, &done), 5);
    assert_true(done);
    assert_int_equal(smtp_data_status(&dec), SMTP_DATA_LINE_TOO_LONG);
    assert_int_equal(smtp_data_problem_line(&dec), 1);
}

/* ---- BDAT --------------------------------------------------------------- */

static void test_bdat_exact_chunks(void **state)
{
    (void)state;
    struct sink_buf sb = { 0 };
    struct smtp_bdat_reader rd;
    bool chunk_done;
    smtp_bdat_init(&rd, 0, sink_collect, &sb);

    /* first chunk: 10 bytes, followed by the pipelined next command */
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 10, false), 0);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 5, false), -1); /* still in a chunk */
    assert_int_equal(smtp_bdat_feed(&rd, "a\n.\r\n.\rxyzBDAT 3 LAST\r\n", 23, &chunk_done), 10);
    assert_true(chunk_done);
    /* LAST chunk fed in pieces */
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 3, true), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "\n", 1, &chunk_done), 1);
    assert_false(chunk_done);
    assert_false(rd.done);
    assert_int_equal(smtp_bdat_feed(&rd, "\r\nQUIT\r\n", 8, &chunk_done), 2);
    assert_true(chunk_done);
    assert_true(rd.done);
    assert_int_equal(smtp_bdat_status(&rd), SMTP_DATA_OK);
    /* no more chunks after LAST */
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 1, false), -1);
    assert_int_equal(smtp_bdat_feed(&rd, "zz", 2, &chunk_done), 0);

    /* verbatim: no dot removal, no terminator search */
    assert_int_equal(sb.len, 13);
    assert_memory_equal(sb.data, "a\n.\r\n.\rxyz\n\r\n", 13);
    /* stats: bare LF at 1, bare CR before x, bare LF ("z\n") = 2 LF, 1 CR */
    assert_int_equal(rd.bare_lf, 2);
    assert_int_equal(rd.bare_cr, 1);
    sink_reset(&sb);
}

static void test_bdat_cr_across_chunks(void **state)
{
    (void)state;
    struct smtp_bdat_reader rd;
    smtp_bdat_init(&rd, 0, NULL, NULL);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 2, false), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "a\r", 2, NULL), 2);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 2, false), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "\nb", 2, NULL), 2); /* CRLF across chunks */
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 1, true), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "\r", 1, NULL), 1); /* ends on CR */
    assert_true(rd.done);
    assert_int_equal(rd.bare_lf, 0);
    assert_int_equal(rd.bare_cr, 1);
    assert_int_equal(rd.size, 5);

    /* BDAT 0 LAST ends the message at once */
    smtp_bdat_init(&rd, 0, NULL, NULL);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 0, true), 0);
    assert_true(rd.done);
    assert_int_equal(smtp_bdat_status(&rd), SMTP_DATA_OK);
}

static void test_bdat_size_and_sink(void **state)
{
    (void)state;
    struct sink_buf sb = { 0 };
    struct smtp_bdat_reader rd;
    bool chunk_done;
    smtp_bdat_init(&rd, 6, sink_collect, &sb);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 4, false), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "abcd", 4, &chunk_done), 4);
    assert_int_equal(smtp_bdat_status(&rd), SMTP_DATA_OK);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 4, true), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "efgh", 4, &chunk_done), 4);
    assert_true(chunk_done);
    assert_int_equal(smtp_bdat_status(&rd), SMTP_DATA_TOO_BIG);
    assert_int_equal(sb.len, 6); /* capped at max_size */
    assert_memory_equal(sb.data, "abcdef", 6);
    assert_int_equal(rd.size, 8);
    sink_reset(&sb);

    sb.fail_at_call = 1;
    smtp_bdat_init(&rd, 0, sink_collect, &sb);
    assert_int_equal(smtp_bdat_begin_chunk(&rd, 6, true), 0);
    assert_int_equal(smtp_bdat_feed(&rd, "abc", 3, &chunk_done), 3);
    assert_int_equal(smtp_bdat_feed(&rd, "defQUIT", 7, &chunk_done), 3);
    assert_true(chunk_done);
    assert_int_equal(smtp_bdat_status(&rd), SMTP_DATA_SINK_FAILED);
    assert_int_equal(sb.calls, 1);
    sink_reset(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_line_length_1000),
        cmocka_unit_test(test_terminator_across_feeds),
        cmocka_unit_test(test_emits_in_runs),
        cmocka_unit_test(test_null_sink),
        cmocka_unit_test(test_sink_failure),
        cmocka_unit_test(test_reply),
        cmocka_unit_test(test_random_splits),
        cmocka_unit_test(test_20mb),
        cmocka_unit_test(test_endless_line),
        cmocka_unit_test(test_bdat_exact_chunks),
        cmocka_unit_test(test_bdat_cr_across_chunks),
        cmocka_unit_test(test_bdat_size_and_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
