/* unwind.c - the native unwinder of --native: DWARF call-frame information
 * (.eh_frame) reduced, once per return address, to the three rules an
 * x86-64 frame needs (where the CFA is, where the return address is, where
 * the caller's RBP was saved), kept in a per-thread cache. A frame then
 * costs one cache probe and two loads; libunwind's unw_backtrace, which
 * this replaces on the common path, spends several times that.
 *
 * The rules come straight from the loaded image: _dl_find_object (glibc
 * 2.35) gives the object's PT_GNU_EH_FRAME (.eh_frame_hdr), whose sorted
 * table finds the FDE; its CIE and FDE programs are run up to the address.
 * Anything outside that simple shape - a signal frame, a CFA given by an
 * expression, a return address not at CFA-8, an address with no FDE - makes
 * the whole stack go to unw_backtrace instead, so no stack is worse than
 * libunwind's. The rules of an address are cached with it; after dlclose
 * (code may be unmapped and other code mapped there) every thread drops
 * its cache.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>

#include "recorder.h"

#define RULES MP_UNWIND_RULES
#define PROBES 8
#define STATES 16            /* DW_CFA_remember_state depth */
#define MAX_STACK (1ul << 30) /* a CFA this far above the first frame is not believed */

enum { RULE_OK = 1, RULE_STOP, RULE_FALLBACK };
enum { REG_RBP = 6, REG_RSP = 7, REG_RA = 16 };

atomic_uint mp_code_gen; /* bumped by dlclose */

/* ---- reading .eh_frame ---- */

typedef struct {
    const uint8_t *p, *end;
    int bad;
} cursor_t;

