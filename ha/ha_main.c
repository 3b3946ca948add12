/* mx-ha - one per node: Corosync membership and quorum -> who is primary
 * (or active) of every pair, told to the local daemons and published.
 *
 * Data flow:
 *   local daemons --MSG_ANY_HA_STATUS_REPORT--> ha.control (ROUTER)
 *       the ack carries the daemon's assignment (role, epoch, peers): the
 *       daemon polls every heartbeat, and an ack is also its lease;
 *   mx-ha --STATE (CPG, agreed order)--> every mx-ha in the view
 *       on every view change, quorum change, change of a local report, and
 *       every heartbeat; once a STATE from every member of the view has
 *       arrived, each node runs ha_decide() over the same inputs and so
 *       reaches the same map (ha_decide.h);
 *   mx-ha --MSG_HA_ANY_CLUSTER_MAP--> ha.publish (PUB, topic "map")
 *       on every change and every heartbeat (PUB is lossy).
 *
 * Safety (no split brain): a local assignment other than FENCED is given
 * only while (a) votequorum does not say this partition is NOT quorate
 * (PENDING, a membership change being confirmed, keeps roles; only a
 * confirmed YES lets a node decide) and (b) the map was decided in a
 * quorate view this node has been part of without a break since. A node that loses quorum, or its corosync, fences its daemons at
 * the next poll - before the majority can promote (that takes the token
 * timeout plus a STATE round) - and a node that rejoins answers FENCED
 * until the first decision of the new view has replaced its stale map. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha_agent.h"
#include "ha_cpg.h"
#include "ha_decide.h"
#include "ha_vip.h"
#include "mx_alloc.h"
#include "mx_bus.h"
#include "mx_daemon.h"
#include "mx_log.h"
#include "mx_net.h"

extern const struct mx_option ha_options[];

/* A local daemon silent for this many heartbeats is reported down. */
#define HA_REPORT_EXPIRY_BEATS 3
/* How soon a STATE refused by corosync flow control is tried again. */
#define HA_RESEND_MS 50

struct ha {
    struct event_base *base;
    struct ha_config config;
    char node[HA_NAME_MAX];
    char cpg_group[128];
    unsigned heartbeat_ms;

    struct mx_bus *bus;
    struct mx_server *control;
    struct mx_pub *pub;
    struct ha_agent *agent;
    struct event *tick, *resend;

    struct ha_cpg *cpg; /* NULL while corosync is unreachable */
    enum ha_quorum quorum; /* votequorum's verdict for our partition (ha_cpg.h) */
    bool trusted;       /* map decided in a quorate view, unbroken since */
    bool decided_in_view;

    size_t n_view;
    struct ha_cpg_member view[HA_MAX_NODES];
    uint64_t view_id; /* view_hash() of view */
    struct ha_node_state *states; /* [HA_MAX_NODES], parallel to view */

    struct ha_map map;
    struct ha_switchover switchovers[HA_MAX_PAIRS];

    /* Nodes whose mx-ha left while the node stayed (ha_decide.h: holds),
     * each until this node's clock says their daemons' lease ran out. */
    size_t n_holds;
    char holds[HA_MAX_NODES][HA_NAME_MAX];
    uint64_t hold_until_ms[HA_MAX_NODES];
    uint32_t hold_nodeid[HA_MAX_NODES];
    unsigned daemon_lease_ms;

    struct ha_report reports[HA_MAX_PAIRS]; /* our local daemons */
    uint64_t report_seen_ms[HA_MAX_PAIRS];
    bool vip_held[HA_MAX_PAIRS];
    bool state_dirty;
};

static bool may_assign(const struct ha *ha)
{
    /* PENDING keeps the roles (a membership change is being confirmed);
     * only NO fences. */
    return ha->cpg && ha->quorum != HA_QUORUM_NO && ha->trusted;
}

/* ---- STATE multicast --------------------------------------------------- */

static void send_state(struct ha *ha)
{
    ha->state_dirty = true;
    if (!ha->cpg)
        return;
    struct ha_node_state *own = mx_calloc(1, sizeof(*own));
    ha_copy_name(own->node, sizeof(own->node), ha->node);
    own->map = ha->map;
    memcpy(own->reports, ha->reports, sizeof(own->reports));
    own->view_id = ha->view_id;
    own->n_holds = ha->n_holds;
    memcpy(own->holds, ha->holds, sizeof(own->holds));
    uint8_t *data = NULL;
    size_t len = 0;
    if (ha_state_encode(&ha->config, own, ha->quorum == HA_QUORUM_YES, &data, &len) < 0) {
        mx_log(MX_LOG_ERR, "ha.state_too_large", MX_KVU("pairs", ha->config.n_pairs));
        free(own);
        return;
    }
    free(own);
    int rc = ha_cpg_send(ha->cpg, data, len);
    free(data);
    if (rc == 0) {
        ha->state_dirty = false;
    } else if (rc > 0) {
        struct timeval tv = { 0, HA_RESEND_MS * 1000 };
        event_add(ha->resend, &tv);
    }
}

