/* ha_decide - the cluster map, computed the same way on every node.
 *
 * Every mx-ha multicasts a STATE (its node name, the highest cluster map it
 * knows, and what its local daemons report) through Corosync CPG in agreed
 * order. Virtual synchrony gives every member of a view the same STATE
 * messages in the same order, so when each node feeds the same inputs to the
 * PURE function ha_decide() below, all of them arrive at the same map without
 * a further voting round. Nothing here reads a clock, the network or a
 * global: the function is a value in, value out computation that the unit
 * tests drive through failover, partitions and rejoins.
 *
 * The rules (docs/ARCHITECTURE.md, "mx-ha"):
 *   - only a quorate partition decides; a partition without quorum keeps its
 *     map frozen and every local role is FENCED (ha_assignment_for);
 *   - a pair keeps its primary while that node is in the view and its daemon
 *     reports (no flapping back to a "preferred" node), and while any
 *     member still holds it (its mx-ha left but the node did not: its store
 *     may serve until its lease runs out);
 *   - otherwise the new primary is a candidate: a member in the view whose
 *     store reports, at the pair's epoch, an in-sync REPLICA, and that is
 *     in the pair's replica set (the primary waited for it); among them
 *     the highest (epoch, seq) wins, ties by preference order. No candidate:
 *     the pair is unavailable (never promote an out-of-date replica);
 *   - with no map at all (a new cluster, or every mx-ha restarted) only
 *     stores at the highest epoch any of them persisted may lead, the
 *     highest seq first, and never one still reporting REPLICA without
 *     being in sync (it may lack writes its primary acknowledged alone);
 *   - any change of primary, and any shrinking of the replica set (a
 *     replica left, stopped reporting, or the primary reported it lost:
 *     degraded), takes a new epoch:
 *     the highest epoch anyone knows (maps AND the stores' own persisted
 *     epochs) plus one, so epochs only grow;
 *   - frontend pairs hold no data: their active member is simply the first
 *     member in preference order that is in the view (kept while it stays).
 */
#ifndef HA_DECIDE_H
#define HA_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_wire.h"

#define HA_NAME_MAX 64       /* node and pair names, NUL included */
#define HA_ENDPOINT_MAX 256  /* tcp://host:port, NUL included */
#define HA_MAX_NODES 16      /* members of a CPG view we track */
#define HA_MAX_PAIRS 32      /* configured pairs */
#define HA_MAX_MEMBERS 8     /* members of one pair */

enum ha_pair_kind {
    HA_PAIR_STORE = 0,    /* primary + replicas, data follows the oplog */
    HA_PAIR_FRONTEND = 1, /* active/standby, no data */
};

struct ha_pair_config {
    char name[HA_NAME_MAX];
    enum ha_pair_kind kind;
    size_t n_members;
    char members[HA_MAX_MEMBERS][HA_NAME_MAX]; /* preference order */
    char vip[HA_NAME_MAX];                     /* "10.0.0.5/24" or "" */
    char vip_interface[HA_NAME_MAX];
};

struct ha_config {
    size_t n_pairs;
    struct ha_pair_config pairs[HA_MAX_PAIRS];
};

/* What one local daemon said in its last MSG_ANY_HA_STATUS_REPORT. */
struct ha_report {
    bool present; /* false = no fresh report: the daemon is not alive */
    enum mx_ha_role role;
    uint64_t epoch;
    uint64_t seq;
    uint64_t oplog_first; /* first record its log still holds; 0 = not said */
    bool in_sync;
    char endpoint[HA_ENDPOINT_MAX];
    char replication_endpoint[HA_ENDPOINT_MAX];
    /* A primary's report: F_PEER_ENDPOINT* = the replicas still keeping
     * up. Read only when the primary also says F_IN_SYNC 0 ("a replica
     * did not ack within store.replication_timeout"): the assigned
     * replicas missing from this list are the lost ones (none listed: all
     * lost). A list alone is no verdict: a replica just assigned is not
     * streaming yet. */
    size_t n_peers_ok;
    char peers_ok[HA_MAX_MEMBERS][HA_ENDPOINT_MAX];
};

/* One pair in the cluster map. */
struct ha_map_pair {
    char primary[HA_NAME_MAX]; /* the member assigned in `epoch`; "" = never had one */
    bool active;               /* false: primary lost and no safe candidate */
    uint64_t epoch;            /* map epoch in which this assignment was made */
    /* Store pairs: the replicas the primary ships to (and waits for in
     * sync mode) as of this decision. Only they may be promoted, and one
     * that drops out (left the view, its daemon stopped reporting, or the
     * primary reported it lost) takes a new epoch with it: the epoch it
     * still holds then marks it as missing records acknowledged without it,
     * so it can never be promoted on a stale "in sync". */
    size_t n_replicas;
    char replicas[HA_MAX_MEMBERS][HA_NAME_MAX];
    /* Replicas the primary reported lost in this epoch: they got no more
     * records, so they are neither shipped to nor promotable until they
     * leave the view (and come back to resynchronise) or the primary
     * changes. */
    size_t n_excluded;
    char excluded[HA_MAX_MEMBERS][HA_NAME_MAX];
};

/* The cluster map: indexed like ha_config.pairs. */
struct ha_map {
    uint64_t epoch; /* highest epoch of any pair; 0 = empty map */
    /* Bumped by every change, epoch or not (a replica joining, a pair
     * becoming available again): orders two maps of one epoch, so the
     * newest map known is always the newest made. */
    uint64_t revision;
    struct ha_map_pair pairs[HA_MAX_PAIRS];
};

