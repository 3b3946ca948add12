/* inbound.h - mx-inbound's internal types, shared by its own files only.
 *
 * One process runs every configured instance (mta, msa, ...) on one
 * libevent loop. Accepted mail goes into the durable spool (group commit)
 * before "250", then to mx-delivery over the bus (request/ack); the spool
 * entry is removed only after delivery's ack. See docs/ARCHITECTURE.md. */
#ifndef INBOUND_H
#define INBOUND_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "mx_address.h"
#include "mx_auth.h"
#include "mx_bus.h"
#include "mx_config.h"
#include "mx_daemon.h"
#include "mx_ldap.h"
#include "mx_limits.h"
#include "mx_log.h"
#include "mx_msgid.h"
#include "mx_net.h"
#include "mx_spool.h"

struct event_base;
struct event;
struct evconnlistener;

extern const struct mx_option inbound_options[];

enum inbound_mode { INBOUND_MODE_MTA, INBOUND_MODE_MSA };

/* A trusted load balancer address (PROXY v2 required from it). */
struct inbound_proxy_peer {
    struct sockaddr_storage addr;
};

struct inbound_instance {
    char *name;
    enum inbound_mode mode;
    bool require_tls;
    bool require_auth;
    uint64_t max_message_size;
    unsigned max_recipients;
    unsigned max_connections_per_ip;
    unsigned max_connection_rate;
    unsigned max_errors;
    unsigned idle_timeout_ms;
    unsigned session_timeout_ms;
    bool reuseport;
    struct inbound_proxy_peer *proxies;
    size_t n_proxies;
    struct inbound_server *server;
};

struct inbound_listener {
    struct inbound_instance *instance;
    struct evconnlistener *listener;
    bool implicit_tls;
    char *address; /* as configured, for logs */
};

struct inbound_handoff; /* queue runner to mx-delivery: inbound_handoff.c */

/* The daemon: everything sessions share. */
struct inbound_server {
    struct event_base *base;
    struct mx_config *config;
    char hostname[256];
    char *spool_dir;
    unsigned max_connections;
    unsigned connections;
    uint64_t sessions_started;

    struct inbound_instance *instances;
    size_t n_instances;
    struct inbound_listener *listeners;
    size_t n_listeners;

    SSL_CTX *tls_ctx; /* NULL when no certificate could be loaded */

    struct mx_ldap *ldap;
    char *recipient_filter;
    char *domain_filter;
    char *login_filter;

    struct mx_bus *bus;
    struct mx_client *filter; /* NULL = no filter configured */
    /* Store shards asked for quota at RCPT (may be none). */
    struct mx_daemon_shard *shards;
    size_t n_shards;
    const char *default_shard;
    bool filter_fail_open;

    struct mx_spool *spool;
    struct mx_spool_committer *committer;
    struct inbound_handoff *handoff;
    struct mx_limits *limits; /* per-IP sessions and failed logins, per-account failures */
    /* The login check (points at ldap, login_filter and limits above);
     * auth.window_ms is also the per-IP failure window. */
    struct mx_auth_config auth;
    unsigned auth_max_failures_per_ip;

    bool stopping;
};

/* ---- inbound_listen.c ---- */
int inbound_listen_start(struct inbound_server *server, char **error_r);
void inbound_listen_stop(struct inbound_server *server);

/* ---- inbound_session.c ---- */
/* inbound_session_start - take over fd (accepted on listener) */
void inbound_session_start(struct inbound_listener *listener, int fd, const struct sockaddr *peer,
                           socklen_t peer_len);

/* ---- inbound_spoolfile.c: the spool entry format ---- */

/* One accepted message as stored in the spool and handed to delivery. */
struct inbound_envelope {
    struct mx_msgid id;
    char *instance;
    char *sender;          /* "" for the null reverse-path */
    char **recipients;
    char **notify;         /* per recipient, "" when not given */
    char **orcpt;          /* per recipient, "" when not given */
    size_t n_recipients;
    char *client_addr;
    char *client_helo;
    char *auth_user;       /* "" when not authenticated */
    char *envid;           /* DSN ENVID, "" when none */
    char *ret;             /* DSN RET, "" when none */
    char *body_type;       /* "7BIT", "8BITMIME", "BINARYMIME" */
    bool smtputf8;
    uint64_t arrival_ms;   /* wall clock, for Received and delivery logs */
    uint64_t message_size; /* bytes of the message as received */
    char *prepend;         /* header lines added in front (Received, Date, ...) */
};

void inbound_envelope_clear(struct inbound_envelope *env);
/* inbound_envelope_write - append the envelope trailer to a spool file whose
 * message bytes (env->message_size of them) are already written. */
int inbound_envelope_write(struct mx_spool_file *file, const struct inbound_envelope *env,
                           char **error_r);
/* inbound_envelope_read - parse the trailer of the spool file at path;
 * env_r is filled (free with inbound_envelope_clear). The message bytes are
 * [0, message_size) of the file. -1 with error_r (heap) for a damaged file. */
int inbound_envelope_read(const char *path, struct inbound_envelope *env_r, char **error_r);
/* inbound_envelope_read_fd - the same on an open descriptor. */
int inbound_envelope_read_fd(int fd, const char *path, struct inbound_envelope *env_r,
                             char **error_r);

/* ---- inbound_handoff.c ---- */
int inbound_handoff_new(struct inbound_server *server, char **error_r);
void inbound_handoff_free(struct inbound_handoff **handoff);
/* inbound_handoff_queue - a committed spool entry is ready to go. */
void inbound_handoff_queue(struct inbound_handoff *handoff, const char *name);
/* inbound_handoff_rescan - queue every committed entry (at start). */
int inbound_handoff_rescan(struct inbound_handoff *handoff, char **error_r);

#endif
