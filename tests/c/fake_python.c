/* fake_python.c - a program that looks like CPython 3.12 to memprof attach:
 * it exports Py_AddPendingCall and Py_Version (0x030c01f0), as a
 * libpython of that version does, and sleeps. Prints "pid N" on stderr. */
#include <stdio.h>
#include <unistd.h>

__attribute__((visibility("default"))) const unsigned long Py_Version = 0x030c01f0ul;

__attribute__((visibility("default"))) int Py_AddPendingCall(int (*func)(void *), void *arg)
{
    (void)func;
    (void)arg;
    return -1;
}

int main(void)
{
    fprintf(stderr, "pid %d\n", (int)getpid());
    fflush(stderr);
    sleep(60);
    return 0;
}
