/* mx_wire - every message that crosses between mxcluster roles, and the
 * frame that carries it.
 *
 * This is the ONE place that lists the wire protocol: read the two tables
 * below to see everything the roles say to each other. Names read
 * MSG_<SENDER>_<RECEIVER>_<OBJECT>_<VERB>; ANY means "any role". Numbers are
 * explicit and never reused: a retired message keeps its number reserved
 * (comment it out, do not delete it). Fields share one tag namespace so a
 * decoder can report "field 12 (recipient) too long" without knowing the
 * message.
 *
 * Frame layout (all integers big-endian, no padding, no raw structs):
 *
 *   offset size field
 *        0    4 magic        "MXCL" (0x4d58434c)
 *        4    2 version      MX_WIRE_VERSION
 *        6    2 type         enum mx_msg_type
 *        8    4 flags        MX_FRAME_F_*
 *       12    4 body_length  bytes after the header
 *       16    8 request_id   matches a reply/ack to its request; 0 = none
 *       24   16 message_id   cluster-unique id of the mail message; zeros = none
 *       40    . body         a sequence of fields:
 *                              tag u16 | length u32 | value[length]
 *
 * A decoder accepts a frame only if the magic and version match, the type is
 * known, body_length equals exactly the bytes that follow, and the body is a
 * whole number of fields each inside the body. Anything else is an error
 * returned to the caller (who logs the peer and drops the frame): input from
 * a peer never aborts a process.
 *
 * Why an application-level ack on top of ZeroMQ: ZeroMQ is not a durable
 * queue. PUB and ROUTER silently drop at the high-water mark, messages
 * queued in a socket die with the peer process, and a reconnect does not
 * replay them. So every hand-off of responsibility is request/ack: the
 * receiver replies MSG_ANY_ACK only after its own durable write, the sender
 * keeps its copy and retries (possibly to another instance) on timeout, and
 * receivers make retries harmless by deduplicating on message_id.
 */
#ifndef MX_WIRE_H
#define MX_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx_msgid.h"

#define MX_WIRE_MAGIC 0x4d58434cu /* "MXCL" */
#define MX_WIRE_VERSION 1
#define MX_WIRE_HEADER_SIZE 40
/* Header field offsets, as in the table above (pinned by _Static_assert in
 * mx_wire.c). */
#define MX_WIRE_OFF_MAGIC 0
#define MX_WIRE_OFF_VERSION 4
#define MX_WIRE_OFF_TYPE 6
#define MX_WIRE_OFF_FLAGS 8
#define MX_WIRE_OFF_BODY_LENGTH 12
#define MX_WIRE_OFF_REQUEST_ID 16
#define MX_WIRE_OFF_MESSAGE_ID 24
/* Each field starts with tag u16 + length u32. */
#define MX_WIRE_FIELD_HEADER_SIZE 6
/* Largest frame accepted: a maximal message (SIZE limit, default 20 MB, up
 * to 50 MB configurable) plus envelope, with room to spare. The limit is on
 * the WHOLE frame (header + body), so it can double as ZMQ_MAXMSGSIZE. */
#define MX_WIRE_FRAME_MAX (64u * 1024u * 1024u)
/* Largest field a string accessor hands out (addresses, names, text). */
#define MX_WIRE_STRING_MAX 65536u

/* Frame flags. */
#define MX_FRAME_F_RETRY 0x1u /* sender already tried once: receiver should dedup */

/* X(name, number, sender -> receiver, purpose)
 *
 * Number ranges: 1-99 generic, 100-199 inbound<->filter, 200-299
 * inbound<->delivery, 300-399 delivery/inbound<->store, 400-499
 * imap<->store, 500-599 store<->store replication, 600-699 ha, 700-799 mon. */
