/* store_index - the LMDB operation log + index and the operations that
 * change them together with the Maildir. See store.h for the invariants. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mailbox_name.h"
#include "maildirsize.h"
#include "mime_cache.h"
#include "mx_alloc.h"
#include "mx_log.h"

struct store {
    char *root;
    MDB_env *env;
    MDB_dbi oplog, mailboxes, messages, dedup, meta;
    uint64_t oplog_keep;         /* set before the first batch */
    _Atomic uint64_t oplog_floor; /* store_oplog_set_floor: set on the loop, read by the writer */
};

/* ---- explicit record encoding ----------------------------------------- */

struct sbuf {
    uint8_t *data;
    size_t len, cap;
};

static void sb_put(struct sbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->data = mx_realloc(b->data, b->cap);
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}
static void sb_u8(struct sbuf *b, uint8_t v) { sb_put(b, &v, 1); }
static void sb_u32(struct sbuf *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    sb_put(b, x, 4);
}
static void sb_u64(struct sbuf *b, uint64_t v)
{
    sb_u32(b, (uint32_t)(v >> 32));
    sb_u32(b, (uint32_t)v);
}
static void sb_bytes(struct sbuf *b, const void *p, size_t n)
{
    sb_u32(b, (uint32_t)n);
    sb_put(b, p, n);
}
static void sb_str(struct sbuf *b, const char *s) { sb_bytes(b, s ? s : "", s ? strlen(s) : 0); }

struct srd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
};
static const uint8_t *rd_take(struct srd *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}
static uint8_t rd_u8(struct srd *r)
{
    const uint8_t *p = rd_take(r, 1);
    return p ? p[0] : 0;
}
static uint32_t rd_u32(struct srd *r)
{
    const uint8_t *p = rd_take(r, 4);
    return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}
static uint64_t rd_u64(struct srd *r)
{
    uint64_t hi = rd_u32(r);
    return hi << 32 | rd_u32(r);
}
static const uint8_t *rd_bytes(struct srd *r, size_t *len_r)
{
    *len_r = rd_u32(r);
    return rd_take(r, *len_r);
}
/* rd_str - a string into buf; too long or containing NUL marks bad. */
static void rd_str(struct srd *r, char *buf, size_t size)
{
    size_t n;
    const uint8_t *p = rd_bytes(r, &n);
    if (p == NULL || n >= size || memchr(p, 0, n)) {
        r->bad = true;
        buf[0] = '\0';
        return;
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static void be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void mailbox_encode(const struct store_mailbox *mb, struct sbuf *b)
{
    sb_u8(b, STORE_FORMAT_VERSION);
    sb_u64(b, mb->id);
    sb_u32(b, mb->uidvalidity);
    sb_u32(b, mb->uidnext);
    sb_u64(b, mb->highestmodseq);
    sb_u32(b, mb->messages);
    sb_u32(b, mb->unseen);
    sb_u64(b, mb->bytes);
    sb_u8(b, mb->subscribed);
    sb_str(b, mb->special_use);
}
static int mailbox_decode(const void *p, size_t len, struct store_mailbox *mb)
{
    struct srd r = { p, len, 0, false };
    memset(mb, 0, sizeof *mb);
    if (rd_u8(&r) != STORE_FORMAT_VERSION)
        return -1;
    mb->id = rd_u64(&r);
    mb->uidvalidity = rd_u32(&r);
    mb->uidnext = rd_u32(&r);
    mb->highestmodseq = rd_u64(&r);
    mb->messages = rd_u32(&r);
    mb->unseen = rd_u32(&r);
    mb->bytes = rd_u64(&r);
    mb->subscribed = rd_u8(&r) != 0;
    rd_str(&r, mb->special_use, sizeof mb->special_use);
    return r.bad ? -1 : 0;
}

static void message_encode(const struct store_message *m, struct sbuf *b)
{
    sb_u8(b, STORE_FORMAT_VERSION);
    sb_u32(b, m->flags);
    sb_str(b, m->keywords);
    sb_u64(b, m->modseq);
    sb_u64(b, m->internaldate);
    sb_u64(b, m->size);
    sb_put(b, m->msgid.bytes, MX_MSGID_SIZE);
    sb_u8(b, m->expunged);
    sb_u8(b, (uint8_t)m->subdir);
    sb_str(b, m->file);
    sb_bytes(b, m->mime, m->mime_len);
}
static int message_decode(const void *p, size_t len, struct store_message *m)
{
    struct srd r = { p, len, 0, false };
    if (rd_u8(&r) != STORE_FORMAT_VERSION)
        return -1;
    m->flags = rd_u32(&r);
    rd_str(&r, m->keywords, sizeof m->keywords);
    m->modseq = rd_u64(&r);
    m->internaldate = rd_u64(&r);
    m->size = rd_u64(&r);
    const uint8_t *id = rd_take(&r, MX_MSGID_SIZE);
    if (id)
        memcpy(m->msgid.bytes, id, MX_MSGID_SIZE);
    m->expunged = rd_u8(&r) != 0;
    m->subdir = rd_u8(&r) ? MAILDIR_CUR : MAILDIR_NEW;
    rd_str(&r, m->file, sizeof m->file);
    m->mime = rd_bytes(&r, &m->mime_len);
    return r.bad ? -1 : 0;
}

/* ---- open / close ------------------------------------------------------ */

const char *store_root(const struct store *st) { return st->root; }
MDB_env *store_env(struct store *st) { return st->env; }
MDB_dbi store_dbi_mailboxes(const struct store *st) { return st->mailboxes; }

int store_open(const char *root, size_t map_size, struct store **st_r, char **error_r)
{
    *st_r = NULL;
    char *dir = mx_asprintf("%s/.index", root);
    if ((mkdir(root, 0700) < 0 && errno != EEXIST) || (mkdir(dir, 0700) < 0 && errno != EEXIST)) {
        *error_r = mx_asprintf("store: cannot create %s: %s", dir, strerror(errno));
        free(dir);
        return -1;
    }
    struct store *st = mx_calloc(1, sizeof *st);
    st->root = mx_strdup(root);
    st->oplog_keep = STORE_OPLOG_KEEP_DEFAULT;
    atomic_init(&st->oplog_floor, UINT64_MAX);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, 8);
    if (rc == 0)
        rc = mdb_env_set_mapsize(st->env, map_size);
    if (rc == 0)
        rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "oplog", MDB_CREATE, &st->oplog);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "mailboxes", MDB_CREATE, &st->mailboxes);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "messages", MDB_CREATE, &st->messages);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "dedup", MDB_CREATE, &st->dedup);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta);
    if (rc == 0) {
        MDB_val k = { 7, "version" }, v;
        int g = mdb_get(txn, st->meta, &k, &v);
        if (g == MDB_NOTFOUND) {
            uint8_t ver[4];
            be32(ver, STORE_FORMAT_VERSION);
            v = (MDB_val){ 4, ver };
            rc = mdb_put(txn, st->meta, &k, &v, 0);
        } else if (g != 0) {
            rc = g;
        } else if (v.mv_size != 4 || get_be32(v.mv_data) != STORE_FORMAT_VERSION) {
            *error_r = mx_asprintf("store: index %s has an unknown format version", dir);
            mdb_txn_abort(txn);
            goto fail;
        }
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (rc != 0) {
        if (txn)
            mdb_txn_abort(txn);
        *error_r = mx_asprintf("store: index %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    free(dir);
    *st_r = st;
    return 0;
fail:
    free(dir);
    store_close(&st);
    return -1;
}

void store_close(struct store **stp)
{
    struct store *st = *stp;
    if (st == NULL)
        return;
    if (st->env)
        mdb_env_close(st->env);
    free(st->root);
    free(st);
    *stp = NULL;
}

/* ---- users ------------------------------------------------------------- */

static bool user_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 255 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return false;
    }
    return true;
}

int store_user_dir(const struct store *st, const char *user, char **dir_r, const char **error_r)
{
    const char *at = user ? strrchr(user, '@') : NULL;
    if (at == NULL) {
        *error_r = "user is not local@domain";
        return -1;
    }
    size_t local_len = (size_t)(at - user), domain_len = strlen(at + 1);
    if (!user_part_ok(user, local_len) || !user_part_ok(at + 1, domain_len)) {
        *error_r = "user name has '/', a leading '.', control characters or an empty part";
        return -1;
    }
    char *domain = mx_strdup(at + 1);
    for (char *p = domain; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    *dir_r = mx_asprintf("%s/%s/%.*s", st->root, domain, (int)local_len, user);
    free(domain);
    return 0;
}

/* ---- flags ------------------------------------------------------------- */

uint32_t store_flags_from_maildir(uint64_t l)
{
    return (l & MAILDIR_FLAG_SEEN ? STORE_FLAG_SEEN : 0) |
           (l & MAILDIR_FLAG_REPLIED ? STORE_FLAG_ANSWERED : 0) |
           (l & MAILDIR_FLAG_FLAGGED ? STORE_FLAG_FLAGGED : 0) |
           (l & MAILDIR_FLAG_TRASHED ? STORE_FLAG_DELETED : 0) |
           (l & MAILDIR_FLAG_DRAFT ? STORE_FLAG_DRAFT : 0);
}
uint64_t store_flags_to_maildir(uint32_t f)
{
    return (f & STORE_FLAG_SEEN ? MAILDIR_FLAG_SEEN : 0) |
           (f & STORE_FLAG_ANSWERED ? MAILDIR_FLAG_REPLIED : 0) |
           (f & STORE_FLAG_FLAGGED ? MAILDIR_FLAG_FLAGGED : 0) |
           (f & STORE_FLAG_DELETED ? MAILDIR_FLAG_TRASHED : 0) |
           (f & STORE_FLAG_DRAFT ? MAILDIR_FLAG_DRAFT : 0);
}

int store_flag_parse(const char *flag, uint32_t *bit_r)
{
    static const struct { const char *name; uint32_t bit; } sys[] = {
        { "\\Seen", STORE_FLAG_SEEN },         { "\\Answered", STORE_FLAG_ANSWERED },
        { "\\Flagged", STORE_FLAG_FLAGGED },   { "\\Deleted", STORE_FLAG_DELETED },
        { "\\Draft", STORE_FLAG_DRAFT },
    };
    if (flag == NULL || flag[0] == '\0' || strlen(flag) > 128)
        return -1;
    if (flag[0] == '\\') {
        for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++)
            if (strcasecmp(flag, sys[i].name) == 0) {
                *bit_r = sys[i].bit;
                return 0;
            }
        return -1; /* \Recent and unknown system flags cannot be stored */
    }
    /* A keyword is an IMAP atom (RFC 3501 atom-char minus ']'). */
    for (const char *p = flag; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c))
            return -1;
    }
    *bit_r = 0;
    return 0;
}

/* kw_has - keyword set (space-separated) contains kw (case-insensitive). */
static bool kw_has(const char *set, const char *kw, size_t kwlen)
{
    for (const char *p = set; *p;) {
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == kwlen && strncasecmp(p, kw, n) == 0)
            return true;
        p += n + (e ? 1 : 0);
    }
    return false;
}

/* kw_apply - the keyword set after applying mode with kws to cur, into
 * out; -1 if it would not fit. */
static int kw_apply(const char *cur, enum store_flag_mode mode, const char *kws, char *out,
                    size_t size)
{
    char buf[2 * STORE_KEYWORDS_MAX + 2];
    size_t len = 0;
    buf[0] = '\0';
    const char *src[2] = { mode == STORE_FLAGS_REPLACE ? "" : cur,
                           mode == STORE_FLAGS_REMOVE ? "" : kws };
    for (int s = 0; s < 2; s++) {
        for (const char *p = src[s] ? src[s] : ""; *p;) {
            const char *e = strchr(p, ' ');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            bool drop = mode == STORE_FLAGS_REMOVE && s == 0 && kws && kw_has(kws, p, n);
            if (n && !drop && !kw_has(buf, p, n)) {
                if (len + n + 2 > sizeof buf)
                    return -1;
                if (len)
                    buf[len++] = ' ';
                memcpy(buf + len, p, n);
                len += n;
                buf[len] = '\0';
            }
            p += n + (e ? 1 : 0);
        }
    }
    if (len >= size)
        return -1;
    memcpy(out, buf, len + 1);
    return 0;
}

/* ---- reads ------------------------------------------------------------- */

static MDB_val mailbox_key(const char *user, const char *name, char **buf_r)
{
    size_t ul = strlen(user), nl = strlen(name);
    char *k = mx_malloc(ul + 1 + nl);
    memcpy(k, user, ul);
    k[ul] = '\0';
    memcpy(k + ul + 1, name, nl);
    *buf_r = k;
    return (MDB_val){ ul + 1 + nl, k };
}

int store_mailbox_get(struct store *st, MDB_txn *txn, const char *user, const char *name,
                      struct store_mailbox *mb_r)
{
    char *kb;
    MDB_val k = mailbox_key(user, name, &kb), v;
    int rc = mdb_get(txn, st->mailboxes, &k, &v);
    free(kb);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0 || mailbox_decode(v.mv_data, v.mv_size, mb_r) < 0) {
        mx_log(MX_LOG_ERR, "store.index_corrupt", MX_KV("user", user), MX_KV("mailbox", name),
               MX_KV("error", rc ? mdb_strerror(rc) : "bad mailbox record"));
        return -1;
    }
    return 0;
}

int store_message_get(struct store *st, MDB_txn *txn, uint64_t mailbox_id, uint32_t uid,
                      struct store_message *msg_r)
{
    uint8_t kb[12];
    be64(kb, mailbox_id);
    be32(kb + 8, uid);
    MDB_val k = { 12, kb }, v;
    int rc = mdb_get(txn, st->messages, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 1;
    memset(msg_r, 0, sizeof *msg_r);
    msg_r->uid = uid;
    if (rc != 0 || message_decode(v.mv_data, v.mv_size, msg_r) < 0)
        return -1;
    return 0;
}

int store_message_foreach(struct store *st, MDB_txn *txn, uint64_t mailbox_id,
                          store_message_fn *fn, void *ctx)
{
    MDB_cursor *c;
    if (mdb_cursor_open(txn, st->messages, &c) != 0)
        return -1;
    uint8_t kb[12];
    be64(kb, mailbox_id);
    be32(kb + 8, 0);
    MDB_val k = { 12, kb }, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE), ret = 0;
    while (rc == 0 && k.mv_size == 12 && get_be64(k.mv_data) == mailbox_id) {
        struct store_message m;
        memset(&m, 0, sizeof m);
        m.uid = get_be32((const uint8_t *)k.mv_data + 8);
        if (message_decode(v.mv_data, v.mv_size, &m) < 0) {
            ret = -1;
            break;
        }
        if (fn(ctx, &m) != 0)
            break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = -1;
    mdb_cursor_close(c);
    return ret;
}

int store_oplog_foreach(struct store *st, MDB_txn *txn, uint64_t from_seq, store_oplog_fn *fn,
                        void *ctx)
{
    MDB_cursor *c;
    if (mdb_cursor_open(txn, st->oplog, &c) != 0)
        return -1;
    uint8_t kb[8];
    be64(kb, from_seq);
    MDB_val k = { 8, kb }, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size != 8 || fn(ctx, get_be64(k.mv_data), v.mv_data, v.mv_size) != 0)
            break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : -1;
}

int store_oplog_type(const uint8_t *rec, size_t len)
{
    if (len < 2 || rec[0] != STORE_OP_VERSION || rec[1] < STORE_OP_APPEND ||
        rec[1] > STORE_OP_SUBSCRIPTION)
        return -1;
    return rec[1];
}

/* ---- batches and ops --------------------------------------------------- */

struct batch_folder {
    char *user, *name;
    struct maildir *md;
    struct maildir_folder *folder;
    bool dirty;
};

struct store_batch {
    struct store *st;
    MDB_txn *txn;
    MDB_txn *op;      /* the nested transaction of the running op */
    uint64_t seq, op_seq;
    struct batch_folder *folders;
    size_t n_folders;
    bool syncfs_before_commit; /* a snapshot chunk wrote files without fsync */
};

