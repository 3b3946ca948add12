/* imap_session.h - one IMAP connection's state, shared by the session core
 * (imap_session.c) and the command files (imap_cmd_*.c).
 *
 * Execution model. Commands run one at a time, in the order received
 * (pipelined input waits in the reader). A handler either answers at once
 * or starts store requests and answers from their callbacks; either way it
 * ends with exactly one imap_done_*() call, which writes the tagged reply
 * (the handler must not touch s->op or s->cmd after that call)
 * (after any untagged updates the command may carry) and lets the session
 * read the next command. While a command runs, s->busy is set.
 *
 * The selected mailbox's view (s->sel) is the session's numbering:
 * sel.uids[seq - 1]. It changes only when the client is told (EXISTS /
 * EXPUNGE / VANISHED), which is what keeps sequence numbers coherent while
 * other sessions (on any frontend) change the mailbox. */
#ifndef IMAP_SESSION_H
#define IMAP_SESSION_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap_parser.h"
#include "imap_seqset.h"
#include "imapd.h"

enum imap_state {
    IMAP_STATE_NOT_AUTHENTICATED = 1,
    IMAP_STATE_AUTHENTICATED = 2,
    IMAP_STATE_SELECTED = 4,
    IMAP_STATE_LOGOUT = 8,
};

/* Selected mailbox. */
struct imap_mailbox_view {
    char *name;            /* UTF-8, store form */
    bool readonly;         /* EXAMINE */
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint64_t highestmodseq; /* as far as this session has reported */
    uint32_t *uids;        /* uids[seq - 1], ascending */
    uint32_t count;
    size_t cap;
    char *keywords;        /* keywords in use (FLAGS), space separated */
};

/* A small set of UIDs. */
struct imap_uidlist {
    uint32_t *uids;
    size_t n, cap;
};
void imap_uidlist_add(struct imap_uidlist *list, uint32_t uid);

struct imap_session;

/* A command handler: the parsed command is s->cmd. */
typedef void imap_command_fn(struct imap_session *s);

struct imap_session {
    struct imapd_server *server;
    const struct imapd_listener *listener;
    struct mx_conn *conn;
    char sid[32];
    char peer_ip[64];
    bool admitted;
    enum imap_state state;
    struct imap_reader *reader;
    unsigned errors;       /* BADs in a row, for the BYE on abuse */

    /* the command running */
    bool busy;
    struct imap_command cmd;
    bool have_cmd;
    uint64_t cmd_started_ms;
    void *op;              /* handler's heap state, freed by op_free */
    void (*op_free)(void *op);
    struct imapd_store_call call;

    /* authentication */
    struct mx_auth_check *auth_check;
    bool sasl_pending;     /* AUTHENTICATE waiting for the client's response */
    struct mx_identity identity;
    char *user;            /* identity.mail: the store's user name */
    struct imapd_shard *shard;
    unsigned logins_failed;

    /* ENABLEd extensions (RFC 5161) */
    bool condstore;        /* also switched on by any CONDSTORE-using command */
    bool qresync;
    bool utf8_accept;
    bool rev2;             /* ENABLE IMAP4rev2: UTF-8 names, ESEARCH replies, no RECENT */
    bool input_switched;   /* COMPRESS replaced the input buffer: stop reading it */

    /* selected mailbox, change tracking */
    struct imap_mailbox_view sel;
    struct imapd_watch *watch;
    bool changes_pending;  /* an event said the selected mailbox changed */
    bool idling;
    char *idle_tag;
    uint32_t *searchres;   /* RFC 5182 "$": saved UIDs */
    size_t searchres_count;
    bool syncing;          /* a CHANGES_SINCE request is in flight */
    struct imap_uidlist deferred_expunges; /* expunged elsewhere, not yet told */
    struct imap_seqset recent; /* UIDs that are \Recent for this session (IMAP4rev1) */
    uint32_t recent_upto;      /* the claim in flight */
    void (*recent_then)(struct imap_session *);
    char *held_tagged;     /* tagged line waiting for the updates */

    /* counters for the logout log line */
    uint64_t commands;
    uint64_t bytes_fetched;
    uint64_t started_ms;
};

