/* store_replication - role/epoch from mx-ha, the primary's oplog shipper
 * and the replica's applier. See store_replication.h for the rules. */
#include "store_replication.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_log.h"

/* An OPLOG_APPLY stops growing past these (one record always goes; a
 * maximal message plus its record still fits MX_WIRE_FRAME_MAX). A live
 * batch (at most store.max_batch appends) fits; a catch-up is cut so one
 * message applies (a file fsync per APPEND) well within the timeout. */
#define SHIP_FRAME_SOFT_MAX (MX_WIRE_FRAME_MAX / 8)
#define SHIP_RECORDS_MAX 1024
#define SHIP_BODIES_MAX 256 /* the default store.max_batch */
/* The largest message file shipped (bigger than any SIZE limit). */
#define SHIP_BODY_MAX (MX_WIRE_FRAME_MAX - 1024 * 1024)
/* A SNAPSHOT_CHUNK stops growing past these (one row always goes): the
 * replica applies it in one commit well within the timeout, and keeps at
 * most this many Maildir folders open for it. */
#define SNAPSHOT_ROWS_MAX 2048
#define SNAPSHOT_FOLDERS_MAX 64

/* ---- epoch histories ----------------------------------------------------- */

int store_history_parse(const char *text, struct store_epoch_range *v, size_t *n_r)
{
    size_t n = 0;
    const char *p = text ? text : "";
    while (*p) {
        char *end;
        errno = 0;
        unsigned long long e = strtoull(p, &end, 10);
        if (errno || end == p || *end != ':')
            return -1;
        p = end + 1;
        unsigned long long s = strtoull(p, &end, 10);
        if (errno || end == p || (*end != ',' && *end != '\0') || n == STORE_HISTORY_MAX)
            return -1;
        if (n && (e <= v[n - 1].epoch || s < v[n - 1].first_seq))
            return -1;
        v[n++] = (struct store_epoch_range){ e, s };
        p = *end ? end + 1 : end;
    }
    *n_r = n;
    return 0;
}

int store_history_format(const struct store_epoch_range *v, size_t n, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + len, size - len, "%s%" PRIu64 ":%" PRIu64, i ? "," : "", v[i].epoch,
                         v[i].first_seq);
        if (w < 0 || (size_t)w >= size - len)
            return -1;
        len += (size_t)w;
    }
    return 0;
}

uint64_t store_history_epoch_of(const struct store_epoch_range *v, size_t n, uint64_t seq)
{
    uint64_t epoch = 0;
    for (size_t i = 0; i < n && v[i].first_seq <= seq; i++)
        epoch = v[i].epoch;
    return epoch;
}

bool store_history_agree(const struct store_epoch_range *a, size_t na,
                         const struct store_epoch_range *b, size_t nb, uint64_t upto)
{
    /* Both are step functions of seq: they agree on 1..upto iff they agree
     * at 1 and at every step of either inside the range. */
    if (upto == 0)
        return true;
    if (store_history_epoch_of(a, na, 1) != store_history_epoch_of(b, nb, 1))
        return false;
    for (int side = 0; side < 2; side++) {
        const struct store_epoch_range *v = side ? b : a;
        size_t n = side ? nb : na;
        for (size_t i = 0; i < n && v[i].first_seq <= upto; i++)
            if (v[i].first_seq >= 1 &&
                store_history_epoch_of(a, na, v[i].first_seq) != store_history_epoch_of(b, nb, v[i].first_seq))
                return false;
    }
    return true;
}

void store_history_begin_epoch(struct store_epoch_range *v, size_t *n, uint64_t epoch,
                               uint64_t first_seq)
{
    if (*n && v[*n - 1].epoch >= epoch)
        return;
    /* An epoch in which nothing was written says nothing: replace it. */
    if (*n && v[*n - 1].first_seq == first_seq) {
        v[*n - 1].epoch = epoch;
        return;
    }
    if (*n == STORE_HISTORY_MAX) {
        /* dropping the oldest range can only make two logs look different
         * (a needless resync), never alike */
        memmove(v, v + 1, (STORE_HISTORY_MAX - 1) * sizeof *v);
        (*n)--;
    }
    v[(*n)++] = (struct store_epoch_range){ epoch, first_seq };
}

/* history_upto - the ranges of v that cover seq 1..last (a replica keeps
 * its primary's history only for the records it holds). */
static size_t history_upto(const struct store_epoch_range *v, size_t n, uint64_t last)
{
    size_t k = 0;
    while (k < n && v[k].first_seq <= last)
        k++;
    return k;
}

/* ---- state ---------------------------------------------------------------- */

enum peer_state {
    PEER_IDLE,     /* send HELLO next */
    PEER_STREAM,   /* position known: ship from acked + 1 */
    PEER_SNAPSHOT, /* RESYNC_BEGIN, SNAPSHOT_CHUNKs, SNAPSHOT_END in flight */
};

/* A snapshot row read but not sent yet (it did not fit the last chunk). */
struct held_row {
    bool valid;
    uint8_t *wire;
    size_t wire_len;
    uint8_t *body; /* NULL: none (a tombstone, or the file is gone) */
    size_t body_len;
    uint64_t mailbox_id;
};

/* The primary's side of one replica's snapshot resync. */
struct peer_snapshot {
    struct store_snapshot *snap; /* the read transaction at S0 */
    uint64_t seq;                /* S0 */
    bool begun;                  /* RESYNC_BEGIN acked: chunks go now */
    bool rows_done;              /* every row sent: SNAPSHOT_END next */
    bool end_sent;
    struct held_row held;
    uint64_t started_ms, rows, files, bytes, files_gone;
};

struct peer {
    struct store_repl *r;
    char *endpoint;
    struct mx_client *client;
    enum peer_state state;
    bool busy;         /* a request is in flight */
    bool told_in_sync; /* the last APPLY it acked said lag 0 */
    bool in_sync;      /* acked within the timeout, nothing left behind */
    bool lost;         /* an exchange timed out or failed since its last ack:
                        * reported (F_IN_SYNC 0) so mx-ha drops it */
    /* Client writes wait for its ack. A new peer starts so; the flag is
     * cleared only while the peer cannot be promoted: it has never been told
     * "nothing left" (F_LAG 0, which lets it report in sync) in this epoch
     * and needs more than one message to catch up, or it wiped itself for a
     * snapshot. A long catch-up then holds up no write - as PostgreSQL
     * counts only a caught-up standby as synchronous - and once told lag 0
     * it is waited for again. */
    bool must_ack;
    bool told_lag0; /* sent F_LAG 0 in this epoch: it may be promoted */
    uint64_t acked;    /* last seq it applied durably (PEER_STREAM) */
    uint64_t in_flight_last;
    uint64_t last_ok_ms;
    struct peer_snapshot *snapshot; /* PEER_SNAPSHOT */
};

struct store_repl {
    struct event_base *base;
    struct mx_bus *bus;
    struct store *st;
    char *shard, *pair, *client_endpoint;
    bool sync;
    unsigned timeout_ms, lease_ms, heartbeat_ms;
    store_repl_notify_fn *notify;
    void *notify_ctx;

    enum mx_ha_role role;
    uint64_t epoch;
    struct mx_client *ha;
    bool ha_busy, report_again;
    uint64_t lease_ms_at; /* monotonic ms of the last mx-ha ack; 0 = never */
    uint64_t fenced_at_ms; /* when the role last became FENCED */
    struct event *tick;

    struct mx_server *server; /* replication listener */
    bool replica_in_sync;
    /* a primary of our epoch asked where our log ends (HELLO) since this
     * process started: only then may it ship, since records we wrote on
     * our own (start-up recovery) must be seen before any are skipped */
    bool greeted;
    /* replica: meta "snapshot_incomplete" (the index is a partial copy);
     * load: the snapshot being received (RESYNC_BEGIN .. SNAPSHOT_END) */
    bool snapshot_incomplete;
    struct store_snapshot_load *load;
    uint64_t load_started_ms;

