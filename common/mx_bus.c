/* mx_bus - ZeroMQ request/ack and PUB/SUB on a libevent loop.
 *
 * Layout of this file: the bus (zmq context), mx_zsock (one zmq socket
 * watched by one libevent event; the only place that knows ZMQ_FD's edge
 * semantics), then server, client, pub, sub. See mx_bus.h for the contract. */
#include "mx_bus.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <zmq.h>

#include "mx_alloc.h"
#include "mx_log.h"

/* Parts kept from one received message; further parts are drained and the
 * message reported as having too many. */
#define ZSOCK_MAX_PARTS 3
/* Longest routing identity zmq hands a ROUTER (ZMQ_ROUTING_ID max 255). */
#define IDENTITY_MAX 255
/* ZMTP heartbeats: notice a peer that vanished without closing TCP (node
 * power loss) so its pipe is torn down and ZMQ_IMMEDIATE stops routing
 * requests to it. */
#define HEARTBEAT_IVL_MS 5000
#define HEARTBEAT_TIMEOUT_MS 15000
#define RECONNECT_IVL_MAX_MS 5000

#define CLIENT_TIMEOUT_DEFAULT_MS 5000
#define CLIENT_ATTEMPTS_DEFAULT 3
#define CLIENT_BACKOFF_DEFAULT_MS 10000
#define CLIENT_HASH_BITS_MIN 6

struct mx_bus {
    struct event_base *base;
    void *zctx;
    int sndhwm;
    int rcvhwm;
    size_t open_sockets;
    char errbuf[512];
};

/* ---- helpers ---------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* hex_encode - bytes as lowercase hex into out[2*len+1] (NUL-terminated). */
static void hex_encode(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * len] = '\0';
}

/* bus_fail - format the reason into the bus's error buffer, log it, and
 * return -1 (constructors' error path). */
static int bus_fail(struct mx_bus *bus, const char **error_r, const char *event,
                    const char *endpoint, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bus_fail(struct mx_bus *bus, const char **error_r, const char *event,
                    const char *endpoint, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(bus->errbuf, sizeof bus->errbuf, fmt, ap);
    va_end(ap);
    mx_log(MX_LOG_ERR, event, MX_KV("endpoint", endpoint), MX_KV("reason", bus->errbuf));
    if (error_r != NULL)
        *error_r = bus->errbuf;
    return -1;
}

/* ---- the bus ---------------------------------------------------------- */

int mx_bus_new(struct event_base *base, struct mx_bus **bus_r, const char **error_r)
{
    void *zctx = zmq_ctx_new();
    if (zctx == NULL) {
        mx_log(MX_LOG_ERR, "bus.context_failed", MX_KVERR(errno));
        *error_r = "zmq_ctx_new failed";
        return -1;
    }
    struct mx_bus *bus = mx_calloc(1, sizeof *bus);
    bus->base = base;
    bus->zctx = zctx;
    bus->sndhwm = MX_BUS_HWM_DEFAULT;
    bus->rcvhwm = MX_BUS_HWM_DEFAULT;
    *bus_r = bus;
    return 0;
}

void mx_bus_free(struct mx_bus **bus_p)
{
    struct mx_bus *bus = *bus_p;
    if (bus == NULL)
        return;
    *bus_p = NULL;
    if (bus->open_sockets > 0) {
        /* zmq_ctx_term would wait forever for sockets only we could close. */
        mx_log(MX_LOG_CRIT, "bus.free_with_open_sockets", MX_KVU("sockets", bus->open_sockets));
    } else {
        while (zmq_ctx_term(bus->zctx) != 0 && errno == EINTR)
            ;
    }
    free(bus);
}

void mx_bus_set_hwm(struct mx_bus *bus, int sndhwm, int rcvhwm)
{
    bus->sndhwm = sndhwm;
    bus->rcvhwm = rcvhwm;
}

/* ---- mx_zsock: a zmq socket on the event loop ------------------------- */

/* Called once per received message. parts are closed by the caller after
 * the return. Returns true when the owner, and this zsock with it, has been
 * destroyed: the dispatch loop then must not touch the zsock again. */
typedef bool zsock_msg_fn(void *owner, zmq_msg_t *parts, size_t nparts, bool too_many);

struct mx_zsock {
    struct mx_bus *bus;
    void *sock;
    struct event *ev;
    zsock_msg_fn *on_msg; /* NULL for send-only sockets (PUB) */
    void *owner;
    char *label; /* endpoint(s), for logs */
};

/* zsock_recv - one whole multipart message, without blocking. 0 and the
 * first ZSOCK_MAX_PARTS parts, or -1 (EAGAIN or an error, logged). */
static int zsock_recv(struct mx_zsock *zs, zmq_msg_t *parts, size_t *nparts_r, bool *too_many_r)
{
    size_t n = 0;
    bool too_many = false;
    for (;;) {
        zmq_msg_t extra;
        zmq_msg_t *m = n < ZSOCK_MAX_PARTS ? &parts[n] : &extra;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, zs->sock, ZMQ_DONTWAIT) < 0) {
            int err = errno;
            zmq_msg_close(m);
            for (size_t i = 0; i < n; i++)
                zmq_msg_close(&parts[i]);
            if (err != EAGAIN)
                mx_log(MX_LOG_WARNING, "bus.recv_failed", MX_KV("endpoint", zs->label),
                       MX_KV("error", zmq_strerror(err)));
            return -1;
        }
        bool more = zmq_msg_more(m);
        if (m == &extra) {
            zmq_msg_close(&extra);
            too_many = true;
        } else {
            n++;
        }
        if (!more)
            break;
    }
    *nparts_r = n;
    *too_many_r = too_many;
    return 0;
}

/* zsock_on_event - ZMQ_FD woke us (or a send asked for a re-check). Drain
 * while ZMQ_EVENTS reports POLLIN: the fd will not fire again for messages
 * already queued. Reading ZMQ_EVENTS also processes pending zmq commands
 * (subscriptions, pipe attach/detach), which send-only sockets need too. */
