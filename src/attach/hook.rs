//! [`HookPoint`]: a named point in a host's code where attached programs run, in attach order.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::readers;

use crate::link::ExecError;
use crate::vm::Vm;

/// Names one attachment of a program to a [`HookPoint`], to detach it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HookId(u64);

/// A named point in a host's own code where programs run: the host fires it with a context (the memory
/// each program's `r1` points to), and every program attached at that moment runs on it, in attach
/// order.
///
/// Firing with nothing attached reads one atomic counter; with programs attached, it adds one memory
/// fence to their runs (no lock, no read-modify-write). Attaching and detaching may happen from any
/// thread while others fire; [`detach`](HookPoint::detach) returns once every run of the program that
/// had started has finished, so a host may drop what the program uses afterwards.
///
/// ```
/// use std::sync::Arc;
/// use ebpf_vm::attach::HookPoint;
/// use ebpf_vm::{Context, Env, Program, Vm};
///
/// let point = HookPoint::new("request");
/// assert_eq!(point.fire(&mut [0; 8], |_, _| {}), 0); // nothing attached
///
/// let mut env = Env::new();
/// env.set_context(Context::fixed(8));
/// let program = Program::from_asm("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit").unwrap();
/// let vm = Vm::builder(program).env(env).verified().build().unwrap();
/// let id = point.attach(Arc::new(vm));
///
/// let mut results = Vec::new();
/// point.fire(&mut 41u64.to_ne_bytes(), |_, r| results.push(r.unwrap()));
/// assert_eq!(results, [42]);
/// point.detach(id);
/// ```
pub struct HookPoint {
    name: String,
    /// The number of programs attached: all a fire reads when it is zero.
    attached: AtomicUsize,
    /// The programs, in attach order: a list that is never changed once published. Attach and detach
    /// publish a new one and free the old once the fires that may be reading it have ended
    /// ([`readers::synchronize`]); a fire reads it inside a read section, which costs one fence.
    programs: AtomicPtr<List>,
    /// Held by attach and detach, one change at a time.
    changes: Mutex<()>,
    next_id: AtomicU64,
}

/// The programs attached to a point, in attach order.
type List = Vec<(HookId, Arc<Vm>)>;

impl HookPoint {
    /// A point named `name`, with nothing attached.
    pub fn new(name: impl Into<String>) -> HookPoint {
        HookPoint {
            name: name.into(),
            attached: AtomicUsize::new(0),
            programs: AtomicPtr::new(Box::into_raw(Box::new(List::new()))),
            changes: Mutex::new(()),
            next_id: AtomicU64::new(0),
        }
    }

    /// The point's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of programs attached.
    pub fn len(&self) -> usize {
        self.attached.load(Ordering::Acquire)
    }

    /// Whether nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attaches `vm` after the programs already attached; it runs at every fire that starts after this
    /// returns. The same program may be attached more than once (it then runs once per attachment).
    pub fn attach(&self, vm: Arc<Vm>) -> HookId {
        let id = HookId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.change(|list| list.push((id, vm)));
        id
    }

    /// Detaches the attachment `id` and returns its program, once every fire that may be running it
    /// has finished; `None` if `id` is not attached here (never was, or was detached already).
    pub fn detach(&self, id: HookId) -> Option<Arc<Vm>> {
        let mut detached = None;
        self.change(|list| {
            if let Some(at) = list.iter().position(|(i, _)| *i == id) {
                detached = Some(list.remove(at).1);
            }
        });
        detached
    }

    /// Publishes a changed copy of the list and frees the old one once no fire can be reading it.
    fn change(&self, edit: impl FnOnce(&mut List)) {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: only changes (serialised by the lock just taken) replace or free the list, so the
        // current one is alive.
        let mut list = unsafe { &*self.programs.load(Ordering::Acquire) }.clone();
        edit(&mut list);
        let len = list.len();
        let old = self.programs.swap(Box::into_raw(Box::new(list)), Ordering::SeqCst);
        self.attached.store(len, Ordering::Release);
        readers::synchronize();
        // SAFETY: `old` came from `Box::into_raw` and is no longer published; every fire that loaded it
        // has ended (`synchronize`), and no later one can load it.
        drop(unsafe { Box::from_raw(old) });
    }

    /// Runs every attached program on `mem`, in attach order, and hands each result to `each` with its
    /// attachment; returns the number of programs run. A program's error does not stop the others.
    #[inline]
    pub fn fire(&self, mem: &mut [u8], each: impl FnMut(HookId, Result<u64, ExecError>)) -> usize {
        if self.attached.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.fire_attached(mem, each)
    }

    /// [`fire`](HookPoint::fire) with programs attached (out of line: the empty case stays small).
    #[inline(never)]
    fn fire_attached(&self, mem: &mut [u8], mut each: impl FnMut(HookId, Result<u64, ExecError>)) -> usize {
        let _section = readers::read();
        // SAFETY: the list is freed only after every read section under way when it was replaced has
        // ended, and this one began before the load.
        let programs = unsafe { &*self.programs.load(Ordering::Acquire) };
        for (id, vm) in programs {
            each(*id, vm.execute(mem));
        }
        programs.len()
    }
}

impl Drop for HookPoint {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw`; `&mut self` means no fire is running.
        drop(unsafe { Box::from_raw(*self.programs.get_mut()) });
    }
}

impl core::fmt::Debug for HookPoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HookPoint").field("name", &self.name).field("attached", &self.len()).finish()
    }
}
