/* store - internals of mx-store: the operation log and the index (LMDB),
 * and the state-changing operations that keep them and the Maildir in step.
 *
 * ONE LMDB environment per store (<store.root>/.index/), named databases:
 *   oplog      u64 sequence (big-endian) -> op record (below)
 *   mailboxes  user NUL name            -> mailbox record
 *   messages   u64 mailbox id, u32 uid  -> message record (BE keys, so a
 *                                           cursor walks a mailbox in UID order)
 *   dedup      u64 mailbox id, 16-byte cluster message id -> u32 uid
 *   meta       "version" u32, "seq" u64 (last sequence), "oplog_first" u64
 *              (first record kept), "mailbox_id" u64, "uidvalidity" u64
 *              (store-wide counters), "epoch", "epoch_history" (HA),
 *              "snapshot_incomplete" (a snapshot resync is loading), and
 *              "osub:" user NUL name (orphan subscriptions)
 *
 * Every state change is ONE write transaction that appends its op record(s)
 * to oplog AND updates the index; a batch (group commit) is one transaction
 * holding many ops, each op in a nested transaction so one failed op does
 * not undo its neighbours. The rule that makes kill -9 harmless:
 *   Maildir file written, fsynced, renamed, directory fsynced
 *     -> LMDB commit (durable: MDB default, no NOSYNC)
 *       -> reply to the client.
 * A crash before the commit leaves a file the index does not know (an
 * orphan): store_recover() indexes it at start-up with a new UID. The file
 * was durable, its delivery may or may not have been acknowledged, and the
 * sender retries what was not: dedup by message id (X= in the file name,
 * and the dedup DB) makes the retry answer DUPLICATE with the recovered UID
 * instead of storing the message twice. Indexing is never wrong (the
 * bytes are complete and durable) and also adopts files an operator or a
 * tool dropped into the Maildir. Tombstoned files still on disk (an
 * expunge whose unlink was lost) are removed. Files the index knows but that
 * are missing on disk are logged (store.file_missing) and marked expunged.
 *
 * ---- for consumers of the operation log (HA replication, issue 6) ------
 *  - Sequence numbers start at 1 and are CONTIGUOUS: every committed
 *    transaction appends seq = last+1, last+2, ... and stores the last in
 *    meta "seq" in the same transaction. A gap means a lost record.
 *  - Records are SELF-CONTAINED: each names user, mailbox name AND mailbox
 *    id, the UIDVALIDITY, the UID and the resulting MODSEQ, so a replica
 *    applies them in order without reading its own index first, and applying
 *    one twice is detectable (its UID / modseq already present).
 *  - An APPEND references its bytes by the Maildir file name relative to
 *    the user's Maildir: "<folder dir>/cur/<name>" or ".../new/<name>"
 *    ("" folder dir = INBOX), plus size and the cluster message id. The
 *    replica fetches the bytes from the primary by that path (the file is
 *    durable before the record exists) and saves them under the same name.
 *  - Encoding: u8 record version (STORE_OP_VERSION), u8 type, then fields
 *    in a fixed order per type; integers big-endian, strings as u32 length
 *    + bytes. Readers refuse versions they do not know.
 *  - The log is TRIMMED: every store keeps the newest store.oplog_keep
 *    records (store_oplog_set_keep), a primary also those a replica it
 *    ships to still needs (store_oplog_set_floor, at most
 *    STORE_OPLOG_KEEP_FOR_REPLICAS x keep). store_batch_commit deletes at
 *    most STORE_OPLOG_TRIM_STEP of the oldest per batch, in the batch's
 *    transaction, and keeps meta "oplog_first" (absent = 1) = the first
 *    record left; store_oplog_foreach simply starts there. Records stay
 *    contiguous from oplog_first to "seq".
 *  - A replica that was away catches up from its last record while the
 *    primary still has the ones after it; otherwise, or when its log
 *    diverged, it gets a snapshot (store_snapshot_*, below; the rules in
 *    store_replication.h). A replica applies records with store_apply,
 *    which keeps ids, UIDs, MODSEQs and file names.
 *  - Start-up recovery (orphans indexed, missing files expunged) writes
 *    records of its own: on an HA store that was a replica this makes its
 *    log differ from its primary's, which the primary detects and answers
 *    with a resync (correct, only slower).
 *
 * Users and paths: the Maildir of user "local@domain" is
 *   <root>/<domain lower-cased>/<local>/
 * (store_user_dir). Both parts must be non-empty, without '/', NUL or
 * control characters, and must not start with '.', so no user name can
 * reach outside <root> or into the index directory (<root>/.index).
 *
 * Flags: the index is authoritative for flags and keywords. A file's
 * ":2,<flags>" reflect the flags it was saved with; flag changes do not
 * rename files (no crash window between a rename and the commit).
 *
 * Threads: a struct store is used by one writer thread; read transactions
 * (store_read_*) may run on other threads (MDB_NOTLS). */
