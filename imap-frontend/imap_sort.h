/* imap_sort - IMAP SORT and THREAD (RFC 5256, DISPLAYFROM / DISPLAYTO of
 * RFC 5957).
 *
 * The session parses "SORT (criteria) charset search-keys" /
 * "THREAD algorithm charset search-keys" with imap_sort_parse_criteria() /
 * imap_thread_parse_algorithm() plus imap_search_parse_charset() for the
 * rest, runs the search, and hands the matching messages here (header bytes
 * are needed for everything but ARRIVAL / SIZE). The results are the exact
 * untagged response lines without CRLF. */
#ifndef IMAP_SORT_H
#define IMAP_SORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_args.h"

enum imap_sort_key {
    IMAP_SORT_ARRIVAL = 1,
    IMAP_SORT_CC,
    IMAP_SORT_DATE,
    IMAP_SORT_FROM,
    IMAP_SORT_SIZE,
    IMAP_SORT_SUBJECT,
    IMAP_SORT_TO,
    IMAP_SORT_DISPLAYFROM,
    IMAP_SORT_DISPLAYTO,
};

struct imap_sort_criterion {
    enum imap_sort_key key;
    bool reverse;
};

#define IMAP_SORT_MAX_CRITERIA 16

/* One message: header is the raw header block (may be NULL when only
 * ARRIVAL / SIZE are sorted on). */
struct imap_sort_msg {
    uint32_t seq, uid;
    uint64_t internaldate_ms;
    uint64_t size;
    const char *header;
    size_t header_len;
};

/* imap_sort_parse_criteria - the "(REVERSE DATE SUBJECT ...)" list. Returns
 * the number of criteria (>= 1), or -1 with a text for "TAG BAD <text>". */
int imap_sort_parse_criteria(const struct imap_arg *list, struct imap_sort_criterion *criteria,
                             size_t max_criteria, char *error, size_t error_size);

/* imap_sort_needs_header - whether any criterion reads header fields. */
bool imap_sort_needs_header(const struct imap_sort_criterion *criteria, size_t n_criteria);

/* imap_sort - order the messages; order_r[i] receives indexes into msgs. */
void imap_sort(const struct imap_sort_criterion *criteria, size_t n_criteria,
               const struct imap_sort_msg *msgs, size_t n_msgs, size_t *order_r);

/* imap_sort_format - "* SORT 3 1 2" (uids when uid is true); free(). */
char *imap_sort_format(const struct imap_sort_msg *msgs, const size_t *order, size_t n_msgs,
                       bool uid);

/* imap_base_subject - RFC 5256 section 2.1 base subject of a raw Subject
 * value (encoded-words decoded, white space normalised, Re:/Fwd:/[blob]/
 * "(fwd)" removed), UTF-8, not case folded. *is_reply_r (may be NULL):
 * whether a Re:/Fwd:/"(fwd)"/"[fwd:...]" was removed. free(). */
char *imap_base_subject(const char *raw, size_t len, bool *is_reply_r);

enum imap_thread_algorithm {
    IMAP_THREAD_ORDEREDSUBJECT = 1,
    IMAP_THREAD_REFERENCES,
};

/* imap_thread_parse_algorithm - "REFERENCES" / "ORDEREDSUBJECT" (any case);
 * false for anything else. */
bool imap_thread_parse_algorithm(const struct imap_arg *arg, enum imap_thread_algorithm *alg_r);

/* imap_thread - "* THREAD (1 2)(3 (4)(5))" for the messages (which must be
 * in ascending sequence order), with uids when uid is true. free(). */
char *imap_thread(enum imap_thread_algorithm algorithm, const struct imap_sort_msg *msgs,
                  size_t n_msgs, bool uid);

#endif
