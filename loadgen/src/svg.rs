//! Plots as SVG, drawn by hand: latency percentiles against offered rate
//! (a capacity search) and against time (a single run). Logarithmic latency
//! axis, since percentiles span decades.

use crate::capacity::SearchResult;
use crate::ledger::TimePoint;
use std::fmt::Write as _;

const W: f64 = 860.0;
const H: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#444444",
];

/// One line of points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// `(x, y, filled)`: hollow markers mark failed steps.
    pub points: Vec<(f64, f64, bool)>,
}

/// A plot with a linear x axis and a log10 y axis.
#[derive(Clone, Debug, Default)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A dashed horizontal line (the objective), with its label.
    pub threshold: Option<(f64, String)>,
}

/// Escape text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" step (1, 2 or 5 × 10^n) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    mag * if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

impl Plot {
    /// The SVG document.
    pub fn render(&self) -> String {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        let xs: Vec<f64> = pts().map(|p| p.0).filter(|v| v.is_finite()).collect();
        let mut ys: Vec<f64> = pts().map(|p| p.1).filter(|v| finite_pos(*v)).collect();
        if let Some((t, _)) = &self.threshold
            && finite_pos(*t)
        {
            ys.push(*t);
        }
        let (x0, x1) = if xs.is_empty() {
            (0.0, 1.0)
        } else {
            let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0);
            let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (lo, if hi > lo { hi * 1.05 } else { lo + 1.0 })
        };
        let (d0, d1) = if ys.is_empty() {
            (-1.0, 1.0)
        } else {
            let lo = ys
                .iter()
                .cloned()
                .fold(f64::INFINITY, f64::min)
                .log10()
                .floor();
            let hi = ys
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
                .log10()
                .ceil();
            (lo, if hi > lo { hi } else { lo + 1.0 })
        };
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (y.max(10f64.powf(d0)).log10() - d0) / (d1 - d0) * ph;
        let mut s = String::new();
        let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        // Grid and y ticks per decade.
        let mut d = d0 as i32;
        while f64::from(d) <= d1 {
            let v = 10f64.powi(d);
            let y = sy(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(v)
            );
            d += 1;
        }
        let step = nice_step(x1 - x0, 6.0);
        let mut x = (x0 / step).ceil() * step;
        while x <= x1 + 1e-9 {
            let px = sx(x);
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eeeeee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 18.0,
                fmt_num(x)
            );
            x += step;
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 15.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        if let Some((t, label)) = &self.threshold
            && finite_pos(*t)
        {
            let y = sy(*t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#cc0000" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" fill="#cc0000" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT + pw - 4.0,
                y - 4.0,
                escape(label)
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut sorted: Vec<(f64, f64, bool)> = series
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && finite_pos(p.1))
                .collect();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            if sorted.len() > 1 {
                let path: Vec<String> = sorted
                    .iter()
                    .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    path.join(" ")
                );
            }
            for p in &sorted {
                let fill = if p.2 { color } else { "white" };
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{fill}" stroke="{color}"/>"#,
                    sx(p.0),
                    sy(p.1)
                );
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let lx = LEFT + pw + 15.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                lx + 20.0,
                lx + 26.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Latency percentiles against offered rate for a capacity search; hollow
/// markers are steps that missed the objective.
pub fn latency_vs_rate(r: &SearchResult, title: &str) -> String {
    let names = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
    let series = names
        .iter()
        .enumerate()
        .map(|(i, n)| Series {
            name: (*n).to_string(),
            points: r
                .steps
                .iter()
                .map(|s| (s.rate_per_s, s.summary.latency.series()[i].1, s.passed))
                .collect(),
        })
        .collect();
    Plot {
        title: title.into(),
        x_label: "offered rate (datagrams/s); hollow: objective missed".into(),
        y_label: "end-to-end latency (ms)".into(),
        series,
        threshold: Some((
            r.config.objective.p99_ms_max,
            format!("p99 objective {} ms", r.config.objective.p99_ms_max),
        )),
    }
    .render()
}

/// Latency percentiles against time (by intended send time) for one run.
pub fn latency_vs_time(points: &[TimePoint], title: &str) -> String {
    let names = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
    let series = names
        .iter()
        .enumerate()
        .map(|(i, n)| Series {
            name: (*n).to_string(),
            points: points
                .iter()
                .map(|p| (p.t_s, p.latency.series()[i].1, true))
                .collect(),
        })
        .collect();
    Plot {
        title: title.into(),
        x_label: "time since start (s), by intended send time".into(),
        y_label: "end-to-end latency (ms)".into(),
        series,
        threshold: None,
    }
    .render()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small well-formedness check: every tag closes in order, attribute
    /// values are quoted, no raw `<` or `&` in text, one root element.
    pub(crate) fn check_xml(doc: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let mut roots = 0;
        let mut rest = doc;
        if let Some(r) = rest.strip_prefix("<?xml") {
            rest = &r[r.find("?>").ok_or("unclosed declaration")? + 2..];
        }
        while let Some(lt) = rest.find('<') {
            let text = &rest[..lt];
            check_text(text)?;
            let gt = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack
                    .pop()
                    .ok_or(format!("close {name} with nothing open"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad tag name in <{tag}>"));
            }
            check_attributes(&body[name.len()..])?;
            elements += 1;
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(elements)
    }

    fn check_text(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(amp) = rest.find('&') {
            let semi = rest[amp..].find(';').ok_or("bare &")?;
            let ent = &rest[amp + 1..amp + semi];
            if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                return Err(format!("unknown entity &{ent};"));
            }
            rest = &rest[amp + semi..];
        }
        if t.contains('>') && !t.trim().is_empty() {
            // '>' is legal in text, but our writer never emits it raw.
            return Err(format!("raw > in text {t:?}"));
        }
        Ok(())
    }

    fn check_attributes(mut a: &str) -> Result<(), String> {
        loop {
            a = a.trim_start();
            if a.is_empty() {
                return Ok(());
            }
            let eq = a.find('=').ok_or(format!("attribute without value: {a}"))?;
            let name = a[..eq].trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {name:?}"));
            }
            let v = &a[eq + 1..];
            let q = v.chars().next().ok_or("missing value")?;
            if q != '"' && q != '\'' {
                return Err(format!("unquoted value for {name}"));
            }
            let end = v[1..].find(q).ok_or("unterminated value")? + 1;
            let value = &v[1..end];
            if value.contains('<') {
                return Err("< in attribute".into());
            }
            check_text(value)?;
            a = &v[end + 1..];
        }
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        assert!(check_xml("<a><b/></a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>&</a>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
        assert!(check_xml("<a>").is_err());
    }

    #[test]
    fn plots_are_well_formed_and_escape_text() {
        let p = Plot {
            title: "a <b> & \"c\"".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s&1".into(),
                points: vec![
                    (0.0, 0.5, true),
                    (10.0, 30.0, false),
                    (5.0, 0.0, true),
                    (7.0, f64::NAN, true),
                ],
            }],
            threshold: Some((10.0, "limit <10>".into())),
        };
        let svg = p.render();
        let n = check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(n > 10);
        assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        // Two finite positive points: one line, two markers, one hollow.
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches(r#"fill="white" stroke"#).count(), 1);
        // Empty plots render too.
        check_xml(&Plot::default().render()).unwrap();
        check_xml(&latency_vs_time(&[], "empty")).unwrap();
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(1.0, 4.0), 0.5);
        assert_eq!(fmt_num(150_000.0), "150k");
        assert_eq!(fmt_num(0.01), "0.01");
    }
}
