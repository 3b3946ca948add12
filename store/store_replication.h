/* store_replication - mx-store's side of high availability (issue 6):
 * the role and epoch mx-ha assigns, the primary's shipper of the operation
 * log and the replica's applier. See /work/shared/DESIGN.md and
 * docs/ARCHITECTURE.md for the cluster picture; the rules this file keeps:
 *
 *  - Role and epoch come from mx-ha by polling: every heartbeat (and at
 *    once on a change) the store sends MSG_ANY_HA_STATUS_REPORT to
 *    store.ha_control and the MSG_ANY_ACK carries the assignment (F_HA_ROLE,
 *    F_EPOCH, F_PEER_ENDPOINT* = the replicas of a primary): the meaning of
 *    MSG_HA_ANY_ROLE_ASSIGN. A higher epoch is persisted (meta "epoch")
 *    BEFORE the store acts on it; a lower one is ignored. A store that got
 *    no ack for store.ha_lease fences itself (FENCED: serves nothing).
 *  - Epoch history: when a store becomes primary in epoch E with its log
 *    ending at S it records "E:S+1": the records from S+1 on were written
 *    in E. A replica copies its primary's history for the records it holds.
 *    Two logs agree on 1..S iff their histories give every seq in 1..S the
 *    same epoch (one primary per epoch writes each seq once) and, as a
 *    belt-and-braces check, the record at S is byte-identical. Otherwise
 *    the replica's log diverged (it was primary in an older epoch and wrote
 *    records the new primary never had): snapshot resync, below.
 *  - Trimming: the oplog keeps store.oplog_keep records (store.h); the
 *    primary holds back what a replica it ships to still needs (acked + 1,
 *    or S0 + 1 during its snapshot) through store_oplog_set_floor, within
 *    4 x oplog_keep. A replica whose position is below the primary's
 *    oplog_first (or whose record at that position is trimmed, so the byte
 *    comparison cannot be made) gets a snapshot; ship() checks again, so a
 *    trim racing a HELLO also ends in a snapshot, never in a gap.
 *  - Snapshot resync (the only full resync): the primary opens one LMDB
 *    read transaction at its last seq S0 and sends RESYNC_BEGIN (F_SEQ S0):
 *    the replica wipes index and Maildirs, marking meta
 *    "snapshot_incomplete" in the same commit. SNAPSHOT_CHUNKs follow,
 *    request/ack, each under SHIP_FRAME_SOFT_MAX: the raw rows (meta
 *    counters and orphan subscriptions, mailboxes, messages incl.
 *    tombstones, dedup), each live message with its file's bytes (read at
 *    the S0 name, or where store_message_locate finds it now; none if it
 *    is gone: the later EXPUNGE applies without it), saved under the same
 *    name; each chunk is one replica commit after a syncfs. SNAPSHOT_END
 *    carries the history up to S0 and the record at S0, which becomes the
 *    replica's only record ("oplog_first" = S0), and clears the marker;
 *    OPLOG_APPLY continues from S0 + 1. Maildirsize files are not copied:
 *    a missing one is recalculated on first use (maildirsize.h).
 *  - A replica with the marker (killed mid-snapshot) skips start-up
 *    recovery, refuses OPLOG_APPLY, answers HELLO with F_NEEDS_SNAPSHOT
 *    (the primary starts a new snapshot), reports F_IN_SYNC 0 and fences
 *    itself if assigned PRIMARY. Client writes do not wait for a replica
 *    receiving a snapshot (see "Primary" below).
 *  - Primary: after each group commit the writer's batch is shipped as ONE
 *    MSG_STORE_STORE_OPLOG_APPLY (APPENDs followed by their bytes, read from
 *    the durable file); in sync mode a client's reply is held until every
 *    assigned replica that may be promoted acked a seq at or past the
 *    client's batch (store_repl_safe_seq). "May be promoted": it was told
 *    F_LAG 0 in this epoch, or it is new and close enough to be told so
 *    with the next message (peer.must_ack). A replica that needs more than
 *    one message to catch up, or a snapshot, cannot report in sync, so
 *    writes meanwhile are acknowledged without it; it is waited for again
 *    from the message that tells it F_LAG 0 (store.replica_catching_up in
 *    the log). A catch-up never stops the shard's writes. Batches committed while one is in flight go out
 *    together in the next message (pipelining: the writer never waits for
 *    the network). A replica that does not ack in store.replication_timeout
 *    is reported lost: the primary's F_IN_SYNC turns 0 and the replica is
 *    left out of the report's F_PEER_ENDPOINT list; mx-ha then reassigns
 *    the primary without it in a new epoch (degraded). The client writes
 *    committed before the loss (or before mx-ha dropped the replica) that
 *    it had not confirmed are answered TEMPFAIL, never OK
 *    (store_repl_unconfirmed_upto); writes of the degraded epoch are
 *    acknowledged after the local commit. A replica merely catching up is
 *    not lost.
 *  - Replica: applies in order, durably (one LMDB commit + fsyncs per
 *    message), acks F_SEQ = last applied; F_IN_SYNC 1 once a primary of its
 *    current epoch said nothing is left (F_LAG 0), reset on a new epoch.
 *
 * Threads: everything here runs on the event loop thread. */
