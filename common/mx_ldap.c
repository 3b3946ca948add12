/* mx_ldap - asynchronous LDAP client on the libevent loop (libldap 2.5).
 *
 * How libldap is driven without blocking (read from the OpenLDAP 2.5 sources:
 * libldap/open.c, request.c, os-ip.c, result.c, liblber/io.c; dovecot's
 * src/auth/db-ldap.c drives libldap the same way: ldap_result() with a zero
 * timeout whenever the descriptor is readable, until it returns 0):
 *
 * 1. ldap_initialize() only parses the URI; nothing touches the network.
 *
 * 2. The connection is opened inside the FIRST request sent on the handle
 *    (ldap_send_initial_request -> ldap_open_defconn -> ldap_int_open_connection
 *    -> ldap_connect_to_host -> ldap_pvt_connect). There:
 *    - the host name is resolved with getaddrinfo(). THIS BLOCKS for a name
 *      that needs DNS, for as long as the resolver takes (resolv.conf
 *      timeout x attempts); LDAP_OPT_NETWORK_TIMEOUT does NOT bound it. With
 *      an IP literal (or "localhost" / an /etc/hosts name, or ldapi://) it
 *      returns at once. mx_ldap_new logs ldap.uri_needs_dns for other names;
 *      operators should configure addresses. This is the one blocking step
 *      left, and it happens only when a connection is (re)opened.
 *    - connect(): the socket is made non-blocking ONLY IF a network timeout
 *      is set (`if (opt_tv && ldap_pvt_ndelay_on(...))` in ldap_pvt_connect);
 *      with LDAP_OPT_CONNECT_ASYNC on it then returns -2 on EINPROGRESS
 *      instead of polling. So CONNECT_ASYNC works only together with
 *      LDAP_OPT_NETWORK_TIMEOUT, and we always set both. Without async, the
 *      same code would poll() for up to the network timeout: that poll is
 *      the step NETWORK_TIMEOUT bounds, and we never take that path.
 *    - what happens to the request that triggered the connect depends on
 *      the libldap version, so we handle both:
 *      * 2.5.13 (Debian 12; verified with LDAP_OPT_DEBUG_LEVEL against a
 *        listener whose accept queue was full): ldap_send_initial_request
 *        does not look at the connection state; the bind is written at once,
 *        write() fails with EAGAIN, ldap_int_flush_request leaves it in
 *        LDAP_REQST_WRITING, marks the socket for write, sets ld_errno to
 *        LDAP_BUSY and ldap_sasl_bind returns LDAP_SUCCESS with a msgid. A
 *        second request would get LDAP_BUSY. When the socket turns writable
 *        (connect done), ldap_result() flushes the bind. So: after the bind,
 *        LDAP_OPT_RESULT_CODE == LDAP_BUSY means "connect/write pending" ->
 *        wait for EV_WRITE (checking SO_ERROR), then call ldap_result().
 *      * newer sources (request.c ldap_send_initial_request calls
 *        ldap_int_check_async_open): the bind fails with LDAP_X_CONNECTING
 *        and is not queued; we wait for EV_WRITE and issue it again.
 *      On loopback the connect usually completes before the write, and the
 *      first bind simply goes out.
 *    - after the connect completes, ldap_int_poll() switches the socket back
 *      to BLOCKING (ldap_pvt_ndelay_off). We set it non-blocking again
 *      (LBER_SB_OPT_SET_NONBLOCK) as soon as the bind is sent: reads then
 *      return EAGAIN, which try_read1msg treats as "keep looking"; writes
 *      that would block leave the request in LDAP_REQST_WRITING and libldap
 *      finishes them inside a later ldap_result() once poll() says writable,
 *      refusing new requests with LDAP_BUSY meanwhile. libldap has no call
 *      that says "a write is pending", so a tiny Sockbuf I/O layer of ours
 *      (public lber API, ber_sockbuf_add_io) notes EAGAIN on write; we then
 *      watch EV_WRITE and call ldap_result() to let libldap flush.
 *
 * 3. Results: on EV_READ we call ldap_result(ld, LDAP_RES_ANY, LDAP_MSG_ONE,
 *    {0,0}) until it returns 0 and hand each message to the operation with
 *    that message id (entries one by one, then the final result). With a
 *    zero timeout libldap polls its own descriptors without waiting and
 *    checks its read-ahead buffer first (LBER_SB_OPT_DATA_READY), so several
 *    PDUs read in one go are all delivered. -1 means the connection is gone.
 *
 * 4. Timeouts are ours (one evtimer per operation): on expiry the message id
 *    is abandoned (ldap_abandon_ext, except when a partial write is pending,
 *    which an abandon PDU would corrupt) and the caller gets UNAVAILABLE.
 *    A connection that received nothing at all during an operation's whole
 *    timeout is considered hung and its URI is marked down.
 *
 * Referral chasing is off (it would open connections synchronously). TLS
 * (ldaps://, StartTLS) is not driven asynchronously: libldap does the TLS
 * handshake inside the bind that completes the connect, in blocking mode,
 * bounded by the network timeout. Use ldap:// on a trusted network or
 * ldapi://, or accept that cost on reconnects.
 */
#include "mx_ldap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <lber.h>
#include <ldap.h>

#include "mx_alloc.h"
#include "mx_ldap_cache.h"
#include "mx_log.h"

/* Message-id buckets per service connection (chained). */
#define MX_LDAP_CONN_BUCKETS 64u
#define MX_LDAP_MAX_POOL 64u
/* A retry needs at least this much of the operation's time left. */
#define MX_LDAP_RETRY_MIN_MS 20u

enum mx_ldap_op_kind { MX_LDAP_OP_SEARCH, MX_LDAP_OP_BIND };

enum mx_ldap_op_where {
    MX_LDAP_OP_NEW = 0, /* not queued anywhere (being dispatched) */
    MX_LDAP_OP_QUEUED,  /* on a server's search or auth queue */
    MX_LDAP_OP_SENT,    /* on a connection, waiting for the answer */
    MX_LDAP_OP_DONE,    /* answered, on the done / running list */
};

enum mx_ldap_conn_state {
    MX_LDAP_CONN_CLOSED = 0,
    MX_LDAP_CONN_CONNECTING, /* TCP connect in progress (waiting EV_WRITE) */
    MX_LDAP_CONN_BINDING,    /* service bind sent */
    MX_LDAP_CONN_READY,
};

struct mx_ldap_op_list {
    struct mx_ldap_op *head, *tail;
    size_t count;
};

struct mx_ldap_op {
    struct mx_ldap *ldap;
    enum mx_ldap_op_kind kind;
    enum mx_ldap_op_where where;
    struct mx_ldap_op_list *list;  /* the list the op is on, if any */
    struct mx_ldap_op *prev, *next;
    struct mx_ldap_conn *conn;     /* SENT: the connection */
    struct mx_ldap_op *hnext;      /* SENT search: message-id chain */
    struct mx_ldap_server *avoid;  /* a retry goes elsewhere */
    int msgid;
    struct event *timer;
    uint64_t deadline_ms;
    uint64_t sent_ms;
    bool retried;
    bool in_callback;

    /* search */
    char *base;
    int scope;
    char *filter;
    char **attrs;
    unsigned size_limit;
    char *cache_key;               /* NULL: not cached */
    struct mx_ldap_entry *entries;
    size_t n_entries, cap_entries;
    bool truncated;
    bool cached;

    /* bind check */
    char *dn;
    char *password;
    size_t password_len;

    enum mx_ldap_status status;
    char *error;
    const char *uri;               /* the server's string, lives as long as ldap */
    mx_ldap_search_fn *search_cb;
    mx_ldap_bind_fn *bind_cb;
    void *ctx;
};

struct mx_ldap_conn {
    struct mx_ldap_server *server;
    bool auth;                     /* password-check connection */
    unsigned index;
    enum mx_ldap_conn_state state;
    unsigned gen;                  /* bumped on every close: stale-handle check */
    LDAP *ld;
    int fd;
    bool io_pushed;
    struct event *ev_read;         /* EV_READ|EV_PERSIST once the bind went out */
    struct event *ev_write;        /* connect completion, or a pending flush */
    struct event *ev_connect;      /* connect + service bind deadline */
    int setup_msgid;               /* the service bind */
    /* auth connections: one user bind at a time */
    bool user_busy;
    int user_msgid;
    struct mx_ldap_op *user_op;    /* NULL if the check was cancelled */
    /* service connections */
    struct mx_ldap_op *table[MX_LDAP_CONN_BUCKETS];
    unsigned n_sent;
    bool write_blocked;            /* set by our Sockbuf layer on EAGAIN */
    unsigned writes;               /* write attempts seen by our layer */
    uint64_t last_rx_ms;
};

struct mx_ldap_server {
    struct mx_ldap *ldap;
    char *uri;
    unsigned index;
    uint64_t down_until_ms;        /* skipped until then; 0 = never failed */
    bool failed;                   /* marked down since it last worked */
    struct mx_ldap_conn *conns;
    struct mx_ldap_conn *auth_conns;
    unsigned rr, auth_rr;
    struct mx_ldap_op_list queue;      /* searches waiting for a connection */
    struct mx_ldap_op_list auth_queue; /* checks waiting for an auth connection */
};

struct mx_ldap {
    struct event_base *base;
    struct mx_ldap_config cfg;     /* string members point at our copies */
    char *bind_dn, *bind_password, *base_dn, *uris;
    struct mx_ldap_server *servers;
    size_t n_servers;
    struct mx_ldap_cache *cache;
    struct mx_ldap_op_list done;    /* answered, callbacks not yet run */
    struct mx_ldap_op_list running; /* callbacks being run by mx_ldap_done_cb */
    struct event *ev_done;
    bool dispatching;
    bool free_requested;
    struct mx_ldap_stats stats;
};

