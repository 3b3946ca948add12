/* test_mime_cache - ENVELOPE / BODYSTRUCTURE / BODY strings, section
 * ranges, serialization and hostile input of store/mime_cache.c.
 *
 * Test vectors ported from Dovecot (MIT licence, (c) Dovecot authors):
 *   - src/lib-imap/test-imap-bodystructure.c (parse_tests[], all 8)
 *   - src/lib-imap/test-imap-envelope.c (parse_tests[], "copied from
 *     imaptest"), and imaptest src/tests/fetch-envelope
 *   - imaptest src/tests/fetch-body-mime, fetch-body-message-rfc822,
 *     fetch-body-message-rfc822-x2, fetch-body-message-rfc822-mime
 *     (BODY[section] contents).
 * Adaptations: Dovecot writes messages with LF and reports sizes as if
 * every LF were CRLF; we convert each message to CRLF first, so sizes and
 * line counts are the same numbers. Dovecot keeps the encoding's case
 * ("7bit"); we upper-case it ("7BIT", as RFC 3501's own examples do), so
 * the expected strings below carry upper-case encodings. Our strings are
 * complete IMAP values, so each expectation is wrapped in parentheses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <dirent.h>

#include "mime_cache.h"
#include "mx_alloc.h"

/* ------------------------------------------------------------------ */
/* helpers                                                              */

/* crlf - copy of s with every LF turned into CRLF (s has no CR). */
static char *crlf(const char *s, size_t *len_r)
{
    size_t n = strlen(s), lf = 0, j = 0;
    char *out;

    for (size_t i = 0; i < n; i++)
        lf += s[i] == '\n';
    out = mx_malloc(n + lf + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            out[j++] = '\r';
        out[j++] = s[i];
    }
    out[j] = '\0';
    *len_r = j;
    return out;
}

static char *paren(const char *s)
{
    return mx_asprintf("(%s)", s);
}

/* check_cache - the invariants every cache must satisfy: valid IMAP
 * values, a serialize -> deserialize round trip that gives the same
 * cache, and every resolvable section inside the message. */
static void check_cache(const void *msg, size_t len, const struct mime_cache *c)
{
    uint8_t *blob;
    size_t blob_len;
    struct mime_cache *d;
    const char *error;
    static const char *const specs[] = { "", "HEADER", "TEXT", "1", "1.MIME", "2", "1.1",
                                         "1.2.MIME", "2.HEADER", "2.TEXT", "1.1.1", "3.1.TEXT" };

    assert_true(mime_cache_imap_value_valid(c->envelope, strlen(c->envelope)));
    assert_true(mime_cache_imap_value_valid(c->bodystructure, strlen(c->bodystructure)));
    assert_true(mime_cache_imap_value_valid(c->body, strlen(c->body)));
    assert_int_equal(c->message_size, len);

    mime_cache_serialize(c, &blob, &blob_len);
    assert_int_equal(mime_cache_deserialize(blob, blob_len, &d, &error), 0);
    assert_string_equal(d->envelope, c->envelope);
    assert_string_equal(d->bodystructure, c->bodystructure);
    assert_string_equal(d->body, c->body);
    assert_int_equal(d->flags, c->flags);
    assert_int_equal(d->part_count, c->part_count);
    for (uint32_t i = 0; i < c->part_count; i++) {
        assert_int_equal(d->parts[i].kind, c->parts[i].kind);
        assert_int_equal(d->parts[i].hdr_start, c->parts[i].hdr_start);
        assert_int_equal(d->parts[i].body_start, c->parts[i].body_start);
        assert_int_equal(d->parts[i].end, c->parts[i].end);
        assert_int_equal(d->parts[i].nchildren, c->parts[i].nchildren);
    }
    mime_cache_free(&d);
    assert_null(d);
    free(blob);

    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        size_t off, n;
        int r = mime_cache_section(c, specs[i], &off, &n);

        assert_true(r == 0 || r == 1);
        if (r == 0)
            assert_true(off <= len && n <= len - off);
    }
    (void)msg;
}

static struct mime_cache *build(const void *msg, size_t len)
{
    struct mime_cache *c = NULL;
    const char *error = NULL;

    assert_int_equal(mime_cache_build(msg, len, &c, &error), 0);
    assert_non_null(c);
    check_cache(msg, len, c);
    return c;
}

static void assert_gmime_agrees(const void *msg, size_t len, const struct mime_cache *c)
{
    const char *error = NULL;

    if (mime_cache_check_gmime(msg, len, c, &error) != 0)
        fail_msg("GMime disagrees: %s", error);
}

/* ------------------------------------------------------------------ */
/* Dovecot test-imap-bodystructure.c parse_tests[]                      */

struct bs_vector {
    const char *message;
    const char *bodystructure;
    const char *body;
};

