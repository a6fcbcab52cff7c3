//! `--scale`: the crash path's cost against the CPU count.
//!
//! Runs the simulation — this program again, one child process per run — at each CPU count (4, 16,
//! 64, 256 and 1024 by default), every run with the default scenario's frozen writer (CPU 2) and
//! RTAS-lock holder (CPU 3), and takes the median of `--repeat` runs of each figure the capture
//! stage reports in its summary's `cost` object: crash entry to switchover and its stages, the two
//! crash drains' steps, the handover image, the region and the log's memory. Prints a table and,
//! with `--plot FILE`, draws time against CPUs as an SVG (log-log, with a line of slope 1 through
//! the smallest count: growth at most linear stays on or under it).
//!
//! ```text
//! cargo run --release --example crash -- --scale --plot scale.svg
//! cargo run --release --example crash -- --scale --repeat 3 --counts 4,64,1024
//! ```

use std::fmt::Write as _;
use std::process::Command;

use super::config::{or_exit, EXIT_FAIL, EXIT_OK, MAX_CPUS};

/// The options of `--scale`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ScaleConfig {
    counts: Vec<usize>,
    repeat: usize,
    records: u64,
    plot: Option<String>,
}

const USAGE: &str =
    "usage: crash --scale [--counts N,N,..] [--repeat R] [--records-per-cpu K] [--plot FILE.svg]
  --counts           CPU counts, 2..=1024 each, at most 16 of them (default 4,16,64,256,1024)
  --repeat           runs per count; the table shows medians (1..=50, default 5)
  --records-per-cpu  task records each CPU logs before the crash (1..=10000, default 50)
  --plot             writes time against CPUs as an SVG";

fn parse(args: &[String]) -> Result<ScaleConfig, String> {
    let mut c = ScaleConfig {
        counts: vec![4, 16, 64, 256, 1024],
        repeat: 5,
        records: 50,
        plot: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a}: missing value"));
        let number = |v: &str, lo: u64, hi: u64| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{a}: expected {lo}..={hi}, got {v:?}"))
        };
        match a.as_str() {
            "--scale" => {}
            "--counts" => {
                let v = value()?;
                let counts = v
                    .split(',')
                    .map(|n| number(n, 2, MAX_CPUS as u64).map(|n| n as usize))
                    .collect::<Result<Vec<_>, _>>()?;
                if counts.is_empty() || counts.len() > 16 {
                    return Err(format!("{a}: 1 to 16 counts, got {}", counts.len()));
                }
                c.counts = counts;
            }
            "--repeat" => c.repeat = number(value()?, 1, 50)? as usize,
            "--records-per-cpu" => c.records = number(value()?, 1, 10_000)?,
            "--plot" => c.plot = Some(value()?.clone()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(c)
}

/// One run's figures (the `cost` object and the image size).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Cost {
    total_us: f64,
    check_in_us: f64,
    drain_image_us: f64,
    steps: [f64; 2],
    records: [f64; 2],
    image_bytes: f64,
    region_bytes: f64,
    arena_bytes: f64,
    log_bytes: f64,
}

