/* test_tls - policy (TLS 1.2+, AEAD only), certificates, STARTTLS upgrade. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "mx_config.h"
#include "mx_log.h"
#include "mx_tls.h"

static char dir[64], cert_path[128], key_path[128];
static struct mx_tls_options policy;

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mx-test-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
    char *error = NULL;
    if (mx_tls_make_self_signed(cert_path, key_path, "mx.example.test", 30, &error) != 0)
        fail_msg("%s", error);

    /* The shipped defaults, read through the config layer as daemons do. */
    static const struct mx_option *const tables[] = { mx_common_options, NULL };
    static struct mx_config *cfg;
    assert_int_equal(mx_config_load_string("", tables, &cfg, &error), 0);
    struct mx_config_node root = mx_config_root(cfg);
    mx_tls_options_from_config(&root, &policy);
    policy.cert_file = cert_path;
    policy.key_file = key_path;
    policy.ca_file = cert_path; /* self-signed: its own CA */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
    return 0;
}

/* handshake - run a TLS handshake between two contexts through memory BIOs;
 * returns 1 on success and fills version/cipher names. */
static int handshake(SSL_CTX *server_ctx, SSL_CTX *client_ctx, char *version, char *cipher)
{
    SSL *server = SSL_new(server_ctx), *client = SSL_new(client_ctx);
    BIO *s_bio, *c_bio;
    BIO_new_bio_pair(&s_bio, 0, &c_bio, 0);
    SSL_set_bio(server, s_bio, s_bio);
    SSL_set_bio(client, c_bio, c_bio);
    SSL_set_accept_state(server);
    SSL_set_connect_state(client);
    SSL_set_tlsext_host_name(client, "mx.example.test");
    int done_s = 0, done_c = 0, failed = 0;
    for (int round = 0; round < 100 && !(done_s && done_c) && !failed; round++) {
        if (!done_c) {
            int r = SSL_do_handshake(client);
            done_c = r == 1;
            failed |= r <= 0 && SSL_get_error(client, r) != SSL_ERROR_WANT_READ;
        }
        if (!done_s) {
            int r = SSL_do_handshake(server);
            done_s = r == 1;
            failed |= r <= 0 && SSL_get_error(server, r) != SSL_ERROR_WANT_READ;
        }
    }
    int ok = done_s && done_c && !failed;
    if (ok) {
        strcpy(version, SSL_get_version(server));
        strcpy(cipher, SSL_get_cipher_name(server));
        assert_true(SSL_CIPHER_is_aead(SSL_get_current_cipher(server)));
    }
    SSL_free(server);
    SSL_free(client);
    ERR_clear_error();
    return ok;
}

static SSL_CTX *server_ctx(void)
{
    char *error = NULL;
    SSL_CTX *ctx = mx_tls_server_ctx_new(&policy, &error);
    if (ctx == NULL)
        fail_msg("%s", error);
    return ctx;
}

static void test_self_signed_files(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(key_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(cert_path, &st), 0);
    assert_true(st.st_size > 500);
}

