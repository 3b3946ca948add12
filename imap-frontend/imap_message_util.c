/* imap_message_util - pure helpers of the IMAP message commands; see the
 * header. */
#include "imap_message_util.h"

#include "imap_charset.h"
#include "mx_base64.h"

#include <string.h>
#include <strings.h>

#include "imap_charset.h"
#include "mx_alloc.h"

/* ---- HEADER.FIELDS ------------------------------------------------------ */

static bool name_listed(const char *name, size_t name_len, char *const *names, size_t n_names)
{
    for (size_t i = 0; i < n_names; i++)
        if (strlen(names[i]) == name_len && strncasecmp(names[i], name, name_len) == 0)
            return true;
    return false;
}

/* header_has_blank_line - whether the header block ends with the empty line
 * that separates it from a body (CRLF or bare LF). */
static bool header_has_blank_line(const char *hdr, size_t hdr_len)
{
    size_t end = imap_header_end(hdr, hdr_len);
    if (end == 0 || hdr[end - 1] != '\n')
        return false;
    size_t line_start = end - 1;
    if (line_start > 0 && hdr[line_start - 1] == '\r')
        line_start--;
    return line_start == 0 || hdr[line_start - 1] == '\n';
}

char *imap_header_filter(const char *hdr, size_t hdr_len, char *const *names, size_t n_names,
                         bool exclude, size_t *out_len_r)
{
    /* The output is never longer than the input plus one CRLF per field
     * (a last field without line break) plus the final blank line. */
    char *out = mx_malloc(hdr_len + 5);
    size_t n = 0, pos = 0;
    const char *name, *value;
    size_t name_len, value_len;
    while (imap_header_next(hdr, hdr_len, &pos, &name, &name_len, &value, &value_len)) {
        if (name_listed(name, name_len, names, n_names) == exclude)
            continue;
        size_t start = (size_t)(name - hdr);
        memcpy(out + n, name, pos - start); /* the field as sent, folding kept */
        n += pos - start;
        if (value + value_len == hdr + pos) { /* no line break at the very end */
            out[n++] = '\r';
            out[n++] = '\n';
        }
    }
    /* RFC 3501 6.4.5: the blank line is included in all header fetches,
     * except for a message which has no body and no blank line (and a
     * non-message part, whose header is empty). */
    if (header_has_blank_line(hdr, hdr_len)) {
        out[n++] = '\r';
        out[n++] = '\n';
    }
    out[n] = '\0';
    *out_len_r = n;
    return out;
}

/* ---- Content-Transfer-Encoding ------------------------------------------ */

enum imap_cte imap_cte_of_header(const char *hdr, size_t hdr_len)
{
    size_t value_len;
    const char *value = imap_header_get(hdr, hdr_len, "Content-Transfer-Encoding", &value_len);
    if (value == NULL)
        return IMAP_CTE_IDENTITY;
    /* the mechanism is one token, maybe folded or followed by a comment */
    size_t i = 0;
    while (i < value_len && (value[i] == ' ' || value[i] == '\t' || value[i] == '\r' ||
                             value[i] == '\n'))
        i++;
    size_t start = i;
    while (i < value_len && value[i] != ' ' && value[i] != '\t' && value[i] != '\r' &&
           value[i] != '\n' && value[i] != '(' && value[i] != ';')
        i++;
    size_t len = i - start;
    const char *tok = value + start;
#define TOKEN_IS(lit) (len == sizeof(lit) - 1 && strncasecmp(tok, lit, len) == 0)
    if (len == 0 || TOKEN_IS("7bit") || TOKEN_IS("8bit") || TOKEN_IS("binary"))
        return IMAP_CTE_IDENTITY;
    if (TOKEN_IS("base64"))
        return IMAP_CTE_BASE64;
    if (TOKEN_IS("quoted-printable"))
        return IMAP_CTE_QUOTED_PRINTABLE;
#undef TOKEN_IS
    return IMAP_CTE_UNKNOWN;
}

size_t imap_base64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t n = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '=')
            break;
        int v = mx_base64_value(c);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1u;
        }
    }
    return n;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

