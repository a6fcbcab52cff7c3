//! Keeps `src/PROTOCOL.md` (the barrier-pair table, rendered as `nmilog::protocol`) and the code's
//! `LMM(name:X)` labels in step. Fails when:
//!
//! 1. a label used in `src/` or `ppc64/src/` has no row in the table;
//! 2. a row's label appears nowhere in the code, or not in a file its "where" cell names (a named
//!    file must exist and define the named function);
//! 3. a label cited as a partner ("pairs with ... LMM(x:Y)" in the code, or the table's "pairs
//!    with" column) has no row of its own, i.e. is never defined;
//! 4. an `Acquire`/`Release`/`AcqRel`/`SeqCst` ordering or a fence in the code has neither a label
//!    nor an explicit "pairs with nothing" within the few lines above it (the house rule: every
//!    ordering that pairs with another names its partner).
//!
//! Labels are written `LMM(name:X)`, or `LMM(name:X/Y)` for two labels of one family. No
//! dependencies: plain text scanning.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// How many lines above an ordering (and the line itself) may carry its label.
const WINDOW: usize = 12;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted, as (path relative to the crate root, contents).
fn rust_files(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, fs::read_to_string(&p).unwrap()));
        }
    }
}

fn code() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("ppc64/src"), &mut files);
    assert!(
        files.len() > 20,
        "expected the crate's sources, found {}",
        files.len()
    );
    files
}

/// The labels in `text`: each `LMM(...)` expanded (`LMM(a:X/Y)` is `a:X` and `a:Y`). Malformed
/// ones (no family, no letter) are returned as `Err` with the raw text.
fn labels_in(text: &str) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("LMM(") {
        rest = &rest[i + 4..];
        let Some(end) = rest.find(')') else {
            out.push(Err(rest.chars().take(20).collect()));
            break;
        };
        let inner = &rest[..end];
        rest = &rest[end + 1..];
        let parsed = inner.split_once(':').and_then(|(fam, letters)| {
            let fam_ok = !fam.is_empty()
                && fam
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            let ls: Vec<&str> = letters.split('/').collect();
            let ls_ok = ls
                .iter()
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_uppercase()));
            (fam_ok && ls_ok).then(|| ls.iter().map(|l| format!("{fam}:{l}")).collect::<Vec<_>>())
        });
        match parsed {
            Some(v) => out.extend(v.into_iter().map(Ok)),
            None => out.push(Err(inner.to_string())),
        }
    }
    out
}

/// The labels cited as partners: on each line, every label after "pairs with" (any case).
fn partners_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        if let Some(i) = lower.find("pairs with") {
            out.extend(labels_in(&line[i..]).into_iter().flatten());
        }
    }
    out
}

struct Row {
    label: String,
    /// (file, function) pairs of the "where" cell.
    sites: Vec<(String, String)>,
    partners: BTreeSet<String>,
    line: usize,
}

/// The rows of every table in the document whose first cell is a label.
fn table_rows(doc: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (n, line) in doc.lines().enumerate() {
        let t = line.trim();
        if !t.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
        let labels: Vec<_> = labels_in(cells[0]).into_iter().collect();
        if labels.is_empty() {
            continue; // a header row, or a table that is not about labels
        }
        assert_eq!(
            cells.len(),
            5,
            "PROTOCOL.md:{}: a label row has 5 columns (label, where, ordering, pairs with, \
             guarantees): {t}",
            n + 1
        );
        assert!(
            labels.len() == 1 && labels[0].is_ok(),
            "PROTOCOL.md:{}: one well-formed label per row: {}",
            n + 1,
            cells[0]
        );
        let mut sites = Vec::new();
        for span in cells[1].split('`').skip(1).step_by(2) {
            if let Some(i) = span.find(".rs::") {
                let file = span[..i + 3].to_string();
                let func = span.rsplit("::").next().unwrap().to_string();
                sites.push((file, func));
            }
        }
        assert!(
            !sites.is_empty(),
            "PROTOCOL.md:{}: the \"where\" cell names no `file.rs::function`: {}",
            n + 1,
            cells[1]
        );
        rows.push(Row {
            label: labels[0].clone().unwrap(),
            sites,
            partners: labels_in(cells[3]).into_iter().flatten().collect(),
            line: n + 1,
        });
    }
    rows
}

