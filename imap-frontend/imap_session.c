/* imap_session - one IMAP connection: reading commands, dispatch, the
 * tagged end of every command, login, IDLE and the untagged updates that
 * keep a session's view of its mailbox in step with every other session
 * (on any frontend) through the store's change events. */
#include "imap_session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>

#include "imap_records.h"
#include "imap_search.h"
#include "mailbox_name.h"
#include "mx_alloc.h"

/* BADs in a row before the session is closed with BYE. */
#define IMAP_MAX_ERRORS 20
/* Failed logins in one session before it is closed. */
#define IMAP_MAX_LOGIN_FAILURES 3
#define IMAP_SASL_LINE_MAX 8192

static void session_drive(struct imap_session *s);
static void session_finish_command(struct imap_session *s);

/* ---- capabilities ------------------------------------------------------ */

static const char caps_common[] = "IMAP4rev1 IMAP4rev2 SASL-IR ID ENABLE IDLE LITERAL+";
static const char caps_authenticated[] =
    " NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN LIST-EXTENDED LIST-STATUS SPECIAL-USE"
    " CONDSTORE QRESYNC QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE ESEARCH SEARCHRES"
    " SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES UTF8=ACCEPT BINARY"
    " STATUS=SIZE COMPRESS=DEFLATE";

static void write_capabilities(struct imap_session *s)
{
    imap_printf(s, "%s", caps_common);
    if (s->state == IMAP_STATE_NOT_AUTHENTICATED) {
        if (!mx_conn_is_tls(s->conn) && mx_conn_has_tls_ctx(s->conn))
            imap_printf(s, " STARTTLS");
        if (imapd_plaintext_auth_allowed(s->server, s->conn))
            imap_printf(s, " AUTH=PLAIN");
        else
            imap_printf(s, " LOGINDISABLED");
    } else {
        imap_printf(s, "%s", caps_authenticated);
    }
}

/* ---- output ------------------------------------------------------------ */

void imap_printf(struct imap_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(mx_conn_output(s->conn), fmt, ap);
    va_end(ap);
}

void imap_write(struct imap_session *s, const void *data, size_t len)
{
    mx_conn_write(s->conn, data, len);
}

void imap_write_string(struct imap_session *s, const char *data, size_t len)
{
    bool quotable = len <= 1024;
    for (size_t i = 0; i < len && quotable; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c == 0 || c == '\r' || c == '\n' || (c >= 0x80 && !s->utf8_accept))
            quotable = false;
    }
    if (quotable && s->utf8_accept && !imap_utf8_valid(data, len))
        quotable = false;
    if (!quotable) {
        imap_printf(s, "{%zu}\r\n", len);
        imap_write(s, data, len);
        return;
    }
    struct evbuffer *out = mx_conn_output(s->conn);
    evbuffer_add(out, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '"' || data[i] == '\\') {
            evbuffer_add(out, data + start, i - start);
            evbuffer_add(out, "\\", 1);
            start = i;
        }
    }
    evbuffer_add(out, data + start, len - start);
    evbuffer_add(out, "\"", 1);
}

void imap_write_nstring(struct imap_session *s, const char *data, size_t len)
{
    if (data == NULL)
        imap_printf(s, "NIL");
    else
        imap_write_string(s, data, len);
}

/* write_astring - an atom when the text allows one (what clients most
 * often expect for mailbox names: INBOX, Sent), else a string. */
static void write_astring(struct imap_session *s, const char *text, size_t len)
{
    bool atom = len > 0 && !(len == 3 && strncasecmp(text, "NIL", 3) == 0);
    for (size_t i = 0; i < len && atom; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\", c) != NULL)
            atom = false;
    }
    if (atom)
        imap_write(s, text, len);
    else
        imap_write_string(s, text, len);
}

void imap_write_mailbox(struct imap_session *s, const char *utf8_name)
{
    if (s->utf8_accept || s->rev2) {
        write_astring(s, utf8_name, strlen(utf8_name));
        return;
    }
    char *wire = NULL;
    const char *error;
    if (mailbox_name_mutf7_encode(utf8_name, strlen(utf8_name), &wire, &error) < 0) {
        /* cannot happen for names the store accepted; never send 8-bit
         * to a client that did not ask for it */
        mx_log(MX_LOG_ERR, "imap.mailbox_name_unencodable", MX_KV("sid", s->sid),
               MX_KV("user", s->user), MX_KV("mailbox", utf8_name), MX_KV("error", error));
        imap_write_string(s, "INBOX", 5);
        return;
    }
    write_astring(s, wire, strlen(wire));
    free(wire);
}

/* ---- the end of a command ---------------------------------------------- */

static void session_write_tagged(struct imap_session *s, const char *kind, const char *fmt,
                                 va_list ap) __attribute__((format(printf, 3, 0)));
static void session_write_tagged(struct imap_session *s, const char *kind, const char *fmt,
                                 va_list ap)
{
    const char *tag = s->have_cmd && s->cmd.tag ? s->cmd.tag : "*";
    imap_printf(s, "%s %s ", tag, kind);
    evbuffer_add_vprintf(mx_conn_output(s->conn), fmt, ap);
    imap_printf(s, "\r\n");
}

/* Commands whose tagged reply may not carry EXPUNGE responses (RFC 9051
 * 7.5.1: the client's message numbers must stay valid during them). */
