/* Runs programs compiled ahead of time by ebpf_vm::jit::aot, with the runtime functions the compiled
 * code imports. The test that builds this file supplies `tests[]` and `test_count`. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    uint64_t mem_base, mem_len, stack_base, stack_hi, budget, status;
    uint64_t err_pc, err_addr, err_len, err_write;
    void *host;
} ctx_t;

typedef uint64_t (*entry_t)(ctx_t *, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);

struct test {
    const char *name;
    entry_t entry;
    const uint8_t *mem;
    uint64_t mem_len;
    uint64_t expected;
};

extern const struct test tests[];
extern const unsigned test_count;

#define CALLX_FLAG (1ull << 63)
#define STATUS_HOST_ERROR 5
#define STATUS_EXIT_ZERO 6

/* Helper 5 of the conformance suite: returns its first argument. */
uint64_t ebpf_vm_call_helper(ctx_t *c, uint64_t pc, uint64_t which, uint64_t r1, uint64_t r2, uint64_t r3,
                             uint64_t r4, uint64_t r5, uint64_t fp)
{
    (void)r2; (void)r3; (void)r4; (void)r5; (void)fp;
    uint64_t id = (pc & CALLX_FLAG) ? which : (which & 0xffffffffu);
    if (id == 5)
        return r1;
    c->status = STATUS_HOST_ERROR;
    c->err_pc = pc & ~CALLX_FLAG;
    return 0;
}

uint64_t ebpf_vm_region_check(ctx_t *c, uint64_t addr, uint64_t len, uint64_t write)
{
    (void)c; (void)addr; (void)len; (void)write;
    return 0;
}

uint64_t ebpf_vm_tail_call(ctx_t *c, uint64_t map, uint64_t index)
{
    (void)c; (void)map; (void)index;
    return 0;
}

uint64_t ebpf_vm_packet_load(ctx_t *c, int64_t offset, uint64_t size)
{
    if (offset < 0 || (uint64_t)offset + size > c->mem_len) {
        c->status = STATUS_EXIT_ZERO;
        return 0;
    }
    const uint8_t *p = (const uint8_t *)(uintptr_t)(c->mem_base + (uint64_t)offset);
    uint64_t v = 0;
    for (uint64_t i = 0; i < size; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint8_t stack[4096] __attribute__((aligned(16)));
static uint8_t mem[65536] __attribute__((aligned(16)));

int main(void)
{
    unsigned failed = 0;
    for (unsigned i = 0; i < test_count; i++) {
        const struct test *t = &tests[i];
        memcpy(mem, t->mem, t->mem_len);
        memset(stack + 4096 - 512, 0, 512);
        ctx_t c = {0};
        c.mem_base = t->mem_len ? (uint64_t)(uintptr_t)mem : 0;
        c.mem_len = t->mem_len;
        c.stack_base = (uint64_t)(uintptr_t)stack;
        c.stack_hi = c.stack_base + sizeof(stack);
        uint64_t r0 = t->entry(&c, c.mem_base, c.mem_len, 0, 0, 0, c.stack_hi);
        if (c.status == STATUS_EXIT_ZERO) {
            r0 = 0;
            c.status = 0;
        }
        int ok = c.status == 0 && r0 == t->expected;
        failed += !ok;
        printf("%s %s r0=0x%llx expected=0x%llx status=%llu pc=%llu\n", ok ? "ok" : "FAIL", t->name,
               (unsigned long long)r0, (unsigned long long)t->expected, (unsigned long long)c.status,
               (unsigned long long)c.err_pc);
    }
    printf("%u passed, %u failed\n", test_count - failed, failed);
    return failed != 0;
}
