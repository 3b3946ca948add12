/* smtp_data - incremental SMTP DATA decoder and BDAT chunk reader.
 *
 * The decoded stream D is the wire bytes with two things removed: the
 * transparency dot at the start of a line (a line starts after CRLF, or at
 * the start of DATA), and the terminator ".\r\n" at a line start. Nothing
 * else changes, so D is emitted as runs of the caller's own buffer.
 *
 * Problems are checked in a fixed per-byte order so that the FIRST one is
 * the same however the input was split:
 *   at each decoded byte: line length, then size, then the byte's own
 *   class (bare LF, NUL); a bare CR is known one byte later, and is
 *   recorded before anything about that next byte.
 * test_smtp_data feeds every input in every 2-way split and one byte at a
 * time, and the fuzzer compares with a whole-buffer reference decoder, to
 * hold us to that. */
#include "smtp_data.h"

#include <string.h>

/* Bytes that stop the fast scan inside a line. NUL is always in the set
 * (cheap: it is rare) and is accepted or refused by limits.allow_nul. */
static const bool special_byte[256] = {
    [0] = true, ['\r'] = true, ['\n'] = true,
};

static const char cr_byte = '\r';

void smtp_data_init(struct smtp_data_decoder *dec,
                    const struct smtp_data_limits *limits,
                    smtp_data_sink_fn *sink, void *sink_ctx)
{
    memset(dec, 0, sizeof(*dec));
    if (limits != NULL) {
        dec->limits = *limits;
    } else {
        dec->limits.max_line = SMTP_DATA_MAX_LINE_DEFAULT;
        dec->limits.max_size = 0;
        dec->limits.allow_nul = false;
    }
    dec->sink = sink;
    dec->sink_ctx = sink_ctx;
    dec->state = SMTP_DATA_ST_LINE_START;
    dec->problem = SMTP_DATA_OK;
    dec->line = 1;
}

/* note_problem - keep only the first content problem. */
static void note_problem(struct smtp_data_decoder *dec, enum smtp_data_status problem)
{
    if (dec->problem == SMTP_DATA_OK) {
        dec->problem = problem;
        dec->problem_line = dec->line;
    }
}

/* account - n more decoded bytes belong to the current line; records a
 * line-length or size problem at the byte where the limit is crossed.
 * Within one call both can only be crossed by ordinary bytes, so the one
 * crossed first wins, and line length wins a tie (the per-byte order). */
static void account(struct smtp_data_decoder *dec, uint64_t n)
{
    uint64_t max_line = dec->limits.max_line;
    uint64_t max_size = dec->limits.max_size;

    dec->line_len += n;
    dec->size += n;
    if (dec->problem != SMTP_DATA_OK)
        return;
    bool line_over = max_line != 0 && dec->line_len > max_line;
    bool size_over = max_size != 0 && dec->size > max_size;
    if (line_over && size_over) {
        /* Bytes past each limit within this run: the limit crossed with
         * more bytes behind it was crossed earlier. */
        uint64_t line_excess = dec->line_len - max_line;
        uint64_t size_excess = dec->size - max_size;
        note_problem(dec, line_excess >= size_excess ? SMTP_DATA_LINE_TOO_LONG
                                                     : SMTP_DATA_TOO_BIG);
    } else if (line_over) {
        note_problem(dec, SMTP_DATA_LINE_TOO_LONG);
    } else if (size_over) {
        note_problem(dec, SMTP_DATA_TOO_BIG);
    }
}

/* emit - hand decoded bytes to the sink, never more than max_size in
 * total and nothing after a sink failure. */
static void emit(struct smtp_data_decoder *dec, const unsigned char *p, size_t n)
{
    if (n == 0 || dec->sink_failed)
        return;
    if (dec->limits.max_size != 0) {
        if (dec->emitted >= dec->limits.max_size)
            return;
        uint64_t room = dec->limits.max_size - dec->emitted;
        if (n > room)
            n = (size_t)room;
    }
    dec->emitted += n;
    if (dec->sink != NULL && dec->sink(dec->sink_ctx, p, n) < 0)
        dec->sink_failed = true;
}

