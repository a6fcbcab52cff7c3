//! Escaping record text for output. Record text is whatever the caller formatted — quotes,
//! backslashes, newlines, terminal control sequences — so a reader that prints it in a structured
//! format escapes it first. `no_std`, no allocation: the escapers write into any [`fmt::Write`].
//!
//! * [`json_string`]: a JSON string literal (RFC 8259), safe inside a line of JSON lines and inside
//!   JavaScript source: `"` and `\`, every control character (C0, DEL and C1), and U+2028/U+2029.
//! * [`text`]: one line of human-readable output (a terminal, a log file): every character that is
//!   not visible text — controls, bidirectional and other format characters, line and paragraph
//!   separators — becomes a visible escape, so a record can neither end its line, nor move the
//!   cursor, nor reorder or hide the text around it.

use core::cmp::Ordering;
use core::fmt;

/// The Unicode format characters (general category Cf), as inclusive ranges of code points, sorted.
/// This is the whole category in Unicode 16.0 (DerivedGeneralCategory.txt; unchanged since 15.0,
/// which added U+13439–U+1343F): soft hyphen, Arabic and Syriac number and abbreviation marks,
/// Mongolian vowel separator, zero-width space/joiners, the bidirectional marks, embeddings,
/// overrides and isolates, word joiner and invisible operators, the deprecated format characters,
/// the byte order mark, interlinear annotation, Kaithi and Egyptian hieroglyph format controls,
/// shorthand format controls, musical symbol beams and the tag characters.
const FORMAT: [(u32, u32); 21] = [
    (0x00ad, 0x00ad),
    (0x0600, 0x0605),
    (0x061c, 0x061c),
    (0x06dd, 0x06dd),
    (0x070f, 0x070f),
    (0x0890, 0x0891),
    (0x08e2, 0x08e2),
    (0x180e, 0x180e),
    (0x200b, 0x200f),
    (0x202a, 0x202e),
    (0x2060, 0x2064),
    (0x2066, 0x206f),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
];

