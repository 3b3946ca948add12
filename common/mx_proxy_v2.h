/* mx_proxy_v2 - the PROXY protocol version 2 header a load balancer (HAProxy
 * `send-proxy-v2`) sends before the client's first byte, carrying the
 * client's real address. Accepted only from configured balancer addresses:
 * from anyone else it would let a client pick the address we log, rate-limit
 * and score. Spec: haproxy's doc/proxy-protocol.txt, section 2.2. */
#ifndef MX_PROXY_V2_H
#define MX_PROXY_V2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest header accepted (16-byte preamble + addresses + TLVs). HAProxy
 * sends well under this; anything larger is refused, not buffered. */
#define MX_PROXY_V2_MAX 1024

struct mx_proxy_v2_result {
    int local;                       /* LOCAL command (health check): no addresses */
    struct sockaddr_storage source;  /* the client */
    struct sockaddr_storage dest;    /* the address it connected to */
};

/* mx_proxy_v2_parse - look at buf[0..len). Returns the header length once it
 * is complete and valid (the caller drains that many bytes), 0 if more
 * bytes are needed, -1 if this is not a valid v2 header (error_r static). */
int mx_proxy_v2_parse(const uint8_t *buf, size_t len, struct mx_proxy_v2_result *result_r,
                      const char **error_r);

#endif