    struct peer **peers;
    size_t n_peers;
    uint64_t committed; /* primary: last committed seq */
    /* primary: held client writes up to this seq lost a replica of their
     * epoch before it confirmed them; they are answered TEMPFAIL, never
     * OK (DESIGN.md: a replica that does not answer in time is a tempfail,
     * even once mx-ha lets the primary go on without it) */
    uint64_t unconfirmed_upto;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *role_name(enum mx_ha_role role)
{
    switch (role) {
    case MX_HA_PRIMARY:
        return "primary";
    case MX_HA_REPLICA:
        return "replica";
    case MX_HA_STANDBY:
        return "standby";
    default:
        return "fenced";
    }
}

bool store_repl_primary(const struct store_repl *r) { return r == NULL || r->role == MX_HA_PRIMARY; }

uint64_t store_repl_safe_seq(const struct store_repl *r)
{
    if (r == NULL)
        return UINT64_MAX;
    if (r->role != MX_HA_PRIMARY)
        return 0;
    if (!r->sync || r->n_peers == 0)
        return UINT64_MAX;
    uint64_t safe = UINT64_MAX;
    for (size_t i = 0; i < r->n_peers; i++) {
        const struct peer *p = r->peers[i];
        if (!p->must_ack)
            continue;
        uint64_t a = p->state == PEER_STREAM ? p->acked : 0;
        if (a < safe)
            safe = a;
    }
    return safe;
}

uint64_t store_repl_unconfirmed_upto(const struct store_repl *r)
{
    return r ? r->unconfirmed_upto : 0;
}

/* writes_unconfirmable - the writes committed so far will not all be
 * confirmed by the replicas they were waiting for. */
static void writes_unconfirmable(struct store_repl *r, const char *replica, const char *why)
{
    if (r->role != MX_HA_PRIMARY || !r->sync || r->committed <= r->unconfirmed_upto)
        return;
    mx_log(MX_LOG_WARNING, "store.writes_unconfirmed", MX_KV("pair", r->pair), MX_KV("replica", replica),
           MX_KV("why", why), MX_KVU("upto_seq", r->committed),
           MX_KV("effect", "held client writes are answered TEMPFAIL"));
    r->unconfirmed_upto = r->committed;
    if (r->notify)
        r->notify(r->notify_ctx);
}

bool store_repl_may_hold(const struct store_repl *r)
{
    return r && r->role == MX_HA_FENCED && now_ms() - r->fenced_at_ms < r->lease_ms;
}

const char *store_repl_endpoint(const struct store_repl *r)
{
    return r && r->server ? mx_server_endpoint(r->server) : "";
}

/* meta_read - epoch, last seq and history from a read transaction. */
static int meta_read(struct store_repl *r, struct store_ha_meta *m, struct store_epoch_range *hist,
                     size_t *n_hist)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(store_env(r->st), NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        mx_log(MX_LOG_ERR, "store.repl_read_failed", MX_KV("error", mdb_strerror(rc)));
        return -1;
    }
    int ret = store_ha_read(r->st, txn, m);
    mdb_txn_abort(txn);
    if (ret == 0 && hist && store_history_parse(m->history, hist, n_hist) < 0) {
        mx_log(MX_LOG_ERR, "store.repl_history_corrupt", MX_KV("history", m->history));
        ret = -1;
    }
    return ret;
}

/* meta_write - persist epoch and/or history in one durable commit. */
static int meta_write(struct store_repl *r, const uint64_t *epoch, const char *history)
{
    struct store_batch *b = NULL;
    char *error = NULL;
    if (store_batch_begin(r->st, &b, &error) < 0 || store_ha_write(b, epoch, history) < 0) {
        store_batch_abort(&b);
        mx_log(MX_LOG_ERR, "store.repl_meta_failed", MX_KV("error", error ? error : "write failed"));
        free(error);
        return -1;
    }
    if (store_batch_commit(&b, &error) < 0) {
        mx_log(MX_LOG_ERR, "store.repl_meta_failed", MX_KV("error", error));
        free(error);
        return -1;
    }
    return 0;
}

static void set_role(struct store_repl *r, enum mx_ha_role role, const char *why)
{
    if (r->role == role)
        return;
    mx_log(role == MX_HA_FENCED ? MX_LOG_WARNING : MX_LOG_NOTICE, "store.ha_role",
           MX_KV("pair", r->pair), MX_KV("from", role_name(r->role)), MX_KV("to", role_name(role)),
           MX_KVU("epoch", r->epoch), MX_KV("why", why));
    r->role = role;
    if (role == MX_HA_FENCED)
        r->fenced_at_ms = now_ms();
    r->report_again = true;
    if (r->notify)
        r->notify(r->notify_ctx);
}

/* adopt_epoch - persist a higher epoch before anything acts on it. A
 * primary that learns of a higher epoch from elsewhere was deposed. */
static int adopt_epoch(struct store_repl *r, uint64_t epoch, const char *source, bool from_ha)
{
    if (epoch <= r->epoch)
        return 0;
    if (meta_write(r, &epoch, NULL) < 0) {
        set_role(r, MX_HA_FENCED, "cannot persist the epoch");
        return -1;
    }
    mx_log(MX_LOG_NOTICE, "store.ha_epoch", MX_KV("pair", r->pair), MX_KVU("from", r->epoch),
           MX_KVU("to", epoch), MX_KV("source", source));
    r->epoch = epoch;
    r->replica_in_sync = false; /* in sync only with a primary of this epoch */
    r->greeted = false;
    if (r->role == MX_HA_PRIMARY && !from_ha)
        set_role(r, MX_HA_FENCED, "a higher epoch exists");
    return 0;
}

/* ---- primary: shipping -------------------------------------------------- */

static void peer_kick(struct peer *p);

static void held_row_clear(struct held_row *h)
{
    free(h->wire);
    free(h->body);
    memset(h, 0, sizeof *h);
}

/* peer_snapshot_end - drop a peer's snapshot (its read transaction goes:
 * LMDB may reuse the pages it pinned). */
static void peer_snapshot_end(struct peer *p)
{
    if (p->snapshot == NULL)
        return;
    store_snapshot_close(&p->snapshot->snap);
    held_row_clear(&p->snapshot->held);
    free(p->snapshot);
    p->snapshot = NULL;
}

/* update_trim_floor - the primary keeps the records its replicas still
 * need (store_oplog_set_floor bounds this); no replicas: no such need. */
static void update_trim_floor(struct store_repl *r)
{
    uint64_t floor = UINT64_MAX;
    if (r->role == MX_HA_PRIMARY)
        for (size_t i = 0; i < r->n_peers; i++) {
            const struct peer *p = r->peers[i];
            uint64_t need = p->snapshot ? p->snapshot->seq + 1 : p->acked + 1;
            if (need < floor)
                floor = need;
        }
    store_oplog_set_floor(r->st, floor);
}

static void peer_free(struct peer **pp)
{
    struct peer *p = *pp;
    if (p == NULL)
        return;
    mx_client_free(&p->client); /* a pending callback runs CANCELLED now */
    peer_snapshot_end(p);
    free(p->endpoint);
    free(p);
    *pp = NULL;
}

static void peers_clear(struct store_repl *r)
{
    struct peer **peers = r->peers;
    size_t n = r->n_peers;
    r->peers = NULL;
    r->n_peers = 0;
    for (size_t i = 0; i < n; i++)
        peer_free(&peers[i]);
    free(peers);
    store_oplog_set_floor(r->st, UINT64_MAX);
}

static void peers_set(struct store_repl *r, char **endpoints, size_t n)
{
    peers_clear(r);
    for (size_t i = 0; i < n; i++) {
        struct peer *p = mx_calloc(1, sizeof *p);
        p->r = r;
        p->must_ack = true;
        p->endpoint = mx_strdup(endpoints[i]);
        const char *error;
        struct mx_client_config cc = { .name = "replica", .timeout_ms = r->timeout_ms, .max_attempts = 1,
                                       .stale_epoch_is_reply = true };
        const char *ep = p->endpoint;
        if (mx_client_new(r->bus, &ep, 1, &cc, &p->client, &error) < 0)
            mx_log(MX_LOG_ERR, "store.repl_connect_failed", MX_KV("replica", p->endpoint), MX_KV("error", error));
        r->peers = mx_reallocarray(r->peers, r->n_peers + 1, sizeof *r->peers);
        r->peers[r->n_peers++] = p;
    }
    for (size_t i = 0; i < r->n_peers; i++)
        peer_kick(r->peers[i]);
}

static void frame_head(struct store_repl *r, struct mx_frame *f, enum mx_msg_type type)
{
    mx_frame_init(f, type, 0, NULL);
    mx_frame_put_str(f, F_SHARD, r->shard);
    mx_frame_put_u64(f, F_EPOCH, r->epoch);
}

/* peer_lost - a failed or timed-out exchange: start over with HELLO; a
 * timeout also reports the replica lost (mx-ha then drops it, so writes
 * held for it are released in degraded mode). */