static bool command_defers_expunge(const struct imap_session *s)
{
    if (!s->have_cmd || s->cmd.uid)
        return false;
    static const char *const names[] = { "FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s->cmd.name, names[i]) == 0)
            return true;
    return false;
}

/* done - write the tagged reply, after the pending untagged updates when
 * the command may carry them (OK and NO; a BAD carries nothing). */
static void done(struct imap_session *s, const char *kind, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void done(struct imap_session *s, const char *kind, const char *fmt, va_list ap)
{
    if (strcmp(kind, "BAD") == 0)
        s->errors++;
    else
        s->errors = 0;
    if (strcmp(kind, "BAD") != 0 && s->state == IMAP_STATE_SELECTED && !s->changes_pending &&
        !s->idling && !command_defers_expunge(s))
        imap_session_flush_expunges(s);
    if (strcmp(kind, "BAD") != 0 && s->state == IMAP_STATE_SELECTED && s->changes_pending &&
        !s->idling) {
        /* hold the tagged line until the updates are out */
        char *text = mx_vasprintf(fmt, ap);
        const char *tag = s->have_cmd && s->cmd.tag ? s->cmd.tag : "*";
        free(s->held_tagged);
        s->held_tagged = mx_asprintf("%s %s %s\r\n", tag, kind, text);
        free(text);
        imap_session_sync(s, !command_defers_expunge(s), NULL);
        return;
    }
    session_write_tagged(s, kind, fmt, ap);
    session_finish_command(s);
}

void imap_done_ok(struct imap_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    done(s, "OK", fmt, ap);
    va_end(ap);
}

void imap_done_no(struct imap_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    done(s, "NO", fmt, ap);
    va_end(ap);
}

void imap_done_bad(struct imap_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    done(s, "BAD", fmt, ap);
    va_end(ap);
}

void imap_done_store_error(struct imap_session *s, enum mx_status status, const char *text)
{
    switch (status) {
    case MX_STATUS_NOT_FOUND:
        imap_done_no(s, "[NONEXISTENT] %s", text && *text ? text : "No such mailbox");
        break;
    case MX_STATUS_EXISTS:
        imap_done_no(s, "[ALREADYEXISTS] %s", text && *text ? text : "Mailbox exists");
        break;
    case MX_STATUS_OVER_QUOTA:
        imap_done_no(s, "[OVERQUOTA] %s", text && *text ? text : "Quota exceeded");
        break;
    case MX_STATUS_PERMFAIL:
        imap_done_no(s, "[CANNOT] %s", text && *text ? text : "Not possible");
        break;
    case MX_STATUS_UIDVALIDITY:
        imap_done_no(s, "[UNAVAILABLE] The mailbox was recreated; select it again");
        break;
    case MX_STATUS_STALE_EPOCH:
    case MX_STATUS_TEMPFAIL:
    default:
        imap_done_no(s, "[UNAVAILABLE] %s, try again",
                     text && *text ? text : "Mailbox server unavailable");
        break;
    }
}

void imap_session_set_op(struct imap_session *s, void *op, void (*op_free)(void *))
{
    if (s->op) {
        if (s->op_free)
            s->op_free(s->op);
        else
            free(s->op);
    }
    s->op = op;
    s->op_free = op_free;
}

static void session_finish_command(struct imap_session *s)
{
    if (s->have_cmd) {
        imap_command_free(&s->cmd);
        s->have_cmd = false;
    }
    imap_session_set_op(s, NULL, NULL);
    s->busy = false;
    if (s->errors >= IMAP_MAX_ERRORS) {
        imap_printf(s, "* BYE Too many invalid commands\r\n");
        mx_log(MX_LOG_NOTICE, "imap.too_many_errors", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip));
        s->state = IMAP_STATE_LOGOUT;
        mx_conn_close_after_flush(s->conn, "too many errors");
        return;
    }
    mx_conn_resume(s->conn);
}

/* ---- small shared helpers ------------------------------------------------ */

const char *imap_arg_cstring(const struct imap_arg *arg)
{
    if (!imap_arg_is_string(arg) || memchr(arg->str, '\0', arg->len) != NULL)
        return NULL;
    return arg->str;
}

char *imap_arg_mailbox(struct imap_session *s, const struct imap_arg *arg, const char **error_r)
{
    const char *text = imap_arg_cstring(arg);
    if (text == NULL) {
        *error_r = "mailbox name expected";
        return NULL;
    }
    char *utf8 = NULL;
    if (s->utf8_accept || s->rev2) {
        utf8 = mx_strdup(text);
    } else if (mailbox_name_mutf7_decode(text, arg->len, &utf8, error_r) < 0) {
        return NULL;
    }
    char *name = NULL;
    if (mailbox_name_normalize(utf8, strlen(utf8), &name, error_r) < 0)
        name = NULL;
    free(utf8);
    return name;
}

int imap_flag_bit(const char *flag, uint32_t *bit_r)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } system_flags[] = {
        { "\\Seen", 0x1 }, { "\\Answered", 0x2 }, { "\\Flagged", 0x4 },
        { "\\Deleted", 0x8 }, { "\\Draft", 0x10 },
    };
    *bit_r = 0;
    if (flag[0] == '\\') {
        for (size_t i = 0; i < sizeof system_flags / sizeof system_flags[0]; i++)
            if (strcasecmp(flag, system_flags[i].name) == 0) {
                *bit_r = system_flags[i].bit;
                return 0;
            }
        return -1; /* \Recent cannot be stored; unknown system flags neither */
    }
    if (*flag == '\0')
        return -1;
    for (const unsigned char *p = (const unsigned char *)flag; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("(){%*\"\\]", *p))
            return -1;
    return 0;
}

void imap_flags_write(struct imap_session *s, uint32_t flags, const char *keywords)
{
    struct imap_bytes b = { 0 };
    imap_flags_format(&b, flags, keywords);
    imap_write(s, b.data, b.len);
    imap_bytes_reset(&b);
}

