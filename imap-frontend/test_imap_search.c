/* test_imap_search - SEARCH program parsing and evaluation: every search
 * key, charsets (Japanese in ISO-2022-JP / UTF-8 base64 / Shift_JIS),
 * decoding, case folding, ESEARCH output and hostile input.
 * Messages live in imap-frontend/testdata/search (make_testdata.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "imap_charset.h"
#include "imap_parser.h"
#include "imap_search.h"

/* --- a small argument-tree builder: atoms, "quoted" (any byte but " and
 * backslash unescaped) and ( lists ); enough to write programs as text
 * without depending on the real command parser. ------------------------ */

struct argv_tree {
    struct imap_arg *args;
    size_t n;
};

static void args_free(struct imap_arg *args, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (args[i].type == IMAP_ARG_LIST)
            args_free(args[i].list, args[i].n_list);
        else
            free((char *)args[i].str);
    }
    free(args);
}

static struct imap_arg *parse_text(const char **pp, size_t *n_r)
{
    struct imap_arg *args = NULL;
    size_t n = 0;
    const char *p = *pp;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == ')') {
            if (*p == ')')
                p++;
            break;
        }
        args = realloc(args, (n + 1) * sizeof(*args));
        assert_non_null(args);
        struct imap_arg *a = &args[n++];
        memset(a, 0, sizeof(*a));
        if (*p == '(') {
            p++;
            a->type = IMAP_ARG_LIST;
            a->list = parse_text(&p, &a->n_list);
        } else if (*p == '"') {
            p++;
            char *buf = malloc(strlen(p) + 1);
            size_t len = 0;
            while (*p != '"' && *p != '\0') {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                buf[len++] = *p++;
            }
            if (*p == '"')
                p++;
            buf[len] = '\0';
            a->type = IMAP_ARG_QUOTED;
            a->str = buf;
            a->len = len;
        } else {
            const char *start = p;
            while (*p != '\0' && *p != ' ' && *p != '(' && *p != ')')
                p++;
            a->type = IMAP_ARG_ATOM;
            a->str = strndup(start, (size_t)(p - start));
            a->len = (size_t)(p - start);
        }
    }
    *pp = p;
    *n_r = n;
    return args;
}

static struct argv_tree tree(const char *text)
{
    struct argv_tree t;
    const char *p = text;
    t.args = parse_text(&p, &t.n);
    return t;
}

static struct imap_search_program *compile(const char *text, struct imap_search_error *err)
{
    struct argv_tree t = tree(text);
    struct imap_search_program *prog = imap_search_parse(t.args, t.n, true, NULL, err);
    args_free(t.args, t.n);
    return prog;
}

/* parse must fail with kind; the error text must contain fragment */
static void expect_error(const char *text, enum imap_search_error_kind kind, const char *fragment)
{
    struct imap_search_error err;
    struct imap_search_program *prog = compile(text, &err);
    if (prog != NULL)
        fail_msg("\"%s\" parsed, expected an error", text);
    assert_int_equal(err.kind, kind);
    if (strstr(err.text, fragment) == NULL)
        fail_msg("\"%s\": error \"%s\" lacks \"%s\"", text, err.text, fragment);
}

/* --- messages -------------------------------------------------------------- */

static char *load(const char *name, size_t *len_r)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/imap-frontend/testdata/search/%s", MX_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    buf[size] = '\0';
    fclose(f);
    *len_r = (size_t)size;
    return buf;
}

static const uint32_t view_uids[] = {10, 20, 30, 40, 50};
static const struct imap_search_view view5 = {view_uids, 5, NULL, 0};

static struct imap_search_msg index_msg(uint32_t seq, uint32_t flags)
{
    struct imap_search_msg m = {0};
    m.seq = seq;
    m.uid = view_uids[seq - 1];
    m.flags = flags;
    m.keywords = "$Forwarded Junk";
    m.internaldate_ms = (uint64_t)1772323200 * 1000; /* 2026-03-01 00:00:00 UTC */
    m.size = 1000;
    m.modseq = 77;
    return m;
}

/* does program text match msg? (asserts it parses) */
static bool matches_view(const char *text, const struct imap_search_view *view,
                         const struct imap_search_msg *msg)
{
    struct imap_search_error err;
    struct imap_search_program *prog = compile(text, &err);
    if (prog == NULL)
        fail_msg("\"%s\" did not parse: %s", text, err.text);
    bool hit = imap_search_match(prog, view, msg);
    imap_search_free(prog);
    return hit;
}

static bool matches(const char *text, const struct imap_search_msg *msg)
{
    return matches_view(text, &view5, msg);
}

static bool file_matches(const char *text, const char *file)
{
    size_t len;
    char *raw = load(file, &len);
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = raw;
    m.raw_len = len;
    m.size = len;
    bool hit = matches(text, &m);
    free(raw);
    return hit;
}

#define assert_match(text, msg) \
    do { if (!matches(text, msg)) fail_msg("expected a match: %s", text); } while (0)