static const struct bs_vector bs_vectors[] = {
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: text/plain; charset=us-ascii\n"
                   "\n"
                   "body\n",
        .bodystructure = "\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 6 1 NIL NIL NIL NIL",
        .body = "\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 6 1",
    },
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: text/plain; charset=utf-8\n"
                   "Content-Transfer-Encoding: 8bit\n"
                   "\n"
                   "body\n"
                   "\n",
        .bodystructure = "\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8BIT\" 8 2 NIL NIL NIL NIL",
        .body = "\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8BIT\" 8 2",
    },
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: multipart/mixed; boundary=\"foo\n"
                   " bar\"\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: text/x-myown; charset=us-ascii\n"
                   "\n"
                   "hello\n"
                   "\n"
                   "--foo bar--\n"
                   "\n",
        .bodystructure = "(\"text\" \"x-myown\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 7 1 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo bar\") NIL NIL NIL",
        .body = "(\"text\" \"x-myown\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 7 1) \"mixed\"",
    },
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: multipart/mixed; boundary=\"foo bar\"\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: text/plain; charset=us-ascii\n"
                   "\n"
                   "See attached...\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: message/rfc822\n"
                   "\n"
                   "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: text/plain; charset=us-ascii\n"
                   "\n"
                   "body\n"
                   "\n"
                   "--foo bar--\n"
                   "\n",
        .bodystructure = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 17 1 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" 133 (\"Sat, 24 Mar 2017 23:00:00 +0200\" NIL ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 6 1 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo bar\") NIL NIL NIL",
        .body = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 17 1)(\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" 133 (\"Sat, 24 Mar 2017 23:00:00 +0200\" NIL ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 6 1) 6) \"mixed\"",
    },
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: multipart/mixed; boundary=\"foo bar\"\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: text/plain; charset=us-ascii\n"
                   "Content-ID: <A.frop.example.com>\n"
                   "Content-Description: Container message\n"
                   "\n"
                   "See attached...\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: message/rfc822\n"
                   "Content-ID: <B.frop.example.com>\n"
                   "Content-Description: Forwarded\n"
                   "\n"
                   "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: text/plain; charset=us-ascii\n"
                   "\n"
                   "body\n"
                   "\n"
                   "--foo bar--\n",
        .bodystructure = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"<A.frop.example.com>\" \"Container message\" \"7BIT\" 17 1 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL \"<B.frop.example.com>\" \"Forwarded\" \"7BIT\" 133 (\"Sat, 24 Mar 2017 23:00:00 +0200\" NIL ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 6 1 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo bar\") NIL NIL NIL",
        .body = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"<A.frop.example.com>\" \"Container message\" \"7BIT\" 17 1)(\"message\" \"rfc822\" NIL \"<B.frop.example.com>\" \"Forwarded\" \"7BIT\" 133 (\"Sat, 24 Mar 2017 23:00:00 +0200\" NIL ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) ((NIL NIL \"user\" \"domain.org\")) NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 6 1) 6) \"mixed\"",
    },
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: multipart/mixed; boundary=\"foo bar\"\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: text/plain; charset=us-ascii; format=\"flowed\";\n"
                   "  delsp=\"no\"\n"
                   "Content-Language: la\n"
                   "\n"
                   "Lorem ipsum dolor sit amet, consectetuer adipiscing elit. Aenean commodo\n"
                   "ligula eget dolor. Aenean massa. Cum sociis natoque penatibus et magnis dis\n"
                   "parturient montes, nascetur ridiculus mus. Donec quam felis, ultricies nec,\n"
                   "pellentesque eu, pretium quis, sem. Nulla consequat massa quis enim. Donec\n"
                   "pede justo, fringilla vel, aliquet nec, vulputate eget, arcu. In enim justo,\n"
                   "rhoncus ut, imperdiet a, venenatis vitae, justo. Nullam dictum felis eu pede\n"
                   "mollis pretium. Integer tincidunt. Cras dapibus. Vivamus elementum semper\n"
                   "nisi. Aenean vulputate eleifend tellus. Aenean leo ligula, porttitor eu,\n"
                   "consequat vitae, eleifend ac, enim. Aliquam lorem ante, dapibus in, viverra\n"
                   "quis, feugiat a, tellus. Phasellus viverra nulla ut metus varius laoreet.\n"
                   "Quisque rutrum. Aenean imperdiet. Etiam ultricies nisi vel augue. Curabitur\n"
                   "ullamcorper ultricies nisi. Nam eget dui.\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: image/png\n"
                   "Content-Transfer-Encoding: base64\n"
                   "Content-Disposition: attachment; filename=\"pigeon.png\"\n"
                   "\n"
                   "iVBORw0KGgoAAAANSUhEUgAAAB8AAAAfCAYAAAAfrhY5AAAABHNCSVQICAgIfAhkiAAAAAlwSFlz\n"
                   "AAAGJwAABicBTVTYxwAAABl0RVh0U29mdHdhcmUAd3d3Lmlua3NjYXBlLm9yZ5vuPBoAAAN2SURB\n"
                   "VEiJ7ZfdK7tvHMffZuWpKTlR1my3bTEPU0hJcsABh0QrKYUTJ5KyHCzlyPwBkpSyg1mUpB3ILYna\n"
                   "lEYKcbADm4cDD7NpM2bv75HF1/az8l3fX/1+77pO7vu6rtf1/jx0X3caSeIvSfK3wP/DPykcDsNs\n"
                   "NqOqqgpdXV3Y2NhIGVz6+4PJyUlcXFxAFEV4vV709fVBrVZDpVL9eTo/aGVlhXl5efT5fDw/P2c4\n"
                   "HKbdbmd3dzdTIZDk6+srh4eHqdPpqNfrSZJGo5H7+/sMBoNUKpUpgUsAQCqVQq1WIxgMfgp/dXU1\n"
                   "srKykJ+fD6/X+8ejHiu4wcFB2Gy2uJPq6uqwt7eXOjgAaLXahHCn05laeCKlyvmXVosnrVaLQCCA\n"
                   "4uJiyOVyCIIQGyqVCoIgoKCgIDXwtLQ0HBwc4O3tDR6PB263G263G8fHx1hbW4Pb7cbNzQ1yc3Nj\n"
                   "hxEEAdXV1WhoaEi88cfSf3h4iLXaR01MTFChUFChULCjo4M7OztxW8fn89HlcnF5eZlTU1Nsb29n\n"
                   "W1sb/X5/3PlJwd/19vbG7e1tlpWVcXV19ftGJjk0NESbzRb33aeCy8zMhM/nSxgliUSCxsZGiKKI\n"
                   "ra2tb9N1e3uLSCSC8fFxGAwGDAwMfC7c309TWFjI09PTpFwlis76+jo7OzspCAJNJhN3d3fpcDho\n"
                   "tVqpUCgYCoVIkl8Krr6+Hna7HSUlJd86+yiPx4P5+XlYLBZUVFSgv78fVqsV6enpAIC7uzt4vV5E\n"
                   "IhFIJJL4zp1OJ2traxmJRL51+fLywuXlZba2trK0tJRms5mXl5c8PT3l4uIix8bG2NbWRqVSyfLy\n"
                   "cvb09PDw8DC2Po38eocbGRlBIBDA9PQ0pNKv3Xh2doa5uTksLCwgJycHNTU1yM3NxdHREa6vr6HR\n"
                   "aKDX62NDp9MhIyPjyz5x4SQxOjoKURTR29sLmUyG7Oxs+P1+WCwW7O7uQiKRQKvVQq/Xo7KyMgaS\n"
                   "y+VJpyou/F0nJydYWlqCy+XC1dUV7u/vYTQa8fT0BIfDgaWlpaRBcZVsFc/OznJsbIwkaTKZODMz\n"
                   "k+zShEr6Arm5uYnm5mYAgCiKaGlp+ZnrZJ1Ho1EWFRXx+fmZj4+P1Gg0P3ZNJqj2dxkMhth3PBAI\n"
                   "QCaTIRqNIhQKoamp6cc5/0d4qvXv+mn4z8B/AV1UVu6zi+zUAAAAAElFTkSuQmCC\n"
                   "--foo bar--\n",
        .bodystructure = "(\"text\" \"plain\" (\"charset\" \"us-ascii\" \"format\" \"flowed\" \"delsp\" \"no\") NIL NIL \"7BIT\" 881 12 NIL NIL (\"la\") NIL)(\"image\" \"png\" NIL NIL NIL \"BASE64\" 1390 NIL (\"attachment\" (\"filename\" \"pigeon.png\")) NIL NIL) \"mixed\" (\"boundary\" \"foo bar\") NIL NIL NIL",
        .body = "(\"text\" \"plain\" (\"charset\" \"us-ascii\" \"format\" \"flowed\" \"delsp\" \"no\") NIL NIL \"7BIT\" 881 12)(\"image\" \"png\" NIL NIL NIL \"BASE64\" 1390) \"mixed\"",
    },
    {
        .message = "From: user@domain.org\n"
                   "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
                   "Mime-Version: 1.0\n"
                   "Content-Type: multipart/mixed; boundary=\"foo\n"
                   " bar\"\n"
                   "\n"
                   "Root MIME prologue\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: text/x-myown; charset=us-ascii; foo=\"quoted\\\"string\"\n"
                   "Content-ID: <foo@example.com>\n"
                   "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
                   "Content-Disposition: inline; foo=bar\n"
                   "Content-Description: hellodescription\n"
                   "Content-Language: en, fi, se\n"
                   "Content-Location: http://example.com/test.txt\n"
                   "\n"
                   "hello\n"
                   "\n"
                   "--foo bar\n"
                   "Content-Type: message/rfc822\n"
                   "\n"
                   "From: sub@domain.org\n"
                   "To: sub-to1@domain.org, sub-to2@domain.org\n"
                   "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
                   "Subject: submsg\n"
                   "Content-Type: multipart/alternative; boundary=\"sub1\"\n"
                   "\n"
                   "Sub MIME prologue\n"
                   "--sub1\n"
                   "Content-Type: text/html\n"
                   "Content-Transfer-Encoding: 8bit\n"
                   "\n"
                   "<p>Hello world</p>\n"
                   "\n"
                   "--sub1\n"
                   "Content-Type: text/plain\n"
                   "Content-Transfer-Encoding: ?invalid\n"
                   "\n"
                   "Hello another world\n"
                   "\n"
                   "--sub1--\n"
                   "Sub MIME epilogue\n"
                   "\n"
                   "--foo bar--\n"
                   "Root MIME epilogue\n",
        .bodystructure = "(\"text\" \"x-myown\" (\"charset\" \"us-ascii\" \"foo\" \"quoted\\\"string\") \"<foo@example.com>\" \"hellodescription\" \"7BIT\" 7 1 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"inline\" (\"foo\" \"bar\")) (\"en\" \"fi\" \"se\") \"http://example.com/test.txt\")(\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" 412 (\"Sun, 12 Aug 2012 12:34:56 +0300\" \"submsg\" ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub-to1\" \"domain.org\")(NIL NIL \"sub-to2\" \"domain.org\")) NIL NIL NIL NIL) ((\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"8BIT\" 20 1 NIL NIL NIL NIL)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 21 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"sub1\") NIL NIL NIL) 21 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo bar\") NIL NIL NIL",
        .body = "(\"text\" \"x-myown\" (\"charset\" \"us-ascii\" \"foo\" \"quoted\\\"string\") \"<foo@example.com>\" \"hellodescription\" \"7BIT\" 7 1)(\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" 412 (\"Sun, 12 Aug 2012 12:34:56 +0300\" \"submsg\" ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub-to1\" \"domain.org\")(NIL NIL \"sub-to2\" \"domain.org\")) NIL NIL NIL NIL) ((\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"8BIT\" 20 1)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 21 1) \"alternative\") 21) \"mixed\"",
    },
    {
        .message = "Content-Type: multipart/mixed; boundary=\"foo\"\n"
                   "\n",
        .bodystructure = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 0 0 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo\") NIL NIL NIL",
        .body = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 0 0) \"mixed\"",
    },
};

