/* inbound_rcpt - is this RCPT TO one we accept? Asked of LDAP, never
 * blocking: a recipient check is one or two cached, asynchronous searches.
 *
 *   relay hack (%, !, quoted @, source route)        550 5.7.1
 *   domain not ours (mta, or msa unauthenticated)    554 5.7.1 Relay access denied
 *   domain not ours, msa authenticated               accepted (outbound mail)
 *   no account, alias or list has the address        550 5.1.1 User unknown
 *   account disabled                                 550 5.2.1 Mailbox temporarily disabled
 *   account deleted (pending purge)                  550 5.1.1 User unknown
 *   directory unreachable / slow / ambiguous answer  451 4.3.0 (our failure: never 5xx)
 *   account over its quota (mxQuotaBytes)           552 5.2.2 Mailbox full
 * The quota is the store's answer (MSG_ANY_STORE_QUOTA_GET to the account's
 * shard, inbound.shards); when the store does not answer in quota_timeout,
 * the recipient is accepted and delivery decides. */
#include "inbound_rcpt.h"

#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

struct inbound_rcpt_check {
    struct inbound_server *server;
    struct mx_ldap_op *op;
    struct mx_client *quota_client; /* set while a quota question is out */
    uint64_t quota_request;
    uint64_t quota_limit;
    uint64_t declared_size;
    struct mx_address rcpt;
    bool relay_allowed;
    inbound_rcpt_done_fn *done;
    void *ctx;
    const char *sid; /* session id, for logs */
};

static const struct smtp_reply_err rcpt_tempfail = {
    451, "4.3.0", "Directory temporarily unavailable, try again later" };

static void rcpt_finish(struct inbound_rcpt_check *check, const struct smtp_reply_err *reply,
                        const char *detail)
{
    inbound_rcpt_done_fn *done = check->done;
    void *ctx = check->ctx;
    free(check);
    done(ctx, reply, detail);
}

/* rcpt_filter - expand an operator's filter template with value for every
 * %s (escaped by mx_ldap). NULL when the template is broken. */
char *inbound_filter_expand(const char *template, const char *value)
{
    const char *values[8];
    size_t n = 0;
    for (const char *p = template; (p = strstr(p, "%s")) != NULL && n < 8; p += 2)
        values[n++] = value;
    const char *error = NULL;
    char *filter = mx_ldap_filter_expand(template, values, n, &error);
    if (filter == NULL)
        mx_log(MX_LOG_ERR, "ldap.bad_filter_template", MX_KV("template", template),
               MX_KV("error", error));
    return filter;
}

static void rcpt_on_quota(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct inbound_rcpt_check *check = ctx;
    static const struct smtp_reply_err full = { 552, "5.2.2", "Mailbox full" };
    check->quota_client = NULL;
    uint32_t status = MX_STATUS_TEMPFAIL;
    uint64_t used = 0;
    if (result == MX_BUS_REPLY && mx_frame_get_u32(reply, F_STATUS, &status) == 0 &&
        status == MX_STATUS_OK && mx_frame_get_u64(reply, F_QUOTA_USED, &used) == 0 &&
        (used >= check->quota_limit || check->declared_size > check->quota_limit - used)) {
        rcpt_finish(check, &full, "mailbox full");
        return;
    }
    if (result != MX_BUS_REPLY || status != MX_STATUS_OK)
        mx_log(MX_LOG_INFO, "rcpt.quota_unknown", MX_KV("sid", check->sid),
               MX_KV("rcpt", check->rcpt.addr), MX_KV("effect", "accepted; delivery decides"));
    rcpt_finish(check, NULL, "account");
}

/* rcpt_ask_quota - ask the account's shard how full the mailbox is;
 * false when no shard is configured for it (then it is not asked). */