static void on_resend(evutil_socket_t fd, short what, void *arg)
{
    struct ha *ha = arg;
    if (ha->state_dirty)
        send_state(ha);
}

/* ---- the map's consequences on this node -------------------------------- */

static void publish_map(struct ha *ha)
{
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_HA_ANY_CLUSTER_MAP, 0, NULL);
    mx_frame_put_u64(&frame, F_EPOCH, ha->map.epoch);
    mx_frame_put_u32(&frame, F_QUORATE, may_assign(ha) ? 1 : 0);
    if (may_assign(ha)) {
        for (size_t p = 0; p < ha->config.n_pairs; p++) {
            const struct ha_map_pair *mp = &ha->map.pairs[p];
            if (!mp->active)
                continue;
            const char *endpoint = "";
            for (size_t s = 0; s < ha->n_view; s++)
                if (ha->states[s].received && strcmp(ha->states[s].node, mp->primary) == 0 &&
                    ha->states[s].reports[p].present)
                    endpoint = ha->states[s].reports[p].endpoint;
            mx_frame_put_str(&frame, F_PAIR, ha->config.pairs[p].name);
            mx_frame_put_str(&frame, F_NODE, mp->primary);
            mx_frame_put_str(&frame, F_ENDPOINT, endpoint);
        }
    }
    const char *error = NULL;
    if (mx_pub_send(ha->pub, "map", &frame, &error) < 0)
        mx_log(MX_LOG_ERR, "ha.publish_failed", MX_KV("error", error));
    mx_frame_free(&frame);
}

static void apply_vips(struct ha *ha)
{
    for (size_t p = 0; p < ha->config.n_pairs; p++) {
        const struct ha_pair_config *pc = &ha->config.pairs[p];
        if (!pc->vip[0])
            continue;
        bool hold = may_assign(ha) && ha->map.pairs[p].active &&
                    strcmp(ha->map.pairs[p].primary, ha->node) == 0;
        if (hold == ha->vip_held[p])
            continue;
        char *error = NULL;
        if (ha_vip_apply(pc->vip, pc->vip_interface, hold, &error) < 0) {
            mx_log(MX_LOG_ERR, hold ? "ha.vip_add_failed" : "ha.vip_del_failed",
                   MX_KV("pair", pc->name), MX_KV("vip", pc->vip),
                   MX_KV("interface", pc->vip_interface), MX_KV("error", error));
            free(error);
            if (hold)
                continue; /* retried at the next heartbeat */
        }
        ha->vip_held[p] = hold;
        mx_log(MX_LOG_NOTICE, hold ? "ha.vip_added" : "ha.vip_removed", MX_KV("pair", pc->name),
               MX_KV("vip", pc->vip), MX_KV("interface", pc->vip_interface));
    }
}

static void log_map(const struct ha *ha, const char *event)
{
    for (size_t p = 0; p < ha->config.n_pairs; p++) {
        const struct ha_map_pair *mp = &ha->map.pairs[p];
        mx_log(MX_LOG_NOTICE, event, MX_KV("pair", ha->config.pairs[p].name),
               MX_KV("primary", mp->active ? mp->primary : ""), MX_KVU("epoch", mp->epoch),
               MX_KVU("map_epoch", ha->map.epoch), MX_KVU("excluded", mp->n_excluded));
    }
}

static void set_quorum(struct ha *ha, enum ha_quorum quorum, const char *why)
{
    bool was = may_assign(ha);
    ha->quorum = quorum;
    if (quorum == HA_QUORUM_NO)
        ha->trusted = false;
    if (was && !may_assign(ha)) {
        /* Fence at once: the next poll of every local daemon answers
         * FENCED, the map goes out with F_QUORATE 0, VIPs are dropped. */
        mx_log(MX_LOG_WARNING, "ha.fenced", MX_KV("reason", why));
        publish_map(ha);
        apply_vips(ha);
    }
}

/* ---- decisions -------------------------------------------------------- */

static bool view_complete(const struct ha *ha)
{
    if (ha->n_view == 0)
        return false;
    for (size_t s = 0; s < ha->n_view; s++)
        if (!ha->states[s].received)
            return false;
    return true;
}

