/* test_imap_sort - SORT criteria, RFC 5256 base subject extraction, SORT
 * ordering and THREAD=REFERENCES / THREAD=ORDEREDSUBJECT output, including
 * the cases of Dovecot's imaptest suite (sort-subject, thread, thread7...)
 * rebuilt here as header blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_sort.h"

/* --- base subject ---------------------------------------------------------- */

static void expect_base(const char *subject, const char *base, bool reply)
{
    bool is_reply = !reply;
    char *got = imap_base_subject(subject, strlen(subject), &is_reply);
    if (strcmp(got, base) != 0)
        fail_msg("base subject of \"%s\": got \"%s\", expected \"%s\"", subject, got, base);
    if (is_reply != reply)
        fail_msg("base subject of \"%s\": reply flag %d", subject, is_reply);
    free(got);
}

static void test_base_subject(void **state)
{
    (void)state;
    expect_base("test", "test", false);
    expect_base("  test  ", "test", false);
    expect_base("Re: test", "test", true);
    expect_base("re:test", "test", true);
    expect_base("RE : test", "test", true);
    expect_base("Re: Re: Fwd: test", "test", true);
    expect_base("Fw: test", "test", true);
    expect_base("FWD: test", "test", true);
    expect_base("Re[2]: test", "test", true);
    expect_base("Re [list]: test", "test", true);
    expect_base("[list] Re: test", "test", true);
    expect_base("[list] test", "test", false);
    expect_base("[list] [other] test", "test", false);
    expect_base("[list]", "[list]", false);          /* a blob alone stays */
    expect_base("Re: [list]", "[list]", true);
    expect_base("test (fwd)", "test", true);
    expect_base("test (FWD) (fwd)  ", "test", true);
    expect_base("[fwd: test]", "test", true);
    expect_base("[Fwd: Re: test]", "test", true);
    expect_base("[fwd: [fwd: test]]", "test", true);
    expect_base("Re: [FWD: c]", "c", true);
    expect_base("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b", true);
    expect_base("b (a)", "b (a)", false);
    expect_base("a\t  b\r\n c", "a b c", false);
    expect_base("Reply: test", "Reply: test", false);
    expect_base("Re:", "", true);
    expect_base("", "", false);
    /* encoded-words are decoded before the Re: removal */
    expect_base("=?utf-8?q?Re=3A_hello?=", "hello", true);
    expect_base("Re: =?iso-8859-1?q?Gr=FC=DFe?=", "Grüße", true);
    expect_base("=?UTF-8?B?44GC?= =?UTF-8?B?44GE?=", "あい", false);
}

/* --- criteria -------------------------------------------------------------- */

static struct imap_arg atom(const char *s)
{
    struct imap_arg a = {0};
    a.type = IMAP_ARG_ATOM;
    a.str = s;
    a.len = strlen(s);
    return a;
}