static void zsock_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct mx_zsock *zs = arg;
    (void)fd;
    (void)what;
    for (int n = 0; n < MX_BUS_BATCH; n++) {
        int events = 0;
        size_t size = sizeof events;
        if (zmq_getsockopt(zs->sock, ZMQ_EVENTS, &events, &size) != 0) {
            mx_log(MX_LOG_ERR, "bus.events_failed", MX_KV("endpoint", zs->label),
                   MX_KV("error", zmq_strerror(errno)));
            event_del(zs->ev);
            return;
        }
        if ((events & ZMQ_POLLIN) == 0 || zs->on_msg == NULL)
            return;
        zmq_msg_t parts[ZSOCK_MAX_PARTS];
        size_t nparts;
        bool too_many;
        if (zsock_recv(zs, parts, &nparts, &too_many) < 0)
            return;
        bool gone = zs->on_msg(zs->owner, parts, nparts, too_many);
        for (size_t i = 0; i < nparts; i++)
            zmq_msg_close(&parts[i]);
        if (gone)
            return; /* zs is freed */
    }
    /* Batch used up and maybe more queued: come back after other events. */
    event_active(zs->ev, EV_READ, 0);
}

static void zsock_setopt_int(struct mx_zsock *zs, int option, int value)
{
    if (zmq_setsockopt(zs->sock, option, &value, sizeof value) != 0)
        mx_log(MX_LOG_WARNING, "bus.setsockopt_failed", MX_KV("endpoint", zs->label),
               MX_KVI("option", option), MX_KV("error", zmq_strerror(errno)));
}

/* zsock_new - a socket of type with the bus's options; not yet bound,
 * connected nor watched (zsock_watch). label is copied. */
static struct mx_zsock *zsock_new(struct mx_bus *bus, int type, const char *label,
                                  zsock_msg_fn *on_msg, void *owner, const char **error_r)
{
    void *sock = zmq_socket(bus->zctx, type);
    if (sock == NULL) {
        bus_fail(bus, error_r, "bus.socket_failed", label, "zmq_socket for %s: %s", label,
                 zmq_strerror(errno));
        return NULL;
    }
    struct mx_zsock *zs = mx_calloc(1, sizeof *zs);
    zs->bus = bus;
    zs->sock = sock;
    zs->on_msg = on_msg;
    zs->owner = owner;
    zs->label = mx_strdup(label);
    bus->open_sockets++;

    zsock_setopt_int(zs, ZMQ_LINGER, 0);
    zsock_setopt_int(zs, ZMQ_SNDHWM, bus->sndhwm);
    zsock_setopt_int(zs, ZMQ_RCVHWM, bus->rcvhwm);
    /* Refuse oversized frames in zmq's decoder, before they are buffered. */
    int64_t maxmsg = MX_WIRE_FRAME_MAX;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0)
        mx_log(MX_LOG_WARNING, "bus.setsockopt_failed", MX_KV("endpoint", label),
               MX_KV("option", "ZMQ_MAXMSGSIZE"), MX_KV("error", zmq_strerror(errno)));
    if (type == ZMQ_DEALER || type == ZMQ_ROUTER) {
        zsock_setopt_int(zs, ZMQ_HEARTBEAT_IVL, HEARTBEAT_IVL_MS);
        zsock_setopt_int(zs, ZMQ_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS);
    }
    if (type == ZMQ_DEALER || type == ZMQ_SUB)
        zsock_setopt_int(zs, ZMQ_RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS);
    /* DEALER: queue nothing for an instance that is not connected, so
     * zmq_send fails with EAGAIN and we try another one at once. */
    if (type == ZMQ_DEALER)
        zsock_setopt_int(zs, ZMQ_IMMEDIATE, 1);
    /* ROUTER: an unroutable reply (requester gone) or a full pipe fails
     * visibly (EHOSTUNREACH / EAGAIN) instead of vanishing. */
    if (type == ZMQ_ROUTER)
        zsock_setopt_int(zs, ZMQ_ROUTER_MANDATORY, 1);
    return zs;
}

static void zsock_free(struct mx_zsock **zs_p)
{
    struct mx_zsock *zs = *zs_p;
    if (zs == NULL)
        return;
    *zs_p = NULL;
    if (zs->ev != NULL)
        event_free(zs->ev);
    zsock_setopt_int(zs, ZMQ_LINGER, 0);
    zmq_close(zs->sock);
    zs->bus->open_sockets--;
    free(zs->label);
    free(zs);
}

/* zsock_watch - put the socket's ZMQ_FD on the loop, and look once at once
 * (a connect may already have queued something). */
static int zsock_watch(struct mx_zsock *zs, const char **error_r)
{
    int fd;
    size_t size = sizeof fd;
    if (zmq_getsockopt(zs->sock, ZMQ_FD, &fd, &size) != 0)
        return bus_fail(zs->bus, error_r, "bus.socket_failed", zs->label, "ZMQ_FD for %s: %s",
                        zs->label, zmq_strerror(errno));
    zs->ev = event_new(zs->bus->base, fd, EV_READ | EV_PERSIST, zsock_on_event, zs);
    if (zs->ev == NULL || event_add(zs->ev, NULL) != 0)
        return bus_fail(zs->bus, error_r, "bus.socket_failed", zs->label,
                        "cannot watch the zmq fd of %s", zs->label);
    event_active(zs->ev, EV_READ, 0);
    return 0;
}

/* zsock_send - send [head][msg] (head may be NULL: one part) without
 * blocking. msg is consumed in every case. -1 with errno on failure. */
