//! Set-up shared by the crate's doc examples, so that each example shows only what it teaches.
//! Hidden from the documentation; not part of the API.
//!
//! ```
//! use nmilog::doc_support::OneCpu;
//! use nmilog::{Level, Log};
//! static LOG: Log<OneCpu, 1, 256, 1024> = Log::new(OneCpu);
//! LOG.append(Level::Info, 0, 0, b"hi").unwrap();
//! assert_eq!(LOG.main().next_seq(), 1);
//! ```

use crate::Platform;

/// A one-CPU platform: always CPU 0, a clock that always reads 7 ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneCpu;

impl Platform for OneCpu {
    fn cpu_id(&self) -> usize {
        0
    }
    fn now_ns(&self) -> u64 {
        7
    }
    fn cpu_count(&self) -> usize {
        1
    }
}
