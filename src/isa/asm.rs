//! Text to instructions, in the syntax of the conformance suite.
//!
//! One instruction per line; `#` starts a comment; `name:` defines a label that jumps (`ja name`,
//! `jne %r0, %r1, name`) and local calls (`call local name`) can target; jumps may also take relative
//! offsets (`+3`, `-2`). The label `exit`, unless defined, means the first `exit` instruction.
//! Registers are written `%r0`..`%r10` (or `r0`..`r10`); memory operands `[%r1+4]`, `[%r10-8]`.
//! Beyond the suite's mnemonics: `ldabs{b,h,w} IMM`, `ldind{b,h,w} REG, IMM`, `call runtime ID`,
//! and the pseudo 64-bit loads `lddw REG, map_fd(FD)`, `map_value(FD, OFF)`, `btf_var(ID, OBJ)`,
//! `func(+OFF)`, `map_idx(IDX)`, `map_idx_value(IDX, OFF)`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::{AluOp, AtomicOp, ByteOrder, Cond, Imm64, Instruction, Operand, PacketMode, Reg, Size, SxWidth, Width};

/// A line of assembly text that could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AsmError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A jump or call target as written: a relative offset or a label.
#[derive(Clone)]
enum Target {
    Rel(i64),
    Label(String),
}

/// A parsed instruction whose target, if any, may still be a label.
struct Pending {
    line: usize,
    slot: usize,
    insn: Instruction,
    target: Option<Target>,
}

/// Assembles a program from text.
pub fn assemble(text: &str) -> Result<Vec<Instruction>, AsmError> {
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_exit = None;
    let mut pending: Vec<Pending> = Vec::new();
    let mut slot = 0usize;

    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let err = |message: String| AsmError { line, message };
        let mut code = raw.split('#').next().unwrap_or("").trim();
        // Leading label definitions, possibly followed by an instruction on the same line.
        while let Some(colon) = code.find(':') {
            let name = code[..colon].trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                break;
            }
            if labels.insert(name.to_string(), slot).is_some() {
                return Err(err(format!("label `{name}` is defined twice")));
            }
            code = code[colon + 1..].trim();
        }
        if code.is_empty() {
            continue;
        }
        let (insn, target) = parse_instruction(code).map_err(err)?;
        if insn == Instruction::Exit && first_exit.is_none() {
            first_exit = Some(slot);
        }
        pending.push(Pending { line, slot, insn, target });
        slot += insn.slots();
    }
    if let Some(exit) = first_exit {
        labels.entry("exit".to_string()).or_insert(exit);
    }

    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        let mut insn = p.insn;
        if let Some(target) = p.target {
            let rel = match target {
                Target::Rel(r) => r,
                Target::Label(name) => match labels.get(&name) {
                    Some(&at) => at as i64 - p.slot as i64 - 1,
                    None => return Err(AsmError { line: p.line, message: format!("undefined label `{name}`") }),
                },
            };
            set_target(&mut insn, rel).map_err(|message| AsmError { line: p.line, message })?;
        }
        out.push(insn);
    }
    Ok(out)
}

fn set_target(insn: &mut Instruction, rel: i64) -> Result<(), String> {
    let short = || i16::try_from(rel).map_err(|_| format!("jump offset {rel} does not fit in 16 bits"));
    let long = || i32::try_from(rel).map_err(|_| format!("offset {rel} does not fit in 32 bits"));
    match insn {
        Instruction::Ja { offset } | Instruction::Jump { offset, .. } => *offset = short()?,
        Instruction::Ja32 { offset } | Instruction::CallLocal { offset } => *offset = long()?,
        Instruction::LoadImm64 { value: Imm64::Func(offset), .. } => *offset = long()?,
        _ => {}
    }
    Ok(())
}

/// Parses an integer: optional sign, decimal or `0x` hexadecimal.
fn parse_int(s: &str) -> Result<i128, String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let parsed = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16),
        None => body.parse::<i128>(),
    };
    match parsed {
        Ok(v) if !body.is_empty() && !body.starts_with(['+', '-']) => Ok(if neg { -v } else { v }),
        _ => Err(format!("invalid number `{s}`")),
    }
}

