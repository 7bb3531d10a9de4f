//! Writing a jump over several instructions while other threads run them: every other thread of the
//! process is stopped in a signal handler first. A thread stopped between two of the instructions the
//! jump replaces would resume inside the jump; its handler moves it to the same instruction in the
//! trampoline's copy, which goes on exactly as the original would. Then the jump is written and the
//! threads go on.
//!
//! While the threads are stopped, this thread allocates nothing and takes no lock (a stopped thread may
//! hold the allocator's): the thread list is read with `getdents64` into a buffer on the stack, the
//! thread ids go into a vector reserved beforehand, and the write reports errors as numbers.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::AttachError;

/// The real-time signal used, above those glibc keeps for itself (`SIGRTMIN() + 6`).
fn signal() -> i32 {
    libc::SIGRTMIN() + 6
}

/// How long the other threads get to stop (a thread that blocks the signal never does).
const PATIENCE: Duration = Duration::from_secs(2);

/// The round the signals sent belong to (carried in each signal's value): a signal of another round,
/// delivered late, is ignored.
static ROUND: AtomicU64 = AtomicU64::new(0);
/// Threads stopped, and threads that left the handler, in the round in the high 32 bits: a thread
/// counts itself only in its own round.
static STOPPED: AtomicU64 = AtomicU64::new(0);
static LEFT: AtomicU64 = AtomicU64::new(0);
/// The last round whose threads may leave.
static RELEASED: AtomicU64 = AtomicU64::new(0);
/// The moves of this round: pairs (address inside the replaced bytes, same instruction in the
/// trampoline), `MOVES_LEN` of them.
static MOVES: AtomicPtr<(u64, u64)> = AtomicPtr::new(core::ptr::null_mut());
static MOVES_LEN: AtomicUsize = AtomicUsize::new(0);

/// The handler: moves the thread out of the replaced bytes, then waits for the release.
extern "C" fn on_signal(_sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; for `SI_QUEUE` the value is at offset 24 (x86_64 and
    // aarch64 alike).
    let (code, value) = unsafe {
        let p = info.cast::<u8>();
        (p.add(8).cast::<i32>().read(), p.add(24).cast::<u64>().read())
    };
    if code != libc::SI_QUEUE || value != ROUND.load(Ordering::Acquire) || !count(&STOPPED, value) {
        return;
    }
    let moves = MOVES.load(Ordering::Acquire);
    if !moves.is_null() {
        // SAFETY: `context` is the interrupted thread's `ucontext_t`; `moves` holds `MOVES_LEN` pairs
        // that stay alive until every stopped thread has left.
        unsafe {
            let uc = context.cast::<libc::ucontext_t>();
            #[cfg(target_arch = "x86_64")]
            let pc = &mut *(&raw mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize]).cast::<u64>();
            #[cfg(target_arch = "aarch64")]
            let pc = &mut (*uc).uc_mcontext.pc;
            for i in 0..MOVES_LEN.load(Ordering::Acquire) {
                let (from, to) = *moves.add(i);
                if *pc == from {
                    *pc = to;
                }
            }
        }
    }
    while RELEASED.load(Ordering::Acquire) < value {
        core::hint::spin_loop();
    }
    count(&LEFT, value);
}

/// Adds one to `counter` if it counts round `round`; whether it did.
fn count(counter: &AtomicU64, round: u64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| (v >> 32 == round & 0xffff_ffff).then_some(v + 1))
        .is_ok()
}

/// What `counter` counted in round `round`.
fn counted(counter: &AtomicU64, round: u64) -> usize {
    let v = counter.load(Ordering::SeqCst);
    if v >> 32 == round & 0xffff_ffff {
        (v & 0xffff_ffff) as usize
    } else {
        0
    }
}

/// Installs the handler, once.
fn install() -> Result<(), AttachError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (atomics and the
        // interrupted context only), every signal blocked while it runs.
        unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigfillset(&mut action.sa_mask);
            if libc::sigaction(signal(), &action, core::ptr::null_mut()) != 0 {
                return Err(*libc::__errno_location());
            }
        }
        Ok(())
    });
    r.map_err(|errno| AttachError::Process(alloc::format!("sigaction: errno {errno}")))
}

