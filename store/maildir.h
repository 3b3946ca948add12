/* maildir - Maildir++ operations on one user's mail directory.
 *
 * Pure on-disk building blocks for mx-store: no index, no event loop, no
 * ZeroMQ. The index layer (LMDB, operation log) sits on top and decides
 * UIDs, keywords and ordering; this module only guarantees that what it
 * reports as done is on disk.
 *
 * Layout (see store/README.md):
 *   ROOT/{cur,new,tmp}            INBOX
 *   ROOT/maildirsize              quota file (maildirsize.h)
 *   ROOT/.Folder/{cur,new,tmp}    a folder; ROOT/.Folder/maildirfolder
 *   ROOT/.A.B                     folder "A/B" (Maildir++ is flat)
 *   ROOT/..creating.*, ..deleted.*  our own scratch entries, never folders
 * Directory names come only from mailbox_name_to_dir(); message file names
 * only from this module or from a directory listing, and are checked by
 * maildir_filename_safe() before any *at() call. Every open uses
 * O_NOFOLLOW, so a symlink planted in the Maildir is never followed.
 *
 * Message file names:
 *   <sec>.M<usec>P<pid>Q<counter>R<16 hex random>.<host>,S=<size>,W=<vsize>[,X=<id>][:2,<flags>]
 * S= is the exact file size; W= the size with every line ending as CRLF
 * (RFC822.SIZE), both as Dovecot writes them. We store the message bytes
 * exactly as given: mx-inbound's spool holds CRLF, so files are CRLF and
 * S == W, and IMAP can serve a file without conversion. A caller handing
 * LF-only text still gets a correct W (S + number of bare LFs). X= is the
 * 26-character cluster message id (mx_msgid.h), so a reindex can dedup and
 * recover the id of every file. Uniqueness never rests on the clock: pid,
 * a per-process counter and 64 random bits are in every name, and the
 * final rename refuses to replace an existing file.
 *
 * Flags: ":2," followed by the set flags in ASCII order: D F P R S T
 * (draft, flagged, passed, replied, seen, trashed), then keyword letters
 * a..z whose meaning the index keeps. A flag set is a uint64_t with bit
 * (c - 'A') for 'A'..'Z' and bit 26 + (c - 'a') for 'a'..'z'.
 *
 * Durability: a saved message is written to tmp/, fsynced, renamed into
 * new/ or cur/ with RENAME_NOREPLACE, and (unless the caller batches) the
 * directory is fsynced before the call returns. A crash before the rename
 * leaves only a tmp/ file, which no scan reports and maildir_tmp_clean()
 * removes after 36 hours.
 *
 * Errors: functions return 0 / -1; on -1 errno holds the class (ENOENT,
 * EEXIST, EINVAL for a refused name, ENAMETOOLONG, ENOTEMPTY, or the
 * system call's errno) and *error_r a message naming the file and the
 * reason, stored in the maildir handle and valid until the next call on
 * that handle. A handle and its folders are used by one thread at a time. */
#ifndef MAILDIR_H
#define MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define MAILDIR_FILENAME_SIZE 256          /* NAME_MAX + NUL */
#define MAILDIR_HOSTNAME_MAX 48            /* after escaping, see below */
#define MAILDIR_MSGID_LEN 26               /* MX_MSGID_TEXT_LEN */
#define MAILDIR_TMP_MAX_AGE (36 * 60 * 60) /* Maildir convention */

/* ---- flags ------------------------------------------------------------- */

#define MAILDIR_FLAG_BIT(c) \
    ((c) >= 'a' ? (UINT64_C(1) << (26 + ((c) - 'a'))) : (UINT64_C(1) << ((c) - 'A')))
#define MAILDIR_FLAG_DRAFT    MAILDIR_FLAG_BIT('D')
#define MAILDIR_FLAG_FLAGGED  MAILDIR_FLAG_BIT('F')
#define MAILDIR_FLAG_PASSED   MAILDIR_FLAG_BIT('P')
#define MAILDIR_FLAG_REPLIED  MAILDIR_FLAG_BIT('R')
#define MAILDIR_FLAG_SEEN     MAILDIR_FLAG_BIT('S')
#define MAILDIR_FLAG_TRASHED  MAILDIR_FLAG_BIT('T')
/* MAILDIR_KEYWORD - keyword letter i (0..25 = 'a'..'z'). */
#define MAILDIR_KEYWORD(i)    (UINT64_C(1) << (26 + (i)))
#define MAILDIR_FLAGS_ALL     ((UINT64_C(1) << 52) - 1)
#define MAILDIR_FLAGS_TEXT_SIZE 53         /* 52 letters + NUL */

