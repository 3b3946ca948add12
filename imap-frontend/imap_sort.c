/* imap_sort - SORT and THREAD (RFC 5256, RFC 5957); see imap_sort.h. */
#include "imap_sort.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "imap_charset.h"
#include "mx_alloc.h"

/* Only the last references of a References: field are used for threading:
 * a hostile message with thousands of ids would otherwise cost
 * O(ids * thread depth) in loop checks. Real clients trim long chains
 * keeping the first and last ids, so the nearest ancestors are the last. */
#define THREAD_MAX_REFERENCES 64

/* --- growable output -------------------------------------------------- */

struct strbuf {
    char *s;
    size_t len, cap;
};

static void sb_append(struct strbuf *sb, const char *data, size_t len)
{
    if (sb->len + len + 1 > sb->cap) {
        size_t cap = sb->cap == 0 ? 64 : sb->cap;
        while (cap < sb->len + len + 1)
            cap *= 2;
        sb->s = mx_realloc(sb->s, cap);
        sb->cap = cap;
    }
    memcpy(sb->s + sb->len, data, len);
    sb->len += len;
    sb->s[sb->len] = '\0';
}

static void sb_str(struct strbuf *sb, const char *s)
{
    sb_append(sb, s, strlen(s));
}

static void sb_u32(struct strbuf *sb, uint32_t v)
{
    char num[16];
    int n = snprintf(num, sizeof(num), "%" PRIu32, v);
    sb_append(sb, num, (size_t)n);
}

/* --- criteria ---------------------------------------------------------- */

static const struct {
    const char *word;
    enum imap_sort_key key;
} sort_words[] = {
    {"ARRIVAL", IMAP_SORT_ARRIVAL}, {"CC", IMAP_SORT_CC},
    {"DATE", IMAP_SORT_DATE},       {"FROM", IMAP_SORT_FROM},
    {"SIZE", IMAP_SORT_SIZE},       {"SUBJECT", IMAP_SORT_SUBJECT},
    {"TO", IMAP_SORT_TO},           {"DISPLAYFROM", IMAP_SORT_DISPLAYFROM},
    {"DISPLAYTO", IMAP_SORT_DISPLAYTO},
};

static bool atom_is(const struct imap_arg *arg, const char *word)
{
    return arg->type == IMAP_ARG_ATOM && !arg->has_section && arg->len == strlen(word) &&
           strncasecmp(arg->str, word, arg->len) == 0;
}

int imap_sort_parse_criteria(const struct imap_arg *list, struct imap_sort_criterion *criteria,
                             size_t max_criteria, char *error, size_t error_size)
{
    if (list == NULL || list->type != IMAP_ARG_LIST || list->n_list == 0) {
        snprintf(error, error_size, "SORT needs a parenthesised list of sort criteria");
        return -1;
    }
    size_t n = 0;
    bool reverse = false;
    for (size_t i = 0; i < list->n_list; i++) {
        const struct imap_arg *arg = &list->list[i];
        if (atom_is(arg, "REVERSE")) {
            if (reverse) {
                snprintf(error, error_size, "REVERSE given twice in a row in sort criteria");
                return -1;
            }
            reverse = true;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof(sort_words) / sizeof(sort_words[0]); k++) {
            if (atom_is(arg, sort_words[k].word))
                break;
        }
        if (k == sizeof(sort_words) / sizeof(sort_words[0])) {
            snprintf(error, error_size, "unknown sort criterion");
            return -1;
        }
        if (n == max_criteria) {
            snprintf(error, error_size, "too many sort criteria (limit %zu)", max_criteria);
            return -1;
        }
        criteria[n].key = sort_words[k].key;
        criteria[n].reverse = reverse;
        reverse = false;
        n++;
    }
    if (reverse || n == 0) {
        snprintf(error, error_size, "REVERSE must be followed by a sort criterion");
        return -1;
    }
    return (int)n;
}

bool imap_sort_needs_header(const struct imap_sort_criterion *criteria, size_t n_criteria)
{
    for (size_t i = 0; i < n_criteria; i++) {
        if (criteria[i].key != IMAP_SORT_ARRIVAL && criteria[i].key != IMAP_SORT_SIZE)
            return true;
    }
    return false;
}

/* --- base subject (RFC 5256 section 2.1) -------------------------------- */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* subj-blob = "[" *BLOBCHAR "]" *WSP; returns its length at s, or 0 */
static size_t blob_len(const char *s, size_t len)
{
    if (len == 0 || s[0] != '[')
        return 0;
    size_t i = 1;
    while (i < len && s[i] != '[' && s[i] != ']')
        i++;
    if (i >= len || s[i] != ']')
        return 0;
    i++;
    while (i < len && is_wsp(s[i]))
        i++;
    return i;
}

/* subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"; length or 0 */
static size_t refwd_len(const char *s, size_t len)
{
    static const char *const words[] = {"fwd", "fw", "re"};
    for (size_t w = 0; w < 3; w++) {
        size_t wl = strlen(words[w]);
        if (len < wl || strncasecmp(s, words[w], wl) != 0)
            continue;
        size_t i = wl;
        while (i < len && is_wsp(s[i]))
            i++;
        i += blob_len(s + i, len - i);
        if (i < len && s[i] == ':')
            return i + 1;
    }
    return 0;
}

/* subj-leader = (*subj-blob subj-refwd) / WSP; length or 0. *refwd_r is
 * set when it was a Re:/Fwd: (not mere white space). */
static size_t leader_len(const char *s, size_t len, bool *refwd_r)
{
    *refwd_r = false;
    if (len > 0 && is_wsp(s[0])) {
        size_t i = 0;
        while (i < len && is_wsp(s[i]))
            i++;
        return i;
    }
    size_t i = 0, b;
    while ((b = blob_len(s + i, len - i)) > 0)
        i += b;
    size_t r = refwd_len(s + i, len - i);
    if (r == 0)
        return 0;
    *refwd_r = true;
    return i + r;
}

char *imap_base_subject(const char *raw, size_t raw_len, bool *is_reply_r)
{
    /* (1) decode encoded-words, then every run of white space (tabs, and
     * those inside decoded text too) becomes one space */
    char *decoded = imap_header_decode(raw, raw_len);
    size_t n = 0;
    bool space = false;
    for (size_t i = 0; decoded[i] != '\0'; i++) {
        char c = decoded[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            space = true;
            continue;
        }
        if (space && n > 0)
            decoded[n++] = ' ';
        space = false;
        decoded[n++] = c;
    }
    decoded[n] = '\0';

    const char *s = decoded;
    size_t len = n;
    bool reply = false;
    for (;;) {
        /* (2) trailing subj-trailer "(fwd)" and white space */
        for (;;) {
            while (len > 0 && is_wsp(s[len - 1]))
                len--;
            if (len >= 5 && strncasecmp(s + len - 5, "(fwd)", 5) == 0) {
                len -= 5;
                reply = true;
                continue;
            }
            break;
        }
        /* (3) + (4) until neither applies */
        bool changed;
        do {
            changed = false;
            bool refwd;
            size_t l;
            while ((l = leader_len(s, len, &refwd)) > 0) {
                s += l;
                len -= l;
                reply |= refwd;
                changed = true;
            }
            size_t b = blob_len(s, len);
            if (b > 0 && b < len) { /* keep it if it is all that is left */
                s += b;
                len -= b;
                changed = true;
            }
        } while (changed);
        /* (5) subj-fwd-hdr "[fwd:" ... subj-fwd-trl "]" */
        if (len >= 6 && strncasecmp(s, "[fwd:", 5) == 0 && s[len - 1] == ']') {
            s += 5;
            len -= 6;
            reply = true;
            continue;
        }
        break;
    }
    char *result = mx_strndup(s, len);
    free(decoded);
    if (is_reply_r != NULL)
        *is_reply_r = reply;
    return result;
}

/* --- per-message sort keys ---------------------------------------------- */

struct sort_keys {
    const struct imap_sort_msg *msg;
    int64_t sent;            /* seconds; internal date if Date: is unusable */
    char *subject;           /* folded base subject */
    char *from, *to, *cc;    /* folded addr-mailbox (local part) of the first address */
    char *display_from, *display_to;
};

static const char *header_value(const struct imap_sort_msg *msg, const char *name, size_t *len_r)
{
    if (msg->header == NULL) {
        *len_r = 0;
        return NULL;
    }
    return imap_header_get(msg->header, msg->header_len, name, len_r);
}

static InternetAddressMailbox *first_mailbox(InternetAddressList *list)
{
    if (list == NULL)
        return NULL;
    int count = internet_address_list_length(list);
    for (int i = 0; i < count; i++) {
        InternetAddress *ia = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(ia))
            return INTERNET_ADDRESS_MAILBOX(ia);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            InternetAddressMailbox *mb =
                first_mailbox(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)));
            if (mb != NULL)
                return mb;
        }
    }
    return NULL;
}