static void test_dovecot_bodystructure(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bs_vectors) / sizeof(bs_vectors[0]); i++) {
        size_t len;
        char *msg = crlf(bs_vectors[i].message, &len);
        char *bs = paren(bs_vectors[i].bodystructure);
        char *body = paren(bs_vectors[i].body);
        struct mime_cache *c = build(msg, len);

        print_message("vector %zu\n", i);
        assert_string_equal(c->bodystructure, bs);
        assert_string_equal(c->body, body);
        assert_int_equal(c->flags, 0);
        assert_gmime_agrees(msg, len, c);
        mime_cache_free(&c);
        free(msg);
        free(bs);
        free(body);
    }
}

/* ------------------------------------------------------------------ */
/* Dovecot test-imap-envelope.c parse_tests[] (from imaptest)           */

struct env_vector {
    const char *message;
    const char *envelope;
};

static const struct env_vector env_vectors[] = {
    {
        .message = "Message-ID: <msg@id>\n"
                   "In-Reply-To: <reply@to.id>\n"
                   "Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
                   "Subject: subject header\n"
                   "From: From Real <fromuser@fromdomain.org>\n"
                   "To: To Real <touser@todomain.org>\n"
                   "Cc: Cc Real <ccuser@ccdomain.org>\n"
                   "Bcc: Bcc Real <bccuser@bccdomain.org>\n"
                   "Sender: Sender Real <senderuser@senderdomain.org>\n"
                   "Reply-To: ReplyTo Real <replytouser@replytodomain.org>\n"
                   "\n"
                   "body\n",
        .envelope = "\"Thu, 15 Feb 2007 01:02:03 +0200\" "
                    "\"subject header\" "
                    "((\"From Real\" NIL \"fromuser\" \"fromdomain.org\")) "
                    "((\"Sender Real\" NIL \"senderuser\" \"senderdomain.org\")) "
                    "((\"ReplyTo Real\" NIL \"replytouser\" \"replytodomain.org\")) "
                    "((\"To Real\" NIL \"touser\" \"todomain.org\")) "
                    "((\"Cc Real\" NIL \"ccuser\" \"ccdomain.org\")) "
                    "((\"Bcc Real\" NIL \"bccuser\" \"bccdomain.org\")) "
                    "\"<reply@to.id>\" \"<msg@id>\"",
    },
    {
        .message = "Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
                   "From: user@domain\n"
                   "\n"
                   "body\n",
        .envelope = "\"Thu, 15 Feb 2007 01:02:03 +0200\" NIL "
                    "((NIL NIL \"user\" \"domain\")) "
                    "((NIL NIL \"user\" \"domain\")) "
                    "((NIL NIL \"user\" \"domain\")) NIL NIL NIL NIL NIL",
    },
    {
        .message = "Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
                   "From: user@domain (Real Name)\n"
                   "To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n"
                   "Cc: group:;, group2: (foo) ;\n"
                   "\n"
                   "body\n",
        .envelope = "\"Thu, 15 Feb 2007 01:02:03 +0200\" NIL "
                    "((\"Real Name\" NIL \"user\" \"domain\")) "
                    "((\"Real Name\" NIL \"user\" \"domain\")) "
                    "((\"Real Name\" NIL \"user\" \"domain\")) "
                    "((NIL NIL \"group\" NIL)"
                    "(NIL NIL \"g1\" \"d1.org\")"
                    "(NIL NIL \"g2\" \"d2.org\")"
                    "(NIL NIL NIL NIL)"
                    "(NIL NIL \"group2\" NIL)"
                    "(NIL NIL \"g3\" \"d3.org\")"
                    "(NIL NIL NIL NIL)) "
                    "((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)"
                    "(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL)) "
                    "NIL NIL NIL",
    },
    {
        .message = "Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
                   "From: user@domain (Real Name)\n"
                   "Sender: \n"
                   "Reply-To: \n"
                   "\n"
                   "body\n",
        .envelope = "\"Thu, 15 Feb 2007 01:02:03 +0200\" NIL "
                    "((\"Real Name\" NIL \"user\" \"domain\")) "
                    "((\"Real Name\" NIL \"user\" \"domain\")) "
                    "((\"Real Name\" NIL \"user\" \"domain\")) "
                    "NIL NIL NIL NIL NIL",
    },
    {
        .message = "Date: Thu, 15 Feb 2007 01:02:03 +0200\n"
                   "From: <@route:user@domain>\n"
                   "\n"
                   "body\n",
        .envelope = "\"Thu, 15 Feb 2007 01:02:03 +0200\" NIL "
                    "((NIL \"@route\" \"user\" \"domain\")) "
                    "((NIL \"@route\" \"user\" \"domain\")) "
                    "((NIL \"@route\" \"user\" \"domain\")) "
                    "NIL NIL NIL NIL NIL",
    },
    /* ours: RFC 2047 stays encoded, quoting, comments, quoted local
     * parts, missing parts, obs-route with two hops, junk */
    {
        .message = "Subject: =?utf-8?q?caf=C3=A9?= \"quoted\" back\\slash\n"
                   "From: =?utf-8?b?SsO2cmc=?= <j@x.example>, \"Doe, John\" <\"john doe\"@y.example>\n"
                   "To: undisclosed-recipients:;\n"
                   "Cc: bare, <@a.example,@b.example:u@c.example>, @only.example, <>\n"
                   "Bcc: >>> ,, ; Name Only <first.last@[192.0.2.1]> (trailing comment)\n"
                   "Message-ID:\n"
                   "  <folded@id>\n"
                   "\n",
        .envelope = "NIL \"=?utf-8?q?caf=C3=A9?= \\\"quoted\\\" back\\\\slash\" "
                    "((\"=?utf-8?b?SsO2cmc=?=\" NIL \"j\" \"x.example\")"
                    "(\"Doe, John\" NIL \"\\\"john doe\\\"\" \"y.example\")) "
                    "((\"=?utf-8?b?SsO2cmc=?=\" NIL \"j\" \"x.example\")"
                    "(\"Doe, John\" NIL \"\\\"john doe\\\"\" \"y.example\")) "
                    "((\"=?utf-8?b?SsO2cmc=?=\" NIL \"j\" \"x.example\")"
                    "(\"Doe, John\" NIL \"\\\"john doe\\\"\" \"y.example\")) "
                    "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
                    "((NIL NIL \"bare\" \"MISSING_DOMAIN\")"
                    "(NIL \"@a.example,@b.example\" \"u\" \"c.example\")"
                    "(NIL NIL \"MISSING_MAILBOX\" \"only.example\")"
                    "(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) "
                    "((\"Name Only\" NIL \"first.last\" \"[192.0.2.1]\")) "
                    "NIL \"<folded@id>\"",
    },
};

