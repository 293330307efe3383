//! The accuracy-latency Pareto front of a search's results: the architectures no other one
//! beats on both (at least as accurate and at most as slow, better on one), as JSON rows and
//! an SVG plot of every result with the front drawn as a staircase.

use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// One result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParetoPoint {
    pub trial: usize,
    pub arch: String,
    pub accuracy: f64,
    pub latency_ms: f64,
    /// What the search maximised (the latency reward).
    pub objective: f64,
}

/// The non-dominated points, fastest first (ties on both: the earliest trial).
pub fn front(points: &[ParetoPoint]) -> Vec<ParetoPoint> {
    let mut sorted: Vec<&ParetoPoint> = points.iter().collect();
    // Fastest first; at equal latency the most accurate, then the earliest.
    sorted.sort_by(|a, b| {
        a.latency_ms
            .total_cmp(&b.latency_ms)
            .then(b.accuracy.total_cmp(&a.accuracy))
            .then(a.trial.cmp(&b.trial))
    });
    let mut out: Vec<ParetoPoint> = Vec::new();
    for p in sorted {
        // Kept only if more accurate than every faster (or equally fast) point kept.
        if out.last().is_none_or(|best| p.accuracy > best.accuracy) {
            out.push(p.clone());
        }
    }
    out
}

/// Every point (grey) and the front (red, a staircase), latency on x, accuracy on y; the
/// target as a dashed vertical line.
pub fn pareto_svg(title: &str, points: &[ParetoPoint], target_ms: f64) -> String {
    let (w, h, pad) = (640.0, 400.0, 56.0);
    let xs = points.iter().map(|p| p.latency_ms).chain([target_ms]);
    let (x0, x1) = span(xs);
    let (y0, y1) = span(points.iter().map(|p| p.accuracy));
    let x = |v: f64| pad + (v - x0) / (x1 - x0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - y0) / (y1 - y0) * (h - 2.0 * pad);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{pad}" y="20" font-size="13">{}</text><rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="#999"/><text x="{pad}" y="{}">latency (ms, x): {x0:.3} .. {x1:.3}; accuracy (y): {y0:.4} .. {y1:.4}; red: the Pareto front; dashed: the target</text>"##,
        title.replace('&', "&amp;").replace('<', "&lt;"),
        w - 2.0 * pad,
        h - 2.0 * pad,
        h - 16.0
    );
    let tx = x(target_ms);
    let _ = write!(
        s,
        r##"<line x1="{tx:.1}" y1="{pad}" x2="{tx:.1}" y2="{}" stroke="#555" stroke-dasharray="4 3"/>"##,
        h - pad
    );
    for p in points {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#999" fill-opacity="0.7"/>"##,
            x(p.latency_ms),
            y(p.accuracy)
        );
    }
    let f = front(points);
    let mut path = String::new();
    for (i, p) in f.iter().enumerate() {
        let (px, py) = (x(p.latency_ms), y(p.accuracy));
        if i == 0 {
            let _ = write!(path, "M{px:.1},{py:.1}");
        } else {
            let _ = write!(path, " H{px:.1} V{py:.1}");
        }
    }
    let _ = write!(
        s,
        r##"<path d="{path}" fill="none" stroke="#e41a1c" stroke-width="1.5"/>"##
    );
    for p in &f {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#e41a1c"/>"##,
            x(p.latency_ms),
            y(p.accuracy)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The range of `values`, widened when empty or flat.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi > lo {
        let m = 0.05 * (hi - lo);
        (lo - m, hi + m)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}
