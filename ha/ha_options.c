/* ha_options - every option mx-ha (and mxctl) reads, with defaults and docs. */
#include "mx_config.h"

/* Declared here, not in a header, so test_sample_config needs no Corosync
 * headers. */
extern const struct mx_option ha_options[];

const struct mx_option ha_options[] = {
    { "ha", MX_OPT_GROUP, NULL, 0, 0, NULL,
      "mx-ha: Corosync membership and quorum, who is primary/active of every pair" },
    { "ha.control", MX_OPT_STRING, "\"tcp://127.0.0.1:7400\"", 0, 0, NULL,
      "bus endpoint for the local daemons' status reports and for mxctl (keep it on loopback)" },
    { "ha.publish", MX_OPT_STRING, "\"tcp://0.0.0.0:7410\"", 0, 0, NULL,
      "PUB endpoint of the cluster map (topic \"map\"): who is primary of every pair, with the epoch" },
    { "ha.cpg_group", MX_OPT_STRING, "\"mxcluster\"", 0, 0, NULL,
      "Corosync CPG group every mx-ha of the cluster joins" },
    { "ha.heartbeat", MX_OPT_DURATION, "\"500ms\"", 50, 60000, NULL,
      "how often state is re-multicast and the map re-published; a daemon silent for 3 heartbeats counts as down" },
    { "ha.daemon_lease", MX_OPT_DURATION, "\"3s\"", 100, 600000, NULL,
      "how long a local daemon goes on without its mx-ha (= store.ha_lease): when only mx-ha dies on a node, its primaries are replaced after this" },
    { "ha.agent_listen", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "HAProxy agent-check listener \"ip:port\" answering up ready / up drain / down for this node's frontends (\"\" = off)" },
    { "ha.pairs", MX_OPT_GROUP_LIST, NULL, 0, 0, NULL,
      "the pairs mx-ha assigns: store shards (primary + replicas) and active/standby frontends" },
    { "ha.pairs.*.name", MX_OPT_STRING, "\"shard1\"", 0, 0, NULL,
      "pair name: a store's store.pair (default its shard), or a frontend pair's name" },
    { "ha.pairs.*.kind", MX_OPT_STRING, "\"store\"", 0, 0, "store|frontend",
      "store (primary + synchronous replicas) or frontend (one active, others standby)" },
    { "ha.pairs.*.members", MX_OPT_STRING_LIST, "[ \"node1\", \"node2\" ]", 0, 0, NULL,
      "node names (node.name) hosting the pair, in order of preference" },
    { "ha.pairs.*.vip", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "virtual IP \"addr/prefix\" moved to the active member (\"\" = none)" },
    { "ha.pairs.*.vip_interface", MX_OPT_STRING, "\"\"", 0, 0, NULL,
      "interface the virtual IP is added to (required with vip)" },
    { NULL, 0, NULL, 0, 0, NULL, NULL },
};
