/* Byte loads and compares: compares the first 2048 input bytes with the other 2048, one pair at a
 * time, walking the whole range. Returns the number of equal pairs times 2^32 plus the sum of their
 * offsets. */
#include "bench.h"

PROG(compare)
{
    const u8 *p = data;
    u64 equal = 0, offsets = 0;
    NO_UNROLL
    for (u32 i = 0; i < 2048; i++) {
        if (p[i] == p[2048 + i]) {
            equal++;
            offsets += i;
        }
    }
    return equal << 32 | offsets;
}
