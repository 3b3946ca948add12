/* smtp_cmd - SMTP command line parsing; see smtp_cmd.h for what is
 * tolerated and what is the caller's policy.
 *
 * The parser never reads past line[len) and never writes past a fixed
 * buffer: every copy into struct smtp_cmd is bounded by a length checked
 * first (the line is at most SMTP_AUTH_LINE_MAX octets, and only AUTH may
 * be that long; AUTH copies nothing but the mechanism name). */
#include "smtp_cmd.h"

#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mx_base64.h"

/* ---- replies ------------------------------------------------------------ */

#define REPLY(name, c, e, t) \
    static const struct smtp_reply_err name = { (c), (e), (t) }

REPLY(err_unrecognized, 500, "5.5.2", "Command unrecognized");
REPLY(err_nul,          500, "5.5.2", "NUL byte in command");
REPLY(err_too_long,     500, "5.5.2", "Line too long");
REPLY(err_control,      501, "5.5.4", "Syntax error: control character in command");
REPLY(err_no_params,    501, "5.5.4", "Syntax error: no parameters allowed");
REPLY(err_helo,         501, "5.5.4", "Syntax: HELO hostname");
REPLY(err_ehlo,         501, "5.5.4", "Syntax: EHLO hostname");
REPLY(err_helo_chars,   501, "5.5.4", "Invalid characters in hostname");
REPLY(err_mail,         501, "5.5.4", "Syntax: MAIL FROM:<address>");
REPLY(err_rcpt,         501, "5.5.4", "Syntax: RCPT TO:<address>");
REPLY(err_vrfy,         501, "5.5.4", "Syntax: VRFY address");
REPLY(err_expn,         501, "5.5.4", "Syntax: EXPN list");
REPLY(err_bdat,         501, "5.5.4", "Syntax: BDAT chunk-size [LAST]");
REPLY(err_bdat_size,    501, "5.5.4", "BDAT chunk size too large");
REPLY(err_auth,         501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
REPLY(err_mail_param,   555, "5.5.4", "Unsupported MAIL parameter");
REPLY(err_rcpt_param,   555, "5.5.4", "Unsupported RCPT parameter");
REPLY(err_param_syntax, 501, "5.5.4", "Syntax error in parameters");
REPLY(err_param_dup,    501, "5.5.4", "Duplicate parameter");
REPLY(err_size,         501, "5.5.4", "Bad SIZE value");
REPLY(err_body,         501, "5.5.4", "Bad BODY value (7BIT, 8BITMIME or BINARYMIME)");
REPLY(err_smtputf8,     501, "5.5.4", "SMTPUTF8 takes no value");
REPLY(err_ret,          501, "5.5.4", "Bad RET value (FULL or HDRS)");
REPLY(err_envid,        501, "5.5.4", "Bad ENVID value");
REPLY(err_auth_param,   501, "5.5.4", "Bad AUTH value");
REPLY(err_notify,       501, "5.5.4", "Bad NOTIFY value");
REPLY(err_orcpt,        501, "5.5.4", "Bad ORCPT value");
REPLY(err_orcpt_type,   501, "5.5.4", "Unsupported ORCPT address type");
REPLY(err_mail_utf8,    553, "5.6.7", "Non-ASCII sender address requires SMTPUTF8");
REPLY(err_rcpt_utf8,    553, "5.6.7", "Non-ASCII recipient address requires SMTPUTF8");
REPLY(err_b64,          501, "5.5.2", "Invalid base64");
REPLY(err_cancel,       501, "5.7.0", "Authentication cancelled");
REPLY(err_plain,        501, "5.5.2", "Malformed PLAIN response");
REPLY(err_plain_long,   501, "5.5.2", "PLAIN response field too long");
REPLY(err_plain_utf8,   501, "5.5.2", "Invalid UTF-8 in PLAIN response");
REPLY(err_plain_authcid, 501, "5.5.2", "Empty authentication identity");
REPLY(err_plain_passwd, 501, "5.5.2", "Empty password");
REPLY(err_authz,        535, "5.7.8", "Authentication credentials invalid");
REPLY(err_resp_long,    501, "5.5.2", "Response too long");
REPLY(err_resp_nul,     501, "5.5.2", "NUL byte in response");

/* Address syntax replies: one static text per mx_address error, built at
 * compile time from the same list so the reply names the exact problem. */
static const char *const mail_addr_text[MX_ADDRESS_ERR_COUNT_] = {
#define SMTP_MAIL_TEXT_(name, text) \
    [MX_ADDRESS_ERR_##name] = "Bad sender address syntax: " text,
    MX_ADDRESS_ERROR_LIST(SMTP_MAIL_TEXT_)
#undef SMTP_MAIL_TEXT_
};
static const char *const rcpt_addr_text[MX_ADDRESS_ERR_COUNT_] = {
#define SMTP_RCPT_TEXT_(name, text) \
    [MX_ADDRESS_ERR_##name] = "Bad recipient address syntax: " text,
    MX_ADDRESS_ERROR_LIST(SMTP_RCPT_TEXT_)
#undef SMTP_RCPT_TEXT_
};

static int fail(struct smtp_reply_err *err_r, const struct smtp_reply_err *e)
{
    *err_r = *e;
    return -1;
}

/* ---- small helpers -------------------------------------------------------- */

static unsigned char ascii_upper(unsigned char c)
{
    return (c >= 'a' && c <= 'z') ? (unsigned char)(c - ('a' - 'A')) : c;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* word_is - s[0..n) equals the upper-case word w, ignoring ASCII case. */
static bool word_is(const char *s, size_t n, const char *w)
{
    size_t wl = strlen(w);
    if (n != wl)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (ascii_upper((unsigned char)s[i]) != (unsigned char)w[i])
            return false;
    }
    return true;
}

/* utf8_text_ok - strict UTF-8 without C1 controls (U+0080..U+009F, which
 * are C2 80..C2 9F once the UTF-8 is known valid); C0 controls and DEL are
 * refused for the whole line before any of this runs. */
static bool utf8_text_ok(const char *s, size_t n)
{
    if (!mx_address_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i + 1 < n; i++) {
        if ((unsigned char)s[i] == 0xc2 && (unsigned char)s[i + 1] <= 0x9f)
            return false;
    }
    return true;
}

static bool printable_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    }
    return true;
}

/* parse_u64 - 1..20 decimal digits. -1: not a number; -2: too large. */
static int parse_u64(const char *s, size_t n, uint64_t *v_r)
{
    if (n == 0)
        return -1;
    uint64_t v = 0;
    bool overflow = n > SMTP_NUMBER_DIGITS;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_digit(c))
            return -1;
        unsigned d = c - '0';
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    if (overflow)
        return -2;
    *v_r = v;
    return 0;
}