static void peer_lost(struct peer *p, const char *why, bool report_lost)
{
    if (p->in_sync || p->state == PEER_STREAM || (report_lost && !p->lost))
        mx_log(MX_LOG_WARNING, "store.replica_lost", MX_KV("replica", p->endpoint), MX_KV("why", why),
               MX_KVU("acked", p->acked), MX_KVU("committed", p->r->committed));
    if (report_lost)
        p->lost = true;
    if (p->snapshot)
        mx_log(MX_LOG_WARNING, "store.snapshot_aborted", MX_KV("replica", p->endpoint), MX_KV("why", why),
               MX_KVU("seq", p->snapshot->seq), MX_KVU("rows", p->snapshot->rows));
    peer_snapshot_end(p);
    p->state = PEER_IDLE;
    p->in_sync = false;
    p->told_in_sync = false;
    p->r->report_again = true;
    if (report_lost && p->must_ack && p->acked < p->r->committed)
        writes_unconfirmable(p->r, p->endpoint, why);
}

/* refused_with_higher_epoch - the peer knows a newer epoch: we are not
 * the primary any more. */
static bool check_stale(struct peer *p, const struct mx_frame_view *reply)
{
    uint32_t status = MX_STATUS_TEMPFAIL;
    (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (status != MX_STATUS_STALE_EPOCH)
        return false;
    uint64_t epoch = 0;
    struct store_repl *r = p->r;
    mx_log(MX_LOG_WARNING, "store.repl_refused_stale", MX_KV("replica", p->endpoint), MX_KVU("epoch", r->epoch));
    if (mx_frame_get_u64(reply, F_EPOCH, &epoch) == 0 && epoch > r->epoch)
        (void)adopt_epoch(r, epoch, p->endpoint, false);
    else
        set_role(r, MX_HA_FENCED, "a replica refused our epoch");
    return true;
}

/* read_record - the raw record at seq (heap copy); 1 if there is none. */
struct get_ctx {
    uint64_t seq;
    uint8_t *rec;
    size_t len;
};
static int get_fn(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    struct get_ctx *g = ctx;
    if (seq == g->seq) {
        g->rec = mx_memdup(rec, len ? len : 1);
        g->len = len;
    }
    return 1;
}
static int read_record(struct store *st, MDB_txn *txn, uint64_t seq, uint8_t **rec_r, size_t *len_r)
{
    struct get_ctx g = { seq, NULL, 0 };
    if (store_oplog_foreach(st, txn, seq, get_fn, &g) < 0)
        return -1;
    *rec_r = g.rec;
    *len_r = g.len;
    return g.rec ? 0 : 1;
}

static int read_file(const char *path, uint8_t **data_r, size_t *len_r)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0 || (uint64_t)sb.st_size > SHIP_BODY_MAX) {
        int e = S_ISREG(sb.st_mode) ? EFBIG : EINVAL;
        close(fd);
        errno = e;
        return -1;
    }
    size_t len = (size_t)sb.st_size, got = 0;
    uint8_t *data = mx_malloc(len ? len : 1);
    while (got < len) {
        ssize_t n = pread(fd, data + got, len - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got != len) {
        free(data);
        errno = EIO;
        return -1;
    }
    *data_r = data;
    *len_r = len;
    return 0;
}

/* message_body - a message's bytes: at path, or where the message lives
 * now (its mailbox was renamed since), looked up in txn (NULL: a fresh
 * read transaction); 1 if it is gone (expunged or its mailbox deleted
 * since: a later record says so). */
static int message_body(struct store *st, MDB_txn *txn, const char *path, const char *user,
                        uint64_t mailbox_id, uint32_t uid, uint8_t **data_r, size_t *len_r)
{
    if (read_file(path, data_r, len_r) == 0)
        return 0;
    if (errno != ENOENT) {
        mx_log(MX_LOG_ERR, "store.repl_read_body_failed", MX_KV("file", path), MX_KVERR(errno));
        return -1;
    }
    MDB_txn *own = NULL;
    if (txn == NULL) {
        int rc = mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &own);
        if (rc != 0) {
            mx_log(MX_LOG_ERR, "store.repl_read_failed", MX_KV("error", mdb_strerror(rc)));
            return -1;
        }
        txn = own;
    }
    char *now = NULL;
    int ret = -1;
    int found = store_message_locate(st, txn, user, mailbox_id, uid, &now);
    if (found == 0 && read_file(now, data_r, len_r) == 0)
        ret = 0;
    else if (found == 1 || (found == 0 && errno == ENOENT))
        ret = 1;
    else
        mx_log(MX_LOG_ERR, "store.repl_read_body_failed", MX_KV("user", user), MX_KVU("uid", uid),
               MX_KVERR(errno));
    if (own)
        mdb_txn_abort(own);
    free(now);
    return ret;
}

/* append_body - the message bytes of an APPEND record (message_body). */
static int append_body(struct store *st, MDB_txn *txn, const uint8_t *rec, size_t len, uint8_t **data_r,
                       size_t *len_r)
{
    char *user = NULL, *rel = NULL, *udir = NULL, *path = NULL;
    uint64_t mailbox_id;
    uint32_t uid;
    const char *error;
    int ret = -1;
    if (store_oplog_append_info(rec, len, &user, &mailbox_id, &uid, &rel) < 0 ||
        store_user_dir(st, user, &udir, &error) < 0) {
        mx_log(MX_LOG_ERR, "store.repl_bad_record", MX_KV("user", user ? user : "?"));
    } else {
        path = mx_asprintf("%s/%s", udir, rel);
        ret = message_body(st, txn, path, user, mailbox_id, uid, data_r, len_r);
    }
    free(user);
    free(rel);
    free(udir);
    free(path);
    return ret;
}

struct ship_ctx {
    struct store *st;
    MDB_txn *txn;
    struct mx_frame *frame;
    uint64_t upto, last;
    size_t records, bodies;
    bool failed;
};
static int ship_fn(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    struct ship_ctx *c = ctx;
    if (seq > c->upto || seq != c->last + 1)
        return 1;
    if (c->records && (c->frame->len >= SHIP_FRAME_SOFT_MAX || c->records >= SHIP_RECORDS_MAX ||
                       c->bodies >= SHIP_BODIES_MAX))
        return 1;
    uint8_t *body = NULL;
    size_t body_len = 0;
    int got = 1;
    if (store_oplog_type(rec, len) == STORE_OP_APPEND &&
        (got = append_body(c->st, c->txn, rec, len, &body, &body_len)) < 0) {
        c->failed = true;
        return 1;
    }
    if (c->records && got == 0 && c->frame->len + body_len + len + 1024 > MX_WIRE_FRAME_MAX) {
        free(body); /* goes first in the next message */
        return 1;
    }
    mx_frame_put_bytes(c->frame, F_OPLOG_RECORD, rec, len);
    if (got == 0) {
        mx_frame_put_bytes(c->frame, F_BODY, body, body_len);
        c->bodies++;
    }
    free(body);
    c->last = seq;
    c->records++;
    return 0;
}

static void on_apply_done(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply);
static void on_position(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply);
static void on_snapshot_done(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply);
static void snapshot_start(struct peer *p, const char *why);

static void peer_send(struct peer *p, struct mx_frame *f, mx_client_done_fn *cb)
{
    const char *error;
    if (p->client == NULL || mx_client_request(p->client, f, cb, p, NULL, &error) < 0) {
        mx_log(MX_LOG_ERR, "store.repl_send_failed", MX_KV("replica", p->endpoint),
               MX_KV("error", p->client ? error : "not connected"));
        peer_lost(p, "send failed", true);
    } else {
        p->busy = true;
    }
    mx_frame_free(f);
}

