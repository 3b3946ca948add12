/* test_pop3_proto - the pure POP3 pieces: command parsing, numbers,
 * SASL PLAIN, the maildrop from a store FETCH reply, the RETR/TOP body
 * encoder (fed in every possible chunking) and QUIT's UID-set batches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include "mx_wire.h"
#include "pop3_proto.h"

/* ---- commands ------------------------------------------------------------ */

static int parse(const char *text, struct pop3_cmd *cmd, char *buf, size_t size, const char **error)
{
    size_t len = strlen(text);
    assert_true(len < size);
    memcpy(buf, text, len + 1);
    return pop3_cmd_parse(buf, len, cmd, error);
}

static void test_cmd_parse(void **state)
{
    (void)state;
    struct pop3_cmd cmd;
    char buf[300];
    const char *error = NULL;

    assert_int_equal(parse("stat", &cmd, buf, sizeof buf, &error), 0);
    assert_int_equal(cmd.verb, POP3_VERB_STAT);
    assert_null(cmd.args);

    assert_int_equal(parse("Top 3 10", &cmd, buf, sizeof buf, &error), 0);
    assert_int_equal(cmd.verb, POP3_VERB_TOP);
    assert_string_equal(cmd.keyword, "TOP");
    assert_string_equal(cmd.args, "3 10");

    /* A trailing blank is no argument (clients send "LIST "). */
    assert_int_equal(parse("LIST ", &cmd, buf, sizeof buf, &error), 0);
    assert_int_equal(cmd.verb, POP3_VERB_LIST);
    assert_null(cmd.args);
    assert_int_equal(parse("UIDL 2  ", &cmd, buf, sizeof buf, &error), 0);
    assert_string_equal(cmd.args, "2");

    /* PASS keeps the password verbatim, spaces included. */
    assert_int_equal(parse("PASS  secret with spaces ", &cmd, buf, sizeof buf, &error), 0);
    assert_int_equal(cmd.verb, POP3_VERB_PASS);
    assert_string_equal(cmd.args, " secret with spaces ");
    assert_int_equal(parse("PASS ", &cmd, buf, sizeof buf, &error), 0);
    assert_string_equal(cmd.args, "");

    /* Unknown but well-formed keyword: parsed, reported by name. */
    assert_int_equal(parse("xyzz 1", &cmd, buf, sizeof buf, &error), 0);
    assert_int_equal(cmd.verb, POP3_VERB_UNKNOWN);
    assert_string_equal(cmd.keyword, "XYZZ");

    /* Not commands at all. */
    assert_int_equal(parse("", &cmd, buf, sizeof buf, &error), -1);
    assert_string_equal(error, "empty command");
    assert_int_equal(parse("RETRIEVE 1", &cmd, buf, sizeof buf, &error), -1);
    assert_int_equal(parse("NO", &cmd, buf, sizeof buf, &error), -1);
    assert_int_equal(parse(" STAT", &cmd, buf, sizeof buf, &error), -1);
    assert_int_equal(parse("ST1T", &cmd, buf, sizeof buf, &error), -1);
    assert_int_equal(parse("LIST\t1", &cmd, buf, sizeof buf, &error), -1);
    assert_int_equal(parse("R\xc3\xa9TR", &cmd, buf, sizeof buf, &error), -1);

    /* A NUL inside the line. */
    char nul[] = "USER a\0b";
    assert_int_equal(pop3_cmd_parse(nul, sizeof nul - 1, &cmd, &error), -1);
    assert_string_equal(error, "NUL byte in command");
}

