//! `.kconfig` externs: the kernel configuration values an object declares with libbpf's `__kconfig`
//! (`extern int CONFIG_HZ __kconfig;`, `extern u32 LINUX_KERNEL_VERSION __kconfig;`).
//!
//! The loader lays them out in one read-only map value (each at its type's alignment), points every
//! `lddw` of an extern at its place there, and fills the bytes from values the host supplies as text,
//! read as libbpf reads a kernel's `.config`: `y`, `n` and `m` for `bool`, `char` and
//! `enum libbpf_tristate` externs, numbers (decimal, `0x` hex, `0` octal, signed where the type is)
//! for integers, and a quoted string for `char` arrays (cut to fit, always NUL-terminated). A `__weak`
//! extern with no value is zero; a strong one is an error.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// How an extern's value is written into its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KconfigKind {
    /// `bool`: `y` is 1, `n` 0.
    Bool,
    /// `enum libbpf_tristate`: `n` 0, `y` 1, `m` 2.
    Tristate,
    /// `char`: the letter `y`, `n` or `m` itself.
    Char,
    /// An integer of the extern's size.
    Int {
        /// Whether negative values are allowed.
        signed: bool,
    },
    /// A `char` array: a quoted string.
    Str,
}

/// One `.kconfig` extern of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KconfigExtern {
    /// The name (`CONFIG_HZ`).
    pub name: String,
    /// How its value is read.
    pub kind: KconfigKind,
    /// Its size in bytes.
    pub size: u32,
    /// Where it lies in the `.kconfig` map's value.
    pub offset: u32,
    /// Declared `__weak`: zero when the host gives no value.
    pub weak: bool,
}

/// Kernel configuration values, by name, as text (`CONFIG_HZ` = `250`, `CONFIG_PREEMPT` = `y`,
/// `CONFIG_DEFAULT_HOSTNAME` = `"(none)"`, `LINUX_KERNEL_VERSION` = `394240` or `6.4.0`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kconfig {
    values: BTreeMap<String, String>,
}

/// Why a kconfig value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kconfig `{name}`: {reason}")]
pub struct KconfigError {
    /// The extern or line concerned.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

fn kerr(name: &str, reason: impl ToString) -> KconfigError {
    KconfigError { name: name.to_string(), reason: reason.to_string() }
}

impl Kconfig {
    /// No values.
    pub fn new() -> Kconfig {
        Kconfig::default()
    }

