/* test_deflate - the COMPRESS=DEFLATE filter (mx_deflate) and
 * mx_conn_compress, over socketpairs: our filter against itself, against a
 * plain zlib peer (as a real client: Python's zlib.compressobj(wbits=-15)
 * produces the same stream), partial input, batching of many small writes,
 * corrupt input and a decompression bomb. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/time.h>
#include <zlib.h>

#include "mx_conn.h"
#include "mx_deflate.h"
#include "mx_tls.h"

/* ---- a plain zlib peer: what an IMAP client does ---- */

struct raw_peer {
    z_stream out; /* client -> server */
    z_stream in;  /* server -> client */
};

static void raw_peer_init(struct raw_peer *p)
{
    memset(p, 0, sizeof *p);
    assert_int_equal(deflateInit2(&p->out, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    assert_int_equal(inflateInit2(&p->in, -15), Z_OK);
}

static void raw_peer_end(struct raw_peer *p)
{
    deflateEnd(&p->out);
    inflateEnd(&p->in);
}

/* raw_compress - deflate data and sync-flush; the result is malloc'd. */
static unsigned char *raw_compress(struct raw_peer *p, const void *data, size_t len, int flush,
                                   size_t *out_len)
{
    size_t cap = deflateBound(&p->out, (uLong)len) + 64, have = 0;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    p->out.next_in = (unsigned char *)(uintptr_t)data;
    p->out.avail_in = (uInt)len;
    do {
        if (cap - have < 64) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        p->out.next_out = buf + have;
        p->out.avail_out = (uInt)(cap - have);
        int rc = deflate(&p->out, flush);
        assert_true(rc == Z_OK || rc == Z_BUF_ERROR);
        have = cap - p->out.avail_out;
    } while (p->out.avail_out == 0 || p->out.avail_in > 0);
    *out_len = have;
    return buf;
}

/* raw_inflate - inflate all of data into text (appended, NUL kept). */
static void raw_inflate(struct raw_peer *p, const void *data, size_t len, char *text,
                        size_t text_cap, size_t *text_len)
{
    p->in.next_in = (unsigned char *)(uintptr_t)data;
    p->in.avail_in = (uInt)len;
    while (p->in.avail_in > 0) {
        assert_true(*text_len < text_cap - 1);
        p->in.next_out = (unsigned char *)text + *text_len;
        p->in.avail_out = (uInt)(text_cap - 1 - *text_len);
        int rc = inflate(&p->in, Z_SYNC_FLUSH);
        assert_true(rc == Z_OK || rc == Z_BUF_ERROR);
        *text_len = text_cap - 1 - p->in.avail_out;
    }
    text[*text_len] = '\0';
}

static void write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* read_some - what the fd has within timeout_ms (0 bytes: nothing came). */
static size_t read_some(int fd, void *buf, size_t cap, int timeout_ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    ssize_t n = read(fd, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

/* ---- a filter end on one side of a socketpair ---- */

struct filter_end {
    struct event_base *base;
    struct bufferevent *bev;
    struct mx_deflate *z;
    struct evbuffer *got;  /* everything read */
    bool drain;            /* read callback consumes the input */
    size_t max_input_seen; /* the filter's input buffer at its largest */
    short events;
};

static void end_on_read(struct bufferevent *bev, void *arg)
{
    struct filter_end *e = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_get_length(in) > e->max_input_seen)
        e->max_input_seen = evbuffer_get_length(in);
    if (e->drain)
        evbuffer_remove_buffer(in, e->got, evbuffer_get_length(in));
}

static void end_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct filter_end *e = arg;
    (void)bev;
    e->events |= what;
}

static void end_open(struct filter_end *e, struct event_base *base, int fd,
                     const struct mx_deflate_limits *limits, size_t input_high)
{
    memset(e, 0, sizeof *e);
    e->base = base;
    e->got = evbuffer_new();
    e->drain = true;
    evutil_make_socket_nonblocking(fd);
    struct bufferevent *sock =
        bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    assert_non_null(sock);
    e->bev = mx_deflate_filter_new(sock, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, limits,
                                   &e->z);
    assert_non_null(e->bev);
    bufferevent_setcb(e->bev, end_on_read, NULL, end_on_event, e);
    bufferevent_setwatermark(e->bev, EV_READ, 0, input_high);
    bufferevent_enable(e->bev, EV_READ | EV_WRITE);
}

static void end_close(struct filter_end *e)
{
    bufferevent_free(e->bev);
    event_base_loop(e->base, EVLOOP_NONBLOCK); /* let deferred frees run */
    evbuffer_free(e->got);
}

static void run_loop_ms(struct event_base *base, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

/* A text that compresses like mail: repetitive headers, varying numbers. */
static char *make_text(size_t len)
{
    char *text = malloc(len + 1);
    assert_non_null(text);
    size_t off = 0;
    for (unsigned i = 0; off < len; i++) {
        char line[128];
        int n = snprintf(line, sizeof line, "* %u FETCH (UID %u FLAGS (\\Seen) RFC822.SIZE %u)\r\n",
                         i + 1, 1000 + i * 7, (i * 2654435761u) % 100000);
        size_t take = (size_t)n < len - off ? (size_t)n : len - off;
        memcpy(text + off, line, take);
        off += take;
    }
    text[len] = '\0';
    return text;
}

/* Our filter on both ends: a big write one way arrives intact, in order,
 * although it crosses the socket in many reads. */
static void test_round_trip_both_ends(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct filter_end a, b;
    end_open(&a, base, sv[0], NULL, 16384);
    end_open(&b, base, sv[1], NULL, 16384);

    const size_t len = 300000;
    char *text = make_text(len);
    bufferevent_write(a.bev, text, len);
    bufferevent_write(b.bev, "a OK reverse direction\r\n", 24);
    for (int i = 0; i < 200 && evbuffer_get_length(b.got) < len; i++)
        run_loop_ms(base, 10);
    assert_int_equal(evbuffer_get_length(b.got), len);
    assert_memory_equal(evbuffer_pullup(b.got, -1), text, len);
    assert_int_equal(evbuffer_get_length(a.got), 24);
    assert_memory_equal(evbuffer_pullup(a.got, -1), "a OK reverse direction\r\n", 24);
    /* the read side never held more than its watermark plus one step */
    assert_true(b.max_input_seen <= 16384 + 2 * 4096);

    struct mx_deflate_stats st;
    mx_deflate_get_stats(a.z, &st);
    assert_int_equal(st.out_plain, len);
    assert_true(st.out_compressed < len / 3); /* it does compress */
    mx_deflate_get_stats(b.z, &st);
    assert_int_equal(st.in_plain, len);
    assert_null(mx_deflate_error(a.z));
    assert_null(mx_deflate_error(b.z));
    assert_int_equal(a.events | b.events, 0);

    free(text);
    end_close(&a);
    end_close(&b);
    event_base_free(base);
}

/* A zlib client's stream arriving one byte at a time is reassembled; the
 * server's reply written in one turn is decodable from what is on the wire
 * right after it, without any further server write (sync flush). */
static void test_partial_input_and_sync_flush(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct filter_end srv;
    end_open(&srv, base, sv[0], NULL, 65536);
    struct raw_peer client;
    raw_peer_init(&client);

    const char *cmd = "a1 SELECT INBOX\r\na2 FETCH 1:* (FLAGS)\r\n";
    size_t zlen;
    unsigned char *z = raw_compress(&client, cmd, strlen(cmd), Z_SYNC_FLUSH, &zlen);
    for (size_t i = 0; i < zlen; i++) {
        write_all(sv[1], z + i, 1);
        run_loop_ms(base, 1);
    }
    free(z);
    assert_int_equal(evbuffer_get_length(srv.got), strlen(cmd));
    assert_memory_equal(evbuffer_pullup(srv.got, -1), cmd, strlen(cmd));

    const char *reply = "* 1 EXISTS\r\na1 OK [READ-WRITE] SELECT completed\r\n";
    bufferevent_write(srv.bev, reply, strlen(reply));
    run_loop_ms(base, 20);
    unsigned char wire[4096];
    size_t n = read_some(sv[1], wire, sizeof wire, 1000);
    assert_true(n > 4);
    /* the batch ends with the empty stored block of a sync flush */
    assert_memory_equal(wire + n - 4, "\x00\x00\xff\xff", 4);
    char text[4096];
    size_t text_len = 0;
    raw_inflate(&client, wire, n, text, sizeof text, &text_len);
    assert_string_equal(text, reply);
    assert_int_equal(mx_deflate_pending(srv.z), 0);

    raw_peer_end(&client);
    close(sv[1]);
    end_close(&srv);
    event_base_free(base);
}

/* Many small writes in one turn become one batch with one flush, not one
 * flush (and its >= 5 bytes of block overhead) per write. */
static void test_many_small_writes(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct filter_end srv;
    end_open(&srv, base, sv[0], NULL, 65536);
    struct raw_peer client;
    raw_peer_init(&client);

    const unsigned writes = 2000;
    size_t plain_len = 0;
    for (unsigned i = 0; i < writes; i++) {
        char line[64];
        int len = snprintf(line, sizeof line, "* %u EXPUNGE\r\n", i + 1);
        bufferevent_write(srv.bev, line, (size_t)len);
        plain_len += (size_t)len;
    }
    assert_true(mx_deflate_pending(srv.z) > 0); /* held until the turn ends */
    run_loop_ms(base, 20);
    assert_int_equal(mx_deflate_pending(srv.z), 0);

    static unsigned char wire[65536];
    size_t n = 0, got;
    while ((got = read_some(sv[1], wire + n, sizeof wire - n, 200)) > 0)
        n += got;
    assert_true(n < writes * 5 / 2); /* far below one flush per write */
    static char text[65536];
    size_t text_len = 0;
    raw_inflate(&client, wire, n, text, sizeof text, &text_len);
    assert_int_equal(text_len, plain_len);
    assert_true(strncmp(text, "* 1 EXPUNGE\r\n* 2 EXPUNGE\r\n", 26) == 0);
    char last[64];
    snprintf(last, sizeof last, "* %u EXPUNGE\r\n", writes);
    assert_string_equal(text + text_len - strlen(last), last);

    raw_peer_end(&client);
    close(sv[1]);
    end_close(&srv);
    event_base_free(base);
}

/* Garbage instead of a deflate stream fails the connection with a reason. */
static void test_corrupt_input_fails(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct filter_end srv;
    end_open(&srv, base, sv[0], NULL, 65536);
    /* BTYPE 11 (reserved) in the first block header */
    write_all(sv[1], "\xff\xff\xff\xff a1 NOOP\r\n", 14);
    run_loop_ms(base, 50);
    assert_true(srv.events & BEV_EVENT_ERROR);
    assert_non_null(mx_deflate_error(srv.z));
    assert_non_null(strstr(mx_deflate_error(srv.z), "inflate failed"));
    close(sv[1]);
    end_close(&srv);
    event_base_free(base);
}

/* bomb_stream - a raw deflate stream of plain_len zero bytes (~1000:1). */
static unsigned char *bomb_stream(size_t plain_len, size_t *zlen)
{
    struct raw_peer p;
    raw_peer_init(&p);
    static unsigned char zeros[1 << 20];
    size_t cap = plain_len / 900 + 4096, have = 0;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    for (size_t done = 0; done < plain_len; done += sizeof zeros) {
        p.out.next_in = zeros;
        p.out.avail_in = sizeof zeros;
        int flush = done + sizeof zeros >= plain_len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        do {
            p.out.next_out = out + have;
            p.out.avail_out = (uInt)(cap - have);
            assert_true(deflate(&p.out, flush) != Z_STREAM_ERROR);
            have = cap - p.out.avail_out;
            assert_true(have < cap);
        } while (p.out.avail_in > 0);
    }
    raw_peer_end(&p);
    *zlen = have;
    return out;
}

/* A stream that would inflate to 256 MiB fails after about the budget
 * (ratio x compressed + burst), and the reader's buffer stays bounded. */
static void test_decompression_bomb_fails(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct filter_end srv;
    struct mx_deflate_limits limits = { .max_ratio = 64, .burst_bytes = 256 * 1024,
                                        .window_compressed = 64 * 1024 };
    end_open(&srv, base, sv[0], &limits, 32768);
    size_t zlen;
    unsigned char *bomb = bomb_stream((size_t)256 << 20, &zlen);
    assert_true(zlen < 400 * 1024);

    /* feed it as the socket takes it */
    evutil_make_socket_nonblocking(sv[1]);
    size_t sent = 0;
    for (int i = 0; i < 500 && sent < zlen && !(srv.events & BEV_EVENT_ERROR); i++) {
        ssize_t n = write(sv[1], bomb + sent, zlen - sent);
        if (n > 0)
            sent += (size_t)n;
        run_loop_ms(base, 2);
    }
    run_loop_ms(base, 20);
    assert_true(srv.events & BEV_EVENT_ERROR);
    assert_non_null(mx_deflate_error(srv.z));
    assert_non_null(strstr(mx_deflate_error(srv.z), "decompression bomb"));
    struct mx_deflate_stats st;
    mx_deflate_get_stats(srv.z, &st);
    /* stopped near the budget, far from 256 MiB */
    assert_true(st.in_plain <= st.in_compressed * 64 + 256 * 1024 + 64 * 1024);
    assert_true(st.in_plain < 4u << 20);
    assert_true(srv.max_input_seen <= 32768 + 2 * 4096);

    free(bomb);
    close(sv[1]);
    end_close(&srv);
    event_base_free(base);
}

/* A reader that stops reading while a bomb arrives holds the filter at its
 * watermark: memory stays bounded even before the budget rule fires. */
static void test_bomb_against_stalled_reader_is_bounded(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct filter_end srv;
    end_open(&srv, base, sv[0], NULL, 16384);
    srv.drain = false;
    size_t zlen;
    unsigned char *bomb = bomb_stream((size_t)64 << 20, &zlen);
    evutil_make_socket_nonblocking(sv[1]);
    size_t sent = 0;
    for (int i = 0; i < 100 && sent < zlen; i++) {
        ssize_t n = write(sv[1], bomb + sent, zlen - sent);
        if (n > 0)
            sent += (size_t)n;
        run_loop_ms(base, 2);
    }
    size_t held = evbuffer_get_length(bufferevent_get_input(srv.bev));
    assert_true(held >= 16384);            /* it did inflate up to the mark */
    assert_true(held <= 16384 + 2 * 4096); /* and not beyond */
    struct mx_deflate_stats st;
    mx_deflate_get_stats(srv.z, &st);
    assert_int_equal(st.in_plain, held);
    free(bomb);
    close(sv[1]);
    end_close(&srv);
    event_base_free(base);
}

/* ---- mx_conn_compress end to end: a zlib client thread, mx_conn server ---- */

struct session {
    struct mx_conn *conn;
    struct event_base *base;
    int compress_result;
    int compress_again_result;
    int starttls_after_compress;
    char tls_info_after_compress[128];
    char close_reason[128];
    bool closed;
};

static void session_on_ready(void *ctx)
{
    struct session *s = ctx;
    mx_conn_printf(s->conn, "* OK test server ready\r\n");
}

static void session_on_input(void *ctx, struct evbuffer *in)
{
    struct session *s = ctx;
    size_t len;
    char *line;
    while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
        char tag[32] = "";
        sscanf(line, "%31s", tag);
        const char *cmd = line + strlen(tag) + (line[strlen(tag)] == ' ');
        if (strcmp(cmd, "COMPRESS DEFLATE") == 0) {
            mx_conn_printf(s->conn, "%s OK DEFLATE active\r\n", tag);
            s->compress_result = mx_conn_compress(s->conn);
            s->compress_again_result = mx_conn_compress(s->conn);
            s->starttls_after_compress = mx_conn_starttls(s->conn);
            mx_conn_tls_info(s->conn, s->tls_info_after_compress,
                             sizeof s->tls_info_after_compress);
            /* in is the compressed stream's source now: the rest of it is
             * for the filter, the next call brings the inflated input */
            free(line);
            return;
        } else if (strcmp(cmd, "LOGOUT") == 0) {
            mx_conn_printf(s->conn, "* BYE logging out\r\n%s OK LOGOUT completed\r\n", tag);
            mx_conn_close_after_flush(s->conn, "logout");
            free(line);
            return;
        } else if (strncmp(cmd, "BIG ", 4) == 0) {
            /* a large response in many small writes */
            unsigned count = (unsigned)strtoul(cmd + 4, NULL, 10);
            for (unsigned i = 0; i < count; i++)
                mx_conn_printf(s->conn, "* %u FETCH (UID %u FLAGS (\\Seen))\r\n", i + 1, i + 1);
            mx_conn_printf(s->conn, "%s OK BIG done\r\n", tag);
        } else {
            mx_conn_printf(s->conn, "%s OK echo %s\r\n", tag, cmd);
        }
        free(line);
    }
    if (mx_conn_peer_closed(s->conn))
        mx_conn_close(s->conn, "client closed");
}

static void session_on_close(void *ctx, const char *reason)
{
    struct session *s = ctx;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason);
    s->closed = true;
    event_base_loopbreak(s->base);
}

static const struct mx_conn_ops session_ops = { session_on_ready, session_on_input,
                                                session_on_close };

struct client {
    int fd;
    SSL *ssl; /* NULL: plain TCP */
    struct raw_peer z;
    char text[1 << 20]; /* everything inflated so far */
    size_t text_len;
    bool saw_eof;
    atomic_bool done;
    char failure[160]; /* first failed expectation; asserts stay on the main thread */
};

static bool client_fail(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool client_fail(struct client *c, const char *fmt, ...)
{
    if (c->failure[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->failure, sizeof c->failure, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* client_read / client_write - the client's transport: blocking, with a
 * 5 s receive timeout (SO_RCVTIMEO) so a hung server fails the test. */
static size_t client_read(struct client *c, void *buf, size_t cap)
{
    if (c->ssl) {
        int n = SSL_read(c->ssl, buf, (int)cap);
        return n > 0 ? (size_t)n : 0;
    }
    ssize_t n = read(c->fd, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

/* client_sees_eof - the server closed the connection (as opposed to the
 * receive timeout expiring with the connection still open). */
static bool client_sees_eof(struct client *c)
{
    unsigned char byte;
    errno = 0;
    if (c->ssl) {
        int n = SSL_read(c->ssl, &byte, 1);
        if (n > 0)
            return false;
        int err = SSL_get_error(c->ssl, n);
        return err == SSL_ERROR_ZERO_RETURN ||
               ((err == SSL_ERROR_SYSCALL || err == SSL_ERROR_SSL) && errno != EAGAIN &&
                errno != EWOULDBLOCK);
    }
    return read(c->fd, &byte, 1) == 0;
}

static bool client_write(struct client *c, const void *data, size_t len)
{
    if (c->ssl)
        return SSL_write(c->ssl, data, (int)len) == (int)len;
    return write(c->fd, data, len) == (ssize_t)len;
}

/* client_read_clear_line - one uncompressed line, byte by byte so no byte
 * of the compressed stream behind it is taken. */
static bool client_read_clear_line(struct client *c, char *line, size_t cap)
{
    size_t n = 0;
    while (n < cap - 1) {
        if (client_read(c, line + n, 1) != 1)
            return client_fail(c, "no clear line (got %zu bytes)", n);
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    return true;
}

static bool client_send(struct client *c, const char *text)
{
    size_t zlen;
    unsigned char *z = raw_compress(&c->z, text, strlen(text), Z_SYNC_FLUSH, &zlen);
    bool ok = client_write(c, z, zlen);
    free(z);
    return ok ? true : client_fail(c, "write failed: %s", strerror(errno));
}

/* client_wait_for - inflate the server's stream until text contains want. */
static bool client_wait_for(struct client *c, const char *want)
{
    unsigned char wire[16384];
    while (strstr(c->text, want) == NULL) {
        size_t n = client_read(c, wire, sizeof wire);
        if (n == 0)
            return client_fail(c, "timed out waiting for \"%s\"", want);
        c->z.in.next_in = wire;
        c->z.in.avail_in = (uInt)n;
        while (c->z.in.avail_in > 0) {
            c->z.in.next_out = (unsigned char *)c->text + c->text_len;
            c->z.in.avail_out = (uInt)(sizeof c->text - 1 - c->text_len);
            if (c->z.in.avail_out == 0)
                return client_fail(c, "response too large");
            int rc = inflate(&c->z.in, Z_SYNC_FLUSH);
            if (rc != Z_OK && rc != Z_BUF_ERROR)
                return client_fail(c, "server stream does not inflate: %d", rc);
            c->text_len = sizeof c->text - 1 - c->z.in.avail_out;
        }
        c->text[c->text_len] = '\0';
    }
    return true;
}

static void *client_steps(struct client *c);

static void *client_main(void *arg)
{
    struct client *c = arg;
    client_steps(c);
    atomic_store(&c->done, true);
    return NULL;
}

static void *client_steps(struct client *c)
{
    char line[256] = "";
    struct timeval rcv_timeout = { 5, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &rcv_timeout, sizeof rcv_timeout);
    if (c->ssl && SSL_connect(c->ssl) != 1)
        return client_fail(c, "TLS handshake failed"), NULL;
    if (!client_read_clear_line(c, line, sizeof line) || strcmp(line, "* OK test server ready\r\n"))
        return client_fail(c, "greeting: %s", line), NULL;
    if (!client_write(c, "a COMPRESS DEFLATE\r\n", 20))
        return client_fail(c, "write failed"), NULL;
    if (!client_read_clear_line(c, line, sizeof line) || strcmp(line, "a OK DEFLATE active\r\n"))
        return client_fail(c, "COMPRESS reply: %s", line), NULL;
    if (!client_send(c, "b NOOP\r\n") || !client_wait_for(c, "b OK echo NOOP\r\n"))
        return NULL;
    /* two commands in one compressed write, then one split across writes */
    if (!client_send(c, "c CHECK\r\nd NOOP\r\n") || !client_wait_for(c, "d OK echo NOOP\r\n"))
        return NULL;
    if (!client_send(c, "e SEL") || !client_send(c, "ECT INBOX\r\n") ||
        !client_wait_for(c, "e OK echo SELECT INBOX\r\n"))
        return NULL;
    if (!client_send(c, "f BIG 5000\r\n") || !client_wait_for(c, "f OK BIG done\r\n"))
        return NULL;
    if (strstr(c->text, "* 5000 FETCH (UID 5000 FLAGS (\\Seen))\r\nf OK") == NULL)
        return client_fail(c, "BIG response incomplete"), NULL;
    if (!client_send(c, "z LOGOUT\r\n") || !client_wait_for(c, "z OK LOGOUT completed\r\n"))
        return NULL;
    c->saw_eof = client_sees_eof(c);
    return NULL;
}

/* run_end_to_end - one mx_conn (implicit TLS if server_tls) against the
 * client thread; asserts on the outcome. */
static void run_end_to_end(SSL_CTX *server_tls, SSL_CTX *client_tls)
{
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct mx_conn_config cfg = {
        .base = base,
        .idle_timeout_ms = 10000,
        .input_high = 65536,
        .output_high = 256 * 1024,
        .role = "test",
        .tls_ctx = server_tls,
        .implicit_tls = server_tls != NULL,
    };
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(40000),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct session s = { .base = base, .compress_result = 99, .compress_again_result = 99,
                         .starttls_after_compress = 99 };
    s.conn = mx_conn_new(&cfg, sv[0], (const struct sockaddr *)&peer, &session_ops, &s, "t1");
    assert_non_null(s.conn);
    assert_false(mx_conn_is_compressed(s.conn));

    struct client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = sv[1];
    if (client_tls) {
        c->ssl = SSL_new(client_tls);
        assert_non_null(c->ssl);
        SSL_set_fd(c->ssl, c->fd);
    }
    raw_peer_init(&c->z);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, client_main, c), 0);
    /* serve until the client is through (it waits for the close itself) */
    for (int i = 0; i < 2000 && !atomic_load(&c->done); i++)
        run_loop_ms(base, 10);
    pthread_join(thread, NULL);

    assert_string_equal(c->failure, "");
    assert_int_equal(s.compress_result, 0);
    assert_int_equal(s.compress_again_result, -1);
    assert_int_equal(s.starttls_after_compress, -1);
    assert_true(s.closed);
    assert_string_equal(s.close_reason, "logout");
    assert_true(c->saw_eof); /* the BYE was flushed before the close */
    assert_non_null(strstr(c->text, "* BYE logging out\r\nz OK LOGOUT completed\r\n"));
    if (server_tls)
        assert_non_null(strstr(s.tls_info_after_compress, "TLS"));
    else
        assert_string_equal(s.tls_info_after_compress, "");

    if (c->ssl)
        SSL_free(c->ssl);
    raw_peer_end(&c->z);
    close(c->fd);
    free(c);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
}

static void test_conn_compress_end_to_end(void **state)
{
    (void)state;
    run_end_to_end(NULL, NULL);
}

/* COMPRESS inside implicit TLS: deflate sits on the TLS filter, which sits
 * on the socket; close-after-flush still waits for all three layers. */
static void test_conn_compress_over_tls(void **state)
{
    (void)state;
    char dir[] = "/tmp/mx-test-deflate-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cert[96], key[96];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    char *error = NULL;
    if (mx_tls_make_self_signed(cert, key, "mx.example.test", 1, &error) != 0)
        fail_msg("%s", error);
    SSL_CTX *server = SSL_CTX_new(TLS_server_method());
    assert_non_null(server);
    assert_int_equal(SSL_CTX_use_certificate_file(server, cert, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(server, key, SSL_FILETYPE_PEM), 1);
    SSL_CTX *client = SSL_CTX_new(TLS_client_method());
    assert_non_null(client);
    SSL_CTX_set_verify(client, SSL_VERIFY_NONE, NULL); /* loopback test peer */
    SSL_CTX_set_options(client, SSL_OP_IGNORE_UNEXPECTED_EOF);

    run_end_to_end(server, client);

    SSL_CTX_free(client);
    SSL_CTX_free(server);
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

/* Compressed input sent right behind the COMPRESS command (in the same
 * packet) is already in the old input buffer: it is inflated, not lost
 * and not taken as clear text. A shutdown's goodbye then arrives
 * compressed and complete. */
static void test_conn_compress_input_behind_command(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct mx_conn_registry registry = { 0 };
    struct mx_conn_config cfg = { .base = base, .idle_timeout_ms = 10000, .input_high = 65536,
                                  .output_high = 65536, .role = "test", .registry = &registry };
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct session s = { .base = base };
    s.conn = mx_conn_new(&cfg, sv[0], (const struct sockaddr *)&peer, &session_ops, &s, "t3");
    assert_non_null(s.conn);
    run_loop_ms(base, 20);
    char greeting[64];
    size_t n = read_some(sv[1], greeting, sizeof greeting - 1, 1000);
    greeting[n] = '\0';
    assert_string_equal(greeting, "* OK test server ready\r\n");

    struct raw_peer client;
    raw_peer_init(&client);
    size_t zlen;
    unsigned char *z = raw_compress(&client, "b NOOP\r\n", 8, Z_SYNC_FLUSH, &zlen);
    unsigned char packet[256];
    memcpy(packet, "a COMPRESS DEFLATE\r\n", 20);
    memcpy(packet + 20, z, zlen);
    free(z);
    write_all(sv[1], packet, 20 + zlen);
    run_loop_ms(base, 50);
    assert_int_equal(s.compress_result, 0);

    char wire[512];
    n = read_some(sv[1], wire, sizeof wire, 1000);
    assert_true(n > 21);
    assert_memory_equal(wire, "a OK DEFLATE active\r\n", 21);
    char text[256];
    size_t text_len = 0;
    raw_inflate(&client, wire + 21, n - 21, text, sizeof text, &text_len);
    assert_string_equal(text, "b OK echo NOOP\r\n");
    assert_false(s.closed);

    mx_conn_registry_close_all(&registry, "* BYE server shutting down\r\n", "shutdown");
    for (int i = 0; i < 100 && registry.count > 0; i++)
        run_loop_ms(base, 10);
    assert_true(s.closed);
    assert_string_equal(s.close_reason, "shutdown");
    n = read_some(sv[1], wire, sizeof wire, 1000);
    assert_true(n > 0);
    text_len = 0;
    raw_inflate(&client, wire, n, text, sizeof text, &text_len);
    assert_string_equal(text, "* BYE server shutting down\r\n");

    raw_peer_end(&client);
    close(sv[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
}

/* The same goodbye on a connection that never compressed (the write path
 * the deflate case shares with it). */
static void test_registry_goodbye_uncompressed(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct mx_conn_registry registry = { 0 };
    struct mx_conn_config cfg = { .base = base, .idle_timeout_ms = 10000, .input_high = 65536,
                                  .output_high = 65536, .role = "test", .registry = &registry };
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct session s = { .base = base };
    s.conn = mx_conn_new(&cfg, sv[0], (const struct sockaddr *)&peer, &session_ops, &s, "t4");
    assert_non_null(s.conn);
    run_loop_ms(base, 20);
    char wire[256];
    size_t n = read_some(sv[1], wire, sizeof wire - 1, 1000);
    wire[n] = '\0';
    assert_string_equal(wire, "* OK test server ready\r\n");
    mx_conn_registry_close_all(&registry, "* BYE server shutting down\r\n", "shutdown");
    for (int i = 0; i < 100 && registry.count > 0; i++)
        run_loop_ms(base, 10);
    assert_true(s.closed);
    n = read_some(sv[1], wire, sizeof wire - 1, 1000);
    wire[n] = '\0';
    assert_string_equal(wire, "* BYE server shutting down\r\n");
    close(sv[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
}

/* A client that sends garbage after COMPRESS is disconnected with the
 * inflate error as the reason. */
static void test_conn_compress_corrupt_client(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int sv[2];
    make_pair(sv);
    struct mx_conn_config cfg = { .base = base, .idle_timeout_ms = 10000, .input_high = 65536,
                                  .output_high = 65536, .role = "test" };
    struct sockaddr_in peer = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct session s = { .base = base };
    s.conn = mx_conn_new(&cfg, sv[0], (const struct sockaddr *)&peer, &session_ops, &s, "t2");
    assert_non_null(s.conn);
    write_all(sv[1], "a COMPRESS DEFLATE\r\n", 20);
    run_loop_ms(base, 50);
    assert_int_equal(s.compress_result, 0);
    assert_true(mx_conn_is_compressed(s.conn));
    write_all(sv[1], "\xff\xff\xff\xff" "b NOOP\r\n", 12);
    struct timeval limit = { 5, 0 };
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    assert_true(s.closed);
    assert_non_null(strstr(s.close_reason, "COMPRESS: inflate failed"));
    close(sv[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as mx_daemon does: a closed peer is an error, not a signal */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_both_ends),
        cmocka_unit_test(test_partial_input_and_sync_flush),
        cmocka_unit_test(test_many_small_writes),
        cmocka_unit_test(test_corrupt_input_fails),
        cmocka_unit_test(test_decompression_bomb_fails),
        cmocka_unit_test(test_bomb_against_stalled_reader_is_bounded),
        cmocka_unit_test(test_conn_compress_end_to_end),
        cmocka_unit_test(test_conn_compress_over_tls),
        cmocka_unit_test(test_conn_compress_input_behind_command),
        cmocka_unit_test(test_registry_goodbye_uncompressed),
        cmocka_unit_test(test_conn_compress_corrupt_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
