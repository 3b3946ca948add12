/* inbound_auth - SMTP AUTH credential check against LDAP: find the account
 * for the login name, then bind as its DN with the password. */
#ifndef INBOUND_AUTH_H
#define INBOUND_AUTH_H

#include "inbound.h"

enum inbound_auth_result {
    INBOUND_AUTH_OK,
    INBOUND_AUTH_INVALID,  /* 535 5.7.8: unknown login, wrong password, inactive account */
    INBOUND_AUTH_TEMPFAIL, /* 454 4.7.0: directory unavailable */
    INBOUND_AUTH_BLOCKED,  /* 454 4.7.0: too many failed logins for this account */
};

/* The authenticated identity: the account's mail address and every address
 * it may use as envelope sender (mail + mxAlternateAddress). */
struct inbound_identity {
    char *dn;
    char *mail;
    char **addresses;
    size_t n_addresses;
};

void inbound_identity_clear(struct inbound_identity *identity);
/* inbound_identity_owns - may this identity send as address? (domain part
 * compared case-insensitively, local part exactly) */
bool inbound_identity_owns(const struct inbound_identity *identity, const char *address);

/* identity is only valid during the call; take it over with *identity =
 * (struct inbound_identity){0} after copying the struct. */
typedef void inbound_auth_done_fn(void *ctx, enum inbound_auth_result result,
                                  struct inbound_identity *identity);

struct inbound_auth_check;

/* inbound_auth_start - check login/password (the password is copied and
 * wiped after use; never logged). done runs later, from the loop.
 * Failed passwords are counted per account (its DN, so "alice", "ALICE"
 * and "alice@example.test" share one count); once
 * inbound.auth_max_failures_per_account is reached the account gets
 * INBOUND_AUTH_BLOCKED without a bind, even with the right password. */
struct inbound_auth_check *inbound_auth_start(struct inbound_server *server, const char *sid,
                                              const char *login, const char *password,
                                              size_t password_len, inbound_auth_done_fn *done,
                                              void *ctx);
void inbound_auth_cancel(struct inbound_auth_check **check);

#endif
