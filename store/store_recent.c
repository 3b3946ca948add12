/* store_recent - see store_recent.h. A chained hash table on the store's
 * event-loop thread (no locking). */
#include "store_recent.h"

#include <stdlib.h>

#include "mx_alloc.h"

#define RECENT_BUCKETS 4096

struct recent_entry {
    struct recent_entry *next;
    uint64_t mailbox_id;
    uint32_t uidvalidity;
    uint32_t floor; /* first UID not claimed yet */
};

struct store_recent {
    struct recent_entry *buckets[RECENT_BUCKETS];
};

struct store_recent *store_recent_new(void)
{
    return mx_calloc(1, sizeof(struct store_recent));
}

void store_recent_free(struct store_recent **recentp)
{
    struct store_recent *r = *recentp;
    if (r == NULL)
        return;
    for (size_t i = 0; i < RECENT_BUCKETS; i++)
        while (r->buckets[i]) {
            struct recent_entry *e = r->buckets[i];
            r->buckets[i] = e->next;
            free(e);
        }
    free(r);
    *recentp = NULL;
}

uint32_t store_recent_claim(struct store_recent *r, uint64_t mailbox_id, uint32_t uidvalidity,
                            uint32_t upto, bool claim)
{
    struct recent_entry **bucket = &r->buckets[(mailbox_id * 0x9E3779B97F4A7C15ull) >> 52];
    struct recent_entry *e = *bucket;
    while (e && e->mailbox_id != mailbox_id)
        e = e->next;
    if (e == NULL) {
        if (!claim)
            return 1;
        e = mx_calloc(1, sizeof *e);
        e->mailbox_id = mailbox_id;
        e->uidvalidity = uidvalidity;
        e->floor = 1;
        e->next = *bucket;
        *bucket = e;
    }
    if (e->uidvalidity != uidvalidity) { /* the mailbox was recreated */
        e->uidvalidity = uidvalidity;
        e->floor = 1;
    }
    uint32_t first = e->floor;
    if (claim && upto > e->floor)
        e->floor = upto;
    return first;
}