void imap_format_internaldate(uint64_t ms, char out[32])
{
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    /* the modulos bound every field's width (what gmtime gives is in range
     * anyway), so the text always fits */
    snprintf(out, 32, "%02u-%s-%04u %02u:%02u:%02u +0000", (unsigned)tm.tm_mday % 100u,
             months[(unsigned)tm.tm_mon % 12u], (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u);
}

char *imap_uids_format(const uint32_t *uids, size_t n)
{
    struct imap_seqset set;
    imap_seqset_init(&set);
    for (size_t i = 0; i < n; i++)
        imap_seqset_add(&set, uids[i], uids[i]);
    char *text = imap_seqset_format(&set);
    imap_seqset_free(&set);
    return text;
}

int imap_uids_parse(const char *text, uint32_t **uids_r, size_t *n_r)
{
    *uids_r = NULL;
    *n_r = 0;
    if (text == NULL || *text == '\0')
        return 0;
    struct imap_seqset set;
    const char *err;
    if (imap_seqset_parse(text, strlen(text), &set, &err) < 0 || set.has_star || set.searchres)
        return -1;
    uint64_t count = imap_seqset_count(&set);
    if (count > 100000000) {
        imap_seqset_free(&set);
        return -1;
    }
    uint32_t *uids = mx_reallocarray(NULL, count ? count : 1, sizeof *uids);
    struct imap_seqset_iter it;
    imap_seqset_iter_init(&it);
    size_t n = 0;
    uint32_t u;
    while (imap_seqset_iter_next(&set, &it, &u))
        uids[n++] = u;
    imap_seqset_free(&set);
    *uids_r = uids;
    *n_r = n;
    return 0;
}

/* ---- the view ---------------------------------------------------------- */

uint32_t imap_session_seq_of(const struct imap_session *s, uint32_t uid)
{
    size_t lo = 0, hi = s->sel.count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->sel.uids[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->sel.count && s->sel.uids[lo] == uid ? (uint32_t)lo + 1 : 0;
}

void imap_view_set_uids(struct imap_session *s, const uint32_t *uids, size_t n)
{
    if (n > s->sel.cap) {
        s->sel.uids = mx_reallocarray(s->sel.uids, n, sizeof *s->sel.uids);
        s->sel.cap = n;
    }
    if (n)
        memcpy(s->sel.uids, uids, n * sizeof *uids);
    s->sel.count = (uint32_t)n;
}

void imap_view_append_uid(struct imap_session *s, uint32_t uid)
{
    if (s->sel.count == s->sel.cap) {
        s->sel.cap = s->sel.cap ? s->sel.cap * 2 : 64;
        s->sel.uids = mx_reallocarray(s->sel.uids, s->sel.cap, sizeof *s->sel.uids);
    }
    s->sel.uids[s->sel.count++] = uid;
    if (uid >= s->sel.uidnext)
        s->sel.uidnext = uid + 1;
}

void imap_view_expunge_uids(struct imap_session *s, const uint32_t *uids, size_t n)
{
    if (n == 0)
        return;
    if (s->qresync) {
        /* one VANISHED for the lot (RFC 7162 3.2.10) */
        uint32_t *present = mx_reallocarray(NULL, n, sizeof *present);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (imap_session_seq_of(s, uids[i]))
                present[k++] = uids[i];
        if (k) {
            char *text = imap_uids_format(present, k);
            imap_printf(s, "* VANISHED %s\r\n", text);
            free(text);
        }
        free(present);
    }
    /* EXPUNGE n from the highest down would also be valid; RFC order is
     * "as if each was expunged in turn", so report ascending UIDs with the
     * message number each has at that moment */
    for (size_t i = 0; i < n; i++) {
        uint32_t seq = imap_session_seq_of(s, uids[i]);
        if (seq == 0)
            continue;
        if (!s->qresync)
            imap_printf(s, "* %u EXPUNGE\r\n", seq);
        memmove(&s->sel.uids[seq - 1], &s->sel.uids[seq], (s->sel.count - seq) * sizeof(uint32_t));
        s->sel.count--;
    }
}

int imap_session_uidset(struct imap_session *s, const struct imap_arg *arg, bool uid_mode,
                        struct imap_seqset *uids_r)
{
    imap_seqset_init(uids_r);
    const char *text = arg->type == IMAP_ARG_ATOM ? arg->str : NULL;
    struct imap_seqset set;
    const char *err = "sequence set expected";
    if (text == NULL || imap_seqset_parse(text, arg->len, &set, &err) < 0) {
        imap_done_bad(s, "%s", err);
        return -1;
    }
    if (set.searchres) {
        for (size_t i = 0; i < s->searchres_count; i++) {
            uint32_t v = s->searchres[i];
            if (!uid_mode) {
                v = imap_session_seq_of(s, v);
                if (v == 0)
                    continue;
            }
            imap_seqset_add(&set, v, v);
        }
    }
    if (!uid_mode && set.has_star && s->sel.count == 0) {
        /* RFC 9051 section 9 (seq-number): a message number beyond the
         * last message is BAD, "this includes '*' if the selected mailbox
         * is empty" (UIDs differ: there "*" is UIDNEXT and matches nothing). */
        imap_seqset_free(&set);
        imap_done_bad(s, "Message number out of range (\"*\" in an empty mailbox)");
        return -1;
    }
    uint32_t max = s->sel.count == 0 ? 0
                   : uid_mode       ? s->sel.uids[s->sel.count - 1]
                                    : s->sel.count;
    imap_seqset_resolve(&set, max);
    if (!uid_mode && imap_seqset_highest(&set) > s->sel.count) {
        imap_seqset_free(&set);
        imap_done_bad(s, "Message number out of range (the mailbox has %u messages)", s->sel.count);
        return -1;
    }
    /* translate to the UIDs present in the view */
    if (uid_mode) {
        for (size_t r = 0; r < set.n; r++) {
            /* walk the view between lo and hi: O(view) worst case */
            uint32_t lo = set.ranges[r].lo, hi = set.ranges[r].hi;
            size_t a = 0, b = s->sel.count;
            while (a < b) {
                size_t mid = (a + b) / 2;
                if (s->sel.uids[mid] < lo)
                    a = mid + 1;
                else
                    b = mid;
            }
            for (size_t i = a; i < s->sel.count && s->sel.uids[i] <= hi; i++)
                imap_seqset_add(uids_r, s->sel.uids[i], s->sel.uids[i]);
        }
    } else {
        struct imap_seqset_iter it;
        imap_seqset_iter_init(&it);
        uint32_t seq;
        while (imap_seqset_iter_next(&set, &it, &seq))
            imap_seqset_add(uids_r, s->sel.uids[seq - 1], s->sel.uids[seq - 1]);
    }
    imap_seqset_free(&set);
    return 0;
}

int imap_store_send(struct imap_session *s, struct mx_frame *frame, imapd_store_done_fn *done_fn)
{
    if (s->shard == NULL ||
        imapd_store_request(s->shard, frame, &s->call, done_fn, s) < 0) {
        mx_frame_free(frame);
        imap_done_no(s, "[UNAVAILABLE] Mailbox server unavailable, try again");
        return -1;
    }
    mx_frame_free(frame);
    return 0;
}

void imap_session_enable_condstore(struct imap_session *s)
{
    if (s->condstore)
        return;
    s->condstore = true;
    if (s->state == IMAP_STATE_SELECTED)
        imap_printf(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n",
                    (unsigned long long)s->sel.highestmodseq);
}

/* ---- \Recent ------------------------------------------------------------ */

uint32_t imap_session_recent_bit(const struct imap_session *s, uint32_t uid)
{
    return s->recent.n && imap_seqset_contains(&s->recent, uid) ? IMAP_SEARCH_FLAG_RECENT : 0;
}

static void recent_on_reply(void *ctx, enum mx_status status, const char *text,
                            const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    uint32_t from = 0;
    if (status == MX_STATUS_OK && mx_frame_get_u32(reply, F_UID, &from) == 0 && from &&
        from < s->recent_upto)
        imap_seqset_add(&s->recent, from, s->recent_upto - 1);
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->sel.count && s->recent.n; i++)
        n += imap_seqset_contains(&s->recent, s->sel.uids[i]);
    imap_printf(s, "* %u RECENT\r\n", n);
    void (*then)(struct imap_session *) = s->recent_then;
    s->recent_then = NULL;
    then(s);
}

void imap_session_claim_recent(struct imap_session *s, uint32_t upto, bool claim,
                               void (*then)(struct imap_session *))
{
    if (s->rev2) { /* IMAP4rev2 has no \Recent */
        then(s);
        return;
    }
    s->recent_then = then;
    s->recent_upto = upto;
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_RECENT_CLAIM, s->user, s->sel.name);
    mx_frame_put_u32(&f, F_UIDVALIDITY, s->sel.uidvalidity);
    mx_frame_put_u32(&f, F_UIDNEXT, upto);
    mx_frame_put_u32(&f, F_CLAIM, claim ? 1 : 0);
    int rc = s->shard ? imapd_store_request(s->shard, &f, &s->call, recent_on_reply, s) : -1;
    mx_frame_free(&f);
    if (rc < 0) {
        s->recent_then = NULL;
        then(s);
    }
}