static const char *const verb_names[] = {
    [SMTP_VERB_NONE] = "?",
    [SMTP_VERB_HELO] = "HELO",
    [SMTP_VERB_EHLO] = "EHLO",
    [SMTP_VERB_MAIL] = "MAIL",
    [SMTP_VERB_RCPT] = "RCPT",
    [SMTP_VERB_DATA] = "DATA",
    [SMTP_VERB_BDAT] = "BDAT",
    [SMTP_VERB_RSET] = "RSET",
    [SMTP_VERB_NOOP] = "NOOP",
    [SMTP_VERB_QUIT] = "QUIT",
    [SMTP_VERB_HELP] = "HELP",
    [SMTP_VERB_VRFY] = "VRFY",
    [SMTP_VERB_EXPN] = "EXPN",
    [SMTP_VERB_STARTTLS] = "STARTTLS",
    [SMTP_VERB_AUTH] = "AUTH",
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned)verb >= sizeof(verb_names) / sizeof(verb_names[0]))
        return "?";
    return verb_names[verb];
}

static enum smtp_verb verb_lookup(const char *s, size_t n)
{
    for (size_t v = SMTP_VERB_HELO; v < sizeof(verb_names) / sizeof(verb_names[0]); v++) {
        if (word_is(s, n, verb_names[v]))
            return (enum smtp_verb)v;
    }
    return SMTP_VERB_NONE;
}

