/* mx_base64 - the RFC 4648 base64 alphabet, shared by every decoder of the
 * tree: SASL responses (strict, mx_auth / smtp_cmd) and MIME bodies
 * (lenient, RFC 2045 6.8: mx-imapd's BINARY and SEARCH). */
#ifndef MX_BASE64_H
#define MX_BASE64_H

/* mx_base64_value - the 6-bit value of c, or -1 if c is not in the
 * alphabet ('=' included: padding is the caller's business). */
static inline int mx_base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

#endif