static uint64_t uleb(cursor_t *c)
{
    uint64_t v = 0;
    for (unsigned shift = 0; c->p < c->end; shift += 7) {
        uint8_t b = *c->p++;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    c->bad = 1;
    return 0;
}

static int64_t sleb(cursor_t *c)
{
    int64_t v = 0;
    unsigned shift = 0;
    uint8_t b = 0x80;
    while (c->p < c->end && (b & 0x80)) {
        b = *c->p++;
        if (shift < 64)
            v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
        shift += 7;
    }
    if (b & 0x80)
        c->bad = 1;
    else if (shift < 64 && (b & 0x40))
        v |= -(int64_t)((uint64_t)1 << shift);
    return v;
}

static uint64_t fixed(cursor_t *c, unsigned n)
{
    if ((size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, c->p, n); /* little-endian */
    c->p += n;
    return v;
}

/* A DW_EH_PE-encoded pointer. pcrel is relative to where it is read;
 * datarel to `data` (.eh_frame_hdr). Indirect and text/func-relative forms
 * are not used by the toolchains' .eh_frame and are refused. */
static uintptr_t encoded(cursor_t *c, uint8_t enc, uintptr_t data)
{
    if (enc == 0xff)
        return 0;
    uintptr_t base = 0, at = (uintptr_t)c->p;
    switch (enc & 0x70) {
    case 0x00: break;
    case 0x10: base = at; break;
    case 0x30: base = data; break;
    default: c->bad = 1; return 0;
    }
    if (enc & 0x80) {
        c->bad = 1;
        return 0;
    }
    uint64_t v;
    switch (enc & 0x0f) {
    case 0x00: v = fixed(c, 8); break;
    case 0x01: v = uleb(c); break;
    case 0x02: v = fixed(c, 2); break;
    case 0x03: v = fixed(c, 4); break;
    case 0x04: v = fixed(c, 8); break;
    case 0x09: v = (uint64_t)sleb(c); break;
    case 0x0a: v = (uint64_t)(int64_t)(int16_t)fixed(c, 2); break;
    case 0x0b: v = (uint64_t)(int64_t)(int32_t)fixed(c, 4); break;
    case 0x0c: v = fixed(c, 8); break;
    default: c->bad = 1; return 0;
    }
    return base + (uintptr_t)v;
}

/* The rule for one register we follow. */
enum { RU_SAME, RU_UNDEF, RU_OFFSET, RU_OTHER };
typedef struct {
    uint8_t how;
    int64_t off;
} reg_rule_t;

typedef struct {
    uint64_t cfa_reg;
    int64_t cfa_off;
    int cfa_expr;
    reg_rule_t rbp, ra;
} row_t;

typedef struct {
    uint64_t code_align;
    int64_t data_align;
    uint64_t ra_reg;
    uint8_t fde_enc;
    int signal, z;
    const uint8_t *insns, *insns_end;
} cie_t;

static int parse_cie(const uint8_t *at, const uint8_t *limit, cie_t *cie)
{
    cursor_t c = {at, limit, 0};
    uint64_t len = fixed(&c, 4);
    if (len == 0xffffffffu)
        len = fixed(&c, 8);
    if (c.bad || len > (uint64_t)(limit - c.p))
        return -1;
    c.end = c.p + len;
    if (fixed(&c, 4) != 0) /* CIE id */
        return -1;
    uint8_t version = (uint8_t)fixed(&c, 1);
    const char *aug = (const char *)c.p;
    size_t alen = strnlen(aug, (size_t)(c.end - c.p));
    if (c.bad || alen == (size_t)(c.end - c.p) || (version != 1 && version != 3))
        return -1;
    c.p += alen + 1;
    cie->code_align = uleb(&c);
    cie->data_align = sleb(&c);
    cie->ra_reg = version == 1 ? fixed(&c, 1) : uleb(&c);
    cie->fde_enc = 0;
    cie->signal = 0;
    cie->z = aug[0] == 'z';
    if (cie->z) {
        uint64_t n = uleb(&c);
        const uint8_t *data_end = c.p + n;
        if (c.bad || n > (uint64_t)(c.end - c.p))
            return -1;
        for (const char *a = aug + 1; *a; a++) {
            if (*a == 'R') {
                cie->fde_enc = (uint8_t)fixed(&c, 1);
            } else if (*a == 'P') {
                uint8_t enc = (uint8_t)fixed(&c, 1);
                (void)encoded(&c, enc & 0x7f, 0); /* the personality routine: skipped */
            } else if (*a == 'L') {
                (void)fixed(&c, 1);
            } else if (*a == 'S') {
                cie->signal = 1;
            } else if (*a != 'B') {
                return -1;
            }
        }
        c.p = data_end;
    } else if (aug[0]) {
        return -1;
    }
    if (c.bad)
        return -1;
    cie->insns = c.p;
    cie->insns_end = c.end;
    return 0;
}

static void set_rule(row_t *r, uint64_t reg, uint8_t how, int64_t off)
{
    reg_rule_t rule = {how, off};
    if (reg == REG_RBP)
        r->rbp = rule;
    else if (reg == REG_RA)
        r->ra = rule;
}

/* DW_CFA_restore: the rule the CIE's program left (none in the CIE itself). */
static int restore_rule(row_t *r, const row_t *initial, uint64_t reg)
{
    if (!initial)
        return -1;
    if (reg == REG_RBP)
        r->rbp = initial->rbp;
    else if (reg == REG_RA)
        r->ra = initial->ra;
    return 0;
}

/* Runs a CFA program up to `target`. Returns 0, or -1 on what it cannot do. */
static int run_cfa(const uint8_t *p, const uint8_t *end, const cie_t *cie, uintptr_t loc, uintptr_t target,
                   row_t *row, const row_t *initial)
{
    row_t saved[STATES];
    unsigned nsaved = 0;
    cursor_t c = {p, end, 0};
    while (c.p < c.end && !c.bad) {
        uint8_t op = *c.p++;
        uint64_t reg;
        switch (op >> 6) {
        case 1: /* advance_loc */
            loc += (op & 0x3f) * cie->code_align;
            if (loc > target)
                return 0;
            continue;
        case 2: /* offset */
            set_rule(row, op & 0x3f, RU_OFFSET, (int64_t)uleb(&c) * cie->data_align);
            continue;
        case 3: /* restore */
            if (restore_rule(row, initial, op & 0x3f) != 0)
                return -1;
            continue;
        }
        switch (op) {
        case 0x00: break; /* nop */
        case 0x01: /* set_loc */
            loc = encoded(&c, cie->fde_enc, 0);
            if (loc > target)
                return 0;
            break;
        case 0x02: loc += fixed(&c, 1) * cie->code_align; if (loc > target) return 0; break;
        case 0x03: loc += fixed(&c, 2) * cie->code_align; if (loc > target) return 0; break;
        case 0x04: loc += fixed(&c, 4) * cie->code_align; if (loc > target) return 0; break;
        case 0x05: /* offset_extended */
            reg = uleb(&c);
            set_rule(row, reg, RU_OFFSET, (int64_t)uleb(&c) * cie->data_align);
            break;
        case 0x06: /* restore_extended */
            if (restore_rule(row, initial, uleb(&c)) != 0)
                return -1;
            break;
        case 0x07: set_rule(row, uleb(&c), RU_UNDEF, 0); break;
        case 0x08: set_rule(row, uleb(&c), RU_SAME, 0); break;
        case 0x09: /* register */
            reg = uleb(&c);
            (void)uleb(&c);
            set_rule(row, reg, RU_OTHER, 0);
            break;
        case 0x0a:
            if (nsaved == STATES)
                return -1;
            saved[nsaved++] = *row;
            break;
        case 0x0b:
            if (nsaved == 0)
                return -1;
            *row = saved[--nsaved]; /* the CFA rule included, as GCC and libunwind have it */
            break;
        case 0x0c: row->cfa_reg = uleb(&c); row->cfa_off = (int64_t)uleb(&c); row->cfa_expr = 0; break;
        case 0x0d: row->cfa_reg = uleb(&c); row->cfa_expr = 0; break;
        case 0x0e: row->cfa_off = (int64_t)uleb(&c); break;
        case 0x0f: { /* def_cfa_expression */
            uint64_t n = uleb(&c);
            if (n > (uint64_t)(c.end - c.p))
                return -1;
            c.p += n;
            row->cfa_expr = 1;
            break;
        }
        case 0x10: case 0x16: { /* expression, val_expression */
            reg = uleb(&c);
            uint64_t n = uleb(&c);
            if (n > (uint64_t)(c.end - c.p))
                return -1;
            c.p += n;
            set_rule(row, reg, RU_OTHER, 0);
            break;
        }
        case 0x11: /* offset_extended_sf */
            reg = uleb(&c);
            set_rule(row, reg, RU_OFFSET, sleb(&c) * cie->data_align);
            break;
        case 0x12: row->cfa_reg = uleb(&c); row->cfa_off = sleb(&c) * cie->data_align; row->cfa_expr = 0; break;
        case 0x13: row->cfa_off = sleb(&c) * cie->data_align; break;
        case 0x14: case 0x15: /* val_offset(_sf) */
            reg = uleb(&c);
            if (op == 0x14)
                (void)uleb(&c);
            else
                (void)sleb(&c);
            set_rule(row, reg, RU_OTHER, 0);
            break;
        case 0x2e: (void)uleb(&c); break; /* GNU_args_size */
        case 0x2f: /* GNU_negative_offset_extended */
            reg = uleb(&c);
            set_rule(row, reg, RU_OFFSET, -(int64_t)uleb(&c) * cie->data_align);
            break;
        default: return -1;
        }
    }
    return c.bad ? -1 : 0;
}

/* The FDE covering `target` through the .eh_frame_hdr search table. */
static const uint8_t *find_fde(const uint8_t *hdr, uintptr_t target)
{
    if (!hdr || hdr[0] != 1 || hdr[3] != 0x3b) /* version 1, table of datarel sdata4 pairs */
        return NULL;
    cursor_t c = {hdr + 4, hdr + 4 + 32, 0};
    (void)encoded(&c, hdr[1], (uintptr_t)hdr); /* eh_frame_ptr */
    uint64_t count = encoded(&c, hdr[2], (uintptr_t)hdr);
    if (c.bad || count == 0)
        return NULL;
    const int32_t *table = (const int32_t *)c.p;
    uint64_t lo = 0, hi = count;
    while (hi - lo > 1) { /* the last entry whose start is <= target */
        uint64_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)hdr + (intptr_t)table[2 * mid] <= target)
            lo = mid;
        else
            hi = mid;
    }
    if ((uintptr_t)hdr + (intptr_t)table[2 * lo] > target)
        return NULL;
    return hdr + (intptr_t)table[2 * lo + 1];
}

