/* mx_log - one line per event, key=value fields, to stderr or syslog.
 *
 * Every line carries the role and the event name; callers add the fields an
 * operator greps for at 3 a.m. (id = cluster message id / queue id, sid =
 * session id, peer, user, mailbox, error). Values are quoted and escaped, so
 * bytes a client sent (CR, LF, quotes) can never forge a second log line.
 *
 *   mx_log(MX_LOG_INFO, "smtp.accept",
 *          MX_KV("id", id_text), MX_KV("peer", peer), MX_KVI("size", size));
 *
 * The same formatted line (without the timestamp) goes to an optional sink,
 * which mx-mon's publisher plugs into later. */
#ifndef MX_LOG_H
#define MX_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum mx_log_level {
    MX_LOG_DEBUG = 0,
    MX_LOG_INFO,
    MX_LOG_NOTICE,
    MX_LOG_WARNING,
    MX_LOG_ERR,
    MX_LOG_CRIT,
};

enum mx_log_target {
    MX_LOG_TO_STDERR = 0,
    MX_LOG_TO_SYSLOG,
};

struct mx_log_field {
    const char *key;
    const char *value; /* NULL prints as "-" */
};

/* Longest line produced, including the newline; longer lines are cut and
 * marked with truncated=1. */
#define MX_LOG_LINE_MAX 4096

/* mx_log_open - set role (e.g. "inbound"), node name, target and threshold.
 * syslog_facility is a LOG_* facility, used only for MX_LOG_TO_SYSLOG. */
void mx_log_open(const char *role, const char *node, enum mx_log_target target,
                 int syslog_facility, enum mx_log_level min_level);
void mx_log_set_level(enum mx_log_level min_level);
bool mx_log_enabled(enum mx_log_level level);

/* mx_log_level_parse - "debug".."crit" to a level; -1 if unknown. */
int mx_log_level_parse(const char *name, enum mx_log_level *level_r);
const char *mx_log_level_name(enum mx_log_level level);

/* A sink sees every emitted line (no timestamp, no newline). It must not log. */
typedef void mx_log_sink_fn(void *ctx, enum mx_log_level level,
                            const char *line, size_t len);
void mx_log_set_sink(mx_log_sink_fn *sink, void *ctx);

void mx_log_fields(enum mx_log_level level, const char *event,
                   const struct mx_log_field *fields);

/* mx_log_format - format "level=.. role=.. event=.. k=v ..." into buf
 * (always NUL-terminated); returns the length written. Exposed for tests. */
size_t mx_log_format(char *buf, size_t size, enum mx_log_level level,
                     const char *event, const struct mx_log_field *fields);

/* Helpers for the field macros below; buf must hold 24 bytes. */
const char *mx_log_fmt_ll(char *buf, long long value);
const char *mx_log_fmt_ull(char *buf, unsigned long long value);

#define MX_KV(k, v)   ((struct mx_log_field){ (k), (v) })
#define MX_KVI(k, n)  ((struct mx_log_field){ (k), mx_log_fmt_ll((char[24]){ 0 }, (long long)(n)) })
#define MX_KVU(k, n)  ((struct mx_log_field){ (k), mx_log_fmt_ull((char[24]){ 0 }, (unsigned long long)(n)) })
/* MX_KVERR - the reason from an errno value, e.g. MX_KVERR(errno). */
#define MX_KVERR(e)   MX_KV("error", strerror(e))

#define mx_log(level, event, ...)                                              \
    mx_log_fields((level), (event),                                            \
                  (const struct mx_log_field[]){ __VA_ARGS__ __VA_OPT__(,)     \
                                                 { NULL, NULL } })

/* mx_fatal - log at crit and exit(1): for start-up errors only, never for
 * anything a peer sent. */
#define mx_fatal(event, ...)                                                   \
    do {                                                                       \
        mx_log(MX_LOG_CRIT, (event), __VA_ARGS__);                             \
        exit(1);                                                               \
    } while (0)

#endif
