/* mx_deflate - raw DEFLATE (RFC 1951, no zlib/gzip header) filter
 * bufferevent for IMAP COMPRESS=DEFLATE (RFC 4978).
 *
 * Stacked on a connection's current bufferevent (socket or TLS filter):
 *   input   compressed bytes from below are inflated into the filter's
 *           input buffer, never beyond its read high watermark (plus at
 *           most one zlib step, see mx_deflate.c), and never beyond an
 *           expansion budget: a decompression bomb fails the connection
 *           instead of making the server inflate gigabytes.
 *   output  everything written to the filter in one turn of the event loop
 *           is deflated as one batch and ends with a Z_SYNC_FLUSH, so each
 *           response is decodable by the client at once (an IMAP client
 *           waits for the tagged reply; it must not sit in zlib's buffer).
 *
 * A failure (corrupt input, bomb, end of the compressed stream followed by
 * more data, out of memory) triggers the filter's event callback with
 * BEV_EVENT_ERROR | BEV_EVENT_READING (or _WRITING); mx_deflate_error()
 * says why. */
#ifndef MX_DEFLATE_H
#define MX_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct mx_deflate;

/* Expansion budget of the inflate side: within each window of
 * window_compressed compressed input bytes, the inflated output may not
 * exceed max_ratio times the compressed bytes of the window plus
 * burst_bytes. Deflate itself cannot expand more than ~1032:1, so a
 * max_ratio well below that catches a bomb after a few KB of it, while
 * burst_bytes lets a legitimately very compressible command or literal
 * (a run of blanks, a zero-filled attachment) of up to that size pass. */
struct mx_deflate_limits {
    unsigned max_ratio;
    size_t burst_bytes;
    size_t window_compressed;
};

#define MX_DEFLATE_DEFAULT_MAX_RATIO 128u
#define MX_DEFLATE_DEFAULT_BURST (1024u * 1024u)
#define MX_DEFLATE_DEFAULT_WINDOW (256u * 1024u)

/* Byte counters for logs and tests. */
struct mx_deflate_stats {
    uint64_t in_compressed;  /* read from below */
    uint64_t in_plain;       /* inflated, handed to the reader */
    uint64_t out_plain;      /* written by the session */
    uint64_t out_compressed; /* deflated, handed below */
};

/* mx_deflate_filter_new - stack a deflate filter on below. options are
 * bufferevent options (BEV_OPT_CLOSE_ON_FREE to free below with it,
 * BEV_OPT_DEFER_CALLBACKS). limits NULL: the defaults above. *state_out
 * (may be NULL) receives the filter's state for the accessors below; it
 * lives exactly as long as the returned bufferevent. Bytes already waiting
 * in below's input are treated as compressed; bytes already in below's
 * output go out as they are. NULL if zlib or libevent cannot allocate
 * (below is untouched then). */
struct bufferevent *mx_deflate_filter_new(struct bufferevent *below, int options,
                                          const struct mx_deflate_limits *limits,
                                          struct mx_deflate **state_out);

/* mx_deflate_pending - bytes accepted from the writer that zlib holds and
 * has not flushed below yet (0 between batches). */
size_t mx_deflate_pending(const struct mx_deflate *z);

/* mx_deflate_error - why the filter failed, or NULL while it is healthy. */
const char *mx_deflate_error(const struct mx_deflate *z);

void mx_deflate_get_stats(const struct mx_deflate *z, struct mx_deflate_stats *stats);

#endif
