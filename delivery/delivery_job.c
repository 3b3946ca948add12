/* delivery_job - one SUBMIT from mx-inbound, from expansion to the ack.
 *
 * After expansion, every local target becomes one MSG_ANY_STORE_APPEND to
 * the shard that owns the mailbox (with a Delivered-To header in front and
 * the cluster message id for the store's dedup), every external target one
 * entry in the outbound queue, every refused recipient one record in the
 * failures spool (for the bounce that a later role sends). The ack to
 * inbound goes out when all of these are durable: OK, or TEMPFAIL if any
 * store or the directory could not be reached (inbound then retries the
 * whole message; what was done already is recognised by message id). */
#include "delivery.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "mx_alloc.h"

struct delivery_job {
    struct delivery_job *next;        /* server's list of jobs in progress */
    struct delivery_server *server;
    struct mx_server_request *req;
    /* Resends of the same message (inbound's retry after a timeout) while
     * this job still runs: answered together with req, not done twice. */
    struct mx_server_request **resends;
    size_t n_resends;
    struct mx_msgid id;
    char id_text[MX_MSGID_TEXT_LEN + 1];
    char *sender;
    char *auth_user;
    char **recipients;
    size_t n_recipients;
    uint8_t *body;
    size_t body_len;
    uint64_t arrival_ms;
    struct delivery_expand *expand;
    struct delivery_expansion *expansion;
    unsigned pending;       /* store appends + spool commits in flight */
    bool tempfail;
    const char *tempfail_reason;
    unsigned delivered, failed, external;
};

/* A store append in flight for one target of a job. */
struct delivery_append {
    struct delivery_job *job;
    const struct delivery_target *target;
    uint64_t size;
};

static void job_free(struct delivery_job *job)
{
    for (struct delivery_job **link = &job->server->jobs; *link; link = &(*link)->next) {
        if (*link == job) {
            *link = job->next;
            break;
        }
    }
    mx_server_request_drop(&job->req);
    for (size_t i = 0; i < job->n_resends; i++)
        mx_server_request_drop(&job->resends[i]);
    free(job->resends);
    delivery_expand_cancel(&job->expand);
    delivery_expansion_free(job->expansion);
    for (size_t i = 0; i < job->n_recipients; i++)
        free(job->recipients[i]);
    free(job->recipients);
    free(job->sender);
    free(job->auth_user);
    free(job->body);
    job->server->jobs_active--;
    free(job);
}

/* job_maybe_finish - all appends and commits answered: ack inbound. */
static void job_maybe_finish(struct delivery_job *job)
{
    if (job->pending > 0)
        return;
    const char *error = NULL;
    enum mx_status status = job->tempfail ? MX_STATUS_TEMPFAIL : MX_STATUS_OK;
    mx_log(job->tempfail ? MX_LOG_WARNING : MX_LOG_INFO,
           job->tempfail ? "delivery.deferred" : "delivery.done", MX_KV("id", job->id_text),
           MX_KV("from", job->sender), MX_KVU("delivered", job->delivered),
           MX_KVU("external", job->external), MX_KVU("failed", job->failed),
           MX_KV("reason", job->tempfail ? job->tempfail_reason : NULL));
    const char *text = job->tempfail ? job->tempfail_reason : "delivered";
    if (mx_server_ack(&job->req, status, text, &error) < 0)
        mx_log(MX_LOG_WARNING, "delivery.ack_failed", MX_KV("id", job->id_text), MX_KV("error", error));
    for (size_t i = 0; i < job->n_resends; i++)
        (void)mx_server_ack(&job->resends[i], status, text, &error);
    job_free(job);
}

static void job_tempfail(struct delivery_job *job, const char *reason)
{
    job->tempfail = true;
    job->tempfail_reason = reason;
}

/* job_entry_name - spool name keyed by (message id, recipient), so a
 * retried SUBMIT finds its own earlier entry instead of adding another. */
