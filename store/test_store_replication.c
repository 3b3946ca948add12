/* test_store_replication - replication building blocks over real stores
 * in temporary directories: a replica that applies a primary's records
 * ends with an identical index, log and Maildir (UIDs, UIDVALIDITY,
 * MODSEQs, file names); records that do not fit are refused; epoch
 * histories detect a diverged log; a wipe empties a store for a resync;
 * the log keeps the newest store.oplog_keep records (more for a replica,
 * within 4x); a snapshot (rows + files at one seq S0) loaded into a wiped
 * store gives an identical one on which the records after S0 apply, also
 * when files were expunged or moved after S0; hostile rows are refused.
 * MX_SNAPSHOT_BENCH=N times a snapshot of N messages (store layer only). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mx_alloc.h"
#include "store.h"
#include "store_replication.h"

#define USER "bob@Example.TEST"
#define USER2 "carol@example.test"

struct fx {
    char root[2][64];
    struct store *st[2]; /* [0] primary, [1] replica */
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    for (int i = 0; i < 2; i++) {
        snprintf(fx->root[i], sizeof fx->root[i], "/tmp/test_repl_XXXXXX");
        assert_non_null(mkdtemp(fx->root[i]));
        char *error = NULL;
        assert_int_equal(store_open(fx->root[i], 64u << 20, &fx->st[i], &error), 0);
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < 2; i++) {
        store_close(&fx->st[i]);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", fx->root[i]);
        assert_int_equal(system(cmd), 0);
    }
    free(fx);
    return 0;
}

static char *message(int n)
{
    return mx_asprintf("From: a@example.test\r\nTo: bob@example.test\r\nSubject: message %d\r\n"
                       "Message-ID: <%d@x>\r\n\r\nbody %d\r\n",
                       n, n, n);
}

static struct store_batch *begin(struct store *st)
{
    struct store_batch *b = NULL;
    char *error = NULL;
    assert_int_equal(store_batch_begin(st, &b, &error), 0);
    return b;
}

static void commit(struct store_batch *b)
{
    char *error = NULL;
    assert_int_equal(store_batch_commit(&b, &error), 0);
}

