//! An object's probe programs attached by their section names, as libbpf's auto-attach reads them:
//! `uprobe/PATH:FUNCTION[+OFFSET]` and `uretprobe/...` (also `uprobe.s/` and `uretprobe.s/`),
//! `uprobe.multi/PATH:PATTERN` and `uretprobe.multi/...` (also `.multi.s`; PATTERN a glob over function
//! names), and `tracepoint/syscalls/sys_enter_NAME` and `sys_exit_NAME` (also `tp/`). PATH is a file path (the
//! executable also as `/proc/self/exe`) or a library's file name (`libc.so.6`); OFFSET is decimal or
//! `0x` hexadecimal.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::syscalls::{self, SyscallTracepoint, TracepointKind};
use super::{context, AttachError, ProbeKind, Target, Uprobe};
use crate::helpers::PrintSink;
use crate::link::Context;
use crate::vm::{Engine, Instance};

/// Where a section's program attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPoint {
    /// A uprobe or uretprobe.
    Probe(Target, ProbeKind),
    /// Uprobes or uretprobes on every function of a file whose name matches a glob.
    Matching {
        /// The file, as in [`Target::Symbol`].
        path: String,
        /// The glob over function names.
        pattern: String,
        /// At entry or at return.
        kind: ProbeKind,
    },
    /// A syscall tracepoint: the system call's name and which end.
    Syscall(String, TracepointKind),
}

/// A program attached by [`attach_object`].
#[derive(Debug)]
pub enum Attachment {
    /// A uprobe or uretprobe.
    Probe(Uprobe),
    /// The uprobes or uretprobes of a `uprobe.multi` section, one per function.
    Probes(Vec<Uprobe>),
    /// A syscall tracepoint.
    Syscall(SyscallTracepoint),
}

/// Where a section's program attaches: `Ok(None)` for a section that is neither a uprobe nor a syscall
/// tracepoint (`socket`, `xdp`, `kprobe/...`); an error for one of those this cannot read.
pub fn parse_section(section: &str) -> Result<Option<AttachPoint>, AttachError> {
    let tracepoint = section.strip_prefix("tracepoint/syscalls/").or(section.strip_prefix("tp/syscalls/"));
    if let Some(event) = tracepoint {
        let bad = || AttachError::BadSection(section.to_string());
        let (name, kind) = match (event.strip_prefix("sys_enter_"), event.strip_prefix("sys_exit_")) {
            (Some(name), _) => (name, TracepointKind::Enter),
            (_, Some(name)) => (name, TracepointKind::Exit),
            _ => return Err(bad()),
        };
        if name.is_empty() {
            return Err(bad());
        }
        return Ok(Some(AttachPoint::Syscall(name.to_string(), kind)));
    }
    let multi = [("uprobe.multi/", ProbeKind::Entry), ("uprobe.multi.s/", ProbeKind::Entry)]
        .into_iter()
        .chain([("uretprobe.multi/", ProbeKind::Return), ("uretprobe.multi.s/", ProbeKind::Return)])
        .find_map(|(prefix, kind)| section.strip_prefix(prefix).map(|rest| (rest, kind)));
    if let Some((rest, kind)) = multi {
        let (path, pattern) = rest.rsplit_once(':').ok_or_else(|| AttachError::BadSection(section.to_string()))?;
        if path.is_empty() || pattern.is_empty() {
            return Err(AttachError::BadSection(section.to_string()));
        }
        return Ok(Some(AttachPoint::Matching { path: path.to_string(), pattern: pattern.to_string(), kind }));
    }
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
    Ok(Some(AttachPoint::Probe(Target::Symbol { path: Some(path.to_string()), name: name.to_string(), offset }, kind)))
}

/// The context a program attached at `point` is verified against.
fn context_of(point: &AttachPoint) -> Context {
    match point {
        AttachPoint::Probe(..) | AttachPoint::Matching { .. } => context(),
        AttachPoint::Syscall(_, TracepointKind::Enter) => syscalls::enter_context(),
        AttachPoint::Syscall(_, TracepointKind::Exit) => syscalls::exit_context(),
    }
}

/// Builds every program of `instance` for `engine`, verified against its attach point's context, and
/// attaches it where its section says. Every program must be a uprobe, uretprobe or syscall tracepoint
/// this can attach: otherwise nothing stays attached and the error names the first program that is not.
pub fn attach_object(instance: &Instance, engine: Engine) -> Result<Vec<Attachment>, AttachError> {
    attach_object_printing(instance, engine, None)
}