static void decide(struct ha *ha)
{
    if (!view_complete(ha))
        return;
    /* The inputs every member has: the STATEs of this view (and, after the
     * first decision here, the map that decision produced - the same on
     * every member). A node's own older map counts only through its STATE. */
    struct ha_map *previous = mx_calloc(1, sizeof(*previous));
    bool all_quorate = true;
    if (ha->decided_in_view)
        *previous = ha->map;
    for (size_t s = 0; s < ha->n_view; s++) {
        if (ha_map_newer(&ha->states[s].map, previous, ha->config.n_pairs))
            *previous = ha->states[s].map;
        if (!ha->states[s].quorate)
            all_quorate = false;
    }
    struct ha_map *next = mx_calloc(1, sizeof(*next));
    bool changed = ha_decide(&ha->config, ha->states, ha->n_view, previous, ha->switchovers,
                             all_quorate, next);
    bool first = !ha->decided_in_view;
    /* Every STATE said quorate, but this node may have learnt otherwise
     * since it sent its own: then it does not adopt the decision (it is
     * fenced anyway) and takes the others' map from their next STATEs. */
    bool adopt = all_quorate && ha->quorum == HA_QUORUM_YES;
    if (all_quorate && !adopt) {
        ha->decided_in_view = false;
        mx_log(MX_LOG_NOTICE, "ha.decision_skipped", MX_KV("reason", "not quorate any more"));
    }
    /* Two primaries named for one pair in one epoch can only come from a
     * decision made without quorum: say so loudly (tests fail on it). */
    for (size_t s = 0; s < ha->n_view; s++) {
        const struct ha_map *theirs = &ha->states[s].map;
        for (size_t p = 0; p < ha->config.n_pairs; p++) {
            const struct ha_map_pair *a = &theirs->pairs[p], *b = &ha->map.pairs[p];
            if (a->epoch == b->epoch && a->epoch != 0 && strcmp(a->primary, b->primary) != 0)
                mx_log(MX_LOG_ERR, "ha.map_conflict", MX_KV("node", ha->states[s].node),
                       MX_KV("pair", ha->config.pairs[p].name), MX_KVU("epoch", a->epoch),
                       MX_KV("theirs", a->primary), MX_KV("ours", b->primary));
        }
    }
    if (!adopt) {
        free(previous);
        free(next);
        return;
    }
    bool newer = ha_map_newer(next, &ha->map, ha->config.n_pairs);
    ha->map = *next;
    ha->decided_in_view = true;
    free(previous);
    free(next);
    if (!ha->trusted)
        mx_log(MX_LOG_NOTICE, "ha.unfenced", MX_KVU("map_epoch", ha->map.epoch),
               MX_KVU("members", ha->n_view));
    bool was_trusted = ha->trusted;
    ha->trusted = true;
    if (changed || newer || first || !was_trusted) {
        if (changed || newer)
            log_map(ha, "ha.map");
        publish_map(ha);
        apply_vips(ha);
        if (changed)
            send_state(ha); /* others learn the new map only from STATEs */
    }
}

/* ---- CPG callbacks ---------------------------------------------------- */

static int view_index(const struct ha *ha, struct ha_cpg_member m)
{
    for (size_t s = 0; s < ha->n_view; s++)
        if (ha->view[s].nodeid == m.nodeid && ha->view[s].pid == m.pid)
            return (int)s;
    return -1;
}

/* view_hash - identity of a CPG view: FNV-1a over its (nodeid, pid)
 * members in ascending order, so every member computes the same value
 * whatever order corosync listed them in. */
static uint64_t view_hash(const struct ha_cpg_member *members, size_t n)
{
    uint64_t keys[HA_MAX_NODES];
    for (size_t i = 0; i < n; i++)
        keys[i] = (uint64_t)members[i].nodeid << 32 | members[i].pid;
    for (size_t i = 1; i < n; i++) /* insertion sort: n <= HA_MAX_NODES */
        for (size_t j = i; j > 0 && keys[j - 1] > keys[j]; j--) {
            uint64_t t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++) {
            hash ^= (keys[i] >> (8 * b)) & 0xff;
            hash *= 0x100000001b3ull;
        }
    return hash;
}

static bool is_held(const struct ha *ha, const char *node)
{
    for (size_t h = 0; h < ha->n_holds; h++)
        if (strcmp(ha->holds[h], node) == 0)
            return true;
    return false;
}

/* drop_hold - forget the hold on node; whether there was one. */
static bool drop_hold(struct ha *ha, const char *node)
{
    for (size_t h = 0; h < ha->n_holds; h++) {
        if (strcmp(ha->holds[h], node) != 0)
            continue;
        ha->n_holds--;
        memmove(ha->holds[h], ha->holds[h + 1], (ha->n_holds - h) * HA_NAME_MAX);
        memmove(&ha->hold_until_ms[h], &ha->hold_until_ms[h + 1],
                (ha->n_holds - h) * sizeof(ha->hold_until_ms[0]));
        memmove(&ha->hold_nodeid[h], &ha->hold_nodeid[h + 1],
                (ha->n_holds - h) * sizeof(ha->hold_nodeid[0]));
        memset(ha->holds[ha->n_holds], 0, HA_NAME_MAX);
        return true;
    }
    return false;
}

