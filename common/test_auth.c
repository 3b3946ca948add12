/* test_auth - the shared login check (mx_auth).
 *
 * Without a directory (always, under ctest's unit label): identity address
 * ownership, the per-account failure key, result names, the callback
 * contract (never inside mx_auth_start, never after mx_auth_cancel) and
 * TEMPFAIL when the directory cannot be reached.
 *
 * Against slapd with ldap-schema/sample.ldif (only when MX_TEST_LDAP_URI,
 * MX_TEST_LDAP_BASE, MX_TEST_LDAP_BIND_DN, MX_TEST_LDAP_BIND_PW are set, as
 * tests/integration/test_auth_live.py does): OK with the identity and its
 * shard, INVALID for wrong passwords and unknown logins, DISABLED only with
 * the right password of a disabled or deleted account, BLOCKED after too
 * many failures whatever the login's spelling, and no password in logs. */
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

#include "mx_auth.h"
#include "mx_ldap.h"
#include "mx_limits.h"
#include "mx_log.h"
#include "mx_net.h"

#define LOGIN_FILTER "(&(objectClass=mxAccount)(|(mail=%s)(uid=%s)))"

/* ---- captured log ---- */

static char log_text[256 * 1024];
static size_t log_len;

static void capture_sink(void *ctx, enum mx_log_level level, const char *line, size_t len)
{
    (void)ctx;
    (void)level;
    if (log_len + len + 1 < sizeof log_text) {
        memcpy(log_text + log_len, line, len);
        log_len += len;
        log_text[log_len++] = '\n';
        log_text[log_len] = '\0';
    }
}

static void log_reset(void)
{
    log_len = 0;
    log_text[0] = '\0';
}

/* ---- identity and helpers (no directory) ---- */

static struct mx_identity make_identity(void)
{
    struct mx_identity id = { 0 };
    static const char *const addresses[] = { "alice@example.test", "Alice.Smith@Example.TEST",
                                             "a@example.test" };
    id.dn = strdup("uid=alice,ou=people,dc=example,dc=test");
    id.mail = strdup("alice@example.test");
    id.shard = strdup("shard1");
    id.n_addresses = 3;
    id.addresses = calloc(3, sizeof *id.addresses);
    for (size_t i = 0; i < 3; i++)
        id.addresses[i] = strdup(addresses[i]);
    return id;
}

static void test_identity_owns(void **state)
{
    (void)state;
    struct mx_identity id = make_identity();
    assert_true(mx_identity_owns(&id, "alice@example.test"));
    assert_true(mx_identity_owns(&id, "alice@EXAMPLE.test"));   /* domain: any case */
    assert_true(mx_identity_owns(&id, "Alice.Smith@example.test"));
    assert_false(mx_identity_owns(&id, "ALICE@example.test"));  /* local part: exact */
    assert_false(mx_identity_owns(&id, "alice.smith@example.test"));
    assert_false(mx_identity_owns(&id, "alice@example.test.evil"));
    assert_false(mx_identity_owns(&id, "alice@sub.example.test"));
    assert_false(mx_identity_owns(&id, "alice"));
    assert_false(mx_identity_owns(&id, ""));
    /* "@" inside a quoted local part: the last one separates the domain. */
    assert_false(mx_identity_owns(&id, "\"a@example.test\"@example.test"));
    mx_identity_clear(&id);
    assert_null(id.dn);
    assert_null(id.mail);
    assert_null(id.shard);
    assert_null(id.addresses);
    assert_int_equal(id.n_addresses, 0);
    assert_false(mx_identity_owns(&id, "alice@example.test"));
    mx_identity_clear(&id); /* twice is harmless */
}

static void test_account_key(void **state)
{
    (void)state;
    char key[64];
    mx_auth_account_key("UID=Alice,OU=People,DC=Example,DC=Test", key, sizeof key);
    assert_string_equal(key, "dn:uid=alice,ou=people,dc=example,dc=test");
    char small[8];
    mx_auth_account_key("uid=alice", small, sizeof small);
    assert_string_equal(small, "dn:uid=");
    char untouched[1] = { 'x' };
    mx_auth_account_key("uid=alice", untouched, 0);
    assert_int_equal(untouched[0], 'x');
}

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(mx_auth_result_name(MX_AUTH_OK), "ok");
    assert_string_equal(mx_auth_result_name(MX_AUTH_INVALID), "invalid");
    assert_string_equal(mx_auth_result_name(MX_AUTH_TEMPFAIL), "tempfail");
    assert_string_equal(mx_auth_result_name(MX_AUTH_BLOCKED), "blocked");
    assert_string_equal(mx_auth_result_name(MX_AUTH_DISABLED), "disabled");
}

