/* test_ldap_client - the mx_ldap API contract without a directory: config
 * validation, callbacks never synchronous, cancel and free semantics,
 * refusals that must happen before any network traffic, and UNAVAILABLE
 * (never NOT_FOUND) for a refused connection. Against a real slapd see
 * test_ldap_live.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "mx_ldap.h"
#include "mx_log.h"

static struct event_base *base;
static char dead_uri[64];

/* A loopback port where nothing listens (bound, then closed). */
static void make_dead_uri(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    snprintf(dead_uri, sizeof dead_uri, "ldap://127.0.0.1:%d/", ntohs(sin.sin_port));
}

static void base_config(struct mx_ldap_config *cfg)
{
    mx_ldap_config_init(cfg);
    cfg->uris = dead_uri;
    cfg->base_dn = "dc=example,dc=test";
    cfg->bind_dn = "cn=mxservice,dc=example,dc=test";
    cfg->bind_password = "mxservice-secret";
}

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    make_dead_uri();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    event_base_free(base);
    return 0;
}

struct seen {
    int calls;
    enum mx_ldap_status status;
    char error[256];
    struct mx_ldap **free_me; /* free the client from inside the callback */
    struct mx_ldap_op **cancel_me;
};

static void on_search(const struct mx_ldap_result *r, void *ctx)
{
    struct seen *s = ctx;
    s->calls++;
    s->status = r->status;
    snprintf(s->error, sizeof s->error, "%s", r->error ? r->error : "");
    if (s->cancel_me != NULL)
        mx_ldap_op_cancel(s->cancel_me);
    if (s->free_me != NULL)
        mx_ldap_free(s->free_me);
}

static void on_bind(enum mx_ldap_status status, const char *error, void *ctx)
{
    struct seen *s = ctx;
    s->calls++;
    s->status = status;
    snprintf(s->error, sizeof s->error, "%s", error ? error : "");
}

static void run_loop(void)
{
    struct timeval tv = { 0, 100000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void test_config_validation(void **state)
{
    (void)state;
    static const struct {
        const char *what, *uris, *base, *dn, *pw;
        unsigned pool;
    } bad[] = {
        { "no uris", NULL, "dc=x", NULL, NULL, 2 },
        { "empty uris", " , ", "dc=x", NULL, NULL, 2 },
        { "not an LDAP URI", "http://example.test/", "dc=x", NULL, NULL, 2 },
        { "no base", "ldap://127.0.0.1/", NULL, NULL, NULL, 2 },
        { "bind DN without password", "ldap://127.0.0.1/", "dc=x", "cn=svc,dc=x", "", 2 },
        { "bind DN with NULL password", "ldap://127.0.0.1/", "dc=x", "cn=svc,dc=x", NULL, 2 },
        { "pool 0", "ldap://127.0.0.1/", "dc=x", NULL, NULL, 0 },
        { "pool 65", "ldap://127.0.0.1/", "dc=x", NULL, NULL, 65 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct mx_ldap_config cfg;
        const char *error = NULL;
        mx_ldap_config_init(&cfg);
        cfg.uris = bad[i].uris;
        cfg.base_dn = bad[i].base;
        cfg.bind_dn = bad[i].dn;
        cfg.bind_password = bad[i].pw;
        cfg.pool_size = bad[i].pool;
        struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
        if (ldap != NULL)
            fail_msg("config '%s' accepted", bad[i].what);
        assert_non_null(error);
    }

    struct mx_ldap_config cfg;
    const char *error = NULL;
    base_config(&cfg);
    cfg.uris = "ldap://127.0.0.1:1/, ldap://[::1]:2/ ldapi:///";
    cfg.bind_dn = NULL; /* anonymous is allowed (with a notice) */
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    assert_non_null(ldap);
    mx_ldap_free(&ldap);
    assert_null(ldap);
    mx_ldap_free(&ldap); /* NULL: no-op */
}

static void test_refused_is_unavailable_and_deferred(void **state)
{
    (void)state;
    struct mx_ldap_config cfg;
    const char *error = NULL;
    base_config(&cfg);
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    struct seen s = { 0 };
    struct mx_ldap_query q = { .scope = MX_LDAP_SCOPE_SUB, .filter = "(mail=a@example.test)",
                               .use_cache = true };

    assert_non_null(mx_ldap_search(ldap, &q, on_search, &s));
    assert_int_equal(s.calls, 0); /* the refusal was immediate, the callback is not */
    run_loop();
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, MX_LDAP_UNAVAILABLE);
    assert_non_null(strstr(s.error, dead_uri));

    /* Now the only URI is down: immediate, deferred, UNAVAILABLE, and the
     * failure was not cached as "not found". */
    memset(&s, 0, sizeof s);
    mx_ldap_search(ldap, &q, on_search, &s);
    assert_int_equal(s.calls, 0);
    run_loop();
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, MX_LDAP_UNAVAILABLE);
    assert_non_null(strstr(s.error, "down"));

    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.server_failures, 1);
    assert_int_equal(st.cache_entries, 0);
    assert_int_equal(st.unavailable, 2);
    assert_int_equal(st.connections, 0);
    mx_ldap_free(&ldap);
}

