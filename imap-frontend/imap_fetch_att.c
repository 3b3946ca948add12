/* imap_fetch_att - FETCH attributes and modifiers; see imap_fetch_att.h. */
#include "imap_fetch_att.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx_alloc.h"

#define NUMBER64_MAX ((uint64_t)INT64_MAX) /* RFC 9051 number64: 63 bits */

/* ---- a small growing string for the echo text ----------------------------- */

struct strbuf {
    char *s;
    size_t len, cap;
};

static void sb_addn(struct strbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap == 0 ? 32 : sb->cap;
        while (cap < sb->len + n + 1)
            cap *= 2;
        sb->s = mx_realloc(sb->s, cap);
        sb->cap = cap;
    }
    memcpy(sb->s + sb->len, s, n);
    sb->len += n;
    sb->s[sb->len] = '\0';
}

static void sb_add(struct strbuf *sb, const char *s)
{
    sb_addn(sb, s, strlen(s));
}

static void sb_add_u64(struct strbuf *sb, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    sb_addn(sb, tmp, (size_t)n);
}

/* ---- numbers -------------------------------------------------------------- */

/* parse_u64 - 1*DIGIT in s[0..len) up to max; -1 on anything else. */
static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int imap_fetch_parse_partial(const char *text, uint64_t *offset, uint64_t *length)
{
    const char *dot = strchr(text, '.');
    if (dot == NULL) {
        /* "<o>": not in the grammar, which wants <o.l>, but Dovecot takes
         * it as "from o to the end", imaptest sends it, and accepting it
         * costs nothing: the response names the same <o> either way */
        *length = NUMBER64_MAX; /* a section is never that long */
        return parse_u64(text, strlen(text), NUMBER64_MAX, offset);
    }
    if (parse_u64(text, (size_t)(dot - text), NUMBER64_MAX, offset) < 0 ||
        parse_u64(dot + 1, strlen(dot + 1), NUMBER64_MAX, length) < 0 || *length == 0)
        return -1;
    return 0;
}

/* ---- items ---------------------------------------------------------------- */

static void section_free(struct imap_fetch_section *s)
{
    free(s->parts);
    for (size_t i = 0; i < s->n_fields; i++)
        free(s->fields[i]);
    free(s->fields);
    memset(s, 0, sizeof(*s));
}

void imap_fetch_spec_free(struct imap_fetch_spec *spec)
{
    for (size_t i = 0; i < spec->n_items; i++) {
        section_free(&spec->items[i].section);
        free(spec->items[i].echo);
    }
    free(spec->items);
    memset(spec, 0, sizeof(*spec));
}

static bool arg_is(const struct imap_arg *a, const char *name)
{
    return a->type == IMAP_ARG_ATOM && a->len == strlen(name) &&
           strncasecmp(a->str, name, a->len) == 0;
}

/* RFC 5322 field-name: printable US-ASCII except ':'. */
static bool valid_field_name(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == ':')
            return false;
    }
    return true;
}

/* echo_astring - a header field name as an atom when it is one, else as a
 * quoted string (the client may have sent it quoted or as a literal). */
static void echo_astring(struct strbuf *sb, const char *s)
{
    if (strpbrk(s, "(){%*\"\\]") == NULL) {
        sb_add(sb, s);
        return;
    }
    sb_add(sb, "\"");
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            sb_add(sb, "\\");
        sb_addn(sb, s, 1);
    }
    sb_add(sb, "\"");
}

static const char *const section_keyword[] = {
    [IMAP_SECTION_ALL] = "",
    [IMAP_SECTION_HEADER] = "HEADER",
    [IMAP_SECTION_HEADER_FIELDS] = "HEADER.FIELDS",
    [IMAP_SECTION_HEADER_FIELDS_NOT] = "HEADER.FIELDS.NOT",
    [IMAP_SECTION_TEXT] = "TEXT",
    [IMAP_SECTION_MIME] = "MIME",
};

/* parse_section - the inside of "[...]" as the parser left it: nothing, one
 * atom ("1.2.HEADER"), or an atom and a header list. binary: BINARY[...]
 * sections are part numbers only (RFC 3516 section-binary). */
