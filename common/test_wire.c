/* test_wire - frame encoding, the exact byte layout, and a parser that
 * refuses every malformed frame without reading outside its input.
 *
 * Inputs to mx_frame_parse are always copied into a heap block of exactly
 * their length first, so under -DMX_SANITIZE=ON any read past the end is an
 * AddressSanitizer error, not a silent pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_alloc.h"
#include "mx_wire.h"

/* ---- helpers ---------------------------------------------------------- */

/* parse_exact - parse a private exact-size copy of data[0..len). */
static int parse_exact(const void *data, size_t len, uint8_t **copy_r,
                       struct mx_frame_view *view_r, const char **error_r)
{
    *copy_r = mx_malloc(len);
    if (len > 0)
        memcpy(*copy_r, data, len);
    return mx_frame_parse(*copy_r, len, view_r, error_r);
}

/* A frame written byte by byte, independent of mx_wire.c's encoder. */
struct raw {
    uint8_t b[2048];
    size_t len;
};

static void raw_u8(struct raw *r, uint8_t v)
{
    assert_true(r->len < sizeof r->b);
    r->b[r->len++] = v;
}

static void raw_u16(struct raw *r, uint16_t v)
{
    raw_u8(r, (uint8_t)(v >> 8));
    raw_u8(r, (uint8_t)v);
}

static void raw_u32(struct raw *r, uint32_t v)
{
    raw_u16(r, (uint16_t)(v >> 16));
    raw_u16(r, (uint16_t)v);
}

static void raw_u64(struct raw *r, uint64_t v)
{
    raw_u32(r, (uint32_t)(v >> 32));
    raw_u32(r, (uint32_t)v);
}

static void raw_mem(struct raw *r, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        raw_u8(r, ((const uint8_t *)p)[i]);
}

/* raw_header - a header with body_length 0; raw_seal sets it. */
static void raw_header_full(struct raw *r, uint32_t magic, uint16_t version, uint16_t type)
{
    r->len = 0;
    raw_u32(r, magic);
    raw_u16(r, version);
    raw_u16(r, type);
    raw_u32(r, 0);                          /* flags */
    raw_u32(r, 0);                          /* body_length */
    raw_u64(r, UINT64_C(0x1122334455667788)); /* request_id */
    for (int i = 0; i < 16; i++)
        raw_u8(r, (uint8_t)(0xa0 + i));     /* message_id */
}

static void raw_header(struct raw *r)
{
    raw_header_full(r, MX_WIRE_MAGIC, MX_WIRE_VERSION, MSG_ANY_ACK);
}

static void raw_field(struct raw *r, uint16_t tag, uint32_t wire_len, const void *v, size_t n)
{
    raw_u16(r, tag);
    raw_u32(r, wire_len);
    raw_mem(r, v, n);
}

static void raw_set_body_length(struct raw *r, uint32_t body_length)
{
    r->b[12] = (uint8_t)(body_length >> 24);
    r->b[13] = (uint8_t)(body_length >> 16);
    r->b[14] = (uint8_t)(body_length >> 8);
    r->b[15] = (uint8_t)body_length;
}

static void raw_seal(struct raw *r)
{
    raw_set_body_length(r, (uint32_t)(r->len - MX_WIRE_HEADER_SIZE));
}

static const uint8_t four[4] = { 0, 0, 0, 2 };

/* ---- names and kinds ------------------------------------------------- */

struct name_entry {
    uint32_t number;
    const char *name;
};

#define NAME_ENTRY(name, number, ...) { number, #name },
static const struct name_entry message_names[] = { MX_WIRE_MESSAGES(NAME_ENTRY) };
static const struct name_entry field_names[] = { MX_WIRE_FIELDS(NAME_ENTRY) };
#undef NAME_ENTRY

#define KIND_ENTRY(name, number, kind, ...) MX_FIELD_##kind,
static const enum mx_field_kind field_kinds[] = { MX_WIRE_FIELDS(KIND_ENTRY) };
#undef KIND_ENTRY

#define N_MESSAGES (sizeof message_names / sizeof message_names[0])
#define N_FIELDS (sizeof field_names / sizeof field_names[0])

static void test_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_MESSAGES; i++)
        assert_string_equal(mx_msg_type_name(message_names[i].number), message_names[i].name);
    for (size_t i = 0; i < N_FIELDS; i++) {
        enum mx_field_kind kind = (enum mx_field_kind)-1;
        assert_string_equal(mx_field_tag_name(field_names[i].number), field_names[i].name);
        assert_int_equal(mx_field_tag_kind(field_names[i].number, &kind), 0);
        assert_int_equal(kind, field_kinds[i]);
    }
    assert_string_equal(mx_msg_type_name(1), "MSG_ANY_ACK");
    assert_string_equal(mx_msg_type_name(200), "MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT");
    assert_string_equal(mx_field_tag_name(11), "F_RECIPIENT");
    assert_null(mx_msg_type_name(0));
    assert_null(mx_msg_type_name(3));
    assert_null(mx_msg_type_name(65535));
    assert_null(mx_msg_type_name(0x10001)); /* 1 + 65536: no truncation to u16 */
    assert_null(mx_field_tag_name(0));
    assert_null(mx_field_tag_name(999));
    enum mx_field_kind kind = MX_FIELD_STR;
    assert_int_equal(mx_field_tag_kind(999, &kind), -1);
    assert_int_equal(mx_field_tag_kind(0x10001, &kind), -1);
    assert_int_equal(mx_field_tag_kind(F_STATUS, &kind), 0);
    assert_int_equal(kind, MX_FIELD_U32);
    assert_int_equal(mx_field_tag_kind(F_SIZE, &kind), 0);
    assert_int_equal(kind, MX_FIELD_U64);
    assert_int_equal(mx_field_tag_kind(F_BODY, &kind), 0);
    assert_int_equal(kind, MX_FIELD_BYTES);
}

