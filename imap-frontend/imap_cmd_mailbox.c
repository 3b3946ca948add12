/* imap_cmd_mailbox - the mailbox commands: SELECT/EXAMINE (CONDSTORE,
 * QRESYNC), CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST
 * (LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CHILDREN), LSUB, STATUS,
 * NAMESPACE, QUOTA, CLOSE, UNSELECT. */
#include "imap_session.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "imap_records.h"
#include "mailbox_name.h"
#include "mx_alloc.h"

/* ---- SELECT / EXAMINE ------------------------------------------------------ */

struct select_op {
    char *name;
    bool readonly;
    /* QRESYNC parameters */
    bool qresync;
    uint32_t known_uidvalidity;
    uint64_t known_modseq;
    struct imap_seqset known_uids;
};

static void select_op_free(void *p)
{
    struct select_op *op = p;
    free(op->name);
    imap_seqset_free(&op->known_uids);
    free(op);
}

static void select_finish(struct imap_session *s)
{
    struct select_op *op = s->op;
    imap_done_ok(s, "[%s] %s completed", op->readonly ? "READ-ONLY" : "READ-WRITE",
                 op->readonly ? "EXAMINE" : "SELECT");
}

/* QRESYNC: what changed since the client's modseq, as VANISHED (EARLIER)
 * and FETCH responses (RFC 7162 3.2.5.1). */
static void select_on_changes(void *ctx, enum mx_status status, const char *text,
                              const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct select_op *op = s->op;
    if (status != MX_STATUS_OK) {
        select_finish(s); /* the client resynchronises by itself */
        return;
    }
    struct imap_msg_record *recs = NULL;
    size_t n = 0;
    const char *error;
    if (imap_msg_records_parse(reply, &recs, &n, &error) < 0) {
        select_finish(s); /* the client resynchronises by itself */
        return;
    }
    char *vanished = NULL;
    uint32_t *gone = NULL;
    size_t n_gone = 0;
    (void)mx_frame_get_text(reply, F_VANISHED_SET, MX_WIRE_FRAME_MAX, &vanished);
    if (vanished && imap_uids_parse(vanished, &gone, &n_gone) == 0 && n_gone) {
        /* restricted to known-uids when the client sent them */
        size_t k = 0;
        for (size_t i = 0; i < n_gone; i++)
            if (op->known_uids.n == 0 || imap_seqset_contains(&op->known_uids, gone[i]))
                gone[k++] = gone[i];
        if (k) {
            char *set = imap_uids_format(gone, k);
            imap_printf(s, "* VANISHED (EARLIER) %s\r\n", set);
            free(set);
        }
    }
    free(gone);
    free(vanished);
    for (size_t i = 0; i < n; i++) {
        uint32_t seq = imap_session_seq_of(s, recs[i].uid);
        if (seq == 0)
            continue;
        imap_printf(s, "* %u FETCH (UID %u FLAGS ", seq, recs[i].uid);
        imap_flags_write(s, recs[i].flags, recs[i].keywords);
        imap_printf(s, " MODSEQ (%llu))\r\n", (unsigned long long)recs[i].modseq);
    }
    imap_msg_records_free(&recs, &n);
    select_finish(s);
}

static void select_after_recent(struct imap_session *s);

static void select_on_state(void *ctx, enum mx_status status, const char *text,
                            const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct select_op *op = s->op;
    if (status != MX_STATUS_OK) {
        if (status == MX_STATUS_NOT_FOUND)
            imap_done_no(s, "[NONEXISTENT] No such mailbox");
        else
            imap_done_store_error(s, status, text);
        return;
    }
    uint32_t messages = 0, uidvalidity = 0, uidnext = 0;
    uint64_t highest = 0;
    char *uidset = NULL;
    (void)mx_frame_get_u32(reply, F_MESSAGES, &messages);
    (void)mx_frame_get_u32(reply, F_UIDVALIDITY, &uidvalidity);
    (void)mx_frame_get_u32(reply, F_UIDNEXT, &uidnext);
    (void)mx_frame_get_u64(reply, F_HIGHESTMODSEQ, &highest);
    (void)mx_frame_get_text(reply, F_UID_SET, MX_WIRE_FRAME_MAX, &uidset);
    uint32_t *uids = NULL;
    size_t n = 0;
    if (uidvalidity == 0 || imap_uids_parse(uidset, &uids, &n) < 0) {
        free(uidset);
        mx_log(MX_LOG_ERR, "imap.select_reply_malformed", MX_KV("sid", s->sid),
               MX_KV("user", s->user), MX_KV("mailbox", op->name));
        imap_done_no(s, "[SERVERBUG] Malformed answer from the mailbox server");
        return;
    }
    free(uidset);
    /* the new selection */
    free(s->sel.name);
    free(s->sel.keywords);
    s->sel.name = mx_strdup(op->name);
    s->sel.readonly = op->readonly;
    s->sel.uidvalidity = uidvalidity;
    s->sel.uidnext = uidnext;
    s->sel.highestmodseq = highest;
    imap_view_set_uids(s, uids, n);
    free(uids);
    s->state = IMAP_STATE_SELECTED;
    s->changes_pending = false;
    s->deferred_expunges.n = 0;
    free(s->searchres);
    s->searchres = NULL;
    s->searchres_count = 0;
    /* keywords in use: the F_FLAG values that are not system flags */
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    struct evbuffer *kw = evbuffer_new();
    while (mx_frame_next_field(reply, &it, &tag, &value, &len) == 1) {
        if (tag != F_FLAG || len == 0 || value[0] == '\\')
            continue;
        evbuffer_add_printf(kw, "%s%.*s", evbuffer_get_length(kw) ? " " : "", (int)len,
                            (const char *)value);
    }
    evbuffer_add(kw, "", 1);
    s->sel.keywords = mx_strdup((const char *)evbuffer_pullup(kw, -1));
    evbuffer_free(kw);
    const char *kws = s->sel.keywords;
    imap_printf(s, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s)\r\n",
                *kws ? " " : "", kws);
    if (op->readonly)
        imap_printf(s, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
    else
        imap_printf(s,
                    "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s \\*)] "
                    "Flags permitted\r\n",
                    *kws ? " " : "", kws);
    imap_printf(s, "* %u EXISTS\r\n", s->sel.count);
    uint32_t first_unseen = 0;
    (void)mx_frame_get_u32(reply, F_FIRST_UNSEEN, &first_unseen);
    uint32_t unseen_seq = first_unseen ? imap_session_seq_of(s, first_unseen) : 0;
    if (unseen_seq && !s->rev2) /* RFC 3501 6.3.1; IMAP4rev2 dropped it */
        imap_printf(s, "* OK [UNSEEN %u] First unseen\r\n", unseen_seq);
    imap_printf(s, "* OK [UIDVALIDITY %u] UIDs valid\r\n", uidvalidity);
    imap_printf(s, "* OK [UIDNEXT %u] Predicted next UID\r\n", uidnext);
    imap_printf(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)highest);
    if (s->rev2) { /* RFC 9051 6.3.2 */
        imap_printf(s, "* LIST () \"/\" ");
        imap_write_mailbox(s, op->name);
        imap_printf(s, "\r\n");
    }
    (void)messages;
    /* RFC 3501 6.3.1/6.3.2: SELECT claims \Recent, EXAMINE only looks */
    imap_seqset_free(&s->recent);
    imap_seqset_init(&s->recent);
    imap_session_claim_recent(s, uidnext, !op->readonly, select_after_recent);
}

