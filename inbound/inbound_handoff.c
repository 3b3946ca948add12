/* inbound_handoff - hands committed spool entries to mx-delivery.
 *
 * Store-and-forward: an entry leaves the spool only after delivery answered
 * MSG_ANY_ACK with OK or DUPLICATE (it wrote the message durably itself).
 * A timeout goes to the next delivery instance (mx_client does that); when
 * every attempt failed, the entry waits retry_interval and is offered again,
 * forever: mail that got a 250 is never dropped here. PERMFAIL (delivery
 * says the request itself is unusable) moves the entry to hold/ for the
 * operator; a damaged entry moves to corrupt/. Both are logged at err. */
#include "inbound.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mx_alloc.h"

struct handoff_item {
    struct handoff_item *next;
    struct inbound_handoff *handoff;
    char *name;
    uint64_t not_before_ms;
    uint64_t request_id;
    unsigned attempts;
};

struct inbound_handoff {
    struct inbound_server *server;
    struct mx_client *client;
    struct handoff_item *ready, **ready_tail; /* FIFO, oldest first */
    struct handoff_item *waiting;             /* failed, due later */
    struct handoff_item *in_flight;           /* sent, awaiting ack */
    unsigned n_in_flight;
    unsigned max_in_flight;
    unsigned retry_interval_ms;
    struct event *pump;      /* deferred "send what is ready" */
    struct event *retry_timer;
};

static void handoff_pump(struct inbound_handoff *h);

static void handoff_item_free(struct handoff_item *item)
{
    free(item->name);
    free(item);
}

static void handoff_push_ready(struct inbound_handoff *h, struct handoff_item *item)
{
    item->next = NULL;
    *h->ready_tail = item;
    h->ready_tail = &item->next;
    event_active(h->pump, EV_TIMEOUT, 0);
}

static void handoff_unlink(struct handoff_item **list, struct handoff_item *item)
{
    for (struct handoff_item **link = list; *link; link = &(*link)->next) {
        if (*link == item) {
            *link = item->next;
            return;
        }
    }
}

/* handoff_move_aside - put a spool entry that cannot be handed on into
 * <spool>/<folder>/ so the operator can look at it; never delete it. */
static void handoff_move_aside(struct inbound_handoff *h, const char *name, const char *folder)
{
    char from[4096];
    char *dir = mx_asprintf("%s/%s", mx_spool_dir(h->server->spool), folder);
    char *to = mx_asprintf("%s/%s", dir, name);
    if (mkdir(dir, 0750) < 0 && errno != EEXIST)
        mx_log(MX_LOG_ERR, "handoff.move_aside_failed", MX_KV("id", name), MX_KV("dir", dir),
               MX_KVERR(errno));
    else if (rename(mx_spool_path(h->server->spool, name, from, sizeof from), to) < 0)
        mx_log(MX_LOG_ERR, "handoff.move_aside_failed", MX_KV("id", name), MX_KV("to", to),
               MX_KVERR(errno));
    else
        mx_log(MX_LOG_ERR, "handoff.moved_aside", MX_KV("id", name), MX_KV("to", to));
    free(dir);
    free(to);
}

/* handoff_schedule_retry - back to waiting, due after retry_interval. */
static void handoff_schedule_retry(struct inbound_handoff *h, struct handoff_item *item)
{
    item->not_before_ms = mx_now_ms() + h->retry_interval_ms;
    item->next = h->waiting;
    h->waiting = item;
    if (!evtimer_pending(h->retry_timer, NULL)) {
        struct timeval tv = { h->retry_interval_ms / 1000, (h->retry_interval_ms % 1000) * 1000 };
        evtimer_add(h->retry_timer, &tv);
    }
}

static void handoff_on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    struct inbound_handoff *h = arg;
    uint64_t now = mx_now_ms();
    struct handoff_item **link = &h->waiting;
    uint64_t next_due = 0;
    while (*link) {
        struct handoff_item *item = *link;
        if (item->not_before_ms <= now) {
            *link = item->next;
            handoff_push_ready(h, item);
        } else {
            if (next_due == 0 || item->not_before_ms < next_due)
                next_due = item->not_before_ms;
            link = &item->next;
        }
    }
    if (next_due) {
        uint64_t wait = next_due - now;
        struct timeval tv = { (time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000 };
        evtimer_add(h->retry_timer, &tv);
    }
}

