/* test_maildirsize - the Maildir++ quota file: format, rules, recalc,
 * concurrent appenders. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
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

#include "maildir.h"
#include "maildirsize.h"

struct fx {
    char base[64];
    int root_fd;
    struct maildir *md;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    snprintf(fx->base, sizeof fx->base, "/tmp/mx-test-mdsize-XXXXXX");
    assert_non_null(mkdtemp(fx->base));
    fx->root_fd = open(fx->base, O_RDONLY | O_DIRECTORY);
    assert_true(fx->root_fd >= 0);
    const char *error = NULL;
    if (maildir_open(fx->root_fd, fx->base, MAILDIR_OPEN_CREATE, &fx->md, &error) != 0)
        fail_msg("%s", error);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    maildir_close(&fx->md);
    close(fx->root_fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->base);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static void write_text(struct fx *fx, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fx->base, name);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static char *read_text(struct fx *fx, const char *name, size_t *len_r)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fx->base, name);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    if (len_r != NULL)
        *len_r = n;
    return buf;
}

static void deliver(struct fx *fx, const char *folder, const char *text)
{
    struct maildir_folder *f = NULL;
    const char *error = NULL;
    if (maildir_folder_open(fx->md, folder, &f, &error) != 0)
        fail_msg("%s", error);
    struct maildir_save_opts opts = { .subdir = MAILDIR_NEW };
    char name[MAILDIR_FILENAME_SIZE];
    if (maildir_deliver(f, text, strlen(text), &opts, name, &error) != 0)
        fail_msg("%s", error);
    maildir_folder_close(&f);
}

/* ---- format ------------------------------------------------------------ */

static void test_quota_parse_format(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes, count;
        const char *formatted;
    } good[] = {
        { "104857600S,10000C", 104857600, 10000, "104857600S,10000C" },
        { "10000C,104857600S", 104857600, 10000, "104857600S,10000C" },
        { "10000000S", 10000000, 0, "10000000S" },
        { "1000C", 0, 1000, "1000C" },
        { "0S", 0, 0, "0S" },
        { "0S,0C", 0, 0, "0S" },
        { "18446744073709551615S", UINT64_MAX, 0, "18446744073709551615S" },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct maildirsize_quota q;
        const char *error = NULL;
        if (maildirsize_quota_parse(good[i].text, strlen(good[i].text), &q, &error) != 0)
            fail_msg("%s: %s", good[i].text, error);
        assert_true(q.bytes == good[i].bytes);
        assert_true(q.count == good[i].count);
        char buf[MAILDIRSIZE_QUOTA_TEXT_SIZE];
        assert_int_equal(maildirsize_quota_format(&q, buf), strlen(good[i].formatted));
        assert_string_equal(buf, good[i].formatted);
    }
    static const char *const bad[] = { "", "S", "100", "100X", "100S,", ",100S", "100S,,5C",
                                       "100S,200S", "1C,2C", "100 S", "-5S",
                                       "18446744073709551616S", "100S 5C" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct maildirsize_quota q;
        const char *error = NULL;
        if (maildirsize_quota_parse(bad[i], strlen(bad[i]), &q, &error) == 0)
            fail_msg("\"%s\" accepted", bad[i]);
    }
}

struct parse_case {
    const char *text;
    bool corrupt;
    int64_t bytes, count;
    unsigned lines;
    uint64_t qbytes, qcount;
};