#ifndef STORE_H
#define STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "maildir.h"
#include "mx_msgid.h"
#include "mx_wire.h"

#define STORE_FORMAT_VERSION 1
#define STORE_OP_VERSION 1
#define STORE_KEYWORDS_MAX 1024 /* octets of a message's keyword list */

/* System flags (index bit set). */
#define STORE_FLAG_SEEN 0x1u
#define STORE_FLAG_ANSWERED 0x2u
#define STORE_FLAG_FLAGGED 0x4u
#define STORE_FLAG_DELETED 0x8u
#define STORE_FLAG_DRAFT 0x10u
#define STORE_FLAG_ALL 0x1fu

enum store_op_type {
    STORE_OP_APPEND = 1,
    STORE_OP_FLAGS = 2,
    STORE_OP_EXPUNGE = 3,
    STORE_OP_MAILBOX_CREATE = 4,
    STORE_OP_MAILBOX_DELETE = 5,
    STORE_OP_MAILBOX_RENAME = 6,
    STORE_OP_MAILBOX_SUBSCRIBE = 7,
    /* a subscription to a name that is not a mailbox (RFC 3501 6.3.6: a
     * subscription outlives DELETE, and may precede CREATE); head with
     * mailbox id 0 and UIDVALIDITY 0, then u8 subscribe */
    STORE_OP_SUBSCRIPTION = 8,
};

struct store_mailbox {
    uint64_t id;
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint64_t highestmodseq;
    uint32_t messages;
    uint32_t unseen;
    uint64_t bytes;
    bool subscribed;
    char special_use[32];
};

struct store_message {
    uint32_t uid;
    uint32_t flags;          /* STORE_FLAG_* */
    char keywords[STORE_KEYWORDS_MAX]; /* space-separated atoms */
    uint64_t modseq;
    uint64_t internaldate;   /* ms since the epoch */
    uint64_t size;
    struct mx_msgid msgid;   /* zeros = none */
    bool expunged;           /* tombstone kept for CHANGES_SINCE (VANISHED) */
    enum maildir_subdir subdir;
    char file[MAILDIR_FILENAME_SIZE];
    const uint8_t *mime;     /* serialized mime_cache; points into LMDB memory */
    size_t mime_len;
};

struct store;

/* store_open - open (create) the index under <root>/.index with the given
 * map size. error_r: heap string, caller frees. */
int store_open(const char *root, size_t map_size, struct store **st_r, char **error_r);
void store_close(struct store **st);
const char *store_root(const struct store *st);
MDB_env *store_env(struct store *st);
/* store_dbi_mailboxes - the mailboxes DB (keys: user NUL name), for listing. */
MDB_dbi store_dbi_mailboxes(const struct store *st);

/* store_user_dir - "<root>/<domain>/<local>" for user, or -1 with a
 * static error_r if the address is not acceptable (see above). */
