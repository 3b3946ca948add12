/* test_limits - per-IP session and rate limits, failed-login windows and
 * the sweep that bounds memory. Times are passed in, so nothing sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_limits.h"

#define T0 1000000ULL /* an arbitrary monotonic start time */

static void test_concurrent_limit(void **state)
{
    (void)state;
    struct mx_limits *limits = mx_limits_new();
    const char *reason = NULL;
    for (int i = 0; i < 3; i++)
        assert_int_equal(mx_limits_connect(limits, "192.0.2.1", 3, 0, T0, &reason), 0);
    assert_int_equal(mx_limits_connect(limits, "192.0.2.1", 3, 0, T0, &reason), -1);
    assert_non_null(strstr(reason, "concurrent"));
    /* Another address has its own count. */
    assert_int_equal(mx_limits_connect(limits, "192.0.2.2", 3, 0, T0, &reason), 0);
    /* A session ending frees one slot, and only one. */
    mx_limits_disconnect(limits, "192.0.2.1");
    assert_int_equal(mx_limits_connect(limits, "192.0.2.1", 3, 0, T0, &reason), 0);
    assert_int_equal(mx_limits_connect(limits, "192.0.2.1", 3, 0, T0, &reason), -1);
    /* Disconnects of unknown addresses or below zero are harmless. */
    mx_limits_disconnect(limits, "198.51.100.1");
    for (int i = 0; i < 10; i++)
        mx_limits_disconnect(limits, "192.0.2.2");
    assert_int_equal(mx_limits_connect(limits, "192.0.2.2", 1, 0, T0, &reason), 0);
    assert_int_equal(mx_limits_connect(limits, "192.0.2.2", 1, 0, T0, &reason), -1);
    mx_limits_free(&limits);
    assert_null(limits);
    mx_limits_free(&limits);
}

static void test_connection_rate(void **state)
{
    (void)state;
    struct mx_limits *limits = mx_limits_new();
    const char *reason = NULL;
    /* 60 per minute: a full bucket of 60 at once, then one per second. */
    for (int i = 0; i < 60; i++) {
        assert_int_equal(mx_limits_connect(limits, "2001:db8::1", 1000, 60, T0, &reason), 0);
        mx_limits_disconnect(limits, "2001:db8::1");
    }
    assert_int_equal(mx_limits_connect(limits, "2001:db8::1", 1000, 60, T0, &reason), -1);
    assert_non_null(strstr(reason, "rate"));
    assert_int_equal(mx_limits_connect(limits, "2001:db8::1", 1000, 60, T0 + 500, &reason), -1);
    assert_int_equal(mx_limits_connect(limits, "2001:db8::1", 1000, 60, T0 + 1000, &reason), 0);
    assert_int_equal(mx_limits_connect(limits, "2001:db8::1", 1000, 60, T0 + 1000, &reason), -1);
    /* A long pause refills to capacity, not beyond. */
    uint64_t later = T0 + 3600 * 1000;
    int allowed = 0;
    for (int i = 0; i < 100; i++)
        if (mx_limits_connect(limits, "2001:db8::1", 1000, 60, later, &reason) == 0)
            allowed++;
    assert_int_equal(allowed, 60);
    /* A refused connection is not counted as concurrent. */
    struct mx_limits *fresh = mx_limits_new();
    assert_int_equal(mx_limits_connect(fresh, "192.0.2.9", 1, 1, T0, &reason), 0);
    mx_limits_disconnect(fresh, "192.0.2.9");
    assert_int_equal(mx_limits_connect(fresh, "192.0.2.9", 1, 1, T0, &reason), -1);
    assert_int_equal(mx_limits_connect(fresh, "192.0.2.9", 1, 1, T0 + 60000, &reason), 0);
    mx_limits_free(&fresh);
    mx_limits_free(&limits);
}

static void test_auth_failure_window(void **state)
{
    (void)state;
    struct mx_limits *limits = mx_limits_new();
    const unsigned window = 60000, max = 3;
    assert_false(mx_limits_auth_blocked(limits, "dn:uid=alice", T0, window, max));
    for (unsigned i = 0; i < max - 1; i++)
        mx_limits_auth_failure(limits, "dn:uid=alice", T0 + i, window);
    assert_false(mx_limits_auth_blocked(limits, "dn:uid=alice", T0 + 10, window, max));
    mx_limits_auth_failure(limits, "dn:uid=alice", T0 + 20, window);
    assert_true(mx_limits_auth_blocked(limits, "dn:uid=alice", T0 + 30, window, max));
    /* Keys do not mix: the address count and other accounts are separate. */
    assert_false(mx_limits_auth_blocked(limits, "dn:uid=bob", T0 + 30, window, max));
    assert_false(mx_limits_auth_blocked(limits, "192.0.2.1", T0 + 30, window, max));
    /* The window is fixed from the first failure: still blocked at its end,
     * forgotten after it. */
    assert_true(mx_limits_auth_blocked(limits, "dn:uid=alice", T0 + window, window, max));
    assert_false(mx_limits_auth_blocked(limits, "dn:uid=alice", T0 + window + 1, window, max));
    /* A failure after the window starts a new count. */
    mx_limits_auth_failure(limits, "dn:uid=alice", T0 + 2 * window, window);
    assert_false(mx_limits_auth_blocked(limits, "dn:uid=alice", T0 + 2 * window, window, max));
    /* The failure count and the session count of one key are independent. */
    const char *reason = NULL;
    assert_int_equal(mx_limits_connect(limits, "dn:uid=alice", 1, 0, T0, &reason), 0);
    mx_limits_free(&limits);
}

static void test_sweep_keeps_what_matters(void **state)
{
    (void)state;
    struct mx_limits *limits = mx_limits_new();
    const char *reason = NULL;
    const unsigned window = 3600 * 1000; /* longer than the idle time */
    for (int i = 0; i < 3; i++)
        mx_limits_auth_failure(limits, "dn:uid=target", T0, window);
    assert_int_equal(mx_limits_connect(limits, "192.0.2.200", 1, 0, T0, &reason), 0);
    /* A scan from many addresses, long after: inserts trigger sweeps. */
    uint64_t later = T0 + 45ULL * 60 * 1000;
    char ip[32];
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(ip, sizeof ip, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        assert_int_equal(mx_limits_connect(limits, ip, 5, 0, later + i, &reason), 0);
        mx_limits_disconnect(limits, ip);
    }
    /* The failure window has not ended: the count survived the sweeps. */
    assert_true(mx_limits_auth_blocked(limits, "dn:uid=target", later + 20000, window, 3));
    /* The open session survived too: its slot is still taken. */
    assert_int_equal(mx_limits_connect(limits, "192.0.2.200", 1, 0, later + 20000, &reason), -1);
    mx_limits_free(&limits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_limit),
        cmocka_unit_test(test_connection_rate),
        cmocka_unit_test(test_auth_failure_window),
        cmocka_unit_test(test_sweep_keeps_what_matters),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
