/* test_ha_decide - the cluster-map function through the situations it
 * exists for: bootstrap, failover, no split brain, an out-of-date replica
 * never promoted, ties by preference, a degraded primary, an old primary
 * rejoining as a replica, a minority partition, switchover; and the CPG
 * payloads that carry its inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ha_decide.h"

/* One store pair "shard1" on node1 > node2 > node3 (preference order) and
 * one frontend pair "imap" on node2 > node3. */
static struct ha_config config;

static int setup(void **state)
{
    (void)state;
    memset(&config, 0, sizeof(config));
    /* Most tests look at the store pair alone; those about frontends
     * raise n_pairs to 2. */
    config.n_pairs = 1;
    strcpy(config.pairs[0].name, "shard1");
    config.pairs[0].kind = HA_PAIR_STORE;
    config.pairs[0].n_members = 3;
    strcpy(config.pairs[0].members[0], "node1");
    strcpy(config.pairs[0].members[1], "node2");
    strcpy(config.pairs[0].members[2], "node3");
    strcpy(config.pairs[1].name, "imap");
    config.pairs[1].kind = HA_PAIR_FRONTEND;
    config.pairs[1].n_members = 2;
    strcpy(config.pairs[1].members[0], "node2");
    strcpy(config.pairs[1].members[1], "node3");
    return 0;
}

/* A view: up to 3 node states. */
struct view {
    size_t n;
    struct ha_node_state st[3];
};

static struct ha_node_state *add_node(struct view *v, const char *name)
{
    struct ha_node_state *s = &v->st[v->n++];
    memset(s, 0, sizeof(*s));
    strcpy(s->node, name);
    s->received = true;
    s->quorate = true;
    return s;
}

static void report(struct ha_node_state *s, enum mx_ha_role role, uint64_t epoch, uint64_t seq,
                   bool in_sync)
{
    struct ha_report *r = &s->reports[0];
    r->present = true;
    r->role = role;
    r->epoch = epoch;
    r->seq = seq;
    r->in_sync = in_sync;
    snprintf(r->endpoint, sizeof(r->endpoint), "tcp://%s:7301", s->node);
    snprintf(r->replication_endpoint, sizeof(r->replication_endpoint), "tcp://%s:7321", s->node);
}

/* map_with - shard1's primary in epoch, with replicas "nodeA,nodeB". */
static struct ha_map map_with(const char *primary, uint64_t epoch, const char *replicas)
{
    struct ha_map m;
    memset(&m, 0, sizeof(m));
    m.epoch = epoch;
    strcpy(m.pairs[0].primary, primary);
    m.pairs[0].active = true;
    m.pairs[0].epoch = epoch;
    char list[128];
    snprintf(list, sizeof(list), "%s", replicas);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
         name = strtok_r(NULL, ",", &save))
        strcpy(m.pairs[0].replicas[m.pairs[0].n_replicas++], name);
    return m;
}

