//! Loop placement: where a function's hottest loop lands relative to cache-line boundaries.
//!
//! Cranelift lays blocks out back to back and aligns nothing inside a function, so the address of a
//! loop header is an accident of the code before it, and the speed of a small loop with it (how many
//! cache lines and decode windows one iteration touches). Native compilers align loop headers; a JIT
//! can get the same effect for one loop per function by moving the whole function: it is placed at
//! a cache-line boundary behind as many bytes of NOPs as make the chosen loop's header start a line.
//!
//! The loop chosen is the one nested deepest (`loops`). The translator marks its header's block
//! and the way back of its last backward jump with `sequence_point`s carrying [`HEAD_TAG`] and
//! [`END_TAG`]: immovable markers that emit no code and whose offsets Cranelift reports with the
//! compiled code. The function is moved only if that makes the loop touch fewer lines.

use alloc::vec::Vec;

/// The alignment functions get, and the boundary the chosen loop's header is aligned to.
pub(crate) const LINE: u32 = 64;

/// The debug tag of the sequence point that marks the header of the loop to place.
pub(crate) const HEAD_TAG: u32 = 0x6c6f_6f70;

/// The debug tag of the sequence point just before that loop's backward jump.
pub(crate) const END_TAG: u32 = 0x6c6f_6f71;

/// Bytes allowed after the backward jump's marker for the jump itself: a compare, a conditional
/// branch, and the moves and jump of an edge back to the header.
pub(crate) const JUMP_ALLOWANCE: u32 = 24;

/// How many bytes to put in front of a function placed at a multiple of [`LINE`] so that the loop
/// at offsets `head..end` touches as few lines as it can: none if it already does, else as many
/// as move the header to the next line.
pub(crate) fn padding(head: u32, end: u32) -> u32 {
    let len = end.saturating_sub(head).max(1);
    let fewest = len.div_ceil(LINE);
    let lines = (head % LINE + len).div_ceil(LINE);
    if lines <= fewest {
        0
    } else {
        LINE - head % LINE
    }
}

/// `n` bytes of no-operation instructions for `arch`, or `None` if there are none of that length.
pub(crate) fn nops(arch: target_lexicon::Architecture, n: u32) -> Option<Vec<u8>> {
    use target_lexicon::Architecture;
    // The recommended multi-byte NOP encodings of x86-64, one to nine bytes long.
    const X86: [&[u8]; 9] = [
        &[0x90],
        &[0x66, 0x90],
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    ];
    let mut out = Vec::with_capacity(n as usize);
    match arch {
        Architecture::X86_64 => {
            let mut left = n as usize;
            while left > 0 {
                let k = left.min(X86.len());
                out.extend_from_slice(X86[k - 1]);
                left -= k;
            }
        }
        // `nop` is 0xd503201f, stored little-endian like every AArch64 instruction.
        Architecture::Aarch64(_) if n % 4 == 0 => {
            for _ in 0..n / 4 {
                out.extend_from_slice(&0xd503_201fu32.to_le_bytes());
            }
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_nops() {
        // 55 bytes fit one line from offsets 0 to 9 of a line.
        assert_eq!(padding(0, 55), 0);
        assert_eq!(padding(73, 128), 0);
        assert_eq!(padding(54, 109), 10);
        // 91 bytes take two lines from offsets 0 to 37.
        assert_eq!(padding(158, 249), 0);
        assert_eq!(padding(101, 192), 0);
        assert_eq!(padding(102, 193), 26);
        assert_eq!(padding(5, 5), 0);
        for n in 0..LINE {
            assert_eq!(nops(target_lexicon::Architecture::X86_64, n).unwrap().len(), n as usize);
        }
        let arm = target_lexicon::Architecture::Aarch64(target_lexicon::Aarch64Architecture::Aarch64);
        assert_eq!(nops(arm, 8).unwrap(), [0x1f, 0x20, 0x03, 0xd5, 0x1f, 0x20, 0x03, 0xd5]);
        assert_eq!(nops(arm, 6), None);
    }

    /// The loop of a program compiled for AArch64 (fixed-size instructions, so branches can be read
    /// back): its header, the target of the backward `b`, starts a line.
    #[cfg(feature = "elf")]
    #[test]
    fn the_loop_of_a_compiled_function_starts_a_line() {
        use object::read::elf::ElfFile64;
        use object::{LittleEndian, Object as _, ObjectSection as _, ObjectSymbol as _};
        // Six loads (which cannot be folded away) before a loop of ten instructions: the loop would
        // straddle a line where the code before it puts it.
        let asm = "mov %r0, 0\nmov %r2, 0\nldxdw %r3, [%r1+0]\nldxdw %r4, [%r1+8]\nldxdw %r5, [%r1+16]\n\
                   ldxdw %r6, [%r1+24]\nldxdw %r7, [%r1+32]\nldxdw %r8, [%r1+40]\nadd %r0, %r2\nxor %r0, %r8\n\
                   mul %r0, %r3\nrsh %r0, 1\nadd %r0, %r4\nxor %r0, %r5\nadd %r0, %r6\nsub %r0, %r7\nadd %r2, 1\n\
                   jlt %r2, 1000, -10\nexit";
        let p = crate::Program::from_asm(asm).unwrap();
        let obj = crate::jit::aot::compile_object(
            &[("prog", &p)],
            &crate::link::Env::new(),
            "aarch64-unknown-linux-gnu",
            false,
        )
        .unwrap();
        let file = ElfFile64::<LittleEndian>::parse(&*obj).unwrap();
        let sym = file.symbols().find(|s| s.name() == Ok("prog")).unwrap();
        let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
        assert_eq!(section.align() % u64::from(LINE), 0);
        let start = sym.address() as usize;
        let code = &section.data().unwrap()[start..start + sym.size() as usize];
        let words: Vec<u32> = code.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        // `b` is 0b000101 followed by a signed 26-bit word offset.
        let back: Vec<i64> = words
            .iter()
            .enumerate()
            .filter(|(_, w)| *w & 0xfc00_0000 == 0x1400_0000)
            .map(|(i, w)| (i as i64, i as i64 + (((*w << 6) as i32) >> 6) as i64))
            .filter(|&(i, target)| target >= 0 && target < i)
            .map(|(_, target)| target)
            .collect();
        assert!(words[0] == 0xd503_201f, "the function is padded with nops");
        let head = *back.iter().min().unwrap() as usize * 4;
        assert_eq!((start + head) % LINE as usize, 0, "loop header at offset {head}");
    }
}
