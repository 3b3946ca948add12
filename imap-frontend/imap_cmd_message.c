/* imap_cmd_message - the IMAP message commands of mx-imapd: FETCH, STORE,
 * COPY, MOVE, EXPUNGE, APPEND, SEARCH, SORT, THREAD and their UID forms
 * (RFC 3501 / RFC 9051, UIDPLUS RFC 4315, MOVE RFC 6851, CONDSTORE /
 * QRESYNC RFC 7162, BINARY RFC 3516, ESEARCH RFC 4731, SEARCHRES RFC 5182,
 * SORT / THREAD RFC 5256).
 *
 * Every handler is a small state machine over store requests (the session
 * holds one store call at a time, and a command runs alone), so each step
 * sends one request and continues from its reply. The per-command state is
 * one struct message_op attached with imap_session_set_op(): it is freed
 * by the session when the command ends, so after any imap_done_*() - and
 * after an imap_store_send() that failed, which answers by itself - a
 * handler must not touch it again.
 *
 * Memory is bounded per command, not per mailbox: FETCH and SEARCH walk the
 * message set in batches (FETCH_BATCH / SCAN_BATCH index records per store
 * reply), body data is read one message and one item at a time in chunks
 * of BODY_CHUNK octets and written as soon as that message's response is
 * complete. SORT and THREAD must keep the header of every matching message
 * until the end (they order the whole result), capped at SORT_HEADER_MAX
 * octets each. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <event2/event.h>

#include "imap_charset.h"
#include "imap_fetch_att.h"
#include "imap_message_util.h"
#include "imap_records.h"
#include "imap_search.h"
#include "imap_session.h"
#include "imap_sort.h"
#include "mx_alloc.h"

/* Index records per MSG_ANY_STORE_MESSAGE_FETCH: keeps a reply (with
 * ENVELOPE / BODYSTRUCTURE of each) far below MX_WIRE_FRAME_MAX. */
#define FETCH_BATCH 1000u
#define SCAN_BATCH 2000u
/* One MSG_ANY_STORE_MESSAGE_BODY reply at most. */
#define BODY_CHUNK (4u * 1024u * 1024u)
/* A body item larger than this cannot be answered (the store's own frame
 * limit is lower anyway: no message is bigger). */
#define BODY_ITEM_MAX ((uint64_t)MX_WIRE_FRAME_MAX)
/* What SORT / THREAD keep per matching message. */
#define SORT_HEADER_MAX (256u * 1024u)
/* FETCH stops producing while more than this waits to be sent to the
 * client (a client that does not read must not make us buffer its whole
 * mailbox), and looks again every OUTPUT_POLL_MS. */
#define OUTPUT_HIGH (8u * 1024u * 1024u)
#define OUTPUT_POLL_MS 20
/* APPEND: the frame also carries user, mailbox and flags. */
#define APPEND_OVERHEAD (64u * 1024u)


/* ---- the per-command state ---------------------------------------------- */

enum body_target {
    BODY_FOR_ITEM = 1,   /* a FETCH body item's data */
    BODY_FOR_MIME,       /* a BINARY item's MIME header (for its CTE) */
    BODY_FOR_SCAN,       /* SEARCH / SORT / THREAD raw header or message */
};

/* One section being read in chunks. */
struct body_read {
    enum body_target target;
    char *section;
    uint64_t offset;       /* next offset to ask for */
    uint64_t remaining;    /* octets still wanted; UINT64_MAX = to the end */
    struct imap_bytes data;
};

enum scan_kind { SCAN_SEARCH = 1, SCAN_SORT, SCAN_THREAD };

struct message_op {
    /* FETCH */
    struct imap_fetch_spec spec;
    bool spec_parsed;
    bool include_flags;    /* \Seen was set: FLAGS go into every response */
    bool include_modseq;   /* CONDSTORE on and flags change: MODSEQ too */
    bool has_body_items;
    unsigned store_items;  /* MX_FETCH_* bits for the index request */
    struct imap_seqset uidset; /* the command's messages, as UIDs of the view */
    struct imap_seqset_iter batch_iter;
    struct imap_msg_record *msgs;
    size_t n_msgs, next_msg, next_item;
    struct imap_bytes response; /* body items of the message in progress */
    struct event *output_wait; /* FETCH waiting for the client to read */
    enum imap_cte cte;     /* BINARY: of the part being read */
    struct body_read br;

    /* STORE */
    bool silent;
    bool unchangedsince_given;
    uint64_t unchangedsince;

    /* the view's HIGHESTMODSEQ when a flag change was sent */
    uint64_t modseq_before;

    /* COPY / MOVE / APPEND */
    char *ok_text;         /* APPEND: the tagged OK, kept across the sync */
    bool move;
    bool append_to_selected;

    /* SEARCH / SORT / THREAD */
    enum scan_kind scan;
    struct imap_search_program *program;
    enum imap_search_need scan_need; /* what the scan reads per message */
    bool sort_needs_header;
    struct imap_sort_criterion criteria[IMAP_SORT_MAX_CRITERIA];
    size_t n_criteria;
    enum imap_thread_algorithm thread_algorithm;
    uint32_t *view_uids;   /* snapshot of the view being scanned */
    uint32_t view_count;
    uint32_t scan_pos;     /* next index into view_uids for a batch */
    uint32_t *match_seqs, *match_uids;
    size_t n_match;
    uint64_t match_highest_modseq;
    struct imap_sort_msg *sort_msgs;
    char **sort_headers;   /* heap copies behind sort_msgs[i].header */
};

static void message_op_free(void *p)
{
    struct message_op *op = p;
    if (op->spec_parsed)
        imap_fetch_spec_free(&op->spec);
    imap_seqset_free(&op->uidset);
    imap_msg_records_free(&op->msgs, &op->n_msgs);
    imap_bytes_reset(&op->response);
    if (op->output_wait)
        event_free(op->output_wait);
    free(op->br.section);
    imap_bytes_reset(&op->br.data);
    free(op->ok_text);
    if (op->program)
        imap_search_free(op->program);
    free(op->view_uids);
    free(op->match_seqs);
    free(op->match_uids);
    if (op->sort_headers) {
        for (size_t i = 0; i < op->n_match; i++)
            free(op->sort_headers[i]);
        free(op->sort_headers);
    }
    free(op->sort_msgs);
    free(op);
}

static struct message_op *message_op_new(struct imap_session *s)
{
    struct message_op *op = mx_calloc(1, sizeof *op);
    imap_seqset_init(&op->uidset);
    imap_session_set_op(s, op, message_op_free);
    return op;
}

static struct message_op *message_op_of(struct imap_session *s)
{
    return s->op;
}

/* ---- shared small helpers ------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* mailbox_request - a request frame about the selected mailbox. */
static void mailbox_request(struct imap_session *s, struct mx_frame *frame, enum mx_msg_type type)
{
    imapd_store_frame(frame, type, s->user, s->sel.name);
    mx_frame_put_u32(frame, F_UIDVALIDITY, s->sel.uidvalidity);
}

/* send_request - imap_store_send() and free the frame. false when the send
 * failed: the command is then answered and the op is gone. */
static bool send_request(struct imap_session *s, struct mx_frame *frame, imapd_store_done_fn *done)
{
    int rc = imap_store_send(s, frame, done);
    mx_frame_free(frame);
    return rc == 0;
}

static void server_bug(struct imap_session *s, const char *what, const char *detail)
{
    mx_log(MX_LOG_ERR, "imapd.store_reply_malformed", MX_KV("sid", s->sid),
           MX_KV("user", s->user), MX_KV("mailbox", s->sel.name), MX_KV("command", s->cmd.name),
           MX_KV("what", what), MX_KV("detail", detail));
    imap_done_no(s, "[SERVERBUG] unexpected answer from the mailbox server (%s)", what);
}

/* finish_ok - the tagged OK with the text prepared in op->ok_text (the
 * continuation of an imap_session_sync()). */
static void finish_ok(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    imap_done_ok(s, "%s", op && op->ok_text ? op->ok_text : "completed");
}

/* finish_command - the tagged OK. Untagged news of other sessions' changes
 * are the core's: imap_done_ok() syncs first whenever a change event said
 * the mailbox changed (and holds EXPUNGEs back where RFC 9051 7.5.1 wants
 * that), so commands do not pay a store round trip each for nothing. Our
 * own changes were reported by the command itself; modseq_advance() keeps
 * the sync from reporting them a second time. */
static void finish_command(struct imap_session *s, const char *text)
{
    imap_done_ok(s, "%s", text);
}

/* modseq_advance - after a flag change of ours: the store gave every
 * changed message its own new mod-sequence (old highest + 1 ...). If the
 * records with a modseq above what the view has seen fill that range up to
 * the mailbox's new HIGHESTMODSEQ exactly, no other change slipped in, and
 * the view can move to it: the change event of our own STORE is then not
 * reported again as an unsolicited FETCH. Otherwise the view stays where
 * it is and the next sync reports everything, ours included. */