static void test_envelope(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_vectors) / sizeof(env_vectors[0]); i++) {
        size_t len;
        char *msg = crlf(env_vectors[i].message, &len);
        char *env = paren(env_vectors[i].envelope);
        struct mime_cache *c = build(msg, len);

        print_message("vector %zu\n", i);
        assert_string_equal(c->envelope, env);
        assert_gmime_agrees(msg, len, c);
        mime_cache_free(&c);
        free(msg);
        free(env);
    }
}

/* Strings that need literals: 8-bit, over MIME_CACHE_QUOTED_MAX; NULs are
 * dropped; an empty message has an all-NIL envelope. */
static void test_envelope_literals(void **state)
{
    char *msg, *expect;
    struct mime_cache *c;
    char longsubj[MIME_CACHE_QUOTED_MAX + 2];
    static const char nul_msg[] = "Subject: a\0b\r\nFrom: x\0y@z\r\n\r\n";

    (void)state;
    msg = "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\n\r\n";
    c = build(msg, strlen(msg));
    assert_string_equal(c->envelope,
                        "(NIL {7}\r\nGr\xc3\xbc\xc3\x9f" "e NIL NIL NIL NIL NIL NIL NIL NIL)");
    mime_cache_free(&c);

    memset(longsubj, 'x', sizeof(longsubj) - 1);
    longsubj[sizeof(longsubj) - 1] = '\0';
    msg = mx_asprintf("Subject: %s\r\n\r\n", longsubj);
    c = build(msg, strlen(msg));
    expect = mx_asprintf("(NIL {%zu}\r\n%s NIL NIL NIL NIL NIL NIL NIL NIL)", strlen(longsubj),
                         longsubj);
    assert_string_equal(c->envelope, expect);
    mime_cache_free(&c);
    free(msg);
    free(expect);

    /* exactly MIME_CACHE_QUOTED_MAX stays quoted */
    longsubj[MIME_CACHE_QUOTED_MAX] = '\0';
    msg = mx_asprintf("Subject: %s\r\n\r\n", longsubj);
    c = build(msg, strlen(msg));
    assert_int_equal(c->envelope[5], '"');
    mime_cache_free(&c);
    free(msg);

    c = build(nul_msg, sizeof(nul_msg) - 1);
    assert_string_equal(c->envelope, "(NIL \"ab\" ((NIL NIL \"xy\" \"z\")) ((NIL NIL \"xy\" \"z\")) "
                                     "((NIL NIL \"xy\" \"z\")) NIL NIL NIL NIL NIL)");
    mime_cache_free(&c);

    c = build("", 0);
    assert_string_equal(c->envelope, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    assert_string_equal(c->bodystructure, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
                                          "\"7BIT\" 0 0 NIL NIL NIL NIL)");
    mime_cache_free(&c);
    c = build(NULL, 0);
    mime_cache_free(&c);
}

/* ------------------------------------------------------------------ */
/* BODY[section] ranges: imaptest fetch-body-* vectors                  */

struct sec_case {
    const char *spec;
    const char *expect; /* LF form, or NULL: no such part (1) */
};

struct sec_vector {
    const char *name;
    const char *message;
    struct sec_case cases[24];
};

static const struct sec_vector sec_vectors[] = {
    {
        "imaptest fetch-body-mime",
        "From: user@domain.org\n"
        "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
        "Mime-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"foo\n"
        " bar\"\n"
        "\n"
        "Root MIME prologue\n"
        "\n"
        "--foo bar\n"
        "Content-Type: text/x-myown; charset=us-ascii\n"
        "\n"
        "hello\n"
        "\n"
        "--foo bar\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: sub@domain.org\n"
        "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
        "Subject: submsg\n"
        "Content-Type: multipart/alternative; boundary=\"sub1\"\n"
        "\n"
        "Sub MIME prologue\n"
        "--sub1\n"
        "Content-Type: text/html\n"
        "\n"
        "<p>Hello world</p>\n"
        "\n"
        "--sub1\n"
        "Content-Type: text/plain\n"
        "\n"
        "Hello another world\n"
        "\n"
        "--sub1--\n"
        "Sub MIME epilogue\n"
        "\n"
        "--foo bar--\n"
        "Root MIME epilogue\n",
        {
            { "1", "hello\n" },
            { "1.mime", "Content-Type: text/x-myown; charset=us-ascii\n\n" },
            { "2",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "Content-Type: multipart/alternative; boundary=\"sub1\"\n"
              "\n"
              "Sub MIME prologue\n"
              "--sub1\n"
              "Content-Type: text/html\n"
              "\n"
              "<p>Hello world</p>\n"
              "\n"
              "--sub1\n"
              "Content-Type: text/plain\n"
              "\n"
              "Hello another world\n"
              "\n"
              "--sub1--\n"
              "Sub MIME epilogue\n" },
            { "2.mime", "Content-Type: message/rfc822\n\n" },
            { "2.header",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "Content-Type: multipart/alternative; boundary=\"sub1\"\n"
              "\n" },
            { "2.header.fields",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "Content-Type: multipart/alternative; boundary=\"sub1\"\n"
              "\n" },
            { "2.text",
              "Sub MIME prologue\n"
              "--sub1\n"
              "Content-Type: text/html\n"
              "\n"
              "<p>Hello world</p>\n"
              "\n"
              "--sub1\n"
              "Content-Type: text/plain\n"
              "\n"
              "Hello another world\n"
              "\n"
              "--sub1--\n"
              "Sub MIME epilogue\n" },
            { "2.1.mime", "Content-Type: text/html\n\n" },
            { "2.1", "<p>Hello world</p>\n" },
            { "2.2.mime", "Content-Type: text/plain\n\n" },
            { "2.2", "Hello another world\n" },
            /* ours */
            { "2.3", NULL },
            { "3", NULL },
            { "1.text", NULL },
            { "1.header", NULL },
            { "1.1", NULL },
            { "2.1.1", NULL },
            { "2.2.HEADER", NULL },
            { NULL, NULL },
        },
    },
    {
        "imaptest fetch-body-message-rfc822",
        "From: user@domain.org\n"
        "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
        "Mime-Version: 1.0\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: sub@domain.org\n"
        "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
        "Subject: submsg\n"
        "\n"
        "Hello world\n",
        {
            { "text",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "\n"
              "Hello world\n" },
            { "1",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "\n"
              "Hello world\n" },
            { "1.header",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "\n" },
            { "1.text", "Hello world\n" },
            { NULL, NULL },
        },
    },
    {
        "imaptest fetch-body-message-rfc822-x2",
        "From: user@domain.org\n"
        "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
        "Mime-Version: 1.0\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: user2@domain.org\n"
        "Date: Fri, 23 Mar 2007 11:22:33 +0200\n"
        "Mime-Version: 1.0\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: sub@domain.org\n"
        "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
        "Subject: submsg\n"
        "\n"
        "Hello world\n",
        {
            { "1.1",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "\n"
              "Hello world\n" },
            { "1.header",
              "From: user2@domain.org\n"
              "Date: Fri, 23 Mar 2007 11:22:33 +0200\n"
              "Mime-Version: 1.0\n"
              "Content-Type: message/rfc822\n"
              "\n" },
            { "1.text",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "\n"
              "Hello world\n" },
            { "1.1.1", "Hello world\n" },
            { "1.1.header",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "\n" },
            { "1.1.text", "Hello world\n" },
            { "1.1.1.1", NULL },
            { "2", NULL },
            { NULL, NULL },
        },
    },
    {
        "imaptest fetch-body-message-rfc822-mime (digest)",
        "From: user@domain.org\n"
        "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
        "Mime-Version: 1.0\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: sub@domain.org\n"
        "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
        "Subject: submsg\n"
        "Content-Type: multipart/digest; boundary=\"foo\"\n"
        "\n"
        "prologue\n"
        "\n"
        "--foo \n"
        "\n"
        "From: m1@example.com\n"
        "Subject: m1\n"
        "\n"
        "m1 body\n"
        "\n"
        "--foo \n"
        "X-Mime: m2 header\n"
        "\n"
        "From: m2@example.com\n"
        "Subject: m2\n"
        "\n"
        "m2 body\n"
        "\n"
        "--foo--\n"
        "\n"
        "epilogue\n",
        {
            { "1.header",
              "From: sub@domain.org\n"
              "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
              "Subject: submsg\n"
              "Content-Type: multipart/digest; boundary=\"foo\"\n"
              "\n" },
            { "1.1", "From: m1@example.com\nSubject: m1\n\nm1 body\n" },
            { "1.1.MIME", "\n" },
            { "1.1.HEADER", "From: m1@example.com\nSubject: m1\n\n" },
            { "1.1.TEXT", "m1 body\n" },
            { "1.2", "From: m2@example.com\nSubject: m2\n\nm2 body\n" },
            { "1.2.MIME", "X-Mime: m2 header\n\n" },
            { "1.2.HEADER", "From: m2@example.com\nSubject: m2\n\n" },
            { "1.2.TEXT", "m2 body\n" },
            { "1.2.1", "m2 body\n" },
            { "1.2.1.MIME", "From: m2@example.com\nSubject: m2\n\n" },
            { "1.3", NULL },
            { NULL, NULL },
        },
    },
};

static void test_sections(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(sec_vectors) / sizeof(sec_vectors[0]); v++) {
        const struct sec_vector *sv = &sec_vectors[v];
        size_t len, off, n;
        char *msg = crlf(sv->message, &len);
        struct mime_cache *c = build(msg, len);

        print_message("%s\n", sv->name);
        assert_gmime_agrees(msg, len, c);
        /* whole message, its header and text */
        assert_int_equal(mime_cache_section(c, "", &off, &n), 0);
        assert_true(off == 0 && n == len);
        assert_int_equal(mime_cache_section(c, "HEADER", &off, &n), 0);
        assert_int_equal(off, 0);
        assert_int_equal(mime_cache_section(c, "TEXT", &off, &n), 0);
        assert_int_equal(off + n, len);
        for (const struct sec_case *sc = sv->cases; sc->spec != NULL; sc++) {
            int r = mime_cache_section(c, sc->spec, &off, &n);

            if (sc->expect == NULL) {
                if (r != 1)
                    fail_msg("%s: section %s gave %d, expected no such part", sv->name,
                             sc->spec, r);
                continue;
            }
            size_t elen;
            char *expect = crlf(sc->expect, &elen);

            if (r != 0)
                fail_msg("%s: section %s gave %d", sv->name, sc->spec, r);
            if (n != elen || memcmp(msg + off, expect, n) != 0)
                fail_msg("%s: section %s is [%.*s], expected [%s]", sv->name, sc->spec, (int)n,
                         msg + off, expect);
            free(expect);
        }
        mime_cache_free(&c);
        free(msg);
    }
}

