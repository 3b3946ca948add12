/* mx_wire - encoding and validation of the inter-role frame (layout in
 * mx_wire.h).
 *
 * Every multi-byte integer is written and read one byte at a time
 * (big-endian), so nothing here depends on host byte order or alignment, and
 * no C struct ever goes on the wire. The parser checks the whole structure
 * once; the getters and the iterator then rely on that but still bound every
 * read by the body length, so a hand-made view cannot make them overrun. */
#include "mx_wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

/* ---- the layout, pinned at compile time ------------------------------ */

#define MX_WIRE_SIZE_MAGIC 4
#define MX_WIRE_SIZE_VERSION 2
#define MX_WIRE_SIZE_TYPE 2
#define MX_WIRE_SIZE_FLAGS 4
#define MX_WIRE_SIZE_BODY_LENGTH 4
#define MX_WIRE_SIZE_REQUEST_ID 8
#define MX_WIRE_SIZE_MESSAGE_ID 16

_Static_assert(MX_WIRE_OFF_MAGIC == 0, "magic first");
_Static_assert(MX_WIRE_OFF_VERSION == MX_WIRE_OFF_MAGIC + MX_WIRE_SIZE_MAGIC, "version offset");
_Static_assert(MX_WIRE_OFF_TYPE == MX_WIRE_OFF_VERSION + MX_WIRE_SIZE_VERSION, "type offset");
_Static_assert(MX_WIRE_OFF_FLAGS == MX_WIRE_OFF_TYPE + MX_WIRE_SIZE_TYPE, "flags offset");
_Static_assert(MX_WIRE_OFF_BODY_LENGTH == MX_WIRE_OFF_FLAGS + MX_WIRE_SIZE_FLAGS,
               "body_length offset");
_Static_assert(MX_WIRE_OFF_REQUEST_ID == MX_WIRE_OFF_BODY_LENGTH + MX_WIRE_SIZE_BODY_LENGTH,
               "request_id offset");
_Static_assert(MX_WIRE_OFF_MESSAGE_ID == MX_WIRE_OFF_REQUEST_ID + MX_WIRE_SIZE_REQUEST_ID,
               "message_id offset");
_Static_assert(MX_WIRE_HEADER_SIZE == MX_WIRE_OFF_MESSAGE_ID + MX_WIRE_SIZE_MESSAGE_ID,
               "header size");
_Static_assert(MX_WIRE_HEADER_SIZE == 40, "header is 40 bytes on the wire");
_Static_assert(MX_WIRE_SIZE_MESSAGE_ID == MX_MSGID_SIZE, "message_id is a whole mx_msgid");
_Static_assert(sizeof(struct mx_msgid) == MX_MSGID_SIZE, "mx_msgid has no padding");
_Static_assert(MX_WIRE_FIELD_HEADER_SIZE == 2 + 4, "field header is tag u16 + length u32");
/* body_length and field lengths are u32: every frame we accept must fit. */
_Static_assert(MX_WIRE_FRAME_MAX <= UINT32_MAX, "frame size fits the u32 length fields");
_Static_assert(MX_WIRE_FRAME_MAX > MX_WIRE_HEADER_SIZE, "frame max leaves room for a body");
_Static_assert(MX_WIRE_STRING_MAX < MX_WIRE_FRAME_MAX, "a string fits a frame");
_Static_assert(MX_WIRE_VERSION >= 1 && MX_WIRE_VERSION <= UINT16_MAX, "version is a u16");

/* Message numbers and tags are u16 on the wire, and never 0. (Uniqueness is
 * checked too: the switches below would not compile with a duplicate case.) */