static const struct parse_case parse_cases[] = {
    /* as Courier's deliverquota writes it: 12-column padding */
    { "10000000S,1000C\n"
      "        5000            3\n"
      "        1200            1\n"
      "       -1200           -1\n",
      false, 5000, 3, 3, 10000000, 1000 },
    /* as Dovecot writes it: recalculated line, then appended deltas */
    { "104857600S,10000C\n123456 42\n-1000 -1\n2000 1\n", false, 124456, 42, 3, 104857600, 10000 },
    { "0S\n0 0\n", false, 0, 0, 1, 0, 0 },
    { "1000C\n7\t2\n", false, 7, 2, 1, 0, 1000 },
    { "100S\n", false, 0, 0, 0, 100, 0 },             /* definition only */
    { "100S\r\n5 1\r\n", false, 5, 1, 1, 100, 0 },    /* CRLF tolerated */
    { "100S", true, 0, 0, 0, 0, 0 },                  /* no newline at all */
    { "garbage\n5 1\n", true, 5, 1, 1, 0, 0 },
    { "100S\n5 1\n7 1", true, 5, 1, 1, 100, 0 },      /* unterminated last line */
    { "100S\n5\n", true, 0, 0, 1, 100, 0 },
    { "100S\n5 1 3\n", true, 5, 1, 1, 100, 0 },
    { "100S\n51\n", true, 0, 0, 1, 100, 0 },
    { "100S\nx y\n", true, 0, 0, 1, 100, 0 },
    { "100S\n\n", true, 0, 0, 1, 100, 0 },
    { "100S\n5 -6\n", true, 5, -6, 1, 100, 0 },       /* negative sum */
    { "100S\n-9223372036854775807 1\n-9 1\n", true, 0, 0, 2, 100, 0 },
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        struct maildirsize_state st;
        maildirsize_parse(c->text, strlen(c->text), &st);
        if (st.corrupt != c->corrupt)
            fail_msg("case %zu: corrupt=%d, expected %d", i, st.corrupt, c->corrupt);
        if (c->corrupt)
            continue; /* the sums of a corrupt file mean nothing: it is recalculated */
        assert_int_equal(st.usage.bytes, c->bytes);
        assert_int_equal(st.usage.count, c->count);
        assert_int_equal(st.lines, c->lines);
        assert_true(st.quota.bytes == c->qbytes);
        assert_true(st.quota.count == c->qcount);
    }
    struct maildirsize_state st;
    maildirsize_parse("100S\n5 1\0\n", 10, &st);
    assert_true(st.corrupt); /* NUL */
}

/* ---- the rules --------------------------------------------------------- */

static void test_needs_recalc_rules(void **state)
{
    (void)state;
    time_t now = 1700000000;
    struct maildirsize_quota q = { 1000, 10 };
    struct maildirsize_state base = { .exists = true, .quota_valid = true, .quota = q,
                                      .usage = { 500, 5 }, .lines = 1, .file_size = 20,
                                      .mtime = now - 3600 };
    struct maildirsize_state st = base;
    assert_false(maildirsize_needs_recalc(&st, &q, now)); /* old but under quota */
    assert_false(maildirsize_needs_recalc(&st, NULL, now));
    st.exists = false;
    assert_true(maildirsize_needs_recalc(&st, &q, now));
    st = base;
    st.corrupt = true;
    assert_true(maildirsize_needs_recalc(&st, &q, now));
    st = base;
    st.file_size = MAILDIRSIZE_RECALC_SIZE - 1;
    assert_false(maildirsize_needs_recalc(&st, &q, now));
    st.file_size = MAILDIRSIZE_RECALC_SIZE;
    assert_true(maildirsize_needs_recalc(&st, &q, now));
    st = base;
    struct maildirsize_quota changed = { 2000, 10 };
    assert_true(maildirsize_needs_recalc(&st, &changed, now));
    /* over quota: trusted only if one line and fresh */
    st = base;
    st.usage.bytes = 1001;
    st.mtime = now - 60;
    assert_false(maildirsize_needs_recalc(&st, &q, now));
    st.mtime = now - MAILDIRSIZE_STALE_SECS;
    assert_true(maildirsize_needs_recalc(&st, &q, now));
    st.mtime = now - 60;
    st.lines = 2;
    assert_true(maildirsize_needs_recalc(&st, &q, now));
    st = base;
    st.usage.count = 11;
    st.mtime = now;
    st.lines = 3;
    assert_true(maildirsize_needs_recalc(&st, &q, now));
    st.usage.count = 10; /* exactly at the limit is not over */
    assert_false(maildirsize_needs_recalc(&st, &q, now));
}

