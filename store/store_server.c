/* store_server - mx-store's request dispatcher and its writer thread.
 *
 * Reads (STATUS, SELECT, LIST, FETCH, BODY, QUOTA_GET, CHANGES_SINCE) are
 * answered on the event loop from an LMDB read transaction (MVCC: they
 * never wait for the writer). Every state change becomes a job for the ONE
 * writer thread; jobs queued while it is busy form the next batch, which
 * is one LMDB write transaction: N concurrent appends cost their file
 * fsyncs, one directory fsync per touched folder and one index commit.
 * The reply goes out on the loop after the commit (eventfd wake-up).
 *
 * With HA (store_server_enable_ha, store_replication.h) a store serves
 * clients only as PRIMARY (otherwise STALE_EPOCH, so clients try the next
 * endpoint), and a committed write's reply is held on the loop until the
 * replicas acked its batch (sync mode): the writer thread goes on with the
 * next batch meanwhile. */
#include "store_server.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailbox_name.h"
#include "store_recent.h"
#include "maildirsize.h"
#include "mime_cache.h"
#include "mx_alloc.h"
#include "mx_log.h"
#include "store_replication.h"

struct store_job {
    struct store_job *next;
    uint16_t type;
    struct mx_server_request *req;
    struct mx_msgid msgid;
    char *user, *mailbox, *mailbox_new, *special_use, *keywords, *uidset;
    uint8_t *body;
    size_t body_len;
    uint32_t flags, uidvalidity, flag_mode, subscribe, create, move;
    uint64_t arrival, quota_bytes, quota_count, unchangedsince;
    bool bad; /* a field was malformed: refused without reaching the writer */
    /* results, written by the writer thread */
    struct mx_frame reply;
    enum mx_status status;
    uint32_t change;
    uint32_t change_new; /* COPY/MOVE: change of mailbox_new */
    uint64_t modseq;
    uint64_t seq; /* last oplog seq of its committed batch; 0 = wrote nothing */
};

struct store_server {
    struct event_base *base;
    struct store *st;
    struct mx_bus *bus;
    struct mx_server *server;
    struct mx_pub *pub;
    unsigned max_batch;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    struct store_job *queue, **queue_tail, *done, **done_tail;
    int wakeup_fd;
    struct event *wakeup_ev;
    /* HA: NULL = standalone primary */
    struct store_repl *repl;
    atomic_bool writable; /* the writer runs batches only while primary */
    struct store_job *waiting, **waiting_tail; /* committed, replies held */
    struct store_recent *recent; /* \Recent claims, in memory (store_recent.h) */
};

static void job_free(struct store_job *j)
{
    mx_server_request_drop(&j->req);
    free(j->user);
    free(j->mailbox);
    free(j->mailbox_new);
    free(j->special_use);
    free(j->keywords);
    free(j->uidset);
    free(j->body);
    mx_frame_free(&j->reply);
    free(j);
}

