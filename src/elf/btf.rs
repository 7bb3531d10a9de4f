//! A small reader for the parts of BTF the loader needs: type sizes, struct members, arrays, pointers,
//! variables and data sections. Every offset is checked; malformed BTF is an error, never a panic.

use alloc::string::String;
use alloc::vec::Vec;

use super::ElfError;

const MAGIC: u16 = 0xeb9f;

/// A BTF type kind with the data the loader uses.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Int {
        size: u32,
        /// BTF's encoding bits: 1 signed, 2 char, 4 bool.
        encoding: u32,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    Struct {
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        size: u32,
    },
    /// typedef, volatile, const, restrict, type tag: the type they qualify.
    Alias {
        target: u32,
    },
    Var {
        target: u32,
    },
    DataSec {
        size: u32,
        vars: Vec<SecVar>,
    },
    Float {
        size: u32,
    },
    Other,
}

/// A member of a struct or union.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) target: u32,
    /// Offset in bits.
    pub(crate) bit_offset: u32,
}

/// A variable of a data section.
#[derive(Debug, Clone)]
pub(crate) struct SecVar {
    pub(crate) var: u32,
}

/// One type: its name and kind.
#[derive(Debug, Clone)]
pub(crate) struct Type {
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

/// Parsed BTF: types by id (id 0 is `void`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Btf {
    types: Vec<Type>,
    /// The string section (names, and the source lines line info points to).
    strings: Vec<u8>,
}

fn err(reason: &'static str) -> ElfError {
    ElfError::Btf(reason)
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, ElfError> {
        let b = self.data.get(self.pos..self.pos + 4).ok_or(err("type data ends early"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), ElfError> {
        self.pos = self.pos.checked_add(n).filter(|&p| p <= self.data.len()).ok_or(err("type data ends early"))?;
        Ok(())
    }
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, ElfError> {
    let s = b.get(at..at + 4).ok_or(err("header ends early"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    /// Parses a `.BTF` section (little-endian).
    pub(crate) fn parse(data: &[u8]) -> Result<Btf, ElfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(err("bad magic (only little-endian BTF is supported)"));
        }
        let hdr_len = read_u32(data, 4)? as usize;
        let (type_off, type_len) = (read_u32(data, 8)? as usize, read_u32(data, 12)? as usize);
        let (str_off, str_len) = (read_u32(data, 16)? as usize, read_u32(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or(err("section offset overflows"))?;
            let end = start.checked_add(len).ok_or(err("section length overflows"))?;
            data.get(start..end).ok_or(err("section lies outside the data"))
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let name = |off: u32| -> Result<String, ElfError> {
            let rest = strings.get(off as usize..).ok_or(err("name offset outside the strings"))?;
            let end = rest.iter().position(|&b| b == 0).ok_or(err("name is not terminated"))?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        };

        let mut out = alloc::vec![Type { name: String::new(), kind: Kind::Other }];
        let mut c = Cursor { data: types, pos: 0 };
        while c.pos < types.len() {
            let name_off = c.u32()?;
            let info = c.u32()?;
            let size_or_type = c.u32()?;
            let vlen = (info & 0xffff) as usize;
            let kind = match (info >> 24) & 0x1f {
                1 => {
                    let word = c.u32()?;
                    Kind::Int { size: size_or_type, encoding: (word >> 24) & 0xf }
                }
                2 => Kind::Ptr { target: size_or_type },
                3 => {
                    let elem = c.u32()?;
                    let _index = c.u32()?;
                    let nelems = c.u32()?;
                    Kind::Array { elem, nelems }
                }
                4 | 5 => {
                    let mut members = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        let n = c.u32()?;
                        let target = c.u32()?;
                        let off = c.u32()?;
                        // With kind_flag, the offset's top 8 bits are a bitfield size.
                        let bit_offset = if info >> 31 != 0 { off & 0x00ff_ffff } else { off };
                        members.push(Member { name: name(n)?, target, bit_offset });
                    }
                    Kind::Struct { size: size_or_type, members }
                }
                6 => {
                    c.skip(vlen.checked_mul(8).ok_or(err("enum too long"))?)?;
                    Kind::Enum { size: size_or_type }
                }
                7 => Kind::Other,
                8..=11 | 18 => Kind::Alias { target: size_or_type },
                12 => Kind::Other,
                13 => {
                    c.skip(vlen.checked_mul(8).ok_or(err("prototype too long"))?)?;
                    Kind::Other
                }
                14 => {
                    c.skip(4)?;
                    Kind::Var { target: size_or_type }
                }
                15 => {
                    let mut vars = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        let var = c.u32()?;
                        c.skip(8)?; // offset and size
                        vars.push(SecVar { var });
                    }
                    Kind::DataSec { size: size_or_type, vars }
                }
                16 => Kind::Float { size: size_or_type },
                17 => {
                    c.skip(4)?;
                    Kind::Other
                }
                19 => {
                    c.skip(vlen.checked_mul(12).ok_or(err("enum too long"))?)?;
                    Kind::Enum { size: size_or_type }
                }
                _ => return Err(err("unknown type kind")),
            };
            out.push(Type { name: name(name_off)?, kind });
        }
        Ok(Btf { types: out, strings: strings.to_vec() })
    }

    /// At most `max` bytes of the string at `off` (up to its NUL).
    pub(crate) fn string_prefix(&self, off: u32, max: usize) -> Option<String> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().take(max).position(|&b| b == 0).unwrap_or(rest.len().min(max));
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// The type with this id.
    pub(crate) fn get(&self, id: u32) -> Result<&Type, ElfError> {
        self.types.get(id as usize).ok_or(err("reference to a type id that does not exist"))
    }

    /// Follows typedefs and qualifiers.
    pub(crate) fn resolve(&self, mut id: u32) -> Result<&Type, ElfError> {
        for _ in 0..64 {
            let t = self.get(id)?;
            match t.kind {
                Kind::Alias { target } => id = target,
                _ => return Ok(t),
            }
        }
        Err(err("type alias chain is too long"))
    }

    /// The size in bytes of a type.
    pub(crate) fn size_of(&self, id: u32) -> Result<u32, ElfError> {
        self.size_depth(id, 0)
    }

    fn size_depth(&self, id: u32, depth: u32) -> Result<u32, ElfError> {
        if depth > 32 {
            return Err(err("type nesting is too deep"));
        }
        Ok(match self.resolve(id)?.kind {
            Kind::Int { size, .. } | Kind::Struct { size, .. } | Kind::Enum { size } | Kind::Float { size } => size,
            Kind::DataSec { size, .. } => size,
            Kind::Ptr { .. } => 8,
            Kind::Array { elem, nelems } => {
                self.size_depth(elem, depth + 1)?.checked_mul(nelems).ok_or(err("array size overflows"))?
            }
            Kind::Var { target } => self.size_depth(target, depth + 1)?,
            Kind::Alias { .. } | Kind::Other => return Err(err("type has no size")),
        })
    }

    /// All types (id = position).
    pub(crate) fn types(&self) -> &[Type] {
        &self.types
    }
}
