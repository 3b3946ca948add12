/* mailbox_name - IMAP mailbox names: modified UTF-7, validation, mapping
 * onto Maildir++ directory names. See mailbox_name.h for the rules. */
#include "mailbox_name.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

/* ---- growable output buffer (names are small: no pool needed) -------- */

struct nbuf {
    char *data;
    size_t len, cap;
};

static void nbuf_reserve(struct nbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more + 1)
        cap *= 2;
    b->data = mx_realloc(b->data, cap);
    b->cap = cap;
}

static void nbuf_add(struct nbuf *b, const void *p, size_t n)
{
    nbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void nbuf_addc(struct nbuf *b, char c)
{
    nbuf_add(b, &c, 1);
}

/* nbuf_take - hand the string to the caller (never NULL, even if empty). */
static char *nbuf_take(struct nbuf *b)
{
    if (b->data == NULL)
        return mx_strdup("");
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

static void nbuf_free(struct nbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* utf8_next - decode one code point at s[0..len); returns its length in
 * octets, or 0 if the sequence is not strict UTF-8 (RFC 3629 table 4). */
static size_t utf8_next(const unsigned char *s, size_t len, uint32_t *cp_r)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp_r = c;
        return 1;
    }
    size_t n;
    uint32_t cp;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd octet */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;      /* no overlong 3-octet forms */
        else if (c == 0xED)
            hi = 0x9F;      /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;      /* no overlong 4-octet forms */
        else if (c == 0xF4)
            hi = 0x8F;      /* nothing above U+10FFFF */
    } else {
        return 0;           /* continuation octet, C0/C1 overlong lead, F5+ */
    }
    if (len < n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    cp = (cp << 6) | (s[1] & 0x3F);
    for (size_t i = 2; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *cp_r = cp;
    return n;
}

static void utf8_put(struct nbuf *b, uint32_t cp)
{
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    nbuf_add(b, out, n);
}

bool mailbox_name_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_next(p + i, len - i, &cp);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* ---- modified UTF-7 (RFC 3501 5.1.3) ---------------------------------- */

static const char mb64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int mb64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == ',')
        return 63;
    return -1;
}

static bool is_printable_ascii(uint32_t c)
{
    return c >= 0x20 && c <= 0x7E;
}

int mailbox_name_mutf7_decode(const char *in, size_t len, char **utf8_r, const char **error_r)
{
    const unsigned char *s = (const unsigned char *)in;
    struct nbuf out = { 0 };
    bool after_b64 = false; /* the previous token was a base64 run */
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        if (!is_printable_ascii(c)) {
            *error_r = "modified UTF-7: byte outside printable US-ASCII";
            goto fail;
        }
        if (c != '&') {
            nbuf_addc(&out, (char)c);
            after_b64 = false;
            i++;
            continue;
        }
        i++;
        if (i < len && s[i] == '-') {
            nbuf_addc(&out, '&');
            after_b64 = false;
            i++;
            continue;
        }
        if (after_b64) {
            /* "&AAA-&AAA-": legal-looking but never what an encoder
             * emits; refusing it keeps decode/encode a bijection. */
            *error_r = "modified UTF-7: two base64 runs back to back";
            goto fail;
        }
        uint32_t bits = 0, high = 0;
        unsigned nbits = 0;
        while (i < len && s[i] != '-') {
            int v = mb64_value(s[i]);
            if (v < 0) {
                *error_r = "modified UTF-7: invalid character in base64 run";
                goto fail;
            }
            bits = (bits << 6) | (uint32_t)v;
            nbits += 6;
            i++;
            if (nbits < 16)
                continue;
            nbits -= 16;
            uint32_t u = (bits >> nbits) & 0xFFFF;
            bits &= (1u << nbits) - 1;
            if (high != 0) {
                if (u < 0xDC00 || u > 0xDFFF) {
                    *error_r = "modified UTF-7: high surrogate without low surrogate";
                    goto fail;
                }
                utf8_put(&out, 0x10000 + ((high - 0xD800) << 10) + (u - 0xDC00));
                high = 0;
            } else if (u >= 0xD800 && u <= 0xDBFF) {
                high = u;
            } else if (u >= 0xDC00 && u <= 0xDFFF) {
                *error_r = "modified UTF-7: low surrogate without high surrogate";
                goto fail;
            } else if (is_printable_ascii(u)) {
                *error_r = "modified UTF-7: printable ASCII encoded in base64";
                goto fail;
            } else if (u == 0) {
                *error_r = "modified UTF-7: NUL encoded in base64";
                goto fail;
            } else {
                utf8_put(&out, u);
            }
        }
        if (i >= len) {
            *error_r = "modified UTF-7: unterminated base64 run (missing '-')";
            goto fail;
        }
        if (nbits >= 6) {
            /* covers "&A-" and "&AA-" (no complete unit) as well */
            *error_r = "modified UTF-7: superfluous base64 characters";
            goto fail;
        }
        if (bits != 0) {
            *error_r = "modified UTF-7: non-zero padding bits";
            goto fail;
        }
        if (high != 0) {
            *error_r = "modified UTF-7: high surrogate at end of base64 run";
            goto fail;
        }
        i++; /* the '-' */
        after_b64 = true;
    }
    *utf8_r = nbuf_take(&out);
    return 0;
