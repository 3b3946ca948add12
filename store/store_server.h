/* store_server - mx-store's bus dispatcher and writer thread (see
 * store_server.c for the threading and group-commit design). */
#ifndef STORE_SERVER_H
#define STORE_SERVER_H

#include "mx_bus.h"
#include "store.h"

struct event_base;
struct store_server;

/* store_server_start - start the writer thread, bind listen (ROUTER) and
 * publish (PUB; empty = none). On -1, *s_r is set anyway and must be
 * stopped; error_r is heap. */
int store_server_start(struct event_base *base, struct store *st, const char *listen,
                       const char *publish, unsigned max_batch, struct store_server **s_r,
                       char **error_r);
const char *store_server_endpoint(const struct store_server *s);
/* store_server_enable_ha - run under mx-ha (store_replication.h): FENCED
 * until mx-ha assigns a role; config->client_endpoint is filled in here. */
struct store_repl_config;
int store_server_enable_ha(struct store_server *s, const struct store_repl_config *config,
                           char **error_r);
/* store_server_stop - stop accepting, finish queued batches, free. */
void store_server_stop(struct store_server **s);

#endif
