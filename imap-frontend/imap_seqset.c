/* imap_seqset - IMAP sequence sets; see imap_seqset.h. */
#include "imap_seqset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

void imap_seqset_init(struct imap_seqset *set)
{
    memset(set, 0, sizeof(*set));
}

void imap_seqset_free(struct imap_seqset *set)
{
    free(set->ranges);
    imap_seqset_init(set);
}

static void seqset_append_raw(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
    if (set->n == set->cap) {
        set->cap = set->cap == 0 ? 8 : set->cap * 2;
        set->ranges = mx_reallocarray(set->ranges, set->cap, sizeof(*set->ranges));
    }
    set->ranges[set->n].lo = lo;
    set->ranges[set->n].hi = hi;
    set->n++;
}

static int range_cmp(const void *a, const void *b)
{
    const struct imap_seq_range *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* seqset_normalize - sort and merge overlapping or adjacent ranges. */
static void seqset_normalize(struct imap_seqset *set)
{
    if (set->n < 2)
        return;
    qsort(set->ranges, set->n, sizeof(*set->ranges), range_cmp);
    size_t out = 0;
    for (size_t i = 1; i < set->n; i++) {
        struct imap_seq_range *cur = &set->ranges[out];
        const struct imap_seq_range *r = &set->ranges[i];
        if ((uint64_t)r->lo <= (uint64_t)cur->hi + 1) {
            if (r->hi > cur->hi)
                cur->hi = r->hi;
        } else {
            set->ranges[++out] = *r;
        }
    }
    set->n = out + 1;
}

/* seqset_push - append, merging with the last range when that keeps the
 * list sorted; *sorted turns false when a later sort is needed. */
static void seqset_push(struct imap_seqset *set, uint32_t lo, uint32_t hi, bool *sorted)
{
    if (set->n > 0) {
        struct imap_seq_range *last = &set->ranges[set->n - 1];
        if (lo >= last->lo && (uint64_t)lo <= (uint64_t)last->hi + 1) {
            if (hi > last->hi)
                last->hi = hi;
            return;
        }
        if (lo <= last->hi + (uint64_t)1)
            *sorted = false; /* overlaps or precedes: sort at the end */
    }
    seqset_append_raw(set, lo, hi);
}

void imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
    if (lo > hi) {
        uint32_t t = lo;
        lo = hi;
        hi = t;
    }
    bool sorted = true;
    seqset_push(set, lo, hi, &sorted);
    if (!sorted)
        seqset_normalize(set);
}

/* parse_seq_number - nz-number or "*" at text[*pos]; *value 0 means "*". */
static int parse_seq_number(const char *text, size_t len, size_t *pos, uint32_t *value,
                            const char **err)
{
    size_t i = *pos;
    if (i < len && text[i] == '*') {
        *pos = i + 1;
        *value = 0;
        return 0;
    }
    if (i >= len || text[i] < '0' || text[i] > '9') {
        *err = "expected a number or '*' in sequence set";
        return -1;
    }
    if (text[i] == '0') {
        *err = "invalid number (0 or leading zero) in sequence set";
        return -1;
    }
    uint64_t v = 0;
    while (i < len && text[i] >= '0' && text[i] <= '9') {
        v = v * 10 + (uint64_t)(text[i] - '0');
        if (v > UINT32_MAX) {
            *err = "number too large in sequence set";
            return -1;
        }
        i++;
    }
    *pos = i;
    *value = (uint32_t)v;
    return 0;
}