/* Malformed specs are -1 (BAD), whatever the message. */
static void test_section_syntax(void **state)
{
    static const char msg[] = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                              "--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n";
    static const char *const bad[] = {
        "0", "1.", ".1", "01", "1..2", "a", "1a", "1.a", "MIME", "1.MIMEX", "HEADERS",
        "HEADER.FIELDS.NOTX", "TEXT.1", "1.TEXT.1", "4294967296", "99999999999", " 1", "1 ",
        "1.2.0", "HEADER.", "header..fields",
    };
    struct mime_cache *c = build(msg, sizeof(msg) - 1);
    size_t off, n;
    char deep[4 * (MIME_CACHE_MAX_SECTION_PARTS + 1) + 1] = "";

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mime_cache_section(c, bad[i], &off, &n) != -1)
            fail_msg("spec \"%s\" was accepted", bad[i]);
    }
    /* MIME_CACHE_MAX_SECTION_PARTS numbers: well-formed, no such part */
    for (int i = 0; i < MIME_CACHE_MAX_SECTION_PARTS; i++)
        strcat(deep, i == 0 ? "1" : ".1");
    assert_int_equal(mime_cache_section(c, deep, &off, &n), 1);
    strcat(deep, ".1");
    assert_int_equal(mime_cache_section(c, deep, &off, &n), -1);

    assert_int_equal(mime_cache_section(c, "2", &off, &n), 0);
    assert_memory_equal(msg + off, "two", 3);
    assert_int_equal(n, 3);
    assert_int_equal(mime_cache_section(c, "2.MIME", &off, &n), 0);
    assert_int_equal(n, 2); /* the empty header block */
    assert_int_equal(mime_cache_section(c, "1.mime", &off, &n), 0);
    assert_int_equal(mime_cache_section(c, "header.fields.not", &off, &n), 0);
    assert_int_equal(mime_cache_section(c, "4294967295", &off, &n), 1);
    assert_int_equal(mime_cache_section(c, "3", &off, &n), 1);
    assert_int_equal(mime_cache_section(c, "1.1", &off, &n), 1);
    assert_int_equal(mime_cache_section(c, "1.HEADER", &off, &n), 1);
    assert_int_equal(mime_cache_section(NULL, "1", &off, &n), -1);
    assert_int_equal(mime_cache_section(c, NULL, &off, &n), -1);
    mime_cache_free(&c);

    /* a single-part message: part 1 is its body, 1.MIME its header */
    static const char single[] = "Subject: s\r\n\r\nbody\r\n";
    c = build(single, sizeof(single) - 1);
    assert_int_equal(mime_cache_section(c, "1", &off, &n), 0);
    assert_true(off == 14 && n == 6);
    assert_int_equal(mime_cache_section(c, "1.MIME", &off, &n), 0);
    assert_true(off == 0 && n == 14);
    assert_int_equal(mime_cache_section(c, "2", &off, &n), 1);
    assert_int_equal(mime_cache_section(c, "1.1", &off, &n), 1);
    mime_cache_free(&c);
}

