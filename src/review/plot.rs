//! Signal plots as SVG, drawn on the server with `plotters` (pure: values
//! in, markup out). Each plot shows one signal of one component from before
//! the finding to after the verification, with the detector's baseline, the
//! verification's threshold, and vertical marks at the finding, the action
//! and the verification deadline.

use plotters::prelude::*;

/// Where a plot's points came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A range query of the signal's model spec query.
    Prometheus,
    /// Only the values journaled with the finding: Prometheus was not given
    /// or could not be read (the reason), so the plot is a few points.
    Journal { why: String },
}

/// A moment marked on a plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub at: i64,
    pub label: &'static str,
}

/// One signal of one component around an action.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    pub signal: String,
    /// `Kind/namespace/name`.
    pub component: String,
    /// `(unix seconds, value)`, in time order.
    pub points: Vec<(i64, f64)>,
    /// What the detector compared against.
    pub baseline: Option<f64>,
    /// The verification's threshold, if the action verifies this signal.
    pub threshold: Option<f64>,
    pub marks: Vec<Mark>,
    /// The time span drawn, `(start, end)`.
    pub window: (i64, i64),
    pub source: Source,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 260;
// Colours with at least 4.5:1 contrast on white (WCAG AA), told apart by
// the legend as well as by colour.
const VALUE: RGBColor = RGBColor(0x1a, 0x4f, 0x9c);
const BASELINE: RGBColor = RGBColor(0x1b, 0x6e, 0x20);
const THRESHOLD: RGBColor = RGBColor(0xb0, 0x1c, 0x1c);
const MARK: RGBColor = RGBColor(0x55, 0x55, 0x55);

fn clock(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The value range to draw: every point, the baseline and the threshold,
/// with a margin; never empty.
fn y_range(plot: &Plot) -> (f64, f64) {
    let values = plot
        .points
        .iter()
        .map(|p| p.1)
        .chain(plot.baseline)
        .chain(plot.threshold)
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.1
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (lo - pad, hi + pad)
}

/// The plot as an `<svg>` element with `role="img"` and `label` as its
/// accessible name.
pub fn svg(plot: &Plot, label: &str) -> Result<String, String> {
    let mut buf = String::new();
    draw(plot, &mut buf).map_err(|e| format!("drawing the plot of {}: {e}", plot.signal))?;
    let label = super::html::esc(label);
    Ok(buf.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{label}\" class=\"plot\" "),
        1,
    ))
}

fn draw(plot: &Plot, buf: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = if plot.window.1 > plot.window.0 {
        plot.window
    } else {
        (plot.window.0 - 60, plot.window.0 + 60)
    };
    let (y0, y1) = y_range(plot);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|t: &i64| clock(*t))
        .x_desc("UTC")
        .draw()?;
    let points: Vec<(i64, f64)> = plot
        .points
        .iter()
        .copied()
        .filter(|p| p.1.is_finite() && p.0 >= x0 && p.0 <= x1)
        .collect();
    chart
        .draw_series(LineSeries::new(points.clone(), VALUE.stroke_width(2)))?
        .label(plot.signal.as_str())
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], VALUE.stroke_width(2)));
    if points.len() < 20 {
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, VALUE.filled())),
        )?;
    }
    for (value, colour, name) in [
        (plot.baseline, BASELINE, "baseline"),
        (plot.threshold, THRESHOLD, "threshold"),
    ] {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            chart
                .draw_series(LineSeries::new(vec![(x0, v), (x1, v)], colour))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
    }
    for mark in plot.marks.iter().filter(|m| m.at >= x0 && m.at <= x1) {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(mark.at, y0), (mark.at, y1)],
            MARK,
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            mark.label,
            (mark.at, y1),
            ("sans-serif", 12).into_font().color(&MARK),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(MARK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot() -> Plot {
        Plot {
            signal: "latency_p99".into(),
            component: "PaymentGateway/pay/gw".into(),
            points: (0..30)
                .map(|i| (1_000 + i * 60, 0.1 + i as f64 * 0.01))
                .collect(),
            baseline: Some(0.12),
            threshold: Some(0.3),
            marks: vec![Mark {
                at: 1_600,
                label: "action",
            }],
            window: (1_000, 2_800),
            source: Source::Prometheus,
        }
    }

    #[test]
    fn the_svg_draws_the_series_the_baseline_the_threshold_and_the_marks() {
        let svg = svg(&plot(), "latency <p99>").expect("svg");
        assert!(
            svg.starts_with("<svg role=\"img\" aria-label=\"latency &lt;p99&gt;\""),
            "{svg}"
        );
        assert!(
            svg.contains("baseline") && svg.contains("threshold"),
            "{svg}"
        );
        assert!(svg.contains(">\naction\n</text>"), "{svg}");
        // The series, the two reference lines, the mark and the legend's.
        assert!(svg.matches("<polyline").count() >= 4, "{svg}");
    }

    #[test]
    fn an_empty_or_flat_plot_still_draws() {
        let mut p = plot();
        p.points.clear();
        p.baseline = None;
        p.threshold = None;
        assert!(svg(&p, "empty").is_ok());
        p.points = vec![(1_500, 5.0)];
        p.window = (1_500, 1_500);
        assert_eq!(y_range(&p), (4.5, 5.5));
        assert!(svg(&p, "one point").is_ok());
    }
}
