/* mime_cache_gmime - cross-check a mime_cache against GMime's own parse.
 *
 * mime_cache finds MIME boundaries itself (see mime_cache.h for why); this
 * file keeps it honest: GMime 3 parses the same bytes through a zero-copy
 * memory stream with persistent content, and the two trees must agree on
 * nesting, kinds and the byte range of every leaf body. */
#include "mime_cache.h"

#include <gmime/gmime.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char cmp_error[256];

static int cmp_fail(const char **error_r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int cmp_fail(const char **error_r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmp_error, sizeof(cmp_error), fmt, ap);
    va_end(ap);
    *error_r = cmp_error;
    return -1;
}

static uint32_t cache_subtree_next(const struct mime_cache *c, uint32_t i)
{
    uint64_t pending = 1;

    while (pending > 0 && i < c->part_count) {
        pending += c->parts[i].nchildren;
        pending--;
        i++;
    }
    return i;
}

static const char *kind_name(uint8_t kind)
{
    return kind == MIME_CACHE_MULTIPART ? "multipart" : kind == MIME_CACHE_MESSAGE ? "message"
                                                                                   : "leaf";
}

/* content_type_fields - how many Content-Type fields msg[s..e) has. GMime
 * takes the last one, mime_cache (like Dovecot) the first. */
static int content_type_fields(const unsigned char *msg, size_t s, size_t e)
{
    static const char name[] = "content-type:";
    size_t n = sizeof(name) - 1;
    int count = 0;

    for (size_t i = s; i + n <= e; i++) {
        if ((i == s || msg[i - 1] == '\n') && g_ascii_strncasecmp((const char *)msg + i, name, n) == 0)
            count++;
    }
    return count;
}

/* cmp_entity - compare the GMime content object obj (NULL: GMime built
 * nothing) with the cache entity at *i; *i moves past its subtree. */
static int cmp_entity(const struct mime_cache *c, const unsigned char *msg, GMimeObject *obj,
                      uint32_t *i, const char **error_r)
{
    const struct mime_cache_part *p;
    uint32_t me = *i;
    bool truncated = (c->flags & MIME_CACHE_FLAG_TRUNCATED) != 0;

    if (me >= c->part_count)
        return cmp_fail(error_r, "cache has fewer entities than GMime (at %u)", me);
    p = &c->parts[me];
    *i = cache_subtree_next(c, me);
    if (content_type_fields(msg, p->hdr_start, p->body_start) > 1)
        return 0; /* the two parsers disagree by design */

    if (obj == NULL || GMIME_IS_PART(obj)) {
        gint64 s = -1, e = -1;

        if (p->kind != MIME_CACHE_LEAF)
            return cmp_fail(error_r, "entity %u: GMime leaf, cache %s", me, kind_name(p->kind));
        if (obj != NULL) {
            GMimeDataWrapper *w = g_mime_part_get_content((GMimePart *)obj);
            GMimeStream *st = w != NULL ? g_mime_data_wrapper_get_stream(w) : NULL;

            if (st != NULL) {
                s = st->bound_start;
                e = st->bound_end >= 0 ? st->bound_end : (gint64)c->message_size;
            }
        }
        if (s < 0) {
            if (p->body_start != p->end)
                return cmp_fail(error_r, "entity %u: GMime has no content, cache %u..%u", me,
                                p->body_start, p->end);
            return 0;
        }
        /* an empty body's position is not significant: GMime places it
         * after the delimiter's line break when a part has no blank line */
        if (s == e && p->body_start == p->end)
            return 0;
        /* GMime keeps the CR of a CRLF that belongs to a delimiter line
         * which itself has no line break (last line of the message) */
        if (e == (gint64)p->end + 1 && msg[p->end] == '\r')
            e--;
        if ((uint32_t)s != p->body_start || (uint32_t)e != p->end)
            return cmp_fail(error_r, "entity %u: GMime body %lld..%lld, cache %u..%u", me,
                            (long long)s, (long long)e, p->body_start, p->end);
        return 0;
    }
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = (GMimeMultipart *)obj;
        int n = g_mime_multipart_get_count(mp);
        uint32_t k = me + 1;

        if (p->kind != MIME_CACHE_MULTIPART) {
            /* no boundary parameter: GMime makes an empty multipart, we
             * a text/plain leaf (RFC 2045's default) */
            if (p->kind == MIME_CACHE_LEAF && (truncated || n == 0))
                return 0;
            return cmp_fail(error_r, "entity %u: GMime multipart, cache %s", me,
                            kind_name(p->kind));
        }
        if (n == 0) {
            /* the cache's placeholder part */
            const struct mime_cache_part *f = &c->parts[me + 1];

            if (p->nchildren != 1 || f->kind != MIME_CACHE_LEAF || f->body_start != f->end)
                return cmp_fail(error_r, "entity %u: GMime has no parts, cache %u", me,
                                p->nchildren);
            return 0;
        }
        if ((uint32_t)n != p->nchildren && !(truncated && (uint32_t)n > p->nchildren))
            return cmp_fail(error_r, "entity %u: GMime %d parts, cache %u", me, n, p->nchildren);
        for (uint32_t j = 0; j < p->nchildren; j++) {
            if (cmp_entity(c, msg, g_mime_multipart_get_part(mp, (int)j), &k, error_r) < 0)
                return -1;
        }
        return 0;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *m = g_mime_message_part_get_message((GMimeMessagePart *)obj);
        uint32_t k = me + 1;

        if (p->kind != MIME_CACHE_MESSAGE) {
            if (truncated && p->kind == MIME_CACHE_LEAF)
                return 0;
            return cmp_fail(error_r, "entity %u: GMime message part, cache %s", me,
                            kind_name(p->kind));
        }
        return cmp_entity(c, msg, m != NULL ? g_mime_message_get_mime_part(m) : NULL, &k,
                          error_r);
    }
    return cmp_fail(error_r, "entity %u: unknown GMime object %s", me, G_OBJECT_TYPE_NAME(obj));
}

int mime_cache_check_gmime(const void *message, size_t len, const struct mime_cache *cache,
                           const char **error_r)
{
    GByteArray *array = NULL;
    GMimeStream *stream;
    GMimeParser *parser;
    GMimeMessage *msg;
    uint32_t i = 0;
    int ret;

    mime_cache_gmime_init();
    if (len > 0) {
        /* zero copy: the array borrows message; GMime only reads it, and
         * neither the stream (owner FALSE) nor g_byte_array_free(.., FALSE)
         * frees the bytes */
        array = g_byte_array_new_take((guint8 *)(uintptr_t)message, len);
        stream = g_mime_stream_mem_new_with_byte_array(array);
        g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(stream), FALSE);
    } else {
        stream = g_mime_stream_mem_new();
    }
    parser = g_mime_parser_new_with_stream(stream);
    g_mime_parser_set_persist_stream(parser, TRUE);
    msg = g_mime_parser_construct_message(parser, NULL);

    /* GMime builds nothing when the first line is not a header (and in a
     * few other malformed cases): it has no opinion to compare with */
    ret = msg == NULL ? 0
                     : cmp_entity(cache, message, g_mime_message_get_mime_part(msg), &i, error_r);
    if (ret == 0 && msg != NULL && i != cache->part_count)
        ret = cmp_fail(error_r, "cache has %u entities, GMime %u", cache->part_count, i);

    if (msg != NULL)
        g_object_unref(msg);
    g_object_unref(parser);
    g_object_unref(stream);
    if (array != NULL)
        (void)g_byte_array_free(array, FALSE);
    return ret;
}
