/* smtp_reply - the reply a parser hands back to the session for a refusal.
 *
 * Shared by the pure parsing modules of mx-inbound (smtp_cmd, smtp_data)
 * so the session formats every refusal the same way:
 *   "<code> <enhanced> <text>\r\n", e.g. "550 5.6.0 Message contains ...".
 * All three members point to static strings; nothing to free. */
#ifndef SMTP_REPLY_H
#define SMTP_REPLY_H

struct smtp_reply_err {
    int code;             /* RFC 5321 reply code, e.g. 550 */
    const char *enhanced; /* RFC 3463 enhanced status code, e.g. "5.6.0" */
    const char *text;     /* human-readable text, no CR/LF */
};

#endif