/* ---- synchronising the view with the store ----------------------------- */

void imap_uidlist_add(struct imap_uidlist *list, uint32_t uid)
{
    for (size_t i = 0; i < list->n; i++)
        if (list->uids[i] == uid)
            return;
    if (list->n == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 16;
        list->uids = mx_reallocarray(list->uids, list->cap, sizeof *list->uids);
    }
    list->uids[list->n++] = uid;
}

static int uid_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void imap_session_flush_expunges(struct imap_session *s)
{
    struct imap_uidlist *list = &s->deferred_expunges;
    if (list->n == 0)
        return;
    qsort(list->uids, list->n, sizeof *list->uids, uid_cmp);
    imap_view_expunge_uids(s, list->uids, list->n);
    list->n = 0;
}

struct sync_op {
    void (*then)(struct imap_session *); /* NULL: write s->held_tagged */
    bool allow_expunge;
    void *saved_op;        /* the command's own state, back after the sync */
    void (*saved_op_free)(void *);
};

static void sync_op_free(void *p)
{
    struct sync_op *op = p;
    if (op->saved_op) {
        if (op->saved_op_free)
            op->saved_op_free(op->saved_op);
        else
            free(op->saved_op);
    }
    free(op);
}

static void sync_finish(struct imap_session *s, struct sync_op *op)
{
    void (*then)(struct imap_session *) = op->then;
    s->syncing = false;
    s->op = op->saved_op;
    s->op_free = op->saved_op_free;
    free(op);
    if (then) {
        then(s);
        return;
    }
    char *line = s->held_tagged;
    s->held_tagged = NULL;
    if (line) {
        imap_write(s, line, strlen(line));
        free(line);
    }
    session_finish_command(s);
}

static void sync_after_recent(struct imap_session *s)
{
    sync_finish(s, s->op);
}

static void sync_on_reply(void *ctx, enum mx_status status, const char *text,
                          const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct sync_op *op = s->op;
    if (status == MX_STATUS_UIDVALIDITY || status == MX_STATUS_NOT_FOUND) {
        /* the selected mailbox was deleted or recreated under us: the
         * client's UIDs mean nothing any more (RFC 9051 7.1: BYE) */
        imap_printf(s, "* BYE [UNAVAILABLE] The selected mailbox was deleted or renamed\r\n");
        mx_log(MX_LOG_NOTICE, "imap.selected_mailbox_gone", MX_KV("sid", s->sid),
               MX_KV("user", s->user), MX_KV("mailbox", s->sel.name));
        s->state = IMAP_STATE_LOGOUT;
        mx_conn_close_after_flush(s->conn, "selected mailbox gone");
        return;
    }
    if (status != MX_STATUS_OK) {
        /* keep changes_pending: the next command tries again */
        sync_finish(s, op);
        return;
    }
    s->changes_pending = false;
    struct imap_msg_record *recs = NULL;
    size_t n_recs = 0;
    const char *error;
    if (imap_msg_records_parse(reply, &recs, &n_recs, &error) < 0) {
        mx_log(MX_LOG_ERR, "imap.changes_reply_malformed", MX_KV("sid", s->sid),
               MX_KV("user", s->user), MX_KV("error", error));
        s->changes_pending = true;
        sync_finish(s, op);
        return;
    }
    char *vanished = NULL;
    uint64_t highest = 0;
    (void)mx_frame_get_text(reply, F_VANISHED_SET, MX_WIRE_FRAME_MAX, &vanished);
    (void)mx_frame_get_u64(reply, F_HIGHESTMODSEQ, &highest);
    /* 1. expunges: reported now, or kept for the next point where the
     * client's message numbers may change (RFC 9051 7.5.1) */
    uint32_t *gone = NULL;
    size_t n_gone = 0;
    if (vanished && imap_uids_parse(vanished, &gone, &n_gone) == 0 && n_gone) {
        for (size_t i = 0; i < n_gone; i++)
            if (imap_session_seq_of(s, gone[i]))
                imap_uidlist_add(&s->deferred_expunges, gone[i]);
    }
    free(gone);
    free(vanished);
    if (op->allow_expunge)
        imap_session_flush_expunges(s);
    /* 2. new messages (records come in UID order: those above the view),
     * 3. flag changes of the others, numbered as the client now sees them */
    uint32_t last_view_uid = s->sel.count ? s->sel.uids[s->sel.count - 1] : 0;
    for (size_t i = 0; i < n_recs; i++) {
        const struct imap_msg_record *r = &recs[i];
        uint32_t seq = r->uid > last_view_uid ? 0 : imap_session_seq_of(s, r->uid);
        if (seq == 0)
            continue;
        struct imap_bytes line = { 0 };
        imap_bytes_printf(&line, "* %u FETCH (UID %u FLAGS ", seq, r->uid);
        imap_flags_format(&line, r->flags, r->keywords);
        if (s->condstore)
            imap_bytes_printf(&line, " MODSEQ (%llu)", (unsigned long long)r->modseq);
        imap_bytes_add(&line, ")\r\n", 3);
        imap_write(s, line.data, line.len);
        imap_bytes_reset(&line);
    }
    size_t n_new = 0;
    for (size_t i = 0; i < n_recs; i++)
        if (recs[i].uid > last_view_uid) {
            imap_view_append_uid(s, recs[i].uid);
            n_new++;
        }
    if (n_new)
        imap_printf(s, "* %u EXISTS\r\n", s->sel.count);
    uint32_t newest = n_new ? s->sel.uids[s->sel.count - 1] : 0;
    imap_msg_records_free(&recs, &n_recs);
    if (highest > s->sel.highestmodseq)
        s->sel.highestmodseq = highest;
    if (newest) {
        /* the first session told about new mail gets it as \Recent */
        imap_session_claim_recent(s, newest + 1, !s->sel.readonly, sync_after_recent);
        return;
    }
    sync_finish(s, op);
}

