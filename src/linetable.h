/* linetable.h - instruction offset -> source line, from CPython 3.11's
 * location table (co_linetable). Pure and allocation-free: the recorder
 * calls it once per new stack node, inside the profiled process. */
#ifndef MP_LINETABLE_H
#define MP_LINETABLE_H

#include <stddef.h>
#include <stdint.h>

/* Line of instruction `instr` (in 2-byte code units), or -1 when the table
 * gives none (a no-location entry, an offset past the end, a bad table). */
int mp_linetable_line(const uint8_t *table, size_t len, int firstlineno, uint32_t instr);

#endif
