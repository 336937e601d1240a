/* xxhash32.h - XXH32 (the checksum of the LZ4 frame format). Pure function,
 * no allocation: safe inside the profiled process. */
#ifndef MP_XXHASH32_H
#define MP_XXHASH32_H

#include <stddef.h>
#include <stdint.h>

uint32_t mp_xxh32(const void *data, size_t len, uint32_t seed);

#endif
