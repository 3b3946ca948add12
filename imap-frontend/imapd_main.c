/* mx-imapd - the IMAP4rev1/IMAP4rev2 and POP3 frontend of mxcluster. */
#include "imapd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "mx_alloc.h"
#include "mx_clustermap.h"
#include "mx_tls.h"

/* cidr_option - a CIDR list option; NULL list when it is empty. */
static int cidr_option(const struct mx_config_node *root, const char *path,
                       struct mx_cidr_list **list_r, char **error_r)
{
    size_t n = mx_config_strings_len(root, path);
    *list_r = NULL;
    if (n == 0)
        return 0;
    const char **items = mx_calloc(n, sizeof *items);
    for (size_t i = 0; i < n; i++)
        items[i] = mx_config_strings_at(root, path, i);
    char *error = NULL;
    int rc = mx_cidr_list_parse(items, n, list_r, &error);
    free(items);
    if (rc < 0) {
        char where[256];
        *error_r = mx_asprintf("%s: %s: %s", mx_config_source(root, path, where, sizeof where),
                               path, error);
        free(error);
    }
    return rc;
}

static int imapd_shards_setup(struct imapd_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    server->default_shard = mx_config_string(&root, "imap.default_shard");
    /* One attempt per endpoint: a store instance that does not answer is
     * most likely a primary that died; the retry goes to the next one. */
    if (mx_daemon_shards_new(server->bus, server->config, "imap.shards", server->store_timeout_ms,
                             0, &server->daemon_shards, &server->n_shards, error_r) < 0)
        return -1;
    server->shards = mx_calloc(server->n_shards ? server->n_shards : 1, sizeof *server->shards);
    for (size_t i = 0; i < server->n_shards; i++) {
        struct imapd_shard *shard = &server->shards[i];
        shard->name = server->daemon_shards[i].name;
        shard->client = server->daemon_shards[i].client;
        struct mx_config_node node = mx_config_list_elem(&root, "imap.shards", i);
        size_t n = mx_config_strings_len(&node, "events");
        if (n == 0) {
            mx_log(MX_LOG_WARNING, "imapd.shard_without_events", MX_KV("shard", shard->name),
                   MX_KV("effect", "IDLE and other sessions see changes only on NOOP"));
            continue;
        }
        const char **endpoints = mx_calloc(n, sizeof *endpoints);
        for (size_t j = 0; j < n; j++)
            endpoints[j] = mx_config_strings_at(&node, "events", j);
        const char *bus_error;
        int rc = mx_sub_new(server->bus, endpoints, n, "", imapd_on_store_event, server,
                            &shard->events, &bus_error);
        free(endpoints);
        if (rc < 0) {
            *error_r = mx_asprintf("imap.shards %s events: %s", shard->name, bus_error);
            return -1;
        }
    }
    if (mx_daemon_follow_cluster_map(server->bus, server->config, "imap.cluster_map",
                                     server->daemon_shards, server->n_shards,
                                     &server->cluster_map, error_r) < 0)
        return -1;
    if (imapd_shard_for(server, server->default_shard) == NULL) {
        *error_r = mx_asprintf("imap.default_shard \"%s\" is not in imap.shards",
                               server->default_shard);
        return -1;
    }
    return 0;
}

