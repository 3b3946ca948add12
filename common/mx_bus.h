/* mx_bus - the ZeroMQ bus between roles, driven by a libevent loop.
 *
 * Two patterns, both fully asynchronous (nothing here ever blocks the loop):
 *
 *   request/ack   mx_client (one DEALER per instance of the peer role) ->
 *                 mx_server (ROUTER). Every request carries a 64-bit
 *                 request_id; the reply echoes it. The client keeps its copy
 *                 of the frame, re-sends it (MX_FRAME_F_RETRY set) to ANOTHER
 *                 instance when no reply came within timeout_ms, and calls the
 *                 caller's callback exactly once: with the reply, with
 *                 MX_BUS_TIMEOUT, or with MX_BUS_CANCELLED when the client is
 *                 freed. ZeroMQ itself loses messages (HWM drops, a peer that
 *                 dies with messages queued, a reconnect replays nothing); the
 *                 ack is what makes a hand-off safe (see mx_wire.h).
 *   PUB/SUB       mx_pub / mx_sub, 2-part messages [topic][frame]. Lossy BY
 *                 DESIGN: PUB drops at the high-water mark and while no
 *                 subscriber is connected; a subscriber must tolerate gaps
 *                 (sequence numbers, if needed, are the role's job).
 *
 * Event-loop integration. ZMQ_FD is edge-triggered in effect: it signals
 * "socket state may have changed", not "a message is readable", and any
 * zmq call on the socket (zmq_send included) may consume that signal. So on
 * every wake-up a socket is drained while ZMQ_EVENTS says ZMQ_POLLIN, at
 * most MX_BUS_BATCH messages per wake-up (then the event is re-activated so
 * other fds get their turn), and after every send a re-check is scheduled
 * (event_active) in case the send swallowed the edge.
 *
 * Reentrancy. Callbacks may do anything, including freeing the very
 * server/client/sub whose callback is running: the object is then marked
 * dead and its memory released when the dispatch unwinds (like Redis'
 * freeClientAsync). Pointers the caller holds are set to NULL by the free
 * functions as usual.
 *
 * What is NOT guaranteed: exactly-once. A request may be processed by two
 * instances (reply lost, or slow rather than dead); receivers deduplicate on
 * message_id (F_RETRY is a hint that a duplicate is possible). Order between
 * requests is not kept across retries. A reply tells the client that ONE
 * attempt was processed, not which.
 *
 * Threads: none. Every object belongs to the thread running its event_base.
 *
 * Error strings: constructors return 0 / -1; on -1 *error_r points into
 * the bus (valid until the next failing call on the same bus) and names
 * the endpoint and the zmq reason. Failures are also logged.
 */
#ifndef MX_BUS_H
#define MX_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_wire.h"

struct event_base;

/* Messages drained from one socket per loop wake-up before yielding. */
#define MX_BUS_BATCH 256
/* Default ZMQ_SNDHWM / ZMQ_RCVHWM (messages, per peer pipe). */
#define MX_BUS_HWM_DEFAULT 1000
/* How soon a request that NO endpoint accepted (no connected peer yet, or
 * every pipe at its HWM) is offered again. Such a try does not count as an
 * attempt, but once timeout_ms * max_attempts have passed since the request
 * an unsendable request ends with MX_BUS_TIMEOUT. So a request ends after
 * max_attempts sends, each waited timeout_ms for, or after that budget of
 * time when it could not be sent at all (worst case about twice the
 * budget for a mix of both). */
#define MX_BUS_UNSENT_RETRY_MS 50
/* A reply with F_STATUS MX_STATUS_STALE_EPOCH means "I am not the primary"
 * (a store replica or a fenced one, issue 6): the client asks its other
 * endpoints at once, and skips that one this long. Such replies do not use
 * up attempts; the request's time budget (timeout_ms x max_attempts) still
 * ends it, so a shard without any primary gives MX_BUS_TIMEOUT. */
#define MX_BUS_STALE_BACKOFF_MS 500

/* Longest PUB/SUB topic, bytes (topics are short ASCII names). */
#define MX_BUS_TOPIC_MAX 255

struct mx_bus;
struct mx_server;
struct mx_server_request;
struct mx_client;
struct mx_pub;
struct mx_sub;

/* ---- the bus ---------------------------------------------------------- */

/* mx_bus_new - a zmq context bound to this event_base (which must outlive
 * the bus). */
int mx_bus_new(struct event_base *base, struct mx_bus **bus_r, const char **error_r);
/* mx_bus_free - free every server/client/pub/sub first; a bus freed with
 * sockets still open logs bus.free_with_open_sockets and leaks the zmq
 * context rather than block in zmq_ctx_term. */