/// Thread ids of the process not yet in `seen`, appended to it; false if `seen` is full (it never
/// grows here) or the list cannot be read.
fn more_threads(seen: &mut Vec<i32>) -> bool {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/task".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 4096];
    let mut ok = true;
    'read: loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            ok = false;
            break;
        }
        if n == 0 {
            break;
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            // linux_dirent64: inode (8), offset (8), record length (2), type (1), name.
            let len = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if len == 0 {
                break;
            }
            let name = &buf[at + 19..(at + len).min(n as usize)];
            let mut tid: i32 = 0;
            let mut digits = 0;
            for &c in name.iter().take_while(|&&c| c != 0) {
                if !c.is_ascii_digit() {
                    digits = 0;
                    break;
                }
                tid = tid.saturating_mul(10).saturating_add((c - b'0') as i32);
                digits += 1;
            }
            if digits > 0 && !seen.contains(&tid) {
                if seen.len() == seen.capacity() {
                    ok = false;
                    break 'read;
                }
                seen.push(tid);
            }
            at += len;
        }
    }
    // SAFETY: opened above.
    unsafe { libc::close(fd) };
    ok
}

/// Whether threads that block the signal are left running rather than waited for. On aarch64 one
/// instruction is replaced, so no thread can be caught between displaced instructions: stopping the
/// threads serves only the architecture's rule on rewriting code that others may be running, and a
/// thread that blocks every signal (an emulator's own threads, which run no code of the process, do)
/// cannot be stopped. On x86_64 such a thread makes the patch fail.
const SKIP_BLOCKING: bool = cfg!(target_arch = "aarch64");

/// Whether thread `tid` of process `pid` blocks the signal, as its `status` file's `SigBlk` mask
/// says. Reads into a buffer on the stack; allocates nothing.
fn blocks_signal(pid: i32, tid: i32) -> bool {
    let mut path = [0u8; 64];
    let mut n = 0;
    let mut put = |bytes: &[u8], n: &mut usize| {
        for &b in bytes {
            if *n < path.len() - 1 {
                path[*n] = b;
                *n += 1;
            }
        }
    };
    let digits = |v: i32, out: &mut [u8; 12]| -> usize {
        let mut v = v.unsigned_abs();
        let mut len = 0;
        loop {
            out[11 - len] = b'0' + (v % 10) as u8;
            len += 1;
            v /= 10;
            if v == 0 {
                return len;
            }
        }
    };
    let mut num = [0u8; 12];
    put(b"/proc/", &mut n);
    let len = digits(pid, &mut num);
    put(&num[12 - len..], &mut n);
    put(b"/task/", &mut n);
    let len = digits(tid, &mut num);
    put(&num[12 - len..], &mut n);
    put(b"/status", &mut n);
    // SAFETY: `path` is NUL-terminated (zeroed past `n`); the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is writable for its length.
    let read = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: opened above.
    unsafe { libc::close(fd) };
    let Ok(read) = usize::try_from(read) else { return false };
    let text = &buf[..read];
    let key = b"SigBlk:";
    let Some(at) = text.windows(key.len()).position(|w| w == key) else { return false };
    let mut mask = 0u64;
    for &c in text[at + key.len()..].iter().skip_while(|c| c.is_ascii_whitespace()) {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => break,
        };
        mask = mask << 4 | d as u64;
    }
    let bit = signal() - 1;
    (0..64).contains(&bit) && mask >> bit & 1 == 1
}

/// How many of the threads `tids` of process `pid` no longer exist.
fn gone(pid: i32, tids: &[i32]) -> usize {
    tids.iter()
        .filter(|&&tid| {
            // SAFETY: signal 0 is only a check of the thread's existence.
            let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) };
            // SAFETY: this thread's errno.
            r == -1 && unsafe { *libc::__errno_location() } == libc::ESRCH
        })
        .count()
}

