/* recorder.h - what the hooks, the Python stack walker and the writer of
 * libmemprof.so share. Everything here runs inside the profiled process:
 * no libc malloc on the recording path, no stdio, no Python C-API call
 * except from the one pending call that registers the script-end mark. */
#ifndef MP_RECORDER_H
#define MP_RECORDER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_common.h"

#define MP_EXPORT __attribute__((visibility("default")))
#define MP_TLS __attribute__((tls_model("initial-exec"))) __thread

/* Recursion guard values: 0 outside the recorder; MP_GUARD_REC while the
 * recorder runs (an allocation then is the recorder's own, and is counted
 * as a bug); MP_GUARD_PYAPI while memprof itself calls into Python on
 * purpose (not recorded, not counted). */
enum { MP_GUARD_REC = 1, MP_GUARD_PYAPI = 2, MP_GUARD_INNER = 3 };
/* MP_GUARD_INNER: inside a traced PyMem allocator, which is recorded as
 * such; what it asks of malloc or mmap is not recorded again. */
extern MP_TLS int mp_guard;

/* Read on every hook: 1 while this process records. */
extern atomic_int mp_active;

/* One frame as walked: code object, a fingerprint of it (its line table
 * and qualified name objects: a dead code object's address can be reused
 * by another), instruction offset in code units. */
typedef struct {
    const void *code;       /* PyCodeObject, or a native return address */
    uintptr_t fp;           /* MP_FP_NATIVE for a native frame */
    uint32_t instr;
} mp_frame_t;
#define MP_FP_NATIVE ((uintptr_t)1) /* a Python fingerprint is an even address mix */

/* A stack prefix: hash of the frames from the root down to here, and the
 * node it interned to. */
typedef struct {
    uint64_t hash;
    uint32_t node;
} mp_prefix_t;

#define MP_NATIVE_MAX 1024  /* native frames kept (innermost first) */
#define MP_RECENT_STACKS 4096 /* per-thread cache of whole stacks (a power of 2) */
#define MP_EDGE_CACHE 4096    /* per-thread cache of (parent node, frame) -> node (a power of 2) */

/* Per-thread state, in memory of its own (mmap), reached through mp_self.
 * The fields every event reads come first, the big caches last. */
typedef struct mp_thread_s {
    _Atomic int bias_busy;  /* inside the writer lock through its bias (recorder.c); never freed,
                               so a revoker may read it after the thread is gone */
    uint32_t index;         /* 1-based thread index in the capture */
    uint32_t gen;           /* the capture it was given that index in (mp_rec_begin starts another) */
    int is_main;
    unsigned long ident;    /* pthread_self() */
    /* the last walk stopped at the frame of the anchor-th entry of the
     * thread's shadow stack (1-based; 0: it went to the root) */
    uint32_t anchor;
    uint32_t leaf_node;     /* and that frame's node at its instruction was known */
    int cut;                /* mix is a cut walk's: see mp_py_native_cut */
    struct mp_cut_leaf_s *cut_leaf; /* where its node is to be remembered (NULL: nowhere) */
    uint32_t cur_cap;
    mp_frame_t *cur;        /* last walk, leaf first */
    uint64_t key;           /* key of the last walk (cur), for the cache of recent stacks */
    /* --native: Python frames per evaluation-loop call, leaf first (seg[i]
     * frames of cur belong to the i-th _PyEval_EvalFrameDefault from the
     * leaf), the native return addresses, and the merged stack */
    uint32_t *seg;
    uint32_t seg_cap, nseg;
    mp_frame_t *mix;
    uint32_t mix_cap;
    uint32_t prefix_cap;
    mp_prefix_t *prefix;    /* scratch: the walk's prefixes, root first */
    mp_prefix_t *prev;      /* previous stack's prefixes, root first */
    uint32_t prev_depth, prev_cap;
    mp_frame_t *scr;        /* scratch for the frames under a shadow entry */
    uint32_t scr_cap;
    unsigned rules_gen;             /* mp_code_gen they were made under */
    struct mp_rule_s *rules;        /* unwind.c: unwind rules by return address */
    struct mp_rule_s *rule_mru;     /* unwind.c: the rules used last, 64 of them (stay in L1) */
    struct mp_walk_s *walks;        /* unwind.c: the last native walk, and room for the next */
    struct mp_thread_s *next_free;  /* free list, or the list of live threads */
    /* whole stacks interned lately: key (all frames) -> node */
    struct {
        uint64_t key;
        uint32_t depth, node;
    } recent[MP_RECENT_STACKS];
    struct {
        uint64_t key;
        uint32_t node;
    } edges[MP_EDGE_CACHE];
    void *ips[MP_NATIVE_MAX];
    uintptr_t cfas[MP_NATIVE_MAX]; /* a cut walk's CFAs (shadow.c) */
} mp_thread_t;

