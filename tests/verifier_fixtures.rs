//! The verifier fixtures of `tests/fixtures/verifier/`: C programs in the shapes real BPF programs have
//! (header parsers, bounded loops, map and ring-buffer use, bpf-to-bpf and tail calls, switches,
//! `.rodata` configuration), compiled by clang-19 -O2 (rebuilt by that directory's `build.sh`).
//!
//! Each fixture has a scenario: it is loaded, built with the context it was written for, run on
//! concrete inputs (short and truncated ones among them, which its guards must reject), and its
//! return values, memory and map contents are compared with the same computation done in Rust.
//! `<fixture>_checked` runs the scenario in checked mode on every engine. `<fixture>_verified` runs it
//! built in verified mode (the default) and requires the very same observations.

use std::collections::HashMap;
use std::sync::Arc;

use ebpf_vm::elf::Object;
use ebpf_vm::link::Linked;
use ebpf_vm::maps::RingBufMap;
use ebpf_vm::verifier::Verifier;
use ebpf_vm::{Context, Engine, Instance, Vm};

/// Every engine the crate was built with.
const ENGINES: &[Engine] = &[
    Engine::Interpreter,
    #[cfg(feature = "jit")]
    Engine::Jit,
];

/// Enough for the largest scenario run (the 2048 x 256 loop nest, about 6 million instructions).
const BUDGET: u64 = 50_000_000;

/// `struct pkt_ctx { __u64 data; __u64 data_end; }` of the packet-style fixtures.
const PACKET: Context = Context::Packet { size: 16, data: 0, data_end: 8 };

// ---- Harness ------------------------------------------------------------------------------------

/// How a scenario builds its programs: on which engine, and verified or checked.
#[derive(Debug, Clone, Copy)]
struct Setup {
    engine: Engine,
    verified: bool,
}

