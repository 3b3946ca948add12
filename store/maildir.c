/* maildir - Maildir++ operations on one user's mail directory. The rules
 * and guarantees are in maildir.h; the layout in store/README.md. */
#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailbox_name.h"
#include "maildir_private.h"
#include "mx_alloc.h"
#include "mx_log.h"

#define SCRATCH_CREATING "..creating."
#define SCRATCH_DELETED "..deleted."
/* A folder being built by another process looks abandoned after this. */
#define SCRATCH_CREATING_MAX_AGE (60 * 60)
#define REMOVE_TREE_MAX_DEPTH 16

struct maildir {
    int root_fd;
    char *path;
    char hostname[MAILDIR_HOSTNAME_MAX + 1];
    char error[1024];
};

struct maildir_folder {
    struct maildir *md;
    char *name;
    char *dir;         /* "" for INBOX */
    char *path;        /* for messages only */
    int dir_fd;
    int sub_fd[2];     /* indexed by enum maildir_subdir */
    int tmp_fd;
};

struct maildir_save {
    struct maildir_folder *folder;
    int fd;
    char base[MAILDIR_FILENAME_SIZE];
    uint64_t size;
    uint64_t bare_lf;
    bool last_cr;
    bool failed;
};

static const char *const subdir_names[2] = { "new", "cur" };
static atomic_uint_fast64_t name_counter;
static bool force_copy;

/* ---- errors ----------------------------------------------------------- */

static int vfail(struct maildir *md, const char **error_r, int err, int sys, const char *fmt,
                 va_list ap) __attribute__((format(printf, 5, 0)));

static int vfail(struct maildir *md, const char **error_r, int err, int sys, const char *fmt,
                 va_list ap)
{
    int n = vsnprintf(md->error, sizeof md->error, fmt, ap);
    if (sys && n >= 0 && (size_t)n < sizeof md->error)
        snprintf(md->error + n, sizeof md->error - (size_t)n, ": %s", strerror(err));
    *error_r = md->error;
    errno = err;
    return -1;
}

int maildir_fail(struct maildir *md, const char **error_r, int err, int sys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(md, error_r, err, sys, fmt, ap);
    va_end(ap);
    errno = err;
    return -1;
}

int maildir_fsync_fd(struct maildir *md, int fd, const char *what, const char **error_r)
{
    if (fsync(fd) != 0)
        return maildir_fail(md, error_r, errno, 1, "fsync(%s)", what);
    return 0;
}

/* ---- flags and file names -------------------------------------------- */

size_t maildir_flags_format(uint64_t flags, char *buf)
{
    size_t n = 0;
    for (int i = 0; i < 26; i++)
        if (flags & (UINT64_C(1) << i))
            buf[n++] = (char)('A' + i);
    for (int i = 0; i < 26; i++)
        if (flags & (UINT64_C(1) << (26 + i)))
            buf[n++] = (char)('a' + i);
    buf[n] = '\0';
    return n;
}

int maildir_flags_parse(const char *s, size_t len, uint64_t *flags_r)
{
    uint64_t flags = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))
            flags |= MAILDIR_FLAG_BIT(c);
        else
            return -1;
    }
    *flags_r = flags;
    return 0;
}

bool maildir_filename_safe(const char *name)
{
    size_t len = strnlen(name, MAILDIR_FILENAME_SIZE);
    return len > 0 && len < MAILDIR_FILENAME_SIZE && name[0] != '.' &&
           memchr(name, '/', len) == NULL;
}

static bool parse_u64(const char *s, size_t len, uint64_t *v_r)
{
    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *v_r = v;
    return true;
}

/* Crockford base32 as mx_msgid_format writes it: upper case, first digit
 * 0..7. Checked here so a file name never carries anything else. */
static bool msgid_text_valid(const char *s, size_t len)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    if (len != MAILDIR_MSGID_LEN || s[0] < '0' || s[0] > '7')
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
            return false;
    return true;
}

int maildir_filename_parse(const char *name, struct maildir_filename *info_r,
                           const char **error_r)
{
    memset(info_r, 0, sizeof *info_r);
    if (!maildir_filename_safe(name)) {
        *error_r = "unsafe file name (empty, too long, '/' or leading '.')";
        return -1;
    }
    size_t len = strlen(name);
    const char *colon = strchr(name, ':');
    size_t key_len = colon ? (size_t)(colon - name) : len;
    if (colon != NULL) {
        if (colon[1] != '2' || colon[2] != ',') {
            *error_r = "info part is not \":2,\"";
            return -1;
        }
        const char *f = colon + 3;
        if (maildir_flags_parse(f, strlen(f), &info_r->flags) != 0) {
            *error_r = "flags contain a character other than a letter";
            return -1;
        }
        info_r->has_info = true;
    }
    size_t base_len = 0;
    while (base_len < key_len && name[base_len] != ',')
        base_len++;
    if (base_len == 0) {
        *error_r = "empty unique part";
        return -1;
    }
    size_t pos = base_len;
    while (pos < key_len) {
        /* name[pos] == ',' */
        size_t start = pos + 1, end = start;
        while (end < key_len && name[end] != ',')
            end++;
        const char *field = name + start;
        size_t flen = end - start;
        if (flen >= 2 && field[1] == '=') {
            const char *val = field + 2;
            size_t vlen = flen - 2;
            switch (field[0]) {
            case 'S':
                if (info_r->has_size || !parse_u64(val, vlen, &info_r->size)) {
                    *error_r = "malformed or repeated S= field";
                    return -1;
                }
                info_r->has_size = true;
                break;
            case 'W':
                if (info_r->has_vsize || !parse_u64(val, vlen, &info_r->vsize)) {
                    *error_r = "malformed or repeated W= field";
                    return -1;
                }
                info_r->has_vsize = true;
                break;
            case 'X':
                if (info_r->has_id || !msgid_text_valid(val, vlen)) {
                    *error_r = "malformed or repeated X= field";
                    return -1;
                }
                memcpy(info_r->id, val, vlen);
                info_r->id[vlen] = '\0';
                info_r->has_id = true;
                break;
            default:
                break; /* another writer's field: ignored */
            }
        }
        pos = end;
    }
    info_r->base_len = base_len;
    info_r->key_len = key_len;
    return 0;
}

/* build_name - key + optional ":2,flags" into out; -1 if too long. */
static int build_name(const char *key, size_t key_len, bool info, uint64_t flags, char *out)
{
    char ftext[MAILDIR_FLAGS_TEXT_SIZE];
    size_t flen = info ? maildir_flags_format(flags, ftext) : 0;
    size_t total = key_len + (info ? 3 + flen : 0);
    if (total >= MAILDIR_FILENAME_SIZE)
        return -1;
    memmove(out, key, key_len);
    if (info) {
        memcpy(out + key_len, ":2,", 3);
        memcpy(out + key_len + 3, ftext, flen);
    }
    out[total] = '\0';
    return 0;
}

