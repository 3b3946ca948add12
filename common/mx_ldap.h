/* mx_ldap - asynchronous LDAP client on the libevent loop (libldap 2.5).
 *
 * Every role asks the directory through this module: mx-inbound validates
 * RCPT TO, SMTP AUTH verifies passwords, mx-delivery expands aliases, lists
 * and forwards. One process serves many sessions on one event loop, so
 * nothing here ever waits for the network: requests go out as libldap
 * message ids, answers are read when libevent says the socket is readable,
 * and every operation has its own timer.
 *
 * The contract that matters most: a caller can always tell "the directory
 * says there is no such entry" (MX_LDAP_NOT_FOUND -> 550) from "we could not
 * ask the directory" (MX_LDAP_UNAVAILABLE / MX_LDAP_ERROR -> 451). A timeout,
 * a dead server, a refused service bind, a protocol error: never NOT_FOUND.
 *
 * Servers: several URIs (replicated slapd) in priority order. Each URI has a
 * pool of service connections (bound as the service account, many
 * outstanding searches each, used round-robin) and a separate pool of
 * connections for password checks (one bind at a time each; never used for
 * searches). A connection failure marks the URI down for a back-off period;
 * the operations it carried are retried once on the next URI if their time
 * allows. With every URI down, operations fail at once (UNAVAILABLE).
 *
 * Callbacks are never called from inside mx_ldap_search / mx_ldap_bind_check
 * (even for a cache hit or an immediate failure they run from the event
 * loop), and never after mx_ldap_op_cancel or mx_ldap_free. A callback may
 * start new operations, cancel others and free the client.
 *
 * Not thread-safe: one struct mx_ldap per event loop thread. libldap writes
 * with plain write()/send(): the process must ignore SIGPIPE (every daemon
 * does), or a server that closes a connection can kill it.
 */
#ifndef MX_LDAP_H
#define MX_LDAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct mx_ldap;
struct mx_ldap_op;

enum mx_ldap_status {
    /* search: at least one entry. */
    MX_LDAP_FOUND = 0,
    /* search: the directory answered and nothing matched (or, for a base-scope
     * search, the entry does not exist). The only "permanent" negative. */
    MX_LDAP_NOT_FOUND,
    /* No usable answer in time: every URI down, connect/operation timeout,
     * connection lost, service bind refused, server busy/unavailable.
     * Callers must tempfail (451 / NO [UNAVAILABLE]). */
    MX_LDAP_UNAVAILABLE,
    /* bind_check only: wrong password, unknown DN, empty password. */
    MX_LDAP_INVALID_CREDENTIALS,
    /* bind_check only: the password is correct. */
    MX_LDAP_OK,
    /* Bad filter or DN, protocol error, access denied, a missing search base:
     * our bug, our config or the directory's data. Tempfail as well. */
    MX_LDAP_ERROR,
};

enum mx_ldap_scope {
    MX_LDAP_SCOPE_BASE = 0,
    MX_LDAP_SCOPE_ONE,
    MX_LDAP_SCOPE_SUB,
};

/* One attribute value: len bytes at data, plus a NUL after them so text
 * values can be used as C strings (a value may itself contain NUL bytes). */
struct mx_ldap_value {
    size_t len;
    char *data;
};

struct mx_ldap_attr {
    char *name;
    size_t n_values;
    struct mx_ldap_value *values;
};

struct mx_ldap_entry {
    char *dn;
    size_t n_attrs;
    struct mx_ldap_attr *attrs;
};

/* What a search callback receives. Owned by the library and valid only during
 * the callback: copy what you keep (mx_ldap_entries_dup). */
struct mx_ldap_result {
    enum mx_ldap_status status;
    size_t n_entries;
    const struct mx_ldap_entry *entries;
    /* For UNAVAILABLE / ERROR: why, for the log (never a password). NULL
     * otherwise. */
    const char *error;
    /* The URI that answered; NULL for a cache hit or when none did. */
    const char *uri;
    bool cached;    /* served from the cache */
    bool truncated; /* the size limit cut the answer short */
};