fail:
    nbuf_free(&out);
    return -1;
}

/* mb64_flush - end a base64 run: emit the remaining bits zero-padded and
 * the closing '-'. */
static void mb64_flush(struct nbuf *out, uint32_t *bits, unsigned *nbits)
{
    if (*nbits > 0)
        nbuf_addc(out, mb64_alphabet[(*bits << (6 - *nbits)) & 0x3F]);
    nbuf_addc(out, '-');
    *bits = 0;
    *nbits = 0;
}

static void mb64_unit(struct nbuf *out, uint32_t unit, uint32_t *bits, unsigned *nbits)
{
    *bits = (*bits << 16) | unit;
    *nbits += 16;
    while (*nbits >= 6) {
        *nbits -= 6;
        nbuf_addc(out, mb64_alphabet[(*bits >> *nbits) & 0x3F]);
    }
    *bits &= (1u << *nbits) - 1;
}

int mailbox_name_mutf7_encode(const char *utf8, size_t len, char **mutf7_r,
                              const char **error_r)
{
    const unsigned char *s = (const unsigned char *)utf8;
    struct nbuf out = { 0 };
    bool in_b64 = false;
    uint32_t bits = 0;
    unsigned nbits = 0;
    size_t i = 0;

    while (i < len) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0) {
            *error_r = "invalid UTF-8 in mailbox name";
            nbuf_free(&out);
            return -1;
        }
        if (cp == 0) {
            *error_r = "NUL in mailbox name";
            nbuf_free(&out);
            return -1;
        }
        i += n;
        if (is_printable_ascii(cp)) {
            if (in_b64) {
                mb64_flush(&out, &bits, &nbits);
                in_b64 = false;
            }
            if (cp == '&')
                nbuf_add(&out, "&-", 2);
            else
                nbuf_addc(&out, (char)cp);
            continue;
        }
        if (!in_b64) {
            nbuf_addc(&out, '&');
            in_b64 = true;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            mb64_unit(&out, 0xD800 + (cp >> 10), &bits, &nbits);
            mb64_unit(&out, 0xDC00 + (cp & 0x3FF), &bits, &nbits);
        } else {
            mb64_unit(&out, cp, &bits, &nbits);
        }
    }
    if (in_b64)
        mb64_flush(&out, &bits, &nbits);
    *mutf7_r = nbuf_take(&out);
    return 0;
}

/* ---- validation ------------------------------------------------------- */

static bool is_inbox_level(const char *s, size_t len)
{
    static const char inbox[] = "inbox";
    if (len != 5)
        return false;
    for (size_t i = 0; i < 5; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != inbox[i])
            return false;
    }
    return true;
}

/* check_name - the rules of mailbox_name.h, in an order that gives the
 * most specific reason first. */
static int check_name(const char *name, size_t len, const char **error_r)
{
    const unsigned char *s = (const unsigned char *)name;
    if (len == 0) {
        *error_r = "mailbox name is empty";
        return -1;
    }
    if (len > MAILBOX_NAME_MAX) {
        *error_r = "mailbox name is longer than 1024 octets";
        return -1;
    }
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n == 0) {
            *error_r = "mailbox name is not valid UTF-8";
            return -1;
        }
        if (cp == 0) {
            *error_r = "mailbox name contains NUL";
            return -1;
        }
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F)) {
            *error_r = "mailbox name contains a control character";
            return -1;
        }
        if (cp == '\\') {
            *error_r = "mailbox name contains a backslash";
            return -1;
        }
        i += n;
    }
    if (s[0] == MAILBOX_NAME_SEPARATOR) {
        *error_r = "mailbox name starts with the hierarchy separator";
        return -1;
    }
    if (s[len - 1] == MAILBOX_NAME_SEPARATOR) {
        *error_r = "mailbox name ends with the hierarchy separator";
        return -1;
    }
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != MAILBOX_NAME_SEPARATOR)
            continue;
        size_t level_len = i - start;
        if (level_len == 0) {
            *error_r = "mailbox name has an empty hierarchy level";
            return -1;
        }
        if (level_len > MAILBOX_NAME_LEVEL_MAX) {
            *error_r = "mailbox name has a hierarchy level longer than 255 octets";
            return -1;
        }
        if (s[start] == '.') {
            *error_r = (level_len == 1 || (level_len == 2 && s[start + 1] == '.'))
                           ? "mailbox name has a \".\" or \"..\" hierarchy level"
                           : "mailbox name has a hierarchy level starting with '.'";
            return -1;
        }
        start = i + 1;
    }
    return 0;
}

