/* Arithmetic: total Collatz steps of the numbers below 3000 (none takes more than 216; the cap of 1000
 * steps a number is what lets a verifier prove that the inner loop ends). */
#include "bench.h"

PROG(arith)
{
    u64 total = 0;
    for (u64 n = 1; n < 3000; n++) {
        u64 x = n;
        for (u32 steps = 0; x != 1 && steps < 1000; steps++) {
            x = (x & 1) ? 3 * x + 1 : x >> 1;
            total++;
        }
    }
    return total;
}
