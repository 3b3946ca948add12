/* mx_msgid - the cluster-unique, time-ordered 128-bit message id.
 *
 * Assigned once by mx-inbound when a message is accepted; every later hop
 * (delivery, store, outbound queue) deduplicates by (id, recipient), never
 * by the Message-ID header, which two different messages may share.
 *
 * Layout (big-endian, so byte order == time order):
 *   48 bits  milliseconds since the Unix epoch
 *   16 bits  node number (from config: node.id)
 *   32 bits  random, drawn once per process at start
 *   32 bits  counter, incremented per id within the process
 * The random+counter half keeps ids unique when the clock steps backwards
 * or two processes on one node start in the same millisecond; ids are
 * never derived from the clock alone.
 *
 * Text form: 26 characters of Crockford base32 (as ULID), usable as a queue
 * id, a file name and a log field. The 128 bits are read as one big-endian
 * number and written most significant digit first; 26 x 5 = 130 bits, so the
 * first character only carries the top 3 bits and is always '0'..'7'
 * (parse rejects '8'..'Z' there instead of silently dropping bits). The
 * alphabet 0123456789ABCDEFGHJKMNPQRSTVWXYZ is in ASCII order and format
 * writes upper case, so strcmp order of texts == memcmp order of ids ==
 * time order: sorting file names sorts by time.
 *
 * Monotonic within a process: when the clock stays or steps back, the last
 * millis are kept and the counter bumped; if the counter wraps, the millis
 * field is advanced by one artificially (ids run ahead of the clock until it
 * catches up). The counter never resets. After fork() the child draws a new
 * random part on its first id, so parent and child never collide.
 * Thread-safe (one mutex). */
#ifndef MX_MSGID_H
#define MX_MSGID_H

#include <stdbool.h>
#include <stdint.h>

#define MX_MSGID_SIZE 16
#define MX_MSGID_TEXT_LEN 26

struct mx_msgid {
    uint8_t bytes[MX_MSGID_SIZE];
};

/* mx_msgid_init - set this process's node number and draw its random part;
 * call once at start before mx_msgid_next. */
void mx_msgid_init(uint16_t node_number);
/* mx_msgid_next - a fresh id, strictly greater than the previous one this
 * process produced, even if the wall clock stepped back. */
void mx_msgid_next(struct mx_msgid *id_r);
bool mx_msgid_is_zero(const struct mx_msgid *id);
int mx_msgid_compare(const struct mx_msgid *a, const struct mx_msgid *b);
uint64_t mx_msgid_millis(const struct mx_msgid *id);
uint16_t mx_msgid_node(const struct mx_msgid *id);
/* mx_msgid_format - text form into buf[MX_MSGID_TEXT_LEN + 1]; returns buf. */
char *mx_msgid_format(const struct mx_msgid *id, char *buf);
/* mx_msgid_parse - text form back to an id (case-insensitive, Crockford
 * aliases I/L->1, O->0 accepted); -1 on a malformed string. */
int mx_msgid_parse(const char *text, struct mx_msgid *id_r);

/* ---- test hooks: unit tests only, never called by daemons ------------ */

/* mx_msgid_set_clock_for_test - replace the wall clock (milliseconds since
 * the epoch) used by mx_msgid_next; NULL restores the real clock. Also
 * forgets the last millis handed out, so the new clock starts fresh (which
 * is exactly the order guarantee a daemon must never lose). */
void mx_msgid_set_clock_for_test(uint64_t (*clock_ms)(void));
/* mx_msgid_set_counter_for_test - set the per-process counter, so a test
 * can reach its wrap-around without minting 2^32 ids. */
void mx_msgid_set_counter_for_test(uint32_t counter);

#endif
