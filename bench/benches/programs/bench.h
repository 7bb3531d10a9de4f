/* Shared by the benchmark programs, which are compiled twice: for BPF (clang -target bpf, the objects
 * committed beside this file) and natively (by build.rs with the `native-baseline` feature).
 * Sizes are fixed because rbpf does not pass the input length in r2. */
#ifdef __bpf__
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
typedef __u64 u64;
typedef __u32 u32;
typedef __u16 u16;
typedef __u8 u8;
#define PROG(name) SEC("socket") u64 name(void *data, u64 len)
#else
#include <stdint.h>
#include <stddef.h>
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;
#define PROG(name) u64 native_##name(__attribute__((unused)) void *data, __attribute__((unused)) u64 len)

/* Native stand-ins for the BPF maps, enough for the programs here: a hash map and an array map with
 * u32 keys and u64 values, at most one of each per program. A map's declaration keeps only its
 * description (kind and size, read back with sizeof); the contents live in the static tables below,
 * one set per program file. The map programs clear the entries they use at their start (in BPF too,
 * where maps outlive a call), so a call's result never depends on the calls before it. */
#define SEC(name)
#define __uint(name, val) int(*name)[val]
#define __type(name, val) __typeof__(val) *name
enum { BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2 };
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };

#define NATIVE_MAP_MAX 256 /* the most entries a native map holds */
#define NATIVE_HASH_SLOTS 512 /* open addressing with linear probing, at most half full */

static struct {
    u32 count;
    u8 used[NATIVE_HASH_SLOTS];
    u32 key[NATIVE_HASH_SLOTS];
    u64 value[NATIVE_HASH_SLOTS];
} native_hash;
static u64 native_array[NATIVE_MAP_MAX];

static inline u32 native_hash_home(u32 key)
{
    return (key * 2654435761u) >> 23; /* the top 9 bits: a slot of 512 */
}

/* The slot holding `key`, or else the free slot where the probe stopped. */
static inline u32 native_hash_find(u32 key)
{
    u32 i = native_hash_home(key);
    while (native_hash.used[i] && native_hash.key[i] != key)
        i = (i + 1) % NATIVE_HASH_SLOTS;
    return i;
}

static inline void *native_map_lookup(int kind, u32 max, const u32 *key)
{
    if (kind == BPF_MAP_TYPE_ARRAY)
        return *key < max && *key < NATIVE_MAP_MAX ? &native_array[*key] : NULL;
    u32 i = native_hash_find(*key);
    return native_hash.used[i] ? &native_hash.value[i] : NULL;
}

static inline long native_map_update(int kind, u32 max, const u32 *key, const u64 *value, u64 flags)
{
    if (kind == BPF_MAP_TYPE_ARRAY) {
        if (*key >= max || *key >= NATIVE_MAP_MAX)
            return -7; /* -E2BIG */
        native_array[*key] = *value;
        return 0;
    }
    u32 i = native_hash_find(*key);
    if (native_hash.used[i] ? flags == BPF_NOEXIST : flags == BPF_EXIST)
        return native_hash.used[i] ? -17 : -2; /* -EEXIST, -ENOENT */
    if (!native_hash.used[i]) {
        if (native_hash.count >= max)
            return -7; /* -E2BIG */
        native_hash.count++;
        native_hash.used[i] = 1;
        native_hash.key[i] = *key;
    }
    native_hash.value[i] = *value;
    return 0;
}

static inline long native_map_delete(int kind, const u32 *key)
{
    if (kind == BPF_MAP_TYPE_ARRAY)
        return -22; /* -EINVAL, as for BPF array maps */
    u32 i = native_hash_find(*key);
    if (!native_hash.used[i])
        return -2; /* -ENOENT */
    native_hash.count--;
    /* Backward-shift deletion: move up the entries after the hole whose probe passed through it. */
    for (u32 j = i;;) {
        native_hash.used[i] = 0;
        for (;;) {
            j = (j + 1) % NATIVE_HASH_SLOTS;
            if (!native_hash.used[j])
                return 0;
            u32 home = native_hash_home(native_hash.key[j]);
            /* The entry at j stays unless its home is cyclically outside (i, j]. */
            int stays = i < j ? (home > i && home <= j) : (home > i || home <= j);
            if (!stays)
                break;
        }
        native_hash.used[i] = 1;
        native_hash.key[i] = native_hash.key[j];
        native_hash.value[i] = native_hash.value[j];
        i = j;
    }
}

#define NATIVE_MAP_KIND(map) ((int)(sizeof(*(map)->type) / sizeof(int)))
#define NATIVE_MAP_MAX_ENTRIES(map) ((u32)(sizeof(*(map)->max_entries) / sizeof(int)))
#define bpf_map_lookup_elem(map, key) native_map_lookup(NATIVE_MAP_KIND(map), NATIVE_MAP_MAX_ENTRIES(map), (key))
#define bpf_map_update_elem(map, key, value, flags)                                                       \
    native_map_update(NATIVE_MAP_KIND(map), NATIVE_MAP_MAX_ENTRIES(map), (key), (value), (flags))
#define bpf_map_delete_elem(map, key) native_map_delete(NATIVE_MAP_KIND(map), (key))
#endif

/* Keeps the next loop a loop of single steps (clang; other compilers choose for themselves). */
#ifdef __clang__
#define NO_UNROLL _Pragma("clang loop unroll(disable)")
#else
#define NO_UNROLL
#endif