int maildir_filename_set_flags(const char *name, uint64_t flags, char *out,
                               const char **error_r)
{
    struct maildir_filename info;
    if (maildir_filename_parse(name, &info, error_r) != 0)
        return -1;
    if ((flags & ~MAILDIR_FLAGS_ALL) != 0) {
        *error_r = "flag bits outside A-Z a-z";
        return -1;
    }
    if (build_name(name, info.key_len, true, flags, out) != 0) {
        *error_r = "file name with flags would exceed 255 octets";
        return -1;
    }
    return 0;
}

/* ---- unique names ----------------------------------------------------- */

static void set_hostname(struct maildir *md, const char *hostname)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)hostname; *p != '\0'; p++) {
        char enc[5];
        size_t elen;
        if (*p == '/' || *p == ':' || *p == ',' || *p == '\\' || *p <= 0x20 || *p >= 0x7F) {
            snprintf(enc, sizeof enc, "\\%03o", *p);
            elen = 4;
        } else {
            enc[0] = (char)*p;
            elen = 1;
        }
        if (n + elen > MAILDIR_HOSTNAME_MAX)
            break;
        memcpy(md->hostname + n, enc, elen);
        n += elen;
    }
    if (n == 0) {
        memcpy(md->hostname, "localhost", 9);
        n = 9;
    }
    md->hostname[n] = '\0';
}

void maildir_set_hostname(struct maildir *md, const char *hostname)
{
    set_hostname(md, hostname);
}

