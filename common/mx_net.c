/* mx_net - address parsing, CIDR lists, monotonic clock. */
#include "mx_net.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mx_alloc.h"

/* One network. IPv4 networks are kept as 4-byte addresses; a mapped IPv6
 * client address is reduced to IPv4 before matching (see cidr_match_bytes). */
struct mx_cidr {
    int family;           /* AF_INET or AF_INET6 */
    uint8_t addr[16];     /* network address, host bits zero */
    unsigned prefix_bits; /* 0..32 or 0..128 */
};

struct mx_cidr_list {
    size_t n;
    struct mx_cidr entries[]; /* n of them */
};

uint64_t mx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int mx_net_parse_hostport(const char *text, struct sockaddr_storage *addr_r, socklen_t *len_r)
{
    char host[128];
    const char *port_text;
    memset(addr_r, 0, sizeof *addr_r);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
            return -1;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_text = close + 2;
    } else {
        /* One colon only: an IPv6 address needs brackets, or "2001:db8::25"
         * (no port) would silently become 2001:db8:: port 25. */
        const char *colon = strchr(text, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL || (size_t)(colon - text) >= sizeof host)
            return -1;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port_text = colon + 1;
    }
    /* Digits only: strtol alone would take " 25", "+25" and "-0". */
    if (*port_text == '\0' || strspn(port_text, "0123456789") != strlen(port_text) ||
        strlen(port_text) > 5)
        return -1;
    long port = strtol(port_text, NULL, 10);
    if (port > 65535)
        return -1;
    struct sockaddr_in *in4 = (struct sockaddr_in *)addr_r;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr_r;
    if (strcmp(host, "*") == 0 || strcmp(host, "") == 0)
        strcpy(host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len_r = sizeof *in4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len_r = sizeof *in6;
        return 0;
    }
    return -1;
}

const char *mx_net_addr_text(const struct sockaddr *addr, char *buf, size_t size)
{
    const void *raw = NULL;
    if (addr->sa_family == AF_INET)
        raw = &((const struct sockaddr_in *)addr)->sin_addr;
    else if (addr->sa_family == AF_INET6)
        raw = &((const struct sockaddr_in6 *)addr)->sin6_addr;
    if (size == 0)
        return buf;
    if (raw == NULL || size > (socklen_t)-1 ||
        inet_ntop(addr->sa_family, raw, buf, (socklen_t)size) == NULL)
        buf[0] = '\0';
    return buf;
}

/* cidr_parse_one - one "addr[/bits]" item; NULL or a static reason. */
static const char *cidr_parse_one(const char *item, struct mx_cidr *cidr_r)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(item, '/');
    size_t host_len = slash ? (size_t)(slash - item) : strlen(item);
    if (host_len == 0 || host_len >= sizeof host)
        return "not an IPv4 or IPv6 address";
    memcpy(host, item, host_len);
    host[host_len] = '\0';
    memset(cidr_r, 0, sizeof *cidr_r);
    unsigned max_bits;
    if (inet_pton(AF_INET, host, cidr_r->addr) == 1) {
        cidr_r->family = AF_INET;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, host, cidr_r->addr) == 1) {
        cidr_r->family = AF_INET6;
        max_bits = 128;
    } else {
        return "not an IPv4 or IPv6 address";
    }
    cidr_r->prefix_bits = max_bits;
    if (slash) {
        const char *bits = slash + 1;
        size_t digits = strspn(bits, "0123456789");
        if (digits == 0 || digits > 3 || bits[digits] != '\0')
            return "prefix length is not a number";
        unsigned long value = strtoul(bits, NULL, 10);
        if (value > max_bits)
            return "prefix length is longer than the address";
        cidr_r->prefix_bits = (unsigned)value;
    }
    for (unsigned bit = cidr_r->prefix_bits; bit < max_bits; bit++)
        if (cidr_r->addr[bit / 8] & (0x80u >> (bit % 8)))
            return "address has bits set beyond the prefix length";
    return NULL;
}

int mx_cidr_list_parse(const char *const *items, size_t n, struct mx_cidr_list **list_r,
                       char **error_r)
{
    struct mx_cidr_list *list = mx_calloc(1, sizeof *list + n * sizeof list->entries[0]);
    for (size_t i = 0; i < n; i++) {
        const char *reason = cidr_parse_one(items[i], &list->entries[i]);
        if (reason != NULL) {
            *error_r = mx_asprintf("network \"%s\": %s", items[i], reason);
            free(list);
            return -1;
        }
    }
    list->n = n;
    *list_r = list;
    return 0;
}

static bool cidr_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* cidr_match_bytes - family/raw is a client address (4 or 16 bytes). */
static bool cidr_match_bytes(const struct mx_cidr_list *list, int family, const uint8_t *raw)
{
    static const uint8_t mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    /* A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; operators
     * write IPv4 networks for them. */
    const uint8_t *as_v4 = NULL;
    if (family == AF_INET)
        as_v4 = raw;
    else if (memcmp(raw, mapped_prefix, sizeof mapped_prefix) == 0)
        as_v4 = raw + 12;
    for (size_t i = 0; list && i < list->n; i++) {
        const struct mx_cidr *c = &list->entries[i];
        if (c->family == AF_INET && as_v4 && cidr_prefix_equal(c->addr, as_v4, c->prefix_bits))
            return true;
        if (c->family == AF_INET6 && family == AF_INET6 &&
            cidr_prefix_equal(c->addr, raw, c->prefix_bits))
            return true;
    }
    return false;
}

bool mx_cidr_list_match(const struct mx_cidr_list *list, const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET)
        return cidr_match_bytes(list, AF_INET,
                                (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr);
    if (addr->sa_family == AF_INET6)
        return cidr_match_bytes(list, AF_INET6,
                                (const uint8_t *)&((const struct sockaddr_in6 *)addr)->sin6_addr);
    return false;
}

bool mx_cidr_list_match_text(const struct mx_cidr_list *list, const char *ip_text)
{
    uint8_t raw[16];
    if (inet_pton(AF_INET, ip_text, raw) == 1)
        return cidr_match_bytes(list, AF_INET, raw);
    if (inet_pton(AF_INET6, ip_text, raw) == 1)
        return cidr_match_bytes(list, AF_INET6, raw);
    return false;
}

void mx_cidr_list_free(struct mx_cidr_list **listp)
{
    free(*listp);
    *listp = NULL;
}
