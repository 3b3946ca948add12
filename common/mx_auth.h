/* mx_auth - the login check every client-facing daemon shares (SMTP AUTH in
 * mx-inbound, LOGIN/AUTHENTICATE/USER+PASS in mx-imapd): find the account
 * for a login name through LDAP, then bind as its DN with the password.
 *
 * Failed passwords are counted per account in a struct mx_limits, keyed by
 * the account's DN (so "alice", "ALICE" and "alice@example.test" share one
 * count); once max_failures_per_account is reached inside window_ms the
 * account gets MX_AUTH_BLOCKED without a bind, even with the right
 * password. Per-address counting is the caller's job (it knows the peer).
 *
 * The account's mxAccountStatus is only revealed to someone who proved the
 * password: an inactive account with a wrong password is MX_AUTH_INVALID
 * like any other failure, with the right one MX_AUTH_DISABLED. */
#ifndef MX_AUTH_H
#define MX_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mx_ldap;
struct mx_limits;

enum mx_auth_result {
    MX_AUTH_OK,
    MX_AUTH_INVALID,  /* unknown login, wrong password, ambiguous or broken entry */
    MX_AUTH_TEMPFAIL, /* directory unavailable: try again later */
    MX_AUTH_BLOCKED,  /* too many failed logins for this account */
    /* The password is right but mxAccountStatus is not "active" (disabled,
     * deleted pending purge). IMAP/POP say so ("[AUTHORIZATIONFAILED]
     * account disabled"); SMTP answers it like MX_AUTH_INVALID. */
    MX_AUTH_DISABLED,
};

/* mx_auth_result_name - "ok", "invalid", ... for logs. */
const char *mx_auth_result_name(enum mx_auth_result result);

/* The authenticated identity: the account's DN, its mail address, every
 * address it may use as envelope sender (mail + mxAlternateAddress) and
 * its store shard (mxStoreShard; NULL when absent: the caller applies its
 * default shard). */
struct mx_identity {
    char *dn;
    char *mail;
    char **addresses;
    size_t n_addresses;
    char *shard;
    /* mxQuotaBytes / mxQuotaMessages; 0 = unlimited. Passed with every
     * APPEND so the store enforces the directory's figures. */
    uint64_t quota_bytes;
    uint64_t quota_count;
};

void mx_identity_clear(struct mx_identity *identity);
/* mx_identity_owns - may this identity use address? (domain part compared
 * case-insensitively, local part exactly) */
bool mx_identity_owns(const struct mx_identity *identity, const char *address);

struct mx_auth_config {
    struct mx_ldap *ldap;
    /* Search filter template, %s = the login (escaped), e.g.
     * "(&(objectClass=mxAccount)(|(uid=%s)(mail=%s)))". */
    const char *login_filter;
    struct mx_limits *limits; /* per-account failure counts */
    unsigned window_ms;
    unsigned max_failures_per_account;
    /* "smtp", "imap", "pop3": logged as proto=... (the log line's own
     * role= key is the daemon's, set by mx_log_open). */
    const char *role;
};

/* identity is filled for MX_AUTH_OK only (empty otherwise) and valid
 * during the call; take it over by copying the struct and then setting
 * *identity = (struct mx_identity){0}. */
typedef void mx_auth_done_fn(void *ctx, enum mx_auth_result result, struct mx_identity *identity);

struct mx_auth_check;

/* mx_auth_start - check login/password. The password is copied and wiped
 * after use; it is never logged. sid (session id, for logs) and cfg must
 * outlive the check. done runs exactly once, later, from the event loop,
 * never inside mx_auth_start, and never after mx_auth_cancel. */
struct mx_auth_check *mx_auth_start(const struct mx_auth_config *cfg, const char *sid,
                                    const char *login, const char *password, size_t password_len,
                                    mx_auth_done_fn *done, void *ctx);
/* mx_auth_cancel - abandon a check (the session closed); NULL is a no-op.
 * Must not be called from inside or after its done callback. */
void mx_auth_cancel(struct mx_auth_check **check);

/* mx_auth_account_key - the mx_limits key of an account's failure count:
 * "dn:" + the DN in lower case (DNs compare case-insensitively here).
 * Exposed so callers and tests can query the count with
 * mx_limits_auth_blocked; truncated to size. */
void mx_auth_account_key(const char *dn, char *buf, size_t size);

/* Longest user name or password accepted in a SASL PLAIN response. */
#define MX_SASL_CREDENTIAL_MAX 256

/* mx_sasl_plain_decode - an RFC 4616 PLAIN response in base64 (RFC
 * 5034 / RFC 4959: "=" is an empty response). authzid must be empty or equal to
 * authcid (nobody may act for another account here). Buffers of
 * MX_SASL_CREDENTIAL_MAX + 1 bytes; they are wiped on failure. 0, or -1 with
 * a static *error_r fit for a "-ERR" line (no credential in it). */
int mx_sasl_plain_decode(const char *b64, size_t len, char authcid[MX_SASL_CREDENTIAL_MAX + 1],
                           char passwd[MX_SASL_CREDENTIAL_MAX + 1], size_t *passwd_len_r,
                           const char **error_r);

#endif