int store_user_dir(const struct store *st, const char *user, char **dir_r, const char **error_r);

/* ---- write transactions (one writer thread) ---------------------------- */

/* A batch: one LMDB write transaction plus the Maildir folders it wrote
 * into with MAILDIR_NO_DIR_FSYNC, fsynced by store_batch_commit before the
 * LMDB commit. */
struct store_batch;
int store_batch_begin(struct store *st, struct store_batch **batch_r, char **error_r);
/* store_batch_commit - fsync touched folders, commit. Consumes the batch.
 * On -1 nothing of the batch is in the index (files written become
 * orphans, indexed by the next store_recover). */
int store_batch_commit(struct store_batch **batch, char **error_r);
void store_batch_abort(struct store_batch **batch);
/* store_batch_txn - the batch's transaction, for reads between ops. */
MDB_txn *store_batch_txn(struct store_batch *batch);
/* store_batch_last_seq - the last oplog sequence written so far. */
uint64_t store_batch_last_seq(const struct store_batch *batch);

/* Results of one operation; text is static. */
struct store_result {
    enum mx_status status;
    const char *text;
    uint32_t uidvalidity;
    uint32_t uid;
    uint64_t modseq;
    /* append with a quota: usage after it (bytes) and the byte limit */
    uint64_t quota_used, quota_bytes;
};

struct store_append_req {
    const char *user;
    const char *mailbox;        /* UTF-8 IMAP name, validated here */
    const void *body;
    size_t body_len;
    uint32_t flags;             /* STORE_FLAG_* */
    const char *keywords;       /* space-separated, or NULL */
    uint64_t internaldate;      /* ms; 0 = now */
    const struct mx_msgid *msgid; /* NULL or zeros = no dedup */
    uint64_t quota_bytes, quota_count; /* 0 = unlimited */
    bool create;
};
/* Each op below runs in its own nested transaction of batch: on a non-OK
 * status nothing of it stays in the index. Returns 0 (see res->status) or
 * -1 for an internal failure (res->status TEMPFAIL). */
int store_append(struct store_batch *batch, const struct store_append_req *req,
                 struct store_result *res);
int store_mailbox_create(struct store_batch *batch, const char *user, const char *mailbox,
                         const char *special_use, struct store_result *res);
int store_mailbox_delete(struct store_batch *batch, const char *user, const char *mailbox,
                         struct store_result *res);
/* store_mailbox_rename - rename a mailbox and its children (ids, UIDs
 * and UIDVALIDITY move with them). Renaming INBOX is refused for now. */
int store_mailbox_rename(struct store_batch *batch, const char *user, const char *old_mailbox,
                         const char *new_mailbox, struct store_result *res);
int store_mailbox_subscribe(struct store_batch *batch, const char *user, const char *mailbox,
                            bool subscribe, struct store_result *res);
enum store_flag_mode { STORE_FLAGS_REPLACE = 0, STORE_FLAGS_ADD = 1, STORE_FLAGS_REMOVE = 2 };
/* store_flags_store - uids[0..n); unchangedsince 0 = unconditional. UIDs
 * whose modseq is above it are skipped and reported in *modified_r
 * (heap, *n_modified_r entries). */
int store_flags_store(struct store_batch *batch, const char *user, const char *mailbox,
                      uint32_t uidvalidity, const uint32_t *uids, size_t n,
                      enum store_flag_mode mode, uint32_t flags, const char *keywords,
                      uint64_t unchangedsince, uint32_t **modified_r, size_t *n_modified_r,
                      struct store_result *res);
/* store_expunge - expunge the \Deleted messages among uids (NULL = all);
 * the expunged UIDs in *expunged_r (heap). */
int store_expunge(struct store_batch *batch, const char *user, const char *mailbox,
                  uint32_t uidvalidity, const uint32_t *uids, size_t n,
                  uint32_t **expunged_r, size_t *n_expunged_r, struct store_result *res);