#define MX_WIRE_ASSERT_U16(name, number, ...)                                  \
    _Static_assert((number) >= 1 && (number) <= UINT16_MAX, #name " fits u16");
MX_WIRE_MESSAGES(MX_WIRE_ASSERT_U16)
MX_WIRE_FIELDS(MX_WIRE_ASSERT_U16)
#undef MX_WIRE_ASSERT_U16

/* ---- byte helpers ---------------------------------------------------- */

static void mx_wire_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void mx_wire_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void mx_wire_put64(uint8_t *p, uint64_t v)
{
    mx_wire_put32(p, (uint32_t)(v >> 32));
    mx_wire_put32(p + 4, (uint32_t)v);
}

static uint16_t mx_wire_get16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t mx_wire_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t mx_wire_get64(const uint8_t *p)
{
    return (uint64_t)mx_wire_get32(p) << 32 | mx_wire_get32(p + 4);
}

/* mx_wire_error_buf - the thread-local home of errors that carry numbers;
 * see the lifetime rule at mx_frame_parse in mx_wire.h. */
static _Thread_local char mx_wire_error_buf[192];

static const char *mx_wire_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *mx_wire_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mx_wire_error_buf, sizeof mx_wire_error_buf, fmt, ap);
    va_end(ap);
    return mx_wire_error_buf;
}

/* ---- names, generated from the tables -------------------------------- */

const char *mx_msg_type_name(uint32_t type)
{
    switch (type) {
#define MX_WIRE_NAME_CASE(name, number, ...) case number: return #name;
        MX_WIRE_MESSAGES(MX_WIRE_NAME_CASE)
    }
    return NULL;
}

const char *mx_field_tag_name(uint32_t tag)
{
    switch (tag) {
        MX_WIRE_FIELDS(MX_WIRE_NAME_CASE)
#undef MX_WIRE_NAME_CASE
    }
    return NULL;
}

int mx_field_tag_kind(uint32_t tag, enum mx_field_kind *kind_r)
{
    switch (tag) {
#define MX_WIRE_KIND_CASE(name, number, kind, ...)                             \
    case number: *kind_r = MX_FIELD_##kind; return 0;
        MX_WIRE_FIELDS(MX_WIRE_KIND_CASE)
#undef MX_WIRE_KIND_CASE
    }
    return -1;
}

/* mx_wire_kind_size - the exact value length of a fixed-size kind, 0 for
 * the variable-length kinds (STR, BYTES). */
static size_t mx_wire_kind_size(enum mx_field_kind kind)
{
    switch (kind) {
    case MX_FIELD_U32: return 4;
    case MX_FIELD_U64: return 8;
    case MX_FIELD_MSGID: return MX_MSGID_SIZE;
    case MX_FIELD_STR:
    case MX_FIELD_BYTES: return 0;
    }
    return 0;
}

static const char *mx_wire_kind_name(enum mx_field_kind kind)
{
    switch (kind) {
    case MX_FIELD_U32: return "u32";
    case MX_FIELD_U64: return "u64";
    case MX_FIELD_STR: return "str";
    case MX_FIELD_BYTES: return "bytes";
    case MX_FIELD_MSGID: return "msgid";
    }
    return "?";
}

/* mx_wire_tag_label - a tag's name for error messages, "unknown" if none. */
static const char *mx_wire_tag_label(uint32_t tag)
{
    const char *name = mx_field_tag_name(tag);
    return name != NULL ? name : "unknown";
}

/* ---- building -------------------------------------------------------- */

#define MX_FRAME_INITIAL_CAP 256

/* Builder errors (frame->error); compared by address in mx_frame_finish. */
static const char mx_wire_err_type[] = "unknown message type";
static const char mx_wire_err_kind[] = "field put with the wrong kind for its tag";

