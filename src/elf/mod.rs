//! The loader for BPF objects as clang emits them with libbpf's `bpf_helpers.h`.
//!
//! It finds programs by `SEC()` name (one per global function of an executable section), links `.text`
//! subprograms into the programs that call them, creates the maps defined in `.maps` (BTF-defined) and
//! `maps` (legacy `struct bpf_map_def`), turns global data (`.data*`, `.rodata*`, `.bss*`) into
//! one-entry array maps, fills program arrays from their declarative initialisers, and resolves the
//! `lddw` relocations to those maps. Every malformed object is an [`ElfError`], never a panic.

mod btf;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use object::read::elf::ElfFile64;
use object::{LittleEndian, Object as _, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SymbolKind};

use crate::isa::{opcode, Insn, INSN_SIZE};
use crate::maps::{self, Map, MapDef, MapError, MapType, ProgArrayMap};
use crate::program::{Program, ProgramError};
use crate::vm::{Env, Vm, VmBuilder};
use btf::{Btf, Kind};

/// Why an object cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// A map definition is malformed or cannot be created.
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
    /// No program of that name or section.
    #[error("no program named `{0}` (by function or section name)")]
    NoProgram(String),
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
}

/// A map of an object.
#[derive(Clone)]
pub struct ObjectMap {
    /// The map's name (the variable, or the data section's name).
    pub name: String,
    /// Where it was defined.
    pub origin: MapOrigin,
    /// The map.
    pub map: Arc<dyn Map>,
    section: SectionIndex,
    offset: u64,
    size: u64,
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
}

/// A loaded BPF object: its programs, its maps (shared by all its programs), and its license.
#[derive(Clone)]
pub struct Object {
    programs: Vec<ObjectProgram>,
    maps: Vec<ObjectMap>,
    license: String,
}

const SHF_EXECINSTR: u64 = 0x4;

fn parse_err(e: object::Error) -> ElfError {
    ElfError::Parse(e.to_string())
}

fn map_err(name: &str, reason: impl ToString) -> ElfError {
    ElfError::Map { name: name.to_string(), reason: reason.to_string() }
}

fn is_global_data(name: &str) -> bool {
    [".data", ".rodata", ".bss"].iter().any(|p| name == *p || name.starts_with(&format!("{p}.")))
}

/// What a BTF map definition says.
#[derive(Default)]
struct BtfMapDef {
    def: Option<MapDef>,
    /// Byte offset of the `values` member (initial values of program arrays).
    values_offset: Option<u64>,
}

impl Object {
    /// Parses and loads an object: creates its maps and links its programs.
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

        let mut maps = Vec::new();
        load_btf_maps(&file, btf.as_ref(), &mut maps)?;
        load_legacy_maps(&file, &mut maps)?;
        load_global_data(&file, &mut maps)?;

        let mut programs = Vec::new();
        link_programs(&file, &maps, &mut programs)?;
        init_prog_arrays(&file, btf.as_ref(), &maps, &programs)?;
        Ok(Object { programs, maps, license })
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
        let by_name = self.programs.iter().position(|p| p.name == name);
        by_name.or_else(|| self.programs.iter().position(|p| p.section == name)).map(|i| i as u32)
    }

    /// The maps, in the order of their indices.
    pub fn maps(&self) -> &[ObjectMap] {
        &self.maps
    }

    /// The map with this name.
    pub fn map(&self, name: &str) -> Option<&Arc<dyn Map>> {
        self.maps.iter().find(|m| m.name == name).map(|m| &m.map)
    }

    /// The license string.
    pub fn license(&self) -> &str {
        &self.license
    }

    /// An environment with the object's maps (by index) and the standard helpers.
    pub fn env(&self) -> Env {
        let mut env = Env::new();
        env.add_standard_helpers();
        for m in &self.maps {
            env.add_map(Arc::clone(&m.map));
        }
        env
    }

    /// A builder for a `Vm` running program `name`, with [`env`](Object::env) and every program of
    /// the object as a tail-call target (by id).
    pub fn vm_builder(&self, name: &str) -> Result<VmBuilder, ElfError> {
        let p = self.program(name).ok_or_else(|| ElfError::NoProgram(name.to_string()))?;
        Ok(Vm::builder(p.program.clone())
            .env(self.env())
            .tail_call_targets(self.programs.iter().map(|p| p.program.clone()).collect()))
    }
}

type File<'a> = ElfFile64<'a, LittleEndian>;

/// The bytes of a `u64` buffer.
fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = words.len() * 8;
    // SAFETY: `u64` has no padding and every byte pattern is a valid `u8`; the slice covers exactly the
    // buffer's memory and borrows it mutably for its lifetime.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