void mx_bus_free(struct mx_bus **bus);
/* mx_bus_set_hwm - ZMQ_SNDHWM/ZMQ_RCVHWM for sockets created afterwards.
 * Counted in messages: with mail bodies of up to 64 MB in a frame, the
 * memory a full pipe may hold is hwm x frame size. */
void mx_bus_set_hwm(struct mx_bus *bus, int sndhwm, int rcvhwm);

/* ---- server: ROUTER, answers requests --------------------------------- */

/* A request handed to a server handler. It owns copies of the peer's routing
 * identity, the request_id and the message_id until exactly one of
 * mx_server_reply, mx_server_ack or mx_server_request_drop consumes it; the
 * handler may call one of them at once or keep req and call it LATER (after
 * an fsync, from another callback). If the server is freed first, the
 * request turns inert: reply/ack then only free it and return -1. */
typedef void mx_server_handler_fn(void *ctx, struct mx_server_request *req,
                                  const struct mx_frame_view *frame);

/* mx_server_new - bind a ROUTER to endpoint (tcp://host:port, tcp://ip:* for
 * an ephemeral port, ipc://path, inproc://name). handler sees only frames
 * that passed mx_frame_parse; anything malformed is logged with the peer
 * (identity hex, peer address when known) and dropped, and a MSG_ANY_PING
 * is answered by the bus itself (MSG_ANY_ACK, MX_STATUS_OK) without reaching
 * handler. frame points into the received message: valid only during the
 * call. */
int mx_server_new(struct mx_bus *bus, const char *endpoint, mx_server_handler_fn *handler,
                  void *ctx, struct mx_server **server_r, const char **error_r);
/* mx_server_free - close the socket; pending requests turn inert. Safe from
 * inside the server's own handler. */
void mx_server_free(struct mx_server **server);
/* mx_server_endpoint - the endpoint actually bound (ZMQ_LAST_ENDPOINT: the
 * real port for tcp://ip:*). */
const char *mx_server_endpoint(const struct mx_server *server);

/* mx_server_reply - send reply (built by the caller; its request_id is
 * overwritten with the request's) to the requester and free *req (set to
 * NULL), whatever happens. The caller keeps and frees reply. -1 with a
 * static error_r if the frame is unusable, the server is gone, or zmq
 * refused (peer disconnected: EHOSTUNREACH, or its pipe is at the HWM:
 * EAGAIN); the requester then times out and retries, so -1 is not fatal. */
int mx_server_reply(struct mx_server_request **req, struct mx_frame *reply,
                    const char **error_r);
/* mx_server_ack - mx_server_reply with a MSG_ANY_ACK carrying F_STATUS, the
 * request's message_id and, if text != NULL, F_TEXT. */
int mx_server_ack(struct mx_server_request **req, enum mx_status status, const char *text,
                  const char **error_r);
/* mx_server_request_drop - free without answering (the requester will time
 * out and retry elsewhere). NULL *req is allowed. */
void mx_server_request_drop(struct mx_server_request **req);
uint64_t mx_server_request_id(const struct mx_server_request *req);
/* mx_server_request_peer - the requester's routing identity in hex, for logs. */
const char *mx_server_request_peer(const struct mx_server_request *req);

struct mx_server_stats {
    uint64_t requests;   /* frames handed to the handler */
    uint64_t pings;      /* MSG_ANY_PING answered by the bus */
    uint64_t bad_frames; /* malformed, dropped */
    uint64_t replies;    /* replies zmq accepted */
    uint64_t reply_failures;
    uint64_t pending;    /* requests not yet answered or dropped */
};
void mx_server_get_stats(const struct mx_server *server, struct mx_server_stats *stats_r);

/* ---- client: one DEALER per instance, request/ack with retries --------- */

enum mx_bus_result {
    MX_BUS_REPLY = 0,  /* reply is the answer (request_id matched) */
    MX_BUS_TIMEOUT,    /* no answer after max_attempts sends, or unsendable for
                        * the whole budget (MX_BUS_UNSENT_RETRY_MS); reply NULL */
    MX_BUS_CANCELLED,  /* the client was freed; reply NULL */
};

/* Called exactly once per request, never from inside mx_client_request.
 * reply points into the received message: valid only during the call. */
typedef void mx_client_done_fn(void *ctx, enum mx_bus_result result,
                               const struct mx_frame_view *reply);

struct mx_client_config {
    const char *name;      /* peer role, for logs ("delivery"); NULL = "peer" */
    unsigned timeout_ms;   /* wait per sent attempt; 0 = 5000 */
    unsigned max_attempts; /* sends before MX_BUS_TIMEOUT; 0 = 3 */
    unsigned backoff_ms;   /* an endpoint whose attempt timed out is skipped
                            * this long while others exist; 0 = 10000 */
    bool stale_epoch_is_reply; /* hand a STALE_EPOCH reply to the callback instead
                                * of asking the other endpoints (store
                                * replication: a replica's refusal fences the
                                * primary that sent it) */
};

