/* mx_limits - per-client counters: concurrent sessions, connection
 * rate (token bucket), failed AUTH attempts (fixed window).
 *
 * Entries are kept in a chained hash table keyed by text ("1.2.3.4",
 * "dn:uid=alice,..."); idle ones are swept every MX_LIMITS_SWEEP inserts so
 * a scan from many addresses cannot grow it without bound. */
#include "mx_limits.h"

#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

#define MX_LIMITS_BUCKETS 4096
#define MX_LIMITS_SWEEP 4096
/* An entry untouched this long with nothing to remember is dropped. */
#define MX_LIMITS_IDLE_MS (30ULL * 60 * 1000)

struct mx_limit_entry {
    struct mx_limit_entry *next;
    char *key;
    unsigned concurrent;
    double tokens;          /* connection-rate bucket */
    uint64_t refilled_ms;
    unsigned failures;      /* failed AUTH attempts in the window */
    uint64_t window_start_ms;
    uint64_t keep_until_ms; /* end of the failure window: not swept before */
    uint64_t touched_ms;
};

struct mx_limits {
    struct mx_limit_entry *buckets[MX_LIMITS_BUCKETS];
    size_t entries;
    size_t inserts_since_sweep;
};

static size_t mx_limits_hash(const char *key)
{
    /* FNV-1a: keys are short and not attacker-chosen in bulk beyond the
     * address space they connect from. */
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % MX_LIMITS_BUCKETS);
}

struct mx_limits *mx_limits_new(void)
{
    return mx_calloc(1, sizeof(struct mx_limits));
}

void mx_limits_free(struct mx_limits **limitsp)
{
    struct mx_limits *limits = *limitsp;
    if (limits == NULL)
        return;
    for (size_t b = 0; b < MX_LIMITS_BUCKETS; b++) {
        struct mx_limit_entry *e = limits->buckets[b];
        while (e) {
            struct mx_limit_entry *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(limits);
    *limitsp = NULL;
}

/* mx_limits_sweep - drop entries that remember nothing useful. */
static void mx_limits_sweep(struct mx_limits *limits, uint64_t now_ms)
{
    for (size_t b = 0; b < MX_LIMITS_BUCKETS; b++) {
        struct mx_limit_entry **link = &limits->buckets[b];
        while (*link) {
            struct mx_limit_entry *e = *link;
            if (e->concurrent == 0 && now_ms - e->touched_ms > MX_LIMITS_IDLE_MS &&
                now_ms >= e->keep_until_ms) {
                *link = e->next;
                free(e->key);
                free(e);
                limits->entries--;
            } else {
                link = &e->next;
            }
        }
    }
    limits->inserts_since_sweep = 0;
}

static struct mx_limit_entry *mx_limits_get(struct mx_limits *limits,
                                                      const char *key, uint64_t now_ms,
                                                      bool create)
{
    size_t b = mx_limits_hash(key);
    for (struct mx_limit_entry *e = limits->buckets[b]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    if (!create)
        return NULL;
    if (++limits->inserts_since_sweep >= MX_LIMITS_SWEEP)
        mx_limits_sweep(limits, now_ms);
    struct mx_limit_entry *e = mx_calloc(1, sizeof *e);
    e->key = mx_strdup(key);
    e->tokens = -1; /* "full" once the rate is known */
    e->refilled_ms = now_ms;
    e->touched_ms = now_ms;
    e->next = limits->buckets[b];
    limits->buckets[b] = e;
    limits->entries++;
    return e;
}

int mx_limits_connect(struct mx_limits *limits, const char *ip, unsigned max_concurrent,
                           unsigned max_per_minute, uint64_t now_ms, const char **reason_r)
{
    struct mx_limit_entry *e = mx_limits_get(limits, ip, now_ms, true);
    e->touched_ms = now_ms;
    if (e->concurrent >= max_concurrent) {
        *reason_r = "too many concurrent sessions from this address";
        return -1;
    }
    if (max_per_minute > 0) {
        double capacity = max_per_minute;
        if (e->tokens < 0)
            e->tokens = capacity;
        e->tokens += (double)(now_ms - e->refilled_ms) * capacity / 60000.0;
        if (e->tokens > capacity)
            e->tokens = capacity;
        e->refilled_ms = now_ms;
        if (e->tokens < 1.0) {
            *reason_r = "connection rate limit exceeded for this address";
            return -1;
        }
        e->tokens -= 1.0;
    }
    e->concurrent++;
    return 0;
}

void mx_limits_disconnect(struct mx_limits *limits, const char *ip)
{
    struct mx_limit_entry *e = mx_limits_get(limits, ip, 0, false);
    if (e && e->concurrent > 0)
        e->concurrent--;
}

void mx_limits_auth_failure(struct mx_limits *limits, const char *key, uint64_t now_ms,
                                 unsigned window_ms)
{
    struct mx_limit_entry *e = mx_limits_get(limits, key, now_ms, true);
    e->touched_ms = now_ms;
    if (e->failures == 0 || now_ms - e->window_start_ms > window_ms) {
        e->window_start_ms = now_ms;
        e->keep_until_ms = now_ms + window_ms;
        e->failures = 0;
    }
    e->failures++;
}

bool mx_limits_auth_blocked(struct mx_limits *limits, const char *key, uint64_t now_ms,
                                 unsigned window_ms, unsigned max_failures)
{
    struct mx_limit_entry *e = mx_limits_get(limits, key, now_ms, false);
    if (e == NULL || e->failures == 0)
        return false;
    if (now_ms - e->window_start_ms > window_ms) {
        e->failures = 0;
        return false;
    }
    return e->failures >= max_failures;
}