/* ---- the byte layout, pinned against a hand-written frame ------------ */

static void test_golden_bytes(void **state)
{
    (void)state;
    static const uint8_t expected[] = {
        0x4d, 0x58, 0x43, 0x4c,                         /* magic "MXCL" */
        0x00, 0x01,                                     /* version 1 */
        0x00, 0x01,                                     /* type MSG_ANY_ACK */
        0x00, 0x00, 0x00, 0x01,                         /* flags RETRY */
        0x00, 0x00, 0x00, 0x20,                         /* body_length 32 */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* request_id */
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, /* message_id */
        0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x04,             /* F_STATUS len 4 */
        0x00, 0x00, 0x00, 0x02,                         /* TEMPFAIL */
        0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 'h', 'i',   /* F_TEXT "hi" */
        0x00, 0x0e, 0x00, 0x00, 0x00, 0x08,             /* F_SIZE len 8 */
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2a,
    };
    struct mx_msgid id;
    for (int i = 0; i < MX_MSGID_SIZE; i++)
        id.bytes[i] = (uint8_t)(0x10 + i);

    struct mx_frame f;
    mx_frame_init(&f, MSG_ANY_ACK, UINT64_C(0x0102030405060708), &id);
    mx_frame_set_flags(&f, MX_FRAME_F_RETRY);
    mx_frame_put_u32(&f, F_STATUS, MX_STATUS_TEMPFAIL);
    mx_frame_put_str(&f, F_TEXT, "hi");
    mx_frame_put_u64(&f, F_SIZE, UINT64_C(0x1000000002a));
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    assert_int_equal(len, sizeof expected);
    assert_memory_equal(data, expected, sizeof expected);
    mx_frame_free(&f);
    assert_null(f.data);

    /* ...and the parser reads the hand-written bytes back. */
    uint8_t *copy;
    struct mx_frame_view view;
    assert_int_equal(parse_exact(expected, sizeof expected, &copy, &view, &error), 0);
    assert_int_equal(view.type, MSG_ANY_ACK);
    assert_int_equal(view.flags, MX_FRAME_F_RETRY);
    assert_true(view.request_id == UINT64_C(0x0102030405060708));
    assert_memory_equal(view.message_id.bytes, id.bytes, MX_MSGID_SIZE);
    assert_int_equal(view.body_len, 32);
    uint32_t status;
    uint64_t size;
    assert_int_equal(mx_frame_get_u32(&view, F_STATUS, &status), 0);
    assert_int_equal(status, MX_STATUS_TEMPFAIL);
    assert_int_equal(mx_frame_get_u64(&view, F_SIZE, &size), 0);
    assert_true(size == UINT64_C(0x1000000002a));
    free(copy);
}

/* ---- round trips ----------------------------------------------------- */

static void test_round_trip_every_type_and_kind(void **state)
{
    (void)state;
    static const uint8_t body[] = { 'a', 0, 0xff, '\r', '\n', 0x80 };
    struct mx_msgid id;
    for (int i = 0; i < MX_MSGID_SIZE; i++)
        id.bytes[i] = (uint8_t)(i * 17 + 1);
    for (size_t t = 0; t < N_MESSAGES; t++) {
        struct mx_frame f;
        mx_frame_init(&f, (enum mx_msg_type)message_names[t].number, UINT64_MAX - t,
                      t % 2 ? &id : NULL);
        mx_frame_put_u32(&f, F_STATUS, 0xdeadbeefu);
        mx_frame_put_u64(&f, F_SIZE, UINT64_C(0x0102030405060708));
        mx_frame_put_str(&f, F_TEXT, "hello, world");
        mx_frame_put_str(&f, F_SENDER, "");
        mx_frame_put_bytes(&f, F_BODY, body, sizeof body);
        mx_frame_put_bytes(&f, F_SPOOL_PATH, "x", 1); /* bytes into a STR tag is fine */
        mx_frame_put_u32(&f, F_SCORE, 0);
        const uint8_t *data;
        size_t len;
        const char *error = NULL;
        assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);

        uint8_t *copy;
        struct mx_frame_view view;
        assert_int_equal(parse_exact(data, len, &copy, &view, &error), 0);
        assert_int_equal(view.type, message_names[t].number);
        assert_int_equal(view.flags, 0);
        assert_true(view.request_id == UINT64_MAX - t);
        if (t % 2)
            assert_memory_equal(view.message_id.bytes, id.bytes, MX_MSGID_SIZE);
        else
            assert_true(mx_msgid_is_zero(&view.message_id));

        uint32_t u32;
        uint64_t u64;
        char *s;
        const uint8_t *b;
        size_t blen;
        assert_int_equal(mx_frame_get_u32(&view, F_STATUS, &u32), 0);
        assert_int_equal(u32, 0xdeadbeefu);
        assert_int_equal(mx_frame_get_u32(&view, F_SCORE, &u32), 0);
        assert_int_equal(u32, 0);
        assert_int_equal(mx_frame_get_u64(&view, F_SIZE, &u64), 0);
        assert_true(u64 == UINT64_C(0x0102030405060708));
        assert_int_equal(mx_frame_get_str(&view, F_TEXT, &s), 0);
        assert_string_equal(s, "hello, world");
        free(s);
        assert_int_equal(mx_frame_get_str(&view, F_SENDER, &s), 0);
        assert_string_equal(s, "");
        free(s);
        assert_int_equal(mx_frame_get_str(&view, F_SPOOL_PATH, &s), 0);
        assert_string_equal(s, "x");
        free(s);
        assert_int_equal(mx_frame_get_bytes(&view, F_BODY, &b, &blen), 0);
        assert_int_equal(blen, sizeof body);
        assert_memory_equal(b, body, sizeof body);
        /* a NUL inside makes it bytes, not a string */
        assert_int_equal(mx_frame_get_str(&view, F_BODY, &s), -1);
        /* missing fields */
        assert_int_equal(mx_frame_get_u32(&view, F_VERDICT, &u32), -1);
        assert_int_equal(mx_frame_get_str(&view, F_RECIPIENT, &s), -1);
        assert_int_equal(mx_frame_get_bytes(&view, F_HEADER, &b, &blen), -1);
        free(copy);
        mx_frame_free(&f);
    }
}