/* Parameters: lenient unquoted values, RFC 2231 boundary (read by GMime),
 * raw output of RFC 2231 names. */
static void test_params(void **state)
{
    static const char m1[] = "Content-Type: multipart/mixed; boundary*=utf-8''a%20b\r\n\r\n"
                             "--a b\r\n\r\nx\r\n--a b--\r\n";
    static const char m2[] = "Content-Type: text/plain; name=my file.txt ; charset=us-ascii;"
                             " q=\"a\\\"b\" junk; =x; y; z=\r\n\r\n";
    struct mime_cache *c;
    size_t off, n;

    (void)state;
    c = build(m1, sizeof(m1) - 1);
    assert_gmime_agrees(m1, sizeof(m1) - 1, c);
    assert_int_equal(c->part_count, 2);
    assert_int_equal(mime_cache_section(c, "1", &off, &n), 0);
    assert_true(n == 1 && m1[off] == 'x');
    assert_string_equal(c->bodystructure, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
                                          "\"7BIT\" 1 0 NIL NIL NIL NIL) \"mixed\" "
                                          "(\"boundary*\" \"utf-8''a%20b\") NIL NIL NIL)");
    mime_cache_free(&c);

    c = build(m2, sizeof(m2) - 1);
    assert_string_equal(c->body, "(\"text\" \"plain\" (\"name\" \"my file.txt\" \"charset\" "
                                 "\"us-ascii\" \"q\" \"a\\\"b\") NIL NIL \"7BIT\" 0 0)");
    mime_cache_free(&c);
}

/* ------------------------------------------------------------------ */
/* Serialization                                                        */

static const char nested_msg[] =
    "From: a@example.org\r\n"
    "Subject: nested\r\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    "\r\n"
    "--outer\r\n"
    "Content-Type: multipart/alternative; boundary=inner\r\n"
    "\r\n"
    "--inner\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "plain\r\n"
    "--inner\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<b>html</b>\r\n"
    "--inner--\r\n"
    "--outer\r\n"
    "Content-Type: message/rfc822\r\n"
    "Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.eml\r\n"
    "\r\n"
    "From: b@example.org\r\n"
    "Content-Type: multipart/mixed; boundary=x\r\n"
    "\r\n"
    "--x\r\n"
    "\r\n"
    "inner one\r\n"
    "--x\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAAA\r\n"
    "--x--\r\n"
    "--outer--\r\n";

static void test_nested_sections(void **state)
{
    struct mime_cache *c = build(nested_msg, sizeof(nested_msg) - 1);
    static const struct {
        const char *spec;
        const char *expect;
    } cases[] = {
        { "1.1", "plain" },
        { "1.2", "<b>html</b>" },
        { "1.2.MIME", "Content-Type: text/html\r\n\r\n" },
        { "2.HEADER", "From: b@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" },
        { "2.1", "inner one" },
        { "2.1.MIME", "\r\n" },
        { "2.2", "AAAA" },
        { "2.2.MIME", "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" },
    };
    size_t off, n;

    (void)state;
    assert_gmime_agrees(nested_msg, sizeof(nested_msg) - 1, c);
    assert_int_equal(c->part_count, 8);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(mime_cache_section(c, cases[i].spec, &off, &n), 0);
        if (n != strlen(cases[i].expect) || memcmp(nested_msg + off, cases[i].expect, n) != 0)
            fail_msg("section %s is [%.*s]", cases[i].spec, (int)n, nested_msg + off);
    }
    /* RFC 2231 parameters stay raw */
    assert_non_null(strstr(c->bodystructure, "(\"attachment\" (\"filename*\" \"utf-8''%E2%82%AC.eml\"))"));
    mime_cache_free(&c);
}

static void test_serialize_truncations(void **state)
{
    struct mime_cache *c = build(nested_msg, sizeof(nested_msg) - 1), *d;
    uint8_t *blob, *copy;
    size_t len;
    const char *error;

    (void)state;
    mime_cache_serialize(c, &blob, &len);
    for (size_t cut = 0; cut < len; cut++) {
        copy = mx_memdup(blob, cut); /* exact size, so ASan sees overreads */
        error = NULL;
        if (mime_cache_deserialize(copy, cut, &d, &error) != -1)
            fail_msg("a blob cut at %zu of %zu was accepted", cut, len);
        assert_null(d);
        assert_non_null(error);
        free(copy);
    }
    /* every single-byte corruption: an error or a cache that passes all
     * checks; never a crash or an out-of-range section */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            copy = mx_memdup(blob, len);
            copy[i] ^= (uint8_t)(1u << bit);
            if (mime_cache_deserialize(copy, len, &d, &error) == 0) {
                check_cache(nested_msg, d->message_size, d);
                mime_cache_free(&d);
            }
            free(copy);
        }
    }
    /* trailing garbage */
    copy = mx_malloc(len + 1);
    memcpy(copy, blob, len);
    copy[len] = 0;
    assert_int_equal(mime_cache_deserialize(copy, len + 1, &d, &error), -1);
    free(copy);
    assert_int_equal(mime_cache_deserialize(NULL, 0, &d, &error), -1);
    free(blob);
    mime_cache_free(&c);
}

