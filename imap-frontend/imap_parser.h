/* imap_parser - the input side of mx-imapd: framing of client bytes into
 * complete commands (imap_reader) and parsing of one command into tag, name
 * and an imap_args tree (imap_parse_command). RFC 3501 / RFC 9051 grammar,
 * RFC 7888 LITERAL+/LITERAL-, RFC 3516 literal8, RFC 6855 UTF8=ACCEPT.
 *
 * Pure code apart from the evbuffer convenience wrapper: no I/O, no logging,
 * every limit explicit, so both halves can be fuzzed (tests/fuzz).
 *
 * The command buffer contract between reader and parser. A command is
 * assembled as one buffer holding, in order,
 *     line text ... "{n}" or "{n+}" or "~{n}" ...   (terminator replaced by)
 *     "\r\n" <n literal bytes> "\0"
 *     more line text ... (another literal, or the end of the command)
 * i.e. every literal announcement is followed by exactly CRLF whatever line
 * end the client used (bare LF is accepted), its bytes, and one NUL the
 * parser skips; the final line terminator is not stored. That NUL makes
 * every literal a C string in place (for LOGIN, SELECT, ...) without a copy
 * of what may be a 64 MiB APPEND. The buffer itself is NUL-terminated too.
 *
 * A session's read callback, in outline:
 *     for (;;) switch (imap_reader_read_evbuffer(r, input)) {
 *     case IMAP_READ_NEED_MORE:        return;
 *     case IMAP_READ_NEED_CONTINUATION: write "+ Ready\r\n"; break;
 *     case IMAP_READ_COMMAND:           buf = imap_reader_command(r, &len);
 *                                       imap_parse_command(buf, len, &o, &cmd);
 *                                       run it (or "TAG BAD cmd.error");
 *                                       imap_command_free(&cmd); break;
 *     case IMAP_READ_LINE_TOO_LONG:     "TAG BAD ..." / "* BAD ..."; break;
 *     case IMAP_READ_LITERAL_TOO_BIG:   "TAG NO [TOOBIG] ..."; break;
 *     case IMAP_READ_RAW_LINE:          IDLE's DONE / a SASL response; break;
 *     case IMAP_READ_FATAL:             "* BYE ...", close; return;
 *     }
 * The parsed literals point into the reader's buffer: a command that waits
 * for the store (asynchronously) must be finished before the reader is
 * called again; pipelined bytes simply stay in the evbuffer meanwhile. */
#ifndef IMAP_PARSER_H
#define IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_args.h"

struct evbuffer;

/* ---- reader: bytes -> complete commands ---------------------------------- */

#define IMAP_READER_DEFAULT_MAX_LINE      (64u * 1024u)
#define IMAP_READER_DEFAULT_MAX_LITERAL   (64u * 1024u * 1024u)
/* Whole command: the largest literal plus room for MULTIAPPEND's text. */
#define IMAP_READER_DEFAULT_MAX_COMMAND   (IMAP_READER_DEFAULT_MAX_LITERAL + 1024u * 1024u)
#define IMAP_READER_DEFAULT_MAX_LITERALS  1000u
/* RFC 7888 section 5: LITERAL- allows non-synchronizing literals up to
 * 4096 octets only. */
#define IMAP_LITERAL_MINUS_MAX            4096u

/* Which non-synchronizing literals the session advertised. */
enum imap_literal_mode {
    IMAP_LITERAL_SYNC_ONLY = 0, /* neither: "{n+}" is a protocol violation */
    IMAP_LITERAL_PLUS,          /* LITERAL+: {n+} up to max_literal */
    IMAP_LITERAL_MINUS,         /* LITERAL-: {n+} up to 4096 */
};

struct imap_reader_limits {
    size_t max_line;       /* one line's text, literal bytes excluded */
    size_t max_literal;    /* one literal (APPEND size limit) */
    size_t max_command;    /* the whole assembled command */
    size_t max_literals;   /* literals per command (MULTIAPPEND) */
};

enum imap_read_status {
    /* All input consumed; no complete command yet. */
    IMAP_READ_NEED_MORE = 0,
    /* A complete command: imap_reader_command(). */
    IMAP_READ_COMMAND,
    /* A synchronizing literal was announced and accepted: the session writes
     * "+ Ready\r\n" and feeds more (reported once per literal). */
    IMAP_READ_NEED_CONTINUATION,
    /* A line exceeded max_line (or the command max_command). The reader has
     * dropped the command and discards input up to the next LF by itself;
     * the session answers "TAG BAD line too long" (imap_reader_tag()) or
     * "* BAD", or BYE if this repeats. */
    IMAP_READ_LINE_TOO_LONG,
    /* A synchronizing literal over max_literal / max_command / max_literals.
     * No "+" was sent, so the client sends no bytes: the command is dropped
     * and the session answers "TAG NO [TOOBIG] ..." (or BAD) and carries on.
     * imap_reader_error() says which limit. */
    IMAP_READ_LITERAL_TOO_BIG,
    /* In raw-line mode (imap_reader_want_raw_line): one line, CRLF removed,
     * in imap_reader_command() (no literal processing, no NUL check). */
    IMAP_READ_RAW_LINE,
    /* Unrecoverable: a non-synchronizing literal that is too big or not
     * allowed - its bytes are on their way and cannot be told apart from
     * commands (RFC 7888 section 4). Send BYE and close. */
    IMAP_READ_FATAL,
};

