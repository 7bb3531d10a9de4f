//! BPF objects built in tests: legacy map definitions, global data, programs with relocations, and
//! symbols placed wherever a hostile object would put them.

use ebpf_vm::isa::{self, Instruction};
use object::write::{Object, Relocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

/// `R_BPF_64_64`: an `lddw` of a map or global variable.
const R_BPF_64_64: u32 = 1;

/// A BPF object under construction.
pub struct ObjectBuilder {
    obj: Object<'static>,
    maps: Option<SectionId>,
}

impl Default for ObjectBuilder {
    fn default() -> Self {
        ObjectBuilder::new()
    }
}

impl ObjectBuilder {
    pub fn new() -> ObjectBuilder {
        ObjectBuilder { obj: Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little), maps: None }
    }

    fn maps_section(&mut self) -> SectionId {
        match self.maps {
            Some(s) => s,
            None => {
                let s = self.obj.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
                self.maps = Some(s);
                s
            }
        }
    }

    /// A symbol with any value and size in `section`.
    pub fn symbol(&mut self, section: SectionId, name: &str, value: u64, size: u64, kind: SymbolKind) -> SymbolId {
        self.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size,
            kind,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        })
    }

    /// A legacy `struct bpf_map_def { type, key_size, value_size, max_entries, map_flags }`.
    pub fn legacy_map(&mut self, name: &str, def: [u32; 5]) -> SymbolId {
        let section = self.maps_section();
        let bytes: Vec<u8> = def.iter().flat_map(|v| v.to_le_bytes()).collect();
        let at = self.obj.append_section_data(section, &bytes, 4);
        self.symbol(section, name, at, 20, SymbolKind::Data)
    }

    /// A symbol in the `maps` section at any address (a definition the section may not hold).
    pub fn legacy_map_symbol_at(&mut self, name: &str, value: u64) -> SymbolId {
        let section = self.maps_section();
        if self.obj.section(section).data().is_empty() {
            self.obj.append_section_data(section, &[0u8; 20], 4);
        }
        self.symbol(section, name, value, 20, SymbolKind::Data)
    }

    /// A data section (`.data`, `.rodata`, ...) holding `bytes`, with one symbol at its start.
    pub fn data(&mut self, section: &str, bytes: &[u8]) -> SymbolId {
        let s = self.obj.add_section(Vec::new(), section.as_bytes().to_vec(), SectionKind::Data);
        self.obj.append_section_data(s, bytes, 8);
        self.symbol(s, &format!("{}_start", section.trim_start_matches('.')), 0, bytes.len() as u64, SymbolKind::Data)
    }

    /// A program: its code in section `section` as the global function `name`; `relocs` names the
    /// `lddw` instructions (by position in `code`) that refer to a map or variable symbol.
    pub fn program(&mut self, section: &str, name: &str, code: &[Instruction], relocs: &[(usize, SymbolId)]) {
        let s = self.obj.add_section(Vec::new(), section.as_bytes().to_vec(), SectionKind::Text);
        let bytes = isa::encode(code);
        self.obj.append_section_data(s, &bytes, 8);
        self.symbol(s, name, 0, bytes.len() as u64, SymbolKind::Text);
        for &(index, symbol) in relocs {
            let slot: usize = code[..index].iter().map(Instruction::slots).sum();
            let r = Relocation {
                offset: slot as u64 * 8,
                symbol,
                addend: 0,
                flags: RelocationFlags::Elf { r_type: R_BPF_64_64 },
            };
            self.obj.add_relocation(s, r).expect("relocation");
        }
    }

    /// A function `name` in `.text` (created on first use), returning its symbol for relocations.
    pub fn text_function(&mut self, name: &str, code: &[Instruction]) -> SymbolId {
        let s = self.obj.section_id(object::write::StandardSection::Text);
        let bytes = isa::encode(code);
        let at = self.obj.append_section_data(s, &bytes, 8);
        self.symbol(s, name, at, bytes.len() as u64, SymbolKind::Text)
    }

    /// The object's bytes.
    pub fn build(self) -> Vec<u8> {
        self.obj.write().expect("writes")
    }
}
