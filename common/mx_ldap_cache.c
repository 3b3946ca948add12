/* mx_ldap_cache - bounded LRU cache of directory answers with TTLs. */
#include "mx_ldap_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "mx_alloc.h"

struct mx_ldap_cache_item {
    struct mx_ldap_cache_item *hnext;    /* hash chain */
    struct mx_ldap_cache_item *lru_prev; /* towards the most recently used */
    struct mx_ldap_cache_item *lru_next; /* towards the least recently used */
    uint64_t hash;
    uint64_t expires_ms;                 /* stale from this instant on */
    char *key;
    size_t n;                            /* 0 = negative answer */
    struct mx_ldap_entry *entries;
};

struct mx_ldap_cache {
    size_t max_entries;
    size_t count;
    size_t mask;                         /* buckets - 1 (a power of two) */
    struct mx_ldap_cache_item **buckets;
    struct mx_ldap_cache_item *lru_head; /* most recently used */
    struct mx_ldap_cache_item *lru_tail; /* least recently used: evicted first */
    uint64_t positive_ttl_ms;
    uint64_t negative_ttl_ms;
    mx_ldap_cache_clock_fn *clock;
    void *clock_ctx;
    uint64_t k0, k1;                     /* SipHash key, random per cache */
    struct mx_ldap_cache_stats stats;
};

/* --- SipHash-2-4 (Aumasson & Bernstein), keyed per cache --- */

#define MX_ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define MX_SIPROUND                                                             \
    do {                                                                        \
        v0 += v1; v1 = MX_ROTL64(v1, 13); v1 ^= v0; v0 = MX_ROTL64(v0, 32);     \
        v2 += v3; v3 = MX_ROTL64(v3, 16); v3 ^= v2;                             \
        v0 += v3; v3 = MX_ROTL64(v3, 21); v3 ^= v0;                             \
        v2 += v1; v1 = MX_ROTL64(v1, 17); v1 ^= v2; v2 = MX_ROTL64(v2, 32);     \
    } while (0)

