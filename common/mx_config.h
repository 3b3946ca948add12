/* mx_config - libconfig files, checked against a table of known options.
 *
 * Every daemon describes its options in a table (path, type, default,
 * bounds, one line of documentation). Loading a file validates the whole
 * tree against the tables before the daemon uses any of it: an unknown
 * setting (a typo), a wrong type or a value out of range is reported as
 *   /etc/mxcluster/mxcluster.conf:42: inbound.instances.[1].max_rcpt: unknown setting
 * and nothing starts. After a successful load the typed accessors cannot
 * fail: a setting absent from the file yields the table's default.
 *
 * Paths: groups are joined with '.', and "*" in a table path stands for
 * any element of a list, e.g. "inbound.instances.*.listen" covers
 *   inbound = { instances = ( { name = "mta"; listen = [ "0.0.0.0:25" ]; } ); };
 *
 * Sizes accept an integer or a string with a K/M/G suffix ("20M");
 * durations an integer (in the option's base unit, documented per option,
 * milliseconds by default) or a string "500ms", "30s", "5m", "1h". */
#ifndef MX_CONFIG_H
#define MX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum mx_option_type {
    MX_OPT_INT,         /* integer within [min, max] */
    MX_OPT_BOOL,
    MX_OPT_STRING,
    MX_OPT_STRING_LIST, /* array of strings ([ "a", "b" ]) */
    MX_OPT_SIZE,        /* bytes: 1048576 or "1M" */
    MX_OPT_DURATION,    /* milliseconds: 1500, or "1500ms", "2s", "5m", "1h" */
    MX_OPT_GROUP,       /* a group { ... } whose members are other options */
    MX_OPT_GROUP_LIST,  /* a list of groups ( { ... }, { ... } ); members are "path.*.name" */
    MX_OPT_FOREIGN,     /* another role's top-level group: this daemon skips its contents
                         * (each role validates its own group; all share one file) */
};

struct mx_option {
    const char *path;          /* e.g. "ldap.timeout"; NULL ends a table */
    enum mx_option_type type;
    const char *default_value; /* as it would be written in the file; NULL = none */
    long long min, max;        /* bounds for INT, SIZE, DURATION (0,0 = unbounded) */
    const char *choices;       /* STRING only: "a|b|c" = the allowed values; NULL = any */
    const char *doc;           /* one line for the sample config and docs */
};

struct mx_config;

/* mx_config_load - parse path and validate it against the NULL-terminated
 * array of option tables. On failure returns -1 and a heap string in
 * error_r naming file, line and setting (the caller frees it); several
 * problems are reported together, one per line. */
int mx_config_load(const char *path, const struct mx_option *const *tables,
                   struct mx_config **cfg_r, char **error_r);
/* mx_config_load_string - the same for text in memory (tests, -e). */
int mx_config_load_string(const char *text, const struct mx_option *const *tables,
                          struct mx_config **cfg_r, char **error_r);
void mx_config_free(struct mx_config **cfg);

/* A position in the tree: the root, or one element of a list of groups.
 * Accessors take a path relative to it. */
struct mx_config_node {
    const struct mx_config *cfg;
    const void *setting;   /* libconfig setting; NULL = absent (defaults apply) */
    char generic_path[160]; /* path with "*" for list elements, "" at the root */
};

struct mx_config_node mx_config_root(const struct mx_config *cfg);
/* mx_config_list_len - number of elements of the GROUP_LIST at path; 0
 * when absent. mx_config_list_elem gives element i. */
size_t mx_config_list_len(const struct mx_config_node *node, const char *path);
struct mx_config_node mx_config_list_elem(const struct mx_config_node *node,
                                          const char *path, size_t index);
/* mx_config_group - a node for the GROUP at path (absent: defaults apply). */
struct mx_config_node mx_config_group(const struct mx_config_node *node, const char *path);

/* Typed accessors: the value set in the file, else the table default.
 * Asking for a path that no table declares is a programming error and
 * aborts with a log line (it can only happen in a build, never at run time
 * because of what an operator wrote). */
long long mx_config_int(const struct mx_config_node *node, const char *path);
bool mx_config_bool(const struct mx_config_node *node, const char *path);
/* Returns NULL when unset and without default. Owned by the config. */
const char *mx_config_string(const struct mx_config_node *node, const char *path);
long long mx_config_size(const struct mx_config_node *node, const char *path);
long long mx_config_duration_ms(const struct mx_config_node *node, const char *path);
/* mx_config_strings - count of a string list; element i via _at. */
size_t mx_config_strings_len(const struct mx_config_node *node, const char *path);
const char *mx_config_strings_at(const struct mx_config_node *node, const char *path, size_t i);
/* mx_config_is_set - whether the file sets path explicitly. */
bool mx_config_is_set(const struct mx_config_node *node, const char *path);
/* mx_config_source - "file:line" of a setting, for run-time errors that
 * concern a configured value (e.g. a certificate that fails to load). */
const char *mx_config_source(const struct mx_config_node *node, const char *path,
                             char *buf, size_t size);

/* mx_config_check_sample - the sample config at path must load cleanly
 * against tables, set every option they declare (group members and list
 * elements included) and carry each option's doc line. 0, or -1 with a
 * heap error_r listing what is missing. Keeps deploy/mxcluster.conf true. */
int mx_config_check_sample(const char *path, const struct mx_option *const *tables,
                           char **error_r);

/* Parsers shared with command-line tools; 0 or -1. */
int mx_config_parse_size(const char *text, long long *bytes_r);
int mx_config_parse_duration(const char *text, long long *ms_r);

/* The options every daemon understands: node, log, ldap, tls, bus. */
extern const struct mx_option mx_common_options[];

#endif
