/* test_store_index - the LMDB operation log + index over real Maildirs in
 * temporary directories: appends, dedup, flags, expunge, UIDs, oplog
 * contiguity, quota, hostile names, crash recovery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <cmocka.h>

#include "store.h"

#define USER "alice@Example.TEST"
static const char MSG[] = "From: a@example.test\r\nTo: alice@example.test\r\nSubject: hi\r\n"
                          "Message-ID: <1@x>\r\n\r\nhello\r\n";

struct fx {
    char root[64];
    struct store *st;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    snprintf(fx->root, sizeof fx->root, "/tmp/test_store_XXXXXX");
    assert_non_null(mkdtemp(fx->root));
    char *error = NULL;
    assert_int_equal(store_open(fx->root, 64u << 20, &fx->st, &error), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    store_close(&fx->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->root);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

/* append1 - one append in its own batch; returns the status. */
static enum mx_status append1(struct store *st, const char *mailbox, const struct mx_msgid *id,
                              uint64_t quota_bytes, struct store_result *res)
{
    struct store_batch *b;
    char *error = NULL;
    assert_int_equal(store_batch_begin(st, &b, &error), 0);
    struct store_append_req req = {
        .user = USER, .mailbox = mailbox, .body = MSG, .body_len = strlen(MSG),
        .msgid = id, .quota_bytes = quota_bytes, .create = true,
    };
    (void)store_append(b, &req, res);
    assert_int_equal(store_batch_commit(&b, &error), 0);
    return res->status;
}

static size_t count_files(const char *root, const char *sub)
{
    char path[256];
    size_t n = 0;
    const char *subs[2] = { "new", "cur" };
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/example.test/alice/%s%s", root, sub, subs[i]);
        DIR *d = opendir(path);
        if (d == NULL)
            continue;
        for (struct dirent *e; (e = readdir(d));)
            n += e->d_name[0] != '.';
        closedir(d);
    }
    return n;
}

struct seqs {
    uint64_t expect;
    bool gap;
    size_t n;
};
static int seq_fn(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    struct seqs *s = ctx;
    if (seq != s->expect || store_oplog_type(rec, len) < 0)
        s->gap = true;
    s->expect = seq + 1;
    s->n++;
    return 0;
}
static size_t oplog_check(struct store *st)
{
    MDB_txn *txn;
    assert_int_equal(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn), 0);
    struct seqs s = { 1, false, 0 };
    assert_int_equal(store_oplog_foreach(st, txn, 1, seq_fn, &s), 0);
    mdb_txn_abort(txn);
    assert_false(s.gap);
    return s.n;
}

static struct store_mailbox mailbox(struct store *st, const char *name)
{
    MDB_txn *txn;
    struct store_mailbox mb;
    assert_int_equal(mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_mailbox_get(st, txn, USER, name, &mb), 0);
    mdb_txn_abort(txn);
    return mb;
}

static void test_append_uids_dedup(void **state)
{
    struct fx *fx = *state;
    struct store_result r1, r2, r3, r4;
    struct mx_msgid a, b;
    mx_msgid_next(&a);
    mx_msgid_next(&b);
    assert_int_equal(append1(fx->st, "inbox", &a, 0, &r1), MX_STATUS_OK);
    assert_int_equal(r1.uid, 1);
    assert_int_equal(append1(fx->st, "INBOX", &b, 0, &r2), MX_STATUS_OK);
    assert_int_equal(r2.uid, 2);
    assert_true(r2.modseq > r1.modseq);
    assert_int_equal(r1.uidvalidity, r2.uidvalidity);
    /* the same id again: DUPLICATE with the first UID, no new file */
    assert_int_equal(append1(fx->st, "INBOX", &a, 0, &r3), MX_STATUS_DUPLICATE);
    assert_int_equal(r3.uid, 1);
    assert_int_equal(count_files(fx->root, ""), 2);
    /* no id: no dedup */
    assert_int_equal(append1(fx->st, "INBOX", NULL, 0, &r4), MX_STATUS_OK);
    assert_int_equal(r4.uid, 3);
    struct store_mailbox mb = mailbox(fx->st, "INBOX");
    assert_int_equal(mb.messages, 3);
    assert_int_equal(mb.unseen, 3);
    assert_int_equal(mb.uidnext, 4);
    /* a second mailbox gets its own UIDVALIDITY and starts at 1 */
    assert_int_equal(append1(fx->st, "Work/日本語", &a, 0, &r4), MX_STATUS_OK);
    assert_int_equal(r4.uid, 1);
    assert_int_not_equal(r4.uidvalidity, r1.uidvalidity);
    assert_int_equal(count_files(fx->root, ".Work.日本語/"), 1);
    /* 2 creates + 4 appends + the 4 special-use folders created with INBOX */
    assert_int_equal(oplog_check(fx->st), 10);
}

