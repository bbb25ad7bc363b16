//! PNG pictures of dashboard panels: each panel's series (as Prometheus returned them for a
//! range query) drawn as lines in a grid, with the moments of injected faults marked. Rendered
//! with plotters' bitmap backend and a TrueType font read from disk (Debian's
//! `fonts-dejavu-core`), so it needs neither fontconfig nor a display.

use std::{path::Path, sync::OnceLock};

use anyhow::{bail, Context as _};
use plotters::prelude::*;

/// Fonts tried in order; the first one present is used.
const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the font under plotters' `sans-serif` family once per process.
fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONT_FILES
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| {
                format!(
                    "no TrueType font found (tried {}); install fonts-dejavu-core (`./scripts/setup --test`)",
                    FONT_FILES.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
        // plotters keeps registered fonts for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// One line: its legend and its points (x = seconds from the start of the picture).
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart of the grid.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// Shown after the values on the y axis, e.g. `msg/s`, `s`, `B`.
    pub unit: String,
    pub lines: Vec<Line>,
}

/// A moment to mark on every chart (x in seconds), e.g. "store-02 killed".
#[derive(Debug, Clone)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

/// 1234567 -> "1.2M"; 0.0042 -> "4.2m".
pub fn si(value: f64) -> String {
    let abs = value.abs();
    let (scaled, suffix) = if abs >= 1e9 {
        (value / 1e9, "G")
    } else if abs >= 1e6 {
        (value / 1e6, "M")
    } else if abs >= 1e3 {
        (value / 1e3, "k")
    } else if abs == 0.0 || abs >= 1.0 {
        (value, "")
    } else if abs >= 1e-3 {
        (value * 1e3, "m")
    } else {
        (value * 1e6, "µ")
    };
    let text = if scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// Draws `charts` in a grid of `columns` into a PNG at `path`, under `title`.
pub fn render_grid(
    path: &Path,
    title: &str,
    charts: &[Chart],
    markers: &[Marker],
    columns: usize,
) -> anyhow::Result<()> {
    register_font()?;
    if charts.is_empty() {
        bail!("nothing to draw");
    }
    let columns = columns.max(1);
    let rows = charts.len().div_ceil(columns);
    let (width, height) = (560 * columns as u32, 60 + 300 * rows as u32);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (header, body) = root.split_vertically(60);
    header
        .titled(title, ("sans-serif", 26).into_font().color(&BLACK))
        .map_err(draw_error)?;
    let cells = body.split_evenly((rows, columns));
    let x_end = charts
        .iter()
        .flat_map(|c| c.lines.iter())
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    for (cell, chart) in cells.iter().zip(charts) {
        draw_chart(cell, chart, markers, x_end)?;
    }
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    markers: &[Marker],
    x_end: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let finite = |v: f64| v.is_finite();
    let y_max = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| finite(*v))
        .fold(0.0f64, f64::max);
    let y_min = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| finite(*v))
        .fold(0.0f64, f64::min);
    let y_top = if y_max <= y_min {
        y_min + 1.0
    } else {
        y_max * 1.15
    };
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 17).into_font())
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_end, y_min..y_top)
        .map_err(draw_error)?;
    let unit = chart.unit.clone();
    ctx.configure_mesh()
        .x_labels(7)
        .y_labels(5)
        .x_desc("seconds")
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{}{}", si(*y), unit))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(draw_error)?;
    for marker in markers {
        let style = RGBColor(200, 60, 60).stroke_width(1);
        ctx.draw_series(std::iter::once(PathElement::new(
            vec![(marker.at, y_min), (marker.at, y_top)],
            style,
        )))
        .map_err(draw_error)?;
        ctx.draw_series(std::iter::once(Text::new(
            marker.label.clone(),
            (marker.at, y_top),
            ("sans-serif", 11).into_font().color(&RGBColor(200, 60, 60)),
        )))
        .map_err(draw_error)?;
    }
    for (i, line) in chart.lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Split at gaps (NaN or missing samples) so a dead node's line stops instead of
        // jumping across the gap.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        let mut last_x: Option<f64> = None;
        for &(x, y) in &line.points {
            let gap = last_x.is_some_and(|lx| x - lx > 3.0);
            if !finite(y) || gap {
                segments.push(Vec::new());
            }
            if finite(y) {
                if let Some(segment) = segments.last_mut() {
                    segment.push((x, y));
                }
            }
            last_x = Some(x);
        }
        let mut first = true;
        for segment in segments.into_iter().filter(|s| !s.is_empty()) {
            let series = ctx
                .draw_series(LineSeries::new(segment, color.stroke_width(2)))
                .map_err(draw_error)?;
            if first {
                series.label(line.label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    if chart.lines.iter().any(|l| !l.label.is_empty()) {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(3.0), "3");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!(si(2_000_000.0), "2M");
        assert_eq!(si(0.25), "250m");
        assert_eq!(si(0.0042), "4.2m");
        assert_eq!(si(12.5), "12.5");
    }

    #[test]
    fn draws_a_readable_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let line = |label: &str, f: fn(f64) -> f64| Line {
            label: label.into(),
            points: (0..60).map(|i| (i as f64, f(i as f64))).collect(),
        };
        let charts = vec![
            Chart {
                title: "Messages relayed/s".into(),
                unit: "/s".into(),
                lines: vec![line("a", |x| x / 10.0), line("b", |x| 6.0 - x / 10.0)],
            },
            Chart {
                title: "Nodes up".into(),
                unit: String::new(),
                lines: vec![line("up", |x| if x < 30.0 { 5.0 } else { 4.0 })],
            },
            Chart {
                title: "Empty".into(),
                unit: String::new(),
                lines: vec![],
            },
        ];
        let markers = [Marker {
            at: 30.0,
            label: "killed".into(),
        }];
        render_grid(&path, "Test", &charts, &markers, 2).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 5_000, "{} bytes", bytes.len());
    }
}
