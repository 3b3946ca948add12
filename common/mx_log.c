/* mx_log - key=value event logging. */
#include "mx_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static struct {
    char role[32];
    char node[64];
    enum mx_log_target target;
    enum mx_log_level min_level;
    mx_log_sink_fn *sink;
    void *sink_ctx;
} mx_logger = { .role = "mx", .node = "", .target = MX_LOG_TO_STDERR,
                .min_level = MX_LOG_INFO };

static const char *const mx_log_level_names[] = {
    [MX_LOG_DEBUG] = "debug",     [MX_LOG_INFO] = "info",
    [MX_LOG_NOTICE] = "notice",   [MX_LOG_WARNING] = "warning",
    [MX_LOG_ERR] = "err",         [MX_LOG_CRIT] = "crit",
};

static const int mx_log_syslog_priority[] = {
    [MX_LOG_DEBUG] = LOG_DEBUG,   [MX_LOG_INFO] = LOG_INFO,
    [MX_LOG_NOTICE] = LOG_NOTICE, [MX_LOG_WARNING] = LOG_WARNING,
    [MX_LOG_ERR] = LOG_ERR,       [MX_LOG_CRIT] = LOG_CRIT,
};

void mx_log_open(const char *role, const char *node, enum mx_log_target target,
                 int syslog_facility, enum mx_log_level min_level)
{
    snprintf(mx_logger.role, sizeof mx_logger.role, "%s", role ? role : "mx");
    snprintf(mx_logger.node, sizeof mx_logger.node, "%s", node ? node : "");
    mx_logger.target = target;
    mx_logger.min_level = min_level;
    if (target == MX_LOG_TO_SYSLOG) {
        static char ident[40];
        snprintf(ident, sizeof ident, "mx-%s", mx_logger.role);
        openlog(ident, LOG_PID | LOG_NDELAY, syslog_facility);
    }
}

void mx_log_set_level(enum mx_log_level min_level)
{
    mx_logger.min_level = min_level;
}

bool mx_log_enabled(enum mx_log_level level)
{
    return level >= mx_logger.min_level;
}

int mx_log_level_parse(const char *name, enum mx_log_level *level_r)
{
    for (size_t i = 0; i < sizeof mx_log_level_names / sizeof *mx_log_level_names; i++) {
        if (strcasecmp(name, mx_log_level_names[i]) == 0) {
            *level_r = (enum mx_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warn") == 0) {
        *level_r = MX_LOG_WARNING;
        return 0;
    }
    if (strcasecmp(name, "error") == 0) {
        *level_r = MX_LOG_ERR;
        return 0;
    }
    return -1;
}

const char *mx_log_level_name(enum mx_log_level level)
{
    if ((unsigned)level > MX_LOG_CRIT)
        return "unknown";
    return mx_log_level_names[level];
}

void mx_log_set_sink(mx_log_sink_fn *sink, void *ctx)
{
    mx_logger.sink = sink;
    mx_logger.sink_ctx = ctx;
}

const char *mx_log_fmt_ll(char *buf, long long value)
{
    snprintf(buf, 24, "%lld", value);
    return buf;
}

const char *mx_log_fmt_ull(char *buf, unsigned long long value)
{
    snprintf(buf, 24, "%llu", value);
    return buf;
}

/* A cursor over the output buffer that remembers whether anything was cut. */
struct mx_log_buf {
    char *data;
    size_t size; /* capacity, keeps one byte for NUL */
    size_t len;
    int truncated;
};

static void mx_log_put(struct mx_log_buf *b, const char *s, size_t n)
{
    if (b->len + n >= b->size) {
        n = b->size - 1 - b->len;
        b->truncated = 1;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void mx_log_puts(struct mx_log_buf *b, const char *s)
{
    mx_log_put(b, s, strlen(s));
}

/* Bytes that may stand in a value unquoted. Anything else (space, '=', '"',
 * control bytes, 8-bit) forces quoting so a grep on key=value stays exact. */
static int mx_log_is_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("._-:/@+<>,;[]()#%*!?~^&|{}$'", c) != NULL;
}

static void mx_log_put_value(struct mx_log_buf *b, const char *value)
{
    if (value == NULL) {
        mx_log_put(b, "-", 1);
        return;
    }
    int plain = value[0] != '\0';
    for (const unsigned char *p = (const unsigned char *)value; *p && plain; p++)
        plain = mx_log_is_plain(*p);
    if (plain) {
        mx_log_puts(b, value);
        return;
    }
    mx_log_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"':  mx_log_put(b, "\\\"", 2); break;
        case '\\': mx_log_put(b, "\\\\", 2); break;
        case '\n': mx_log_put(b, "\\n", 2); break;
        case '\r': mx_log_put(b, "\\r", 2); break;
        case '\t': mx_log_put(b, "\\t", 2); break;
        default:
            /* 8-bit bytes pass (UTF-8 addresses, folder names); C0 and DEL
             * are shown as \xNN. */
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(esc, sizeof esc, "\\x%02x", *p);
                mx_log_put(b, esc, 4);
            } else {
                mx_log_put(b, (const char *)p, 1);
            }
        }
    }
    mx_log_put(b, "\"", 1);
}

size_t mx_log_format(char *buf, size_t size, enum mx_log_level level,
                     const char *event, const struct mx_log_field *fields)
{
    /* Reserve room for " truncated=1" so the marker always fits. */
    static const char marker[] = " truncated=1";
    struct mx_log_buf b = { .data = buf, .size = size - (sizeof marker - 1), .len = 0 };
    buf[0] = '\0';
    mx_log_puts(&b, "level=");
    mx_log_puts(&b, mx_log_level_name(level));
    mx_log_puts(&b, " role=");
    mx_log_puts(&b, mx_logger.role);
    if (mx_logger.node[0]) {
        mx_log_puts(&b, " node=");
        mx_log_put_value(&b, mx_logger.node);
    }
    mx_log_puts(&b, " event=");
    mx_log_put_value(&b, event);
    for (const struct mx_log_field *f = fields; f && f->key; f++) {
        mx_log_put(&b, " ", 1);
        mx_log_puts(&b, f->key);
        mx_log_put(&b, "=", 1);
        mx_log_put_value(&b, f->value);
    }
    if (b.truncated) {
        memcpy(buf + b.len, marker, sizeof marker);
        b.len += sizeof marker - 1;
    }
    return b.len;
}

void mx_log_fields(enum mx_log_level level, const char *event,
                   const struct mx_log_field *fields)
{
    if (!mx_log_enabled(level))
        return;
    int saved_errno = errno; /* callers often log then inspect errno */
    char line[MX_LOG_LINE_MAX];
    size_t len = mx_log_format(line, sizeof line - 1, level, event, fields);

    if (mx_logger.sink)
        mx_logger.sink(mx_logger.sink_ctx, level, line, len);

    if (mx_logger.target == MX_LOG_TO_SYSLOG) {
        syslog(mx_log_syslog_priority[level], "%s", line);
    } else {
        struct timespec now;
        struct tm tm;
        char out[MX_LOG_LINE_MAX + 64];
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        int prefix = snprintf(out, sizeof out,
                              "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                              tm.tm_hour, tm.tm_min, tm.tm_sec,
                              now.tv_nsec / 1000000);
        memcpy(out + prefix, line, len);
        out[prefix + len] = '\n';
        /* One write() per line keeps lines whole when several processes
         * share the same stderr. */
        ssize_t ignored = write(STDERR_FILENO, out, (size_t)prefix + len + 1);
        (void)ignored;
    }
    errno = saved_errno;
}
