/* mx-test-sink - stands in for mx-delivery in mx-inbound's tests, until the
 * real mx-delivery exists (issue 4). It is NOT a mock of behaviour we claim:
 * it is the receiving end of MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT done the
 * way the protocol requires (durable write, then ack; DUPLICATE for a
 * message id it already has), so tests can count what arrived and how
 * often.
 *
 *   mx-test-sink -l tcp://127.0.0.1:PORT -d DIR [-t N] [-s]
 *     -t N  answer TEMPFAIL to the first N requests (retry paths)
 *     -s    never answer (timeout paths)
 *     -n    ack at once and keep nothing (tests/bench/smtp: inbound alone)
 *
 * DIR/queue/<message id> holds, per message, the envelope and the body:
 *   sender <addr>\n rcpt <addr>\n notify <..>\n orcpt <..>\n ... \n\n<body>
 * (one "<label> <value>" line per string field of the request, in wire
 * order, so tests can check what the envelope carried: DSN, SMTPUTF8, AUTH)
 * and DIR/duplicates counts requests answered DUPLICATE (one line each). */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_bus.h"
#include "mx_log.h"
#include "mx_spool.h"

struct sink {
    struct mx_spool *spool;
    struct mx_spool_committer *committer;
    const char *dir;
    int tempfail_left;
    int silent;
    int discard; /* -n: ack at once without keeping anything (benchmarks of inbound alone) */
};

struct sink_pending {
    struct mx_server_request *req;
    char name[MX_MSGID_TEXT_LEN + 1];
};

static void sink_on_commit(void *ctx, int error, const char *name)
{
    struct sink_pending *p = ctx;
    const char *bus_error;
    if (error)
        mx_server_ack(&p->req, MX_STATUS_TEMPFAIL, strerror(error), &bus_error);
    else
        mx_server_ack(&p->req, MX_STATUS_OK, "stored", &bus_error);
    mx_log(MX_LOG_INFO, "sink.stored", MX_KV("id", p->name), MX_KVI("error", error));
    free(p);
}

/* sink_label - the line label of a string field kept in the queue file. */
static const char *sink_label(uint16_t tag)
{
    switch (tag) {
    case F_SENDER: return "sender ";
    case F_RECIPIENT: return "rcpt ";
    case F_RCPT_NOTIFY: return "notify ";
    case F_RCPT_ORCPT: return "orcpt ";
    case F_ENVID: return "envid ";
    case F_RET: return "ret ";
    case F_BODY_TYPE: return "body_type ";
    case F_AUTH_USER: return "auth_user ";
    case F_CLIENT_ADDR: return "client_addr ";
    case F_CLIENT_NAME: return "client_name ";
    case F_INSTANCE: return "instance ";
    default: return NULL;
    }
}

static void sink_handle(void *ctx, struct mx_server_request *req, const struct mx_frame_view *frame)
{
    struct sink *sink = ctx;
    const char *bus_error;
    if (frame->type != MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT) {
        mx_server_ack(&req, MX_STATUS_PERMFAIL, "unexpected message type", &bus_error);
        return;
    }
    if (sink->silent) {
        char id[MX_MSGID_TEXT_LEN + 1];
        mx_msgid_format(&frame->message_id, id);
        mx_log(MX_LOG_INFO, "sink.dropped_silently", MX_KV("id", id));
        mx_server_request_drop(&req);
        return;
    }
    if (sink->discard) {
        mx_server_ack(&req, MX_STATUS_OK, "discarded (benchmark sink)", &bus_error);
        return;
    }
    if (sink->tempfail_left > 0) {
        sink->tempfail_left--;
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, "test: tempfail requested", &bus_error);
        return;
    }
    char name[MX_MSGID_TEXT_LEN + 1];
    mx_msgid_format(&frame->message_id, name);
    char path[4096];
    struct stat st;
    if (stat(mx_spool_path(sink->spool, name, path, sizeof path), &st) == 0) {
        char *dup_path = mx_asprintf("%s/duplicates", sink->dir);
        FILE *fp = fopen(dup_path, "a");
        if (fp) {
            fprintf(fp, "%s\n", name);
            fclose(fp);
        }
        free(dup_path);
        mx_server_ack(&req, MX_STATUS_DUPLICATE, "already stored", &bus_error);
        return;
    }
    struct mx_spool_file *file;
    char *error = NULL;
    if (mx_spool_create(sink->spool, name, &file, &error) < 0) {
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, error, &bus_error);
        free(error);
        return;
    }
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    const uint8_t *body = NULL;
    size_t body_len = 0;
    int bad = 0;
    while (mx_frame_next_field(frame, &it, &tag, &value, &len) == 1) {
        const char *label = sink_label(tag);
        if (tag == F_BODY) {
            body = value;
            body_len = len;
        } else if (label) {
            bad |= mx_spool_write(file, label, strlen(label), &error);
            bad |= mx_spool_write(file, value, len, &error);
            bad |= mx_spool_write(file, "\n", 1, &error);
        }
    }
    uint32_t smtputf8;
    if (mx_frame_get_u32(frame, F_SMTPUTF8, &smtputf8) == 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "smtputf8 %u\n", (unsigned)smtputf8);
        bad |= mx_spool_write(file, line, (size_t)n, &error);
    }
    bad |= mx_spool_write(file, "\n", 1, &error);
    if (body)
        bad |= mx_spool_write(file, body, body_len, &error);
    if (bad) {
        mx_spool_abort(&file);
        mx_server_ack(&req, MX_STATUS_TEMPFAIL, error, &bus_error);
        free(error);
        return;
    }
    struct sink_pending *p = mx_calloc(1, sizeof *p);
    p->req = req;
    memcpy(p->name, name, sizeof p->name);
    mx_spool_commit_async(sink->committer, file, sink_on_commit, p);
}

int main(int argc, char **argv)
{
    const char *listen = NULL;
    struct sink sink = { 0 };
    int opt;
    while ((opt = getopt(argc, argv, "l:d:t:sn")) != -1) {
        switch (opt) {
        case 'l': listen = optarg; break;
        case 'd': sink.dir = optarg; break;
        case 't': sink.tempfail_left = atoi(optarg); break;
        case 's': sink.silent = 1; break;
        case 'n': sink.discard = 1; break;
        default:
            fprintf(stderr, "usage: mx-test-sink -l ENDPOINT -d DIR [-t N] [-s]\n");
            return 2;
        }
    }
    if (listen == NULL || sink.dir == NULL) {
        fprintf(stderr, "usage: mx-test-sink -l ENDPOINT -d DIR [-t N] [-s]\n");
        return 2;
    }
    mx_log_open("test-sink", NULL, MX_LOG_TO_STDERR, 0, MX_LOG_INFO);
    struct event_base *base = event_base_new();
    char *error = NULL;
    const char *bus_error = NULL;
    struct mx_bus *bus;
    struct mx_server *server;
    if (mx_spool_open(sink.dir, &sink.spool, &error) < 0 ||
        (sink.committer = mx_spool_committer_new(base, &error)) == NULL) {
        fprintf(stderr, "mx-test-sink: %s\n", error);
        return 1;
    }
    if (mx_bus_new(base, &bus, &bus_error) < 0 ||
        mx_server_new(bus, listen, sink_handle, &sink, &server, &bus_error) < 0) {
        fprintf(stderr, "mx-test-sink: %s\n", bus_error);
        return 1;
    }
    mx_log(MX_LOG_NOTICE, "sink.listening", MX_KV("endpoint", mx_server_endpoint(server)));
    event_base_dispatch(base);
    return 0;
}
