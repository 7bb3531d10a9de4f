//! What a program may see besides its input: the helpers it can call, the maps it refers to, and the
//! host memory it may touch.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use super::Context;
use crate::helpers::{Helper, PrintSink};
use crate::maps::Map;
use crate::memory::Region;

/// The environment a program runs in: helpers by id, maps by index, extra memory regions granted by the
/// host, and where `bpf_trace_printk` writes.
#[derive(Clone, Default)]
pub struct Env {
    /// Sorted by id, one per id.
    helpers: Vec<Helper>,
    regions: Vec<Region>,
    maps: Vec<Arc<dyn Map>>,
    print: Option<PrintSink>,
    context: Context,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("helpers", &self.helpers)
            .field("regions", &self.regions)
            .field("maps", &self.maps.iter().map(|m| m.def()).collect::<Vec<_>>())
            .field("context", &self.context)
            .finish()
    }
}

impl Env {
    /// An environment with no helpers and no extra memory.
    pub fn new() -> Env {
        Env::default()
    }

    /// Adds a helper, replacing any helper with the same id.
    pub fn add_helper(&mut self, helper: Helper) {
        match self.helpers.binary_search_by_key(&helper.id(), Helper::id) {
            Ok(i) => self.helpers[i] = helper,
            Err(i) => self.helpers.insert(i, helper),
        }
    }

    /// Adds every standard helper (maps, time, printing, ring buffer, tail calls, ...).
    pub fn add_standard_helpers(&mut self) {
        // Made once per process, sorted and one per id: an environment starting from none (as every
        // program of an object does) takes a copy, which only counts references to the functions.
        static STANDARD: spin::Once<Vec<Helper>> = spin::Once::new();
        let standard = STANDARD.call_once(|| {
            let mut env = Env::new();
            for h in crate::helpers::standard::all() {
                env.add_helper(h);
            }
            env.helpers
        });
        if self.helpers.is_empty() {
            self.helpers = standard.clone();
        } else {
            for h in standard {
                self.add_helper(h.clone());
            }
        }
    }

    /// The helper with this id.
    pub fn helper(&self, id: u32) -> Option<&Helper> {
        self.helper_index(id).map(|i| &self.helpers[i])
    }

    /// Position of the helper with this id in [`helpers`](Env::helpers).
    pub(crate) fn helper_index(&self, id: u32) -> Option<usize> {
        self.helpers.binary_search_by_key(&id, Helper::id).ok()
    }

    /// All helpers, sorted by id.
    pub fn helpers(&self) -> &[Helper] {
        &self.helpers
    }

    /// Lets programs access a range of host memory.
    ///
    /// # Safety
    /// The range must stay valid for reads (and, if `writable`, for writes) for as long as the
    /// environment or a `Vm` built from it lives, and while executions may run, nothing else may access
    /// it except atomically (programs on several threads may access it at once; no Rust reference to
    /// it may exist).
    pub unsafe fn grant(&mut self, region: Region) {
        self.regions.push(region);
    }

    /// The host memory regions granted to programs.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Adds a map; programs refer to it by the returned index (the `imm` of `lddw` pseudo-loads).
    pub fn add_map(&mut self, map: Arc<dyn Map>) -> u32 {
        self.maps.push(map);
        (self.maps.len() - 1) as u32
    }

    /// The map with this index.
    pub fn map(&self, index: u32) -> Option<&Arc<dyn Map>> {
        self.maps.get(index as usize)
    }

    /// All maps, by index.
    pub fn maps(&self) -> &[Arc<dyn Map>] {
        &self.maps
    }

    /// The map a register value made by a map pseudo-load refers to.
    pub fn map_by_handle(&self, handle: u64) -> Option<&Arc<dyn Map>> {
        self.map(crate::maps::handle_index(handle)?)
    }

    /// Sends `bpf_trace_printk` output to `sink` (by default it goes to standard error with `std`,
    /// and nowhere without).
    pub fn set_print_sink(&mut self, sink: PrintSink) {
        self.print = Some(sink);
    }

    /// Where `bpf_trace_printk` writes, if the host chose.
    pub fn print_sink(&self) -> Option<&PrintSink> {
        self.print.as_ref()
    }

    /// Describes what programs are given at entry (default: [`Context::Buffer`]).
    pub fn set_context(&mut self, context: Context) {
        self.context = context;
    }

    /// What programs are given at entry.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Every region programs may access besides their input and stack: granted regions and map memory.
    pub(crate) fn all_regions(&self) -> Vec<Region> {
        let mut all = self.regions.clone();
        for m in &self.maps {
            all.extend(m.regions());
        }
        all
    }
}
