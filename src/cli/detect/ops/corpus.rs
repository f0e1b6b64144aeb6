//! The estate's history written out: as OpenMetrics text for promtool to
//! backfill Prometheus with, and, for `--write-corpus`, the signals as the
//! model specs read them back, in NAB's layout.
//!
//! Must not judge or print the report (that is `report`), nor play the
//! estate (that is `ops`).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Context;

use super::{Samples, Scheduled};
use crate::{detect::spec::ValidatedSpec, observe::Prometheus, testenv::sim::Fault};

/// The samples as OpenMetrics text for promtool: each series' samples
/// together (a family's samples must be contiguous), untyped.
pub(super) fn openmetrics(samples: &Samples) -> String {
    let mut out = String::new();
    let mut family = "";
    for (series, points) in samples {
        let name = series.split('{').next().unwrap_or(series);
        if name != family {
            let _ = writeln!(out, "# TYPE {name} unknown");
            family = name;
        }
        for (t, v) in points {
            let _ = writeln!(out, "{series} {v} {t}");
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The signals as the specs read them, in NAB's layout, with each fault's
/// window on its signal of its target.
pub(super) async fn write_corpus(
    dir: &Path,
    prom: &Prometheus,
    specs: &[ValidatedSpec],
    schedule: &[(Fault, Scheduled)],
    from: i64,
    to: i64,
    step: i64,
) -> anyhow::Result<()> {
    let data = dir.join("data/operational");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    std::fs::create_dir_all(dir.join("labels"))
        .with_context(|| format!("creating {}/labels", dir.display()))?;
    let fmt = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let mut windows: BTreeMap<String, Vec<[String; 2]>> = BTreeMap::new();
    for spec in specs {
        let read = prom
            .query_history(spec, from, to, step as f64)
            .await
            .with_context(|| format!("reading {} from Prometheus", spec.kind))?;
        for s in read {
            let rows: Vec<&(i64, f64)> = s.samples.iter().filter(|(_, v)| v.is_finite()).collect();
            if rows.is_empty() {
                continue;
            }
            let target = s.component.to_string();
            let file = format!(
                "{}_{}.csv",
                target.replace('/', "_"),
                s.signal.replace('+', "_")
            );
            let mut text = String::from("timestamp,value\n");
            for (t, v) in rows {
                let _ = writeln!(text, "{},{v}", fmt(*t));
            }
            std::fs::write(data.join(&file), text).with_context(|| format!("writing {file}"))?;
            let labelled = schedule
                .iter()
                .filter(|(_, f)| f.target == target && f.signal == s.signal)
                .map(|(_, f)| [fmt(f.start), fmt(f.end)])
                .collect();
            windows.insert(format!("operational/{file}"), labelled);
        }
    }
    std::fs::write(
        dir.join("labels/combined_windows.json"),
        serde_json::to_string_pretty(&windows)?,
    )
    .context("writing the labels")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_keeps_each_family_together_and_ends_with_eof() {
        let mut s = Samples::new();
        s.insert("a{x=\"1\"}".into(), vec![(10, 1.0), (20, 2.0)]);
        s.insert("a{x=\"2\"}".into(), vec![(10, 3.0)]);
        s.insert("a_total{x=\"1\"}".into(), vec![(10, 4.0)]);
        let text = openmetrics(&s);
        assert_eq!(
            text,
            "# TYPE a_total unknown\na_total{x=\"1\"} 4 10\n\
             # TYPE a unknown\na{x=\"1\"} 1 10\na{x=\"1\"} 2 20\na{x=\"2\"} 3 10\n# EOF\n"
        );
    }
}
