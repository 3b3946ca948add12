/* imap_charset - charset conversion, case folding, header and body text
 * helpers for SEARCH / SORT / THREAD (see imap_charset.h).
 *
 * Strings from glib (g_convert, g_utf8_casefold, ...) are returned to the
 * caller as if from malloc(): glib >= 2.46 allocates with the system malloc,
 * so free() is correct, and we avoid copying multi-megabyte texts. */
#include "imap_charset.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "mx_alloc.h"

/* A hostile message can nest multiparts / message/rfc822 parts without
 * limit; the walk below is recursive, so stop descending here. */
#define IMAP_BODY_MAX_DEPTH 64

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_init_once(void)
{
    g_mime_init();
}

void imap_charset_init(void)
{
    pthread_once(&gmime_once, gmime_init_once);
}

bool imap_charset_is_utf8_compatible(const char *charset)
{
    return strcasecmp(charset, "UTF-8") == 0 || strcasecmp(charset, "UTF8") == 0 ||
           strcasecmp(charset, "US-ASCII") == 0 || strcasecmp(charset, "ASCII") == 0 ||
           strcasecmp(charset, "USASCII") == 0;
}

enum imap_charset_result imap_charset_to_utf8(const char *charset, const char *text, size_t len,
                                              char **out_r, size_t *out_len_r)
{
    imap_charset_init();
    *out_r = NULL;
    *out_len_r = 0;
    if (imap_charset_is_utf8_compatible(charset)) {
        if (!g_utf8_validate_len(text, len, NULL))
            return IMAP_CHARSET_INVALID;
        *out_r = mx_strndup(text, len);
        *out_len_r = len;
        return IMAP_CHARSET_OK;
    }
    /* GMime knows the aliases mail clients use ("x-sjis", "latin1",
     * "ks_c_5601-1987", ...) and maps them to the iconv names. */
    const char *iconv_name = g_mime_charset_iconv_name(charset);
    /* Ask iconv directly whether the charset exists: g_convert() reports
     * an unknown one as NO_CONVERSION or FAILED depending on errno. */
    GIConv probe = g_iconv_open("UTF-8", iconv_name);
    if (probe == (GIConv)-1)
        return IMAP_CHARSET_UNKNOWN;
    g_iconv_close(probe);
    GError *error = NULL;
    gsize written = 0;
    char *converted = g_convert(text, (gssize)len, "UTF-8", iconv_name, NULL, &written, &error);
    if (converted == NULL) {
        g_clear_error(&error);
        return IMAP_CHARSET_INVALID;
    }
    *out_r = converted;
    *out_len_r = written;
    return IMAP_CHARSET_OK;
}

char *imap_fold(const char *text, size_t len, size_t *out_len_r)
{
    /* NFKC first so that decomposed (NFD) text, compatibility forms
     * ("ｵ", "ℌ") and their plain equivalents fold to the same thing */
    char *valid = g_utf8_make_valid(text, (gssize)len);
    char *normalised = g_utf8_normalize(valid, -1, G_NORMALIZE_NFKC);
    g_free(valid);
    if (normalised == NULL) /* cannot happen on valid UTF-8; be safe */
        normalised = g_strdup("");
    char *folded = g_utf8_casefold(normalised, -1);
    g_free(normalised);
    if (out_len_r != NULL)
        *out_len_r = strlen(folded);
    return folded;
}

char *imap_fold_sort(const char *text, size_t len)
{
    char *valid = g_utf8_make_valid(text, (gssize)len);
    GString *title = g_string_sized_new(strlen(valid) + 1);
    for (const char *p = valid; *p != '\0'; p = g_utf8_next_char(p))
        g_string_append_unichar(title, g_unichar_totitle(g_utf8_get_char(p)));
    g_free(valid);
    char *normalised = g_utf8_normalize(title->str, (gssize)title->len, G_NORMALIZE_NFKD);
    g_string_free(title, TRUE);
    return normalised != NULL ? normalised : g_strdup("");
}

size_t imap_header_end(const char *raw, size_t len)
{
    size_t i = 0;
    /* A message that starts with an empty line has an empty header. */
    if (len >= 2 && raw[0] == '\r' && raw[1] == '\n')
        return 2;
    if (len >= 1 && raw[0] == '\n')
        return 1;
    while (i < len) {
        const char *nl = memchr(raw + i, '\n', len - i);
        if (nl == NULL)
            return len;
        i = (size_t)(nl - raw) + 1;
        if (i < len && raw[i] == '\n')
            return i + 1;
        if (i + 1 < len && raw[i] == '\r' && raw[i + 1] == '\n')
            return i + 2;
    }
    return len;
}

