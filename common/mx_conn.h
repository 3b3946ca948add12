/* mx_conn - one client connection of a line protocol server (IMAP, POP3)
 * on the libevent loop: PROXY v2 from trusted balancers, implicit TLS or
 * STARTTLS, bounded input and output, idle timeouts, and a close that
 * waits until the last reply really left (also under a TLS filter).
 *
 * The protocol code (the "session") sees three callbacks:
 *   on_ready  the connection is usable (PROXY header read, client address
 *             known): send the greeting.
 *   on_input  bytes may be waiting in the input buffer, or output drained,
 *             or mx_conn_resume() was called: consume what the state
 *             allows. Not called while more than output_high bytes wait to
 *             be sent (a client that does not read stops being served).
 *   on_close  the connection is going away (peer closed, error, timeout,
 *             mx_conn_close): the session releases itself; the conn must
 *             not be used after this returns.
 * All three run from the loop, never from inside an mx_conn_* call made by
 * the session, so the session may call anything from any callback.
 *
 * Why not per-protocol copies: the details here (the socket below a TLS
 * filter keeps reading unless bounded; a handshake alert must be flushed
 * by hand; pipelined plaintext behind STARTTLS must be discarded) are
 * easy to get wrong once and costly to get wrong twice. */
#ifndef MX_CONN_H
#define MX_CONN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

struct event_base;
struct evbuffer;
struct mx_conn;

struct mx_conn_ops {
    void (*on_ready)(void *ctx);
    void (*on_input)(void *ctx, struct evbuffer *in);
    void (*on_close)(void *ctx, const char *reason);
};

/* Every live connection of a server, so a shutdown can say goodbye to
 * each (BYE) and free them instead of abandoning them. */
struct mx_conn_registry {
    struct mx_conn *head;
    size_t count;
};

/* mx_conn_registry_close_all - write goodbye (a complete protocol line, or
 * NULL) to every connection and close it; their on_close callbacks run
 * from the loop, so run the loop until registry->count is 0 (bounded). */
void mx_conn_registry_close_all(struct mx_conn_registry *registry, const char *goodbye,
                                const char *reason);

struct mx_conn_config {
    struct event_base *base;
    SSL_CTX *tls_ctx;      /* NULL: no TLS available (STARTTLS refused) */
    bool implicit_tls;     /* 993/995 style: TLS from the first byte */
    bool expect_proxy;     /* the peer is a trusted balancer: PROXY v2 first */
    unsigned idle_timeout_ms;
    size_t input_high;     /* stop reading from the socket beyond this */
    size_t output_high;    /* stop calling on_input beyond this */
    const char *role;      /* for logs: "imap", "pop3" */
    struct mx_conn_registry *registry; /* NULL: not registered */
};

/* mx_conn_new - take over fd (non-blocking is set here). peer is the TCP
 * peer; with expect_proxy the address from the PROXY header replaces it
 * before on_ready. NULL only if libevent cannot allocate (fd closed). */
struct mx_conn *mx_conn_new(const struct mx_conn_config *cfg, int fd, const struct sockaddr *peer,
                            const struct mx_conn_ops *ops, void *ctx, const char *sid);

/* Client address (after PROXY) as text, and port. */
const char *mx_conn_peer_ip(const struct mx_conn *conn);
unsigned mx_conn_peer_port(const struct mx_conn *conn);
bool mx_conn_is_tls(const struct mx_conn *conn);
bool mx_conn_has_tls_ctx(const struct mx_conn *conn);
/* mx_conn_tls_info - "TLSv1.3 TLS_AES_256_GCM_SHA384" or "" */
const char *mx_conn_tls_info(const struct mx_conn *conn, char *buf, size_t size);

struct evbuffer *mx_conn_output(struct mx_conn *conn);
/* mx_conn_input - what the client sent and the session did not consume. */
struct evbuffer *mx_conn_input(struct mx_conn *conn);
void mx_conn_printf(struct mx_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mx_conn_write(struct mx_conn *conn, const void *data, size_t len);
/* Bytes written but not yet on the wire (TLS filter and socket). */
size_t mx_conn_output_pending(struct mx_conn *conn);

/* mx_conn_starttls - after the "OK, begin TLS" reply was written: drop
 * plaintext pipelined behind the command and start the handshake. -1 if
 * TLS cannot be set up (the conn is closing then). */
int mx_conn_starttls(struct mx_conn *conn);

/* mx_conn_compress - COMPRESS=DEFLATE (RFC 4978): call right after the
 * tagged "OK DEFLATE active" was written, in the same callback. That reply
 * and everything written before goes out uncompressed; everything written
 * after is deflated (one sync flush per turn of the loop) and all input
 * from now on, including bytes already read behind the command, is
 * inflated. A corrupt stream or a decompression bomb closes the conn
 * (on_close reason "COMPRESS: ..."). -1 if already compressed or not open,
 * or if the filter cannot be set up (the conn is closing then).
 * Afterwards mx_conn_starttls refuses (TLS comes first, RFC 4978). */
int mx_conn_compress(struct mx_conn *conn);
bool mx_conn_is_compressed(const struct mx_conn *conn);

/* mx_conn_set_idle_timeout - read/write inactivity limit from now on
 * (login timeout vs. authenticated idle vs. IDLE). */
void mx_conn_set_idle_timeout(struct mx_conn *conn, unsigned ms);

/* mx_conn_resume - call on_input soon (after an asynchronous step). */
void mx_conn_resume(struct mx_conn *conn);

/* mx_conn_close_after_flush - stop reading, send what is written (bounded
 * wait), then close: for LOGOUT / QUIT / BYE. */
void mx_conn_close_after_flush(struct mx_conn *conn, const char *reason);
/* mx_conn_close - close now; on_close runs from the loop. */
void mx_conn_close(struct mx_conn *conn, const char *reason);

/* mx_conn_peer_closed - the client half-closed: the session decides
 * whether pipelined input still gets answered. */
bool mx_conn_peer_closed(const struct mx_conn *conn);

#endif
