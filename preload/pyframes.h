/* pyframes.h - what the Python stack walker (pystack.c) and the shadow
 * stack of its frame-evaluation hook (shadow.c) share, inside
 * libmemprof.so: CPython 3.11's frames, the frame hashes, the shadow
 * stack's entries. */
#ifndef MP_PYFRAMES_H
#define MP_PYFRAMES_H

#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_frame.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "recorder.h"

#define MAX_DEPTH (1u << 16) /* deeper stacks keep their innermost frames */

/* Stack hashes are sums of per-frame mixes (each frame mixed with its
 * position): the per-frame work is independent, so a deep stack hashes in
 * parallel instead of along a multiply chain. Each frame's mix folds its
 * high bits down before a second multiply: with a multiply alone each mix
 * was linear in the fields, so stacks of the same functions whose call
 * offsets added up alike summed to the same hash, and the stack tables
 * trust the hash for every frame but the last. (fmix64 per frame was 7%
 * slower on deep_stacks for the same test.) */
#define POS_MUL 0xc2b2ae3d27d4eb4full
#define FRAME_MUL 0x9e3779b97f4a7c15ull

static inline uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* posmul: the frame's position times POS_MUL (a walk adds it up as it goes) */
static inline uint64_t mix(const void *code, uintptr_t fp, uint32_t instr, uint64_t posmul)
{
    uint64_t h = ((uint64_t)(uintptr_t)code ^ (fp << 21 | fp >> 43) ^ ((uint64_t)instr << 44) ^ posmul) * FRAME_MUL;
    return (h ^ (h >> 29)) * POS_MUL;
}

static inline uint64_t frame_mix(const mp_frame_t *f, uint64_t pos) { return mix(f->code, f->fp, f->instr, pos * POS_MUL); }

/* The group of a stack whose frames above f hash to above (f at position
 * pos): the stack's hash without f's instruction. Its mix is the group's
 * line in the site table (stacks.c). */
static inline uint64_t prefix_group(uint64_t above, const void *code, uintptr_t fp, uint64_t pos)
{
    return above + mix(code, fp, 0, pos * POS_MUL);
}

static inline uint32_t prefix_bucket(uint64_t group) { return (uint32_t)fmix64(group); }


/* Only the innermost frame can be one not started yet (a frame runs before
 * it calls anything): it is skipped, as CPython's tracebacks skip it. */
static inline int not_started(const _PyInterpreterFrame *f)
{
    const PyCodeObject *co = f->f_code;
    return f->owner != FRAME_OWNED_BY_GENERATOR && f->prev_instr < _PyCode_CODE(co) + co->_co_firsttraceable;
}

/* A code object's fingerprint: its line-table and qualname pointers, which
 * tell it from a dead one at its address (code ids, the stack caches). The
 * qualname's goes through a multiply: a plain XOR of the two pointers (the
 * first version) repeats when both come from pools walked in step, and 27
 * of 300 functions made and dropped in turn got another's stack. Even, as
 * both pointers are (MP_FP_NATIVE is odd). */
static inline uintptr_t code_fp(const PyCodeObject *co)
{
    return (uintptr_t)co->co_linetable ^ (uintptr_t)((uint64_t)(uintptr_t)co->co_qualname * 0x9e3779b97f4a7c15ull);
}

static inline void frame_put(mp_frame_t *fr, const _PyInterpreterFrame *f)
{
    PyCodeObject *co = f->f_code;
    fr->code = co;
    fr->fp = code_fp(co);
    fr->instr = (uint32_t)(f->prev_instr - _PyCode_CODE(co));
}

/* ---- the shadow stack (shadow.c) ---- */

/* Allocation sites remembered per hooked frame: LEAF_SETS sets (a power
 * of 2) of LEAF_WAYS, by instruction, the newest first in its set (a loop's
 * allocating instructions often share their low bits: with sets of two, the
 * 12 of threads.py's loop thrashed one in five lookups). A set holds
 * something for the call only if its bit in leaf_sets is set, so a new call
 * starts with one store instead of clearing 256 bytes (every call of
 * deep_stacks is new). */
#define LEAF_SETS 8
#define LEAF_WAYS 4

typedef struct {
    uint32_t instr[LEAF_WAYS], node[LEAF_WAYS];
} leaf_set_t;

/* An entry's nodes outlive the call they were made for: the next call
 * pushed at the same depth, from the same call (stamp) of the frame below
 * at the same instruction, running the same code, has the same ones. So a
 * loop's calls of one function intern nothing after the first. Cache
 * lines: the first is written as the call starts and read at each
 * allocation; the second holds the base; the sets follow. */