static void put_flags(struct mx_frame *f, uint32_t flags, const char *keywords)
{
    static const char *const names[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft" };
    for (unsigned i = 0; i < 5; i++)
        if (flags & (1u << i))
            mx_frame_put_str(f, F_FLAG, names[i]);
    char *copy = mx_strdup(keywords ? keywords : "");
    for (char *save = NULL, *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
        mx_frame_put_str(f, F_FLAG, t);
    free(copy);
}

static void ack_frame(struct mx_frame *f, enum mx_status status, const char *text)
{
    mx_frame_init(f, MSG_ANY_ACK, 0, NULL);
    mx_frame_put_u32(f, F_STATUS, status);
    if (text)
        mx_frame_put_str(f, F_TEXT, text);
}

/* ---- writer thread ------------------------------------------------------ */

/* matching_uids - live UIDs of a mailbox in the job's set (batch txn). */
struct match_ctx {
    struct store_uidset *set;
    uint32_t *uids;
    size_t n;
};
static int match_fn(void *ctx, const struct store_message *m)
{
    struct match_ctx *c = ctx;
    if (!m->expunged && (c->set == NULL || store_uidset_has(c->set, m->uid))) {
        c->uids = mx_reallocarray(c->uids, c->n + 1, sizeof *c->uids);
        c->uids[c->n++] = m->uid;
    }
    return 0;
}

/* job_uids - resolve the job's UID set; -1 with the reply set on error. */
static int job_uids(struct store *st, struct store_batch *b, struct store_job *j, bool required,
                    struct match_ctx *mc, struct store_mailbox *mb)
{
    memset(mc, 0, sizeof *mc);
    char *name = NULL;
    const char *err;
    if (mailbox_name_normalize(j->mailbox, strlen(j->mailbox), &name, &err) < 0) {
        j->status = MX_STATUS_PERMFAIL;
        return -1;
    }
    int got = store_mailbox_get(st, store_batch_txn(b), j->user, name, mb);
    free(name);
    if (got != 0) {
        j->status = got < 0 ? MX_STATUS_TEMPFAIL : MX_STATUS_NOT_FOUND;
        return -1;
    }
    struct store_uidset set = { 0 };
    if (j->uidset && store_uidset_parse(j->uidset, mb->uidnext > 1 ? mb->uidnext - 1 : 1, &set) < 0) {
        j->status = MX_STATUS_PERMFAIL;
        return -1;
    }
    if (j->uidset == NULL && required) {
        j->status = MX_STATUS_PERMFAIL;
        return -1;
    }
    mc->set = j->uidset ? &set : NULL;
    int rc = store_message_foreach(st, store_batch_txn(b), mb->id, match_fn, mc);
    store_uidset_free(&set);
    mc->set = NULL;
    if (rc < 0) {
        free(mc->uids);
        j->status = MX_STATUS_TEMPFAIL;
        return -1;
    }
    return 0;
}

static void run_job(struct store *st, struct store_batch *b, struct store_job *j)
{
    struct store_result res;
    memset(&res, 0, sizeof res);
    j->status = MX_STATUS_TEMPFAIL;
    switch (j->type) {
    case MSG_ANY_STORE_APPEND: {
        struct store_append_req req = {
            .user = j->user, .mailbox = j->mailbox, .body = j->body, .body_len = j->body_len,
            .flags = j->flags, .keywords = j->keywords, .internaldate = j->arrival,
            .msgid = &j->msgid, .quota_bytes = j->quota_bytes, .quota_count = j->quota_count,
            .create = j->create != 0,
        };
        (void)store_append(b, &req, &res);
        j->status = res.status;
        mx_frame_init(&j->reply, MSG_STORE_ANY_APPEND_RESULT, 0, &j->msgid);
        mx_frame_put_u32(&j->reply, F_STATUS, res.status);
        if (res.text)
            mx_frame_put_str(&j->reply, F_TEXT, res.text);
        if (res.status == MX_STATUS_OK || res.status == MX_STATUS_DUPLICATE) {
            mx_frame_put_u32(&j->reply, F_UIDVALIDITY, res.uidvalidity);
            mx_frame_put_u32(&j->reply, F_UID, res.uid);
            mx_frame_put_u64(&j->reply, F_MODSEQ, res.modseq);
        }
        if (res.status == MX_STATUS_OK && (j->quota_bytes || j->quota_count)) {
            /* delivery's quota warnings read these */
            mx_frame_put_u64(&j->reply, F_QUOTA_USED, res.quota_used);
            mx_frame_put_u64(&j->reply, F_QUOTA_BYTES, res.quota_bytes);
        }
        j->change = res.status == MX_STATUS_OK ? MX_CHANGE_NEW_MAIL : 0;
        j->modseq = res.modseq;
        return;
    }
    case MSG_ANY_STORE_MAILBOX_CREATE:
        (void)store_mailbox_create(b, j->user, j->mailbox, j->special_use, &res);
        j->change = MX_CHANGE_MAILBOX_LIST;
        break;
    case MSG_ANY_STORE_MAILBOX_DELETE:
        (void)store_mailbox_delete(b, j->user, j->mailbox, &res);
        j->change = MX_CHANGE_MAILBOX_LIST;
        break;
    case MSG_ANY_STORE_MAILBOX_RENAME:
        if (j->mailbox_new == NULL) {
            res.status = MX_STATUS_PERMFAIL;
            res.text = "F_MAILBOX_NEW missing";
            break;
        }
        (void)store_mailbox_rename(b, j->user, j->mailbox, j->mailbox_new, &res);
        j->change = MX_CHANGE_MAILBOX_LIST;
        break;
    case MSG_ANY_STORE_MAILBOX_SUBSCRIBE:
        (void)store_mailbox_subscribe(b, j->user, j->mailbox, j->subscribe != 0, &res);
        j->change = MX_CHANGE_MAILBOX_LIST;
        break;
    case MSG_ANY_STORE_FLAGS_STORE: {
        struct match_ctx mc;
        struct store_mailbox mb;
        if (job_uids(st, b, j, true, &mc, &mb) < 0)
            break;
        uint32_t *modified = NULL;
        size_t n_modified = 0;
        (void)store_flags_store(b, j->user, j->mailbox, j->uidvalidity, mc.uids, mc.n,
                                (enum store_flag_mode)j->flag_mode, j->flags, j->keywords,
                                j->unchangedsince, &modified, &n_modified, &res);
        j->status = res.status;
        mx_frame_init(&j->reply, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
        mx_frame_put_u32(&j->reply, F_STATUS, res.status);
        if (res.text)
            mx_frame_put_str(&j->reply, F_TEXT, res.text);
        if (res.status == MX_STATUS_OK) {
            for (size_t i = 0; i < mc.n; i++) {
                struct store_message m;
                if (store_message_get(st, store_batch_txn(b), mb.id, mc.uids[i], &m) != 0 || m.expunged)
                    continue;
                mx_frame_put_u32(&j->reply, F_UID, m.uid);
                put_flags(&j->reply, m.flags, m.keywords);
                mx_frame_put_u64(&j->reply, F_MODSEQ, m.modseq);
            }
            char *mod = store_uidset_format(modified, n_modified);
            mx_frame_put_str(&j->reply, F_MODIFIED_SET, mod);
            free(mod);
            mx_frame_put_u64(&j->reply, F_HIGHESTMODSEQ, res.modseq);
        }
        free(modified);
        free(mc.uids);
        j->change = MX_CHANGE_FLAGS;
        j->modseq = res.modseq;
        return;
    }
    case MSG_ANY_STORE_MESSAGE_EXPUNGE: {
        struct match_ctx mc;
        struct store_mailbox mb;
        if (job_uids(st, b, j, false, &mc, &mb) < 0)
            break;
        uint32_t *gone = NULL;
        size_t n_gone = 0;
        (void)store_expunge(b, j->user, j->mailbox, j->uidvalidity, mc.uids, mc.n, &gone, &n_gone, &res);
        j->status = res.status;
        mx_frame_init(&j->reply, MSG_STORE_ANY_UIDS_RESULT, 0, NULL);
        mx_frame_put_u32(&j->reply, F_STATUS, res.status);
        if (res.text)
            mx_frame_put_str(&j->reply, F_TEXT, res.text);
        if (res.status == MX_STATUS_OK) {
            char *text = store_uidset_format(gone, n_gone);
            mx_frame_put_u32(&j->reply, F_UIDVALIDITY, res.uidvalidity);
            mx_frame_put_str(&j->reply, F_UID_SET, text);
            mx_frame_put_u64(&j->reply, F_HIGHESTMODSEQ, res.modseq);
            free(text);
        }
        free(gone);
        free(mc.uids);
        j->change = n_gone ? MX_CHANGE_EXPUNGE : 0;
        j->modseq = res.modseq;
        return;
    }
    case MSG_ANY_STORE_MESSAGE_COPY: {
        struct match_ctx mc;
        struct store_mailbox mb;
        if (j->mailbox_new == NULL) {
            res.status = MX_STATUS_PERMFAIL;
            res.text = "F_MAILBOX_NEW missing";
            break;
        }
        if (job_uids(st, b, j, true, &mc, &mb) < 0)
            break;
        uint32_t *src = NULL, *dst = NULL;
        size_t n = 0;
        (void)store_copy(b, j->user, j->mailbox, j->uidvalidity, mc.uids, mc.n, j->mailbox_new,
                         j->move != 0, &src, &dst, &n, &res);
        j->status = res.status;
        mx_frame_init(&j->reply, MSG_STORE_ANY_UIDS_RESULT, 0, NULL);
        mx_frame_put_u32(&j->reply, F_STATUS, res.status);
        if (res.text)
            mx_frame_put_str(&j->reply, F_TEXT, res.text);
        if (res.status == MX_STATUS_OK) {
            char *a = store_uidset_format(src, n), *d = store_uidset_format(dst, n);
            mx_frame_put_u32(&j->reply, F_UIDVALIDITY, res.uidvalidity);
            mx_frame_put_str(&j->reply, F_UID_SET, a);
            mx_frame_put_str(&j->reply, F_UID_SET_NEW, d);
            mx_frame_put_u64(&j->reply, F_HIGHESTMODSEQ, res.modseq);
            free(a);
            free(d);
        }
        j->change = n && j->move ? MX_CHANGE_EXPUNGE : 0;
        j->change_new = n ? MX_CHANGE_NEW_MAIL : 0;
        j->modseq = res.modseq;
        free(src);
        free(dst);
        free(mc.uids);
        return;
    }
    default:
        res.status = MX_STATUS_PERMFAIL;
        res.text = "not a state change";
        break;
    }
    if (j->reply.data == NULL) {
        j->status = res.status;
        ack_frame(&j->reply, res.status ? res.status : j->status, res.text);
    }
    j->modseq = res.modseq;
}

static void *writer_main(void *arg)
{
    struct store_server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->queue == NULL && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->queue == NULL && s->stop)
            break;
        /* take up to max_batch jobs: everything that queued meanwhile */
        struct store_job *batch = s->queue, *last = batch;
        unsigned n = 1;
        while (last->next && n < s->max_batch) {
            last = last->next;
            n++;
        }
        s->queue = last->next;
        if (s->queue == NULL)
            s->queue_tail = &s->queue;
        last->next = NULL;
        pthread_mutex_unlock(&s->lock);

        struct store_batch *b = NULL;
        char *error = NULL;
        uint64_t seq = 0;
        if (!atomic_load(&s->writable)) {
            /* demoted while these queued: nothing of them may enter the
             * log, which a new primary's log would then contradict */
            for (struct store_job *j = batch; j; j = j->next) {
                j->status = MX_STATUS_STALE_EPOCH;
                ack_frame(&j->reply, MX_STATUS_STALE_EPOCH, "not the primary");
            }
            goto done;
        }
        int ok = store_batch_begin(s->st, &b, &error) == 0;
        for (struct store_job *j = batch; ok && j; j = j->next)
            run_job(s->st, b, j);
        if (ok)
            seq = store_batch_last_seq(b);
        if (ok && store_batch_commit(&b, &error) < 0)
            ok = 0;
        for (struct store_job *j = batch; ok && j; j = j->next)
            j->seq = seq;
        if (!ok) {
            mx_log(MX_LOG_ERR, "store.batch_failed", MX_KV("error", error), MX_KVU("jobs", n));
            for (struct store_job *j = batch; j; j = j->next) {
                mx_frame_free(&j->reply);
                j->status = MX_STATUS_TEMPFAIL;
                j->change = 0;
                ack_frame(&j->reply, MX_STATUS_TEMPFAIL, "index commit failed");
            }
        }
        free(error);
    done:
        pthread_mutex_lock(&s->lock);
        *s->done_tail = batch;
        s->done_tail = &last->next;
        pthread_mutex_unlock(&s->lock);
        uint64_t one = 1;
        ssize_t w = write(s->wakeup_fd, &one, sizeof one);
        (void)w;
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* refuse_job - a committed write that may not be acknowledged: a retry
 * dedups (APPEND by message id) or redoes it. */
static void refuse_job(struct store_job *j, enum mx_status status, const char *text)
{
    mx_frame_free(&j->reply);
    j->status = status;
    ack_frame(&j->reply, status, text);
}

/* reply_job - send a committed job's reply (and its change events). */
static void reply_job(struct store_server *s, struct store_job *j)
{
    const char *error = NULL;
    if (j->seq && !store_repl_primary(s->repl)) {
        /* fenced or demoted before the replicas confirmed: the write
         * may not survive a failover */
        refuse_job(j, MX_STATUS_STALE_EPOCH, "not the primary any more");
    }
    if (mx_server_reply(&j->req, &j->reply, &error) < 0)
        mx_log(MX_LOG_WARNING, "store.reply_failed", MX_KV("error", error), MX_KV("user", j->user));
    for (int k = 0; k < 2; k++) {
        uint32_t change = k ? j->change_new : j->change;
        const char *mailbox = k ? j->mailbox_new : j->mailbox;
        if (!change || j->status != MX_STATUS_OK || s->pub == NULL || mailbox == NULL ||
            strlen(j->user) > MX_BUS_TOPIC_MAX)
            continue;
        struct mx_frame ev;
        mx_frame_init(&ev, MSG_STORE_ANY_MAILBOX_CHANGED, 0, NULL);
        mx_frame_put_str(&ev, F_USER, j->user);
        mx_frame_put_str(&ev, F_MAILBOX, mailbox);
        mx_frame_put_u64(&ev, F_MODSEQ, j->modseq);
        mx_frame_put_u32(&ev, F_CHANGE, change);
        (void)mx_pub_send(s->pub, j->user, &ev, &error);
        mx_frame_free(&ev);
    }
    job_free(j);
}

/* release_waiting - reply to held jobs the replicas have confirmed, refuse
 * those a replica of their epoch will never confirm (TEMPFAIL), or refuse
 * them all once the store is not primary (STALE_EPOCH). */
static void release_waiting(struct store_server *s)
{
    bool primary = store_repl_primary(s->repl);
    uint64_t safe = store_repl_safe_seq(s->repl);
    uint64_t unconfirmed = store_repl_unconfirmed_upto(s->repl);
    if (!primary && store_repl_may_hold(s->repl))
        return;
    while (s->waiting &&
           (!primary || s->waiting->seq <= safe || s->waiting->seq <= unconfirmed)) {
        struct store_job *j = s->waiting;
        s->waiting = j->next;
        if (s->waiting == NULL)
            s->waiting_tail = &s->waiting;
        if (primary && j->seq > safe) /* released only by unconfirmed */
            refuse_job(j, MX_STATUS_TEMPFAIL, "the replica did not confirm the write in time");
        reply_job(s, j);
    }
}

static void on_repl_change(void *ctx)
{
    struct store_server *s = ctx;
    atomic_store(&s->writable, store_repl_primary(s->repl));
    release_waiting(s);
}

/* on_wakeup - on the loop: ship committed batches, reply to those that
 * need no replica confirmation. */
static void on_wakeup(evutil_socket_t fd, short what, void *arg)
{
    struct store_server *s = arg;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    (void)what;
    pthread_mutex_lock(&s->lock);
    struct store_job *done = s->done;
    s->done = NULL;
    s->done_tail = &s->done;
    pthread_mutex_unlock(&s->lock);
    uint64_t last = 0;
    for (struct store_job *j = done; j; j = j->next)
        if (j->seq > last)
            last = j->seq;
    if (last)
        store_repl_committed(s->repl, last);
    uint64_t safe = store_repl_safe_seq(s->repl);
    while (done) {
        struct store_job *j = done;
        done = j->next;
        j->next = NULL;
        if (j->seq > safe || s->waiting) {
            /* replies go out in commit order */
            *s->waiting_tail = j;
            s->waiting_tail = &j->next;
        } else {
            reply_job(s, j);
        }
    }
    release_waiting(s);
}

/* ---- request decoding --------------------------------------------------- */

/* get_str - optional string field: NULL if absent; bad if present but
 * unusable. */
static char *get_str(const struct mx_frame_view *f, enum mx_field_tag tag, bool *bad)
{
    const uint8_t *v;
    size_t len;
    if (mx_frame_get_bytes(f, tag, &v, &len) < 0)
        return NULL;
    char *s = NULL;
    /* UID sets grow with a fragmented mailbox: only the frame bounds them */
    size_t max = tag == F_UID_SET ? MX_WIRE_FRAME_MAX : MX_WIRE_STRING_MAX;
    if (mx_frame_get_text(f, tag, max, &s) < 0)
        *bad = true;
    return s;
}

/* collect_flags - every F_FLAG into a bit set + keyword list. */
static int collect_flags(const struct mx_frame_view *f, uint32_t *flags_r, char **keywords_r)
{
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t len;
    char kw[STORE_KEYWORDS_MAX] = "";
    size_t kwlen = 0;
    *flags_r = 0;
    while (mx_frame_next_field(f, &it, &tag, &v, &len)) {
        if (tag != F_FLAG)
            continue;
        char flag[130];
        if (len == 0 || len >= sizeof flag || memchr(v, 0, len))
            return -1;
        memcpy(flag, v, len);
        flag[len] = '\0';
        uint32_t bit;
        if (store_flag_parse(flag, &bit) < 0)
            return -1;
        if (bit) {
            *flags_r |= bit;
        } else {
            if (kwlen + len + 2 > sizeof kw)
                return -1;
            if (kwlen)
                kw[kwlen++] = ' ';
            memcpy(kw + kwlen, flag, len + 1);
            kwlen += len;
        }
    }
    *keywords_r = kwlen ? mx_strdup(kw) : NULL;
    return 0;
}

static struct store_job *job_decode(const struct mx_frame_view *f)
{
    struct store_job *j = mx_calloc(1, sizeof *j);
    j->type = f->type;
    j->msgid = f->message_id;
    j->user = get_str(f, F_USER, &j->bad);
    j->mailbox = get_str(f, F_MAILBOX, &j->bad);
    j->mailbox_new = get_str(f, F_MAILBOX_NEW, &j->bad);
    j->special_use = get_str(f, F_SPECIAL_USE, &j->bad);
    j->uidset = get_str(f, F_UID_SET, &j->bad);
    (void)mx_frame_get_u32(f, F_UIDVALIDITY, &j->uidvalidity);
    (void)mx_frame_get_u32(f, F_FLAG_MODE, &j->flag_mode);
    (void)mx_frame_get_u32(f, F_SUBSCRIBE, &j->subscribe);
    (void)mx_frame_get_u32(f, F_CREATE, &j->create);
    (void)mx_frame_get_u32(f, F_MOVE, &j->move);
    (void)mx_frame_get_u64(f, F_ARRIVAL, &j->arrival);
    (void)mx_frame_get_u64(f, F_QUOTA_BYTES, &j->quota_bytes);
    (void)mx_frame_get_u64(f, F_QUOTA_COUNT, &j->quota_count);
    (void)mx_frame_get_u64(f, F_UNCHANGEDSINCE, &j->unchangedsince);
    if (collect_flags(f, &j->flags, &j->keywords) < 0 || j->flag_mode > 2)
        j->bad = true;
    if (j->user == NULL)
        j->bad = true;
    if (j->mailbox == NULL)
        j->bad = true;
    if (f->type == MSG_ANY_STORE_APPEND) {
        const uint8_t *body;
        if (mx_frame_get_bytes(f, F_BODY, &body, &j->body_len) < 0)
            j->bad = true;
        else
            j->body = mx_memdup(body, j->body_len ? j->body_len : 1);
    }
    return j;
}

static void enqueue(struct store_server *s, struct mx_server_request *req,
                    const struct mx_frame_view *f)
{
    struct store_job *j = job_decode(f);
    if (j->bad) {
        const char *error;
        mx_log(MX_LOG_WARNING, "store.bad_request", MX_KV("type", mx_msg_type_name(f->type)),
               MX_KV("peer", mx_server_request_peer(req)));
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "malformed or missing fields", &error);
        job_free(j);
        return;
    }
    j->req = req;
    pthread_mutex_lock(&s->lock);
    *s->queue_tail = j;
    s->queue_tail = &j->next;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- reads on the loop -------------------------------------------------- */

struct read_req {
    char *user, *name;
    struct store_mailbox mb;
    MDB_txn *txn;
};

/* read_begin - decode user + mailbox and look it up; on failure the
 * request is answered and -1 returned. */
static int read_begin(struct store_server *s, struct mx_server_request **req,
                      const struct mx_frame_view *f, bool need_mailbox, struct read_req *r)
{
    memset(r, 0, sizeof *r);
    const char *error;
    bool bad = false;
    r->user = get_str(f, F_USER, &bad);
    char *raw = get_str(f, F_MAILBOX, &bad);
    if (!bad && r->user && raw && mailbox_name_normalize(raw, strlen(raw), &r->name, &error) < 0)
        bad = true;
    char *udir = NULL;
    if (!bad && r->user && store_user_dir(s->st, r->user, &udir, &error) < 0)
        bad = true;
    free(udir);
    free(raw);
    if (bad || r->user == NULL || (need_mailbox && r->name == NULL)) {
        mx_server_ack(req, MX_STATUS_PERMFAIL, "malformed user or mailbox name", &error);
        return -1;
    }
    int rc = mdb_txn_begin(store_env(s->st), NULL, MDB_RDONLY, &r->txn);
    if (rc != 0) {
        mx_log(MX_LOG_ERR, "store.read_txn_failed", MX_KV("error", mdb_strerror(rc)));
        mx_server_ack(req, MX_STATUS_TEMPFAIL, "index unavailable", &error);
        return -1;
    }
    if (need_mailbox) {
        int got = store_mailbox_get(s->st, r->txn, r->user, r->name, &r->mb);
        if (got != 0) {
            mx_server_ack(req, got < 0 ? MX_STATUS_TEMPFAIL : MX_STATUS_NOT_FOUND,
                          got < 0 ? "index read failed" : "no such mailbox", &error);
            return -1;
        }
        uint32_t uv;
        if (mx_frame_get_u32(f, F_UIDVALIDITY, &uv) == 0 && uv && uv != r->mb.uidvalidity) {
            mx_server_ack(req, MX_STATUS_UIDVALIDITY, "UIDVALIDITY changed", &error);
            return -1;
        }
    }
    return 0;
}

static void read_end(struct read_req *r)
{
    if (r->txn)
        mdb_txn_abort(r->txn);
    free(r->user);
    free(r->name);
}

static void send_reply(struct mx_server_request **req, struct mx_frame *f)
{
    const char *error;
    if (mx_server_reply(req, f, &error) < 0)
        mx_log(MX_LOG_WARNING, "store.reply_failed", MX_KV("error", error));
    mx_frame_free(f);
}

struct select_ctx {
    uint32_t *uids;
    size_t n;
    uint32_t first_unseen;
    char kw[STORE_KEYWORDS_MAX];
};
static int select_fn(void *ctx, const struct store_message *m)
{
    struct select_ctx *c = ctx;
    if (m->expunged)
        return 0;
    c->uids = mx_reallocarray(c->uids, c->n + 1, sizeof *c->uids);
    c->uids[c->n++] = m->uid;
    if (c->first_unseen == 0 && !(m->flags & STORE_FLAG_SEEN))
        c->first_unseen = m->uid;
    /* keywords in use (bounded by the buffer) */
    char copy[STORE_KEYWORDS_MAX];
    snprintf(copy, sizeof copy, "%s", m->keywords);
    for (char *save = NULL, *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        size_t len = strlen(c->kw), tl = strlen(t);
        char probe[STORE_KEYWORDS_MAX + 2];
        snprintf(probe, sizeof probe, " %s ", c->kw);
        char needle[STORE_KEYWORDS_MAX + 2];
        snprintf(needle, sizeof needle, " %s ", t);
        if (strstr(probe, needle) == NULL && len + tl + 2 < sizeof c->kw)
            snprintf(c->kw + len, sizeof c->kw - len, "%s%s", len ? " " : "", t);
    }
    return 0;
}

static void handle_state(struct store_server *s, struct mx_server_request *req,
                         const struct mx_frame_view *f)
{
    struct read_req r;
    if (read_begin(s, &req, f, true, &r) < 0) {
        read_end(&r);
        return;
    }
    struct mx_frame out;
    mx_frame_init(&out, MSG_STORE_ANY_MAILBOX_STATE, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u32(&out, F_MESSAGES, r.mb.messages);
    mx_frame_put_u32(&out, F_UNSEEN, r.mb.unseen);
    mx_frame_put_u32(&out, F_UIDVALIDITY, r.mb.uidvalidity);
    mx_frame_put_u32(&out, F_UIDNEXT, r.mb.uidnext);
    mx_frame_put_u64(&out, F_HIGHESTMODSEQ, r.mb.highestmodseq);
    mx_frame_put_u64(&out, F_SIZE, r.mb.bytes);
    if (f->type == MSG_ANY_STORE_MAILBOX_SELECT) {
        struct select_ctx c;
        memset(&c, 0, sizeof c);
        (void)store_message_foreach(s->st, r.txn, r.mb.id, select_fn, &c);
        put_flags(&out, STORE_FLAG_ALL, c.kw);
        char *set = store_uidset_format(c.uids, c.n);
        mx_frame_put_str(&out, F_UID_SET, set);
        mx_frame_put_u32(&out, F_FIRST_UNSEEN, c.first_unseen);
        free(set);
        free(c.uids);
    }
    read_end(&r);
    send_reply(&req, &out);
}

static int list_orphan_fn(void *ctx, const char *name)
{
    mx_frame_put_str(ctx, F_MAILBOX, name);
    mx_frame_put_u32(ctx, F_MAILBOX_ATTRS, MX_MAILBOX_ATTR_SUBSCRIBED | MX_MAILBOX_ATTR_NONEXISTENT);
    return 0;
}

static void handle_list(struct store_server *s, struct mx_server_request *req,
                        const struct mx_frame_view *f)
{
    struct read_req r;
    if (read_begin(s, &req, f, false, &r) < 0) {
        read_end(&r);
        return;
    }
    struct mx_frame out;
    mx_frame_init(&out, MSG_STORE_ANY_MAILBOX_LIST_RESULT, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    MDB_cursor *c;
    MDB_dbi dbi;
    size_t ul = strlen(r.user);
    if (mdb_cursor_open(r.txn, dbi = store_dbi_mailboxes(s->st), &c) == 0) {
        MDB_val k = { ul + 1, r.user }, v; /* user NUL: the first of this user's keys */
        char **names = NULL;
        char **specials = NULL;
        uint32_t *attrs = NULL;
        size_t n = 0;
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size <= ul + 1 || memcmp(k.mv_data, r.user, ul + 1) != 0)
                break;
            struct store_mailbox mb;
            char *name = mx_strndup((const char *)k.mv_data + ul + 1, k.mv_size - ul - 1);
            if (store_mailbox_get(s->st, r.txn, r.user, name, &mb) != 0) {
                free(name);
                continue;
            }
            names = mx_reallocarray(names, n + 1, sizeof *names);
            specials = mx_reallocarray(specials, n + 1, sizeof *specials);
            attrs = mx_reallocarray(attrs, n + 1, sizeof *attrs);
            names[n] = name;
            specials[n] = mb.special_use[0] ? mx_strdup(mb.special_use) : NULL;
            attrs[n++] = (mb.subscribed ? MX_MAILBOX_ATTR_SUBSCRIBED : 0) |
                         (mb.special_use[0] ? MX_MAILBOX_ATTR_SPECIAL_USE : 0);
        }
        mdb_cursor_close(c);
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < n; j++)
                if (mailbox_name_is_descendant(names[j], names[i]))
                    attrs[i] |= MX_MAILBOX_ATTR_HAS_CHILDREN;
            mx_frame_put_str(&out, F_MAILBOX, names[i]);
            mx_frame_put_u32(&out, F_MAILBOX_ATTRS, attrs[i]);
            if (specials[i])
                mx_frame_put_str(&out, F_SPECIAL_USE, specials[i]);
        }
        for (size_t i = 0; i < n; i++) {
            free(names[i]);
            free(specials[i]);
        }
        free(names);
        free(specials);
        /* subscriptions of names that are no mailbox (deleted, or not
         * created yet): LSUB and LIST (SUBSCRIBED) show them */
        (void)store_subscriptions_orphan(s->st, r.txn, r.user, list_orphan_fn, &out);
        free(attrs);
    }
    read_end(&r);
    send_reply(&req, &out);
}

struct fetch_ctx {
    struct mx_frame *out;
    struct store_uidset *set;
    uint32_t items;
    uint64_t since;     /* CHANGES_SINCE: modseq floor, else 0 */
    uint32_t *vanished;
    size_t n_vanished;
};
/* pop3_uidl - the POP3 unique id of a stored file: a hash of its Maildir
 * base name (before ":2,"). The base name is unique, kept by reindex and
 * by replication (the replica saves under the same name), so a client's
 * UIDL survives both, unlike UIDVALIDITY.UID; it is hashed because RFC
 * 1939 caps a UIDL at 70 characters and base names can be longer. */
#define POP3_UIDL_HEX_BYTES 20
static const char *pop3_uidl(const char *file, char out[POP3_UIDL_HEX_BYTES * 2 + 1])
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)file, strcspn(file, ":"), digest);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < POP3_UIDL_HEX_BYTES; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0xf];
    }
    out[POP3_UIDL_HEX_BYTES * 2] = '\0';
    return out;
}