static int zsock_send(struct mx_zsock *zs, const void *head, size_t head_len, zmq_msg_t *msg)
{
    int rc = 0;
    if (head != NULL && zmq_send(zs->sock, head, head_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0)
        rc = -1;
    /* Once the first part is in, zmq accepts the rest of the message. */
    if (rc == 0 && zmq_msg_send(msg, zs->sock, ZMQ_DONTWAIT) < 0)
        rc = -1;
    int saved = errno;
    zmq_msg_close(msg);
    /* The send may have consumed the ZMQ_FD edge for incoming messages. */
    if (zs->ev != NULL)
        event_active(zs->ev, EV_READ, 0);
    errno = saved;
    return rc;
}

/* zsock_msg_from - a zmq message holding a copy of data. */
static void zsock_msg_from(zmq_msg_t *msg, const void *data, size_t len)
{
    if (zmq_msg_init_size(msg, len) != 0) {
        mx_log(MX_LOG_CRIT, "alloc.fail", MX_KVU("bytes", len));
        abort();
    }
    memcpy(zmq_msg_data(msg), data, len);
}

/* ---- server ----------------------------------------------------------- */

struct mx_server {
    struct mx_bus *bus;
    struct mx_zsock *zs;
    char *endpoint; /* as bound (ZMQ_LAST_ENDPOINT) */
    mx_server_handler_fn *handler;
    void *ctx;
    struct mx_server_request *pending; /* doubly linked, unanswered */
    struct mx_server_stats stats;
    int busy;  /* > 0 while a handler runs */
    bool dead; /* freed by the caller; memory goes when busy drops to 0 */
};

struct mx_server_request {
    struct mx_server *server; /* NULL once the server is freed: inert */
    struct mx_server_request *prev;
    struct mx_server_request *next;
    uint64_t request_id;
    struct mx_msgid message_id;
    size_t identity_len;
    char *peer;          /* hex of identity; points into the same block */
    uint8_t identity[];  /* then peer's characters */
};

static struct mx_server_request *server_request_new(struct mx_server *s, const zmq_msg_t *identity,
                                                    const struct mx_frame_view *view)
{
    size_t len = zmq_msg_size(identity);
    struct mx_server_request *req = mx_calloc(1, sizeof *req + len + 2 * len + 1);
    req->server = s;
    req->request_id = view->request_id;
    req->message_id = view->message_id;
    req->identity_len = len;
    memcpy(req->identity, zmq_msg_data((zmq_msg_t *)identity), len);
    req->peer = (char *)req->identity + len;
    hex_encode(req->identity, len, req->peer);
    req->next = s->pending;
    if (s->pending != NULL)
        s->pending->prev = req;
    s->pending = req;
    s->stats.pending++;
    return req;
}

/* server_request_unlink - off the server's pending list (no-op if inert). */
static void server_request_unlink(struct mx_server_request *req)
{
    struct mx_server *s = req->server;
    if (s == NULL)
        return;
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        s->pending = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    s->stats.pending--;
}

void mx_server_request_drop(struct mx_server_request **req_p)
{
    struct mx_server_request *req = *req_p;
    if (req == NULL)
        return;
    *req_p = NULL;
    server_request_unlink(req);
    free(req);
}

uint64_t mx_server_request_id(const struct mx_server_request *req)
{
    return req->request_id;
}

const char *mx_server_request_peer(const struct mx_server_request *req)
{
    return req->peer;
}

/* server_send_to - [identity][data with request_id patched]. */
static int server_send_to(struct mx_server *s, const uint8_t *identity, size_t identity_len,
                          const char *peer, uint64_t request_id, const uint8_t *data,
                          size_t len, const char **error_r)
{
    zmq_msg_t msg;
    zsock_msg_from(&msg, data, len);
    put_be64((uint8_t *)zmq_msg_data(&msg) + MX_WIRE_OFF_REQUEST_ID, request_id);
    if (zsock_send(s->zs, identity, identity_len, &msg) < 0) {
        int err = errno;
        s->stats.reply_failures++;
        /* EHOSTUNREACH: the requester went away (it will retry elsewhere);
         * EAGAIN: its pipe is full. Either way it times out and retries. */
        mx_log(MX_LOG_WARNING, "bus.reply_failed", MX_KV("endpoint", s->endpoint),
               MX_KV("peer", peer), MX_KVU("request_id", request_id),
               MX_KV("error", zmq_strerror(err)));
        *error_r = err == EHOSTUNREACH ? "requester is no longer connected"
                   : err == EAGAIN     ? "requester's pipe is full (HWM)"
                                       : "zmq_send failed";
        return -1;
    }
    s->stats.replies++;
    return 0;
}

int mx_server_reply(struct mx_server_request **req_p, struct mx_frame *reply, const char **error_r)
{
    struct mx_server_request *req = *req_p;
    *req_p = NULL;
    if (req == NULL) {
        *error_r = "no request";
        return -1;
    }
    struct mx_server *s = req->server;
    int ret = -1;
    const uint8_t *data;
    size_t len;
    const char *error;
    if (s == NULL || s->dead) {
        if (mx_log_enabled(MX_LOG_DEBUG))
            mx_log(MX_LOG_DEBUG, "bus.reply_server_gone", MX_KV("peer", req->peer),
                   MX_KVU("request_id", req->request_id));
        *error_r = "server closed";
    } else if (mx_frame_finish(reply, &data, &len, &error) < 0) {
        mx_log(MX_LOG_ERR, "bus.reply_unusable", MX_KV("endpoint", s->endpoint),
               MX_KV("peer", req->peer), MX_KVU("request_id", req->request_id),
               MX_KV("reason", error));
        *error_r = "reply frame unusable";
    } else {
        ret = server_send_to(s, req->identity, req->identity_len, req->peer, req->request_id,
                             data, len, error_r);
    }
    server_request_unlink(req);
    free(req);
    return ret;
}

/* ack_build - MSG_ANY_ACK for request_id/message_id. */
static void ack_build(struct mx_frame *frame, uint64_t request_id, const struct mx_msgid *message_id,
                      enum mx_status status, const char *text)
{
    mx_frame_init(frame, MSG_ANY_ACK, request_id, message_id);
    mx_frame_put_u32(frame, F_STATUS, (uint32_t)status);
    if (text != NULL)
        mx_frame_put_str(frame, F_TEXT, text);
}

int mx_server_ack(struct mx_server_request **req_p, enum mx_status status, const char *text,
                  const char **error_r)
{
    struct mx_frame frame;
    const struct mx_msgid *message_id = *req_p != NULL ? &(*req_p)->message_id : NULL;
    ack_build(&frame, 0, message_id, status, text);
    int ret = mx_server_reply(req_p, &frame, error_r);
    mx_frame_free(&frame);
    return ret;
}

static void server_destroy(struct mx_server *s)
{
    zsock_free(&s->zs);
    free(s->endpoint);
    free(s);
}

/* server_bad_frame - log a dropped message with who sent it. */
static void server_bad_frame(struct mx_server *s, const zmq_msg_t *identity, const zmq_msg_t *any,
                             const char *reason)
{
    char peer[2 * IDENTITY_MAX + 1] = "";
    if (identity != NULL) {
        size_t len = zmq_msg_size(identity);
        if (len > IDENTITY_MAX)
            len = IDENTITY_MAX;
        hex_encode(zmq_msg_data((zmq_msg_t *)identity), len, peer);
    }
    /* The peer's address, when the transport knows it (tcp, ipc). */
    const char *addr = any != NULL ? zmq_msg_gets(any, "Peer-Address") : NULL;
    s->stats.bad_frames++;
    mx_log(MX_LOG_WARNING, "bus.bad_frame", MX_KV("endpoint", s->endpoint), MX_KV("peer", peer),
           MX_KV("peer_addr", addr), MX_KV("reason", reason));
}

static bool server_on_msg(void *owner, zmq_msg_t *parts, size_t nparts, bool too_many)
{
    struct mx_server *s = owner;
    if (nparts != 2 || too_many) {
        server_bad_frame(s, nparts > 0 ? &parts[0] : NULL, nparts > 0 ? &parts[nparts - 1] : NULL,
                         "expected 2 parts [identity][frame]");
        return false;
    }
    struct mx_frame_view view;
    const char *error;
    if (mx_frame_parse(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &view, &error) < 0) {
        server_bad_frame(s, &parts[0], &parts[1], error);
        return false;
    }
    if (view.type == MSG_ANY_PING) {
        /* Liveness is the bus's business: answered here, same for all roles. */
        struct mx_frame ack;
        const uint8_t *data;
        size_t len;
        char peer[2 * IDENTITY_MAX + 1];
        size_t id_len = zmq_msg_size(&parts[0]);
        hex_encode(zmq_msg_data(&parts[0]), id_len <= IDENTITY_MAX ? id_len : IDENTITY_MAX, peer);
        ack_build(&ack, view.request_id, &view.message_id, MX_STATUS_OK, NULL);
        if (mx_frame_finish(&ack, &data, &len, &error) == 0) {
            s->stats.pings++;
            server_send_to(s, zmq_msg_data(&parts[0]), id_len, peer, view.request_id, data, len,
                           &error);
        }
        mx_frame_free(&ack);
        return false;
    }
    struct mx_server_request *req = server_request_new(s, &parts[0], &view);
    s->stats.requests++;
    s->busy++;
    s->handler(s->ctx, req, &view);
    s->busy--;
    if (s->dead) {
        if (s->busy == 0)
            server_destroy(s);
        return true;
    }
    return false;
}

int mx_server_new(struct mx_bus *bus, const char *endpoint, mx_server_handler_fn *handler,
                  void *ctx, struct mx_server **server_r, const char **error_r)
{
    struct mx_server *s = mx_calloc(1, sizeof *s);
    s->bus = bus;
    s->handler = handler;
    s->ctx = ctx;
    s->zs = zsock_new(bus, ZMQ_ROUTER, endpoint, server_on_msg, s, error_r);
    if (s->zs == NULL) {
        free(s);
        return -1;
    }
    if (zmq_bind(s->zs->sock, endpoint) != 0) {
        bus_fail(bus, error_r, "bus.bind_failed", endpoint, "bind %s: %s", endpoint,
                 zmq_strerror(errno));
        server_destroy(s);
        return -1;
    }
    char last[1024];
    size_t size = sizeof last;
    if (zmq_getsockopt(s->zs->sock, ZMQ_LAST_ENDPOINT, last, &size) == 0 && size > 1)
        s->endpoint = mx_strndup(last, size - 1);
    else
        s->endpoint = mx_strdup(endpoint);
    if (zsock_watch(s->zs, error_r) < 0) {
        server_destroy(s);
        return -1;
    }
    mx_log(MX_LOG_INFO, "bus.server_bound", MX_KV("endpoint", s->endpoint));
    *server_r = s;
    return 0;
}

void mx_server_free(struct mx_server **server_p)
{
    struct mx_server *s = *server_p;
    if (s == NULL)
        return;
    *server_p = NULL;
    if (s->dead)
        return;
    s->dead = true;
    /* Requests a role still holds (waiting on an fsync) must not point at
     * freed memory: they turn inert. */
    while (s->pending != NULL) {
        struct mx_server_request *req = s->pending;
        server_request_unlink(req);
        req->server = NULL;
    }
    if (s->busy == 0)
        server_destroy(s);
    /* else server_on_msg destroys it when the handler returns */
}

const char *mx_server_endpoint(const struct mx_server *s)
{
    return s->endpoint;
}

void mx_server_get_stats(const struct mx_server *s, struct mx_server_stats *stats_r)
{
    *stats_r = s->stats;
}

/* ---- client ----------------------------------------------------------- */

struct client_endpoint {
    struct mx_client *client;
    struct mx_zsock *zs;
    uint64_t down_until_ms; /* monotonic; an attempt here timed out */
};

struct client_req {
    struct client_req *hnext; /* hash chain */
    struct mx_client *client;
    uint64_t id;
    uint8_t *data; /* encoded frame, request_id patched in */
    size_t len;
    struct event *timer;
    mx_client_done_fn *cb;
    void *ctx;
    uint64_t deadline_ms;
    unsigned sent_attempts;
    size_t last_ep;
    bool has_last_ep;
    bool awaiting_reply; /* the armed timer is for a sent attempt */
};

struct mx_client {
    struct mx_bus *bus;
    char *name;
    unsigned timeout_ms;
    unsigned max_attempts;
    unsigned backoff_ms;
    /* libevent common timeouts: O(1) arming for thousands of requests
     * that all wait the same duration. */
    const struct timeval *tv_attempt;
    const struct timeval *tv_unsent;
    struct timeval tv_attempt_plain;
    struct timeval tv_unsent_plain;
    struct client_endpoint *eps;
    size_t n_eps;
    size_t rr;
    uint64_t next_id;
    /* pending requests by id: chained hash, power-of-two buckets */
    struct client_req **buckets;
    unsigned hash_bits;
    struct mx_client_stats stats;
    int busy;
    bool dead;
    bool stale_epoch_is_reply;
    size_t preferred;     /* the instance asked first (cluster map) */
    bool has_preferred;
};

static size_t client_slot(const struct mx_client *c, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> (64 - c->hash_bits));
}