static int meta_get_u64(struct store_batch *b, MDB_txn *txn, const char *key, uint64_t *v_r)
{
    MDB_val k = { strlen(key), (void *)key }, v;
    int rc = mdb_get(txn, b->st->meta, &k, &v);
    *v_r = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0 || v.mv_size != 8)
        return -1;
    *v_r = get_be64(v.mv_data);
    return 0;
}
static int meta_put_u64(struct store_batch *b, const char *key, uint64_t value)
{
    uint8_t x[8];
    be64(x, value);
    MDB_val k = { strlen(key), (void *)key }, v = { 8, x };
    return mdb_put(b->op, b->st->meta, &k, &v, 0);
}

int store_batch_begin(struct store *st, struct store_batch **batch_r, char **error_r)
{
    struct store_batch *b = mx_calloc(1, sizeof *b);
    b->st = st;
    int rc = mdb_txn_begin(st->env, NULL, 0, &b->txn);
    if (rc != 0 || meta_get_u64(b, b->txn, "seq", &b->seq) < 0) {
        *error_r = mx_asprintf("store: begin write transaction: %s", rc ? mdb_strerror(rc) : "bad seq");
        store_batch_abort(&b);
        return -1;
    }
    *batch_r = b;
    return 0;
}

uint64_t store_batch_last_seq(const struct store_batch *b) { return b->seq; }
MDB_txn *store_batch_txn(struct store_batch *b) { return b->txn; }

static void batch_folders_free(struct store_batch *b)
{
    for (size_t i = 0; i < b->n_folders; i++) {
        maildir_folder_close(&b->folders[i].folder);
        maildir_close(&b->folders[i].md);
        free(b->folders[i].user);
        free(b->folders[i].name);
    }
    free(b->folders);
    b->folders = NULL;
    b->n_folders = 0;
}

void store_batch_abort(struct store_batch **bp)
{
    struct store_batch *b = *bp;
    if (b == NULL)
        return;
    if (b->op)
        mdb_txn_abort(b->op);
    if (b->txn)
        mdb_txn_abort(b->txn);
    batch_folders_free(b);
    free(b);
    *bp = NULL;
}

/* ---- trimming the operation log ----------------------------------------- */

void store_oplog_set_keep(struct store *st, uint64_t keep)
{
    st->oplog_keep = keep < STORE_OPLOG_KEEP_MIN ? STORE_OPLOG_KEEP_MIN : keep;
}

void store_oplog_set_floor(struct store *st, uint64_t seq) { atomic_store(&st->oplog_floor, seq); }

uint64_t store_oplog_trim_target(uint64_t last, uint64_t keep, uint64_t floor)
{
    uint64_t keep_from = last >= keep ? last - keep + 1 : 1;
    uint64_t cap = keep * STORE_OPLOG_KEEP_FOR_REPLICAS;
    uint64_t cap_from = last >= cap ? last - cap + 1 : 1;
    uint64_t target = floor < keep_from ? floor : keep_from;
    if (target < cap_from)
        target = cap_from;
    return target ? target : 1;
}

/* oplog_trim - delete up to STORE_OPLOG_TRIM_STEP of the oldest records
 * the policy lets go, and advance meta "oplog_first", in a nested
 * transaction of the batch: a failure here costs the trim, never the
 * batch's writes. Runs in every committing batch, so the log never grows
 * much past what it keeps (a batch adds at most store.max_batch ops' worth
 * of records, and removes up to STORE_OPLOG_TRIM_STEP). */
