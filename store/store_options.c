/* store_options - every option mx-store reads, with defaults and docs. */
#include "mx_config.h"

/* Declared here rather than in store.h so test_sample_config need not see
 * LMDB headers. */
extern const struct mx_option store_options[];

const struct mx_option store_options[] = {
    { "store", MX_OPT_GROUP, NULL, 0, 0, NULL, "mx-store: Maildir++ mailboxes, index and operation log" },
    { "store.root", MX_OPT_STRING, "\"/var/lib/mxcluster/store\"", 0, 0, NULL,
      "Maildirs live in <root>/<domain>/<local>/, the LMDB index in <root>/.index/" },
    { "store.listen", MX_OPT_STRING, "\"tcp://127.0.0.1:7301\"", 0, 0, NULL,
      "bus endpoint for store requests (delivery appends, IMAP operations)" },
    { "store.publish", MX_OPT_STRING, "\"tcp://127.0.0.1:7311\"", 0, 0, NULL,
      "PUB endpoint for mailbox change events (IMAP IDLE)" },
    { "store.shard", MX_OPT_STRING, "\"shard1\"", 0, 0, NULL,
      "the shard this store serves, as in mxStoreShard" },
    { "store.index_map_size", MX_OPT_SIZE, "\"1G\"", 1048576, 1099511627776LL, NULL,
      "LMDB map size: the largest the index may grow (address space, not disk)" },
    { "store.max_batch", MX_OPT_INT, "256", 1, 100000, NULL,
      "state changes committed together in one index transaction (group commit)" },
    { "store.oplog_keep", MX_OPT_INT, "1000000", 100, 1000000000, NULL,
      "operation log records kept (older ones are deleted); a primary keeps up to 4x for a replica behind, beyond that it sends a snapshot" },
    { "store.ha_control", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "mx-ha's control endpoint on this node; \"\" = no HA: a standalone primary" },
    { "store.pair", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "HA pair name this store reports to mx-ha; \"\" = store.shard" },
    { "store.replication_listen", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "ROUTER where this store receives a primary's replicated records (as a replica)" },
    { "store.replication_mode", MX_OPT_STRING, "\"sync\"", 0, 0, "sync|async",
      "sync: a write is acknowledged once every replica has it durably; async: after the local commit only (LOSSY)" },
    { "store.replication_timeout", MX_OPT_DURATION, "\"2s\"", 10, 600000, NULL,
      "a replica that does not acknowledge in time is reported lost to mx-ha" },
    { "store.ha_lease", MX_OPT_DURATION, "\"3s\"", 100, 600000, NULL,
      "without an answer from mx-ha for this long the store fences itself (stops serving)" },
    { "store.user", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "system user to run as after binding (empty = stay as started)" },
    { NULL, 0, NULL, 0, 0, NULL, NULL },
};