static void test_parse_numbers(void **state)
{
    (void)state;
    uint32_t n[2];
    size_t got;
    assert_int_equal(pop3_parse_numbers("1", n, 1, 1, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(n[0], 1);
    assert_int_equal(pop3_parse_numbers("4294967295 0", n, 2, 2, &got), 0);
    assert_int_equal(n[0], 4294967295u);
    assert_int_equal(n[1], 0);
    assert_int_equal(pop3_parse_numbers("007", n, 1, 1, &got), 0);
    assert_int_equal(n[0], 7);

    assert_int_equal(pop3_parse_numbers("4294967296", n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers("99999999999999999999999", n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers("-1", n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers("+1", n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers("0x10", n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers("1a", n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers("1 2", n, 1, 1, &got), -1); /* too many */
    assert_int_equal(pop3_parse_numbers("1", n, 2, 2, &got), -1);   /* too few */
    assert_int_equal(pop3_parse_numbers(NULL, n, 1, 1, &got), -1);
    assert_int_equal(pop3_parse_numbers(NULL, n, 0, 1, &got), 0);
    assert_int_equal(got, 0);
}

/* ---- SASL PLAIN ------------------------------------------------------------ */

static void test_sasl_plain(void **state)
{
    (void)state;
    char user[POP3_CREDENTIAL_MAX + 1], pass[POP3_CREDENTIAL_MAX + 1];
    size_t plen = 0;
    const char *error = NULL;

    /* "\0alice@example.test\0s3cret" */
    const char *b64 = "AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQ=";
    assert_int_equal(mx_sasl_plain_decode(b64, strlen(b64), user, pass, &plen, &error), 0);
    assert_string_equal(user, "alice@example.test");
    assert_string_equal(pass, "s3cret");
    assert_int_equal(plen, 6);

    /* authzid equal to authcid: "bob\0bob\0pw" */
    b64 = "Ym9iAGJvYgBwdw==";
    assert_int_equal(mx_sasl_plain_decode(b64, strlen(b64), user, pass, &plen, &error), 0);
    assert_string_equal(user, "bob");
    assert_string_equal(pass, "pw");

    /* authzid of someone else: "admin\0bob\0pw" */
    b64 = "YWRtaW4AYm9iAHB3";
    assert_int_equal(mx_sasl_plain_decode(b64, strlen(b64), user, pass, &plen, &error), -1);
    assert_string_equal(error, "authorization identity not permitted");
    assert_string_equal(user, "");
    assert_string_equal(pass, "");

    /* empty password: "\0bob\0" */
    b64 = "AGJvYgA=";
    assert_int_equal(mx_sasl_plain_decode(b64, strlen(b64), user, pass, &plen, &error), -1);
    /* one NUL only: "bob\0pw" */
    b64 = "Ym9iAHB3";
    assert_int_equal(mx_sasl_plain_decode(b64, strlen(b64), user, pass, &plen, &error), -1);
    /* a NUL inside the password: "\0bob\0p\0w" */
    b64 = "AGJvYgBwAHc=";
    assert_int_equal(mx_sasl_plain_decode(b64, strlen(b64), user, pass, &plen, &error), -1);
    /* RFC 5034 empty response */
    assert_int_equal(mx_sasl_plain_decode("=", 1, user, pass, &plen, &error), -1);
    /* bad base64: wrong length, bad alphabet, data after padding */
    assert_int_equal(mx_sasl_plain_decode("AGJvYgBwdw", 10, user, pass, &plen, &error), -1);
    assert_string_equal(error, "malformed base64 in SASL response");
    assert_int_equal(mx_sasl_plain_decode("AGJv*gBw", 8, user, pass, &plen, &error), -1);
    assert_int_equal(mx_sasl_plain_decode("AG==AGJv", 8, user, pass, &plen, &error), -1);
    assert_int_equal(mx_sasl_plain_decode("A===", 4, user, pass, &plen, &error), -1);
    /* longer than three maximal fields: refused without overflow */
    char big[2000];
    memset(big, 'Q', sizeof big);
    assert_int_equal(mx_sasl_plain_decode(big, sizeof big, user, pass, &plen, &error), -1);
}

/* ---- maildrop ------------------------------------------------------------------ */

static void frame_view(struct mx_frame *f, struct mx_frame_view *view)
{
    const uint8_t *data;
    size_t len;
    const char *error;
    assert_int_equal(mx_frame_finish(f, &data, &len, &error), 0);
    assert_int_equal(mx_frame_parse(data, len, view, &error), 0);
}

static void put_record(struct mx_frame *f, uint32_t uid, uint64_t size, const char *uidl)
{
    mx_frame_put_u32(f, F_UID, uid);
    mx_frame_put_u64(f, F_SIZE, size);
    mx_frame_put_str(f, F_POP3_UIDL, uidl);
}

static void test_maildrop(void **state)
{
    (void)state;
    struct mx_frame f;
    struct mx_frame_view view;
    struct pop3_maildrop drop;
    const char *error = NULL;

    mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    mx_frame_put_u32(&f, F_STATUS, MX_STATUS_OK);
    /* out of UID order, and the items in either order */
    put_record(&f, 9, 300, "ccc");
    mx_frame_put_u32(&f, F_UID, 2);
    mx_frame_put_str(&f, F_POP3_UIDL, "aaa");
    mx_frame_put_u64(&f, F_SIZE, 100);
    put_record(&f, 5, 200, "bbb");
    frame_view(&f, &view);
    assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), 0);
    mx_frame_free(&f);
    assert_int_equal(drop.count, 3);
    assert_int_equal(drop.bytes, 600);
    assert_int_equal(drop.msgs[0].uid, 2);
    assert_int_equal(drop.msgs[1].uid, 5);
    assert_int_equal(drop.msgs[2].uid, 9);
    assert_string_equal(pop3_maildrop_uidl(&drop, 0), "aaa");
    assert_string_equal(pop3_maildrop_uidl(&drop, 1), "bbb");
    assert_string_equal(pop3_maildrop_uidl(&drop, 2), "ccc");

    size_t n;
    assert_null(pop3_maildrop_deleted_uids(&drop, &n));
    assert_int_equal(n, 0);
    pop3_maildrop_mark(&drop, 2);
    pop3_maildrop_mark(&drop, 0);
    pop3_maildrop_mark(&drop, 0); /* twice counts once */
    assert_int_equal(drop.n_deleted, 2);
    assert_int_equal(drop.deleted_bytes, 400);
    uint32_t *uids = pop3_maildrop_deleted_uids(&drop, &n);
    assert_int_equal(n, 2);
    assert_int_equal(uids[0], 2);
    assert_int_equal(uids[1], 9);
    free(uids);
    pop3_maildrop_reset(&drop);
    assert_int_equal(drop.n_deleted, 0);
    assert_int_equal(drop.deleted_bytes, 0);
    assert_false(drop.msgs[0].deleted || drop.msgs[2].deleted);
    pop3_maildrop_free(&drop);

    /* an empty maildrop */
    mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    mx_frame_put_u32(&f, F_STATUS, MX_STATUS_OK);
    frame_view(&f, &view);
    assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), 0);
    assert_int_equal(drop.count, 0);
    pop3_maildrop_free(&drop);
    mx_frame_free(&f);
}

static void test_maildrop_bad(void **state)
{
    (void)state;
    struct mx_frame f;
    struct mx_frame_view view;
    struct pop3_maildrop drop;
    const char *error = NULL;

    /* a record without its unique-id */
    mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    mx_frame_put_u32(&f, F_UID, 1);
    mx_frame_put_u64(&f, F_SIZE, 10);
    put_record(&f, 2, 10, "x");
    frame_view(&f, &view);
    assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), -1);
    assert_int_equal(drop.count, 0);
    assert_null(drop.msgs);
    mx_frame_free(&f);

    /* the last record without its size */
    mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    put_record(&f, 1, 10, "x");
    mx_frame_put_u32(&f, F_UID, 2);
    mx_frame_put_str(&f, F_POP3_UIDL, "y");
    frame_view(&f, &view);
    assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), -1);
    mx_frame_free(&f);

    /* a repeated UID */
    mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    put_record(&f, 4, 10, "x");
    put_record(&f, 4, 10, "y");
    frame_view(&f, &view);
    assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), -1);
    assert_string_equal(error, "a UID appears twice");
    mx_frame_free(&f);

    /* unique-ids RFC 1939 does not allow: space, 71 characters, empty */
    const char *bad[] = { "a b", "", NULL };
    char long_uidl[72];
    memset(long_uidl, 'u', 71);
    long_uidl[71] = '\0';
    bad[2] = long_uidl;
    for (size_t i = 0; i < 3; i++) {
        mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
        put_record(&f, 1, 10, bad[i]);
        frame_view(&f, &view);
        assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), -1);
        mx_frame_free(&f);
    }
    /* 70 is the limit itself */
    long_uidl[70] = '\0';
    mx_frame_init(&f, MSG_STORE_ANY_FETCH_RESULT, 0, NULL);
    put_record(&f, 1, 10, long_uidl);
    frame_view(&f, &view);
    assert_int_equal(pop3_maildrop_from_fetch(&view, &drop, &error), 0);
    assert_int_equal(strlen(pop3_maildrop_uidl(&drop, 0)), 70);
    pop3_maildrop_free(&drop);
    mx_frame_free(&f);
}

