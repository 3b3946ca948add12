/* imapd_listen - IMAP and POP3 listeners, plain and implicit TLS. */
#include "imapd.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/listener.h>

#include "mx_alloc.h"

static void imapd_on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *peer,
                            int peer_len, void *arg)
{
    struct imapd_listener *l = arg;
    struct imapd_server *server = l->server;
    char peer_ip[INET6_ADDRSTRLEN + 1];
    mx_net_addr_text(peer, peer_ip, sizeof peer_ip);
    if (server->connections >= server->max_connections) {
        /* Beyond the process limit nothing is allocated: a short refusal
         * written straight to the socket, best effort. */
        static const char imap_bye[] = "* BYE Too many connections, try again later\r\n";
        static const char pop3_err[] = "-ERR [SYS/TEMP] Too many connections, try again later\r\n";
        ssize_t ignored = l->protocol == IMAPD_IMAP && !l->implicit_tls
                              ? write(fd, imap_bye, sizeof imap_bye - 1)
                              : (l->protocol == IMAPD_POP3 && !l->implicit_tls
                                     ? write(fd, pop3_err, sizeof pop3_err - 1)
                                     : 0);
        (void)ignored;
        mx_log(MX_LOG_WARNING, "imapd.connection_limit", MX_KV("peer", peer_ip),
               MX_KVU("connections", server->connections));
        close(fd);
        return;
    }
    server->connections++;
    server->sessions_started++;
    char sid[32];
    snprintf(sid, sizeof sid, "%c%llx", l->protocol == IMAPD_IMAP ? 'i' : 'p',
             (unsigned long long)server->sessions_started);
    struct mx_conn_config cfg = {
        .base = server->base,
        .tls_ctx = server->tls_ctx,
        .implicit_tls = l->implicit_tls,
        .expect_proxy = server->proxies && mx_cidr_list_match(server->proxies, peer),
        .idle_timeout_ms = server->login_timeout_ms,
        .input_high = server->max_line_length + 64 * 1024,
        .output_high = 256 * 1024,
        .role = l->protocol == IMAPD_IMAP ? "imap" : "pop3",
        .registry = &server->conns[l->protocol],
    };
    void *session;
    const struct mx_conn_ops *ops;
    if (l->protocol == IMAPD_IMAP) {
        session = imap_session_new(server, l, sid);
        ops = &imap_session_ops;
    } else {
        session = pop3_session_new(server, l, sid);
        ops = &pop3_session_ops;
    }
    struct mx_conn *conn = mx_conn_new(&cfg, fd, peer, ops, session, sid);
    if (conn == NULL) {
        mx_log(MX_LOG_ERR, "imapd.conn_alloc_failed", MX_KV("peer", peer_ip));
        /* the session never saw a connection: let it free itself */
        ops->on_close(session, "allocation failed");
        return;
    }
    if (l->protocol == IMAPD_IMAP)
        imap_session_attach(session, conn);
    else
        pop3_session_attach(session, conn);
}

static void imapd_listener_reenable(evutil_socket_t fd, short what, void *arg)
{
    evconnlistener_enable(arg);
}

static void imapd_on_accept_error(struct evconnlistener *evl, void *arg)
{
    struct imapd_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    mx_log(MX_LOG_ERR, "imapd.accept_failed", MX_KV("listen", l->address), MX_KVERR(err));
    /* EMFILE/ENFILE: pause instead of spinning; the loop retries. */
    if (err == EMFILE || err == ENFILE) {
        evconnlistener_disable(evl);
        struct timeval tv = { 1, 0 };
        event_base_once(l->server->base, -1, EV_TIMEOUT, imapd_listener_reenable, evl, &tv);
    }
}

