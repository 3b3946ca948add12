/* fuzz_mime_cache - libFuzzer target for store/mime_cache.c (ENVELOPE,
 * BODYSTRUCTURE, part offsets, section specs, the LMDB blob).
 *
 * Input: the raw message. Section specs to try are cut from the input
 * itself (four windows of up to 12 bytes at input-derived offsets) and
 * taken from a fixed list.
 *
 * Checks, abort() on any violation:
 *   - mime_cache_build succeeds; envelope, bodystructure and body are each
 *     exactly one well-formed IMAP value (lists, quoted strings, literals
 *     with the right length, NIL, numbers);
 *   - serialize -> deserialize succeeds (deserialize checks every table
 *     invariant: ranges inside the message and the parent, pre-order tree
 *     shape) and gives back identical strings and table;
 *   - every proper prefix of the blob, and the blob with one byte flipped,
 *     either fails cleanly or deserializes into a cache that passes the
 *     same checks;
 *   - every entity is reachable by its IMAP section number: "N.M" gives
 *     exactly its body range, "N.M.MIME" its header range, "N.HEADER" and
 *     "N.TEXT" of a message/rfc822 part the embedded message's ranges;
 *   - any spec gives -1, 1, or 0 with a range inside the message.
 *
 * Build: cmake -DMX_FUZZ=ON with clang (tests/fuzz/CMakeLists.txt). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime_cache.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "fuzz_mime_cache: invariant failed at line %d: %s\n", \
                    __LINE__, #cond);                                            \
            abort();                                                             \
        }                                                                        \
    } while (0)

static void check_strings(const struct mime_cache *c)
{
    CHECK(mime_cache_imap_value_valid(c->envelope, strlen(c->envelope)));
    CHECK(mime_cache_imap_value_valid(c->bodystructure, strlen(c->bodystructure)));
    CHECK(mime_cache_imap_value_valid(c->body, strlen(c->body)));
}

static bool same_cache(const struct mime_cache *a, const struct mime_cache *b)
{
    if (strcmp(a->envelope, b->envelope) != 0 || strcmp(a->bodystructure, b->bodystructure) != 0 ||
        strcmp(a->body, b->body) != 0 || a->message_size != b->message_size ||
        a->flags != b->flags || a->part_count != b->part_count)
        return false;
    for (uint32_t i = 0; i < a->part_count; i++) {
        const struct mime_cache_part *p = &a->parts[i], *q = &b->parts[i];

        if (p->kind != q->kind || p->hdr_start != q->hdr_start ||
            p->body_start != q->body_start || p->end != q->end || p->nchildren != q->nchildren)
            return false;
    }
    return true;
}

static void expect_range(const struct mime_cache *c, const char *spec, uint32_t s, uint32_t e)
{
    size_t off, len;
    int r = mime_cache_section(c, spec, &off, &len);

    if (r != 0 || off != s || len != (size_t)(e - s)) {
        fprintf(stderr, "fuzz_mime_cache: section %s gave %d %zu+%zu, expected %u..%u\n", spec,
                r, off, len, s, e);
        abort();
    }
}

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

static void walk_message(const struct mime_cache *c, uint32_t m, const char *prefix);

/* walk_part - entity p is reached by section path; check what hangs below. */
static void walk_part(const struct mime_cache *c, uint32_t p, const char *path)
{
    const struct mime_cache_part *pp = &c->parts[p];
    char spec[512];

    if (strlen(path) > 400)
        return;
    if (pp->kind == MIME_CACHE_MULTIPART) {
        uint32_t child = p + 1;

        for (uint32_t k = 1; k <= pp->nchildren; k++) {
            const struct mime_cache_part *cp = &c->parts[child];

            snprintf(spec, sizeof(spec), "%s.%u", path, k);
            expect_range(c, spec, cp->body_start, cp->end);
            snprintf(spec, sizeof(spec), "%s.%u.MIME", path, k);
            expect_range(c, spec, cp->hdr_start, cp->body_start);
            snprintf(spec, sizeof(spec), "%s.%u", path, k);
            walk_part(c, child, spec);
            child = subtree_next(c, child);
        }
    } else if (pp->kind == MIME_CACHE_MESSAGE) {
        const struct mime_cache_part *e = &c->parts[p + 1];

        CHECK(e->hdr_start == pp->body_start && e->end == pp->end);
        snprintf(spec, sizeof(spec), "%s.HEADER", path);
        expect_range(c, spec, e->hdr_start, e->body_start);
        snprintf(spec, sizeof(spec), "%s.TEXT", path);
        expect_range(c, spec, e->body_start, e->end);
        snprintf(spec, sizeof(spec), "%s.", path);
        walk_message(c, p + 1, spec);
    }
}

/* walk_message - m is a message (root or embedded) whose parts are
 * numbered after prefix ("" or "2.1."). */
