/* mime_cache - ENVELOPE, BODYSTRUCTURE, BODY and part offsets of a message.
 * See mime_cache.h for the output conventions and why boundaries are
 * scanned here. Everything in this file is computation over the caller's
 * bytes: no I/O, reentrant; the only global is GMime's one-time init. */
#include "mime_cache.h"

#include <gmime/gmime.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mx_alloc.h"

/* Longest Content-Type value handed to GMime (see parse_content). */
#define MIME_CACHE_GMIME_CT_MAX 16384

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_init_once(void)
{
    g_mime_init();
}

void mime_cache_gmime_init(void)
{
    pthread_once(&gmime_once, gmime_init_once);
}

void mime_cache_gmime_shutdown(void)
{
    /* only at process exit: pthread_once will not initialise GMime again */
    g_mime_shutdown();
}

/* ------------------------------------------------------------------ */
/* Growable byte buffer (always NUL-terminable).                        */

struct mc_buf {
    char *data;
    size_t len;
    size_t cap;
};

static void buf_reserve(struct mc_buf *b, size_t more)
{
    size_t cap;

    if (b->cap - b->len > more)
        return;
    cap = b->cap != 0 ? b->cap : 128;
    while (cap - b->len <= more) {
        if (cap > SIZE_MAX / 2)
            abort(); /* cannot happen: inputs are < 4 GiB */
        cap *= 2;
    }
    b->data = mx_realloc(b->data, cap);
    b->cap = cap;
}