size_t smtp_data_feed(struct smtp_data_decoder *dec, const void *data,
                      size_t len, bool *done_r)
{
    const unsigned char *start = data;
    const unsigned char *p = start, *end = start + len;
    /* [run, p) are decoded bytes not yet emitted: always a verbatim slice
     * of this chunk. */
    const unsigned char *run = p;

    while (p < end && dec->state != SMTP_DATA_ST_DONE) {
        switch (dec->state) {
        case SMTP_DATA_ST_LINE_START:
            if (*p == '.') {
                emit(dec, run, (size_t)(p - run));
                p++;
                run = p;
                dec->state = SMTP_DATA_ST_DOT;
            } else {
                dec->state = SMTP_DATA_ST_TEXT;
            }
            break;

        case SMTP_DATA_ST_DOT:
            if (*p == '\r') {
                /* Maybe the terminator: hold the CR back (run skips it). */
                p++;
                run = p;
                dec->state = SMTP_DATA_ST_DOT_CR;
            } else {
                /* The dot was a transparency dot; this byte is data,
                 * even an LF (".\n" is a bare LF, never an end). */
                dec->state = SMTP_DATA_ST_TEXT;
            }
            break;

        case SMTP_DATA_ST_DOT_CR:
            if (*p == '\n') {
                p++;
                run = p;
                dec->state = SMTP_DATA_ST_DONE;
                break;
            }
            /* ".\r" + not LF: dot removed, the held-back CR is data and
             * bare. It may have arrived in an earlier chunk, so emit it from
             * a constant; run (== p) is empty here. */
            emit(dec, (const unsigned char *)&cr_byte, 1);
            account(dec, 1);
            note_problem(dec, SMTP_DATA_BARE_CR);
            dec->state = SMTP_DATA_ST_TEXT;
            break;

        case SMTP_DATA_ST_CR:
            if (*p == '\n') {
                account(dec, 1);
                p++;
                dec->line++;
                dec->line_len = 0;
                dec->state = SMTP_DATA_ST_LINE_START;
            } else {
                note_problem(dec, SMTP_DATA_BARE_CR);
                dec->state = SMTP_DATA_ST_TEXT;
            }
            break;

        case SMTP_DATA_ST_TEXT: {
            const unsigned char *q = p;
            /* Fast path: whole "text CRLF" lines stay in this loop. A CRLF
             * inside the chunk is accounted with its line in one call (CR
             * and LF are ordinary bytes for the length and size checks, and
             * account() finds the first crossing); only a line starting
             * with '.' or a chunk end goes back through LINE_START. */
            for (;;) {
                while (q < end && !special_byte[*q])
                    q++;
                if (q + 1 < end && q[0] == '\r' && q[1] == '\n') {
                    account(dec, (uint64_t)(q - p) + 2);
                    p = q + 2;
                    q = p;
                    dec->line++;
                    dec->line_len = 0;
                    if (p < end && *p != '.')
                        continue;
                    dec->state = SMTP_DATA_ST_LINE_START;
                }
                break;
            }
            if (dec->state != SMTP_DATA_ST_TEXT)
                break;
            if (q > p) {
                account(dec, (uint64_t)(q - p));
                p = q;
                if (p == end)
                    break;
            }
            unsigned char c = *p++;
            account(dec, 1);
            if (c == '\r')
                dec->state = SMTP_DATA_ST_CR;
            else if (c == '\n')
                note_problem(dec, SMTP_DATA_BARE_LF);
            else if (!dec->limits.allow_nul)
                note_problem(dec, SMTP_DATA_NUL);
            break;
        }

        case SMTP_DATA_ST_DONE:
            break;
        }
    }
    emit(dec, run, (size_t)(p - run));
    if (done_r != NULL)
        *done_r = dec->state == SMTP_DATA_ST_DONE;
    return (size_t)(p - start);
}

bool smtp_data_is_done(const struct smtp_data_decoder *dec)
{
    return dec->state == SMTP_DATA_ST_DONE;
}

enum smtp_data_status smtp_data_status(const struct smtp_data_decoder *dec)
{
    if (dec->problem != SMTP_DATA_OK)
        return dec->problem;
    return dec->sink_failed ? SMTP_DATA_SINK_FAILED : SMTP_DATA_OK;
}

uint64_t smtp_data_problem_line(const struct smtp_data_decoder *dec)
{
    return dec->problem_line;
}

uint64_t smtp_data_size(const struct smtp_data_decoder *dec)
{
    return dec->size;
}

const char *smtp_data_status_name(enum smtp_data_status status)
{
    switch (status) {
    case SMTP_DATA_OK: return "ok";
    case SMTP_DATA_BARE_LF: return "bare_lf";
    case SMTP_DATA_BARE_CR: return "bare_cr";
    case SMTP_DATA_LINE_TOO_LONG: return "line_too_long";
    case SMTP_DATA_TOO_BIG: return "too_big";
    case SMTP_DATA_NUL: return "nul";
    case SMTP_DATA_SINK_FAILED: return "sink_failed";
    }
    return "unknown";
}

