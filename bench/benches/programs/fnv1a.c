/* Hashing: FNV-1a over 4096 bytes. */
#include "bench.h"

PROG(fnv1a)
{
    const u8 *p = data;
    u32 h = 2166136261u;
    for (int i = 0; i < 4096; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}