static void client_hash_insert(struct mx_client *c, struct client_req *req)
{
    if (c->stats.pending + 1 > ((uint64_t)1 << c->hash_bits)) {
        unsigned old_bits = c->hash_bits;
        struct client_req **old = c->buckets;
        c->hash_bits++;
        c->buckets = mx_calloc((size_t)1 << c->hash_bits, sizeof *c->buckets);
        for (size_t i = 0; i < ((size_t)1 << old_bits); i++) {
            while (old[i] != NULL) {
                struct client_req *r = old[i];
                old[i] = r->hnext;
                size_t slot = client_slot(c, r->id);
                r->hnext = c->buckets[slot];
                c->buckets[slot] = r;
            }
        }
        free(old);
    }
    size_t slot = client_slot(c, req->id);
    req->hnext = c->buckets[slot];
    c->buckets[slot] = req;
    c->stats.pending++;
}

/* client_hash_take - remove and return the pending request id, or NULL. */
static struct client_req *client_hash_take(struct mx_client *c, uint64_t id)
{
    for (struct client_req **pp = &c->buckets[client_slot(c, id)]; *pp != NULL; pp = &(*pp)->hnext) {
        struct client_req *req = *pp;
        if (req->id == id) {
            *pp = req->hnext;
            req->hnext = NULL;
            c->stats.pending--;
            return req;
        }
    }
    return NULL;
}