int maildir_unique_name(struct maildir *md, char *buf, const char **error_r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t q = atomic_fetch_add(&name_counter, 1) + 1;
    uint64_t rnd;
    size_t got = 0;
    while (got < sizeof rnd) {
        ssize_t r = getrandom((char *)&rnd + got, sizeof rnd - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return maildir_fail(md, error_r, errno, 1, "getrandom for a file name in %s",
                                md->path);
        }
        got += (size_t)r;
    }
    int n = snprintf(buf, MAILDIR_FILENAME_SIZE, "%lld.M%06ldP%ldQ%lluR%016llx.%s",
                     (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(),
                     (unsigned long long)q, (unsigned long long)rnd, md->hostname);
    if (n < 0 || n >= MAILDIR_FILENAME_SIZE)
        return maildir_fail(md, error_r, ENAMETOOLONG, 0, "unique name too long in %s",
                            md->path);
    return 0;
}

/* ---- small file-system helpers --------------------------------------- */

/* rename_noreplace - atomic rename that never replaces an existing entry.
 * Falls back to check-then-rename on file systems without
 * RENAME_NOREPLACE (a race there can only collide with names that carry
 * 64 random bits, or with a concurrent folder create of the same name). */
static int rename_noreplace(int ofd, const char *oname, int nfd, const char *nname)
{
    if (renameat2(ofd, oname, nfd, nname, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -1;
    struct stat st;
    if (fstatat(nfd, nname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        errno = EEXIST;
        return -1;
    }
    return renameat(ofd, oname, nfd, nname);
}

static int open_dir_at(int fd, const char *name)
{
    return openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* is_dir_at - entry is a real directory (not a symlink to one). */
static bool is_dir_at(int fd, const char *name)
{
    struct stat st;
    return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* opendir_at - a DIR stream over fd's directory without consuming fd. */
static DIR *opendir_at(int fd)
{
    int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return NULL;
    DIR *d = fdopendir(dfd);
    if (d == NULL)
        close(dfd);
    return d;
}

/* remove_tree - delete name under parent_fd and everything in it, never
 * following a symlink (a symlink is unlinked, not its target). */
static int remove_tree(int parent_fd, const char *name, int depth)
{
    int fd = open_dir_at(parent_fd, name);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == ENOTDIR || errno == ELOOP)
            return unlinkat(parent_fd, name, 0) == 0 || errno == ENOENT ? 0 : -1;
        return -1;
    }
    if (depth >= REMOVE_TREE_MAX_DEPTH) {
        close(fd);
        errno = ELOOP;
        return -1;
    }
    for (int pass = 0; pass < 3; pass++) {
        DIR *d = opendir_at(fd);
        if (d == NULL) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            bool dir = de->d_type == DT_DIR ||
                       (de->d_type == DT_UNKNOWN && is_dir_at(fd, de->d_name));
            int r = dir ? remove_tree(fd, de->d_name, depth + 1) : unlinkat(fd, de->d_name, 0);
            if (r != 0 && errno != ENOENT) {
                int e = errno;
                closedir(d);
                close(fd);
                errno = e;
                return -1;
            }
        }
        closedir(d);
        if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
            close(fd);
            return 0;
        }
        if (errno != ENOTEMPTY && errno != EEXIST)
            break;
    }
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* ---- open / close ----------------------------------------------------- */

static _Thread_local char open_error[1024];

/* open_fail - "<what> <path>: <strerror>" (no handle exists yet). */
static int open_fail(const char **error_r, int err, const char *what, const char *path)
{
    int n = snprintf(open_error, sizeof open_error, "%s %s", what, path);
    if (n >= 0 && (size_t)n < sizeof open_error)
        snprintf(open_error + n, sizeof open_error - (size_t)n, ": %s", strerror(err));
    *error_r = open_error;
    errno = err;
    return -1;
}

/* purge_scratch - finish interrupted folder deletes and drop abandoned
 * folder creations (names no folder can have: they start with ".."). */
static void purge_scratch(struct maildir *md)
{
    DIR *d = opendir_at(md->root_fd);
    if (d == NULL)
        return;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        bool deleted = strncmp(n, SCRATCH_DELETED, strlen(SCRATCH_DELETED)) == 0;
        bool creating = strncmp(n, SCRATCH_CREATING, strlen(SCRATCH_CREATING)) == 0;
        if (!deleted && !creating)
            continue;
        if (creating) {
            struct stat st;
            if (fstatat(md->root_fd, n, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                now - st.st_mtime < SCRATCH_CREATING_MAX_AGE)
                continue;
        }
        if (remove_tree(md->root_fd, n, 0) == 0)
            mx_log(MX_LOG_NOTICE, "maildir.scratch_removed", MX_KV("maildir", md->path),
                   MX_KV("entry", n));
        else
            mx_log(MX_LOG_WARNING, "maildir.scratch_remove_failed", MX_KV("maildir", md->path),
                   MX_KV("entry", n), MX_KVERR(errno));
    }
    closedir(d);
}

int maildir_open(int root_fd, const char *log_path, unsigned flags, struct maildir **md_r,
                 const char **error_r)
{
    int fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return open_fail(error_r, errno, "dup of the root fd of Maildir", log_path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return open_fail(error_r, e, "fstat of Maildir root", log_path);
    }
    if (!S_ISDIR(st.st_mode)) {
        close(fd);
        return open_fail(error_r, ENOTDIR, "Maildir root", log_path);
    }
    bool created = false;
    for (int i = 0; i < 3; i++) {
        static const char *const subs[3] = { "cur", "new", "tmp" };
        if (is_dir_at(fd, subs[i]))
            continue;
        if (!(flags & MAILDIR_OPEN_CREATE)) {
            close(fd);
            return open_fail(error_r, ENOENT, "cur/, new/ or tmp/ missing in Maildir", log_path);
        }
        if (mkdirat(fd, subs[i], 0700) != 0 && errno != EEXIST) {
            int e = errno;
            close(fd);
            return open_fail(error_r, e, "mkdir cur/, new/ or tmp/ in Maildir", log_path);
        }
        created = true;
    }
    if (created && fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return open_fail(error_r, e, "fsync of Maildir root", log_path);
    }
    struct maildir *md = mx_calloc(1, sizeof *md);
    md->root_fd = fd;
    md->path = mx_strdup(log_path);
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    set_hostname(md, host);
    purge_scratch(md);
    *md_r = md;
    return 0;
}

void maildir_close(struct maildir **mdp)
{
    struct maildir *md = *mdp;
    if (md == NULL)
        return;
    close_fd(&md->root_fd);
    free(md->path);
    free(md);
    *mdp = NULL;
}

const char *maildir_path(const struct maildir *md)
{
    return md->path;
}

int maildir_root_fd(const struct maildir *md)
{
    return md->root_fd;
}

void maildir_test_force_copy(bool force)
{
    force_copy = force;
}

/* ---- folders ---------------------------------------------------------- */

/* folder_dir - the directory entry of a canonical name ("" = INBOX). */
static int folder_dir(struct maildir *md, const char *name, char **dir_r, const char **error_r)
{
    const char *why;
    if (mailbox_name_to_dir(name, dir_r, &why) != 0)
        return maildir_fail(md, error_r, strstr(why, "too long") ? ENAMETOOLONG : EINVAL, 0,
                            "mailbox name refused in %s: %s", md->path, why);
    return 0;
}

int maildir_folder_create(struct maildir *md, const char *name, const char **error_r)
{
    char *dir;
    if (folder_dir(md, name, &dir, error_r) != 0)
        return -1;
    int ret = -1, fd = -1;
    char scratch[MAILDIR_FILENAME_SIZE + 16] = "";
    struct stat st;
    if (dir[0] == '\0' || fstatat(md->root_fd, dir, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        maildir_fail(md, error_r, EEXIST, 0, "folder %s/%s already exists", md->path,
                     dir[0] ? dir : "(INBOX)");
        goto out;
    }
    char unique[MAILDIR_FILENAME_SIZE];
    if (maildir_unique_name(md, unique, error_r) != 0)
        goto out;
    snprintf(scratch, sizeof scratch, "%s%.200s", SCRATCH_CREATING, unique);
    if (mkdirat(md->root_fd, scratch, 0700) != 0) {
        maildir_fail(md, error_r, errno, 1, "mkdir(%s/%s)", md->path, scratch);
        scratch[0] = '\0';
        goto out;
    }
    fd = open_dir_at(md->root_fd, scratch);
    if (fd < 0) {
        maildir_fail(md, error_r, errno, 1, "open(%s/%s)", md->path, scratch);
        goto out;
    }
    static const char *const subs[3] = { "cur", "new", "tmp" };
    for (int i = 0; i < 3; i++)
        if (mkdirat(fd, subs[i], 0700) != 0) {
            maildir_fail(md, error_r, errno, 1, "mkdir(%s/%s/%s)", md->path, scratch, subs[i]);
            goto out;
        }
    int mf = openat(fd, "maildirfolder", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                    0600);
    if (mf < 0) {
        maildir_fail(md, error_r, errno, 1, "create(%s/%s/maildirfolder)", md->path, scratch);
        goto out;
    }
    if (fsync(mf) != 0) {
        maildir_fail(md, error_r, errno, 1, "fsync(%s/%s/maildirfolder)", md->path, scratch);
        close(mf);
        goto out;
    }
    close(mf);
    if (maildir_fsync_fd(md, fd, scratch, error_r) != 0)
        goto out;
    if (rename_noreplace(md->root_fd, scratch, md->root_fd, dir) != 0) {
        maildir_fail(md, error_r, errno, 1, "rename(%s/%s -> %s)", md->path, scratch, dir);
        goto out;
    }
    scratch[0] = '\0';
    if (maildir_fsync_fd(md, md->root_fd, md->path, error_r) != 0)
        goto out;
    ret = 0;
out:
    close_fd(&fd);
    if (scratch[0] != '\0') {
        int e = errno;
        (void)remove_tree(md->root_fd, scratch, 0);
        errno = e;
    }
    free(dir);
    return ret;
}

int maildir_folder_delete(struct maildir *md, const char *name, const char **error_r)
{
    if (mailbox_name_is_inbox(name))
        return maildir_fail(md, error_r, EINVAL, 0, "INBOX of %s cannot be deleted", md->path);
    char *dir;
    if (folder_dir(md, name, &dir, error_r) != 0)
        return -1;
    int ret = -1;
    char unique[MAILDIR_FILENAME_SIZE], scratch[MAILDIR_FILENAME_SIZE + 16];
    if (maildir_unique_name(md, unique, error_r) != 0)
        goto out;
    snprintf(scratch, sizeof scratch, "%s%.200s", SCRATCH_DELETED, unique);
    if (rename_noreplace(md->root_fd, dir, md->root_fd, scratch) != 0) {
        maildir_fail(md, error_r, errno, 1, "rename(%s/%s -> %s)", md->path, dir, scratch);
        goto out;
    }
    /* From here the folder is gone for every reader; what follows only
     * reclaims space, and purge_scratch finishes it after a crash. */
    if (maildir_fsync_fd(md, md->root_fd, md->path, error_r) != 0)
        goto out;
    if (remove_tree(md->root_fd, scratch, 0) != 0)
        mx_log(MX_LOG_WARNING, "maildir.folder_remove_incomplete", MX_KV("maildir", md->path),
               MX_KV("entry", scratch), MX_KVERR(errno));
    ret = 0;
out:
    free(dir);
    return ret;
}

struct strvec {
    char **v;
    size_t n, cap;
};

static void strvec_add(struct strvec *sv, char *s)
{
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 16;
        sv->v = mx_reallocarray(sv->v, sv->cap, sizeof *sv->v);
    }
    sv->v[sv->n++] = s;
}

static void strvec_free(struct strvec *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* folder_dirs - every root entry that is a real directory and a canonical
 * folder name, sorted; skipped_r counts dot-directories that are not. */
static int folder_dirs(struct maildir *md, struct strvec *out, size_t *skipped_r,
                       const char **error_r)
{
    DIR *d = opendir_at(md->root_fd);
    if (d == NULL)
        return maildir_fail(md, error_r, errno, 1, "opendir(%s)", md->path);
    size_t skipped = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (n[0] != '.' || n[1] == '\0' || n[1] == '.')
            continue;
        if (de->d_type != DT_DIR && !(de->d_type == DT_UNKNOWN && is_dir_at(md->root_fd, n))) {
            if (de->d_type == DT_LNK) {
                skipped++;
                mx_log(MX_LOG_WARNING, "maildir.folder_skipped", MX_KV("maildir", md->path),
                       MX_KV("entry", n), MX_KV("reason", "symlink"));
            }
            continue; /* a dot-file: Maildir++ readers ignore those */
        }
        char *name;
        const char *why;
        if (mailbox_name_from_dir(n, &name, &why) != 0) {
            skipped++;
            mx_log(MX_LOG_WARNING, "maildir.folder_skipped", MX_KV("maildir", md->path),
                   MX_KV("entry", n), MX_KV("reason", why));
            continue;
        }
        free(name);
        strvec_add(out, mx_strdup(n));
    }
    closedir(d);
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, cmp_str);
    if (skipped_r != NULL)
        *skipped_r = skipped;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct maildir_folder_entry *x = a, *y = b;
    return strcmp(x->name, y->name);
}

int maildir_folder_list(struct maildir *md, struct maildir_folder_list *list_r,
                        const char **error_r)
{
    memset(list_r, 0, sizeof *list_r);
    struct strvec dirs = { 0 };
    if (folder_dirs(md, &dirs, &list_r->skipped, error_r) != 0)
        return -1;
    list_r->entries = mx_calloc(dirs.n + 1, sizeof *list_r->entries);
    list_r->entries[0].name = mx_strdup(MAILBOX_NAME_INBOX);
    list_r->entries[0].dir = mx_strdup("");
    for (size_t i = 0; i < dirs.n; i++) {
        const char *why;
        struct maildir_folder_entry *e = &list_r->entries[i + 1];
        if (mailbox_name_from_dir(dirs.v[i], &e->name, &why) != 0)
            abort(); /* folder_dirs only returns names that map back */
        e->dir = dirs.v[i];
        dirs.v[i] = NULL;
    }
    list_r->count = dirs.n + 1;
    qsort(list_r->entries + 1, dirs.n, sizeof *list_r->entries, cmp_entry);
    strvec_free(&dirs);
    return 0;
}

void maildir_folder_list_free(struct maildir_folder_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->entries[i].name);
        free(list->entries[i].dir);
    }
    free(list->entries);
    memset(list, 0, sizeof *list);
}

