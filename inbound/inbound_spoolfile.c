/* inbound_spoolfile - the on-disk form of one accepted message.
 *
 * A spool entry is ONE file, so one fsync makes the whole of it durable:
 *
 *   <message bytes exactly as received, CRLF, dot-unstuffed>
 *   MXENV1\n
 *   key: value\n ...            (values %XX-escaped: %, space, controls)
 *   MXENVEND <16 hex digits: offset of "MXENV1">\n
 *
 * The message is streamed to disk during DATA and written once; the
 * envelope (known only at the end: recipients that passed, headers to add,
 * the filter's verdict) follows it. Headers that mx-inbound adds (Received,
 * and for the msa Date / Message-ID) travel in "prepend" and are put in
 * front of the message when it is handed on, so the body bytes are never
 * rewritten. */
#include "inbound.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mx_alloc.h"

#define ENV_MAGIC "MXENV1\n"
#define ENV_FOOTER_MAGIC "MXENVEND "
#define ENV_FOOTER_LEN (sizeof ENV_FOOTER_MAGIC - 1 + 16 + 1)
/* A trailer larger than this is damage, not an envelope. */
#define ENV_TRAILER_MAX (64u * 1024 * 1024)

void inbound_envelope_clear(struct inbound_envelope *env)
{
    for (size_t i = 0; i < env->n_recipients; i++) {
        free(env->recipients[i]);
        free(env->notify[i]);
        free(env->orcpt[i]);
    }
    free(env->recipients);
    free(env->notify);
    free(env->orcpt);
    free(env->instance);
    free(env->sender);
    free(env->client_addr);
    free(env->client_helo);
    free(env->auth_user);
    free(env->envid);
    free(env->ret);
    free(env->body_type);
    free(env->prepend);
    memset(env, 0, sizeof *env);
}

/* A growable text buffer for building the trailer. */
struct env_buf {
    char *data;
    size_t len, cap;
};

static void env_put(struct env_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->data = mx_realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void env_put_escaped(struct env_buf *b, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)(value ? value : ""); *p; p++) {
        /* Space too: "rcpt:" lines are split at spaces, and a quoted
         * local part ("john doe"@x) or an ORCPT may hold one. */
        if (*p <= 0x20 || *p == 0x7f || *p == '%') {
            char esc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
            env_put(b, esc, 3);
        } else {
            env_put(b, (const char *)p, 1);
        }
    }
}

static void env_field(struct env_buf *b, const char *key, const char *value)
{
    env_put(b, key, strlen(key));
    env_put(b, ": ", 2);
    env_put_escaped(b, value);
    env_put(b, "\n", 1);
}

int inbound_envelope_write(struct mx_spool_file *file, const struct inbound_envelope *env,
                           char **error_r)
{
    struct env_buf b = { 0 };
    char number[32], id_text[MX_MSGID_TEXT_LEN + 1];
    env_put(&b, ENV_MAGIC, sizeof ENV_MAGIC - 1);
    env_field(&b, "id", mx_msgid_format(&env->id, id_text));
    env_field(&b, "instance", env->instance);
    env_field(&b, "sender", env->sender);
    for (size_t i = 0; i < env->n_recipients; i++) {
        env_put(&b, "rcpt: ", 6);
        env_put_escaped(&b, env->recipients[i]);
        env_put(&b, " ", 1);
        env_put_escaped(&b, env->notify[i][0] ? env->notify[i] : "-");
        env_put(&b, " ", 1);
        env_put_escaped(&b, env->orcpt[i][0] ? env->orcpt[i] : "-");
        env_put(&b, "\n", 1);
    }
    env_field(&b, "client", env->client_addr);
    env_field(&b, "helo", env->client_helo);
    env_field(&b, "auth", env->auth_user);
    env_field(&b, "envid", env->envid);
    env_field(&b, "ret", env->ret);
    env_field(&b, "body", env->body_type);
    env_field(&b, "smtputf8", env->smtputf8 ? "1" : "0");
    snprintf(number, sizeof number, "%" PRIu64, env->arrival_ms);
    env_field(&b, "arrival", number);
    snprintf(number, sizeof number, "%" PRIu64, env->message_size);
    env_field(&b, "size", number);
    env_field(&b, "prepend", env->prepend);
    char footer[ENV_FOOTER_LEN + 1];
    snprintf(footer, sizeof footer, ENV_FOOTER_MAGIC "%016" PRIx64 "\n", env->message_size);
    env_put(&b, footer, ENV_FOOTER_LEN);
    int ret = mx_spool_write(file, b.data, b.len, error_r);
    free(b.data);
    return ret;
}

/* env_unescape - decode %XX in place; -1 on a malformed escape. */
static int env_unescape(char *s)
{
    char *out = s;
    for (char *p = s; *p; p++) {
        if (*p != '%') {
            *out++ = *p;
            continue;
        }
        unsigned value;
        if (sscanf(p + 1, "%2x", &value) != 1 || !p[1] || !p[2])
            return -1;
        *out++ = (char)value;
        p += 2;
    }
    *out = '\0';
    return 0;
}

static char *env_value(const char *raw, int *bad)
{
    char *copy = mx_strdup(raw);
    if (env_unescape(copy) < 0)
        *bad = 1;
    return copy;
}

