/* ha_decide - the deterministic cluster-map function and the CPG payloads
 * that feed it (see ha_decide.h for the rules). */
#include "ha_decide.h"

#include <stdlib.h>
#include <string.h>

bool ha_copy_name(char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    memset(dst, 0, size);
    if (len >= size) {
        memcpy(dst, src, size - 1);
        return false;
    }
    memcpy(dst, src, len);
    return true;
}

int ha_config_pair_index(const struct ha_config *config, const char *name)
{
    for (size_t i = 0; i < config->n_pairs; i++)
        if (strcmp(config->pairs[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const struct ha_node_state *find_state(const struct ha_node_state *states, size_t n,
                                              const char *node)
{
    if (node[0] == '\0')
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (states[i].received && strcmp(states[i].node, node) == 0)
            return &states[i];
    return NULL;
}

/* The report of node's daemon for pair i, or NULL when the node is not in
 * the view or its daemon does not report. */
static const struct ha_report *live_report(const struct ha_node_state *states, size_t n,
                                           const char *node, size_t pair)
{
    const struct ha_node_state *st = find_state(states, n, node);
    if (!st || !st->reports[pair].present)
        return NULL;
    return &st->reports[pair];
}

static bool in_set(const char set[][HA_NAME_MAX], size_t n, const char *node)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(set[i], node) == 0)
            return true;
    return false;
}

static bool is_excluded(const struct ha_map_pair *mp, const char *node)
{
    return in_set(mp->excluded, mp->n_excluded, node);
}

static bool is_replica(const struct ha_map_pair *mp, const char *node)
{
    return in_set(mp->replicas, mp->n_replicas, node);
}

static void set_add(char set[][HA_NAME_MAX], size_t *n, const char *node)
{
    if (*n < HA_MAX_MEMBERS && !in_set(set, *n, node))
        ha_copy_name(set[(*n)++], HA_NAME_MAX, node);
}

static int compare_set(const char a[][HA_NAME_MAX], size_t na, const char b[][HA_NAME_MAX],
                       size_t nb)
{
    if (na != nb)
        return na > nb ? 1 : -1;
    for (size_t i = 0; i < na; i++) {
        int c = strcmp(a[i], b[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

static int compare_pair(const struct ha_map_pair *a, const struct ha_map_pair *b)
{
    int c = strcmp(a->primary, b->primary);
    if (c != 0)
        return c;
    if (a->active != b->active)
        return a->active ? 1 : -1;
    if (a->epoch != b->epoch)
        return a->epoch > b->epoch ? 1 : -1;
    c = compare_set(a->replicas, a->n_replicas, b->replicas, b->n_replicas);
    if (c != 0)
        return c;
    return compare_set(a->excluded, a->n_excluded, b->excluded, b->n_excluded);
}

static int compare_map(const struct ha_map *a, const struct ha_map *b, size_t n_pairs)
{
    if (a->epoch != b->epoch)
        return a->epoch > b->epoch ? 1 : -1;
    if (a->revision != b->revision)
        return a->revision > b->revision ? 1 : -1;
    for (size_t i = 0; i < n_pairs; i++) {
        int c = compare_pair(&a->pairs[i], &b->pairs[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

bool ha_map_newer(const struct ha_map *a, const struct ha_map *b, size_t n_pairs)
{
    return compare_map(a, b, n_pairs) > 0;
}

/* The epoch a change made in this round takes: one more than anything any
 * member knows, the stores' persisted epochs included (an mx-ha that
 * restarted knows no map, but its store remembers). Computed once per
 * round so every pair changed together shares it. */
struct epoch_source {
    uint64_t known_max;
    uint64_t next; /* 0 = not taken yet */
};

static uint64_t take_epoch(struct epoch_source *src)
{
    if (src->next == 0)
        src->next = src->known_max + 1;
    return src->next;
}

/* A store member that may become primary of a pair that had one: it holds
 * every record acknowledged in the pair's epoch. */
static bool store_candidate(const struct ha_map_pair *mp, const struct ha_report *r,
                            const char *node)
{
    return r && is_replica(mp, node) && !is_excluded(mp, node) && r->epoch == mp->epoch &&
           r->role == MX_HA_REPLICA && r->in_sync;
}

static void set_primary(struct ha_map_pair *mp, const char *node, struct epoch_source *epochs)
{
    ha_copy_name(mp->primary, sizeof(mp->primary), node);
    mp->active = true;
    mp->epoch = take_epoch(epochs);
    mp->n_excluded = 0;
    memset(mp->excluded, 0, sizeof(mp->excluded));
    /* the replica set is recomputed at the end of decide_store */
}

static void decide_frontend(const struct ha_pair_config *pc, const struct ha_node_state *states,
                            size_t n, struct ha_map_pair *mp, struct ha_switchover *sw,
                            struct epoch_source *epochs)
{
    bool primary_in_view = find_state(states, n, mp->primary) != NULL;
    if (sw && sw->pending) {
        const char *target = NULL;
        for (size_t m = 0; m < pc->n_members && !target; m++) {
            const char *name = pc->members[m];
            if (strcmp(name, mp->primary) == 0 || !find_state(states, n, name))
                continue;
            if (sw->target[0] == '\0' || strcmp(sw->target, name) == 0)
                target = name;
        }
        sw->pending = false; /* frontends switch at once, or never */
        if (target) {
            set_primary(mp, target, epochs);
            return;
        }
    }
    if (primary_in_view) {
        mp->active = true;
        return;
    }
    for (size_t m = 0; m < pc->n_members; m++) {
        if (find_state(states, n, pc->members[m])) {
            set_primary(mp, pc->members[m], epochs);
            return;
        }
    }
    mp->active = false;
}

/* replica_set_update - the primary's replicas from now on: every other
 * member in the view whose store reports and that is not excluded. One
 * that was a replica and is not any more takes the epoch forward (it
 * misses what is acknowledged from now on); newcomers join without a new
 * epoch (they catch up first and are promotable only once in sync). */
static void replica_set_update(const struct ha_pair_config *pc, size_t pair,
                               const struct ha_node_state *states, size_t n,
                               struct ha_map_pair *mp, struct epoch_source *epochs)
{
    char next[HA_MAX_MEMBERS][HA_NAME_MAX];
    size_t n_next = 0;
    memset(next, 0, sizeof(next));
    for (size_t m = 0; m < pc->n_members; m++) {
        const char *name = pc->members[m];
        if (strcmp(name, mp->primary) != 0 && !is_excluded(mp, name) &&
            live_report(states, n, name, pair))
            set_add(next, &n_next, name);
    }
    bool dropped = false;
    for (size_t i = 0; i < mp->n_replicas; i++)
        if (!in_set(next, n_next, mp->replicas[i]))
            dropped = true;
    if (dropped)
        mp->epoch = take_epoch(epochs);
    memcpy(mp->replicas, next, sizeof(next));
    mp->n_replicas = n_next;
}

static bool held(const struct ha_node_state *states, size_t n, const char *node)
{
    for (size_t s = 0; s < n; s++)
        if (states[s].received && in_set(states[s].holds, states[s].n_holds, node))
            return true;
    return false;
}

static void decide_store(const struct ha_pair_config *pc, size_t pair,
                         const struct ha_node_state *states, size_t n, struct ha_map_pair *mp,
                         struct ha_switchover *sw, struct epoch_source *epochs)
{
    /* The primary's mx-ha is gone but its node is not: its store may still
     * serve on its lease. Nothing changes for this pair until that runs out
     * (or the mx-ha is back). */
    if (mp->primary[0] && mp->active && !live_report(states, n, mp->primary, pair) &&
        held(states, n, mp->primary))
        return;

    /* A replica excluded in this epoch that left the view is forgotten: when
     * it returns it resynchronises as an ordinary replica. */
    size_t kept = 0;
    for (size_t i = 0; i < mp->n_excluded; i++) {
        if (find_state(states, n, mp->excluded[i])) {
            if (kept != i)
                memcpy(mp->excluded[kept], mp->excluded[i], HA_NAME_MAX);
            kept++;
        }
    }
    for (size_t i = kept; i < mp->n_excluded; i++)
        memset(mp->excluded[i], 0, HA_NAME_MAX);
    mp->n_excluded = kept;

    const struct ha_report *primary_report =
        mp->primary[0] ? live_report(states, n, mp->primary, pair) : NULL;

    if (sw && sw->pending) {
        /* Graceful move: only to a member that holds everything the
         * current primary acknowledged (an in-sync replica of this epoch).
         * In sync mode the primary acks only what the replica has, so the
         * switch loses nothing; it waits while the target catches up. */
        const char *target = NULL;
        bool target_in_view = false;
        for (size_t m = 0; m < pc->n_members && !target; m++) {
            const char *name = pc->members[m];
            if (strcmp(name, mp->primary) == 0)
                continue;
            if (sw->target[0] != '\0' && strcmp(sw->target, name) != 0)
                continue;
            if (find_state(states, n, name))
                target_in_view = true;
            if (store_candidate(mp, live_report(states, n, name, pair), name))
                target = name;
        }
        if (target) {
            sw->pending = false;
            set_primary(mp, target, epochs);
            replica_set_update(pc, pair, states, n, mp, epochs);
            return;
        }
        if (!target_in_view || !primary_report)
            sw->pending = false; /* cannot happen any more: a failover takes over */
    }

    if (primary_report) {
        mp->active = true;
        /* A primary of this epoch that says it is out of sync lost a
         * replica (no ack within store.replication_timeout): the replicas
         * missing from its list of those keeping up are excluded, so it
         * can ack again without them (degraded) and none of them can be
         * promoted. The epoch moves on in replica_set_update below. */
        if (primary_report->role == MX_HA_PRIMARY && primary_report->epoch == mp->epoch &&
            !primary_report->in_sync) {
            for (size_t i = 0; i < mp->n_replicas; i++) {
                const char *name = mp->replicas[i];
                const struct ha_report *r = live_report(states, n, name, pair);
                bool keeping_up = false;
                for (size_t k = 0; r && k < primary_report->n_peers_ok; k++)
                    if (strcmp(primary_report->peers_ok[k], r->replication_endpoint) == 0)
                        keeping_up = true;
                if (!keeping_up)
                    set_add(mp->excluded, &mp->n_excluded, name);
            }
        }
        replica_set_update(pc, pair, states, n, mp, epochs);
        return;
    }

    /* Failover (or the first assignment). */
    const char *best = NULL;
    const struct ha_report *best_report = NULL;
    uint64_t bootstrap_epoch = 0;
    if (mp->primary[0] == '\0') {
        /* Never had a primary in any map we know (a new cluster, or every
         * mx-ha restarted): only stores at the highest epoch any of them
         * persisted may lead. */
        for (size_t m = 0; m < pc->n_members; m++) {
            const struct ha_report *r = live_report(states, n, pc->members[m], pair);
            if (r && r->epoch > bootstrap_epoch)
                bootstrap_epoch = r->epoch;
        }
    }
    for (size_t m = 0; m < pc->n_members; m++) {
        const char *name = pc->members[m];
        const struct ha_report *r = live_report(states, n, name, pair);
        /* At bootstrap a store still acting as a replica that is not in
         * sync may lack writes its primary acknowledged alone (while it
         * caught up): it does not lead; a fenced store or a primary may. */
        bool eligible = mp->primary[0] == '\0'
                            ? (r && r->epoch == bootstrap_epoch &&
                               (r->role != MX_HA_REPLICA || r->in_sync))
                            : store_candidate(mp, r, name);
        if (!eligible)
            continue;
        /* Preference order breaks ties: a later member must be strictly
         * ahead to win. */
        if (!best || r->epoch > best_report->epoch ||
            (r->epoch == best_report->epoch && r->seq > best_report->seq)) {
            best = name;
            best_report = r;
        }
    }
    if (best) {
        set_primary(mp, best, epochs);
        replica_set_update(pc, pair, states, n, mp, epochs);
    } else {
        mp->active = false; /* unavailable: safe, nobody acks */
    }
}

bool ha_decide(const struct ha_config *config, const struct ha_node_state *states,
               size_t n_states, const struct ha_map *previous,
               struct ha_switchover *switchovers, bool quorate, struct ha_map *next)
{
    *next = *previous;
    if (!quorate)
        return false;
    struct epoch_source epochs = { .known_max = previous->epoch, .next = 0 };
    for (size_t s = 0; s < n_states; s++) {
        if (!states[s].received)
            continue;
        if (states[s].map.epoch > epochs.known_max)
            epochs.known_max = states[s].map.epoch;
        for (size_t p = 0; p < config->n_pairs; p++)
            if (states[s].reports[p].present && states[s].reports[p].epoch > epochs.known_max)
                epochs.known_max = states[s].reports[p].epoch;
    }
    for (size_t p = 0; p < config->n_pairs; p++) {
        const struct ha_pair_config *pc = &config->pairs[p];
        struct ha_switchover *sw = switchovers ? &switchovers[p] : NULL;
        if (pc->kind == HA_PAIR_FRONTEND)
            decide_frontend(pc, states, n_states, &next->pairs[p], sw, &epochs);
        else
            decide_store(pc, p, states, n_states, &next->pairs[p], sw, &epochs);
    }
    if (epochs.next > next->epoch)
        next->epoch = epochs.next;
    if (compare_map(next, previous, config->n_pairs) == 0)
        return false;
    next->revision = previous->revision + 1;
    return true;
}

void ha_assignment_for(const struct ha_config *config, const struct ha_node_state *states,
                       size_t n_states, const struct ha_map *map, bool quorate,
                       size_t pair_index, const char *node, uint64_t own_epoch,
                       struct ha_assignment *out)
{
    memset(out, 0, sizeof(*out));
    out->role = MX_HA_FENCED;
    out->epoch = own_epoch;
    if (!quorate || pair_index >= config->n_pairs)
        return;
    const struct ha_pair_config *pc = &config->pairs[pair_index];
    const struct ha_map_pair *mp = &map->pairs[pair_index];
    if (!mp->active || mp->primary[0] == '\0')
        return;
    bool member = false;
    for (size_t m = 0; m < pc->n_members; m++)
        if (strcmp(pc->members[m], node) == 0)
            member = true;
    if (!member || is_excluded(mp, node))
        return;
    out->epoch = mp->epoch;
    if (strcmp(mp->primary, node) != 0) {
        out->role = pc->kind == HA_PAIR_STORE ? MX_HA_REPLICA : MX_HA_STANDBY;
        return;
    }
    out->role = MX_HA_PRIMARY;
    if (pc->kind != HA_PAIR_STORE)
        return;
    for (size_t i = 0; i < mp->n_replicas; i++) {
        const char *name = mp->replicas[i];
        const struct ha_report *r = live_report(states, n_states, name, pair_index);
        if (!r || r->replication_endpoint[0] == '\0')
            continue;
        ha_copy_name(out->peers[out->n_peers], HA_ENDPOINT_MAX, r->replication_endpoint);
        out->n_peers++;
    }
}

/* ---- payloads ---------------------------------------------------------- */

struct buf {
    uint8_t *data;
    size_t len;
    bool too_big;
};

static void buf_append_frame(struct buf *b, struct mx_frame *frame)
{
    const uint8_t *bytes;
    size_t len;
    const char *error;
    if (b->too_big || mx_frame_finish(frame, &bytes, &len, &error) < 0 ||
        b->len + len > HA_PAYLOAD_MAX) {
        b->too_big = true;
        mx_frame_free(frame);
        return;
    }
    uint8_t *grown = realloc(b->data, b->len + len);
    if (!grown)
        abort(); /* allocation failure is fatal, as everywhere in mxcluster */
    b->data = grown;
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
    mx_frame_free(frame);
}

static int buf_finish(struct buf *b, uint8_t **data_r, size_t *len_r)
{
    if (b->too_big) {
        free(b->data);
        return -1;
    }
    *data_r = b->data;
    *len_r = b->len;
    return 0;
}

void ha_report_put(struct mx_frame *frame, const char *pair, const struct ha_report *report)
{
    mx_frame_put_str(frame, F_PAIR, pair);
    mx_frame_put_u32(frame, F_HA_ROLE, (uint32_t)report->role);
    mx_frame_put_u64(frame, F_EPOCH, report->epoch);
    mx_frame_put_u64(frame, F_SEQ, report->seq);
    if (report->oplog_first)
        mx_frame_put_u64(frame, F_OPLOG_FIRST, report->oplog_first);
    mx_frame_put_u32(frame, F_IN_SYNC, report->in_sync ? 1 : 0);
    mx_frame_put_str(frame, F_ENDPOINT, report->endpoint);
    mx_frame_put_str(frame, F_REPLICATION_ENDPOINT, report->replication_endpoint);
    for (size_t i = 0; i < report->n_peers_ok; i++)
        mx_frame_put_str(frame, F_PEER_ENDPOINT, report->peers_ok[i]);
}

int ha_state_encode(const struct ha_config *config, const struct ha_node_state *state,
                    bool quorate, uint8_t **data_r, size_t *len_r)
{
    struct buf b = { 0 };
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_HA_HA_STATE, 0, NULL);
    mx_frame_put_str(&frame, F_NODE, state->node);
    for (size_t h = 0; h < state->n_holds; h++)
        mx_frame_put_str(&frame, F_NODE, state->holds[h]);
    mx_frame_put_u64(&frame, F_EPOCH, state->map.epoch);
    mx_frame_put_u64(&frame, F_SEQ, state->map.revision);
    mx_frame_put_u64(&frame, F_VIEW_ID, state->view_id);
    mx_frame_put_u32(&frame, F_QUORATE, quorate ? 1 : 0);
    /* How many frames follow: a payload cut at a frame boundary would
     * otherwise still parse. */
    uint32_t following = 0;
    for (size_t p = 0; p < config->n_pairs; p++) {
        const struct ha_map_pair *mp = &state->map.pairs[p];
        if (mp->primary[0] != '\0' || mp->epoch != 0)
            following++;
        if (state->reports[p].present)
            following++;
    }
    mx_frame_put_u32(&frame, F_MESSAGES, following);
    buf_append_frame(&b, &frame);
    for (size_t p = 0; p < config->n_pairs; p++) {
        const struct ha_map_pair *mp = &state->map.pairs[p];
        if (mp->primary[0] == '\0' && mp->epoch == 0)
            continue; /* never assigned: nothing to tell */
        mx_frame_init(&frame, MSG_HA_ANY_ROLE_ASSIGN, 0, NULL);
        mx_frame_put_str(&frame, F_PAIR, config->pairs[p].name);
        mx_frame_put_str(&frame, F_NODE, mp->primary);
        mx_frame_put_u64(&frame, F_EPOCH, mp->epoch);
        mx_frame_put_u32(&frame, F_HA_ROLE, mp->active ? MX_HA_PRIMARY : MX_HA_FENCED);
        for (size_t r = 0; r < mp->n_replicas; r++)
            mx_frame_put_str(&frame, F_NODE, mp->replicas[r]);
        for (size_t e = 0; e < mp->n_excluded; e++)
            mx_frame_put_str(&frame, F_TEXT, mp->excluded[e]);
        buf_append_frame(&b, &frame);
    }
    for (size_t p = 0; p < config->n_pairs; p++) {
        if (!state->reports[p].present)
            continue;
        mx_frame_init(&frame, MSG_ANY_HA_STATUS_REPORT, 0, NULL);
        ha_report_put(&frame, config->pairs[p].name, &state->reports[p]);
        buf_append_frame(&b, &frame);
    }
    return buf_finish(&b, data_r, len_r);
}

int ha_switchover_encode(const char *pair, const char *target, uint8_t **data_r, size_t *len_r)
{
    struct buf b = { 0 };
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_HA_SWITCHOVER, 0, NULL);
    mx_frame_put_str(&frame, F_PAIR, pair);
    if (target && target[0])
        mx_frame_put_str(&frame, F_NODE, target);
    buf_append_frame(&b, &frame);
    return buf_finish(&b, data_r, len_r);
}

/* get_name - a string field copied into a fixed buffer; -1 if missing,
 * malformed or too long. */
static int get_name(const struct mx_frame_view *view, enum mx_field_tag tag, char *dst,
                    size_t size)
{
    char *value = NULL;
    if (mx_frame_get_str(view, tag, &value) < 0)
        return -1;
    bool fits = ha_copy_name(dst, size, value);
    free(value);
    return fits ? 0 : -1;
}

int ha_report_from_frame(const struct mx_frame_view *view, char pair[HA_NAME_MAX],
                         struct ha_report *report, const char **error_r)
{
    uint32_t role, in_sync;
    memset(report, 0, sizeof(*report));
    if (get_name(view, F_PAIR, pair, HA_NAME_MAX) < 0) {
        *error_r = "F_PAIR missing or too long";
        return -1;
    }
    if (mx_frame_get_u32(view, F_HA_ROLE, &role) < 0 || role > MX_HA_STANDBY) {
        *error_r = "F_HA_ROLE missing or unknown";
        return -1;
    }
    if (mx_frame_get_u64(view, F_EPOCH, &report->epoch) < 0 ||
        mx_frame_get_u64(view, F_SEQ, &report->seq) < 0) {
        *error_r = "F_EPOCH or F_SEQ missing";
        return -1;
    }
    if (mx_frame_get_u32(view, F_IN_SYNC, &in_sync) < 0)
        in_sync = 0;
    (void)mx_frame_get_u64(view, F_OPLOG_FIRST, &report->oplog_first); /* optional */
    report->role = (enum mx_ha_role)role;
    report->in_sync = in_sync != 0;
    const uint8_t *unused;
    size_t unused_len;
    if (mx_frame_get_bytes(view, F_ENDPOINT, &unused, &unused_len) == 0 &&
        get_name(view, F_ENDPOINT, report->endpoint, sizeof(report->endpoint)) < 0) {
        *error_r = "F_ENDPOINT malformed or too long";
        return -1;
    }
    if (mx_frame_get_bytes(view, F_REPLICATION_ENDPOINT, &unused, &unused_len) == 0 &&
        get_name(view, F_REPLICATION_ENDPOINT, report->replication_endpoint,
                 sizeof(report->replication_endpoint)) < 0) {
        *error_r = "F_REPLICATION_ENDPOINT malformed or too long";
        return -1;
    }
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t value_len;
    while (mx_frame_next_field(view, &it, &tag, &value, &value_len)) {
        if (tag != F_PEER_ENDPOINT)
            continue;
        if (report->n_peers_ok >= HA_MAX_MEMBERS || value_len >= HA_ENDPOINT_MAX ||
            memchr(value, '\0', value_len)) {
            *error_r = "F_PEER_ENDPOINT too many, too long or with NUL";
            return -1;
        }
        memcpy(report->peers_ok[report->n_peers_ok++], value, value_len);
    }
    report->present = true;
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* next_frame - the frame starting at *offset; -1 if it does not fit. */
static int next_frame(const uint8_t *data, size_t len, size_t *offset,
                      struct mx_frame_view *view, const char **error_r)
{
    if (len - *offset < MX_WIRE_HEADER_SIZE) {
        *error_r = "truncated frame header";
        return -1;
    }
    uint32_t body = be32(data + *offset + MX_WIRE_OFF_BODY_LENGTH);
    if (body > len - *offset - MX_WIRE_HEADER_SIZE) {
        *error_r = "frame longer than the payload";
        return -1;
    }
    size_t frame_len = MX_WIRE_HEADER_SIZE + (size_t)body;
    if (mx_frame_parse(data + *offset, frame_len, view, error_r) < 0)
        return -1;
    *offset += frame_len;
    return 0;
}

static int decode_map_entry(const struct ha_config *config, const struct mx_frame_view *view,
                            struct ha_map *map, const char **error_r)
{
    char pair[HA_NAME_MAX];
    if (get_name(view, F_PAIR, pair, sizeof(pair)) < 0) {
        *error_r = "map entry without F_PAIR";
        return -1;
    }
    int index = ha_config_pair_index(config, pair);
    if (index < 0)
        return 0; /* a pair this node is not configured for */
    struct ha_map_pair *mp = &map->pairs[index];
    uint32_t role;
    if (mx_frame_get_u64(view, F_EPOCH, &mp->epoch) < 0 ||
        mx_frame_get_u32(view, F_HA_ROLE, &role) < 0) {
        *error_r = "map entry without F_EPOCH or F_HA_ROLE";
        return -1;
    }
    mp->active = role == MX_HA_PRIMARY;
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t value_len;
    size_t nodes = 0;
    while (mx_frame_next_field(view, &it, &tag, &value, &value_len)) {
        if (tag != F_NODE && tag != F_TEXT)
            continue;
        if (value_len >= HA_NAME_MAX || memchr(value, '\0', value_len)) {
            *error_r = "map entry node name too long or with NUL";
            return -1;
        }
        char name[HA_NAME_MAX];
        memset(name, 0, sizeof(name));
        memcpy(name, value, value_len);
        if (tag == F_TEXT) {
            if (mp->n_excluded >= HA_MAX_MEMBERS) {
                *error_r = "map entry with too many excluded nodes";
                return -1;
            }
            memcpy(mp->excluded[mp->n_excluded++], name, HA_NAME_MAX);
        } else if (nodes++ == 0) {
            memcpy(mp->primary, name, HA_NAME_MAX);
        } else {
            if (mp->n_replicas >= HA_MAX_MEMBERS) {
                *error_r = "map entry with too many replicas";
                return -1;
            }
            memcpy(mp->replicas[mp->n_replicas++], name, HA_NAME_MAX);
        }
    }
    if (nodes == 0) {
        *error_r = "map entry without F_NODE";
        return -1;
    }
    return 0;
}

int ha_payload_decode(const struct ha_config *config, const void *data, size_t len,
                      enum ha_payload_kind *kind_r, struct ha_node_state *state,
                      int *pair_index_r, char target[HA_NAME_MAX], const char **error_r)
{
    const uint8_t *bytes = data;
    size_t offset = 0;
    struct mx_frame_view view;
    if (len > HA_PAYLOAD_MAX) {
        *error_r = "payload too large";
        return -1;
    }
    if (next_frame(bytes, len, &offset, &view, error_r) < 0)
        return -1;
    if (view.type == MSG_ANY_HA_SWITCHOVER) {
        char pair[HA_NAME_MAX];
        if (offset != len) {
            *error_r = "trailing bytes after SWITCHOVER";
            return -1;
        }
        if (get_name(&view, F_PAIR, pair, sizeof(pair)) < 0) {
            *error_r = "SWITCHOVER without F_PAIR";
            return -1;
        }
        memset(target, 0, HA_NAME_MAX);
        const uint8_t *unused;
        size_t unused_len;
        if (mx_frame_get_bytes(&view, F_NODE, &unused, &unused_len) == 0 &&
            get_name(&view, F_NODE, target, HA_NAME_MAX) < 0) {
            *error_r = "SWITCHOVER F_NODE malformed";
            return -1;
        }
        *pair_index_r = ha_config_pair_index(config, pair);
        *kind_r = HA_PAYLOAD_SWITCHOVER;
        return 0;
    }
    if (view.type != MSG_HA_HA_STATE) {
        *error_r = "payload starts with an unexpected message type";
        return -1;
    }
    memset(state, 0, sizeof(*state));
    uint32_t quorate;
    if (get_name(&view, F_NODE, state->node, sizeof(state->node)) < 0 ||
        mx_frame_get_u64(&view, F_EPOCH, &state->map.epoch) < 0 ||
        mx_frame_get_u64(&view, F_SEQ, &state->map.revision) < 0 ||
        mx_frame_get_u64(&view, F_VIEW_ID, &state->view_id) < 0 ||
        mx_frame_get_u32(&view, F_QUORATE, &quorate) < 0) {
        *error_r = "STATE header without F_NODE, F_EPOCH, F_SEQ, F_VIEW_ID or F_QUORATE";
        return -1;
    }
    state->quorate = quorate != 0;
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t value_len;
    bool sender = true;
    while (mx_frame_next_field(&view, &it, &tag, &value, &value_len)) {
        if (tag != F_NODE)
            continue;
        if (sender) {
            sender = false; /* read above */
            continue;
        }
        if (state->n_holds >= HA_MAX_NODES || value_len >= HA_NAME_MAX ||
            memchr(value, '\0', value_len)) {
            *error_r = "STATE with too many or malformed held nodes";
            return -1;
        }
        memcpy(state->holds[state->n_holds++], value, value_len);
    }
    uint32_t following = 0, seen = 0;
    if (mx_frame_get_u32(&view, F_MESSAGES, &following) < 0) {
        *error_r = "STATE header without F_MESSAGES";
        return -1;
    }
    while (offset < len) {
        if (++seen > following) {
            *error_r = "STATE with more frames than announced";
            return -1;
        }
        if (next_frame(bytes, len, &offset, &view, error_r) < 0)
            return -1;
        if (view.type == MSG_HA_ANY_ROLE_ASSIGN) {
            if (decode_map_entry(config, &view, &state->map, error_r) < 0)
                return -1;
        } else if (view.type == MSG_ANY_HA_STATUS_REPORT) {
            char pair[HA_NAME_MAX];
            struct ha_report report;
            if (ha_report_from_frame(&view, pair, &report, error_r) < 0)
                return -1;
            int index = ha_config_pair_index(config, pair);
            if (index >= 0)
                state->reports[index] = report;
        } else {
            *error_r = "STATE with an unexpected message type";
            return -1;
        }
    }
    if (seen != following) {
        *error_r = "STATE with fewer frames than announced (truncated)";
        return -1;
    }
    state->received = true;
    *kind_r = HA_PAYLOAD_STATE;
    return 0;
}