static void buf_add(struct mc_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void buf_addc(struct mc_buf *b, char c)
{
    if (b->cap - b->len <= 1)
        buf_reserve(b, 1);
    b->data[b->len++] = c;
}

static void buf_adds(struct mc_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_addbuf(struct mc_buf *b, const struct mc_buf *src)
{
    buf_add(b, src->data, src->len);
}

static void buf_addu(struct mc_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    buf_add(b, tmp + i, sizeof(tmp) - i);
}

/* buf_steal - NUL-terminate and hand the storage to the caller. */
static char *buf_steal(struct mc_buf *b)
{
    char *s;

    buf_reserve(b, 1);
    b->data[b->len] = '\0';
    s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

static void buf_free(struct mc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------------ */
/* IMAP strings.                                                        */

/* imap_add_string - the quoting rule of mime_cache.h: quoted when short
 * and 7-bit without CR/LF, else a literal. NUL bytes are dropped. */
static void imap_add_string(struct mc_buf *b, const char *s, size_t n)
{
    bool quoted = n <= MIME_CACHE_QUOTED_MAX;
    size_t nuls = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == 0)
            nuls++;
        else if (c >= 0x80 || c == '\r' || c == '\n')
            quoted = false;
    }
    if (quoted) {
        char *o;

        buf_reserve(b, n * 2 + 2);
        o = b->data + b->len;
        *o++ = '"';
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '\0')
                continue;
            if (s[i] == '"' || s[i] == '\\')
                *o++ = '\\';
            *o++ = s[i];
        }
        *o++ = '"';
        b->len = (size_t)(o - b->data);
        return;
    }
    buf_addc(b, '{');
    buf_addu(b, n - nuls);
    buf_adds(b, "}\r\n");
    if (nuls == 0) {
        buf_add(b, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\0')
            buf_addc(b, s[i]);
    }
}

static void imap_add_bufstring(struct mc_buf *b, const struct mc_buf *s)
{
    imap_add_string(b, s->data, s->len);
}

/* ------------------------------------------------------------------ */
/* Header blocks.                                                       */

enum hf {
    HF_DATE,
    HF_SUBJECT,
    HF_FROM,
    HF_SENDER,
    HF_REPLY_TO,
    HF_TO,
    HF_CC,
    HF_BCC,
    HF_IN_REPLY_TO,
    HF_MESSAGE_ID,
    HF_CONTENT_TYPE,
    HF_CONTENT_TRANSFER_ENCODING,
    HF_CONTENT_ID,
    HF_CONTENT_DESCRIPTION,
    HF_CONTENT_DISPOSITION,
    HF_CONTENT_LANGUAGE,
    HF_CONTENT_LOCATION,
    HF_CONTENT_MD5,
    HF_COUNT
};

static const char *const hf_names[HF_COUNT] = {
    [HF_DATE] = "date",
    [HF_SUBJECT] = "subject",
    [HF_FROM] = "from",
    [HF_SENDER] = "sender",
    [HF_REPLY_TO] = "reply-to",
    [HF_TO] = "to",
    [HF_CC] = "cc",
    [HF_BCC] = "bcc",
    [HF_IN_REPLY_TO] = "in-reply-to",
    [HF_MESSAGE_ID] = "message-id",
    [HF_CONTENT_TYPE] = "content-type",
    [HF_CONTENT_TRANSFER_ENCODING] = "content-transfer-encoding",
    [HF_CONTENT_ID] = "content-id",
    [HF_CONTENT_DESCRIPTION] = "content-description",
    [HF_CONTENT_DISPOSITION] = "content-disposition",
    [HF_CONTENT_LANGUAGE] = "content-language",
    [HF_CONTENT_LOCATION] = "content-location",
    [HF_CONTENT_MD5] = "content-md5",
};

/* Raw value of a field: msg[start..end), from after the colon to the end
 * of its last continuation line (line breaks included, unfolded later). */
struct hfield {
    bool present;
    size_t start;
    size_t end;
};

struct headers {
    struct hfield f[HF_COUNT];
};

static int hf_lookup(const unsigned char *name, size_t len)
{
    for (int i = 0; i < HF_COUNT; i++) {
        const char *n = hf_names[i];

        if (strlen(n) != len)
            continue;
        size_t j = 0;
        while (j < len) {
            unsigned char c = name[j];

            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
            if (c != (unsigned char)n[j])
                break;
            j++;
        }
        if (j == len)
            return i;
    }
    return -1;
}

/* scan_headers - collect the fields we use from the header block starting
 * at msg[start] and return where the body starts: after the first empty
 * line ("\n" or "\r\n"), or limit when there is none (a message that is
 * only headers). Lines without a colon are skipped, as GMime does; a
 * continuation line (leading SP/HTAB) extends the current field. The first
 * occurrence of a field wins. Linear in the header size. */
static size_t scan_headers(const unsigned char *msg, size_t start, size_t limit,
                           struct headers *h)
{
    size_t pos = start;
    int cur = -1;

    memset(h, 0, sizeof(*h));
    while (pos < limit) {
        const unsigned char *nl = memchr(msg + pos, '\n', limit - pos);
        size_t line_end = nl != NULL ? (size_t)(nl - msg) : limit;
        size_t next = nl != NULL ? line_end + 1 : limit;
        size_t content_end = line_end;

        if (content_end > pos && msg[content_end - 1] == '\r')
            content_end--;
        if (content_end == pos)
            return next; /* the empty line ending the header block */
        if (msg[pos] == ' ' || msg[pos] == '\t') {
            if (cur >= 0)
                h->f[cur].end = content_end;
        } else {
            const unsigned char *colon = memchr(msg + pos, ':', content_end - pos);

            cur = -1;
            if (colon != NULL) {
                size_t name_end = (size_t)(colon - msg);

                while (name_end > pos && (msg[name_end - 1] == ' ' || msg[name_end - 1] == '\t'))
                    name_end--;
                int idx = hf_lookup(msg + pos, name_end - pos);
                if (idx >= 0 && !h->f[idx].present) {
                    h->f[idx].present = true;
                    h->f[idx].start = (size_t)(colon - msg) + 1;
                    h->f[idx].end = content_end;
                    cur = idx;
                }
            }
        }
        pos = next;
    }
    return limit;
}

/* field_value - unfolded value: CR, LF and NUL removed, leading and
 * trailing SP/HTAB trimmed. out is reset first. */
static void field_value(const unsigned char *msg, const struct hfield *f, struct mc_buf *out)
{
    size_t s = f->start, e = f->end;

    out->len = 0;
    buf_reserve(out, e - s);
    for (size_t i = s; i < e; i++) {
        unsigned char c = msg[i];

        if (c == '\r' || c == '\n' || c == '\0')
            continue;
        if (out->len == 0 && (c == ' ' || c == '\t'))
            continue;
        out->data[out->len++] = (char)c;
    }
    while (out->len > 0 && (out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t'))
        out->len--;
}

/* add_field_nstring - the unfolded field as an IMAP string, NIL if absent. */
static void add_field_nstring(struct mc_buf *b, const unsigned char *msg, const struct hfield *f,
                              struct mc_buf *tmp)
{
    if (!f->present) {
        buf_adds(b, "NIL");
        return;
    }
    field_value(msg, f, tmp);
    imap_add_bufstring(b, tmp);
}

/* ------------------------------------------------------------------ */
/* RFC 5322 address lists.                                              */

enum tok_kind {
    TK_ATOM,    /* run of atext; '.' is included, so "a.b" is one atom */
    TK_QUOTED,  /* "..." including the quotes */
    TK_DOMLIT,  /* [...] including the brackets */
    TK_COMMENT, /* (...) including the parentheses */
    TK_SPECIAL, /* one of < > : ; @ , and stray ) ] \ */
};

/* 12 bytes: a field is at most MIME_CACHE_MAX_ADDRESS_FIELD bytes */
struct tok {
    uint32_t start;
    uint32_t len;
    uint8_t kind;   /* enum tok_kind */
    bool ws_before; /* whitespace or a comment precedes it */
};

struct toks {
    struct tok *t;
    size_t n;
    size_t cap;
};

static bool is_addr_special(unsigned char c)
{
    return c == '<' || c == '>' || c == ':' || c == ';' || c == '@' || c == ',' || c == ')' ||
           c == ']' || c == '\\';
}

/* skip_delimited - end of a quoted string / comment / domain literal that
 * starts at v[i]; an unterminated one runs to the end. Backslash quotes
 * the next byte. Comments nest. */
static size_t skip_delimited(const char *v, size_t n, size_t i, char open, char close)
{
    int depth = 1;

    i++;
    while (i < n) {
        if (v[i] == '\\' && i + 1 < n) {
            i += 2;
            continue;
        }
        if (v[i] == close) {
            if (--depth == 0)
                return i + 1;
        } else if (v[i] == open && open == '(') {
            depth++;
        }
        i++;
    }
    return n;
}

static void tokenize_822(const char *v, size_t n, struct toks *out)
{
    size_t i = 0;
    bool ws = false;

    out->n = 0;
    while (i < n) {
        unsigned char c = (unsigned char)v[i];
        struct tok t = { .ws_before = ws, .start = (uint32_t)i };

        if (c == ' ' || c == '\t') {
            ws = true;
            i++;
            continue;
        }
        if (c == '(') {
            t.kind = TK_COMMENT;
            i = skip_delimited(v, n, i, '(', ')');
        } else if (c == '"') {
            t.kind = TK_QUOTED;
            i = skip_delimited(v, n, i, '"', '"');
        } else if (c == '[') {
            t.kind = TK_DOMLIT;
            i = skip_delimited(v, n, i, '[', ']');
        } else if (is_addr_special(c)) {
            t.kind = TK_SPECIAL;
            i++;
        } else {
            t.kind = TK_ATOM;
            while (i < n) {
                c = (unsigned char)v[i];
                if (c == ' ' || c == '\t' || c == '(' || c == '"' || c == '[' || is_addr_special(c))
                    break;
                i++;
            }
        }
        t.len = (uint32_t)(i - t.start);
        if (out->n == out->cap) {
            out->cap = out->cap != 0 ? out->cap * 2 : 16;
            out->t = mx_reallocarray(out->t, out->cap, sizeof(*out->t));
        }
        out->t[out->n++] = t;
        ws = t.kind == TK_COMMENT;
    }
}

struct addr_parser {
    const char *v;
    const struct tok *t;
    size_t n;
    size_t i;
    struct mc_buf *out;
    size_t count; /* address structures written */
    struct mc_buf name, route, mailbox, host;
};

/* ap_peek - index of the next non-comment token at or after i, or n. */
static size_t ap_peek(const struct addr_parser *p, size_t i)
{
    while (i < p->n && p->t[i].kind == TK_COMMENT)
        i++;
    return i;
}

static bool ap_is(const struct addr_parser *p, size_t i, char special)
{
    return i < p->n && p->t[i].kind == TK_SPECIAL && p->v[p->t[i].start] == special;
}

/* add_unquoted - append the content of the quoted string or comment
 * v[start..e) without its delimiters, backslash escapes resolved. */
static void add_unquoted(struct mc_buf *b, const char *v, size_t start, size_t e)
{
    char close = v[start] == '(' ? ')' : '"';
    int depth = 1;

    for (size_t i = start + 1; i < e; i++) {
        char c = v[i];

        if (c == '\\' && i + 1 < e) {
            buf_addc(b, v[++i]);
            continue;
        }
        if (close == ')' && c == '(') {
            depth++;
        } else if (c == close && --depth == 0) {
            break;
        }
        buf_addc(b, c);
    }
}

static void ap_add_unquoted(struct mc_buf *b, const char *v, const struct tok *t)
{
    add_unquoted(b, v, t->start, (size_t)t->start + t->len);
}

static void ap_emit(struct addr_parser *p, const struct mc_buf *name, const struct mc_buf *route,
                    const char *mailbox, size_t mailbox_len, const char *host, size_t host_len)
{
    struct mc_buf *o = p->out;

    if (p->count == 0)
        buf_addc(o, '(');
    buf_addc(o, '(');
    if (name != NULL)
        imap_add_bufstring(o, name);
    else
        buf_adds(o, "NIL");
    buf_addc(o, ' ');
    if (route != NULL)
        imap_add_bufstring(o, route);
    else
        buf_adds(o, "NIL");
    buf_addc(o, ' ');
    if (mailbox != NULL)
        imap_add_string(o, mailbox, mailbox_len);
    else
        buf_adds(o, "NIL");
    buf_addc(o, ' ');
    if (host != NULL)
        imap_add_string(o, host, host_len);
    else
        buf_adds(o, "NIL");
    buf_addc(o, ')');
    p->count++;
}

static void ap_emit_mailbox(struct addr_parser *p, bool have_name, bool have_route)
{
    static const char missing_mailbox[] = "MISSING_MAILBOX";
    static const char missing_domain[] = "MISSING_DOMAIN";
    const char *mb = p->mailbox.data, *host = p->host.data;
    size_t mb_len = p->mailbox.len, host_len = p->host.len;

    if (mb_len == 0) {
        mb = missing_mailbox;
        mb_len = sizeof(missing_mailbox) - 1;
    }
    if (host_len == 0) {
        host = missing_domain;
        host_len = sizeof(missing_domain) - 1;
    }
    ap_emit(p, have_name ? &p->name : NULL, have_route ? &p->route : NULL, mb, mb_len, host,
            host_len);
}

/* ap_add_raw - append a token's raw bytes. */
static void ap_add_raw(struct mc_buf *b, const char *v, const struct tok *t)
{
    buf_add(b, v + t->start, t->len);
}

/* ap_skip_to_separator - skip junk up to (not including) ',' or ';'. */
static size_t ap_skip_to_separator(const struct addr_parser *p, size_t i)
{
    while (i < p->n && !ap_is(p, i, ',') && !ap_is(p, i, ';'))
        i++;
    return i;
}

/* ap_addr_spec - local-part ["@" domain] from token i; stops at '>', ',',
 * ';' or the end. Fills p->mailbox and p->host; returns the next index. */
static size_t ap_addr_spec(struct addr_parser *p, size_t i)
{
    p->mailbox.len = 0;
    p->host.len = 0;
    for (;;) {
        i = ap_peek(p, i);
        if (i >= p->n || p->t[i].kind == TK_SPECIAL)
            break;
        if (p->mailbox.len > 0 && p->t[i].ws_before)
            buf_addc(&p->mailbox, ' ');
        ap_add_raw(&p->mailbox, p->v, &p->t[i]);
        i++;
    }
    if (!ap_is(p, i, '@'))
        return i;
    i++;
    for (;;) {
        i = ap_peek(p, i);
        if (i >= p->n || ap_is(p, i, '>') || ap_is(p, i, ',') || ap_is(p, i, ';') ||
            ap_is(p, i, '<'))
            break;
        if (p->t[i].kind != TK_SPECIAL) /* stray '@', ':' in a domain are dropped */
            ap_add_raw(&p->host, p->v, &p->t[i]);
        i++;
    }
    return i;
}

/* ap_one - parse one mailbox, group start, or skip one junk token. Always
 * consumes at least one token, so the caller's loop terminates. */
static size_t ap_one(struct addr_parser *p, size_t i, bool *in_group)
{
    size_t first = i, j = i;

    /* phrase: words up to a special */
    p->name.len = 0;
    for (;;) {
        j = ap_peek(p, j);
        if (j >= p->n || p->t[j].kind == TK_SPECIAL)
            break;
        if (p->name.len > 0 && p->t[j].ws_before)
            buf_addc(&p->name, ' ');
        if (p->t[j].kind == TK_QUOTED)
            ap_add_unquoted(&p->name, p->v, &p->t[j]);
        else
            ap_add_raw(&p->name, p->v, &p->t[j]);
        j++;
    }

    if (ap_is(p, j, ':') && !*in_group) {
        /* group start: (NIL NIL "name" NIL) */
        ap_emit(p, NULL, NULL, p->name.data != NULL ? p->name.data : "", p->name.len, NULL, 0);
        *in_group = true;
        return j + 1;
    }
    if (ap_is(p, j, '<')) {
        bool have_route = false;
        size_t k = ap_peek(p, j + 1);

        p->route.len = 0;
        if (ap_is(p, k, '@')) {
            /* obs-route: "@a,@b:" before the addr-spec */
            size_t r = k;

            /* only "@", ",", domains and comments can come before the
             * ':'; stopping at anything else keeps the scan within this
             * address, so parsing stays linear overall */
            while (r < p->n && (p->t[r].kind != TK_SPECIAL || ap_is(p, r, '@') ||
                                ap_is(p, r, ',')))
                r++;
            if (ap_is(p, r, ':')) {
                for (size_t x = k; x < r; x++) {
                    if (p->t[x].kind != TK_COMMENT)
                        ap_add_raw(&p->route, p->v, &p->t[x]);
                }
                have_route = true;
                k = r + 1;
            }
        }
        k = ap_addr_spec(p, k);
        k = ap_peek(p, k);
        if (ap_is(p, k, '>'))
            k++;
        ap_emit_mailbox(p, p->name.len > 0, have_route);
        return ap_skip_to_separator(p, k);
    }

    /* addr-spec, its name (if any) from a comment inside it */
    size_t k = ap_addr_spec(p, first);
    size_t end = ap_skip_to_separator(p, k);

    if (p->mailbox.len == 0 && p->host.len == 0) {
        /* nothing usable: drop one token */
        return i < end ? end : i + 1;
    }
    p->name.len = 0;
    for (size_t x = first; x < end; x++) {
        if (p->t[x].kind == TK_COMMENT) {
            p->name.len = 0;
            ap_add_unquoted(&p->name, p->v, &p->t[x]);
        }
    }
    /* a comment name is trimmed like a phrase */
    while (p->name.len > 0 && (p->name.data[p->name.len - 1] == ' ' ||
                               p->name.data[p->name.len - 1] == '\t'))
        p->name.len--;
    size_t lead = 0;
    while (lead < p->name.len && (p->name.data[lead] == ' ' || p->name.data[lead] == '\t'))
        lead++;
    if (lead > 0) {
        memmove(p->name.data, p->name.data + lead, p->name.len - lead);
        p->name.len -= lead;
    }
    ap_emit_mailbox(p, p->name.len > 0, false);
    return end;
}

/* add_address_list - the IMAP address list of an unfolded header value:
 * "((name adl mailbox host)...)" or NIL when it holds no address. Groups
 * become (NIL NIL "group" NIL) ... (NIL NIL NIL NIL) as RFC 3501 says;
 * an unterminated group is closed at the end. Returns the count. At most
 * MIME_CACHE_MAX_ADDRESSES entries from the first
 * MIME_CACHE_MAX_ADDRESS_FIELD bytes (else MIME_CACHE_FLAG_TRUNCATED):
 * "a:b;" costs 4 input bytes and 64 output bytes, and the envelope is
 * stored with every message and sent with every FETCH ENVELOPE. */
static size_t add_address_list(struct mc_buf *out, const struct mc_buf *value, struct toks *toks,
                               uint32_t *flags)
{
    struct addr_parser p = { .v = value->data, .out = out };
    bool in_group = false;
    size_t i = 0, len = value->len;

    if (len > MIME_CACHE_MAX_ADDRESS_FIELD) {
        /* cut at the last comma before the limit, not inside an address */
        const char *comma = memrchr(value->data, ',', MIME_CACHE_MAX_ADDRESS_FIELD);

        len = comma != NULL ? (size_t)(comma - value->data) : MIME_CACHE_MAX_ADDRESS_FIELD;
        *flags |= MIME_CACHE_FLAG_TRUNCATED;
    }
    tokenize_822(value->data, len, toks);
    p.t = toks->t;
    p.n = toks->n;
    for (;;) {
        i = ap_peek(&p, i);
        if (i >= p.n)
            break;
        if (p.count >= MIME_CACHE_MAX_ADDRESSES) {
            *flags |= MIME_CACHE_FLAG_TRUNCATED;
            break;
        }
        if (ap_is(&p, i, ',')) {
            i++;
            continue;
        }
        if (ap_is(&p, i, ';')) {
            if (in_group) {
                ap_emit(&p, NULL, NULL, NULL, 0, NULL, 0);
                in_group = false;
            }
            i++;
            continue;
        }
        if (p.t[i].kind == TK_SPECIAL && !ap_is(&p, i, '<') && !ap_is(&p, i, ':') &&
            !ap_is(&p, i, '@')) {
            i++; /* stray '>', ')', ']' or '\' */
            continue;
        }
        if (ap_is(&p, i, ':')) {
            i++; /* ':' without a group name, or a nested group */
            continue;
        }
        i = ap_one(&p, i, &in_group);
    }
    if (in_group)
        ap_emit(&p, NULL, NULL, NULL, 0, NULL, 0);
    if (p.count == 0)
        buf_adds(out, "NIL");
    else
        buf_addc(out, ')');
    buf_free(&p.name);
    buf_free(&p.route);
    buf_free(&p.mailbox);
    buf_free(&p.host);
    return p.count;
}

/* add_envelope - "(date subject from sender reply-to to cc bcc
 * in-reply-to message-id)"; sender and reply-to fall back to from when
 * absent or empty (RFC 3501 7.4.2). */
static void add_envelope(struct mc_buf *out, const unsigned char *msg, const struct headers *h,
                         uint32_t *flags)
{
    struct mc_buf tmp = { 0 }, from = { 0 }, list = { 0 };
    struct toks toks = { 0 };
    static const enum hf addr_fields[] = { HF_SENDER, HF_REPLY_TO, HF_TO, HF_CC, HF_BCC };

    buf_addc(out, '(');
    add_field_nstring(out, msg, &h->f[HF_DATE], &tmp);
    buf_addc(out, ' ');
    add_field_nstring(out, msg, &h->f[HF_SUBJECT], &tmp);
    buf_addc(out, ' ');

    if (h->f[HF_FROM].present) {
        field_value(msg, &h->f[HF_FROM], &tmp);
        add_address_list(&from, &tmp, &toks, flags);
    } else {
        buf_adds(&from, "NIL");
    }
    buf_addbuf(out, &from);
    for (size_t i = 0; i < sizeof(addr_fields) / sizeof(addr_fields[0]); i++) {
        enum hf f = addr_fields[i];
        size_t n = 0;

        buf_addc(out, ' ');
        list.len = 0;
        if (h->f[f].present) {
            field_value(msg, &h->f[f], &tmp);
            n = add_address_list(&list, &tmp, &toks, flags);
        }
        if (n == 0 && (f == HF_SENDER || f == HF_REPLY_TO))
            buf_addbuf(out, &from);
        else if (n == 0)
            buf_adds(out, "NIL");
        else
            buf_addbuf(out, &list);
    }
    buf_addc(out, ' ');
    add_field_nstring(out, msg, &h->f[HF_IN_REPLY_TO], &tmp);
    buf_addc(out, ' ');
    add_field_nstring(out, msg, &h->f[HF_MESSAGE_ID], &tmp);
    buf_addc(out, ')');
    buf_free(&tmp);
    buf_free(&from);
    buf_free(&list);
    free(toks.t);
}

/* ------------------------------------------------------------------ */
/* RFC 2045 structured fields (Content-Type, -Disposition, -Language,   */
/* -Transfer-Encoding).                                                 */

struct mlex {
    const char *v;
    size_t n;
    size_t i;
};

/* is_token_char - RFC 2045 token: no SP, CTL or tspecial; 8-bit bytes
 * are accepted (lenient, they occur in the wild). */
static bool is_token_char(unsigned char c)
{
    switch (c) {
    case '(': case ')': case '<': case '>': case '@': case ',': case ';': case ':':
    case '\\': case '"': case '/': case '[': case ']': case '?': case '=':
        return false;
    default:
        return c > 0x20 && c != 0x7f;
    }
}

static void mlex_skip_cfws(struct mlex *l)
{
    while (l->i < l->n) {
        char c = l->v[l->i];

        if (c == ' ' || c == '\t')
            l->i++;
        else if (c == '(')
            l->i = skip_delimited(l->v, l->n, l->i, '(', ')');
        else
            break;
    }
}

static bool mlex_token(struct mlex *l, size_t *start_r, size_t *len_r)
{
    size_t s;

    mlex_skip_cfws(l);
    s = l->i;
    while (l->i < l->n && is_token_char((unsigned char)l->v[l->i]))
        l->i++;
    *start_r = s;
    *len_r = l->i - s;
    return l->i > s;
}

static bool mlex_char(struct mlex *l, char c)
{
    mlex_skip_cfws(l);
    if (l->i < l->n && l->v[l->i] == c) {
        l->i++;
        return true;
    }
    return false;
}

/* mlex_value - a parameter value: a quoted-string (unescaped; junk after
 * it up to ';' is ignored), or else everything up to the next ';' with
 * blanks trimmed. The second form is GMime's lenient reading, so that
 * name=my file.txt gives "my file.txt" as GMime and mail clients see it.
 * An empty value is no value. */
static void mlex_skip_param(struct mlex *l);

static bool mlex_value(struct mlex *l, struct mc_buf *out)
{
    size_t s, e;

    out->len = 0;
    while (l->i < l->n && (l->v[l->i] == ' ' || l->v[l->i] == '\t'))
        l->i++;
    if (l->i < l->n && l->v[l->i] == '"') {
        size_t qs = l->i;

        l->i = skip_delimited(l->v, l->n, l->i, '"', '"');
        add_unquoted(out, l->v, qs, l->i);
        mlex_skip_param(l);
        return true;
    }
    s = l->i;
    while (l->i < l->n && l->v[l->i] != ';')
        l->i++;
    e = l->i;
    while (e > s && (l->v[e - 1] == ' ' || l->v[e - 1] == '\t'))
        e--;
    if (e == s)
        return false;
    buf_add(out, l->v + s, e - s);
    return true;
}

/* mlex_skip_param - resynchronise after junk: up to the next ';' outside
 * quoted strings and comments. */
static void mlex_skip_param(struct mlex *l)
{
    while (l->i < l->n && l->v[l->i] != ';') {
        if (l->v[l->i] == '"')
            l->i = skip_delimited(l->v, l->n, l->i, '"', '"');
        else if (l->v[l->i] == '(')
            l->i = skip_delimited(l->v, l->n, l->i, '(', ')');
        else
            l->i++;
    }
}

static bool ascii_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);

    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

/* Parsed parameters: IMAP-encoded "name" "value" pairs, space-separated. */
struct params {
    struct mc_buf imap;
    size_t count;
    bool has_charset;
    bool has_boundary;
    struct mc_buf boundary; /* value of the first "boundary" */
};

static void params_free(struct params *p)
{
    buf_free(&p->imap);
    buf_free(&p->boundary);
}

/* parse_params - "; name=value" pairs until the end. Values are kept as
 * written (RFC 2231 "name*" forms included); a parameter without a name,
 * '=' or value is skipped. */
static void parse_params(struct mlex *l, struct params *p)
{
    struct mc_buf value = { 0 };

    p->imap.len = 0;
    p->count = 0;
    p->has_charset = false;
    p->has_boundary = false;
    for (;;) {
        size_t ns, nn;

        mlex_skip_cfws(l);
        if (l->i >= l->n)
            break;
        if (l->v[l->i] != ';') {
            mlex_skip_param(l);
            continue;
        }
        l->i++;
        if (!mlex_token(l, &ns, &nn) || !mlex_char(l, '=') || !mlex_value(l, &value)) {
            mlex_skip_param(l);
            continue;
        }
        if (p->count > 0)
            buf_addc(&p->imap, ' ');
        imap_add_string(&p->imap, l->v + ns, nn);
        buf_addc(&p->imap, ' ');
        imap_add_bufstring(&p->imap, &value);
        p->count++;
        if (ascii_ieq(l->v + ns, nn, "charset"))
            p->has_charset = true;
        if (ascii_ieq(l->v + ns, nn, "boundary") && !p->has_boundary) {
            p->has_boundary = true;
            p->boundary.len = 0;
            buf_addbuf(&p->boundary, &value);
        }
    }
    buf_free(&value);
}

/* ------------------------------------------------------------------ */
/* The entity walk.                                                     */

struct build_ctx {
    const unsigned char *msg;
    size_t len;
    struct mc_buf env;  /* root envelope */
    struct mc_buf bs;   /* BODYSTRUCTURE */
    struct mc_buf body; /* BODY */
    struct mime_cache_part *parts;
    uint32_t nparts;
    uint32_t cap;
    uint32_t flags;
};

enum env_mode {
    ENV_NONE,   /* a body part: no envelope */
    ENV_ROOT,   /* the message: envelope into ctx->env */
    ENV_INLINE, /* embedded message/rfc822: envelope written before its body */
};

static uint32_t add_part(struct build_ctx *ctx)
{
    if (ctx->nparts == ctx->cap) {
        ctx->cap = ctx->cap != 0 ? ctx->cap * 2 : 16;
        ctx->parts = mx_reallocarray(ctx->parts, ctx->cap, sizeof(*ctx->parts));
    }
    memset(&ctx->parts[ctx->nparts], 0, sizeof(ctx->parts[0]));
    return ctx->nparts++;
}

static uint64_t count_lf(const unsigned char *p, size_t n)
{
    uint64_t lines = 0;
    const unsigned char *end = p + n;

    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));

        if (nl == NULL)
            break;
        lines++;
        p = nl + 1;
    }
    return lines;
}