#define assert_no_match(text, msg) \
    do { if (matches(text, msg)) fail_msg("expected no match: %s", text); } while (0)
#define assert_file_match(text, file) \
    do { if (!file_matches(text, file)) fail_msg("%s: expected a match: %s", file, text); } while (0)
#define assert_file_no_match(text, file) \
    do { if (file_matches(text, file)) fail_msg("%s: expected no match: %s", file, text); } while (0)

/* --- index keys -------------------------------------------------------------- */

static void test_flag_keys(void **state)
{
    (void)state;
    struct imap_search_msg seen = index_msg(1, IMAP_SEARCH_FLAG_SEEN | IMAP_SEARCH_FLAG_ANSWERED);
    struct imap_search_msg fresh = index_msg(2, IMAP_SEARCH_FLAG_RECENT | IMAP_SEARCH_FLAG_FLAGGED |
                                                    IMAP_SEARCH_FLAG_DELETED | IMAP_SEARCH_FLAG_DRAFT);
    assert_match("ALL", &seen);
    assert_match("SEEN", &seen);
    assert_no_match("UNSEEN", &seen);
    assert_match("ANSWERED", &seen);
    assert_no_match("UNANSWERED", &seen);
    assert_match("UNFLAGGED UNDELETED UNDRAFT OLD", &seen);
    assert_no_match("FLAGGED", &seen);
    assert_no_match("DELETED", &seen);
    assert_no_match("DRAFT", &seen);
    assert_no_match("RECENT", &seen);
    assert_no_match("NEW", &seen);
    assert_match("new", &fresh); /* keys are case-insensitive */
    assert_match("RECENT FLAGGED DELETED DRAFT UNSEEN UNANSWERED", &fresh);
    assert_no_match("OLD", &fresh);
    assert_match("NOT SEEN", &fresh);
    assert_match("OR SEEN FLAGGED", &fresh);
    assert_match("OR SEEN FLAGGED", &seen);
    assert_no_match("OR DRAFT DELETED", &seen);
    assert_match("(SEEN ANSWERED)", &seen);
    assert_no_match("(SEEN FLAGGED)", &seen);
    assert_match("NOT (SEEN FLAGGED)", &seen);
}

static void test_keyword_keys(void **state)
{
    (void)state;
    struct imap_search_msg m = index_msg(1, IMAP_SEARCH_FLAG_SEEN);
    assert_match("KEYWORD $Forwarded", &m);
    assert_match("KEYWORD junk", &m);
    assert_no_match("KEYWORD Jun", &m); /* whole keywords only */
    assert_no_match("KEYWORD NonJunk", &m);
    assert_match("UNKEYWORD NonJunk", &m);
    assert_no_match("UNKEYWORD Junk", &m);
    assert_match("KEYWORD \\Seen", &m);
    assert_no_match("KEYWORD \\Flagged", &m);
    assert_no_match("KEYWORD \\Bogus", &m);
    assert_match("UNKEYWORD \\Bogus", &m);
    m.keywords = NULL;
    assert_no_match("KEYWORD Junk", &m);
    assert_match("UNKEYWORD Junk", &m);
}

static void test_internal_date_keys(void **state)
{
    (void)state;
    struct imap_search_msg m = index_msg(1, 0);
    /* 2026-03-01 23:59:59.999 UTC: still 1-Mar in UTC */
    m.internaldate_ms = (uint64_t)1772323200 * 1000 + 86399999;
    assert_match("ON 1-Mar-2026", &m);
    assert_match("ON \"1-mar-2026\"", &m);
    assert_match("ON 01-Mar-2026", &m);
    assert_no_match("ON 2-Mar-2026", &m);
    assert_match("BEFORE 2-Mar-2026", &m);
    assert_no_match("BEFORE 1-Mar-2026", &m);
    assert_match("SINCE 1-Mar-2026", &m);
    assert_match("SINCE 28-Feb-2026", &m);
    assert_no_match("SINCE 2-Mar-2026", &m);
    assert_match("SINCE 29-Feb-2024 BEFORE 1-Jan-2100", &m);
}

