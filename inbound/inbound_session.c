/* inbound_session - one SMTP session: the RFC 5321 state machine.
 *
 * Input is processed strictly in order. While a command waits for
 * something asynchronous (an LDAP lookup for RCPT, a password check, the
 * filter's verdict, the spool's group commit) the session is in
 * SESSION_WAIT: pipelined commands stay in the input buffer and are taken
 * up again when the reply has been written, so replies keep the order of
 * the commands (RFC 2920) and one slow lookup costs one session only.
 *
 * Lifetime: session_close() never frees at once. It cancels every pending
 * operation (their callbacks then never run), closes the connection and
 * schedules the free from the event loop, so code that called it only has
 * to return. Every callback first checks for SESSION_CLOSED. */
#include "inbound.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "inbound_rcpt.h"
#include "mx_alloc.h"
#include "mx_header.h"
#include "mx_tls.h"
#include "mx_proxy_v2.h"
#include "smtp_cmd.h"
#include "smtp_data.h"

/* Stop reading commands while this much output is unsent: a client that
 * pipelines without reading replies cannot make us buffer without bound. */
#define SESSION_OUTPUT_HIGH (256 * 1024)
/* Input buffered but not yet processed (while a reply waits for LDAP, the
 * filter or the client reading its replies): libevent stops reading the
 * socket beyond this, so the TCP window pushes back instead of our memory
 * growing. Larger than any line we must see whole (SMTP_AUTH_LINE_MAX) and
 * than a PROXY v2 header. */
#define SESSION_INPUT_HIGH (64 * 1024)
/* Hop count beyond which a message is taken to be looping (RFC 5321 6.3). */
#define SESSION_MAX_RECEIVED 100

enum session_state {
    SESSION_PROXY,   /* waiting for the balancer's PROXY v2 header */
    SESSION_GREET,   /* asking the filter about the client before 220 */
    SESSION_CMD,     /* reading command lines */
    SESSION_SASL,    /* reading an AUTH continuation line */
    SESSION_DATA,    /* reading a DATA body */
    SESSION_BDAT,    /* reading a BDAT chunk */
    SESSION_WAIT,    /* a reply depends on something asynchronous */
    SESSION_QUIT,    /* flushing the last reply, then close */
    SESSION_CLOSED,  /* freed from the loop soon */
};

enum sasl_step { SASL_NONE, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

struct session_rcpt {
    char *addr;
    char *notify;
    char *orcpt;
};

struct inbound_session {
    struct inbound_server *server;
    struct inbound_instance *instance;
    struct inbound_listener *listener;
    struct bufferevent *bev;
    enum session_state state;
    char sid[24];
    char peer_ip[INET6_ADDRSTRLEN];
    unsigned peer_port;
    bool limits_counted;
    uint64_t started_ms;
    struct event *session_timer;
    struct event *resume;      /* deferred session_drive after an async reply */
    bool tls;
    bool discarding_line;     /* inside an over-long line: drop until its end */
    bool peer_eof;            /* the client shut down its side; input is final */
    unsigned flush_polls;     /* see session_close_flushed */
    struct event *flush_timer;
    /* Under a TLS filter: our output moves at once into the socket
     * bufferevent below, whose draining we watch through this callback. */
    struct evbuffer_cb_entry *below_output_cb;
    unsigned errors;
    unsigned transactions;

    /* HELO/EHLO */
    bool greeted;
    bool esmtp;
    char helo[SMTP_CMD_LINE_MAX + 1];

    /* AUTH */
    bool authenticated;
    struct mx_identity identity;
    struct mx_auth_check *auth_check;
    enum sasl_step sasl;
    char sasl_login[256];

