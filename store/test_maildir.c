/* test_maildir - Maildir++ folders, delivery, flags, copy/move, scans. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mailbox_name.h"
#include "maildir.h"

#define MSGID "01HZY3V6N9W7Q2K5R8T0X4M6PB"
#define MSGID2 "01HZY3V6N9W7Q2K5R8T0X4M6PC"

struct fx {
    char base[64];      /* /tmp/mx-test-maildir-XXXXXX */
    char user[96];      /* base/user: must stay exactly {Maildir} */
    char root[128];     /* base/user/Maildir */
    int root_fd;
    struct maildir *md;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    snprintf(fx->base, sizeof fx->base, "/tmp/mx-test-maildir-XXXXXX");
    assert_non_null(mkdtemp(fx->base));
    snprintf(fx->user, sizeof fx->user, "%s/user", fx->base);
    snprintf(fx->root, sizeof fx->root, "%s/Maildir", fx->user);
    assert_int_equal(mkdir(fx->user, 0700), 0);
    assert_int_equal(mkdir(fx->root, 0700), 0);
    fx->root_fd = open(fx->root, O_RDONLY | O_DIRECTORY);
    assert_true(fx->root_fd >= 0);
    const char *error = NULL;
    if (maildir_open(fx->root_fd, fx->root, MAILDIR_OPEN_CREATE, &fx->md, &error) != 0)
        fail_msg("%s", error);
    maildir_set_hostname(fx->md, "store1.example.org");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    maildir_close(&fx->md);
    assert_null(fx->md);
    close(fx->root_fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->base);
    assert_int_equal(system(cmd), 0);
    maildir_test_force_copy(false);
    free(fx);
    return 0;
}

/* ---- helpers ----------------------------------------------------------- */

static int count_entries(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int count_entries(const char *fmt, ...)
{
    char path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static bool exists(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool exists(const char *fmt, ...)
{
    char path[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    struct stat st;
    return lstat(path, &st) == 0;
}

static struct maildir_folder *open_folder(struct fx *fx, const char *name)
{
    struct maildir_folder *f = NULL;
    const char *error = NULL;
    if (maildir_folder_open(fx->md, name, &f, &error) != 0)
        fail_msg("open %s: %s", name, error);
    return f;
}

static void create_folder(struct fx *fx, const char *name)
{
    const char *error = NULL;
    if (maildir_folder_create(fx->md, name, &error) != 0)
        fail_msg("create %s: %s", name, error);
}

static void deliver(struct maildir_folder *f, const char *text, enum maildir_subdir subdir,
                    uint64_t flags, const char *msgid, char *name_r)
{
    struct maildir_save_opts opts = { .subdir = subdir, .flags = flags, .msgid = msgid };
    const char *error = NULL;
    if (maildir_deliver(f, text, strlen(text), &opts, name_r, &error) != 0)
        fail_msg("deliver: %s", error);
}

struct collect {
    size_t n;
    char names[64][MAILDIR_FILENAME_SIZE];
    enum maildir_subdir subdirs[64];
    const char *errors[64];
    size_t invalid;
    int stop_after;
};

static int collect_fn(void *ctx, const struct maildir_scan_entry *e)
{
    struct collect *c = ctx;
    if (c->n < 64) {
        snprintf(c->names[c->n], MAILDIR_FILENAME_SIZE, "%s", e->name);
        c->subdirs[c->n] = e->subdir;
        c->errors[c->n] = e->error ? "x" : NULL;
    }
    if (e->error != NULL)
        c->invalid++;
    c->n++;
    if (c->stop_after > 0 && (int)c->n >= c->stop_after)
        return -1;
    return 0;
}

static size_t scan_count(struct maildir_folder *f)
{
    struct maildir_scan_stats stats;
    const char *error = NULL;
    if (maildir_scan(f, 0, NULL, NULL, &stats, &error) != 0)
        fail_msg("scan: %s", error);
    return stats.messages;
}

static char *read_file_at(const char *path, size_t *len_r)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, 1 << 20, fp);
    fclose(fp);
    buf[n] = '\0';
    *len_r = n;
    return buf;
}

/* ---- layout and folders ------------------------------------------------ */

static void test_create_layout(void **state)
{
    struct fx *fx = *state;
    assert_true(exists("%s/cur", fx->root));
    assert_true(exists("%s/new", fx->root));
    assert_true(exists("%s/tmp", fx->root));
    assert_false(exists("%s/maildirfolder", fx->root));

    create_folder(fx, "Sent");
    assert_true(exists("%s/.Sent/cur", fx->root));
    assert_true(exists("%s/.Sent/new", fx->root));
    assert_true(exists("%s/.Sent/tmp", fx->root));
    assert_true(exists("%s/.Sent/maildirfolder", fx->root));

    const char *error = NULL;
    assert_int_equal(maildir_folder_create(fx->md, "Sent", &error), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(maildir_folder_create(fx->md, "INBOX", &error), -1);
    assert_int_equal(errno, EEXIST);

    /* no scratch directory is left behind */
    assert_int_equal(count_entries("%s", fx->root), 4);

    /* reopening without CREATE works; an empty directory does not */
    struct maildir *md2 = NULL;
    assert_int_equal(maildir_open(fx->root_fd, fx->root, 0, &md2, &error), 0);
    maildir_close(&md2);
    int efd = open(fx->user, O_RDONLY | O_DIRECTORY);
    assert_int_equal(maildir_open(efd, fx->user, 0, &md2, &error), -1);
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(error, fx->user));
    close(efd);
}

static void test_list_folders(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "Sent");
    create_folder(fx, "Work/Project");
    create_folder(fx, "INBOX/Sub");
    create_folder(fx, "v1.2");
    struct maildir_folder_list list;
    const char *error = NULL;
    assert_int_equal(maildir_folder_list(fx->md, &list, &error), 0);
    assert_int_equal(list.count, 5);
    assert_int_equal(list.skipped, 0);
    static const char *const names[] = { "INBOX", "INBOX/Sub", "Sent", "Work/Project", "v1.2" };
    static const char *const dirs[] = { "", ".INBOX.Sub", ".Sent", ".Work.Project", ".v1%2E2" };
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(list.entries[i].name, names[i]);
        assert_string_equal(list.entries[i].dir, dirs[i]);
    }
    maildir_folder_list_free(&list);
    assert_null(list.entries);
}

