/* mx_header - RFC 5322 header-section helpers (mail-aware part of
 * libmxcommon; inbound, delivery and filter share them).
 *
 *   - an incremental scanner that finds the end of the header section and
 *     counts chosen fields (Date, Message-ID, Received, ...), fed the
 *     decoded message in any split, O(1) memory;
 *   - formatters for the header fields we add ourselves: Received (RFC 5321
 *     4.4), Date and Message-ID (RFC 5322, RFC 6409 8.2/8.3).
 *
 * Every formatter writes a complete field INCLUDING its final CRLF, folded
 * with CRLF + TAB; values that came from a peer (HELO, rDNS, recipient,
 * user name) are filtered so that no CR, LF, control or comment delimiter
 * can reach the output: header injection through them is impossible.
 * Formatters return 0, or -1 with *error_r (static string) when an argument
 * is unusable or buf is too small; on -1 buf holds an empty string. */
#ifndef MX_HEADER_H
#define MX_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- incremental header scanner ---------------------------------------- */

#define MX_HEADER_SCAN_MAX_NAMES 16
/* Longest field name the scanner can match (RFC 5322 puts no limit on a
 * name, but every name we look for is short; longer ones just never match). */
#define MX_HEADER_NAME_MAX 64

struct mx_header_scan {
    /* configuration (from init) */
    const char *const *names;
    size_t name_count;

    /* results */
    unsigned counts[MX_HEADER_SCAN_MAX_NAMES]; /* occurrences of names[i] */
    uint64_t fields;          /* header fields seen (continuations excluded) */
    uint64_t malformed_lines; /* lines that are neither a field nor a continuation */
    uint64_t header_size;     /* octets of the section incl. the empty line */
    bool done;                /* end of the section reached */
    bool has_empty_line;      /* it ended with an empty line (else: end of message) */

    /* private state */
    int state;
    size_t name_len;
    bool name_overflow;
    char name[MX_HEADER_NAME_MAX];
};

/* mx_header_scan_init - count the fields in names (case-insensitive,
 * matched against the name before ':', trailing WSP ignored as RFC 5322
 * obs-syntax allows). names must stay valid while scanning. -1 if there
 * are more than MX_HEADER_SCAN_MAX_NAMES names or a name is empty, longer
 * than MX_HEADER_NAME_MAX or not RFC 5322 ftext. */
int mx_header_scan_init(struct mx_header_scan *scan, const char *const *names,
                        size_t name_count, const char **error_r);

/* mx_header_scan_feed - scan the next bytes of the message; returns how
 * many belong to the header section (fewer than len only when the empty
 * line ending it is inside this chunk; the rest is body). Lines may end in
 * CRLF or a bare LF (messages read back from a Maildir file use LF). After
 * done, returns 0. */
size_t mx_header_scan_feed(struct mx_header_scan *scan, const void *data, size_t len);

/* mx_header_scan_finish - the message ended; a section without an empty
 * line is the whole message (RFC 5322 allows a message without a body). */
void mx_header_scan_finish(struct mx_header_scan *scan);

/* mx_header_scan_count - occurrences of names[index] so far. */
unsigned mx_header_scan_count(const struct mx_header_scan *scan, size_t index);

/* ---- formatters ------------------------------------------------------- */

/* Room that is always enough for mx_header_format_received(). */
#define MX_HEADER_RECEIVED_MAX 2048
/* RFC 5322 2.1.1: lines SHOULD be at most 78 characters; ours are kept
 * strictly below that (a single word longer than a line, such as a 255-octet
 * host name, is the only exception and stays far below the 998 limit). */
#define MX_HEADER_FOLD_WIDTH 77

struct mx_received_info {
    const char *helo;        /* client's HELO/EHLO argument, untrusted; NULL = none */
    const char *rdns;        /* verified reverse DNS name; NULL or invalid = "unknown" */
    const char *ip;          /* client IP, textual IPv4 or IPv6 (required) */
    const char *by_host;     /* our host name (required, a valid domain) */
    const char *id;          /* our queue / cluster message id (required, alphanumeric) */
    const char *rcpt;        /* the single recipient, or NULL (omit "for" when several) */
    const char *tls_version; /* e.g. "TLSv1.3"; NULL = no TLS */
    const char *tls_cipher;  /* e.g. "TLS_AES_256_GCM_SHA384"; may be NULL */
    const char *auth_user;   /* authenticated user; NULL = no AUTH */
    bool show_auth_user;     /* privacy: the user name is written only if true */
    bool esmtp;              /* EHLO (false: HELO => "SMTP") */
    bool utf8;               /* SMTPUTF8 transaction => UTF8SMTP* protocol names */
    time_t date;
};

/* mx_header_with_protocol - RFC 3848 / RFC 6531 "with" value for the
 * session: SMTP, ESMTP[S][A], UTF8SMTP[S][A] (static string). TLS, AUTH or
 * UTF8 imply EHLO. */
const char *mx_header_with_protocol(bool esmtp, bool tls, bool auth, bool utf8);

/* mx_header_format_received - our Received: trace field (RFC 5321 4.4):
 *   Received: from HELO (RDNS [IP])
 *           (using TLSv1.3 with cipher ...)
 *           (Authenticated sender: USER)
 *           by HOST (mxcluster) with ESMTPSA id ID
 *           for <RCPT>; Mon, 23 Nov 2026 10:00:00 +0000
 * A HELO that is not a valid domain or address literal is not used as the
 * From-domain ("from unknown") but shown in a comment, escaped. An rcpt
 * with characters outside a conservative address set is left out (the
 * "for" clause is optional; a ';' or '(' in it would mislead parsers). */
int mx_header_format_received(char *buf, size_t size, const struct mx_received_info *info,
                              const char **error_r);

/* mx_header_format_date_value - RFC 5322 date-time in UTC, e.g.
 * "Mon, 23 Nov 2026 10:00:00 +0000"; locale-independent (own day and
 * month tables). Years outside 1900..9999 are refused. */
int mx_header_format_date_value(char *buf, size_t size, time_t t, const char **error_r);

/* mx_header_format_date - "Date: <date-time>\r\n". */
int mx_header_format_date(char *buf, size_t size, time_t t, const char **error_r);

/* mx_header_format_message_id - "Message-ID: <id_text@domain>\r\n".
 * id_text must be RFC 5322 dot-atom-text and domain a valid domain name
 * (both ours, e.g. the cluster message id and the host name). */
int mx_header_format_message_id(char *buf, size_t size, const char *id_text,
                                const char *domain, const char **error_r);

/* mx_header_is_domain - RFC 5321 Domain: LDH labels of 1..63 octets,
 * letter or digit at both ends, total <= 255. Exposed for callers that
 * validate a HELO or a host name the same way. */
bool mx_header_is_domain(const char *s);

#endif