size_t imap_qp_decode(const char *in, size_t len, unsigned char *out)
{
    size_t n = 0;
    size_t i = 0;
    while (i < len) {
        /* Take one line (with its line break, if any). */
        const char *nl = memchr(in + i, '\n', len - i);
        size_t line_end = nl ? (size_t)(nl - in) + 1 : len;
        size_t text_end = line_end;
        bool has_break = false;
        if (text_end > i && in[text_end - 1] == '\n') {
            text_end--;
            has_break = true;
            if (text_end > i && in[text_end - 1] == '\r')
                text_end--;
        }
        /* rule 3: white space at the end of an encoded line is padding */
        while (text_end > i && (in[text_end - 1] == ' ' || in[text_end - 1] == '\t'))
            text_end--;
        bool soft = text_end > i && in[text_end - 1] == '=';
        if (soft)
            text_end--;
        for (size_t j = i; j < text_end; j++) {
            unsigned char c = (unsigned char)in[j];
            if (c == '=') {
                int hi = j + 1 < text_end ? hex_value((unsigned char)in[j + 1]) : -1;
                int lo = j + 2 < text_end ? hex_value((unsigned char)in[j + 2]) : -1;
                if (hi >= 0 && lo >= 0) {
                    out[n++] = (unsigned char)(hi << 4 | lo);
                    j += 2;
                    continue;
                }
            }
            out[n++] = c;
        }
        if (has_break && !soft) {
            /* keep the line break as the input had it */
            size_t k = text_end;
            while (k < line_end && in[k] != '\r' && in[k] != '\n')
                k++;
            for (; k < line_end; k++)
                out[n++] = (unsigned char)in[k];
        }
        i = line_end;
    }
    return n;
}

/* ---- date-time ---------------------------------------------------------- */

static bool two_digits(const char *p, unsigned *v)
{
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
        return false;
    *v = (unsigned)(p[0] - '0') * 10u + (unsigned)(p[1] - '0');
    return true;
}

int imap_parse_datetime(const char *text, size_t len, int64_t *ms_r)
{
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    /* "dd-Mon-yyyy hh:mm:ss +zzzz" is exactly 26 characters */
    if (len != 26)
        return -1;
    unsigned day, month = 0, year_hi, year_lo, hour, minute, second, zone_h, zone_m;
    if (text[0] == ' ') {
        if (text[1] < '1' || text[1] > '9')
            return -1;
        day = (unsigned)(text[1] - '0');
    } else if (!two_digits(text, &day)) {
        return -1;
    }
    if (text[2] != '-' || text[6] != '-' || text[11] != ' ' || text[14] != ':' ||
        text[17] != ':' || text[20] != ' ' || (text[21] != '+' && text[21] != '-'))
        return -1;
    for (unsigned m = 0; m < 12; m++)
        if (strncasecmp(text + 3, months[m], 3) == 0)
            month = m + 1;
    if (month == 0 || !two_digits(text + 7, &year_hi) || !two_digits(text + 9, &year_lo) ||
        !two_digits(text + 12, &hour) || !two_digits(text + 15, &minute) ||
        !two_digits(text + 18, &second) || !two_digits(text + 22, &zone_h) ||
        !two_digits(text + 24, &zone_m))
        return -1;
    unsigned year = year_hi * 100u + year_lo;
    static const unsigned mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day < 1 || day > mdays[month - 1] || (month == 2 && day == 29 && !leap))
        return -1;
    /* 60 seconds: a leap second, which the arithmetic below folds forward */
    if (hour > 23 || minute > 59 || second > 60 || zone_m > 59)
        return -1;
    int zone = (int)(zone_h * 60u + zone_m) * (text[21] == '-' ? -1 : 1);
    if (zone < -12 * 60 || zone > 14 * 60)
        return -1;
    int64_t days = imap_days_from_civil(year, month, day);
    int64_t secs = days * 86400 + (int64_t)hour * 3600 + (int64_t)minute * 60 + second -
                   (int64_t)zone * 60;
    *ms_r = secs * 1000;
    return 0;
}

bool imap_keyword_valid(const char *kw, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)kw[i];
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
            return false;
    }
    return true;
}