static void client_req_free(struct client_req *req)
{
    event_free(req->timer);
    free(req->data);
    free(req);
}

static void client_destroy(struct mx_client *c)
{
    for (size_t i = 0; i < c->n_eps; i++)
        zsock_free(&c->eps[i].zs);
    free(c->eps);
    free(c->buckets);
    free(c->name);
    free(c);
}

/* client_call - run a done callback; true if the client was destroyed by it
 * (or earlier), so the caller must not touch c any more. */
static bool client_call(struct mx_client *c, mx_client_done_fn *cb, void *ctx,
                        enum mx_bus_result result, const struct mx_frame_view *reply)
{
    c->busy++;
    cb(ctx, result, reply);
    c->busy--;
    if (c->dead) {
        if (c->busy == 0)
            client_destroy(c);
        return true;
    }
    return false;
}

/* client_send - offer req to the endpoints in order (round robin for a
 * first attempt, the one after the last tried for a retry; those in
 * back-off only if no other takes it) and arm its timer. A send zmq refuses
 * (EAGAIN: no connected peer with ZMQ_IMMEDIATE, or the HWM) costs nothing:
 * the next endpoint is tried at once. */
static void client_send(struct mx_client *c, struct client_req *req)
{
    uint64_t now = now_ms();
    size_t start = req->has_last_ep ? req->last_ep + 1 : c->rr++;
    /* the instance the cluster map names first, unless it just failed */
    if (c->has_preferred && !(req->has_last_ep && req->last_ep == c->preferred))
        start = c->preferred;
    bool retry = req->sent_attempts > 0;
    if (retry)
        put_be32(req->data + MX_WIRE_OFF_FLAGS,
                 get_be32(req->data + MX_WIRE_OFF_FLAGS) | MX_FRAME_F_RETRY);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < c->n_eps; k++) {
            size_t i = (start + k) % c->n_eps;
            struct client_endpoint *ep = &c->eps[i];
            bool down = ep->down_until_ms > now;
            if (down != (pass == 1))
                continue;
            zmq_msg_t msg;
            zsock_msg_from(&msg, req->data, req->len);
            if (zsock_send(ep->zs, NULL, 0, &msg) == 0) {
                req->last_ep = i;
                req->has_last_ep = true;
                req->sent_attempts++;
                req->awaiting_reply = true;
                c->stats.sends++;
                if (retry) {
                    c->stats.retries++;
                    mx_log(MX_LOG_INFO, "bus.request_retry", MX_KV("peer_role", c->name),
                           MX_KV("endpoint", ep->zs->label), MX_KVU("request_id", req->id),
                           MX_KVU("attempt", req->sent_attempts));
                }
                evtimer_add(req->timer, c->tv_attempt);
                return;
            }
            int err = errno;
            c->stats.send_refused++;
            if (err != EAGAIN)
                mx_log(MX_LOG_WARNING, "bus.send_failed", MX_KV("peer_role", c->name),
                       MX_KV("endpoint", ep->zs->label), MX_KVU("request_id", req->id),
                       MX_KV("error", zmq_strerror(err)));
            else if (mx_log_enabled(MX_LOG_DEBUG))
                mx_log(MX_LOG_DEBUG, "bus.send_refused", MX_KV("peer_role", c->name),
                       MX_KV("endpoint", ep->zs->label), MX_KVU("request_id", req->id));
        }
    }
    /* Nobody took it: offer it again soon. Not an attempt; the deadline
     * still bounds how long this may go on. */
    req->awaiting_reply = false;
    evtimer_add(req->timer, c->tv_unsent);
}

