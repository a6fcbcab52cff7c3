//! `--die-in-drain STEP`: the point of the crash path at which the crashing CPU dies (a second fault,
//! a machine check, a watchdog reset it never returns from). Each point is one call of the
//! [`Machine`](crate::Machine) hooks the crash sequence makes: a [`CrashStage`] or a [`DrainStep`].
//! The simulation's machine stops the crashing CPU there for good and tells the watchdog, which
//! starts the capture stage with nothing but the memory (see [`super::memory`]).

use nmilog::handover::ImageStep;

use crate::machine::{CrashStage, DrainStep};

/// Where the crashing CPU dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathPoint {
    /// At this stage of the sequence (`Machine::stage`).
    Stage(CrashStage),
    /// At this step of the drains (`Machine::drain_step`).
    Drain(DrainStep),
}

/// The stages, by name, in order.
const STAGES: [(&str, CrashStage); 7] = [
    ("entered", CrashStage::Entered),
    ("ipi-sent", CrashStage::IpiSent),
    ("check-ins-done", CrashStage::CheckInsDone),
    ("masked", CrashStage::Masked),
    ("drained", CrashStage::Drained),
    ("image-start", CrashStage::ImageStart),
    ("image-written", CrashStage::ImageWritten),
];

/// What `--die-in-drain list` prints: every STEP, in the order the crash path reaches them.
pub const LIST: &str = "\
--die-in-drain STEP: where the crashing CPU dies, in the order the crash path reaches them
  entered          crash entry won; the NMI IPI not sent yet (no CPU stopped)
  ipi-sent         the NMI IPI sent; the check-in wait not done (the quiesce incomplete)
  check-ins-done   the check-in wait over; \"IPI complete\" not logged yet
  masked           interrupts masked; the first drain not started
  record:N         the first crash drain delivered its record N (from 0)
  drained          the first drain done; \"kexec: Starting switchover sequence.\" not logged yet
  image-start      the image writer about to start
  image-sized:N    the image writer's sizing pass at record N (from 0)
  image-copy:N     the image writer's copy pass about to write record N (from 0)
  image-tables     the records written; the tables not
  image-header     the tables written; the core header (which makes the image valid) not
  image-written    the image complete; the switchover (exec) not done
A point the run does not reach (a record number past the drain's end) leaves the crash path whole.";

impl DeathPoint {
    /// Parses a STEP as [`LIST`] names them.
    pub fn parse(s: &str) -> Result<DeathPoint, String> {
        if let Some(&(_, st)) = STAGES.iter().find(|(n, _)| *n == s) {
            return Ok(DeathPoint::Stage(st));
        }
        let step = match s {
            "image-tables" => ImageStep::Tables,
            "image-header" => ImageStep::Header,
            _ => {
                let (kind, n) = s.split_once(':').ok_or_else(|| bad(s))?;
                let n: u64 = n.parse().map_err(|_| bad(s))?;
                match kind {
                    "record" => return Ok(DeathPoint::Drain(DrainStep::Record(n))),
                    "image-sized" => ImageStep::Sized(n),
                    "image-copy" => ImageStep::Copy(n),
                    _ => return Err(bad(s)),
                }
            }
        };
        Ok(DeathPoint::Drain(DrainStep::Image(step)))
    }

    /// The STEP that [`parse`](Self::parse)s to this point.
    pub fn name(&self) -> String {
        match *self {
            DeathPoint::Stage(st) => STAGES
                .iter()
                .find(|(_, x)| *x == st)
                .map_or("?", |(n, _)| n)
                .to_string(),
            DeathPoint::Drain(DrainStep::Record(n)) => format!("record:{n}"),
            DeathPoint::Drain(DrainStep::Image(ImageStep::Sized(n))) => format!("image-sized:{n}"),
            DeathPoint::Drain(DrainStep::Image(ImageStep::Copy(n))) => format!("image-copy:{n}"),
            DeathPoint::Drain(DrainStep::Image(ImageStep::Tables)) => "image-tables".to_string(),
            DeathPoint::Drain(DrainStep::Image(ImageStep::Header)) => "image-header".to_string(),
        }
    }

    /// Whether the crashing CPU had logged "IPI complete" (after the check-in wait) when it died
    /// here.
    pub fn after_ipi_complete(&self) -> bool {
        match *self {
            DeathPoint::Stage(st) => !matches!(
                st,
                CrashStage::Entered | CrashStage::IpiSent | CrashStage::CheckInsDone
            ),
            DeathPoint::Drain(_) => true,
        }
    }

    /// Whether the crashing CPU had logged "kexec: Starting switchover sequence." (after the first
    /// drain) when it died here.
    pub fn after_switchover_message(&self) -> bool {
        matches!(
            *self,
            DeathPoint::Stage(CrashStage::ImageStart | CrashStage::ImageWritten)
                | DeathPoint::Drain(DrainStep::Image(_))
        )
    }
}

fn bad(s: &str) -> String {
    format!("--die-in-drain: unknown step {s:?} (--die-in-drain list shows them)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_step_parses_and_names_itself() {
        let steps: Vec<&str> = LIST
            .lines()
            .skip(1)
            .filter_map(|l| l.strip_prefix("  "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(steps.len(), 12);
        for s in steps {
            let s = s.replace(":N", ":7");
            let p = DeathPoint::parse(&s).unwrap();
            assert_eq!(p.name(), s);
        }
        for bad in [
            "",
            "record",
            "record:x",
            "image-copy:-1",
            "nope",
            "image-sized:",
        ] {
            assert!(DeathPoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_messages_before_each_point() {
        let p = |s| DeathPoint::parse(s).unwrap();
        assert!(!p("check-ins-done").after_ipi_complete());
        assert!(p("masked").after_ipi_complete());
        assert!(!p("drained").after_switchover_message());
        assert!(p("image-start").after_switchover_message());
        assert!(p("record:0").after_ipi_complete() && !p("record:0").after_switchover_message());
        assert!(p("image-header").after_switchover_message());
    }
}
