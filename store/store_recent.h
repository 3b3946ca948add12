/* store_recent - who has seen which messages as \Recent (RFC 3501 2.3.2).
 *
 * \Recent belongs to exactly one session: the first one told about a
 * message. The frontends are stateless, so the store keeps, per mailbox
 * (user, mailbox id, UIDVALIDITY), the first UID no session has claimed
 * yet; a read-write SELECT, and every report of new mail to a selected
 * session, claims everything below the mailbox's UIDNEXT as that session
 * saw it. EXAMINE and STATUS only look.
 *
 * Kept in memory on purpose: \Recent is advisory, IMAP4rev2 (RFC 9051)
 * dropped it, and writing it to the index would turn every SELECT into a
 * replicated write. After a store restart or a failover a mailbox starts
 * over with every message recent to its next session, as a fresh Dovecot
 * index does. */
#ifndef STORE_RECENT_H
#define STORE_RECENT_H

#include <stdbool.h>
#include <stdint.h>

struct store_recent;

struct store_recent *store_recent_new(void);
void store_recent_free(struct store_recent **recent);
/* store_recent_claim - the first unclaimed UID of the mailbox (1 when never
 * claimed); with claim, everything below upto is claimed from now on
 * (never lowered). */
uint32_t store_recent_claim(struct store_recent *recent, uint64_t mailbox_id, uint32_t uidvalidity,
                            uint32_t upto, bool claim);

#endif
