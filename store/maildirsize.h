/* maildirsize - the Maildir++ quota file (Courier's README.maildirquota,
 * as Courier, maildrop, Exim and Dovecot read and write it).
 *
 * ROOT/maildirsize:
 *   line 1     quota definition: "<bytes>S,<count>C", either part may be
 *              absent, 0 = no limit ("104857600S,10000C", "0S")
 *   lines 2..  "<bytes> <count>" deltas, either may be negative, any
 *              whitespace around them (Courier pads to 12 columns); the
 *              usage is the sum of all of them
 *
 * Writers: every delivery appends "+size 1", every expunge "-size -1", each
 * with one write() on an O_APPEND descriptor, so concurrent appenders in
 * other processes never interleave within a line. The file is never edited:
 * a recalculation scans new/ and cur/ of the root and of every ".Folder"
 * (size from ,S= in the name, else stat), writes "quota\nbytes count\n" to
 * tmp/, fsyncs it and renames it over maildirsize.
 *
 * When to recalculate (the spec's rule, which Dovecot follows too): the file
 * is missing, unreadable or malformed, or at least 5120 bytes long; or the
 * sums say "over quota" and the file has more than one delta line or is at
 * least 15 minutes old (so a user who deleted mail with a non-Maildir++
 * tool is unblocked within 15 minutes, while a mailbox under quota is not
 * rescanned just because its file is old). We also recalculate when the
 * caller's limits differ from the file's first line (LDAP changed them).
 *
 * Deliberate difference from Courier: everything counts, Trash and
 * T-flagged messages included (Dovecot's default; a limit means disk). */
#ifndef MAILDIRSIZE_H
#define MAILDIRSIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "maildir.h"

#define MAILDIRSIZE_FILENAME "maildirsize"
#define MAILDIRSIZE_RECALC_SIZE 5120
#define MAILDIRSIZE_STALE_SECS (15 * 60)
#define MAILDIRSIZE_QUOTA_TEXT_SIZE 48

struct maildirsize_quota {
    uint64_t bytes; /* 0 = no limit */
    uint64_t count; /* 0 = no limit */
};

struct maildirsize_usage {
    int64_t bytes;
    int64_t count;
};

struct maildirsize_state {
    bool exists;
    bool quota_valid;   /* first line parsed */
    bool corrupt;       /* a bad line, NUL, unterminated last line, negative sum */
    struct maildirsize_quota quota;
    struct maildirsize_usage usage;
    unsigned lines;     /* delta lines after the definition */
    uint64_t file_size;
    time_t mtime;
};

/* maildirsize_quota_parse - "NS,NC" (either part optional, each at most
 * once); refuses anything else, including an empty definition. */
int maildirsize_quota_parse(const char *s, size_t len, struct maildirsize_quota *quota_r,
                            const char **error_r);
/* maildirsize_quota_format - as Dovecot writes it: "NS" unless only a
 * count limit is set, then ",NC" if a count limit is set; "0S" when there
 * is no limit at all. Returns the length (buf: MAILDIRSIZE_QUOTA_TEXT_SIZE). */
size_t maildirsize_quota_format(const struct maildirsize_quota *quota, char *buf);
/* maildirsize_parse - the contents of a maildirsize file (pure; exists,
 * file_size and mtime are left for the caller). */
void maildirsize_parse(const char *buf, size_t len, struct maildirsize_state *state_r);

/* maildirsize_read - read and parse ROOT/maildirsize; a missing file is
 * not an error (state_r->exists == false). */
int maildirsize_read(struct maildir *md, struct maildirsize_state *state_r,
                     const char **error_r);
/* maildirsize_needs_recalc - the rule above. quota NULL: use the file's. */
bool maildirsize_needs_recalc(const struct maildirsize_state *state,
                              const struct maildirsize_quota *quota, time_t now);
/* maildirsize_append - add one delta line. A missing file is left missing
 * (0 is returned): the next maildirsize_get recalculates it anyway. */
int maildirsize_append(struct maildir *md, int64_t bytes, int64_t count, const char **error_r);
/* maildirsize_recalc - scan the Maildir and rewrite the file atomically
 * with quota as its first line. If a new/ or cur/ changed during the scan
 * the scan is repeated (up to 3 times, then the last result is kept: the
 * error is at most the concurrent changes, fixed by the next recalc). */
int maildirsize_recalc(struct maildir *md, const struct maildirsize_quota *quota,
                       struct maildirsize_usage *usage_r, const char **error_r);
/* maildirsize_get - read, recalculating when the rule says so, and return
 * the state (after a recalc: the new file). quota NULL takes the limits
 * from the file; with no quota and no file, state_r->exists is false and
 * nothing is enforced. recalculated_r may be NULL. */
int maildirsize_get(struct maildir *md, const struct maildirsize_quota *quota, time_t now,
                    struct maildirsize_state *state_r, bool *recalculated_r,
                    const char **error_r);

/* maildirsize_would_exceed - would adding this message go over a limit
 * (strictly more than the limit, as Courier checks)? */
bool maildirsize_would_exceed(const struct maildirsize_quota *quota,
                              const struct maildirsize_usage *usage, uint64_t add_bytes,
                              uint64_t add_count);
/* maildirsize_percent - the larger of bytes and count usage in percent of
 * its limit, rounded down (0 without limits; may exceed 100). Delivery
 * compares it with the 80 / 95 % warning thresholds. */
unsigned maildirsize_percent(const struct maildirsize_quota *quota,
                             const struct maildirsize_usage *usage);

#endif