static int fetch_fn(void *ctx, const struct store_message *m)
{
    struct fetch_ctx *c = ctx;
    if (c->set && !store_uidset_has(c->set, m->uid))
        return 0;
    if (c->since && m->modseq <= c->since)
        return 0;
    if (m->expunged) {
        if (c->since) {
            c->vanished = mx_reallocarray(c->vanished, c->n_vanished + 1, sizeof *c->vanished);
            c->vanished[c->n_vanished++] = m->uid;
        }
        return 0;
    }
    struct mx_frame *o = c->out;
    mx_frame_put_u32(o, F_UID, m->uid);
    if (c->items & MX_FETCH_FLAGS)
        put_flags(o, m->flags, m->keywords);
    if (c->items & MX_FETCH_MODSEQ)
        mx_frame_put_u64(o, F_MODSEQ, m->modseq);
    if (c->items & MX_FETCH_INTERNALDATE)
        mx_frame_put_u64(o, F_ARRIVAL, m->internaldate);
    if (c->items & MX_FETCH_SIZE)
        mx_frame_put_u64(o, F_SIZE, m->size);
    if (c->items & (MX_FETCH_ENVELOPE | MX_FETCH_BODYSTRUCTURE | MX_FETCH_BODY_FORM)) {
        struct mime_cache *mc = NULL;
        const char *error;
        if (m->mime_len && mime_cache_deserialize(m->mime, m->mime_len, &mc, &error) == 0) {
            if (c->items & MX_FETCH_ENVELOPE)
                mx_frame_put_str(o, F_ENVELOPE, mc->envelope);
            if (c->items & MX_FETCH_BODYSTRUCTURE)
                mx_frame_put_str(o, F_BODYSTRUCTURE, mc->bodystructure);
            if (c->items & MX_FETCH_BODY_FORM)
                mx_frame_put_str(o, F_BODY_FORM, mc->body);
            mime_cache_free(&mc);
        }
    }
    if ((c->items & MX_FETCH_MESSAGE_ID) && !mx_msgid_is_zero(&m->msgid)) {
        char text[MX_MSGID_TEXT_LEN + 1];
        mx_frame_put_str(o, F_MESSAGE_ID, mx_msgid_format(&m->msgid, text));
    }
    if (c->items & MX_FETCH_POP3_UIDL) {
        char uidl[POP3_UIDL_HEX_BYTES * 2 + 1];
        mx_frame_put_str(o, F_POP3_UIDL, pop3_uidl(m->file, uidl));
    }
    return 0;
}