void mx_frame_init(struct mx_frame *frame, enum mx_msg_type type, uint64_t request_id,
                   const struct mx_msgid *message_id)
{
    memset(frame, 0, sizeof *frame);
    frame->cap = MX_FRAME_INITIAL_CAP;
    frame->data = mx_malloc(frame->cap);
    frame->len = MX_WIRE_HEADER_SIZE;

    uint8_t *h = frame->data;
    mx_wire_put32(h + MX_WIRE_OFF_MAGIC, MX_WIRE_MAGIC);
    mx_wire_put16(h + MX_WIRE_OFF_VERSION, MX_WIRE_VERSION);
    mx_wire_put16(h + MX_WIRE_OFF_TYPE, (uint16_t)type);
    mx_wire_put32(h + MX_WIRE_OFF_FLAGS, 0);
    mx_wire_put32(h + MX_WIRE_OFF_BODY_LENGTH, 0);
    mx_wire_put64(h + MX_WIRE_OFF_REQUEST_ID, request_id);
    if (message_id != NULL)
        memcpy(h + MX_WIRE_OFF_MESSAGE_ID, message_id->bytes, MX_MSGID_SIZE);
    else
        memset(h + MX_WIRE_OFF_MESSAGE_ID, 0, MX_MSGID_SIZE);

    /* The receiver would refuse it; say so at finish, where the sender
     * checks for errors anyway. */
    if (mx_msg_type_name((uint32_t)type) == NULL) {
        frame->error = mx_wire_err_type;
        frame->error_tag = (uint32_t)type;
    }
}

void mx_frame_set_flags(struct mx_frame *frame, uint32_t flags)
{
    mx_wire_put32(frame->data + MX_WIRE_OFF_FLAGS, flags);
}

/* mx_frame_append - the one place that grows a frame. Checks sizes before
 * touching value, so an absurd len is refused without reading it. */
static void mx_frame_append(struct mx_frame *frame, uint16_t tag, const void *value, size_t len)
{
    if (frame->too_big || frame->error != NULL)
        return;
    if (len > UINT32_MAX || len > MX_WIRE_FRAME_MAX ||
        MX_WIRE_FIELD_HEADER_SIZE + len > MX_WIRE_FRAME_MAX - frame->len) {
        frame->too_big = true;
        frame->error_tag = tag;
        return;
    }
    size_t need = frame->len + MX_WIRE_FIELD_HEADER_SIZE + len; /* <= FRAME_MAX */
    if (need > frame->cap) {
        size_t cap = frame->cap;
        while (cap < need)
            cap = cap < MX_WIRE_FRAME_MAX / 2 ? cap * 2 : MX_WIRE_FRAME_MAX;
        frame->data = mx_realloc(frame->data, cap);
        frame->cap = cap;
    }
    uint8_t *p = frame->data + frame->len;
    mx_wire_put16(p, tag);
    mx_wire_put32(p + 2, (uint32_t)len);
    if (len > 0)
        memcpy(p + MX_WIRE_FIELD_HEADER_SIZE, value, len);
    frame->len = need;
}

/* mx_frame_append_typed - append after checking that a known tag is of the
 * kind the caller encodes (STR and BYTES are interchangeable). A mismatch is
 * a bug in the sender, reported by mx_frame_finish. */
static void mx_frame_append_typed(struct mx_frame *frame, enum mx_field_tag tag,
                                  enum mx_field_kind kind, const void *value, size_t len)
{
    enum mx_field_kind want;
    if (frame->error == NULL && mx_field_tag_kind((uint32_t)tag, &want) == 0 && want != kind &&
        !(mx_wire_kind_size(want) == 0 && mx_wire_kind_size(kind) == 0)) {
        frame->error = mx_wire_err_kind;
        frame->error_tag = (uint32_t)tag;
        return;
    }
    if ((uint32_t)tag > UINT16_MAX && frame->error == NULL) {
        frame->error = "field tag does not fit u16";
        frame->error_tag = (uint32_t)tag;
        return;
    }
    mx_frame_append(frame, (uint16_t)tag, value, len);
}

void mx_frame_put_u32(struct mx_frame *frame, enum mx_field_tag tag, uint32_t value)
{
    uint8_t b[4];
    mx_wire_put32(b, value);
    mx_frame_append_typed(frame, tag, MX_FIELD_U32, b, sizeof b);
}

void mx_frame_put_u64(struct mx_frame *frame, enum mx_field_tag tag, uint64_t value)
{
    uint8_t b[8];
    mx_wire_put64(b, value);
    mx_frame_append_typed(frame, tag, MX_FIELD_U64, b, sizeof b);
}