static void job_entry_name(const struct delivery_job *job, const char *recipient, char *buf,
                           size_t size)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)recipient; *p; p++)
        h = (h ^ (unsigned char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p)) * 1099511628211ULL;
    snprintf(buf, size, "%s.%016" PRIx64, job->id_text, h);
}

static void job_on_spool_commit(void *ctx, int error, const char *name)
{
    struct delivery_job *job = ctx;
    job->pending--;
    if (error) {
        mx_log(MX_LOG_ERR, "delivery.spool_commit_failed", MX_KV("id", job->id_text),
               MX_KV("entry", name), MX_KVERR(error));
        job_tempfail(job, "local spool error");
    }
    job_maybe_finish(job);
}

/* job_spool_entry - write "header + body" durably into spool under the
 * (id, recipient) name; an entry that exists already is left alone. */
static void job_spool_entry(struct delivery_job *job, struct mx_spool *spool, const char *recipient,
                            const char *header)
{
    char name[MX_MSGID_TEXT_LEN + 32], path[4096];
    job_entry_name(job, recipient, name, sizeof name);
    FILE *existing = fopen(mx_spool_path(spool, name, path, sizeof path), "r");
    if (existing) {
        fclose(existing);
        return;
    }
    struct mx_spool_file *file = NULL;
    char *error = NULL;
    if (mx_spool_create(spool, name, &file, &error) < 0 ||
        mx_spool_write(file, header, strlen(header), &error) < 0 ||
        mx_spool_write(file, job->body, job->body_len, &error) < 0) {
        mx_log(MX_LOG_ERR, "delivery.spool_write_failed", MX_KV("id", job->id_text),
               MX_KV("entry", name), MX_KV("error", error));
        free(error);
        mx_spool_abort(&file);
        job_tempfail(job, "local spool error");
        return;
    }
    job->pending++;
    mx_spool_commit_async(job->server->committer, file, job_on_spool_commit, job);
}

static void job_record_failure(struct delivery_job *job, const char *recipient, const char *reason)
{
    char *header = mx_asprintf("MXFAIL1\nid: %s\nsender: %s\nrcpt: %s\nreason: %s\n\n",
                               job->id_text, job->sender, recipient, reason);
    job_spool_entry(job, job->server->failures, recipient, header);
    free(header);
    job->failed++;
}

/* ---- quota warnings ---------------------------------------------------- */

static void warning_on_reply(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    char *user = ctx;
    uint32_t status = MX_STATUS_TEMPFAIL;
    if (result == MX_BUS_REPLY)
        (void)mx_frame_get_u32(reply, F_STATUS, &status);
    if (status != MX_STATUS_OK)
        mx_log(MX_LOG_WARNING, "delivery.quota_warning_not_stored", MX_KV("user", user),
               MX_KVU("status", status));
    free(user);
}

/* job_quota_warning - tell the user they crossed a threshold, once: only
 * the append that moves usage across it sends the warning. The warning is
 * appended directly (unlimited quota), so it reaches even a full mailbox. */
