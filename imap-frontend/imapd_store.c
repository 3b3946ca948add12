/* imapd_store - requests to the store shards, and the change events that
 * drive IDLE and untagged updates. */
#include "imapd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx_alloc.h"

struct imapd_shard *imapd_shard_for(struct imapd_server *server, const char *shard_name)
{
    const char *name = shard_name && *shard_name ? shard_name : server->default_shard;
    for (size_t i = 0; i < server->n_shards; i++)
        if (strcmp(server->shards[i].name, name) == 0)
            return &server->shards[i];
    mx_log(MX_LOG_ERR, "imapd.unknown_shard", MX_KV("shard", name),
           MX_KV("hint", "add it to imap.shards"));
    return NULL;
}

static void store_on_reply(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct imapd_store_call *call = ctx;
    call->pending = false;
    if (result == MX_BUS_CANCELLED)
        return; /* the client is being freed at exit: sessions go too */
    if (result == MX_BUS_TIMEOUT) {
        mx_log(MX_LOG_WARNING, "imapd.store_timeout", MX_KV("shard", call->shard->name));
        call->done(call->ctx, MX_STATUS_TEMPFAIL, "the mailbox server did not answer", NULL);
        return;
    }
    uint32_t status = MX_STATUS_TEMPFAIL;
    if (mx_frame_get_u32(reply, F_STATUS, &status) < 0) {
        mx_log(MX_LOG_ERR, "imapd.store_reply_without_status", MX_KV("shard", call->shard->name));
        status = MX_STATUS_TEMPFAIL;
    }
    char *text = NULL;
    (void)mx_frame_get_str(reply, F_TEXT, &text);
    call->done(call->ctx, (enum mx_status)status, text ? text : "", reply);
    free(text);
}

int imapd_store_request(struct imapd_shard *shard, struct mx_frame *frame,
                        struct imapd_store_call *call, imapd_store_done_fn *done, void *ctx)
{
    const char *error;
    call->shard = shard;
    call->done = done;
    call->ctx = ctx;
    if (mx_client_request(shard->client, frame, store_on_reply, call, &call->request_id, &error) <
        0) {
        mx_log(MX_LOG_ERR, "imapd.store_request_failed", MX_KV("shard", shard->name),
               MX_KV("error", error));
        return -1;
    }
    call->pending = true;
    return 0;
}

void imapd_store_cancel(struct imapd_store_call *call)
{
    if (call->pending) {
        (void)mx_client_cancel(call->shard->client, call->request_id);
        call->pending = false;
    }
}

void imapd_store_frame(struct mx_frame *frame, enum mx_msg_type type, const char *user,
                       const char *mailbox)
{
    mx_frame_init(frame, type, 0, NULL);
    mx_frame_put_str(frame, F_USER, user);
    if (mailbox)
        mx_frame_put_str(frame, F_MAILBOX, mailbox);
}

/* ---- watches: user -> sessions, in a chained hash table ---------------- */

struct imapd_watch {
    struct imapd_watch *next;
    size_t bucket;
    imapd_watch_fn *fn;
    void *ctx;
    char user[];
};

#define WATCH_BUCKETS 4096

static size_t watch_hash(const char *user)
{
    size_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        h = h * 33 + (size_t)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    return h % WATCH_BUCKETS;
}

struct imapd_watch *imapd_watch_add(struct imapd_server *server, const char *user,
                                    imapd_watch_fn *fn, void *ctx)
{
    if (server->watch_buckets == NULL) {
        server->watch_buckets = mx_calloc(WATCH_BUCKETS, sizeof *server->watch_buckets);
        server->n_watch_buckets = WATCH_BUCKETS;
    }
    size_t len = strlen(user);
    struct imapd_watch *w = mx_calloc(1, sizeof *w + len + 1);
    memcpy(w->user, user, len + 1);
    w->fn = fn;
    w->ctx = ctx;
    w->bucket = watch_hash(user);
    w->next = server->watch_buckets[w->bucket];
    server->watch_buckets[w->bucket] = w;
    return w;
}

void imapd_watch_remove(struct imapd_server *server, struct imapd_watch **watchp)
{
    struct imapd_watch *w = *watchp;
    if (w == NULL)
        return;
    *watchp = NULL;
    for (struct imapd_watch **p = &server->watch_buckets[w->bucket]; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    free(w);
}

void imapd_watch_free_all(struct imapd_server *server)
{
    for (size_t i = 0; i < server->n_watch_buckets; i++)
        while (server->watch_buckets[i]) {
            struct imapd_watch *w = server->watch_buckets[i];
            server->watch_buckets[i] = w->next;
            free(w);
        }
    free(server->watch_buckets);
    server->watch_buckets = NULL;
    server->n_watch_buckets = 0;
}

void imapd_on_store_event(void *ctx, const char *topic, const struct mx_frame_view *frame)
{
    struct imapd_server *server = ctx;
    if (frame->type != MSG_STORE_ANY_MAILBOX_CHANGED || server->watch_buckets == NULL)
        return;
    char *user = NULL, *mailbox = NULL;
    uint64_t modseq = 0;
    uint32_t change = 0;
    if (mx_frame_get_str(frame, F_USER, &user) < 0) {
        mx_log(MX_LOG_WARNING, "imapd.store_event_malformed", MX_KV("topic", topic));
        return;
    }
    (void)mx_frame_get_str(frame, F_MAILBOX, &mailbox);
    (void)mx_frame_get_u64(frame, F_MODSEQ, &modseq);
    (void)mx_frame_get_u32(frame, F_CHANGE, &change);
    /* Callbacks may remove their own watch (never another's): keep next. */
    struct imapd_watch *w = server->watch_buckets[watch_hash(user)];
    while (w) {
        struct imapd_watch *next = w->next;
        if (strcasecmp(w->user, user) == 0)
            w->fn(w->ctx, mailbox ? mailbox : "", modseq, change);
        w = next;
    }
    free(user);
    free(mailbox);
}
