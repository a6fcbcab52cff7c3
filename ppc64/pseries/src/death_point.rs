//! The death points of the `die-in-drain` scenario: where on its crash path the crashing CPU dies
//! (`-append "scenario=die-in-drain die=POINT"`). Shared by both binaries (`#[path]`): the kernel dies
//! there (`death`), the capture stage expects exactly what the crash path logged before it.
//!
//! | `die=`            | the crashing CPU dies in the hook ...                                      |
//! | ----------------- | -------------------------------------------------------------------------- |
//! | `entered`         | `stage(Entered)`: crash mode on, nothing logged, no NMI sent               |
//! | `ipi-sent`        | `stage(IpiSent)`: NMI IPI sent, the quiesce (check-in wait) not done       |
//! | `checkins-done`   | `stage(CheckInsDone)`: every CPU checked in, "IPI complete" not logged     |
//! | `masked`          | `stage(Masked)`: interrupts masked, nothing drained                        |
//! | `drain:N`         | `drain_step(Record(N))`: the first drain delivered its record N (from 0)   |
//! | `drain:last`      | ... its last record                                                        |
//! | `drained`         | `stage(Drained)`: the first drain returned, its report not logged          |
//! | `image-start`     | `stage(ImageStart)`: "kexec: Starting switchover sequence." logged         |
//! | `image-sized:N`   | `drain_step(Image(Sized(N)))`: the image writer's sizing pass, record N (or `last`) |
//! | `image-copy:N`    | `drain_step(Image(Copy(N)))`: its copying pass, about to write record N (or `last`) |
//! | `image-tables`    | `drain_step(Image(Tables))`: records written, tables not                   |
//! | `image-header`    | `drain_step(Image(Header))`: tables written, the core header (validity) not |
//! | `image-written`   | `stage(ImageWritten)`: a valid image is in the handover region, no switchover |

use nmilog::handover::ImageStep;
use nmilog_ppc64::{CrashStage, DrainStep};

/// A record index, or the last record of its pass (known only once the pass's records are counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nth {
    /// Record `n`, counted from 0.
    At(u64),
    /// The pass's last record.
    Last,
}

/// Where the crashing CPU dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathPoint {
    /// In `Machine::stage(stage)`.
    Stage(CrashStage),
    /// In `Machine::drain_step(Record(n))` (the first drain).
    Record(Nth),
    /// In `drain_step(Image(Sized(n)))`.
    Sized(Nth),
    /// In `drain_step(Image(Copy(n)))`.
    Copy(Nth),
    /// In `drain_step(Image(Tables))`.
    Tables,
    /// In `drain_step(Image(Header))`.
    Header,
}

/// Every stage and its name on the command line.
pub const STAGE_NAMES: [(CrashStage, &str); 7] = [
    (CrashStage::Entered, "entered"),
    (CrashStage::IpiSent, "ipi-sent"),
    (CrashStage::CheckInsDone, "checkins-done"),
    (CrashStage::Masked, "masked"),
    (CrashStage::Drained, "drained"),
    (CrashStage::ImageStart, "image-start"),
    (CrashStage::ImageWritten, "image-written"),
];

/// The name of `stage` on the command line.
pub fn stage_name(stage: CrashStage) -> &'static str {
    STAGE_NAMES
        .iter()
        .find(|(s, _)| *s == stage)
        .map_or("?", |(_, n)| n)
}

fn parse_nth(s: &[u8]) -> Option<Nth> {
    if s == b"last" {
        return Some(Nth::Last);
    }
    let s = core::str::from_utf8(s).ok()?;
    s.parse().ok().map(Nth::At)
}

impl DeathPoint {
    /// Parses a `die=` value (see the module docs).
    pub fn parse(s: &[u8]) -> Option<DeathPoint> {
        if let Some((stage, _)) = STAGE_NAMES.iter().find(|(_, n)| n.as_bytes() == s) {
            return Some(DeathPoint::Stage(*stage));
        }
        match s {
            b"image-tables" => return Some(DeathPoint::Tables),
            b"image-header" => return Some(DeathPoint::Header),
            _ => {}
        }
        if let Some(n) = s.strip_prefix(b"drain:") {
            return parse_nth(n).map(DeathPoint::Record);
        }
        if let Some(n) = s.strip_prefix(b"image-sized:") {
            return parse_nth(n).map(DeathPoint::Sized);
        }
        if let Some(n) = s.strip_prefix(b"image-copy:") {
            return parse_nth(n).map(DeathPoint::Copy);
        }
        None
    }

    /// The point's place in the crash sequence (hooks are called in this order).
    fn rank(self) -> usize {
        let stage = |s: CrashStage| match s {
            CrashStage::Entered => 0,
            CrashStage::IpiSent => 1,
            CrashStage::CheckInsDone => 2,
            CrashStage::Masked => 3,
            // The first drain's records: 4.
            CrashStage::Drained => 5,
            CrashStage::ImageStart => 6,
            // The image writer's steps: 7 to 10.
            CrashStage::ImageWritten => 11,
        };
        match self {
            DeathPoint::Stage(s) => stage(s),
            DeathPoint::Record(_) => 4,
            DeathPoint::Sized(_) => 7,
            DeathPoint::Copy(_) => 8,
            DeathPoint::Tables => 9,
            DeathPoint::Header => 10,
        }
    }

    /// Whether the crash sequence got past `stage` (its hook returned) before dying here: what it
    /// logs after that stage is in the log.
    pub fn passed(self, stage: CrashStage) -> bool {
        DeathPoint::Stage(stage).rank() < self.rank()
    }

    /// Whether the drain step `step` is this death point; `last` is the index a `Last` stands for
    /// (resolved when the pass's records were counted; `u64::MAX` if not yet).
    pub fn is_step(self, step: DrainStep, last: u64) -> bool {
        let nth = |want: Nth, n: u64| match want {
            Nth::At(i) => i == n,
            Nth::Last => last == n,
        };
        match (self, step) {
            (DeathPoint::Record(w), DrainStep::Record(n)) => nth(w, n),
            (DeathPoint::Sized(w), DrainStep::Image(ImageStep::Sized(n))) => nth(w, n),
            (DeathPoint::Copy(w), DrainStep::Image(ImageStep::Copy(n))) => nth(w, n),
            (DeathPoint::Tables, DrainStep::Image(ImageStep::Tables)) => true,
            (DeathPoint::Header, DrainStep::Image(ImageStep::Header)) => true,
            _ => false,
        }
    }
}
