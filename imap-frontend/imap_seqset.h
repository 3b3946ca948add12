/* imap_seqset - IMAP sequence sets (RFC 9051 section 9 "sequence-set"):
 * "1,3:5,7:*,$" for message sequence numbers and UIDs alike.
 *
 * A parsed set is a sorted list of disjoint, non-adjacent ranges of plain
 * numbers, plus what cannot be known before the mailbox is: the "*" part
 * and the "$" (SEARCHRES, RFC 5182) flag. "*" is the largest number in use,
 * and "n:*" means "n:max" even when n > max (RFC 9051 6.4.8: "4:*" in a
 * mailbox of 3 messages is message 3), so the "*" ranges are kept aside as
 * the smallest n of all "n:*" and folded in by imap_seqset_resolve().
 *
 * Cost is bounded for hostile input: at most IMAP_SEQSET_MAX_RANGES ranges
 * are read, ascending input merges as it is read and anything else is
 * sorted once, so "1:*,1:*,..." is linear. */
#ifndef IMAP_SEQSET_H
#define IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAP_SEQSET_MAX_RANGES 100000u

struct imap_seq_range {
    uint32_t lo, hi; /* inclusive, 1 <= lo <= hi */
};

struct imap_seqset {
    struct imap_seq_range *ranges; /* sorted, disjoint, non-adjacent */
    size_t n, cap;
    bool has_star;        /* some "*" not resolved yet */
    uint32_t star_from;   /* smallest n of the "n:*" ranges; 0 for a lone "*" */
    bool searchres;       /* "$": the caller adds the saved search result */
};

/* imap_seqset_init - an empty set (no allocation). */
void imap_seqset_init(struct imap_seqset *set);
void imap_seqset_free(struct imap_seqset *set);

/* imap_seqset_parse - parse text[0..len) into a fresh set. 0 on success;
 * -1 with *err a static text ("invalid number 0 in sequence set") and the
 * set left empty. */
int imap_seqset_parse(const char *text, size_t len, struct imap_seqset *set, const char **err);

/* imap_seqset_resolve - replace "*" with max (the highest UID or the
 * number of messages; 0 for an empty mailbox, where "*" matches nothing).
 * Ranges above max stay: for UIDs they simply match nothing; a caller
 * handling sequence numbers checks imap_seqset_highest() > max first. */
void imap_seqset_resolve(struct imap_seqset *set, uint32_t max);
/* imap_seqset_clamp - drop everything above max. */
void imap_seqset_clamp(struct imap_seqset *set, uint32_t max);

/* imap_seqset_add - add lo:hi (either order) to a set, keeping it
 * normalized; appending in ascending order is O(1). */
void imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi);

/* Queries on the numeric part (resolve first if has_star). */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);
uint64_t imap_seqset_count(const struct imap_seqset *set);
/* imap_seqset_highest - the largest number, 0 if empty. */
uint32_t imap_seqset_highest(const struct imap_seqset *set);

/* Iteration in ascending order:
 *   struct imap_seqset_iter it; uint32_t n;
 *   imap_seqset_iter_init(&it);
 *   while (imap_seqset_iter_next(set, &it, &n)) ...                        */
struct imap_seqset_iter {
    size_t range;
    uint64_t next;
};
void imap_seqset_iter_init(struct imap_seqset_iter *it);
bool imap_seqset_iter_next(const struct imap_seqset *set, struct imap_seqset_iter *it,
                           uint32_t *n);

/* imap_seqset_format - compact text ("1:3,7,9:*"), heap string the caller
 * frees; "" for an empty set. An unresolved "*" and "$" are included. */
char *imap_seqset_format(const struct imap_seqset *set);

#endif