static void job_quota_warning(struct delivery_job *job, const struct delivery_target *t,
                              uint64_t used, uint64_t limit, uint64_t size)
{
    struct delivery_server *server = job->server;
    uint64_t before = used > size ? used - size : 0;
    unsigned crossed = 0;
    for (size_t i = 0; i < 2; i++)
        if (server->warn_percent[i] && before * 100 < (uint64_t)server->warn_percent[i] * limit &&
            used * 100 >= (uint64_t)server->warn_percent[i] * limit)
            crossed = server->warn_percent[i];
    if (crossed == 0)
        return;
    struct mx_daemon_shard *shard = delivery_shard_find(server, t->shard);
    if (shard == NULL)
        return;
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    struct mx_msgid id;
    mx_msgid_next(&id);
    char id_text[MX_MSGID_TEXT_LEN + 1];
    mx_msgid_format(&id, id_text);
    unsigned percent = limit ? (unsigned)(used * 100 / limit) : 0;
    char *text = mx_asprintf(
        "From: Mail System <%s>\r\nTo: <%s>\r\nSubject: Your mailbox is %u%% full\r\n"
        "Date: %s\r\nMessage-ID: <%s@%s>\r\nAuto-Submitted: auto-generated\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "Your mailbox %s uses %" PRIu64 " of %" PRIu64 " bytes (%u%%).\r\n"
        "When it is full, new mail to you is refused. Please delete or archive old mail.\r\n",
        server->postmaster, t->address, percent, date, id_text, server->hostname, t->address, used,
        limit, percent);
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_STORE_APPEND, 0, &id);
    mx_frame_put_str(&frame, F_USER, t->address);
    mx_frame_put_str(&frame, F_MAILBOX, "INBOX");
    mx_frame_put_u32(&frame, F_CREATE, 1);
    mx_frame_put_u64(&frame, F_ARRIVAL, (uint64_t)now * 1000);
    mx_frame_put_u64(&frame, F_QUOTA_BYTES, 0);
    mx_frame_put_u64(&frame, F_QUOTA_COUNT, 0);
    mx_frame_put_bytes(&frame, F_BODY, text, strlen(text));
    const char *error = NULL;
    char *user = mx_strdup(t->address);
    if (mx_client_request(shard->client, &frame, warning_on_reply, user, NULL, &error) < 0)
        free(user);
    mx_frame_free(&frame);
    free(text);
    mx_log(MX_LOG_NOTICE, "delivery.quota_warning", MX_KV("id", job->id_text),
           MX_KV("user", t->address), MX_KVU("percent", percent), MX_KVU("threshold", crossed));
}

/* ---- store appends ------------------------------------------------------ */

static void job_on_append(void *ctx, enum mx_bus_result result, const struct mx_frame_view *reply)
{
    struct delivery_append *a = ctx;
    struct delivery_job *job = a->job;
    const struct delivery_target *t = a->target;
    if (result == MX_BUS_CANCELLED) { /* shutting down: inbound will retry */
        job->pending--;
        job_tempfail(job, "shutting down");
        free(a);
        job_maybe_finish(job);
        return;
    }
    job->pending--;
    uint32_t status = MX_STATUS_TEMPFAIL;
    if (result == MX_BUS_REPLY)
        (void)mx_frame_get_u32(reply, F_STATUS, &status);
    uint32_t uid = 0;
    uint64_t used = 0, limit = 0;
    switch (status) {
    case MX_STATUS_OK:
    case MX_STATUS_DUPLICATE:
        (void)mx_frame_get_u32(reply, F_UID, &uid);
        job->delivered++;
        mx_log(MX_LOG_INFO, "delivery.stored", MX_KV("id", job->id_text), MX_KV("user", t->address),
               MX_KV("via", t->via), MX_KVU("uid", uid),
               MX_KV("status", status == MX_STATUS_OK ? "ok" : "duplicate"));
        if (status == MX_STATUS_OK && mx_frame_get_u64(reply, F_QUOTA_USED, &used) == 0 &&
            mx_frame_get_u64(reply, F_QUOTA_BYTES, &limit) == 0 && limit > 0)
            job_quota_warning(job, t, used, limit, a->size);
        break;
    case MX_STATUS_OVER_QUOTA:
        mx_log(MX_LOG_NOTICE, "delivery.over_quota", MX_KV("id", job->id_text),
               MX_KV("user", t->address));
        job_record_failure(job, t->via, "552 5.2.2 mailbox full");
        break;
    case MX_STATUS_NOT_FOUND:
    case MX_STATUS_PERMFAIL:
        mx_log(MX_LOG_ERR, "delivery.store_refused", MX_KV("id", job->id_text),
               MX_KV("user", t->address), MX_KVU("status", status));
        job_record_failure(job, t->via, "550 5.3.0 mailbox store refused the message");
        break;
    default:
        mx_log(MX_LOG_WARNING, "delivery.store_unavailable", MX_KV("id", job->id_text),
               MX_KV("user", t->address), MX_KV("shard", t->shard),
               MX_KV("result", result == MX_BUS_TIMEOUT ? "timeout" : "tempfail"),
               MX_KVU("status", status));
        job_tempfail(job, "mailbox store unavailable");
        break;
    }
    free(a);
    job_maybe_finish(job);
}