static void client_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct client_req *req = arg;
    struct mx_client *c = req->client;
    (void)fd;
    (void)what;
    uint64_t now = now_ms();
    if (req->awaiting_reply) {
        struct client_endpoint *ep = &c->eps[req->last_ep];
        ep->down_until_ms = now + c->backoff_ms;
        mx_log(MX_LOG_NOTICE, "bus.attempt_timeout", MX_KV("peer_role", c->name),
               MX_KV("endpoint", ep->zs->label), MX_KVU("request_id", req->id),
               MX_KVU("attempt", req->sent_attempts), MX_KVU("timeout_ms", c->timeout_ms));
    }
    /* The budget only ends a request that could not be sent anywhere: a
     * slow loop must not eat the attempts the caller asked for. */
    if (req->sent_attempts >= c->max_attempts ||
        (!req->awaiting_reply && now >= req->deadline_ms)) {
        client_hash_take(c, req->id);
        c->stats.timeouts++;
        mx_log(MX_LOG_WARNING, "bus.request_timeout", MX_KV("peer_role", c->name),
               MX_KVU("request_id", req->id), MX_KVU("attempts", req->sent_attempts));
        mx_client_done_fn *cb = req->cb;
        void *ctx = req->ctx;
        client_req_free(req); /* frees this (non-persistent) timer: allowed */
        client_call(c, cb, ctx, MX_BUS_TIMEOUT, NULL);
        return;
    }
    client_send(c, req);
}

static bool client_on_msg(void *owner, zmq_msg_t *parts, size_t nparts, bool too_many)
{
    struct client_endpoint *ep = owner;
    struct mx_client *c = ep->client;
    struct mx_frame_view view;
    const char *error = "expected 1 part";
    if (nparts != 1 || too_many ||
        mx_frame_parse(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), &view, &error) < 0) {
        c->stats.bad_frames++;
        mx_log(MX_LOG_WARNING, "bus.bad_reply", MX_KV("peer_role", c->name),
               MX_KV("endpoint", ep->zs->label), MX_KV("reason", error));
        return false;
    }
    struct client_req *req = client_hash_take(c, view.request_id);
    if (req == NULL) {
        /* Answer to an attempt we stopped waiting for (timed out, answered
         * by another instance, cancelled): expected with retries. */
        c->stats.late_replies++;
        if (mx_log_enabled(MX_LOG_DEBUG))
            mx_log(MX_LOG_DEBUG, "bus.reply_late", MX_KV("peer_role", c->name),
                   MX_KV("endpoint", ep->zs->label), MX_KVU("request_id", view.request_id));
        return false;
    }
    uint32_t status;
    uint64_t now = now_ms();
    if (!c->stale_epoch_is_reply && mx_frame_get_u32(&view, F_STATUS, &status) == 0 &&
        status == MX_STATUS_STALE_EPOCH && now < req->deadline_ms) {
        /* That instance is not the primary (a replica, fenced, or an old
         * primary): not an attempt that failed, so it costs none. Ask the
         * others at once; when every instance says so (a failover in
         * progress) ask again shortly, until the request's budget ends. */
        ep->down_until_ms = now + MX_BUS_STALE_BACKOFF_MS;
        req->sent_attempts--;
        req->awaiting_reply = false;
        client_hash_insert(c, req);
        evtimer_del(req->timer);
        bool other = false;
        for (size_t i = 0; i < c->n_eps && !other; i++)
            other = c->eps[i].down_until_ms <= now;
        if (mx_log_enabled(MX_LOG_DEBUG))
            mx_log(MX_LOG_DEBUG, "bus.not_primary", MX_KV("peer_role", c->name),
                   MX_KV("endpoint", ep->zs->label), MX_KVU("request_id", req->id));
        if (other)
            client_send(c, req);
        else
            evtimer_add(req->timer, c->tv_unsent);
        return false;
    }
    ep->down_until_ms = 0; /* it answers after all */
    c->stats.replies++;
    mx_client_done_fn *cb = req->cb;
    void *ctx = req->ctx;
    client_req_free(req);
    return client_call(c, cb, ctx, MX_BUS_REPLY, &view);
}

static void client_init_ids(struct mx_client *c)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^
               ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    }
    /* Leave room below 2^64 so the counter never wraps onto 0 in practice;
     * 0 means "no request" on the wire. */
    c->next_id = (seed >> 1) + 1;
}

static const struct timeval *client_common_timeout(struct mx_client *c, struct timeval *plain,
                                                   unsigned ms)
{
    plain->tv_sec = ms / 1000;
    plain->tv_usec = (ms % 1000) * 1000;
    const struct timeval *tv = event_base_init_common_timeout(c->bus->base, plain);
    return tv != NULL ? tv : plain;
}

int mx_client_new(struct mx_bus *bus, const char *const *endpoints, size_t n,
                  const struct mx_client_config *config, struct mx_client **client_r,
                  const char **error_r)
{
    if (n == 0) {
        *error_r = "no endpoints";
        return -1;
    }
    struct mx_client *c = mx_calloc(1, sizeof *c);
    c->bus = bus;
    c->name = mx_strdup(config != NULL && config->name != NULL ? config->name : "peer");
    c->timeout_ms = config != NULL && config->timeout_ms != 0 ? config->timeout_ms
                                                              : CLIENT_TIMEOUT_DEFAULT_MS;
    c->max_attempts = config != NULL && config->max_attempts != 0 ? config->max_attempts
                                                                  : CLIENT_ATTEMPTS_DEFAULT;
    c->backoff_ms = config != NULL && config->backoff_ms != 0 ? config->backoff_ms
                                                              : CLIENT_BACKOFF_DEFAULT_MS;
    c->stale_epoch_is_reply = config != NULL && config->stale_epoch_is_reply;
    c->tv_attempt = client_common_timeout(c, &c->tv_attempt_plain, c->timeout_ms);
    c->tv_unsent = client_common_timeout(
        c, &c->tv_unsent_plain,
        c->timeout_ms < MX_BUS_UNSENT_RETRY_MS ? c->timeout_ms : MX_BUS_UNSENT_RETRY_MS);
    c->hash_bits = CLIENT_HASH_BITS_MIN;
    c->buckets = mx_calloc((size_t)1 << c->hash_bits, sizeof *c->buckets);
    client_init_ids(c);
    c->eps = mx_calloc(n, sizeof *c->eps);
    for (size_t i = 0; i < n; i++) {
        struct client_endpoint *ep = &c->eps[i];
        ep->client = c;
        ep->zs = zsock_new(bus, ZMQ_DEALER, endpoints[i], client_on_msg, ep, error_r);
        if (ep->zs == NULL)
            goto fail;
        c->n_eps++;
        if (zmq_connect(ep->zs->sock, endpoints[i]) != 0) {
            bus_fail(bus, error_r, "bus.connect_failed", endpoints[i], "connect %s: %s",
                     endpoints[i], zmq_strerror(errno));
            goto fail;
        }
        if (zsock_watch(ep->zs, error_r) < 0)
            goto fail;
    }
    *client_r = c;
    return 0;
fail:
    client_destroy(c);
    return -1;
}

