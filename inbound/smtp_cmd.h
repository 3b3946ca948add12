/* smtp_cmd - SMTP command line parsing for mx-inbound (RFC 5321, ESMTP
 * parameters of RFC 1870, 6152, 3030, 3461, 4954, 6531), plus the base64
 * and SASL PLAIN helpers the AUTH exchange needs.
 *
 * Pure code: no event loop, no I/O, no allocation. smtp_cmd_parse() takes a
 * length-delimited line (never relies on a NUL terminator) and either fills
 * a struct smtp_cmd or says exactly which reply to send. Policy is the
 * caller's: whether a verb is allowed in the current state, whether SIZE
 * exceeds the limit (552 5.3.4), whether the domain is ours and the relay
 * check (mx_address_classify, see mx_address.h), whether AUTH is offered.
 *
 * Tolerated client deviations (each seen in the wild):
 *   - verb, FROM:/TO: keyword and ESMTP keywords/values in any case;
 *   - spaces after "FROM:"/"TO:" (recorded in space_after_colon);
 *   - several spaces between verb and argument and between parameters,
 *     and trailing spaces at the end of the line;
 *   - with SMTP_CMD_LENIENT_PATH, `MAIL FROM:user@d` without brackets.
 * Refused anywhere in the line: NUL (500 5.5.2) and other control
 * characters, including TAB, bare CR and bare LF (501 5.5.4). */
#ifndef SMTP_CMD_H
#define SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_address.h"
#include "smtp_reply.h"

/* Command line without CRLF (RFC 5321 4.5.3.1.4: 512 with CRLF). */
#define SMTP_CMD_LINE_MAX   510
/* AUTH lines may be longer (RFC 4954 4: 12288 octets with CRLF). The line
 * reader must therefore accept up to SMTP_AUTH_LINE_MAX before it knows the
 * verb; smtp_cmd_parse() refuses non-AUTH lines above SMTP_CMD_LINE_MAX. */
#define SMTP_AUTH_LINE_MAX  12286
#define SMTP_ENVID_MAX      100   /* decoded octets, RFC 3461 4.4 */
#define SMTP_ORCPT_MAX      500   /* decoded octets, RFC 3461 4.2 */
#define SMTP_SASL_MECH_MAX  20    /* RFC 4422 3.1 */
#define SMTP_NUMBER_DIGITS  20    /* SIZE=, BDAT chunk size */

/* Flags for smtp_cmd_parse(). */
enum smtp_cmd_flag {
    /* RCPT in a transaction whose MAIL carried SMTPUTF8: recipients (and
     * an ORCPT=utf-8 value) may be UTF-8. MAIL decides for itself. */
    SMTP_CMD_UTF8_TRANSACTION = 1u << 0,
    /* Accept MAIL FROM:user@d / RCPT TO:user@d without angle brackets. */
    SMTP_CMD_LENIENT_PATH     = 1u << 1,
};

enum smtp_verb {
    SMTP_VERB_NONE = 0,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_HELP,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
};

/* The reply to send instead of acting on the command: struct smtp_reply_err
 * (smtp_reply.h), shared with smtp_data. */

enum smtp_body {
    SMTP_BODY_NONE = 0,        /* no BODY= given */
    SMTP_BODY_7BIT,
    SMTP_BODY_8BITMIME,
    SMTP_BODY_BINARYMIME,      /* only valid with BDAT (RFC 3030): caller checks */
};

enum smtp_ret {
    SMTP_RET_NONE = 0,
    SMTP_RET_FULL,
    SMTP_RET_HDRS,
};

/* NOTIFY= bits; 0 means NOTIFY was not given. NEVER is never combined. */
#define SMTP_NOTIFY_NEVER    (1u << 0)
#define SMTP_NOTIFY_SUCCESS  (1u << 1)
#define SMTP_NOTIFY_FAILURE  (1u << 2)
#define SMTP_NOTIFY_DELAY    (1u << 3)

struct smtp_mail_params {
    bool has_size;
    uint64_t size;             /* caller compares with its limit: 552 5.3.4 */
    enum smtp_body body;
    bool smtputf8;
    enum smtp_ret ret;
    bool has_envid;
    char envid[SMTP_ENVID_MAX + 1];       /* xtext-decoded, printable ASCII */
    bool has_auth;
    bool auth_null;                       /* AUTH=<> */
    char auth[SMTP_CMD_LINE_MAX + 1];     /* xtext-decoded, printable ASCII */
};

struct smtp_rcpt_params {
    unsigned notify;                      /* SMTP_NOTIFY_* bits, 0 = absent */
    bool has_orcpt;
    /* "rfc822": orcpt is xtext-decoded printable ASCII. "utf-8" (RFC 6533):
     * orcpt is the value as sent (utf-8-addr-xtext, not decoded; UTF-8
     * octets only in an SMTPUTF8 transaction). Other types are refused. */
    char orcpt_type[8];
    char orcpt[SMTP_ORCPT_MAX + 1];
};

