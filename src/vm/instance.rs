//! Live maps for a parsed object: the step between [`Object::parse`](crate::elf::Object::parse), which
//! only reads definitions, and a [`Vm`](super::Vm).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Vm, VmBuilder};
use crate::elf::{KconfigError, MapOrigin, Object, ObjectProgram};
use crate::isa::{Imm64, Instruction};
use crate::link::Env;
use crate::maps::{self, Map, MapBudget, MapDef, MapError, MapOfMaps, ProgArrayMap, UnsupportedMap, BPF_ANY};

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
    /// The program uses a map of a kind this runtime does not implement (the object loads; only the
    /// programs that use such a map cannot run).
    #[error("program `{program}` uses map `{map}`, a {kind} map, which this runtime does not implement")]
    UnsupportedMap {
        /// The program's name.
        program: String,
        /// The map's name.
        map: String,
        /// The map's kind (`perf_event_array`).
        kind: &'static str,
    },
    /// A strong `.kconfig` extern has no value (see [`Object::set_kconfig`]).
    #[error(transparent)]
    Kconfig(#[from] KconfigError),
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
    /// Why programs cannot use the map at the same index, if they cannot: a kind with no
    /// implementation, or a definition that is not complete (sizes left for the loader to set).
    unusable: Vec<Option<MapError>>,
    license: String,
}

impl Instance {
    /// Creates the object's maps within the default budget ([`MapBudget::DEFAULT`], 1 GiB).
    pub fn new(object: &Object) -> Result<Instance, InstanceError> {
        Instance::with_budget(object, MapBudget::default())
    }

    /// Creates the object's maps, charging `budget` for the most each can take: an object that asks
    /// for more fails with [`MapError::OverBudget`] before anything large is allocated.
    pub fn with_budget(object: &Object, budget: MapBudget) -> Result<Instance, InstanceError> {
        Instance::with_maps(object, budget, |_, _| None)
    }

    /// As [`with_budget`](Instance::with_budget), with the host making the maps it wants to make
    /// itself: `create(name, def)` returns the map for the object's map `name` (a map in shared memory,
    /// say), or `None` to have it created as usual. A map the host makes must fit `def`: it is filled
    /// with the object's initial data and used by the programs as the object declares it.
    pub fn with_maps(
        object: &Object,
        mut budget: MapBudget,
        mut create: impl FnMut(&str, MapDef) -> Option<Result<Arc<dyn Map>, MapError>>,
    ) -> Result<Instance, InstanceError> {
        object.kconfig_complete()?;
        let mut maps = Vec::with_capacity(object.maps().len());
        let mut unusable = Vec::with_capacity(object.maps().len());
        for spec in object.maps() {
            let err = |error| InstanceError::Map { name: spec.name.clone(), error };
            // A kind with no implementation, or a definition the object left incomplete (libbpf's
            // loaders set such sizes before they load: see `Object::map_mut`), gets a stand-in that
            // holds nothing: the object loads, and only programs that use that map are refused.
            let own = if spec.inner.is_none() { create(&spec.name, spec.def) } else { None };
            let own = own.map(|m| {
                m.and_then(|m| match m.def() == spec.def {
                    true => Ok(m),
                    false => Err(MapError::InvalidDef("the host's map does not fit the object's definition")),
                })
            });
            let created = match (own, spec.inner, spec.def.map_type.implemented()) {
                (Some(map), _, _) => map,
                (None, Some(inner), true) => create_map_of_maps(spec.def, inner, &mut budget),
                (None, None, true) => maps::create_within(spec.def, &mut budget),
                (None, _, false) => Err(MapError::UnsupportedType(spec.def.map_type.raw())),
            };
            let map: Arc<dyn Map> = match created {
                Ok(map) => {
                    unusable.push(None);
                    map
                }
                Err(e @ (MapError::UnsupportedType(_) | MapError::InvalidDef(_))) if spec.data.is_none() => {
                    unusable.push(Some(e));
                    Arc::new(UnsupportedMap::new(spec.def))
                }
                Err(e) => return Err(err(e)),
            };
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
        // Maps of maps name the object's maps by index, which is their index in the environment too.
        for ((spec, m), why) in object.maps().iter().zip(&maps).zip(&unusable) {
            let err = |error| InstanceError::Map { name: spec.name.clone(), error };
            if spec.map_inits.is_empty() || why.is_some() {
                continue;
            }
            let outer = m.map.downcast_ref::<MapOfMaps>().ok_or(err(MapError::Unsupported))?;
            for &(index, inner) in &spec.map_inits {
                let fits = maps.get(inner as usize).is_some_and(|i| outer.fits(&i.map.def()));
                if !fits {
                    return Err(err(MapError::InvalidDef("an initial inner map does not match the inner definition")));
                }
                outer.set(&index.to_ne_bytes(), inner).map_err(err)?;
            }
        }
        Ok(Instance { programs: object.programs().to_vec(), maps, unusable, license: object.license().to_string() })
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

    /// The index of the map with this name: what program references to it hold, and what a map of
    /// maps names it by ([`MapOfMaps::set`]).
    pub fn map_index(&self, name: &str) -> Option<u32> {
        self.maps.iter().position(|m| m.name == name).and_then(|i| u32::try_from(i).ok())
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
        if let Some((m, why)) = self.unusable_map_of(&program) {
            return Err(match why {
                MapError::UnsupportedType(_) => InstanceError::UnsupportedMap {
                    program: self.programs[id as usize].name.clone(),
                    map: m.name.clone(),
                    kind: m.map.def().map_type.name(),
                },
                e => InstanceError::Map { name: m.name.clone(), error: e.clone() },
            });
        }
        Ok(Vm::builder(program)
            .env(self.env())
            .tail_call_targets(self.programs.iter().map(|p| p.program.clone()).collect()))
    }

    /// The first map `program` refers to that programs cannot use, and why.
    fn unusable_map_of(&self, program: &crate::program::Program) -> Option<(&InstanceMap, &MapError)> {
        program.instructions().iter().find_map(|i| {
            let index = match i {
                Instruction::LoadImm64 { value: Imm64::MapFd(fd) | Imm64::MapValue { fd, .. }, .. } => *fd,
                _ => return None,
            };
            let index = usize::try_from(index).ok()?;
            Some((self.maps.get(index)?, self.unusable.get(index)?.as_ref()?))
        })
    }

    /// Freezes every read-only global data map (the kinds the loader creates support it).
    fn freeze_read_only(&self) {
        for m in &self.maps {
            let data = matches!(m.origin, MapOrigin::GlobalData | MapOrigin::Kconfig);
            if data && m.map.def().read_only_for_programs() && !m.map.frozen() {
                // Global data maps are arrays, which can always be frozen; a failure would only leave the
                // data unfrozen, which the verifier then treats as unknown.
                let _ = m.map.freeze();
            }
        }
    }
}

/// A map of maps for `def` with inner maps like `inner`, charged to `budget` as the array or hash map
/// of 4-byte values it keeps.
fn create_map_of_maps(def: MapDef, inner: MapDef, budget: &mut MapBudget) -> Result<Arc<dyn Map>, MapError> {
    let need = maps::footprint(&def);
    if need > budget.remaining() {
        return Err(MapError::OverBudget { need, remaining: budget.remaining() });
    }
    let map = MapOfMaps::new(def, inner)?;
    budget.charge(need)?;
    Ok(Arc::new(map))
}
