//! The iovisor/ubpf eBPF runtime (C), for the benches to run beside ours: its interpreter and its
//! x86-64/arm64 JIT, through declarations written here of the few functions of its public header
//! (`vm/inc/ubpf.h`) this wrapper uses. `build.rs` links it when `UBPF_DIR` names a ubpf checkout
//! built with its own CMake.
//!
//! What ubpf runs: programs without maps (its loader refuses `lddw` with a source register, such as the
//! map-fd pseudo `src=1`, and no helpers are registered here), with or without bpf-to-bpf calls (at
//! most 8 frames deep). Its stack is 4096 bytes (`UBPF_EBPF_STACK_SIZE`, fixed when ubpf is built):
//! each frame gets 512 bytes of it here (by default ubpf gives a caller's frame 256 bytes, so that a
//! callee's frame would overlap the lower half of a caller's that uses 512). Its interpreter checks
//! every load and store against the input and the stack (ubpf's default); its JIT checks none, hence
//! [`Ubpf::jit`](crate::ubpf::Ubpf::jit) is `unsafe`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::{self, NonNull};

/// Declarations of ubpf's C interface, after `vm/inc/ubpf.h`.
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    use std::marker::{PhantomData, PhantomPinned};

    /// `struct ubpf_vm`: opaque, only ever behind a pointer.
    #[repr(C)]
    pub struct UbpfVm {
        _opaque: [u8; 0],
        _not_send_sync_unpin: PhantomData<(*mut u8, PhantomPinned)>,
    }

    /// `ubpf_jit_fn`: JIT-compiled code in basic mode (ubpf gives it a stack); returns r0.
    pub type JitFn = unsafe extern "C" fn(mem: *mut c_void, mem_len: usize) -> u64;

    /// `stack_usage_calculator_t`: the stack bytes of the function that starts at slot `pc`.
    pub type StackUsageCalculator = unsafe extern "C" fn(vm: *const UbpfVm, pc: u16, cookie: *mut c_void) -> c_int;

    unsafe extern "C" {
        /// A new VM, or null on failure.
        pub fn ubpf_create() -> *mut UbpfVm;
        /// Frees a VM, its code and its JIT-compiled code.
        pub fn ubpf_destroy(vm: *mut UbpfVm);
        /// Sets the callback that sizes each function's stack frame (before `ubpf_load`). Returns 0.
        pub fn ubpf_register_stack_usage_calculator(
            vm: *mut UbpfVm,
            calculator: Option<StackUsageCalculator>,
            cookie: *mut c_void,
        ) -> c_int;
        /// Validates and copies `code_len` bytes of bytecode. 0 on success; -1 and a message in `*errmsg`
        /// (to be freed with `free`) on failure.
        pub fn ubpf_load(vm: *mut UbpfVm, code: *const c_void, code_len: u32, errmsg: *mut *mut c_char) -> c_int;
        /// Interprets the loaded program with `mem` in r1 and `mem_len` in r2; 0 and r0 in
        /// `*bpf_return_value` on success, -1 on failure (the message goes to stderr).
        pub fn ubpf_exec(vm: *const UbpfVm, mem: *mut c_void, mem_len: usize, bpf_return_value: *mut u64) -> c_int;
        /// JIT-compiles the loaded program (owned by the VM); null and a message in `*errmsg` (to be freed
        /// with `free`) on failure.
        pub fn ubpf_compile(vm: *mut UbpfVm, errmsg: *mut *mut c_char) -> Option<JitFn>;
        /// The C library's `free`, for ubpf's error messages (which it allocates with `malloc`).
        pub fn free(ptr: *mut c_void);
    }
}

/// The bytes of stack each function frame gets: the most an eBPF function may use. 8 frames (ubpf's
/// most) of 512 bytes fill ubpf's 4096-byte stack exactly.
const FRAME: c_int = 512;

/// Sizes every function's stack frame at [`FRAME`] bytes.
unsafe extern "C" fn frame_size(_vm: *const ffi::UbpfVm, _pc: u16, _cookie: *mut c_void) -> c_int {
    FRAME
}

/// ubpf's error message `msg` as a `String` (freeing it), or `fallback` if there is none.
///
/// # Safety
/// `msg` is null or a NUL-terminated string allocated with `malloc` that nothing else uses or frees.
unsafe fn take_error(msg: *mut c_char, fallback: &str) -> String {
    if msg.is_null() {
        return fallback.to_string();
    }
    // SAFETY: `msg` is a NUL-terminated string (the caller's guarantee), read before it is freed below.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    // SAFETY: `msg` was allocated with `malloc` and is owned by us alone (the caller's guarantee).
    unsafe { ffi::free(msg.cast()) };
    text
}

/// A ubpf VM holding one program.
pub struct Ubpf {
    /// The VM, from `ubpf_create`, with a program loaded; destroyed on drop.
    vm: NonNull<ffi::UbpfVm>,
    /// The JIT-compiled program, after [`Ubpf::compile`]; the VM owns its code.
    jitted: Option<ffi::JitFn>,
}