static void handoff_on_reply(void *ctx, enum mx_bus_result result,
                             const struct mx_frame_view *reply)
{
    struct handoff_item *item = ctx;
    struct inbound_handoff *h = item->handoff;
    if (result == MX_BUS_CANCELLED) /* shutting down: the entry stays spooled */
        return;
    handoff_unlink(&h->in_flight, item);
    h->n_in_flight--;
    uint32_t status = MX_STATUS_TEMPFAIL;
    char *text = NULL;
    if (result == MX_BUS_REPLY) {
        if (reply->type != MSG_ANY_ACK || mx_frame_get_u32(reply, F_STATUS, &status) < 0)
            status = MX_STATUS_TEMPFAIL;
        (void)mx_frame_get_str(reply, F_TEXT, &text);
    }
    switch (result == MX_BUS_REPLY ? status : MX_STATUS_TEMPFAIL) {
    case MX_STATUS_OK:
    case MX_STATUS_DUPLICATE: {
        char *error = NULL;
        if (mx_spool_remove(h->server->spool, item->name, &error) < 0) {
            mx_log(MX_LOG_ERR, "handoff.remove_failed", MX_KV("id", item->name), MX_KV("error", error));
            free(error);
        }
        mx_log(MX_LOG_INFO, "handoff.done", MX_KV("id", item->name),
               MX_KV("status", status == MX_STATUS_OK ? "ok" : "duplicate"),
               MX_KVU("attempts", item->attempts));
        handoff_item_free(item);
        break;
    }
    case MX_STATUS_PERMFAIL:
        mx_log(MX_LOG_ERR, "handoff.refused", MX_KV("id", item->name), MX_KV("reason", text));
        handoff_move_aside(h, item->name, "hold");
        handoff_item_free(item);
        break;
    default:
        mx_log(MX_LOG_WARNING, "handoff.deferred", MX_KV("id", item->name),
               MX_KV("reason", result == MX_BUS_TIMEOUT ? "no delivery instance answered" : text),
               MX_KVU("attempts", item->attempts), MX_KVU("retry_ms", h->retry_interval_ms));
        handoff_schedule_retry(h, item);
        break;
    }
    free(text);
    handoff_pump(h);
}

/* handoff_read_all - the message bytes [0, size) of an open spool entry. */
static int handoff_read_all(int fd, uint64_t size, char *buf)
{
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = pread(fd, buf + done, size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (uint64_t)n;
    }
    return 0;
}

static const char *handoff_str(const char *s)
{
    return s ? s : "";
}

/* handoff_build_frame - MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT for one entry.
 * 0, or -1 for a damaged entry (error_r set, heap). */
static int handoff_build_frame(struct inbound_handoff *h, const char *name, struct mx_frame *frame,
                               char **error_r)
{
    char path[4096];
    mx_spool_path(h->server->spool, name, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *error_r = mx_asprintf("open %s: %s", path, strerror(errno));
        return -1;
    }
    struct inbound_envelope env;
    if (inbound_envelope_read_fd(fd, path, &env, error_r) < 0) {
        close(fd);
        return -1;
    }
    size_t prepend_len = env.prepend ? strlen(env.prepend) : 0;
    char *body = mx_malloc(prepend_len + env.message_size + 1);
    memcpy(body, env.prepend ? env.prepend : "", prepend_len);
    if (handoff_read_all(fd, env.message_size, body + prepend_len) < 0) {
        *error_r = mx_asprintf("read %s: %s", path, strerror(errno));
        free(body);
        close(fd);
        inbound_envelope_clear(&env);
        return -1;
    }
    close(fd);

    mx_frame_init(frame, MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT, 0, &env.id);
    mx_frame_put_str(frame, F_INSTANCE, handoff_str(env.instance));
    mx_frame_put_str(frame, F_SENDER, env.sender);
    for (size_t i = 0; i < env.n_recipients; i++) {
        mx_frame_put_str(frame, F_RECIPIENT, env.recipients[i]);
        mx_frame_put_str(frame, F_RCPT_NOTIFY, env.notify[i]);
        mx_frame_put_str(frame, F_RCPT_ORCPT, env.orcpt[i]);
    }
    mx_frame_put_str(frame, F_CLIENT_ADDR, handoff_str(env.client_addr));
    mx_frame_put_str(frame, F_CLIENT_NAME, handoff_str(env.client_helo));
    mx_frame_put_str(frame, F_AUTH_USER, handoff_str(env.auth_user));
    mx_frame_put_str(frame, F_ENVID, handoff_str(env.envid));
    mx_frame_put_str(frame, F_RET, handoff_str(env.ret));
    mx_frame_put_str(frame, F_BODY_TYPE, env.body_type ? env.body_type : "7BIT");
    mx_frame_put_u32(frame, F_SMTPUTF8, env.smtputf8 ? 1 : 0);
    mx_frame_put_u64(frame, F_ARRIVAL, env.arrival_ms);
    mx_frame_put_u64(frame, F_SIZE, prepend_len + env.message_size);
    mx_frame_put_bytes(frame, F_BODY, body, prepend_len + env.message_size);
    free(body);
    inbound_envelope_clear(&env);
    return 0;
}