static void on_deliver(void *ctx, struct ha_cpg_member from, const void *data, size_t len)
{
    struct ha *ha = ctx;
    int index = view_index(ha, from);
    if (index < 0)
        return; /* sent by a process no longer in our view */
    struct ha_node_state *state = mx_calloc(1, sizeof(*state));
    enum ha_payload_kind kind;
    int pair = -1;
    char target[HA_NAME_MAX];
    const char *error = NULL;
    if (ha_payload_decode(&ha->config, data, len, &kind, state, &pair, target, &error) < 0) {
        mx_log(MX_LOG_WARNING, "ha.bad_payload", MX_KVU("nodeid", from.nodeid),
               MX_KVU("pid", from.pid), MX_KVU("bytes", len), MX_KV("error", error));
        free(state);
        return;
    }
    if (kind == HA_PAYLOAD_STATE && state->view_id != ha->view_id) {
        /* Sent before its sender saw the current view: it re-sends. */
        mx_log(MX_LOG_DEBUG, "ha.state_of_old_view", MX_KV("node", state->node));
        free(state);
        return;
    }
    if (kind == HA_PAYLOAD_STATE) {
        /* A held node's mx-ha is back: it speaks for its daemons again. */
        if (drop_hold(ha, state->node))
            send_state(ha);
        ha->states[index] = *state;
    } else if (pair >= 0) {
        ha->switchovers[pair].pending = true;
        memcpy(ha->switchovers[pair].target, target, HA_NAME_MAX);
        mx_log(MX_LOG_NOTICE, "ha.switchover_requested", MX_KV("pair", ha->config.pairs[pair].name),
               MX_KV("target", target[0] ? target : "next"), MX_KVU("from_nodeid", from.nodeid));
    }
    free(state);
    decide(ha);
}

static void on_view(void *ctx, const struct ha_cpg_member *members, size_t n,
                    const struct ha_cpg_member *orphaned, size_t n_orphaned)
{
    struct ha *ha = ctx;
    /* An mx-ha that left while its node stayed may leave a primary store
     * running on its lease: hold that node (no failover of its pairs) for
     * ha.daemon_lease. A node that went down entirely is not held: its
     * daemons went with it, or, cut off, were fenced by their own mx-ha
     * on losing quorum. */
    for (size_t o = 0; o < n_orphaned; o++) {
        int index = view_index(ha, orphaned[o]);
        if (index < 0 || !ha->states[index].received)
            continue;
        const char *node = ha->states[index].node;
        bool primary = false;
        for (size_t p = 0; p < ha->config.n_pairs; p++)
            if (ha->map.pairs[p].active && strcmp(ha->map.pairs[p].primary, node) == 0)
                primary = true;
        if (primary && ha->n_holds < HA_MAX_NODES && !is_held(ha, node)) {
            ha_copy_name(ha->holds[ha->n_holds], HA_NAME_MAX, node);
            ha->hold_nodeid[ha->n_holds] = orphaned[o].nodeid;
            ha->hold_until_ms[ha->n_holds++] = mx_now_ms() + ha->daemon_lease_ms;
            mx_log(MX_LOG_WARNING, "ha.hold", MX_KV("node", node),
                   MX_KVU("for_ms", ha->daemon_lease_ms),
                   MX_KV("reason", "its mx-ha left, the node did not: its primaries may still "
                                   "serve on their lease"));
        }
    }
    if (n > HA_MAX_NODES) {
        mx_log(MX_LOG_ERR, "ha.view_too_large", MX_KVU("members", n), MX_KVU("max", HA_MAX_NODES));
        n = HA_MAX_NODES;
    }
    /* Every STATE is re-sent for the new view: a decision needs one from
     * each member delivered in THIS view, so that all members decide over
     * the same set. Pending switchovers die with the view. */
    memcpy(ha->view, members, n * sizeof(*members));
    ha->n_view = n;
    ha->view_id = view_hash(members, n);
    memset(ha->states, 0, HA_MAX_NODES * sizeof(*ha->states));
    memset(ha->switchovers, 0, sizeof(ha->switchovers));
    ha->decided_in_view = false;
    mx_log(MX_LOG_NOTICE, "ha.view", MX_KVU("members", n));
    send_state(ha);
}

/* on_ring - a held node that left the cluster entirely is released: its
 * processes died with it (the usual way to get here is a node killed or
 * powered off, mx-ha noticed a moment before corosync), and holding it
 * would only delay the failover. The price, accepted: if a node's mx-ha
 * died and THEN the node was cut off within ha.daemon_lease, its store may
 * serve reads for what is left of its lease; its writes stay fenced by the
 * epoch (the replicas refuse the old one). */