static void oplog_trim(struct store_batch *b)
{
    struct store *st = b->st;
    if (b->seq == 0 || b->txn == NULL)
        return;
    uint64_t target = store_oplog_trim_target(b->seq, st->oplog_keep, atomic_load(&st->oplog_floor));
    uint64_t first;
    if (meta_get_u64(b, b->txn, "oplog_first", &first) < 0 || (first ? first : 1) >= target)
        return;
    MDB_txn *t;
    MDB_cursor *c = NULL;
    int rc = mdb_txn_begin(st->env, b->txn, 0, &t);
    if (rc != 0)
        goto fail_nested;
    rc = mdb_cursor_open(t, st->oplog, &c);
    uint64_t next = target;
    size_t deleted = 0;
    MDB_val k, v;
    for (int op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        rc = mdb_cursor_get(c, &k, &v, (MDB_cursor_op)op);
        if (rc != 0)
            break;
        uint64_t seq = k.mv_size == 8 ? get_be64(k.mv_data) : 0;
        if (seq >= target || deleted == STORE_OPLOG_TRIM_STEP) {
            next = seq < target ? seq : target;
            break;
        }
        rc = mdb_cursor_del(c, 0);
        deleted++;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (c)
        mdb_cursor_close(c);
    if (rc == 0) {
        uint8_t x[8];
        be64(x, next);
        MDB_val mk = { 11, "oplog_first" }, mv = { 8, x };
        rc = mdb_put(t, st->meta, &mk, &mv, 0);
    }
    if (rc == 0)
        rc = mdb_txn_commit(t);
    else
        mdb_txn_abort(t);
    if (rc == 0)
        return;
fail_nested:
    mx_log(MX_LOG_ERR, "store.oplog_trim_failed", MX_KV("root", st->root), MX_KVU("target", target),
           MX_KV("error", mdb_strerror(rc)));
}

/* sync_root_fs - make every file written without its own fsync durable
 * (snapshot chunks: one syncfs instead of thousands of fsyncs). */
static int sync_root_fs(struct store *st, char **error_r)
{
    int fd = open(st->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) != 0) {
        *error_r = mx_asprintf("store: syncfs %s: %s", st->root, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int store_batch_commit(struct store_batch **bp, char **error_r)
{
    struct store_batch *b = *bp;
    int ret = 0;
    oplog_trim(b);
    if (b->syncfs_before_commit && sync_root_fs(b->st, error_r) < 0)
        ret = -1;
    /* The files must be durable before the index says they exist. */
    for (size_t i = 0; i < b->n_folders && ret == 0; i++) {
        const char *err;
        if (b->folders[i].dirty && maildir_folder_fsync(b->folders[i].folder, &err) < 0) {
            *error_r = mx_asprintf("store: fsync %s: %s", b->folders[i].name, err);
            ret = -1;
        }
    }
    if (ret == 0) {
        int rc = mdb_txn_commit(b->txn);
        b->txn = NULL;
        if (rc != 0) {
            *error_r = mx_asprintf("store: index commit: %s", mdb_strerror(rc));
            ret = -1;
        }
    }
    store_batch_abort(bp);
    return ret;
}

/* batch_folder_get - the open folder of user's mailbox name (canonical),
 * opening the user's Maildir (created if create) on first use. */
static struct batch_folder *batch_folder_get(struct store_batch *b, const char *user,
                                             const char *name, bool create, int *errno_r,
                                             const char **error_r)
{
    for (size_t i = 0; i < b->n_folders; i++)
        if (strcmp(b->folders[i].user, user) == 0 && strcmp(b->folders[i].name, name) == 0)
            return &b->folders[i];
    char *dir;
    if (store_user_dir(b->st, user, &dir, error_r) < 0) {
        *errno_r = EINVAL;
        return NULL;
    }
    struct maildir *md = NULL;
    struct maildir_folder *folder = NULL;
    if (create) {
        char *slash = strrchr(dir, '/');
        *slash = '\0';
        (void)mkdir(dir, 0700);
        *slash = '/';
        (void)mkdir(dir, 0700);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int rc = -1;
    if (fd < 0) {
        *errno_r = errno;
        *error_r = "cannot open the user's Maildir";
    } else {
        rc = maildir_open(fd, dir, MAILDIR_OPEN_CREATE, &md, error_r);
        if (rc < 0)
            *errno_r = errno;
        close(fd);
    }
    free(dir);
    if (rc == 0 && maildir_folder_open(md, name, &folder, error_r) < 0) {
        *errno_r = errno;
        if (errno == ENOENT && create && maildir_folder_create(md, name, error_r) == 0 &&
            maildir_folder_open(md, name, &folder, error_r) == 0)
            rc = 0;
        else
            rc = -1;
    }
    if (rc < 0) {
        maildir_close(&md);
        return NULL;
    }
    b->folders = mx_reallocarray(b->folders, b->n_folders + 1, sizeof *b->folders);
    struct batch_folder *f = &b->folders[b->n_folders++];
    *f = (struct batch_folder){ mx_strdup(user), mx_strdup(name), md, folder, false };
    return f;
}

static int op_begin(struct store_batch *b, struct store_result *res)
{
    memset(res, 0, sizeof *res);
    res->status = MX_STATUS_TEMPFAIL;
    b->op_seq = b->seq;
    int rc = mdb_txn_begin(b->st->env, b->txn, 0, &b->op);
    if (rc != 0) {
        mx_log(MX_LOG_ERR, "store.txn_failed", MX_KV("error", mdb_strerror(rc)));
        b->op = NULL;
        res->text = "index transaction failed";
        return -1;
    }
    return 0;
}

/* op_end - keep (nested commit) or drop the op's changes. */
static int op_end(struct store_batch *b, bool keep, struct store_result *res)
{
    int rc = 0;
    if (keep) {
        rc = mdb_txn_commit(b->op);
        if (rc != 0) {
            mx_log(MX_LOG_ERR, "store.txn_failed", MX_KV("error", mdb_strerror(rc)));
            res->status = MX_STATUS_TEMPFAIL;
            res->text = "index update failed";
        }
    } else {
        mdb_txn_abort(b->op);
    }
    b->op = NULL;
    if (!keep || rc != 0)
        b->seq = b->op_seq;
    return rc == 0 ? 0 : -1;
}

/* op_fail - drop the op with status/text; returns 0 (a clean refusal) or
 * -1 for TEMPFAIL. */
static int op_fail(struct store_batch *b, struct store_result *res, enum mx_status status,
                   const char *text)
{
    op_end(b, false, res);
    res->status = status;
    res->text = text;
    return status == MX_STATUS_TEMPFAIL ? -1 : 0;
}

/* oplog_put - header fields common to every record, then the caller's. */
static void oplog_head(struct sbuf *r, enum store_op_type type, const char *user,
                       const char *name, const struct store_mailbox *mb)
{
    sb_u8(r, STORE_OP_VERSION);
    sb_u8(r, (uint8_t)type);
    sb_str(r, user);
    sb_str(r, name);
    sb_u64(r, mb->id);
    sb_u32(r, mb->uidvalidity);
}
static int oplog_put(struct store_batch *b, struct sbuf *r)
{
    uint8_t kb[8];
    be64(kb, b->seq + 1);
    MDB_val k = { 8, kb }, v = { r->len, r->data };
    int rc = mdb_put(b->op, b->st->oplog, &k, &v, MDB_APPEND);
    free(r->data);
    r->data = NULL;
    if (rc == 0)
        rc = meta_put_u64(b, "seq", b->seq + 1);
    if (rc == 0)
        b->seq++;
    return rc;
}

static int mailbox_put(struct store_batch *b, const char *user, const char *name,
                       const struct store_mailbox *mb)
{
    char *kb;
    MDB_val k = mailbox_key(user, name, &kb);
    struct sbuf s = { 0 };
    mailbox_encode(mb, &s);
    MDB_val v = { s.len, s.data };
    int rc = mdb_put(b->op, b->st->mailboxes, &k, &v, 0);
    free(kb);
    free(s.data);
    return rc;
}

static int message_put(struct store_batch *b, uint64_t mailbox_id, const struct store_message *m)
{
    uint8_t kb[12];
    be64(kb, mailbox_id);
    be32(kb + 8, m->uid);
    struct sbuf s = { 0 };
    message_encode(m, &s); /* copies m->mime before the put can move it */
    MDB_val k = { 12, kb }, v = { s.len, s.data };
    int rc = mdb_put(b->op, b->st->messages, &k, &v, 0);
    free(s.data);
    return rc;
}

/* canon - validate + normalise a request's mailbox name. */
static char *canon(const char *name, struct store_result *res)
{
    char *out = NULL;
    const char *err;
    if (name == NULL || mailbox_name_normalize(name, strlen(name), &out, &err) < 0) {
        res->status = MX_STATUS_PERMFAIL;
        res->text = "invalid mailbox name";
        return NULL;
    }
    char *dir = NULL;
    if (mailbox_name_to_dir(out, &dir, &err) < 0) {
        free(out);
        res->status = MX_STATUS_PERMFAIL;
        res->text = "mailbox name too long for the Maildir";
        return NULL;
    }
    free(dir);
    return out;
}

/* uv_file_read / uv_file_write - the UIDVALIDITY high-water mark kept
 * outside the index (see mailbox_new_locked). */
static uint64_t uv_file_read(struct store *st)
{
    char *path = mx_asprintf("%s/.uidvalidity", st->root);
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    free(path);
    return v;
}

static int uv_file_write(struct store *st, uint64_t uv)
{
    char *path = mx_asprintf("%s/.uidvalidity", st->root);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%020llu\n", (unsigned long long)uv);
    int rc = fd >= 0 && pwrite(fd, buf, (size_t)len, 0) == len && fsync(fd) == 0 ? 0 : -1;
    if (rc < 0)
        mx_log(MX_LOG_ERR, "store.uidvalidity_write_failed", MX_KV("file", path), MX_KVERR(errno));
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

static int mailbox_new_locked(struct store_batch *b, const char *user, const char *name,
                              const char *special_use, struct store_mailbox *mb);

/* The RFC 6154 folders every account starts with. Created together with
 * the account's INBOX (first delivery or first login), so mail clients
 * find Drafts/Sent/Trash/Junk by their attribute instead of guessing or
 * creating locale-named duplicates. */
static const struct {
    const char *name;
    const char *special_use;
} default_mailboxes[] = {
    { "Drafts", "\\Drafts" },
    { "Sent", "\\Sent" },
    { "Trash", "\\Trash" },
    { "Junk", "\\Junk" },
};

static int default_mailboxes_create(struct store_batch *b, const char *user)
{
    for (size_t i = 0; i < sizeof default_mailboxes / sizeof default_mailboxes[0]; i++) {
        struct store_mailbox mb;
        int got = store_mailbox_get(b->st, b->op, user, default_mailboxes[i].name, &mb);
        if (got == 0)
            continue; /* an operator or a migration made it already */
        int err = 0;
        const char *error;
        if (got < 0 ||
            batch_folder_get(b, user, default_mailboxes[i].name, true, &err, &error) == NULL ||
            mailbox_new_locked(b, user, default_mailboxes[i].name,
                               default_mailboxes[i].special_use, &mb) < 0) {
            mx_log(MX_LOG_ERR, "store.default_mailbox_failed", MX_KV("user", user),
                   MX_KV("mailbox", default_mailboxes[i].name));
            return -1;
        }
    }
    return 0;
}

/* subscribed_at_create - CREATE does not subscribe (RFC 9051 6.3.4); the
 * folders every account starts with are subscribed so clients show them.
 * A replica applying a MAILBOX_CREATE record derives it the same way. */
static bool subscribed_at_create(const char *name, const char *special_use)
{
    return strcmp(name, MAILBOX_NAME_INBOX) == 0 || (special_use && *special_use);
}

/* Subscriptions of names that are not mailboxes live in meta under
 * "osub:" user NUL name (sorted, so one user's are one key range). */
#define ORPHAN_SUB_PREFIX "osub:"

static MDB_val orphan_sub_key(const char *user, const char *name, char **buf_r)
{
    size_t pl = strlen(ORPHAN_SUB_PREFIX), ul = strlen(user), nl = strlen(name);
    char *buf = mx_malloc(pl + ul + 1 + nl);
    memcpy(buf, ORPHAN_SUB_PREFIX, pl);
    memcpy(buf + pl, user, ul);
    buf[pl + ul] = '\0';
    memcpy(buf + pl + ul + 1, name, nl);
    *buf_r = buf;
    return (MDB_val){ pl + ul + 1 + nl, buf };
}

/* orphan_sub_set - add or remove one; 0, or an LMDB error. */
static int orphan_sub_set(struct store_batch *b, const char *user, const char *name, bool on)
{
    char *kb;
    MDB_val k = orphan_sub_key(user, name, &kb), v = { 1, "1" };
    int rc = on ? mdb_put(b->op, b->st->meta, &k, &v, 0) : mdb_del(b->op, b->st->meta, &k, NULL);
    free(kb);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* orphan_sub_take - true if name was subscribed while it was no mailbox
 * (then the subscription moves onto the mailbox being created). */
static bool orphan_sub_take(struct store_batch *b, const char *user, const char *name)
{
    char *kb;
    MDB_val k = orphan_sub_key(user, name, &kb), v;
    bool had = mdb_get(b->op, b->st->meta, &k, &v) == 0;
    if (had)
        (void)mdb_del(b->op, b->st->meta, &k, NULL);
    free(kb);
    return had;
}

int store_subscriptions_orphan(struct store *st, MDB_txn *txn, const char *user,
                               store_name_fn *fn, void *ctx)
{
    char *kb;
    MDB_val prefix = orphan_sub_key(user, "", &kb);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, st->meta, &c);
    if (rc != 0) {
        free(kb);
        return -1;
    }
    MDB_val k = prefix, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= prefix.mv_size || memcmp(k.mv_data, prefix.mv_data, prefix.mv_size) != 0)
            break;
        char *name = mx_strndup((const char *)k.mv_data + prefix.mv_size, k.mv_size - prefix.mv_size);
        int stop = fn(ctx, name);
        free(name);
        if (stop)
            break;
    }
    mdb_cursor_close(c);
    free(kb);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : -1;
}

/* mailbox_new_locked - index a new mailbox (the folder exists on disk). */
static int mailbox_new_locked(struct store_batch *b, const char *user, const char *name,
                              const char *special_use, struct store_mailbox *mb)
{
    uint64_t id, uv;
    if (meta_get_u64(b, b->op, "mailbox_id", &id) < 0 || meta_get_u64(b, b->op, "uidvalidity", &uv) < 0)
        return -1;
    /* UIDVALIDITY: a store-wide counter, never the clock alone. A copy
     * lives beside the index in <root>/.uidvalidity (fsynced before the
     * commit), so an index rebuilt after a loss continues above every value
     * ever handed out instead of restarting from the clock. */
    if (uv == 0)
        uv = uv_file_read(b->st);
    uint64_t now = (uint64_t)time(NULL);
    uv = uv + 1 > now ? uv + 1 : now;
    if (uv > UINT32_MAX)
        uv = 1;
    if (uv_file_write(b->st, uv) < 0)
        return -1;
    memset(mb, 0, sizeof *mb);
    mb->id = id + 1;
    mb->uidvalidity = (uint32_t)uv;
    mb->uidnext = 1;
    mb->highestmodseq = 1;
    mb->subscribed = orphan_sub_take(b, user, name) || subscribed_at_create(name, special_use);
    snprintf(mb->special_use, sizeof mb->special_use, "%s", special_use ? special_use : "");
    struct sbuf r = { 0 };
    oplog_head(&r, STORE_OP_MAILBOX_CREATE, user, name, mb);
    sb_str(&r, mb->special_use);
    if (meta_put_u64(b, "mailbox_id", mb->id) || meta_put_u64(b, "uidvalidity", uv) ||
        mailbox_put(b, user, name, mb) || oplog_put(b, &r))
        return -1;
    if (strcmp(name, MAILBOX_NAME_INBOX) == 0)
        return default_mailboxes_create(b, user);
    return 0;
}

int store_mailbox_create(struct store_batch *b, const char *user, const char *mailbox,
                         const char *special_use, struct store_result *res)
{
    char *name = canon(mailbox, res);
    if (name == NULL)
        return 0;
    if (special_use && strlen(special_use) >= sizeof ((struct store_mailbox *)0)->special_use) {
        free(name);
        res->status = MX_STATUS_PERMFAIL;
        res->text = "special-use attribute too long";
        return 0;
    }
    if (op_begin(b, res) < 0) {
        free(name);
        return -1;
    }
    struct store_mailbox mb;
    int got = store_mailbox_get(b->st, b->op, user, name, &mb);
    int ret;
    int err = 0;
    const char *error;
    if (got == 0) {
        ret = op_fail(b, res, MX_STATUS_EXISTS, "mailbox exists");
    } else if (got < 0) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed");
    } else if (batch_folder_get(b, user, name, true, &err, &error) == NULL) {
        mx_log(MX_LOG_ERR, "store.folder_create_failed", MX_KV("user", user), MX_KV("mailbox", name),
               MX_KV("error", error));
        ret = op_fail(b, res, err == EINVAL ? MX_STATUS_PERMFAIL : MX_STATUS_TEMPFAIL,
                      err == EINVAL ? "invalid user" : "cannot create the folder");
    } else if (mailbox_new_locked(b, user, name, special_use, &mb) < 0) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
    } else {
        ret = op_end(b, true, res);
        if (ret == 0) {
            res->status = MX_STATUS_OK;
            res->uidvalidity = mb.uidvalidity;
            res->modseq = mb.highestmodseq;
        }
    }
    free(name);
    return ret;
}

int store_append(struct store_batch *b, const struct store_append_req *req,
                 struct store_result *res)
{
    char *name = canon(req->mailbox, res);
    if (name == NULL)
        return 0;
    const char *error = NULL;
    char *udir = NULL;
    if (store_user_dir(b->st, req->user, &udir, &error) < 0) {
        free(name);
        res->status = MX_STATUS_PERMFAIL;
        res->text = error;
        return 0;
    }
    free(udir);
    if (req->keywords) {
        /* each keyword must be a valid atom */
        char *copy = mx_strdup(req->keywords);
        bool bad = strlen(copy) >= STORE_KEYWORDS_MAX;
        for (char *save = NULL, *t = strtok_r(copy, " ", &save); t && !bad; t = strtok_r(NULL, " ", &save)) {
            uint32_t bit;
            bad = store_flag_parse(t, &bit) < 0 || bit != 0;
        }
        free(copy);
        if (bad) {
            free(name);
            res->status = MX_STATUS_PERMFAIL;
            res->text = "invalid keyword";
            return 0;
        }
    }
    if (op_begin(b, res) < 0) {
        free(name);
        return -1;
    }
    int ret = 0, err = 0;
    struct store_mailbox mb;
    struct batch_folder *f = NULL;
    char file[MAILDIR_FILENAME_SIZE] = "";
    uint8_t *blob = NULL;
    int got = store_mailbox_get(b->st, b->op, req->user, name, &mb);
    if (got < 0) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed");
        goto out;
    }
    if (got == 1 && !req->create) {
        ret = op_fail(b, res, MX_STATUS_NOT_FOUND, "no such mailbox");
        goto out;
    }
    f = batch_folder_get(b, req->user, name, true, &err, &error);
    if (f == NULL) {
        mx_log(MX_LOG_ERR, "store.maildir_open_failed", MX_KV("user", req->user), MX_KV("error", error));
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot open the Maildir");
        goto out;
    }
    if (got == 1) {
        if (mailbox_new_locked(b, req->user, name, NULL, &mb) < 0) {
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
            goto out;
        }
        /* creating INBOX opens the default folders too, which may move
         * the batch's folder array: look ours up again */
        f = batch_folder_get(b, req->user, name, true, &err, &error);
    }
    bool dedup = req->msgid && !mx_msgid_is_zero(req->msgid);
    uint64_t quota_used = 0;
    uint8_t dk[8 + MX_MSGID_SIZE];
    MDB_val dkey = { sizeof dk, dk }, dval;
    if (dedup) {
        be64(dk, mb.id);
        memcpy(dk + 8, req->msgid->bytes, MX_MSGID_SIZE);
        int rc = mdb_get(b->op, b->st->dedup, &dkey, &dval);
        if (rc == 0 && dval.mv_size == 4) {
            res->uid = get_be32(dval.mv_data);
            res->uidvalidity = mb.uidvalidity;
            res->modseq = mb.highestmodseq;
            ret = op_end(b, true, res); /* keeps a mailbox created just now */
            if (ret == 0) {
                res->status = MX_STATUS_DUPLICATE;
                res->text = "already stored";
            }
            goto out;
        }
    }
    if (req->quota_bytes || req->quota_count) {
        struct maildirsize_quota q = { req->quota_bytes, req->quota_count };
        struct maildirsize_state qs;
        if (maildirsize_get(f->md, &q, time(NULL), &qs, NULL, &error) < 0) {
            mx_log(MX_LOG_ERR, "store.quota_read_failed", MX_KV("user", req->user), MX_KV("error", error));
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot read maildirsize");
            goto out;
        }
        if (maildirsize_would_exceed(&q, &qs.usage, req->body_len, 1)) {
            ret = op_fail(b, res, MX_STATUS_OVER_QUOTA, "over quota");
            goto out;
        }
        quota_used = (uint64_t)(qs.usage.bytes > 0 ? qs.usage.bytes : 0) + req->body_len;
    }
    uint64_t idate = req->internaldate ? req->internaldate : (uint64_t)time(NULL) * 1000;
    char idtext[MX_MSGID_TEXT_LEN + 1];
    struct maildir_save_opts so = {
        .subdir = req->flags ? MAILDIR_CUR : MAILDIR_NEW,
        .flags = store_flags_to_maildir(req->flags),
        .msgid = dedup ? mx_msgid_format(req->msgid, idtext) : NULL,
        .received = (time_t)(idate / 1000),
        .sync = MAILDIR_NO_DIR_FSYNC,
    };
    if (maildir_deliver(f->folder, req->body, req->body_len, &so, file, &error) < 0) {
        mx_log(MX_LOG_ERR, "store.deliver_failed", MX_KV("user", req->user), MX_KV("mailbox", name),
               MX_KV("error", error));
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot write the message file");
        goto out;
    }
    f->dirty = true;
    struct maildir_filename info;
    uint64_t size = req->body_len;
    if (maildir_filename_parse(file, &info, &error) == 0 && info.has_vsize)
        size = info.vsize;
    struct mime_cache *mc = NULL;
    size_t blob_len = 0;
    if (mime_cache_build(req->body, req->body_len, &mc, &error) == 0) {
        mime_cache_serialize(mc, &blob, &blob_len);
        mime_cache_free(&mc);
    }
    if (mb.uidnext == UINT32_MAX) {
        (void)maildir_message_expunge(f->folder, so.subdir, file, 0, &error);
        ret = op_fail(b, res, MX_STATUS_PERMFAIL, "mailbox out of UIDs");
        goto out;
    }
    struct store_message m;
    memset(&m, 0, sizeof m);
    m.uid = mb.uidnext++;
    m.flags = req->flags & STORE_FLAG_ALL;
    snprintf(m.keywords, sizeof m.keywords, "%s", req->keywords ? req->keywords : "");
    m.modseq = ++mb.highestmodseq;
    m.internaldate = idate;
    m.size = size;
    if (dedup)
        m.msgid = *req->msgid;
    m.subdir = so.subdir;
    snprintf(m.file, sizeof m.file, "%s", file);
    m.mime = blob;
    m.mime_len = blob_len;
    mb.messages++;
    mb.unseen += !(m.flags & STORE_FLAG_SEEN);
    mb.bytes += size;
    uint8_t uidb[4];
    be32(uidb, m.uid);
    dval = (MDB_val){ 4, uidb };
    char *dir = NULL;
    (void)mailbox_name_to_dir(name, &dir, &error);
    struct sbuf r = { 0 };
    oplog_head(&r, STORE_OP_APPEND, req->user, name, &mb);
    sb_u32(&r, m.uid);
    char *rel = mx_asprintf("%s%s%s/%s", dir ? dir : "", dir && *dir ? "/" : "",
                            m.subdir == MAILDIR_CUR ? "cur" : "new", file);
    sb_str(&r, rel);
    free(rel);
    free(dir);
    sb_u32(&r, m.flags);
    sb_str(&r, m.keywords);
    sb_u64(&r, m.modseq);
    sb_u64(&r, m.internaldate);
    sb_u64(&r, m.size);
    sb_put(&r, m.msgid.bytes, MX_MSGID_SIZE);
    if (message_put(b, mb.id, &m) || (dedup && mdb_put(b->op, b->st->dedup, &dkey, &dval, 0)) ||
        mailbox_put(b, req->user, name, &mb) || oplog_put(b, &r)) {
        free(r.data);
        (void)maildir_message_expunge(f->folder, so.subdir, file, 0, &error);
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
        goto out;
    }
    ret = op_end(b, true, res);
    if (ret < 0) {
        (void)maildir_message_expunge(f->folder, so.subdir, file, 0, &error);
        goto out;
    }
    (void)maildirsize_append(f->md, (int64_t)req->body_len, 1, &error);
    res->status = MX_STATUS_OK;
    res->uid = m.uid;
    res->uidvalidity = mb.uidvalidity;
    res->modseq = m.modseq;
    res->quota_used = quota_used;
    res->quota_bytes = req->quota_bytes;
out:
    free(blob);
    free(name);
    return ret;
}

/* mailbox_for_op - the op's mailbox, checked against uidvalidity (0 = any). */
static int mailbox_for_op(struct store_batch *b, const char *user, const char *name,
                          uint32_t uidvalidity, struct store_mailbox *mb, struct store_result *res)
{
    int got = store_mailbox_get(b->st, b->op, user, name, mb);
    if (got < 0)
        return op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed"), -1;
    if (got == 1)
        return op_fail(b, res, MX_STATUS_NOT_FOUND, "no such mailbox"), -1;
    if (uidvalidity && uidvalidity != mb->uidvalidity)
        return op_fail(b, res, MX_STATUS_UIDVALIDITY, "UIDVALIDITY changed"), -1;
    return 0;
}

int store_flags_store(struct store_batch *b, const char *user, const char *mailbox,
                      uint32_t uidvalidity, const uint32_t *uids, size_t n,
                      enum store_flag_mode mode, uint32_t flags, const char *keywords,
                      uint64_t unchangedsince, uint32_t **modified_r, size_t *n_modified_r,
                      struct store_result *res)
{
    *modified_r = NULL;
    *n_modified_r = 0;
    char *name = canon(mailbox, res);
    if (name == NULL)
        return 0;
    if (op_begin(b, res) < 0) {
        free(name);
        return -1;
    }
    struct store_mailbox mb;
    if (mailbox_for_op(b, user, name, uidvalidity, &mb, res) < 0) {
        free(name);
        return res->status == MX_STATUS_TEMPFAIL ? -1 : 0;
    }
    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_message m;
        int got = store_message_get(b->st, b->op, mb.id, uids[i], &m);
        if (got < 0) {
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed");
            goto out;
        }
        if (got == 1 || m.expunged)
            continue;
        if (unchangedsince && m.modseq > unchangedsince) {
            *modified_r = mx_reallocarray(*modified_r, *n_modified_r + 1, sizeof **modified_r);
            (*modified_r)[(*n_modified_r)++] = m.uid;
            continue;
        }
        uint32_t nf = mode == STORE_FLAGS_REPLACE ? flags
                      : mode == STORE_FLAGS_ADD   ? m.flags | flags
                                                  : m.flags & ~flags;
        nf &= STORE_FLAG_ALL;
        char kw[STORE_KEYWORDS_MAX];
        if (kw_apply(m.keywords, mode, keywords ? keywords : "", kw, sizeof kw) < 0) {
            ret = op_fail(b, res, MX_STATUS_PERMFAIL, "too many keywords");
            goto out;
        }
        if (nf == m.flags && strcmp(kw, m.keywords) == 0)
            continue;
        if ((m.flags & STORE_FLAG_SEEN) && !(nf & STORE_FLAG_SEEN))
            mb.unseen++;
        else if (!(m.flags & STORE_FLAG_SEEN) && (nf & STORE_FLAG_SEEN) && mb.unseen)
            mb.unseen--;
        m.flags = nf;
        memcpy(m.keywords, kw, sizeof kw);
        m.modseq = ++mb.highestmodseq;
        struct sbuf r = { 0 };
        oplog_head(&r, STORE_OP_FLAGS, user, name, &mb);
        sb_u32(&r, m.uid);
        sb_u32(&r, m.flags);
        sb_str(&r, m.keywords);
        sb_u64(&r, m.modseq);
        if (message_put(b, mb.id, &m) || oplog_put(b, &r)) {
            free(r.data);
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
            goto out;
        }
    }
    if (mailbox_put(b, user, name, &mb)) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
        goto out;
    }
    ret = op_end(b, true, res);
    if (ret == 0) {
        res->status = MX_STATUS_OK;
        res->uidvalidity = mb.uidvalidity;
        res->modseq = mb.highestmodseq;
    }