void imap_session_sync(struct imap_session *s, bool allow_expunge,
                       void (*then)(struct imap_session *))
{
    struct sync_op *op = mx_calloc(1, sizeof *op);
    op->then = then;
    op->allow_expunge = allow_expunge;
    /* the command's state survives the sync (then() may still need it) */
    op->saved_op = s->op;
    op->saved_op_free = s->op_free;
    s->op = op;
    s->op_free = sync_op_free;
    s->syncing = true;
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_CHANGES_SINCE, s->user, s->sel.name);
    mx_frame_put_u32(&f, F_UIDVALIDITY, s->sel.uidvalidity);
    mx_frame_put_u64(&f, F_MODSEQ, s->sel.highestmodseq);
    if (s->shard == NULL || imapd_store_request(s->shard, &f, &s->call, sync_on_reply, s) < 0) {
        mx_frame_free(&f);
        sync_finish(s, op);
        return;
    }
    mx_frame_free(&f);
}

/* ---- change events ------------------------------------------------------- */

static void idle_sync_done(struct imap_session *s)
{
    /* still idling: a DONE may have arrived meanwhile */
    if (s->changes_pending && s->idling) {
        imap_session_sync(s, true, idle_sync_done);
        return;
    }
    mx_conn_resume(s->conn);
}

static void session_on_change(void *ctx, const char *mailbox, uint64_t modseq, uint32_t change)
{
    struct imap_session *s = ctx;
    if (s->state != IMAP_STATE_SELECTED || strcmp(mailbox, s->sel.name) != 0)
        return;
    if (modseq && modseq <= s->sel.highestmodseq && !(change & MX_CHANGE_EXPUNGE))
        return; /* our own change, already reported */
    s->changes_pending = true;
    if (s->idling && !s->syncing)
        imap_session_sync(s, true, idle_sync_done);
}

/* ---- authentication ---------------------------------------------------- */

static void session_logged_in(struct imap_session *s);

static void inbox_ensure_on_create(void *ctx, enum mx_status status, const char *text,
                                   const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status != MX_STATUS_OK && status != MX_STATUS_EXISTS)
        mx_log(MX_LOG_WARNING, "imap.inbox_create_failed", MX_KV("sid", s->sid),
               MX_KV("user", s->user), MX_KV("error", text));
    session_logged_in(s);
}

static void inbox_ensure_on_status(void *ctx, enum mx_status status, const char *text,
                                   const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status == MX_STATUS_NOT_FOUND) {
        /* a new account that never got mail: INBOX (and with it the
         * special-use folders) is created on first login */
        struct mx_frame f;
        imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_CREATE, s->user, "INBOX");
        if (imapd_store_request(s->shard, &f, &s->call, inbox_ensure_on_create, s) == 0) {
            mx_frame_free(&f);
            return;
        }
        mx_frame_free(&f);
    }
    session_logged_in(s);
}

static void session_logged_in(struct imap_session *s)
{
    s->watch = imapd_watch_add(s->server, s->user, session_on_change, s);
    mx_conn_set_idle_timeout(s->conn, s->server->idle_timeout_ms);
    imap_printf(s, "%s OK [CAPABILITY ", s->cmd.tag);
    write_capabilities(s);
    imap_printf(s, "] Logged in\r\n");
    s->errors = 0;
    session_finish_command(s);
}

static void session_on_auth(void *ctx, enum mx_auth_result result, struct mx_identity *identity)
{
    struct imap_session *s = ctx;
    s->auth_check = NULL;
    switch (result) {
    case MX_AUTH_OK:
        break;
    case MX_AUTH_TEMPFAIL:
        imap_done_no(s, "[UNAVAILABLE] Authentication service unavailable, try again later");
        return;
    case MX_AUTH_DISABLED:
        mx_log(MX_LOG_NOTICE, "imap.login_disabled_account", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip));
        imap_done_no(s, "[AUTHORIZATIONFAILED] Account disabled, contact your administrator");
        return;
    case MX_AUTH_BLOCKED:
        imap_done_no(s, "[AUTHENTICATIONFAILED] Too many failed logins, try again later");
        return;
    case MX_AUTH_INVALID:
    default: {
        char key[96];
        snprintf(key, sizeof key, "ip:%s", s->peer_ip);
        mx_limits_auth_failure(s->server->limits, key, mx_now_ms(), s->server->auth.window_ms);
        s->logins_failed++;
        if (s->logins_failed >= IMAP_MAX_LOGIN_FAILURES) {
            imap_printf(s, "%s NO [AUTHENTICATIONFAILED] Invalid credentials\r\n", s->cmd.tag);
            imap_printf(s, "* BYE Too many failed logins\r\n");
            s->state = IMAP_STATE_LOGOUT;
            imap_command_free(&s->cmd);
            s->have_cmd = false;
            s->busy = false;
            mx_conn_close_after_flush(s->conn, "too many failed logins");
            return;
        }
        imap_done_no(s, "[AUTHENTICATIONFAILED] Invalid credentials");
        return;
    }
    }
    s->identity = *identity;
    *identity = (struct mx_identity){ 0 };
    s->user = mx_strdup(s->identity.mail);
    s->shard = imapd_shard_for(s->server, s->identity.shard);
    if (s->shard == NULL) {
        mx_identity_clear(&s->identity);
        free(s->user);
        s->user = NULL;
        imap_done_no(s, "[UNAVAILABLE] Your mailbox is not served here, contact your administrator");
        return;
    }
    s->state = IMAP_STATE_AUTHENTICATED;
    mx_log(MX_LOG_INFO, "imap.login", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("user", s->user), MX_KV("shard", s->shard->name),
           MX_KV("tls", mx_conn_is_tls(s->conn) ? "yes" : "no"));
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_STATUS, s->user, "INBOX");
    if (imapd_store_request(s->shard, &f, &s->call, inbox_ensure_on_status, s) < 0)
        session_logged_in(s);
    mx_frame_free(&f);
}

/* session_check_login_allowed - NO and false when this connection may not
 * send a password (no TLS) or its address failed too often. */
static bool session_check_login_allowed(struct imap_session *s)
{
    if (!imapd_plaintext_auth_allowed(s->server, s->conn)) {
        imap_done_no(s, "[PRIVACYREQUIRED] Use STARTTLS or the TLS port first");
        return false;
    }
    char key[96];
    snprintf(key, sizeof key, "ip:%s", s->peer_ip);
    if (mx_limits_auth_blocked(s->server->limits, key, mx_now_ms(), s->server->auth.window_ms,
                               s->server->auth_max_failures_per_ip)) {
        mx_log(MX_LOG_NOTICE, "imap.login_rate_limited", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip));
        imap_done_no(s, "[UNAVAILABLE] Too many failed logins from your address, try again later");
        return false;
    }
    return true;
}

static void session_start_auth(struct imap_session *s, const char *login, const char *password,
                               size_t password_len)
{
    if (*login == '\0' || password_len == 0) {
        imap_done_no(s, "[AUTHENTICATIONFAILED] Invalid credentials");
        return;
    }
    s->auth_check = mx_auth_start(&s->server->auth, s->sid, login, password, password_len,
                                  session_on_auth, s);
}

