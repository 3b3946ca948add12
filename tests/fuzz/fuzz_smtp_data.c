/* fuzz_smtp_data - libFuzzer target for the SMTP DATA decoder and the BDAT
 * reader (inbound/smtp_data.c).
 *
 * Input layout:
 *   byte 0      limits: bit 0 allow_nul, bits 1-3 max_line index,
 *               bits 4-7 max_size index (tables below; 0 = no limit)
 *   byte 1      k = byte % 8: number of split sizes that follow
 *   k bytes     chunk sizes, used cyclically to cut the rest (0 = an empty
 *               feed, which must be harmless)
 *   rest        the bytes the client sent after "354"
 *
 * Checks, abort() on any violation:
 *   - the incremental decoder fed in the chosen pieces agrees exactly
 *     (status, problem line, size, consumed, done, decoded bytes) with an
 *     independent whole-buffer reference decoder written below;
 *   - consumed <= input; everything is consumed unless done; decoded
 *     output <= consumed and <= max_size;
 *   - if the status is OK: the output has no bare CR/LF (no NUL unless
 *     allowed, no over-long line), and re-stuffing it plus ".\r\n"
 *     reproduces the consumed input -- exactly, except where the client
 *     sent a needless transparency dot (".abc" decodes to "abc", RFC 5321
 *     4.5.2, so re-stuffing cannot restore it; those lines are checked to
 *     be exactly that case) -- and decoding the re-stuffed form again
 *     gives the same output;
 *   - BDAT: chunks of the chosen sizes give back the input verbatim
 *     (capped at max_size) with exact bare CR/LF counts, and never consume
 *     past a chunk.
 *
 * Build: cmake -DMX_FUZZ=ON with clang (tests/fuzz/CMakeLists.txt). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_smtp_data: invariant failed at line %d: %s\n", \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static const size_t max_lines[8] = { 0, 1000, 1, 2, 3, 5, 8, 80 };
static const uint64_t max_sizes[16] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                        1, 2, 3, 5, 8, 13, 64, 1000 };

/* ---- output buffer ----------------------------------------------------- */

struct outbuf {
    uint8_t *data;
    size_t len, cap;
};

static int sink_out(void *ctx, const void *d, size_t n)
{
    struct outbuf *o = ctx;
    CHECK(n > 0);
    CHECK(o->len + n <= o->cap); /* never more than the input size */
    memcpy(o->data + o->len, d, n);
    o->len += n;
    return 0;
}

/* ---- reference decoder: whole buffer, lookahead, no pending state ------ */

struct ref_result {
    enum smtp_data_status status;
    uint64_t line;
    uint64_t size;
    size_t consumed;
    bool done;
};

static void ref_note(struct ref_result *r, enum smtp_data_status st, uint64_t line)
{
    if (r->status == SMTP_DATA_OK) {
        r->status = st;
        r->line = line;
    }
}

static void ref_decode(const uint8_t *in, size_t n, const struct smtp_data_limits *lim,
                       struct ref_result *r, struct outbuf *out)
{
    size_t i = 0;
    bool bol = true;
    uint64_t line = 1, line_len = 0;

    memset(r, 0, sizeof(*r));
    while (i < n) {
        if (bol) {
            bol = false;
            if (in[i] == '.') {
                if (i + 1 >= n || (in[i + 1] == '\r' && i + 2 >= n)) {
                    i = n; /* "." or ".\r" at the end: undecided, consumed */
                    break;
                }
                if (in[i + 1] == '\r' && in[i + 2] == '\n') {
                    i += 3;
                    r->done = true;
                    break;
                }
                i++; /* transparency dot */
            }
        }
        uint8_t c = in[i];
        /* put c: line length, then size, then the byte's own class */
        if (lim->max_size == 0 || r->size < lim->max_size)
            out->data[out->len++] = c;
        r->size++;
        line_len++;
        if (lim->max_line != 0 && line_len > lim->max_line)
            ref_note(r, SMTP_DATA_LINE_TOO_LONG, line);
        if (lim->max_size != 0 && r->size > lim->max_size)
            ref_note(r, SMTP_DATA_TOO_BIG, line);
        if (c == '\r') {
            if (i + 1 < n && in[i + 1] != '\n')
                ref_note(r, SMTP_DATA_BARE_CR, line);
        } else if (c == '\n') {
            if (i > 0 && in[i - 1] == '\r') {
                line++;
                line_len = 0;
                bol = true;
            } else {
                ref_note(r, SMTP_DATA_BARE_LF, line);
            }
        } else if (c == '\0' && !lim->allow_nul) {
            ref_note(r, SMTP_DATA_NUL, line);
        }
        i++;
    }
    r->consumed = i;
}

