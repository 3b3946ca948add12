/* mx_config - libconfig loading and validation against option tables. */
#include "mx_config.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"
#include "mx_log.h"

struct mx_config {
    config_t file;
    config_t defaults;               /* "o<index> = <default>;" for each option */
    const struct mx_option **options; /* flattened tables */
    size_t n_options;
    char *origin;                    /* file name, or "<string>" */
};

/* ---- small text helpers ----------------------------------------------- */

/* Growing error report: one problem per line. */
struct mx_config_errors {
    char *text;
    size_t len;
    int count;
};

static void mx_config_error_add(struct mx_config_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void mx_config_error_add(struct mx_config_errors *errs, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = mx_vasprintf(fmt, ap);
    va_end(ap);
    size_t add = strlen(line);
    errs->text = mx_realloc(errs->text, errs->len + add + 2);
    if (errs->len)
        errs->text[errs->len++] = '\n';
    memcpy(errs->text + errs->len, line, add + 1);
    errs->len += add;
    errs->count++;
    free(line);
}

int mx_config_parse_size(const char *text, long long *bytes_r)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (end == text || errno != 0 || value < 0)
        return -1;
    long long unit = 1;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': unit = 1024LL; end++; break;
    case 'M': unit = 1024LL * 1024; end++; break;
    case 'G': unit = 1024LL * 1024 * 1024; end++; break;
    default: return -1;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0' || value > LLONG_MAX / unit)
        return -1;
    *bytes_r = value * unit;
    return 0;
}

int mx_config_parse_duration(const char *text, long long *ms_r)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (end == text || errno != 0 || value < 0)
        return -1;
    long long unit;
    if (strcmp(end, "") == 0 || strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        unit = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        unit = 24LL * 3600 * 1000;
    else
        return -1;
    if (value > LLONG_MAX / unit)
        return -1;
    *ms_r = value * unit;
    return 0;
}

static const char *mx_config_type_name(enum mx_option_type type)
{
    switch (type) {
    case MX_OPT_INT: return "an integer";
    case MX_OPT_BOOL: return "true or false";
    case MX_OPT_STRING: return "a string";
    case MX_OPT_STRING_LIST: return "a list of strings";
    case MX_OPT_SIZE: return "a size (bytes, or \"20M\")";
    case MX_OPT_DURATION: return "a duration (ms, or \"500ms\", \"30s\", \"5m\", \"1h\")";
    case MX_OPT_GROUP: return "a group { ... }";
    case MX_OPT_FOREIGN: return "another role's group { ... }";
    case MX_OPT_GROUP_LIST: return "a list of groups ( { ... }, { ... } )";
    }
    return "?";
}

/* ---- option lookup ---------------------------------------------------- */

/* mx_config_find_option - the option declared for generic_path; a role's
 * own declaration wins over the FOREIGN placeholder of the common table. */
static long mx_config_find_option(const struct mx_config *cfg, const char *generic_path)
{
    long foreign = -1;
    for (size_t i = 0; i < cfg->n_options; i++) {
        if (strcmp(cfg->options[i]->path, generic_path) != 0)
            continue;
        if (cfg->options[i]->type != MX_OPT_FOREIGN)
            return (long)i;
        foreign = (long)i;
    }
    return foreign;
}

/* ---- validation ------------------------------------------------------- */

/* Numeric value of an INT/SIZE/DURATION setting; -1 if it has the wrong form. */
static int mx_config_setting_number(const config_setting_t *s, enum mx_option_type type,
                                    long long *value_r)
{
    int stype = config_setting_type(s);
    if (stype == CONFIG_TYPE_INT || stype == CONFIG_TYPE_INT64) {
        *value_r = config_setting_get_int64(s);
        return 0;
    }
    if (stype == CONFIG_TYPE_STRING && type == MX_OPT_SIZE)
        return mx_config_parse_size(config_setting_get_string(s), value_r);
    if (stype == CONFIG_TYPE_STRING && type == MX_OPT_DURATION)
        return mx_config_parse_duration(config_setting_get_string(s), value_r);
    return -1;
}

/* mx_config_is_choice - is value one of the '|'-separated choices? */
static bool mx_config_is_choice(const char *choices, const char *value)
{
    size_t len = strlen(value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0)
            return true;
        p += n + (bar != NULL);
    }
    return false;
}