static void ship(struct peer *p)
{
    struct store_repl *r = p->r;
    MDB_txn *txn;
    int rc = mdb_txn_begin(store_env(r->st), NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        mx_log(MX_LOG_ERR, "store.repl_read_failed", MX_KV("error", mdb_strerror(rc)));
        return;
    }
    struct store_ha_meta m;
    if (store_ha_read(r->st, txn, &m) < 0) {
        mdb_txn_abort(txn);
        return;
    }
    if (m.seq > r->committed)
        r->committed = m.seq;
    if (p->acked + 1 < m.oplog_first) {
        /* trimmed past what it has (it was away longer than the log
         * reaches, or our trim raced its HELLO): only a copy helps */
        mdb_txn_abort(txn);
        snapshot_start(p, "the records it needs were trimmed");
        return;
    }
    struct mx_frame f;
    frame_head(r, &f, MSG_STORE_STORE_OPLOG_APPLY);
    mx_frame_put_u64(&f, F_SEQ, p->acked + 1);
    mx_frame_put_str(&f, F_SEQ_EPOCH_SET, m.history);
    struct ship_ctx c = { r->st, txn, &f, m.seq, p->acked, 0, 0, false };
    if (p->acked < m.seq && store_oplog_foreach(r->st, txn, p->acked + 1, ship_fn, &c) < 0)
        c.failed = true;
    mdb_txn_abort(txn);
    if (c.failed || (p->acked < m.seq && c.records == 0)) {
        mx_log(MX_LOG_ERR, "store.repl_ship_failed", MX_KV("replica", p->endpoint),
               MX_KVU("from_seq", p->acked + 1), MX_KVU("committed", m.seq));
        mx_frame_free(&f);
        return;
    }
    mx_frame_put_u64(&f, F_LAG, m.seq - c.last);
    if (m.seq == c.last) {
        /* once it applies this it may report in sync: from here on it has
         * every write we acknowledge */
        if (!p->told_lag0)
            mx_log(MX_LOG_NOTICE, "store.replica_promotable", MX_KV("replica", p->endpoint),
                   MX_KVU("seq", c.last), MX_KV("effect", "client writes wait for it"));
        p->must_ack = p->told_lag0 = true;
    } else if (p->must_ack && !p->told_lag0) {
        p->must_ack = false;
        mx_log(MX_LOG_NOTICE, "store.replica_catching_up", MX_KV("replica", p->endpoint),
               MX_KVU("from_seq", p->acked + 1), MX_KVU("committed", m.seq),
               MX_KV("effect", "client writes do not wait for it until it is in sync"));
        if (r->notify)
            r->notify(r->notify_ctx);
    }
    p->in_flight_last = c.last;
    peer_send(p, &f, on_apply_done);
}

/* ---- primary: snapshot resync -------------------------------------------- */

/* snapshot_start - a consistent image at our last seq S0 (one read
 * transaction, held until the replica has all of it), announced with
 * RESYNC_BEGIN: the replica wipes itself; chunks and SNAPSHOT_END follow
 * from peer_kick as each is acked. */
static void snapshot_start(struct peer *p, const char *why)
{
    struct store_repl *r = p->r;
    peer_snapshot_end(p);
    struct peer_snapshot *ps = mx_calloc(1, sizeof *ps);
    char *error = NULL;
    if (store_snapshot_open(r->st, &ps->snap, &error) < 0) {
        mx_log(MX_LOG_ERR, "store.snapshot_failed", MX_KV("replica", p->endpoint), MX_KV("error", error));
        free(error);
        free(ps);
        peer_lost(p, "cannot read a snapshot", false);
        return;
    }
    ps->seq = store_snapshot_seq(ps->snap);
    ps->started_ms = now_ms();
    p->snapshot = ps;
    p->state = PEER_SNAPSHOT;
    p->in_sync = false;
    p->told_in_sync = false;
    update_trim_floor(r);
    mx_log(MX_LOG_NOTICE, "store.snapshot_begin", MX_KV("replica", p->endpoint), MX_KVU("seq", ps->seq),
           MX_KVU("epoch", r->epoch), MX_KV("why", why));
    struct mx_frame f;
    frame_head(r, &f, MSG_STORE_STORE_RESYNC_BEGIN);
    mx_frame_put_u64(&f, F_SEQ, ps->seq);
    peer_send(p, &f, on_snapshot_done);
}

/* snapshot_fetch - the next row into ps->held (with the file's bytes for
 * a live message); 1 at the end, -1 on a read error. */
static int snapshot_fetch(struct store_repl *r, struct peer_snapshot *ps)
{
    struct store_snapshot_row row;
    int got = store_snapshot_next(ps->snap, &row);
    if (got != 0)
        return got;
    struct held_row *h = &ps->held;
    h->valid = true;
    h->wire = mx_memdup(row.wire, row.wire_len);
    h->wire_len = row.wire_len;
    h->mailbox_id = row.mailbox_id;
    int ret = 0;
    if (row.path) {
        int body = message_body(r->st, NULL, row.path, row.user, row.mailbox_id, row.uid, &h->body, &h->body_len);
        if (body < 0)
            ret = -1;
        else if (body == 1)
            ps->files_gone++; /* expunged after S0: the EXPUNGE record follows */
    }
    free(row.path);
    if (ret < 0)
        held_row_clear(h);
    return ret;
}

/* snapshot_send - the next chunk of rows, or SNAPSHOT_END after the last. */
static void snapshot_send(struct peer *p)
{
    struct store_repl *r = p->r;
    struct peer_snapshot *ps = p->snapshot;
    struct mx_frame f;
    if (!ps->rows_done) {
        frame_head(r, &f, MSG_STORE_STORE_SNAPSHOT_CHUNK);
        mx_frame_put_u64(&f, F_SEQ, ps->seq);
        size_t rows = 0, bodies = 0, folders = 0;
        uint64_t last_mailbox = 0;
        for (;;) {
            if (!ps->held.valid) {
                int got = snapshot_fetch(r, ps);
                if (got < 0) {
                    mx_frame_free(&f);
                    peer_lost(p, "snapshot read failed", false);
                    return;
                }
                if (got == 1) {
                    ps->rows_done = true;
                    break;
                }
            }
            struct held_row *h = &ps->held;
            bool new_folder = h->mailbox_id && h->mailbox_id != last_mailbox;
            if (rows && (f.len + h->wire_len + h->body_len + 1024 > SHIP_FRAME_SOFT_MAX ||
                         rows >= SNAPSHOT_ROWS_MAX || (h->body && bodies >= SHIP_BODIES_MAX) ||
                         (new_folder && folders >= SNAPSHOT_FOLDERS_MAX)))
                break;
            mx_frame_put_bytes(&f, F_SNAPSHOT_ROW, h->wire, h->wire_len);
            if (h->body) {
                mx_frame_put_bytes(&f, F_BODY, h->body, h->body_len);
                bodies++;
                ps->files++;
                ps->bytes += h->body_len;
            }
            if (new_folder) {
                folders++;
                last_mailbox = h->mailbox_id;
            }
            rows++;
            ps->rows++;
            held_row_clear(h);
        }
        if (rows) {
            peer_send(p, &f, on_snapshot_done);
            return;
        }
        mx_frame_free(&f);
    }
    frame_head(r, &f, MSG_STORE_STORE_SNAPSHOT_END);
    mx_frame_put_u64(&f, F_SEQ, ps->seq);
    mx_frame_put_str(&f, F_SEQ_EPOCH_SET, store_snapshot_history(ps->snap));
    size_t rec_len = 0;
    const uint8_t *rec = store_snapshot_record(ps->snap, &rec_len);
    if (rec)
        mx_frame_put_bytes(&f, F_OPLOG_RECORD, rec, rec_len);
    ps->end_sent = true;
    peer_send(p, &f, on_snapshot_done);
}

