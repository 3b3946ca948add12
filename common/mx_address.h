/* mx_address - RFC 5321 envelope path / mailbox parsing (mail-aware part of
 * libmxcommon; mx-inbound parses MAIL FROM / RCPT TO with it, mx-delivery
 * reuses it for addresses it expands).
 *
 * Pure code: no I/O, no allocation, no locale. The result lives in fixed
 * buffers inside struct mx_address, so a caller can keep it on the stack.
 *
 * Grammar (RFC 5321 4.1.2, RFC 6531 3.3 for UTF-8):
 *   Path          = "<" [ A-d-l ":" ] Mailbox ">"     ; source route ignored
 *   Mailbox       = Local-part "@" ( Domain / address-literal )
 *   Local-part    = Dot-string / Quoted-string
 *   Domain        = LDH labels, each <= 63 octets, total <= 255, no trailing dot
 *   address-literal = "[" IPv4 "]" / "[IPv6:" IPv6 "]"   (checked by inet_pton)
 *
 * Stricter than the grammar, on purpose:
 *   - an empty local part (`""@d`) is refused: nothing can be delivered to
 *     it and it only ever shows up in probes;
 *   - a trailing dot in a domain (`user@example.test.`) is refused;
 *   - IPv4 literals with leading zeros (`[010.0.0.1]`) are refused
 *     (inet_pton does): octal/decimal ambiguity is a classic filter bypass;
 *   - general address literals (`[tag:...]`) other than IPv6 are refused;
 *   - any control character (C0, DEL, and with SMTPUTF8 also C1), NUL, CR
 *     and LF anywhere in the path is refused, even inside quotes (the
 *     grammar does not allow them either, but this is checked first so the
 *     error names the real problem).
 *
 * Limits (RFC 5321 4.5.3.1) are octets of the text as sent: local part 64
 * (including quotes and backslashes of a quoted string), domain 255, path
 * 256 including the angle brackets and any source route. UTF-8 does not
 * change the limits (RFC 6531 3.3 keeps them in octets). A domain of 255
 * octets can therefore only be seen through mx_address_check_domain(): in
 * a path it always exceeds the 256-octet path limit.
 *
 * RELAY POLICY (mx-inbound MTA instance): after parsing a recipient, the
 * caller MUST call mx_address_classify() and refuse every result other
 * than MX_ADDRESS_PLAIN with a `550 5.7.1 Relaying denied`-class reply,
 * even when the domain is one of ours: `user%other@ours`, `other!user@ours`,
 * `"user@other"@ours` and source-routed paths are all ways of asking us to
 * relay, and a later hop (or an LDAP alias) might honour them. Only then is
 * addr.domain compared with the local domains (mx_address_domain_equal);
 * an address literal (`user@[127.0.0.1]`) is local only if the operator
 * listed that literal. `user@other@ours` never gets that far: it is a
 * syntax error (MX_ADDRESS_ERR_TWO_AT). */
#ifndef MX_ADDRESS_H
#define MX_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#define MX_ADDRESS_LOCAL_MAX   64   /* octets, as sent */
#define MX_ADDRESS_DOMAIN_MAX  255  /* octets */
#define MX_ADDRESS_LABEL_MAX   63   /* octets per label */
#define MX_ADDRESS_PATH_MAX    256  /* octets incl. "<" ">" and source route */

/* Flags for mx_address_parse_path(). */
enum mx_address_flag {
    /* `<>` accepted (is_null). Only for a reverse path (MAIL FROM). */
    MX_ADDRESS_ALLOW_NULL        = 1u << 0,
    /* UTF-8 in local part and domain (RFC 6531, SMTPUTF8 transaction);
     * validated strictly: no overlongs, surrogates, > U+10FFFF, C1 controls. */
    MX_ADDRESS_ALLOW_UTF8        = 1u << 1,
    /* `<Postmaster>` (any case) without a domain (RFC 5321 4.1.1.3, RCPT). */
    MX_ADDRESS_ALLOW_POSTMASTER  = 1u << 2,
    /* A bare `user@domain` without angle brackets (broken clients send
     * `MAIL FROM:user@d`). No source route and no null path in that form. */
    MX_ADDRESS_ALLOW_NO_BRACKETS = 1u << 3,
};

/* Why a parse failed: X(NAME, "text"). The text is what error_r returns;
 * smtp_cmd.c builds its reply texts from the same list. */