/// [`attach_object`], with `bpf_trace_printk` and `bpf_printk` lines going to `print` (else to
/// standard error).
pub fn attach_object_printing(
    instance: &Instance,
    engine: Engine,
    print: Option<PrintSink>,
) -> Result<Vec<Attachment>, AttachError> {
    let mut plan = Vec::new();
    for p in instance.programs() {
        let unsupported = || AttachError::UnsupportedSection { program: p.name.clone(), section: p.section.clone() };
        let point = parse_section(&p.section)?.ok_or_else(unsupported)?;
        let build = |e: String| AttachError::Build { program: p.name.clone(), error: e };
        let builder = instance.vm_builder(&p.name).map_err(|e| build(e.to_string()))?;
        let mut env = instance.env();
        if let Some(sink) = &print {
            env.set_print_sink(sink.clone());
        }
        let builder = builder.env(env).engine(engine).context(context_of(&point));
        let vm = builder.verified().build().map_err(|e| build(e.to_string()))?;
        plan.push((point, Arc::new(vm)));
    }
    // Attached only once every program built; an attach error drops (detaches) those before it.
    let mut attached = Vec::new();
    for (point, vm) in plan {
        attached.push(match point {
            AttachPoint::Probe(target, kind) => Attachment::Probe(Uprobe::attach(&target, kind, vm)?),
            AttachPoint::Matching { path, pattern, kind } => {
                Attachment::Probes(Uprobe::attach_matching(&path, &pattern, kind, vm)?)
            }
            AttachPoint::Syscall(name, kind) => Attachment::Syscall(SyscallTracepoint::attach(&name, kind, vm)?),
        });
    }
    Ok(attached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_read_as_libbpf_reads_them() {
        let target =
            |path: &str, name: &str, offset| Target::Symbol { path: Some(path.into()), name: name.into(), offset };
        let probe = |path: &str, name: &str, offset, kind| Some(AttachPoint::Probe(target(path, name, offset), kind));
        assert_eq!(
            parse_section("uprobe//proc/self/exe:main").unwrap(),
            probe("/proc/self/exe", "main", 0, ProbeKind::Entry)
        );
        assert_eq!(
            parse_section("uretprobe/libc.so.6:malloc").unwrap(),
            probe("libc.so.6", "malloc", 0, ProbeKind::Return)
        );
        assert_eq!(
            parse_section("uprobe.s//usr/bin/app:handle+0x10").unwrap(),
            probe("/usr/bin/app", "handle", 16, ProbeKind::Entry)
        );
        assert_eq!(parse_section("uprobe/app:f+8").unwrap(), probe("app", "f", 8, ProbeKind::Entry));
        assert_eq!(
            parse_section("tracepoint/syscalls/sys_enter_openat").unwrap(),
            Some(AttachPoint::Syscall("openat".into(), TracepointKind::Enter))
        );
        assert_eq!(
            parse_section("tp/syscalls/sys_exit_read").unwrap(),
            Some(AttachPoint::Syscall("read".into(), TracepointKind::Exit))
        );
        let matching = |path: &str, pattern: &str, kind| {
            Some(AttachPoint::Matching { path: path.into(), pattern: pattern.into(), kind })
        };
        assert_eq!(
            parse_section("uprobe.multi/libc.so.6:*alloc").unwrap(),
            matching("libc.so.6", "*alloc", ProbeKind::Entry)
        );
        assert_eq!(
            parse_section("uretprobe.multi.s//proc/self/exe:handle_?").unwrap(),
            matching("/proc/self/exe", "handle_?", ProbeKind::Return)
        );
        assert_eq!(parse_section("socket").unwrap(), None);
        assert_eq!(parse_section("kprobe/do_sys_open").unwrap(), None);
        assert_eq!(parse_section("tracepoint/sched/sched_switch").unwrap(), None);
        for bad in [
            "uprobe/no_function",
            "uprobe/:f",
            "uprobe/app:",
            "uprobe/app:f+x",
            "uprobe/app:f+",
            "tracepoint/syscalls/sys_openat",
            "tp/syscalls/sys_enter_",
            "uprobe.multi/*alloc",
            "uprobe.multi/:f*",
            "uretprobe.multi/app:",
        ] {
            assert_eq!(parse_section(bad), Err(AttachError::BadSection(bad.into())), "{bad}");
        }
    }
}