out:
    if (ret < 0 || res->status != MX_STATUS_OK) {
        free(*modified_r);
        *modified_r = NULL;
        *n_modified_r = 0;
    }
    free(name);
    return ret;
}

struct collect_ctx {
    const uint32_t *uids;
    size_t n;
    uint32_t *out;
    size_t n_out;
};
static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}
static int collect_deleted(void *ctx, const struct store_message *m)
{
    struct collect_ctx *c = ctx;
    if (m->expunged || !(m->flags & STORE_FLAG_DELETED))
        return 0;
    if (c->uids && (c->n == 0 || !bsearch(&m->uid, c->uids, c->n, sizeof *c->uids, cmp_u32)))
        return 0;
    c->out = mx_reallocarray(c->out, c->n_out + 1, sizeof *c->out);
    c->out[c->n_out++] = m->uid;
    return 0;
}

/* tombstone_locked - mark one message expunged (file already handled). */
static int tombstone_locked(struct store_batch *b, const char *user, const char *name,
                            struct store_mailbox *mb, struct store_message *m)
{
    m->expunged = true;
    m->modseq = ++mb->highestmodseq;
    m->mime = NULL;
    m->mime_len = 0;
    if (mb->messages)
        mb->messages--;
    if (!(m->flags & STORE_FLAG_SEEN) && mb->unseen)
        mb->unseen--;
    mb->bytes = mb->bytes >= m->size ? mb->bytes - m->size : 0;
    struct sbuf r = { 0 };
    oplog_head(&r, STORE_OP_EXPUNGE, user, name, mb);
    sb_u32(&r, m->uid);
    sb_u64(&r, m->modseq);
    if (message_put(b, mb->id, m) || oplog_put(b, &r)) {
        free(r.data);
        return -1;
    }
    return 0;
}

int store_expunge(struct store_batch *b, const char *user, const char *mailbox,
                  uint32_t uidvalidity, const uint32_t *uids, size_t n,
                  uint32_t **expunged_r, size_t *n_expunged_r, struct store_result *res)
{
    *expunged_r = NULL;
    *n_expunged_r = 0;
    char *name = canon(mailbox, res);
    if (name == NULL)
        return 0;
    if (op_begin(b, res) < 0) {
        free(name);
        return -1;
    }
    struct store_mailbox mb;
    if (mailbox_for_op(b, user, name, uidvalidity, &mb, res) < 0) {
        free(name);
        return res->status == MX_STATUS_TEMPFAIL ? -1 : 0;
    }
    uint32_t *sorted = NULL;
    if (uids) {
        sorted = mx_calloc(n ? n : 1, sizeof *sorted);
        memcpy(sorted, uids, n * sizeof *uids);
        qsort(sorted, n, sizeof *sorted, cmp_u32);
    }
    struct collect_ctx c = { sorted, n, NULL, 0 };
    int ret = 0, err;
    const char *error;
    struct batch_folder *f = NULL;
    if (store_message_foreach(b->st, b->op, mb.id, collect_deleted, &c) < 0) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed");
        goto out;
    }
    if (c.n_out && (f = batch_folder_get(b, user, name, false, &err, &error)) == NULL) {
        mx_log(MX_LOG_ERR, "store.maildir_open_failed", MX_KV("user", user), MX_KV("error", error));
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot open the Maildir");
        goto out;
    }
    int64_t freed = 0;
    for (size_t i = 0; i < c.n_out; i++) {
        struct store_message m;
        if (store_message_get(b->st, b->op, mb.id, c.out[i], &m) != 0) {
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed");
            goto out;
        }
        /* Unlink before the commit: a crash in between leaves a known file
         * missing, which start-up marks expunged, i.e. what was asked. */
        if (maildir_message_expunge(f->folder, m.subdir, m.file, 0, &error) < 0 && errno != ENOENT)
            mx_log(MX_LOG_ERR, "store.unlink_failed", MX_KV("user", user), MX_KV("file", m.file),
                   MX_KV("error", error));
        freed += (int64_t)m.size;
        if (tombstone_locked(b, user, name, &mb, &m) < 0) {
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
            goto out;
        }
    }
    if (mailbox_put(b, user, name, &mb)) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
        goto out;
    }
    ret = op_end(b, true, res);
    if (ret == 0) {
        if (c.n_out)
            (void)maildirsize_append(f->md, -freed, -(int64_t)c.n_out, &error);
        res->status = MX_STATUS_OK;
        res->uidvalidity = mb.uidvalidity;
        res->modseq = mb.highestmodseq;
        *expunged_r = c.out;
        *n_expunged_r = c.n_out;
        c.out = NULL;
    }
out:
    free(c.out);
    free(sorted);
    free(name);
    return ret;
}

int store_copy(struct store_batch *b, const char *user, const char *mailbox, uint32_t uidvalidity,
               const uint32_t *uids, size_t n, const char *dest, bool move,
               uint32_t **src_r, uint32_t **dst_r, size_t *n_r, struct store_result *res)
{
    *src_r = *dst_r = NULL;
    *n_r = 0;
    char *from = canon(mailbox, res);
    if (from == NULL)
        return 0;
    char *to = canon(dest, res);
    if (to == NULL) {
        free(from);
        return 0;
    }
    int ret = 0;
    uint32_t *src = NULL, *dst = NULL;
    size_t done = 0;
    /* MOVE into the same mailbox is legal (RFC 6851: COPY + EXPUNGE): the
     * message gets a new UID, the old one is expunged */
    if (op_begin(b, res) < 0) {
        ret = -1;
        goto out;
    }
    struct store_mailbox smb, dmb;
    if (mailbox_for_op(b, user, from, uidvalidity, &smb, res) < 0) {
        ret = res->status == MX_STATUS_TEMPFAIL ? -1 : 0;
        goto out;
    }
    int got = store_mailbox_get(b->st, b->op, user, to, &dmb);
    if (got != 0) {
        ret = op_fail(b, res, got < 0 ? MX_STATUS_TEMPFAIL : MX_STATUS_NOT_FOUND,
                      got < 0 ? "index read failed" : "no such destination mailbox");
        goto out;
    }
    int err;
    const char *error = NULL;
    struct batch_folder *fs = batch_folder_get(b, user, from, false, &err, &error);
    struct batch_folder *fd = fs ? batch_folder_get(b, user, to, false, &err, &error) : NULL;
    /* the second get may have moved the array: look the source up again (cached) */
    if (fd)
        fs = batch_folder_get(b, user, from, false, &err, &error);
    if (fd == NULL) {
        mx_log(MX_LOG_ERR, "store.maildir_open_failed", MX_KV("user", user), MX_KV("error", error));
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot open the Maildir");
        goto out;
    }
    bool same = strcmp(from, to) == 0;
    int64_t added = 0;
    char *dir = NULL;
    (void)mailbox_name_to_dir(to, &dir, &error);
    for (size_t i = 0; i < n; i++) {
        struct store_message m;
        if (store_message_get(b->st, b->op, smb.id, uids[i], &m) != 0 || m.expunged)
            continue;
        if (dmb.uidnext == UINT32_MAX)
            break;
        struct maildir_save_opts so = {
            .subdir = m.flags ? MAILDIR_CUR : MAILDIR_NEW,
            .flags = store_flags_to_maildir(m.flags),
            .sync = MAILDIR_NO_DIR_FSYNC,
        };
        char name[MAILDIR_FILENAME_SIZE];
        /* within one mailbox a move is a copy (a new file for the new
         * UID) whose original the tombstone below removes */
        int rc = move && !same
                     ? maildir_message_move(fs->folder, m.subdir, m.file, fd->folder, &so, name, &error)
                     : maildir_message_copy(fs->folder, m.subdir, m.file, fd->folder, &so, name, &error);
        if (rc < 0) {
            mx_log(MX_LOG_ERR, "store.copy_failed", MX_KV("user", user), MX_KV("file", m.file),
                   MX_KV("error", error));
            free(dir);
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot copy the message file");
            goto out;
        }
        fs->dirty = fd->dirty = true;
        struct store_message c = m; /* mime still points into the txn: encoded by the put below */
        c.uid = dmb.uidnext++;
        c.modseq = ++dmb.highestmodseq;
        c.subdir = so.subdir;
        snprintf(c.file, sizeof c.file, "%s", name);
        if (same)
            smb = dmb;
        dmb.messages++;
        dmb.unseen += !(c.flags & STORE_FLAG_SEEN);
        dmb.bytes += c.size;
        struct sbuf r = { 0 };
        oplog_head(&r, STORE_OP_APPEND, user, to, &dmb);
        sb_u32(&r, c.uid);
        char *rel = mx_asprintf("%s%s%s/%s", dir ? dir : "", dir && *dir ? "/" : "",
                                c.subdir == MAILDIR_CUR ? "cur" : "new", c.file);
        sb_str(&r, rel);
        free(rel);
        sb_u32(&r, c.flags);
        sb_str(&r, c.keywords);
        sb_u64(&r, c.modseq);
        sb_u64(&r, c.internaldate);
        sb_u64(&r, c.size);
        sb_put(&r, c.msgid.bytes, MX_MSGID_SIZE);
        int bad = message_put(b, dmb.id, &c) || oplog_put(b, &r);
        free(r.data);
        if (!bad && !mx_msgid_is_zero(&c.msgid)) {
            uint8_t dk[8 + MX_MSGID_SIZE], uidb[4];
            be64(dk, dmb.id);
            memcpy(dk + 8, c.msgid.bytes, MX_MSGID_SIZE);
            be32(uidb, c.uid);
            MDB_val k = { sizeof dk, dk }, v = { 4, uidb };
            int prc = mdb_put(b->op, b->st->dedup, &k, &v, MDB_NOOVERWRITE);
            bad = prc != 0 && prc != MDB_KEYEXIST;
        }
        if (!bad && move) {
            if (same)
                smb = dmb;
            bad = tombstone_locked(b, user, from, &smb, &m) < 0;
            if (same)
                dmb = smb; /* one mailbox: the expunge counts for both views */
        }
        if (bad) {
            free(dir);
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
            goto out;
        }
        if (!move)
            added += (int64_t)c.size;
        src = mx_reallocarray(src, done + 1, sizeof *src);
        dst = mx_reallocarray(dst, done + 1, sizeof *dst);
        src[done] = m.uid;
        dst[done++] = c.uid;
    }
    free(dir);
    if ((move && mailbox_put(b, user, from, &smb)) || mailbox_put(b, user, to, &dmb)) {
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
        goto out;
    }
    ret = op_end(b, true, res);
    if (ret == 0) {
        if (added)
            (void)maildirsize_append(fd->md, added, (int64_t)done, &error);
        res->status = MX_STATUS_OK;
        res->uidvalidity = dmb.uidvalidity;
        res->modseq = move ? smb.highestmodseq : dmb.highestmodseq;
        *src_r = src;
        *dst_r = dst;
        *n_r = done;
        src = dst = NULL;
    }
out:
    free(src);
    free(dst);
    free(from);
    free(to);
    return ret;
}

/* del_prefix - delete every key of dbi starting with the 8-byte mailbox id. */
static int del_prefix(struct store_batch *b, MDB_dbi dbi, uint64_t id)
{
    MDB_cursor *c;
    if (mdb_cursor_open(b->op, dbi, &c) != 0)
        return -1;
    uint8_t kb[8];
    be64(kb, id);
    MDB_val k = { 8, kb }, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 8 && get_be64(k.mv_data) == id) {
        rc = mdb_cursor_del(c, 0);
        if (rc == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND || rc == EINVAL ? 0 : -1;
}

int store_mailbox_delete(struct store_batch *b, const char *user, const char *mailbox,
                         struct store_result *res)
{
    char *name = canon(mailbox, res);
    if (name == NULL)
        return 0;
    if (mailbox_name_is_inbox(name)) {
        free(name);
        res->status = MX_STATUS_PERMFAIL;
        res->text = "INBOX cannot be deleted";
        return 0;
    }
    if (op_begin(b, res) < 0) {
        free(name);
        return -1;
    }
    struct store_mailbox mb;
    if (mailbox_for_op(b, user, name, 0, &mb, res) < 0) {
        free(name);
        return res->status == MX_STATUS_TEMPFAIL ? -1 : 0;
    }
    char *kb;
    MDB_val k = mailbox_key(user, name, &kb);
    struct sbuf r = { 0 };
    oplog_head(&r, STORE_OP_MAILBOX_DELETE, user, name, &mb);
    int ret;
    /* RFC 3501 6.3.6: the subscription outlives the mailbox */
    if (del_prefix(b, b->st->messages, mb.id) < 0 || del_prefix(b, b->st->dedup, mb.id) < 0 ||
        mdb_del(b->op, b->st->mailboxes, &k, NULL) != 0 ||
        (mb.subscribed && orphan_sub_set(b, user, name, true) != 0) || oplog_put(b, &r) != 0) {
        free(r.data);
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
    } else {
        int err;
        const char *error;
        struct batch_folder *f = batch_folder_get(b, user, "INBOX", false, &err, &error);
        if (f && maildir_folder_delete(f->md, name, &error) < 0 && errno != ENOENT) {
            mx_log(MX_LOG_ERR, "store.folder_delete_failed", MX_KV("user", user),
                   MX_KV("mailbox", name), MX_KV("error", error));
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot delete the folder");
        } else {
            ret = op_end(b, true, res);
            if (ret == 0)
                res->status = MX_STATUS_OK;
        }
    }
    free(kb);
    free(name);
    return ret;
}

int store_mailbox_rename(struct store_batch *b, const char *user, const char *old_mailbox,
                         const char *new_mailbox, struct store_result *res)
{
    char *from = canon(old_mailbox, res);
    if (from == NULL)
        return 0;
    char *to = canon(new_mailbox, res);
    if (to == NULL) {
        free(from);
        return 0;
    }
    int ret = 0;
    char **names = NULL;
    size_t n = 0;
    if (mailbox_name_is_inbox(from) || mailbox_name_is_inbox(to) || strcmp(from, to) == 0 ||
        mailbox_name_is_descendant(to, from)) {
        /* RFC 3501 INBOX rename (move its messages) is not supported yet */
        res->status = MX_STATUS_PERMFAIL;
        res->text = "cannot rename INBOX, onto INBOX, or below itself";
        goto done;
    }
    if (op_begin(b, res) < 0) {
        ret = -1;
        goto done;
    }
    /* the mailbox and everything below it */
    MDB_cursor *c;
    size_t ul = strlen(user);
    if (mdb_cursor_open(b->op, b->st->mailboxes, &c) == 0) {
        MDB_val k = { ul + 1, (void *)user }, v;
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size <= ul + 1 || memcmp(k.mv_data, user, ul + 1) != 0)
                break;
            char *name = mx_strndup((const char *)k.mv_data + ul + 1, k.mv_size - ul - 1);
            if (strcmp(name, from) == 0 || mailbox_name_is_descendant(name, from)) {
                names = mx_reallocarray(names, n + 1, sizeof *names);
                names[n++] = name;
            } else {
                free(name);
            }
        }
        mdb_cursor_close(c);
    }
    if (n == 0) {
        ret = op_fail(b, res, MX_STATUS_NOT_FOUND, "no such mailbox");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        struct store_mailbox mb;
        char *target = mx_asprintf("%s%s", to, names[i] + strlen(from));
        struct store_result tmp;
        char *ok = canon(target, &tmp);
        int exists = ok ? store_mailbox_get(b->st, b->op, user, target, &mb) : 1;
        free(ok);
        free(target);
        if (ok == NULL || exists != 1) {
            ret = op_fail(b, res, ok == NULL ? MX_STATUS_PERMFAIL : MX_STATUS_EXISTS,
                          ok == NULL ? "new name too long" : "target mailbox exists");
            goto done;
        }
    }
    int err;
    const char *error;
    struct batch_folder *f = batch_folder_get(b, user, MAILBOX_NAME_INBOX, false, &err, &error);
    if (f == NULL || (maildir_folder_rename(f->md, from, to, &error) < 0 && errno != ENOENT)) {
        mx_log(MX_LOG_ERR, "store.folder_rename_failed", MX_KV("user", user), MX_KV("mailbox", from),
               MX_KV("error", error));
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "cannot rename the folder");
        goto done;
    }
    /* open folder handles of this batch still carry the old names */
    for (size_t i = 0; i < b->n_folders; i++)
        if (strcmp(b->folders[i].user, user) == 0 &&
            (strcmp(b->folders[i].name, from) == 0 || mailbox_name_is_descendant(b->folders[i].name, from))) {
            const char *e2;
            if (b->folders[i].dirty)
                (void)maildir_folder_fsync(b->folders[i].folder, &e2);
            b->folders[i].dirty = false;
            free(b->folders[i].user);
            b->folders[i].user = mx_strdup(""); /* never matches a user again */
        }
    for (size_t i = 0; i < n; i++) {
        struct store_mailbox mb;
        char *target = mx_asprintf("%s%s", to, names[i] + strlen(from));
        char *kb;
        MDB_val k = mailbox_key(user, names[i], &kb);
        struct sbuf r = { 0 };
        int bad = store_mailbox_get(b->st, b->op, user, names[i], &mb) != 0;
        if (!bad) {
            oplog_head(&r, STORE_OP_MAILBOX_RENAME, user, names[i], &mb);
            sb_str(&r, target);
            bad = mdb_del(b->op, b->st->mailboxes, &k, NULL) != 0 ||
                  mailbox_put(b, user, target, &mb) != 0 || oplog_put(b, &r) != 0;
        }
        free(r.data);
        free(kb);
        free(target);
        if (bad) {
            ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
            goto done;
        }
    }
    ret = op_end(b, true, res);
    if (ret == 0)
        res->status = MX_STATUS_OK;
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(from);
    free(to);
    return ret;
}