/* Content information of one entity. */
struct content {
    struct mc_buf type;
    struct mc_buf subtype;
    struct params params;
    bool is_text;
    bool is_multipart; /* multipart/... with a boundary */
    bool is_message;   /* message/rfc822 */
};

static void content_free(struct content *c)
{
    buf_free(&c->type);
    buf_free(&c->subtype);
    params_free(&c->params);
}

static void content_set_default(struct content *c, bool digest_child)
{
    c->type.len = 0;
    c->subtype.len = 0;
    c->params.imap.len = 0;
    c->params.count = 0;
    c->params.has_charset = false;
    c->params.has_boundary = false;
    if (digest_child) {
        buf_adds(&c->type, "message");
        buf_adds(&c->subtype, "rfc822");
    } else {
        buf_adds(&c->type, "text");
        buf_adds(&c->subtype, "plain");
    }
}

/* gmime_boundary - the boundary parameter as GMime reads it (quoting,
 * RFC 2231 continuations and charsets, lenient unquoted values), so that
 * the delimiters we look for are the ones GMime's parser looks for. value
 * is the unfolded Content-Type value (no NUL inside). */
static void gmime_boundary(struct mc_buf *value, struct params *p)
{
    GMimeContentType *ct;
    const char *b;

    mime_cache_gmime_init();
    buf_reserve(value, 1);
    value->data[value->len] = '\0';
    ct = g_mime_content_type_parse(NULL, value->data);
    b = ct != NULL ? g_mime_content_type_get_parameter(ct, "boundary") : NULL;
    p->boundary.len = 0;
    p->has_boundary = b != NULL && b[0] != '\0';
    if (p->has_boundary)
        buf_adds(&p->boundary, b);
    if (ct != NULL)
        g_object_unref(ct);
}

