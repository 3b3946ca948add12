/* smtp_data - incremental SMTP DATA decoder and BDAT chunk reader.
 *
 * Pure: no event loop, no I/O, no allocation. The session feeds whatever
 * bytes arrived, split anywhere (one byte at a time or megabytes at once);
 * the decoder
 *   - finds the end of data: ONLY <CRLF>.<CRLF>, where the start of DATA
 *     counts as "after a CRLF" (".\r\n" alone is an empty message). Every
 *     look-alike (\n.\n, \r.\r, \r\n.\n, \n.\r\n, ...) is data, and its bare
 *     CR or LF makes the message invalid (SMTP smuggling protection);
 *   - removes the transparency dot of a line starting with "." (RFC 5321
 *     4.5.2) and passes every other byte through unchanged, CRLF included;
 *   - hands the decoded bytes to a sink in large runs, straight from the
 *     caller's buffer (zero-copy; the only byte ever emitted from elsewhere is
 *     a CR that followed a line-start dot at the end of an earlier chunk);
 *   - validates (bare LF, bare CR, line length, size, NUL) and records the
 *     FIRST problem with its line number, but only reports it once the
 *     terminator arrived: the client keeps sending until then, and the
 *     session must stay in sync to answer at the right moment.
 *
 * Memory is O(1) in the input: a state machine over at most the two
 * pending bytes "." and ".\r" at a line start, both known constants. */
#ifndef SMTP_DATA_H
#define SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp_reply.h"

/* smtp_data_sink_fn - receives decoded message bytes, in order. Return 0,
 * or -1 when the write failed: the decoder then stops calling the sink but
 * keeps consuming (and validating) up to the terminator, and reports
 * SMTP_DATA_SINK_FAILED (451) at the end. data points into the buffer given
 * to smtp_data_feed() (or a static constant) and is valid only during the
 * call. */
typedef int smtp_data_sink_fn(void *ctx, const void *data, size_t len);

enum smtp_data_status {
    SMTP_DATA_OK = 0,
    SMTP_DATA_BARE_LF,       /* LF not preceded by CR */
    SMTP_DATA_BARE_CR,       /* CR not followed by LF */
    SMTP_DATA_LINE_TOO_LONG, /* decoded line incl. CRLF longer than max_line */
    SMTP_DATA_TOO_BIG,       /* decoded size > max_size */
    SMTP_DATA_NUL,           /* NUL byte and allow_nul is false */
    SMTP_DATA_SINK_FAILED,   /* our failure: the sink returned -1 */
};

/* RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF
 * (not counting the transparency dot). */
#define SMTP_DATA_MAX_LINE_DEFAULT 1000

struct smtp_data_limits {
    size_t max_line;   /* octets incl. CRLF, excluding the stuffing dot; 0 = no limit */
    uint64_t max_size; /* decoded octets; 0 = no limit */
    bool allow_nul;    /* false: a NUL byte makes the message invalid */
};

enum smtp_data_state {
    SMTP_DATA_ST_LINE_START, /* after CRLF or at the start of DATA */
    SMTP_DATA_ST_DOT,        /* "." at line start, undecided */
    SMTP_DATA_ST_DOT_CR,     /* ".\r" at line start, undecided */
    SMTP_DATA_ST_TEXT,       /* inside a line */
    SMTP_DATA_ST_CR,         /* inside a line, right after a CR (already emitted) */
    SMTP_DATA_ST_DONE,       /* terminator consumed */
};

/* The decoder. Fields are private to smtp_data.c; it is a plain struct so
 * a session can embed it (no allocation). */
struct smtp_data_decoder {
    struct smtp_data_limits limits;
    smtp_data_sink_fn *sink;
    void *sink_ctx;

    enum smtp_data_state state;
    enum smtp_data_status problem; /* first content problem, or OK */
    bool sink_failed;
    uint64_t problem_line;  /* 1-based line of the first problem */
    uint64_t line;          /* current line, 1-based (counts CRLFs) */
    uint64_t line_len;      /* decoded octets of the current line so far */
    uint64_t size;          /* decoded octets so far (also beyond max_size) */
    uint64_t emitted;       /* decoded octets handed to the sink (<= max_size) */
};

/* smtp_data_init - start decoding one DATA body. limits may be NULL for
 * the defaults (max_line 1000, no size limit, NUL refused). sink may be
 * NULL to only validate and find the end. */
