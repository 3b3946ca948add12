/* test_ldap_live - mx_ldap against a REAL slapd (started by
 * tests/integration/test_ldap_client.py through deploy/mxlaunch).
 *
 * Not a unit test: it needs a directory. Environment:
 *   MX_TEST_LDAP_URI      one or more URIs (space separated)
 *   MX_TEST_LDAP_BASE     base DN (dc=example,dc=test)
 *   MX_TEST_LDAP_BIND_DN  service account DN
 *   MX_TEST_LDAP_BIND_PW  service account password
 *   MX_TEST_LDAP_MODE     scenario: found notfound unreachable hang failover
 *                         killover bind concurrency throughput
 *   MX_TEST_SLAPD_PID     (hang, killover) pid of the slapd to SIGSTOP / SIGKILL
 *   MX_TEST_LDAP_URI2     (killover) URI of the slapd that stays up
 * Sample data: ldap-schema/sample.ldif (alice active with alternates
 * alice.smith@ and a@, bob disabled, ...; passwords NAME-secret).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "mx_alloc.h"
#include "mx_ldap.h"
#include "mx_log.h"

#define ACCOUNT_FILTER "(&(objectClass=mxAccount)(|(mail=%s)(mxAlternateAddress=%s)))"

static struct event_base *base;
static const char *const account_attrs[] = { "mail", "uid", "mxAccountStatus",
                                              "mxAlternateAddress", NULL };

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : dflt;
}

static const char *env_req(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        fail_msg("environment variable %s is not set", name);
    return v;
}

/* --- a client configured from the environment --- */

struct client_opts {
    const char *uris;        /* NULL = MX_TEST_LDAP_URI */
    const char *bind_pw;     /* NULL = MX_TEST_LDAP_BIND_PW */
    unsigned pool_size;      /* 0 = default */
    unsigned auth_pool_size;
    unsigned op_timeout_ms;
    unsigned connect_timeout_ms;
    unsigned backoff_s;
    size_t cache_max;        /* 0 = cache off */
    unsigned max_ops;
};

static struct mx_ldap *make_client(const struct client_opts *o)
{
    struct mx_ldap_config cfg;
    const char *error = NULL;

    mx_ldap_config_init(&cfg);
    cfg.uris = o->uris != NULL ? o->uris : env_req("MX_TEST_LDAP_URI");
    cfg.base_dn = env_req("MX_TEST_LDAP_BASE");
    cfg.bind_dn = env_req("MX_TEST_LDAP_BIND_DN");
    cfg.bind_password = o->bind_pw != NULL ? o->bind_pw : env_req("MX_TEST_LDAP_BIND_PW");
    if (o->pool_size)
        cfg.pool_size = o->pool_size;
    if (o->auth_pool_size)
        cfg.auth_pool_size = o->auth_pool_size;
    if (o->op_timeout_ms)
        cfg.op_timeout_ms = o->op_timeout_ms;
    if (o->connect_timeout_ms)
        cfg.connect_timeout_ms = o->connect_timeout_ms;
    if (o->backoff_s)
        cfg.down_backoff_s = o->backoff_s;
    if (o->max_ops)
        cfg.max_ops_per_conn = o->max_ops;
    cfg.cache_max_entries = o->cache_max;
    struct mx_ldap *ldap = mx_ldap_new(base, &cfg, &error);
    if (ldap == NULL)
        fail_msg("mx_ldap_new: %s", error);
    return ldap;
}

/* --- waiting for answers on the event loop --- */

struct answer {
    bool done;
    enum mx_ldap_status status;
    size_t n;
    struct mx_ldap_entry *entries;
    char *error;
    char *uri;
    bool cached;
    uint64_t at_ms;
    const char *expect_uid; /* concurrency: what this lookup should find */
    int *outstanding;
};

static void answer_clear(struct answer *a)
{
    mx_ldap_entries_free(&a->entries, a->n);
    free(a->error);
    free(a->uri);
    memset(a, 0, sizeof *a);
}

static void on_search(const struct mx_ldap_result *r, void *ctx)
{
    struct answer *a = ctx;

    assert_false(a->done); /* exactly once */
    a->done = true;
    a->status = r->status;
    a->n = r->n_entries;
    a->entries = mx_ldap_entries_dup(r->entries, r->n_entries);
    a->error = r->error != NULL ? mx_strdup(r->error) : NULL;
    a->uri = r->uri != NULL ? mx_strdup(r->uri) : NULL;
    a->cached = r->cached;
    a->at_ms = now_ms();
    if (a->outstanding != NULL)
        (*a->outstanding)--;
}

static void on_bind(enum mx_ldap_status status, const char *error, void *ctx)
{
    struct answer *a = ctx;

    assert_false(a->done);
    a->done = true;
    a->status = status;
    a->error = error != NULL ? mx_strdup(error) : NULL;
    a->at_ms = now_ms();
    if (a->outstanding != NULL)
        (*a->outstanding)--;
}