/// A 32-bit immediate: any value from `i32::MIN` to `u32::MAX`, kept as its low 32 bits.
fn imm32(s: &str) -> Result<i32, String> {
    let v = parse_int(s)?;
    if v < i32::MIN as i128 || v > u32::MAX as i128 {
        return Err(format!("immediate `{s}` does not fit in 32 bits"));
    }
    Ok(v as u32 as i32)
}

fn imm64(s: &str) -> Result<u64, String> {
    let v = parse_int(s)?;
    if v < i64::MIN as i128 || v > u64::MAX as i128 {
        return Err(format!("immediate `{s}` does not fit in 64 bits"));
    }
    Ok(v as u64)
}

fn reg(s: &str) -> Result<Reg, String> {
    let s = s.trim();
    let n = s
        .strip_prefix("%r")
        .or_else(|| s.strip_prefix('r'))
        .ok_or_else(|| format!("expected a register, found `{s}`"))?;
    n.parse::<u8>().ok().and_then(Reg::new).ok_or_else(|| format!("invalid register `{s}`"))
}

fn is_reg(s: &str) -> bool {
    let s = s.trim();
    s.starts_with('%') || (s.starts_with('r') && s[1..].chars().all(|c| c.is_ascii_digit()) && s.len() > 1)
}

fn operand(s: &str) -> Result<Operand, String> {
    if is_reg(s) {
        Ok(Operand::Reg(reg(s)?))
    } else {
        Ok(Operand::Imm(imm32(s)?))
    }
}

/// `[REG]`, `[REG+N]` or `[REG-N]`.
fn mem(s: &str) -> Result<(Reg, i16), String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("expected a memory operand like [%r1+8], found `{s}`"))?;
    let (r, off) = match inner.find(['+', '-']) {
        Some(at) => (&inner[..at], parse_int(&inner[at..])?),
        None => (inner, 0),
    };
    let off = i16::try_from(off).map_err(|_| format!("memory offset in `{s}` does not fit in 16 bits"))?;
    Ok((reg(r)?, off))
}

fn target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    if s.starts_with(['+', '-']) {
        let v = parse_int(s)?;
        i64::try_from(v).map(Target::Rel).map_err(|_| format!("offset `{s}` is too large"))
    } else if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        Ok(Target::Label(s.to_string()))
    } else {
        Err(format!("invalid jump target `{s}`"))
    }
}

fn operands<'a>(rest: &'a str, n: usize, mnemonic: &str) -> Result<Vec<&'a str>, String> {
    let ops: Vec<&str> = if rest.trim().is_empty() { Vec::new() } else { rest.split(',').map(str::trim).collect() };
    if ops.len() != n {
        return Err(format!("`{mnemonic}` takes {n} operand(s), found {}", ops.len()));
    }
    Ok(ops)
}

fn size_of(name: &str) -> Option<Size> {
    match name {
        "b" => Some(Size::B),
        "h" => Some(Size::H),
        "w" => Some(Size::W),
        "dw" => Some(Size::DW),
        _ => None,
    }
}

fn alu_of(name: &str) -> Option<AluOp> {
    Some(match name {
        "add" => AluOp::Add,
        "sub" => AluOp::Sub,
        "mul" => AluOp::Mul,
        "div" => AluOp::Div,
        "sdiv" => AluOp::SDiv,
        "or" => AluOp::Or,
        "and" => AluOp::And,
        "lsh" => AluOp::Lsh,
        "rsh" => AluOp::Rsh,
        "mod" => AluOp::Mod,
        "smod" => AluOp::SMod,
        "xor" => AluOp::Xor,
        "mov" => AluOp::Mov,
        "arsh" => AluOp::Arsh,
        _ => return None,
    })
}

fn cond_of(name: &str) -> Option<Cond> {
    Some(match name {
        "jeq" => Cond::Eq,
        "jgt" => Cond::Gt,
        "jge" => Cond::Ge,
        "jset" => Cond::Set,
        "jne" => Cond::Ne,
        "jsgt" => Cond::Sgt,
        "jsge" => Cond::Sge,
        "jlt" => Cond::Lt,
        "jle" => Cond::Le,
        "jslt" => Cond::Slt,
        "jsle" => Cond::Sle,
        _ => return None,
    })
}