/* store_copy - copy (or move) the live messages among uids from mailbox
 * into dest; *src_r / *dst_r (heap, *n_r entries) pair source and new
 * UIDs in order (COPYUID). A move tombstones the sources (EXPUNGE ops). */
int store_copy(struct store_batch *batch, const char *user, const char *mailbox,
               uint32_t uidvalidity, const uint32_t *uids, size_t n, const char *dest, bool move,
               uint32_t **src_r, uint32_t **dst_r, size_t *n_r, struct store_result *res);

/* store_subscriptions_orphan - the user's subscribed names that are not
 * mailboxes, in name order: fn(ctx, name) returns 0 to go on. */
typedef int store_name_fn(void *ctx, const char *name);
int store_subscriptions_orphan(struct store *st, MDB_txn *txn, const char *user,
                               store_name_fn *fn, void *ctx);

/* ---- reads ------------------------------------------------------------- */

/* store_mailbox_get - 0 found, 1 not found, -1 error (txn: any txn). */
int store_mailbox_get(struct store *st, MDB_txn *txn, const char *user, const char *name,
                      struct store_mailbox *mb_r);
/* store_message_get - 0 found, 1 not found, -1 error. mime points into txn. */
int store_message_get(struct store *st, MDB_txn *txn, uint64_t mailbox_id, uint32_t uid,
                      struct store_message *msg_r);
/* Iterate a mailbox's messages in UID order (tombstones included). fn
 * returns 0 to go on. */
typedef int store_message_fn(void *ctx, const struct store_message *msg);
int store_message_foreach(struct store *st, MDB_txn *txn, uint64_t mailbox_id,
                          store_message_fn *fn, void *ctx);
/* Iterate the oplog from seq (inclusive): fn gets the raw record. */
typedef int store_oplog_fn(void *ctx, uint64_t seq, const uint8_t *rec, size_t len);
int store_oplog_foreach(struct store *st, MDB_txn *txn, uint64_t from_seq, store_oplog_fn *fn,
                        void *ctx);
/* store_oplog_type - type of a raw record; -1 if malformed/unknown version. */
int store_oplog_type(const uint8_t *rec, size_t len);

/* ---- replication (issue 6, store_replication.c drives these) ---------- */

/* store_apply - on a replica: apply the primary's record seq (must be the
 * last applied + 1) inside batch, keeping mailbox ids, UIDVALIDITY, UIDs,
 * MODSEQs and file names exactly, and store the same bytes at the same
 * seq in the oplog. body: an APPEND's message bytes, saved under the
 * record's file name (NULL: the primary no longer had the file, an EXPUNGE
 * of it follows). -1 with error_r (heap) when the record does not fit
 * this index (the logs diverged) or on an I/O failure: abort the batch. */
int store_apply(struct store_batch *batch, uint64_t seq, const uint8_t *rec, size_t len,
                const void *body, size_t body_len, char **error_r);
/* store_oplog_append_info - user, mailbox id, UID and file path
 * ("<folder dir>/cur/<name>") of an APPEND record (heap strings); -1 if
 * rec is not a well-formed APPEND. */
int store_oplog_append_info(const uint8_t *rec, size_t len, char **user_r, uint64_t *mailbox_id_r,
                            uint32_t *uid_r, char **rel_r);
/* store_message_locate - the current full path of a live message found by
 * mailbox id (the mailbox may have been renamed since the record): 0, 1 if
 * it is gone (expunged, mailbox deleted), -1 on error. */
int store_message_locate(struct store *st, MDB_txn *txn, const char *user, uint64_t mailbox_id,
                         uint32_t uid, char **path_r);

/* HA state in meta: "epoch" u64 (the highest epoch this store was told,
 * persisted before it acts on it) and "epoch_history" (text
 * "epoch:first_seq,...": in which epoch each range of the log was
 * written; see store_replication.h). */
