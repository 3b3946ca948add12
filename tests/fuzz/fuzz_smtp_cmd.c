/* fuzz_smtp_cmd - libFuzzer target for the SMTP command parser, the RFC 5321
 * path parser and the AUTH helpers.
 *
 * Input: one control byte, then the bytes under test (the rest of the
 * buffer, which libFuzzer allocates exactly, so any overread is an ASan
 * report). Control bits 0-1 are the smtp_cmd_parse() flags; bits 2-7 pick
 * small SASL field buffers to exercise the length limits.
 *
 * On the same bytes, in turn:
 *   1. smtp_cmd_parse: a refusal is a well-formed reply; an acceptance has
 *      NUL-terminated, in-limit, printable outputs and pointers inside the
 *      line, and its address re-parses to itself;
 *   2. mx_address_parse_path with all 16 flag combinations: extra ALLOW_*
 *      flags never refuse what fewer accepted, nor change the result;
 *      results obey the limits; the canonical form re-parses to itself;
 *   3. smtp_sasl_plain_decode, smtp_base64_decode_line: base64 is strict,
 *      so a success re-encodes to exactly the input; a failure leaves the
 *      output buffers wiped;
 *   4. smtp_xtext_decode: decoding is stable through a re-encode.
 * Any violation abort()s so libFuzzer keeps the input.
 *
 * Build: cmake -DMX_FUZZ=ON -DCMAKE_C_COMPILER=clang, target fuzz_smtp_cmd. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx_address.h"
#include "smtp_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_smtp_cmd: invariant failed at line %d: %s\n", \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* terminated - buf[0..size) holds a NUL; returns strlen. */
static size_t terminated(const char *buf, size_t size)
{
    const char *nul = memchr(buf, '\0', size);
    CHECK(nul != NULL);
    return (size_t)(nul - buf);
}

static void check_no_controls(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        CHECK(c >= 0x20 && c != 0x7f);
        if (c == 0xc2)
            CHECK((unsigned char)s[1] < 0x80 || (unsigned char)s[1] > 0x9f);
    }
}

static bool has_high(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s >= 0x80)
            return true;
    }
    return false;
}

/* check_address - invariants of a successfully parsed address. */
static void check_address(const struct mx_address *a)
{
    size_t l = terminated(a->local, sizeof(a->local));
    size_t c = terminated(a->local_canon, sizeof(a->local_canon));
    size_t d = terminated(a->domain, sizeof(a->domain));
    size_t t = terminated(a->addr, sizeof(a->addr));
    CHECK(a->error == MX_ADDRESS_OK);
    CHECK(l <= MX_ADDRESS_LOCAL_MAX && c <= MX_ADDRESS_LOCAL_MAX && d <= MX_ADDRESS_DOMAIN_MAX);
    CHECK(l <= c);
    check_no_controls(a->local);
    check_no_controls(a->addr);
    CHECK(a->utf8 == has_high(a->addr));
    CHECK(!(a->is_null && a->is_postmaster));
    if (a->is_null) {
        CHECK(l == 0 && c == 0 && d == 0 && t == 0 && !a->had_source_route);
        return;
    }
    CHECK(l > 0);
    if (a->is_postmaster) {
        CHECK(d == 0 && strcasecmp(a->local, "postmaster") == 0);
        CHECK(strcmp(a->addr, a->local_canon) == 0);
        return;
    }
    CHECK(d > 0);
    CHECK(t == c + 1 + d && memcmp(a->addr, a->local_canon, c) == 0 && a->addr[c] == '@' &&
          strcmp(a->addr + c + 1, a->domain) == 0);
    if (a->domain_literal) {
        CHECK(a->domain[0] == '[' && a->domain[d - 1] == ']');
    } else {
        for (size_t i = 0; i < d; i++)
            CHECK(!(a->domain[i] >= 'A' && a->domain[i] <= 'Z'));
        CHECK(mx_address_check_domain(a->domain, d, true, NULL) == 0);
    }
    if (!a->local_quoted)
        CHECK(strcmp(a->local, a->local_canon) == 0);
    /* relay classes agree with the decoded local part */
    enum mx_address_route r = mx_address_classify(a);
    if (r == MX_ADDRESS_PLAIN)
        CHECK(!a->had_source_route && strpbrk(a->local, "@%!") == NULL);
    if (strchr(a->local, '@') != NULL)
        CHECK(a->local_quoted);

    /* the canonical form parses back to the same address */
    char path[sizeof(a->addr) + 2];
    int n = snprintf(path, sizeof(path), "<%s>", a->addr);
    if ((size_t)n <= MX_ADDRESS_PATH_MAX) {
        struct mx_address b;
        size_t len = (size_t)n;
        char *copy = malloc(len);
        memcpy(copy, path, len);
        int ret = mx_address_parse_path(copy, len, MX_ADDRESS_ALLOW_UTF8, &b, NULL);
        free(copy);
        CHECK(ret == 0);
        CHECK(strcmp(a->local, b.local) == 0 && strcmp(a->local_canon, b.local_canon) == 0 &&
              strcmp(a->domain, b.domain) == 0 && strcmp(a->addr, b.addr) == 0);
        CHECK(!b.had_source_route && b.domain_literal == a->domain_literal);
    }
}

