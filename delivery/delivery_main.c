/* mx-delivery - expands accepted mail through LDAP and appends it to the
 * users' mailboxes on their store shards; see delivery.h. */
#include "delivery.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_clustermap.h"
#include "mx_daemon.h"

/* delivery_dispatch - the one place requests arrive: decode, act, reply;
 * anything else is refused. */
static void delivery_dispatch(void *ctx, struct mx_server_request *req,
                              const struct mx_frame_view *frame)
{
    struct delivery_server *server = ctx;
    const char *error = NULL;
    switch (frame->type) {
    case MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT:
        delivery_handle_submit(server, req, frame);
        break;
    default:
        mx_log(MX_LOG_WARNING, "delivery.unexpected_message", MX_KV("type", mx_msg_type_name(frame->type)),
               MX_KV("peer", mx_server_request_peer(req)));
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "mx-delivery does not handle this message", &error);
        break;
    }
}

static int delivery_setup(struct delivery_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    if (gethostname(server->hostname, sizeof server->hostname - 1) < 0)
        snprintf(server->hostname, sizeof server->hostname, "localhost");
    server->postmaster = mx_strdup(mx_config_string(&root, "delivery.postmaster"));
    server->recipient_filter = mx_strdup(mx_config_string(&root, "delivery.recipient_filter"));
    server->max_expansion_depth = (unsigned)mx_config_int(&root, "delivery.max_expansion_depth");
    server->max_recipients = (unsigned)mx_config_int(&root, "delivery.max_recipients");
    server->max_hops = (unsigned)mx_config_int(&root, "delivery.max_hops");
    server->warn_percent[0] = (unsigned)mx_config_int(&root, "delivery.quota_warning_low");
    server->warn_percent[1] = (unsigned)mx_config_int(&root, "delivery.quota_warning_high");
    server->default_shard = mx_config_string(&root, "delivery.default_shard");

    server->ldap = mx_daemon_ldap_new(server->base, server->config, error_r);
    if (server->ldap == NULL)
        return -1;

    const char *state = mx_config_string(&root, "delivery.state_dir");
    char *dir = state && *state ? mx_strdup(state)
                                : mx_asprintf("%s/delivery", mx_config_string(&root, "node.state_dir"));
    char *outbound = mx_asprintf("%s/outbound", dir);
    char *failures = mx_asprintf("%s/failures", dir);
    int bad = mx_spool_open(dir, &server->failures, error_r) < 0; /* creates dir */
    mx_spool_close(&server->failures);
    bad = bad || mx_spool_open(outbound, &server->outbound, error_r) < 0 ||
          mx_spool_open(failures, &server->failures, error_r) < 0;
    free(dir);
    free(outbound);
    free(failures);
    if (bad)
        return -1;
    server->committer = mx_spool_committer_new(server->base, error_r);
    if (server->committer == NULL)
        return -1;

    const char *bus_error = NULL;
    if (mx_bus_new(server->base, &server->bus, &bus_error) < 0) {
        *error_r = mx_asprintf("bus: %s", bus_error);
        return -1;
    }
    if (mx_daemon_shards_new(server->bus, server->config, "delivery.shards",
                             (unsigned)mx_config_duration_ms(&root, "delivery.store_timeout"), 0,
                             &server->shards, &server->n_shards, error_r) < 0)
        return -1;
    if (mx_daemon_follow_cluster_map(server->bus, server->config, "delivery.cluster_map",
                                     server->shards, server->n_shards, &server->cluster_map,
                                     error_r) < 0)
        return -1;
    if (delivery_shard_find(server, server->default_shard) == NULL) {
        *error_r = mx_asprintf("delivery.default_shard \"%s\" is not among delivery.shards",
                               server->default_shard);
        return -1;
    }
    if (mx_server_new(server->bus, mx_config_string(&root, "delivery.listen"), delivery_dispatch,
                      server, &server->listener, &bus_error) < 0) {
        *error_r = mx_asprintf("listen: %s", bus_error);
        return -1;
    }
    return 0;
}

static void delivery_teardown(struct delivery_server *server)
{
    mx_server_free(&server->listener);
    mx_clustermap_free(&server->cluster_map);
    mx_daemon_shards_free(&server->shards, server->n_shards);
    mx_spool_committer_free(&server->committer);
    mx_bus_free(&server->bus);
    mx_ldap_free(&server->ldap);
    mx_spool_close(&server->outbound);
    mx_spool_close(&server->failures);
    free(server->postmaster);
    free(server->recipient_filter);
    mx_config_free(&server->config);
}

int main(int argc, char **argv)
{
    static const struct mx_option *const tables[] = { mx_common_options, delivery_options, NULL };
    struct delivery_server server = { 0 };
    server.config = mx_daemon_load_config(argc, argv, "delivery", tables);
    struct mx_config_node root = mx_config_root(server.config);
    mx_msgid_init((uint16_t)mx_config_int(&root, "node.id"));
    server.base = event_base_new();
    mx_daemon_on_signals(server.base);
    char *error = NULL;
    if (delivery_setup(&server, &error) < 0) {
        mx_log(MX_LOG_CRIT, "daemon.start_failed", MX_KV("error", error));
        free(error);
        delivery_teardown(&server);
        event_base_free(server.base);
        return 1;
    }
    mx_log(MX_LOG_NOTICE, "daemon.started", MX_KV("listen", mx_server_endpoint(server.listener)),
           MX_KVU("shards", server.n_shards));
    event_base_dispatch(server.base);
    delivery_teardown(&server);
    event_base_free(server.base);
    mx_log(MX_LOG_NOTICE, "daemon.stopped");
    return 0;
}
