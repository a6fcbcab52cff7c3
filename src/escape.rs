//! Escaping record text for output. Record text is whatever the caller formatted — quotes,
//! backslashes, newlines, terminal control sequences — so a reader that prints it in a structured
//! format escapes it first. `no_std`, no allocation: the escapers write into any [`fmt::Write`].
//!
//! * [`json_string`]: a JSON string literal (RFC 8259), safe inside a line of JSON lines and inside
//!   JavaScript source: `"` and `\`, every control character (C0, DEL and C1), and U+2028/U+2029.

use core::fmt;

/// Writes `s` as a JSON string literal, quotes included: `"` and `\` are escaped with a backslash;
/// `\n`, `\r`, `\t`, `\b` (U+0008) and `\f` (U+000C) take their short forms; every other control
/// character (U+0000–U+001F, U+007F–U+009F) and the line and paragraph separators U+2028 and U+2029
/// (which JavaScript treats as line ends) become `\uXXXX` with lowercase hex. Everything else is
/// written as it is, so the output is valid UTF-8 and one line.
///
/// ```
/// use nmilog::escape::json_string;
/// let mut out = String::new();
/// json_string(&mut out, "eth0: \"up\" \\ 1000Mb/s").unwrap();
/// assert_eq!(out, r#""eth0: \"up\" \\ 1000Mb/s""#);
///
/// let mut out = String::new();
/// json_string(&mut out, "a\tb\nc\u{8}\u{c}\r\u{1}\u{1b}[31m\u{7f}\u{85}").unwrap();
/// assert_eq!(out, r#""a\tb\nc\b\f\r\u0001\u001b[31m\u007f\u0085""#);
///
/// // Line and paragraph separators are escaped; other non-ASCII text is kept.
/// let mut out = String::new();
/// json_string(&mut out, "5 \u{b5}s \u{2192} ok\u{2028}\u{2029}").unwrap();
/// assert_eq!(out, "\"5 \u{b5}s \u{2192} ok\\u2028\\u2029\"");
/// ```
pub fn json_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    // Runs of characters that need no escape are written in one piece.
    let mut clean_from = 0;
    for (i, c) in s.char_indices() {
        let short = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => "",
            _ => continue,
        };
        out.write_str(&s[clean_from..i])?;
        if short.is_empty() {
            write!(out, "\\u{:04x}", c as u32)?;
        } else {
            out.write_str(short)?;
        }
        clean_from = i + c.len_utf8();
    }
    out.write_str(&s[clean_from..])?;
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::json_string;

    fn json(s: &str) -> String {
        let mut out = String::new();
        json_string(&mut out, s).unwrap();
        out
    }

    #[test]
    fn plain_text_is_quoted_as_it_is() {
        assert_eq!(json(""), "\"\"");
        assert_eq!(json("IPI complete"), "\"IPI complete\"");
        assert_eq!(json("\u{e9}\u{1f600}"), "\"\u{e9}\u{1f600}\"");
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let out = json(&c.to_string());
            assert!(out.starts_with("\"\\"), "{c:?} gave {out}");
            assert!(
                !out[1..out.len() - 1].chars().any(char::is_control),
                "{out}"
            );
        }
        assert_eq!(json("\u{0}"), "\"\\u0000\"");
        assert_eq!(json("\u{9f}"), "\"\\u009f\"");
        assert_eq!(json("x\u{2028}y"), "\"x\\u2028y\"");
    }

    #[test]
    fn a_writer_error_is_passed_on() {
        struct Full;
        impl core::fmt::Write for Full {
            fn write_str(&mut self, _: &str) -> core::fmt::Result {
                Err(core::fmt::Error)
            }
        }
        assert!(json_string(&mut Full, "x").is_err());
    }
}
