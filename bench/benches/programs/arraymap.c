/* Array map lookups: counts the first 1024 input bytes by their low six bits in a 64-entry BPF array
 * map (lookup, null check, increment). The map outlives a call, so the program first zeroes the 64
 * counters: the result depends on this call's input only. Returns the sum, over the bytes, of their
 * counter after counting it, times 2^8, plus the final counter of the first byte's slot. */
#include "bench.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 64);
    __type(key, u32);
    __type(value, u64);
} counters SEC(".maps");

PROG(arraymap)
{
    const u8 *p = data;
    for (u32 key = 0; key < 64; key++) {
        u64 *v = bpf_map_lookup_elem(&counters, &key);
        if (v)
            *v = 0;
    }
    u64 sum = 0;
    for (int i = 0; i < 1024; i++) {
        u32 key = p[i] & 63;
        u64 *v = bpf_map_lookup_elem(&counters, &key);
        if (v) {
            *v += 1;
            sum += *v;
        }
    }
    u32 first = p[0] & 63;
    u64 *v = bpf_map_lookup_elem(&counters, &first);
    return sum << 8 | (v ? *v : 0);
}
