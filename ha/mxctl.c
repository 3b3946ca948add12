/* mxctl - the operator's command line for the cluster.
 *
 *   mxctl [-c CONFIG] [-e ENDPOINT] cluster status
 *       members, quorum, and for every pair its active node, epoch, and
 *       each member's role, last oplog record, replication lag and the
 *       records its log still holds (oplog=FIRST-LAST), as reported by the
 *       local mx-ha (ha.control, or -e).
 *   mxctl [-c CONFIG] [-e ENDPOINT] [-w SECONDS] cluster switchover PAIR [NODE]
 *       move PAIR's primary/active role to NODE (default: the next member
 *       that may take it) gracefully: the cluster switches only to a member
 *       holding everything the primary acknowledged (an in-sync replica),
 *       in a new epoch. Waits up to -w seconds (default 10) until the map
 *       shows the move; exit 0 when it happened, 1 otherwise.
 *
 * Output is one fact per line, "key: value" and "name key=value ...", so
 * scripts (and the integration tests) can read it. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_bus.h"
#include "mx_config.h"
#include "mx_log.h"

extern const struct mx_option ha_options[];

#define USAGE                                                                          \
    "usage: mxctl [-c CONFIG] [-e ENDPOINT] cluster status\n"                          \
    "       mxctl [-c CONFIG] [-e ENDPOINT] [-w SECONDS] cluster switchover PAIR [NODE]\n"

struct call {
    bool done;
    enum mx_bus_result result;
    uint8_t *reply; /* copy of the reply frame */
    size_t reply_len;
    struct event_base *base;
};

static const char *role_name(uint32_t role)
{
    switch (role) {
    case MX_HA_PRIMARY: return "primary";
    case MX_HA_REPLICA: return "replica";
    case MX_HA_STANDBY: return "standby";
    default: return "fenced";
    }
}

static void on_reply(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct call *call = ctx;
    call->done = true;
    call->result = result;
    if (result == MX_BUS_REPLY) {
        /* Re-frame the view: the bytes are valid only during the callback. */
        call->reply_len = MX_WIRE_HEADER_SIZE + reply->body_len;
        call->reply = mx_malloc(call->reply_len);
        memcpy(call->reply, reply->body - MX_WIRE_HEADER_SIZE, call->reply_len);
    }
    event_base_loopbreak(call->base);
}

/* request - send frame to mx-ha and wait for the answer; 0 and *view_r
 * (pointing into call->reply) or -1 after printing why. */
static int request(struct event_base *base, struct mx_client *client, struct mx_frame *frame,
                   struct call *call, struct mx_frame_view *view_r)
{
    const char *error = NULL;
    memset(call, 0, sizeof(*call));
    call->base = base;
    if (mx_client_request(client, frame, on_reply, call, NULL, &error) < 0) {
        fprintf(stderr, "mxctl: %s\n", error);
        return -1;
    }
    while (!call->done)
        event_base_loop(base, EVLOOP_ONCE);
    if (call->result != MX_BUS_REPLY) {
        fprintf(stderr, "mxctl: mx-ha did not answer (is it running?)\n");
        return -1;
    }
    if (mx_frame_parse(call->reply, call->reply_len, view_r, &error) < 0) {
        fprintf(stderr, "mxctl: bad reply from mx-ha: %s\n", error);
        return -1;
    }
    return 0;
}

struct pair_status {
    char name[128];
    char active[128];
    uint64_t epoch;
};

static void copy_field(char *dst, size_t size, const uint8_t *value, size_t len)
{
    size_t n = len < size - 1 ? len : size - 1;
    memcpy(dst, value, n);
    dst[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (dst[i] < 0x20 || dst[i] == 0x7f)
            dst[i] = '?'; /* never echo control bytes to a terminal */
}

static uint64_t field_u64(const uint8_t *value, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++)
        v = v << 8 | value[i];
    return v;
}

/* walk_status - read a MSG_HA_ANY_CLUSTER_STATUS_RESULT: print it when
 * print is set; when want_pair is set, fill *found with that pair. */
