/* mx_options_common - options every daemon reads: node, log, ldap, tls, bus.
 * Each role adds its own table (e.g. inbound/inbound_options.c); the sample
 * config deploy/mxcluster.conf sets every option of every table, and a unit
 * test keeps the two in step. */
#include "mx_config.h"

/* Strong AEAD suites only, forward secrecy only (TLS 1.2 list; TLS 1.3
 * suites are all AEAD and use OpenSSL's defaults). */
#define MX_TLS_DEFAULT_CIPHERS \
    "\"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256\""

const struct mx_option mx_common_options[] = {
    { "node", MX_OPT_GROUP, NULL, 0, 0, NULL, "this machine's identity in the cluster" },
    { "node.name", MX_OPT_STRING, "\"node1\"", 0, 0, NULL,
      "node name: unique in the cluster, shown in every log line" },
    { "node.id", MX_OPT_INT, "1", 0, 65535, NULL,
      "node number 0-65535, unique in the cluster: part of every message id" },
    { "node.state_dir", MX_OPT_STRING, "\"/var/lib/mxcluster\"", 0, 0, NULL,
      "where roles keep spools, queues, mailboxes and indexes" },

    { "log", MX_OPT_GROUP, NULL, 0, 0, NULL, "logging" },
    { "log.level", MX_OPT_STRING, "\"info\"", 0, 0, "debug|info|notice|warning|err|crit",
      "lowest level written" },
    { "log.target", MX_OPT_STRING, "\"stderr\"", 0, 0, "stderr|syslog",
      "stderr (for systemd/journald or a supervisor) or syslog" },
    { "log.syslog_facility", MX_OPT_STRING, "\"mail\"", 0, 0,
      "mail|daemon|local0|local1|local2|local3|local4|local5|local6|local7",
      "syslog facility when target is syslog" },

    { "ldap", MX_OPT_GROUP, NULL, 0, 0, NULL, "the account directory" },
    { "ldap.uris", MX_OPT_STRING_LIST, "[ \"ldap://127.0.0.1:389/\" ]", 0, 0, NULL,
      "LDAP servers in order of preference; the next is tried when one is down" },
    { "ldap.base_dn", MX_OPT_STRING, "\"dc=example,dc=test\"", 0, 0, NULL,
      "search base for accounts, aliases, lists and domains" },
    { "ldap.bind_dn", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "service account the daemons bind as; empty = anonymous" },
    { "ldap.bind_password_file", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "file holding the service account's password (first line), readable only by mxcluster" },
    { "ldap.pool_size", MX_OPT_INT, "4", 1, 64, NULL,
      "connections per LDAP server; each carries many concurrent searches" },
    { "ldap.timeout", MX_OPT_DURATION, "\"3s\"", 100, 60000, NULL,
      "a search or bind slower than this counts as 'directory unreachable' (4xx, never 5xx)" },
    { "ldap.connect_timeout", MX_OPT_DURATION, "\"2s\"", 100, 60000, NULL,
      "TCP/TLS connect timeout per server" },
    { "ldap.retry_down_after", MX_OPT_DURATION, "\"10s\"", 100, 3600000, NULL,
      "how long a failed server is skipped before it is tried again" },
    { "ldap.cache_ttl", MX_OPT_DURATION, "\"60s\"", 0, 86400000, NULL,
      "how long a found entry is reused; 0 disables the cache" },
    { "ldap.negative_cache_ttl", MX_OPT_DURATION, "\"15s\"", 0, 86400000, NULL,
      "how long 'no such entry' is reused (unreachable is never cached)" },
    { "ldap.cache_max_entries", MX_OPT_INT, "100000", 0, 100000000, NULL,
      "bound on cached lookups; least recently used go first" },

    { "tls", MX_OPT_GROUP, NULL, 0, 0, NULL, "TLS for every listener and client" },
    { "tls.cert_file", MX_OPT_STRING, "\"/etc/mxcluster/tls/cert.pem\"", 0, 0, NULL,
      "certificate chain (PEM), leaf first" },
    { "tls.key_file", MX_OPT_STRING, "\"/etc/mxcluster/tls/key.pem\"", 0, 0, NULL,
      "private key (PEM)" },
    { "tls.ca_file", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "CA bundle to verify servers we connect to; empty = system default" },
    { "tls.min_version", MX_OPT_STRING, "\"TLSv1.2\"", 0, 0, "TLSv1.2|TLSv1.3",
      "lowest protocol version offered" },
    { "tls.ciphers", MX_OPT_STRING, MX_TLS_DEFAULT_CIPHERS, 0, 0, NULL,
      "TLS 1.2 cipher list (OpenSSL syntax); AEAD + forward secrecy only by default" },
    { "tls.groups", MX_OPT_STRING, "\"X25519:P-256:P-384:ffdhe2048:ffdhe3072\"", 0, 0, NULL,
      "key-exchange groups (ECDHE and RFC 7919 finite-field)" },

    { "bus", MX_OPT_GROUP, NULL, 0, 0, NULL, "ZeroMQ requests between roles" },
    { "bus.request_timeout", MX_OPT_DURATION, "\"5s\"", 10, 600000, NULL,
      "how long to wait for an ack before resending to the next instance" },
    { "bus.max_attempts", MX_OPT_INT, "3", 1, 100, NULL,
      "sends of one request before the caller is told it timed out" },
    { "bus.mon_endpoint", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "mx-mon's event endpoint (e.g. tcp://10.0.0.5:7700); empty = do not publish events" },

    /* Every role reads the same file; each validates only its own group. */
    { "inbound", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-inbound's settings" },
    { "filter", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-filter's settings" },
    { "delivery", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-delivery's settings" },
    { "store", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-store's settings" },
    { "imap", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-imapd's settings" },
    { "ha", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-ha's settings" },
    { "mon", MX_OPT_FOREIGN, NULL, 0, 0, NULL, "mx-mon's settings" },
    { NULL, 0, NULL, 0, 0, NULL, NULL },
};
