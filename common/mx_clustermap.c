/* mx_clustermap - see mx_clustermap.h. */
#include "mx_clustermap.h"

#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"
#include "mx_bus.h"
#include "mx_log.h"

struct mx_clustermap {
    struct mx_sub *sub;
    mx_clustermap_fn *fn;
    void *ctx;
    uint64_t epoch;
};

static void clustermap_on_map(void *ctx, const char *topic, const struct mx_frame_view *frame)
{
    struct mx_clustermap *map = ctx;
    uint64_t epoch = 0;
    uint32_t quorate = 0;
    if (frame->type != MSG_HA_ANY_CLUSTER_MAP || mx_frame_get_u64(frame, F_EPOCH, &epoch) < 0)
        return;
    (void)mx_frame_get_u32(frame, F_QUORATE, &quorate);
    /* every mx-ha publishes every heartbeat: act on news only */
    if (!quorate || epoch <= map->epoch)
        return;
    map->epoch = epoch;
    /* (F_PAIR F_NODE F_ENDPOINT)* in order */
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    char *pair = NULL, *node = NULL;
    while (mx_frame_next_field(frame, &it, &tag, &value, &len) == 1) {
        if (memchr(value, '\0', len) != NULL)
            continue;
        if (tag == F_PAIR) {
            free(pair);
            free(node);
            pair = mx_strndup((const char *)value, len);
            node = NULL;
        } else if (tag == F_NODE && pair) {
            free(node);
            node = mx_strndup((const char *)value, len);
        } else if (tag == F_ENDPOINT && pair && node) {
            char *endpoint = mx_strndup((const char *)value, len);
            if (*endpoint) {
                mx_log(MX_LOG_INFO, "clustermap.primary", MX_KVU("epoch", epoch),
                       MX_KV("pair", pair), MX_KV("node", node), MX_KV("endpoint", endpoint));
                map->fn(map->ctx, epoch, pair, node, endpoint);
            }
            free(endpoint);
            free(pair);
            free(node);
            pair = node = NULL;
        }
    }
    free(pair);
    free(node);
}

int mx_clustermap_new(struct mx_bus *bus, const char *const *endpoints, size_t n,
                      mx_clustermap_fn *fn, void *ctx, struct mx_clustermap **map_r,
                      const char **error_r)
{
    *map_r = NULL;
    if (n == 0)
        return 0;
    struct mx_clustermap *map = mx_calloc(1, sizeof *map);
    map->fn = fn;
    map->ctx = ctx;
    if (mx_sub_new(bus, endpoints, n, "map", clustermap_on_map, map, &map->sub, error_r) < 0) {
        free(map);
        return -1;
    }
    *map_r = map;
    return 0;
}

void mx_clustermap_free(struct mx_clustermap **mapp)
{
    struct mx_clustermap *map = *mapp;
    if (map == NULL)
        return;
    mx_sub_free(&map->sub);
    free(map);
    *mapp = NULL;
}

uint64_t mx_clustermap_epoch(const struct mx_clustermap *map)
{
    return map ? map->epoch : 0;
}