struct smtp_cmd {
    enum smtp_verb verb;
    /* Argument after the verb, spaces trimmed: points INTO the caller's
     * line (not NUL-terminated, valid as long as the line is). Empty for
     * verbs without one. NOOP/HELP/VRFY/EXPN use only this. */
    const char *arg;
    size_t arg_len;

    /* HELO/EHLO: the first word of the argument (NUL-terminated copy). */
    char helo[SMTP_CMD_LINE_MAX + 1];
    bool helo_literal;         /* starts with '[' */
    bool helo_valid;           /* one word, and a valid domain or literal */

    /* MAIL/RCPT */
    struct mx_address addr;
    bool space_after_colon;    /* "FROM: <a@b>": tolerated RFC violation */
    struct smtp_mail_params mail;
    struct smtp_rcpt_params rcpt;

    /* BDAT */
    uint64_t bdat_size;
    bool bdat_last;

    /* AUTH: mechanism upper-cased; the initial response points INTO the
     * line (it holds credentials: do not copy it, wipe the line buffer
     * after use). "=" means an empty initial response (RFC 4954 4). */
    char auth_mech[SMTP_SASL_MECH_MAX + 1];
    bool has_auth_initial;
    const char *auth_initial;
    size_t auth_initial_len;
};

/* smtp_cmd_parse - parse one command line (line[0..len), without CRLF).
 * flags: enum smtp_cmd_flag. Returns 0 and fills *cmd_r, or -1 and fills
 * *err_r (*cmd_r then holds at least the verb if it was recognised). */
int smtp_cmd_parse(const char *line, size_t len, unsigned flags,
                   struct smtp_cmd *cmd_r, struct smtp_reply_err *err_r);

/* smtp_verb_name - "MAIL", ... for logs; "?" for SMTP_VERB_NONE. */
const char *smtp_verb_name(enum smtp_verb verb);

/* smtp_xtext_decode - RFC 3461 xtext (chars 33..126 except '+' and '=';
 * "+HH" with upper-case hex) into out (NUL-terminated, at most
 * out_size - 1 octets). Returns the decoded length, -1 on bad syntax, -2 if
 * it does not fit. Decoded octets are NOT checked: "+00" gives a NUL. */
int smtp_xtext_decode(const char *in, size_t len, char *out, size_t out_size);

/* ---- AUTH helpers ---------------------------------------------------
 *
 * Credentials: these decode straight into the caller's buffers and keep no
 * other copy. THE CALLER MUST WIPE those buffers (and the line they came
 * from) with OPENSSL_cleanse() as soon as the bind is done, on every path.
 * On failure the helpers have already wiped the output buffers.
 *
 * Base64 is strict RFC 4648: no whitespace, length a multiple of 4,
 * padding only at the end, zero pad bits. "*" alone is the client's cancel
 * (RFC 4954 4) and gives 501 5.7.0. */

/* smtp_sasl_plain_decode - RFC 4616 "[authzid] NUL authcid NUL passwd".
 * Each buffer receives a NUL-terminated UTF-8 field of at most size - 1
 * octets (sizes must be >= 1). Refuses bad base64 (501 5.5.2), not exactly
 * two NULs (501 5.5.2), a field that does not fit (501 5.5.2), invalid
 * UTF-8, an empty authcid, an empty password (an LDAP simple bind with an
 * empty password is an unauthenticated bind that SUCCEEDS: never let one
 * through), and an authzid different from authcid (535 5.7.8: we do not
 * support proxy authorization). */
int smtp_sasl_plain_decode(const char *b64, size_t b64_len,
                           char *authzid, size_t authzid_size,
                           char *authcid, size_t authcid_size,
                           char *passwd, size_t passwd_size,
                           struct smtp_reply_err *err_r);

/* smtp_base64_decode_line - one AUTH LOGIN response line (or an initial
 * response) into out, NUL-terminated; *out_len_r = decoded length. An empty
 * line and "=" decode to "". Refuses decoded NULs. The caller must refuse an
 * EMPTY PASSWORD itself (see smtp_sasl_plain_decode for why). */
int smtp_base64_decode_line(const char *b64, size_t len, char *out, size_t out_size,
                            size_t *out_len_r, struct smtp_reply_err *err_r);

/* smtp_base64_encode - base64 of in[0..len) into out with a NUL, for the
 * 334 prompts. Returns the encoded length, or -1 if out_size is too small
 * (needs 4 * ((len + 2) / 3) + 1). */
int smtp_base64_encode(const void *in, size_t len, char *out, size_t out_size);

#endif