static void modseq_advance(struct imap_session *s, uint64_t seen_before, const struct imap_msg_record *msgs,
                           size_t n, const struct mx_frame_view *reply)
{
    uint64_t highest;
    if (s->sel.highestmodseq != seen_before ||
        mx_frame_get_u64(reply, F_HIGHESTMODSEQ, &highest) < 0 || highest <= seen_before)
        return;
    uint64_t ours = 0;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].have_modseq && msgs[i].modseq > seen_before && msgs[i].modseq <= highest)
            ours++;
    if (ours == highest - seen_before)
        s->sel.highestmodseq = highest;
}

/* finish_expunging - the tagged OK of a command that expunged messages
 * (EXPUNGE, UID EXPUNGE, MOVE). After ENABLE QRESYNC it carries the
 * HIGHESTMODSEQ the client may now rely on (RFC 7162 3.2.7 and 3.2.9; MOVE
 * expunges from the source as EXPUNGE does, RFC 6851 3.3): the view's
 * value, which never covers a change the client has not been told about. */
static void finish_expunging(struct imap_session *s, const char *text)
{
    if (s->qresync)
        imap_done_ok(s, "[HIGHESTMODSEQ %llu] %s", (unsigned long long)s->sel.highestmodseq, text);
    else
        finish_command(s, text);
}

/* expunge_modseq_advance - after an EXPUNGE of ours: the store gave every
 * expunged message its own new mod-sequence. If the mailbox's HIGHESTMODSEQ
 * moved by exactly that many since the view's, nothing else changed in
 * between, and the view (which has just reported the expunges) may move to
 * it; otherwise it stays and the next sync reports the rest. */
static void expunge_modseq_advance(struct imap_session *s, uint64_t seen_before, size_t n_gone,
                                   const struct mx_frame_view *reply)
{
    uint64_t highest;
    if (s->sel.highestmodseq != seen_before ||
        mx_frame_get_u64(reply, F_HIGHESTMODSEQ, &highest) < 0 || highest <= seen_before)
        return;
    if (highest - seen_before == n_gone)
        s->sel.highestmodseq = highest;
}

/* parse_flag - a flag argument: *bit_r for a system flag, 0 for a valid
 * keyword; -1 for \Recent, an unknown "\" flag or a bad atom. */
static int parse_flag(const struct imap_arg *a, uint32_t *bit_r)
{
    *bit_r = 0;
    if (a->type != IMAP_ARG_ATOM)
        return -1;
    if (a->len > 0 && a->str[0] == '\\') {
        for (size_t i = 0; i < IMAP_N_SYSTEM_FLAGS; i++) {
            if (strlen(imap_system_flags[i].name) == a->len &&
                strncasecmp(a->str, imap_system_flags[i].name, a->len) == 0) {
                *bit_r = imap_system_flags[i].bit;
                return 0;
            }
        }
        return -1;
    }
    return imap_keyword_valid(a->str, a->len) ? 0 : -1;
}

/* put_flag_args - every flag of list[0..n) as F_FLAG (system flags by their
 * canonical name). -1 with *bad_r naming the first bad one. */
static int put_flag_args(struct mx_frame *frame, const struct imap_arg *list, size_t n,
                         const struct imap_arg **bad_r)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bit;
        if (parse_flag(&list[i], &bit) < 0) {
            *bad_r = &list[i];
            return -1;
        }
        if (bit) {
            for (size_t k = 0; k < IMAP_N_SYSTEM_FLAGS; k++)
                if (imap_system_flags[k].bit == bit)
                    mx_frame_put_str(frame, F_FLAG, imap_system_flags[k].name);
        } else {
            mx_frame_put_str(frame, F_FLAG, list[i].str);
        }
    }
    return 0;
}

static bool arg_is_atom(const struct imap_arg *a, const char *word)
{
    return a->type == IMAP_ARG_ATOM && strlen(word) == a->len && strncasecmp(a->str, word, a->len) == 0;
}

/* uid_list_of_set - the UIDs of a (resolved) set as an array. */
static uint32_t *uid_list_of_set(const struct imap_seqset *set, size_t *n_r)
{
    uint64_t count = imap_seqset_count(set);
    uint32_t *uids = mx_reallocarray(NULL, count ? count : 1, sizeof *uids);
    struct imap_seqset_iter it;
    imap_seqset_iter_init(&it);
    size_t n = 0;
    uint32_t uid;
    while (n < count && imap_seqset_iter_next(set, &it, &uid))
        uids[n++] = uid;
    *n_r = n;
    return uids;
}

/* reply_uid_list - a UID set field of a reply as an ascending array (NULL,
 * 0 when the field is absent or empty); -1 when malformed. */
static int reply_uid_list(const struct mx_frame_view *reply, enum mx_field_tag tag, uint32_t **uids_r,
                          size_t *n_r)
{
    *uids_r = NULL;
    *n_r = 0;
    char *text = NULL;
    if (mx_frame_get_text(reply, tag, MX_WIRE_FRAME_MAX, &text) < 0)
        return 0;
    int rc = 0;
    if (*text != '\0')
        rc = imap_uids_parse(text, uids_r, n_r);
    free(text);
    return rc;
}

static int uid_compare(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ==== FETCH ============================================================== */

static void fetch_next_batch(struct imap_session *s);
static void fetch_next_message(struct imap_session *s);
static void fetch_next_item(struct imap_session *s);
static void body_read_next(struct imap_session *s);

/* section_text - the store's F_SECTION for parts + suffix ("1.2.HEADER"). */
static char *section_text(const struct imap_fetch_section *sec, const char *suffix)
{
    struct imap_bytes b = { 0 };
    for (size_t i = 0; i < sec->n_parts; i++)
        imap_bytes_printf(&b, "%s%" PRIu32, i ? "." : "", sec->parts[i]);
    if (suffix && *suffix)
        imap_bytes_printf(&b, "%s%s", sec->n_parts ? "." : "", suffix);
    if (b.data == NULL)
        return mx_strdup("");
    return b.data;
}

static bool item_is_body(const struct imap_fetch_item *it)
{
    switch (it->kind) {
    case IMAP_FETCH_RFC822:
    case IMAP_FETCH_RFC822_HEADER:
    case IMAP_FETCH_RFC822_TEXT:
    case IMAP_FETCH_BODY_SECTION:
    case IMAP_FETCH_BINARY:
    case IMAP_FETCH_BINARY_SIZE:
        return true;
    default:
        return false;
    }
}

/* body_read_start - read section from offset (length octets, UINT64_MAX =
 * to the end) of the current message into op->br.data; continues in the
 * target's handler. */
static void body_read_start(struct imap_session *s, enum body_target target, char *section,
                            uint64_t offset, uint64_t length)
{
    struct message_op *op = message_op_of(s);
    free(op->br.section);
    imap_bytes_reset(&op->br.data);
    op->br.target = target;
    op->br.section = section;
    op->br.offset = offset;
    op->br.remaining = length;
    body_read_next(s);
}

static uint32_t current_uid(const struct message_op *op)
{
    return op->msgs[op->next_msg].uid;
}

static void body_read_continue(struct imap_session *s);
static void fetch_item_data_done(struct imap_session *s);
static void fetch_mime_done(struct imap_session *s);
static void scan_body_done(struct imap_session *s);
static void message_vanished(struct imap_session *s);
static void scan_fail_searchres(struct imap_session *s);

static void on_body_reply(void *ctx, enum mx_status status, const char *text,
                          const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status == MX_STATUS_NOT_FOUND) {
        /* expunged by someone else since our view was made: RFC 9051
         * lets FETCH skip it, and it matches no SEARCH */
        message_vanished(s);
        return;
    }
    if (status != MX_STATUS_OK) {
        scan_fail_searchres(s);
        imap_done_store_error(s, status, text);
        return;
    }
    const uint8_t *data;
    size_t len;
    if (reply == NULL || mx_frame_get_bytes(reply, F_BODY, &data, &len) < 0) {
        scan_fail_searchres(s);
        server_bug(s, "body reply without F_BODY", op->br.section);
        return;
    }
    uint64_t asked = op->br.remaining < BODY_CHUNK ? op->br.remaining : BODY_CHUNK;
    if (len > asked) {
        scan_fail_searchres(s);
        server_bug(s, "body reply longer than asked", op->br.section);
        return;
    }
    if (op->br.data.len + len > BODY_ITEM_MAX) {
        imap_done_no(s, "[LIMIT] message section too large to send");
        return;
    }
    imap_bytes_add(&op->br.data, data, len);
    op->br.offset += len;
    if (op->br.remaining != UINT64_MAX)
        op->br.remaining -= len;
    if (len < asked || op->br.remaining == 0)
        body_read_continue(s);
    else
        body_read_next(s);
}

static void body_read_next(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    uint64_t want = op->br.remaining < BODY_CHUNK ? op->br.remaining : BODY_CHUNK;
    struct mx_frame frame;
    mailbox_request(s, &frame, MSG_ANY_STORE_MESSAGE_BODY);
    mx_frame_put_u32(&frame, F_UID, current_uid(op));
    mx_frame_put_str(&frame, F_SECTION, op->br.section);
    mx_frame_put_u64(&frame, F_OFFSET, op->br.offset);
    mx_frame_put_u64(&frame, F_LENGTH, want);
    (void)send_request(s, &frame, on_body_reply);
}