static void job_append(struct delivery_job *job, const struct delivery_target *t)
{
    struct mx_daemon_shard *shard = delivery_shard_find(job->server, t->shard);
    if (shard == NULL) {
        mx_log(MX_LOG_ERR, "delivery.unknown_shard", MX_KV("id", job->id_text),
               MX_KV("user", t->address), MX_KV("shard", t->shard));
        job_tempfail(job, "mailbox on an unknown store shard");
        return;
    }
    char *delivered_to = mx_asprintf("Delivered-To: %s\r\n", t->address);
    size_t header_len = strlen(delivered_to);
    uint8_t *body = mx_malloc(header_len + job->body_len);
    memcpy(body, delivered_to, header_len);
    memcpy(body + header_len, job->body, job->body_len);
    free(delivered_to);

    struct mx_frame frame;
    mx_frame_init(&frame, MSG_ANY_STORE_APPEND, 0, &job->id);
    mx_frame_put_str(&frame, F_USER, t->address);
    mx_frame_put_str(&frame, F_MAILBOX, "INBOX");
    mx_frame_put_u32(&frame, F_CREATE, 1);
    mx_frame_put_u64(&frame, F_ARRIVAL, job->arrival_ms);
    mx_frame_put_u64(&frame, F_QUOTA_BYTES, t->quota_bytes);
    mx_frame_put_u64(&frame, F_QUOTA_COUNT, t->quota_count);
    mx_frame_put_bytes(&frame, F_BODY, body, header_len + job->body_len);
    struct delivery_append *a = mx_calloc(1, sizeof *a);
    a->job = job;
    a->target = t;
    a->size = header_len + job->body_len;
    free(body);
    const char *error = NULL;
    if (mx_client_request(shard->client, &frame, job_on_append, a, NULL, &error) < 0) {
        mx_log(MX_LOG_ERR, "delivery.append_send_failed", MX_KV("id", job->id_text),
               MX_KV("error", error));
        job_tempfail(job, "cannot send to the store");
        free(a);
    } else {
        job->pending++;
    }
    mx_frame_free(&frame);
}

/* job_hops - Delivered-To headers already in the message: a forward or an
 * alias that leads back here adds one per pass. */
static unsigned job_hops(const struct delivery_job *job)
{
    unsigned hops = 0;
    const char *p = (const char *)job->body, *end = p + job->body_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((eol ? eol : end) - p);
        if (len <= 1 || (len == 2 && p[0] == '\r'))
            break; /* end of the header section */
        if (len >= 13 && strncasecmp(p, "Delivered-To:", 13) == 0)
            hops++;
        p = eol ? eol + 1 : end;
    }
    return hops;
}

static void job_on_expanded(void *ctx, struct delivery_expansion *x)
{
    struct delivery_job *job = ctx;
    job->expand = NULL;
    job->expansion = x;
    if (x->tempfail) {
        job_tempfail(job, x->tempfail_reason);
        job_maybe_finish(job);
        return;
    }
    job->pending++; /* held while the work below is started */
    if (job_hops(job) > job->server->max_hops) {
        mx_log(MX_LOG_WARNING, "delivery.mail_loop", MX_KV("id", job->id_text),
               MX_KVU("hops", job_hops(job)));
        for (size_t i = 0; i < job->n_recipients; i++)
            job_record_failure(job, job->recipients[i], "554 5.4.6 mail forwarding loop");
    } else {
        for (size_t i = 0; i < x->n_refusals; i++) {
            const char *reason = x->refusals[i].reason;
            job_record_failure(job, x->refusals[i].recipient, reason);
        }
        for (size_t i = 0; i < x->n_targets; i++) {
            const struct delivery_target *t = &x->targets[i];
            if (t->local) {
                job_append(job, t);
            } else {
                char *header = mx_asprintf("MXOUT1\nid: %s\nsender: %s\nrcpt: %s\nvia: %s\n\n",
                                           job->id_text, job->sender, t->address, t->via);
                job_spool_entry(job, job->server->outbound, t->address, header);
                free(header);
                job->external++;
                mx_log(MX_LOG_INFO, "delivery.queued_outbound", MX_KV("id", job->id_text),
                       MX_KV("rcpt", t->address), MX_KV("via", t->via));
            }
        }
    }
    job->pending--;
    job_maybe_finish(job);
}

