/* Arithmetic: total Collatz steps of the numbers below 3000. */
#include "bench.h"

PROG(arith)
{
    u64 total = 0;
    for (u64 n = 1; n < 3000; n++) {
        u64 x = n;
        while (x != 1) {
            x = (x & 1) ? 3 * x + 1 : x >> 1;
            total++;
        }
    }
    return total;
}