static void keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run the loop until *done or *counter reaches 0; fail after limit_ms. */
static void run_until(const bool *done, const int *counter, uint64_t limit_ms)
{
    struct event *keepalive = event_new(base, -1, EV_PERSIST, keepalive_cb, NULL);
    struct timeval tick = { 0, 20000 };
    uint64_t deadline = now_ms() + limit_ms;

    event_add(keepalive, &tick);
    while (!(done != NULL && *done) && !(counter != NULL && *counter <= 0)) {
        if (now_ms() > deadline)
            fail_msg("no answer within %llu ms", (unsigned long long)limit_ms);
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(keepalive);
}

static struct mx_ldap_op *start_search(struct mx_ldap *ldap, const char *filter,
                                       bool use_cache, struct answer *a)
{
    struct mx_ldap_query q = {
        .scope = MX_LDAP_SCOPE_SUB,
        .filter = filter,
        .attrs = account_attrs,
        .size_limit = 0,
        .use_cache = use_cache,
    };
    return mx_ldap_search(ldap, &q, on_search, a);
}

static void search_start_raw(struct mx_ldap *ldap, const char *filter, struct answer *a)
{
    struct mx_ldap_query q = { .scope = MX_LDAP_SCOPE_SUB, .filter = filter,
                               .attrs = account_attrs };
    mx_ldap_search(ldap, &q, on_search, a);
}

/* Search and wait; checks the callback did not run inside mx_ldap_search. */
static void search_wait(struct mx_ldap *ldap, const char *filter, bool use_cache,
                        struct answer *a)
{
    answer_clear(a);
    start_search(ldap, filter, use_cache, a);
    assert_false(a->done);
    run_until(&a->done, NULL, 20000);
}

static void lookup_wait(struct mx_ldap *ldap, const char *address, bool use_cache,
                        struct answer *a)
{
    char *filter = mx_ldap_filter_format(ACCOUNT_FILTER, address, address);
    assert_non_null(filter);
    search_wait(ldap, filter, use_cache, a);
    free(filter);
}

static void bind_wait(struct mx_ldap *ldap, const char *dn, const char *pw, size_t len,
                      struct answer *a)
{
    answer_clear(a);
    mx_ldap_bind_check(ldap, dn, pw, len, on_bind, a);
    assert_false(a->done);
    run_until(&a->done, NULL, 20000);
}

static void expect_status(const struct answer *a, enum mx_ldap_status want, const char *what)
{
    if (a->status != want)
        fail_msg("%s: got %s (%s), want %s", what, mx_ldap_status_name(a->status),
                 a->error != NULL ? a->error : "-", mx_ldap_status_name(want));
}

static void expect_uid(const struct answer *a, const char *uid, const char *what)
{
    expect_status(a, MX_LDAP_FOUND, what);
    assert_int_equal(a->n, 1);
    const char *got = mx_ldap_entry_get_first(&a->entries[0], "uid");
    if (got == NULL || strcmp(got, uid) != 0)
        fail_msg("%s: found uid %s, want %s", what, got ? got : "(none)", uid);
}

/* --- a timer that measures how late the loop runs it --- */

struct ticker {
    struct event *ev;
    uint64_t last_ms;
    uint64_t max_late_ms;
    unsigned ticks;
    unsigned interval_ms;
};

static void ticker_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ticker *t = arg;
    uint64_t now = now_ms();
    uint64_t gap = now - t->last_ms;

    (void)fd;
    (void)what;
    if (gap > t->interval_ms && gap - t->interval_ms > t->max_late_ms)
        t->max_late_ms = gap - t->interval_ms;
    t->last_ms = now;
    t->ticks++;
}

static void ticker_start(struct ticker *t, unsigned interval_ms)
{
    struct timeval tv = { 0, (suseconds_t)interval_ms * 1000 };

    memset(t, 0, sizeof *t);
    t->interval_ms = interval_ms;
    t->last_ms = now_ms();
    t->ev = event_new(base, -1, EV_PERSIST, ticker_cb, t);
    event_add(t->ev, &tv);
}

static void ticker_stop(struct ticker *t)
{
    event_free(t->ev);
    t->ev = NULL;
}

/* ================================================================== */
/* a) found */

static void test_found_by_mail_and_alternates(void **state)
{
    (void)state;
    struct client_opts o = { 0 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };

    lookup_wait(ldap, "alice@example.test", false, &a);
    expect_uid(&a, "alice", "alice by mail");
    assert_string_equal(a.entries[0].dn, "uid=alice,ou=people,dc=example,dc=test");
    assert_string_equal(mx_ldap_entry_get_first(&a.entries[0], "MXACCOUNTSTATUS"), "active");
    const struct mx_ldap_attr *alt = mx_ldap_entry_get(&a.entries[0], "mxAlternateAddress");
    assert_non_null(alt);
    assert_int_equal(alt->n_values, 2);
    assert_false(a.cached);
    assert_non_null(a.uri);

    lookup_wait(ldap, "alice.smith@example.test", false, &a);
    expect_uid(&a, "alice", "alice by alternate alice.smith@");
    lookup_wait(ldap, "a@example.test", false, &a);
    expect_uid(&a, "alice", "alice by alternate a@");
    lookup_wait(ldap, "ALICE@Example.Test", false, &a);
    expect_uid(&a, "alice", "mail matching ignores case");
    lookup_wait(ldap, "bob@example.test", false, &a);
    expect_uid(&a, "bob", "bob (disabled, but he exists)");
    assert_string_equal(mx_ldap_entry_get_first(&a.entries[0], "mxAccountStatus"), "disabled");

    answer_clear(&a);
    mx_ldap_free(&ldap);
    assert_null(ldap);
}

static void test_found_hostile_input_finds_nothing(void **state)
{
    (void)state;
    struct client_opts o = { 0 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };

    /* Control: the same filter WITHOUT escaping really would match all, so
     * the NOT_FOUNDs below are the escaping's doing. */
    search_wait(ldap, "(&(objectClass=mxAccount)(|(mail=*)(mxAlternateAddress=*)))", false, &a);
    expect_status(&a, MX_LDAP_FOUND, "unescaped wildcard (control)");
    assert_true(a.n >= 6);

    static const char *const hostile[] = {
        "*", "alice*", "*)(mail=*", "*)(uid=*))(|(uid=*", "alice@example.test)(uid=*",
        "*)(objectClass=*", "\\2a", "(", ")", "\\", "",
    };
    for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
        lookup_wait(ldap, hostile[i], false, &a);
        if (a.status != MX_LDAP_NOT_FOUND)
            fail_msg("hostile input '%s': got %s (%zu entries, %s)", hostile[i],
                     mx_ldap_status_name(a.status), a.n, a.error ? a.error : "-");
    }

    /* A NUL inside the value (explicit length): no truncation to alice. */
    static const char with_nul[] = "alice@example.test\0evil";
    char *v = mx_ldap_escape_filter_value(with_nul, sizeof with_nul - 1);
    char *filter = mx_asprintf("(&(objectClass=mxAccount)(|(mail=%s)(mxAlternateAddress=%s)))",
                               v, v);
    search_wait(ldap, filter, false, &a);
    expect_status(&a, MX_LDAP_NOT_FOUND, "value with NUL");
    free(filter);
    free(v);

    /* A broken filter is an ERROR (tempfail), never NOT_FOUND. */
    search_wait(ldap, "(mail=alice@example.test", false, &a);
    expect_status(&a, MX_LDAP_ERROR, "unbalanced filter");

    answer_clear(&a);
    mx_ldap_free(&ldap);
}

