/* mx_spool - a durable spool directory: what is committed survives a crash.
 *
 * Layout: <dir>/tmp/ holds files being written, <dir>/queue/ holds committed
 * ones. The commit rule (the durability promise every "250"/"OK" rests on):
 *   write to tmp/NAME -> fsync(file) -> rename to queue/NAME -> fsync(queue/)
 * A crash before the directory fsync may lose the entry, but then nobody
 * was told it was safe; a crash after it cannot. tmp/ leftovers are removed
 * at open, never half-delivered.
 *
 * Group commit: mx_spool_committer runs the fsyncs on one worker thread.
 * Files handed to it while it is busy form the next batch, which shares one
 * directory fsync, so N concurrent sessions pay ~1 directory sync instead of
 * N. The event loop never blocks on the disk; completion comes back as a
 * callback on the loop.
 *
 * Removing an entry (after the next hop acked) does not fsync the
 * directory: if the removal is lost in a crash, the entry is sent again and
 * the receiver drops it as a duplicate by message id. */
#ifndef MX_SPOOL_H
#define MX_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct mx_spool;

/* A file being written; owned by the caller until committed or aborted. */
struct mx_spool_file {
    struct mx_spool *spool;
    char *name;
    int fd;
    uint64_t size;
};

/* mx_spool_open - create <dir>, tmp/ and queue/ as needed and remove stale
 * tmp/ files (each logged). -1 and error_r (heap, caller frees) on failure. */
int mx_spool_open(const char *dir, struct mx_spool **spool_r, char **error_r);
void mx_spool_close(struct mx_spool **spool);
const char *mx_spool_dir(const struct mx_spool *spool);

/* mx_spool_name_valid - names are [A-Za-z0-9._-]{1,128} without a leading
 * dot, so a name can never point outside the spool. */
int mx_spool_name_valid(const char *name);

/* mx_spool_create - open tmp/NAME exclusively for writing. */
int mx_spool_create(struct mx_spool *spool, const char *name, struct mx_spool_file **file_r,
                    char **error_r);
/* mx_spool_write - append all of data (short writes and EINTR handled). */
int mx_spool_write(struct mx_spool_file *file, const void *data, size_t len, char **error_r);
/* mx_spool_tmp_path - "<dir>/tmp/NAME" of a file being written (for a
 * reader on this node, e.g. the content filter); returns buf. */
char *mx_spool_tmp_path(const struct mx_spool_file *file, char *buf, size_t size);
/* mx_spool_abort - discard an uncommitted file. */
void mx_spool_abort(struct mx_spool_file **file);

/* mx_spool_commit - synchronous commit of one file (tools, tests, start-up).
 * The file is consumed whatever the result. */
int mx_spool_commit(struct mx_spool_file **file, char **error_r);
/* mx_spool_commit_batch - synchronous group commit: fsync every file,
 * rename every file, one fsync per directory. Consumes all files; on error
 * the files not yet renamed are removed and -1 is returned. */
int mx_spool_commit_batch(struct mx_spool_file **files, size_t n, char **error_r);

/* mx_spool_remove - delete a committed entry (ENOENT is not an error). */
int mx_spool_remove(struct mx_spool *spool, const char *name, char **error_r);
/* mx_spool_path - "<dir>/queue/NAME" into buf; returns buf. */
char *mx_spool_path(const struct mx_spool *spool, const char *name, char *buf, size_t size);

/* mx_spool_scan - call fn for every committed entry, in name order (ids
 * are time-ordered, so oldest first). fn returns 0 to go on, -1 to stop. */
typedef int mx_spool_scan_fn(void *ctx, const char *name, const char *path);
int mx_spool_scan(struct mx_spool *spool, mx_spool_scan_fn *fn, void *ctx, char **error_r);

/* ---- asynchronous group commit ------------------------------------------ */

struct mx_spool_committer;
struct mx_spool_commit_req;

/* Called on the event loop: error 0 = committed and durable, else an errno
 * (the file is gone, nothing was committed). name is valid during the call. */
typedef void mx_spool_commit_fn(void *ctx, int error, const char *name);

struct mx_spool_committer *mx_spool_committer_new(struct event_base *base, char **error_r);
/* mx_spool_committer_free - finishes every commit already handed over and
 * reports it (callbacks run inside this call), then stops the worker. */
void mx_spool_committer_free(struct mx_spool_committer **committer);
/* mx_spool_commit_async - hand file over (it belongs to the committer now)
 * and get fn(ctx, ...) once it is durable. The returned handle allows
 * cancelling; it is invalid once fn ran. */
struct mx_spool_commit_req *mx_spool_commit_async(struct mx_spool_committer *committer,
                                                  struct mx_spool_file *file,
                                                  mx_spool_commit_fn *fn, void *ctx);
/* mx_spool_commit_cancel - the caller is going away (SMTP client hung up
 * before the reply): fn is never called, and the entry is removed once
 * committed, since nobody was told it is safe and the client will resend. */
void mx_spool_commit_cancel(struct mx_spool_commit_req **req);
/* mx_spool_committer_hold - test hook: while held, the worker takes no new
 * batch, so a test can queue several files and see them share one. */
void mx_spool_committer_hold(struct mx_spool_committer *committer, int hold);
/* Counters for mon and benchmarks. */
struct mx_spool_committer_stats {
    uint64_t files;
    uint64_t batches;
    uint64_t max_batch;
};
void mx_spool_committer_stats(const struct mx_spool_committer *committer,
                              struct mx_spool_committer_stats *stats_r);

#endif