static uint64_t mx_ldap_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval mx_ldap_tv_ms(uint64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000u),
                          .tv_usec = (suseconds_t)((ms % 1000u) * 1000u) };
    return tv;
}

const char *mx_ldap_status_name(enum mx_ldap_status status)
{
    switch (status) {
    case MX_LDAP_FOUND: return "found";
    case MX_LDAP_NOT_FOUND: return "not_found";
    case MX_LDAP_UNAVAILABLE: return "unavailable";
    case MX_LDAP_INVALID_CREDENTIALS: return "invalid_credentials";
    case MX_LDAP_OK: return "ok";
    case MX_LDAP_ERROR: return "error";
    }
    return "unknown";
}

/* ------------------------------------------------------------------ */
/* entries */

const struct mx_ldap_attr *mx_ldap_entry_get(const struct mx_ldap_entry *entry,
                                             const char *name)
{
    for (size_t i = 0; i < entry->n_attrs; i++) {
        if (strcasecmp(entry->attrs[i].name, name) == 0)
            return &entry->attrs[i];
    }
    return NULL;
}

const char *mx_ldap_entry_get_first(const struct mx_ldap_entry *entry, const char *name)
{
    const struct mx_ldap_attr *attr = mx_ldap_entry_get(entry, name);

    if (attr == NULL || attr->n_values == 0)
        return NULL;
    return attr->values[0].data;
}

static void mx_ldap_value_set(struct mx_ldap_value *v, const char *data, size_t len)
{
    v->len = len;
    v->data = mx_malloc(len + 1);
    if (len > 0)
        memcpy(v->data, data, len);
    v->data[len] = '\0';
}

struct mx_ldap_entry *mx_ldap_entries_dup(const struct mx_ldap_entry *entries, size_t n)
{
    struct mx_ldap_entry *copy;

    if (n == 0)
        return NULL;
    copy = mx_calloc(n, sizeof *copy);
    for (size_t i = 0; i < n; i++) {
        const struct mx_ldap_entry *e = &entries[i];
        copy[i].dn = mx_strdup(e->dn != NULL ? e->dn : "");
        copy[i].n_attrs = e->n_attrs;
        if (e->n_attrs == 0)
            continue;
        copy[i].attrs = mx_calloc(e->n_attrs, sizeof *copy[i].attrs);
        for (size_t a = 0; a < e->n_attrs; a++) {
            const struct mx_ldap_attr *src = &e->attrs[a];
            struct mx_ldap_attr *dst = &copy[i].attrs[a];
            dst->name = mx_strdup(src->name);
            dst->n_values = src->n_values;
            if (src->n_values == 0)
                continue;
            dst->values = mx_calloc(src->n_values, sizeof *dst->values);
            for (size_t v = 0; v < src->n_values; v++)
                mx_ldap_value_set(&dst->values[v], src->values[v].data, src->values[v].len);
        }
    }
    return copy;
}

void mx_ldap_entries_free(struct mx_ldap_entry **entriesp, size_t n)
{
    struct mx_ldap_entry *entries = *entriesp;

    if (entries == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        for (size_t a = 0; a < entries[i].n_attrs; a++) {
            struct mx_ldap_attr *attr = &entries[i].attrs[a];
            for (size_t v = 0; v < attr->n_values; v++)
                free(attr->values[v].data);
            free(attr->values);
            free(attr->name);
        }
        free(entries[i].attrs);
        free(entries[i].dn);
    }
    free(entries);
    *entriesp = NULL;
}

/* ------------------------------------------------------------------ */
/* filters (RFC 4515) */

struct mx_ldap_buf {
    char *data;
    size_t len, cap;
};

static void mx_ldap_buf_put(struct mx_ldap_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = mx_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* Length of the valid UTF-8 sequence starting at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t mx_ldap_utf8_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return n;
}

static void mx_ldap_escape_into(struct mx_ldap_buf *b, const char *value, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)value;
    size_t i = 0;

    while (i < len) {
        unsigned char c = p[i];
        size_t run;

        if (c >= 0x80 && (run = mx_ldap_utf8_len(p + i, len - i)) > 0) {
            mx_ldap_buf_put(b, (const char *)p + i, run);
            i += run;
            continue;
        }
        if (c < 0x20 || c == 0x7f || c >= 0x80 || c == '*' || c == '(' || c == ')' ||
            c == '\\') {
            char esc[3] = { '\\', hex[c >> 4], hex[c & 15] };
            mx_ldap_buf_put(b, esc, 3);
        } else {
            mx_ldap_buf_put(b, (const char *)&p[i], 1);
        }
        i++;
    }
}

char *mx_ldap_escape_filter_value(const char *value, size_t len)
{
    struct mx_ldap_buf b = { 0 };

    mx_ldap_buf_put(&b, "", 0);
    if (value != NULL)
        mx_ldap_escape_into(&b, value, len);
    return b.data;
}

/* Where the values of a template come from: varargs or an array. */
struct mx_ldap_filter_src {
    va_list *ap;
    const char *const *values;
    size_t n_values, next;
};

static char *mx_ldap_filter_build(const char *template, struct mx_ldap_filter_src *src,
                                  const char **error_r)
{
    struct mx_ldap_buf b = { 0 };
    const char *p = template;

    if (template == NULL) {
        *error_r = "no filter template";
        return NULL;
    }
    mx_ldap_buf_put(&b, "", 0);
    while (*p != '\0') {
        const char *pct = strchr(p, '%');
        if (pct == NULL) {
            mx_ldap_buf_put(&b, p, strlen(p));
            break;
        }
        mx_ldap_buf_put(&b, p, (size_t)(pct - p));
        if (pct[1] == '%') {
            mx_ldap_buf_put(&b, "%", 1);
        } else if (pct[1] == 's') {
            const char *v;
            if (src->ap != NULL) {
                v = va_arg(*src->ap, const char *);
            } else if (src->next < src->n_values) {
                v = src->values[src->next++];
            } else {
                *error_r = "filter template has more %s than values";
                free(b.data);
                return NULL;
            }
            if (v == NULL) {
                *error_r = "NULL value for a filter template";
                free(b.data);
                return NULL;
            }
            mx_ldap_escape_into(&b, v, strlen(v));
        } else {
            *error_r = "filter template may only contain %s and %%";
            free(b.data);
            return NULL;
        }
        p = pct + 2;
    }
    if (src->ap == NULL && src->next != src->n_values) {
        *error_r = "filter template has fewer %s than values";
        free(b.data);
        return NULL;
    }
    return b.data;
}

char *mx_ldap_filter_format(const char *template, ...)
{
    va_list ap;
    struct mx_ldap_filter_src src = { .ap = &ap };
    const char *error;
    char *out;

    va_start(ap, template);
    out = mx_ldap_filter_build(template, &src, &error);
    va_end(ap);
    return out;
}

char *mx_ldap_filter_expand(const char *template, const char *const *values,
                            size_t n_values, const char **error_r)
{
    struct mx_ldap_filter_src src = { .values = values, .n_values = n_values };

    return mx_ldap_filter_build(template, &src, error_r);
}

/* ------------------------------------------------------------------ */
/* op lists */

static void mx_ldap_list_append(struct mx_ldap_op_list *list, struct mx_ldap_op *op)
{
    op->list = list;
    op->next = NULL;
    op->prev = list->tail;
    if (list->tail != NULL)
        list->tail->next = op;
    else
        list->head = op;
    list->tail = op;
    list->count++;
}

static void mx_ldap_list_prepend(struct mx_ldap_op_list *list, struct mx_ldap_op *op)
{
    op->list = list;
    op->prev = NULL;
    op->next = list->head;
    if (list->head != NULL)
        list->head->prev = op;
    else
        list->tail = op;
    list->head = op;
    list->count++;
}

static void mx_ldap_list_unlink(struct mx_ldap_op *op)
{
    struct mx_ldap_op_list *list = op->list;

    if (list == NULL)
        return;
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        list->head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    else
        list->tail = op->prev;
    list->count--;
    op->list = NULL;
    op->prev = op->next = NULL;
}

static struct mx_ldap_op *mx_ldap_list_pop(struct mx_ldap_op_list *list)
{
    struct mx_ldap_op *op = list->head;

    if (op != NULL)
        mx_ldap_list_unlink(op);
    return op;
}

/* Move every op of src to the end of dst. */
static void mx_ldap_list_move_all(struct mx_ldap_op_list *dst, struct mx_ldap_op_list *src)
{
    struct mx_ldap_op *op;

    while ((op = mx_ldap_list_pop(src)) != NULL)
        mx_ldap_list_append(dst, op);
}

/* ------------------------------------------------------------------ */
/* message-id table of a service connection */

static unsigned mx_ldap_bucket(int msgid)
{
    return (unsigned)msgid % MX_LDAP_CONN_BUCKETS;
}

static void mx_ldap_table_add(struct mx_ldap_conn *conn, struct mx_ldap_op *op)
{
    unsigned b = mx_ldap_bucket(op->msgid);

    op->hnext = conn->table[b];
    conn->table[b] = op;
    conn->n_sent++;
}

static struct mx_ldap_op *mx_ldap_table_find(struct mx_ldap_conn *conn, int msgid)
{
    for (struct mx_ldap_op *op = conn->table[mx_ldap_bucket(msgid)]; op != NULL; op = op->hnext) {
        if (op->msgid == msgid)
            return op;
    }
    return NULL;
}

