/* mx_conn - see mx_conn.h. */
#include "mx_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/err.h>

#include "mx_alloc.h"
#include "mx_deflate.h"
#include "mx_log.h"
#include "mx_net.h"
#include "mx_proxy_v2.h"
#include "mx_tls.h"

/* How long a closing connection may take to hand its last reply to a
 * client that does not read: polls x interval. */
#define CONN_FLUSH_POLLS 200
#define CONN_FLUSH_POLL_MS 10

enum conn_state {
    CONN_PROXY,   /* waiting for the PROXY v2 header */
    CONN_OPEN,
    CONN_FLUSHING, /* close after the output is sent */
    CONN_CLOSED,
};

struct mx_conn {
    struct mx_conn_config cfg;
    struct mx_conn *reg_prev, *reg_next; /* in cfg.registry */
    const struct mx_conn_ops *ops;
    void *ctx;
    char sid[32];
    char role[16];
    enum conn_state state;
    struct bufferevent *bev;
    bool tls;
    struct mx_deflate *deflate; /* COMPRESS=DEFLATE filter state, owned by bev */
    bool peer_eof;
    char peer_ip[64];
    unsigned peer_port;
    struct event *wakeup;     /* deferred on_ready / on_input / on_close */
    struct event *flush_timer;
    unsigned flush_polls;
    struct evbuffer_cb_entry *below_output_cb;
    bool ready_pending;
    char close_reason[128];
};

static void conn_on_read(struct bufferevent *bev, void *arg);
static void conn_on_write(struct bufferevent *bev, void *arg);
static void conn_on_event(struct bufferevent *bev, short what, void *arg);

/* conn_socket_bev - the bottom of the stack: c->bev itself, or the socket
 * bufferevent under the TLS and/or deflate filters. */
static struct bufferevent *conn_socket_bev(const struct mx_conn *c)
{
    struct bufferevent *bev = c->bev;
    struct bufferevent *below;
    while (bev && (below = bufferevent_get_underlying(bev)) != NULL)
        bev = below;
    return bev;
}

/* conn_tls_bev - the TLS filter in the stack (under a deflate filter after
 * COMPRESS), NULL without TLS. */
static struct bufferevent *conn_tls_bev(const struct mx_conn *c)
{
    if (!c->tls)
        return NULL;
    for (struct bufferevent *bev = c->bev; bev; bev = bufferevent_get_underlying(bev))
        if (bufferevent_openssl_get_ssl(bev) != NULL)
            return bev;
    return NULL;
}

static void conn_free(struct mx_conn *c)
{
    struct mx_conn_registry *reg = c->cfg.registry;
    if (reg) {
        if (c->reg_prev)
            c->reg_prev->reg_next = c->reg_next;
        else
            reg->head = c->reg_next;
        if (c->reg_next)
            c->reg_next->reg_prev = c->reg_prev;
        reg->count--;
    }
    struct bufferevent *below = conn_socket_bev(c);
    if (below && below != c->bev && c->below_output_cb)
        evbuffer_remove_cb_entry(bufferevent_get_output(below), c->below_output_cb);
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->wakeup)
        event_free(c->wakeup);
    if (c->flush_timer)
        event_free(c->flush_timer);
    free(c);
}

/* conn_on_wakeup - everything that calls into the session runs from here,
 * so a session is never re-entered from inside its own mx_conn_* call. */
static void conn_on_wakeup(evutil_socket_t fd, short what, void *arg)
{
    struct mx_conn *c = arg;
    if (c->state == CONN_CLOSED) {
        c->ops->on_close(c->ctx, c->close_reason);
        conn_free(c);
        return;
    }
    if (c->ready_pending) {
        c->ready_pending = false;
        c->ops->on_ready(c->ctx);
        if (c->state == CONN_CLOSED)
            return; /* the close's own wake-up is queued */
    }
    if (c->state == CONN_OPEN && mx_conn_output_pending(c) <= c->cfg.output_high)
        c->ops->on_input(c->ctx, bufferevent_get_input(c->bev));
}

static void conn_wake(struct mx_conn *c)
{
    event_active(c->wakeup, EV_TIMEOUT, 0);
}

