/* imap_records - reading the store's per-message fetch records, and a
 * growable byte buffer: shared by the session's change reports and the
 * message commands. */
#include "imap_records.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_search.h"
#include "mx_alloc.h"

/* ---- a growable byte buffer -------------------------------------------- */


void imap_bytes_add(struct imap_bytes *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        b->data = mx_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void imap_bytes_printf(struct imap_bytes *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = mx_vasprintf(fmt, ap);
    va_end(ap);
    imap_bytes_add(b, text, strlen(text));
    free(text);
}

void imap_bytes_reset(struct imap_bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- index records of a MSG_STORE_ANY_FETCH_RESULT ---------------------- */

/* System flags as the store names them (bits = store/store.h STORE_FLAG_*,
 * the same values as IMAP_SEARCH_FLAG_*). \Recent is never stored. */
const struct imap_system_flag imap_system_flags[IMAP_N_SYSTEM_FLAGS] = {
    { "\\Seen", IMAP_SEARCH_FLAG_SEEN },         { "\\Answered", IMAP_SEARCH_FLAG_ANSWERED },
    { "\\Flagged", IMAP_SEARCH_FLAG_FLAGGED },   { "\\Deleted", IMAP_SEARCH_FLAG_DELETED },
    { "\\Draft", IMAP_SEARCH_FLAG_DRAFT },
};


void imap_msg_records_free(struct imap_msg_record **msgs, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        free((*msgs)[i].keywords);
        free((*msgs)[i].envelope);
        free((*msgs)[i].bodystructure);
        free((*msgs)[i].body_form);
    }
    free(*msgs);
    *msgs = NULL;
    *n = 0;
}

uint32_t imap_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t imap_be64(const uint8_t *p)
{
    return (uint64_t)imap_be32(p) << 32 | imap_be32(p + 4);
}

char *imap_field_string(const uint8_t *value, size_t len)
{
    if (memchr(value, '\0', len) != NULL)
        return NULL;
    return mx_strndup((const char *)value, len);
}

/* parse_records - every per-message record (F_UID and the fields after it)
 * of a fetch-style reply, in order. -1 with *error_r for a malformed reply
 * (a field of the wrong size, a flag with NUL): the store is ours, so that
 * is a server bug, answered NO [SERVERBUG]. */
int imap_msg_records_parse(const struct mx_frame_view *reply, struct imap_msg_record **msgs_r, size_t *n_r,
                         const char **error_r)
{
    struct imap_msg_record *msgs = NULL;
    size_t n = 0;
    struct imap_bytes kw = { 0 };
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t len;
    struct imap_msg_record *cur = NULL;
    *error_r = NULL;
    while (mx_frame_next_field(reply, &it, &tag, &v, &len)) {
        if (tag == F_UID) {
            if (len != 4) {
                *error_r = "F_UID of the wrong size";
                break;
            }
            if (cur != NULL) {
                cur->keywords = kw.data ? kw.data : mx_strdup("");
                memset(&kw, 0, sizeof kw);
            }
            msgs = mx_reallocarray(msgs, n + 1, sizeof *msgs);
            cur = &msgs[n++];
            memset(cur, 0, sizeof *cur);
            cur->uid = imap_be32(v);
            continue;
        }
        if (cur == NULL)
            continue; /* F_STATUS, F_TEXT before the first record */
        switch (tag) {
        case F_FLAG: {
            char *flag = imap_field_string(v, len);
            if (flag == NULL || *flag == '\0') {
                free(flag);
                *error_r = "empty flag or flag with NUL";
                goto out;
            }
            bool system = false;
            for (size_t i = 0; i < IMAP_N_SYSTEM_FLAGS; i++) {
                if (strcasecmp(flag, imap_system_flags[i].name) == 0) {
                    cur->flags |= imap_system_flags[i].bit;
                    system = true;
                }
            }
            if (!system && flag[0] != '\\') {
                if (kw.len)
                    imap_bytes_add(&kw, " ", 1);
                imap_bytes_add(&kw, flag, strlen(flag));
            }
            free(flag);
            break;
        }
        case F_MODSEQ:
        case F_ARRIVAL:
        case F_SIZE:
            if (len != 8) {
                *error_r = "64-bit field of the wrong size";
                goto out;
            }
            if (tag == F_MODSEQ) {
                cur->modseq = imap_be64(v);
                cur->have_modseq = true;
            } else if (tag == F_ARRIVAL) {
                cur->arrival = imap_be64(v);
                cur->have_arrival = true;
            } else {
                cur->size = imap_be64(v);
                cur->have_size = true;
            }
            break;
        case F_ENVELOPE:
        case F_BODYSTRUCTURE:
        case F_BODY_FORM: {
            char *text = imap_field_string(v, len);
            if (text == NULL) {
                *error_r = "ENVELOPE/BODYSTRUCTURE with NUL";
                goto out;
            }
            char **slot = tag == F_ENVELOPE ? &cur->envelope
                          : tag == F_BODYSTRUCTURE ? &cur->bodystructure
                                                   : &cur->body_form;
            free(*slot);
            *slot = text;
            break;
        }
        default:
            break; /* F_MODIFIED_SET, F_HIGHESTMODSEQ, ...: not per message */
        }
    }
out:
    if (cur != NULL && cur->keywords == NULL) {
        cur->keywords = kw.data ? kw.data : mx_strdup("");
        memset(&kw, 0, sizeof kw);
    }
    imap_bytes_reset(&kw);
    if (*error_r != NULL) {
        imap_msg_records_free(&msgs, &n);
        return -1;
    }
    *msgs_r = msgs;
    *n_r = n;
    return 0;
}

void imap_flags_format(struct imap_bytes *b, uint32_t flags, const char *keywords)
{
    imap_bytes_add(b, "(", 1);
    bool first = true;
    for (size_t i = 0; i < IMAP_N_SYSTEM_FLAGS; i++)
        if (flags & imap_system_flags[i].bit) {
            if (!first)
                imap_bytes_add(b, " ", 1);
            imap_bytes_add(b, imap_system_flags[i].name, strlen(imap_system_flags[i].name));
            first = false;
        }
    if (flags & IMAP_SEARCH_FLAG_RECENT) { /* session state, never stored */
        if (!first)
            imap_bytes_add(b, " ", 1);
        imap_bytes_add(b, "\\Recent", 7);
        first = false;
    }
    if (keywords && *keywords) {
        if (!first)
            imap_bytes_add(b, " ", 1);
        imap_bytes_add(b, keywords, strlen(keywords));
    }
    imap_bytes_add(b, ")", 1);
}