#define MX_WIRE_MESSAGES(X)                                                         \
    X(MSG_ANY_ACK,                          1, "any -> any",                       \
      "reply to a request: F_STATUS, optional F_TEXT, echoes request_id")          \
    X(MSG_ANY_PING,                         2, "any -> any",                       \
      "liveness probe; answered with MSG_ANY_ACK")                                 \
    X(MSG_INBOUND_FILTER_CONNECT_CHECK,   100, "inbound -> filter",                \
      "connect-time reputation: F_CLIENT_ADDR, F_CLIENT_NAME, F_INSTANCE")         \
    X(MSG_FILTER_INBOUND_CONNECT_VERDICT, 101, "filter -> inbound",                \
      "F_VERDICT, F_SCORE, F_TEXT")                                                \
    X(MSG_INBOUND_FILTER_CONTENT_CHECK,   102, "inbound -> filter",                \
      "content verdict before 250: envelope fields + F_SPOOL_PATH or F_BODY")      \
    X(MSG_FILTER_INBOUND_CONTENT_VERDICT, 103, "filter -> inbound",                \
      "F_VERDICT, F_SCORE, F_TEXT, F_HEADER (repeated: headers to add)")           \
    X(MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT,200, "inbound -> delivery",              \
      "hand-off of an accepted message (message_id = the cluster id): F_INSTANCE, " \
      "F_SENDER, (F_RECIPIENT F_RCPT_NOTIFY F_RCPT_ORCPT)*, F_CLIENT_ADDR, "         \
      "F_CLIENT_NAME, F_AUTH_USER, F_ENVID, F_RET, F_BODY_TYPE, F_SMTPUTF8, "        \
      "F_ARRIVAL, F_SIZE, F_BODY; acked with MSG_ANY_ACK after delivery's durable " \
      "write (OK or DUPLICATE: inbound removes its copy; TEMPFAIL: retried; "        \
      "PERMFAIL: held for the operator)")                                         \
    /* mx-store's request API (issue 4). Every request names F_USER and,   \
     * where it applies, F_MAILBOX (UTF-8 IMAP name, '/' separated,        \
     * "INBOX" case-insensitive). Requests that change state are applied   \
     * through the store's numbered operation log and answered only after \
     * the log entry and the Maildir file are durable (and, once paired,   \
     * on the replica). Replies carry F_STATUS; NOT_FOUND / EXISTS /       \
     * OVER_QUOTA / STALE_EPOCH are enum mx_status values. UID sets are    \
     * IMAP sequence-set text over UIDs ("1:5,7,9:*"). */                   \
    X(MSG_ANY_STORE_APPEND,               300, "delivery|imap -> store",          \
      "F_USER, F_MAILBOX, F_FLAG*, F_ARRIVAL (internal date), F_BODY, "           \
      "F_QUOTA_BYTES, F_QUOTA_COUNT (0 = unlimited), F_CREATE (1 = create the "   \
      "mailbox if missing); message_id set = dedup: the same id appended to the " \
      "same user's mailbox again answers DUPLICATE with the first UID")          \
    X(MSG_STORE_ANY_APPEND_RESULT,        301, "store -> delivery|imap",          \
      "F_STATUS, F_UIDVALIDITY, F_UID, F_MODSEQ, F_QUOTA_USED, F_QUOTA_BYTES")    \
    X(MSG_ANY_STORE_MAILBOX_LIST,         302, "imap -> store",                   \
      "F_USER; reply MSG_STORE_ANY_MAILBOX_LIST_RESULT")                         \
    X(MSG_STORE_ANY_MAILBOX_LIST_RESULT,  303, "store -> imap",                   \
      "F_STATUS, (F_MAILBOX F_MAILBOX_ATTRS [F_SPECIAL_USE])*")                                  \
    X(MSG_ANY_STORE_MAILBOX_CREATE,       304, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_SPECIAL_USE; MSG_ANY_ACK (OK / EXISTS)")             \
    X(MSG_ANY_STORE_MAILBOX_DELETE,       305, "imap -> store",                   \
      "F_USER, F_MAILBOX; MSG_ANY_ACK (OK / NOT_FOUND)")                         \
    X(MSG_ANY_STORE_MAILBOX_RENAME,       306, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_MAILBOX_NEW (children move along); MSG_ANY_ACK")     \
    X(MSG_ANY_STORE_MAILBOX_SUBSCRIBE,    307, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_SUBSCRIBE (1/0); MSG_ANY_ACK")                       \
    X(MSG_ANY_STORE_MAILBOX_STATUS,       308, "imap -> store",                   \
      "F_USER, F_MAILBOX; reply MSG_STORE_ANY_MAILBOX_STATE")                    \
    X(MSG_ANY_STORE_MAILBOX_SELECT,       309, "imap -> store",                   \
      "F_USER, F_MAILBOX; reply MSG_STORE_ANY_MAILBOX_STATE with F_FLAG* "       \
      "(keywords in use) and the UID list (F_UID_SET)")                         \
    X(MSG_STORE_ANY_MAILBOX_STATE,        310, "store -> imap",                   \
      "F_STATUS, F_MESSAGES, F_UNSEEN, F_UIDVALIDITY, F_UIDNEXT, "                \
      "F_HIGHESTMODSEQ, F_SIZE, [F_FLAG*, F_UID_SET, F_FIRST_UNSEEN]")                           \
    X(MSG_ANY_STORE_MESSAGE_FETCH,        311, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, F_UID_SET, F_FETCH_ITEMS (bits); reply " \
      "MSG_STORE_ANY_FETCH_RESULT")                                             \
    X(MSG_STORE_ANY_FETCH_RESULT,         312, "store -> imap",                   \
      "F_STATUS, then per message F_UID followed by its items: F_FLAG*, "        \
      "F_MODSEQ, F_ARRIVAL, F_SIZE, F_ENVELOPE, F_BODYSTRUCTURE, F_MESSAGE_ID, " \
      "F_POP3_UIDL, F_BODY_FORM")  \
    X(MSG_ANY_STORE_MESSAGE_BODY,         313, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, F_UID, F_SECTION, F_OFFSET, F_LENGTH; "  \
      "reply MSG_STORE_ANY_BODY_RESULT (F_STATUS, F_BODY)")                     \
    X(MSG_STORE_ANY_BODY_RESULT,          314, "store -> imap",                   \
      "F_STATUS, F_BODY")                                                       \
    X(MSG_ANY_STORE_FLAGS_STORE,          315, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, F_UID_SET, F_FLAG_MODE, F_FLAG*, "       \
      "F_UNCHANGEDSINCE; reply MSG_STORE_ANY_FETCH_RESULT (new flags, modseq) "   \
      "plus F_MODIFIED_SET")                                                    \
    X(MSG_ANY_STORE_MESSAGE_EXPUNGE,      316, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, [F_UID_SET]; only \\Deleted ones; "     \
      "reply MSG_STORE_ANY_UIDS_RESULT")                                        \
    X(MSG_ANY_STORE_MESSAGE_COPY,         317, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, F_UID_SET, F_MAILBOX_NEW, F_MOVE (1 = "  \
      "move); reply MSG_STORE_ANY_UIDS_RESULT (source F_UID_SET, F_UID_SET_NEW)") \
    X(MSG_STORE_ANY_UIDS_RESULT,          318, "store -> imap",                   \
      "F_STATUS, F_UIDVALIDITY, F_UID_SET, [F_UID_SET_NEW], F_HIGHESTMODSEQ")    \
    X(MSG_ANY_STORE_QUOTA_GET,            319, "imap|delivery|inbound -> store",  \
      "F_USER; reply MSG_STORE_ANY_QUOTA_RESULT")                               \
    X(MSG_STORE_ANY_QUOTA_RESULT,         320, "store -> any",                    \
      "F_STATUS, F_QUOTA_USED, F_QUOTA_BYTES, F_MESSAGES, F_QUOTA_COUNT")        \
    X(MSG_ANY_STORE_CHANGES_SINCE,        321, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, F_MODSEQ (QRESYNC/CONDSTORE); reply "    \
      "MSG_STORE_ANY_FETCH_RESULT of changed messages + F_VANISHED_SET")         \
    X(MSG_ANY_STORE_MESSAGE_SEARCH,       322, "imap -> store",                   \
      "RESERVED, not served yet (PERMFAIL). Search today: mx-imapd evaluates "   \
      "the keys itself over what the store streams (FETCH metadata, BODY "       \
      "sections); this message is the planned store-side fast path: F_USER, "    \
      "F_MAILBOX, F_UIDVALIDITY, F_SEARCH (IMAP search key text, UTF-8); reply " \
      "MSG_STORE_ANY_UIDS_RESULT (F_UID_SET of matches)")                        \
    X(MSG_ANY_STORE_RECENT_CLAIM,         323, "imap -> store",                   \
      "F_USER, F_MAILBOX, F_UIDVALIDITY, F_UIDNEXT (claim below this), F_CLAIM "  \
      "(1 = SELECT / new mail told: claim; 0 = EXAMINE / STATUS: look); reply "  \
      "MSG_STORE_ANY_RECENT_RESULT")                                            \
    X(MSG_STORE_ANY_RECENT_RESULT,        324, "store -> imap",                   \
      "F_STATUS, F_UID (first UID that is \\\\Recent for the asker), F_MESSAGES " \
      "(live messages from that UID on)")                                       \
    X(MSG_STORE_ANY_MAILBOX_CHANGED,      330, "store -> imap (PUB)",             \
      "topic = user; F_USER, F_MAILBOX, F_MODSEQ, F_CHANGE (bits: new mail, "     \
      "flags, expunge, mailbox list); lossy by design: IDLE re-reads state")    \
    /* Store replication (issue 6): primary -> replica, ordered oplog.      \
     * Every message carries F_SHARD and F_EPOCH; a receiver whose epoch is \
     * higher answers MX_STATUS_STALE_EPOCH and applies nothing.            */ \
    X(MSG_STORE_STORE_REPLICA_HELLO,      340, "primary -> replica",             \
      "F_SHARD, F_EPOCH; reply MSG_STORE_STORE_REPLICA_POSITION: where the "    \
      "replica's log ends, so shipping starts at F_SEQ + 1")                    \
    X(MSG_STORE_STORE_REPLICA_POSITION,   341, "replica -> primary",             \
      "F_STATUS, F_SEQ (last applied), F_EPOCH (epoch of that record), "        \
      "F_SEQ_EPOCH_SET (history: \"epoch:first_seq,...\"), [F_OPLOG_RECORD "    \
      "(the record at F_SEQ: the primary compares it byte for byte)], "        \
      "[F_NEEDS_SNAPSHOT 1: a snapshot did not finish, F_SEQ means nothing]")  \
    X(MSG_STORE_STORE_OPLOG_APPLY,        342, "primary -> replica",             \
      "F_SHARD, F_EPOCH, F_SEQ (of the first record), F_SEQ_EPOCH_SET (the "   \
      "primary's history), F_LAG (records committed after these), "             \
      "(F_OPLOG_RECORD [F_BODY])*: records in order, an APPEND followed by its " \
      "message bytes (none: the file is gone, an EXPUNGE follows); "            \
      "acked (MSG_ANY_ACK, F_SEQ = last applied) only after the replica's "     \
      "own durable commit")                                                     \
    X(MSG_STORE_STORE_RESYNC_BEGIN,       343, "primary -> replica",             \
      "F_SHARD, F_EPOCH, F_SEQ (S0: the primary's last seq in the snapshot): "  \
      "the replica's log diverged or is behind the primary's trimmed log: it "  \
      "wipes its index and Maildirs (marked incomplete until SNAPSHOT_END); "   \
      "SNAPSHOT_CHUNKs follow")                                                 \
    X(MSG_STORE_STORE_SNAPSHOT_CHUNK,     344, "primary -> replica",             \
      "F_SHARD, F_EPOCH, F_SEQ (S0), (F_SNAPSHOT_ROW [F_BODY])*: index rows "   \
      "in order, a live message row followed by its file's bytes (none: the "   \
      "file is gone, a later record expunges it); acked after the durable "     \
      "commit")                                                                 \
    X(MSG_STORE_STORE_SNAPSHOT_END,       345, "primary -> replica",             \
      "F_SHARD, F_EPOCH, F_SEQ (S0), F_SEQ_EPOCH_SET (history up to S0), "      \
      "[F_OPLOG_RECORD (the record at S0)]: the replica's log now ends at S0; "  \
      "acked (MSG_ANY_ACK, F_SEQ = S0), then OPLOG_APPLY from S0 + 1")          \
    /* mx-ha <-> local daemons and the cluster map (issue 6). */             \
    X(MSG_HA_ANY_ROLE_ASSIGN,             400, "ha -> local daemon",             \
      "F_PAIR, F_HA_ROLE (enum mx_ha_role), F_EPOCH, F_PEER_ENDPOINT* (for a "  \
      "primary: its replicas' replication endpoints, none = run degraded; "     \
      "for a replica: none); acked once the daemon acts on it")                \
    X(MSG_ANY_HA_STATUS_REPORT,           401, "local daemon -> ha",             \
      "F_PAIR, F_HA_ROLE (what it runs as now), F_EPOCH, F_SEQ (last "          \
      "committed/applied oplog record), F_IN_SYNC (1 = a replica caught up), "  \
      "F_ENDPOINT (its service endpoint), F_REPLICATION_ENDPOINT; a store "     \
      "primary reports F_IN_SYNC 0 when it lost a replica (no ack in time), "   \
      "and adds F_PEER_ENDPOINT* (its replicas not lost) and F_LAG; acked, "    \
      "the ack carrying the "                                                   \
      "assignment (F_HA_ROLE, F_EPOCH, F_PEER_ENDPOINT*: see ROLE_ASSIGN); "    \
      "sent every heartbeat and on change")                                     \
    X(MSG_HA_ANY_CLUSTER_MAP,             402, "ha -> any (PUB)",                \
      "topic \"map\"; F_EPOCH, F_QUORATE, (F_PAIR F_NODE F_ENDPOINT)*: the "   \
      "active member of every pair; the highest epoch seen wins")              \
    X(MSG_ANY_HA_CLUSTER_STATUS,          403, "mxctl -> ha",                    \
      "reply MSG_HA_ANY_CLUSTER_STATUS_RESULT")                                  \
    X(MSG_HA_ANY_CLUSTER_STATUS_RESULT,   404, "ha -> mxctl",                    \
      "F_STATUS, F_EPOCH, F_QUORATE, F_NODE* (members), then per pair F_PAIR, " \
      "F_NODE (active, \"\" = none), F_EPOCH, then per member of the pair "     \
      "F_NODE, F_HA_ROLE, F_SEQ, F_IN_SYNC, F_LAG (records behind), F_TEXT "   \
      "(up | no-report | not-in-view | excluded)")                             \
    X(MSG_ANY_HA_SWITCHOVER,              405, "mxctl -> ha",                    \
      "F_PAIR, [F_NODE target]: graceful move (drain, sync, switch); MSG_ANY_ACK")\
    X(MSG_HA_HA_STATE,                    406, "ha -> ha (Corosync CPG)",        \
      "F_NODE (sender), F_EPOCH (its highest map), F_QUORATE; followed in the "  \
      "same CPG payload by one MSG_HA_ANY_ROLE_ASSIGN per map pair and one "    \
      "MSG_ANY_HA_STATUS_REPORT per local daemon (ha/ha_decide.h)")            \
    X(MSG_ANY_MON_EVENT,                  700, "any -> mon (PUB)",                 \
      "one log event: F_ROLE, F_NODE, F_LEVEL, F_TEXT (the key=value line)")

/* X(name, tag, kind, purpose); kind is U32, U64, STR, BYTES or MSGID. */
#define MX_WIRE_FIELDS(X)                                                         \
    X(F_STATUS,          1, U32,   "enum mx_status")                             \
    X(F_TEXT,            2, STR,   "human-readable reason or log line")          \
    X(F_ROLE,            3, STR,   "sending role, e.g. inbound")                 \
    X(F_NODE,            4, STR,   "sending node name")                          \
    X(F_LEVEL,           5, U32,   "enum mx_log_level")                          \
    X(F_INSTANCE,        6, STR,   "instance name within a role, e.g. mta")      \
    X(F_SENDER,         10, STR,   "envelope sender (may be empty: <>)")         \
    X(F_RECIPIENT,      11, STR,   "envelope recipient; repeated")               \
    X(F_BODY,           12, BYTES, "message bytes (RFC 5322, CRLF)")             \
    X(F_SPOOL_PATH,     13, STR,   "path of the spooled message on this node")   \
    X(F_SIZE,           14, U64,   "message size in bytes")                      \
    X(F_CLIENT_ADDR,    20, STR,   "SMTP client IP address")                     \
    X(F_CLIENT_NAME,    21, STR,   "SMTP client reverse name or HELO")           \
    X(F_AUTH_USER,      22, STR,   "SMTP AUTH identity, if any")                 \
    X(F_VERDICT,        30, U32,   "enum mx_verdict")                            \
    X(F_SCORE,          31, U32,   "score x 100 (spam/reputation)")              \
    X(F_HEADER,         32, STR,   "a header line to add; repeated")               \
    X(F_RCPT_NOTIFY,    40, STR,   "DSN NOTIFY of the F_RECIPIENT before it (\"\" = none)") \
    X(F_RCPT_ORCPT,     41, STR,   "DSN ORCPT of the F_RECIPIENT before it (\"\" = none)") \
    X(F_ENVID,          42, STR,   "DSN ENVID")                                    \
    X(F_RET,            43, STR,   "DSN RET: FULL or HDRS")                         \
    X(F_BODY_TYPE,      44, STR,   "7BIT, 8BITMIME or BINARYMIME")                  \
    X(F_SMTPUTF8,       45, U32,   "1 if the transaction used SMTPUTF8")            \
    X(F_ARRIVAL,        46, U64,   "arrival time, ms since the Unix epoch")        \
    X(F_USER,           50, STR,   "mailbox owner: the account's primary mail address") \
    X(F_MAILBOX,        51, STR,   "mailbox name, UTF-8, '/' hierarchy")           \
    X(F_MAILBOX_NEW,    52, STR,   "destination / new mailbox name")               \
    X(F_MAILBOX_ATTRS,  53, U32,   "bits: subscribed, has children, special use")  \
    X(F_SPECIAL_USE,    54, STR,   "RFC 6154 attribute, e.g. \\\\Sent")             \
    X(F_SUBSCRIBE,      55, U32,   "1 subscribe, 0 unsubscribe")                   \
    X(F_CREATE,         56, U32,   "1 = create the mailbox if missing")            \
    X(F_FLAG,           57, STR,   "a system flag or keyword; repeated")           \
    X(F_FLAG_MODE,      58, U32,   "0 replace, 1 add, 2 remove")                   \
    X(F_UID,            60, U32,   "message UID (starts a record in fetch results)") \
    X(F_UID_SET,        61, STR,   "IMAP sequence-set over UIDs")                  \
    X(F_UID_SET_NEW,    62, STR,   "UIDs in the destination (COPYUID order)")      \
    X(F_MODIFIED_SET,   63, STR,   "UIDs not stored (UNCHANGEDSINCE failed)")      \
    X(F_VANISHED_SET,   64, STR,   "UIDs expunged since F_MODSEQ")                 \
    X(F_UIDVALIDITY,    65, U32,   "mailbox UIDVALIDITY (requests: must match)")   \
    X(F_UIDNEXT,        66, U32,   "next UID to be assigned")                      \
    X(F_MODSEQ,         67, U64,   "a modification sequence")                      \
    X(F_HIGHESTMODSEQ,  68, U64,   "mailbox HIGHESTMODSEQ")                        \
    X(F_UNCHANGEDSINCE, 69, U64,   "CONDSTORE UNCHANGEDSINCE")                     \
    X(F_MESSAGES,       70, U32,   "message count")                                \
    X(F_UNSEEN,         71, U32,   "messages without \\\\Seen")                     \
    X(F_FETCH_ITEMS,    72, U32,   "bits: flags, modseq, internaldate, size, envelope, bodystructure, message id") \
    X(F_ENVELOPE,       73, STR,   "cached IMAP ENVELOPE")                         \
    X(F_BODYSTRUCTURE,  74, STR,   "cached IMAP BODYSTRUCTURE")                    \
    X(F_MESSAGE_ID,     75, STR,   "cluster message id (text) of a stored message") \
    X(F_SECTION,        76, STR,   "IMAP body section spec (\"\", \"1.2\", \"HEADER\", ...)") \
    X(F_OFFSET,         77, U64,   "partial fetch start")                           \
    X(F_LENGTH,         78, U64,   "partial fetch length (0 = to the end)")         \
    X(F_MOVE,           79, U32,   "1 = move instead of copy")                      \
    X(F_QUOTA_BYTES,    80, U64,   "quota limit in bytes (0 = unlimited)")          \
    X(F_QUOTA_COUNT,    81, U64,   "quota limit in messages (0 = unlimited)")       \
    X(F_QUOTA_USED,     82, U64,   "bytes in use")                                 \
    X(F_SEARCH,         83, STR,   "IMAP search key text")                          \
    X(F_CHANGE,         84, U32,   "change bits for MSG_STORE_ANY_MAILBOX_CHANGED")  \
    X(F_EPOCH,          85, U64,   "cluster-map epoch (fences an old primary)")     \
    X(F_POP3_UIDL,      86, STR,   "POP3 unique id: the Maildir base name, stable for the message's life") \
    X(F_BODY_FORM,      87, STR,   "cached IMAP BODY (non-extensible BODYSTRUCTURE)") \
    X(F_SHARD,          90, STR,   "store shard name (mxStoreShard)")             \
    X(F_SEQ,            91, U64,   "operation log sequence number")               \
    X(F_OPLOG_RECORD,   92, BYTES, "one encoded operation log record (store.h)")  \
    X(F_SEQ_EPOCH_SET,  93, STR,   "log history: epoch:first_seq pairs")          \
    X(F_PAIR,           94, STR,   "HA pair name (a shard or an active/standby role)") \
    X(F_HA_ROLE,        95, U32,   "enum mx_ha_role")                             \
    X(F_PEER_ENDPOINT,  96, STR,   "a peer's replication endpoint; repeated")     \
    X(F_ENDPOINT,       97, STR,   "a service endpoint (tcp://host:port)")        \
    X(F_REPLICATION_ENDPOINT, 98, STR, "where a store receives replicated records") \
    X(F_IN_SYNC,        99, U32,   "1 = replica caught up with its primary")      \
    X(F_QUORATE,       100, U32,   "1 = the sender's partition has quorum")       \
    X(F_LAG,           101, U64,   "replication lag in records")                 \
    X(F_FIRST_UNSEEN,  110, U32,   "UID of the first message without \\\\Seen (0 = none)") \
    X(F_CLAIM,         111, U32,   "1 = claim \\\\Recent, 0 = only look")                  \
    X(F_VIEW_ID,       112, U64,   "mx-ha: the Corosync CPG view a STATE was sent in (hash of its members)") \
    X(F_SNAPSHOT_ROW,  113, BYTES, "one index row of a store snapshot: u8 database, u32 key length, key, value") \
    X(F_NEEDS_SNAPSHOT, 114, U32,  "1 = the replica holds no usable log (an interrupted snapshot)") \
    X(F_OPLOG_FIRST,   115, U64,   "first operation-log record a store still holds (store.oplog_keep)")

#define MX_WIRE_ENUM_ENTRY(name, number, ...) name = number,
enum mx_msg_type { MX_WIRE_MESSAGES(MX_WIRE_ENUM_ENTRY) };
enum mx_field_tag { MX_WIRE_FIELDS(MX_WIRE_ENUM_ENTRY) };
#undef MX_WIRE_ENUM_ENTRY

enum mx_field_kind { MX_FIELD_U32, MX_FIELD_U64, MX_FIELD_STR, MX_FIELD_BYTES, MX_FIELD_MSGID };

/* Bits of F_MAILBOX_ATTRS (MSG_STORE_ANY_MAILBOX_LIST_RESULT). */
#define MX_MAILBOX_ATTR_SUBSCRIBED 0x1u
#define MX_MAILBOX_ATTR_HAS_CHILDREN 0x2u
#define MX_MAILBOX_ATTR_SPECIAL_USE 0x4u /* F_SPECIAL_USE follows the name */
#define MX_MAILBOX_ATTR_NONEXISTENT 0x8u /* a subscribed name that is no mailbox */

/* Bits of F_CHANGE (MSG_STORE_ANY_MAILBOX_CHANGED). */
#define MX_CHANGE_NEW_MAIL 0x1u
#define MX_CHANGE_FLAGS 0x2u
#define MX_CHANGE_EXPUNGE 0x4u
#define MX_CHANGE_MAILBOX_LIST 0x8u

/* Bits of F_FETCH_ITEMS (MSG_ANY_STORE_MESSAGE_FETCH): which per-message
 * fields the store puts after each F_UID. */
#define MX_FETCH_FLAGS 0x1u         /* F_FLAG* */
#define MX_FETCH_MODSEQ 0x2u        /* F_MODSEQ */
#define MX_FETCH_INTERNALDATE 0x4u  /* F_ARRIVAL */
#define MX_FETCH_SIZE 0x8u          /* F_SIZE */
#define MX_FETCH_ENVELOPE 0x10u     /* F_ENVELOPE */
#define MX_FETCH_BODYSTRUCTURE 0x20u /* F_BODYSTRUCTURE */
#define MX_FETCH_MESSAGE_ID 0x40u   /* F_MESSAGE_ID */
#define MX_FETCH_POP3_UIDL 0x80u    /* F_POP3_UIDL */
#define MX_FETCH_BODY_FORM 0x100u   /* F_BODY_FORM */
#define MX_FETCH_ALL 0x1ffu

/* Status carried in F_STATUS of MSG_ANY_ACK. */
enum mx_status {
    MX_STATUS_OK = 0,        /* done and durable */
    MX_STATUS_DUPLICATE = 1, /* already had it (same message_id): also done */
    MX_STATUS_TEMPFAIL = 2,  /* our failure: retry later, maybe elsewhere */
    MX_STATUS_PERMFAIL = 3,  /* the request itself is wrong; do not retry */
    MX_STATUS_NOT_FOUND = 4, /* no such user / mailbox / message */
    MX_STATUS_EXISTS = 5,    /* mailbox already exists */
    MX_STATUS_OVER_QUOTA = 6, /* the append would exceed the quota: 552 5.2.2 / NO [OVERQUOTA] */
    MX_STATUS_STALE_EPOCH = 7, /* sent to a store that is no longer primary: ask the cluster map */
    MX_STATUS_UIDVALIDITY = 8, /* the request's UIDVALIDITY does not match: reselect */
};

/* F_HA_ROLE: what mx-ha tells a daemon to be. FENCED is the safe state: a
 * store that is fenced (lost quorum, lost its mx-ha, or outvoted) never
 * acknowledges a write. */
enum mx_ha_role {
    MX_HA_FENCED = 0,
    MX_HA_PRIMARY = 1, /* store: serves and acknowledges writes; frontend: active */
    MX_HA_REPLICA = 2, /* store: applies the primary's log, refuses clients */
    MX_HA_STANDBY = 3, /* frontend: up, not given clients */
};

/* Verdict carried in F_VERDICT by mx-filter. */
enum mx_verdict {
    MX_VERDICT_ACCEPT = 0,
    MX_VERDICT_REJECT = 1,     /* 5xx */
    MX_VERDICT_TEMPFAIL = 2,   /* 4xx */
    MX_VERDICT_DISCARD = 3,    /* 250 but drop */
    MX_VERDICT_QUARANTINE = 4, /* 250, held for review */
};

/* Names for logs and mon: "MSG_ANY_ACK"; NULL for an unknown number. */
const char *mx_msg_type_name(uint32_t type);
const char *mx_field_tag_name(uint32_t tag);
/* mx_field_tag_kind - -1 for an unknown tag. */
int mx_field_tag_kind(uint32_t tag, enum mx_field_kind *kind_r);

/* ---- building a frame ------------------------------------------------ */

/* A growable frame under construction. Append-only; put helpers never fail
 * (allocation failure is fatal), but a frame that would exceed
 * MX_WIRE_FRAME_MAX is marked and mx_frame_finish then reports it. */
struct mx_frame {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool too_big;
    /* First programming error seen by a put (a typed put on a tag of another
     * kind, an unknown message type); NULL if none. Later puts are ignored
     * once too_big or error is set, and mx_frame_finish reports it. */
    const char *error;
    uint32_t error_tag;
};

void mx_frame_init(struct mx_frame *frame, enum mx_msg_type type, uint64_t request_id,
                   const struct mx_msgid *message_id /* NULL = zeros */);
void mx_frame_set_flags(struct mx_frame *frame, uint32_t flags);
void mx_frame_put_u32(struct mx_frame *frame, enum mx_field_tag tag, uint32_t value);
void mx_frame_put_u64(struct mx_frame *frame, enum mx_field_tag tag, uint64_t value);
void mx_frame_put_str(struct mx_frame *frame, enum mx_field_tag tag, const char *value);
void mx_frame_put_bytes(struct mx_frame *frame, enum mx_field_tag tag, const void *value, size_t len);
void mx_frame_put_msgid(struct mx_frame *frame, enum mx_field_tag tag, const struct mx_msgid *id);
/* mx_frame_put_field - append one field verbatim with any tag number, known
 * or not, without checking its length against the tag's kind: for tests,
 * fuzzers and relaying fields this build does not know. */
void mx_frame_put_field(struct mx_frame *frame, uint16_t tag, const void *value, size_t len);
/* mx_frame_finish - patch body_length; 0 and the bytes, or -1 with error_r
 * if the frame grew past MX_WIRE_FRAME_MAX. The bytes stay owned by frame. */
int mx_frame_finish(struct mx_frame *frame, const uint8_t **data_r, size_t *len_r,
                    const char **error_r);
void mx_frame_free(struct mx_frame *frame);

/* ---- reading a frame ------------------------------------------------- */

/* A validated view into received bytes; it points into the caller's buffer,
 * which must outlive the view. */
struct mx_frame_view {
    uint16_t type;
    uint32_t flags;
    uint64_t request_id;
    struct mx_msgid message_id;
    const uint8_t *body;
    size_t body_len;
};

/* mx_frame_parse - validate header and field structure of data[0..len).
 * 0 on success; -1 with a static error_r ("bad magic", "truncated field
 * 3 at offset 52", ...) on any malformation. Never reads outside data.
 * Fields with a tag this build does not know are accepted and skipped by the
 * getters (newer senders may add fields); a KNOWN tag whose length does not
 * fit its kind (U32 4, U64 8, MSGID 16 bytes) is an error.
 *
 * Error strings (here and from mx_frame_finish) are either string literals
 * or, when they carry numbers (offsets, tags), a thread-local buffer that
 * stays valid until the next failing mx_frame_parse/mx_frame_finish in the
 * same thread: log or copy it before parsing again. */
int mx_frame_parse(const void *data, size_t len, struct mx_frame_view *view_r,
                   const char **error_r);

/* Field access: first occurrence of tag. 0 found, -1 missing or of the
 * wrong length for its kind. A typed getter also returns -1 when tag is a
 * known tag of another kind (get_u32 on F_TEXT); get_bytes returns the raw
 * value of any field. */
int mx_frame_get_u32(const struct mx_frame_view *view, enum mx_field_tag tag, uint32_t *value_r);
int mx_frame_get_u64(const struct mx_frame_view *view, enum mx_field_tag tag, uint64_t *value_r);
int mx_frame_get_msgid(const struct mx_frame_view *view, enum mx_field_tag tag, struct mx_msgid *id_r);
int mx_frame_get_bytes(const struct mx_frame_view *view, enum mx_field_tag tag,
                       const uint8_t **value_r, size_t *len_r);
/* mx_frame_get_str - like get_bytes, but -1 also for a value with a NUL
 * byte or longer than MX_WIRE_STRING_MAX; returns a fresh NUL-terminated
 * copy the caller frees. */
int mx_frame_get_str(const struct mx_frame_view *view, enum mx_field_tag tag, char **value_r);
/* mx_frame_get_text - get_str with the caller's length limit instead of
 * MX_WIRE_STRING_MAX: for values that grow with a mailbox (UID sets of a
 * fragmented mailbox run to megabytes), bounded by the frame itself. */
int mx_frame_get_text(const struct mx_frame_view *view, enum mx_field_tag tag, size_t max_len,
                      char **value_r);

/* Iteration over all fields in order (for repeated fields). */
struct mx_field_iter {
    size_t offset;
};
/* mx_frame_next_field - 1 and the next field, 0 at the end. The structure
 * was validated by mx_frame_parse, so this cannot run outside the body. */
int mx_frame_next_field(const struct mx_frame_view *view, struct mx_field_iter *iter,
                        uint16_t *tag_r, const uint8_t **value_r, size_t *len_r);

#endif