void smtp_data_init(struct smtp_data_decoder *dec,
                    const struct smtp_data_limits *limits,
                    smtp_data_sink_fn *sink, void *sink_ctx);

/* smtp_data_feed - decode bytes that arrived; returns how many of them
 * were consumed. Everything is consumed until the terminator; the bytes
 * after it (pipelined commands) are not, and stay in the caller's buffer.
 * *done_r (optional) is set to true once the terminator was consumed; then
 * smtp_data_status() is final. Feeding a finished decoder consumes 0. */
size_t smtp_data_feed(struct smtp_data_decoder *dec, const void *data,
                      size_t len, bool *done_r);

bool smtp_data_is_done(const struct smtp_data_decoder *dec);

/* smtp_data_status - the verdict: the first content problem if any (the
 * message is refused whatever else happened), else SMTP_DATA_SINK_FAILED if
 * the sink failed, else SMTP_DATA_OK. Final only once done; before that it
 * is the verdict so far (a sink may use it to stop writing a message that
 * is going to be refused anyway). */
enum smtp_data_status smtp_data_status(const struct smtp_data_decoder *dec);

/* smtp_data_problem_line - 1-based line number of the first content
 * problem (0 if none), for the log. */
uint64_t smtp_data_problem_line(const struct smtp_data_decoder *dec);

/* smtp_data_size - decoded octets seen so far, counting also those past
 * max_size that were not emitted. */
uint64_t smtp_data_size(const struct smtp_data_decoder *dec);

/* smtp_data_status_name - short stable name for logs ("bare_lf", ...). */
const char *smtp_data_status_name(enum smtp_data_status status);

/* smtp_data_reply - the reply for a non-OK status (code, enhanced code,
 * text; all static). Returns -1 for SMTP_DATA_OK: success is answered by
 * the session with its own "250 2.0.0 Ok: queued as ID". Also used for
 * BDAT statuses. */
int smtp_data_reply(enum smtp_data_status status, struct smtp_reply_err *reply_r);

/* ---- BDAT (RFC 3030) --------------------------------------------------
 *
 * A BDAT chunk is exactly N octets of message, taken verbatim: no
 * transparency dots, no terminator search, no line-ending or line-length
 * rules (BINARYMIME may carry anything). What remains is the size limit,
 * the sink, and bare CR/LF counts for statistics only. One struct spans
 * all the chunks of one message. */
struct smtp_bdat_reader {
    uint64_t max_size; /* 0 = no limit */
    smtp_data_sink_fn *sink;
    void *sink_ctx;

    uint64_t chunk_left; /* octets of the current chunk still expected */
    bool last;           /* the current chunk is BDAT ... LAST */
    bool done;           /* the LAST chunk is complete */
    bool too_big;
    bool sink_failed;
    bool prev_cr;        /* last octet seen was CR (bare-CR/LF counting) */
    uint64_t size;       /* message octets so far (also past max_size) */
    uint64_t emitted;
    uint64_t bare_lf;    /* statistics only, never a reason to refuse */
    uint64_t bare_cr;
};

void smtp_bdat_init(struct smtp_bdat_reader *rd, uint64_t max_size,
                    smtp_data_sink_fn *sink, void *sink_ctx);

/* smtp_bdat_begin_chunk - a "BDAT size [LAST]" command was accepted; the
 * next size octets of input are message data. Returns -1 (and changes
 * nothing) if the previous chunk is not complete or LAST was already
 * seen: the session's state machine is wrong. */
int smtp_bdat_begin_chunk(struct smtp_bdat_reader *rd, uint64_t size, bool last);

/* smtp_bdat_feed - consume at most the rest of the current chunk from data;
 * returns the octets consumed (bytes after the chunk stay with the
 * caller). *chunk_done_r (optional) becomes true when the chunk is complete:
 * answer it then (smtp_bdat_status() for the LAST one, or early with 552
 * once too_big). */
size_t smtp_bdat_feed(struct smtp_bdat_reader *rd, const void *data, size_t len,
                      bool *chunk_done_r);

/* smtp_bdat_status - SMTP_DATA_TOO_BIG, SMTP_DATA_SINK_FAILED or
 * SMTP_DATA_OK, for the data seen so far. */
enum smtp_data_status smtp_bdat_status(const struct smtp_bdat_reader *rd);

#endif
