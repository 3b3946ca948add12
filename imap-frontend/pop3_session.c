/* pop3_session - one POP3 connection (RFC 1939, RFC 2449 CAPA and
 * response codes, RFC 2595 STLS, RFC 5034 SASL, RFC 3206 [SYS]/[AUTH]).
 *
 * Execution model. Commands run one at a time, in the order received
 * (RFC 2449 PIPELINING: the client may send many; the rest waits in the
 * connection's input buffer, which mx_conn bounds). A command either
 * answers at once or starts one asynchronous step (the LDAP password
 * check, a store request) and sets `busy`; the step's callback answers,
 * clears `busy` and calls mx_conn_resume() so the next command is read.
 *
 * The maildrop is the INBOX of the user's store shard as it was at login:
 * message numbers 1..n in UID order, with sizes and unique-ids (a hash of
 * the Maildir base name, so UIDL survives failover and reindexing). DELE
 * only marks; the store is changed at QUIT alone (UPDATE state: \Deleted
 * then EXPUNGE of exactly the marked UIDs), and +OK goes out only after
 * the store acknowledged. A connection that drops without QUIT deletes
 * nothing.
 *
 * Not done, on purpose: the RFC 1939 exclusive maildrop lock ([IN-USE]).
 * Frontends are stateless and may run anywhere; two POP3 sessions of one
 * user are harmless here because deletion names UIDs, which the store
 * never reuses, and a message already gone is simply skipped.
 *
 * Lifetime: on_close frees the session, except while QUIT's deletions are
 * in flight: then the session finishes them without a connection (RFC
 * 1939 6: UPDATE happens once QUIT was received) and frees itself. */
#include "imapd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>

#include "mx_alloc.h"
#include "pop3_proto.h"

/* Client errors (bad syntax, wrong state, failed logins) before the
 * connection is closed: a well-behaved client makes a handful. */
#define POP3_MAX_ERRORS 20
/* RETR asks the store for the message in pieces of this size, so memory
 * per session stays bounded whatever the message size. */
#define POP3_RETR_CHUNK (1024u * 1024u)
/* TOP usually needs only the header: a small first piece. */
#define POP3_TOP_CHUNK (64u * 1024u)
/* Stop taking commands or fetching the next piece while this much output
 * is unsent; mx_conn wakes us when the output drains to a quarter of the
 * listener's 256 KiB output_high, i.e. this value. */
#define POP3_OUTPUT_PAUSE (64u * 1024u)
/* The store refuses UID sets over 10,000 ranges and strings over 64 KiB:
 * QUIT sends the marked UIDs in batches well below both. */
#define POP3_UIDSET_MAX_LEN 16000u
#define POP3_UIDSET_MAX_RANGES 2000u

enum pop3_state {
    POP3_AUTHORIZATION,
    POP3_TRANSACTION,
    POP3_UPDATE, /* QUIT received: deleting */
    POP3_DONE,   /* closing; nothing more is read */
};

struct pop3_session {
    struct imapd_server *server;
    const struct imapd_listener *listener;
    struct mx_conn *conn; /* NULL once on_close ran */
    char sid[32];
    char peer_ip[64];
    char ip_key[72]; /* "ip:<addr>": the per-address failed-login count */
    bool ready;      /* on_ready ran */
    bool admitted;   /* imapd_admit said yes */
    bool logged_out; /* pop3.logout written */
    enum pop3_state state;
    bool busy;         /* an asynchronous step runs; input waits */
    bool sasl_pending; /* AUTH PLAIN sent "+ ", the response line is next */
    bool discarding_line;
    bool tls_switched; /* STLS began: the input buffer in hand is stale */
    unsigned errors;
    uint64_t started_ms;

    /* authorization */
    bool have_user;
    char login[POP3_CREDENTIAL_MAX + 1]; /* from USER or SASL, for logs */
    struct mx_auth_config auth_cfg;      /* server->auth, logged as proto=pop3 */
    struct mx_auth_check *auth_check;
    struct mx_identity identity;
    struct imapd_shard *shard;
    bool inbox_create_tried;

    /* the store */
    struct imapd_store_call call;
    uint32_t uidvalidity;
    struct pop3_maildrop drop;

    /* RETR / TOP in progress */
    struct {
        uint32_t idx;
        bool top;
        bool started;   /* "+OK" written: a failure now can only close */
        bool need_more; /* waiting for the output to drain before the next piece */
        uint64_t offset;
        uint32_t chunk; /* size of the next piece asked for */
        uint32_t asked; /* size of the piece in flight */
        struct pop3_body_encoder enc;
    } xfer;

    /* UPDATE */
    uint32_t *del_uids;
    size_t n_del, del_next, batch_n;
    char *batch_set;
    uint32_t removed;

    /* for pop3.logout */
    uint32_t retrieved;
    uint64_t bytes_sent;
};

static void pop3_session_free(struct pop3_session *s);

/* ---- replies --------------------------------------------------------------- */