static void test_bootstrap_picks_preferred_member(void **state)
{
    (void)state;
    config.n_pairs = 2;
    struct view v = { 0 };
    report(add_node(&v, "node2"), MX_HA_FENCED, 0, 0, false);
    report(add_node(&v, "node1"), MX_HA_FENCED, 0, 0, false);
    report(add_node(&v, "node3"), MX_HA_FENCED, 0, 0, false);
    struct ha_map empty, next;
    memset(&empty, 0, sizeof(empty));
    assert_true(ha_decide(&config, v.st, v.n, &empty, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node1");
    assert_true(next.pairs[0].active);
    assert_int_equal(next.pairs[0].epoch, 1);
    assert_int_equal(next.epoch, 1);
    assert_int_equal(next.pairs[0].n_replicas, 2);
    assert_string_equal(next.pairs[0].replicas[0], "node2");
    assert_string_equal(next.pairs[0].replicas[1], "node3");
    /* the frontend pair: its first member in the view */
    assert_string_equal(next.pairs[1].primary, "node2");
    assert_true(next.pairs[1].active);

    struct ha_assignment a;
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node1", 0, &a);
    assert_int_equal(a.role, MX_HA_PRIMARY);
    assert_int_equal(a.epoch, 1);
    assert_int_equal(a.n_peers, 2);
    assert_string_equal(a.peers[0], "tcp://node2:7321");
    assert_string_equal(a.peers[1], "tcp://node3:7321");
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node3", 0, &a);
    assert_int_equal(a.role, MX_HA_REPLICA);
    assert_int_equal(a.epoch, 1);
    assert_int_equal(a.n_peers, 0);
    ha_assignment_for(&config, v.st, v.n, &next, true, 1, "node3", 0, &a);
    assert_int_equal(a.role, MX_HA_STANDBY);

    /* deciding again over the same inputs changes nothing (stable) */
    struct ha_map again;
    assert_false(ha_decide(&config, v.st, v.n, &next, NULL, true, &again));
    assert_int_equal(again.epoch, 1);
    assert_int_equal(again.revision, next.revision);
    assert_int_equal(next.revision, 1);
}

static void test_bootstrap_prefers_highest_persisted_epoch(void **state)
{
    (void)state;
    /* every mx-ha restarted (no map), the stores remember: node2 was at the
     * highest epoch, node1 is behind and must not lead */
    struct view v = { 0 };
    report(add_node(&v, "node1"), MX_HA_FENCED, 3, 500, false);
    report(add_node(&v, "node2"), MX_HA_FENCED, 4, 200, false);
    struct ha_map empty, next;
    memset(&empty, 0, sizeof(empty));
    assert_true(ha_decide(&config, v.st, v.n, &empty, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node2");
    assert_int_equal(next.pairs[0].epoch, 5); /* above every persisted epoch */
}

static void test_bootstrap_never_promotes_a_catching_up_replica(void **state)
{
    (void)state;
    /* every mx-ha restarted quickly, the primary's node is gone: node1 is
     * still a replica of epoch 6 but was catching up, so it may lack writes
     * node2 acknowledged alone - the pair stays unavailable */
    struct view v = { 0 };
    report(add_node(&v, "node1"), MX_HA_REPLICA, 6, 80, false);
    add_node(&v, "node3");
    struct ha_map empty, next;
    memset(&empty, 0, sizeof(empty));
    (void)ha_decide(&config, v.st, v.n, &empty, NULL, true, &next);
    assert_false(next.pairs[0].active);
    /* the same replica in sync has every acknowledged write: it leads */
    report(&v.st[0], MX_HA_REPLICA, 6, 80, true);
    assert_true(ha_decide(&config, v.st, v.n, &empty, NULL, true, &next));
    assert_true(next.pairs[0].active);
    assert_string_equal(next.pairs[0].primary, "node1");
    assert_true(next.pairs[0].epoch > 6);
}

static void test_primary_kept_while_alive(void **state)
{
    (void)state;
    /* node2 is primary although node1 is preferred: no flapping back */
    struct view v = { 0 };
    report(add_node(&v, "node1"), MX_HA_REPLICA, 7, 90, true);
    report(add_node(&v, "node2"), MX_HA_PRIMARY, 7, 100, true);
    struct ha_map prev = map_with("node2", 7, "node1"), next;
    assert_false(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node2");
    assert_int_equal(next.pairs[0].epoch, 7);
}

static void test_failover_to_in_sync_replica(void **state)
{
    (void)state;
    /* node1 (primary, epoch 7) left the view */
    struct view v = { 0 };
    report(add_node(&v, "node2"), MX_HA_REPLICA, 7, 100, true);
    report(add_node(&v, "node3"), MX_HA_REPLICA, 7, 100, true);
    struct ha_map prev = map_with("node1", 7, "node2,node3"), next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node2"); /* tie: preference order */
    assert_int_equal(next.pairs[0].epoch, 8);
    assert_int_equal(next.epoch, 8);
}

static void test_failover_highest_seq_wins_over_preference(void **state)
{
    (void)state;
    struct view v = { 0 };
    report(add_node(&v, "node2"), MX_HA_REPLICA, 7, 99, true);
    report(add_node(&v, "node3"), MX_HA_REPLICA, 7, 100, true);
    struct ha_map prev = map_with("node1", 7, "node2,node3"), next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node3");
}

static void test_out_of_date_replica_never_promoted(void **state)
{
    (void)state;
    struct ha_map prev = map_with("node1", 7, "node2,node3"), next;
    /* not in sync */
    struct view v = { 0 };
    report(add_node(&v, "node2"), MX_HA_REPLICA, 7, 100, false);
    report(add_node(&v, "node3"), MX_HA_FENCED, 7, 100, true);
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next)); /* active -> false */
    assert_false(next.pairs[0].active);
    assert_string_equal(next.pairs[0].primary, "node1");
    assert_int_equal(next.pairs[0].epoch, 7); /* nobody promoted: no new epoch */
    struct ha_assignment a;
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node2", 7, &a);
    assert_int_equal(a.role, MX_HA_FENCED);

    /* in sync, but with an older epoch: it missed the current one */
    struct view w = { 0 };
    report(add_node(&w, "node2"), MX_HA_REPLICA, 6, 100, true);
    assert_true(ha_decide(&config, w.st, w.n, &prev, NULL, true, &next));
    assert_false(next.pairs[0].active);

    /* the old primary comes back: it is the only safe one, kept at its epoch */
    struct view x = { 0 };
    report(add_node(&x, "node2"), MX_HA_REPLICA, 7, 100, false);
    report(add_node(&x, "node1"), MX_HA_FENCED, 7, 120, true);
    struct ha_map back;
    assert_true(ha_decide(&config, x.st, x.n, &next, NULL, true, &back));
    assert_true(back.pairs[0].active);
    assert_string_equal(back.pairs[0].primary, "node1");
    /* kept, but node3 (a replica) is gone: writes from now on miss it */
    assert_int_equal(back.pairs[0].epoch, 8);
    assert_int_equal(back.pairs[0].n_replicas, 1);
    assert_string_equal(back.pairs[0].replicas[0], "node2");
}

static void test_minority_partition_never_decides(void **state)
{
    (void)state;
    /* node1 alone (not quorate) although its store reports fine */
    struct view v = { 0 };
    struct ha_node_state *n1 = add_node(&v, "node1");
    n1->quorate = false;
    report(n1, MX_HA_PRIMARY, 7, 100, true);
    struct ha_map prev = map_with("node2", 7, "node1"), next;
    assert_false(ha_decide(&config, v.st, v.n, &prev, NULL, false, &next));
    assert_string_equal(next.pairs[0].primary, "node2");
    assert_int_equal(next.epoch, 7);
    /* and every local role there is fenced, keeping its own epoch */
    struct ha_assignment a;
    ha_assignment_for(&config, v.st, v.n, &prev, false, 0, "node2", 7, &a);
    assert_int_equal(a.role, MX_HA_FENCED);
    assert_int_equal(a.epoch, 7);
}

static void test_no_split_brain_after_partition_and_heal(void **state)
{
    (void)state;
    /* 3 nodes, node1 primary at epoch 3. Partition {node1} | {node2,node3}. */
    struct ha_map prev = map_with("node1", 3, "node2,node3");
    struct view majority = { 0 };
    report(add_node(&majority, "node2"), MX_HA_REPLICA, 3, 50, true);
    report(add_node(&majority, "node3"), MX_HA_REPLICA, 3, 50, true);
    struct ha_map maj;
    assert_true(ha_decide(&config, majority.st, majority.n, &prev, NULL, true, &maj));
    assert_string_equal(maj.pairs[0].primary, "node2");
    assert_int_equal(maj.pairs[0].epoch, 4);
    /* minority: no decision, and its store is fenced */
    struct view minority = { 0 };
    struct ha_node_state *n1 = add_node(&minority, "node1");
    n1->quorate = false;
    report(n1, MX_HA_PRIMARY, 3, 55, true);
    struct ha_map min;
    assert_false(ha_decide(&config, minority.st, minority.n, &prev, NULL, false, &min));
    struct ha_assignment a;
    ha_assignment_for(&config, minority.st, minority.n, &min, false, 0, "node1", 3, &a);
    assert_int_equal(a.role, MX_HA_FENCED);

    /* Heal: each node puts its own highest map in its STATE; the view's
     * input map is the newest of them (epoch 4), whatever node decides. */
    struct view healed = { 0 };
    struct ha_node_state *h1 = add_node(&healed, "node1");
    h1->map = min;
    report(h1, MX_HA_FENCED, 3, 55, false); /* 5 unacked records: diverged */
    struct ha_node_state *h2 = add_node(&healed, "node2");
    h2->map = maj;
    report(h2, MX_HA_PRIMARY, 4, 70, true);
    struct ha_node_state *h3 = add_node(&healed, "node3");
    h3->map = maj;
    report(h3, MX_HA_REPLICA, 4, 70, true);
    struct ha_map input = healed.st[0].map;
    for (size_t i = 1; i < healed.n; i++)
        if (ha_map_newer(&healed.st[i].map, &input, config.n_pairs))
            input = healed.st[i].map;
    assert_int_equal(input.epoch, 4);
    struct ha_map out;
    /* node1 joins the replica set: no new epoch for a newcomer */
    assert_true(ha_decide(&config, healed.st, healed.n, &input, NULL, true, &out));
    assert_string_equal(out.pairs[0].primary, "node2");
    assert_int_equal(out.pairs[0].epoch, 4);
    assert_int_equal(out.pairs[0].n_replicas, 2);
    /* same epoch, one more revision: this map now wins over the older one */
    assert_int_equal(out.revision, input.revision + 1);
    assert_true(ha_map_newer(&out, &input, config.n_pairs));
    /* exactly one primary: node1 rejoins as a replica of the new epoch */
    int primaries = 0;
    const char *nodes[] = { "node1", "node2", "node3" };
    for (size_t i = 0; i < 3; i++) {
        ha_assignment_for(&config, healed.st, healed.n, &out, true, 0, nodes[i], 3, &a);
        if (a.role == MX_HA_PRIMARY)
            primaries++;
        if (i == 0) {
            assert_int_equal(a.role, MX_HA_REPLICA);
            assert_int_equal(a.epoch, 4);
        }
    }
    assert_int_equal(primaries, 1);
    /* and it is not promotable until it reports in sync at epoch 4 */
    struct view only1 = { 0 };
    report(add_node(&only1, "node1"), MX_HA_REPLICA, 4, 60, false);
    struct ha_map lonely;
    ha_decide(&config, only1.st, only1.n, &out, NULL, true, &lonely);
    assert_false(lonely.pairs[0].active);
}

static void test_degraded_primary_drops_lost_replica(void **state)
{
    (void)state;
    struct view v = { 0 };
    report(add_node(&v, "node1"), MX_HA_PRIMARY, 5, 40, false); /* replica did not ack */
    report(add_node(&v, "node2"), MX_HA_REPLICA, 5, 38, true);
    struct ha_map prev = map_with("node1", 5, "node2"), next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node1");
    assert_int_equal(next.pairs[0].epoch, 6);
    assert_int_equal(next.pairs[0].n_excluded, 1);
    assert_string_equal(next.pairs[0].excluded[0], "node2");
    struct ha_assignment a;
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node1", 5, &a);
    assert_int_equal(a.role, MX_HA_PRIMARY);
    assert_int_equal(a.epoch, 6);
    assert_int_equal(a.n_peers, 0); /* degraded: acks after its own commit */
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node2", 5, &a);
    assert_int_equal(a.role, MX_HA_FENCED);
    assert_int_equal(a.epoch, 5); /* keeps its own epoch: not current */

    /* the primary now dies: the excluded replica must not take over */
    struct view w = { 0 };
    report(add_node(&w, "node2"), MX_HA_REPLICA, 5, 38, true);
    struct ha_map after;
    ha_decide(&config, w.st, w.n, &next, NULL, true, &after);
    assert_false(after.pairs[0].active);

    /* the excluded replica leaves and comes back: a replica again */
    struct view x = { 0 };
    report(add_node(&x, "node1"), MX_HA_PRIMARY, 6, 50, true);
    struct ha_map gone;
    assert_true(ha_decide(&config, x.st, x.n, &next, NULL, true, &gone));
    assert_int_equal(gone.pairs[0].n_excluded, 0);
    struct view y = { 0 };
    report(add_node(&y, "node1"), MX_HA_PRIMARY, 6, 50, true);
    report(add_node(&y, "node2"), MX_HA_FENCED, 5, 38, false);
    struct ha_map back;
    assert_true(ha_decide(&config, y.st, y.n, &gone, NULL, true, &back));
    assert_int_equal(back.pairs[0].epoch, 6); /* a newcomer: no new epoch */
    ha_assignment_for(&config, y.st, y.n, &back, true, 0, "node2", 5, &a);
    assert_int_equal(a.role, MX_HA_REPLICA);
    assert_int_equal(a.epoch, 6);
    ha_assignment_for(&config, y.st, y.n, &back, true, 0, "node1", 6, &a);
    assert_int_equal(a.n_peers, 1);
}

static void test_degraded_drops_only_the_lost_replica(void **state)
{
    (void)state;
    struct view v = { 0 };
    struct ha_node_state *n1 = add_node(&v, "node1");
    report(n1, MX_HA_PRIMARY, 5, 40, false);
    n1->reports[0].n_peers_ok = 1;
    strcpy(n1->reports[0].peers_ok[0], "tcp://node3:7321"); /* node3 keeps up */
    report(add_node(&v, "node2"), MX_HA_REPLICA, 5, 38, true);
    report(add_node(&v, "node3"), MX_HA_REPLICA, 5, 40, true);
    struct ha_map prev = map_with("node1", 5, "node2,node3"), next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_int_equal(next.pairs[0].epoch, 6);
    assert_int_equal(next.pairs[0].n_excluded, 1);
    assert_string_equal(next.pairs[0].excluded[0], "node2");
    assert_int_equal(next.pairs[0].n_replicas, 1);
    assert_string_equal(next.pairs[0].replicas[0], "node3");
    struct ha_assignment a;
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node1", 5, &a);
    assert_int_equal(a.n_peers, 1);
    assert_string_equal(a.peers[0], "tcp://node3:7321");
    /* a peer list WITHOUT in_sync 0 is no verdict (node3 may just be
     * catching up): nothing changes */
    report(n1, MX_HA_PRIMARY, 6, 41, true);
    struct ha_map same;
    assert_false(ha_decide(&config, v.st, v.n, &next, NULL, true, &same));
}

static void test_silent_replica_cannot_come_back_promotable(void **state)
{
    (void)state;
    /* node2's store hangs: its report expires while node1 stays primary */
    struct view v = { 0 };
    report(add_node(&v, "node1"), MX_HA_PRIMARY, 5, 40, true);
    add_node(&v, "node2"); /* in the view, no report */
    struct ha_map prev = map_with("node1", 5, "node2"), next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_int_equal(next.pairs[0].epoch, 6); /* writes go on without it... */
    assert_int_equal(next.pairs[0].n_replicas, 0);
    /* ...so when it wakes up claiming "in sync at epoch 5" and the primary
     * dies, it is not promoted */
    struct view w = { 0 };
    report(add_node(&w, "node2"), MX_HA_REPLICA, 5, 38, true);
    struct ha_map after;
    ha_decide(&config, w.st, w.n, &next, NULL, true, &after);
    assert_false(after.pairs[0].active);
}

static void test_held_primary_not_replaced_until_released(void **state)
{
    (void)state;
    /* node1's mx-ha left, node1 did not: node3 still holds it */
    struct view v = { 0 };
    report(add_node(&v, "node2"), MX_HA_REPLICA, 7, 100, true);
    struct ha_node_state *n3 = add_node(&v, "node3");
    report(n3, MX_HA_REPLICA, 7, 100, true);
    n3->n_holds = 1;
    strcpy(n3->holds[0], "node1");
    struct ha_map prev = map_with("node1", 7, "node2,node3"), next;
    assert_false(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node1");
    assert_int_equal(next.pairs[0].epoch, 7);
    /* released by every member: the failover happens */
    n3->n_holds = 0;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node2");
    assert_int_equal(next.pairs[0].epoch, 8);
}

static void test_switchover_waits_for_in_sync_target(void **state)
{
    (void)state;
    struct ha_switchover sw[HA_MAX_PAIRS];
    memset(sw, 0, sizeof(sw));
    sw[0].pending = true;
    strcpy(sw[0].target, "node3");
    struct view v = { 0 };
    report(add_node(&v, "node1"), MX_HA_PRIMARY, 2, 10, true);
    report(add_node(&v, "node2"), MX_HA_REPLICA, 2, 10, true);
    report(add_node(&v, "node3"), MX_HA_REPLICA, 2, 4, false); /* catching up */
    struct ha_map prev = map_with("node1", 2, "node2,node3"), next;
    assert_false(ha_decide(&config, v.st, v.n, &prev, sw, true, &next));
    assert_string_equal(next.pairs[0].primary, "node1");
    assert_true(sw[0].pending); /* still waiting */
    report(&v.st[2], MX_HA_REPLICA, 2, 10, true);
    assert_true(ha_decide(&config, v.st, v.n, &prev, sw, true, &next));
    assert_string_equal(next.pairs[0].primary, "node3");
    assert_int_equal(next.pairs[0].epoch, 3);
    assert_false(sw[0].pending);
    struct ha_assignment a;
    ha_assignment_for(&config, v.st, v.n, &next, true, 0, "node1", 2, &a);
    assert_int_equal(a.role, MX_HA_REPLICA); /* the old primary follows */
    assert_int_equal(a.epoch, 3);

    /* without a target: the next eligible member in preference order */
    memset(sw, 0, sizeof(sw));
    sw[0].pending = true;
    struct ha_map other;
    assert_true(ha_decide(&config, v.st, v.n, &prev, sw, true, &other));
    assert_string_equal(other.pairs[0].primary, "node2");

    /* a target that left the view cancels the request */
    memset(sw, 0, sizeof(sw));
    sw[0].pending = true;
    strcpy(sw[0].target, "node3");
    struct view w = { 0 };
    report(add_node(&w, "node1"), MX_HA_PRIMARY, 2, 10, true);
    ha_decide(&config, w.st, w.n, &prev, sw, true, &next);
    assert_false(sw[0].pending);
    assert_string_equal(next.pairs[0].primary, "node1");
}

static void test_frontend_failover_and_switchover(void **state)
{
    (void)state;
    config.n_pairs = 2;
    struct ha_map prev;
    memset(&prev, 0, sizeof(prev));
    prev.epoch = 2;
    strcpy(prev.pairs[1].primary, "node2");
    prev.pairs[1].active = true;
    prev.pairs[1].epoch = 2;
    struct view v = { 0 };
    add_node(&v, "node1");
    add_node(&v, "node3");
    struct ha_map next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[1].primary, "node3");
    assert_int_equal(next.pairs[1].epoch, 3);
    /* node2 returns: node3 stays active; an operator switchover moves it */
    add_node(&v, "node2");
    struct ha_map kept;
    assert_false(ha_decide(&config, v.st, v.n, &next, NULL, true, &kept));
    assert_string_equal(kept.pairs[1].primary, "node3");
    struct ha_switchover sw[HA_MAX_PAIRS];
    memset(sw, 0, sizeof(sw));
    sw[1].pending = true;
    struct ha_map moved;
    assert_true(ha_decide(&config, v.st, v.n, &kept, sw, true, &moved));
    assert_string_equal(moved.pairs[1].primary, "node2");
    assert_false(sw[1].pending);
}

static void test_same_inputs_same_map_on_every_node(void **state)
{
    (void)state;
    /* The states arrive in the same order everywhere, but each node holds
     * them in the order of its own view array; the result must not depend
     * on that order. */
    struct view a = { 0 }, b = { 0 };
    report(add_node(&a, "node3"), MX_HA_REPLICA, 7, 100, true);
    report(add_node(&a, "node2"), MX_HA_REPLICA, 7, 100, true);
    report(add_node(&b, "node2"), MX_HA_REPLICA, 7, 100, true);
    report(add_node(&b, "node3"), MX_HA_REPLICA, 7, 100, true);
    struct ha_map prev = map_with("node1", 7, "node2,node3"), ma, mb;
    ha_decide(&config, a.st, a.n, &prev, NULL, true, &ma);
    ha_decide(&config, b.st, b.n, &prev, NULL, true, &mb);
    assert_false(ha_map_newer(&ma, &mb, config.n_pairs));
    assert_false(ha_map_newer(&mb, &ma, config.n_pairs));
    assert_string_equal(ma.pairs[0].primary, "node2");
}

static void test_epochs_only_grow(void **state)
{
    (void)state;
    /* a store persisted epoch 20 (from a map nobody remembers): a change
     * must go above it */
    struct view v = { 0 };
    report(add_node(&v, "node2"), MX_HA_REPLICA, 7, 100, true);
    report(add_node(&v, "node3"), MX_HA_FENCED, 20, 0, false);
    struct ha_map prev = map_with("node1", 7, "node2,node3"), next;
    assert_true(ha_decide(&config, v.st, v.n, &prev, NULL, true, &next));
    assert_string_equal(next.pairs[0].primary, "node2");
    assert_int_equal(next.pairs[0].epoch, 21);
    assert_true(ha_map_newer(&next, &prev, config.n_pairs));
}

static void test_state_payload_round_trip(void **state)
{
    (void)state;
    struct ha_node_state *in = calloc(1, sizeof(*in));
    struct ha_node_state *out = calloc(1, sizeof(*out));
    config.n_pairs = 2;
    strcpy(in->node, "node2");
    in->view_id = UINT64_C(0x1122334455667788);
    in->n_holds = 2;
    strcpy(in->holds[0], "node4");
    strcpy(in->holds[1], "node5");
    in->map = map_with("node1", 9, "node2");
    in->map.pairs[0].n_excluded = 1;
    strcpy(in->map.pairs[0].excluded[0], "node3");
    report(in, MX_HA_REPLICA, 9, 1234, true);
    in->reports[0].oplog_first = 235;
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(ha_state_encode(&config, in, true, &data, &len), 0);
    enum ha_payload_kind kind;
    int pair = -1;
    char target[HA_NAME_MAX];
    const char *error = NULL;
    assert_int_equal(ha_payload_decode(&config, data, len, &kind, out, &pair, target, &error), 0);
    assert_int_equal(kind, HA_PAYLOAD_STATE);
    assert_true(out->received);
    assert_true(out->quorate);
    assert_string_equal(out->node, "node2");
    assert_true(out->view_id == UINT64_C(0x1122334455667788));
    assert_int_equal(out->n_holds, 2);
    assert_string_equal(out->holds[1], "node5");
    assert_int_equal(out->map.epoch, 9);
    assert_string_equal(out->map.pairs[0].primary, "node1");
    assert_true(out->map.pairs[0].active);
    assert_int_equal(out->map.pairs[0].n_excluded, 1);
    assert_string_equal(out->map.pairs[0].excluded[0], "node3");
    assert_int_equal(out->map.pairs[0].n_replicas, 1);
    assert_string_equal(out->map.pairs[0].replicas[0], "node2");
    assert_false(ha_map_newer(&out->map, &in->map, config.n_pairs));
    assert_false(ha_map_newer(&in->map, &out->map, config.n_pairs));
    assert_true(out->reports[0].present);
    assert_int_equal(out->reports[0].seq, 1234);
    assert_int_equal(out->reports[0].oplog_first, 235);
    assert_true(out->reports[0].in_sync);
    assert_string_equal(out->reports[0].replication_endpoint, "tcp://node2:7321");
    assert_false(out->reports[1].present);

    /* every truncation is refused, never read past */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(ha_payload_decode(&config, data, cut, &kind, out, &pair, target, &error),
                         -1);
    /* a flipped length byte inside a sub-frame is caught */
    data[MX_WIRE_OFF_BODY_LENGTH + 3] ^= 0x40;
    assert_int_equal(ha_payload_decode(&config, data, len, &kind, out, &pair, target, &error), -1);
    free(data);

    assert_int_equal(ha_switchover_encode("shard1", "node3", &data, &len), 0);
    assert_int_equal(ha_payload_decode(&config, data, len, &kind, out, &pair, target, &error), 0);
    assert_int_equal(kind, HA_PAYLOAD_SWITCHOVER);
    assert_int_equal(pair, 0);
    assert_string_equal(target, "node3");
    free(data);
    assert_int_equal(ha_switchover_encode("nosuch", NULL, &data, &len), 0);
    assert_int_equal(ha_payload_decode(&config, data, len, &kind, out, &pair, target, &error), 0);
    assert_int_equal(pair, -1);
    assert_string_equal(target, "");
    free(data);
    free(in);
    free(out);
}

static void test_report_frame_bounds(void **state)
{
    (void)state;
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_HA_STATUS_REPORT, 0, NULL);
    char long_pair[200];
    memset(long_pair, 'p', sizeof(long_pair) - 1);
    long_pair[sizeof(long_pair) - 1] = '\0';
    mx_frame_put_str(&frame, F_PAIR, long_pair);
    mx_frame_put_u32(&frame, F_HA_ROLE, MX_HA_PRIMARY);
    mx_frame_put_u64(&frame, F_EPOCH, 1);
    mx_frame_put_u64(&frame, F_SEQ, 1);
    const uint8_t *bytes;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&frame, &bytes, &len, &error), 0);
    struct mx_frame_view view;
    assert_int_equal(mx_frame_parse(bytes, len, &view, &error), 0);
    char pair[HA_NAME_MAX];
    struct ha_report r;
    assert_int_equal(ha_report_from_frame(&view, pair, &r, &error), -1);
    mx_frame_free(&frame);

    mx_frame_init(&frame, MSG_ANY_HA_STATUS_REPORT, 0, NULL);
    mx_frame_put_str(&frame, F_PAIR, "shard1");
    mx_frame_put_u32(&frame, F_HA_ROLE, 99); /* no such role */
    mx_frame_put_u64(&frame, F_EPOCH, 1);
    mx_frame_put_u64(&frame, F_SEQ, 1);
    assert_int_equal(mx_frame_finish(&frame, &bytes, &len, &error), 0);
    assert_int_equal(mx_frame_parse(bytes, len, &view, &error), 0);
    assert_int_equal(ha_report_from_frame(&view, pair, &r, &error), -1);
    mx_frame_free(&frame);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_bootstrap_picks_preferred_member, setup),
        cmocka_unit_test_setup(test_bootstrap_prefers_highest_persisted_epoch, setup),
        cmocka_unit_test_setup(test_bootstrap_never_promotes_a_catching_up_replica, setup),
        cmocka_unit_test_setup(test_primary_kept_while_alive, setup),
        cmocka_unit_test_setup(test_failover_to_in_sync_replica, setup),
        cmocka_unit_test_setup(test_failover_highest_seq_wins_over_preference, setup),
        cmocka_unit_test_setup(test_out_of_date_replica_never_promoted, setup),
        cmocka_unit_test_setup(test_minority_partition_never_decides, setup),
        cmocka_unit_test_setup(test_no_split_brain_after_partition_and_heal, setup),
        cmocka_unit_test_setup(test_degraded_primary_drops_lost_replica, setup),
        cmocka_unit_test_setup(test_degraded_drops_only_the_lost_replica, setup),
        cmocka_unit_test_setup(test_silent_replica_cannot_come_back_promotable, setup),
        cmocka_unit_test_setup(test_held_primary_not_replaced_until_released, setup),
        cmocka_unit_test_setup(test_switchover_waits_for_in_sync_target, setup),
        cmocka_unit_test_setup(test_frontend_failover_and_switchover, setup),
        cmocka_unit_test_setup(test_same_inputs_same_map_on_every_node, setup),
        cmocka_unit_test_setup(test_epochs_only_grow, setup),
        cmocka_unit_test_setup(test_state_payload_round_trip, setup),
        cmocka_unit_test_setup(test_report_frame_bounds, setup),
    };
    return cmocka_run_group_tests_name("ha_decide", tests, NULL, NULL);
}