/* parse_content - Content-Type "type/subtype; params", or the RFC 2045
 * default (text/plain, or message/rfc822 inside multipart/digest) when the
 * field is absent or its type/subtype is malformed. */
static void parse_content(const unsigned char *msg, const struct headers *h, bool digest_child,
                          struct content *c, struct mc_buf *tmp)
{
    size_t ts, tn, ss, sn;
    struct mlex l;

    content_set_default(c, digest_child);
    if (h->f[HF_CONTENT_TYPE].present) {
        field_value(msg, &h->f[HF_CONTENT_TYPE], tmp);
        l = (struct mlex){ .v = tmp->data, .n = tmp->len };
        if (mlex_token(&l, &ts, &tn) && mlex_char(&l, '/') && mlex_token(&l, &ss, &sn)) {
            c->type.len = 0;
            c->subtype.len = 0;
            buf_add(&c->type, tmp->data + ts, tn);
            buf_add(&c->subtype, tmp->data + ss, sn);
            parse_params(&l, &c->params);
            /* GMime builds an object per parameter: a hostile megabyte
             * of "; a=b" would cost tens of megabytes there, so beyond
             * any real Content-Type our own reading of the value counts */
            if (ascii_ieq(c->type.data, c->type.len, "multipart") &&
                tmp->len <= MIME_CACHE_GMIME_CT_MAX)
                gmime_boundary(tmp, &c->params);
        }
    }
    c->is_text = ascii_ieq(c->type.data, c->type.len, "text");
    c->is_multipart = ascii_ieq(c->type.data, c->type.len, "multipart") &&
                      c->params.has_boundary && c->params.boundary.len > 0;
    c->is_message = ascii_ieq(c->type.data, c->type.len, "message") &&
                    ascii_ieq(c->subtype.data, c->subtype.len, "rfc822");
    if (ascii_ieq(c->type.data, c->type.len, "multipart") && !c->is_multipart) {
        /* a multipart without a boundary has no parts we could find */
        content_set_default(c, false);
        c->is_text = true;
    }
}

