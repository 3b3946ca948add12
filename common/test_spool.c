/* test_spool - durable spool: commit rule, names, scan, group commit. */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "mx_log.h"
#include "mx_spool.h"

static char test_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(test_dir, sizeof test_dir, "/tmp/mx-test-spool-XXXXXX");
    assert_non_null(mkdtemp(test_dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static struct mx_spool *open_spool(void)
{
    struct mx_spool *spool = NULL;
    char *error = NULL;
    if (mx_spool_open(test_dir, &spool, &error) != 0)
        fail_msg("%s", error);
    return spool;
}

static void write_file(struct mx_spool *spool, const char *name, const char *text,
                       struct mx_spool_file **file_r)
{
    char *error = NULL;
    if (mx_spool_create(spool, name, file_r, &error) != 0)
        fail_msg("%s", error);
    if (mx_spool_write(*file_r, text, strlen(text), &error) != 0)
        fail_msg("%s", error);
}

static void test_commit_moves_to_queue(void **state)
{
    (void)state;
    struct mx_spool *spool = open_spool();
    struct mx_spool_file *file;
    write_file(spool, "01ABC", "hello\r\n", &file);
    assert_int_equal(file->size, 7);
    char tmp[256], queue[256];
    snprintf(tmp, sizeof tmp, "%s/tmp", test_dir);
    snprintf(queue, sizeof queue, "%s/queue", test_dir);
    assert_int_equal(count_entries(tmp), 1);
    assert_int_equal(count_entries(queue), 0);
    char *error = NULL;
    assert_int_equal(mx_spool_commit(&file, &error), 0);
    assert_null(file);
    assert_int_equal(count_entries(tmp), 0);
    assert_int_equal(count_entries(queue), 1);

    char path[512], buf[32] = { 0 };
    int fd = open(mx_spool_path(spool, "01ABC", path, sizeof path), O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, sizeof buf), 7);
    close(fd);
    assert_string_equal(buf, "hello\r\n");

    /* The same name cannot be created twice while it is being written. */
    struct mx_spool_file *a, *b = NULL;
    write_file(spool, "dup", "x", &a);
    assert_int_equal(mx_spool_create(spool, "dup", &b, &error), -1);
    assert_non_null(strstr(error, "File exists"));
    free(error);
    mx_spool_abort(&a);
    assert_null(a);
    assert_int_equal(count_entries(tmp), 0);

    assert_int_equal(mx_spool_remove(spool, "01ABC", &error), 0);
    assert_int_equal(mx_spool_remove(spool, "01ABC", &error), 0); /* already gone: fine */
    assert_int_equal(count_entries(queue), 0);
    mx_spool_close(&spool);
    assert_null(spool);
}

static void test_names_cannot_escape(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", ".", "..", "../etc", "a/b", ".hidden", "a b", "a\nb", "nul\x01", "ü",
        NULL, /* replaced by a 129-character name below */
    };
    char too_long[130];
    memset(too_long, 'a', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    struct mx_spool *spool = open_spool();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct mx_spool_file *file = NULL;
        char *error = NULL;
        const char *name = bad[i] ? bad[i] : too_long;
        assert_false(mx_spool_name_valid(name));
        assert_int_equal(mx_spool_create(spool, name, &file, &error), -1);
        assert_null(file);
        free(error);
        assert_int_equal(mx_spool_remove(spool, name, &error), -1);
        free(error);
    }
    assert_true(mx_spool_name_valid("01JD5ZV6Q3K8W2N4R7T9Y1B3C5.meta"));
    assert_true(mx_spool_name_valid("a-b_c"));
    mx_spool_close(&spool);
}

static int collect(void *ctx, const char *name, const char *path)
{
    char *out = ctx;
    strcat(out, name);
    strcat(out, ",");
    assert_non_null(strstr(path, "/queue/"));
    return 0;
}

static void test_restart_scan_drops_uncommitted(void **state)
{
    (void)state;
    struct mx_spool *spool = open_spool();
    static const char *const names[] = { "03", "01", "02" };
    for (int i = 0; i < 3; i++) {
        struct mx_spool_file *file;
        char *error = NULL;
        write_file(spool, names[i], "data", &file);
        assert_int_equal(mx_spool_commit(&file, &error), 0);
    }
    /* Two writes in progress when the process "crashes". */
    struct mx_spool_file *half1, *half2;
    write_file(spool, "04", "partial", &half1);
    write_file(spool, "05", "partial", &half2);
    close(half1->fd);
    close(half2->fd);
    half1->fd = half2->fd = -1;
    /* A stray file an operator dropped into the queue is not an entry. */
    char stray[256];
    snprintf(stray, sizeof stray, "%s/queue/.swp", test_dir);
    close(open(stray, O_CREAT | O_WRONLY, 0600));
    mx_spool_close(&spool);
    free(half1->name);
    free(half1);
    free(half2->name);
    free(half2);

    spool = open_spool(); /* restart */
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s/tmp", test_dir);
    assert_int_equal(count_entries(tmp), 0);
    char seen[256] = "";
    char *error = NULL;
    assert_int_equal(mx_spool_scan(spool, collect, seen, &error), 0);
    assert_string_equal(seen, "01,02,03,");
    mx_spool_close(&spool);
}

