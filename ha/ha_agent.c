/* ha_agent - HAProxy agent-check listener (see ha_agent.h). */
#include "ha_agent.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mx_alloc.h"
#include "mx_log.h"
#include "mx_net.h"

struct ha_agent {
    struct evconnlistener *listener;
    ha_agent_state_fn *state;
    void *ctx;
};

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd,
                      struct sockaddr *addr, int socklen, void *arg)
{
    struct ha_agent *agent = arg;
    char line[16];
    int len = snprintf(line, sizeof(line), "%s\n", agent->state(agent->ctx));
    /* A dozen bytes into a fresh socket's empty send buffer: the write
     * completes at once or the peer is already gone. The agent protocol
     * needs nothing from the client, so no read and no per-connection
     * state: a flood of connections costs one accept + write + close each. */
    ssize_t written = write(fd, line, (size_t)len);
    if (written != len) {
        char peer[64];
        mx_log(MX_LOG_DEBUG, "ha.agent_write_failed",
               MX_KV("peer", mx_net_addr_text(addr, peer, sizeof(peer))),
               MX_KVERR(written < 0 ? errno : EAGAIN));
    }
    close(fd);
}

static void on_accept_error(struct evconnlistener *listener, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    /* EMFILE and friends: log and keep listening; libevent retries. */
    mx_log(MX_LOG_WARNING, "ha.agent_accept_failed", MX_KVERR(err));
}

int ha_agent_new(struct event_base *base, const char *listen, ha_agent_state_fn *state,
                 void *ctx, struct ha_agent **agent_r, char **error_r)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (mx_net_parse_hostport(listen, &addr, &addr_len) < 0) {
        if (asprintf(error_r, "ha.agent_listen \"%s\": not a numeric ip:port", listen) < 0)
            *error_r = NULL;
        return -1;
    }
    struct ha_agent *agent = mx_calloc(1, sizeof(*agent));
    agent->state = state;
    agent->ctx = ctx;
    agent->listener = evconnlistener_new_bind(
        base, on_accept, agent, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        64, (struct sockaddr *)&addr, (int)addr_len);
    if (!agent->listener) {
        int err = errno;
        free(agent);
        if (asprintf(error_r, "ha.agent_listen \"%s\": %s", listen, strerror(err)) < 0)
            *error_r = NULL;
        return -1;
    }
    evconnlistener_set_error_cb(agent->listener, on_accept_error);
    *agent_r = agent;
    return 0;
}

void ha_agent_free(struct ha_agent **agent)
{
    if (!*agent)
        return;
    evconnlistener_free((*agent)->listener);
    free(*agent);
    *agent = NULL;
}