static void test_group_commit_batch(void **state)
{
    struct fx *fx = *state;
    struct store_batch *b;
    char *error = NULL;
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    uint32_t last = 0;
    for (int i = 0; i < 20; i++) {
        struct mx_msgid id;
        mx_msgid_next(&id);
        struct store_append_req req = { .user = USER, .mailbox = "INBOX", .body = MSG,
                                        .body_len = strlen(MSG), .msgid = &id, .create = true,
                                        .quota_count = i < 15 ? 0 : 16 };
        struct store_result res;
        assert_int_equal(store_append(b, &req, &res), 0);
        if (i < 16) {
            assert_int_equal(res.status, MX_STATUS_OK);
            assert_true(res.uid > last);
            last = res.uid;
        } else {
            /* over the count quota: refused, the batch goes on */
            assert_int_equal(res.status, MX_STATUS_OVER_QUOTA);
        }
    }
    assert_int_equal(store_batch_commit(&b, &error), 0);
    assert_int_equal(count_files(fx->root, ""), 16);
    assert_int_equal(mailbox(fx->st, "INBOX").messages, 16);
    /* INBOX + Drafts/Sent/Trash/Junk + 16 appends */
    assert_int_equal(oplog_check(fx->st), 21);
    assert_string_equal(mailbox(fx->st, "Sent").special_use, "\\Sent");
    assert_string_equal(mailbox(fx->st, "Junk").special_use, "\\Junk");
}