fn doc() -> String {
    fs::read_to_string(root().join("src/PROTOCOL.md")).expect("src/PROTOCOL.md")
}

#[test]
fn every_label_is_well_formed() {
    let mut bad = Vec::new();
    for (path, text) in code() {
        for (n, line) in text.lines().enumerate() {
            for l in labels_in(line) {
                if let Err(raw) = l {
                    bad.push(format!("{path}:{}: LMM({raw})", n + 1));
                }
            }
        }
    }
    for l in labels_in(&doc()) {
        if let Err(raw) = l {
            bad.push(format!("src/PROTOCOL.md: LMM({raw})"));
        }
    }
    assert!(
        bad.is_empty(),
        "labels must read LMM(name:X) or LMM(name:X/Y):\n{}",
        bad.join("\n")
    );
}

#[test]
fn table_and_code_name_the_same_labels() {
    let files = code();
    let rows = table_rows(&doc());
    assert!(
        rows.len() > 40,
        "only {} label rows in PROTOCOL.md",
        rows.len()
    );

    let mut table: BTreeMap<&str, &Row> = BTreeMap::new();
    for r in &rows {
        if let Some(prev) = table.insert(&r.label, r) {
            panic!(
                "LMM({}) has two rows (PROTOCOL.md:{} and :{})",
                r.label, prev.line, r.line
            );
        }
    }
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (path, text) in &files {
        for l in labels_in(text).into_iter().flatten() {
            used.entry(l).or_default().insert(path);
        }
    }

    // 1. Used in the code, missing from the table.
    let missing: Vec<String> = used
        .iter()
        .filter(|(l, _)| !table.contains_key(l.as_str()))
        .map(|(l, at)| {
            format!(
                "LMM({l}) (in {})",
                at.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "labels used in the code but missing from src/PROTOCOL.md:\n{}",
        missing.join("\n")
    );

    // 2. In the table, nowhere in the code, or not where the row says.
    let mut wrong = Vec::new();
    for r in &rows {
        let Some(at) = used.get(&r.label) else {
            wrong.push(format!(
                "PROTOCOL.md:{}: LMM({}) appears nowhere in the code",
                r.line, r.label
            ));
            continue;
        };
        for (file, func) in &r.sites {
            let Some((_, text)) = files.iter().find(|(p, _)| p == file) else {
                wrong.push(format!("PROTOCOL.md:{}: no file {file}", r.line));
                continue;
            };
            if !text.contains(&format!("fn {func}(")) && !text.contains(&format!("fn {func}<")) {
                wrong.push(format!("PROTOCOL.md:{}: no `fn {func}` in {file}", r.line));
            }
            if !at.contains(file.as_str()) {
                wrong.push(format!(
                    "PROTOCOL.md:{}: LMM({}) is not in {file} (it is in {})",
                    r.line,
                    r.label,
                    at.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // 3. Cited as a partner, never defined.
    let mut undefined = Vec::new();
    for (path, text) in &files {
        for p in partners_in(text) {
            if !table.contains_key(p.as_str()) {
                undefined.push(format!("LMM({p}), cited in {path}"));
            }
        }
    }
    for r in &rows {
        for p in &r.partners {
            if !table.contains_key(p.as_str()) {
                undefined.push(format!("LMM({p}), cited at PROTOCOL.md:{}", r.line));
            }
        }
    }
    assert!(
        undefined.is_empty(),
        "partners that are never defined (no row of their own):\n{}",
        undefined.join("\n")
    );
}

#[test]
fn every_pairing_ordering_is_labelled() {
    const ORDERINGS: [&str; 5] = [
        "Ordering::Acquire",
        "Ordering::Release",
        "Ordering::AcqRel",
        "Ordering::SeqCst",
        "fence(",
    ];
    let mut bare = Vec::new();
    for (path, text) in code() {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if t.starts_with("//") || !ORDERINGS.iter().any(|o| t.contains(o)) {
                continue;
            }
            let named = lines[n.saturating_sub(WINDOW)..=n].iter().any(|l| {
                l.contains("LMM(") || l.to_ascii_lowercase().contains("pairs with nothing")
            });
            if !named {
                bare.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "orderings with no LMM(name:X) label (nor \"pairs with nothing\") in the {WINDOW} lines \
         above them:\n{}",
        bare.join("\n")
    );
}
