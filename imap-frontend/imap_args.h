/* imap_args - the parsed form of one IMAP command's arguments (RFC 9051
 * section 9 / RFC 3501 section 9 grammar), shared by the command parser
 * (imap_parser.c) and every command handler (imap_cmd_*.c, imap_search.c).
 *
 * A command arrives as one buffer: the command line with every literal's
 * bytes inline (imap_reader assembles it). imap_parse_command() turns the text
 * after "TAG SP COMMAND" into a tree of imap_arg. Strings are NOT
 * NUL-terminated in general (literals may hold NUL in literal8); use len.
 * ATOM/QUOTED strings point into the parsed command's arena, literals into
 * the command buffer (struct imap_command, imap_parser.h). */
#ifndef IMAP_ARGS_H
#define IMAP_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum imap_arg_type {
    IMAP_ARG_ATOM = 1,    /* atom, including "\Seen", "BODY[1.2]<0.10>" pieces
                             are split (see below) */
    IMAP_ARG_QUOTED,      /* "..." with escapes removed */
    IMAP_ARG_LITERAL,     /* {n} / {n+}: n bytes (RFC 7888 has no {n-}) */
    IMAP_ARG_LITERAL8,    /* ~{n}: binary literal (APPEND with BINARY) */
    IMAP_ARG_NIL,         /* the atom NIL (case-insensitive) */
    IMAP_ARG_LIST,        /* ( ... ) */
};

struct imap_arg {
    enum imap_arg_type type;
    const char *str;      /* ATOM/QUOTED/LITERAL/LITERAL8: bytes, NUL-terminated
                             (LITERAL8 may contain NUL). ATOM/QUOTED live in the
                             arena; LITERAL* point into the command buffer (no
                             copy of a 64 MiB APPEND), see imap_parser.h */
    size_t len;
    struct imap_arg *list; /* LIST: children */
    size_t n_list;
    /* ATOM followed directly by "[" ... "]" and optional "<...>" as in
     * BODY[HEADER.FIELDS (A B)]<0.100>: the atom is "BODY", section holds the
     * parsed inside of the brackets as its own list (so "HEADER.FIELDS" and
     * the (A B) list are children) and partial the raw "<...>" text (without
     * brackets), or NULL. has_section tells "BODY" from "BODY[]". */
    bool has_section;
    struct imap_arg *section;
    size_t n_section;
    const char *partial;
};

/* Helpers every handler uses. */
static inline bool imap_arg_is_string(const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED ||
           a->type == IMAP_ARG_LITERAL;
}
#endif
