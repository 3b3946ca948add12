/* mx_auth - login verification through LDAP (search the account, bind as
 * its DN). */
#include "mx_auth.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx_alloc.h"
#include "mx_base64.h"
#include "mx_ldap.h"
#include "mx_limits.h"
#include "mx_log.h"
#include "mx_net.h"

struct mx_auth_check {
    const struct mx_auth_config *cfg;
    struct mx_ldap_op *op;
    const char *sid;
    char *login;
    char *password;
    size_t password_len;
    /* mxAccountStatus of the entry found ("active", "disabled", ...; NULL
     * when absent), kept until the bind proves the password. */
    char *account_status;
    struct mx_identity identity;
    mx_auth_done_fn *done;
    void *ctx;
};

const char *mx_auth_result_name(enum mx_auth_result result)
{
    switch (result) {
    case MX_AUTH_OK:
        return "ok";
    case MX_AUTH_INVALID:
        return "invalid";
    case MX_AUTH_TEMPFAIL:
        return "tempfail";
    case MX_AUTH_BLOCKED:
        return "blocked";
    case MX_AUTH_DISABLED:
        return "disabled";
    }
    return "unknown";
}

void mx_identity_clear(struct mx_identity *identity)
{
    for (size_t i = 0; i < identity->n_addresses; i++)
        free(identity->addresses[i]);
    free(identity->addresses);
    free(identity->dn);
    free(identity->mail);
    free(identity->shard);
    memset(identity, 0, sizeof *identity);
}

/* auth_address_equal - local part exact, domain case-insensitive. */
static bool auth_address_equal(const char *a, const char *b)
{
    const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');
    if (at_a == NULL || at_b == NULL)
        return strcmp(a, b) == 0;
    return at_a - a == at_b - b && strncmp(a, b, (size_t)(at_a - a)) == 0 &&
           strcasecmp(at_a, at_b) == 0;
}

bool mx_identity_owns(const struct mx_identity *identity, const char *address)
{
    for (size_t i = 0; i < identity->n_addresses; i++)
        if (auth_address_equal(identity->addresses[i], address))
            return true;
    return false;
}

void mx_auth_account_key(const char *dn, char *buf, size_t size)
{
    if (size == 0)
        return;
    snprintf(buf, size, "dn:%s", dn);
    for (char *p = buf; *p; p++)
        *p = (char)tolower((unsigned char)*p);
}

static void auth_free(struct mx_auth_check *check)
{
    if (check->password) {
        OPENSSL_cleanse(check->password, check->password_len);
        free(check->password);
    }
    free(check->login);
    free(check->account_status);
    mx_identity_clear(&check->identity);
    free(check);
}

/* auth_finish - hand the result (and, for OK only, the identity) to the
 * caller; the check is gone before done runs, so done may start another. */
static void auth_finish(struct mx_auth_check *check, enum mx_auth_result result)
{
    mx_auth_done_fn *done = check->done;
    void *ctx = check->ctx;
    struct mx_identity identity = { 0 };
    if (result == MX_AUTH_OK) {
        identity = check->identity;
        memset(&check->identity, 0, sizeof check->identity);
    }
    auth_free(check);
    done(ctx, result, &identity);
    mx_identity_clear(&identity);
}

static void auth_on_bind(enum mx_ldap_status status, const char *error, void *ctx)
{
    struct mx_auth_check *check = ctx;
    const struct mx_auth_config *cfg = check->cfg;
    check->op = NULL;
    if (status == MX_LDAP_OK) {
        if (check->account_status == NULL || strcmp(check->account_status, "active") != 0) {
            /* Only now, with the password proven, may the answer differ
             * from a wrong password's. */
            mx_log(MX_LOG_NOTICE, "auth.account_inactive", MX_KV("proto", cfg->role),
                   MX_KV("sid", check->sid), MX_KV("user", check->login),
                   MX_KV("dn", check->identity.dn), MX_KV("status", check->account_status));
            auth_finish(check, MX_AUTH_DISABLED);
        } else {
            auth_finish(check, MX_AUTH_OK);
        }
    } else if (status == MX_LDAP_INVALID_CREDENTIALS) {
        char key[1024];
        mx_auth_account_key(check->identity.dn, key, sizeof key);
        mx_limits_auth_failure(cfg->limits, key, mx_now_ms(), cfg->window_ms);
        auth_finish(check, MX_AUTH_INVALID);
    } else {
        mx_log(MX_LOG_WARNING, "auth.directory_unavailable", MX_KV("proto", cfg->role),
               MX_KV("sid", check->sid), MX_KV("user", check->login),
               MX_KV("status", mx_ldap_status_name(status)), MX_KV("error", error));
        auth_finish(check, MX_AUTH_TEMPFAIL);
    }
}

