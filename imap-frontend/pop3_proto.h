/* pop3_proto - the pure parts of mx-imapd's POP3 server (RFC 1939, RFC
 * 2449, RFC 5034): command line parsing, SASL PLAIN decoding, the maildrop
 * built from the store's FETCH reply, the multi-line body encoder
 * (dot-stuffing, CRLF line ends, TOP's line limit) and the UID sets sent
 * back to the store at QUIT.
 *
 * No sockets, no event loop, no session: everything here is driven by
 * pop3_session.c and tested on its own by test_pop3_proto.c, so the
 * protocol corner cases (a '.' at a chunk boundary, a CR split from its
 * LF, TOP 0, overflowing numbers) are checked without a cluster. */
#ifndef POP3_PROTO_H
#define POP3_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_auth.h"

struct evbuffer;
struct mx_frame_view;

/* RFC 2449 4: a command line is at most 255 octets, CRLF included. */
#define POP3_CMD_LINE_MAX 255
/* RFC 5034 4: a client's SASL response line is not bound by the 255
 * octets of a command; PLAIN with 255-octet fields needs about 1 KiB of
 * base64. Longer lines are refused before they are buffered. */
#define POP3_SASL_LINE_MAX 4096
/* Longest login name / password we pass to the directory. */
#define POP3_CREDENTIAL_MAX MX_SASL_CREDENTIAL_MAX
/* RFC 1939 7: a unique-id is 1 to 70 characters 0x21..0x7E. */
#define POP3_UIDL_MAX 70

enum pop3_verb {
    POP3_VERB_UNKNOWN = 0,
    POP3_VERB_USER,
    POP3_VERB_PASS,
    POP3_VERB_APOP,
    POP3_VERB_AUTH,
    POP3_VERB_STLS,
    POP3_VERB_CAPA,
    POP3_VERB_QUIT,
    POP3_VERB_STAT,
    POP3_VERB_LIST,
    POP3_VERB_RETR,
    POP3_VERB_DELE,
    POP3_VERB_NOOP,
    POP3_VERB_RSET,
    POP3_VERB_TOP,
    POP3_VERB_UIDL,
    POP3_VERB_LAST,
};

/* A parsed command line. keyword is the verb as sent, upper-cased (for
 * "-ERR unknown command XYZZ"); args points into the caller's line: the
 * text after the keyword and its single separating space, NULL when the
 * line ends after the keyword. For PASS it is the password verbatim (RFC
 * 1939 7 lets a server take spaces as part of it); for every other verb
 * trailing blanks are already trimmed. */
struct pop3_cmd {
    enum pop3_verb verb;
    char keyword[5];
    const char *args;
};

/* pop3_cmd_parse - parse line[0..len) (CR/LF already removed; line[len]
 * must be writable and is set to NUL). -1 with a static *error_r for a
 * line that is not a command at all (empty, NUL byte, keyword not 3-4
 * letters); an unknown but well-formed keyword is 0 with
 * POP3_VERB_UNKNOWN. */
int pop3_cmd_parse(char *line, size_t len, struct pop3_cmd *cmd, const char **error_r);

/* pop3_parse_numbers - exactly between min and max space-separated
 * decimal numbers in args (NULL = none); each must fit in uint32_t (a
 * message number, TOP's line count). No signs, no hex, no leading '+'.
 * 0 and *n_r, or -1. */
int pop3_parse_numbers(const char *args, uint32_t *nums, size_t min, size_t max, size_t *n_r);


/* ---- the maildrop ------------------------------------------------------ */

/* One message of the maildrop; message number = index + 1 (UID order). */
struct pop3_msg {
    uint64_t size;
    uint32_t uid;
    uint32_t uidl_off; /* into pop3_maildrop.uidl_pool */
    bool deleted;      /* DELE'd in this session (undone by RSET) */
};

