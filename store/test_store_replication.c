/* test_store_replication - replication building blocks over real stores
 * in temporary directories: a replica that applies a primary's records
 * ends with an identical index, log and Maildir (UIDs, UIDVALIDITY,
 * MODSEQs, file names); records that do not fit are refused; epoch
 * histories detect a diverged log; a wipe empties a store for a resync. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
};
static int oplog_collect(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    struct oplog_list *l = ctx;
    assert_int_equal(seq, l->n + 1);
    l->rec = realloc(l->rec, (l->n + 1) * sizeof *l->rec);
    l->len = realloc(l->len, (l->n + 1) * sizeof *l->len);
    l->rec[l->n] = malloc(len);
    memcpy(l->rec[l->n], rec, len);
    l->len[l->n++] = len;
    return 0;
}

/* assert_same - every mailbox, message, file and log record identical. */
static void assert_same(struct store *a, struct store *b, size_t *messages_r)
{
    MDB_txn *ta, *tb;
    assert_int_equal(mdb_txn_begin(store_env(a), NULL, MDB_RDONLY, &ta), 0);
    assert_int_equal(mdb_txn_begin(store_env(b), NULL, MDB_RDONLY, &tb), 0);
    struct oplog_list la = { 0 }, lb = { 0 };
    assert_int_equal(store_oplog_foreach(a, ta, 1, oplog_collect, &la), 0);
    assert_int_equal(store_oplog_foreach(b, tb, 1, oplog_collect, &lb), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_apply_gives_identical_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_refuses_what_does_not_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_mismatch_is_divergence, setup, teardown),
        cmocka_unit_test(test_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
