/* imap_parser - command framing (imap_reader) and command parsing
 * (imap_parse_command) for mx-imapd. See imap_parser.h for the buffer
 * layout the two halves agree on. */
#include "imap_parser.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mx_alloc.h"

/* ======================================================================== */
/* reader                                                                   */
/* ======================================================================== */

enum reader_state {
    READER_LINE,     /* collecting line text up to LF */
    READER_LITERAL,  /* copying literal_left more literal bytes */
    READER_DISCARD,  /* dropping input up to the next LF (overlong line) */
};

/* Buffers above this are released between commands, so a connection that
 * once sent a 64 MiB APPEND does not keep 64 MiB while idle. */
#define READER_KEEP_BUFFER   (64u * 1024u)
#define READER_INITIAL_BUFFER 1024u

struct imap_reader {
    struct imap_reader_limits limits;
    enum imap_literal_mode literal_mode;
    enum reader_state state;
    char *buf;                    /* assembled command, NUL-terminated */
    size_t len, cap;
    size_t line_start;            /* where the current line's text begins */
    size_t literal_left;
    struct imap_literal_pos *literals;
    size_t n_literals, cap_literals;
    bool raw_next;                /* next line is a raw line */
    bool reset_pending;           /* last event ended the command */
    char error[160];
};

struct imap_reader *imap_reader_new(const struct imap_reader_limits *limits)
{
    struct imap_reader *r = mx_calloc(1, sizeof(*r));
    r->limits.max_line = IMAP_READER_DEFAULT_MAX_LINE;
    r->limits.max_literal = IMAP_READER_DEFAULT_MAX_LITERAL;
    r->limits.max_command = IMAP_READER_DEFAULT_MAX_COMMAND;
    r->limits.max_literals = IMAP_READER_DEFAULT_MAX_LITERALS;
    if (limits != NULL) {
        if (limits->max_line != 0)
            r->limits.max_line = limits->max_line;
        if (limits->max_literal != 0)
            r->limits.max_literal = limits->max_literal;
        if (limits->max_command != 0)
            r->limits.max_command = limits->max_command;
        if (limits->max_literals != 0)
            r->limits.max_literals = limits->max_literals;
    }
    /* The first line must fit in a command however the limits were set. */
    if (r->limits.max_command < r->limits.max_line + 2)
        r->limits.max_command = r->limits.max_line + 2;
    r->state = READER_LINE;
    return r;
}

void imap_reader_free(struct imap_reader *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    free(r->literals);
    free(r);
}

void imap_reader_set_literal_mode(struct imap_reader *r, enum imap_literal_mode mode)
{
    r->literal_mode = mode;
}

void imap_reader_want_raw_line(struct imap_reader *r)
{
    r->raw_next = true;
}

size_t imap_reader_buffered(const struct imap_reader *r)
{
    return r->reset_pending ? 0 : r->len;
}

const char *imap_reader_command(const struct imap_reader *r, size_t *len)
{
    *len = r->len;
    return r->buf != NULL ? r->buf : "";
}

const struct imap_literal_pos *imap_reader_literals(const struct imap_reader *r, size_t *n)
{
    *n = r->n_literals;
    return r->literals;
}

const char *imap_reader_error(const struct imap_reader *r)
{
    return r->error;
}

/* RFC 3501: tag = 1*<any ASTRING-CHAR except "+">. */
static bool is_tag_char(unsigned char c)
{
    if (c <= 0x20 || c >= 0x7f)
        return false;
    return strchr("(){%*\"\\+", c) == NULL;
}

const char *imap_reader_tag(const struct imap_reader *r, size_t *len)
{
    size_t i = 0;
    while (i < r->len && is_tag_char((unsigned char)r->buf[i]))
        i++;
    if (i == 0 || i >= r->len || r->buf[i] != ' ') {
        *len = 0;
        return NULL;
    }
    *len = i;
    return r->buf;
}

static void reader_start_command(struct imap_reader *r)
{
    r->reset_pending = false;
    r->len = 0;
    r->line_start = 0;
    r->n_literals = 0;
    r->error[0] = '\0';
    if (r->cap > READER_KEEP_BUFFER) {
        free(r->buf);
        r->buf = NULL;
        r->cap = 0;
    }
}

/* reader_reserve - room for n more bytes plus the terminating NUL. Callers
 * have checked n against the limits, so this never exceeds max_command. */