static void handle_fetch(struct store_server *s, struct mx_server_request *req,
                         const struct mx_frame_view *f)
{
    struct read_req r;
    if (read_begin(s, &req, f, true, &r) < 0) {
        read_end(&r);
        return;
    }
    const char *error;
    struct store_uidset set = { 0 };
    bool bad = false;
    char *text = get_str(f, F_UID_SET, &bad);
    struct fetch_ctx c = { 0 };
    if (f->type == MSG_ANY_STORE_CHANGES_SINCE) {
        if (mx_frame_get_u64(f, F_MODSEQ, &c.since) < 0)
            bad = true;
        c.items = MX_FETCH_FLAGS | MX_FETCH_MODSEQ;
    } else {
        if (text == NULL || store_uidset_parse(text, r.mb.uidnext > 1 ? r.mb.uidnext - 1 : 1, &set) < 0)
            bad = true;
        if (mx_frame_get_u32(f, F_FETCH_ITEMS, &c.items) < 0 || c.items == 0)
            c.items = MX_FETCH_ALL;
        c.set = &set;
    }
    free(text);
    if (bad) {
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "malformed UID set or modseq", &error);
        read_end(&r);
        return;
    }
    struct mx_frame out;
    mx_frame_init(&out, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    c.out = &out;
    if (store_message_foreach(s->st, r.txn, r.mb.id, fetch_fn, &c) < 0) {
        mx_frame_free(&out);
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "index read failed", &error);
    } else {
        if (f->type == MSG_ANY_STORE_CHANGES_SINCE) {
            char *v = store_uidset_format(c.vanished, c.n_vanished);
            mx_frame_put_str(&out, F_VANISHED_SET, v);
            free(v);
            mx_frame_put_u64(&out, F_HIGHESTMODSEQ, r.mb.highestmodseq);
        }
        send_reply(&req, &out);
    }
    free(c.vanished);
    store_uidset_free(&set);
    read_end(&r);
}