/* Hand-made blobs that are well-formed byte-wise but break a tree rule. */
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_deserialize_bad_trees(void **state)
{
    struct mime_cache *c = build(nested_msg, sizeof(nested_msg) - 1), *d;
    uint8_t *blob;
    size_t len, parts_at;
    const char *error;
    /* (part index, field offset within the 17-byte row, value) */
    static const struct {
        uint32_t part, field, value;
    } edits[] = {
        { 0, 13, 0 },    /* root multipart with no children */
        { 0, 9, 99999 }, /* root end != message size */
        { 1, 1, 5000 },  /* hdr_start > body_start */
        { 1, 13, 7 },    /* more children than rows */
        { 2, 1, 0 },     /* child starts before its parent's body */
        { 3, 9, 9999 },  /* child ends after its parent */
        { 4, 13, 2 },    /* message/rfc822 with two children */
        { 5, 1, 1 },     /* embedded message not at the part body */
        { 6, 13, 1 },    /* leaf with a child */
        { 7, 0, 3 },     /* unknown kind (field 0 is the kind byte) */
        { 6, 9, 0 },     /* siblings overlap (6 ends before 7 starts is fine;
                            6 end < its own body_start is not) */
    };

    (void)state;
    mime_cache_serialize(c, &blob, &len);
    parts_at = len - (size_t)c->part_count * 17;
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        uint8_t *copy = mx_memdup(blob, len);
        uint8_t *row = copy + parts_at + edits[i].part * 17;

        if (edits[i].field == 0)
            row[0] = (uint8_t)edits[i].value;
        else
            put32(row + edits[i].field, edits[i].value);
        if (mime_cache_deserialize(copy, len, &d, &error) != -1)
            fail_msg("edit %zu accepted", i);
        free(copy);
    }
    /* a string that is not one IMAP value (CRLF injection) */
    {
        static const char *const bad_values[] = { "(NIL) A1 OK", "(\"a\r\nb\")", "({5}\r\nab)",
                                                  "(NIL NIL", "NIL", "(\"x\" )", "(( NIL))" };

        for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++)
            assert_false(mime_cache_imap_value_valid(bad_values[i], strlen(bad_values[i])));
        static const char good[] = "({2}\r\nab NIL (1 2)(3))";

        assert_true(mime_cache_imap_value_valid(good, sizeof(good) - 1));
    }
    free(blob);
    mime_cache_free(&c);
}

/* ------------------------------------------------------------------ */
/* Robustness                                                           */

static void test_malformed(void **state)
{
    static const char *const msgs[] = {
        "",
        "\r\n",
        "\n\n\n",
        "Subject: only headers",
        "Subject: only headers\r\nFrom: a@b\r\n",
        "no colon here\r\n\r\nbody\r\n",
        " leading continuation\r\nSubject: x\r\n\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\nno delimiters at all\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nno close\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n--b\r\n\r\nafter close\r\n",
        "Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\nno boundary param\r\n",
        "Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\nempty boundary\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n--b--\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\npreamble --b inline\r\n--b\r\n\r\nx\r\n--b--\r\n",
        "Content-Type: message/rfc822\r\n\r\n",
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nRnJvbTogeEB5\r\n",
        "Content-Type: ;;;\r\nContent-Transfer-Encoding: \"quoted\"\r\nContent-Disposition: ;x=y\r\n"
        "Content-Language: ,,,\r\n\r\n",
        "Content-Type: text/plain; =x; a; b=; c=\"unterminated\r\n\r\n",
        "From: \"unterminated\r\nTo: (unterminated comment\r\nCc: <unterminated@angle\r\n"
        "Bcc: a@b@c, <<>>, @, :, ;, \\\r\n\r\n",
        "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\n--d--\r\n",
        "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n"
        "--a\r\n\r\nsame boundary\r\n--a--\r\n--a--\r\n",
        "\xff\xfe\x80: \x80\x81\r\nSubject: \xc3\x28\r\n\r\n\xff",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        struct mime_cache *c = build(msgs[i], strlen(msgs[i]));

        mime_cache_free(&c);
    }
    /* NULs everywhere */
    {
        char m[] = "Subject: a\0b\r\nContent-Type: multipart/mixed; boundary=\"b\0\"\r\n\r\n"
                   "--b\0\r\n\r\n\0\r\n--b\0--\r\n";
        struct mime_cache *c = build(m, sizeof(m) - 1);

        mime_cache_free(&c);
    }
}

/* build_nested - depth levels of multipart (or message/rfc822) nesting. */
static char *build_nested(int depth, bool message, size_t *len_r)
{
    size_t cap = (size_t)depth * 80 + 64, len = 0;
    char *m = mx_malloc(cap);

    for (int i = 0; i < depth; i++) {
        if (message)
            len += (size_t)sprintf(m + len, "Content-Type: message/rfc822\r\n\r\n");
        else
            len += (size_t)sprintf(m + len, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
    }
    len += (size_t)sprintf(m + len, "\r\nleaf\r\n");
    *len_r = len;
    return m;
}

static void test_depth_limit(void **state)
{
    (void)state;
    for (int message = 0; message < 2; message++) {
        static const int depths[] = { MIME_CACHE_MAX_DEPTH - 1, MIME_CACHE_MAX_DEPTH,
                                      MIME_CACHE_MAX_DEPTH + 1, 1000 };

        for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
            size_t len;
            char *m = build_nested(depths[i], message != 0, &len);
            struct mime_cache *c = build(m, len);

            if (depths[i] <= MIME_CACHE_MAX_DEPTH) {
                assert_int_equal(c->flags, 0);
                assert_gmime_agrees(m, len, c);
            } else {
                assert_int_equal(c->flags, MIME_CACHE_FLAG_TRUNCATED);
            }
            assert_true(c->part_count <= MIME_CACHE_MAX_DEPTH + 1);
            mime_cache_free(&c);
            free(m);
        }
    }
}

static void test_part_limit(void **state)
{
    size_t n = MIME_CACHE_MAX_PARTS + 100, len = 0;
    char *m = mx_malloc(64 + n * 12);
    struct mime_cache *c;

    (void)state;
    len += (size_t)sprintf(m, "Content-Type: multipart/mixed; boundary=b\r\n\r\n");
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(m + len, "--b\r\n\r\nx\r\n");
    len += (size_t)sprintf(m + len, "--b--\r\n");
    c = build(m, len);
    assert_int_equal(c->part_count, MIME_CACHE_MAX_PARTS);
    assert_int_equal(c->flags, MIME_CACHE_FLAG_TRUNCATED);
    mime_cache_free(&c);
    free(m);
}