static void test_found_bases_and_scopes(void **state)
{
    (void)state;
    struct client_opts o = { 0 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct mx_ldap_query q = { .scope = MX_LDAP_SCOPE_BASE, .filter = "(objectClass=*)" };

    q.base = "uid=alice,ou=people,dc=example,dc=test";
    mx_ldap_search(ldap, &q, on_search, &a);
    run_until(&a.done, NULL, 20000);
    expect_status(&a, MX_LDAP_FOUND, "base-scope read of alice");
    assert_null(mx_ldap_entry_get(&a.entries[0], "userPassword")); /* ACL hides it */

    answer_clear(&a);
    q.base = "uid=nobody,ou=people,dc=example,dc=test";
    mx_ldap_search(ldap, &q, on_search, &a);
    run_until(&a.done, NULL, 20000);
    expect_status(&a, MX_LDAP_NOT_FOUND, "base-scope read of a missing DN");

    /* A missing SEARCH BASE is a configuration problem: ERROR, not 550. */
    answer_clear(&a);
    q.base = "ou=nowhere,dc=example,dc=test";
    q.scope = MX_LDAP_SCOPE_SUB;
    q.filter = "(mail=alice@example.test)";
    mx_ldap_search(ldap, &q, on_search, &a);
    run_until(&a.done, NULL, 20000);
    expect_status(&a, MX_LDAP_ERROR, "subtree search under a missing base");

    /* Size limit: FOUND with exactly that many entries. */
    answer_clear(&a);
    q.base = NULL;
    q.filter = "(objectClass=mxAccount)";
    q.size_limit = 2;
    mx_ldap_search(ldap, &q, on_search, &a);
    run_until(&a.done, NULL, 20000);
    expect_status(&a, MX_LDAP_FOUND, "size-limited search");
    assert_int_equal(a.n, 2);

    answer_clear(&a);
    mx_ldap_free(&ldap);
}

/* A refused SERVICE bind is a configuration error: UNAVAILABLE (451), never
 * NOT_FOUND, and the URI is not used until the back-off ends. */
static void test_found_wrong_service_password_is_unavailable(void **state)
{
    (void)state;
    struct client_opts o = { .bind_pw = "not-the-password", .cache_max = 100 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct mx_ldap_stats st;

    lookup_wait(ldap, "alice@example.test", true, &a);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "search with a wrong service password");
    assert_non_null(strstr(a.error, "service bind"));
    lookup_wait(ldap, "nobody@example.test", true, &a);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "second search, URI down");
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.server_failures, 1);
    assert_int_equal(st.cache_entries, 0);
    answer_clear(&a);
    mx_ldap_free(&ldap);
}

/* A listener whose accept queue is full: the kernel drops further SYNs, so
 * a connect to it hangs in SYN-SENT - the case CONNECT_ASYNC is for. */
static int blackhole_listener(int *fds, int nfds)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof sin;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fds[0] >= 0);
    assert_int_equal(bind(fds[0], (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fds[0], 0), 0);
    assert_int_equal(getsockname(fds[0], (struct sockaddr *)&sin, &len), 0);
    for (int i = 1; i < nfds; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fds[i] >= 0);
        (void)connect(fds[i], (struct sockaddr *)&sin, sizeof sin);
    }
    usleep(100000);
    return ntohs(sin.sin_port);
}

/* A TCP relay to slapd that first plays dead: its accept queue is full, so
 * the client's SYN is dropped and its connect() stays in progress until the
 * SYN is retransmitted (~1 s) after we free the queue. This is the path a
 * remote directory takes (connect not complete when libldap writes the bind);
 * loopback to slapd itself never takes it. */
struct slow_relay {
    int fds[2]; /* listener, filler */
    int target_port;
    struct event *ev_release, *ev_accept;
    struct bufferevent *side[2];
};

static void relay_read_cb(struct bufferevent *bev, void *arg)
{
    struct slow_relay *r = arg;
    struct bufferevent *other = bev == r->side[0] ? r->side[1] : r->side[0];
    bufferevent_write_buffer(other, bufferevent_get_input(bev));
}

static void relay_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct slow_relay *r = arg;
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        for (int i = 0; i < 2; i++) {
            if (r->side[i] != NULL)
                bufferevent_free(r->side[i]);
            r->side[i] = NULL;
        }
    }
}

static void relay_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct slow_relay *r = arg;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    int c = accept(fd, NULL, NULL);

    (void)what;
    if (c < 0)
        return;
    if (r->side[0] != NULL) {
        close(c);
        return;
    }
    int up = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)r->target_port);
    assert_int_equal(connect(up, (struct sockaddr *)&sin, sizeof sin), 0);
    evutil_make_socket_nonblocking(c);
    evutil_make_socket_nonblocking(up);
    r->side[0] = bufferevent_socket_new(base, c, BEV_OPT_CLOSE_ON_FREE);
    r->side[1] = bufferevent_socket_new(base, up, BEV_OPT_CLOSE_ON_FREE);
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(r->side[i], relay_read_cb, NULL, relay_event_cb, r);
        bufferevent_enable(r->side[i], EV_READ | EV_WRITE);
    }
}

static void relay_release_cb(evutil_socket_t fd, short what, void *arg)
{
    struct slow_relay *r = arg;
    int c = accept(r->fds[0], NULL, NULL); /* the filler: frees the queue */

    (void)fd;
    (void)what;
    if (c >= 0)
        close(c);
    close(r->fds[1]);
    r->fds[1] = -1;
    r->ev_accept = event_new(base, r->fds[0], EV_READ | EV_PERSIST, relay_accept_cb, r);
    event_add(r->ev_accept, NULL);
}