static void body_read_continue(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    switch (op->br.target) {
    case BODY_FOR_ITEM:
        fetch_item_data_done(s);
        break;
    case BODY_FOR_MIME:
        fetch_mime_done(s);
        break;
    case BODY_FOR_SCAN:
        scan_body_done(s);
        break;
    }
}

/* ---- FETCH: one message's response -------------------------------------- */

/* write_simple_items - the items that need no message bytes; false when
 * there were none. */
static bool write_simple_items(struct imap_session *s, const struct imap_msg_record *m)
{
    struct message_op *op = message_op_of(s);
    bool first = true;
#define SEP() do { if (!first) imap_write(s, " ", 1); first = false; } while (0)
    bool uid_written = false, flags_written = false, modseq_written = false;
    for (size_t i = 0; i < op->spec.n_items; i++) {
        if (op->spec.items[i].kind == IMAP_FETCH_UID) {
            SEP();
            imap_printf(s, "UID %" PRIu32, m->uid);
            uid_written = true;
        }
    }
    for (size_t i = 0; i < op->spec.n_items; i++) {
        const struct imap_fetch_item *it = &op->spec.items[i];
        char date[32];
        switch (it->kind) {
        case IMAP_FETCH_FLAGS:
            SEP();
            imap_printf(s, "FLAGS ");
            imap_flags_write(s, m->flags | imap_session_recent_bit(s, m->uid), m->keywords);
            flags_written = true;
            break;
        case IMAP_FETCH_INTERNALDATE:
            imap_format_internaldate(m->arrival, date);
            SEP();
            imap_printf(s, "INTERNALDATE \"%s\"", date);
            break;
        case IMAP_FETCH_RFC822_SIZE:
            SEP();
            imap_printf(s, "RFC822.SIZE %" PRIu64, m->size);
            break;
        case IMAP_FETCH_ENVELOPE:
            SEP();
            imap_printf(s, "ENVELOPE %s", m->envelope);
            break;
        case IMAP_FETCH_BODY:
            SEP();
            imap_printf(s, "BODY %s", m->body_form);
            break;
        case IMAP_FETCH_BODYSTRUCTURE:
            SEP();
            imap_printf(s, "BODYSTRUCTURE %s", m->bodystructure);
            break;
        case IMAP_FETCH_MODSEQ:
            SEP();
            imap_printf(s, "MODSEQ (%" PRIu64 ")", m->modseq);
            modseq_written = true;
            break;
        default:
            break;
        }
    }
    if (op->include_flags && !flags_written) {
        SEP();
        imap_printf(s, "FLAGS ");
        imap_flags_write(s, m->flags | imap_session_recent_bit(s, m->uid), m->keywords);
    }
    if (op->include_modseq && !modseq_written && m->have_modseq) {
        SEP();
        imap_printf(s, "MODSEQ (%" PRIu64 ")", m->modseq);
    }
    /* UID FETCH always has UID; after ENABLE QRESYNC every FETCH
     * response does (RFC 7162 3.2.4) */
    if ((s->cmd.uid || s->qresync) && !uid_written) {
        SEP();
        imap_printf(s, "UID %" PRIu32, m->uid);
    }
#undef SEP
    return !first;
}

/* check_index - the fields the simple items need are there. */
static const char *check_index(const struct message_op *op, const struct imap_msg_record *m)
{
    for (size_t i = 0; i < op->spec.n_items; i++) {
        switch (op->spec.items[i].kind) {
        case IMAP_FETCH_INTERNALDATE:
            if (!m->have_arrival)
                return "no internal date";
            break;
        case IMAP_FETCH_RFC822_SIZE:
            if (!m->have_size)
                return "no size";
            break;
        case IMAP_FETCH_ENVELOPE:
            if (m->envelope == NULL)
                return "no ENVELOPE";
            break;
        case IMAP_FETCH_BODY:
            if (m->body_form == NULL)
                return "no BODY";
            break;
        case IMAP_FETCH_BODYSTRUCTURE:
            if (m->bodystructure == NULL)
                return "no BODYSTRUCTURE";
            break;
        case IMAP_FETCH_MODSEQ:
            if (!m->have_modseq)
                return "no MODSEQ";
            break;
        default:
            break;
        }
    }
    if (op->spec.changedsince_given && !m->have_modseq)
        return "no MODSEQ";
    return NULL;
}

static void write_message_response(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    const struct imap_msg_record *m = &op->msgs[op->next_msg];
    uint32_t seq = imap_session_seq_of(s, m->uid);
    if (seq == 0)
        return; /* left the view meanwhile (cannot happen during the command) */
    imap_printf(s, "* %" PRIu32 " FETCH (", seq);
    bool wrote = write_simple_items(s, m);
    if (op->response.len) {
        if (wrote)
            imap_write(s, " ", 1);
        imap_write(s, op->response.data, op->response.len);
        s->bytes_fetched += op->response.len;
    }
    imap_write(s, ")\r\n", 3);
}

static void message_vanished(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    imap_bytes_reset(&op->response);
    op->next_msg++;
    fetch_next_message(s);
}

/* fetch_next_message - answer the batch's messages in order; body items
 * go through the store one by one. */
static void scan_next_message(struct imap_session *s);

static void on_output_wait(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fetch_next_message(arg);
}

/* output_backlogged - true (and a look again armed) while the client has
 * not read what the FETCH wrote so far. The session ends the connection
 * after its idle timeout if the client never reads; the timer dies with
 * the op then. */
static bool output_backlogged(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    if (mx_conn_output_pending(s->conn) <= OUTPUT_HIGH)
        return false;
    if (op->output_wait == NULL)
        op->output_wait = evtimer_new(s->server->base, on_output_wait, s);
    struct timeval tv = { 0, OUTPUT_POLL_MS * 1000 };
    evtimer_add(op->output_wait, &tv);
    return true;
}

static void fetch_next_message(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    if (op->scan) {
        scan_next_message(s);
        return;
    }
    while (op->next_msg < op->n_msgs) {
        if (output_backlogged(s))
            return;
        const struct imap_msg_record *m = &op->msgs[op->next_msg];
        if (imap_session_seq_of(s, m->uid) == 0 ||
            (op->spec.changedsince_given && m->modseq <= op->spec.changedsince)) {
            op->next_msg++;
            continue;
        }
        const char *missing = check_index(op, m);
        if (missing != NULL) {
            char detail[64];
            snprintf(detail, sizeof detail, "uid %" PRIu32, m->uid);
            server_bug(s, missing, detail);
            return;
        }
        if (op->has_body_items) {
            op->next_item = 0;
            imap_bytes_reset(&op->response);
            fetch_next_item(s);
            return;
        }
        write_message_response(s);
        op->next_msg++;
    }
    fetch_next_batch(s);
}

/* fetch_next_item - start the next body item of the current message, or
 * write the message's response when none is left. */
static void fetch_next_item(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    while (op->next_item < op->spec.n_items && !item_is_body(&op->spec.items[op->next_item]))
        op->next_item++;
    if (op->next_item == op->spec.n_items) {
        write_message_response(s);
        imap_bytes_reset(&op->response);
        op->next_msg++;
        fetch_next_message(s);
        return;
    }
    const struct imap_fetch_item *it = &op->spec.items[op->next_item];
    uint64_t off = it->has_partial ? it->partial_offset : 0;
    uint64_t len = it->has_partial ? it->partial_length : UINT64_MAX;
    switch (it->kind) {
    case IMAP_FETCH_RFC822:
        body_read_start(s, BODY_FOR_ITEM, mx_strdup(""), 0, UINT64_MAX);
        break;
    case IMAP_FETCH_RFC822_HEADER:
        body_read_start(s, BODY_FOR_ITEM, mx_strdup("HEADER"), 0, UINT64_MAX);
        break;
    case IMAP_FETCH_RFC822_TEXT:
        body_read_start(s, BODY_FOR_ITEM, mx_strdup("TEXT"), 0, UINT64_MAX);
        break;
    case IMAP_FETCH_BODY_SECTION: {
        const char *suffix = "";
        bool filtered = false;
        switch (it->section.kind) {
        case IMAP_SECTION_ALL:
            break;
        case IMAP_SECTION_HEADER:
            suffix = "HEADER";
            break;
        case IMAP_SECTION_HEADER_FIELDS:
        case IMAP_SECTION_HEADER_FIELDS_NOT:
            suffix = "HEADER";
            filtered = true;
            break;
        case IMAP_SECTION_TEXT:
            suffix = "TEXT";
            break;
        case IMAP_SECTION_MIME:
            suffix = "MIME";
            break;
        }
        /* a filtered header is cut to <o.l> after filtering */
        if (filtered)
            body_read_start(s, BODY_FOR_ITEM, section_text(&it->section, suffix), 0, UINT64_MAX);
        else
            body_read_start(s, BODY_FOR_ITEM, section_text(&it->section, suffix), off, len);
        break;
    }
    case IMAP_FETCH_BINARY:
    case IMAP_FETCH_BINARY_SIZE:
        if (it->section.n_parts == 0) {
            /* BINARY[]: the whole message is no single part with a CTE */
            op->cte = IMAP_CTE_IDENTITY;
            body_read_start(s, BODY_FOR_ITEM, mx_strdup(""), 0, UINT64_MAX);
        } else {
            body_read_start(s, BODY_FOR_MIME, section_text(&it->section, "MIME"), 0, UINT64_MAX);
        }
        break;
    default:
        op->next_item++;
        fetch_next_item(s);
        break;
    }
}