static void test_bind_refusals_without_network(void **state)
{
    (void)state;
    struct mx_ldap_config cfg;
    const char *error = NULL;
    base_config(&cfg);
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    static const struct {
        const char *dn, *pw;
        size_t len;
    } cases[] = {
        { "uid=alice,ou=people,dc=example,dc=test", "", 0 },
        { "uid=alice,ou=people,dc=example,dc=test", NULL, 0 },
        { "uid=alice,ou=people,dc=example,dc=test", "alice-secret\0", 13 },
        { "uid=alice,ou=people,dc=example,dc=test", "\0alice-secret", 13 },
        { "", "alice-secret", 12 },
        { NULL, "alice-secret", 12 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct seen s = { 0 };
        mx_ldap_bind_check(ldap, cases[i].dn, cases[i].pw, cases[i].len, on_bind, &s);
        assert_int_equal(s.calls, 0);
        run_loop();
        assert_int_equal(s.calls, 1);
        if (s.status != MX_LDAP_INVALID_CREDENTIALS)
            fail_msg("case %zu: %s (%s)", i, mx_ldap_status_name(s.status), s.error);
    }
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.server_failures, 0); /* no connection was even tried */

    /* A real password against the dead URI is UNAVAILABLE, never INVALID. */
    struct seen s = { 0 };
    mx_ldap_bind_check(ldap, "uid=alice,ou=people,dc=example,dc=test", "alice-secret", 12,
                       on_bind, &s);
    run_loop();
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, MX_LDAP_UNAVAILABLE);
    mx_ldap_free(&ldap);
}

static void test_filter_refusals(void **state)
{
    (void)state;
    struct mx_ldap_config cfg;
    const char *error = NULL;
    base_config(&cfg);
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    struct seen s1 = { 0 }, s2 = { 0 }, s3 = { 0 };

    /* A NUL in an assertion value: NOT_FOUND without asking anyone. */
    mx_ldap_search(ldap, &(struct mx_ldap_query){ .filter = "(mail=alice@example.test\\00x)" },
                   on_search, &s1);
    /* An empty filter is our bug: ERROR. */
    mx_ldap_search(ldap, &(struct mx_ldap_query){ .filter = "" }, on_search, &s2);
    mx_ldap_search(ldap, &(struct mx_ldap_query){ .filter = NULL }, on_search, &s3);
    run_loop();
    assert_int_equal(s1.calls, 1);
    assert_int_equal(s1.status, MX_LDAP_NOT_FOUND);
    assert_int_equal(s2.status, MX_LDAP_ERROR);
    assert_int_equal(s3.status, MX_LDAP_ERROR);
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.server_failures, 0);
    mx_ldap_free(&ldap);
}

static void must_not_run(const struct mx_ldap_result *r, void *ctx)
{
    (void)r;
    (void)ctx;
    fail_msg("callback ran after cancel / free");
}

static void bind_must_not_run(enum mx_ldap_status status, const char *error, void *ctx)
{
    (void)status;
    (void)error;
    (void)ctx;
    fail_msg("bind callback ran after free");
}

static void test_cancel_and_free(void **state)
{
    (void)state;
    struct mx_ldap_config cfg;
    const char *error = NULL;
    base_config(&cfg);
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    struct mx_ldap_query q = { .filter = "(uid=x)" };

    /* Cancel an op whose (immediate) failure is already queued. */
    struct mx_ldap_op *op = mx_ldap_search(ldap, &q, must_not_run, NULL);
    mx_ldap_op_cancel(&op);
    assert_null(op);
    mx_ldap_op_cancel(&op); /* NULL: no-op */
    run_loop();

    /* One callback cancels the other op, still waiting in the same round. */
    struct seen s1 = { 0 };
    struct mx_ldap_op *second = NULL;
    s1.cancel_me = &second;
    mx_ldap_search(ldap, &q, on_search, &s1);
    second = mx_ldap_search(ldap, &q, must_not_run, NULL);
    run_loop();
    assert_int_equal(s1.calls, 1);
    assert_null(second);

    /* Free the client from inside a callback: later callbacks never run. */
    struct seen s2 = { 0 };
    s2.free_me = &ldap;
    mx_ldap_search(ldap, &q, on_search, &s2);
    for (int i = 0; i < 5; i++)
        mx_ldap_search(ldap, &q, must_not_run, NULL);
    run_loop();
    assert_int_equal(s2.calls, 1);
    assert_null(ldap);

    /* Free with operations pending: no callbacks. */
    ldap = mx_ldap_new(base, &cfg, &error);
    for (int i = 0; i < 5; i++)
        mx_ldap_search(ldap, &q, must_not_run, NULL);
    mx_ldap_bind_check(ldap, "uid=a,dc=x", "pw", 2, bind_must_not_run, NULL);
    mx_ldap_free(&ldap);
    run_loop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_refused_is_unavailable_and_deferred),
        cmocka_unit_test(test_bind_refusals_without_network),
        cmocka_unit_test(test_filter_refusals),
        cmocka_unit_test(test_cancel_and_free),
    };
    signal(SIGPIPE, SIG_IGN);
    mx_log_open("test", "test", MX_LOG_TO_STDERR, 0, MX_LOG_CRIT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
