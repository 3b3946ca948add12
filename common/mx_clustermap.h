/* mx_clustermap - follow mx-ha's cluster map (MSG_HA_ANY_CLUSTER_MAP on
 * every node's ha.publish) so a client of a store shard asks the shard's
 * primary first: after a failover the first request goes to the new
 * primary instead of waiting out a timeout on a silent old one.
 *
 * The map is advisory: correctness comes from the stores themselves (a
 * non-primary answers STALE_EPOCH and the bus asks the next instance).
 * Maps are ordered by epoch; an older or non-quorate map is ignored. */
#ifndef MX_CLUSTERMAP_H
#define MX_CLUSTERMAP_H

#include <stddef.h>
#include <stdint.h>

struct mx_bus;
struct mx_clustermap;

/* Called for every pair of a newer map: its active member's node name and
 * service endpoint (as the store reported it). */
typedef void mx_clustermap_fn(void *ctx, uint64_t epoch, const char *pair, const char *node,
                              const char *endpoint);

/* mx_clustermap_new - subscribe to endpoints[0..n) (every mx-ha's
 * ha.publish). n == 0: nothing to follow, *map_r NULL, 0 returned. */
int mx_clustermap_new(struct mx_bus *bus, const char *const *endpoints, size_t n,
                      mx_clustermap_fn *fn, void *ctx, struct mx_clustermap **map_r,
                      const char **error_r);
void mx_clustermap_free(struct mx_clustermap **map);
/* mx_clustermap_epoch - the newest epoch followed (0 = none yet). */
uint64_t mx_clustermap_epoch(const struct mx_clustermap *map);

#endif
