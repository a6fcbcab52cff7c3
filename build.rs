//! One name for a condition the crate tests in many places: `nmilog_cas` is set where compare-and-
//! swap is available to the normal-context paths — natively (`target_has_atomic = "ptr"`) or through
//! portable-atomic's emulation (features `critical-section`, `unsafe-assume-single-core`). The NMI
//! path never depends on it.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(nmilog_cas)");
    println!("cargo::rerun-if-changed=build.rs");
    let native = std::env::var("CARGO_CFG_TARGET_HAS_ATOMIC")
        .map(|v| v.split(',').any(|w| w == "ptr"))
        .unwrap_or(false);
    let emulated = std::env::var_os("CARGO_FEATURE_CRITICAL_SECTION").is_some()
        || std::env::var_os("CARGO_FEATURE_UNSAFE_ASSUME_SINGLE_CORE").is_some();
    if native || emulated {
        println!("cargo::rustc-cfg=nmilog_cas");
    }
}
