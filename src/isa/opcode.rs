//! Opcode fields of RFC 9669: instruction classes, operation codes, sizes and modes.

/// Mask of the class bits (low three).
pub const CLASS_MASK: u8 = 0x07;
/// Non-standard loads (`lddw`, legacy packet loads).
pub const CLS_LD: u8 = 0x00;
/// Loads into a register.
pub const CLS_LDX: u8 = 0x01;
/// Stores of an immediate.
pub const CLS_ST: u8 = 0x02;
/// Stores of a register, and atomics.
pub const CLS_STX: u8 = 0x03;
/// 32-bit arithmetic.
pub const CLS_ALU: u8 = 0x04;
/// 64-bit jumps, calls and exit.
pub const CLS_JMP: u8 = 0x05;
/// 32-bit jumps.
pub const CLS_JMP32: u8 = 0x06;
/// 64-bit arithmetic.
pub const CLS_ALU64: u8 = 0x07;

/// Source bit of ALU and jump opcodes: immediate operand.
pub const SRC_K: u8 = 0x00;
/// Source bit of ALU and jump opcodes: register operand.
pub const SRC_X: u8 = 0x08;
/// Mask of the operation code (high nibble) of ALU and jump opcodes.
pub const OP_MASK: u8 = 0xf0;

/// ALU operation code.
pub const ALU_ADD: u8 = 0x00;
/// ALU operation code.
pub const ALU_SUB: u8 = 0x10;
/// ALU operation code.
pub const ALU_MUL: u8 = 0x20;
/// ALU operation code (unsigned, or signed with offset 1).
pub const ALU_DIV: u8 = 0x30;
/// ALU operation code.
pub const ALU_OR: u8 = 0x40;
/// ALU operation code.
pub const ALU_AND: u8 = 0x50;
/// ALU operation code.
pub const ALU_LSH: u8 = 0x60;
/// ALU operation code.
pub const ALU_RSH: u8 = 0x70;
/// ALU operation code.
pub const ALU_NEG: u8 = 0x80;
/// ALU operation code (unsigned, or signed with offset 1).
pub const ALU_MOD: u8 = 0x90;
/// ALU operation code.
pub const ALU_XOR: u8 = 0xa0;
/// ALU operation code (plain, or sign-extending with offset 8/16/32).
pub const ALU_MOV: u8 = 0xb0;
/// ALU operation code.
pub const ALU_ARSH: u8 = 0xc0;
/// ALU operation code: byte order.
pub const ALU_END: u8 = 0xd0;

/// Jump operation code.
pub const JMP_JA: u8 = 0x00;
/// Jump operation code.
pub const JMP_JEQ: u8 = 0x10;
/// Jump operation code.
pub const JMP_JGT: u8 = 0x20;
/// Jump operation code.
pub const JMP_JGE: u8 = 0x30;
/// Jump operation code.
pub const JMP_JSET: u8 = 0x40;
/// Jump operation code.
pub const JMP_JNE: u8 = 0x50;
/// Jump operation code.
pub const JMP_JSGT: u8 = 0x60;
/// Jump operation code.
pub const JMP_JSGE: u8 = 0x70;
/// Jump operation code.
pub const JMP_CALL: u8 = 0x80;
/// Jump operation code.
pub const JMP_EXIT: u8 = 0x90;
/// Jump operation code.
pub const JMP_JLT: u8 = 0xa0;
/// Jump operation code.
pub const JMP_JLE: u8 = 0xb0;
/// Jump operation code.
pub const JMP_JSLT: u8 = 0xc0;
/// Jump operation code.
pub const JMP_JSLE: u8 = 0xd0;

/// Mask of the size bits of load and store opcodes.
pub const SIZE_MASK: u8 = 0x18;
/// Size: 4 bytes.
pub const SIZE_W: u8 = 0x00;
/// Size: 2 bytes.
pub const SIZE_H: u8 = 0x08;
/// Size: 1 byte.
pub const SIZE_B: u8 = 0x10;
/// Size: 8 bytes.
pub const SIZE_DW: u8 = 0x18;

/// Mask of the mode bits of load and store opcodes.
pub const MODE_MASK: u8 = 0xe0;
/// Mode: 64-bit immediate.
pub const MODE_IMM: u8 = 0x00;
/// Mode: legacy absolute packet load.
pub const MODE_ABS: u8 = 0x20;
/// Mode: legacy indirect packet load.
pub const MODE_IND: u8 = 0x40;
/// Mode: regular memory access.
pub const MODE_MEM: u8 = 0x60;
/// Mode: sign-extending load.
pub const MODE_MEMSX: u8 = 0x80;
/// Mode: atomic operation.
pub const MODE_ATOMIC: u8 = 0xc0;

/// The `lddw` opcode.
pub const LDDW: u8 = CLS_LD | MODE_IMM | SIZE_DW;
/// The `call` opcode (helper, local or BTF call).
pub const CALL: u8 = CLS_JMP | JMP_CALL | SRC_K;
/// The `callx` opcode (helper id in a register).
pub const CALLX: u8 = CLS_JMP | JMP_CALL | SRC_X;
/// The `exit` opcode.
pub const EXIT: u8 = CLS_JMP | JMP_EXIT;

/// `src` of `call`: helper by id.
pub const CALL_HELPER: u8 = 0;
/// `src` of `call`: local (bpf-to-bpf) function.
pub const CALL_LOCAL: u8 = 1;
/// `src` of `call`: kernel function by BTF id.
pub const CALL_BTF: u8 = 2;

/// Atomic operation flag: return the old value.
pub const ATOMIC_FETCH: i32 = 0x01;
/// Atomic exchange (always fetches).
pub const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
/// Atomic compare-and-exchange (always fetches, into `r0`).
pub const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

/// `lddw` `src`: plain 64-bit constant.
pub const PSEUDO_CONST: u8 = 0;
/// `lddw` `src`: map by file descriptor.
pub const PSEUDO_MAP_FD: u8 = 1;
/// `lddw` `src`: map value by file descriptor.
pub const PSEUDO_MAP_VALUE: u8 = 2;
/// `lddw` `src`: variable by BTF id.
pub const PSEUDO_BTF_ID: u8 = 3;
/// `lddw` `src`: function address.
pub const PSEUDO_FUNC: u8 = 4;
/// `lddw` `src`: map by index.
pub const PSEUDO_MAP_IDX: u8 = 5;
/// `lddw` `src`: map value by index.
pub const PSEUDO_MAP_IDX_VALUE: u8 = 6;
