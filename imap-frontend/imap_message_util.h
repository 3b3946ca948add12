/* imap_message_util - pure helpers of the IMAP message commands
 * (imap_cmd_message.c): HEADER.FIELDS filtering, the content transfer
 * decodings BINARY needs (RFC 3516), the APPEND date-time (RFC 3501 /
 * RFC 9051 "date-time") and flag lists. No I/O, no session: everything
 * here is unit-tested (test_imap_message.c) and safe on hostile input. */
#ifndef IMAP_MESSAGE_UTIL_H
#define IMAP_MESSAGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* imap_header_filter - the fields of a header block whose names are (or,
 * with exclude, are not) in names[0..n_names), compared case-insensitively,
 * each copied verbatim with its folded continuation lines, followed by the
 * blank line RFC 9051 6.4.5 says HEADER.FIELDS includes when hdr has one (a
 * message without body and blank line, or a part without header, gets none:
 * RFC 3501 6.4.5). A field without a final line break gets CRLF.
 * Lines that are not fields (no colon, or junk before the first field) are
 * dropped. Heap result (NUL-terminated too), length in *out_len_r. */
char *imap_header_filter(const char *hdr, size_t hdr_len, char *const *names, size_t n_names,
                         bool exclude, size_t *out_len_r);

enum imap_cte {
    IMAP_CTE_IDENTITY = 0, /* 7bit, 8bit, binary, or none given */
    IMAP_CTE_BASE64,
    IMAP_CTE_QUOTED_PRINTABLE,
    IMAP_CTE_UNKNOWN,      /* x-uuencode, garbage: BINARY answers [UNKNOWN-CTE] */
};

/* imap_cte_of_header - the Content-Transfer-Encoding of a MIME header
 * block (a part's "N.MIME" or a message's "HEADER"); identity when the
 * field is absent (RFC 2045 6.1: default 7bit). */
enum imap_cte imap_cte_of_header(const char *hdr, size_t hdr_len);

/* imap_base64_decode - RFC 2045 6.8 decoding: characters outside the
 * alphabet (line breaks, white space, junk) are ignored, decoding stops at
 * the first '=' pad. out must hold (len / 4 + 1) * 3 bytes; returns the
 * number written. Never fails: a truncated final quantum yields the whole
 * bytes it holds. */
size_t imap_base64_decode(const char *in, size_t len, unsigned char *out);

/* imap_qp_decode - RFC 2045 6.7 quoted-printable: "=XX" (either case) to
 * one byte, soft line breaks ("=" at the end of a line, also after
 * trailing white space) removed, white space at the end of a line dropped
 * (rule 3), hard line breaks kept as they are. A malformed "=" is kept
 * literally (6.7 note 1). out must hold len bytes; returns the count. */
size_t imap_qp_decode(const char *in, size_t len, unsigned char *out);

/* imap_parse_datetime - RFC 3501 / RFC 9051 date-time without its quotes:
 * "dd-Mon-yyyy hh:mm:ss +zzzz", the day as two digits or SP + digit, the
 * month name case-insensitive, a real calendar date, zone -1200..+1400 with
 * minutes < 60. Strict: anything else is -1. *ms_r: ms since the epoch. */
int imap_parse_datetime(const char *text, size_t len, int64_t *ms_r);

/* imap_keyword_valid - a keyword (flag-keyword = atom) a client may store:
 * 1..255 atom characters, none of "(){ %*\"\\]" or controls or 8-bit. */
bool imap_keyword_valid(const char *kw, size_t len);

#endif