static void select_after_recent(struct imap_session *s)
{
    struct select_op *op = s->op;
    if (op->qresync && op->known_uidvalidity == s->sel.uidvalidity &&
        op->known_modseq < s->sel.highestmodseq) {
        struct mx_frame f;
        imapd_store_frame(&f, MSG_ANY_STORE_CHANGES_SINCE, s->user, op->name);
        mx_frame_put_u32(&f, F_UIDVALIDITY, s->sel.uidvalidity);
        mx_frame_put_u64(&f, F_MODSEQ, op->known_modseq);
        imap_store_send(s, &f, select_on_changes);
        return;
    }
    select_finish(s);
}

/* select_parse_params - "(CONDSTORE)" / "(QRESYNC (uidvalidity modseq
 * [known-uids [seq-match]]))". */
static int select_parse_params(struct imap_session *s, const struct imap_arg *list,
                               struct select_op *op)
{
    for (size_t i = 0; i < list->n_list; i++) {
        const struct imap_arg *a = &list->list[i];
        if (a->type == IMAP_ARG_ATOM && strcasecmp(a->str, "CONDSTORE") == 0) {
            imap_session_enable_condstore(s);
            continue;
        }
        if (a->type == IMAP_ARG_ATOM && strcasecmp(a->str, "QRESYNC") == 0 &&
            i + 1 < list->n_list && list->list[i + 1].type == IMAP_ARG_LIST) {
            if (!s->qresync) {
                imap_done_bad(s, "QRESYNC must be enabled first (ENABLE QRESYNC)");
                return -1;
            }
            const struct imap_arg *q = &list->list[++i];
            char *end;
            if (q->n_list < 2 || q->list[0].type != IMAP_ARG_ATOM || q->list[1].type != IMAP_ARG_ATOM) {
                imap_done_bad(s, "QRESYNC needs (uidvalidity modseq [known-uids])");
                return -1;
            }
            unsigned long long uv = strtoull(q->list[0].str, &end, 10);
            if (*end || uv == 0 || uv > UINT32_MAX) {
                imap_done_bad(s, "Invalid UIDVALIDITY in QRESYNC");
                return -1;
            }
            unsigned long long ms = strtoull(q->list[1].str, &end, 10);
            if (*end || ms == 0) {
                imap_done_bad(s, "Invalid modseq in QRESYNC");
                return -1;
            }
            op->qresync = true;
            op->known_uidvalidity = (uint32_t)uv;
            op->known_modseq = ms;
            if (q->n_list >= 3) {
                const char *err;
                if (q->list[2].type != IMAP_ARG_ATOM ||
                    imap_seqset_parse(q->list[2].str, q->list[2].len, &op->known_uids, &err) < 0) {
                    imap_done_bad(s, "Invalid known-uids in QRESYNC");
                    return -1;
                }
                imap_seqset_resolve(&op->known_uids, UINT32_MAX);
            }
            continue;
        }
        imap_done_bad(s, "Unknown SELECT parameter");
        return -1;
    }
    return 0;
}

static void select_common(struct imap_session *s, bool readonly)
{
    if (s->cmd.n_args < 1 || s->cmd.n_args > 2 ||
        (s->cmd.n_args == 2 && s->cmd.args[1].type != IMAP_ARG_LIST)) {
        imap_done_bad(s, "%s needs a mailbox name and optional (parameters)", s->cmd.name);
        return;
    }
    const char *error;
    char *name = imap_arg_mailbox(s, &s->cmd.args[0], &error);
    if (name == NULL) {
        imap_done_no(s, "[NONEXISTENT] %s", error);
        return;
    }
    struct select_op *op = mx_calloc(1, sizeof *op);
    op->name = name;
    op->readonly = readonly;
    imap_seqset_init(&op->known_uids);
    imap_session_set_op(s, op, select_op_free);
    if (s->cmd.n_args == 2 && select_parse_params(s, &s->cmd.args[1], op) < 0)
        return;
    if (s->state == IMAP_STATE_SELECTED) {
        /* RFC 7162 3.2.11: the old mailbox is closed from here on */
        imap_printf(s, "* OK [CLOSED] Previous mailbox closed\r\n");
        s->state = IMAP_STATE_AUTHENTICATED;
        s->sel.count = 0;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_SELECT, s->user, name);
    imap_store_send(s, &f, select_on_state);
}

void imap_cmd_select(struct imap_session *s)
{
    select_common(s, false);
}

void imap_cmd_examine(struct imap_session *s)
{
    select_common(s, true);
}

void imap_cmd_close(struct imap_session *s);

static void unselect(struct imap_session *s)
{
    s->state = IMAP_STATE_AUTHENTICATED;
    s->sel.count = 0;
    s->changes_pending = false;
    s->deferred_expunges.n = 0;
    free(s->sel.name);
    s->sel.name = NULL;
}

