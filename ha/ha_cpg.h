/* ha_cpg - Corosync CPG (closed process group, agreed order) and
 * votequorum on a libevent loop.
 *
 * Both libraries hand out a file descriptor; when it is readable the
 * library's dispatch(CS_DISPATCH_ALL) runs the callbacks below from inside
 * our event callback, so nothing blocks the loop. When corosync goes away
 * (killed, restarted) the descriptors report an error: `lost` runs once and
 * the owner must treat the node as having no quorum until a new ha_cpg_open
 * succeeds. */
#ifndef HA_CPG_H
#define HA_CPG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct ha_cpg;

enum ha_quorum {
    HA_QUORUM_NO = 0,
    HA_QUORUM_PENDING, /* the last verdict was yes, for an older membership */
    HA_QUORUM_YES,
};

/* A member of the CPG group: one mx-ha process. */
struct ha_cpg_member {
    uint32_t nodeid;
    uint32_t pid;
};

struct ha_cpg_callbacks {
    /* A message multicast by a member, in agreed order. */
    void (*deliver)(void *ctx, struct ha_cpg_member from, const void *data, size_t len);
    /* The group's membership changed: members[0..n) is the new view;
     * orphaned[0..n_orphaned) are members whose PROCESS left while their
     * node stayed in the cluster (mx-ha died or stopped, corosync did not):
     * what that mx-ha told its local daemons may still be acted on until
     * their lease runs out. */
    void (*view)(void *ctx, const struct ha_cpg_member *members, size_t n,
                 const struct ha_cpg_member *orphaned, size_t n_orphaned);
    /* The totem ring (the corosync nodes in this partition, whatever runs
     * on them) is now nodeids[0..n). */
    void (*ring)(void *ctx, const uint32_t *nodeids, size_t n);
    /* The quorum verdict for this node's partition changed (first call:
     * the initial verdict). YES means votequorum says so FOR THE CURRENT
     * totem ring; right after a membership change it is PENDING until
     * votequorum has reported on the new ring (see ha_cpg.c), and NO as
     * soon as any answer says so. */
    void (*quorum)(void *ctx, enum ha_quorum quorum);
    /* The connection to corosync failed. */
    void (*lost)(void *ctx, const char *reason);
};

/* ha_cpg_open - connect to the local corosync, join group, start tracking
 * quorum. -1 with error_r (heap) naming the call and the cs_error. */
int ha_cpg_open(struct event_base *base, const char *group, const struct ha_cpg_callbacks *cb,
                void *ctx, struct ha_cpg **cpg_r, char **error_r);
void ha_cpg_close(struct ha_cpg **cpg);
struct ha_cpg_member ha_cpg_self(const struct ha_cpg *cpg);

/* ha_cpg_send - multicast data to the group in agreed order (delivered to
 * ourselves too). 0 sent; 1 corosync asked to try again (flow control: the
 * caller re-sends its latest state later); -1 failed (error logged). */
int ha_cpg_send(struct ha_cpg *cpg, const void *data, size_t len);

#endif