/* Works out the rules at `ip` (target: ip itself for the innermost frame,
 * ip - 1 for return addresses, which point past their call). */
static mp_rule_t compute_rule(uintptr_t ip, uintptr_t target)
{
    mp_rule_t r = {ip, 0, 0, 0, RULE_FALLBACK};
    struct dl_find_object dlfo;
    if (_dl_find_object((void *)target, &dlfo) != 0)
        return r;
    const uint8_t *fde = find_fde(dlfo.dlfo_eh_frame, target);
    if (!fde)
        return r;
    const uint8_t *limit = (const uint8_t *)dlfo.dlfo_map_end > fde ? (const uint8_t *)dlfo.dlfo_map_end : fde + 16;
    cursor_t c = {fde, limit, 0};
    uint64_t len = fixed(&c, 4);
    if (len == 0 || len == 0xffffffffu || len > (uint64_t)(limit - c.p))
        return r;
    c.end = c.p + len;
    const uint8_t *id_at = c.p;
    uint32_t cie_off = (uint32_t)fixed(&c, 4);
    cie_t cie;
    if (c.bad || cie_off == 0 || parse_cie(id_at - cie_off, limit, &cie) != 0 || cie.ra_reg != REG_RA)
        return r;
    uintptr_t begin = encoded(&c, cie.fde_enc, 0);
    uintptr_t range = encoded(&c, cie.fde_enc & 0x0f, 0);
    if (c.bad || target < begin || target - begin >= range)
        return r;
    if (cie.z) { /* the FDE's augmentation data */
        uint64_t n = uleb(&c);
        if (c.bad || n > (uint64_t)(c.end - c.p))
            return r;
        c.p += n;
    }
    if (cie.signal)
        return r;
    row_t row = {REG_RSP, 8, 0, {RU_SAME, 0}, {RU_OFFSET, -8}};
    if (run_cfa(cie.insns, cie.insns_end, &cie, begin, UINTPTR_MAX, &row, NULL) != 0)
        return r;
    row_t initial = row;
    if (run_cfa(c.p, c.end, &cie, begin, target, &row, &initial) != 0)
        return r;
    if (row.ra.how == RU_UNDEF) { /* the outermost frame (_start, a thread's start) */
        r.kind = RULE_STOP;
        return r;
    }
    if (row.cfa_expr || (row.cfa_reg != REG_RSP && row.cfa_reg != REG_RBP) || row.ra.how != RU_OFFSET ||
        row.ra.off != -8 || row.cfa_off < 8 || row.cfa_off > INT32_MAX || row.rbp.how == RU_OTHER)
        return r;
    if (row.rbp.how == RU_OFFSET) {
        if (row.rbp.off == 0 || row.rbp.off < INT16_MIN || row.rbp.off > INT16_MAX)
            return r;
        r.rbp_off = (int16_t)row.rbp.off;
    }
    r.cfa_off = (int32_t)row.cfa_off;
    r.cfa_rbp = row.cfa_reg == REG_RBP;
    r.kind = RULE_OK;
    return r;
}

