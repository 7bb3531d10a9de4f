/* Branches: a switch on the low four bits of each of the 4096 input bytes, twelve cases doing
 * different arithmetic on an accumulator (a chain or tree of compares in BPF, which has no jump
 * tables). Returns the accumulator. */
#include "bench.h"

PROG(dispatch)
{
    const u8 *p = data;
    u64 acc = 0x12345678;
    for (int i = 0; i < 4096; i++) {
        u64 b = p[i];
        switch (b & 15) {
        case 0: acc += b; break;
        case 1: acc -= b * 3; break;
        case 2: acc ^= b << 17; break;
        case 3: acc *= 5; break;
        case 4: acc = (acc << 3) | (acc >> 61); break;
        case 5: acc += i; break;
        case 6: acc ^= acc >> 11; break;
        case 7: acc |= b << 40; break;
        case 8: acc &= ~(b << 8); break;
        case 9: acc -= acc >> 7; break;
        case 10: acc += 0x9e3779b97f4a7c15ull; break;
        case 11: acc ^= (u64)i << 32; break;
        default: acc++; break;
        }
    }
    return acc;
}