int maildir_folder_open(struct maildir *md, const char *name, struct maildir_folder **folder_r,
                        const char **error_r)
{
    char *dir;
    if (folder_dir(md, name, &dir, error_r) != 0)
        return -1;
    struct maildir_folder *f = mx_calloc(1, sizeof *f);
    f->md = md;
    f->name = mx_strdup(name);
    f->dir = dir;
    f->path = dir[0] ? mx_asprintf("%s/%s", md->path, dir) : mx_strdup(md->path);
    f->dir_fd = f->sub_fd[0] = f->sub_fd[1] = f->tmp_fd = -1;
    f->dir_fd = dir[0] ? open_dir_at(md->root_fd, dir)
                       : fcntl(md->root_fd, F_DUPFD_CLOEXEC, 0);
    if (f->dir_fd < 0) {
        maildir_fail(md, error_r, errno == ENOTDIR || errno == ELOOP ? ENOENT : errno, 1,
                     "open folder %s", f->path);
        goto fail;
    }
    static const char *const subs[3] = { "new", "cur", "tmp" };
    int *fds[3] = { &f->sub_fd[0], &f->sub_fd[1], &f->tmp_fd };
    for (int i = 0; i < 3; i++) {
        *fds[i] = open_dir_at(f->dir_fd, subs[i]);
        if (*fds[i] < 0) {
            maildir_fail(md, error_r, errno == ENOTDIR || errno == ELOOP ? ENOENT : errno, 1,
                         "open %s/%s", f->path, subs[i]);
            goto fail;
        }
    }
    *folder_r = f;
    return 0;
fail:;
    int e = errno;
    maildir_folder_close(&f);
    errno = e;
    return -1;
}

void maildir_folder_close(struct maildir_folder **fp)
{
    struct maildir_folder *f = *fp;
    if (f == NULL)
        return;
    close_fd(&f->dir_fd);
    close_fd(&f->sub_fd[0]);
    close_fd(&f->sub_fd[1]);
    close_fd(&f->tmp_fd);
    free(f->name);
    free(f->dir);
    free(f->path);
    free(f);
    *fp = NULL;
}

const char *maildir_folder_name(const struct maildir_folder *folder)
{
    return folder->name;
}

int maildir_folder_fsync(struct maildir_folder *f, const char **error_r)
{
    for (int i = 0; i < 2; i++)
        if (fsync(f->sub_fd[i]) != 0)
            return maildir_fail(f->md, error_r, errno, 1, "fsync(%s/%s)", f->path,
                                subdir_names[i]);
    return 0;
}

/* move_all - rename every message of src's new/ and cur/ into dst, same
 * subdir and name (the INBOX rename). */
static int move_all(struct maildir_folder *src, struct maildir_folder *dst, const char **error_r)
{
    struct maildir *md = src->md;
    for (int s = 0; s < 2; s++) {
        DIR *d = opendir_at(src->sub_fd[s]);
        if (d == NULL)
            return maildir_fail(md, error_r, errno, 1, "opendir(%s/%s)", src->path,
                                subdir_names[s]);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            if (rename_noreplace(src->sub_fd[s], de->d_name, dst->sub_fd[s], de->d_name) != 0 &&
                errno != ENOENT) {
                int e = errno;
                closedir(d);
                return maildir_fail(md, error_r, e, 1, "rename(%s/%s/%s -> %s)", src->path,
                                    subdir_names[s], de->d_name, dst->path);
            }
        }
        closedir(d);
    }
    if (maildir_folder_fsync(dst, error_r) != 0 || maildir_folder_fsync(src, error_r) != 0)
        return -1;
    return 0;
}