/* ---- the walk ---- */

static inline uint32_t rule_slot(uintptr_t ip) { return (uint32_t)((ip * 0x9e3779b97f4a7c15ull) >> 52); }

static MP_NOINLINE mp_rule_t rule_miss(mp_thread_t *t, uintptr_t ip, int first)
{
    mp_rule_t r = compute_rule(ip, first ? ip : ip - 1);
    uint32_t j = rule_slot(ip);
    for (unsigned k = 0; k < PROBES; k++) {
        mp_rule_t *e = &t->rules[(j + k) & (RULES - 1)];
        if (!e->ip) {
            *e = r;
            return r;
        }
    }
    t->rules[j] = r; /* a full neighbourhood: the first slot is replaced */
    return r;
}

#define MRU 64
#define LAST_CUT 32 /* the rules of the last cut walk's first frames, by position */

static inline mp_rule_t rule_of(mp_thread_t *t, uintptr_t ip, int first)
{
    mp_rule_t *m = &t->rule_mru[(ip * 0x9e3779b97f4a7c15ull) >> 58];
    if (MP_LIKELY(m->ip == ip))
        return *m;
    uint32_t j = rule_slot(ip);
    for (unsigned k = 0; k < PROBES; k++) {
        const mp_rule_t *e = &t->rules[(j + k) & (RULES - 1)];
        if (e->ip == ip)
            return *m = *e;
        if (!e->ip)
            break;
    }
    return *m = rule_miss(t, ip, first);
}

/* The last walk of the thread, frame by frame: the state a frame was
 * entered with (IP, SP, RBP) and the rule used to leave it, so that the
 * next walk can stop at the first frame it has seen before. Leaving frame
 * m reads the return address at sp[m + 1] - 8 (sp[m + 1] is frame m's CFA)
 * and, when rbp_off[m] is set, the caller's RBP at sp[m + 1] + rbp_off[m].
 * The frames after a frame are a function of its state and of the words
 * read after it, so a frame entered in the same state, with those words
 * unchanged, is followed by the same frames. RBP counts only where some
 * frame further out finds its CFA from it before it is reloaded (NEED_BP):
 * where it is a general register, its value changes all the time. */
