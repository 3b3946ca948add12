/* mime_cache - the IMAP view of one message, computed once at append.
 *
 * mime_cache_build() reads a raw RFC 5322 message (CRLF or bare-LF line
 * ends) and produces what IMAP FETCH needs without ever parsing the message
 * again:
 *   - envelope:      "(date subject (from) (sender) ... message-id)"
 *   - bodystructure: "(...)", the extensible BODYSTRUCTURE form
 *   - body:          "(...)", the non-extensible BODY form
 *   - a part table with the byte offsets of every MIME entity, so that
 *     BODY[section] is a slice of the stored file (mime_cache_section()).
 * The three strings are complete IMAP values: mx-imapd writes
 * "ENVELOPE " + envelope, "BODYSTRUCTURE " + bodystructure as they are.
 *
 * Conventions (RFC 3501 7.4.2 / RFC 9051 7.5.2, Dovecot-compatible):
 *   - Strings: a quoted string when every byte is 0x01..0x7F, there is no
 *     CR or LF and the string is at most MIME_CACHE_QUOTED_MAX bytes, with
 *     '"' and '\' backslash-escaped; otherwise a literal {n}\r\n<bytes>.
 *     Header values are unfolded (every CR and LF removed) and trimmed of
 *     leading/trailing SP/HTAB first; NUL bytes are dropped (IMAP strings
 *     cannot carry them). So in practice a literal means 8-bit or long.
 *   - Header values are RAW: RFC 2047 encoded-words and RFC 2231 parameter
 *     encodings are left as the sender wrote them, as IMAP requires.
 *     When a field occurs twice, the first occurrence counts.
 *   - Sizes are octets of the part body as stored (no CRLF conversion), so
 *     they equal the length of the matching BODY[section] slice. Text line
 *     counts are the number of LF bytes in the body (Dovecot's rule).
 *   - Encodings are upper-cased ("7BIT", "BASE64"); a missing or malformed
 *     Content-Transfer-Encoding is "7BIT". A text part without a charset
 *     parameter gets ("charset" "us-ascii") first, as RFC 2045 defaults.
 *   - Addresses: name is the display phrase (quotes removed, words joined
 *     by one space, encoded-words kept) or, for "a@b (Name)", the comment;
 *     mailbox keeps a quoted local part quoted ("\"john doe\""), so
 *     mailbox@host can be rebuilt; a missing local part or domain is
 *     "MISSING_MAILBOX" / "MISSING_DOMAIN" (Dovecot), never NIL, because a
 *     NIL host means group syntax.
 *
 * Why the MIME boundaries are found here and not by GMime's parser: GMime
 * exposes neither the byte offsets of MIME entities (only header offsets
 * and leaf content bounds) nor raw parameter values, and its object tree
 * costs ~1.3 KB per part and ~500 B per header line (a 22 MB message of
 * 2.2 million empty parts took 2.9 GB), which would let one hostile
 * message exhaust the store. So mime_cache scans boundaries itself, with
 * GMime 3.2's rules (delimiter = "--" boundary followed only by SP/HTAB;
 * the line break before a delimiter belongs to it; a missing close
 * delimiter ends the multipart at the end of its parent), and
 * mime_cache_check_gmime() compares the result with GMime's own parse; the
 * unit tests run that comparison on every test vector and corpus message.
 * Body parts GMime would not build (neither a header line nor a blank
 * line before the next delimiter, or nothing after a last delimiter) are
 * skipped here too, so part numbers agree. Known, deliberate differences,
 * all on malformed MIME: a message whose first line is not a header
 * still gets its header block up to the first blank line (GMime builds
 * nothing); a multipart without a boundary parameter is text/plain, RFC
 * 2045's default for an unusable Content-Type (GMime: an empty
 * multipart); message/rfc822 is parsed as a message whatever its
 * Content-Transfer-Encoding, because BODYSTRUCTURE grammar needs an
 * envelope after "message" "rfc822" (GMime makes a base64 one a leaf); a
 * nested multipart reusing its parent's boundary ends at the parent's
 * next delimiter; with two Content-Type fields the first counts, as in
 * Dovecot (GMime takes the last); GMime keeps a CR or drops a part when
 * the message ends in a delimiter line without a line break. On 20,000
 * mutated corpus messages (lines deleted, duplicated, cut, inserted,
 * boundaries added) the trees differ, beyond the deliberate differences,
 * in 0.05 %, all in that last case.
 *
 * Robustness: any input gives a valid structure. Nesting deeper than
 * MIME_CACHE_MAX_DEPTH and entities beyond MIME_CACHE_MAX_PARTS become
 * text/plain leaves, and address lists stop at MIME_CACHE_MAX_ADDRESSES
 * (flag MIME_CACHE_FLAG_TRUNCATED). Time is O(length x nesting depth),
 * memory O(length) with a small factor (at most ~6x the input on the
 * hostile headers tried: 2 MB of "<", "a:b;", "; a=b", ...).
 *
 * GMime's part in production: the boundary parameter of a multipart is
 * read with g_mime_content_type_parse() (Content-Type values up to 16 KiB;
 * beyond, our own reading, as GMime allocates an object per parameter),
 * so quoting, RFC 2231 and lenient unquoted values give exactly the
 * delimiters GMime's parser uses. Parameter values are read GMime's
 * lenient way too: name=my file.txt is "my file.txt".
 *
 * Thread safety: every function here is reentrant; a cache is immutable
 * after build/deserialize and may be read from several threads. GMime is
 * initialised once (pthread_once, mime_cache_gmime_init()); after that the
 * GMime calls used here only touch per-call objects and GMime's own
 * locked caches. mime_cache_gmime_shutdown() releases GMime's global
 * state at process exit (tests, leak checkers); nothing may be called
 * after it. */