static void test_msgid_field_round_trip(void **state)
{
    (void)state;
    /* No MSGID-kind tag exists yet; exercise the kind through a tag this
     * build does not know (unknown tags have no kind to check). */
    struct mx_msgid id, back;
    for (int i = 0; i < MX_MSGID_SIZE; i++)
        id.bytes[i] = (uint8_t)(0xf0 - i);
    struct mx_frame f;
    mx_frame_init(&f, MSG_ANY_PING, 7, NULL);
    mx_frame_put_msgid(&f, (enum mx_field_tag)900, &id);
    mx_frame_put_field(&f, 901, "short", 5);
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    uint8_t *copy;
    struct mx_frame_view view;
    assert_int_equal(parse_exact(data, len, &copy, &view, &error), 0);
    assert_int_equal(mx_frame_get_msgid(&view, (enum mx_field_tag)900, &back), 0);
    assert_memory_equal(back.bytes, id.bytes, MX_MSGID_SIZE);
    /* wrong length for a msgid read */
    assert_int_equal(mx_frame_get_msgid(&view, (enum mx_field_tag)901, &back), -1);
    /* a msgid read of a known non-msgid tag */
    assert_int_equal(mx_frame_get_msgid(&view, F_TEXT, &back), -1);
    free(copy);
    mx_frame_free(&f);
}

static void test_repeated_fields_iterate_in_order(void **state)
{
    (void)state;
    static const char *const rcpts[] = { "a@example.org", "b@example.org", "", "d@example.net" };
    struct mx_frame f;
    mx_frame_init(&f, MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT, 1, NULL);
    mx_frame_put_str(&f, F_SENDER, "s@example.com");
    for (size_t i = 0; i < 4; i++) {
        mx_frame_put_str(&f, F_RECIPIENT, rcpts[i]);
        if (i == 1)
            mx_frame_put_u64(&f, F_SIZE, 99); /* interleaved */
    }
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    uint8_t *copy;
    struct mx_frame_view view;
    assert_int_equal(parse_exact(data, len, &copy, &view, &error), 0);

    struct mx_field_iter iter = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t vlen;
    size_t n_rcpt = 0, n_fields = 0;
    static const uint16_t order[] = { F_SENDER, F_RECIPIENT, F_RECIPIENT, F_SIZE,
                                      F_RECIPIENT, F_RECIPIENT };
    while (mx_frame_next_field(&view, &iter, &tag, &value, &vlen) == 1) {
        assert_true(n_fields < 6);
        assert_int_equal(tag, order[n_fields]);
        n_fields++;
        if (tag != F_RECIPIENT)
            continue;
        assert_int_equal(vlen, strlen(rcpts[n_rcpt]));
        assert_memory_equal(value, rcpts[n_rcpt], vlen);
        n_rcpt++;
    }
    assert_int_equal(n_fields, 6);
    assert_int_equal(n_rcpt, 4);
    /* the end stays the end */
    assert_int_equal(mx_frame_next_field(&view, &iter, &tag, &value, &vlen), 0);
    /* the getter gives the first occurrence */
    char *s;
    assert_int_equal(mx_frame_get_str(&view, F_RECIPIENT, &s), 0);
    assert_string_equal(s, "a@example.org");
    free(s);
    free(copy);
    mx_frame_free(&f);
}

