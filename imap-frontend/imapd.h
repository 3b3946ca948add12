/* imapd.h - mx-imapd's internal types, shared by its own files only.
 *
 * mx-imapd is a STATELESS protocol frontend: it keeps no mailbox data of
 * its own. Every mailbox operation is a request to the primary mx-store of
 * the user's shard (the shard comes from LDAP at login); untagged updates
 * come from the shards' change events (PUB/SUB). So any number of
 * instances can serve the same user at once, behind a balancer, and a
 * client that reconnects elsewhere sees the same UIDVALIDITY, UIDs and
 * flags. One process, one libevent loop, many thousands of connections.
 * See docs/ARCHITECTURE.md. */
#ifndef IMAPD_H
#define IMAPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "mx_auth.h"
#include "mx_bus.h"
#include "mx_config.h"
#include "mx_conn.h"
#include "mx_daemon.h"
#include "mx_ldap.h"
#include "mx_limits.h"
#include "mx_log.h"
#include "mx_net.h"
#include "mx_wire.h"

struct event_base;
struct evconnlistener;

extern const struct mx_option imapd_options[];

enum imapd_protocol { IMAPD_IMAP, IMAPD_POP3 };

struct imapd_listener {
    struct imapd_server *server;
    struct evconnlistener *listener;
    enum imapd_protocol protocol;
    bool implicit_tls;
    char *address; /* as configured, for logs */
};

/* A store shard: its request client (from mx_daemon_shards_new) and the
 * subscription to its change events. */
struct imapd_shard {
    const char *name;
    struct mx_client *client;
    struct mx_sub *events;
};

struct imapd_watch; /* a session's interest in one user's changes */

struct imapd_server {
    struct event_base *base;
    struct mx_config *config;
    char hostname[256];

    struct imapd_listener *listeners;
    size_t n_listeners;
    SSL_CTX *tls_ctx; /* NULL when no certificate could be loaded */
    struct mx_cidr_list *plaintext_networks;
    struct mx_cidr_list *proxies;

    struct mx_ldap *ldap;
    struct mx_auth_config auth;
    struct mx_limits *limits;
    unsigned auth_max_failures_per_ip;

    struct mx_bus *bus;
    struct mx_daemon_shard *daemon_shards;
    struct mx_clustermap *cluster_map; /* NULL: imap.cluster_map empty */
    struct imapd_shard *shards;
    size_t n_shards;
    const char *default_shard;
    unsigned store_timeout_ms;

    unsigned max_connections;
    unsigned max_connections_per_ip;
    unsigned max_connection_rate;
    unsigned connections;
    uint64_t sessions_started;
    struct mx_conn_registry conns[2]; /* live connections by enum imapd_protocol */
    unsigned login_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned pop3_idle_timeout_ms;
    size_t max_line_length;
    uint64_t max_literal_size;

    struct imapd_watch **watch_buckets; /* user -> watches (imapd_store.c) */
    size_t n_watch_buckets;
};

/* ---- imapd_listen.c --------------------------------------------------- */
int imapd_listen_start(struct imapd_server *server, char **error_r);
void imapd_listen_stop(struct imapd_server *server);

/* ---- the sessions (imap_session.c, pop3_session.c) -------------------- */
/* Both take over conn (created by the listener with the session as ctx
 * through the ops below). The listener counted the connection; the
 * session calls imapd_connection_done() exactly once when it ends. */
extern const struct mx_conn_ops imap_session_ops;
extern const struct mx_conn_ops pop3_session_ops;
void *imap_session_new(struct imapd_server *server, const struct imapd_listener *listener,
                       const char *sid);
void imap_session_attach(void *session, struct mx_conn *conn);
void *pop3_session_new(struct imapd_server *server, const struct imapd_listener *listener,
                       const char *sid);
void pop3_session_attach(void *session, struct mx_conn *conn);
/* imapd_admit - per-address limits, checked once the client address is
 * known (after a PROXY header): 0 = admitted (counted), -1 = refused
 * (reason_r static). */
int imapd_admit(struct imapd_server *server, const char *peer_ip, const char **reason_r);
/* imapd_connection_done - the session ended; admitted: imapd_admit said 0. */
void imapd_connection_done(struct imapd_server *server, const char *peer_ip, bool admitted);

/* imapd_plaintext_auth_allowed - may this connection log in with a
 * password without TLS? (TLS, or a configured trusted network) */
bool imapd_plaintext_auth_allowed(const struct imapd_server *server, struct mx_conn *conn);

/* ---- imapd_store.c: requests to the user's store shard ---------------- */

/* The shard client for an account (identity->shard, else the default);
 * NULL when the shard is not configured here (logged). */
struct imapd_shard *imapd_shard_for(struct imapd_server *server, const char *shard_name);

/* Completion of one store request. status: the reply's F_STATUS, or
 * MX_STATUS_TEMPFAIL when the shard did not answer (reply NULL, text says
 * so). reply is valid only during the call. */
typedef void imapd_store_done_fn(void *ctx, enum mx_status status, const char *text,
                                 const struct mx_frame_view *reply);

/* A pending request a session can cancel when it goes away. */
struct imapd_store_call {
    struct imapd_shard *shard;
    uint64_t request_id;
    bool pending;
    imapd_store_done_fn *done;
    void *ctx;
};

/* imapd_store_request - send frame (the caller frees it after this
 * returns) to shard; done runs later from the loop, exactly once, unless
 * imapd_store_cancel() came first. call must stay valid until then (embed
 * it in the session). -1 if the request could not even be queued (done
 * will not run). */
int imapd_store_request(struct imapd_shard *shard, struct mx_frame *frame,
                        struct imapd_store_call *call, imapd_store_done_fn *done, void *ctx);
void imapd_store_cancel(struct imapd_store_call *call);

/* imapd_store_frame - start a request frame of type for user (F_USER set)
 * and, if mailbox != NULL, F_MAILBOX. */
void imapd_store_frame(struct mx_frame *frame, enum mx_msg_type type, const char *user,
                       const char *mailbox);

/* ---- change events ---------------------------------------------------- */
/* A session watching user gets fn(ctx, mailbox, modseq, change bits) for
 * every MSG_STORE_ANY_MAILBOX_CHANGED about that user (PUB/SUB is lossy:
 * sessions also re-check on NOOP/IDLE start). */
typedef void imapd_watch_fn(void *ctx, const char *mailbox, uint64_t modseq, uint32_t change);
struct imapd_watch *imapd_watch_add(struct imapd_server *server, const char *user,
                                    imapd_watch_fn *fn, void *ctx);
void imapd_watch_remove(struct imapd_server *server, struct imapd_watch **watch);
void imapd_watch_free_all(struct imapd_server *server);
/* imapd_on_store_event - the shards' SUB handler (ctx = server). */
void imapd_on_store_event(void *ctx, const char *topic, const struct mx_frame_view *frame);

#endif