static void on_ring(void *ctx, const uint32_t *nodeids, size_t n)
{
    struct ha *ha = ctx;
    bool dropped = false;
    for (size_t h = 0; h < ha->n_holds;) {
        bool present = false;
        for (size_t i = 0; i < n; i++)
            if (nodeids[i] == ha->hold_nodeid[h])
                present = true;
        if (present) {
            h++;
            continue;
        }
        mx_log(MX_LOG_NOTICE, "ha.hold_released", MX_KV("node", ha->holds[h]),
               MX_KV("reason", "the node left the cluster"));
        drop_hold(ha, ha->holds[h]);
        dropped = true;
    }
    if (dropped)
        send_state(ha);
}

static void on_quorum(void *ctx, enum ha_quorum quorum)
{
    struct ha *ha = ctx;
    static const char *const names[] = { "no", "pending", "yes" };
    mx_log(quorum == HA_QUORUM_NO ? MX_LOG_WARNING : MX_LOG_NOTICE, "ha.quorum",
           MX_KV("quorate", names[quorum]));
    set_quorum(ha, quorum, "quorum lost");
    send_state(ha); /* others decide only when every STATE says quorate */
}

static void on_cpg_lost(void *ctx, const char *reason)
{
    struct ha *ha = ctx;
    mx_log(MX_LOG_ERR, "ha.corosync_lost", MX_KV("reason", reason));
    set_quorum(ha, HA_QUORUM_NO, "corosync connection lost");
    ha_cpg_close(&ha->cpg);
    ha->n_view = 0;
    ha->decided_in_view = false;
}

static const struct ha_cpg_callbacks cpg_callbacks = {
    .deliver = on_deliver, .view = on_view, .ring = on_ring, .quorum = on_quorum,
    .lost = on_cpg_lost,
};

static void connect_corosync(struct ha *ha)
{
    char *error = NULL;
    if (ha_cpg_open(ha->base, ha->cpg_group, &cpg_callbacks, ha, &ha->cpg, &error) < 0) {
        mx_log(MX_LOG_WARNING, "ha.corosync_unavailable", MX_KV("group", ha->cpg_group),
               MX_KV("error", error));
        free(error);
        return;
    }
    mx_log(MX_LOG_NOTICE, "ha.corosync_joined", MX_KV("group", ha->cpg_group),
           MX_KVU("nodeid", ha_cpg_self(ha->cpg).nodeid));
}

/* ---- control socket: local daemons and mxctl --------------------------- */

static const struct ha_node_state *state_of(const struct ha *ha, const char *node)
{
    for (size_t s = 0; s < ha->n_view; s++)
        if (ha->states[s].received && strcmp(ha->states[s].node, node) == 0)
            return &ha->states[s];
    return NULL;
}

static bool report_differs(const struct ha_report *a, const struct ha_report *b)
{
    /* seq alone moves with every write: it travels with the periodic STATE,
     * not as an event of its own. */
    return a->present != b->present || a->role != b->role || a->epoch != b->epoch ||
           a->in_sync != b->in_sync || strcmp(a->endpoint, b->endpoint) != 0 ||
           strcmp(a->replication_endpoint, b->replication_endpoint) != 0;
}

static void reply_ack(struct mx_server_request **req, enum mx_status status, const char *text)
{
    const char *error = NULL;
    if (mx_server_ack(req, status, text, &error) < 0)
        mx_log(MX_LOG_WARNING, "ha.reply_failed", MX_KV("error", error));
}

static void send_reply(struct mx_server_request **req, struct mx_frame *frame)
{
    const char *error = NULL;
    if (mx_server_reply(req, frame, &error) < 0)
        mx_log(MX_LOG_WARNING, "ha.reply_failed", MX_KV("error", error));
    mx_frame_free(frame);
}

static void handle_report(struct ha *ha, struct mx_server_request *req,
                          const struct mx_frame_view *view)
{
    char pair[HA_NAME_MAX];
    struct ha_report report;
    const char *error = NULL;
    if (ha_report_from_frame(view, pair, &report, &error) < 0) {
        mx_log(MX_LOG_WARNING, "ha.bad_report", MX_KV("peer", mx_server_request_peer(req)),
               MX_KV("error", error));
        reply_ack(&req, MX_STATUS_PERMFAIL, error);
        return;
    }
    int p = ha_config_pair_index(&ha->config, pair);
    bool member = false;
    if (p >= 0)
        for (size_t m = 0; m < ha->config.pairs[p].n_members; m++)
            if (strcmp(ha->config.pairs[p].members[m], ha->node) == 0)
                member = true;
    if (!member) {
        mx_log(MX_LOG_WARNING, "ha.report_unknown_pair", MX_KV("pair", pair),
               MX_KV("peer", mx_server_request_peer(req)));
        reply_ack(&req, MX_STATUS_PERMFAIL,
                  p < 0 ? "pair not in ha.pairs" : "this node is not a member of the pair");
        return;
    }
    bool changed = report_differs(&ha->reports[p], &report);
    ha->reports[p] = report;
    ha->report_seen_ms[p] = mx_now_ms();
    if (changed) {
        mx_log(MX_LOG_INFO, "ha.report", MX_KV("pair", pair), MX_KVU("role", report.role),
               MX_KVU("epoch", report.epoch), MX_KVU("seq", report.seq),
               MX_KVI("in_sync", report.in_sync));
        send_state(ha);
    }

    struct ha_assignment assignment;
    ha_assignment_for(&ha->config, ha->states, ha->n_view, &ha->map, may_assign(ha), (size_t)p,
                      ha->node, report.epoch, &assignment);
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_ACK, 0, NULL);
    mx_frame_put_u32(&frame, F_STATUS, MX_STATUS_OK);
    mx_frame_put_str(&frame, F_PAIR, pair);
    mx_frame_put_u32(&frame, F_HA_ROLE, (uint32_t)assignment.role);
    mx_frame_put_u64(&frame, F_EPOCH, assignment.epoch);
    for (size_t i = 0; i < assignment.n_peers; i++)
        mx_frame_put_str(&frame, F_PEER_ENDPOINT, assignment.peers[i]);
    send_reply(&req, &frame);
}

