/* mailbox_name - IMAP mailbox names: modified UTF-7, validation, and the
 * one-to-one mapping onto Maildir++ folder directory names.
 *
 * This is the only gate between a name a client typed and a path on disk,
 * so it is strict and pure (no I/O, no logging, no global state).
 *
 * Three forms of one name:
 *   wire (IMAP4rev1)   modified UTF-7, RFC 3501 5.1.3:   "&ZeVnLIqe-"
 *   name (canonical)   UTF-8, '/' hierarchy separator:   "日本語"
 *   dir  (on disk)     one Maildir++ directory entry:    ".日本語"
 * IMAP4rev2 (RFC 9051) and UTF8=ACCEPT clients send the UTF-8 form
 * directly; mx-store's wire protocol always carries the UTF-8 form.
 *
 * Rules of a valid name (mailbox_name_normalize):
 *   - 1..MAILBOX_NAME_MAX octets of strict UTF-8 (no overlong forms, no
 *     surrogates, nothing above U+10FFFF);
 *   - no NUL, no C0 control, no DEL, no C1 control (U+0080..U+009F), no
 *     backslash;
 *   - '/' separates hierarchy levels; no level is empty (so no leading or
 *     trailing '/', no "a//b"), no level starts with '.' (so no "." and no
 *     ".." level), each level is at most MAILBOX_NAME_LEVEL_MAX octets;
 *   - "INBOX" is case-insensitive (RFC 3501 5.1) and normalised to upper
 *     case, also as the first level of a longer name: "inbox/Sub" becomes
 *     "INBOX/Sub". INBOX may have children (as in Dovecot): "INBOX/Sub"
 *     lives in the directory ".INBOX.Sub".
 *
 * Mapping to a directory (mailbox_name_to_dir): Maildir++ keeps every
 * folder as a sibling directory of the root, its name the folder's path
 * with '.' as separator and a leading '.': "Work/Project" -> ".Work.Project".
 * A '.' inside a level is escaped as "%2E" and '%' itself as "%25"
 * (upper-case hex, the only two escapes): "v1.2/50%" -> ".v1%2E2.50%25".
 * The directory name is UTF-8 (not modified UTF-7; Dovecot's UTF8 layout
 * option does the same), so operators see readable names. INBOX is the
 * Maildir root itself and maps to "" (empty). Guarantees, for every valid
 * name other than INBOX: the directory name is one path component starting
 * with exactly one '.', contains no '/' and no NUL, and maps back to the
 * same name. The flat layout puts the whole name into one directory entry,
 * so a name whose directory form exceeds MAILBOX_NAME_DIR_MAX octets (the
 * file system's NAME_MAX) is refused by mailbox_name_to_dir even though it
 * is a valid IMAP name; Dovecot's Maildir++ layout has the same limit.
 *
 * Returned strings are heap-allocated (mx_alloc); the caller frees them.
 * error_r strings are static. */
#ifndef MAILBOX_NAME_H
#define MAILBOX_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define MAILBOX_NAME_SEPARATOR '/'
#define MAILBOX_NAME_MAX 1024        /* octets of the UTF-8 name */
#define MAILBOX_NAME_LEVEL_MAX 255   /* octets of one hierarchy level */
#define MAILBOX_NAME_DIR_MAX 255     /* octets of the directory entry */
#define MAILBOX_NAME_INBOX "INBOX"

/* mailbox_name_utf8_valid - strict UTF-8 (RFC 3629): no overlong forms,
 * no surrogates, nothing above U+10FFFF. NUL bytes are valid UTF-8 here;
 * the name rules refuse them separately. */
bool mailbox_name_utf8_valid(const char *s, size_t len);

/* mailbox_name_mutf7_decode - modified UTF-7 (RFC 3501 5.1.3) to UTF-8.
 * Strict: refuses bytes outside printable ASCII, an unterminated "&", bad
 * modified-base64 characters, non-zero padding bits, superfluous base64
 * characters, printable ASCII or U+0000 encoded in base64, two base64
 * runs back to back (the canonical encoder merges them), and unpaired
 * surrogates. Consequence: for every accepted input, encoding the result
 * gives back exactly the input. */
int mailbox_name_mutf7_decode(const char *in, size_t len, char **utf8_r, const char **error_r);

/* mailbox_name_mutf7_encode - UTF-8 to canonical modified UTF-7. Refuses
 * invalid UTF-8 and U+0000. */
int mailbox_name_mutf7_encode(const char *utf8, size_t len, char **mutf7_r,
                              const char **error_r);

/* mailbox_name_normalize - check a UTF-8 name against the rules above and
 * return its canonical form (INBOX upper-cased). */
int mailbox_name_normalize(const char *utf8, size_t len, char **name_r, const char **error_r);

/* mailbox_name_is_inbox - name (canonical) is INBOX itself. */
bool mailbox_name_is_inbox(const char *name);

/* mailbox_name_to_dir - canonical name to its Maildir++ directory entry
 * ("" for INBOX). Re-validates the name and refuses a non-canonical one
 * (e.g. "inbox"), so no unchecked string ever reaches a path. */
int mailbox_name_to_dir(const char *name, char **dir_r, const char **error_r);

/* mailbox_name_from_dir - directory entry back to the canonical name; ""
 * gives INBOX. Refuses every entry that mailbox_name_to_dir would not have
 * produced (wrong escapes, lower-case hex, "..x", ".INBOX", ".inbox.x",
 * invalid names), so a directory made by hand or by another tool is
 * reported rather than misread. */
int mailbox_name_from_dir(const char *dir, char **name_r, const char **error_r);

/* mailbox_name_is_descendant - name lies strictly below ancestor in the
 * hierarchy ("A/B" below "A", but "AB" is not below "A"). */
bool mailbox_name_is_descendant(const char *name, const char *ancestor);

#endif