static void test_found_slow_connect_completes_async(void **state)
{
    (void)state;
    struct slow_relay r = { 0 };
    const char *uri = env_req("MX_TEST_LDAP_URI");
    char relay_uri[64];
    struct timeval release = { 0, 300000 };

    if (sscanf(uri, "ldap://127.0.0.1:%d", &r.target_port) != 1)
        fail_msg("MX_TEST_LDAP_URI %s is not ldap://127.0.0.1:PORT", uri);
    snprintf(relay_uri, sizeof relay_uri, "ldap://127.0.0.1:%d/", blackhole_listener(r.fds, 2));
    r.ev_release = evtimer_new(base, relay_release_cb, &r);
    evtimer_add(r.ev_release, &release);

    struct client_opts o = { .uris = relay_uri, .connect_timeout_ms = 4000,
                             .op_timeout_ms = 5000 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct ticker t;

    ticker_start(&t, 10);
    uint64_t t0 = now_ms();
    lookup_wait(ldap, "alice@example.test", false, &a);
    uint64_t took = now_ms() - t0;
    ticker_stop(&t);
    expect_uid(&a, "alice", "through a connect that completes late");
    printf("# slow connect: FOUND after %llu ms; max timer lateness %llu ms\n",
           (unsigned long long)took, (unsigned long long)t.max_late_ms);
    assert_true(took >= 700);        /* it really waited for the SYN retransmit */
    assert_true(t.max_late_ms < 200); /* ... without blocking the loop */
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.server_failures, 0);

    /* The connection now works normally. */
    lookup_wait(ldap, "bob@example.test", false, &a);
    expect_uid(&a, "bob", "second lookup on the late connection");

    answer_clear(&a);
    mx_ldap_free(&ldap);
    for (int i = 0; i < 2; i++)
        if (r.side[i] != NULL)
            bufferevent_free(r.side[i]);
    event_free(r.ev_release);
    if (r.ev_accept != NULL)
        event_free(r.ev_accept);
    close(r.fds[0]);
}

/* ================================================================== */
/* b) not found + negative cache */

static void test_notfound_negative_cache(void **state)
{
    (void)state;
    struct client_opts o = { .cache_max = 100 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct mx_ldap_stats st0, st1, st2;

    mx_ldap_get_stats(ldap, &st0);
    lookup_wait(ldap, "nobody@example.test", true, &a);
    expect_status(&a, MX_LDAP_NOT_FOUND, "nobody (first)");
    assert_false(a.cached);
    mx_ldap_get_stats(ldap, &st1);
    assert_int_equal(st1.cache_misses, st0.cache_misses + 1);
    assert_int_equal(st1.sent, st0.sent + 1);
    assert_int_equal(st1.cache_entries, 1);

    lookup_wait(ldap, "nobody@example.test", true, &a); /* asserts no sync callback */
    expect_status(&a, MX_LDAP_NOT_FOUND, "nobody (second)");
    assert_true(a.cached);
    mx_ldap_get_stats(ldap, &st2);
    assert_int_equal(st2.cache_negative_hits, st1.cache_negative_hits + 1);
    assert_int_equal(st2.cache_hits, st1.cache_hits + 1);
    assert_int_equal(st2.sent, st1.sent); /* nothing went to the server */

    /* Positive answers are cached too, and stay correct. */
    lookup_wait(ldap, "carol@example.test", true, &a);
    expect_uid(&a, "carol", "carol (first)");
    assert_false(a.cached);
    lookup_wait(ldap, "carol@example.test", true, &a);
    expect_uid(&a, "carol", "carol (cached)");
    assert_true(a.cached);
    assert_null(a.uri);

    /* use_cache=false always asks the server. */
    lookup_wait(ldap, "nobody@example.test", false, &a);
    expect_status(&a, MX_LDAP_NOT_FOUND, "nobody uncached");
    assert_false(a.cached);

    answer_clear(&a);
    mx_ldap_free(&ldap);
}

static void cancel_cb_must_not_run(const struct mx_ldap_result *r, void *ctx)
{
    (void)r;
    (void)ctx;
    fail_msg("callback of a cancelled operation ran");
}

static void test_notfound_cancel(void **state)
{
    (void)state;
    struct client_opts o = { .cache_max = 100 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct mx_ldap_query q = { .scope = MX_LDAP_SCOPE_SUB, .filter = "(mail=dave@example.test)",
                               .use_cache = true };

    /* Cancel in flight, cancel of a cache hit before it is delivered. */
    struct mx_ldap_op *op = mx_ldap_search(ldap, &q, cancel_cb_must_not_run, NULL);
    mx_ldap_op_cancel(&op);
    assert_null(op);
    lookup_wait(ldap, "dave@example.test", true, &a); /* warms the cache */
    expect_uid(&a, "dave", "dave");
    op = mx_ldap_search(ldap, &(struct mx_ldap_query){ .filter = "" }, cancel_cb_must_not_run,
                        NULL); /* an immediate ERROR, still deferred: cancellable */
    mx_ldap_op_cancel(&op);
    char *filter = mx_ldap_filter_format(ACCOUNT_FILTER, "dave@example.test", "dave@example.test");
    op = mx_ldap_search(ldap, &(struct mx_ldap_query){ .scope = MX_LDAP_SCOPE_SUB,
                                                       .filter = filter,
                                                       .attrs = account_attrs,
                                                       .use_cache = true },
                        cancel_cb_must_not_run, NULL);
    mx_ldap_op_cancel(&op);
    free(filter);
    /* Let the loop run: nothing may fire. Then the client still works. */
    lookup_wait(ldap, "frank@example.test", false, &a);
    expect_uid(&a, "frank", "frank after cancels");

    /* Freeing with operations pending runs no callback either. */
    q.use_cache = false;
    for (int i = 0; i < 10; i++)
        mx_ldap_search(ldap, &q, cancel_cb_must_not_run, NULL);
    mx_ldap_free(&ldap);
    struct timeval tv = { 0, 200000 };
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    answer_clear(&a);
}

/* ================================================================== */
/* c) unreachable */

static void test_unreachable_dead_port(void **state)
{
    (void)state;
    struct client_opts o = { .op_timeout_ms = 3000, .cache_max = 100 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct ticker t;

    ticker_start(&t, 10);
    uint64_t t0 = now_ms();
    lookup_wait(ldap, "alice@example.test", true, &a);
    uint64_t took = now_ms() - t0;
    expect_status(&a, MX_LDAP_UNAVAILABLE, "dead port");
    assert_non_null(a.error);
    printf("# dead port: UNAVAILABLE in %llu ms (%s)\n", (unsigned long long)took, a.error);
    assert_true(took < 1000);

    /* Now every URI is down: the answer is immediate and still UNAVAILABLE,
     * and nothing of that was cached. */
    t0 = now_ms();
    lookup_wait(ldap, "alice@example.test", true, &a);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "dead port, second try");
    assert_true(now_ms() - t0 < 100);
    assert_non_null(strstr(a.error, "down"));
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.cache_entries, 0);
    assert_true(st.server_failures >= 1);

    /* f) a bind check with the directory down is UNAVAILABLE ... */
    bind_wait(ldap, "uid=alice,ou=people,dc=example,dc=test", "alice-secret", 12, &a);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "bind with the directory down");
    /* ... but an empty password is refused before any network traffic. */
    mx_ldap_get_stats(ldap, &st);
    uint64_t sent = st.sent;
    bind_wait(ldap, "uid=alice,ou=people,dc=example,dc=test", "", 0, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "empty password, directory down");
    bind_wait(ldap, "uid=alice,ou=people,dc=example,dc=test", "alice-secret\0x", 14, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "password with NUL, directory down");
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.sent, sent);

    ticker_stop(&t);
    assert_true(t.max_late_ms < 200);
    answer_clear(&a);
    mx_ldap_free(&ldap);
}

