/* mx_header - RFC 5322 header-section scanner and the fields we add.
 *
 * Injection safety of the formatters rests on one rule: every byte that
 * reaches buf either is a constant of ours, or passed a whitelist
 * (domain/IP/id syntax checks), or went through escape_comment(), which
 * turns anything outside printable ASCII into '?' and backslash-quotes the
 * comment delimiters. The only CR LF we write are folds followed by a TAB
 * and the final one, so no value can start a header field of its own. */
#include "mx_header.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mx_address.h"

static void set_error(const char **error_r, const char *error)
{
    if (error_r != NULL)
        *error_r = error;
}

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* is_ftext - RFC 5322 field-name character: printable US-ASCII but ':'. */
static bool is_ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

/* is_atext - RFC 5322 atext. */
static bool is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* ---- incremental header scanner ---------------------------------------- */

enum {
    HS_LINE_START = 0,
    HS_LINE_START_CR, /* "\r" at line start: an empty line if "\n" follows */
    HS_NAME,          /* collecting a field name up to ':' */
    HS_SKIP,          /* rest of a line (value, continuation, junk) */
    HS_DONE,
};

int mx_header_scan_init(struct mx_header_scan *scan, const char *const *names,
                        size_t name_count, const char **error_r)
{
    memset(scan, 0, sizeof(*scan));
    if (name_count > MX_HEADER_SCAN_MAX_NAMES) {
        set_error(error_r, "too many header field names to scan for");
        return -1;
    }
    for (size_t i = 0; i < name_count; i++) {
        size_t len = names[i] != NULL ? strlen(names[i]) : 0;
        if (len == 0 || len > MX_HEADER_NAME_MAX) {
            set_error(error_r, "header field name empty or too long");
            return -1;
        }
        for (size_t j = 0; j < len; j++) {
            if (!is_ftext((unsigned char)names[i][j])) {
                set_error(error_r, "invalid character in header field name");
                return -1;
            }
        }
    }
    scan->names = names;
    scan->name_count = name_count;
    scan->state = HS_LINE_START;
    return 0;
}

/* finish_name - a "name:" was read: count it if it is one we look for. */
static void finish_name(struct mx_header_scan *scan)
{
    size_t len = scan->name_len;
    while (len > 0 && (scan->name[len - 1] == ' ' || scan->name[len - 1] == '\t'))
        len--; /* obs-optional: WSP before the colon */
    if (scan->name_overflow) {
        scan->fields++; /* a real field, just longer than any name we match */
        return;
    }
    if (len == 0) {
        scan->malformed_lines++;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_ftext((unsigned char)scan->name[i])) {
            scan->malformed_lines++;
            return;
        }
    }
    scan->fields++;
    for (size_t i = 0; i < scan->name_count; i++) {
        const char *want = scan->names[i];
        size_t j = 0;
        while (j < len && want[j] != '\0' &&
               ascii_lower((unsigned char)want[j]) == ascii_lower((unsigned char)scan->name[j]))
            j++;
        if (j == len && want[j] == '\0')
            scan->counts[i]++;
    }
}

size_t mx_header_scan_feed(struct mx_header_scan *scan, const void *data, size_t len)
{
    const unsigned char *start = data, *p = start, *end = start + len;

    while (p < end && scan->state != HS_DONE) {
        switch (scan->state) {
        case HS_LINE_START:
            if (*p == '\r') {
                p++;
                scan->state = HS_LINE_START_CR;
            } else if (*p == '\n') {
                p++; /* LF-only empty line (message stored with LF endings) */
                scan->has_empty_line = true;
                scan->state = HS_DONE;
            } else if (*p == ' ' || *p == '\t') {
                if (scan->fields == 0 && scan->malformed_lines == 0)
                    scan->malformed_lines++; /* continuation of nothing */
                scan->state = HS_SKIP;
            } else {
                scan->name_len = 0;
                scan->name_overflow = false;
                scan->state = HS_NAME;
            }
            break;

        case HS_LINE_START_CR:
            if (*p == '\n') {
                p++;
                scan->has_empty_line = true;
                scan->state = HS_DONE;
            } else {
                scan->malformed_lines++; /* "\r" + junk at a line start */
                scan->state = HS_SKIP;
            }
            break;

        case HS_NAME: {
            unsigned char c = *p++;
            if (c == ':') {
                finish_name(scan);
                scan->state = HS_SKIP;
            } else if (c == '\n') {
                scan->malformed_lines++; /* a line without a colon */
                scan->state = HS_LINE_START;
            } else if (scan->name_len < sizeof(scan->name)) {
                scan->name[scan->name_len++] = (char)c;
            } else {
                scan->name_overflow = true;
            }
            break;
        }

        case HS_SKIP: {
            const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
            if (lf == NULL) {
                p = end;
            } else {
                p = lf + 1;
                scan->state = HS_LINE_START;
            }
            break;
        }
        }
    }
    if (scan->state == HS_DONE)
        scan->done = true;
    scan->header_size += (uint64_t)(p - start);
    return (size_t)(p - start);
}

