/* test_mailbox_name - modified UTF-7, name validation, Maildir++ mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mailbox_name.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- modified UTF-7 ---------------------------------------------------- */

struct mutf7_case {
    const char *mutf7;
    const char *utf8;
};

/* Expected forms computed independently (UTF-16BE + base64, ',' for '/'),
 * plus the example of RFC 3501 5.1.3. */
static const struct mutf7_case mutf7_cases[] = {
    { "INBOX", "INBOX" },
    { "", "" },
    { "&-", "&" },
    { "a&-b&-", "a&b&" },
    { "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
    { "&ZeVnLIqeMG4w1TCpMOswwA-", "日本語のフォルダ" },
    { "&U9dP4TDIMOwwpA-/&Tgtm+DBN-", "受信トレイ/下書き" },
    { "&2D3c5w- Mail &2D3eAA-", "📧 Mail 😀" },
    { "Entw&APw-rfe", "Entwürfe" },
    { "&AOk-&-&AOk-", "é&é" },
    { "&AOk--", "é-" },
    { "&AIU-", "\xc2\x85" },          /* C1 control: valid mUTF-7, refused as a name */
    { "&AAE-", "\x01" },              /* C0 control likewise */
};

static void test_mutf7_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof mutf7_cases / sizeof mutf7_cases[0]; i++) {
        const struct mutf7_case *c = &mutf7_cases[i];
        char *out = NULL;
        const char *error = NULL;
        if (mailbox_name_mutf7_decode(c->mutf7, strlen(c->mutf7), &out, &error) != 0)
            fail_msg("decode %s: %s", c->mutf7, error);
        assert_string_equal(out, c->utf8);
        free(out);
        if (mailbox_name_mutf7_encode(c->utf8, strlen(c->utf8), &out, &error) != 0)
            fail_msg("encode %s: %s", c->utf8, error);
        assert_string_equal(out, c->mutf7);
        free(out);
    }
}

struct bad_case {
    const char *in;
    size_t len;
    const char *why; /* substring of the error */
};

static const struct bad_case bad_mutf7[] = {
    { S("&"), "unterminated" },
    { S("abc&ZeVn"), "unterminated" },
    { S("&A-"), "superfluous" },
    { S("&AA-"), "superfluous" },
    { S("&AOkA-"), "superfluous" },
    { S("&AGE-"), "printable ASCII" },      /* 'a' */
    { S("&AC8-"), "printable ASCII" },      /* '/' hidden in base64 */
    { S("&AC4ALg-"), "printable ASCII" },   /* ".." hidden in base64 */
    { S("x/&AC4ALg-/y"), "printable ASCII" },
    { S("&ACY-"), "printable ASCII" },      /* '&' must be "&-" */
    { S("&AAA-"), "NUL" },
    { S("&2D0-"), "high surrogate" },       /* lone U+D83D */
    { S("&2D0AQQ-"), "high surrogate" },    /* U+D83D then 'A' */
    { S("&3gA-"), "low surrogate" },        /* lone U+DE00 */
    { S("&Jjo-&Jjo-"), "back to back" },
    { S("&Jj/-"), "invalid character" },    /* standard base64 '/' */
    { S("&Jjo=-"), "invalid character" },
    { S("&Jjp-"), "padding" },
    { S("a\x01" "b"), "outside printable" },
    { S("a\x7f"), "outside printable" },
    { S("\xc3\xa9"), "outside printable" }, /* raw 8-bit */
    { S("a\0b"), "outside printable" },
};

static void test_mutf7_decode_refuses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_mutf7 / sizeof bad_mutf7[0]; i++) {
        const struct bad_case *c = &bad_mutf7[i];
        char *out = NULL;
        const char *error = NULL;
        if (mailbox_name_mutf7_decode(c->in, c->len, &out, &error) == 0)
            fail_msg("case %zu decoded to \"%s\" but must be refused", i, out);
        assert_null(out);
        if (strstr(error, c->why) == NULL)
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, error, c->why);
    }
}

static const struct bad_case bad_utf8[] = {
    { S("\xc0\xaf"), "" },              /* overlong '/' */
    { S("\xc0\xae\xc0\xae"), "" },      /* overlong ".." */
    { S("\xe0\x80\xaf"), "" },          /* 3-byte overlong */
    { S("\xf0\x80\x80\xaf"), "" },      /* 4-byte overlong */
    { S("\xed\xa0\x80"), "" },          /* UTF-16 surrogate */
    { S("\xed\xbf\xbf"), "" },
    { S("\xf4\x90\x80\x80"), "" },      /* above U+10FFFF */
    { S("\xf5\x80\x80\x80"), "" },
    { S("\xe6\x97"), "" },              /* truncated */
    { S("\x80"), "" },                  /* lone continuation */
    { S("a\xff"), "" },
    { S("\xe6\x97\x41"), "" },          /* bad continuation */
};