struct mx_daemon_shard *delivery_shard_find(struct delivery_server *server, const char *name)
{
    return mx_daemon_shard_find(server->shards, server->n_shards, name);
}

void delivery_handle_submit(struct delivery_server *server, struct mx_server_request *req,
                            const struct mx_frame_view *frame)
{
    const char *error = NULL;
    for (struct delivery_job *running = server->jobs; running; running = running->next) {
        if (mx_msgid_compare(&running->id, &frame->message_id) == 0) {
            running->resends = mx_reallocarray(running->resends, running->n_resends + 1,
                                               sizeof *running->resends);
            running->resends[running->n_resends++] = req;
            mx_log(MX_LOG_INFO, "delivery.resend_joined", MX_KV("id", running->id_text));
            return;
        }
    }
    struct delivery_job *job = mx_calloc(1, sizeof *job);
    job->server = server;
    job->req = req;
    job->id = frame->message_id;
    job->next = server->jobs;
    server->jobs = job;
    mx_msgid_format(&job->id, job->id_text);
    server->jobs_active++;
    server->jobs_started++;

    const uint8_t *body = NULL;
    size_t body_len = 0;
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    bool bad = mx_msgid_is_zero(&job->id);
    while (!bad && mx_frame_next_field(frame, &it, &tag, &value, &len) == 1) {
        if (tag == F_RECIPIENT) {
            if (len == 0 || len > 1024 || memchr(value, '\0', len)) {
                bad = true;
                break;
            }
            job->recipients = mx_reallocarray(job->recipients, job->n_recipients + 1,
                                              sizeof *job->recipients);
            job->recipients[job->n_recipients++] = mx_strndup((const char *)value, len);
        } else if (tag == F_BODY) {
            body = value;
            body_len = len;
        }
    }
    if (!bad && (mx_frame_get_str(frame, F_SENDER, &job->sender) < 0 || body == NULL ||
                 job->n_recipients == 0))
        bad = true;
    if (bad) {
        mx_log(MX_LOG_ERR, "delivery.bad_submit", MX_KV("id", job->id_text),
               MX_KV("peer", mx_server_request_peer(req)));
        mx_server_ack(&job->req, MX_STATUS_PERMFAIL, "malformed submit", &error);
        job_free(job);
        return;
    }
    if (mx_frame_get_str(frame, F_AUTH_USER, &job->auth_user) < 0)
        job->auth_user = mx_strdup("");
    (void)mx_frame_get_u64(frame, F_ARRIVAL, &job->arrival_ms);
    job->body = mx_memdup(body, body_len);
    job->body_len = body_len;
    mx_log(MX_LOG_INFO, "delivery.received", MX_KV("id", job->id_text), MX_KV("from", job->sender),
           MX_KVU("rcpts", job->n_recipients), MX_KVU("size", body_len),
           MX_KV("retry", frame->flags & MX_FRAME_F_RETRY ? "yes" : NULL));
    struct delivery_expand_request request = {
        .sid = job->id_text, .sender = job->sender, .auth_user = job->auth_user,
        .recipients = job->recipients, .n_recipients = job->n_recipients,
    };
    job->expand = delivery_expand_start(server, &request, job_on_expanded, job);
}