/* ---- xtext ---------------------------------------------------------------- */

static int hex_upper(unsigned char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int smtp_xtext_decode(const char *in, size_t len, char *out, size_t out_size)
{
    if (out_size == 0)
        return -2;
    if (out_size > INT_MAX)
        out_size = INT_MAX;
    size_t n = 0;
    int ret = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            if (len - i < 3 || hex_upper((unsigned char)in[i + 1]) < 0 ||
                hex_upper((unsigned char)in[i + 2]) < 0) {
                ret = -1;
                break;
            }
            c = (unsigned char)(hex_upper((unsigned char)in[i + 1]) << 4 |
                                hex_upper((unsigned char)in[i + 2]));
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            ret = -1;
            break;
        }
        if (n + 1 >= out_size) {
            ret = -2;
            break;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return ret < 0 ? ret : (int)n;
}

/* ---- ESMTP parameters ------------------------------------------------------ */

enum param_bit {
    P_SIZE = 1u << 0, P_BODY = 1u << 1, P_SMTPUTF8 = 1u << 2, P_RET = 1u << 3,
    P_ENVID = 1u << 4, P_AUTH = 1u << 5, P_NOTIFY = 1u << 6, P_ORCPT = 1u << 7,
};

static const struct {
    const char *name;
    enum param_bit bit;
    bool mail;     /* MAIL parameter (else RCPT) */
} params[] = {
    { "SIZE", P_SIZE, true },
    { "BODY", P_BODY, true },
    { "SMTPUTF8", P_SMTPUTF8, true },
    { "RET", P_RET, true },
    { "ENVID", P_ENVID, true },
    { "AUTH", P_AUTH, true },
    { "NOTIFY", P_NOTIFY, false },
    { "ORCPT", P_ORCPT, false },
};

static int parse_notify(const char *v, size_t n, unsigned *notify_r,
                        struct smtp_reply_err *err_r)
{
    unsigned bits = 0;
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        unsigned bit;
        if (word_is(v + i, j - i, "NEVER"))
            bit = SMTP_NOTIFY_NEVER;
        else if (word_is(v + i, j - i, "SUCCESS"))
            bit = SMTP_NOTIFY_SUCCESS;
        else if (word_is(v + i, j - i, "FAILURE"))
            bit = SMTP_NOTIFY_FAILURE;
        else if (word_is(v + i, j - i, "DELAY"))
            bit = SMTP_NOTIFY_DELAY;
        else
            return fail(err_r, &err_notify);
        if ((bits & bit) != 0)
            return fail(err_r, &err_notify);
        bits |= bit;
        if (j == n)
            break;
        i = j + 1;
    }
    /* NEVER must stand alone (RFC 3461 4.1) */
    if ((bits & SMTP_NOTIFY_NEVER) != 0 && bits != SMTP_NOTIFY_NEVER)
        return fail(err_r, &err_notify);
    *notify_r = bits;
    return 0;
}

