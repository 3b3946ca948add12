/* mx_tls - TLS contexts, self-signed certificates, STARTTLS upgrade. */
#include "mx_tls.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "mx_alloc.h"
#include "mx_config.h"

const char *mx_tls_last_error(char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    unsigned long code;
    while ((code = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(code, one, sizeof one);
        int n = snprintf(buf + len, size - len, "%s%s", len ? "; " : "", one);
        if (n < 0 || (size_t)n >= size - len)
            break;
        len += (size_t)n;
    }
    if (len == 0)
        snprintf(buf, size, "unknown TLS error");
    ERR_clear_error();
    return buf;
}

void mx_tls_options_from_config(const struct mx_config_node *root, struct mx_tls_options *opts_r)
{
    opts_r->cert_file = mx_config_string(root, "tls.cert_file");
    opts_r->key_file = mx_config_string(root, "tls.key_file");
    opts_r->ca_file = mx_config_string(root, "tls.ca_file");
    opts_r->min_version = mx_config_string(root, "tls.min_version");
    opts_r->ciphers = mx_config_string(root, "tls.ciphers");
    opts_r->groups = mx_config_string(root, "tls.groups");
}

/* mx_tls_ctx_policy - what client and server contexts share. */
static int mx_tls_ctx_policy(SSL_CTX *ctx, const struct mx_tls_options *opts, char **error_r)
{
    char why[512];
    int min = TLS1_2_VERSION;
    if (opts->min_version && strcmp(opts->min_version, "TLSv1.3") == 0)
        min = TLS1_3_VERSION;
    else if (opts->min_version && *opts->min_version && strcmp(opts->min_version, "TLSv1.2") != 0) {
        *error_r = mx_asprintf("tls: min_version \"%s\" not supported (TLSv1.2 or TLSv1.3)",
                               opts->min_version);
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    if (opts->ciphers && *opts->ciphers && SSL_CTX_set_cipher_list(ctx, opts->ciphers) != 1) {
        *error_r = mx_asprintf("tls: cipher list \"%s\" rejected: %s", opts->ciphers,
                               mx_tls_last_error(why, sizeof why));
        return -1;
    }
    if (opts->groups && *opts->groups && SSL_CTX_set1_groups_list(ctx, opts->groups) != 1) {
        *error_r = mx_asprintf("tls: groups \"%s\" rejected: %s", opts->groups,
                               mx_tls_last_error(why, sizeof why));
        return -1;
    }
    /* DHE suites use RFC 7919 / RFC 3526 parameters sized to the key. */
    SSL_CTX_set_dh_auto(ctx, 1);
    return 0;
}

SSL_CTX *mx_tls_server_ctx_new(const struct mx_tls_options *opts, char **error_r)
{
    char why[512];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        *error_r = mx_asprintf("tls: SSL_CTX_new: %s", mx_tls_last_error(why, sizeof why));
        return NULL;
    }
    if (mx_tls_ctx_policy(ctx, opts, error_r) < 0)
        goto fail;
    if (opts->cert_file == NULL || SSL_CTX_use_certificate_chain_file(ctx, opts->cert_file) != 1) {
        *error_r = mx_asprintf("tls: cannot load certificate %s: %s",
                               opts->cert_file ? opts->cert_file : "(none configured)",
                               mx_tls_last_error(why, sizeof why));
        goto fail;
    }
    if (opts->key_file == NULL ||
        SSL_CTX_use_PrivateKey_file(ctx, opts->key_file, SSL_FILETYPE_PEM) != 1) {
        *error_r = mx_asprintf("tls: cannot load private key %s: %s",
                               opts->key_file ? opts->key_file : "(none configured)",
                               mx_tls_last_error(why, sizeof why));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *error_r = mx_asprintf("tls: key %s does not match certificate %s: %s", opts->key_file,
                               opts->cert_file, mx_tls_last_error(why, sizeof why));
        goto fail;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"mxcluster", 9);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *mx_tls_client_ctx_new(const struct mx_tls_options *opts, bool verify_peer,
                               char **error_r)
{
    char why[512];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        *error_r = mx_asprintf("tls: SSL_CTX_new: %s", mx_tls_last_error(why, sizeof why));
        return NULL;
    }
    if (mx_tls_ctx_policy(ctx, opts, error_r) < 0)
        goto fail;
    if (verify_peer) {
        int ok = opts->ca_file && *opts->ca_file
                     ? SSL_CTX_load_verify_locations(ctx, opts->ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            *error_r = mx_asprintf("tls: cannot load CA %s: %s",
                                   opts->ca_file && *opts->ca_file ? opts->ca_file : "(system)",
                                   mx_tls_last_error(why, sizeof why));
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* mx_tls_write_key - PEM private key, created 0600 so it is never readable
 * by others, not even for a moment. */
static int mx_tls_write_key(const char *path, EVP_PKEY *key, char **error_r)
{
    char why[512];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fp == NULL) {
        *error_r = mx_asprintf("tls: cannot write key %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int ok = PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
    if (fclose(fp) != 0 || ok != 1) {
        *error_r = mx_asprintf("tls: writing key %s failed: %s", path,
                               mx_tls_last_error(why, sizeof why));
        return -1;
    }
    return 0;
}

int mx_tls_make_self_signed(const char *cert_path, const char *key_path, const char *common_name,
                            int days, char **error_r)
{
    char why[512];
    int ret = -1;
    X509 *cert = NULL;
    EVP_PKEY *key = EVP_RSA_gen(2048);
    if (key == NULL) {
        *error_r = mx_asprintf("tls: RSA key generation failed: %s",
                               mx_tls_last_error(why, sizeof why));
        return -1;
    }
    cert = X509_new();
    X509_set_version(cert, 2);
    /* A random serial: browsers and clients reject reused serials. */
    ASN1_INTEGER *serial = X509_get_serialNumber(cert);
    BIGNUM *bn = BN_new();
    BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
    BN_to_ASN1_INTEGER(bn, serial);
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"mxcluster", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name, -1, -1,
                               0);
    X509_set_issuer_name(cert, name);

    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    char *san = mx_asprintf("DNS:%s,DNS:localhost,IP:127.0.0.1", common_name);
    const char *exts[][2] = {
        { "subjectAltName", san },
        { "basicConstraints", "critical,CA:TRUE" },
        { "keyUsage", "critical,digitalSignature,keyEncipherment,keyCertSign" },
        { "extendedKeyUsage", "serverAuth,clientAuth" },
    };
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        if (ext == NULL) {
            *error_r = mx_asprintf("tls: extension %s=%s: %s", exts[i][0], exts[i][1],
                                   mx_tls_last_error(why, sizeof why));
            free(san);
            goto out;
        }
        X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
    }
    free(san);
    if (X509_sign(cert, key, EVP_sha256()) == 0) {
        *error_r = mx_asprintf("tls: signing failed: %s", mx_tls_last_error(why, sizeof why));
        goto out;
    }
    if (mx_tls_write_key(key_path, key, error_r) < 0)
        goto out;
    FILE *fp = fopen(cert_path, "w");
    if (fp == NULL) {
        *error_r = mx_asprintf("tls: cannot write certificate %s: %s", cert_path, strerror(errno));
        goto out;
    }
    int ok = PEM_write_X509(fp, cert);
    if (fclose(fp) != 0 || ok != 1) {
        *error_r = mx_asprintf("tls: writing certificate %s failed", cert_path);
        goto out;
    }
    ret = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return ret;
}

struct bufferevent *mx_tls_bufferevent_starttls(struct bufferevent *plain, SSL_CTX *ctx,
                                                size_t *discarded_r)
{
    struct evbuffer *input = bufferevent_get_input(plain);
    *discarded_r = evbuffer_get_length(input);
    evbuffer_drain(input, *discarded_r);
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    /* On failure libevent frees ssl (BEV_OPT_CLOSE_ON_FREE covers both). */
    return bufferevent_openssl_filter_new(bufferevent_get_base(plain), plain, ssl,
                                          BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
}