static void close_on_expunge(void *ctx, enum mx_status status, const char *text,
                             const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    unselect(s);
    if (status != MX_STATUS_OK && status != MX_STATUS_NOT_FOUND) {
        imap_done_store_error(s, status, text);
        return;
    }
    imap_done_ok(s, "CLOSE completed");
}

void imap_cmd_close(struct imap_session *s)
{
    if (s->cmd.n_args) {
        imap_done_bad(s, "CLOSE takes no arguments");
        return;
    }
    if (s->sel.readonly) {
        unselect(s);
        imap_done_ok(s, "CLOSE completed");
        return;
    }
    /* expunge \Deleted messages silently (no EXPUNGE responses) */
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MESSAGE_EXPUNGE, s->user, s->sel.name);
    mx_frame_put_u32(&f, F_UIDVALIDITY, s->sel.uidvalidity);
    s->changes_pending = false;
    imap_store_send(s, &f, close_on_expunge);
}

void imap_cmd_unselect(struct imap_session *s)
{
    if (s->cmd.n_args) {
        imap_done_bad(s, "UNSELECT takes no arguments");
        return;
    }
    unselect(s);
    imap_done_ok(s, "UNSELECT completed");
}

/* ---- CREATE / DELETE / RENAME / SUBSCRIBE -------------------------------- */

static void ack_done(void *ctx, enum mx_status status, const char *text,
                     const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status == MX_STATUS_OK) {
        imap_done_ok(s, "%s completed", s->cmd.name);
        return;
    }
    if (status == MX_STATUS_NOT_FOUND && strcmp(s->cmd.name, "CREATE") != 0)
        imap_done_no(s, "[NONEXISTENT] No such mailbox");
    else
        imap_done_store_error(s, status, text);
}

/* mailbox_arg - argument i as a store name (NO answered on failure). */
static char *mailbox_arg(struct imap_session *s, size_t i)
{
    const char *error;
    if (i >= s->cmd.n_args) {
        imap_done_bad(s, "%s needs a mailbox name", s->cmd.name);
        return NULL;
    }
    const struct imap_arg *a = &s->cmd.args[i];
    /* "foo/" names the same mailbox as "foo" (RFC 9051 6.3.4) */
    if (imap_arg_is_string(a) && a->len > 1 && a->str[a->len - 1] == '/' &&
        strcmp(s->cmd.name, "CREATE") == 0) {
        struct imap_arg trimmed = *a;
        trimmed.len--;
        char *copy = mx_strndup(a->str, trimmed.len);
        trimmed.str = copy;
        char *name = imap_arg_mailbox(s, &trimmed, &error);
        free(copy);
        if (name == NULL)
            imap_done_no(s, "[CANNOT] %s", error);
        return name;
    }
    char *name = imap_arg_mailbox(s, a, &error);
    if (name == NULL)
        imap_done_no(s, "[CANNOT] %s", error);
    return name;
}

/* mailbox_ack_command - CREATE / DELETE: one mailbox name, never INBOX
 * (refused with inbox_refusal), one store request acked with a status. */
static void mailbox_ack_command(struct imap_session *s, size_t max_args, enum mx_msg_type type,
                                const char *inbox_refusal)
{
    if (s->cmd.n_args < 1 || s->cmd.n_args > max_args) {
        imap_done_bad(s, "%s needs a mailbox name", s->cmd.name);
        return;
    }
    char *name = mailbox_arg(s, 0);
    if (name == NULL)
        return;
    if (mailbox_name_is_inbox(name)) {
        free(name);
        imap_done_no(s, "%s", inbox_refusal);
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, type, s->user, name);
    free(name);
    imap_store_send(s, &f, ack_done);
}

void imap_cmd_create(struct imap_session *s)
{
    /* a second argument is CREATE's optional parameter list (RFC 4466) */
    mailbox_ack_command(s, 2, MSG_ANY_STORE_MAILBOX_CREATE, "[ALREADYEXISTS] INBOX always exists");
}

void imap_cmd_delete(struct imap_session *s)
{
    mailbox_ack_command(s, 1, MSG_ANY_STORE_MAILBOX_DELETE, "[CANNOT] INBOX cannot be deleted");
}

/* RENAME INBOX: create the target, then move every message into it. */
static void rename_inbox_on_move(void *ctx, enum mx_status status, const char *text,
                                 const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status != MX_STATUS_OK && status != MX_STATUS_NOT_FOUND) {
        imap_done_store_error(s, status, text);
        return;
    }
    imap_done_ok(s, "RENAME completed: INBOX's messages moved");
}

static void rename_inbox_on_status(void *ctx, enum mx_status status, const char *text,
                                   const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    const char *to = s->op;
    uint32_t uidvalidity = 0, messages = 0;
    if (status != MX_STATUS_OK || mx_frame_get_u32(reply, F_UIDVALIDITY, &uidvalidity) < 0) {
        imap_done_store_error(s, status == MX_STATUS_OK ? MX_STATUS_TEMPFAIL : status, text);
        return;
    }
    (void)mx_frame_get_u32(reply, F_MESSAGES, &messages);
    if (messages == 0) {
        imap_done_ok(s, "RENAME completed: INBOX was empty");
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MESSAGE_COPY, s->user, "INBOX");
    mx_frame_put_u32(&f, F_UIDVALIDITY, uidvalidity);
    mx_frame_put_str(&f, F_UID_SET, "1:*");
    mx_frame_put_str(&f, F_MAILBOX_NEW, to);
    mx_frame_put_u32(&f, F_MOVE, 1);
    imap_store_send(s, &f, rename_inbox_on_move);
}

static void rename_inbox_on_create(void *ctx, enum mx_status status, const char *text,
                                   const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_STATUS, s->user, "INBOX");
    imap_store_send(s, &f, rename_inbox_on_status);
}