static void handoff_send(struct inbound_handoff *h, struct handoff_item *item)
{
    struct mx_frame frame;
    char *error = NULL;
    if (handoff_build_frame(h, item->name, &frame, &error) < 0) {
        mx_log(MX_LOG_ERR, "handoff.damaged_entry", MX_KV("id", item->name), MX_KV("error", error));
        free(error);
        handoff_move_aside(h, item->name, "corrupt");
        handoff_item_free(item);
        return;
    }
    const char *send_error = NULL;
    item->attempts++;
    if (mx_client_request(h->client, &frame, handoff_on_reply, item, &item->request_id,
                          &send_error) < 0) {
        mx_log(MX_LOG_ERR, "handoff.send_failed", MX_KV("id", item->name), MX_KV("error", send_error));
        handoff_schedule_retry(h, item);
    } else {
        item->next = h->in_flight;
        h->in_flight = item;
        h->n_in_flight++;
    }
    mx_frame_free(&frame);
}

static void handoff_pump(struct inbound_handoff *h)
{
    while (h->ready && h->n_in_flight < h->max_in_flight && !h->server->stopping) {
        struct handoff_item *item = h->ready;
        h->ready = item->next;
        if (h->ready == NULL)
            h->ready_tail = &h->ready;
        handoff_send(h, item);
    }
}

static void handoff_on_pump(evutil_socket_t fd, short what, void *arg)
{
    handoff_pump(arg);
}

int inbound_handoff_new(struct inbound_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    size_t n = mx_config_strings_len(&root, "inbound.delivery.endpoints");
    if (n == 0) {
        *error_r = mx_strdup("inbound.delivery.endpoints is empty: accepted mail could go nowhere");
        return -1;
    }
    const char **endpoints = mx_calloc(n, sizeof *endpoints);
    for (size_t i = 0; i < n; i++)
        endpoints[i] = mx_config_strings_at(&root, "inbound.delivery.endpoints", i);
    struct mx_client_config cc = {
        .name = "delivery",
        .timeout_ms = (unsigned)mx_config_duration_ms(&root, "inbound.delivery.timeout"),
        .max_attempts = (unsigned)(n > 1 ? n + 1 : 2),
    };
    struct inbound_handoff *h = mx_calloc(1, sizeof *h);
    h->server = server;
    h->ready_tail = &h->ready;
    h->max_in_flight = (unsigned)mx_config_int(&root, "inbound.delivery.max_in_flight");
    h->retry_interval_ms = (unsigned)mx_config_duration_ms(&root, "inbound.delivery.retry_interval");
    const char *bus_error = NULL;
    if (mx_client_new(server->bus, endpoints, n, &cc, &h->client, &bus_error) < 0) {
        *error_r = mx_asprintf("delivery client: %s", bus_error);
        free(endpoints);
        free(h);
        return -1;
    }
    free(endpoints);
    h->pump = event_new(server->base, -1, 0, handoff_on_pump, h);
    h->retry_timer = evtimer_new(server->base, handoff_on_retry_timer, h);
    server->handoff = h;
    return 0;
}

static void handoff_free_list(struct handoff_item *list)
{
    while (list) {
        struct handoff_item *next = list->next;
        handoff_item_free(list);
        list = next;
    }
}

void inbound_handoff_free(struct inbound_handoff **hp)
{
    struct inbound_handoff *h = *hp;
    if (h == NULL)
        return;
    /* Cancelled callbacks return early; the entries stay in the spool and
     * are handed on after the restart. */
    mx_client_free(&h->client);
    handoff_free_list(h->ready);
    handoff_free_list(h->waiting);
    handoff_free_list(h->in_flight);
    event_free(h->pump);
    event_free(h->retry_timer);
    free(h);
    *hp = NULL;
}

void inbound_handoff_queue(struct inbound_handoff *h, const char *name)
{
    struct handoff_item *item = mx_calloc(1, sizeof *item);
    item->handoff = h;
    item->name = mx_strdup(name);
    handoff_push_ready(h, item);
}

static int handoff_rescan_one(void *ctx, const char *name, const char *path)
{
    inbound_handoff_queue(ctx, name);
    return 0;
}

int inbound_handoff_rescan(struct inbound_handoff *h, char **error_r)
{
    return mx_spool_scan(h->server->spool, handoff_rescan_one, h, error_r);
}
