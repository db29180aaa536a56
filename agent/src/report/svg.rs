//! Line charts as inline SVG: no script, no fetch, readable in any browser.

use std::fmt::Write as _;

use super::escape;

/// A named series of (seconds since the report's start, value).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Distinguishable colours (Okabe-Ito), cycled.
const COLOURS: [&str; 7] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000",
];

/// A chart of `series` over `span` seconds with values formatted by `label`,
/// or a note when there is nothing to draw (a chart of nothing would suggest a zero).
pub fn line_chart(title: &str, span: f64, series: &[Series], label: fn(f64) -> String) -> String {
    let mut out = format!("<figure><figcaption>{}</figcaption>", escape(title));
    let points = || series.iter().flat_map(|s| s.points.iter());
    if points().next().is_none() {
        out.push_str("<p class=\"none\">no data in this recording</p></figure>");
        return out;
    }
    let t_max = points().map(|p| p.0).fold(span, f64::max).max(1e-9);
    let v_max = points().map(|p| p.1).fold(0.0_f64, f64::max);
    let v_max = if v_max > 0.0 { v_max * 1.05 } else { 1.0 };
    let x = |t: f64| LEFT + t / t_max * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - v / v_max) * (HEIGHT - TOP - BOTTOM);
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    for i in 0..=4 {
        let v = v_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            y(v) + 4.0,
            escape(&label(v)),
            y = y(v),
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" class=\"axis\">0 s</text><text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{t_max:.0} s</text>",
        HEIGHT - 8.0,
        WIDTH - RIGHT,
        HEIGHT - 8.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"><title>{}</title></polyline>",
            path.join(" "),
            escape(&s.name)
        );
        if s.points.len() == 1 {
            let (t, v) = s.points[0];
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                x(t),
                y(v)
            );
        }
    }
    out.push_str("</svg><div class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span>",
            COLOURS[i % COLOURS.len()],
            escape(&s.name)
        );
    }
    out.push_str("</div></figure>");
    out
}