/// The symbols defined in a section, sorted by address: (name, address, size).
fn symbols_in(file: &File<'_>, section: SectionIndex, kind: Option<SymbolKind>) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = file
        .symbols()
        .filter(|s| s.section_index() == Some(section) && kind.is_none_or(|k| s.kind() == k))
        .filter(|s| s.kind() != SymbolKind::Section)
        .map(|s| (s.name().unwrap_or("").to_string(), s.address(), s.size()))
        .collect();
    out.sort_by_key(|s| s.1);
    out.dedup_by_key(|s| s.1);
    out
}

/// Reads `.maps`: each variable's BTF struct of pointer-encoded fields.
fn load_btf_maps(file: &File<'_>, btf: Option<&Btf>, out: &mut Vec<ObjectMap>) -> Result<(), ElfError> {
    let Some(section) = file.section_by_name(".maps") else { return Ok(()) };
    let btf = btf.ok_or(ElfError::Btf("the object has .maps but no .BTF"))?;
    for (name, offset, size) in symbols_in(file, section.index(), None) {
        let parsed = btf_map_def(btf, &name)?;
        let def = parsed.def.ok_or_else(|| map_err(&name, "no BTF definition"))?;
        let map = maps::create(def).map_err(|e| map_err(&name, e))?;
        out.push(ObjectMap { name, origin: MapOrigin::Btf, map, section: section.index(), offset, size });
    }
    Ok(())
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

fn btf_map_def(btf: &Btf, name: &str) -> Result<BtfMapDef, ElfError> {
    // The map variable: a VAR of that name listed in the `.maps` DATASEC.
    let var_type = btf
        .types()
        .iter()
        .filter_map(|t| match &t.kind {
            Kind::DataSec { vars, .. } if t.name == ".maps" => Some(vars),
            _ => None,
        })
        .flatten()
        .find_map(|v| match btf.get(v.var) {
            Ok(t) if t.name == name => match t.kind {
                Kind::Var { target } => Some(target),
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| map_err(name, "not described in BTF"))?;
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
    let (key_size, value_size) = match ty {
        MapType::RingBuf => (0, 0),
        MapType::ProgArray => (key_size.unwrap_or(4), value_size.unwrap_or(4)),
        _ => (
            key_size.ok_or_else(|| map_err(name, "no key size"))?,
            value_size.ok_or_else(|| map_err(name, "no value size"))?,
        ),
    };
    let max_entries = max_entries.ok_or_else(|| map_err(name, "no max_entries"))?;
    Ok(BtfMapDef { def: Some(MapDef { map_type: ty, key_size, value_size, max_entries, flags }), values_offset })
}

/// Reads the legacy `maps` section: consecutive `struct bpf_map_def { type, key_size, value_size,
/// max_entries, map_flags }` of 4-byte fields.
fn load_legacy_maps(file: &File<'_>, out: &mut Vec<ObjectMap>) -> Result<(), ElfError> {
    let Some(section) = file.section_by_name("maps") else { return Ok(()) };
    let data = section.data().map_err(parse_err)?;
    for (name, offset, size) in symbols_in(file, section.index(), None) {
        let field = |i: usize| -> Result<u32, ElfError> {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i * 4));
            let b = at.and_then(|a| data.get(a..a + 4)).ok_or_else(|| map_err(&name, "definition is truncated"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let def = MapDef {
            map_type: MapType::from_raw(field(0)?),
            key_size: field(1)?,
            value_size: field(2)?,
            max_entries: field(3)?,
            flags: field(4)?,
        };
        let map = maps::create(def).map_err(|e| map_err(&name, e))?;
        out.push(ObjectMap { name, origin: MapOrigin::Legacy, map, section: section.index(), offset, size });
    }
    Ok(())
}

/// Turns each global data section into a one-entry array map holding its bytes.
fn load_global_data(file: &File<'_>, out: &mut Vec<ObjectMap>) -> Result<(), ElfError> {
    for section in file.sections() {
        let name = section.name().map_err(parse_err)?.to_string();
        if !is_global_data(&name) || section.size() == 0 {
            continue;
        }
        let size = u32::try_from(section.size()).map_err(|_| map_err(&name, "section is too large"))?;
        let def = MapDef { map_type: MapType::Array, key_size: 4, value_size: size, max_entries: 1, flags: 0 };
        let map = maps::create(def).map_err(|e| map_err(&name, e))?;
        if section.kind() != object::SectionKind::UninitializedData {
            let data = section.data().map_err(parse_err)?;
            map.update(&0u32.to_ne_bytes(), data, maps::BPF_ANY, 0).map_err(|e: MapError| map_err(&name, e))?;
        }
        out.push(ObjectMap {
            name,
            origin: MapOrigin::GlobalData,
            map,
            section: section.index(),
            offset: 0,
            size: section.size(),
        });
    }
    Ok(())
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
fn link_programs(file: &File<'_>, maps: &[ObjectMap], out: &mut Vec<ObjectProgram>) -> Result<(), ElfError> {
    let text = file.section_by_name(".text");
    let (text_slots, text_relocs, text_index) = match &text {
        Some(t) => (slots_of(t.data().map_err(parse_err)?), relocations(file, t)?, Some(t.index())),
        None => (Vec::new(), BTreeMap::new(), None),
    };
    for section in file.sections() {
        let sec_name = section.name().map_err(parse_err)?.to_string();
        let exec = matches!(section.flags(), object::SectionFlags::Elf { sh_flags } if sh_flags & SHF_EXECINSTR != 0);
        if !exec || Some(section.index()) == text_index || section.size() == 0 {
            continue;
        }
        let data = section.data().map_err(parse_err)?;
        let slots = slots_of(data);
        let relocs = relocations(file, &section)?;
        let funcs: Vec<_> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()) && s.kind() == SymbolKind::Text && s.is_global())
            .map(|s| (s.name().unwrap_or("").to_string(), s.address(), s.size()))
            .collect();
        for (name, addr, size) in funcs {
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
            for (&off, target) in relocs.range(addr..addr + size) {
                let at = ((off - addr) / 8) as usize;
                need_text |= apply(&mut code, at, target, maps, text_index, text_base, &sec_name, off)?;
            }
            if need_text {
                code.extend_from_slice(&text_slots);
                for (&off, target) in &text_relocs {
                    let at = text_base + (off / 8) as usize;
                    apply(&mut code, at, target, maps, text_index, text_base, ".text", off)?;
                }
            }
            let bytes: Vec<u8> = code.iter().flat_map(|i| i.to_bytes()).collect();
            let program = Program::from_bytes(&bytes)
                .map_err(|error| ElfError::Program { name: name.clone(), error })?
                .with_name(name.clone());
            out.push(ObjectProgram { name, section: sec_name.clone(), program });
        }
    }
    Ok(())
}

/// Applies one relocation to the slot `at` of `code`. Returns whether it calls into `.text`.
#[allow(clippy::too_many_arguments)]
fn apply(
    code: &mut [Insn],
    at: usize,
    (sym_section, sym_addr, sym_name): &(Option<SectionIndex>, u64, String),
    maps: &[ObjectMap],
    text_index: Option<SectionIndex>,
    text_base: usize,
    section: &str,
    offset: u64,
) -> Result<bool, ElfError> {
    let fail = |reason: String| ElfError::Relocation { section: section.to_string(), offset, reason };
    let insn = *code.get(at).ok_or_else(|| fail("relocation outside the code".into()))?;
    if insn.opcode == opcode::LDDW {
        let (index, m) = maps
            .iter()
            .enumerate()
            .find(|(_, m)| {
                Some(m.section) == *sym_section && (m.origin == MapOrigin::GlobalData || m.offset == *sym_addr)
            })
            .ok_or_else(|| fail(format!("lddw refers to `{sym_name}`, which is no map or global variable")))?;
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
        code[at].imm = index as i32;
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

/// Fills program arrays from `.maps` relocations of their `values` member.
fn init_prog_arrays(
    file: &File<'_>,
    btf: Option<&Btf>,
    maps: &[ObjectMap],
    programs: &[ObjectProgram],
) -> Result<(), ElfError> {
    let (Some(section), Some(btf)) = (file.section_by_name(".maps"), btf) else { return Ok(()) };
    for (offset, (_, _, target)) in relocations(file, &section)? {
        let m = maps
            .iter()
            .find(|m| m.origin == MapOrigin::Btf && m.offset <= offset && offset < m.offset + m.size)
            .ok_or_else(|| ElfError::Relocation {
                section: ".maps".into(),
                offset,
                reason: "relocation outside every map".into(),
            })?;
        let values = btf_map_def(btf, &m.name)?
            .values_offset
            .ok_or_else(|| map_err(&m.name, "initial values without a `values` member"))?;
        let pa = m
            .map
            .downcast_ref::<ProgArrayMap>()
            .ok_or_else(|| map_err(&m.name, "only program arrays can have initial values"))?;
        let rel = offset - m.offset;
        if rel < values || (rel - values) % 8 != 0 {
            return Err(map_err(&m.name, "initial value at a misaligned offset"));
        }
        let index = ((rel - values) / 8) as u32;
        let id = programs
            .iter()
            .position(|p| p.name == target)
            .ok_or_else(|| map_err(&m.name, format!("initial value `{target}` is no program")))?;
        pa.set(index, id as u32).map_err(|e| map_err(&m.name, e))?;
    }
    Ok(())
}