/* auth_add_addresses - append every value of attr (may be NULL). */
static void auth_add_addresses(struct mx_identity *id, const struct mx_ldap_attr *attr)
{
    for (size_t i = 0; attr && i < attr->n_values; i++) {
        id->addresses = mx_reallocarray(id->addresses, id->n_addresses + 1, sizeof *id->addresses);
        id->addresses[id->n_addresses++] = mx_strdup(attr->values[i].data);
    }
}

static void auth_on_account(const struct mx_ldap_result *result, void *ctx)
{
    struct mx_auth_check *check = ctx;
    const struct mx_auth_config *cfg = check->cfg;
    check->op = NULL;
    if (result->status == MX_LDAP_NOT_FOUND) {
        auth_finish(check, MX_AUTH_INVALID);
        return;
    }
    if (result->status != MX_LDAP_FOUND) {
        mx_log(MX_LOG_WARNING, "auth.directory_unavailable", MX_KV("proto", cfg->role),
               MX_KV("sid", check->sid), MX_KV("user", check->login),
               MX_KV("status", mx_ldap_status_name(result->status)),
               MX_KV("error", result->error));
        auth_finish(check, MX_AUTH_TEMPFAIL);
        return;
    }
    if (result->n_entries != 1) {
        mx_log(MX_LOG_ERR, "auth.ambiguous_login", MX_KV("proto", cfg->role),
               MX_KV("sid", check->sid), MX_KV("user", check->login),
               MX_KVU("entries", result->n_entries));
        auth_finish(check, MX_AUTH_INVALID);
        return;
    }
    const struct mx_ldap_entry *entry = &result->entries[0];
    const char *status = mx_ldap_entry_get_first(entry, "mxAccountStatus");
    const char *mail = mx_ldap_entry_get_first(entry, "mail");
    if (mail == NULL) {
        /* The schema requires mail; an entry without it is broken data and
         * has no identity to log in as. Answered like a wrong password. */
        mx_log(MX_LOG_ERR, "auth.account_without_mail", MX_KV("proto", cfg->role),
               MX_KV("sid", check->sid), MX_KV("user", check->login), MX_KV("dn", entry->dn));
        auth_finish(check, MX_AUTH_INVALID);
        return;
    }
    char key[1024];
    mx_auth_account_key(entry->dn, key, sizeof key);
    if (mx_limits_auth_blocked(cfg->limits, key, mx_now_ms(), cfg->window_ms,
                               cfg->max_failures_per_account)) {
        mx_log(MX_LOG_WARNING, "auth.account_blocked", MX_KV("proto", cfg->role),
               MX_KV("sid", check->sid), MX_KV("user", check->login), MX_KV("dn", entry->dn));
        auth_finish(check, MX_AUTH_BLOCKED);
        return;
    }
    check->account_status = status ? mx_strdup(status) : NULL;
    struct mx_identity *id = &check->identity;
    id->dn = mx_strdup(entry->dn);
    id->mail = mx_strdup(mail);
    const char *shard = mx_ldap_entry_get_first(entry, "mxStoreShard");
    id->shard = shard && shard[0] ? mx_strdup(shard) : NULL;
    const char *quota_bytes = mx_ldap_entry_get_first(entry, "mxQuotaBytes");
    const char *quota_count = mx_ldap_entry_get_first(entry, "mxQuotaMessages");
    id->quota_bytes = quota_bytes ? strtoull(quota_bytes, NULL, 10) : 0;
    id->quota_count = quota_count ? strtoull(quota_count, NULL, 10) : 0;
    auth_add_addresses(id, mx_ldap_entry_get(entry, "mail"));
    auth_add_addresses(id, mx_ldap_entry_get(entry, "mxAlternateAddress"));
    /* The bind runs whatever the account status: a disabled account must
     * look exactly like an active one to someone without its password. */
    check->op = mx_ldap_bind_check(cfg->ldap, id->dn, check->password, check->password_len,
                                   auth_on_bind, check);
}

/* auth_filter_expand - the login filter template with the login for every
 * %s (escaped by mx_ldap). NULL when the template is broken. */
static char *auth_filter_expand(const struct mx_auth_config *cfg, const char *login)
{
    const char *values[8];
    size_t n = 0;
    for (const char *p = cfg->login_filter; (p = strstr(p, "%s")) != NULL && n < 8; p += 2)
        values[n++] = login;
    const char *error = NULL;
    char *filter = mx_ldap_filter_expand(cfg->login_filter, values, n, &error);
    if (filter == NULL)
        mx_log(MX_LOG_ERR, "ldap.bad_filter_template", MX_KV("proto", cfg->role),
               MX_KV("template", cfg->login_filter), MX_KV("error", error));
    return filter;
}

