/* delivery_expand - from envelope recipients to mailboxes and external
 * addresses, asked of LDAP step by step on the event loop.
 *
 * A work list of items (an address, a list member's DN, a dynamic list's
 * filter) is consumed one LDAP answer at a time:
 *   account (mxAccount)  active: a local target (unless it forwards without
 *                        keeping a copy) + its forwards; disabled/deleted:
 *                        refused (recorded for a bounce)
 *   alias (mxAlias)      each mxAliasTarget
 *   list (mxMailingList) member DNs, mxListMemberAddress, mxListFilter
 *                        (the dynamic all-users list); internal-only lists
 *                        refuse senders that did not authenticate
 *   nothing found        an envelope recipient: refused as unknown (inbound
 *                        checked it moments ago: the account was removed);
 *                        an address reached through an alias or a forward:
 *                        external, for the outbound queue
 * Every address is expanded once (a visited set), and depth is bounded, so
 * alias loops end. LDAP unreachable anywhere makes the whole message
 * tempfail: inbound keeps it and retries. */
#include "delivery.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx_alloc.h"

enum expand_kind { EXPAND_ADDRESS, EXPAND_DN, EXPAND_FILTER };

struct expand_item {
    struct expand_item *next;
    enum expand_kind kind;
    char *value;
    char *via;      /* the envelope recipient this came from */
    unsigned depth;
};

struct delivery_expand {
    struct delivery_server *server;
    char *sid;
    bool authenticated;
    struct expand_item *head, **tail;
    struct expand_item *current;
    char **visited;
    size_t n_visited;
    struct mx_ldap_op *op;
    struct delivery_expansion result;
    delivery_expand_done_fn *done;
    void *ctx;
    struct event *kick;
};

static const char *const expand_attrs[] = {
    "objectClass", "mail", "mxAccountStatus", "mxForwardTo", "mxForwardKeepCopy", "mxAliasTarget",
    "member", "mxListMemberAddress", "mxListInternalOnly", "mxListFilter", "mxQuotaBytes",
    "mxQuotaMessages", "mxStoreShard", NULL,
};

static void expand_step(struct delivery_expand *x);

static void expand_push(struct delivery_expand *x, enum expand_kind kind, const char *value,
                        const char *via, unsigned depth)
{
    struct expand_item *item = mx_calloc(1, sizeof *item);
    item->kind = kind;
    item->value = mx_strdup(value);
    item->via = mx_strdup(via);
    item->depth = depth;
    *x->tail = item;
    x->tail = &item->next;
}

static void expand_item_free(struct expand_item *item)
{
    if (item == NULL)
        return;
    free(item->value);
    free(item->via);
    free(item);
}

/* expand_seen - true if key was expanded before; records it otherwise. */
static bool expand_seen(struct delivery_expand *x, const char *key)
{
    for (size_t i = 0; i < x->n_visited; i++)
        if (strcasecmp(x->visited[i], key) == 0)
            return true;
    x->visited = mx_reallocarray(x->visited, x->n_visited + 1, sizeof *x->visited);
    x->visited[x->n_visited++] = mx_strdup(key);
    return false;
}

static void expand_refuse(struct delivery_expand *x, const char *recipient, const char *reason)
{
    struct delivery_expansion *r = &x->result;
    for (size_t i = 0; i < r->n_refusals; i++)
        if (strcasecmp(r->refusals[i].recipient, recipient) == 0)
            return;
    r->refusals = mx_reallocarray(r->refusals, r->n_refusals + 1, sizeof *r->refusals);
    r->refusals[r->n_refusals].recipient = mx_strdup(recipient);
    r->refusals[r->n_refusals].reason = reason;
    r->n_refusals++;
    mx_log(MX_LOG_NOTICE, "delivery.recipient_refused", MX_KV("id", x->sid),
           MX_KV("rcpt", recipient), MX_KV("reason", reason));
}