static int walk_status(const struct mx_frame_view *view, bool print, const char *want_pair,
                       struct pair_status *found)
{
    uint32_t status = MX_STATUS_TEMPFAIL, quorate = 0;
    uint64_t epoch = 0;
    (void)mx_frame_get_u32(view, F_STATUS, &status);
    if (view->type != MSG_HA_ANY_CLUSTER_STATUS_RESULT || status != MX_STATUS_OK) {
        fprintf(stderr, "mxctl: mx-ha refused the status request (status %u)\n", status);
        return -1;
    }
    (void)mx_frame_get_u32(view, F_QUORATE, &quorate);
    (void)mx_frame_get_u64(view, F_EPOCH, &epoch);
    if (print) {
        printf("quorum: %s\n", quorate ? "yes" : "no");
        printf("epoch: %llu\n", (unsigned long long)epoch);
        printf("members:");
    }
    /* Layout (mx_wire.h): F_NODE* members, then per pair F_PAIR F_NODE
     * (active) F_EPOCH, then per member F_NODE F_HA_ROLE F_SEQ F_IN_SYNC
     * F_LAG F_OPLOG_FIRST F_TEXT. */
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    enum { MEMBERS, PAIR_ACTIVE, PAIR_EPOCH, MEMBER } where = MEMBERS;
    struct pair_status pair = { 0 };
    char member[128] = "", text[64] = "";
    uint32_t role = 0, in_sync = 0;
    uint64_t seq = 0, lag = 0, oplog_first = 0;
    while (mx_frame_next_field(view, &it, &tag, &value, &len)) {
        if (tag == F_PAIR) {
            if (print && where == MEMBERS)
                printf("\n");
            copy_field(pair.name, sizeof(pair.name), value, len);
            where = PAIR_ACTIVE;
        } else if (tag == F_NODE && where == MEMBERS) {
            copy_field(member, sizeof(member), value, len);
            if (print)
                printf(" %s", member);
        } else if (tag == F_NODE && where == PAIR_ACTIVE) {
            copy_field(pair.active, sizeof(pair.active), value, len);
            where = PAIR_EPOCH;
        } else if (tag == F_EPOCH && where == PAIR_EPOCH && len == 8) {
            pair.epoch = field_u64(value, len);
            if (want_pair && strcmp(want_pair, pair.name) == 0)
                *found = pair;
            if (print)
                printf("pair %s active=%s epoch=%llu\n", pair.name,
                       pair.active[0] ? pair.active : "-", (unsigned long long)pair.epoch);
            where = MEMBER;
        } else if (tag == F_NODE && where == MEMBER) {
            copy_field(member, sizeof(member), value, len);
        } else if (tag == F_HA_ROLE && len == 4) {
            role = (uint32_t)field_u64(value, len);
        } else if (tag == F_SEQ && len == 8) {
            seq = field_u64(value, len);
        } else if (tag == F_IN_SYNC && len == 4) {
            in_sync = (uint32_t)field_u64(value, len);
        } else if (tag == F_TEXT && where == MEMBER) {
            copy_field(text, sizeof(text), value, len);
        } else if (tag == F_LAG && len == 8) {
            lag = field_u64(value, len);
        } else if (tag == F_OPLOG_FIRST && len == 8) {
            oplog_first = field_u64(value, len);
        }
        /* F_TEXT closes a member's record. */
        if (tag == F_TEXT && where == MEMBER && print) {
            printf("  member %s role=%s seq=%llu in_sync=%u lag=%llu state=%s", member,
                   role_name(role), (unsigned long long)seq, in_sync, (unsigned long long)lag,
                   text);
            /* the records its log holds: a replica behind the first of the
             * primary's needs a snapshot (store.oplog_keep) */
            if (oplog_first)
                printf(" oplog=%llu-%llu", (unsigned long long)oplog_first, (unsigned long long)seq);
            printf("\n");
            oplog_first = 0;
        }
    }
    if (print && where == MEMBERS)
        printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = "/etc/mxcluster/mxcluster.conf";
    const char *endpoint = NULL;
    long wait_s = 10;
    int opt;
    while ((opt = getopt(argc, argv, "+c:e:w:h")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'e': endpoint = optarg; break;
        case 'w': wait_s = strtol(optarg, NULL, 10); break;
        default: fputs(USAGE, opt == 'h' ? stdout : stderr); return opt == 'h' ? 0 : 2;
        }
    }
    int rest = argc - optind;
    char **args = argv + optind;
    bool status_cmd = rest == 2 && strcmp(args[0], "cluster") == 0 && strcmp(args[1], "status") == 0;
    bool switch_cmd = (rest == 3 || rest == 4) && strcmp(args[0], "cluster") == 0 &&
                      strcmp(args[1], "switchover") == 0;
    if (!status_cmd && !switch_cmd) {
        fputs(USAGE, stderr);
        return 2;
    }
    mx_log_open("mxctl", "", MX_LOG_TO_STDERR, 0, MX_LOG_WARNING);
    struct mx_config *config = NULL;
    if (!endpoint) {
        static const struct mx_option *const tables[] = { mx_common_options, ha_options, NULL };
        char *error = NULL;
        if (mx_config_load(path, tables, &config, &error) < 0) {
            fprintf(stderr, "mxctl: %s\n", error);
            free(error);
            return 1;
        }
        struct mx_config_node root = mx_config_root(config);
        endpoint = mx_config_string(&root, "ha.control");
    }
    struct event_base *base = event_base_new();
    struct mx_bus *bus = NULL;
    struct mx_client *client = NULL;
    const char *error = NULL;
    int rc = 1;
    struct mx_client_config cc = { .name = "ha", .timeout_ms = 2000, .max_attempts = 2 };
    if (mx_bus_new(base, &bus, &error) < 0 ||
        mx_client_new(bus, &endpoint, 1, &cc, &client, &error) < 0) {
        fprintf(stderr, "mxctl: %s\n", error);
        goto out;
    }
    struct call call = { 0 };
    struct mx_frame frame;
    struct mx_frame_view view;
    if (status_cmd) {
        mx_frame_init(&frame, MSG_ANY_HA_CLUSTER_STATUS, 0, NULL);
        int got = request(base, client, &frame, &call, &view);
        mx_frame_free(&frame);
        if (got == 0 && walk_status(&view, true, NULL, NULL) == 0)
            rc = 0;
        free(call.reply);
        goto out;
    }

