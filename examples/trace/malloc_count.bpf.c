/* Counts malloc calls per thread: a uprobe on libc's malloc adds 1 to the calling thread's entry of
 * a hash map (keyed by the thread id), and prints a line for each thread's first call. Allocations
 * of 64 KiB or more are reported as ring-buffer records: the thread id (4 bytes), 4 bytes of zeroes
 * and the size (8 bytes).
 *
 *   ebpf-vm trace examples/trace/malloc_count.bpf.o -- ./malloc_threads */
#include <linux/types.h>
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __u64);
} malloc_calls SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} large_mallocs SEC(".maps");

struct large_malloc {
    __u32 tid;
    __u32 zero;
    __u64 size;
};

SEC("uprobe/libc.so.6:malloc")
int BPF_KPROBE(count_malloc, __u64 size)
{
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    if (size >= 64 * 1024) {
        struct large_malloc *record = bpf_ringbuf_reserve(&large_mallocs, sizeof(*record), 0);
        if (record) {
            record->tid = tid;
            record->zero = 0;
            record->size = size;
            bpf_ringbuf_submit(record, 0);
        }
    }
    __u64 *calls = bpf_map_lookup_elem(&malloc_calls, &tid);
    if (calls) {
        __sync_fetch_and_add(calls, 1);
        return 0;
    }
    __u64 one = 1;
    bpf_map_update_elem(&malloc_calls, &tid, &one, BPF_NOEXIST);
    bpf_printk("thread %u: first malloc (%llu bytes)", tid, size);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