static void test_open_errors(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/afile", test_dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    struct mx_spool *spool = NULL;
    char *error = NULL;
    assert_int_equal(mx_spool_open(path, &spool, &error), -1);
    assert_null(spool);
    assert_non_null(strstr(error, "not a directory"));
    free(error);
    snprintf(path, sizeof path, "%s/missing/deeper", test_dir);
    assert_int_equal(mx_spool_open(path, &spool, &error), -1);
    assert_non_null(strstr(error, "No such file"));
    free(error);
}

static void test_batch_commit(void **state)
{
    (void)state;
    struct mx_spool *spool = open_spool();
    struct mx_spool_file *files[50];
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%02d", i);
        write_file(spool, name, "body", &files[i]);
    }
    char *error = NULL;
    assert_int_equal(mx_spool_commit_batch(files, 50, &error), 0);
    for (int i = 0; i < 50; i++)
        assert_null(files[i]);
    char queue[256];
    snprintf(queue, sizeof queue, "%s/queue", test_dir);
    assert_int_equal(count_entries(queue), 50);
    mx_spool_close(&spool);
}

/* ---- asynchronous group commit ---- */

struct commit_seen {
    int calls;
    int errors;
    char last[32];
};

static void on_commit(void *ctx, int error, const char *name)
{
    struct commit_seen *seen = ctx;
    seen->calls++;
    if (error)
        seen->errors++;
    snprintf(seen->last, sizeof seen->last, "%s", name);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
    fail_msg("test deadline passed: committer never reported");
}

/* run_until - loop until *counter reaches want (watchdog: 20 s). */
static void run_until(struct event_base *base, const int *counter, int want)
{
    struct event *deadline = evtimer_new(base, on_deadline, base);
    struct timeval tv = { 20, 0 };
    evtimer_add(deadline, &tv);
    while (*counter < want)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(deadline);
}

static void test_async_group_commit(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct mx_spool *spool = open_spool();
    char *error = NULL;
    struct mx_spool_committer *committer = mx_spool_committer_new(base, &error);
    assert_non_null(committer);

    struct commit_seen seen = { 0 };
    enum { N = 200 };
    mx_spool_committer_hold(committer, 1);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "g%03d", i);
        struct mx_spool_file *file;
        write_file(spool, name, "group commit body\r\n", &file);
        assert_non_null(mx_spool_commit_async(committer, file, on_commit, &seen));
    }
    assert_int_equal(seen.calls, 0); /* never synchronous */
    mx_spool_committer_hold(committer, 0);
    run_until(base, &seen.calls, N);
    assert_int_equal(seen.calls, N);
    assert_int_equal(seen.errors, 0);

    struct mx_spool_committer_stats stats;
    mx_spool_committer_stats(committer, &stats);
    assert_int_equal(stats.files, N);
    assert_int_equal(stats.batches, 1); /* all 200 shared one directory fsync */
    assert_int_equal(stats.max_batch, N);
    char queue[256];
    snprintf(queue, sizeof queue, "%s/queue", test_dir);
    assert_int_equal(count_entries(queue), N);

    mx_spool_committer_free(&committer);
    assert_null(committer);
    mx_spool_close(&spool);
    event_base_free(base);
}

static void test_async_cancel_removes_entry(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct mx_spool *spool = open_spool();
    char *error = NULL;
    struct mx_spool_committer *committer = mx_spool_committer_new(base, &error);
    struct commit_seen cancelled = { 0 }, kept = { 0 };

    mx_spool_committer_hold(committer, 1);
    struct mx_spool_file *file;
    write_file(spool, "gone", "client hung up", &file);
    struct mx_spool_commit_req *req = mx_spool_commit_async(committer, file, on_commit, &cancelled);
    write_file(spool, "kept", "client waited", &file);
    mx_spool_commit_async(committer, file, on_commit, &kept);
    mx_spool_commit_cancel(&req);
    assert_null(req);
    mx_spool_committer_hold(committer, 0);
    run_until(base, &kept.calls, 1);
    assert_int_equal(cancelled.calls, 0);
    assert_string_equal(kept.last, "kept");
    char seen[64] = "";
    assert_int_equal(mx_spool_scan(spool, collect, seen, &error), 0);
    assert_string_equal(seen, "kept,");
    mx_spool_committer_free(&committer);
    mx_spool_close(&spool);
    event_base_free(base);
}

static void test_free_reports_in_flight(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct mx_spool *spool = open_spool();
    char *error = NULL;
    struct mx_spool_committer *committer = mx_spool_committer_new(base, &error);
    struct commit_seen seen = { 0 };
    mx_spool_committer_hold(committer, 1);
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "f%d", i);
        struct mx_spool_file *file;
        write_file(spool, name, "x", &file);
        mx_spool_commit_async(committer, file, on_commit, &seen);
    }
    /* Shutting down must not drop a promise: every callback runs. */
    mx_spool_committer_free(&committer);
    assert_int_equal(seen.calls, 5);
    assert_int_equal(seen.errors, 0);
    mx_spool_close(&spool);
    event_base_free(base);
}

int main(void)
{
    mx_log_set_level(MX_LOG_CRIT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_moves_to_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_cannot_escape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_scan_drops_uncommitted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_cancel_removes_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_reports_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests_name("mx_spool", tests, NULL, NULL);
}