static void expand_tempfail(struct delivery_expand *x, const char *reason)
{
    x->result.tempfail = true;
    x->result.tempfail_reason = reason;
}

static void expand_add_target(struct delivery_expand *x, const char *address, bool local,
                              const char *shard, uint64_t quota_bytes, uint64_t quota_count,
                              const char *via)
{
    struct delivery_expansion *r = &x->result;
    for (size_t i = 0; i < r->n_targets; i++)
        if (strcasecmp(r->targets[i].address, address) == 0)
            return;
    if (r->n_targets >= x->server->max_recipients) {
        expand_refuse(x, via, "too many recipients after expansion");
        return;
    }
    r->targets = mx_reallocarray(r->targets, r->n_targets + 1, sizeof *r->targets);
    struct delivery_target *t = &r->targets[r->n_targets++];
    memset(t, 0, sizeof *t);
    t->address = mx_strdup(address);
    t->local = local;
    t->shard = mx_strdup(shard ? shard : x->server->default_shard);
    t->quota_bytes = quota_bytes;
    t->quota_count = quota_count;
    t->via = mx_strdup(via);
}

static bool entry_has_class(const struct mx_ldap_entry *entry, const char *name)
{
    const struct mx_ldap_attr *oc = mx_ldap_entry_get(entry, "objectClass");
    for (size_t i = 0; oc && i < oc->n_values; i++)
        if (strcasecmp(oc->values[i].data, name) == 0)
            return true;
    return false;
}

static bool entry_true(const struct mx_ldap_entry *entry, const char *name)
{
    const char *value = mx_ldap_entry_get_first(entry, name);
    return value && strcasecmp(value, "TRUE") == 0;
}

static uint64_t entry_u64(const struct mx_ldap_entry *entry, const char *name)
{
    const char *value = mx_ldap_entry_get_first(entry, name);
    return value ? strtoull(value, NULL, 10) : 0;
}

/* expand_entry - what one directory entry contributes. */
static void expand_entry(struct delivery_expand *x, const struct mx_ldap_entry *entry,
                         const struct expand_item *item)
{
    const char *mail = mx_ldap_entry_get_first(entry, "mail");
    unsigned depth = item->depth + 1;
    if (entry_has_class(entry, "mxAccount")) {
        const char *status = mx_ldap_entry_get_first(entry, "mxAccountStatus");
        if (status == NULL || strcmp(status, "active") != 0 || mail == NULL) {
            /* From a list or the all-users filter an inactive member is
             * simply skipped; named directly it is refused. */
            if (item->kind == EXPAND_ADDRESS)
                expand_refuse(x, item->value,
                              status && strcmp(status, "disabled") == 0 ? "disabled" : "deleted");
            return;
        }
        const struct mx_ldap_attr *forwards = mx_ldap_entry_get(entry, "mxForwardTo");
        bool keep = entry_true(entry, "mxForwardKeepCopy");
        if (forwards == NULL || forwards->n_values == 0 || keep)
            expand_add_target(x, mail, true, mx_ldap_entry_get_first(entry, "mxStoreShard"),
                              entry_u64(entry, "mxQuotaBytes"), entry_u64(entry, "mxQuotaMessages"),
                              item->via);
        for (size_t i = 0; forwards && i < forwards->n_values; i++)
            expand_push(x, EXPAND_ADDRESS, forwards->values[i].data, item->via, depth);
        return;
    }
    if (entry_has_class(entry, "mxMailingList")) {
        if (entry_true(entry, "mxListInternalOnly") && !x->authenticated) {
            expand_refuse(x, item->value, "internal-only list: sender not authenticated");
            return;
        }
        const struct mx_ldap_attr *members = mx_ldap_entry_get(entry, "member");
        for (size_t i = 0; members && i < members->n_values; i++)
            if (members->values[i].len > 0) /* groupOfNames' required placeholder "" */
                expand_push(x, EXPAND_DN, members->values[i].data, item->via, depth);
        const struct mx_ldap_attr *extra = mx_ldap_entry_get(entry, "mxListMemberAddress");
        for (size_t i = 0; extra && i < extra->n_values; i++)
            expand_push(x, EXPAND_ADDRESS, extra->values[i].data, item->via, depth);
        const char *filter = mx_ldap_entry_get_first(entry, "mxListFilter");
        if (filter)
            expand_push(x, EXPAND_FILTER, filter, item->via, depth);
        return;
    }
    if (entry_has_class(entry, "mxAlias")) {
        const struct mx_ldap_attr *targets = mx_ldap_entry_get(entry, "mxAliasTarget");
        for (size_t i = 0; targets && i < targets->n_values; i++)
            expand_push(x, EXPAND_ADDRESS, targets->values[i].data, item->via, depth);
        return;
    }
    mx_log(MX_LOG_WARNING, "delivery.unknown_entry_kind", MX_KV("id", x->sid), MX_KV("dn", entry->dn));
    if (item->kind == EXPAND_ADDRESS)
        expand_refuse(x, item->value, "address has no mail role in the directory");
}