void mx_header_scan_finish(struct mx_header_scan *scan)
{
    if (scan->state == HS_NAME)
        scan->malformed_lines++; /* last line had no colon */
    scan->state = HS_DONE;
    scan->done = true;
}

unsigned mx_header_scan_count(const struct mx_header_scan *scan, size_t index)
{
    return index < scan->name_count ? scan->counts[index] : 0;
}

/* ---- folding writer --------------------------------------------------- */

/* A header being built word by word: words are separated by one space, or
 * by a fold (CRLF TAB) when the word would not fit on the line. Any space
 * we write is a legal FWS position in the Received/Date/Message-ID grammar,
 * so every fold is legal too. */
struct hbuf {
    char *buf;
    size_t size;
    size_t len;
    size_t line_len;  /* characters on the current line */
    bool overflow;
    bool force_fold;  /* next word starts a new line */
};

static void hb_raw(struct hbuf *h, const char *s, size_t n)
{
    if (h->overflow || h->len + n >= h->size) {
        h->overflow = true;
        return;
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
    h->buf[h->len] = '\0';
    h->line_len += n;
}

static void hb_word_n(struct hbuf *h, const char *w, size_t n)
{
    if (h->force_fold || h->line_len + 1 + n > MX_HEADER_FOLD_WIDTH) {
        hb_raw(h, "\r\n\t", 3);
        h->line_len = 1;
        h->force_fold = false;
    } else {
        hb_raw(h, " ", 1);
    }
    hb_raw(h, w, n);
}

static void hb_word(struct hbuf *h, const char *w)
{
    hb_word_n(h, w, strlen(w));
}

static void hb_start(struct hbuf *h, char *buf, size_t size, const char *field_name)
{
    *h = (struct hbuf){ .buf = buf, .size = size };
    if (size > 0)
        buf[0] = '\0';
    hb_raw(h, field_name, strlen(field_name));
}

/* hb_finish - add the final CRLF; -1 (and an empty buf) on overflow. */
static int hb_finish(struct hbuf *h, const char **error_r)
{
    hb_raw(h, "\r\n", 2);
    if (h->overflow) {
        if (h->size > 0)
            h->buf[0] = '\0';
        set_error(error_r, "header buffer too small");
        return -1;
    }
    return 0;
}

/* escape_comment - s as comment text: printable ASCII kept, '(' ')' '\'
 * backslash-quoted (RFC 5322 quoted-pair, so the comment stays balanced
 * whatever the peer sent), everything else (controls, CR, LF, space, DEL,
 * 8-bit) becomes '?'. At most max source octets, then "...". out must
 * hold 2 * max + 4. */
static void escape_comment(const char *s, size_t max, char *out)
{
    size_t o = 0, i = 0;
    for (; s[i] != '\0' && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '(' || c == ')' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c > 32 && c < 127) {
            out[o++] = (char)c;
        } else {
            out[o++] = '?';
        }
    }
    if (s[i] != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

#define MX_HEADER_COMMENT_MAX 64 /* source octets of a peer value in a comment */

/* is_address_literal - "[IPv4]" or "[IPv6:...]" as inet_pton reads it. */
static bool is_address_literal(const char *s)
{
    size_t len = strlen(s);
    char text[INET6_ADDRSTRLEN + 8];
    unsigned char bin[sizeof(struct in6_addr)];
    if (len < 3 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof(text))
        return false;
    memcpy(text, s + 1, len - 2);
    text[len - 2] = '\0';
    if (strncasecmp(text, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, text + 5, bin) == 1;
    return inet_pton(AF_INET, text, bin) == 1;
}

static bool is_domain(const char *s)
{
    return s != NULL && s[0] != '\0' &&
           mx_address_check_domain(s, strlen(s), false, NULL) == 0;
}

/* rcpt_usable - a recipient we can show in "for <...>" without quoting:
 * dot-string-ish local part and a domain or literal; UTF-8 only in an
 * SMTPUTF8 transaction (RFC 6532 header). No space, ';', '(', '<', '"'. */
static bool rcpt_usable(const char *s, bool utf8)
{
    size_t len = strlen(s);
    if (len == 0 || len > MX_ADDRESS_PATH_MAX || strchr(s, '@') == NULL)
        return false;
    bool high = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            high = true;
            continue;
        }
        if (!is_atext(c) && c != '.' && c != '@' && c != '[' && c != ']' && c != ':')
            return false;
    }
    if (high)
        return utf8 && mx_address_utf8_valid(s, len);
    return true;
}

const char *mx_header_with_protocol(bool esmtp, bool tls, bool auth, bool utf8)
{
    static const char *const names[2][4] = {
        { "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA" },
        { "UTF8SMTP", "UTF8SMTPA", "UTF8SMTPS", "UTF8SMTPSA" },
    };
    if (!esmtp && !tls && !auth && !utf8)
        return "SMTP";
    return names[utf8 ? 1 : 0][(tls ? 2 : 0) + (auth ? 1 : 0)];
}

/* ---- date ------------------------------------------------------------- */

int mx_header_format_date_value(char *buf, size_t size, time_t t, const char **error_r)
{
    /* Own tables: strftime's %a/%b follow LC_TIME, and RFC 5322 wants the
     * English names whatever the locale. */
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    if (size > 0)
        buf[0] = '\0';
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year < 0 || tm.tm_year > 9999 - 1900 ||
        tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11) {
        set_error(error_r, "date out of range for RFC 5322");
        return -1;
    }
    int n = snprintf(buf, size, "%s, %d %s %04d %02d:%02d:%02d +0000",
                     days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                     tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n < 0 || (size_t)n >= size) {
        if (size > 0)
            buf[0] = '\0';
        set_error(error_r, "header buffer too small");
        return -1;
    }
    return 0;
}

