/* mx_msgid - cluster-unique, time-ordered message ids (layout and text form
 * in mx_msgid.h). */
#include "mx_msgid.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "mx_log.h"

_Static_assert(sizeof(struct mx_msgid) == MX_MSGID_SIZE, "mx_msgid has no padding");
/* 26 base32 digits hold 130 bits: the 128 of the id and 2 always-zero bits
 * on top, which is why the first digit is at most '7'. */
_Static_assert(MX_MSGID_TEXT_LEN * 5 == MX_MSGID_SIZE * 8 + 2, "26 digits = 128 bits + 2");

#define MX_MSGID_MILLIS_MAX ((UINT64_C(1) << 48) - 1)

/* Process-wide generator state, under mx_msgid_lock. (millis, counter) is
 * the last value handed out and only ever grows, lexicographically. */
static pthread_mutex_t mx_msgid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint16_t mx_msgid_node_number;
static uint32_t mx_msgid_random;
static uint32_t mx_msgid_counter;
static uint64_t mx_msgid_last_millis;
static pid_t mx_msgid_pid; /* 0: random part not drawn yet */
static uint64_t (*mx_msgid_clock)(void);

/* mx_msgid_draw_random - a fresh random part from the kernel CSPRNG. Only
 * fails on a kernel without getrandom(2) (< 3.17), which we do not support:
 * that is a start-up error, not something to paper over with rand(). */
static uint32_t mx_msgid_draw_random(void)
{
    uint8_t b[4];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            mx_fatal("msgid.getrandom_failed", MX_KVERR(errno));
        }
        got += (size_t)n;
    }
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* mx_msgid_realtime_ms - wall clock in milliseconds since the epoch. The
 * wall clock (not CLOCK_MONOTONIC) because the id must order across
 * processes and nodes; its steps are absorbed by mx_msgid_next. */
static uint64_t mx_msgid_realtime_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0 || ts.tv_sec < 0)
        return 0; /* mx_msgid_next keeps the last millis then */
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void mx_msgid_init(uint16_t node_number)
{
    pthread_mutex_lock(&mx_msgid_lock);
    mx_msgid_node_number = node_number;
    mx_msgid_random = mx_msgid_draw_random();
    mx_msgid_pid = getpid();
    pthread_mutex_unlock(&mx_msgid_lock);
}

void mx_msgid_next(struct mx_msgid *id_r)
{
    pthread_mutex_lock(&mx_msgid_lock);
    uint64_t now = (mx_msgid_clock != NULL ? mx_msgid_clock : mx_msgid_realtime_ms)();
    if (now > MX_MSGID_MILLIS_MAX)
        now = MX_MSGID_MILLIS_MAX; /* year 10889; ordering then rests on the counter */
    /* A forked child inherits random and counter: without a new random part
     * it would mint the parent's next ids. Also covers a missing init. */
    pid_t pid = getpid();
    if (pid != mx_msgid_pid) {
        mx_msgid_random = mx_msgid_draw_random();
        mx_msgid_pid = pid;
    }
    mx_msgid_counter++;
    if (now > mx_msgid_last_millis) {
        mx_msgid_last_millis = now;
    } else if (mx_msgid_counter == 0 && mx_msgid_last_millis < MX_MSGID_MILLIS_MAX) {
        /* Clock stayed or stepped back and the counter wrapped: move the
         * millis on by one ourselves, the only way left to keep order. */
        mx_msgid_last_millis++;
    }
    uint64_t millis = mx_msgid_last_millis;
    uint16_t node = mx_msgid_node_number;
    uint32_t random = mx_msgid_random;
    uint32_t counter = mx_msgid_counter;
    pthread_mutex_unlock(&mx_msgid_lock);

    uint8_t *b = id_r->bytes;
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(millis >> (40 - 8 * i));
    b[6] = (uint8_t)(node >> 8);
    b[7] = (uint8_t)node;
    for (int i = 0; i < 4; i++) {
        b[8 + i] = (uint8_t)(random >> (24 - 8 * i));
        b[12 + i] = (uint8_t)(counter >> (24 - 8 * i));
    }
}

bool mx_msgid_is_zero(const struct mx_msgid *id)
{
    static const struct mx_msgid zero;
    return memcmp(id->bytes, zero.bytes, MX_MSGID_SIZE) == 0;
}

int mx_msgid_compare(const struct mx_msgid *a, const struct mx_msgid *b)
{
    int r = memcmp(a->bytes, b->bytes, MX_MSGID_SIZE);
    return (r > 0) - (r < 0);
}

uint64_t mx_msgid_millis(const struct mx_msgid *id)
{
    uint64_t m = 0;
    for (int i = 0; i < 6; i++)
        m = m << 8 | id->bytes[i];
    return m;
}

uint16_t mx_msgid_node(const struct mx_msgid *id)
{
    return (uint16_t)((unsigned)id->bytes[6] << 8 | id->bytes[7]);
}

/* Crockford's alphabet: digits and upper-case letters without I L O U, in
 * ASCII order (so text order == numeric order). */
static const char mx_msgid_alphabet[33] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

char *mx_msgid_format(const struct mx_msgid *id, char *buf)
{
    /* The id as one 128-bit number hi:lo; emit 5 bits at a time from the
     * least significant end, filling buf from the right. */
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 8; i++) {
        hi = hi << 8 | id->bytes[i];
        lo = lo << 8 | id->bytes[8 + i];
    }
    for (int i = MX_MSGID_TEXT_LEN - 1; i >= 0; i--) {
        buf[i] = mx_msgid_alphabet[lo & 31];
        lo = lo >> 5 | hi << 59;
        hi >>= 5;
    }
    buf[MX_MSGID_TEXT_LEN] = '\0';
    return buf;
}

/* mx_msgid_digit - value of one Crockford digit, -1 if not one. Accepts
 * lower case and the decoding aliases I/L -> 1, O -> 0; U is not a digit. */
static int mx_msgid_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    if (c == 'I' || c == 'L')
        return 1;
    if (c == 'O')
        return 0;
    const char *p = c != '\0' ? memchr(mx_msgid_alphabet + 10, c, 22) : NULL;
    return p != NULL ? (int)(p - mx_msgid_alphabet) : -1;
}

int mx_msgid_parse(const char *text, struct mx_msgid *id_r)
{
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < MX_MSGID_TEXT_LEN; i++) {
        int v = mx_msgid_digit(text[i]); /* stops at the NUL of a short string */
        if (v < 0)
            return -1;
        /* The first digit holds only the top 3 of 128 bits: 8 and above
         * would need bit 129/130 and must not be silently dropped. */
        if (i == 0 && v > 7)
            return -1;
        hi = hi << 5 | lo >> 59;
        lo = lo << 5 | (uint64_t)v;
    }
    if (text[MX_MSGID_TEXT_LEN] != '\0')
        return -1;
    for (int i = 0; i < 8; i++) {
        id_r->bytes[i] = (uint8_t)(hi >> (56 - 8 * i));
        id_r->bytes[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
    }
    return 0;
}

void mx_msgid_set_clock_for_test(uint64_t (*clock_ms)(void))
{
    pthread_mutex_lock(&mx_msgid_lock);
    mx_msgid_clock = clock_ms;
    mx_msgid_last_millis = 0; /* let the test's clock start from scratch */
    pthread_mutex_unlock(&mx_msgid_lock);
}

void mx_msgid_set_counter_for_test(uint32_t counter)
{
    pthread_mutex_lock(&mx_msgid_lock);
    mx_msgid_counter = counter;
    pthread_mutex_unlock(&mx_msgid_lock);
}
