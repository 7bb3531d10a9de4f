//! An object's probe programs attached by their section names, as libbpf's auto-attach reads them:
//! `uprobe/PATH:FUNCTION[+OFFSET]` and `uretprobe/...` (also `uprobe.s/` and `uretprobe.s/`). PATH is
//! a file path (the executable also as `/proc/self/exe`) or a library's file name (`libc.so.6`);
//! OFFSET is decimal or `0x` hexadecimal.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{context, AttachError, ProbeKind, Target, Uprobe};
use crate::vm::{Engine, Instance};

/// The probe a section names: `Ok(None)` for a section that is no probe of this kind (`socket`,
/// `xdp`, ...); an error for a probe section this cannot read.
pub fn parse_section(section: &str) -> Result<Option<(Target, ProbeKind)>, AttachError> {
    let (kind, rest) = if let Some(rest) = section.strip_prefix("uprobe/").or(section.strip_prefix("uprobe.s/")) {
        (ProbeKind::Entry, rest)
    } else if let Some(rest) = section.strip_prefix("uretprobe/").or(section.strip_prefix("uretprobe.s/")) {
        (ProbeKind::Return, rest)
    } else {
        return Ok(None);
    };
    let bad = || AttachError::BadSection(section.to_string());
    let (path, function) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (name, offset) = match function.split_once('+') {
        Some((name, off)) => {
            let off = match off.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => off.parse(),
            };
            (name, off.map_err(|_| bad())?)
        }
        None => (function, 0),
    };
    if path.is_empty() || name.is_empty() {
        return Err(bad());
    }
    Ok(Some((Target::Symbol { path: Some(path.to_string()), name: name.to_string(), offset }, kind)))
}

/// Builds every program of `instance` for `engine`, verified against the probes' [`context`], and
/// attaches it where its section says. Every program must be a probe this can attach: otherwise
/// nothing stays attached and the error names the first program that is not.
pub fn attach_object(instance: &Instance, engine: Engine) -> Result<Vec<Uprobe>, AttachError> {
    let mut plan = Vec::new();
    for p in instance.programs() {
        let unsupported = || AttachError::UnsupportedSection { program: p.name.clone(), section: p.section.clone() };
        let (target, kind) = parse_section(&p.section)?.ok_or_else(unsupported)?;
        let build = |e: String| AttachError::Build { program: p.name.clone(), error: e };
        let builder = instance.vm_builder(&p.name).map_err(|e| build(e.to_string()))?;
        let vm = builder.engine(engine).context(context()).verified().build().map_err(|e| build(e.to_string()))?;
        plan.push((target, kind, Arc::new(vm)));
    }
    // Attached only once every program built; an attach error drops (detaches) those before it.
    let mut probes = Vec::new();
    for (target, kind, vm) in plan {
        probes.push(Uprobe::attach(&target, kind, vm)?);
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_read_as_libbpf_reads_them() {
        let probe =
            |path: &str, name: &str, offset| Target::Symbol { path: Some(path.into()), name: name.into(), offset };
        assert_eq!(
            parse_section("uprobe//proc/self/exe:main").unwrap(),
            Some((probe("/proc/self/exe", "main", 0), ProbeKind::Entry))
        );
        assert_eq!(
            parse_section("uretprobe/libc.so.6:malloc").unwrap(),
            Some((probe("libc.so.6", "malloc", 0), ProbeKind::Return))
        );
        assert_eq!(
            parse_section("uprobe.s//usr/bin/app:handle+0x10").unwrap(),
            Some((probe("/usr/bin/app", "handle", 16), ProbeKind::Entry))
        );
        assert_eq!(parse_section("uprobe/app:f+8").unwrap(), Some((probe("app", "f", 8), ProbeKind::Entry)));
        assert_eq!(parse_section("socket").unwrap(), None);
        assert_eq!(parse_section("kprobe/do_sys_open").unwrap(), None);
        for bad in ["uprobe/no_function", "uprobe/:f", "uprobe/app:", "uprobe/app:f+x", "uprobe/app:f+"] {
            assert_eq!(parse_section(bad), Err(AttachError::BadSection(bad.into())), "{bad}");
        }
    }
}