int mailbox_name_normalize(const char *utf8, size_t len, char **name_r, const char **error_r)
{
    if (check_name(utf8, len, error_r) != 0)
        return -1;
    char *name = mx_malloc(len + 1);
    memcpy(name, utf8, len);
    name[len] = '\0';
    size_t first = 0;
    while (first < len && name[first] != MAILBOX_NAME_SEPARATOR)
        first++;
    if (is_inbox_level(name, first))
        memcpy(name, MAILBOX_NAME_INBOX, 5);
    *name_r = name;
    return 0;
}

bool mailbox_name_is_inbox(const char *name)
{
    return strcmp(name, MAILBOX_NAME_INBOX) == 0;
}

bool mailbox_name_is_descendant(const char *name, const char *ancestor)
{
    size_t n = strlen(ancestor);
    return strncmp(name, ancestor, n) == 0 && name[n] == MAILBOX_NAME_SEPARATOR;
}

/* ---- mapping to Maildir++ directory entries -------------------------- */

/* Only these two octets are escaped; every other octet of a valid name
 * (UTF-8 included) is stored as is. */
#define ESC_CHAR '%'

int mailbox_name_to_dir(const char *name, char **dir_r, const char **error_r)
{
    size_t len = strlen(name);
    char *canon;
    if (mailbox_name_normalize(name, len, &canon, error_r) != 0)
        return -1;
    bool same = strcmp(canon, name) == 0;
    free(canon);
    if (!same) {
        *error_r = "mailbox name is not in canonical form (INBOX must be upper case)";
        return -1;
    }
    if (mailbox_name_is_inbox(name)) {
        *dir_r = mx_strdup("");
        return 0;
    }
    struct nbuf out = { 0 };
    nbuf_addc(&out, '.');
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == MAILBOX_NAME_SEPARATOR)
            nbuf_addc(&out, '.');
        else if (c == '.')
            nbuf_add(&out, "%2E", 3);
        else if (c == ESC_CHAR)
            nbuf_add(&out, "%25", 3);
        else
            nbuf_addc(&out, c);
    }
    if (out.len > MAILBOX_NAME_DIR_MAX) {
        nbuf_free(&out);
        *error_r = "mailbox name is too long for a Maildir++ folder "
                   "(directory name over 255 octets)";
        return -1;
    }
    *dir_r = nbuf_take(&out);
    return 0;
}

int mailbox_name_from_dir(const char *dir, char **name_r, const char **error_r)
{
    size_t len = strlen(dir);
    if (len == 0) {
        *name_r = mx_strdup(MAILBOX_NAME_INBOX);
        return 0;
    }
    if (dir[0] != '.' || len < 2 || dir[1] == '.') {
        *error_r = "not a Maildir++ folder directory name";
        return -1;
    }
    if (len > MAILBOX_NAME_DIR_MAX) {
        *error_r = "Maildir++ folder directory name is too long";
        return -1;
    }
    struct nbuf out = { 0 };
    for (size_t i = 1; i < len; i++) {
        char c = dir[i];
        if (c == '.') {
            nbuf_addc(&out, MAILBOX_NAME_SEPARATOR);
        } else if (c == ESC_CHAR) {
            if (i + 2 < len && dir[i + 1] == '2' && dir[i + 2] == 'E') {
                nbuf_addc(&out, '.');
            } else if (i + 2 < len && dir[i + 1] == '2' && dir[i + 2] == '5') {
                nbuf_addc(&out, ESC_CHAR);
            } else {
                nbuf_free(&out);
                *error_r = "Maildir++ folder directory name has an invalid escape";
                return -1;
            }
            i += 2;
        } else if (c == MAILBOX_NAME_SEPARATOR) {
            nbuf_free(&out);
            *error_r = "Maildir++ folder directory name contains '/'";
            return -1;
        } else {
            nbuf_addc(&out, c);
        }
    }
    char *name = nbuf_take(&out);
    char *dir2 = NULL;
    /* The round trip catches every non-canonical spelling at once:
     * ".INBOX", ".inbox.x", ".a..b", ".a.", invalid UTF-8, controls. */
    if (mailbox_name_to_dir(name, &dir2, error_r) != 0) {
        free(name);
        return -1;
    }
    bool same = strcmp(dir2, dir) == 0;
    free(dir2);
    if (!same) {
        free(name);
        *error_r = "Maildir++ folder directory name is not in canonical form";
        return -1;
    }
    *name_r = name;
    return 0;
}