/// Splits a width suffix: `add32` is (`add`, 32-bit), `add` and `add64` are 64-bit.
fn split_width(m: &str) -> (&str, Width) {
    if let Some(base) = m.strip_suffix("32") {
        (base, Width::W32)
    } else {
        (m.strip_suffix("64").unwrap_or(m), Width::W64)
    }
}

type Parsed = (Instruction, Option<Target>);

fn parse_instruction(code: &str) -> Result<Parsed, String> {
    let (mnemonic, rest) = match code.find(char::is_whitespace) {
        Some(at) => (&code[..at], code[at..].trim()),
        None => (code, ""),
    };
    let plain = |insn: Instruction| Ok((insn, None));
    match mnemonic {
        "exit" => {
            operands(rest, 0, mnemonic)?;
            return plain(Instruction::Exit);
        }
        "ja" | "ja32" => {
            let ops = operands(rest, 1, mnemonic)?;
            let insn = if mnemonic == "ja" { Instruction::Ja { offset: 0 } } else { Instruction::Ja32 { offset: 0 } };
            return Ok((insn, Some(target(ops[0])?)));
        }
        "call" => return parse_call(rest),
        "lock" => return parse_atomic(rest).map(|i| (i, None)),
        "lddw" => return parse_lddw(rest),
        _ => {}
    }
    if let Some(sz) = mnemonic.strip_prefix("ldxs").and_then(size_of) {
        let ops = operands(rest, 2, mnemonic)?;
        let (src, offset) = mem(ops[1])?;
        if sz == Size::DW {
            return Err("there is no sign-extending 8-byte load".into());
        }
        return plain(Instruction::LoadSx { size: sz, dst: reg(ops[0])?, src, offset });
    }
    if let Some(size) = mnemonic.strip_prefix("ldx").and_then(size_of) {
        let ops = operands(rest, 2, mnemonic)?;
        let (src, offset) = mem(ops[1])?;
        return plain(Instruction::Load { size, dst: reg(ops[0])?, src, offset });
    }
    if let Some(size) = mnemonic.strip_prefix("stx").and_then(size_of) {
        let ops = operands(rest, 2, mnemonic)?;
        let (dst, offset) = mem(ops[0])?;
        return plain(Instruction::StoreReg { size, dst, offset, src: reg(ops[1])? });
    }
    if let Some(size) = mnemonic.strip_prefix("st").and_then(size_of) {
        let ops = operands(rest, 2, mnemonic)?;
        let (dst, offset) = mem(ops[0])?;
        return plain(Instruction::Store { size, dst, offset, imm: imm32(ops[1])? });
    }
    if let Some(size) = mnemonic.strip_prefix("ldabs").and_then(size_of) {
        let ops = operands(rest, 1, mnemonic)?;
        return plain(Instruction::LoadPacket { size, mode: PacketMode::Abs, imm: imm32(ops[0])? });
    }
    if let Some(size) = mnemonic.strip_prefix("ldind").and_then(size_of) {
        let ops = operands(rest, 2, mnemonic)?;
        return plain(Instruction::LoadPacket { size, mode: PacketMode::Ind(reg(ops[0])?), imm: imm32(ops[1])? });
    }
    for (prefix, order) in
        [("le", ByteOrder::Le), ("be", ByteOrder::Be), ("bswap", ByteOrder::Swap), ("swap", ByteOrder::Swap)]
    {
        if let Some(bits) = mnemonic.strip_prefix(prefix) {
            if let Ok(bits @ (16 | 32 | 64)) = bits.parse::<u8>() {
                let ops = operands(rest, 1, mnemonic)?;
                return plain(Instruction::End { order, bits, dst: reg(ops[0])? });
            }
        }
    }
    if let Some(widths) = mnemonic.strip_prefix("movsx") {
        let (from, width) = match widths {
            "832" => (SxWidth::B8, Width::W32),
            "1632" => (SxWidth::B16, Width::W32),
            "864" => (SxWidth::B8, Width::W64),
            "1664" => (SxWidth::B16, Width::W64),
            "3264" => (SxWidth::B32, Width::W64),
            _ => return Err(format!("unknown mnemonic `{mnemonic}`")),
        };
        let ops = operands(rest, 2, mnemonic)?;
        return plain(Instruction::MovSx { width, from, dst: reg(ops[0])?, src: reg(ops[1])? });
    }
    let (base, width) = split_width(mnemonic);
    if base == "neg" {
        let ops = operands(rest, 1, mnemonic)?;
        return plain(Instruction::Neg { width, dst: reg(ops[0])? });
    }
    if let Some(op) = alu_of(base) {
        let ops = operands(rest, 2, mnemonic)?;
        return plain(Instruction::Alu { width, op, dst: reg(ops[0])?, src: operand(ops[1])? });
    }
    if let Some(cond) = cond_of(base) {
        let ops = operands(rest, 3, mnemonic)?;
        let insn = Instruction::Jump { width, cond, dst: reg(ops[0])?, src: operand(ops[1])?, offset: 0 };
        return Ok((insn, Some(target(ops[2])?)));
    }
    Err(format!("unknown mnemonic `{mnemonic}`"))
}

