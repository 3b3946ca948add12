/* maildirsize - the Maildir++ quota file. Format and rules: maildirsize.h. */
#include "maildirsize.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir_private.h"
#include "mx_log.h"

#define RECALC_ATTEMPTS 3

/* ---- the format ------------------------------------------------------- */

int maildirsize_quota_parse(const char *s, size_t len, struct maildirsize_quota *quota_r,
                            const char **error_r)
{
    struct maildirsize_quota q = { 0, 0 };
    bool seen_s = false, seen_c = false;
    size_t i = 0;
    if (len == 0) {
        *error_r = "empty quota definition";
        return -1;
    }
    while (i < len) {
        uint64_t v = 0;
        size_t digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            unsigned d = (unsigned)(s[i] - '0');
            if (v > (UINT64_MAX - d) / 10) {
                *error_r = "quota value out of range";
                return -1;
            }
            v = v * 10 + d;
            i++;
            digits++;
        }
        if (digits == 0 || i >= len) {
            *error_r = "quota item is not <digits>S or <digits>C";
            return -1;
        }
        if (s[i] == 'S' && !seen_s) {
            q.bytes = v;
            seen_s = true;
        } else if (s[i] == 'C' && !seen_c) {
            q.count = v;
            seen_c = true;
        } else {
            *error_r = "quota item type is not S or C, or is repeated";
            return -1;
        }
        i++;
        if (i < len) {
            if (s[i] != ',' || i + 1 == len) {
                *error_r = "quota items must be separated by one ','";
                return -1;
            }
            i++;
        }
    }
    *quota_r = q;
    return 0;
}

size_t maildirsize_quota_format(const struct maildirsize_quota *q, char *buf)
{
    int n = 0;
    buf[0] = '\0';
    if (q->bytes != 0 || q->count == 0)
        n = snprintf(buf, MAILDIRSIZE_QUOTA_TEXT_SIZE, "%lluS", (unsigned long long)q->bytes);
    if (q->count != 0)
        n += snprintf(buf + n, MAILDIRSIZE_QUOTA_TEXT_SIZE - (size_t)n, "%s%lluC",
                      n > 0 ? "," : "", (unsigned long long)q->count);
    return (size_t)n;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* parse_i64 - optional '-' then digits; advances *pos. */
static bool parse_i64(const char *s, size_t len, size_t *pos, int64_t *v_r)
{
    size_t i = *pos;
    bool neg = false;
    if (i < len && s[i] == '-') {
        neg = true;
        i++;
    }
    size_t start = i;
    uint64_t v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > (uint64_t)INT64_MAX)
            return false;
        i++;
    }
    if (i == start)
        return false;
    *v_r = neg ? -(int64_t)v : (int64_t)v;
    *pos = i;
    return true;
}

/* add_checked - a += b, false on overflow. */
static bool add_checked(int64_t *a, int64_t b)
{
    return !__builtin_add_overflow(*a, b, a);
}

void maildirsize_parse(const char *buf, size_t len, struct maildirsize_state *st)
{
    memset(st, 0, sizeof *st);
    if (memchr(buf, '\0', len) != NULL)
        st->corrupt = true;
    const char *nl = memchr(buf, '\n', len);
    if (nl == NULL) {
        st->corrupt = true;
        return;
    }
    const char *why;
    size_t first_len = (size_t)(nl - buf);
    while (first_len > 0 && is_space(buf[first_len - 1]))
        first_len--;
    if (maildirsize_quota_parse(buf, first_len, &st->quota, &why) == 0)
        st->quota_valid = true;
    else
        st->corrupt = true;
    size_t pos = (size_t)(nl - buf) + 1;
    while (pos < len) {
        const char *end = memchr(buf + pos, '\n', len - pos);
        if (end == NULL) {
            st->corrupt = true; /* unterminated last line: ignored, as Dovecot does */
            break;
        }
        size_t line_end = (size_t)(end - buf);
        size_t i = pos;
        int64_t bytes = 0, count = 0;
        while (i < line_end && is_space(buf[i]))
            i++;
        bool ok = parse_i64(buf, line_end, &i, &bytes);
        size_t gap = i;
        while (i < line_end && is_space(buf[i]))
            i++;
        ok = ok && i > gap && parse_i64(buf, line_end, &i, &count);
        while (i < line_end && is_space(buf[i]))
            i++;
        if (!ok || i != line_end || !add_checked(&st->usage.bytes, bytes) ||
            !add_checked(&st->usage.count, count))
            st->corrupt = true;
        st->lines++;
        pos = line_end + 1;
    }
    if (st->usage.bytes < 0 || st->usage.count < 0)
        st->corrupt = true;
}

