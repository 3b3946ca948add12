/* mx_ldap_cache - bounded LRU cache of directory answers with TTLs.
 *
 * Keyed by the whole question (base, scope, filter, attribute list, size
 * limit; see mx_ldap_cache_key), so two questions never share an answer.
 * A value is either a deep copy of the entries found or a negative marker
 * ("the directory said: nothing"), each with its own TTL. Only answers the
 * directory actually gave belong here: the client never stores UNAVAILABLE
 * or ERROR.
 *
 * Expiry: an answer stored at time t with TTL T is served while now < t + T
 * and is gone from t + T on (exactly at the boundary). The clock is
 * injectable so tests can walk time by hand.
 *
 * Lookup and insert are O(1) on average: a chained hash table with a random
 * per-cache seed (keys carry addresses taken from SMTP clients, so the seed
 * keeps outsiders from aiming collisions at one bucket) and an intrusive
 * LRU list; at capacity the least recently used answer is evicted.
 */
#ifndef MX_LDAP_CACHE_H
#define MX_LDAP_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_ldap.h"

struct mx_ldap_cache;

/* A monotonic clock in milliseconds. */
typedef uint64_t mx_ldap_cache_clock_fn(void *ctx);

enum mx_ldap_cache_answer {
    MX_LDAP_CACHE_MISS = 0,
    MX_LDAP_CACHE_POSITIVE, /* entries found (n >= 1) */
    MX_LDAP_CACHE_NEGATIVE, /* the directory said: no such entry */
};

struct mx_ldap_cache_stats {
    uint64_t hits;          /* positive + negative */
    uint64_t negative_hits;
    uint64_t misses;        /* not there, or expired */
    uint64_t inserts;
    uint64_t evictions;     /* pushed out at capacity */
    uint64_t expired;       /* found stale on lookup or reclaimed */
    size_t entries;         /* stored now */
};

/* mx_ldap_cache_new - max_entries >= 1. A TTL of 0 means that kind of answer
 * is never stored. clock NULL = CLOCK_MONOTONIC. */
struct mx_ldap_cache *mx_ldap_cache_new(size_t max_entries, unsigned positive_ttl_s,
                                        unsigned negative_ttl_s,
                                        mx_ldap_cache_clock_fn *clock, void *clock_ctx);
void mx_ldap_cache_free(struct mx_ldap_cache **cache);

/* mx_ldap_cache_key - the cache key of a question: an unambiguous encoding
 * (every string length-prefixed) of base, scope, filter, attrs (NULL = all)
 * and size limit. Caller frees. */
char *mx_ldap_cache_key(const char *base, int scope, const char *filter,
                        const char *const *attrs, unsigned size_limit);

/* mx_ldap_cache_get - look key up. On POSITIVE, *entries_r / *n_r get a deep
 * copy the caller frees with mx_ldap_entries_free; on NEGATIVE and MISS they
 * are NULL / 0. A hit makes the answer the most recently used. */
enum mx_ldap_cache_answer mx_ldap_cache_get(struct mx_ldap_cache *cache, const char *key,
                                            struct mx_ldap_entry **entries_r, size_t *n_r);

/* mx_ldap_cache_put - store a deep copy of the answer for key, replacing any
 * previous one: n >= 1 entries with the positive TTL, n == 0 as a negative
 * answer with the negative TTL. Evicts the least recently used answer when
 * full. Returns false if that TTL is 0 (nothing stored). */
bool mx_ldap_cache_put(struct mx_ldap_cache *cache, const char *key,
                       const struct mx_ldap_entry *entries, size_t n);

/* mx_ldap_cache_remove - drop key if present; returns whether it was. */
bool mx_ldap_cache_remove(struct mx_ldap_cache *cache, const char *key);
/* mx_ldap_cache_clear - drop every answer (counters are kept). */
void mx_ldap_cache_clear(struct mx_ldap_cache *cache);

void mx_ldap_cache_get_stats(const struct mx_ldap_cache *cache,
                             struct mx_ldap_cache_stats *stats_r);

#endif