/* ---- replies ------------------------------------------------------------ */
void imap_printf(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_write(struct imap_session *s, const void *data, size_t len);
/* imap_write_astring - a string as an IMAP quoted string or literal,
 * whichever can carry it (8-bit, CR/LF, long -> literal). */
void imap_write_string(struct imap_session *s, const char *data, size_t len);
/* imap_write_nstring - NIL for NULL. */
void imap_write_nstring(struct imap_session *s, const char *data, size_t len);
/* imap_write_mailbox - a mailbox name in the client's form (mUTF-7, or
 * UTF-8 after ENABLE UTF8=ACCEPT), as an astring. */
void imap_write_mailbox(struct imap_session *s, const char *utf8_name);

/* The tagged end of the running command. text may hold a response code:
 * "[TRYCREATE] no such mailbox". */
void imap_done_ok(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_done_no(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_done_bad(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* imap_done_store_error - NO for a store status other than OK, with the
 * right response code ([TRYCREATE], [OVERQUOTA], [UNAVAILABLE],
 * [NONEXISTENT], [ALREADYEXISTS], ...). */
void imap_done_store_error(struct imap_session *s, enum mx_status status, const char *text);

/* ---- helpers for handlers ---------------------------------------------- */
/* imap_arg_mailbox - a mailbox argument (astring) in the store's UTF-8
 * form, normalised; NULL with *error_r for a name the client may not use.
 * Heap. */
char *imap_arg_mailbox(struct imap_session *s, const struct imap_arg *arg, const char **error_r);
/* imap_arg_cstring - an astring argument as a C string (NULL if it is not a
 * string or holds NUL). Points into the command. */
const char *imap_arg_cstring(const struct imap_arg *arg);
/* imap_session_seqset - parse arg as a sequence set of the selected
 * mailbox and turn it into UIDs (message numbers or, for UID commands,
 * UIDs); *set_r holds UIDs present in the view. -1 after answering BAD/NO. */
int imap_session_uidset(struct imap_session *s, const struct imap_arg *arg, bool uid_mode,
                        struct imap_seqset *uids_r);
/* imap_session_recent_bit - IMAP_SEARCH_FLAG_RECENT if uid is \Recent for
 * this session, else 0. */
uint32_t imap_session_recent_bit(const struct imap_session *s, uint32_t uid);
/* imap_session_claim_recent - ask the store which of the UIDs below upto
 * are \Recent for this session (claim: SELECT, or new mail reported to a
 * read-write session; else only look), add them to s->recent, write
 * "* n RECENT" (IMAP4rev1 sessions) and go on with then(s). */
void imap_session_claim_recent(struct imap_session *s, uint32_t upto, bool claim,
                               void (*then)(struct imap_session *));
/* imap_session_seq_of - message number of uid in the view (0 if absent). */
uint32_t imap_session_seq_of(const struct imap_session *s, uint32_t uid);
/* imap_store_send - send frame to the user's shard; done runs later. On a
 * send failure the command is answered NO [UNAVAILABLE] and -1 returned. */
int imap_store_send(struct imap_session *s, struct mx_frame *frame, imapd_store_done_fn *done);
/* imap_session_set_op - attach handler state freed when the command ends. */
void imap_session_set_op(struct imap_session *s, void *op, void (*op_free)(void *));
/* imap_session_enable_condstore - RFC 7162 3.1: a CONDSTORE-using command
 * enables it; reports HIGHESTMODSEQ once when a mailbox is selected. */
void imap_session_enable_condstore(struct imap_session *s);
/* imap_flags_write - "(\Seen \Answered kw1 ...)" from system bits + keywords. */
void imap_flags_write(struct imap_session *s, uint32_t flags, const char *keywords);
/* imap_flag_bit - bit of a system flag name (case-insensitive), 0 for a
 * keyword, -1 for an unknown "\" flag or a bad atom. */
int imap_flag_bit(const char *flag, uint32_t *bit_r);
/* Format an internal date (ms since the epoch) as "dd-Mon-yyyy hh:mm:ss +0000". */
void imap_format_internaldate(uint64_t ms, char out[32]);

/* The view: replace / append / remove by UID. */
void imap_view_set_uids(struct imap_session *s, const uint32_t *uids, size_t n);
void imap_view_append_uid(struct imap_session *s, uint32_t uid);
/* imap_view_expunge_uids - remove the UIDs (ascending), reporting each as
 * EXPUNGE n (or one VANISHED under QRESYNC) right away. */
void imap_view_expunge_uids(struct imap_session *s, const uint32_t *uids, size_t n);

/* ---- command handlers (imap_cmd_*.c) ----------------------------------- */
/* mailbox commands: imap_cmd_mailbox.c */
imap_command_fn imap_cmd_select, imap_cmd_examine, imap_cmd_create, imap_cmd_delete,
    imap_cmd_rename, imap_cmd_subscribe, imap_cmd_unsubscribe, imap_cmd_list, imap_cmd_lsub,
    imap_cmd_status, imap_cmd_getquota, imap_cmd_getquotaroot, imap_cmd_setquota, imap_cmd_close,
    imap_cmd_unselect, imap_cmd_namespace;
/* message commands: imap_cmd_message.c */
imap_command_fn imap_cmd_fetch, imap_cmd_store, imap_cmd_copy, imap_cmd_move, imap_cmd_expunge,
    imap_cmd_append, imap_cmd_search, imap_cmd_sort, imap_cmd_thread;

/* imap_session_sync - ask the store what changed in the selected mailbox
 * since sel.highestmodseq and report it (EXISTS, FETCH, EXPUNGE/VANISHED),
 * then call then(s). allow_expunge: false during FETCH/STORE/SEARCH (RFC
 * 9051 7.5.1: expunges must wait). */
void imap_session_sync(struct imap_session *s, bool allow_expunge, void (*then)(struct imap_session *));

/* imap_session_flush_expunges - report the expunges held back during
 * FETCH/STORE/SEARCH (call only where expunges may be reported). */
void imap_session_flush_expunges(struct imap_session *s);

/* UID set text for the store (compact "1:3,7"). */
char *imap_uids_format(const uint32_t *uids, size_t n);
/* imap_uids_parse - the store's UID set text into a heap array; -1 if bad. */
int imap_uids_parse(const char *text, uint32_t **uids_r, size_t *n_r);

#endif