/* A 1 MB header line, 100,000 folded lines and 50,000 addresses. */
static void test_huge_headers(void **state)
{
    size_t n = 1 << 20, len;
    char *m = mx_malloc(n + 64);
    struct mime_cache *c;

    (void)state;
    len = (size_t)sprintf(m, "Subject: ");
    memset(m + len, 'a', n);
    len += n;
    len += (size_t)sprintf(m + len, "\r\n\r\nbody\r\n");
    c = build(m, len);
    assert_non_null(strstr(c->envelope, "{1048576}\r\naaa"));
    mime_cache_free(&c);
    free(m);

    m = mx_malloc(100000 * 5 + 64);
    len = (size_t)sprintf(m, "Subject: x");
    for (int i = 0; i < 100000; i++)
        len += (size_t)sprintf(m + len, "\r\n a");
    len += (size_t)sprintf(m + len, "\r\n\r\n");
    c = build(m, len);
    mime_cache_free(&c);
    free(m);

    m = mx_malloc(50000 * 12 + 64);
    len = (size_t)sprintf(m, "To: ");
    for (int i = 0; i < 50000; i++)
        len += (size_t)sprintf(m + len, "u%05d@x.y, ", i);
    len += (size_t)sprintf(m + len, "\r\n\r\n");
    c = build(m, len);
    /* cut to MIME_CACHE_MAX_ADDRESSES entries */
    assert_non_null(strstr(c->envelope, "(NIL NIL \"u09999\" \"x.y\"))"));
    assert_null(strstr(c->envelope, "u10000"));
    assert_int_equal(c->flags, MIME_CACHE_FLAG_TRUNCATED);
    mime_cache_free(&c);
    free(m);
}

/* LF-only storage gives the same structure with LF-based sizes. */
static void test_lf_only(void **state)
{
    struct mime_cache *c = build(bs_vectors[6].message, strlen(bs_vectors[6].message));

    (void)state;
    assert_gmime_agrees(bs_vectors[6].message, strlen(bs_vectors[6].message), c);
    assert_non_null(strstr(c->bodystructure, "\"7BIT\" 6 1 \"Q2hl"));
    mime_cache_free(&c);
}

/* ------------------------------------------------------------------ */
/* Corpus: every seed of the fuzzer must build, pass the invariants and
 * agree with GMime unless its name starts with "broken-" (those are
 * malformed on purpose and GMime may see them differently).            */

static void test_corpus(void **state)
{
    char dir[512];
    DIR *d;
    struct dirent *de;
    int files = 0;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/mime_cache", MX_SOURCE_DIR);
    d = opendir(dir);
    if (d == NULL) {
        print_message("no corpus at %s\n", dir);
        skip();
    }
    while ((de = readdir(d)) != NULL) {
        char path[1024];
        FILE *f;
        char *buf;
        long sz;
        struct mime_cache *c;
        const char *error;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        f = fopen(path, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        sz = ftell(f);
        rewind(f);
        buf = mx_malloc((size_t)sz + 1);
        assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
        fclose(f);
        c = build(buf, (size_t)sz);
        if (mime_cache_check_gmime(buf, (size_t)sz, c, &error) != 0) {
            if (strncmp(de->d_name, "broken-", 7) != 0)
                fail_msg("%s: GMime disagrees: %s", de->d_name, error);
            print_message("%s: differs from GMime (expected): %s\n", de->d_name, error);
        }
        mime_cache_free(&c);
        free(buf);
        files++;
    }
    closedir(d);
    assert_true(files >= 25);
}

/* ------------------------------------------------------------------ */
/* Size and speed (printed, not asserted: DESIGN.md)                    */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* make_message - a multipart/mixed of nparts text parts, about size
 * bytes, with a realistic header block. */
static char *make_message(size_t size, int nparts, size_t *len_r)
{
    size_t cap = size + (size_t)nparts * 200 + 1024, len = 0;
    size_t per = nparts > 0 ? size / (size_t)nparts : size;
    char *m = mx_malloc(cap);

    len += (size_t)sprintf(m, "Return-Path: <sender@example.org>\r\n"
                              "Received: from mx.example.org (mx.example.org [192.0.2.1])\r\n"
                              "\tby mail.example.com with ESMTPS id 4Xyz; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
                              "From: \"Sender, Some\" <sender@example.org>\r\n"
                              "To: Alice <alice@example.com>, bob@example.com\r\n"
                              "Cc: team: carol@example.com, dave@example.com;\r\n"
                              "Subject: =?utf-8?q?Quarterly_report?= and more\r\n"
                              "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
                              "Message-ID: <abc.123@example.org>\r\n"
                              "MIME-Version: 1.0\r\n"
                              "Content-Type: multipart/mixed; boundary=\"=_bnd_0123456789\"\r\n\r\n");
    for (int p = 0; p < nparts; p++) {
        len += (size_t)sprintf(m + len, "--=_bnd_0123456789\r\n"
                                        "Content-Type: text/plain; charset=utf-8\r\n"
                                        "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        for (size_t w = 0; w < per; w += 76) {
            memset(m + len, 'a' + (char)(w / 76 % 26), 74);
            len += 74;
            m[len++] = '\r';
            m[len++] = '\n';
        }
    }
    len += (size_t)sprintf(m + len, "--=_bnd_0123456789--\r\n");
    *len_r = len;
    return m;
}

static void measure(const char *what, size_t size, int nparts, int rounds)
{
    size_t len;
    char *m = make_message(size, nparts, &len);
    double t0 = now(), dt;

    for (int i = 0; i < rounds; i++) {
        struct mime_cache *c;
        const char *error;

        assert_int_equal(mime_cache_build(m, len, &c, &error), 0);
        mime_cache_free(&c);
    }
    dt = now() - t0;
    print_message("%s: %zu bytes, %d parts: %.0f messages/s, %.1f MB/s\n", what, len, nparts,
                  rounds / dt, (double)len * rounds / dt / 1e6);
    free(m);
}

static void test_big_and_speed(void **state)
{
    size_t len;
    char *m = make_message(20u << 20, 1000, &len);
    struct mime_cache *c;
    double t0;
    size_t off, n;

    (void)state;
    t0 = now();
    c = build(m, len);
    print_message("20 MB, 1000 parts: %zu bytes in %.3f s (%u entities, bodystructure %zu "
                  "bytes)\n", len, now() - t0, c->part_count, strlen(c->bodystructure));
    assert_int_equal(c->part_count, 1001);
    assert_int_equal(mime_cache_section(c, "1000", &off, &n), 0);
    assert_int_equal(mime_cache_section(c, "1001", &off, &n), 1);
    assert_gmime_agrees(m, len, c);
    mime_cache_free(&c);
    free(m);

    measure("4 KB message", 4096, 2, 20000);
    measure("50 KB message", 50 * 1024, 3, 2000);
}

static int teardown_all(void **state)
{
    (void)state;
    mime_cache_gmime_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dovecot_bodystructure),
        cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_envelope_literals),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_section_syntax),
        cmocka_unit_test(test_nested_sections),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_serialize_truncations),
        cmocka_unit_test(test_deserialize_bad_trees),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_part_limit),
        cmocka_unit_test(test_huge_headers),
        cmocka_unit_test(test_lf_only),
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_big_and_speed),
    };

    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
