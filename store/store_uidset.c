/* store_uidset - IMAP sequence sets over UIDs ("1:5,7,9:*"). */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

#define UIDSET_RANGES_MAX 10000 /* a request cannot make us allocate more */

/* parse_num - a UID (1..2^32-1) or '*'; advances *p. */
static int parse_num(const char **p, uint32_t max_uid, uint32_t *v_r)
{
    if (**p == '*') {
        (*p)++;
        *v_r = max_uid;
        return 0;
    }
    if (**p < '1' || **p > '9')
        return -1;
    uint64_t v = 0;
    while (**p >= '0' && **p <= '9') {
        v = v * 10 + (uint64_t)(**p - '0');
        if (v > UINT32_MAX)
            return -1;
        (*p)++;
    }
    *v_r = (uint32_t)v;
    return 0;
}

int store_uidset_parse(const char *text, uint32_t max_uid, struct store_uidset *set_r)
{
    memset(set_r, 0, sizeof *set_r);
    const char *p = text;
    if (p == NULL || *p == '\0')
        return -1;
    for (;;) {
        uint32_t lo, hi;
        if (parse_num(&p, max_uid, &lo) < 0)
            goto bad;
        hi = lo;
        if (*p == ':') {
            p++;
            if (parse_num(&p, max_uid, &hi) < 0)
                goto bad;
        }
        if (lo > hi) {
            uint32_t t = lo;
            lo = hi;
            hi = t;
        }
        if (set_r->n >= UIDSET_RANGES_MAX)
            goto bad;
        set_r->r = mx_reallocarray(set_r->r, set_r->n + 1, sizeof *set_r->r);
        set_r->r[set_r->n].lo = lo;
        set_r->r[set_r->n].hi = hi;
        set_r->n++;
        if (*p == '\0')
            return 0;
        if (*p++ != ',')
            goto bad;
    }
bad:
    store_uidset_free(set_r);
    return -1;
}

bool store_uidset_has(const struct store_uidset *set, uint32_t uid)
{
    for (size_t i = 0; i < set->n; i++)
        if (uid >= set->r[i].lo && uid <= set->r[i].hi)
            return true;
    return false;
}

void store_uidset_free(struct store_uidset *set)
{
    free(set->r);
    set->r = NULL;
    set->n = 0;
}

char *store_uidset_format(const uint32_t *uids, size_t n)
{
    /* linear: a fragmented mailbox's set runs to megabytes */
    size_t cap = 64, len = 0;
    char *out = mx_malloc(cap);
    out[0] = '\0';
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && uids[j + 1] == uids[j] + 1)
            j++;
        if (len + 24 > cap) { /* ",4294967295:4294967295" */
            cap = cap * 2 + 24;
            out = mx_realloc(out, cap);
        }
        int w = j > i ? snprintf(out + len, cap - len, "%s%u:%u", len ? "," : "", uids[i], uids[j])
                      : snprintf(out + len, cap - len, "%s%u", len ? "," : "", uids[i]);
        len += (size_t)w;
        i = j + 1;
    }
    return out;
}