/* add_params - "(...)" or NIL; text parts get the us-ascii default first. */
static void add_params(struct mc_buf *b, const struct content *c)
{
    bool dflt = c->is_text && !c->params.has_charset;

    if (c->params.count == 0 && !dflt) {
        buf_adds(b, "NIL");
        return;
    }
    buf_addc(b, '(');
    if (dflt) {
        buf_adds(b, "\"charset\" \"us-ascii\"");
        if (c->params.count > 0)
            buf_addc(b, ' ');
    }
    buf_addbuf(b, &c->params.imap);
    buf_addc(b, ')');
}

static void add_encoding(struct mc_buf *b, const unsigned char *msg, const struct headers *h,
                         struct mc_buf *tmp)
{
    size_t s, n;
    struct mlex l;

    if (h->f[HF_CONTENT_TRANSFER_ENCODING].present) {
        field_value(msg, &h->f[HF_CONTENT_TRANSFER_ENCODING], tmp);
        l = (struct mlex){ .v = tmp->data, .n = tmp->len };
        if (mlex_token(&l, &s, &n)) {
            mlex_skip_cfws(&l);
            if (l.i == l.n) {
                for (size_t i = s; i < s + n; i++) {
                    if (tmp->data[i] >= 'a' && tmp->data[i] <= 'z')
                        tmp->data[i] = (char)(tmp->data[i] - 'a' + 'A');
                }
                imap_add_string(b, tmp->data + s, n);
                return;
            }
        }
    }
    buf_adds(b, "\"7BIT\"");
}

/* add_disposition - ("type" params) or NIL. */
static void add_disposition(struct mc_buf *b, const unsigned char *msg, const struct headers *h,
                            struct mc_buf *tmp)
{
    size_t s, n;
    struct mlex l;
    struct params p = { 0 };

    if (!h->f[HF_CONTENT_DISPOSITION].present) {
        buf_adds(b, "NIL");
        return;
    }
    field_value(msg, &h->f[HF_CONTENT_DISPOSITION], tmp);
    l = (struct mlex){ .v = tmp->data, .n = tmp->len };
    if (!mlex_token(&l, &s, &n)) {
        buf_adds(b, "NIL");
        return;
    }
    buf_addc(b, '(');
    imap_add_string(b, tmp->data + s, n);
    buf_addc(b, ' ');
    parse_params(&l, &p);
    if (p.count == 0) {
        buf_adds(b, "NIL");
    } else {
        buf_addc(b, '(');
        buf_addbuf(b, &p.imap);
        buf_addc(b, ')');
    }
    buf_addc(b, ')');
    params_free(&p);
}

/* add_language - ("en" "fi") or NIL: the tokens of a comma list. */
static void add_language(struct mc_buf *b, const unsigned char *msg, const struct headers *h,
                         struct mc_buf *tmp)
{
    size_t s, n, count = 0;
    struct mlex l;

    if (!h->f[HF_CONTENT_LANGUAGE].present) {
        buf_adds(b, "NIL");
        return;
    }
    field_value(msg, &h->f[HF_CONTENT_LANGUAGE], tmp);
    l = (struct mlex){ .v = tmp->data, .n = tmp->len };
    for (;;) {
        if (mlex_token(&l, &s, &n)) {
            buf_adds(b, count == 0 ? "(" : " ");
            imap_add_string(b, tmp->data + s, n);
            count++;
            continue;
        }
        if (l.i >= l.n)
            break;
        l.i++; /* ',' or junk */
    }
    buf_adds(b, count == 0 ? "NIL" : ")");
}

/* add_dsp_lang_loc - the body-ext-1part / body-ext-mpart tail after the
 * MD5 (leaf) or parameters (multipart): disposition, language, location. */
static void add_dsp_lang_loc(struct mc_buf *b, const unsigned char *msg, const struct headers *h,
                             struct mc_buf *tmp)
{
    buf_addc(b, ' ');
    add_disposition(b, msg, h, tmp);
    buf_addc(b, ' ');
    add_language(b, msg, h, tmp);
    buf_addc(b, ' ');
    add_field_nstring(b, msg, &h->f[HF_CONTENT_LOCATION], tmp);
}

static void walk_entity(struct build_ctx *ctx, size_t hdr_start, size_t end, unsigned int depth,
                        bool digest_child, enum env_mode env);

/* add_fake_part - RFC 3501 wants at least one body in a multipart; one
 * without any delimiter gets an empty text/plain part (as Dovecot does),
 * with an empty range at the end of the multipart. */
static void add_fake_part(struct build_ctx *ctx, size_t at)
{
    static const char fake[] = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 0 0";
    uint32_t idx = add_part(ctx);

    ctx->parts[idx].kind = MIME_CACHE_LEAF;
    ctx->parts[idx].hdr_start = ctx->parts[idx].body_start = ctx->parts[idx].end = (uint32_t)at;
    buf_adds(&ctx->bs, fake);
    buf_adds(&ctx->bs, " NIL NIL NIL NIL)");
    buf_adds(&ctx->body, fake);
    buf_addc(&ctx->body, ')');
}

/* segment_is_void - true if the body part whose raw bytes (up to the
 * start of the next delimiter line, its line break included) are
 * msg[s..e) has nothing GMime would build a part from: it is empty, or it
 * ends at a delimiter with neither a valid header line ("name:" with a
 * non-empty name without blanks) nor a blank line. A last part cut off by
 * the end of the message counts as long as it is not empty. We follow
 * GMime here so that part numbers agree with its tree. Stops at the first
 * line that decides, so junk is scanned at most twice. */
static bool segment_is_void(const unsigned char *msg, size_t s, size_t e, bool at_eof)
{
    size_t pos = s;

    if (s >= e)
        return true;
    if (at_eof)
        return false;

    while (pos < e) {
        const unsigned char *nl = memchr(msg + pos, '\n', e - pos);
        size_t line_end = nl != NULL ? (size_t)(nl - msg) : e;
        size_t next = nl != NULL ? line_end + 1 : e;
        size_t content_end = line_end;

        if (content_end > pos && msg[content_end - 1] == '\r')
            content_end--;
        if (content_end == pos && nl != NULL)
            return false; /* blank line */
        if (msg[pos] != ' ' && msg[pos] != '\t') {
            const unsigned char *colon = memchr(msg + pos, ':', content_end - pos);

            if (colon != NULL) {
                size_t name_end = (size_t)(colon - msg);

                while (name_end > pos && (msg[name_end - 1] == ' ' || msg[name_end - 1] == '\t'))
                    name_end--;
                if (name_end > pos && memchr(msg + pos, ' ', name_end - pos) == NULL &&
                    memchr(msg + pos, '\t', name_end - pos) == NULL)
                    return false; /* a header field */
            }
        }
        pos = next;
    }
    return true;
}