/* mx_config_check_value - does setting s have the form option o requires?
 * Returns NULL if so, else a static description of the problem. */
static const char *mx_config_check_value(const config_setting_t *s, const struct mx_option *o,
                                         char *why, size_t why_size)
{
    int stype = config_setting_type(s);
    long long number;
    switch (o->type) {
    case MX_OPT_BOOL:
        return stype == CONFIG_TYPE_BOOL ? NULL : "expected true or false";
    case MX_OPT_STRING:
        if (stype != CONFIG_TYPE_STRING)
            return "expected a string in double quotes";
        if (o->choices && !mx_config_is_choice(o->choices, config_setting_get_string(s))) {
            snprintf(why, why_size, "expected one of %s", o->choices);
            return why;
        }
        return NULL;
    case MX_OPT_STRING_LIST:
        if (stype != CONFIG_TYPE_ARRAY && stype != CONFIG_TYPE_LIST)
            return "expected a list of strings: [ \"a\", \"b\" ]";
        for (int i = 0; i < config_setting_length(s); i++)
            if (config_setting_type(config_setting_get_elem(s, (unsigned)i)) != CONFIG_TYPE_STRING)
                return "every element must be a string";
        return NULL;
    case MX_OPT_INT:
    case MX_OPT_SIZE:
    case MX_OPT_DURATION:
        if (mx_config_setting_number(s, o->type, &number) < 0) {
            snprintf(why, why_size, "expected %s", mx_config_type_name(o->type));
            return why;
        }
        if ((o->min || o->max) && (number < o->min || number > o->max)) {
            snprintf(why, why_size, "value %lld out of range [%lld, %lld]", number, o->min, o->max);
            return why;
        }
        return NULL;
    case MX_OPT_GROUP:
    case MX_OPT_FOREIGN:
        return stype == CONFIG_TYPE_GROUP ? NULL : "expected a group { ... }";
    case MX_OPT_GROUP_LIST:
        if (stype != CONFIG_TYPE_LIST)
            return "expected a list of groups ( { ... }, { ... } )";
        for (int i = 0; i < config_setting_length(s); i++)
            if (config_setting_type(config_setting_get_elem(s, (unsigned)i)) != CONFIG_TYPE_GROUP)
                return "every element of this list must be a group { ... }";
        return NULL;
    }
    return "unknown option type";
}

static void mx_config_validate_setting(const struct mx_config *cfg, const config_setting_t *s,
                                       const char *generic_path, const char *shown_path,
                                       struct mx_config_errors *errs);

/* mx_config_setting_file - the file a setting was read from, as a path an
 * operator can open: libconfig records @include names as written, so a
 * relative one is shown below the include folder. */
static void mx_config_setting_file(const struct mx_config *cfg, const config_setting_t *s,
                                   char *buf, size_t size)
{
    const char *file = config_setting_source_file(s);
    const char *dir = config_get_include_dir(&cfg->file);
    if (file == NULL)
        snprintf(buf, size, "%s", cfg->origin);
    else if (file[0] != '/' && dir != NULL && strcmp(file, cfg->origin) != 0)
        snprintf(buf, size, "%s/%s", dir, file);
    else
        snprintf(buf, size, "%s", file);
}

/* mx_config_validate_members - validate each member of a group. */
static void mx_config_validate_members(const struct mx_config *cfg, const config_setting_t *group,
                                       const char *generic_path, const char *shown_path,
                                       struct mx_config_errors *errs)
{
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *child = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(child);
        char *generic = mx_asprintf("%s%s%s", generic_path, *generic_path ? "." : "", name);
        char *shown = mx_asprintf("%s%s%s", shown_path, *shown_path ? "." : "", name);
        mx_config_validate_setting(cfg, child, generic, shown, errs);
        free(generic);
        free(shown);
    }
}