int mx_header_format_date(char *buf, size_t size, time_t t, const char **error_r)
{
    char value[64];
    if (mx_header_format_date_value(value, sizeof(value), t, error_r) < 0) {
        if (size > 0)
            buf[0] = '\0';
        return -1;
    }
    struct hbuf h;
    hb_start(&h, buf, size, "Date:");
    hb_raw(&h, " ", 1);
    hb_raw(&h, value, strlen(value));
    return hb_finish(&h, error_r);
}

/* ---- Message-ID ------------------------------------------------------- */

static bool is_dot_atom_text(const char *s)
{
    bool need_atext = true; /* at the start and after each dot */
    for (; *s != '\0'; s++) {
        if (*s == '.') {
            if (need_atext)
                return false;
            need_atext = true;
        } else if (is_atext((unsigned char)*s)) {
            need_atext = false;
        } else {
            return false;
        }
    }
    return !need_atext;
}

int mx_header_format_message_id(char *buf, size_t size, const char *id_text,
                                const char *domain, const char **error_r)
{
    if (size > 0)
        buf[0] = '\0';
    if (id_text == NULL || !is_dot_atom_text(id_text) || strlen(id_text) > 128) {
        set_error(error_r, "invalid Message-ID left part");
        return -1;
    }
    if (!is_domain(domain)) {
        set_error(error_r, "invalid Message-ID domain");
        return -1;
    }
    /* msg-id admits no FWS inside <...>; a long one is one long line
     * (at most 128 + 255 + ~15 octets, far below 998). */
    struct hbuf h;
    hb_start(&h, buf, size, "Message-ID: <");
    hb_raw(&h, id_text, strlen(id_text));
    hb_raw(&h, "@", 1);
    hb_raw(&h, domain, strlen(domain));
    hb_raw(&h, ">", 1);
    return hb_finish(&h, error_r);
}

/* ---- Received --------------------------------------------------------- */

static bool is_alnum_id(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    }
    return n > 0 && n <= 64;
}

