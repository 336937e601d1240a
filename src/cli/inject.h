/* inject.h - running code in another process with ptrace (x86-64 Linux),
 * for `memprof attach` and `memprof detach`. No debugger: gdb 13 fails on
 * these machines when it calls a function in its inferior (docs/attach.md).
 *
 * One thread of the target (its main thread) is stopped; its registers and
 * its whole extended state (x87/SSE/AVX/AVX-512, NT_X86_XSTATE) are saved;
 * system calls and function calls are run in it one at a time, each checked
 * (the stop it must end in, the address it must end at); then everything is
 * put back and the thread released. Other threads keep running. A signal
 * that arrives meanwhile is delivered on release. Functions return 0, or -1
 * with one line in `err` saying what went wrong. */
#ifndef MP_INJECT_H
#define MP_INJECT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

typedef struct {
    pid_t pid;
    struct user_regs_struct regs;   /* as found */
    unsigned char *xstate;          /* as found: NT_X86_XSTATE (else NT_PRFPREG) */
    size_t xstate_len;
    int xstate_note;
    int pending_sig;                /* arrived while stopped: delivered on release */
    uint64_t syscall_insn;          /* a `syscall` instruction in the target's libc */
    int seized;                     /* traced by us: the release detaches */
    int saved;                      /* regs and xstate read: the release puts them back */
} mp_inject_t;

#define MP_ERRLEN 512

/* Stops the thread `pid` (the process's main thread) and saves its state.
 * Errors name the cause: no such process, permission (ptrace_scope,
 * CAP_SYS_PTRACE, another tracer), a zombie. */
int mp_inject_seize(mp_inject_t *t, pid_t pid, char *err);
/* "; ..." what to do about a refused ptrace (Yama's ptrace_scope, another
 * user, CAP_SYS_PTRACE), for a message. */
const char *mp_inject_perm_hint(void);
/* Runs system call `nr` in the stopped thread; *ret is its return value
 * (a negative errno on failure). */
int mp_inject_syscall(mp_inject_t *t, long nr, const long args[6], long *ret, char *err);
/* Calls fn(a1, a2) in the stopped thread on a stack below its own (past
 * the red zone), with a return address of 0 to catch its return; *ret is
 * rax. Gives up after timeout_ms (the thread is stopped again either way). */
int mp_inject_call(mp_inject_t *t, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t *ret, int timeout_ms, char *err);
/* Puts the registers and the extended state back and lets the thread go. */
int mp_inject_release(mp_inject_t *t, char *err);

/* The target's memory (process_vm_readv/writev). 0 or -1 (errno set). */
int mp_remote_read(pid_t pid, uint64_t addr, void *buf, size_t n);
int mp_remote_write(pid_t pid, uint64_t addr, const void *buf, size_t n);

/* Address in process `pid` of the dynamic symbol `name` defined by a mapped
 * object whose path contains `object` (any object when NULL), and that
 * object's path. 0, or -1 when no object of it defines the name. */
int mp_proc_symbol(pid_t pid, const char *object, const char *name, uint64_t *addr, char *path, size_t len);
/* Whether a mapped object's path contains `object`; its path. */
int mp_proc_has_object(pid_t pid, const char *object, char *path, size_t len);
/* A `syscall` instruction in the executable code of process pid's libc. */
int mp_proc_syscall_insn(pid_t pid, uint64_t *addr);

/* The loader the target runs as a pending call: int loader(req) that calls
 * req->dlopen_fn(req->library, RTLD_NOW), req->dlsym_fn(handle, req->entry)
 * and entry(req) (memprof/control.h's request layout); sets req->done to 2
 * when either fails. Returns its size (at most `len`). */
size_t mp_attach_loader_code(unsigned char *buf, size_t len);

#endif
