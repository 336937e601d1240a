/* errors.c - memprof_strerror(), generated from MEMPROF_ERRNO_MAP. */
#include "memprof/memprof.h"

const char *memprof_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define MP_XX_(name, value, msg) \
    case value:                  \
        return msg;
        MEMPROF_ERRNO_MAP(MP_XX_)
#undef MP_XX_
    }
    return "unknown error";
}