/* delimiter_kind - 1 if msg[s..e) (a line without its line break) is a
 * delimiter "--boundary", 2 if it is the close delimiter "--boundary--",
 * else 0. Only SP/HTAB (and a stray CR) may follow, as in GMime. */
static int delimiter_kind(const unsigned char *msg, size_t s, size_t e, const struct mc_buf *bnd)
{
    size_t i;
    int kind = 1;

    if (e - s < 2 + bnd->len || msg[s] != '-' || msg[s + 1] != '-' ||
        memcmp(msg + s + 2, bnd->data, bnd->len) != 0)
        return 0;
    i = s + 2 + bnd->len;
    if (e - i >= 2 && msg[i] == '-' && msg[i + 1] == '-') {
        kind = 2;
        i += 2;
    }
    for (; i < e; i++) {
        if (msg[i] != ' ' && msg[i] != '\t' && msg[i] != '\r')
            return 0;
    }
    return kind;
}

/* walk_multipart - the body parts of a multipart whose body is
 * msg[b..e). The line break before a delimiter line belongs to the
 * delimiter; after the close delimiter everything is epilogue; without
 * one the last part runs to e. Returns the number of parts added. */
static uint32_t walk_multipart(struct build_ctx *ctx, size_t b, size_t e, const struct mc_buf *bnd,
                               unsigned int depth, bool digest)
{
    const unsigned char *msg = ctx->msg;
    size_t pos = b, seg_start = 0;
    bool in_part = false;
    uint32_t count = 0;
    bool closed = false;

    while (pos < e && !closed) {
        const unsigned char *nl = memchr(msg + pos, '\n', e - pos);
        size_t line_end = nl != NULL ? (size_t)(nl - msg) : e;
        size_t next = nl != NULL ? line_end + 1 : e;
        int kind = delimiter_kind(msg, pos, line_end, bnd);

        if (kind != 0) {
            if (in_part) {
                size_t seg_end = pos;

                if (seg_end > seg_start && msg[seg_end - 1] == '\n')
                    seg_end--;
                if (seg_end > seg_start && msg[seg_end - 1] == '\r')
                    seg_end--;
                if (!segment_is_void(msg, seg_start, pos, false)) {
                    if (ctx->nparts >= MIME_CACHE_MAX_PARTS) {
                        ctx->flags |= MIME_CACHE_FLAG_TRUNCATED;
                        return count;
                    }
                    walk_entity(ctx, seg_start, seg_end, depth + 1, digest, ENV_NONE);
                    count++;
                }
            }
            in_part = kind == 1;
            closed = kind == 2;
            seg_start = next;
        }
        pos = next;
    }
    if (in_part && !segment_is_void(msg, seg_start, e, true)) {
        if (ctx->nparts >= MIME_CACHE_MAX_PARTS) {
            ctx->flags |= MIME_CACHE_FLAG_TRUNCATED;
            return count;
        }
        walk_entity(ctx, seg_start, e, depth + 1, digest, ENV_NONE);
        count++;
    }
    return count;
}

/* walk_entity - one MIME entity at msg[hdr_start..end): append its table
 * row (pre-order) and its BODYSTRUCTURE / BODY text, recursing into
 * multipart bodies and embedded messages. Recursion depth is bounded by
 * MIME_CACHE_MAX_DEPTH. */
static void walk_entity(struct build_ctx *ctx, size_t hdr_start, size_t end, unsigned int depth,
                        bool digest_child, enum env_mode env)
{
    const unsigned char *msg = ctx->msg;
    struct headers h;
    struct content c = { 0 };
    struct mc_buf tmp = { 0 }, common = { 0 };
    size_t body_start = scan_headers(msg, hdr_start, end, &h);
    uint32_t idx = add_part(ctx);
    uint8_t kind = MIME_CACHE_LEAF;

    if (env == ENV_ROOT) {
        add_envelope(&ctx->env, msg, &h, &ctx->flags);
    } else if (env == ENV_INLINE) {
        struct mc_buf e = { 0 };

        add_envelope(&e, msg, &h, &ctx->flags);
        buf_addbuf(&ctx->bs, &e);
        buf_addc(&ctx->bs, ' ');
        buf_addbuf(&ctx->body, &e);
        buf_addc(&ctx->body, ' ');
        buf_free(&e);
    }

    parse_content(msg, &h, digest_child, &c, &tmp);
    if (c.is_multipart || c.is_message) {
        /* room for this entity's first child is needed */
        if (depth < MIME_CACHE_MAX_DEPTH && ctx->nparts < MIME_CACHE_MAX_PARTS) {
            kind = c.is_multipart ? MIME_CACHE_MULTIPART : MIME_CACHE_MESSAGE;
        } else {
            ctx->flags |= MIME_CACHE_FLAG_TRUNCATED;
            content_set_default(&c, false);
            c.is_text = true;
            c.is_multipart = c.is_message = false;
        }
    }
    ctx->parts[idx].kind = kind;
    ctx->parts[idx].hdr_start = (uint32_t)hdr_start;
    ctx->parts[idx].body_start = (uint32_t)body_start;
    ctx->parts[idx].end = (uint32_t)end;

    buf_addc(&ctx->bs, '(');
    buf_addc(&ctx->body, '(');
    if (kind == MIME_CACHE_MULTIPART) {
        uint32_t n = walk_multipart(ctx, body_start, end, &c.params.boundary, depth,
                                    ascii_ieq(c.subtype.data, c.subtype.len, "digest"));

        if (n == 0) {
            add_fake_part(ctx, end);
            n = 1;
        }
        ctx->parts[idx].nchildren = n;
        buf_addc(&ctx->bs, ' ');
        imap_add_bufstring(&ctx->bs, &c.subtype);
        buf_addc(&ctx->body, ' ');
        imap_add_bufstring(&ctx->body, &c.subtype);
        buf_addc(&ctx->bs, ' ');
        add_params(&ctx->bs, &c);
        add_dsp_lang_loc(&ctx->bs, msg, &h, &tmp);
    } else {
        /* body-fields, shared by BODY and BODYSTRUCTURE */
        imap_add_bufstring(&common, &c.type);
        buf_addc(&common, ' ');
        imap_add_bufstring(&common, &c.subtype);
        buf_addc(&common, ' ');
        add_params(&common, &c);
        buf_addc(&common, ' ');
        add_field_nstring(&common, msg, &h.f[HF_CONTENT_ID], &tmp);
        buf_addc(&common, ' ');
        add_field_nstring(&common, msg, &h.f[HF_CONTENT_DESCRIPTION], &tmp);
        buf_addc(&common, ' ');
        add_encoding(&common, msg, &h, &tmp);
        buf_addc(&common, ' ');
        buf_addu(&common, end - body_start);
        buf_addbuf(&ctx->bs, &common);
        buf_addbuf(&ctx->body, &common);
        if (kind == MIME_CACHE_MESSAGE) {
            buf_addc(&ctx->bs, ' ');
            buf_addc(&ctx->body, ' ');
            walk_entity(ctx, body_start, end, depth + 1, false, ENV_INLINE);
            ctx->parts[idx].nchildren = 1;
        }
        if (kind == MIME_CACHE_MESSAGE || c.is_text) {
            common.len = 0;
            buf_addc(&common, ' ');
            buf_addu(&common, count_lf(msg + body_start, end - body_start));
            buf_addbuf(&ctx->bs, &common);
            buf_addbuf(&ctx->body, &common);
        }
        buf_addc(&ctx->bs, ' ');
        add_field_nstring(&ctx->bs, msg, &h.f[HF_CONTENT_MD5], &tmp);
        add_dsp_lang_loc(&ctx->bs, msg, &h, &tmp);
    }
    buf_addc(&ctx->bs, ')');
    buf_addc(&ctx->body, ')');
    content_free(&c);
    buf_free(&tmp);
    buf_free(&common);
}