static void mx_config_validate_setting(const struct mx_config *cfg, const config_setting_t *s,
                                       const char *generic_path, const char *shown_path,
                                       struct mx_config_errors *errs)
{
    char file[1024];
    mx_config_setting_file(cfg, s, file, sizeof file);
    unsigned line = config_setting_source_line(s);
    long index = mx_config_find_option(cfg, generic_path);
    if (index < 0) {
        mx_config_error_add(errs, "%s:%u: %s: unknown setting", file, line, shown_path);
        return;
    }
    const struct mx_option *o = cfg->options[index];
    char why[160];
    const char *problem = mx_config_check_value(s, o, why, sizeof why);
    if (problem) {
        mx_config_error_add(errs, "%s:%u: %s: %s (%s)", file, line, shown_path, problem, o->doc);
        return;
    }
    if (o->type == MX_OPT_GROUP) {
        mx_config_validate_members(cfg, s, generic_path, shown_path, errs);
        return;
    }
    if (o->type != MX_OPT_GROUP_LIST)
        return;
    char *generic = mx_asprintf("%s.*", generic_path);
    for (int i = 0; i < config_setting_length(s); i++) {
        char *shown = mx_asprintf("%s[%d]", shown_path, i);
        mx_config_validate_members(cfg, config_setting_get_elem(s, (unsigned)i), generic, shown, errs);
        free(shown);
    }
    free(generic);
}

/* mx_config_build_defaults - parse every table default with libconfig
 * itself, so a default is held to exactly the rules a file value is. A bad
 * default is a bug in a table; it is reported like a file error. */
static void mx_config_build_defaults(struct mx_config *cfg, struct mx_config_errors *errs)
{
    char *text = mx_strdup("");
    for (size_t i = 0; i < cfg->n_options; i++) {
        const struct mx_option *o = cfg->options[i];
        if (o->default_value == NULL || o->type == MX_OPT_GROUP || o->type == MX_OPT_GROUP_LIST ||
            o->type == MX_OPT_FOREIGN)
            continue;
        char *more = mx_asprintf("%so%zu = %s;\n", text, i, o->default_value);
        free(text);
        text = more;
    }
    config_init(&cfg->defaults);
    if (config_read_string(&cfg->defaults, text) != CONFIG_TRUE) {
        mx_config_error_add(errs, "option table: defaults do not parse: line %d: %s",
                            config_error_line(&cfg->defaults), config_error_text(&cfg->defaults));
    } else {
        for (size_t i = 0; i < cfg->n_options; i++) {
            const struct mx_option *o = cfg->options[i];
            char name[32];
            snprintf(name, sizeof name, "o%zu", i);
            const config_setting_t *s = config_lookup(&cfg->defaults, name);
            char why[160];
            const char *problem = s ? mx_config_check_value(s, o, why, sizeof why) : NULL;
            if (problem)
                mx_config_error_add(errs, "option table: default of %s: %s", o->path, problem);
        }
    }
    free(text);
}

static struct mx_config *mx_config_new(const struct mx_option *const *tables, const char *origin)
{
    struct mx_config *cfg = mx_calloc(1, sizeof *cfg);
    cfg->origin = mx_strdup(origin);
    for (size_t t = 0; tables[t]; t++)
        for (const struct mx_option *o = tables[t]; o->path; o++) {
            cfg->options = mx_reallocarray(cfg->options, cfg->n_options + 1, sizeof *cfg->options);
            cfg->options[cfg->n_options++] = o;
        }
    config_init(&cfg->file);
    return cfg;
}

static int mx_config_finish_load(struct mx_config *cfg, int parsed, struct mx_config **cfg_r,
                                 char **error_r)
{
    struct mx_config_errors errs = { 0 };
    if (parsed != CONFIG_TRUE) {
        const char *file = config_error_file(&cfg->file);
        mx_config_error_add(&errs, "%s:%d: %s", file ? file : cfg->origin,
                            config_error_line(&cfg->file), config_error_text(&cfg->file));
        config_init(&cfg->defaults); /* so free is uniform */
    } else {
        mx_config_build_defaults(cfg, &errs);
        mx_config_validate_members(cfg, config_root_setting(&cfg->file), "", "", &errs);
    }
    if (errs.count) {
        *error_r = errs.text;
        mx_config_free(&cfg);
        return -1;
    }
    *cfg_r = cfg;
    return 0;
}

