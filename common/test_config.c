/* test_config - loading, validation errors (file, line, setting), defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "mx_config.h"
#include "mx_log.h"

static const struct mx_option test_options[] = {
    { "inbound", MX_OPT_GROUP, NULL, 0, 0, NULL, "inbound" },
    { "inbound.spool_dir", MX_OPT_STRING, "\"/var/spool/mx\"", 0, 0, NULL, "spool" },
    { "inbound.instances", MX_OPT_GROUP_LIST, NULL, 0, 0, NULL, "instances" },
    { "inbound.instances.*.name", MX_OPT_STRING, NULL, 0, 0, NULL, "instance name" },
    { "inbound.instances.*.mode", MX_OPT_STRING, "\"mta\"", 0, 0, "mta|msa", "instance mode" },
    { "inbound.instances.*.listen", MX_OPT_STRING_LIST, "[ \"0.0.0.0:25\" ]", 0, 0, NULL, "listeners" },
    { "inbound.instances.*.max_size", MX_OPT_SIZE, "\"20M\"", 1024, 1LL << 32, NULL, "size limit" },
    { "inbound.instances.*.max_recipients", MX_OPT_INT, "1000", 1, 100000, NULL, "rcpt limit" },
    { "inbound.instances.*.idle_timeout", MX_OPT_DURATION, "\"5m\"", 1000, 3600000, NULL, "idle" },
    { "inbound.instances.*.require_tls", MX_OPT_BOOL, "false", 0, 0, NULL, "tls" },
    { NULL, 0, NULL, 0, 0, NULL, NULL },
};

static const struct mx_option *const test_tables[] = { mx_common_options, test_options, NULL };

static struct mx_config *load_ok(const char *text)
{
    struct mx_config *cfg = NULL;
    char *error = NULL;
    int ret = mx_config_load_string(text, test_tables, &cfg, &error);
    if (ret != 0)
        fail_msg("unexpected load error: %s", error);
    return cfg;
}

/* load_error - loading text must fail; the error must contain want. */
static void load_error(const char *text, const char *want)
{
    struct mx_config *cfg = NULL;
    char *error = NULL;
    assert_int_equal(mx_config_load_string(text, test_tables, &cfg, &error), -1);
    assert_null(cfg);
    assert_non_null(error);
    if (strstr(error, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", error, want);
    free(error);
}

static void test_defaults_when_empty(void **state)
{
    (void)state;
    struct mx_config *cfg = load_ok("");
    struct mx_config_node root = mx_config_root(cfg);
    assert_int_equal(mx_config_int(&root, "node.id"), 1);
    assert_string_equal(mx_config_string(&root, "log.level"), "info");
    assert_int_equal(mx_config_duration_ms(&root, "ldap.timeout"), 3000);
    assert_int_equal(mx_config_strings_len(&root, "ldap.uris"), 1);
    assert_string_equal(mx_config_strings_at(&root, "ldap.uris", 0), "ldap://127.0.0.1:389/");
    assert_null(mx_config_strings_at(&root, "ldap.uris", 1));
    assert_false(mx_config_is_set(&root, "node.id"));
    assert_int_equal(mx_config_list_len(&root, "inbound.instances"), 0);
    mx_config_free(&cfg);
    assert_null(cfg);
}

static void test_values_and_lists(void **state)
{
    (void)state;
    struct mx_config *cfg = load_ok(
        "node = { name = \"mx1\"; id = 7; };\n"
        "ldap = { uris = [ \"ldap://a/\", \"ldap://b/\" ]; timeout = \"1500ms\"; };\n"
        "inbound = {\n"
        "  instances = (\n"
        "    { name = \"mta\"; listen = [ \"127.0.0.1:2525\" ]; max_size = \"10M\"; },\n"
        "    { name = \"msa\"; mode = \"msa\"; require_tls = true; idle_timeout = 60000; }\n"
        "  );\n"
        "};\n");
    struct mx_config_node root = mx_config_root(cfg);
    assert_string_equal(mx_config_string(&root, "node.name"), "mx1");
    assert_int_equal(mx_config_int(&root, "node.id"), 7);
    assert_true(mx_config_is_set(&root, "node.id"));
    assert_int_equal(mx_config_strings_len(&root, "ldap.uris"), 2);
    assert_string_equal(mx_config_strings_at(&root, "ldap.uris", 1), "ldap://b/");
    assert_int_equal(mx_config_duration_ms(&root, "ldap.timeout"), 1500);

    struct mx_config_node node = mx_config_group(&root, "node");
    assert_int_equal(mx_config_int(&node, "id"), 7);

    assert_int_equal(mx_config_list_len(&root, "inbound.instances"), 2);
    struct mx_config_node mta = mx_config_list_elem(&root, "inbound.instances", 0);
    struct mx_config_node msa = mx_config_list_elem(&root, "inbound.instances", 1);
    assert_string_equal(mx_config_string(&mta, "name"), "mta");
    assert_string_equal(mx_config_string(&mta, "mode"), "mta"); /* default */
    assert_int_equal(mx_config_size(&mta, "max_size"), 10 * 1024 * 1024);
    assert_int_equal(mx_config_int(&mta, "max_recipients"), 1000);
    assert_false(mx_config_bool(&mta, "require_tls"));
    assert_string_equal(mx_config_strings_at(&mta, "listen", 0), "127.0.0.1:2525");
    assert_string_equal(mx_config_string(&msa, "mode"), "msa");
    assert_true(mx_config_bool(&msa, "require_tls"));
    assert_int_equal(mx_config_duration_ms(&msa, "idle_timeout"), 60000);
    assert_int_equal(mx_config_size(&msa, "max_size"), 20 * 1024 * 1024);
    assert_string_equal(mx_config_strings_at(&msa, "listen", 0), "0.0.0.0:25");

    char where[128];
    assert_string_equal(mx_config_source(&mta, "max_size", where, sizeof where), "<string>:5");
    assert_string_equal(mx_config_source(&msa, "max_size", where, sizeof where),
                        "default of inbound.instances.*.max_size");
    mx_config_free(&cfg);
}

static void test_errors_name_line_and_setting(void **state)
{
    (void)state;
    /* Each row: a config text and what its error must say. */
    static const struct {
        const char *text;
        const char *want;
    } rows[] = {
        { "node = { nmae = \"x\"; };", "<string>:1: node.nmae: unknown setting" },
        { "\n\nnode = { id = \"seven\"; };", "<string>:3: node.id: expected an integer" },
        { "node = { id = 70000; };", "node.id: value 70000 out of range [0, 65535]" },
        { "node = { id = -1; };", "out of range" },
        { "log = { level = \"loud\"; };", "log.level: expected one of debug|info" },
        { "log = { target = 3; };", "log.target: expected a string" },
        { "ldap = { uris = \"ldap://a/\"; };", "ldap.uris: expected a list of strings" },
        { "ldap = { uris = [ 1, 2 ]; };", "ldap.uris: every element must be a string" },
        { "ldap = { timeout = \"soon\"; };", "ldap.timeout: expected a duration" },
        { "ldap = { timeout = \"10ms\"; };", "out of range [100, 60000]" },
        { "node = 5;", "node: expected a group" },
        { "inbound = { instances = { name = \"mta\"; }; };",
          "inbound.instances: expected a list of groups" },
        { "inbound = { instances = ( { name = \"a\"; }, { nmae = \"b\"; } ); };",
          "inbound.instances[1].nmae: unknown setting" },
        { "inbound = { instances = ( { max_size = \"20Q\"; } ); };",
          "inbound.instances[0].max_size: expected a size" },
        { "inbound = { instances = ( { max_size = 10; } ); };", "out of range [1024," },
        { "inbound = { instances = ( { require_tls = \"yes\"; } ); };", "expected true or false" },
        { "node = { id = 1 ", "<string>:1: syntax error" },
        { "bogus = 1;", "bogus: unknown setting" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        load_error(rows[i].text, rows[i].want);
}

/* Another role's group in the shared file is left to that role; a group
 * this daemon owns is still checked member by member. */
static void test_foreign_groups_skipped(void **state)
{
    (void)state;
    struct mx_config *cfg = load_ok("store = { root = \"/x\"; anything = 1; };\n"
                                    "delivery = { listen = 5; };\n");
    mx_config_free(&cfg);
    load_error("inbound = { nothing_like_this = 1; };", "inbound.nothing_like_this: unknown setting");
    load_error("store = 5;", "store: expected a group");
}

static void test_several_errors_reported_together(void **state)
{
    (void)state;
    struct mx_config *cfg = NULL;
    char *error = NULL;
    assert_int_equal(mx_config_load_string("a = 1;\nb = 2;\nnode = { id = \"x\"; };\n",
                                           test_tables, &cfg, &error), -1);
    assert_non_null(strstr(error, "<string>:1: a: unknown setting"));
    assert_non_null(strstr(error, "<string>:2: b: unknown setting"));
    assert_non_null(strstr(error, "<string>:3: node.id"));
    free(error);
}

static void test_file_errors_and_include(void **state)
{
    (void)state;
    char dir[] = "/tmp/mx-test-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char main_path[256], inc_path[256];
    snprintf(main_path, sizeof main_path, "%s/main.conf", dir);
    snprintf(inc_path, sizeof inc_path, "%s/ldap.conf", dir);
    FILE *fp = fopen(inc_path, "w");
    assert_non_null(fp);
    fputs("ldap = {\n  pool_size = 999;\n};\n", fp);
    fclose(fp);
    fp = fopen(main_path, "w");
    assert_non_null(fp);
    fputs("node = { id = 3; };\n@include \"ldap.conf\"\n", fp);
    fclose(fp);

    struct mx_config *cfg = NULL;
    char *error = NULL;
    assert_int_equal(mx_config_load(main_path, test_tables, &cfg, &error), -1);
    char want[300];
    snprintf(want, sizeof want, "%s:2: ldap.pool_size: value 999 out of range", inc_path);
    if (strstr(error, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", error, want);
    free(error);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/absent.conf", dir);
    assert_int_equal(mx_config_load(missing, test_tables, &cfg, &error), -1);
    assert_non_null(strstr(error, "absent.conf: cannot open: No such file"));
    free(error);

    unlink(inc_path);
    unlink(main_path);
    rmdir(dir);
}

static void test_size_and_duration_parsers(void **state)
{
    (void)state;
    long long v;
    assert_int_equal(mx_config_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(mx_config_parse_size("512K", &v), 0);
    assert_int_equal(v, 512 * 1024);
    assert_int_equal(mx_config_parse_size("20MB", &v), 0);
    assert_int_equal(v, 20 * 1024 * 1024);
    assert_int_equal(mx_config_parse_size("2g", &v), 0);
    assert_int_equal(v, 2LL * 1024 * 1024 * 1024);
    assert_int_equal(mx_config_parse_size("-1", &v), -1);
    assert_int_equal(mx_config_parse_size("1T", &v), -1);
    assert_int_equal(mx_config_parse_size("", &v), -1);
    assert_int_equal(mx_config_parse_size("M", &v), -1);
    assert_int_equal(mx_config_parse_size("99999999999999999999", &v), -1);
    assert_int_equal(mx_config_parse_size("9999999999999G", &v), -1);
    assert_int_equal(mx_config_parse_duration("250", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(mx_config_parse_duration("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(mx_config_parse_duration("30s", &v), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(mx_config_parse_duration("5m", &v), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(mx_config_parse_duration("2h", &v), 0);
    assert_int_equal(v, 7200000);
    assert_int_equal(mx_config_parse_duration("1d", &v), 0);
    assert_int_equal(v, 86400000);
    assert_int_equal(mx_config_parse_duration("1.5s", &v), -1);
    assert_int_equal(mx_config_parse_duration("s", &v), -1);
    assert_int_equal(mx_config_parse_duration("5 s", &v), -1);
}

static void test_bad_table_default_is_reported(void **state)
{
    (void)state;
    static const struct mx_option broken[] = {
        { "x", MX_OPT_INT, "\"not a number\"", 0, 0, NULL, "x" },
        { NULL, 0, NULL, 0, 0, NULL, NULL },
    };
    static const struct mx_option *const tables[] = { broken, NULL };
    struct mx_config *cfg = NULL;
    char *error = NULL;
    assert_int_equal(mx_config_load_string("", tables, &cfg, &error), -1);
    assert_non_null(strstr(error, "option table: default of x"));
    free(error);
}

/* The sample-config checker notices a missing option and a missing doc
 * line (tests/test_sample_config.c runs it on deploy/mxcluster.conf with
 * every role's table). */
static void test_sample_config_check(void **state)
{
    (void)state;
    char *error = NULL;
    static const struct mx_option *const test_tables_only[] = { test_options, NULL };
    char path[] = "/tmp/mx-test-sample-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char sample[] =
        "# inbound\ninbound = {\n  # spool\n  spool_dir = \"/x\";\n"
        "  # instances\n  instances = ( { name = \"mta\"; mode = \"mta\"; } );\n};\n";
    assert_int_equal(write(fd, sample, sizeof sample - 1), (ssize_t)sizeof sample - 1);
    close(fd);
    assert_int_equal(mx_config_check_sample(path, test_tables_only, &error), -1);
    assert_non_null(strstr(error, "does not set inbound.instances.*.listen"));
    assert_non_null(strstr(error, "lacks the doc line of inbound.instances.*.name"));
    assert_null(strstr(error, "inbound.spool_dir"));
    free(error);
    unlink(path);
}

int main(void)
{
    mx_log_set_level(MX_LOG_CRIT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_when_empty),
        cmocka_unit_test(test_values_and_lists),
        cmocka_unit_test(test_errors_name_line_and_setting),
        cmocka_unit_test(test_foreign_groups_skipped),
        cmocka_unit_test(test_several_errors_reported_together),
        cmocka_unit_test(test_file_errors_and_include),
        cmocka_unit_test(test_size_and_duration_parsers),
        cmocka_unit_test(test_bad_table_default_is_reported),
        cmocka_unit_test(test_sample_config_check),
    };
    return cmocka_run_group_tests_name("mx_config", tests, NULL, NULL);
}
