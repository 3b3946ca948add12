/* mx-inbound - the SMTP server of mxcluster (mta and msa instances).
 *
 * Start-up order matters for the durability promise: the spool is opened
 * and re-scanned (entries that got a 250 before a crash are handed on
 * again) before any listener accepts a new session. */
#include "inbound.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_daemon.h"
#include "mx_tls.h"

/* inbound_instances_from_config - one struct per inbound.instances element. */
static int inbound_instances_from_config(struct inbound_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    size_t n = mx_config_list_len(&root, "inbound.instances");
    if (n == 0) {
        *error_r = mx_strdup("inbound.instances is empty: nothing to listen on");
        return -1;
    }
    server->instances = mx_calloc(n, sizeof *server->instances);
    server->n_instances = n;
    for (size_t i = 0; i < n; i++) {
        struct mx_config_node node = mx_config_list_elem(&root, "inbound.instances", i);
        struct inbound_instance *in = &server->instances[i];
        in->server = server;
        in->name = mx_strdup(mx_config_string(&node, "name"));
        in->mode = strcmp(mx_config_string(&node, "mode"), "msa") == 0 ? INBOUND_MODE_MSA
                                                                        : INBOUND_MODE_MTA;
        /* RFC 6409: submission requires authentication; we require TLS
         * before it so no password crosses the network in clear. */
        in->require_tls = mx_config_bool(&node, "require_tls") || in->mode == INBOUND_MODE_MSA;
        in->require_auth = mx_config_bool(&node, "require_auth") || in->mode == INBOUND_MODE_MSA;
        in->max_message_size = (uint64_t)mx_config_size(&node, "max_message_size");
        in->max_recipients = (unsigned)mx_config_int(&node, "max_recipients");
        in->max_connections_per_ip = (unsigned)mx_config_int(&node, "max_connections_per_ip");
        in->max_connection_rate = (unsigned)mx_config_int(&node, "max_connection_rate");
        in->max_errors = (unsigned)mx_config_int(&node, "max_errors");
        in->idle_timeout_ms = (unsigned)mx_config_duration_ms(&node, "idle_timeout");
        in->session_timeout_ms = (unsigned)mx_config_duration_ms(&node, "session_timeout");
        in->reuseport = mx_config_bool(&node, "reuseport");
        size_t n_proxies = mx_config_strings_len(&node, "proxy_from");
        in->proxies = mx_calloc(n_proxies ? n_proxies : 1, sizeof *in->proxies);
        for (size_t j = 0; j < n_proxies; j++) {
            const char *text = mx_config_strings_at(&node, "proxy_from", j);
            char *with_port = mx_asprintf(strchr(text, ':') ? "[%s]:0" : "%s:0", text);
            socklen_t len;
            int bad = mx_net_parse_hostport(with_port, &in->proxies[j].addr, &len);
            free(with_port);
            if (bad < 0) {
                char where[256];
                *error_r = mx_asprintf("%s: inbound.instances[%zu].proxy_from: \"%s\" is not an IP address",
                                       mx_config_source(&node, "proxy_from", where, sizeof where), i, text);
                return -1;
            }
        }
        in->n_proxies = n_proxies;
    }
    return 0;
}