static void expand_on_result(const struct mx_ldap_result *result, void *ctx)
{
    struct delivery_expand *x = ctx;
    struct expand_item *item = x->current;
    x->op = NULL;
    x->current = NULL;
    switch (result->status) {
    case MX_LDAP_FOUND:
        if (item->kind == EXPAND_ADDRESS && result->n_entries > 1) {
            mx_log(MX_LOG_ERR, "delivery.ambiguous_address", MX_KV("id", x->sid),
                   MX_KV("address", item->value), MX_KV("dn1", result->entries[0].dn),
                   MX_KV("dn2", result->entries[1].dn));
            expand_tempfail(x, "ambiguous address in directory");
            break;
        }
        for (size_t i = 0; i < result->n_entries; i++)
            expand_entry(x, &result->entries[i], item);
        break;
    case MX_LDAP_NOT_FOUND:
        if (item->kind == EXPAND_ADDRESS && item->depth == 0)
            expand_refuse(x, item->value, "unknown");
        else if (item->kind == EXPAND_ADDRESS)
            expand_add_target(x, item->value, false, NULL, 0, 0, item->via);
        else
            mx_log(MX_LOG_WARNING, "delivery.list_member_missing", MX_KV("id", x->sid),
                   MX_KV("member", item->value));
        break;
    default:
        mx_log(MX_LOG_WARNING, "delivery.directory_unavailable", MX_KV("id", x->sid),
               MX_KV("item", item->value), MX_KV("status", mx_ldap_status_name(result->status)),
               MX_KV("error", result->error));
        expand_tempfail(x, "directory unavailable");
        break;
    }
    expand_item_free(item);
    expand_step(x);
}

static void expand_finish(struct delivery_expand *x)
{
    delivery_expand_done_fn *done = x->done;
    void *ctx = x->ctx;
    struct delivery_expansion result = x->result;
    memset(&x->result, 0, sizeof x->result);
    delivery_expand_cancel(&x);
    struct delivery_expansion *heap = mx_malloc(sizeof *heap);
    *heap = result;
    done(ctx, heap);
}