void imap_cmd_rename(struct imap_session *s)
{
    if (s->cmd.n_args != 2) {
        imap_done_bad(s, "RENAME needs the old and the new name");
        return;
    }
    char *from = mailbox_arg(s, 0);
    if (from == NULL)
        return;
    char *to = mailbox_arg(s, 1);
    if (to == NULL) {
        free(from);
        return;
    }
    if (mailbox_name_is_inbox(to)) {
        free(from);
        free(to);
        imap_done_no(s, "[ALREADYEXISTS] INBOX always exists");
        return;
    }
    if (mailbox_name_is_inbox(from)) {
        /* RFC 9051 6.3.6: INBOX itself stays (empty); its messages move
         * to the new mailbox, created here. Its children do not move. */
        free(from);
        imap_session_set_op(s, to, NULL);
        struct mx_frame f;
        imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_CREATE, s->user, to);
        imap_store_send(s, &f, rename_inbox_on_create);
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_RENAME, s->user, from);
    mx_frame_put_str(&f, F_MAILBOX_NEW, to);
    free(from);
    free(to);
    imap_store_send(s, &f, ack_done);
}

static void subscribe_common(struct imap_session *s, bool subscribe)
{
    if (s->cmd.n_args != 1) {
        imap_done_bad(s, "%s needs a mailbox name", s->cmd.name);
        return;
    }
    char *name = mailbox_arg(s, 0);
    if (name == NULL)
        return;
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_SUBSCRIBE, s->user, name);
    mx_frame_put_u32(&f, F_SUBSCRIBE, subscribe ? 1 : 0);
    free(name);
    imap_store_send(s, &f, ack_done);
}

void imap_cmd_subscribe(struct imap_session *s)
{
    subscribe_common(s, true);
}

void imap_cmd_unsubscribe(struct imap_session *s)
{
    subscribe_common(s, false);
}

/* ---- LIST / LSUB ------------------------------------------------------------ */

#define LIST_SEL_SUBSCRIBED 0x1u
#define LIST_SEL_RECURSIVEMATCH 0x2u
#define LIST_SEL_SPECIAL_USE 0x4u
#define LIST_RET_SUBSCRIBED 0x1u
#define LIST_RET_CHILDREN 0x2u
#define LIST_RET_SPECIAL_USE 0x4u
#define LIST_RET_STATUS 0x8u

#define STATUS_MESSAGES 0x1u
#define STATUS_UIDNEXT 0x2u
#define STATUS_UIDVALIDITY 0x4u
#define STATUS_UNSEEN 0x8u
#define STATUS_RECENT 0x10u
#define STATUS_SIZE 0x20u
#define STATUS_HIGHESTMODSEQ 0x40u
#define STATUS_DELETED 0x80u

/* The STATUS figures of one mailbox, gathered in up to three store
 * requests: the mailbox state, the \Deleted count (DELETED) and the
 * \Recent count (RECENT, looked at, never claimed). Used by STATUS and
 * LIST-STATUS; the owning command's op embeds it. */
struct status_gather {
    const char *name; /* owned by the op */
    unsigned items;
    uint32_t messages, unseen, uidvalidity, uidnext, deleted, recent;
    uint64_t highest, size;
    void (*then)(struct imap_session *s, enum mx_status status, const char *text);
};

struct list_entry {
    char *name;
    uint32_t attrs;
    char *special_use;
    bool exists;          /* false: a parent that only has children */
    bool has_children;
    bool subscribed_child; /* RECURSIVEMATCH: a descendant is subscribed */
};

struct list_op {
    bool lsub;
    unsigned selection;
    unsigned returns;
    unsigned status_items;
    char **patterns;       /* UTF-8, reference applied */
    size_t n_patterns;
    struct list_entry *entries;
    size_t n_entries;
    size_t status_next;    /* LIST-STATUS: next entry to ask about */
    struct status_gather gather;
};

static void list_op_free(void *p)
{
    struct list_op *op = p;
    for (size_t i = 0; i < op->n_patterns; i++)
        free(op->patterns[i]);
    free(op->patterns);
    for (size_t i = 0; i < op->n_entries; i++) {
        free(op->entries[i].name);
        free(op->entries[i].special_use);
    }
    free(op->entries);
    free(op);
}

/* pattern_match - IMAP LIST wildcards: '*' anything, '%' anything but the
 * separator. Iterative with one backtrack point per star kind is not
 * enough for mixed patterns, so a bounded recursion (patterns are short:
 * the line limit) with memo-free worst case O(n*m) via the two-pointer
 * algorithm per wildcard segment. */
static bool pattern_match(const char *p, const char *n, const char *ci_end)
{
    while (*p) {
        if (*p == '*' || *p == '%') {
            char w = *p;
            while (*p == '*' || *p == '%') {
                if (*p == '*')
                    w = '*';
                p++;
            }
            if (*p == '\0')
                return w == '*' || strchr(n, '/') == NULL;
            for (const char *q = n; *q; q++) {
                if (w == '%' && *q == '/' && *p != '/')
                    return false;
                if (pattern_match(p, q, ci_end))
                    return true;
                if (w == '%' && *q == '/')
                    return false;
            }
            return false;
        }
        if (*n == '\0' ||
            (*p != *n && (n >= ci_end || tolower((unsigned char)*p) != tolower((unsigned char)*n))))
            return false;
        p++;
        n++;
    }
    return *n == '\0';
}

/* name_pattern_match - pattern_match with INBOX's case-insensitivity: the
 * name INBOX (and its first level in INBOX/child) is matched case-
 * insensitively, so "inbox*" or "Inb%" list it as "INBOX" and "inbox"
 * do (RFC 9051 5.1 / 6.3.9: INBOX is case-insensitive; RFC 3501 6.3.8). */
static bool name_pattern_match(const char *pattern, const char *name)
{
    const char *ci_end = name;
    if (strncmp(name, "INBOX", 5) == 0 && (name[5] == '\0' || name[5] == '/'))
        ci_end = name + 5;
    return pattern_match(pattern, name, ci_end);
}

static bool list_matches(const struct list_op *op, const char *name)
{
    for (size_t i = 0; i < op->n_patterns; i++)
        if (name_pattern_match(op->patterns[i], name))
            return true;
    return false;
}

/* list_matches_percent - name matches a pattern whose match relies on
 * a '%' (the LSUB \Noselect parent rule). */