/* ---- recorder.c: events (callable from the hooks) ---- */
void mp_rec_alloc(unsigned allocator, const void *p, size_t size);
void mp_rec_free(unsigned deallocator, const void *p);
void mp_rec_free_range(unsigned deallocator, const void *p, size_t len); /* munmap, mremap */
/* The PyMem wrappers' (pymem.c): an allocation in the MEM or OBJ domain
 * (the GIL held), and a free in any domain (never a REALLOC). */
void mp_rec_pymem_alloc(unsigned allocator, const void *p, size_t size);
void mp_rec_pymem_free(unsigned deallocator, const void *p);
void mp_rec_thread_name(unsigned long ident, const char *name, size_t n);
/* exec: the capture is finished before the new image replaces this one,
 * and resumed if the exec fails. */
void mp_rec_exec_begin(void);
void mp_rec_exec_failed(void);
/* With --follow-fork: envp plus what a child needs to profile itself,
 * built in `buf` (no allocation: this runs in vfork children too). Returns
 * envp unchanged when children are not followed or the room is short. */
int mp_following(void);                 /* --follow-fork in effect */
char *const *mp_child_env(char *const *envp, char **out, size_t nout, char *buf, size_t len);
extern unsigned mp_opts;    /* MEMPROF_OPT_* */
void mp_rec_restore(const void *p);
void mp_rec_mark(unsigned kind);
void mp_rec_finish(void);              /* trailer; the process is ending */
/* A capture of part of the run (control.c: a Tracker): begin writes the
 * header into (a duplicate of) fd, with tables of its own, and starts
 * recording; end marks the script end, writes the trailer and closes it.
 * begin returns 0, EBUSY while a capture is being written, or an errno. */
int mp_rec_begin(int fd, const char *path, unsigned opts, uint64_t interval_ns);
void mp_rec_end(void);

/* ---- recorder.c: for pystack.c and native.c, with the writer lock held ---- */
void mp_wlock(void);
void mp_wunlock(void);
int mp_capture_ready_locked(void);     /* 1: recording, the capture exists */
void mp_emit_string(const void *s, size_t n);
void mp_emit_code(unsigned flags, uint32_t filename, uint32_t qualname, uint32_t firstlineno);
void mp_emit_node(uint32_t id, uint32_t parent, uint32_t code, int32_t line, uint32_t firstlineno);
void mp_log(const char *msg, const char *detail);   /* one line to stderr, write(2) */
/* Turns recording off for good, saying why once (err: an errno or 0). */
void mp_stop_recording(const char *why, int err);
int mp_mem_grow(void **p, uint32_t *cap, uint32_t need, size_t elem); /* mmap/mremap */

/* ---- native.c (--native) ---- */
int mp_native_init(void);               /* 0, or -1: no native stacks */
void mp_native_reset(void);             /* fork child: a new capture */
/* Unwinds the calling thread into t->ips (outside the lock). */
uint32_t mp_native_walk(mp_thread_t *t);
/* Merges native and Python frames into t->mix; returns its depth. */
uint32_t mp_native_merge(mp_thread_t *t, uint32_t nnative, uint32_t npy);
/* A cut walk's frames (innermost first) and their CFAs; met: it stopped at
 * its stop. The arrays may be a remembered walk's: read only. */
typedef struct {
    void *const *ips;
    const uintptr_t *cfas;
    int n, met;
    struct mp_cut_leaf_s *leaf; /* the remembered walk's nodes (NULL: none) */
} mp_cut_t;
/* A remembered cut walk's nodes (shadow.c): for the walk's frames under
 * one Python frame, the frame's code (and fp) at an instruction, under base (the
 * node of the frames above), in capture gen with the loaded objects of
 * modules_gen. */