static int rename_inbox(struct maildir *md, const char *new_name, const char **error_r)
{
    if (maildir_folder_create(md, new_name, error_r) != 0)
        return -1;
    struct maildir_folder *src = NULL, *dst = NULL;
    int ret = -1;
    if (maildir_folder_open(md, MAILBOX_NAME_INBOX, &src, error_r) == 0 &&
        maildir_folder_open(md, new_name, &dst, error_r) == 0)
        ret = move_all(src, dst, error_r);
    maildir_folder_close(&src);
    maildir_folder_close(&dst);
    return ret;
}

int maildir_folder_rename(struct maildir *md, const char *old_name, const char *new_name,
                          const char **error_r)
{
    char *old_dir = NULL, *new_dir = NULL;
    if (folder_dir(md, old_name, &old_dir, error_r) != 0 ||
        folder_dir(md, new_name, &new_dir, error_r) != 0) {
        free(old_dir);
        return -1;
    }
    int ret = -1;
    struct strvec dirs = { 0 }, sources = { 0 }, targets = { 0 };
    if (mailbox_name_is_inbox(new_name)) {
        maildir_fail(md, error_r, EEXIST, 0, "cannot rename %s/%s to INBOX: INBOX exists",
                     md->path, old_dir);
        goto out;
    }
    if (mailbox_name_is_inbox(old_name)) {
        /* moves messages, not directories: "INBOX/Old" is a fine target */
        ret = rename_inbox(md, new_name, error_r);
        goto out;
    }
    if (strcmp(old_name, new_name) == 0 || mailbox_name_is_descendant(new_name, old_name)) {
        maildir_fail(md, error_r, EINVAL, 0, "cannot rename %s folder \"%s\" to itself or below it",
                     md->path, old_name);
        goto out;
    }
    if (folder_dirs(md, &dirs, NULL, error_r) != 0)
        goto out;
    size_t olen = strlen(old_dir), nlen = strlen(new_dir);
    for (size_t i = 0; i < dirs.n; i++) {
        const char *d = dirs.v[i];
        if (strncmp(d, old_dir, olen) != 0 || (d[olen] != '\0' && d[olen] != '.'))
            continue;
        const char *suffix = d + olen;
        if (nlen + strlen(suffix) > MAILBOX_NAME_DIR_MAX) {
            maildir_fail(md, error_r, ENAMETOOLONG, 0,
                         "renaming %s/%s would give a directory name over 255 octets",
                         md->path, d);
            goto out;
        }
        char *target = mx_asprintf("%s%s", new_dir, suffix);
        struct stat st;
        if (fstatat(md->root_fd, target, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            maildir_fail(md, error_r, EEXIST, 0, "cannot rename %s/%s: %s exists", md->path, d,
                         target);
            free(target);
            goto out;
        }
        strvec_add(&sources, mx_strdup(d));
        strvec_add(&targets, target);
    }
    if (sources.n == 0) {
        maildir_fail(md, error_r, ENOENT, 0, "folder %s/%s does not exist", md->path, old_dir);
        goto out;
    }
    /* sorted order: the folder itself before its children */
    for (size_t i = 0; i < sources.n; i++)
        if (rename_noreplace(md->root_fd, sources.v[i], md->root_fd, targets.v[i]) != 0) {
            maildir_fail(md, error_r, errno, 1,
                         "rename(%s/%s -> %s) after %zu of %zu folders (call again to finish)",
                         md->path, sources.v[i], targets.v[i], i, sources.n);
            goto out;
        }
    if (maildir_fsync_fd(md, md->root_fd, md->path, error_r) != 0)
        goto out;
    ret = 0;
out:;
    int e = errno;
    strvec_free(&dirs);
    strvec_free(&sources);
    strvec_free(&targets);
    free(old_dir);
    free(new_dir);
    errno = e;
    return ret;
}

/* ---- saving ----------------------------------------------------------- */

int maildir_save_begin(struct maildir_folder *f, struct maildir_save **save_r,
                       const char **error_r)
{
    struct maildir_save *save = mx_calloc(1, sizeof *save);
    save->folder = f;
    save->fd = -1;
    for (int attempt = 0; attempt < 5 && save->fd < 0; attempt++) {
        if (maildir_unique_name(f->md, save->base, error_r) != 0) {
            free(save);
            return -1;
        }
        save->fd = openat(f->tmp_fd, save->base,
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (save->fd < 0 && errno != EEXIST)
            break;
    }
    if (save->fd < 0) {
        int e = errno;
        free(save);
        return maildir_fail(f->md, error_r, e, 1, "create in %s/tmp", f->path);
    }
    *save_r = save;
    return 0;
}

/* count_bare_lf - LFs not preceded by CR; prev_cr says whether the byte
 * before data[0] was a CR. */
static uint64_t count_bare_lf(const unsigned char *data, size_t len, bool prev_cr)
{
    uint64_t n = 0;
    const unsigned char *p = data, *end = data + len;
    while (p < end) {
        const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            break;
        bool cr = lf == data ? prev_cr : lf[-1] == '\r';
        if (!cr)
            n++;
        p = lf + 1;
    }
    return n;
}

int maildir_save_write(struct maildir_save *save, const void *data, size_t len,
                       const char **error_r)
{
    struct maildir_folder *f = save->folder;
    if (save->failed)
        return maildir_fail(f->md, error_r, EIO, 0, "earlier write to %s/tmp/%s failed",
                            f->path, save->base);
    if (len == 0)
        return 0;
    save->bare_lf += count_bare_lf(data, len, save->last_cr);
    save->last_cr = ((const unsigned char *)data)[len - 1] == '\r';
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(save->fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            save->failed = true;
            return maildir_fail(f->md, error_r, errno, 1, "write(%s/tmp/%s)", f->path,
                                save->base);
        }
        p += n;
        left -= (size_t)n;
    }
    save->size += len;
    return 0;
}

void maildir_save_abort(struct maildir_save **savep)
{
    struct maildir_save *save = *savep;
    if (save == NULL)
        return;
    close_fd(&save->fd);
    (void)unlinkat(save->folder->tmp_fd, save->base, 0);
    free(save);
    *savep = NULL;
}

static int check_opts(struct maildir *md, const struct maildir_save_opts *opts,
                      const char **error_r)
{
    if (opts->subdir != MAILDIR_NEW && opts->subdir != MAILDIR_CUR)
        return maildir_fail(md, error_r, EINVAL, 0, "invalid subdir for %s", md->path);
    if ((opts->flags & ~MAILDIR_FLAGS_ALL) != 0)
        return maildir_fail(md, error_r, EINVAL, 0, "flag bits outside A-Z a-z");
    if (opts->subdir == MAILDIR_NEW && opts->flags != 0)
        return maildir_fail(md, error_r, EINVAL, 0, "a message with flags belongs in cur/");
    return 0;
}

/* final_name - base + fields + info into out. */
static int final_name(struct maildir *md, const char *base, uint64_t size, bool has_vsize,
                      uint64_t vsize, const char *msgid, const struct maildir_save_opts *opts,
                      char *out, const char **error_r)
{
    char key[MAILDIR_FILENAME_SIZE];
    int n = snprintf(key, sizeof key, "%s,S=%llu", base, (unsigned long long)size);
    if (n >= 0 && (size_t)n < sizeof key && has_vsize)
        n += snprintf(key + n, sizeof key - (size_t)n, ",W=%llu", (unsigned long long)vsize);
    if (n >= 0 && (size_t)n < sizeof key && msgid != NULL)
        n += snprintf(key + n, sizeof key - (size_t)n, ",X=%s", msgid);
    if (n < 0 || (size_t)n >= sizeof key ||
        build_name(key, (size_t)n, opts->subdir == MAILDIR_CUR, opts->flags, out) != 0)
        return maildir_fail(md, error_r, ENAMETOOLONG, 0, "file name too long in %s", md->path);
    return 0;
}

int maildir_save_commit(struct maildir_save **savep, const struct maildir_save_opts *opts,
                        char *name_r, const char **error_r)
{
    struct maildir_save *save = *savep;
    struct maildir_folder *f = save->folder;
    struct maildir *md = f->md;
    int ret = -1;
    char name[MAILDIR_FILENAME_SIZE];

    if (save->failed) {
        maildir_fail(md, error_r, EIO, 0, "earlier write to %s/tmp/%s failed", f->path,
                     save->base);
        goto out;
    }
    if (check_opts(md, opts, error_r) != 0)
        goto out;
    if (opts->msgid != NULL && !msgid_text_valid(opts->msgid, strlen(opts->msgid))) {
        maildir_fail(md, error_r, EINVAL, 0, "message id \"%.40s\" is not a 26-char cluster id",
                     opts->msgid);
        goto out;
    }
    if (final_name(md, save->base, save->size, true, save->size + save->bare_lf, opts->msgid,
                   opts, name, error_r) != 0)
        goto out;
    if (opts->received != 0) {
        struct timespec ts[2] = { { opts->received, 0 }, { opts->received, 0 } };
        if (futimens(save->fd, ts) != 0) {
            maildir_fail(md, error_r, errno, 1, "futimens(%s/tmp/%s)", f->path, save->base);
            goto out;
        }
    }
    if (fsync(save->fd) != 0) {
        maildir_fail(md, error_r, errno, 1, "fsync(%s/tmp/%s)", f->path, save->base);
        goto out;
    }
    int fd = save->fd;
    save->fd = -1;
    if (close(fd) != 0) {
        maildir_fail(md, error_r, errno, 1, "close(%s/tmp/%s)", f->path, save->base);
        goto out;
    }
    int dfd = f->sub_fd[opts->subdir];
    if (rename_noreplace(f->tmp_fd, save->base, dfd, name) != 0) {
        maildir_fail(md, error_r, errno, 1, "rename(%s/tmp/%s -> %s/%s)", f->path, save->base,
                     subdir_names[opts->subdir], name);
        goto out;
    }
    if (!(opts->sync & MAILDIR_NO_DIR_FSYNC) && fsync(dfd) != 0) {
        int e = errno;
        /* Not durable, so not delivered: take it back rather than leave a
         * message nobody was told about (the sender retries). */
        (void)unlinkat(dfd, name, 0);
        maildir_fail(md, error_r, e, 1, "fsync(%s/%s)", f->path, subdir_names[opts->subdir]);
        goto out;
    }
    memcpy(name_r, name, strlen(name) + 1);
    ret = 0;
out:;
    int e = errno;
    maildir_save_abort(savep); /* closes and unlinks tmp/ if still there */
    errno = e;
    return ret;
}

int maildir_deliver(struct maildir_folder *f, const void *data, size_t len,
                    const struct maildir_save_opts *opts, char *name_r, const char **error_r)
{
    struct maildir_save *save;
    if (maildir_save_begin(f, &save, error_r) != 0)
        return -1;
    if (maildir_save_write(save, data, len, error_r) != 0) {
        int e = errno;
        maildir_save_abort(&save);
        errno = e;
        return -1;
    }
    return maildir_save_commit(&save, opts, name_r, error_r);
}

/* ---- messages already in a folder ------------------------------------- */

static int check_message(struct maildir_folder *f, enum maildir_subdir subdir, const char *name,
                         struct maildir_filename *info_r, const char **error_r)
{
    const char *why;
    if (subdir != MAILDIR_NEW && subdir != MAILDIR_CUR)
        return maildir_fail(f->md, error_r, EINVAL, 0, "invalid subdir for %s", f->path);
    if (maildir_filename_parse(name, info_r, &why) != 0)
        return maildir_fail(f->md, error_r, EINVAL, 0, "message file name \"%.255s\" in %s/%s: %s",
                            maildir_filename_safe(name) ? name : "(unsafe)", f->path,
                            subdir_names[subdir], why);
    return 0;
}

int maildir_message_set_flags(struct maildir_folder *f, enum maildir_subdir subdir,
                              const char *name, uint64_t flags, unsigned sync, char *new_name_r,
                              const char **error_r)
{
    struct maildir_filename info;
    if (check_message(f, subdir, name, &info, error_r) != 0)
        return -1;
    if ((flags & ~MAILDIR_FLAGS_ALL) != 0)
        return maildir_fail(f->md, error_r, EINVAL, 0, "flag bits outside A-Z a-z");
    char out[MAILDIR_FILENAME_SIZE];
    if (build_name(name, info.key_len, true, flags, out) != 0)
        return maildir_fail(f->md, error_r, ENAMETOOLONG, 0, "%s/%s/%s with flags is too long",
                            f->path, subdir_names[subdir], name);
    if (subdir == MAILDIR_CUR && strcmp(out, name) == 0) {
        /* nothing to rename, but the caller expects the file to exist */
        struct stat st;
        if (fstatat(f->sub_fd[MAILDIR_CUR], name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            return maildir_fail(f->md, error_r, errno, 1, "stat(%s/cur/%s)", f->path, name);
        memcpy(new_name_r, out, strlen(out) + 1);
        return 0;
    }
    if (rename_noreplace(f->sub_fd[subdir], name, f->sub_fd[MAILDIR_CUR], out) != 0)
        return maildir_fail(f->md, error_r, errno, 1, "rename(%s/%s/%s -> cur/%s)", f->path,
                            subdir_names[subdir], name, out);
    if (!(sync & MAILDIR_NO_DIR_FSYNC) && fsync(f->sub_fd[MAILDIR_CUR]) != 0)
        return maildir_fail(f->md, error_r, errno, 1, "fsync(%s/cur)", f->path);
    memcpy(new_name_r, out, strlen(out) + 1);
    return 0;
}

int maildir_message_expunge(struct maildir_folder *f, enum maildir_subdir subdir,
                            const char *name, unsigned sync, const char **error_r)
{
    struct maildir_filename info;
    if (check_message(f, subdir, name, &info, error_r) != 0)
        return -1;
    if (unlinkat(f->sub_fd[subdir], name, 0) != 0)
        return maildir_fail(f->md, error_r, errno, 1, "unlink(%s/%s/%s)", f->path,
                            subdir_names[subdir], name);
    if (!(sync & MAILDIR_NO_DIR_FSYNC) && fsync(f->sub_fd[subdir]) != 0)
        return maildir_fail(f->md, error_r, errno, 1, "fsync(%s/%s)", f->path,
                            subdir_names[subdir]);
    return 0;
}

/* copy_bytes - the copy() fallback: src file -> dst tmp/ -> dst subdir. */
static int copy_bytes(struct maildir_folder *src, enum maildir_subdir subdir, const char *name,
                      struct maildir_folder *dst, enum maildir_subdir dsub, const char *final,
                      const char **error_r)
{
    struct maildir *md = dst->md;
    int in = openat(src->sub_fd[subdir], name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return maildir_fail(md, error_r, errno, 1, "open(%s/%s/%s)", src->path,
                            subdir_names[subdir], name);
    struct stat st;
    if (fstat(in, &st) != 0) {
        int e = errno;
        close(in);
        return maildir_fail(md, error_r, e, 1, "fstat(%s/%s/%s)", src->path,
                            subdir_names[subdir], name);
    }
    struct maildir_save *save;
    if (maildir_save_begin(dst, &save, error_r) != 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(in);
            maildir_save_abort(&save);
            return maildir_fail(md, error_r, e, 1, "read(%s/%s/%s)", src->path,
                                subdir_names[subdir], name);
        }
        if (n == 0)
            break;
        if (maildir_save_write(save, buf, (size_t)n, error_r) != 0) {
            int e = errno;
            close(in);
            maildir_save_abort(&save);
            errno = e;
            return -1;
        }
    }
    close(in);
    int ret = -1;
    struct timespec ts[2] = { st.st_atim, st.st_mtim };
    if (futimens(save->fd, ts) != 0)
        maildir_fail(md, error_r, errno, 1, "futimens(%s/tmp/%s)", dst->path, save->base);
    else if (fsync(save->fd) != 0)
        maildir_fail(md, error_r, errno, 1, "fsync(%s/tmp/%s)", dst->path, save->base);
    else if (rename_noreplace(dst->tmp_fd, save->base, dst->sub_fd[dsub], final) != 0)
        maildir_fail(md, error_r, errno, 1, "rename(%s/tmp/%s -> %s/%s)", dst->path, save->base,
                     subdir_names[dsub], final);
    else
        ret = 0;
    int e = errno;
    maildir_save_abort(&save); /* tmp/ entry is gone after a successful rename */
    errno = e;
    return ret;
}

int maildir_message_copy(struct maildir_folder *src, enum maildir_subdir subdir,
                         const char *name, struct maildir_folder *dst,
                         const struct maildir_save_opts *opts, char *new_name_r,
                         const char **error_r)
{
    struct maildir *md = dst->md;
    struct maildir_filename info;
    if (check_message(src, subdir, name, &info, error_r) != 0 || check_opts(md, opts, error_r) != 0)
        return -1;
    uint64_t size = info.size;
    if (!info.has_size) {
        struct stat st;
        if (fstatat(src->sub_fd[subdir], name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            return maildir_fail(md, error_r, errno, 1, "stat(%s/%s/%s)", src->path,
                                subdir_names[subdir], name);
        size = (uint64_t)st.st_size;
    }
    char base[MAILDIR_FILENAME_SIZE], final[MAILDIR_FILENAME_SIZE];
    if (maildir_unique_name(md, base, error_r) != 0 ||
        final_name(md, base, size, info.has_vsize, info.vsize, info.has_id ? info.id : NULL, opts,
                   final, error_r) != 0)
        return -1;
    int dfd = dst->sub_fd[opts->subdir];
    bool linked = false;
    if (!force_copy) {
        /* The source was fsynced when it was saved, so linking the same
         * inode under its final name needs no tmp/ step. */
        if (linkat(src->sub_fd[subdir], name, dfd, final, 0) == 0)
            linked = true;
        else if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != ENOTSUP &&
                 errno != EOPNOTSUPP)
            return maildir_fail(md, error_r, errno, 1, "link(%s/%s/%s -> %s/%s/%s)", src->path,
                                subdir_names[subdir], name, dst->path,
                                subdir_names[opts->subdir], final);
    }
    if (!linked && copy_bytes(src, subdir, name, dst, opts->subdir, final, error_r) != 0)
        return -1;
    if (!(opts->sync & MAILDIR_NO_DIR_FSYNC) && fsync(dfd) != 0) {
        int e = errno;
        (void)unlinkat(dfd, final, 0);
        return maildir_fail(md, error_r, e, 1, "fsync(%s/%s)", dst->path,
                            subdir_names[opts->subdir]);
    }
    memcpy(new_name_r, final, strlen(final) + 1);
    return 0;
}

int maildir_message_move(struct maildir_folder *src, enum maildir_subdir subdir,
                         const char *name, struct maildir_folder *dst,
                         const struct maildir_save_opts *opts, char *new_name_r,
                         const char **error_r)
{
    struct maildir *md = dst->md;
    struct maildir_filename info;
    if (check_message(src, subdir, name, &info, error_r) != 0 || check_opts(md, opts, error_r) != 0)
        return -1;
    char out[MAILDIR_FILENAME_SIZE];
    if (build_name(name, info.key_len, opts->subdir == MAILDIR_CUR, opts->flags, out) != 0)
        return maildir_fail(md, error_r, ENAMETOOLONG, 0, "%s/%s/%s with flags is too long",
                            src->path, subdir_names[subdir], name);
    int dfd = dst->sub_fd[opts->subdir];
    if (rename_noreplace(src->sub_fd[subdir], name, dfd, out) != 0)
        return maildir_fail(md, error_r, errno, 1, "rename(%s/%s/%s -> %s/%s/%s)", src->path,
                            subdir_names[subdir], name, dst->path, subdir_names[opts->subdir],
                            out);
    if (!(opts->sync & MAILDIR_NO_DIR_FSYNC)) {
        if (fsync(dfd) != 0)
            return maildir_fail(md, error_r, errno, 1, "fsync(%s/%s)", dst->path,
                                subdir_names[opts->subdir]);
        if (fsync(src->sub_fd[subdir]) != 0)
            return maildir_fail(md, error_r, errno, 1, "fsync(%s/%s)", src->path,
                                subdir_names[subdir]);
    }
    memcpy(new_name_r, out, strlen(out) + 1);
    return 0;
}

int maildir_message_open(struct maildir_folder *f, enum maildir_subdir subdir, const char *name,
                         int *fd_r, const char **error_r)
{
    struct maildir_filename info;
    if (check_message(f, subdir, name, &info, error_r) != 0)
        return -1;
    int fd = openat(f->sub_fd[subdir], name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return maildir_fail(f->md, error_r, errno, 1, "open(%s/%s/%s)", f->path,
                            subdir_names[subdir], name);
    *fd_r = fd;
    return 0;
}

int maildir_message_find(struct maildir_folder *f, const char *key,
                         enum maildir_subdir *subdir_r, char *name_r, const char **error_r)
{
    size_t klen = strlen(key);
    if (!maildir_filename_safe(key) || strchr(key, ':') != NULL)
        return maildir_fail(f->md, error_r, EINVAL, 0, "invalid message key in %s", f->path);
    static const enum maildir_subdir order[2] = { MAILDIR_CUR, MAILDIR_NEW };
    for (int i = 0; i < 2; i++) {
        enum maildir_subdir s = order[i];
        DIR *d = opendir_at(f->sub_fd[s]);
        if (d == NULL)
            return maildir_fail(f->md, error_r, errno, 1, "opendir(%s/%s)", f->path,
                                subdir_names[s]);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            const char *n = de->d_name;
            if (strncmp(n, key, klen) == 0 && (n[klen] == '\0' || n[klen] == ':')) {
                *subdir_r = s;
                memcpy(name_r, n, strlen(n) + 1);
                closedir(d);
                return 0;
            }
        }
        closedir(d);
    }
    return maildir_fail(f->md, error_r, ENOENT, 0, "no message %s in %s", key, f->path);
}

/* ---- scanning --------------------------------------------------------- */

int maildir_scan(struct maildir_folder *f, unsigned scan_flags, maildir_scan_fn *fn, void *ctx,
                 struct maildir_scan_stats *stats_r, const char **error_r)
{
    struct maildir_scan_stats stats = { 0 };
    for (int s = 0; s < 2; s++) {
        DIR *d = opendir_at(f->sub_fd[s]);
        if (d == NULL)
            return maildir_fail(f->md, error_r, errno, 1, "opendir(%s/%s)", f->path,
                                subdir_names[s]);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            struct maildir_scan_entry e = { .subdir = (enum maildir_subdir)s,
                                            .name = de->d_name };
            bool regular = de->d_type == DT_REG;
            bool need_stat = (scan_flags & MAILDIR_SCAN_STAT) || de->d_type == DT_UNKNOWN;
            if (maildir_filename_parse(de->d_name, &e.info, &e.error) == 0 && !e.info.has_size)
                need_stat = true;
            if (need_stat) {
                struct stat st;
                if (fstatat(f->sub_fd[s], de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                    if (errno == ENOENT)
                        continue; /* renamed or expunged meanwhile */
                    int err = errno;
                    closedir(d);
                    return maildir_fail(f->md, error_r, err, 1, "stat(%s/%s/%s)", f->path,
                                        subdir_names[s], de->d_name);
                }
                regular = S_ISREG(st.st_mode);
                e.stated = true;
                e.file_size = (uint64_t)st.st_size;
                e.mtime = st.st_mtim;
            }
            if (!regular && e.error == NULL) {
                e.error = "not a regular file";
                memset(&e.info, 0, sizeof e.info);
            }
            if (e.error != NULL) {
                stats.invalid++;
                mx_log(MX_LOG_WARNING, "maildir.file_skipped", MX_KV("folder", f->path),
                       MX_KV("subdir", subdir_names[s]), MX_KV("file", de->d_name),
                       MX_KV("reason", e.error));
            } else {
                stats.messages++;
                stats.bytes += e.info.has_size ? e.info.size : e.file_size;
            }
            if (fn != NULL && fn(ctx, &e) != 0) {
                closedir(d);
                if (stats_r != NULL)
                    *stats_r = stats;
                return maildir_fail(f->md, error_r, ECANCELED, 0, "scan of %s stopped by caller",
                                    f->path);
            }
        }
        closedir(d);
    }
    if (stats_r != NULL)
        *stats_r = stats;
    return 0;
}

int maildir_tmp_clean(struct maildir_folder *f, time_t now, time_t max_age, maildir_scan_fn *fn,
                      void *ctx, size_t *removed_r, const char **error_r)
{
    size_t removed = 0;
    DIR *d = opendir_at(f->tmp_fd);
    if (d == NULL)
        return maildir_fail(f->md, error_r, errno, 1, "opendir(%s/tmp)", f->path);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(f->tmp_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(st.st_mode))
            continue;
        /* The newest of the three times: a writer still at work updates
         * mtime, and ctime cannot be set back by a client. */
        time_t last = st.st_mtime;
        if (st.st_atime > last)
            last = st.st_atime;
        if (st.st_ctime > last)
            last = st.st_ctime;
        if (now - last <= max_age)
            continue;
        if (unlinkat(f->tmp_fd, de->d_name, 0) != 0) {
            if (errno == ENOENT)
                continue;
            mx_log(MX_LOG_WARNING, "maildir.tmp_remove_failed", MX_KV("folder", f->path),
                   MX_KV("file", de->d_name), MX_KVERR(errno));
            continue;
        }
        removed++;
        mx_log(MX_LOG_NOTICE, "maildir.tmp_removed", MX_KV("folder", f->path),
               MX_KV("file", de->d_name), MX_KVU("size", st.st_size),
               MX_KVI("age", now - last));
        if (fn != NULL) {
            struct maildir_scan_entry e = { .subdir = MAILDIR_NEW, .name = de->d_name,
                                            .stated = true, .file_size = (uint64_t)st.st_size,
                                            .mtime = st.st_mtim };
            (void)fn(ctx, &e);
        }
    }
    closedir(d);
    if (removed_r != NULL)
        *removed_r = removed;
    return 0;
}
