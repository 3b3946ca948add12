/* mx_address - RFC 5321 path parsing; see mx_address.h for the rules and
 * the relay policy callers must apply.
 *
 * The parser is a single left-to-right pass over a length-delimited buffer
 * after one pre-scan for control characters and UTF-8. Every write into the
 * fixed output buffers is bounded by a limit checked before the write
 * (local part <= 64 octets as sent, decoded is never longer; domain <= 255). */
#include "mx_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

static const char *const error_texts[MX_ADDRESS_ERR_COUNT_] = {
    [MX_ADDRESS_OK] = "ok",
#define MX_ADDRESS_ERR_TEXT_(name, text) [MX_ADDRESS_ERR_##name] = text,
    MX_ADDRESS_ERROR_LIST(MX_ADDRESS_ERR_TEXT_)
#undef MX_ADDRESS_ERR_TEXT_
};

const char *mx_address_error_text(enum mx_address_error error)
{
    if ((unsigned)error >= MX_ADDRESS_ERR_COUNT_)
        return "unknown address error";
    return error_texts[error];
}

const char *mx_address_route_name(enum mx_address_route route)
{
    switch (route) {
    case MX_ADDRESS_PLAIN: return "plain";
    case MX_ADDRESS_SOURCE_ROUTED: return "source-routed";
    case MX_ADDRESS_QUOTED_AT: return "quoted-at";
    case MX_ADDRESS_PERCENT_HACK: return "percent-hack";
    case MX_ADDRESS_BANG_PATH: return "bang-path";
    }
    return "unknown";
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* atext (RFC 5322 3.2.3); octets >= 0x80 are atext only with SMTPUTF8,
 * which the pre-scan has already enforced. */
static bool is_atext(unsigned char c)
{
    if (is_alpha(c) || is_digit(c) || c >= 0x80)
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* qtextSMTP (RFC 5321 4.1.2): printable ASCII except `"` and `\`. */
static bool is_qtext(unsigned char c)
{
    return (c >= 32 && c <= 126 && c != '"' && c != '\\') || c >= 0x80;
}

static bool is_domain_char(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c >= 0x80;
}

bool mx_address_utf8_valid(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1; cp = c & 0x1f; min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2; cp = c & 0x0f; min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3; cp = c & 0x07; min = 0x10000;
        } else {
            return false; /* continuation byte, C0/C1 overlong lead, F5..FF */
        }
        if (len - i - 1 < need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            unsigned char cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

/* prescan - controls anywhere, then UTF-8 policy. Runs before parsing so a
 * CR/LF/NUL smuggled inside a quoted string is named as what it is. */
static enum mx_address_error prescan(const unsigned char *s, size_t len,
                                     bool allow_utf8, bool *utf8_r)
{
    bool high = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f)
            return MX_ADDRESS_ERR_CONTROL;
        if (s[i] >= 0x80)
            high = true;
    }
    *utf8_r = high;
    if (!high)
        return MX_ADDRESS_OK;
    if (!allow_utf8)
        return MX_ADDRESS_ERR_NEED_UTF8;
    if (!mx_address_utf8_valid((const char *)s, len))
        return MX_ADDRESS_ERR_BAD_UTF8;
    /* C1 controls U+0080..U+009F are exactly C2 80..C2 9F in valid UTF-8. */
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] == 0xc2 && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
            return MX_ADDRESS_ERR_CONTROL;
    }
    return MX_ADDRESS_OK;
}

/* check_domain_name - LDH labels (plus UTF-8 octets when allowed). */
static enum mx_address_error check_domain_name(const unsigned char *s, size_t len,
                                               bool allow_utf8)
{
    if (len == 0)
        return MX_ADDRESS_ERR_DOMAIN_SYNTAX;
    if (len > MX_ADDRESS_DOMAIN_MAX)
        return MX_ADDRESS_ERR_DOMAIN_TOO_LONG;
    size_t start = 0;
    for (;;) {
        size_t end = start;
        while (end < len && s[end] != '.')
            end++;
        size_t label = end - start;
        if (label == 0)
            return (start > 0 && start == len) ? MX_ADDRESS_ERR_TRAILING_DOT
                                               : MX_ADDRESS_ERR_DOMAIN_SYNTAX;
        if (label > MX_ADDRESS_LABEL_MAX)
            return MX_ADDRESS_ERR_LABEL_TOO_LONG;
        for (size_t i = start; i < end; i++) {
            unsigned char c = s[i];
            if (c >= 0x80 ? !allow_utf8 : !(is_alpha(c) || is_digit(c) || c == '-'))
                return MX_ADDRESS_ERR_DOMAIN_SYNTAX;
        }
        if (s[start] == '-' || s[end - 1] == '-')
            return MX_ADDRESS_ERR_DOMAIN_SYNTAX;
        if (end == len)
            return MX_ADDRESS_OK;
        start = end + 1;
    }
}

int mx_address_check_domain(const char *text, size_t len, bool allow_utf8,
                            const char **error_r)
{
    const unsigned char *s = (const unsigned char *)text;
    bool utf8;
    enum mx_address_error err = prescan(s, len, allow_utf8, &utf8);
    if (err == MX_ADDRESS_OK)
        err = check_domain_name(s, len, allow_utf8);
    if (err != MX_ADDRESS_OK) {
        if (error_r != NULL)
            *error_r = error_texts[err];
        return -1;
    }
    return 0;
}

/* parse_literal - "[" ... "]" at s[0]; on success writes the inet_ntop form
 * into domain (room for MX_ADDRESS_DOMAIN_MAX + 1) and sets *used_r. */
static enum mx_address_error parse_literal(const unsigned char *s, size_t len,
                                           char *domain, size_t *used_r)
{
    size_t close = 1;
    while (close < len && s[close] != ']' && s[close] != '[' && s[close] != '\\')
        close++;
    if (close >= len || s[close] != ']')
        return MX_ADDRESS_ERR_LITERAL;
    const unsigned char *body = s + 1;
    size_t body_len = close - 1;
    static const char v6tag[] = "IPv6:";
    bool v6 = body_len >= 5;
    for (size_t i = 0; v6 && i < 5; i++)
        v6 = ascii_lower(body[i]) == ascii_lower((unsigned char)v6tag[i]);
    if (v6) {
        body += 5;
        body_len -= 5;
    }
    char text[64], out[INET6_ADDRSTRLEN];
    if (body_len == 0 || body_len >= sizeof(text))
        return MX_ADDRESS_ERR_LITERAL;
    memcpy(text, body, body_len);
    text[body_len] = '\0';
    unsigned char bin[sizeof(struct in6_addr)];
    int af = v6 ? AF_INET6 : AF_INET;
    if (inet_pton(af, text, bin) != 1 || inet_ntop(af, bin, out, sizeof(out)) == NULL)
        return MX_ADDRESS_ERR_LITERAL;
    size_t n = 0;
    domain[n++] = '[';
    if (v6) {
        memcpy(domain + n, v6tag, 5);
        n += 5;
    }
    size_t out_len = strlen(out);
    memcpy(domain + n, out, out_len); /* n + out_len + 2 <= 6 + 46 + 2 */
    n += out_len;
    domain[n++] = ']';
    domain[n] = '\0';
    *used_r = close + 1;
    return MX_ADDRESS_OK;
}

/* is_dot_string - could s be sent unquoted? */
static bool is_dot_string(const unsigned char *s, size_t len)
{
    if (len == 0 || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!is_atext(s[i])) {
            return false;
        }
    }
    return true;
}

/* parse_local - Local-part at s[0]; fills addr->local / local_canon /
 * local_quoted and sets *used_r to the octets consumed. */
static enum mx_address_error parse_local(const unsigned char *s, size_t len,
                                         struct mx_address *addr, size_t *used_r)
{
    size_t i = 0, n = 0;
    if (len > 0 && s[0] == '"') {
        addr->local_quoted = true;
        i = 1;
        for (;;) {
            if (i >= len)
                return MX_ADDRESS_ERR_QUOTE;
            if (i + 1 > MX_ADDRESS_LOCAL_MAX)
                return MX_ADDRESS_ERR_LOCAL_TOO_LONG;
            unsigned char c = s[i];
            if (c == '"')
                break;
            if (c == '\\') {
                /* quoted-pairSMTP = "\" %d32-126: never a non-ASCII octet */
                if (i + 1 >= len || s[i + 1] < 32 || s[i + 1] > 126)
                    return MX_ADDRESS_ERR_QUOTE;
                c = s[++i];
            } else if (!is_qtext(c)) {
                return MX_ADDRESS_ERR_QUOTE;
            }
            addr->local[n++] = (char)c;
            i++;
        }
        i++; /* closing quote */
        addr->local[n] = '\0';
        if (n == 0)
            return MX_ADDRESS_ERR_LOCAL_SYNTAX; /* ""@d: see header */
        if (is_dot_string((const unsigned char *)addr->local, n)) {
            memcpy(addr->local_canon, addr->local, n + 1);
        } else {
            size_t m = 0;
            addr->local_canon[m++] = '"';
            for (size_t k = 0; k < n; k++) {
                if (addr->local[k] == '"' || addr->local[k] == '\\')
                    addr->local_canon[m++] = '\\';
                addr->local_canon[m++] = addr->local[k];
            }
            addr->local_canon[m++] = '"';
            addr->local_canon[m] = '\0';
        }
    } else {
        while (i < len && (is_atext(s[i]) || s[i] == '.')) {
            if (i + 1 > MX_ADDRESS_LOCAL_MAX)
                return MX_ADDRESS_ERR_LOCAL_TOO_LONG;
            i++;
        }
        if (!is_dot_string(s, i))
            return MX_ADDRESS_ERR_LOCAL_SYNTAX;
        memcpy(addr->local, s, i);
        addr->local[i] = '\0';
        memcpy(addr->local_canon, s, i);
        addr->local_canon[i] = '\0';
    }
    *used_r = i;
    return MX_ADDRESS_OK;
}

/* domain_span - length of the run of domain characters at s[0]. */
static size_t domain_span(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len && is_domain_char(s[i]))
        i++;
    return i;
}

/* parse_route - A-d-l ":" at s[0] (s[0] == '@'); *used_r includes ':'. */
static enum mx_address_error parse_route(const unsigned char *s, size_t len,
                                         bool allow_utf8, size_t *used_r)
{
    size_t i = 0;
    for (;;) {
        if (i >= len || s[i] != '@')
            return MX_ADDRESS_ERR_ROUTE;
        i++;
        size_t n = domain_span(s + i, len - i);
        if (check_domain_name(s + i, n, allow_utf8) != MX_ADDRESS_OK)
            return MX_ADDRESS_ERR_ROUTE;
        i += n;
        if (i < len && s[i] == ',') {
            i++;
            continue;
        }
        if (i < len && s[i] == ':') {
            *used_r = i + 1;
            return MX_ADDRESS_OK;
        }
        return MX_ADDRESS_ERR_ROUTE;
    }
}

/* after_mailbox - what must follow the mailbox: ">" then nothing when
 * bracketed, nothing otherwise; `otherwise` names the error for any other
 * octet that stopped the scan at pos. */
static enum mx_address_error after_mailbox(const unsigned char *s, size_t pos,
                                           size_t len, bool bracketed,
                                           enum mx_address_error otherwise)
{
    if (bracketed) {
        if (pos >= len)
            return MX_ADDRESS_ERR_BRACKETS;
        if (s[pos] != '>')
            return s[pos] == '@' ? MX_ADDRESS_ERR_TWO_AT : otherwise;
        return pos + 1 == len ? MX_ADDRESS_OK : MX_ADDRESS_ERR_TRAILING;
    }
    if (pos >= len)
        return MX_ADDRESS_OK;
    if (s[pos] == '@')
        return MX_ADDRESS_ERR_TWO_AT;
    return s[pos] == '>' ? MX_ADDRESS_ERR_BRACKETS : otherwise;
}

static bool has_high_octet(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s >= 0x80)
            return true;
    }
    return false;
}

static bool is_postmaster_word(const char *s)
{
    static const char pm[] = "postmaster";
    for (size_t i = 0; i < sizeof(pm); i++) {
        if (ascii_lower((unsigned char)s[i]) != (unsigned char)pm[i])
            return false;
    }
    return true;
}

static enum mx_address_error parse_path(const unsigned char *s, size_t len,
                                        unsigned flags, struct mx_address *addr)
{
    bool allow_utf8 = (flags & MX_ADDRESS_ALLOW_UTF8) != 0;
    if (len == 0)
        return MX_ADDRESS_ERR_EMPTY;
    bool any_utf8;
    enum mx_address_error err = prescan(s, len, allow_utf8, &any_utf8);
    if (err != MX_ADDRESS_OK)
        return err;

    bool bracketed = s[0] == '<';
    size_t pos = 0;
    if (bracketed) {
        pos = 1;
        if (len >= 2 && s[1] == '>') {
            if (len > 2)
                return MX_ADDRESS_ERR_TRAILING;
            if ((flags & MX_ADDRESS_ALLOW_NULL) == 0)
                return MX_ADDRESS_ERR_NULL_PATH;
            addr->is_null = true;
            return MX_ADDRESS_OK;
        }
        if (pos < len && s[pos] == '@') {
            size_t used;
            err = parse_route(s + pos, len - pos, allow_utf8, &used);
            if (err != MX_ADDRESS_OK)
                return err;
            addr->had_source_route = true;
            pos += used;
        }
    } else if ((flags & MX_ADDRESS_ALLOW_NO_BRACKETS) == 0) {
        return MX_ADDRESS_ERR_BRACKETS;
    }

    size_t used;
    err = parse_local(s + pos, len - pos, addr, &used);
    if (err != MX_ADDRESS_OK)
        return err;
    pos += used;

    if (pos >= len || s[pos] != '@') {
        /* No domain: only <Postmaster>, and only where the caller allows it.
         * A quoted "Postmaster" is not the RFC 5321 special form. */
        err = after_mailbox(s, pos, len, bracketed, MX_ADDRESS_ERR_LOCAL_SYNTAX);
        if (err != MX_ADDRESS_OK)
            return err;
        if ((flags & MX_ADDRESS_ALLOW_POSTMASTER) == 0 || addr->local_quoted ||
            addr->had_source_route || !is_postmaster_word(addr->local))
            return MX_ADDRESS_ERR_NO_DOMAIN;
        addr->is_postmaster = true;
        addr->utf8 = false; /* "postmaster" is ASCII */
        strcpy(addr->addr, addr->local_canon);
        return MX_ADDRESS_OK;
    }
    pos++; /* '@' */

    if (pos < len && s[pos] == '[') {
        size_t lit_used;
        err = parse_literal(s + pos, len - pos, addr->domain, &lit_used);
        if (err != MX_ADDRESS_OK)
            return err;
        addr->domain_literal = true;
        pos += lit_used;
        err = after_mailbox(s, pos, len, bracketed, MX_ADDRESS_ERR_LITERAL);
    } else {
        size_t n = domain_span(s + pos, len - pos);
        if (n > MX_ADDRESS_DOMAIN_MAX)
            return MX_ADDRESS_ERR_DOMAIN_TOO_LONG;
        /* What stops the domain decides between "user@d@x" and "user@d x". */
        if (pos + n < len && s[pos + n] == '@')
            return MX_ADDRESS_ERR_TWO_AT;
        err = check_domain_name(s + pos, n, allow_utf8);
        if (err != MX_ADDRESS_OK)
            return err;
        for (size_t i = 0; i < n; i++)
            addr->domain[i] = (char)ascii_lower(s[pos + i]);
        addr->domain[n] = '\0';
        pos += n;
        err = after_mailbox(s, pos, len, bracketed, MX_ADDRESS_ERR_DOMAIN_SYNTAX);
    }
    if (err != MX_ADDRESS_OK)
        return err;

    /* Compare the unbracketed form as if it had its brackets, so both
     * spellings of one path are accepted or refused alike. */
    if (len + (bracketed ? 0 : 2) > MX_ADDRESS_PATH_MAX)
        return MX_ADDRESS_ERR_PATH_TOO_LONG;

    size_t l = strlen(addr->local_canon), d = strlen(addr->domain);
    memcpy(addr->addr, addr->local_canon, l);
    addr->addr[l] = '@';
    memcpy(addr->addr + l + 1, addr->domain, d + 1);
    /* A UTF-8 source route is dropped; only the mailbox decides. */
    addr->utf8 = any_utf8 && has_high_octet(addr->addr);
    return MX_ADDRESS_OK;
}

int mx_address_parse_path(const char *text, size_t len, unsigned flags,
                          struct mx_address *addr_r, const char **error_r)
{
    memset(addr_r, 0, sizeof(*addr_r));
    enum mx_address_error err = parse_path((const unsigned char *)text, len,
                                           flags, addr_r);
    if (err == MX_ADDRESS_OK)
        return 0;
    /* Leave nothing half-filled behind for a careless caller to use. */
    memset(addr_r, 0, sizeof(*addr_r));
    addr_r->error = err;
    if (error_r != NULL)
        *error_r = error_texts[err];
    return -1;
}

enum mx_address_route mx_address_classify(const struct mx_address *addr)
{
    if (addr->had_source_route)
        return MX_ADDRESS_SOURCE_ROUTED;
    if (strchr(addr->local, '@') != NULL)
        return MX_ADDRESS_QUOTED_AT;
    if (strchr(addr->local, '%') != NULL)
        return MX_ADDRESS_PERCENT_HACK;
    if (strchr(addr->local, '!') != NULL)
        return MX_ADDRESS_BANG_PATH;
    return MX_ADDRESS_PLAIN;
}

bool mx_address_domain_equal(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (;; x++, y++) {
        if (ascii_lower(*x) != ascii_lower(*y))
            return false;
        if (*x == '\0')
            return true;
    }
}