/* addr-mailbox (RFC 5256 FROM/TO/CC) or RFC 5957 display form */
static char *address_key(const struct imap_sort_msg *msg, const char *field, bool display)
{
    size_t len;
    const char *value = header_value(msg, field, &len);
    if (value == NULL)
        return mx_strdup("");
    char *text = imap_address_strip_comments(value, len);
    InternetAddressList *list = internet_address_list_parse(NULL, text);
    free(text);
    InternetAddress *first = list != NULL && internet_address_list_length(list) > 0
                                 ? internet_address_list_get_address(list, 0)
                                 : NULL;
    InternetAddressMailbox *mb = first_mailbox(list);
    char *key;
    if (first != NULL && INTERNET_ADDRESS_IS_GROUP(first)) {
        /* The first address is a group: in the ENVELOPE it is the group
         * start (NIL NIL "group name" NIL), so its addr-mailbox, the
         * RFC 5256 key, is the group name ("undisclosed-recipients:;");
         * with no display-name RFC 5957 falls back to the same. */
        const char *group = internet_address_get_name(first);
        key = imap_fold_sort(group != NULL ? group : "", group != NULL ? strlen(group) : 0);
    } else if (mb == NULL) {
        key = mx_strdup("");
    } else {
        const char *addr = internet_address_mailbox_get_addr(mb);
        const char *name = internet_address_get_name(INTERNET_ADDRESS(mb));
        if (addr == NULL)
            addr = "";
        if (display && name != NULL && name[0] != '\0') {
            key = imap_fold_sort(name, strlen(name));
        } else if (display) {
            key = imap_fold_sort(addr, strlen(addr));
        } else {
            const char *at = strrchr(addr, '@');
            key = imap_fold_sort(addr, at != NULL ? (size_t)(at - addr) : strlen(addr));
        }
    }
    if (list != NULL)
        g_object_unref(list);
    return key;
}

static int64_t sent_date(const struct imap_sort_msg *msg)
{
    size_t len;
    const char *value = header_value(msg, "Date", &len);
    int64_t days, utc;
    if (value != NULL && imap_date_parse_header(value, len, &days, &utc))
        return utc;
    return (int64_t)(msg->internaldate_ms / 1000);
}

static char *subject_key(const struct imap_sort_msg *msg, bool *reply_r)
{
    size_t len;
    const char *value = header_value(msg, "Subject", &len);
    char *base = imap_base_subject(value != NULL ? value : "", len, reply_r);
    char *folded = imap_fold_sort(base, strlen(base));
    free(base);
    return folded;
}

static void keys_free(struct sort_keys *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(keys[i].subject);
        free(keys[i].from);
        free(keys[i].to);
        free(keys[i].cc);
        free(keys[i].display_from);
        free(keys[i].display_to);
    }
    free(keys);
}

struct sort_ctx {
    const struct imap_sort_criterion *criteria;
    size_t n_criteria;
    const struct sort_keys *keys;
};

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int sort_cmp(const void *a, const void *b, void *arg)
{
    const struct sort_ctx *ctx = arg;
    const struct sort_keys *ka = &ctx->keys[*(const size_t *)a];
    const struct sort_keys *kb = &ctx->keys[*(const size_t *)b];
    for (size_t i = 0; i < ctx->n_criteria; i++) {
        int r = 0;
        switch (ctx->criteria[i].key) {
        case IMAP_SORT_ARRIVAL:
            r = cmp_u64(ka->msg->internaldate_ms, kb->msg->internaldate_ms);
            break;
        case IMAP_SORT_SIZE:
            r = cmp_u64(ka->msg->size, kb->msg->size);
            break;
        case IMAP_SORT_DATE:
            r = ka->sent < kb->sent ? -1 : ka->sent > kb->sent;
            break;
        case IMAP_SORT_SUBJECT:
            r = strcmp(ka->subject, kb->subject);
            break;
        case IMAP_SORT_FROM:
            r = strcmp(ka->from, kb->from);
            break;
        case IMAP_SORT_TO:
            r = strcmp(ka->to, kb->to);
            break;
        case IMAP_SORT_CC:
            r = strcmp(ka->cc, kb->cc);
            break;
        case IMAP_SORT_DISPLAYFROM:
            r = strcmp(ka->display_from, kb->display_from);
            break;
        case IMAP_SORT_DISPLAYTO:
            r = strcmp(ka->display_to, kb->display_to);
            break;
        }
        if (r != 0)
            return ctx->criteria[i].reverse ? -r : r;
    }
    /* RFC 5256: exact ties stay in mailbox order (never reversed) */
    return cmp_u64(ka->msg->seq, kb->msg->seq);
}