static void test_flags_unchangedsince_expunge(void **state)
{
    struct fx *fx = *state;
    struct store_result r;
    for (int i = 0; i < 3; i++)
        assert_int_equal(append1(fx->st, "INBOX", NULL, 0, &r), MX_STATUS_OK);
    struct store_mailbox mb = mailbox(fx->st, "INBOX");
    struct store_batch *b;
    char *error = NULL;
    uint32_t *mod = NULL, *gone = NULL;
    size_t n_mod = 0, n_gone = 0;
    uint32_t uids[] = { 1, 2, 3 };
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    /* wrong UIDVALIDITY is refused */
    assert_int_equal(store_flags_store(b, USER, "INBOX", mb.uidvalidity + 1, uids, 3, STORE_FLAGS_ADD,
                                       STORE_FLAG_SEEN, NULL, 0, &mod, &n_mod, &r), 0);
    assert_int_equal(r.status, MX_STATUS_UIDVALIDITY);
    assert_int_equal(store_flags_store(b, USER, "INBOX", mb.uidvalidity, uids, 1, STORE_FLAGS_ADD,
                                       STORE_FLAG_SEEN | STORE_FLAG_DELETED, "$Junk", 0, &mod, &n_mod, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    uint64_t after_first = r.modseq;
    /* UNCHANGEDSINCE older than message 1's modseq: 1 is reported, 2 and 3 stored */
    assert_int_equal(store_flags_store(b, USER, "INBOX", mb.uidvalidity, uids, 3, STORE_FLAGS_ADD,
                                       STORE_FLAG_DELETED, NULL, after_first - 1, &mod, &n_mod, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(n_mod, 1);
    assert_int_equal(mod[0], 1);
    free(mod);
    /* expunge only UID 1 and 3 of the \Deleted ones */
    uint32_t some[] = { 3, 1 };
    assert_int_equal(store_expunge(b, USER, "INBOX", mb.uidvalidity, some, 2, &gone, &n_gone, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(n_gone, 2);
    free(gone);
    assert_int_equal(store_batch_commit(&b, &error), 0);
    mb = mailbox(fx->st, "INBOX");
    assert_int_equal(mb.messages, 1);
    assert_int_equal(mb.unseen, 1);
    assert_int_equal(count_files(fx->root, ""), 1);
    MDB_txn *txn;
    struct store_message m;
    assert_int_equal(mdb_txn_begin(store_env(fx->st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_message_get(fx->st, txn, mb.id, 1, &m), 0);
    assert_true(m.expunged);
    assert_int_equal(store_message_get(fx->st, txn, mb.id, 2, &m), 0);
    assert_false(m.expunged);
    assert_int_equal(m.flags, STORE_FLAG_DELETED);
    mdb_txn_abort(txn);
    /* a new append never reuses an expunged UID */
    assert_int_equal(append1(fx->st, "INBOX", NULL, 0, &r), MX_STATUS_OK);
    assert_int_equal(r.uid, 4);
    oplog_check(fx->st);
}

static void test_quota_nothing_partial(void **state)
{
    struct fx *fx = *state;
    struct store_result r;
    assert_int_equal(append1(fx->st, "INBOX", NULL, 150, &r), MX_STATUS_OK);
    assert_int_equal(append1(fx->st, "INBOX", NULL, 150, &r), MX_STATUS_OVER_QUOTA);
    assert_int_equal(count_files(fx->root, ""), 1);
    assert_int_equal(mailbox(fx->st, "INBOX").messages, 1);
}

static void test_hostile_names(void **state)
{
    struct fx *fx = *state;
    static const char *const bad_boxes[] = { "..", "a/../b", "../x", "a//b", "/etc", ".hidden",
                                             "a\x01z", "x\\y", "" };
    struct store_result r;
    for (size_t i = 0; i < sizeof bad_boxes / sizeof bad_boxes[0]; i++)
        assert_int_equal(append1(fx->st, bad_boxes[i], NULL, 0, &r), MX_STATUS_PERMFAIL);
    static const char *const bad_users[] = { "nobody", "../x@example.test", "a@../..",
                                             "a/b@example.test", ".a@example.test", "@example.test",
                                             "a@", "a\n@example.test" };
    for (size_t i = 0; i < sizeof bad_users / sizeof bad_users[0]; i++) {
        struct store_batch *b;
        char *error = NULL;
        assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
        struct store_append_req req = { .user = bad_users[i], .mailbox = "INBOX", .body = MSG,
                                        .body_len = strlen(MSG), .create = true };
        assert_int_equal(store_append(b, &req, &r), 0);
        assert_int_equal(r.status, MX_STATUS_PERMFAIL);
        store_batch_abort(&b);
    }
    /* nothing was created next to the root */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", fx->root); /* only .index (no mailbox was created) */
    assert_int_equal(system(cmd), 0);
    assert_int_equal(oplog_check(fx->st), 0);
}

static void test_crash_orphan_recovery(void **state)
{
    struct fx *fx = *state;
    struct store_result r;
    struct mx_msgid a, lost;
    mx_msgid_next(&a);
    mx_msgid_next(&lost);
    assert_int_equal(append1(fx->st, "INBOX", &a, 0, &r), MX_STATUS_OK);
    /* the crash: the file was written and fsynced, the txn never committed */
    struct store_batch *b;
    char *error = NULL;
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    struct store_append_req req = { .user = USER, .mailbox = "INBOX", .body = MSG,
                                    .body_len = strlen(MSG), .msgid = &lost, .create = true };
    assert_int_equal(store_append(b, &req, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    store_batch_abort(&b);
    assert_int_equal(count_files(fx->root, ""), 2);
    assert_int_equal(mailbox(fx->st, "INBOX").messages, 1);
    size_t ops = oplog_check(fx->st);

    /* restart */
    store_close(&fx->st);
    assert_int_equal(store_open(fx->root, 64u << 20, &fx->st, &error), 0);
    struct store_recover_stats stats;
    assert_int_equal(store_recover(fx->st, &stats, &error), 0);
    assert_int_equal(stats.orphans_indexed, 1);
    assert_int_equal(stats.missing_expunged, 0);
    struct store_mailbox mb = mailbox(fx->st, "INBOX");
    assert_int_equal(mb.messages, 2);
    assert_int_equal(oplog_check(fx->st), ops + 1);
    /* the sender's retry is now a duplicate of the recovered UID 2 */
    assert_int_equal(append1(fx->st, "INBOX", &lost, 0, &r), MX_STATUS_DUPLICATE);
    assert_int_equal(r.uid, 2);
    assert_int_equal(count_files(fx->root, ""), 2);
    /* recovery again is a no-op */
    assert_int_equal(store_recover(fx->st, &stats, &error), 0);
    assert_int_equal(stats.orphans_indexed + stats.missing_expunged, 0);

    /* a file removed behind the index's back is marked expunged */
    MDB_txn *txn;
    struct store_message m;
    assert_int_equal(mdb_txn_begin(store_env(fx->st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_message_get(fx->st, txn, mb.id, 1, &m), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/example.test/alice/%s/%s", fx->root,
             m.subdir == MAILDIR_CUR ? "cur" : "new", m.file);
    mdb_txn_abort(txn);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(store_recover(fx->st, &stats, &error), 0);
    assert_int_equal(stats.missing_expunged, 1);
    assert_int_equal(mailbox(fx->st, "INBOX").messages, 1);
    oplog_check(fx->st);
}

static void test_mailbox_ops(void **state)
{
    struct fx *fx = *state;
    struct store_batch *b;
    char *error = NULL;
    struct store_result r;
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    assert_int_equal(store_mailbox_create(b, USER, "Sent", "\\Sent", &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(store_mailbox_create(b, USER, "Sent", NULL, &r), 0);
    assert_int_equal(r.status, MX_STATUS_EXISTS);
    assert_int_equal(store_mailbox_subscribe(b, USER, "Sent", false, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(store_mailbox_delete(b, USER, "INBOX", &r), 0);
    assert_int_equal(r.status, MX_STATUS_PERMFAIL);
    assert_int_equal(store_mailbox_delete(b, USER, "Nope", &r), 0);
    assert_int_equal(r.status, MX_STATUS_NOT_FOUND);
    assert_int_equal(store_batch_commit(&b, &error), 0);
    assert_false(mailbox(fx->st, "Sent").subscribed);
    assert_string_equal(mailbox(fx->st, "Sent").special_use, "\\Sent");
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    assert_int_equal(store_mailbox_delete(b, USER, "Sent", &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(store_batch_commit(&b, &error), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/example.test/alice/.Sent", fx->root);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(oplog_check(fx->st), 3);
}

static void test_flag_parse(void **state)
{
    (void)state;
    uint32_t bit;
    assert_int_equal(store_flag_parse("\\seen", &bit), 0);
    assert_int_equal(bit, STORE_FLAG_SEEN);
    assert_int_equal(store_flag_parse("$Junk", &bit), 0);
    assert_int_equal(bit, 0);
    assert_int_equal(store_flag_parse("\\Recent", &bit), -1);
    assert_int_equal(store_flag_parse("a b", &bit), -1);
    assert_int_equal(store_flag_parse("a(", &bit), -1);
    assert_int_equal(store_flag_parse("", &bit), -1);
    assert_int_equal(store_flags_from_maildir(store_flags_to_maildir(STORE_FLAG_ALL)), STORE_FLAG_ALL);
}

static void test_reindex_lost_index(void **state)
{
    struct fx *fx = *state;
    struct store_result r;
    struct mx_msgid a, b;
    mx_msgid_next(&a);
    mx_msgid_next(&b);
    assert_int_equal(append1(fx->st, "INBOX", &a, 0, &r), MX_STATUS_OK);
    assert_int_equal(append1(fx->st, "Work", &b, 0, &r), MX_STATUS_OK);
    uint32_t old_uv = r.uidvalidity;
    /* the index is lost entirely */
    store_close(&fx->st);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s/.index", fx->root);
    assert_int_equal(system(cmd), 0);
    char *error = NULL;
    assert_int_equal(store_open(fx->root, 64u << 20, &fx->st, &error), 0);
    struct store_recover_stats stats;
    assert_int_equal(store_recover_user(fx->st, "../x@example.test", &stats, &error), -1);
    free(error);
    error = NULL;
    assert_int_equal(store_recover_user(fx->st, USER, &stats, &error), 0);
    assert_int_equal(stats.mailboxes_adopted, 2);
    assert_int_equal(stats.orphans_indexed, 2);
    assert_int_equal(mailbox(fx->st, "INBOX").messages, 1);
    struct store_mailbox work = mailbox(fx->st, "Work");
    assert_int_equal(work.messages, 1);
    assert_true(work.uidvalidity > old_uv); /* UIDs could not be kept: a new, higher one */
    /* dedup ids came back from the X= fields */
    assert_int_equal(append1(fx->st, "Work", &b, 0, &r), MX_STATUS_DUPLICATE);
    assert_int_equal(r.uid, 1);
    /* a second reindex changes nothing */
    assert_int_equal(store_recover_user(fx->st, USER, &stats, &error), 0);
    assert_int_equal(stats.mailboxes_adopted + stats.orphans_indexed + stats.missing_expunged, 0);
    oplog_check(fx->st);
}

static void test_rename(void **state)
{
    struct fx *fx = *state;
    struct store_result r;
    assert_int_equal(append1(fx->st, "A/B", NULL, 0, &r), MX_STATUS_OK);
    uint32_t uv = r.uidvalidity;
    assert_int_equal(append1(fx->st, "A", NULL, 0, &r), MX_STATUS_OK);
    assert_int_equal(append1(fx->st, "D", NULL, 0, &r), MX_STATUS_OK);
    struct store_batch *b;
    char *error = NULL;
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    assert_int_equal(store_mailbox_rename(b, USER, "A", "D", &r), 0);
    assert_int_equal(r.status, MX_STATUS_EXISTS);
    assert_int_equal(store_mailbox_rename(b, USER, "INBOX", "X", &r), 0);
    assert_int_equal(r.status, MX_STATUS_PERMFAIL);
    assert_int_equal(store_mailbox_rename(b, USER, "A", "A/B/C", &r), 0);
    assert_int_equal(r.status, MX_STATUS_PERMFAIL);
    assert_int_equal(store_mailbox_rename(b, USER, "Nope", "X", &r), 0);
    assert_int_equal(r.status, MX_STATUS_NOT_FOUND);
    assert_int_equal(store_mailbox_rename(b, USER, "A", "C", &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(store_batch_commit(&b, &error), 0);
    struct store_mailbox cb = mailbox(fx->st, "C/B");
    assert_int_equal(cb.uidvalidity, uv);
    assert_int_equal(cb.messages, 1);
    assert_int_equal(count_files(fx->root, ".C.B/"), 1);
    assert_int_equal(count_files(fx->root, ".A.B/"), 0);
    MDB_txn *txn;
    struct store_mailbox gone;
    assert_int_equal(mdb_txn_begin(store_env(fx->st), NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(store_mailbox_get(fx->st, txn, USER, "A/B", &gone), 1);
    mdb_txn_abort(txn);
    /* appends keep working under the new name, UIDs continue */
    assert_int_equal(append1(fx->st, "C/B", NULL, 0, &r), MX_STATUS_OK);
    assert_int_equal(r.uid, 2);
    oplog_check(fx->st);
}

static void test_copy_move(void **state)
{
    struct fx *fx = *state;
    struct store_result r;
    struct mx_msgid a;
    mx_msgid_next(&a);
    assert_int_equal(append1(fx->st, "INBOX", &a, 0, &r), MX_STATUS_OK);
    assert_int_equal(append1(fx->st, "INBOX", NULL, 0, &r), MX_STATUS_OK);
    assert_int_equal(append1(fx->st, "Archive", NULL, 0, &r), MX_STATUS_OK);
    struct store_mailbox in = mailbox(fx->st, "INBOX");
    struct store_batch *b;
    char *error = NULL;
    uint32_t *src, *dst, uids[] = { 1, 2 };
    size_t n;
    assert_int_equal(store_batch_begin(fx->st, &b, &error), 0);
    assert_int_equal(store_copy(b, USER, "INBOX", in.uidvalidity, uids, 2, "Nope", false, &src, &dst, &n, &r), 0);
    assert_int_equal(r.status, MX_STATUS_NOT_FOUND);
    assert_int_equal(store_copy(b, USER, "INBOX", in.uidvalidity, uids, 1, "Archive", false, &src, &dst, &n, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(dst[0], 2);
    free(src);
    free(dst);
    assert_int_equal(store_copy(b, USER, "INBOX", in.uidvalidity, uids, 2, "Archive", true, &src, &dst, &n, &r), 0);
    assert_int_equal(r.status, MX_STATUS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(src[0], 1);
    assert_int_equal(dst[1], 4);
    free(src);
    free(dst);
    assert_int_equal(store_batch_commit(&b, &error), 0);
    assert_int_equal(mailbox(fx->st, "INBOX").messages, 0);
    assert_int_equal(mailbox(fx->st, "Archive").messages, 4);
    assert_int_equal(count_files(fx->root, ""), 0);
    assert_int_equal(count_files(fx->root, ".Archive/"), 4);
    /* a restart finds index and Maildir in agreement */
    struct store_recover_stats stats;
    assert_int_equal(store_recover(fx->st, &stats, &error), 0);
    assert_int_equal(stats.orphans_indexed + stats.missing_expunged + stats.duplicates_skipped, 0);
    oplog_check(fx->st);
}

int main(void)
{
    mx_msgid_init(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_uids_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags_unchangedsince_expunge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_nothing_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_orphan_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reindex_lost_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_move, setup, teardown),
        cmocka_unit_test(test_flag_parse),
    };
    return cmocka_run_group_tests_name("store_index", tests, NULL, NULL);
}