static void mx_ldap_table_remove(struct mx_ldap_conn *conn, struct mx_ldap_op *op)
{
    struct mx_ldap_op **pp = &conn->table[mx_ldap_bucket(op->msgid)];

    while (*pp != NULL && *pp != op)
        pp = &(*pp)->hnext;
    if (*pp == op) {
        *pp = op->hnext;
        conn->n_sent--;
    }
    op->hnext = NULL;
}

/* ------------------------------------------------------------------ */
/* forward declarations (the state machine is mutually recursive) */

static void mx_ldap_dispatch(struct mx_ldap_op *op);
static void mx_ldap_pump(struct mx_ldap_server *server);
static void mx_ldap_conn_lost(struct mx_ldap_conn *conn, const char *reason, bool idle_ok);
static void mx_ldap_server_down(struct mx_ldap_server *server, const char *reason);
static void mx_ldap_conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void mx_ldap_conn_write_cb(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------ */
/* completion: always deferred to mx_ldap_done_cb */

static void mx_ldap_op_free(struct mx_ldap_op *op)
{
    if (op->timer != NULL)
        event_free(op->timer);
    free(op->base);
    free(op->filter);
    if (op->attrs != NULL) {
        for (size_t i = 0; op->attrs[i] != NULL; i++)
            free(op->attrs[i]);
        free(op->attrs);
    }
    free(op->cache_key);
    mx_ldap_entries_free(&op->entries, op->n_entries);
    free(op->dn);
    if (op->password != NULL) {
        explicit_bzero(op->password, op->password_len);
        free(op->password);
    }
    free(op->error);
    free(op);
}

/* Detach op from wherever it waits (queue, connection). The caller decides
 * what happens next. */
static void mx_ldap_op_detach(struct mx_ldap_op *op)
{
    if (op->where == MX_LDAP_OP_SENT && op->conn != NULL) {
        struct mx_ldap_conn *conn = op->conn;
        if (op->kind == MX_LDAP_OP_SEARCH)
            mx_ldap_table_remove(conn, op);
        else if (conn->user_op == op)
            conn->user_op = NULL; /* the bind stays in flight; its answer is dropped */
    }
    mx_ldap_list_unlink(op);
    op->conn = NULL;
    op->where = MX_LDAP_OP_NEW;
}

static void mx_ldap_complete(struct mx_ldap_op *op, enum mx_ldap_status status,
                             const char *uri, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void mx_ldap_complete(struct mx_ldap_op *op, enum mx_ldap_status status,
                             const char *uri, const char *fmt, ...)
{
    struct mx_ldap *ldap = op->ldap;

    mx_ldap_op_detach(op);
    if (op->timer != NULL)
        evtimer_del(op->timer);
    op->status = status;
    op->uri = uri;
    free(op->error);
    op->error = NULL;
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        op->error = mx_vasprintf(fmt, ap);
        va_end(ap);
    }
    if (status == MX_LDAP_UNAVAILABLE)
        ldap->stats.unavailable++;
    if (op->kind == MX_LDAP_OP_SEARCH && op->cache_key != NULL && !op->cached &&
        (status == MX_LDAP_FOUND || status == MX_LDAP_NOT_FOUND))
        mx_ldap_cache_put(ldap->cache, op->cache_key, op->entries,
                          status == MX_LDAP_FOUND ? op->n_entries : 0);
    if (op->password != NULL) {
        explicit_bzero(op->password, op->password_len);
        mx_free_ptr(&op->password);
    }
    op->where = MX_LDAP_OP_DONE;
    mx_ldap_list_append(&ldap->done, op);
    event_active(ldap->ev_done, EV_TIMEOUT, 0);
}

static void mx_ldap_free_all(struct mx_ldap *ldap);

static void mx_ldap_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mx_ldap *ldap = arg;
    struct mx_ldap_op *op;

    (void)fd;
    (void)what;
    /* Only what is done now runs in this round: an op finished by one of
     * these callbacks waits for the next round, so nothing starves. */
    mx_ldap_list_move_all(&ldap->running, &ldap->done);
    ldap->dispatching = true;
    while (!ldap->free_requested && (op = mx_ldap_list_pop(&ldap->running)) != NULL) {
        op->in_callback = true;
        if (op->kind == MX_LDAP_OP_SEARCH) {
            struct mx_ldap_result res = {
                .status = op->status,
                .n_entries = op->status == MX_LDAP_FOUND ? op->n_entries : 0,
                .entries = op->status == MX_LDAP_FOUND ? op->entries : NULL,
                .error = op->error,
                .uri = op->uri,
                .cached = op->cached,
                .truncated = op->truncated,
            };
            op->search_cb(&res, op->ctx);
        } else {
            op->bind_cb(op->status, op->error, op->ctx);
        }
        mx_ldap_op_free(op);
    }
    ldap->dispatching = false;
    if (ldap->free_requested)
        mx_ldap_free_all(ldap);
}

/* ------------------------------------------------------------------ */
/* our Sockbuf layer: notices writes that would block */

static int mx_ldap_sbio_setup(Sockbuf_IO_Desc *sbiod, void *arg)
{
    sbiod->sbiod_pvt = arg;
    return 0;
}

static int mx_ldap_sbio_remove(Sockbuf_IO_Desc *sbiod)
{
    sbiod->sbiod_pvt = NULL;
    return 0;
}

static int mx_ldap_sbio_ctrl(Sockbuf_IO_Desc *sbiod, int opt, void *arg)
{
    return LBER_SBIOD_CTRL_NEXT(sbiod, opt, arg);
}

static ber_slen_t mx_ldap_sbio_read(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
    return LBER_SBIOD_READ_NEXT(sbiod, buf, len);
}

static ber_slen_t mx_ldap_sbio_write(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
    struct mx_ldap_conn *conn = sbiod->sbiod_pvt;
    ber_slen_t n = LBER_SBIOD_WRITE_NEXT(sbiod, buf, len);

    if (conn != NULL) {
        conn->writes++;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!conn->write_blocked)
                conn->server->ldap->stats.write_stalls++;
            conn->write_blocked = true;
        }
        else if (n >= 0 && (ber_len_t)n == len)
            conn->write_blocked = false;
    }
    return n;
}

static Sockbuf_IO mx_ldap_sbio = {
    .sbi_setup = mx_ldap_sbio_setup,
    .sbi_remove = mx_ldap_sbio_remove,
    .sbi_ctrl = mx_ldap_sbio_ctrl,
    .sbi_read = mx_ldap_sbio_read,
    .sbi_write = mx_ldap_sbio_write,
    .sbi_close = NULL,
};

/* ------------------------------------------------------------------ */
/* connections */

static void mx_ldap_conn_close(struct mx_ldap_conn *conn)
{
    struct mx_ldap *ldap = conn->server->ldap;

    /* Events first: libldap may already have closed the descriptor, and a
     * new connection may get the same number. */
    if (conn->ev_read != NULL) {
        event_free(conn->ev_read);
        conn->ev_read = NULL;
    }
    if (conn->ev_write != NULL) {
        event_free(conn->ev_write);
        conn->ev_write = NULL;
    }
    if (conn->ev_connect != NULL) {
        event_free(conn->ev_connect);
        conn->ev_connect = NULL;
    }
    if (conn->ld != NULL) {
        /* Non-blocking socket: the UnbindRequest is best effort. */
        ldap_unbind_ext(conn->ld, NULL, NULL);
        conn->ld = NULL;
        ldap->stats.connections--;
    }
    conn->state = MX_LDAP_CONN_CLOSED;
    conn->gen++;
    conn->fd = -1;
    conn->io_pushed = false;
    conn->write_blocked = false;
    conn->user_busy = false;
    conn->user_op = NULL;
    conn->setup_msgid = -1;
    conn->user_msgid = -1;
}

/* Take every op that waits on conn into list (they are then NEW). */
static void mx_ldap_conn_collect(struct mx_ldap_conn *conn, struct mx_ldap_op_list *list)
{
    for (unsigned b = 0; b < MX_LDAP_CONN_BUCKETS; b++) {
        while (conn->table[b] != NULL) {
            struct mx_ldap_op *op = conn->table[b];
            mx_ldap_op_detach(op);
            mx_ldap_list_append(list, op);
        }
    }
    if (conn->user_op != NULL) {
        struct mx_ldap_op *op = conn->user_op;
        mx_ldap_op_detach(op);
        mx_ldap_list_append(list, op);
    }
}

static void mx_ldap_conn_arm_write(struct mx_ldap_conn *conn)
{
    if (conn->ev_write == NULL)
        conn->ev_write = event_new(conn->server->ldap->base, conn->fd, EV_WRITE,
                                   mx_ldap_conn_write_cb, conn);
    if (!event_pending(conn->ev_write, EV_WRITE, NULL))
        event_add(conn->ev_write, NULL);
}