void imap_sort(const struct imap_sort_criterion *criteria, size_t n_criteria,
               const struct imap_sort_msg *msgs, size_t n_msgs, size_t *order_r)
{
    imap_charset_init();
    struct sort_keys *keys = mx_calloc(n_msgs > 0 ? n_msgs : 1, sizeof(*keys));
    for (size_t i = 0; i < n_msgs; i++) {
        keys[i].msg = &msgs[i];
        order_r[i] = i;
        for (size_t c = 0; c < n_criteria; c++) {
            struct sort_keys *k = &keys[i];
            switch (criteria[c].key) {
            case IMAP_SORT_DATE:
                k->sent = sent_date(&msgs[i]);
                break;
            case IMAP_SORT_SUBJECT:
                if (k->subject == NULL)
                    k->subject = subject_key(&msgs[i], NULL);
                break;
            case IMAP_SORT_FROM:
                if (k->from == NULL)
                    k->from = address_key(&msgs[i], "From", false);
                break;
            case IMAP_SORT_TO:
                if (k->to == NULL)
                    k->to = address_key(&msgs[i], "To", false);
                break;
            case IMAP_SORT_CC:
                if (k->cc == NULL)
                    k->cc = address_key(&msgs[i], "Cc", false);
                break;
            case IMAP_SORT_DISPLAYFROM:
                if (k->display_from == NULL)
                    k->display_from = address_key(&msgs[i], "From", true);
                break;
            case IMAP_SORT_DISPLAYTO:
                if (k->display_to == NULL)
                    k->display_to = address_key(&msgs[i], "To", true);
                break;
            case IMAP_SORT_ARRIVAL:
            case IMAP_SORT_SIZE:
                break;
            }
        }
    }
    struct sort_ctx ctx = {criteria, n_criteria, keys};
    qsort_r(order_r, n_msgs, sizeof(*order_r), sort_cmp, &ctx);
    keys_free(keys, n_msgs);
}

char *imap_sort_format(const struct imap_sort_msg *msgs, const size_t *order, size_t n_msgs,
                       bool uid)
{
    struct strbuf sb = {0};
    sb_str(&sb, "* SORT");
    for (size_t i = 0; i < n_msgs; i++) {
        sb_str(&sb, " ");
        sb_u32(&sb, uid ? msgs[order[i]].uid : msgs[order[i]].seq);
    }
    return sb.s;
}

/* --- THREAD ------------------------------------------------------------- */

bool imap_thread_parse_algorithm(const struct imap_arg *arg, enum imap_thread_algorithm *alg_r)
{
    if (atom_is(arg, "REFERENCES")) {
        *alg_r = IMAP_THREAD_REFERENCES;
        return true;
    }
    if (atom_is(arg, "ORDEREDSUBJECT")) {
        *alg_r = IMAP_THREAD_ORDEREDSUBJECT;
        return true;
    }
    return false;
}

#define NONE SIZE_MAX

/* A thread tree node: a message, or a dummy (msg == NONE) standing for a
 * referenced message that is not in the set. Children are a linked list. */
struct node {
    size_t msg;
    size_t parent, first_child, last_child, prev_sibling, next_sibling;
};

struct thread {
    struct node *nodes;
    size_t n_nodes, cap_nodes;
    const struct imap_sort_msg *msgs;
    int64_t *sent;      /* per message */
    char **subject;     /* per message, folded base subject */
    bool *reply;        /* per message: subject had Re:/Fwd: */
    size_t root;        /* the root container (a node of its own) */
};

static size_t node_new(struct thread *t, size_t msg)
{
    if (t->n_nodes == t->cap_nodes) {
        t->cap_nodes = t->cap_nodes == 0 ? 64 : t->cap_nodes * 2;
        t->nodes = mx_reallocarray(t->nodes, t->cap_nodes, sizeof(*t->nodes));
    }
    t->nodes[t->n_nodes] = (struct node){msg, NONE, NONE, NONE, NONE, NONE};
    return t->n_nodes++;
}

/* Sibling lists are doubly linked with a tail pointer: a mailbox without
 * threading headers has one root per message, and every link, unlink and
 * append must stay O(1) for THREAD to stay O(n log n). */