int store_mailbox_subscribe(struct store_batch *b, const char *user, const char *mailbox,
                            bool subscribe, struct store_result *res)
{
    char *name = canon(mailbox, res);
    if (name == NULL)
        return 0;
    if (op_begin(b, res) < 0) {
        free(name);
        return -1;
    }
    struct store_mailbox mb;
    int got = store_mailbox_get(b->st, b->op, user, name, &mb);
    if (got < 0) {
        free(name);
        op_fail(b, res, MX_STATUS_TEMPFAIL, "index read failed");
        return -1;
    }
    /* a name that is no mailbox (deleted, or not created yet) is
     * subscribed on its own: a SUBSCRIPTION record without mailbox ids */
    bool orphan = got == 1;
    struct store_mailbox none;
    memset(&none, 0, sizeof none);
    if (!orphan)
        mb.subscribed = subscribe;
    struct sbuf r = { 0 };
    oplog_head(&r, orphan ? STORE_OP_SUBSCRIPTION : STORE_OP_MAILBOX_SUBSCRIBE, user, name,
               orphan ? &none : &mb);
    sb_u8(&r, subscribe);
    int put = orphan ? orphan_sub_set(b, user, name, subscribe) : mailbox_put(b, user, name, &mb);
    int ret;
    if (put != 0 || oplog_put(b, &r) != 0) {
        free(r.data);
        ret = op_fail(b, res, MX_STATUS_TEMPFAIL, "index update failed");
    } else {
        ret = op_end(b, true, res);
        if (ret == 0)
            res->status = MX_STATUS_OK;
    }
    free(name);
    return ret;
}

/* ---- start-up recovery ------------------------------------------------- */

struct known {
    char key[MAILDIR_FILENAME_SIZE];
    uint32_t uid;
    bool expunged, seen;
};
struct known_set {
    struct known *v;
    size_t n;
};
static int cmp_known(const void *a, const void *b)
{
    return strcmp(((const struct known *)a)->key, ((const struct known *)b)->key);
}
static int collect_known(void *ctx, const struct store_message *m)
{
    struct known_set *s = ctx;
    s->v = mx_reallocarray(s->v, s->n + 1, sizeof *s->v);
    struct known *k = &s->v[s->n++];
    memset(k, 0, sizeof *k);
    size_t len = strcspn(m->file, ":");
    snprintf(k->key, sizeof k->key, "%.*s", (int)len, m->file);
    k->uid = m->uid;
    k->expunged = m->expunged;
    return 0;
}

struct orphan {
    char name[MAILDIR_FILENAME_SIZE];
    enum maildir_subdir subdir;
    struct maildir_filename info;
    uint64_t mtime_ms;
};
struct scan_ctx {
    struct known_set *known;
    struct orphan *orphans;
    size_t n_orphans;
    struct batch_folder *f;
    struct store_recover_stats *stats;
};
static int recover_scan_fn(void *ctx, const struct maildir_scan_entry *e)
{
    struct scan_ctx *s = ctx;
    if (e->error)
        return 0; /* names we cannot parse are left for the operator */
    struct known probe;
    snprintf(probe.key, sizeof probe.key, "%.*s", (int)e->info.key_len, e->name);
    struct known *k = s->known->n == 0 ? NULL : bsearch(&probe, s->known->v, s->known->n, sizeof probe, cmp_known);
    if (k && !k->expunged) {
        k->seen = true;
    } else if (k) {
        const char *error;
        if (maildir_message_expunge(s->f->folder, e->subdir, e->name, 0, &error) == 0)
            s->stats->tombstones_removed++;
    } else {
        s->orphans = mx_reallocarray(s->orphans, s->n_orphans + 1, sizeof *s->orphans);
        struct orphan *o = &s->orphans[s->n_orphans++];
        snprintf(o->name, sizeof o->name, "%s", e->name);
        o->subdir = e->subdir;
        o->info = e->info;
        o->mtime_ms = (uint64_t)e->mtime.tv_sec * 1000 + (uint64_t)e->mtime.tv_nsec / 1000000;
    }
    return 0;
}
static int cmp_orphan(const void *a, const void *b)
{
    return strcmp(((const struct orphan *)a)->name, ((const struct orphan *)b)->name);
}

/* recover_adopt - index one orphan file under a new UID (an APPEND op). */
static int recover_adopt(struct store_batch *b, const char *user, const char *name,
                         struct batch_folder *f, const struct orphan *o,
                         struct store_recover_stats *stats)
{
    struct store_result res;
    if (op_begin(b, &res) < 0)
        return -1;
    struct store_mailbox mb;
    if (store_mailbox_get(b->st, b->op, user, name, &mb) != 0)
        return op_fail(b, &res, MX_STATUS_TEMPFAIL, "");
    struct mx_msgid id;
    memset(&id, 0, sizeof id);
    bool has_id = o->info.has_id && mx_msgid_parse(o->info.id, &id) == 0;
    uint8_t dk[8 + MX_MSGID_SIZE];
    MDB_val dkey = { sizeof dk, dk }, dval;
    if (has_id) {
        be64(dk, mb.id);
        memcpy(dk + 8, id.bytes, MX_MSGID_SIZE);
        if (mdb_get(b->op, b->st->dedup, &dkey, &dval) == 0) {
            /* A second copy of a message we already have (an interrupted
             * move): left in place for the operator, not indexed twice. */
            mx_log(MX_LOG_WARNING, "store.duplicate_file", MX_KV("user", user), MX_KV("file", o->name));
            stats->duplicates_skipped++;
            return op_end(b, false, &res), 0;
        }
    }
    /* Read the file for size and the MIME cache. */
    int fd;
    const char *error;
    if (maildir_message_open(f->folder, o->subdir, o->name, &fd, &error) < 0)
        return op_end(b, false, &res), 0;
    struct stat sb;
    uint8_t *body = NULL;
    size_t len = 0;
    if (fstat(fd, &sb) == 0 && sb.st_size >= 0 && (uint64_t)sb.st_size < UINT32_MAX) {
        len = (size_t)sb.st_size;
        body = mx_malloc(len + 1);
        size_t got = 0;
        while (got < len) {
            ssize_t r = pread(fd, body + got, len - got, (off_t)got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        len = got;
    }
    close(fd);
    struct mime_cache *mc = NULL;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    if (mime_cache_build(body, len, &mc, &error) == 0) {
        mime_cache_serialize(mc, &blob, &blob_len);
        mime_cache_free(&mc);
    }
    free(body);
    struct store_message m;
    memset(&m, 0, sizeof m);
    m.uid = mb.uidnext++;
    m.flags = store_flags_from_maildir(o->info.flags);
    m.modseq = ++mb.highestmodseq;
    m.internaldate = o->mtime_ms;
    m.size = o->info.has_vsize ? o->info.vsize : len;
    m.msgid = id;
    m.subdir = o->subdir;
    snprintf(m.file, sizeof m.file, "%s", o->name);
    m.mime = blob;
    m.mime_len = blob_len;
    mb.messages++;
    mb.unseen += !(m.flags & STORE_FLAG_SEEN);
    mb.bytes += m.size;
    uint8_t uidb[4];
    be32(uidb, m.uid);
    dval = (MDB_val){ 4, uidb };
    char *dir = NULL;
    (void)mailbox_name_to_dir(name, &dir, &error);
    char *rel = mx_asprintf("%s%s%s/%s", dir ? dir : "", dir && *dir ? "/" : "",
                            m.subdir == MAILDIR_CUR ? "cur" : "new", m.file);
    free(dir);
    struct sbuf r = { 0 };
    oplog_head(&r, STORE_OP_APPEND, user, name, &mb);
    sb_u32(&r, m.uid);
    sb_str(&r, rel);
    free(rel);
    sb_u32(&r, m.flags);
    sb_str(&r, m.keywords);
    sb_u64(&r, m.modseq);
    sb_u64(&r, m.internaldate);
    sb_u64(&r, m.size);
    sb_put(&r, m.msgid.bytes, MX_MSGID_SIZE);
    int bad = message_put(b, mb.id, &m) || (has_id && mdb_put(b->op, b->st->dedup, &dkey, &dval, 0)) ||
              mailbox_put(b, user, name, &mb) || oplog_put(b, &r);
    free(blob);
    if (bad) {
        free(r.data);
        return op_fail(b, &res, MX_STATUS_TEMPFAIL, "");
    }
    mx_log(MX_LOG_NOTICE, "store.orphan_indexed", MX_KV("user", user), MX_KV("mailbox", name),
           MX_KV("file", o->name), MX_KVU("uid", m.uid));
    stats->orphans_indexed++;
    return op_end(b, true, &res);
}

/* recover_missing - tombstone a known message whose file is gone. */
static int recover_missing(struct store_batch *b, const char *user, const char *name, uint32_t uid,
                           struct store_recover_stats *stats)
{
    struct store_result res;
    if (op_begin(b, &res) < 0)
        return -1;
    struct store_mailbox mb;
    struct store_message m;
    if (store_mailbox_get(b->st, b->op, user, name, &mb) != 0 ||
        store_message_get(b->st, b->op, mb.id, uid, &m) != 0)
        return op_fail(b, &res, MX_STATUS_TEMPFAIL, "");
    mx_log(MX_LOG_ERR, "store.file_missing", MX_KV("user", user), MX_KV("mailbox", name),
           MX_KVU("uid", uid), MX_KV("file", m.file));
    if (tombstone_locked(b, user, name, &mb, &m) < 0 || mailbox_put(b, user, name, &mb))
        return op_fail(b, &res, MX_STATUS_TEMPFAIL, "");
    stats->missing_expunged++;
    return op_end(b, true, &res);
}

struct mbox_ref {
    char *user, *name;
    uint64_t id;
};

int store_recover(struct store *st, struct store_recover_stats *stats_r, char **error_r)
{
    return store_recover_user(st, NULL, stats_r, error_r);
}

/* recover_adopt_folders - folders on disk the index does not know (a
 * create whose commit was lost, or a reindex after the index lost them)
 * are indexed with a new UIDVALIDITY; their files then become orphans. */
static void recover_adopt_folders(struct store_batch *b, const char *user, bool create,
                                  struct mbox_ref **mbs, size_t *n,
                                  struct store_recover_stats *stats)
{
    int err;
    const char *error;
    struct batch_folder *root = batch_folder_get(b, user, MAILBOX_NAME_INBOX, create, &err, &error);
    struct maildir_folder_list fl;
    if (root == NULL || maildir_folder_list(root->md, &fl, &error) < 0)
        return;
    for (size_t i = 0; i < fl.count; i++) {
        bool known = false;
        for (size_t j = 0; j < *n && !known; j++)
            known = strcmp((*mbs)[j].user, user) == 0 && strcmp((*mbs)[j].name, fl.entries[i].name) == 0;
        if (known)
            continue;
        struct store_result res;
        struct store_mailbox mb;
        if (op_begin(b, &res) < 0)
            break;
        /* adopting INBOX creates the default folders with it: one of
         * those may be later in this listing, already indexed now */
        if (store_mailbox_get(b->st, b->op, user, fl.entries[i].name, &mb) == 0) {
            op_end(b, false, &res);
            *mbs = mx_reallocarray(*mbs, *n + 1, sizeof **mbs);
            (*mbs)[(*n)++] = (struct mbox_ref){ mx_strdup(user), mx_strdup(fl.entries[i].name), mb.id };
            continue;
        }
        if (mailbox_new_locked(b, user, fl.entries[i].name, NULL, &mb) < 0 || op_end(b, true, &res) < 0) {
            if (b->op)
                op_end(b, false, &res);
            continue;
        }
        mx_log(MX_LOG_NOTICE, "store.folder_adopted", MX_KV("user", user),
               MX_KV("mailbox", fl.entries[i].name), MX_KVU("uidvalidity", mb.uidvalidity));
        *mbs = mx_reallocarray(*mbs, *n + 1, sizeof **mbs);
        (*mbs)[(*n)++] = (struct mbox_ref){ mx_strdup(user), mx_strdup(fl.entries[i].name), mb.id };
        stats->mailboxes_adopted++;
    }
    maildir_folder_list_free(&fl);
}

int store_recover_user(struct store *st, const char *only, struct store_recover_stats *stats_r,
                       char **error_r)
{
    memset(stats_r, 0, sizeof *stats_r);
    *error_r = NULL;
    if (only) {
        char *dir;
        const char *error;
        if (store_user_dir(st, only, &dir, &error) < 0) {
            *error_r = mx_asprintf("%s: %s", only, error);
            return -1;
        }
        free(dir);
    }
    struct store_batch *b;
    if (store_batch_begin(st, &b, error_r) < 0)
        return -1;
    struct mbox_ref *mbs = NULL;
    size_t n = 0;
    MDB_cursor *c;
    MDB_val k, v;
    if (mdb_cursor_open(b->txn, st->mailboxes, &c) == 0) {
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            const char *p = k.mv_data;
            size_t ul = strnlen(p, k.mv_size);
            struct store_mailbox mb;
            if (ul == k.mv_size || mailbox_decode(v.mv_data, v.mv_size, &mb) < 0 ||
                (only && (strlen(only) != ul || memcmp(only, p, ul) != 0)))
                continue;
            mbs = mx_reallocarray(mbs, n + 1, sizeof *mbs);
            mbs[n++] = (struct mbox_ref){ mx_strndup(p, ul), mx_strndup(p + ul + 1, k.mv_size - ul - 1), mb.id };
        }
        mdb_cursor_close(c);
    }
    size_t n_known = n;
    for (size_t i = 0; i < n_known; i++) {
        bool first = true;
        for (size_t j = 0; j < i && first; j++)
            first = strcmp(mbs[j].user, mbs[i].user) != 0;
        if (first) {
            char *user = mx_strdup(mbs[i].user);
            recover_adopt_folders(b, user, false, &mbs, &n, stats_r);
            free(user);
        }
    }
    if (only && n_known == 0)
        recover_adopt_folders(b, only, false, &mbs, &n, stats_r);
    int ret = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        stats_r->mailboxes++;
        int err;
        const char *error;
        struct batch_folder *f = batch_folder_get(b, mbs[i].user, mbs[i].name, true, &err, &error);
        if (f == NULL) {
            mx_log(MX_LOG_ERR, "store.recover_folder_failed", MX_KV("user", mbs[i].user),
                   MX_KV("mailbox", mbs[i].name), MX_KV("error", error));
            continue;
        }
        struct known_set ks = { NULL, 0 };
        (void)store_message_foreach(st, b->txn, mbs[i].id, collect_known, &ks);
        if (ks.n)
            qsort(ks.v, ks.n, sizeof *ks.v, cmp_known);
        struct scan_ctx sc = { &ks, NULL, 0, f, stats_r };
        if (maildir_scan(f->folder, MAILDIR_SCAN_STAT, recover_scan_fn, &sc, NULL, &error) < 0) {
            *error_r = mx_asprintf("store: scan %s of %s: %s", mbs[i].name, mbs[i].user, error);
            ret = -1;
        }
        if (sc.n_orphans)
            qsort(sc.orphans, sc.n_orphans, sizeof *sc.orphans, cmp_orphan);
        for (size_t j = 0; j < ks.n && ret == 0; j++)
            if (!ks.v[j].expunged && !ks.v[j].seen &&
                recover_missing(b, mbs[i].user, mbs[i].name, ks.v[j].uid, stats_r) < 0)
                ret = -1;
        for (size_t j = 0; j < sc.n_orphans && ret == 0; j++)
            if (recover_adopt(b, mbs[i].user, mbs[i].name, f, &sc.orphans[j], stats_r) < 0)
                ret = -1;
        if (sc.n_orphans)
            f->dirty = true;
        free(sc.orphans);
        free(ks.v);
    }
    for (size_t i = 0; i < n; i++) {
        free(mbs[i].user);
        free(mbs[i].name);
    }
    free(mbs);
    if (ret < 0) {
        if (*error_r == NULL)
            *error_r = mx_strdup("store: recovery failed (see log)");
        store_batch_abort(&b);
        return -1;
    }
    return store_batch_commit(&b, error_r);
}