int smtp_data_reply(enum smtp_data_status status, struct smtp_reply_err *reply_r)
{
    switch (status) {
    case SMTP_DATA_OK:
        return -1;
    case SMTP_DATA_BARE_LF:
    case SMTP_DATA_BARE_CR:
        /* 5.6.0 "other media error": the content, not the protocol, is
         * wrong. Permanent: resending the same bytes cannot help. */
        *reply_r = (struct smtp_reply_err){
            550, "5.6.0",
            "Message contains bare CR or LF; lines must end in CRLF "
            "(SMTP smuggling protection)" };
        return 0;
    case SMTP_DATA_LINE_TOO_LONG:
        /* RFC 5321 4.5.3.1.10 gives "500 Line too long" as the reply for
         * an over-long text line; 5.5.2 (syntax error) is the closest
         * RFC 3463 detail, since the client broke the protocol's line
         * rule rather than sent unacceptable content. */
        *reply_r = (struct smtp_reply_err){
            500, "5.5.2", "Line too long (RFC 5321 limit is 1000 octets incl. CRLF)" };
        return 0;
    case SMTP_DATA_TOO_BIG:
        /* RFC 1870: 552 for a message over the fixed size limit. */
        *reply_r = (struct smtp_reply_err){
            552, "5.3.4", "Message size exceeds fixed limit" };
        return 0;
    case SMTP_DATA_NUL:
        *reply_r = (struct smtp_reply_err){
            550, "5.6.0", "Message contains NUL characters" };
        return 0;
    case SMTP_DATA_SINK_FAILED:
        /* Our failure (disk, spool): always a 4xx so the client retries. */
        *reply_r = (struct smtp_reply_err){
            451, "4.3.0", "Local error in processing" };
        return 0;
    }
    *reply_r = (struct smtp_reply_err){ 451, "4.3.0", "Local error in processing" };
    return 0;
}

/* ---- BDAT ------------------------------------------------------------ */

void smtp_bdat_init(struct smtp_bdat_reader *rd, uint64_t max_size,
                    smtp_data_sink_fn *sink, void *sink_ctx)
{
    memset(rd, 0, sizeof(*rd));
    rd->max_size = max_size;
    rd->sink = sink;
    rd->sink_ctx = sink_ctx;
}

int smtp_bdat_begin_chunk(struct smtp_bdat_reader *rd, uint64_t size, bool last)
{
    if (rd->chunk_left != 0 || rd->last)
        return -1;
    rd->chunk_left = size;
    rd->last = last;
    if (last && size == 0)
        rd->done = true;
    if (rd->done && rd->prev_cr)
        rd->bare_cr++; /* the message ended on a CR */
    return 0;
}

/* count_bare - statistics only; prev_cr carries across chunks. */
static void count_bare(struct smtp_bdat_reader *rd, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\n') {
            if (!rd->prev_cr)
                rd->bare_lf++;
        } else if (rd->prev_cr) {
            rd->bare_cr++;
        }
        rd->prev_cr = c == '\r';
    }
}

size_t smtp_bdat_feed(struct smtp_bdat_reader *rd, const void *data, size_t len,
                      bool *chunk_done_r)
{
    const unsigned char *p = data;
    size_t n = len;

    if (n > rd->chunk_left)
        n = (size_t)rd->chunk_left;
    rd->chunk_left -= n;
    rd->size += n;
    count_bare(rd, p, n);

    size_t out = n;
    if (rd->max_size != 0) {
        if (rd->size > rd->max_size)
            rd->too_big = true;
        uint64_t room = rd->emitted < rd->max_size ? rd->max_size - rd->emitted : 0;
        if (out > room)
            out = (size_t)room;
    }
    if (out > 0 && !rd->sink_failed) {
        rd->emitted += out;
        if (rd->sink != NULL && rd->sink(rd->sink_ctx, p, out) < 0)
            rd->sink_failed = true;
    }

    bool chunk_done = rd->chunk_left == 0;
    if (chunk_done && rd->last && !rd->done) {
        rd->done = true;
        if (rd->prev_cr)
            rd->bare_cr++; /* the message ended on a CR */
    }
    if (chunk_done_r != NULL)
        *chunk_done_r = chunk_done;
    return n;
}

enum smtp_data_status smtp_bdat_status(const struct smtp_bdat_reader *rd)
{
    if (rd->too_big)
        return SMTP_DATA_TOO_BIG;
    return rd->sink_failed ? SMTP_DATA_SINK_FAILED : SMTP_DATA_OK;
}
