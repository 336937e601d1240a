/* symbolize.h - native frames to function, file and line, offline, with
 * elfutils (libdwfl). A capture names each loaded ELF object (id, path, load
 * bias, build id) and each native frame as (module id, return address - load
 * bias); the symbolizer opens the files when the reporter runs, checks they
 * are the ones the process had (build id), and answers with demangled
 * function names, and source file and line where debug info exists (in the
 * file, or separate: /usr/lib/debug/.build-id, .gnu_debuglink). Results are
 * cached per (module, offset). Never prints, never exits; not thread-safe
 * (one symbolizer per thread). With DEBUGINFOD_URLS set in the environment,
 * elfutils may also fetch missing debug info from those servers. */
#ifndef MP_SYMBOLIZE_H
#define MP_SYMBOLIZE_H

#include <stddef.h>
#include <stdint.h>

#include "memprof/memprof.h"

typedef struct mp_symbolizer_s mp_symbolizer_t;

typedef struct {
    const char *function;  /* demangled; NULL when no symbol covers the address */
    const char *file;      /* source file; NULL without line info */
    int line;              /* 0 when unknown */
    const char *module;    /* the module's path as registered */
    uint64_t offset;       /* the offset looked up */
} mp_symbol_t;

/* Longest build id mp_symbolizer_add_module takes (the capture's limit). */
#define MP_SYMBOLIZER_BUILD_ID_MAX 255

/* A new symbolizer without modules; NULL on out of memory. */
mp_symbolizer_t *mp_symbolizer_new(void);

/* Frees the symbolizer, every string it returned and every file it opened. */
void mp_symbolizer_free(mp_symbolizer_t *s);

/* Registers module `id` (any uint32 except 0, each id once) at `path` with
 * load bias `bias` and GNU build id `build_id` (build_id_len bytes, 0 for
 * none; path and build id are copied). Does not open the file yet (lazy, on
 * first lookup). 0, MEMPROF_EINVAL for id 0, an id already registered, a
 * NULL path or a build id longer than MP_SYMBOLIZER_BUILD_ID_MAX,
 * MEMPROF_ENOMEM. */
int mp_symbolizer_add_module(mp_symbolizer_t *s, uint32_t id, const char *path, uint64_t bias,
                             const uint8_t *build_id, size_t build_id_len);

/* Resolves a return address: `offset` is return_address - bias. The
 * function, file and line are those of offset - 1 (a return address points
 * after the call, so a call as the last instruction of a function still
 * resolves to that function); offset 0 resolves to nothing. 0 on success
 * (out filled; strings live until mp_symbolizer_free), MEMPROF_EINVAL for an
 * unknown id, MEMPROF_ENOMEM.
 *
 * When code was inlined at the address, `function` is the outermost
 * function (the ELF symbol covering the address) and file:line is the
 * place in that function's own source: the call site of the outermost
 * inlined call, not the line inside the inlined code. The whole chain is
 * given by mp_symbolizer_lookup_inline.
 *
 * A module whose file is missing, unreadable, not ELF, or whose build id
 * differs from the recorded one (file replaced since the capture; checked
 * when both are known) still succeeds, with function = file = NULL;
 * mp_symbolizer_module_problem then says why. */
int mp_symbolizer_lookup(mp_symbolizer_t *s, uint32_t id, uint64_t offset, mp_symbol_t *out);

/* The inline chain at a return address (same rules as mp_symbolizer_lookup),
 * innermost first: frames[0] is the function whose code is at the address,
 * with the line-table location; each next one is the function it was inlined
 * into, at the call site; frames[*n - 1] is what mp_symbolizer_lookup gives.
 * Inlined functions are named by DWARF: the demangled linkage name when
 * there is one, else the plain name (a function with internal linkage, e.g.
 * static, usually has none: "helper" rather than "ns::helper(int)").
 * *n >= 1 (1 without inlining or without debug info). The array lives until
 * mp_symbolizer_free. 0, MEMPROF_EINVAL for an unknown id, MEMPROF_ENOMEM. */
int mp_symbolizer_lookup_inline(mp_symbolizer_t *s, uint32_t id, uint64_t offset, const mp_symbol_t **frames,
                                size_t *n);

/* Opens module `id` now rather than on its first lookup, so that its problem
 * is known (e.g. to warn before a report). 0 also when the file is
 * unusable; MEMPROF_EINVAL for an unknown id, MEMPROF_ENOMEM. */
int mp_symbolizer_load(mp_symbolizer_t *s, uint32_t id);

/* One line saying why module `id` cannot be symbolized ("cannot open ...",
 * "... not a valid ELF file", "build id ... differs ..."), or NULL when it
 * can, when it has not been opened yet (no lookup, no mp_symbolizer_load) or
 * when the id is unknown. Lives until mp_symbolizer_free. */
const char *mp_symbolizer_module_problem(const mp_symbolizer_t *s, uint32_t id);

#endif
