/* BPF-to-BPF calls: a small mixing function kept out of line (a subprogram in BPF), called once for
 * each of the first 1024 input bytes. Returns the mixed value. */
#include "bench.h"

static __attribute__((noinline)) u64 mix(u64 h, u64 x)
{
    h ^= x;
    h *= 0x100000001b3ull;
    return h ^ (h >> 29);
}

PROG(calls)
{
    const u8 *p = data;
    u64 h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 1024; i++)
        h = mix(h, p[i]);
    return h;
}