static void cmd_login(struct imap_session *s)
{
    if (s->cmd.n_args != 2) {
        imap_done_bad(s, "LOGIN needs a user name and a password");
        return;
    }
    const char *login = imap_arg_cstring(&s->cmd.args[0]);
    const char *password = imap_arg_cstring(&s->cmd.args[1]);
    if (login == NULL || password == NULL) {
        imap_done_bad(s, "LOGIN arguments must be strings");
        return;
    }
    if (!session_check_login_allowed(s))
        return;
    session_start_auth(s, login, password, s->cmd.args[1].len);
}

/* sasl_plain - the client's PLAIN response (RFC 4616, base64). */
static void sasl_plain(struct imap_session *s, const char *b64, size_t b64_len)
{
    if (b64_len == 1 && b64[0] == '*') {
        imap_done_bad(s, "Authentication cancelled");
        return;
    }
    char authcid[MX_SASL_CREDENTIAL_MAX + 1], password[MX_SASL_CREDENTIAL_MAX + 1];
    size_t password_len = 0;
    const char *error;
    if (mx_sasl_plain_decode(b64, b64_len, authcid, password, &password_len, &error) < 0) {
        if (strstr(error, "authorization") != NULL)
            imap_done_no(s, "[AUTHORIZATIONFAILED] Acting as another user is not allowed");
        else
            imap_done_bad(s, "%s", error);
        return;
    }
    session_start_auth(s, authcid, password, password_len);
    OPENSSL_cleanse(password, sizeof password);
}

static void cmd_authenticate(struct imap_session *s)
{
    if (s->cmd.n_args < 1 || s->cmd.n_args > 2 || s->cmd.args[0].type != IMAP_ARG_ATOM) {
        imap_done_bad(s, "AUTHENTICATE needs a mechanism name");
        return;
    }
    if (strcasecmp(s->cmd.args[0].str, "PLAIN") != 0) {
        imap_done_no(s, "[CANNOT] Unsupported authentication mechanism");
        return;
    }
    if (!session_check_login_allowed(s))
        return;
    if (s->cmd.n_args == 2) { /* SASL-IR, RFC 4959 */
        const struct imap_arg *ir = &s->cmd.args[1];
        if (ir->type != IMAP_ARG_ATOM) {
            imap_done_bad(s, "Invalid initial response");
            return;
        }
        sasl_plain(s, ir->str, ir->len);
        return;
    }
    imap_printf(s, "+ \r\n");
    s->sasl_pending = true;
    imap_reader_want_raw_line(s->reader);
}

/* ---- simple commands --------------------------------------------------- */

static void cmd_capability(struct imap_session *s)
{
    imap_printf(s, "* CAPABILITY ");
    write_capabilities(s);
    imap_printf(s, "\r\n");
    imap_done_ok(s, "Capability completed");
}

static void noop_synced(struct imap_session *s)
{
    imap_done_ok(s, "%s completed", s->cmd.name);
}

static void cmd_noop(struct imap_session *s)
{
    if (s->state == IMAP_STATE_SELECTED) {
        /* PUB/SUB may lose an event: NOOP always asks (cheap: a modseq
         * comparison in the store) */
        imap_session_sync(s, true, noop_synced);
        return;
    }
    imap_done_ok(s, "%s completed", s->cmd.name);
}

static void cmd_logout(struct imap_session *s)
{
    imap_printf(s, "* BYE Logging out\r\n");
    imap_printf(s, "%s OK Logout completed\r\n", s->cmd.tag);
    s->state = IMAP_STATE_LOGOUT;
    imap_command_free(&s->cmd);
    s->have_cmd = false;
    s->busy = false;
    mx_conn_close_after_flush(s->conn, "logout");
}

static void cmd_starttls(struct imap_session *s)
{
    if (mx_conn_is_tls(s->conn)) {
        imap_done_bad(s, "TLS is already active");
        return;
    }
    if (!mx_conn_has_tls_ctx(s->conn)) {
        imap_done_no(s, "[UNAVAILABLE] TLS not available");
        return;
    }
    imap_printf(s, "%s OK Begin TLS negotiation now\r\n", s->cmd.tag);
    imap_command_free(&s->cmd);
    s->have_cmd = false;
    s->busy = false;
    if (mx_conn_starttls(s->conn) == 0)
        mx_conn_resume(s->conn);
}

/* RFC 4978: everything after the tagged OK is deflated both ways. */
static void cmd_compress(struct imap_session *s)
{
    if (s->cmd.n_args != 1 || s->cmd.args[0].type != IMAP_ARG_ATOM) {
        imap_done_bad(s, "COMPRESS needs a mechanism name");
        return;
    }
    if (strcasecmp(s->cmd.args[0].str, "DEFLATE") != 0) {
        imap_done_bad(s, "Unknown compression mechanism");
        return;
    }
    if (mx_conn_is_compressed(s->conn)) {
        imap_done_no(s, "[COMPRESSIONACTIVE] DEFLATE active");
        return;
    }
    imap_printf(s, "%s OK DEFLATE active\r\n", s->cmd.tag);
    imap_command_free(&s->cmd);
    s->have_cmd = false;
    s->busy = false;
    /* the input buffer changes under us: stop reading the old one now,
     * the next on_input brings the inflated bytes */
    s->input_switched = true;
    if (mx_conn_compress(s->conn) == 0)
        mx_conn_resume(s->conn);
}

static void cmd_enable(struct imap_session *s)
{
    if (s->cmd.n_args == 0) {
        imap_done_bad(s, "ENABLE needs capability names");
        return;
    }
    char enabled[256] = "";
    for (size_t i = 0; i < s->cmd.n_args; i++) {
        const struct imap_arg *a = &s->cmd.args[i];
        if (a->type != IMAP_ARG_ATOM) {
            imap_done_bad(s, "ENABLE takes capability names");
            return;
        }
        const char *what = NULL;
        if (strcasecmp(a->str, "CONDSTORE") == 0 && !s->condstore) {
            imap_session_enable_condstore(s);
            what = "CONDSTORE";
        } else if (strcasecmp(a->str, "QRESYNC") == 0 && !s->qresync) {
            s->qresync = true;
            imap_session_enable_condstore(s); /* RFC 7162 3.2.3: implies CONDSTORE */
            what = "QRESYNC";
        } else if (strcasecmp(a->str, "UTF8=ACCEPT") == 0 && !s->utf8_accept) {
            s->utf8_accept = true;
            what = "UTF8=ACCEPT";
        } else if (strcasecmp(a->str, "IMAP4rev2") == 0 && !s->rev2) {
            s->rev2 = true;
            what = "IMAP4rev2";
        }
        if (what && strlen(enabled) + strlen(what) + 2 < sizeof enabled) {
            strcat(enabled, " ");
            strcat(enabled, what);
        }
    }
    imap_printf(s, "* ENABLED%s\r\n", enabled);
    imap_done_ok(s, "Enabled");
}

