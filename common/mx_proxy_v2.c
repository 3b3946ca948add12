/* mx_proxy_v2 - PROXY protocol v2 header parser. */
#include "mx_proxy_v2.h"

#include <netinet/in.h>
#include <string.h>

static const uint8_t mx_proxy_v2_signature[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

int mx_proxy_v2_parse(const uint8_t *buf, size_t len, struct mx_proxy_v2_result *result_r,
                      const char **error_r)
{
    memset(result_r, 0, sizeof *result_r);
    /* Refuse a wrong prefix as soon as it is visible, so a client that
     * speaks its protocol (SMTP, IMAP) at once is told quickly instead of waiting for 16 bytes. */
    size_t check = len < sizeof mx_proxy_v2_signature ? len : sizeof mx_proxy_v2_signature;
    if (memcmp(buf, mx_proxy_v2_signature, check) != 0) {
        *error_r = "not a PROXY v2 signature";
        return -1;
    }
    if (len < 16)
        return 0;
    uint8_t version = buf[12] >> 4, command = buf[12] & 0x0f;
    uint8_t family = buf[13] >> 4, transport = buf[13] & 0x0f;
    size_t body_len = ((size_t)buf[14] << 8) | buf[15];
    if (version != 2) {
        *error_r = "PROXY header version is not 2";
        return -1;
    }
    if (command > 1) {
        *error_r = "PROXY header command unknown";
        return -1;
    }
    if (16 + body_len > MX_PROXY_V2_MAX) {
        *error_r = "PROXY header too long";
        return -1;
    }
    if (len < 16 + body_len)
        return 0;
    const uint8_t *body = buf + 16;
    if (command == 0) { /* LOCAL: the balancer's own connection, e.g. a health check */
        result_r->local = 1;
        return (int)(16 + body_len);
    }
    if (transport != 1) {
        *error_r = "PROXY header transport is not STREAM";
        return -1;
    }
    if (family == 1) {
        if (body_len < 12) {
            *error_r = "PROXY header too short for IPv4 addresses";
            return -1;
        }
        struct sockaddr_in *src = (struct sockaddr_in *)&result_r->source;
        struct sockaddr_in *dst = (struct sockaddr_in *)&result_r->dest;
        src->sin_family = dst->sin_family = AF_INET;
        memcpy(&src->sin_addr, body, 4);
        memcpy(&dst->sin_addr, body + 4, 4);
        memcpy(&src->sin_port, body + 8, 2);
        memcpy(&dst->sin_port, body + 10, 2);
    } else if (family == 2) {
        if (body_len < 36) {
            *error_r = "PROXY header too short for IPv6 addresses";
            return -1;
        }
        struct sockaddr_in6 *src = (struct sockaddr_in6 *)&result_r->source;
        struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&result_r->dest;
        src->sin6_family = dst->sin6_family = AF_INET6;
        memcpy(&src->sin6_addr, body, 16);
        memcpy(&dst->sin6_addr, body + 16, 16);
        memcpy(&src->sin6_port, body + 32, 2);
        memcpy(&dst->sin6_port, body + 34, 2);
    } else {
        *error_r = "PROXY header address family not INET or INET6";
        return -1;
    }
    /* TLVs after the addresses are skipped; the length bounds them. */
    return (int)(16 + body_len);
}
