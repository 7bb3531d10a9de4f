//! The reader for BPF objects as clang emits them with libbpf's `bpf_helpers.h`.
//!
//! [`Object::parse`] finds programs by `SEC()` name (one per global function of an executable
//! section), links `.text` subprograms into the programs that call them, reads the map definitions of
//! `.maps` (BTF-defined) and `maps` (legacy `struct bpf_map_def`), turns global data (`.data*`,
//! `.rodata*`, `.bss*`) into definitions of one-entry array maps with their initial bytes (`.rodata`
//! read-only for programs, as libbpf freezes it), reads the declarative initialisers of program arrays,
//! and resolves the `lddw` relocations to map indices. It creates nothing: live maps are made from these
//! definitions in a separate step (`Instance`, in the embedding API), within a memory budget the host
//! sets. Every malformed object is an [`ElfError`], never a panic, and no size the object declares
//! allocates memory before it has been checked against the file or a limit.

mod btf;
mod btf_ext;
mod kconfig;

pub use btf_ext::{SourceLine, MAX_LINE_TEXT};
pub use kconfig::{kernel_version, Kconfig, KconfigError, KconfigExtern, KconfigKind};

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use object::read::elf::ElfFile64;
use object::{LittleEndian, Object as _, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SymbolKind};

use crate::isa::{opcode, Insn, INSN_SIZE};
use crate::maps::{MapDef, MapType, BPF_F_RDONLY_PROG};
use crate::program::{Program, ProgramError, MAX_SLOTS};
use btf::{Btf, Kind};

/// Most instruction slots all the programs of one object may have together, after `.text` is linked
/// into each program that calls it.
pub const MAX_OBJECT_SLOTS: usize = 4 * MAX_SLOTS;