static void test_list_skips_foreign_entries(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "Good");
    char p[512];
    static const char *const junk[] = { ".a%2eb", ".INBOX", ".inbox.x", ".a..b" };
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", fx->root, junk[i]);
        assert_int_equal(mkdir(p, 0700), 0);
    }
    snprintf(p, sizeof p, "%s/.Evil", fx->root);
    assert_int_equal(symlink("/etc", p), 0);
    snprintf(p, sizeof p, "%s/.dotfile", fx->root);
    int fd = open(p, O_CREAT | O_WRONLY, 0600);
    close(fd);

    struct maildir_folder_list list;
    const char *error = NULL;
    assert_int_equal(maildir_folder_list(fx->md, &list, &error), 0);
    assert_int_equal(list.count, 2);
    assert_string_equal(list.entries[1].name, "Good");
    assert_int_equal(list.skipped, 5);
    maildir_folder_list_free(&list);

    /* a symlinked folder is never followed */
    struct maildir_folder *f = NULL;
    assert_int_equal(maildir_folder_open(fx->md, "Evil", &f, &error), -1);
    assert_int_equal(errno, ENOENT);
    assert_null(f);
}

static const char *const hostile[] = {
    "../x", "..", ".", "a/../../etc", "../../../../tmp/pwned", ".hidden", "a/.b", ("a\x01" "b"),
    "/etc/passwd", "a//b", "a/", "x/..", "a\\..\\b", "inbox/../x", "\xc0\xae\xc0\xae/x",
    "a\xc2\x85", "a\x7f",
};

static void test_hostile_names_refused(void **state)
{
    struct fx *fx = *state;
    const char *error = NULL;
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        struct maildir_folder *f = NULL;
        errno = 0;
        assert_int_equal(maildir_folder_create(fx->md, hostile[i], &error), -1);
        assert_int_equal(errno, EINVAL);
        assert_int_equal(maildir_folder_open(fx->md, hostile[i], &f, &error), -1);
        assert_int_equal(maildir_folder_delete(fx->md, hostile[i], &error), -1);
        assert_int_equal(maildir_folder_rename(fx->md, "INBOX", hostile[i], &error), -1);
    }
    /* overlong */
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(maildir_folder_create(fx->md, big, &error), -1);

    /* mUTF-7 smuggling "/.." or "/" through base64 is refused at decode */
    char *u8 = NULL;
    assert_int_equal(mailbox_name_mutf7_decode("a&AC8ALgAu-", 11, &u8, &error), -1);
    assert_int_equal(mailbox_name_mutf7_decode("&AC4ALg-", 8, &u8, &error), -1);

    /* nothing was created anywhere: the Maildir holds cur/new/tmp only and
     * its parent holds only the Maildir */
    assert_int_equal(count_entries("%s", fx->root), 3);
    assert_int_equal(count_entries("%s", fx->user), 1);
    assert_int_equal(count_entries("%s", fx->base), 1);
}

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Property: every valid generated name becomes exactly one directory
 * directly under the root, and listing gives the same names back. */
static void test_property_folders_on_disk(void **state)
{
    struct fx *fx = *state;
    static const char *const pieces[] = { "a", "B", ".", "..", "%", "/", "/", "日本", "😀",
                                          "inbox", "~", "&", " ", "%2E", "x" };
    const char *error = NULL;
    size_t created = 0;
    char *names[400];
    for (size_t iter = 0; iter < 400; iter++) {
        char buf[128];
        size_t len = 0, n = 1 + rng() % 6;
        for (size_t k = 0; k < n; k++) {
            const char *p = pieces[rng() % (sizeof pieces / sizeof pieces[0])];
            memcpy(buf + len, p, strlen(p));
            len += strlen(p);
        }
        char *name = NULL;
        if (mailbox_name_normalize(buf, len, &name, &error) != 0) {
            buf[len] = '\0';
            assert_int_equal(maildir_folder_create(fx->md, buf, &error), -1);
            continue;
        }
        if (mailbox_name_is_inbox(name) || maildir_folder_create(fx->md, name, &error) != 0) {
            assert_true(mailbox_name_is_inbox(name) || errno == EEXIST);
            free(name);
            continue;
        }
        char *dir = NULL;
        assert_int_equal(mailbox_name_to_dir(name, &dir, &error), 0);
        struct stat st;
        assert_int_equal(fstatat(fx->root_fd, dir, &st, AT_SYMLINK_NOFOLLOW), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_true(exists("%s/%s/maildirfolder", fx->root, dir));
        free(dir);
        names[created++] = name;
    }
    assert_true(created > 50);
    struct maildir_folder_list list;
    assert_int_equal(maildir_folder_list(fx->md, &list, &error), 0);
    assert_int_equal(list.count, created + 1);
    assert_int_equal(list.skipped, 0);
    for (size_t i = 0; i < created; i++) {
        bool found = false;
        for (size_t j = 0; j < list.count && !found; j++)
            found = strcmp(list.entries[j].name, names[i]) == 0;
        assert_true(found);
        free(names[i]);
    }
    maildir_folder_list_free(&list);
    assert_int_equal(count_entries("%s", fx->root), (int)(created + 3));
    assert_int_equal(count_entries("%s", fx->user), 1);
    assert_int_equal(count_entries("%s", fx->base), 1);
}

static void test_japanese_folders(void **state)
{
    struct fx *fx = *state;
    static const char *const names[] = { "日本語のフォルダ", "受信トレイ/下書き", "📧 Mail 😀" };
    for (size_t i = 0; i < 3; i++) {
        /* as an IMAP4rev1 client sends it */
        char *m7 = NULL, *u8 = NULL;
        const char *error = NULL;
        assert_int_equal(mailbox_name_mutf7_encode(names[i], strlen(names[i]), &m7, &error), 0);
        assert_int_equal(mailbox_name_mutf7_decode(m7, strlen(m7), &u8, &error), 0);
        create_folder(fx, u8);
        struct maildir_folder *f = open_folder(fx, u8);
        char name[MAILDIR_FILENAME_SIZE];
        deliver(f, "Subject: x\r\n\r\nbody\r\n", MAILDIR_NEW, 0, MSGID, name);
        assert_int_equal(scan_count(f), 1);
        maildir_folder_close(&f);
        free(m7);
        free(u8);
    }
    assert_true(exists("%s/.日本語のフォルダ/new", fx->root));
    assert_true(exists("%s/.受信トレイ.下書き/new", fx->root));
    struct maildir_folder_list list;
    const char *error = NULL;
    assert_int_equal(maildir_folder_list(fx->md, &list, &error), 0);
    assert_int_equal(list.count, 4);
    assert_string_equal(list.entries[1].name, "受信トレイ/下書き");
    maildir_folder_list_free(&list);
}

/* ---- delivery ---------------------------------------------------------- */

static void test_deliver_new_crlf(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    const char *msg = "From: a@example.org\r\nSubject: hi\r\n\r\nline\r\n";
    char name[MAILDIR_FILENAME_SIZE];
    deliver(f, msg, MAILDIR_NEW, 0, MSGID, name);

    struct maildir_filename info;
    const char *error = NULL;
    assert_int_equal(maildir_filename_parse(name, &info, &error), 0);
    assert_true(info.has_size && info.has_vsize && info.has_id);
    assert_int_equal(info.size, strlen(msg));
    assert_int_equal(info.vsize, strlen(msg)); /* CRLF stored: S == W */
    assert_string_equal(info.id, MSGID);
    assert_false(info.has_info);
    assert_null(strchr(name, ':'));
    /* <sec>.M<usec>P<pid>Q<n>R<hex>.<host>,S=..,W=..,X=.. */
    char pidpart[32];
    snprintf(pidpart, sizeof pidpart, "P%ld", (long)getpid());
    assert_non_null(strstr(name, ".M"));
    assert_non_null(strstr(name, pidpart));
    assert_non_null(strstr(name, "Q"));
    assert_non_null(strstr(name, "R"));
    assert_non_null(strstr(name, ".store1.example.org,S="));

    size_t len;
    char path[1024];
    snprintf(path, sizeof path, "%s/new/%s", fx->root, name);
    char *content = read_file_at(path, &len);
    assert_int_equal(len, strlen(msg));
    assert_memory_equal(content, msg, len);
    free(content);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_entries("%s/tmp", fx->root), 0);
    maildir_folder_close(&f);
}