static void fetch_mime_done(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    const struct imap_fetch_item *it = &op->spec.items[op->next_item];
    if (op->br.data.len == 0 && it->section.n_parts == 1 && strcmp(op->br.section, "HEADER") != 0) {
        /* a single-part message has no separate MIME header for part 1:
         * its Content-Transfer-Encoding is in the message header */
        body_read_start(s, BODY_FOR_MIME, mx_strdup("HEADER"), 0, UINT64_MAX);
        return;
    }
    op->cte = imap_cte_of_header(op->br.data.data ? op->br.data.data : "", op->br.data.len);
    if (op->cte == IMAP_CTE_UNKNOWN) {
        imap_done_no(s, "[UNKNOWN-CTE] cannot decode part %s of UID %" PRIu32,
                     it->echo, op->msgs[op->next_msg].uid);
        return;
    }
    body_read_start(s, BODY_FOR_ITEM, section_text(&it->section, ""), 0, UINT64_MAX);
}

/* apply_partial - <offset.length> on data already in memory. */
static void apply_partial(const struct imap_fetch_item *it, const char **data, size_t *len)
{
    if (!it->has_partial)
        return;
    if (it->partial_offset >= *len) {
        *len = 0;
        return;
    }
    *data += it->partial_offset;
    *len -= (size_t)it->partial_offset;
    if (it->partial_length < *len)
        *len = (size_t)it->partial_length;
}

static void response_literal(struct imap_bytes *out, const char *echo, const char *data, size_t len,
                             bool literal8)
{
    imap_bytes_printf(out, "%s%s %s{%zu}\r\n", out->len ? " " : "", echo, literal8 ? "~" : "", len);
    imap_bytes_add(out, data, len);
}

static void fetch_item_data_done(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    const struct imap_fetch_item *it = &op->spec.items[op->next_item];
    const char *data = op->br.data.data ? op->br.data.data : "";
    size_t len = op->br.data.len;
    switch (it->kind) {
    case IMAP_FETCH_BODY_SECTION:
        if (it->section.kind == IMAP_SECTION_HEADER_FIELDS ||
            it->section.kind == IMAP_SECTION_HEADER_FIELDS_NOT) {
            size_t flen;
            char *filtered = imap_header_filter(data, len, it->section.fields, it->section.n_fields,
                                                it->section.kind == IMAP_SECTION_HEADER_FIELDS_NOT,
                                                &flen);
            const char *p = filtered;
            apply_partial(it, &p, &flen);
            response_literal(&op->response, it->echo, p, flen, false);
            free(filtered);
        } else {
            /* partial already applied by the store */
            response_literal(&op->response, it->echo, data, len, false);
        }
        break;
    case IMAP_FETCH_RFC822:
    case IMAP_FETCH_RFC822_HEADER:
    case IMAP_FETCH_RFC822_TEXT:
        response_literal(&op->response, it->echo, data, len, false);
        break;
    case IMAP_FETCH_BINARY:
    case IMAP_FETCH_BINARY_SIZE: {
        unsigned char *decoded = NULL;
        size_t dlen = len;
        const char *p = data;
        if (op->cte == IMAP_CTE_BASE64) {
            decoded = mx_malloc(len / 4 * 3 + 4);
            dlen = imap_base64_decode(data, len, decoded);
            p = (const char *)decoded;
        } else if (op->cte == IMAP_CTE_QUOTED_PRINTABLE) {
            decoded = mx_malloc(len + 1);
            dlen = imap_qp_decode(data, len, decoded);
            p = (const char *)decoded;
        }
        if (it->kind == IMAP_FETCH_BINARY_SIZE) {
            imap_bytes_printf(&op->response, "%s%s %zu", op->response.len ? " " : "", it->echo, dlen);
        } else {
            apply_partial(it, &p, &dlen);
            response_literal(&op->response, it->echo, p, dlen, memchr(p, '\0', dlen) != NULL);
        }
        free(decoded);
        break;
    }
    default:
        break;
    }
    imap_bytes_reset(&op->br.data);
    op->next_item++;
    fetch_next_item(s);
}

/* ---- FETCH: batches of index records ------------------------------------ */

static void fetch_finish(struct imap_session *s)
{
    finish_command(s, s->cmd.uid ? "UID FETCH completed" : "FETCH completed");
}

static void on_fetch_index(void *ctx, enum mx_status status, const char *text,
                           const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    const char *error;
    imap_msg_records_free(&op->msgs, &op->n_msgs);
    if (reply == NULL || imap_msg_records_parse(reply, &op->msgs, &op->n_msgs, &error) < 0) {
        server_bug(s, "malformed fetch result", reply ? error : "no reply");
        return;
    }
    op->next_msg = 0;
    fetch_next_message(s);
}

static void fetch_next_batch(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    imap_msg_records_free(&op->msgs, &op->n_msgs);
    struct imap_seqset batch;
    imap_seqset_init(&batch);
    uint32_t uid;
    size_t n = 0;
    while (n < FETCH_BATCH && imap_seqset_iter_next(&op->uidset, &op->batch_iter, &uid)) {
        imap_seqset_add(&batch, uid, uid);
        n++;
    }
    if (n == 0) {
        imap_seqset_free(&batch);
        fetch_finish(s);
        return;
    }
    char *text = imap_seqset_format(&batch);
    imap_seqset_free(&batch);
    struct mx_frame frame;
    mailbox_request(s, &frame, MSG_ANY_STORE_MESSAGE_FETCH);
    mx_frame_put_str(&frame, F_UID_SET, text);
    mx_frame_put_u32(&frame, F_FETCH_ITEMS, op->store_items);
    free(text);
    (void)send_request(s, &frame, on_fetch_index);
}

static void fetch_start_index(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    imap_seqset_iter_init(&op->batch_iter);
    fetch_next_batch(s);
}

static void on_fetch_seen(void *ctx, enum mx_status status, const char *text,
                          const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    struct imap_msg_record *msgs;
    size_t n;
    const char *error;
    if (reply == NULL || imap_msg_records_parse(reply, &msgs, &n, &error) < 0) {
        server_bug(s, "malformed STORE result", reply ? error : "no reply");
        return;
    }
    /* the FETCH responses that follow carry the new FLAGS */
    modseq_advance(s, op->modseq_before, msgs, n, reply);
    imap_msg_records_free(&msgs, &n);
    fetch_start_index(s);
}

/* fetch_set_seen - RFC 9051 6.4.5: a non-PEEK body item sets \Seen; done
 * first so the FLAGS in the responses already show it. */
static void fetch_set_seen(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    char *text = imap_seqset_format(&op->uidset);
    struct mx_frame frame;
    mailbox_request(s, &frame, MSG_ANY_STORE_FLAGS_STORE);
    mx_frame_put_str(&frame, F_UID_SET, text);
    mx_frame_put_u32(&frame, F_FLAG_MODE, 1);
    mx_frame_put_str(&frame, F_FLAG, "\\Seen");
    free(text);
    op->modseq_before = s->sel.highestmodseq;
    (void)send_request(s, &frame, on_fetch_seen);
}

static void fetch_after_vanished(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    if (imap_seqset_count(&op->uidset) == 0)
        fetch_finish(s);
    else if (op->include_flags)
        fetch_set_seen(s);
    else
        fetch_start_index(s);
}

/* on_fetch_vanished - RFC 7162 3.2.6: UIDs of the requested set expunged
 * since CHANGEDSINCE, as one "* VANISHED (EARLIER)". */
static void on_fetch_vanished(void *ctx, enum mx_status status, const char *text,
                              const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    uint32_t *vanished;
    size_t n;
    if (reply == NULL || reply_uid_list(reply, F_VANISHED_SET, &vanished, &n) < 0) {
        server_bug(s, "malformed F_VANISHED_SET", "");
        return;
    }
    /* the requested UIDs as the client sent them: expunged ones are not in
     * the view, so op->uidset cannot tell */
    struct imap_seqset asked;
    const char *err;
    const struct imap_arg *set_arg = &s->cmd.args[0];
    size_t kept = 0;
    if (imap_seqset_parse(set_arg->str, set_arg->len, &asked, &err) == 0) {
        imap_seqset_resolve(&asked, s->sel.uidnext > 1 ? s->sel.uidnext - 1 : 0);
        for (size_t i = 0; i < n; i++)
            if (imap_seqset_contains(&asked, vanished[i]) ||
                (asked.searchres && s->searchres &&
                 bsearch(&vanished[i], s->searchres, s->searchres_count, sizeof *s->searchres,
                         uid_compare) != NULL))
                vanished[kept++] = vanished[i];
        imap_seqset_free(&asked);
    }
    if (kept > 0) {
        char *list = imap_uids_format(vanished, kept);
        imap_printf(s, "* VANISHED (EARLIER) %s\r\n", list);
        free(list);
    }
    free(vanished);
    fetch_after_vanished(s);
}