/// The number after `"key":` in `s` (the first element of an array for `"key":[a,b]`, or the
/// `i`-th).
fn field(s: &str, key: &str, i: usize) -> Option<f64> {
    let at = s.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &s[at..];
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split(',').nth(i)?,
        None => rest,
    };
    let end = rest
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The figures of a `--json` run's summary line; `Err` if the run did not verify.
fn cost_of(summary: &str) -> Result<Cost, String> {
    if !summary.contains("\"verified\":true") {
        return Err("the capture stage's verification failed".into());
    }
    let f =
        |k: &str, i: usize| field(summary, k, i).ok_or_else(|| format!("no {k} in the summary"));
    Ok(Cost {
        total_us: f("crash_to_switch_us", 0)?,
        check_in_us: f("check_in_us", 0)?,
        drain_image_us: f("drain_image_us", 0)?,
        steps: [f("drain_steps", 0)?, f("drain_steps", 1)?],
        records: [f("drain_records", 0)?, f("drain_records", 1)?],
        image_bytes: f("image_bytes", 0)?,
        region_bytes: f("region_bytes", 0)?,
        arena_bytes: f("arena_bytes", 0)?,
        log_bytes: f("log_bytes", 0)?,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The median of each figure over `runs`.
fn medians(runs: &[Cost]) -> Cost {
    let m = |f: &dyn Fn(&Cost) -> f64| median(runs.iter().map(f).collect());
    Cost {
        total_us: m(&|c| c.total_us),
        check_in_us: m(&|c| c.check_in_us),
        drain_image_us: m(&|c| c.drain_image_us),
        steps: [m(&|c| c.steps[0]), m(&|c| c.steps[1])],
        records: [m(&|c| c.records[0]), m(&|c| c.records[1])],
        image_bytes: m(&|c| c.image_bytes),
        region_bytes: m(&|c| c.region_bytes),
        arena_bytes: m(&|c| c.arena_bytes),
        log_bytes: m(&|c| c.log_bytes),
    }
}

/// One simulation run at `cpus` CPUs.
fn run_once(cpus: usize, records: u64) -> Result<Cost, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args([
            "--cpus",
            &cpus.to_string(),
            "--records-per-cpu",
            &records.to_string(),
            "--ring-bytes",
            "4096",
            "--ack-timeout-ms",
            "20000",
            "--json",
        ])
        .output()
        .map_err(|e| format!("running the simulation: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"summary\""))
        .ok_or_else(|| format!("{cpus} CPUs: no summary (exit {})", out.status))?;
    cost_of(summary).map_err(|e| format!("{cpus} CPUs: {e}"))
}

/// The table: one row per CPU count.
fn table(rows: &[(usize, Cost)]) -> String {
    let mut t = String::from(
        "| CPUs | crash → switchover (ms) | check-in wait (ms) | drains + image (ms) | drain steps (1st / 2nd) | records drained (1st / 2nd) | steps per record (2nd) | image (KiB) | region (MiB) | log arena (MiB) | log struct (KiB) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (n, c) in rows {
        let _ = writeln!(
            t,
            "| {n} | {:.2} | {:.2} | {:.2} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} |",
            c.total_us / 1e3,
            c.check_in_us / 1e3,
            c.drain_image_us / 1e3,
            c.steps[0],
            c.steps[1],
            c.records[0],
            c.records[1],
            c.steps[1] / c.records[1].max(1.0),
            c.image_bytes / 1024.0,
            c.region_bytes / (1 << 20) as f64,
            c.arena_bytes / (1 << 20) as f64,
            c.log_bytes / 1024.0,
        );
    }
    t
}

/// A plotted line: its name, its colour and its figure in milliseconds.
type Series = (&'static str, &'static str, fn(&Cost) -> f64);

/// Time against CPUs as an SVG: log2 CPUs across, log10 milliseconds up; the three times and a line
/// of slope 1 through the first total (linear growth).
fn svg(rows: &[(usize, Cost)]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 190.0, 30.0, 50.0);
    let series: [Series; 3] = [
        ("crash → switchover", "#c0392b", |c| c.total_us / 1e3),
        ("drains + image", "#2471a3", |c| c.drain_image_us / 1e3),
        ("check-in wait", "#7d8c2a", |c| c.check_in_us / 1e3),
    ];
    let x_lo = rows.first().map_or(1.0, |r| (r.0 as f64).log2());
    let x_hi = rows
        .last()
        .map_or(2.0, |r| (r.0 as f64).log2())
        .max(x_lo + 1.0);
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|(_, c)| series.iter().map(move |s| (s.2)(c)))
        .filter(|v| *v > 0.0)
        .collect();
    let y_lo = all
        .iter()
        .copied()
        .fold(f64::MAX, f64::min)
        .max(1e-3)
        .log10()
        .floor();
    let y_hi = all
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(1e-3)
        .log10()
        .ceil()
        .max(y_lo + 1.0);
    let px = |n: f64| left + (n.log2() - x_lo) / (x_hi - x_lo) * (w - left - right);
    let py = |ms: f64| {
        let v = ms.max(10f64.powf(y_lo)).log10();
        h - bottom - (v - y_lo) / (y_hi - y_lo) * (h - top - bottom)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"18\" font-size=\"14\">nmilog crash path: time against CPUs (medians; log-log)</text>"
    );
    for (n, _) in rows {
        let x = px(*n as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>",
            h - bottom,
            h - bottom + 16.0
        );
    }
    let mut d = y_lo;
    while d <= y_hi {
        let y = py(10f64.powf(d));
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powf(d)
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">CPUs</text><text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">milliseconds</text>",
        (left + w - right) / 2.0,
        h - 8.0,
        h / 2.0,
        h / 2.0
    );
    let legend = |s: &mut String, i: usize, name: &str, color: &str, dash: &str| {
        let y = top + 20.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
            w - right + 10.0,
            w - right + 34.0,
            w - right + 40.0,
            y + 4.0
        );
    };
    for (i, (name, color, f)) in series.iter().enumerate() {
        let pts: Vec<String> = rows
            .iter()
            .map(|(n, c)| format!("{:.1},{:.1}", px(*n as f64), py(f(c))))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        legend(&mut s, i, name, color, "none");
    }
    if let (Some((n0, c0)), Some((n1, _))) = (rows.first(), rows.last()) {
        let t0 = c0.total_us / 1e3;
        let t1 = t0 * *n1 as f64 / *n0 as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
            px(*n0 as f64),
            py(t0),
            px(*n1 as f64),
            py(t1)
        );
        legend(&mut s, series.len(), "linear (slope 1)", "#888", "6 4");
    }
    s.push_str("</svg>\n");
    s
}

