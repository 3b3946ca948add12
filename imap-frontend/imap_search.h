/* imap_search - IMAP SEARCH programs (RFC 3501 / RFC 9051 section 6.4.4,
 * ESEARCH RFC 4731, SEARCHRES RFC 5182, CONDSTORE MODSEQ RFC 7162).
 *
 * The session hands the argument tree after "SEARCH" (or "UID SEARCH") to
 * imap_search_parse(), asks imap_search_need() what it must fetch from the
 * store per message, and calls imap_search_match() once per message of its
 * mailbox view. Matching is done here, in the frontend; the store only
 * serves index data and raw message bytes.
 *
 * Semantics (Dovecot-like, what clients expect):
 *  - string keys match a case-insensitive (Unicode case folded, NFKC)
 *    substring of the decoded text: header keys decode RFC 2047 and unfold,
 *    BODY searches the decoded "text/..." parts converted to UTF-8, TEXT is the
 *    decoded header plus BODY text. An empty string matches every message
 *    (HEADER with an empty string: every message having that field).
 *  - BEFORE / ON / SINCE compare the date part of the internal date in UTC
 *    (the server's time zone for this purpose is UTC).
 *  - SENTBEFORE / SENTON / SENTSINCE compare the date part of the Date:
 *    header in the header's own time zone; messages without a parsable
 *    Date: header never match them.
 *  - MODSEQ ignores the optional entry name / type (we keep one modseq per
 *    message, which RFC 7162 allows) and matches modseq >= value. */
#ifndef IMAP_SEARCH_H
#define IMAP_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_args.h"

/* System flag bits in imap_search_msg.flags (store/store.h STORE_FLAG_*;
 * Recent is kept by the session). */
#define IMAP_SEARCH_FLAG_SEEN 0x01u
#define IMAP_SEARCH_FLAG_ANSWERED 0x02u
#define IMAP_SEARCH_FLAG_FLAGGED 0x04u
#define IMAP_SEARCH_FLAG_DELETED 0x08u
#define IMAP_SEARCH_FLAG_DRAFT 0x10u
#define IMAP_SEARCH_FLAG_RECENT 0x20u

/* What a program needs per message, cheapest first. */
enum imap_search_need {
    IMAP_SEARCH_NEED_INDEX = 0,   /* seq, uid, flags, keywords, dates, size, modseq */
    IMAP_SEARCH_NEED_HEADER = 1,  /* + the raw header block (raw may stop after it) */
    IMAP_SEARCH_NEED_BODY = 2,    /* + the whole raw message */
};

/* ESEARCH RETURN options (RFC 4731, RFC 5182 SAVE). */
#define IMAP_SEARCH_RETURN_MIN 0x01u
#define IMAP_SEARCH_RETURN_MAX 0x02u
#define IMAP_SEARCH_RETURN_ALL 0x04u
#define IMAP_SEARCH_RETURN_COUNT 0x08u
#define IMAP_SEARCH_RETURN_SAVE 0x10u

struct imap_search_limits {
    unsigned max_depth;        /* parenthesis / NOT / OR nesting (default 64) */
    unsigned max_keys;         /* search keys in one program (default 10000) */
    size_t max_decode_bytes;   /* decoded body text per message (default 16 MiB) */
};

/* imap_search_limits_default - the defaults above. */
void imap_search_limits_default(struct imap_search_limits *limits);

/* The mailbox as the session sees it: uids[seq - 1] for seq 1..count,
 * ascending. searchres is the saved result of an earlier SEARCH ... SAVE
 * ($, RFC 5182) as UIDs, ascending; NULL/0 when nothing was saved. */
struct imap_search_view {
    const uint32_t *uids;
    uint32_t count;
    const uint32_t *searchres;
    size_t searchres_count;
};

/* One message. raw/raw_len: NULL unless need() asked for it (the header
 * block alone is enough for IMAP_SEARCH_NEED_HEADER). */