void imap_cmd_fetch(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    if (cmd->n_args < 2) {
        imap_done_bad(s, "FETCH needs a sequence set and data items");
        return;
    }
    struct message_op *op = message_op_new(s);
    const char *err;
    if (imap_fetch_att_parse(&cmd->args[1], cmd->n_args - 1, cmd->uid, &op->spec, &err) < 0) {
        imap_done_bad(s, "%s", err);
        return;
    }
    op->spec_parsed = true;
    if (op->spec.vanished && !s->qresync) {
        /* RFC 7162 3.2.6: VANISHED only after ENABLE QRESYNC */
        imap_done_bad(s, "VANISHED needs ENABLE QRESYNC first");
        return;
    }
    if (imap_session_uidset(s, &cmd->args[0], cmd->uid, &op->uidset) < 0)
        return;
    bool modseq_item = false;
    op->store_items = 0;
    for (size_t i = 0; i < op->spec.n_items; i++) {
        const struct imap_fetch_item *it = &op->spec.items[i];
        switch (it->kind) {
        case IMAP_FETCH_FLAGS:
            op->store_items |= MX_FETCH_FLAGS;
            break;
        case IMAP_FETCH_INTERNALDATE:
            op->store_items |= MX_FETCH_INTERNALDATE;
            break;
        case IMAP_FETCH_RFC822_SIZE:
            op->store_items |= MX_FETCH_SIZE;
            break;
        case IMAP_FETCH_ENVELOPE:
            op->store_items |= MX_FETCH_ENVELOPE;
            break;
        case IMAP_FETCH_BODY:
            op->store_items |= MX_FETCH_BODY_FORM;
            break;
        case IMAP_FETCH_BODYSTRUCTURE:
            op->store_items |= MX_FETCH_BODYSTRUCTURE;
            break;
        case IMAP_FETCH_MODSEQ:
            op->store_items |= MX_FETCH_MODSEQ;
            modseq_item = true;
            break;
        default:
            if (item_is_body(it))
                op->has_body_items = true;
            break;
        }
    }
    if (modseq_item || op->spec.changedsince_given)
        imap_session_enable_condstore(s);
    if (op->spec.changedsince_given)
        op->store_items |= MX_FETCH_MODSEQ;
    /* \Seen is set only where the client may change flags (RFC 9051 6.4.5:
     * not after EXAMINE) */
    op->include_flags = op->spec.sets_seen && !s->sel.readonly;
    if (op->include_flags)
        op->store_items |= MX_FETCH_FLAGS;
    /* RFC 7162 3.2: with CONDSTORE on, flag changes carry MODSEQ */
    op->include_modseq = op->include_flags && s->condstore;
    if (op->include_modseq)
        op->store_items |= MX_FETCH_MODSEQ;
    if (op->store_items == 0)
        op->store_items = MX_FETCH_FLAGS; /* 0 would mean "everything" */

    if (op->spec.vanished) {
        struct mx_frame frame;
        mailbox_request(s, &frame, MSG_ANY_STORE_CHANGES_SINCE);
        mx_frame_put_u64(&frame, F_MODSEQ, op->spec.changedsince);
        (void)send_request(s, &frame, on_fetch_vanished);
        return;
    }
    if (imap_seqset_count(&op->uidset) == 0) {
        fetch_finish(s);
        return;
    }
    fetch_after_vanished(s);
}

/* ==== STORE ============================================================== */

static void on_store_reply(void *ctx, enum mx_status status, const char *text,
                           const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    const char *error;
    uint32_t *modified = NULL;
    size_t n_modified = 0;
    if (reply == NULL || imap_msg_records_parse(reply, &op->msgs, &op->n_msgs, &error) < 0) {
        server_bug(s, "malformed STORE result", reply ? error : "no reply");
        return;
    }
    if (reply_uid_list(reply, F_MODIFIED_SET, &modified, &n_modified) < 0) {
        server_bug(s, "malformed F_MODIFIED_SET", "");
        return;
    }
    modseq_advance(s, op->modseq_before, op->msgs, op->n_msgs, reply);
    /* RFC 7162 3.2: with CONDSTORE on, every changed message is reported
     * with its MODSEQ, even for .SILENT */
    bool with_modseq = s->condstore;
    for (size_t i = 0; i < op->n_msgs; i++) {
        const struct imap_msg_record *m = &op->msgs[i];
        uint32_t seq = imap_session_seq_of(s, m->uid);
        if (seq == 0)
            continue;
        if (n_modified && bsearch(&m->uid, modified, n_modified, sizeof *modified, uid_compare))
            continue; /* not stored: UNCHANGEDSINCE failed */
        if (op->silent && !with_modseq)
            continue;
        imap_printf(s, "* %" PRIu32 " FETCH (", seq);
        const char *sep = "";
        if (!op->silent) {
            imap_printf(s, "FLAGS ");
            imap_flags_write(s, m->flags | imap_session_recent_bit(s, m->uid), m->keywords);
            sep = " ";
        }
        if (s->cmd.uid || s->qresync) {
            imap_printf(s, "%sUID %" PRIu32, sep, m->uid);
            sep = " ";
        }
        if (with_modseq && m->have_modseq)
            imap_printf(s, "%sMODSEQ (%" PRIu64 ")", sep, m->modseq);
        imap_write(s, ")\r\n", 3);
    }
    char *ok;
    if (n_modified) {
        /* STORE reports message numbers, UID STORE UIDs (RFC 7162 3.1.3) */
        size_t k = 0;
        for (size_t i = 0; i < n_modified; i++) {
            uint32_t n = s->cmd.uid ? modified[i] : imap_session_seq_of(s, modified[i]);
            if (n)
                modified[k++] = n;
        }
        char *list = imap_uids_format(modified, k);
        ok = mx_asprintf("[MODIFIED %s] conditional STORE failed for some messages", list);
        free(list);
    } else {
        ok = mx_strdup(s->cmd.uid ? "UID STORE completed" : "STORE completed");
    }
    free(modified);
    finish_command(s, ok);
    free(ok);
}

/* parse_store_item - "FLAGS", "+FLAGS.SILENT", ...: mode 0 replace, 1 add,
 * 2 remove. */
static int parse_store_item(const struct imap_arg *a, uint32_t *mode_r, bool *silent_r)
{
    if (a->type != IMAP_ARG_ATOM)
        return -1;
    const char *p = a->str;
    size_t len = a->len;
    *mode_r = 0;
    if (len > 0 && (p[0] == '+' || p[0] == '-')) {
        *mode_r = p[0] == '+' ? 1 : 2;
        p++;
        len--;
    }
    *silent_r = false;
    if (len == 12 && strncasecmp(p, "FLAGS.SILENT", 12) == 0)
        *silent_r = true;
    else if (!(len == 5 && strncasecmp(p, "FLAGS", 5) == 0))
        return -1;
    return 0;
}