static int imapd_listen_one(struct imapd_server *server, const char *address,
                            enum imapd_protocol protocol, bool implicit_tls, char **error_r)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (mx_net_parse_hostport(address, &ss, &len) < 0) {
        *error_r = mx_asprintf("imap: cannot parse listen address \"%s\"", address);
        return -1;
    }
    server->listeners =
        mx_reallocarray(server->listeners, server->n_listeners + 1, sizeof *server->listeners);
    struct imapd_listener *l = &server->listeners[server->n_listeners];
    *l = (struct imapd_listener){ server, NULL, protocol, implicit_tls, mx_strdup(address) };
    l->listener = evconnlistener_new_bind(server->base, imapd_on_accept, NULL,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                              LEV_OPT_REUSEABLE | LEV_OPT_DISABLED,
                                          1024, (struct sockaddr *)&ss, (int)len);
    if (l->listener == NULL) {
        *error_r = mx_asprintf("imap: cannot listen on %s: %s", address, strerror(errno));
        free(l->address);
        return -1;
    }
    server->n_listeners++;
    return 0;
}

int imapd_listen_start(struct imapd_server *server, char **error_r)
{
    static const struct {
        const char *option;
        enum imapd_protocol protocol;
        bool implicit_tls;
    } kinds[] = {
        { "imap.listen", IMAPD_IMAP, false },
        { "imap.listen_tls", IMAPD_IMAP, true },
        { "imap.pop3_listen", IMAPD_POP3, false },
        { "imap.pop3_listen_tls", IMAPD_POP3, true },
    };
    struct mx_config_node root = mx_config_root(server->config);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t n = mx_config_strings_len(&root, kinds[k].option);
        if (n > 0 && kinds[k].implicit_tls && server->tls_ctx == NULL) {
            *error_r = mx_asprintf("%s needs a usable tls.cert_file/key_file", kinds[k].option);
            return -1;
        }
        for (size_t j = 0; j < n; j++)
            if (imapd_listen_one(server, mx_config_strings_at(&root, kinds[k].option, j),
                                 kinds[k].protocol, kinds[k].implicit_tls, error_r) < 0)
                return -1;
    }
    /* The array no longer moves: hand each listener its own address. */
    for (size_t i = 0; i < server->n_listeners; i++) {
        struct imapd_listener *l = &server->listeners[i];
        evconnlistener_set_cb(l->listener, imapd_on_accept, l);
        evconnlistener_set_error_cb(l->listener, imapd_on_accept_error);
        evconnlistener_enable(l->listener);
        mx_log(MX_LOG_NOTICE, "imapd.listening",
               MX_KV("protocol", l->protocol == IMAPD_IMAP ? "imap" : "pop3"),
               MX_KV("listen", l->address), MX_KV("tls", l->implicit_tls ? "implicit" : "starttls"));
    }
    return 0;
}

void imapd_listen_stop(struct imapd_server *server)
{
    for (size_t i = 0; i < server->n_listeners; i++) {
        evconnlistener_free(server->listeners[i].listener);
        free(server->listeners[i].address);
    }
    free(server->listeners);
    server->listeners = NULL;
    server->n_listeners = 0;
}

int imapd_admit(struct imapd_server *server, const char *peer_ip, const char **reason_r)
{
    if (server->max_connections_per_ip == 0 && server->max_connection_rate == 0)
        return 0;
    unsigned per_ip = server->max_connections_per_ip ? server->max_connections_per_ip : UINT_MAX;
    return mx_limits_connect(server->limits, peer_ip, per_ip, server->max_connection_rate,
                             mx_now_ms(), reason_r);
}

void imapd_connection_done(struct imapd_server *server, const char *peer_ip, bool admitted)
{
    if (admitted && (server->max_connections_per_ip || server->max_connection_rate))
        mx_limits_disconnect(server->limits, peer_ip);
    server->connections--;
}

bool imapd_plaintext_auth_allowed(const struct imapd_server *server, struct mx_conn *conn)
{
    return mx_conn_is_tls(conn) ||
           (server->plaintext_networks &&
            mx_cidr_list_match_text(server->plaintext_networks, mx_conn_peer_ip(conn)));
}