struct store_ha_meta {
    uint64_t epoch;
    uint64_t seq; /* last oplog record */
    uint64_t oplog_first; /* first record still in the oplog (meta "oplog_first", absent = 1) */
    bool snapshot_incomplete; /* a snapshot resync began and did not finish */
    char history[12288]; /* STORE_HISTORY_MAX ranges of two 20-digit numbers */
};
int store_ha_read(struct store *st, MDB_txn *txn, struct store_ha_meta *meta_r);
/* store_ha_write - set epoch and/or history (NULL = keep) in batch. */
int store_ha_write(struct store_batch *batch, const uint64_t *epoch, const char *history);
/* store_wipe - empty the index (keeping "epoch" and the "uidvalidity"
 * high-water mark), set meta "snapshot_incomplete" in the same commit and
 * remove every Maildir under the root: a replica's snapshot resync starts
 * from here, and only store_snapshot_load_finish clears the marker. */
int store_wipe(struct store *st, char **error_r);

/* ---- the operation log's length (trimming) ------------------------------ */

#define STORE_OPLOG_KEEP_DEFAULT 1000000
#define STORE_OPLOG_KEEP_MIN 100
/* A primary keeps records a replica it ships to still needs, but never
 * more than this many times oplog_keep: a replica away longer gets a
 * snapshot instead. */
#define STORE_OPLOG_KEEP_FOR_REPLICAS 4
/* Records deleted per batch at most: trimming a long log is spread over
 * many batches instead of stalling one. */
#define STORE_OPLOG_TRIM_STEP 10000

/* store_oplog_set_keep - keep at least the newest keep records (clamped to
 * STORE_OPLOG_KEEP_MIN); set once before the first batch. */
void store_oplog_set_keep(struct store *st, uint64_t keep);
/* store_oplog_set_floor - keep every record from seq on (a replica still
 * needs them), within STORE_OPLOG_KEEP_FOR_REPLICAS x keep; UINT64_MAX =
 * no such need. Any thread (the writer thread reads it at each commit). */
void store_oplog_set_floor(struct store *st, uint64_t seq);
/* store_oplog_trim_target - records below the returned seq may go, given
 * the last seq, keep and floor (pure; exposed for tests). */
uint64_t store_oplog_trim_target(uint64_t last, uint64_t keep, uint64_t floor);

/* ---- snapshot resync (store_replication.c drives these) ---------------- */

/* The primary's side: one LMDB read transaction gives a consistent image
 * at its last seq S0. Rows come in database order: meta counters
 * ("mailbox_id", "uidvalidity", orphan subscriptions), mailboxes, messages
 * (tombstones included), dedup. Each row is encoded for the wire (u8
 * database, u32 key length, key, value); a live message row also names the
 * message file as of S0. */
struct store_snapshot;
struct store_snapshot_row {
    const uint8_t *wire; /* valid until the next store_snapshot_next */
    size_t wire_len;
    uint64_t mailbox_id; /* a mailbox or message row: its mailbox; else 0 */
    /* a live message: the file as of S0 (heap, full path) and how to find
     * it if it moved since (store_message_locate); NULL path otherwise */
    char *path;
    char user[512];
    uint32_t uid;
};
/* store_snapshot_open - begin a read transaction (kept open until close:
 * the thread that opened it uses it, MDB_NOTLS). */
int store_snapshot_open(struct store *st, struct store_snapshot **snap_r, char **error_r);
void store_snapshot_close(struct store_snapshot **snap);
uint64_t store_snapshot_seq(const struct store_snapshot *snap);
/* store_snapshot_history - the epoch history as of S0. */
const char *store_snapshot_history(const struct store_snapshot *snap);
/* store_snapshot_record - the record at S0 (NULL if S0 = 0 or it is gone). */
const uint8_t *store_snapshot_record(const struct store_snapshot *snap, size_t *len_r);
/* store_snapshot_next - the next row: 0, 1 at the end, -1 on a read error.
 * row->path is the caller's to free. */