/* open_message - an fd on the message's file (read-only). */
static int open_message(struct store_server *s, const char *user, const char *name,
                        const struct store_message *m, int *fd_r, const char **error_r)
{
    char *dir;
    if (store_user_dir(s->st, user, &dir, error_r) < 0)
        return -1;
    int root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    free(dir);
    if (root < 0) {
        *error_r = "cannot open the user's Maildir";
        return -1;
    }
    struct maildir *md = NULL;
    struct maildir_folder *folder = NULL;
    int rc = maildir_open(root, "", 0, &md, error_r);
    close(root);
    if (rc == 0)
        rc = maildir_folder_open(md, name, &folder, error_r);
    if (rc == 0)
        rc = maildir_message_open(folder, m->subdir, m->file, fd_r, error_r);
    maildir_folder_close(&folder);
    maildir_close(&md);
    return rc;
}

static void handle_body(struct store_server *s, struct mx_server_request *req,
                        const struct mx_frame_view *f)
{
    struct read_req r;
    if (read_begin(s, &req, f, true, &r) < 0) {
        read_end(&r);
        return;
    }
    const char *error;
    uint32_t uid = 0;
    uint64_t off = 0, len = 0;
    bool bad = false;
    char *section = get_str(f, F_SECTION, &bad);
    (void)mx_frame_get_u64(f, F_OFFSET, &off);
    (void)mx_frame_get_u64(f, F_LENGTH, &len);
    struct store_message m;
    int got = bad || mx_frame_get_u32(f, F_UID, &uid) < 0 ? -2
                                                          : store_message_get(s->st, r.txn, r.mb.id, uid, &m);
    struct mime_cache *mc = NULL;
    size_t sec_off = 0, sec_len = 0;
    int fd = -1, sec_rc = 0;
    if (got == -2) {
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "malformed request", &error);
    } else if (got != 0 || m.expunged) {
        mx_server_ack(&req, got < 0 ? MX_STATUS_TEMPFAIL : MX_STATUS_NOT_FOUND, "no such message", &error);
    } else if (mime_cache_deserialize(m.mime, m.mime_len, &mc, &error) < 0) {
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "no MIME cache for the message", &error);
    } else if ((sec_rc = mime_cache_section(mc, section ? section : "", &sec_off, &sec_len)) < 0) {
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "malformed section", &error);
    } else if (sec_rc == 1) {
        /* well-formed but no such part: IMAP answers an empty string */
        struct mx_frame out;
        mx_frame_init(&out, MSG_STORE_ANY_BODY_RESULT, 0, NULL);
        mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
        mx_frame_put_bytes(&out, F_BODY, "", 0);
        send_reply(&req, &out);
    } else if (open_message(s, r.user, r.name, &m, &fd, &error) < 0) {
        mx_log(MX_LOG_ERR, "store.file_unreadable", MX_KV("user", r.user), MX_KV("file", m.file),
               MX_KV("error", error));
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "message file unreadable", &error);
    } else {
        /* partial: <off.len> within the section */
        if (off > sec_len)
            off = sec_len;
        size_t want = sec_len - (size_t)off;
        if (len && len < want)
            want = (size_t)len;
        if (want > MX_WIRE_FRAME_MAX - 4096)
            want = MX_WIRE_FRAME_MAX - 4096;
        uint8_t *buf = mx_malloc(want + 1);
        size_t have = 0;
        while (have < want) {
            ssize_t n = pread(fd, buf + have, want - have, (off_t)(sec_off + off + have));
            if (n <= 0)
                break;
            have += (size_t)n;
        }
        struct mx_frame out;
        mx_frame_init(&out, MSG_STORE_ANY_BODY_RESULT, 0, NULL);
        mx_frame_put_u32(&out, F_STATUS, have == want ? MX_STATUS_OK : MX_STATUS_TEMPFAIL);
        mx_frame_put_bytes(&out, F_BODY, buf, have);
        free(buf);
        send_reply(&req, &out);
    }
    if (fd >= 0)
        close(fd);
    mime_cache_free(&mc);
    free(section);
    read_end(&r);
}