static int parse_orcpt(const char *v, size_t n, bool utf8_txn,
                       struct smtp_rcpt_params *rcpt, struct smtp_reply_err *err_r)
{
    const char *semi = memchr(v, ';', n);
    if (semi == NULL || semi == v || semi + 1 == v + n)
        return fail(err_r, &err_orcpt);
    size_t tlen = (size_t)(semi - v);
    const char *addr = semi + 1;
    size_t alen = n - tlen - 1;
    if (word_is(v, tlen, "RFC822")) {
        strcpy(rcpt->orcpt_type, "rfc822");
        int r = smtp_xtext_decode(addr, alen, rcpt->orcpt, sizeof(rcpt->orcpt));
        if (r <= 0 || !printable_ascii(rcpt->orcpt, (size_t)r))
            return fail(err_r, &err_orcpt);
    } else if (word_is(v, tlen, "UTF-8")) {
        /* RFC 6533 utf-8-addr-xtext/unitext: kept as sent. Without
         * SMTPUTF8 only its ASCII (escaped) form is acceptable. */
        strcpy(rcpt->orcpt_type, "utf-8");
        bool high = false;
        for (size_t i = 0; i < alen; i++)
            high |= (unsigned char)addr[i] >= 0x80;
        if (alen > SMTP_ORCPT_MAX || (high && !utf8_txn) || !utf8_text_ok(addr, alen))
            return fail(err_r, &err_orcpt);
        memcpy(rcpt->orcpt, addr, alen);
        rcpt->orcpt[alen] = '\0';
    } else {
        return fail(err_r, &err_orcpt_type);
    }
    rcpt->has_orcpt = true;
    return 0;
}

/* parse_param - one "KEYWORD[=VALUE]" token. */
static int parse_param(const char *tok, size_t n, bool is_mail, bool utf8_txn,
                       unsigned *seen, struct smtp_cmd *cmd,
                       struct smtp_reply_err *err_r)
{
    const char *eq = memchr(tok, '=', n);
    size_t klen = eq != NULL ? (size_t)(eq - tok) : n;
    const char *v = eq != NULL ? eq + 1 : NULL;
    size_t vlen = eq != NULL ? n - klen - 1 : 0;

    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (klen == 0 || !is_alnum((unsigned char)tok[0]))
        return fail(err_r, &err_param_syntax);
    for (size_t i = 1; i < klen; i++) {
        if (!is_alnum((unsigned char)tok[i]) && tok[i] != '-')
            return fail(err_r, &err_param_syntax);
    }
    /* esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 allowed by RFC 6531;
     * each parameter below is stricter where it needs to be. */
    if (v != NULL) {
        if (vlen == 0)
            return fail(err_r, &err_param_syntax);
        for (size_t i = 0; i < vlen; i++) {
            unsigned char c = (unsigned char)v[i];
            if (c == '=' || c <= 32 || c == 127)
                return fail(err_r, &err_param_syntax);
        }
    }

    size_t p;
    for (p = 0; p < sizeof(params) / sizeof(params[0]); p++) {
        if (params[p].mail == is_mail && word_is(tok, klen, params[p].name))
            break;
    }
    if (p == sizeof(params) / sizeof(params[0]))
        return fail(err_r, is_mail ? &err_mail_param : &err_rcpt_param);
    if ((*seen & params[p].bit) != 0)
        return fail(err_r, &err_param_dup);
    *seen |= params[p].bit;

    struct smtp_mail_params *mail = &cmd->mail;
    int r;
    switch (params[p].bit) {
    case P_SIZE:
        if (v == NULL || parse_u64(v, vlen, &mail->size) < 0)
            return fail(err_r, &err_size);
        mail->has_size = true;
        return 0;
    case P_BODY:
        if (v != NULL && word_is(v, vlen, "7BIT"))
            mail->body = SMTP_BODY_7BIT;
        else if (v != NULL && word_is(v, vlen, "8BITMIME"))
            mail->body = SMTP_BODY_8BITMIME;
        else if (v != NULL && word_is(v, vlen, "BINARYMIME"))
            mail->body = SMTP_BODY_BINARYMIME;
        else
            return fail(err_r, &err_body);
        return 0;
    case P_SMTPUTF8:
        if (v != NULL)
            return fail(err_r, &err_smtputf8);
        mail->smtputf8 = true;
        return 0;
    case P_RET:
        if (v != NULL && word_is(v, vlen, "FULL"))
            mail->ret = SMTP_RET_FULL;
        else if (v != NULL && word_is(v, vlen, "HDRS"))
            mail->ret = SMTP_RET_HDRS;
        else
            return fail(err_r, &err_ret);
        return 0;
    case P_ENVID:
        if (v == NULL)
            return fail(err_r, &err_envid);
        r = smtp_xtext_decode(v, vlen, mail->envid, sizeof(mail->envid));
        if (r <= 0 || !printable_ascii(mail->envid, (size_t)r))
            return fail(err_r, &err_envid);
        mail->has_envid = true;
        return 0;
    case P_AUTH:
        if (v == NULL)
            return fail(err_r, &err_auth_param);
        mail->has_auth = true;
        if (vlen == 2 && v[0] == '<' && v[1] == '>') {
            mail->auth_null = true;
            return 0;
        }
        r = smtp_xtext_decode(v, vlen, mail->auth, sizeof(mail->auth));
        if (r <= 0 || !printable_ascii(mail->auth, (size_t)r))
            return fail(err_r, &err_auth_param);
        return 0;
    case P_NOTIFY:
        if (v == NULL)
            return fail(err_r, &err_notify);
        return parse_notify(v, vlen, &cmd->rcpt.notify, err_r);
    case P_ORCPT:
        if (v == NULL)
            return fail(err_r, &err_orcpt);
        return parse_orcpt(v, vlen, utf8_txn, &cmd->rcpt, err_r);
    }
    return fail(err_r, &err_param_syntax); /* not reached */
}

