/* Byte loads and stores: copies the first 2048 input bytes over the other 2048, one byte at a time.
 * Returns a checksum of a few copied bytes. Running it again on its own output gives the same result. */
#include "bench.h"

PROG(copy)
{
    u8 *p = data;
    NO_UNROLL
    for (int i = 0; i < 2048; i++)
        p[2048 + i] = p[i];
    return (u64)p[2048] << 24 | (u64)p[2048 + 777] << 16 | (u64)p[2048 + 1500] << 8 | p[4095];
}