static void walk_message(const struct mime_cache *c, uint32_t m, const char *prefix)
{
    const struct mime_cache_part *mp = &c->parts[m];
    char spec[512];

    if (mp->kind == MIME_CACHE_MULTIPART) {
        uint32_t child = m + 1;

        for (uint32_t k = 1; k <= mp->nchildren; k++) {
            const struct mime_cache_part *cp = &c->parts[child];

            snprintf(spec, sizeof(spec), "%s%u", prefix, k);
            expect_range(c, spec, cp->body_start, cp->end);
            snprintf(spec, sizeof(spec), "%s%u.MIME", prefix, k);
            expect_range(c, spec, cp->hdr_start, cp->body_start);
            snprintf(spec, sizeof(spec), "%s%u", prefix, k);
            walk_part(c, child, spec);
            child = subtree_next(c, child);
        }
        CHECK(child == subtree_next(c, m));
    } else {
        /* a non-multipart message is its own part 1 */
        snprintf(spec, sizeof(spec), "%s1", prefix);
        expect_range(c, spec, mp->body_start, mp->end);
        snprintf(spec, sizeof(spec), "%s1.MIME", prefix);
        expect_range(c, spec, mp->hdr_start, mp->body_start);
        snprintf(spec, sizeof(spec), "%s2", prefix);
        {
            size_t off, len;

            CHECK(mime_cache_section(c, spec, &off, &len) == 1);
        }
        snprintf(spec, sizeof(spec), "%s1", prefix);
        walk_part(c, m, spec);
    }
}

static void any_spec(const struct mime_cache *c, const char *spec)
{
    size_t off = 0, len = 0;
    int r = mime_cache_section(c, spec, &off, &len);

    CHECK(r == -1 || r == 0 || r == 1);
    if (r == 0)
        CHECK(off <= c->message_size && len <= c->message_size - off);
}

static void check_blob_mutations(const uint8_t *blob, size_t len, size_t seed)
{
    struct mime_cache *d;
    const char *error;
    size_t cuts[3] = { len - 1, len / 2, seed % len };

    for (int i = 0; i < 3; i++) {
        uint8_t *copy = malloc(cuts[i] + 1);

        memcpy(copy, blob, cuts[i]);
        CHECK(mime_cache_deserialize(copy, cuts[i], &d, &error) == -1);
        CHECK(d == NULL && error != NULL);
        free(copy);
    }
    {
        uint8_t *copy = malloc(len);

        memcpy(copy, blob, len);
        copy[seed % len] ^= (uint8_t)(1u << (seed % 8));
        if (mime_cache_deserialize(copy, len, &d, &error) == 0) {
            check_strings(d);
            any_spec(d, "1.2.MIME");
            any_spec(d, "2.TEXT");
            if (d->part_count <= 1000)
                walk_message(d, 0, "");
            mime_cache_free(&d);
        }
        free(copy);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mime_cache_gmime_init(); /* GMime's one-time globals are not a leak */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fixed[] = { "",      "HEADER", "TEXT",        "1",     "1.MIME",
                                         "2",     "2.1",    "1.1.1",       "0",     "1.",
                                         "MIME",  "01",     "1.HEADER",    "1..1",  "9999999999",
                                         "3.TEXT", "2.HEADER.FIELDS.NOT" };
    struct mime_cache *c = NULL, *d = NULL;
    const char *error = NULL;
    uint8_t *blob;
    size_t blob_len;
    size_t off, len;

    CHECK(mime_cache_build(data, size, &c, &error) == 0);
    CHECK(c != NULL && c->message_size == size && c->part_count >= 1);
    check_strings(c);

    mime_cache_serialize(c, &blob, &blob_len);
    CHECK(mime_cache_deserialize(blob, blob_len, &d, &error) == 0);
    CHECK(same_cache(c, d));
    mime_cache_free(&d);
    CHECK(d == NULL);
    check_blob_mutations(blob, blob_len, size * 31 + (size > 0 ? data[size / 2] : 0));
    free(blob);

    /* the whole message, its header and text */
    CHECK(mime_cache_section(c, "", &off, &len) == 0 && off == 0 && len == size);
    expect_range(c, "HEADER", 0, c->parts[0].body_start);
    expect_range(c, "TEXT", c->parts[0].body_start, c->parts[0].end);
    if (c->part_count <= 1000) /* the walk is quadratic in the part count */
        walk_message(c, 0, "");

    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        any_spec(c, fixed[i]);
    for (size_t k = 0; k < 4 && size > 0; k++) {
        char spec[13];
        size_t at = (size_t)data[(k * 7919) % size] * (k + 1) % size;
        size_t n = size - at < 12 ? size - at : 12;

        memcpy(spec, data + at, n);
        spec[n] = '\0';
        any_spec(c, spec);
    }
    mime_cache_free(&c);
    return 0;
}