/* ---- replication (issue 6): applying a primary's records -------------- */

/* A record's common head, decoded. */
struct op_head {
    uint8_t type;
    char user[512];
    char name[1024];
    uint64_t mailbox_id;
    uint32_t uidvalidity;
};

static int op_head_read(struct srd *r, struct op_head *h)
{
    if (rd_u8(r) != STORE_OP_VERSION)
        return -1;
    h->type = rd_u8(r);
    rd_str(r, h->user, sizeof h->user);
    rd_str(r, h->name, sizeof h->name);
    h->mailbox_id = rd_u64(r);
    h->uidvalidity = rd_u32(r);
    return r->bad ? -1 : 0;
}

/* rel_split - "<dir>/cur/<file>" (dir may be empty) -> subdir + file; the
 * folder directory is recomputed from the mailbox name, so a hostile path
 * cannot name anything but a file in that folder. */
static int rel_split(const char *rel, enum maildir_subdir *subdir_r, const char **file_r)
{
    const char *slash = strrchr(rel, '/');
    if (slash == NULL || !maildir_filename_safe(slash + 1))
        return -1;
    size_t prefix = (size_t)(slash - rel);
    if (prefix < 3)
        return -1;
    const char *sub = slash - 3;
    if (sub != rel && sub[-1] != '/')
        return -1;
    if (memcmp(sub, "cur", 3) == 0)
        *subdir_r = MAILDIR_CUR;
    else if (memcmp(sub, "new", 3) == 0)
        *subdir_r = MAILDIR_NEW;
    else
        return -1;
    *file_r = slash + 1;
    return 0;
}

int store_oplog_append_info(const uint8_t *rec, size_t len, char **user_r, uint64_t *mailbox_id_r,
                            uint32_t *uid_r, char **rel_r)
{
    struct srd r = { rec, len, 0, false };
    struct op_head h;
    if (op_head_read(&r, &h) < 0 || h.type != STORE_OP_APPEND)
        return -1;
    uint32_t uid = rd_u32(&r);
    char rel[2048];
    rd_str(&r, rel, sizeof rel);
    if (r.bad)
        return -1;
    *user_r = mx_strdup(h.user);
    *mailbox_id_r = h.mailbox_id;
    *uid_r = uid;
    *rel_r = mx_strdup(rel);
    return 0;
}

int store_message_locate(struct store *st, MDB_txn *txn, const char *user, uint64_t mailbox_id,
                         uint32_t uid, char **path_r)
{
    size_t ul = strlen(user);
    MDB_cursor *c;
    if (mdb_cursor_open(txn, st->mailboxes, &c) != 0)
        return -1;
    MDB_val k = { ul + 1, (void *)user }, v;
    char *name = NULL;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && name == NULL;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= ul + 1 || memcmp(k.mv_data, user, ul + 1) != 0)
            break;
        struct store_mailbox mb;
        if (mailbox_decode(v.mv_data, v.mv_size, &mb) == 0 && mb.id == mailbox_id)
            name = mx_strndup((const char *)k.mv_data + ul + 1, k.mv_size - ul - 1);
    }
    mdb_cursor_close(c);
    struct store_message m;
    char *udir = NULL, *dir = NULL;
    const char *error;
    int ret = 1;
    if (name && store_message_get(st, txn, mailbox_id, uid, &m) == 0 && !m.expunged &&
        store_user_dir(st, user, &udir, &error) == 0 && mailbox_name_to_dir(name, &dir, &error) == 0) {
        *path_r = mx_asprintf("%s/%s%s%s/%s", udir, dir, *dir ? "/" : "",
                              m.subdir == MAILDIR_CUR ? "cur" : "new", m.file);
        ret = 0;
    }
    free(udir);
    free(dir);
    free(name);
    return ret;
}

/* apply_file - save body under the record's exact file name: tmp/, fsync,
 * mtime = internal date, rename into cur/ or new/ (replacing a copy an
 * earlier, uncommitted apply left). The directory fsync is the batch's. */
