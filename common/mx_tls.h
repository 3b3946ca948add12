/* mx_tls - one TLS policy for every listener and client of mxcluster.
 *
 * TLS 1.2 is the floor; TLS 1.2 suites are AEAD with forward secrecy only
 * (the list is in mx_options_common.c and the sample config); ECDHE and
 * RFC 7919 ffdhe groups; no compression, no renegotiation. Certificates and
 * keys come from config; mx_tls_make_self_signed makes a pair for the
 * quickstart and the tests.
 *
 * STARTTLS on a libevent connection: mx_tls_bufferevent_starttls() wraps a
 * plain bufferevent in an OpenSSL filter AFTER discarding whatever the
 * client pipelined behind the STARTTLS command, so plaintext injected
 * before the handshake can never be read as if it came over TLS
 * (CVE-2011-0411 class). */
#ifndef MX_TLS_H
#define MX_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct bufferevent;
struct mx_config_node;

struct mx_tls_options {
    const char *cert_file;
    const char *key_file;
    const char *ca_file;     /* NULL or "" = system default store */
    const char *min_version; /* "TLSv1.2" or "TLSv1.3" */
    const char *ciphers;     /* TLS 1.2 list */
    const char *groups;
};

/* mx_tls_options_from_config - fill opts from the "tls" group (pointers
 * into the config, valid while it lives). */
void mx_tls_options_from_config(const struct mx_config_node *root, struct mx_tls_options *opts_r);

/* mx_tls_server_ctx_new - a server context with the certificate and key
 * loaded and checked against each other. NULL and error_r (heap) naming
 * the file and OpenSSL's reason on failure. */
SSL_CTX *mx_tls_server_ctx_new(const struct mx_tls_options *opts, char **error_r);
/* mx_tls_client_ctx_new - a client context (outbound SMTP, LDAP over TLS).
 * verify_peer: require a chain to ca_file (or the system store). */
SSL_CTX *mx_tls_client_ctx_new(const struct mx_tls_options *opts, bool verify_peer,
                               char **error_r);

/* mx_tls_make_self_signed - write a fresh RSA-2048 key (mode 0600) and a
 * self-signed certificate for common_name (also in subjectAltName, with
 * "127.0.0.1" and "localhost") valid for days. */
int mx_tls_make_self_signed(const char *cert_path, const char *key_path, const char *common_name,
                            int days, char **error_r);

/* mx_tls_bufferevent_starttls - for a server session that just answered
 * "220 Ready to start TLS": drop pipelined plaintext, wrap plain in a TLS
 * filter (which then owns plain: BEV_OPT_CLOSE_ON_FREE). Returns the new
 * bufferevent, or NULL; *discarded_r gets the number of plaintext bytes
 * thrown away (worth a log line: a client that pipelines past STARTTLS is
 * broken or hostile). */
struct bufferevent *mx_tls_bufferevent_starttls(struct bufferevent *plain, SSL_CTX *ctx,
                                                size_t *discarded_r);

/* mx_tls_last_error - OpenSSL's error queue as one line (and cleared). */
const char *mx_tls_last_error(char *buf, size_t size);

#endif
