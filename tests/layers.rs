//! The layers of the crate, lowest first: isa → program → memory → maps → helpers → link → verifier →
//! engines (interpreter, jit) → vm → attach; `elf` beside them, reading into definitions (isa, program, maps).
//! No module names one of a higher layer, not even in a doc link: this test reads every `crate::` path in
//! `src/` and fails on one that runs back up.

use std::path::{Path, PathBuf};

/// Each module with the modules it may name. Modules not listed (the crate root, `error`, the command)
/// may name anything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("isa", &[]),
    ("program", &["isa"]),
    ("memory", &["isa", "program"]),
    ("maps", &["isa", "program", "memory"]),
    ("host", &[]),
    ("helpers", &["isa", "program", "memory", "maps", "host"]),
    ("link", &["isa", "program", "memory", "maps", "host", "helpers"]),
    ("verifier", &["isa", "program", "memory", "maps", "host", "helpers", "link"]),
    ("interpreter", &["isa", "program", "memory", "maps", "host", "helpers", "link", "verifier"]),
    ("jit", &["isa", "program", "memory", "maps", "host", "helpers", "link", "verifier"]),
    ("vm", &["isa", "program", "memory", "maps", "host", "helpers", "link", "verifier", "interpreter", "jit", "elf"]),
    ("elf", &["isa", "program", "maps"]),
    (
        "attach",
        &["isa", "program", "memory", "maps", "host", "helpers", "link", "verifier", "interpreter", "jit", "vm", "elf"],
    ),
];

/// The modules of the crate, which `crate::` paths may name.
const MODULES: &[&str] = &[
    "isa",
    "program",
    "memory",
    "maps",
    "host",
    "helpers",
    "link",
    "verifier",
    "interpreter",
    "jit",
    "vm",
    "elf",
    "attach",
];

/// Every `crate::module` named in `text`, with its line number.
fn named_modules(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if MODULES.contains(&name.as_str()) {
                out.push((n + 1, name));
            }
        }
    }
    out
}

/// The violations in the file at `path` (relative to `src/`) with contents `text`.
fn violations(path: &Path, text: &str) -> Vec<String> {
    let module = path
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string())
        .unwrap_or_default();
    let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else { return Vec::new() };
    named_modules(text)
        .into_iter()
        .filter(|(_, name)| *name != module && !allowed.contains(&name.as_str()))
        .map(|(line, name)| {
            format!("src/{}:{line}: `{module}` names `crate::{name}`, a layer above it", path.display())
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_names_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} files under {}", files.len(), src.display());
    let all: Vec<String> = files
        .iter()
        .flat_map(|f| violations(f.strip_prefix(&src).expect("under src"), &std::fs::read_to_string(f).expect("text")))
        .collect();
    assert!(all.is_empty(), "imports that run back up the layers:\n{}", all.join("\n"));
}

#[test]
fn the_check_finds_an_import_that_runs_back_up() {
    let bad = "use crate::isa::Insn;\n/// See [`Vm`](crate::vm::Vm).\nuse crate::maps::Map;";
    assert_eq!(
        violations(Path::new("maps/array.rs"), bad),
        ["src/maps/array.rs:2: `maps` names `crate::vm`, a layer above it"]
    );
    assert!(violations(Path::new("vm/mod.rs"), bad).is_empty());
    assert_eq!(violations(Path::new("isa.rs"), "crate::program::Program").len(), 1);
    assert!(violations(Path::new("elf/mod.rs"), "crate::link::Env").len() == 1);
}