static void node_unlink(struct thread *t, size_t child)
{
    struct node *c = &t->nodes[child];
    if (c->parent == NONE)
        return;
    struct node *parent = &t->nodes[c->parent];
    if (c->prev_sibling != NONE)
        t->nodes[c->prev_sibling].next_sibling = c->next_sibling;
    else
        parent->first_child = c->next_sibling;
    if (c->next_sibling != NONE)
        t->nodes[c->next_sibling].prev_sibling = c->prev_sibling;
    else
        parent->last_child = c->prev_sibling;
    c->parent = c->prev_sibling = c->next_sibling = NONE;
}

/* make child a child of parent, before sibling `before` (NONE: last) */
static void node_insert(struct thread *t, size_t parent, size_t before, size_t child)
{
    node_unlink(t, child);
    struct node *c = &t->nodes[child];
    struct node *p = &t->nodes[parent];
    c->parent = parent;
    c->next_sibling = before;
    c->prev_sibling = before != NONE ? t->nodes[before].prev_sibling : p->last_child;
    if (c->prev_sibling != NONE)
        t->nodes[c->prev_sibling].next_sibling = child;
    else
        p->first_child = child;
    if (before != NONE)
        t->nodes[before].prev_sibling = child;
    else
        p->last_child = child;
}

static void node_link(struct thread *t, size_t parent, size_t child)
{
    node_insert(t, parent, NONE, child);
}

/* would making child a child of parent create a loop? */
static bool is_ancestor_or_self(const struct thread *t, size_t maybe_ancestor, size_t node)
{
    /* the common case, a fresh container, costs nothing: walking up from
     * node would make a long reply chain quadratic */
    if (t->nodes[maybe_ancestor].first_child == NONE)
        return maybe_ancestor == node;
    for (size_t n = node; n != NONE; n = t->nodes[n].parent) {
        if (n == maybe_ancestor)
            return true;
    }
    return false;
}

/* The message-ids in a References / In-Reply-To / Message-ID value: the
 * text between "<" and ">" with white space removed (lenient: clients put
 * all sorts of things there). */
static size_t parse_msgids(const char *value, size_t len, char **ids, size_t max_ids,
                           bool keep_last)
{
    size_t n = 0;
    size_t i = 0;
    while (i < len) {
        const char *lt = memchr(value + i, '<', len - i);
        if (lt == NULL)
            break;
        size_t start = (size_t)(lt - value) + 1;
        const char *gt = memchr(value + start, '>', len - start);
        if (gt == NULL)
            break;
        size_t end = (size_t)(gt - value);
        i = end + 1;
        char *id = mx_malloc(end - start + 1);
        size_t idl = 0;
        for (size_t k = start; k < end; k++) {
            char c = value[k];
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '<')
                id[idl++] = c;
        }
        id[idl] = '\0';
        if (idl == 0) {
            free(id);
            continue;
        }
        if (n == max_ids) {
            if (!keep_last) {
                free(id);
                break;
            }
            free(ids[0]);
            memmove(ids, ids + 1, (max_ids - 1) * sizeof(*ids));
            n--;
        }
        ids[n++] = id;
    }
    return n;
}

static size_t container_for(struct thread *t, GHashTable *by_id, char *id)
{
    gpointer found = g_hash_table_lookup(by_id, id);
    if (found != NULL) {
        free(id);
        return (size_t)GPOINTER_TO_SIZE(found) - 1;
    }
    size_t node = node_new(t, NONE);
    g_hash_table_insert(by_id, id, GSIZE_TO_POINTER(node + 1));
    return node;
}

/* the date a node sorts by: its own, or for a dummy its first child's */
static void node_sort_key(const struct thread *t, size_t node, int64_t *sent_r, uint32_t *seq_r)
{
    while (t->nodes[node].msg == NONE && t->nodes[node].first_child != NONE)
        node = t->nodes[node].first_child;
    if (t->nodes[node].msg == NONE) {
        *sent_r = INT64_MAX;
        *seq_r = UINT32_MAX;
        return;
    }
    *sent_r = t->sent[t->nodes[node].msg];
    *seq_r = t->msgs[t->nodes[node].msg].seq;
}

struct sibling {
    size_t node;
    int64_t sent;
    uint32_t seq;
};

static int sibling_cmp(const void *a, const void *b)
{
    const struct sibling *sa = a, *sb = b;
    if (sa->sent != sb->sent)
        return sa->sent < sb->sent ? -1 : 1;
    return sa->seq < sb->seq ? -1 : sa->seq > sb->seq;
}