static void test_size_and_sets(void **state)
{
    (void)state;
    struct imap_search_msg m3 = index_msg(3, 0); /* uid 30 */
    struct imap_search_msg m5 = index_msg(5, 0); /* uid 50 */
    assert_match("LARGER 999", &m3);
    assert_no_match("LARGER 1000", &m3);
    assert_match("SMALLER 1001", &m3);
    assert_no_match("SMALLER 1000", &m3);
    assert_match("3", &m3);
    assert_no_match("4", &m3);
    assert_match("1:3", &m3);
    assert_match("5:2", &m3);
    assert_match("1,3,9", &m3);
    assert_no_match("1,2,4:5", &m3);
    assert_match("*", &m5);
    assert_no_match("*", &m3);
    assert_match("4:*", &m5);
    assert_match("9:*", &m5);   /* n:* with n past the end is max..n */
    assert_no_match("9:*", &m3);
    assert_match("2:*", &m3);
    assert_match("UID 30", &m3);
    assert_match("UID 25:35", &m3);
    assert_no_match("UID 3", &m3);
    assert_match("UID *", &m5);
    assert_match("UID 45:*", &m5);
    assert_match("UID 60:*", &m5);
    assert_no_match("UID 60:*", &m3);
    assert_match("UID 1:4294967295", &m3);
    assert_match("MODSEQ 77", &m3);
    assert_match("MODSEQ 5", &m3);
    assert_no_match("MODSEQ 78", &m3);
    assert_match("MODSEQ \"/flags/\\\\Seen\" all 70", &m3);
    /* an empty mailbox has no "*": nothing matches */
    struct imap_search_view empty = {view_uids, 0, NULL, 0};
    assert_false(matches_view("*", &empty, &m3));

    /* $: the saved result as UIDs */
    const uint32_t saved[] = {20, 30};
    struct imap_search_view with_saved = {view_uids, 5, saved, 2};
    assert_true(matches_view("$", &with_saved, &m3));
    assert_false(matches_view("$", &with_saved, &m5));
    assert_true(matches_view("UID $", &with_saved, &m3));
    assert_true(matches_view("OR $ 5", &with_saved, &m5));
    assert_false(matches_view("$", &view5, &m3)); /* nothing saved */

    struct imap_search_error err;
    struct imap_search_program *prog = compile("MODSEQ 1 $", &err);
    assert_non_null(prog);
    assert_true(imap_search_uses_modseq(prog));
    assert_true(imap_search_uses_searchres(prog));
    imap_search_free(prog);
}

static void test_need(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum imap_search_need need;
    } cases[] = {
        {"SEEN 1:5 LARGER 5", IMAP_SEARCH_NEED_INDEX},
        {"FROM x", IMAP_SEARCH_NEED_HEADER},
        {"SENTON 1-Jan-2020", IMAP_SEARCH_NEED_HEADER},
        {"OR SEEN BODY x", IMAP_SEARCH_NEED_BODY},
        {"NOT (SEEN (TEXT x))", IMAP_SEARCH_NEED_BODY},
        {"HEADER X-Foo bar SINCE 1-Jan-2020", IMAP_SEARCH_NEED_HEADER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct imap_search_error err;
        struct imap_search_program *prog = compile(cases[i].text, &err);
        assert_non_null(prog);
        if (imap_search_need(prog) != cases[i].need)
            fail_msg("%s: need %d", cases[i].text, imap_search_need(prog));
        imap_search_free(prog);
    }
}

/* --- header and body keys ------------------------------------------------------ */

static void test_header_keys(void **state)
{
    (void)state;
    const char *f = "latin1_qp.eml";
    assert_file_match("FROM müller", f);          /* decoded Q encoded-word */
    assert_file_match("FROM \"JÜRGEN M\"", f);    /* Unicode case folding */
    assert_file_match("FROM jm@example.de", f);   /* the address too */
    assert_file_no_match("FROM anna", f);
    assert_file_match("TO anna@EXAMPLE.de", f);
    assert_file_match("CC bob", f);
    assert_file_no_match("BCC bob", f);
    assert_file_match("SUBJECT \"grüße aus\"", f);
    assert_file_match("SUBJECT GRÜSSE", f);       /* ß folds to ss */
    assert_file_match("SUBJECT \"\"", f);
    assert_file_match("HEADER X-Ticket abc-123", f);
    assert_file_match("HEADER x-ticket \"\"", f);  /* present at all */
    assert_file_no_match("HEADER X-Missing \"\"", f);
    assert_file_no_match("HEADER X-Ticket 999", f);
    assert_file_match("HEADER Content-Transfer-Encoding QUOTED", f);
    /* SUBJECT is not the body */
    assert_file_no_match("SUBJECT schöne", f);
    /* unfolded header: "help\r\n\twith" reads as "help with" */
    assert_file_match("SUBJECT \"help with folding\"", "multipart.eml");
    assert_file_match("FROM \"support desk\"", "multipart.eml");
    assert_file_match("SUBJECT \"ΚΑΛΗΜΕΡΑ ΚΌΣΜΕ\"", "cyrillic_greek.eml");
    assert_file_match("SUBJECT \"καλημερα\"", "cyrillic_greek.eml");
}

/* RFC 3501 6.4.4: FROM/TO/CC/BCC search the ENVELOPE addresses, where
 * comments and folding inside an addr-spec are gone (RFC 5322 3.4.1). */
