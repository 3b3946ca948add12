/* maildir_private - what maildirsize.c needs from maildir.c; not for the
 * daemon. */
#ifndef MAILDIR_PRIVATE_H
#define MAILDIR_PRIVATE_H

#include <stddef.h>

#include "maildir.h"

/* maildir_fail - store the message (and ": strerror(err)" if sys) as the
 * handle's last error, set errno = err and *error_r; returns -1. */
int maildir_fail(struct maildir *md, const char **error_r, int err, int sys, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
/* maildir_unique_name - a fresh unique base name (no S=/W=/X=/info) into
 * buf (MAILDIR_FILENAME_SIZE bytes). */
int maildir_unique_name(struct maildir *md, char *buf, const char **error_r);
/* maildir_fsync_dir - fsync a directory fd, with the path in the error. */
int maildir_fsync_fd(struct maildir *md, int fd, const char *what, const char **error_r);

#endif
