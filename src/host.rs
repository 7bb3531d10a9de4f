//! What the standard helpers need from the operating system (time, process identity, printing).
//! With the `std` feature these come from the standard library; without it they are fixed values, and
//! a host that wants them provides its own helpers.

#[cfg(feature = "std")]
mod imp {
    use std::string::ToString;
    use std::sync::OnceLock;
    use std::time::Instant;

    fn start() -> Instant {
        static START: OnceLock<Instant> = OnceLock::new();
        *START.get_or_init(Instant::now)
    }

    /// Nanoseconds on a monotonic clock.
    pub(crate) fn monotonic_ns() -> u64 {
        // Start the clock at 1 s so that 0 never looks like a valid time.
        start().elapsed().as_nanos() as u64 + 1_000_000_000
    }

    /// The process id.
    pub(crate) fn pid() -> u32 {
        std::process::id()
    }

    /// The calling thread's id as the kernel numbers threads (what it calls the pid; the process id
    /// for the main thread), read once per thread from `/proc/thread-self`; the process id where that
    /// cannot be read.
    pub(crate) fn tid() -> u32 {
        std::thread_local! {
            static TID: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
        }
        let read = || {
            std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name()?.to_str()?.parse().ok())
                .unwrap_or_else(pid)
        };
        TID.try_with(|t| {
            if t.get() == 0 {
                t.set(read());
            }
            t.get()
        })
        .unwrap_or_else(|_| read())
    }

    /// The user and group ids the process runs as (those owning `/proc/self`), 0 where unknown.
    pub(crate) fn uid_gid() -> (u32, u32) {
        static IDS: OnceLock<(u32, u32)> = OnceLock::new();
        *IDS.get_or_init(|| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                if let Ok(m) = std::fs::metadata("/proc/self") {
                    return (m.uid(), m.gid());
                }
            }
            (0, 0)
        })
    }

    /// The process name, as in `/proc/self/comm`.
    pub(crate) fn comm() -> std::string::String {
        std::fs::read_to_string("/proc/self/comm").map(|s| s.trim_end().to_string()).unwrap_or_else(|_| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default()
        })
    }

    /// Writes a line to standard error.
    pub(crate) fn print_line(line: &str) {
        std::eprintln!("{line}");
    }
}

#[cfg(not(feature = "std"))]
mod imp {
    use alloc::string::String;

    pub(crate) fn monotonic_ns() -> u64 {
        0
    }
    pub(crate) fn pid() -> u32 {
        0
    }
    pub(crate) fn tid() -> u32 {
        0
    }
    pub(crate) fn uid_gid() -> (u32, u32) {
        (0, 0)
    }
    pub(crate) fn comm() -> String {
        String::new()
    }
    pub(crate) fn print_line(_line: &str) {}
}

pub(crate) use imp::*;