/* maildir_flags_format - letters of flags in ASCII order into buf
 * (MAILDIR_FLAGS_TEXT_SIZE bytes); returns the number of letters. */
size_t maildir_flags_format(uint64_t flags, char *buf);
/* maildir_flags_parse - letters (any order, duplicates allowed, as other
 * Maildir writers may produce) to a set; -1 on any other character. */
int maildir_flags_parse(const char *s, size_t len, uint64_t *flags_r);

/* ---- file names ------------------------------------------------------- */

enum maildir_subdir {
    MAILDIR_NEW = 0,
    MAILDIR_CUR = 1,
};

/* What a message file name says. All pointers/lengths refer to the name
 * that was parsed. key (name up to ':') identifies the message across flag
 * changes and the move from new/ to cur/. */
struct maildir_filename {
    size_t base_len;       /* unique part: up to the first ',' or ':' */
    size_t key_len;        /* up to ':' (whole name if no info part) */
    bool has_size, has_vsize, has_id, has_info;
    uint64_t size;         /* S= */
    uint64_t vsize;        /* W= */
    char id[MAILDIR_MSGID_LEN + 1]; /* X=, "" if absent */
    uint64_t flags;        /* from ":2,"; 0 if no info part */
};

/* maildir_filename_safe - name can be used as one directory entry: 1..255
 * octets, no '/', no NUL, does not start with '.'. */
bool maildir_filename_safe(const char *name);
/* maildir_filename_parse - split a message file name. Refuses unsafe
 * names, an info part other than ":2,<letters>", and malformed or repeated
 * S=, W=, X= fields; other ",K=V" fields (other writers') are ignored. */
int maildir_filename_parse(const char *name, struct maildir_filename *info_r,
                           const char **error_r);
/* maildir_filename_set_flags - name with its info part replaced by
 * ":2,<flags>" into out (MAILDIR_FILENAME_SIZE); -1 if name is not
 * parseable or the result would be too long. Pure string operation. */
int maildir_filename_set_flags(const char *name, uint64_t flags, char *out,
                               const char **error_r);

/* ---- the Maildir ------------------------------------------------------ */

struct maildir;
struct maildir_folder;

#define MAILDIR_OPEN_CREATE 0x1u   /* create cur/ new/ tmp/ in the root */

/* maildir_open - use root_fd (an open directory; duplicated, the caller
 * keeps its own) as a user's Maildir root. log_path is only used in
 * messages and logs. With MAILDIR_OPEN_CREATE missing cur/new/tmp are
 * created and the root fsynced; without it they must exist (ENOENT).
 * Removes leftovers of interrupted folder deletes. On failure *error_r
 * is a thread-local message valid until the next maildir_open. */
int maildir_open(int root_fd, const char *log_path, unsigned flags, struct maildir **md_r,
                 const char **error_r);
void maildir_close(struct maildir **md);
/* maildir_set_hostname - the host part of new file names (default
 * gethostname()); '/', ':', ',' and non-printable octets are written as
 * \ooo (octal, like Dovecot) and the result cut to MAILDIR_HOSTNAME_MAX. */
void maildir_set_hostname(struct maildir *md, const char *hostname);
const char *maildir_path(const struct maildir *md);
int maildir_root_fd(const struct maildir *md);

/* ---- folders (names are canonical UTF-8 IMAP names, mailbox_name.h) --- */

/* maildir_folder_create - make a folder atomically: built under a scratch
 * name (cur/ new/ tmp/ maildirfolder, all fsynced), then renamed into
 * place; EEXIST if it exists (INBOX always does). Parents are not created:
 * in Maildir++ "A" need not exist for "A/B" to exist. */
