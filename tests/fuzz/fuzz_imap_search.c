/* fuzz_imap_search - libFuzzer target for imap-frontend/imap_search.c,
 * imap_sort.c and imap_charset.c.
 *
 * Input: one line of search program text, then messages separated by a
 * line "\n--\n" (at most 8). The program text becomes an imap_arg tree with
 * a small tokenizer of our own (atoms, "quoted", {n} literals inline, and
 * nested lists), so this target does not depend on the command parser's
 * state; the parser has its own fuzzer. Each message is searched with the
 * program if it parsed, then all messages are SORTed by every criterion and
 * THREADed with both algorithms.
 *
 * Invariants checked (abort() on violation): the program's need() is one
 * of the three values; imap_search_format_result() output starts with
 * "* SEARCH" or "* ESEARCH"; THREAD output mentions every message exactly
 * once, SORT is a permutation. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_search.h"
#include "imap_sort.h"

#define MAX_MSGS 8
#define MAX_ARGS_TOTAL 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct tokenizer {
    const char *p, *end;
    size_t total;
};

static void free_args(struct imap_arg *args, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (args[i].type == IMAP_ARG_LIST)
            free_args(args[i].list, args[i].n_list);
    }
    free(args);
}

/* Recursion is bounded by the 2 KiB program line below: at most ~2000
 * nested lists, which the search parser must reject by its depth limit. */
static struct imap_arg *tokenize(struct tokenizer *t, size_t *n_r, unsigned depth)
{
    struct imap_arg *args = NULL;
    size_t n = 0, cap = 0;
    while (t->p < t->end && t->total < MAX_ARGS_TOTAL) {
        char c = *t->p;
        if (c == ' ') {
            t->p++;
            continue;
        }
        if (c == ')') {
            t->p++;
            if (depth > 0)
                break;
            continue;
        }
        if (n == cap) {
            cap = cap == 0 ? 4 : cap * 2;
            args = realloc(args, cap * sizeof(*args));
            if (args == NULL)
                abort();
        }
        struct imap_arg *a = &args[n++];
        memset(a, 0, sizeof(*a));
        t->total++;
        if (c == '(') {
            t->p++;
            a->type = IMAP_ARG_LIST;
            a->list = tokenize(t, &a->n_list, depth + 1);
        } else if (c == '"') {
            const char *start = ++t->p;
            while (t->p < t->end && *t->p != '"')
                t->p++;
            a->type = IMAP_ARG_QUOTED;
            a->str = start;
            a->len = (size_t)(t->p - start);
            if (t->p < t->end)
                t->p++;
        } else if (c == '{') {
            /* {n}: the next n bytes, inline */
            size_t len = 0;
            t->p++;
            while (t->p < t->end && *t->p >= '0' && *t->p <= '9' && len < 100000)
                len = len * 10 + (size_t)(*t->p++ - '0');
            if (t->p < t->end && *t->p == '}')
                t->p++;
            if (len > (size_t)(t->end - t->p))
                len = (size_t)(t->end - t->p);
            a->type = IMAP_ARG_LITERAL;
            a->str = t->p;
            a->len = len;
            t->p += len;
        } else {
            const char *start = t->p;
            while (t->p < t->end && *t->p != ' ' && *t->p != '(' && *t->p != ')')
                t->p++;
            a->type = IMAP_ARG_ATOM;
            a->str = start;
            a->len = (size_t)(t->p - start);
        }
    }
    *n_r = n;
    return args;
}