struct quota_sum {
    uint64_t bytes, count;
};

static void handle_quota(struct store_server *s, struct mx_server_request *req,
                         const struct mx_frame_view *f)
{
    struct read_req r;
    if (read_begin(s, &req, f, false, &r) < 0) {
        read_end(&r);
        return;
    }
    struct quota_sum sum = { 0, 0 };
    MDB_cursor *c;
    MDB_dbi dbi;
    size_t ul = strlen(r.user);
    if (mdb_cursor_open(r.txn, dbi = store_dbi_mailboxes(s->st), &c) == 0) {
        MDB_val k = { ul + 1, r.user }, v;
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size <= ul + 1 || memcmp(k.mv_data, r.user, ul + 1) != 0)
                break;
            char *name = mx_strndup((const char *)k.mv_data + ul + 1, k.mv_size - ul - 1);
            struct store_mailbox mb;
            if (store_mailbox_get(s->st, r.txn, r.user, name, &mb) == 0) {
                sum.bytes += mb.bytes;
                sum.count += mb.messages;
            }
            free(name);
        }
        mdb_cursor_close(c);
    }
    /* limits: what the last append wrote into maildirsize */
    struct maildirsize_quota q = { 0, 0 };
    char *dir;
    const char *error;
    if (store_user_dir(s->st, r.user, &dir, &error) == 0) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct maildir *md = NULL;
        if (fd >= 0 && maildir_open(fd, dir, 0, &md, &error) == 0) {
            struct maildirsize_state qs;
            if (maildirsize_read(md, &qs, &error) == 0 && qs.exists && qs.quota_valid)
                q = qs.quota;
            maildir_close(&md);
        }
        if (fd >= 0)
            close(fd);
        free(dir);
    }
    struct mx_frame out;
    mx_frame_init(&out, MSG_STORE_ANY_QUOTA_RESULT, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u64(&out, F_QUOTA_USED, sum.bytes);
    mx_frame_put_u64(&out, F_QUOTA_BYTES, q.bytes);
    mx_frame_put_u32(&out, F_MESSAGES, (uint32_t)sum.count);
    mx_frame_put_u64(&out, F_QUOTA_COUNT, q.count);
    read_end(&r);
    send_reply(&req, &out);
}

