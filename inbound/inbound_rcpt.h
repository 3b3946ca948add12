/* inbound_rcpt - recipient validation (relay policy + LDAP). */
#ifndef INBOUND_RCPT_H
#define INBOUND_RCPT_H

#include "inbound.h"
#include "smtp_reply.h"

struct inbound_rcpt_check;

/* reply NULL = accepted; detail is a short reason for the log. The check
 * is freed before this is called. */
typedef void inbound_rcpt_done_fn(void *ctx, const struct smtp_reply_err *reply,
                                  const char *detail);

/* inbound_rcpt_check_start - decide on rcpt. Returns 0 (accepted at once:
 * postmaster, or an authenticated user's mail to an address literal), 1
 * (refused at once: *reply_r), or -1 (asked LDAP: done runs later unless
 * *check_r is cancelled). relay_allowed: the client may send to domains
 * that are not ours (authenticated msa session). declared_size: MAIL's SIZE=
 * (0 if none): a mailbox that cannot take that much more is full (552).
 * sid must outlive the check. */
int inbound_rcpt_check_start(struct inbound_server *server, const struct mx_address *rcpt,
                             bool relay_allowed, uint64_t declared_size, const char *sid,
                             inbound_rcpt_done_fn *done,
                             void *ctx, struct inbound_rcpt_check **check_r,
                             struct smtp_reply_err *reply_r);
void inbound_rcpt_check_cancel(struct inbound_rcpt_check **check);

/* inbound_filter_expand - an operator's filter template with value (escaped
 * per RFC 4515) for every %s; NULL (logged) if the template is broken. */
char *inbound_filter_expand(const char *template, const char *value);

#endif
