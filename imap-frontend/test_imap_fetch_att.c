/* test_imap_fetch_att - FETCH attributes, sections, partials, echo text,
 * the store "need" mask and the CONDSTORE/QRESYNC modifiers, through the
 * real command parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "imap_fetch_att.h"
#include "imap_parser.h"
#include "mx_alloc.h"

/* fetch - parse "t [UID ]FETCH 1 <atts>" and its attributes. A '@' in atts
 * stands for the NUL the reader puts after each literal's bytes. */
static int fetch(const char *atts, bool uid, struct imap_fetch_spec *spec, const char **err)
{
    char *line = mx_asprintf("t %sFETCH 1 %s", uid ? "UID " : "", atts);
    size_t len = strlen(line);
    for (char *at = strchr(line, '@'); at != NULL; at = strchr(at + 1, '@'))
        *at = '\0';
    struct imap_command c;
    if (imap_parse_command(line, len, NULL, &c) != 0) {
        print_error("\"%s\": parser: %s\n", line, c.error);
        fail();
    }
    assert_true(c.n_args >= 1);
    int rc = imap_fetch_att_parse(c.args + 1, c.n_args - 1, uid, spec, err);
    imap_command_free(&c);
    free(line);
    return rc;
}

/* expect_echo - the items' echo texts joined by spaces. */
static void expect_echo(const char *atts, bool uid, const char *echo)
{
    struct imap_fetch_spec spec;
    const char *err = NULL;
    if (fetch(atts, uid, &spec, &err) != 0) {
        print_error("\"%s\" refused: %s\n", atts, err);
        fail();
    }
    char got[1024] = "";
    for (size_t i = 0; i < spec.n_items; i++) {
        if (i > 0)
            strcat(got, " ");
        strcat(got, spec.items[i].echo);
    }
    if (strcmp(got, echo) != 0) {
        print_error("\"%s\" -> \"%s\", want \"%s\"\n", atts, got, echo);
        fail();
    }
    imap_fetch_spec_free(&spec);
}

static void expect_refused(const char *atts, bool uid, const char *why)
{
    struct imap_fetch_spec spec;
    const char *err = NULL;
    if (fetch(atts, uid, &spec, &err) == 0) {
        print_error("\"%s\" accepted\n", atts);
        fail();
    }
    if (err == NULL || strstr(err, why) == NULL) {
        print_error("\"%s\": \"%s\" lacks \"%s\"\n", atts, err ? err : "(null)", why);
        fail();
    }
    assert_int_equal(spec.n_items, 0);
    assert_null(spec.items);
}

static void test_macros_and_simple(void **state)
{
    (void)state;
    expect_echo("ALL", false, "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE");
    expect_echo("fast", false, "FLAGS INTERNALDATE RFC822.SIZE");
    expect_echo("Full", false, "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY");
    expect_echo("(flags uid rfc822.size envelope bodystructure body internaldate modseq "
                "rfc822 rfc822.header rfc822.text)",
                false,
                "FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY INTERNALDATE MODSEQ "
                "RFC822 RFC822.HEADER RFC822.TEXT");
    expect_echo("FLAGS", false, "FLAGS");
    expect_echo("(FLAGS FLAGS)", false, "FLAGS");
    /* UID FETCH always answers UID */
    expect_echo("FLAGS", true, "FLAGS UID");
    expect_echo("(UID FLAGS)", true, "UID FLAGS");
    expect_refused("(ALL)", false, "unknown FETCH attribute");
    expect_refused("FOO", false, "unknown FETCH attribute");
    expect_refused("()", false, "empty FETCH attribute list");
    expect_refused("\"FLAGS\"", false, "invalid FETCH attribute");
    expect_refused("(FLAGS (UID))", false, "invalid FETCH attribute");
    expect_refused("BODY.PEEK", false, "unknown FETCH attribute");
    expect_refused("NIL", false, "invalid FETCH attribute");
}