static void on_snapshot_done(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct peer *p = ctx;
    if (result == MX_BUS_CANCELLED)
        return;
    p->busy = false;
    struct store_repl *r = p->r;
    struct peer_snapshot *ps = p->snapshot;
    if (ps == NULL || p->state != PEER_SNAPSHOT)
        return; /* dropped meanwhile (peer_lost) */
    if (result != MX_BUS_REPLY) {
        peer_lost(p, "no answer to a snapshot message in store.replication_timeout", true);
        return;
    }
    if (check_stale(p, reply))
        return;
    uint32_t status = MX_STATUS_TEMPFAIL;
    (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (status != MX_STATUS_OK) {
        char *text = NULL;
        (void)mx_frame_get_str(reply, F_TEXT, &text);
        mx_log(MX_LOG_WARNING, "store.snapshot_refused", MX_KV("replica", p->endpoint), MX_KVU("status", status),
               MX_KV("text", text ? text : ""));
        free(text);
        peer_lost(p, "snapshot refused", false);
        return;
    }
    p->lost = false;
    p->last_ok_ms = now_ms();
    if (!ps->begun) {
        /* it wiped itself and marked the copy incomplete: it cannot be
         * promoted (nor serve as primary) until told lag 0 again */
        ps->begun = true;
        p->told_lag0 = false;
        if (p->must_ack) {
            p->must_ack = false;
            if (r->notify)
                r->notify(r->notify_ctx);
        }
    } else if (ps->end_sent) {
        uint64_t seq = 0;
        if (mx_frame_get_u64(reply, F_SEQ, &seq) < 0 || seq != ps->seq) {
            peer_lost(p, "SNAPSHOT_END acked with another seq", false);
            return;
        }
        mx_log(MX_LOG_NOTICE, "store.snapshot_end", MX_KV("replica", p->endpoint), MX_KVU("seq", ps->seq),
               MX_KVU("rows", ps->rows), MX_KVU("files", ps->files), MX_KVU("bytes", ps->bytes),
               MX_KVU("files_gone", ps->files_gone), MX_KVU("ms", now_ms() - ps->started_ms),
               MX_KVU("committed", r->committed));
        p->acked = seq;
        p->state = PEER_STREAM;
        peer_snapshot_end(p);
        if (r->notify)
            r->notify(r->notify_ctx);
    }
    peer_kick(p);
}

static void peer_kick(struct peer *p)
{
    struct store_repl *r = p->r;
    if (p->busy || r->role != MX_HA_PRIMARY || p->client == NULL)
        return;
    if (p->state == PEER_IDLE) {
        struct mx_frame f;
        frame_head(r, &f, MSG_STORE_STORE_REPLICA_HELLO);
        peer_send(p, &f, on_position);
    } else if (p->state == PEER_SNAPSHOT) {
        if (p->snapshot && p->snapshot->begun)
            snapshot_send(p);
    } else if (p->acked < r->committed || !p->told_in_sync) {
        ship(p);
    }
    update_trim_floor(r);
}

static void on_apply_done(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct peer *p = ctx;
    if (result == MX_BUS_CANCELLED)
        return;
    p->busy = false;
    struct store_repl *r = p->r;
    uint32_t status = MX_STATUS_TEMPFAIL;
    uint64_t seq = 0;
    if (result != MX_BUS_REPLY) {
        peer_lost(p, "no answer in store.replication_timeout", true);
        return;
    }
    if (check_stale(p, reply))
        return;
    (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (status != MX_STATUS_OK || mx_frame_get_u64(reply, F_SEQ, &seq) < 0 || seq > p->in_flight_last ||
        seq < p->acked) {
        char *text = NULL;
        (void)mx_frame_get_str(reply, F_TEXT, &text);
        mx_log(MX_LOG_WARNING, "store.repl_apply_refused", MX_KV("replica", p->endpoint),
               MX_KVU("status", status), MX_KV("text", text ? text : ""));
        free(text);
        peer_lost(p, "apply refused", false);
        if (status == MX_STATUS_PERMFAIL) {
            /* a record that does not fit its index: the logs differ in a
             * way the position check could not see; only a copy helps */
            snapshot_start(p, "a record did not fit its index");
        }
        return;
    }
    bool advanced = seq > p->acked;
    p->acked = seq;
    p->lost = false;
    p->last_ok_ms = now_ms();
    p->told_in_sync = seq == p->in_flight_last && seq >= r->committed;
    bool was = p->in_sync;
    p->in_sync = p->told_in_sync || (p->in_sync && seq == p->in_flight_last);
    if (was != p->in_sync) {
        mx_log(MX_LOG_NOTICE, p->in_sync ? "store.replica_in_sync" : "store.replica_behind",
               MX_KV("replica", p->endpoint), MX_KVU("seq", seq));
        r->report_again = true;
    }
    if (advanced && r->notify)
        r->notify(r->notify_ctx);
    peer_kick(p);
}

static void on_position(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct peer *p = ctx;
    if (result == MX_BUS_CANCELLED)
        return;
    p->busy = false;
    struct store_repl *r = p->r;
    if (result != MX_BUS_REPLY) {
        peer_lost(p, "no answer to HELLO", true);
        return;
    }
    if (check_stale(p, reply))
        return;
    uint32_t status = MX_STATUS_TEMPFAIL;
    uint64_t seq = 0;
    char *their_text = NULL;
    const uint8_t *their_rec = NULL;
    size_t their_len = 0;
    (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (status != MX_STATUS_OK || reply->type != MSG_STORE_STORE_REPLICA_POSITION ||
        mx_frame_get_u64(reply, F_SEQ, &seq) < 0 || mx_frame_get_str(reply, F_SEQ_EPOCH_SET, &their_text) < 0) {
        free(their_text);
        peer_lost(p, "bad POSITION", false);
        return;
    }
    (void)mx_frame_get_bytes(reply, F_OPLOG_RECORD, &their_rec, &their_len);
    uint32_t needs_snapshot = 0;
    (void)mx_frame_get_u32(reply, F_NEEDS_SNAPSHOT, &needs_snapshot);
    struct store_epoch_range mine[STORE_HISTORY_MAX], theirs[STORE_HISTORY_MAX];
    size_t n_mine = 0, n_theirs = 0;
    struct store_ha_meta m;
    bool agree = false;
    const char *why = "";
    MDB_txn *txn = NULL;
    if (store_history_parse(their_text, theirs, &n_theirs) < 0) {
        why = "malformed history";
    } else if (mdb_txn_begin(store_env(r->st), NULL, MDB_RDONLY, &txn) != 0 ||
               store_ha_read(r->st, txn, &m) < 0 || store_history_parse(m.history, mine, &n_mine) < 0) {
        if (txn)
            mdb_txn_abort(txn);
        free(their_text);
        peer_lost(p, "cannot read our own log", false);
        return;
    } else if (needs_snapshot) {
        why = "its last snapshot did not finish";
    } else if (seq > m.seq) {
        why = "its log is longer than ours";
    } else if (!store_history_agree(mine, n_mine, theirs, n_theirs, seq)) {
        why = "epoch histories differ";
    } else if (seq + 1 < m.oplog_first || (seq && seq < m.oplog_first)) {
        /* we no longer have what it needs, or the record at its position
         * to compare: a snapshot, never a guess */
        why = "our log was trimmed past its position";
    } else {
        uint8_t *rec = NULL;
        size_t len = 0;
        if (seq == 0)
            agree = true;
        else if (read_record(r->st, txn, seq, &rec, &len) == 0 && their_rec && len == their_len &&
                 memcmp(rec, their_rec, len) == 0)
            agree = true;
        else
            why = "its last record differs from ours";
        free(rec);
    }
    if (txn)
        mdb_txn_abort(txn);
    free(their_text);
    if (agree) {
        mx_log(MX_LOG_NOTICE, "store.replica_position", MX_KV("replica", p->endpoint), MX_KVU("seq", seq),
               MX_KVU("committed", r->committed));
        p->state = PEER_STREAM;
        p->acked = seq;
        p->lost = false;
        p->told_in_sync = false;
        if (r->notify)
            r->notify(r->notify_ctx);
        peer_kick(p);
        return;
    }
    mx_log(MX_LOG_WARNING, "store.replica_diverged", MX_KV("replica", p->endpoint), MX_KVU("seq", seq),
           MX_KV("why", why));
    snapshot_start(p, why);
}

void store_repl_committed(struct store_repl *r, uint64_t last_seq)
{
    if (r == NULL)
        return;
    if (last_seq > r->committed)
        r->committed = last_seq;
    for (size_t i = 0; i < r->n_peers; i++)
        peer_kick(r->peers[i]);
}

/* ---- replica: applying ---------------------------------------------------- */

/* replica_check - shard and epoch of a primary's message; 0 to go on,
 * -1 after answering. */
static int replica_check(struct store_repl *r, struct mx_server_request **req, const struct mx_frame_view *f)
{
    const char *error;
    char *shard = NULL;
    uint64_t epoch = 0;
    if (mx_frame_get_str(f, F_SHARD, &shard) < 0 || mx_frame_get_u64(f, F_EPOCH, &epoch) < 0 ||
        strcmp(shard, r->shard) != 0) {
        mx_log(MX_LOG_WARNING, "store.repl_wrong_peer", MX_KV("shard", shard ? shard : "?"),
               MX_KV("ours", r->shard), MX_KV("peer", mx_server_request_peer(*req)));
        free(shard);
        mx_server_ack(req, MX_STATUS_PERMFAIL, "not a primary of this shard", &error);
        return -1;
    }
    free(shard);
    if (epoch < r->epoch || (epoch == r->epoch && r->role == MX_HA_PRIMARY)) {
        mx_log(MX_LOG_WARNING, "store.repl_stale_epoch", MX_KVU("theirs", epoch), MX_KVU("ours", r->epoch),
               MX_KV("role", role_name(r->role)), MX_KV("peer", mx_server_request_peer(*req)));
        struct mx_frame out;
        mx_frame_init(&out, MSG_ANY_ACK, 0, NULL);
        mx_frame_put_u32(&out, F_STATUS, MX_STATUS_STALE_EPOCH);
        mx_frame_put_u64(&out, F_EPOCH, r->epoch);
        mx_frame_put_str(&out, F_TEXT, "stale epoch");
        (void)mx_server_reply(req, &out, &error);
        mx_frame_free(&out);
        return -1;
    }
    if (adopt_epoch(r, epoch, "primary", false) < 0) {
        mx_server_ack(req, MX_STATUS_TEMPFAIL, "cannot persist the epoch", &error);
        return -1;
    }
    return 0;
}

static void replica_hello(struct store_repl *r, struct mx_server_request *req)
{
    struct store_ha_meta m;
    struct store_epoch_range hist[STORE_HISTORY_MAX];
    size_t n = 0;
    const char *error;
    if (meta_read(r, &m, hist, &n) < 0) {
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "index unreadable", &error);
        return;
    }
    r->replica_in_sync = false;
    r->greeted = true;
    r->snapshot_incomplete = m.snapshot_incomplete;
    /* a snapshot still loading belongs to a stream the primary gave up */
    store_snapshot_load_free(&r->load);
    struct mx_frame out;
    mx_frame_init(&out, MSG_STORE_STORE_REPLICA_POSITION, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u64(&out, F_SEQ, m.snapshot_incomplete ? 0 : m.seq);
    mx_frame_put_u64(&out, F_EPOCH, store_history_epoch_of(hist, n, m.seq));
    mx_frame_put_str(&out, F_SEQ_EPOCH_SET, m.snapshot_incomplete ? "" : m.history);
    if (m.snapshot_incomplete)
        mx_frame_put_u32(&out, F_NEEDS_SNAPSHOT, 1);
    else if (m.seq) {
        MDB_txn *txn;
        uint8_t *rec = NULL;
        size_t len = 0;
        if (mdb_txn_begin(store_env(r->st), NULL, MDB_RDONLY, &txn) == 0) {
            if (read_record(r->st, txn, m.seq, &rec, &len) == 0)
                mx_frame_put_bytes(&out, F_OPLOG_RECORD, rec, len);
            mdb_txn_abort(txn);
        }
        free(rec);
    }
    (void)mx_server_reply(&req, &out, &error);
    mx_frame_free(&out);
}

/* replica_resync - RESYNC_BEGIN: wipe (marking the index incomplete in
 * the same commit, so a crash from here until SNAPSHOT_END leaves a store
 * that asks for a snapshot again and is never in sync), then take chunks. */
static void replica_resync(struct store_repl *r, struct mx_server_request *req, const struct mx_frame_view *f)
{
    const char *error;
    char *werr = NULL;
    uint64_t seq = 0;
    if (mx_frame_get_u64(f, F_SEQ, &seq) < 0) {
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "RESYNC_BEGIN without F_SEQ", &error);
        return;
    }
    r->replica_in_sync = false;
    r->report_again = true;
    store_snapshot_load_free(&r->load);
    mx_log(MX_LOG_WARNING, "store.snapshot_begin", MX_KV("shard", r->shard), MX_KVU("epoch", r->epoch),
           MX_KVU("seq", seq), MX_KV("peer", mx_server_request_peer(req)));
    r->snapshot_incomplete = true; /* from here on, whatever happens */
    if (store_wipe(r->st, &werr) < 0) {
        mx_log(MX_LOG_ERR, "store.resync_failed", MX_KV("error", werr));
        free(werr);
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "wipe failed", &error);
        return;
    }
    r->load = store_snapshot_load_new(seq);
    r->load_started_ms = now_ms();
    mx_server_ack(&req, MX_STATUS_OK, NULL, &error);
}

/* snapshot_check - a chunk or end of the snapshot being loaded; 0 to go
 * on, -1 after answering. */
static int snapshot_check(struct store_repl *r, struct mx_server_request **req, const struct mx_frame_view *f)
{
    const char *error;
    uint64_t seq = 0;
    if (mx_frame_get_u64(f, F_SEQ, &seq) < 0 || r->load == NULL || store_snapshot_load_seq(r->load) != seq) {
        mx_server_ack(req, MX_STATUS_TEMPFAIL, "no such snapshot in progress", &error);
        return -1;
    }
    return 0;
}

/* snapshot_failed - answer and forget the load: the primary starts over
 * with HELLO, to which we answer F_NEEDS_SNAPSHOT. */
static void snapshot_failed(struct store_repl *r, struct mx_server_request *req, enum mx_status status,
                            char *err)
{
    const char *error;
    mx_log(MX_LOG_ERR, "store.snapshot_failed", MX_KV("error", err ? err : "?"),
           MX_KV("peer", mx_server_request_peer(req)));
    store_snapshot_load_free(&r->load);
    mx_server_ack(&req, status, err ? err : "snapshot failed", &error);
    free(err);
}

static void replica_snapshot_chunk(struct store_repl *r, struct mx_server_request *req,
                                   const struct mx_frame_view *f)
{
    const char *error;
    if (snapshot_check(r, &req, f) < 0)
        return;
    struct store_batch *b = NULL;
    char *err = NULL;
    if (store_batch_begin(r->st, &b, &err) < 0) {
        snapshot_failed(r, req, MX_STATUS_TEMPFAIL, err);
        return;
    }
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v, *row = NULL;
    size_t len, row_len = 0;
    bool pending = false;
    int rc = 0;
    /* each row is loaded when the field after it is seen: a live
     * message's F_BODY, if any, comes right after its F_SNAPSHOT_ROW */
    for (bool more = true; more && rc == 0;) {
        more = mx_frame_next_field(f, &it, &tag, &v, &len) == 1;
        if (pending) {
            bool with_body = more && tag == F_BODY;
            rc = store_snapshot_load_row(b, r->load, row, row_len, with_body ? v : NULL, with_body ? len : 0, &err);
            pending = false;
            if (with_body)
                continue;
        }
        if (more && tag == F_SNAPSHOT_ROW) {
            row = v;
            row_len = len;
            pending = true;
        }
    }
    if (rc < 0) {
        store_batch_abort(&b);
        snapshot_failed(r, req, MX_STATUS_PERMFAIL, err);
        return;
    }
    if (store_batch_commit(&b, &err) < 0) {
        snapshot_failed(r, req, MX_STATUS_TEMPFAIL, err);
        return;
    }
    mx_server_ack(&req, MX_STATUS_OK, NULL, &error);
}

static void replica_snapshot_end(struct store_repl *r, struct mx_server_request *req,
                                 const struct mx_frame_view *f)
{
    const char *error;
    if (snapshot_check(r, &req, f) < 0)
        return;
    uint64_t seq = store_snapshot_load_seq(r->load);
    char *hist_text = NULL, *err = NULL;
    struct store_epoch_range hist[STORE_HISTORY_MAX];
    size_t n_hist = 0;
    char hist_out[sizeof ((struct store_ha_meta *)0)->history];
    const uint8_t *rec = NULL;
    size_t rec_len = 0;
    (void)mx_frame_get_bytes(f, F_OPLOG_RECORD, &rec, &rec_len);
    if (mx_frame_get_str(f, F_SEQ_EPOCH_SET, &hist_text) < 0 || store_history_parse(hist_text, hist, &n_hist) < 0 ||
        store_history_format(hist, history_upto(hist, n_hist, seq), hist_out, sizeof hist_out) < 0 ||
        (rec && store_oplog_type(rec, rec_len) < 0)) {
        free(hist_text);
        snapshot_failed(r, req, MX_STATUS_PERMFAIL, mx_strdup("malformed SNAPSHOT_END"));
        return;
    }
    free(hist_text);
    struct store_batch *b = NULL;
    if (store_batch_begin(r->st, &b, &err) < 0 ||
        store_snapshot_load_finish(b, r->load, hist_out, rec, rec_len, &err) < 0 ||
        store_batch_commit(&b, &err) < 0) {
        store_batch_abort(&b);
        snapshot_failed(r, req, MX_STATUS_TEMPFAIL, err);
        return;
    }
    uint64_t rows, files, bytes;
    store_snapshot_load_stats(r->load, &rows, &files, &bytes);
    mx_log(MX_LOG_NOTICE, "store.snapshot_end", MX_KV("shard", r->shard), MX_KVU("epoch", r->epoch),
           MX_KVU("seq", seq), MX_KVU("rows", rows), MX_KVU("files", files), MX_KVU("bytes", bytes),
           MX_KVU("ms", now_ms() - r->load_started_ms), MX_KV("peer", mx_server_request_peer(req)));
    store_snapshot_load_free(&r->load);
    r->snapshot_incomplete = false;
    struct mx_frame out;
    mx_frame_init(&out, MSG_ANY_ACK, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u64(&out, F_SEQ, seq);
    (void)mx_server_reply(&req, &out, &error);
    mx_frame_free(&out);
}

static void replica_apply(struct store_repl *r, struct mx_server_request *req, const struct mx_frame_view *f)
{
    const char *error;
    uint64_t first = 0, lag = 1;
    char *hist_text = NULL;
    struct store_epoch_range hist[STORE_HISTORY_MAX];
    size_t n_hist = 0;
    if (mx_frame_get_u64(f, F_SEQ, &first) < 0 || first == 0 || mx_frame_get_u64(f, F_LAG, &lag) < 0 ||
        mx_frame_get_str(f, F_SEQ_EPOCH_SET, &hist_text) < 0 ||
        store_history_parse(hist_text, hist, &n_hist) < 0) {
        free(hist_text);
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "malformed OPLOG_APPLY", &error);
        return;
    }
    free(hist_text);
    if (r->snapshot_incomplete) {
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "a snapshot is incomplete: send REPLICA_HELLO", &error);
        return;
    }
    struct store_batch *b = NULL;
    char *err = NULL;
    if (store_batch_begin(r->st, &b, &err) < 0) {
        mx_log(MX_LOG_ERR, "store.repl_apply_failed", MX_KV("error", err));
        free(err);
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "index unavailable", &error);
        return;
    }
    uint64_t have = store_batch_last_seq(b), seq = first - 1;
    enum mx_status status = MX_STATUS_OK;
    if (first > have + 1) {
        status = MX_STATUS_TEMPFAIL; /* a gap: the primary starts over with HELLO */
        err = mx_asprintf("records from %llu, but ours end at %llu", (unsigned long long)first,
                          (unsigned long long)have);
    }
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v, *rec = NULL;
    size_t len, rec_len = 0;
    bool pending = false;
    /* each record is applied when the field after it is seen: an APPEND's
     * F_BODY, if any, comes right after its F_OPLOG_RECORD */
    for (bool more = status == MX_STATUS_OK; more;) {
        more = mx_frame_next_field(f, &it, &tag, &v, &len) == 1;
        if (pending) {
            bool with_body = more && tag == F_BODY;
            seq++;
            if (seq > have &&
                store_apply(b, seq, rec, rec_len, with_body ? v : NULL, with_body ? len : 0, &err) < 0) {
                status = MX_STATUS_PERMFAIL;
                break;
            }
            pending = false;
            if (with_body)
                continue;
        }
        if (more && tag == F_OPLOG_RECORD) {
            rec = v;
            rec_len = len;
            pending = true;
        }
    }
    uint64_t last = store_batch_last_seq(b);
    char hist_out[sizeof ((struct store_ha_meta *)0)->history];
    if (status == MX_STATUS_OK &&
        (store_history_format(hist, history_upto(hist, n_hist, last), hist_out, sizeof hist_out) < 0 ||
         store_ha_write(b, NULL, hist_out) < 0)) {
        status = MX_STATUS_TEMPFAIL;
        err = mx_strdup("cannot record the epoch history");
    }
    if (status == MX_STATUS_OK && store_batch_commit(&b, &err) < 0)
        status = MX_STATUS_TEMPFAIL;
    store_batch_abort(&b);
    if (status != MX_STATUS_OK) {
        mx_log(MX_LOG_ERR, "store.repl_apply_failed", MX_KV("error", err ? err : "?"),
               MX_KV("peer", mx_server_request_peer(req)));
        r->replica_in_sync = false;
        r->report_again = true;
        mx_server_ack(&req, status, err ? err : "apply failed", &error);
        free(err);
        return;
    }
    bool synced = lag == 0 && last == seq;
    if (synced != r->replica_in_sync) {
        mx_log(MX_LOG_NOTICE, synced ? "store.replica_in_sync" : "store.replica_catching_up",
               MX_KVU("seq", last), MX_KVU("epoch", r->epoch));
        r->replica_in_sync = synced;
        r->report_again = true;
    }
    struct mx_frame out;
    mx_frame_init(&out, MSG_ANY_ACK, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u64(&out, F_SEQ, last);
    (void)mx_server_reply(&req, &out, &error);
    mx_frame_free(&out);
}

