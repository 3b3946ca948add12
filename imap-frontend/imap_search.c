/* imap_search - SEARCH program parser and evaluator (see imap_search.h). */
#include "imap_search.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_charset.h"
#include "mx_alloc.h"

#define MS_PER_DAY 86400000ull

enum key_type {
    KEY_ALL = 1,
    KEY_AND,        /* children: all must match (a parenthesised list) */
    KEY_OR,         /* two children */
    KEY_NOT,        /* one child */
    KEY_FLAGS_SET,  /* every bit of mask set */
    KEY_FLAGS_UNSET,/* every bit of mask clear */
    KEY_NEW,        /* Recent and not Seen */
    KEY_KEYWORD,
    KEY_UNKEYWORD,
    KEY_BEFORE,
    KEY_ON,
    KEY_SINCE,
    KEY_SENTBEFORE,
    KEY_SENTON,
    KEY_SENTSINCE,
    KEY_LARGER,
    KEY_SMALLER,
    KEY_HEADER,     /* field: name (HEADER/FROM/TO/CC/BCC/SUBJECT) */
    KEY_BODY,
    KEY_TEXT,
    KEY_SEQSET,
    KEY_UIDSET,
    KEY_SEARCHRES,  /* "$" (as seq-set or UID set: same messages) */
    KEY_MODSEQ,
};

struct range {
    uint32_t lo, hi;
};

/* A sequence set with "*" resolved at match time: explicit ranges sorted and
 * merged (binary search), and the star ranges "n:*" / "*" folded into the
 * smallest n, since message numbers never exceed "*". */
struct seqset {
    struct range *ranges;
    size_t count;
    bool has_star;
    uint32_t star_low; /* smallest n of "n:*" ("*" alone: UINT32_MAX) */
};

struct search_key {
    enum key_type type;
    enum imap_search_need need;
    struct search_key **children;
    size_t n_children;
    uint32_t mask;
    char *name;        /* keyword / header field name */
    char *needle;      /* folded search string */
    size_t needle_len;
    bool envelope_address; /* FROM/TO/CC/BCC: the ENVELOPE addresses count too */
    int64_t days;
    uint64_t number;
    struct seqset set;
};

struct imap_search_program {
    struct search_key *root;
    enum imap_search_need need;
    bool has_return, uses_modseq, uses_searchres;
    unsigned return_options;
    size_t max_decode_bytes;
};

struct parser {
    const struct imap_search_limits *limits;
    struct imap_search_error *error;
    struct imap_search_program *program;
    const char *charset; /* NULL: UTF-8 / US-ASCII */
    unsigned n_keys;
    bool failed;
};

void imap_search_limits_default(struct imap_search_limits *limits)
{
    limits->max_depth = 64;
    limits->max_keys = 10000;
    limits->max_decode_bytes = 16u * 1024 * 1024;
}

static void fail(struct parser *p, enum imap_search_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct parser *p, enum imap_search_error_kind kind, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    p->error->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error->text, sizeof(p->error->text), fmt, ap);
    va_end(ap);
}

static void key_free(struct search_key *key)
{
    if (key == NULL)
        return;
    for (size_t i = 0; i < key->n_children; i++)
        key_free(key->children[i]);
    free(key->children);
    free(key->name);
    free(key->needle);
    free(key->set.ranges);
    free(key);
}

void imap_search_free(struct imap_search_program *program)
{
    if (program == NULL)
        return;
    key_free(program->root);
    free(program);
}

static struct search_key *key_new(struct parser *p, enum key_type type, enum imap_search_need need)
{
    struct search_key *key = mx_calloc(1, sizeof(*key));
    key->type = type;
    key->need = need;
    p->n_keys++;
    return key;
}

static void key_add_child(struct search_key *parent, struct search_key *child)
{
    parent->children = mx_reallocarray(parent->children, parent->n_children + 1,
                                       sizeof(*parent->children));
    parent->children[parent->n_children++] = child;
    if (child->need > parent->need)
        parent->need = child->need;
}

