/* mx_deflate - see mx_deflate.h. */
#include "mx_deflate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <zlib.h>

#include "mx_alloc.h"

/* Raw deflate: negative windowBits means no zlib header/trailer (RFC 4978
 * section 4 demands plain RFC 1951).
 *
 * Memory per connection. The inflater must accept any window the client
 * chose (raw deflate does not announce it), so it gets the maximum, 15:
 * 32 KiB window + ~7 KiB state. The deflater is ours to size: zlib needs
 * (1 << (windowBits + 2)) + (1 << (memLevel + 9)) bytes, so windowBits 12
 * (4 KiB of history, enough to see the previous few FETCH responses) and
 * memLevel 5 cost 16 + 16 KiB instead of 256 KiB for zlib's defaults (15,
 * 8); responses are small and repetitive, the ratio lost is a few percent.
 * About 80 KiB per compressed connection in all (measured under ASan:
 * deflate 38 KiB, inflate 39 KiB). */
#define DEFLATE_WINDOW_BITS 12
#define DEFLATE_MEM_LEVEL 5
#define DEFLATE_LEVEL 6 /* zlib's default: speed/ratio knee */
#define INFLATE_WINDOW_BITS 15

/* Output space asked from an evbuffer per zlib call: the inflate side may
 * overshoot the reader's high watermark by at most this (plus what zlib
 * still holds without needing input, a few KiB at most). */
#define ZLIB_CHUNK 4096
/* Input handed to zlib per call: keeps avail_in far from uInt's range and
 * the limit checks between calls fine-grained. */
#define ZLIB_INPUT_STEP 65536

struct mx_deflate {
    struct bufferevent *self; /* the filter bufferevent */
    z_stream inflater;
    z_stream deflater;
    bool inflater_ready;
    bool deflater_ready;
    bool stream_ended;          /* the client sent a final block */
    struct mx_deflate_limits limits;
    size_t window_in;           /* bomb accounting, see mx_deflate_limits */
    size_t window_out;
    size_t unflushed;           /* given to the deflater since the last sync flush */
    struct event *flush_event;  /* ends the current output batch */
    bool flush_armed;
    struct mx_deflate_stats stats;
    char error[160];
};

/* peek_input - the first contiguous run of bytes in buf (an empty chain
 * may lead after a reserve). */
static bool peek_input(struct evbuffer *buf, struct evbuffer_iovec *vec)
{
    struct evbuffer_iovec runs[2];
    int n = evbuffer_peek(buf, -1, NULL, runs, 2);
    for (int i = 0; i < n && i < 2; i++) {
        if (runs[i].iov_len > 0) {
            *vec = runs[i];
            return true;
        }
    }
    return false;
}

