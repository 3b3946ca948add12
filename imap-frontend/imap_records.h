/* imap_records - the store's per-message records (MSG_STORE_ANY_FETCH_RESULT:
 * F_UID followed by that message's fields) as structs, and a growable byte
 * buffer. */
#ifndef IMAP_RECORDS_H
#define IMAP_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_wire.h"

struct imap_bytes {
    char *data;
    size_t len, cap;
};
void imap_bytes_add(struct imap_bytes *b, const void *data, size_t len);
void imap_bytes_printf(struct imap_bytes *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_bytes_reset(struct imap_bytes *b);

/* System flags as the store names them; bits = store/store.h STORE_FLAG_*
 * = IMAP_SEARCH_FLAG_*. \Recent is never stored. */
struct imap_system_flag {
    const char *name;
    uint32_t bit;
};
#define IMAP_N_SYSTEM_FLAGS 5
extern const struct imap_system_flag imap_system_flags[IMAP_N_SYSTEM_FLAGS];

struct imap_msg_record {
    uint32_t uid;
    uint32_t flags;
    char *keywords;        /* space separated, never NULL */
    uint64_t modseq, arrival, size;
    bool have_modseq, have_arrival, have_size;
    char *envelope, *bodystructure, *body_form; /* NULL if not sent */
};

/* imap_msg_records_parse - every record of a fetch-style reply, in order.
 * -1 with *error_r (static) for a malformed reply: the store is ours, so
 * that is a server bug (NO [SERVERBUG]). */
int imap_msg_records_parse(const struct mx_frame_view *reply, struct imap_msg_record **msgs_r,
                           size_t *n_r, const char **error_r);
void imap_msg_records_free(struct imap_msg_record **msgs, size_t *n);

/* imap_flags_format - "(\\Seen \\Answered kw1 ...)" from system bits + keywords. */
void imap_flags_format(struct imap_bytes *b, uint32_t flags, const char *keywords);

uint32_t imap_be32(const uint8_t *p);
uint64_t imap_be64(const uint8_t *p);
/* imap_field_string - a field's bytes as a C string; NULL if it holds NUL. */
char *imap_field_string(const uint8_t *value, size_t len);

#endif