/* ---- reading and appending ------------------------------------------- */

int maildirsize_read(struct maildir *md, struct maildirsize_state *st, const char **error_r)
{
    memset(st, 0, sizeof *st);
    int fd = openat(maildir_root_fd(md), MAILDIRSIZE_FILENAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return maildir_fail(md, error_r, errno, 1, "open(%s/" MAILDIRSIZE_FILENAME ")",
                            maildir_path(md));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return maildir_fail(md, error_r, e, 1, "fstat(%s/" MAILDIRSIZE_FILENAME ")",
                            maildir_path(md));
    }
    /* At most the recalculation threshold is read: a bigger file is
     * recalculated anyway, only its first line matters. */
    char buf[MAILDIRSIZE_RECALC_SIZE + 1];
    size_t len = 0;
    while (len < sizeof buf) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return maildir_fail(md, error_r, e, 1, "read(%s/" MAILDIRSIZE_FILENAME ")",
                                maildir_path(md));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    maildirsize_parse(buf, len, st);
    st->exists = true;
    st->file_size = len > (size_t)sb.st_size ? len : (uint64_t)sb.st_size;
    st->mtime = sb.st_mtime;
    return 0;
}

static bool over_quota(const struct maildirsize_quota *q, const struct maildirsize_usage *u)
{
    return (q->bytes != 0 && u->bytes > 0 && (uint64_t)u->bytes > q->bytes) ||
           (q->count != 0 && u->count > 0 && (uint64_t)u->count > q->count);
}

bool maildirsize_needs_recalc(const struct maildirsize_state *st,
                              const struct maildirsize_quota *quota, time_t now)
{
    if (!st->exists || st->corrupt || !st->quota_valid ||
        st->file_size >= MAILDIRSIZE_RECALC_SIZE)
        return true;
    if (quota != NULL && (quota->bytes != st->quota.bytes || quota->count != st->quota.count))
        return true;
    if (over_quota(&st->quota, &st->usage) &&
        (st->lines > 1 || now - st->mtime >= MAILDIRSIZE_STALE_SECS))
        return true;
    return false;
}