/* printable copy of an argument for error texts (bounded, no CR/LF) */
static void arg_excerpt(const struct imap_arg *arg, char *buf, size_t size)
{
    size_t n = 0;
    if (arg->type == IMAP_ARG_LIST) {
        snprintf(buf, size, "(...)");
        return;
    }
    for (size_t i = 0; i < arg->len && n + 4 < size && i < 40; i++) {
        unsigned char c = (unsigned char)arg->str[i];
        buf[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (arg->len > 40 && n + 4 < size) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

static bool arg_is_atom(const struct imap_arg *arg, const char *word)
{
    return arg->type == IMAP_ARG_ATOM && !arg->has_section && arg->len == strlen(word) &&
           strncasecmp(arg->str, word, arg->len) == 0;
}

/* --- numbers, dates, sequence sets -------------------------------------- */

static bool parse_u64(const char *s, size_t len, uint64_t max, uint64_t *value_r)
{
    uint64_t v = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (max - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *value_r = v;
    return true;
}

static const char *const month_names[12] = {"jan", "feb", "mar", "apr", "may", "jun",
                                             "jul", "aug", "sep", "oct", "nov", "dec"};

/* RFC 3501 date-text "1-Feb-1994" (the quotes, if any, are gone already). */
static bool parse_search_date(const char *s, size_t len, int64_t *days_r)
{
    size_t i = 0, day_digits = 0;
    unsigned day = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9' && day_digits < 2) {
        day = day * 10 + (unsigned)(s[i] - '0');
        i++;
        day_digits++;
    }
    if (day_digits == 0 || i + 1 + 3 + 1 + 4 != len || s[i] != '-' || s[i + 4] != '-')
        return false;
    unsigned month = 0;
    for (unsigned m = 0; m < 12; m++) {
        if (strncasecmp(s + i + 1, month_names[m], 3) == 0)
            month = m + 1;
    }
    uint64_t year;
    if (month == 0 || !parse_u64(s + i + 5, 4, 9999, &year))
        return false;
    static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day < 1 || day > mdays[month - 1] || (month == 2 && day == 29 && !leap))
        return false;
    *days_r = imap_days_from_civil((int64_t)year, month, day);
    return true;
}

static int range_cmp(const void *a, const void *b)
{
    const struct range *ra = a, *rb = b;
    return ra->lo < rb->lo ? -1 : ra->lo > rb->lo;
}

/* sequence-set per RFC 9051: (seq-number / seq-range) *("," ...), with
 * seq-number = nz-number / "*". false on syntax error. */
static bool parse_seqset(const char *s, size_t len, struct seqset *set)
{
    size_t i = 0, cap = 0;
    memset(set, 0, sizeof(*set));
    set->star_low = UINT32_MAX;
    while (i < len) {
        uint32_t values[2];
        bool stars[2] = {false, false};
        unsigned n = 0;
        for (;;) {
            if (i < len && s[i] == '*') {
                stars[n] = true;
                values[n] = 0;
                i++;
            } else {
                size_t start = i;
                while (i < len && s[i] >= '0' && s[i] <= '9')
                    i++;
                uint64_t v;
                if (!parse_u64(s + start, i - start, UINT32_MAX, &v) || v == 0)
                    goto bad;
                values[n] = (uint32_t)v;
            }
            n++;
            if (n == 1 && i < len && s[i] == ':') {
                i++;
                continue;
            }
            break;
        }
        if (i < len) {
            if (s[i] != ',' || i + 1 == len)
                goto bad;
            i++;
        }
        if (n == 1) {
            values[1] = values[0];
            stars[1] = stars[0];
        }
        if (stars[0] || stars[1]) {
            /* "n:*" / "*:n": n..max; "*" or "*:*": max alone */
            uint32_t low = stars[0] && stars[1] ? UINT32_MAX : (stars[0] ? values[1] : values[0]);
            set->has_star = true;
            if (low < set->star_low)
                set->star_low = low;
            continue;
        }
        if (set->count == cap) {
            cap = cap == 0 ? 8 : cap * 2;
            set->ranges = mx_reallocarray(set->ranges, cap, sizeof(*set->ranges));
        }
        set->ranges[set->count].lo = values[0] < values[1] ? values[0] : values[1];
        set->ranges[set->count].hi = values[0] < values[1] ? values[1] : values[0];
        set->count++;
    }
    if (set->count == 0 && !set->has_star)
        goto bad;
    if (set->count > 1) {
        qsort(set->ranges, set->count, sizeof(*set->ranges), range_cmp);
        size_t out = 0;
        for (size_t k = 1; k < set->count; k++) {
            struct range *last = &set->ranges[out];
            if (set->ranges[k].lo <= last->hi || set->ranges[k].lo - 1 == last->hi) {
                if (set->ranges[k].hi > last->hi)
                    last->hi = set->ranges[k].hi;
            } else {
                set->ranges[++out] = set->ranges[k];
            }
        }
        set->count = out + 1;
    }
    return true;
bad:
    free(set->ranges);
    memset(set, 0, sizeof(*set));
    return false;
}

static bool seqset_contains(const struct seqset *set, uint32_t number, uint32_t max)
{
    if (set->has_star && max != 0) {
        uint32_t low = set->star_low < max ? set->star_low : max;
        if (number >= low && number <= max)
            return true;
    }
    size_t lo = 0, hi = set->count;
    while (lo < hi) { /* first range with lo > number */
        size_t mid = lo + (hi - lo) / 2;
        if (set->ranges[mid].lo <= number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && set->ranges[lo - 1].hi >= number;
}

static bool uid_in_list(const uint32_t *uids, size_t count, uint32_t uid)
{
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (uids[mid] == uid)
            return true;
        if (uids[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* --- key parsing ---------------------------------------------------------- */

struct cursor {
    const struct imap_arg *args;
    size_t n, i;
};

static const struct imap_arg *next_arg(struct parser *p, struct cursor *c, const char *key,
                                       const char *what)
{
    if (c->i >= c->n) {
        fail(p, IMAP_SEARCH_ERR_BAD, "missing %s after search key %s", what, key);
        return NULL;
    }
    return &c->args[c->i++];
}

/* astring: an atom NIL is the string "NIL" here (SUBJECT NIL) */
static bool arg_is_astring(const struct imap_arg *arg)
{
    return (imap_arg_is_string(arg) && !arg->has_section) ||
           (arg->type == IMAP_ARG_NIL && arg->str != NULL);
}

static const struct imap_arg *next_string(struct parser *p, struct cursor *c, const char *key,
                                          const char *what)
{
    const struct imap_arg *arg = next_arg(p, c, key, what);
    if (arg != NULL && !arg_is_astring(arg)) {
        fail(p, IMAP_SEARCH_ERR_BAD, "%s of search key %s must be a string", what, key);
        return NULL;
    }
    return arg;
}

/* The folded UTF-8 needle for a search string, converted from the CHARSET. */
static bool make_needle(struct parser *p, struct search_key *key, const struct imap_arg *arg,
                        const char *keyword)
{
    char *utf8 = NULL;
    size_t utf8_len = 0;
    if (p->charset == NULL) {
        /* No CHARSET means US-ASCII, but clients send UTF-8 anyway: take
         * the bytes as UTF-8 (fold() repairs anything invalid). */
        utf8 = mx_memdup(arg->str, arg->len);
        utf8_len = arg->len;
    } else {
        enum imap_charset_result r = imap_charset_to_utf8(p->charset, arg->str, arg->len, &utf8,
                                                          &utf8_len);
        if (r == IMAP_CHARSET_UNKNOWN) {
            fail(p, IMAP_SEARCH_ERR_BADCHARSET, "unsupported charset");
            return false;
        }
        if (r == IMAP_CHARSET_INVALID) {
            fail(p, IMAP_SEARCH_ERR_BAD, "search string of %s is not valid %s", keyword,
                 p->charset);
            return false;
        }
    }
    key->needle = imap_fold(utf8, utf8_len, &key->needle_len);
    free(utf8);
    return true;
}

struct key_word {
    const char *word;
    enum key_type type;
    uint32_t mask;
};

static const struct key_word flag_keys[] = {
    {"ANSWERED", KEY_FLAGS_SET, IMAP_SEARCH_FLAG_ANSWERED},
    {"DELETED", KEY_FLAGS_SET, IMAP_SEARCH_FLAG_DELETED},
    {"DRAFT", KEY_FLAGS_SET, IMAP_SEARCH_FLAG_DRAFT},
    {"FLAGGED", KEY_FLAGS_SET, IMAP_SEARCH_FLAG_FLAGGED},
    {"RECENT", KEY_FLAGS_SET, IMAP_SEARCH_FLAG_RECENT},
    {"SEEN", KEY_FLAGS_SET, IMAP_SEARCH_FLAG_SEEN},
    {"OLD", KEY_FLAGS_UNSET, IMAP_SEARCH_FLAG_RECENT},
    {"UNANSWERED", KEY_FLAGS_UNSET, IMAP_SEARCH_FLAG_ANSWERED},
    {"UNDELETED", KEY_FLAGS_UNSET, IMAP_SEARCH_FLAG_DELETED},
    {"UNDRAFT", KEY_FLAGS_UNSET, IMAP_SEARCH_FLAG_DRAFT},
    {"UNFLAGGED", KEY_FLAGS_UNSET, IMAP_SEARCH_FLAG_FLAGGED},
    {"UNSEEN", KEY_FLAGS_UNSET, IMAP_SEARCH_FLAG_SEEN},
};

static const struct key_word date_keys[] = {
    {"BEFORE", KEY_BEFORE, 0},         {"ON", KEY_ON, 0},
    {"SINCE", KEY_SINCE, 0},           {"SENTBEFORE", KEY_SENTBEFORE, 0},
    {"SENTON", KEY_SENTON, 0},         {"SENTSINCE", KEY_SENTSINCE, 0},
};

static const char *const address_headers[] = {"BCC", "CC", "FROM", "SUBJECT", "TO"};

/* \Seen etc. given to KEYWORD / UNKEYWORD: Dovecot accepts them; map to bits */
static uint32_t system_flag_bit(const char *s, size_t len)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } flags[] = {
        {"\\Seen", IMAP_SEARCH_FLAG_SEEN},       {"\\Answered", IMAP_SEARCH_FLAG_ANSWERED},
        {"\\Flagged", IMAP_SEARCH_FLAG_FLAGGED}, {"\\Deleted", IMAP_SEARCH_FLAG_DELETED},
        {"\\Draft", IMAP_SEARCH_FLAG_DRAFT},     {"\\Recent", IMAP_SEARCH_FLAG_RECENT},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (len == strlen(flags[i].name) && strncasecmp(s, flags[i].name, len) == 0)
            return flags[i].bit;
    }
    return 0;
}

static struct search_key *parse_key(struct parser *p, struct cursor *c, unsigned depth);

/* keys until the cursor's end, ANDed (a parenthesised list or the top) */
static struct search_key *parse_key_list(struct parser *p, struct cursor *c, unsigned depth)
{
    if (c->i >= c->n) {
        fail(p, IMAP_SEARCH_ERR_BAD, "empty search key list");
        return NULL;
    }
    struct search_key *and = key_new(p, KEY_AND, IMAP_SEARCH_NEED_INDEX);
    while (c->i < c->n) {
        struct search_key *child = parse_key(p, c, depth);
        if (child == NULL) {
            key_free(and);
            return NULL;
        }
        key_add_child(and, child);
    }
    return and;
}

static struct search_key *parse_key(struct parser *p, struct cursor *c, unsigned depth)
{
    if (depth >= p->limits->max_depth) {
        fail(p, IMAP_SEARCH_ERR_BAD, "search nested too deeply (limit %u)", p->limits->max_depth);
        return NULL;
    }
    if (p->n_keys >= p->limits->max_keys) {
        fail(p, IMAP_SEARCH_ERR_BAD, "too many search keys (limit %u)", p->limits->max_keys);
        return NULL;
    }
    const struct imap_arg *arg = &c->args[c->i++];
    if (arg->type == IMAP_ARG_LIST) {
        struct cursor inner = {arg->list, arg->n_list, 0};
        return parse_key_list(p, &inner, depth + 1);
    }
    char excerpt[64];
    arg_excerpt(arg, excerpt, sizeof(excerpt));
    if (arg->type != IMAP_ARG_ATOM || arg->has_section) {
        fail(p, IMAP_SEARCH_ERR_BAD, "unknown search key \"%s\"", excerpt);
        return NULL;
    }
    /* atom: a search key word or a sequence set */
    const char *w = arg->str;
    size_t wlen = arg->len;
    if (wlen == 1 && w[0] == '$') {
        p->program->uses_searchres = true;
        return key_new(p, KEY_SEARCHRES, IMAP_SEARCH_NEED_INDEX);
    }
    if (wlen > 0 && ((w[0] >= '0' && w[0] <= '9') || w[0] == '*')) {
        struct search_key *key = key_new(p, KEY_SEQSET, IMAP_SEARCH_NEED_INDEX);
        if (!parse_seqset(w, wlen, &key->set)) {
            fail(p, IMAP_SEARCH_ERR_BAD, "invalid sequence set \"%s\"", excerpt);
            key_free(key);
            return NULL;
        }
        return key;
    }
    if (arg_is_atom(arg, "ALL"))
        return key_new(p, KEY_ALL, IMAP_SEARCH_NEED_INDEX);
    if (arg_is_atom(arg, "NEW"))
        return key_new(p, KEY_NEW, IMAP_SEARCH_NEED_INDEX);
    for (size_t k = 0; k < sizeof(flag_keys) / sizeof(flag_keys[0]); k++) {
        if (arg_is_atom(arg, flag_keys[k].word)) {
            struct search_key *key = key_new(p, flag_keys[k].type, IMAP_SEARCH_NEED_INDEX);
            key->mask = flag_keys[k].mask;
            return key;
        }
    }
    if (arg_is_atom(arg, "NOT")) {
        if (c->i >= c->n) {
            fail(p, IMAP_SEARCH_ERR_BAD, "missing search key after NOT");
            return NULL;
        }
        struct search_key *child = parse_key(p, c, depth + 1);
        if (child == NULL)
            return NULL;
        struct search_key *key = key_new(p, KEY_NOT, IMAP_SEARCH_NEED_INDEX);
        key_add_child(key, child);
        return key;
    }
    if (arg_is_atom(arg, "OR")) {
        struct search_key *key = key_new(p, KEY_OR, IMAP_SEARCH_NEED_INDEX);
        for (int k = 0; k < 2; k++) {
            if (c->i >= c->n) {
                fail(p, IMAP_SEARCH_ERR_BAD, "missing search key after OR");
                key_free(key);
                return NULL;
            }
            struct search_key *child = parse_key(p, c, depth + 1);
            if (child == NULL) {
                key_free(key);
                return NULL;
            }
            key_add_child(key, child);
        }
        return key;
    }
    for (size_t k = 0; k < sizeof(date_keys) / sizeof(date_keys[0]); k++) {
        if (!arg_is_atom(arg, date_keys[k].word))
            continue;
        const struct imap_arg *date = next_string(p, c, date_keys[k].word, "date");
        if (date == NULL)
            return NULL;
        enum key_type type = date_keys[k].type;
        bool sent = type == KEY_SENTBEFORE || type == KEY_SENTON || type == KEY_SENTSINCE;
        struct search_key *key =
            key_new(p, type, sent ? IMAP_SEARCH_NEED_HEADER : IMAP_SEARCH_NEED_INDEX);
        if (!parse_search_date(date->str, date->len, &key->days)) {
            arg_excerpt(date, excerpt, sizeof(excerpt));
            fail(p, IMAP_SEARCH_ERR_BAD, "invalid date \"%s\" for %s (expected e.g. 1-Feb-1994)",
                 excerpt, date_keys[k].word);
            key_free(key);
            return NULL;
        }
        return key;
    }
    if (arg_is_atom(arg, "LARGER") || arg_is_atom(arg, "SMALLER")) {
        bool larger = arg_is_atom(arg, "LARGER");
        const char *kw = larger ? "LARGER" : "SMALLER";
        const struct imap_arg *num = next_arg(p, c, kw, "number");
        if (num == NULL)
            return NULL;
        struct search_key *key =
            key_new(p, larger ? KEY_LARGER : KEY_SMALLER, IMAP_SEARCH_NEED_INDEX);
        if (num->type != IMAP_ARG_ATOM || !parse_u64(num->str, num->len, INT64_MAX, &key->number)) {
            fail(p, IMAP_SEARCH_ERR_BAD, "%s needs a number", kw);
            key_free(key);
            return NULL;
        }
        return key;
    }
    if (arg_is_atom(arg, "KEYWORD") || arg_is_atom(arg, "UNKEYWORD")) {
        bool un = arg_is_atom(arg, "UNKEYWORD");
        const char *kw = un ? "UNKEYWORD" : "KEYWORD";
        const struct imap_arg *flag = next_arg(p, c, kw, "flag");
        if (flag == NULL)
            return NULL;
        if (flag->type != IMAP_ARG_ATOM || flag->len == 0 || flag->has_section) {
            fail(p, IMAP_SEARCH_ERR_BAD, "%s needs a flag keyword atom", kw);
            return NULL;
        }
        uint32_t bit = flag->str[0] == '\\' ? system_flag_bit(flag->str, flag->len) : 0;
        if (flag->str[0] == '\\' && bit == 0) {
            /* an unknown system flag is never set on any message */
            struct search_key *none = key_new(p, KEY_NOT, IMAP_SEARCH_NEED_INDEX);
            if (un)
                none->type = KEY_ALL;
            else
                key_add_child(none, key_new(p, KEY_ALL, IMAP_SEARCH_NEED_INDEX));
            return none;
        }
        if (bit != 0) {
            struct search_key *key =
                key_new(p, un ? KEY_FLAGS_UNSET : KEY_FLAGS_SET, IMAP_SEARCH_NEED_INDEX);
            key->mask = bit;
            return key;
        }
        struct search_key *key = key_new(p, un ? KEY_UNKEYWORD : KEY_KEYWORD, IMAP_SEARCH_NEED_INDEX);
        key->name = mx_strndup(flag->str, flag->len);
        return key;
    }
    if (arg_is_atom(arg, "UID")) {
        const struct imap_arg *set = next_arg(p, c, "UID", "sequence set");
        if (set == NULL)
            return NULL;
        if (set->type == IMAP_ARG_ATOM && set->len == 1 && set->str[0] == '$') {
            p->program->uses_searchres = true;
            return key_new(p, KEY_SEARCHRES, IMAP_SEARCH_NEED_INDEX);
        }
        struct search_key *key = key_new(p, KEY_UIDSET, IMAP_SEARCH_NEED_INDEX);
        if (set->type != IMAP_ARG_ATOM || !parse_seqset(set->str, set->len, &key->set)) {
            arg_excerpt(set, excerpt, sizeof(excerpt));
            fail(p, IMAP_SEARCH_ERR_BAD, "invalid UID set \"%s\"", excerpt);
            key_free(key);
            return NULL;
        }
        return key;
    }
    if (arg_is_atom(arg, "MODSEQ")) {
        const struct imap_arg *value = next_arg(p, c, "MODSEQ", "mod-sequence");
        if (value == NULL)
            return NULL;
        if (value->type == IMAP_ARG_QUOTED || value->type == IMAP_ARG_LITERAL) {
            /* entry-name entry-type-req: accepted, then ignored (one
             * modseq per message, RFC 7162 3.1.5 allows that) */
            const struct imap_arg *type = next_arg(p, c, "MODSEQ", "entry type");
            if (type == NULL)
                return NULL;
            if (!arg_is_atom(type, "priv") && !arg_is_atom(type, "shared") &&
                !arg_is_atom(type, "all")) {
                fail(p, IMAP_SEARCH_ERR_BAD, "MODSEQ entry type must be priv, shared or all");
                return NULL;
            }
            value = next_arg(p, c, "MODSEQ", "mod-sequence");
            if (value == NULL)
                return NULL;
        }
        struct search_key *key = key_new(p, KEY_MODSEQ, IMAP_SEARCH_NEED_INDEX);
        if (value->type != IMAP_ARG_ATOM ||
            !parse_u64(value->str, value->len, INT64_MAX, &key->number)) {
            fail(p, IMAP_SEARCH_ERR_BAD, "MODSEQ needs a mod-sequence number");
            key_free(key);
            return NULL;
        }
        p->program->uses_modseq = true;
        return key;
    }
    if (arg_is_atom(arg, "HEADER")) {
        const struct imap_arg *field = next_string(p, c, "HEADER", "field name");
        if (field == NULL)
            return NULL;
        const struct imap_arg *value = next_string(p, c, "HEADER", "string");
        if (value == NULL)
            return NULL;
        if (field->len == 0 || memchr(field->str, ':', field->len) != NULL ||
            memchr(field->str, '\0', field->len) != NULL) {
            fail(p, IMAP_SEARCH_ERR_BAD, "invalid header field name for HEADER");
            return NULL;
        }
        struct search_key *key = key_new(p, KEY_HEADER, IMAP_SEARCH_NEED_HEADER);
        key->name = mx_strndup(field->str, field->len);
        if (!make_needle(p, key, value, "HEADER")) {
            key_free(key);
            return NULL;
        }
        return key;
    }
    for (size_t k = 0; k < sizeof(address_headers) / sizeof(address_headers[0]); k++) {
        if (!arg_is_atom(arg, address_headers[k]))
            continue;
        const struct imap_arg *value = next_string(p, c, address_headers[k], "string");
        if (value == NULL)
            return NULL;
        struct search_key *key = key_new(p, KEY_HEADER, IMAP_SEARCH_NEED_HEADER);
        key->name = mx_strdup(address_headers[k]);
        key->envelope_address = strcmp(address_headers[k], "SUBJECT") != 0;
        if (!make_needle(p, key, value, address_headers[k])) {
            key_free(key);
            return NULL;
        }
        return key;
    }
    if (arg_is_atom(arg, "BODY") || arg_is_atom(arg, "TEXT")) {
        bool body = arg_is_atom(arg, "BODY");
        const char *kw = body ? "BODY" : "TEXT";
        const struct imap_arg *value = next_string(p, c, kw, "string");
        if (value == NULL)
            return NULL;
        struct search_key *key = key_new(p, body ? KEY_BODY : KEY_TEXT, IMAP_SEARCH_NEED_BODY);
        if (!make_needle(p, key, value, kw)) {
            key_free(key);
            return NULL;
        }
        return key;
    }
    fail(p, IMAP_SEARCH_ERR_BAD, "unknown search key \"%s\"", excerpt);
    return NULL;
}

/* Evaluate cheap children of an AND first: a flag test that fails saves
 * decoding the body. The order of AND operands does not change the result. */
static void order_by_cost(struct search_key *key)
{
    for (size_t i = 0; i < key->n_children; i++)
        order_by_cost(key->children[i]);
    if (key->type != KEY_AND && key->type != KEY_OR)
        return;
    /* stable insertion sort; lists are short */
    for (size_t i = 1; i < key->n_children; i++) {
        struct search_key *k = key->children[i];
        size_t j = i;
        while (j > 0 && key->children[j - 1]->need > k->need) {
            key->children[j] = key->children[j - 1];
            j--;
        }
        key->children[j] = k;
    }
}

static bool parse_return(struct parser *p, const struct imap_arg *list)
{
    unsigned options = 0;
    for (size_t i = 0; i < list->n_list; i++) {
        const struct imap_arg *opt = &list->list[i];
        if (arg_is_atom(opt, "MIN"))
            options |= IMAP_SEARCH_RETURN_MIN;
        else if (arg_is_atom(opt, "MAX"))
            options |= IMAP_SEARCH_RETURN_MAX;
        else if (arg_is_atom(opt, "ALL"))
            options |= IMAP_SEARCH_RETURN_ALL;
        else if (arg_is_atom(opt, "COUNT"))
            options |= IMAP_SEARCH_RETURN_COUNT;
        else if (arg_is_atom(opt, "SAVE"))
            options |= IMAP_SEARCH_RETURN_SAVE;
        else {
            char excerpt[64];
            arg_excerpt(opt, excerpt, sizeof(excerpt));
            fail(p, IMAP_SEARCH_ERR_BAD, "unknown SEARCH RETURN option \"%s\"", excerpt);
            return false;
        }
    }
    /* RFC 4731: "RETURN ()" is the same as "RETURN (ALL)" */
    p->program->return_options = options == 0 ? IMAP_SEARCH_RETURN_ALL : options;
    p->program->has_return = true;
    return true;
}

/* charset_first: SORT / THREAD syntax, the charset name without the
 * CHARSET word and without RETURN. */
static struct imap_search_program *search_parse(const struct imap_arg *args, size_t n_args,
                                                bool allow_return, bool charset_first,
                                                const struct imap_search_limits *limits,
                                                struct imap_search_error *error_r)
{
    struct imap_search_limits defaults;
    if (limits == NULL) {
        imap_search_limits_default(&defaults);
        limits = &defaults;
    }
    struct imap_search_program *program = mx_calloc(1, sizeof(*program));
    program->max_decode_bytes = limits->max_decode_bytes;
    struct parser p = {.limits = limits, .error = error_r, .program = program};
    memset(error_r, 0, sizeof(*error_r));
    struct cursor c = {args, n_args, 0};
    char *charset = NULL;

    if (!charset_first && c.i < c.n && arg_is_atom(&args[c.i], "RETURN")) {
        if (!allow_return) {
            fail(&p, IMAP_SEARCH_ERR_BAD, "SEARCH RETURN is not supported here");
            goto failed;
        }
        c.i++;
        if (c.i >= c.n || args[c.i].type != IMAP_ARG_LIST) {
            fail(&p, IMAP_SEARCH_ERR_BAD, "RETURN needs a list of options");
            goto failed;
        }
        if (!parse_return(&p, &args[c.i++]))
            goto failed;
    }
    if (charset_first || (c.i < c.n && arg_is_atom(&args[c.i], "CHARSET"))) {
        if (!charset_first)
            c.i++;
        if (c.i >= c.n || !arg_is_astring(&args[c.i]) || args[c.i].len == 0 ||
            memchr(args[c.i].str, '\0', args[c.i].len) != NULL) {
            fail(&p, IMAP_SEARCH_ERR_BAD, "CHARSET needs a charset name");
            goto failed;
        }
        charset = mx_strndup(args[c.i].str, args[c.i].len);
        c.i++;
        if (!imap_charset_is_utf8_compatible(charset)) {
            /* Refuse an unknown charset up front, not only when a string
             * key needs converting: the client must learn either way. */
            char *probe;
            size_t probe_len;
            if (imap_charset_to_utf8(charset, "", 0, &probe, &probe_len) == IMAP_CHARSET_UNKNOWN) {
                fail(&p, IMAP_SEARCH_ERR_BADCHARSET, "unsupported charset");
                goto failed;
            }
            free(probe);
        }
        p.charset = charset;
    }
    if (c.i >= c.n) {
        fail(&p, IMAP_SEARCH_ERR_BAD, "missing search key");
        goto failed;
    }
    program->root = parse_key_list(&p, &c, 0);
    if (program->root == NULL)
        goto failed;
    order_by_cost(program->root);
    program->need = program->root->need;
    free(charset);
    return program;
failed:
    free(charset);
    imap_search_free(program);
    return NULL;
}

struct imap_search_program *imap_search_parse(const struct imap_arg *args, size_t n_args,
                                              bool allow_return,
                                              const struct imap_search_limits *limits,
                                              struct imap_search_error *error_r)
{
    return search_parse(args, n_args, allow_return, false, limits, error_r);
}

struct imap_search_program *imap_search_parse_charset(const struct imap_arg *args, size_t n_args,
                                                      const struct imap_search_limits *limits,
                                                      struct imap_search_error *error_r)
{
    return search_parse(args, n_args, false, true, limits, error_r);
}

size_t imap_search_save_filter(const struct imap_search_program *program, uint32_t *numbers,
                               size_t count)
{
    unsigned opts = program->return_options;
    if (count == 0 || (opts & (IMAP_SEARCH_RETURN_ALL | IMAP_SEARCH_RETURN_COUNT)) != 0 ||
        (opts & (IMAP_SEARCH_RETURN_MIN | IMAP_SEARCH_RETURN_MAX)) == 0)
        return count;
    uint32_t min = numbers[0], max = numbers[count - 1];
    size_t n = 0;
    if (opts & IMAP_SEARCH_RETURN_MIN)
        numbers[n++] = min;
    if ((opts & IMAP_SEARCH_RETURN_MAX) && (n == 0 || max != min))
        numbers[n++] = max;
    return n;
}

enum imap_search_need imap_search_need(const struct imap_search_program *program)
{
    return program->need;
}

bool imap_search_has_return(const struct imap_search_program *program)
{
    return program->has_return;
}

unsigned imap_search_return_options(const struct imap_search_program *program)
{
    return program->return_options;
}

void imap_search_force_esearch(struct imap_search_program *program)
{
    if (!program->has_return) {
        program->has_return = true;
        program->return_options = IMAP_SEARCH_RETURN_ALL;
    }
}

bool imap_search_uses_modseq(const struct imap_search_program *program)
{
    return program->uses_modseq;
}

bool imap_search_uses_searchres(const struct imap_search_program *program)
{
    return program->uses_searchres;
}

/* --- evaluation ----------------------------------------------------------- */

/* Per-message lazily computed texts, freed after the message. */
struct eval {
    const struct imap_search_program *program;
    const struct imap_search_view *view;
    const struct imap_search_msg *msg;
    const char *header;
    size_t header_len;
    bool header_known;
    bool sent_known, sent_valid;
    int64_t sent_days;
    char *folded_header; /* every field decoded, "name: value\n" */
    size_t folded_header_len;
    char *folded_body;
    size_t folded_body_len;
};

static void eval_header(struct eval *ev)
{
    if (ev->header_known)
        return;
    ev->header_known = true;
    if (ev->msg->raw == NULL)
        return;
    ev->header = ev->msg->raw;
    ev->header_len = imap_header_end(ev->msg->raw, ev->msg->raw_len);
}

static bool contains(const char *haystack, size_t haystack_len, const char *needle,
                     size_t needle_len)
{
    if (needle_len == 0)
        return true;
    return memmem(haystack, haystack_len, needle, needle_len) != NULL;
}

static bool match_header(struct eval *ev, const struct search_key *key)
{
    eval_header(ev);
    size_t pos = 0;
    const char *name, *value;
    size_t name_len, value_len;
    size_t want_len = strlen(key->name);
    while (imap_header_next(ev->header, ev->header_len, &pos, &name, &name_len, &value,
                            &value_len)) {
        if (name_len != want_len || strncasecmp(name, key->name, want_len) != 0)
            continue;
        if (key->needle_len == 0)
            return true;
        /* Decoded form: "Name <addr>" keeps both display name and address
         * of address fields searchable. */
        char *decoded = imap_header_decode(value, value_len);
        size_t folded_len;
        char *folded = imap_fold(decoded, strlen(decoded), &folded_len);
        free(decoded);
        bool hit = contains(folded, folded_len, key->needle, key->needle_len);
        free(folded);
        if (!hit && key->envelope_address) {
            /* RFC 3501 6.4.4: FROM etc. search "the envelope structure's
             * FROM field", where "<user (c)@ (c) host>" is user@host: the
             * addresses as parsed, comments and folding gone */
            char *addresses = imap_address_list_text(value, value_len);
            folded = imap_fold(addresses, strlen(addresses), &folded_len);
            free(addresses);
            hit = contains(folded, folded_len, key->needle, key->needle_len);
            free(folded);
        }
        if (hit)
            return true;
    }
    return false;
}

static void eval_folded_header(struct eval *ev)
{
    if (ev->folded_header != NULL)
        return;
    eval_header(ev);
    size_t pos = 0, len = 0, cap = 256;
    char *text = mx_malloc(cap);
    const char *name, *value;
    size_t name_len, value_len;
    while (imap_header_next(ev->header, ev->header_len, &pos, &name, &name_len, &value,
                            &value_len)) {
        char *decoded = imap_header_decode(value, value_len);
        size_t decoded_len = strlen(decoded);
        size_t need = len + name_len + 2 + decoded_len + 2;
        if (need > cap) {
            while (cap < need)
                cap *= 2;
            text = mx_realloc(text, cap);
        }
        memcpy(text + len, name, name_len);
        len += name_len;
        memcpy(text + len, ": ", 2);
        len += 2;
        memcpy(text + len, decoded, decoded_len);
        len += decoded_len;
        text[len++] = '\n';
        free(decoded);
    }
    ev->folded_header = imap_fold(text, len, &ev->folded_header_len);
    free(text);
}

static void eval_folded_body(struct eval *ev)
{
    if (ev->folded_body != NULL)
        return;
    if (ev->msg->raw == NULL) {
        ev->folded_body = mx_strdup("");
        return;
    }
    size_t text_len;
    char *text = imap_body_text(ev->msg->raw, ev->msg->raw_len, ev->program->max_decode_bytes,
                                &text_len);
    ev->folded_body = imap_fold(text, text_len, &ev->folded_body_len);
    free(text);
}

static bool match_sent(struct eval *ev, const struct search_key *key)
{
    if (!ev->sent_known) {
        ev->sent_known = true;
        eval_header(ev);
        size_t value_len;
        const char *value = imap_header_get(ev->header, ev->header_len, "Date", &value_len);
        int64_t utc;
        ev->sent_valid = value != NULL &&
                         imap_date_parse_header(value, value_len, &ev->sent_days, &utc);
    }
    if (!ev->sent_valid)
        return false;
    switch (key->type) {
    case KEY_SENTBEFORE:
        return ev->sent_days < key->days;
    case KEY_SENTON:
        return ev->sent_days == key->days;
    default:
        return ev->sent_days >= key->days;
    }
}

static bool has_keyword(const char *keywords, const char *word)
{
    if (keywords == NULL)
        return false;
    size_t word_len = strlen(word);
    const char *s = keywords;
    while (*s != '\0') {
        while (*s == ' ')
            s++;
        const char *end = s;
        while (*end != '\0' && *end != ' ')
            end++;
        /* keywords compare case-insensitively, as Dovecot and Cyrus do */
        if ((size_t)(end - s) == word_len && word_len > 0 && strncasecmp(s, word, word_len) == 0)
            return true;
        s = end;
    }
    return false;
}

static bool eval_key(struct eval *ev, const struct search_key *key)
{
    const struct imap_search_msg *msg = ev->msg;
    int64_t internal_days = (int64_t)(msg->internaldate_ms / MS_PER_DAY);
    switch (key->type) {
    case KEY_ALL:
        return true;
    case KEY_AND:
        for (size_t i = 0; i < key->n_children; i++) {
            if (!eval_key(ev, key->children[i]))
                return false;
        }
        return true;
    case KEY_OR:
        return eval_key(ev, key->children[0]) || eval_key(ev, key->children[1]);
    case KEY_NOT:
        return !eval_key(ev, key->children[0]);
    case KEY_FLAGS_SET:
        return (msg->flags & key->mask) == key->mask;
    case KEY_FLAGS_UNSET:
        return (msg->flags & key->mask) == 0;
    case KEY_NEW:
        return (msg->flags & IMAP_SEARCH_FLAG_RECENT) && !(msg->flags & IMAP_SEARCH_FLAG_SEEN);
    case KEY_KEYWORD:
        return has_keyword(msg->keywords, key->name);
    case KEY_UNKEYWORD:
        return !has_keyword(msg->keywords, key->name);
    case KEY_BEFORE:
        return internal_days < key->days;
    case KEY_ON:
        return internal_days == key->days;
    case KEY_SINCE:
        return internal_days >= key->days;
    case KEY_SENTBEFORE:
    case KEY_SENTON:
    case KEY_SENTSINCE:
        return match_sent(ev, key);
    case KEY_LARGER:
        return msg->size > key->number;
    case KEY_SMALLER:
        return msg->size < key->number;
    case KEY_HEADER:
        return match_header(ev, key);
    case KEY_BODY:
        if (key->needle_len == 0)
            return true;
        eval_folded_body(ev);
        return contains(ev->folded_body, ev->folded_body_len, key->needle, key->needle_len);
    case KEY_TEXT:
        if (key->needle_len == 0)
            return true;
        eval_folded_header(ev);
        if (contains(ev->folded_header, ev->folded_header_len, key->needle, key->needle_len))
            return true;
        eval_folded_body(ev);
        return contains(ev->folded_body, ev->folded_body_len, key->needle, key->needle_len);
    case KEY_SEQSET:
        return seqset_contains(&key->set, msg->seq, ev->view->count);
    case KEY_UIDSET: {
        uint32_t max_uid = ev->view->count > 0 ? ev->view->uids[ev->view->count - 1] : 0;
        return seqset_contains(&key->set, msg->uid, max_uid);
    }
    case KEY_SEARCHRES:
        return uid_in_list(ev->view->searchres, ev->view->searchres_count, msg->uid);
    case KEY_MODSEQ:
        return msg->modseq >= key->number;
    }
    return false;
}

bool imap_search_match(const struct imap_search_program *program,
                       const struct imap_search_view *view, const struct imap_search_msg *msg)
{
    struct eval ev = {.program = program, .view = view, .msg = msg};
    bool hit = eval_key(&ev, program->root);
    free(ev.folded_header);
    free(ev.folded_body);
    return hit;
}

/* --- responses ------------------------------------------------------------ */

struct strbuf {
    char *s;
    size_t len, cap;
};

static void sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->s + sb->len, sb->cap - sb->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < sb->cap - sb->len) {
            sb->len += (size_t)n;
            return;
        }
        sb->cap = (sb->cap + (size_t)n + 1) * 2;
        sb->s = mx_realloc(sb->s, sb->cap);
    }
}

char *imap_search_format_result(const struct imap_search_program *program, const char *tag,
                                bool uid, const uint32_t *numbers, size_t count,
                                uint64_t highest_modseq)
{
    struct strbuf sb = {mx_malloc(64), 0, 64};
    sb.s[0] = '\0';
    if (!program->has_return) {
        sb_printf(&sb, "* SEARCH");
        for (size_t i = 0; i < count; i++)
            sb_printf(&sb, " %" PRIu32, numbers[i]);
        if (highest_modseq != 0 && count > 0)
            sb_printf(&sb, " (MODSEQ %" PRIu64 ")", highest_modseq);
        return sb.s;
    }
    unsigned opts = program->return_options;
    if ((opts & ~IMAP_SEARCH_RETURN_SAVE) == 0) {
        /* RFC 5182 2.1: SAVE alone gets no ESEARCH response */
        free(sb.s);
        return NULL;
    }
    sb_printf(&sb, "* ESEARCH (TAG \"");
    for (const char *t = tag; *t != '\0'; t++) {
        if (*t == '"' || *t == '\\')
            sb_printf(&sb, "\\");
        sb_printf(&sb, "%c", *t);
    }
    sb_printf(&sb, "\")");
    if (uid)
        sb_printf(&sb, " UID");
    if (count > 0 && (opts & IMAP_SEARCH_RETURN_MIN))
        sb_printf(&sb, " MIN %" PRIu32, numbers[0]);
    if (count > 0 && (opts & IMAP_SEARCH_RETURN_MAX))
        sb_printf(&sb, " MAX %" PRIu32, numbers[count - 1]);
    if (opts & IMAP_SEARCH_RETURN_COUNT)
        sb_printf(&sb, " COUNT %zu", count);
    if (count > 0 && (opts & IMAP_SEARCH_RETURN_ALL)) {
        sb_printf(&sb, " ALL ");
        for (size_t i = 0; i < count;) {
            size_t j = i;
            while (j + 1 < count && numbers[j + 1] == numbers[j] + 1)
                j++;
            if (i > 0)
                sb_printf(&sb, ",");
            if (j == i)
                sb_printf(&sb, "%" PRIu32, numbers[i]);
            else
                sb_printf(&sb, "%" PRIu32 ":%" PRIu32, numbers[i], numbers[j]);
            i = j + 1;
        }
    }
    if (highest_modseq != 0 && count > 0)
        sb_printf(&sb, " MODSEQ %" PRIu64, highest_modseq);
    return sb.s;
}