static int inbound_server_setup(struct inbound_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    const char *hostname = mx_config_string(&root, "inbound.hostname");
    if (hostname && *hostname)
        snprintf(server->hostname, sizeof server->hostname, "%s", hostname);
    else if (gethostname(server->hostname, sizeof server->hostname - 1) < 0)
        snprintf(server->hostname, sizeof server->hostname, "localhost");
    server->max_connections = (unsigned)mx_config_int(&root, "inbound.max_connections");
    server->recipient_filter = mx_strdup(mx_config_string(&root, "inbound.recipient_filter"));
    server->domain_filter = mx_strdup(mx_config_string(&root, "inbound.domain_filter"));
    server->login_filter = mx_strdup(mx_config_string(&root, "inbound.login_filter"));
    server->auth_max_failures_per_ip = (unsigned)mx_config_int(&root, "inbound.auth_max_failures_per_ip");
    server->filter_fail_open = mx_config_bool(&root, "inbound.filter.fail_open");
    server->limits = mx_limits_new();
    /* server->auth.ldap is set once the LDAP client exists (below). */
    server->auth = (struct mx_auth_config){
        .login_filter = server->login_filter,
        .limits = server->limits,
        .window_ms = (unsigned)mx_config_duration_ms(&root, "inbound.auth_failure_window"),
        .max_failures_per_account =
            (unsigned)mx_config_int(&root, "inbound.auth_max_failures_per_account"),
        .role = "smtp",
    };

    if (inbound_instances_from_config(server, error_r) < 0)
        return -1;

    /* TLS: a missing certificate is fatal only if an instance needs TLS. */
    struct mx_tls_options tls;
    mx_tls_options_from_config(&root, &tls);
    char *tls_error = NULL;
    server->tls_ctx = mx_tls_server_ctx_new(&tls, &tls_error);
    if (server->tls_ctx == NULL) {
        for (size_t i = 0; i < server->n_instances; i++) {
            if (server->instances[i].require_tls) {
                *error_r = mx_asprintf("instance %s requires TLS: %s", server->instances[i].name,
                                       tls_error);
                free(tls_error);
                return -1;
            }
        }
        mx_log(MX_LOG_WARNING, "tls.unavailable", MX_KV("error", tls_error),
               MX_KV("effect", "STARTTLS not offered"));
        free(tls_error);
    }

    server->ldap = mx_daemon_ldap_new(server->base, server->config, error_r);
    if (server->ldap == NULL)
        return -1;
    server->auth.ldap = server->ldap;

    /* Spool */
    const char *spool_dir = mx_config_string(&root, "inbound.spool_dir");
    server->spool_dir = spool_dir && *spool_dir
                            ? mx_strdup(spool_dir)
                            : mx_asprintf("%s/inbound", mx_config_string(&root, "node.state_dir"));
    if (mx_spool_open(server->spool_dir, &server->spool, error_r) < 0)
        return -1;
    server->committer = mx_spool_committer_new(server->base, error_r);
    if (server->committer == NULL)
        return -1;

    /* Bus: delivery (required), filter (optional) */
    const char *bus_error = NULL;
    if (mx_bus_new(server->base, &server->bus, &bus_error) < 0) {
        *error_r = mx_asprintf("bus: %s", bus_error);
        return -1;
    }
    if (inbound_handoff_new(server, error_r) < 0)
        return -1;
    /* One attempt: a slow store must not hold RCPT; delivery decides. */
    server->default_shard = mx_config_string(&root, "inbound.default_shard");
    if (mx_daemon_shards_new(server->bus, server->config, "inbound.shards",
                             (unsigned)mx_config_duration_ms(&root, "inbound.quota_timeout"), 1,
                             &server->shards, &server->n_shards, error_r) < 0)
        return -1;
    size_t n_filters = mx_config_strings_len(&root, "inbound.filter.endpoints");
    if (n_filters > 0) {
        const char **endpoints = mx_calloc(n_filters, sizeof *endpoints);
        for (size_t i = 0; i < n_filters; i++)
            endpoints[i] = mx_config_strings_at(&root, "inbound.filter.endpoints", i);
        struct mx_client_config fc = {
            .name = "filter",
            .timeout_ms = (unsigned)mx_config_duration_ms(&root, "inbound.filter.timeout"),
            .max_attempts = 1,
        };
        int bad = mx_client_new(server->bus, endpoints, n_filters, &fc, &server->filter, &bus_error);
        free(endpoints);
        if (bad < 0) {
            *error_r = mx_asprintf("filter client: %s", bus_error);
            return -1;
        }
    }
    return 0;
}

static void inbound_server_teardown(struct inbound_server *server)
{
    server->stopping = true;
    inbound_listen_stop(server);
    /* Sessions still open are abandoned with the process; their spool
     * commits in flight are finished (and reported) by the committer. */
    mx_spool_committer_free(&server->committer);
    inbound_handoff_free(&server->handoff);
    mx_client_free(&server->filter);
    mx_daemon_shards_free(&server->shards, server->n_shards);
    mx_bus_free(&server->bus);
    mx_ldap_free(&server->ldap);
    mx_spool_close(&server->spool);
    if (server->tls_ctx)
        SSL_CTX_free(server->tls_ctx);
    mx_limits_free(&server->limits);
    for (size_t i = 0; i < server->n_instances; i++) {
        free(server->instances[i].name);
        free(server->instances[i].proxies);
    }
    free(server->instances);
    free(server->recipient_filter);
    free(server->domain_filter);
    free(server->login_filter);
    free(server->spool_dir);
    mx_config_free(&server->config);
}

int main(int argc, char **argv)
{
    static const struct mx_option *const tables[] = { mx_common_options, inbound_options, NULL };
    struct inbound_server server = { 0 };
    server.config = mx_daemon_load_config(argc, argv, "inbound", tables);
    struct mx_config_node root = mx_config_root(server.config);
    mx_msgid_init((uint16_t)mx_config_int(&root, "node.id"));
    server.base = event_base_new();
    mx_daemon_on_signals(server.base);

    char *error = NULL;
    if (inbound_server_setup(&server, &error) < 0 || inbound_listen_start(&server, &error) < 0 ||
        mx_daemon_drop_privileges(mx_config_string(&root, "inbound.user"), &error) < 0 ||
        inbound_handoff_rescan(server.handoff, &error) < 0) {
        mx_log(MX_LOG_CRIT, "daemon.start_failed", MX_KV("error", error));
        free(error);
        inbound_server_teardown(&server);
        event_base_free(server.base);
        return 1;
    }
    mx_log(MX_LOG_NOTICE, "daemon.started", MX_KV("hostname", server.hostname),
           MX_KV("spool", server.spool_dir), MX_KVU("instances", server.n_instances));
    event_base_dispatch(server.base);
    inbound_server_teardown(&server);
    event_base_free(server.base);
    mx_log(MX_LOG_NOTICE, "daemon.stopped");
    return 0;
}