int mx_header_format_received(char *buf, size_t size, const struct mx_received_info *info,
                              const char **error_r)
{
    char ip_lit[INET6_ADDRSTRLEN + 8];
    char esc[2 * MX_HEADER_COMMENT_MAX + 4];
    /* a word: an escaped comment, "(" + a 255-octet domain, or "<path>;" */
    char word[MX_ADDRESS_PATH_MAX + 2 * MX_HEADER_COMMENT_MAX + 8];
    char date[64];
    unsigned char bin[sizeof(struct in6_addr)];

    if (size > 0)
        buf[0] = '\0';
    if (info->ip == NULL || strlen(info->ip) >= INET6_ADDRSTRLEN) {
        set_error(error_r, "Received: invalid client IP address");
        return -1;
    }
    if (inet_pton(AF_INET, info->ip, bin) == 1) {
        snprintf(ip_lit, sizeof(ip_lit), "[%s])", info->ip);
    } else if (inet_pton(AF_INET6, info->ip, bin) == 1) {
        snprintf(ip_lit, sizeof(ip_lit), "[IPv6:%s])", info->ip);
    } else {
        set_error(error_r, "Received: invalid client IP address");
        return -1;
    }
    if (!is_domain(info->by_host)) {
        set_error(error_r, "Received: our host name is not a valid domain");
        return -1;
    }
    if (info->id == NULL || !is_alnum_id(info->id)) {
        set_error(error_r, "Received: invalid queue id");
        return -1;
    }
    if (mx_header_format_date_value(date, sizeof(date), info->date, error_r) < 0)
        return -1;

    const char *helo = info->helo != NULL ? info->helo : "";
    bool helo_ok = helo[0] != '\0' &&
                   (strlen(helo) <= MX_ADDRESS_DOMAIN_MAX) &&
                   (is_domain(helo) || is_address_literal(helo));

    struct hbuf h;
    hb_start(&h, buf, size, "Received:");

    /* from HELO (RDNS [IP]) -- the Extended-Domain of RFC 5321 4.4 */
    hb_word(&h, "from");
    hb_word(&h, helo_ok ? helo : "unknown");
    snprintf(word, sizeof(word), "(%s", is_domain(info->rdns) ? info->rdns : "unknown");
    hb_word(&h, word);
    hb_word(&h, ip_lit);

    /* A HELO we cannot use as a domain is still worth showing (it is how
     * spam tools spot a forged one), escaped, in a comment of its own. */
    if (!helo_ok) {
        h.force_fold = true;
        if (helo[0] == '\0') {
            hb_word(&h, "(no");
            hb_word(&h, "HELO)");
        } else {
            hb_word(&h, "(invalid");
            hb_word(&h, "HELO:");
            escape_comment(helo, MX_HEADER_COMMENT_MAX, esc);
            snprintf(word, sizeof(word), "%s)", esc);
            hb_word(&h, word);
        }
    }

    if (info->tls_version != NULL) {
        h.force_fold = true;
        hb_word(&h, "(using");
        escape_comment(info->tls_version, MX_HEADER_COMMENT_MAX, esc);
        if (info->tls_cipher != NULL) {
            hb_word(&h, esc);
            hb_word(&h, "with");
            hb_word(&h, "cipher");
            escape_comment(info->tls_cipher, MX_HEADER_COMMENT_MAX, esc);
        }
        snprintf(word, sizeof(word), "%s)", esc);
        hb_word(&h, word);
    }

    /* Privacy: the user name appears only when the operator asked for it. */
    if (info->auth_user != NULL && info->show_auth_user) {
        h.force_fold = true;
        hb_word(&h, "(Authenticated");
        hb_word(&h, "sender:");
        escape_comment(info->auth_user, MX_HEADER_COMMENT_MAX, esc);
        snprintf(word, sizeof(word), "%s)", esc);
        hb_word(&h, word);
    }

    h.force_fold = true;
    hb_word(&h, "by");
    hb_word(&h, info->by_host);
    hb_word(&h, "(mxcluster)");
    hb_word(&h, "with");
    hb_word(&h, mx_header_with_protocol(info->esmtp, info->tls_version != NULL,
                                        info->auth_user != NULL, info->utf8));
    hb_word(&h, "id");
    if (info->rcpt != NULL && rcpt_usable(info->rcpt, info->utf8)) {
        hb_word(&h, info->id);
        h.force_fold = true;
        hb_word(&h, "for");
        /* "<rcpt>;" as one word: no FWS is allowed inside a path */
        size_t rl = strlen(info->rcpt);
        if (rl + 4 > sizeof(word)) {
            /* cannot happen (rcpt_usable caps it), but never truncate */
            set_error(error_r, "Received: recipient too long");
            buf[0] = '\0';
            return -1;
        }
        word[0] = '<';
        memcpy(word + 1, info->rcpt, rl);
        memcpy(word + 1 + rl, ">;", 3);
        hb_word_n(&h, word, rl + 3);
    } else {
        snprintf(word, sizeof(word), "%s;", info->id);
        hb_word(&h, word);
    }

    /* date-time, foldable between its parts */
    char *save = NULL;
    for (char *tok = strtok_r(date, " ", &save); tok != NULL;
         tok = strtok_r(NULL, " ", &save))
        hb_word(&h, tok);

    return hb_finish(&h, error_r);
}