static void test_address_keys_use_parsed_addresses(void **state)
{
    (void)state;
    static const char raw[] = "From: <alpha (a note)@ (more)\r\n beta.example>\r\n"
                              "To: gamma@delta.example (Real Gamma), Name <eps@zeta.example>\r\n"
                              "Cc: team: one@g.example, =?utf-8?q?J=C3=B6rg?= <two@g.example>;\r\n"
                              "Subject: (not an address) x@y\r\n"
                              "\r\nbody\r\n";
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = raw;
    m.raw_len = sizeof raw - 1;
    m.size = m.raw_len;
    assert_match("FROM alpha@beta.example", &m);
    assert_match("FROM \"ALPHA@beta\"", &m);
    assert_match("TO \"real gamma\"", &m);        /* the raw text still counts */
    assert_match("TO \"Name <eps@zeta.example>\"", &m);
    assert_match("CC \"jörg <two@g\"", &m);       /* decoded display name */
    assert_match("CC team", &m);
    assert_no_match("BCC alpha", &m);
    assert_no_match("FROM gamma", &m);
    /* SUBJECT is no address field: no parsing there */
    assert_no_match("SUBJECT \"x@y,\"", &m);
    assert_match("SUBJECT \"(not an address) x@y\"", &m);
}

static void test_sent_date_keys(void **state)
{
    (void)state;
    /* Date: Tue, 3 Mar 2026 23:30:00 -0500 is 4 Mar in UTC; SENT* use the
     * header's own zone */
    const char *f = "jp_utf8_base64.eml";
    assert_file_match("SENTON 3-Mar-2026", f);
    assert_file_no_match("SENTON 4-Mar-2026", f);
    assert_file_match("SENTBEFORE 4-Mar-2026", f);
    assert_file_no_match("SENTBEFORE 3-Mar-2026", f);
    assert_file_match("SENTSINCE 3-Mar-2026", f);
    assert_file_no_match("SENTSINCE 4-Mar-2026", f);
    /* no Date: never matches SENT* */
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = "Subject: x\r\n\r\nbody\r\n";
    m.raw_len = strlen(m.raw);
    assert_no_match("SENTSINCE 1-Jan-1970", &m);
    assert_no_match("SENTBEFORE 1-Jan-2100", &m);
}

static void test_body_and_text(void **state)
{
    (void)state;
    const char *f = "multipart.eml";
    assert_file_match("BODY needle-alpha", f);      /* text/plain */
    assert_file_match("BODY NEEDLE-BETA", f);       /* text/html, QP */
    assert_file_match("BODY ✓", f);                 /* QP-encoded UTF-8 */
    assert_file_no_match("BODY ATTACHMENTONLYWORD", f); /* not a text part */
    assert_file_no_match("BODY support@example.com", f); /* header only */
    assert_file_match("TEXT support@example.com", f);
    assert_file_match("TEXT needle-alpha", f);
    assert_file_no_match("TEXT nowhere-to-be-found", f);
    assert_file_match("BODY \"\"", f);
    assert_file_match("BODY \"straße\"", "latin1_qp.eml");
    assert_file_match("BODY \"STRASSE UND STRASSE\"", "latin1_qp.eml");
    assert_file_match("BODY привет", "cyrillic_greek.eml");   /* windows-1251 */
    assert_file_match("BODY МОСКВЫ", "cyrillic_greek.eml");
    assert_file_match("OR BODY nomatch FROM ivan", "cyrillic_greek.eml");

    /* decomposed (NFD) text matches a precomposed search string */
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Herr Mu\xcc\x88ller\r\n";
    m.raw_len = strlen(m.raw);
    assert_match("BODY MÜLLER", &m);
    assert_no_match("BODY mueller", &m);
}

static void test_japanese(void **state)
{
    (void)state;
    /* ISO-2022-JP 7bit message searched in UTF-8 */
    assert_file_match("CHARSET UTF-8 BODY 予算", "jp_iso2022.eml");
    assert_file_match("CHARSET UTF-8 SUBJECT 議事録", "jp_iso2022.eml");
    assert_file_match("CHARSET UTF-8 TEXT 議事録", "jp_iso2022.eml");
    assert_file_no_match("CHARSET UTF-8 BODY 東京", "jp_iso2022.eml");
    assert_file_match("FROM taro", "jp_iso2022.eml");
    /* UTF-8 base64 message */
    assert_file_match("CHARSET UTF-8 BODY オフィス", "jp_utf8_base64.eml");
    assert_file_match("CHARSET UTF-8 SUBJECT 移転", "jp_utf8_base64.eml");
    assert_file_no_match("CHARSET UTF-8 BODY 予算", "jp_utf8_base64.eml");
    /* half-width katakana equals full-width after NFKC */
    assert_file_match("CHARSET UTF-8 BODY ｵﾌｨｽ", "jp_utf8_base64.eml");
    /* Shift_JIS 8bit */
    assert_file_match("CHARSET UTF-8 BODY 大阪支店", "jp_sjis.eml");

    /* the search string itself in ISO-2022-JP: "予算" and "移転" */
    char program[256];
    snprintf(program, sizeof(program), "CHARSET ISO-2022-JP BODY \"%s\"",
             "\x1b$B" "M=;;" "\x1b(B");
    assert_file_match(program, "jp_iso2022.eml");
    assert_file_no_match(program, "jp_utf8_base64.eml");
    snprintf(program, sizeof(program), "CHARSET iso-2022-jp SUBJECT \"%s\"",
             "\x1b$B" "0\\\\E>" "\x1b(B");
    assert_file_match(program, "jp_utf8_base64.eml");
    /* Shift_JIS search string: "大阪" */
    snprintf(program, sizeof(program), "CHARSET Shift_JIS BODY \"%s\"", "\x91\xe5\x8d\xe3");
    assert_file_match(program, "jp_sjis.eml");
}