static void test_exceed_and_percent(void **state)
{
    (void)state;
    static const struct {
        uint64_t qb, qc;
        int64_t ub, uc;
        uint64_t add_b, add_c;
        bool exceed;
        unsigned percent;
    } cases[] = {
        { 1000, 0, 0, 0, 1000, 1, false, 0 },
        { 1000, 0, 0, 0, 1001, 1, true, 0 },
        { 1000, 0, 800, 3, 200, 1, false, 80 },
        { 1000, 0, 800, 3, 201, 1, true, 80 },
        { 1000, 0, 949, 3, 0, 0, false, 94 },
        { 1000, 0, 950, 3, 0, 0, false, 95 },
        { 1000, 0, 1500, 3, 0, 0, true, 150 },
        { 0, 10, 999999, 9, 5, 1, false, 90 },
        { 0, 10, 999999, 10, 5, 1, true, 100 },
        { 1000, 10, 100, 8, 0, 0, false, 80 },       /* the larger of the two */
        { 0, 0, 1 << 30, 1 << 20, 1 << 30, 1, false, 0 }, /* unlimited */
        { 1000, 0, -50, -1, 1000, 1, false, 0 },     /* negative usage counts as 0 */
        { UINT64_MAX, 0, INT64_MAX, 1, UINT64_MAX, 1, true, 49 },
        { 1000, 0, 10, 0, UINT64_MAX, 0, true, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct maildirsize_quota q = { cases[i].qb, cases[i].qc };
        struct maildirsize_usage u = { cases[i].ub, cases[i].uc };
        if (maildirsize_would_exceed(&q, &u, cases[i].add_b, cases[i].add_c) != cases[i].exceed)
            fail_msg("case %zu: exceed", i);
        if (maildirsize_percent(&q, &u) != cases[i].percent)
            fail_msg("case %zu: percent %u, expected %u", i, maildirsize_percent(&q, &u),
                     cases[i].percent);
    }
}

/* ---- on disk ----------------------------------------------------------- */

static void test_read_sample_files(void **state)
{
    struct fx *fx = *state;
    struct maildirsize_state st;
    const char *error = NULL;
    assert_int_equal(maildirsize_read(fx->md, &st, &error), 0);
    assert_false(st.exists);

    write_text(fx, MAILDIRSIZE_FILENAME, parse_cases[0].text);
    assert_int_equal(maildirsize_read(fx->md, &st, &error), 0);
    assert_true(st.exists && st.quota_valid && !st.corrupt);
    assert_int_equal(st.usage.bytes, 5000);
    assert_int_equal(st.usage.count, 3);
    assert_int_equal(st.file_size, strlen(parse_cases[0].text));

    /* a file over 5120 bytes still yields its quota line, and is due */
    char *big = malloc(8000);
    strcpy(big, "500S,7C\n");
    for (int i = 0; i < 1100; i++)
        strcat(big, "10 1\n");
    write_text(fx, MAILDIRSIZE_FILENAME, big);
    free(big);
    assert_int_equal(maildirsize_read(fx->md, &st, &error), 0);
    assert_true(st.quota_valid);
    assert_true(st.quota.bytes == 500 && st.quota.count == 7);
    assert_true(st.file_size >= MAILDIRSIZE_RECALC_SIZE);
    assert_true(maildirsize_needs_recalc(&st, NULL, time(NULL)));

    /* a symlink is not followed */
    char p[512];
    snprintf(p, sizeof p, "%s/" MAILDIRSIZE_FILENAME, fx->base);
    unlink(p);
    assert_int_equal(symlink("/etc/passwd", p), 0);
    assert_int_equal(maildirsize_read(fx->md, &st, &error), -1);
    assert_int_equal(errno, ELOOP);
    assert_non_null(strstr(error, fx->base));
}

static void test_recalc_and_append(void **state)
{
    struct fx *fx = *state;
    const char *error = NULL;
    assert_int_equal(maildir_folder_create(fx->md, "Sent", &error), 0);
    assert_int_equal(maildir_folder_create(fx->md, "Trash", &error), 0);
    deliver(fx, "INBOX", "12345");           /* 5 */
    deliver(fx, "INBOX", "1234567890");      /* 10 */
    deliver(fx, "Sent", "abc");              /* 3 */
    deliver(fx, "Trash", "1234567");         /* 7: counted, unlike Courier */
    /* a file without S= (another writer), a dot-file, a non-canonical
     * folder (still mail on disk), scratch space (not counted) */
    write_text(fx, "cur/1700000000.1.other:2,S", "123456789012"); /* 12 */
    write_text(fx, "cur/.hidden", "ignored");
    char p[512];
    snprintf(p, sizeof p, "%s/.odd%%2e", fx->base);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/.odd%%2e/cur", fx->base);
    assert_int_equal(mkdir(p, 0700), 0);
    write_text(fx, ".odd%2e/cur/1.x,S=100", "");      /* 100 by its S= */
    snprintf(p, sizeof p, "%s/..deleted.x", fx->base);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/..deleted.x/cur", fx->base);
    assert_int_equal(mkdir(p, 0700), 0);
    write_text(fx, "..deleted.x/cur/1.x,S=5000", "");
    /* a message in tmp/ is not mail yet */
    write_text(fx, "tmp/1.y,S=77", "");

    struct maildirsize_quota q = { 1000, 10 };
    struct maildirsize_usage u;
    assert_int_equal(maildirsize_recalc(fx->md, &q, &u, &error), 0);
    assert_int_equal(u.bytes, 5 + 10 + 3 + 7 + 12 + 100);
    assert_int_equal(u.count, 6);
    char *text = read_text(fx, MAILDIRSIZE_FILENAME, NULL);
    assert_string_equal(text, "1000S,10C\n137 6\n");
    free(text);
    assert_int_equal(maildirsize_percent(&q, &u), 60); /* 6 of 10 messages */

    /* tmp/ holds only the file put there above: the rewrite renamed its own */
    snprintf(p, sizeof p, "%s/tmp", fx->base);
    int n = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", p);
    FILE *ls = popen(cmd, "r");
    assert_int_equal(fscanf(ls, "%d", &n), 1);
    pclose(ls);
    assert_int_equal(n, 1);

    assert_int_equal(maildirsize_append(fx->md, 500, 1, &error), 0);
    assert_int_equal(maildirsize_append(fx->md, -12, -1, &error), 0);
    struct maildirsize_state st;
    assert_int_equal(maildirsize_read(fx->md, &st, &error), 0);
    assert_false(st.corrupt);
    assert_int_equal(st.lines, 3);
    assert_int_equal(st.usage.bytes, 137 + 500 - 12);
    assert_int_equal(st.usage.count, 6);
    text = read_text(fx, MAILDIRSIZE_FILENAME, NULL);
    assert_string_equal(text, "1000S,10C\n137 6\n500 1\n-12 -1\n");
    free(text);

    /* get: under quota and consistent -> no recalc; limits changed -> recalc */
    bool recalced = true;
    assert_int_equal(maildirsize_get(fx->md, &q, time(NULL), &st, &recalced, &error), 0);
    assert_false(recalced);
    assert_int_equal(st.usage.bytes, 625);
    struct maildirsize_quota q2 = { 104857600, 0 };
    assert_int_equal(maildirsize_get(fx->md, &q2, time(NULL), &st, &recalced, &error), 0);
    assert_true(recalced);
    assert_int_equal(st.usage.bytes, 137);
    text = read_text(fx, MAILDIRSIZE_FILENAME, NULL);
    assert_string_equal(text, "104857600S\n137 6\n");
    free(text);
}

static void test_get_missing_and_over_quota(void **state)
{
    struct fx *fx = *state;
    const char *error = NULL;
    struct maildirsize_state st;
    bool recalced = false;
    /* no limits anywhere: nothing to enforce, nothing written */
    assert_int_equal(maildirsize_get(fx->md, NULL, time(NULL), &st, &recalced, &error), 0);
    assert_false(st.exists);
    assert_false(recalced);
    char p[512];
    snprintf(p, sizeof p, "%s/" MAILDIRSIZE_FILENAME, fx->base);
    struct stat sb;
    assert_int_equal(stat(p, &sb), -1);

    /* append without a file does not create one */
    assert_int_equal(maildirsize_append(fx->md, 10, 1, &error), 0);
    assert_int_equal(stat(p, &sb), -1);

    deliver(fx, "INBOX", "0123456789");
    struct maildirsize_quota q = { 15, 0 };
    assert_int_equal(maildirsize_get(fx->md, &q, time(NULL), &st, &recalced, &error), 0);
    assert_true(recalced);
    assert_int_equal(st.usage.bytes, 10);
    assert_false(maildirsize_would_exceed(&q, &st.usage, 5, 1));
    assert_true(maildirsize_would_exceed(&q, &st.usage, 6, 1));

    /* the file claims over quota; a non-Maildir++ tool removed the mail.
     * One fresh line: trusted. Old: recalculated, unblocking delivery. */
    write_text(fx, MAILDIRSIZE_FILENAME, "15S\n20 2\n");
    time_t now = time(NULL);
    assert_int_equal(maildirsize_get(fx->md, &q, now, &st, &recalced, &error), 0);
    assert_false(recalced);
    assert_int_equal(st.usage.bytes, 20);
    assert_int_equal(maildirsize_get(fx->md, &q, now + MAILDIRSIZE_STALE_SECS + 1, &st, &recalced,
                                     &error), 0);
    assert_true(recalced);
    assert_int_equal(st.usage.bytes, 10);
    /* two lines over quota: recalculated at once */
    write_text(fx, MAILDIRSIZE_FILENAME, "15S\n10 1\n10 1\n");
    assert_int_equal(maildirsize_get(fx->md, &q, now, &st, &recalced, &error), 0);
    assert_true(recalced);
    assert_int_equal(st.usage.bytes, 10);
    /* quota from the file when the caller has none */
    write_text(fx, MAILDIRSIZE_FILENAME, "15S,3C\ngarbage\n");
    assert_int_equal(maildirsize_get(fx->md, NULL, now, &st, &recalced, &error), 0);
    assert_true(recalced);
    assert_true(st.quota.bytes == 15 && st.quota.count == 3);
    char *text = read_text(fx, MAILDIRSIZE_FILENAME, NULL);
    assert_string_equal(text, "15S,3C\n10 1\n");
    free(text);
}

/* Two processes append concurrently: every line arrives whole and the
 * sums are exact. */
static void test_concurrent_appends(void **state)
{
    struct fx *fx = *state;
    write_text(fx, MAILDIRSIZE_FILENAME, "0S\n0 0\n");
    enum { PER_CHILD = 2000 };
    pid_t pids[2];
    for (int c = 0; c < 2; c++) {
        pids[c] = fork();
        assert_true(pids[c] >= 0);
        if (pids[c] == 0) {
            const char *error = NULL;
            for (int i = 0; i < PER_CHILD; i++) {
                int64_t b = c == 0 ? 1234567 : -7;
                if (maildirsize_append(fx->md, b, c == 0 ? 1 : -1, &error) != 0)
                    _exit(1);
            }
            _exit(0);
        }
    }
    for (int c = 0; c < 2; c++) {
        int status;
        assert_int_equal(waitpid(pids[c], &status, 0), pids[c]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    size_t len;
    char *text = read_text(fx, MAILDIRSIZE_FILENAME, &len);
    struct maildirsize_state st;
    maildirsize_parse(text, len, &st);
    assert_false(st.corrupt);
    assert_int_equal(st.lines, 1 + 2 * PER_CHILD);
    assert_int_equal(st.usage.bytes, (int64_t)PER_CHILD * (1234567 - 7));
    assert_int_equal(st.usage.count, 0);
    free(text);
    /* and the file is now due for recalculation by size */
    const char *error = NULL;
    assert_int_equal(maildirsize_read(fx->md, &st, &error), 0);
    assert_true(maildirsize_needs_recalc(&st, NULL, time(NULL)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quota_parse_format),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_needs_recalc_rules),
        cmocka_unit_test(test_exceed_and_percent),
        cmocka_unit_test_setup_teardown(test_read_sample_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recalc_and_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_missing_and_over_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_appends, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