static void test_unknown_tags_are_skipped(void **state)
{
    (void)state;
    struct raw r;
    raw_header(&r);
    raw_field(&r, 999, 3, "new", 3);        /* a field from a newer sender */
    raw_field(&r, F_STATUS, 4, four, 4);
    raw_field(&r, 60000, 0, NULL, 0);       /* empty unknown field */
    raw_field(&r, 0, 5, "zero!", 5);        /* tag 0 is just unknown */
    raw_field(&r, F_TEXT, 2, "ok", 2);
    raw_seal(&r);

    uint8_t *copy;
    struct mx_frame_view view;
    const char *error = NULL;
    assert_int_equal(parse_exact(r.b, r.len, &copy, &view, &error), 0);
    uint32_t status;
    char *s;
    assert_int_equal(mx_frame_get_u32(&view, F_STATUS, &status), 0);
    assert_int_equal(status, 2);
    assert_int_equal(mx_frame_get_str(&view, F_TEXT, &s), 0);
    assert_string_equal(s, "ok");
    free(s);
    const uint8_t *b;
    size_t blen;
    assert_int_equal(mx_frame_get_bytes(&view, (enum mx_field_tag)999, &b, &blen), 0);
    assert_int_equal(blen, 3);
    assert_memory_equal(b, "new", 3);

    struct mx_field_iter iter = { 0 };
    uint16_t tag;
    int n = 0;
    while (mx_frame_next_field(&view, &iter, &tag, &b, &blen) == 1)
        n++;
    assert_int_equal(n, 5);
    free(copy);
}

/* ---- malformed frames ------------------------------------------------ */

struct bad_case {
    const char *name;
    void (*build)(struct raw *r);
    const char *error_contains;
};

static void bad_empty(struct raw *r) { r->len = 0; }
static void bad_short_header(struct raw *r) { raw_header(r); r->len = 39; }
static void bad_magic(struct raw *r) { raw_header_full(r, 0x4d58434d, 1, MSG_ANY_ACK); raw_seal(r); }
static void bad_magic_swapped(struct raw *r) { raw_header_full(r, 0x4c43584d, 1, MSG_ANY_ACK); raw_seal(r); }
static void bad_version0(struct raw *r) { raw_header_full(r, MX_WIRE_MAGIC, 0, MSG_ANY_ACK); raw_seal(r); }
static void bad_version2(struct raw *r) { raw_header_full(r, MX_WIRE_MAGIC, 2, MSG_ANY_ACK); raw_seal(r); }
static void bad_type0(struct raw *r) { raw_header_full(r, MX_WIRE_MAGIC, 1, 0); raw_seal(r); }
static void bad_type3(struct raw *r) { raw_header_full(r, MX_WIRE_MAGIC, 1, 3); raw_seal(r); }
static void bad_type_max(struct raw *r) { raw_header_full(r, MX_WIRE_MAGIC, 1, 0xffff); raw_seal(r); }

static void bad_body_long(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_STATUS, 4, four, 4);
    raw_set_body_length(r, 11);
}

static void bad_body_short(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_STATUS, 4, four, 4);
    raw_set_body_length(r, 9);
}

static void bad_body_huge(struct raw *r)
{
    raw_header(r);
    raw_set_body_length(r, 0xffffffffu);
}

static void bad_body_zero_with_data(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_STATUS, 4, four, 4);
    raw_set_body_length(r, 0);
}

static void bad_field_crosses_end(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_TEXT, 6, "hello", 5);
    raw_seal(r);
}

static void bad_field_len_huge(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_STATUS, 4, four, 4);
    raw_field(r, F_BODY, 0xffffffffu, "x", 1);
    raw_seal(r);
}

static void bad_field_header_truncated(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_STATUS, 4, four, 4);
    raw_u16(r, F_TEXT);
    raw_u16(r, 0); /* 4 of 6 header bytes */
    raw_seal(r);
}

static void bad_field_single_byte(struct raw *r)
{
    raw_header(r);
    raw_u8(r, 0);
    raw_seal(r);
}

static void bad_u32_short(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_STATUS, 3, four, 3);
    raw_seal(r);
}

static void bad_u32_long(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_TEXT, 2, "ok", 2);
    raw_field(r, F_VERDICT, 5, "12345", 5);
    raw_seal(r);
}

static void bad_u32_empty(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_LEVEL, 0, NULL, 0);
    raw_seal(r);
}

static void bad_u64_as_u32(struct raw *r)
{
    raw_header(r);
    raw_field(r, F_SIZE, 4, four, 4);
    raw_seal(r);
}

