/* fuzz_imap_parser - libFuzzer target for mx-imapd's input side: the
 * command reader, the command parser, sequence sets and FETCH attributes.
 *
 * Input: one control byte, then client bytes. Control bits 0-1 pick the
 * literal mode (none, LITERAL+, LITERAL-), bit 2 UTF8=ACCEPT, bits 3-7 seed
 * the chunk sizes.
 *
 * On the same bytes, in turn:
 *   1. the reader (small limits, so every limit is reachable) fed in random
 *      chunks and fed one byte at a time must give the same events and the
 *      same command buffers; every command buffer obeys the layout contract
 *      (literal bytes framed by CRLF and NUL, NUL-terminated, in limits);
 *   2. each command is parsed; a parsed tree is checked (strings inside the
 *      arena or the buffer, NUL-terminated, no forbidden bytes in atoms)
 *      and every atom is tried as a sequence set, FETCH arguments as FETCH
 *      attributes;
 *   3. the raw bytes are parsed as a command buffer and as a sequence set.
 * A sequence set that parses formats to text that parses to the same set;
 * resolving "*" keeps count() equal to the number of iterated members.
 * Any violation abort()s so libFuzzer keeps the input.
 *
 * Build: cmake -DMX_FUZZ=ON -DCMAKE_C_COMPILER=clang, target fuzz_imap_parser. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_fetch_att.h"
#include "imap_parser.h"
#include "imap_seqset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "fuzz_imap_parser: invariant failed at line %d: %s\n", \
                    __LINE__, #cond);                                              \
            abort();                                                               \
        }                                                                          \
    } while (0)

static const struct imap_reader_limits fuzz_limits = {
    .max_line = 512, .max_literal = 2048, .max_command = 8192, .max_literals = 20,
};

/* ---- transcripts ---------------------------------------------------------- */

struct transcript {
    unsigned char *data;
    size_t len, cap;
};

static void tr_add(struct transcript *t, const void *d, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = (t->len + n) * 2 + 64;
        t->data = realloc(t->data, t->cap);
        CHECK(t->data != NULL);
    }
    memcpy(t->data + t->len, d, n);
    t->len += n;
}

/* ---- sequence sets -------------------------------------------------------- */

static void check_seqset(const char *text, size_t len)
{
    struct imap_seqset s;
    const char *err = NULL;
    if (imap_seqset_parse(text, len, &s, &err) != 0) {
        CHECK(err != NULL && s.n == 0 && s.ranges == NULL);
        return;
    }
    CHECK(len > 0);
    for (size_t i = 0; i < s.n; i++) {
        CHECK(s.ranges[i].lo >= 1 && s.ranges[i].lo <= s.ranges[i].hi);
        if (i > 0)
            CHECK((uint64_t)s.ranges[i - 1].hi + 1 < s.ranges[i].lo);
    }
    char *f = imap_seqset_format(&s);
    struct imap_seqset again;
    CHECK(strlen(f) <= len); /* normalizing never lengthens the text */
    if (f[0] != '\0') {
        CHECK(imap_seqset_parse(f, strlen(f), &again, &err) == 0);
        char *g = imap_seqset_format(&again);
        CHECK(strcmp(f, g) == 0);
        free(g);
        imap_seqset_free(&again);
    }
    free(f);

    uint32_t max = s.n > 0 ? s.ranges[s.n - 1].hi / 2 + 1 : 7;
    imap_seqset_resolve(&s, max);
    CHECK(!s.has_star);
    uint64_t count = imap_seqset_count(&s);
    if (count <= 4096) {
        struct imap_seqset_iter it;
        imap_seqset_iter_init(&it);
        uint32_t n, prev = 0;
        uint64_t seen = 0;
        while (imap_seqset_iter_next(&s, &it, &n)) {
            CHECK(n > prev && imap_seqset_contains(&s, n));
            prev = n;
            seen++;
        }
        CHECK(seen == count);
    }
    imap_seqset_clamp(&s, max);
    CHECK(imap_seqset_highest(&s) <= max);
    imap_seqset_free(&s);
}

/* ---- parsed trees --------------------------------------------------------- */

