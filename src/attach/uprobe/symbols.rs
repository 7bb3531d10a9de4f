//! Functions of the running process by name: the symbol tables of the executable and of every library
//! it has mapped (`/proc/self/maps`), moved to where each file is loaded.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use super::AttachError;

/// A function's place in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Function {
    /// Its name, as the symbol table gives it.
    pub(crate) name: String,
    /// The file it is in.
    pub(crate) path: String,
    /// Its first byte.
    pub(crate) start: u64,
    /// Its size, as the symbol table gives it (0 if unknown).
    pub(crate) size: u64,
    /// Where the next symbol or the end of its section is: bytes from `start + size` up to here are
    /// padding no code runs.
    pub(crate) limit: u64,
}

/// A file mapped into the process, as `/proc/self/maps` lists it.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    executable: bool,
    path: String,
}

/// The files mapped into the process.
fn mappings() -> Result<Vec<Mapping>, AttachError> {
    let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| AttachError::Process(e.to_string()))?;
    Ok(parse_maps(&text))
}

/// The file mappings `/proc/self/maps` lists in `text`, with adjacent entries that continue one
/// another (same file, same permissions, contiguous in memory and in the file) joined: the kernel
/// lists a text segment in pieces once pages of it have been made writable and back (as patching
/// does), and a function may straddle two of them.
fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path: String = fields.collect::<Vec<_>>().join(" ");
        if !path.starts_with('/') {
            continue;
        }
        let mut bounds = range.split('-').map(|s| u64::from_str_radix(s, 16).ok());
        let (start, end) = (bounds.next().flatten(), bounds.next().flatten());
        let offset = u64::from_str_radix(offset, 16).ok();
        let (Some(start), Some(end), Some(offset)) = (start, end, offset) else { continue };
        let executable = perms.contains('x') && perms.starts_with('r');
        if let Some(last) = out.last_mut() {
            let continues = last.end == start
                && last.executable == executable
                && last.path == path
                && last.offset.checked_add(last.end - last.start) == Some(offset);
            if continues {
                last.end = end;
                continue;
            }
        }
        if start < end {
            out.push(Mapping { start, end, offset, executable, path });
        }
    }
    out
}

/// `f` with its limit cut to the end of the readable, executable mapping that holds its start: the
/// symbol table's sizes are the file's word, and the code a probe reads must be mapped.
fn within_code(mut f: Function, maps: &[Mapping]) -> Result<Function, AttachError> {
    let m = maps
        .iter()
        .find(|m| m.executable && m.start <= f.start && f.start < m.end)
        .ok_or(AttachError::NoFunctionAt(f.start))?;
    f.limit = f.limit.min(m.end);
    if f.start.saturating_add(f.size) > m.end {
        f.size = m.end - f.start;
    }
    Ok(f)
}

/// Whether `path` (a mapped file's) is what `want` names: the same path, the executable for
/// `/proc/self/exe`, or a file whose name is `want` or starts with `want.` (`libc` and `libc.so`
/// name `/usr/lib/x86_64-linux-gnu/libc.so.6`).
fn names(path: &str, want: &str, exe: &str) -> bool {
    if want == "/proc/self/exe" {
        return path == exe;
    }
    if want.contains('/') {
        return path == want;
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    file == want || file.strip_prefix(want).is_some_and(|rest| rest.starts_with('.'))
}

/// The mapped files `path` names (every file when `None`), the executable first, and the maps.
fn files_named(path: Option<&str>) -> Result<(Vec<String>, Vec<Mapping>), AttachError> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| AttachError::Process(e.to_string()))?
        .to_string_lossy()
        .into_owned();
    let maps = mappings()?;
    let mut files: Vec<String> = Vec::new();
    for m in &maps {
        let wanted = match path {
            Some(p) => names(&m.path, p, &exe),
            None => true,
        };
        if wanted && !files.contains(&m.path) {
            files.push(m.path.clone());
        }
    }
    files.sort_by_key(|f| *f != exe);
    if files.is_empty() {
        return Err(AttachError::NoFile(path.unwrap_or("the executable").to_string()));
    }
    Ok((files, maps))
}

/// The function `name` in the file `path` names (the executable when `None`, then every mapped
/// library in the order they are mapped).
pub(crate) fn find(path: Option<&str>, name: &str) -> Result<Function, AttachError> {
    let (files, maps) = files_named(path)?;
    for file in &files {
        let found = search(file, &maps, |sym, _| sym.name().is_ok_and(|n| n == name))?;
        if let Some(f) = found.into_iter().next() {
            return within_code(f, &maps);
        }
    }
    Err(AttachError::NoSymbol(name.to_string()))
}

