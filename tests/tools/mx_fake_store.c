/* mx-fake-store - plays a store towards mx-ha, for mx-ha's tests.
 *
 *   mx-fake-store -e HA_CONTROL -p PAIR -n ENDPOINT -r REPLICATION_ENDPOINT
 *                 [-i INTERVAL_MS] [-E EPOCH] [-S SEQ] [-o FILE]
 *
 * Every INTERVAL_MS (default 200) it sends MSG_ANY_HA_STATUS_REPORT like
 * mx-store does (role as run now, epoch, seq, in_sync, endpoints) and acts
 * on the assignment in the ack: the role changes, a higher epoch is
 * "persisted" (kept). As a primary it pretends to commit one record per
 * report (seq + 1), as a replica it reports in sync. Each change of
 * assignment is printed as one line
 *   assign role=primary epoch=4 peers=tcp://10.77.0.2:7321
 * and, with -o, FILE is atomically rewritten with that line, so a test can
 * read the current state. No ack for 3 intervals: it fences itself (the
 * store's lease) and prints "assign role=fenced epoch=N lease=expired". */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_bus.h"
#include "mx_log.h"
#include "mx_net.h"

struct fake {
    const char *pair, *endpoint, *replication_endpoint, *out_path;
    uint32_t role;
    uint64_t epoch, seq, last_ack_ms;
    unsigned interval_ms;
    bool in_flight;
    char line[1024];
    struct mx_client *client;
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

static void publish(struct fake *f, const char *line)
{
    if (strcmp(line, f->line) == 0)
        return;
    snprintf(f->line, sizeof(f->line), "%s", line);
    printf("%s\n", line);
    fflush(stdout);
    if (!f->out_path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->out_path);
    FILE *out = fopen(tmp, "w");
    if (!out || fprintf(out, "%s\n", line) < 0 || fclose(out) != 0 || rename(tmp, f->out_path) != 0)
        fprintf(stderr, "mx-fake-store: cannot write %s\n", f->out_path);
}

static void on_ack(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct fake *f = ctx;
    f->in_flight = false;
    uint32_t status = MX_STATUS_TEMPFAIL, role = MX_HA_FENCED;
    uint64_t epoch = 0;
    if (result != MX_BUS_REPLY || mx_frame_get_u32(reply, F_STATUS, &status) < 0 ||
        status != MX_STATUS_OK || mx_frame_get_u32(reply, F_HA_ROLE, &role) < 0 ||
        mx_frame_get_u64(reply, F_EPOCH, &epoch) < 0)
        return; /* no lease renewal */
    f->last_ack_ms = mx_now_ms();
    if (epoch < f->epoch && role != MX_HA_FENCED) {
        /* A real store refuses to go back in epochs: stay fenced. */
        role = MX_HA_FENCED;
    }
    if (epoch > f->epoch)
        f->epoch = epoch;
    f->role = role;
    char line[1024];
    int len = snprintf(line, sizeof(line), "assign role=%s epoch=%llu peers=", role_name(role),
                       (unsigned long long)f->epoch);
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t value_len;
    bool first = true;
    while (mx_frame_next_field(reply, &it, &tag, &value, &value_len)) {
        if (tag != F_PEER_ENDPOINT || len >= (int)sizeof(line) - 2)
            continue;
        len += snprintf(line + len, sizeof(line) - (size_t)len, "%s%.*s", first ? "" : ",",
                        (int)value_len, (const char *)value);
        first = false;
    }
    publish(f, line);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    uint64_t now = mx_now_ms();
    if (f->role != MX_HA_FENCED && now - f->last_ack_ms > 3ull * f->interval_ms) {
        f->role = MX_HA_FENCED;
        char line[256];
        snprintf(line, sizeof(line), "assign role=fenced epoch=%llu lease=expired",
                 (unsigned long long)f->epoch);
        publish(f, line);
    }
    if (f->in_flight)
        return;
    if (f->role == MX_HA_PRIMARY)
        f->seq++;
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_HA_STATUS_REPORT, 0, NULL);
    mx_frame_put_str(&frame, F_PAIR, f->pair);
    mx_frame_put_u32(&frame, F_HA_ROLE, f->role);
    mx_frame_put_u64(&frame, F_EPOCH, f->epoch);
    mx_frame_put_u64(&frame, F_SEQ, f->seq);
    mx_frame_put_u64(&frame, F_OPLOG_FIRST, 1); /* a log never trimmed */
    mx_frame_put_u32(&frame, F_IN_SYNC, f->role == MX_HA_REPLICA || f->role == MX_HA_PRIMARY);
    mx_frame_put_str(&frame, F_ENDPOINT, f->endpoint);
    mx_frame_put_str(&frame, F_REPLICATION_ENDPOINT, f->replication_endpoint);
    const char *error = NULL;
    if (mx_client_request(f->client, &frame, on_ack, f, NULL, &error) == 0)
        f->in_flight = true;
    else
        fprintf(stderr, "mx-fake-store: %s\n", error);
    mx_frame_free(&frame);
}

int main(int argc, char **argv)
{
    struct fake f = { .interval_ms = 200, .role = MX_HA_FENCED };
    const char *ha = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "e:p:n:r:i:E:S:o:")) != -1) {
        switch (opt) {
        case 'e': ha = optarg; break;
        case 'p': f.pair = optarg; break;
        case 'n': f.endpoint = optarg; break;
        case 'r': f.replication_endpoint = optarg; break;
        case 'i': f.interval_ms = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'E': f.epoch = strtoull(optarg, NULL, 10); break;
        case 'S': f.seq = strtoull(optarg, NULL, 10); break;
        case 'o': f.out_path = optarg; break;
        default:
            fprintf(stderr, "usage: mx-fake-store -e HA -p PAIR -n ENDPOINT -r REPL_ENDPOINT "
                            "[-i MS] [-E EPOCH] [-S SEQ] [-o FILE]\n");
            return 2;
        }
    }
    if (!ha || !f.pair || !f.endpoint || !f.replication_endpoint || f.interval_ms == 0) {
        fprintf(stderr, "mx-fake-store: -e, -p, -n and -r are required\n");
        return 2;
    }
    mx_log_open("fake-store", "", MX_LOG_TO_STDERR, 0, MX_LOG_WARNING);
    struct event_base *base = event_base_new();
    struct mx_bus *bus = NULL;
    const char *error = NULL;
    struct mx_client_config cc = { .name = "ha", .timeout_ms = f.interval_ms, .max_attempts = 1 };
    if (mx_bus_new(base, &bus, &error) < 0 || mx_client_new(bus, &ha, 1, &cc, &f.client, &error) < 0) {
        fprintf(stderr, "mx-fake-store: %s\n", error);
        return 1;
    }
    char start[256];
    snprintf(start, sizeof(start), "assign role=fenced epoch=%llu peers=", (unsigned long long)f.epoch);
    publish(&f, start);
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, &f);
    struct timeval tv = { f.interval_ms / 1000, (f.interval_ms % 1000) * 1000 };
    event_add(tick, &tv);
    event_base_dispatch(base);
    event_free(tick);
    mx_client_free(&f.client);
    mx_bus_free(&bus);
    event_base_free(base);
    return 0;
}
