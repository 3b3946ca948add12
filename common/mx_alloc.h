/* mx_alloc - allocation wrappers that never return NULL.
 *
 * Running out of memory in a mail daemon is not something a caller can
 * recover from sensibly at every call site, so these log and abort in one
 * place (STYLE.md rule 8). Everything else in the tree uses them. */
#ifndef MX_ALLOC_H
#define MX_ALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *mx_malloc(size_t size);
void *mx_calloc(size_t count, size_t size);
void *mx_realloc(void *ptr, size_t size);
/* mx_reallocarray - realloc of count*size with overflow check (fatal). */
void *mx_reallocarray(void *ptr, size_t count, size_t size);
char *mx_strdup(const char *s);
char *mx_strndup(const char *s, size_t n);
void *mx_memdup(const void *p, size_t n);
/* mx_asprintf - printf into a fresh heap string; the caller frees it. */
char *mx_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *mx_vasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* mx_free_ptr - free *ptr and set it to NULL (destructors take **). */
#define mx_free_ptr(pp) do { free(*(pp)); *(pp) = NULL; } while (0)

#endif