struct mx_auth_check *mx_auth_start(const struct mx_auth_config *cfg, const char *sid,
                                    const char *login, const char *password, size_t password_len,
                                    mx_auth_done_fn *done, void *ctx)
{
    struct mx_auth_check *check = mx_calloc(1, sizeof *check);
    check->cfg = cfg;
    check->sid = sid;
    check->login = mx_strdup(login);
    check->password = mx_memdup(password, password_len);
    check->password_len = password_len;
    check->done = done;
    check->ctx = ctx;
    char *filter = auth_filter_expand(cfg, login);
    static const char *const attrs[] = { "mail", "mxAlternateAddress", "mxAccountStatus",
                                         "mxStoreShard", "mxQuotaBytes", "mxQuotaMessages",
                                         NULL };
    /* Not cached: a password change or a disabled account must take effect
     * at the next login, and logins are few compared with recipients. A
     * broken template searches for an object class nobody has, so every
     * login fails (logged above) instead of matching too much. */
    struct mx_ldap_query query = {
        .scope = MX_LDAP_SCOPE_SUB, .filter = filter ? filter : "(objectClass=mxInvalidFilter)",
        .attrs = attrs, .size_limit = 2, .use_cache = false,
    };
    check->op = mx_ldap_search(cfg->ldap, &query, auth_on_account, check);
    free(filter);
    return check;
}

void mx_auth_cancel(struct mx_auth_check **checkp)
{
    struct mx_auth_check *check = *checkp;
    if (check == NULL)
        return;
    mx_ldap_op_cancel(&check->op);
    auth_free(check);
    *checkp = NULL;
}

/* ---- SASL PLAIN (IMAP AUTHENTICATE, POP3 AUTH) -------------------------- */

/* b64_decode - strict RFC 4648 base64 (padding required, no blanks) into
 * out (at most out_size bytes). -1 on bad input or overflow. */
static int b64_decode(const char *in, size_t len, uint8_t *out, size_t out_size, size_t *out_len_r)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        size_t pad = 0;
        for (size_t j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)in[i + j];
            if (c == '=' && i + 4 == len && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            if (pad > 0 || (v[j] = mx_base64_value(c)) < 0)
                return -1; /* data after '=' or not in the alphabet */
        }
        uint32_t group =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        uint8_t bytes[3] = { (uint8_t)(group >> 16), (uint8_t)(group >> 8), (uint8_t)group };
        size_t take = 3 - pad;
        if (o + take > out_size)
            return -1;
        memcpy(out + o, bytes, take);
        o += take;
    }
    *out_len_r = o;
    return 0;
}

int mx_sasl_plain_decode(const char *b64, size_t len, char authcid[MX_SASL_CREDENTIAL_MAX + 1],
                           char passwd[MX_SASL_CREDENTIAL_MAX + 1], size_t *passwd_len_r,
                           const char **error_r)
{
    /* authzid NUL authcid NUL passwd: three fields of at most
     * MX_SASL_CREDENTIAL_MAX plus two separators. */
    uint8_t raw[3 * MX_SASL_CREDENTIAL_MAX + 2];
    size_t raw_len = 0;
    int rc = -1;
    authcid[0] = passwd[0] = '\0';
    if (len == 1 && b64[0] == '=') {
        *error_r = "empty PLAIN response";
        goto out;
    }
    if (b64_decode(b64, len, raw, sizeof raw, &raw_len) < 0) {
        *error_r = "malformed base64 in SASL response";
        goto out;
    }
    const uint8_t *nul1 = memchr(raw, '\0', raw_len);
    const uint8_t *nul2 = nul1 ? memchr(nul1 + 1, '\0', raw_len - (size_t)(nul1 + 1 - raw)) : NULL;
    if (nul2 == NULL || memchr(nul2 + 1, '\0', raw_len - (size_t)(nul2 + 1 - raw)) != NULL) {
        *error_r = "malformed PLAIN response";
        goto out;
    }
    size_t zlen = (size_t)(nul1 - raw);
    size_t clen = (size_t)(nul2 - nul1 - 1);
    size_t plen = raw_len - (size_t)(nul2 + 1 - raw);
    if (clen == 0 || plen == 0) {
        *error_r = "empty user name or password";
        goto out;
    }
    if (clen > MX_SASL_CREDENTIAL_MAX || plen > MX_SASL_CREDENTIAL_MAX || zlen > MX_SASL_CREDENTIAL_MAX) {
        *error_r = "credentials too long";
        goto out;
    }
    if (zlen > 0 && (zlen != clen || memcmp(raw, nul1 + 1, zlen) != 0)) {
        /* RFC 4616 2: acting for another identity needs a proxy right
         * nobody has here; never log in as authcid and ignore it. */
        *error_r = "authorization identity not permitted";
        goto out;
    }
    memcpy(authcid, nul1 + 1, clen);
    authcid[clen] = '\0';
    memcpy(passwd, nul2 + 1, plen);
    passwd[plen] = '\0';
    *passwd_len_r = plen;
    rc = 0;
out:
    OPENSSL_cleanse(raw, sizeof raw);
    if (rc < 0) {
        OPENSSL_cleanse(authcid, MX_SASL_CREDENTIAL_MAX + 1);
        OPENSSL_cleanse(passwd, MX_SASL_CREDENTIAL_MAX + 1);
    }
    return rc;
}