struct pop3_maildrop {
    struct pop3_msg *msgs;
    uint32_t count;
    char *uidl_pool; /* NUL-terminated unique-ids, back to back */
    size_t pool_len;
    uint32_t n_deleted;
    uint64_t bytes;         /* all messages */
    uint64_t deleted_bytes; /* the DELE'd ones */
};

/* pop3_maildrop_from_fetch - the maildrop from a MSG_STORE_ANY_FETCH_RESULT
 * asked with MX_FETCH_SIZE | MX_FETCH_POP3_UIDL: per message F_UID, then
 * F_SIZE and F_POP3_UIDL in any order. Sorted by UID. -1 with a static
 * *error_r when a record lacks a field, a UID repeats, or a unique-id is
 * not 1..70 printable characters (the maildrop is then empty). */
int pop3_maildrop_from_fetch(const struct mx_frame_view *reply, struct pop3_maildrop *drop,
                             const char **error_r);
void pop3_maildrop_free(struct pop3_maildrop *drop);
/* pop3_maildrop_uidl - the unique-id of message index i. */
const char *pop3_maildrop_uidl(const struct pop3_maildrop *drop, uint32_t i);
/* pop3_maildrop_mark / _reset - DELE and RSET, keeping the counters. */
void pop3_maildrop_mark(struct pop3_maildrop *drop, uint32_t i);
void pop3_maildrop_reset(struct pop3_maildrop *drop);
/* pop3_maildrop_deleted_uids - the DELE'd UIDs, ascending (heap; NULL
 * when none). */
uint32_t *pop3_maildrop_deleted_uids(const struct pop3_maildrop *drop, size_t *n_r);

/* ---- multi-line body responses (RETR, TOP) ---------------------------- */

/* Turns the stored message, fed in chunks of any size, into the body of a
 * multi-line response: every line ends in CRLF (a bare LF gets its CR; a
 * CR split from its LF by a chunk boundary is recognised), a line that
 * starts with '.' gets another one (RFC 1939 3), and for TOP only the
 * header, the blank line after it and the first `lines` body lines are
 * written. */
struct pop3_body_encoder {
    bool limit_lines;    /* TOP */
    uint32_t lines_left; /* TOP: body lines still to write */
    bool in_header;
    bool at_line_start;
    bool last_was_cr;     /* the last byte written was a CR (line may end next) */
    uint64_t line_octets; /* of the current line so far, CR included */
    bool done;            /* TOP's limit reached: the rest is skipped */
    uint64_t octets_out;  /* written so far, stuffing and terminator included */
};

void pop3_body_encoder_init(struct pop3_body_encoder *enc, bool top, uint32_t lines);
/* pop3_body_encode - append data[0..len) to out. Once enc->done is set
 * further input is ignored. */
void pop3_body_encode(struct pop3_body_encoder *enc, const uint8_t *data, size_t len,
                      struct evbuffer *out);
/* pop3_body_finish - end the last line if it was open, then ".\r\n". */
void pop3_body_finish(struct pop3_body_encoder *enc, struct evbuffer *out);

/* ---- UID sets for the store --------------------------------------------- */

/* pop3_uidset_format - an IMAP UID set ("3:7,9") of the longest prefix of
 * uids[0..n) (ascending) whose text fits max_len characters and max_ranges
 * ranges: the store refuses longer sets, so a QUIT that deletes thousands
 * of scattered messages goes out in several requests. Returns how many
 * UIDs the text covers (at least one when n > 0 and max_len >= 21 and
 * max_ranges >= 1); *text_r is heap. */
size_t pop3_uidset_format(const uint32_t *uids, size_t n, size_t max_len, size_t max_ranges,
                          char **text_r);
/* pop3_uidset_count - how many UIDs a set without '*' names ("1:3,7" is
 * 4), from the store's EXPUNGE reply (text[0..len), not NUL-terminated).
 * -1 when it is malformed. */
int pop3_uidset_count(const char *text, size_t len, uint64_t *count_r);

#endif
