/* Sorting: insertion sort of 256 32-bit numbers in place. */
#include "bench.h"

PROG(sort)
{
    u32 *a = data;
    for (int i = 1; i < 256; i++) {
        u32 v = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
    return a[0] + a[255];
}