#define MP_CUT_LEAVES 4
typedef struct mp_cut_leaf_s {
    const void *code;
    uintptr_t fp; /* the code's line-table and name pointers: a code object at a dead one's address is another */
    uint32_t instr, base, node, gen, modules_gen;
} mp_cut_leaf_t;
extern atomic_uint mp_modules_gen; /* native.c: the module table changed */
/* A cut walk (see shadow.c): the native frames up to the frame whose CFA
 * is `stop`, memprof's own innermost ones left out; -1: not possible. */
int mp_native_walk_cut(mp_thread_t *t, uintptr_t stop, mp_cut_t *c);
int mp_native_is_self(uintptr_t ip);     /* a return address in libmemprof.so */
/* The merge of mp_native_merge in steps, for shadow.c's cut walk: begin
 * (-1: no memory), each native frame innermost first, end (the depth). */
typedef struct {
    uint32_t evals, seg, py, npy, out;
} mp_merge_t;
int mp_merge_begin(mp_thread_t *t, mp_merge_t *m, void *const *ips, uint32_t nn, uint32_t npy);
void mp_merge_frame(mp_thread_t *t, mp_merge_t *m, uintptr_t ip);
uint32_t mp_merge_end(mp_thread_t *t, mp_merge_t *m);
int mp_native_is_call_path(uintptr_t ip); /* in _PyFunction_Vectorcall or PyObject_Vectorcall */
/* Reads the list of loaded objects again (outside the writer lock) and
 * records what changed (taking it). */
void mp_modules_refresh(void);
extern atomic_int mp_modules_dirty;
/* With the writer lock held: a native frame's node under `parent`. */
uint32_t mp_native_node(uint32_t parent, uintptr_t ip);

/* ---- unwind.c (--native) ---- */
/* How to step from a frame to its caller, cached per return address. */
typedef struct mp_rule_s {
    uintptr_t ip;            /* 0: empty */
    int32_t cfa_off;         /* CFA = (RBP or RSP) + cfa_off */
    int16_t rbp_off;         /* caller's RBP at CFA + rbp_off; 0: RBP unchanged */
    uint8_t cfa_rbp;         /* 1: the CFA is RBP-based */
    uint8_t kind;            /* RULE_* of unwind.c */
} mp_rule_t;
#define MP_UNWIND_RULES (1u << 12) /* cache entries per thread (a power of 2) */
/* Unwinds the calling thread into ips (innermost first) with cached
 * .eh_frame rules; -1 when a frame needs libunwind instead. */
int mp_unwind(mp_thread_t *t, void **ips, int max);
void mp_unwind_forget(mp_thread_t *t); /* a new thread in a reused state */
/* Unwinds up to the frame whose CFA is `stop` (excluded), into ips[] and
 * cfas[] or from a walk remembered; 0, or -1 when a frame needs libunwind. */
int mp_unwind_cut(mp_thread_t *t, void **ips, uintptr_t *cfas, int max, uintptr_t stop, mp_cut_t *c);
extern atomic_uint mp_code_gen; /* dlclose bumps it: cached rules are dropped */

/* ---- hooks.c and got.c: loaded late (not preloaded) ---- */
extern int mp_preloaded;        /* 1: LD_PRELOAD made this library's malloc the one called */
typedef struct {
    const char *name;
    void *hook;
} mp_hook_t;
extern const mp_hook_t mp_hooks[]; /* what got.c patches in, ending with {NULL, NULL} */
/* Points the GOT entries that name a hooked function, in every loaded
 * object but this library and the dynamic linker, at the hooks; again
 * after each dlopen. 0, or an errno. */
int mp_got_patch(void);
void mp_got_refresh(void);       /* after a dlopen: the objects not patched yet */
void mp_got_unpatch(void);       /* every entry back as it was */

/* ---- pymem.c (--trace-python-allocators) ---- */
int mp_pymem_install(void);             /* 0, or -1 */
void mp_pymem_uninstall(void);          /* with the GIL: the domains as they were */

/* ---- pystack.c ---- */
/* Looks for a CPython this build can walk. Returns a memprof_pystack_mode. */
unsigned mp_py_init(void);
const char *mp_py_version(void);
unsigned long mp_py_hexversion(void);
/* Walks the calling thread's Python frames into t->cur (no lock needed:
 * only this thread changes its own frame chain). Returns the depth. With
 * segments, also fills t->seg/t->nseg for the native merge. gil: the
 * caller holds the GIL (a MEM or OBJ domain allocator). */