void mx_frame_put_str(struct mx_frame *frame, enum mx_field_tag tag, const char *value)
{
    mx_frame_append_typed(frame, tag, MX_FIELD_STR, value, strlen(value));
}

void mx_frame_put_bytes(struct mx_frame *frame, enum mx_field_tag tag, const void *value, size_t len)
{
    mx_frame_append_typed(frame, tag, MX_FIELD_BYTES, value, len);
}

void mx_frame_put_msgid(struct mx_frame *frame, enum mx_field_tag tag, const struct mx_msgid *id)
{
    mx_frame_append_typed(frame, tag, MX_FIELD_MSGID, id->bytes, MX_MSGID_SIZE);
}

void mx_frame_put_field(struct mx_frame *frame, uint16_t tag, const void *value, size_t len)
{
    mx_frame_append(frame, tag, value, len);
}

int mx_frame_finish(struct mx_frame *frame, const uint8_t **data_r, size_t *len_r,
                    const char **error_r)
{
    if (frame->error == mx_wire_err_type) {
        *error_r = mx_wire_errorf("cannot build frame: %s %u", frame->error,
                                  (unsigned)frame->error_tag);
        return -1;
    }
    if (frame->error != NULL) {
        enum mx_field_kind kind;
        bool known = mx_field_tag_kind(frame->error_tag, &kind) == 0;
        *error_r = mx_wire_errorf("cannot build frame: %s: tag %u (%s%s%s)", frame->error,
                                  (unsigned)frame->error_tag,
                                  mx_wire_tag_label(frame->error_tag), known ? ", a " : "",
                                  known ? mx_wire_kind_name(kind) : "");
        return -1;
    }
    if (frame->too_big) {
        *error_r = mx_wire_errorf("cannot build frame: field tag %u (%s) would make it larger "
                                  "than MX_WIRE_FRAME_MAX (%u bytes)",
                                  (unsigned)frame->error_tag,
                                  mx_wire_tag_label(frame->error_tag),
                                  (unsigned)MX_WIRE_FRAME_MAX);
        return -1;
    }
    mx_wire_put32(frame->data + MX_WIRE_OFF_BODY_LENGTH,
                  (uint32_t)(frame->len - MX_WIRE_HEADER_SIZE));
    *data_r = frame->data;
    *len_r = frame->len;
    return 0;
}

void mx_frame_free(struct mx_frame *frame)
{
    free(frame->data);
    frame->data = NULL;
    frame->len = 0;
    frame->cap = 0;
}

/* ---- parsing --------------------------------------------------------- */