static void test_other_charsets(void **state)
{
    (void)state;
    /* KOI8-R "москвы" */
    assert_file_match("CHARSET KOI8-R BODY \"\xcd\xcf\xd3\xcb\xd7\xd9\"", "cyrillic_greek.eml");
    /* ISO-8859-1 "müller" */
    assert_file_match("CHARSET ISO-8859-1 FROM \"m\xfcller\"", "latin1_qp.eml");
    assert_file_match("CHARSET us-ascii FROM jm", "latin1_qp.eml");
    assert_file_match("CHARSET \"UTF-8\" FROM jm", "latin1_qp.eml");
}

/* --- errors ------------------------------------------------------------------ */

static void test_parse_errors(void **state)
{
    (void)state;
    expect_error("", IMAP_SEARCH_ERR_BAD, "missing search key");
    expect_error("BOGUS", IMAP_SEARCH_ERR_BAD, "unknown search key \"BOGUS\"");
    expect_error("SEEN FOO", IMAP_SEARCH_ERR_BAD, "unknown search key \"FOO\"");
    expect_error("\"SEEN\"", IMAP_SEARCH_ERR_BAD, "unknown search key");
    expect_error("FROM", IMAP_SEARCH_ERR_BAD, "missing string after search key FROM");
    expect_error("FROM (x)", IMAP_SEARCH_ERR_BAD, "must be a string");
    expect_error("HEADER Subject", IMAP_SEARCH_ERR_BAD, "missing string after search key HEADER");
    expect_error("HEADER \"\" x", IMAP_SEARCH_ERR_BAD, "invalid header field name");
    expect_error("NOT", IMAP_SEARCH_ERR_BAD, "missing search key after NOT");
    expect_error("OR SEEN", IMAP_SEARCH_ERR_BAD, "missing search key after OR");
    expect_error("()", IMAP_SEARCH_ERR_BAD, "empty search key list");
    expect_error("BEFORE", IMAP_SEARCH_ERR_BAD, "missing date");
    expect_error("BEFORE 32-Jan-2020", IMAP_SEARCH_ERR_BAD, "invalid date \"32-Jan-2020\"");
    expect_error("ON 29-Feb-2023", IMAP_SEARCH_ERR_BAD, "invalid date");
    expect_error("SINCE 1-Foo-2020", IMAP_SEARCH_ERR_BAD, "invalid date");
    expect_error("SENTON 2020-01-01", IMAP_SEARCH_ERR_BAD, "invalid date");
    expect_error("SINCE 1-Jan-20", IMAP_SEARCH_ERR_BAD, "invalid date");
    expect_error("SINCE 123-Jan-2020", IMAP_SEARCH_ERR_BAD, "invalid date");
    expect_error("LARGER abc", IMAP_SEARCH_ERR_BAD, "LARGER needs a number");
    expect_error("SMALLER 99999999999999999999", IMAP_SEARCH_ERR_BAD, "SMALLER needs a number");
    expect_error("1:", IMAP_SEARCH_ERR_BAD, "invalid sequence set");
    expect_error("0", IMAP_SEARCH_ERR_BAD, "invalid sequence set");
    expect_error("1,,2", IMAP_SEARCH_ERR_BAD, "invalid sequence set");
    expect_error("1,", IMAP_SEARCH_ERR_BAD, "invalid sequence set");
    expect_error("4294967296", IMAP_SEARCH_ERR_BAD, "invalid sequence set");
    expect_error("UID x", IMAP_SEARCH_ERR_BAD, "invalid UID set");
    expect_error("UID", IMAP_SEARCH_ERR_BAD, "missing sequence set");
    expect_error("KEYWORD", IMAP_SEARCH_ERR_BAD, "missing flag");
    expect_error("KEYWORD \"a b\"", IMAP_SEARCH_ERR_BAD, "flag keyword atom");
    expect_error("MODSEQ x", IMAP_SEARCH_ERR_BAD, "mod-sequence number");
    expect_error("MODSEQ \"/flags/x\" bogus 5", IMAP_SEARCH_ERR_BAD, "priv, shared or all");
    expect_error("CHARSET", IMAP_SEARCH_ERR_BAD, "charset name");
    expect_error("CHARSET UTF-8", IMAP_SEARCH_ERR_BAD, "missing search key");
    expect_error("CHARSET X-NO-SUCH-CHARSET ALL", IMAP_SEARCH_ERR_BADCHARSET, "unsupported charset");
    expect_error("CHARSET UTF-8 BODY \"\xff\xfe\"", IMAP_SEARCH_ERR_BAD, "not valid UTF-8");
    expect_error("RETURN (BOGUS) ALL", IMAP_SEARCH_ERR_BAD, "unknown SEARCH RETURN option");
    expect_error("RETURN ALL", IMAP_SEARCH_ERR_BAD, "RETURN needs a list");

    /* RETURN where ESEARCH is not offered */
    struct argv_tree t = tree("RETURN (MIN) ALL");
    struct imap_search_error err;
    assert_null(imap_search_parse(t.args, t.n, false, NULL, &err));
    assert_int_equal(err.kind, IMAP_SEARCH_ERR_BAD);
    args_free(t.args, t.n);
}