static bool list_matches_percent(const struct list_op *op, const char *name)
{
    for (size_t i = 0; i < op->n_patterns; i++)
        if (strchr(op->patterns[i], '%') && name_pattern_match(op->patterns[i], name))
            return true;
    return false;
}

static void status_write(struct imap_session *s, const struct status_gather *g)
{
    imap_printf(s, "* STATUS ");
    imap_write_mailbox(s, g->name);
    imap_printf(s, " (");
    const char *sp = "";
#define ITEM(bit, fmt, value)                                \
    if (g->items & (bit)) {                                  \
        imap_printf(s, "%s" fmt, sp, value);                 \
        sp = " ";                                            \
    }
    ITEM(STATUS_MESSAGES, "MESSAGES %u", g->messages)
    ITEM(STATUS_UIDNEXT, "UIDNEXT %u", g->uidnext)
    ITEM(STATUS_UIDVALIDITY, "UIDVALIDITY %u", g->uidvalidity)
    ITEM(STATUS_UNSEEN, "UNSEEN %u", g->unseen)
    ITEM(STATUS_RECENT, "RECENT %u", g->recent)
    ITEM(STATUS_SIZE, "SIZE %llu", (unsigned long long)g->size)
    ITEM(STATUS_HIGHESTMODSEQ, "HIGHESTMODSEQ %llu", (unsigned long long)g->highest)
    ITEM(STATUS_DELETED, "DELETED %u", g->deleted)
#undef ITEM
    imap_printf(s, ")\r\n");
}

static struct status_gather *current_gather(struct imap_session *s);

static void gather_on_recent(void *ctx, enum mx_status status, const char *text,
                             const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct status_gather *g = current_gather(s);
    if (status == MX_STATUS_OK)
        (void)mx_frame_get_u32(reply, F_MESSAGES, &g->recent);
    g->then(s, status, text);
}

static void gather_recent(struct imap_session *s, struct status_gather *g)
{
    if (!(g->items & STATUS_RECENT)) {
        g->then(s, MX_STATUS_OK, "");
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_RECENT_CLAIM, s->user, g->name);
    mx_frame_put_u32(&f, F_UIDVALIDITY, g->uidvalidity);
    mx_frame_put_u32(&f, F_UIDNEXT, g->uidnext);
    mx_frame_put_u32(&f, F_CLAIM, 0);
    imap_store_send(s, &f, gather_on_recent);
}

static void gather_on_flags(void *ctx, enum mx_status status, const char *text,
                            const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct status_gather *g = current_gather(s);
    if (status != MX_STATUS_OK) {
        g->then(s, status, text);
        return;
    }
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    while (mx_frame_next_field(reply, &it, &tag, &value, &len) == 1)
        if (tag == F_FLAG && len == 8 && strncasecmp((const char *)value, "\\Deleted", 8) == 0)
            g->deleted++;
    gather_recent(s, g);
}

static void gather_on_state(void *ctx, enum mx_status status, const char *text,
                            const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct status_gather *g = current_gather(s);
    if (status != MX_STATUS_OK) {
        g->then(s, status, text);
        return;
    }
    (void)mx_frame_get_u32(reply, F_MESSAGES, &g->messages);
    (void)mx_frame_get_u32(reply, F_UNSEEN, &g->unseen);
    (void)mx_frame_get_u32(reply, F_UIDVALIDITY, &g->uidvalidity);
    (void)mx_frame_get_u32(reply, F_UIDNEXT, &g->uidnext);
    (void)mx_frame_get_u64(reply, F_HIGHESTMODSEQ, &g->highest);
    (void)mx_frame_get_u64(reply, F_SIZE, &g->size);
    if (!(g->items & STATUS_DELETED)) {
        gather_recent(s, g);
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MESSAGE_FETCH, s->user, g->name);
    mx_frame_put_u32(&f, F_UIDVALIDITY, g->uidvalidity);
    mx_frame_put_str(&f, F_UID_SET, "1:*");
    mx_frame_put_u32(&f, F_FETCH_ITEMS, MX_FETCH_FLAGS);
    imap_store_send(s, &f, gather_on_flags);
}

/* gather_start - fill g (name, items, then set by the caller). */
static void gather_start(struct imap_session *s, struct status_gather *g)
{
    g->messages = g->unseen = g->uidvalidity = g->uidnext = g->deleted = g->recent = 0;
    g->highest = g->size = 0;
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_STATUS, s->user, g->name);
    imap_store_send(s, &f, gather_on_state);
}

static int status_items_parse(struct imap_session *s, const struct imap_arg *list, unsigned *items_r)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        { "MESSAGES", STATUS_MESSAGES }, { "UIDNEXT", STATUS_UIDNEXT },
        { "UIDVALIDITY", STATUS_UIDVALIDITY }, { "UNSEEN", STATUS_UNSEEN },
        { "RECENT", STATUS_RECENT }, { "SIZE", STATUS_SIZE },
        { "HIGHESTMODSEQ", STATUS_HIGHESTMODSEQ }, { "DELETED", STATUS_DELETED },
    };
    if (list->type != IMAP_ARG_LIST || list->n_list == 0) {
        imap_done_bad(s, "STATUS needs a list of items");
        return -1;
    }
    unsigned items = 0;
    for (size_t i = 0; i < list->n_list; i++) {
        const struct imap_arg *a = &list->list[i];
        size_t k = 0;
        for (; k < sizeof names / sizeof names[0]; k++)
            if (a->type == IMAP_ARG_ATOM && strcasecmp(a->str, names[k].name) == 0)
                break;
        if (k == sizeof names / sizeof names[0]) {
            imap_done_bad(s, "Unknown STATUS item");
            return -1;
        }
        items |= names[k].bit;
    }
    if (items & STATUS_HIGHESTMODSEQ)
        imap_session_enable_condstore(s);
    *items_r = items;
    return 0;
}

static void list_status_next(struct imap_session *s);

static void list_on_status(struct imap_session *s, enum mx_status status, const char *text)
{
    struct list_op *op = s->op;
    /* RFC 5819: a mailbox that vanished meanwhile gets no STATUS */
    if (status == MX_STATUS_OK)
        status_write(s, &op->gather);
    op->status_next++;
    list_status_next(s);
}

