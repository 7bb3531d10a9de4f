//! The bpf_conformance suite's `.data` files: where they are and what one says.

use std::path::{Path, PathBuf};

/// One parsed `.data` file.
#[derive(Default)]
pub struct Case {
    pub asm: String,
    pub mem: Vec<u8>,
    pub result: Option<u64>,
    pub error: Option<String>,
    pub raw: Vec<u64>,
}

pub fn parse(text: &str) -> Result<Case, String> {
    let mut case = Case::default();
    let mut section = String::new();
    let mut result = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ") {
            section = name.trim().to_string();
            continue;
        }
        match section.as_str() {
            "asm" => {
                case.asm.push_str(line);
                case.asm.push('\n');
            }
            "mem" => {
                for byte in line.split('#').next().unwrap_or("").split_whitespace() {
                    case.mem.push(u8::from_str_radix(byte, 16).map_err(|e| format!("bad mem byte {byte:?}: {e}"))?);
                }
            }
            "result" => result.push_str(line.split('#').next().unwrap_or("").trim()),
            "error" => case.error = Some(line.trim().to_string()),
            "raw" => {
                let word = line.split('#').next().unwrap_or("").trim();
                if !word.is_empty() {
                    let hex = word.trim_start_matches("0x");
                    case.raw.push(u64::from_str_radix(hex, 16).map_err(|e| format!("bad raw word {word:?}: {e}"))?);
                }
            }
            _ => {}
        }
    }
    if !result.is_empty() {
        let value = match result.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => result.parse::<u64>(),
        };
        case.result = Some(value.map_err(|e| format!("bad result {result:?}: {e}"))?);
    }
    Ok(case)
}

/// Where the suite's `.data` files are: `$BPF_CONFORMANCE_DIR` if set (an error if that is not a
/// directory: a mistyped path must not pass silently), else `../shared/conformance/tests` beside the
/// checkout if it exists, else nowhere.
pub fn suite_dir() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os("BPF_CONFORMANCE_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(Some(dir))
        } else {
            Err(format!("BPF_CONFORMANCE_DIR={} is not a directory", dir.display()))
        };
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/tests");
    Ok(beside.is_dir().then_some(beside))
}

/// Whether CI requires the suite (`BPF_CONFORMANCE_REQUIRED=1`): then its absence is a failure.
pub fn required() -> bool {
    std::env::var_os("BPF_CONFORMANCE_REQUIRED").is_some_and(|v| v == "1")
}

/// The suite's `.data` files, sorted, if the suite is present.
pub fn files() -> Result<Option<Vec<PathBuf>>, String> {
    let Some(dir) = suite_dir()? else { return Ok(None) };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no .data files in {}", dir.display()));
    }
    Ok(Some(files))
}