uint32_t mp_py_walk(mp_thread_t *t, int segments, int gil);
/* The commonest stack under --trace-python-allocators, without a walk
 * (writer lock held): a MEM or OBJ domain call (the GIL held) from the
 * innermost hooked frame, at an instruction that this call allocated at
 * before, or that a call with the same frames above did (the site table,
 * else the prefix table, by the hash taken as the call began). Its node,
 * or 0: walk. */
uint32_t mp_py_leaf(mp_thread_t *t);
/* With the writer lock held: interns a stack of `depth` frames (leaf
 * first, Python and native), emitting any new strings, code objects and
 * nodes; returns its node id. */
uint32_t mp_py_intern(mp_thread_t *t, const mp_frame_t *frames, uint32_t depth);
void mp_py_reset(void);                 /* a new capture (a fork child's, a Tracker's) */
/* A Tracker, with the GIL: no script-end mark at exit (its end is the
 * Tracker's), thread names, and with MEMPROF_OPT_PYMEM the PyMem wrappers
 * and the shadow stack; end takes the last two away. */
void mp_py_tracker_begin(unsigned opts);
/* With the GIL, in a process memprof attach joined: the end of the script
 * (atexit) is marked in the capture being written then, as under memprof
 * run. Once per process. */
void mp_py_attach_end_mark(void);
void mp_py_tracker_end(void);
/* With the writer lock held, at start: the pseudo-frame for "no Python". */
void mp_py_emit_pseudo(void);

/* ---- shadow.c: the shadow stack of a frame-evaluation hook ---- */
/* --native: the walk up to the innermost hooked call whose stack is known,
 * merged into t->mix. Returns its depth, or UINT32_MAX: walk the whole
 * stack instead (mp_py_walk, mp_native_walk, mp_native_merge). */
uint32_t mp_py_native_cut(mp_thread_t *t, int gil);
void mp_py_thread_gone(void);           /* the calling thread is ending */

/* ---- stacks.c: interning tables (writer lock held) ---- */
/* Doubles an open-addressing table in a new mapping (first size `first`),
 * rehashing the entries `used` says are full. 0 or -1. */
int mp_table_grow(void **slots, size_t *cap, size_t esz, size_t first, size_t (*hash)(const void *),
                  int (*used)(const void *));
uint32_t mp_string_intern(const char *s, size_t n);    /* emits STRING when new */
void mp_stacks_reset(void);             /* a new capture (a fork child's, a Tracker's) */
/* Empties a table of mp_table_grow: one still at its first size is zeroed
 * and kept (a Tracker per test reuses it), a bigger one unmapped. */
void mp_table_clear(void **slots, size_t *cap, size_t esz, size_t first);
void mp_emit_thread_name(uint32_t thread, uint32_t name);
void mp_emit_module(uint32_t id, uint64_t bias, uint32_t path, const uint8_t *build_id, size_t build_len,
                    const uint64_t *segs, unsigned nseg);
void mp_emit_module_unload(uint32_t id);
uint32_t mp_native_node_intern(uint32_t parent, uint32_t module, uint64_t offset);
void mp_emit_native_node(uint32_t id, uint32_t parent, uint32_t module, uint64_t offset);
uint32_t mp_code_new_id(void);
/* The stack trie: node (parent, code id, line), emitted when new
 * (firstlineno: the code object's, lines are written relative to it). */
uint32_t mp_node_intern(uint32_t parent, uint32_t code, int32_t line, uint32_t firstlineno);
/* Stack prefixes by hash -> node. Every prefix of an interned stack is
 * interned, so "is prefix i known" is monotone in i (binary search). */
uint32_t mp_prefix_find(uint64_t hash, const void *code, uint32_t instr); /* node or 0 */
void mp_prefix_add(uint64_t hash, const void *code, uint32_t instr, uint32_t node);
/* The site table: a cache of the prefix table for the shadow stack, one
 * line per group (a frame under the frames above it) with the nodes of its
 * allocation sites (instructions). Writer lock held. */
uint32_t mp_site_find(uint32_t bucket, uint64_t group, const void *code, uint32_t instr); /* node or 0 */
void mp_site_put(uint32_t bucket, uint64_t group, const void *code, uint32_t instr, uint32_t node);

#endif
