/* pop3_proto - see pop3_proto.h. */
#include "pop3_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>

#include "mx_alloc.h"
#include "mx_wire.h"

/* ---- command lines ------------------------------------------------------ */

static const struct {
    const char *keyword;
    enum pop3_verb verb;
} pop3_verbs[] = {
    { "USER", POP3_VERB_USER }, { "PASS", POP3_VERB_PASS }, { "APOP", POP3_VERB_APOP },
    { "AUTH", POP3_VERB_AUTH }, { "STLS", POP3_VERB_STLS }, { "CAPA", POP3_VERB_CAPA },
    { "QUIT", POP3_VERB_QUIT }, { "STAT", POP3_VERB_STAT }, { "LIST", POP3_VERB_LIST },
    { "RETR", POP3_VERB_RETR }, { "DELE", POP3_VERB_DELE }, { "NOOP", POP3_VERB_NOOP },
    { "RSET", POP3_VERB_RSET }, { "TOP", POP3_VERB_TOP },   { "UIDL", POP3_VERB_UIDL },
    { "LAST", POP3_VERB_LAST },
};

int pop3_cmd_parse(char *line, size_t len, struct pop3_cmd *cmd, const char **error_r)
{
    memset(cmd, 0, sizeof *cmd);
    line[len] = '\0';
    if (memchr(line, '\0', len) != NULL) {
        *error_r = "NUL byte in command";
        return -1;
    }
    size_t k = 0;
    while (k < len && line[k] != ' ') {
        char c = line[k];
        if (k == 4 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) {
            *error_r = "malformed command";
            return -1;
        }
        cmd->keyword[k] = (char)(c >= 'a' ? c - 'a' + 'A' : c);
        k++;
    }
    if (k < 3) {
        *error_r = len == 0 ? "empty command" : "malformed command";
        return -1;
    }
    cmd->keyword[k] = '\0';
    cmd->verb = POP3_VERB_UNKNOWN;
    for (size_t i = 0; i < sizeof pop3_verbs / sizeof pop3_verbs[0]; i++)
        if (strcmp(pop3_verbs[i].keyword, cmd->keyword) == 0)
            cmd->verb = pop3_verbs[i].verb;
    if (k == len)
        return 0;
    char *args = line + k + 1; /* exactly one separating space */
    if (cmd->verb != POP3_VERB_PASS) {
        /* Clients send "LIST " or "STAT  "; a trailing blank is no argument. */
        size_t alen = strlen(args);
        while (alen > 0 && (args[alen - 1] == ' ' || args[alen - 1] == '\t'))
            args[--alen] = '\0';
        if (alen == 0)
            return 0;
    }
    cmd->args = args;
    return 0;
}

int pop3_parse_numbers(const char *args, uint32_t *nums, size_t min, size_t max, size_t *n_r)
{
    size_t n = 0;
    const char *p = args ? args : "";
    while (*p == ' ')
        p++;
    while (*p != '\0') {
        if (n == max || *p < '0' || *p > '9')
            return -1;
        uint64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (uint64_t)(*p - '0');
            if (v > UINT32_MAX)
                return -1;
            p++;
        }
        if (*p != '\0' && *p != ' ')
            return -1;
        nums[n++] = (uint32_t)v;
        while (*p == ' ')
            p++;
    }
    if (n < min)
        return -1;
    *n_r = n;
    return 0;
}

/* ---- the maildrop --------------------------------------------------------- */

static int msg_cmp_uid(const void *a, const void *b)
{
    uint32_t x = ((const struct pop3_msg *)a)->uid, y = ((const struct pop3_msg *)b)->uid;
    return x < y ? -1 : x > y;
}