static int imapd_server_setup(struct imapd_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    const char *hostname = mx_config_string(&root, "imap.hostname");
    if (hostname && *hostname)
        snprintf(server->hostname, sizeof server->hostname, "%s", hostname);
    else if (gethostname(server->hostname, sizeof server->hostname - 1) < 0)
        snprintf(server->hostname, sizeof server->hostname, "localhost");
    server->max_connections = (unsigned)mx_config_int(&root, "imap.max_connections");
    server->max_connections_per_ip = (unsigned)mx_config_int(&root, "imap.max_connections_per_ip");
    server->max_connection_rate = (unsigned)mx_config_int(&root, "imap.max_connection_rate");
    server->login_timeout_ms = (unsigned)mx_config_duration_ms(&root, "imap.login_timeout");
    server->idle_timeout_ms = (unsigned)mx_config_duration_ms(&root, "imap.idle_timeout");
    server->pop3_idle_timeout_ms = (unsigned)mx_config_duration_ms(&root, "imap.pop3_idle_timeout");
    server->max_line_length = (size_t)mx_config_size(&root, "imap.max_line_length");
    server->max_literal_size = (uint64_t)mx_config_size(&root, "imap.max_literal_size");
    server->store_timeout_ms = (unsigned)mx_config_duration_ms(&root, "imap.store_timeout");
    server->auth_max_failures_per_ip = (unsigned)mx_config_int(&root, "imap.auth_max_failures_per_ip");
    if (cidr_option(&root, "imap.plaintext_auth_networks", &server->plaintext_networks, error_r) < 0 ||
        cidr_option(&root, "imap.proxy_from", &server->proxies, error_r) < 0)
        return -1;
    server->limits = mx_limits_new();
    server->auth = (struct mx_auth_config){
        .login_filter = mx_config_string(&root, "imap.login_filter"),
        .limits = server->limits,
        .window_ms = (unsigned)mx_config_duration_ms(&root, "imap.auth_failure_window"),
        .max_failures_per_account =
            (unsigned)mx_config_int(&root, "imap.auth_max_failures_per_account"),
        .role = "imap",
    };

    struct mx_tls_options tls;
    mx_tls_options_from_config(&root, &tls);
    char *tls_error = NULL;
    server->tls_ctx = mx_tls_server_ctx_new(&tls, &tls_error);
    if (server->tls_ctx == NULL) {
        mx_log(MX_LOG_WARNING, "tls.unavailable", MX_KV("error", tls_error),
               MX_KV("effect", "STARTTLS/STLS not offered, implicit-TLS listeners refused"));
        free(tls_error);
    } else {
        /* Thousands of idle sessions: let OpenSSL drop its 34 KiB read and
         * write buffers between records instead of holding them. */
        SSL_CTX_set_mode(server->tls_ctx, SSL_MODE_RELEASE_BUFFERS);
    }

    server->ldap = mx_daemon_ldap_new(server->base, server->config, error_r);
    if (server->ldap == NULL)
        return -1;
    server->auth.ldap = server->ldap;

    const char *bus_error = NULL;
    if (mx_bus_new(server->base, &server->bus, &bus_error) < 0) {
        *error_r = mx_asprintf("bus: %s", bus_error);
        return -1;
    }
    return imapd_shards_setup(server, error_r);
}

static void imapd_server_teardown(struct imapd_server *server)
{
    imapd_listen_stop(server);
    mx_clustermap_free(&server->cluster_map);
    for (size_t i = 0; i < server->n_shards; i++)
        mx_sub_free(&server->shards[i].events);
    free(server->shards);
    mx_daemon_shards_free(&server->daemon_shards, server->n_shards);
    mx_bus_free(&server->bus);
    mx_ldap_free(&server->ldap);
    if (server->tls_ctx)
        SSL_CTX_free(server->tls_ctx);
    mx_cidr_list_free(&server->plaintext_networks);
    mx_cidr_list_free(&server->proxies);
    mx_limits_free(&server->limits);
    imapd_watch_free_all(server);
    mx_config_free(&server->config);
}

/* imapd_shutdown_sessions - stop accepting, tell every client (RFC 9051
 * 7.1.5: BYE before closing; POP3 has no such message, its -ERR would be
 * taken for a reply, so POP3 clients just see the close), and let the
 * loop free them, bounded: a session waiting on the store is cancelled. */
static void imapd_shutdown_sessions(struct imapd_server *server)
{
    imapd_listen_stop(server);
    size_t open = server->conns[IMAPD_IMAP].count + server->conns[IMAPD_POP3].count;
    if (open == 0)
        return;
    mx_log(MX_LOG_NOTICE, "imapd.shutdown", MX_KVU("connections", open));
    mx_conn_registry_close_all(&server->conns[IMAPD_IMAP], "* BYE Server shutting down\r\n",
                               "server shutting down");
    mx_conn_registry_close_all(&server->conns[IMAPD_POP3], NULL, "server shutting down");
    uint64_t deadline = mx_now_ms() + 2000;
    while (server->conns[IMAPD_IMAP].count + server->conns[IMAPD_POP3].count > 0 &&
           mx_now_ms() < deadline)
        event_base_loop(server->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

int main(int argc, char **argv)
{
    static const struct mx_option *const tables[] = { mx_common_options, imapd_options, NULL };
    struct imapd_server server = { 0 };
    server.config = mx_daemon_load_config(argc, argv, "imap", tables);
    struct mx_config_node root = mx_config_root(server.config);
    server.base = event_base_new();
    mx_daemon_on_signals(server.base);

    char *error = NULL;
    if (imapd_server_setup(&server, &error) < 0 || imapd_listen_start(&server, &error) < 0 ||
        mx_daemon_drop_privileges(mx_config_string(&root, "imap.user"), &error) < 0) {
        mx_log(MX_LOG_CRIT, "daemon.start_failed", MX_KV("error", error));
        free(error);
        imapd_server_teardown(&server);
        event_base_free(server.base);
        return 1;
    }
    mx_log(MX_LOG_NOTICE, "daemon.started", MX_KV("hostname", server.hostname),
           MX_KVU("listeners", server.n_listeners), MX_KVU("shards", server.n_shards));
    event_base_dispatch(server.base);
    imapd_shutdown_sessions(&server);
    imapd_server_teardown(&server);
    mx_daemon_signals_free();
    event_base_free(server.base);
    mx_log(MX_LOG_NOTICE, "daemon.stopped");
    return 0;
}