int maildir_folder_create(struct maildir *md, const char *name, const char **error_r);
/* maildir_folder_delete - remove one folder and its messages (not its
 * children: RFC 3501 6.3.4 leaves inferiors in place). The directory is
 * first renamed to a scratch name and the root fsynced, so the folder
 * disappears atomically; the contents are removed afterwards (and by the
 * next maildir_open if interrupted). INBOX cannot be deleted (EINVAL). */
int maildir_folder_delete(struct maildir *md, const char *name, const char **error_r);
/* maildir_folder_rename - rename a folder and every folder below it
 * (".A" and ".A.B" become ".C" and ".C.B"). Refused before anything moves
 * if a target exists (EEXIST), if new is old or below it (EINVAL), or if
 * neither the folder nor any child exists (ENOENT). Each directory moves
 * atomically with RENAME_NOREPLACE; the set as a whole is not atomic, but
 * calling again after a crash finishes the job (directories already moved
 * are no longer sources). Renaming INBOX (RFC 3501 6.3.5) creates the new
 * folder and moves INBOX's messages into it; INBOX's children stay. */
int maildir_folder_rename(struct maildir *md, const char *old_name, const char *new_name,
                          const char **error_r);

struct maildir_folder_entry {
    char *name; /* canonical IMAP name */
    char *dir;  /* directory entry ("" for INBOX) */
};
struct maildir_folder_list {
    struct maildir_folder_entry *entries; /* INBOX first, then by name */
    size_t count;
    size_t skipped;  /* dot-directories that are not canonical folder names */
};
/* maildir_folder_list - every folder on disk. Directories whose names
 * mailbox_name_from_dir refuses are counted in skipped and logged, never
 * returned. Parents without a directory ("A" when only ".A.B" exists) are
 * not listed; LIST's \NoSelect parents are the index's business. */
int maildir_folder_list(struct maildir *md, struct maildir_folder_list *list_r,
                        const char **error_r);
void maildir_folder_list_free(struct maildir_folder_list *list);

/* maildir_folder_open - open a folder's directories (ENOENT if missing). */
int maildir_folder_open(struct maildir *md, const char *name, struct maildir_folder **folder_r,
                        const char **error_r);
void maildir_folder_close(struct maildir_folder **folder);
const char *maildir_folder_name(const struct maildir_folder *folder);
/* maildir_folder_fsync - fsync new/ and cur/: the group commit for saves
 * and changes made with MAILDIR_NO_DIR_FSYNC. */
int maildir_folder_fsync(struct maildir_folder *folder, const char **error_r);

/* ---- saving a message ------------------------------------------------- */

#define MAILDIR_NO_DIR_FSYNC 0x1u /* caller calls maildir_folder_fsync */

struct maildir_save_opts {
    enum maildir_subdir subdir; /* NEW (flags must be 0) or CUR */
    uint64_t flags;             /* e.g. MAILDIR_FLAG_SEEN for APPEND \Seen */
    const char *msgid;          /* 26-char cluster id (upper case) or NULL */
    time_t received;            /* INTERNALDATE as file mtime; 0 = now */
    unsigned sync;              /* MAILDIR_NO_DIR_FSYNC or 0 */
};

struct maildir_save;

/* maildir_save_begin - create a file in tmp/ to stream a message into. */
int maildir_save_begin(struct maildir_folder *folder, struct maildir_save **save_r,
                       const char **error_r);
int maildir_save_write(struct maildir_save *save, const void *data, size_t len,
                       const char **error_r);
/* maildir_save_commit - fsync the file, set its mtime, rename it into
 * new/ or cur/ under its final name (written to name_r, which must hold
 * MAILDIR_FILENAME_SIZE bytes) and fsync that directory. The save is
 * consumed whatever the result; on failure nothing is left in new/cur. */
int maildir_save_commit(struct maildir_save **save, const struct maildir_save_opts *opts,
                        char *name_r, const char **error_r);
/* maildir_save_abort - drop an unfinished save and its tmp/ file. */
void maildir_save_abort(struct maildir_save **save);
/* maildir_deliver - begin + write + commit of one buffer. */
int maildir_deliver(struct maildir_folder *folder, const void *data, size_t len,
                    const struct maildir_save_opts *opts, char *name_r, const char **error_r);

/* ---- messages already in a folder ------------------------------------ */