    /// Sets `name` to `value` (text, as in a `.config` file).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Kconfig {
        self.values.insert(name.into(), value.into());
        self
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Reads `KEY=VALUE` lines (a kernel's `.config`): blank lines and `#` comments are skipped,
    /// except `# CONFIG_X is not set`, which sets `CONFIG_X` to `n`.
    pub fn parse(text: &str) -> Result<Kconfig, KconfigError> {
        let mut k = Kconfig::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some(name) = rest.strip_suffix(" is not set") {
                    k.set(name.trim(), "n");
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| kerr(&format!("line {}", n + 1), "not KEY=VALUE"))?;
            if key.trim().is_empty() {
                return Err(kerr(&format!("line {}", n + 1), "empty name"));
            }
            k.set(key.trim(), value.trim());
        }
        Ok(k)
    }
}

/// Lays out `externs` (name, kind, size, weak) in one value, each at its natural alignment; returns
/// them with their offsets, and the value's size.
pub(crate) fn layout(externs: Vec<(String, KconfigKind, u32, bool)>) -> Option<(Vec<KconfigExtern>, u32)> {
    let mut at = 0u32;
    let mut out = Vec::with_capacity(externs.len());
    for (name, kind, size, weak) in externs {
        let align = match kind {
            KconfigKind::Str => 1,
            _ => size.clamp(1, 8),
        };
        at = at.checked_next_multiple_of(align)?;
        out.push(KconfigExtern { name, kind, size, offset: at, weak });
        at = at.checked_add(size)?;
    }
    Some((out, at))
}

/// The bytes of the `.kconfig` value: every extern's value from `config`, zero for weak externs
/// without one.
pub(crate) fn fill(externs: &[KconfigExtern], size: u32, config: &Kconfig) -> Result<Vec<u8>, KconfigError> {
    let mut out = alloc::vec![0u8; size as usize];
    for e in externs {
        let Some(text) = config.get(&e.name) else {
            if e.weak {
                continue;
            }
            return Err(kerr(&e.name, "no value given, and the extern is not __weak"));
        };
        let bytes = encode(e, text)?;
        let at = e.offset as usize;
        out[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    Ok(out)
}

/// `text` as the bytes of extern `e` (at most `e.size` of them).
fn encode(e: &KconfigExtern, text: &str) -> Result<Vec<u8>, KconfigError> {
    let text = text.trim();
    let letter = || match text {
        "y" | "Y" => Some(b'y'),
        "n" | "N" => Some(b'n'),
        "m" | "M" => Some(b'm'),
        _ => None,
    };
    match e.kind {
        KconfigKind::Bool => match letter() {
            Some(b'y') => Ok(alloc::vec![1]),
            Some(b'n') => Ok(alloc::vec![0]),
            Some(_) => Err(kerr(&e.name, "`m` is no value for a bool (declare it enum libbpf_tristate)")),
            None => Err(kerr(&e.name, format!("`{text}` is not y or n"))),
        },
        KconfigKind::Char => match letter() {
            Some(c) => Ok(alloc::vec![c]),
            None => Err(kerr(&e.name, format!("`{text}` is not y, n or m"))),
        },
        KconfigKind::Tristate => {
            let v: u64 = match letter() {
                Some(b'n') => 0,
                Some(b'y') => 1,
                Some(_) => 2,
                None => return Err(kerr(&e.name, format!("`{text}` is not y, n or m"))),
            };
            int_bytes(e, v)
        }
        KconfigKind::Int { signed } => {
            let v = if e.name == "LINUX_KERNEL_VERSION" && text.contains('.') {
                kernel_version(text).ok_or_else(|| kerr(&e.name, format!("`{text}` is not a version")))?
            } else {
                number(text, signed).ok_or_else(|| kerr(&e.name, format!("`{text}` is not a number")))?
            };
            let bits = e.size * 8;
            let fits = if bits >= 64 {
                true
            } else if signed {
                let v = v as i64;
                v >= -(1i64 << (bits - 1)) && v < (1i64 << (bits - 1))
            } else {
                v >> bits == 0
            };
            if !fits {
                return Err(kerr(&e.name, format!("`{text}` does not fit in {} bytes", e.size)));
            }
            int_bytes(e, v)
        }
        KconfigKind::Str => {
            let inner = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .ok_or_else(|| kerr(&e.name, "a string value must be in double quotes"))?;
            // Cut to fit, keeping the terminating NUL.
            let keep = inner.len().min((e.size as usize).saturating_sub(1));
            let mut b = inner.as_bytes()[..keep].to_vec();
            b.push(0);
            b.truncate(e.size as usize);
            Ok(b)
        }
    }
}

/// The low `e.size` bytes of `v`, little-endian (BPF objects here are little-endian).
fn int_bytes(e: &KconfigExtern, v: u64) -> Result<Vec<u8>, KconfigError> {
    match e.size {
        1 | 2 | 4 | 8 => Ok(v.to_le_bytes()[..e.size as usize].to_vec()),
        n => Err(kerr(&e.name, format!("an integer of {n} bytes"))),
    }
}

/// A number as a `.config` writes it: decimal, `0x` hex or `0` octal, with a `-` where `signed`.
fn number(text: &str, signed: bool) -> Option<u64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) if signed => (true, rest),
        Some(_) => return None,
        None => (false, text),
    };
    let magnitude = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse::<u64>().ok()?
    };
    if neg {
        if magnitude > 1 << 63 {
            return None;
        }
        Some(magnitude.wrapping_neg())
    } else {
        Some(magnitude)
    }
}

/// `a.b.c` (anything after the third number ignored, as in `6.1.0-13-amd64`) as the kernel's
/// `KERNEL_VERSION(a, b, c)`: `a << 16 | b << 8 | min(c, 255)`.
pub fn kernel_version(release: &str) -> Option<u64> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let a: u64 = parts.next()?.parse().ok()?;
    let b: u64 = parts.next()?.parse().ok()?;
    let c: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if a > 255 || b > 255 {
        return None;
    }
    Some(a << 16 | b << 8 | c.min(255))
}
