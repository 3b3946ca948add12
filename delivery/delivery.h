/* delivery.h - mx-delivery's internal types, shared by its own files only.
 *
 * mx-delivery receives accepted messages from mx-inbound
 * (MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT), expands every recipient through
 * LDAP (alternate addresses, aliases, forwarding, lists, the dynamic
 * all-users list), appends one copy per local mailbox to the store shard
 * that owns it (MSG_ANY_STORE_APPEND, deduplicated there by the cluster
 * message id), writes external recipients to the durable outbound queue,
 * and only then acks inbound. It keeps no queue of its own: until the ack,
 * inbound's spool is the copy of record, and a retried SUBMIT is harmless
 * because every append and outbound entry is keyed by the message id. */
#ifndef DELIVERY_H
#define DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_bus.h"
#include "mx_config.h"
#include "mx_daemon.h"
#include "mx_ldap.h"
#include "mx_log.h"
#include "mx_msgid.h"
#include "mx_spool.h"

struct event_base;
struct event;
struct delivery_job;

extern const struct mx_option delivery_options[];

struct delivery_server {
    struct event_base *base;
    struct mx_config *config;
    struct mx_ldap *ldap;
    struct mx_bus *bus;
    struct mx_server *listener;
    struct mx_daemon_shard *shards; /* by mxStoreShard name */
    struct mx_clustermap *cluster_map; /* NULL: delivery.cluster_map empty */
    size_t n_shards;
    const char *default_shard;
    struct mx_spool *outbound;      /* external recipients, sent by a later role */
    struct mx_spool *failures;      /* per-recipient permanent failures, for bounces */
    struct mx_spool_committer *committer;
    char *postmaster;               /* where <postmaster> goes */
    char *recipient_filter;
    unsigned max_expansion_depth;
    unsigned max_recipients;        /* after expansion */
    unsigned max_hops;              /* Delivered-To headers before a loop is declared */
    unsigned warn_percent[2];       /* quota warning thresholds */
    char hostname[256];
    uint64_t jobs_started;
    unsigned jobs_active;
    struct delivery_job *jobs;      /* in progress: a resend joins its job */
};

/* ---- delivery_expand.c ---- */

/* A final destination after expansion. */
struct delivery_target {
    char *address;     /* local: the account's primary mail; external: as given */
    bool local;
    char *shard;       /* local only */
    uint64_t quota_bytes, quota_count; /* local only; 0 = unlimited */
    char *via;         /* the envelope recipient it came from (for logs, Delivered-To) */
};

/* The verdict on one envelope recipient that cannot be delivered. */
struct delivery_refusal {
    char *recipient;
    const char *reason; /* static: "unknown", "disabled", "internal list", ... */
};

struct delivery_expansion {
    struct delivery_target *targets;
    size_t n_targets;
    struct delivery_refusal *refusals;
    size_t n_refusals;
    bool tempfail;        /* LDAP unavailable: the whole message is retried */
    const char *tempfail_reason;
};

struct delivery_expand_request {
    const char *sid;            /* message id text, for logs */
    const char *sender;
    const char *auth_user;      /* "" when the sender did not authenticate */
    char **recipients;
    size_t n_recipients;
};

typedef void delivery_expand_done_fn(void *ctx, struct delivery_expansion *expansion);
struct delivery_expand;

/* delivery_expand_start - expand every recipient; done runs once, later,
 * with the result (owned by the callee: free with delivery_expansion_free). */
struct delivery_expand *delivery_expand_start(struct delivery_server *server,
                                              const struct delivery_expand_request *request,
                                              delivery_expand_done_fn *done, void *ctx);
void delivery_expand_cancel(struct delivery_expand **expand);
void delivery_expansion_free(struct delivery_expansion *expansion);
void delivery_expansion_free_contents(struct delivery_expansion *expansion);

/* ---- delivery_job.c ---- */
void delivery_handle_submit(struct delivery_server *server, struct mx_server_request *req,
                            const struct mx_frame_view *frame);
struct mx_daemon_shard *delivery_shard_find(struct delivery_server *server, const char *name);

#endif