static uint64_t mx_ldap_cache_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56;
    size_t left = len & 7;
    const unsigned char *end = p + len - left;

    for (; p != end; p += 8) {
        uint64_t m = 0;
        for (int i = 0; i < 8; i++)
            m |= (uint64_t)p[i] << (8 * i);
        v3 ^= m;
        MX_SIPROUND;
        MX_SIPROUND;
        v0 ^= m;
    }
    for (size_t i = 0; i < left; i++)
        b |= (uint64_t)p[i] << (8 * i);
    v3 ^= b;
    MX_SIPROUND;
    MX_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    MX_SIPROUND;
    MX_SIPROUND;
    MX_SIPROUND;
    MX_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t mx_ldap_cache_monotonic_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct mx_ldap_cache *mx_ldap_cache_new(size_t max_entries, unsigned positive_ttl_s,
                                        unsigned negative_ttl_s,
                                        mx_ldap_cache_clock_fn *clock, void *clock_ctx)
{
    struct mx_ldap_cache *cache = mx_calloc(1, sizeof *cache);
    size_t n_buckets = 16;

    if (max_entries == 0)
        max_entries = 1;
    /* Load factor <= 0.75 at capacity, so chains stay short; at most 4M
     * buckets (32 MiB) however large the configured capacity. */
    while (n_buckets < max_entries / 3 * 4 + 1 && n_buckets < ((size_t)1 << 22))
        n_buckets <<= 1;
    cache->max_entries = max_entries;
    cache->mask = n_buckets - 1;
    cache->buckets = mx_calloc(n_buckets, sizeof *cache->buckets);
    cache->positive_ttl_ms = (uint64_t)positive_ttl_s * 1000u;
    cache->negative_ttl_ms = (uint64_t)negative_ttl_s * 1000u;
    cache->clock = clock != NULL ? clock : mx_ldap_cache_monotonic_ms;
    cache->clock_ctx = clock_ctx;

    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        /* No entropy yet (early boot): a weaker seed still beats a fixed one. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uintptr_t)cache;
        seed[1] = (uint64_t)(uintptr_t)&seed ^ 0x9e3779b97f4a7c15ULL;
    }
    cache->k0 = seed[0];
    cache->k1 = seed[1];
    return cache;
}

static void mx_ldap_cache_item_free(struct mx_ldap_cache_item *item)
{
    mx_ldap_entries_free(&item->entries, item->n);
    free(item->key);
    free(item);
}

/* Unlink item from its bucket and the LRU list, and free it. */
static void mx_ldap_cache_drop(struct mx_ldap_cache *cache, struct mx_ldap_cache_item *item)
{
    struct mx_ldap_cache_item **pp = &cache->buckets[item->hash & cache->mask];

    while (*pp != item)
        pp = &(*pp)->hnext;
    *pp = item->hnext;

    if (item->lru_prev != NULL)
        item->lru_prev->lru_next = item->lru_next;
    else
        cache->lru_head = item->lru_next;
    if (item->lru_next != NULL)
        item->lru_next->lru_prev = item->lru_prev;
    else
        cache->lru_tail = item->lru_prev;

    cache->count--;
    mx_ldap_cache_item_free(item);
}

static void mx_ldap_cache_lru_push_front(struct mx_ldap_cache *cache,
                                         struct mx_ldap_cache_item *item)
{
    item->lru_prev = NULL;
    item->lru_next = cache->lru_head;
    if (cache->lru_head != NULL)
        cache->lru_head->lru_prev = item;
    cache->lru_head = item;
    if (cache->lru_tail == NULL)
        cache->lru_tail = item;
}

static void mx_ldap_cache_lru_touch(struct mx_ldap_cache *cache, struct mx_ldap_cache_item *item)
{
    if (cache->lru_head == item)
        return;
    item->lru_prev->lru_next = item->lru_next;
    if (item->lru_next != NULL)
        item->lru_next->lru_prev = item->lru_prev;
    else
        cache->lru_tail = item->lru_prev;
    mx_ldap_cache_lru_push_front(cache, item);
}

static struct mx_ldap_cache_item *mx_ldap_cache_find(struct mx_ldap_cache *cache,
                                                     const char *key, uint64_t hash)
{
    for (struct mx_ldap_cache_item *it = cache->buckets[hash & cache->mask]; it != NULL;
         it = it->hnext) {
        if (it->hash == hash && strcmp(it->key, key) == 0)
            return it;
    }
    return NULL;
}

void mx_ldap_cache_free(struct mx_ldap_cache **cachep)
{
    struct mx_ldap_cache *cache = *cachep;

    if (cache == NULL)
        return;
    mx_ldap_cache_clear(cache);
    free(cache->buckets);
    free(cache);
    *cachep = NULL;
}

/* Append "<len>:<bytes>" so no choice of strings can produce another
 * question's key. */
static void mx_ldap_cache_key_put(char **buf, size_t *len, size_t *cap, char tag,
                                  const char *s, size_t slen)
{
    char head[32];
    int hl = snprintf(head, sizeof head, "%c%zu:", tag, slen);
    size_t need = *len + (size_t)hl + slen + 1;

    if (need > *cap) {
        while (*cap < need)
            *cap *= 2;
        *buf = mx_realloc(*buf, *cap);
    }
    memcpy(*buf + *len, head, (size_t)hl);
    memcpy(*buf + *len + hl, s, slen);
    *len += (size_t)hl + slen;
    (*buf)[*len] = '\0';
}

char *mx_ldap_cache_key(const char *base, int scope, const char *filter,
                        const char *const *attrs, unsigned size_limit)
{
    size_t cap = 128, len = 0;
    char *buf = mx_malloc(cap);
    char num[32];

    buf[0] = '\0';
    base = base != NULL ? base : "";
    filter = filter != NULL ? filter : "";
    mx_ldap_cache_key_put(&buf, &len, &cap, 'b', base, strlen(base));
    snprintf(num, sizeof num, "%d/%u", scope, size_limit);
    mx_ldap_cache_key_put(&buf, &len, &cap, 's', num, strlen(num));
    mx_ldap_cache_key_put(&buf, &len, &cap, 'f', filter, strlen(filter));
    if (attrs == NULL) {
        mx_ldap_cache_key_put(&buf, &len, &cap, '*', "", 0);
    } else {
        for (size_t i = 0; attrs[i] != NULL; i++)
            mx_ldap_cache_key_put(&buf, &len, &cap, 'a', attrs[i], strlen(attrs[i]));
    }
    return buf;
}

enum mx_ldap_cache_answer mx_ldap_cache_get(struct mx_ldap_cache *cache, const char *key,
                                            struct mx_ldap_entry **entries_r, size_t *n_r)
{
    uint64_t hash = mx_ldap_cache_siphash(cache->k0, cache->k1, key, strlen(key));
    struct mx_ldap_cache_item *item = mx_ldap_cache_find(cache, key, hash);

    *entries_r = NULL;
    *n_r = 0;
    if (item == NULL) {
        cache->stats.misses++;
        return MX_LDAP_CACHE_MISS;
    }
    if (cache->clock(cache->clock_ctx) >= item->expires_ms) {
        mx_ldap_cache_drop(cache, item);
        cache->stats.expired++;
        cache->stats.misses++;
        return MX_LDAP_CACHE_MISS;
    }
    mx_ldap_cache_lru_touch(cache, item);
    cache->stats.hits++;
    if (item->n == 0) {
        cache->stats.negative_hits++;
        return MX_LDAP_CACHE_NEGATIVE;
    }
    *entries_r = mx_ldap_entries_dup(item->entries, item->n);
    *n_r = item->n;
    return MX_LDAP_CACHE_POSITIVE;
}

bool mx_ldap_cache_put(struct mx_ldap_cache *cache, const char *key,
                       const struct mx_ldap_entry *entries, size_t n)
{
    uint64_t ttl = n > 0 ? cache->positive_ttl_ms : cache->negative_ttl_ms;
    uint64_t hash = mx_ldap_cache_siphash(cache->k0, cache->k1, key, strlen(key));
    uint64_t now = cache->clock(cache->clock_ctx);
    struct mx_ldap_cache_item *item = mx_ldap_cache_find(cache, key, hash);

    if (ttl == 0) {
        /* An older answer of the other kind must not outlive this one. */
        if (item != NULL)
            mx_ldap_cache_drop(cache, item);
        return false;
    }
    if (item != NULL) {
        mx_ldap_entries_free(&item->entries, item->n);
        mx_ldap_cache_lru_touch(cache, item);
    } else {
        if (cache->count >= cache->max_entries) {
            struct mx_ldap_cache_item *victim = cache->lru_tail;
            if (now >= victim->expires_ms)
                cache->stats.expired++;
            else
                cache->stats.evictions++;
            mx_ldap_cache_drop(cache, victim);
        }
        item = mx_calloc(1, sizeof *item);
        item->key = mx_strdup(key);
        item->hash = hash;
        item->hnext = cache->buckets[hash & cache->mask];
        cache->buckets[hash & cache->mask] = item;
        mx_ldap_cache_lru_push_front(cache, item);
        cache->count++;
    }
    item->n = n;
    item->entries = mx_ldap_entries_dup(entries, n);
    item->expires_ms = now + ttl;
    cache->stats.inserts++;
    return true;
}

bool mx_ldap_cache_remove(struct mx_ldap_cache *cache, const char *key)
{
    uint64_t hash = mx_ldap_cache_siphash(cache->k0, cache->k1, key, strlen(key));
    struct mx_ldap_cache_item *item = mx_ldap_cache_find(cache, key, hash);

    if (item == NULL)
        return false;
    mx_ldap_cache_drop(cache, item);
    return true;
}

void mx_ldap_cache_clear(struct mx_ldap_cache *cache)
{
    struct mx_ldap_cache_item *item = cache->lru_head;

    while (item != NULL) {
        struct mx_ldap_cache_item *next = item->lru_next;
        mx_ldap_cache_item_free(item);
        item = next;
    }
    memset(cache->buckets, 0, (cache->mask + 1) * sizeof *cache->buckets);
    cache->lru_head = cache->lru_tail = NULL;
    cache->count = 0;
}

void mx_ldap_cache_get_stats(const struct mx_ldap_cache *cache,
                             struct mx_ldap_cache_stats *stats_r)
{
    *stats_r = cache->stats;
    stats_r->entries = cache->count;
}
