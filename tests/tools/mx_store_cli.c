/* mx-store-cli - send ONE request to mx-store and print the reply, so
 * scripts (tests/integration/test_store.py) can drive the store without a
 * ZeroMQ binding.
 *
 *   mx-store-cli [-t TIMEOUT_MS] ENDPOINT REQUEST [name=value ...]
 *
 * REQUEST is a message name after "MSG_ANY_STORE_", lower case (append,
 * mailbox_select, flags_store, ...). Each name=value is one field, named
 * as in mx_wire.h without "F_" and in lower case (user=, mailbox=, flag=,
 * uid_set=, ...); repeat a name for a repeated field. Values: decimal for
 * U32/U64, text for STR; BYTES take text, or "@PATH" for a file's
 * contents. msgid=<26-char id> sets the frame's message id.
 *
 * Output: "type=<message name>" then one "name=value" line per field in
 * wire order; in string values \\, \n, \r, \t and non-printable bytes are
 * written as \\, \n, \r, \t, \xNN. Exit status 0 on a reply, 2 on a
 * timeout, 1 on a usage error. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "mx_alloc.h"
#include "mx_wire.h"

static int find_tag(const char *name, uint16_t *tag_r, enum mx_field_kind *kind_r)
{
    for (uint32_t t = 1; t < 1000; t++) {
        const char *n = mx_field_tag_name(t);
        if (n && strncmp(n, "F_", 2) == 0 && strcasecmp(n + 2, name) == 0 &&
            mx_field_tag_kind(t, kind_r) == 0) {
            *tag_r = (uint16_t)t;
            return 0;
        }
    }
    return -1;
}

static uint8_t *slurp(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 65536, len = 0;
    uint8_t *buf = mx_malloc(cap);
    for (size_t n; (n = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += n;
        if (len == cap)
            buf = mx_realloc(buf, cap *= 2);
    }
    fclose(f);
    *len_r = len;
    return buf;
}

static void print_escaped(const uint8_t *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned c = v[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar((int)c);
    }
}

int main(int argc, char **argv)
{
    int timeout = 10000, a = 1;
    if (argc > 2 && strcmp(argv[1], "-t") == 0) {
        timeout = atoi(argv[2]);
        a = 3;
    }
    if (argc - a < 2) {
        fprintf(stderr, "usage: mx-store-cli [-t MS] ENDPOINT REQUEST [name=value ...]\n");
        return 1;
    }
    const char *endpoint = argv[a], *request = argv[a + 1];
    uint32_t type = 0;
    for (uint32_t t = 1; t < 1000 && !type; t++) {
        const char *n = mx_msg_type_name(t);
        if (n && strncmp(n, "MSG_ANY_STORE_", 14) == 0 && strcasecmp(n + 14, request) == 0)
            type = t;
    }
    if (type == 0 && strcmp(request, "ping") == 0)
        type = MSG_ANY_PING;
    if (type == 0) {
        fprintf(stderr, "mx-store-cli: unknown request %s\n", request);
        return 1;
    }
    struct mx_msgid id;
    memset(&id, 0, sizeof id);
    for (int i = a + 2; i < argc; i++)
        if (strncmp(argv[i], "msgid=", 6) == 0 && mx_msgid_parse(argv[i] + 6, &id) < 0) {
            fprintf(stderr, "mx-store-cli: bad msgid %s\n", argv[i] + 6);
            return 1;
        }
    struct mx_frame frame;
    mx_frame_init(&frame, (enum mx_msg_type)type, 1, &id);
    for (int i = a + 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL) {
            fprintf(stderr, "mx-store-cli: %s is not name=value\n", argv[i]);
            return 1;
        }
        *eq = '\0';
        const char *value = eq + 1;
        if (strcmp(argv[i], "msgid") == 0)
            continue;
        uint16_t tag;
        enum mx_field_kind kind;
        if (find_tag(argv[i], &tag, &kind) < 0) {
            fprintf(stderr, "mx-store-cli: unknown field %s\n", argv[i]);
            return 1;
        }
        if (kind == MX_FIELD_U32) {
            mx_frame_put_u32(&frame, (enum mx_field_tag)tag, (uint32_t)strtoul(value, NULL, 10));
        } else if (kind == MX_FIELD_U64) {
            mx_frame_put_u64(&frame, (enum mx_field_tag)tag, strtoull(value, NULL, 10));
        } else if (kind == MX_FIELD_BYTES && value[0] == '@') {
            size_t len;
            uint8_t *data = slurp(value + 1, &len);
            if (data == NULL) {
                fprintf(stderr, "mx-store-cli: cannot read %s\n", value + 1);
                return 1;
            }
            mx_frame_put_bytes(&frame, (enum mx_field_tag)tag, data, len);
            free(data);
        } else {
            /* raw bytes, so tests can send control characters */
            mx_frame_put_field(&frame, tag, value, strlen(value));
        }
    }
    const uint8_t *data;
    size_t len;
    const char *error;
    if (mx_frame_finish(&frame, &data, &len, &error) < 0) {
        fprintf(stderr, "mx-store-cli: %s\n", error);
        return 1;
    }
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    int rc = 2;
    if (zmq_connect(sock, endpoint) == 0 && zmq_send(sock, data, len, 0) == (int)len) {
        zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&item, 1, timeout) == 1) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, sock, 0) >= 0) {
                struct mx_frame_view view;
                if (mx_frame_parse(zmq_msg_data(&msg), zmq_msg_size(&msg), &view, &error) < 0) {
                    fprintf(stderr, "mx-store-cli: bad reply: %s\n", error);
                } else {
                    printf("type=%s\n", mx_msg_type_name(view.type));
                    struct mx_field_iter it = { 0 };
                    uint16_t tag;
                    const uint8_t *v;
                    size_t vl;
                    while (mx_frame_next_field(&view, &it, &tag, &v, &vl)) {
                        const char *n = mx_field_tag_name(tag);
                        enum mx_field_kind kind = MX_FIELD_BYTES;
                        (void)mx_field_tag_kind(tag, &kind);
                        for (const char *p = n ? n + 2 : "unknown"; *p; p++)
                            putchar(tolower((unsigned char)*p));
                        putchar('=');
                        uint64_t x = 0;
                        if (kind == MX_FIELD_U32 || kind == MX_FIELD_U64) {
                            for (size_t i = 0; i < vl; i++)
                                x = x << 8 | v[i];
                            printf("%llu", (unsigned long long)x);
                        } else {
                            print_escaped(v, vl);
                        }
                        putchar('\n');
                    }
                    rc = 0;
                }
            }
            zmq_msg_close(&msg);
        } else {
            fprintf(stderr, "mx-store-cli: no reply from %s within %d ms\n", endpoint, timeout);
        }
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    mx_frame_free(&frame);
    return rc;
}