void imap_cmd_store(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    struct message_op *op = message_op_new(s);
    if (cmd->n_args < 3) {
        imap_done_bad(s, "STORE needs a sequence set, a data item and flags");
        return;
    }
    size_t next = 1;
    if (cmd->args[1].type == IMAP_ARG_LIST) {
        /* RFC 7162: "(UNCHANGEDSINCE modseq)" */
        const struct imap_arg *mods = &cmd->args[1];
        for (size_t i = 0; i < mods->n_list; i++) {
            char *end;
            if (!arg_is_atom(&mods->list[i], "UNCHANGEDSINCE") || op->unchangedsince_given) {
                imap_done_bad(s, "unknown or repeated STORE modifier");
                return;
            }
            if (i + 1 < mods->n_list && mods->list[i + 1].type == IMAP_ARG_ATOM &&
                mods->list[i + 1].str[0] >= '0' && mods->list[i + 1].str[0] <= '9') {
                errno = 0;
                op->unchangedsince = strtoull(mods->list[i + 1].str, &end, 10);
                if (errno != 0 || *end != '\0' || op->unchangedsince > INT64_MAX) {
                    imap_done_bad(s, "invalid UNCHANGEDSINCE value");
                    return;
                }
                op->unchangedsince_given = true;
                i++;
            } else {
                imap_done_bad(s, "invalid UNCHANGEDSINCE value");
                return;
            }
        }
        if (mods->n_list == 0) {
            imap_done_bad(s, "empty STORE modifier list");
            return;
        }
        next = 2;
    }
    uint32_t mode;
    if (next >= cmd->n_args || parse_store_item(&cmd->args[next], &mode, &op->silent) < 0) {
        imap_done_bad(s, "STORE data item must be FLAGS, +FLAGS or -FLAGS [.SILENT]");
        return;
    }
    next++;
    const struct imap_arg *flags;
    size_t n_flags;
    if (next < cmd->n_args && cmd->args[next].type == IMAP_ARG_LIST) {
        if (next + 1 != cmd->n_args) {
            imap_done_bad(s, "unexpected arguments after the flag list");
            return;
        }
        flags = cmd->args[next].list;
        n_flags = cmd->args[next].n_list;
    } else if (next < cmd->n_args) {
        flags = &cmd->args[next];
        n_flags = cmd->n_args - next;
    } else {
        imap_done_bad(s, "STORE needs flags");
        return;
    }
    if (s->sel.readonly) {
        imap_done_no(s, "[READ-ONLY] the mailbox is read-only (EXAMINE)");
        return;
    }
    if (imap_session_uidset(s, &cmd->args[0], cmd->uid, &op->uidset) < 0)
        return;
    if (op->unchangedsince_given)
        imap_session_enable_condstore(s);
    struct mx_frame frame;
    mailbox_request(s, &frame, MSG_ANY_STORE_FLAGS_STORE);
    const struct imap_arg *bad;
    if (put_flag_args(&frame, flags, n_flags, &bad) < 0) {
        mx_frame_free(&frame);
        imap_done_bad(s, "invalid flag %.*s", (int)(bad->len > 64 ? 64 : bad->len),
                      imap_arg_is_string(bad) ? bad->str : "");
        return;
    }
    uint64_t count = imap_seqset_count(&op->uidset);
    if (count == 0 || (op->unchangedsince_given && op->unchangedsince == 0)) {
        mx_frame_free(&frame);
        if (count == 0) {
            finish_command(s, cmd->uid ? "UID STORE completed" : "STORE completed");
            return;
        }
        /* RFC 7162 3.1.3: every message has a mod-sequence > 0, so
         * UNCHANGEDSINCE 0 fails for all of them without asking */
        size_t n;
        uint32_t *uids = uid_list_of_set(&op->uidset, &n);
        for (size_t i = 0; !cmd->uid && i < n; i++)
            uids[i] = imap_session_seq_of(s, uids[i]);
        char *list = imap_uids_format(uids, n);
        free(uids);
        char *ok = mx_asprintf("[MODIFIED %s] conditional STORE failed", list);
        free(list);
        finish_command(s, ok);
        free(ok);
        return;
    }
    char *text = imap_seqset_format(&op->uidset);
    mx_frame_put_str(&frame, F_UID_SET, text);
    free(text);
    mx_frame_put_u32(&frame, F_FLAG_MODE, mode);
    if (op->unchangedsince_given)
        mx_frame_put_u64(&frame, F_UNCHANGEDSINCE, op->unchangedsince);
    op->modseq_before = s->sel.highestmodseq;
    (void)send_request(s, &frame, on_store_reply);
}

/* ==== COPY / MOVE ======================================================== */

static void on_copy_reply(void *ctx, enum mx_status status, const char *text,
                          const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status == MX_STATUS_NOT_FOUND) {
        /* the source is selected and known to exist: it is the destination */
        imap_done_no(s, "[TRYCREATE] the destination mailbox does not exist");
        return;
    }
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    uint32_t uidvalidity;
    uint32_t *src = NULL, *dst = NULL;
    size_t n_src = 0, n_dst = 0;
    if (reply == NULL || mx_frame_get_u32(reply, F_UIDVALIDITY, &uidvalidity) < 0 ||
        reply_uid_list(reply, F_UID_SET, &src, &n_src) < 0 ||
        reply_uid_list(reply, F_UID_SET_NEW, &dst, &n_dst) < 0 || n_src != n_dst) {
        free(src);
        free(dst);
        server_bug(s, "malformed COPY result", "F_UIDVALIDITY / F_UID_SET / F_UID_SET_NEW");
        return;
    }
    /* COPYUID (RFC 4315): the store lists source and destination UIDs in
     * the same order, so the two sets pair up */
    char *copyuid = NULL;
    if (n_src > 0) {
        char *a = imap_uids_format(src, n_src), *b = imap_uids_format(dst, n_dst);
        copyuid = mx_asprintf("[COPYUID %" PRIu32 " %s %s] ", uidvalidity, a, b);
        free(a);
        free(b);
    }
    if (op->move) {
        if (copyuid)
            imap_printf(s, "* OK %smoved\r\n", copyuid);
        /* the moved messages leave this mailbox now (RFC 6851 3.3) */
        size_t k = 0;
        for (size_t i = 0; i < n_src; i++)
            if (imap_session_seq_of(s, src[i]) != 0)
                src[k++] = src[i];
        if (k > 1)
            qsort(src, k, sizeof *src, uid_compare);
        if (k > 0)
            imap_view_expunge_uids(s, src, k);
        free(src);
        free(dst);
        free(copyuid);
        finish_expunging(s, s->cmd.uid ? "UID MOVE completed" : "MOVE completed");
        return;
    }
    char *ok = mx_asprintf("%s%s", copyuid ? copyuid : "",
                           s->cmd.uid ? "UID COPY completed" : "COPY completed");
    free(src);
    free(dst);
    free(copyuid);
    /* RFC 9051 7.5.1: COPY (by number) may not carry EXPUNGE responses */
    finish_command(s, ok);
    free(ok);
}

static void copy_or_move(struct imap_session *s, bool move)
{
    const struct imap_command *cmd = &s->cmd;
    struct message_op *op = message_op_new(s);
    op->move = move;
    if (cmd->n_args != 2) {
        imap_done_bad(s, "%s needs a sequence set and a mailbox", move ? "MOVE" : "COPY");
        return;
    }
    if (move && s->sel.readonly) {
        imap_done_no(s, "[READ-ONLY] the mailbox is read-only (EXAMINE)");
        return;
    }
    const char *error = NULL;
    char *dest = imap_arg_mailbox(s, &cmd->args[1], &error);
    if (dest == NULL) {
        imap_done_no(s, "%s", error ? error : "invalid mailbox name");
        return;
    }
    if (imap_session_uidset(s, &cmd->args[0], cmd->uid, &op->uidset) < 0) {
        free(dest);
        return;
    }
    if (imap_seqset_count(&op->uidset) == 0) {
        free(dest);
        finish_command(s, move ? "MOVE completed (no messages)" : "COPY completed (no messages)");
        return;
    }
    char *text = imap_seqset_format(&op->uidset);
    struct mx_frame frame;
    mailbox_request(s, &frame, MSG_ANY_STORE_MESSAGE_COPY);
    mx_frame_put_str(&frame, F_UID_SET, text);
    mx_frame_put_str(&frame, F_MAILBOX_NEW, dest);
    mx_frame_put_u32(&frame, F_MOVE, move ? 1 : 0);
    free(text);
    free(dest);
    (void)send_request(s, &frame, on_copy_reply);
}

void imap_cmd_copy(struct imap_session *s)
{
    copy_or_move(s, false);
}

void imap_cmd_move(struct imap_session *s)
{
    copy_or_move(s, true);
}

/* ==== EXPUNGE / UID EXPUNGE ============================================== */

static void on_expunge_reply(void *ctx, enum mx_status status, const char *text,
                             const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    uint32_t *gone;
    size_t n;
    if (reply == NULL || reply_uid_list(reply, F_UID_SET, &gone, &n) < 0) {
        server_bug(s, "malformed EXPUNGE result", "F_UID_SET");
        return;
    }
    /* messages that arrived after our view was made are not ours to
     * report: the store removed them, the view never had them */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (imap_session_seq_of(s, gone[i]) != 0)
            gone[k++] = gone[i];
    if (k > 0)
        imap_view_expunge_uids(s, gone, k);
    free(gone);
    /* only when every expunged message was in the view (and so was
     * reported) may the view's HIGHESTMODSEQ cover them all */
    if (k == n)
        expunge_modseq_advance(s, message_op_of(s)->modseq_before, n, reply);
    finish_expunging(s, s->cmd.uid ? "UID EXPUNGE completed" : "EXPUNGE completed");
}

void imap_cmd_expunge(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    struct message_op *op = message_op_new(s);
    if (cmd->n_args != (cmd->uid ? 1u : 0u)) {
        imap_done_bad(s, cmd->uid ? "UID EXPUNGE needs a UID set" : "EXPUNGE takes no arguments");
        return;
    }
    if (s->sel.readonly) {
        imap_done_no(s, "[READ-ONLY] the mailbox is read-only (EXAMINE)");
        return;
    }
    struct mx_frame frame;
    if (cmd->uid) {
        if (imap_session_uidset(s, &cmd->args[0], true, &op->uidset) < 0)
            return;
        if (imap_seqset_count(&op->uidset) == 0) {
            finish_expunging(s, "UID EXPUNGE completed");
            return;
        }
        char *text = imap_seqset_format(&op->uidset);
        mailbox_request(s, &frame, MSG_ANY_STORE_MESSAGE_EXPUNGE);
        mx_frame_put_str(&frame, F_UID_SET, text);
        free(text);
    } else {
        mailbox_request(s, &frame, MSG_ANY_STORE_MESSAGE_EXPUNGE);
    }
    op->modseq_before = s->sel.highestmodseq;
    (void)send_request(s, &frame, on_expunge_reply);
}

/* ==== APPEND ============================================================= */

static void append_finish(struct imap_session *s)
{
    finish_ok(s);
}