impl Ubpf {
    /// Loads raw eBPF bytecode (8-byte slots, as `ebpf_vm::Program::to_bytes()` gives). Fails on what
    /// ubpf's loader refuses, e.g. map references (`lddw` with a source register) or helper calls.
    pub fn load(code: &[u8]) -> Result<Ubpf, String> {
        let len = u32::try_from(code.len()).map_err(|_| format!("{} bytes of code is too much", code.len()))?;
        // SAFETY: `ubpf_create` has no precondition; it returns a new VM or null.
        let vm = NonNull::new(unsafe { ffi::ubpf_create() }).ok_or("ubpf_create failed")?;
        // From here on, dropping `ubpf` destroys the VM, on the error path too.
        let ubpf = Ubpf { vm, jitted: None };
        // SAFETY: `vm` is a live VM with no code loaded yet; `frame_size` has the callback's signature and
        // uses neither the VM nor the (null) cookie.
        unsafe { ffi::ubpf_register_stack_usage_calculator(vm.as_ptr(), Some(frame_size), ptr::null_mut()) };
        let mut err = ptr::null_mut();
        // SAFETY: `vm` is live and has no code yet; `code` is `len` readable bytes, which ubpf copies
        // before returning; `err` is a valid place for ubpf to store a message pointer.
        if unsafe { ffi::ubpf_load(vm.as_ptr(), code.as_ptr().cast(), len, &mut err) } != 0 {
            // SAFETY: `err` is null or the message ubpf allocated for us.
            return Err(unsafe { take_error(err, "ubpf_load failed") });
        }
        Ok(ubpf)
    }

    /// Compiles with ubpf's JIT, with its default settings (as ubpf ships: no constant blinding; its
    /// JIT-compiled code checks no memory access, whatever the bounds-check setting).
    pub fn compile(&mut self) -> Result<(), String> {
        let mut err = ptr::null_mut();
        // SAFETY: `self.vm` is live with a program loaded; `err` is a valid place for a message pointer.
        let jitted = unsafe { ffi::ubpf_compile(self.vm.as_ptr(), &mut err) };
        match jitted {
            Some(f) => {
                self.jitted = Some(f);
                Ok(())
            }
            // SAFETY: `err` is null or the message ubpf allocated for us.
            None => Err(unsafe { take_error(err, "ubpf_compile failed") }),
        }
    }

    /// Runs on ubpf's interpreter; `mem` is given as the program's r1 and its length as r2. ubpf checks
    /// every load and store against `mem` and the program's stack, and stops the program (with an
    /// error, its message on stderr) on one outside them.
    pub fn interpret(&self, mem: &mut [u8]) -> Result<u64, String> {
        let mut r0 = 0;
        // SAFETY: `self.vm` is live with a program loaded; `mem` is `mem.len()` bytes, borrowed mutably for
        // the call, and the interpreter reads and writes memory only inside it and its own stack (its
        // bounds checks are on: ubpf's default, never turned off here); `r0` is a valid place for the
        // result.
        let rc = unsafe { ffi::ubpf_exec(self.vm.as_ptr(), mem.as_mut_ptr().cast(), mem.len(), &mut r0) };
        if rc == 0 {
            Ok(r0)
        } else {
            Err("ubpf's interpreter stopped the program (its message is on stderr)".to_string())
        }
    }

    /// Runs the JIT-compiled code (after [`compile`](Ubpf::compile)) with `mem` as r1 and its length as
    /// r2, and returns r0.
    ///
    /// # Safety
    /// ubpf's JIT-compiled code checks neither memory accesses nor the call depth: the program, run on
    /// `mem`, must read and write only `mem` and its stack, and nest at most 8 frames. A deterministic
    /// program that [`interpret`](Ubpf::interpret) runs without an error on the same bytes does.
    ///
    /// # Panics
    /// If the program was not compiled.
    pub unsafe fn jit(&self, mem: &mut [u8]) -> u64 {
        let f = self.jitted.expect("Ubpf::jit before a successful Ubpf::compile");
        // SAFETY: `f` is the VM's JIT-compiled code, alive as long as `self`; `mem` is `mem.len()` bytes
        // borrowed mutably for the call, and the program accesses only it and its own stack, within 8
        // frames (the caller's guarantee).
        unsafe { f(mem.as_mut_ptr().cast(), mem.len()) }
    }
}

impl Drop for Ubpf {
    /// Destroys the VM (`ubpf_destroy`), its code and its JIT-compiled code.
    fn drop(&mut self) {
        // SAFETY: `self.vm` came from `ubpf_create`, is destroyed only here, and nothing uses it after.
        unsafe { ffi::ubpf_destroy(self.vm.as_ptr()) }
    }
}