void mx_client_free(struct mx_client **client_p)
{
    struct mx_client *c = *client_p;
    if (c == NULL)
        return;
    *client_p = NULL;
    if (c->dead)
        return;
    c->dead = true;
    /* Tell every waiter now, while its ctx is surely alive. Re-read the
     * bucket each time: a callback may cancel other requests. */
    c->busy++;
    for (size_t i = 0; i < ((size_t)1 << c->hash_bits); i++) {
        while (c->buckets[i] != NULL) {
            struct client_req *req = c->buckets[i];
            c->buckets[i] = req->hnext;
            c->stats.pending--;
            mx_client_done_fn *cb = req->cb;
            void *ctx = req->ctx;
            client_req_free(req);
            cb(ctx, MX_BUS_CANCELLED, NULL);
        }
    }
    c->busy--;
    if (c->busy == 0)
        client_destroy(c);
    /* else the callback running now destroys it on return (client_call) */
}

int mx_client_request(struct mx_client *c, struct mx_frame *frame, mx_client_done_fn *cb,
                      void *ctx, uint64_t *request_id_r, const char **error_r)
{
    if (c->dead) {
        *error_r = "client is being freed";
        return -1;
    }
    const uint8_t *data;
    size_t len;
    const char *error;
    if (mx_frame_finish(frame, &data, &len, &error) < 0) {
        mx_log(MX_LOG_ERR, "bus.request_unusable", MX_KV("peer_role", c->name),
               MX_KV("reason", error));
        *error_r = "request frame unusable";
        return -1;
    }
    struct client_req *req = mx_calloc(1, sizeof *req);
    req->client = c;
    req->id = c->next_id++;
    req->data = mx_memdup(data, len);
    req->len = len;
    put_be64(req->data + MX_WIRE_OFF_REQUEST_ID, req->id);
    /* A caller re-submitting a frame gets a fresh first attempt. */
    put_be32(req->data + MX_WIRE_OFF_FLAGS,
             get_be32(req->data + MX_WIRE_OFF_FLAGS) & ~(uint32_t)MX_FRAME_F_RETRY);
    req->cb = cb;
    req->ctx = ctx;
    req->deadline_ms = now_ms() + (uint64_t)c->timeout_ms * c->max_attempts;
    req->timer = evtimer_new(c->bus->base, client_on_timer, req);
    if (req->timer == NULL) {
        mx_log(MX_LOG_CRIT, "alloc.fail", MX_KV("what", "evtimer_new"));
        abort();
    }
    client_hash_insert(c, req);
    c->stats.requests++;
    if (request_id_r != NULL)
        *request_id_r = req->id;
    client_send(c, req);
    return 0;
}

int mx_client_cancel(struct mx_client *c, uint64_t request_id)
{
    struct client_req *req = client_hash_take(c, request_id);
    if (req == NULL)
        return -1;
    client_req_free(req);
    return 0;
}

void mx_client_get_stats(const struct mx_client *c, struct mx_client_stats *stats_r)
{
    *stats_r = c->stats;
}

/* ---- PUB -------------------------------------------------------------- */

struct mx_pub {
    struct mx_zsock *zs;
    char *endpoint;
};

int mx_pub_new(struct mx_bus *bus, const char *endpoint, struct mx_pub **pub_r,
               const char **error_r)
{
    struct mx_pub *pub = mx_calloc(1, sizeof *pub);
    /* No on_msg: PUB never reads, but the watch processes subscriptions. */
    pub->zs = zsock_new(bus, ZMQ_PUB, endpoint, NULL, pub, error_r);
    if (pub->zs == NULL) {
        free(pub);
        return -1;
    }
    if (zmq_bind(pub->zs->sock, endpoint) != 0) {
        bus_fail(bus, error_r, "bus.bind_failed", endpoint, "bind %s: %s", endpoint,
                 zmq_strerror(errno));
        mx_pub_free(&pub);
        return -1;
    }
    char last[1024];
    size_t size = sizeof last;
    if (zmq_getsockopt(pub->zs->sock, ZMQ_LAST_ENDPOINT, last, &size) == 0 && size > 1)
        pub->endpoint = mx_strndup(last, size - 1);
    else
        pub->endpoint = mx_strdup(endpoint);
    if (zsock_watch(pub->zs, error_r) < 0) {
        mx_pub_free(&pub);
        return -1;
    }
    *pub_r = pub;
    return 0;
}

void mx_pub_free(struct mx_pub **pub_p)
{
    struct mx_pub *pub = *pub_p;
    if (pub == NULL)
        return;
    *pub_p = NULL;
    zsock_free(&pub->zs);
    free(pub->endpoint);
    free(pub);
}

const char *mx_pub_endpoint(const struct mx_pub *pub)
{
    return pub->endpoint;
}

int mx_pub_send(struct mx_pub *pub, const char *topic, struct mx_frame *frame, const char **error_r)
{
    size_t topic_len = strlen(topic);
    if (topic_len == 0 || topic_len > MX_BUS_TOPIC_MAX) {
        *error_r = "topic empty or longer than MX_BUS_TOPIC_MAX";
        return -1;
    }
    const uint8_t *data;
    size_t len;
    const char *error;
    if (mx_frame_finish(frame, &data, &len, &error) < 0) {
        mx_log(MX_LOG_ERR, "bus.publish_unusable", MX_KV("topic", topic), MX_KV("reason", error));
        *error_r = "frame unusable";
        return -1;
    }
    zmq_msg_t msg;
    zsock_msg_from(&msg, data, len);
    if (zsock_send(pub->zs, topic, topic_len, &msg) < 0) {
        /* PUB does not refuse for HWM (it drops); this is ETERM and the like. */
        mx_log(MX_LOG_WARNING, "bus.publish_failed", MX_KV("endpoint", pub->endpoint),
               MX_KV("topic", topic), MX_KV("error", zmq_strerror(errno)));
        *error_r = "zmq_send failed";
        return -1;
    }
    return 0;
}