/* sort the children of parent by sent date (then mailbox order) */
static void sort_children(struct thread *t, size_t parent)
{
    size_t count = 0;
    for (size_t c = t->nodes[parent].first_child; c != NONE; c = t->nodes[c].next_sibling)
        count++;
    if (count < 2)
        return;
    struct sibling *list = mx_calloc(count, sizeof(*list));
    size_t i = 0;
    for (size_t c = t->nodes[parent].first_child; c != NONE; c = t->nodes[c].next_sibling) {
        list[i].node = c;
        node_sort_key(t, c, &list[i].sent, &list[i].seq);
        i++;
    }
    qsort(list, count, sizeof(*list), sibling_cmp);
    for (i = 0; i < count; i++) {
        struct node *n = &t->nodes[list[i].node];
        n->prev_sibling = i > 0 ? list[i - 1].node : NONE;
        n->next_sibling = i + 1 < count ? list[i + 1].node : NONE;
    }
    t->nodes[parent].first_child = list[0].node;
    t->nodes[parent].last_child = list[count - 1].node;
    free(list);
}

/* Depth-first post-order over the tree without recursion: a chain of
 * replies can be as deep as the mailbox is large. visit() is called for
 * each node after all its descendants. */
static void post_order(struct thread *t, size_t top, void (*visit)(struct thread *, size_t))
{
    size_t node = top;
    /* descend to the first leaf */
    while (t->nodes[node].first_child != NONE)
        node = t->nodes[node].first_child;
    for (;;) {
        size_t next = t->nodes[node].next_sibling;
        size_t parent = t->nodes[node].parent;
        visit(t, node); /* may unlink/splice node, but not its later siblings */
        if (node == top)
            return;
        if (next != NONE) {
            node = next;
            while (t->nodes[node].first_child != NONE)
                node = t->nodes[node].first_child;
        } else {
            node = parent;
        }
    }
}

/* RFC 5256 step 3 for one node (its children are pruned already) */
static void prune_visit(struct thread *t, size_t node)
{
    if (node == t->root || t->nodes[node].msg != NONE)
        return;
    size_t parent = t->nodes[node].parent;
    size_t first = t->nodes[node].first_child;
    if (first == NONE) { /* dummy without children: drop */
        node_unlink(t, node);
        return;
    }
    bool single = t->nodes[first].next_sibling == NONE;
    if (parent == t->root && !single)
        return; /* a dummy at the top keeps several children together */
    /* splice the children in place of the dummy, in order */
    while (t->nodes[node].first_child != NONE)
        node_insert(t, parent, node, t->nodes[node].first_child);
    node_unlink(t, node);
}

static void sort_visit(struct thread *t, size_t node)
{
    sort_children(t, node);
}

/* One thread the way RFC 5256 writes it: a message followed by " child"
 * when it has one child and " (a)(b)" when several; a dummy prints nothing
 * itself. Iterative with an explicit stack (one entry per branching level):
 * hostile References can make trees as deep as the mailbox is large. */
static void format_thread(const struct thread *t, size_t top, bool uid, struct strbuf *sb)
{
    size_t *branch = NULL; /* per open "(": the child being written */
    size_t depth = 0, cap = 0;
    size_t node = top;
    for (;;) {
        /* write the chain starting at node */
        for (;;) {
            bool wrote = false;
            if (t->nodes[node].msg != NONE) {
                const struct imap_sort_msg *m = &t->msgs[t->nodes[node].msg];
                sb_u32(sb, uid ? m->uid : m->seq);
                wrote = true;
            }
            size_t first = t->nodes[node].first_child;
            if (first == NONE)
                break;
            if (wrote)
                sb_str(sb, " ");
            if (t->nodes[first].next_sibling != NONE) {
                if (depth == cap) {
                    cap = cap == 0 ? 16 : cap * 2;
                    branch = mx_reallocarray(branch, cap, sizeof(*branch));
                }
                branch[depth++] = first;
                sb_str(sb, "(");
            }
            node = first;
        }
        /* close finished children, open the next sibling */
        for (;;) {
            if (depth == 0) {
                free(branch);
                return;
            }
            sb_str(sb, ")");
            size_t next = t->nodes[branch[depth - 1]].next_sibling;
            if (next != NONE) {
                branch[depth - 1] = next;
                sb_str(sb, "(");
                node = next;
                break;
            }
            depth--;
        }
    }
}