/* expand_step - start the next lookup, or finish. */
static void expand_step(struct delivery_expand *x)
{
    while (x->head && !x->result.tempfail) {
        struct expand_item *item = x->head;
        x->head = item->next;
        if (x->head == NULL)
            x->tail = &x->head;
        if (item->depth > x->server->max_expansion_depth) {
            expand_refuse(x, item->via, "expansion too deep (alias or list loop)");
            expand_item_free(item);
            continue;
        }
        char key[1100];
        snprintf(key, sizeof key, "%d:%s", (int)item->kind, item->value);
        if (expand_seen(x, key)) {
            expand_item_free(item);
            continue;
        }
        struct mx_ldap_query query = { .attrs = expand_attrs, .use_cache = true };
        char *filter = NULL;
        switch (item->kind) {
        case EXPAND_ADDRESS: {
            const char *values[8];
            size_t n = 0;
            for (const char *p = x->server->recipient_filter; (p = strstr(p, "%s")) && n < 8; p += 2)
                values[n++] = item->value;
            const char *error = NULL;
            filter = mx_ldap_filter_expand(x->server->recipient_filter, values, n, &error);
            query.scope = MX_LDAP_SCOPE_SUB;
            query.size_limit = 2;
            break;
        }
        case EXPAND_DN:
            query.base = item->value;
            query.scope = MX_LDAP_SCOPE_BASE;
            filter = mx_strdup("(objectClass=*)");
            break;
        case EXPAND_FILTER:
            /* The filter comes from the list's own entry, written by an
             * administrator: used as is, bounded by the size limit. */
            query.scope = MX_LDAP_SCOPE_SUB;
            query.size_limit = x->server->max_recipients;
            filter = mx_strdup(item->value);
            break;
        }
        if (filter == NULL) {
            expand_tempfail(x, "bad recipient_filter");
            expand_item_free(item);
            break;
        }
        query.filter = filter;
        x->current = item;
        x->op = mx_ldap_search(x->server->ldap, &query, expand_on_result, x);
        free(filter);
        return;
    }
    expand_finish(x);
}

static void expand_on_kick(evutil_socket_t fd, short what, void *arg)
{
    expand_step(arg);
}

struct delivery_expand *delivery_expand_start(struct delivery_server *server,
                                              const struct delivery_expand_request *request,
                                              delivery_expand_done_fn *done, void *ctx)
{
    struct delivery_expand *x = mx_calloc(1, sizeof *x);
    x->server = server;
    x->sid = mx_strdup(request->sid);
    x->authenticated = request->auth_user && *request->auth_user;
    x->tail = &x->head;
    x->done = done;
    x->ctx = ctx;
    for (size_t i = 0; i < request->n_recipients; i++) {
        const char *rcpt = request->recipients[i];
        /* "<postmaster>" arrives without a domain (RFC 5321 4.5.1). */
        if (strchr(rcpt, '@') == NULL)
            rcpt = server->postmaster;
        expand_push(x, EXPAND_ADDRESS, rcpt, request->recipients[i], 0);
    }
    /* Start from the loop, never inside the caller (no reentrancy). */
    x->kick = event_new(server->base, -1, 0, expand_on_kick, x);
    event_active(x->kick, EV_TIMEOUT, 0);
    return x;
}

void delivery_expand_cancel(struct delivery_expand **xp)
{
    struct delivery_expand *x = *xp;
    if (x == NULL)
        return;
    mx_ldap_op_cancel(&x->op);
    expand_item_free(x->current);
    while (x->head) {
        struct expand_item *next = x->head->next;
        expand_item_free(x->head);
        x->head = next;
    }
    for (size_t i = 0; i < x->n_visited; i++)
        free(x->visited[i]);
    free(x->visited);
    delivery_expansion_free_contents(&x->result);
    event_free(x->kick);
    free(x->sid);
    free(x);
    *xp = NULL;
}

void delivery_expansion_free_contents(struct delivery_expansion *r)
{
    for (size_t i = 0; i < r->n_targets; i++) {
        free(r->targets[i].address);
        free(r->targets[i].shard);
        free(r->targets[i].via);
    }
    free(r->targets);
    for (size_t i = 0; i < r->n_refusals; i++)
        free(r->refusals[i].recipient);
    free(r->refusals);
    memset(r, 0, sizeof *r);
}

void delivery_expansion_free(struct delivery_expansion *r)
{
    if (r == NULL)
        return;
    delivery_expansion_free_contents(r);
    free(r);
}