static const struct bad_case bad_cases[] = {
    { "empty", bad_empty, "truncated header: 0 of 40" },
    { "short header", bad_short_header, "truncated header: 39 of 40" },
    { "bad magic", bad_magic, "bad magic 0x4d58434d" },
    { "byte-swapped magic", bad_magic_swapped, "bad magic" },
    { "version 0", bad_version0, "version 0" },
    { "version 2", bad_version2, "version 2" },
    { "type 0", bad_type0, "unknown message type 0" },
    { "type 3", bad_type3, "unknown message type 3" },
    { "type 65535", bad_type_max, "unknown message type 65535" },
    { "body_length too long", bad_body_long, "body_length 11 at offset 12 but 10 bytes" },
    { "body_length too short", bad_body_short, "body_length 9 at offset 12 but 10 bytes" },
    { "body_length huge", bad_body_huge, "body_length 4294967295" },
    { "body_length 0 with data", bad_body_zero_with_data, "body_length 0" },
    { "field crosses end", bad_field_crosses_end, "field 1 (tag 2 F_TEXT) at offset 40: length 6 crosses" },
    { "field length huge", bad_field_len_huge, "field 2 (tag 12 F_BODY) at offset 50: length 4294967295 crosses" },
    { "field header truncated", bad_field_header_truncated, "truncated header of field 2 at offset 50: 4 of 6" },
    { "field header 1 byte", bad_field_single_byte, "truncated header of field 1 at offset 40: 1 of 6" },
    { "u32 of 3 bytes", bad_u32_short, "field 1 (tag 1 F_STATUS) at offset 40: length 3, a u32 must be 4" },
    { "u32 of 5 bytes", bad_u32_long, "field 2 (tag 30 F_VERDICT) at offset 48: length 5, a u32 must be 4" },
    { "u32 of 0 bytes", bad_u32_empty, "(tag 5 F_LEVEL) at offset 40: length 0, a u32" },
    { "u64 of 4 bytes", bad_u64_as_u32, "(tag 14 F_SIZE) at offset 40: length 4, a u64 must be 8" },
};

static void test_malformed_frames(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        struct raw r;
        memset(&r, 0, sizeof r);
        bad_cases[i].build(&r);
        uint8_t *copy;
        struct mx_frame_view view;
        const char *error = NULL;
        memset(&view, 0x55, sizeof view);
        int ret = parse_exact(r.b, r.len, &copy, &view, &error);
        if (ret != -1 || error == NULL || strstr(error, bad_cases[i].error_contains) == NULL)
            fail_msg("case \"%s\": ret %d error \"%s\", want \"%s\"", bad_cases[i].name, ret,
                     error ? error : "(null)", bad_cases[i].error_contains);
        /* a failed parse leaves no half-filled view behind */
        assert_null(view.body);
        assert_int_equal(view.body_len, 0);
        free(copy);
    }
}

/* Every known tag of a fixed-size kind (U32, U64, MSGID: found from the
 * table, so a tag added later is covered too) accepts exactly its size and
 * refuses 0, size - 1, size + 1 and 16 bytes more. */
static void test_fixed_kinds_need_exact_length(void **state)
{
    (void)state;
    static const uint8_t zeros[64];
    int checked = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        size_t want;
        switch (field_kinds[i]) {
        case MX_FIELD_U32: want = 4; break;
        case MX_FIELD_U64: want = 8; break;
        case MX_FIELD_MSGID: want = MX_MSGID_SIZE; break;
        default: continue;
        }
        size_t lens[] = { want, 0, want - 1, want + 1, want + 16 };
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            struct raw r;
            raw_header(&r);
            raw_field(&r, F_TEXT, 1, "t", 1);
            raw_field(&r, (uint16_t)field_names[i].number, (uint32_t)lens[k], zeros, lens[k]);
            raw_seal(&r);
            uint8_t *copy;
            struct mx_frame_view view;
            const char *error = NULL;
            int ret = parse_exact(r.b, r.len, &copy, &view, &error);
            if (ret != (k == 0 ? 0 : -1))
                fail_msg("%s with %zu bytes: ret %d (%s)", field_names[i].name, lens[k], ret,
                         ret ? error : "ok");
            if (ret < 0) {
                char expect[128];
                snprintf(expect, sizeof expect, "field 2 (tag %u %s) at offset 47: length %zu",
                         (unsigned)field_names[i].number, field_names[i].name, lens[k]);
                if (strstr(error, expect) == NULL)
                    fail_msg("error \"%s\" lacks \"%s\"", error, expect);
            }
            free(copy);
            checked++;
        }
    }
    assert_true(checked >= 5 * 5); /* the table has at least 5 fixed-size tags */
}

static void test_oversize_frame_refused(void **state)
{
    (void)state;
    size_t len = (size_t)MX_WIRE_FRAME_MAX + 1;
    struct raw r;
    raw_header(&r);
    uint8_t *big = mx_calloc(1, len);
    memcpy(big, r.b, MX_WIRE_HEADER_SIZE);
    raw_set_body_length(&r, (uint32_t)(len - MX_WIRE_HEADER_SIZE));
    memcpy(big, r.b, MX_WIRE_HEADER_SIZE);
    struct mx_frame_view view;
    const char *error = NULL;
    assert_int_equal(mx_frame_parse(big, len, &view, &error), -1);
    assert_non_null(strstr(error, "exceeds MX_WIRE_FRAME_MAX"));
    free(big);
}

/* A NUL or an oversize value is fine in the frame (it is just bytes) but
 * refused by the string getter. */