enum { END_STOP = 1, END_ZERO }; /* the outermost frame's rule said so; a 0 return address at sp[n] - 8 */
enum { CFA_RBP = 1, NEED_BP = 2 };
typedef struct {
    uintptr_t ip[MP_NATIVE_MAX + 1], sp[MP_NATIVE_MAX + 1], bp[MP_NATIVE_MAX + 1];
    int16_t rbp_off[MP_NATIVE_MAX + 1];
    uint8_t flags[MP_NATIVE_MAX + 1];
    int n, end; /* n == 0: nothing to reuse */
} walk_t;

/* Cut walks remembered (mp_unwind_cut): a walk that met its stop is a
 * function of the state it started in (IP, SP, and RBP when a frame found
 * its CFA from the RBP it was entered with) and of the words it read: each
 * frame's return address, and each saved RBP a frame further out found its
 * CFA from. The same start with the same words read again gives the same
 * frames, so a remembered walk answers after one load and compare per
 * word, and those loads do not wait on each other as a walk's do. The
 * words lie between the walk's SP and its stop, the CFA of a call still
 * running, so reading them again is safe. Kept by start SP and stop, in
 * MEMO_SETS sets of MEMO_WAYS. */
#define MEMO_SETS 16
#define MEMO_WAYS 4
#define MEMO_FRAMES 24 /* longer cut walks are not remembered */
#define MEMO_BPS 8     /* saved RBPs read and used */
typedef struct {
    uintptr_t sp0, ip0, stop, bp0; /* the start and the stop */
    uint8_t n, nbp, need_bp0;
    uintptr_t ip_stop;             /* the return address into the stop's frame */
    uintptr_t bp_at[MEMO_BPS], bp_val[MEMO_BPS];
    void *ips[MEMO_FRAMES];
    uintptr_t cfas[MEMO_FRAMES];
    mp_cut_leaf_t leaf[MP_CUT_LEAVES];
} memo_t;

/* A set: the tags of its ways (from start SP and stop; 0: empty) and
 * where each way's walk is, the one used last first. Walks of different
 * C paths often start at one SP under one stop (callees of one function,
 * with frames of one size), so a set holds several of one key. */
typedef struct {
    uint64_t tag[MEMO_WAYS];
    uint8_t slot[MEMO_WAYS];
} memo_set_t;

struct mp_walk_s {
    walk_t w[2];
    int last; /* w[last] is the last walk, the other one the next's room */
    memo_set_t set[MEMO_SETS];
    memo_t memo[MEMO_SETS * MEMO_WAYS];
    /* A thread whose walks seldom repeat within what the sets hold (deep
     * recursions with allocations at every level) would pay for the look-up
     * and for writing each walk down, and gain nothing: when fewer than one
     * in MEMO_MIN_HITS of MEMO_WINDOW look-ups answer, the next MEMO_REST
     * walks neither look up nor are kept (they are written to scratch). */
    uint32_t looked, answered, rest;
    memo_t scratch;
};
#define MEMO_WINDOW 4096
#define MEMO_MIN_HITS 4
#define MEMO_REST 65536

static void memo_sets_init(struct mp_walk_s *ws)
{
    for (unsigned i = 0; i < MEMO_SETS; i++)
        for (unsigned w = 0; w < MEMO_WAYS; w++) {
            ws->set[i].tag[w] = 0;
            ws->set[i].slot[w] = (uint8_t)w;
        }
}

/* Way p of set s becomes the one used last, with tag. */
static inline void memo_front(memo_set_t *s, unsigned p, uint64_t tag)
{
    uint8_t slot = s->slot[p];
    for (; p > 0; p--) {
        s->tag[p] = s->tag[p - 1];
        s->slot[p] = s->slot[p - 1];
    }
    s->tag[0] = tag;
    s->slot[0] = slot;
}

void mp_unwind_forget(mp_thread_t *t)
{
    if (t->walks) {
        t->walks->w[0].n = t->walks->w[1].n = 0;
        memo_sets_init(t->walks);
    }
}

/* Where the words read to leave frames j.. of `w` first differ from what
 * is in memory now (-1: nowhere). They are read in the order a walk reads
 * them and the reading stops at the first that differs, so no address is
 * read that a walk would not read. */