static void check_args(const struct imap_arg *args, size_t n, const char *buf, size_t len,
                       unsigned depth)
{
    CHECK(depth <= IMAP_PARSE_DEFAULT_MAX_DEPTH + 1);
    for (size_t i = 0; i < n; i++) {
        const struct imap_arg *a = &args[i];
        switch (a->type) {
        case IMAP_ARG_ATOM:
        case IMAP_ARG_NIL:
            CHECK(a->len > 0 && a->str[a->len] == '\0' && strlen(a->str) == a->len);
            for (size_t k = 0; k < a->len; k++) {
                unsigned char c = (unsigned char)a->str[k];
                CHECK(c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '"' && c != '{');
            }
            if (a->has_section)
                check_args(a->section, a->n_section, buf, len, depth + 1);
            else
                CHECK(a->n_section == 0 && a->partial == NULL);
            if (a->partial != NULL)
                CHECK(strspn(a->partial, "0123456789.") == strlen(a->partial));
            if (a->type == IMAP_ARG_ATOM && !a->has_section && a->len < 4096)
                check_seqset(a->str, a->len);
            break;
        case IMAP_ARG_QUOTED:
            CHECK(a->str[a->len] == '\0' && memchr(a->str, '\0', a->len) == NULL);
            CHECK(memchr(a->str, '\r', a->len) == NULL && memchr(a->str, '\n', a->len) == NULL);
            break;
        case IMAP_ARG_LITERAL:
        case IMAP_ARG_LITERAL8:
            /* literals point into the buffer, followed by the reader's NUL */
            CHECK(a->str >= buf && a->str + a->len < buf + len + 1 && a->str[a->len] == '\0');
            if (a->type == IMAP_ARG_LITERAL)
                CHECK(memchr(a->str, '\0', a->len) == NULL);
            break;
        case IMAP_ARG_LIST:
            CHECK(a->n_list == 0 || a->list != NULL);
            check_args(a->list, a->n_list, buf, len, depth + 1);
            break;
        default:
            CHECK(0);
        }
    }
}

static void check_fetch(const struct imap_command *c)
{
    if (c->n_args < 2)
        return;
    struct imap_fetch_spec spec;
    const char *err = NULL;
    if (imap_fetch_att_parse(c->args + 1, c->n_args - 1, c->uid, &spec, &err) != 0) {
        CHECK(err != NULL && spec.items == NULL && spec.n_items == 0);
        return;
    }
    CHECK(spec.n_items > 0 && spec.n_items <= IMAP_FETCH_MAX_ITEMS + 2);
    for (size_t i = 0; i < spec.n_items; i++) {
        const struct imap_fetch_item *it = &spec.items[i];
        CHECK(it->echo != NULL && it->echo[0] != '\0');
        /* never ".PEEK" in the name (a header field may well contain it) */
        CHECK(strncmp(it->echo, "BODY.PEEK", 9) != 0 &&
              strncmp(it->echo, "BINARY.PEEK", 11) != 0);
        CHECK(it->section.n_parts <= IMAP_FETCH_MAX_PART_DEPTH);
        for (size_t k = 0; k < it->section.n_parts; k++)
            CHECK(it->section.parts[k] != 0);
        if (it->has_partial)
            CHECK(it->partial_length > 0 && it->partial_length <= INT64_MAX &&
                  it->partial_offset <= INT64_MAX);
        if (it->section.kind == IMAP_SECTION_MIME)
            CHECK(it->section.n_parts > 0);
        if (it->kind == IMAP_FETCH_BODY_SECTION || it->kind == IMAP_FETCH_BINARY)
            CHECK(spec.need & IMAP_FETCH_NEED_HEADER);
    }
    if (spec.vanished)
        CHECK(c->uid && spec.changedsince_given);
    imap_fetch_spec_free(&spec);
}

static void parse_and_check(const char *buf, size_t len, bool utf8)
{
    struct imap_parse_options opts = { .utf8_accept = utf8 };
    struct imap_command c;
    int rc = imap_parse_command(buf, len, &opts, &c);
    if (c.tag != NULL)
        CHECK(c.tag_len > 0 && strlen(c.tag) == c.tag_len && memcmp(c.tag, buf, c.tag_len) == 0);
    if (rc != 0) {
        CHECK(c.error[0] != '\0' && c.error_offset <= len && c.args == NULL);
    } else {
        CHECK(c.tag != NULL && c.name[0] != '\0' && c.error[0] == '\0');
        CHECK(c.n_args == 0 || c.args != NULL);
        check_args(c.args, c.n_args, buf, len, 0);
        /* everything but literals is copied: bounded by a multiple of len */
        CHECK(imap_command_arena_bytes(&c) <= 128 * len + 16384);
        if (strcmp(c.name, "FETCH") == 0)
            check_fetch(&c);
    }
    imap_command_free(&c);
}