static void list_status_next(struct imap_session *s)
{
    struct list_op *op = s->op;
    while (op->status_next < op->n_entries) {
        struct list_entry *e = &op->entries[op->status_next];
        if (e->exists && list_matches(op, e->name)) {
            op->gather.name = e->name;
            op->gather.items = op->status_items;
            op->gather.then = list_on_status;
            gather_start(s, &op->gather);
            return;
        }
        op->status_next++;
    }
    imap_done_ok(s, "%s completed", op->lsub ? "LSUB" : "LIST");
}

static int entry_cmp(const void *a, const void *b)
{
    const struct list_entry *x = a, *y = b;
    /* INBOX first, then by name */
    bool xi = mailbox_name_is_inbox(x->name), yi = mailbox_name_is_inbox(y->name);
    if (xi != yi)
        return xi ? -1 : 1;
    return strcmp(x->name, y->name);
}

static struct list_entry *entry_find(struct list_op *op, const char *name)
{
    for (size_t i = 0; i < op->n_entries; i++)
        if (strcmp(op->entries[i].name, name) == 0)
            return &op->entries[i];
    return NULL;
}

static void list_on_mailboxes(void *ctx, enum mx_status status, const char *text,
                              const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    struct list_op *op = s->op;
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    struct mx_field_iter it = { 0 };
    uint16_t tag;
    const uint8_t *value;
    size_t len;
    while (mx_frame_next_field(reply, &it, &tag, &value, &len) == 1) {
        if (tag == F_MAILBOX) {
            op->entries = mx_reallocarray(op->entries, op->n_entries + 1, sizeof *op->entries);
            op->entries[op->n_entries++] =
                (struct list_entry){ mx_strndup((const char *)value, len), 0, NULL, true, false, false };
        } else if (tag == F_MAILBOX_ATTRS && len == 4 && op->n_entries) {
            struct list_entry *e = &op->entries[op->n_entries - 1];
            e->attrs = imap_be32(value);
            e->exists = !(e->attrs & MX_MAILBOX_ATTR_NONEXISTENT);
        } else if (tag == F_SPECIAL_USE && op->n_entries) {
            free(op->entries[op->n_entries - 1].special_use);
            op->entries[op->n_entries - 1].special_use = mx_strndup((const char *)value, len);
        }
    }
    /* parents that do not exist themselves but have children */
    size_t n_real = op->n_entries;
    for (size_t i = 0; i < n_real; i++) {
        char *name = mx_strdup(op->entries[i].name);
        bool subscribed = op->entries[i].attrs & MX_MAILBOX_ATTR_SUBSCRIBED;
        for (char *slash = strrchr(name, '/'); slash; slash = strrchr(name, '/')) {
            *slash = '\0';
            struct list_entry *parent = entry_find(op, name);
            if (parent == NULL) {
                op->entries = mx_reallocarray(op->entries, op->n_entries + 1, sizeof *op->entries);
                op->entries[op->n_entries++] =
                    (struct list_entry){ mx_strdup(name), 0, NULL, false, true, false };
                parent = &op->entries[op->n_entries - 1];
            }
            parent->has_children = true;
            if (subscribed)
                parent->subscribed_child = true;
        }
        free(name);
    }
    for (size_t i = 0; i < op->n_entries; i++)
        if (op->entries[i].attrs & MX_MAILBOX_ATTR_HAS_CHILDREN)
            op->entries[i].has_children = true;
    qsort(op->entries, op->n_entries, sizeof *op->entries, entry_cmp);

    for (size_t i = 0; i < op->n_entries; i++) {
        struct list_entry *e = &op->entries[i];
        if (!list_matches(op, e->name))
            continue;
        bool subscribed = e->attrs & MX_MAILBOX_ATTR_SUBSCRIBED;
        /* a subscribed name that is no mailbox only shows where
         * subscriptions are asked for (LSUB, LIST (SUBSCRIBED)) */
        if (!e->exists && !e->has_children && !(op->selection & LIST_SEL_SUBSCRIBED))
            continue;
        bool childinfo = false;
        bool lsub_parent = false;
        if (op->selection & LIST_SEL_SUBSCRIBED) {
            if (!subscribed) {
                /* RFC 3501 6.3.9: LSUB "" "foo/%" with only foo/bar/baz
                 * subscribed answers foo/bar as \Noselect */
                if (op->lsub && e->subscribed_child && list_matches_percent(op, e->name)) {
                    lsub_parent = true;
                } else {
                    if (!(op->selection & LIST_SEL_RECURSIVEMATCH) || !e->subscribed_child)
                        continue;
                    childinfo = true;
                }
            } else if ((op->selection & LIST_SEL_RECURSIVEMATCH) && e->subscribed_child) {
                childinfo = true;
            }
        }
        if ((op->selection & LIST_SEL_SPECIAL_USE) && e->special_use == NULL)
            continue;
        imap_printf(s, "* %s (", op->lsub ? "LSUB" : "LIST");
        const char *sp = "";
        if (!e->exists || lsub_parent) {
            imap_printf(s, "%s", op->lsub ? "\\Noselect" : "\\NonExistent");
            sp = " ";
        }
        if (!op->lsub) {
            imap_printf(s, "%s%s", sp, e->has_children ? "\\HasChildren" : "\\HasNoChildren");
            sp = " ";
        }
        if (!op->lsub && subscribed &&
            (op->returns & LIST_RET_SUBSCRIBED || op->selection & LIST_SEL_SUBSCRIBED)) {
            imap_printf(s, "%s\\Subscribed", sp);
            sp = " ";
        }
        if (e->special_use && !op->lsub)
            imap_printf(s, "%s%s", sp, e->special_use);
        imap_printf(s, ") \"/\" ");
        imap_write_mailbox(s, e->name);
        if (childinfo && !op->lsub)
            imap_printf(s, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
        imap_printf(s, "\r\n");
    }
    if (op->returns & LIST_RET_STATUS) {
        op->status_next = 0;
        list_status_next(s);
        return;
    }
    imap_done_ok(s, "%s completed", op->lsub ? "LSUB" : "LIST");
}

/* list_add_pattern - reference + pattern in store form. */
static int list_add_pattern(struct imap_session *s, struct list_op *op, const char *ref,
                            const struct imap_arg *pattern)
{
    /* list-mailbox = 1*list-char / string: NIL is the atom "NIL" here */
    const char *text = pattern->type == IMAP_ARG_NIL ? "NIL" : imap_arg_cstring(pattern);
    if (text == NULL) {
        imap_done_bad(s, "LIST pattern must be a string");
        return -1;
    }
    char *joined = mx_asprintf("%s%s%s", ref,
                               *ref && ref[strlen(ref) - 1] != '/' && *text && *text != '/' ? "/" : "",
                               text);
    char *utf8 = NULL;
    const char *error;
    if (s->utf8_accept || s->rev2) {
        utf8 = joined;
        joined = NULL;
    } else if (mailbox_name_mutf7_decode(joined, strlen(joined), &utf8, &error) < 0) {
        free(joined);
        /* a pattern no mailbox can match: list nothing */
        utf8 = mx_strdup("");
    }
    free(joined);
    /* INBOX is case-insensitive, also as a pattern's first level */
    if (strncasecmp(utf8, "INBOX", 5) == 0 && (utf8[5] == '\0' || utf8[5] == '/'))
        memcpy(utf8, "INBOX", 5);
    op->patterns = mx_reallocarray(op->patterns, op->n_patterns + 1, sizeof *op->patterns);
    op->patterns[op->n_patterns++] = utf8;
    return 0;
}

static void list_common(struct imap_session *s, bool lsub)
{
    struct list_op *op = mx_calloc(1, sizeof *op);
    op->lsub = lsub;
    imap_session_set_op(s, op, list_op_free);
    size_t i = 0;
    const struct imap_arg *args = s->cmd.args;
    size_t n = s->cmd.n_args;
    if (!lsub && n > 0 && args[0].type == IMAP_ARG_LIST) { /* selection options */
        for (size_t k = 0; k < args[0].n_list; k++) {
            const struct imap_arg *a = &args[0].list[k];
            if (a->type != IMAP_ARG_ATOM) {
                imap_done_bad(s, "Invalid LIST selection option");
                return;
            }
            if (strcasecmp(a->str, "SUBSCRIBED") == 0)
                op->selection |= LIST_SEL_SUBSCRIBED;
            else if (strcasecmp(a->str, "RECURSIVEMATCH") == 0)
                op->selection |= LIST_SEL_RECURSIVEMATCH;
            else if (strcasecmp(a->str, "SPECIAL-USE") == 0)
                op->selection |= LIST_SEL_SPECIAL_USE;
            else if (strcasecmp(a->str, "REMOTE") != 0) {
                imap_done_bad(s, "Unknown LIST selection option %s", a->str);
                return;
            }
        }
        if ((op->selection & LIST_SEL_RECURSIVEMATCH) &&
            !(op->selection & (LIST_SEL_SUBSCRIBED | LIST_SEL_SPECIAL_USE))) {
            imap_done_bad(s, "RECURSIVEMATCH needs another selection option");
            return;
        }
        i = 1;
    }
    if (n < i + 2) {
        imap_done_bad(s, "%s needs a reference and a pattern", s->cmd.name);
        return;
    }
    const char *ref = args[i].type == IMAP_ARG_NIL ? "NIL" : imap_arg_cstring(&args[i]);
    if (ref == NULL) {
        imap_done_bad(s, "Invalid reference name");
        return;
    }
    const struct imap_arg *pat = &args[i + 1];
    if (pat->type == IMAP_ARG_LIST && !lsub) {
        for (size_t k = 0; k < pat->n_list; k++)
            if (list_add_pattern(s, op, ref, &pat->list[k]) < 0)
                return;
    } else if (list_add_pattern(s, op, ref, pat) < 0) {
        return;
    }
    i += 2;
    if (i < n) {
        if (lsub || i + 2 != n || args[i].type != IMAP_ARG_ATOM ||
            strcasecmp(args[i].str, "RETURN") != 0 || args[i + 1].type != IMAP_ARG_LIST) {
            imap_done_bad(s, "Unexpected LIST arguments");
            return;
        }
        const struct imap_arg *ret = &args[i + 1];
        for (size_t k = 0; k < ret->n_list; k++) {
            const struct imap_arg *a = &ret->list[k];
            if (a->type != IMAP_ARG_ATOM) {
                imap_done_bad(s, "Invalid LIST return option");
                return;
            }
            if (strcasecmp(a->str, "SUBSCRIBED") == 0)
                op->returns |= LIST_RET_SUBSCRIBED;
            else if (strcasecmp(a->str, "CHILDREN") == 0)
                op->returns |= LIST_RET_CHILDREN;
            else if (strcasecmp(a->str, "SPECIAL-USE") == 0)
                op->returns |= LIST_RET_SPECIAL_USE;
            else if (strcasecmp(a->str, "STATUS") == 0 && k + 1 < ret->n_list) {
                if (status_items_parse(s, &ret->list[++k], &op->status_items) < 0)
                    return;
                op->returns |= LIST_RET_STATUS;
            } else {
                imap_done_bad(s, "Unknown LIST return option %s", a->str);
                return;
            }
        }
    }
    if (lsub)
        op->selection |= LIST_SEL_SUBSCRIBED;
    /* LIST "" "": the hierarchy delimiter and the root (RFC 9051 6.3.9) */
    if (op->n_patterns == 1 && op->patterns[0][0] == '\0' && pat->type != IMAP_ARG_LIST) {
        imap_printf(s, "* %s (\\Noselect) \"/\" \"\"\r\n", lsub ? "LSUB" : "LIST");
        imap_done_ok(s, "%s completed", s->cmd.name);
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_MAILBOX_LIST, s->user, NULL);
    imap_store_send(s, &f, list_on_mailboxes);
}

void imap_cmd_list(struct imap_session *s)
{
    list_common(s, false);
}

void imap_cmd_lsub(struct imap_session *s)
{
    list_common(s, true);
}

/* ---- STATUS ------------------------------------------------------------------ */

struct status_op {
    char *name;
    struct status_gather gather;
};

static void status_op_free(void *p)
{
    struct status_op *op = p;
    free(op->name);
    free(op);
}

static void status_done(struct imap_session *s, enum mx_status status, const char *text)
{
    struct status_op *op = s->op;
    if (status == MX_STATUS_NOT_FOUND) {
        imap_done_no(s, "[NONEXISTENT] No such mailbox");
        return;
    }
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    status_write(s, &op->gather);
    imap_done_ok(s, "STATUS completed");
}

void imap_cmd_status(struct imap_session *s)
{
    if (s->cmd.n_args != 2) {
        imap_done_bad(s, "STATUS needs a mailbox and a list of items");
        return;
    }
    const char *error;
    char *name = imap_arg_mailbox(s, &s->cmd.args[0], &error);
    if (name == NULL) {
        imap_done_no(s, "[NONEXISTENT] %s", error);
        return;
    }
    struct status_op *op = mx_calloc(1, sizeof *op);
    op->name = name;
    imap_session_set_op(s, op, status_op_free);
    if (status_items_parse(s, &s->cmd.args[1], &op->gather.items) < 0)
        return;
    op->gather.name = op->name;
    op->gather.then = status_done;
    gather_start(s, &op->gather);
}

static struct status_gather *current_gather(struct imap_session *s)
{
    if (strcmp(s->cmd.name, "STATUS") == 0)
        return &((struct status_op *)s->op)->gather;
    return &((struct list_op *)s->op)->gather;
}

/* ---- NAMESPACE, QUOTA ------------------------------------------------------- */

void imap_cmd_namespace(struct imap_session *s)
{
    if (s->cmd.n_args) {
        imap_done_bad(s, "NAMESPACE takes no arguments");
        return;
    }
    imap_printf(s, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    imap_done_ok(s, "NAMESPACE completed");
}

/* quota_limits - the account's limits: the directory's (read at login)
 * are authoritative; the store's maildirsize figures (what the last
 * delivery wrote) stand in for accounts without mxQuota* values there. */
static void quota_limits(const struct imap_session *s, const struct mx_frame_view *reply,
                         uint64_t *bytes_r, uint64_t *count_r)
{
    *bytes_r = s->identity.quota_bytes;
    *count_r = s->identity.quota_count;
    if (*bytes_r == 0)
        (void)mx_frame_get_u64(reply, F_QUOTA_BYTES, bytes_r);
    if (*count_r == 0)
        (void)mx_frame_get_u64(reply, F_QUOTA_COUNT, count_r);
}

/* The one quota root of an account is "" (RFC 9208): every mailbox counts
 * against it. Limits are what the store enforces (from LDAP, written by
 * delivery into maildirsize); none known = no root reported. */
static void quota_write(struct imap_session *s, const struct mx_frame_view *reply, bool *any_r)
{
    uint64_t used = 0, limit = 0, count_limit = 0;
    uint32_t messages = 0;
    (void)mx_frame_get_u64(reply, F_QUOTA_USED, &used);
    (void)mx_frame_get_u32(reply, F_MESSAGES, &messages);
    quota_limits(s, reply, &limit, &count_limit);
    *any_r = limit || count_limit;
    if (!*any_r)
        return;
    imap_printf(s, "* QUOTA \"\" (");
    if (limit)
        imap_printf(s, "STORAGE %llu %llu", (unsigned long long)((used + 1023) / 1024),
                    (unsigned long long)(limit / 1024));
    if (count_limit)
        imap_printf(s, "%sMESSAGE %u %llu", limit ? " " : "", messages,
                    (unsigned long long)count_limit);
    imap_printf(s, ")\r\n");
}

static void quotaroot_on_quota(void *ctx, enum mx_status status, const char *text,
                               const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    char *mailbox = s->op;
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    uint64_t limit = 0, count_limit = 0;
    quota_limits(s, reply, &limit, &count_limit);
    imap_printf(s, "* QUOTAROOT ");
    imap_write_mailbox(s, mailbox);
    imap_printf(s, "%s\r\n", limit || count_limit ? " \"\"" : "");
    bool any;
    quota_write(s, reply, &any);
    imap_done_ok(s, "GETQUOTAROOT completed");
}

static void quota_on_quota(void *ctx, enum mx_status status, const char *text,
                           const struct mx_frame_view *reply)
{
    struct imap_session *s = ctx;
    if (status != MX_STATUS_OK) {
        imap_done_store_error(s, status, text);
        return;
    }
    bool any;
    quota_write(s, reply, &any);
    if (!any)
        imap_done_no(s, "[NONEXISTENT] No quota on this account");
    else
        imap_done_ok(s, "GETQUOTA completed");
}

void imap_cmd_getquotaroot(struct imap_session *s)
{
    if (s->cmd.n_args != 1) {
        imap_done_bad(s, "GETQUOTAROOT needs a mailbox name");
        return;
    }
    const char *error;
    char *name = imap_arg_mailbox(s, &s->cmd.args[0], &error);
    if (name == NULL) {
        imap_done_no(s, "[NONEXISTENT] %s", error);
        return;
    }
    imap_session_set_op(s, name, NULL);
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_QUOTA_GET, s->user, NULL);
    imap_store_send(s, &f, quotaroot_on_quota);
}

void imap_cmd_getquota(struct imap_session *s)
{
    const char *root = s->cmd.n_args == 1 ? imap_arg_cstring(&s->cmd.args[0]) : NULL;
    if (root == NULL) {
        imap_done_bad(s, "GETQUOTA needs a quota root");
        return;
    }
    if (*root != '\0') {
        imap_done_no(s, "[NONEXISTENT] No such quota root");
        return;
    }
    struct mx_frame f;
    imapd_store_frame(&f, MSG_ANY_STORE_QUOTA_GET, s->user, NULL);
    imap_store_send(s, &f, quota_on_quota);
}

void imap_cmd_setquota(struct imap_session *s)
{
    imap_done_no(s, "[NOPERM] Quotas are set by the administrator (LDAP mxQuota)");
}