/* Position of one literal's bytes inside the command buffer. */
struct imap_literal_pos {
    size_t offset;      /* first byte */
    size_t len;
    bool literal8;      /* ~{n} */
    bool sync;          /* {n} rather than {n+} */
};

struct imap_reader;

/* imap_reader_new - limits NULL or a field 0 means the default. */
struct imap_reader *imap_reader_new(const struct imap_reader_limits *limits);
void imap_reader_free(struct imap_reader *r);
void imap_reader_set_literal_mode(struct imap_reader *r, enum imap_literal_mode mode);

/* imap_reader_read - feed len bytes; *consumed says how many were taken.
 * Stops at the first event (any status but NEED_MORE), so the caller calls
 * again with the rest: a pipelined burst yields one command per call. Data
 * returned by imap_reader_command() stays valid until the next call. */
enum imap_read_status imap_reader_read(struct imap_reader *r, const void *data, size_t len,
                                       size_t *consumed);
/* imap_reader_read_evbuffer - the same, draining what it consumed from in. */
enum imap_read_status imap_reader_read_evbuffer(struct imap_reader *r, struct evbuffer *in);

/* The assembled command (or raw line) after IMAP_READ_COMMAND/RAW_LINE:
 * NUL-terminated buffer and its length (the NUL not counted). */
const char *imap_reader_command(const struct imap_reader *r, size_t *len);
const struct imap_literal_pos *imap_reader_literals(const struct imap_reader *r, size_t *n);
/* imap_reader_tag - the tag of the command being read or just rejected
 * (after LINE_TOO_LONG / LITERAL_TOO_BIG / FATAL), if one could be read:
 * NULL otherwise (answer "* BAD"). Not NUL-terminated. */
const char *imap_reader_tag(const struct imap_reader *r, size_t *len);
/* imap_reader_error - why the last LINE_TOO_LONG / LITERAL_TOO_BIG / FATAL
 * happened, as text for the response ("literal of 99999999999 octets
 * exceeds the 67108864 octet limit"). */
const char *imap_reader_error(const struct imap_reader *r);
/* imap_reader_want_raw_line - the next event is one raw line (IDLE's
 * "DONE", an AUTHENTICATE response); the mode ends after that line, or
 * with LINE_TOO_LONG if the line was too long. Raw lines are not checked
 * for NUL or 8-bit bytes: the base64 decoder / "DONE" compare does that. */
void imap_reader_want_raw_line(struct imap_reader *r);
/* imap_reader_buffered - bytes held for the command in progress. */
size_t imap_reader_buffered(const struct imap_reader *r);

/* ---- parser: one command -> tag, name, args ---------------------------- */

#define IMAP_PARSE_DEFAULT_MAX_DEPTH 32u
#define IMAP_PARSE_MAX_DEPTH_LIMIT   256u  /* recursion guard for max_depth */
#define IMAP_COMMAND_NAME_MAX        32u

struct imap_parse_options {
    unsigned max_depth;    /* list nesting; 0 = default */
    bool utf8_accept;      /* ENABLE UTF8=ACCEPT was done: UTF-8 in quoted */
};

struct imap_arena;

struct imap_command {
    /* NUL-terminated copy in the arena, or NULL when there was no valid
     * tag (answer "* BAD"). Set even when the rest failed to parse. */
    const char *tag;
    size_t tag_len;
    /* Upper-cased command name without the UID prefix ("FETCH"). */
    char name[IMAP_COMMAND_NAME_MAX + 1];
    bool uid;              /* "UID FETCH", "UID STORE", ... */
    struct imap_arg *args; /* top-level arguments */
    size_t n_args;
    /* On failure: text for "TAG BAD <error>", with the offset into the
     * command buffer where it was detected. */
    char error[128];
    size_t error_offset;
    struct imap_arena *arena;
};

/* imap_parse_command - parse buf[0..len) laid out as the reader's command
 * buffer (see top). 0 on success; -1 with cmd->error set (cmd->tag too if
 * it was valid). Either way call imap_command_free(). ATOM/QUOTED strings
 * live in the command's arena; LITERAL/LITERAL8 strings point into buf, so
 * buf must outlive the parsed command. */
int imap_parse_command(const char *buf, size_t len, const struct imap_parse_options *opts,
                       struct imap_command *cmd);
void imap_command_free(struct imap_command *cmd);
/* imap_command_arena_bytes - memory held by the arena (tests, limits). */
size_t imap_command_arena_bytes(const struct imap_command *cmd);

/* imap_utf8_valid - strict UTF-8 (no overlong forms, surrogates or code
 * points above U+10FFFF). */
bool imap_utf8_valid(const char *s, size_t len);

#endif
