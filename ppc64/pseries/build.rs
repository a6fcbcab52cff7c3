//! Hands each binary its linker script with an absolute path, so the build works from any directory:
//! the kernel (`link.ld`, loaded by QEMU's `-kernel` at 0x400000) and the capture stage (`capture.ld`,
//! linked into the reserved crash region).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bin=nmilog-pseries=-T{dir}/link.ld");
    println!("cargo:rustc-link-arg-bin=nmilog-capture=-T{dir}/capture.ld");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=capture.ld");
}