fn parse_call(rest: &str) -> Result<Parsed, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        ["local", t] => Ok((Instruction::CallLocal { offset: 0 }, Some(target(t)?))),
        ["runtime", id] => Ok((Instruction::CallBtf { id: imm32(id)? as u32 }, None)),
        ["helper", id] | [id] if is_reg(id) => Ok((Instruction::CallReg { reg: reg(id)? }, None)),
        ["helper", id] | [id] => Ok((Instruction::Call { id: imm32(id)? as u32 }, None)),
        _ => Err(format!("invalid call `call {rest}`")),
    }
}

fn parse_atomic(rest: &str) -> Result<Instruction, String> {
    let (fetch, rest) = match rest.strip_prefix("fetch") {
        Some(r) if r.starts_with(char::is_whitespace) => (true, r.trim_start()),
        _ => (false, rest),
    };
    let (name, rest) = match rest.find(char::is_whitespace) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => return Err("`lock` needs an operation and two operands".into()),
    };
    let ops = operands(rest, 2, "lock")?;
    let (base, width) = split_width(name);
    let op = match base {
        "add" => AtomicOp::Add { fetch },
        "or" => AtomicOp::Or { fetch },
        "and" => AtomicOp::And { fetch },
        "xor" => AtomicOp::Xor { fetch },
        "xchg" if !fetch => AtomicOp::Xchg,
        "cmpxchg" if !fetch => AtomicOp::CmpXchg,
        _ => return Err(format!("unknown atomic operation `{name}`")),
    };
    let (dst, offset) = mem(ops[0])?;
    Ok(Instruction::Atomic { width, op, dst, offset, src: reg(ops[1])? })
}

fn parse_lddw(rest: &str) -> Result<Parsed, String> {
    let (dst, value) = rest.split_once(',').ok_or("`lddw` takes 2 operands")?;
    let dst = reg(dst)?;
    let value = value.trim();
    let Some(open) = value.find('(') else {
        return Ok((Instruction::LoadImm64 { dst, value: Imm64::Const(imm64(value)?) }, None));
    };
    let kind = value[..open].trim();
    let args: Vec<&str> = value[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| format!("missing `)` in `{value}`"))?
        .split(',')
        .map(str::trim)
        .collect();
    let one = |args: &[&str]| -> Result<i32, String> {
        match args {
            [a] => imm32(a),
            _ => Err(format!("`{kind}` takes one argument")),
        }
    };
    let two = |args: &[&str]| -> Result<(i32, i32), String> {
        match args {
            [a, b] => Ok((imm32(a)?, imm32(b)?)),
            _ => Err(format!("`{kind}` takes two arguments")),
        }
    };
    let (value, t) = match kind {
        "map_fd" => (Imm64::MapFd(one(&args)?), None),
        "map_value" => two(&args).map(|(fd, offset)| (Imm64::MapValue { fd, offset }, None))?,
        "btf_var" => two(&args).map(|(id, obj)| (Imm64::BtfVar { id, obj }, None))?,
        "map_idx" => (Imm64::MapIdx(one(&args)?), None),
        "map_idx_value" => two(&args).map(|(idx, offset)| (Imm64::MapIdxValue { idx, offset }, None))?,
        "func" => match args.as_slice() {
            [t] => (Imm64::Func(0), Some(target(t)?)),
            _ => return Err("`func` takes one argument".into()),
        },
        _ => return Err(format!("unknown lddw form `{kind}`")),
    };
    Ok((Instruction::LoadImm64 { dst, value }, t))
}