static void reader_reserve(struct imap_reader *r, size_t n)
{
    size_t need = r->len + n + 1;
    if (need <= r->cap)
        return;
    size_t cap = r->cap < READER_INITIAL_BUFFER ? READER_INITIAL_BUFFER : r->cap;
    while (cap < need)
        cap *= 2;
    /* Doubling past what is known to come would only waste memory: the
     * command limit, and inside a literal its end (plus the NUL and a
     * little of the next line), so a 33 MiB APPEND does not take 64 MiB. */
    if (cap > r->limits.max_command + 1 && need <= r->limits.max_command + 1)
        cap = r->limits.max_command + 1;
    if (r->state == READER_LITERAL) {
        size_t literal_end = r->len + r->literal_left + 1 + 256;
        if (cap > literal_end && need <= literal_end)
            cap = literal_end;
    }
    if (cap < need)
        cap = need;
    r->buf = mx_realloc(r->buf, cap);
    r->cap = cap;
}

static void reader_append(struct imap_reader *r, const void *data, size_t n)
{
    reader_reserve(r, n);
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

/* The command is over (complete or rejected): the buffer is cleared at the
 * start of the next call, so the caller can still read it (and the tag). */
static enum imap_read_status reader_finish(struct imap_reader *r, enum imap_read_status st)
{
    reader_reserve(r, 0);
    r->buf[r->len] = '\0';
    r->reset_pending = true;
    return st;
}

/* literal_announcement - does the line text end in "{n}", "{n+}", "~{n}" or
 * "~{n+}"? Returns the length of the announcement (0 = not a literal). The
 * size stops growing once above UINT32_MAX, so any number of digits is
 * parsed without overflow and "{99999999999999999999}" is just "too big". */
static size_t literal_announcement(const char *text, size_t len, uint64_t *size, bool *plus,
                                   bool *literal8)
{
    if (len < 3 || text[len - 1] != '}')
        return 0;
    size_t i = len - 1;
    *plus = false;
    if (text[i - 1] == '+') {
        *plus = true;
        i--;
    }
    size_t digits_end = i;
    while (i > 0 && text[i - 1] >= '0' && text[i - 1] <= '9')
        i--;
    if (i == digits_end || i == 0 || text[i - 1] != '{')
        return 0;
    uint64_t v = 0;
    for (size_t k = i; k < digits_end; k++) {
        if (v > UINT32_MAX) /* saturate: already too big for any limit */
            break;
        v = v * 10 + (uint64_t)(text[k] - '0');
    }
    *size = v;
    i--; /* the '{' */
    *literal8 = i > 0 && text[i - 1] == '~';
    if (*literal8)
        i--;
    return len - i;
}

static enum imap_read_status reader_reject_literal(struct imap_reader *r, bool plus)
{
    if (plus) {
        /* The bytes are already on the wire: nothing can resynchronise. */
        r->state = READER_DISCARD;
        return reader_finish(r, IMAP_READ_FATAL);
    }
    r->state = READER_LINE;
    return reader_finish(r, IMAP_READ_LITERAL_TOO_BIG);
}

/* reader_end_of_line - a line's text (terminator removed) is in the buffer.
 * Either the command is complete, or a literal follows. */
static enum imap_read_status reader_end_of_line(struct imap_reader *r)
{
    const char *text = r->buf + r->line_start;
    size_t text_len = r->len - r->line_start;

    if (r->raw_next && r->line_start == 0 && r->n_literals == 0) {
        r->raw_next = false;
        return reader_finish(r, IMAP_READ_RAW_LINE);
    }

    uint64_t size = 0;
    bool plus = false, literal8 = false;
    if (literal_announcement(text, text_len, &size, &plus, &literal8) == 0)
        return reader_finish(r, IMAP_READ_COMMAND);

    if (plus && r->literal_mode == IMAP_LITERAL_SYNC_ONLY) {
        snprintf(r->error, sizeof(r->error),
                 "non-synchronizing literal, but LITERAL+ was not advertised");
        return reader_reject_literal(r, true);
    }
    if (r->n_literals >= r->limits.max_literals) {
        snprintf(r->error, sizeof(r->error), "more than %zu literals in one command",
                 r->limits.max_literals);
        return reader_reject_literal(r, plus);
    }
    uint64_t limit = r->limits.max_literal;
    if (plus && r->literal_mode == IMAP_LITERAL_MINUS && limit > IMAP_LITERAL_MINUS_MAX)
        limit = IMAP_LITERAL_MINUS_MAX;
    if (size > UINT32_MAX) {
        snprintf(r->error, sizeof(r->error), "literal size exceeds 4294967295");
        return reader_reject_literal(r, plus);
    }
    if (size > limit) {
        snprintf(r->error, sizeof(r->error),
                 "literal of %llu octets exceeds the %llu octet limit",
                 (unsigned long long)size, (unsigned long long)limit);
        return reader_reject_literal(r, plus);
    }
    /* CRLF + bytes + NUL must fit in what is left of the command. */
    if ((uint64_t)r->len + 3 + size > r->limits.max_command) {
        snprintf(r->error, sizeof(r->error), "command exceeds %zu octets",
                 r->limits.max_command);
        return reader_reject_literal(r, plus);
    }

    reader_append(r, "\r\n", 2);
    if (r->n_literals == r->cap_literals) {
        r->cap_literals = r->cap_literals == 0 ? 4 : r->cap_literals * 2;
        r->literals = mx_reallocarray(r->literals, r->cap_literals, sizeof(*r->literals));
    }
    struct imap_literal_pos *lp = &r->literals[r->n_literals++];
    lp->offset = r->len;
    lp->len = (size_t)size;
    lp->literal8 = literal8;
    lp->sync = !plus;
    r->literal_left = (size_t)size;
    if (size == 0) {
        reader_append(r, "", 1);
        r->line_start = r->len;
        r->state = READER_LINE;
    } else {
        r->state = READER_LITERAL;
    }
    return plus ? IMAP_READ_NEED_MORE : IMAP_READ_NEED_CONTINUATION;
}

static enum imap_read_status reader_line_too_long(struct imap_reader *r, bool whole_command)
{
    r->raw_next = false;
    if (whole_command)
        snprintf(r->error, sizeof(r->error), "command exceeds %zu octets",
                 r->limits.max_command);
    else
        snprintf(r->error, sizeof(r->error), "line too long (limit %zu octets)",
                 r->limits.max_line);
    return reader_finish(r, IMAP_READ_LINE_TOO_LONG);
}

enum imap_read_status imap_reader_read(struct imap_reader *r, const void *data, size_t len,
                                       size_t *consumed)
{
    const unsigned char *in = data;
    size_t pos = 0;
    enum imap_read_status st = IMAP_READ_NEED_MORE;

    if (r->reset_pending)
        reader_start_command(r);

    while (pos < len && st == IMAP_READ_NEED_MORE) {
        switch (r->state) {
        case READER_DISCARD: {
            const unsigned char *lf = memchr(in + pos, '\n', len - pos);
            if (lf == NULL) {
                pos = len;
            } else {
                pos = (size_t)(lf - in) + 1;
                r->state = READER_LINE;
            }
            break;
        }
        case READER_LITERAL: {
            size_t take = len - pos < r->literal_left ? len - pos : r->literal_left;
            reader_append(r, in + pos, take);
            pos += take;
            r->literal_left -= take;
            if (r->literal_left == 0) {
                reader_append(r, "", 1); /* the NUL after each literal */
                r->line_start = r->len;
                r->state = READER_LINE;
            }
            break;
        }
        case READER_LINE: {
            const unsigned char *lf = memchr(in + pos, '\n', len - pos);
            size_t seg = lf != NULL ? (size_t)(lf - (in + pos)) : len - pos;
            size_t so_far = r->len - r->line_start;
            /* Until the LF arrives, one byte more than the limit may be the
             * CR of the terminator. so_far <= max_line + 1 always holds. */
            size_t room = r->limits.max_line + 1 - so_far;
            bool too_long = seg > room;
            bool command_full = !too_long && r->len + seg > r->limits.max_command;
            if (too_long || command_full) {
                /* Keep (a bounded) start of the line: it holds the tag. */
                if (!command_full)
                    reader_append(r, in + pos, room);
                pos += seg;
                if (lf != NULL)
                    pos++;
                else
                    r->state = READER_DISCARD;
                st = reader_line_too_long(r, command_full);
                break;
            }
            reader_append(r, in + pos, seg);
            pos += seg;
            if (lf == NULL)
                break;
            pos++; /* the LF */
            if (r->len > r->line_start && r->buf[r->len - 1] == '\r') {
                r->len--;
                r->buf[r->len] = '\0';
            }
            if (r->len - r->line_start > r->limits.max_line) {
                st = reader_line_too_long(r, false);
                break;
            }
            st = reader_end_of_line(r);
            break;
        }
        }
    }
    *consumed = pos;
    return st;
}

enum imap_read_status imap_reader_read_evbuffer(struct imap_reader *r, struct evbuffer *in)
{
    for (;;) {
        struct evbuffer_iovec vec;
        if (evbuffer_get_length(in) == 0 || evbuffer_peek(in, -1, NULL, &vec, 1) < 1)
            return IMAP_READ_NEED_MORE;
        size_t used = 0;
        enum imap_read_status st = imap_reader_read(r, vec.iov_base, vec.iov_len, &used);
        if (used > 0)
            evbuffer_drain(in, used);
        if (st != IMAP_READ_NEED_MORE)
            return st;
        if (used == 0) /* an empty chain: nothing more to take now */
            return IMAP_READ_NEED_MORE;
    }
}

/* ======================================================================== */
/* arena                                                                    */
/* ======================================================================== */

struct arena_block {
    struct arena_block *next;
    size_t used, size;
    _Alignas(max_align_t) unsigned char data[];
};

struct imap_arena {
    struct arena_block *head;
    size_t total;
};

#define ARENA_BLOCK_MIN 8192u
#define ARENA_ALIGN     (sizeof(max_align_t))

/* arena_alloc_aligned - align is 1 for strings (no padding between them)
 * or ARENA_ALIGN for structures. */
static void *arena_alloc_aligned(struct imap_arena *a, size_t size, size_t align)
{
    struct arena_block *b = a->head;
    size_t at = b != NULL ? (b->used + align - 1) & ~(align - 1) : 0;
    if (b == NULL || at > b->size || b->size - at < size) {
        size_t bsize = size > ARENA_BLOCK_MIN ? size : ARENA_BLOCK_MIN;
        b = mx_malloc(sizeof(*b) + bsize);
        b->next = a->head;
        b->used = 0;
        b->size = bsize;
        a->head = b;
        a->total += sizeof(*b) + bsize;
        at = 0;
    }
    void *p = b->data + at;
    b->used = at + size;
    return p;
}

static void *arena_alloc(struct imap_arena *a, size_t size)
{
    return arena_alloc_aligned(a, size, ARENA_ALIGN);
}

static char *arena_strndup(struct imap_arena *a, const char *s, size_t n)
{
    char *p = arena_alloc_aligned(a, n + 1, 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void arena_free(struct imap_arena *a)
{
    if (a == NULL)
        return;
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

/* ======================================================================== */
/* parser                                                                   */
/* ======================================================================== */

struct parser {
    const char *buf;
    size_t len, pos;
    unsigned max_depth;
    bool utf8_accept;
    struct imap_command *cmd;
    struct imap_arg *stack;       /* scratch: elements of open lists */
    size_t n_stack, cap_stack;
};

static int parse_fail(struct parser *p, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int parse_fail(struct parser *p, size_t offset, const char *fmt, ...)
{
    if (p->cmd->error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->cmd->error, sizeof(p->cmd->error), fmt, ap);
        va_end(ap);
        p->cmd->error_offset = offset;
    }
    return -1;
}

bool imap_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false; /* continuation byte, overlong 0xc0/0xc1, > 0xf4 */
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((u[i + k] & 0xc0u) != 0x80u)
                return false;
            cp = (cp << 6) | (u[i + k] & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static void stack_push(struct parser *p, const struct imap_arg *a)
{
    if (p->n_stack == p->cap_stack) {
        p->cap_stack = p->cap_stack == 0 ? 16 : p->cap_stack * 2;
        p->stack = mx_reallocarray(p->stack, p->cap_stack, sizeof(*p->stack));
    }
    p->stack[p->n_stack++] = *a;
}

/* Names whose atom may be followed by a "[section]" (FETCH attributes). Any
 * other atom keeps '[' and ']' as ordinary characters, so "SELECT a[1]"
 * is the mailbox "a[1]". */
static bool takes_section(const char *s, size_t n)
{
    static const char *const names[] = { "BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
                                         "BINARY.SIZE" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0)
            return true;
    }
    return false;
}

static int parse_sequence(struct parser *p, char close, size_t open_offset, unsigned depth,
                          bool in_section, struct imap_arg **out, size_t *n_out);

static int describe_bad_char(struct parser *p, unsigned char c, const char *where)
{
    if (c == '\0')
        return parse_fail(p, p->pos, "NUL character in %s at offset %zu", where, p->pos);
    if (c >= 0x80)
        return parse_fail(p, p->pos, "8-bit character in %s at offset %zu", where, p->pos);
    if (c < 0x20 || c == 0x7f)
        return parse_fail(p, p->pos, "control character 0x%02x in %s at offset %zu", c, where,
                          p->pos);
    return parse_fail(p, p->pos, "unexpected '%c' at offset %zu", c, p->pos);
}

static int parse_quoted(struct parser *p, struct imap_arg *out)
{
    size_t start = ++p->pos;
    size_t out_len = 0;
    bool eight_bit = false;
    for (;;) {
        if (p->pos >= p->len)
            return parse_fail(p, start - 1, "unterminated quoted string at offset %zu",
                              start - 1);
        unsigned char c = (unsigned char)p->buf[p->pos];
        if (c == '"')
            break;
        if (c == '\\') {
            p->pos++;
            if (p->pos >= p->len)
                return parse_fail(p, start - 1, "unterminated quoted string at offset %zu",
                                  start - 1);
            c = (unsigned char)p->buf[p->pos];
            if (c != '"' && c != '\\')
                return parse_fail(p, p->pos - 1,
                                  "invalid escape in quoted string at offset %zu", p->pos - 1);
        } else if (c == '\r' || c == '\n' || c == '\0') {
            return parse_fail(p, p->pos, "%s in quoted string at offset %zu",
                              c == '\0' ? "NUL" : "CR or LF", p->pos);
        } else if (c >= 0x80) {
            if (!p->utf8_accept)
                return parse_fail(p, p->pos, "8-bit character in quoted string at offset %zu",
                                  p->pos);
            eight_bit = true;
        }
        out_len++;
        p->pos++;
    }
    size_t end = p->pos++;
    char *s = arena_alloc_aligned(p->cmd->arena, out_len + 1, 1);
    size_t k = 0;
    for (size_t i = start; i < end; i++) {
        if (p->buf[i] == '\\')
            i++;
        s[k++] = p->buf[i];
    }
    s[k] = '\0';
    if (eight_bit && !imap_utf8_valid(s, k))
        return parse_fail(p, start - 1, "invalid UTF-8 in quoted string at offset %zu",
                          start - 1);
    out->type = IMAP_ARG_QUOTED;
    out->str = s;
    out->len = k;
    return 0;
}

static int parse_literal(struct parser *p, struct imap_arg *out)
{
    size_t start = p->pos;
    bool literal8 = p->buf[p->pos] == '~';
    if (literal8)
        p->pos++;
    p->pos++; /* '{' */
    uint64_t n = 0;
    size_t digits = 0;
    while (p->pos < p->len && p->buf[p->pos] >= '0' && p->buf[p->pos] <= '9') {
        n = n * 10 + (uint64_t)(p->buf[p->pos] - '0');
        if (n > UINT32_MAX)
            return parse_fail(p, start, "literal size too large at offset %zu", start);
        digits++;
        p->pos++;
    }
    if (digits == 0)
        return parse_fail(p, start, "invalid literal at offset %zu", start);
    if (p->pos < p->len && p->buf[p->pos] == '+')
        p->pos++;
    if (p->len - p->pos < 3 || memcmp(p->buf + p->pos, "}\r\n", 3) != 0)
        return parse_fail(p, start, "invalid literal at offset %zu", start);
    p->pos += 3;
    /* n bytes and the reader's NUL must be there. */
    if (p->len - p->pos < n + 1 || p->buf[p->pos + n] != '\0')
        return parse_fail(p, start, "truncated literal at offset %zu", start);
    const char *data = p->buf + p->pos;
    if (!literal8 && memchr(data, '\0', (size_t)n) != NULL)
        return parse_fail(p, start, "NUL in literal at offset %zu (only literal8 may hold NUL)",
                          start);
    out->type = literal8 ? IMAP_ARG_LITERAL8 : IMAP_ARG_LITERAL;
    out->str = data;
    out->len = (size_t)n;
    p->pos += (size_t)n + 1;
    return 0;
}

#define PARTIAL_TEXT_MAX 48u /* "<" number64 "." nz-number64 ">" fits */

static int parse_atom(struct parser *p, unsigned depth, bool in_section, struct imap_arg *out)
{
    size_t start = p->pos;
    size_t section_at = 0;
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->buf[p->pos];
        if (c == ' ' || c == '(' || c == ')' || c == '"' || c == '{')
            break;
        if (c == ']' && in_section)
            break;
        if (c == '[' && !in_section && takes_section(p->buf + start, p->pos - start)) {
            section_at = p->pos;
            break;
        }
        if (c <= 0x20 || c >= 0x7f)
            return describe_bad_char(p, c, "atom");
        if (c == '\\' && p->pos != start)
            return parse_fail(p, p->pos, "'\\' inside atom at offset %zu", p->pos);
        p->pos++;
    }
    if (p->pos == start)
        return describe_bad_char(p, (unsigned char)p->buf[p->pos], "atom");
    size_t atom_len = p->pos - start;
    memset(out, 0, sizeof(*out));
    out->type = IMAP_ARG_ATOM;
    out->str = arena_strndup(p->cmd->arena, p->buf + start, atom_len);
    out->len = atom_len;
    if (atom_len == 3 && strncasecmp(out->str, "NIL", 3) == 0)
        out->type = IMAP_ARG_NIL;
    if (section_at == 0)
        return 0;

    /* BODY[...]: the inside is parsed like a list, closed by ']'. */
    if (depth + 1 > p->max_depth)
        return parse_fail(p, p->pos, "too deeply nested at offset %zu", p->pos);
    p->pos++;
    out->has_section = true;
    if (parse_sequence(p, ']', section_at, depth + 1, true, &out->section, &out->n_section) < 0)
        return -1;
    p->pos++; /* ']' */
    if (p->pos < p->len && p->buf[p->pos] == '<') {
        size_t pstart = ++p->pos;
        while (p->pos < p->len && p->buf[p->pos] != '>') {
            char c = p->buf[p->pos];
            if (!((c >= '0' && c <= '9') || c == '.') || p->pos - pstart >= PARTIAL_TEXT_MAX)
                return parse_fail(p, pstart - 1, "invalid partial at offset %zu", pstart - 1);
            p->pos++;
        }
        if (p->pos >= p->len)
            return parse_fail(p, pstart - 1, "unterminated partial at offset %zu", pstart - 1);
        out->partial = arena_strndup(p->cmd->arena, p->buf + pstart, p->pos - pstart);
        p->pos++;
    }
    return 0;
}

static int parse_element(struct parser *p, unsigned depth, bool in_section, struct imap_arg *out)
{
    memset(out, 0, sizeof(*out));
    char c = p->buf[p->pos];
    switch (c) {
    case '(': {
        size_t open = p->pos;
        if (depth + 1 > p->max_depth)
            return parse_fail(p, open, "lists nested too deeply at offset %zu", open);
        p->pos++;
        out->type = IMAP_ARG_LIST;
        if (parse_sequence(p, ')', open, depth + 1, in_section, &out->list, &out->n_list) < 0)
            return -1;
        p->pos++; /* ')' */
        return 0;
    }
    case ')':
        return parse_fail(p, p->pos, "unbalanced parenthesis at offset %zu", p->pos);
    case '"':
        return parse_quoted(p, out);
    case '{':
        return parse_literal(p, out);
    case '~':
        if (p->pos + 1 < p->len && p->buf[p->pos + 1] == '{')
            return parse_literal(p, out);
        return parse_atom(p, depth, in_section, out);
    case ' ':
        return parse_fail(p, p->pos, "unexpected space at offset %zu", p->pos);
    default:
        return parse_atom(p, depth, in_section, out);
    }
}

/* parse_sequence - elements separated by single spaces up to close (')' or
 * ']'), or to the end of the command when close is '\0'. Leaves pos on the
 * closing character. */
static int parse_sequence(struct parser *p, char close, size_t open_offset, unsigned depth,
                          bool in_section, struct imap_arg **out, size_t *n_out)
{
    size_t base = p->n_stack;
    bool first = true;
    for (;;) {
        if (p->pos >= p->len) {
            if (close != '\0')
                return parse_fail(p, open_offset,
                                  close == ')' ? "unbalanced parenthesis at offset %zu"
                                               : "missing ']' for '[' at offset %zu",
                                  open_offset);
            if (first)
                return parse_fail(p, p->pos, "missing argument at offset %zu", p->pos);
            break;
        }
        if (close != '\0' && p->buf[p->pos] == close)
            break;
        if (!first) {
            if (p->buf[p->pos] != ' ') {
                if (p->buf[p->pos] == ')' || (in_section && p->buf[p->pos] == ']'))
                    return parse_fail(p, p->pos, "unbalanced parenthesis at offset %zu", p->pos);
                return parse_fail(p, p->pos, "expected space at offset %zu", p->pos);
            }
            p->pos++;
            if (p->pos >= p->len || p->buf[p->pos] == ' ' ||
                (close != '\0' && p->buf[p->pos] == close))
                return parse_fail(p, p->pos - 1, "unexpected space at offset %zu", p->pos - 1);
        }
        struct imap_arg a;
        if (parse_element(p, depth, in_section, &a) < 0)
            return -1;
        stack_push(p, &a);
        first = false;
    }
    size_t n = p->n_stack - base;
    *n_out = n;
    *out = NULL;
    if (n > 0) {
        *out = arena_alloc(p->cmd->arena, n * sizeof(**out));
        memcpy(*out, p->stack + base, n * sizeof(**out));
    }
    p->n_stack = base;
    return 0;
}

/* parse_name - a command name: ATOM-CHARs, upper-cased into dst. */
static int parse_name(struct parser *p, char *dst)
{
    size_t start = p->pos;
    while (p->pos < p->len && p->buf[p->pos] != ' ') {
        unsigned char c = (unsigned char)p->buf[p->pos];
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
            return describe_bad_char(p, c, "command name");
        if (p->pos - start >= IMAP_COMMAND_NAME_MAX)
            return parse_fail(p, start, "command name too long");
        dst[p->pos - start] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : (char)c;
        p->pos++;
    }
    dst[p->pos - start] = '\0';
    if (p->pos == start)
        return parse_fail(p, start, "missing command name");
    return 0;
}

int imap_parse_command(const char *buf, size_t len, const struct imap_parse_options *opts,
                       struct imap_command *cmd)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->arena = mx_calloc(1, sizeof(*cmd->arena));
    struct parser p = { .buf = buf, .len = len, .cmd = cmd };
    p.max_depth = IMAP_PARSE_DEFAULT_MAX_DEPTH;
    if (opts != NULL) {
        if (opts->max_depth != 0)
            p.max_depth = opts->max_depth;
        p.utf8_accept = opts->utf8_accept;
    }
    if (p.max_depth > IMAP_PARSE_MAX_DEPTH_LIMIT)
        p.max_depth = IMAP_PARSE_MAX_DEPTH_LIMIT;

    int rc = -1;
    size_t t = 0;
    while (t < len && is_tag_char((unsigned char)buf[t]))
        t++;
    if (t == 0 || (t < len && buf[t] != ' ')) {
        parse_fail(&p, t, "invalid tag");
        goto out;
    }
    cmd->tag = arena_strndup(cmd->arena, buf, t);
    cmd->tag_len = t;
    if (t == len) {
        parse_fail(&p, t, "missing command name");
        goto out;
    }
    p.pos = t + 1;
    if (parse_name(&p, cmd->name) < 0)
        goto out;
    if (strcmp(cmd->name, "UID") == 0) {
        if (p.pos >= len) {
            parse_fail(&p, p.pos, "missing command after UID");
            goto out;
        }
        p.pos++;
        cmd->uid = true;
        if (parse_name(&p, cmd->name) < 0)
            goto out;
    }
    if (p.pos < len) {
        p.pos++; /* the space after the name */
        if (parse_sequence(&p, '\0', 0, 0, false, &cmd->args, &cmd->n_args) < 0)
            goto out;
    }
    rc = 0;
out:
    free(p.stack);
    if (rc < 0) {
        cmd->args = NULL;
        cmd->n_args = 0;
    }
    return rc;
}

void imap_command_free(struct imap_command *cmd)
{
    if (cmd == NULL)
        return;
    arena_free(cmd->arena);
    memset(cmd, 0, sizeof(*cmd));
}

size_t imap_command_arena_bytes(const struct imap_command *cmd)
{
    return cmd->arena != NULL ? cmd->arena->total : 0;
}
