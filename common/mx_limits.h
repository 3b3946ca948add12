/* mx_limits - per-client counters shared by every daemon that accepts
 * clients (mx-inbound, mx-imapd): concurrent sessions and connection rate
 * per IP address, and failed-login counts per key ("1.2.3.4", "dn:..."),
 * so one misbehaving address or one attacked account cannot wear down the
 * service. Memory is bounded: idle entries are swept (see mx_limits.c).
 * Not thread-safe: one per event loop. Times come from mx_now_ms(). */
#ifndef MX_LIMITS_H
#define MX_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

struct mx_limits;

struct mx_limits *mx_limits_new(void);
void mx_limits_free(struct mx_limits **limits);

/* mx_limits_connect - count a new session from ip; 0 = allowed, -1 = over
 * a limit (*reason_r, static text, says which). max_per_minute 0 = no rate
 * limit. mx_limits_disconnect undoes the concurrent count of an allowed
 * session (and only of an allowed one). */
int mx_limits_connect(struct mx_limits *limits, const char *ip, unsigned max_concurrent,
                      unsigned max_per_minute, uint64_t now_ms, const char **reason_r);
void mx_limits_disconnect(struct mx_limits *limits, const char *ip);

/* Failed-login accounting by key: failures are counted in a fixed window
 * of window_ms that starts at the first failure; _blocked says whether
 * max_failures were reached inside the current window. Callers pick
 * distinct key spaces ("1.2.3.4" for addresses, "dn:<lower-case dn>" for
 * accounts, see mx_auth.c) so the counts never mix. */
void mx_limits_auth_failure(struct mx_limits *limits, const char *key, uint64_t now_ms,
                            unsigned window_ms);
bool mx_limits_auth_blocked(struct mx_limits *limits, const char *key, uint64_t now_ms,
                            unsigned window_ms, unsigned max_failures);

#endif