static void test_utf8_strict(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        const struct bad_case *c = &bad_utf8[i];
        char *out = NULL;
        const char *error = NULL;
        assert_false(mailbox_name_utf8_valid(c->in, c->len));
        assert_int_equal(mailbox_name_mutf7_encode(c->in, c->len, &out, &error), -1);
        assert_int_equal(mailbox_name_normalize(c->in, c->len, &out, &error), -1);
        assert_null(out);
    }
    assert_true(mailbox_name_utf8_valid(S("\xf4\x8f\xbf\xbf")));  /* U+10FFFF */
    assert_true(mailbox_name_utf8_valid(S("\xee\x80\x80")));      /* U+E000 */
    assert_true(mailbox_name_utf8_valid(S("\xed\x9f\xbf")));      /* U+D7FF */
    char *out = NULL;
    const char *error = NULL;
    assert_int_equal(mailbox_name_mutf7_encode(S("a\0b"), &out, &error), -1);
    assert_non_null(strstr(error, "NUL"));
}

/* ---- validation -------------------------------------------------------- */

struct norm_case {
    const char *in;
    const char *out;
};

static const struct norm_case good_names[] = {
    { "INBOX", "INBOX" },
    { "inbox", "INBOX" },
    { "iNbOx", "INBOX" },
    { "inbox/Sub", "INBOX/Sub" },
    { "InBoX/inbox", "INBOX/inbox" },
    { "INBOXES", "INBOXES" },
    { "x/inbox", "x/inbox" },
    { "Sent", "Sent" },
    { "Work/Project/2024", "Work/Project/2024" },
    { "v1.2/50%", "v1.2/50%" },
    { "a./b..c", "a./b..c" },
    { "&", "&" },
    { "~user", "~user" },
    { "日本語のフォルダ", "日本語のフォルダ" },
    { "受信トレイ/下書き", "受信トレイ/下書き" },
    { "📧 Mail 😀", "📧 Mail 😀" },
    { "\xef\xbc\x8f", "\xef\xbc\x8f" }, /* FULLWIDTH SOLIDUS is an ordinary character */
};

static void test_normalize_accepts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof good_names / sizeof good_names[0]; i++) {
        char *out = NULL;
        const char *error = NULL;
        if (mailbox_name_normalize(good_names[i].in, strlen(good_names[i].in), &out, &error) != 0)
            fail_msg("%s refused: %s", good_names[i].in, error);
        assert_string_equal(out, good_names[i].out);
        free(out);
    }
}

static const struct bad_case bad_names[] = {
    { S(""), "empty" },
    { S("/"), "starts with" },
    { S("/a"), "starts with" },
    { S("a/"), "ends with" },
    { S("a//b"), "empty hierarchy level" },
    { S("."), "\".\" or \"..\"" },
    { S(".."), "\".\" or \"..\"" },
    { S("../x"), "\".\" or \"..\"" },
    { S("a/../../etc"), "\".\" or \"..\"" },
    { S("a/./b"), "\".\" or \"..\"" },
    { S(".hidden"), "starting with '.'" },
    { S("a/.b"), "starting with '.'" },
    { S("..x"), "starting with '.'" },
    { S("a\x01" "b"), "control" },
    { S("a\tb"), "control" },
    { S("a\nb"), "control" },
    { S("a\x7f"), "control" },
    { S("a\xc2\x85" "b"), "control" },  /* C1 NEL */
    { S("a\xc2\x9f"), "control" },
    { S("a\0b"), "NUL" },
    { S("a\\b"), "backslash" },
    { S("..\\..\\x"), "backslash" },
    { S("\xc0\xae\xc0\xae/x"), "UTF-8" },
};

static void test_normalize_refuses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        const struct bad_case *c = &bad_names[i];
        char *out = NULL, *dir = NULL;
        const char *error = NULL;
        if (mailbox_name_normalize(c->in, c->len, &out, &error) == 0)
            fail_msg("case %zu accepted as \"%s\"", i, out);
        if (strstr(error, c->why) == NULL)
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, error, c->why);
        /* the mapping re-validates, so the raw string never reaches a path */
        if (memchr(c->in, '\0', c->len) == NULL)
            assert_int_equal(mailbox_name_to_dir(c->in, &dir, &error), -1);
        assert_null(dir);
    }
}