static void test_sections_and_echo(void **state)
{
    (void)state;
    expect_echo("BODY[]", false, "BODY[]");
    expect_echo("body.peek[header.fields (From \"To\" {2}\r\nCc@)]<0.100>", false,
                "BODY[HEADER.FIELDS (From To Cc)]<0>");
    expect_echo("BODY.PEEK[1.2.3.HEADER.FIELDS.NOT (X-Spam)]", false,
                "BODY[1.2.3.HEADER.FIELDS.NOT (X-Spam)]");
    expect_echo("(BODY[TEXT]<100.50> BODY[1.mime] BODY[2] BODY[HEADER])", false,
                "BODY[TEXT]<100> BODY[1.MIME] BODY[2] BODY[HEADER]");
    expect_echo("(BINARY[1.2]<0.10> BINARY.PEEK[] BINARY.SIZE[3])", false,
                "BINARY[1.2]<0> BINARY[] BINARY.SIZE[3]");
    /* a header name that is not an atom is echoed quoted */
    expect_echo("BODY[HEADER.FIELDS (\"X]Odd\\\"\")]", false,
                "BODY[HEADER.FIELDS (\"X]Odd\\\"\")]");

    struct imap_fetch_spec spec;
    const char *err;
    assert_int_equal(fetch("BODY.PEEK[4.1.HEADER.FIELDS (A B)]<7.9>", false, &spec, &err), 0);
    const struct imap_fetch_item *it = &spec.items[0];
    assert_int_equal(it->kind, IMAP_FETCH_BODY_SECTION);
    assert_true(it->peek);
    assert_int_equal(it->section.n_parts, 2);
    assert_int_equal(it->section.parts[0], 4);
    assert_int_equal(it->section.parts[1], 1);
    assert_int_equal(it->section.kind, IMAP_SECTION_HEADER_FIELDS);
    assert_int_equal(it->section.n_fields, 2);
    assert_string_equal(it->section.fields[1], "B");
    assert_true(it->has_partial);
    assert_int_equal(it->partial_offset, 7);
    assert_int_equal(it->partial_length, 9);
    assert_false(spec.sets_seen);
    imap_fetch_spec_free(&spec);

    expect_refused("BODY[MIME]", false, "MIME section needs a part number");
    expect_refused("BODY[FOO]", false, "unknown section keyword");
    expect_refused("BODY[1.FOO]", false, "unknown section keyword");
    expect_refused("BODY[0]", false, "invalid part number");
    expect_refused("BODY[01]", false, "invalid part number");
    expect_refused("BODY[1.]", false, "invalid section");
    expect_refused("BODY[1..2]", false, "unknown section keyword");
    expect_refused("BODY[4294967296]", false, "invalid part number");
    expect_refused("BODY[HEADER.FIELDS]", false, "needs a list");
    expect_refused("BODY[HEADER.FIELDS ()]", false, "needs a list");
    expect_refused("BODY[HEADER.FIELDS (A:B)]", false, "invalid header field name");
    expect_refused("BODY[HEADER.FIELDS (\"\")]", false, "invalid header field name");
    expect_refused("BODY[HEADER.FIELDS ((A))]", false, "invalid header field name");
    expect_refused("BODY[TEXT (A)]", false, "unexpected argument in section");
    expect_refused("BODY[\"TEXT\"]", false, "invalid section");
    expect_refused("BINARY[HEADER]", false, "part numbers only");
    expect_refused("BINARY[1.MIME]", false, "part numbers only");
    expect_refused("BINARY.SIZE[1]<0.5>", false, "BINARY.SIZE takes no partial");
    expect_echo("BODY[]<5>", false, "BODY[]<5>"); /* to the end, as Dovecot */
    expect_refused("BODY[]<>", false, "invalid partial");
    expect_refused("BODY[]<5.>", false, "invalid partial");
    expect_refused("BODY[]<5.0>", false, "invalid partial");
    expect_refused("BODY[]<.5>", false, "invalid partial");
    expect_refused("BODY[]<99999999999999999999.1>", false, "invalid partial");
    expect_refused("BODY[]<1.9223372036854775808>", false, "invalid partial");
    expect_echo("BODY[]<9223372036854775807.1>", false, "BODY[]<9223372036854775807>");
}

static void test_part_depth(void **state)
{
    (void)state;
    char sec[512] = "";
    for (int i = 0; i < 64; i++)
        strcat(sec, i ? ".1" : "1");
    char *atts = mx_asprintf("BODY[%s]", sec);
    struct imap_fetch_spec spec;
    const char *err;
    assert_int_equal(fetch(atts, false, &spec, &err), 0);
    assert_int_equal(spec.items[0].section.n_parts, 64);
    imap_fetch_spec_free(&spec);
    free(atts);
    atts = mx_asprintf("BODY[%s.1]", sec);
    assert_int_equal(fetch(atts, false, &spec, &err), -1);
    assert_non_null(strstr(err, "nested too deeply"));
    free(atts);
}