typedef struct {
    _Alignas(64) _PyInterpreterFrame *frame; /* the frame this hooked call runs */
    uint64_t stamp;             /* this call's number in its thread */
    uintptr_t cfa;              /* the hook call's CFA: where --native's walk stops */
    /* the frames above the frame, as the call began (they stay so while it
     * runs): their number, SHADOW_NO_DEPTH if unknown, and the sum of their
     * mixes from the root (intern_walk's prefix hash) */
    uint32_t depth;
    uint32_t bucket; /* prefix_bucket(group) */
    uint64_t hsum;
    uint64_t group;  /* prefix_group of this frame's sites, with depth and hsum */
    /* the frame's own node at an instruction (shadow_leaf), for the call
     * leaf_owner (in capture leaf_gen), in the sets whose bit is set */
    uint64_t leaf_owner;
    uint32_t leaf_gen;
    uint32_t leaf_sets;
    _Alignas(64) uint64_t owner; /* the call the nodes below were made for */
    uint32_t gen;               /* shadow_gen they were interned under */
    uint32_t base;              /* node of the frames above the frame (0: none) */
    /* what base was made from: the call below, its instruction, the code */
    uint64_t below_stamp;
    uint32_t below_instr;
    const void *code;
    uintptr_t fp;
    _Alignas(64) leaf_set_t leaf[LEAF_SETS];
} shadow_t;

extern MP_TLS shadow_t *mp_sh;   /* the calling thread's shadow stack */
extern MP_TLS uint32_t mp_sh_n;  /* its depth */
extern uint32_t mp_shadow_gen;   /* a new capture (fork child) forgets every base */

#define SHADOW_NO_DEPTH UINT32_MAX
#define PREFIX_SEED 0x6a09e667f3bcc908ull /* intern_walk's prefix hashes start here */

/* base is this call's */
static inline int shadow_known(const shadow_t *e) { return e->owner == e->stamp && e->gen == mp_shadow_gen; }
/* the leaves are this call's */
static inline int leaf_known(const shadow_t *e) { return e->leaf_owner == e->stamp && e->leaf_gen == mp_shadow_gen; }

/* Makes the leaves this call's: empty, unless they are already. */
static inline void shadow_leaves_mine(shadow_t *e)
{
    if (leaf_known(e))
        return;
    e->leaf_sets = 0;
    e->leaf_owner = e->stamp;
    e->leaf_gen = mp_shadow_gen;
}

/* e's depth and hash from the entry below it, pe, when pe's frame is e's
 * caller c (at its call instruction): 0, or -1 (pe has none, c is another
 * frame, too deep). */
static inline int shadow_depth_from(shadow_t *e, const shadow_t *pe, const _PyInterpreterFrame *c)
{
    if (!pe || !c || c != pe->frame || pe->depth >= MAX_DEPTH - 1) /* SHADOW_NO_DEPTH too */
        return -1;
    mp_frame_t fr;
    frame_put(&fr, c);
    e->hsum = pe->hsum + frame_mix(&fr, pe->depth);
    e->depth = pe->depth + 1;
    const PyCodeObject *co = e->frame->f_code;
    e->group = prefix_group(e->hsum, co, code_fp(co), e->depth);
    e->bucket = prefix_bucket(e->group);
    return 0;
}

/* The node remembered for the hooked frame at instr, or 0. */
static inline uint32_t shadow_leaf(const shadow_t *e, uint32_t instr)
{
    unsigned s = instr & (LEAF_SETS - 1);
    if (!(e->leaf_sets & (1u << s)))
        return 0;
    const leaf_set_t *set = &e->leaf[s];
    unsigned m = 0; /* bit w: way w has instr */
#ifdef __SSE2__
    _Static_assert(LEAF_WAYS == 4, "a set is compared in one 16-byte load");
    __m128i eq = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)set->instr), _mm_set1_epi32((int)instr));
    m = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(eq));
#else
    for (unsigned w = 0; w < LEAF_WAYS; w++)
        m |= (unsigned)(set->instr[w] == instr) << w;
#endif
    return m ? set->node[__builtin_ctz(m)] : 0;
}

static inline void shadow_leaf_put(shadow_t *e, uint32_t instr, uint32_t node)
{
    unsigned s = instr & (LEAF_SETS - 1);
    leaf_set_t *set = &e->leaf[s];
    if (!(e->leaf_sets & (1u << s))) {
        e->leaf_sets |= 1u << s;
        *set = (leaf_set_t){{instr, UINT32_MAX, UINT32_MAX, UINT32_MAX}, {node, 0, 0, 0}};
        return;
    }
    memmove(&set->instr[1], &set->instr[0], (LEAF_WAYS - 1) * sizeof set->instr[0]);
    memmove(&set->node[1], &set->node[0], (LEAF_WAYS - 1) * sizeof set->node[0]);
    set->instr[0] = instr;
    set->node[0] = node;
}

/* shadow.c */
void mp_shadow_install(PyThreadState *ts);  /* with the GIL, when the script starts */
void mp_shadow_uninstall(void);             /* with the GIL: a Tracker's end */
uint32_t mp_shadow_base(mp_thread_t *t, uint32_t i); /* writer lock held */
uint32_t mp_shadow_intern_cut(mp_thread_t *t, const mp_frame_t *mix, uint32_t n); /* writer lock held */
int mp_shadow_fill(mp_thread_t *t, uint32_t i); /* entries 0..i: depth and hsum where known; 0 if i's is */

/* pystack.c */
extern uint32_t mp_pseudo_node;          /* the stack "no Python frames" */
/* The calling thread's innermost frame in *f; 0 when its frames cannot be
 * read. Resets the walk's results in t. */
int mp_py_walk_start(mp_thread_t *t, int gil, _PyInterpreterFrame **f);
/* With the writer lock held: the node of frame f under parent. */
uint32_t mp_py_edge(mp_thread_t *t, uint32_t parent, const mp_frame_t *f);

#endif