static void test_get_str_refuses_nul_and_oversize(void **state)
{
    (void)state;
    size_t max = MX_WIRE_STRING_MAX;
    char *big = mx_malloc(max + 2);
    memset(big, 'x', max + 1);
    big[max + 1] = '\0';

    struct mx_frame f;
    mx_frame_init(&f, MSG_ANY_MON_EVENT, 0, NULL);
    mx_frame_put_bytes(&f, F_TEXT, "a\0b", 3);
    mx_frame_put_str(&f, F_NODE, big);             /* MAX + 1 */
    mx_frame_put_bytes(&f, F_ROLE, big, max);      /* exactly MAX */
    mx_frame_put_bytes(&f, F_INSTANCE, "\0", 1);
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    uint8_t *copy;
    struct mx_frame_view view;
    assert_int_equal(parse_exact(data, len, &copy, &view, &error), 0);

    char *s = NULL;
    assert_int_equal(mx_frame_get_str(&view, F_TEXT, &s), -1);
    assert_int_equal(mx_frame_get_str(&view, F_NODE, &s), -1);
    assert_int_equal(mx_frame_get_str(&view, F_INSTANCE, &s), -1);
    assert_null(s);
    assert_int_equal(mx_frame_get_str(&view, F_ROLE, &s), 0);
    assert_int_equal(strlen(s), max);
    free(s);
    /* the bytes getter still hands them out */
    const uint8_t *b;
    size_t blen;
    assert_int_equal(mx_frame_get_bytes(&view, F_TEXT, &b, &blen), 0);
    assert_int_equal(blen, 3);
    assert_int_equal(mx_frame_get_bytes(&view, F_NODE, &b, &blen), 0);
    assert_int_equal(blen, max + 1);
    /* typed getters refuse a known tag of another kind */
    uint32_t u32;
    uint64_t u64;
    assert_int_equal(mx_frame_get_u32(&view, F_TEXT, &u32), -1);
    assert_int_equal(mx_frame_get_u64(&view, F_TEXT, &u64), -1);
    free(copy);
    mx_frame_free(&f);
    free(big);
}

/* ---- every prefix of a valid frame ----------------------------------- */

static void test_every_truncation_fails(void **state)
{
    (void)state;
    struct mx_frame f;
    struct mx_msgid id = { { 1, 2, 3 } };
    mx_frame_init(&f, MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT, 42, &id);
    mx_frame_put_str(&f, F_SENDER, "s@example.com");
    mx_frame_put_str(&f, F_RECIPIENT, "r1@example.org");
    mx_frame_put_u32(&f, F_STATUS, 1);
    mx_frame_put_u64(&f, F_SIZE, 5);
    mx_frame_put_str(&f, F_RECIPIENT, "");
    mx_frame_put_bytes(&f, F_BODY, "Subject: x\r\n\r\nhi\r\n", 18);
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);

    /* Field boundaries, where a cut with a matching body_length is a valid
     * (shorter) frame. */
    bool boundary[512] = { false };
    assert_true(len < sizeof boundary);
    {
        uint8_t *copy;
        struct mx_frame_view view;
        assert_int_equal(parse_exact(data, len, &copy, &view, &error), 0);
        struct mx_field_iter iter = { 0 };
        uint16_t tag;
        const uint8_t *v;
        size_t vlen;
        boundary[MX_WIRE_HEADER_SIZE] = true;
        while (mx_frame_next_field(&view, &iter, &tag, &v, &vlen) == 1)
            boundary[MX_WIRE_HEADER_SIZE + iter.offset] = true;
        free(copy);
    }

    uint8_t *buf = mx_malloc(len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy;
        struct mx_frame_view view;
        /* as cut on the wire: body_length still says the full length */
        error = NULL;
        if (parse_exact(data, n, &copy, &view, &error) != -1)
            fail_msg("prefix of %zu bytes parsed", n);
        assert_non_null(error);
        free(copy);
        /* body_length patched to the cut: the field walk must catch it */
        if (n < MX_WIRE_HEADER_SIZE)
            continue;
        memcpy(buf, data, n);
        uint32_t bl = (uint32_t)(n - MX_WIRE_HEADER_SIZE);
        buf[12] = (uint8_t)(bl >> 24);
        buf[13] = (uint8_t)(bl >> 16);
        buf[14] = (uint8_t)(bl >> 8);
        buf[15] = (uint8_t)bl;
        int ret = parse_exact(buf, n, &copy, &view, &error);
        if (ret != (boundary[n] ? 0 : -1))
            fail_msg("prefix of %zu bytes with body_length %u: ret %d (%s)", n, bl, ret,
                     ret ? error : "ok");
        free(copy);
    }
    free(buf);
    mx_frame_free(&f);
}

/* ---- random corruption ----------------------------------------------- */

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

/* rng - xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(0x2545f4914f6cdd1d);
}

/* exercise_view - everything a receiver might do with a parsed frame. */
static void exercise_view(const struct mx_frame_view *view)
{
    struct mx_field_iter iter = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t vlen, total = 0;
    while (mx_frame_next_field(view, &iter, &tag, &v, &vlen) == 1) {
        total += MX_WIRE_FIELD_HEADER_SIZE + vlen;
        assert_true(v >= view->body && v + vlen <= view->body + view->body_len);
    }
    assert_int_equal(total, view->body_len); /* consumed exactly */
    for (size_t i = 0; i < N_FIELDS; i++) {
        enum mx_field_tag t = (enum mx_field_tag)field_names[i].number;
        uint32_t u32;
        uint64_t u64;
        struct mx_msgid id;
        char *s;
        (void)mx_frame_get_u32(view, t, &u32);
        (void)mx_frame_get_u64(view, t, &u64);
        (void)mx_frame_get_msgid(view, t, &id);
        (void)mx_frame_get_bytes(view, t, &v, &vlen);
        if (mx_frame_get_str(view, t, &s) == 0) {
            /* a string is exactly its field: no NUL inside, not too long */
            assert_int_equal(mx_frame_get_bytes(view, t, &v, &vlen), 0);
            assert_int_equal(strlen(s), vlen);
            assert_true(vlen <= MX_WIRE_STRING_MAX);
            free(s);
        }
    }
}