/// Whether `c` is a format character (general category Cf).
fn is_format(c: char) -> bool {
    let c = c as u32;
    FORMAT
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                Ordering::Less
            } else if lo > c {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether [`text`] escapes `c`: a control character (general category Cc: U+0000–U+001F, DEL and
/// the C1 controls U+0080–U+009F), a format character (Cf: bidirectional marks and overrides,
/// zero-width characters, the byte order mark, tag characters…), or the line or paragraph separator
/// (Zl U+2028, Zp U+2029).
///
/// ```
/// use nmilog::escape::text_escapes;
/// assert!(text_escapes('\u{1b}') && text_escapes('\u{202e}') && text_escapes('\u{2028}'));
/// assert!(!text_escapes('a') && !text_escapes('\u{b5}') && !text_escapes(' '));
/// ```
pub fn text_escapes(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}' || is_format(c)
}

/// Writes `s` as one line of human-readable text: a control character (Cc) becomes `\xNN` (two
/// lowercase hex digits: `\x09` for a tab, `\x0a` for a newline, `\x1b` for ESC, `\x85` for NEL),
/// a format character (Cf) or a line or paragraph separator (Zl, Zp) becomes `\u{XXXX}` (the code
/// point in lowercase hex, as Rust writes it: `\u{202e}`, `\u{2028}`, `\u{e0041}`); see
/// [`text_escapes`]. Everything else — printable ASCII (the backslash included, as `dmesg` prints
/// it) and all other Unicode text — is written as it is.
///
/// ```
/// use nmilog::escape::text;
/// let mut out = String::new();
/// text(&mut out, "eth0: link \"up\" \\ 5 \u{b5}s \u{2192} ok").unwrap();
/// assert_eq!(out, "eth0: link \"up\" \\ 5 \u{b5}s \u{2192} ok");
///
/// // A hostile record cannot end its line, colour the terminal or reverse the text after it.
/// let mut out = String::new();
/// text(&mut out, "a\tb\nc\u{1b}[31m \u{202e}evil\u{2028}x").unwrap();
/// assert_eq!(out, r"a\x09b\x0ac\x1b[31m \u{202e}evil\u{2028}x");
/// ```
pub fn text(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    // Runs of characters that need no escape are written in one piece.
    let mut clean_from = 0;
    for (i, c) in s.char_indices() {
        if (' '..='~').contains(&c) || !text_escapes(c) {
            continue;
        }
        out.write_str(&s[clean_from..i])?;
        if c.is_control() {
            write!(out, "\\x{:02x}", c as u32)?;
        } else {
            write!(out, "\\u{{{:x}}}", c as u32)?;
        }
        clean_from = i + c.len_utf8();
    }
    out.write_str(&s[clean_from..])
}

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
    use std::vec::Vec;

    use super::{json_string, text, text_escapes, FORMAT};

    /// What `escape` writes for `s`.
    fn escaped(escape: fn(&mut String, &str) -> core::fmt::Result, s: &str) -> String {
        let mut out = String::new();
        escape(&mut out, s).unwrap();
        out
    }

    fn json(s: &str) -> String {
        escaped(json_string, s)
    }

    fn txt(s: &str) -> String {
        escaped(text, s)
    }

    /// A writer that fails every write.
    struct Full;

    impl core::fmt::Write for Full {
        fn write_str(&mut self, _: &str) -> core::fmt::Result {
            Err(core::fmt::Error)
        }
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
        assert!(json_string(&mut Full, "x").is_err());
    }

    #[test]
    fn ordinary_text_is_written_as_it_is() {
        for s in [
            "",
            "IPI complete",
            "eth0: link \"up\" \\ 1000Mb/s",
            "unicode: 5 \u{b5}s \u{2192} ok",
            "\u{e9}\u{1f600} \u{5d0}\u{5d1} \u{627}\u{644} \u{4e2d}\u{6587} \u{a0}nbsp",
            // Neighbours of the escaped ranges (U+2065 is unassigned, not a format character).
            "\u{ac}\u{ae}\u{5ff}\u{606}\u{200a}\u{2010}\u{2027}\u{2030}\u{2065}\u{fefe}",
        ] {
            assert_eq!(txt(s), s);
        }
    }

    #[test]
    fn controls_are_hex_escaped_as_before() {
        assert_eq!(
            txt("debug:\ttab and\nnewline"),
            r"debug:\x09tab and\x0anewline"
        );
        assert_eq!(
            txt("\r\u{0}\u{7f}\u{80}\u{85}\u{9f}"),
            r"\x0d\x00\x7f\x80\x85\x9f"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            assert_eq!(txt(&c.to_string()), std::format!("\\x{:02x}", c as u32));
        }
    }

    /// The Cf lines of Unicode 16.0's DerivedGeneralCategory.txt, as published (the ground truth for
    /// [`FORMAT`], kept in the file's own format so that it can be compared with the file).
    const PUBLISHED_CF: &str = "\
00AD          ; Cf #       SOFT HYPHEN
0600..0605    ; Cf #   [6] ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
061C          ; Cf #       ARABIC LETTER MARK
06DD          ; Cf #       ARABIC END OF AYAH
070F          ; Cf #       SYRIAC ABBREVIATION MARK
0890..0891    ; Cf #   [2] ARABIC POUND MARK ABOVE..ARABIC PIASTRE MARK ABOVE
08E2          ; Cf #       ARABIC DISPUTED END OF AYAH
180E          ; Cf #       MONGOLIAN VOWEL SEPARATOR
200B..200F    ; Cf #   [5] ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
202A..202E    ; Cf #   [5] LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
2060..2064    ; Cf #   [5] WORD JOINER..INVISIBLE PLUS
2066..206F    ; Cf #  [10] LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
FEFF          ; Cf #       ZERO WIDTH NO-BREAK SPACE
FFF9..FFFB    ; Cf #   [3] INTERLINEAR ANNOTATION ANCHOR..INTERLINEAR ANNOTATION TERMINATOR
110BD         ; Cf #       KAITHI NUMBER SIGN
110CD         ; Cf #       KAITHI NUMBER SIGN ABOVE
13430..1343F  ; Cf #  [16] EGYPTIAN HIEROGLYPH VERTICAL JOINER..EGYPTIAN HIEROGLYPH END WALLED ENCLOSURE
1BCA0..1BCA3  ; Cf #   [4] SHORTHAND FORMAT LETTER OVERLAP..SHORTHAND FORMAT UP STEP
1D173..1D17A  ; Cf #   [8] MUSICAL SYMBOL BEGIN BEAM..MUSICAL SYMBOL END PHRASE
E0001         ; Cf #       LANGUAGE TAG
E0020..E007F  ; Cf #  [96] TAG SPACE..CANCEL TAG

# Total code points: 170
";

    /// The ranges of [`PUBLISHED_CF`] (`first..last` or a single code point before the `;`), and
    /// its total.
    fn published_cf() -> (Vec<(u32, u32)>, u32) {
        let hex = |h: &str| u32::from_str_radix(h.trim(), 16).unwrap();
        let mut ranges = Vec::new();
        let mut total = None;
        for line in PUBLISHED_CF.lines() {
            if let Some(n) = line.strip_prefix("# Total code points: ") {
                total = Some(n.parse().unwrap());
            } else if let Some((points, comment)) = line.split_once(';') {
                let (lo, hi) = points.split_once("..").unwrap_or((points, points));
                let (lo, hi) = (hex(lo), hex(hi));
                // A range's comment counts its code points: `[16]`.
                if let Some((_, n)) = comment.split_once('[') {
                    assert_eq!(
                        n.split_once(']').unwrap().0.parse(),
                        Ok(hi - lo + 1),
                        "{line}"
                    );
                }
                ranges.push((lo, hi));
            }
        }
        (ranges, total.unwrap())
    }

    /// The Cf table as published ([`PUBLISHED_CF`]), checked against the sorted, disjoint ranges
    /// [`FORMAT`] and, code point by code point, against [`text`].
    #[test]
    #[cfg_attr(miri, ignore = "walks every code point: too slow under Miri")]
    fn every_format_character_and_separator_is_escaped() {
        let (cf, total) = published_cf();
        assert_eq!(cf.len(), 21);
        assert_eq!(&FORMAT[..], cf);
        assert_eq!(cf.iter().map(|&(lo, hi)| hi - lo + 1).sum::<u32>(), total);
        assert_eq!(total, 170);
        assert!(FORMAT.windows(2).all(|w| w[0].1 < w[1].0));
        let escaped_as_u = |c: char| txt(&c.to_string()) == std::format!("\\u{{{:x}}}", c as u32);
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let cc = c.is_control();
            let cf = cf.iter().any(|&(lo, hi)| (lo..=hi).contains(&(c as u32)));
            let sep = c == '\u{2028}' || c == '\u{2029}';
            assert_eq!(text_escapes(c), cc || cf || sep, "{:x}", c as u32);
            if cf || sep {
                assert!(escaped_as_u(c), "{:x}", c as u32);
            } else if !cc {
                assert_eq!(txt(&c.to_string()), c.to_string(), "{:x}", c as u32);
            }
        }
        assert_eq!(
            txt("a\u{202e}b\u{2066}c\u{2069}"),
            r"a\u{202e}b\u{2066}c\u{2069}"
        );
        assert_eq!(txt("\u{feff}\u{200b}\u{ad}"), r"\u{feff}\u{200b}\u{ad}");
        assert_eq!(txt("x\u{2028}y\u{2029}z"), r"x\u{2028}y\u{2029}z");
        assert_eq!(txt("\u{e0001}\u{e0041}"), r"\u{e0001}\u{e0041}");
    }

    #[test]
    fn escaped_output_has_nothing_left_to_escape() {
        let hostile = "\u{1b}]0;title\u{7}\u{202e}txt.exe\u{2029}\r\n\u{85}\u{feff}ok";
        let out = txt(hostile);
        assert!(!out.chars().any(text_escapes), "{out}");
        assert_eq!(txt(&out), out);
    }

    #[test]
    fn a_writer_error_is_passed_on_by_text() {
        assert!(text(&mut Full, "x").is_err());
        assert!(text(&mut Full, "\u{202e}").is_err());
    }
}