static int parse_section(const struct imap_arg *sec, size_t n_sec, bool binary,
                         struct imap_fetch_section *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    if (n_sec == 0)
        return 0;
    if (sec[0].type != IMAP_ARG_ATOM || n_sec > 2) {
        *err = "invalid section";
        return -1;
    }
    const char *s = sec[0].str;
    size_t len = sec[0].len, i = 0;
    out->parts = mx_reallocarray(NULL, IMAP_FETCH_MAX_PART_DEPTH, sizeof(*out->parts));
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        uint64_t v;
        if (s[start] == '0' || parse_u64(s + start, i - start, UINT32_MAX, &v) < 0) {
            *err = "invalid part number in section";
            return -1;
        }
        if (out->n_parts == IMAP_FETCH_MAX_PART_DEPTH) {
            *err = "section part numbers nested too deeply";
            return -1;
        }
        out->parts[out->n_parts++] = (uint32_t)v;
        if (i == len)
            break;
        if (s[i] != '.' || i + 1 == len) {
            *err = "invalid section";
            return -1;
        }
        i++;
    }
    const char *kw = s + i;
    size_t kw_len = len - i;
    if (kw_len == 0) {
        out->kind = IMAP_SECTION_ALL;
    } else if (binary) {
        *err = "BINARY sections take part numbers only";
        return -1;
    } else {
        out->kind = IMAP_SECTION_ALL;
        for (size_t k = IMAP_SECTION_HEADER; k <= IMAP_SECTION_MIME; k++) {
            if (strlen(section_keyword[k]) == kw_len &&
                strncasecmp(kw, section_keyword[k], kw_len) == 0)
                out->kind = (enum imap_section_kind)k;
        }
        if (out->kind == IMAP_SECTION_ALL) {
            *err = "unknown section keyword";
            return -1;
        }
        if (out->kind == IMAP_SECTION_MIME && out->n_parts == 0) {
            *err = "MIME section needs a part number";
            return -1;
        }
    }
    bool wants_list = out->kind == IMAP_SECTION_HEADER_FIELDS ||
                      out->kind == IMAP_SECTION_HEADER_FIELDS_NOT;
    if (!wants_list) {
        if (n_sec != 1) {
            *err = "unexpected argument in section";
            return -1;
        }
        return 0;
    }
    if (n_sec != 2 || sec[1].type != IMAP_ARG_LIST || sec[1].n_list == 0) {
        *err = "HEADER.FIELDS needs a list of header field names";
        return -1;
    }
    out->fields = mx_reallocarray(NULL, sec[1].n_list, sizeof(*out->fields));
    for (size_t k = 0; k < sec[1].n_list; k++) {
        const struct imap_arg *f = &sec[1].list[k];
        /* NIL is an atom here: a header called "NIL" is legal. */
        if (!(imap_arg_is_string(f) || f->type == IMAP_ARG_NIL) ||
            !valid_field_name(f->str, f->len)) {
            *err = "invalid header field name";
            return -1;
        }
        out->fields[out->n_fields++] = mx_strndup(f->str, f->len);
    }
    return 0;
}

static void build_echo(struct imap_fetch_item *it, const char *base)
{
    struct strbuf sb = { 0 };
    sb_add(&sb, base);
    sb_add(&sb, "[");
    for (size_t i = 0; i < it->section.n_parts; i++) {
        if (i > 0)
            sb_add(&sb, ".");
        sb_add_u64(&sb, it->section.parts[i]);
    }
    if (it->section.kind != IMAP_SECTION_ALL) {
        if (it->section.n_parts > 0)
            sb_add(&sb, ".");
        sb_add(&sb, section_keyword[it->section.kind]);
    }
    if (it->section.n_fields > 0) {
        sb_add(&sb, " (");
        for (size_t i = 0; i < it->section.n_fields; i++) {
            if (i > 0)
                sb_add(&sb, " ");
            echo_astring(&sb, it->section.fields[i]);
        }
        sb_add(&sb, ")");
    }
    sb_add(&sb, "]");
    if (it->has_partial) {
        sb_add(&sb, "<");
        sb_add_u64(&sb, it->partial_offset);
        sb_add(&sb, ">");
    }
    it->echo = sb.s;
}

struct simple_att {
    const char *name;
    enum imap_fetch_kind kind;
    unsigned need;
    bool sets_seen;
};