int mime_cache_build(const void *message, size_t len, struct mime_cache **cache_r,
                     const char **error_r)
{
    struct build_ctx ctx = { .msg = message, .len = len };
    struct mime_cache *cache;

    *cache_r = NULL;
    if (len > UINT32_MAX) {
        *error_r = "message larger than 4 GiB";
        return -1;
    }
    if (message == NULL && len > 0) {
        *error_r = "no message data";
        return -1;
    }
    if (message == NULL)
        ctx.msg = (const unsigned char *)"";

    walk_entity(&ctx, 0, len, 0, false, ENV_ROOT);

    cache = mx_calloc(1, sizeof(*cache));
    cache->envelope = buf_steal(&ctx.env);
    cache->bodystructure = buf_steal(&ctx.bs);
    cache->body = buf_steal(&ctx.body);
    cache->message_size = (uint32_t)len;
    cache->flags = ctx.flags;
    cache->part_count = ctx.nparts;
    cache->parts = ctx.parts;
    *cache_r = cache;
    return 0;
}

void mime_cache_free(struct mime_cache **cache)
{
    struct mime_cache *c = *cache;

    if (c == NULL)
        return;
    free(c->envelope);
    free(c->bodystructure);
    free(c->body);
    free(c->parts);
    free(c);
    *cache = NULL;
}

/* ------------------------------------------------------------------ */
/* Section specs.                                                       */

/* subtree_next - index just after the subtree rooted at i. The table was
 * validated (built here or checked by deserialize), so this stays in
 * bounds; the guard only protects against misuse. */
static uint32_t subtree_next(const struct mime_cache *c, uint32_t i)
{
    uint64_t pending = 1;

    while (pending > 0 && i < c->part_count) {
        pending += c->parts[i].nchildren;
        pending--;
        i++;
    }
    return i;
}

/* child_at - the n-th (1-based) child of parent, or -1. */
static int child_at(const struct mime_cache *c, uint32_t parent, uint32_t n, uint32_t *idx_r)
{
    uint32_t i = parent + 1;

    if (n == 0 || n > c->parts[parent].nchildren)
        return -1;
    for (uint32_t k = 1; k < n; k++) {
        i = subtree_next(c, i);
        if (i >= c->part_count)
            return -1;
    }
    if (i >= c->part_count)
        return -1;
    *idx_r = i;
    return 0;
}

static bool spec_ieq(const char *s, const char *kw)
{
    return ascii_ieq(s, strlen(s), kw);
}

int mime_cache_section(const struct mime_cache *cache, const char *spec, size_t *offset_r,
                       size_t *len_r)
{
    uint32_t nums[MIME_CACHE_MAX_SECTION_PARTS];
    unsigned int nnums = 0;
    const char *p = spec;
    const char *kw = "";
    enum { KW_NONE, KW_HEADER, KW_TEXT, KW_MIME } kwtype = KW_NONE;
    /* role of cur: a message (root or embedded; HEADER/TEXT apply), a body
     * part, or a non-multipart message acting as its own part 1 */
    enum { R_MESSAGE, R_PART, R_SINGLE } role = R_MESSAGE;
    uint32_t cur = 0;
    size_t s, e;

    if (spec == NULL || cache == NULL || cache->part_count == 0)
        return -1;
    while (*p >= '0' && *p <= '9') {
        uint64_t v = 0;

        if (*p == '0')
            return -1; /* "0" and "01": nz-number */
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (uint64_t)(*p - '0');
            if (v > UINT32_MAX)
                return -1;
            p++;
        }
        if (nnums == MIME_CACHE_MAX_SECTION_PARTS)
            return -1;
        nums[nnums++] = (uint32_t)v;
        if (*p == '\0')
            break;
        if (*p != '.')
            return -1;
        p++;
        if (*p == '\0')
            return -1; /* "1." */
        if (*p < '0' || *p > '9')
            break;
    }
    kw = p;
    if (*kw == '\0')
        kwtype = KW_NONE;
    else if (spec_ieq(kw, "HEADER") || spec_ieq(kw, "HEADER.FIELDS") ||
             spec_ieq(kw, "HEADER.FIELDS.NOT"))
        kwtype = KW_HEADER;
    else if (spec_ieq(kw, "TEXT"))
        kwtype = KW_TEXT;
    else if (spec_ieq(kw, "MIME") && nnums > 0)
        kwtype = KW_MIME;
    else
        return -1;

    for (unsigned int k = 0; k < nnums; k++) {
        uint32_t n = nums[k];
        const struct mime_cache_part *cp = &cache->parts[cur];

        if (role != R_MESSAGE) {
            /* numbers below a part: its children, or the parts of the
             * message it carries */
            if (cp->kind == MIME_CACHE_MULTIPART) {
                if (child_at(cache, cur, n, &cur) < 0)
                    return 1;
                role = R_PART;
                continue;
            }
            if (cp->kind != MIME_CACHE_MESSAGE || cur + 1 >= cache->part_count)
                return 1;
            cur = cur + 1; /* the embedded message */
            cp = &cache->parts[cur];
            role = R_MESSAGE;
        }
        /* role == R_MESSAGE: the n-th part of this message */
        if (cp->kind == MIME_CACHE_MULTIPART) {
            if (child_at(cache, cur, n, &cur) < 0)
                return 1;
            role = R_PART;
        } else {
            if (n != 1)
                return 1;
            role = R_SINGLE;
        }
    }

    const struct mime_cache_part *cp = &cache->parts[cur];
    switch (kwtype) {
    case KW_NONE:
        if (role == R_MESSAGE) {
            s = cp->hdr_start;
            e = cp->end;
        } else {
            s = cp->body_start;
            e = cp->end;
        }
        break;
    case KW_MIME:
        s = cp->hdr_start;
        e = cp->body_start;
        break;
    case KW_HEADER:
    case KW_TEXT:
        if (role != R_MESSAGE) {
            if (cp->kind != MIME_CACHE_MESSAGE || cur + 1 >= cache->part_count)
                return 1;
            cp = &cache->parts[cur + 1];
        }
        if (kwtype == KW_HEADER) {
            s = cp->hdr_start;
            e = cp->body_start;
        } else {
            s = cp->body_start;
            e = cp->end;
        }
        break;
    default:
        return -1;
    }
    if (s > e || e > cache->message_size)
        return -1; /* cannot happen with a validated table */
    *offset_r = s;
    *len_r = e - s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* IMAP value syntax.                                                   */

bool mime_cache_imap_value_valid(const char *v, size_t n)
{
    enum { L_START, L_OPEN, L_CLOSE, L_SP, L_ITEM } last = L_START;
    size_t i = 0;
    unsigned int depth = 0;

    while (i < n) {
        unsigned char c = (unsigned char)v[i];

        if (depth == 0 && last != L_START)
            return false; /* bytes after the outer list */
        if (c == '(') {
            if (last == L_ITEM)
                return false;
            if (++depth > 1000)
                return false;
            last = L_OPEN;
            i++;
            continue;
        }
        if (last == L_START)
            return false;
        if (c == ')') {
            if (last == L_SP)
                return false;
            depth--;
            last = L_CLOSE;
            i++;
            continue;
        }
        if (c == ' ') {
            if (last == L_SP || last == L_OPEN)
                return false;
            last = L_SP;
            i++;
            continue;
        }
        if (last != L_OPEN && last != L_SP)
            return false;
        if (c == '"') {
            for (i++;; i++) {
                if (i >= n)
                    return false;
                c = (unsigned char)v[i];
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (i + 1 >= n || (v[i + 1] != '"' && v[i + 1] != '\\'))
                        return false;
                    i++;
                } else if (c == 0 || c == '\r' || c == '\n' || c >= 0x80) {
                    return false;
                }
            }
            i++;
        } else if (c == '{') {
            uint64_t len = 0;
            size_t digits = 0;

            for (i++; i < n && v[i] >= '0' && v[i] <= '9'; i++, digits++) {
                len = len * 10 + (uint64_t)(v[i] - '0');
                if (len > UINT32_MAX)
                    return false;
            }
            if (digits == 0 || n - i < 3 || v[i] != '}' || v[i + 1] != '\r' || v[i + 2] != '\n')
                return false;
            i += 3;
            if (len > n - i || memchr(v + i, '\0', (size_t)len) != NULL)
                return false;
            i += (size_t)len;
        } else if (c == 'N') {
            if (n - i < 3 || memcmp(v + i, "NIL", 3) != 0)
                return false;
            i += 3;
        } else if (c >= '0' && c <= '9') {
            while (i < n && v[i] >= '0' && v[i] <= '9')
                i++;
        } else {
            return false;
        }
        last = L_ITEM;
    }
    return depth == 0 && last == L_CLOSE;
}

