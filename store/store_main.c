/* mx-store - Maildir++ mailboxes with an LMDB index and operation log,
 * served over the ZeroMQ bus (see store.h and store_server.c).
 *
 * Start-up order matters for crash safety: the index is opened and every
 * mailbox reconciled with its Maildir (store_recover: orphans indexed,
 * missing files expunged) BEFORE the listener accepts a request. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"
#include "mx_daemon.h"
#include "mx_log.h"
#include "store_replication.h"
#include "store_server.h"

extern const struct mx_option store_options[];

int main(int argc, char **argv)
{
    static const struct mx_option *const tables[] = { mx_common_options, store_options, NULL };
    struct mx_config *config = mx_daemon_load_config(argc, argv, "store", tables);
    struct mx_config_node root = mx_config_root(config);
    mx_msgid_init((uint16_t)mx_config_int(&root, "node.id"));
    const char *dir = mx_config_string(&root, "store.root");
    struct store *st = NULL;
    struct store_server *server = NULL;
    char *error = NULL;
    struct event_base *base = event_base_new();
    mx_daemon_on_signals(base);
    int rc = 1;
    if (store_open(dir, (size_t)mx_config_size(&root, "store.index_map_size"), &st, &error) < 0)
        goto out;
    store_oplog_set_keep(st, (uint64_t)mx_config_int(&root, "store.oplog_keep"));
    if (store_snapshot_pending(st)) {
        /* killed during a snapshot resync: the index is a partial copy
         * that start-up recovery must not "repair" with records of its
         * own; the primary sends a new snapshot (store_replication.h) */
        mx_log(MX_LOG_WARNING, "store.snapshot_incomplete", MX_KV("root", dir),
               MX_KV("action", "recovery skipped; waiting for a primary's snapshot"));
    } else {
        struct store_recover_stats rs;
        if (store_recover(st, &rs, &error) < 0)
            goto out;
        mx_log(MX_LOG_NOTICE, "store.recovered", MX_KVU("mailboxes", rs.mailboxes),
               MX_KVU("orphans_indexed", rs.orphans_indexed), MX_KVU("missing_expunged", rs.missing_expunged),
               MX_KVU("tombstones_removed", rs.tombstones_removed),
               MX_KVU("duplicates_skipped", rs.duplicates_skipped));
    }
    if (store_server_start(base, st, mx_config_string(&root, "store.listen"),
                           mx_config_string(&root, "store.publish"),
                           (unsigned)mx_config_int(&root, "store.max_batch"), &server, &error) < 0)
        goto out;
    const char *ha_control = mx_config_string(&root, "store.ha_control");
    if (ha_control && *ha_control) {
        const char *mode = mx_config_string(&root, "store.replication_mode"); /* sync|async */
        long long lease = mx_config_duration_ms(&root, "store.ha_lease");
        struct store_repl_config ha = {
            .shard = mx_config_string(&root, "store.shard"),
            .pair = mx_config_string(&root, "store.pair"),
            .ha_control = ha_control,
            .listen = mx_config_string(&root, "store.replication_listen"),
            .sync = strcmp(mode, "sync") == 0,
            .timeout_ms = (unsigned)mx_config_duration_ms(&root, "store.replication_timeout"),
            .lease_ms = (unsigned)lease,
            /* several reports per lease, so one lost answer does not fence */
            .heartbeat_ms = (unsigned)(lease / 6 > 500 ? 500 : lease / 6 > 20 ? lease / 6 : 20),
        };
        if (store_server_enable_ha(server, &ha, &error) < 0)
            goto out;
    }
    const char *user = mx_config_string(&root, "store.user");
    if (user && *user && mx_daemon_drop_privileges(user, &error) < 0)
        goto out;
    mx_log(MX_LOG_NOTICE, "daemon.started", MX_KV("listen", store_server_endpoint(server)),
           MX_KV("root", dir), MX_KV("shard", mx_config_string(&root, "store.shard")));
    event_base_dispatch(base);
    rc = 0;
out:
    if (error) {
        mx_log(MX_LOG_CRIT, "daemon.start_failed", MX_KV("error", error));
        free(error);
    }
    store_server_stop(&server);
    store_close(&st);
    event_base_free(base);
    mx_config_free(&config);
    if (rc == 0)
        mx_log(MX_LOG_NOTICE, "daemon.stopped");
    return rc;
}
