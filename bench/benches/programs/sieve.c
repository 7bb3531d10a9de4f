/* Stack arrays and bit operations: a sieve of Eratosthenes on a 504-byte bitmap (the BPF stack has 512
 * bytes a frame), below a limit from 3000 to 3945 set by the first input byte. Returns the number of
 * primes below the limit. */
#include "bench.h"

PROG(sieve)
{
    const u8 *p = data;
    u32 limit = 3000 + (p[0] & 0x3f) * 15;
    u64 composite[63]; /* bit n: n is not prime; 4032 bits */
    for (int w = 0; w < 63; w++)
        composite[w] = 0;
    /* i < 64 (63 * 63 > 3945) bounds i for a verifier, which cannot take a root of i * i. */
    for (u32 i = 2; i < 64 && i * i < limit; i++) {
        if (composite[i >> 6] & (1ull << (i & 63)))
            continue;
        for (u32 j = i * i; j < limit; j += i)
            composite[j >> 6] |= 1ull << (j & 63);
    }
    u64 primes = 0;
    for (u32 n = 2; n < limit; n++)
        primes += !(composite[n >> 6] & (1ull << (n & 63)));
    return primes;
}