/* ---- MAIL / RCPT -------------------------------------------------------------- */

/* path_end - end (exclusive) of the path token starting at a[start]:
 * the '>' that closes it (or, for a lenient bare path, the first space),
 * skipping quoted strings, which may hold '>' and spaces; then any junk
 * glued to it up to the next space, which the address parser refuses.
 * An unterminated path or quote makes the whole rest the (bad) path. */
static size_t path_end(const char *a, size_t n, size_t start)
{
    bool bracket = a[start] == '<', quoted = false, done = false;
    size_t i;
    for (i = start + (bracket ? 1 : 0); i < n; i++) {
        char c = a[i];
        if (quoted) {
            if (c == '\\' && i + 1 < n)
                i++;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (bracket && c == '>') {
            i++;
            done = true;
            break;
        } else if (!bracket && c == ' ') {
            done = true;
            break;
        }
    }
    if (!done)
        return n;
    while (i < n && a[i] != ' ')
        i++;
    return i;
}

static int parse_mail_rcpt(struct smtp_cmd *cmd, bool is_mail, unsigned flags,
                           struct smtp_reply_err *err_r)
{
    const char *a = cmd->arg;
    size_t n = cmd->arg_len;
    const char *kw = is_mail ? "FROM:" : "TO:";
    size_t klen = strlen(kw);
    const struct smtp_reply_err *syntax = is_mail ? &err_mail : &err_rcpt;

    if (n < klen || !word_is(a, klen, kw))
        return fail(err_r, syntax);
    size_t pos = klen;
    while (pos < n && a[pos] == ' ') {
        cmd->space_after_colon = true;
        pos++;
    }
    if (pos == n)
        return fail(err_r, syntax);
    size_t pstart = pos, pend = path_end(a, n, pos);

    /* Parameters first: SMTPUTF8 decides how the path is parsed. */
    bool utf8_txn = (flags & SMTP_CMD_UTF8_TRANSACTION) != 0;
    unsigned seen = 0;
    pos = pend;
    while (pos < n) {
        while (pos < n && a[pos] == ' ')
            pos++;
        size_t t = pos;
        while (pos < n && a[pos] != ' ')
            pos++;
        if (pos > t && parse_param(a + t, pos - t, is_mail, utf8_txn, &seen, cmd, err_r) < 0)
            return -1;
    }

    unsigned aflags = 0;
    if (is_mail) {
        aflags |= MX_ADDRESS_ALLOW_NULL;
        if (cmd->mail.smtputf8)
            aflags |= MX_ADDRESS_ALLOW_UTF8;
    } else {
        aflags |= MX_ADDRESS_ALLOW_POSTMASTER;
        if (utf8_txn)
            aflags |= MX_ADDRESS_ALLOW_UTF8;
    }
    if ((flags & SMTP_CMD_LENIENT_PATH) != 0)
        aflags |= MX_ADDRESS_ALLOW_NO_BRACKETS;
    if (mx_address_parse_path(a + pstart, pend - pstart, aflags, &cmd->addr, NULL) < 0) {
        enum mx_address_error e = cmd->addr.error;
        if (e == MX_ADDRESS_ERR_NEED_UTF8)
            return fail(err_r, is_mail ? &err_mail_utf8 : &err_rcpt_utf8);
        err_r->code = 501;
        err_r->enhanced = is_mail ? "5.1.7" : "5.1.3";
        err_r->text = (is_mail ? mail_addr_text : rcpt_addr_text)[e];
        return -1;
    }
    return 0;
}

/* ---- the other verbs -------------------------------------------------------- */

static int parse_helo(struct smtp_cmd *cmd, struct smtp_reply_err *err_r)
{
    if (cmd->arg_len == 0)
        return fail(err_r, cmd->verb == SMTP_VERB_HELO ? &err_helo : &err_ehlo);
    if (!utf8_text_ok(cmd->arg, cmd->arg_len))
        return fail(err_r, &err_helo_chars);
    const char *w = cmd->arg;
    size_t wl = 0;
    while (wl < cmd->arg_len && w[wl] != ' ')
        wl++;
    memcpy(cmd->helo, w, wl); /* wl <= SMTP_CMD_LINE_MAX */
    cmd->helo[wl] = '\0';
    cmd->helo_literal = w[0] == '[';
    if (wl != cmd->arg_len) {
        cmd->helo_valid = false;
    } else if (cmd->helo_literal) {
        /* reuse the path parser's literal rules on "<x@[...]>" */
        char path[SMTP_CMD_LINE_MAX + 8];
        struct mx_address tmp;
        memcpy(path, "<x@", 3);
        memcpy(path + 3, w, wl);
        path[3 + wl] = '>';
        cmd->helo_valid = mx_address_parse_path(path, wl + 4, 0, &tmp, NULL) == 0 &&
                          tmp.domain_literal;
    } else {
        cmd->helo_valid = mx_address_check_domain(w, wl, true, NULL) == 0;
    }
    return 0;
}

static int parse_bdat(struct smtp_cmd *cmd, struct smtp_reply_err *err_r)
{
    const char *a = cmd->arg;
    size_t n = cmd->arg_len, i = 0;
    while (i < n && a[i] != ' ')
        i++;
    int r = parse_u64(a, i, &cmd->bdat_size);
    if (r == -2)
        return fail(err_r, &err_bdat_size);
    if (r < 0)
        return fail(err_r, &err_bdat);
    while (i < n && a[i] == ' ')
        i++;
    if (i < n) {
        if (!word_is(a + i, n - i, "LAST"))
            return fail(err_r, &err_bdat);
        cmd->bdat_last = true;
    }
    return 0;
}

static int parse_auth(struct smtp_cmd *cmd, struct smtp_reply_err *err_r)
{
    const char *a = cmd->arg;
    size_t n = cmd->arg_len, i = 0;
    while (i < n && a[i] != ' ')
        i++;
    /* sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / "-" / "_" */
    if (i == 0 || i > SMTP_SASL_MECH_MAX)
        return fail(err_r, &err_auth);
    for (size_t k = 0; k < i; k++) {
        unsigned char c = ascii_upper((unsigned char)a[k]);
        if (!is_alnum(c) && c != '-' && c != '_')
            return fail(err_r, &err_auth);
        cmd->auth_mech[k] = (char)c;
    }
    cmd->auth_mech[i] = '\0';
    while (i < n && a[i] == ' ')
        i++;
    if (i < n) {
        if (memchr(a + i, ' ', n - i) != NULL)
            return fail(err_r, &err_auth);
        cmd->has_auth_initial = true;
        cmd->auth_initial = a + i;
        cmd->auth_initial_len = n - i;
    }
    return 0;
}

int smtp_cmd_parse(const char *line, size_t len, unsigned flags,
                   struct smtp_cmd *cmd_r, struct smtp_reply_err *err_r)
{
    memset(cmd_r, 0, sizeof(*cmd_r));
    cmd_r->arg = line;
    if (len > 0 && memchr(line, '\0', len) != NULL)
        return fail(err_r, &err_nul);

    size_t vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;
    cmd_r->verb = verb_lookup(line, vlen);
    if (cmd_r->verb == SMTP_VERB_NONE)
        return fail(err_r, &err_unrecognized);
    if (len > (cmd_r->verb == SMTP_VERB_AUTH ? SMTP_AUTH_LINE_MAX : SMTP_CMD_LINE_MAX))
        return fail(err_r, &err_too_long);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            return fail(err_r, &err_control);
    }

    size_t a = vlen, e = len;
    while (a < e && line[a] == ' ')
        a++;
    while (e > a && line[e - 1] == ' ')
        e--;
    cmd_r->arg = line + a;
    cmd_r->arg_len = e - a;

    switch (cmd_r->verb) {
    case SMTP_VERB_HELO:
    case SMTP_VERB_EHLO:
        return parse_helo(cmd_r, err_r);
    case SMTP_VERB_MAIL:
        return parse_mail_rcpt(cmd_r, true, flags, err_r);
    case SMTP_VERB_RCPT:
        return parse_mail_rcpt(cmd_r, false, flags, err_r);
    case SMTP_VERB_DATA:
    case SMTP_VERB_RSET:
    case SMTP_VERB_QUIT:
    case SMTP_VERB_STARTTLS:
        return cmd_r->arg_len == 0 ? 0 : fail(err_r, &err_no_params);
    case SMTP_VERB_BDAT:
        return parse_bdat(cmd_r, err_r);
    case SMTP_VERB_VRFY:
        return cmd_r->arg_len > 0 ? 0 : fail(err_r, &err_vrfy);
    case SMTP_VERB_EXPN:
        return cmd_r->arg_len > 0 ? 0 : fail(err_r, &err_expn);
    case SMTP_VERB_NOOP:
    case SMTP_VERB_HELP:
        return 0;
    case SMTP_VERB_AUTH:
        return parse_auth(cmd_r, err_r);
    case SMTP_VERB_NONE:
        break;
    }
    return fail(err_r, &err_unrecognized);
}