/// Runs `write` with every other thread of the process stopped, those stopped at a `from` of `moves`
/// moved to its `to`. Fails (without running `write`) if a thread does not stop in time.
pub(crate) fn with_threads_stopped(
    moves: &[(u64, u64)],
    write: impl FnOnce() -> Result<(), AttachError>,
) -> Result<(), AttachError> {
    install()?;
    let pid = std::process::id() as i32;
    // SAFETY: no preconditions.
    let me = unsafe { libc::gettid() };
    let mut threads: Vec<i32> = Vec::new();
    let now = std::fs::read_dir("/proc/self/task").map_or(64, |d| d.count());
    threads.try_reserve(now * 2 + 256).map_err(|_| AttachError::Process("out of memory".into()))?;
    // The threads signalled (the same room: no allocation once threads are stopped).
    let mut sent: Vec<i32> = Vec::new();
    sent.try_reserve(threads.capacity()).map_err(|_| AttachError::Process("out of memory".into()))?;
    threads.push(me);

    MOVES_LEN.store(moves.len(), Ordering::SeqCst);
    MOVES.store(moves.as_ptr().cast_mut(), Ordering::SeqCst);
    // Rounds are odd while threads stop; the even number after one ends it.
    let round = ROUND.fetch_add(1, Ordering::SeqCst) + 1;
    STOPPED.store((round & 0xffff_ffff) << 32, Ordering::SeqCst);
    LEFT.store((round & 0xffff_ffff) << 32, Ordering::SeqCst);

    // From here until the release: no allocation, no lock.
    let mut signalled = 0usize;
    let mut complete = true;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let known = threads.len();
        if !more_threads(&mut threads) {
            complete = false;
            break;
        }
        if threads.len() == known && counted(&STOPPED, round) + gone(pid, &sent) >= signalled {
            // Every thread stopped, and none was created meanwhile (a stopped thread creates none).
            break;
        }
        for &tid in &threads[known..] {
            if SKIP_BLOCKING && blocks_signal(pid, tid) {
                continue;
            }
            // SAFETY: a zeroed siginfo with the fields `SI_QUEUE` reads set at their offsets (the same on
            // x86_64 and aarch64).
            let sent_ok = unsafe {
                let mut info: libc::siginfo_t = core::mem::zeroed();
                let p = (&raw mut info).cast::<u8>();
                p.cast::<i32>().write(signal());
                p.add(8).cast::<i32>().write(libc::SI_QUEUE);
                p.add(16).cast::<i32>().write(pid);
                p.add(20).cast::<u32>().write(libc::getuid());
                p.add(24).cast::<u64>().write(round);
                libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, signal(), &raw const info)
            };
            if sent_ok == 0 && sent.len() < sent.capacity() {
                sent.push(tid);
                signalled += 1;
            }
        }
        // A thread that exits meanwhile (glibc blocks every signal in a thread's last steps) never
        // stops, and need not: it is waited for until it is gone.
        let mut spins = 0u32;
        while counted(&STOPPED, round) < signalled && Instant::now() < deadline {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 && counted(&STOPPED, round) + gone(pid, &sent) >= signalled {
                break;
            }
            core::hint::spin_loop();
        }
        if counted(&STOPPED, round) + gone(pid, &sent) < signalled {
            complete = false;
            break;
        }
    }
    let result = if complete { write() } else { Err(AttachError::ThreadsDidNotStop) };
    // Signals of this round delivered from now on are ignored, and the stopped threads may leave.
    ROUND.fetch_add(1, Ordering::SeqCst);
    RELEASED.store(round, Ordering::SeqCst);
    // The moves stay readable until every thread that stopped has left the handler.
    while counted(&LEFT, round) < counted(&STOPPED, round) {
        core::hint::spin_loop();
    }
    MOVES.store(core::ptr::null_mut(), Ordering::SeqCst);
    MOVES_LEN.store(0, Ordering::SeqCst);
    result
}