int store_snapshot_next(struct store_snapshot *snap, struct store_snapshot_row *row);

/* The replica's side, after store_wipe: one loader per snapshot, rows
 * written in batches (one per chunk). A row whose message file did not
 * come (body NULL: the primary no longer had it) is indexed as it was at
 * S0; the EXPUNGE or MAILBOX_DELETE record after S0 follows. Files are
 * written without a per-file fsync: the batch commit runs syncfs() first. */
struct store_snapshot_load;
/* store_snapshot_pending - is meta "snapshot_incomplete" set (or the
 * index unreadable)? */
bool store_snapshot_pending(struct store *st);
struct store_snapshot_load *store_snapshot_load_new(uint64_t seq);
void store_snapshot_load_free(struct store_snapshot_load **load);
uint64_t store_snapshot_load_seq(const struct store_snapshot_load *load);
int store_snapshot_load_row(struct store_batch *batch, struct store_snapshot_load *load,
                            const uint8_t *wire, size_t wire_len, const void *body,
                            size_t body_len, char **error_r);
/* store_snapshot_load_finish - meta "seq" = S0, the record at S0 (if any)
 * as the log's only record ("oplog_first" = S0, else S0 + 1), the epoch
 * history, and the marker cleared, in batch. */
int store_snapshot_load_finish(struct store_batch *batch, struct store_snapshot_load *load,
                               const char *history, const uint8_t *rec, size_t rec_len,
                               char **error_r);
/* counters for the log line */
void store_snapshot_load_stats(const struct store_snapshot_load *load, uint64_t *rows_r,
                               uint64_t *files_r, uint64_t *bytes_r);

/* ---- start-up ---------------------------------------------------------- */

struct store_recover_stats {
    size_t mailboxes;
    size_t orphans_indexed;
    size_t missing_expunged;
    size_t tombstones_removed;
    size_t duplicates_skipped;
    size_t mailboxes_adopted;
};
/* store_recover - reconcile every indexed mailbox with its Maildir (see the
 * comment at the top); one batch. */
int store_recover(struct store *st, struct store_recover_stats *stats_r, char **error_r);
/* store_recover_user - the same for one user only (NULL = all), also
 * adopting that user's folders the index does not know: what
 * `mxctl-store reindex USER` runs. UIDs of files the index still knows
 * are kept; other files get new UIDs above UIDNEXT; a folder the index
 * lost gets a new UIDVALIDITY (clients then resynchronise, as IMAP
 * requires when UIDs cannot be kept). */
int store_recover_user(struct store *st, const char *user, struct store_recover_stats *stats_r,
                       char **error_r);

/* ---- helpers ----------------------------------------------------------- */

/* store_flags_from_maildir / _to_maildir - system flag <-> letter sets. */
uint32_t store_flags_from_maildir(uint64_t letters);
uint64_t store_flags_to_maildir(uint32_t flags);
/* store_flag_parse - "\\Seen" -> STORE_FLAG_SEEN; 0 for a keyword, -1 for
 * an invalid flag (unknown system flag, bad atom characters). */
int store_flag_parse(const char *flag, uint32_t *bit_r);



/* ---- UID sets (store_uidset.c) ----------------------------------------- */

struct store_uidset {
    struct { uint32_t lo, hi; } *r;
    size_t n;
};
/* store_uidset_parse - IMAP sequence-set text over UIDs; '*' = max_uid
 * (the largest UID in use, or UIDNEXT-1). -1 on malformed text. */
int store_uidset_parse(const char *text, uint32_t max_uid, struct store_uidset *set_r);
bool store_uidset_has(const struct store_uidset *set, uint32_t uid);
void store_uidset_free(struct store_uidset *set);
/* store_uidset_format - ascending uids[0..n) as compact text (heap). */
char *store_uidset_format(const uint32_t *uids, size_t n);

#endif