static void test_deliver_vsize_lf(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    /* streamed in pieces, CR at the end of one piece and LF at the start
     * of the next must count as CRLF */
    static const char *const pieces[] = { "a\n", "b\r", "\nc\n\n", "\r", "\n", "d\r\n", "\n" };
    /* bare LFs: a\n, c\n, \n(after c\n), \n (last) = 4 */
    struct maildir_save *save;
    const char *error = NULL;
    assert_int_equal(maildir_save_begin(f, &save, &error), 0);
    size_t total = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        assert_int_equal(maildir_save_write(save, pieces[i], strlen(pieces[i]), &error), 0);
        total += strlen(pieces[i]);
    }
    assert_int_equal(maildir_save_write(save, "", 0, &error), 0);
    char name[MAILDIR_FILENAME_SIZE];
    struct maildir_save_opts opts = { .subdir = MAILDIR_NEW };
    assert_int_equal(maildir_save_commit(&save, &opts, name, &error), 0);
    assert_null(save);
    struct maildir_filename info;
    assert_int_equal(maildir_filename_parse(name, &info, &error), 0);
    assert_int_equal(info.size, total);
    assert_int_equal(info.vsize, total + 4);
    assert_false(info.has_id);
    maildir_folder_close(&f);
}

static void test_deliver_cur_with_flags(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "Sent");
    struct maildir_folder *f = open_folder(fx, "Sent");
    char name[MAILDIR_FILENAME_SIZE];
    deliver(f, "x\r\n", MAILDIR_CUR, MAILDIR_FLAG_SEEN | MAILDIR_FLAG_DRAFT, MSGID, name);
    size_t nlen = strlen(name);
    assert_true(nlen > 5);
    assert_string_equal(name + nlen - 5, ":2,DS");
    assert_true(exists("%s/.Sent/cur/%s", fx->root, name));

    /* APPEND without flags into cur/ gets an empty info part */
    deliver(f, "y\r\n", MAILDIR_CUR, 0, NULL, name);
    assert_string_equal(name + strlen(name) - 3, ":2,");

    /* refused options leave nothing behind */
    const char *error = NULL;
    struct maildir_save_opts bad[] = {
        { .subdir = MAILDIR_NEW, .flags = MAILDIR_FLAG_SEEN },
        { .subdir = MAILDIR_CUR, .msgid = "short" },
        { .subdir = MAILDIR_CUR, .msgid = "01HZY3V6N9W7Q2K5R8T0X4M6P/" },
        { .subdir = MAILDIR_CUR, .msgid = "81HZY3V6N9W7Q2K5R8T0X4M6PB" },
        { .subdir = MAILDIR_CUR, .msgid = "01hzy3v6n9w7q2k5r8t0x4m6pb" },
        { .subdir = MAILDIR_CUR, .flags = UINT64_C(1) << 60 },
        { .subdir = (enum maildir_subdir)7 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        assert_int_equal(maildir_deliver(f, "z", 1, &bad[i], name, &error), -1);
        assert_int_equal(errno, EINVAL);
    }
    assert_int_equal(count_entries("%s/.Sent/tmp", fx->root), 0);
    assert_int_equal(count_entries("%s/.Sent/new", fx->root), 0);
    assert_int_equal(count_entries("%s/.Sent/cur", fx->root), 2);
    maildir_folder_close(&f);
}

static void test_deliver_received_time(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    char name[MAILDIR_FILENAME_SIZE];
    struct maildir_save_opts opts = { .subdir = MAILDIR_NEW, .received = 1000000000 };
    const char *error = NULL;
    assert_int_equal(maildir_deliver(f, "x", 1, &opts, name, &error), 0);
    struct stat st;
    char path[1024];
    snprintf(path, sizeof path, "%s/new/%s", fx->root, name);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mtime, 1000000000);

    struct maildir_scan_stats stats;
    struct collect c = { 0 };
    assert_int_equal(maildir_scan(f, MAILDIR_SCAN_STAT, collect_fn, &c, &stats, &error), 0);
    assert_int_equal(c.n, 1);
    maildir_folder_close(&f);
}

static void test_unique_names(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    enum { N = 300 };
    static char names[N][MAILDIR_FILENAME_SIZE];
    struct maildir_save_opts opts = { .subdir = MAILDIR_NEW, .sync = MAILDIR_NO_DIR_FSYNC };
    const char *error = NULL;
    for (int i = 0; i < N; i++)
        assert_int_equal(maildir_deliver(f, "same\r\n", 6, &opts, names[i], &error), 0);
    assert_int_equal(maildir_folder_fsync(f, &error), 0);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(names[i], names[j]);
    assert_int_equal(count_entries("%s/new", fx->root), N);
    assert_int_equal(scan_count(f), N);
    maildir_folder_close(&f);
}