impl Setup {
    /// A fresh instance (fresh maps) of `tests/fixtures/verifier/{file}.o`.
    fn instance(&self, file: &str) -> Instance {
        let path = format!("{}/tests/fixtures/verifier/{file}.o", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let object = Object::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        Instance::new(&object).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Builds `program` of `instance` for `context`.
    fn build(&self, instance: &Instance, program: &str, context: Context) -> Vm {
        let builder = instance.vm_builder(program).expect("program exists").context(context).engine(self.engine);
        let builder = if self.verified { builder.verified() } else { builder.checked() };
        builder.budget(BUDGET).build().unwrap_or_else(|e| panic!("{program} ({self:?}): {e}"))
    }

    /// A fresh instance of `file` and `program` built from it.
    fn load(&self, file: &str, program: &str, context: Context) -> (Instance, Vm) {
        let instance = self.instance(file);
        let vm = self.build(&instance, program, context);
        (instance, vm)
    }
}

/// What a scenario observed (results, memory, map contents), in order; equal across engines and modes.
type Log = Vec<String>;

/// Runs `vm` on `mem`, requires `expected`, and logs the result.
fn expect(log: &mut Log, vm: &Vm, mem: &mut [u8], expected: u64, what: &str) {
    let got = vm.execute(mem);
    assert_eq!(got, Ok(expected), "{what} ({:?}, {:?})", vm.engine(), vm.mode());
    log.push(format!("{what}: {got:?}"));
}

/// The `u64` values of an array map, by index.
fn array_u64(instance: &Instance, name: &str) -> Vec<u64> {
    let map = instance.map(name).unwrap_or_else(|| panic!("no map {name}"));
    (0..map.def().max_entries).map(|i| u64_at(&map.get(&i.to_ne_bytes(), 0).expect("array value"), 0)).collect()
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Runs a scenario in checked mode on every engine; the engines must observe the same.
fn checked(scenario: fn(Setup) -> Log) -> Log {
    let logs: Vec<Log> = ENGINES.iter().map(|&engine| scenario(Setup { engine, verified: false })).collect();
    assert!(logs.windows(2).all(|w| w[0] == w[1]), "engines differ: {logs:#?}");
    logs.into_iter().next().unwrap()
}

// ---- Verified runs ------------------------------------------------------------------------------

/// Runs a scenario built with `.verified()` on every engine; it must observe exactly what the checked
/// runs observe.
fn verified(scenario: fn(Setup) -> Log) {
    let reference = checked(scenario);
    for &engine in ENGINES {
        assert_eq!(scenario(Setup { engine, verified: true }), reference, "verified on {engine:?}");
    }
}

// ---- Frames -------------------------------------------------------------------------------------

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header with `version` and `ihl` as given (options, if any, are no-ops), then `payload`.
fn ipv4(version: u8, ihl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let hdr_len = (ihl as usize * 4).max(20);
    let total = (hdr_len + payload.len()) as u16;
    let mut h = vec![version << 4 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    h.resize(hdr_len, 1);
    h.extend_from_slice(payload);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// A TCP SYN whose data offset covers `options` (padded to a multiple of 4 bytes with end-of-options).
fn tcp(options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    opts.resize(options.len().div_ceil(4) * 4, 0);
    let doff = (20 + opts.len()) / 4;
    let mut h = vec![0xc0, 0x01, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, (doff as u8) << 4, 0x02, 0xfa, 0xf0, 0, 0, 0, 0];
    h.extend_from_slice(&opts);
    h
}

fn udp_frame(ihl: u8, sport: u16, dport: u16) -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(4, ihl, PROTO_UDP, &udp(sport, dport, b"payload")))
}

/// The packet-context memory: the 16-byte context struct, then the packet.
fn packet(frame: &[u8]) -> Vec<u8> {
    let mut m = vec![0; 16];
    m.extend_from_slice(frame);
    m
}

/// Deterministic pseudo-random bytes.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

// ---- eth_buffer: Ethernet / IPv4 / UDP over a buffer ---------------------------------------------

const SHORT: usize = 0;
const NOT_IPV4: usize = 1;
const BAD_IPV4: usize = 2;
const NOT_UDP: usize = 3;
const UDP: usize = 4;

/// The parser's outcome in Rust: (verdict, UDP destination port).
fn parse_udp(f: &[u8]) -> (usize, u16) {
    if f.len() < 14 {
        return (SHORT, 0);
    }
    if f[12..14] != ETH_IPV4.to_be_bytes() {
        return (NOT_IPV4, 0);
    }
    if f.len() < 34 {
        return (SHORT, 0);
    }
    let (version, ihl) = (f[14] >> 4, (f[14] & 15) as usize);
    if version != 4 || ihl < 5 {
        return (BAD_IPV4, 0);
    }
    if f[23] != PROTO_UDP {
        return (NOT_UDP, 0);
    }
    let udp = 14 + ihl * 4;
    if f.len() < udp + 8 {
        return (SHORT, 0);
    }
    (UDP, u16::from_be_bytes([f[udp + 2], f[udp + 3]]))
}

/// The frames both parsers are run on: UDP with and without IP options, other protocols, bad IPv4
/// headers, and frames cut inside each header.
fn parser_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut cut_ip = udp_frame(5, 1000, 53);
    cut_ip.truncate(14 + 19);
    let mut cut_udp = udp_frame(6, 1000, 53);
    cut_udp.truncate(14 + 24 + 7);
    let mut long_ihl = udp_frame(5, 1000, 53);
    long_ihl[14] = 0x4f; // 60-byte IP header: the UDP header would start past the frame's end
    vec![
        ("DNS query", udp_frame(5, 40000, 53)),
        ("UDP with IP options", udp_frame(7, 53, 8080)),
        ("TCP", eth(ETH_IPV4, &ipv4(4, 5, PROTO_TCP, &tcp(&[])))),
        ("ARP", eth(ETH_ARP, &[0; 28])),
        ("IPv6 version", eth(ETH_IPV4, &ipv4(6, 5, PROTO_UDP, &udp(1, 2, b"")))),
        ("IHL 4", eth(ETH_IPV4, &ipv4(4, 4, PROTO_UDP, &udp(1, 2, b"")))),
        ("empty", Vec::new()),
        ("runt", udp_frame(5, 1, 2)[..13].to_vec()),
        ("IP header cut", cut_ip),
        ("UDP header cut", cut_udp),
        ("IHL past the end", long_ihl),
    ]
}

fn eth_buffer(setup: Setup) -> Log {
    let (instance, vm) = setup.load("eth_buffer", "eth_buffer", Context::Buffer);
    let mut log = Log::new();
    let mut counts = [0u64; 5];
    for (what, frame) in parser_inputs() {
        let (verdict, port) = parse_udp(&frame);
        counts[verdict] += 1;
        expect(&mut log, &vm, &mut frame.clone(), port as u64, what);
    }
    assert_eq!(counts, [5, 1, 2, 1, 2], "the inputs cover every verdict");
    let got = array_u64(&instance, "verdicts");
    assert_eq!(got, counts);
    log.push(format!("verdicts: {got:?}"));
    log
}

#[test]
fn eth_buffer_checked() {
    checked(eth_buffer);
}

#[test]
fn eth_buffer_verified() {
    verified(eth_buffer);
}

// ---- eth_packet: the same parser over a packet context ------------------------------------------

const XDP_DROP: u64 = 1;
const XDP_PASS: u64 = 2;
const XDP_TX: u64 = 3;

/// The XDP action for `f`, and `f` as the program leaves it (DNS queries get their ports swapped).
fn dns_reflect(f: &[u8]) -> (u64, Vec<u8>) {
    let (verdict, port) = parse_udp(f);
    let mut out = f.to_vec();
    let action = match verdict {
        SHORT | BAD_IPV4 => XDP_DROP,
        NOT_IPV4 | NOT_UDP => XDP_PASS,
        _ if port != 53 => XDP_PASS,
        _ => {
            let udp = 14 + (f[14] & 15) as usize * 4;
            out[udp..udp + 4].copy_from_slice(&[f[udp + 2], f[udp + 3], f[udp], f[udp + 1]]);
            XDP_TX
        }
    };
    (action, out)
}

fn eth_packet(setup: Setup) -> Log {
    let (instance, vm) = setup.load("eth_packet", "eth_packet", PACKET);
    let mut log = Log::new();
    let mut counts = [0u64; 4];
    for (what, frame) in parser_inputs() {
        let (action, after) = dns_reflect(&frame);
        counts[action as usize] += 1;
        let mut mem = packet(&frame);
        expect(&mut log, &vm, &mut mem, action, what);
        assert_eq!(mem[16..], after[..], "{what}: the packet as the program leaves it");
        log.push(format!("{what}: {:?}", &mem[16..]));
    }
    assert_eq!(counts, [0, 7, 3, 1], "the inputs cover every action");
    let got = array_u64(&instance, "actions");
    assert_eq!(got, counts);
    log.push(format!("actions: {got:?}"));
    log
}

#[test]
fn eth_packet_checked() {
    checked(eth_packet);
}

#[test]
fn eth_packet_verified() {
    verified(eth_packet);
}

// ---- tcp_options: bounded walk over TCP options --------------------------------------------------

/// The walker in Rust: its return value, with the option kinds it saw counted into `kinds`.
fn walk_tcp_options(p: &[u8], kinds: &mut [u64; 16]) -> u64 {
    if p.len() < 14 || p[12..14] != ETH_IPV4.to_be_bytes() || p.len() < 34 {
        return 0;
    }
    let ihl = (p[14] & 15) as usize;
    if ihl < 5 || p[23] != PROTO_TCP {
        return 0;
    }
    let tcp = 14 + ihl * 4;
    if p.len() < tcp + 20 {
        return 0;
    }
    let hdr_len = (p[tcp + 12] >> 4) as usize * 4;
    if hdr_len < 20 {
        return 0;
    }
    let (mut opt, end) = (tcp + 20, tcp + hdr_len);
    let (mut mss, mut wscale, mut sack_ok, mut tsval) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..10 {
        if opt >= end || opt + 1 > p.len() {
            break;
        }
        let kind = p[opt];
        if kind < 16 {
            kinds[kind as usize] += 1;
        }
        match kind {
            0 => break,
            1 => {
                opt += 1;
                continue;
            }
            _ => {}
        }
        if opt + 2 > p.len() {
            break;
        }
        let olen = p[opt + 1] as usize;
        if olen < 2 || opt + olen > end {
            break;
        }
        match (kind, olen) {
            (2, 4) if opt + 4 > p.len() => break,
            (2, 4) => mss = u16::from_be_bytes([p[opt + 2], p[opt + 3]]) as u64,
            (3, 3) if opt + 3 > p.len() => break,
            (3, 3) => wscale = p[opt + 2] as u64,
            (4, 2) => sack_ok = 1,
            (8, 10) if opt + 10 > p.len() => break,
            (8, 10) => tsval = u32::from_be_bytes(p[opt + 2..opt + 6].try_into().unwrap()) as u64,
            _ => {}
        }
        opt += olen;
    }
    mss | wscale << 16 | sack_ok << 24 | tsval << 32
}

fn syn(ihl: u8, options: &[u8]) -> Vec<u8> {
    eth(ETH_IPV4, &ipv4(4, ihl, PROTO_TCP, &tcp(options)))
}

fn tcp_options(setup: Setup) -> Log {
    let (instance, vm) = setup.load("tcp_options", "tcp_options", PACKET);
    // What Linux sends in a SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    let linux = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 1, 3, 3, 7];
    let mut nops = vec![1; 12];
    nops.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    let mut cut_ts = syn(5, &linux);
    cut_ts.truncate(14 + 20 + 20 + 9); // inside the timestamps option
    let mut cut_tcp = syn(5, &linux);
    cut_tcp.truncate(14 + 20 + 19);
    let inputs = vec![
        ("Linux SYN", syn(5, &linux), 1460 | 7 << 16 | 1 << 24 | 0x1234_5678 << 32),
        ("IP options, MSS only", syn(6, &[2, 4, 0x22, 0x38]), 0x2238),
        ("12 NOPs: the walk stops after 10 options", syn(5, &nops), 0),
        ("window scale then end of options", syn(5, &[3, 3, 9, 0, 2, 4, 1, 1]), 9 << 16),
        ("option length 1", syn(5, &[4, 2, 2, 1, 2, 4, 1, 1]), 1 << 24),
        ("option longer than the header", syn(5, &[2, 4, 1, 1, 3, 9, 1]), 0x0101),
        ("timestamps cut by the packet's end", cut_ts, 1460 | 1 << 24),
        ("TCP header cut", cut_tcp, 0),
        ("no options", syn(5, &[]), 0),
        ("UDP", udp_frame(5, 1, 2), 0),
        ("empty", Vec::new(), 0),
    ];
    let mut log = Log::new();
    let mut kinds = [0u64; 16];
    for (what, frame, want) in inputs {
        assert_eq!(walk_tcp_options(&frame, &mut kinds), want, "{what}: the Rust walker");
        expect(&mut log, &vm, &mut packet(&frame), want, what);
    }
    let got = array_u64(&instance, "kinds");
    assert_eq!(got, kinds.to_vec());
    assert_eq!(got[1], 1 + 10, "NOPs: one in the Linux SYN, ten of the twelve in the other header");
    log.push(format!("kinds: {got:?}"));
    log
}

#[test]
fn tcp_options_checked() {
    checked(tcp_options);
}

#[test]
fn tcp_options_verified() {
    verified(tcp_options);
}

// ---- stack_arrays: 256-byte fill and checksum, insertion sort of 32 u32 --------------------------

fn stack_checksum_of(input: &[u8]) -> u64 {
    let seed = input.len() as u8;
    let mut buf: Vec<u8> = (0..256u32).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    for (b, x) in buf.iter_mut().zip(input) {
        *b ^= x;
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &buf {
        a = a.wrapping_add(x as u32);
        b = b.wrapping_add(a);
    }
    (b as u64) << 32 | a as u64
}

fn stack_checksum(setup: Setup) -> Log {
    let (_, vm) = setup.load("stack_arrays", "stack_checksum", Context::Buffer);
    let mut log = Log::new();
    for input in [vec![], vec![0xff], noise(100, 1), noise(256, 2), noise(300, 3)] {
        let want = stack_checksum_of(&input);
        expect(&mut log, &vm, &mut input.clone(), want, &format!("{} bytes", input.len()));
    }
    log
}

#[test]
fn stack_checksum_checked() {
    checked(stack_checksum);
}

#[test]
fn stack_checksum_verified() {
    verified(stack_checksum);
}

fn insertion_sort(setup: Setup) -> Log {
    let (_, vm) = setup.load("stack_arrays", "insertion_sort", Context::Buffer);
    let words = |v: &[u32]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
    let random: Vec<u32> = noise(128, 4).chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let descending: Vec<u32> = (0..32).rev().map(|i| i * 1000).collect();
    let duplicates: Vec<u32> = (0..32).map(|i| (i * 7) % 5).collect();
    let mut longer = words(&random);
    longer.extend_from_slice(&noise(72, 5));
    let inputs =
        [words(&random), words(&descending), words(&duplicates), longer, words(&random)[..127].to_vec(), vec![]];
    let mut log = Log::new();
    for input in inputs {
        let what = format!("{} bytes", input.len());
        let mut want = input.clone();
        let mut expected = 0;
        if input.len() >= 128 {
            let mut v: Vec<u32> = input[..128].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
            v.sort_unstable();
            want[..128].copy_from_slice(&words(&v));
            expected = v.iter().enumerate().map(|(i, &x)| (i as u64 + 1) * x as u64).sum();
        }
        let mut mem = input.clone();
        expect(&mut log, &vm, &mut mem, expected, &what);
        assert_eq!(mem, want, "{what}: sorted in place, the rest untouched");
        log.push(format!("{what}: {mem:?}"));
    }
    log
}

#[test]
fn insertion_sort_checked() {
    checked(insertion_sort);
}

#[test]
fn insertion_sort_verified() {
    verified(insertion_sort);
}

// ---- loop_nest: 2048 x 256 iterations ------------------------------------------------------------

fn loop_nest_of(input: &[u8]) -> u64 {
    let seed = match input.get(..8) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap()),
        None => input.len() as u64,
    };
    let table: Vec<u8> = (0..256u32).map(|j| (j as u8).wrapping_mul(13).wrapping_add(seed as u8)).collect();
    let mut acc = seed;
    for i in 0..2048u32 {
        for &t in &table {
            acc = acc.wrapping_mul(31).wrapping_add((t as u32 ^ i) as u64);
        }
    }
    acc
}

fn loop_nest(setup: Setup) -> Log {
    let (instance, vm) = setup.load("loop_nest", "loop_nest", Context::Buffer);
    if setup.verified {
        // Proving the nest must cost far fewer steps than running it (524,288 inner iterations).
        let program = instance.program("loop_nest").unwrap().program.clone();
        let mut env = instance.env();
        env.set_context(Context::Buffer);
        let linked = Arc::new(Linked::new(program, Vec::new(), env).unwrap());
        let stats = Verifier::new().verify(&linked).expect("verifies").stats();
        assert!(stats.processed < 10_000, "{stats:?}");
        assert!(stats.loops >= 3, "{stats:?}");
    }
    let mut log = Log::new();
    for input in [vec![], vec![1, 2, 3, 4, 5], b"\x01\x00\x00\x00\x00\x00\x00\x80".to_vec(), noise(16, 6)] {
        let want = loop_nest_of(&input);
        expect(&mut log, &vm, &mut input.clone(), want, &format!("{} bytes", input.len()));
    }
    log
}

#[test]
fn loop_nest_checked() {
    checked(loop_nest);
}

#[test]
fn loop_nest_verified() {
    verified(loop_nest);
}

// ---- fnv1a: hash over at most 1500 input bytes ---------------------------------------------------

fn fnv1a_of(input: &[u8]) -> u32 {
    input.iter().take(1500).fold(2_166_136_261u32, |h, &b| (h ^ b as u32).wrapping_mul(16_777_619))
}

fn fnv1a(setup: Setup) -> Log {
    assert_eq!(fnv1a_of(b"a"), 0xe40c_292c, "the Rust reference matches FNV-1a's published value");
    let (instance, vm) = setup.load("fnv1a", "fnv1a", Context::Buffer);
    let mut log = Log::new();
    let mut hashed = 0;
    for input in [vec![], b"a".to_vec(), b"foobar".to_vec(), noise(1500, 7), noise(2000, 8)] {
        hashed += input.len().min(1500) as u64;
        let want = fnv1a_of(&input) as u64;
        expect(&mut log, &vm, &mut input.clone(), want, &format!("{} bytes", input.len()));
    }
    assert_eq!(array_u64(&instance, "hashed_bytes"), [hashed]);
    log.push(format!("hashed: {hashed}"));
    log
}

#[test]
fn fnv1a_checked() {
    checked(fnv1a);
}

#[test]
fn fnv1a_verified() {
    verified(fnv1a);
}

// ---- hash_counters: lookup, update, delete, atomics on a hash map --------------------------------

const COUNT: u8 = 1;
const DELETE: u8 = 2;

fn rec(op: u8, proto: u8, port: u16, bytes: u32) -> [u8; 8] {
    let p = port.to_be_bytes();
    let b = bytes.to_le_bytes();
    [op, proto, p[0], p[1], b[0], b[1], b[2], b[3]]
}

fn records(list: &[[u8; 8]]) -> Vec<u8> {
    list.concat()
}

/// The program's effect in Rust on `flows` ((port, proto) -> (packets, bytes), at most 8 entries).
fn count_flows(input: &[u8], flows: &mut HashMap<(u16, u8), (u64, u64)>) -> u64 {
    let (mut created, mut updated, mut deleted, mut missing, mut failed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for r in input.chunks_exact(8).take(16) {
        let key = (u16::from_be_bytes([r[2], r[3]]), r[1]);
        let bytes = u32_at(r, 4) as u64;
        match r[0] {
            COUNT => {
                if let Some(v) = flows.get_mut(&key) {
                    *v = (v.0 + 1, v.1 + bytes);
                    updated += 1;
                } else if flows.len() < 8 {
                    flows.insert(key, (1, bytes));
                    created += 1;
                } else {
                    failed += 1;
                }
            }
            DELETE => match flows.remove(&key) {
                Some(_) => deleted += 1,
                None => missing += 1,
            },
            _ => break,
        }
    }
    created | updated << 8 | deleted << 16 | missing << 24 | failed << 32
}

fn hash_counters(setup: Setup) -> Log {
    let (instance, vm) = setup.load("hash_counters", "hash_counters", Context::Buffer);
    let mut mixed = records(&[
        rec(COUNT, 6, 80, 100),
        rec(COUNT, 17, 53, 60),
        rec(COUNT, 6, 80, 40),
        rec(DELETE, 17, 53, 0),
        rec(DELETE, 17, 53, 0),
        rec(0, 0, 0, 0),
        rec(COUNT, 6, 443, 1), // after the end marker: not read
    ]);
    mixed.extend_from_slice(&[0; 3]);
    let fill: Vec<[u8; 8]> = (1..=10).map(|i| rec(COUNT, 17, 1000 + i, i as u32)).collect();
    let mut cut = records(&[rec(COUNT, 6, 80, 5), rec(COUNT, 6, 22, 9)]);
    cut.truncate(13); // the second record is cut: only the first is read
    let many: Vec<[u8; 8]> = (0..20).map(|_| rec(COUNT, 6, 80, 1)).collect();
    let inputs = [
        ("count, delete, end marker", mixed, 2 | 1 << 8 | 1 << 16 | 1 << 24),
        ("more keys than the map holds", records(&fill), 7 | 3 << 32),
        ("a record cut short", cut, 1 << 8),
        ("20 records: 16 read", records(&many), 16 << 8),
        ("delete everything", records(&[rec(DELETE, 6, 80, 0), rec(DELETE, 17, 1001, 0)]), 2 << 16),
        ("empty", vec![], 0),
    ];
    let mut log = Log::new();
    let mut flows = HashMap::new();
    for (what, input, want) in inputs {
        assert_eq!(count_flows(&input, &mut flows), want, "{what}: the Rust model");
        expect(&mut log, &vm, &mut input.clone(), want, what);
    }
    let map = instance.map("flows").unwrap();
    let mut got: Vec<((u16, u8), (u64, u64))> = map
        .keys()
        .into_iter()
        .map(|k| {
            assert_eq!(k[3], 0, "padding byte of the key");
            let v = map.get(&k, 0).unwrap();
            ((u16::from_ne_bytes([k[0], k[1]]), k[2]), (u64_at(&v, 0), u64_at(&v, 8)))
        })
        .collect();
    got.sort_unstable();
    let mut want: Vec<_> = flows.into_iter().collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(got.len(), 6);
    log.push(format!("flows: {got:?}"));
    log
}

#[test]
fn hash_counters_checked() {
    checked(hash_counters);
}

#[test]
fn hash_counters_verified() {
    verified(hash_counters);
}

// ---- ringbuf_paths: reserve, fill, submit or discard ---------------------------------------------

/// The 32-byte record the program submits for `input`.
fn ring_record(input: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&(input[0] as u32).to_le_bytes());
    r.extend_from_slice(&(input.len() as u32).to_le_bytes());
    let mut head = input[1..].to_vec();
    head.resize(16, 0);
    let sum: u64 = head.iter().map(|&b| b as u64).sum();
    r.extend_from_slice(&head);
    r.extend_from_slice(&sum.to_le_bytes());
    r
}

fn ringbuf_paths(setup: Setup) -> Log {
    let (instance, vm) = setup.load("ringbuf_paths", "ringbuf_paths", Context::Buffer);
    let map = Arc::clone(instance.map("events").unwrap());
    let rb = map.downcast_ref::<RingBufMap>().unwrap();
    let long = [b"a".as_slice(), &noise(20, 9)].concat();
    let inputs: [(&str, &[u8], u64); 7] = [
        ("empty", b"", 6),
        ("output", b"oxyz", 4),
        ("discard on request", b"dabc", 1),
        ("submit, 20 payload bytes", &long, 0),
        ("discard, all zeros", b"z\0\0\0", 3),
        ("submit, short input", b"bhi", 0),
        ("discard, no payload", b"c", 3),
    ];
    let mut log = Log::new();
    for (what, input, want) in inputs {
        expect(&mut log, &vm, &mut input.to_vec(), want, what);
    }
    let summary = [(b'o' as u32).to_le_bytes(), 4u32.to_le_bytes()].concat();
    let records = rb.drain();
    assert_eq!(records, vec![summary, ring_record(&long), ring_record(b"bhi")]);
    log.push(format!("records: {records:?}"));
    // Filled without consuming: as many records as 4096 bytes hold (8-byte header + 32 bytes each),
    // then the reserve fails.
    let mut accepted = 0;
    let mut input = b"f\x01\x02".to_vec();
    while accepted <= 4096 / 40 {
        match vm.execute(&mut input) {
            Ok(0) => accepted += 1,
            other => {
                assert_eq!(other, Ok(2), "reserve failed");
                break;
            }
        }
    }
    assert_eq!(accepted, 4096 / 40);
    // 16 bytes are left: room for an 8-byte summary and its header, then nothing.
    expect(&mut log, &vm, &mut b"oq".to_vec(), 4, "output into the last 16 bytes");
    expect(&mut log, &vm, &mut b"or".to_vec(), 5, "output into a full ring");
    let mut records = rb.drain();
    assert_eq!(records.pop(), Some([(b'o' as u32).to_le_bytes(), 2u32.to_le_bytes()].concat()));
    assert_eq!(records.len(), accepted);
    assert!(records.iter().all(|r| *r == ring_record(b"f\x01\x02")));
    expect(&mut log, &vm, &mut input, 0, "room again after draining");
    log.push(format!("filled: {accepted}"));
    log
}

#[test]
fn ringbuf_paths_checked() {
    checked(ringbuf_paths);
}

#[test]
fn ringbuf_paths_verified() {
    verified(ringbuf_paths);
}

// ---- calls: bpf-to-bpf calls with stack and map-value pointers -----------------------------------

fn calls(setup: Setup) -> Log {
    let (instance, vm) = setup.load("calls", "calls", Context::Buffer);
    let inputs = [vec![], vec![1, 2, 3], noise(100, 10), vec![200; 10], vec![7]];
    let mut log = Log::new();
    let (mut runs, mut bytes, mut sum_all, mut max_all) = (0u64, 0u64, 0u64, 0u32);
    for input in inputs {
        let head = &input[..input.len().min(64)];
        let sum: u64 = head.iter().map(|&b| b as u64).sum();
        let max = head.iter().copied().max().unwrap_or(0) as u64;
        let min = head.iter().copied().min().unwrap_or(0) as u64;
        runs += 1;
        bytes += head.len() as u64;
        sum_all += sum;
        max_all = max_all.max(max as u32);
        let want = (sum * 3 + max - min) | runs << 32;
        expect(&mut log, &vm, &mut input.clone(), want, &format!("{} bytes", input.len()));
    }
    let totals = instance.map("totals").unwrap().get(&0u32.to_ne_bytes(), 0).unwrap();
    assert_eq!(totals.len(), 32);
    let got = (u64_at(&totals, 0), u64_at(&totals, 8), u64_at(&totals, 16), u32_at(&totals, 24));
    assert_eq!(got, (runs, bytes, sum_all, max_all));
    log.push(format!("totals: {got:?}"));
    log
}

#[test]
fn calls_checked() {
    checked(calls);
}

#[test]
fn calls_verified() {
    verified(calls);
}

// ---- tail_calls: dispatch through a program array ------------------------------------------------

const DISPATCH: usize = 0;
const MISS: usize = 1;
const SUM: usize = 2;
const XOR: usize = 3;
const FORWARD: usize = 4;

/// The program chain in Rust: the result and the runs counted per slot. Slots 0, 1 and 3 hold the
/// sum, xor and forward handlers; 33 tail calls succeed in one run.
fn dispatch_model(mem: &mut [u8], runs: &mut [u64; 5]) -> u64 {
    if mem.is_empty() {
        return 0;
    }
    runs[DISPATCH] += 1;
    let mut slot = mem[0] as u32;
    let mut from_dispatch = true;
    // One iteration per tail call within the limit.
    for _ in 0..33 {
        let rest = &mem[1..mem.len().min(33)];
        match slot {
            0 => {
                runs[SUM] += 1;
                return 1000 + rest.iter().map(|&b| b as u64).sum::<u64>();
            }
            1 => {
                runs[XOR] += 1;
                return 2000 + rest.iter().fold(0, |x, &b| x ^ b) as u64;
            }
            3 => {
                runs[FORWARD] += 1;
                slot = mem.get(1).copied().unwrap_or(0) as u32;
                mem[0] = slot as u8;
                from_dispatch = false;
            }
            _ => break, // an empty slot: the tail call fails
        }
    }
    // The tail call failed (empty slot, or one too many): its caller carries on.
    if from_dispatch {
        runs[MISS] += 1;
        0xdead
    } else {
        3000
    }
}

fn tail_calls(setup: Setup) -> Log {
    let (instance, vm) = setup.load("tail_calls", "dispatch", Context::Buffer);
    let inputs: [(&str, &[u8], u64); 9] = [
        ("empty", b"", 0),
        ("sum", &[0, 1, 2, 3], 1006),
        ("xor", &[1, 1, 2, 4], 2007),
        ("empty slot", &[2, 9], 0xdead),
        ("out of range", &[200], 0xdead),
        ("forward to xor", &[3, 1, 5, 6], 2002),
        ("forward, no second byte", &[3], 1000),
        ("forward to itself until the limit", &[3, 3, 3], 3000),
        ("forward to an empty slot", &[3, 7], 3000),
    ];
    let mut log = Log::new();
    let mut runs = [0u64; 5];
    for (what, input, want) in inputs {
        let mut after = input.to_vec();
        assert_eq!(dispatch_model(&mut after, &mut runs), want, "{what}: the Rust model");
        let mut mem = input.to_vec();
        expect(&mut log, &vm, &mut mem, want, what);
        assert_eq!(mem, after, "{what}: the memory the handlers leave");
    }
    let got = array_u64(&instance, "runs");
    assert_eq!(got, runs);
    assert_eq!(got[FORWARD], 1 + 1 + 33 + 1, "33 runs of the handler that forwards to itself");
    log.push(format!("runs: {got:?}"));
    // Any program of the array may also be entered directly, with its own guards.
    let forward = setup.build(&instance, "handle_forward", Context::Buffer);
    expect(&mut log, &forward, &mut [], 0, "forward entered directly, empty");
    let mut mem = [9, 1, 4];
    expect(&mut log, &forward, &mut mem, 2000 + (1 ^ 4), "forward entered directly, to xor");
    assert_eq!(mem, [1, 1, 4]);
    log
}

#[test]
fn tail_calls_checked() {
    checked(tail_calls);
}

#[test]
fn tail_calls_verified() {
    verified(tail_calls);
}

// ---- switch_byte: switches over input bytes ------------------------------------------------------

const CLASSES: [u64; 10] = [17, 4242, 99, 1_000_003, 7, 65535, 31337, 12, 8080, 443];

fn class_of(input: &[u8]) -> u64 {
    match input.first() {
        None => 0,
        Some(&b) => CLASSES.get(b as usize).copied().unwrap_or(1),
    }
}

fn opcodes_of(input: &[u8]) -> u64 {
    let mut acc = 1u64;
    for (i, &op) in input.iter().enumerate().take(32) {
        acc = match op {
            0 => acc.wrapping_add(1),
            1 => acc.wrapping_mul(3),
            2 => acc ^ 0x5555,
            3 => acc << 1,
            4 => acc >> 1,
            5 => acc.wrapping_sub(7),
            6 => !acc,
            7 => acc.wrapping_add(i as u64),
            0xff => return acc,
            _ => acc.wrapping_add(op as u64),
        };
    }
    acc
}

fn switch_byte(setup: Setup) -> Log {
    let instance = setup.instance("switch_byte");
    let classify = setup.build(&instance, "classify", Context::Buffer);
    let table = setup.build(&instance, "table", Context::Buffer);
    let opcodes = setup.build(&instance, "opcodes", Context::Buffer);
    let mut log = Log::new();
    let mut inputs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b, 0xaa]).collect();
    inputs.push(vec![]);
    for input in &inputs {
        let want = class_of(input);
        expect(&mut log, &classify, &mut input.clone(), want, &format!("classify {input:?}"));
        expect(&mut log, &table, &mut input.clone(), want, &format!("table {input:?}"));
    }
    let every_op: Vec<u8> = (0..=8).chain([1, 1, 6, 7, 200, 3, 3, 5, 4]).collect();
    let stop = [1, 1, 1, 0xff, 1, 1, 1].to_vec();
    let mut long = noise(40, 11);
    long.iter_mut().for_each(|b| *b %= 9);
    for input in [every_op, stop, long, vec![6], vec![]] {
        let want = opcodes_of(&input);
        expect(&mut log, &opcodes, &mut input.clone(), want, &format!("opcodes {input:?}"));
    }
    log
}

