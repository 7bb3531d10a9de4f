/* Hash map helpers: counts the 512 input u32 words by their low byte in a BPF hash map (lookup, then
 * increment in place or insert with BPF_NOEXIST). The map outlives a call, so the program first
 * deletes the 256 keys it can use: the result depends on this call's input only. Returns the number
 * of keys inserted times 2^32 plus the sum, over the words, of their key's count after counting it. */
#include "bench.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, u32);
    __type(value, u64);
} counts SEC(".maps");

PROG(hashmap)
{
    const u32 *w = data;
    for (u32 key = 0; key < 256; key++)
        bpf_map_delete_elem(&counts, &key);
    u64 inserted = 0, sum = 0;
    for (int i = 0; i < 512; i++) {
        u32 key = w[i] & 255;
        u64 *v = bpf_map_lookup_elem(&counts, &key);
        if (v) {
            *v += 1;
            sum += *v;
        } else {
            u64 one = 1;
            if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) == 0) {
                inserted++;
                sum += 1;
            }
        }
    }
    return inserted << 32 | sum;
}
