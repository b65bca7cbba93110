//! Turns the measurements into the report's rows, with the targets.

use crate::aria::AriaSample;
use crate::human;
use crate::report::{median, Report, Row, Target, Unit};
use crate::shoal::{Download, LoadRun};

/// A case that did not run says why (skipped, failed) instead.
pub type Outcome<T> = Result<T, String>;

/// Everything measured, filled in case by case.
pub struct Results {
    pub size: u64,
    pub seeders: usize,
    pub sha_1: Vec<f64>,
    pub sha_2: Vec<f64>,
    pub sha_pair: Vec<f64>,
    /// Seeder start-up times held to one core, and with every core.
    pub startup_1: Vec<f64>,
    pub startup_all: Vec<f64>,
    pub shoal: Vec<Download>,
    pub seeder_rss: Vec<f64>,
    pub aria: Outcome<Vec<AriaSample>>,
    pub aria_seeder_rss: Vec<f64>,
    pub dd: Vec<f64>,
    pub load: Outcome<Vec<LoadRun>>,
    pub big: Outcome<Big>,
}

/// The big-file case: one download, for peak RSS.
pub struct Big {
    pub size: u64,
    pub wall: f64,
    pub leecher_rss_kib: f64,
    pub seeder_rss_kib: Vec<f64>,
}

const MIB64: f64 = 64.0 * 1024.0;

