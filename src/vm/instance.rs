//! Live maps for a parsed object: the step between [`Object::parse`](crate::elf::Object::parse), which
//! only reads definitions, and a [`Vm`](super::Vm).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Vm, VmBuilder};
use crate::elf::{MapOrigin, Object, ObjectProgram};
use crate::link::Env;
use crate::maps::{self, Map, MapBudget, MapError, ProgArrayMap, BPF_ANY};

/// Why an object cannot be instantiated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// A map cannot be created (unsupported kind, invalid definition, memory budget exhausted) or
    /// filled with its initial contents.
    #[error("map `{name}`: {error}")]
    Map {
        /// The map's name.
        name: String,
        /// Why.
        error: MapError,
    },
    /// No program of that name or section.
    #[error("no program named `{0}` (by function or section name)")]
    NoProgram(String),
}

/// One live map of an instance.
#[derive(Clone)]
pub struct InstanceMap {
    /// The map's name in the object.
    pub name: String,
    /// Where the object defined it.
    pub origin: MapOrigin,
    /// The map.
    pub map: Arc<dyn Map>,
}

impl core::fmt::Debug for InstanceMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InstanceMap").field("name", &self.name).field("def", &self.map.def()).finish()
    }
}

/// An object with live maps: its global data and program arrays filled, ready to build a [`Vm`] for
/// any of its programs. All of them share the maps.
#[derive(Debug, Clone)]
pub struct Instance {
    programs: Vec<ObjectProgram>,
    maps: Vec<InstanceMap>,
    license: String,
}

impl Instance {
    /// Creates the object's maps within the default budget ([`MapBudget::DEFAULT`], 1 GiB).
    pub fn new(object: &Object) -> Result<Instance, InstanceError> {
        Instance::with_budget(object, MapBudget::default())
    }

    /// Creates the object's maps, charging `budget` for the most each can take: an object that asks
    /// for more fails with [`MapError::OverBudget`] before anything large is allocated.
    pub fn with_budget(object: &Object, mut budget: MapBudget) -> Result<Instance, InstanceError> {
        let mut maps = Vec::with_capacity(object.maps().len());
        for spec in object.maps() {
            let err = |error| InstanceError::Map { name: spec.name.clone(), error };
            let map = maps::create_within(spec.def, &mut budget).map_err(err)?;
            if let Some(data) = &spec.data {
                map.update(&0u32.to_ne_bytes(), data, BPF_ANY, 0).map_err(err)?;
            }
            if !spec.prog_inits.is_empty() {
                let pa = map.downcast_ref::<ProgArrayMap>().ok_or(err(MapError::Unsupported))?;
                for &(index, id) in &spec.prog_inits {
                    pa.set(index, id).map_err(err)?;
                }
            }
            maps.push(InstanceMap { name: spec.name.clone(), origin: spec.origin, map });
        }
        Ok(Instance { programs: object.programs().to_vec(), maps, license: object.license().to_string() })
    }

    /// The programs, by id (what program arrays hold).
    pub fn programs(&self) -> &[ObjectProgram] {
        &self.programs
    }

    /// The program with this function name, or else the first one in the section of this name.
    pub fn program(&self, name: &str) -> Option<&ObjectProgram> {
        self.program_id(name).map(|id| &self.programs[id as usize])
    }

    /// The id of a program (by function name, or else section name).
    pub fn program_id(&self, name: &str) -> Option<u32> {
        crate::elf::program_id(&self.programs, name)
    }

    /// The object's license string.
    pub fn license(&self) -> &str {
        &self.license
    }

    /// The live maps, by index.
    pub fn maps(&self) -> &[InstanceMap] {
        &self.maps
    }

    /// The map with this name.
    pub fn map(&self, name: &str) -> Option<&Arc<dyn Map>> {
        self.maps.iter().find(|m| m.name == name).map(|m| &m.map)
    }

    /// An environment with the maps (by index) and the standard helpers. Like
    /// [`vm_builder`](Instance::vm_builder), it freezes the object's read-only global data first.
    pub fn env(&self) -> Env {
        self.freeze_read_only();
        let mut env = Env::new();
        env.add_standard_helpers();
        for m in &self.maps {
            env.add_map(Arc::clone(&m.map));
        }
        env
    }

    /// A builder for a `Vm` running program `name`, with [`env`](Instance::env) and every program of the
    /// object as a tail-call target (by id).
    ///
    /// The first call freezes the object's read-only global data (`.rodata*`, see [`Map::freeze`]), as
    /// libbpf does when it loads an object: set `const volatile` configuration before it. The verifier
    /// then reads that data as constants, so a loop bounded by a configured value is proven to end.
    pub fn vm_builder(&self, name: &str) -> Result<VmBuilder, InstanceError> {
        let id = self.program_id(name).ok_or_else(|| InstanceError::NoProgram(name.to_string()))?;
        let program = self.programs[id as usize].program.clone();
        Ok(Vm::builder(program)
            .env(self.env())
            .tail_call_targets(self.programs.iter().map(|p| p.program.clone()).collect()))
    }

    /// Freezes every read-only global data map (the kinds the loader creates support it).
    fn freeze_read_only(&self) {
        for m in &self.maps {
            if m.origin == MapOrigin::GlobalData && m.map.def().read_only_for_programs() && !m.map.frozen() {
                // Global data maps are arrays, which can always be frozen; a failure would only leave the
                // data unfrozen, which the verifier then treats as unknown.
                let _ = m.map.freeze();
            }
        }
    }
}