#[test]
fn switch_byte_checked() {
    checked(switch_byte);
}

#[test]
fn switch_byte_verified() {
    verified(switch_byte);
}

// ---- rodata_config: const volatile configuration -------------------------------------------------

/// The `config` struct of `.rodata`: max_bytes, rounds, lanes, xor_key.
type Config = [u32; 4];

fn configured_hash(c: Config, input: &[u8]) -> u64 {
    let [max_bytes, rounds, lanes, xor_key] = c;
    if lanes == 0 || lanes > 8 {
        return 0;
    }
    let mut lane = [0u64; 8];
    for (i, &b) in input.iter().enumerate().take(max_bytes as usize) {
        let l = &mut lane[i % lanes as usize];
        *l = l.wrapping_mul(33).wrapping_add((b as u32 ^ xor_key) as u64);
    }
    let mut acc = lane[..lanes as usize].iter().fold(0u64, |a, &l| a.wrapping_mul(0x100_0000_01b3).wrapping_add(l));
    for _ in 0..rounds {
        acc ^= acc >> 29;
        acc = acc.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    acc
}

fn rodata_config(setup: Setup) -> Log {
    let mut log = Log::new();
    let configs: [Config; 4] = [[64, 4, 4, 0x5a], [3, 0, 8, 0], [1000, 9, 1, 0xffff_ffff], [64, 4, 9, 0]];
    for (n, config) in configs.into_iter().enumerate() {
        let instance = setup.instance("rodata_config");
        let rodata = instance.map(".rodata").unwrap();
        let bytes: Vec<u8> = config.iter().flat_map(|w| w.to_le_bytes()).collect();
        if n == 0 {
            assert_eq!(rodata.get(&0u32.to_ne_bytes(), 0).unwrap(), bytes, "the object's defaults");
        } else {
            // What a loader does before loading: set the configuration, then build.
            rodata.update(&0u32.to_ne_bytes(), &bytes, 0, 0).unwrap();
        }
        let vm = setup.build(&instance, "rodata_config", Context::Buffer);
        for input in [vec![], b"abc".to_vec(), noise(100, 12), noise(1200, 13)] {
            let want = configured_hash(config, &input);
            expect(&mut log, &vm, &mut input.clone(), want, &format!("{config:?}, {} bytes", input.len()));
        }
    }
    log
}

#[test]
fn rodata_config_checked() {
    checked(rodata_config);
}

/// The rounds loop re-reads its bound from `.rodata` on every pass. Building freezes `.rodata`, as
/// libbpf does at load, so the verifier reads the configured bound as a constant and proves the loop.
#[test]
fn rodata_config_verified() {
    verified(rodata_config);
}

/// Once a program is built, `.rodata` cannot change under it: host updates fail.
#[test]
fn rodata_is_frozen_by_building() {
    let instance = Setup { engine: Engine::Interpreter, verified: true }.instance("rodata_config");
    let rodata = instance.map(".rodata").unwrap().clone();
    let key = 0u32.to_ne_bytes();
    rodata.update(&key, &[0; 16], 0, 0).expect("writable before building");
    assert!(!rodata.frozen());
    let vm = instance.vm_builder("rodata_config").expect("program exists").verified().build().expect("verifies");
    assert!(rodata.frozen());
    assert_eq!(rodata.update(&key, &[1; 16], 0, 0), Err(ebpf_vm::maps::MapError::Frozen));
    assert_eq!(rodata.get(&key, 0).unwrap(), [0; 16], "the value the verifier read is still there");
    // lanes == 0: the program returns 0 at once.
    assert_eq!(vm.execute(&mut [1, 2, 3]), Ok(0));
}

/// A `.rodata` that is not frozen (a map built by hand, never frozen) holds unknown values: the
/// rounds loop is then refused, with the loop named.
#[test]
fn rodata_config_is_refused_when_rodata_is_not_frozen() {
    use ebpf_vm::maps::{ArrayMap, MapDef, MapType, BPF_F_RDONLY_PROG};
    let instance = Setup { engine: Engine::Interpreter, verified: true }.instance("rodata_config");
    let builder = instance.vm_builder("rodata_config").expect("program exists");
    // The same program against a fresh, unfrozen `.rodata` of the same shape.
    let def = instance.map(".rodata").unwrap().def();
    assert_eq!(def.flags & BPF_F_RDONLY_PROG, BPF_F_RDONLY_PROG);
    let fresh = ArrayMap::new(MapDef { map_type: MapType::Array, ..def }).unwrap();
    let fresh: Arc<dyn ebpf_vm::maps::Map> = Arc::new(fresh);
    fresh
        .update(&0u32.to_ne_bytes(), &instance.map(".rodata").unwrap().get(&0u32.to_ne_bytes(), 0).unwrap(), 0, 0)
        .unwrap();
    let mut env = ebpf_vm::link::Env::new();
    env.add_standard_helpers();
    for m in instance.maps() {
        env.add_map(if m.name == ".rodata" { fresh.clone() } else { m.map.clone() });
    }
    let built = builder.env(env).verified().build();
    let Err(ebpf_vm::BuildError::Verify(e)) = built else { panic!("expected a verification error") };
    assert!(matches!(e.kind, ebpf_vm::verifier::VerifyErrorKind::UnboundedLoop { .. }), "{e}");
}