/* The descriptor exists (connect started): learn it and add our layer. */
static int mx_ldap_conn_attach_fd(struct mx_ldap_conn *conn)
{
    Sockbuf *sb = NULL;
    int fd = -1;

    if (conn->io_pushed)
        return 0;
    if (ldap_get_option(conn->ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0)
        return -1;
    if (ldap_get_option(conn->ld, LDAP_OPT_SOCKBUF, &sb) != LDAP_OPT_SUCCESS || sb == NULL)
        return -1;
    if (ber_sockbuf_add_io(sb, &mx_ldap_sbio, LBER_SBIOD_LEVEL_APPLICATION + 10, conn) != 0)
        return -1;
    conn->fd = fd;
    conn->io_pushed = true;
    return 0;
}

/* The bind is on its way: from now on the socket is non-blocking and read
 * through the event loop. */
static int mx_ldap_conn_start_reading(struct mx_ldap_conn *conn)
{
    Sockbuf *sb = NULL;

    if (mx_ldap_conn_attach_fd(conn) < 0)
        return -1;
    if (ldap_get_option(conn->ld, LDAP_OPT_SOCKBUF, &sb) != LDAP_OPT_SUCCESS ||
        ber_sockbuf_ctrl(sb, LBER_SB_OPT_SET_NONBLOCK, (void *)1) < 0)
        return -1;
    if (conn->ev_write != NULL && event_pending(conn->ev_write, EV_WRITE, NULL))
        event_del(conn->ev_write);
    if (conn->ev_read == NULL) {
        conn->ev_read = event_new(conn->server->ldap->base, conn->fd, EV_READ | EV_PERSIST,
                                  mx_ldap_conn_read_cb, conn);
        event_add(conn->ev_read, NULL);
    }
    return 0;
}

/* Send (or re-send, after LDAP_X_CONNECTING) the service bind. */
static void mx_ldap_conn_send_setup_bind(struct mx_ldap_conn *conn)
{
    struct mx_ldap *ldap = conn->server->ldap;
    const char *pw = ldap->bind_password != NULL ? ldap->bind_password : "";
    struct berval cred = { .bv_len = strlen(pw), .bv_val = (char *)pw };
    int msgid = -1;
    int rc = ldap_sasl_bind(conn->ld, ldap->bind_dn != NULL ? ldap->bind_dn : "",
                            LDAP_SASL_SIMPLE, &cred, NULL, NULL, &msgid);

    if (rc == LDAP_SUCCESS) {
        /* libldap 2.5.13: the connect is still in progress, the write got
         * EAGAIN and the bind waits in LDAP_REQST_WRITING; the only sign is
         * ld_errno == LDAP_BUSY. Our layer was not there to see it. */
        int pending = LDAP_SUCCESS;
        ldap_get_option(conn->ld, LDAP_OPT_RESULT_CODE, &pending);
        conn->setup_msgid = msgid;
        conn->state = MX_LDAP_CONN_BINDING;
        if (mx_ldap_conn_start_reading(conn) < 0) {
            mx_ldap_conn_lost(conn, "cannot watch the connection socket", false);
            return;
        }
        if (pending == LDAP_BUSY) {
            mx_log(MX_LOG_DEBUG, "ldap.connect_in_progress", MX_KV("uri", conn->server->uri));
            conn->write_blocked = true;
            mx_ldap_conn_arm_write(conn);
        }
        return;
    }
    if (rc == LDAP_X_CONNECTING) {
        mx_log(MX_LOG_DEBUG, "ldap.connect_in_progress", MX_KV("uri", conn->server->uri));
        conn->state = MX_LDAP_CONN_CONNECTING;
        if (mx_ldap_conn_attach_fd(conn) < 0) {
            mx_ldap_conn_lost(conn, "connect in progress without a socket", false);
            return;
        }
        mx_ldap_conn_arm_write(conn);
        return;
    }
    mx_ldap_conn_lost(conn, ldap_err2string(rc), false);
}

static void mx_ldap_conn_connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mx_ldap_conn *conn = arg;
    const char *reason = conn->state == MX_LDAP_CONN_CONNECTING || conn->write_blocked
                             ? "connect timed out"
                             : "service bind got no answer in time";

    (void)fd;
    (void)what;
    mx_ldap_conn_lost(conn, reason, false);
}

/* mx_ldap_conn_open - start connecting conn (state CLOSED). Any failure is
 * handled here (the server is marked down); the caller must re-check state. */
static void mx_ldap_conn_open(struct mx_ldap_conn *conn)
{
    struct mx_ldap_server *server = conn->server;
    struct mx_ldap *ldap = server->ldap;
    int version = LDAP_VERSION3;
    struct timeval net_tv = mx_ldap_tv_ms(ldap->cfg.connect_timeout_ms);
    struct timeval connect_tv = net_tv;
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, server->uri);

    if (rc != LDAP_SUCCESS || ld == NULL) {
        mx_ldap_server_down(server, ldap_err2string(rc));
        return;
    }
    if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) != LDAP_OPT_SUCCESS ||
        ldap_set_option(ld, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON) != LDAP_OPT_SUCCESS ||
        ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &net_tv) != LDAP_OPT_SUCCESS ||
        ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
        ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON) != LDAP_OPT_SUCCESS) {
        ldap_unbind_ext(ld, NULL, NULL);
        mx_ldap_server_down(server, "cannot set libldap options");
        return;
    }
    conn->ld = ld;
    conn->state = MX_LDAP_CONN_CONNECTING;
    conn->last_rx_ms = mx_ldap_now_ms();
    ldap->stats.connections++;
    conn->ev_connect = evtimer_new(ldap->base, mx_ldap_conn_connect_timeout_cb, conn);
    evtimer_add(conn->ev_connect, &connect_tv);
    mx_log(MX_LOG_DEBUG, "ldap.connect", MX_KV("uri", server->uri),
           MX_KV("kind", conn->auth ? "auth" : "service"), MX_KVU("conn", conn->index));
    mx_ldap_conn_send_setup_bind(conn);
}

static void mx_ldap_conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mx_ldap_conn *conn = arg;

    (void)fd;
    (void)what;
    if (conn->state == MX_LDAP_CONN_CONNECTING) {
        mx_ldap_conn_send_setup_bind(conn);
        return;
    }
    if (conn->state == MX_LDAP_CONN_BINDING) {
        /* Writable after a non-blocking connect: did the connect fail? */
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) {
            mx_ldap_conn_lost(conn, strerror(soerr), false);
            return;
        }
    }
    /* A write is pending: ldap_result() flushes it now that the socket is
     * writable (wait4msg flushes the request in LDAP_REQST_WRITING) and
     * reads whatever arrived. */
    unsigned writes = conn->writes, gen = conn->gen;
    mx_ldap_conn_read_cb(conn->fd, EV_WRITE, conn);
    if (conn->gen == gen && conn->write_blocked && conn->writes == writes) {
        /* libldap did not even try: do not spin on a writable socket. */
        mx_log(MX_LOG_DEBUG, "ldap.flush_not_attempted", MX_KV("uri", conn->server->uri));
        conn->write_blocked = false;
        if (conn->ev_write != NULL)
            event_del(conn->ev_write);
    }
}

/* ------------------------------------------------------------------ */
/* servers */

static bool mx_ldap_server_up(const struct mx_ldap_server *server, uint64_t now)
{
    return now >= server->down_until_ms;
}

static struct mx_ldap_server *mx_ldap_pick_server(struct mx_ldap *ldap,
                                                  const struct mx_ldap_server *avoid)
{
    uint64_t now = mx_ldap_now_ms();

    for (size_t i = 0; i < ldap->n_servers; i++) {
        struct mx_ldap_server *s = &ldap->servers[i];
        if (s != avoid && mx_ldap_server_up(s, now))
            return s;
    }
    return NULL;
}

/* Retry op once elsewhere if its time allows, else answer UNAVAILABLE. */
static void mx_ldap_retry_or_fail(struct mx_ldap_op *op, struct mx_ldap_server *from,
                                  const char *reason)
{
    struct mx_ldap *ldap = op->ldap;
    uint64_t now = mx_ldap_now_ms();

    if (!op->retried && now + MX_LDAP_RETRY_MIN_MS < op->deadline_ms &&
        mx_ldap_pick_server(ldap, from) != NULL) {
        /* Entries the failed server already sent must not mix with the
         * next server's answer. */
        mx_ldap_entries_free(&op->entries, op->n_entries);
        op->n_entries = op->cap_entries = 0;
        op->truncated = false;
        op->retried = true;
        op->avoid = from;
        ldap->stats.retries++;
        mx_ldap_dispatch(op);
        return;
    }
    mx_ldap_complete(op, MX_LDAP_UNAVAILABLE, NULL, "%s: %s", from->uri, reason);
}

/* mx_ldap_server_down - mark server down for the back-off, close all its
 * connections and move (or fail) every operation that waited on it. */
static void mx_ldap_server_down(struct mx_ldap_server *server, const char *reason)
{
    struct mx_ldap *ldap = server->ldap;
    struct mx_ldap_op_list orphans = { 0 };
    struct mx_ldap_op *op;
    unsigned pool = ldap->cfg.pool_size, auth_pool = ldap->cfg.auth_pool_size;

    server->down_until_ms = mx_ldap_now_ms() + (uint64_t)ldap->cfg.down_backoff_s * 1000u;
    server->failed = true;
    ldap->stats.server_failures++;

    for (unsigned i = 0; i < pool; i++)
        mx_ldap_conn_collect(&server->conns[i], &orphans);
    for (unsigned i = 0; i < auth_pool; i++)
        mx_ldap_conn_collect(&server->auth_conns[i], &orphans);
    while ((op = mx_ldap_list_pop(&server->queue)) != NULL) {
        op->where = MX_LDAP_OP_NEW;
        mx_ldap_list_append(&orphans, op);
    }
    while ((op = mx_ldap_list_pop(&server->auth_queue)) != NULL) {
        op->where = MX_LDAP_OP_NEW;
        mx_ldap_list_append(&orphans, op);
    }
    for (unsigned i = 0; i < pool; i++)
        mx_ldap_conn_close(&server->conns[i]);
    for (unsigned i = 0; i < auth_pool; i++)
        mx_ldap_conn_close(&server->auth_conns[i]);

    mx_log(MX_LOG_WARNING, "ldap.server_down", MX_KV("uri", server->uri),
           MX_KV("error", reason), MX_KVU("backoff_s", ldap->cfg.down_backoff_s),
           MX_KVU("pending", orphans.count));

    while ((op = mx_ldap_list_pop(&orphans)) != NULL)
        mx_ldap_retry_or_fail(op, server, reason);
}