static void check_reply(const struct smtp_reply_err *e)
{
    CHECK(e->code == 500 || e->code == 501 || e->code == 535 || e->code == 553 ||
          e->code == 555);
    CHECK(e->enhanced != NULL && e->enhanced[0] - '0' == e->code / 100);
    CHECK(e->text != NULL && e->text[0] != '\0' && strpbrk(e->text, "\r\n") == NULL);
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    }
    return true;
}

static void fuzz_command(const char *line, size_t len, unsigned flags)
{
    struct smtp_cmd cmd;
    struct smtp_reply_err err = { 0, NULL, NULL };
    if (smtp_cmd_parse(line, len, flags, &cmd, &err) < 0) {
        check_reply(&err);
        return;
    }
    CHECK(cmd.verb > SMTP_VERB_NONE && cmd.verb <= SMTP_VERB_AUTH);
    CHECK(memchr(line, '\0', len) == NULL);
    CHECK(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + len);
    CHECK(len <= (cmd.verb == SMTP_VERB_AUTH ? SMTP_AUTH_LINE_MAX : SMTP_CMD_LINE_MAX));
    switch (cmd.verb) {
    case SMTP_VERB_HELO:
    case SMTP_VERB_EHLO: {
        size_t h = terminated(cmd.helo, sizeof(cmd.helo));
        CHECK(h > 0 && h <= cmd.arg_len && memcmp(cmd.helo, cmd.arg, h) == 0);
        CHECK(strchr(cmd.helo, ' ') == NULL);
        check_no_controls(cmd.helo);
        break;
    }
    case SMTP_VERB_MAIL:
    case SMTP_VERB_RCPT:
        check_address(&cmd.addr);
        if (cmd.verb == SMTP_VERB_MAIL) {
            CHECK(!cmd.addr.is_postmaster);
            if (!cmd.mail.smtputf8)
                CHECK(!cmd.addr.utf8);
            size_t e = terminated(cmd.mail.envid, sizeof(cmd.mail.envid));
            CHECK(e <= SMTP_ENVID_MAX && printable(cmd.mail.envid));
            CHECK(cmd.mail.has_envid == (e > 0));
            terminated(cmd.mail.auth, sizeof(cmd.mail.auth));
            CHECK(printable(cmd.mail.auth));
            if (cmd.mail.has_auth)
                CHECK(cmd.mail.auth_null == (cmd.mail.auth[0] == '\0'));
            CHECK(cmd.rcpt.notify == 0 && !cmd.rcpt.has_orcpt);
        } else {
            CHECK(!cmd.addr.is_null);
            if ((flags & SMTP_CMD_UTF8_TRANSACTION) == 0)
                CHECK(!cmd.addr.utf8);
            unsigned nt = cmd.rcpt.notify;
            CHECK((nt & ~0xfu) == 0);
            CHECK(!(nt & SMTP_NOTIFY_NEVER) || nt == SMTP_NOTIFY_NEVER);
            size_t o = terminated(cmd.rcpt.orcpt, sizeof(cmd.rcpt.orcpt));
            terminated(cmd.rcpt.orcpt_type, sizeof(cmd.rcpt.orcpt_type));
            CHECK(o <= SMTP_ORCPT_MAX);
            if (cmd.rcpt.has_orcpt)
                CHECK(o > 0 && (strcmp(cmd.rcpt.orcpt_type, "rfc822") == 0 ||
                                strcmp(cmd.rcpt.orcpt_type, "utf-8") == 0));
            check_no_controls(cmd.rcpt.orcpt);
            CHECK(!cmd.mail.has_size && !cmd.mail.smtputf8 && !cmd.mail.has_envid);
        }
        if ((flags & SMTP_CMD_LENIENT_PATH) == 0)
            CHECK(memchr(cmd.arg, '<', cmd.arg_len) != NULL);
        break;
    case SMTP_VERB_AUTH: {
        size_t m = terminated(cmd.auth_mech, sizeof(cmd.auth_mech));
        CHECK(m >= 1 && m <= SMTP_SASL_MECH_MAX);
        for (size_t i = 0; i < m; i++) {
            char c = cmd.auth_mech[i];
            CHECK((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_');
        }
        if (cmd.has_auth_initial)
            CHECK(cmd.auth_initial >= line && cmd.auth_initial_len > 0 &&
                  cmd.auth_initial + cmd.auth_initial_len <= line + len &&
                  memchr(cmd.auth_initial, ' ', cmd.auth_initial_len) == NULL);
        break;
    }
    case SMTP_VERB_DATA:
    case SMTP_VERB_RSET:
    case SMTP_VERB_QUIT:
    case SMTP_VERB_STARTTLS:
        CHECK(cmd.arg_len == 0);
        break;
    case SMTP_VERB_VRFY:
    case SMTP_VERB_EXPN:
        CHECK(cmd.arg_len > 0);
        break;
    default:
        break;
    }
}

static void fuzz_address(const char *text, size_t len)
{
    static struct mx_address res[16];
    int ok[16];
    for (unsigned f = 0; f < 16; f++) {
        const char *err = NULL;
        ok[f] = mx_address_parse_path(text, len, f, &res[f], &err) == 0;
        if (ok[f]) {
            check_address(&res[f]);
            if (res[f].is_null)
                CHECK(f & MX_ADDRESS_ALLOW_NULL);
            if (res[f].is_postmaster)
                CHECK(f & MX_ADDRESS_ALLOW_POSTMASTER);
            if (res[f].utf8)
                CHECK(f & MX_ADDRESS_ALLOW_UTF8);
            CHECK(len + (text[0] == '<' ? 0 : 2) <= MX_ADDRESS_PATH_MAX);
        } else {
            CHECK(res[f].error > MX_ADDRESS_OK && res[f].error < MX_ADDRESS_ERR_COUNT_);
            CHECK(err == mx_address_error_text(res[f].error));
            CHECK(res[f].addr[0] == '\0' && res[f].local[0] == '\0' && !res[f].is_null);
        }
    }
    /* flags only widen, and never change a result */
    for (unsigned f = 0; f < 16; f++) {
        if (!ok[f])
            continue;
        for (unsigned g = 0; g < 16; g++) {
            if ((g & f) == f) {
                CHECK(ok[g]);
                CHECK(memcmp(&res[f], &res[g], sizeof(res[f])) == 0);
            }
        }
    }
}

static void fuzz_sasl(const char *b64, size_t len, unsigned ctl)
{
    /* large buffers, then small ones picked by the control byte */
    size_t sizes[2][3] = { { 256, 256, 256 },
                           { 1 + ((ctl >> 2) & 3) * 2, 1 + ((ctl >> 4) & 3) * 2,
                             1 + ((ctl >> 6) & 3) * 2 } };
    for (int round = 0; round < 2; round++) {
        size_t zs = sizes[round][0], cs = sizes[round][1], ps = sizes[round][2];
        char *z = malloc(zs), *c = malloc(cs), *p = malloc(ps);
        memset(z, 'X', zs);
        memset(c, 'X', cs);
        memset(p, 'X', ps);
        struct smtp_reply_err err;
        if (smtp_sasl_plain_decode(b64, len, z, zs, c, cs, p, ps, &err) == 0) {
            size_t zl = terminated(z, zs), cl = terminated(c, cs), pl = terminated(p, ps);
            CHECK(cl > 0 && pl > 0 && (zl == 0 || strcmp(z, c) == 0));
            /* strict base64 is canonical: re-encoding gives the input back */
            size_t rl = zl + 1 + cl + 1 + pl;
            char *raw = malloc(rl), *enc = malloc(4 * ((rl + 2) / 3) + 1);
            memcpy(raw, z, zl);
            raw[zl] = '\0';
            memcpy(raw + zl + 1, c, cl);
            raw[zl + 1 + cl] = '\0';
            memcpy(raw + zl + 1 + cl + 1, p, pl);
            int el = smtp_base64_encode(raw, rl, enc, 4 * ((rl + 2) / 3) + 1);
            CHECK(el >= 0 && (size_t)el == len && memcmp(enc, b64, len) == 0);
            free(raw);
            free(enc);
        } else {
            check_reply(&err);
            for (size_t i = 0; i < zs; i++)
                CHECK(z[i] == 0);
            for (size_t i = 0; i < cs; i++)
                CHECK(c[i] == 0);
            for (size_t i = 0; i < ps; i++)
                CHECK(p[i] == 0);
        }
        free(z);
        free(c);
        free(p);
    }

    size_t osize = len; /* big enough for any decode of len octets */
    char *out = malloc(osize + 1);
    size_t out_len = 12345;
    struct smtp_reply_err err;
    if (smtp_base64_decode_line(b64, len, out, osize + 1, &out_len, &err) == 0) {
        CHECK(out_len <= len && out[out_len] == '\0' && memchr(out, '\0', out_len) == NULL);
        char *enc = malloc(4 * ((out_len + 2) / 3) + 1);
        int el = smtp_base64_encode(out, out_len, enc, 4 * ((out_len + 2) / 3) + 1);
        if (len == 1 && b64[0] == '=')
            CHECK(el == 0);
        else
            CHECK(el >= 0 && (size_t)el == len && memcmp(enc, b64, len) == 0);
        free(enc);
    } else {
        check_reply(&err);
        CHECK(out_len == 0);
        for (size_t i = 0; i <= osize; i++)
            CHECK(out[i] == 0);
    }
    free(out);
}

static void fuzz_xtext(const char *in, size_t len)
{
    char *out = malloc(len + 1);
    int r = smtp_xtext_decode(in, len, out, len + 1);
    CHECK(r >= -1); /* len + 1 always fits: -2 impossible */
    if (r >= 0) {
        CHECK((size_t)r <= len);
        /* re-encode (every octet as xchar or +HH) and decode again */
        char *enc = malloc(3 * (size_t)r + 1), *back = malloc((size_t)r + 1);
        size_t n = 0;
        for (int i = 0; i < r; i++) {
            unsigned char c = (unsigned char)out[i];
            if (c >= 33 && c <= 126 && c != '+' && c != '=')
                enc[n++] = (char)c;
            else
                n += (size_t)sprintf(enc + n, "+%02X", c);
        }
        CHECK(smtp_xtext_decode(enc, n, back, (size_t)r + 1) == r);
        CHECK(memcmp(back, out, (size_t)r) == 0);
        free(enc);
        free(back);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384)
        return 0;
    unsigned ctl = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    fuzz_command(text, len, ctl & 3u);
    if (len > 0 && len <= 1024)
        fuzz_address(text, len);
    fuzz_sasl(text, len, ctl);
    fuzz_xtext(text, len);
    return 0;
}