/* ---- checks on the event loop ---- */

struct outcome {
    int calls;
    enum mx_auth_result result;
    struct mx_identity identity; /* taken over from the callback */
    bool *inside_start;          /* set while mx_auth_start runs */
};

static void on_done(void *ctx, enum mx_auth_result result, struct mx_identity *identity)
{
    struct outcome *o = ctx;
    if (o->inside_start && *o->inside_start)
        fail_msg("done ran inside mx_auth_start");
    o->calls++;
    o->result = result;
    mx_identity_clear(&o->identity);
    o->identity = *identity;
    memset(identity, 0, sizeof *identity);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* run_check - one login on base; returns the outcome (caller clears its
 * identity). Fails the test if done does not run within 10 s. */
static struct outcome run_check(struct event_base *base, const struct mx_auth_config *cfg,
                                const char *login, const char *password)
{
    struct outcome o = { 0 };
    bool inside = true, expired = false;
    o.inside_start = &inside;
    struct mx_auth_check *check =
        mx_auth_start(cfg, "T1", login, password, strlen(password), on_done, &o);
    inside = false;
    assert_non_null(check);
    assert_int_equal(o.calls, 0);
    struct event *deadline = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = { 10, 0 };
    evtimer_add(deadline, &tv);
    while (o.calls == 0 && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(deadline);
    if (o.calls == 0)
        fail_msg("no answer for %s within 10 s", login);
    assert_int_equal(o.calls, 1);
    return o;
}

/* A loopback port where nothing listens (bound, then closed). */
static void make_dead_uri(char *buf, size_t size)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    snprintf(buf, size, "ldap://127.0.0.1:%d/", ntohs(sin.sin_port));
}

static struct mx_ldap *dead_client(struct event_base *base)
{
    static char uri[64];
    make_dead_uri(uri, sizeof uri);
    struct mx_ldap_config cfg;
    mx_ldap_config_init(&cfg);
    cfg.uris = uri;
    cfg.base_dn = "dc=example,dc=test";
    cfg.bind_dn = "cn=mxservice,dc=example,dc=test";
    cfg.bind_password = "mxservice-secret";
    cfg.connect_timeout_ms = 1000;
    cfg.op_timeout_ms = 2000;
    const char *error = NULL;
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    if (ldap == NULL)
        fail_msg("mx_ldap_new: %s", error);
    return ldap;
}

static void test_unreachable_is_tempfail(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct mx_ldap *ldap = dead_client(base);
    struct mx_limits *limits = mx_limits_new();
    struct mx_auth_config cfg = { .ldap = ldap, .login_filter = LOGIN_FILTER, .limits = limits,
                                  .window_ms = 60000, .max_failures_per_account = 3,
                                  .role = "test" };
    log_reset();
    struct outcome o = run_check(base, &cfg, "alice", "alice-secret");
    assert_int_equal(o.result, MX_AUTH_TEMPFAIL);
    assert_null(o.identity.dn);
    assert_non_null(strstr(log_text, "auth.directory_unavailable"));
    assert_non_null(strstr(log_text, "proto=test"));
    assert_null(strstr(log_text, "alice-secret"));
    mx_ldap_free(&ldap);
    mx_limits_free(&limits);
    event_base_free(base);
}

static void test_cancel_never_calls_back(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct mx_ldap *ldap = dead_client(base);
    struct mx_limits *limits = mx_limits_new();
    struct mx_auth_config cfg = { .ldap = ldap, .login_filter = LOGIN_FILTER, .limits = limits,
                                  .window_ms = 60000, .max_failures_per_account = 3,
                                  .role = "test" };
    struct outcome o = { 0 };
    struct mx_auth_check *check = mx_auth_start(&cfg, "T2", "alice", "pw", 2, on_done, &o);
    mx_auth_cancel(&check);
    assert_null(check);
    mx_auth_cancel(&check); /* NULL is a no-op */
    /* Give the loop time to deliver anything that was still queued. */
    bool expired = false;
    struct event *deadline = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = { 2, 500000 };
    evtimer_add(deadline, &tv);
    while (!expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(deadline);
    assert_int_equal(o.calls, 0);
    mx_ldap_free(&ldap);
    mx_limits_free(&limits);
    event_base_free(base);
}

/* A broken filter template must fail every login (never match too much). */
static void test_broken_template_fails_login(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct mx_ldap *ldap = dead_client(base);
    struct mx_limits *limits = mx_limits_new();
    struct mx_auth_config cfg = { .ldap = ldap, .login_filter = "(uid=%q", .limits = limits,
                                  .window_ms = 60000, .max_failures_per_account = 3,
                                  .role = "test" };
    log_reset();
    struct outcome o = run_check(base, &cfg, "alice", "alice-secret");
    assert_int_not_equal(o.result, MX_AUTH_OK);
    assert_non_null(strstr(log_text, "ldap.bad_filter_template"));
    mx_ldap_free(&ldap);
    mx_limits_free(&limits);
    event_base_free(base);
}

/* ---- against slapd ---- */

struct live {
    struct event_base *base;
    struct mx_ldap *ldap;
    struct mx_limits *limits;
    struct mx_auth_config cfg;
};

static int live_setup(void **state)
{
    static const char *const vars[] = { "MX_TEST_LDAP_URI", "MX_TEST_LDAP_BASE",
                                        "MX_TEST_LDAP_BIND_DN", "MX_TEST_LDAP_BIND_PW" };
    for (size_t i = 0; i < 4; i++)
        if (getenv(vars[i]) == NULL || !*getenv(vars[i]))
            return -1; /* reported as a failed setup: the runner sets them all */
    struct live *l = calloc(1, sizeof *l);
    l->base = event_base_new();
    struct mx_ldap_config cfg;
    mx_ldap_config_init(&cfg);
    cfg.uris = getenv("MX_TEST_LDAP_URI");
    cfg.base_dn = getenv("MX_TEST_LDAP_BASE");
    cfg.bind_dn = getenv("MX_TEST_LDAP_BIND_DN");
    cfg.bind_password = getenv("MX_TEST_LDAP_BIND_PW");
    const char *error = NULL;
    l->ldap = mx_ldap_new(l->base, &cfg, &error);
    if (l->ldap == NULL) {
        print_error("mx_ldap_new: %s\n", error);
        return -1;
    }
    l->limits = mx_limits_new();
    l->cfg = (struct mx_auth_config){ .ldap = l->ldap, .login_filter = LOGIN_FILTER,
                                      .limits = l->limits, .window_ms = 60000,
                                      .max_failures_per_account = 3, .role = "test" };
    log_reset();
    *state = l;
    return 0;
}

static int live_teardown(void **state)
{
    struct live *l = *state;
    mx_ldap_free(&l->ldap);
    mx_limits_free(&l->limits);
    event_base_free(l->base);
    free(l);
    return 0;
}

static enum mx_auth_result live_result(struct live *l, const char *login, const char *password)
{
    struct outcome o = run_check(l->base, &l->cfg, login, password);
    if (o.result != MX_AUTH_OK && o.identity.dn != NULL)
        fail_msg("%s: identity handed out with result %s", login, mx_auth_result_name(o.result));
    mx_identity_clear(&o.identity);
    return o.result;
}

static void test_live_ok_identity(void **state)
{
    struct live *l = *state;
    static const char *const logins[] = { "alice", "alice@example.test", "ALICE@Example.Test" };
    for (size_t i = 0; i < 3; i++) {
        struct outcome o = run_check(l->base, &l->cfg, logins[i], "alice-secret");
        if (o.result != MX_AUTH_OK)
            fail_msg("%s: %s", logins[i], mx_auth_result_name(o.result));
        assert_string_equal(o.identity.dn, "uid=alice,ou=people,dc=example,dc=test");
        assert_string_equal(o.identity.mail, "alice@example.test");
        assert_non_null(o.identity.shard);
        assert_string_equal(o.identity.shard, "shard1");
        assert_int_equal(o.identity.n_addresses, 3);
        assert_true(mx_identity_owns(&o.identity, "alice.smith@example.test"));
        assert_true(mx_identity_owns(&o.identity, "a@example.test"));
        assert_false(mx_identity_owns(&o.identity, "bob@example.test"));
        mx_identity_clear(&o.identity);
    }
    struct outcome o = run_check(l->base, &l->cfg, "frank", "frank-secret");
    assert_int_equal(o.result, MX_AUTH_OK);
    assert_string_equal(o.identity.shard, "shard2");
    mx_identity_clear(&o.identity);
    assert_null(strstr(log_text, "-secret"));
}

static void test_live_invalid(void **state)
{
    struct live *l = *state;
    assert_int_equal(live_result(l, "alice", "wrong-secret"), MX_AUTH_INVALID);
    assert_int_equal(live_result(l, "nobody", "nobody-secret"), MX_AUTH_INVALID);
    /* Filter metacharacters in a login are escaped: they match nothing. */
    assert_int_equal(live_result(l, "*", "alice-secret"), MX_AUTH_INVALID);
    assert_int_equal(live_result(l, "alice)(uid=*", "alice-secret"), MX_AUTH_INVALID);
    assert_null(strstr(log_text, "wrong-secret"));
}

static void test_live_disabled_needs_password(void **state)
{
    struct live *l = *state;
    /* bob is disabled, erin deleted: a wrong password looks like any other. */
    assert_int_equal(live_result(l, "bob", "wrong-secret"), MX_AUTH_INVALID);
    assert_int_equal(live_result(l, "erin@example.test", "wrong-secret"), MX_AUTH_INVALID);
    assert_null(strstr(log_text, "auth.account_inactive"));
    /* With the right one the caller may say "disabled". */
    assert_int_equal(live_result(l, "bob", "bob-secret"), MX_AUTH_DISABLED);
    assert_non_null(strstr(log_text, "auth.account_inactive"));
    assert_non_null(strstr(log_text, "status=disabled"));
    assert_int_equal(live_result(l, "erin@example.test", "erin-secret"), MX_AUTH_DISABLED);
    assert_non_null(strstr(log_text, "status=deleted"));
    assert_null(strstr(log_text, "bob-secret"));
    assert_null(strstr(log_text, "erin-secret"));
}

static void test_live_blocked_per_account(void **state)
{
    struct live *l = *state;
    /* Three spellings of carol share one count (her DN). */
    assert_int_equal(live_result(l, "carol", "wrong-1"), MX_AUTH_INVALID);
    assert_int_equal(live_result(l, "CAROL", "wrong-2"), MX_AUTH_INVALID);
    assert_int_equal(live_result(l, "carol@example.test", "wrong-3"), MX_AUTH_INVALID);
    char key[256];
    mx_auth_account_key("uid=carol,ou=people,dc=example,dc=test", key, sizeof key);
    assert_true(mx_limits_auth_blocked(l->limits, key, mx_now_ms(), l->cfg.window_ms, 3));
    /* Now even her right password is refused without a bind. */
    assert_int_equal(live_result(l, "carol", "carol-secret"), MX_AUTH_BLOCKED);
    assert_non_null(strstr(log_text, "auth.account_blocked"));
    /* Other accounts are unaffected. */
    assert_int_equal(live_result(l, "alice", "alice-secret"), MX_AUTH_OK);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* libldap writes with plain send() */
    mx_log_open("test", "node1", MX_LOG_TO_STDERR, 0, MX_LOG_DEBUG);
    mx_log_set_sink(capture_sink, NULL);
    const struct CMUnitTest offline[] = {
        cmocka_unit_test(test_identity_owns),
        cmocka_unit_test(test_account_key),
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_unreachable_is_tempfail),
        cmocka_unit_test(test_cancel_never_calls_back),
        cmocka_unit_test(test_broken_template_fails_login),
    };
    int failed = cmocka_run_group_tests_name("auth", offline, NULL, NULL);
    if (getenv("MX_TEST_LDAP_URI") == NULL) {
        printf("auth_live: skipped (MX_TEST_LDAP_URI not set; run by "
               "tests/integration/test_auth_live.py)\n");
        return failed;
    }
    const struct CMUnitTest live[] = {
        cmocka_unit_test_setup_teardown(test_live_ok_identity, live_setup, live_teardown),
        cmocka_unit_test_setup_teardown(test_live_invalid, live_setup, live_teardown),
        cmocka_unit_test_setup_teardown(test_live_disabled_needs_password, live_setup,
                                        live_teardown),
        cmocka_unit_test_setup_teardown(test_live_blocked_per_account, live_setup, live_teardown),
    };
    return failed + cmocka_run_group_tests_name("auth_live", live, NULL, NULL);
}