struct recent_count {
    uint32_t from;
    uint32_t n;
};

static int recent_count_fn(void *ctx, const struct store_message *m)
{
    struct recent_count *c = ctx;
    if (!m->expunged && m->uid >= c->from)
        c->n++;
    return 0;
}

static void handle_recent(struct store_server *s, struct mx_server_request *req,
                          const struct mx_frame_view *f)
{
    struct read_req r;
    if (read_begin(s, &req, f, true, &r) < 0) {
        read_end(&r);
        return;
    }
    uint32_t upto = 0, claim = 0;
    (void)mx_frame_get_u32(f, F_UIDNEXT, &upto);
    (void)mx_frame_get_u32(f, F_CLAIM, &claim);
    if (upto == 0 || upto > r.mb.uidnext)
        upto = r.mb.uidnext; /* nobody can claim what does not exist yet */
    if (s->recent == NULL)
        s->recent = store_recent_new();
    struct recent_count c = {
        store_recent_claim(s->recent, r.mb.id, r.mb.uidvalidity, upto, claim != 0), 0
    };
    /* live messages the asker sees as recent: cheap next to the SELECT
     * that comes with it, which walks the mailbox too */
    if (c.from < upto)
        (void)store_message_foreach(s->st, r.txn, r.mb.id, recent_count_fn, &c);
    struct mx_frame out;
    mx_frame_init(&out, MSG_STORE_ANY_RECENT_RESULT, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u32(&out, F_UID, c.from);
    mx_frame_put_u32(&out, F_MESSAGES, c.n);
    read_end(&r);
    send_reply(&req, &out);
}

/* store_dispatch - the one place requests arrive: decode, act, reply;
 * anything else is refused. */
static void store_dispatch(void *ctx, struct mx_server_request *req, const struct mx_frame_view *f)
{
    struct store_server *s = ctx;
    const char *error;
    if (!store_repl_primary(s->repl) && f->type >= MSG_ANY_STORE_APPEND &&
        f->type <= MSG_ANY_STORE_RECENT_CLAIM) {
        /* clients always talk to the primary: what they read is what is
         * acknowledged */
        mx_server_ack(&req, MX_STATUS_STALE_EPOCH, "not the primary", &error);
        return;
    }
    switch (f->type) {
    case MSG_ANY_STORE_APPEND:
    case MSG_ANY_STORE_MAILBOX_CREATE:
    case MSG_ANY_STORE_MAILBOX_DELETE:
    case MSG_ANY_STORE_MAILBOX_RENAME:
    case MSG_ANY_STORE_MAILBOX_SUBSCRIBE:
    case MSG_ANY_STORE_FLAGS_STORE:
    case MSG_ANY_STORE_MESSAGE_EXPUNGE:
    case MSG_ANY_STORE_MESSAGE_COPY:
        enqueue(s, req, f);
        break;
    case MSG_ANY_STORE_MAILBOX_STATUS:
    case MSG_ANY_STORE_MAILBOX_SELECT:
        handle_state(s, req, f);
        break;
    case MSG_ANY_STORE_MAILBOX_LIST:
        handle_list(s, req, f);
        break;
    case MSG_ANY_STORE_MESSAGE_FETCH:
    case MSG_ANY_STORE_CHANGES_SINCE:
        handle_fetch(s, req, f);
        break;
    case MSG_ANY_STORE_MESSAGE_BODY:
        handle_body(s, req, f);
        break;
    case MSG_ANY_STORE_QUOTA_GET:
        handle_quota(s, req, f);
        break;
    case MSG_ANY_STORE_RECENT_CLAIM:
        handle_recent(s, req, f);
        break;
    default:
        mx_log(MX_LOG_WARNING, "store.unexpected_message", MX_KV("type", mx_msg_type_name(f->type)),
               MX_KV("peer", mx_server_request_peer(req)));
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "mx-store does not handle this message", &error);
        break;
    }
}