static void test_criteria(void **state)
{
    (void)state;
    struct imap_arg items[4] = {atom("REVERSE"), atom("date"), atom("SUBJECT"), atom("x")};
    struct imap_arg list = {0};
    list.type = IMAP_ARG_LIST;
    list.list = items;
    list.n_list = 3;
    struct imap_sort_criterion crit[IMAP_SORT_MAX_CRITERIA];
    char err[128];
    assert_int_equal(imap_sort_parse_criteria(&list, crit, IMAP_SORT_MAX_CRITERIA, err,
                                              sizeof(err)), 2);
    assert_int_equal(crit[0].key, IMAP_SORT_DATE);
    assert_true(crit[0].reverse);
    assert_int_equal(crit[1].key, IMAP_SORT_SUBJECT);
    assert_false(crit[1].reverse);
    assert_true(imap_sort_needs_header(crit, 2));

    list.n_list = 4; /* unknown "x" */
    assert_int_equal(imap_sort_parse_criteria(&list, crit, 16, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown sort criterion"));
    list.n_list = 1; /* REVERSE alone */
    assert_int_equal(imap_sort_parse_criteria(&list, crit, 16, err, sizeof(err)), -1);
    list.n_list = 0;
    assert_int_equal(imap_sort_parse_criteria(&list, crit, 16, err, sizeof(err)), -1);
    struct imap_arg rr[2] = {atom("REVERSE"), atom("REVERSE")};
    list.list = rr;
    list.n_list = 2;
    assert_int_equal(imap_sort_parse_criteria(&list, crit, 16, err, sizeof(err)), -1);
    struct imap_arg not_list = atom("DATE");
    assert_int_equal(imap_sort_parse_criteria(&not_list, crit, 16, err, sizeof(err)), -1);
    struct imap_arg sz[2] = {atom("ARRIVAL"), atom("size")};
    list.list = sz;
    assert_int_equal(imap_sort_parse_criteria(&list, crit, 1, err, sizeof(err)), -1);
    assert_int_equal(imap_sort_parse_criteria(&list, crit, 16, err, sizeof(err)), 2);
    assert_false(imap_sort_needs_header(crit, 2));
}

/* --- SORT ------------------------------------------------------------------ */

struct mailbox {
    struct imap_sort_msg msgs[32];
    size_t n;
};

static void add(struct mailbox *mb, uint64_t internal_s, uint64_t size, const char *header)
{
    struct imap_sort_msg *m = &mb->msgs[mb->n];
    m->seq = (uint32_t)(mb->n + 1);
    m->uid = (uint32_t)(mb->n + 1) * 10;
    m->internaldate_ms = internal_s * 1000;
    m->size = size;
    m->header = header;
    m->header_len = strlen(header);
    mb->n++;
}

static void expect_sort(const struct mailbox *mb, const char *criteria_text, bool uid,
                        const char *expected)
{
    /* criteria_text: space separated words */
    struct imap_arg items[16];
    char words[256];
    snprintf(words, sizeof(words), "%s", criteria_text);
    size_t n = 0;
    for (char *save = NULL, *w = strtok_r(words, " ", &save); w != NULL;
         w = strtok_r(NULL, " ", &save))
        items[n++] = atom(w);
    struct imap_arg list = {0};
    list.type = IMAP_ARG_LIST;
    list.list = items;
    list.n_list = n;
    struct imap_sort_criterion crit[IMAP_SORT_MAX_CRITERIA];
    char err[128];
    int nc = imap_sort_parse_criteria(&list, crit, IMAP_SORT_MAX_CRITERIA, err, sizeof(err));
    assert_true(nc > 0);
    size_t order[32];
    imap_sort(crit, (size_t)nc, mb->msgs, mb->n, order);
    char *line = imap_sort_format(mb->msgs, order, mb->n, uid);
    if (strcmp(line, expected) != 0)
        fail_msg("SORT (%s): got \"%s\", expected \"%s\"", criteria_text, line, expected);
    free(line);
}

static void test_sort_subject_imaptest(void **state)
{
    (void)state;
    /* imaptest sort-subject.mbox: equal dates, sizes from the bodies */
    struct mailbox mb = {0};
    add(&mb, 1000, 20, "Subject: a\n\n");
    add(&mb, 1000, 20, "Subject: C\n\n");
    add(&mb, 1000, 20, "Subject: b\n\n");
    add(&mb, 1000, 20, "Subject: _\n\n");
    add(&mb, 1000, 50, "Subject: [foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)\n\n");
    add(&mb, 1000, 22, "Subject: b (a)\n\n");
    add(&mb, 1000, 22, "Subject: Re: [FWD: c]\n\n");
    add(&mb, 1000, 22, "Subject: [xyz]\n\n");
    add(&mb, 1000, 10, "\n");
    expect_sort(&mb, "SUBJECT", false, "* SORT 9 1 3 5 6 2 7 8 4");
    expect_sort(&mb, "REVERSE SUBJECT", false, "* SORT 4 8 2 7 6 3 5 1 9");
    expect_sort(&mb, "SUBJECT REVERSE SIZE", false, "* SORT 9 1 5 3 6 7 2 8 4");
}

static void test_sort_keys(void **state)
{
    (void)state;
    struct mailbox mb = {0};
    add(&mb, 300, 500,
        "From: \"Zed\" <alice@example.com>\nTo: Bob <zz@x>\nCc: m@x\n"
        "Date: Mon, 2 Mar 2026 10:00:00 +0000\nSubject: one\n\n");
    add(&mb, 100, 100,
        "From: Carol <BOB@example.com>\nTo: aa@x\n"
        "Date: Mon, 2 Mar 2026 12:00:00 +0300\nSubject: two\n\n"); /* 09:00 UTC */
    add(&mb, 200, 300,
        "From: =?utf-8?q?=C3=84nne?= <carl@example.com>\nTo: \"Amy\" <yy@x>\nCc: a@x\n"
        "Subject: three\n\n"); /* no Date: internal date 200 s */
    expect_sort(&mb, "ARRIVAL", false, "* SORT 2 3 1");
    expect_sort(&mb, "ARRIVAL", true, "* SORT 20 30 10");
    expect_sort(&mb, "REVERSE ARRIVAL", false, "* SORT 1 3 2");
    expect_sort(&mb, "SIZE", false, "* SORT 2 3 1");
    expect_sort(&mb, "DATE", false, "* SORT 3 2 1");
    expect_sort(&mb, "REVERSE DATE", false, "* SORT 1 2 3");
    expect_sort(&mb, "FROM", false, "* SORT 1 2 3");        /* alice bob carl */
    expect_sort(&mb, "DISPLAYFROM", false, "* SORT 3 2 1"); /* A(nne) Carol Zed: NFKD */
    expect_sort(&mb, "TO", false, "* SORT 2 3 1");          /* aa yy zz */
    expect_sort(&mb, "DISPLAYTO", false, "* SORT 2 3 1");   /* aa@x Amy Bob */
    expect_sort(&mb, "CC", false, "* SORT 2 3 1");          /* "" a m */
    expect_sort(&mb, "SUBJECT", false, "* SORT 1 3 2");
    /* ties keep mailbox order, even reversed */
    struct mailbox same = {0};
    add(&same, 5, 1, "Subject: x\n\n");
    add(&same, 5, 1, "Subject: x\n\n");
    add(&same, 5, 1, "Subject: x\n\n");
    expect_sort(&same, "REVERSE SUBJECT REVERSE SIZE", false, "* SORT 1 2 3");
}

/* --- THREAD ------------------------------------------------------------------ */

static void expect_thread(const struct mailbox *mb, enum imap_thread_algorithm alg, bool uid,
                          const char *expected)
{
    char *line = imap_thread(alg, mb->msgs, mb->n, uid);
    if (strcmp(line, expected) != 0)
        fail_msg("THREAD: got \"%s\", expected \"%s\"", line, expected);
    free(line);
}

static void test_thread_imaptest(void **state)
{
    (void)state;
    /* imaptest "thread": References loops are not followed */
    struct mailbox mb = {0};
    add(&mb, 17 * 3600, 10, "Message-ID: <a@b>\n\n");
    add(&mb, 15 * 3600, 10, "Message-Id: <b@b>\nReferences: <c@b> <a@b>\n\n");
    add(&mb, 16 * 3600, 10, "Message-Id: <c@b>\nReferences: <b@b>\n\n");
    expect_thread(&mb, IMAP_THREAD_REFERENCES, false, "* THREAD (3 1 2)");
    expect_thread(&mb, IMAP_THREAD_REFERENCES, true, "* THREAD (30 10 20)");
    /* ... and after message 1 is expunged */
    struct mailbox after = {0};
    add(&after, 15 * 3600, 10, "Message-Id: <b@b>\nReferences: <c@b> <a@b>\n\n");
    add(&after, 16 * 3600, 10, "Message-Id: <c@b>\nReferences: <b@b>\n\n");
    expect_thread(&after, IMAP_THREAD_REFERENCES, false, "* THREAD (2 1)");
}

static void test_thread_references(void **state)
{
    (void)state;
    /* a reply chain with a branch and a missing parent */
    struct mailbox mb = {0};
    add(&mb, 100, 1, "Message-ID: <1@x>\nSubject: hello\nDate: Mon, 2 Mar 2026 10:00:00 +0000\n\n");
    add(&mb, 200, 1, "Message-ID: <2@x>\nSubject: Re: hello\nReferences: <1@x>\n"
                     "Date: Mon, 2 Mar 2026 11:00:00 +0000\n\n");
    add(&mb, 300, 1, "Message-ID: <3@x>\nSubject: Re: hello\nReferences: <1@x> <2@x>\n"
                     "Date: Mon, 2 Mar 2026 12:00:00 +0000\n\n");
    add(&mb, 400, 1, "Message-ID: <4@x>\nSubject: Re: hello\nIn-Reply-To: <1@x>\n"
                     "Date: Mon, 2 Mar 2026 13:00:00 +0000\n\n");
    /* 5 and 6 reply to a message we do not have: a dummy root with two kids */
    add(&mb, 500, 1, "Message-ID: <5@x>\nSubject: other\nReferences: <missing@x>\n"
                     "Date: Mon, 2 Mar 2026 14:00:00 +0000\n\n");
    add(&mb, 600, 1, "Message-ID: <6@x>\nSubject: other2\nReferences: <missing@x>\n"
                     "Date: Mon, 2 Mar 2026 15:00:00 +0000\n\n");
    /* 7: no ids at all, distinct subject */
    add(&mb, 700, 1, "Subject: lonely\nDate: Mon, 2 Mar 2026 16:00:00 +0000\n\n");
    /* 8: same subject as 1 without references, not a reply: merged under a
     * new dummy together with thread 1 */
    add(&mb, 50, 1, "Message-ID: <8@x>\nSubject: hello\nDate: Mon, 2 Mar 2026 09:00:00 +0000\n\n");
    expect_thread(&mb, IMAP_THREAD_REFERENCES, false,
                  "* THREAD ((8)(1 (2 3)(4)))((5)(6))(7)");
}

static void test_thread_subject_merging(void **state)
{
    (void)state;
    /* imaptest thread4-like: a Re: reply without References goes under the
     * original by subject */
    struct mailbox a = {0};
    add(&a, 100, 1, "Message-ID: <1@x>\nSubject: topic\n\n");
    add(&a, 200, 1, "Message-ID: <2@x>\nSubject: Re: topic\n\n");
    expect_thread(&a, IMAP_THREAD_REFERENCES, false, "* THREAD (1 2)");
    /* thread6-like: two originals with the same subject: siblings under a
     * dummy */
    struct mailbox b = {0};
    add(&b, 100, 1, "Message-ID: <1@x>\nSubject: topic\n\n");
    add(&b, 200, 1, "Message-ID: <2@x>\nSubject: topic\n\n");
    expect_thread(&b, IMAP_THREAD_REFERENCES, false, "* THREAD ((1)(2))");
    /* the reply came first: the original still becomes the parent */
    struct mailbox c = {0};
    add(&c, 100, 1, "Message-ID: <1@x>\nSubject: Re: topic\n\n");
    add(&c, 200, 1, "Message-ID: <2@x>\nSubject: topic\n\n");
    expect_thread(&c, IMAP_THREAD_REFERENCES, false, "* THREAD (2 1)");
    /* empty subjects never merge */
    struct mailbox d = {0};
    add(&d, 100, 1, "Message-ID: <1@x>\n\n");
    add(&d, 200, 1, "Message-ID: <2@x>\nSubject: Re:\n\n");
    expect_thread(&d, IMAP_THREAD_REFERENCES, false, "* THREAD (1)(2)");
}

static void test_thread_merge_into_later_dummy(void **state)
{
    (void)state;
    /* the subject table prefers the dummy root (2, 3 answer a missing
     * message), which sorts after message 1: 1 joins the dummy */
    struct mailbox mb = {0};
    add(&mb, 100, 1, "Message-ID: <1@x>\nSubject: topic\n\n");
    add(&mb, 200, 1, "Message-ID: <2@x>\nReferences: <gone@x>\nSubject: Re: topic\n\n");
    add(&mb, 300, 1, "Message-ID: <3@x>\nReferences: <gone@x>\nSubject: Re: topic\n\n");
    add(&mb, 400, 1, "Message-ID: <4@x>\nSubject: else\n\n");
    expect_thread(&mb, IMAP_THREAD_REFERENCES, false, "* THREAD ((1)(2)(3))(4)");
}

static void test_thread_many_roots(void **state)
{
    (void)state;
    /* 100,000 unrelated messages: one root each, must not be quadratic */
    enum { N = 100000 };
    struct imap_sort_msg *msgs = calloc(N, sizeof(*msgs));
    char **headers = calloc(N, sizeof(*headers));
    for (size_t i = 0; i < N; i++) {
        char buf[96];
        snprintf(buf, sizeof(buf), "Message-ID: <r%zu@x>\nSubject: s%zu\n\n", i, i);
        headers[i] = strdup(buf);
        msgs[i].seq = (uint32_t)i + 1;
        msgs[i].uid = (uint32_t)i + 1;
        msgs[i].internaldate_ms = (uint64_t)(N - i) * 1000; /* newest first */
        msgs[i].header = headers[i];
        msgs[i].header_len = strlen(buf);
    }
    char *line = imap_thread(IMAP_THREAD_REFERENCES, msgs, N, false);
    char expect_start[64];
    snprintf(expect_start, sizeof(expect_start), "* THREAD (%d)(%d)", N, N - 1);
    assert_true(strncmp(line, expect_start, strlen(expect_start)) == 0);
    assert_non_null(strstr(line, "(2)(1)"));
    free(line);
    line = imap_thread(IMAP_THREAD_ORDEREDSUBJECT, msgs, N, false);
    assert_true(strncmp(line, expect_start, strlen(expect_start)) == 0);
    free(line);
    for (size_t i = 0; i < N; i++)
        free(headers[i]);
    free(headers);
    free(msgs);
}

static void test_thread_duplicates_and_loops(void **state)
{
    (void)state;
    struct mailbox mb = {0};
    /* duplicate Message-ID: the second gets a unique id */
    add(&mb, 100, 1, "Message-ID: <d@x>\nSubject: s1\n\n");
    add(&mb, 200, 1, "Message-ID: <d@x>\nSubject: s2\n\n");
    /* self reference and a 2-cycle */
    add(&mb, 300, 1, "Message-ID: <s@x>\nReferences: <s@x>\nSubject: s3\n\n");
    add(&mb, 400, 1, "Message-ID: <p@x>\nReferences: <q@x>\nSubject: s4\n\n");
    add(&mb, 500, 1, "Message-ID: <q@x>\nReferences: <p@x>\nSubject: s5\n\n");
    expect_thread(&mb, IMAP_THREAD_REFERENCES, false, "* THREAD (1)(2)(3)(5 4)");
    expect_thread(&mb, IMAP_THREAD_ORDEREDSUBJECT, false, "* THREAD (1)(2)(3)(4)(5)");
    struct mailbox empty = {0};
    expect_thread(&empty, IMAP_THREAD_REFERENCES, false, "* THREAD");
    expect_thread(&empty, IMAP_THREAD_ORDEREDSUBJECT, false, "* THREAD");
}

static void test_thread_ordered_subject(void **state)
{
    (void)state;
    struct mailbox mb = {0};
    add(&mb, 100, 1, "Subject: beta\nDate: Mon, 2 Mar 2026 10:00:00 +0000\n\n");
    add(&mb, 200, 1, "Subject: alpha\nDate: Mon, 2 Mar 2026 09:00:00 +0000\n\n");
    add(&mb, 300, 1, "Subject: Re: beta\nDate: Mon, 2 Mar 2026 12:00:00 +0000\n\n");
    add(&mb, 400, 1, "Subject: RE: Beta\nDate: Mon, 2 Mar 2026 11:00:00 +0000\n\n");
    add(&mb, 500, 1, "Subject: Re: alpha\nDate: Mon, 2 Mar 2026 13:00:00 +0000\n\n");
    add(&mb, 600, 1, "Subject: gamma\nDate: Mon, 2 Mar 2026 08:00:00 +0000\n\n");
    /* threads by their first message's date: gamma 08, alpha 09, beta 10 */
    expect_thread(&mb, IMAP_THREAD_ORDEREDSUBJECT, false, "* THREAD (6)(2 5)(1 (4)(3))");
}

static void test_thread_deep_chain(void **state)
{
    (void)state;
    /* a 20,000-message reply chain: no recursion depth problems */
    enum { N = 20000 };
    struct imap_sort_msg *msgs = calloc(N, sizeof(*msgs));
    char **headers = calloc(N, sizeof(*headers));
    for (size_t i = 0; i < N; i++) {
        char buf[128];
        if (i == 0)
            snprintf(buf, sizeof(buf), "Message-ID: <m0@x>\nSubject: chain\n\n");
        else
            snprintf(buf, sizeof(buf), "Message-ID: <m%zu@x>\nIn-Reply-To: <m%zu@x>\n\n", i,
                     i - 1);
        headers[i] = strdup(buf);
        msgs[i].seq = (uint32_t)i + 1;
        msgs[i].uid = (uint32_t)i + 1;
        msgs[i].internaldate_ms = (uint64_t)i * 1000;
        msgs[i].header = headers[i];
        msgs[i].header_len = strlen(buf);
    }
    char *line = imap_thread(IMAP_THREAD_REFERENCES, msgs, N, false);
    assert_true(strncmp(line, "* THREAD (1 2 3 ", 16) == 0);
    assert_non_null(strstr(line, " 19999 20000)"));
    free(line);
    for (size_t i = 0; i < N; i++)
        free(headers[i]);
    free(headers);
    free(msgs);
}

static void test_thread_deep_branches(void **state)
{
    (void)state;
    /* m(i) and a leaf both answer m(i-1): every level branches, so the
     * output nests N levels of parentheses */
    enum { N = 5000 };
    struct imap_sort_msg *msgs = calloc(2 * N, sizeof(*msgs));
    char **headers = calloc(2 * N, sizeof(*headers));
    for (size_t i = 0; i < 2 * N; i++) {
        char buf[128];
        size_t level = i / 2;
        if (i % 2 == 0 && level == 0)
            snprintf(buf, sizeof(buf), "Message-ID: <m0@x>\n\n");
        else if (i % 2 == 0)
            snprintf(buf, sizeof(buf), "Message-ID: <m%zu@x>\nReferences: <m%zu@x>\n\n", level,
                     level - 1);
        else
            snprintf(buf, sizeof(buf), "Message-ID: <l%zu@x>\nReferences: <m%zu@x>\n\n", level,
                     level);
        headers[i] = strdup(buf);
        msgs[i].seq = (uint32_t)i + 1;
        msgs[i].uid = (uint32_t)i + 1;
        msgs[i].internaldate_ms = (uint64_t)i * 1000;
        msgs[i].header = headers[i];
        msgs[i].header_len = strlen(buf);
    }
    /* message 1 (m0) has children 2 (l0) and 3 (m1), 3 has 4 and 5, ... */
    char *line = imap_thread(IMAP_THREAD_REFERENCES, msgs, 2 * N, false);
    assert_true(strncmp(line, "* THREAD (1 (2)(3 (4)(5 (6)(7 ", 30) == 0);
    size_t open = 0, close = 0;
    for (const char *p = line; *p != '\0'; p++) {
        open += *p == '(';
        close += *p == ')';
    }
    assert_int_equal(open, close);
    assert_int_equal(open, 1 + 2 * (N - 1) + 0);
    free(line);
    for (size_t i = 0; i < 2 * N; i++)
        free(headers[i]);
    free(headers);
    free(msgs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_subject),
        cmocka_unit_test(test_criteria),
        cmocka_unit_test(test_sort_subject_imaptest),
        cmocka_unit_test(test_sort_keys),
        cmocka_unit_test(test_thread_imaptest),
        cmocka_unit_test(test_thread_references),
        cmocka_unit_test(test_thread_subject_merging),
        cmocka_unit_test(test_thread_merge_into_later_dummy),
        cmocka_unit_test(test_thread_many_roots),
        cmocka_unit_test(test_thread_duplicates_and_loops),
        cmocka_unit_test(test_thread_ordered_subject),
        cmocka_unit_test(test_thread_deep_chain),
        cmocka_unit_test(test_thread_deep_branches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