#ifndef STORE_REPLICATION_H
#define STORE_REPLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_bus.h"
#include "store.h"

struct event_base;
struct store_repl;

struct store_repl_config {
    const char *shard;           /* F_SHARD in replication messages */
    const char *pair;            /* F_PAIR towards mx-ha */
    const char *ha_control;      /* mx-ha's ROUTER on this node */
    const char *listen;          /* replication ROUTER ("" = cannot be a replica) */
    const char *client_endpoint; /* store.listen as bound: F_ENDPOINT */
    bool sync;                   /* false = async: acks after the local commit (lossy) */
    unsigned timeout_ms;         /* replica ack timeout */
    unsigned lease_ms;           /* fence after this long without mx-ha */
    unsigned heartbeat_ms;       /* status report interval */
};

/* Called when the role or the safe seq changed: the server replies to the
 * client writes it holds (or refuses them). */
typedef void store_repl_notify_fn(void *ctx);

/* store_repl_new - start FENCED, connect to mx-ha, bind the replication
 * listener. error_r: heap. */
int store_repl_new(struct event_base *base, struct mx_bus *bus, struct store *st,
                   const struct store_repl_config *config, store_repl_notify_fn *notify,
                   void *ctx, struct store_repl **repl_r, char **error_r);
void store_repl_free(struct store_repl **repl);

/* store_repl_primary - may the store serve clients now? NULL repl (no HA
 * configured) = a standalone primary: true. */
bool store_repl_primary(const struct store_repl *repl);
/* store_repl_safe_seq - a client write whose batch ended at seq may be
 * acknowledged iff seq <= this (UINT64_MAX: async, degraded or no HA). */
uint64_t store_repl_safe_seq(const struct store_repl *repl);
/* store_repl_unconfirmed_upto - a held client write whose batch ended at
 * seq <= this and that is not safe lost a replica of its epoch before the
 * replica confirmed it: refuse it with TEMPFAIL (0: none). */
uint64_t store_repl_unconfirmed_upto(const struct store_repl *repl);
/* store_repl_may_hold - FENCED only for a moment (less than
 * store.ha_lease): client writes committed earlier keep waiting instead of
 * being refused, since a primary told a new epoch by a replica before its
 * own mx-ha fences until mx-ha confirms it (degraded reassignment). They
 * are still acknowledged only as PRIMARY once the current replicas have
 * them. */
bool store_repl_may_hold(const struct store_repl *repl);
/* store_repl_committed - the writer committed up to last_seq: ship it. */
void store_repl_committed(struct store_repl *repl, uint64_t last_seq);
const char *store_repl_endpoint(const struct store_repl *repl);

/* ---- epoch histories ("epoch:first_seq,...", ascending) ----------------- */

struct store_epoch_range {
    uint64_t epoch, first_seq;
};
#define STORE_HISTORY_MAX 200 /* ranges kept; older ones are dropped */

/* store_history_parse - -1 for malformed text or ranges not strictly
 * ascending in both epoch and first_seq; at most STORE_HISTORY_MAX. */
int store_history_parse(const char *text, struct store_epoch_range *v, size_t *n_r);
/* store_history_format - into out (size bytes); -1 if it does not fit. */
int store_history_format(const struct store_epoch_range *v, size_t n, char *out, size_t size);
/* store_history_epoch_of - the epoch seq was written in (0 = before any
 * epoch: a standalone store's records). */
uint64_t store_history_epoch_of(const struct store_epoch_range *v, size_t n, uint64_t seq);
/* store_history_agree - do two histories give every seq in 1..upto the
 * same epoch? */
bool store_history_agree(const struct store_epoch_range *a, size_t na,
                         const struct store_epoch_range *b, size_t nb, uint64_t upto);
/* store_history_begin_epoch - append "epoch:first_seq" (a store becoming
 * primary); the oldest range is dropped when full. */
void store_history_begin_epoch(struct store_epoch_range *v, size_t *n, uint64_t epoch,
                               uint64_t first_seq);

#endif