/* mx_ldap_conn_lost - conn broke (EOF, error, timeout). An idle service
 * connection closed by the server (idle timeout) is just closed when
 * idle_ok; anything else takes the whole URI down. */
static void mx_ldap_conn_lost(struct mx_ldap_conn *conn, const char *reason, bool idle_ok)
{
    struct mx_ldap_server *server = conn->server;

    if (idle_ok && conn->state == MX_LDAP_CONN_READY && conn->n_sent == 0 &&
        !conn->user_busy) {
        mx_log(MX_LOG_DEBUG, "ldap.idle_connection_closed", MX_KV("uri", server->uri),
               MX_KV("error", reason));
        mx_ldap_conn_close(conn);
        return;
    }
    mx_ldap_server_down(server, reason);
}

/* ------------------------------------------------------------------ */
/* sending */

/* Send search op on a READY service connection. */
static void mx_ldap_send_search(struct mx_ldap_conn *conn, struct mx_ldap_op *op)
{
    struct mx_ldap_server *server = conn->server;
    struct mx_ldap *ldap = server->ldap;
    struct timeval limit = { .tv_sec = (time_t)((ldap->cfg.op_timeout_ms + 999u) / 1000u) };
    int msgid = -1;
    int rc = ldap_search_ext(conn->ld, op->base, op->scope, op->filter, op->attrs, 0, NULL,
                             NULL, &limit, (int)op->size_limit, &msgid);

    switch (rc) {
    case LDAP_SUCCESS:
        op->msgid = msgid;
        op->conn = conn;
        op->where = MX_LDAP_OP_SENT;
        op->sent_ms = mx_ldap_now_ms();
        mx_ldap_table_add(conn, op);
        ldap->stats.sent++;
        if (conn->write_blocked)
            mx_ldap_conn_arm_write(conn);
        return;
    case LDAP_BUSY:
        /* An earlier request is still half written: wait for EV_WRITE. */
        conn->write_blocked = true;
        op->where = MX_LDAP_OP_QUEUED;
        mx_ldap_list_prepend(&server->queue, op);
        mx_ldap_conn_arm_write(conn);
        return;
    case LDAP_FILTER_ERROR:
    case LDAP_PARAM_ERROR:
    case LDAP_ENCODING_ERROR:
    case LDAP_INVALID_DN_SYNTAX:
    case LDAP_NO_MEMORY:
        mx_ldap_complete(op, MX_LDAP_ERROR, NULL, "cannot send search (filter %s): %s",
                         op->filter, ldap_err2string(rc));
        return;
    default: {
        bool idle = conn->n_sent == 0;
        op->where = MX_LDAP_OP_QUEUED;
        mx_ldap_list_prepend(&server->queue, op);
        if (idle) {
            /* Most likely closed by the server while idle: reconnect. */
            mx_ldap_conn_lost(conn, ldap_err2string(rc), true);
            if (conn->state == MX_LDAP_CONN_CLOSED && mx_ldap_server_up(server, mx_ldap_now_ms()))
                mx_ldap_conn_open(conn);
        } else {
            mx_ldap_conn_lost(conn, ldap_err2string(rc), false);
        }
        return;
    }
    }
}

/* Send bind check op on an idle READY auth connection. */
static void mx_ldap_send_user_bind(struct mx_ldap_conn *conn, struct mx_ldap_op *op)
{
    struct mx_ldap_server *server = conn->server;
    struct berval cred = { .bv_len = op->password_len, .bv_val = op->password };
    int msgid = -1;
    int rc = ldap_sasl_bind(conn->ld, op->dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, &msgid);

    switch (rc) {
    case LDAP_SUCCESS:
        op->msgid = msgid;
        op->conn = conn;
        op->where = MX_LDAP_OP_SENT;
        op->sent_ms = mx_ldap_now_ms();
        conn->user_busy = true;
        conn->user_msgid = msgid;
        conn->user_op = op;
        server->ldap->stats.sent++;
        if (conn->write_blocked)
            mx_ldap_conn_arm_write(conn);
        return;
    case LDAP_BUSY:
        conn->write_blocked = true;
        op->where = MX_LDAP_OP_QUEUED;
        mx_ldap_list_prepend(&server->auth_queue, op);
        mx_ldap_conn_arm_write(conn);
        return;
    case LDAP_PARAM_ERROR:
    case LDAP_ENCODING_ERROR:
    case LDAP_NO_MEMORY:
        mx_ldap_complete(op, MX_LDAP_ERROR, NULL, "cannot send bind: %s", ldap_err2string(rc));
        return;
    default:
        op->where = MX_LDAP_OP_QUEUED;
        mx_ldap_list_prepend(&server->auth_queue, op);
        mx_ldap_conn_lost(conn, ldap_err2string(rc), false);
        return;
    }
}

static bool mx_ldap_conn_can_search(const struct mx_ldap_conn *conn, unsigned max_ops)
{
    return conn->state == MX_LDAP_CONN_READY && !conn->write_blocked && conn->n_sent < max_ops;
}

/* Pick the next usable connection round-robin, or NULL. */
static struct mx_ldap_conn *mx_ldap_pick_conn(struct mx_ldap_server *server, bool auth)
{
    struct mx_ldap *ldap = server->ldap;
    unsigned n = auth ? ldap->cfg.auth_pool_size : ldap->cfg.pool_size;
    unsigned *rr = auth ? &server->auth_rr : &server->rr;
    struct mx_ldap_conn *pool = auth ? server->auth_conns : server->conns;

    for (unsigned i = 0; i < n; i++) {
        struct mx_ldap_conn *c = &pool[(*rr + i) % n];
        bool ok = auth ? c->state == MX_LDAP_CONN_READY && !c->user_busy && !c->write_blocked
                       : mx_ldap_conn_can_search(c, ldap->cfg.max_ops_per_conn);
        if (ok) {
            *rr = (*rr + i + 1) % n;
            return c;
        }
    }
    return NULL;
}

/* Open closed connections while more ops wait than connections are being
 * set up (the pool grows with the load, up to its size). */
static void mx_ldap_grow_pool(struct mx_ldap_server *server, bool auth)
{
    struct mx_ldap *ldap = server->ldap;
    unsigned n = auth ? ldap->cfg.auth_pool_size : ldap->cfg.pool_size;
    struct mx_ldap_conn *pool = auth ? server->auth_conns : server->conns;
    struct mx_ldap_op_list *queue = auth ? &server->auth_queue : &server->queue;
    size_t opening = 0;

    for (unsigned i = 0; i < n; i++) {
        if (pool[i].state == MX_LDAP_CONN_CONNECTING || pool[i].state == MX_LDAP_CONN_BINDING)
            opening++;
    }
    for (unsigned i = 0; i < n && queue->count > opening; i++) {
        if (pool[i].state != MX_LDAP_CONN_CLOSED)
            continue;
        if (!mx_ldap_server_up(server, mx_ldap_now_ms()))
            return;
        mx_ldap_conn_open(&pool[i]);
        if (!mx_ldap_server_up(server, mx_ldap_now_ms()))
            return; /* it failed: the queue went elsewhere */
        opening++;
    }
}

/* mx_ldap_pump - send what waits on server's queues over usable connections
 * and open more connections if needed. */
static void mx_ldap_pump(struct mx_ldap_server *server)
{
    struct mx_ldap_conn *conn;

    while (server->queue.head != NULL && (conn = mx_ldap_pick_conn(server, false)) != NULL)
        mx_ldap_send_search(conn, mx_ldap_list_pop(&server->queue));
    if (server->queue.head != NULL)
        mx_ldap_grow_pool(server, false);

    while (server->auth_queue.head != NULL && (conn = mx_ldap_pick_conn(server, true)) != NULL)
        mx_ldap_send_user_bind(conn, mx_ldap_list_pop(&server->auth_queue));
    if (server->auth_queue.head != NULL)
        mx_ldap_grow_pool(server, true);
}

static void mx_ldap_op_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mx_ldap_op *op = arg;
    struct mx_ldap_conn *conn = op->where == MX_LDAP_OP_SENT ? op->conn : NULL;
    struct mx_ldap *ldap = op->ldap;
    char reason[96];

    (void)fd;
    (void)what;
    ldap->stats.timeouts++;
    snprintf(reason, sizeof reason, "no answer within %u ms", ldap->cfg.op_timeout_ms);
    if (conn == NULL) {
        mx_ldap_complete(op, MX_LDAP_UNAVAILABLE, NULL, "%s (waiting for a connection)",
                         reason);
        return;
    }
    struct mx_ldap_server *server = conn->server;
    /* Nothing at all arrived on this connection since the request left: the
     * server (or the path to it) hangs. */
    bool hung = conn->last_rx_ms < op->sent_ms || conn->state != MX_LDAP_CONN_READY;
    bool was_bind = op->kind == MX_LDAP_OP_BIND;
    int msgid = op->msgid;

    mx_ldap_complete(op, MX_LDAP_UNAVAILABLE, server->uri, "%s: %s", server->uri, reason);
    if (!was_bind && !conn->write_blocked && conn->ld != NULL)
        ldap_abandon_ext(conn->ld, msgid, NULL, NULL);
    /* A bind cannot be abandoned, and a server that does not answer a bind
     * in time is not healthy either. */
    if (hung || was_bind) {
        mx_log(MX_LOG_WARNING, "ldap.server_hung", MX_KV("uri", server->uri),
               MX_KVU("timeout_ms", ldap->cfg.op_timeout_ms));
        mx_ldap_conn_lost(conn, reason, false);
    }
}