static void replica_dispatch(void *ctx, struct mx_server_request *req, const struct mx_frame_view *f)
{
    struct store_repl *r = ctx;
    const char *error;
    switch (f->type) {
    case MSG_STORE_STORE_REPLICA_HELLO:
    case MSG_STORE_STORE_RESYNC_BEGIN:
    case MSG_STORE_STORE_SNAPSHOT_CHUNK:
    case MSG_STORE_STORE_SNAPSHOT_END:
    case MSG_STORE_STORE_OPLOG_APPLY:
        if (replica_check(r, &req, f) < 0)
            return;
        if (f->type != MSG_STORE_STORE_REPLICA_HELLO && !r->greeted) {
            mx_server_ack(&req, MX_STATUS_TEMPFAIL, "send REPLICA_HELLO first", &error);
            return;
        }
        if (f->type == MSG_STORE_STORE_REPLICA_HELLO)
            replica_hello(r, req);
        else if (f->type == MSG_STORE_STORE_RESYNC_BEGIN)
            replica_resync(r, req, f);
        else if (f->type == MSG_STORE_STORE_SNAPSHOT_CHUNK)
            replica_snapshot_chunk(r, req, f);
        else if (f->type == MSG_STORE_STORE_SNAPSHOT_END)
            replica_snapshot_end(r, req, f);
        else
            replica_apply(r, req, f);
        return;
    default:
        mx_log(MX_LOG_WARNING, "store.unexpected_message", MX_KV("type", mx_msg_type_name(f->type)),
               MX_KV("peer", mx_server_request_peer(req)));
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "the replication port takes replication messages only", &error);
    }
}