static int apply_file(struct batch_folder *f, const char *name, enum maildir_subdir subdir,
                      const char *file, const void *body, size_t len, uint64_t idate,
                      bool sync_file, char **error_r)
{
    char *dir = NULL;
    const char *error;
    if (mailbox_name_to_dir(name, &dir, &error) < 0) {
        *error_r = mx_asprintf("mailbox %s: %s", name, error);
        return -1;
    }
    const char *sep = *dir ? "/" : "";
    char *tmp = mx_asprintf("%s%stmp/%s", dir, sep, file);
    char *dst = mx_asprintf("%s%s%s/%s", dir, sep, subdir == MAILDIR_CUR ? "cur" : "new", file);
    int rootfd = maildir_root_fd(f->md);
    int ret = -1;
    int fd = openat(rootfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        *error_r = mx_asprintf("create %s/%s: %s", maildir_path(f->md), tmp, strerror(errno));
        goto out;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, (const uint8_t *)body + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    struct timespec times[2] = { { (time_t)(idate / 1000), (long)(idate % 1000) * 1000000 },
                                 { (time_t)(idate / 1000), (long)(idate % 1000) * 1000000 } };
    if (done != len || futimens(fd, times) != 0 || (sync_file && fsync(fd) != 0)) {
        *error_r = mx_asprintf("write %s/%s: %s", maildir_path(f->md), tmp, strerror(errno));
        close(fd);
        (void)unlinkat(rootfd, tmp, 0);
        goto out;
    }
    close(fd);
    if (renameat(rootfd, tmp, rootfd, dst) != 0) {
        *error_r = mx_asprintf("rename %s/%s: %s", maildir_path(f->md), dst, strerror(errno));
        (void)unlinkat(rootfd, tmp, 0);
        goto out;
    }
    f->dirty = true;
    ret = 0;
out:
    free(tmp);
    free(dst);
    free(dir);
    return ret;
}

static int apply_append(struct store_batch *b, struct srd *r, const struct op_head *h,
                        struct store_mailbox *mb, const void *body, size_t body_len, char **error_r)
{
    struct store_message m;
    memset(&m, 0, sizeof m);
    char rel[2048];
    m.uid = rd_u32(r);
    rd_str(r, rel, sizeof rel);
    m.flags = rd_u32(r) & STORE_FLAG_ALL;
    rd_str(r, m.keywords, sizeof m.keywords);
    m.modseq = rd_u64(r);
    m.internaldate = rd_u64(r);
    m.size = rd_u64(r);
    const uint8_t *id = rd_take(r, MX_MSGID_SIZE);
    const char *file;
    if (r->bad || id == NULL || rel_split(rel, &m.subdir, &file) < 0) {
        *error_r = mx_strdup("malformed APPEND record");
        return -1;
    }
    memcpy(m.msgid.bytes, id, MX_MSGID_SIZE);
    snprintf(m.file, sizeof m.file, "%s", file);
    int err;
    const char *error;
    struct batch_folder *f = batch_folder_get(b, h->user, h->name, true, &err, &error);
    if (f == NULL) {
        *error_r = mx_asprintf("user %s mailbox %s: %s", h->user, h->name, error);
        return -1;
    }
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    if (body) {
        if (apply_file(f, h->name, m.subdir, m.file, body, body_len, m.internaldate, true, error_r) < 0)
            return -1;
        struct mime_cache *mc = NULL;
        if (mime_cache_build(body, body_len, &mc, &error) == 0) {
            mime_cache_serialize(mc, &blob, &blob_len);
            mime_cache_free(&mc);
        }
        (void)maildirsize_append(f->md, (int64_t)body_len, 1, &error);
    }
    /* else: the primary no longer had the file (expunged since): an
     * EXPUNGE record follows, as on the primary */
    m.mime = blob;
    m.mime_len = blob_len;
    if (m.uid >= mb->uidnext)
        mb->uidnext = m.uid + 1;
    if (m.modseq > mb->highestmodseq)
        mb->highestmodseq = m.modseq;
    mb->messages++;
    mb->unseen += !(m.flags & STORE_FLAG_SEEN);
    mb->bytes += m.size;
    int rc = message_put(b, mb->id, &m);
    free(blob);
    if (rc == 0 && !mx_msgid_is_zero(&m.msgid)) {
        uint8_t dk[8 + MX_MSGID_SIZE], uidb[4];
        be64(dk, mb->id);
        memcpy(dk + 8, m.msgid.bytes, MX_MSGID_SIZE);
        be32(uidb, m.uid);
        MDB_val k = { sizeof dk, dk }, v = { 4, uidb };
        rc = mdb_put(b->op, b->st->dedup, &k, &v, MDB_NOOVERWRITE);
        if (rc == MDB_KEYEXIST)
            rc = 0; /* a copy of a message already there: the primary kept the first */
    }
    if (rc != 0)
        *error_r = mx_asprintf("index put: %s", mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

static int apply_message_change(struct store_batch *b, struct srd *r, const struct op_head *h,
                                struct store_mailbox *mb, char **error_r)
{
    struct store_message m;
    uint32_t uid = rd_u32(r);
    uint32_t flags = 0;
    char kw[STORE_KEYWORDS_MAX] = "";
    if (h->type == STORE_OP_FLAGS) {
        flags = rd_u32(r) & STORE_FLAG_ALL;
        rd_str(r, kw, sizeof kw);
    }
    uint64_t modseq = rd_u64(r);
    if (r->bad) {
        *error_r = mx_strdup("malformed record");
        return -1;
    }
    if (store_message_get(b->st, b->op, mb->id, uid, &m) != 0 || m.expunged) {
        *error_r = mx_asprintf("user %s mailbox %s: no live message uid %u", h->user, h->name, uid);
        return -1;
    }
    if (h->type == STORE_OP_FLAGS) {
        if ((m.flags & STORE_FLAG_SEEN) && !(flags & STORE_FLAG_SEEN))
            mb->unseen++;
        else if (!(m.flags & STORE_FLAG_SEEN) && (flags & STORE_FLAG_SEEN) && mb->unseen)
            mb->unseen--;
        m.flags = flags;
        memcpy(m.keywords, kw, sizeof kw);
    } else {
        int err;
        const char *error;
        struct batch_folder *f = batch_folder_get(b, h->user, h->name, false, &err, &error);
        if (f && maildir_message_expunge(f->folder, m.subdir, m.file, 0, &error) == 0) {
            f->dirty = true;
            (void)maildirsize_append(f->md, -(int64_t)m.size, -1, &error);
        }
        m.expunged = true;
        m.mime = NULL;
        m.mime_len = 0;
        if (mb->messages)
            mb->messages--;
        if (!(m.flags & STORE_FLAG_SEEN) && mb->unseen)
            mb->unseen--;
        mb->bytes = mb->bytes >= m.size ? mb->bytes - m.size : 0;
    }
    m.modseq = modseq;
    if (modseq > mb->highestmodseq)
        mb->highestmodseq = modseq;
    int rc = message_put(b, mb->id, &m);
    if (rc != 0)
        *error_r = mx_asprintf("index put: %s", mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

static int apply_mailbox_create(struct store_batch *b, struct srd *r, const struct op_head *h,
                                char **error_r)
{
    struct store_mailbox mb;
    memset(&mb, 0, sizeof mb);
    rd_str(r, mb.special_use, sizeof mb.special_use);
    if (r->bad) {
        *error_r = mx_strdup("malformed MAILBOX_CREATE record");
        return -1;
    }
    int got = store_mailbox_get(b->st, b->op, h->user, h->name, &mb);
    if (got != 1) {
        *error_r = mx_asprintf("user %s mailbox %s: %s", h->user, h->name,
                               got == 0 ? "exists already" : "index read failed");
        return -1;
    }
    int err;
    const char *error;
    if (batch_folder_get(b, h->user, h->name, true, &err, &error) == NULL) {
        *error_r = mx_asprintf("user %s mailbox %s: %s", h->user, h->name, error);
        return -1;
    }
    mb.id = h->mailbox_id;
    mb.uidvalidity = h->uidvalidity;
    mb.uidnext = 1;
    mb.highestmodseq = 1;
    mb.subscribed = orphan_sub_take(b, h->user, h->name) || subscribed_at_create(h->name, mb.special_use);
    /* the counters a promotion continues from: never below what the
     * primary handed out */
    uint64_t id, uv;
    if (meta_get_u64(b, b->op, "mailbox_id", &id) < 0 || meta_get_u64(b, b->op, "uidvalidity", &uv) < 0) {
        *error_r = mx_strdup("index meta unreadable");
        return -1;
    }
    int rc = 0;
    if (mb.id > id)
        rc = meta_put_u64(b, "mailbox_id", mb.id);
    if (rc == 0 && mb.uidvalidity > uv) {
        rc = meta_put_u64(b, "uidvalidity", mb.uidvalidity);
        if (rc == 0 && mb.uidvalidity > uv_file_read(b->st) && uv_file_write(b->st, mb.uidvalidity) < 0)
            rc = EIO;
    }
    if (rc == 0)
        rc = mailbox_put(b, h->user, h->name, &mb);
    if (rc != 0)
        *error_r = mx_asprintf("index put: %s", rc == EIO ? "uidvalidity file" : mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

static int apply_mailbox_delete(struct store_batch *b, const struct op_head *h,
                                const struct store_mailbox *mb, char **error_r)
{
    char *kb;
    MDB_val k = mailbox_key(h->user, h->name, &kb);
    int bad = del_prefix(b, b->st->messages, mb->id) < 0 || del_prefix(b, b->st->dedup, mb->id) < 0 ||
              mdb_del(b->op, b->st->mailboxes, &k, NULL) != 0 ||
              (mb->subscribed && orphan_sub_set(b, h->user, h->name, true) != 0);
    free(kb);
    int err;
    const char *error;
    struct batch_folder *f = bad ? NULL : batch_folder_get(b, h->user, MAILBOX_NAME_INBOX, false, &err, &error);
    if (f && maildir_folder_delete(f->md, h->name, &error) < 0 && errno != ENOENT) {
        *error_r = mx_asprintf("user %s: delete folder %s: %s", h->user, h->name, error);
        return -1;
    }
    if (bad)
        *error_r = mx_asprintf("user %s mailbox %s: index delete failed", h->user, h->name);
    return bad ? -1 : 0;
}

static int apply_mailbox_rename(struct store_batch *b, struct srd *r, const struct op_head *h,
                                const struct store_mailbox *mb, char **error_r)
{
    char target[1024];
    rd_str(r, target, sizeof target);
    struct store_result res;
    char *canonical = r->bad ? NULL : canon(target, &res);
    if (canonical == NULL || strcmp(canonical, target) != 0) {
        free(canonical);
        *error_r = mx_strdup("malformed MAILBOX_RENAME record");
        return -1;
    }
    free(canonical);
    int err;
    const char *error;
    struct batch_folder *f = batch_folder_get(b, h->user, MAILBOX_NAME_INBOX, false, &err, &error);
    /* the first record of a rename moves the children's folders too: for
     * theirs the folder is already gone (ENOENT) */
    if (f == NULL || (maildir_folder_rename(f->md, h->name, target, &error) < 0 && errno != ENOENT)) {
        *error_r = mx_asprintf("user %s: rename folder %s: %s", h->user, h->name, error);
        return -1;
    }
    for (size_t i = 0; i < b->n_folders; i++)
        if (strcmp(b->folders[i].user, h->user) == 0 && strcmp(b->folders[i].name, MAILBOX_NAME_INBOX) != 0 &&
            (strcmp(b->folders[i].name, h->name) == 0 || mailbox_name_is_descendant(b->folders[i].name, h->name))) {
            const char *e2;
            if (b->folders[i].dirty)
                (void)maildir_folder_fsync(b->folders[i].folder, &e2);
            b->folders[i].dirty = false;
            free(b->folders[i].user);
            b->folders[i].user = mx_strdup("");
        }
    char *kb;
    MDB_val k = mailbox_key(h->user, h->name, &kb);
    int rc = mdb_del(b->op, b->st->mailboxes, &k, NULL);
    free(kb);
    if (rc == 0)
        rc = mailbox_put(b, h->user, target, mb);
    if (rc != 0)
        *error_r = mx_asprintf("index put: %s", mdb_strerror(rc));
    return rc == 0 ? 0 : -1;
}

int store_apply(struct store_batch *b, uint64_t seq, const uint8_t *rec, size_t len,
                const void *body, size_t body_len, char **error_r)
{
    *error_r = NULL;
    if (seq != b->seq + 1) {
        *error_r = mx_asprintf("record %llu does not follow the last applied %llu",
                               (unsigned long long)seq, (unsigned long long)b->seq);
        return -1;
    }
    struct srd r = { rec, len, 0, false };
    struct op_head h;
    struct store_result res;
    if (op_head_read(&r, &h) < 0 || store_oplog_type(rec, len) < 0) {
        *error_r = mx_asprintf("record %llu: unknown version or malformed head", (unsigned long long)seq);
        return -1;
    }
    /* the primary wrote canonical names of valid users: anything else did
     * not come from a store */
    char *canonical = canon(h.name, &res), *udir = NULL;
    const char *uerr;
    bool names_ok = canonical && strcmp(canonical, h.name) == 0 && store_user_dir(b->st, h.user, &udir, &uerr) == 0;
    free(canonical);
    free(udir);
    if (!names_ok) {
        *error_r = mx_asprintf("record %llu: invalid user or mailbox name", (unsigned long long)seq);
        return -1;
    }
    if (op_begin(b, &res) < 0) {
        *error_r = mx_strdup("index transaction failed");
        return -1;
    }
    struct store_mailbox mb;
    int rc = 0;
    if (h.type != STORE_OP_MAILBOX_CREATE && h.type != STORE_OP_SUBSCRIPTION) {
        int got = store_mailbox_get(b->st, b->op, h.user, h.name, &mb);
        if (got != 0 || mb.id != h.mailbox_id || mb.uidvalidity != h.uidvalidity) {
            *error_r = mx_asprintf("user %s mailbox %s: %s", h.user, h.name,
                                   got < 0   ? "index read failed"
                                   : got > 0 ? "unknown here (the logs diverged)"
                                             : "id or UIDVALIDITY differ (the logs diverged)");
            rc = -1;
        }
    }
    if (rc == 0) {
        switch (h.type) {
        case STORE_OP_APPEND:
            rc = apply_append(b, &r, &h, &mb, body, body_len, error_r);
            break;
        case STORE_OP_FLAGS:
        case STORE_OP_EXPUNGE:
            rc = apply_message_change(b, &r, &h, &mb, error_r);
            break;
        case STORE_OP_MAILBOX_CREATE:
            rc = apply_mailbox_create(b, &r, &h, error_r);
            break;
        case STORE_OP_MAILBOX_DELETE:
            rc = apply_mailbox_delete(b, &h, &mb, error_r);
            break;
        case STORE_OP_MAILBOX_RENAME:
            rc = apply_mailbox_rename(b, &r, &h, &mb, error_r);
            break;
        case STORE_OP_MAILBOX_SUBSCRIBE:
            mb.subscribed = rd_u8(&r) != 0;
            rc = r.bad ? -1 : 0;
            if (rc < 0)
                *error_r = mx_strdup("malformed MAILBOX_SUBSCRIBE record");
            break;
        case STORE_OP_SUBSCRIPTION: {
            bool on = rd_u8(&r) != 0;
            rc = r.bad ? -1 : orphan_sub_set(b, h.user, h.name, on) != 0 ? -1 : 0;
            if (rc < 0)
                *error_r = mx_strdup("malformed or unappliable SUBSCRIPTION record");
            break;
        }
        default:
            rc = -1;
            *error_r = mx_strdup("unknown record type");
            break;
        }
    }
    if (rc == 0 && (h.type == STORE_OP_APPEND || h.type == STORE_OP_FLAGS ||
                    h.type == STORE_OP_EXPUNGE || h.type == STORE_OP_MAILBOX_SUBSCRIBE) &&
        mailbox_put(b, h.user, h.name, &mb) != 0) {
        *error_r = mx_strdup("index put failed");
        rc = -1;
    }
    if (rc == 0) {
        /* the primary's bytes, at the primary's sequence number */
        struct sbuf copy = { 0 };
        sb_put(&copy, rec, len);
        if (oplog_put(b, &copy) != 0) {
            *error_r = mx_strdup("oplog put failed");
            rc = -1;
        }
    }
    if (rc < 0) {
        char *detail = *error_r;
        *error_r = mx_asprintf("record %llu: %s", (unsigned long long)seq, detail ? detail : "failed");
        free(detail);
        op_end(b, false, &res);
        return -1;
    }
    return op_end(b, true, &res) == 0 ? 0 : (*error_r = mx_strdup("index commit failed"), -1);
}

/* ---- replication state in meta ---------------------------------------- */

#define HISTORY_KEY "epoch_history"
/* set by store_wipe, cleared by store_snapshot_load_finish: the index is
 * a partial copy, its log position means nothing */
#define SNAPSHOT_MARK_KEY "snapshot_incomplete"

int store_ha_read(struct store *st, MDB_txn *txn, struct store_ha_meta *m)
{
    memset(m, 0, sizeof *m);
    struct store_batch probe = { .st = st };
    if (meta_get_u64(&probe, txn, "epoch", &m->epoch) < 0 || meta_get_u64(&probe, txn, "seq", &m->seq) < 0 ||
        meta_get_u64(&probe, txn, "oplog_first", &m->oplog_first) < 0)
        return -1;
    if (m->oplog_first == 0)
        m->oplog_first = 1;
    MDB_val mk = { strlen(SNAPSHOT_MARK_KEY), SNAPSHOT_MARK_KEY }, mv;
    m->snapshot_incomplete = mdb_get(txn, st->meta, &mk, &mv) == 0;
    MDB_val k = { strlen(HISTORY_KEY), HISTORY_KEY }, v;
    int rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0 || v.mv_size >= sizeof m->history)
        return -1;
    memcpy(m->history, v.mv_data, v.mv_size);
    m->history[v.mv_size] = '\0';
    return 0;
}

int store_ha_write(struct store_batch *b, const uint64_t *epoch, const char *history)
{
    struct store_result res;
    if (op_begin(b, &res) < 0)
        return -1;
    int rc = epoch ? meta_put_u64(b, "epoch", *epoch) : 0;
    if (rc == 0 && history) {
        MDB_val k = { strlen(HISTORY_KEY), HISTORY_KEY }, v = { strlen(history), (void *)history };
        rc = strlen(history) >= sizeof ((struct store_ha_meta *)0)->history
                 ? EINVAL
                 : mdb_put(b->op, b->st->meta, &k, &v, 0);
    }
    if (rc != 0) {
        mx_log(MX_LOG_ERR, "store.ha_meta_write_failed", MX_KV("error", mdb_strerror(rc)));
        op_end(b, false, &res);
        return -1;
    }
    return op_end(b, true, &res);
}

/* wipe_tree - remove path (below parent_fd) and everything in it,
 * without following symlinks. */
static int wipe_tree(int parent_fd, const char *path)
{
    int fd = openat(parent_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOTDIR || errno == ELOOP ? unlinkat(parent_fd, path, 0) : -1;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return -1;
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (wipe_tree(dirfd(d), de->d_name) < 0)
            ret = -1;
    }
    closedir(d);
    if (ret == 0 && unlinkat(parent_fd, path, AT_REMOVEDIR) != 0)
        ret = -1;
    return ret;
}

int store_wipe(struct store *st, char **error_r)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    MDB_dbi dbis[] = { st->oplog, st->mailboxes, st->messages, st->dedup };
    for (size_t i = 0; rc == 0 && i < sizeof dbis / sizeof dbis[0]; i++)
        rc = mdb_drop(txn, dbis[i], 0);
    static const char *const keys[] = { "seq", "mailbox_id", "oplog_first", HISTORY_KEY };
    for (size_t i = 0; rc == 0 && i < sizeof keys / sizeof keys[0]; i++) {
        MDB_val k = { strlen(keys[i]), (void *)keys[i] };
        rc = mdb_del(txn, st->meta, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    /* orphan subscriptions are index state too: the snapshot brings the
     * primary's */
    MDB_cursor *c = NULL;
    if (rc == 0)
        rc = mdb_cursor_open(txn, st->meta, &c);
    if (rc == 0) {
        size_t pl = strlen(ORPHAN_SUB_PREFIX);
        for (;;) {
            MDB_val k = { pl, ORPHAN_SUB_PREFIX }, v;
            rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            if (rc != 0 || k.mv_size < pl || memcmp(k.mv_data, ORPHAN_SUB_PREFIX, pl) != 0)
                break;
            rc = mdb_cursor_del(c, 0);
            if (rc != 0)
                break;
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        mdb_cursor_close(c);
    }
    if (rc == 0) {
        MDB_val k = { strlen(SNAPSHOT_MARK_KEY), SNAPSHOT_MARK_KEY }, v = { 1, "1" };
        rc = mdb_put(txn, st->meta, &k, &v, 0);
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    if (rc != 0) {
        *error_r = mx_asprintf("store: wipe index under %s: %s", st->root, mdb_strerror(rc));
        return -1;
    }
    /* The index no longer names any file: remove the Maildirs. A crash in
     * between leaves files that start-up adopts as orphans; the primary
     * then sees a diverged log and resyncs again. */
    DIR *d = opendir(st->root);
    if (d == NULL) {
        *error_r = mx_asprintf("store: wipe %s: %s", st->root, strerror(errno));
        return -1;
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", ".index", ".uidvalidity": never a domain */
        if (wipe_tree(dirfd(d), de->d_name) < 0) {
            *error_r = mx_asprintf("store: wipe %s/%s: %s", st->root, de->d_name, strerror(errno));
            ret = -1;
            break;
        }
    }
    if (ret == 0 && fsync(dirfd(d)) != 0) {
        *error_r = mx_asprintf("store: fsync %s: %s", st->root, strerror(errno));
        ret = -1;
    }
    closedir(d);
    return ret;
}

/* ---- snapshot resync ------------------------------------------------------ */

/* The databases a snapshot carries, in the order it carries them: meta
 * first (the counters), mailboxes before messages (a message row needs its
 * mailbox's user and name to place the file). */
enum snapshot_db {
    SNAP_META = 1,
    SNAP_MAILBOXES = 2,
    SNAP_MESSAGES = 3,
    SNAP_DEDUP = 4,
    SNAP_END = 5,
};

/* mailbox id -> user and name, for placing message files */
struct snap_mailbox {
    uint64_t id;
    char *user, *name;
};
struct snap_mailboxes {
    struct snap_mailbox *v;
    size_t n;
    bool sorted;
};

static void snap_mailboxes_add(struct snap_mailboxes *m, uint64_t id, const char *user, size_t user_len,
                               const char *name, size_t name_len)
{
    m->v = mx_reallocarray(m->v, m->n + 1, sizeof *m->v);
    m->v[m->n++] = (struct snap_mailbox){ id, mx_strndup(user, user_len), mx_strndup(name, name_len) };
    m->sorted = false;
}

static int cmp_snap_mailbox(const void *a, const void *b)
{
    uint64_t x = ((const struct snap_mailbox *)a)->id, y = ((const struct snap_mailbox *)b)->id;
    return x < y ? -1 : x > y;
}

static const struct snap_mailbox *snap_mailboxes_find(struct snap_mailboxes *m, uint64_t id)
{
    if (!m->sorted) {
        if (m->n)
            qsort(m->v, m->n, sizeof *m->v, cmp_snap_mailbox);
        m->sorted = true;
    }
    struct snap_mailbox key = { id, NULL, NULL };
    return m->n ? bsearch(&key, m->v, m->n, sizeof *m->v, cmp_snap_mailbox) : NULL;
}

static void snap_mailboxes_free(struct snap_mailboxes *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].user);
        free(m->v[i].name);
    }
    free(m->v);
    *m = (struct snap_mailboxes){ 0 };
}

/* snapshot_meta_key - the meta rows a replica takes over: the store-wide
 * counters a promotion continues from, and orphan subscriptions. Not
 * "version", "seq", "epoch", "epoch_history", "oplog_first" or the marker:
 * those are the replica's own or set when the snapshot finishes. */
static bool snapshot_meta_key(const void *key, size_t len)
{
    size_t pl = strlen(ORPHAN_SUB_PREFIX);
    return (len == 10 && memcmp(key, "mailbox_id", 10) == 0) || (len == 11 && memcmp(key, "uidvalidity", 11) == 0) ||
           (len > pl && memcmp(key, ORPHAN_SUB_PREFIX, pl) == 0);
}

struct store_snapshot {
    struct store *st;
    MDB_txn *txn;
    MDB_cursor *cursor;
    enum snapshot_db db;
    uint64_t seq;
    char history[sizeof ((struct store_ha_meta *)0)->history];
    const uint8_t *rec;
    size_t rec_len;
    struct sbuf wire;
    struct snap_mailboxes mailboxes;
};

int store_snapshot_open(struct store *st, struct store_snapshot **snap_r, char **error_r)
{
    struct store_snapshot *s = mx_calloc(1, sizeof *s);
    s->st = st;
    s->db = SNAP_META;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &s->txn);
    struct store_ha_meta m;
    if (rc != 0 || store_ha_read(st, s->txn, &m) < 0) {
        *error_r = mx_asprintf("store: snapshot read transaction: %s", rc ? mdb_strerror(rc) : "meta unreadable");
        store_snapshot_close(&s);
        return -1;
    }
    s->seq = m.seq;
    memcpy(s->history, m.history, sizeof s->history);
    if (m.seq) {
        uint8_t kb[8];
        be64(kb, m.seq);
        MDB_val k = { 8, kb }, v;
        if (mdb_get(s->txn, st->oplog, &k, &v) == 0) {
            s->rec = v.mv_data;
            s->rec_len = v.mv_size;
        }
    }
    *snap_r = s;
    return 0;
}

void store_snapshot_close(struct store_snapshot **sp)
{
    struct store_snapshot *s = *sp;
    if (s == NULL)
        return;
    if (s->cursor)
        mdb_cursor_close(s->cursor);
    if (s->txn)
        mdb_txn_abort(s->txn);
    free(s->wire.data);
    snap_mailboxes_free(&s->mailboxes);
    free(s);
    *sp = NULL;
}

uint64_t store_snapshot_seq(const struct store_snapshot *s) { return s->seq; }
const char *store_snapshot_history(const struct store_snapshot *s) { return s->history; }

const uint8_t *store_snapshot_record(const struct store_snapshot *s, size_t *len_r)
{
    *len_r = s->rec_len;
    return s->rec;
}

static MDB_dbi snapshot_dbi(const struct store *st, enum snapshot_db db)
{
    switch (db) {
    case SNAP_META:
        return st->meta;
    case SNAP_MAILBOXES:
        return st->mailboxes;
    case SNAP_MESSAGES:
        return st->messages;
    default:
        return st->dedup;
    }
}

int store_snapshot_next(struct store_snapshot *s, struct store_snapshot_row *row)
{
    memset(row, 0, sizeof *row);
    for (;;) {
        if (s->db == SNAP_END)
            return 1;
        MDB_val k, v;
        int rc;
        if (s->cursor == NULL) {
            rc = mdb_cursor_open(s->txn, snapshot_dbi(s->st, s->db), &s->cursor);
            if (rc == 0)
                rc = mdb_cursor_get(s->cursor, &k, &v, MDB_FIRST);
        } else {
            rc = mdb_cursor_get(s->cursor, &k, &v, MDB_NEXT);
        }
        if (rc == MDB_NOTFOUND) {
            mdb_cursor_close(s->cursor);
            s->cursor = NULL;
            s->db++;
            continue;
        }
        if (rc != 0) {
            mx_log(MX_LOG_ERR, "store.snapshot_read_failed", MX_KV("root", s->st->root),
                   MX_KV("error", mdb_strerror(rc)));
            return -1;
        }
        if (s->db == SNAP_META && !snapshot_meta_key(k.mv_data, k.mv_size))
            continue;
        if (s->db == SNAP_MAILBOXES) {
            const char *key = k.mv_data;
            const char *nul = memchr(key, '\0', k.mv_size);
            struct store_mailbox mb;
            if (nul == NULL || mailbox_decode(v.mv_data, v.mv_size, &mb) < 0) {
                mx_log(MX_LOG_ERR, "store.snapshot_bad_row", MX_KV("db", "mailboxes"), MX_KV("root", s->st->root));
                return -1;
            }
            size_t ul = (size_t)(nul - key);
            snap_mailboxes_add(&s->mailboxes, mb.id, key, ul, nul + 1, k.mv_size - ul - 1);
            row->mailbox_id = mb.id;
        } else if (s->db == SNAP_MESSAGES) {
            struct store_message m;
            memset(&m, 0, sizeof m);
            if (k.mv_size != 12 || message_decode(v.mv_data, v.mv_size, &m) < 0) {
                mx_log(MX_LOG_ERR, "store.snapshot_bad_row", MX_KV("db", "messages"), MX_KV("root", s->st->root));
                return -1;
            }
            row->mailbox_id = get_be64(k.mv_data);
            row->uid = get_be32((const uint8_t *)k.mv_data + 8);
            const struct snap_mailbox *mb = snap_mailboxes_find(&s->mailboxes, row->mailbox_id);
            if (mb == NULL) {
                /* a row without its mailbox: no replica could place it,
                 * and no client of ours sees it */
                mx_log(MX_LOG_WARNING, "store.snapshot_stray_message", MX_KVU("mailbox_id", row->mailbox_id),
                       MX_KVU("uid", row->uid));
                continue;
            }
            if (!m.expunged) {
                char *udir = NULL, *dir = NULL;
                const char *error;
                if (store_user_dir(s->st, mb->user, &udir, &error) == 0 &&
                    mailbox_name_to_dir(mb->name, &dir, &error) == 0)
                    row->path = mx_asprintf("%s/%s%s%s/%s", udir, dir, *dir ? "/" : "",
                                            m.subdir == MAILDIR_CUR ? "cur" : "new", m.file);
                free(udir);
                free(dir);
                snprintf(row->user, sizeof row->user, "%s", mb->user);
            }
        }
        s->wire.len = 0;
        sb_u8(&s->wire, (uint8_t)s->db);
        sb_bytes(&s->wire, k.mv_data, k.mv_size);
        sb_put(&s->wire, v.mv_data, v.mv_size);
        row->wire = s->wire.data;
        row->wire_len = s->wire.len;
        return 0;
    }
}

struct store_snapshot_load {
    uint64_t seq;
    struct snap_mailboxes mailboxes;
    uint64_t rows, files, bytes;
};

bool store_snapshot_pending(struct store *st)
{
    MDB_txn *txn;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
        return true;
    MDB_val k = { strlen(SNAPSHOT_MARK_KEY), SNAPSHOT_MARK_KEY }, v;
    int rc = mdb_get(txn, st->meta, &k, &v);
    mdb_txn_abort(txn);
    return rc != MDB_NOTFOUND;
}

struct store_snapshot_load *store_snapshot_load_new(uint64_t seq)
{
    struct store_snapshot_load *l = mx_calloc(1, sizeof *l);
    l->seq = seq;
    return l;
}

void store_snapshot_load_free(struct store_snapshot_load **lp)
{
    if (*lp == NULL)
        return;
    snap_mailboxes_free(&(*lp)->mailboxes);
    free(*lp);
    *lp = NULL;
}

uint64_t store_snapshot_load_seq(const struct store_snapshot_load *l) { return l->seq; }

void store_snapshot_load_stats(const struct store_snapshot_load *l, uint64_t *rows_r, uint64_t *files_r,
                               uint64_t *bytes_r)
{
    *rows_r = l->rows;
    *files_r = l->files;
    *bytes_r = l->bytes;
}

/* load_meta - a counter never goes below what this node handed out or
 * saw before (the "uidvalidity" high-water mark survives the wipe). */
static int load_meta(struct store_batch *b, const MDB_val *k, const MDB_val *v, char **error_r)
{
    size_t pl = strlen(ORPHAN_SUB_PREFIX);
    if (k->mv_size > pl && memcmp(k->mv_data, ORPHAN_SUB_PREFIX, pl) == 0) {
        const char *user = (const char *)k->mv_data + pl;
        const char *nul = memchr(user, '\0', k->mv_size - pl);
        char *u = nul ? mx_strndup(user, (size_t)(nul - user)) : NULL, *udir = NULL;
        const char *error;
        bool ok = u && store_user_dir(b->st, u, &udir, &error) == 0;
        free(u);
        free(udir);
        if (!ok) {
            *error_r = mx_strdup("orphan subscription of an invalid user");
            return -1;
        }
        int rc = mdb_put(b->op, b->st->meta, (MDB_val *)k, (MDB_val *)v, 0);
        if (rc != 0)
            *error_r = mx_asprintf("meta put: %s", mdb_strerror(rc));
        return rc ? -1 : 0;
    }
    if (v->mv_size != 8 || !snapshot_meta_key(k->mv_data, k->mv_size)) {
        *error_r = mx_strdup("unexpected meta row");
        return -1;
    }
    char key[16];
    snprintf(key, sizeof key, "%.*s", (int)k->mv_size, (const char *)k->mv_data);
    uint64_t theirs = get_be64(v->mv_data), ours;
    if (meta_get_u64(b, b->op, key, &ours) < 0) {
        *error_r = mx_asprintf("meta %s unreadable", key);
        return -1;
    }
    if (theirs <= ours)
        return 0;
    int rc = meta_put_u64(b, key, theirs);
    if (rc == 0 && strcmp(key, "uidvalidity") == 0 && theirs > uv_file_read(b->st) && uv_file_write(b->st, theirs) < 0)
        rc = EIO;
    if (rc != 0)
        *error_r = mx_asprintf("meta %s: %s", key, rc == EIO ? "uidvalidity file" : mdb_strerror(rc));
    return rc ? -1 : 0;
}

/* load_mailbox - a valid user and canonical name (the path is computed
 * from them: nothing hostile reaches outside the user's Maildir), the
 * folder created, the row as the primary has it. */
static int load_mailbox(struct store_batch *b, struct store_snapshot_load *l, const MDB_val *k,
                        const MDB_val *v, char **error_r)
{
    const char *key = k->mv_data;
    const char *nul = memchr(key, '\0', k->mv_size);
    struct store_mailbox mb;
    if (nul == NULL || mailbox_decode(v->mv_data, v->mv_size, &mb) < 0) {
        *error_r = mx_strdup("malformed mailbox row");
        return -1;
    }
    size_t ul = (size_t)(nul - key);
    char *user = mx_strndup(key, ul), *name = mx_strndup(nul + 1, k->mv_size - ul - 1);
    struct store_result res;
    char *canonical = canon(name, &res);
    int ret = -1, err;
    const char *error;
    if (canonical == NULL || strcmp(canonical, name) != 0) {
        *error_r = mx_asprintf("user %s: mailbox name %s is not canonical", user, name);
    } else if (batch_folder_get(b, user, name, true, &err, &error) == NULL) {
        *error_r = mx_asprintf("user %s mailbox %s: %s", user, name, error);
    } else {
        int rc = mdb_put(b->op, b->st->mailboxes, (MDB_val *)k, (MDB_val *)v, MDB_APPEND);
        if (rc == 0) {
            snap_mailboxes_add(&l->mailboxes, mb.id, user, ul, name, strlen(name));
            ret = 0;
        } else {
            *error_r = mx_asprintf("user %s mailbox %s: index put: %s", user, name, mdb_strerror(rc));
        }
    }
    free(canonical);
    free(user);
    free(name);
    return ret;
}

static int load_message(struct store_batch *b, struct store_snapshot_load *l, const MDB_val *k,
                        const MDB_val *v, const void *body, size_t body_len, char **error_r)
{
    struct store_message m;
    memset(&m, 0, sizeof m);
    if (k->mv_size != 12 || message_decode(v->mv_data, v->mv_size, &m) < 0 ||
        (!m.expunged && !maildir_filename_safe(m.file))) {
        *error_r = mx_strdup("malformed message row");
        return -1;
    }
    uint64_t id = get_be64(k->mv_data);
    uint32_t uid = get_be32((const uint8_t *)k->mv_data + 8);
    const struct snap_mailbox *mb = snap_mailboxes_find(&l->mailboxes, id);
    if (mb == NULL) {
        *error_r = mx_asprintf("message uid %u of an unknown mailbox id %llu", uid, (unsigned long long)id);
        return -1;
    }
    if (!m.expunged && body) {
        int err;
        const char *error;
        struct batch_folder *f = batch_folder_get(b, mb->user, mb->name, true, &err, &error);
        if (f == NULL) {
            *error_r = mx_asprintf("user %s mailbox %s: %s", mb->user, mb->name, error);
            return -1;
        }
        if (apply_file(f, mb->name, m.subdir, m.file, body, body_len, m.internaldate, false, error_r) < 0)
            return -1;
        b->syncfs_before_commit = true;
        l->files++;
        l->bytes += body_len;
    }
    int rc = mdb_put(b->op, b->st->messages, (MDB_val *)k, (MDB_val *)v, MDB_APPEND);
    if (rc != 0)
        *error_r = mx_asprintf("user %s mailbox %s uid %u: index put: %s", mb->user, mb->name, uid, mdb_strerror(rc));
    return rc ? -1 : 0;
}

int store_snapshot_load_row(struct store_batch *b, struct store_snapshot_load *l, const uint8_t *wire,
                            size_t wire_len, const void *body, size_t body_len, char **error_r)
{
    *error_r = NULL;
    struct srd r = { wire, wire_len, 0, false };
    uint8_t db = rd_u8(&r);
    size_t klen = 0;
    const uint8_t *key = rd_bytes(&r, &klen);
    if (r.bad || key == NULL || klen == 0 || klen > 4096 || db < SNAP_META || db > SNAP_DEDUP) {
        *error_r = mx_strdup("malformed snapshot row");
        return -1;
    }
    MDB_val k = { klen, (void *)key }, v = { wire_len - r.off, (void *)(wire + r.off) };
    struct store_result res;
    if (op_begin(b, &res) < 0) {
        *error_r = mx_strdup("index transaction failed");
        return -1;
    }
    int rc;
    switch (db) {
    case SNAP_META:
        rc = load_meta(b, &k, &v, error_r);
        break;
    case SNAP_MAILBOXES:
        rc = load_mailbox(b, l, &k, &v, error_r);
        break;
    case SNAP_MESSAGES:
        rc = load_message(b, l, &k, &v, body, body_len, error_r);
        break;
    default:
        rc = k.mv_size == 8 + MX_MSGID_SIZE && v.mv_size == 4
                 ? mdb_put(b->op, b->st->dedup, &k, &v, MDB_APPEND)
                 : EINVAL;
        if (rc != 0)
            *error_r = mx_asprintf("dedup row: %s", rc == EINVAL ? "malformed" : mdb_strerror(rc));
        rc = rc ? -1 : 0;
        break;
    }
    if (op_end(b, rc == 0, &res) < 0 && rc == 0) {
        *error_r = mx_strdup("index commit failed");
        rc = -1;
    }
    if (rc == 0)
        l->rows++;
    return rc;
}

int store_snapshot_load_finish(struct store_batch *b, struct store_snapshot_load *l, const char *history,
                               const uint8_t *rec, size_t rec_len, char **error_r)
{
    struct store_result res;
    if (op_begin(b, &res) < 0) {
        *error_r = mx_strdup("index transaction failed");
        return -1;
    }
    uint8_t kb[8];
    be64(kb, l->seq);
    MDB_val k = { 8, kb }, v = { rec_len, (void *)rec };
    MDB_val hk = { strlen(HISTORY_KEY), HISTORY_KEY }, hv = { strlen(history), (void *)history };
    MDB_val mk = { strlen(SNAPSHOT_MARK_KEY), SNAPSHOT_MARK_KEY };
    int rc = strlen(history) >= sizeof ((struct store_ha_meta *)0)->history ? EINVAL : 0;
    /* the record at S0 stays the log's only one: a later HELLO compares
     * the replica's last record with the primary's, byte for byte */
    if (rc == 0 && rec && l->seq)
        rc = mdb_put(b->op, b->st->oplog, &k, &v, 0);
    if (rc == 0)
        rc = meta_put_u64(b, "seq", l->seq);
    if (rc == 0)
        rc = meta_put_u64(b, "oplog_first", rec && l->seq ? l->seq : l->seq + 1);
    if (rc == 0)
        rc = mdb_put(b->op, b->st->meta, &hk, &hv, 0);
    if (rc == 0) {
        rc = mdb_del(b->op, b->st->meta, &mk, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc != 0) {
        *error_r = mx_asprintf("finish snapshot at seq %llu: %s", (unsigned long long)l->seq, mdb_strerror(rc));
        op_end(b, false, &res);
        return -1;
    }
    if (op_end(b, true, &res) < 0) {
        *error_r = mx_strdup("index commit failed");
        return -1;
    }
    b->seq = l->seq;
    return 0;
}