int mx_config_load(const char *path, const struct mx_option *const *tables,
                   struct mx_config **cfg_r, char **error_r)
{
    struct mx_config *cfg = mx_config_new(tables, path);
    /* @include "x.conf" is resolved relative to the including file's folder. */
    char *dir = mx_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        config_set_include_dir(&cfg->file, dir);
    }
    free(dir);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        *error_r = mx_asprintf("%s: cannot open: %s", path, strerror(errno));
        config_init(&cfg->defaults);
        mx_config_free(&cfg);
        return -1;
    }
    int parsed = config_read(&cfg->file, fp);
    fclose(fp);
    return mx_config_finish_load(cfg, parsed, cfg_r, error_r);
}

int mx_config_load_string(const char *text, const struct mx_option *const *tables,
                          struct mx_config **cfg_r, char **error_r)
{
    struct mx_config *cfg = mx_config_new(tables, "<string>");
    return mx_config_finish_load(cfg, config_read_string(&cfg->file, text), cfg_r, error_r);
}

void mx_config_free(struct mx_config **cfgp)
{
    struct mx_config *cfg = *cfgp;
    if (cfg == NULL)
        return;
    config_destroy(&cfg->file);
    config_destroy(&cfg->defaults);
    free(cfg->options);
    free(cfg->origin);
    free(cfg);
    *cfgp = NULL;
}

/* ---- access ----------------------------------------------------------- */

struct mx_config_node mx_config_root(const struct mx_config *cfg)
{
    struct mx_config_node node = { .cfg = cfg, .setting = config_root_setting(&cfg->file) };
    node.generic_path[0] = '\0';
    return node;
}

/* mx_config_resolve - the option declared for node+path (aborts if none,
 * see the header) and the file's setting for it, NULL when not set. */
static const config_setting_t *mx_config_resolve(const struct mx_config_node *node, const char *path,
                                                 const struct mx_option **option_r, long *index_r)
{
    char generic[512];
    snprintf(generic, sizeof generic, "%s%s%s", node->generic_path,
             node->generic_path[0] ? "." : "", path);
    long index = mx_config_find_option(node->cfg, generic);
    if (index < 0) {
        mx_log(MX_LOG_CRIT, "config.undeclared_option", MX_KV("path", generic));
        abort();
    }
    *option_r = node->cfg->options[index];
    *index_r = index;
    if (node->setting == NULL)
        return NULL;
    return config_setting_lookup((config_setting_t *)node->setting, path);
}

/* mx_config_value - the file's setting, else the parsed default, else NULL. */
static const config_setting_t *mx_config_value(const struct mx_config_node *node, const char *path,
                                               const struct mx_option **option_r)
{
    long index;
    const config_setting_t *s = mx_config_resolve(node, path, option_r, &index);
    if (s)
        return s;
    char name[32];
    snprintf(name, sizeof name, "o%ld", index);
    return config_lookup(&node->cfg->defaults, name);
}

static long long mx_config_number(const struct mx_config_node *node, const char *path)
{
    const struct mx_option *o;
    const config_setting_t *s = mx_config_value(node, path, &o);
    long long value = 0;
    if (s)
        (void)mx_config_setting_number(s, o->type, &value); /* validated at load */
    return value;
}

long long mx_config_int(const struct mx_config_node *node, const char *path)
{
    return mx_config_number(node, path);
}

long long mx_config_size(const struct mx_config_node *node, const char *path)
{
    return mx_config_number(node, path);
}

long long mx_config_duration_ms(const struct mx_config_node *node, const char *path)
{
    return mx_config_number(node, path);
}

bool mx_config_bool(const struct mx_config_node *node, const char *path)
{
    const struct mx_option *o;
    const config_setting_t *s = mx_config_value(node, path, &o);
    return s ? config_setting_get_bool(s) != 0 : false;
}

const char *mx_config_string(const struct mx_config_node *node, const char *path)
{
    const struct mx_option *o;
    const config_setting_t *s = mx_config_value(node, path, &o);
    return s ? config_setting_get_string(s) : NULL;
}

size_t mx_config_strings_len(const struct mx_config_node *node, const char *path)
{
    const struct mx_option *o;
    const config_setting_t *s = mx_config_value(node, path, &o);
    return s ? (size_t)config_setting_length(s) : 0;
}