static void handle_status(struct ha *ha, struct mx_server_request *req)
{
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_HA_ANY_CLUSTER_STATUS_RESULT, 0, NULL);
    mx_frame_put_u32(&frame, F_STATUS, MX_STATUS_OK);
    mx_frame_put_u64(&frame, F_EPOCH, ha->map.epoch);
    mx_frame_put_u32(&frame, F_QUORATE, may_assign(ha) ? 1 : 0);
    for (size_t s = 0; s < ha->n_view; s++)
        if (ha->states[s].received)
            mx_frame_put_str(&frame, F_NODE, ha->states[s].node);
    for (size_t p = 0; p < ha->config.n_pairs; p++) {
        const struct ha_pair_config *pc = &ha->config.pairs[p];
        const struct ha_map_pair *mp = &ha->map.pairs[p];
        mx_frame_put_str(&frame, F_PAIR, pc->name);
        mx_frame_put_str(&frame, F_NODE, mp->active ? mp->primary : "");
        mx_frame_put_u64(&frame, F_EPOCH, mp->epoch);
        const struct ha_node_state *primary = mp->active ? state_of(ha, mp->primary) : NULL;
        const struct ha_report *pr = primary ? &primary->reports[p] : NULL;
        for (size_t m = 0; m < pc->n_members; m++) {
            const struct ha_node_state *st = state_of(ha, pc->members[m]);
            const struct ha_report *r = st && st->reports[p].present ? &st->reports[p] : NULL;
            bool excluded = false;
            for (size_t e = 0; e < mp->n_excluded; e++)
                if (strcmp(mp->excluded[e], pc->members[m]) == 0)
                    excluded = true;
            /* Frontends need not report (HAProxy checks their process):
             * for them, being in the view is being up, and the role is the
             * map's. */
            bool frontend = pc->kind == HA_PAIR_FRONTEND;
            const char *health = !st                ? "not-in-view"
                                 : excluded         ? "excluded"
                                 : !r && !frontend ? "no-report"
                                                    : "up";
            uint32_t role = MX_HA_FENCED;
            if (r)
                role = (uint32_t)r->role;
            else if (frontend && st && mp->active)
                role = strcmp(mp->primary, pc->members[m]) == 0 ? MX_HA_PRIMARY : MX_HA_STANDBY;
            mx_frame_put_str(&frame, F_NODE, pc->members[m]);
            mx_frame_put_u32(&frame, F_HA_ROLE, role);
            mx_frame_put_u64(&frame, F_SEQ, r ? r->seq : 0);
            mx_frame_put_u32(&frame, F_IN_SYNC, r && r->in_sync ? 1 : 0);
            uint64_t lag = 0;
            if (r && pr && pr->present && pr->seq > r->seq)
                lag = pr->seq - r->seq;
            mx_frame_put_u64(&frame, F_LAG, lag);
            mx_frame_put_u64(&frame, F_OPLOG_FIRST, r ? r->oplog_first : 0);
            mx_frame_put_str(&frame, F_TEXT, health);
        }
    }
    send_reply(&req, &frame);
}

static void handle_switchover(struct ha *ha, struct mx_server_request *req,
                              const struct mx_frame_view *view)
{
    char *pair = NULL, *target = NULL;
    if (mx_frame_get_str(view, F_PAIR, &pair) < 0) {
        reply_ack(&req, MX_STATUS_PERMFAIL, "F_PAIR missing");
        return;
    }
    (void)mx_frame_get_str(view, F_NODE, &target);
    int p = ha_config_pair_index(&ha->config, pair);
    const char *problem = NULL;
    if (p < 0) {
        problem = "no such pair in ha.pairs";
    } else if (target && target[0]) {
        problem = "target is not a member of the pair";
        for (size_t m = 0; m < ha->config.pairs[p].n_members; m++)
            if (strcmp(ha->config.pairs[p].members[m], target) == 0)
                problem = NULL;
    }
    if (problem) {
        reply_ack(&req, MX_STATUS_PERMFAIL, problem);
    } else if (!may_assign(ha)) {
        reply_ack(&req, MX_STATUS_TEMPFAIL, "this node's partition is not quorate");
    } else {
        uint8_t *data = NULL;
        size_t len = 0;
        if (ha_switchover_encode(pair, target, &data, &len) < 0 ||
            ha_cpg_send(ha->cpg, data, len) != 0)
            reply_ack(&req, MX_STATUS_TEMPFAIL, "could not multicast the request: try again");
        else
            reply_ack(&req, MX_STATUS_OK, "switchover requested");
        free(data);
    }
    free(pair);
    free(target);
}