static uint32_t append(struct store *st, const char *user, const char *mailbox, int n, uint32_t flags)
{
    struct store_batch *b = begin(st);
    char *body = message(n);
    struct mx_msgid id;
    memset(&id, 0, sizeof id);
    id.bytes[0] = (uint8_t)n;
    id.bytes[1] = (uint8_t)(n >> 8);
    id.bytes[15] = 0x5a;
    struct store_append_req req = {
        .user = user, .mailbox = mailbox, .body = body, .body_len = strlen(body),
        .flags = flags, .keywords = flags ? "$Label1" : NULL, .internaldate = 1700000000123ull + (uint64_t)n,
        .msgid = &id, .create = true,
    };
    struct store_result res;
    assert_int_equal(store_append(b, &req, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    commit(b);
    free(body);
    return res.uid;
}

/* A realistic mix of every record type on the primary. */
static void primary_workload(struct store *st)
{
    struct store_result res;
    uint32_t *a = NULL, *c = NULL;
    size_t na = 0;
    append(st, USER, "INBOX", 1, 0);
    append(st, USER, "INBOX", 2, STORE_FLAG_SEEN);
    uint32_t u3 = append(st, USER, "INBOX", 3, 0);
    append(st, USER2, "INBOX", 4, 0);

    struct store_batch *b = begin(st);
    assert_int_equal(store_mailbox_create(b, USER, "Work", NULL, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    assert_int_equal(store_mailbox_create(b, USER, "Work/Old", NULL, &res), 0);
    uint32_t uids[] = { 1, 2, u3 };
    assert_int_equal(store_flags_store(b, USER, "INBOX", 0, uids, 3, STORE_FLAGS_ADD,
                                       STORE_FLAG_FLAGGED | STORE_FLAG_DELETED, "Important", 0, &a,
                                       &na, &res),
                     0);
    free(a);
    commit(b);

    b = begin(st);
    uint32_t one[] = { 1 };
    assert_int_equal(store_copy(b, USER, "INBOX", 0, one, 1, "Work/Old", false, &a, &c, &na, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    free(a);
    free(c);
    uint32_t two[] = { 2 };
    assert_int_equal(store_copy(b, USER, "INBOX", 0, two, 1, "Work", true, &a, &c, &na, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    free(a);
    free(c);
    uint32_t three[] = { u3 };
    assert_int_equal(store_expunge(b, USER, "INBOX", 0, three, 1, &a, &na, &res), 0);
    assert_int_equal(na, 1);
    free(a);
    commit(b);

    /* appended, then expunged before a late replica asks: no file left */
    uint32_t u5 = append(st, USER, "Sent", 5, STORE_FLAG_DELETED);
    b = begin(st);
    uint32_t five[] = { u5 };
    assert_int_equal(store_expunge(b, USER, "Sent", 0, five, 1, &a, &na, &res), 0);
    free(a);
    assert_int_equal(store_mailbox_rename(b, USER, "Work", "Projects", &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    assert_int_equal(store_mailbox_subscribe(b, USER, "Projects/Old", false, &res), 0);
    assert_int_equal(store_mailbox_delete(b, USER, "Junk", &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    /* subscriptions without a mailbox: Junk's outlives it, Not/Yet precedes it */
    assert_int_equal(store_mailbox_subscribe(b, USER, "Not/Yet", true, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    commit(b);
    append(st, USER, "Projects/Old", 6, STORE_FLAG_SEEN | STORE_FLAG_ANSWERED);
}

/* orphan_collect - subscribed names without a mailbox, as "a,b," text. */
static int orphan_collect(void *ctx, const char *name)
{
    char *out = ctx;
    size_t len = strlen(out);
    snprintf(out + len, 256 - len, "%s,", name);
    return 0;
}

/* ---- shipping records as the primary's shipper does ------------------- */

struct copy_ctx {
    struct store *from;
    MDB_txn *txn;
    struct store_batch *to;
    uint64_t upto;
    int failed;
    char *error;
};

static int copy_fn(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    struct copy_ctx *c = ctx;
    if (seq > c->upto)
        return 1;
    uint8_t *body = NULL;
    size_t body_len = 0;
    if (store_oplog_type(rec, len) == STORE_OP_APPEND) {
        char *user, *rel, *udir, *path = NULL;
        uint64_t id;
        uint32_t uid;
        const char *error;
        assert_int_equal(store_oplog_append_info(rec, len, &user, &id, &uid, &rel), 0);
        assert_int_equal(store_user_dir(c->from, user, &udir, &error), 0);
        path = mx_asprintf("%s/%s", udir, rel);
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            free(path);
            path = NULL;
            if (store_message_locate(c->from, c->txn, user, id, uid, &path) == 0)
                f = fopen(path, "rb");
        }
        if (f) {
            body = malloc(1 << 16);
            body_len = fread(body, 1, 1 << 16, f);
            fclose(f);
        }
        free(path);
        free(user);
        free(rel);
        free(udir);
    }
    int rc = store_apply(c->to, seq, rec, len, body, body_len, &c->error);
    free(body);
    if (rc < 0) {
        c->failed = 1;
        return 1;
    }
    return 0;
}

/* replicate - apply the primary's records (last+1 .. upto) on the replica
 * in one batch; 0 or -1 with *error_r. */
static int replicate(struct store *from, struct store *to, uint64_t upto, char **error_r)
{
    struct copy_ctx c = { from, NULL, begin(to), upto, 0, NULL };
    assert_int_equal(mdb_txn_begin(store_env(from), NULL, MDB_RDONLY, &c.txn), 0);
    uint64_t have = store_batch_last_seq(c.to);
    assert_int_equal(store_oplog_foreach(from, c.txn, have + 1, copy_fn, &c), 0);
    mdb_txn_abort(c.txn);
    if (c.failed) {
        store_batch_abort(&c.to);
        *error_r = c.error;
        return -1;
    }
    commit(c.to);
    return 0;
}

static uint64_t last_seq(struct store *st)
{
    MDB_txn *txn;
    struct store_ha_meta m;
    assert_int_equal(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_ha_read(st, txn, &m), 0);
    mdb_txn_abort(txn);
    return m.seq;
}

/* ---- comparing two stores ------------------------------------------------ */

struct msg_list {
    struct store_message *v;
    size_t n;
};
static int collect_fn(void *ctx, const struct store_message *m)
{
    struct msg_list *l = ctx;
    l->v = realloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n] = *m;
    l->v[l->n].mime = NULL;
    l->v[l->n].mime_len = m->mime_len;
    l->n++;
    return 0;
}

static char *file_bytes(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    *len_r = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

struct oplog_list {
    uint8_t **rec;
    size_t *len, n;
    uint64_t base; /* the first record is seq base + 1 */
};
static int oplog_collect(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    struct oplog_list *l = ctx;
    assert_int_equal(seq, l->base + l->n + 1);
    l->rec = realloc(l->rec, (l->n + 1) * sizeof *l->rec);
    l->len = realloc(l->len, (l->n + 1) * sizeof *l->len);
    l->rec[l->n] = malloc(len);
    memcpy(l->rec[l->n], rec, len);
    l->len[l->n++] = len;
    return 0;
}

/* assert_same_from - every mailbox, message, file and log record from
 * seq oplog_from on identical (a snapshot's replica has no older ones). */
static void assert_same_from(struct store *a, struct store *b, uint64_t oplog_from, size_t *messages_r)
{
    MDB_txn *ta, *tb;
    assert_int_equal(mdb_txn_begin(store_env(a), NULL, MDB_RDONLY, &ta), 0);
    assert_int_equal(mdb_txn_begin(store_env(b), NULL, MDB_RDONLY, &tb), 0);
    struct oplog_list la = { .base = oplog_from - 1 }, lb = { .base = oplog_from - 1 };
    assert_int_equal(store_oplog_foreach(a, ta, oplog_from, oplog_collect, &la), 0);
    assert_int_equal(store_oplog_foreach(b, tb, oplog_from, oplog_collect, &lb), 0);
    assert_int_equal(la.n, lb.n);
    for (size_t i = 0; i < la.n; i++) {
        assert_int_equal(la.len[i], lb.len[i]);
        assert_memory_equal(la.rec[i], lb.rec[i], la.len[i]);
        free(la.rec[i]);
        free(lb.rec[i]);
    }
    free(la.rec);
    free(la.len);
    free(lb.rec);
    free(lb.len);

    char orphans_a[256] = "", orphans_b[256] = "";
    assert_int_equal(store_subscriptions_orphan(a, ta, USER, orphan_collect, orphans_a), 0);
    assert_int_equal(store_subscriptions_orphan(b, tb, USER, orphan_collect, orphans_b), 0);
    assert_string_equal(orphans_a, orphans_b);

    size_t mailboxes = 0, messages = 0;
    MDB_cursor *ca, *cb;
    assert_int_equal(mdb_cursor_open(ta, store_dbi_mailboxes(a), &ca), 0);
    assert_int_equal(mdb_cursor_open(tb, store_dbi_mailboxes(b), &cb), 0);
    MDB_val ka, va, kb, vb;
    int ra = mdb_cursor_get(ca, &ka, &va, MDB_FIRST), rb = mdb_cursor_get(cb, &kb, &vb, MDB_FIRST);
    while (ra == 0 && rb == 0) {
        assert_int_equal(ka.mv_size, kb.mv_size);
        assert_memory_equal(ka.mv_data, kb.mv_data, ka.mv_size);
        char *user = strndup(ka.mv_data, ka.mv_size);
        size_t ul = strlen(user);
        char *name = strndup((const char *)ka.mv_data + ul + 1, ka.mv_size - ul - 1);
        struct store_mailbox ma, mb;
        assert_int_equal(store_mailbox_get(a, ta, user, name, &ma), 0);
        assert_int_equal(store_mailbox_get(b, tb, user, name, &mb), 0);
        assert_int_equal(ma.id, mb.id);
        assert_int_equal(ma.uidvalidity, mb.uidvalidity);
        assert_int_equal(ma.uidnext, mb.uidnext);
        assert_int_equal(ma.highestmodseq, mb.highestmodseq);
        assert_int_equal(ma.messages, mb.messages);
        assert_int_equal(ma.unseen, mb.unseen);
        assert_int_equal(ma.bytes, mb.bytes);
        assert_int_equal(ma.subscribed, mb.subscribed);
        assert_string_equal(ma.special_use, mb.special_use);
        struct msg_list xa = { 0 }, xb = { 0 };
        assert_int_equal(store_message_foreach(a, ta, ma.id, collect_fn, &xa), 0);
        assert_int_equal(store_message_foreach(b, tb, mb.id, collect_fn, &xb), 0);
        assert_int_equal(xa.n, xb.n);
        for (size_t i = 0; i < xa.n; i++) {
            struct store_message *p = &xa.v[i], *q = &xb.v[i];
            assert_int_equal(p->uid, q->uid);
            assert_int_equal(p->flags, q->flags);
            assert_string_equal(p->keywords, q->keywords);
            assert_int_equal(p->modseq, q->modseq);
            assert_int_equal(p->internaldate, q->internaldate);
            assert_int_equal(p->size, q->size);
            assert_memory_equal(p->msgid.bytes, q->msgid.bytes, MX_MSGID_SIZE);
            assert_int_equal(p->expunged, q->expunged);
            assert_int_equal(p->subdir, q->subdir);
            assert_string_equal(p->file, q->file); /* POP3 UIDLs hash this name */
            assert_int_equal(p->mime_len != 0, q->mime_len != 0);
            if (p->expunged)
                continue;
            char *pa = NULL, *pb = NULL;
            assert_int_equal(store_message_locate(a, ta, user, ma.id, p->uid, &pa), 0);
            assert_int_equal(store_message_locate(b, tb, user, mb.id, q->uid, &pb), 0);
            size_t na = 0, nb = 0;
            char *da = file_bytes(pa, &na), *db = file_bytes(pb, &nb);
            assert_non_null(da);
            assert_non_null(db);
            assert_int_equal(na, nb);
            assert_memory_equal(da, db, na);
            struct stat sa, sb;
            assert_int_equal(stat(pb, &sb), 0);
            assert_int_equal(stat(pa, &sa), 0);
            assert_int_equal((uint64_t)sb.st_mtime, q->internaldate / 1000);
            free(da);
            free(db);
            free(pa);
            free(pb);
            messages++;
        }
        free(xa.v);
        free(xb.v);
        free(user);
        free(name);
        mailboxes++;
        ra = mdb_cursor_get(ca, &ka, &va, MDB_NEXT);
        rb = mdb_cursor_get(cb, &kb, &vb, MDB_NEXT);
    }
    assert_int_equal(ra, MDB_NOTFOUND);
    assert_int_equal(rb, MDB_NOTFOUND);
    mdb_cursor_close(ca);
    mdb_cursor_close(cb);
    mdb_txn_abort(ta);
    mdb_txn_abort(tb);
    assert_true(mailboxes >= 8);
    if (messages_r)
        *messages_r = messages;
}

static void assert_same(struct store *a, struct store *b, size_t *messages_r)
{
    assert_same_from(a, b, 1, messages_r);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_apply_gives_identical_store(void **state)
{
    struct fx *fx = *state;
    primary_workload(fx->st[0]);
    uint64_t half = last_seq(fx->st[0]) / 2;
    char *error = NULL;
    /* in two steps, as a replica that was away catches up */
    assert_int_equal(replicate(fx->st[0], fx->st[1], half, &error), 0);
    assert_int_equal(last_seq(fx->st[1]), half);
    assert_int_equal(replicate(fx->st[0], fx->st[1], UINT64_MAX, &error), 0);
    size_t messages = 0;
    assert_same(fx->st[0], fx->st[1], &messages);
    assert_int_equal(messages, 5); /* INBOX 1, carol's 4, the copy, the move, message 6 */

    /* promoted, the replica continues the counters: a new mailbox gets a
     * fresh id and a UIDVALIDITY above every one it has seen */
    struct store_batch *b = begin(fx->st[1]);
    struct store_result res;
    assert_int_equal(store_mailbox_create(b, USER, "After", NULL, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    commit(b);
    MDB_txn *t0, *t1;
    assert_int_equal(mdb_txn_begin(store_env(fx->st[0]), NULL, MDB_RDONLY, &t0), 0);
    assert_int_equal(mdb_txn_begin(store_env(fx->st[1]), NULL, MDB_RDONLY, &t1), 0);
    struct store_mailbox after, proj;
    assert_int_equal(store_mailbox_get(fx->st[1], t1, USER, "After", &after), 0);
    assert_int_equal(store_mailbox_get(fx->st[0], t0, USER, "Projects/Old", &proj), 0);
    assert_true(after.id > proj.id);
    assert_true(after.uidvalidity > proj.uidvalidity);
    mdb_txn_abort(t0);
    mdb_txn_abort(t1);
    /* and a new append in a replicated mailbox takes the next UID */
    assert_int_equal(append(fx->st[1], USER, "Projects/Old", 7, 0), 3);
}

static void test_apply_refuses_what_does_not_fit(void **state)
{
    struct fx *fx = *state;
    append(fx->st[0], USER, "INBOX", 1, 0);
    append(fx->st[0], USER, "INBOX", 2, 0);
    char *error = NULL;
    /* the replica wrote on its own (it was primary in an older epoch):
     * its records may even fit the primary's (same mailbox id, same
     * UIDVALIDITY second), which is why the shipper compares histories
     * and the last record before it ships; store_apply refuses what is
     * out of sequence or malformed */
    append(fx->st[1], USER, "INBOX", 9, 0);
    struct store_batch *b = begin(fx->st[1]);
    static const uint8_t junk[] = { STORE_OP_VERSION, STORE_OP_FLAGS, 0, 0 };
    assert_int_equal(store_apply(b, store_batch_last_seq(b), junk, sizeof junk, NULL, 0, &error), -1);
    assert_non_null(strstr(error, "does not follow"));
    free(error);
    error = NULL;
    assert_int_equal(store_apply(b, store_batch_last_seq(b) + 1, junk, sizeof junk, NULL, 0, &error), -1);
    assert_non_null(error);
    free(error);
    /* names a store never writes: a user outside the root, a mailbox
     * name that is not canonical */
    static const char *const bad[][2] = { { "x@..", "INBOX" }, { "x/y@example.test", "INBOX" },
                                          { USER, "a//b" }, { USER, "inbox/x" } };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t rec[256];
        size_t n = 0;
        rec[n++] = STORE_OP_VERSION;
        rec[n++] = STORE_OP_MAILBOX_CREATE;
        for (int k = 0; k < 2; k++) {
            size_t l = strlen(bad[i][k]);
            rec[n++] = 0, rec[n++] = 0, rec[n++] = 0, rec[n++] = (uint8_t)l;
            memcpy(rec + n, bad[i][k], l);
            n += l;
        }
        memset(rec + n, 0, 8 + 4 + 4); /* id 0, uidvalidity 0, special-use "" */
        rec[n + 7] = 99;
        n += 16;
        error = NULL;
        assert_int_equal(store_apply(b, store_batch_last_seq(b) + 1, rec, n, NULL, 0, &error), -1);
        assert_non_null(strstr(error, "invalid user or mailbox name"));
        free(error);
    }
    store_batch_abort(&b);

    /* after a wipe the same records apply from seq 1 */
    uint64_t epoch = 7;
    b = begin(fx->st[1]);
    assert_int_equal(store_ha_write(b, &epoch, "7:1"), 0);
    commit(b);
    error = NULL;
    assert_int_equal(store_wipe(fx->st[1], &error), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/example.test", fx->root[1]);
    assert_int_not_equal(access(path, F_OK), 0);
    MDB_txn *txn;
    struct store_ha_meta m;
    assert_int_equal(mdb_txn_begin(store_env(fx->st[1]), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_ha_read(fx->st[1], txn, &m), 0);
    mdb_txn_abort(txn);
    assert_int_equal(m.epoch, 7); /* kept: epochs only grow */
    assert_true(m.snapshot_incomplete); /* until a snapshot's end clears it */
    assert_int_equal(m.seq, 0);
    assert_string_equal(m.history, "");
    assert_int_equal(replicate(fx->st[0], fx->st[1], UINT64_MAX, &error), 0);
    assert_int_equal(last_seq(fx->st[1]), last_seq(fx->st[0]));
}

static void test_mailbox_mismatch_is_divergence(void **state)
{
    struct fx *fx = *state;
    /* both created INBOX on their own: same names, other ids/UIDVALIDITY */
    append(fx->st[1], USER, "INBOX", 1, 0);
    sleep(1); /* UIDVALIDITY follows the clock when it is ahead */
    append(fx->st[0], USER, "INBOX", 1, 0);
    struct store_batch *b = begin(fx->st[1]);
    char *error = NULL;
    /* skip the create records: feed the APPEND as if it followed */
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(store_env(fx->st[0]), NULL, MDB_RDONLY, &txn), 0);
    struct oplog_list l = { 0 };
    assert_int_equal(store_oplog_foreach(fx->st[0], txn, 1, oplog_collect, &l), 0);
    mdb_txn_abort(txn);
    assert_int_equal(l.n, 6);
    assert_int_equal(store_oplog_type(l.rec[5], l.len[5]), STORE_OP_APPEND);
    assert_int_equal(store_apply(b, store_batch_last_seq(b) + 1, l.rec[5], l.len[5], "x", 1, &error), -1);
    assert_non_null(strstr(error, "diverged"));
    free(error);
    store_batch_abort(&b);
    for (size_t i = 0; i < l.n; i++)
        free(l.rec[i]);
    free(l.rec);
    free(l.len);
}

static void test_history(void **state)
{
    (void)state;
    struct store_epoch_range a[STORE_HISTORY_MAX], b[STORE_HISTORY_MAX];
    size_t na = 0, nb = 0;
    char text[sizeof ((struct store_ha_meta *)0)->history];
    assert_int_equal(store_history_parse("", a, &na), 0);
    assert_int_equal(na, 0);
    assert_int_equal(store_history_epoch_of(a, na, 5), 0);
    assert_int_equal(store_history_parse("3:1,5:10,9:10x", a, &na), -1);
    assert_int_equal(store_history_parse("5:10,3:12", a, &na), -1); /* epochs must grow */
    assert_int_equal(store_history_parse("3:1,5:10,9:25", a, &na), 0);
    assert_int_equal(na, 3);
    assert_int_equal(store_history_epoch_of(a, na, 9), 3);
    assert_int_equal(store_history_epoch_of(a, na, 10), 5);
    assert_int_equal(store_history_epoch_of(a, na, 1000), 9);
    assert_int_equal(store_history_format(a, na, text, sizeof text), 0);
    assert_string_equal(text, "3:1,5:10,9:25");
    assert_int_equal(store_history_format(a, na, text, 5), -1);

    /* the replica of epoch 5 stopped at 20; the new primary began epoch 9
     * at 25: its 1..20 are the same */
    assert_int_equal(store_history_parse("3:1,5:10", b, &nb), 0);
    assert_true(store_history_agree(a, na, b, nb, 20));
    assert_true(store_history_agree(a, na, b, nb, 24));
    /* the old primary of epoch 5 wrote up to 30, unacknowledged beyond 24:
     * the new primary's 25.. are epoch 9's, so it diverged */
    assert_false(store_history_agree(a, na, b, nb, 30));
    /* a store that was primary in epoch 6 (never known to a) diverged */
    assert_int_equal(store_history_parse("3:1,6:10", b, &nb), 0);
    assert_false(store_history_agree(a, na, b, nb, 12));
    assert_true(store_history_agree(a, na, b, nb, 9));

    /* becoming primary appends; an epoch that wrote nothing is replaced */
    store_history_begin_epoch(a, &na, 11, 40);
    store_history_begin_epoch(a, &na, 12, 40);
    store_history_begin_epoch(a, &na, 12, 50); /* same epoch: no change */
    store_history_begin_epoch(a, &na, 10, 60); /* older: ignored */
    assert_int_equal(store_history_format(a, na, text, sizeof text), 0);
    assert_string_equal(text, "3:1,5:10,9:25,12:40");
    /* full: the oldest range goes */
    na = 0;
    for (uint64_t e = 1; e <= STORE_HISTORY_MAX + 3; e++)
        store_history_begin_epoch(a, &na, e, e * 10);
    assert_int_equal(na, STORE_HISTORY_MAX);
    assert_int_equal(a[0].epoch, 4);
    assert_int_equal(store_history_format(a, na, text, sizeof text), 0);
    assert_int_equal(store_history_parse(text, b, &nb), 0);
    assert_int_equal(nb, STORE_HISTORY_MAX);
}


/* ---- trimming ------------------------------------------------------------ */

static struct store_ha_meta ha_meta(struct store *st)
{
    MDB_txn *txn;
    struct store_ha_meta m;
    assert_int_equal(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_ha_read(st, txn, &m), 0);
    mdb_txn_abort(txn);
    return m;
}

struct range_ctx {
    uint64_t first, last, n;
};
static int range_fn(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    (void)rec;
    (void)len;
    struct range_ctx *c = ctx;
    if (c->n == 0)
        c->first = seq;
    else
        assert_int_equal(seq, c->last + 1); /* still contiguous */
    c->last = seq;
    c->n++;
    return 0;
}

static struct range_ctx oplog_range(struct store *st)
{
    MDB_txn *txn;
    struct range_ctx c = { 0, 0, 0 };
    assert_int_equal(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_oplog_foreach(st, txn, 1, range_fn, &c), 0);
    mdb_txn_abort(txn);
    return c;
}

static void test_trim_target(void **state)
{
    (void)state;
    /* keep the newest 100 */
    assert_int_equal(store_oplog_trim_target(1000, 100, UINT64_MAX), 901);
    assert_int_equal(store_oplog_trim_target(50, 100, UINT64_MAX), 1);
    assert_int_equal(store_oplog_trim_target(100, 100, UINT64_MAX), 1);
    assert_int_equal(store_oplog_trim_target(101, 100, UINT64_MAX), 2);
    /* a replica needs more: kept, up to 4 x keep */
    assert_int_equal(store_oplog_trim_target(1000, 100, 700), 700);
    assert_int_equal(store_oplog_trim_target(1000, 100, 2), 601);
    /* a replica that needs nothing older changes nothing */
    assert_int_equal(store_oplog_trim_target(1000, 100, 1001), 901);
}

static void test_trim_keeps_the_newest(void **state)
{
    struct fx *fx = *state;
    struct store *st = fx->st[0];
    store_oplog_set_keep(st, 10); /* clamped to the minimum */
    for (int n = 0; n < 150; n++)
        append(st, USER, "INBOX", n, 0);
    struct store_ha_meta m = ha_meta(st);
    struct range_ctx r = oplog_range(st);
    assert_true(m.seq > 150); /* INBOX and its default folders, then 150 appends */
    assert_int_equal(r.n, STORE_OPLOG_KEEP_MIN);
    assert_int_equal(r.last, m.seq);
    assert_int_equal(r.first, m.seq - STORE_OPLOG_KEEP_MIN + 1);
    assert_int_equal(m.oplog_first, r.first);

    /* a replica still needs records from here: they stay (new ones come,
     * none older than the floor goes) */
    uint64_t floor = m.seq - 20;
    store_oplog_set_floor(st, floor);
    for (int n = 0; n < 150; n++)
        append(st, USER, "INBOX", 1000 + n, 0);
    m = ha_meta(st);
    r = oplog_range(st);
    assert_int_equal(r.first, floor);
    assert_int_equal(m.oplog_first, floor);
    assert_int_equal(r.last, m.seq);
    /* ... but never more than 4 x keep of them */
    for (int n = 0; n < 300; n++)
        append(st, USER, "INBOX", 2000 + n, 0);
    m = ha_meta(st);
    r = oplog_range(st);
    assert_int_equal(r.n, STORE_OPLOG_KEEP_FOR_REPLICAS * STORE_OPLOG_KEEP_MIN);
    assert_int_equal(m.oplog_first, r.first);
    /* the replica caught up: back to keep */
    store_oplog_set_floor(st, UINT64_MAX);
    append(st, USER, "INBOX", 9999, 0);
    r = oplog_range(st);
    assert_int_equal(r.n, STORE_OPLOG_KEEP_MIN);
    assert_int_equal(ha_meta(st).oplog_first, r.first);

    /* a reopened store keeps its position and first record */
    store_close(&fx->st[0]);
    char *error = NULL;
    assert_int_equal(store_open(fx->root[0], 64u << 20, &fx->st[0], &error), 0);
    assert_int_equal(ha_meta(fx->st[0]).oplog_first, r.first);
    assert_int_equal(ha_meta(fx->st[0]).seq, r.last);
}

/* ---- snapshot resync -------------------------------------------------------- */

/* snapshot_body - the bytes of a live message row, as the shipper finds
 * them: at the snapshot's path, else where the message lives now. */
static uint8_t *snapshot_body(struct store *st, const struct store_snapshot_row *row, size_t *len_r)
{
    size_t len = 0;
    char *data = file_bytes(row->path, &len);
    if (data == NULL) {
        MDB_txn *txn;
        char *now = NULL;
        assert_int_equal(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn), 0);
        if (store_message_locate(st, txn, row->user, row->mailbox_id, row->uid, &now) == 0)
            data = file_bytes(now, &len);
        mdb_txn_abort(txn);
        free(now);
    }
    *len_r = len;
    return (uint8_t *)data;
}

struct snap_copy {
    size_t rows, files, gone;
};

/* snapshot_copy - wipe `to` and load `from`'s snapshot into it, chunks of
 * rows_per_batch rows per batch (as SNAPSHOT_CHUNKs would); between_fn
 * runs after the snapshot was opened (changes made "after S0"). */
static uint64_t snapshot_copy(struct store *from, struct store *to, size_t rows_per_batch,
                              void (*between_fn)(struct store *), struct snap_copy *stats)
{
    char *error = NULL;
    struct store_snapshot *snap = NULL;
    assert_int_equal(store_snapshot_open(from, &snap, &error), 0);
    uint64_t s0 = store_snapshot_seq(snap);
    if (between_fn)
        between_fn(from);
    assert_int_equal(store_wipe(to, &error), 0);
    assert_true(store_snapshot_pending(to));
    assert_true(ha_meta(to).snapshot_incomplete);
    struct store_snapshot_load *load = store_snapshot_load_new(s0);
    memset(stats, 0, sizeof *stats);
    struct store_batch *b = begin(to);
    size_t in_batch = 0;
    struct store_snapshot_row row;
    int got;
    while ((got = store_snapshot_next(snap, &row)) == 0) {
        uint8_t *body = NULL;
        size_t body_len = 0;
        if (row.path) {
            body = snapshot_body(from, &row, &body_len);
            stats->files += body != NULL;
            stats->gone += body == NULL;
        }
        if (store_snapshot_load_row(b, load, row.wire, row.wire_len, body, body_len, &error) != 0)
            fail_msg("load row: %s", error);
        free(body);
        free(row.path);
        stats->rows++;
        if (++in_batch == rows_per_batch) {
            commit(b);
            assert_true(store_snapshot_pending(to)); /* still a partial copy */
            b = begin(to);
            in_batch = 0;
        }
    }
    assert_int_equal(got, 1);
    size_t rec_len = 0;
    const uint8_t *rec = store_snapshot_record(snap, &rec_len);
    assert_int_equal(store_snapshot_load_finish(b, load, store_snapshot_history(snap), rec, rec_len, &error), 0);
    commit(b);
    uint64_t rows, files, bytes;
    store_snapshot_load_stats(load, &rows, &files, &bytes);
    assert_int_equal(rows, stats->rows);
    assert_int_equal(files, stats->files);
    store_snapshot_load_free(&load);
    store_snapshot_close(&snap);
    assert_false(store_snapshot_pending(to));
    return s0;
}

static void more_work(struct store *st)
{
    struct store_result res;
    uint32_t *x = NULL;
    size_t nx = 0;
    uint32_t u = append(st, USER, "Projects/Old", 8, 0);
    struct store_batch *b = begin(st);
    uint32_t uids[] = { u };
    assert_int_equal(store_flags_store(b, USER, "Projects/Old", 0, uids, 1, STORE_FLAGS_ADD,
                                       STORE_FLAG_SEEN | STORE_FLAG_DELETED, "$Done", 0, &x, &nx, &res),
                     0);
    free(x);
    assert_int_equal(store_expunge(b, USER, "Projects/Old", 0, uids, 1, &x, &nx, &res), 0);
    assert_int_equal(nx, 1);
    free(x);
    assert_int_equal(store_mailbox_rename(b, USER, "Projects", "Archive", &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    commit(b);
    append(st, USER2, "INBOX", 9, STORE_FLAG_FLAGGED);
}

static void test_snapshot_gives_identical_store(void **state)
{
    struct fx *fx = *state;
    primary_workload(fx->st[0]);
    /* the replica had a life of its own (a diverged log): all of it goes */
    append(fx->st[1], USER, "INBOX", 77, 0);
    append(fx->st[1], "dave@example.test", "Elsewhere", 78, 0);
    uint64_t epoch = 3;
    struct store_batch *b = begin(fx->st[0]);
    assert_int_equal(store_ha_write(b, &epoch, "1:1,3:5"), 0);
    commit(b);

    struct snap_copy stats;
    uint64_t s0 = snapshot_copy(fx->st[0], fx->st[1], 7, NULL, &stats);
    assert_int_equal(s0, last_seq(fx->st[0]));
    assert_int_equal(stats.gone, 0);
    assert_int_equal(stats.files, 5);
    size_t messages = 0;
    assert_same_from(fx->st[0], fx->st[1], s0, &messages);
    assert_int_equal(messages, 5);
    struct store_ha_meta m = ha_meta(fx->st[1]);
    assert_int_equal(m.seq, s0);
    assert_int_equal(m.oplog_first, s0); /* the record at S0 only */
    assert_string_equal(m.history, "1:1,3:5");
    assert_false(m.snapshot_incomplete);
    char path[160];
    snprintf(path, sizeof path, "%s/example.test/dave", fx->root[1]);
    assert_int_not_equal(access(path, F_OK), 0);

    /* the log continues on top of it, as OPLOG_APPLY from S0 + 1 */
    more_work(fx->st[0]);
    char *error = NULL;
    assert_int_equal(replicate(fx->st[0], fx->st[1], UINT64_MAX, &error), 0);
    assert_same_from(fx->st[0], fx->st[1], s0, NULL);

    /* promoted, the replica continues the counters: UIDNEXT, mailbox id
     * and UIDVALIDITY never go back */
    MDB_txn *t0;
    struct store_mailbox old0, inbox0;
    assert_int_equal(mdb_txn_begin(store_env(fx->st[0]), NULL, MDB_RDONLY, &t0), 0);
    assert_int_equal(store_mailbox_get(fx->st[0], t0, USER, "Archive/Old", &old0), 0);
    assert_int_equal(store_mailbox_get(fx->st[0], t0, USER, "INBOX", &inbox0), 0);
    mdb_txn_abort(t0);
    assert_int_equal(append(fx->st[1], USER, "Archive/Old", 10, 0), old0.uidnext);
    b = begin(fx->st[1]);
    struct store_result res;
    assert_int_equal(store_mailbox_create(b, USER, "Fresh", NULL, &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    commit(b);
    MDB_txn *t1;
    struct store_mailbox fresh;
    assert_int_equal(mdb_txn_begin(store_env(fx->st[1]), NULL, MDB_RDONLY, &t1), 0);
    assert_int_equal(store_mailbox_get(fx->st[1], t1, USER, "Fresh", &fresh), 0);
    mdb_txn_abort(t1);
    assert_true(fresh.uidvalidity > old0.uidvalidity);
    assert_true(fresh.id > old0.id);
}

/* changes on the primary after S0, before the rows are read: a message
 * expunged (its file gone) and a mailbox renamed (its files moved) */
static uint32_t late_uid;
static void expunge_and_rename(struct store *st)
{
    struct store_result res;
    uint32_t *x = NULL;
    size_t nx = 0;
    struct store_batch *b = begin(st);
    uint32_t uids[] = { late_uid };
    assert_int_equal(store_flags_store(b, USER, "INBOX", 0, uids, 1, STORE_FLAGS_ADD, STORE_FLAG_DELETED, NULL, 0,
                                       &x, &nx, &res),
                     0);
    free(x);
    assert_int_equal(store_expunge(b, USER, "INBOX", 0, uids, 1, &x, &nx, &res), 0);
    assert_int_equal(nx, 1);
    free(x);
    assert_int_equal(store_mailbox_rename(b, USER, "Projects", "Moved", &res), 0);
    assert_int_equal(res.status, MX_STATUS_OK);
    commit(b);
}

static void test_snapshot_with_changes_after_s0(void **state)
{
    struct fx *fx = *state;
    primary_workload(fx->st[0]);
    late_uid = append(fx->st[0], USER, "INBOX", 40, 0);
    struct snap_copy stats;
    uint64_t s0 = snapshot_copy(fx->st[0], fx->st[1], 1000, expunge_and_rename, &stats);
    assert_int_equal(stats.gone, 1); /* the expunged one: its EXPUNGE follows */
    assert_int_equal(stats.files, 5); /* the renamed mailbox's were found where they moved */
    /* the records after S0 apply cleanly, the EXPUNGE without its file */
    char *error = NULL;
    assert_int_equal(replicate(fx->st[0], fx->st[1], UINT64_MAX, &error), 0);
    assert_same_from(fx->st[0], fx->st[1], s0, NULL);
}

static void test_snapshot_of_a_trimmed_log(void **state)
{
    struct fx *fx = *state;
    store_oplog_set_keep(fx->st[0], STORE_OPLOG_KEEP_MIN);
    primary_workload(fx->st[0]);
    for (int n = 0; n < 120; n++)
        append(fx->st[0], USER2, n % 2 ? "INBOX" : "Lists", 100 + n, n % 3 ? STORE_FLAG_SEEN : 0);
    assert_true(ha_meta(fx->st[0]).oplog_first > 1);
    struct snap_copy stats;
    uint64_t s0 = snapshot_copy(fx->st[0], fx->st[1], 50, NULL, &stats);
    assert_same_from(fx->st[0], fx->st[1], s0, NULL);
    /* a snapshot at seq S0 that a second one replaces is as good */
    more_work(fx->st[0]);
    s0 = snapshot_copy(fx->st[0], fx->st[1], 3, NULL, &stats);
    assert_same_from(fx->st[0], fx->st[1], s0, NULL);
}


/* wire_row - u8 database, u32 key length, key, value (store_snapshot_next's
 * encoding), into buf; the length. */
static size_t wire_row(uint8_t *buf, uint8_t db, const void *key, size_t klen, const void *val, size_t vlen)
{
    buf[0] = db;
    buf[1] = (uint8_t)(klen >> 24);
    buf[2] = (uint8_t)(klen >> 16);
    buf[3] = (uint8_t)(klen >> 8);
    buf[4] = (uint8_t)klen;
    memcpy(buf + 5, key, klen);
    memcpy(buf + 5 + klen, val, vlen);
    return 5 + klen + vlen;
}

static void expect_refused(struct store *st, struct store_snapshot_load *load, const uint8_t *row, size_t len,
                           const char *what)
{
    struct store_batch *b = begin(st);
    char *error = NULL;
    assert_int_equal(store_snapshot_load_row(b, load, row, len, "x", 1, &error), -1);
    if (strstr(error, what) == NULL)
        fail_msg("expected \"%s\", got \"%s\"", what, error);
    free(error);
    store_batch_abort(&b);
}

static void test_snapshot_load_refuses_hostile_rows(void **state)
{
    struct fx *fx = *state;
    primary_workload(fx->st[0]);
    /* a valid mailbox row to borrow the value of */
    struct store_snapshot *snap = NULL;
    char *error = NULL;
    assert_int_equal(store_snapshot_open(fx->st[0], &snap, &error), 0);
    struct store_snapshot_row row;
    uint8_t *mbrow = NULL, *msgrow = NULL;
    size_t mbrow_len = 0, msgrow_len = 0;
    while (msgrow == NULL && store_snapshot_next(snap, &row) == 0) {
        if (row.wire[0] == 2 && mbrow == NULL) {
            mbrow = malloc(row.wire_len);
            memcpy(mbrow, row.wire, row.wire_len);
            mbrow_len = row.wire_len;
        } else if (row.wire[0] == 3) {
            msgrow = malloc(row.wire_len);
            memcpy(msgrow, row.wire, row.wire_len);
            msgrow_len = row.wire_len;
        }
        free(row.path);
    }
    store_snapshot_close(&snap);
    assert_non_null(mbrow);
    assert_non_null(msgrow);
    size_t klen = ((size_t)mbrow[1] << 24) | ((size_t)mbrow[2] << 16) | ((size_t)mbrow[3] << 8) | mbrow[4];
    const uint8_t *mbval = mbrow + 5 + klen;
    size_t mbval_len = mbrow_len - 5 - klen;

    assert_int_equal(store_wipe(fx->st[1], &error), 0);
    struct store_snapshot_load *load = store_snapshot_load_new(9);
    uint8_t buf[4096];
    size_t n;
    /* users and names that would reach outside the store */
    n = wire_row(buf, 2, "../evil\0INBOX", 13, mbval, mbval_len);
    expect_refused(fx->st[1], load, buf, n, "user is not local@domain");
    n = wire_row(buf, 2, "bob@example.test\0../../x", 24, mbval, mbval_len);
    expect_refused(fx->st[1], load, buf, n, "not canonical");
    /* unknown database, truncated row, bad value */
    n = wire_row(buf, 9, "k", 1, "v", 1);
    expect_refused(fx->st[1], load, buf, n, "malformed snapshot row");
    expect_refused(fx->st[1], load, buf, 3, "malformed snapshot row");
    n = wire_row(buf, 2, "bob@example.test\0Box", 20, "junk", 4);
    expect_refused(fx->st[1], load, buf, n, "malformed mailbox row");
    /* meta: only the counters and orphan subscriptions */
    n = wire_row(buf, 1, "seq", 3, "\0\0\0\0\0\0\0\1", 8);
    expect_refused(fx->st[1], load, buf, n, "unexpected meta row");
    /* a message of a mailbox the snapshot did not bring */
    uint8_t mkey[12] = { 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0, 1 };
    n = wire_row(buf, 3, mkey, sizeof mkey, msgrow + 5 + 12, msgrow_len - 5 - 12);
    expect_refused(fx->st[1], load, buf, n, "unknown mailbox id 99");
    n = wire_row(buf, 3, mkey, sizeof mkey, mbval, mbval_len);
    expect_refused(fx->st[1], load, buf, n, "malformed message row");
    store_snapshot_load_free(&load);
    free(mbrow);
    free(msgrow);
    /* nothing of it reached the disk or the index */
    char path[160];
    snprintf(path, sizeof path, "%s/evil", fx->root[1]);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_true(store_snapshot_pending(fx->st[1]));
}

/* The cost of a snapshot (no network): MX_SNAPSHOT_BENCH=N messages. */
static void test_snapshot_bench(void **state)
{
    struct fx *fx = *state;
    const char *env = getenv("MX_SNAPSHOT_BENCH");
    if (env == NULL)
        skip();
    int n = atoi(env);
    char *body = message(0);
    for (int i = 0; i < n;) {
        struct store_batch *b = begin(fx->st[0]);
        for (int k = 0; k < 250 && i < n; k++, i++) {
            struct mx_msgid id;
            memset(&id, 0, sizeof id);
            memcpy(id.bytes, &i, sizeof i);
            struct store_append_req req = { .user = i % 2 ? USER : USER2, .mailbox = "INBOX", .body = body,
                                            .body_len = strlen(body), .msgid = &id, .create = true };
            struct store_result res;
            assert_int_equal(store_append(b, &req, &res), 0);
        }
        commit(b);
    }
    free(body);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct snap_copy stats;
    snapshot_copy(fx->st[0], fx->st[1], 2048, NULL, &stats);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1000.0 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("snapshot of %d messages: %zu rows, %zu files, %.0f ms\n", n, stats.rows, stats.files, ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_apply_gives_identical_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_refuses_what_does_not_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_mismatch_is_divergence, setup, teardown),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_trim_target),
        cmocka_unit_test_setup_teardown(test_trim_keeps_the_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_gives_identical_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_with_changes_after_s0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_of_a_trimmed_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_load_refuses_hostile_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_bench, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