struct imap_search_msg {
    uint32_t seq, uid;
    uint32_t flags;              /* IMAP_SEARCH_FLAG_* */
    const char *keywords;        /* space separated, NULL or "" for none */
    uint64_t internaldate_ms;    /* since the epoch */
    uint64_t size;               /* RFC822.SIZE */
    uint64_t modseq;
    const char *raw;
    size_t raw_len;
};

enum imap_search_error_kind {
    IMAP_SEARCH_ERR_BAD = 1,        /* "TAG BAD <text>" */
    IMAP_SEARCH_ERR_BADCHARSET,     /* "TAG NO " IMAP_SEARCH_BADCHARSET_CODE " <text>" */
};

/* The response code for an unsupported CHARSET: the charsets we accept
 * without conversion (any other iconv knows is converted, but listing
 * hundreds of names helps no client). */
#define IMAP_SEARCH_BADCHARSET_CODE "[BADCHARSET (UTF-8 US-ASCII)]"

struct imap_search_error {
    enum imap_search_error_kind kind;
    char text[160];
};

struct imap_search_program;

/* imap_search_parse - parse "[RETURN (...)] [CHARSET name] key..." (args
 * after the SEARCH command word). allow_return: false for plain SEARCH on a
 * server without ESEARCH (RETURN is then a BAD). Returns NULL and fills
 * *error_r on any error. */
struct imap_search_program *imap_search_parse(const struct imap_arg *args, size_t n_args,
                                              bool allow_return,
                                              const struct imap_search_limits *limits,
                                              struct imap_search_error *error_r);
/* imap_search_parse_charset - for SORT / THREAD: args[0] is the mandatory
 * charset name, the search keys follow (no RETURN). */
struct imap_search_program *imap_search_parse_charset(const struct imap_arg *args, size_t n_args,
                                                      const struct imap_search_limits *limits,
                                                      struct imap_search_error *error_r);
void imap_search_free(struct imap_search_program *program);

/* imap_search_save_filter - RFC 5182 2.4: with SAVE plus MIN and/or MAX but
 * neither ALL nor COUNT, only the minimum / maximum is saved. Compacts the
 * ascending numbers in place to what the session saves; returns the count. */
size_t imap_search_save_filter(const struct imap_search_program *program, uint32_t *numbers,
                               size_t count);

/* imap_search_need - what the session must fetch per message. */
enum imap_search_need imap_search_need(const struct imap_search_program *program);

/* imap_search_has_return - RETURN was given (answer with ESEARCH); the
 * options as IMAP_SEARCH_RETURN_* ("RETURN ()" means ALL). */
bool imap_search_has_return(const struct imap_search_program *program);
unsigned imap_search_return_options(const struct imap_search_program *program);

/* imap_search_force_esearch - IMAP4rev2 (RFC 9051 6.4.4): a SEARCH
 * without RETURN is answered with ESEARCH as if "RETURN (ALL)" was given. */
void imap_search_force_esearch(struct imap_search_program *program);

/* imap_search_uses_modseq - a MODSEQ key appeared: RFC 7162 wants
 * "(MODSEQ highest-matching)" in the response and CONDSTORE enabled. */
bool imap_search_uses_modseq(const struct imap_search_program *program);

/* imap_search_uses_searchres - "$" appeared (RFC 5182: the session must
 * not run this command concurrently with one that SAVEs). */
bool imap_search_uses_searchres(const struct imap_search_program *program);

/* imap_search_match - does the message match? view is the session's
 * current mailbox view (for sequence sets, "*" and "$"). */
bool imap_search_match(const struct imap_search_program *program,
                       const struct imap_search_view *view, const struct imap_search_msg *msg);

/* imap_search_format_result - the untagged response for the matching
 * numbers (seqs, or uids for UID SEARCH; ascending): "* SEARCH 2 3 5" (with
 * " (MODSEQ n)" when highest_modseq != 0), or for a RETURN program
 * "* ESEARCH (TAG "A1") UID MIN 2 MAX 5 COUNT 3 ALL 2:3,5" (+ " MODSEQ n").
 * No CRLF. The caller frees the string. */
char *imap_search_format_result(const struct imap_search_program *program, const char *tag,
                                bool uid, const uint32_t *numbers, size_t count,
                                uint64_t highest_modseq);

#endif
