/* mx-store-load - append load on one mx-store: MESSAGES appends of SIZE
 * bytes to USER's INBOX with CONCURRENCY requests in flight (what
 * mx-delivery's parallel sessions look like to the store), each with its
 * own message id. Prints one line:
 *   messages=N ok=N failed=N seconds=S rate=R
 * Exit status 0 if every append was acknowledged OK, 1 otherwise.
 *
 *   mx-store-load ENDPOINT USER MESSAGES CONCURRENCY SIZE
 *
 * Used by tests/bench/replication (throughput with and without a
 * synchronous replica). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mx_alloc.h"
#include "mx_bus.h"
#include "mx_msgid.h"
#include "mx_wire.h"

struct load {
    struct event_base *base;
    struct mx_client *client;
    const char *user;
    char *body;
    size_t body_len;
    unsigned long total, sent, done, ok;
};

static void send_one(struct load *l);

static void on_done(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct load *l = ctx;
    if (result == MX_BUS_CANCELLED)
        return;
    uint32_t status = MX_STATUS_TEMPFAIL;
    if (result == MX_BUS_REPLY)
        (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (status == MX_STATUS_OK)
        l->ok++;
    else if (l->done - l->ok < 5)
        fprintf(stderr, "mx-store-load: append %lu: %s status %u\n", l->done,
                result == MX_BUS_REPLY ? "reply" : "timeout", status);
    l->done++;
    if (l->sent < l->total)
        send_one(l);
    else if (l->done == l->total)
        event_base_loopbreak(l->base);
}

static void send_one(struct load *l)
{
    struct mx_msgid id;
    mx_msgid_next(&id);
    struct mx_frame f;
    mx_frame_init(&f, MSG_ANY_STORE_APPEND, 0, &id);
    mx_frame_put_str(&f, F_USER, l->user);
    mx_frame_put_str(&f, F_MAILBOX, "INBOX");
    mx_frame_put_u32(&f, F_CREATE, 1);
    mx_frame_put_bytes(&f, F_BODY, l->body, l->body_len);
    const char *error;
    l->sent++;
    if (mx_client_request(l->client, &f, on_done, l, NULL, &error) < 0) {
        fprintf(stderr, "mx-store-load: %s\n", error);
        exit(1);
    }
    mx_frame_free(&f);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: mx-store-load ENDPOINT USER MESSAGES CONCURRENCY SIZE\n");
        return 1;
    }
    struct load l = { .user = argv[2], .total = strtoul(argv[3], NULL, 10) };
    unsigned long concurrency = strtoul(argv[4], NULL, 10), size = strtoul(argv[5], NULL, 10);
    if (l.total == 0 || concurrency == 0 || size < 200 || size > 10u << 20) {
        fprintf(stderr, "mx-store-load: MESSAGES and CONCURRENCY > 0, 200 <= SIZE <= 10M\n");
        return 1;
    }
    mx_msgid_init(7);
    /* a plain message padded with body lines up to SIZE */
    const char *head = "From: load@example.test\r\nTo: load@example.test\r\nSubject: load\r\n\r\n";
    l.body = mx_malloc(size + 80);
    size_t len = (size_t)snprintf(l.body, size + 80, "%s", head);
    while (len + 66 <= size)
        len += (size_t)snprintf(l.body + len, size + 80 - len, "%.62s\r\n",
                                "The quick brown fox jumps over the lazy dog, again and again..");
    l.body_len = len;
    l.base = event_base_new();
    struct mx_bus *bus = NULL;
    const char *error;
    struct mx_client_config cc = { .name = "store", .timeout_ms = 30000, .max_attempts = 1 };
    const char *ep = argv[1];
    if (mx_bus_new(l.base, &bus, &error) < 0 || mx_client_new(bus, &ep, 1, &cc, &l.client, &error) < 0) {
        fprintf(stderr, "mx-store-load: %s\n", error);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned long i = 0; i < concurrency && l.sent < l.total; i++)
        send_one(&l);
    event_base_dispatch(l.base);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("messages=%lu ok=%lu failed=%lu seconds=%.3f rate=%.1f\n", l.total, l.ok, l.total - l.ok, secs,
           (double)l.ok / secs);
    mx_client_free(&l.client);
    mx_bus_free(&bus);
    event_base_free(l.base);
    free(l.body);
    return l.ok == l.total ? 0 : 1;
}