/* ---- OK-message round trip ---------------------------------------------- */

/* check_ok_message - out is a complete, valid decoded message; in[0..consumed)
 * is what the client sent for it. */
static void check_ok_message(const uint8_t *in, size_t consumed, const uint8_t *out,
                             size_t out_len, const struct smtp_data_limits *lim)
{
    /* no bare CR/LF, no NUL unless allowed, lines within max_line */
    size_t line_len = 0;
    for (size_t i = 0; i < out_len; i++) {
        line_len++;
        if (out[i] == '\r')
            CHECK(i + 1 < out_len && out[i + 1] == '\n');
        if (out[i] == '\n') {
            CHECK(i > 0 && out[i - 1] == '\r');
            CHECK(lim->max_line == 0 || line_len <= lim->max_line);
            line_len = 0;
        }
        if (out[i] == '\0')
            CHECK(lim->allow_nul);
    }
    CHECK(line_len == 0); /* ends with CRLF or is empty */

    /* re-stuff line by line against the wire bytes */
    size_t pos = 0, start = 0;
    uint8_t *restuffed = malloc(out_len * 2 + 3);
    size_t rl = 0;
    CHECK(restuffed != NULL);
    while (start < out_len) {
        const uint8_t *nl = memchr(out + start, '\n', out_len - start);
        CHECK(nl != NULL);
        size_t len = (size_t)(nl - (out + start)) + 1;
        const uint8_t *l = out + start;
        if (l[0] == '.')
            restuffed[rl++] = '.';
        memcpy(restuffed + rl, l, len);
        rl += len;

        if (l[0] == '.') {
            CHECK(pos + 1 + len <= consumed && in[pos] == '.' &&
                  memcmp(in + pos + 1, l, len) == 0);
            pos += 1 + len;
        } else if (pos + len <= consumed && memcmp(in + pos, l, len) == 0) {
            pos += len;
        } else {
            /* the only other way: a needless dot before a line that does
             * not start with a dot, and never ".\r\n" (the terminator) */
            CHECK(len > 2);
            CHECK(pos + 1 + len <= consumed && in[pos] == '.' &&
                  memcmp(in + pos + 1, l, len) == 0);
            pos += 1 + len;
        }
        start += len;
    }
    memcpy(restuffed + rl, ".\r\n", 3);
    rl += 3;
    CHECK(pos + 3 == consumed && memcmp(in + pos, ".\r\n", 3) == 0);

    /* decoding the re-stuffed form gives the same message */
    struct outbuf again = { malloc(rl + 1), 0, rl };
    CHECK(again.data != NULL);
    struct smtp_data_decoder dec;
    smtp_data_init(&dec, lim, sink_out, &again);
    bool done = false;
    CHECK(smtp_data_feed(&dec, restuffed, rl, &done) == rl);
    CHECK(done);
    CHECK(smtp_data_status(&dec) == SMTP_DATA_OK);
    CHECK(again.len == out_len && (out_len == 0 || memcmp(again.data, out, out_len) == 0));
    free(again.data);
    free(restuffed);
}

/* ---- BDAT ---------------------------------------------------------------- */