#ifndef MIME_CACHE_H
#define MIME_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MIME_CACHE_MAX_DEPTH 30
#define MIME_CACHE_MAX_PARTS 10000
#define MIME_CACHE_QUOTED_MAX 1024
/* Per address header (From, To, ...): entries in the ENVELOPE list (group
 * markers included) and bytes of the unfolded value that are parsed. */
#define MIME_CACHE_MAX_ADDRESSES 10000
#define MIME_CACHE_MAX_ADDRESS_FIELD (256 * 1024)
/* Numeric components accepted in a section spec ("1.2.3" has three). */
#define MIME_CACHE_MAX_SECTION_PARTS 64

/* A limit was reached: nesting or part count (part of the message is
 * described as text/plain leaves instead of its real structure) or an
 * address list (cut short). */
#define MIME_CACHE_FLAG_TRUNCATED 0x01u

enum mime_cache_kind {
    MIME_CACHE_LEAF = 0,      /* no children */
    MIME_CACHE_MULTIPART = 1, /* children: the body parts, at least one */
    MIME_CACHE_MESSAGE = 2,   /* message/rfc822: one child, the embedded
                                 message (its hdr_start == our body_start) */
};

/* One MIME entity. The table is in pre-order: an entity is followed by its
 * children, each followed by its own subtree. The root (index 0) is the
 * message itself: hdr_start 0, end == message size.
 * Invariant: hdr_start <= body_start <= end <= message size, and every
 * child lies inside its parent's body. */
struct mime_cache_part {
    uint8_t kind;        /* enum mime_cache_kind */
    uint32_t hdr_start;  /* first byte of the header block */
    uint32_t body_start; /* first byte after the blank line ending it */
    uint32_t end;        /* first byte after the body */
    uint32_t nchildren;
};

struct mime_cache {
    char *envelope;      /* NUL-free, NUL-terminated IMAP values */
    char *bodystructure;
    char *body;
    uint32_t message_size;
    uint32_t flags;      /* MIME_CACHE_FLAG_* */
    uint32_t part_count;
    struct mime_cache_part *parts;
};

/* mime_cache_build - parse message[0..len). Fails only if len exceeds
 * UINT32_MAX or message is NULL with len > 0; any content is accepted.
 * The cache does not point into message. */
int mime_cache_build(const void *message, size_t len, struct mime_cache **cache_r,
                     const char **error_r);
void mime_cache_free(struct mime_cache **cache);

/* mime_cache_section - byte range of an IMAP section spec: "" (whole
 * message), "HEADER", "TEXT", "1", "1.2", "1.2.MIME", "2.HEADER",
 * "2.TEXT", "2.1.HEADER.FIELDS" / "...HEADER.FIELDS.NOT" (the header range;
 * the caller filters fields and strips the field list from the spec before
 * calling). Keywords are case-insensitive.
 * Returns 0 with the range; -1 if the spec is malformed ("0", "1.", "01",
 * "a", "MIME" alone, more than MIME_CACHE_MAX_SECTION_PARTS numbers: BAD);
 * 1 if it is well-formed but names no part of this message ("7" of a
 * 3-part message, "1.TEXT" when part 1 is not a message/rfc822): IMAP
 * servers answer those with an empty string / NIL. */
int mime_cache_section(const struct mime_cache *cache, const char *section_spec,
                       size_t *offset_r, size_t *len_r);

/* mime_cache_serialize - versioned big-endian blob for the LMDB index:
 *   "MXMC" u8 version(1) u8 flags u16 0
 *   u32 message_size, u32 len + envelope, u32 len + bodystructure,
 *   u32 len + body, u32 part_count,
 *   part_count x (u8 kind, u32 hdr_start, u32 body_start, u32 end,
 *                 u32 nchildren)
 * The blob is malloc'ed; the caller frees it. */
void mime_cache_serialize(const struct mime_cache *cache, uint8_t **blob_r, size_t *len_r);
/* mime_cache_deserialize - the inverse; checks every length, offset and the
 * tree shape against the invariants above, so a corrupt blob is an error
 * (error_r: static string), never a crash or a range outside the message. */
int mime_cache_deserialize(const void *blob, size_t len, struct mime_cache **cache_r,
                           const char **error_r);

/* mime_cache_imap_value_valid - v[0..n) is exactly one parenthesised IMAP
 * value made of lists, quoted strings, literals, NIL and numbers (the
 * shape of ENVELOPE / BODY / BODYSTRUCTURE). Deserialize checks every
 * string with it, so a corrupt blob can never desynchronise an IMAP
 * stream; tests and the fuzzer check every built string. */
bool mime_cache_imap_value_valid(const char *v, size_t n);

/* mime_cache_check_gmime - parse message with GMime 3 (a zero-copy memory
 * stream) and compare its MIME tree with cache: same nesting and kinds,
 * same content bounds of every leaf. 0 if they agree; -1 with a
 * description (static buffer per thread) of the first difference.
 * Used by the tests; may be used by an operator "verify" command. */
int mime_cache_check_gmime(const void *message, size_t len, const struct mime_cache *cache,
                           const char **error_r);
/* mime_cache_gmime_init - g_mime_init() once per process; called by
 * mime_cache_build() itself, exported for code that uses GMime beside it. */
void mime_cache_gmime_init(void);
/* mime_cache_gmime_shutdown - release GMime's global state (tests). */
void mime_cache_gmime_shutdown(void);

#endif