static void on_control(void *ctx, struct mx_server_request *req, const struct mx_frame_view *view)
{
    struct ha *ha = ctx;
    switch (view->type) {
    case MSG_ANY_HA_STATUS_REPORT: handle_report(ha, req, view); break;
    case MSG_ANY_HA_CLUSTER_STATUS: handle_status(ha, req); break;
    case MSG_ANY_HA_SWITCHOVER: handle_switchover(ha, req, view); break;
    default:
        mx_log(MX_LOG_WARNING, "ha.unexpected_request", MX_KVU("type", view->type),
               MX_KV("peer", mx_server_request_peer(req)));
        reply_ack(&req, MX_STATUS_PERMFAIL, "mx-ha does not serve this request");
    }
}

/* ---- agent-check ------------------------------------------------------- */

static const char *agent_state(void *ctx)
{
    struct ha *ha = ctx;
    if (!may_assign(ha))
        return "down";
    bool member = false;
    for (size_t p = 0; p < ha->config.n_pairs; p++) {
        const struct ha_pair_config *pc = &ha->config.pairs[p];
        if (pc->kind != HA_PAIR_FRONTEND)
            continue;
        for (size_t m = 0; m < pc->n_members; m++)
            if (strcmp(pc->members[m], ha->node) == 0)
                member = true;
        if (ha->map.pairs[p].active && strcmp(ha->map.pairs[p].primary, ha->node) == 0)
            return "up ready";
    }
    return member ? "up drain" : "down";
}

/* ---- heartbeat ---------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct ha *ha = arg;
    uint64_t now = mx_now_ms();
    for (size_t p = 0; p < ha->config.n_pairs; p++) {
        if (ha->reports[p].present &&
            now - ha->report_seen_ms[p] > (uint64_t)ha->heartbeat_ms * HA_REPORT_EXPIRY_BEATS) {
            mx_log(MX_LOG_WARNING, "ha.report_expired", MX_KV("pair", ha->config.pairs[p].name),
                   MX_KVU("silent_ms", now - ha->report_seen_ms[p]));
            ha->reports[p].present = false;
        }
    }
    for (size_t h = 0; h < ha->n_holds;) {
        if (now >= ha->hold_until_ms[h]) {
            mx_log(MX_LOG_NOTICE, "ha.hold_expired", MX_KV("node", ha->holds[h]));
            drop_hold(ha, ha->holds[h]);
        } else {
            h++;
        }
    }
    if (!ha->cpg)
        connect_corosync(ha);
    send_state(ha);
    publish_map(ha);
    apply_vips(ha);
}

/* ---- start-up ---------------------------------------------------------- */