int imap_seqset_parse(const char *text, size_t len, struct imap_seqset *set, const char **err)
{
    imap_seqset_init(set);
    bool sorted = true;
    size_t pos = 0, ranges = 0;
    const char *e = NULL;
    if (len == 0) {
        e = "empty sequence set";
        goto fail;
    }
    for (;;) {
        if (++ranges > IMAP_SEQSET_MAX_RANGES) {
            e = "too many ranges in sequence set";
            goto fail;
        }
        if (pos < len && text[pos] == '$') {
            set->searchres = true;
            pos++;
        } else {
            uint32_t a, b;
            if (parse_seq_number(text, len, &pos, &a, &e) < 0)
                goto fail;
            b = a;
            if (pos < len && text[pos] == ':') {
                pos++;
                if (parse_seq_number(text, len, &pos, &b, &e) < 0)
                    goto fail;
            }
            if (a == 0 || b == 0) {
                /* "*", "n:*", "*:n": the n part is folded in at resolve. */
                uint32_t n = a == 0 ? b : a; /* 0: "*" or "*:*" */
                if (!set->has_star)
                    set->star_from = n;
                else if (n != 0 && (set->star_from == 0 || n < set->star_from))
                    set->star_from = n; /* a lone "*" adds nothing to "n:*" */
                set->has_star = true;
            } else {
                seqset_push(set, a < b ? a : b, a < b ? b : a, &sorted);
            }
        }
        if (pos == len)
            break;
        if (text[pos] != ',') {
            e = "invalid character in sequence set";
            goto fail;
        }
        pos++;
    }
    if (!sorted)
        seqset_normalize(set);
    return 0;
fail:
    imap_seqset_free(set);
    if (err != NULL)
        *err = e;
    return -1;
}

void imap_seqset_resolve(struct imap_seqset *set, uint32_t max)
{
    if (!set->has_star)
        return;
    set->has_star = false;
    if (max == 0)
        return;
    uint32_t from = set->star_from;
    if (from == 0 || from > max)
        from = max;
    imap_seqset_add(set, from, max);
    set->star_from = 0;
}

void imap_seqset_clamp(struct imap_seqset *set, uint32_t max)
{
    while (set->n > 0 && set->ranges[set->n - 1].lo > max)
        set->n--;
    if (set->n > 0 && set->ranges[set->n - 1].hi > max)
        set->ranges[set->n - 1].hi = max;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (n < set->ranges[mid].lo)
            hi = mid;
        else if (n > set->ranges[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

uint64_t imap_seqset_count(const struct imap_seqset *set)
{
    uint64_t total = 0;
    for (size_t i = 0; i < set->n; i++)
        total += (uint64_t)set->ranges[i].hi - set->ranges[i].lo + 1;
    return total;
}

uint32_t imap_seqset_highest(const struct imap_seqset *set)
{
    return set->n > 0 ? set->ranges[set->n - 1].hi : 0;
}

void imap_seqset_iter_init(struct imap_seqset_iter *it)
{
    it->range = 0;
    it->next = 0;
}

bool imap_seqset_iter_next(const struct imap_seqset *set, struct imap_seqset_iter *it,
                           uint32_t *n)
{
    while (it->range < set->n) {
        const struct imap_seq_range *r = &set->ranges[it->range];
        if (it->next < r->lo)
            it->next = r->lo;
        if (it->next <= r->hi) {
            *n = (uint32_t)it->next++;
            return true;
        }
        it->range++;
    }
    return false;
}

char *imap_seqset_format(const struct imap_seqset *set)
{
    /* "4294967295:4294967295," is 22 bytes; plus "n:*," and "$". */
    size_t cap = set->n * 22 + 16 + 2 + 1;
    char *out = mx_malloc(cap);
    size_t len = 0;
    for (size_t i = 0; i < set->n; i++) {
        const struct imap_seq_range *r = &set->ranges[i];
        if (r->lo == r->hi)
            len += (size_t)snprintf(out + len, cap - len, "%s%u", len ? "," : "", r->lo);
        else
            len += (size_t)snprintf(out + len, cap - len, "%s%u:%u", len ? "," : "", r->lo,
                                    r->hi);
    }
    if (set->has_star) {
        if (set->star_from == 0)
            len += (size_t)snprintf(out + len, cap - len, "%s*", len ? "," : "");
        else
            len += (size_t)snprintf(out + len, cap - len, "%s%u:*", len ? "," : "",
                                    set->star_from);
    }
    if (set->searchres)
        len += (size_t)snprintf(out + len, cap - len, "%s$", len ? "," : "");
    out[len] = '\0';
    return out;
}