bool imap_header_next(const char *hdr, size_t hdr_len, size_t *pos, const char **name_r,
                      size_t *name_len_r, const char **value_r, size_t *value_len_r)
{
    size_t i = *pos;
    while (i < hdr_len) {
        /* the empty line ends the header even if the caller gave us more */
        if (hdr[i] == '\n' || (hdr[i] == '\r' && i + 1 < hdr_len && hdr[i + 1] == '\n'))
            break;
        size_t line_start = i;
        /* The field runs to the first line break not followed by WSP. */
        size_t end = i;
        for (;;) {
            const char *nl = memchr(hdr + end, '\n', hdr_len - end);
            if (nl == NULL) {
                end = hdr_len;
                break;
            }
            end = (size_t)(nl - hdr) + 1;
            if (end >= hdr_len || (hdr[end] != ' ' && hdr[end] != '\t'))
                break;
        }
        i = end;
        size_t field_end = end;
        while (field_end > line_start &&
               (hdr[field_end - 1] == '\n' || hdr[field_end - 1] == '\r'))
            field_end--;
        const char *colon = memchr(hdr + line_start, ':', field_end - line_start);
        if (colon == NULL)
            continue; /* the empty line ending the header, or junk */
        size_t name_len = (size_t)(colon - (hdr + line_start));
        while (name_len > 0 && (hdr[line_start + name_len - 1] == ' ' ||
                                hdr[line_start + name_len - 1] == '\t'))
            name_len--;
        if (name_len == 0)
            continue;
        *name_r = hdr + line_start;
        *name_len_r = name_len;
        *value_r = colon + 1;
        *value_len_r = field_end - (size_t)(colon + 1 - hdr);
        *pos = i;
        return true;
    }
    *pos = hdr_len;
    return false;
}

const char *imap_header_get(const char *hdr, size_t hdr_len, const char *name, size_t *value_len_r)
{
    size_t pos = 0, name_len = strlen(name);
    const char *field, *value;
    size_t field_len, value_len;
    while (imap_header_next(hdr, hdr_len, &pos, &field, &field_len, &value, &value_len)) {
        if (field_len == name_len && strncasecmp(field, name, name_len) == 0) {
            *value_len_r = value_len;
            return value;
        }
    }
    *value_len_r = 0;
    return NULL;
}

char *imap_header_unfold(const char *value, size_t len)
{
    /* Unfold and squeeze white space: encoded-words split across a fold
     * must become adjacent, and NULs (hostile) must not truncate. */
    char *flat = mx_malloc(len + 1);
    size_t n = 0;
    bool pending_space = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '\r' || c == '\n' || c == ' ' || c == '\t' || c == '\0') {
            pending_space = n > 0;
            continue;
        }
        if (pending_space) {
            flat[n++] = ' ';
            pending_space = false;
        }
        flat[n++] = (char)c;
    }
    flat[n] = '\0';
    return flat;
}

char *imap_header_decode(const char *value, size_t len)
{
    imap_charset_init();
    char *flat = imap_header_unfold(value, len);
    char *decoded = g_mime_utils_header_decode_text(NULL, flat);
    free(flat);
    if (decoded == NULL)
        return mx_strdup("");
    return decoded;
}

/* --- addresses ------------------------------------------------------------ */

char *imap_address_strip_comments(const char *s, size_t len)
{
    char *out = mx_malloc(len + 2);
    size_t n = 0;
    unsigned comment = 0;
    bool quoted = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '\0')
            continue;
        if (comment > 0) {
            if (c == '\\')
                i++;
            else if (c == '(')
                comment++;
            else if (c == ')' && --comment == 0)
                out[n++] = ' ';
            continue;
        }
        if (quoted) {
            if (c == '\\') {
                /* keep an escape only with the character it escapes */
                if (i + 1 < len && s[i + 1] != '\0') {
                    out[n++] = c;
                    out[n++] = s[++i];
                }
                continue;
            }
            out[n++] = c;
            if (c == '"')
                quoted = false;
            continue;
        }
        if (c == '(') {
            comment = 1;
            continue;
        }
        if (c == ')')
            continue;
        if (c == '"')
            quoted = true;
        out[n++] = c;
    }
    if (quoted)
        out[n++] = '"';
    out[n] = '\0';
    return out;
}

