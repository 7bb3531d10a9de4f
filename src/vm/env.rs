//! What a program may see besides its input: the helpers it can call and the host memory it may touch.

use alloc::vec::Vec;

use super::memory::Region;
use crate::helpers::Helper;

/// The environment a program runs in: helpers by id, and extra memory regions granted by the host.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Sorted by id, one per id.
    helpers: Vec<Helper>,
    regions: Vec<Region>,
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
    /// The range must stay valid (and, if `writable`, writable and not otherwise borrowed) for every
    /// execution in this environment, for as long as the environment or a `Vm` built from it lives.
    pub unsafe fn grant(&mut self, region: Region) {
        self.regions.push(region);
    }

    /// The host memory regions granted to programs.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }
}
