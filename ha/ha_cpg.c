/* ha_cpg - Corosync CPG + votequorum driven by libevent (see ha_cpg.h). */
#include "ha_cpg.h"

#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <corosync/votequorum.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_log.h"

struct ha_cpg {
    cpg_handle_t cpg;
    votequorum_handle_t vq;
    bool cpg_open, vq_open;
    struct cpg_name group;
    struct event *cpg_event, *vq_event;
    struct ha_cpg_callbacks cb;
    void *ctx;
    struct ha_cpg_member self;
    /* Quorum is trusted only for the current totem ring: votequorum and
     * CPG report a membership change over separate IPC channels, in either
     * order, so right after a CPG view change the last quorum verdict may
     * still be the previous ring's (a node just cut off would believe it is
     * quorate and decide alone). quorate counts only once votequorum has
     * reported on a ring at least as new as the one CPG delivered. */
    uint64_t cpg_ring_seq;
    uint64_t vq_ring_seq;
    bool vq_quorate;
    enum ha_quorum reported;
    bool reported_once;
};

static void report_quorum(struct ha_cpg *c)
{
    enum ha_quorum q = !c->vq_quorate                     ? HA_QUORUM_NO
                       : c->vq_ring_seq >= c->cpg_ring_seq ? HA_QUORUM_YES
                                                           : HA_QUORUM_PENDING;
    if (c->reported_once && q == c->reported)
        return;
    c->reported_once = true;
    c->reported = q;
    c->cb.quorum(c->ctx, q);
}