/// Every function whose name matches the glob `pattern` (`*` any characters, `?` one) in the files
/// `path` names, one per address (aliases of one function count once), in address order.
pub(crate) fn find_matching(path: &str, pattern: &str) -> Result<Vec<Function>, AttachError> {
    let (files, maps) = files_named(Some(path))?;
    let mut out: Vec<Function> = Vec::new();
    for file in &files {
        let found = search_all(file, &maps, |sym, _| sym.name().is_ok_and(|n| glob(pattern.as_bytes(), n.as_bytes())))?;
        for f in found {
            if !out.iter().any(|o| o.start == f.start) {
                out.push(within_code(f, &maps)?);
            }
        }
    }
    out.sort_by_key(|f| f.start);
    Ok(out)
}

/// Whether `text` matches the glob `pattern`: `*` stands for any characters, `?` for one.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The classic backtracking match: on a mismatch, the last `*` takes one more character.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// The function that holds `addr`, in whichever mapped file has it.
pub(crate) fn containing(addr: u64) -> Result<Function, AttachError> {
    let maps = mappings()?;
    let mut files: Vec<&str> = Vec::new();
    for m in maps.iter().filter(|m| m.executable && m.start <= addr && addr < m.end) {
        if !files.contains(&m.path.as_str()) {
            files.push(&m.path);
        }
    }
    for file in files {
        let found = search(file, &maps, |sym, bias| {
            let at = addr.wrapping_sub(bias);
            sym.address() <= at && at < sym.address().saturating_add(sym.size().max(1))
        })?;
        if let Some(f) = found.into_iter().next() {
            return within_code(f, &maps);
        }
    }
    Err(AttachError::NoFunctionAt(addr))
}

/// The first defined function symbol of `file` that `pick` takes (given the file's load bias), moved
/// to where the file is loaded; none if the file is not mapped executable or has none.
fn search(
    file: &str,
    maps: &[Mapping],
    pick: impl Fn(&object::Symbol<'_, '_>, u64) -> bool,
) -> Result<Option<Function>, AttachError> {
    Ok(symbols_of(file, maps, pick, true)?.into_iter().next())
}

/// Every defined function symbol of `file` that `pick` takes, as [`search`] finds the first.
fn search_all(
    file: &str,
    maps: &[Mapping],
    pick: impl Fn(&object::Symbol<'_, '_>, u64) -> bool,
) -> Result<Vec<Function>, AttachError> {
    symbols_of(file, maps, pick, false)
}

fn symbols_of(
    file: &str,
    maps: &[Mapping],
    pick: impl Fn(&object::Symbol<'_, '_>, u64) -> bool,
    first_only: bool,
) -> Result<Vec<Function>, AttachError> {
    if !maps.iter().any(|m| m.path == file && m.executable) {
        return Ok(Vec::new());
    }
    let Some(first) = maps.iter().filter(|m| m.path == file).min_by_key(|m| m.start) else { return Ok(Vec::new()) };
    let data = std::fs::read(file).map_err(|e| AttachError::Process(alloc::format!("{file}: {e}")))?;
    let obj = object::File::parse(&*data).map_err(|e| AttachError::Process(alloc::format!("{file}: {e}")))?;
    // Where the file is loaded: the segment the first mapping holds has its page-aligned virtual
    // address at the mapping's start.
    let Some(seg) = obj.segments().find(|s| s.file_range().0 & !0xfff == first.offset) else {
        return Ok(Vec::new());
    };
    let bias = first.start.wrapping_sub(seg.address() & !0xfff);
    let symbols: Vec<_> = obj.symbols().chain(obj.dynamic_symbols()).collect();
    let mut out = Vec::new();
    for s in symbols.iter().filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && pick(s, bias)) {
        out.push(function(&obj, &symbols, s, file, bias));
        if first_only {
            break;
        }
    }
    Ok(out)
}

