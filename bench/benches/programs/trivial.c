/* The cost of a call: a program that returns 0 at once. */
#include "bench.h"

PROG(trivial)
{
    return 0;
}