static void check_thread_line(const char *line, size_t n_msgs)
{
    if (strncmp(line, "* THREAD", 8) != 0)
        abort();
    unsigned seen[MAX_MSGS + 1] = {0};
    for (const char *p = line + 8; *p != '\0';) {
        if (*p >= '0' && *p <= '9') {
            unsigned long v = strtoul(p, (char **)&p, 10);
            if (v == 0 || v > n_msgs)
                abort();
            seen[v]++;
        } else {
            p++;
        }
    }
    for (size_t i = 1; i <= n_msgs; i++) {
        if (seen[i] != 1)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    size_t program_len = nl != NULL ? (size_t)(nl - text) : size;
    if (program_len > 2048)
        return 0;

    /* messages */
    struct imap_sort_msg sort_msgs[MAX_MSGS];
    size_t n_msgs = 0;
    const char *rest = nl != NULL ? nl + 1 : text + size;
    const char *end = text + size;
    while (rest < end && n_msgs < MAX_MSGS) {
        const char *sep = memmem(rest, (size_t)(end - rest), "\n--\n", 4);
        const char *msg_end = sep != NULL ? sep + 1 : end;
        struct imap_sort_msg *m = &sort_msgs[n_msgs];
        memset(m, 0, sizeof(*m));
        m->seq = (uint32_t)n_msgs + 1;
        m->uid = (uint32_t)n_msgs * 7 + 3;
        m->internaldate_ms = (uint64_t)(unsigned char)rest[0] * 86400000ull;
        m->size = (size_t)(msg_end - rest);
        m->header = rest;
        m->header_len = (size_t)(msg_end - rest);
        n_msgs++;
        rest = sep != NULL ? sep + 4 : end;
    }

    /* SEARCH */
    struct tokenizer t = {text, text + program_len, 0};
    size_t n_args;
    struct imap_arg *args = tokenize(&t, &n_args, 0);
    struct imap_search_error error;
    struct imap_search_limits limits;
    imap_search_limits_default(&limits);
    limits.max_decode_bytes = 1u << 20;
    struct imap_search_program *program = imap_search_parse(args, n_args, true, &limits, &error);
    if (program != NULL) {
        enum imap_search_need need = imap_search_need(program);
        if (need != IMAP_SEARCH_NEED_INDEX && need != IMAP_SEARCH_NEED_HEADER &&
            need != IMAP_SEARCH_NEED_BODY)
            abort();
        uint32_t uids[MAX_MSGS], hits[MAX_MSGS];
        size_t n_hits = 0;
        for (size_t i = 0; i < n_msgs; i++)
            uids[i] = sort_msgs[i].uid;
        const uint32_t saved[] = {3, 17};
        struct imap_search_view view = {uids, (uint32_t)n_msgs, saved, 2};
        for (size_t i = 0; i < n_msgs; i++) {
            struct imap_search_msg m = {0};
            m.seq = sort_msgs[i].seq;
            m.uid = sort_msgs[i].uid;
            m.flags = (uint32_t)(unsigned char)sort_msgs[i].header[0] & 0x3f;
            m.keywords = "$Junk Work";
            m.internaldate_ms = sort_msgs[i].internaldate_ms;
            m.size = sort_msgs[i].size;
            m.modseq = i * 5;
            m.raw = sort_msgs[i].header;
            m.raw_len = sort_msgs[i].header_len;
            if (imap_search_match(program, &view, &m))
                hits[n_hits++] = m.uid;
        }
        char *line = imap_search_format_result(program, "T1", true, hits, n_hits, 9);
        if (line != NULL && strncmp(line, "* SEARCH", 8) != 0 && strncmp(line, "* ESEARCH", 9) != 0)
            abort();
        free(line);
        (void)imap_search_save_filter(program, hits, n_hits);
        imap_search_free(program);
    } else if (error.text[0] == '\0' || memchr(error.text, '\n', sizeof(error.text)) != NULL) {
        abort(); /* an error must carry a one-line text */
    }
    free_args(args, n_args);

    /* SORT by each criterion, THREAD both ways */
    if (n_msgs > 0) {
        static const enum imap_sort_key keys[] = {
            IMAP_SORT_ARRIVAL, IMAP_SORT_CC,   IMAP_SORT_DATE,        IMAP_SORT_FROM,
            IMAP_SORT_SIZE,    IMAP_SORT_SUBJECT, IMAP_SORT_TO, IMAP_SORT_DISPLAYFROM,
            IMAP_SORT_DISPLAYTO,
        };
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            struct imap_sort_criterion crit = {keys[k], k % 2 == 1};
            size_t order[MAX_MSGS];
            imap_sort(&crit, 1, sort_msgs, n_msgs, order);
            bool used[MAX_MSGS] = {false};
            for (size_t i = 0; i < n_msgs; i++) {
                if (order[i] >= n_msgs || used[order[i]])
                    abort();
                used[order[i]] = true;
            }
        }
        char *line = imap_thread(IMAP_THREAD_REFERENCES, sort_msgs, n_msgs, false);
        check_thread_line(line, n_msgs);
        free(line);
        line = imap_thread(IMAP_THREAD_ORDEREDSUBJECT, sort_msgs, n_msgs, false);
        check_thread_line(line, n_msgs);
        free(line);
    }
    return 0;
}
