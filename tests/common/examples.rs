//! Running the examples as the tests do: `examples/dmesg` built once, and what the tools print, as
//! text.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::build_examples;

/// `examples/dmesg`, built once (with the caller's cargo and target directory).
pub fn dmesg_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let [dmesg] = build_examples(["dmesg"]);
        dmesg
    })
}

/// `b` as UTF-8 text.
pub fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

/// The messages of dmesg's default output: each line after its `[timestamp] ` prefix.
pub fn messages(stdout: &[u8]) -> Vec<&str> {
    text(stdout)
        .lines()
        .map(|l| l.split_once("] ").unwrap().1)
        .collect()
}