static void test_unreachable_fresh_client_empty_password(void **state)
{
    (void)state;
    struct client_opts o = { 0 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct mx_ldap_stats st;

    /* First thing this client ever does: no connection was attempted. */
    bind_wait(ldap, "uid=alice,ou=people,dc=example,dc=test", "", 0, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "empty password on a fresh client");
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.server_failures, 0);
    assert_int_equal(st.connections, 0);
    answer_clear(&a);
    mx_ldap_free(&ldap);
}

/* TEST-NET-1 (RFC 5737): SYNs go nowhere, so the connect itself must time
 * out - asynchronously. (If the sandbox refuses at once, still UNAVAILABLE.) */
static void test_unreachable_blackhole_connect(void **state)
{
    (void)state;
    struct client_opts o = { .uris = "ldap://192.0.2.1:389/", .connect_timeout_ms = 500,
                             .op_timeout_ms = 3000 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct ticker t;

    ticker_start(&t, 10);
    uint64_t t0 = now_ms();
    lookup_wait(ldap, "alice@example.test", false, &a);
    uint64_t took = now_ms() - t0;
    ticker_stop(&t);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "black-holed address");
    printf("# black hole: UNAVAILABLE in %llu ms (%s), max timer lateness %llu ms\n",
           (unsigned long long)took, a.error, (unsigned long long)t.max_late_ms);
    assert_true(took < 1500);
    assert_true(t.max_late_ms < 200);
    answer_clear(&a);
    mx_ldap_free(&ldap);
}

static void test_unreachable_syn_blackhole(void **state)
{
    (void)state;
    int fds[8];
    int port = blackhole_listener(fds, 8);
    char uri[64];
    snprintf(uri, sizeof uri, "ldap://127.0.0.1:%d/", port);
    struct client_opts o = { .uris = uri, .connect_timeout_ms = 500, .op_timeout_ms = 3000 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct ticker t;

    ticker_start(&t, 10);
    uint64_t t0 = now_ms();
    lookup_wait(ldap, "alice@example.test", false, &a);
    uint64_t took = now_ms() - t0;
    ticker_stop(&t);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "connect to a full accept queue");
    printf("# SYN black hole: UNAVAILABLE in %llu ms (%s), max timer lateness %llu ms\n",
           (unsigned long long)took, a.error, (unsigned long long)t.max_late_ms);
    assert_true(took >= 400 && took < 1500); /* the connect timeout, not the op's */
    assert_true(t.max_late_ms < 200);
    answer_clear(&a);
    mx_ldap_free(&ldap);
    for (int i = 0; i < 8; i++)
        close(fds[i]);
}

/* ================================================================== */
/* d) hanging directory */

/* wait_stopped - kill(SIGSTOP) returns before the target has stopped: a
 * thread of slapd could still answer one more request. Wait until every
 * thread of pid shows state T in /proc. */
static void wait_stopped(pid_t pid)
{
    for (int tries = 0; tries < 500; tries++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        assert_non_null(d);
        bool all = true;
        struct dirent *de;
        while (all && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char stat_path[sizeof path + 300], buf[512] = "";
            snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, de->d_name);
            FILE *fp = fopen(stat_path, "r");
            if (fp == NULL)
                continue;
            size_t n = fread(buf, 1, sizeof buf - 1, fp);
            fclose(fp);
            buf[n] = '\0';
            const char *close_paren = strrchr(buf, ')');
            all = close_paren && close_paren[1] == ' ' && close_paren[2] == 'T';
        }
        closedir(d);
        if (all)
            return;
        usleep(2000);
    }
    fail_msg("slapd %d did not stop within 1 s of SIGSTOP", (int)pid);
}