static void cmd_id(struct imap_session *s)
{
    /* RFC 2971: the client's fields are only logged (bounded) */
    if (s->cmd.n_args != 1 ||
        (s->cmd.args[0].type != IMAP_ARG_NIL && s->cmd.args[0].type != IMAP_ARG_LIST)) {
        imap_done_bad(s, "ID takes a parameter list or NIL");
        return;
    }
    const struct imap_arg *list = &s->cmd.args[0];
    if (list->type == IMAP_ARG_LIST) {
        if (list->n_list % 2 != 0 || list->n_list > 60) {
            imap_done_bad(s, "ID takes at most 30 field/value pairs");
            return;
        }
        for (size_t i = 0; i + 1 < list->n_list; i += 2) {
            const char *k = imap_arg_cstring(&list->list[i]);
            const char *v = imap_arg_cstring(&list->list[i + 1]);
            if (k && (strcasecmp(k, "name") == 0 || strcasecmp(k, "version") == 0) && v)
                mx_log(MX_LOG_INFO, "imap.client_id", MX_KV("sid", s->sid), MX_KV("field", k),
                       MX_KV("value", v));
        }
    }
    imap_printf(s, "* ID (\"name\" \"mxcluster\" \"vendor\" \"mxcluster\")\r\n");
    imap_done_ok(s, "ID completed");
}

static void cmd_idle(struct imap_session *s)
{
    s->idling = true;
    free(s->idle_tag);
    s->idle_tag = mx_strdup(s->cmd.tag);
    imap_printf(s, "+ idling\r\n");
    imap_reader_want_raw_line(s->reader);
    /* report what arrived since the last command right away */
    if (s->state == IMAP_STATE_SELECTED)
        imap_session_sync(s, true, idle_sync_done);
}

static void idle_done(struct imap_session *s, const char *line)
{
    if (strcasecmp(line, "DONE") != 0) {
        s->idling = false;
        imap_done_bad(s, "Expected DONE to end IDLE");
        return;
    }
    s->idling = false;
    imap_done_ok(s, "IDLE terminated");
}

static void cmd_check(struct imap_session *s)
{
    cmd_noop(s);
}

/* ---- dispatch ------------------------------------------------------------ */

#define ANY (IMAP_STATE_NOT_AUTHENTICATED | IMAP_STATE_AUTHENTICATED | IMAP_STATE_SELECTED)
#define AUTH (IMAP_STATE_AUTHENTICATED | IMAP_STATE_SELECTED)
#define SEL IMAP_STATE_SELECTED

static const struct {
    const char *name;
    unsigned states;
    bool uid_ok; /* may follow "UID" */
    imap_command_fn *fn;
} commands[] = {
    { "CAPABILITY", ANY, false, cmd_capability },
    { "NOOP", ANY, false, cmd_noop },
    { "LOGOUT", ANY, false, cmd_logout },
    { "ID", ANY, false, cmd_id },
    { "ENABLE", AUTH, false, cmd_enable },
    { "STARTTLS", IMAP_STATE_NOT_AUTHENTICATED, false, cmd_starttls },
    { "LOGIN", IMAP_STATE_NOT_AUTHENTICATED, false, cmd_login },
    { "AUTHENTICATE", IMAP_STATE_NOT_AUTHENTICATED, false, cmd_authenticate },
    { "SELECT", AUTH, false, imap_cmd_select },
    { "EXAMINE", AUTH, false, imap_cmd_examine },
    { "CREATE", AUTH, false, imap_cmd_create },
    { "DELETE", AUTH, false, imap_cmd_delete },
    { "RENAME", AUTH, false, imap_cmd_rename },
    { "SUBSCRIBE", AUTH, false, imap_cmd_subscribe },
    { "UNSUBSCRIBE", AUTH, false, imap_cmd_unsubscribe },
    { "LIST", AUTH, false, imap_cmd_list },
    { "LSUB", AUTH, false, imap_cmd_lsub },
    { "STATUS", AUTH, false, imap_cmd_status },
    { "NAMESPACE", AUTH, false, imap_cmd_namespace },
    { "GETQUOTA", AUTH, false, imap_cmd_getquota },
    { "GETQUOTAROOT", AUTH, false, imap_cmd_getquotaroot },
    { "SETQUOTA", AUTH, false, imap_cmd_setquota },
    { "APPEND", AUTH, false, imap_cmd_append },
    { "IDLE", AUTH, false, cmd_idle },
    { "COMPRESS", AUTH, false, cmd_compress },
    { "CHECK", SEL, false, cmd_check },
    { "CLOSE", SEL, false, imap_cmd_close },
    { "UNSELECT", SEL, false, imap_cmd_unselect },
    { "EXPUNGE", SEL, true, imap_cmd_expunge },
    { "SEARCH", SEL, true, imap_cmd_search },
    { "FETCH", SEL, true, imap_cmd_fetch },
    { "STORE", SEL, true, imap_cmd_store },
    { "COPY", SEL, true, imap_cmd_copy },
    { "MOVE", SEL, true, imap_cmd_move },
    { "SORT", SEL, true, imap_cmd_sort },
    { "THREAD", SEL, true, imap_cmd_thread },
};

static void session_dispatch(struct imap_session *s, const char *buf, size_t len)
{
    struct imap_parse_options popts = { 0, s->utf8_accept || s->rev2 };
    s->busy = true;
    s->have_cmd = true;
    s->commands++;
    s->cmd_started_ms = mx_now_ms();
    if (imap_parse_command(buf, len, &popts, &s->cmd) < 0) {
        if (s->cmd.tag == NULL) {
            imap_printf(s, "* BAD %s\r\n", s->cmd.error);
            imap_command_free(&s->cmd);
            s->have_cmd = false;
            s->errors++;
            session_finish_command(s);
            return;
        }
        imap_done_bad(s, "%s", s->cmd.error);
        return;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, s->cmd.name) != 0)
            continue;
        if (s->cmd.uid && !commands[i].uid_ok) {
            imap_done_bad(s, "UID %s is not a command", s->cmd.name);
            return;
        }
        if (!(commands[i].states & s->state)) {
            imap_done_bad(s, "%s not allowed now: %s", s->cmd.name,
                          s->state == IMAP_STATE_NOT_AUTHENTICATED ? "log in first"
                          : s->state == IMAP_STATE_AUTHENTICATED  ? "select a mailbox first"
                                                                  : "already logged in");
            return;
        }
        commands[i].fn(s);
        return;
    }
    imap_done_bad(s, "Unknown command %s", s->cmd.name);
}

