/* ha_agent - the HAProxy agent-check listener.
 *
 * HAProxy's "agent-check" (server option, with agent-port / agent-addr)
 * opens a TCP connection to the agent, which answers one ASCII line of
 * keywords and closes. HAProxy keeps every state the agent does not
 * repeat, and "drain" is an ADMINISTRATIVE state that only "ready" (or
 * "maint") clears - "up" alone would leave a former standby drained for
 * ever. So mx-ha always states both:
 *   "up ready"   the active member of a frontend pair in a quorate partition
 *   "up drain"   a standby: weight 0, finishes what runs, gets no new clients
 *   "down"       no quorum, or no frontend pair lists this node
 * The line is computed at accept time from the current map, so HAProxy
 * follows a switchover at its next check (agent-inter). */
#ifndef HA_AGENT_H
#define HA_AGENT_H

struct event_base;
struct ha_agent;

/* The answer for a new connection, without the newline: "up ready",
 * "up drain" or "down". */
typedef const char *ha_agent_state_fn(void *ctx);

/* ha_agent_new - listen on "ip:port" (mx_net_parse_hostport syntax). -1
 * with a heap error_r naming the address and errno. */
int ha_agent_new(struct event_base *base, const char *listen, ha_agent_state_fn *state,
                 void *ctx, struct ha_agent **agent_r, char **error_r);
void ha_agent_free(struct ha_agent **agent);

#endif