static void deflate_fail(struct mx_deflate *z, short direction, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* deflate_fail - remember why and tell the owner through the event
 * callback: libevent ignores a filter's BEV_ERROR, so the filter has to
 * raise the error itself (deferred, never from inside the owner's own
 * write call). */
static void deflate_fail(struct mx_deflate *z, short direction, const char *fmt, ...)
{
    if (z->error[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(z->error, sizeof z->error, fmt, ap);
    va_end(ap);
    bufferevent_trigger_event(z->self, BEV_EVENT_ERROR | direction, BEV_TRIG_DEFER_CALLBACKS);
}

/* inflate_over_budget - the decompression bomb rule of mx_deflate_limits. */
static bool inflate_over_budget(struct mx_deflate *z)
{
    const struct mx_deflate_limits *l = &z->limits;
    /* window_in <= window_compressed + one peeked chain, so this cannot
     * overflow a size_t for any sane limit. */
    if (z->window_out > z->window_in * l->max_ratio + l->burst_bytes)
        return true;
    if (z->window_in >= l->window_compressed) {
        z->window_in = 0;
        z->window_out = 0;
    }
    return false;
}

/* deflate_filter_in - inflate what came from below into the reader's
 * buffer. limit is what the reader's high watermark still allows (-1: no
 * limit); compressed bytes not needed for that stay in src, and libevent
 * calls again when the reader drained its buffer. */
static enum bufferevent_filter_result deflate_filter_in(struct evbuffer *src, struct evbuffer *dst,
                                                        ev_ssize_t limit,
                                                        enum bufferevent_flush_mode mode, void *arg)
{
    struct mx_deflate *z = arg;
    (void)mode;
    if (z->error[0] != '\0')
        return BEV_ERROR;
    size_t produced = 0;
    /* After a call that filled the whole output chunk zlib may still hold
     * output it can produce without further input (the rest of a match,
     * symbols in its bit buffer); libevent calls again only when new input
     * arrives or below still has input, so that rest is drained now. */
    bool zlib_may_hold_output = false;
    for (;;) {
        struct evbuffer_iovec in_vec = { NULL, 0 };
        bool have_input = peek_input(src, &in_vec);
        if (!have_input && !zlib_may_hold_output)
            break;
        if (have_input && limit >= 0 && produced >= (size_t)limit)
            break; /* the rest waits in src until the reader made room */
        if (have_input && z->stream_ended) {
            deflate_fail(z, BEV_EVENT_READING, "compressed data after the end of the stream");
            return BEV_ERROR;
        }
        struct evbuffer_iovec out_vec;
        if (evbuffer_reserve_space(dst, ZLIB_CHUNK, &out_vec, 1) < 1) {
            deflate_fail(z, BEV_EVENT_READING, "inflate: no memory for %d bytes", ZLIB_CHUNK);
            return BEV_ERROR;
        }
        size_t out_space = out_vec.iov_len < ZLIB_CHUNK ? out_vec.iov_len : ZLIB_CHUNK;
        static unsigned char no_input;
        z->inflater.next_in = have_input ? in_vec.iov_base : &no_input;
        size_t in_len = in_vec.iov_len < ZLIB_INPUT_STEP ? in_vec.iov_len : ZLIB_INPUT_STEP;
        z->inflater.avail_in = have_input ? (uInt)in_len : 0;
        z->inflater.next_out = out_vec.iov_base;
        z->inflater.avail_out = (uInt)out_space;
        int rc = inflate(&z->inflater, Z_SYNC_FLUSH);
        size_t used = have_input ? in_len - z->inflater.avail_in : 0;
        size_t made = out_space - z->inflater.avail_out;
        out_vec.iov_len = made;
        evbuffer_commit_space(dst, &out_vec, made > 0 ? 1 : 0);
        evbuffer_drain(src, used);
        produced += made;
        z->stats.in_compressed += used;
        z->stats.in_plain += made;
        z->window_in += used;
        z->window_out += made;
        if (rc == Z_STREAM_END) {
            z->stream_ended = true;
            zlib_may_hold_output = false;
        } else if (rc == Z_OK) {
            zlib_may_hold_output = z->inflater.avail_out == 0;
        } else if (rc == Z_BUF_ERROR) {
            zlib_may_hold_output = false; /* nothing left without more input */
        } else {
            deflate_fail(z, BEV_EVENT_READING, "inflate failed: %s (zlib %d)",
                         z->inflater.msg ? z->inflater.msg : "corrupt stream", rc);
            return BEV_ERROR;
        }
        if (inflate_over_budget(z)) {
            deflate_fail(z, BEV_EVENT_READING,
                         "decompression bomb: %zu compressed bytes inflated to %zu "
                         "(allowed ratio %u plus %zu)",
                         z->window_in, z->window_out, z->limits.max_ratio, z->limits.burst_bytes);
            return BEV_ERROR;
        }
        if (used == 0 && made == 0)
            break; /* no progress possible now: never spin */
    }
    return produced > 0 ? BEV_OK : BEV_NEED_MORE;
}

/* deflate_run - one deflate() call sequence over next_in with the given
 * flush mode, until zlib has handed out everything it can. */
static bool deflate_run(struct mx_deflate *z, struct evbuffer *dst, int flush, size_t *produced)
{
    do {
        struct evbuffer_iovec out_vec;
        if (evbuffer_reserve_space(dst, ZLIB_CHUNK, &out_vec, 1) < 1) {
            deflate_fail(z, BEV_EVENT_WRITING, "deflate: no memory for %d bytes", ZLIB_CHUNK);
            return false;
        }
        size_t out_space = out_vec.iov_len < ZLIB_CHUNK ? out_vec.iov_len : ZLIB_CHUNK;
        z->deflater.next_out = out_vec.iov_base;
        z->deflater.avail_out = (uInt)out_space;
        int rc = deflate(&z->deflater, flush);
        size_t made = out_space - z->deflater.avail_out;
        out_vec.iov_len = made;
        evbuffer_commit_space(dst, &out_vec, made > 0 ? 1 : 0);
        *produced += made;
        z->stats.out_compressed += made;
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            deflate_fail(z, BEV_EVENT_WRITING, "deflate failed: %s (zlib %d)",
                         z->deflater.msg ? z->deflater.msg : "stream error", rc);
            return false;
        }
    } while (z->deflater.avail_out == 0);
    return true;
}

/* deflate_flush_batch - end the batch: everything given so far becomes
 * decodable by the peer (Z_SYNC_FLUSH keeps the history, so compression
 * of later batches does not suffer). */
static bool deflate_flush_batch(struct mx_deflate *z, struct evbuffer *dst, size_t *produced)
{
    if (z->unflushed == 0)
        return true; /* a sync flush without new input would only add bytes */
    z->deflater.next_in = NULL;
    z->deflater.avail_in = 0;
    if (!deflate_run(z, dst, Z_SYNC_FLUSH, produced))
        return false;
    z->unflushed = 0;
    return true;
}

static void deflate_on_flush_event(evutil_socket_t fd, short what, void *arg)
{
    struct mx_deflate *z = arg;
    struct bufferevent *self = z->self;
    (void)fd;
    (void)what;
    z->flush_armed = false;
    if (z->error[0] == '\0')
        bufferevent_flush(self, EV_WRITE, BEV_FLUSH); /* -> deflate_filter_out(BEV_FLUSH) */
    /* The reference taken when the flush was armed kept self (and z) alive
     * even if its owner freed it meanwhile; this may destroy both. */
    bufferevent_decref(self);
}

/* deflate_filter_out - compress what the writer added. libevent calls this
 * synchronously on every evbuffer_add to the filter, so in BEV_NORMAL mode
 * bytes are only fed to zlib and the sync flush is left to an event that
 * runs once the writer returned to the loop: one flush per batch instead
 * of one per printf. BEV_FLUSH (from that event) compresses the rest and
 * flushes. */
static enum bufferevent_filter_result deflate_filter_out(struct evbuffer *src, struct evbuffer *dst,
                                                         ev_ssize_t limit,
                                                         enum bufferevent_flush_mode mode,
                                                         void *arg)
{
    struct mx_deflate *z = arg;
    if (z->error[0] != '\0')
        return BEV_ERROR;
    size_t produced = 0;
    size_t consumed = 0;
    struct evbuffer_iovec in_vec;
    while (peek_input(src, &in_vec)) {
        /* Only a write high watermark on below sets a limit; a flush
         * ignores it so the batch's end is never held back. */
        if (mode == BEV_NORMAL && limit >= 0 && produced >= (size_t)limit)
            break;
        size_t in_len = in_vec.iov_len < ZLIB_INPUT_STEP ? in_vec.iov_len : ZLIB_INPUT_STEP;
        z->deflater.next_in = in_vec.iov_base;
        z->deflater.avail_in = (uInt)in_len;
        if (!deflate_run(z, dst, Z_NO_FLUSH, &produced))
            return BEV_ERROR;
        /* avail_out left over means zlib took all of next_in. */
        evbuffer_drain(src, in_len);
        consumed += in_len;
        z->unflushed += in_len;
        z->stats.out_plain += in_len;
    }
    bool flushed = false;
    if (mode != BEV_NORMAL && z->unflushed > 0) {
        if (!deflate_flush_batch(z, dst, &produced))
            return BEV_ERROR;
        flushed = true;
    } else if (z->unflushed > 0 && !z->flush_armed) {
        z->flush_armed = true;
        bufferevent_incref(z->self);
        event_active(z->flush_event, EV_TIMEOUT, 0);
    }
    return consumed > 0 || flushed ? BEV_OK : BEV_NEED_MORE;
}

static void deflate_free(void *arg)
{
    struct mx_deflate *z = arg;
    if (z == NULL)
        return;
    if (z->flush_event)
        event_free(z->flush_event);
    if (z->inflater_ready)
        inflateEnd(&z->inflater);
    if (z->deflater_ready)
        deflateEnd(&z->deflater);
    free(z);
}

struct bufferevent *mx_deflate_filter_new(struct bufferevent *below, int options,
                                          const struct mx_deflate_limits *limits,
                                          struct mx_deflate **state_out)
{
    struct mx_deflate *z = mx_calloc(1, sizeof *z);
    if (limits) {
        z->limits = *limits;
    } else {
        z->limits.max_ratio = MX_DEFLATE_DEFAULT_MAX_RATIO;
        z->limits.burst_bytes = MX_DEFLATE_DEFAULT_BURST;
        z->limits.window_compressed = MX_DEFLATE_DEFAULT_WINDOW;
    }
    if (z->limits.window_compressed == 0)
        z->limits.window_compressed = MX_DEFLATE_DEFAULT_WINDOW;
    z->inflater_ready = inflateInit2(&z->inflater, -INFLATE_WINDOW_BITS) == Z_OK;
    z->deflater_ready = deflateInit2(&z->deflater, DEFLATE_LEVEL, Z_DEFLATED, -DEFLATE_WINDOW_BITS,
                                     DEFLATE_MEM_LEVEL, Z_DEFAULT_STRATEGY) == Z_OK;
    z->flush_event = event_new(bufferevent_get_base(below), -1, 0, deflate_on_flush_event, z);
    struct bufferevent *filter =
        z->inflater_ready && z->deflater_ready && z->flush_event
            ? bufferevent_filter_new(below, deflate_filter_in, deflate_filter_out, options,
                                     deflate_free, z)
            : NULL;
    if (filter == NULL) {
        deflate_free(z);
        return NULL;
    }
    z->self = filter;
    /* Bytes already read from below (sent right after the command that
     * switched compression on) would otherwise wait for the next read. */
    if (evbuffer_get_length(bufferevent_get_input(below)) > 0)
        bufferevent_trigger(below, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    if (state_out)
        *state_out = z;
    return filter;
}

size_t mx_deflate_pending(const struct mx_deflate *z)
{
    return z->unflushed;
}

const char *mx_deflate_error(const struct mx_deflate *z)
{
    return z->error[0] != '\0' ? z->error : NULL;
}

void mx_deflate_get_stats(const struct mx_deflate *z, struct mx_deflate_stats *stats)
{
    *stats = z->stats;
}
