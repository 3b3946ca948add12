/* mx_daemon - what every mxcluster daemon does at start, in one place:
 * read the config, open the log, set up the LDAP client from the "ldap"
 * group, stop on SIGTERM/SIGINT, drop root after binding its ports. */
#ifndef MX_DAEMON_H
#define MX_DAEMON_H

#include "mx_bus.h"
#include "mx_config.h"
#include "mx_ldap.h"

struct event_base;

/* mx_daemon_load_config - parse "-c FILE" and "-t" (check the config and
 * exit) from argv; load FILE (default /etc/mxcluster/mxcluster.conf)
 * against tables; open the log as role. Exits with a clear message on
 * any error, since nothing can run without a valid config. */
struct mx_config *mx_daemon_load_config(int argc, char **argv, const char *role,
                                        const struct mx_option *const *tables);

/* mx_daemon_ldap_config - fill cfg from the "ldap" group. The service
 * password is read from ldap.bind_password_file into *password_r (heap;
 * the caller wipes and frees it after mx_ldap_new). */
int mx_daemon_ldap_config(const struct mx_config *config, struct mx_ldap_config *cfg_r,
                          char **uris_r, char **password_r, char **error_r);

/* mx_daemon_ldap_new - the LDAP client of the "ldap" group, the service
 * password read and wiped again. NULL with error_r (heap) on failure. */
struct mx_ldap *mx_daemon_ldap_new(struct event_base *base, const struct mx_config *config,
                                   char **error_r);

/* A store shard as a role sees it: its name (mxStoreShard) and a bus
 * client to its mx-store instances. */
struct mx_daemon_shard {
    char *name;
    struct mx_client *client;
};

/* mx_daemon_shards_new - one client per element of the GROUP_LIST at path
 * (members "name" and "endpoints"). max_attempts 0 = one per endpoint.
 * -1 with error_r (heap); what was created is freed. */
int mx_daemon_shards_new(struct mx_bus *bus, const struct mx_config *config, const char *path,
                         unsigned timeout_ms, unsigned max_attempts,
                         struct mx_daemon_shard **shards_r, size_t *n_r, char **error_r);
void mx_daemon_shards_free(struct mx_daemon_shard **shards, size_t n);
/* mx_daemon_shard_find - the shard called name, or NULL. */
struct mx_daemon_shard *mx_daemon_shard_find(struct mx_daemon_shard *shards, size_t n,
                                             const char *name);

/* mx_daemon_follow_cluster_map - subscribe to the mx-ha PUB endpoints in
 * the string list at path (e.g. "imap.cluster_map") and make each shard's
 * client ask the primary the map names first (mx_client_prefer). An empty
 * list: *map_r NULL, 0. shards must outlive the map. error_r heap. */
struct mx_clustermap;
int mx_daemon_follow_cluster_map(struct mx_bus *bus, const struct mx_config *config,
                                 const char *path, struct mx_daemon_shard *shards, size_t n,
                                 struct mx_clustermap **map_r, char **error_r);

/* mx_daemon_on_signals - SIGTERM and SIGINT end the loop (event_base_loopexit
 * after the current callbacks); SIGPIPE is ignored. */
void mx_daemon_on_signals(struct event_base *base);
/* mx_daemon_signals_free - release those events (before event_base_free). */
void mx_daemon_signals_free(void);

/* mx_daemon_drop_privileges - setgid/setuid to user (if non-empty and we
 * are root). -1 with error_r (heap) if the user is unknown or it fails. */
int mx_daemon_drop_privileges(const char *user, char **error_r);

#endif
