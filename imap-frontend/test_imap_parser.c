/* test_imap_parser - the IMAP command reader (framing, literals, limits)
 * and the command parser (tag, name, argument tree).
 *
 * Reader cases are run on the whole input, one byte at a time, in random
 * chunk sizes and through an evbuffer split into many chains, and must
 * produce the same transcript of events each time: a reader that only
 * works when a literal header arrives in one read is a desync bug. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <malloc.h>

#include "imap_parser.h"
#include "mx_alloc.h"

/* ---- transcript of reader events ------------------------------------------ */

struct transcript {
    char *data;
    size_t len, cap;
    size_t events;
};

static void tr_add(struct transcript *t, const void *d, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->data = mx_realloc(t->data, t->cap);
    }
    memcpy(t->data + t->len, d, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void tr_free(struct transcript *t)
{
    free(t->data);
    memset(t, 0, sizeof(*t));
}

static const char *status_name(enum imap_read_status st)
{
    switch (st) {
    case IMAP_READ_NEED_MORE: return "MORE";
    case IMAP_READ_COMMAND: return "CMD";
    case IMAP_READ_NEED_CONTINUATION: return "CONT";
    case IMAP_READ_LINE_TOO_LONG: return "LONG";
    case IMAP_READ_LITERAL_TOO_BIG: return "TOOBIG";
    case IMAP_READ_RAW_LINE: return "RAW";
    case IMAP_READ_FATAL: return "FATAL";
    }
    return "?";
}

/* record - one event: its name, then the command bytes or the tag. */
static void record(struct transcript *t, struct imap_reader *r, enum imap_read_status st)
{
    char head[64];
    t->events++;
    if (st == IMAP_READ_COMMAND || st == IMAP_READ_RAW_LINE) {
        size_t len;
        const char *cmd = imap_reader_command(r, &len);
        assert_int_equal(cmd[len], '\0');
        snprintf(head, sizeof(head), "%s(%zu)[", status_name(st), len);
        tr_add(t, head, strlen(head));
        tr_add(t, cmd, len);
        tr_add(t, "]", 1);
        return;
    }
    snprintf(head, sizeof(head), "%s", status_name(st));
    tr_add(t, head, strlen(head));
    if (st != IMAP_READ_NEED_CONTINUATION) {
        size_t tl;
        const char *tag = imap_reader_tag(r, &tl);
        tr_add(t, "<", 1);
        if (tag != NULL)
            tr_add(t, tag, tl);
        else
            tr_add(t, "-", 1);
        tr_add(t, ">", 1);
    }
}

/* What a test wants from a run. The raw-line mode is entered after every
 * command whose text ends in " IDLE", as a session would. */
struct run_opts {
    struct imap_reader_limits limits;
    enum imap_literal_mode mode;
};

static void after_event(struct imap_reader *r, enum imap_read_status st)
{
    if (st == IMAP_READ_COMMAND) {
        size_t len;
        const char *cmd = imap_reader_command(r, &len);
        if (len >= 5 && memcmp(cmd + len - 5, " IDLE", 5) == 0)
            imap_reader_want_raw_line(r);
    }
}

static uint64_t rng_state;

static uint32_t rng_next(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* run_chunks - feed input in chunks: chunk 0 = whole, 1 = bytes, 2 = random. */
static void run_chunks(const char *in, size_t len, const struct run_opts *o, int chunking,
                       struct transcript *t)
{
    struct imap_reader *r = imap_reader_new(&o->limits);
    imap_reader_set_literal_mode(r, o->mode);
    size_t pos = 0;
    bool fatal = false;
    while (pos < len && !fatal) {
        size_t n = len - pos;
        if (chunking == 1)
            n = 1;
        else if (chunking == 2)
            n = 1 + rng_next() % 17;
        if (n > len - pos)
            n = len - pos;
        size_t off = 0;
        while (off < n) {
            size_t used = 0;
            enum imap_read_status st = imap_reader_read(r, in + pos + off, n - off, &used);
            assert_true(used <= n - off);
            off += used;
            if (st == IMAP_READ_NEED_MORE) {
                assert_int_equal(off, n);
                break;
            }
            record(t, r, st);
            after_event(r, st);
            if (st == IMAP_READ_FATAL) {
                fatal = true;
                break;
            }
        }
        pos += n;
    }
    imap_reader_free(r);
}

static void run_evbuffer(const char *in, size_t len, const struct run_opts *o,
                         struct transcript *t)
{
    struct imap_reader *r = imap_reader_new(&o->limits);
    imap_reader_set_literal_mode(r, o->mode);
    struct evbuffer *eb = evbuffer_new();
    /* Many small chains, added all at once: the reader must walk them. */
    for (size_t pos = 0; pos < len;) {
        size_t n = 1 + rng_next() % 7;
        if (n > len - pos)
            n = len - pos;
        struct evbuffer *piece = evbuffer_new();
        evbuffer_add(piece, in + pos, n);
        evbuffer_add_buffer(eb, piece);
        evbuffer_free(piece);
        pos += n;
    }
    for (;;) {
        enum imap_read_status st = imap_reader_read_evbuffer(r, eb);
        if (st == IMAP_READ_NEED_MORE) {
            assert_int_equal(evbuffer_get_length(eb), 0);
            break;
        }
        record(t, r, st);
        after_event(r, st);
        if (st == IMAP_READ_FATAL)
            break;
    }
    evbuffer_free(eb);
    imap_reader_free(r);
}

/* expect_transcript - every way of feeding gives exactly `expected`. */
static void expect_transcript_n(const char *in, size_t len, const struct run_opts *o,
                                const char *expected, size_t expected_len)
{
    for (int chunking = 0; chunking < 4; chunking++) {
        for (int rep = 0; rep < (chunking == 2 ? 20 : 1); rep++) {
            struct transcript t = { 0 };
            rng_state = (uint64_t)rep * 7919u + 1u;
            if (chunking == 3)
                run_evbuffer(in, len, o, &t);
            else
                run_chunks(in, len, o, chunking, &t);
            if (t.len != expected_len ||
                (expected_len > 0 && memcmp(t.data, expected, expected_len) != 0)) {
                print_error("chunking %d rep %d:\n got: %s\nwant: %s\n", chunking, rep,
                            t.data ? t.data : "", expected);
                fail();
            }
            tr_free(&t);
        }
    }
}

static void expect_transcript(const char *in, const struct run_opts *o, const char *expected)
{
    expect_transcript_n(in, strlen(in), o, expected, strlen(expected));
}

static const struct run_opts default_opts = { { 0, 0, 0, 0 }, IMAP_LITERAL_SYNC_ONLY };

/* ---- reader tests ----------------------------------------------------------- */

static void test_reader_simple_and_bare_lf(void **state)
{
    (void)state;
    expect_transcript("a1 NOOP\r\n", &default_opts, "CMD(7)[a1 NOOP]");
    expect_transcript("a1 NOOP\n", &default_opts, "CMD(7)[a1 NOOP]");
    /* pipelined: one command per call */
    expect_transcript("a NOOP\r\nb CAPABILITY\nc LOGOUT\r\n", &default_opts,
                      "CMD(6)[a NOOP]CMD(12)[b CAPABILITY]CMD(8)[c LOGOUT]");
    /* an empty line is a (bad) command of its own, not swallowed */
    expect_transcript("\r\na NOOP\r\n", &default_opts, "CMD(0)[]CMD(6)[a NOOP]");
    /* incomplete: nothing reported */
    expect_transcript("a NOOP", &default_opts, "");
    /* a bare CR stays in the text (the parser refuses it) */
    expect_transcript("a NO\rOP\r\n", &default_opts, "CMD(7)[a NO\rOP]");
}

static void test_reader_sync_literals(void **state)
{
    (void)state;
    static const char want[] = "CONTCONTCMD(28)[a LOGIN {3}\r\nfoo\0 {4}\r\nb\"r)\0]";
    expect_transcript_n("a LOGIN {3}\r\nfoo {4}\nb\"r)\r\n", 27, &default_opts, want,
                        sizeof(want) - 1);
    /* a zero-length literal still needs its continuation */
    static const char want0[] = "CONTCMD(12)[a X {0}\r\n\0 b]";
    expect_transcript_n("a X {0}\r\n b\r\n", 13, &default_opts, want0, sizeof(want0) - 1);
    /* literal bytes are not scanned: CRLF and "{5}" inside are data */
    static const char want2[] = "CONTCMD(17)[a X {7}\r\n{5}\r\nab\0]";
    expect_transcript_n("a X {7}\r\n{5}\r\nab\r\n", 18, &default_opts, want2,
                        sizeof(want2) - 1);
}

static void test_reader_literal_positions(void **state)
{
    (void)state;
    struct imap_reader *r = imap_reader_new(NULL);
    imap_reader_set_literal_mode(r, IMAP_LITERAL_PLUS);
    static const char in[] = "t APPEND box ~{3+}\r\na\0b {2}\r\nxy\r\n";
    size_t used, total = 0;
    enum imap_read_status st = imap_reader_read(r, in, sizeof(in) - 1, &used);
    assert_int_equal(st, IMAP_READ_NEED_CONTINUATION);
    total += used;
    st = imap_reader_read(r, in + total, sizeof(in) - 1 - total, &used);
    assert_int_equal(st, IMAP_READ_COMMAND);
    total += used;
    assert_int_equal(total, sizeof(in) - 1);
    size_t n, len;
    const struct imap_literal_pos *lp = imap_reader_literals(r, &n);
    const char *cmd = imap_reader_command(r, &len);
    assert_int_equal(n, 2);
    assert_true(lp[0].literal8 && !lp[0].sync);
    assert_int_equal(lp[0].len, 3);
    assert_memory_equal(cmd + lp[0].offset, "a\0b", 3);
    assert_true(!lp[1].literal8 && lp[1].sync);
    assert_memory_equal(cmd + lp[1].offset, "xy", 3); /* with its NUL */

    struct imap_command c;
    assert_int_equal(imap_parse_command(cmd, len, NULL, &c), 0);
    assert_string_equal(c.name, "APPEND");
    assert_int_equal(c.n_args, 3);
    assert_int_equal(c.args[1].type, IMAP_ARG_LITERAL8);
    assert_int_equal(c.args[1].len, 3);
    assert_memory_equal(c.args[1].str, "a\0b", 3);
    assert_int_equal(c.args[2].type, IMAP_ARG_LITERAL);
    assert_string_equal(c.args[2].str, "xy");
    imap_command_free(&c);
    imap_reader_free(r);
}

static void test_reader_literal_plus_minus(void **state)
{
    (void)state;
    struct run_opts plus = { { 0, 0, 0, 0 }, IMAP_LITERAL_PLUS };
    struct run_opts minus = { { 0, 0, 0, 0 }, IMAP_LITERAL_MINUS };
    static const char want[] = "CMD(27)[a LOGIN {3+}\r\nfoo\0 {1+}\r\nb\0]";
    expect_transcript_n("a LOGIN {3+}\r\nfoo {1+}\r\nb\r\n", 27, &plus, want, sizeof(want) - 1);
    expect_transcript_n("a LOGIN {3+}\r\nfoo {1+}\r\nb\r\n", 27, &minus, want, sizeof(want) - 1);
    /* {n+} without LITERAL+/- advertised: the bytes come anyway */
    expect_transcript("a LOGIN {3+}\r\nfoo\r\n", &default_opts, "FATAL<a>");
    /* LITERAL-: 4096 is fine, 4097 fatal; a synchronizing 4097 is fine */
    char *big = mx_malloc(8192);
    memset(big, 'x', 8192);
    char *in = mx_asprintf("a APPEND b {4096+}\r\n%.4096s\r\n", big);
    struct transcript t = { 0 };
    run_chunks(in, strlen(in), &minus, 0, &t);
    assert_int_equal(t.events, 1);
    assert_memory_equal(t.data, "CMD(", 4);
    tr_free(&t);
    free(in);
    expect_transcript("a APPEND b {4097+}\r\n", &minus, "FATAL<a>");
    in = mx_asprintf("a APPEND b {4097}\r\n%.4097s\r\n", big);
    run_chunks(in, strlen(in), &minus, 2, &t);
    assert_int_equal(t.events, 2);
    assert_memory_equal(t.data, "CONTCMD(4117)[", 14);
    tr_free(&t);
    free(in);
    free(big);
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void test_reader_huge_literal_no_allocation(void **state)
{
    (void)state;
    struct run_opts plus = { { 0, 0, 0, 0 }, IMAP_LITERAL_PLUS };
    size_t before = heap_in_use();
    struct imap_reader *r = imap_reader_new(NULL);
    size_t used;
    static const char a[] = "a APPEND INBOX {4294967295}\r\n";
    assert_int_equal(imap_reader_read(r, a, strlen(a), &used), IMAP_READ_LITERAL_TOO_BIG);
    assert_int_equal(used, strlen(a));
    assert_non_null(strstr(imap_reader_error(r), "4294967295"));
    size_t tl;
    const char *tag = imap_reader_tag(r, &tl);
    assert_non_null(tag);
    assert_int_equal(tl, 1);
    /* the huge size was never allocated (ASan hides mallinfo: then 0) */
    assert_true(heap_in_use() < before + 1024 * 1024);
    static const char b[] = "b APPEND INBOX {99999999999999999999}\r\nc NOOP\r\n";
    assert_int_equal(imap_reader_read(r, b, strlen(b), &used), IMAP_READ_LITERAL_TOO_BIG);
    assert_true(heap_in_use() < before + 1024 * 1024);
    assert_int_equal(imap_reader_read(r, b + used, strlen(b) - used, &used),
                     IMAP_READ_COMMAND);
    imap_reader_free(r);

    expect_transcript("a APPEND INBOX {4294967295}\r\nb NOOP\r\n", &default_opts,
                      "TOOBIG<a>CMD(6)[b NOOP]");
    expect_transcript("a APPEND INBOX {99999999999999999999}\r\nb NOOP\r\n", &default_opts,
                      "TOOBIG<a>CMD(6)[b NOOP]");
    expect_transcript("a APPEND INBOX {99999999999999999999+}\r\n", &plus, "FATAL<a>");
    expect_transcript("a APPEND INBOX ~{4294967296}\r\n", &default_opts, "TOOBIG<a>");
    /* configured limit, and the whole-command limit */
    struct run_opts small = { { 200, 100, 300, 0 }, IMAP_LITERAL_PLUS };
    expect_transcript("a APPEND b {101}\r\nc NOOP\r\n", &small, "TOOBIG<a>CMD(6)[c NOOP]");
    expect_transcript("a APPEND b {101+}\r\n", &small, "FATAL<a>");
    char in[400];
    char lit[101];
    memset(lit, 'y', 100);
    lit[100] = '\0';
    snprintf(in, sizeof(in), "a X {100+}\r\n%s {100+}\r\n%s {100}\r\n", lit, lit);
    struct transcript t = { 0 };
    run_chunks(in, strlen(in), &small, 1, &t);
    assert_string_equal(t.data, "TOOBIG<a>");
    tr_free(&t);
}

/* A big literal's buffer grows with the bytes received (nothing on the
 * announcement alone) and ends near its size, not at the next power of 2. */
static void test_reader_literal_memory(void **state)
{
    (void)state;
    size_t lit = 3000000;
    char *chunk = mx_malloc(65536);
    memset(chunk, 'm', 65536);
    size_t before = heap_in_use();
    struct imap_reader *r = imap_reader_new(NULL);
    char head[64];
    int hl = snprintf(head, sizeof(head), "a APPEND INBOX {%zu}\r\n", lit);
    size_t used;
    assert_int_equal(imap_reader_read(r, head, (size_t)hl, &used), IMAP_READ_NEED_CONTINUATION);
    assert_true(heap_in_use() < before + 64 * 1024);
    size_t sent = 0;
    while (sent < lit) {
        size_t n = lit - sent < 65536 ? lit - sent : 65536;
        assert_int_equal(imap_reader_read(r, chunk, n, &used), IMAP_READ_NEED_MORE);
        assert_int_equal(used, n);
        sent += n;
    }
    assert_int_equal(imap_reader_read(r, "\r\n", 2, &used), IMAP_READ_COMMAND);
    size_t len;
    imap_reader_command(r, &len);
    assert_int_equal(len, (size_t)hl + lit + 1);
    assert_true(heap_in_use() < before + lit + lit / 8);
    /* released before the next command */
    assert_int_equal(imap_reader_read(r, "b NOOP\r\n", 8, &used), IMAP_READ_COMMAND);
    assert_true(heap_in_use() < before + 256 * 1024);
    imap_reader_free(r);
    free(chunk);
}

static void test_reader_line_too_long(void **state)
{
    (void)state;
    struct run_opts o = { { 16, 0, 0, 0 }, IMAP_LITERAL_SYNC_ONLY };
    /* exactly 16 octets of text: fine, with CRLF or LF */
    expect_transcript("t 34567890123456\r\n", &o, "CMD(16)[t 34567890123456]");
    expect_transcript("t 34567890123456\n", &o, "CMD(16)[t 34567890123456]");
    /* 17: too long; the tag is known, the rest of the line is dropped and
     * the next command is read normally */
    expect_transcript("t 345678901234567\r\nu NOOP\r\n", &o, "LONG<t>CMD(6)[u NOOP]");
    expect_transcript("t 3456789012345678901234567890\r\nu NOOP\r\n", &o,
                      "LONG<t>CMD(6)[u NOOP]");
    /* no space within the limit: no tag ("* BAD") */
    expect_transcript("abcdefghijklmnopqrstuvwxyz\r\nu NOOP\r\n", &o, "LONG<->CMD(6)[u NOOP]");
    /* the line after a literal is limited too, and the tag still known */
    expect_transcript("t X {2}\r\nab 34567890123456789\r\nu NOOP\r\n", &o,
                      "CONTLONG<t>CMD(6)[u NOOP]");
    /* a huge line never gets buffered */
    size_t n = 1u << 20;
    char *big = mx_malloc(n + 16);
    memcpy(big, "t ", 2);
    memset(big + 2, 'A', n);
    memcpy(big + 2 + n, "\r\nu NOOP\r\n", 10);
    struct imap_reader *r = imap_reader_new(&o.limits);
    size_t used;
    assert_int_equal(imap_reader_read(r, big, 2 + n, &used), IMAP_READ_LINE_TOO_LONG);
    assert_int_equal(used, 2 + n);
    assert_true(imap_reader_buffered(r) <= 17);
    assert_int_equal(imap_reader_read(r, big + 2 + n, 10, &used), IMAP_READ_COMMAND);
    imap_reader_free(r);
    free(big);
}

static void test_reader_many_tiny_literals(void **state)
{
    (void)state;
    struct run_opts plus = { { 0, 0, 0, 0 }, IMAP_LITERAL_PLUS };
    size_t count = 10000;
    char *in = mx_malloc(count * 8 + 32);
    size_t len = (size_t)sprintf(in, "a APPEND INBOX");
    for (size_t i = 0; i < count; i++)
        len += (size_t)sprintf(in + len, " {0+}\r\n");
    len += (size_t)sprintf(in + len, "\r\n");
    struct imap_reader *r = imap_reader_new(NULL);
    imap_reader_set_literal_mode(r, IMAP_LITERAL_PLUS);
    size_t used;
    assert_int_equal(imap_reader_read(r, in, len, &used), IMAP_READ_FATAL);
    assert_non_null(strstr(imap_reader_error(r), "1000"));
    /* it stopped at literal 1001: the 1000 accepted ones are small */
    assert_true(used < 1002 * 7 + 20);
    imap_reader_free(r);

    struct transcript t = { 0 };
    run_chunks(in, len, &plus, 0, &t);
    assert_string_equal(t.data, "FATAL<a>");
    tr_free(&t);

    /* 1000 is fine: the parser gets 1000 empty literals */
    struct run_opts lim = { { 0, 0, 0, 0 }, IMAP_LITERAL_PLUS };
    r = imap_reader_new(&lim.limits);
    imap_reader_set_literal_mode(r, IMAP_LITERAL_PLUS);
    len = (size_t)sprintf(in, "a APPEND INBOX");
    for (size_t i = 0; i < 1000; i++)
        len += (size_t)sprintf(in + len, " {0+}\r\n");
    len += (size_t)sprintf(in + len, "\r\n");
    assert_int_equal(imap_reader_read(r, in, len, &used), IMAP_READ_COMMAND);
    size_t clen;
    const char *cmd = imap_reader_command(r, &clen);
    struct imap_command c;
    assert_int_equal(imap_parse_command(cmd, clen, NULL, &c), 0);
    assert_int_equal(c.n_args, 1001);
    assert_int_equal(c.args[1000].type, IMAP_ARG_LITERAL);
    assert_int_equal(c.args[1000].len, 0);
    imap_command_free(&c);
    imap_reader_free(r);
    free(in);

    /* synchronizing: TOOBIG at 1001, no FATAL */
    in = mx_malloc(1002 * 6 + 64);
    len = (size_t)sprintf(in, "a X");
    for (size_t i = 0; i < 1001; i++)
        len += (size_t)sprintf(in + len, " {0}\n");
    len += (size_t)sprintf(in + len, "\nb NOOP\n");
    run_chunks(in, len, &default_opts, 0, &t);
    assert_int_equal(t.events, 1000 + 1 + 2);
    assert_non_null(strstr(t.data, "TOOBIG<a>"));
    tr_free(&t);
    free(in);
}

static void test_reader_raw_line(void **state)
{
    (void)state;
    /* after IDLE the session asks for a raw line: "DONE", and a line that
     * looks like a literal is not treated as one */
    expect_transcript("a IDLE\r\nDONE\r\nb NOOP\r\n", &default_opts,
                      "CMD(6)[a IDLE]RAW(4)[DONE]CMD(6)[b NOOP]");
    static const char want[] = "CMD(6)[a IDLE]RAW(7)[abc {5}]CONTCMD(14)[b NOOP {1}\r\nx\0]";
    expect_transcript_n("a IDLE\r\nabc {5}\r\nb NOOP {1}\r\nx\r\n", 32, &default_opts, want,
                        sizeof(want) - 1);
    struct run_opts o = { { 8, 0, 0, 0 }, IMAP_LITERAL_SYNC_ONLY };
    expect_transcript("a IDLE\r\nDONEDONEDONE\r\nb NOOP\r\n", &o,
                      "CMD(6)[a IDLE]LONG<->CMD(6)[b NOOP]");
}

static void test_reader_split_everywhere(void **state)
{
    (void)state;
    /* every 2-way split of a mixed input gives the whole-input transcript */
    static const char in[] = "a LOGIN {3}\r\nfoo bar\r\nb IDLE\nDONE\r\n"
                             "c APPEND x ~{4}\r\nab\r\n\r\nd NOOP\r\n";
    size_t len = sizeof(in) - 1;
    struct transcript whole = { 0 };
    run_chunks(in, len, &default_opts, 0, &whole);
    assert_true(whole.events == 7);
    for (size_t cut = 1; cut < len; cut++) {
        struct imap_reader *r = imap_reader_new(NULL);
        struct transcript t = { 0 };
        const char *parts[2] = { in, in + cut };
        size_t lens[2] = { cut, len - cut };
        for (int k = 0; k < 2; k++) {
            size_t off = 0;
            while (off < lens[k]) {
                size_t used;
                enum imap_read_status st = imap_reader_read(r, parts[k] + off, lens[k] - off,
                                                            &used);
                off += used;
                if (st == IMAP_READ_NEED_MORE)
                    break;
                record(&t, r, st);
                after_event(r, st);
            }
        }
        assert_int_equal(t.len, whole.len);
        assert_memory_equal(t.data, whole.data, whole.len);
        tr_free(&t);
        imap_reader_free(r);
    }
    tr_free(&whole);
}

/* ---- parser tests ------------------------------------------------------------ */

static int parse(const char *text, struct imap_command *c)
{
    return imap_parse_command(text, strlen(text), NULL, c);
}

static void expect_error(const char *text, const char *tag, const char *error_part)
{
    struct imap_command c;
    if (parse(text, &c) == 0) {
        print_error("parsed, but should fail: %s\n", text);
        fail();
    }
    if (tag == NULL)
        assert_null(c.tag);
    else
        assert_string_equal(c.tag, tag);
    if (strstr(c.error, error_part) == NULL) {
        print_error("%s: error \"%s\" lacks \"%s\"\n", text, c.error, error_part);
        fail();
    }
    imap_command_free(&c);
}

static void test_parse_tag_and_name(void **state)
{
    (void)state;
    struct imap_command c;
    assert_int_equal(parse("A1 uid fetch 1:* (FLAGS)", &c), 0);
    assert_string_equal(c.tag, "A1");
    assert_string_equal(c.name, "FETCH");
    assert_true(c.uid);
    assert_int_equal(c.n_args, 2);
    assert_int_equal(c.args[0].type, IMAP_ARG_ATOM);
    assert_string_equal(c.args[0].str, "1:*");
    assert_int_equal(c.args[1].type, IMAP_ARG_LIST);
    assert_int_equal(c.args[1].n_list, 1);
    assert_string_equal(c.args[1].list[0].str, "FLAGS");
    imap_command_free(&c);

    assert_int_equal(parse("x]y noop", &c), 0); /* ']' is an ASTRING-CHAR */
    assert_string_equal(c.tag, "x]y");
    assert_string_equal(c.name, "NOOP");
    assert_false(c.uid);
    assert_int_equal(c.n_args, 0);
    imap_command_free(&c);

    expect_error("+a NOOP", NULL, "invalid tag");
    expect_error("a+b NOOP", NULL, "invalid tag");
    expect_error("a*b NOOP", NULL, "invalid tag");
    expect_error("", NULL, "invalid tag");
    expect_error(" NOOP", NULL, "invalid tag");
    expect_error("a\xc3\xa9 NOOP", NULL, "invalid tag");
    expect_error("tag", "tag", "missing command name");
    expect_error("tag ", "tag", "missing command name");
    expect_error("tag UID", "tag", "missing command after UID");
    expect_error("tag UID ", "tag", "missing command name");
    expect_error("tag NO(OP", "tag", "unexpected '('");
    expect_error("tag AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "tag", "command name too long");
    expect_error("tag NOOP ", "tag", "missing argument");
    expect_error("tag  NOOP", "tag", "missing command name");
}

static void test_parse_atoms_and_strings(void **state)
{
    (void)state;
    struct imap_command c;
    assert_int_equal(parse("a STORE 1 +FLAGS.SILENT (\\Seen \\Deleted $Junk) nil \"NIL\"", &c),
                     0);
    assert_int_equal(c.n_args, 5);
    assert_string_equal(c.args[1].str, "+FLAGS.SILENT");
    assert_int_equal(c.args[2].n_list, 3);
    assert_string_equal(c.args[2].list[0].str, "\\Seen");
    assert_string_equal(c.args[2].list[2].str, "$Junk");
    assert_int_equal(c.args[3].type, IMAP_ARG_NIL);
    assert_int_equal(c.args[4].type, IMAP_ARG_QUOTED); /* "NIL" is a string */
    imap_command_free(&c);

    assert_int_equal(parse("a LOGIN \"us\\\"er\" \"p\\\\w d\" \"\"", &c), 0);
    assert_string_equal(c.args[0].str, "us\"er");
    assert_int_equal(c.args[0].len, 5);
    assert_string_equal(c.args[1].str, "p\\w d");
    assert_int_equal(c.args[2].type, IMAP_ARG_QUOTED);
    assert_int_equal(c.args[2].len, 0);
    imap_command_free(&c);

    /* list wildcards and brackets in mailbox names are plain atom text */
    assert_int_equal(parse("a LIST \"\" %/foo[1]*", &c), 0);
    assert_string_equal(c.args[1].str, "%/foo[1]*");
    assert_false(c.args[1].has_section);
    imap_command_free(&c);

    expect_error("a X \"ab\\n\"", "a", "invalid escape");
    expect_error("a X \"ab", "a", "unterminated quoted string at offset 4");
    expect_error("a X \"ab\\", "a", "unterminated quoted string");
    expect_error("a X \"a\rb\"", "a", "CR or LF in quoted string");
    expect_error("a X \"caf\xc3\xa9\"", "a", "8-bit character in quoted string");
    expect_error("a X caf\xc3\xa9", "a", "8-bit character in atom at offset 7");
    expect_error("a X a\\b", "a", "'\\' inside atom");
    expect_error("a X a\x01", "a", "control character 0x01");
    expect_error("a X \"a\"b", "a", "expected space at offset 7");
    expect_error("a X a  b", "a", "unexpected space at offset 5");
    expect_error("a X a{3}", "a", "expected space");
}

static void test_parse_nul(void **state)
{
    (void)state;
    struct imap_command c;
    static const char atom[] = "a X ab\0c";
    assert_int_equal(imap_parse_command(atom, sizeof(atom) - 1, NULL, &c), -1);
    assert_non_null(strstr(c.error, "NUL character in atom at offset 6"));
    imap_command_free(&c);
    static const char quoted[] = "a X \"a\0\"";
    assert_int_equal(imap_parse_command(quoted, sizeof(quoted) - 1, NULL, &c), -1);
    assert_non_null(strstr(c.error, "NUL in quoted string"));
    imap_command_free(&c);
    static const char lit[] = "a X {3}\r\na\0b\0";
    assert_int_equal(imap_parse_command(lit, sizeof(lit) - 1, NULL, &c), -1);
    assert_non_null(strstr(c.error, "NUL in literal"));
    imap_command_free(&c);
    static const char lit8[] = "a X ~{3}\r\na\0b\0";
    assert_int_equal(imap_parse_command(lit8, sizeof(lit8) - 1, NULL, &c), 0);
    assert_int_equal(c.args[0].type, IMAP_ARG_LITERAL8);
    imap_command_free(&c);
    static const char tag[] = "a\0 NOOP";
    assert_int_equal(imap_parse_command(tag, sizeof(tag) - 1, NULL, &c), -1);
    assert_null(c.tag);
    imap_command_free(&c);
}

static void test_parse_literal_framing(void **state)
{
    (void)state;
    struct imap_command c;
    static const char ok[] = "a LOGIN {3+}\r\nfoo\0 {0}\r\n\0";
    assert_int_equal(imap_parse_command(ok, sizeof(ok) - 1, NULL, &c), 0);
    assert_int_equal(c.n_args, 2);
    assert_string_equal(c.args[0].str, "foo");
    assert_int_equal(c.args[1].len, 0);
    imap_command_free(&c);
    struct {
        const char *text;
        size_t len;
        const char *error;
    } bad[] = {
        { "a X {3}\r\nfo", 11, "truncated literal" },
        { "a X {3}\r\nfoo", 12, "truncated literal" },
        { "a X {3}\r\nfoox", 13, "truncated literal" },
        { "a X {3}", 7, "invalid literal" },
        { "a X {}\r\n\0", 9, "invalid literal" },
        { "a X {3-}\r\nfoo\0", 14, "invalid literal" },
        { "a X {4294967296}\r\n", 18, "literal size too large" },
        { "a X {99999999999999999999999}\r\n", 31, "literal size too large" },
        { "a X {3}\r\nfoo\0x", 14, "expected space" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(imap_parse_command(bad[i].text, bad[i].len, NULL, &c), -1);
        if (strstr(c.error, bad[i].error) == NULL) {
            print_error("case %zu: \"%s\" lacks \"%s\"\n", i, c.error, bad[i].error);
            fail();
        }
        assert_string_equal(c.tag, "a");
        imap_command_free(&c);
    }
}

static void test_parse_lists(void **state)
{
    (void)state;
    struct imap_command c;
    assert_int_equal(parse("a X () (()) (a (b \"c\") NIL)", &c), 0);
    assert_int_equal(c.n_args, 3);
    assert_int_equal(c.args[0].type, IMAP_ARG_LIST);
    assert_int_equal(c.args[0].n_list, 0);
    assert_int_equal(c.args[1].n_list, 1);
    assert_int_equal(c.args[1].list[0].n_list, 0);
    const struct imap_arg *l = &c.args[2];
    assert_int_equal(l->n_list, 3);
    assert_int_equal(l->list[1].type, IMAP_ARG_LIST);
    assert_string_equal(l->list[1].list[1].str, "c");
    assert_int_equal(l->list[2].type, IMAP_ARG_NIL);
    imap_command_free(&c);

    expect_error("a X (a b", "a", "unbalanced parenthesis at offset 4");
    expect_error("a X (a (b)", "a", "unbalanced parenthesis at offset 4");
    expect_error("a X a)", "a", "unbalanced parenthesis at offset 5");
    expect_error("a X (a))", "a", "unbalanced parenthesis at offset 7");
    expect_error("a X )", "a", "unbalanced parenthesis at offset 4");
    expect_error("a X ( a)", "a", "unexpected space");
    expect_error("a X (a )", "a", "unexpected space");
    expect_error("a X (a)(b)", "a", "expected space");
}

static void test_parse_depth_limit(void **state)
{
    (void)state;
    struct imap_command c;
    char buf[128];
    /* 32 levels: fine; 33: refused */
    int n = snprintf(buf, sizeof(buf), "a X %.32s%.32s", "((((((((((((((((((((((((((((((((",
                     "))))))))))))))))))))))))))))))))");
    assert_int_equal(imap_parse_command(buf, (size_t)n, NULL, &c), 0);
    imap_command_free(&c);
    n = snprintf(buf, sizeof(buf), "a X (%.32s%.32s)", "((((((((((((((((((((((((((((((((",
                 "))))))))))))))))))))))))))))))))");
    assert_int_equal(imap_parse_command(buf, (size_t)n, NULL, &c), -1);
    assert_non_null(strstr(c.error, "nested too deeply at offset 36"));
    imap_command_free(&c);
    struct imap_parse_options opts = { .max_depth = 2 };
    assert_int_equal(imap_parse_command("a X ((x))", 9, &opts, &c), 0);
    imap_command_free(&c);
    assert_int_equal(imap_parse_command("a X (((x)))", 11, &opts, &c), -1);
    imap_command_free(&c);

    /* 10,000 '(' : refused at once, without deep recursion */
    size_t len = 4 + 10000;
    char *deep = mx_malloc(len + 1);
    memcpy(deep, "a X ", 4);
    memset(deep + 4, '(', 10000);
    deep[len] = '\0';
    assert_int_equal(imap_parse_command(deep, len, NULL, &c), -1);
    assert_string_equal(c.tag, "a");
    assert_non_null(strstr(c.error, "nested too deeply"));
    imap_command_free(&c);
    free(deep);
}

static void test_parse_sections(void **state)
{
    (void)state;
    struct imap_command c;
    assert_int_equal(parse("a FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM \"TO\")]<0.100> body[] "
                           "BINARY.SIZE[1] BODY[1.2.MIME] BODY)",
                           &c),
                     0);
    const struct imap_arg *l = &c.args[1];
    assert_int_equal(l->n_list, 5);
    const struct imap_arg *b = &l->list[0];
    assert_string_equal(b->str, "BODY.PEEK");
    assert_true(b->has_section);
    assert_int_equal(b->n_section, 2);
    assert_string_equal(b->section[0].str, "HEADER.FIELDS");
    assert_int_equal(b->section[1].type, IMAP_ARG_LIST);
    assert_int_equal(b->section[1].n_list, 2);
    assert_int_equal(b->section[1].list[1].type, IMAP_ARG_QUOTED);
    assert_string_equal(b->partial, "0.100");
    assert_string_equal(l->list[1].str, "body");
    assert_true(l->list[1].has_section);
    assert_int_equal(l->list[1].n_section, 0);
    assert_null(l->list[1].partial);
    assert_string_equal(l->list[2].section[0].str, "1");
    assert_string_equal(l->list[3].section[0].str, "1.2.MIME");
    assert_false(l->list[4].has_section);
    imap_command_free(&c);

    /* without a list around it, at the end of the command */
    assert_int_equal(parse("a FETCH 1 BINARY[1]<5.6>", &c), 0);
    assert_string_equal(c.args[1].partial, "5.6");
    imap_command_free(&c);

    expect_error("a FETCH 1 BODY[HEADER", "a", "missing ']' for '[' at offset 14");
    expect_error("a FETCH 1 BODY[1]<0.a>", "a", "invalid partial");
    expect_error("a FETCH 1 BODY[1]<0.10", "a", "unterminated partial");
    expect_error("a FETCH 1 BODY[1]x", "a", "expected space");
    expect_error("a FETCH 1 (BODY[(a])", "a", "unbalanced parenthesis");
    expect_error("a FETCH 1 BODY[ 1]", "a", "unexpected space");
}

static void test_parse_utf8_accept(void **state)
{
    (void)state;
    struct imap_command c;
    struct imap_parse_options utf8 = { .utf8_accept = true };
    static const char ok[] = "a SELECT \"Entw\xc3\xbcrfe \xf0\x9f\x93\xa7\"";
    assert_int_equal(imap_parse_command(ok, strlen(ok), &utf8, &c), 0);
    assert_int_equal(c.args[0].len, strlen("Entw\xc3\xbcrfe \xf0\x9f\x93\xa7"));
    imap_command_free(&c);
    assert_int_equal(imap_parse_command(ok, strlen(ok), NULL, &c), -1);
    imap_command_free(&c);
    static const char *const bad[] = {
        "a X \"\xc0\x80\"",         /* overlong NUL */
        "a X \"\xe0\x80\xaf\"",     /* overlong '/' */
        "a X \"\xed\xa0\x80\"",     /* surrogate */
        "a X \"\xf4\x90\x80\x80\"", /* above U+10FFFF */
        "a X \"\xc3\"",             /* truncated */
        "a X \"\x80\"",             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(imap_parse_command(bad[i], strlen(bad[i]), &utf8, &c), -1);
        assert_non_null(strstr(c.error, "invalid UTF-8"));
        imap_command_free(&c);
    }
    /* 8-bit atoms stay invalid under UTF8=ACCEPT */
    assert_int_equal(imap_parse_command("a X \xc3\xa9", 7, &utf8, &c), -1);
    imap_command_free(&c);
    assert_true(imap_utf8_valid("\xef\xbf\xbf", 3));
    assert_false(imap_utf8_valid("\xf8\x88\x80\x80\x80", 5));
}

static void test_parse_arena_bounded(void **state)
{
    (void)state;
    /* worst case for memory per input byte: many one-character atoms and
     * empty lists */
    size_t n = 30000;
    char *buf = mx_malloc(2 * n + 8);
    size_t len = (size_t)sprintf(buf, "a X");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, " %c", i % 2 ? 'x' : 'y');
    struct imap_command c;
    assert_int_equal(imap_parse_command(buf, len, NULL, &c), 0);
    assert_int_equal(c.n_args, n);
    assert_true(imap_command_arena_bytes(&c) <= 48 * len);
    imap_command_free(&c);
    len = (size_t)sprintf(buf, "a X");
    for (size_t i = 0; i < n / 2; i++)
        len += (size_t)sprintf(buf + len, " ()");
    assert_int_equal(imap_parse_command(buf, len, NULL, &c), 0);
    assert_true(imap_command_arena_bytes(&c) <= 48 * len);
    imap_command_free(&c);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_simple_and_bare_lf),
        cmocka_unit_test(test_reader_sync_literals),
        cmocka_unit_test(test_reader_literal_positions),
        cmocka_unit_test(test_reader_literal_plus_minus),
        cmocka_unit_test(test_reader_huge_literal_no_allocation),
        cmocka_unit_test(test_reader_literal_memory),
        cmocka_unit_test(test_reader_line_too_long),
        cmocka_unit_test(test_reader_many_tiny_literals),
        cmocka_unit_test(test_reader_raw_line),
        cmocka_unit_test(test_reader_split_everywhere),
        cmocka_unit_test(test_parse_tag_and_name),
        cmocka_unit_test(test_parse_atoms_and_strings),
        cmocka_unit_test(test_parse_nul),
        cmocka_unit_test(test_parse_literal_framing),
        cmocka_unit_test(test_parse_lists),
        cmocka_unit_test(test_parse_depth_limit),
        cmocka_unit_test(test_parse_sections),
        cmocka_unit_test(test_parse_utf8_accept),
        cmocka_unit_test(test_parse_arena_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