static bool uidl_valid(const uint8_t *v, size_t len)
{
    if (len == 0 || len > POP3_UIDL_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (v[i] < 0x21 || v[i] > 0x7e)
            return false;
    return true;
}

/* A record is complete when it has both items asked for. */
#define HAVE_SIZE 1u
#define HAVE_UIDL 2u

int pop3_maildrop_from_fetch(const struct mx_frame_view *reply, struct pop3_maildrop *drop,
                             const char **error_r)
{
    memset(drop, 0, sizeof *drop);
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t len;
    size_t cap = 0, pool_cap = 0;
    unsigned have = HAVE_SIZE | HAVE_UIDL; /* of the current record; none yet */
    while (mx_frame_next_field(reply, &it, &tag, &v, &len)) {
        if (tag == F_UID) {
            if (have != (HAVE_SIZE | HAVE_UIDL)) {
                *error_r = "a message record lacks its size or unique-id";
                goto bad;
            }
            if (len != 4) {
                *error_r = "malformed UID";
                goto bad;
            }
            if (drop->count == UINT32_MAX) {
                *error_r = "too many messages";
                goto bad;
            }
            if (drop->count == cap) {
                cap = cap ? cap * 2 : 64;
                drop->msgs = mx_reallocarray(drop->msgs, cap, sizeof *drop->msgs);
            }
            struct pop3_msg *m = &drop->msgs[drop->count++];
            memset(m, 0, sizeof *m);
            m->uid = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
            have = 0;
        } else if (drop->count > 0 && (tag == F_SIZE || tag == F_POP3_UIDL)) {
            struct pop3_msg *m = &drop->msgs[drop->count - 1];
            if (tag == F_SIZE) {
                if (len != 8) {
                    *error_r = "malformed size";
                    goto bad;
                }
                uint64_t size = 0;
                for (size_t i = 0; i < 8; i++)
                    size = size << 8 | v[i];
                m->size = size;
                drop->bytes += size;
                have |= HAVE_SIZE;
            } else {
                if (!uidl_valid(v, len)) {
                    *error_r = "unique-id is not 1..70 printable characters";
                    goto bad;
                }
                if (drop->pool_len + len + 1 > pool_cap) {
                    pool_cap = (drop->pool_len + len + 1) * 2;
                    drop->uidl_pool = mx_realloc(drop->uidl_pool, pool_cap);
                }
                m->uidl_off = (uint32_t)drop->pool_len;
                memcpy(drop->uidl_pool + drop->pool_len, v, len);
                drop->pool_len += len;
                drop->uidl_pool[drop->pool_len++] = '\0';
                have |= HAVE_UIDL;
            }
        }
    }
    if (have != (HAVE_SIZE | HAVE_UIDL)) {
        *error_r = "a message record lacks its size or unique-id";
        goto bad;
    }
    if (drop->count > 1) /* msgs is NULL for an empty maildrop */
        qsort(drop->msgs, drop->count, sizeof *drop->msgs, msg_cmp_uid);
    for (uint32_t i = 1; i < drop->count; i++)
        if (drop->msgs[i].uid == drop->msgs[i - 1].uid) {
            *error_r = "a UID appears twice";
            goto bad;
        }
    return 0;
bad:
    pop3_maildrop_free(drop);
    return -1;
}

void pop3_maildrop_free(struct pop3_maildrop *drop)
{
    free(drop->msgs);
    free(drop->uidl_pool);
    memset(drop, 0, sizeof *drop);
}

const char *pop3_maildrop_uidl(const struct pop3_maildrop *drop, uint32_t i)
{
    return drop->uidl_pool + drop->msgs[i].uidl_off;
}

void pop3_maildrop_mark(struct pop3_maildrop *drop, uint32_t i)
{
    if (drop->msgs[i].deleted)
        return;
    drop->msgs[i].deleted = true;
    drop->n_deleted++;
    drop->deleted_bytes += drop->msgs[i].size;
}

void pop3_maildrop_reset(struct pop3_maildrop *drop)
{
    for (uint32_t i = 0; i < drop->count; i++)
        drop->msgs[i].deleted = false;
    drop->n_deleted = 0;
    drop->deleted_bytes = 0;
}

uint32_t *pop3_maildrop_deleted_uids(const struct pop3_maildrop *drop, size_t *n_r)
{
    *n_r = 0;
    if (drop->n_deleted == 0)
        return NULL;
    uint32_t *uids = mx_calloc(drop->n_deleted, sizeof *uids);
    for (uint32_t i = 0; i < drop->count; i++)
        if (drop->msgs[i].deleted)
            uids[(*n_r)++] = drop->msgs[i].uid;
    return uids;
}

/* ---- body encoder --------------------------------------------------------- */

void pop3_body_encoder_init(struct pop3_body_encoder *enc, bool top, uint32_t lines)
{
    memset(enc, 0, sizeof *enc);
    enc->limit_lines = top;
    enc->lines_left = lines;
    enc->in_header = true;
    enc->at_line_start = true;
}

static void enc_out(struct pop3_body_encoder *enc, struct evbuffer *out, const void *data,
                    size_t len)
{
    if (len == 0)
        return;
    evbuffer_add(out, data, len);
    enc->octets_out += len;
}

/* enc_line_end - the line just ended (its LF is being written); a blank
 * line ends the header, a body line counts against TOP's limit. */
static void enc_line_end(struct pop3_body_encoder *enc)
{
    bool blank = enc->line_octets == 0 || (enc->line_octets == 1 && enc->last_was_cr);
    if (enc->in_header) {
        if (blank)
            enc->in_header = false;
    } else if (enc->limit_lines && enc->lines_left > 0) {
        enc->lines_left--;
    }
    enc->at_line_start = true;
    enc->last_was_cr = false;
    enc->line_octets = 0;
    /* TOP n: once the header and n body lines are out, stop. */
    if (enc->limit_lines && !enc->in_header && enc->lines_left == 0)
        enc->done = true;
}

void pop3_body_encode(struct pop3_body_encoder *enc, const uint8_t *data, size_t len,
                      struct evbuffer *out)
{
    size_t i = 0;
    while (i < len && !enc->done) {
        if (enc->at_line_start && data[i] == '.')
            enc_out(enc, out, ".", 1); /* RFC 1939 3: byte-stuff the termination octet */
        enc->at_line_start = false;
        const uint8_t *lf = memchr(data + i, '\n', len - i);
        size_t seg_end = lf ? (size_t)(lf - data) : len;
        /* Bytes of this line in this chunk, up to (not including) its LF. */
        if (seg_end > i) {
            enc_out(enc, out, data + i, seg_end - i);
            enc->line_octets += seg_end - i;
            enc->last_was_cr = data[seg_end - 1] == '\r';
        }
        if (lf == NULL)
            return;
        /* CRLF, or a bare LF that gets its CR. */
        if (enc->last_was_cr)
            enc_out(enc, out, "\n", 1);
        else
            enc_out(enc, out, "\r\n", 2);
        enc_line_end(enc);
        i = seg_end + 1;
    }
}

void pop3_body_finish(struct pop3_body_encoder *enc, struct evbuffer *out)
{
    if (!enc->at_line_start) /* the message's last line had no line end */
        enc_out(enc, out, enc->last_was_cr ? "\n" : "\r\n", enc->last_was_cr ? 1 : 2);
    enc_out(enc, out, ".\r\n", 3);
    enc->at_line_start = true;
    enc->last_was_cr = false;
    enc->done = true;
}

/* ---- UID sets ------------------------------------------------------------- */

size_t pop3_uidset_format(const uint32_t *uids, size_t n, size_t max_len, size_t max_ranges,
                          char **text_r)
{
    size_t cap = 64, len = 0, used = 0, ranges = 0;
    char *text = mx_malloc(cap);
    text[0] = '\0';
    while (used < n && ranges < max_ranges) {
        size_t j = used;
        while (j + 1 < n && uids[j + 1] == uids[j] + 1)
            j++;
        char item[32];
        int w = j > used
                    ? snprintf(item, sizeof item, "%s%u:%u", len ? "," : "", uids[used], uids[j])
                    : snprintf(item, sizeof item, "%s%u", len ? "," : "", uids[used]);
        if (len + (size_t)w > max_len)
            break;
        if (len + (size_t)w + 1 > cap) {
            cap = (len + (size_t)w + 1) * 2;
            text = mx_realloc(text, cap);
        }
        memcpy(text + len, item, (size_t)w + 1);
        len += (size_t)w;
        ranges++;
        used = j + 1;
    }
    *text_r = text;
    return used;
}

/* uidset_number - a UID (1..2^32-1) at text[*i..len); advances *i. */
static int uidset_number(const char *text, size_t len, size_t *i, uint32_t *v_r)
{
    uint64_t v = 0;
    size_t start = *i;
    while (*i < len && text[*i] >= '0' && text[*i] <= '9') {
        v = v * 10 + (uint64_t)(text[*i] - '0');
        if (v > UINT32_MAX)
            return -1;
        (*i)++;
    }
    if (*i == start || v == 0)
        return -1;
    *v_r = (uint32_t)v;
    return 0;
}

int pop3_uidset_count(const char *text, size_t len, uint64_t *count_r)
{
    uint64_t count = 0;
    size_t i = 0;
    while (i < len) {
        uint32_t lo, hi;
        if (uidset_number(text, len, &i, &lo) < 0)
            return -1;
        hi = lo;
        if (i < len && text[i] == ':') {
            i++;
            if (uidset_number(text, len, &i, &hi) < 0)
                return -1;
        }
        count += lo <= hi ? (uint64_t)(hi - lo) + 1 : (uint64_t)(lo - hi) + 1;
        if (i < len && text[i++] != ',')
            return -1;
        if (i == len && text[len - 1] == ',')
            return -1;
    }
    *count_r = count;
    return 0;
}