/* ---- body encoder --------------------------------------------------------------- */

/* encode - run the encoder over msg cut into pieces of `chunk` bytes (0 =
 * whole) and return the multi-line body (heap). */
static char *encode(const char *msg, size_t chunk, bool top, uint32_t lines)
{
    struct pop3_body_encoder enc;
    struct evbuffer *out = evbuffer_new();
    pop3_body_encoder_init(&enc, top, lines);
    size_t len = strlen(msg);
    if (chunk == 0)
        chunk = len ? len : 1;
    for (size_t i = 0; i < len; i += chunk)
        pop3_body_encode(&enc, (const uint8_t *)msg + i, len - i < chunk ? len - i : chunk, out);
    pop3_body_finish(&enc, out);
    size_t n = evbuffer_get_length(out);
    assert_int_equal(n, enc.octets_out);
    char *text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    evbuffer_free(out);
    return text;
}

/* check_all_chunkings - the result must not depend on where the store's
 * pieces happen to end. */
static void check_all_chunkings(const char *msg, bool top, uint32_t lines, const char *want)
{
    size_t len = strlen(msg);
    for (size_t chunk = 0; chunk <= len + 1; chunk++) {
        char *got = encode(msg, chunk, top, lines);
        if (strcmp(got, want) != 0)
            fail_msg("chunk %zu: got \"%s\" want \"%s\"", chunk, got, want);
        free(got);
    }
}