static void test_random_corruption_never_crashes(void **state)
{
    (void)state;
    struct mx_frame f;
    mx_frame_init(&f, MSG_FILTER_INBOUND_CONTENT_VERDICT, 9, NULL);
    mx_frame_put_u32(&f, F_VERDICT, MX_VERDICT_QUARANTINE);
    mx_frame_put_u32(&f, F_SCORE, 750);
    mx_frame_put_str(&f, F_TEXT, "spam");
    mx_frame_put_str(&f, F_HEADER, "X-Spam: yes");
    mx_frame_put_str(&f, F_HEADER, "X-Spam-Score: 7.5");
    mx_frame_put_u64(&f, F_SIZE, 12345);
    mx_frame_put_field(&f, 777, "future", 6);
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);

    uint8_t *buf = mx_malloc(len + 16);
    int ok = 0, failed = 0;
    for (int it = 0; it < 100000; it++) {
        memcpy(buf, data, len);
        size_t n = len;
        uint64_t r = rng();
        int flips = 1 + (int)(r % 4);
        for (int k = 0; k < flips; k++) {
            uint64_t x = rng();
            /* mostly the body, where the interesting structure is; the
             * header checks are few and simple */
            size_t pos = (x & 0x300) ? MX_WIRE_HEADER_SIZE + (x >> 16) % (len - MX_WIRE_HEADER_SIZE)
                                     : (x >> 16) % len;
            buf[pos] = (x & 0x400) ? (uint8_t)(buf[pos] ^ (1u << ((x >> 11) & 7)))
                                   : (uint8_t)(x >> 56);
        }
        switch ((r >> 8) % 4) {
        case 0: /* also cut or extend, keeping body_length consistent */
            n = MX_WIRE_HEADER_SIZE + (size_t)((r >> 16) % (len - MX_WIRE_HEADER_SIZE + 16));
            for (size_t i = len; i < n; i++)
                buf[i] = (uint8_t)(r >> (i % 56));
            {
                uint32_t bl = (uint32_t)(n - MX_WIRE_HEADER_SIZE);
                buf[12] = (uint8_t)(bl >> 24);
                buf[13] = (uint8_t)(bl >> 16);
                buf[14] = (uint8_t)(bl >> 8);
                buf[15] = (uint8_t)bl;
            }
            break;
        default:
            break;
        }
        uint8_t *copy;
        struct mx_frame_view view;
        if (parse_exact(buf, n, &copy, &view, &error) == 0) {
            ok++;
            exercise_view(&view);
        } else {
            failed++;
            assert_non_null(error);
        }
        free(copy);
    }
    /* Both outcomes must really occur, or this loop tested nothing. */
    assert_true(ok > 1000);
    assert_true(failed > 1000);
    free(buf);
    mx_frame_free(&f);
}

/* A view not made by mx_frame_parse (a bug elsewhere) still cannot make the
 * iterator overrun: it stops at the first field that does not fit. */
static void test_iterator_on_handmade_view(void **state)
{
    (void)state;
    uint8_t *body = mx_malloc(10);
    memcpy(body, "\x00\x01\x00\x00\x00\x04\x00\x00\x00\x09", 10);
    struct mx_frame_view view = { .type = MSG_ANY_ACK, .body = body, .body_len = 10 };
    struct mx_field_iter iter = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t vlen;
    assert_int_equal(mx_frame_next_field(&view, &iter, &tag, &v, &vlen), 1);
    assert_int_equal(mx_frame_next_field(&view, &iter, &tag, &v, &vlen), 0);
    view.body_len = 9; /* now the first field crosses the end */
    iter.offset = 0;
    assert_int_equal(mx_frame_next_field(&view, &iter, &tag, &v, &vlen), 0);
    uint32_t u32;
    assert_int_equal(mx_frame_get_u32(&view, F_STATUS, &u32), -1);
    view.body_len = 5; /* not even a field header */
    iter.offset = 0;
    assert_int_equal(mx_frame_next_field(&view, &iter, &tag, &v, &vlen), 0);
    free(body);
}

/* ---- builder limits and programming errors --------------------------- */