/* ------------------------------------------------------------------ */
/* Serialization.                                                       */

#define BLOB_MAGIC "MXMC"
#define BLOB_VERSION 1
#define BLOB_PART_SIZE 17

static void put_u32(struct mc_buf *b, uint32_t v)
{
    unsigned char x[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 8), (unsigned char)v };

    buf_add(b, x, sizeof(x));
}

static void put_str(struct mc_buf *b, const char *s)
{
    size_t n = strlen(s);

    put_u32(b, (uint32_t)n);
    buf_add(b, s, n);
}

void mime_cache_serialize(const struct mime_cache *cache, uint8_t **blob_r, size_t *len_r)
{
    struct mc_buf b = { 0 };

    buf_reserve(&b, 32 + strlen(cache->envelope) + strlen(cache->bodystructure) +
                        strlen(cache->body) + (size_t)cache->part_count * BLOB_PART_SIZE);
    buf_add(&b, BLOB_MAGIC, 4);
    buf_addc(&b, (char)BLOB_VERSION);
    buf_addc(&b, (char)(cache->flags & 0xff));
    buf_addc(&b, 0);
    buf_addc(&b, 0);
    put_u32(&b, cache->message_size);
    put_str(&b, cache->envelope);
    put_str(&b, cache->bodystructure);
    put_str(&b, cache->body);
    put_u32(&b, cache->part_count);
    for (uint32_t i = 0; i < cache->part_count; i++) {
        const struct mime_cache_part *p = &cache->parts[i];

        buf_addc(&b, (char)p->kind);
        put_u32(&b, p->hdr_start);
        put_u32(&b, p->body_start);
        put_u32(&b, p->end);
        put_u32(&b, p->nchildren);
    }
    *len_r = b.len;
    *blob_r = (uint8_t *)buf_steal(&b);
}

struct reader {
    const unsigned char *p;
    size_t left;
};

static int get_u8(struct reader *r, uint8_t *v)
{
    if (r->left < 1)
        return -1;
    *v = r->p[0];
    r->p++;
    r->left--;
    return 0;
}

static int get_u32(struct reader *r, uint32_t *v)
{
    if (r->left < 4)
        return -1;
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 |
         (uint32_t)r->p[3];
    r->p += 4;
    r->left -= 4;
    return 0;
}

static int get_str(struct reader *r, char **s_r)
{
    uint32_t n;

    if (get_u32(r, &n) < 0 || n > r->left || memchr(r->p, '\0', n) != NULL)
        return -1;
    *s_r = mx_strndup((const char *)r->p, n);
    r->p += n;
    r->left -= n;
    return 0;
}

/* validate_tree - the invariants mime_cache_section() relies on. */
static int validate_tree(const struct mime_cache *c, const char **error_r)
{
    struct frame {
        uint32_t idx;
        uint32_t remaining;
        uint32_t lower; /* the next child starts at or after this */
    } stack[MIME_CACHE_MAX_DEPTH + 2];
    unsigned int sp = 0;
    const struct mime_cache_part *root;
    uint32_t i = 1;

    if (c->part_count == 0 || c->part_count > MIME_CACHE_MAX_PARTS + 1) {
        *error_r = "mime cache blob: bad part count";
        return -1;
    }
    root = &c->parts[0];
    if (root->hdr_start != 0 || root->end != c->message_size) {
        *error_r = "mime cache blob: root does not cover the message";
        return -1;
    }
    for (uint32_t k = 0; k < c->part_count; k++) {
        const struct mime_cache_part *p = &c->parts[k];

        if (p->kind > MIME_CACHE_MESSAGE || p->hdr_start > p->body_start ||
            p->body_start > p->end || p->end > c->message_size ||
            (p->kind == MIME_CACHE_LEAF && p->nchildren != 0) ||
            (p->kind == MIME_CACHE_MULTIPART && p->nchildren == 0) ||
            (p->kind == MIME_CACHE_MESSAGE && p->nchildren != 1)) {
            *error_r = "mime cache blob: invalid part";
            return -1;
        }
    }
    stack[sp++] = (struct frame){ 0, root->nchildren, root->body_start };
    while (sp > 0) {
        struct frame *top = &stack[sp - 1];
        const struct mime_cache_part *parent = &c->parts[top->idx];
        const struct mime_cache_part *p;

        if (top->remaining == 0) {
            sp--;
            continue;
        }
        if (i >= c->part_count) {
            *error_r = "mime cache blob: part tree truncated";
            return -1;
        }
        p = &c->parts[i];
        if (p->hdr_start < top->lower || p->end > parent->end ||
            (parent->kind == MIME_CACHE_MESSAGE &&
             (p->hdr_start != parent->body_start || p->end != parent->end))) {
            *error_r = "mime cache blob: part outside its parent";
            return -1;
        }
        top->remaining--;
        top->lower = p->end;
        if (p->nchildren > 0) {
            if (sp == sizeof(stack) / sizeof(stack[0])) {
                *error_r = "mime cache blob: parts nested too deep";
                return -1;
            }
            stack[sp++] = (struct frame){ i, p->nchildren, p->body_start };
        }
        i++;
    }
    if (i != c->part_count) {
        *error_r = "mime cache blob: parts left over after the tree";
        return -1;
    }
    return 0;
}

int mime_cache_deserialize(const void *blob, size_t len, struct mime_cache **cache_r,
                           const char **error_r)
{
    struct reader r = { .p = blob, .left = len };
    struct mime_cache *c;
    uint8_t version = 0, flags = 0, pad1 = 0, pad2 = 0;
    uint32_t count;

    *cache_r = NULL;
    if (blob == NULL || len < 8 || memcmp(blob, BLOB_MAGIC, 4) != 0) {
        *error_r = "mime cache blob: bad magic";
        return -1;
    }
    r.p += 4;
    r.left -= 4;
    (void)get_u8(&r, &version);
    (void)get_u8(&r, &flags);
    (void)get_u8(&r, &pad1);
    (void)get_u8(&r, &pad2);
    if (version != BLOB_VERSION) {
        *error_r = "mime cache blob: unknown version";
        return -1;
    }
    c = mx_calloc(1, sizeof(*c));
    c->flags = flags;
    if (get_u32(&r, &c->message_size) < 0 || get_str(&r, &c->envelope) < 0 ||
        get_str(&r, &c->bodystructure) < 0 || get_str(&r, &c->body) < 0 ||
        get_u32(&r, &count) < 0) {
        *error_r = "mime cache blob: truncated header";
        goto fail;
    }
    if (!mime_cache_imap_value_valid(c->envelope, strlen(c->envelope)) ||
        !mime_cache_imap_value_valid(c->bodystructure, strlen(c->bodystructure)) ||
        !mime_cache_imap_value_valid(c->body, strlen(c->body))) {
        *error_r = "mime cache blob: malformed IMAP value";
        goto fail;
    }
    if (count == 0 || count > MIME_CACHE_MAX_PARTS + 1 || r.left != (size_t)count * BLOB_PART_SIZE) {
        *error_r = "mime cache blob: part table size mismatch";
        goto fail;
    }
    c->parts = mx_calloc(count, sizeof(*c->parts));
    c->part_count = count;
    for (uint32_t i = 0; i < count; i++) {
        struct mime_cache_part *p = &c->parts[i];

        (void)get_u8(&r, &p->kind);
        (void)get_u32(&r, &p->hdr_start);
        (void)get_u32(&r, &p->body_start);
        (void)get_u32(&r, &p->end);
        (void)get_u32(&r, &p->nchildren);
    }
    if (validate_tree(c, error_r) < 0)
        goto fail;
    *cache_r = c;
    return 0;
fail:
    mime_cache_free(&c);
    return -1;
}
