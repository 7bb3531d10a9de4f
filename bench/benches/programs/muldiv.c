/* 64-bit multiplication, division and modulo: over the 512 u64 words of the input, with divisors
 * taken from the neighbouring word and made non-zero (odd). Returns the accumulated value. */
#include "bench.h"

PROG(muldiv)
{
    const u64 *w = data;
    u64 acc = 1;
    for (u32 i = 0; i < 512; i++) {
        u64 x = w[i];
        u64 next = w[(i + 1) & 511];
        u64 d = (next >> 40) | 1;       /* up to 24 bits */
        u64 m = (next & 0xffffffff) | 1; /* up to 32 bits */
        acc = acc * 0x9e3779b97f4a7c15ull + x / d;
        acc ^= (x % m) * (x >> 32);
        acc += acc / (m | 0x100000000ull);
    }
    return acc;
}
