//! `.BTF.ext` line info: for instructions of each code section, the C source line they came from
//! (file, line, column and the line's text, as clang `-g` records them), as `bpftool prog dump
//! xlated linum` shows them.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;

use super::btf::Btf;
use super::ElfError;

const MAGIC: u16 = 0xeb9f;

/// The most bytes of a file name or line text kept: records may point many times into long strings,
/// and what the loader keeps must stay proportional to the section's size.
pub const MAX_LINE_TEXT: usize = 256;

/// The source line of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// The source file.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column (0 when unknown).
    pub column: u32,
    /// The line's text, as compiled (at most [`MAX_LINE_TEXT`] bytes of it).
    pub text: Arc<str>,
}

fn err(reason: &'static str) -> ElfError {
    ElfError::Btf(reason)
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    let s = at.checked_add(4).and_then(|end| b.get(at..end)).ok_or(err(".BTF.ext ends early"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Line info by section name, then by byte offset in that section.
pub(crate) type LineInfo = BTreeMap<String, BTreeMap<u64, SourceLine>>;

/// Reads the line info of a `.BTF.ext` section, names and text from `btf`'s strings.
pub(crate) fn line_info(data: &[u8], btf: &Btf) -> Result<LineInfo, ElfError> {
    if data.len() < 8 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
        return Err(err("bad .BTF.ext magic"));
    }
    let hdr_len = u32_at(data, 4)? as usize;
    // Header: magic, version, flags, hdr_len, then func_info off/len and line_info off/len.
    if hdr_len < 24 || hdr_len > data.len() {
        return Err(err(".BTF.ext header is too short or too long"));
    }
    let (off, len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
    let start = hdr_len.checked_add(off).ok_or(err(".BTF.ext line info offset overflows"))?;
    let end = start.checked_add(len).ok_or(err(".BTF.ext line info length overflows"))?;
    let info = data.get(start..end).ok_or(err(".BTF.ext line info lies outside the section"))?;
    let mut out = LineInfo::new();
    // Each string once, cut to MAX_LINE_TEXT bytes.
    let mut strings: BTreeMap<u32, Arc<str>> = BTreeMap::new();
    let mut string = |off: u32| -> Option<Arc<str>> {
        if let Some(s) = strings.get(&off) {
            return Some(Arc::clone(s));
        }
        let s: Arc<str> = Arc::from(btf.string_prefix(off, MAX_LINE_TEXT)?);
        strings.insert(off, Arc::clone(&s));
        Some(s)
    };
    if info.is_empty() {
        return Ok(out);
    }
    let rec_size = u32_at(info, 0)? as usize;
    if rec_size < 16 {
        return Err(err(".BTF.ext line info records are shorter than 16 bytes"));
    }
    let mut at = 4;
    while at < info.len() {
        let section: String =
            string(u32_at(info, at)?).ok_or(err(".BTF.ext section name is no string"))?.as_ref().into();
        let count = u32_at(info, at + 4)? as usize;
        at += 8;
        let bytes = count.checked_mul(rec_size).ok_or(err(".BTF.ext record count overflows"))?;
        if info.len() - at < bytes {
            return Err(err(".BTF.ext line info records run past the section"));
        }
        let lines = out.entry(section).or_default();
        for k in 0..count {
            let r = at + k * rec_size;
            let insn_off = u64::from(u32_at(info, r)?);
            let file = string(u32_at(info, r + 4)?).ok_or(err(".BTF.ext file name is no string"))?;
            let text = string(u32_at(info, r + 8)?).ok_or(err(".BTF.ext line text is no string"))?;
            let line_col = u32_at(info, r + 12)?;
            lines.insert(insn_off, SourceLine { file, line: line_col >> 10, column: line_col & 0x3ff, text });
        }
        at += bytes;
    }
    Ok(out)
}

/// Function names by section name, then by byte offset of the function's first instruction.
pub(crate) type FuncInfo = BTreeMap<String, BTreeMap<u64, Arc<str>>>;

/// Reads the function info of a `.BTF.ext` section: where each function starts, and its name (from
/// the `FUNC` type each record names). An empty map if the section has none.
pub(crate) fn func_info(data: &[u8], btf: &Btf) -> Result<FuncInfo, ElfError> {
    if data.len() < 8 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
        return Err(err("bad .BTF.ext magic"));
    }
    let hdr_len = u32_at(data, 4)? as usize;
    if hdr_len < 16 || hdr_len > data.len() {
        return Err(err(".BTF.ext header is too short or too long"));
    }
    let (off, len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
    let start = hdr_len.checked_add(off).ok_or(err(".BTF.ext func info offset overflows"))?;
    let end = start.checked_add(len).ok_or(err(".BTF.ext func info length overflows"))?;
    let info = data.get(start..end).ok_or(err(".BTF.ext func info lies outside the section"))?;
    let mut out = FuncInfo::new();
    if info.is_empty() {
        return Ok(out);
    }
    let rec_size = u32_at(info, 0)? as usize;
    if rec_size < 8 {
        return Err(err(".BTF.ext func info records are shorter than 8 bytes"));
    }
    let mut names: BTreeMap<u32, Arc<str>> = BTreeMap::new();
    let mut at = 4;
    while at < info.len() {
        let section: String =
            btf.string_prefix(u32_at(info, at)?, MAX_LINE_TEXT).ok_or(err(".BTF.ext section name is no string"))?;
        let count = u32_at(info, at + 4)? as usize;
        at += 8;
        let bytes = count.checked_mul(rec_size).ok_or(err(".BTF.ext record count overflows"))?;
        if info.len() - at < bytes {
            return Err(err(".BTF.ext func info records run past the section"));
        }
        let funcs = out.entry(section).or_default();
        for k in 0..count {
            let r = at + k * rec_size;
            let insn_off = u64::from(u32_at(info, r)?);
            let type_id = u32_at(info, r + 4)?;
            let name = match names.get(&type_id) {
                Some(n) => Arc::clone(n),
                None => {
                    let t = btf.types().get(type_id as usize).ok_or(err(".BTF.ext function type does not exist"))?;
                    let n: Arc<str> = Arc::from(t.name.get(..t.name.len().min(MAX_LINE_TEXT)).unwrap_or(""));
                    names.insert(type_id, Arc::clone(&n));
                    n
                }
            };
            funcs.insert(insn_off, name);
        }
        at += bytes;
    }
    Ok(out)
}