static void on_append_reply(void *ctx, enum mx_status status, const char *text,
                            const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status == MX_STATUS_NOT_FOUND) {
        imap_done_no(s, "[TRYCREATE] the mailbox does not exist");
        return;
    }
    if (status == MX_STATUS_OVER_QUOTA) {
        imap_done_no(s, "[OVERQUOTA] the mailbox is over its quota");
        return;
    }
    if (status != MX_STATUS_OK && status != MX_STATUS_DUPLICATE) {
        imap_done_store_error(s, status, text);
        return;
    }
    uint32_t uidvalidity, uid;
    if (reply == NULL || mx_frame_get_u32(reply, F_UIDVALIDITY, &uidvalidity) < 0 ||
        mx_frame_get_u32(reply, F_UID, &uid) < 0) {
        server_bug(s, "malformed APPEND result", "F_UIDVALIDITY / F_UID");
        return;
    }
    op->ok_text = mx_asprintf("[APPENDUID %" PRIu32 " %" PRIu32 "] APPEND completed", uidvalidity, uid);
    /* the new message is announced (EXISTS) before the tagged OK when it
     * went into the selected mailbox (the change event may come later) */
    if (op->append_to_selected)
        imap_session_sync(s, true, append_finish);
    else
        append_finish(s);
}

void imap_cmd_append(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    (void)message_op_new(s);
    if (cmd->n_args < 2) {
        imap_done_bad(s, "APPEND needs a mailbox and a message");
        return;
    }
    size_t i = 1;
    const struct imap_arg *flags = NULL;
    const struct imap_arg *date = NULL;
    if (i < cmd->n_args && cmd->args[i].type == IMAP_ARG_LIST)
        flags = &cmd->args[i++];
    if (i < cmd->n_args && cmd->args[i].type == IMAP_ARG_QUOTED)
        date = &cmd->args[i++];
    const struct imap_arg *message = NULL;
    if (i + 1 < cmd->n_args && arg_is_atom(&cmd->args[i], "UTF8")) {
        /* RFC 6855 4: "UTF8 (~{n}...)", only after ENABLE UTF8=ACCEPT */
        const struct imap_arg *list = &cmd->args[i + 1];
        if (!s->utf8_accept || list->type != IMAP_ARG_LIST || list->n_list != 1 ||
            list->list[0].type != IMAP_ARG_LITERAL8) {
            imap_done_bad(s, "APPEND UTF8 needs ENABLE UTF8=ACCEPT and (literal8)");
            return;
        }
        message = &list->list[0];
        i += 2;
    } else if (i < cmd->n_args && (cmd->args[i].type == IMAP_ARG_LITERAL ||
                                   cmd->args[i].type == IMAP_ARG_LITERAL8)) {
        message = &cmd->args[i++];
    } else {
        imap_done_bad(s, "APPEND: expected [(flags)] [\"date-time\"] and a literal message");
        return;
    }
    if (i != cmd->n_args) {
        /* MULTIAPPEND (RFC 3502) must be all or nothing, which one store
         * request per message cannot promise: not advertised, refused */
        imap_done_bad(s, "APPEND takes one message (MULTIAPPEND is not supported)");
        return;
    }
    int64_t arrival_ms = (int64_t)now_ms();
    if (date != NULL && imap_parse_datetime(date->str, date->len, &arrival_ms) < 0) {
        imap_done_bad(s, "invalid date-time (expected \"dd-Mon-yyyy hh:mm:ss +zzzz\")");
        return;
    }
    if (arrival_ms < 0)
        arrival_ms = 0; /* before 1970: the store counts ms since the epoch */
    if (message->len == 0) {
        imap_done_no(s, "cannot append an empty message");
        return;
    }
    if (message->len > MX_WIRE_FRAME_MAX - APPEND_OVERHEAD) {
        imap_done_no(s, "[TOOBIG] the message is larger than the mailbox server accepts");
        return;
    }
    if (message->type == IMAP_ARG_LITERAL && memchr(message->str, '\0', message->len) != NULL) {
        /* RFC 3516 4.2: NUL only in literal8 */
        imap_done_no(s, "message contains NUL; send it as literal8 (~{n})");
        return;
    }
    const char *error = NULL;
    char *mailbox = imap_arg_mailbox(s, &cmd->args[0], &error);
    if (mailbox == NULL) {
        imap_done_no(s, "%s", error ? error : "invalid mailbox name");
        return;
    }
    struct message_op *op = message_op_of(s);
    op->append_to_selected = s->state == IMAP_STATE_SELECTED && strcmp(mailbox, s->sel.name) == 0;
    struct mx_frame frame;
    imapd_store_frame(&frame, MSG_ANY_STORE_APPEND, s->user, mailbox);
    free(mailbox);
    const struct imap_arg *bad;
    if (flags && put_flag_args(&frame, flags->list, flags->n_list, &bad) < 0) {
        mx_frame_free(&frame);
        imap_done_bad(s, "invalid flag %.*s", (int)(bad->len > 64 ? 64 : bad->len),
                      imap_arg_is_string(bad) ? bad->str : "");
        return;
    }
    mx_frame_put_u64(&frame, F_ARRIVAL, (uint64_t)arrival_ms);
    mx_frame_put_u32(&frame, F_CREATE, 0);
    /* the directory's quota, enforced by the store as for delivery */
    mx_frame_put_u64(&frame, F_QUOTA_BYTES, s->identity.quota_bytes);
    mx_frame_put_u64(&frame, F_QUOTA_COUNT, s->identity.quota_count);
    mx_frame_put_bytes(&frame, F_BODY, message->str, message->len);
    (void)send_request(s, &frame, on_append_reply);
}

/* ==== SEARCH / SORT / THREAD ============================================= */

/* The scan: index data of every message of the view in batches, then (only
 * when the program or the sort needs it) each message's header or whole
 * text, one at a time; every message is matched as soon as its data is
 * there and only the matches are kept. */

static void scan_next_batch(struct imap_session *s);

/* scan_fail_searchres - no-op unless a SEARCH ... SAVE is failing. */
static void scan_fail_searchres(struct imap_session *s)
{
    /* RFC 5182 2.1: a failed SEARCH ... SAVE leaves "$" empty */
    struct message_op *op = message_op_of(s);
    if (op && op->program && (imap_search_return_options(op->program) & IMAP_SEARCH_RETURN_SAVE)) {
        free(s->searchres);
        s->searchres = NULL;
        s->searchres_count = 0;
    }
}

static void scan_match(struct imap_session *s, const struct imap_msg_record *m, const char *raw,
                       size_t raw_len)
{
    struct message_op *op = message_op_of(s);
    uint32_t seq = imap_session_seq_of(s, m->uid);
    if (seq == 0)
        return;
    struct imap_search_view view = {
        .uids = s->sel.uids,
        .count = s->sel.count,
        .searchres = s->searchres,
        .searchres_count = s->searchres_count,
    };
    struct imap_search_msg msg = {
        .seq = seq,
        .uid = m->uid,
        .flags = m->flags | imap_session_recent_bit(s, m->uid),
        .keywords = m->keywords,
        .internaldate_ms = m->arrival,
        .size = m->size,
        .modseq = m->modseq,
        .raw = raw,
        .raw_len = raw_len,
    };
    if (!imap_search_match(op->program, &view, &msg))
        return;
    size_t i = op->n_match;
    op->match_seqs = mx_reallocarray(op->match_seqs, i + 1, sizeof *op->match_seqs);
    op->match_uids = mx_reallocarray(op->match_uids, i + 1, sizeof *op->match_uids);
    op->match_seqs[i] = seq;
    op->match_uids[i] = m->uid;
    if (m->modseq > op->match_highest_modseq)
        op->match_highest_modseq = m->modseq;
    if (op->scan != SCAN_SEARCH) {
        op->sort_msgs = mx_reallocarray(op->sort_msgs, i + 1, sizeof *op->sort_msgs);
        op->sort_headers = mx_reallocarray(op->sort_headers, i + 1, sizeof *op->sort_headers);
        struct imap_sort_msg *sm = &op->sort_msgs[i];
        memset(sm, 0, sizeof *sm);
        sm->seq = seq;
        sm->uid = m->uid;
        sm->internaldate_ms = m->arrival;
        sm->size = m->size;
        op->sort_headers[i] = NULL;
        if (raw != NULL && op->sort_needs_header) {
            size_t hlen = imap_header_end(raw, raw_len);
            if (hlen > SORT_HEADER_MAX)
                hlen = SORT_HEADER_MAX;
            op->sort_headers[i] = mx_memdup(raw, hlen ? hlen : 1);
            sm->header = op->sort_headers[i];
            sm->header_len = hlen;
        }
    }
    op->n_match = i + 1;
}

static void scan_next_message(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    while (op->next_msg < op->n_msgs) {
        const struct imap_msg_record *m = &op->msgs[op->next_msg];
        if (!m->have_arrival || !m->have_size || !m->have_modseq) {
            char detail[64];
            snprintf(detail, sizeof detail, "uid %" PRIu32, m->uid);
            scan_fail_searchres(s);
            server_bug(s, "index record without date, size or modseq", detail);
            return;
        }
        if (imap_session_seq_of(s, m->uid) == 0) {
            op->next_msg++;
            continue;
        }
        if (op->scan_need != IMAP_SEARCH_NEED_INDEX) {
            const char *section = op->scan_need == IMAP_SEARCH_NEED_HEADER ? "HEADER" : "";
            body_read_start(s, BODY_FOR_SCAN, mx_strdup(section), 0, UINT64_MAX);
            return;
        }
        scan_match(s, m, NULL, 0);
        op->next_msg++;
    }
    scan_next_batch(s);
}