/// Why an object cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// Not a well-formed ELF file.
    #[error("not a valid ELF object: {0}")]
    Parse(String),
    /// An ELF object for another machine, or not 64-bit little-endian.
    #[error("not a BPF object (only 64-bit little-endian BPF ELF files are supported)")]
    NotBpf,
    /// The BTF is malformed.
    #[error("malformed BTF: {0}")]
    Btf(&'static str),
    /// A map definition is malformed.
    #[error("map `{name}`: {reason}")]
    Map {
        /// The map's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A relocation cannot be applied.
    #[error("section `{section}`, offset {offset:#x}: {reason}")]
    Relocation {
        /// The section the relocation applies to.
        section: String,
        /// Offset within that section.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A program's code is malformed.
    #[error("program `{name}`: {error}")]
    Program {
        /// The program's name.
        name: String,
        /// The structural error.
        error: ProgramError,
    },
    /// The programs, once linked, are larger than [`MAX_OBJECT_SLOTS`] together.
    #[error("the object's programs have more than {MAX_OBJECT_SLOTS} slots together once linked")]
    TooLarge,
    /// No program of that name or section.
    #[error("no program named `{0}` (by function or section name)")]
    NoProgram(String),
    /// An extern the loader cannot lay out (a `.kconfig` extern of a type libbpf does not allow).
    #[error("extern `{name}`: {reason}")]
    Extern {
        /// The extern's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a map came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOrigin {
    /// A BTF-defined map in `.maps`.
    Btf,
    /// A legacy `struct bpf_map_def` in `maps`.
    Legacy,
    /// A global data section, as a one-entry array.
    GlobalData,
    /// The `.kconfig` externs' values, as a one-entry read-only array (see [`Object::set_kconfig`]).
    Kconfig,
}

/// A map an object defines: what to create, and what to put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    /// The map's name (the variable, or the data section's name).
    pub name: String,
    /// Where it was defined.
    pub origin: MapOrigin,
    /// The definition.
    pub def: MapDef,
    /// The initial bytes of value 0 (global data; `None` for `.bss` and every other map).
    pub data: Option<Vec<u8>>,
    /// Initial entries of a program array: (index, program id).
    pub prog_inits: Vec<(u32, u32)>,
    /// For a map of maps: the definition of its inner maps (from BTF, `__array(values, struct {...})`).
    pub inner: Option<MapDef>,
    /// Initial entries of a map of maps: (index, index of the inner map in the object's maps).
    pub map_inits: Vec<(u32, u32)>,
    section: SectionIndex,
    offset: u64,
    size: u64,
    /// Byte offset of the `values` member of a BTF definition (program array initialisers).
    values_offset: Option<u64>,
}

/// A program of an object.
#[derive(Debug, Clone)]
pub struct ObjectProgram {
    /// The function's name.
    pub name: String,
    /// The `SEC()` name.
    pub section: String,
    /// The linked program.
    pub program: Program,
    /// The C source line of instructions, by slot index, where the object has line info (`.BTF.ext`,
    /// clang `-g`): the line an instruction starts, in slot order.
    pub lines: Vec<(usize, SourceLine)>,
    /// The C functions the program holds (its own, and the `.text` functions appended to it), by
    /// first slot, in slot order, where the object has function info (`.BTF.ext`).
    pub functions: Vec<(usize, Arc<str>)>,
}

impl ObjectProgram {
    /// The C source line the instruction at slot `pc` was compiled from, where the object has line
    /// info: the last line that starts at or before `pc`.
    pub fn line_at(&self, pc: usize) -> Option<&SourceLine> {
        let i = self.lines.partition_point(|(at, _)| *at <= pc);
        self.lines.get(i.checked_sub(1)?).map(|(_, l)| l)
    }

    /// The name of the C function the instruction at slot `pc` belongs to, where the object has
    /// function info.
    pub fn function_at(&self, pc: usize) -> Option<&str> {
        let i = self.functions.partition_point(|(at, _)| *at <= pc);
        self.functions.get(i.checked_sub(1)?).map(|(_, n)| n.as_ref())
    }
}

/// A parsed BPF object: its programs, the definitions of its maps (shared by all its programs, by
/// index), and its license.
#[derive(Debug, Clone)]
pub struct Object {
    programs: Vec<ObjectProgram>,
    maps: Vec<MapSpec>,
    license: String,
    kconfig: Vec<KconfigExtern>,
    /// Why the `.kconfig` value is not complete yet (a strong extern without a value), if it is not.
    kconfig_pending: Option<KconfigError>,
}

/// The id of the program in `programs` with this function name, or else the first one in the section
/// of this name.
pub(crate) fn program_id(programs: &[ObjectProgram], name: &str) -> Option<u32> {
    let by_name = programs.iter().position(|p| p.name == name);
    by_name.or_else(|| programs.iter().position(|p| p.section == name)).map(|i| i as u32)
}

const SHF_EXECINSTR: u64 = 0x4;

fn parse_err(e: object::Error) -> ElfError {
    ElfError::Parse(e.to_string())
}

fn map_err(name: &str, reason: impl ToString) -> ElfError {
    ElfError::Map { name: name.to_string(), reason: reason.to_string() }
}

fn is_global_data(name: &str) -> bool {
    [".data", ".rodata", ".bss"].iter().any(|p| name == *p || name.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}

type File<'a> = ElfFile64<'a, LittleEndian>;

/// A symbol: name, address (offset in its section), size.
type Symbol = (String, u64, u64);

/// The symbols of each section, sorted by address, read once.
struct Symbols {
    by_section: BTreeMap<usize, Vec<(Symbol, SymbolKind, bool)>>,
}

impl Symbols {
    fn read(file: &File<'_>) -> Symbols {
        let mut by_section: BTreeMap<usize, Vec<(Symbol, SymbolKind, bool)>> = BTreeMap::new();
        for s in file.symbols() {
            let (Some(section), kind) = (s.section_index(), s.kind()) else { continue };
            if kind == SymbolKind::Section {
                continue;
            }
            let name = s.name().unwrap_or("").to_string();
            by_section.entry(section.0).or_default().push(((name, s.address(), s.size()), kind, s.is_global()));
        }
        for list in by_section.values_mut() {
            list.sort_by_key(|s| s.0 .1);
        }
        Symbols { by_section }
    }

    /// The symbols of `section`, one per address.
    fn in_section(&self, section: SectionIndex) -> Vec<Symbol> {
        let mut out: Vec<Symbol> =
            self.by_section.get(&section.0).into_iter().flatten().map(|(s, _, _)| s.clone()).collect();
        out.dedup_by_key(|s| s.1);
        out
    }

    /// The global functions of `section`.
    fn functions(&self, section: SectionIndex) -> Vec<Symbol> {
        let list = self.by_section.get(&section.0).into_iter().flatten();
        list.filter(|(_, kind, global)| *kind == SymbolKind::Text && *global).map(|(s, _, _)| s.clone()).collect()
    }

    /// Every function of `section`, static ones too, as slot ranges in address order; `None` unless
    /// they tile the section's `slots` exactly (no gap, no overlap).
    fn function_ranges(&self, section: SectionIndex, slots: usize) -> Option<Vec<(usize, usize)>> {
        let list = self.by_section.get(&section.0)?;
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for ((_, addr, size), kind, _) in list {
            if *kind != SymbolKind::Text {
                continue;
            }
            let (start, len) = (usize::try_from(addr / 8).ok()?, usize::try_from(size / 8).ok()?);
            if addr % 8 != 0 || size % 8 != 0 || len == 0 || ranges.last().is_some_and(|r| r.1 != start) {
                return None;
            }
            ranges.push((start, start.checked_add(len)?));
        }
        (ranges.first().is_some_and(|r| r.0 == 0) && ranges.last().is_some_and(|r| r.1 == slots)).then_some(ranges)
    }
}

/// The slot a `call` of a local function or a `lddw` of a function at slot `at` refers to, if it is one.
fn local_target(code: &[Insn], at: usize) -> Option<usize> {
    let i = code.get(at)?;
    let refers = i.opcode == opcode::CALL && i.src == opcode::CALL_LOCAL
        || i.opcode == opcode::LDDW && i.src == opcode::PSEUDO_FUNC;
    usize::try_from((at as i64 + 1).checked_add(i.imm as i64)?).ok().filter(|_| refers)
}

/// Keeps of the `.text` appended at `text_base` only the functions (`ranges`, relative to `.text`)
/// that the program calls or takes the address of, directly or through each other, as libbpf appends
/// only the subprograms a program uses; calls and function references are made to point to where
/// their targets moved. Returns the new slot of each `.text` slot that was kept.
fn keep_used_text(code: &mut Vec<Insn>, text_base: usize, ranges: &[(usize, usize)]) -> Vec<Option<usize>> {
    let text_len = code.len() - text_base;
    let function_of = |slot: usize| ranges.partition_point(|r| r.1 <= slot);
    let mut used = alloc::vec![false; ranges.len()];
    let mut work = alloc::vec![(0usize, text_base)];
    while let Some((from, to)) = work.pop() {
        let mut at = from;
        while at < to {
            if let Some(t) = local_target(code, at).and_then(|t| t.checked_sub(text_base)).filter(|&t| t < text_len) {
                let f = function_of(t);
                if f < used.len() && !used[f] {
                    used[f] = true;
                    work.push((text_base + ranges[f].0, text_base + ranges[f].1));
                }
            }
            at += if code[at].opcode == opcode::LDDW { 2 } else { 1 };
        }
    }
    let mut moved = alloc::vec![None; text_len];
    let mut next = text_base;
    for (f, &(start, end)) in ranges.iter().enumerate() {
        if used[f] {
            for (k, slot) in moved[start..end].iter_mut().enumerate() {
                *slot = Some(next + k);
            }
            next += end - start;
        }
    }
    let new_of = |old: usize| if old < text_base { Some(old) } else { moved.get(old - text_base).copied().flatten() };
    let old = core::mem::take(code);
    for (at, insn) in old.iter().enumerate() {
        let Some(new_at) = new_of(at) else { continue };
        let mut insn = *insn;
        // Every target of a kept slot is kept: it made its function used.
        if let Some(new_target) = local_target(&old, at).and_then(new_of) {
            insn.imm = (new_target as i64 - new_at as i64 - 1) as i32;
        }
        code.push(insn);
    }
    moved
}

impl Object {
    /// Parses an object: its programs (linked with the `.text` functions they call), its map
    /// definitions and initial data, and its license.
    pub fn parse(bytes: &[u8]) -> Result<Object, ElfError> {
        // The ELF reader needs 8-byte aligned data; copy into an aligned buffer.
        let mut aligned = alloc::vec![0u64; bytes.len().div_ceil(8)];
        let buf: &mut [u8] = bytemuck_bytes(&mut aligned);
        buf[..bytes.len()].copy_from_slice(bytes);
        let bytes = &buf[..bytes.len()];
        let file = ElfFile64::<LittleEndian>::parse(bytes).map_err(|e| match e.to_string() {
            s if s.contains("magic") || s.contains("class") || s.contains("endian") => ElfError::NotBpf,
            s => ElfError::Parse(s),
        })?;
        if file.architecture() != object::Architecture::Bpf {
            return Err(ElfError::NotBpf);
        }
        let btf = match file.section_by_name(".BTF") {
            Some(s) => Some(Btf::parse(s.data().map_err(parse_err)?)?),
            None => None,
        };
        let license = match file.section_by_name("license") {
            Some(s) => {
                let d = s.data().map_err(parse_err)?;
                String::from_utf8_lossy(&d[..d.iter().position(|&b| b == 0).unwrap_or(d.len())]).into_owned()
            }
            None => String::new(),
        };

        let symbols = Symbols::read(&file);
        let mut maps = Vec::new();
        btf_maps(&file, &symbols, btf.as_ref(), &mut maps)?;
        legacy_maps(&file, &symbols, &mut maps)?;
        global_data(&file, &mut maps)?;
        let kconfig = kconfig_externs(&file, btf.as_ref(), &mut maps)?;

        let (line_info, func_info) = match (file.section_by_name(".BTF.ext"), btf.as_ref()) {
            (Some(s), Some(btf)) => {
                let data = s.data().map_err(parse_err)?;
                (btf_ext::line_info(data, btf)?, btf_ext::func_info(data, btf)?)
            }
            _ => (btf_ext::LineInfo::new(), btf_ext::FuncInfo::new()),
        };
        let mut programs = Vec::new();
        link_programs(&file, &symbols, &maps, &kconfig, (&line_info, &func_info), &mut programs)?;
        prog_array_inits(&file, &mut maps, &programs)?;
        let mut object = Object { programs, maps, license, kconfig, kconfig_pending: None };
        // Until the host gives values, weak externs are zero and strong ones are missing.
        if let Err(e) = object.set_kconfig(&Kconfig::new()) {
            object.kconfig_pending = Some(e);
        }
        Ok(object)
    }

    /// The `.kconfig` externs the programs read (`extern int CONFIG_HZ __kconfig;`), with their
    /// places in the `.kconfig` map.
    pub fn kconfig_externs(&self) -> &[KconfigExtern] {
        &self.kconfig
    }

    /// Gives the `.kconfig` externs their values (libbpf's rules: see [`Kconfig`]): the initial
    /// contents of the `.kconfig` map. A strong extern without a value is an error, and the object
    /// keeps its previous values; weak ones without a value are zero.
    pub fn set_kconfig(&mut self, config: &Kconfig) -> Result<(), KconfigError> {
        let Some(map) = self.maps.iter_mut().find(|m| m.origin == MapOrigin::Kconfig) else {
            return Ok(());
        };
        map.data = Some(kconfig::fill(&self.kconfig, map.def.value_size, config)?);
        self.kconfig_pending = None;
        Ok(())
    }

    /// `Ok` once every strong `.kconfig` extern has a value (see [`set_kconfig`](Object::set_kconfig)),
    /// else why not: the maps cannot be created before.
    pub fn kconfig_complete(&self) -> Result<(), KconfigError> {
        self.kconfig_pending.clone().map_or(Ok(()), Err)
    }

    /// The programs, in the order of their sections and offsets; a program's id is its position.
    pub fn programs(&self) -> &[ObjectProgram] {
        &self.programs
    }

    /// The program with this function name, or else the first one in the section of this name.
    pub fn program(&self, name: &str) -> Option<&ObjectProgram> {
        self.program_id(name).map(|id| &self.programs[id as usize])
    }

    /// The id of a program (by function name, or else section name): what a program array holds.
    pub fn program_id(&self, name: &str) -> Option<u32> {
        program_id(&self.programs, name)
    }

    /// The map definitions, in the order of their indices (what `lddw` map references hold).
    pub fn maps(&self) -> &[MapSpec] {
        &self.maps
    }

    /// The definition of the map with this name.
    pub fn map(&self, name: &str) -> Option<&MapSpec> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The definition of the map with this name, to change before the maps are created, as libbpf's
    /// loaders do with `bpf_map__set_max_entries` for sizes an object leaves to them.
    pub fn map_mut(&mut self, name: &str) -> Option<&mut MapSpec> {
        self.maps.iter_mut().find(|m| m.name == name)
    }

    /// The license string.
    pub fn license(&self) -> &str {
        &self.license
    }
}

/// The bytes of a `u64` buffer.
fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = words.len() * 8;
    // SAFETY: `u64` has no padding and every byte pattern is a valid `u8`; the slice covers exactly the
    // buffer's memory and borrows it mutably for its lifetime.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

/// The variables BTF lists in the data section `section` (`.maps`, `.kconfig`): name to type.
fn datasec_vars<'b>(btf: &'b Btf, section: &str) -> BTreeMap<&'b str, u32> {
    let mut vars = BTreeMap::new();
    let lists = btf.types().iter().filter(|t| t.name == section).filter_map(|t| match &t.kind {
        Kind::DataSec { vars, .. } => Some(vars),
        _ => None,
    });
    for v in lists.flatten() {
        if let Ok(var) = btf.get(v.var) {
            if let Kind::Var { target } = var.kind {
                vars.entry(var.name.as_str()).or_insert(target);
            }
        }
    }
    vars
}

/// Reads `.maps`: each variable's BTF struct of pointer-encoded fields.
fn btf_maps(file: &File<'_>, symbols: &Symbols, btf: Option<&Btf>, out: &mut Vec<MapSpec>) -> Result<(), ElfError> {
    let Some(section) = file.section_by_name(".maps") else { return Ok(()) };
    let btf = btf.ok_or(ElfError::Btf("the object has .maps but no .BTF"))?;
    // The map variables, by name (looked up once, not per map).
    let vars = datasec_vars(btf, ".maps");
    for (name, offset, size) in symbols.in_section(section.index()) {
        let var_type = *vars.get(name.as_str()).ok_or_else(|| map_err(&name, "not described in BTF"))?;
        let (def, values_offset) = btf_map_def(btf, &name, var_type)?;
        let inner = match def.map_type {
            MapType::ArrayOfMaps | MapType::HashOfMaps => inner_template(btf, &name, var_type)?,
            _ => None,
        };
        out.push(MapSpec {
            name,
            origin: MapOrigin::Btf,
            def,
            data: None,
            prog_inits: Vec::new(),
            inner,
            map_inits: Vec::new(),
            section: section.index(),
            offset,
            size,
            values_offset,
        });
    }
    Ok(())
}

/// The definition of a map of maps' inner maps: the struct its `values` member points to, as libbpf's
/// `__array(values, struct { ... })` declares it (an array of pointers to that struct). `None` if
/// the definition has no such member.
fn inner_template(btf: &Btf, name: &str, var_type: u32) -> Result<Option<MapDef>, ElfError> {
    let Kind::Struct { members, .. } = &btf.resolve(var_type)?.kind else { return Ok(None) };
    let Some(values) = members.iter().find(|m| m.name == "values") else { return Ok(None) };
    let Kind::Array { elem, .. } = btf.resolve(values.target)?.kind else {
        return Err(map_err(name, "`values` of a map of maps is not an array"));
    };
    let Kind::Ptr { target } = btf.resolve(elem)?.kind else {
        return Err(map_err(name, "`values` of a map of maps does not hold pointers to a map definition"));
    };
    // The inner definition is read as a map's own; one of its own `values` is not looked into.
    let (def, _) = btf_map_def(btf, name, target)?;
    Ok(Some(def))
}

/// The value `N` of a field written `int (*field)[N]` (libbpf's `__uint`).
fn btf_uint(btf: &Btf, ptr: u32) -> Result<u32, ElfError> {
    match btf.resolve(ptr)?.kind {
        Kind::Ptr { target } => match btf.resolve(target)?.kind {
            Kind::Array { nelems, .. } => Ok(nelems),
            _ => Err(ElfError::Btf("__uint field does not point to an array")),
        },
        _ => Err(ElfError::Btf("__uint field is not a pointer")),
    }
}

/// A BTF map definition: the map's definition and the offset of its `values` member.
fn btf_map_def(btf: &Btf, name: &str, var_type: u32) -> Result<(MapDef, Option<u64>), ElfError> {
    let Kind::Struct { members, .. } = &btf.resolve(var_type)?.kind else {
        return Err(map_err(name, "BTF definition is not a struct"));
    };
    let (mut ty, mut key_size, mut value_size, mut max_entries, mut flags) = (None, None, None, None, 0);
    let mut values_offset = None;
    for m in members {
        match m.name.as_str() {
            "type" => ty = Some(btf_uint(btf, m.target)?),
            "max_entries" => max_entries = Some(btf_uint(btf, m.target)?),
            "map_flags" => flags = btf_uint(btf, m.target)?,
            "key_size" => key_size = Some(btf_uint(btf, m.target)?),
            "value_size" => value_size = Some(btf_uint(btf, m.target)?),
            "key" | "value" => {
                let Kind::Ptr { target } = btf.resolve(m.target)?.kind else {
                    return Err(map_err(name, "__type field is not a pointer"));
                };
                let size = Some(btf.size_of(target)?);
                if m.name == "key" {
                    key_size = size;
                } else {
                    value_size = size;
                }
            }
            "values" => {
                values_offset = Some(m.bit_offset as u64 / 8);
                if let Kind::Array { .. } = btf.resolve(m.target)?.kind {
                    value_size = value_size.or(Some(4));
                }
            }
            _ => {}
        }
    }
    let ty = MapType::from_raw(ty.ok_or_else(|| map_err(name, "no map type"))?);
    // What the kind implies where the definition says nothing (as libbpf and the kernel read it);
    // a size still missing is 0, left for the host to set before it creates the map (libbpf's
    // loaders do that with `bpf_map__set_max_entries` and the like), and creating it fails until then.
    let (default_key, default_value) = match ty.raw() {
        // Ring buffers, queues, stacks and bloom filters have no key; ring buffers no value either.
        27 | 31 => (0, 0),
        22 | 23 | 30 => (0, 0),
        // File descriptors and program ids: arrays of them, and maps of maps.
        3 | 4 | 8 | 12 | 14 | 15 | 16 | 17 | 18 | 20 => (4, 4),
        13 | 25 => (0, 4),
        // Local storage: keyed by a file descriptor.
        24 | 28 | 29 | 32 => (4, 0),
        // Stack traces: a u32 id.
        7 => (4, 0),
        _ => (0, 0),
    };
    let (key_size, value_size) = match ty {
        MapType::RingBuf => (0, 0),
        _ => (key_size.unwrap_or(default_key), value_size.unwrap_or(default_value)),
    };
    // A perf event array with no size has one entry per CPU: 0 here, sized when it is created.
    let max_entries = max_entries.unwrap_or(0);
    Ok((MapDef { map_type: ty, key_size, value_size, max_entries, flags }, values_offset))
}

/// Reads the legacy `maps` section: consecutive `struct bpf_map_def { type, key_size, value_size,
/// max_entries, map_flags }` of 4-byte fields.
fn legacy_maps(file: &File<'_>, symbols: &Symbols, out: &mut Vec<MapSpec>) -> Result<(), ElfError> {
    let Some(section) = file.section_by_name("maps") else { return Ok(()) };
    let data = section.data().map_err(parse_err)?;
    for (name, offset, size) in symbols.in_section(section.index()) {
        let field = |i: usize| -> Result<u32, ElfError> {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i * 4));
            let b = at
                .and_then(|a| data.get(a..a.checked_add(4)?))
                .ok_or_else(|| map_err(&name, "definition is truncated"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let def = MapDef {
            map_type: MapType::from_raw(field(0)?),
            key_size: field(1)?,
            value_size: field(2)?,
            max_entries: field(3)?,
            flags: field(4)?,
        };
        let (section, values_offset) = (section.index(), None);
        let spec = MapSpec {
            name,
            origin: MapOrigin::Legacy,
            def,
            data: None,
            prog_inits: Vec::new(),
            inner: None,
            map_inits: Vec::new(),
            section,
            offset,
            size,
            values_offset,
        };
        out.push(spec);
    }
    Ok(())
}

/// Turns each global data section into the definition of a one-entry array map holding its bytes;
/// `.rodata*` is read-only for programs.
fn global_data(file: &File<'_>, out: &mut Vec<MapSpec>) -> Result<(), ElfError> {
    for section in file.sections() {
        let name = section.name().map_err(parse_err)?.to_string();
        if !is_global_data(&name) || section.size() == 0 {
            continue;
        }
        let size = u32::try_from(section.size()).map_err(|_| map_err(&name, "section is too large"))?;
        let flags = if name.starts_with(".rodata") { BPF_F_RDONLY_PROG } else { 0 };
        let def = MapDef { map_type: MapType::Array, key_size: 4, value_size: size, max_entries: 1, flags };
        // Initial bytes come from the file (so they are as large as the file allows); `.bss` has none.
        let data = if section.kind() == object::SectionKind::UninitializedData {
            None
        } else {
            let d = section.data().map_err(parse_err)?;
            if d.len() != size as usize {
                return Err(map_err(&name, "section data does not match its size"));
            }
            Some(d.to_vec())
        };
        out.push(MapSpec {
            name,
            origin: MapOrigin::GlobalData,
            def,
            data,
            prog_inits: Vec::new(),
            inner: None,
            map_inits: Vec::new(),
            section: section.index(),
            offset: 0,
            size: section.size(),
            values_offset: None,
        });
    }
    Ok(())
}

/// Finds the `.kconfig` externs (undefined symbols described in BTF's `.kconfig` section), lays them
/// out, and adds the map that holds their values (zero until [`Object::set_kconfig`]).
fn kconfig_externs(file: &File<'_>, btf: Option<&Btf>, out: &mut Vec<MapSpec>) -> Result<Vec<KconfigExtern>, ElfError> {
    let undefined: Vec<(String, bool)> = file
        .symbols()
        .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
        .map(|s| (s.name().unwrap_or("").to_string(), s.is_weak()))
        .collect();
    let Some(btf) = btf.filter(|_| !undefined.is_empty()) else { return Ok(Vec::new()) };
    let vars = datasec_vars(btf, ".kconfig");
    let mut found = Vec::new();
    for (name, weak) in undefined {
        let Some(&target) = vars.get(name.as_str()) else { continue };
        let bad = |reason: &str| ElfError::Extern { name: name.clone(), reason: reason.to_string() };
        let t = btf.resolve(target)?;
        let (kind, size) = match &t.kind {
            Kind::Int { size: 1, encoding } if encoding & 4 != 0 => (KconfigKind::Bool, 1),
            Kind::Int { size: 1, encoding } if encoding & 2 != 0 => (KconfigKind::Char, 1),
            Kind::Int { size, encoding } => (KconfigKind::Int { signed: encoding & 1 != 0 }, *size),
            Kind::Enum { size } if t.name == "libbpf_tristate" => (KconfigKind::Tristate, *size),
            Kind::Enum { size } => (KconfigKind::Int { signed: false }, *size),
            Kind::Array { elem, nelems } => match btf.resolve(*elem)?.kind {
                Kind::Int { size: 1, .. } if *nelems > 0 => (KconfigKind::Str, *nelems),
                _ => return Err(bad("an array extern must be of char")),
            },
            _ => return Err(bad("a .kconfig extern must be a bool, char, integer, libbpf_tristate or char array")),
        };
        if !matches!(kind, KconfigKind::Str) && ![1, 2, 4, 8].contains(&size) {
            return Err(bad("integers of 1, 2, 4 or 8 bytes only"));
        }
        if size > 4096 {
            return Err(bad("larger than 4096 bytes"));
        }
        found.push((name, kind, size, weak));
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    if found.len() > 4096 {
        return Err(ElfError::Extern { name: ".kconfig".into(), reason: "more than 4096 externs".into() });
    }
    let (externs, size) = kconfig::layout(found)
        .ok_or_else(|| ElfError::Extern { name: ".kconfig".into(), reason: "the values overflow".into() })?;
    let def = MapDef {
        map_type: MapType::Array,
        key_size: 4,
        value_size: size.max(1),
        max_entries: 1,
        flags: BPF_F_RDONLY_PROG,
    };
    out.push(MapSpec {
        name: ".kconfig".into(),
        origin: MapOrigin::Kconfig,
        def,
        data: Some(alloc::vec![0; size.max(1) as usize]),
        prog_inits: Vec::new(),
        inner: None,
        map_inits: Vec::new(),
        section: SectionIndex(0),
        offset: 0,
        size: u64::from(size.max(1)),
        values_offset: None,
    });
    Ok(externs)
}

fn slots_of(data: &[u8]) -> Vec<Insn> {
    data.chunks_exact(INSN_SIZE)
        .map(|c| {
            let mut b = [0u8; INSN_SIZE];
            b.copy_from_slice(c);
            Insn::from_bytes(b)
        })
        .collect()
}

/// Relocations of a section, by offset: (offset, symbol section, symbol address, symbol name).
type Relocs = BTreeMap<u64, (Option<SectionIndex>, u64, String)>;

fn relocations(
    file: &File<'_>,
    section: &object::read::elf::ElfSection64<'_, '_, LittleEndian>,
) -> Result<Relocs, ElfError> {
    let mut out = BTreeMap::new();
    let sec_name = section.name().unwrap_or("?").to_string();
    for (offset, rel) in section.relocations() {
        let RelocationTarget::Symbol(index) = rel.target() else {
            return Err(ElfError::Relocation {
                section: sec_name,
                offset,
                reason: "relocation without a symbol".into(),
            });
        };
        let sym = file.symbol_by_index(index).map_err(parse_err)?;
        out.insert(offset, (sym.section_index(), sym.address(), sym.name().unwrap_or("").to_string()));
    }
    Ok(out)
}

/// Builds every program: its function's slots, `.text` appended when called, relocations applied.
fn link_programs(
    file: &File<'_>,
    symbols: &Symbols,
    maps: &[MapSpec],
    kconfig: &[KconfigExtern],
    (line_info, func_info): (&btf_ext::LineInfo, &btf_ext::FuncInfo),
    out: &mut Vec<ObjectProgram>,
) -> Result<(), ElfError> {
    let text = file.section_by_name(".text");
    let (text_slots, text_relocs, text_index) = match &text {
        Some(t) => (slots_of(t.data().map_err(parse_err)?), relocations(file, t)?, Some(t.index())),
        None => (Vec::new(), BTreeMap::new(), None),
    };
    let index = MapIndex::new(maps, kconfig);
    let mut total = 0usize;
    for section in file.sections() {
        let sec_name = section.name().map_err(parse_err)?.to_string();
        let exec = matches!(section.flags(), object::SectionFlags::Elf { sh_flags } if sh_flags & SHF_EXECINSTR != 0);
        if !exec || Some(section.index()) == text_index || section.size() == 0 {
            continue;
        }
        let data = section.data().map_err(parse_err)?;
        let slots = slots_of(data);
        let relocs = relocations(file, &section)?;
        for (name, addr, size) in symbols.functions(section.index()) {
            let (start, len) = ((addr / 8) as usize, (size / 8) as usize);
            let Some(own) = slots.get(start..start.saturating_add(len)) else {
                return Err(ElfError::Relocation {
                    section: sec_name,
                    offset: addr,
                    reason: format!("function `{name}` lies outside its section"),
                });
            };
            let mut code = own.to_vec();
            let text_base = code.len();
            let mut need_text = false;
            for (&off, target) in relocs.range(addr..addr.saturating_add(size)) {
                let at = ((off - addr) / 8) as usize;
                need_text |= apply(&mut code, at, target, &index, text_index, text_base, &sec_name, off)?;
            }
            let mut moved: Option<Vec<Option<usize>>> = None;
            if need_text {
                total = total.saturating_add(text_slots.len());
                if total > MAX_OBJECT_SLOTS {
                    return Err(ElfError::TooLarge);
                }
                code.extend_from_slice(&text_slots);
                for (&off, target) in &text_relocs {
                    let at = text_base.saturating_add(usize::try_from(off / 8).unwrap_or(usize::MAX));
                    apply(&mut code, at, target, &index, text_index, text_base, ".text", off)?;
                }
                // Functions the program never reaches would be code no path runs: left out (when the
                // symbols say where each function is).
                if let Some(ranges) = text_index.and_then(|t| symbols.function_ranges(t, text_slots.len())) {
                    moved = Some(keep_used_text(&mut code, text_base, &ranges));
                }
            }
            total = total.saturating_add(own.len());
            if total > MAX_OBJECT_SLOTS {
                return Err(ElfError::TooLarge);
            }
            let bytes: Vec<u8> = code.iter().flat_map(|i| i.to_bytes()).collect();
            let program = Program::from_bytes(&bytes)
                .map_err(|error| ElfError::Program { name: name.clone(), error })?
                .with_name(name.clone());
            // Line info of the function's own slots, then of `.text` where it was appended (offsets
            // outside the code are ignored).
            let mut lines = Vec::new();
            if let Some(own_lines) = line_info.get(&sec_name) {
                for (&off, l) in own_lines.range(addr..addr.saturating_add(size)) {
                    lines.push((((off - addr) / 8) as usize, l.clone()));
                }
            }
            if need_text {
                if let Some(text_lines) = line_info.get(".text") {
                    for (&off, l) in text_lines.range(..(text_slots.len() as u64).saturating_mul(8)) {
                        let slot = (off / 8) as usize;
                        let at = match &moved {
                            Some(moved) => moved.get(slot).copied().flatten(),
                            None => Some(text_base + slot),
                        };
                        if let Some(at) = at {
                            lines.push((at, l.clone()));
                        }
                    }
                }
            }
            // Function names likewise, where the object has function info.
            let mut functions = Vec::new();
            if let Some(own) = func_info.get(&sec_name) {
                for (&off, n) in own.range(addr..addr.saturating_add(size)) {
                    functions.push((((off - addr) / 8) as usize, Arc::clone(n)));
                }
            }
            if need_text {
                if let Some(text) = func_info.get(".text") {
                    for (&off, n) in text.range(..(text_slots.len() as u64).saturating_mul(8)) {
                        let slot = (off / 8) as usize;
                        let at = match &moved {
                            Some(moved) => moved.get(slot).copied().flatten(),
                            None => Some(text_base + slot),
                        };
                        if let Some(at) = at {
                            functions.push((at, Arc::clone(n)));
                        }
                    }
                }
            }
            out.push(ObjectProgram { name, section: sec_name.clone(), program, lines, functions });
        }
    }
    Ok(())
}

/// The maps by where their symbols are: a global data section, or a section and offset.
struct MapIndex<'m> {
    maps: &'m [MapSpec],
    data: BTreeMap<usize, usize>,
    defs: BTreeMap<(usize, u64), usize>,
    /// `.kconfig` externs by name: the `.kconfig` map's index and the extern's offset in its value.
    externs: BTreeMap<&'m str, (usize, u32)>,
}

impl<'m> MapIndex<'m> {
    fn new(maps: &'m [MapSpec], kconfig: &'m [KconfigExtern]) -> MapIndex<'m> {
        let (mut data, mut defs, mut externs) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for (i, m) in maps.iter().enumerate() {
            match m.origin {
                MapOrigin::GlobalData => {
                    data.entry(m.section.0).or_insert(i);
                }
                MapOrigin::Kconfig => {
                    for e in kconfig {
                        externs.insert(e.name.as_str(), (i, e.offset));
                    }
                }
                _ => {
                    defs.entry((m.section.0, m.offset)).or_insert(i);
                }
            }
        }
        MapIndex { maps, data, defs, externs }
    }

    /// The map a symbol at `addr` of `section` names, with its index.
    fn find(&self, section: SectionIndex, addr: u64) -> Option<(usize, &'m MapSpec)> {
        let i = *self.data.get(&section.0).or_else(|| self.defs.get(&(section.0, addr)))?;
        Some((i, &self.maps[i]))
    }
}

/// Applies one relocation to the slot `at` of `code`. Returns whether it calls into `.text`.
#[allow(clippy::too_many_arguments)]
fn apply(
    code: &mut [Insn],
    at: usize,
    (sym_section, sym_addr, sym_name): &(Option<SectionIndex>, u64, String),
    maps: &MapIndex<'_>,
    text_index: Option<SectionIndex>,
    text_base: usize,
    section: &str,
    offset: u64,
) -> Result<bool, ElfError> {
    let fail = |reason: String| ElfError::Relocation { section: section.to_string(), offset, reason };
    let insn = *code.get(at).ok_or_else(|| fail("relocation outside the code".into()))?;
    if insn.opcode == opcode::LDDW && sym_section.is_none() {
        // An extern: the address of its value in the `.kconfig` map.
        let &(index, offset) = maps.externs.get(sym_name.as_str()).ok_or_else(|| {
            fail(format!(
                "lddw refers to `{sym_name}`, an extern that is not in .kconfig (only .kconfig externs are resolved)"
            ))
        })?;
        let index = i32::try_from(index).map_err(|_| fail("too many maps".into()))?;
        if insn.imm != 0 {
            return Err(fail(format!("lddw of extern `{sym_name}` with an addend")));
        }
        let next = code.get_mut(at + 1).ok_or_else(|| fail("lddw is cut in half".into()))?;
        next.imm = offset as i32;
        code[at].src = opcode::PSEUDO_MAP_VALUE;
        code[at].imm = index;
        return Ok(false);
    }
    if insn.opcode == opcode::LDDW && text_index.is_some() && *sym_section == text_index {
        // The address of a `.text` function (a callback for `bpf_loop`): symbol plus the addend in imm,
        // in bytes, made relative to the slot after the lddw, as libbpf does.
        let off = (*sym_addr as i64).wrapping_add(insn.imm as i64);
        if off < 0 || off % 8 != 0 {
            return Err(fail(format!("lddw of function `{sym_name}` at byte {off} of .text, not a slot")));
        }
        let rel = (text_base as i64).saturating_add(off / 8).saturating_sub(at as i64 + 1);
        let next = code.get_mut(at + 1).ok_or_else(|| fail("lddw is cut in half".into()))?;
        next.imm = 0;
        code[at].src = opcode::PSEUDO_FUNC;
        code[at].imm = i32::try_from(rel).map_err(|_| fail("function offset out of range".into()))?;
        return Ok(true);
    }
    if insn.opcode == opcode::LDDW {
        let (index, m) = sym_section
            .and_then(|s| maps.find(s, *sym_addr))
            .ok_or_else(|| fail(format!("lddw refers to `{sym_name}`, which is no map or global variable")))?;
        let index = i32::try_from(index).map_err(|_| fail("too many maps".into()))?;
        let next = code.get_mut(at + 1).ok_or_else(|| fail("lddw is cut in half".into()))?;
        if m.origin == MapOrigin::GlobalData {
            // Address of a global variable: map value + symbol offset + addend in imm.
            let off = (*sym_addr as i64).wrapping_add(insn.imm as i64);
            if off < 0 || off as u64 >= m.size.max(1) {
                return Err(fail(format!("offset {off} is outside `{}`", m.name)));
            }
            next.imm = off as i32;
            code[at].src = opcode::PSEUDO_MAP_VALUE;
        } else {
            next.imm = 0;
            code[at].src = opcode::PSEUDO_MAP_FD;
        }
        code[at].imm = index;
        return Ok(false);
    }
    if insn.opcode == opcode::CALL && insn.src == opcode::CALL_LOCAL {
        if *sym_section != text_index || text_index.is_none() {
            return Err(fail(format!("call to `{sym_name}`, which is not in .text")));
        }
        let target = (*sym_addr / 8) as i64 + insn.imm as i64 + 1;
        let abs = text_base as i64 + target;
        let rel = abs - at as i64 - 1;
        code[at].imm = i32::try_from(rel).map_err(|_| fail("call offset out of range".into()))?;
        return Ok(true);
    }
    Err(fail(format!("unsupported relocation against `{sym_name}` on opcode {:#04x}", insn.opcode)))
}

/// Reads the initial entries of program arrays from `.maps` relocations of their `values` member.
fn prog_array_inits(file: &File<'_>, maps: &mut [MapSpec], programs: &[ObjectProgram]) -> Result<(), ElfError> {
    let Some(section) = file.section_by_name(".maps") else { return Ok(()) };
    // BTF maps by offset in `.maps` (they come in that order), to find each relocation's map at once.
    let mut btf: Vec<usize> = (0..maps.len()).filter(|&i| maps[i].origin == MapOrigin::Btf).collect();
    btf.sort_by_key(|&i| maps[i].offset);
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, p) in programs.iter().enumerate() {
        ids.entry(p.name.as_str()).or_insert(id);
    }
    let mut map_ids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in maps.iter().enumerate() {
        map_ids.entry(m.name.clone()).or_insert(i);
    }
    for (offset, (_, _, target)) in relocations(file, &section)? {
        let k = btf.partition_point(|&i| maps[i].offset <= offset);
        let m = k
            .checked_sub(1)
            .map(|k| &mut maps[btf[k]])
            .filter(|m| offset < m.offset.saturating_add(m.size))
            .ok_or_else(|| ElfError::Relocation {
                section: ".maps".into(),
                offset,
                reason: "relocation outside every map".into(),
            })?;
        let values = m.values_offset.ok_or_else(|| map_err(&m.name, "initial values without a `values` member"))?;
        let of_maps = matches!(m.def.map_type, MapType::ArrayOfMaps | MapType::HashOfMaps);
        if m.def.map_type != MapType::ProgArray && !of_maps {
            return Err(map_err(&m.name, "only program arrays and maps of maps can have initial values"));
        }
        let rel = offset - m.offset;
        if rel < values || (rel - values) % 8 != 0 {
            return Err(map_err(&m.name, "initial value at a misaligned offset"));
        }
        let index = u32::try_from((rel - values) / 8)
            .ok()
            .filter(|&i| i < m.def.max_entries)
            .ok_or_else(|| map_err(&m.name, "initial value past the end of the array"))?;
        if of_maps {
            let inner = *map_ids
                .get(target.as_str())
                .ok_or_else(|| map_err(&m.name, format!("initial value `{target}` is no map")))?;
            m.map_inits.push((index, inner as u32));
            continue;
        }
        let id = *ids
            .get(target.as_str())
            .ok_or_else(|| map_err(&m.name, format!("initial value `{target}` is no program")))?;
        m.prog_inits.push((index, id as u32));
    }
    Ok(())
}
