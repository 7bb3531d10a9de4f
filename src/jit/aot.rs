//! Ahead-of-time compilation: a program compiled for any target Cranelift supports (x86_64, aarch64,
//! riscv64, s390x) into a relocatable object file.
//!
//! Each program becomes an exported function `NAME(ctx, r1, r2, r3, r4, r5, fp) -> r0` (see
//! [`ContextLayout`]); the object imports the four runtime functions `ebpf_vm_call_helper`,
//! `ebpf_vm_region_check`, `ebpf_vm_tail_call` and `ebpf_vm_packet_load`, which the host that links it
//! provides with the ABI documented on [`ContextLayout`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::str::FromStr;

use cranelift_codegen::settings::{self, Configurable};
use cranelift_module::{default_libcall_names, Linkage};
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::translate::{self, Options};
use super::JitError;
use crate::link::{Env, Linked};
use crate::program::Program;

/// The context compiled code receives, as a C struct of `uint64_t` fields in this order: `mem_base`,
/// `mem_len`, `stack_base` (lowest address of the 4096-byte stack), `stack_hi` (one past its highest;
/// the entry's `fp`), `budget`, `status` (0 = ok; 1 out of bounds, 2 misaligned atomic, 3 budget, 4 call
/// depth, 5 host error, 6 exit with r0 = 0), `err_pc`, `err_addr`, `err_len`, `err_write`; compiled code
/// reads and writes only these ten fields, so the host may append whatever its runtime functions need. The runtime functions: `u64 ebpf_vm_call_helper(ctx, pc, which, r1..r5, fp)` (helper
/// id in the low 32 bits of `which`), `u64 ebpf_vm_region_check(ctx, addr, len, write)` (1 if allowed),
/// `u64 ebpf_vm_tail_call(ctx, map, index)` (the target's entry, or 0), and
/// `u64 ebpf_vm_packet_load(ctx, offset, size)`. `bpf_loop` runs in the compiled code; each step of
/// `bpf_for_each_map_elem` is a call of `ebpf_vm_call_helper` with bit 62 of `pc` set, `r1` the map,
/// `r2` the elements visited so far and `r3` the callback's frame pointer: the host copies the next
/// key to the 512 bytes below that pointer and returns the value's address, or 0 when the walk is over.
pub struct ContextLayout;

/// Compiles `programs` (name, program) for `target` (a target triple such as
/// `aarch64-unknown-linux-gnu`) into an ELF (or the target's) object file. `env` resolves helper
/// ids and map references; tail calls reach no program here (the host's `ebpf_vm_tail_call` decides).
pub fn compile_object(
    programs: &[(&str, &Program)],
    env: &Env,
    target: &str,
    checked: bool,
) -> Result<Vec<u8>, JitError> {
    let isa_for = |opt_level: &str| {
        let mut flags = settings::builder();
        let set =
            |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| JitError::Codegen(format!("{e}")));
        set(&mut flags, "opt_level", opt_level)?;
        set(&mut flags, "is_pic", "true")?;
        // As for the JIT: no consistency check of Cranelift's own IR after every pass.
        set(&mut flags, "enable_verifier", "false")?;
        // `isa::lookup_by_name` panics on a malformed triple: parse it first.
        let triple =
            target_lexicon::Triple::from_str(target).map_err(|e| JitError::Target(format!("{target}: {e}")))?;
        cranelift_codegen::isa::lookup(triple)
            .map_err(|e| JitError::Target(format!("{target}: {e}")))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| JitError::Codegen(format!("{e}")))
    };
    let isa = isa_for("speed")?;
    let quick = isa_for("none")?;
    let big_endian = isa.endianness() == cranelift_codegen::ir::Endianness::Big;
    let builder = ObjectBuilder::new(isa, "ebpf_vm_aot", default_libcall_names())
        .map_err(|e| JitError::Codegen(format!("{e}")))?;
    let mut module = ObjectModule::new(builder);
    let rt = translate::declare_runtime(&mut module)?;
    for (name, program) in programs {
        let linked = Linked::new((*program).clone(), alloc::vec::Vec::new(), env.clone())?;
        // The host's runtime functions decide about host regions and granted memory.
        let opts = Options {
            checked,
            metered: false,
            big_endian,
            uses_stack: linked.uses_stack(),
            may_grant: false,
            far_calls: false,
            verified: false,
        };
        let program = linked.entry_program();
        let alt = translate::AltIsas { large: &*quick, small: None };
        translate::compile_program(&mut module, program, None, &rt, opts, name, Linkage::Export, alt)?;
    }
    let product = module.finish();
    product.emit().map_err(|e| JitError::Codegen(format!("{e}")))
}

/// Names of targets this build can compile for.
pub fn supported_targets() -> Vec<String> {
    ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "riscv64gc-unknown-linux-gnu", "s390x-unknown-linux-gnu"]
        .iter()
        .filter(|t| {
            target_lexicon::Triple::from_str(t).ok().is_some_and(|tr| cranelift_codegen::isa::lookup(tr).is_ok())
        })
        .map(|t| String::from(*t))
        .collect()
}
