/* got.c - hooks for a library loaded late (a Tracker in a process not
 * started under LD_PRELOAD). Its malloc does not interpose then: every
 * object already bound its calls to libc's. So each loaded object's
 * relocations are read (DT_JMPREL: the PLT's JUMP_SLOTs; DT_RELA: the
 * GLOB_DATs of -fno-plt code and of functions taken by address), and the
 * GOT entries that name a hooked function are pointed at the hook; an
 * entry in RELRO is made writable for the store and read-only again. Each
 * entry changed is remembered with what it held, and put back by
 * mp_got_unpatch if its object is still loaded. Stores are single aligned
 * words: a thread calling through an entry meanwhile sees the old or the
 * new function, both of which work.
 *
 * Not patched: this library (its calls are the real ones), the dynamic
 * linker (its own allocator), and the vDSO. Serialized by `patch_lock`; the
 * list of entries grows with mmap (no malloc here). */
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
    void **slot;
    void *orig;
} patched_t;

static pthread_mutex_t patch_lock = PTHREAD_MUTEX_INITIALIZER;
static patched_t *slots;
static uint32_t nslots, slots_cap;
static int patching; /* between mp_got_patch and mp_got_unpatch */
static uintptr_t self_base;

static const mp_hook_t *hook_named(const char *name)
{
    for (const mp_hook_t *h = mp_hooks; h->name; h++)
        if (name[0] == h->name[0] && strcmp(name, h->name) == 0)
            return h;
    return NULL;
}

typedef struct {
    uintptr_t relro, relro_end; /* the object's RELRO range (0, 0: none) */
    int err;
} obj_t;

/* A d_ptr the dynamic linker relocated (glibc does on x86-64), or not yet. */
static uintptr_t dyn_addr(ElfW(Addr) base, ElfW(Addr) v) { return v < base ? base + v : v; }

static int store(void **slot, void *value, const obj_t *o)
{
    uintptr_t page = (uintptr_t)slot & ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
    int ro = (uintptr_t)slot >= o->relro && (uintptr_t)slot < o->relro_end;
    if (ro && mprotect((void *)page, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE))
        return errno;
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (ro)
        mprotect((void *)page, (size_t)sysconf(_SC_PAGESIZE), PROT_READ);
    return 0;
}

static void patch_relocs(ElfW(Addr) base, const ElfW(Rela) *r, size_t n, const ElfW(Sym) *symtab,
                         const char *strtab, obj_t *o)
{
    for (size_t i = 0; i < n && !o->err; i++) {
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
        void **slot = (void **)(base + r[i].r_offset);
        void *cur = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
        if (cur == h->hook)
            continue; /* patched already */
        if (mp_mem_grow((void **)&slots, &slots_cap, nslots + 1, sizeof *slots)) {
            o->err = ENOMEM;
            return;
        }
        if ((o->err = store(slot, h->hook, o)) == 0)
            slots[nslots++] = (patched_t){slot, cur};
    }
}

static int patch_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    int *err = arg;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (info->dlpi_addr == self_base || strstr(name, "ld-linux") || strstr(name, "linux-vdso") ||
        strstr(name, "linux-gate"))
        return 0;
    const ElfW(Dyn) *dyn = NULL;
    obj_t o = {0, 0, 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
        else if (ph->p_type == PT_GNU_RELRO) {
            o.relro = info->dlpi_addr + ph->p_vaddr;
            o.relro_end = o.relro + ph->p_memsz;
        }
    }
    if (!dyn)
        return 0;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t jmprel_sz = 0, rela_sz = 0;
    int pltrel_rela = 1;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
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
    if (!symtab || !strtab)
        return 0;
    if (jmprel && pltrel_rela)
        patch_relocs(info->dlpi_addr, jmprel, jmprel_sz / sizeof *jmprel, symtab, strtab, &o);
    if (rela)
        patch_relocs(info->dlpi_addr, rela, rela_sz / sizeof *rela, symtab, strtab, &o);
    if (o.err && !*err)
        *err = o.err;
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

/* The object (still loaded) holding `addr`, and its RELRO range. */
typedef struct {
    uintptr_t addr;
    int found;
    obj_t o;
} owner_t;

static int find_owner(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    owner_t *w = arg;
    obj_t o = {0, 0, 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && w->addr >= a && w->addr < a + ph->p_memsz)
            w->found = 1;
        else if (ph->p_type == PT_GNU_RELRO)
            o.relro = a, o.relro_end = a + ph->p_memsz;
    }
    w->o = o;
    return w->found;
}

/* Every entry back as it was, if its object is still loaded (dlclose may
 * have unmapped it) and it still holds our hook (nobody patched over us). */
void mp_got_unpatch(void)
{
    pthread_mutex_lock(&patch_lock);
    patching = 0;
    for (uint32_t i = nslots; i-- > 0;) {
        owner_t w = {(uintptr_t)slots[i].slot, 0, {0, 0, 0}};
        dl_iterate_phdr(find_owner, &w);
        if (!w.found)
            continue;
        void *cur = __atomic_load_n(slots[i].slot, __ATOMIC_ACQUIRE);
        const mp_hook_t *h = mp_hooks;
        while (h->name && h->hook != cur)
            h++;
        if (h->name)
            (void)store(slots[i].slot, slots[i].orig, &w.o);
    }
    nslots = 0;
    pthread_mutex_unlock(&patch_lock);
}