static void test_length_limits(void **state)
{
    (void)state;
    char buf[MAILBOX_NAME_MAX + 8];
    char *out = NULL;
    const char *error = NULL;

    memset(buf, 'a', 300);
    assert_int_equal(mailbox_name_normalize(buf, 255, &out, &error), 0);
    free(out);
    assert_int_equal(mailbox_name_normalize(buf, 256, &out, &error), -1);
    assert_non_null(strstr(error, "255"));

    /* 1024 octets in levels of 127 + '/' */
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (i % 128 == 126) ? '/' : 'b';
    assert_int_equal(mailbox_name_normalize(buf, MAILBOX_NAME_MAX, &out, &error), 0);
    free(out);
    assert_int_equal(mailbox_name_normalize(buf, MAILBOX_NAME_MAX + 1, &out, &error), -1);
    assert_non_null(strstr(error, "1024"));

    /* valid IMAP name, but its directory would not fit in NAME_MAX */
    buf[0] = 'x';
    memset(buf + 1, '.', 100);
    buf[101] = '\0';
    char *dir = NULL;
    assert_int_equal(mailbox_name_to_dir(buf, &dir, &error), -1);
    assert_non_null(strstr(error, "too long"));
    memset(buf, 'c', 254);
    buf[254] = '\0';
    assert_int_equal(mailbox_name_to_dir(buf, &dir, &error), 0);
    assert_int_equal(strlen(dir), 255);
    free(dir);
    buf[254] = 'c';
    buf[255] = '\0';
    assert_int_equal(mailbox_name_to_dir(buf, &dir, &error), -1);
}

/* ---- mapping to directories ------------------------------------------- */

static const struct norm_case dir_cases[] = {
    { "INBOX", "" },
    { "Sent", ".Sent" },
    { "Work/Project", ".Work.Project" },
    { "INBOX/Sub", ".INBOX.Sub" },
    { "v1.2/50%", ".v1%2E2.50%25" },
    { "a%2E", ".a%252E" },
    { "a./b", ".a%2E.b" },
    { "日本語のフォルダ", ".日本語のフォルダ" },
    { "受信トレイ/下書き", ".受信トレイ.下書き" },
    { "📧", ".📧" },
};

static void test_dir_mapping(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof dir_cases / sizeof dir_cases[0]; i++) {
        char *dir = NULL, *name = NULL;
        const char *error = NULL;
        if (mailbox_name_to_dir(dir_cases[i].in, &dir, &error) != 0)
            fail_msg("%s: %s", dir_cases[i].in, error);
        assert_string_equal(dir, dir_cases[i].out);
        if (mailbox_name_from_dir(dir, &name, &error) != 0)
            fail_msg("back from %s: %s", dir, error);
        assert_string_equal(name, dir_cases[i].in);
        free(dir);
        free(name);
    }
    char *dir = NULL;
    const char *error = NULL;
    assert_int_equal(mailbox_name_to_dir("inbox", &dir, &error), -1);
    assert_non_null(strstr(error, "canonical"));
    assert_int_equal(mailbox_name_to_dir("inbox/x", &dir, &error), -1);
}

static const char *const bad_dirs[] = {
    ".", "..", "..x", "...", "x", "Sent", ".a%2eb", ".a%41", ".a%2", ".a%", ".a%%",
    ".INBOX", ".inbox", ".inbox.x", ".Inbox.x", ".a..b", ".a.", ".a/b", "./x", ".\x01",
    ".\xc0\xae", ".a\\b", ".a.%2Eb", "..deleted.123", "..creating.1",
};

static void test_from_dir_refuses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_dirs / sizeof bad_dirs[0]; i++) {
        char *name = NULL;
        const char *error = NULL;
        if (mailbox_name_from_dir(bad_dirs[i], &name, &error) == 0)
            fail_msg("directory \"%s\" accepted as \"%s\"", bad_dirs[i], name);
        assert_null(name);
    }
}

static void test_descendant(void **state)
{
    (void)state;
    assert_true(mailbox_name_is_descendant("A/B", "A"));
    assert_true(mailbox_name_is_descendant("A/B/C", "A/B"));
    assert_false(mailbox_name_is_descendant("AB", "A"));
    assert_false(mailbox_name_is_descendant("A", "A"));
    assert_false(mailbox_name_is_descendant("B/A", "A"));
    assert_true(mailbox_name_is_inbox("INBOX"));
    assert_false(mailbox_name_is_inbox("inbox"));
}

/* ---- property test ----------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Pieces chosen to hit every rule: separators, dots, the escape char,
 * INBOX in all cases, multi-byte UTF-8, controls, invalid bytes. */
