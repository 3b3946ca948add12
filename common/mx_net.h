/* mx_net - small socket-address helpers every network daemon needs:
 * parsing "ip:port" listen/peer options, matching client addresses against
 * operator-configured CIDR lists ("trusted networks"), numeric address
 * text for logs and limits, and the monotonic clock used for timeouts and
 * rate limits. No name resolution anywhere: option values are numeric
 * addresses, so nothing here can block on DNS. */
#ifndef MX_NET_H
#define MX_NET_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* mx_net_parse_hostport - "1.2.3.4:25", "[::1]:25", "*:25" or ":25" (any
 * IPv4 address) to a sockaddr; len_r gets its length. -1 when text is not
 * a numeric address with a port 0..65535, or an IPv6 address without its
 * brackets (ambiguous). */
int mx_net_parse_hostport(const char *text, struct sockaddr_storage *addr_r, socklen_t *len_r);

/* mx_now_ms - milliseconds from CLOCK_MONOTONIC (not wall time: immune to
 * clock steps, only differences are meaningful). */
uint64_t mx_now_ms(void);

/* mx_net_addr_text - the numeric IP text of addr (AF_INET or AF_INET6; no
 * port) into buf, which should hold INET6_ADDRSTRLEN bytes. Returns buf;
 * buf is "" when the family is unknown or buf is too small. */
const char *mx_net_addr_text(const struct sockaddr *addr, char *buf, size_t size);

/* A list of networks: "127.0.0.0/8", "::1/128", "10.1.2.3" (a bare
 * address is one host). */
struct mx_cidr_list;

/* mx_cidr_list_parse - build a list from n option values. A prefix longer
 * than the address, host bits set beyond the prefix ("10.1.2.3/8": almost
 * always a typo for a different network) or anything not numeric is
 * refused: -1 with *error_r (heap, names the bad item). n == 0 gives an
 * empty list that matches nothing. */
int mx_cidr_list_parse(const char *const *items, size_t n, struct mx_cidr_list **list_r,
                       char **error_r);

/* mx_cidr_list_match - is addr (AF_INET / AF_INET6) inside one of the
 * networks? An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack
 * socket reports for IPv4 clients) matches the IPv4 entries. false for a
 * NULL list or an unknown family. */
bool mx_cidr_list_match(const struct mx_cidr_list *list, const struct sockaddr *addr);
/* mx_cidr_list_match_text - the same for numeric address text; false when
 * ip_text is not an address. */
bool mx_cidr_list_match_text(const struct mx_cidr_list *list, const char *ip_text);

void mx_cidr_list_free(struct mx_cidr_list **list);

#endif