static void test_nesting_limits(void **state)
{
    (void)state;
    /* 10,000 nested lists: built directly (no text recursion) */
    enum { DEPTH = 10000 };
    struct imap_arg *levels = calloc(DEPTH + 1, sizeof(*levels));
    for (size_t i = 0; i < DEPTH; i++) {
        levels[i].type = IMAP_ARG_LIST;
        levels[i].list = &levels[i + 1];
        levels[i].n_list = 1;
    }
    levels[DEPTH].type = IMAP_ARG_ATOM;
    levels[DEPTH].str = "ALL";
    levels[DEPTH].len = 3;
    struct imap_search_error err;
    assert_null(imap_search_parse(levels, 1, true, NULL, &err));
    assert_int_equal(err.kind, IMAP_SEARCH_ERR_BAD);
    assert_non_null(strstr(err.text, "search nested too deeply"));
    free(levels);

    /* 10,000 NOTs in a row: same limit */
    struct imap_arg *nots = calloc(DEPTH + 1, sizeof(*nots));
    for (size_t i = 0; i < DEPTH; i++) {
        nots[i].type = IMAP_ARG_ATOM;
        nots[i].str = "NOT";
        nots[i].len = 3;
    }
    nots[DEPTH].type = IMAP_ARG_ATOM;
    nots[DEPTH].str = "SEEN";
    nots[DEPTH].len = 4;
    assert_null(imap_search_parse(nots, DEPTH + 1, true, NULL, &err));
    assert_non_null(strstr(err.text, "search nested too deeply"));

    /* 63 NOTs are fine (odd count: NOT SEEN) */
    struct imap_search_program *prog = imap_search_parse(nots + DEPTH - 63, 64, true, NULL, &err);
    assert_non_null(prog);
    struct imap_search_msg m = index_msg(1, 0);
    assert_true(imap_search_match(prog, &view5, &m));
    imap_search_free(prog);
    free(nots);

    /* too many keys: a flat list of 20,000 SEEN */
    enum { MANY = 20000 };
    struct imap_arg *flat = calloc(MANY, sizeof(*flat));
    for (size_t i = 0; i < MANY; i++) {
        flat[i].type = IMAP_ARG_ATOM;
        flat[i].str = "SEEN";
        flat[i].len = 4;
    }
    assert_null(imap_search_parse(flat, MANY, true, NULL, &err));
    assert_non_null(strstr(err.text, "too many search keys"));
    struct imap_search_limits limits;
    imap_search_limits_default(&limits);
    limits.max_keys = MANY + 1;
    prog = imap_search_parse(flat, MANY, true, &limits, &err);
    assert_non_null(prog);
    imap_search_free(prog);
    free(flat);
}

/* --- responses ------------------------------------------------------------------ */

static void expect_format(const char *program, bool uid, const uint32_t *nums, size_t n,
                          uint64_t modseq, const char *expected)
{
    struct imap_search_error err;
    struct imap_search_program *prog = compile(program, &err);
    assert_non_null(prog);
    char *line = imap_search_format_result(prog, "A1", uid, nums, n, modseq);
    if (expected == NULL)
        assert_null(line);
    else
        assert_string_equal(line, expected);
    free(line);
    imap_search_free(prog);
}