static void test_hostname_escaped(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    maildir_set_hostname(fx->md, "evil/host:name,x");
    char name[MAILDIR_FILENAME_SIZE];
    deliver(f, "x", MAILDIR_NEW, 0, MSGID, name);
    assert_non_null(strstr(name, ".evil\\057host\\072name\\054x,S=1,W=1,X=" MSGID));
    struct maildir_filename info;
    const char *error = NULL;
    assert_int_equal(maildir_filename_parse(name, &info, &error), 0);
    assert_int_equal(info.size, 1);
    maildir_set_hostname(fx->md, "");
    deliver(f, "x", MAILDIR_NEW, 0, NULL, name);
    assert_non_null(strstr(name, ".localhost,S=1"));
    char longhost[200];
    memset(longhost, 'h', sizeof longhost - 1);
    longhost[sizeof longhost - 1] = '\0';
    maildir_set_hostname(fx->md, longhost);
    deliver(f, "x", MAILDIR_CUR, MAILDIR_FLAGS_ALL, MSGID, name);
    assert_true(strlen(name) < MAILDIR_FILENAME_SIZE);
    maildir_folder_close(&f);
}

/* ---- crash consistency ------------------------------------------------- */

static int report_count;

static int report_fn(void *ctx, const struct maildir_scan_entry *e)
{
    (void)ctx;
    assert_true(e->stated);
    report_count++;
    return 0;
}

static void test_crash_leaves_only_tmp(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct maildir_save *save;
        const char *error = NULL;
        if (maildir_save_begin(f, &save, &error) != 0 ||
            maildir_save_write(save, "half a mess", 11, &error) != 0)
            _exit(2);
        _exit(0); /* "crash" before commit */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    assert_int_equal(count_entries("%s/tmp", fx->root), 1);
    assert_int_equal(scan_count(f), 0);
    const char *error = NULL;
    size_t removed = 99;
    time_t now = time(NULL);
    assert_int_equal(maildir_tmp_clean(f, now, MAILDIR_TMP_MAX_AGE, NULL, NULL, &removed, &error),
                     0);
    assert_int_equal(removed, 0);
    report_count = 0;
    assert_int_equal(maildir_tmp_clean(f, now + MAILDIR_TMP_MAX_AGE + 3600, MAILDIR_TMP_MAX_AGE,
                                       report_fn, NULL, &removed, &error),
                     0);
    assert_int_equal(removed, 1);
    assert_int_equal(report_count, 1);
    assert_int_equal(count_entries("%s/tmp", fx->root), 0);

    /* abort removes its tmp/ file too */
    struct maildir_save *save;
    assert_int_equal(maildir_save_begin(f, &save, &error), 0);
    assert_int_equal(count_entries("%s/tmp", fx->root), 1);
    maildir_save_abort(&save);
    assert_null(save);
    assert_int_equal(count_entries("%s/tmp", fx->root), 0);
    maildir_folder_close(&f);
}

static void test_deliver_visible_after_reopen(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "Archive/2024");
    struct maildir_folder *f = open_folder(fx, "Archive/2024");
    char name[MAILDIR_FILENAME_SIZE];
    deliver(f, "Subject: keep\r\n\r\nme\r\n", MAILDIR_NEW, 0, MSGID2, name);
    maildir_folder_close(&f);
    maildir_close(&fx->md);

    const char *error = NULL;
    int fd = open(fx->root, O_RDONLY | O_DIRECTORY);
    assert_int_equal(maildir_open(fd, fx->root, 0, &fx->md, &error), 0);
    close(fd);
    f = open_folder(fx, "Archive/2024");
    struct collect c = { 0 };
    struct maildir_scan_stats stats;
    assert_int_equal(maildir_scan(f, 0, collect_fn, &c, &stats, &error), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.names[0], name);
    assert_int_equal(stats.bytes, 21);
    maildir_folder_close(&f);
}

/* A child delivers until SIGKILL lands at a random moment: every file in
 * new/ is then complete (its size is its S=, its content is intact). */
static void test_kill9_during_delivery(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        char body[70000];
        for (unsigned i = 0;; i++) {
            size_t len = 1000 + (i * 7919u) % 60000;
            for (size_t k = 0; k < len; k++)
                body[k] = (char)('a' + (k + i) % 26);
            memcpy(body + len - 2, "\r\n", 2);
            struct maildir_save_opts opts = { .subdir = MAILDIR_NEW };
            char name[MAILDIR_FILENAME_SIZE];
            const char *error = NULL;
            struct maildir_save *save;
            if (maildir_save_begin(f, &save, &error) != 0)
                _exit(2);
            for (size_t off = 0; off < len; off += 4096) {
                size_t n = len - off < 4096 ? len - off : 4096;
                if (maildir_save_write(save, body + off, n, &error) != 0)
                    _exit(2);
            }
            if (maildir_save_commit(&save, &opts, name, &error) != 0)
                _exit(2);
            if (i == 2 && write(ready[1], "x", 1) != 1)
                _exit(2);
        }
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    struct timespec ts = { 0, (long)(rng() % 200) * 1000000L };
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));

    char path[1024];
    snprintf(path, sizeof path, "%s/new", fx->root);
    DIR *d = opendir(path);
    struct dirent *de;
    size_t seen = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        struct maildir_filename info;
        const char *error = NULL;
        assert_int_equal(maildir_filename_parse(de->d_name, &info, &error), 0);
        char fp[1400];
        snprintf(fp, sizeof fp, "%s/%s", path, de->d_name);
        size_t len;
        char *content = read_file_at(fp, &len);
        assert_int_equal(len, info.size);
        assert_int_equal(info.vsize, info.size);
        assert_memory_equal(content + len - 2, "\r\n", 2);
        /* the pattern is intact up to the CRLF */
        char first = content[0];
        for (size_t k = 1; k + 2 < len; k++)
            assert_int_equal(content[k], (char)('a' + ((first - 'a') + k) % 26));
        free(content);
        seen++;
    }
    closedir(d);
    assert_true(seen >= 3);
    assert_int_equal(scan_count(f), seen);
    assert_true(count_entries("%s/tmp", fx->root) <= 1);
    maildir_folder_close(&f);
}

