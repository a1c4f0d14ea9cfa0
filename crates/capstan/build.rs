//! Links the `capstan` binary with the code a control plane runs laid out first
//! (docs/architecture.md, Decisions, "Hot code first in the `capstan` binary").
//!
//! `link/hot-code.order` lists, per cargo profile, the symbols `capstan discovery` executed in
//! a 100-proxy run, hottest first (`bench/hot_code_order.sh` writes it). Given to the linker as
//! `--symbol-ordering-file`, they fill the first ~5 MiB of `.text` instead of being spread
//! over all 25 MiB, where the kernel's fault-around maps 64 KiB of the file around each one
//! touched: the server's resident code shrinks from ~19 to ~7 MiB. Names the build does not
//! have (another profile's, or stale ones after a dependency update) are ignored, so a stale
//! list costs memory, never correctness. `CAPSTAN_HOT_ORDER=0` turns it off.
use std::env;
use std::path::PathBuf;

fn main() {
    let order = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("link")
        .join("hot-code.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=CAPSTAN_HOT_ORDER");
    if env::var_os("CAPSTAN_HOT_ORDER").is_some_and(|v| v == "0") || !order.exists() {
        return;
    }
    // Rust links x86_64-unknown-linux-gnu with its bundled lld since 1.90; `cc` with another
    // target's default linker (GNU ld) does not know the option.
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=capstan=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=capstan=-Wl,--no-warn-symbol-ordering");
}
