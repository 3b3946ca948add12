/* mxctl-store - operator commands on a store's index, run while mx-store
 * is STOPPED (the Maildir is not locked against the daemon's writer):
 *
 *   mxctl-store [-c CONFIG] reindex USER   reconcile USER's index with the
 *       Maildir: files the index lacks are indexed (dedup by X= id), files
 *       gone from disk are expunged, folders the index lost are adopted.
 *       UIDs are kept for every file the index still knows; the Maildir
 *       file names do not carry UIDs (decision: no dovecot-uidlist file,
 *       the LMDB index is the UID list, and the oplog in the same
 *       environment is its history), so a folder whose index records are
 *       gone gets a NEW UIDVALIDITY and fresh UIDs - what IMAP requires
 *       when UIDs cannot be kept.
 *   mxctl-store [-c CONFIG] oplog [FROM]   print "seq type" per log record
 *       (what a replica would receive), from sequence FROM (default 1).
 *
 * (The lead folds this into mxctl later.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_config.h"
#include "mx_log.h"
#include "store.h"

extern const struct mx_option store_options[];

static int print_op(void *ctx, uint64_t seq, const uint8_t *rec, size_t len)
{
    static const char *const names[] = { "?", "append", "flags", "expunge", "mailbox_create",
                                         "mailbox_delete", "mailbox_rename", "mailbox_subscribe",
                                         "subscription" };
    int type = store_oplog_type(rec, len);
    (void)ctx;
    printf("%llu %s %zu\n", (unsigned long long)seq,
           type < 0 || (size_t)type >= sizeof names / sizeof names[0] ? "INVALID" : names[type], len);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = "/etc/mxcluster/mxcluster.conf";
    int opt;
    while ((opt = getopt(argc, argv, "c:")) != -1) {
        if (opt != 'c') {
            fprintf(stderr, "usage: mxctl-store [-c CONFIG] reindex USER | oplog [FROM]\n");
            return 2;
        }
        path = optarg;
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: mxctl-store [-c CONFIG] reindex USER | oplog [FROM]\n");
        return 2;
    }
    static const struct mx_option *const tables[] = { mx_common_options, store_options, NULL };
    struct mx_config *config = NULL;
    char *error = NULL;
    if (mx_config_load(path, tables, &config, &error) < 0) {
        fprintf(stderr, "mxctl-store: %s\n", error);
        free(error);
        return 1;
    }
    mx_log_open("mxctl-store", "", MX_LOG_TO_STDERR, 0, MX_LOG_NOTICE);
    struct mx_config_node root = mx_config_root(config);
    mx_msgid_init((uint16_t)mx_config_int(&root, "node.id"));
    struct store *st = NULL;
    int rc = 1;
    if (store_open(mx_config_string(&root, "store.root"),
                   (size_t)mx_config_size(&root, "store.index_map_size"), &st, &error) < 0) {
        fprintf(stderr, "mxctl-store: %s\n", error);
    } else if (strcmp(argv[optind], "reindex") == 0 && optind + 1 < argc) {
        struct store_recover_stats s;
        if (store_recover_user(st, argv[optind + 1], &s, &error) < 0) {
            fprintf(stderr, "mxctl-store: reindex %s: %s\n", argv[optind + 1], error);
        } else {
            printf("reindexed %s: mailboxes=%zu adopted_mailboxes=%zu indexed_files=%zu "
                   "expunged_missing=%zu removed_tombstoned=%zu duplicates_left=%zu\n",
                   argv[optind + 1], s.mailboxes, s.mailboxes_adopted, s.orphans_indexed,
                   s.missing_expunged, s.tombstones_removed, s.duplicates_skipped);
            rc = 0;
        }
    } else if (strcmp(argv[optind], "oplog") == 0) {
        MDB_txn *txn;
        uint64_t from = optind + 1 < argc ? strtoull(argv[optind + 1], NULL, 10) : 1;
        if (mdb_txn_begin(store_env(st), NULL, MDB_RDONLY, &txn) == 0) {
            rc = store_oplog_foreach(st, txn, from, print_op, NULL) < 0;
            mdb_txn_abort(txn);
        }
    } else {
        fprintf(stderr, "mxctl-store: unknown command %s\n", argv[optind]);
        rc = 2;
    }
    free(error);
    store_close(&st);
    mx_config_free(&config);
    return rc;
}
