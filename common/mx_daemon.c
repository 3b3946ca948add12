/* mx_daemon - shared start-up for mxcluster daemons. */
#include "mx_daemon.h"

#include <errno.h>
#include <event2/event.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_clustermap.h"
#include "mx_log.h"

static int mx_daemon_facility(const char *name)
{
    static const struct {
        const char *name;
        int facility;
    } facilities[] = {
        { "mail", LOG_MAIL },     { "daemon", LOG_DAEMON }, { "local0", LOG_LOCAL0 },
        { "local1", LOG_LOCAL1 }, { "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 },
        { "local4", LOG_LOCAL4 }, { "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 },
        { "local7", LOG_LOCAL7 },
    };
    for (size_t i = 0; i < sizeof facilities / sizeof facilities[0]; i++)
        if (strcmp(facilities[i].name, name) == 0)
            return facilities[i].facility;
    return LOG_MAIL;
}

struct mx_config *mx_daemon_load_config(int argc, char **argv, const char *role,
                                        const struct mx_option *const *tables)
{
    const char *path = "/etc/mxcluster/mxcluster.conf";
    int check_only = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:th")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = 1; break;
        default:
            fprintf(stderr, "usage: mx-%s [-c config-file] [-t]\n"
                            "  -c FILE  configuration (default /etc/mxcluster/mxcluster.conf)\n"
                            "  -t       check the configuration and exit\n", role);
            exit(opt == 'h' ? 0 : 2);
        }
    }
    struct mx_config *config = NULL;
    char *error = NULL;
    if (mx_config_load(path, tables, &config, &error) < 0) {
        fprintf(stderr, "mx-%s: configuration errors:\n%s\n", role, error);
        free(error);
        exit(1);
    }
    if (check_only) {
        printf("mx-%s: %s: configuration OK\n", role, path);
        exit(0);
    }
    struct mx_config_node root = mx_config_root(config);
    enum mx_log_level level = MX_LOG_INFO;
    (void)mx_log_level_parse(mx_config_string(&root, "log.level"), &level);
    enum mx_log_target target = strcmp(mx_config_string(&root, "log.target"), "syslog") == 0
                                    ? MX_LOG_TO_SYSLOG
                                    : MX_LOG_TO_STDERR;
    mx_log_open(role, mx_config_string(&root, "node.name"), target,
                mx_daemon_facility(mx_config_string(&root, "log.syslog_facility")), level);
    mx_log(MX_LOG_NOTICE, "daemon.config_loaded", MX_KV("config", path));
    return config;
}

int mx_daemon_ldap_config(const struct mx_config *config, struct mx_ldap_config *cfg_r,
                          char **uris_r, char **password_r, char **error_r)
{
    struct mx_config_node root = mx_config_root(config);
    mx_ldap_config_init(cfg_r);
    *uris_r = NULL;
    *password_r = NULL;
    size_t n = mx_config_strings_len(&root, "ldap.uris");
    char *uris = mx_strdup("");
    for (size_t i = 0; i < n; i++) {
        char *more = mx_asprintf("%s%s%s", uris, i ? " " : "",
                                 mx_config_strings_at(&root, "ldap.uris", i));
        free(uris);
        uris = more;
    }
    const char *password_file = mx_config_string(&root, "ldap.bind_password_file");
    if (password_file && *password_file) {
        FILE *fp = fopen(password_file, "r");
        char line[1024];
        if (fp == NULL || fgets(line, sizeof line, fp) == NULL) {
            *error_r = mx_asprintf("ldap.bind_password_file %s: %s", password_file,
                                   fp ? "empty" : strerror(errno));
            if (fp)
                fclose(fp);
            free(uris);
            return -1;
        }
        fclose(fp);
        line[strcspn(line, "\r\n")] = '\0';
        *password_r = mx_strdup(line);
        memset(line, 0, sizeof line);
    }
    cfg_r->uris = uris;
    cfg_r->base_dn = mx_config_string(&root, "ldap.base_dn");
    cfg_r->bind_dn = mx_config_string(&root, "ldap.bind_dn");
    cfg_r->bind_password = *password_r;
    cfg_r->pool_size = (unsigned)mx_config_int(&root, "ldap.pool_size");
    cfg_r->op_timeout_ms = (unsigned)mx_config_duration_ms(&root, "ldap.timeout");
    cfg_r->connect_timeout_ms = (unsigned)mx_config_duration_ms(&root, "ldap.connect_timeout");
    cfg_r->down_backoff_s = (unsigned)((mx_config_duration_ms(&root, "ldap.retry_down_after") + 999) / 1000);
    cfg_r->cache_ttl_s = (unsigned)(mx_config_duration_ms(&root, "ldap.cache_ttl") / 1000);
    cfg_r->cache_negative_ttl_s = (unsigned)(mx_config_duration_ms(&root, "ldap.negative_cache_ttl") / 1000);
    cfg_r->cache_max_entries = (size_t)mx_config_int(&root, "ldap.cache_max_entries");
    *uris_r = uris;
    return 0;
}

struct mx_ldap *mx_daemon_ldap_new(struct event_base *base, const struct mx_config *config,
                                   char **error_r)
{
    struct mx_ldap_config lc;
    char *uris = NULL, *password = NULL;
    if (mx_daemon_ldap_config(config, &lc, &uris, &password, error_r) < 0)
        return NULL;
    const char *ldap_error = NULL;
    struct mx_ldap *ldap = mx_ldap_new(base, &lc, &ldap_error);
    if (password) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    free(uris);
    if (ldap == NULL)
        *error_r = mx_asprintf("ldap: %s", ldap_error);
    return ldap;
}