    const char *pair = args[2];
    const char *target = rest == 4 ? args[3] : NULL;
    struct pair_status before = { 0 };
    mx_frame_init(&frame, MSG_ANY_HA_CLUSTER_STATUS, 0, NULL);
    int got = request(base, client, &frame, &call, &view);
    mx_frame_free(&frame);
    if (got == 0)
        got = walk_status(&view, false, pair, &before);
    free(call.reply);
    if (got < 0)
        goto out;
    if (!before.name[0]) {
        fprintf(stderr, "mxctl: no pair \"%s\" in ha.pairs\n", pair);
        goto out;
    }
    if (target && strcmp(target, before.active) == 0) {
        printf("switchover %s: %s is already active (epoch %llu)\n", pair, target,
               (unsigned long long)before.epoch);
        rc = 0;
        goto out;
    }
    mx_frame_init(&frame, MSG_ANY_HA_SWITCHOVER, 0, NULL);
    mx_frame_put_str(&frame, F_PAIR, pair);
    if (target)
        mx_frame_put_str(&frame, F_NODE, target);
    got = request(base, client, &frame, &call, &view);
    mx_frame_free(&frame);
    uint32_t status = MX_STATUS_TEMPFAIL;
    char *text = NULL;
    if (got == 0) {
        (void)mx_frame_get_u32(&view, F_STATUS, &status);
        (void)mx_frame_get_str(&view, F_TEXT, &text);
    }
    free(call.reply);
    if (got < 0 || status != MX_STATUS_OK) {
        if (got == 0)
            fprintf(stderr, "mxctl: switchover %s refused: %s\n", pair, text ? text : "?");
        free(text);
        goto out;
    }
    free(text);
    for (long waited_ms = 0; waited_ms <= wait_s * 1000; waited_ms += 200) {
        struct pair_status now = { 0 };
        mx_frame_init(&frame, MSG_ANY_HA_CLUSTER_STATUS, 0, NULL);
        got = request(base, client, &frame, &call, &view);
        mx_frame_free(&frame);
        if (got == 0)
            got = walk_status(&view, false, pair, &now);
        free(call.reply);
        if (got < 0)
            goto out;
        if (now.active[0] && now.epoch > before.epoch &&
            (target ? strcmp(now.active, target) == 0 : strcmp(now.active, before.active) != 0)) {
            printf("switchover %s: %s -> %s (epoch %llu)\n", pair,
                   before.active[0] ? before.active : "-", now.active,
                   (unsigned long long)now.epoch);
            rc = 0;
            goto out;
        }
        usleep(200 * 1000);
    }
    fprintf(stderr,
            "mxctl: switchover %s: not done after %lds (the target must be an in-sync replica "
            "in the quorate partition; see mxctl cluster status)\n",
            pair, wait_s);
out:
    mx_client_free(&client);
    mx_bus_free(&bus);
    event_base_free(base);
    mx_config_free(&config);
    return rc;
}