/// `--scale`: runs, prints the table, writes the plot. Returns the exit code.
pub(crate) fn run(args: &[String]) -> i32 {
    let c = match or_exit(parse(args), USAGE) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut rows = Vec::new();
    for &n in &c.counts {
        let mut runs = Vec::new();
        for _ in 0..c.repeat {
            match run_once(n, c.records) {
                Ok(cost) => runs.push(cost),
                Err(e) => {
                    eprintln!("scale: {e}");
                    return EXIT_FAIL;
                }
            }
        }
        let m = medians(&runs);
        eprintln!(
            "scale: {n} CPUs: crash to switchover {:.2} ms (median of {})",
            m.total_us / 1e3,
            c.repeat
        );
        rows.push((n, m));
    }
    println!(
        "crash path cost against CPUs (medians of {} runs each; {} task records per CPU, 4 KiB rings, CPU 2 frozen mid-write, CPU 3 holding the RTAS lock):\n",
        c.repeat, c.records
    );
    print!("{}", table(&rows));
    if let Some(path) = &c.plot {
        if let Err(e) = std::fs::write(path, svg(&rows)) {
            eprintln!("scale: writing {path}: {e}");
            return EXIT_FAIL;
        }
        println!("\nplot: {path}");
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "{\"summary\":{\"recovered\":5,\"image_bytes\":18608,\"verified\":true,\"cost\":{\"check_in_us\":60.2,\"mask_us\":1.1,\"drain_image_us\":1059.1,\"crash_to_switch_us\":1120.3,\"drain_steps\":[7863,5606],\"drain_bounds\":[1179850,1179850],\"drain_records\":[3578,3580],\"region_bytes\":34349872,\"log_bytes\":1148416,\"arena_bytes\":9438000},\"failures\":[]}}";

    #[test]
    fn reads_the_cost_object() {
        let c = cost_of(SUMMARY).unwrap();
        assert_eq!(
            (c.total_us, c.check_in_us, c.drain_image_us),
            (1120.3, 60.2, 1059.1)
        );
        assert_eq!(c.steps, [7863.0, 5606.0]);
        assert_eq!(c.records, [3578.0, 3580.0]);
        assert_eq!((c.image_bytes, c.region_bytes), (18608.0, 34349872.0));
        assert_eq!((c.arena_bytes, c.log_bytes), (9438000.0, 1148416.0));
        let failed = SUMMARY.replace("\"verified\":true", "\"verified\":false");
        assert!(cost_of(&failed).is_err());
        assert!(cost_of("{\"summary\":{\"verified\":true}}").is_err());
    }

    #[test]
    fn options_are_bounded() {
        let a = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let c = parse(&a("--scale --counts 4,1024 --repeat 3 --plot x.svg")).unwrap();
        assert_eq!(
            (c.counts, c.repeat, c.plot),
            (vec![4, 1024], 3, Some("x.svg".into()))
        );
        for bad in [
            "--counts 1",
            "--counts 1025",
            "--repeat 0",
            "--repeat 51",
            "--counts",
            "--x",
        ] {
            assert!(parse(&a(bad)).is_err(), "{bad}");
        }
        let many = vec!["4"; 17].join(",");
        assert!(parse(&a(&format!("--counts {many}"))).is_err());
    }

    #[test]
    fn medians_table_and_plot() {
        let c = |t: f64| Cost {
            total_us: t,
            check_in_us: t / 2.0,
            drain_image_us: t / 4.0,
            steps: [t, t],
            ..Cost::default()
        };
        let m = medians(&[c(3000.0), c(1000.0), c(2000.0)]);
        assert_eq!(m.total_us, 2000.0);
        let rows = [(4, c(1000.0)), (1024, c(100_000.0))];
        let t = table(&rows);
        assert!(t.contains("| 4 | 1.00 | 0.50 | 0.25 |"), "{t}");
        assert!(t.contains("| 1024 | 100.00 | 50.00 | 25.00 |"), "{t}");
        let p = svg(&rows);
        assert!(p.starts_with("<svg") && p.trim_end().ends_with("</svg>"));
        assert_eq!(p.matches("<polyline").count(), 3);
        assert!(p.contains("linear (slope 1)"));
    }
}
