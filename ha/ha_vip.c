/* ha_vip - virtual IP add/remove and gratuitous ARP (see ha_vip.h). */
#include "ha_vip.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/if_ether.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

__attribute__((format(printf, 2, 3))) static int set_error(char **error_r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error_r, fmt, ap) < 0)
        *error_r = NULL;
    va_end(ap);
    return -1;
}

/* run_ip - `ip` with argv; its exit status, or -1 if it could not run. */
static int run_ip(char *const argv[], int *errno_r)
{
    pid_t pid;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    /* Keep `ip`'s complaints ("Cannot assign requested address") out of our
     * log stream: the exit status is what we report. */
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, "ip", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        *errno_r = rc;
        return -1;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            *errno_r = errno;
            return -1;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ha_vip_apply(const char *vip, const char *iface, bool present, char **error_r)
{
    if (!vip[0] || !iface[0])
        return set_error(error_r, "vip \"%s\" needs vip_interface (\"%s\")", vip, iface);
    char *argv[] = { "ip", "addr", present ? "replace" : "del", (char *)vip, "dev",
                     (char *)iface, NULL };
    int err = 0;
    int status = run_ip(argv, &err);
    if (status < 0)
        return set_error(error_r, "ip addr %s: cannot run ip: %s",
                         present ? "replace" : "del", strerror(err));
    /* `ip addr del` of an address that is not there exits 2: already absent,
     * which is what we wanted. */
    if (status != 0 && present)
        return set_error(error_r, "ip addr replace %s dev %s: exit status %d", vip, iface, status);
    if (present)
        return ha_vip_announce(vip, iface, error_r);
    return 0;
}

struct arp_packet {
    struct ether_header eth;
    struct ether_arp arp;
} __attribute__((packed));

int ha_vip_announce(const char *vip, const char *iface, char **error_r)
{
    char address[INET_ADDRSTRLEN];
    const char *slash = strchr(vip, '/');
    size_t len = slash ? (size_t)(slash - vip) : strlen(vip);
    if (len >= sizeof(address))
        return set_error(error_r, "vip \"%s\" (%s): address too long", vip, iface);
    memcpy(address, vip, len);
    address[len] = '\0';
    struct in_addr ip;
    if (inet_pton(AF_INET, address, &ip) != 1)
        return 0; /* IPv6 uses unsolicited neighbour advertisements from the kernel */
    if (strlen(iface) >= IFNAMSIZ)
        return set_error(error_r, "vip %s: interface name \"%s\" too long", vip, iface);

    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (fd < 0)
        return set_error(error_r, "gratuitous ARP for %s on %s: socket: %s", vip, iface, strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, iface, strlen(iface));
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
        int err = errno;
        close(fd);
        return set_error(error_r, "gratuitous ARP for %s on %s: no such interface: %s", vip,
                         iface, strerror(err));
    }
    int ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
        int err = errno;
        close(fd);
        return set_error(error_r, "gratuitous ARP for %s on %s: SIOCGIFHWADDR: %s", vip,
                         iface, strerror(err));
    }
    struct arp_packet pkt;
    memset(&pkt, 0, sizeof(pkt));
    memset(pkt.eth.ether_dhost, 0xff, ETH_ALEN);
    memcpy(pkt.eth.ether_shost, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
    pkt.eth.ether_type = htons(ETHERTYPE_ARP);
    pkt.arp.arp_hrd = htons(ARPHRD_ETHER);
    pkt.arp.arp_pro = htons(ETHERTYPE_IP);
    pkt.arp.arp_hln = ETH_ALEN;
    pkt.arp.arp_pln = 4;
    pkt.arp.arp_op = htons(ARPOP_REQUEST);
    memcpy(pkt.arp.arp_sha, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
    memcpy(pkt.arp.arp_spa, &ip, 4);
    memset(pkt.arp.arp_tha, 0xff, ETH_ALEN);
    memcpy(pkt.arp.arp_tpa, &ip, 4);

    struct sockaddr_ll to;
    memset(&to, 0, sizeof(to));
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_ARP);
    to.sll_ifindex = ifindex;
    to.sll_halen = ETH_ALEN;
    memset(to.sll_addr, 0xff, ETH_ALEN);
    ssize_t sent = sendto(fd, &pkt, sizeof(pkt), 0, (struct sockaddr *)&to, sizeof(to));
    int err = errno;
    close(fd);
    if (sent != (ssize_t)sizeof(pkt))
        return set_error(error_r, "gratuitous ARP for %s on %s: sendto: %s", vip, iface,
                         strerror(sent < 0 ? err : EIO));
    return 0;
}