/* ---- reader ----------------------------------------------------------------- */

static void check_command_buffer(struct imap_reader *r)
{
    size_t len, n;
    const char *buf = imap_reader_command(r, &len);
    const struct imap_literal_pos *lp = imap_reader_literals(r, &n);
    CHECK(buf[len] == '\0');
    CHECK(len <= fuzz_limits.max_command);
    CHECK(n <= fuzz_limits.max_literals);
    size_t prev_end = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(lp[i].offset >= prev_end + 2 && lp[i].offset + lp[i].len < len + 1);
        CHECK(memcmp(buf + lp[i].offset - 2, "\r\n", 2) == 0);
        CHECK(buf[lp[i].offset + lp[i].len] == '\0');
        CHECK(lp[i].len <= fuzz_limits.max_literal);
        prev_end = lp[i].offset + lp[i].len + 1;
    }
}

static void record_event(struct transcript *t, struct imap_reader *r, enum imap_read_status st,
                         bool utf8, bool parse)
{
    unsigned char code = (unsigned char)st;
    tr_add(t, &code, 1);
    if (st == IMAP_READ_COMMAND || st == IMAP_READ_RAW_LINE) {
        size_t len;
        const char *buf = imap_reader_command(r, &len);
        tr_add(t, &len, sizeof(len));
        tr_add(t, buf, len);
        if (st == IMAP_READ_COMMAND) {
            check_command_buffer(r);
            if (parse)
                parse_and_check(buf, len, utf8);
            if (len >= 5 && memcmp(buf + len - 5, " IDLE", 5) == 0)
                imap_reader_want_raw_line(r);
        } else {
            CHECK(memchr(buf, '\n', len) == NULL);
        }
    } else if (st != IMAP_READ_NEED_CONTINUATION) {
        size_t tl = 0;
        const char *tag = imap_reader_tag(r, &tl);
        CHECK(imap_reader_error(r)[0] != '\0');
        tr_add(t, &tl, sizeof(tl));
        if (tag != NULL)
            tr_add(t, tag, tl);
    }
}

/* run_reader - feed the input in chunks (0 = one byte at a time). */
static void run_reader(const char *in, size_t len, unsigned ctl, bool bytewise,
                       struct transcript *t)
{
    struct imap_reader *r = imap_reader_new(&fuzz_limits);
    imap_reader_set_literal_mode(r, (enum imap_literal_mode)(ctl & 3u) % 3);
    bool utf8 = (ctl & 4u) != 0;
    uint32_t seed = (ctl >> 3) * 2654435761u + 1;
    size_t pos = 0;
    bool fatal = false;
    while (pos < len && !fatal) {
        seed = seed * 1103515245u + 12345u;
        size_t n = bytewise ? 1 : 1 + (seed >> 16) % 97;
        if (n > len - pos)
            n = len - pos;
        size_t off = 0;
        while (off < n) {
            size_t used = 0;
            enum imap_read_status st = imap_reader_read(r, in + pos + off, n - off, &used);
            CHECK(used <= n - off);
            off += used;
            if (st == IMAP_READ_NEED_MORE) {
                CHECK(off == n);
                break;
            }
            record_event(t, r, st, utf8, !bytewise);
            if (st == IMAP_READ_FATAL) {
                fatal = true;
                break;
            }
        }
        CHECK(imap_reader_buffered(r) <= fuzz_limits.max_command);
        pos += n;
    }
    imap_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    unsigned ctl = data[0];
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    struct transcript chunked = { 0 }, bytewise = { 0 };
    run_reader(in, len, ctl, false, &chunked);
    run_reader(in, len, ctl, true, &bytewise);
    CHECK(chunked.len == bytewise.len &&
          (chunked.len == 0 || memcmp(chunked.data, bytewise.data, chunked.len) == 0));
    free(chunked.data);
    free(bytewise.data);

    /* The raw bytes as a command buffer: the parser must not trust it. */
    parse_and_check(in, len, (ctl & 4u) != 0);
    if (len <= 8192)
        check_seqset(in, len);
    return 0;
}