    /* the transaction (MAIL .. end of DATA) */
    bool in_mail;
    struct mx_msgid id;
    char id_text[MX_MSGID_TEXT_LEN + 1];
    struct mx_address sender;
    struct smtp_mail_params mail;
    struct session_rcpt *rcpts;
    size_t n_rcpts;
    struct mx_address pending_rcpt;
    struct smtp_rcpt_params pending_params;
    struct inbound_rcpt_check *rcpt_check;
    struct mx_spool_file *spool_file;
    struct smtp_data_decoder data;
    struct smtp_bdat_reader bdat;
    bool bdat_started;
    struct mx_header_scan headers;
    bool spool_failed;
    uint64_t message_size;
    struct mx_spool_commit_req *commit;
    uint64_t filter_request;
    bool filter_pending;
    char *filter_headers;      /* header lines the content filter asked for */
};

static void session_drive(struct inbound_session *s);
static void session_close(struct inbound_session *s, const char *reason);
static void session_close_flushed(struct inbound_session *s);

/* Header names the scanner counts while a message streams in. */
enum { HDR_DATE, HDR_MESSAGE_ID, HDR_RECEIVED, HDR_FROM };
static const char *const session_header_names[] = { "Date", "Message-ID", "Received", "From" };

/* ---- output --------------------------------------------------------- */

static void session_printf(struct inbound_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void session_printf(struct inbound_session *s, const char *fmt, ...)
{
    if (s->state == SESSION_CLOSED)
        return;
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
    va_end(ap);
}

/* session_reply - one single-line reply "<code> <enhanced> <text>". Replies
 * 4xx/5xx to the client's own mistakes count toward max_errors. */
static void session_reply(struct inbound_session *s, int code, const char *enhanced,
                          const char *text)
{
    session_printf(s, "%d %s %s\r\n", code, enhanced, text);
}

static void session_reply_err(struct inbound_session *s, const struct smtp_reply_err *err)
{
    session_reply(s, err->code, err->enhanced, err->text);
}

/* session_client_error - a refusal caused by what the client sent. */
static void session_client_error(struct inbound_session *s, int code, const char *enhanced,
                                 const char *text)
{
    session_reply(s, code, enhanced, text);
    if (++s->errors >= s->instance->max_errors) {
        session_printf(s, "421 4.7.0 %s Too many errors, closing connection\r\n",
                       s->server->hostname);
        mx_log(MX_LOG_NOTICE, "smtp.too_many_errors", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KVU("errors", s->errors));
        s->state = SESSION_QUIT;
    }
}

static void session_client_error_err(struct inbound_session *s, const struct smtp_reply_err *err)
{
    session_client_error(s, err->code, err->enhanced, err->text);
}

/* ---- transaction ------------------------------------------------------ */

static void session_reset_transaction(struct inbound_session *s)
{
    inbound_rcpt_check_cancel(&s->rcpt_check);
    for (size_t i = 0; i < s->n_rcpts; i++) {
        free(s->rcpts[i].addr);
        free(s->rcpts[i].notify);
        free(s->rcpts[i].orcpt);
    }
    free(s->rcpts);
    s->rcpts = NULL;
    s->n_rcpts = 0;
    mx_spool_abort(&s->spool_file);
    /* A commit in flight belongs to a message the client was not told
     * about: cancel removes it once durable (the client will resend). */
    mx_spool_commit_cancel(&s->commit);
    if (s->filter_pending && s->server->filter)
        mx_client_cancel(s->server->filter, s->filter_request);
    s->filter_pending = false;
    free(s->filter_headers);
    s->filter_headers = NULL;
    s->in_mail = false;
    s->bdat_started = false;
    s->spool_failed = false;
    s->message_size = 0;
    memset(&s->mail, 0, sizeof s->mail);
}

static void session_free(evutil_socket_t fd, short what, void *arg)
{
    struct inbound_session *s = arg;
    free(s);
}

static void session_close(struct inbound_session *s, const char *reason)
{
    if (s->state == SESSION_CLOSED)
        return;
    mx_log(MX_LOG_INFO, "smtp.disconnect", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KV("reason", reason), MX_KVU("transactions", s->transactions),
           MX_KVU("errors", s->errors), MX_KVU("ms", mx_now_ms() - s->started_ms));
    session_reset_transaction(s);
    mx_auth_cancel(&s->auth_check);
    mx_identity_clear(&s->identity);
    OPENSSL_cleanse(s->sasl_login, sizeof s->sasl_login);
    s->state = SESSION_CLOSED;
    struct bufferevent *below = s->bev ? bufferevent_get_underlying(s->bev) : NULL;
    if (below && s->below_output_cb) /* a deferred run must not find s */
        evbuffer_remove_cb_entry(bufferevent_get_output(below), s->below_output_cb);
    s->below_output_cb = NULL;
    if (s->bev)
        bufferevent_free(s->bev);
    s->bev = NULL;
    if (s->session_timer)
        event_free(s->session_timer);
    if (s->resume)
        event_free(s->resume);
    if (s->flush_timer)
        event_free(s->flush_timer);
    if (s->limits_counted)
        mx_limits_disconnect(s->server->limits, s->peer_ip);
    s->server->connections--;
    event_base_once(s->server->base, -1, EV_TIMEOUT, session_free, s, NULL);
}

/* session_wait_done - an asynchronous step wrote its reply: go on with the
 * pipelined input from the loop (not from inside the callback's caller). */
static void session_wait_done(struct inbound_session *s)
{
    if (s->state == SESSION_CLOSED)
        return;
    if (s->state == SESSION_WAIT)
        s->state = SESSION_CMD;
    event_active(s->resume, EV_TIMEOUT, 0);
}

static void session_on_resume(evutil_socket_t fd, short what, void *arg)
{
    session_drive(arg);
}

/* ---- TLS info for Received and logs ------------------------------------ */

static SSL *session_ssl(struct inbound_session *s)
{
    return s->tls ? bufferevent_openssl_get_ssl(s->bev) : NULL;
}

/* ---- greeting and connect verdict ------------------------------------- */

static void session_greet(struct inbound_session *s)
{
    session_printf(s, "220 %s ESMTP mxcluster\r\n", s->server->hostname);
    s->state = SESSION_CMD;
}

static void session_on_connect_verdict(void *ctx, enum mx_bus_result result,
                                       const struct mx_frame_view *reply)
{
    struct inbound_session *s = ctx;
    if (result == MX_BUS_CANCELLED || s->state == SESSION_CLOSED)
        return;
    s->filter_pending = false;
    uint32_t verdict = MX_VERDICT_ACCEPT;
    char *text = NULL;
    if (result == MX_BUS_REPLY) {
        (void)mx_frame_get_u32(reply, F_VERDICT, &verdict);
        (void)mx_frame_get_str(reply, F_TEXT, &text);
    } else if (!s->server->filter_fail_open) {
        mx_log(MX_LOG_WARNING, "smtp.filter_unavailable", MX_KV("sid", s->sid),
               MX_KV("stage", "connect"));
        session_printf(s, "421 4.3.0 %s Service temporarily unavailable, try again later\r\n",
                       s->server->hostname);
        s->state = SESSION_QUIT;
        return;
    }
    if (verdict == MX_VERDICT_REJECT) {
        mx_log(MX_LOG_NOTICE, "smtp.connect_rejected", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("reason", text));
        session_printf(s, "554 5.7.1 %s\r\n", "Service refused: poor reputation of client address");
        s->state = SESSION_QUIT;
    } else if (verdict == MX_VERDICT_TEMPFAIL) {
        session_printf(s, "421 4.7.0 %s Try again later\r\n", s->server->hostname);
        s->state = SESSION_QUIT;
    } else {
        session_greet(s);
    }
    free(text);
    event_active(s->resume, EV_TIMEOUT, 0);
}

/* session_begin - the client's real address is known: apply limits, ask
 * the filter (mta only), then greet. */
static void session_begin(struct inbound_session *s)
{
    const char *reason = NULL;
    if (mx_limits_connect(s->server->limits, s->peer_ip, s->instance->max_connections_per_ip,
                          s->instance->max_connection_rate, mx_now_ms(), &reason) < 0) {
        mx_log(MX_LOG_NOTICE, "smtp.connection_refused", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("reason", reason));
        session_printf(s, "421 4.7.0 %s Too many connections from your address, try later\r\n",
                       s->server->hostname);
        s->state = SESSION_QUIT;
        return;
    }
    s->limits_counted = true;
    mx_log(MX_LOG_INFO, "smtp.connect", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
           MX_KVU("port", s->peer_port), MX_KV("instance", s->instance->name),
           MX_KV("tls", s->tls ? "implicit" : "none"));
    if (s->server->filter && s->instance->mode == INBOUND_MODE_MTA) {
        struct mx_frame frame;
        mx_frame_init(&frame, MSG_INBOUND_FILTER_CONNECT_CHECK, 0, NULL);
        mx_frame_put_str(&frame, F_CLIENT_ADDR, s->peer_ip);
        mx_frame_put_str(&frame, F_INSTANCE, s->instance->name);
        const char *error = NULL;
        s->state = SESSION_GREET;
        if (mx_client_request(s->server->filter, &frame, session_on_connect_verdict, s,
                              &s->filter_request, &error) == 0) {
            s->filter_pending = true;
            mx_frame_free(&frame);
            return;
        }
        mx_frame_free(&frame);
        mx_log(MX_LOG_ERR, "smtp.filter_request_failed", MX_KV("sid", s->sid), MX_KV("error", error));
    }
    session_greet(s);
}

/* ---- HELO / EHLO ------------------------------------------------------ */

static void session_cmd_helo(struct inbound_session *s, const struct smtp_cmd *cmd)
{
    session_reset_transaction(s);
    snprintf(s->helo, sizeof s->helo, "%s", cmd->helo);
    s->greeted = true;
    s->esmtp = cmd->verb == SMTP_VERB_EHLO;
    if (!s->esmtp) {
        session_printf(s, "250 %s\r\n", s->server->hostname);
        return;
    }
    session_printf(s, "250-%s Hello %s [%s]\r\n", s->server->hostname, s->helo, s->peer_ip);
    session_printf(s, "250-PIPELINING\r\n");
    session_printf(s, "250-SIZE %llu\r\n", (unsigned long long)s->instance->max_message_size);
    session_printf(s, "250-8BITMIME\r\n");
    session_printf(s, "250-ENHANCEDSTATUSCODES\r\n");
    if (!s->tls && s->server->tls_ctx)
        session_printf(s, "250-STARTTLS\r\n");
    /* AUTH only on submission instances and only under TLS: no password
     * crosses the network in clear (RFC 8314 4.1). */
    if (s->tls && s->instance->mode == INBOUND_MODE_MSA && !s->authenticated)
        session_printf(s, "250-AUTH PLAIN LOGIN\r\n");
    session_printf(s, "250-SMTPUTF8\r\n");
    session_printf(s, "250-DSN\r\n");
    session_printf(s, "250 CHUNKING\r\n");
}

/* ---- STARTTLS --------------------------------------------------------- */

static void session_on_read(struct bufferevent *bev, void *arg);
static void session_on_write(struct bufferevent *bev, void *arg);
static void session_on_event(struct bufferevent *bev, short what, void *arg);

/* session_output_pending - replies written but not yet sent, including
 * (under TLS) what the filter already passed to the socket below. */
static size_t session_output_pending(struct inbound_session *s)
{
    struct bufferevent *below = bufferevent_get_underlying(s->bev);
    return evbuffer_get_length(bufferevent_get_output(s->bev)) +
           (below ? evbuffer_get_length(bufferevent_get_output(below)) : 0);
}

static void session_on_below_output(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                                    void *arg)
{
    struct inbound_session *s = arg;
    if (info->n_deleted > 0 && s->state != SESSION_CLOSED &&
        session_output_pending(s) <= SESSION_OUTPUT_HIGH / 4)
        event_active(s->resume, EV_TIMEOUT, 0);
}

static void session_set_callbacks(struct inbound_session *s)
{
    bufferevent_setcb(s->bev, session_on_read, session_on_write, session_on_event, s);
    struct timeval idle = { s->instance->idle_timeout_ms / 1000,
                            (s->instance->idle_timeout_ms % 1000) * 1000 };
    bufferevent_set_timeouts(s->bev, &idle, &idle);
    /* session_on_write resumes reading once output fell below this. */
    bufferevent_setwatermark(s->bev, EV_WRITE, SESSION_OUTPUT_HIGH / 4, 0);
    bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_INPUT_HIGH);
    /* Under a TLS filter (STARTTLS, or implicit TLS behind a balancer) the
     * socket bufferevent below keeps reading even when the filter stops:
     * bound it too (libevent set it unlimited when the filter was made). */
    struct bufferevent *below = bufferevent_get_underlying(s->bev);
    if (below) {
        bufferevent_setwatermark(below, EV_READ, 0, SESSION_INPUT_HIGH);
        /* A client that stops reading stalls the socket below, not the
         * filter: time that out too, and resume when it drains. */
        bufferevent_set_timeouts(below, NULL, &idle);
        if (s->below_output_cb == NULL)
            s->below_output_cb = evbuffer_add_cb(bufferevent_get_output(below),
                                                 session_on_below_output, s);
    }
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* session_wrap_implicit_tls - an implicit-TLS listener behind a balancer:
 * the PROXY header came in clear, the client's handshake follows it on the
 * same connection. Handshake bytes read together with the header are still
 * in the plain input, where the filter reads them; the trigger makes it
 * look (no new bytes will arrive before the server answers). */
static int session_wrap_implicit_tls(struct inbound_session *s)
{
    struct bufferevent *plain = s->bev;
    SSL *ssl = SSL_new(s->server->tls_ctx);
    struct bufferevent *tls =
        ssl ? bufferevent_openssl_filter_new(s->server->base, plain, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
            : NULL;
    if (tls == NULL) {
        mx_log(MX_LOG_ERR, "smtp.tls_setup_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip));
        session_close(s, "TLS setup failed");
        return -1;
    }
    s->bev = tls;
    s->tls = true;
    session_set_callbacks(s);
    if (evbuffer_get_length(bufferevent_get_input(plain)) > 0)
        bufferevent_trigger(plain, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    return 0;
}

static void session_cmd_starttls(struct inbound_session *s)
{
    if (s->tls) {
        session_client_error(s, 503, "5.5.1", "Error: TLS already active");
        return;
    }
    if (s->server->tls_ctx == NULL) {
        session_reply(s, 454, "4.7.0", "TLS not available due to local problem");
        return;
    }
    session_reply(s, 220, "2.0.0", "Ready to start TLS");
    size_t discarded = 0;
    struct bufferevent *tls = mx_tls_bufferevent_starttls(s->bev, s->server->tls_ctx, &discarded);
    if (tls == NULL) {
        mx_log(MX_LOG_ERR, "smtp.starttls_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip));
        session_close(s, "starttls setup failed");
        return;
    }
    if (discarded > 0)
        /* Commands pipelined after STARTTLS were sent in clear before the
         * handshake: never act on them (CVE-2011-0411 class). */
        mx_log(MX_LOG_WARNING, "smtp.starttls_pipelined_input_discarded", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KVU("bytes", discarded));
    s->bev = tls;
    s->tls = true;
    session_set_callbacks(s);
    /* RFC 3207 4.2: forget everything learnt before the handshake. */
    session_reset_transaction(s);
    s->greeted = false;
    s->esmtp = false;
    s->helo[0] = '\0';
}

/* ---- AUTH ------------------------------------------------------------- */

static void session_on_auth(void *ctx, enum mx_auth_result result, struct mx_identity *identity)
{
    struct inbound_session *s = ctx;
    s->auth_check = NULL;
    uint64_t now = mx_now_ms();
    switch (result) {
    case MX_AUTH_OK:
        s->authenticated = true;
        s->identity = *identity;
        memset(identity, 0, sizeof *identity);
        mx_log(MX_LOG_INFO, "smtp.auth_ok", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("user", s->sasl_login), MX_KV("dn", s->identity.dn));
        session_reply(s, 235, "2.7.0", "Authentication successful");
        break;
    case MX_AUTH_INVALID: /* the account's own count: mx_auth.c */
    case MX_AUTH_DISABLED:
        /* SMTP does not tell a disabled account from a wrong password:
         * mail clients show 535 as "check your password" either way, and
         * mx_auth logged the real reason (auth.account_inactive). */
        mx_limits_auth_failure(s->server->limits, s->peer_ip, now, s->server->auth.window_ms);
        mx_log(MX_LOG_NOTICE, "smtp.auth_failed", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("user", s->sasl_login));
        session_client_error(s, 535, "5.7.8", "Authentication credentials invalid");
        break;
    case MX_AUTH_TEMPFAIL:
        session_reply(s, 454, "4.7.0", "Temporary authentication failure, try again later");
        break;
    case MX_AUTH_BLOCKED:
        mx_log(MX_LOG_WARNING, "smtp.auth_account_blocked", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("user", s->sasl_login));
        session_reply(s, 454, "4.7.0", "Too many failed logins for this account, try later");
        break;
    }
    session_wait_done(s);
}

/* session_auth_check - start the LDAP check for login/password. The
 * password buffer is wiped by the caller right after this returns (the
 * check keeps its own copy, wiped after the bind). */
static void session_auth_check(struct inbound_session *s, const char *login, const char *password,
                               size_t password_len)
{
    if (login != s->sasl_login) /* AUTH LOGIN decoded it there already */
        snprintf(s->sasl_login, sizeof s->sasl_login, "%s", login);
    if (password_len == 0) { /* an empty simple bind would succeed anonymously */
        session_client_error(s, 535, "5.7.8", "Authentication credentials invalid");
        return;
    }
    s->state = SESSION_WAIT;
    s->auth_check = mx_auth_start(&s->server->auth, s->sid, login, password, password_len,
                                  session_on_auth, s);
}

static void session_sasl_plain(struct inbound_session *s, const char *b64, size_t len)
{
    char authzid[256], authcid[256], passwd[256];
    struct smtp_reply_err err;
    if (smtp_sasl_plain_decode(b64, len, authzid, sizeof authzid, authcid, sizeof authcid, passwd,
                               sizeof passwd, &err) < 0) {
        session_client_error_err(s, &err);
        return;
    }
    if (authzid[0] && strcmp(authzid, authcid) != 0) {
        /* RFC 4616 2: acting as someone else needs a proxy right nobody
         * has here; never authenticate as authcid and ignore the request. */
        mx_log(MX_LOG_NOTICE, "smtp.auth_authzid_refused", MX_KV("sid", s->sid),
               MX_KV("peer", s->peer_ip), MX_KV("user", authcid), MX_KV("authzid", authzid));
        session_client_error(s, 535, "5.7.8", "Authentication credentials invalid");
    } else {
        session_auth_check(s, authcid, passwd, strlen(passwd));
    }
    OPENSSL_cleanse(passwd, sizeof passwd);
    OPENSSL_cleanse(authzid, sizeof authzid);
    OPENSSL_cleanse(authcid, sizeof authcid);
}

static void session_cmd_auth(struct inbound_session *s, const struct smtp_cmd *cmd)
{
    if (s->instance->mode != INBOUND_MODE_MSA) {
        session_client_error(s, 503, "5.5.1", "Error: authentication not enabled");
        return;
    }
    if (!s->tls) {
        session_client_error(s, 538, "5.7.11", "Encryption required for requested authentication mechanism");
        return;
    }
    if (s->authenticated) {
        session_client_error(s, 503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (s->in_mail) {
        session_client_error(s, 503, "5.5.1", "Error: MAIL transaction in progress");
        return;
    }
    if (mx_limits_auth_blocked(s->server->limits, s->peer_ip, mx_now_ms(), s->server->auth.window_ms,
                               s->server->auth_max_failures_per_ip)) {
        mx_log(MX_LOG_WARNING, "smtp.auth_ip_blocked", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip));
        session_reply(s, 454, "4.7.0", "Too many failed logins from your address, try later");
        return;
    }
    if (strcmp(cmd->auth_mech, "PLAIN") == 0) {
        if (cmd->has_auth_initial) {
            session_sasl_plain(s, cmd->auth_initial, cmd->auth_initial_len);
        } else {
            s->sasl = SASL_PLAIN;
            s->state = SESSION_SASL;
            session_printf(s, "334 \r\n");
        }
    } else if (strcmp(cmd->auth_mech, "LOGIN") == 0) {
        if (cmd->has_auth_initial) {
            struct smtp_reply_err err;
            size_t n;
            if (smtp_base64_decode_line(cmd->auth_initial, cmd->auth_initial_len, s->sasl_login,
                                        sizeof s->sasl_login, &n, &err) < 0) {
                session_client_error_err(s, &err);
                return;
            }
            s->sasl = SASL_LOGIN_PASS;
            session_printf(s, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
        } else {
            s->sasl = SASL_LOGIN_USER;
            session_printf(s, "334 VXNlcm5hbWU6\r\n"); /* "Username:" */
        }
        s->state = SESSION_SASL;
    } else {
        session_client_error(s, 504, "5.5.4", "Unrecognized authentication mechanism");
    }
}

/* session_sasl_line - a continuation line of an AUTH exchange. */
static void session_sasl_line(struct inbound_session *s, char *line, size_t len)
{
    enum sasl_step step = s->sasl;
    s->sasl = SASL_NONE;
    s->state = SESSION_CMD;
    if (len == 1 && line[0] == '*') {
        session_client_error(s, 501, "5.7.0", "Authentication cancelled");
        return;
    }
    struct smtp_reply_err err;
    size_t n;
    char password[256];
    switch (step) {
    case SASL_PLAIN:
        session_sasl_plain(s, line, len);
        break;
    case SASL_LOGIN_USER:
        if (smtp_base64_decode_line(line, len, s->sasl_login, sizeof s->sasl_login, &n, &err) < 0) {
            session_client_error_err(s, &err);
            break;
        }
        s->sasl = SASL_LOGIN_PASS;
        s->state = SESSION_SASL;
        session_printf(s, "334 UGFzc3dvcmQ6\r\n");
        break;
    case SASL_LOGIN_PASS:
        if (smtp_base64_decode_line(line, len, password, sizeof password, &n, &err) < 0) {
            session_client_error_err(s, &err);
            break;
        }
        session_auth_check(s, s->sasl_login, password, n);
        OPENSSL_cleanse(password, sizeof password);
        break;
    case SASL_NONE:
        break;
    }
}

/* ---- MAIL / RCPT ------------------------------------------------------ */

/* session_qualify - RFC 6409 8.4: the msa completes an unqualified
 * address with the user's own domain. */
static bool session_qualify(struct inbound_session *s, const struct smtp_cmd *cmd, unsigned flags,
                            const char *line, size_t len, struct smtp_cmd *qualified)
{
    if (s->instance->mode != INBOUND_MODE_MSA || !s->authenticated ||
        cmd->addr.error != MX_ADDRESS_ERR_NO_DOMAIN)
        return false;
    const char *at = strrchr(s->identity.mail, '@');
    const char *close = memchr(line, '>', len);
    if (at == NULL || close == NULL)
        return false;
    char *rewritten = mx_asprintf("%.*s%s%.*s", (int)(close - line), line, at,
                                  (int)(len - (size_t)(close - line)), close);
    struct smtp_reply_err err;
    bool ok = smtp_cmd_parse(rewritten, strlen(rewritten), flags, qualified, &err) == 0;
    free(rewritten);
    return ok;
}

static void session_cmd_mail(struct inbound_session *s, const struct smtp_cmd *cmd)
{
    if (!s->greeted) {
        session_client_error(s, 503, "5.5.1", "Error: send HELO/EHLO first");
        return;
    }
    if (s->instance->require_tls && !s->tls) {
        session_client_error(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        return;
    }
    if (s->instance->require_auth && !s->authenticated) {
        session_client_error(s, 530, "5.7.0", "Authentication required");
        return;
    }
    if (s->in_mail) {
        session_client_error(s, 503, "5.5.1", "Error: nested MAIL command");
        return;
    }
    if (cmd->mail.has_size && cmd->mail.size > s->instance->max_message_size) {
        session_client_error(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
        return;
    }
    if (cmd->mail.body == SMTP_BODY_BINARYMIME) {
        /* Only with BDAT; we do not advertise BINARYMIME. */
        session_client_error(s, 555, "5.5.4", "BODY=BINARYMIME not supported");
        return;
    }
    if (s->authenticated && s->instance->mode == INBOUND_MODE_MSA &&
        (cmd->addr.is_null || !mx_identity_owns(&s->identity, cmd->addr.addr))) {
        mx_log(MX_LOG_NOTICE, "smtp.sender_not_owned", MX_KV("sid", s->sid),
               MX_KV("user", s->identity.mail), MX_KV("from", cmd->addr.addr));
        session_client_error(s, 553, "5.7.1", "Sender address rejected: not owned by user");
        return;
    }
    s->in_mail = true;
    s->sender = cmd->addr;
    s->mail = cmd->mail;
    mx_msgid_next(&s->id);
    mx_msgid_format(&s->id, s->id_text);
    mx_log(MX_LOG_INFO, "smtp.mail", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
           MX_KV("from", cmd->addr.is_null ? "<>" : cmd->addr.addr));
    session_reply(s, 250, "2.1.0", "Ok");
}

static const char *session_notify_text(unsigned notify, char *buf, size_t size)
{
    buf[0] = '\0';
    if (notify & SMTP_NOTIFY_NEVER)
        snprintf(buf, size, "NEVER");
    static const struct {
        unsigned bit;
        const char *name;
    } bits[] = { { SMTP_NOTIFY_SUCCESS, "SUCCESS" }, { SMTP_NOTIFY_FAILURE, "FAILURE" },
                 { SMTP_NOTIFY_DELAY, "DELAY" } };
    for (size_t i = 0; i < 3; i++)
        if (notify & bits[i].bit) {
            size_t len = strlen(buf);
            snprintf(buf + len, size - len, "%s%s", len ? "," : "", bits[i].name);
        }
    return buf;
}

static void session_rcpt_accepted(struct inbound_session *s)
{
    const char *addr = s->pending_rcpt.addr;
    for (size_t i = 0; i < s->n_rcpts; i++) {
        if (strcmp(s->rcpts[i].addr, addr) == 0) { /* listed twice: deliver once */
            session_reply(s, 250, "2.1.5", "Ok");
            return;
        }
    }
    char notify[64];
    s->rcpts = mx_reallocarray(s->rcpts, s->n_rcpts + 1, sizeof *s->rcpts);
    struct session_rcpt *r = &s->rcpts[s->n_rcpts++];
    r->addr = mx_strdup(addr);
    r->notify = mx_strdup(session_notify_text(s->pending_params.notify, notify, sizeof notify));
    r->orcpt = s->pending_params.has_orcpt
                   ? mx_asprintf("%s;%s", s->pending_params.orcpt_type, s->pending_params.orcpt)
                   : mx_strdup("");
    session_reply(s, 250, "2.1.5", "Ok");
}

static void session_on_rcpt(void *ctx, const struct smtp_reply_err *reply, const char *detail)
{
    struct inbound_session *s = ctx;
    s->rcpt_check = NULL;
    if (reply) {
        mx_log(MX_LOG_NOTICE, "smtp.rcpt_rejected", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("peer", s->peer_ip), MX_KV("rcpt", s->pending_rcpt.addr),
               MX_KV("reason", detail), MX_KVI("code", reply->code));
        if (reply->code >= 500)
            session_client_error_err(s, reply);
        else
            session_reply_err(s, reply);
    } else {
        mx_log(MX_LOG_DEBUG, "smtp.rcpt_accepted", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("rcpt", s->pending_rcpt.addr), MX_KV("kind", detail));
        session_rcpt_accepted(s);
    }
    session_wait_done(s);
}

static void session_cmd_rcpt(struct inbound_session *s, const struct smtp_cmd *cmd)
{
    if (!s->in_mail) {
        session_client_error(s, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (s->bdat_started) {
        session_client_error(s, 503, "5.5.1", "Error: RCPT after BDAT");
        return;
    }
    if (s->n_rcpts >= s->instance->max_recipients) {
        session_reply(s, 452, "4.5.3", "Error: too many recipients");
        return;
    }
    s->pending_rcpt = cmd->addr;
    s->pending_params = cmd->rcpt;
    struct smtp_reply_err reply;
    bool relay_allowed = s->authenticated && s->instance->mode == INBOUND_MODE_MSA;
    switch (inbound_rcpt_check_start(s->server, &cmd->addr, relay_allowed,
                                     s->mail.has_size ? s->mail.size : 0, s->sid, session_on_rcpt,
                                     s, &s->rcpt_check, &reply)) {
    case 0:
        session_rcpt_accepted(s);
        break;
    case 1:
        mx_log(MX_LOG_NOTICE, "smtp.rcpt_rejected", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("peer", s->peer_ip), MX_KV("rcpt", cmd->addr.addr), MX_KV("reason", reply.text));
        session_client_error_err(s, &reply);
        break;
    default:
        s->state = SESSION_WAIT;
        break;
    }
}

/* ---- DATA / BDAT ------------------------------------------------------ */

/* session_sink - decoded message bytes go to the spool file and past the
 * header scanner; a write error (disk full) is our failure: 451 later. */
static int session_sink(void *ctx, const void *data, size_t len)
{
    struct inbound_session *s = ctx;
    if (!s->headers.done)
        mx_header_scan_feed(&s->headers, data, len);
    char *error = NULL;
    if (mx_spool_write(s->spool_file, data, len, &error) < 0) {
        mx_log(MX_LOG_ERR, "smtp.spool_write_failed", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("error", error));
        free(error);
        s->spool_failed = true;
        return -1;
    }
    s->message_size += len;
    return 0;
}

/* session_open_message - spool file + scanner for a DATA or BDAT body. */
static int session_open_message(struct inbound_session *s)
{
    char *error = NULL;
    if (mx_spool_create(s->server->spool, s->id_text, &s->spool_file, &error) < 0) {
        mx_log(MX_LOG_ERR, "smtp.spool_create_failed", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("error", error));
        free(error);
        session_reply(s, 451, "4.3.0", "Local error in processing, try again later");
        return -1;
    }
    const char *scan_error = NULL;
    mx_header_scan_init(&s->headers, session_header_names,
                        sizeof session_header_names / sizeof session_header_names[0], &scan_error);
    s->message_size = 0;
    s->spool_failed = false;
    return 0;
}

static void session_cmd_data(struct inbound_session *s)
{
    if (!s->in_mail) {
        session_client_error(s, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (s->bdat_started) {
        session_client_error(s, 503, "5.5.1", "Error: DATA after BDAT");
        return;
    }
    if (s->n_rcpts == 0) {
        session_client_error(s, 554, "5.5.1", "Error: no valid recipients");
        return;
    }
    if (session_open_message(s) < 0)
        return;
    struct smtp_data_limits limits = {
        .max_line = SMTP_DATA_MAX_LINE_DEFAULT,
        .max_size = s->instance->max_message_size,
        .allow_nul = false,
    };
    smtp_data_init(&s->data, &limits, session_sink, s);
    session_printf(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
    s->state = SESSION_DATA;
}

/* session_prepend - the header lines mx-inbound adds in front of the
 * message: Received always; for the msa also Date and Message-ID when the
 * client left them out (RFC 6409 8.2, 8.3). */
static char *session_prepend(struct inbound_session *s)
{
    char received[MX_HEADER_RECEIVED_MAX];
    const char *error = NULL;
    SSL *ssl = session_ssl(s);
    time_t now = time(NULL);
    struct mx_received_info info = {
        .helo = s->helo[0] ? s->helo : NULL,
        .ip = s->peer_ip,
        .by_host = s->server->hostname,
        .id = s->id_text,
        .rcpt = s->n_rcpts == 1 ? s->rcpts[0].addr : NULL,
        .tls_version = ssl ? SSL_get_version(ssl) : NULL,
        .tls_cipher = ssl ? SSL_get_cipher_name(ssl) : NULL,
        .auth_user = s->authenticated ? s->identity.mail : NULL,
        .show_auth_user = false,
        .esmtp = s->esmtp,
        .utf8 = s->mail.smtputf8,
        .date = now,
    };
    if (mx_header_format_received(received, sizeof received, &info, &error) < 0) {
        mx_log(MX_LOG_ERR, "smtp.received_header_failed", MX_KV("sid", s->sid),
               MX_KV("id", s->id_text), MX_KV("error", error));
        received[0] = '\0';
    }
    char date[128] = "", message_id[512] = "";
    if (s->instance->mode == INBOUND_MODE_MSA) {
        if (mx_header_scan_count(&s->headers, HDR_DATE) == 0)
            (void)mx_header_format_date(date, sizeof date, now, &error);
        if (mx_header_scan_count(&s->headers, HDR_MESSAGE_ID) == 0)
            (void)mx_header_format_message_id(message_id, sizeof message_id, s->id_text,
                                              s->server->hostname, &error);
    }
    return mx_asprintf("%s%s%s%s", s->filter_headers ? s->filter_headers : "", received, date,
                       message_id);
}

static void session_on_commit(void *ctx, int error, const char *name)
{
    struct inbound_session *s = ctx;
    s->commit = NULL;
    if (error) {
        session_reply(s, 451, "4.3.0", "Local error in processing, try again later");
    } else {
        mx_log(MX_LOG_INFO, "smtp.accepted", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("peer", s->peer_ip), MX_KV("from", s->sender.is_null ? "<>" : s->sender.addr),
               MX_KVU("rcpts", s->n_rcpts), MX_KVU("size", s->message_size),
               MX_KV("auth", s->authenticated ? s->identity.mail : NULL));
        session_printf(s, "250 2.0.0 Ok: queued as %s\r\n", s->id_text);
        s->transactions++;
        inbound_handoff_queue(s->server->handoff, name);
    }
    session_reset_transaction(s);
    session_wait_done(s);
}

/* session_commit_message - write the envelope after the body and hand the
 * file to the group committer; "250" goes out when it is durable. */
static void session_commit_message(struct inbound_session *s)
{
    struct inbound_envelope env = { 0 };
    char notify_empty[1] = "";
    env.id = s->id;
    env.instance = s->instance->name;
    env.sender = s->sender.is_null ? notify_empty : s->sender.addr;
    env.n_recipients = s->n_rcpts;
    env.recipients = mx_calloc(s->n_rcpts, sizeof *env.recipients);
    env.notify = mx_calloc(s->n_rcpts, sizeof *env.notify);
    env.orcpt = mx_calloc(s->n_rcpts, sizeof *env.orcpt);
    for (size_t i = 0; i < s->n_rcpts; i++) {
        env.recipients[i] = s->rcpts[i].addr;
        env.notify[i] = s->rcpts[i].notify;
        env.orcpt[i] = s->rcpts[i].orcpt;
    }
    env.client_addr = s->peer_ip;
    env.client_helo = s->helo;
    env.auth_user = s->authenticated ? s->identity.mail : notify_empty;
    env.envid = s->mail.has_envid ? s->mail.envid : notify_empty;
    env.ret = s->mail.ret == SMTP_RET_FULL ? "FULL" : s->mail.ret == SMTP_RET_HDRS ? "HDRS" : notify_empty;
    env.body_type = s->mail.body == SMTP_BODY_8BITMIME ? "8BITMIME" : "7BIT";
    env.smtputf8 = s->mail.smtputf8;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    env.arrival_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    env.message_size = s->message_size;
    env.prepend = session_prepend(s);

    char *error = NULL;
    int bad = inbound_envelope_write(s->spool_file, &env, &error);
    free(env.prepend);
    free(env.recipients);
    free(env.notify);
    free(env.orcpt);
    if (bad < 0) {
        mx_log(MX_LOG_ERR, "smtp.spool_write_failed", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("error", error));
        free(error);
        session_reply(s, 451, "4.3.0", "Local error in processing, try again later");
        session_reset_transaction(s);
        return;
    }
    struct mx_spool_file *file = s->spool_file;
    s->spool_file = NULL;
    s->state = SESSION_WAIT;
    s->commit = mx_spool_commit_async(s->server->committer, file, session_on_commit, s);
}

static void session_on_content_verdict(void *ctx, enum mx_bus_result result,
                                       const struct mx_frame_view *reply)
{
    struct inbound_session *s = ctx;
    if (result == MX_BUS_CANCELLED || s->state == SESSION_CLOSED || !s->filter_pending)
        return;
    s->filter_pending = false;
    uint32_t verdict = MX_VERDICT_ACCEPT;
    char *text = NULL;
    if (result == MX_BUS_REPLY) {
        (void)mx_frame_get_u32(reply, F_VERDICT, &verdict);
        (void)mx_frame_get_str(reply, F_TEXT, &text);
        /* Headers the filter wants added (X-Spam-Status, ...), in order. */
        struct mx_field_iter it = { 0 };
        uint16_t tag;
        const uint8_t *value;
        size_t len;
        while (mx_frame_next_field(reply, &it, &tag, &value, &len) == 1) {
            if (tag != F_HEADER || memchr(value, '\0', len))
                continue;
            char *more = mx_asprintf("%s%.*s\r\n", s->filter_headers ? s->filter_headers : "",
                                     (int)len, (const char *)value);
            free(s->filter_headers);
            s->filter_headers = more;
        }
    } else if (!s->server->filter_fail_open) {
        mx_log(MX_LOG_WARNING, "smtp.filter_unavailable", MX_KV("sid", s->sid),
               MX_KV("id", s->id_text), MX_KV("stage", "content"));
        session_reply(s, 451, "4.3.0", "Content filter unavailable, try again later");
        session_reset_transaction(s);
        session_wait_done(s);
        return;
    } else {
        mx_log(MX_LOG_WARNING, "smtp.filter_unavailable_fail_open", MX_KV("sid", s->sid),
               MX_KV("id", s->id_text));
    }
    mx_log(MX_LOG_INFO, "smtp.content_verdict", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
           MX_KVU("verdict", verdict), MX_KV("text", text));
    switch (verdict) {
    case MX_VERDICT_REJECT:
        session_client_error(s, 550, "5.7.1", "Message rejected by content filter");
        session_reset_transaction(s);
        break;
    case MX_VERDICT_TEMPFAIL:
        session_reply(s, 451, "4.7.1", "Message deferred by content filter, try again later");
        session_reset_transaction(s);
        break;
    case MX_VERDICT_DISCARD:
        /* Accepted and dropped, by policy: the log is the only trace. */
        mx_log(MX_LOG_NOTICE, "smtp.discarded", MX_KV("sid", s->sid), MX_KV("id", s->id_text));
        session_printf(s, "250 2.0.0 Ok: queued as %s\r\n", s->id_text);
        session_reset_transaction(s);
        break;
    default: /* ACCEPT, and QUARANTINE: delivery files it by the filter's header */
        free(text);
        session_commit_message(s);
        if (s->state != SESSION_WAIT)
            session_wait_done(s);
        return;
    }
    free(text);
    session_wait_done(s);
}

/* session_filter_content - ask mx-filter for a verdict on the spooled
 * message before answering: we reject, we never bounce later. */
static void session_filter_content(struct inbound_session *s)
{
    char path[4096];
    struct mx_frame frame;
    mx_frame_init(&frame, MSG_INBOUND_FILTER_CONTENT_CHECK, 0, &s->id);
    mx_frame_put_str(&frame, F_INSTANCE, s->instance->name);
    mx_frame_put_str(&frame, F_CLIENT_ADDR, s->peer_ip);
    mx_frame_put_str(&frame, F_CLIENT_NAME, s->helo);
    mx_frame_put_str(&frame, F_AUTH_USER, s->authenticated ? s->identity.mail : "");
    mx_frame_put_str(&frame, F_SENDER, s->sender.is_null ? "" : s->sender.addr);
    for (size_t i = 0; i < s->n_rcpts; i++)
        mx_frame_put_str(&frame, F_RECIPIENT, s->rcpts[i].addr);
    mx_frame_put_u64(&frame, F_SIZE, s->message_size);
    mx_frame_put_str(&frame, F_SPOOL_PATH, mx_spool_tmp_path(s->spool_file, path, sizeof path));
    const char *error = NULL;
    s->state = SESSION_WAIT;
    s->filter_pending = true;
    if (mx_client_request(s->server->filter, &frame, session_on_content_verdict, s,
                          &s->filter_request, &error) < 0) {
        mx_log(MX_LOG_ERR, "smtp.filter_request_failed", MX_KV("sid", s->sid), MX_KV("error", error));
        s->filter_pending = false;
        s->state = SESSION_CMD;
        session_reply(s, 451, "4.3.0", "Local error in processing, try again later");
        session_reset_transaction(s);
    }
    mx_frame_free(&frame);
}

/* session_end_of_message - DATA's terminator or BDAT LAST arrived. */
static void session_end_of_message(struct inbound_session *s, enum smtp_data_status status)
{
    s->state = SESSION_CMD;
    mx_header_scan_finish(&s->headers);
    if (status == SMTP_DATA_OK && mx_header_scan_count(&s->headers, HDR_RECEIVED) > SESSION_MAX_RECEIVED) {
        mx_log(MX_LOG_NOTICE, "smtp.mail_loop", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KVU("received", mx_header_scan_count(&s->headers, HDR_RECEIVED)));
        session_client_error(s, 554, "5.4.6", "Too many hops: mail forwarding loop");
        session_reset_transaction(s);
        return;
    }
    if (status != SMTP_DATA_OK) {
        struct smtp_reply_err reply;
        smtp_data_reply(status, &reply);
        mx_log(status == SMTP_DATA_BARE_LF || status == SMTP_DATA_BARE_CR ? MX_LOG_WARNING : MX_LOG_NOTICE,
               "smtp.message_refused", MX_KV("sid", s->sid), MX_KV("id", s->id_text),
               MX_KV("peer", s->peer_ip), MX_KV("reason", smtp_data_status_name(status)),
               MX_KVU("line", smtp_data_problem_line(&s->data)));
        if (status == SMTP_DATA_SINK_FAILED)
            session_reply_err(s, &reply);
        else
            session_client_error_err(s, &reply);
        session_reset_transaction(s);
        return;
    }
    if (s->server->filter)
        session_filter_content(s);
    else
        session_commit_message(s);
}

static void session_bdat_chunk_done(struct inbound_session *s);

/* session_bdat_skip - a refused BDAT's chunk still follows on the wire:
 * read and drop it so its bytes are never taken for commands. */
static void session_bdat_skip(struct inbound_session *s, const struct smtp_cmd *cmd)
{
    smtp_bdat_init(&s->bdat, 0, NULL, NULL);
    smtp_bdat_begin_chunk(&s->bdat, cmd->bdat_size, cmd->bdat_last);
    s->state = SESSION_BDAT;
    if (cmd->bdat_size == 0)
        s->state = SESSION_CMD;
}

/* session_cmd_bdat - RFC 3030 chunk header; the chunk bytes follow. */
static void session_cmd_bdat(struct inbound_session *s, const struct smtp_cmd *cmd)
{
    if (!s->in_mail) {
        session_client_error(s, 503, "5.5.1", "Error: need MAIL command");
        /* The chunk still follows and must not be read as commands. */
        session_bdat_skip(s, cmd);
        return;
    }
    if (!s->bdat_started) {
        if (s->n_rcpts == 0 || session_open_message(s) < 0) {
            if (s->n_rcpts == 0)
                session_client_error(s, 554, "5.5.1", "Error: no valid recipients");
            session_bdat_skip(s, cmd);
            return;
        }
        smtp_bdat_init(&s->bdat, s->instance->max_message_size, session_sink, s);
        s->bdat_started = true;
    }
    smtp_bdat_begin_chunk(&s->bdat, cmd->bdat_size, cmd->bdat_last);
    s->state = SESSION_BDAT;
    if (cmd->bdat_size == 0)
        session_bdat_chunk_done(s); /* "BDAT 0 LAST": nothing to read */
}

/* session_bdat_chunk_done - a whole chunk was read. */
static void session_bdat_chunk_done(struct inbound_session *s)
{
    s->state = SESSION_CMD;
    if (!s->bdat_started) /* chunk of a refused BDAT: already answered */
        return;
    enum smtp_data_status status = smtp_bdat_status(&s->bdat);
    if (status != SMTP_DATA_OK && !s->bdat.last) {
        struct smtp_reply_err reply;
        smtp_data_reply(status, &reply);
        session_reply_err(s, &reply);
        session_reset_transaction(s);
        return;
    }
    if (!s->bdat.last) {
        session_printf(s, "250 2.0.0 %llu octets received\r\n", (unsigned long long)s->bdat.size);
        return;
    }
    session_end_of_message(s, status);
}

/* ---- command dispatch ------------------------------------------------- */

static void session_command(struct inbound_session *s, char *line, size_t len)
{
    struct smtp_cmd cmd;
    struct smtp_reply_err err;
    unsigned flags = s->mail.smtputf8 ? SMTP_CMD_UTF8_TRANSACTION : 0;
    if (smtp_cmd_parse(line, len, flags, &cmd, &err) < 0) {
        struct smtp_cmd qualified;
        if ((cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_RCPT) &&
            session_qualify(s, &cmd, flags, line, len, &qualified)) {
            cmd = qualified;
        } else {
            mx_log(MX_LOG_DEBUG, "smtp.bad_command", MX_KV("sid", s->sid),
                   MX_KV("verb", smtp_verb_name(cmd.verb)), MX_KV("reply", err.text));
            session_client_error_err(s, &err);
            return;
        }
    }
    switch (cmd.verb) {
    case SMTP_VERB_HELO:
    case SMTP_VERB_EHLO:
        session_cmd_helo(s, &cmd);
        break;
    case SMTP_VERB_MAIL:
        session_cmd_mail(s, &cmd);
        break;
    case SMTP_VERB_RCPT:
        session_cmd_rcpt(s, &cmd);
        break;
    case SMTP_VERB_DATA:
        session_cmd_data(s);
        break;
    case SMTP_VERB_BDAT:
        session_cmd_bdat(s, &cmd);
        break;
    case SMTP_VERB_RSET:
        session_reset_transaction(s);
        session_reply(s, 250, "2.0.0", "Ok");
        break;
    case SMTP_VERB_NOOP:
        session_reply(s, 250, "2.0.0", "Ok");
        break;
    case SMTP_VERB_QUIT:
        session_printf(s, "221 2.0.0 %s closing connection\r\n", s->server->hostname);
        s->state = SESSION_QUIT;
        break;
    case SMTP_VERB_HELP:
        session_reply(s, 214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS AUTH");
        break;
    case SMTP_VERB_VRFY:
        /* Never disclose whether an address exists (RFC 5321 3.5.3). */
        session_reply(s, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_VERB_EXPN:
        session_client_error(s, 502, "5.5.1", "EXPN is disabled");
        break;
    case SMTP_VERB_STARTTLS:
        session_cmd_starttls(s);
        break;
    case SMTP_VERB_AUTH:
        session_cmd_auth(s, &cmd);
        break;
    case SMTP_VERB_NONE:
        session_client_error(s, 500, "5.5.2", "Command unrecognized");
        break;
    }
}

/* session_read_line - take one complete line from input into line (CRLF or
 * a lone LF ends a command line; CR is stripped). Returns its length, -1
 * when no complete line is there yet, -2 when an over-long line was found
 * and dropped (the reply has been sent). */
static ssize_t session_read_line(struct inbound_session *s, struct evbuffer *in, char *line,
                                 size_t max)
{
    size_t eol_len = 0;
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
    if (s->discarding_line) {
        if (eol.pos < 0) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return -1;
        }
        evbuffer_drain(in, (size_t)eol.pos + eol_len);
        s->discarding_line = false;
        return -2;
    }
    if (eol.pos < 0) {
        if (evbuffer_get_length(in) > max) {
            /* 10 MB without a line end: answer now, then drop bytes as they
             * come until the line ends; memory stays bounded. */
            session_client_error(s, 500, "5.5.2", "Line too long");
            evbuffer_drain(in, evbuffer_get_length(in));
            s->discarding_line = true;
            return -2;
        }
        return -1;
    }
    size_t len = (size_t)eol.pos;
    if (len > max) {
        session_client_error(s, 500, "5.5.2", "Line too long");
        evbuffer_drain(in, len + eol_len);
        return -2;
    }
    evbuffer_remove(in, line, len);
    evbuffer_drain(in, eol_len);
    if (len > 0 && line[len - 1] == '\r')
        len--;
    line[len] = '\0';
    return (ssize_t)len;
}

/* session_feed_body - give the DATA decoder / BDAT reader what arrived. */
static void session_feed_body(struct inbound_session *s, struct evbuffer *in)
{
    while (evbuffer_get_length(in) > 0 && (s->state == SESSION_DATA || s->state == SESSION_BDAT)) {
        struct evbuffer_iovec vec;
        if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            break;
        bool done = false;
        size_t used = s->state == SESSION_DATA
                          ? smtp_data_feed(&s->data, vec.iov_base, vec.iov_len, &done)
                          : smtp_bdat_feed(&s->bdat, vec.iov_base, vec.iov_len, &done);
        evbuffer_drain(in, used);
        if (!done)
            continue;
        if (s->state == SESSION_DATA)
            session_end_of_message(s, smtp_data_status(&s->data));
        else
            session_bdat_chunk_done(s);
    }
}

/* session_close_flushed - close once the last reply really left. Under
 * STARTTLS the session's bufferevent is a filter: its output drains into
 * the socket bufferevent below, whose progress we get no callback for, so
 * that one is polled (bounded: a client that stops reading is cut off). */
static void session_on_flush_poll(evutil_socket_t fd, short what, void *arg)
{
    struct inbound_session *s = arg;
    if (s->state == SESSION_QUIT)
        session_close_flushed(s);
}

static void session_close_flushed(struct inbound_session *s)
{
    struct bufferevent *below = bufferevent_get_underlying(s->bev);
    if (below == NULL || evbuffer_get_length(bufferevent_get_output(below)) == 0 ||
        ++s->flush_polls > 200) {
        session_close(s, "quit");
        return;
    }
    struct timeval tv = { 0, 10000 };
    if (s->flush_timer == NULL) /* freed by session_close */
        s->flush_timer = evtimer_new(s->server->base, session_on_flush_poll, s);
    evtimer_add(s->flush_timer, &tv);
}

/* session_drive - process as much buffered input as the state allows. */
static void session_drive(struct inbound_session *s)
{
    char line[SMTP_AUTH_LINE_MAX + 3];
    while (s->state != SESSION_CLOSED) {
        struct evbuffer *in = bufferevent_get_input(s->bev);
        struct evbuffer *out = bufferevent_get_output(s->bev);
        if (s->state == SESSION_QUIT) {
            if (evbuffer_get_length(out) == 0)
                session_close_flushed(s);
            return; /* session_on_write closes once the reply is out */
        }
        if (session_output_pending(s) > SESSION_OUTPUT_HIGH)
            return; /* resumed by session_on_write / session_on_below_output */
        if (s->state == SESSION_PROXY) {
            size_t avail = evbuffer_get_length(in);
            if (avail > MX_PROXY_V2_MAX)
                avail = MX_PROXY_V2_MAX;
            uint8_t *head = evbuffer_pullup(in, (ssize_t)avail);
            struct mx_proxy_v2_result proxy;
            const char *error = NULL;
            int n = avail ? mx_proxy_v2_parse(head, avail, &proxy, &error) : 0;
            if (n == 0) {
                if (s->peer_eof)
                    session_close(s, "client closed before the PROXY header");
                return;
            }
            if (n < 0) {
                mx_log(MX_LOG_WARNING, "smtp.proxy_header_invalid", MX_KV("sid", s->sid),
                       MX_KV("balancer", s->peer_ip), MX_KV("error", error));
                session_close(s, "invalid PROXY header");
                return;
            }
            evbuffer_drain(in, (size_t)n);
            if (!proxy.local) {
                const struct sockaddr *src = (const struct sockaddr *)&proxy.source;
                mx_net_addr_text(src, s->peer_ip, sizeof s->peer_ip);
                s->peer_port = ntohs(src->sa_family == AF_INET
                                         ? ((const struct sockaddr_in *)src)->sin_port
                                         : ((const struct sockaddr_in6 *)src)->sin6_port);
            }
            if (s->listener->implicit_tls && session_wrap_implicit_tls(s) < 0)
                return;
            session_begin(s);
            continue;
        }
        if (s->state == SESSION_DATA || s->state == SESSION_BDAT) {
            session_feed_body(s, in);
            if (s->state == SESSION_DATA || s->state == SESSION_BDAT) {
                if (s->peer_eof) /* the body can never be complete: nothing is queued */
                    session_close(s, "client disconnected during DATA");
                return; /* wants more bytes */
            }
            continue;
        }
        if (s->state != SESSION_CMD && s->state != SESSION_SASL)
            return; /* SESSION_WAIT / SESSION_GREET: resumed by the callback */
        ssize_t len = session_read_line(s, in, line, SMTP_AUTH_LINE_MAX);
        if (len == -1) {
            if (s->peer_eof)
                session_close(s, "client closed");
            return;
        }
        if (len == -2)
            continue;
        if (s->state == SESSION_SASL)
            session_sasl_line(s, line, (size_t)len);
        else
            session_command(s, line, (size_t)len);
        /* Lines may carry credentials (AUTH PLAIN initial response). */
        OPENSSL_cleanse(line, (size_t)len);
    }
}

/* ---- libevent callbacks ----------------------------------------------- */

static void session_on_read(struct bufferevent *bev, void *arg)
{
    session_drive(arg);
}

static void session_on_write(struct bufferevent *bev, void *arg)
{
    struct inbound_session *s = arg;
    if (s->state == SESSION_QUIT) {
        session_close_flushed(s);
        return;
    }
    session_drive(s); /* output drained below the mark: read on */
}

static void session_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct inbound_session *s = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        mx_log(MX_LOG_NOTICE, "smtp.idle_timeout", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip),
               MX_KV("id", s->in_mail ? s->id_text : NULL));
        /* Best effort: the client may not read it. */
        session_printf(s, "421 4.4.2 %s Error: timeout exceeded\r\n", s->server->hostname);
        s->state = SESSION_QUIT;
        bufferevent_enable(bev, EV_WRITE);
        bufferevent_disable(bev, EV_READ);
        struct timeval flush = { 5, 0 };
        bufferevent_set_timeouts(bev, NULL, &flush);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long tls_error = s->tls ? bufferevent_get_openssl_error(bev) : 0;
        char reason[256];
        if (tls_error)
            ERR_error_string_n(tls_error, reason, sizeof reason);
        else
            snprintf(reason, sizeof reason, "%s", strerror(EVUTIL_SOCKET_ERROR()));
        /* After STARTTLS a failed handshake's alert (e.g. protocol_version)
         * is still in the plain connection's output: send it, best effort,
         * so the client learns why instead of seeing a bare EOF. */
        struct bufferevent *plain = bufferevent_get_underlying(bev);
        if (plain) { /* its output is frozen at the start: no evbuffer_write */
            struct evbuffer *alert = bufferevent_get_output(plain);
            size_t len = evbuffer_get_length(alert);
            ssize_t ignored = len ? write(bufferevent_getfd(plain), evbuffer_pullup(alert, -1), len) : 0;
            (void)ignored;
        }
        session_close(s, reason);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* A half-close after pipelined commands (..., ".", QUIT) is legal:
         * what was sent is still answered; session_drive closes once the
         * input is used up (mid-DATA: nothing is queued). */
        s->peer_eof = true;
        session_drive(s);
    }
}

static void session_on_session_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct inbound_session *s = arg;
    mx_log(MX_LOG_NOTICE, "smtp.session_timeout", MX_KV("sid", s->sid), MX_KV("peer", s->peer_ip));
    session_close(s, "session time limit");
}

static bool session_from_proxy(const struct inbound_instance *instance, const struct sockaddr *peer)
{
    for (size_t i = 0; i < instance->n_proxies; i++) {
        const struct sockaddr *p = (const struct sockaddr *)&instance->proxies[i].addr;
        if (p->sa_family != peer->sa_family)
            continue;
        if (p->sa_family == AF_INET &&
            memcmp(&((const struct sockaddr_in *)p)->sin_addr,
                   &((const struct sockaddr_in *)peer)->sin_addr, 4) == 0)
            return true;
        if (p->sa_family == AF_INET6 &&
            memcmp(&((const struct sockaddr_in6 *)p)->sin6_addr,
                   &((const struct sockaddr_in6 *)peer)->sin6_addr, 16) == 0)
            return true;
    }
    return false;
}

void inbound_session_start(struct inbound_listener *listener, int fd, const struct sockaddr *peer,
                           socklen_t peer_len)
{
    struct inbound_server *server = listener->instance->server;
    if (server->connections >= server->max_connections || server->stopping) {
        static const char busy[] = "421 4.3.2 Too many connections, try again later\r\n";
        ssize_t ignored = write(fd, busy, sizeof busy - 1);
        (void)ignored;
        close(fd);
        mx_log(MX_LOG_WARNING, "smtp.server_full", MX_KVU("connections", server->connections));
        return;
    }
    struct inbound_session *s = mx_calloc(1, sizeof *s);
    s->server = server;
    s->instance = listener->instance;
    s->listener = listener;
    s->started_ms = mx_now_ms();
    snprintf(s->sid, sizeof s->sid, "S%llx", (unsigned long long)++server->sessions_started);
    mx_net_addr_text(peer, s->peer_ip, sizeof s->peer_ip);
    s->peer_port = ntohs(peer->sa_family == AF_INET ? ((const struct sockaddr_in *)peer)->sin_port
                                                    : ((const struct sockaddr_in6 *)peer)->sin6_port);
    server->connections++;
    evutil_make_socket_nonblocking(fd);
    /* From a balancer the PROXY header comes first, in clear, even on an
     * implicit-TLS port: TLS starts after it (session_wrap_implicit_tls). */
    bool from_proxy = session_from_proxy(s->instance, peer);
    if (listener->implicit_tls && !from_proxy) {
        SSL *ssl = SSL_new(server->tls_ctx);
        s->bev = bufferevent_openssl_socket_new(server->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        s->tls = true;
    } else {
        s->bev = bufferevent_socket_new(server->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    s->resume = event_new(server->base, -1, 0, session_on_resume, s);
    s->session_timer = evtimer_new(server->base, session_on_session_timeout, s);
    struct timeval total = { s->instance->session_timeout_ms / 1000,
                             (s->instance->session_timeout_ms % 1000) * 1000 };
    evtimer_add(s->session_timer, &total);
    session_set_callbacks(s);
    (void)peer_len;
    if (from_proxy) {
        s->state = SESSION_PROXY;
        return;
    }
    session_begin(s);
    session_drive(s);
}