/* ---- base64 and SASL ---------------------------------------------------------
 *
 * Decoding is hand-written rather than EVP_DecodeBlock(): that one skips
 * leading/trailing whitespace, returns the length padding included, and
 * needs a whole temporary output buffer, which for PLAIN would be one more
 * copy of the password to wipe. Here bytes are produced one at a time
 * straight into the caller's field buffers. */

/* b64_check - strict RFC 4648 base64 (see smtp_cmd.h); *dlen_r = decoded
 * length. "" is valid (nothing). */
static bool b64_check(const unsigned char *s, size_t len, size_t *dlen_r)
{
    if (len % 4 != 0)
        return false;
    if (len == 0) {
        *dlen_r = 0;
        return true;
    }
    size_t pad = s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
    for (size_t i = 0; i < len - pad; i++) {
        if (mx_base64_value(s[i]) < 0)
            return false;
    }
    /* the bits under the padding must be zero, so each text has one form */
    if (pad == 1 && (mx_base64_value(s[len - 2]) & 0x03) != 0)
        return false;
    if (pad == 2 && (mx_base64_value(s[len - 3]) & 0x0f) != 0)
        return false;
    *dlen_r = len / 4 * 3 - pad;
    return true;
}

/* b64_byte - decoded byte idx of a text b64_check() accepted. */
static unsigned char b64_byte(const unsigned char *s, size_t idx)
{
    const unsigned char *g = s + idx / 3 * 4;
    unsigned v0 = (unsigned)mx_base64_value(g[0]), v1 = (unsigned)mx_base64_value(g[1]);
    switch (idx % 3) {
    case 0:
        return (unsigned char)(v0 << 2 | v1 >> 4);
    case 1:
        return (unsigned char)((v1 & 0x0f) << 4 | (unsigned)mx_base64_value(g[2]) >> 2);
    default:
        return (unsigned char)(((unsigned)mx_base64_value(g[2]) & 0x03) << 6 |
                               (unsigned)mx_base64_value(g[3]));
    }
}