/* mx_client_new - connect one DEALER (ZMQ_IMMEDIATE, so nothing queues for
 * an instance that is not connected) to each of endpoints[0..n). config may
 * be NULL for the defaults. */
int mx_client_new(struct mx_bus *bus, const char *const *endpoints, size_t n,
                  const struct mx_client_config *config, struct mx_client **client_r,
                  const char **error_r);
/* mx_client_free - every pending request's callback runs with
 * MX_BUS_CANCELLED synchronously, before this returns (so a session can
 * release what ctx points to); new requests from those callbacks are
 * refused. Safe from inside the client's own callbacks. */
void mx_client_free(struct mx_client **client);

/* mx_client_request - send frame (finished here; its request_id and RETRY
 * flag are overwritten) to the next instance, round robin, skipping those in
 * back-off. The bytes are copied: the caller keeps and frees frame. Attempt
 * k+1 goes to another instance than attempt k when there is one. Sets
 * *request_id_r (may be NULL) for mx_client_cancel. -1 with error_r only for
 * an unusable frame or a client being freed; a send zmq refused is not an
 * error (the request waits and is re-offered). */
int mx_client_request(struct mx_client *client, struct mx_frame *frame,
                      mx_client_done_fn *cb, void *ctx, uint64_t *request_id_r,
                      const char **error_r);
/* mx_client_prefer - from now on ask the instance at endpoint first (as
 * configured; a reported wildcard bind "tcp://0.0.0.0:P" matches the
 * configured endpoint with port P): the primary named by mx-ha's cluster
 * map. Requests still waiting for another instance's answer are sent to
 * it at once (F_RETRY set; receivers deduplicate). -1 if no configured
 * endpoint matches. */
int mx_client_prefer(struct mx_client *client, const char *endpoint);

/* mx_client_cancel - forget a pending request: its callback never runs, a
 * reply arriving later is dropped as late. By id, not pointer, so cancelling
 * a request that already completed is harmless: -1 then, 0 if it was
 * pending. */
int mx_client_cancel(struct mx_client *client, uint64_t request_id);

struct mx_client_stats {
    uint64_t requests;     /* accepted by mx_client_request */
    uint64_t sends;        /* frames zmq accepted (first sends + retries) */
    uint64_t retries;      /* of those, re-sends with F_RETRY */
    uint64_t send_refused; /* zmq_send EAGAIN: no connected peer / HWM */
    uint64_t replies;      /* matched a pending request */
    uint64_t timeouts;     /* MX_BUS_TIMEOUT delivered */
    uint64_t late_replies; /* unknown, finished or cancelled request_id */
    uint64_t bad_frames;   /* malformed replies, dropped */
    uint64_t pending;
};
void mx_client_get_stats(const struct mx_client *client, struct mx_client_stats *stats_r);

/* ---- PUB/SUB ---------------------------------------------------------- */

/* mx_pub_new - bind a PUB socket to endpoint. */
int mx_pub_new(struct mx_bus *bus, const char *endpoint, struct mx_pub **pub_r,
               const char **error_r);
void mx_pub_free(struct mx_pub **pub);
const char *mx_pub_endpoint(const struct mx_pub *pub);
/* mx_pub_send - publish [topic][frame]. Never blocks; 0 means zmq took it,
 * NOT that anyone will receive it (PUB drops silently at the HWM and when
 * nobody subscribes). -1 with static error_r for a bad topic or frame. */
int mx_pub_send(struct mx_pub *pub, const char *topic, struct mx_frame *frame,
                const char **error_r);

/* topic is NUL-terminated and at most MX_BUS_TOPIC_MAX bytes; frame passed
 * mx_frame_parse. Both valid only during the call. */
typedef void mx_sub_handler_fn(void *ctx, const char *topic, const struct mx_frame_view *frame);

/* mx_sub_new - one SUB socket connected to endpoints[0..n), subscribed to
 * topics starting with topic_prefix ("" = all). Messages that are not
 * [topic][valid frame] are logged and dropped. */
int mx_sub_new(struct mx_bus *bus, const char *const *endpoints, size_t n,
               const char *topic_prefix, mx_sub_handler_fn *handler, void *ctx,
               struct mx_sub **sub_r, const char **error_r);
/* mx_sub_free - safe from inside the sub's own handler. */
void mx_sub_free(struct mx_sub **sub);
/* mx_sub_bad_frames - messages dropped as malformed (for tests and mon). */
uint64_t mx_sub_bad_frames(const struct mx_sub *sub);

#endif
