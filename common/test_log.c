/* test_log - formatting, quoting and injection safety of mx_log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mx_log.h"

static char captured[MX_LOG_LINE_MAX];
static int captured_count;

static void capture_sink(void *ctx, enum mx_log_level level, const char *line, size_t len)
{
    (void)ctx;
    (void)level;
    memcpy(captured, line, len);
    captured[len] = '\0';
    captured_count++;
}

static int setup(void **state)
{
    (void)state;
    mx_log_open("inbound", "node1", MX_LOG_TO_STDERR, 0, MX_LOG_INFO);
    mx_log_set_sink(capture_sink, NULL);
    captured_count = 0;
    captured[0] = '\0';
    return 0;
}

static void test_plain_fields(void **state)
{
    (void)state;
    mx_log(MX_LOG_INFO, "smtp.accept", MX_KV("id", "01ABC"), MX_KV("peer", "127.0.0.1:2525"),
           MX_KVI("size", -5), MX_KVU("rcpts", 3));
    assert_string_equal(captured, "level=info role=inbound node=node1 event=smtp.accept "
                                  "id=01ABC peer=127.0.0.1:2525 size=-5 rcpts=3");
}

static void test_no_fields(void **state)
{
    (void)state;
    mx_log(MX_LOG_NOTICE, "start");
    assert_string_equal(captured, "level=notice role=inbound node=node1 event=start");
}

static void test_quoting_blocks_line_injection(void **state)
{
    (void)state;
    mx_log(MX_LOG_WARNING, "smtp.bad_command",
           MX_KV("line", "MAIL FROM:<a@b>\r\nlevel=info event=forged"),
           MX_KV("quote", "say \"hi\" \\ bye"), MX_KV("ctl", "a\x01" "b\x7f"),
           MX_KV("empty", ""), MX_KV("null", NULL));
    assert_null(strchr(captured, '\n'));
    assert_null(strchr(captured, '\r'));
    assert_non_null(strstr(captured,
        "line=\"MAIL FROM:<a@b>\\r\\nlevel=info event=forged\""));
    assert_non_null(strstr(captured, "quote=\"say \\\"hi\\\" \\\\ bye\""));
    assert_non_null(strstr(captured, "ctl=\"a\\x01b\\x7f\""));
    assert_non_null(strstr(captured, "empty=\"\""));
    assert_non_null(strstr(captured, "null=-"));
}

static void test_threshold(void **state)
{
    (void)state;
    mx_log(MX_LOG_DEBUG, "noise");
    assert_int_equal(captured_count, 0);
    mx_log_set_level(MX_LOG_DEBUG);
    mx_log(MX_LOG_DEBUG, "noise");
    assert_int_equal(captured_count, 1);
}

static void test_truncation_is_marked(void **state)
{
    (void)state;
    char big[MX_LOG_LINE_MAX * 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mx_log(MX_LOG_ERR, "huge", MX_KV("data", big));
    size_t len = strlen(captured);
    assert_true(len < MX_LOG_LINE_MAX);
    assert_string_equal(captured + len - strlen(" truncated=1"), " truncated=1");
}

static void test_small_buffer(void **state)
{
    (void)state;
    char buf[40];
    size_t len = mx_log_format(buf, sizeof buf, MX_LOG_INFO, "an.event.with.a.long.name",
                               (const struct mx_log_field[]){ { "k", "v" }, { NULL, NULL } });
    assert_int_equal(len, strlen(buf));
    assert_true(len < sizeof buf);
}

static void test_level_parse(void **state)
{
    (void)state;
    enum mx_log_level level;
    assert_int_equal(mx_log_level_parse("debug", &level), 0);
    assert_int_equal(level, MX_LOG_DEBUG);
    assert_int_equal(mx_log_level_parse("WARN", &level), 0);
    assert_int_equal(level, MX_LOG_WARNING);
    assert_int_equal(mx_log_level_parse("crit", &level), 0);
    assert_int_equal(level, MX_LOG_CRIT);
    assert_int_equal(mx_log_level_parse("loud", &level), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_plain_fields, setup),
        cmocka_unit_test_setup(test_no_fields, setup),
        cmocka_unit_test_setup(test_quoting_blocks_line_injection, setup),
        cmocka_unit_test_setup(test_threshold, setup),
        cmocka_unit_test_setup(test_truncation_is_marked, setup),
        cmocka_unit_test_setup(test_small_buffer, setup),
        cmocka_unit_test_setup(test_level_parse, setup),
    };
    return cmocka_run_group_tests_name("mx_log", tests, NULL, NULL);
}