static const char *const pieces[] = {
    "a", "Z", "x", "0", " ", "-", "_", "~", "&", "+", ",", "*", "%", "%2E", "%25",
    ".", ".", "..", "/", "/", "/", "INBOX", "inbox", "Inbox", "日", "本", "フ", "😀",
    "é", "\xef\xbc\x8f", "\\", "\x01", "\x7f", "\xc2\x85", "\xc0\xae", "\xff", "\xed\xa0\x80",
};

static void check_valid_name(const char *name)
{
    char *dir = NULL, *back = NULL, *m7 = NULL, *u8 = NULL, *again = NULL;
    const char *error = NULL;

    /* normalisation is idempotent */
    assert_int_equal(mailbox_name_normalize(name, strlen(name), &again, &error), 0);
    assert_string_equal(again, name);
    free(again);

    /* mUTF-7 round trip both ways */
    assert_int_equal(mailbox_name_mutf7_encode(name, strlen(name), &m7, &error), 0);
    assert_int_equal(mailbox_name_mutf7_decode(m7, strlen(m7), &u8, &error), 0);
    assert_string_equal(u8, name);
    free(m7);
    free(u8);

    if (mailbox_name_to_dir(name, &dir, &error) != 0) {
        /* only allowed reason: the flat layout's NAME_MAX */
        assert_non_null(strstr(error, "too long"));
        return;
    }
    if (mailbox_name_is_inbox(name)) {
        assert_string_equal(dir, "");
    } else {
        size_t len = strlen(dir);
        assert_true(len >= 2 && len <= MAILBOX_NAME_DIR_MAX);
        assert_int_equal(dir[0], '.');
        assert_int_not_equal(dir[1], '.');
        assert_null(strchr(dir, '/'));
        assert_string_not_equal(dir, ".");
        assert_string_not_equal(dir, "..");
    }
    assert_int_equal(mailbox_name_from_dir(dir, &back, &error), 0);
    assert_string_equal(back, name);
    free(dir);
    free(back);
}

static void test_property_random_names(void **state)
{
    (void)state;
    size_t valid = 0, mapped_children = 0, total = 200000;
    char buf[512];
    for (size_t iter = 0; iter < total; iter++) {
        size_t n = 1 + rng() % 12, len = 0;
        for (size_t k = 0; k < n; k++) {
            const char *p = pieces[rng() % (sizeof pieces / sizeof pieces[0])];
            size_t pl = strlen(p);
            memcpy(buf + len, p, pl);
            len += pl;
        }
        buf[len] = '\0';
        char *name = NULL;
        const char *error = NULL;
        if (mailbox_name_normalize(buf, len, &name, &error) != 0) {
            char *dir = NULL;
            assert_int_equal(mailbox_name_to_dir(buf, &dir, &error), -1);
            continue;
        }
        valid++;
        if (strchr(name, '/') != NULL)
            mapped_children++;
        /* a valid name never contains a "." or ".." level or a control */
        assert_null(strstr(name, "/."));
        assert_int_not_equal(name[0], '.');
        check_valid_name(name);
        free(name);
    }
    /* the generator must really exercise both sides */
    assert_true(valid > total / 10);
    assert_true(valid < total * 9 / 10);
    assert_true(mapped_children > total / 50);

    /* and every mUTF-7 string the generator's ASCII part can form either
     * decodes canonically or is refused */
    static const char *const m7[] = { "&", "-", "A", "O", "k", ",", "+", "a", "/", ".", "Jjo" };
    for (size_t iter = 0; iter < 100000; iter++) {
        size_t n = 1 + rng() % 10, len = 0;
        for (size_t k = 0; k < n; k++) {
            const char *p = m7[rng() % (sizeof m7 / sizeof m7[0])];
            memcpy(buf + len, p, strlen(p));
            len += strlen(p);
        }
        char *u8 = NULL, *back = NULL;
        const char *error = NULL;
        if (mailbox_name_mutf7_decode(buf, len, &u8, &error) != 0)
            continue;
        assert_true(mailbox_name_utf8_valid(u8, strlen(u8)));
        assert_int_equal(mailbox_name_mutf7_encode(u8, strlen(u8), &back, &error), 0);
        assert_int_equal(strlen(back), len);
        assert_memory_equal(back, buf, len);
        free(u8);
        free(back);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutf7_vectors),
        cmocka_unit_test(test_mutf7_decode_refuses),
        cmocka_unit_test(test_utf8_strict),
        cmocka_unit_test(test_normalize_accepts),
        cmocka_unit_test(test_normalize_refuses),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_dir_mapping),
        cmocka_unit_test(test_from_dir_refuses),
        cmocka_unit_test(test_descendant),
        cmocka_unit_test(test_property_random_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