#define MX_ADDRESS_ERROR_LIST(X)                                               \
    X(EMPTY,            "empty address")                                       \
    X(CONTROL,          "control character in address")                        \
    X(NEED_UTF8,        "non-ASCII address without SMTPUTF8")                  \
    X(BAD_UTF8,         "invalid UTF-8 in address")                            \
    X(BRACKETS,         "address must be enclosed in <>")                      \
    X(TRAILING,         "characters after the closing >")                      \
    X(NULL_PATH,        "null path <> not allowed here")                       \
    X(ROUTE,            "invalid source route")                                \
    X(LOCAL_SYNTAX,     "invalid local part")                                  \
    X(QUOTE,            "invalid quoted local part")                           \
    X(LOCAL_TOO_LONG,   "local part longer than 64 octets")                    \
    X(NO_DOMAIN,        "missing @domain")                                     \
    X(TWO_AT,           "more than one unquoted @")                            \
    X(DOMAIN_SYNTAX,    "invalid domain")                                      \
    X(TRAILING_DOT,     "trailing dot in domain")                              \
    X(LABEL_TOO_LONG,   "domain label longer than 63 octets")                  \
    X(DOMAIN_TOO_LONG,  "domain longer than 255 octets")                       \
    X(LITERAL,          "invalid address literal")                             \
    X(PATH_TOO_LONG,    "path longer than 256 octets")

enum mx_address_error {
    MX_ADDRESS_OK = 0,
#define MX_ADDRESS_ERR_ENUM_(name, text) MX_ADDRESS_ERR_##name,
    MX_ADDRESS_ERROR_LIST(MX_ADDRESS_ERR_ENUM_)
#undef MX_ADDRESS_ERR_ENUM_
    MX_ADDRESS_ERR_COUNT_
};

struct mx_address {
    /* Decoded local part: quotes removed, quoted-pairs resolved, case
     * preserved. Never contains NUL or control characters. */
    char local[65 * 4];
    /* Canonical form of the local part (RFC 5321 4.1.2: quote only when a
     * dot-string cannot express it; inside quotes only `"` and `\` are
     * escaped). Never longer than the local part as sent. */
    char local_canon[65 * 4];
    /* Domain, ASCII letters lower-cased (UTF-8 octets untouched). A literal
     * is kept with its brackets in inet_ntop form: `[192.0.2.1]`,
     * `[IPv6:2001:db8::1]`. Empty for <> and <Postmaster>. */
    char domain[MX_ADDRESS_DOMAIN_MAX + 1];
    /* local_canon "@" domain; just local_canon for <Postmaster>; "" for <>. */
    char addr[65 * 4 + 1 + MX_ADDRESS_DOMAIN_MAX + 1];

    bool is_null;           /* <> */
    bool is_postmaster;     /* <Postmaster> without a domain */
    bool had_source_route;  /* <@a,@b:user@d>: the route was dropped */
    bool local_quoted;      /* local part was sent as a quoted string */
    bool domain_literal;    /* [IPv4] or [IPv6:...] */
    bool utf8;              /* some octet >= 0x80 in local or domain */

    /* Set on failure as well as success (MX_ADDRESS_OK), so callers can
     * map errors to reply codes without comparing strings. */
    enum mx_address_error error;
};

/* Recipient classes; see RELAY POLICY above. */
enum mx_address_route {
    MX_ADDRESS_PLAIN = 0,
    MX_ADDRESS_SOURCE_ROUTED,  /* <@hop:user@d> */
    MX_ADDRESS_QUOTED_AT,      /* "user@other"@d */
    MX_ADDRESS_PERCENT_HACK,   /* user%other@d */
    MX_ADDRESS_BANG_PATH,      /* other!user@d */
};

/* mx_address_parse_path - parse text[0..len) (need not be NUL-terminated,
 * may contain NULs) as a path including its angle brackets. Returns 0 and
 * fills *addr_r, or -1 with addr_r->error set and *error_r a static string
 * (error_r may be NULL). *addr_r is fully overwritten either way. */
int mx_address_parse_path(const char *text, size_t len, unsigned flags,
                          struct mx_address *addr_r, const char **error_r);

/* mx_address_check_domain - is text[0..len) a domain name (not a literal)
 * acceptable in an address? allow_utf8 permits UTF-8 labels. Returns 0 or
 * -1 with *error_r (static). */
int mx_address_check_domain(const char *text, size_t len, bool allow_utf8,
                            const char **error_r);

/* mx_address_utf8_valid - strict UTF-8 (no overlongs, surrogates, values
 * above U+10FFFF, truncated sequences); C0/C1 controls are NOT refused here. */
bool mx_address_utf8_valid(const char *text, size_t len);

/* mx_address_classify - relay-hack class of a parsed address. When several
 * apply the first of SOURCE_ROUTED, QUOTED_AT, PERCENT_HACK, BANG_PATH
 * wins. <> and <Postmaster> are PLAIN. */
enum mx_address_route mx_address_classify(const struct mx_address *addr);

/* mx_address_route_name - "plain", "source-routed", ... for logs. */
const char *mx_address_route_name(enum mx_address_route route);

/* mx_address_error_text - the static text of an error code. */
const char *mx_address_error_text(enum mx_address_error error);

/* mx_address_domain_equal - ASCII case-insensitive equality (no locale;
 * UTF-8 octets compared exactly). */
bool mx_address_domain_equal(const char *a, const char *b);

#endif