static void test_hang_timeout_keeps_loop_running(void **state)
{
    (void)state;
    pid_t pid = (pid_t)atol(env_req("MX_TEST_SLAPD_PID"));
    struct client_opts o = { .op_timeout_ms = 1000, .connect_timeout_ms = 1000,
                             .backoff_s = 1, .pool_size = 2 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    struct answer many[50];
    int outstanding = 0;
    struct ticker t;

    /* A second client sends big requests into the stopped server until the
     * socket buffers are full: writes must stall (EAGAIN), never block. */
    struct mx_ldap *big = make_client(&o);
    enum { N_BIG = 128, BIG_LEN = 65536 };
    struct answer *bigs = mx_calloc(N_BIG, sizeof *bigs);
    char *big_filter = mx_malloc(BIG_LEN + 16);
    snprintf(big_filter, 16, "(mail=");
    memset(big_filter + 6, 'a', BIG_LEN);
    strcpy(big_filter + 6 + BIG_LEN, ")");

    memset(many, 0, sizeof many);
    lookup_wait(ldap, "alice@example.test", false, &a);
    expect_uid(&a, "alice", "before the hang");
    lookup_wait(big, "alice@example.test", false, &a);
    expect_uid(&a, "alice", "before the hang (second client)");

    assert_int_equal(kill(pid, SIGSTOP), 0);
    wait_stopped(pid);
    uint64_t t0 = now_ms();
    for (int i = 0; i < N_BIG; i++) {
        bigs[i].outstanding = &outstanding;
        outstanding++;
        search_start_raw(big, big_filter, &bigs[i]);
    }
    /* (Encoding 8 MiB of requests is CPU work of its own: measure the loop
     * from here, while everything waits.) */
    ticker_start(&t, 10);
    t0 = now_ms();
    for (int i = 0; i < 50; i++) {
        many[i].outstanding = &outstanding;
        outstanding++;
        char *f = mx_ldap_filter_format(ACCOUNT_FILTER, "frank@example.test", "frank@example.test");
        start_search(ldap, f, false, &many[i]);
        free(f);
    }
    lookup_wait(ldap, "alice@example.test", false, &a);
    uint64_t took = now_ms() - t0;
    run_until(NULL, &outstanding, 5000);
    ticker_stop(&t);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "search while slapd is stopped");
    printf("# hang (established connection): UNAVAILABLE after %llu ms (%s); "
           "timer ticks %u, max lateness %llu ms\n", (unsigned long long)took, a.error,
           t.ticks, (unsigned long long)t.max_late_ms);
    assert_true(took >= 900 && took < 1600);
    assert_true(t.max_late_ms < 200);
    assert_true(t.ticks >= 60);
    for (int i = 0; i < 50; i++) {
        expect_status(&many[i], MX_LDAP_UNAVAILABLE, "concurrent search while stopped");
        assert_true(many[i].at_ms - t0 < 1600);
        answer_clear(&many[i]);
    }
    struct mx_ldap_stats bst;
    mx_ldap_get_stats(big, &bst);
    printf("# hang: %d searches of %d KiB each into the stopped server: write stalls %llu\n",
           N_BIG, BIG_LEN / 1024, (unsigned long long)bst.write_stalls);
    for (int i = 0; i < N_BIG; i++) {
        expect_status(&bigs[i], MX_LDAP_UNAVAILABLE, "big search while stopped");
        assert_true(bigs[i].at_ms - t0 < 1600);
        answer_clear(&bigs[i]);
    }
    assert_true(bst.write_stalls >= 1);
    free(bigs);
    free(big_filter);
    mx_ldap_free(&big);

    /* A fresh client: the kernel still accepts the TCP connection, the
     * service bind is never answered. */
    struct mx_ldap *fresh = make_client(&o);
    ticker_start(&t, 10);
    t0 = now_ms();
    lookup_wait(fresh, "alice@example.test", false, &a);
    took = now_ms() - t0;
    ticker_stop(&t);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "fresh connection to a stopped slapd");
    printf("# hang (new connection): UNAVAILABLE after %llu ms (%s); max lateness %llu ms\n",
           (unsigned long long)took, a.error, (unsigned long long)t.max_late_ms);
    assert_true(took < 1600);
    assert_true(t.max_late_ms < 200);

    /* f) a password check against the hung directory times out too. */
    struct mx_ldap *auth = make_client(&o);
    t0 = now_ms();
    bind_wait(auth, "uid=alice,ou=people,dc=example,dc=test", "alice-secret", 12, &a);
    expect_status(&a, MX_LDAP_UNAVAILABLE, "bind while slapd is stopped");
    assert_true(now_ms() - t0 < 1600);

    assert_int_equal(kill(pid, SIGCONT), 0);

    /* After the back-off the URI is tried again, lazily, and works. */
    uint64_t wait_until = now_ms() + 1100;
    while (now_ms() < wait_until) {
        struct timeval tv = { 0, 50000 };
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    lookup_wait(ldap, "alice@example.test", false, &a);
    expect_uid(&a, "alice", "after SIGCONT and the back-off");
    bind_wait(auth, "uid=alice,ou=people,dc=example,dc=test", "alice-secret", 12, &a);
    expect_status(&a, MX_LDAP_OK, "bind after SIGCONT and the back-off");

    answer_clear(&a);
    mx_ldap_free(&auth);
    mx_ldap_free(&fresh);
    mx_ldap_free(&ldap);
}

/* ================================================================== */
/* e) failover */