int maildirsize_append(struct maildir *md, int64_t bytes, int64_t count, const char **error_r)
{
    int fd = openat(maildir_root_fd(md), MAILDIRSIZE_FILENAME,
                    O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return maildir_fail(md, error_r, errno, 1, "open(%s/" MAILDIRSIZE_FILENAME ")",
                            maildir_path(md));
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%lld %lld\n", (long long)bytes, (long long)count);
    /* One write() per line: with O_APPEND the kernel places it atomically
     * at the end, so lines of concurrent appenders never mix. */
    ssize_t w;
    do {
        w = write(fd, line, (size_t)n);
    } while (w < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (w < 0)
        return maildir_fail(md, error_r, e, 1, "write(%s/" MAILDIRSIZE_FILENAME ")",
                            maildir_path(md));
    if (w != n)
        return maildir_fail(md, error_r, EIO, 0,
                            "short write to %s/" MAILDIRSIZE_FILENAME " (%zd of %d bytes)",
                            maildir_path(md), w, n);
    return 0;
}

/* ---- recalculation ---------------------------------------------------- */

struct tally {
    int64_t bytes, count;
    struct timespec newest; /* latest mtime of a new/ or cur/ directory */
};

static void note_mtime(struct tally *t, const struct timespec *ts)
{
    if (ts->tv_sec > t->newest.tv_sec ||
        (ts->tv_sec == t->newest.tv_sec && ts->tv_nsec > t->newest.tv_nsec))
        t->newest = *ts;
}

/* size_from_name - ",S=<digits>" followed by ',' ':' or the end, as
 * Dovecot and Courier read it. */
static bool size_from_name(const char *name, uint64_t *size_r)
{
    const char *p = strstr(name, ",S=");
    if (p == NULL)
        return false;
    p += 3;
    uint64_t v = 0;
    const char *start = p;
    while (*p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (p == start || (*p != '\0' && *p != ',' && *p != ':'))
        return false;
    *size_r = v;
    return true;
}

/* tally_dir - add up dir_fd/sub (a missing one counts as empty). */
static int tally_dir(struct maildir *md, int dir_fd, const char *dir, const char *sub,
                     struct tally *t, bool stat_only, const char **error_r)
{
    int fd = openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return 0;
        return maildir_fail(md, error_r, errno, 1, "open(%s/%s/%s)", maildir_path(md), dir, sub);
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0)
        note_mtime(t, &sb.st_mtim);
    if (stat_only) {
        close(fd);
        return 0;
    }
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int e = errno;
        close(fd);
        return maildir_fail(md, error_r, e, 1, "opendir(%s/%s/%s)", maildir_path(md), dir, sub);
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        uint64_t size;
        if (!size_from_name(de->d_name, &size)) {
            struct stat st;
            if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                !S_ISREG(st.st_mode))
                continue; /* gone meanwhile, or not a message */
            size = (uint64_t)st.st_size;
        }
        t->bytes += (int64_t)size;
        t->count++;
    }
    closedir(d);
    return 0;
}

/* tally_all - the root and every ".Folder" (any dot-directory except our
 * "..scratch" entries, canonical name or not: it is mail on disk). */
static int tally_all(struct maildir *md, struct tally *t, bool stat_only, const char **error_r)
{
    int root = maildir_root_fd(md);
    memset(t, 0, sizeof *t);
    if (tally_dir(md, root, ".", "new", t, stat_only, error_r) != 0 ||
        tally_dir(md, root, ".", "cur", t, stat_only, error_r) != 0)
        return -1;
    int rfd = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = rfd < 0 ? NULL : fdopendir(rfd);
    if (d == NULL) {
        int e = errno;
        if (rfd >= 0)
            close(rfd);
        return maildir_fail(md, error_r, e, 1, "opendir(%s)", maildir_path(md));
    }
    struct dirent *de;
    int ret = 0;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (n[0] != '.' || n[1] == '\0' || n[1] == '.')
            continue;
        if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
            continue;
        int fd = openat(root, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue; /* a dot-file, a symlink, or renamed meanwhile */
        ret = tally_dir(md, fd, n, "new", t, stat_only, error_r);
        if (ret == 0)
            ret = tally_dir(md, fd, n, "cur", t, stat_only, error_r);
        close(fd);
        if (ret != 0)
            break;
    }
    closedir(d);
    return ret;
}