/* ---- life cycle --------------------------------------------------------- */

int store_server_start(struct event_base *base, struct store *st, const char *listen,
                       const char *publish, unsigned max_batch, struct store_server **s_r,
                       char **error_r)
{
    struct store_server *s = mx_calloc(1, sizeof *s);
    s->base = base;
    s->st = st;
    s->max_batch = max_batch ? max_batch : 256;
    s->queue_tail = &s->queue;
    s->done_tail = &s->done;
    s->waiting_tail = &s->waiting;
    atomic_init(&s->writable, true);
    s->wakeup_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    *s_r = s;
    const char *error = NULL;
    s->wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wakeup_fd < 0) {
        *error_r = mx_asprintf("eventfd: %s", strerror(errno));
        return -1;
    }
    s->wakeup_ev = event_new(base, s->wakeup_fd, EV_READ | EV_PERSIST, on_wakeup, s);
    event_add(s->wakeup_ev, NULL);
    int err = pthread_create(&s->thread, NULL, writer_main, s);
    if (err != 0) {
        *error_r = mx_asprintf("pthread_create: %s", strerror(err));
        return -1;
    }
    s->thread_started = true;
    if (mx_bus_new(base, &s->bus, &error) < 0) {
        *error_r = mx_asprintf("bus: %s", error);
        return -1;
    }
    if (publish && *publish && mx_pub_new(s->bus, publish, &s->pub, &error) < 0) {
        *error_r = mx_asprintf("publish %s: %s", publish, error);
        return -1;
    }
    if (mx_server_new(s->bus, listen, store_dispatch, s, &s->server, &error) < 0) {
        *error_r = mx_asprintf("listen %s: %s", listen, error);
        return -1;
    }
    return 0;
}

int store_server_enable_ha(struct store_server *s, const struct store_repl_config *config,
                           char **error_r)
{
    struct store_repl_config c = *config;
    c.client_endpoint = store_server_endpoint(s);
    atomic_store(&s->writable, false); /* FENCED until mx-ha answers */
    if (store_repl_new(s->base, s->bus, s->st, &c, on_repl_change, s, &s->repl, error_r) < 0)
        return -1;
    atomic_store(&s->writable, store_repl_primary(s->repl));
    return 0;
}

const char *store_server_endpoint(const struct store_server *s)
{
    return s->server ? mx_server_endpoint(s->server) : "";
}

void store_server_stop(struct store_server **sp)
{
    struct store_server *s = *sp;
    if (s == NULL)
        return;
    mx_server_free(&s->server); /* no new jobs */
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL); /* finishes the queued batches */
    }
    store_repl_free(&s->repl); /* held replies are released (inert) below */
    if (s->wakeup_ev) {
        on_wakeup(s->wakeup_fd, EV_READ, s); /* frees done jobs (replies inert) */
        event_free(s->wakeup_ev);
    }
    release_waiting(s);
    store_recent_free(&s->recent);
    mx_pub_free(&s->pub);
    mx_bus_free(&s->bus);
    if (s->wakeup_fd >= 0)
        close(s->wakeup_fd);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
    *sp = NULL;
}
