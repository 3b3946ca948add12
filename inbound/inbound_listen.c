/* inbound_listen - listening sockets and accept for every instance. */
#include "inbound.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_alloc.h"

static void inbound_on_accept(struct evconnlistener *evl, evutil_socket_t fd,
                              struct sockaddr *peer, int peer_len, void *arg)
{
    inbound_session_start(arg, fd, peer, (socklen_t)peer_len);
}

static void inbound_on_accept_error(struct evconnlistener *evl, void *arg)
{
    struct inbound_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE/ENFILE/ENOBUFS: out of descriptors or memory. libevent retries
     * on the next readiness; the log says why sessions are not accepted. */
    mx_log(MX_LOG_ERR, "smtp.accept_failed", MX_KV("listen", l->address),
           MX_KV("instance", l->instance->name), MX_KVERR(err));
}

/* inbound_listen_one - bind one configured address. */
static int inbound_listen_one(struct inbound_server *server, struct inbound_instance *instance,
                              const char *address, bool implicit_tls, char **error_r)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (mx_net_parse_hostport(address, &ss, &len) < 0) {
        *error_r = mx_asprintf("instance %s: listen address \"%s\" is not ip:port or [ipv6]:port",
                               instance->name, address);
        return -1;
    }
    server->listeners = mx_reallocarray(server->listeners, server->n_listeners + 1,
                                        sizeof *server->listeners);
    struct inbound_listener *l = &server->listeners[server->n_listeners];
    memset(l, 0, sizeof *l);
    l->instance = instance;
    l->implicit_tls = implicit_tls;
    l->address = mx_strdup(address);
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (instance->reuseport)
        flags |= LEV_OPT_REUSEABLE_PORT;
    /* The listener is created disabled and enabled once every session
     * structure exists; l's address is stable after all listeners are
     * created (see inbound_listen_start). */
    l->listener = evconnlistener_new_bind(server->base, inbound_on_accept, NULL,
                                          flags | LEV_OPT_DISABLED, 1024,
                                          (struct sockaddr *)&ss, (int)len);
    if (l->listener == NULL) {
        *error_r = mx_asprintf("instance %s: cannot listen on %s: %s", instance->name, address,
                               strerror(errno));
        free(l->address);
        return -1;
    }
    server->n_listeners++;
    return 0;
}

int inbound_listen_start(struct inbound_server *server, char **error_r)
{
    struct mx_config_node root = mx_config_root(server->config);
    for (size_t i = 0; i < server->n_instances; i++) {
        struct inbound_instance *instance = &server->instances[i];
        struct mx_config_node node = mx_config_list_elem(&root, "inbound.instances", i);
        for (size_t j = 0; j < mx_config_strings_len(&node, "listen"); j++)
            if (inbound_listen_one(server, instance, mx_config_strings_at(&node, "listen", j),
                                   false, error_r) < 0)
                return -1;
        size_t n_tls = mx_config_strings_len(&node, "listen_tls");
        if (n_tls > 0 && server->tls_ctx == NULL) {
            *error_r = mx_asprintf("instance %s: listen_tls needs a usable tls.cert_file/key_file",
                                   instance->name);
            return -1;
        }
        for (size_t j = 0; j < n_tls; j++)
            if (inbound_listen_one(server, instance, mx_config_strings_at(&node, "listen_tls", j),
                                   true, error_r) < 0)
                return -1;
    }
    /* Now that the array no longer moves, hand each listener its own address. */
    for (size_t i = 0; i < server->n_listeners; i++) {
        struct inbound_listener *l = &server->listeners[i];
        evconnlistener_set_cb(l->listener, inbound_on_accept, l);
        evconnlistener_set_error_cb(l->listener, inbound_on_accept_error);
        evconnlistener_enable(l->listener);
        mx_log(MX_LOG_NOTICE, "smtp.listening", MX_KV("instance", l->instance->name),
               MX_KV("listen", l->address), MX_KV("tls", l->implicit_tls ? "implicit" : "starttls"));
    }
    return 0;
}

void inbound_listen_stop(struct inbound_server *server)
{
    for (size_t i = 0; i < server->n_listeners; i++) {
        evconnlistener_free(server->listeners[i].listener);
        free(server->listeners[i].address);
    }
    free(server->listeners);
    server->listeners = NULL;
    server->n_listeners = 0;
}