static void test_default_policy_negotiates_aead(void **state)
{
    (void)state;
    char *error = NULL;
    SSL_CTX *s = server_ctx();
    SSL_CTX *c = mx_tls_client_ctx_new(&policy, true, &error);
    assert_non_null(c);
    char version[32], cipher[64];
    assert_true(handshake(s, c, version, cipher));
    assert_string_equal(version, "TLSv1.3");

    /* A TLS 1.2-only client gets an ECDHE AEAD suite. */
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    assert_true(handshake(s, c, version, cipher));
    assert_string_equal(version, "TLSv1.2");
    assert_non_null(strstr(cipher, "GCM") ? cipher : strstr(cipher, "CHACHA20"));
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_weak_clients_are_refused(void **state)
{
    (void)state;
    SSL_CTX *s = server_ctx();
    char version[32], cipher[64];

    /* Rows: the client's maximum version and cipher list; all must fail. */
    static const struct {
        int max_version;
        const char *ciphers;
    } weak[] = {
        { TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0" },
        { TLS1_VERSION, "DEFAULT:@SECLEVEL=0" },
        { TLS1_2_VERSION, "AES128-SHA" },          /* CBC, RSA key exchange */
        { TLS1_2_VERSION, "ECDHE-RSA-AES128-SHA" }, /* CBC */
        { TLS1_2_VERSION, "AES128-GCM-SHA256" },   /* no forward secrecy */
    };
    for (size_t i = 0; i < sizeof weak / sizeof weak[0]; i++) {
        SSL_CTX *c = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_security_level(c, 0);
        SSL_CTX_set_min_proto_version(c, 0);
        SSL_CTX_set_max_proto_version(c, weak[i].max_version);
        assert_int_equal(SSL_CTX_set_cipher_list(c, weak[i].ciphers), 1);
        if (handshake(s, c, version, cipher))
            fail_msg("row %zu: weak client got %s %s", i, version, cipher);
        SSL_CTX_free(c);
    }
    SSL_CTX_free(s);
}

static void test_ffdhe_suite(void **state)
{
    (void)state;
    SSL_CTX *s = server_ctx();
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_set_cipher_list(c, "DHE-RSA-AES128-GCM-SHA256"), 1);
    char version[32], cipher[64];
    assert_true(handshake(s, c, version, cipher));
    assert_string_equal(cipher, "DHE-RSA-AES128-GCM-SHA256");
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_config_errors_name_the_file(void **state)
{
    (void)state;
    char *error = NULL;
    struct mx_tls_options bad = policy;
    bad.cert_file = "/nonexistent/cert.pem";
    assert_null(mx_tls_server_ctx_new(&bad, &error));
    assert_non_null(strstr(error, "cannot load certificate /nonexistent/cert.pem"));
    free(error);

    /* A key that belongs to another certificate. */
    char other_cert[160], other_key[160];
    snprintf(other_cert, sizeof other_cert, "%s/other-cert.pem", dir);
    snprintf(other_key, sizeof other_key, "%s/other-key.pem", dir);
    assert_int_equal(mx_tls_make_self_signed(other_cert, other_key, "other", 1, &error), 0);
    bad = policy;
    bad.key_file = other_key;
    assert_null(mx_tls_server_ctx_new(&bad, &error));
    assert_non_null(strstr(error, other_key));
    assert_non_null(strstr(error, "key values mismatch"));
    free(error);
    unlink(other_cert);
    unlink(other_key);

    bad = policy;
    bad.min_version = "TLSv1.0";
    assert_null(mx_tls_server_ctx_new(&bad, &error));
    assert_non_null(strstr(error, "min_version \"TLSv1.0\" not supported"));
    free(error);

    bad = policy;
    bad.ciphers = "NO-SUCH-CIPHER";
    assert_null(mx_tls_server_ctx_new(&bad, &error));
    assert_non_null(strstr(error, "cipher list \"NO-SUCH-CIPHER\" rejected"));
    free(error);

    assert_int_equal(mx_tls_make_self_signed("/nonexistent/c.pem", "/nonexistent/k.pem", "x", 1,
                                             &error), -1);
    assert_non_null(strstr(error, "/nonexistent/k.pem"));
    free(error);
}

/* ---- STARTTLS over libevent ------------------------------------------- */

struct starttls_case {
    struct event_base *base;
    SSL_CTX *server_ctx;
    struct bufferevent *server;
    struct bufferevent *client;
    size_t discarded;
    char received[256];
    int upgraded;
};

static void server_tls_read(struct bufferevent *bev, void *arg)
{
    struct starttls_case *t = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = strlen(t->received);
    size_t n = evbuffer_remove(in, t->received + len, sizeof t->received - 1 - len);
    t->received[len + n] = '\0';
    if (strstr(t->received, "\r\n"))
        event_base_loopbreak(t->base);
}

static void server_plain_read(struct bufferevent *bev, void *arg)
{
    struct starttls_case *t = arg;
    char *line = evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_CRLF_STRICT);
    if (line == NULL)
        return;
    assert_string_equal(line, "STARTTLS");
    free(line);
    t->server = mx_tls_bufferevent_starttls(bev, t->server_ctx, &t->discarded);
    assert_non_null(t->server);
    bufferevent_setcb(t->server, server_tls_read, NULL, NULL, t);
    bufferevent_enable(t->server, EV_READ | EV_WRITE);
    t->upgraded = 1;
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & BEV_EVENT_CONNECTED)
        bufferevent_write(bev, "EHLO over tls\r\n", 15);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static void test_starttls_discards_pipelined_plaintext(void **state)
{
    (void)state;
    struct starttls_case t = { 0 };
    t.base = event_base_new();
    t.server_ctx = server_ctx();
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    evutil_make_socket_nonblocking(fds[0]);
    evutil_make_socket_nonblocking(fds[1]);

    /* The attacker's bytes ride in the same packet as STARTTLS. */
    static const char injected[] = "STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\n";
    assert_int_equal(write(fds[1], injected, sizeof injected - 1), (ssize_t)sizeof injected - 1);

    struct bufferevent *plain = bufferevent_socket_new(t.base, fds[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(plain, server_plain_read, NULL, NULL, &t);
    bufferevent_enable(plain, EV_READ);
    event_base_loop(t.base, EVLOOP_ONCE);
    assert_true(t.upgraded);
    assert_int_equal(t.discarded, strlen("MAIL FROM:<evil@attacker.test>\r\n"));

    SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
    t.client = bufferevent_openssl_socket_new(t.base, fds[1], SSL_new(client_ctx),
                                              BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(t.client, NULL, NULL, client_event, &t);
    bufferevent_enable(t.client, EV_READ | EV_WRITE);
    struct event *watchdog = evtimer_new(t.base, on_watchdog, t.base);
    struct timeval tv = { 10, 0 };
    evtimer_add(watchdog, &tv);
    event_base_dispatch(t.base);

    assert_string_equal(t.received, "EHLO over tls\r\n");
    event_free(watchdog);
    bufferevent_free(t.client);
    bufferevent_free(t.server);
    SSL_CTX_free(client_ctx);
    SSL_CTX_free(t.server_ctx);
    event_base_free(t.base);
}

int main(void)
{
    mx_log_set_level(MX_LOG_CRIT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_signed_files),
        cmocka_unit_test(test_default_policy_negotiates_aead),
        cmocka_unit_test(test_weak_clients_are_refused),
        cmocka_unit_test(test_ffdhe_suite),
        cmocka_unit_test(test_config_errors_name_the_file),
        cmocka_unit_test(test_starttls_discards_pipelined_plaintext),
    };
    return cmocka_run_group_tests_name("mx_tls", tests, group_setup, group_teardown);
}
