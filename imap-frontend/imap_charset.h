/* imap_charset - text helpers shared by SEARCH, SORT and THREAD:
 * charset conversion to UTF-8, case folding for comparisons, RFC 5322
 * header field lookup with unfolding and RFC 2047 decoding, and extraction
 * of the decoded text of a message's "text/..." body parts.
 *
 * Everything here works on caller-supplied byte ranges (raw messages are not
 * NUL-terminated) and returns heap strings the caller frees with free().
 * GMime/glib do the heavy lifting (charset tables, encoded-words, MIME
 * structure); imap_charset_init() initialises GMime once per process and is
 * called implicitly by every function that needs it. */
#ifndef IMAP_CHARSET_H
#define IMAP_CHARSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* imap_charset_init - g_mime_init() exactly once (thread safe). */
void imap_charset_init(void);

enum imap_charset_result {
    IMAP_CHARSET_OK = 0,
    IMAP_CHARSET_UNKNOWN = -1,  /* no converter for that charset name */
    IMAP_CHARSET_INVALID = -2,  /* input is not valid in that charset */
};

/* imap_charset_is_utf8_compatible - true for UTF-8 and US-ASCII (any case,
 * with or without the dash), whose strings need no conversion. */
bool imap_charset_is_utf8_compatible(const char *charset);

/* imap_charset_to_utf8 - convert len bytes of text in charset to a fresh
 * NUL-terminated UTF-8 string (*out_r, length *out_len_r). */
enum imap_charset_result imap_charset_to_utf8(const char *charset, const char *text, size_t len,
                                              char **out_r, size_t *out_len_r);

/* imap_fold - the comparison form of len bytes of (possibly invalid) UTF-8:
 * invalid sequences replaced, Unicode case folded and NFKC normalised, so
 * that "Ǆ", "ǅ" and "ǆ" or full-width and ASCII letters compare equal.
 * Substring search on two folded strings is the SEARCH match. */
char *imap_fold(const char *text, size_t len, size_t *out_len_r);

/* imap_fold_sort - the i;unicode-casemap (RFC 5051) form for ordering:
 * every character mapped to titlecase, then NFKD. Unlike imap_fold()'s
 * lower case this sorts "[" and "_" after letters, as Dovecot does. */
char *imap_fold_sort(const char *text, size_t len);

/* imap_header_end - length of the header block of a raw message including
 * the empty line that ends it (or len if there is no body). */
size_t imap_header_end(const char *raw, size_t len);

/* imap_header_next - iterate the fields of a header block. *pos is the
 * offset to start from (0 initially). Returns false at the end; otherwise
 * name/name_len and the raw value (folded lines, without the trailing line
 * break) in value/value_len. Lines without a colon are skipped. */
bool imap_header_next(const char *hdr, size_t hdr_len, size_t *pos, const char **name_r,
                      size_t *name_len_r, const char **value_r, size_t *value_len_r);

/* imap_header_unfold - unfold a raw header value: CR/LF/NUL removed, runs
 * of white space become one space, leading/trailing space trimmed. */
char *imap_header_unfold(const char *value, size_t len);

/* imap_header_decode - unfold a raw header value (CR/LF removed, runs of
 * white space become one space, leading/trailing space trimmed), decode
 * RFC 2047 encoded-words and return UTF-8 (8-bit bytes that are not UTF-8
 * are taken as the GMime fallback charsets, i.e. ISO-8859-1). */
char *imap_header_decode(const char *value, size_t len);

/* imap_address_strip_comments - an address field's raw value without
 * RFC 5322 comments (each replaced by a space) and with an unterminated
 * quoted string closed. Comments are no part of the ENVELOPE address
 * (RFC 3501 7.4.2), and GMime 3.2's address parser leaks memory on some
 * malformed ones (e.g. a domain literal followed by an unclosed comment). */
char *imap_address_strip_comments(const char *s, size_t len);

/* imap_address_list_text - an address field as its ENVELOPE addresses
 * read: "Name <local@domain>, group: Other <x@y>;" with display names
 * decoded to UTF-8 and comments, routes and folding gone ("" when nothing
 * parses). What SEARCH FROM/TO/CC/BCC look in (RFC 3501 6.4.4). */
char *imap_address_list_text(const char *value, size_t len);

/* imap_header_get - the raw value of the first field called name
 * (case-insensitive) in the header block, or NULL. */
const char *imap_header_get(const char *hdr, size_t hdr_len, const char *name, size_t *value_len_r);

/* imap_body_text - the decoded text of every "text/..." part of the message
 * (content transfer encoding undone, converted from the part's charset to
 * UTF-8), parts separated by a newline, at most max_bytes of output; the
 * rest of a larger message is not looked at. Parsing is linear in len.
 * Never NULL (an unparsable message gives ""). */
char *imap_body_text(const char *raw, size_t len, size_t max_bytes, size_t *out_len_r);

/* imap_date_parse_header - the date of an RFC 5322 Date: value in its own
 * time zone as days since 1970-01-01 (date_days_r), plus the instant in
 * seconds since the epoch (utc_r). false when the value cannot be parsed. */
bool imap_date_parse_header(const char *value, size_t len, int64_t *date_days_r, int64_t *utc_r);

/* imap_days_from_civil - days since 1970-01-01 of a proleptic Gregorian date. */
int64_t imap_days_from_civil(int64_t year, unsigned month, unsigned day);

#endif