typedef void mx_ldap_search_fn(const struct mx_ldap_result *result, void *ctx);
/* status is MX_LDAP_OK, MX_LDAP_INVALID_CREDENTIALS, MX_LDAP_UNAVAILABLE or
 * MX_LDAP_ERROR; error as in struct mx_ldap_result (valid during the call). */
typedef void mx_ldap_bind_fn(enum mx_ldap_status status, const char *error, void *ctx);

/* Defaults (mx_ldap_config_init) in brackets. */
struct mx_ldap_config {
    /* URIs separated by spaces or commas, in priority order:
     * "ldap://10.0.0.5 ldap://10.0.0.6:389 ldapi:///". Use IP addresses or
     * names in /etc/hosts: libldap resolves a host name with a blocking
     * getaddrinfo() (see mx_ldap.c). Required. */
    const char *uris;
    const char *bind_dn;       /* service account; NULL or "" = anonymous [NULL] */
    const char *bind_password; /* [NULL] */
    const char *base_dn;       /* default search base; required */
    unsigned pool_size;        /* service connections per URI [2] */
    unsigned auth_pool_size;   /* password-check connections per URI [2] */
    /* Outstanding searches per connection; more wait in a queue. Keep it
     * under slapd's conn_max_pending (100 anonymous, 1000 bound). [64] */
    unsigned max_ops_per_conn;
    unsigned op_timeout_ms;      /* whole operation, queueing included [3000] */
    unsigned connect_timeout_ms; /* TCP connect + service bind [2000] */
    unsigned cache_ttl_s;          /* positive answers; 0 = not cached [60] */
    unsigned cache_negative_ttl_s; /* NOT_FOUND answers; 0 = not cached [30] */
    size_t cache_max_entries;      /* 0 = no cache [10000] */
    unsigned down_backoff_s;     /* how long a failed URI is skipped [10] */
};

struct mx_ldap_query {
    const char *base;           /* NULL = config base_dn */
    enum mx_ldap_scope scope;
    /* A complete RFC 4515 filter. Build it with mx_ldap_filter_format: never
     * paste unescaped input into a filter. */
    const char *filter;
    const char *const *attrs;   /* NULL-terminated; NULL = all user attributes */
    unsigned size_limit;        /* 0 = no limit */
    bool use_cache;
};

struct mx_ldap_stats {
    uint64_t searches;        /* mx_ldap_search calls */
    uint64_t binds;           /* mx_ldap_bind_check calls */
    uint64_t sent;            /* requests sent to a server (retries included) */
    uint64_t timeouts;        /* operations that ran out of time */
    uint64_t retries;         /* operations moved to another URI */
    uint64_t server_failures; /* times a URI was marked down */
    uint64_t unavailable;     /* operations answered UNAVAILABLE */
    uint64_t write_stalls;    /* a socket write would have blocked (EAGAIN) */
    uint64_t cache_hits;      /* positive + negative */
    uint64_t cache_negative_hits;
    uint64_t cache_misses;
    uint64_t cache_evictions;
    uint64_t cache_expired;
    size_t cache_entries;
    size_t connections;       /* currently open (service + auth) */
};

/* mx_ldap_config_init - fill cfg with the defaults above (uris/base NULL). */
void mx_ldap_config_init(struct mx_ldap_config *cfg);

/* mx_ldap_new - validate cfg and create a client on base. Connects lazily (on
 * the first operation). Strings in cfg are copied. NULL and *error_r (static
 * string) on a bad configuration. */
struct mx_ldap *mx_ldap_new(struct event_base *base, const struct mx_ldap_config *cfg,
                            const char **error_r);

/* mx_ldap_free - close every connection and drop every pending operation
 * WITHOUT calling its callback; op handles become invalid. May be called from
 * inside a callback (the client then goes away when that callback returns). */
void mx_ldap_free(struct mx_ldap **ldap);