static void mx_ldap_dispatch(struct mx_ldap_op *op)
{
    struct mx_ldap *ldap = op->ldap;
    struct mx_ldap_server *server = mx_ldap_pick_server(ldap, op->avoid);

    if (server == NULL) {
        if (ldap->n_servers > 1)
            mx_ldap_complete(op, MX_LDAP_UNAVAILABLE, NULL,
                             "all %zu directory servers are down", ldap->n_servers);
        else
            mx_ldap_complete(op, MX_LDAP_UNAVAILABLE, NULL, "directory server %s is down",
                             ldap->servers[0].uri);
        return;
    }
    if (op->timer == NULL) {
        uint64_t now = mx_ldap_now_ms();
        struct timeval tv = mx_ldap_tv_ms(op->deadline_ms > now ? op->deadline_ms - now : 0);
        op->timer = evtimer_new(ldap->base, mx_ldap_op_timeout_cb, op);
        evtimer_add(op->timer, &tv);
    }
    op->where = MX_LDAP_OP_QUEUED;
    if (op->kind == MX_LDAP_OP_SEARCH) {
        struct mx_ldap_conn *conn = mx_ldap_pick_conn(server, false);
        if (conn != NULL && server->queue.head == NULL) {
            mx_ldap_send_search(conn, op);
            return;
        }
        mx_ldap_list_append(&server->queue, op);
    } else {
        mx_ldap_list_append(&server->auth_queue, op);
    }
    mx_ldap_pump(server);
}

/* ------------------------------------------------------------------ */
/* receiving */

static void mx_ldap_op_add_entry(struct mx_ldap_op *op, LDAP *ld, LDAPMessage *msg)
{
    struct mx_ldap_entry *e;
    BerElement *ber = NULL;
    char *dn;

    if (op->size_limit > 0 && op->n_entries >= op->size_limit) {
        op->truncated = true;
        return;
    }
    if (op->n_entries == op->cap_entries) {
        op->cap_entries = op->cap_entries ? op->cap_entries * 2 : 4;
        op->entries = mx_reallocarray(op->entries, op->cap_entries, sizeof *op->entries);
    }
    e = &op->entries[op->n_entries++];
    memset(e, 0, sizeof *e);
    dn = ldap_get_dn(ld, msg);
    e->dn = mx_strdup(dn != NULL ? dn : "");
    ldap_memfree(dn);

    size_t cap_attrs = 0;
    for (char *name = ldap_first_attribute(ld, msg, &ber); name != NULL;
         name = ldap_next_attribute(ld, msg, ber)) {
        struct berval **vals = ldap_get_values_len(ld, msg, name);
        int n = vals != NULL ? ldap_count_values_len(vals) : 0;
        struct mx_ldap_attr *attr;

        if (e->n_attrs == cap_attrs) {
            cap_attrs = cap_attrs ? cap_attrs * 2 : 8;
            e->attrs = mx_reallocarray(e->attrs, cap_attrs, sizeof *e->attrs);
        }
        attr = &e->attrs[e->n_attrs++];
        attr->name = mx_strdup(name);
        attr->n_values = n > 0 ? (size_t)n : 0;
        attr->values = n > 0 ? mx_calloc((size_t)n, sizeof *attr->values) : NULL;
        for (int i = 0; i < n; i++)
            mx_ldap_value_set(&attr->values[i], vals[i]->bv_val, vals[i]->bv_len);
        ldap_value_free_len(vals);
        ldap_memfree(name);
    }
    if (ber != NULL)
        ber_free(ber, 0);
}

/* Server result codes that mean "ask again later / elsewhere". */
static bool mx_ldap_rc_transient(int err)
{
    switch (err) {
    case LDAP_BUSY:
    case LDAP_UNAVAILABLE:
    case LDAP_TIMELIMIT_EXCEEDED:
    case LDAP_ADMINLIMIT_EXCEEDED:
    case LDAP_UNWILLING_TO_PERFORM:
    case LDAP_OTHER:
    case LDAP_LOOP_DETECT:
        return true;
    default:
        return false;
    }
}

static void mx_ldap_finish_search(struct mx_ldap_conn *conn, struct mx_ldap_op *op,
                                  LDAPMessage *msg)
{
    struct mx_ldap_server *server = conn->server;
    int err = LDAP_OTHER;
    char *errmsg = NULL;
    int rc = ldap_parse_result(conn->ld, msg, &err, NULL, &errmsg, NULL, NULL, 1);
    const char *detail = errmsg != NULL && errmsg[0] != '\0' ? errmsg : "";

    if (rc != LDAP_SUCCESS) {
        mx_ldap_complete(op, MX_LDAP_ERROR, server->uri, "%s: unparsable search result: %s",
                         server->uri, ldap_err2string(rc));
    } else if (err == LDAP_SUCCESS || err == LDAP_SIZELIMIT_EXCEEDED) {
        if (err == LDAP_SIZELIMIT_EXCEEDED)
            op->truncated = true;
        mx_ldap_complete(op, op->n_entries > 0 ? MX_LDAP_FOUND : MX_LDAP_NOT_FOUND,
                         server->uri, NULL);
    } else if (err == LDAP_NO_SUCH_OBJECT && op->scope == LDAP_SCOPE_BASE) {
        mx_ldap_complete(op, MX_LDAP_NOT_FOUND, server->uri, NULL);
    } else if (err == LDAP_NO_SUCH_OBJECT) {
        /* The search BASE is missing: a wrong base_dn or a replica being
         * rebuilt. Saying NOT_FOUND would bounce every message. */
        mx_log(MX_LOG_ERR, "ldap.search_base_missing", MX_KV("uri", server->uri),
               MX_KV("base", op->base));
        mx_ldap_complete(op, MX_LDAP_ERROR, server->uri, "%s: search base %s does not exist",
                         server->uri, op->base);
    } else if (mx_ldap_rc_transient(err)) {
        char reason[256];
        snprintf(reason, sizeof reason, "%s%s%s", ldap_err2string(err), detail[0] ? ": " : "",
                 detail);
        mx_ldap_op_detach(op);
        /* The server answers, so it stays up; the op may try another. */
        mx_ldap_retry_or_fail(op, server, reason);
    } else {
        mx_ldap_complete(op, MX_LDAP_ERROR, server->uri, "%s: search %s failed: %s%s%s",
                         server->uri, op->filter, ldap_err2string(err), detail[0] ? ": " : "",
                         detail);
    }
    ldap_memfree(errmsg);
}

static void mx_ldap_finish_user_bind(struct mx_ldap_conn *conn, LDAPMessage *msg)
{
    struct mx_ldap_server *server = conn->server;
    struct mx_ldap_op *op = conn->user_op;
    int err = LDAP_OTHER;
    char *errmsg = NULL;
    int rc = ldap_parse_result(conn->ld, msg, &err, NULL, &errmsg, NULL, NULL, 1);

    conn->user_busy = false;
    conn->user_op = NULL;
    conn->user_msgid = -1;
    if (op != NULL) {
        op->where = MX_LDAP_OP_NEW;
        op->conn = NULL;
        if (rc != LDAP_SUCCESS) {
            mx_ldap_complete(op, MX_LDAP_ERROR, server->uri, "%s: unparsable bind result: %s",
                             server->uri, ldap_err2string(rc));
        } else if (err == LDAP_SUCCESS) {
            mx_ldap_complete(op, MX_LDAP_OK, server->uri, NULL);
        } else if (err == LDAP_INVALID_CREDENTIALS || err == LDAP_NO_SUCH_OBJECT ||
                   err == LDAP_INAPPROPRIATE_AUTH || err == LDAP_INVALID_DN_SYNTAX ||
                   err == LDAP_CONSTRAINT_VIOLATION) {
            mx_ldap_complete(op, MX_LDAP_INVALID_CREDENTIALS, server->uri, NULL);
        } else if (err == LDAP_BUSY || err == LDAP_UNAVAILABLE || err == LDAP_OTHER) {
            mx_ldap_retry_or_fail(op, server, ldap_err2string(err));
        } else {
            mx_ldap_complete(op, MX_LDAP_ERROR, server->uri, "%s: bind failed: %s%s%s",
                             server->uri, ldap_err2string(err),
                             errmsg != NULL && errmsg[0] ? ": " : "",
                             errmsg != NULL ? errmsg : "");
        }
    }
    ldap_memfree(errmsg);
}