static void test_format(void **state)
{
    (void)state;
    const uint32_t nums[] = {2, 3, 4, 7, 9, 10};
    expect_format("ALL", false, nums, 6, 0, "* SEARCH 2 3 4 7 9 10");
    expect_format("ALL", false, nums, 0, 0, "* SEARCH");
    expect_format("MODSEQ 5", false, nums, 2, 91, "* SEARCH 2 3 (MODSEQ 91)");
    expect_format("RETURN (MIN MAX COUNT ALL) ALL", true, nums, 6, 0,
                  "* ESEARCH (TAG \"A1\") UID MIN 2 MAX 10 COUNT 6 ALL 2:4,7,9:10");
    expect_format("RETURN () ALL", false, nums, 6, 0, "* ESEARCH (TAG \"A1\") ALL 2:4,7,9:10");
    expect_format("RETURN (COUNT) ALL", false, nums, 0, 0, "* ESEARCH (TAG \"A1\") COUNT 0");
    expect_format("RETURN (MIN MAX) ALL", false, nums, 0, 0, "* ESEARCH (TAG \"A1\")");
    expect_format("RETURN (SAVE) ALL", false, nums, 6, 0, NULL);
    expect_format("RETURN (SAVE MIN) ALL", false, nums, 6, 0, "* ESEARCH (TAG \"A1\") MIN 2");
    expect_format("RETURN (COUNT) MODSEQ 1", false, nums, 3, 12,
                  "* ESEARCH (TAG \"A1\") COUNT 3 MODSEQ 12");

    struct imap_search_error err;
    struct imap_search_program *prog = compile("RETURN (SAVE MIN MAX) ALL", &err);
    assert_non_null(prog);
    assert_true(imap_search_has_return(prog));
    uint32_t save[] = {2, 3, 4, 7};
    assert_int_equal(imap_search_save_filter(prog, save, 4), 2);
    assert_int_equal(save[0], 2);
    assert_int_equal(save[1], 7);
    imap_search_free(prog);
    prog = compile("RETURN (SAVE MIN COUNT) ALL", &err);
    uint32_t save2[] = {2, 3, 4, 7};
    assert_int_equal(imap_search_save_filter(prog, save2, 4), 4);
    imap_search_free(prog);
    prog = compile("ALL", &err);
    assert_false(imap_search_has_return(prog));
    imap_search_force_esearch(prog); /* IMAP4rev2 */
    char *line = imap_search_format_result(prog, "B2", true, nums, 2, 0);
    assert_string_equal(line, "* ESEARCH (TAG \"B2\") UID ALL 2:3");
    free(line);
    imap_search_free(prog);
}

/* SORT / THREAD: "charset key..." without the CHARSET word */
static void test_charset_first(void **state)
{
    (void)state;
    struct imap_search_error err;
    struct argv_tree t = tree("UTF-8 SUBJECT 議事録");
    struct imap_search_program *prog = imap_search_parse_charset(t.args, t.n, NULL, &err);
    args_free(t.args, t.n);
    assert_non_null(prog);
    assert_int_equal(imap_search_need(prog), IMAP_SEARCH_NEED_HEADER);
    size_t len;
    char *raw = load("jp_iso2022.eml", &len);
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = raw;
    m.raw_len = len;
    assert_true(imap_search_match(prog, &view5, &m));
    imap_search_free(prog);
    free(raw);

    t = tree("X-NO-SUCH ALL");
    assert_null(imap_search_parse_charset(t.args, t.n, NULL, &err));
    assert_int_equal(err.kind, IMAP_SEARCH_ERR_BADCHARSET);
    args_free(t.args, t.n);
    t = tree("US-ASCII");
    assert_null(imap_search_parse_charset(t.args, t.n, NULL, &err));
    assert_int_equal(err.kind, IMAP_SEARCH_ERR_BAD);
    args_free(t.args, t.n);
    t = tree("US-ASCII RETURN (ALL) ALL"); /* no RETURN in SORT/THREAD */
    assert_null(imap_search_parse_charset(t.args, t.n, NULL, &err));
    args_free(t.args, t.n);
}

/* the contract with the real command parser (imap_parser.c): its atoms,
 * NIL, quoted strings, literals and lists feed the search parser */
static void test_with_command_parser(void **state)
{
    (void)state;
    /* the reader's layout: literal announcement, CRLF, bytes, NUL */
    static const char cmd[] = "A7 UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 "
                              "OR SUBJECT NIL (FROM \"Jürgen\" BODY {7}\r\nschöne\0) "
                              "NOT DELETED UID 1:* $";
    struct imap_parse_options opts = {0};
    opts.utf8_accept = true;
    struct imap_command parsed;
    memset(&parsed, 0, sizeof(parsed));
    if (imap_parse_command(cmd, sizeof(cmd) - 1, &opts, &parsed) != 0)
        fail_msg("command parser: %s", parsed.error);
    assert_true(parsed.uid);
    assert_string_equal(parsed.name, "SEARCH");
    struct imap_search_error err;
    struct imap_search_program *prog =
        imap_search_parse(parsed.args, parsed.n_args, true, NULL, &err);
    if (prog == NULL)
        fail_msg("search parser: %s", err.text);
    assert_int_equal(imap_search_need(prog), IMAP_SEARCH_NEED_BODY);
    assert_true(imap_search_uses_searchres(prog));
    size_t len;
    char *raw = load("latin1_qp.eml", &len);
    struct imap_search_msg m = index_msg(2, 0); /* uid 20 */
    m.raw = raw;
    m.raw_len = len;
    const uint32_t saved[] = {20};
    struct imap_search_view view = {view_uids, 5, saved, 1};
    assert_true(imap_search_match(prog, &view, &m));
    m.flags = IMAP_SEARCH_FLAG_DELETED;
    assert_false(imap_search_match(prog, &view, &m));
    imap_search_free(prog);
    free(raw);
    imap_command_free(&parsed);
}