static void refresh_vq_quorate(struct ha_cpg *c)
{
    struct votequorum_info info;
    memset(&info, 0, sizeof(info));
    if (votequorum_getinfo(c->vq, 0, &info) == CS_OK)
        c->vq_quorate = (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
}

static void on_deliver(cpg_handle_t handle, const struct cpg_name *group, uint32_t nodeid,
                       uint32_t pid, void *msg, size_t msg_len)
{
    void *context = NULL;
    if (cpg_context_get(handle, &context) != CS_OK || !context)
        return;
    struct ha_cpg *c = context;
    c->cb.deliver(c->ctx, (struct ha_cpg_member){ nodeid, pid }, msg, msg_len);
}

static void on_confchg(cpg_handle_t handle, const struct cpg_name *group,
                       const struct cpg_address *members, size_t n_members,
                       const struct cpg_address *left, size_t n_left,
                       const struct cpg_address *joined, size_t n_joined)
{
    void *context = NULL;
    if (cpg_context_get(handle, &context) != CS_OK || !context)
        return;
    struct ha_cpg *c = context;
    struct ha_cpg_member view[CPG_MEMBERS_MAX];
    size_t n = n_members < CPG_MEMBERS_MAX ? n_members : CPG_MEMBERS_MAX;
    for (size_t i = 0; i < n; i++)
        view[i] = (struct ha_cpg_member){ members[i].nodeid, members[i].pid };
    struct ha_cpg_member orphaned[CPG_MEMBERS_MAX];
    size_t n_orphaned = 0;
    for (size_t i = 0; i < n_left; i++) {
        mx_log(MX_LOG_NOTICE, "ha.member_left", MX_KVU("nodeid", left[i].nodeid),
               MX_KVU("pid", left[i].pid), MX_KVU("reason", left[i].reason));
        if ((left[i].reason == CPG_REASON_LEAVE || left[i].reason == CPG_REASON_PROCDOWN) &&
            n_orphaned < CPG_MEMBERS_MAX)
            orphaned[n_orphaned++] = (struct ha_cpg_member){ left[i].nodeid, left[i].pid };
    }
    for (size_t i = 0; i < n_joined; i++)
        mx_log(MX_LOG_NOTICE, "ha.member_joined", MX_KVU("nodeid", joined[i].nodeid),
               MX_KVU("pid", joined[i].pid));
    /* CPG may deliver the view before votequorum's notification (and
     * before the totem ring callback): ask votequorum now, so the STATE
     * sent for this view does not carry the previous membership's
     * verdict. A node cut off from the majority learns "not quorate"
     * here, before it could decide anything alone. */
    refresh_vq_quorate(c);
    report_quorum(c);
    c->cb.view(c->ctx, view, n, orphaned, n_orphaned);
}

static void on_totem_confchg(cpg_handle_t handle, struct cpg_ring_id ring_id,
                             uint32_t n_members, const uint32_t *members)
{
    void *context = NULL;
    if (cpg_context_get(handle, &context) != CS_OK || !context)
        return;
    struct ha_cpg *c = context;
    if (ring_id.seq > c->cpg_ring_seq)
        c->cpg_ring_seq = ring_id.seq;
    mx_log(MX_LOG_DEBUG, "ha.totem_ring", MX_KVU("seq", ring_id.seq), MX_KVU("members", n_members));
    c->cb.ring(c->ctx, members, n_members);
    report_quorum(c); /* usually PENDING until votequorum catches up */
}

static void on_quorum(votequorum_handle_t handle, uint64_t context, uint32_t quorate,
                      uint32_t n_nodes, votequorum_node_t nodes[])
{
    struct ha_cpg *c = (struct ha_cpg *)(uintptr_t)context;
    c->vq_quorate = quorate != 0;
    mx_log(MX_LOG_DEBUG, "ha.quorum_notify", MX_KVU("quorate", quorate), MX_KVU("nodes", n_nodes));
    report_quorum(c);
}

static void on_nodelist(votequorum_handle_t handle, uint64_t context,
                        votequorum_ring_id_t ring_id, uint32_t n_nodes, uint32_t nodes[])
{
    struct ha_cpg *c = (struct ha_cpg *)(uintptr_t)context;
    if (ring_id.seq > c->vq_ring_seq)
        c->vq_ring_seq = ring_id.seq;
    mx_log(MX_LOG_DEBUG, "ha.quorum_ring", MX_KVU("seq", ring_id.seq), MX_KVU("nodes", n_nodes));
    /* The nodelist notification carries the ring; the verdict that goes
     * with it is asked for directly (it is at least as new). */
    refresh_vq_quorate(c);
    report_quorum(c);
}

static void report_lost(struct ha_cpg *c, const char *what, cs_error_t err)
{
    char reason[96];
    snprintf(reason, sizeof(reason), "%s: cs_error %d", what, (int)err);
    /* Stop watching the dead descriptors before the owner reacts. */
    if (c->cpg_event)
        event_del(c->cpg_event);
    if (c->vq_event)
        event_del(c->vq_event);
    c->cb.lost(c->ctx, reason); /* may free c: nothing after this */
}

static void on_cpg_readable(evutil_socket_t fd, short what, void *arg)
{
    struct ha_cpg *c = arg;
    cs_error_t err = cpg_dispatch(c->cpg, CS_DISPATCH_ALL);
    if (err != CS_OK && err != CS_ERR_TRY_AGAIN)
        report_lost(c, "cpg_dispatch", err);
}

static void on_vq_readable(evutil_socket_t fd, short what, void *arg)
{
    struct ha_cpg *c = arg;
    cs_error_t err = votequorum_dispatch(c->vq, CS_DISPATCH_ALL);
    if (err != CS_OK && err != CS_ERR_TRY_AGAIN)
        report_lost(c, "votequorum_dispatch", err);
}

static int fail(struct ha_cpg *c, char **error_r, const char *call, cs_error_t err)
{
    if (asprintf(error_r, "%s failed: cs_error %d (is corosync running here?)", call, (int)err) < 0)
        *error_r = NULL;
    ha_cpg_close(&c);
    return -1;
}

int ha_cpg_open(struct event_base *base, const char *group, const struct ha_cpg_callbacks *cb,
                void *ctx, struct ha_cpg **cpg_r, char **error_r)
{
    struct ha_cpg *c = mx_calloc(1, sizeof(*c));
    c->cb = *cb;
    c->ctx = ctx;
    size_t group_len = strlen(group);
    if (group_len == 0 || group_len >= CPG_MAX_NAME_LENGTH) {
        free(c);
        if (asprintf(error_r, "ha.cpg_group \"%s\": must be 1-%d bytes", group,
                     CPG_MAX_NAME_LENGTH - 1) < 0)
            *error_r = NULL;
        return -1;
    }
    c->group.length = (uint32_t)group_len;
    memcpy(c->group.value, group, group_len);

    cpg_model_v1_data_t model = { .model = CPG_MODEL_V1,
                                  .cpg_deliver_fn = on_deliver,
                                  .cpg_confchg_fn = on_confchg,
                                  .cpg_totem_confchg_fn = on_totem_confchg,
                                  .flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF };
    cs_error_t err = cpg_model_initialize(&c->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, c);
    if (err != CS_OK)
        return fail(c, error_r, "cpg_model_initialize", err);
    c->cpg_open = true;
    unsigned int local = 0;
    if ((err = cpg_local_get(c->cpg, &local)) != CS_OK)
        return fail(c, error_r, "cpg_local_get", err);
    c->self = (struct ha_cpg_member){ local, (uint32_t)getpid() };

    votequorum_callbacks_t vq_cb = { .votequorum_quorum_notify_fn = on_quorum,
                                     .votequorum_nodelist_notify_fn = on_nodelist };
    if ((err = votequorum_initialize(&c->vq, &vq_cb)) != CS_OK)
        return fail(c, error_r, "votequorum_initialize", err);
    c->vq_open = true;
    if ((err = votequorum_trackstart(c->vq, (uint64_t)(uintptr_t)c,
                                     CS_TRACK_CURRENT | CS_TRACK_CHANGES)) != CS_OK)
        return fail(c, error_r, "votequorum_trackstart", err);

    int cpg_fd = -1, vq_fd = -1;
    if ((err = cpg_fd_get(c->cpg, &cpg_fd)) != CS_OK)
        return fail(c, error_r, "cpg_fd_get", err);
    if ((err = votequorum_fd_get(c->vq, &vq_fd)) != CS_OK)
        return fail(c, error_r, "votequorum_fd_get", err);
    c->cpg_event = event_new(base, cpg_fd, EV_READ | EV_PERSIST, on_cpg_readable, c);
    c->vq_event = event_new(base, vq_fd, EV_READ | EV_PERSIST, on_vq_readable, c);
    if (!c->cpg_event || !c->vq_event)
        abort();
    event_add(c->cpg_event, NULL);
    event_add(c->vq_event, NULL);

    /* Join last: the confchg that follows must find the events in place. */
    for (int attempt = 0;; attempt++) {
        err = cpg_join(c->cpg, &c->group);
        if (err != CS_ERR_TRY_AGAIN || attempt >= 50)
            break;
        struct timespec pause = { 0, 20 * 1000 * 1000 };
        nanosleep(&pause, NULL); /* start-up only: corosync still settling */
    }
    if (err != CS_OK)
        return fail(c, error_r, "cpg_join", err);
    *cpg_r = c;
    return 0;
}

void ha_cpg_close(struct ha_cpg **cpg)
{
    struct ha_cpg *c = *cpg;
    if (!c)
        return;
    *cpg = NULL;
    if (c->cpg_event)
        event_free(c->cpg_event);
    if (c->vq_event)
        event_free(c->vq_event);
    if (c->vq_open) {
        votequorum_trackstop(c->vq);
        votequorum_finalize(c->vq);
    }
    if (c->cpg_open) {
        cpg_context_set(c->cpg, NULL);
        cpg_finalize(c->cpg);
    }
    free(c);
}

struct ha_cpg_member ha_cpg_self(const struct ha_cpg *cpg)
{
    return cpg->self;
}

int ha_cpg_send(struct ha_cpg *cpg, const void *data, size_t len)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    cs_error_t err = cpg_mcast_joined(cpg->cpg, CPG_TYPE_AGREED, &iov, 1);
    if (err == CS_OK)
        return 0;
    if (err == CS_ERR_TRY_AGAIN)
        return 1;
    mx_log(MX_LOG_ERR, "ha.cpg_send_failed", MX_KVI("cs_error", (int)err),
           MX_KVU("bytes", len));
    return -1;
}