int mx_daemon_shards_new(struct mx_bus *bus, const struct mx_config *config, const char *path,
                         unsigned timeout_ms, unsigned max_attempts,
                         struct mx_daemon_shard **shards_r, size_t *n_r, char **error_r)
{
    struct mx_config_node root = mx_config_root(config);
    size_t n = mx_config_list_len(&root, path);
    struct mx_daemon_shard *shards = mx_calloc(n ? n : 1, sizeof *shards);
    for (size_t i = 0; i < n; i++) {
        struct mx_config_node node = mx_config_list_elem(&root, path, i);
        size_t n_endpoints = mx_config_strings_len(&node, "endpoints");
        const char **endpoints = mx_calloc(n_endpoints ? n_endpoints : 1, sizeof *endpoints);
        for (size_t j = 0; j < n_endpoints; j++)
            endpoints[j] = mx_config_strings_at(&node, "endpoints", j);
        struct mx_client_config cc = {
            .name = "store",
            .timeout_ms = timeout_ms,
            .max_attempts = max_attempts ? max_attempts
                                         : (unsigned)(n_endpoints > 1 ? n_endpoints : 1),
        };
        shards[i].name = mx_strdup(mx_config_string(&node, "name"));
        const char *bus_error = NULL;
        int bad = mx_client_new(bus, endpoints, n_endpoints, &cc, &shards[i].client, &bus_error);
        free(endpoints);
        if (bad < 0) {
            *error_r = mx_asprintf("store shard %s: %s", shards[i].name, bus_error);
            mx_daemon_shards_free(&shards, i + 1);
            return -1;
        }
    }
    *shards_r = shards;
    *n_r = n;
    return 0;
}

void mx_daemon_shards_free(struct mx_daemon_shard **shardsp, size_t n)
{
    struct mx_daemon_shard *shards = *shardsp;
    if (shards == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        mx_client_free(&shards[i].client);
        free(shards[i].name);
    }
    free(shards);
    *shardsp = NULL;
}

struct mx_daemon_shard *mx_daemon_shard_find(struct mx_daemon_shard *shards, size_t n,
                                             const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(shards[i].name, name) == 0)
            return &shards[i];
    return NULL;
}

static void mx_daemon_on_signal(evutil_socket_t sig, short what, void *arg)
{
    mx_log(MX_LOG_NOTICE, "daemon.stopping", MX_KV("signal", strsignal((int)sig)));
    event_base_loopexit(arg, NULL);
}

struct follow_ctx {
    struct mx_daemon_shard *shards;
    size_t n;
};

static void on_cluster_map(void *ctx, uint64_t epoch, const char *pair, const char *node,
                           const char *endpoint)
{
    struct follow_ctx *f = ctx;
    struct mx_daemon_shard *shard = mx_daemon_shard_find(f->shards, f->n, pair);
    if (shard && mx_client_prefer(shard->client, endpoint) < 0)
        mx_log(MX_LOG_WARNING, "clustermap.unknown_endpoint", MX_KV("shard", pair),
               MX_KV("node", node), MX_KV("endpoint", endpoint),
               MX_KV("hint", "list every store of the shard in its endpoints"));
}

/* The follower's context lives as long as the process (one per daemon). */
static struct follow_ctx follow;

int mx_daemon_follow_cluster_map(struct mx_bus *bus, const struct mx_config *config,
                                 const char *path, struct mx_daemon_shard *shards, size_t n,
                                 struct mx_clustermap **map_r, char **error_r)
{
    struct mx_config_node root = mx_config_root(config);
    size_t n_eps = mx_config_strings_len(&root, path);
    *map_r = NULL;
    if (n_eps == 0)
        return 0;
    const char **eps = mx_calloc(n_eps, sizeof *eps);
    for (size_t i = 0; i < n_eps; i++)
        eps[i] = mx_config_strings_at(&root, path, i);
    follow = (struct follow_ctx){ shards, n };
    const char *error = NULL;
    int rc = mx_clustermap_new(bus, eps, n_eps, on_cluster_map, &follow, map_r, &error);
    free(eps);
    if (rc < 0)
        *error_r = mx_asprintf("%s: %s", path, error);
    return rc;
}

static struct event *signal_events[2];

void mx_daemon_on_signals(struct event_base *base)
{
    signal(SIGPIPE, SIG_IGN);
    signal_events[0] = evsignal_new(base, SIGTERM, mx_daemon_on_signal, base);
    signal_events[1] = evsignal_new(base, SIGINT, mx_daemon_on_signal, base);
    event_add(signal_events[0], NULL);
    event_add(signal_events[1], NULL);
}

void mx_daemon_signals_free(void)
{
    for (size_t i = 0; i < 2; i++) {
        if (signal_events[i])
            event_free(signal_events[i]);
        signal_events[i] = NULL;
    }
}

int mx_daemon_drop_privileges(const char *user, char **error_r)
{
    if (user == NULL || *user == '\0' || geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        *error_r = mx_asprintf("unknown user \"%s\"", user);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        *error_r = mx_asprintf("cannot become user %s: %s", user, strerror(errno));
        return -1;
    }
    mx_log(MX_LOG_NOTICE, "daemon.privileges_dropped", MX_KV("user", user));
    return 0;
}