/* RFC 5256 section 3 REFERENCES, steps 1-6 */
static void thread_references(struct thread *t, size_t n_msgs)
{
    GHashTable *by_id = g_hash_table_new_full(g_str_hash, g_str_equal, free, NULL);
    char *refs[THREAD_MAX_REFERENCES];

    /* step 1: a container per message and per referenced id */
    for (size_t m = 0; m < n_msgs; m++) {
        const struct imap_sort_msg *msg = &t->msgs[m];
        const char *value = NULL;
        size_t len = 0, n_ids;
        char *own_id[1];
        size_t self;
        if (msg->header != NULL)
            value = imap_header_get(msg->header, msg->header_len, "Message-ID", &len);
        n_ids = value != NULL ? parse_msgids(value, len, own_id, 1, false) : 0;
        if (n_ids == 1 && g_hash_table_contains(by_id, own_id[0])) {
            size_t existing = (size_t)GPOINTER_TO_SIZE(g_hash_table_lookup(by_id, own_id[0])) - 1;
            if (t->nodes[existing].msg == NONE) {
                self = existing; /* fill the dummy created by a reference */
                t->nodes[self].msg = m;
            } else {
                /* duplicate Message-ID: only the first message keeps it */
                self = node_new(t, m);
            }
            free(own_id[0]);
        } else if (n_ids == 1) {
            self = container_for(t, by_id, own_id[0]);
            t->nodes[self].msg = m;
        } else {
            self = node_new(t, m); /* no usable Message-ID: unique */
        }

        /* References, or In-Reply-To when there is none */
        size_t n_refs = 0;
        if (msg->header != NULL) {
            value = imap_header_get(msg->header, msg->header_len, "References", &len);
            if (value != NULL)
                n_refs = parse_msgids(value, len, refs, THREAD_MAX_REFERENCES, true);
            if (n_refs == 0) {
                value = imap_header_get(msg->header, msg->header_len, "In-Reply-To", &len);
                if (value != NULL)
                    n_refs = parse_msgids(value, len, refs, 1, false);
            }
        }
        /* step 1A: link the references in order, without overriding an
         * existing parent and without creating loops */
        size_t prev = NONE;
        for (size_t r = 0; r < n_refs; r++) {
            size_t node = container_for(t, by_id, refs[r]);
            if (prev != NONE && t->nodes[node].parent == NONE &&
                !is_ancestor_or_self(t, node, prev))
                node_link(t, prev, node);
            prev = node;
        }
        /* step 1B: the last reference is this message's parent; a
         * parent from another message's truncated References yields */
        if (prev != NONE && is_ancestor_or_self(t, self, prev))
            prev = NONE;
        if (prev != NONE) {
            node_link(t, prev, self);
        } else {
            node_unlink(t, self);
        }
    }
    g_hash_table_destroy(by_id);

    /* step 2: the root set */
    t->root = node_new(t, NONE);
    size_t n_nodes = t->n_nodes - 1;
    for (size_t node = 0; node < n_nodes; node++) {
        if (t->nodes[node].parent == NONE)
            node_link(t, t->root, node);
    }
    /* step 3: prune dummies */
    post_order(t, t->root, prune_visit);

    /* step 4: sort the root set (dummies by their first child) */
    for (size_t c = t->nodes[t->root].first_child; c != NONE; c = t->nodes[c].next_sibling) {
        if (t->nodes[c].msg == NONE)
            sort_children(t, c);
    }
    sort_children(t, t->root);

    /* step 5: gather the root set by base subject */
    GHashTable *by_subject = g_hash_table_new(g_str_hash, g_str_equal);
    for (size_t c = t->nodes[t->root].first_child; c != NONE; c = t->nodes[c].next_sibling) {
        size_t msg_node = t->nodes[c].msg != NONE ? c : t->nodes[c].first_child;
        const char *subject = t->subject[t->nodes[msg_node].msg];
        if (subject[0] == '\0')
            continue;
        gpointer old = g_hash_table_lookup(by_subject, subject);
        if (old == NULL) {
            g_hash_table_insert(by_subject, (gpointer)subject, GSIZE_TO_POINTER(c + 1));
            continue;
        }
        size_t other = (size_t)GPOINTER_TO_SIZE(old) - 1;
        bool this_dummy = t->nodes[c].msg == NONE;
        bool other_dummy = t->nodes[other].msg == NONE;
        if ((this_dummy && !other_dummy) ||
            (!this_dummy && !other_dummy && t->reply[t->nodes[other].msg] &&
             !t->reply[t->nodes[c].msg]))
            g_hash_table_insert(by_subject, (gpointer)subject, GSIZE_TO_POINTER(c + 1));
    }
    /* The merges below move and replace root entries, possibly ones still
     * ahead of us: walk a snapshot and skip what has left the root. */
    size_t n_roots = 0;
    for (size_t c = t->nodes[t->root].first_child; c != NONE; c = t->nodes[c].next_sibling)
        n_roots++;
    size_t *roots = mx_calloc(n_roots > 0 ? n_roots : 1, sizeof(*roots));
    n_roots = 0;
    for (size_t c = t->nodes[t->root].first_child; c != NONE; c = t->nodes[c].next_sibling)
        roots[n_roots++] = c;
    for (size_t r = 0; r < n_roots; r++) {
        size_t c = roots[r];
        if (t->nodes[c].parent != t->root)
            continue;
        size_t msg_node = t->nodes[c].msg != NONE ? c : t->nodes[c].first_child;
        const char *subject = t->subject[t->nodes[msg_node].msg];
        gpointer found = subject[0] != '\0' ? g_hash_table_lookup(by_subject, subject) : NULL;
        size_t other = found != NULL ? (size_t)GPOINTER_TO_SIZE(found) - 1 : NONE;
        if (other == NONE || other == c)
            continue;
        bool this_dummy = t->nodes[c].msg == NONE;
        bool other_dummy = t->nodes[other].msg == NONE;
        if (this_dummy && other_dummy) {
            /* both dummies: this one's children join the other's */
            while (t->nodes[c].first_child != NONE)
                node_link(t, other, t->nodes[c].first_child);
            node_unlink(t, c);
        } else if (other_dummy || (t->reply[t->nodes[c].msg] &&
                                   !t->reply[t->nodes[other].msg])) {
            /* into the dummy, or a reply under its original */
            node_link(t, other, c);
        } else {
            /* siblings under a new dummy that takes the other's place */
            size_t dummy = node_new(t, NONE);
            node_insert(t, t->root, other, dummy);
            node_link(t, dummy, other);
            node_link(t, dummy, c);
            g_hash_table_insert(by_subject, (gpointer)subject, GSIZE_TO_POINTER(dummy + 1));
        }
    }
    free(roots);
    g_hash_table_destroy(by_subject);

    /* step 6: sort every set of siblings by sent date */
    post_order(t, t->root, sort_visit);
}