/* ---- file names and flags ---------------------------------------------- */

static void test_flags_format_parse(void **state)
{
    (void)state;
    static const struct {
        uint64_t flags;
        const char *text;
    } cases[] = {
        { 0, "" },
        { MAILDIR_FLAG_SEEN, "S" },
        { MAILDIR_FLAG_SEEN | MAILDIR_FLAG_REPLIED, "RS" },
        { MAILDIR_FLAG_DRAFT | MAILDIR_FLAG_FLAGGED | MAILDIR_FLAG_PASSED | MAILDIR_FLAG_REPLIED |
              MAILDIR_FLAG_SEEN | MAILDIR_FLAG_TRASHED,
          "DFPRST" },
        { MAILDIR_FLAG_SEEN | MAILDIR_KEYWORD(0) | MAILDIR_KEYWORD(25), "Saz" },
        { MAILDIR_FLAGS_ALL, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[MAILDIR_FLAGS_TEXT_SIZE];
        assert_int_equal(maildir_flags_format(cases[i].flags, buf), strlen(cases[i].text));
        assert_string_equal(buf, cases[i].text);
        uint64_t back;
        assert_int_equal(maildir_flags_parse(buf, strlen(buf), &back), 0);
        assert_true(back == cases[i].flags);
    }
    uint64_t f;
    assert_int_equal(maildir_flags_parse("zSaS", 4, &f), 0); /* unsorted, repeated */
    assert_true(f == (MAILDIR_FLAG_SEEN | MAILDIR_KEYWORD(0) | MAILDIR_KEYWORD(25)));
    assert_int_equal(maildir_flags_parse("S1", 2, &f), -1);
    assert_int_equal(maildir_flags_parse("S,", 2, &f), -1);
}

static void test_filename_parse_table(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int ok;
        uint64_t size, vsize, flags;
        const char *id;
        size_t base_len, key_len;
    } cases[] = {
        { "1700000000.M1P2Q3R0a.host,S=10,W=12,X=" MSGID ":2,RS", 1, 10, 12,
          MAILDIR_FLAG_SEEN | MAILDIR_FLAG_REPLIED, MSGID, 25, 64 },
        { "1700000000.M1P2.host,S=10,W=12", 1, 10, 12, 0, "", 20, 30 },     /* Dovecot */
        { "1700000000.12345.host", 1, 0, 0, 0, "", 21, 21 },                /* qmail */
        { "1700000000.12345.host:2,", 1, 0, 0, 0, "", 21, 21 },
        { "123.host,S=5,Z=whatever:2,S", 1, 5, 0, MAILDIR_FLAG_SEEN, "", 8, 23 }, /* foreign field */
        { "123.host,,S=5", 1, 5, 0, 0, "", 8, 13 },
        { "", 0, 0, 0, 0, "", 0, 0 },
        { ".hidden", 0, 0, 0, 0, "", 0, 0 },
        { "a/b", 0, 0, 0, 0, "", 0, 0 },
        { "a:1,S", 0, 0, 0, 0, "", 0, 0 },
        { "a:2", 0, 0, 0, 0, "", 0, 0 },
        { "a:2,S1", 0, 0, 0, 0, "", 0, 0 },
        { "a:2,S:2,S", 0, 0, 0, 0, "", 0, 0 },
        { "a,S=abc", 0, 0, 0, 0, "", 0, 0 },
        { "a,S=", 0, 0, 0, 0, "", 0, 0 },
        { "a,S=01", 0, 0, 0, 0, "", 0, 0 },
        { "a,S=1,S=1", 0, 0, 0, 0, "", 0, 0 },
        { "a,W=-1", 0, 0, 0, 0, "", 0, 0 },
        { "a,S=99999999999999999999", 0, 0, 0, 0, "", 0, 0 },
        { "a,X=SHORT", 0, 0, 0, 0, "", 0, 0 },
        { "a,X=" MSGID ",X=" MSGID2, 0, 0, 0, 0, "", 0, 0 },
        { ",S=1", 0, 0, 0, 0, "", 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct maildir_filename info;
        const char *error = NULL;
        int r = maildir_filename_parse(cases[i].name, &info, &error);
        if (!cases[i].ok) {
            if (r == 0)
                fail_msg("case %zu \"%s\" accepted", i, cases[i].name);
            continue;
        }
        if (r != 0)
            fail_msg("case %zu \"%s\": %s", i, cases[i].name, error);
        assert_int_equal(info.size, cases[i].size);
        assert_int_equal(info.vsize, cases[i].vsize);
        assert_true(info.flags == cases[i].flags);
        assert_string_equal(info.id, cases[i].id);
        assert_int_equal(info.base_len, cases[i].base_len);
        assert_int_equal(info.key_len, cases[i].key_len);
    }
    char out[MAILDIR_FILENAME_SIZE];
    const char *error = NULL;
    assert_int_equal(maildir_filename_set_flags("123.h,S=5:2,S", MAILDIR_FLAG_FLAGGED, out,
                                                &error), 0);
    assert_string_equal(out, "123.h,S=5:2,F");
    assert_int_equal(maildir_filename_set_flags("123.h,S=5", MAILDIR_FLAG_SEEN, out, &error), 0);
    assert_string_equal(out, "123.h,S=5:2,S");
    assert_int_equal(maildir_filename_set_flags("a:1,x", 0, out, &error), -1);
    char big[MAILDIR_FILENAME_SIZE];
    memset(big, 'n', 250);
    big[250] = '\0';
    assert_int_equal(maildir_filename_set_flags(big, MAILDIR_FLAGS_ALL, out, &error), -1);
}

static void test_set_flags_round_trip(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    char name[MAILDIR_FILENAME_SIZE], cur[MAILDIR_FILENAME_SIZE], again[MAILDIR_FILENAME_SIZE];
    deliver(f, "m\r\n", MAILDIR_NEW, 0, MSGID, name);
    const char *error = NULL;

    /* new/ -> cur/ with flags */
    assert_int_equal(maildir_message_set_flags(f, MAILDIR_NEW, name,
                                               MAILDIR_FLAG_SEEN | MAILDIR_FLAG_FLAGGED, 0, cur,
                                               &error), 0);
    assert_false(exists("%s/new/%s", fx->root, name));
    assert_true(exists("%s/cur/%s", fx->root, cur));
    assert_int_equal(strncmp(cur, name, strlen(name)), 0);
    assert_string_equal(cur + strlen(name), ":2,FS");

    uint64_t sets[] = { 0, MAILDIR_FLAG_REPLIED | MAILDIR_KEYWORD(3), MAILDIR_FLAGS_ALL,
                        MAILDIR_FLAG_DRAFT | MAILDIR_FLAG_TRASHED };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        assert_int_equal(maildir_message_set_flags(f, MAILDIR_CUR, cur, sets[i],
                                                   MAILDIR_NO_DIR_FSYNC, again, &error), 0);
        struct maildir_filename info;
        assert_int_equal(maildir_filename_parse(again, &info, &error), 0);
        assert_true(info.flags == sets[i]);
        assert_string_equal(info.id, MSGID);
        assert_int_equal(count_entries("%s/cur", fx->root), 1);
        memcpy(cur, again, sizeof cur);
    }
    /* same flags: no rename, same name */
    assert_int_equal(maildir_message_set_flags(f, MAILDIR_CUR, cur, sets[3], 0, again, &error),
                     0);
    assert_string_equal(again, cur);

    /* stale name -> ENOENT; find by key locates the current one */
    assert_int_equal(maildir_message_set_flags(f, MAILDIR_NEW, name, 0, 0, again, &error), -1);
    assert_int_equal(errno, ENOENT);
    enum maildir_subdir sub;
    assert_int_equal(maildir_message_find(f, name, &sub, again, &error), 0);
    assert_int_equal(sub, MAILDIR_CUR);
    assert_string_equal(again, cur);
    assert_int_equal(maildir_message_find(f, "nope", &sub, again, &error), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(maildir_message_find(f, "../x", &sub, again, &error), -1);
    assert_int_equal(errno, EINVAL);

    /* hostile message names are refused before any system call */
    assert_int_equal(maildir_message_set_flags(f, MAILDIR_CUR, "../../x", 0, 0, again, &error),
                     -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(maildir_message_expunge(f, MAILDIR_CUR, ".hidden", 0, &error), -1);
    assert_int_equal(errno, EINVAL);
    maildir_folder_close(&f);
}

static void test_expunge(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    char a[MAILDIR_FILENAME_SIZE], b[MAILDIR_FILENAME_SIZE];
    deliver(f, "a", MAILDIR_NEW, 0, NULL, a);
    deliver(f, "b", MAILDIR_CUR, MAILDIR_FLAG_SEEN, NULL, b);
    const char *error = NULL;
    assert_int_equal(maildir_message_expunge(f, MAILDIR_NEW, a, 0, &error), 0);
    assert_int_equal(maildir_message_expunge(f, MAILDIR_CUR, b, MAILDIR_NO_DIR_FSYNC, &error), 0);
    assert_int_equal(maildir_folder_fsync(f, &error), 0);
    assert_int_equal(scan_count(f), 0);
    assert_int_equal(maildir_message_expunge(f, MAILDIR_NEW, a, 0, &error), -1);
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(error, a));
    maildir_folder_close(&f);
}

static void check_copy(struct fx *fx, bool force)
{
    maildir_test_force_copy(force);
    create_folder(fx, force ? "CopyF" : "CopyL");
    struct maildir_folder *src = open_folder(fx, "INBOX");
    struct maildir_folder *dst = open_folder(fx, force ? "CopyF" : "CopyL");
    char name[MAILDIR_FILENAME_SIZE], copy[MAILDIR_FILENAME_SIZE];
    struct maildir_save_opts sopts = { .subdir = MAILDIR_CUR, .flags = MAILDIR_FLAG_SEEN,
                                       .msgid = MSGID, .received = 1234567890 };
    const char *error = NULL;
    const char *text = "Subject: copy me\n\nLF body\n";
    assert_int_equal(maildir_deliver(src, text, strlen(text), &sopts, name, &error), 0);
    struct maildir_save_opts copts = { .subdir = MAILDIR_CUR,
                                       .flags = MAILDIR_FLAG_SEEN | MAILDIR_FLAG_FLAGGED };
    assert_int_equal(maildir_message_copy(src, MAILDIR_CUR, name, dst, &copts, copy, &error), 0);

    struct maildir_filename a, b;
    assert_int_equal(maildir_filename_parse(name, &a, &error), 0);
    assert_int_equal(maildir_filename_parse(copy, &b, &error), 0);
    assert_int_equal(b.size, a.size);
    assert_int_equal(b.vsize, a.vsize);
    assert_int_equal(a.vsize, a.size + 3);
    assert_string_equal(b.id, MSGID);
    assert_true(b.flags == (MAILDIR_FLAG_SEEN | MAILDIR_FLAG_FLAGGED));
    assert_false(a.base_len == b.base_len && strncmp(name, copy, a.base_len) == 0);

    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/cur/%s", fx->root, name);
    snprintf(p2, sizeof p2, "%s/.%s/cur/%s", fx->root, force ? "CopyF" : "CopyL", copy);
    struct stat s1, s2;
    assert_int_equal(stat(p1, &s1), 0);
    assert_int_equal(stat(p2, &s2), 0);
    if (force)
        assert_true(s1.st_ino != s2.st_ino);
    else
        assert_true(s1.st_ino == s2.st_ino);
    assert_int_equal(s2.st_mtime, 1234567890); /* INTERNALDATE kept */
    size_t l1, l2;
    char *c1 = read_file_at(p1, &l1), *c2 = read_file_at(p2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(c1, c2, l1);
    free(c1);
    free(c2);
    assert_int_equal(count_entries("%s/.%s/tmp", fx->root, force ? "CopyF" : "CopyL"), 0);

    /* copying a message that is gone */
    assert_int_equal(maildir_message_copy(src, MAILDIR_NEW, name, dst, &copts, copy, &error), -1);
    assert_int_equal(errno, ENOENT);
    maildir_folder_close(&src);
    maildir_folder_close(&dst);
}

static void test_copy_link(void **state)
{
    check_copy(*state, false);
}

static void test_copy_bytes(void **state)
{
    check_copy(*state, true);
}

static void test_copy_foreign_name(void **state)
{
    struct fx *fx = *state;
    /* a file written by another tool: no S=, W=, X= */
    char p[1024];
    snprintf(p, sizeof p, "%s/cur/1700000000.123.otherhost:2,S", fx->root);
    FILE *fp = fopen(p, "w");
    fputs("12345", fp);
    fclose(fp);
    create_folder(fx, "Dst");
    struct maildir_folder *src = open_folder(fx, "INBOX"), *dst = open_folder(fx, "Dst");
    char copy[MAILDIR_FILENAME_SIZE];
    struct maildir_save_opts opts = { .subdir = MAILDIR_NEW };
    const char *error = NULL;
    assert_int_equal(maildir_message_copy(src, MAILDIR_CUR, "1700000000.123.otherhost:2,S", dst,
                                          &opts, copy, &error), 0);
    struct maildir_filename info;
    assert_int_equal(maildir_filename_parse(copy, &info, &error), 0);
    assert_true(info.has_size && !info.has_vsize && !info.has_id);
    assert_int_equal(info.size, 5);
    maildir_folder_close(&src);
    maildir_folder_close(&dst);
}

static void test_move(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "Trash");
    struct maildir_folder *src = open_folder(fx, "INBOX"), *dst = open_folder(fx, "Trash");
    char name[MAILDIR_FILENAME_SIZE], moved[MAILDIR_FILENAME_SIZE];
    deliver(src, "bye\r\n", MAILDIR_NEW, 0, MSGID, name);
    struct maildir_save_opts opts = { .subdir = MAILDIR_CUR, .flags = MAILDIR_FLAG_SEEN };
    const char *error = NULL;
    assert_int_equal(maildir_message_move(src, MAILDIR_NEW, name, dst, &opts, moved, &error), 0);
    assert_int_equal(strncmp(moved, name, strlen(name)), 0);
    assert_string_equal(moved + strlen(name), ":2,S");
    assert_int_equal(scan_count(src), 0);
    assert_int_equal(scan_count(dst), 1);
    assert_true(exists("%s/.Trash/cur/%s", fx->root, moved));
    assert_int_equal(maildir_message_move(src, MAILDIR_NEW, name, dst, &opts, moved, &error), -1);
    assert_int_equal(errno, ENOENT);

    /* reading it back */
    int fd = -1;
    assert_int_equal(maildir_message_open(dst, MAILDIR_CUR, moved, &fd, &error), 0);
    char buf[16];
    assert_int_equal(read(fd, buf, sizeof buf), 5);
    close(fd);
    maildir_folder_close(&src);
    maildir_folder_close(&dst);
}

/* ---- rename / delete ----------------------------------------------------- */

static void test_rename_hierarchy(void **state)
{
    struct fx *fx = *state;
    static const char *const before[] = { "A", "A/B", "A/B/C", "AB", "A.x", "Z" };
    for (size_t i = 0; i < 6; i++)
        create_folder(fx, before[i]);
    struct maildir_folder *f = open_folder(fx, "A/B");
    char name[MAILDIR_FILENAME_SIZE];
    deliver(f, "child mail\r\n", MAILDIR_NEW, 0, MSGID, name);
    maildir_folder_close(&f);

    const char *error = NULL;
    assert_int_equal(maildir_folder_rename(fx->md, "A", "C", &error), 0);
    struct maildir_folder_list list;
    assert_int_equal(maildir_folder_list(fx->md, &list, &error), 0);
    static const char *const after[] = { "INBOX", "A.x", "AB", "C", "C/B", "C/B/C", "Z" };
    assert_int_equal(list.count, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(list.entries[i].name, after[i]);
    maildir_folder_list_free(&list);
    assert_true(exists("%s/.C.B/new/%s", fx->root, name));
    assert_false(exists("%s/.A.B", fx->root));

    /* refusals leave everything in place */
    errno = 0;
    assert_int_equal(maildir_folder_rename(fx->md, "C", "C/B/D", &error), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(maildir_folder_rename(fx->md, "C", "C", &error), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(maildir_folder_rename(fx->md, "C", "Z", &error), -1);
    assert_int_equal(errno, EEXIST);
    create_folder(fx, "Y/B");
    assert_int_equal(maildir_folder_rename(fx->md, "C", "Y", &error), -1); /* ".Y.B" exists */
    assert_int_equal(errno, EEXIST);
    assert_true(exists("%s/.C", fx->root));
    assert_true(exists("%s/.C.B.C", fx->root));
    assert_int_equal(maildir_folder_rename(fx->md, "Nope", "Other", &error), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(maildir_folder_rename(fx->md, "C", "INBOX", &error), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(maildir_folder_rename(fx->md, "C", "inbox", &error), -1);
    assert_int_equal(errno, EINVAL); /* not canonical */

    /* a parent without a directory: its children still move */
    assert_int_equal(maildir_folder_rename(fx->md, "Y", "W", &error), 0);
    assert_true(exists("%s/.W.B", fx->root));

    /* interrupted rename (".C" moved, children not yet): calling again
     * finishes the job */
    assert_int_equal(renameat(fx->root_fd, ".C", fx->root_fd, ".D"), 0);
    assert_int_equal(maildir_folder_rename(fx->md, "C", "D", &error), 0);
    assert_true(exists("%s/.D.B/new/%s", fx->root, name));
    assert_true(exists("%s/.D.B.C", fx->root));
    assert_false(exists("%s/.C.B", fx->root));
    assert_int_equal(count_entries("%s/user", fx->base), 1);
}

static void test_rename_inbox(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "INBOX/Child");
    struct maildir_folder *f = open_folder(fx, "INBOX");
    char a[MAILDIR_FILENAME_SIZE], b[MAILDIR_FILENAME_SIZE];
    deliver(f, "one", MAILDIR_NEW, 0, NULL, a);
    deliver(f, "two", MAILDIR_CUR, MAILDIR_FLAG_SEEN, NULL, b);
    const char *error = NULL;
    assert_int_equal(maildir_folder_rename(fx->md, "INBOX", "Old Mail", &error), 0);
    assert_int_equal(scan_count(f), 0);
    struct maildir_folder *o = open_folder(fx, "Old Mail");
    assert_int_equal(scan_count(o), 2);
    assert_true(exists("%s/.Old Mail/new/%s", fx->root, a));
    assert_true(exists("%s/.Old Mail/cur/%s", fx->root, b));
    assert_true(exists("%s/.INBOX.Child", fx->root));
    assert_int_equal(maildir_folder_rename(fx->md, "INBOX", "Old Mail", &error), -1);
    assert_int_equal(errno, EEXIST);
    /* INBOX's messages may move to one of its own children */
    deliver(f, "three", MAILDIR_NEW, 0, NULL, a);
    assert_int_equal(maildir_folder_rename(fx->md, "INBOX", "INBOX/Archive", &error), 0);
    assert_true(exists("%s/.INBOX.Archive/new/%s", fx->root, a));
    assert_int_equal(scan_count(f), 0);
    maildir_folder_close(&o);
    maildir_folder_close(&f);
}

static void test_delete_folder(void **state)
{
    struct fx *fx = *state;
    create_folder(fx, "Junk");
    create_folder(fx, "Junk/Sub");
    struct maildir_folder *f = open_folder(fx, "Junk");
    char name[MAILDIR_FILENAME_SIZE];
    deliver(f, "spam", MAILDIR_NEW, 0, NULL, name);
    deliver(f, "spam", MAILDIR_CUR, MAILDIR_FLAG_SEEN, NULL, name);
    maildir_folder_close(&f);
    /* things other tools leave in a folder */
    char p[1024];
    snprintf(p, sizeof p, "%s/.Junk/dovecot-uidlist", fx->root);
    FILE *fp = fopen(p, "w");
    fputs("3 V1 N1\n", fp);
    fclose(fp);
    snprintf(p, sizeof p, "%s/.Junk/courierimapkeywords", fx->root);
    assert_int_equal(mkdir(p, 0700), 0);
    /* a symlink inside must be removed, not followed */
    char target[512];
    snprintf(target, sizeof target, "%s/outside", fx->base);
    fp = fopen(target, "w");
    fputs("keep me", fp);
    fclose(fp);
    snprintf(p, sizeof p, "%s/.Junk/cur/link", fx->root);
    assert_int_equal(symlink(target, p), 0);
    snprintf(p, sizeof p, "%s/.Junk/dirlink", fx->root);
    assert_int_equal(symlink(fx->base, p), 0);

    const char *error = NULL;
    assert_int_equal(maildir_folder_delete(fx->md, "Junk", &error), 0);
    assert_false(exists("%s/.Junk", fx->root));
    assert_true(exists("%s/.Junk.Sub", fx->root)); /* inferiors stay */
    assert_true(exists("%s", target));
    assert_int_equal(count_entries("%s", fx->root), 4); /* cur new tmp .Junk.Sub */

    assert_int_equal(maildir_folder_delete(fx->md, "Junk", &error), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(maildir_folder_delete(fx->md, "INBOX", &error), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(maildir_folder_delete(fx->md, "../user", &error), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_open_purges_scratch(void **state)
{
    struct fx *fx = *state;
    char p[1024];
    /* an interrupted delete, an abandoned create, a create in progress */
    snprintf(p, sizeof p, "%s/..deleted.1.M1P1Q1R1.h", fx->root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/..deleted.1.M1P1Q1R1.h/cur", fx->root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/..creating.old", fx->root);
    assert_int_equal(mkdir(p, 0700), 0);
    struct timespec old[2] = { { time(NULL) - 7200, 0 }, { time(NULL) - 7200, 0 } };
    assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
    snprintf(p, sizeof p, "%s/..creating.fresh", fx->root);
    assert_int_equal(mkdir(p, 0700), 0);

    struct maildir *md2 = NULL;
    const char *error = NULL;
    assert_int_equal(maildir_open(fx->root_fd, fx->root, 0, &md2, &error), 0);
    assert_false(exists("%s/..deleted.1.M1P1Q1R1.h", fx->root));
    assert_false(exists("%s/..creating.old", fx->root));
    assert_true(exists("%s/..creating.fresh", fx->root));
    /* and no scratch entry is ever listed as a folder */
    struct maildir_folder_list list;
    assert_int_equal(maildir_folder_list(md2, &list, &error), 0);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.skipped, 0);
    maildir_folder_list_free(&list);
    maildir_close(&md2);
}

/* ---- scanning ----------------------------------------------------------- */

static void test_scan_reports_bad_files(void **state)
{
    struct fx *fx = *state;
    struct maildir_folder *f = open_folder(fx, "INBOX");
    char good[MAILDIR_FILENAME_SIZE];
    deliver(f, "ok", MAILDIR_CUR, MAILDIR_FLAG_SEEN, MSGID, good);
    static const char *const bad[] = { "cur/x:1,S", "cur/y,S=zz", "new/z:2,S!" };
    char p[1024];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", fx->root, bad[i]);
        FILE *fp = fopen(p, "w");
        fputs("?", fp);
        fclose(fp);
    }
    snprintf(p, sizeof p, "%s/cur/.hidden", fx->root);
    FILE *fp = fopen(p, "w");
    fclose(fp);
    snprintf(p, sizeof p, "%s/cur/symlinked", fx->root);
    assert_int_equal(symlink("/etc/passwd", p), 0);
    snprintf(p, sizeof p, "%s/new/adir", fx->root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/new/foreign.host", fx->root); /* no S=: stat gives 4 */
    fp = fopen(p, "w");
    fputs("1234", fp);
    fclose(fp);

    struct collect c = { 0 };
    struct maildir_scan_stats stats;
    const char *error = NULL;
    assert_int_equal(maildir_scan(f, 0, collect_fn, &c, &stats, &error), 0);
    assert_int_equal(c.n, 7);
    assert_int_equal(c.invalid, 5);
    assert_int_equal(stats.invalid, 5);
    assert_int_equal(stats.messages, 2);
    assert_int_equal(stats.bytes, 2 + 4);

    int fd;
    assert_int_equal(maildir_message_open(f, MAILDIR_CUR, "symlinked", &fd, &error), -1);
    assert_int_equal(errno, ELOOP);

    /* the callback can stop the scan */
    struct collect stop = { .stop_after = 1 };
    assert_int_equal(maildir_scan(f, 0, collect_fn, &stop, NULL, &error), -1);
    assert_int_equal(errno, ECANCELED);
    assert_int_equal(stop.n, 1);
    maildir_folder_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_folders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_skips_foreign_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_names_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_property_folders_on_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_japanese_folders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_new_crlf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_vsize_lf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_cur_with_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_received_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostname_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_leaves_only_tmp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deliver_visible_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_delivery, setup, teardown),
        cmocka_unit_test(test_flags_format_parse),
        cmocka_unit_test(test_filename_parse_table),
        cmocka_unit_test_setup_teardown(test_set_flags_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expunge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_foreign_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_hierarchy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_inbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_purges_scratch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_reports_bad_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
