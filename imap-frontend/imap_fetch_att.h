/* imap_fetch_att - FETCH attributes and modifiers (RFC 9051 6.4.5, RFC 3501
 * 6.4.5, RFC 3516 BINARY, RFC 7162 CONDSTORE/QRESYNC) from the parsed
 * arguments that follow the sequence set:
 *     FETCH 1:* ALL
 *     FETCH 1 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (FROM TO)]<0.512>)
 *     UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)
 * into a list of items the session answers one by one, plus a mask of what
 * the store must supply. */
#ifndef IMAP_FETCH_ATT_H
#define IMAP_FETCH_ATT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_args.h"

#define IMAP_FETCH_MAX_PART_DEPTH 64u
#define IMAP_FETCH_MAX_ITEMS      1000u

enum imap_fetch_kind {
    IMAP_FETCH_FLAGS = 1,
    IMAP_FETCH_INTERNALDATE,
    IMAP_FETCH_RFC822,           /* = BODY[] but echoed as RFC822, sets \Seen */
    IMAP_FETCH_RFC822_HEADER,    /* = BODY.PEEK[HEADER] */
    IMAP_FETCH_RFC822_SIZE,
    IMAP_FETCH_RFC822_TEXT,      /* = BODY[TEXT], sets \Seen */
    IMAP_FETCH_ENVELOPE,
    IMAP_FETCH_BODY,             /* non-extensible BODYSTRUCTURE */
    IMAP_FETCH_BODYSTRUCTURE,
    IMAP_FETCH_UID,
    IMAP_FETCH_MODSEQ,
    IMAP_FETCH_BODY_SECTION,     /* BODY[...] / BODY.PEEK[...] */
    IMAP_FETCH_BINARY,           /* BINARY[...] / BINARY.PEEK[...] */
    IMAP_FETCH_BINARY_SIZE,      /* BINARY.SIZE[...] */
};

enum imap_section_kind {
    IMAP_SECTION_ALL = 0,        /* "" or part numbers only: the whole part */
    IMAP_SECTION_HEADER,
    IMAP_SECTION_HEADER_FIELDS,
    IMAP_SECTION_HEADER_FIELDS_NOT,
    IMAP_SECTION_TEXT,
    IMAP_SECTION_MIME,           /* only after a part number */
};

struct imap_fetch_section {
    uint32_t *parts;             /* "1.2.3" -> {1,2,3} */
    size_t n_parts;
    enum imap_section_kind kind;
    char **fields;               /* HEADER.FIELDS[.NOT] names, as sent */
    size_t n_fields;
};

struct imap_fetch_item {
    enum imap_fetch_kind kind;
    bool peek;                   /* .PEEK: do not set \Seen */
    struct imap_fetch_section section;
    bool has_partial;
    uint64_t partial_offset, partial_length;
    /* The item's name in the response: "BODY[HEADER.FIELDS (FROM)]<0>",
     * "BINARY.SIZE[1]", "RFC822.SIZE" - never ".PEEK", and for a partial
     * only the origin octet (RFC 9051 7.5.2). */
    char *echo;
};

/* What the store has to supply for each message. */
enum imap_fetch_need {
    IMAP_FETCH_NEED_FLAGS         = 1u << 0,
    IMAP_FETCH_NEED_UID           = 1u << 1,
    IMAP_FETCH_NEED_MODSEQ        = 1u << 2,
    IMAP_FETCH_NEED_INTERNALDATE  = 1u << 3,
    IMAP_FETCH_NEED_SIZE          = 1u << 4,
    IMAP_FETCH_NEED_ENVELOPE      = 1u << 5,
    IMAP_FETCH_NEED_BODYSTRUCTURE = 1u << 6,
    /* Message bytes: the header only, or (some of) the body too. */
    IMAP_FETCH_NEED_HEADER        = 1u << 7,
    IMAP_FETCH_NEED_BODY          = 1u << 8,
};

struct imap_fetch_spec {
    struct imap_fetch_item *items;
    size_t n_items;
    unsigned need;               /* enum imap_fetch_need bits */
    bool sets_seen;              /* some non-PEEK body item: implicit \Seen */
    bool changedsince_given;     /* CHANGEDSINCE modifier (implies MODSEQ) */
    uint64_t changedsince;
    bool vanished;               /* VANISHED modifier (UID FETCH only) */
};

/* imap_fetch_att_parse - args are the command's arguments after the
 * sequence set (1 or 2 of them). uid_fetch: the command was UID FETCH (UID
 * is then always returned, and VANISHED is allowed). 0 on success; -1 with
 * *err a static text for "TAG BAD <text>" and spec empty. */
int imap_fetch_att_parse(const struct imap_arg *args, size_t n_args, bool uid_fetch,
                         struct imap_fetch_spec *spec, const char **err);
void imap_fetch_spec_free(struct imap_fetch_spec *spec);

/* imap_fetch_parse_partial - "o.l" (the text between '<' and '>') with
 * overflow checks: o is a number, l a non-zero number, both 63-bit; a lone
 * "o" means from o to the end (l = 2^63 - 1), as Dovecot reads it. */
int imap_fetch_parse_partial(const char *text, uint64_t *offset, uint64_t *length);

#endif