char *imap_address_list_text(const char *value, size_t len)
{
    imap_charset_init();
    char *text = imap_address_strip_comments(value, len);
    InternetAddressList *list = internet_address_list_parse(NULL, text);
    free(text);
    if (list == NULL)
        return mx_strdup("");
    char *formatted = internet_address_list_to_string(list, NULL, FALSE);
    g_object_unref(list);
    if (formatted == NULL)
        return mx_strdup("");
    char *out = mx_strdup(formatted);
    g_free(formatted);
    return out;
}

/* --- body text ----------------------------------------------------------- */

struct body_text {
    char *buf;
    size_t len, cap, max;
    bool full;
};

static void body_text_append(struct body_text *bt, const char *data, size_t len)
{
    if (bt->full)
        return;
    if (len > bt->max - bt->len) {
        len = bt->max - bt->len;
        bt->full = true;
    }
    if (bt->len + len + 1 > bt->cap) {
        size_t cap = bt->cap == 0 ? 4096 : bt->cap;
        while (cap < bt->len + len + 1)
            cap *= 2;
        bt->buf = mx_realloc(bt->buf, cap);
        bt->cap = cap;
    }
    memcpy(bt->buf + bt->len, data, len);
    bt->len += len;
    bt->buf[bt->len] = '\0';
}

/* Decode one leaf part's bytes: transfer encoding undone, charset
 * converted to UTF-8, appended to bt. */
static void body_text_decode(struct body_text *bt, const char *data, size_t len,
                             GMimeContentEncoding encoding, const char *charset)
{
    GMimeStream *source = g_mime_stream_mem_new_with_buffer(data, len);
    GMimeStream *filtered = g_mime_stream_filter_new(source);
    g_object_unref(source);
    if (encoding == GMIME_CONTENT_ENCODING_BASE64 ||
        encoding == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
        encoding == GMIME_CONTENT_ENCODING_UUENCODE) {
        GMimeFilter *decoder = g_mime_filter_basic_new(encoding, FALSE);
        g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered), decoder);
        g_object_unref(decoder);
    }
    if (charset != NULL && !imap_charset_is_utf8_compatible(charset)) {
        GMimeFilter *conv = g_mime_filter_charset_new(g_mime_charset_iconv_name(charset), "UTF-8");
        if (conv != NULL) { /* unknown charset: bytes pass through, fold() repairs */
            g_mime_stream_filter_add(GMIME_STREAM_FILTER(filtered), conv);
            g_object_unref(conv);
        }
    }
    if (bt->len > 0)
        body_text_append(bt, "\n", 1);
    char chunk[65536];
    while (!bt->full) {
        ssize_t got = g_mime_stream_read(filtered, chunk, sizeof(chunk));
        if (got <= 0)
            break;
        body_text_append(bt, chunk, (size_t)got);
    }
    g_object_unref(filtered);
}

/* Our own MIME walk instead of GMime's message parser: that one parses
 * every address header of every (attached) message, and GMime 3.2 leaks
 * memory on some malformed addresses. Only Content-Type and
 * Content-Transfer-Encoding matter here. Each nesting level scans its own
 * bytes once, and nesting is capped, so the cost stays linear. */