static bool is_cancel(const char *s, size_t len)
{
    return len == 1 && s[0] == '*';
}

int smtp_sasl_plain_decode(const char *b64, size_t b64_len,
                           char *authzid, size_t authzid_size,
                           char *authcid, size_t authcid_size,
                           char *passwd, size_t passwd_size,
                           struct smtp_reply_err *err_r)
{
    char *field[3] = { authzid, authcid, passwd };
    size_t size[3] = { authzid_size, authcid_size, passwd_size };
    size_t flen[3] = { 0, 0, 0 };
    const unsigned char *s = (const unsigned char *)b64;
    const struct smtp_reply_err *e = NULL;
    size_t dlen = 0;

    if (is_cancel(b64, b64_len))
        e = &err_cancel;
    else if (b64_len == 1 && b64[0] == '=')
        dlen = 0; /* empty initial response: no NULs, refused below */
    else if (!b64_check(s, b64_len, &dlen))
        e = &err_b64;

    int f = 0;
    for (size_t i = 0; e == NULL && i < dlen; i++) {
        unsigned char c = b64_byte(s, i);
        if (c == '\0') {
            if (++f > 2)
                e = &err_plain; /* a NUL inside the password, or a 4th field */
            continue;
        }
        if (flen[f] + 1 >= size[f]) {
            e = &err_plain_long;
            break;
        }
        field[f][flen[f]++] = (char)c;
    }
    for (int k = 0; k < 3; k++) {
        if (size[k] > 0)
            field[k][flen[k]] = '\0';
    }
    if (e == NULL && f != 2)
        e = &err_plain;
    for (int k = 0; e == NULL && k < 3; k++) {
        if (!mx_address_utf8_valid(field[k], flen[k]))
            e = &err_plain_utf8;
    }
    if (e == NULL && flen[1] == 0)
        e = &err_plain_authcid;
    if (e == NULL && flen[2] == 0)
        e = &err_plain_passwd;
    if (e == NULL && flen[0] > 0 &&
        (flen[0] != flen[1] || memcmp(authzid, authcid, flen[0]) != 0))
        e = &err_authz;
    if (e != NULL) {
        for (int k = 0; k < 3; k++)
            OPENSSL_cleanse(field[k], size[k]);
        return fail(err_r, e);
    }
    return 0;
}