/* maildir_message_set_flags - rename the file to carry exactly flags; a
 * file in new/ moves to cur/. new_name_r (MAILDIR_FILENAME_SIZE) gets the
 * new name (in cur/). ENOENT if the file is gone: it may have been renamed
 * by another writer, see maildir_message_find. */
int maildir_message_set_flags(struct maildir_folder *folder, enum maildir_subdir subdir,
                              const char *name, uint64_t flags, unsigned sync,
                              char *new_name_r, const char **error_r);
/* maildir_message_expunge - unlink; ENOENT is reported (the caller decides
 * whether a file already gone is fine). */
int maildir_message_expunge(struct maildir_folder *folder, enum maildir_subdir subdir,
                            const char *name, unsigned sync, const char **error_r);
/* maildir_message_copy - put a copy into dst under a fresh unique name
 * that keeps S=, W=, X= (X= is the same message). link() when possible,
 * otherwise a byte copy through dst's tmp/ with fsync. opts gives dst's
 * subdir, flags and sync; opts->msgid and opts->received are ignored (the
 * copy keeps the source's id and mtime). */
int maildir_message_copy(struct maildir_folder *src, enum maildir_subdir subdir,
                         const char *name, struct maildir_folder *dst,
                         const struct maildir_save_opts *opts, char *new_name_r,
                         const char **error_r);
/* maildir_message_move - rename into dst (same file system by Maildir++
 * rule), keeping the unique part, with opts' subdir and flags. dst's
 * directory is fsynced before src's, so a crash can leave a duplicate
 * (the index dedups by X=) but never lose the message. */
int maildir_message_move(struct maildir_folder *src, enum maildir_subdir subdir,
                         const char *name, struct maildir_folder *dst,
                         const struct maildir_save_opts *opts, char *new_name_r,
                         const char **error_r);
/* maildir_message_open - open for reading (O_RDONLY | O_NOFOLLOW). */
int maildir_message_open(struct maildir_folder *folder, enum maildir_subdir subdir,
                         const char *name, int *fd_r, const char **error_r);
/* maildir_message_find - locate the file whose key (name up to ':')
 * equals key, in cur/ then new/; ENOENT if none. */
int maildir_message_find(struct maildir_folder *folder, const char *key,
                         enum maildir_subdir *subdir_r, char *name_r, const char **error_r);

/* ---- scanning --------------------------------------------------------- */

struct maildir_scan_entry {
    enum maildir_subdir subdir;
    const char *name;
    /* NULL if the name parsed; else why not (info is then zeroed). Such
     * files are reported, never touched: the caller decides. */
    const char *error;
    struct maildir_filename info;
    /* With MAILDIR_SCAN_STAT: from lstat. size == info.size when S= is
     * present and honest. */
    bool stated;
    uint64_t file_size;
    struct timespec mtime; /* INTERNALDATE */
};

#define MAILDIR_SCAN_STAT 0x1u

struct maildir_scan_stats {
    size_t messages;   /* entries with a parseable name */
    size_t invalid;    /* entries reported with error != NULL */
    uint64_t bytes;    /* S= (or the stat size when S= is absent) */
};

/* Return 0 to go on, -1 to stop the scan (maildir_scan then returns -1
 * with errno ECANCELED). e and its strings are valid during the call. */
typedef int maildir_scan_fn(void *ctx, const struct maildir_scan_entry *e);

/* maildir_scan - every entry of new/ then cur/ (readdir order), except
 * names starting with '.'. Non-regular files (directories, symlinks) are
 * reported as invalid. */
int maildir_scan(struct maildir_folder *folder, unsigned scan_flags, maildir_scan_fn *fn,
                 void *ctx, struct maildir_scan_stats *stats_r, const char **error_r);

/* maildir_tmp_clean - remove tmp/ files whose mtime is more than max_age
 * seconds before now (MAILDIR_TMP_MAX_AGE by convention); each removal is
 * logged and, if fn is not NULL, reported as an entry (subdir is NEW and
 * meaningless; file_size and mtime are set). */
int maildir_tmp_clean(struct maildir_folder *folder, time_t now, time_t max_age,
                      maildir_scan_fn *fn, void *ctx, size_t *removed_r, const char **error_r);

/* ---- test hooks: unit tests only ------------------------------------- */

/* maildir_test_force_copy - make maildir_message_copy skip link(). */
void maildir_test_force_copy(bool force);

#endif