static inline int walk_differs(const walk_t *w, int j)
{
    for (int m = j; m + 1 < w->n; m++) {
        uintptr_t cfa = w->sp[m + 1];
        if (*(const uintptr_t *)(cfa - 8) != w->ip[m + 1] ||
            (w->rbp_off[m] && (w->flags[m + 1] & NEED_BP) &&
             *(const uintptr_t *)(cfa + w->rbp_off[m]) != w->bp[m + 1]))
            return m;
    }
    if (w->end == END_ZERO && *(const uintptr_t *)(w->sp[w->n] - 8) != 0)
        return w->n - 1;
    return -1;
}

/* Frames j..j+k-1 of the last walk become frames n.. of this one. */
static inline void take(walk_t *w, const walk_t *old, int n, int j, int k)
{
    memcpy(&w->ip[n], &old->ip[j], (size_t)k * sizeof *w->ip);
    memcpy(&w->sp[n], &old->sp[j], (size_t)(k + 1) * sizeof *w->sp);
    memcpy(&w->bp[n], &old->bp[j], (size_t)k * sizeof *w->bp);
    memcpy(&w->rbp_off[n], &old->rbp_off[j], (size_t)k * sizeof *w->rbp_off);
    memcpy(&w->flags[n], &old->flags[j], (size_t)k * sizeof *w->flags);
}

/* NEED_BP for frames below `from` (whose flags are known), innermost last. */
static inline void need_bp(walk_t *w, int from)
{
    int need = from < w->n && (w->flags[from] & NEED_BP);
    for (int m = from - 1; m >= 0; m--) {
        need = (w->flags[m] & CFA_RBP) || (!w->rbp_off[m] && need);
        w->flags[m] = (uint8_t)((w->flags[m] & CFA_RBP) | (need ? NEED_BP : 0));
    }
}