/* --- cost bounds ------------------------------------------------------------------ */

static char *big_base64_message(size_t body_bytes, const char *needle_at_end, size_t *len_r)
{
    /* body_bytes of "abcd..." lines, base64 encoded, needle last */
    const char *head = "Subject: big\r\nContent-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: base64\r\n\r\n";
    size_t plain_len = body_bytes + strlen(needle_at_end);
    char *plain = malloc(plain_len);
    for (size_t i = 0; i < body_bytes; i++)
        plain[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
    memcpy(plain + body_bytes, needle_at_end, strlen(needle_at_end));
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t cap = strlen(head) + plain_len / 3 * 4 + plain_len / 57 * 2 + 16;
    char *msg = malloc(cap);
    size_t n = strlen(head);
    memcpy(msg, head, n);
    size_t line = 0;
    for (size_t i = 0; i < plain_len; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)plain[i] << 16;
        size_t left = plain_len - i;
        if (left > 1)
            v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
        if (left > 2)
            v |= (unsigned char)plain[i + 2];
        msg[n++] = b64[(v >> 18) & 63];
        msg[n++] = b64[(v >> 12) & 63];
        msg[n++] = left > 1 ? b64[(v >> 6) & 63] : '=';
        msg[n++] = left > 2 ? b64[v & 63] : '=';
        if (++line == 19) {
            msg[n++] = '\r';
            msg[n++] = '\n';
            line = 0;
        }
    }
    free(plain);
    *len_r = n;
    return msg;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_big_body(void **state)
{
    (void)state;
    size_t len;
    char *raw = big_base64_message(20u * 1024 * 1024, "FINALNEEDLE", &len);
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = raw;
    m.raw_len = len;
    /* default: at most 16 MiB decoded, the needle after 20 MB is not reached */
    assert_no_match("BODY finalneedle", &m);

    /* a 32 MiB limit reaches it: the whole 20 MB decode + fold + search
     * must be linear (well under a second natively; sanitizers are slow) */
    struct imap_search_limits limits;
    imap_search_limits_default(&limits);
    limits.max_decode_bytes = 32u * 1024 * 1024;
    struct argv_tree t = tree("BODY finalneedle");
    struct imap_search_error err;
    struct imap_search_program *prog = imap_search_parse(t.args, t.n, true, &limits, &err);
    args_free(t.args, t.n);
    assert_non_null(prog);
    double start = seconds_now();
    assert_true(imap_search_match(prog, &view5, &m));
    double took = seconds_now() - start;
    if (took > 30.0)
        fail_msg("20 MB body search took %.1f s", took);
    imap_search_free(prog);
    free(raw);
}

static void test_hostile_messages(void **state)
{
    (void)state;
    /* deep multipart nesting, NULs, no header end, garbage encodings */
    size_t cap = 200000, n = 0;
    char *raw = malloc(cap);
    for (int i = 0; i < 5000 && n + 100 < cap; i++)
        n += (size_t)snprintf(raw + n, cap - n,
                              "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
    n += (size_t)snprintf(raw + n, cap - n, "\r\ndeep text\r\n");
    struct imap_search_msg m = index_msg(1, 0);
    m.raw = raw;
    m.raw_len = n;
    (void)matches("TEXT deep", &m); /* must not crash; result unspecified */
    (void)matches("SUBJECT x", &m);
    const char junk[] = "Subject: =?utf-8?B?////?= \0 x\r\nDate: Mon, 99 Foo 99999\r\n"
                        "Content-Type: text/plain; charset=x-nonexistent\r\n"
                        "Content-Transfer-Encoding: base64\r\n\r\n!!!!\0\xff\xfe";
    m.raw = junk;
    m.raw_len = sizeof(junk) - 1;
    assert_no_match("SENTSINCE 1-Jan-1970", &m);
    (void)matches("TEXT zzz", &m);
    assert_match("BODY \"\"", &m);
    m.raw = "no header end at all";
    m.raw_len = strlen(m.raw);
    assert_no_match("SUBJECT x", &m);
    (void)matches("BODY all", &m);
    free(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flag_keys),
        cmocka_unit_test(test_keyword_keys),
        cmocka_unit_test(test_internal_date_keys),
        cmocka_unit_test(test_size_and_sets),
        cmocka_unit_test(test_need),
        cmocka_unit_test(test_header_keys),
        cmocka_unit_test(test_address_keys_use_parsed_addresses),
        cmocka_unit_test(test_sent_date_keys),
        cmocka_unit_test(test_body_and_text),
        cmocka_unit_test(test_japanese),
        cmocka_unit_test(test_other_charsets),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_nesting_limits),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_charset_first),
        cmocka_unit_test(test_with_command_parser),
        cmocka_unit_test(test_big_body),
        cmocka_unit_test(test_hostile_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