static void mx_ldap_finish_setup_bind(struct mx_ldap_conn *conn, LDAPMessage *msg)
{
    struct mx_ldap_server *server = conn->server;
    struct mx_ldap *ldap = server->ldap;
    int err = LDAP_OTHER;
    char *errmsg = NULL;
    int rc = ldap_parse_result(conn->ld, msg, &err, NULL, &errmsg, NULL, NULL, 1);

    if (rc != LDAP_SUCCESS || err != LDAP_SUCCESS) {
        char reason[256];
        snprintf(reason, sizeof reason, "service bind as %s refused: %s%s%s",
                 ldap->bind_dn != NULL ? ldap->bind_dn : "(anonymous)",
                 ldap_err2string(rc != LDAP_SUCCESS ? rc : err),
                 errmsg != NULL && errmsg[0] ? ": " : "", errmsg != NULL ? errmsg : "");
        ldap_memfree(errmsg);
        /* A configuration error, not a network blip: say so loudly. */
        mx_log(MX_LOG_ERR, "ldap.service_bind_failed", MX_KV("uri", server->uri),
               MX_KV("bind_dn", ldap->bind_dn), MX_KV("error", reason));
        mx_ldap_conn_lost(conn, reason, false);
        return;
    }
    ldap_memfree(errmsg);
    conn->state = MX_LDAP_CONN_READY;
    if (conn->ev_connect != NULL) {
        event_free(conn->ev_connect);
        conn->ev_connect = NULL;
    }
    if (server->failed) {
        server->failed = false;
        mx_log(MX_LOG_NOTICE, "ldap.server_up", MX_KV("uri", server->uri));
    }
    mx_ldap_pump(server);
}

/* Handle one message (conn may be closed by the time this returns). */
static void mx_ldap_conn_handle(struct mx_ldap_conn *conn, LDAPMessage *msg)
{
    int msgid = ldap_msgid(msg);
    int type = ldap_msgtype(msg);
    struct mx_ldap_op *op;

    if (msgid == 0) {
        /* Unsolicited notification (RFC 4511 4.4.1: notice of disconnection). */
        ldap_msgfree(msg);
        mx_ldap_conn_lost(conn, "server sent a notice of disconnection", false);
        return;
    }
    if (conn->state == MX_LDAP_CONN_BINDING && msgid == conn->setup_msgid &&
        type == LDAP_RES_BIND) {
        mx_ldap_finish_setup_bind(conn, msg);
        return;
    }
    if (conn->auth) {
        if (conn->user_busy && msgid == conn->user_msgid && type == LDAP_RES_BIND) {
            mx_ldap_finish_user_bind(conn, msg);
            mx_ldap_pump(conn->server);
        } else {
            ldap_msgfree(msg);
        }
        return;
    }
    op = mx_ldap_table_find(conn, msgid);
    if (op == NULL) {
        /* Cancelled or timed out without an abandon. */
        ldap_msgfree(msg);
        return;
    }
    switch (type) {
    case LDAP_RES_SEARCH_ENTRY:
        mx_ldap_op_add_entry(op, conn->ld, msg);
        ldap_msgfree(msg);
        break;
    case LDAP_RES_SEARCH_REFERENCE:
        ldap_msgfree(msg); /* referrals are not followed */
        break;
    case LDAP_RES_SEARCH_RESULT:
        mx_ldap_finish_search(conn, op, msg);
        mx_ldap_pump(conn->server);
        break;
    default:
        ldap_msgfree(msg);
        mx_ldap_complete(op, MX_LDAP_ERROR, conn->server->uri,
                         "%s: unexpected message type 0x%x for a search", conn->server->uri,
                         (unsigned)type);
        break;
    }
}

static void mx_ldap_conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mx_ldap_conn *conn = arg;
    LDAP *ld = conn->ld;
    unsigned gen = conn->gen;
    unsigned handled = 0;

    while (conn->gen == gen && ld != NULL) {
        struct timeval zero = { 0, 0 };
        LDAPMessage *msg = NULL;
        int rc = ldap_result(ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg);

        if (rc == 0)
            break;
        if (rc < 0) {
            int err = LDAP_SERVER_DOWN;
            ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &err);
            mx_ldap_conn_lost(conn, ldap_err2string(err), true);
            return;
        }
        handled++;
        conn->last_rx_ms = mx_ldap_now_ms();
        mx_ldap_conn_handle(conn, msg);
    }
    if (conn->gen != gen || ld == NULL)
        return;
    if (handled == 0 && (what & EV_READ)) {
        /* Readable but libldap had nothing: make sure it is not an EOF that
         * libldap did not look at (it only polls sockets it expects data on). */
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            mx_ldap_conn_lost(conn, n == 0 ? "connection closed by server" : strerror(errno),
                              true);
            return;
        }
    }
    if (conn->write_blocked)
        mx_ldap_conn_arm_write(conn);
    else if (what & EV_WRITE)
        mx_ldap_pump(conn->server);
}

/* ------------------------------------------------------------------ */
/* public API */

void mx_ldap_config_init(struct mx_ldap_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->pool_size = 2;
    cfg->auth_pool_size = 2;
    cfg->max_ops_per_conn = 64;
    cfg->op_timeout_ms = 3000;
    cfg->connect_timeout_ms = 2000;
    cfg->cache_ttl_s = 60;
    cfg->cache_negative_ttl_s = 30;
    cfg->cache_max_entries = 10000;
    cfg->down_backoff_s = 10;
}

/* A host libldap can use without asking DNS. */
static bool mx_ldap_host_is_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    if (host == NULL || host[0] == '\0' || strcasecmp(host, "localhost") == 0)
        return true;
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static int mx_ldap_parse_uris(struct mx_ldap *ldap, const char **error_r)
{
    static const char sep[] = " \t\r\n,";
    char *copy = mx_strdup(ldap->uris), *save = NULL;
    size_t cap = 0;

    for (char *tok = strtok_r(copy, sep, &save); tok != NULL; tok = strtok_r(NULL, sep, &save)) {
        LDAPURLDesc *lud = NULL;

        if (ldap_url_parse(tok, &lud) != LDAP_URL_SUCCESS) {
            mx_log(MX_LOG_ERR, "ldap.bad_uri", MX_KV("uri", tok));
            *error_r = "invalid LDAP URI (expected ldap://host[:port], ldaps:// or ldapi://)";
            free(copy);
            return -1;
        }
        if (strcasecmp(lud->lud_scheme, "ldapi") != 0 &&
            !mx_ldap_host_is_literal(lud->lud_host))
            mx_log(MX_LOG_WARNING, "ldap.uri_needs_dns", MX_KV("uri", tok),
                   MX_KV("hint", "libldap resolves host names with a blocking getaddrinfo() "
                                 "on every (re)connect; use an IP address or /etc/hosts"));
        if (strcasecmp(lud->lud_scheme, "ldaps") == 0)
            mx_log(MX_LOG_NOTICE, "ldap.tls_handshake_blocks", MX_KV("uri", tok),
                   MX_KV("hint", "the TLS handshake on (re)connect runs in blocking mode, "
                                 "bounded by connect_timeout_ms"));
        ldap_free_urldesc(lud);
        if (ldap->n_servers == cap) {
            cap = cap ? cap * 2 : 4;
            ldap->servers = mx_reallocarray(ldap->servers, cap, sizeof *ldap->servers);
        }
        struct mx_ldap_server *s = &ldap->servers[ldap->n_servers];
        memset(s, 0, sizeof *s);
        s->uri = mx_strdup(tok);
        s->index = (unsigned)ldap->n_servers++;
    }
    free(copy);
    if (ldap->n_servers == 0) {
        *error_r = "no LDAP URI configured";
        return -1;
    }
    return 0;
}

struct mx_ldap *mx_ldap_new(struct event_base *base, const struct mx_ldap_config *cfg,
                            const char **error_r)
{
    struct mx_ldap *ldap;

    if (cfg->uris == NULL || cfg->uris[0] == '\0') {
        *error_r = "no LDAP URI configured";
        return NULL;
    }
    if (cfg->base_dn == NULL || cfg->base_dn[0] == '\0') {
        *error_r = "no LDAP base DN configured";
        return NULL;
    }
    if (cfg->bind_dn != NULL && cfg->bind_dn[0] != '\0' &&
        (cfg->bind_password == NULL || cfg->bind_password[0] == '\0')) {
        /* An empty password makes the bind an unauthenticated (anonymous)
         * one that succeeds, and then every lookup finds nothing: 550s. */
        *error_r = "LDAP bind DN configured without a password";
        return NULL;
    }
    if (cfg->pool_size < 1 || cfg->pool_size > MX_LDAP_MAX_POOL || cfg->auth_pool_size < 1 ||
        cfg->auth_pool_size > MX_LDAP_MAX_POOL) {
        *error_r = "LDAP pool sizes must be between 1 and 64";
        return NULL;
    }
    if (cfg->max_ops_per_conn < 1 || cfg->op_timeout_ms < 1 || cfg->connect_timeout_ms < 1) {
        *error_r = "LDAP max_ops_per_conn, op_timeout_ms and connect_timeout_ms must be > 0";
        return NULL;
    }

    ldap = mx_calloc(1, sizeof *ldap);
    ldap->base = base;
    ldap->cfg = *cfg;
    ldap->uris = mx_strdup(cfg->uris);
    ldap->base_dn = mx_strdup(cfg->base_dn);
    if (cfg->bind_dn != NULL && cfg->bind_dn[0] != '\0') {
        ldap->bind_dn = mx_strdup(cfg->bind_dn);
        ldap->bind_password = mx_strdup(cfg->bind_password);
    }
    ldap->cfg.uris = ldap->uris;
    ldap->cfg.base_dn = ldap->base_dn;
    ldap->cfg.bind_dn = ldap->bind_dn;
    ldap->cfg.bind_password = NULL; /* only ldap->bind_password holds it */
    if (mx_ldap_parse_uris(ldap, error_r) < 0) {
        mx_ldap_free_all(ldap);
        return NULL;
    }
    for (size_t i = 0; i < ldap->n_servers; i++) {
        struct mx_ldap_server *s = &ldap->servers[i];
        s->ldap = ldap;
        s->conns = mx_calloc(cfg->pool_size, sizeof *s->conns);
        s->auth_conns = mx_calloc(cfg->auth_pool_size, sizeof *s->auth_conns);
        for (unsigned c = 0; c < cfg->pool_size; c++) {
            s->conns[c].server = s;
            s->conns[c].index = c;
            s->conns[c].fd = -1;
        }
        for (unsigned c = 0; c < cfg->auth_pool_size; c++) {
            s->auth_conns[c].server = s;
            s->auth_conns[c].auth = true;
            s->auth_conns[c].index = c;
            s->auth_conns[c].fd = -1;
        }
    }
    if (cfg->cache_max_entries > 0 && (cfg->cache_ttl_s > 0 || cfg->cache_negative_ttl_s > 0))
        ldap->cache = mx_ldap_cache_new(cfg->cache_max_entries, cfg->cache_ttl_s,
                                        cfg->cache_negative_ttl_s, NULL, NULL);
    ldap->ev_done = event_new(base, -1, 0, mx_ldap_done_cb, ldap);
    if (ldap->bind_dn == NULL)
        mx_log(MX_LOG_NOTICE, "ldap.anonymous_service",
               MX_KV("hint", "no bind_dn: lookups run anonymously; if the directory hides "
                             "entries from anonymous, every address looks unknown"));
    return ldap;
}