static bool rcpt_ask_quota(struct inbound_rcpt_check *check, const char *mail, const char *shard,
                           uint64_t limit)
{
    struct inbound_server *server = check->server;
    struct mx_daemon_shard *found = mx_daemon_shard_find(
        server->shards, server->n_shards, shard ? shard : server->default_shard);
    if (found == NULL)
        return false;
    struct mx_client *client = found->client;
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_STORE_QUOTA_GET, 0, NULL);
    mx_frame_put_str(&frame, F_USER, mail);
    const char *error = NULL;
    check->quota_limit = limit;
    bool sent = mx_client_request(client, &frame, rcpt_on_quota, check, &check->quota_request,
                                  &error) == 0;
    mx_frame_free(&frame);
    if (sent)
        check->quota_client = client;
    return sent;
}

static void rcpt_on_address(const struct mx_ldap_result *result, void *ctx)
{
    struct inbound_rcpt_check *check = ctx;
    check->op = NULL;
    static const struct smtp_reply_err unknown = { 550, "5.1.1", "User unknown" };
    static const struct smtp_reply_err disabled = { 550, "5.2.1", "Mailbox temporarily disabled" };
    static const struct smtp_reply_err deleted = { 550, "5.1.1", "User unknown (account removed)" };

    switch (result->status) {
    case MX_LDAP_NOT_FOUND:
        rcpt_finish(check, &unknown, "not in directory");
        return;
    case MX_LDAP_FOUND:
        break;
    default:
        mx_log(MX_LOG_WARNING, "rcpt.directory_unavailable", MX_KV("sid", check->sid),
               MX_KV("rcpt", check->rcpt.addr), MX_KV("status", mx_ldap_status_name(result->status)),
               MX_KV("error", result->error));
        rcpt_finish(check, &rcpt_tempfail, "directory unavailable");
        return;
    }
    if (result->n_entries > 1) {
        /* Two entries claim one address: a directory data error. Refusing
         * would bounce good mail; accepting might misdeliver it. */
        mx_log(MX_LOG_ERR, "rcpt.ambiguous_address", MX_KV("sid", check->sid),
               MX_KV("rcpt", check->rcpt.addr), MX_KV("dn1", result->entries[0].dn),
               MX_KV("dn2", result->entries[1].dn));
        rcpt_finish(check, &rcpt_tempfail, "ambiguous address in directory");
        return;
    }
    const char *status = mx_ldap_entry_get_first(&result->entries[0], "mxAccountStatus");
    if (status && strcmp(status, "disabled") == 0) {
        rcpt_finish(check, &disabled, "account disabled");
        return;
    }
    if (status && strcmp(status, "deleted") == 0) {
        rcpt_finish(check, &deleted, "account deleted");
        return;
    }
    if (status && strcmp(status, "active") != 0) {
        mx_log(MX_LOG_ERR, "rcpt.unknown_account_status", MX_KV("sid", check->sid),
               MX_KV("rcpt", check->rcpt.addr), MX_KV("dn", result->entries[0].dn),
               MX_KV("status", status));
        rcpt_finish(check, &rcpt_tempfail, "unknown account status");
        return;
    }
    /* An active account with a quota: is the mailbox full? */
    const char *limit = mx_ldap_entry_get_first(&result->entries[0], "mxQuotaBytes");
    const char *mail = mx_ldap_entry_get_first(&result->entries[0], "mail");
    if (status && limit && mail && strtoull(limit, NULL, 10) > 0 &&
        rcpt_ask_quota(check, mail, mx_ldap_entry_get_first(&result->entries[0], "mxStoreShard"),
                       strtoull(limit, NULL, 10)))
        return;
    /* An active account, an alias entry or a list: delivery expands it. */
    rcpt_finish(check, NULL, status ? "account" : "alias or list");
}

static void rcpt_lookup_address(struct inbound_rcpt_check *check)
{
    char *filter = inbound_filter_expand(check->server->recipient_filter, check->rcpt.addr);
    if (filter == NULL) {
        rcpt_finish(check, &rcpt_tempfail, "bad recipient_filter");
        return;
    }
    static const char *const attrs[] = { "mxAccountStatus", "objectClass", "mail", "mxQuotaBytes",
                                         "mxStoreShard", NULL };
    struct mx_ldap_query query = {
        .scope = MX_LDAP_SCOPE_SUB, .filter = filter, .attrs = attrs, .size_limit = 2,
        .use_cache = true,
    };
    check->op = mx_ldap_search(check->server->ldap, &query, rcpt_on_address, check);
    free(filter);
}

