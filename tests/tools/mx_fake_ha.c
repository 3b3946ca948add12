/* mx-fake-ha - a stand-in for one node's mx-ha in store replication tests:
 * it answers every MSG_ANY_HA_STATUS_REPORT with the assignment the test
 * wrote into a file, and writes the store's last report to another file.
 *
 *   mx-fake-ha ENDPOINT ASSIGNMENT_FILE REPORT_FILE
 *
 * ASSIGNMENT_FILE (re-read on every report; the test replaces it with a
 * rename) holds lines
 *   role=primary|replica|fenced|silent    silent = do not answer at all
 *   epoch=N
 *   peer=tcp://...                        repeated: a primary's replicas
 * A missing file answers fenced, epoch 0.
 *
 * REPORT_FILE gets (through a rename, so readers never see half a file)
 * "role=N", "epoch=N", "seq=N", "in_sync=N", "endpoint=...",
 * "replication_endpoint=...", "lag=N", "peer=..." lines and "reports=N",
 * the count of reports so far. Runs until SIGTERM/SIGINT. Loopback only:
 * the tests bind 127.0.0.1. */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"
#include "mx_bus.h"
#include "mx_wire.h"

struct fake_ha {
    const char *assignment_path, *report_path;
    unsigned long long reports;
};

static void write_report(struct fake_ha *h, const struct mx_frame_view *f)
{
    char *tmp = mx_asprintf("%s.tmp", h->report_path);
    FILE *out = fopen(tmp, "w");
    if (out == NULL) {
        free(tmp);
        return;
    }
    uint32_t u32;
    uint64_t u64;
    if (mx_frame_get_u32(f, F_HA_ROLE, &u32) == 0)
        fprintf(out, "role=%u\n", u32);
    if (mx_frame_get_u64(f, F_EPOCH, &u64) == 0)
        fprintf(out, "epoch=%llu\n", (unsigned long long)u64);
    if (mx_frame_get_u64(f, F_SEQ, &u64) == 0)
        fprintf(out, "seq=%llu\n", (unsigned long long)u64);
    if (mx_frame_get_u32(f, F_IN_SYNC, &u32) == 0)
        fprintf(out, "in_sync=%u\n", u32);
    if (mx_frame_get_u64(f, F_LAG, &u64) == 0)
        fprintf(out, "lag=%llu\n", (unsigned long long)u64);
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *v;
    size_t len;
    while (mx_frame_next_field(f, &it, &tag, &v, &len)) {
        const char *name = tag == F_ENDPOINT                 ? "endpoint"
                           : tag == F_REPLICATION_ENDPOINT   ? "replication_endpoint"
                           : tag == F_PEER_ENDPOINT          ? "peer"
                           : tag == F_PAIR                   ? "pair"
                                                             : NULL;
        if (name && !memchr(v, '\n', len))
            fprintf(out, "%s=%.*s\n", name, (int)len, (const char *)v);
    }
    fprintf(out, "reports=%llu\n", h->reports);
    if (fclose(out) == 0)
        (void)rename(tmp, h->report_path);
    free(tmp);
}

static void on_request(void *ctx, struct mx_server_request *req, const struct mx_frame_view *f)
{
    struct fake_ha *h = ctx;
    const char *error;
    if (f->type != MSG_ANY_HA_STATUS_REPORT) {
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "fake ha takes status reports only", &error);
        return;
    }
    h->reports++;
    write_report(h, f);
    struct mx_frame out;
    mx_frame_init(&out, MSG_ANY_ACK, 0, NULL);
    mx_frame_put_u32(&out, F_STATUS, MX_STATUS_OK);
    uint32_t role = MX_HA_FENCED;
    uint64_t epoch = 0;
    FILE *in = fopen(h->assignment_path, "r");
    char line[1024];
    char **peers = NULL;
    size_t n = 0;
    bool silent = false;
    while (in && fgets(line, sizeof line, in)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strcmp(line, "role=primary") == 0)
            role = MX_HA_PRIMARY;
        else if (strcmp(line, "role=replica") == 0)
            role = MX_HA_REPLICA;
        else if (strcmp(line, "role=silent") == 0)
            silent = true;
        else if (strncmp(line, "epoch=", 6) == 0)
            epoch = strtoull(line + 6, NULL, 10);
        else if (strncmp(line, "peer=", 5) == 0) {
            peers = mx_reallocarray(peers, n + 1, sizeof *peers);
            peers[n++] = mx_strdup(line + 5);
        }
    }
    if (in)
        fclose(in);
    mx_frame_put_u32(&out, F_HA_ROLE, role);
    mx_frame_put_u64(&out, F_EPOCH, epoch);
    for (size_t i = 0; i < n; i++) {
        mx_frame_put_str(&out, F_PEER_ENDPOINT, peers[i]);
        free(peers[i]);
    }
    free(peers);
    if (silent)
        mx_server_request_drop(&req);
    else
        (void)mx_server_reply(&req, &out, &error);
    mx_frame_free(&out);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: mx-fake-ha ENDPOINT ASSIGNMENT_FILE REPORT_FILE\n");
        return 1;
    }
    struct fake_ha h = { argv[2], argv[3], 0 };
    struct event_base *base = event_base_new();
    struct mx_bus *bus = NULL;
    struct mx_server *server = NULL;
    const char *error;
    if (mx_bus_new(base, &bus, &error) < 0 || mx_server_new(bus, argv[1], on_request, &h, &server, &error) < 0) {
        fprintf(stderr, "mx-fake-ha: %s\n", error);
        return 1;
    }
    struct event *term = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *intr = evsignal_new(base, SIGINT, on_signal, base);
    event_add(term, NULL);
    event_add(intr, NULL);
    fprintf(stderr, "mx-fake-ha: listening on %s\n", mx_server_endpoint(server));
    event_base_dispatch(base);
    event_free(term);
    event_free(intr);
    mx_server_free(&server);
    mx_bus_free(&bus);
    event_base_free(base);
    return 0;
}