static void body_text_walk(struct body_text *bt, const char *data, size_t len, unsigned depth,
                           bool digest)
{
    if (bt->full || depth > IMAP_BODY_MAX_DEPTH)
        return;
    size_t header_len = imap_header_end(data, len);
    const char *type_value = NULL, *cte_value = NULL;
    size_t type_len = 0, cte_len = 0;
    size_t pos = 0;
    const char *name, *value;
    size_t name_len, value_len;
    while (imap_header_next(data, header_len, &pos, &name, &name_len, &value, &value_len)) {
        if (name_len == 12 && strncasecmp(name, "Content-Type", 12) == 0 && type_value == NULL) {
            type_value = value;
            type_len = value_len;
        } else if (name_len == 25 && strncasecmp(name, "Content-Transfer-Encoding", 25) == 0 &&
                   cte_value == NULL) {
            cte_value = value;
            cte_len = value_len;
        }
    }
    const char *body = data + header_len;
    size_t body_len = len - header_len;

    GMimeContentType *type = NULL;
    if (type_value != NULL) {
        char *text = imap_header_unfold(type_value, type_len);
        type = g_mime_content_type_parse(NULL, text);
        free(text);
    }
    if (type == NULL) /* RFC 2045 5.2 / RFC 2046 5.1.5 defaults */
        type = g_mime_content_type_new(digest ? "message" : "text", digest ? "rfc822" : "plain");

    if (g_mime_content_type_is_type(type, "multipart", "*")) {
        const char *boundary = g_mime_content_type_get_parameter(type, "boundary");
        if (boundary != NULL && boundary[0] != '\0') {
            bool is_digest = g_mime_content_type_is_type(type, "multipart", "digest");
            size_t blen = strlen(boundary);
            size_t part_start = SIZE_MAX; /* no delimiter seen yet: preamble */
            size_t i = 0;
            while (i < body_len && !bt->full) {
                const char *nl = memchr(body + i, '\n', body_len - i);
                size_t line_end = nl != NULL ? (size_t)(nl - body) + 1 : body_len;
                if (line_end - i >= blen + 2 && body[i] == '-' && body[i + 1] == '-' &&
                    memcmp(body + i + 2, boundary, blen) == 0) {
                    if (part_start != SIZE_MAX) {
                        /* the line break before the delimiter belongs to it */
                        size_t part_end = i;
                        if (part_end > part_start && body[part_end - 1] == '\n')
                            part_end--;
                        if (part_end > part_start && body[part_end - 1] == '\r')
                            part_end--;
                        body_text_walk(bt, body + part_start, part_end - part_start, depth + 1,
                                       is_digest);
                    }
                    bool close = line_end - i >= blen + 4 && body[i + 2 + blen] == '-' &&
                                 body[i + 3 + blen] == '-';
                    if (close) {
                        part_start = SIZE_MAX;
                        break;
                    }
                    part_start = line_end;
                }
                i = line_end;
            }
            if (part_start != SIZE_MAX && part_start < body_len) /* unterminated last part */
                body_text_walk(bt, body + part_start, body_len - part_start, depth + 1,
                               is_digest);
        }
    } else if (g_mime_content_type_is_type(type, "message", "rfc822") ||
               g_mime_content_type_is_type(type, "message", "global")) {
        body_text_walk(bt, body, body_len, depth + 1, false);
    } else if (g_mime_content_type_is_type(type, "text", "*")) {
        GMimeContentEncoding encoding = GMIME_CONTENT_ENCODING_DEFAULT;
        if (cte_value != NULL) {
            char *text = imap_header_unfold(cte_value, cte_len);
            encoding = g_mime_content_encoding_from_string(text);
            free(text);
        }
        body_text_decode(bt, body, body_len, encoding,
                         g_mime_content_type_get_parameter(type, "charset"));
    }
    g_object_unref(type);
}

char *imap_body_text(const char *raw, size_t len, size_t max_bytes, size_t *out_len_r)
{
    imap_charset_init();
    struct body_text bt = {.max = max_bytes};
    bt.buf = mx_malloc(1);
    bt.buf[0] = '\0';
    bt.cap = 1;
    /* Base64 is the most expensive encoding: 4 input bytes per 3 output
     * bytes. Input beyond what could still produce max_bytes of text (plus
     * headers and MIME structure) is never looked at. */
    size_t input_cap = max_bytes / 3 * 4 + 1024 * 1024;
    if (len > input_cap)
        len = input_cap;
    body_text_walk(&bt, raw, len, 0, false);
    if (out_len_r != NULL)
        *out_len_r = bt.len;
    return bt.buf;
}

bool imap_date_parse_header(const char *value, size_t len, int64_t *date_days_r, int64_t *utc_r)
{
    imap_charset_init();
    char *text = mx_strndup(value, len);
    GDateTime *when = g_mime_utils_header_decode_date(text);
    free(text);
    if (when == NULL)
        return false;
    int year, month, day;
    g_date_time_get_ymd(when, &year, &month, &day);
    *date_days_r = imap_days_from_civil(year, (unsigned)month, (unsigned)day);
    *utc_r = g_date_time_to_unix(when);
    g_date_time_unref(when);
    return true;
}

int64_t imap_days_from_civil(int64_t year, unsigned month, unsigned day)
{
    /* Howard Hinnant's days_from_civil: exact for the proleptic Gregorian
     * calendar, no time zone database involved. */
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t yoe = year - era * 400;
    int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}
