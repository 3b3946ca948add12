/* fuzz_mailbox_name - libFuzzer target for store/mailbox_name.c (the gate
 * between a client's mailbox name and a path), plus the Maildir file name
 * and maildirsize parsers of store/maildir.c and store/maildirsize.c.
 *
 * The whole input is tried as every kind of string; abort() on any broken
 * invariant:
 *   - mUTF-7 decode accepts -> the result is strict UTF-8 and encoding it
 *     gives back exactly the input (canonical form, bijection);
 *   - input is UTF-8 without NUL -> encode then decode gives it back;
 *   - normalize accepts -> idempotent; no level is empty or starts with
 *     '.'; mapping to a directory either fails only for NAME_MAX or gives
 *     one component ("" for INBOX, else ".x..." with no '/' and no NUL,
 *     never "." / ".." / "..x") that maps back to the same name;
 *   - normalize refuses -> mailbox_name_to_dir refuses the raw string too;
 *   - from_dir accepts -> to_dir of the result is the input again;
 *   - Maildir file name parses -> setting its own flags and parsing again
 *     keeps size, vsize, id, flags and key;
 *   - maildirsize parse never reads out of bounds, and a clean parse has
 *     exactly one line per delta.
 *
 * Build: cmake -DMX_FUZZ=ON with clang (tests/fuzz/CMakeLists.txt). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailbox_name.h"
#include "maildir.h"
#include "maildirsize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "fuzz_mailbox_name: invariant failed at line %d: %s\n", \
                    __LINE__, #cond);                                              \
            abort();                                                               \
        }                                                                          \
    } while (0)

static void check_name(const char *name)
{
    const char *error;
    char *again = NULL, *dir = NULL, *back = NULL, *m7 = NULL, *u8 = NULL;
    size_t len = strlen(name);

    CHECK(mailbox_name_normalize(name, len, &again, &error) == 0);
    CHECK(strcmp(again, name) == 0);
    free(again);
    CHECK(name[0] != '.' && name[0] != '/' && name[len - 1] != '/');
    CHECK(strstr(name, "/.") == NULL && strstr(name, "//") == NULL);
    CHECK(strchr(name, '\\') == NULL);

    CHECK(mailbox_name_mutf7_encode(name, len, &m7, &error) == 0);
    CHECK(mailbox_name_mutf7_decode(m7, strlen(m7), &u8, &error) == 0);
    CHECK(strcmp(u8, name) == 0);
    free(m7);
    free(u8);

    if (mailbox_name_to_dir(name, &dir, &error) != 0) {
        CHECK(strstr(error, "too long") != NULL);
        return;
    }
    size_t dlen = strlen(dir);
    if (mailbox_name_is_inbox(name)) {
        CHECK(dlen == 0);
    } else {
        CHECK(dlen >= 2 && dlen <= MAILBOX_NAME_DIR_MAX);
        CHECK(dir[0] == '.' && dir[1] != '.');
        CHECK(strchr(dir, '/') == NULL);
    }
    CHECK(mailbox_name_from_dir(dir, &back, &error) == 0);
    CHECK(strcmp(back, name) == 0);
    free(dir);
    free(back);
}

static void check_filename(const char *name)
{
    struct maildir_filename a, b;
    const char *error;
    if (maildir_filename_parse(name, &a, &error) != 0)
        return;
    CHECK(a.base_len > 0 && a.base_len <= a.key_len && a.key_len <= strlen(name));
    char out[MAILDIR_FILENAME_SIZE];
    if (maildir_filename_set_flags(name, a.flags, out, &error) != 0) {
        CHECK(strlen(name) + 3 >= MAILDIR_FILENAME_SIZE - 52);
        return;
    }
    CHECK(maildir_filename_parse(out, &b, &error) == 0);
    CHECK(b.flags == a.flags && b.size == a.size && b.vsize == a.vsize);
    CHECK(b.has_size == a.has_size && b.has_vsize == a.has_vsize && b.has_id == a.has_id);
    CHECK(strcmp(a.id, b.id) == 0 && b.key_len == a.key_len && b.has_info);
    CHECK(memcmp(out, name, a.key_len) == 0);
    char flags[MAILDIR_FLAGS_TEXT_SIZE];
    size_t n = maildir_flags_format(a.flags, flags);
    uint64_t again;
    CHECK(maildir_flags_parse(flags, n, &again) == 0 && again == a.flags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *error;
    bool has_nul = memchr(data, 0, size) != NULL;
    char *cstr = malloc(size + 1);
    memcpy(cstr, data, size);
    cstr[size] = '\0';

    /* as modified UTF-7 from an IMAP4rev1 client */
    char *u8 = NULL, *m7 = NULL;
    if (mailbox_name_mutf7_decode(in, size, &u8, &error) == 0) {
        CHECK(mailbox_name_utf8_valid(u8, strlen(u8)));
        CHECK(mailbox_name_mutf7_encode(u8, strlen(u8), &m7, &error) == 0);
        CHECK(strlen(m7) == size && memcmp(m7, data, size) == 0);
        char *name = NULL;
        if (mailbox_name_normalize(u8, strlen(u8), &name, &error) == 0) {
            check_name(name);
            free(name);
        }
        free(u8);
        free(m7);
    }

    /* as UTF-8 */
    if (!has_nul && mailbox_name_utf8_valid(in, size)) {
        CHECK(mailbox_name_mutf7_encode(in, size, &m7, &error) == 0);
        CHECK(mailbox_name_mutf7_decode(m7, strlen(m7), &u8, &error) == 0);
        CHECK(strlen(u8) == size && memcmp(u8, data, size) == 0);
        free(m7);
        free(u8);
    }
    char *name = NULL;
    if (mailbox_name_normalize(in, size, &name, &error) == 0) {
        CHECK(!has_nul);
        check_name(name);
        free(name);
    } else if (!has_nul) {
        char *dir = NULL;
        CHECK(mailbox_name_to_dir(cstr, &dir, &error) != 0 && dir == NULL);
    }

    /* as a directory entry found on disk */
    if (!has_nul) {
        char *dir = NULL;
        if (mailbox_name_from_dir(cstr, &name, &error) == 0) {
            CHECK(mailbox_name_to_dir(name, &dir, &error) == 0);
            CHECK(strcmp(dir, cstr) == 0);
            free(dir);
            free(name);
        }
        check_filename(cstr);
    }

    /* as a maildirsize file */
    struct maildirsize_state st;
    maildirsize_parse(in, size, &st);
    if (!st.corrupt) {
        size_t lines = 0;
        for (size_t i = 0; i < size; i++)
            lines += data[i] == '\n';
        CHECK(st.quota_valid && lines == st.lines + 1);
        CHECK(st.usage.bytes >= 0 && st.usage.count >= 0);
    }
    free(cstr);
    return 0;
}