static void check_bdat(const uint8_t *in, size_t n, const uint8_t *sizes, size_t nsizes,
                       uint64_t max_size)
{
    struct outbuf out = { malloc(n + 1), 0, n };
    CHECK(out.data != NULL);
    struct smtp_bdat_reader rd;
    smtp_bdat_init(&rd, max_size, sink_out, &out);

    size_t pos = 0, k = 0;
    bool last = false;
    while (!last) {
        size_t chunk = nsizes > 0 ? sizes[k++ % nsizes] : n;
        if (chunk >= n - pos || (nsizes > 0 && k > n + nsizes)) {
            chunk = n - pos;
            last = true;
        }
        CHECK(smtp_bdat_begin_chunk(&rd, chunk, last) == 0);
        /* offer everything that is left: the reader takes only the chunk */
        bool chunk_done = false;
        size_t got = smtp_bdat_feed(&rd, in + pos, n - pos, &chunk_done);
        CHECK(got == chunk);
        CHECK(chunk_done);
        pos += got;
    }
    CHECK(pos == n && rd.done);
    CHECK(smtp_bdat_begin_chunk(&rd, 1, false) == -1);

    size_t want = max_size != 0 && n > max_size ? (size_t)max_size : n;
    CHECK(out.len == want && (want == 0 || memcmp(out.data, in, want) == 0));
    CHECK(rd.size == n);
    CHECK(smtp_bdat_status(&rd) ==
          (max_size != 0 && n > max_size ? SMTP_DATA_TOO_BIG : SMTP_DATA_OK));

    uint64_t bare_lf = 0, bare_cr = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
            bare_lf++;
        if (in[i] == '\r' && (i + 1 == n || in[i + 1] != '\n'))
            bare_cr++;
    }
    CHECK(rd.bare_lf == bare_lf && rd.bare_cr == bare_cr);
    free(out.data);
}

/* ---- entry ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct smtp_data_limits lim = {
        .allow_nul = data[0] & 1,
        .max_line = max_lines[(data[0] >> 1) & 7],
        .max_size = max_sizes[data[0] >> 4],
    };
    size_t nsizes = data[1] % 8;
    if (size < 2 + nsizes)
        return 0;
    const uint8_t *sizes = data + 2;
    const uint8_t *in = data + 2 + nsizes;
    size_t n = size - 2 - nsizes;

    /* reference, whole buffer */
    struct outbuf ref_out = { malloc(n + 1), 0, n };
    CHECK(ref_out.data != NULL);
    struct ref_result ref;
    ref_decode(in, n, &lim, &ref, &ref_out);

    /* incremental, in the chosen pieces */
    struct outbuf out = { malloc(n + 1), 0, n };
    CHECK(out.data != NULL);
    struct smtp_data_decoder dec;
    smtp_data_init(&dec, &lim, sink_out, &out);
    size_t pos = 0, k = 0, idle = 0;
    bool done = false;
    while (!done && pos < n) {
        size_t chunk = nsizes > 0 ? sizes[k++ % nsizes] : n;
        if (chunk > n - pos)
            chunk = n - pos;
        if (chunk == 0 && ++idle > nsizes)
            chunk = n - pos; /* all sizes zero: finish in one go */
        size_t got = smtp_data_feed(&dec, in + pos, chunk, &done);
        CHECK(got <= chunk);
        CHECK(done || got == chunk);
        pos += got;
    }
    if (!done) {
        /* an empty feed changes nothing */
        CHECK(smtp_data_feed(&dec, in + n, 0, &done) == 0);
    }
    CHECK(done == smtp_data_is_done(&dec));

    CHECK(pos <= n);
    CHECK(done || pos == n);
    CHECK(done == ref.done);
    CHECK(pos == ref.consumed);
    CHECK(smtp_data_status(&dec) == ref.status);
    CHECK(smtp_data_problem_line(&dec) == ref.line);
    CHECK(smtp_data_size(&dec) == ref.size);
    CHECK(out.len == ref_out.len && (out.len == 0 || memcmp(out.data, ref_out.data, out.len) == 0));
    CHECK(out.len <= pos && smtp_data_size(&dec) <= pos);
    CHECK(lim.max_size == 0 || out.len <= lim.max_size);
    if (done) {
        CHECK(smtp_data_feed(&dec, in + pos, n - pos, &done) == 0 && done);
        struct smtp_reply_err reply;
        CHECK((smtp_data_reply(smtp_data_status(&dec), &reply) == 0) ==
              (smtp_data_status(&dec) != SMTP_DATA_OK));
        if (smtp_data_status(&dec) == SMTP_DATA_OK)
            check_ok_message(in, pos, out.data, out.len, &lim);
    }
    free(out.data);
    free(ref_out.data);

    check_bdat(in, n, sizes, nsizes, lim.max_size);
    return 0;
}