/* ---- SUB -------------------------------------------------------------- */

struct mx_sub {
    struct mx_zsock *zs;
    mx_sub_handler_fn *handler;
    void *ctx;
    uint64_t bad_frames;
    int busy;
    bool dead;
};

static void sub_destroy(struct mx_sub *sub)
{
    zsock_free(&sub->zs);
    free(sub);
}

static bool sub_on_msg(void *owner, zmq_msg_t *parts, size_t nparts, bool too_many)
{
    struct mx_sub *sub = owner;
    const char *reason = NULL;
    char topic[MX_BUS_TOPIC_MAX + 1];
    struct mx_frame_view view;
    if (nparts != 2 || too_many) {
        reason = "expected 2 parts [topic][frame]";
    } else {
        size_t tlen = zmq_msg_size(&parts[0]);
        if (tlen == 0 || tlen > MX_BUS_TOPIC_MAX ||
            memchr(zmq_msg_data(&parts[0]), '\0', tlen) != NULL) {
            reason = "bad topic";
        } else {
            memcpy(topic, zmq_msg_data(&parts[0]), tlen);
            topic[tlen] = '\0';
            mx_frame_parse(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &view, &reason);
        }
    }
    if (reason != NULL) {
        sub->bad_frames++;
        const char *addr = nparts > 0 ? zmq_msg_gets(&parts[nparts - 1], "Peer-Address") : NULL;
        mx_log(MX_LOG_WARNING, "bus.bad_publication", MX_KV("endpoint", sub->zs->label),
               MX_KV("peer_addr", addr), MX_KV("reason", reason));
        return false;
    }
    sub->busy++;
    sub->handler(sub->ctx, topic, &view);
    sub->busy--;
    if (sub->dead) {
        if (sub->busy == 0)
            sub_destroy(sub);
        return true;
    }
    return false;
}

int mx_sub_new(struct mx_bus *bus, const char *const *endpoints, size_t n,
               const char *topic_prefix, mx_sub_handler_fn *handler, void *ctx,
               struct mx_sub **sub_r, const char **error_r)
{
    if (n == 0) {
        *error_r = "no endpoints";
        return -1;
    }
    struct mx_sub *sub = mx_calloc(1, sizeof *sub);
    sub->handler = handler;
    sub->ctx = ctx;
    /* label: all endpoints, so a log line names every possible sender */
    char *label = mx_strdup(endpoints[0]);
    for (size_t i = 1; i < n; i++) {
        char *longer = mx_asprintf("%s,%s", label, endpoints[i]);
        free(label);
        label = longer;
    }
    sub->zs = zsock_new(bus, ZMQ_SUB, label, sub_on_msg, sub, error_r);
    free(label);
    if (sub->zs == NULL) {
        free(sub);
        return -1;
    }
    if (zmq_setsockopt(sub->zs->sock, ZMQ_SUBSCRIBE, topic_prefix, strlen(topic_prefix)) != 0) {
        bus_fail(bus, error_r, "bus.subscribe_failed", endpoints[0], "subscribe '%s': %s",
                 topic_prefix, zmq_strerror(errno));
        sub_destroy(sub);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (zmq_connect(sub->zs->sock, endpoints[i]) != 0) {
            bus_fail(bus, error_r, "bus.connect_failed", endpoints[i], "connect %s: %s",
                     endpoints[i], zmq_strerror(errno));
            sub_destroy(sub);
            return -1;
        }
    }
    if (zsock_watch(sub->zs, error_r) < 0) {
        sub_destroy(sub);
        return -1;
    }
    *sub_r = sub;
    return 0;
}

void mx_sub_free(struct mx_sub **sub_p)
{
    struct mx_sub *sub = *sub_p;
    if (sub == NULL)
        return;
    *sub_p = NULL;
    if (sub->dead)
        return;
    sub->dead = true;
    if (sub->busy == 0)
        sub_destroy(sub);
}

uint64_t mx_sub_bad_frames(const struct mx_sub *sub)
{
    return sub->bad_frames;
}

/* endpoint_matches - configured vs reported endpoint: equal, or the
 * reported one binds a wildcard host (0.0.0.0, the star, [::]) and the
 * ports agree. */
static bool endpoint_matches(const char *configured, const char *reported)
{
    if (strcmp(configured, reported) == 0)
        return true;
    const char *wild[] = { "tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:" };
    for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++) {
        size_t wl = strlen(wild[i]);
        if (strncmp(reported, wild[i], wl) == 0) {
            const char *port = strrchr(configured, ':');
            return port && strcmp(port + 1, reported + wl) == 0;
        }
    }
    return false;
}

int mx_client_prefer(struct mx_client *c, const char *endpoint)
{
    size_t i = 0;
    while (i < c->n_eps && !endpoint_matches(c->eps[i].zs->label, endpoint))
        i++;
    if (i == c->n_eps)
        return -1;
    bool changed = !c->has_preferred || c->preferred != i;
    c->preferred = i;
    c->has_preferred = true;
    c->eps[i].down_until_ms = 0;
    if (!changed)
        return 0;
    mx_log(MX_LOG_NOTICE, "bus.preferred_instance", MX_KV("peer_role", c->name),
           MX_KV("endpoint", c->eps[i].zs->label));
    /* requests waiting on another instance (a primary that went silent)
     * go to the new one now instead of after their timeout; receivers
     * deduplicate the repeat (F_RETRY) */
    for (size_t b = 0; b < ((size_t)1 << c->hash_bits); b++)
        for (struct client_req *req = c->buckets[b]; req != NULL; req = req->hnext)
            if (req->awaiting_reply && req->has_last_ep && req->last_ep != i) {
                evtimer_del(req->timer);
                unsigned before = req->sent_attempts;
                client_send(c, req); /* a retry: F_RETRY set */
                if (req->sent_attempts > before)
                    req->sent_attempts = before; /* the silent one costs no attempt */
            }
    return 0;
}