static void test_encode_retr(void **state)
{
    (void)state;
    check_all_chunkings("Subject: x\r\n\r\nhello\r\n", false, 0,
                        "Subject: x\r\n\r\nhello\r\n.\r\n");
    /* dot-stuffing at every line start, also the first line and a lone "." */
    check_all_chunkings(".a\r\n\r\n.\r\n..b\r\nc.d\r\n", false, 0,
                        "..a\r\n\r\n..\r\n...b\r\nc.d\r\n.\r\n");
    /* bare LF gets its CR; a bare CR inside a line stays */
    check_all_chunkings("A: 1\n\nx\ry\n.z\n", false, 0, "A: 1\r\n\r\nx\ry\r\n..z\r\n.\r\n");
    /* no final line end */
    check_all_chunkings("A: 1\r\n\r\nlast", false, 0, "A: 1\r\n\r\nlast\r\n.\r\n");
    check_all_chunkings("A: 1\r\n\r\nlast\r", false, 0, "A: 1\r\n\r\nlast\r\n.\r\n");
    check_all_chunkings("", false, 0, ".\r\n");
}

static void test_encode_top(void **state)
{
    (void)state;
    const char *msg = "From: a\r\nSubject: s\r\n\r\nl1\r\n.l2\r\nl3\r\n";
    check_all_chunkings(msg, true, 0, "From: a\r\nSubject: s\r\n\r\n.\r\n");
    check_all_chunkings(msg, true, 1, "From: a\r\nSubject: s\r\n\r\nl1\r\n.\r\n");
    check_all_chunkings(msg, true, 2, "From: a\r\nSubject: s\r\n\r\nl1\r\n..l2\r\n.\r\n");
    check_all_chunkings(msg, true, 3, "From: a\r\nSubject: s\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
    check_all_chunkings(msg, true, 4294967295u,
                        "From: a\r\nSubject: s\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
    /* LF-only message: the blank line is found, CRs added */
    check_all_chunkings("A: 1\nB: 2\n\nbody1\nbody2\n", true, 1,
                        "A: 1\r\nB: 2\r\n\r\nbody1\r\n.\r\n");
    /* a message with no body at all: the whole header */
    check_all_chunkings("A: 1\r\nB: 2\r\n", true, 0, "A: 1\r\nB: 2\r\n.\r\n");
    /* an empty header section: the first line is already the separator */
    check_all_chunkings("\r\nbody\r\nmore\r\n", true, 1, "\r\nbody\r\n.\r\n");
    /* a header line of just CR-CR-LF is not blank */
    check_all_chunkings("A: 1\r\n\r\r\nb\r\n\r\nc\r\n", true, 0, "A: 1\r\n\r\r\nb\r\n\r\n.\r\n");

    /* after the limit, more input is ignored */
    struct pop3_body_encoder enc;
    struct evbuffer *out = evbuffer_new();
    pop3_body_encoder_init(&enc, true, 0);
    pop3_body_encode(&enc, (const uint8_t *)"A: 1\r\n\r\n", 8, out);
    assert_true(enc.done);
    pop3_body_encode(&enc, (const uint8_t *)"more\r\n", 6, out);
    assert_int_equal(evbuffer_get_length(out), 8);
    evbuffer_free(out);
}

/* ---- UID sets ------------------------------------------------------------------- */

static void test_uidset(void **state)
{
    (void)state;
    char *text = NULL;
    uint32_t uids[] = { 1, 2, 3, 5, 7, 8, 100, 4294967295u };
    size_t n = sizeof uids / sizeof uids[0];
    assert_int_equal(pop3_uidset_format(uids, n, 1000, 1000, &text), n);
    assert_string_equal(text, "1:3,5,7:8,100,4294967295");
    free(text);

    /* at most 2 ranges: the rest in the next batch */
    assert_int_equal(pop3_uidset_format(uids, n, 1000, 2, &text), 4);
    assert_string_equal(text, "1:3,5");
    free(text);
    assert_int_equal(pop3_uidset_format(uids + 4, n - 4, 1000, 2, &text), 3);
    assert_string_equal(text, "7:8,100");
    free(text);

    /* a length cap: "1:3,5" is 5 characters, ",7:8" would make 9 */
    assert_int_equal(pop3_uidset_format(uids, n, 8, 1000, &text), 4);
    assert_string_equal(text, "1:3,5");
    free(text);

    assert_int_equal(pop3_uidset_format(uids, 0, 1000, 1000, &text), 0);
    assert_string_equal(text, "");
    free(text);

    /* many scattered UIDs: batches cover every UID exactly once */
    enum { N = 50000 };
    uint32_t *many = malloc(N * sizeof *many);
    for (uint32_t i = 0; i < N; i++)
        many[i] = 2 * i + 1;
    size_t done = 0, batches = 0;
    while (done < N) {
        size_t used = pop3_uidset_format(many + done, N - done, 16000, 2000, &text);
        assert_true(used > 0);
        assert_true(strlen(text) <= 16000);
        /* first and last UID of the batch are in the text */
        char first[16];
        snprintf(first, sizeof first, "%u", many[done]);
        assert_memory_equal(text, first, strlen(first));
        free(text);
        done += used;
        batches++;
    }
    assert_int_equal(done, N);
    assert_true(batches >= N / 2000);
    free(many);
}

static void test_uidset_count(void **state)
{
    (void)state;
    uint64_t n = 99;
    assert_int_equal(pop3_uidset_count("", 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pop3_uidset_count("7", 1, &n), 0);
    assert_int_equal(n, 1);
    const char *set = "1:3,7,10:8,4294967295";
    assert_int_equal(pop3_uidset_count(set, strlen(set), &n), 0);
    assert_int_equal(n, 3 + 1 + 3 + 1);
    set = "1:4294967295";
    assert_int_equal(pop3_uidset_count(set, strlen(set), &n), 0);
    assert_int_equal(n, 4294967295ull);
    /* only the given length counts */
    assert_int_equal(pop3_uidset_count("1:3,junk", 3, &n), 0);
    assert_int_equal(n, 3);
    const char *bad[] = {
        "0", "1:", ":3", "1,", ",1", "1,,2", "*", "1:*", "4294967296", "1 2", "a"
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (pop3_uidset_count(bad[i], strlen(bad[i]), &n) == 0)
            fail_msg("\"%s\" accepted", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_parse),    cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_sasl_plain),   cmocka_unit_test(test_maildrop),
        cmocka_unit_test(test_maildrop_bad), cmocka_unit_test(test_encode_retr),
        cmocka_unit_test(test_encode_top),   cmocka_unit_test(test_uidset),
        cmocka_unit_test(test_uidset_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