static void mx_ldap_drop_list(struct mx_ldap_op_list *list)
{
    struct mx_ldap_op *op;

    while ((op = mx_ldap_list_pop(list)) != NULL)
        mx_ldap_op_free(op);
}

static void mx_ldap_free_all(struct mx_ldap *ldap)
{
    for (size_t i = 0; i < ldap->n_servers; i++) {
        struct mx_ldap_server *s = &ldap->servers[i];
        struct mx_ldap_op_list dropped = { 0 };
        if (s->conns != NULL) {
            for (unsigned c = 0; c < ldap->cfg.pool_size; c++) {
                mx_ldap_conn_collect(&s->conns[c], &dropped);
                mx_ldap_conn_close(&s->conns[c]);
            }
        }
        if (s->auth_conns != NULL) {
            for (unsigned c = 0; c < ldap->cfg.auth_pool_size; c++) {
                mx_ldap_conn_collect(&s->auth_conns[c], &dropped);
                mx_ldap_conn_close(&s->auth_conns[c]);
            }
        }
        mx_ldap_drop_list(&dropped);
        mx_ldap_drop_list(&s->queue);
        mx_ldap_drop_list(&s->auth_queue);
        free(s->conns);
        free(s->auth_conns);
        free(s->uri);
    }
    mx_ldap_drop_list(&ldap->done);
    mx_ldap_drop_list(&ldap->running);
    if (ldap->ev_done != NULL)
        event_free(ldap->ev_done);
    mx_ldap_cache_free(&ldap->cache);
    free(ldap->servers);
    free(ldap->uris);
    free(ldap->base_dn);
    free(ldap->bind_dn);
    if (ldap->bind_password != NULL) {
        explicit_bzero(ldap->bind_password, strlen(ldap->bind_password));
        free(ldap->bind_password);
    }
    free(ldap);
}

void mx_ldap_free(struct mx_ldap **ldapp)
{
    struct mx_ldap *ldap = *ldapp;

    if (ldap == NULL)
        return;
    *ldapp = NULL;
    if (ldap->dispatching) {
        /* Inside a callback: mx_ldap_done_cb frees when it returns. */
        ldap->free_requested = true;
        return;
    }
    mx_ldap_free_all(ldap);
}

static struct mx_ldap_op *mx_ldap_op_new(struct mx_ldap *ldap, enum mx_ldap_op_kind kind,
                                         void *ctx)
{
    struct mx_ldap_op *op = mx_calloc(1, sizeof *op);

    op->ldap = ldap;
    op->kind = kind;
    op->ctx = ctx;
    op->msgid = -1;
    op->deadline_ms = mx_ldap_now_ms() + ldap->cfg.op_timeout_ms;
    return op;
}

struct mx_ldap_op *mx_ldap_search(struct mx_ldap *ldap, const struct mx_ldap_query *query,
                                  mx_ldap_search_fn *cb, void *ctx)
{
    struct mx_ldap_op *op = mx_ldap_op_new(ldap, MX_LDAP_OP_SEARCH, ctx);

    ldap->stats.searches++;
    op->search_cb = cb;
    op->base = mx_strdup(query->base != NULL ? query->base : ldap->base_dn);
    switch (query->scope) {
    case MX_LDAP_SCOPE_BASE: op->scope = LDAP_SCOPE_BASE; break;
    case MX_LDAP_SCOPE_ONE: op->scope = LDAP_SCOPE_ONELEVEL; break;
    default: op->scope = LDAP_SCOPE_SUBTREE; break;
    }
    op->size_limit = query->size_limit;
    if (query->filter == NULL || query->filter[0] == '\0') {
        op->filter = mx_strdup("");
        mx_ldap_complete(op, MX_LDAP_ERROR, NULL, "empty LDAP filter");
        return op;
    }
    op->filter = mx_strdup(query->filter);
    if (strstr(op->filter, "\\00") != NULL) {
        /* An assertion value with a NUL byte. No value we look up holds one,
         * but slapd's IA5String normalizer (mail!) stops at the NUL:
         * (mail=alice@example.test\00evil) matches alice. Never ask. */
        mx_log(MX_LOG_WARNING, "ldap.filter_nul_refused", MX_KV("filter", op->filter));
        mx_ldap_complete(op, MX_LDAP_NOT_FOUND, NULL, NULL);
        return op;
    }
    if (query->attrs != NULL) {
        size_t n = 0;
        while (query->attrs[n] != NULL)
            n++;
        op->attrs = mx_calloc(n + 1, sizeof *op->attrs);
        for (size_t i = 0; i < n; i++)
            op->attrs[i] = mx_strdup(query->attrs[i]);
    }
    if (query->use_cache && ldap->cache != NULL) {
        struct mx_ldap_entry *entries = NULL;
        size_t n = 0;
        op->cache_key = mx_ldap_cache_key(op->base, op->scope, op->filter,
                                          (const char *const *)op->attrs, op->size_limit);
        switch (mx_ldap_cache_get(ldap->cache, op->cache_key, &entries, &n)) {
        case MX_LDAP_CACHE_POSITIVE:
            op->entries = entries;
            op->n_entries = op->cap_entries = n;
            op->cached = true;
            mx_ldap_complete(op, MX_LDAP_FOUND, NULL, NULL);
            return op;
        case MX_LDAP_CACHE_NEGATIVE:
            op->cached = true;
            mx_ldap_complete(op, MX_LDAP_NOT_FOUND, NULL, NULL);
            return op;
        case MX_LDAP_CACHE_MISS:
            break;
        }
    }
    mx_ldap_dispatch(op);
    return op;
}

struct mx_ldap_op *mx_ldap_bind_check(struct mx_ldap *ldap, const char *dn,
                                      const char *password, size_t password_len,
                                      mx_ldap_bind_fn *cb, void *ctx)
{
    struct mx_ldap_op *op = mx_ldap_op_new(ldap, MX_LDAP_OP_BIND, ctx);

    ldap->stats.binds++;
    op->bind_cb = cb;
    op->dn = mx_strdup(dn != NULL ? dn : "");
    /* RFC 4513 5.1.2: a simple bind with a name and an empty password is an
     * unauthenticated bind, which servers accept. Never let one through. */
    if (password == NULL || password_len == 0) {
        mx_ldap_complete(op, MX_LDAP_INVALID_CREDENTIALS, NULL, "empty password refused");
        return op;
    }
    if (memchr(password, '\0', password_len) != NULL) {
        mx_ldap_complete(op, MX_LDAP_INVALID_CREDENTIALS, NULL, "password contains NUL");
        return op;
    }
    if (op->dn[0] == '\0') {
        mx_ldap_complete(op, MX_LDAP_INVALID_CREDENTIALS, NULL, "empty DN refused");
        return op;
    }
    op->password = mx_memdup(password, password_len);
    op->password_len = password_len;
    mx_ldap_dispatch(op);
    return op;
}

void mx_ldap_op_cancel(struct mx_ldap_op **opp)
{
    struct mx_ldap_op *op = *opp;

    if (op == NULL)
        return;
    *opp = NULL;
    if (op->in_callback)
        return; /* freed when its callback returns */
    if (op->where == MX_LDAP_OP_SENT && op->kind == MX_LDAP_OP_SEARCH && op->conn != NULL) {
        struct mx_ldap_conn *conn = op->conn;
        int msgid = op->msgid;
        mx_ldap_op_detach(op);
        /* Tell the server to stop; its answer, if any, is dropped. */
        if (conn->ld != NULL && !conn->write_blocked)
            ldap_abandon_ext(conn->ld, msgid, NULL, NULL);
        mx_ldap_pump(conn->server);
    } else {
        mx_ldap_op_detach(op);
    }
    mx_ldap_op_free(op);
}

void mx_ldap_get_stats(const struct mx_ldap *ldap, struct mx_ldap_stats *stats_r)
{
    *stats_r = ldap->stats;
    if (ldap->cache != NULL) {
        struct mx_ldap_cache_stats cs;
        mx_ldap_cache_get_stats(ldap->cache, &cs);
        stats_r->cache_hits = cs.hits;
        stats_r->cache_negative_hits = cs.negative_hits;
        stats_r->cache_misses = cs.misses;
        stats_r->cache_evictions = cs.evictions;
        stats_r->cache_expired = cs.expired;
        stats_r->cache_entries = cs.entries;
    }
}