/* ---- mx-ha: status reports, assignments, the lease ---------------------- */

static void report(struct store_repl *r);

/* assign - act on what mx-ha said (F_HA_ROLE, F_EPOCH, F_PEER_ENDPOINT*). */
static void assign(struct store_repl *r, const struct mx_frame_view *f)
{
    uint32_t role;
    uint64_t epoch;
    if (mx_frame_get_u32(f, F_HA_ROLE, &role) < 0 || mx_frame_get_u64(f, F_EPOCH, &epoch) < 0 ||
        role > MX_HA_STANDBY) {
        set_role(r, MX_HA_FENCED, "mx-ha sent no usable assignment");
        return;
    }
    if (epoch < r->epoch) {
        /* our epoch came from a newer primary's HELLO: mx-ha will catch up */
        if (r->role == MX_HA_PRIMARY)
            set_role(r, MX_HA_FENCED, "mx-ha assigned an older epoch");
        return;
    }
    char **peers = NULL;
    size_t n = 0;
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t len;
    while (mx_frame_next_field(f, &it, &tag, &v, &len))
        if (tag == F_PEER_ENDPOINT && len && len < 1024 && !memchr(v, 0, len)) {
            peers = mx_reallocarray(peers, n + 1, sizeof *peers);
            peers[n++] = mx_strndup((const char *)v, len);
        }
    bool new_epoch = epoch > r->epoch;
    if (adopt_epoch(r, epoch, "mx-ha", true) < 0)
        goto out;
    if (role == MX_HA_PRIMARY && r->snapshot_incomplete) {
        /* a partial copy must never serve (mx-ha promotes only replicas
         * in sync, which this one never reported; this is the last line) */
        set_role(r, MX_HA_FENCED, "assigned primary with an incomplete snapshot");
        goto out;
    }
    if (role == MX_HA_PRIMARY) {
        bool peers_changed = new_epoch || r->role != MX_HA_PRIMARY || n != r->n_peers;
        for (size_t i = 0; i < n && !peers_changed; i++)
            peers_changed = strcmp(peers[i], r->peers[i]->endpoint) != 0;
        if (r->role != MX_HA_PRIMARY || new_epoch) {
            /* the records from here on are this epoch's */
            struct store_ha_meta m;
            struct store_epoch_range hist[STORE_HISTORY_MAX];
            size_t nh = 0;
            char text[sizeof m.history];
            if (meta_read(r, &m, hist, &nh) < 0) {
                set_role(r, MX_HA_FENCED, "cannot read the epoch history");
                goto out;
            }
            store_history_begin_epoch(hist, &nh, epoch, m.seq + 1);
            if (store_history_format(hist, nh, text, sizeof text) < 0 || meta_write(r, NULL, text) < 0) {
                set_role(r, MX_HA_FENCED, "cannot persist the epoch history");
                goto out;
            }
            if (m.seq > r->committed)
                r->committed = m.seq;
        }
        for (size_t i = 0; i < r->n_peers && r->role == MX_HA_PRIMARY; i++) {
            bool kept = false;
            for (size_t k = 0; k < n && !kept; k++)
                kept = strcmp(peers[k], r->peers[i]->endpoint) == 0;
            if (!kept && r->peers[i]->must_ack && r->peers[i]->acked < r->committed)
                writes_unconfirmable(r, r->peers[i]->endpoint, "mx-ha dropped the replica");
        }
        if (peers_changed) {
            mx_log(MX_LOG_NOTICE, "store.ha_replicas", MX_KV("pair", r->pair), MX_KVU("epoch", epoch),
                   MX_KVU("replicas", n), MX_KV("mode", n == 0 ? "degraded" : r->sync ? "sync" : "async"));
            set_role(r, MX_HA_PRIMARY, "assigned by mx-ha");
            peers_set(r, peers, n);
            if (r->notify)
                r->notify(r->notify_ctx);
        }
    } else {
        peers_clear(r);
        set_role(r, (enum mx_ha_role)role, "assigned by mx-ha");
    }
out:
    for (size_t i = 0; i < n; i++)
        free(peers[i]);
    free(peers);
}