const char *mx_config_strings_at(const struct mx_config_node *node, const char *path, size_t i)
{
    const struct mx_option *o;
    const config_setting_t *s = mx_config_value(node, path, &o);
    if (s == NULL || i >= (size_t)config_setting_length(s))
        return NULL;
    return config_setting_get_string_elem(s, (int)i);
}

bool mx_config_is_set(const struct mx_config_node *node, const char *path)
{
    const struct mx_option *o;
    long index;
    return mx_config_resolve(node, path, &o, &index) != NULL;
}

size_t mx_config_list_len(const struct mx_config_node *node, const char *path)
{
    const struct mx_option *o;
    long index;
    const config_setting_t *s = mx_config_resolve(node, path, &o, &index);
    if (s == NULL || o->type != MX_OPT_GROUP_LIST)
        return 0;
    return (size_t)config_setting_length(s);
}

struct mx_config_node mx_config_list_elem(const struct mx_config_node *node, const char *path,
                                          size_t index)
{
    const struct mx_option *o;
    long option_index;
    const config_setting_t *s = mx_config_resolve(node, path, &o, &option_index);
    struct mx_config_node elem = { .cfg = node->cfg, .setting = NULL };
    if (o->type == MX_OPT_GROUP_LIST) {
        snprintf(elem.generic_path, sizeof elem.generic_path, "%s.*", o->path);
        if (s && index < (size_t)config_setting_length(s))
            elem.setting = config_setting_get_elem(s, (unsigned)index);
    } else {
        /* A plain group: a node for it, so members are read relative to it. */
        snprintf(elem.generic_path, sizeof elem.generic_path, "%s", o->path);
        elem.setting = s;
    }
    return elem;
}

struct mx_config_node mx_config_group(const struct mx_config_node *node, const char *path)
{
    return mx_config_list_elem(node, path, 0);
}

const char *mx_config_source(const struct mx_config_node *node, const char *path, char *buf,
                             size_t size)
{
    const struct mx_option *o;
    long index;
    const config_setting_t *s = mx_config_resolve(node, path, &o, &index);
    if (s == NULL) {
        snprintf(buf, size, "default of %s", o->path);
    } else {
        char file[1024];
        mx_config_setting_file(node->cfg, s, file, sizeof file);
        snprintf(buf, size, "%s:%u", file, config_setting_source_line(s));
    }
    return buf;
}

/* mx_config_sample_set - does the sample set the option at generic path
 * (a "*" segment matches any element of a list of groups)? */
static bool mx_config_sample_set(const config_setting_t *setting, const char *path)
{
    if (*path == '\0')
        return true;
    const char *dot = strchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    const char *rest = dot ? dot + 1 : "";
    if (len == 1 && path[0] == '*') {
        for (int i = 0; i < config_setting_length(setting); i++)
            if (mx_config_sample_set(config_setting_get_elem(setting, (unsigned)i), rest))
                return true;
        return false;
    }
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)len, path);
    const config_setting_t *child = config_setting_get_member(setting, name);
    return child != NULL && mx_config_sample_set(child, rest);
}

int mx_config_check_sample(const char *path, const struct mx_option *const *tables,
                           char **error_r)
{
    struct mx_config *cfg = NULL;
    if (mx_config_load(path, tables, &cfg, error_r) < 0)
        return -1;
    char *text = NULL;
    size_t text_len = 0;
    FILE *fp = fopen(path, "r");
    if (fp != NULL) {
        FILE *mem = open_memstream(&text, &text_len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
            fwrite(buf, 1, n, mem);
        fclose(mem);
        fclose(fp);
    }
    struct mx_config_errors errs = { 0 };
    for (size_t i = 0; i < cfg->n_options; i++) {
        const struct mx_option *o = cfg->options[i];
        if (o->type == MX_OPT_FOREIGN)
            continue;
        if (!mx_config_sample_set(config_root_setting(&cfg->file), o->path))
            mx_config_error_add(&errs, "%s: does not set %s (%s)", path, o->path, o->doc);
        else if (text == NULL || strstr(text, o->doc) == NULL)
            mx_config_error_add(&errs, "%s: lacks the doc line of %s: \"%s\"", path, o->path, o->doc);
    }
    free(text);
    mx_config_free(&cfg);
    if (errs.count) {
        *error_r = errs.text;
        return -1;
    }
    return 0;
}