static const struct simple_att simple_atts[] = {
    { "FLAGS", IMAP_FETCH_FLAGS, IMAP_FETCH_NEED_FLAGS, false },
    { "INTERNALDATE", IMAP_FETCH_INTERNALDATE, IMAP_FETCH_NEED_INTERNALDATE, false },
    { "RFC822", IMAP_FETCH_RFC822, IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY, true },
    { "RFC822.HEADER", IMAP_FETCH_RFC822_HEADER, IMAP_FETCH_NEED_HEADER, false },
    { "RFC822.SIZE", IMAP_FETCH_RFC822_SIZE, IMAP_FETCH_NEED_SIZE, false },
    { "RFC822.TEXT", IMAP_FETCH_RFC822_TEXT, IMAP_FETCH_NEED_BODY, true },
    { "ENVELOPE", IMAP_FETCH_ENVELOPE, IMAP_FETCH_NEED_ENVELOPE, false },
    { "BODY", IMAP_FETCH_BODY, IMAP_FETCH_NEED_BODYSTRUCTURE, false },
    { "BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE, IMAP_FETCH_NEED_BODYSTRUCTURE, false },
    { "UID", IMAP_FETCH_UID, IMAP_FETCH_NEED_UID, false },
    { "MODSEQ", IMAP_FETCH_MODSEQ, IMAP_FETCH_NEED_MODSEQ, false },
};

static const struct simple_att *find_simple(enum imap_fetch_kind kind)
{
    for (size_t i = 0; i < sizeof(simple_atts) / sizeof(simple_atts[0]); i++) {
        if (simple_atts[i].kind == kind)
            return &simple_atts[i];
    }
    return NULL;
}

static struct imap_fetch_item *spec_new_item(struct imap_fetch_spec *spec)
{
    spec->items = mx_reallocarray(spec->items, spec->n_items + 1, sizeof(*spec->items));
    struct imap_fetch_item *it = &spec->items[spec->n_items++];
    memset(it, 0, sizeof(*it));
    return it;
}

/* add_simple - a data item without section; repeats are answered once. */
static void add_simple(struct imap_fetch_spec *spec, const struct simple_att *att)
{
    for (size_t i = 0; i < spec->n_items; i++) {
        if (spec->items[i].kind == att->kind)
            return;
    }
    struct imap_fetch_item *it = spec_new_item(spec);
    it->kind = att->kind;
    it->echo = mx_strdup(att->name);
    spec->need |= att->need;
    spec->sets_seen |= att->sets_seen;
}

static int parse_att(const struct imap_arg *a, struct imap_fetch_spec *spec, const char **err)
{
    if (a->type != IMAP_ARG_ATOM) {
        *err = "invalid FETCH attribute";
        return -1;
    }
    if (spec->n_items >= IMAP_FETCH_MAX_ITEMS) {
        *err = "too many FETCH attributes";
        return -1;
    }
    if (!a->has_section) {
        for (size_t i = 0; i < sizeof(simple_atts) / sizeof(simple_atts[0]); i++) {
            if (arg_is(a, simple_atts[i].name)) {
                add_simple(spec, &simple_atts[i]);
                return 0;
            }
        }
        *err = "unknown FETCH attribute";
        return -1;
    }

    enum imap_fetch_kind kind;
    bool peek = false;
    const char *base;
    if (arg_is(a, "BODY") || arg_is(a, "BODY.PEEK")) {
        kind = IMAP_FETCH_BODY_SECTION;
        peek = arg_is(a, "BODY.PEEK");
        base = "BODY";
    } else if (arg_is(a, "BINARY") || arg_is(a, "BINARY.PEEK")) {
        kind = IMAP_FETCH_BINARY;
        peek = arg_is(a, "BINARY.PEEK");
        base = "BINARY";
    } else if (arg_is(a, "BINARY.SIZE")) {
        kind = IMAP_FETCH_BINARY_SIZE;
        peek = true; /* a size never sets \Seen */
        base = "BINARY.SIZE";
    } else {
        *err = "unknown FETCH attribute";
        return -1;
    }
    struct imap_fetch_item *it = spec_new_item(spec);
    it->kind = kind;
    it->peek = peek;
    if (parse_section(a->section, a->n_section, kind != IMAP_FETCH_BODY_SECTION, &it->section,
                      err) < 0)
        return -1;
    if (a->partial != NULL) {
        if (kind == IMAP_FETCH_BINARY_SIZE) {
            *err = "BINARY.SIZE takes no partial";
            return -1;
        }
        if (imap_fetch_parse_partial(a->partial, &it->partial_offset, &it->partial_length) < 0) {
            *err = "invalid partial <offset.length>";
            return -1;
        }
        it->has_partial = true;
    }
    build_echo(it, base);
    if (kind == IMAP_FETCH_BODY_SECTION && it->section.n_parts == 0 &&
        (it->section.kind == IMAP_SECTION_HEADER ||
         it->section.kind == IMAP_SECTION_HEADER_FIELDS ||
         it->section.kind == IMAP_SECTION_HEADER_FIELDS_NOT))
        spec->need |= IMAP_FETCH_NEED_HEADER;
    else
        spec->need |= IMAP_FETCH_NEED_HEADER | IMAP_FETCH_NEED_BODY;
    if (!peek)
        spec->sets_seen = true;
    return 0;
}

static int parse_modifiers(const struct imap_arg *a, bool uid_fetch, struct imap_fetch_spec *spec,
                           const char **err)
{
    if (a->type != IMAP_ARG_LIST || a->n_list == 0) {
        *err = "invalid FETCH modifier list";
        return -1;
    }
    for (size_t i = 0; i < a->n_list; i++) {
        const struct imap_arg *m = &a->list[i];
        if (arg_is(m, "CHANGEDSINCE")) {
            /* RFC 7162 says mod-sequence-value is positive; 0 is accepted
             * as "every change", as clients with an empty cache send it. */
            if (spec->changedsince_given || i + 1 >= a->n_list ||
                a->list[i + 1].type != IMAP_ARG_ATOM ||
                parse_u64(a->list[i + 1].str, a->list[i + 1].len, NUMBER64_MAX,
                          &spec->changedsince) < 0) {
                *err = "invalid CHANGEDSINCE modifier";
                return -1;
            }
            spec->changedsince_given = true;
            i++;
        } else if (arg_is(m, "VANISHED")) {
            if (spec->vanished) {
                *err = "duplicate VANISHED modifier";
                return -1;
            }
            spec->vanished = true;
        } else {
            *err = "unknown FETCH modifier";
            return -1;
        }
    }
    /* RFC 7162 3.2.6: VANISHED only in UID FETCH, and with CHANGEDSINCE. */
    if (spec->vanished && (!uid_fetch || !spec->changedsince_given)) {
        *err = "VANISHED needs UID FETCH and CHANGEDSINCE";
        return -1;
    }
    return 0;
}

int imap_fetch_att_parse(const struct imap_arg *args, size_t n_args, bool uid_fetch,
                         struct imap_fetch_spec *spec, const char **err)
{
    memset(spec, 0, sizeof(*spec));
    const char *e = NULL;
    if (n_args < 1 || n_args > 2) {
        e = "expected FETCH attributes";
        goto fail;
    }
    const struct imap_arg *a = &args[0];
    if (a->type == IMAP_ARG_LIST) {
        if (a->n_list == 0) {
            e = "empty FETCH attribute list";
            goto fail;
        }
        for (size_t i = 0; i < a->n_list; i++) {
            if (parse_att(&a->list[i], spec, &e) < 0)
                goto fail;
        }
    } else if (arg_is(a, "ALL") || arg_is(a, "FAST") || arg_is(a, "FULL")) {
        /* Macros (RFC 9051 6.4.5), only allowed on their own. */
        static const enum imap_fetch_kind fast[] = { IMAP_FETCH_FLAGS, IMAP_FETCH_INTERNALDATE,
                                                     IMAP_FETCH_RFC822_SIZE };
        for (size_t i = 0; i < 3; i++)
            add_simple(spec, find_simple(fast[i]));
        if (!arg_is(a, "FAST"))
            add_simple(spec, find_simple(IMAP_FETCH_ENVELOPE));
        if (arg_is(a, "FULL"))
            add_simple(spec, find_simple(IMAP_FETCH_BODY));
    } else if (parse_att(a, spec, &e) < 0) {
        goto fail;
    }
    if (n_args == 2 && parse_modifiers(&args[1], uid_fetch, spec, &e) < 0)
        goto fail;
    /* UID FETCH always returns UID; CHANGEDSINCE implies MODSEQ (RFC 7162
     * 3.1.4.1). */
    if (uid_fetch)
        add_simple(spec, find_simple(IMAP_FETCH_UID));
    if (spec->changedsince_given)
        add_simple(spec, find_simple(IMAP_FETCH_MODSEQ));
    return 0;
fail:
    imap_fetch_spec_free(spec);
    if (err != NULL)
        *err = e;
    return -1;
}