/* The latest STATE of one member of the view. */
struct ha_node_state {
    char node[HA_NAME_MAX];
    bool received; /* a STATE arrived from it in the current view */
    bool quorate;  /* its votequorum verdict when it sent the STATE */
    /* The CPG view the sender was in when it sent the STATE (ha_main.c:
     * a hash of the members). A process leave is ordered like a message,
     * so a STATE sent before its sender saw the change can be delivered
     * after it: such a STATE speaks for the old view and is not counted. */
    uint64_t view_id;
    /* Nodes whose mx-ha process left while the node stayed up, as this
     * member still counts them: their local daemons may act on their last
     * assignment until their lease runs out, so a pair whose primary is
     * such a node is not failed over before (no two stores serving). The
     * view's holds are the union over its STATEs. */
    size_t n_holds;
    char holds[HA_MAX_NODES][HA_NAME_MAX];
    struct ha_map map;
    struct ha_report reports[HA_MAX_PAIRS]; /* indexed like ha_config.pairs */
};

/* A switchover asked for by an operator, agreed through CPG. */
struct ha_switchover {
    bool pending;
    char target[HA_NAME_MAX]; /* "" = the next eligible member in preference order */
};

/* ha_map_newer - whether a should replace b as "the highest map known":
 * higher (epoch, revision); at equal ones the comparison is on content so
 * every node breaks the (normally impossible) tie the same way. */
bool ha_map_newer(const struct ha_map *a, const struct ha_map *b, size_t n_pairs);

/* ha_decide - the new map from the view's STATEs.
 *   states[0..n_states): one per member of the current view, all received;
 *   previous: the highest map known (the caller takes the newest of the
 *             states' maps and its own last decision in this view);
 *   switchovers: per pair, may be NULL; a switchover that took effect (or
 *             can no longer: its target left the view) is cleared;
 *   quorate: false -> *next = *previous (a minority never decides).
 * Returns true when the map changed. */
bool ha_decide(const struct ha_config *config, const struct ha_node_state *states,
               size_t n_states, const struct ha_map *previous,
               struct ha_switchover *switchovers, bool quorate, struct ha_map *next);

/* The role one node's daemon for one pair is told (the MSG_ANY_ACK of its
 * status report). */
struct ha_assignment {
    enum mx_ha_role role;
    uint64_t epoch;
    size_t n_peers; /* for a store primary: the replicas' replication endpoints */
    char peers[HA_MAX_MEMBERS][HA_ENDPOINT_MAX];
};

/* ha_assignment_for - the assignment of `node` for pair pair_index under
 * map. Not quorate, pair unavailable, or excluded -> FENCED. A FENCED
 * assignment carries the daemon's own reported epoch (own_epoch), never the
 * pair's: a fenced store must not persist an epoch it holds no data of,
 * or it would look current after a full restart. */
void ha_assignment_for(const struct ha_config *config, const struct ha_node_state *states,
                       size_t n_states, const struct ha_map *map, bool quorate,
                       size_t pair_index, const char *node, uint64_t own_epoch,
                       struct ha_assignment *out);

/* ha_config_pair_index - index of the pair called name, or -1. */
int ha_config_pair_index(const struct ha_config *config, const char *name);

/* ---- STATE and SWITCHOVER payloads on CPG ------------------------------
 *
 * A CPG payload is a sequence of mx_wire frames, back to back (each frame
 * knows its own length):
 *   STATE      = MSG_HA_HA_STATE (F_NODE sender, F_NODE* held nodes,
 *                F_VIEW_ID, F_EPOCH map epoch, F_SEQ map revision, F_QUORATE,
 *                F_MESSAGES = number of frames that follow)
 *                then per pair of the map: MSG_HA_ANY_ROLE_ASSIGN (F_PAIR,
 *                F_NODE primary, F_EPOCH, F_HA_ROLE PRIMARY = active /
 *                FENCED = unavailable, F_NODE* replicas, F_TEXT* excluded
 *                replicas' node names)
 *                then per local report: MSG_ANY_HA_STATUS_REPORT exactly as
 *                the daemon sent it.
 *   SWITCHOVER = MSG_ANY_HA_SWITCHOVER (F_PAIR, [F_NODE target]).
 * Pairs are named, not numbered, so nodes whose configs list pairs in a
 * different order still agree; a pair this node does not know is ignored. */

#define HA_PAYLOAD_MAX (64u * 1024u)

/* ha_state_encode - 0 and a heap buffer, or -1 (too large). */
int ha_state_encode(const struct ha_config *config, const struct ha_node_state *state,
                    bool quorate, uint8_t **data_r, size_t *len_r);

enum ha_payload_kind { HA_PAYLOAD_STATE, HA_PAYLOAD_SWITCHOVER };

/* ha_payload_decode - parse a CPG payload. STATE fills *state (received =
 * true); SWITCHOVER fills *pair_index_r and *target. -1 with a static
 * error_r for anything malformed or unknown (the caller logs the sender). */
int ha_payload_decode(const struct ha_config *config, const void *data, size_t len,
                      enum ha_payload_kind *kind_r, struct ha_node_state *state,
                      int *pair_index_r, char target[HA_NAME_MAX], const char **error_r);

int ha_switchover_encode(const char *pair, const char *target, uint8_t **data_r, size_t *len_r);

/* ha_report_from_frame - fill *report from a MSG_ANY_HA_STATUS_REPORT; the
 * pair name into pair[]. -1 with error_r when a field is missing/bad. */
int ha_report_from_frame(const struct mx_frame_view *view, char pair[HA_NAME_MAX],
                         struct ha_report *report, const char **error_r);
/* ha_report_put - the fields of a report (the inverse). */
void ha_report_put(struct mx_frame *frame, const char *pair, const struct ha_report *report);

/* ha_copy_name - bounded copy; false if src does not fit (truncated). */
bool ha_copy_name(char *dst, size_t size, const char *src);

#endif