static void scan_body_done(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    scan_match(s, &op->msgs[op->next_msg], op->br.data.data ? op->br.data.data : "",
               op->br.data.len);
    imap_bytes_reset(&op->br.data);
    op->next_msg++;
    scan_next_message(s);
}

/* esearch_all - RFC 9051 6.4.4: after ENABLE IMAP4rev2 a SEARCH without
 * RETURN is answered as RETURN (ALL), i.e. "* ESEARCH (TAG "t") [UID]
 * [ALL set] [MODSEQ n]" (no ALL for an empty result). */
static char *esearch_all(const char *tag, bool uid, const uint32_t *numbers, size_t n,
                         uint64_t highest_modseq)
{
    struct imap_bytes b = { 0 };
    imap_bytes_add(&b, "* ESEARCH (TAG \"", 16);
    for (const char *t = tag; *t; t++) {
        if (*t == '"' || *t == '\\')
            imap_bytes_add(&b, "\\", 1);
        imap_bytes_add(&b, t, 1);
    }
    imap_bytes_add(&b, "\")", 2);
    if (uid)
        imap_bytes_add(&b, " UID", 4);
    if (n > 0) {
        char *set = imap_uids_format(numbers, n);
        imap_bytes_printf(&b, " ALL %s", set);
        free(set);
        if (highest_modseq)
            imap_bytes_printf(&b, " MODSEQ %" PRIu64, highest_modseq);
    }
    return b.data;
}

static void scan_answer(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    const bool uid = s->cmd.uid;
    char *line = NULL;
    const char *done_text;
    switch (op->scan) {
    case SCAN_SEARCH: {
        unsigned opts = imap_search_return_options(op->program);
        if (opts & IMAP_SEARCH_RETURN_SAVE) {
            /* "$" holds UIDs whatever the command numbered by */
            uint32_t *saved = NULL;
            size_t n_saved = 0;
            if (op->n_match > 0) {
                saved = mx_memdup(op->match_uids, op->n_match * sizeof *saved);
                n_saved = imap_search_save_filter(op->program, saved, op->n_match);
            }
            free(s->searchres);
            s->searchres = saved;
            s->searchres_count = n_saved;
        }
        uint64_t highest = imap_search_uses_modseq(op->program) ? op->match_highest_modseq : 0;
        const uint32_t *numbers = uid ? op->match_uids : op->match_seqs;
        if (s->rev2 && !imap_search_has_return(op->program))
            line = esearch_all(s->cmd.tag, uid, numbers, op->n_match, highest);
        else
            line = imap_search_format_result(op->program, s->cmd.tag, uid, numbers, op->n_match,
                                             highest);
        done_text = uid ? "UID SEARCH completed" : "SEARCH completed";
        break;
    }
    case SCAN_SORT: {
        size_t *order = mx_reallocarray(NULL, op->n_match ? op->n_match : 1, sizeof *order);
        imap_sort(op->criteria, op->n_criteria, op->sort_msgs, op->n_match, order);
        line = imap_sort_format(op->sort_msgs, order, op->n_match, uid);
        free(order);
        done_text = uid ? "UID SORT completed" : "SORT completed";
        break;
    }
    case SCAN_THREAD:
    default:
        line = imap_thread(op->thread_algorithm, op->sort_msgs, op->n_match, uid);
        done_text = uid ? "UID THREAD completed" : "THREAD completed";
        break;
    }
    if (line != NULL) {
        imap_printf(s, "%s\r\n", line);
        free(line);
    }
    /* read-only: pending news are the core's (see fetch_finish) */
    imap_done_ok(s, "%s", done_text);
}

static void on_scan_index(void *ctx, enum mx_status status, const char *text,
                          const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct message_op *op = message_op_of(s);
    if (status != MX_STATUS_OK) {
        scan_fail_searchres(s);
        imap_done_store_error(s, status, text);
        return;
    }
    const char *error;
    imap_msg_records_free(&op->msgs, &op->n_msgs);
    if (reply == NULL || imap_msg_records_parse(reply, &op->msgs, &op->n_msgs, &error) < 0) {
        scan_fail_searchres(s);
        server_bug(s, "malformed fetch result", reply ? error : "no reply");
        return;
    }
    op->next_msg = 0;
    scan_next_message(s);
}

static void scan_next_batch(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    imap_msg_records_free(&op->msgs, &op->n_msgs);
    if (op->scan_pos >= op->view_count) {
        scan_answer(s);
        return;
    }
    uint32_t n = op->view_count - op->scan_pos;
    if (n > SCAN_BATCH)
        n = SCAN_BATCH;
    char *text = imap_uids_format(op->view_uids + op->scan_pos, n);
    op->scan_pos += n;
    struct mx_frame frame;
    mailbox_request(s, &frame, MSG_ANY_STORE_MESSAGE_FETCH);
    mx_frame_put_str(&frame, F_UID_SET, text);
    mx_frame_put_u32(&frame, F_FETCH_ITEMS,
                     MX_FETCH_FLAGS | MX_FETCH_MODSEQ | MX_FETCH_INTERNALDATE | MX_FETCH_SIZE);
    free(text);
    (void)send_request(s, &frame, on_scan_index);
}

static void scan_start(struct imap_session *s)
{
    struct message_op *op = message_op_of(s);
    op->scan_need = imap_search_need(op->program);
    if (op->sort_needs_header && op->scan_need == IMAP_SEARCH_NEED_INDEX)
        op->scan_need = IMAP_SEARCH_NEED_HEADER;
    if (imap_search_uses_modseq(op->program))
        imap_session_enable_condstore(s);
    /* the view cannot change while the command runs (updates wait for the
     * sync at its end), but a snapshot keeps the scan independent of it */
    op->view_count = s->sel.count;
    op->view_uids = op->view_count ? mx_memdup(s->sel.uids, op->view_count * sizeof(uint32_t))
                                   : NULL;
    op->scan_pos = 0;
    scan_next_batch(s);
}

static void search_parse_failed(struct imap_session *s, const struct imap_search_error *e)
{
    if (e->kind == IMAP_SEARCH_ERR_BADCHARSET)
        imap_done_no(s, "[BADCHARSET (UTF-8 US-ASCII)] %s", e->text);
    else
        imap_done_bad(s, "%s", e->text);
}

void imap_cmd_search(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    struct message_op *op = message_op_new(s);
    op->scan = SCAN_SEARCH;
    struct imap_search_limits limits;
    imap_search_limits_default(&limits);
    struct imap_search_error e;
    memset(&e, 0, sizeof e);
    op->program = imap_search_parse(cmd->args, cmd->n_args, true, &limits, &e);
    if (op->program == NULL) {
        search_parse_failed(s, &e);
        return;
    }
    scan_start(s);
}

void imap_cmd_sort(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    struct message_op *op = message_op_new(s);
    op->scan = SCAN_SORT;
    if (cmd->n_args < 3 || cmd->args[0].type != IMAP_ARG_LIST) {
        imap_done_bad(s, "SORT needs (criteria), a charset and search keys");
        return;
    }
    char error[160];
    int n = imap_sort_parse_criteria(&cmd->args[0], op->criteria, IMAP_SORT_MAX_CRITERIA, error,
                                     sizeof error);
    if (n < 0) {
        imap_done_bad(s, "%s", error);
        return;
    }
    op->n_criteria = (size_t)n;
    op->sort_needs_header = imap_sort_needs_header(op->criteria, op->n_criteria);
    struct imap_search_limits limits;
    imap_search_limits_default(&limits);
    struct imap_search_error e;
    memset(&e, 0, sizeof e);
    op->program = imap_search_parse_charset(&cmd->args[1], cmd->n_args - 1, &limits, &e);
    if (op->program == NULL) {
        search_parse_failed(s, &e);
        return;
    }
    scan_start(s);
}

void imap_cmd_thread(struct imap_session *s)
{
    const struct imap_command *cmd = &s->cmd;
    struct message_op *op = message_op_new(s);
    op->scan = SCAN_THREAD;
    if (cmd->n_args < 3) {
        imap_done_bad(s, "THREAD needs an algorithm, a charset and search keys");
        return;
    }
    if (!imap_thread_parse_algorithm(&cmd->args[0], &op->thread_algorithm)) {
        imap_done_bad(s, "unknown THREAD algorithm (REFERENCES or ORDEREDSUBJECT)");
        return;
    }
    op->sort_needs_header = true; /* both algorithms read Subject / References */
    struct imap_search_limits limits;
    imap_search_limits_default(&limits);
    struct imap_search_error e;
    memset(&e, 0, sizeof e);
    op->program = imap_search_parse_charset(&cmd->args[1], cmd->n_args - 1, &limits, &e);
    if (op->program == NULL) {
        search_parse_failed(s, &e);
        return;
    }
    scan_start(s);
}