int mx_frame_parse(const void *data, size_t len, struct mx_frame_view *view_r,
                   const char **error_r)
{
    const uint8_t *p = data;

    memset(view_r, 0, sizeof *view_r);
    if (len < MX_WIRE_HEADER_SIZE) {
        *error_r = mx_wire_errorf("truncated header: %zu of %u bytes", len,
                                  (unsigned)MX_WIRE_HEADER_SIZE);
        return -1;
    }
    if (len > MX_WIRE_FRAME_MAX) {
        *error_r = mx_wire_errorf("frame of %zu bytes exceeds MX_WIRE_FRAME_MAX (%u)", len,
                                  (unsigned)MX_WIRE_FRAME_MAX);
        return -1;
    }
    uint32_t magic = mx_wire_get32(p + MX_WIRE_OFF_MAGIC);
    if (magic != MX_WIRE_MAGIC) {
        *error_r = mx_wire_errorf("bad magic 0x%08x at offset 0 (want 0x%08x \"MXCL\")",
                                  (unsigned)magic, (unsigned)MX_WIRE_MAGIC);
        return -1;
    }
    uint16_t version = mx_wire_get16(p + MX_WIRE_OFF_VERSION);
    if (version != MX_WIRE_VERSION) {
        *error_r = mx_wire_errorf("unsupported protocol version %u at offset %u (want %u)",
                                  (unsigned)version, (unsigned)MX_WIRE_OFF_VERSION,
                                  (unsigned)MX_WIRE_VERSION);
        return -1;
    }
    uint16_t type = mx_wire_get16(p + MX_WIRE_OFF_TYPE);
    if (mx_msg_type_name(type) == NULL) {
        *error_r = mx_wire_errorf("unknown message type %u at offset %u", (unsigned)type,
                                  (unsigned)MX_WIRE_OFF_TYPE);
        return -1;
    }
    uint32_t body_length = mx_wire_get32(p + MX_WIRE_OFF_BODY_LENGTH);
    size_t body_len = len - MX_WIRE_HEADER_SIZE;
    if (body_length != body_len) {
        *error_r = mx_wire_errorf("body_length %u at offset %u but %zu bytes follow the header "
                                  "(message type %u %s)",
                                  (unsigned)body_length, (unsigned)MX_WIRE_OFF_BODY_LENGTH,
                                  body_len, (unsigned)type, mx_msg_type_name(type));
        return -1;
    }

    /* Walk the fields. Invariant: off <= body_len, so body_len - off never
     * wraps; every length is compared against what is left, never added to
     * an offset before that check. */
    const uint8_t *body = p + MX_WIRE_HEADER_SIZE;
    size_t off = 0;
    unsigned index = 0;
    while (off < body_len) {
        index++;
        size_t left = body_len - off;
        if (left < MX_WIRE_FIELD_HEADER_SIZE) {
            *error_r = mx_wire_errorf("truncated header of field %u at offset %zu: %zu of %u "
                                      "bytes left",
                                      index, MX_WIRE_HEADER_SIZE + off, left,
                                      (unsigned)MX_WIRE_FIELD_HEADER_SIZE);
            return -1;
        }
        uint16_t tag = mx_wire_get16(body + off);
        uint32_t flen = mx_wire_get32(body + off + 2);
        if (flen > left - MX_WIRE_FIELD_HEADER_SIZE) {
            *error_r = mx_wire_errorf("field %u (tag %u %s) at offset %zu: length %u crosses "
                                      "the end of the frame (%zu bytes left)",
                                      index, (unsigned)tag, mx_wire_tag_label(tag),
                                      MX_WIRE_HEADER_SIZE + off, (unsigned)flen,
                                      left - MX_WIRE_FIELD_HEADER_SIZE);
            return -1;
        }
        enum mx_field_kind kind;
        if (mx_field_tag_kind(tag, &kind) == 0) {
            size_t want = mx_wire_kind_size(kind);
            if (want != 0 && flen != want) {
                *error_r = mx_wire_errorf("field %u (tag %u %s) at offset %zu: length %u, "
                                          "a %s must be %zu",
                                          index, (unsigned)tag, mx_wire_tag_label(tag),
                                          MX_WIRE_HEADER_SIZE + off, (unsigned)flen,
                                          mx_wire_kind_name(kind), want);
                return -1;
            }
        }
        /* Unknown tags are skipped on purpose: forward compatibility. */
        off += MX_WIRE_FIELD_HEADER_SIZE + flen;
    }

    view_r->type = type;
    view_r->flags = mx_wire_get32(p + MX_WIRE_OFF_FLAGS);
    view_r->request_id = mx_wire_get64(p + MX_WIRE_OFF_REQUEST_ID);
    memcpy(view_r->message_id.bytes, p + MX_WIRE_OFF_MESSAGE_ID, MX_MSGID_SIZE);
    view_r->body = body;
    view_r->body_len = body_len;
    return 0;
}