static void rcpt_on_domain(const struct mx_ldap_result *result, void *ctx)
{
    struct inbound_rcpt_check *check = ctx;
    check->op = NULL;
    static const struct smtp_reply_err relay_denied = { 554, "5.7.1", "Relay access denied" };
    if (result->status == MX_LDAP_FOUND) {
        rcpt_lookup_address(check);
        return;
    }
    if (result->status == MX_LDAP_NOT_FOUND) {
        if (check->relay_allowed)
            rcpt_finish(check, NULL, "outbound (authenticated)");
        else
            rcpt_finish(check, &relay_denied, "domain not ours");
        return;
    }
    mx_log(MX_LOG_WARNING, "rcpt.directory_unavailable", MX_KV("sid", check->sid),
           MX_KV("domain", check->rcpt.domain), MX_KV("status", mx_ldap_status_name(result->status)),
           MX_KV("error", result->error));
    rcpt_finish(check, &rcpt_tempfail, "directory unavailable");
}

int inbound_rcpt_check_start(struct inbound_server *server, const struct mx_address *rcpt,
                             bool relay_allowed, uint64_t declared_size, const char *sid,
                             inbound_rcpt_done_fn *done,
                             void *ctx, struct inbound_rcpt_check **check_r,
                             struct smtp_reply_err *reply_r)
{
    static const char *const route_text[] = {
        [MX_ADDRESS_SOURCE_ROUTED] = "Relaying denied: source-routed addresses are not accepted",
        [MX_ADDRESS_QUOTED_AT] = "Relaying denied: '@' inside a quoted local part",
        [MX_ADDRESS_PERCENT_HACK] = "Relaying denied: '%' in the local part",
        [MX_ADDRESS_BANG_PATH] = "Relaying denied: '!' paths are not accepted",
    };
    *check_r = NULL;
    enum mx_address_route route = mx_address_classify(rcpt);
    if (route != MX_ADDRESS_PLAIN) {
        *reply_r = (struct smtp_reply_err){ 550, "5.7.1", route_text[route] };
        return 1;
    }
    if (rcpt->is_postmaster) /* RFC 5321 4.5.1: always accepted */
        return 0;
    if (rcpt->domain_literal && !relay_allowed) {
        *reply_r = (struct smtp_reply_err){ 554, "5.7.1", "Relay access denied" };
        return 1;
    }
    struct inbound_rcpt_check *check = mx_calloc(1, sizeof *check);
    check->server = server;
    check->rcpt = *rcpt;
    check->relay_allowed = relay_allowed;
    check->declared_size = declared_size;
    check->done = done;
    check->ctx = ctx;
    check->sid = sid;
    if (rcpt->domain_literal) { /* authenticated user to an address literal */
        free(check);
        return 0;
    }
    char *filter = inbound_filter_expand(server->domain_filter, rcpt->domain);
    if (filter == NULL) {
        free(check);
        *reply_r = rcpt_tempfail;
        return 1;
    }
    static const char *const attrs[] = { "associatedDomain", NULL };
    struct mx_ldap_query query = {
        .scope = MX_LDAP_SCOPE_SUB, .filter = filter, .attrs = attrs, .size_limit = 1,
        .use_cache = true,
    };
    check->op = mx_ldap_search(server->ldap, &query, rcpt_on_domain, check);
    free(filter);
    *check_r = check;
    return -1;
}

void inbound_rcpt_check_cancel(struct inbound_rcpt_check **checkp)
{
    struct inbound_rcpt_check *check = *checkp;
    if (check == NULL)
        return;
    mx_ldap_op_cancel(&check->op);
    if (check->quota_client)
        mx_client_cancel(check->quota_client, check->quota_request);
    free(check);
    *checkp = NULL;
}