static int load_pairs(struct ha *ha, const struct mx_config *config, char **error_r)
{
    struct mx_config_node root = mx_config_root(config);
    size_t n = mx_config_list_len(&root, "ha.pairs");
    if (n > HA_MAX_PAIRS) {
        if (asprintf(error_r, "ha.pairs: %zu pairs, at most %d", n, HA_MAX_PAIRS) < 0)
            *error_r = NULL;
        return -1;
    }
    ha->config.n_pairs = n;
    for (size_t i = 0; i < n; i++) {
        struct mx_config_node el = mx_config_list_elem(&root, "ha.pairs", i);
        struct ha_pair_config *pc = &ha->config.pairs[i];
        const char *name = mx_config_string(&el, "name");
        if (!ha_copy_name(pc->name, sizeof(pc->name), name) || !name[0] ||
            ha_config_pair_index(&ha->config, name) != (int)i) {
            if (asprintf(error_r, "ha.pairs[%zu].name \"%s\": empty, too long or repeated", i,
                         name) < 0)
                *error_r = NULL;
            return -1;
        }
        pc->kind = strcmp(mx_config_string(&el, "kind"), "frontend") == 0 ? HA_PAIR_FRONTEND
                                                                          : HA_PAIR_STORE;
        size_t members = mx_config_strings_len(&el, "members");
        if (members == 0 || members > HA_MAX_MEMBERS) {
            if (asprintf(error_r, "ha.pairs[%zu] (%s): 1 to %d members, not %zu", i, name,
                         HA_MAX_MEMBERS, members) < 0)
                *error_r = NULL;
            return -1;
        }
        pc->n_members = members;
        for (size_t m = 0; m < members; m++) {
            if (!ha_copy_name(pc->members[m], HA_NAME_MAX, mx_config_strings_at(&el, "members", m))) {
                if (asprintf(error_r, "ha.pairs[%zu] (%s): member name too long", i, name) < 0)
                    *error_r = NULL;
                return -1;
            }
        }
        const char *vip = mx_config_string(&el, "vip");
        const char *iface = mx_config_string(&el, "vip_interface");
        if (!ha_copy_name(pc->vip, sizeof(pc->vip), vip) ||
            !ha_copy_name(pc->vip_interface, sizeof(pc->vip_interface), iface) ||
            (vip[0] && !iface[0])) {
            if (asprintf(error_r, "ha.pairs[%zu] (%s): vip needs vip_interface (both short)", i,
                         name) < 0)
                *error_r = NULL;
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct mx_option *const tables[] = { mx_common_options, ha_options, NULL };
    struct mx_config *config = mx_daemon_load_config(argc, argv, "ha", tables);
    struct mx_config_node root = mx_config_root(config);
    struct ha *ha = mx_calloc(1, sizeof(*ha));
    ha->states = mx_calloc(HA_MAX_NODES, sizeof(*ha->states));
    char *error = NULL;
    const char *bus_error = NULL;
    int rc = 1;
    ha->base = event_base_new();
    mx_daemon_on_signals(ha->base);
    ha->heartbeat_ms = (unsigned)mx_config_duration_ms(&root, "ha.heartbeat");
    ha->daemon_lease_ms = (unsigned)mx_config_duration_ms(&root, "ha.daemon_lease");
    if (!ha_copy_name(ha->node, sizeof(ha->node), mx_config_string(&root, "node.name")) ||
        !ha_copy_name(ha->cpg_group, sizeof(ha->cpg_group), mx_config_string(&root, "ha.cpg_group"))) {
        error = mx_strdup("node.name or ha.cpg_group too long");
        goto out;
    }
    if (load_pairs(ha, config, &error) < 0)
        goto out;
    /* A VIP left behind by a previous mx-ha of this node (killed before it
     * could remove it) must go: counting it as held makes the first
     * apply_vips remove it until this node is told otherwise. */
    for (size_t p = 0; p < ha->config.n_pairs; p++)
        ha->vip_held[p] = ha->config.pairs[p].vip[0] != '\0';
    apply_vips(ha);
    if (mx_bus_new(ha->base, &ha->bus, &bus_error) < 0 ||
        mx_server_new(ha->bus, mx_config_string(&root, "ha.control"), on_control, ha,
                      &ha->control, &bus_error) < 0 ||
        mx_pub_new(ha->bus, mx_config_string(&root, "ha.publish"), &ha->pub, &bus_error) < 0) {
        error = mx_strdup(bus_error ? bus_error : "bus set-up failed");
        goto out;
    }
    const char *agent_listen = mx_config_string(&root, "ha.agent_listen");
    if (agent_listen[0] &&
        ha_agent_new(ha->base, agent_listen, agent_state, ha, &ha->agent, &error) < 0)
        goto out;
    ha->resend = evtimer_new(ha->base, on_resend, ha);
    ha->tick = event_new(ha->base, -1, EV_PERSIST, on_tick, ha);
    struct timeval beat = { ha->heartbeat_ms / 1000, (ha->heartbeat_ms % 1000) * 1000 };
    event_add(ha->tick, &beat);
    connect_corosync(ha);
    mx_log(MX_LOG_NOTICE, "daemon.started", MX_KV("control", mx_server_endpoint(ha->control)),
           MX_KV("publish", mx_pub_endpoint(ha->pub)), MX_KV("group", ha->cpg_group),
           MX_KVU("pairs", ha->config.n_pairs), MX_KV("agent", agent_listen));
    event_base_dispatch(ha->base);
    rc = 0;
out:
    if (error) {
        mx_log(MX_LOG_CRIT, "daemon.start_failed", MX_KV("error", error));
        free(error);
    }
    /* Leaving: give up every VIP so the next active member can take it. */
    ha->quorum = HA_QUORUM_NO;
    ha->trusted = false;
    apply_vips(ha);
    ha_cpg_close(&ha->cpg);
    ha_agent_free(&ha->agent);
    if (ha->tick)
        event_free(ha->tick);
    if (ha->resend)
        event_free(ha->resend);
    mx_server_free(&ha->control);
    mx_pub_free(&ha->pub);
    mx_bus_free(&ha->bus);
    event_base_free(ha->base);
    mx_config_free(&config);
    free(ha->states);
    free(ha);
    if (rc == 0)
        mx_log(MX_LOG_NOTICE, "daemon.stopped");
    return rc;
}