/* env_parse_rcpt - "addr notify orcpt" (each escaped, "-" = none). */
static int env_parse_rcpt(struct inbound_envelope *env, char *value)
{
    char *fields[3];
    char *save = NULL;
    for (int i = 0; i < 3; i++) {
        fields[i] = strtok_r(i == 0 ? value : NULL, " ", &save);
        if (fields[i] == NULL)
            return -1;
    }
    if (strtok_r(NULL, " ", &save) != NULL)
        return -1;
    size_t n = env->n_recipients;
    env->recipients = mx_reallocarray(env->recipients, n + 1, sizeof *env->recipients);
    env->notify = mx_reallocarray(env->notify, n + 1, sizeof *env->notify);
    env->orcpt = mx_reallocarray(env->orcpt, n + 1, sizeof *env->orcpt);
    int bad = 0;
    env->recipients[n] = env_value(fields[0], &bad);
    env->notify[n] = env_value(strcmp(fields[1], "-") == 0 ? "" : fields[1], &bad);
    env->orcpt[n] = env_value(strcmp(fields[2], "-") == 0 ? "" : fields[2], &bad);
    env->n_recipients = n + 1;
    return bad ? -1 : 0;
}

static int env_parse_line(struct inbound_envelope *env, char *line)
{
    char *colon = strstr(line, ": ");
    if (colon == NULL)
        return -1;
    *colon = '\0';
    const char *key = line;
    char *value = colon + 2;
    int bad = 0;
    char **slot = NULL;
    if (strcmp(key, "rcpt") == 0)
        return env_parse_rcpt(env, value);
    if (strcmp(key, "id") == 0)
        return mx_msgid_parse(value, &env->id);
    if (strcmp(key, "smtputf8") == 0) {
        env->smtputf8 = strcmp(value, "1") == 0;
        return 0;
    }
    if (strcmp(key, "arrival") == 0 || strcmp(key, "size") == 0) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(value, &end, 10);
        if (errno || *end || end == value)
            return -1;
        *(strcmp(key, "size") == 0 ? &env->message_size : &env->arrival_ms) = n;
        return 0;
    }
    if (strcmp(key, "instance") == 0) slot = &env->instance;
    else if (strcmp(key, "sender") == 0) slot = &env->sender;
    else if (strcmp(key, "client") == 0) slot = &env->client_addr;
    else if (strcmp(key, "helo") == 0) slot = &env->client_helo;
    else if (strcmp(key, "auth") == 0) slot = &env->auth_user;
    else if (strcmp(key, "envid") == 0) slot = &env->envid;
    else if (strcmp(key, "ret") == 0) slot = &env->ret;
    else if (strcmp(key, "body") == 0) slot = &env->body_type;
    else if (strcmp(key, "prepend") == 0) slot = &env->prepend;
    else
        return 0; /* a newer writer's field: ignored */
    free(*slot);
    *slot = env_value(value, &bad);
    return bad ? -1 : 0;
}

int inbound_envelope_read_fd(int fd, const char *path, struct inbound_envelope *env_r,
                             char **error_r)
{
    memset(env_r, 0, sizeof *env_r);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        *error_r = mx_asprintf("spool entry %s: fstat: %s", path, strerror(errno));
        return -1;
    }
    char footer[ENV_FOOTER_LEN + 1] = { 0 };
    if ((uint64_t)st.st_size < ENV_FOOTER_LEN + sizeof ENV_MAGIC - 1 ||
        pread(fd, footer, ENV_FOOTER_LEN, st.st_size - (off_t)ENV_FOOTER_LEN) !=
            (ssize_t)ENV_FOOTER_LEN ||
        strncmp(footer, ENV_FOOTER_MAGIC, sizeof ENV_FOOTER_MAGIC - 1) != 0 ||
        footer[ENV_FOOTER_LEN - 1] != '\n') {
        *error_r = mx_asprintf("spool entry %s: no envelope footer (truncated or not ours)", path);
        return -1;
    }
    char *end;
    footer[ENV_FOOTER_LEN - 1] = '\0';
    uint64_t offset = strtoull(footer + sizeof ENV_FOOTER_MAGIC - 1, &end, 16);
    uint64_t trailer_len = (uint64_t)st.st_size - ENV_FOOTER_LEN - offset;
    if (*end || offset > (uint64_t)st.st_size - ENV_FOOTER_LEN || trailer_len > ENV_TRAILER_MAX) {
        *error_r = mx_asprintf("spool entry %s: envelope offset out of range", path);
        return -1;
    }
    char *trailer = mx_malloc(trailer_len + 1);
    if (pread(fd, trailer, trailer_len, (off_t)offset) != (ssize_t)trailer_len) {
        *error_r = mx_asprintf("spool entry %s: reading envelope: %s", path, strerror(errno));
        free(trailer);
        return -1;
    }
    trailer[trailer_len] = '\0';
    int ret = 0;
    if (strncmp(trailer, ENV_MAGIC, sizeof ENV_MAGIC - 1) != 0 || memchr(trailer, '\0', trailer_len)) {
        *error_r = mx_asprintf("spool entry %s: bad envelope magic", path);
        ret = -1;
    }
    char *save = NULL;
    unsigned line_no = 1;
    for (char *line = ret ? NULL : strtok_r(trailer + sizeof ENV_MAGIC - 1, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        if (env_parse_line(env_r, line) < 0) {
            *error_r = mx_asprintf("spool entry %s: envelope line %u malformed", path, line_no);
            ret = -1;
            break;
        }
    }
    free(trailer);
    if (ret == 0 && (env_r->message_size != offset || env_r->sender == NULL ||
                     env_r->n_recipients == 0 || mx_msgid_is_zero(&env_r->id))) {
        *error_r = mx_asprintf("spool entry %s: envelope incomplete", path);
        ret = -1;
    }
    if (ret < 0)
        inbound_envelope_clear(env_r);
    return ret;
}

int inbound_envelope_read(const char *path, struct inbound_envelope *env_r, char **error_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        memset(env_r, 0, sizeof *env_r);
        *error_r = mx_asprintf("spool entry %s: open: %s", path, strerror(errno));
        return -1;
    }
    int ret = inbound_envelope_read_fd(fd, path, env_r, error_r);
    close(fd);
    return ret;
}