static void pop3_printf(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pop3_printf(struct pop3_session *s, const char *fmt, ...)
{
    if (s->conn == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(mx_conn_output(s->conn), fmt, ap);
    va_end(ap);
}

static void pop3_logout_log(struct pop3_session *s, const char *reason)
{
    if (s->logged_out || s->identity.mail == NULL)
        return;
    s->logged_out = true;
    mx_log(MX_LOG_INFO, "pop3.logout", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("user", s->identity.mail), MX_KVU("retrieved", s->retrieved),
           MX_KVU("deleted", s->removed), MX_KVU("bytes", s->bytes_sent),
           MX_KVU("duration_ms", mx_now_ms() - s->started_ms), MX_KV("reason", reason));
}

/* pop3_close - stop reading and close once the last reply left. */
static void pop3_close(struct pop3_session *s, const char *reason)
{
    s->state = POP3_DONE;
    pop3_logout_log(s, reason);
    if (s->conn)
        mx_conn_close_after_flush(s->conn, reason);
}

/* pop3_client_error - "-ERR text" for something the client did wrong;
 * too many of them end the session. */
static void pop3_client_error(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void pop3_client_error(struct pop3_session *s, const char *fmt, ...)
{
    if (s->conn == NULL)
        return;
    struct evbuffer *out = mx_conn_output(s->conn);
    evbuffer_add(out, "-ERR ", 5);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
    if (++s->errors >= POP3_MAX_ERRORS) {
        mx_log(MX_LOG_NOTICE, "pop3.too_many_errors", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KVU("errors", s->errors));
        pop3_printf(s, "-ERR Too many errors, closing connection\r\n");
        pop3_close(s, "too many errors");
    }
}

/* pop3_step_done - an asynchronous step answered: read on. */
static void pop3_step_done(struct pop3_session *s)
{
    s->busy = false;
    if (s->conn)
        mx_conn_resume(s->conn);
}

static const char *store_status_name(enum mx_status status)
{
    switch (status) {
    case MX_STATUS_OK:
        return "ok";
    case MX_STATUS_DUPLICATE:
        return "duplicate";
    case MX_STATUS_TEMPFAIL:
        return "tempfail";
    case MX_STATUS_PERMFAIL:
        return "permfail";
    case MX_STATUS_NOT_FOUND:
        return "not_found";
    case MX_STATUS_EXISTS:
        return "exists";
    case MX_STATUS_OVER_QUOTA:
        return "over_quota";
    case MX_STATUS_STALE_EPOCH:
        return "stale_epoch";
    case MX_STATUS_UIDVALIDITY:
        return "uidvalidity";
    }
    return "unknown";
}

/* pop3_store_send - frame to the user's shard; -1 when it could not even
 * be queued (logged by imapd_store_request). The frame is freed here. */
static int pop3_store_send(struct pop3_session *s, struct mx_frame *frame,
                           imapd_store_done_fn *done)
{
    int rc = imapd_store_request(s->shard, frame, &s->call, done, s);
    mx_frame_free(frame);
    return rc;
}

/* ---- CAPA ------------------------------------------------------------------ */

static void pop3_cmd_capa(struct pop3_session *s)
{
    pop3_printf(s, "+OK Capability list follows\r\n"
                   "TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n");
    if (s->state == POP3_AUTHORIZATION) {
        /* No password mechanism is offered where it would be refused
         * (RFC 2595 2.3 / RFC 5034 8): the client does STLS first. */
        if (imapd_plaintext_auth_allowed(s->server, s->conn))
            pop3_printf(s, "USER\r\nSASL PLAIN\r\n");
        if (!mx_conn_is_tls(s->conn) && mx_conn_has_tls_ctx(s->conn))
            pop3_printf(s, "STLS\r\n");
    }
    pop3_printf(s, "IMPLEMENTATION mxcluster\r\n.\r\n");
}

/* ---- login -------------------------------------------------------------------- */

static void pop3_login_failed(struct pop3_session *s)
{
    mx_identity_clear(&s->identity);
    s->shard = NULL;
    s->inbox_create_tried = false;
    s->state = POP3_AUTHORIZATION;
}

/* pop3_maildrop_unavailable - the store could not give us the INBOX. */
static void pop3_maildrop_unavailable(struct pop3_session *s, enum mx_status status,
                                      const char *text)
{
    mx_log(MX_LOG_WARNING, "pop3.maildrop_unavailable", MX_KV("sid", s->sid),
           MX_KV("peer", s->peer_ip), MX_KV("user", s->identity.mail),
           MX_KV("shard", s->shard ? s->shard->name : NULL),
           MX_KV("status", store_status_name(status)), MX_KV("error", text));
    pop3_printf(s, "-ERR [SYS/TEMP] Your mailbox is unavailable, try again later\r\n");
    pop3_login_failed(s);
    pop3_step_done(s);
}

static void pop3_login_complete(struct pop3_session *s)
{
    s->state = POP3_TRANSACTION;
    s->errors = 0; /* what counted before login was about logging in */
    if (s->conn)
        mx_conn_set_idle_timeout(s->conn, s->server->pop3_idle_timeout_ms);
    char tls[128] = "";
    if (s->conn)
        mx_conn_tls_info(s->conn, tls, sizeof tls);
    mx_log(MX_LOG_INFO, "pop3.login", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("user", s->identity.mail), MX_KV("login", s->login),
           MX_KV("shard", s->shard->name), MX_KV("tls", tls[0] ? tls : "none"),
           MX_KVU("messages", s->drop.count), MX_KVU("bytes", s->drop.bytes));
    pop3_printf(s, "+OK Logged in, %u message%s (%llu octets)\r\n", s->drop.count,
                s->drop.count == 1 ? "" : "s",
                (unsigned long long)s->drop.bytes);
    pop3_step_done(s);
}

static void pop3_on_fetch(void *ctx, enum mx_status status, const char *text,
                          const struct mx_frame_view *reply)
{
    struct pop3_session *s = ctx;
    if (status != MX_STATUS_OK) {
        pop3_maildrop_unavailable(s, status, text);
        return;
    }
    const char *error;
    if (pop3_maildrop_from_fetch(reply, &s->drop, &error) < 0) {
        pop3_maildrop_unavailable(s, MX_STATUS_PERMFAIL, error);
        return;
    }
    pop3_login_complete(s);
}

static void pop3_select_inbox(struct pop3_session *s);

static void pop3_on_create(void *ctx, enum mx_status status, const char *text,
                           const struct mx_frame_view *reply)
{
    struct pop3_session *s = ctx;
    (void)reply;
    if (status != MX_STATUS_OK && status != MX_STATUS_EXISTS) {
        pop3_maildrop_unavailable(s, status, text);
        return;
    }
    pop3_select_inbox(s);
}

static void pop3_on_select(void *ctx, enum mx_status status, const char *text,
                           const struct mx_frame_view *reply)
{
    struct pop3_session *s = ctx;
    if (status == MX_STATUS_NOT_FOUND && !s->inbox_create_tried) {
        /* A brand-new account whose first client is POP3: its INBOX is
         * created here, like IMAP does at first login. */
        s->inbox_create_tried = true;
        struct mx_frame frame;
        imapd_store_frame(&frame, MSG_ANY_STORE_MAILBOX_CREATE, s->identity.mail, "INBOX");
        if (pop3_store_send(s, &frame, pop3_on_create) < 0)
            pop3_maildrop_unavailable(s, MX_STATUS_TEMPFAIL, "request not queued");
        return;
    }
    if (status != MX_STATUS_OK) {
        pop3_maildrop_unavailable(s, status, text);
        return;
    }
    uint32_t uidnext = 0, messages = 0;
    if (mx_frame_get_u32(reply, F_UIDVALIDITY, &s->uidvalidity) < 0 ||
        mx_frame_get_u32(reply, F_UIDNEXT, &uidnext) < 0 ||
        mx_frame_get_u32(reply, F_MESSAGES, &messages) < 0) {
        pop3_maildrop_unavailable(s, MX_STATUS_PERMFAIL,
                                  "mailbox state without UIDVALIDITY/UIDNEXT");
        return;
    }
    if (messages == 0 || uidnext <= 1) {
        pop3_login_complete(s);
        return;
    }
    /* The maildrop is fixed at login: messages arriving later get UIDs
     * from uidnext on and wait for the next session (RFC 1939 8). */
    char set[32];
    snprintf(set, sizeof set, "1:%u", uidnext - 1);
    struct mx_frame frame;
    imapd_store_frame(&frame, MSG_ANY_STORE_MESSAGE_FETCH, s->identity.mail, "INBOX");
    mx_frame_put_u32(&frame, F_UIDVALIDITY, s->uidvalidity);
    mx_frame_put_str(&frame, F_UID_SET, set);
    mx_frame_put_u32(&frame, F_FETCH_ITEMS, MX_FETCH_SIZE | MX_FETCH_POP3_UIDL);
    if (pop3_store_send(s, &frame, pop3_on_fetch) < 0)
        pop3_maildrop_unavailable(s, MX_STATUS_TEMPFAIL, "request not queued");
}

static void pop3_select_inbox(struct pop3_session *s)
{
    struct mx_frame frame;
    imapd_store_frame(&frame, MSG_ANY_STORE_MAILBOX_SELECT, s->identity.mail, "INBOX");
    if (pop3_store_send(s, &frame, pop3_on_select) < 0)
        pop3_maildrop_unavailable(s, MX_STATUS_TEMPFAIL, "request not queued");
}

static void pop3_on_auth(void *ctx, enum mx_auth_result result, struct mx_identity *identity)
{
    struct pop3_session *s = ctx;
    s->auth_check = NULL;
    switch (result) {
    case MX_AUTH_OK:
        s->identity = *identity;
        memset(identity, 0, sizeof *identity);
        s->shard = imapd_shard_for(s->server, s->identity.shard);
        if (s->shard == NULL) { /* logged by imapd_shard_for */
            pop3_maildrop_unavailable(s, MX_STATUS_TEMPFAIL,
                                      "the account's shard is not configured");
            return;
        }
        pop3_select_inbox(s);
        return;
    case MX_AUTH_INVALID:
        mx_limits_auth_failure(s->server->limits, s->ip_key, mx_now_ms(),
                               s->server->auth.window_ms);
        mx_log(MX_LOG_NOTICE, "pop3.auth_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("login", s->login), MX_KV("result", mx_auth_result_name(result)));
        pop3_client_error(s, "[AUTH] Authentication failed");
        break;
    case MX_AUTH_DISABLED:
        /* mx_auth reveals this only to someone who knew the password. */
        mx_log(MX_LOG_NOTICE, "pop3.auth_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("login", s->login), MX_KV("result", mx_auth_result_name(result)));
        pop3_client_error(s, "[AUTH] Account disabled");
        break;
    case MX_AUTH_TEMPFAIL:
        mx_log(MX_LOG_WARNING, "pop3.auth_unavailable", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("login", s->login));
        pop3_printf(s, "-ERR [SYS/TEMP] Authentication service unavailable, try again later\r\n");
        break;
    case MX_AUTH_BLOCKED:
        mx_log(MX_LOG_WARNING, "pop3.auth_account_blocked", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("login", s->login));
        pop3_client_error(s, "[AUTH] Too many failed logins, try again later");
        break;
    }
    pop3_step_done(s);
}

/* pop3_auth_begin - check login/password (the caller wipes its copy of
 * the password right after this returns; mx_auth keeps and wipes its own). */
static void pop3_auth_begin(struct pop3_session *s, const char *login, const char *password,
                            size_t password_len)
{
    snprintf(s->login, sizeof s->login, "%s", login);
    if (mx_limits_auth_blocked(s->server->limits, s->ip_key, mx_now_ms(), s->server->auth.window_ms,
                               s->server->auth_max_failures_per_ip)) {
        mx_log(MX_LOG_WARNING, "pop3.auth_ip_blocked", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("login", s->login));
        pop3_client_error(s, "[AUTH] Too many failed logins, try again later");
        return;
    }
    if (password_len == 0) {
        /* An LDAP simple bind with an empty password is anonymous and
         * succeeds: never ask. */
        mx_limits_auth_failure(s->server->limits, s->ip_key, mx_now_ms(),
                               s->server->auth.window_ms);
        mx_log(MX_LOG_NOTICE, "pop3.auth_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("login", s->login), MX_KV("result", "empty_password"));
        pop3_client_error(s, "[AUTH] Authentication failed");
        return;
    }
    s->auth_cfg = s->server->auth;
    s->auth_cfg.role = "pop3";
    s->busy = true;
    s->auth_check =
        mx_auth_start(&s->auth_cfg, s->sid, login, password, password_len, pop3_on_auth, s);
}

/* pop3_plaintext_refused - USER/PASS/AUTH before TLS where that is not
 * allowed; true when refused (answered). */
static bool pop3_plaintext_refused(struct pop3_session *s)
{
    if (imapd_plaintext_auth_allowed(s->server, s->conn))
        return false;
    pop3_client_error(
        s, "[AUTH] Plaintext authentication disallowed on non-secure connections, use STLS first");
    return true;
}

static void pop3_cmd_user(struct pop3_session *s, const struct pop3_cmd *cmd)
{
    if (pop3_plaintext_refused(s))
        return;
    if (cmd->args == NULL || strchr(cmd->args, ' ') != NULL ||
        strlen(cmd->args) > POP3_CREDENTIAL_MAX) {
        pop3_client_error(s, "Syntax: USER name");
        return;
    }
    snprintf(s->login, sizeof s->login, "%s", cmd->args);
    s->have_user = true;
    pop3_printf(s, "+OK\r\n");
}

static void pop3_cmd_pass(struct pop3_session *s, const struct pop3_cmd *cmd)
{
    if (pop3_plaintext_refused(s))
        return;
    if (!s->have_user) {
        pop3_client_error(s, "USER first");
        return;
    }
    s->have_user = false; /* RFC 1939 7: a failed PASS needs a new USER */
    const char *password = cmd->args ? cmd->args : "";
    size_t len = strlen(password);
    if (len > POP3_CREDENTIAL_MAX) {
        pop3_client_error(s, "[AUTH] Authentication failed");
        return;
    }
    char login[POP3_CREDENTIAL_MAX + 1];
    snprintf(login, sizeof login, "%s", s->login);
    pop3_auth_begin(s, login, password, len);
}

/* pop3_sasl_plain - an RFC 4616 response, from AUTH's initial response or
 * the continuation line. */
static void pop3_sasl_plain(struct pop3_session *s, const char *b64, size_t len)
{
    char authcid[POP3_CREDENTIAL_MAX + 1], passwd[POP3_CREDENTIAL_MAX + 1];
    size_t passwd_len = 0;
    const char *error;
    if (mx_sasl_plain_decode(b64, len, authcid, passwd, &passwd_len, &error) < 0) {
        mx_log(MX_LOG_NOTICE, "pop3.auth_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("result", "bad_sasl_response"), MX_KV("error", error));
        mx_limits_auth_failure(s->server->limits, s->ip_key, mx_now_ms(),
                               s->server->auth.window_ms);
        pop3_client_error(s, "[AUTH] %s", error);
        return;
    }
    pop3_auth_begin(s, authcid, passwd, passwd_len);
    OPENSSL_cleanse(passwd, sizeof passwd);
    OPENSSL_cleanse(authcid, sizeof authcid);
}

static void pop3_cmd_auth(struct pop3_session *s, const struct pop3_cmd *cmd)
{
    if (cmd->args == NULL) {
        /* The pre-CAPA mechanism listing (RFC 1734 practice), which some
         * clients still probe with a bare AUTH. */
        pop3_printf(s, "+OK Supported mechanisms\r\n%s.\r\n",
                    imapd_plaintext_auth_allowed(s->server, s->conn) ? "PLAIN\r\n" : "");
        return;
    }
    const char *space = strchr(cmd->args, ' ');
    size_t mech_len = space ? (size_t)(space - cmd->args) : strlen(cmd->args);
    if (mech_len != 5 || strncasecmp(cmd->args, "PLAIN", 5) != 0) {
        pop3_client_error(s, "Unsupported authentication mechanism");
        return;
    }
    if (pop3_plaintext_refused(s))
        return;
    s->have_user = false;
    if (space) {
        const char *initial = space + 1;
        pop3_sasl_plain(s, initial, strlen(initial));
        return;
    }
    s->sasl_pending = true;
    pop3_printf(s, "+ \r\n");
}

static void pop3_sasl_line(struct pop3_session *s, const char *line, size_t len)
{
    s->sasl_pending = false;
    if (len == 1 && line[0] == '*') {
        pop3_client_error(s, "Authentication cancelled");
        return;
    }
    pop3_sasl_plain(s, line, len);
}

static void pop3_cmd_stls(struct pop3_session *s)
{
    if (mx_conn_is_tls(s->conn)) {
        pop3_client_error(s, "TLS already active");
        return;
    }
    if (!mx_conn_has_tls_ctx(s->conn)) {
        pop3_client_error(s, "TLS not available");
        return;
    }
    pop3_printf(s, "+OK Begin TLS negotiation\r\n");
    /* RFC 2595 4: what the client said before the handshake is forgotten. */
    s->have_user = false;
    s->login[0] = '\0';
    s->tls_switched = true;
    (void)mx_conn_starttls(s->conn); /* -1: the conn is closing, on_close follows */
}

/* ---- TRANSACTION ------------------------------------------------------------ */

/* pop3_msg_index - message number n as a maildrop index; -1 after
 * answering when it is out of range or DELE'd (RFC 1939 5: a deleted
 * message may not be referred to). */
static int pop3_msg_index(struct pop3_session *s, uint32_t n, uint32_t *idx_r)
{
    if (n == 0 || n > s->drop.count) {
        pop3_client_error(s, "no such message, only %u messages in maildrop", s->drop.count);
        return -1;
    }
    if (s->drop.msgs[n - 1].deleted) {
        pop3_client_error(s, "message %u already deleted", n);
        return -1;
    }
    *idx_r = n - 1;
    return 0;
}

/* pop3_msg_arg - the single message-number argument of LIST/UIDL/RETR/DELE. */
static int pop3_msg_arg(struct pop3_session *s, const char *args, const char *syntax,
                        uint32_t *idx_r)
{
    uint32_t n;
    size_t got;
    if (pop3_parse_numbers(args, &n, 1, 1, &got) < 0) {
        pop3_client_error(s, "Syntax: %s", syntax);
        return -1;
    }
    return pop3_msg_index(s, n, idx_r);
}

static void pop3_cmd_stat(struct pop3_session *s)
{
    pop3_printf(s, "+OK %u %llu\r\n", s->drop.count - s->drop.n_deleted,
                (unsigned long long)(s->drop.bytes - s->drop.deleted_bytes));
}

static void pop3_cmd_list(struct pop3_session *s, const struct pop3_cmd *cmd, bool uidl)
{
    const char *syntax = uidl ? "UIDL [msg]" : "LIST [msg]";
    if (cmd->args) {
        uint32_t i;
        if (pop3_msg_arg(s, cmd->args, syntax, &i) < 0)
            return;
        if (uidl)
            pop3_printf(s, "+OK %u %s\r\n", i + 1, pop3_maildrop_uidl(&s->drop, i));
        else
            pop3_printf(s, "+OK %u %llu\r\n", i + 1, (unsigned long long)s->drop.msgs[i].size);
        return;
    }
    struct evbuffer *out = mx_conn_output(s->conn);
    if (uidl)
        evbuffer_add_printf(out, "+OK Unique-ID listing follows\r\n");
    else
        evbuffer_add_printf(out, "+OK %u messages (%llu octets)\r\n",
                            s->drop.count - s->drop.n_deleted,
                            (unsigned long long)(s->drop.bytes - s->drop.deleted_bytes));
    for (uint32_t i = 0; i < s->drop.count; i++) {
        if (s->drop.msgs[i].deleted)
            continue;
        if (uidl)
            evbuffer_add_printf(out, "%u %s\r\n", i + 1, pop3_maildrop_uidl(&s->drop, i));
        else
            evbuffer_add_printf(out, "%u %llu\r\n", i + 1,
                                (unsigned long long)s->drop.msgs[i].size);
    }
    evbuffer_add(out, ".\r\n", 3);
}

static void pop3_cmd_dele(struct pop3_session *s, const struct pop3_cmd *cmd)
{
    uint32_t i;
    if (pop3_msg_arg(s, cmd->args, "DELE msg", &i) < 0)
        return;
    pop3_maildrop_mark(&s->drop, i);
    pop3_printf(s, "+OK message %u deleted\r\n", i + 1);
}

static void pop3_cmd_rset(struct pop3_session *s)
{
    pop3_maildrop_reset(&s->drop);
    pop3_printf(s, "+OK maildrop has %u messages (%llu octets)\r\n", s->drop.count,
                (unsigned long long)s->drop.bytes);
}

/* ---- RETR / TOP: the message in pieces ---------------------------------------- */

static void pop3_xfer_request(struct pop3_session *s);

/* pop3_xfer_end - the transfer is over (completely or not). */
static void pop3_xfer_end(struct pop3_session *s)
{
    s->xfer.need_more = false;
    s->bytes_sent += s->xfer.enc.octets_out;
    pop3_step_done(s);
}

/* pop3_xfer_failed - the store could not give a piece: before "+OK" the
 * client gets an -ERR; after it, a truncated message must never look
 * complete, so the connection is closed without the final ".". */
static void pop3_xfer_failed(struct pop3_session *s, enum mx_status status, const char *text)
{
    uint32_t msgno = s->xfer.idx + 1;
    mx_log(MX_LOG_WARNING, "pop3.retrieve_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("user", s->identity.mail), MX_KVU("uid", s->drop.msgs[s->xfer.idx].uid),
           MX_KVU("offset", s->xfer.offset), MX_KV("status", store_status_name(status)),
           MX_KV("error", text));
    if (s->xfer.started) {
        s->bytes_sent += s->xfer.enc.octets_out;
        pop3_close(s, "message transfer failed");
        return;
    }
    if (status == MX_STATUS_NOT_FOUND)
        pop3_printf(s, "-ERR Message %u was removed by another session\r\n", msgno);
    else
        pop3_printf(s, "-ERR [SYS/TEMP] Mailbox server unavailable, try again later\r\n");
    pop3_xfer_end(s);
}

static void pop3_on_body(void *ctx, enum mx_status status, const char *text,
                         const struct mx_frame_view *reply)
{
    struct pop3_session *s = ctx;
    const uint8_t *body;
    size_t len;
    if (status != MX_STATUS_OK) {
        pop3_xfer_failed(s, status, text);
        return;
    }
    if (mx_frame_get_bytes(reply, F_BODY, &body, &len) < 0) {
        pop3_xfer_failed(s, MX_STATUS_PERMFAIL, "body reply without F_BODY");
        return;
    }
    if (s->conn == NULL)
        return;
    const struct pop3_msg *m = &s->drop.msgs[s->xfer.idx];
    struct evbuffer *out = mx_conn_output(s->conn);
    if (!s->xfer.started) {
        s->xfer.started = true;
        if (s->xfer.top)
            evbuffer_add_printf(out, "+OK Top of message follows\r\n");
        else
            evbuffer_add_printf(out, "+OK %llu octets\r\n", (unsigned long long)m->size);
    }
    pop3_body_encode(&s->xfer.enc, body, len, out);
    s->xfer.offset += len;
    if (s->xfer.enc.done || len < s->xfer.asked || s->xfer.offset >= m->size) {
        pop3_body_finish(&s->xfer.enc, out);
        if (!s->xfer.top)
            s->retrieved++;
        pop3_xfer_end(s);
        return;
    }
    /* More to come (a TOP whose lines reach past its small first piece
     * continues in full-size pieces): the next piece once the client has
     * read most of this one (on_input runs when the output drains). */
    s->xfer.chunk = POP3_RETR_CHUNK;
    s->xfer.need_more = true;
    mx_conn_resume(s->conn);
}

static void pop3_xfer_request(struct pop3_session *s)
{
    s->xfer.need_more = false;
    struct mx_frame frame;
    imapd_store_frame(&frame, MSG_ANY_STORE_MESSAGE_BODY, s->identity.mail, "INBOX");
    mx_frame_put_u32(&frame, F_UIDVALIDITY, s->uidvalidity);
    mx_frame_put_u32(&frame, F_UID, s->drop.msgs[s->xfer.idx].uid);
    mx_frame_put_str(&frame, F_SECTION, "");
    mx_frame_put_u64(&frame, F_OFFSET, s->xfer.offset);
    mx_frame_put_u64(&frame, F_LENGTH, s->xfer.chunk);
    s->xfer.asked = s->xfer.chunk;
    if (pop3_store_send(s, &frame, pop3_on_body) < 0)
        pop3_xfer_failed(s, MX_STATUS_TEMPFAIL, "request not queued");
}

static void pop3_cmd_retr(struct pop3_session *s, const struct pop3_cmd *cmd, bool top)
{
    uint32_t idx, lines = 0;
    if (top) {
        uint32_t nums[2];
        size_t got;
        if (pop3_parse_numbers(cmd->args, nums, 2, 2, &got) < 0) {
            pop3_client_error(s, "Syntax: TOP msg lines");
            return;
        }
        if (pop3_msg_index(s, nums[0], &idx) < 0)
            return;
        lines = nums[1];
    } else if (pop3_msg_arg(s, cmd->args, "RETR msg", &idx) < 0) {
        return;
    }
    memset(&s->xfer, 0, sizeof s->xfer);
    s->xfer.idx = idx;
    s->xfer.top = top;
    s->xfer.chunk = top ? POP3_TOP_CHUNK : POP3_RETR_CHUNK;
    pop3_body_encoder_init(&s->xfer.enc, top, lines);
    s->busy = true;
    pop3_xfer_request(s);
}

/* ---- QUIT and the UPDATE state ---------------------------------------------- */

static void pop3_update_next(struct pop3_session *s);

static void pop3_update_finish(struct pop3_session *s, bool ok)
{
    free(s->del_uids);
    s->del_uids = NULL;
    free(s->batch_set);
    s->batch_set = NULL;
    if (ok)
        pop3_printf(s, "+OK %s POP3 server signing off (%u message%s deleted)\r\n",
                    s->server->hostname, s->removed, s->removed == 1 ? "" : "s");
    else
        pop3_printf(s, "-ERR [SYS/TEMP] some deleted messages not removed\r\n");
    s->busy = false;
    pop3_close(s, ok ? "quit" : "quit, deletion failed");
    if (s->conn == NULL) /* the client left during UPDATE: nobody else frees us */
        pop3_session_free(s);
}

static void pop3_update_failed(struct pop3_session *s, const char *step, enum mx_status status,
                               const char *text)
{
    mx_log(MX_LOG_WARNING, "pop3.update_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("user", s->identity.mail), MX_KV("step", step), MX_KV("uids", s->batch_set),
           MX_KV("status", store_status_name(status)), MX_KV("error", text),
           MX_KVU("removed", s->removed), MX_KVU("marked", s->n_del));
    pop3_update_finish(s, false);
}

static void pop3_on_expunge(void *ctx, enum mx_status status, const char *text,
                            const struct mx_frame_view *reply)
{
    struct pop3_session *s = ctx;
    if (status != MX_STATUS_OK) {
        pop3_update_failed(s, "expunge", status, text);
        return;
    }
    /* The reply names what this expunge removed: fewer than asked when
     * another session expunged some first (gone all the same) or took
     * \Deleted off again (kept: that client's later word wins). */
    const uint8_t *gone;
    size_t gone_len;
    uint64_t n_gone = 0;
    if (mx_frame_get_bytes(reply, F_UID_SET, &gone, &gone_len) < 0 ||
        pop3_uidset_count((const char *)gone, gone_len, &n_gone) < 0) {
        mx_log(MX_LOG_WARNING, "pop3.expunge_reply_malformed", MX_KV("sid", s->sid),
               MX_KV("user", s->identity.mail), MX_KV("uids", s->batch_set));
        n_gone = s->batch_n;
    }
    s->removed += (uint32_t)n_gone;
    s->del_next += s->batch_n;
    pop3_update_next(s);
}

static void pop3_on_mark_deleted(void *ctx, enum mx_status status, const char *text,
                                 const struct mx_frame_view *reply)
{
    struct pop3_session *s = ctx;
    (void)reply;
    if (status != MX_STATUS_OK) {
        pop3_update_failed(s, "store_deleted", status, text);
        return;
    }
    /* Expunge names the same UIDs: \Deleted messages an IMAP client marked
     * but did not expunge are not ours to remove. */
    struct mx_frame frame;
    imapd_store_frame(&frame, MSG_ANY_STORE_MESSAGE_EXPUNGE, s->identity.mail, "INBOX");
    mx_frame_put_u32(&frame, F_UIDVALIDITY, s->uidvalidity);
    mx_frame_put_str(&frame, F_UID_SET, s->batch_set);
    if (pop3_store_send(s, &frame, pop3_on_expunge) < 0)
        pop3_update_failed(s, "expunge", MX_STATUS_TEMPFAIL, "request not queued");
}

static void pop3_update_next(struct pop3_session *s)
{
    free(s->batch_set);
    s->batch_set = NULL;
    if (s->del_next >= s->n_del) {
        pop3_update_finish(s, true);
        return;
    }
    s->batch_n = pop3_uidset_format(s->del_uids + s->del_next, s->n_del - s->del_next,
                                    POP3_UIDSET_MAX_LEN, POP3_UIDSET_MAX_RANGES, &s->batch_set);
    struct mx_frame frame;
    imapd_store_frame(&frame, MSG_ANY_STORE_FLAGS_STORE, s->identity.mail, "INBOX");
    mx_frame_put_u32(&frame, F_UIDVALIDITY, s->uidvalidity);
    mx_frame_put_str(&frame, F_UID_SET, s->batch_set);
    mx_frame_put_u32(&frame, F_FLAG_MODE, 1); /* add */
    mx_frame_put_str(&frame, F_FLAG, "\\Deleted");
    if (pop3_store_send(s, &frame, pop3_on_mark_deleted) < 0)
        pop3_update_failed(s, "store_deleted", MX_STATUS_TEMPFAIL, "request not queued");
}

static void pop3_cmd_quit(struct pop3_session *s)
{
    if (s->state != POP3_TRANSACTION || s->drop.n_deleted == 0) {
        pop3_printf(s, "+OK %s POP3 server signing off\r\n", s->server->hostname);
        pop3_close(s, "quit");
        return;
    }
    s->state = POP3_UPDATE;
    s->busy = true;
    s->del_uids = pop3_maildrop_deleted_uids(&s->drop, &s->n_del);
    s->del_next = 0;
    pop3_update_next(s);
}

/* ---- command dispatch ---------------------------------------------------------- */

static void pop3_command(struct pop3_session *s, char *line, size_t len)
{
    struct pop3_cmd cmd;
    const char *error;
    if (pop3_cmd_parse(line, len, &cmd, &error) < 0) {
        pop3_client_error(s, "%s", error);
        return;
    }
    /* Valid in either state. */
    switch (cmd.verb) {
    case POP3_VERB_CAPA:
        pop3_cmd_capa(s);
        return;
    case POP3_VERB_QUIT:
        pop3_cmd_quit(s);
        return;
    case POP3_VERB_UNKNOWN:
        pop3_client_error(s, "Unknown command %s", cmd.keyword);
        return;
    case POP3_VERB_APOP:
        pop3_client_error(s, "APOP not supported");
        return;
    case POP3_VERB_LAST:
        pop3_client_error(s, "LAST not supported");
        return;
    default:
        break;
    }
    if (s->state == POP3_AUTHORIZATION) {
        switch (cmd.verb) {
        case POP3_VERB_USER:
            pop3_cmd_user(s, &cmd);
            return;
        case POP3_VERB_PASS:
            pop3_cmd_pass(s, &cmd);
            return;
        case POP3_VERB_AUTH:
            pop3_cmd_auth(s, &cmd);
            return;
        case POP3_VERB_STLS:
            pop3_cmd_stls(s);
            return;
        default:
            pop3_client_error(s, "Log in first");
            return;
        }
    }
    switch (cmd.verb) {
    case POP3_VERB_STAT:
        pop3_cmd_stat(s);
        return;
    case POP3_VERB_LIST:
        pop3_cmd_list(s, &cmd, false);
        return;
    case POP3_VERB_UIDL:
        pop3_cmd_list(s, &cmd, true);
        return;
    case POP3_VERB_RETR:
        pop3_cmd_retr(s, &cmd, false);
        return;
    case POP3_VERB_TOP:
        pop3_cmd_retr(s, &cmd, true);
        return;
    case POP3_VERB_DELE:
        pop3_cmd_dele(s, &cmd);
        return;
    case POP3_VERB_RSET:
        pop3_cmd_rset(s);
        return;
    case POP3_VERB_NOOP:
        pop3_printf(s, "+OK\r\n");
        return;
    case POP3_VERB_STLS:
        pop3_client_error(s, "STLS only before login");
        return;
    default: /* USER, PASS, AUTH */
        pop3_client_error(s, "Already logged in");
        return;
    }
}

/* ---- input ------------------------------------------------------------------------- */

/* pop3_read_line - the next line (without CR LF) into buf (max + 1
 * bytes, NUL-terminated). 1 = a line, 0 = none complete yet, -1 = the
 * line is longer than max octets with its line end: it is discarded as
 * it streams in (never buffered whole) and the caller answers. */
static int pop3_read_line(struct pop3_session *s, struct evbuffer *in, char *buf, size_t max,
                          size_t *len_r)
{
    if (s->discarding_line) {
        struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
        if (lf.pos < 0) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return 0;
        }
        evbuffer_drain(in, (size_t)lf.pos + 1);
        s->discarding_line = false;
    }
    size_t avail = evbuffer_get_length(in);
    struct evbuffer_ptr end;
    evbuffer_ptr_set(in, &end, avail < max ? avail : max, EVBUFFER_PTR_SET);
    struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, &end);
    if (lf.pos < 0) {
        if (avail < max)
            return 0;
        /* max octets and still no line end: too long whatever follows.
         * Only this line goes; commands pipelined behind it stay. */
        evbuffer_drain(in, max);
        s->discarding_line = true;
        return -1;
    }
    size_t len = (size_t)lf.pos;
    evbuffer_remove(in, buf, len + 1);
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    *len_r = len;
    return 1;
}

static void pop3_on_input(void *ctx, struct evbuffer *in)
{
    struct pop3_session *s = ctx;
    if (s->conn == NULL || !s->ready || s->state == POP3_DONE)
        return;
    if (s->busy) {
        if (s->xfer.need_more && mx_conn_output_pending(s->conn) <= POP3_OUTPUT_PAUSE)
            pop3_xfer_request(s);
        return;
    }
    char line[POP3_SASL_LINE_MAX + 1];
    while (!s->busy && s->state != POP3_DONE && s->state != POP3_UPDATE) {
        /* A client that pipelines without reading its replies waits. */
        if (mx_conn_output_pending(s->conn) > POP3_OUTPUT_PAUSE)
            return;
        bool sasl = s->sasl_pending;
        size_t len = 0;
        int rc = pop3_read_line(s, in, line, sasl ? POP3_SASL_LINE_MAX : POP3_CMD_LINE_MAX, &len);
        if (rc == 0) {
            if (mx_conn_peer_closed(s->conn))
                pop3_close(s, "client closed the connection");
            return;
        }
        if (rc < 0) {
            s->sasl_pending = false;
            pop3_client_error(s, sasl ? "SASL response too long" : "Line too long");
            continue;
        }
        if (sasl)
            pop3_sasl_line(s, line, len);
        else
            pop3_command(s, line, len);
        OPENSSL_cleanse(line, len); /* PASS and AUTH lines carry passwords */
        if (s->tls_switched) {
            /* STLS: `in` belongs to the plaintext layer; the TLS layer's
             * input arrives through a new on_input call. */
            s->tls_switched = false;
            return;
        }
    }
}

/* ---- the connection's life ------------------------------------------------------------ */

static void pop3_on_ready(void *ctx)
{
    struct pop3_session *s = ctx;
    s->ready = true;
    snprintf(s->peer_ip, sizeof s->peer_ip, "%s", mx_conn_peer_ip(s->conn));
    snprintf(s->ip_key, sizeof s->ip_key, "ip:%s", s->peer_ip);
    const char *reason = NULL;
    if (imapd_admit(s->server, s->peer_ip, &reason) < 0) {
        mx_log(MX_LOG_NOTICE, "pop3.connection_refused", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("reason", reason));
        pop3_printf(s, "-ERR [SYS/TEMP] Too many connections, try again later\r\n");
        pop3_close(s, "connection limit");
        return;
    }
    s->admitted = true;
    mx_log(MX_LOG_DEBUG, "pop3.connect", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KVU("port", mx_conn_peer_port(s->conn)),
           MX_KV("tls", s->listener && s->listener->implicit_tls ? "implicit" : "none"));
    pop3_printf(s, "+OK %s POP3 ready\r\n", s->server->hostname);
}

static void pop3_on_close(void *ctx, const char *reason)
{
    struct pop3_session *s = ctx;
    s->conn = NULL;
    mx_log(MX_LOG_DEBUG, "pop3.disconnect", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("reason", reason));
    imapd_connection_done(s->server, s->peer_ip, s->admitted);
    mx_auth_cancel(&s->auth_check);
    if (s->state == POP3_UPDATE && s->call.pending) {
        /* QUIT was received: finish the deletions, then free. */
        mx_log(MX_LOG_INFO, "pop3.closed_during_update", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("reason", reason));
        return;
    }
    pop3_logout_log(s, reason);
    imapd_store_cancel(&s->call);
    pop3_session_free(s);
}

static void pop3_session_free(struct pop3_session *s)
{
    mx_identity_clear(&s->identity);
    pop3_maildrop_free(&s->drop);
    free(s->del_uids);
    free(s->batch_set);
    OPENSSL_cleanse(s->login, sizeof s->login);
    free(s);
}

const struct mx_conn_ops pop3_session_ops = {
    .on_ready = pop3_on_ready,
    .on_input = pop3_on_input,
    .on_close = pop3_on_close,
};

void *pop3_session_new(struct imapd_server *server, const struct imapd_listener *listener,
                       const char *sid)
{
    struct pop3_session *s = mx_calloc(1, sizeof *s);
    s->server = server;
    s->listener = listener;
    snprintf(s->sid, sizeof s->sid, "%s", sid);
    s->state = POP3_AUTHORIZATION;
    s->started_ms = mx_now_ms();
    return s;
}

void pop3_session_attach(void *session, struct mx_conn *conn)
{
    struct pop3_session *s = session;
    s->conn = conn;
}