/// `sym` of `obj` as a [`Function`], with the limit of its padding.
fn function<'d>(
    obj: &object::File<'d>,
    symbols: &[object::Symbol<'d, '_>],
    sym: &object::Symbol<'d, '_>,
    file: &str,
    bias: u64,
) -> Function {
    let start = sym.address();
    let section_end = sym
        .section_index()
        .and_then(|i| obj.section_by_index(i).ok())
        .map_or(start.saturating_add(sym.size()), |s| s.address().saturating_add(s.size()));
    let next = symbols
        .iter()
        .filter(|s| s.is_definition() && s.address() > start && s.size() > 0)
        .map(object::ObjectSymbol::address)
        .min()
        .unwrap_or(section_end)
        .min(section_end);
    Function {
        name: sym.name().unwrap_or("").to_string(),
        path: file.to_string(),
        start: start.wrapping_add(bias),
        size: sym.size(),
        limit: next.max(start.saturating_add(sym.size())).wrapping_add(bias),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_match_as_libbpf_spells_them() {
        let exe = "/usr/bin/app";
        assert!(names("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6", exe));
        assert!(names("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc", exe));
        assert!(!names("/usr/lib/x86_64-linux-gnu/libcap.so.2", "libc", exe));
        assert!(names("/usr/bin/app", "/proc/self/exe", exe));
        assert!(names("/usr/bin/app", "/usr/bin/app", exe));
        assert!(!names("/usr/bin/other", "/proc/self/exe", exe));
    }

    #[test]
    fn libc_functions_are_found_where_they_run() {
        let f = find(Some("libc.so.6"), "getpid").expect("getpid in libc");
        assert_eq!(f.start, libc::getpid as *const () as u64, "{f:?}");
        assert!(f.size > 0 && f.limit >= f.start + f.size);
        assert_eq!(containing(f.start + 1).expect("getpid holds its second byte").start, f.start);
        assert!(matches!(find(None, "no_such_function_here"), Err(AttachError::NoSymbol(_))));
    }

    /// A text segment listed in pieces (pages made writable and back split it) is one mapping; pieces
    /// that do not continue one another (another file, other permissions, a gap in memory or in the
    /// file) stay apart.
    #[test]
    fn a_text_segment_listed_in_pieces_is_one_mapping() {
        let text = "\
1000-2000 r-xp 00000000 08:01 5 /bin/app
2000-3000 r-xp 00001000 08:01 5 /bin/app
3000-5000 r-xp 00002000 08:01 5 /bin/app
5000-6000 r--p 00004000 08:01 5 /bin/app
6000-7000 r-xp 00000000 08:01 6 /lib/x.so
8000-9000 r-xp 00002000 08:01 6 /lib/x.so
9000-a000 r-xp 00004000 08:01 6 /lib/x.so
a000-b000 rw-p 00000000 00:00 0
b000-c000 r-xp 00000000 08:01 7 /lib/y.so";
        let parsed = parse_maps(text);
        let maps: Vec<(u64, u64, bool, &str)> =
            parsed.iter().map(|m| (m.start, m.end, m.executable, m.path.as_str())).collect();
        assert_eq!(
            maps,
            [
                (0x1000, 0x5000, true, "/bin/app"),
                (0x5000, 0x6000, false, "/bin/app"),
                (0x6000, 0x7000, true, "/lib/x.so"),
                (0x8000, 0x9000, true, "/lib/x.so"),
                (0x9000, 0xa000, true, "/lib/x.so"),
                (0xb000, 0xc000, true, "/lib/y.so"),
            ]
        );
        // A function straddling the pieces' boundary keeps its size.
        let f = Function { name: "f".into(), path: "/bin/app".into(), start: 0x1ff0, size: 0x20, limit: 0x2010 };
        assert_eq!(within_code(f.clone(), &parse_maps(text)), Ok(f));
    }

    #[test]
    fn globs_match_as_libbpf_matches_them() {
        for (pattern, text, want) in [
            ("malloc", "malloc", true),
            ("malloc", "malloc2", false),
            ("*", "", true),
            ("*", "anything", true),
            ("m*c", "malloc", true),
            ("m*c", "malloc_usable", false),
            ("*alloc*", "__libc_malloc_impl", true),
            ("?alloc", "malloc", true),
            ("?alloc", "alloc", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYcZ", false),
            ("**x", "x", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob(pattern.as_bytes(), text.as_bytes()), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn sizes_past_the_mapped_code_are_cut_to_it() {
        let maps = [Mapping { start: 0x1000, end: 0x3000, offset: 0, executable: true, path: "/lib/x.so".into() }];
        let f = |start, size, limit| Function { name: "f".into(), path: "/lib/x.so".into(), start, size, limit };
        // A symbol table that claims more than is mapped: cut to the mapping.
        assert_eq!(within_code(f(0x2ff0, 0x100, 0x4000), &maps), Ok(f(0x2ff0, 0x10, 0x3000)));
        assert_eq!(within_code(f(0x1000, 0x10, 0x1010), &maps), Ok(f(0x1000, 0x10, 0x1010)));
        // A start outside any executable mapping.
        assert_eq!(within_code(f(0x5000, 0x10, 0x5010), &maps), Err(AttachError::NoFunctionAt(0x5000)));
    }
}
