/* test_sample_config - deploy/mxcluster.conf sets every option of every
 * role, with the option's documentation beside it, and loads cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "mx_config.h"

/* Every role's option table (each defined in <role>/<role>_options.c). */
extern const struct mx_option inbound_options[];
extern const struct mx_option delivery_options[];
extern const struct mx_option store_options[];
extern const struct mx_option imapd_options[];
extern const struct mx_option ha_options[];

static void test_sample_config_is_complete(void **state)
{
    (void)state;
    static const struct mx_option *const tables[] = {
        mx_common_options, inbound_options, delivery_options, store_options,
        imapd_options,      ha_options,      NULL,
    };
    char *error = NULL;
    if (mx_config_check_sample(MX_SOURCE_DIR "/deploy/mxcluster.conf", tables, &error) != 0)
        fail_msg("%s", error);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_config_is_complete),
    };
    return cmocka_run_group_tests_name("sample_config", tests, NULL, NULL);
}