static void test_failover_dead_first(void **state)
{
    (void)state;
    struct client_opts o = { 0 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    const char *live = env_req("MX_TEST_LDAP_URI2");
    struct mx_ldap_stats st;

    lookup_wait(ldap, "alice@example.test", false, &a);
    expect_uid(&a, "alice", "first URI dead, second live");
    assert_string_equal(a.uri, live);
    mx_ldap_get_stats(ldap, &st);
    assert_true(st.server_failures >= 1);
    assert_true(st.retries >= 1);

    /* The dead URI is skipped during its back-off: no new failure. */
    lookup_wait(ldap, "bob@example.test", false, &a);
    expect_uid(&a, "bob", "second lookup");
    assert_string_equal(a.uri, live);
    struct mx_ldap_stats st2;
    mx_ldap_get_stats(ldap, &st2);
    assert_int_equal(st2.server_failures, st.server_failures);

    bind_wait(ldap, "uid=carol,ou=people,dc=example,dc=test", "carol-secret", 12, &a);
    expect_status(&a, MX_LDAP_OK, "bind check fails over too");

    answer_clear(&a);
    mx_ldap_free(&ldap);
}

static const char *const users[] = { "alice", "bob", "carol", "dave", "erin", "frank" };

static void test_killover_first_dies_mid_run(void **state)
{
    (void)state;
    pid_t pid = (pid_t)atol(env_req("MX_TEST_SLAPD_PID"));
    const char *second = env_req("MX_TEST_LDAP_URI2");
    struct client_opts o = { .pool_size = 2, .op_timeout_ms = 3000, .backoff_s = 30 };
    struct mx_ldap *ldap = make_client(&o);
    enum { ROUNDS = 60, PER_ROUND = 20, KILL_ROUND = 20 };
    struct answer a[PER_ROUND];
    unsigned from_second_after_kill = 0, total = 0;
    char addr[64];

    memset(a, 0, sizeof a);
    for (int round = 0; round < ROUNDS; round++) {
        int outstanding = 0;
        for (int i = 0; i < PER_ROUND; i++) {
            const char *u = users[(size_t)(round + i) % 6];
            answer_clear(&a[i]);
            a[i].expect_uid = u;
            a[i].outstanding = &outstanding;
            outstanding++;
            snprintf(addr, sizeof addr, "%s@example.test", u);
            char *f = mx_ldap_filter_format(ACCOUNT_FILTER, addr, addr);
            start_search(ldap, f, false, &a[i]);
            free(f);
        }
        if (round == KILL_ROUND) {
            /* Searches are in flight on the first server right now. */
            assert_int_equal(kill(pid, SIGKILL), 0);
        }
        run_until(NULL, &outstanding, 10000);
        for (int i = 0; i < PER_ROUND; i++) {
            char what[96];
            snprintf(what, sizeof what, "round %d lookup %d (%s)", round, i, a[i].expect_uid);
            expect_uid(&a[i], a[i].expect_uid, what);
            total++;
            /* In the kill round the first server may still have answered
             * some; after it, only the second one can. */
            if (round > KILL_ROUND && strcmp(a[i].uri, second) == 0)
                from_second_after_kill++;
        }
    }
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    printf("# killover: %u lookups all FOUND; %u answered by the second server after the "
           "kill round; retries %llu, server failures %llu\n", total, from_second_after_kill,
           (unsigned long long)st.retries, (unsigned long long)st.server_failures);
    assert_int_equal(from_second_after_kill, (ROUNDS - KILL_ROUND - 1) * PER_ROUND);
    assert_true(st.server_failures >= 1);
    for (int i = 0; i < PER_ROUND; i++)
        answer_clear(&a[i]);
    mx_ldap_free(&ldap);
}

/* ================================================================== */
/* f) bind check */

static void test_bind_passwords(void **state)
{
    (void)state;
    struct client_opts o = { .pool_size = 1, .auth_pool_size = 1 };
    struct mx_ldap *ldap = make_client(&o);
    struct answer a = { 0 };
    const char *alice = "uid=alice,ou=people,dc=example,dc=test";
    struct mx_ldap_stats st;

    bind_wait(ldap, alice, "alice-secret", 12, &a);
    expect_status(&a, MX_LDAP_OK, "alice / alice-secret");
    bind_wait(ldap, alice, "wrong", 5, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "alice / wrong");
    bind_wait(ldap, alice, "alice-secreT", 12, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "alice / wrong case");
    bind_wait(ldap, "uid=nobody,ou=people,dc=example,dc=test", "x", 1, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "unknown DN");
    bind_wait(ldap, "this is not a DN", "x", 1, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "malformed DN");

    mx_ldap_get_stats(ldap, &st);
    uint64_t sent = st.sent;
    bind_wait(ldap, alice, "", 0, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "alice / empty password");
    bind_wait(ldap, alice, "alice-secret\0", 13, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "alice / password + NUL");
    bind_wait(ldap, "", "alice-secret", 12, &a);
    expect_status(&a, MX_LDAP_INVALID_CREDENTIALS, "empty DN");
    mx_ldap_get_stats(ldap, &st);
    assert_int_equal(st.sent, sent); /* none of those reached the server */

    /* The checks ran on the auth connection: the service connection is
     * still bound as the service account, which reads other entries (as
     * alice or as anonymous, bob's entry would be invisible). */
    bind_wait(ldap, alice, "alice-secret", 12, &a);
    expect_status(&a, MX_LDAP_OK, "alice again");
    lookup_wait(ldap, "bob@example.test", false, &a);
    expect_uid(&a, "bob", "service search after a user bind");
    bind_wait(ldap, alice, "nope", 4, &a);
    lookup_wait(ldap, "carol@example.test", false, &a);
    expect_uid(&a, "carol", "service search after a failed user bind");

    answer_clear(&a);
    mx_ldap_free(&ldap);
}

static void test_bind_concurrent_checks(void **state)
{
    (void)state;
    struct client_opts o = { .auth_pool_size = 2 };
    struct mx_ldap *ldap = make_client(&o);
    enum { N = 60 };
    struct answer a[N];
    int outstanding = 0;
    char dn[96], pw[64];

    memset(a, 0, sizeof a);
    for (int i = 0; i < N; i++) {
        const char *u = users[i % 6];
        bool right = (i % 3) != 0;
        snprintf(dn, sizeof dn, "uid=%s,ou=people,dc=example,dc=test", u);
        snprintf(pw, sizeof pw, "%s-%s", u, right ? "secret" : "guess");
        a[i].expect_uid = right ? "ok" : "bad";
        a[i].outstanding = &outstanding;
        outstanding++;
        mx_ldap_bind_check(ldap, dn, pw, strlen(pw), on_bind, &a[i]);
    }
    run_until(NULL, &outstanding, 20000);
    for (int i = 0; i < N; i++) {
        enum mx_ldap_status want = strcmp(a[i].expect_uid, "ok") == 0
                                       ? MX_LDAP_OK : MX_LDAP_INVALID_CREDENTIALS;
        expect_status(&a[i], want, users[i % 6]);
        answer_clear(&a[i]);
    }
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    assert_true(st.connections <= 2); /* the auth pool, no more */
    mx_ldap_free(&ldap);
}

/* ================================================================== */
/* g) concurrency */

static void test_concurrency_1000_on_pool_4(void **state)
{
    (void)state;
    struct client_opts o = { .pool_size = 4, .op_timeout_ms = 20000 };
    struct mx_ldap *ldap = make_client(&o);
    enum { N = 1000 };
    struct answer *a = mx_calloc(N, sizeof *a);
    static const char *const addrs[][2] = {
        { "alice@example.test", "alice" }, { "bob@example.test", "bob" },
        { "carol@example.test", "carol" }, { "dave@example.test", "dave" },
        { "erin@example.test", "erin" },   { "frank@example.test", "frank" },
        { "a@example.test", "alice" },     { "nobody@example.test", NULL },
        { "x*@example.test", NULL },
    };
    size_t n_addrs = sizeof addrs / sizeof *addrs;
    int outstanding = 0;
    uint64_t t0 = now_ms();

    for (int i = 0; i < N; i++) {
        const char *addr = addrs[(size_t)i % n_addrs][0];
        char *f = mx_ldap_filter_format(ACCOUNT_FILTER, addr, addr);
        a[i].expect_uid = addrs[(size_t)i % n_addrs][1];
        a[i].outstanding = &outstanding;
        outstanding++;
        start_search(ldap, f, false, &a[i]);
        free(f);
    }
    run_until(NULL, &outstanding, 60000);
    uint64_t took = now_ms() - t0;
    for (int i = 0; i < N; i++) {
        if (a[i].expect_uid != NULL)
            expect_uid(&a[i], a[i].expect_uid, addrs[(size_t)i % n_addrs][0]);
        else
            expect_status(&a[i], MX_LDAP_NOT_FOUND, addrs[(size_t)i % n_addrs][0]);
        answer_clear(&a[i]);
    }
    struct mx_ldap_stats st;
    mx_ldap_get_stats(ldap, &st);
    printf("# 1000 concurrent searches on %llu connections: %llu ms\n",
           (unsigned long long)st.connections, (unsigned long long)took);
    assert_int_equal(st.connections, 4);
    assert_int_equal(st.sent, N);
    assert_int_equal(st.unavailable, 0);
    free(a);
    mx_ldap_free(&ldap);
}

/* ================================================================== */
/* throughput: searches/s, cache off, a window of searches in flight */

struct pump {
    struct mx_ldap *ldap;
    char *filters[6];
    unsigned started, done, failed, total, window;
};

static void pump_start_one(struct pump *p);

static void pump_cb(const struct mx_ldap_result *r, void *ctx)
{
    struct pump *p = ctx;

    p->done++;
    if (r->status != MX_LDAP_FOUND || r->n_entries != 1)
        p->failed++;
    if (p->started < p->total)
        pump_start_one(p);
}

static void pump_start_one(struct pump *p)
{
    struct mx_ldap_query q = { .scope = MX_LDAP_SCOPE_SUB,
                               .filter = p->filters[p->started % 6],
                               .attrs = account_attrs };
    p->started++;
    mx_ldap_search(p->ldap, &q, pump_cb, p);
}

static double measure(unsigned pool, unsigned total, unsigned window)
{
    /* max_ops = window: one connection can carry the whole window, so the
     * comparison is 1 vs 4 connections at the same concurrency. */
    struct client_opts o = { .pool_size = pool, .op_timeout_ms = 30000, .max_ops = window };
    struct pump p = { .total = total, .window = window };
    char addr[64];

    p.ldap = make_client(&o);
    for (int i = 0; i < 6; i++) {
        snprintf(addr, sizeof addr, "%s@example.test", users[i]);
        p.filters[i] = mx_ldap_filter_format(ACCOUNT_FILTER, addr, addr);
    }
    /* warm up: open the connections */
    for (unsigned i = 0; i < window && p.started < window; i++)
        pump_start_one(&p);
    while (p.done < window) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    p.started = p.done = p.failed = 0;
    uint64_t t0 = now_ms();
    for (unsigned i = 0; i < window; i++)
        pump_start_one(&p);
    while (p.done < total)
        event_base_loop(base, EVLOOP_ONCE);
    uint64_t took = now_ms() - t0;
    double rate = took > 0 ? (double)total * 1000.0 / (double)took : 0;
    assert_int_equal(p.failed, 0);
    for (int i = 0; i < 6; i++)
        free(p.filters[i]);
    mx_ldap_free(&p.ldap);
    printf("# throughput: pool=%u window=%u: %u searches in %llu ms = %.0f searches/s\n", pool,
           window, total, (unsigned long long)took, rate);
    return rate;
}

static void test_throughput_pool_1_vs_4(void **state)
{
    (void)state;
    unsigned total = (unsigned)atoi(env_or("MX_TEST_LDAP_SEARCHES", "20000"));
    unsigned window = (unsigned)atoi(env_or("MX_TEST_LDAP_WINDOW", "128"));
    double r1 = measure(1, total, window);
    double r4 = measure(4, total, window);
    printf("THROUGHPUT pool1=%.0f/s pool4=%.0f/s\n", r1, r4);
    assert_true(r1 > 0 && r4 > 0);
}

/* ================================================================== */

int main(void)
{
    const char *mode = env_or("MX_TEST_LDAP_MODE", "found");
    char pattern[64];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found_by_mail_and_alternates),
        cmocka_unit_test(test_found_hostile_input_finds_nothing),
        cmocka_unit_test(test_found_bases_and_scopes),
        cmocka_unit_test(test_found_slow_connect_completes_async),
        cmocka_unit_test(test_found_wrong_service_password_is_unavailable),
        cmocka_unit_test(test_notfound_negative_cache),
        cmocka_unit_test(test_notfound_cancel),
        cmocka_unit_test(test_unreachable_dead_port),
        cmocka_unit_test(test_unreachable_fresh_client_empty_password),
        cmocka_unit_test(test_unreachable_blackhole_connect),
        cmocka_unit_test(test_unreachable_syn_blackhole),
        cmocka_unit_test(test_hang_timeout_keeps_loop_running),
        cmocka_unit_test(test_failover_dead_first),
        cmocka_unit_test(test_killover_first_dies_mid_run),
        cmocka_unit_test(test_bind_passwords),
        cmocka_unit_test(test_bind_concurrent_checks),
        cmocka_unit_test(test_concurrency_1000_on_pool_4),
        cmocka_unit_test(test_throughput_pool_1_vs_4),
    };

    /* libldap writes to sockets the peer may have closed. */
    signal(SIGPIPE, SIG_IGN);
    mx_log_open("ldaptest", "test", MX_LOG_TO_STDERR, 0,
                getenv("MX_TEST_LDAP_DEBUG") ? MX_LOG_DEBUG : MX_LOG_NOTICE);
    static const char *const modes[] = { "found", "notfound", "unreachable", "hang", "failover",
                                         "killover", "bind", "concurrency", "throughput" };
    bool known = false;
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        known = known || strcmp(mode, modes[i]) == 0;
    if (!known) {
        fprintf(stderr, "unknown MX_TEST_LDAP_MODE %s\n", mode);
        return 2;
    }
    base = event_base_new();
    snprintf(pattern, sizeof pattern, "test_%s_*", mode);
    cmocka_set_test_filter(pattern);
    int rc = cmocka_run_group_tests_name(mode, tests, NULL, NULL);
    event_base_free(base);
    return rc;
}