/* session_raw_line - IDLE's DONE or an AUTHENTICATE response. */
static void session_raw_line(struct imap_session *s, const char *line, size_t len)
{
    if (s->idling) {
        idle_done(s, line);
        return;
    }
    if (s->sasl_pending) {
        s->sasl_pending = false;
        if (len > IMAP_SASL_LINE_MAX) {
            imap_done_bad(s, "SASL response too long");
            return;
        }
        sasl_plain(s, line, len);
        OPENSSL_cleanse((char *)line, len);
        return;
    }
    imap_printf(s, "* BAD Unexpected continuation\r\n");
}

static void session_bye(struct imap_session *s, const char *text, const char *reason)
{
    imap_printf(s, "* BYE %s\r\n", text);
    s->state = IMAP_STATE_LOGOUT;
    mx_conn_close_after_flush(s->conn, reason);
}

static void session_drive(struct imap_session *s)
{
    s->input_switched = false;
    while (s->state != IMAP_STATE_LOGOUT && !s->input_switched) {
        struct evbuffer *in = mx_conn_input(s->conn);
        bool raw = (s->idling || s->sasl_pending) && !s->syncing && s->auth_check == NULL;
        if (s->busy && !raw)
            return; /* the running command's end resumes us */
        enum imap_read_status status = imap_reader_read_evbuffer(s->reader, in);
        size_t len;
        const char *text;
        switch (status) {
        case IMAP_READ_NEED_MORE:
            if (mx_conn_peer_closed(s->conn))
                mx_conn_close(s->conn, "client closed");
            return;
        case IMAP_READ_NEED_CONTINUATION:
            imap_printf(s, "+ Ready for literal data\r\n");
            continue;
        case IMAP_READ_COMMAND:
            text = imap_reader_command(s->reader, &len);
            session_dispatch(s, text, len);
            continue;
        case IMAP_READ_RAW_LINE:
            text = imap_reader_command(s->reader, &len);
            session_raw_line(s, text, len);
            continue;
        case IMAP_READ_LINE_TOO_LONG:
        case IMAP_READ_LITERAL_TOO_BIG: {
            size_t tag_len = 0;
            const char *tag = imap_reader_tag(s->reader, &tag_len);
            bool too_big = status == IMAP_READ_LITERAL_TOO_BIG;
            if (s->idling || s->sasl_pending) {
                s->idling = s->sasl_pending = false;
                imap_done_bad(s, "Line too long");
                continue;
            }
            if (tag)
                imap_printf(s, "%.*s %s %s\r\n", (int)tag_len, tag, too_big ? "NO [TOOBIG]" : "BAD",
                            imap_reader_error(s->reader));
            else
                imap_printf(s, "* BAD %s\r\n", imap_reader_error(s->reader));
            mx_log(MX_LOG_NOTICE, "imap.input_refused", MX_KV("sid", s->sid),
                   MX_KV("peer", s->peer_ip), MX_KV("error", imap_reader_error(s->reader)));
            if (++s->errors >= IMAP_MAX_ERRORS) {
                session_bye(s, "Too many invalid commands", "too many errors");
                return;
            }
            continue;
        }
        case IMAP_READ_FATAL:
        default:
            mx_log(MX_LOG_NOTICE, "imap.input_fatal", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
                   MX_KV("error", imap_reader_error(s->reader)));
            session_bye(s, imap_reader_error(s->reader), "protocol violation");
            return;
        }
    }
}

/* ---- life cycle ---------------------------------------------------------- */

void *imap_session_new(struct imapd_server *server, const struct imapd_listener *listener,
                       const char *sid)
{
    struct imap_session *s = mx_calloc(1, sizeof *s);
    s->server = server;
    s->listener = listener;
    snprintf(s->sid, sizeof s->sid, "%s", sid);
    s->state = IMAP_STATE_NOT_AUTHENTICATED;
    struct imap_reader_limits limits = {
        .max_line = server->max_line_length,
        .max_literal = (size_t)server->max_literal_size,
        .max_command = (size_t)server->max_literal_size + server->max_line_length,
        .max_literals = 0,
    };
    s->reader = imap_reader_new(&limits);
    imap_reader_set_literal_mode(s->reader, IMAP_LITERAL_PLUS);
    s->started_ms = mx_now_ms();
    return s;
}

void imap_session_attach(void *session, struct mx_conn *conn)
{
    struct imap_session *s = session;
    s->conn = conn;
}

static void imap_on_ready(void *ctx)
{
    struct imap_session *s = ctx;
    snprintf(s->peer_ip, sizeof s->peer_ip, "%s", mx_conn_peer_ip(s->conn));
    const char *reason = NULL;
    if (imapd_admit(s->server, s->peer_ip, &reason) < 0) {
        mx_log(MX_LOG_NOTICE, "imap.connection_refused", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("reason", reason));
        session_bye(s, "Too many connections from your address", reason);
        return;
    }
    s->admitted = true;
    mx_log(MX_LOG_DEBUG, "imap.connect", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("tls", mx_conn_is_tls(s->conn) ? "implicit" : "no"));
    imap_printf(s, "* OK [CAPABILITY ");
    write_capabilities(s);
    imap_printf(s, "] %s mxcluster IMAP ready\r\n", s->server->hostname);
}

static void imap_on_input(void *ctx, struct evbuffer *in)
{
    session_drive(ctx);
}

static void imap_on_close(void *ctx, const char *reason)
{
    struct imap_session *s = ctx;
    if (s->user)
        mx_log(MX_LOG_INFO, "imap.logout", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("user", s->user), MX_KV("reason", reason), MX_KVU("commands", s->commands),
               MX_KVU("ms", mx_now_ms() - s->started_ms));
    imapd_store_cancel(&s->call);
    mx_auth_cancel(&s->auth_check);
    imapd_watch_remove(s->server, &s->watch);
    if (s->have_cmd)
        imap_command_free(&s->cmd);
    imap_session_set_op(s, NULL, NULL);
    imap_reader_free(s->reader);
    mx_identity_clear(&s->identity);
    free(s->user);
    free(s->sel.name);
    free(s->sel.uids);
    free(s->sel.keywords);
    free(s->searchres);
    free(s->idle_tag);
    free(s->held_tagged);
    free(s->deferred_expunges.uids);
    imap_seqset_free(&s->recent);
    if (s->conn) /* NULL: the connection was never made */
        imapd_connection_done(s->server, s->peer_ip, s->admitted);
    else
        imapd_connection_done(s->server, "", false);
    free(s);
}

const struct mx_conn_ops imap_session_ops = {
    .on_ready = imap_on_ready,
    .on_input = imap_on_input,
    .on_close = imap_on_close,
};