int smtp_base64_decode_line(const char *b64, size_t len, char *out, size_t out_size,
                            size_t *out_len_r, struct smtp_reply_err *err_r)
{
    const unsigned char *s = (const unsigned char *)b64;
    size_t dlen = 0;
    const struct smtp_reply_err *e = NULL;

    if (is_cancel(b64, len))
        e = &err_cancel;
    else if (len == 1 && b64[0] == '=')
        dlen = 0;
    else if (!b64_check(s, len, &dlen))
        e = &err_b64;
    if (e == NULL && dlen >= out_size)
        e = &err_resp_long;
    for (size_t i = 0; e == NULL && i < dlen; i++) {
        out[i] = (char)b64_byte(s, i);
        if (out[i] == '\0')
            e = &err_resp_nul;
    }
    if (e != NULL) {
        OPENSSL_cleanse(out, out_size);
        *out_len_r = 0;
        return fail(err_r, e);
    }
    out[dlen] = '\0';
    *out_len_r = dlen;
    return 0;
}

int smtp_base64_encode(const void *in, size_t len, char *out, size_t out_size)
{
    if (len > (size_t)INT_MAX / 4 * 3 - 3)
        return -1;
    size_t need = 4 * ((len + 2) / 3) + 1;
    if (out_size < need)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}
