/* got.c - hooks for a library loaded late (a Tracker in a process not
 * started under LD_PRELOAD). Its malloc does not interpose then: every
 * object already bound its calls to libc's. So each loaded object's
 * relocations are read (DT_JMPREL: the PLT's JUMP_SLOTs; DT_RELA: the
 * GLOB_DATs of -fno-plt code and of functions taken by address), and the
 * GOT entries that name a hooked function are pointed at the hook; an
 * object's entries in RELRO are made writable for the stores (one
 * mprotect for the object's range of them) and read-only again. Each entry
 * changed is remembered with what it held, and put back by mp_got_unpatch
 * if its object is still loaded. Stores are single aligned words: a thread
 * calling through an entry meanwhile sees the old or the new function, both
 * of which work.
 *
 * The entries found in an object are kept while no object has been
 * unloaded (glibc's dlpi_subs counter): a process that starts and stops
 * many captures (a Tracker per test) reads each object's relocations once.
 *
 * Not patched: this library (its calls are the real ones), the dynamic
 * linker (its own allocator), and the vDSO. Serialized by `patch_lock`; the
 * lists grow with mmap (no malloc here). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "recorder.h"

typedef struct {
    uintptr_t relro, relro_end; /* the object's RELRO range (0, 0: none) */
} obj_t;

/* An entry naming a hooked function, found in an object's relocations. */
typedef struct {
    void **slot;
    void *hook;
} entry_t;

/* The objects read so far, each with its run of entries in `ents`. */
typedef struct {
    uintptr_t base;
    obj_t o;
    uint32_t first, n;
} known_t;

/* An entry pointed at its hook, and what it held. */
typedef struct {
    void **slot;
    void *orig, *hook;
    uintptr_t base; /* its object's */
    obj_t o;
} patched_t;

static pthread_mutex_t patch_lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *ents;
static known_t *known;
static uint32_t nents, ents_cap, nknown, known_cap;
static unsigned long long known_subs; /* dlpi_subs when `known` was right */
static patched_t *slots;
static uint32_t nslots, slots_cap;
static unsigned long long patched_subs; /* dlpi_subs when the first entry was patched */
static int patching;                    /* between mp_got_patch and mp_got_unpatch */
static uintptr_t self_base;

static const mp_hook_t *hook_named(const char *name)
{
    for (const mp_hook_t *h = mp_hooks; h->name; h++)
        if (name[0] == h->name[0] && strcmp(name, h->name) == 0)
            return h;
    return NULL;
}

/* A d_ptr the dynamic linker relocated (glibc does on x86-64), or not yet. */
static uintptr_t dyn_addr(ElfW(Addr) base, ElfW(Addr) v) { return v < base ? base + v : v; }

static int in_relro(void **slot, const obj_t *o)
{
    return (uintptr_t)slot >= o->relro && (uintptr_t)slot < o->relro_end;
}

/* Points p[i].slot (i < n, all in one object) at its hook, or back at
 * what it held: the pages of those in RELRO made writable once, around all
 * the stores. Skips (restoring) an entry that no longer holds our hook. */
static int store_all(const patched_t *p, uint32_t n, int restore)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), lo = UINTPTR_MAX, hi = 0;
    for (uint32_t i = 0; i < n; i++)
        if (in_relro(p[i].slot, &p[i].o)) {
            lo = (uintptr_t)p[i].slot < lo ? (uintptr_t)p[i].slot : lo;
            hi = (uintptr_t)p[i].slot > hi ? (uintptr_t)p[i].slot : hi;
        }
    int ro = hi != 0;
    if (ro) {
        lo &= ~(pg - 1);
        hi = (hi + sizeof(void *) + pg - 1) & ~(pg - 1);
        if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE))
            return errno;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!restore)
            __atomic_store_n(p[i].slot, p[i].hook, __ATOMIC_RELEASE);
        else if (__atomic_load_n(p[i].slot, __ATOMIC_ACQUIRE) == p[i].hook) /* nobody patched over us */
            __atomic_store_n(p[i].slot, p[i].orig, __ATOMIC_RELEASE);
    }
    if (ro)
        mprotect((void *)lo, hi - lo, PROT_READ);
    return 0;
}

/* Appends the object's entries that name a hooked function to `ents`. */
static int read_relocs(ElfW(Addr) base, const ElfW(Rela) *r, size_t n, const ElfW(Sym) *symtab,
                       const char *strtab)
{
    for (size_t i = 0; i < n; i++) {
        unsigned type = ELF64_R_TYPE(r[i].r_info);
        if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT)
            continue;
        const ElfW(Sym) *sym = &symtab[ELF64_R_SYM(r[i].r_info)];
        if (ELF64_ST_TYPE(sym->st_info) != STT_FUNC && ELF64_ST_TYPE(sym->st_info) != STT_GNU_IFUNC &&
            ELF64_ST_TYPE(sym->st_info) != STT_NOTYPE)
            continue;
        const mp_hook_t *h = hook_named(strtab + sym->st_name);
        if (!h)
            continue;
        if (mp_mem_grow((void **)&ents, &ents_cap, nents + 1, sizeof *ents))
            return ENOMEM;
        ents[nents++] = (entry_t){(void **)(base + r[i].r_offset), h->hook};
    }
    return 0;
}