int mx_frame_next_field(const struct mx_frame_view *view, struct mx_field_iter *iter,
                        uint16_t *tag_r, const uint8_t **value_r, size_t *len_r)
{
    /* Re-checked although mx_frame_parse validated the body: a view built by
     * hand (or a stale iterator) then ends the walk instead of overrunning. */
    if (iter->offset >= view->body_len ||
        view->body_len - iter->offset < MX_WIRE_FIELD_HEADER_SIZE)
        return 0;
    const uint8_t *p = view->body + iter->offset;
    uint32_t flen = mx_wire_get32(p + 2);
    if (flen > view->body_len - iter->offset - MX_WIRE_FIELD_HEADER_SIZE)
        return 0;
    *tag_r = mx_wire_get16(p);
    *value_r = p + MX_WIRE_FIELD_HEADER_SIZE;
    *len_r = flen;
    iter->offset += MX_WIRE_FIELD_HEADER_SIZE + flen;
    return 1;
}

/* mx_frame_find - first field with tag; 0 found, -1 missing. */
static int mx_frame_find(const struct mx_frame_view *view, uint32_t tag,
                         const uint8_t **value_r, size_t *len_r)
{
    struct mx_field_iter iter = { 0 };
    uint16_t t;
    while (mx_frame_next_field(view, &iter, &t, value_r, len_r) == 1) {
        if (t == tag)
            return 0;
    }
    return -1;
}

/* mx_frame_find_typed - first field with tag, if tag is not a known tag of
 * another kind and the value has the kind's exact size (size 0: any). */
static int mx_frame_find_typed(const struct mx_frame_view *view, enum mx_field_tag tag,
                               enum mx_field_kind kind, const uint8_t **value_r, size_t *len_r)
{
    enum mx_field_kind have;
    if (mx_field_tag_kind((uint32_t)tag, &have) == 0 && have != kind &&
        !(mx_wire_kind_size(have) == 0 && mx_wire_kind_size(kind) == 0))
        return -1;
    if (mx_frame_find(view, (uint32_t)tag, value_r, len_r) < 0)
        return -1;
    size_t want = mx_wire_kind_size(kind);
    if (want != 0 && *len_r != want)
        return -1;
    return 0;
}

int mx_frame_get_u32(const struct mx_frame_view *view, enum mx_field_tag tag, uint32_t *value_r)
{
    const uint8_t *v;
    size_t len;
    if (mx_frame_find_typed(view, tag, MX_FIELD_U32, &v, &len) < 0)
        return -1;
    *value_r = mx_wire_get32(v);
    return 0;
}

int mx_frame_get_u64(const struct mx_frame_view *view, enum mx_field_tag tag, uint64_t *value_r)
{
    const uint8_t *v;
    size_t len;
    if (mx_frame_find_typed(view, tag, MX_FIELD_U64, &v, &len) < 0)
        return -1;
    *value_r = mx_wire_get64(v);
    return 0;
}

int mx_frame_get_msgid(const struct mx_frame_view *view, enum mx_field_tag tag, struct mx_msgid *id_r)
{
    const uint8_t *v;
    size_t len;
    if (mx_frame_find_typed(view, tag, MX_FIELD_MSGID, &v, &len) < 0)
        return -1;
    memcpy(id_r->bytes, v, MX_MSGID_SIZE);
    return 0;
}

int mx_frame_get_bytes(const struct mx_frame_view *view, enum mx_field_tag tag,
                       const uint8_t **value_r, size_t *len_r)
{
    return mx_frame_find(view, (uint32_t)tag, value_r, len_r);
}

int mx_frame_get_str(const struct mx_frame_view *view, enum mx_field_tag tag, char **value_r)
{
    return mx_frame_get_text(view, tag, MX_WIRE_STRING_MAX, value_r);
}

int mx_frame_get_text(const struct mx_frame_view *view, enum mx_field_tag tag, size_t max_len,
                      char **value_r)
{
    const uint8_t *v;
    size_t len;
    if (mx_frame_find_typed(view, tag, MX_FIELD_STR, &v, &len) < 0)
        return -1;
    if (len > max_len || (len > 0 && memchr(v, '\0', len) != NULL))
        return -1;
    char *s = mx_malloc(len + 1);
    if (len > 0)
        memcpy(s, v, len);
    s[len] = '\0';
    *value_r = s;
    return 0;
}