static void test_builder_size_limit(void **state)
{
    (void)state;
    /* A body field that makes the frame exactly MX_WIRE_FRAME_MAX fits. */
    size_t fill = MX_WIRE_FRAME_MAX - MX_WIRE_HEADER_SIZE - MX_WIRE_FIELD_HEADER_SIZE;
    uint8_t *big = mx_calloc(1, fill + 1);
    struct mx_frame f;
    mx_frame_init(&f, MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT, 1, NULL);
    mx_frame_put_bytes(&f, F_BODY, big, fill);
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    assert_int_equal(len, MX_WIRE_FRAME_MAX);
    struct mx_frame_view view;
    assert_int_equal(mx_frame_parse(data, len, &view, &error), 0);
    assert_int_equal(view.body_len, MX_WIRE_FRAME_MAX - MX_WIRE_HEADER_SIZE);
    /* One byte more does not; the frame stays as it was. */
    mx_frame_put_bytes(&f, F_TEXT, "", 0);
    assert_true(f.too_big);
    assert_int_equal(f.len, MX_WIRE_FRAME_MAX);
    mx_frame_put_u32(&f, F_STATUS, 0); /* ignored from now on */
    assert_int_equal(f.len, MX_WIRE_FRAME_MAX);
    error = NULL;
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
    assert_non_null(strstr(error, "tag 2 (F_TEXT)"));
    assert_non_null(strstr(error, "MX_WIRE_FRAME_MAX"));
    mx_frame_free(&f);

    mx_frame_init(&f, MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT, 1, NULL);
    mx_frame_put_bytes(&f, F_BODY, big, fill + 1);
    assert_true(f.too_big);
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
    mx_frame_free(&f);
    free(big);

    /* Lengths beyond the frame limit and beyond u32 are refused before the
     * value is touched (it is never read: only 1 byte exists here). */
    static const uint8_t one = 0;
    size_t absurd[] = { (size_t)MX_WIRE_FRAME_MAX, (size_t)UINT32_MAX,
                        (size_t)UINT32_MAX + 1, SIZE_MAX, SIZE_MAX - 5 };
    for (size_t i = 0; i < sizeof absurd / sizeof absurd[0]; i++) {
        mx_frame_init(&f, MSG_ANY_ACK, 1, NULL);
        mx_frame_put_bytes(&f, F_BODY, &one, absurd[i]);
        assert_true(f.too_big);
        assert_int_equal(f.len, MX_WIRE_HEADER_SIZE);
        assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
        mx_frame_free(&f);
    }
}

static void test_builder_programming_errors(void **state)
{
    (void)state;
    struct mx_frame f;
    const uint8_t *data;
    size_t len;
    const char *error = NULL;

    mx_frame_init(&f, MSG_ANY_ACK, 1, NULL);
    mx_frame_put_u64(&f, F_STATUS, 1); /* F_STATUS is a u32 */
    mx_frame_put_u32(&f, F_STATUS, 1); /* ignored after the error */
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
    assert_non_null(strstr(error, "wrong kind"));
    assert_non_null(strstr(error, "tag 1 (F_STATUS, a u32)"));
    assert_int_equal(f.len, MX_WIRE_HEADER_SIZE);
    mx_frame_free(&f);

    mx_frame_init(&f, MSG_ANY_ACK, 1, NULL);
    mx_frame_put_str(&f, F_SIZE, "8 bytes!"); /* a u64 tag */
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
    assert_non_null(strstr(error, "F_SIZE"));
    mx_frame_free(&f);

    mx_frame_init(&f, MSG_ANY_ACK, 1, NULL);
    mx_frame_put_u32(&f, F_TEXT, 1); /* a str tag */
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
    mx_frame_free(&f);

    mx_frame_init(&f, (enum mx_msg_type)999, 1, NULL);
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), -1);
    assert_non_null(strstr(error, "unknown message type 999"));
    mx_frame_free(&f);

    /* put_field is the escape hatch: no kind check, the parser judges. */
    mx_frame_init(&f, MSG_ANY_ACK, 1, NULL);
    mx_frame_put_field(&f, F_STATUS, "12345678", 8);
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    struct mx_frame_view view;
    assert_int_equal(mx_frame_parse(data, len, &view, &error), -1);
    assert_non_null(strstr(error, "a u32 must be 4"));
    mx_frame_free(&f);
}

/* finish may be called again after more puts; body_length follows. */
static void test_finish_twice(void **state)
{
    (void)state;
    struct mx_frame f;
    const uint8_t *data;
    size_t len;
    const char *error = NULL;
    struct mx_frame_view view;
    mx_frame_init(&f, MSG_ANY_PING, 3, NULL);
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    assert_int_equal(len, MX_WIRE_HEADER_SIZE);
    assert_int_equal(mx_frame_parse(data, len, &view, &error), 0);
    assert_int_equal(view.body_len, 0);
    for (int i = 0; i < 1000; i++) /* grows through several reallocs */
        mx_frame_put_str(&f, F_RECIPIENT, "someone@example.org");
    assert_int_equal(mx_frame_finish(&f, &data, &len, &error), 0);
    assert_int_equal(len, MX_WIRE_HEADER_SIZE + 1000 * (6 + 19));
    assert_int_equal(mx_frame_parse(data, len, &view, &error), 0);
    mx_frame_free(&f);
    mx_frame_free(&f); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_golden_bytes),
        cmocka_unit_test(test_round_trip_every_type_and_kind),
        cmocka_unit_test(test_msgid_field_round_trip),
        cmocka_unit_test(test_repeated_fields_iterate_in_order),
        cmocka_unit_test(test_unknown_tags_are_skipped),
        cmocka_unit_test(test_malformed_frames),
        cmocka_unit_test(test_fixed_kinds_need_exact_length),
        cmocka_unit_test(test_oversize_frame_refused),
        cmocka_unit_test(test_get_str_refuses_nul_and_oversize),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_random_corruption_never_crashes),
        cmocka_unit_test(test_iterator_on_handmade_view),
        cmocka_unit_test(test_builder_size_limit),
        cmocka_unit_test(test_builder_programming_errors),
        cmocka_unit_test(test_finish_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
