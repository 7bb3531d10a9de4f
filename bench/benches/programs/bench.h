/* Shared by the benchmark programs, which are compiled twice: for BPF (clang -target bpf, the objects
 * committed beside this file) and natively (by build.rs with the `native-baseline` feature).
 * Sizes are fixed because rbpf does not pass the input length in r2. */
#ifdef __bpf__
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
typedef __u64 u64;
typedef __u32 u32;
typedef __u16 u16;
typedef __u8 u8;
#define PROG(name) SEC("socket") u64 name(void *data, u64 len)
#else
#include <stdint.h>
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;
#define PROG(name) u64 native_##name(__attribute__((unused)) void *data, __attribute__((unused)) u64 len)
#endif