pub fn tabulate(x: &Results) -> Report {
    let mut r = Report::default();
    let label = human(x.size);
    let col = |f: fn(&Download) -> f64| x.shoal.iter().map(f).collect::<Vec<f64>>();
    let shoal_wall = col(|d| d.wall);
    let shoal_med = median(&shoal_wall);
    let dd_med = median(&x.dd);
    let aria = x.aria.as_ref().ok().filter(|a| !a.is_empty());
    let aria_wall: Vec<f64> = aria.map_or(Vec::new(), |a| {
        a.iter().map(|s| s.run.wall.as_secs_f64()).collect()
    });
    let aria_med = median(&aria_wall);

    r.section(&format!(
        "1. {label} from {} seeders to 1 leecher (shoal)",
        x.seeders
    ));
    // Both targets on one row: at least 2x faster than aria2, within 1.25x of dd.
    let mut limits = Vec::new();
    if let Some(a) = aria_med {
        limits.push((a / 2.0, format!("<= aria2/2 = {:.2} s", a / 2.0)));
    }
    if let Some(d) = dd_med {
        limits.push((1.25 * d, format!("<= 1.25 x dd = {:.2} s", 1.25 * d)));
    }
    let wall_target = (!limits.is_empty()).then(|| {
        let limit = limits.iter().map(|l| l.0).fold(f64::INFINITY, f64::min);
        let text: Vec<String> = limits.into_iter().map(|l| l.1).collect();
        Target::at_most(limit, text.join(", "))
    });
    r.row(
        "wall time, start to fsynced file",
        Unit::Secs,
        shoal_wall,
        wall_target,
    );
    r.row(
        "data phase (leecher's summary)",
        Unit::Rate,
        x.shoal.iter().filter_map(|d| d.rate).collect(),
        Some(Target::at_least(1e9, ">= 1 GB/s")),
    );
    r.row("CPU, leecher", Unit::Secs, col(|d| d.cpu_leecher), None);
    r.row(
        &format!("CPU, {} seeders together", x.seeders),
        Unit::Secs,
        col(|d| d.cpu_seeders.iter().sum()),
        None,
    );
    r.row(
        "CPU, busiest seeder",
        Unit::Secs,
        col(|d| d.cpu_seeders.iter().copied().fold(0.0, f64::max)),
        None,
    );
    r.row("CPU, tracker", Unit::Secs, col(|d| d.cpu_tracker), None);

    r.section(&format!(
        "2. the same with aria2c ({} seeders, 1 leecher) + opentracker, 512 KiB pieces",
        x.seeders
    ));
    match (&x.aria, aria) {
        (Err(why), _) => r.note("aria2", why.clone()),
        (Ok(_), None) => r.note("aria2", "no successful run"),
        (Ok(_), Some(a)) => {
            r.row(
                "aria2 wall time, start to fsynced file",
                Unit::Secs,
                aria_wall,
                None,
            );
            r.row(
                "aria2's own avg speed (incl. its start-up)",
                Unit::Rate,
                a.iter().filter_map(|s| s.run.avg_speed).collect(),
                None,
            );
            r.row(
                "aria2 CPU, leecher",
                Unit::Secs,
                a.iter().map(|s| s.run.exit.cpu_secs).collect(),
                None,
            );
            r.row(
                &format!("aria2 CPU, {} seeders together", x.seeders),
                Unit::Secs,
                a.iter().map(|s| s.cpu_seeders.iter().sum()).collect(),
                None,
            );
            r.row(
                "opentracker CPU",
                Unit::Secs,
                a.iter().map(|s| s.cpu_tracker).collect(),
                None,
            );
            if let (Some(a), Some(s)) = (aria_med, shoal_med) {
                r.row(
                    "aria2 / shoal wall time (medians)",
                    Unit::Ratio,
                    vec![a / s],
                    Some(Target::at_least(2.0, ">= 2x")),
                );
            }
        }
    }

    r.section("3. the machine's limits");
    r.row(
        &format!("dd conv=fdatasync, {label}, leecher's folder"),
        Unit::Secs,
        x.dd.clone(),
        None,
    );
    if let (Some(s), Some(d)) = (shoal_med, dd_med) {
        r.row(
            "shoal / dd time (medians)",
            Unit::Ratio,
            vec![s / d],
            Some(Target::at_most(1.25, "<= 1.25x")),
        );
    }
    r.push(Row {
        name: "SHA-256 (sha2 crate), 1 thread".into(),
        unit: Unit::Rate,
        samples: x.sha_1.clone(),
        target: None,
        note: Some("the issue measured 2.07 GB/s here".into()),
    });
    r.row(
        "SHA-256 (sha2 crate), 2 threads",
        Unit::Rate,
        x.sha_2.clone(),
        None,
    );
    r.push(Row {
        name: "SHA-256, shoal's 2 chunks at a time, 1 thread".into(),
        unit: Unit::Rate,
        samples: x.sha_pair.clone(),
        target: None,
        note: (!shoal_proto::sha256::accelerated())
            .then(|| "no SHA-NI here: one chunk after the other".into()),
    });

    r.section("4. peak RSS");
    let rss = col(|d| d.rss_kib);
    let rss_max = rss.iter().copied().reduce(f64::max);
    r.row(
        &format!("leecher, {label}"),
        Unit::Kib,
        rss,
        Some(Target::at_most(MIB64, "< 64 MiB")),
    );
    r.row(
        &format!("seeder, {label} (each of {})", x.seeders),
        Unit::Kib,
        x.seeder_rss.clone(),
        None,
    );
    match &x.big {
        Ok(b) => {
            // "No larger": allow the noise of a few pages of allocator slack.
            let limit = rss_max.map_or(MIB64, |m| (m * 1.05 + 1024.0).min(MIB64));
            r.row(
                &format!("leecher, {}", human(b.size)),
                Unit::Kib,
                vec![b.leecher_rss_kib],
                Some(Target::at_most(
                    limit,
                    format!("< 64 MiB and <= the {label} figure (+5% +1 MiB)"),
                )),
            );
            r.row(
                &format!("seeder, {} (each of {})", human(b.size), x.seeders),
                Unit::Kib,
                b.seeder_rss_kib.clone(),
                None,
            );
            r.row(
                &format!("wall time, {} (one run)", human(b.size)),
                Unit::Secs,
                vec![b.wall],
                None,
            );
        }
        Err(why) => r.note("big file", why.clone()),
    }
    if let Some(a) = aria {
        r.row(
            &format!("aria2 leecher, {label}"),
            Unit::Kib,
            a.iter().map(|s| s.run.exit.max_rss_kib as f64).collect(),
            None,
        );
        r.row(
            &format!("aria2 seeder, {label} (each of {})", x.seeders),
            Unit::Kib,
            x.aria_seeder_rss.clone(),
            None,
        );
    }

    r.section("5. seeder start-up (start to id line: hashing the file)");
    let rate = |t: &[f64]| t.iter().map(|t| x.size as f64 / t).collect::<Vec<f64>>();
    let (rate_1, rate_all) = (rate(&x.startup_1), rate(&x.startup_all));
    r.row(
        &format!("{label}, held to one core"),
        Unit::Secs,
        x.startup_1.clone(),
        None,
    );
    r.row(
        &format!("{label}, all cores"),
        Unit::Secs,
        x.startup_all.clone(),
        None,
    );
    let rate_1_med = median(&rate_1);
    r.row(
        "hashing rate, one core",
        Unit::Rate,
        rate_1,
        Some(Target::at_least(1.7e9, ">= 1.7 GB/s")),
    );
    r.row(
        "hashing rate, all cores",
        Unit::Rate,
        rate_all,
        rate_1_med.map(|m| Target::at_least(m * 1.05, "> one core (+5%)")),
    );

    r.section("6. tracker, one core");
    match &x.load {
        Err(why) => r.note("tracker", why.clone()),
        Ok(runs) => {
            let idle: Vec<f64> = runs.iter().map(|l| l.generator_idle).collect();
            let mut replies = Row {
                name: "peer-list replies (50 peers each)".into(),
                unit: Unit::PerSec,
                samples: runs.iter().map(|l| l.per_sec).collect(),
                target: Some(Target::at_least(150_000.0, ">= 150,000/s")),
                note: None,
            };
            if median(&idle).is_some_and(|i| i < 0.05) {
                replies.note =
                    Some("the load generator had no time to spare: a lower bound".into());
            }
            r.push(replies);
            r.row(
                "tracker CPU use (1.00x = one core)",
                Unit::Ratio,
                runs.iter().map(|l| l.busy).collect(),
                None,
            );
            r.row(
                "tracker waiting for its core (machine busy)",
                Unit::Percent,
                runs.iter().map(|l| l.starved).collect(),
                None,
            );
            r.row(
                "polls where the generator found nothing",
                Unit::Percent,
                idle,
                None,
            );
            r.row(
                "replies per tracker CPU-second",
                Unit::PerSec,
                runs.iter().map(|l| l.per_cpu_sec).collect(),
                None,
            );
        }
    }
    r
}
