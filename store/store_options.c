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
    { "store.user", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "system user to run as after binding (empty = stay as started)" },
    { NULL, 0, NULL, 0, 0, NULL, NULL },
};
