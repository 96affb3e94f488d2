//! SVG line charts for `loopix sim`, drawn with plotters: one series per curve, points
//! marked, a legend. SVG text is left to the viewer, so no font library is needed.

use std::path::Path;

use plotters::prelude::*;

/// One curve: its legend label and its points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed-looking (points only, no line): for reference values.
    pub reference: bool,
}

/// Axis titles and the chart's caption.
pub struct Labels<'a> {
    pub caption: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

/// Writes a chart of `series` to `path`.
pub fn line_chart(path: &Path, labels: &Labels, series: &[Series]) -> Result<(), String> {
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    draw(&root, labels, series).map_err(|e| format!("plot {}: {e}", path.display()))?;
    root.present()
        .map_err(|e| format!("plot {}: {e}", path.display()))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    labels: &Labels,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (x, y) = bounds(series);
    let mut chart = ChartBuilder::on(root)
        .caption(labels.caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts = s.points.clone();
        if s.reference {
            chart
                .draw_series(pts.iter().map(|&p| Cross::new(p, 6, color.stroke_width(2))))?
                .label(&s.label)
                .legend(move |(x, y)| Cross::new((x + 8, y), 5, color.stroke_width(2)));
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(&s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

/// The data's range on each axis, padded by 5 % (and never empty).
fn bounds(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = |a: f64, b: f64| {
        let d = ((b - a) * 0.05).max(1e-9);
        (a - d, b + d)
    };
    (pad(x0, x1), pad(y0.min(0.0), y1))
}
