//! Escaping record text for output (JSON strings, terminal text). Placeholder: filled in by the
//! reshaping (one escaper shared by the capture stage and `examples/dmesg`).