static MP_COLD MP_NOINLINE int unwind_setup(mp_thread_t *t, unsigned gen)
{
    if (!t->rules) {
        size_t rsz = (RULES + MRU + LAST_CUT) * sizeof(mp_rule_t), wsz = sizeof(struct mp_walk_s);
        uint8_t *m = mmap(NULL, rsz + wsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return -1;
        t->rules = (mp_rule_t *)m;
        t->rule_mru = t->rules + RULES;
        t->walks = (struct mp_walk_s *)(m + rsz);
        memo_sets_init(t->walks);
    } else {
        memset(t->rules, 0, (RULES + MRU + LAST_CUT) * sizeof(mp_rule_t));
        mp_unwind_forget(t);
    }
    t->rules_gen = gen;
    return 0;
}

/* The registers of the function it is written in: where a walk starts. */
#define WALK_HERE(ip, sp, bp) \
    __asm__ volatile("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2" : "=r"(ip), "=r"(sp), "=r"(bp))

/* The CFA of a frame entered with (sp, bp) under rule r, or 0 when it is
 * not to be believed: it must rise, stay within MAX_STACK of the first
 * frame's SP (sp0) and be 8-aligned. */
static inline uintptr_t rule_cfa(mp_rule_t r, uintptr_t sp, uintptr_t bp, uintptr_t sp0)
{
    uintptr_t cfa = (r.cfa_rbp ? bp : sp) + (uintptr_t)(intptr_t)r.cfa_off;
    return cfa <= sp || cfa - sp0 > MAX_STACK || (cfa & 7) ? 0 : cfa;
}

/* Leaves the frame whose CFA is cfa: the caller's IP, and the caller's RBP
 * in *bp where the rule says it was saved (else RBP is unchanged). */
static inline uintptr_t leave_frame(mp_rule_t r, uintptr_t cfa, uintptr_t *bp)
{
    if (r.rbp_off)
        *bp = *(const uintptr_t *)(cfa + r.rbp_off);
    return *(const uintptr_t *)(cfa - 8);
}

/* Unwinds the calling thread into ips[] (innermost first). Returns the
 * count, or -1 when a frame needs libunwind. */
int mp_unwind(mp_thread_t *t, void **ips, int max)
{
    unsigned gen = atomic_load_explicit(&mp_code_gen, memory_order_acquire);
    if (MP_UNLIKELY((!t->rules || t->rules_gen != gen) && unwind_setup(t, gen) != 0))
        return -1;
    if (max > MP_NATIVE_MAX)
        max = MP_NATIVE_MAX;
    walk_t *old = &t->walks->w[t->walks->last], *w = &t->walks->w[!t->walks->last];
    uintptr_t ip, sp, bp;
    WALK_HERE(ip, sp, bp);
    uintptr_t sp0 = sp;
    int n = 0, j = 0, end = 0, known = 0;
    for (int first = 1; n < max; first = 0) {
        /* a frame the last walk entered in this state: the frames after it
         * are the same as far as the words read to reach them are */
        while (j < old->n && old->sp[j] < sp)
            j++;
        if (j < old->n && old->sp[j] == sp && old->ip[j] == ip &&
            (!(old->flags[j] & NEED_BP) || old->bp[j] == bp)) {
            int m = walk_differs(old, j);
            int k = (m < 0 ? old->n : m) - j; /* frames j.. j+k-1 are as they were */
            int cut = n + k > max;
            if (cut)
                k = max - n;
            take(w, old, n, j, k);
            memcpy(&ips[n], &old->ip[j], (size_t)k * sizeof *ips);
            if (m < 0) { /* the rest of the stack, with what the last walk knew of RBP */
                known = n;
                n += k;
                end = cut ? 0 : old->end;
                break;
            }
            /* they part at frame m: go on from it, with RBP as a walk would have it there */
            for (int i = 0; i < k; i++) {
                w->bp[n + i] = bp;
                if (w->rbp_off[n + i])
                    bp = *(const uintptr_t *)(w->sp[n + i + 1] + w->rbp_off[n + i]);
            }
            n += k;
            if (cut || n == max)
                break;
            ip = old->ip[m];
            sp = old->sp[m];
            j = m + 1;
            first = 0;
        }
        ips[n] = (void *)ip;
        w->ip[n] = ip;
        w->sp[n] = sp;
        w->bp[n] = bp;
        mp_rule_t r = rule_of(t, ip, first);
        if (MP_UNLIKELY(r.kind != RULE_OK)) {
            if (r.kind != RULE_STOP)
                return -1;
            w->rbp_off[n] = 0;
            w->flags[n++] = 0;
            end = END_STOP;
            known = n;
            break;
        }
        uintptr_t cfa = rule_cfa(r, sp, bp, sp0);
        if (MP_UNLIKELY(!cfa))
            return -1;
        w->rbp_off[n] = r.rbp_off;
        w->flags[n++] = r.cfa_rbp ? CFA_RBP : 0;
        ip = leave_frame(r, cfa, &bp);
        sp = cfa;
        if (!ip) {
            w->sp[n] = cfa;
            end = END_ZERO;
            known = n;
            break;
        }
    }
    /* a walk cut at max is not kept: the frames past it are not known */
    w->n = end ? n : 0;
    w->end = end;
    need_bp(w, known);
    t->walks->last = !t->walks->last;
    return n;
}

/* A walk that stops at the frame whose CFA is `stop` (not included;
 * c->met says it was found), or at the outermost frame, into ips[] and
 * each frame's CFA into cfas[] (0 for an outermost frame whose rule says
 * so: not known); or, when a remembered walk answers, c points into it.
 * The last whole walk is not reused (the frames below a hooked call are
 * few, see shadow.c, and a cut walk tells nothing of what lies above), but
 * the rules of its first frames are. Returns 0, or -1 when a frame needs
 * libunwind. */
int mp_unwind_cut(mp_thread_t *t, void **ips, uintptr_t *cfas, int max, uintptr_t stop, mp_cut_t *c)
{
    unsigned gen = atomic_load_explicit(&mp_code_gen, memory_order_acquire);
    if (MP_UNLIKELY((!t->rules || t->rules_gen != gen) && unwind_setup(t, gen) != 0))
        return -1;
    uintptr_t ip, sp, bp;
    WALK_HERE(ip, sp, bp);
    uintptr_t sp0 = sp, ip0 = ip, bp0 = bp;
    *c = (mp_cut_t){ips, cfas, 0, 0, NULL};
    if (max > MP_NATIVE_MAX)
        max = MP_NATIVE_MAX;
    struct mp_walk_s *ws = t->walks;
    uint64_t h = (sp0 ^ stop) * 0x9e3779b97f4a7c15ull, tag = h | 1;
    _Static_assert(MEMO_SETS == 16, "the set is the hash's top 4 bits");
    memo_set_t *set = &ws->set[h >> 60];
    memo_t *ways = &ws->memo[MEMO_WAYS * (h >> 60)], *v = &ws->scratch;
    if (MP_UNLIKELY(ws->rest)) {
        ws->rest--;
        goto walk;
    }
    if (MP_UNLIKELY(++ws->looked == MEMO_WINDOW)) {
        if (ws->answered < MEMO_WINDOW / MEMO_MIN_HITS)
            ws->rest = MEMO_REST;
        ws->looked = ws->answered = 0;
    }
    for (unsigned p = 0; p < MEMO_WAYS; p++) {
        if (set->tag[p] != tag)
            continue;
        memo_t *o = &ways[set->slot[p]];
        if (o->sp0 != sp0 || o->stop != stop || o->ip0 != ip0 || (o->need_bp0 && o->bp0 != bp0) || o->n > max)
            continue;
        unsigned m = 0;
        while (m + 1 < o->n && *(const uintptr_t *)(o->cfas[m] - 8) == (uintptr_t)o->ips[m + 1])
            m++;
        if (m + 1 < o->n || *(const uintptr_t *)(o->cfas[m] - 8) != o->ip_stop)
            continue;
        unsigned b = 0;
        while (b < o->nbp && *(const uintptr_t *)o->bp_at[b] == o->bp_val[b])
            b++;
        if (b < o->nbp)
            continue;
        if (p)
            memo_front(set, p, tag);
        ws->answered++;
        *c = (mp_cut_t){o->ips, o->cfas, o->n, 1, o->leaf};
        return 0;
    }
    set->tag[MEMO_WAYS - 1] = 0;
    v = &ways[set->slot[MEMO_WAYS - 1]];
    /* the walk, written to the way used least lately (or to scratch) as it
     * goes, with no copy after, noting what it reads: bp_src is where RBP
     * was last loaded from (-1: it is the one the walk began with), used
     * has bit b when saved RBP b was used */
walk:;
    int n = 0, nbp = 0, bp_src = -1, need_bp0 = 0, keep = 1;
    unsigned used = 0;
    mp_rule_t *last = t->rule_mru + MRU; /* a frame's rule is a function of its IP alone */
    for (int first = 1; n < max; first = 0) {
        mp_rule_t r;
        if (n < LAST_CUT && last[n].ip == ip) {
            r = last[n];
        } else {
            r = rule_of(t, ip, first);
            if (n < LAST_CUT)
                last[n] = r;
        }
        if (MP_UNLIKELY(r.kind != RULE_OK)) {
            if (r.kind != RULE_STOP)
                return -1;
            ips[n] = (void *)ip;
            cfas[n++] = 0;
            break;
        }
        if (r.cfa_rbp) {
            if (bp_src < 0)
                need_bp0 = 1;
            else
                used |= 1u << bp_src;
        }
        uintptr_t cfa = rule_cfa(r, sp, bp, sp0);
        if (MP_UNLIKELY(!cfa))
            return -1;
        if (cfa == stop) {
            c->met = 1;
            break;
        }
        if (n < MEMO_FRAMES) {
            v->ips[n] = (void *)ip;
            v->cfas[n] = cfa;
        }
        ips[n] = (void *)ip;
        cfas[n++] = cfa;
        if (r.rbp_off) {
            if (nbp < MEMO_BPS) {
                uintptr_t at = cfa + (uintptr_t)(intptr_t)r.rbp_off;
                v->bp_at[nbp] = at;
                v->bp_val[nbp] = *(const uintptr_t *)at;
                bp_src = nbp++;
            } else {
                keep = 0;
            }
        }
        ip = leave_frame(r, cfa, &bp);
        sp = cfa;
        if (!ip)
            break;
    }
    c->n = n;
    if (c->met && keep && n > 0 && n <= MEMO_FRAMES && v != &ws->scratch) {
        unsigned k = 0; /* the saved RBPs used, in order */
        for (int b = 0; b < nbp; b++)
            if (used & (1u << b)) {
                v->bp_at[k] = v->bp_at[b];
                v->bp_val[k++] = v->bp_val[b];
            }
        for (unsigned l = 0; l < MP_CUT_LEAVES; l++)
            v->leaf[l].code = NULL;
        v->nbp = (uint8_t)k;
        v->n = (uint8_t)n;
        v->need_bp0 = (uint8_t)need_bp0;
        v->ip0 = ip0;
        v->stop = stop;
        v->bp0 = bp0;
        v->ip_stop = ip;
        v->sp0 = sp0;
        memo_front(set, MEMO_WAYS - 1, tag);
        c->leaf = v->leaf;
    }
    return 0;
}

