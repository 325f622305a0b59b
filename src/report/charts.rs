//! Charts as inline SVG, drawn with plotters' SVG backend (no fonts, no network: text is SVG
//! `<text>` the browser renders).

use plotters::prelude::*;

/// One series of points.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub style: Style,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Dots,
    /// The running maximum as a step line.
    BestSoFar,
    /// Dots joined by a line.
    Line,
}

/// The x axis: a quantity from zero (ticks written by the formatter), or positions `0, 1, …`
/// (only whole ticks labelled).
pub enum Axis<'a> {
    From0(Option<&'a dyn Fn(f64) -> String>),
    Ordinal(&'a dyn Fn(usize) -> String),
}

pub const BLUE: RGBColor = RGBColor(37, 99, 235);
pub const GREY: RGBColor = RGBColor(148, 163, 184);
pub const GREEN: RGBColor = RGBColor(22, 163, 74);
pub const RED: RGBColor = RGBColor(220, 38, 38);

/// A scatter and step chart of scores (y from 0 to 1) against `x_label`.
pub fn score_chart(
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    axis: Axis<'_>,
) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, title, x_label, series, axis).map_err(|e| e.to_string())?;
    Ok(svg)
}

fn draw(
    svg: &mut String,
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    axis: Axis<'_>,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max);
    let (x_min, x_max) = match axis {
        Axis::From0(_) => (0.0, if x_max <= 0.0 { 1.0 } else { x_max * 1.05 }),
        Axis::Ordinal(_) => (-0.5, x_max.max(1.0) + 0.5),
    };
    let root = SVGBackend::with_string(svg, (560, 260)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(42)
        .build_cartesian_2d(x_min..x_max, 0.0..1.0)?;
    let ticks = |x: &f64| match &axis {
        Axis::From0(Some(f)) => f(*x),
        Axis::From0(None) => format!("{x:.0}"),
        Axis::Ordinal(f) if *x >= 0.0 && (x - x.round()).abs() < 1e-6 => f(x.round() as usize),
        Axis::Ordinal(_) => String::new(),
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("score")
        .x_label_formatter(&ticks)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .light_line_style(RGBColor(241, 245, 249))
        .draw()?;
    for s in series {
        let color = s.color;
        if s.style == Style::Line && !s.points.is_empty() {
            chart.draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?;
        }
        if s.style == Style::BestSoFar && !s.points.is_empty() {
            // Candidates scored concurrently finish out of proposal order: walk them by x.
            let mut ordered = s.points.clone();
            ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut steps = Vec::new();
            let mut best = f64::NEG_INFINITY;
            for &(x, y) in &ordered {
                if y > best {
                    if best.is_finite() {
                        steps.push((x, best));
                    }
                    best = y;
                }
                steps.push((x, best));
            }
            steps.push((x_max, best));
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
                .label(s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        } else {
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                )?
                .label(s.label)
                .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Horizontal bars of used against allowed, one per budget (calls, tokens, time).
pub fn budget_bars(rows: &[(String, f64)]) -> String {
    // Plain SVG: a bar chart of three fractions needs no axes.
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"560\" height=\"{}\">",
        rows.len() * 28 + 8
    );
    for (i, (label, fraction)) in rows.iter().enumerate() {
        let y = i * 28 + 4;
        let width = (fraction.clamp(0.0, 1.0) * 360.0).round();
        let color = if *fraction >= 1.0 {
            "#dc2626"
        } else {
            "#2563eb"
        };
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-family=\"sans-serif\" font-size=\"13\">{}</text>\
             <rect x=\"190\" y=\"{y}\" width=\"360\" height=\"18\" fill=\"#f1f5f9\"/>\
             <rect x=\"190\" y=\"{y}\" width=\"{width}\" height=\"18\" fill=\"{color}\"/>",
            y + 14,
            super::escape(label)
        ));
    }
    svg.push_str("</svg>");
    svg
}
