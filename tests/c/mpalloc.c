/* mpalloc.c - libmpalloc.so, a shared library that a test script opens
 * with ctypes.CDLL after the program has started. mp_test_alloc(n) is one
 * malloc(n) made in its own frame: the byte written after the call keeps
 * the call from becoming a tail call, so mp_test_alloc is on the stack when
 * malloc runs. mp_test_free(p) gives the block back. */
#include <stddef.h>
#include <stdlib.h>

void *mp_test_alloc(size_t n);
void mp_test_free(void *p);

void *mp_test_alloc(size_t n)
{
    char *p = malloc(n); /* MPALLOC-LINE */
    if (p)
        p[0] = 1;
    return p;
}

void mp_test_free(void *p)
{
    free(p);
}