size_t mx_conn_output_pending(struct mx_conn *c)
{
    size_t pending = 0;
    for (struct bufferevent *bev = c->bev; bev; bev = bufferevent_get_underlying(bev))
        pending += evbuffer_get_length(bufferevent_get_output(bev));
    /* zlib holds a batch's bytes until the sync flush that ends it. */
    if (c->deflate)
        pending += mx_deflate_pending(c->deflate);
    return pending;
}

static void conn_on_below_output(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                                 void *arg)
{
    struct mx_conn *c = arg;
    if (info->n_deleted > 0 && c->state == CONN_OPEN &&
        mx_conn_output_pending(c) <= c->cfg.output_high / 4)
        conn_wake(c);
}

static void conn_set_callbacks(struct mx_conn *c)
{
    bufferevent_setcb(c->bev, conn_on_read, conn_on_write, conn_on_event, c);
    struct timeval idle = { c->cfg.idle_timeout_ms / 1000, (c->cfg.idle_timeout_ms % 1000) * 1000 };
    /* A deflate filter on top re-arms its generic write timer after every
     * batch, pending output or not: it would cut a long upload that gets
     * no reply for idle_ms. The socket's own write timeout (below), armed
     * only while bytes wait, catches a client that stopped reading. */
    bufferevent_set_timeouts(c->bev, &idle, c->deflate ? NULL : &idle);
    bufferevent_setwatermark(c->bev, EV_WRITE, c->cfg.output_high / 4, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, c->cfg.input_high);
    /* Under a TLS filter the socket bufferevent below keeps reading even
     * when the filter stops (libevent made it unlimited): bound it too,
     * time out a client that stops reading there, and wake on its drain.
     * Under a deflate filter the same holds for every layer; a TLS filter
     * in the middle gets no timeouts of its own (its generic write timer
     * would fire on an idle but healthy connection), the top and the
     * socket cover both directions. */
    struct bufferevent *below = bufferevent_get_underlying(c->bev);
    for (; below; below = bufferevent_get_underlying(below)) {
        bufferevent_setwatermark(below, EV_READ, 0, c->cfg.input_high);
        bool is_socket = bufferevent_get_underlying(below) == NULL;
        bufferevent_set_timeouts(below, NULL, is_socket ? &idle : NULL);
        if (is_socket && c->below_output_cb == NULL)
            c->below_output_cb =
                evbuffer_add_cb(bufferevent_get_output(below), conn_on_below_output, c);
    }
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static int conn_wrap_tls(struct mx_conn *c)
{
    struct bufferevent *plain = c->bev;
    SSL *ssl = SSL_new(c->cfg.tls_ctx);
    struct bufferevent *tls =
        ssl ? bufferevent_openssl_filter_new(c->cfg.base, plain, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
            : NULL;
    if (tls == NULL) {
        if (ssl)
            SSL_free(ssl);
        char reason[160];
        mx_log(MX_LOG_ERR, "conn.tls_setup_failed", MX_KV("role", c->role), MX_KV("sid", c->sid),
               MX_KV("peer", c->peer_ip), MX_KV("error", mx_tls_last_error(reason, sizeof reason)));
        mx_conn_close(c, "TLS setup failed");
        return -1;
    }
    c->bev = tls;
    c->tls = true;
    conn_set_callbacks(c);
    /* Handshake bytes read together with a PROXY header are already in the
     * plain input: make the filter look at them. */
    if (evbuffer_get_length(bufferevent_get_input(plain)) > 0)
        bufferevent_trigger(plain, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    return 0;
}

static void conn_set_peer(struct mx_conn *c, const struct sockaddr *addr)
{
    mx_net_addr_text(addr, c->peer_ip, sizeof c->peer_ip);
    if (addr->sa_family == AF_INET)
        c->peer_port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
    else if (addr->sa_family == AF_INET6)
        c->peer_port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
}

struct mx_conn *mx_conn_new(const struct mx_conn_config *cfg, int fd, const struct sockaddr *peer,
                            const struct mx_conn_ops *ops, void *ctx, const char *sid)
{
    struct mx_conn *c = mx_calloc(1, sizeof *c);
    c->cfg = *cfg;
    c->ops = ops;
    c->ctx = ctx;
    snprintf(c->sid, sizeof c->sid, "%s", sid ? sid : "");
    snprintf(c->role, sizeof c->role, "%s", cfg->role ? cfg->role : "conn");
    conn_set_peer(c, peer);
    if (cfg->registry) {
        c->reg_next = cfg->registry->head;
        if (c->reg_next)
            c->reg_next->reg_prev = c;
        cfg->registry->head = c;
        cfg->registry->count++;
    }
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(cfg->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    c->wakeup = event_new(cfg->base, -1, 0, conn_on_wakeup, c);
    if (c->bev == NULL || c->wakeup == NULL) {
        if (c->bev == NULL)
            close(fd);
        conn_free(c);
        return NULL;
    }
    if (cfg->expect_proxy) {
        c->state = CONN_PROXY;
        conn_set_callbacks(c);
        return c;
    }
    c->state = CONN_OPEN;
    if (cfg->implicit_tls) {
        if (cfg->tls_ctx == NULL) {
            mx_conn_close(c, "implicit TLS listener without a certificate");
            return c;
        }
        if (conn_wrap_tls(c) < 0)
            return c;
    } else {
        conn_set_callbacks(c);
    }
    c->ready_pending = true;
    conn_wake(c);
    return c;
}

const char *mx_conn_peer_ip(const struct mx_conn *c)
{
    return c->peer_ip;
}

unsigned mx_conn_peer_port(const struct mx_conn *c)
{
    return c->peer_port;
}

bool mx_conn_is_tls(const struct mx_conn *c)
{
    return c->tls;
}

bool mx_conn_has_tls_ctx(const struct mx_conn *c)
{
    return c->cfg.tls_ctx != NULL;
}

const char *mx_conn_tls_info(const struct mx_conn *c, char *buf, size_t size)
{
    struct bufferevent *tls = conn_tls_bev(c);
    SSL *ssl = tls ? bufferevent_openssl_get_ssl(tls) : NULL;
    if (ssl == NULL)
        snprintf(buf, size, "%s", "");
    else
        snprintf(buf, size, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    return buf;
}

struct evbuffer *mx_conn_input(struct mx_conn *c)
{
    return bufferevent_get_input(c->bev);
}

struct evbuffer *mx_conn_output(struct mx_conn *c)
{
    return bufferevent_get_output(c->bev);
}

void mx_conn_printf(struct mx_conn *c, const char *fmt, ...)
{
    if (c->state == CONN_CLOSED)
        return;
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
    va_end(ap);
}

void mx_conn_write(struct mx_conn *c, const void *data, size_t len)
{
    if (c->state == CONN_CLOSED)
        return;
    evbuffer_add(bufferevent_get_output(c->bev), data, len);
}

int mx_conn_starttls(struct mx_conn *c)
{
    /* After COMPRESS the TLS filter would land above the deflate filter
     * and compress ciphertext; RFC 4978 clients negotiate TLS first. */
    if (c->tls || c->deflate || c->cfg.tls_ctx == NULL || c->state != CONN_OPEN)
        return -1;
    size_t discarded = 0;
    struct bufferevent *tls = mx_tls_bufferevent_starttls(c->bev, c->cfg.tls_ctx, &discarded);
    if (tls == NULL) {
        char reason[160];
        mx_log(MX_LOG_ERR, "conn.starttls_failed", MX_KV("role", c->role), MX_KV("sid", c->sid),
               MX_KV("peer", c->peer_ip), MX_KV("error", mx_tls_last_error(reason, sizeof reason)));
        mx_conn_close(c, "STARTTLS setup failed");
        return -1;
    }
    if (discarded > 0)
        /* Commands pipelined behind STARTTLS were sent in clear before the
         * handshake: never act on them (CVE-2011-0411 class). */
        mx_log(MX_LOG_WARNING, "conn.starttls_pipelined_input_discarded", MX_KV("role", c->role),
               MX_KV("sid", c->sid), MX_KV("peer", c->peer_ip), MX_KVU("bytes", discarded));
    c->bev = tls;
    c->tls = true;
    conn_set_callbacks(c);
    return 0;
}

int mx_conn_compress(struct mx_conn *c)
{
    if (c->deflate || c->state != CONN_OPEN)
        return -1;
    /* The deflate filter goes on top: what the session already wrote (the
     * tagged OK) stays in the old top's output and leaves uncompressed
     * ahead of everything compressed; under TLS, compression happens
     * inside the encryption. */
    struct mx_deflate *deflate = NULL;
    struct bufferevent *zbev =
        mx_deflate_filter_new(c->bev, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, NULL, &deflate);
    if (zbev == NULL) {
        mx_log(MX_LOG_ERR, "conn.compress_failed", MX_KV("role", c->role), MX_KV("sid", c->sid),
               MX_KV("peer", c->peer_ip), MX_KV("error", "cannot allocate the deflate filter"));
        mx_conn_close(c, "COMPRESS setup failed");
        return -1;
    }
    c->bev = zbev;
    c->deflate = deflate;
    conn_set_callbacks(c);
    return 0;
}

bool mx_conn_is_compressed(const struct mx_conn *c)
{
    return c->deflate != NULL;
}

void mx_conn_set_idle_timeout(struct mx_conn *c, unsigned ms)
{
    c->cfg.idle_timeout_ms = ms;
    if (c->state == CONN_OPEN)
        conn_set_callbacks(c);
}

void mx_conn_resume(struct mx_conn *c)
{
    if (c->state == CONN_OPEN)
        conn_wake(c);
}

bool mx_conn_peer_closed(const struct mx_conn *c)
{
    return c->peer_eof;
}

void mx_conn_close(struct mx_conn *c, const char *reason)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason);
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->flush_timer)
        evtimer_del(c->flush_timer);
    conn_wake(c);
}

/* conn_flush_check - close once the last reply really left. Under TLS the
 * filter drains into the socket bufferevent below, whose progress gives
 * no callback here, so that one is polled (bounded). */
static void conn_flush_check(struct mx_conn *c);

static void conn_on_flush_poll(evutil_socket_t fd, short what, void *arg)
{
    conn_flush_check(arg);
}

static void conn_flush_check(struct mx_conn *c)
{
    if (c->state != CONN_FLUSHING)
        return;
    if (mx_conn_output_pending(c) == 0 || ++c->flush_polls > CONN_FLUSH_POLLS) {
        char reason[sizeof c->close_reason];
        memcpy(reason, c->close_reason, sizeof reason); /* mx_conn_close rewrites it */
        c->state = CONN_OPEN; /* so mx_conn_close runs its course */
        mx_conn_close(c, reason);
        return;
    }
    struct timeval tv = { 0, CONN_FLUSH_POLL_MS * 1000 };
    if (c->flush_timer == NULL)
        c->flush_timer = evtimer_new(c->cfg.base, conn_on_flush_poll, c);
    evtimer_add(c->flush_timer, &tv);
}

void mx_conn_close_after_flush(struct mx_conn *c, const char *reason)
{
    if (c->state == CONN_CLOSED || c->state == CONN_FLUSHING)
        return;
    c->state = CONN_FLUSHING;
    snprintf(c->close_reason, sizeof c->close_reason, "%s", reason);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_enable(c->bev, EV_WRITE);
    conn_flush_check(c);
}

/* conn_read_proxy - the PROXY v2 header from a trusted balancer. */
static void conn_read_proxy(struct mx_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t avail = evbuffer_get_length(in);
    if (avail > MX_PROXY_V2_MAX)
        avail = MX_PROXY_V2_MAX;
    uint8_t *head = avail ? evbuffer_pullup(in, (ssize_t)avail) : NULL;
    struct mx_proxy_v2_result proxy;
    const char *error = NULL;
    int n = avail ? mx_proxy_v2_parse(head, avail, &proxy, &error) : 0;
    if (n == 0) {
        if (c->peer_eof)
            mx_conn_close(c, "balancer closed before the PROXY header");
        return;
    }
    if (n < 0) {
        mx_log(MX_LOG_WARNING, "conn.proxy_header_invalid", MX_KV("role", c->role),
               MX_KV("sid", c->sid), MX_KV("balancer", c->peer_ip), MX_KV("error", error));
        mx_conn_close(c, "invalid PROXY header");
        return;
    }
    evbuffer_drain(in, (size_t)n);
    if (!proxy.local) {
        char balancer[64];
        snprintf(balancer, sizeof balancer, "%s", c->peer_ip);
        conn_set_peer(c, (const struct sockaddr *)&proxy.source);
        mx_log(MX_LOG_DEBUG, "conn.proxied", MX_KV("role", c->role), MX_KV("sid", c->sid),
               MX_KV("balancer", balancer), MX_KV("client", c->peer_ip));
    }
    c->state = CONN_OPEN;
    if (c->cfg.implicit_tls) {
        if (c->cfg.tls_ctx == NULL) {
            mx_conn_close(c, "implicit TLS listener without a certificate");
            return;
        }
        if (conn_wrap_tls(c) < 0)
            return;
    }
    c->ready_pending = true;
    conn_wake(c);
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
    struct mx_conn *c = arg;
    if (c->state == CONN_PROXY)
        conn_read_proxy(c);
    else if (c->state == CONN_OPEN)
        conn_wake(c);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    struct mx_conn *c = arg;
    if (c->state == CONN_FLUSHING)
        conn_flush_check(c);
    else if (c->state == CONN_OPEN)
        conn_wake(c); /* output drained below the mark: serve on */
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct mx_conn *c = arg;
    if (c->state == CONN_CLOSED)
        return;
    if (what & BEV_EVENT_TIMEOUT) {
        mx_conn_close(c, c->state == CONN_FLUSHING ? "client stopped reading" : "idle timeout");
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        struct bufferevent *tls = conn_tls_bev(c);
        unsigned long tls_error = tls ? bufferevent_get_openssl_error(tls) : 0;
        const char *deflate_error = c->deflate ? mx_deflate_error(c->deflate) : NULL;
        char reason[256];
        if (deflate_error) {
            snprintf(reason, sizeof reason, "COMPRESS: %s", deflate_error);
            mx_log(MX_LOG_WARNING, "conn.compress_error", MX_KV("role", c->role),
                   MX_KV("sid", c->sid), MX_KV("peer", c->peer_ip), MX_KV("error", deflate_error));
        } else if (tls_error)
            ERR_error_string_n(tls_error, reason, sizeof reason);
        else
            snprintf(reason, sizeof reason, "%s",
                     EVUTIL_SOCKET_ERROR() ? strerror(EVUTIL_SOCKET_ERROR()) : "connection error");
        /* A failed handshake's alert is still in the plain connection's
         * output: send it, best effort, so the client learns why. Only
         * the socket's own output holds ciphertext; layers above it hold
         * cleartext that must never be written raw. */
        struct bufferevent *plain = tls ? conn_socket_bev(c) : NULL;
        if (plain && plain != bev) {
            struct evbuffer *alert = bufferevent_get_output(plain);
            size_t len = evbuffer_get_length(alert);
            ssize_t ignored =
                len ? write(bufferevent_getfd(plain), evbuffer_pullup(alert, -1), len) : 0;
            (void)ignored;
        }
        mx_conn_close(c, reason);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        c->peer_eof = true;
        if (c->state == CONN_PROXY)
            conn_read_proxy(c);
        else if (c->state == CONN_FLUSHING) {
            char reason[sizeof c->close_reason];
            memcpy(reason, c->close_reason, sizeof reason);
            mx_conn_close(c, reason);
        }
        else
            conn_wake(c); /* the session answers what was pipelined, then closes */
    }
}

void mx_conn_registry_close_all(struct mx_conn_registry *registry, const char *goodbye,
                                const char *reason)
{
    for (struct mx_conn *c = registry->head; c; c = c->reg_next) {
        if (c->state == CONN_CLOSED)
            continue;
        if (goodbye && c->state != CONN_PROXY && c->bev) {
            /* best effort: one write attempt, no waiting for slow readers */
            mx_conn_printf(c, "%s", goodbye);
            /* deflate and/or encrypt down into the socket's output; only
             * that one may be written raw */
            struct bufferevent *sock = conn_socket_bev(c);
            if (sock != c->bev)
                bufferevent_flush(c->bev, EV_WRITE, BEV_FLUSH);
            /* A socket bufferevent keeps the front of its output frozen
             * (only its own write callback drains it): thaw it for this
             * one write, so the bytes sent are also gone from the buffer
             * and cannot go out twice if the bufferevent outlives the
             * close by a turn of the loop. */
            struct evbuffer *out = bufferevent_get_output(sock);
            evbuffer_unfreeze(out, 1);
            (void)evbuffer_write(out, bufferevent_getfd(sock));
            evbuffer_freeze(out, 1);
        }
        mx_conn_close(c, reason);
    }
}
