//! A hook point in a host's own code: a request handler fires it with each request's size, and an
//! attached program decides whether the request may go on (a policy the host can change at run time).
//!
//! `cargo run --release --example hook_point`

use std::sync::Arc;

use ebpf_vm::attach::HookPoint;
use ebpf_vm::{Context, Env, Program, Vm};

/// The host's handler: refused when any attached program returns non-zero.
fn handle(point: &HookPoint, size: u64) -> &'static str {
    let mut refused = false;
    point.fire(&mut size.to_ne_bytes(), |_, result| refused |= result != Ok(0));
    if refused {
        "refused"
    } else {
        "served"
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let point = HookPoint::new("request");
    println!("no policy: a request of 5000 bytes is {}", handle(&point, 5000));

    // The policy: refuse requests over 4096 bytes. The context is the request's size, 8 bytes, read-only.
    let mut env = Env::new();
    let read_only = std::iter::once(0..8).collect();
    env.set_context(Context::Fixed { size: 8, read_only });
    let program = Program::from_asm("ldxdw %r2, [%r1+0]\nmov %r0, 0\njle %r2, 4096, ok\nmov %r0, 1\nok:\nexit")?;
    let policy = point.attach(Arc::new(Vm::builder(program).env(env).verified().build()?));
    for size in [100, 5000] {
        println!("policy attached: a request of {size} bytes is {}", handle(&point, size));
    }

    point.detach(policy);
    println!("policy detached: a request of 5000 bytes is {}", handle(&point, 5000));
    Ok(())
}
