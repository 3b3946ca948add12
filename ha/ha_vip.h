/* ha_vip - the optional virtual IP of a pair, moved to its active member.
 *
 * Adding runs `ip addr replace ADDR/PREFIX dev IFACE` (idempotent) and then
 * announces the move with one gratuitous ARP (an ARP request whose sender
 * and target address are both the VIP, broadcast from IFACE's MAC), so
 * neighbours and switches update their caches at once instead of after
 * their ARP timeout. Removing runs `ip addr del`; "not there" is success.
 * `ip` is run through execve with an argument vector (no shell). */
#ifndef HA_VIP_H
#define HA_VIP_H

#include <stdbool.h>

/* ha_vip_apply - make vip ("10.0.0.5/24") present or absent on iface.
 * 0, or -1 with a heap error_r (command, exit status, errno). */
int ha_vip_apply(const char *vip, const char *iface, bool present, char **error_r);

/* ha_vip_announce - the gratuitous ARP alone (IPv4 only). */
int ha_vip_announce(const char *vip, const char *iface, char **error_r);

#endif
