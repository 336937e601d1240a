/* test_inject.c - ptrace injection (src/cli/inject.c) on a forked child
 * (same address space layout, so our addresses are its addresses): a
 * system call and a function call run in it, an interrupted sleep is
 * restarted, a vector register the call changed comes back; and the
 * loader code of memprof attach, run here, loads a library and calls its
 * entry. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "inject.h"
#include "memprof/control.h"

static const char hello[] = "hello, injected world";

/* Sleeps 400 ms in one nanosleep: it is interrupted by the injection and
 * must be restarted, never fail with EINTR. */
static void sleeper(int ready_fd)
{
    (void)!write(ready_fd, "r", 1);
    struct timespec ts = {0, 400 * 1000000};
    _exit(nanosleep(&ts, NULL) != 0 ? 3 : 0);
}

/* Spins with a pattern in xmm7, checking it at every turn: the injected
 * call zeroes xmm7, so only a restored extended state lets it finish. */
static void spinner(int ready_fd)
{
    (void)!write(ready_fd, "r", 1);
    unsigned long n = 3000000000ul, pattern = 0x5a5a1234abcd9876ul, bad;
    __asm__ volatile("movq %[v], %%xmm7\n"
                     "1: movq %%xmm7, %%rax\n"
                     "cmp %[v], %%rax\n"
                     "jne 2f\n"
                     "dec %[n]\n"
                     "jnz 1b\n"
                     "xor %%eax, %%eax\n"
                     "jmp 3f\n"
                     "2: mov $1, %%eax\n"
                     "3:"
                     : "=&a"(bad), [n] "+r"(n)
                     : [v] "r"(pattern)
                     : "xmm7", "cc");
    _exit(bad ? 4 : 0);
}

/* Injected into the spinner: what any called code may do to a caller-saved
 * vector register. */
static unsigned long clobber_xmm7(void)
{
    __asm__ volatile("pxor %%xmm7, %%xmm7" ::: "xmm7");
    return 77;
}

static pid_t start(void (*fn)(int))
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        fn(p[1]);
    }
    close(p[1]);
    char c;
    cr_assert_eq(read(p[0], &c, 1), 1);
    close(p[0]);
    usleep(50000); /* in its sleep, or its loop */
    return pid;
}

static int finish(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(inject, syscall_and_call_in_a_sleeping_child)
{
    pid_t pid = start(sleeper);
    mp_inject_t t;
    char err[MP_ERRLEN];
    cr_assert_eq(mp_inject_seize(&t, pid, err), 0, "%s", err);
    long r = 0, none[6] = {0};
    cr_assert_eq(mp_inject_syscall(&t, SYS_getpid, none, &r, err), 0, "%s", err);
    cr_expect_eq(r, pid);
    long map[6] = {0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0};
    cr_assert_eq(mp_inject_syscall(&t, SYS_mmap, map, &r, err), 0, "%s", err);
    cr_assert((unsigned long)r < -4096ul, "mmap failed: %ld", r);
    uint64_t page = (uint64_t)r, got = 0;
    cr_assert_eq(mp_remote_write(pid, page, hello, sizeof hello), 0);
    cr_assert_eq(mp_inject_call(&t, (uint64_t)(uintptr_t)strlen, page, 0, &got, 2000, err), 0, "%s", err);
    cr_expect_eq(got, strlen(hello));
    char back[sizeof hello];
    cr_assert_eq(mp_remote_read(pid, page, back, sizeof back), 0);
    cr_expect_str_eq(back, hello);
    cr_assert_eq(mp_inject_release(&t, err), 0, "%s", err);
    cr_expect_eq(finish(pid), 0, "the child's nanosleep failed (3) or it died");
}

Test(inject, the_extended_state_comes_back)
{
    pid_t pid = start(spinner);
    mp_inject_t t;
    char err[MP_ERRLEN];
    uint64_t got = 0;
    cr_assert_eq(mp_inject_seize(&t, pid, err), 0, "%s", err);
    cr_assert_eq(mp_inject_call(&t, (uint64_t)(uintptr_t)clobber_xmm7, 0, 0, &got, 2000, err), 0, "%s", err);
    cr_expect_eq(got, 77);
    cr_assert_eq(mp_inject_release(&t, err), 0, "%s", err);
    int rc = finish(pid);
    cr_expect_eq(rc, 0, "the child saw xmm7 change (4) or died (%d)", rc);
}

Test(inject, seize_errors_say_why)
{
    mp_inject_t t;
    char err[MP_ERRLEN];
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    cr_expect_eq(mp_inject_seize(&t, pid, err), -1);
    mp_inject_release(&t, err);
}

/* The loader, run here on a request naming libc's getpid: dlopen, dlsym,
 * the entry tail-called (the loader returns what it returns; done stays 0:
 * getpid does not set it); with a name that is not there, done is 2. */
Test(inject, loader_code_loads_and_calls)
{
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(code, MAP_FAILED);
    size_t n = mp_attach_loader_code(code, 4096);
    cr_assert(n > 40 && n < 128);
    cr_assert_eq(mprotect(code, 4096, PROT_READ | PROT_EXEC), 0);
    int (*loader)(memprof_attach_req_t *) = (int (*)(memprof_attach_req_t *))(void *)code;
    static memprof_attach_req_t req;
    req.dlopen_fn = (uint64_t)(uintptr_t)dlopen;
    req.dlsym_fn = (uint64_t)(uintptr_t)dlsym;
    strcpy(req.library, "libc.so.6");
    strcpy(req.entry, "getpid");
    cr_expect_eq(loader(&req), getpid());
    cr_expect_eq(req.done, 0);
    strcpy(req.entry, "no_such_entry_here");
    cr_expect_eq(loader(&req), 0);
    cr_expect_eq(req.done, 2);
    req.done = 0;
    strcpy(req.library, "/no/such/libmemprof.so");
    cr_expect_eq(loader(&req), 0);
    cr_expect_eq(req.done, 2);
    munmap(code, 4096);
}

Test(inject, finds_symbols_of_a_process)
{
    uint64_t addr = 0, sys = 0;
    char path[4096];
    cr_assert_eq(mp_proc_symbol(getpid(), "/libc.so", "dlopen", &addr, path, sizeof path), 0);
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD); /* its own dlopen, not a sanitizer's */
    cr_assert_not_null(libc);
    cr_expect_eq(addr, (uint64_t)(uintptr_t)dlsym(libc, "dlopen"), "dlopen at %#lx", (unsigned long)addr);
    dlclose(libc);
    cr_expect(strstr(path, "libc.so") != NULL);
    cr_expect_eq(mp_proc_symbol(getpid(), NULL, "no_such_symbol_anywhere", &addr, NULL, 0), -1);
    cr_assert_eq(mp_proc_syscall_insn(getpid(), &sys), 0);
    cr_expect_eq(((const unsigned char *)(uintptr_t)sys)[0], 0x0f);
    cr_expect_eq(((const unsigned char *)(uintptr_t)sys)[1], 0x05);
}
