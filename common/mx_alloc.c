/* mx_alloc - allocation wrappers that abort on exhaustion. */
#include "mx_alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* mx_alloc_die - last words on allocation failure; avoids stdio buffering
 * (which itself may need memory) by writing straight to fd 2. */
static void mx_alloc_die(size_t size)
{
    char line[96];
    int n = snprintf(line, sizeof line,
                     "level=crit event=alloc.fail bytes=%zu reason=\"out of memory\"\n",
                     size);
    if (n > 0) {
        ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
        (void)ignored;
    }
    abort();
}

void *mx_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        mx_alloc_die(size);
    return p;
}

void *mx_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        mx_alloc_die(count * size);
    return p;
}

void *mx_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        mx_alloc_die(size);
    return p;
}

void *mx_reallocarray(void *ptr, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        mx_alloc_die(SIZE_MAX);
    return mx_realloc(ptr, count * size);
}

char *mx_strdup(const char *s)
{
    return mx_memdup(s, strlen(s) + 1);
}

char *mx_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = mx_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void *mx_memdup(const void *p, size_t n)
{
    void *copy = mx_malloc(n);
    if (n)
        memcpy(copy, p, n);
    return copy;
}

char *mx_vasprintf(const char *fmt, va_list ap)
{
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        mx_alloc_die(strlen(fmt));
    return out;
}

char *mx_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = mx_vasprintf(fmt, ap);
    va_end(ap);
    return out;
}