/* RFC 5256 ORDEREDSUBJECT: by base subject, then sent date; one thread per
 * subject with the first message as parent of all the others */
static void thread_ordered_subject(struct thread *t, size_t n_msgs)
{
    t->root = node_new(t, NONE);
    if (n_msgs == 0)
        return;
    size_t *order = mx_calloc(n_msgs, sizeof(*order));
    struct imap_sort_criterion criteria[2] = {{IMAP_SORT_SUBJECT, false}, {IMAP_SORT_DATE, false}};
    imap_sort(criteria, 2, t->msgs, n_msgs, order);
    size_t parent = NONE;
    for (size_t i = 0; i < n_msgs; i++) {
        size_t m = order[i];
        size_t node = node_new(t, m);
        if (parent != NONE && strcmp(t->subject[t->nodes[parent].msg], t->subject[m]) == 0) {
            node_link(t, parent, node);
        } else {
            node_link(t, t->root, node);
            parent = node;
        }
    }
    free(order);
    /* threads by the sent date of their first message; the children are
     * already in date order */
    sort_children(t, t->root);
}

char *imap_thread(enum imap_thread_algorithm algorithm, const struct imap_sort_msg *msgs,
                  size_t n_msgs, bool uid)
{
    imap_charset_init();
    struct thread t = {.msgs = msgs};
    size_t alloc = n_msgs > 0 ? n_msgs : 1;
    t.sent = mx_calloc(alloc, sizeof(*t.sent));
    t.subject = mx_calloc(alloc, sizeof(*t.subject));
    t.reply = mx_calloc(alloc, sizeof(*t.reply));
    for (size_t m = 0; m < n_msgs; m++) {
        t.sent[m] = sent_date(&msgs[m]);
        t.subject[m] = subject_key(&msgs[m], &t.reply[m]);
    }
    if (algorithm == IMAP_THREAD_REFERENCES)
        thread_references(&t, n_msgs);
    else
        thread_ordered_subject(&t, n_msgs);

    struct strbuf sb = {0};
    sb_str(&sb, "* THREAD");
    bool first = true;
    for (size_t c = t.nodes[t.root].first_child; c != NONE; c = t.nodes[c].next_sibling) {
        sb_str(&sb, first ? " (" : "(");
        first = false;
        format_thread(&t, c, uid, &sb);
        sb_str(&sb, ")");
    }
    for (size_t m = 0; m < n_msgs; m++)
        free(t.subject[m]);
    free(t.subject);
    free(t.sent);
    free(t.reply);
    free(t.nodes);
    return sb.s;
}
