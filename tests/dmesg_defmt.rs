//! `examples/dmesg --elf`: the defmt frames of an image decoded with the firmware's `.defmt` table,
//! end to end on the host. The test builds `examples/defmt_logger` (feature `defmt`) linked as a
//! defmt firmware is — defmt's `.defmt` section at address 1 (`tests/data/defmt-host.x`, defmt's
//! own script as an `INSERT` script) and no position-independent code, so the index in each frame
//! is the address defmt-decoder reads from the ELF — runs it so that it writes a handover image,
//! and prints that image with `dmesg --elf <the example's binary>`.

#![cfg(target_os = "linux")] // the INSERT linker script: GNU ld or lld on an ELF target

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::examples::{dmesg_binary, messages, text};
use common::files::data;

/// `examples/defmt_logger`, linked as a defmt firmware, copied out of the target directory (so a
/// later ordinary build of the example cannot replace it under the test).
fn defmt_firmware() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let script = Path::new(root).join("tests/data/defmt-host.x");
        let out = Command::new(env!("CARGO"))
            .args([
                "rustc",
                "--quiet",
                "--manifest-path",
                &format!("{root}/Cargo.toml"),
                "--example",
                "defmt_logger",
                "--features",
                "defmt",
                "--message-format=json",
                "--",
                "-C",
                "relocation-model=static",
                "-C",
            ])
            .arg(format!("link-arg=-Wl,-T,{}", script.display()))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo rustc --example defmt_logger");
        assert!(
            out.status.success(),
            "building examples/defmt_logger failed"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let key = "\"executable\":\"";
        let built = stdout
            .lines()
            .filter(|l| l.contains("\"name\":\"defmt_logger\""))
            .find_map(|l| {
                let at = l.find(key)? + key.len();
                let end = l[at..].find('"')?;
                Some(PathBuf::from(&l[at..at + end]))
            })
            .expect("the defmt_logger executable in cargo's messages");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dmesg_defmt");
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("defmt_logger");
        std::fs::copy(&built, &copy).unwrap();
        copy
    })
}

fn dmesg(args: &[&Path]) -> Output {
    Command::new(dmesg_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run examples/dmesg")
}

/// The image `examples/defmt_logger` writes.
fn defmt_image() -> &'static PathBuf {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let image = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dmesg_defmt/image.bin");
        let out = Command::new(defmt_firmware())
            .arg(&image)
            .env_remove("DEFMT_LOG")
            .output()
            .expect("run examples/defmt_logger");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).matches("defmt frame:").count(), 3);
        image
    })
}

#[test]
fn elf_decodes_the_defmt_frames() {
    let (elf, image) = (defmt_firmware(), defmt_image());
    let out = dmesg(&[Path::new("--elf"), elf, image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = messages(&out.stdout);
    assert_eq!(
        lines,
        [
            "C0 booting, 2 cpus",
            "C0/nmi ERROR CPU 0 stopped",
            "C0 back in task context",
        ],
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stderr).contains("could not be decoded"));

    let out = dmesg(&[Path::new("--kmsg"), Path::new("--elf"), elf, image]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(",-,caller=C0;ERROR CPU 0 stopped\n"),
        "{}",
        text(&out.stdout)
    );
    let out = dmesg(&[Path::new("--json"), Path::new("--elf"), elf, image]);
    assert!(
        text(&out.stdout).contains("\"text\":\"booting, 2 cpus\",\"defmt\":true}"),
        "{}",
        text(&out.stdout)
    );

    // Without --elf the frames stay hex, as before.
    let out = dmesg(&[image]);
    assert!(out.status.success());
    let hex: Vec<&str> = text(&out.stdout).lines().collect();
    assert_eq!(hex.len(), 3);
    assert!(hex.iter().all(|l| l.contains(" raw[")), "{hex:?}");
}

/// An ELF that is not a defmt firmware, or no ELF at all: one error line, exit code 2, nothing on
/// stdout.
#[test]
fn a_bad_elf_is_one_error_line() {
    let image = defmt_image();
    let not_elf = data("small.dmesg");
    for (elf, says) in [
        (not_elf.as_path(), "not a defmt firmware ELF"),
        (dmesg_binary().as_path(), "no defmt data"),
        (Path::new("/nonexistent/firmware.elf"), "cannot read"),
    ] {
        let out = dmesg(&[Path::new("--elf"), elf, image]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty());
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("dmesg: --elf ") && err.contains(says),
            "{err}"
        );
    }
}

/// Frames the table cannot decode — here the defmt table of another build, whose indices name
/// other strings or none — print as hex and are counted on stderr; a damaged frame too.
#[test]
fn undecodable_frames_print_as_hex_and_are_counted() {
    let image = std::fs::read(defmt_image()).unwrap();
    // Damage the first frame's index bytes (after its leading 0x00 separator), then fix up the
    // record's checksum so that the image stays valid and only the frame is wrong.
    let parsed = nmilog::handover::parse(&image).unwrap();
    let first = parsed.records().next().unwrap();
    let at = first.payload.as_ptr() as usize - image.as_ptr() as usize;
    let len = first.payload.len();
    let mut bad = image.clone();
    for b in &mut bad[at + 1..at + len - 1] {
        *b = 0xff;
    }
    let entry = at - 8 - nmilog::HEADER_BYTES;
    let size = nmilog::handover::record_size(len);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&bad[entry..entry + size - 4]);
    bad[entry + size - 4..entry + size].copy_from_slice(&crc.to_le_bytes());
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dmesg_defmt/damaged.bin");
    std::fs::write(&path, &bad).unwrap();
    assert_eq!(nmilog::handover::parse(&bad).unwrap().corruption(), None);

    let out = dmesg(&[Path::new("--elf"), defmt_firmware(), &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains(" raw["), "{stdout}");
    assert!(lines[1].ends_with("ERROR CPU 0 stopped"), "{stdout}");
    assert!(
        text(&out.stderr).contains("dmesg: 1 defmt frame(s) could not be decoded"),
        "{}",
        text(&out.stderr)
    );
}
