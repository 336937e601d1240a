/* pymem.c - --trace-python-allocators: every PyMem_RawMalloc, PyMem_Malloc
 * and PyObject_Malloc (and their calloc, realloc and free) is recorded, with
 * its domain, through PyMem_SetAllocator.
 *
 * The wrappers are installed from libmemprof.so's constructor, before the
 * interpreter allocates anything, so pymalloc's arenas are only ever
 * obtained from inside a traced call. What a traced call asks of malloc or
 * mmap underneath (an arena, a block too big for pymalloc) runs under
 * MP_GUARD_INNER and is not recorded again: an object is counted once, as
 * what Python asked for. A domain replaced later (PYTHONMALLOC in the
 * environment makes CPython install its own during start-up) is wrapped
 * again when the script starts (mp_pymem_install is called once more).
 */
#define _GNU_SOURCE
#include <Python.h>
#include <dlfcn.h>

#include "memprof/format.h"
#include "recorder.h"

typedef struct {
    PyMemAllocatorEx orig;
    unsigned alloc_kind, free_kind;
    int gil; /* MEM and OBJ: called with the GIL held */
} domain_t;

static inline void record_alloc(const domain_t *d, const void *p, size_t n)
{
    if (d->gil)
        mp_rec_pymem_alloc(d->alloc_kind, p, n);
    else
        mp_rec_alloc(d->alloc_kind, p, n);
}

static domain_t domains[3];
static void (*get_allocator)(PyMemAllocatorDomain, PyMemAllocatorEx *);
static void (*set_allocator)(PyMemAllocatorDomain, PyMemAllocatorEx *);

/* Not recording, or already inside the recorder or a traced call. */
static inline int pass_through(void)
{
    return mp_guard || !atomic_load_explicit(&mp_active, memory_order_relaxed);
}

static void *pm_malloc(void *ctx, size_t n)
{
    domain_t *d = ctx;
    if (pass_through())
        return d->orig.malloc(d->orig.ctx, n);
    mp_guard = MP_GUARD_INNER;
    void *p = d->orig.malloc(d->orig.ctx, n);
    mp_guard = 0;
    if (p)
        record_alloc(d, p, n);
    return p;
}

static void *pm_calloc(void *ctx, size_t nelem, size_t elsize)
{
    domain_t *d = ctx;
    if (pass_through())
        return d->orig.calloc(d->orig.ctx, nelem, elsize);
    mp_guard = MP_GUARD_INNER;
    void *p = d->orig.calloc(d->orig.ctx, nelem, elsize);
    mp_guard = 0;
    if (p)
        record_alloc(d, p, nelem * elsize); /* the allocator checked the product */
    return p;
}

static void *pm_realloc(void *ctx, void *p, size_t n)
{
    domain_t *d = ctx;
    if (pass_through())
        return d->orig.realloc(d->orig.ctx, p, n);
    if (p)
        mp_rec_free(MEMPROF_D_REALLOC, p);
    mp_guard = MP_GUARD_INNER;
    void *q = d->orig.realloc(d->orig.ctx, p, n);
    mp_guard = 0;
    if (q)
        record_alloc(d, q, n);
    else if (p)
        mp_rec_restore(p);
    return q;
}

static void pm_free(void *ctx, void *p)
{
    domain_t *d = ctx;
    if (!p || pass_through()) {
        d->orig.free(d->orig.ctx, p);
        return;
    }
    mp_rec_pymem_free(d->free_kind, p);
    mp_guard = MP_GUARD_INNER;
    d->orig.free(d->orig.ctx, p);
    mp_guard = 0;
}

int mp_pymem_install(void)
{
    if (!get_allocator) {
        *(void **)&get_allocator = dlsym(RTLD_DEFAULT, "PyMem_GetAllocator");
        *(void **)&set_allocator = dlsym(RTLD_DEFAULT, "PyMem_SetAllocator");
        if (!get_allocator || !set_allocator)
            return -1;
    }
    static const PyMemAllocatorDomain dom[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    static const unsigned kinds[3][2] = {{MEMPROF_A_PYMEM_RAW, MEMPROF_D_PYMEM_RAW},
                                         {MEMPROF_A_PYMEM_MEM, MEMPROF_D_PYMEM_MEM},
                                         {MEMPROF_A_PYMEM_OBJ, MEMPROF_D_PYMEM_OBJ}};
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx cur;
        get_allocator(dom[i], &cur);
        if (cur.malloc == pm_malloc)
            continue; /* still ours */
        domains[i].orig = cur;
        domains[i].alloc_kind = kinds[i][0];
        domains[i].free_kind = kinds[i][1];
        domains[i].gil = dom[i] != PYMEM_DOMAIN_RAW;
        PyMemAllocatorEx mine = {&domains[i], pm_malloc, pm_calloc, pm_realloc, pm_free};
        set_allocator(dom[i], &mine);
    }
    return 0;
}

/* A Tracker's end: the domains still wrapped get back what they had. The
 * blocks made meanwhile are the same allocator's, freed by it as usual. */
void mp_pymem_uninstall(void)
{
    static const PyMemAllocatorDomain dom[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    if (!get_allocator || !set_allocator)
        return;
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx cur;
        get_allocator(dom[i], &cur);
        if (cur.malloc == pm_malloc && cur.ctx == &domains[i])
            set_allocator(dom[i], &domains[i].orig);
    }
}