static void on_report_done(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct store_repl *r = ctx;
    if (result == MX_BUS_CANCELLED)
        return;
    r->ha_busy = false;
    uint32_t status = MX_STATUS_TEMPFAIL;
    if (result == MX_BUS_REPLY)
        (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (result != MX_BUS_REPLY || status != MX_STATUS_OK) {
        mx_log(MX_LOG_WARNING, "store.ha_unreachable", MX_KV("pair", r->pair),
               MX_KV("result", result == MX_BUS_REPLY ? "refused" : "timeout"));
        return; /* the lease runs out unless the next report is answered */
    }
    r->lease_ms_at = now_ms();
    assign(r, reply);
    if (r->report_again)
        report(r);
}

static void report(struct store_repl *r)
{
    if (r->ha_busy)
        return;
    struct store_ha_meta m;
    if (meta_read(r, &m, NULL, NULL) < 0)
        return;
    r->report_again = false;
    struct mx_frame f;
    mx_frame_init(&f, MSG_ANY_HA_STATUS_REPORT, 0, NULL);
    mx_frame_put_str(&f, F_PAIR, r->pair);
    mx_frame_put_str(&f, F_SHARD, r->shard);
    mx_frame_put_u32(&f, F_HA_ROLE, r->role);
    mx_frame_put_u64(&f, F_EPOCH, r->epoch);
    mx_frame_put_u64(&f, F_SEQ, m.seq);
    mx_frame_put_u64(&f, F_OPLOG_FIRST, m.oplog_first);
    /* a primary: 0 = it lost a replica (mx-ha reassigns it degraded) */
    bool in_sync = r->replica_in_sync && !r->snapshot_incomplete;
    if (r->role == MX_HA_PRIMARY) {
        in_sync = true;
        for (size_t i = 0; i < r->n_peers; i++)
            in_sync = in_sync && !r->peers[i]->lost;
    }
    mx_frame_put_u32(&f, F_IN_SYNC, in_sync);
    mx_frame_put_str(&f, F_ENDPOINT, r->client_endpoint);
    mx_frame_put_str(&f, F_REPLICATION_ENDPOINT, store_repl_endpoint(r));
    if (r->role == MX_HA_PRIMARY) {
        /* the replicas still keeping up; an assigned one missing here is
         * lost: mx-ha reassigns without it */
        uint64_t lag = 0;
        for (size_t i = 0; i < r->n_peers; i++) {
            struct peer *p = r->peers[i];
            uint64_t behind = r->committed > p->acked ? r->committed - p->acked : 0;
            if (p->state != PEER_STREAM)
                behind = r->committed;
            if (behind > lag)
                lag = behind;
            if (!p->lost)
                mx_frame_put_str(&f, F_PEER_ENDPOINT, p->endpoint);
        }
        mx_frame_put_u64(&f, F_LAG, lag);
    }
    const char *error;
    if (mx_client_request(r->ha, &f, on_report_done, r, NULL, &error) == 0)
        r->ha_busy = true;
    else
        mx_log(MX_LOG_ERR, "store.ha_report_failed", MX_KV("error", error));
    mx_frame_free(&f);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct store_repl *r = arg;
    uint64_t now = now_ms();
    if (r->role != MX_HA_FENCED && (r->lease_ms_at == 0 || now - r->lease_ms_at > r->lease_ms))
        set_role(r, MX_HA_FENCED, "no answer from mx-ha within store.ha_lease");
    if (r->role == MX_HA_FENCED && r->notify)
        r->notify(r->notify_ctx); /* held replies: refused once the hold ends */
    if (r->role == MX_HA_PRIMARY)
        for (size_t i = 0; i < r->n_peers; i++) {
            struct peer *p = r->peers[i];
            if (p->in_sync && p->busy && now - p->last_ok_ms > r->timeout_ms) {
                /* still waiting for its ack: not in sync any more (the
                 * request's own timeout reports it lost) */
                p->in_sync = false;
                r->report_again = true;
            }
            if (p->state == PEER_STREAM && !p->busy && now - p->last_ok_ms >= 2 * (uint64_t)r->heartbeat_ms)
                p->told_in_sync = false; /* an empty APPLY: is it alive, did it restart? */
            peer_kick(p);
        }
    report(r);
}

int store_repl_new(struct event_base *base, struct mx_bus *bus, struct store *st,
                   const struct store_repl_config *cfg, store_repl_notify_fn *notify, void *ctx,
                   struct store_repl **repl_r, char **error_r)
{
    struct store_repl *r = mx_calloc(1, sizeof *r);
    *repl_r = r;
    r->base = base;
    r->bus = bus;
    r->st = st;
    r->shard = mx_strdup(cfg->shard);
    r->pair = mx_strdup(cfg->pair && *cfg->pair ? cfg->pair : cfg->shard);
    r->client_endpoint = mx_strdup(cfg->client_endpoint ? cfg->client_endpoint : "");
    r->sync = cfg->sync;
    r->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 2000;
    r->lease_ms = cfg->lease_ms ? cfg->lease_ms : 3000;
    r->heartbeat_ms = cfg->heartbeat_ms ? cfg->heartbeat_ms : 500;
    r->notify = notify;
    r->notify_ctx = ctx;
    r->role = MX_HA_FENCED; /* until mx-ha says otherwise */
    struct store_ha_meta m;
    if (meta_read(r, &m, NULL, NULL) < 0) {
        *error_r = mx_strdup("replication: cannot read epoch and log position");
        return -1;
    }
    r->epoch = m.epoch;
    r->committed = m.seq;
    r->snapshot_incomplete = m.snapshot_incomplete;
    const char *error;
    struct mx_client_config cc = { .name = "ha", .timeout_ms = r->heartbeat_ms, .max_attempts = 1 };
    if (mx_client_new(bus, &cfg->ha_control, 1, &cc, &r->ha, &error) < 0) {
        *error_r = mx_asprintf("ha control %s: %s", cfg->ha_control, error);
        return -1;
    }
    if (cfg->listen && *cfg->listen &&
        mx_server_new(bus, cfg->listen, replica_dispatch, r, &r->server, &error) < 0) {
        *error_r = mx_asprintf("replication listen %s: %s", cfg->listen, error);
        return -1;
    }
    r->tick = event_new(base, -1, EV_PERSIST, on_tick, r);
    struct timeval tv = { r->heartbeat_ms / 1000, (r->heartbeat_ms % 1000) * 1000 };
    event_add(r->tick, &tv);
    mx_log(MX_LOG_NOTICE, "store.ha_start", MX_KV("pair", r->pair), MX_KVU("epoch", r->epoch),
           MX_KVU("seq", m.seq), MX_KVU("oplog_first", m.oplog_first), MX_KV("history", m.history),
           MX_KV("snapshot", m.snapshot_incomplete ? "incomplete" : "none"),
           MX_KV("replication", store_repl_endpoint(r)),
           MX_KV("mode", r->sync ? "sync" : "async"));
    report(r);
    return 0;
}

void store_repl_free(struct store_repl **rp)
{
    struct store_repl *r = *rp;
    if (r == NULL)
        return;
    r->notify = NULL;
    if (r->tick)
        event_free(r->tick);
    peers_clear(r);
    store_snapshot_load_free(&r->load);
    mx_client_free(&r->ha);
    mx_server_free(&r->server);
    free(r->shard);
    free(r->pair);
    free(r->client_endpoint);
    free(r);
    *rp = NULL;
}
