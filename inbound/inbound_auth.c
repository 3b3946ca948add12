/* inbound_auth - AUTH PLAIN/LOGIN verification through LDAP. */
#include "inbound_auth.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "inbound_rcpt.h"
#include "mx_alloc.h"

struct inbound_auth_check {
    struct inbound_server *server;
    struct mx_ldap_op *op;
    const char *sid;
    char *login;
    char *password;
    size_t password_len;
    struct inbound_identity identity;
    inbound_auth_done_fn *done;
    void *ctx;
};

void inbound_identity_clear(struct inbound_identity *identity)
{
    for (size_t i = 0; i < identity->n_addresses; i++)
        free(identity->addresses[i]);
    free(identity->addresses);
    free(identity->dn);
    free(identity->mail);
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

bool inbound_identity_owns(const struct inbound_identity *identity, const char *address)
{
    for (size_t i = 0; i < identity->n_addresses; i++)
        if (auth_address_equal(identity->addresses[i], address))
            return true;
    return false;
}

static void auth_free(struct inbound_auth_check *check)
{
    if (check->password) {
        OPENSSL_cleanse(check->password, check->password_len);
        free(check->password);
    }
    free(check->login);
    inbound_identity_clear(&check->identity);
    free(check);
}

static void auth_finish(struct inbound_auth_check *check, enum inbound_auth_result result)
{
    inbound_auth_done_fn *done = check->done;
    void *ctx = check->ctx;
    struct inbound_identity identity = check->identity;
    memset(&check->identity, 0, sizeof check->identity);
    auth_free(check);
    done(ctx, result, &identity);
    inbound_identity_clear(&identity);
}

/* auth_account_key - the failure-count key of an account: its DN, lower
 * case (DNs compare case-insensitively here; logins have many spellings). */
static void auth_account_key(const char *dn, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "dn:%s", dn);
    for (size_t i = 0; i < n && i < size; i++)
        buf[i] = (char)tolower((unsigned char)buf[i]);
}

static void auth_on_bind(enum mx_ldap_status status, const char *error, void *ctx)
{
    struct inbound_auth_check *check = ctx;
    check->op = NULL;
    if (status == MX_LDAP_OK) {
        auth_finish(check, INBOUND_AUTH_OK);
    } else if (status == MX_LDAP_INVALID_CREDENTIALS) {
        char key[1024];
        auth_account_key(check->identity.dn, key, sizeof key);
        inbound_limits_auth_failure(check->server->limits, key, inbound_now_ms(),
                                    check->server->auth_window_ms);
        auth_finish(check, INBOUND_AUTH_INVALID);
    } else {
        mx_log(MX_LOG_WARNING, "auth.directory_unavailable", MX_KV("sid", check->sid),
               MX_KV("user", check->login), MX_KV("status", mx_ldap_status_name(status)),
               MX_KV("error", error));
        auth_finish(check, INBOUND_AUTH_TEMPFAIL);
    }
}

static void auth_on_account(const struct mx_ldap_result *result, void *ctx)
{
    struct inbound_auth_check *check = ctx;
    check->op = NULL;
    if (result->status == MX_LDAP_NOT_FOUND) {
        auth_finish(check, INBOUND_AUTH_INVALID);
        return;
    }
    if (result->status != MX_LDAP_FOUND) {
        mx_log(MX_LOG_WARNING, "auth.directory_unavailable", MX_KV("sid", check->sid),
               MX_KV("user", check->login), MX_KV("status", mx_ldap_status_name(result->status)),
               MX_KV("error", result->error));
        auth_finish(check, INBOUND_AUTH_TEMPFAIL);
        return;
    }
    if (result->n_entries != 1) {
        mx_log(MX_LOG_ERR, "auth.ambiguous_login", MX_KV("sid", check->sid),
               MX_KV("user", check->login), MX_KVU("entries", result->n_entries));
        auth_finish(check, INBOUND_AUTH_INVALID);
        return;
    }
    const struct mx_ldap_entry *entry = &result->entries[0];
    const char *status = mx_ldap_entry_get_first(entry, "mxAccountStatus");
    const char *mail = mx_ldap_entry_get_first(entry, "mail");
    if (status == NULL || strcmp(status, "active") != 0 || mail == NULL) {
        /* Same answer as a wrong password: do not tell a guesser which
         * accounts exist or are disabled. The log says why. */
        mx_log(MX_LOG_NOTICE, "auth.account_inactive", MX_KV("sid", check->sid),
               MX_KV("user", check->login), MX_KV("status", status));
        auth_finish(check, INBOUND_AUTH_INVALID);
        return;
    }
    char key[1024];
    auth_account_key(entry->dn, key, sizeof key);
    if (inbound_limits_auth_blocked(check->server->limits, key, inbound_now_ms(),
                                    check->server->auth_window_ms,
                                    check->server->auth_max_failures_per_account)) {
        mx_log(MX_LOG_WARNING, "auth.account_blocked", MX_KV("sid", check->sid),
               MX_KV("user", check->login), MX_KV("dn", entry->dn));
        auth_finish(check, INBOUND_AUTH_BLOCKED);
        return;
    }
    struct inbound_identity *id = &check->identity;
    id->dn = mx_strdup(entry->dn);
    id->mail = mx_strdup(mail);
    const struct mx_ldap_attr *attrs[2] = { mx_ldap_entry_get(entry, "mail"),
                                            mx_ldap_entry_get(entry, "mxAlternateAddress") };
    for (size_t a = 0; a < 2; a++) {
        for (size_t i = 0; attrs[a] && i < attrs[a]->n_values; i++) {
            id->addresses = mx_reallocarray(id->addresses, id->n_addresses + 1, sizeof *id->addresses);
            id->addresses[id->n_addresses++] = mx_strdup(attrs[a]->values[i].data);
        }
    }
    check->op = mx_ldap_bind_check(check->server->ldap, id->dn, check->password,
                                   check->password_len, auth_on_bind, check);
}

struct inbound_auth_check *inbound_auth_start(struct inbound_server *server, const char *sid,
                                              const char *login, const char *password,
                                              size_t password_len, inbound_auth_done_fn *done,
                                              void *ctx)
{
    struct inbound_auth_check *check = mx_calloc(1, sizeof *check);
    check->server = server;
    check->sid = sid;
    check->login = mx_strdup(login);
    check->password = mx_memdup(password, password_len);
    check->password_len = password_len;
    check->done = done;
    check->ctx = ctx;
    char *filter = inbound_filter_expand(server->login_filter, login);
    static const char *const attrs[] = { "mail", "mxAlternateAddress", "mxAccountStatus", NULL };
    /* Not cached: a password change or a disabled account must take effect
     * at the next login, and logins are few compared with recipients. */
    struct mx_ldap_query query = {
        .scope = MX_LDAP_SCOPE_SUB, .filter = filter ? filter : "(objectClass=mxInvalidFilter)",
        .attrs = attrs, .size_limit = 2, .use_cache = false,
    };
    check->op = mx_ldap_search(server->ldap, &query, auth_on_account, check);
    free(filter);
    return check;
}

void inbound_auth_cancel(struct inbound_auth_check **checkp)
{
    struct inbound_auth_check *check = *checkp;
    if (check == NULL)
        return;
    mx_ldap_op_cancel(&check->op);
    auth_free(check);
    *checkp = NULL;
}