/* The object's entry in `known`, reading its relocations the first time. */
static const known_t *know(struct dl_phdr_info *info, int *err)
{
    for (uint32_t i = 0; i < nknown; i++)
        if (known[i].base == info->dlpi_addr)
            return &known[i];
    if (mp_mem_grow((void **)&known, &known_cap, nknown + 1, sizeof *known)) {
        *err = ENOMEM;
        return NULL;
    }
    known_t k = {info->dlpi_addr, {0, 0}, nents, 0};
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
        else if (ph->p_type == PT_GNU_RELRO) {
            k.o.relro = info->dlpi_addr + ph->p_vaddr;
            k.o.relro_end = k.o.relro + ph->p_memsz;
        }
    }
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t jmprel_sz = 0, rela_sz = 0;
    int pltrel_rela = 1;
    for (const ElfW(Dyn) *d = dyn; d && d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)dyn_addr(info->dlpi_addr, d->d_un.d_ptr); break;
        case DT_STRTAB: strtab = (const char *)dyn_addr(info->dlpi_addr, d->d_un.d_ptr); break;
        case DT_JMPREL: jmprel = (const ElfW(Rela) *)dyn_addr(info->dlpi_addr, d->d_un.d_ptr); break;
        case DT_PLTRELSZ: jmprel_sz = d->d_un.d_val; break;
        case DT_PLTREL: pltrel_rela = d->d_un.d_val == DT_RELA; break;
        case DT_RELA: rela = (const ElfW(Rela) *)dyn_addr(info->dlpi_addr, d->d_un.d_ptr); break;
        case DT_RELASZ: rela_sz = d->d_un.d_val; break;
        }
    }
    if (symtab && strtab) {
        if (jmprel && pltrel_rela)
            *err = read_relocs(info->dlpi_addr, jmprel, jmprel_sz / sizeof *jmprel, symtab, strtab);
        if (rela && !*err)
            *err = read_relocs(info->dlpi_addr, rela, rela_sz / sizeof *rela, symtab, strtab);
    }
    if (*err) {
        nents = k.first;
        return NULL;
    }
    k.n = nents - k.first;
    known[nknown++] = k;
    return &known[nknown - 1];
}

static int patch_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    int *err = arg;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs &&
        info->dlpi_subs != known_subs) { /* an object went away: its address may hold another now */
        nknown = nents = 0;
        known_subs = info->dlpi_subs;
    }
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (info->dlpi_addr == self_base || strstr(name, "ld-linux") || strstr(name, "linux-vdso") ||
        strstr(name, "linux-gate"))
        return 0;
    int e = 0; /* this object's: one that fails does not keep the others from being patched */
    const known_t *k = know(info, &e);
    if (k) {
        if (nslots == 0)
            patched_subs = known_subs;
        uint32_t first = nslots;
        for (uint32_t i = k->first; i < k->first + k->n && !e; i++) {
            void *cur = __atomic_load_n(ents[i].slot, __ATOMIC_ACQUIRE);
            if (cur == ents[i].hook)
                continue; /* patched already */
            if (mp_mem_grow((void **)&slots, &slots_cap, nslots + 1, sizeof *slots))
                e = ENOMEM;
            else
                slots[nslots++] = (patched_t){ents[i].slot, cur, ents[i].hook, k->base, k->o};
        }
        if (nslots > first && (e || (e = store_all(slots + first, nslots - first, 0))))
            nslots = first; /* nothing of this object written */
    }
    if (e && !*err)
        *err = e;
    return 0;
}

static int patch_all_locked(void)
{
    if (!self_base) {
        Dl_info di;
        if (!dladdr((void *)patch_object, &di))
            return ENOENT;
        self_base = (uintptr_t)di.dli_fbase;
    }
    int err = 0;
    dl_iterate_phdr(patch_object, &err);
    return err;
}

int mp_got_patch(void)
{
    pthread_mutex_lock(&patch_lock);
    patching = 1;
    int err = patch_all_locked();
    pthread_mutex_unlock(&patch_lock);
    if (err)
        mp_got_unpatch();
    return err;
}

void mp_got_refresh(void)
{
    pthread_mutex_lock(&patch_lock);
    if (patching)
        (void)patch_all_locked();
    pthread_mutex_unlock(&patch_lock);
}

/* glibc's count of objects unloaded so far. */
static int read_subs(struct dl_phdr_info *info, size_t size, void *arg)
{
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
        *(unsigned long long *)arg = info->dlpi_subs;
    return 1;
}

/* Whether the object of a patched entry is still loaded: one at its base
 * with its RELRO range (another object loaded since at the same address
 * would differ, or hold no hook in that slot). */
static int still_loaded(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const patched_t *p = arg;
    if (info->dlpi_addr != p->base)
        return 0;
    obj_t o = {0, 0};
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO) {
            o.relro = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
            o.relro_end = o.relro + info->dlpi_phdr[i].p_memsz;
        }
    return o.relro == p->o.relro && o.relro_end == p->o.relro_end;
}

/* Every entry back as it was, if its object is still loaded (dlclose may
 * have unmapped it) and it still holds our hook (nobody patched over us). */
void mp_got_unpatch(void)
{
    pthread_mutex_lock(&patch_lock);
    patching = 0;
    unsigned long long subs = patched_subs;
    dl_iterate_phdr(read_subs, &subs);
    /* newest first: an object loaded since at the base of an unloaded one is
     * put back before the old entries are looked at (they then hold no hook) */
    for (uint32_t end = nslots, n; end > 0; end -= n) {
        for (n = 1; n < end && slots[end - n - 1].base == slots[end - 1].base; n++)
            ;
        const patched_t *g = slots + end - n;
        if (subs == patched_subs || dl_iterate_phdr(still_loaded, (void *)g))
            (void)store_all(g, n, 1);
    }
    nslots = 0;
    pthread_mutex_unlock(&patch_lock);
}