/* write_file - the new maildirsize through tmp/ and rename. */
static int write_file(struct maildir *md, const struct maildirsize_quota *quota,
                      const struct tally *t, const char **error_r)
{
    int root = maildir_root_fd(md);
    char unique[MAILDIR_FILENAME_SIZE], tmpname[MAILDIR_FILENAME_SIZE + 32];
    if (maildir_unique_name(md, unique, error_r) != 0)
        return -1;
    snprintf(tmpname, sizeof tmpname, "tmp/%.200s_maildirsize", unique);
    char qtext[MAILDIRSIZE_QUOTA_TEXT_SIZE], text[MAILDIRSIZE_QUOTA_TEXT_SIZE + 64];
    maildirsize_quota_format(quota, qtext);
    int n = snprintf(text, sizeof text, "%s\n%lld %lld\n", qtext, (long long)t->bytes,
                     (long long)t->count);
    int fd = openat(root, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return maildir_fail(md, error_r, errno, 1, "create(%s/%s)", maildir_path(md), tmpname);
    ssize_t w;
    do {
        w = write(fd, text, (size_t)n);
    } while (w < 0 && errno == EINTR);
    int e = w < 0 ? errno : EIO;
    if (w != n || fsync(fd) != 0) {
        if (w == n)
            e = errno;
        close(fd);
        unlinkat(root, tmpname, 0);
        return maildir_fail(md, error_r, e, 1, "write(%s/%s)", maildir_path(md), tmpname);
    }
    close(fd);
    if (renameat(root, tmpname, root, MAILDIRSIZE_FILENAME) != 0) {
        e = errno;
        unlinkat(root, tmpname, 0);
        return maildir_fail(md, error_r, e, 1, "rename(%s/%s -> " MAILDIRSIZE_FILENAME ")",
                            maildir_path(md), tmpname);
    }
    return 0;
}

int maildirsize_recalc(struct maildir *md, const struct maildirsize_quota *quota,
                       struct maildirsize_usage *usage_r, const char **error_r)
{
    struct tally t, after;
    for (int attempt = 1;; attempt++) {
        if (tally_all(md, &t, false, error_r) != 0)
            return -1;
        if (write_file(md, quota, &t, error_r) != 0)
            return -1;
        if (tally_all(md, &after, true, error_r) != 0)
            return -1;
        if (after.newest.tv_sec == t.newest.tv_sec && after.newest.tv_nsec == t.newest.tv_nsec)
            break;
        if (attempt == RECALC_ATTEMPTS) {
            mx_log(MX_LOG_NOTICE, "maildirsize.recalc_raced", MX_KV("maildir", maildir_path(md)),
                   MX_KVI("attempts", attempt));
            break;
        }
    }
    usage_r->bytes = t.bytes;
    usage_r->count = t.count;
    return 0;
}

int maildirsize_get(struct maildir *md, const struct maildirsize_quota *quota, time_t now,
                    struct maildirsize_state *st, bool *recalculated_r, const char **error_r)
{
    if (recalculated_r != NULL)
        *recalculated_r = false;
    if (maildirsize_read(md, st, error_r) != 0)
        return -1;
    if (!maildirsize_needs_recalc(st, quota, now))
        return 0;
    struct maildirsize_quota q;
    if (quota != NULL)
        q = *quota;
    else if (st->quota_valid)
        q = st->quota;
    else
        return 0; /* no limits known anywhere: no quota on this Maildir */
    struct maildirsize_usage usage;
    if (maildirsize_recalc(md, &q, &usage, error_r) != 0)
        return -1;
    memset(st, 0, sizeof *st);
    st->exists = true;
    st->quota_valid = true;
    st->quota = q;
    st->usage = usage;
    st->lines = 1;
    st->mtime = now;
    if (recalculated_r != NULL)
        *recalculated_r = true;
    return 0;
}

/* ---- checks ----------------------------------------------------------- */

bool maildirsize_would_exceed(const struct maildirsize_quota *q,
                              const struct maildirsize_usage *u, uint64_t add_bytes,
                              uint64_t add_count)
{
    uint64_t bytes = u->bytes > 0 ? (uint64_t)u->bytes : 0;
    uint64_t count = u->count > 0 ? (uint64_t)u->count : 0;
    if (q->bytes != 0 && (add_bytes > q->bytes || bytes > q->bytes - add_bytes))
        return true;
    if (q->count != 0 && (add_count > q->count || count > q->count - add_count))
        return true;
    return false;
}

static unsigned percent_of(int64_t used, uint64_t limit)
{
    if (limit == 0 || used <= 0)
        return 0;
    unsigned __int128 p = (unsigned __int128)(uint64_t)used * 100 / limit;
    return p > 100000 ? 100000 : (unsigned)p;
}

unsigned maildirsize_percent(const struct maildirsize_quota *q, const struct maildirsize_usage *u)
{
    unsigned b = percent_of(u->bytes, q->bytes);
    unsigned c = percent_of(u->count, q->count);
    return b > c ? b : c;
}