static void test_need_mask_and_seen(void **state)
{
    (void)state;
    struct {
        const char *atts;
        unsigned need;
        bool seen;
    } cases[] = {
        { "FAST", IMAP_FETCH_NEED_FLAGS | IMAP_FETCH_NEED_INTERNALDATE | IMAP_FETCH_NEED_SIZE,
          false },
        { "(ENVELOPE BODYSTRUCTURE)",
          IMAP_FETCH_NEED_ENVELOPE | IMAP_FETCH_NEED_BODYSTRUCTURE, false },
        { "(UID MODSEQ)", IMAP_FETCH_NEED_UID | IMAP_FETCH_NEED_MODSEQ, false },
        { "BODY.PEEK[HEADER]", IMAP_FETCH_NEED_HEADER, false },
        { "BODY[HEADER.FIELDS (FROM)]", IMAP_FETCH_NEED_HEADER, true },
        { "RFC822.HEADER", IMAP_FETCH_NEED_HEADER, false },
        { "BODY.PEEK[1.HEADER]", IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, false },
        { "BODY[TEXT]", IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, true },
        { "RFC822", IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, true },
        { "RFC822.TEXT", IMAP_FETCH_NEED_BODY, true },
        { "BINARY[1]", IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, true },
        { "BINARY.PEEK[1]", IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, false },
        { "BINARY.SIZE[1]", IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct imap_fetch_spec spec;
        const char *err;
        assert_int_equal(fetch(cases[i].atts, false, &spec, &err), 0);
        if (spec.need != cases[i].need || spec.sets_seen != cases[i].seen) {
            print_error("%s: need 0x%x seen %d, want 0x%x %d\n", cases[i].atts, spec.need,
                        spec.sets_seen, cases[i].need, cases[i].seen);
            fail();
        }
        imap_fetch_spec_free(&spec);
    }
}

static void test_modifiers(void **state)
{
    (void)state;
    struct imap_fetch_spec spec;
    const char *err;
    assert_int_equal(fetch("(FLAGS) (CHANGEDSINCE 12345 VANISHED)", true, &spec, &err), 0);
    assert_true(spec.changedsince_given);
    assert_int_equal(spec.changedsince, 12345);
    assert_true(spec.vanished);
    assert_true(spec.need & IMAP_FETCH_NEED_MODSEQ);
    imap_fetch_spec_free(&spec);
    /* CHANGEDSINCE adds MODSEQ to the answer */
    expect_echo("FLAGS (changedsince 9223372036854775807)", false, "FLAGS MODSEQ");
    expect_echo("(FLAGS MODSEQ) (CHANGEDSINCE 1)", true, "FLAGS MODSEQ UID");
    expect_refused("FLAGS (CHANGEDSINCE 9223372036854775808)", false, "invalid CHANGEDSINCE");
    expect_refused("FLAGS (CHANGEDSINCE)", false, "invalid CHANGEDSINCE");
    expect_refused("FLAGS (CHANGEDSINCE x)", false, "invalid CHANGEDSINCE");
    expect_refused("FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", false, "invalid CHANGEDSINCE");
    expect_refused("FLAGS (CHANGEDSINCE 1 VANISHED)", false, "VANISHED needs UID FETCH");
    expect_refused("FLAGS (VANISHED)", true, "VANISHED needs UID FETCH and CHANGEDSINCE");
    expect_refused("FLAGS (CHANGEDSINCE 1 VANISHED VANISHED)", true, "duplicate VANISHED");
    expect_refused("FLAGS (FOO 1)", false, "unknown FETCH modifier");
    expect_refused("FLAGS ()", false, "invalid FETCH modifier list");
    expect_refused("FLAGS CHANGEDSINCE", false, "invalid FETCH modifier list");
    expect_refused("FLAGS (CHANGEDSINCE 1) X", false, "expected FETCH attributes");
    assert_int_equal(imap_fetch_att_parse(NULL, 0, false, &spec, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_macros_and_simple),
        cmocka_unit_test(test_sections_and_echo),
        cmocka_unit_test(test_part_depth),
        cmocka_unit_test(test_need_mask_and_seen),
        cmocka_unit_test(test_modifiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