/* mx_ldap_search - start a search; cb runs exactly once later from the event
 * loop unless the op is cancelled. Never returns NULL. The query is copied.
 * A filter asserting a value that contains a NUL byte (escaped "\00") is
 * answered NOT_FOUND without asking: slapd's IA5String normalizer cuts such
 * a value at the NUL, so (mail=alice@example.test\00evil) would match alice.
 * (Build no compound filter where another branch should still match.) */
struct mx_ldap_op *mx_ldap_search(struct mx_ldap *ldap, const struct mx_ldap_query *query,
                                  mx_ldap_search_fn *cb, void *ctx);

/* mx_ldap_bind_check - verify a password by a simple bind as dn on a
 * password-check connection (never a service connection). An empty password,
 * one containing NUL, or an empty dn is refused (INVALID_CREDENTIALS) before
 * any network traffic: an empty simple bind is an anonymous bind and would
 * succeed. The password is copied, wiped after use and never logged. */
struct mx_ldap_op *mx_ldap_bind_check(struct mx_ldap *ldap, const char *dn,
                                      const char *password, size_t password_len,
                                      mx_ldap_bind_fn *cb, void *ctx);

/* mx_ldap_op_cancel - forget an operation (e.g. the session closed): its
 * callback is never called. Sets *op to NULL; NULL is a no-op. Must not be
 * called with an op whose callback already ran. */
void mx_ldap_op_cancel(struct mx_ldap_op **op);

void mx_ldap_get_stats(const struct mx_ldap *ldap, struct mx_ldap_stats *stats_r);

/* mx_ldap_status_name - "found", "not_found", ... for logs. */
const char *mx_ldap_status_name(enum mx_ldap_status status);

/* --- entries --- */

/* mx_ldap_entry_get - the attribute called name (ASCII case-insensitive), or
 * NULL. Options (";lang-en") are part of the name as the server sent it. */
const struct mx_ldap_attr *mx_ldap_entry_get(const struct mx_ldap_entry *entry,
                                             const char *name);
/* mx_ldap_entry_get_first - first value of name as a C string, or NULL. */
const char *mx_ldap_entry_get_first(const struct mx_ldap_entry *entry, const char *name);

/* mx_ldap_entries_dup - deep copy of n entries (NULL when n is 0). */
struct mx_ldap_entry *mx_ldap_entries_dup(const struct mx_ldap_entry *entries, size_t n);
/* mx_ldap_entries_free - free n entries from mx_ldap_entries_dup / the client;
 * sets *entries to NULL. */
void mx_ldap_entries_free(struct mx_ldap_entry **entries, size_t n);

/* --- filters (RFC 4515) --- */

/* mx_ldap_escape_filter_value - escape len bytes of value for use as an
 * assertion value: '*' '(' ')' '\' NUL become \2a \28 \29 \5c \00 (RFC 4515
 * section 3); other control bytes, DEL and bytes that are not valid UTF-8 are
 * escaped too (allowed, and keeps filters printable); valid UTF-8 passes
 * through. Caller frees. */
char *mx_ldap_escape_filter_value(const char *value, size_t len);

/* mx_ldap_filter_format - expand template: each %s takes the next argument
 * (a C string) ESCAPED with mx_ldap_escape_filter_value, %% is '%'. Any
 * other '%' sequence or a NULL argument is a programming error: returns NULL.
 * Values that may contain NUL bytes must be escaped with
 * mx_ldap_escape_filter_value and their explicit length instead. Caller frees.
 *   mx_ldap_filter_format("(&(objectClass=mxAccount)(|(mail=%s)"
 *                         "(mxAlternateAddress=%s)))", addr, addr) */
char *mx_ldap_filter_format(const char *template, ...)
    __attribute__((format(printf, 1, 2)));

/* mx_ldap_filter_expand - the same for a template that is not a literal (an
 * operator's configured filter): values[i] replaces the i-th %s. Returns NULL
 * and *error_r (static string) if the template has another '%' sequence or a
 * different number of %s than n_values. Caller frees. */
char *mx_ldap_filter_expand(const char *template, const char *const *values,
                            size_t n_values, const char **error_r);

#endif
