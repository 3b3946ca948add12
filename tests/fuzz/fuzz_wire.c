/* fuzz_wire - libFuzzer target for the inter-role frame parser.
 *
 * For every input: parse; on success walk all fields and call every getter
 * on every tag seen (and on every known tag), then re-encode the frame with
 * the builder (typed puts for known tags, mx_frame_put_field for the rest)
 * and check the round trip. The encoding is canonical (no padding, no
 * optional parts), so the re-encoded bytes must equal the input exactly;
 * anything else is a real bug and abort()s so libFuzzer keeps the input.
 *
 * Build: tests/fuzz/run-fuzz.sh (or cmake -DMX_FUZZ=ON with CC=clang). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_wire: invariant failed at line %d: %s\n",   \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* call_getters - every getter on tag; results must agree with each other. */
static void call_getters(const struct mx_frame_view *view, uint32_t tag)
{
    enum mx_field_tag t = (enum mx_field_tag)tag;
    const uint8_t *raw;
    size_t raw_len;
    int have = mx_frame_get_bytes(view, t, &raw, &raw_len);
    if (have == 0)
        CHECK(raw >= view->body && raw + raw_len <= view->body + view->body_len);

    uint32_t u32;
    if (mx_frame_get_u32(view, t, &u32) == 0)
        CHECK(have == 0 && raw_len == 4 && u32 == be32(raw));
    uint64_t u64;
    if (mx_frame_get_u64(view, t, &u64) == 0)
        CHECK(have == 0 && raw_len == 8 && u64 == be64(raw));
    struct mx_msgid id;
    if (mx_frame_get_msgid(view, t, &id) == 0)
        CHECK(have == 0 && raw_len == MX_MSGID_SIZE && memcmp(id.bytes, raw, raw_len) == 0);
    char *s;
    if (mx_frame_get_str(view, t, &s) == 0) {
        CHECK(have == 0 && strlen(s) == raw_len && memcmp(s, raw, raw_len) == 0);
        CHECK(raw_len <= MX_WIRE_STRING_MAX);
        free(s);
    }
    (void)mx_field_tag_name(tag);
}

/* put_like - append one field the way a sender would: typed put for a known
 * tag, verbatim for an unknown one. */
static void put_like(struct mx_frame *f, uint16_t tag, const uint8_t *v, size_t len)
{
    enum mx_field_kind kind;
    if (mx_field_tag_kind(tag, &kind) < 0) {
        mx_frame_put_field(f, tag, v, len);
        return;
    }
    enum mx_field_tag t = (enum mx_field_tag)tag;
    switch (kind) {
    case MX_FIELD_U32:
        CHECK(len == 4); /* parse guarantees this for known tags */
        mx_frame_put_u32(f, t, be32(v));
        break;
    case MX_FIELD_U64:
        CHECK(len == 8);
        mx_frame_put_u64(f, t, be64(v));
        break;
    case MX_FIELD_MSGID: {
        CHECK(len == MX_MSGID_SIZE);
        struct mx_msgid id;
        memcpy(id.bytes, v, MX_MSGID_SIZE);
        mx_frame_put_msgid(f, t, &id);
        break;
    }
    case MX_FIELD_STR:
        if (len == 0 || memchr(v, '\0', len) == NULL) {
            char *s = malloc(len + 1);
            CHECK(s != NULL);
            memcpy(s, v, len);
            s[len] = '\0';
            mx_frame_put_str(f, t, s);
            free(s);
        } else {
            /* a NUL inside is only expressible as bytes */
            mx_frame_put_bytes(f, t, v, len);
        }
        break;
    case MX_FIELD_BYTES:
        mx_frame_put_bytes(f, t, v, len);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mx_frame_view view;
    const char *error = NULL;
    if (mx_frame_parse(data, size, &view, &error) < 0) {
        CHECK(error != NULL && error[0] != '\0');
        return 0;
    }
    CHECK(mx_msg_type_name(view.type) != NULL);
    CHECK(view.body_len + MX_WIRE_HEADER_SIZE == size);

    struct mx_frame f;
    mx_frame_init(&f, (enum mx_msg_type)view.type, view.request_id, &view.message_id);
    mx_frame_set_flags(&f, view.flags);

    struct mx_field_iter iter = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t len, consumed = 0, nfields = 0;
    while (mx_frame_next_field(&view, &iter, &tag, &v, &len) == 1) {
        CHECK(v >= view.body && v + len <= view.body + view.body_len);
        consumed += MX_WIRE_FIELD_HEADER_SIZE + len;
        nfields++;
        call_getters(&view, tag);
        put_like(&f, tag, v, len);
    }
    CHECK(consumed == view.body_len);
    /* getters on known tags that may be absent: must just say no */
    for (uint32_t t = 0; t <= 40; t++)
        call_getters(&view, t);

    const uint8_t *out;
    size_t out_len;
    CHECK(mx_frame_finish(&f, &out, &out_len, &error) == 0);
    CHECK(out_len == size && memcmp(out, data, size) == 0);

    struct mx_frame_view again;
    CHECK(mx_frame_parse(out, out_len, &again, &error) == 0);
    CHECK(again.type == view.type && again.flags == view.flags &&
          again.request_id == view.request_id &&
          memcmp(again.message_id.bytes, view.message_id.bytes, MX_MSGID_SIZE) == 0 &&
          again.body_len == view.body_len);
    struct mx_field_iter a = { 0 }, b = { 0 };
    uint16_t ta, tb;
    const uint8_t *va, *vb;
    size_t la, lb, n = 0;
    for (;;) {
        int ra = mx_frame_next_field(&view, &a, &ta, &va, &la);
        int rb = mx_frame_next_field(&again, &b, &tb, &vb, &lb);
        CHECK(ra == rb);
        if (ra == 0)
            break;
        CHECK(ta == tb && la == lb && memcmp(va, vb, la) == 0);
        n++;
    }
    CHECK(n == nfields);
    mx_frame_free(&f);
    return 0;
}
