//! Pictures of a run, as standalone SVG (no plotting dependency): the softmax(alpha)
//! weights of every edge over the epochs, the derived cells drawn as graphs, a training
//! run's learning curves, a search's scores and anytime curves (best so far per query).

use crate::nas::train_run::TrainEpochMetrics;
use crate::nas::{Genotype, Primitive};
use std::fmt::Write;

const COLORS: [&str; 8] = [
    "#9e9e9e", "#e41a1c", "#ff7f00", "#4daf4a", "#377eb8", "#984ea3", "#a65628", "#f781bf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `history[epoch][edge][op]` = softmax(alpha) after that epoch, for the normal and
/// reduction cells: one small chart per edge, one line (with a dot per epoch) per op. All
/// charts share one y range, printed in the header, so edges can be compared.
pub fn alpha_history_svg(
    normal: &[Vec<Vec<f64>>],
    reduce: &[Vec<Vec<f64>>],
    ops: &[Primitive],
) -> String {
    let edges = normal.first().map_or(0, |e| e.len());
    let (cw, ch, pad, gap) = (150.0, 90.0, 28.0, 40.0);
    let cols = 7usize;
    let rows_per_cell = edges.div_ceil(cols).max(1);
    let width = pad + cols as f64 * (cw + pad);
    let header = 48.0;
    let block_h = 36.0 + rows_per_cell as f64 * (ch + gap);
    let height = header + 2.0 * block_h;
    let all = || normal.iter().chain(reduce).flatten().flatten().copied();
    let lo = all().fold(f64::INFINITY, f64::min);
    let hi = all().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let epochs = normal.len();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10"><rect width="100%" height="100%" fill="white"/>"#
    );
    for (k, op) in ops.iter().enumerate() {
        let x = pad + k as f64 * 120.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="8" width="12" height="12" fill="{}"/><text x="{}" y="18">{}</text>"#,
            COLORS[k % 8],
            x + 16.0,
            op.name()
        );
    }
    let _ = write!(
        s,
        r#"<text x="{pad}" y="38">x: epochs 1..{epochs}; y: softmax weight from {lo:.4} (bottom) to {hi:.4} (top)</text>"#
    );
    for (block, (title, hist)) in [("normal cell", normal), ("reduction cell", reduce)]
        .into_iter()
        .enumerate()
    {
        let y0 = header + block as f64 * block_h;
        let _ = write!(
            s,
            r#"<text x="{pad}" y="{}" font-size="14" font-weight="bold">softmax(alpha) per edge, {title}</text>"#,
            y0 + 18.0
        );
        for e in 0..edges {
            let (gx, gy) = (
                pad + (e % cols) as f64 * (cw + pad),
                y0 + 36.0 + (e / cols) as f64 * (ch + gap),
            );
            let _ = write!(
                s,
                r##"<rect x="{gx}" y="{gy}" width="{cw}" height="{ch}" fill="none" stroke="#ccc"/><text x="{gx}" y="{}">edge {e}</text>"##,
                gy - 4.0
            );
            for k in 0..ops.len() {
                let pts: Vec<(f64, f64)> = (0..epochs)
                    .map(|t| {
                        let x = gx
                            + if epochs > 1 {
                                t as f64 / (epochs - 1) as f64 * cw
                            } else {
                                cw / 2.0
                            };
                        (x, gy + ch - (hist[t][e][k] - lo) / (hi - lo) * ch)
                    })
                    .collect();
                let line: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = write!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                    line.join(" "),
                    COLORS[k % 8]
                );
                for (x, y) in pts {
                    let _ = write!(
                        s,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="1.8" fill="{}"/>"#,
                        COLORS[k % 8]
                    );
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The normal and reduction cells of `g` as graphs: inputs c_{k-2}, c_{k-1} on the left,
/// intermediate nodes in the middle, the concatenated output c_{k} on the right.
pub fn genotype_svg(g: &Genotype) -> String {
    let (w, h) = (760.0, 330.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#,
        2.0 * h
    );
    s.push_str(r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>"##);
    for (i, (title, gene, concat)) in [
        ("normal cell", &g.normal, &g.normal_concat),
        ("reduction cell", &g.reduce, &g.reduce_concat),
    ]
    .into_iter()
    .enumerate()
    {
        let oy = i as f64 * h;
        let steps = gene.len() / 2;
        let pos = |node: usize| -> (f64, f64) {
            match node {
                0 => (60.0, oy + 110.0),
                1 => (60.0, oy + 230.0),
                n => (
                    220.0 + (n - 2) as f64 * 125.0,
                    oy + 60.0 + ((n - 2) % 2) as f64 * 190.0,
                ),
            }
        };
        let out = (220.0 + steps as f64 * 125.0, oy + 170.0);
        let _ = write!(
            s,
            r#"<text x="20" y="{}" font-size="14" font-weight="bold">{title}</text>"#,
            oy + 22.0
        );
        for (idx, &(op, from)) in gene.iter().enumerate() {
            let to = idx / 2 + 2;
            let ((x1, y1), (x2, y2)) = (pos(from), pos(to));
            let (mx, my) = (
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 18.0 + (idx % 2) as f64 * 36.0,
            );
            let color = Primitive::ALL
                .iter()
                .position(|&p| p == op)
                .map_or("#555", |k| COLORS[k]);
            let x2 = x2 - 22.0;
            // The label sits on the curve's midpoint, haloed in white so crossings stay legible.
            let (lx, ly) = ((x1 + 2.0 * mx + x2) / 4.0, (y1 + 2.0 * my + y2) / 4.0);
            let _ = write!(
                s,
                r#"<path d="M{x1},{y1} Q{mx},{my} {x2},{y2}" fill="none" stroke="{color}" stroke-width="2" marker-end="url(#arrow)"/><text x="{lx}" y="{ly}" text-anchor="middle" fill="{color}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
                escape(op.name())
            );
        }
        for &n in concat {
            let (x, y) = pos(n);
            let _ = write!(
                s,
                r##"<line x1="{x}" y1="{y}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4 3" marker-end="url(#arrow)"/>"##,
                out.0 - 30.0,
                out.1
            );
        }
        let label = |n: usize| match n {
            0 => "c_{k-2}".to_string(),
            1 => "c_{k-1}".to_string(),
            n => format!("{}", n - 2),
        };
        for n in 0..steps + 2 {
            let (x, y) = pos(n);
            let fill = if n < 2 { "#cde8c9" } else { "#c9dcf2" };
            let _ = write!(
                s,
                r##"<ellipse cx="{x}" cy="{y}" rx="22" ry="15" fill="{fill}" stroke="#333"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                y + 4.0,
                escape(&label(n))
            );
        }
        let _ = write!(
            s,
            r##"<ellipse cx="{}" cy="{}" rx="28" ry="15" fill="#f5e3b8" stroke="#333"/><text x="{}" y="{}" text-anchor="middle">c_{{k}}</text>"##,
            out.0,
            out.1,
            out.0,
            out.1 + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Learning curves as a standalone SVG: loss (left) and accuracy (right) per epoch, train
/// solid and test dashed.
pub fn learning_curves_svg(history: &[TrainEpochMetrics]) -> String {
    let (pw, ph, pad) = (360.0, 220.0, 48.0);
    let width = 2.0 * (pw + pad) + pad;
    let height = ph + 2.0 * pad + 24.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
    );
    type Pick = fn(&TrainEpochMetrics) -> f64;
    /// Title, (label, value) per series, whether it is an accuracy panel.
    type Panel = (&'static str, [(&'static str, Pick); 2], bool);
    let panels: [Panel; 2] = [
        (
            "loss",
            [("train", |m| m.train_loss), ("test", |m| m.test_loss)],
            false,
        ),
        (
            "accuracy (%)",
            [
                ("train", |m| 100.0 * m.train_acc),
                ("test", |m| 100.0 * m.test_acc),
            ],
            true,
        ),
    ];
    let n = history.len();
    for (p, (title, series, is_acc)) in panels.iter().enumerate() {
        let x0 = pad + p as f64 * (pw + pad);
        let y0 = pad;
        let values = || {
            series
                .iter()
                .flat_map(|(_, f)| history.iter().map(f))
                .filter(|v| v.is_finite())
        };
        let (mut lo, mut hi) = (
            values().fold(f64::INFINITY, f64::min),
            values().fold(f64::NEG_INFINITY, f64::max),
        );
        if *is_acc {
            (lo, hi) = (lo.clamp(0.0, 100.0), 100.0);
            lo = (lo / 10.0).floor() * 10.0;
        } else {
            lo = lo.min(0.0);
        }
        if !(lo.is_finite() && hi > lo) {
            (lo, hi) = (0.0, 1.0);
        }
        let xp = |e: usize| {
            if n <= 1 {
                x0 + pw / 2.0
            } else {
                x0 + pw * e as f64 / (n - 1) as f64
            }
        };
        let yp = |v: f64| y0 + ph * (1.0 - (v - lo) / (hi - lo));
        let _ = write!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{x0}" y="{}" font-size="13" font-weight="bold">{title}</text><text x="{}" y="{}" text-anchor="end">{hi:.3}</text><text x="{}" y="{}" text-anchor="end">{lo:.3}</text><text x="{x0}" y="{}">epoch 1</text><text x="{}" y="{}" text-anchor="end">epoch {n}</text>"##,
            y0 - 8.0,
            x0 - 4.0,
            y0 + 10.0,
            x0 - 4.0,
            y0 + ph,
            y0 + ph + 14.0,
            x0 + pw,
            y0 + ph + 14.0
        );
        for (k, (label, f)) in series.iter().enumerate() {
            let (color, dash) = if k == 0 {
                ("#377eb8", "")
            } else {
                ("#e41a1c", r#" stroke-dasharray="5,3""#)
            };
            let pts: Vec<String> = history
                .iter()
                .enumerate()
                .filter(|(_, m)| f(m).is_finite())
                .map(|(e, m)| format!("{:.2},{:.2}", xp(e), yp(f(m))))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                if let Some((x, y)) = p.split_once(',') {
                    let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="2" fill="{color}"/>"#);
                }
            }
            let ly = y0 + ph + 30.0;
            let lx = x0 + k as f64 * 90.0;
            let _ = write!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{label}</text>"#,
                lx + 24.0,
                lx + 28.0,
                ly + 4.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A scatter of `(x, y)` points (one dot each) with the axes' ranges printed: a search's
/// scores against generation (or query).
pub fn score_scatter_svg(title: &str, points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (640.0, 360.0, 48.0);
    let range = |f: &dyn Fn(&(f64, f64)) -> f64| {
        let lo = points.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            (lo, hi)
        } else if lo.is_finite() {
            (lo - 0.5, lo + 0.5)
        } else {
            (0.0, 1.0)
        }
    };
    let ((x0, x1), (y0, y1)) = (range(&|p| p.0), range(&|p| p.1));
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{pad}" y="20" font-size="13">{}</text><rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="#999"/><text x="{pad}" y="{}">x: {x0} .. {x1}; y: {y0:.4} (bottom) .. {y1:.4} (top)</text>"##,
        escape(title),
        w - 2.0 * pad,
        h - 2.0 * pad,
        h - 12.0
    );
    for &(x, y) in points {
        let cx = pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
        let cy = h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);
        let _ = write!(
            s,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="2.5" fill="#377eb8" fill-opacity="0.6"/>"##
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Anytime curves: one line per `(label, values)` series, `values[q]` the figure after query
/// `q + 1` (best so far, say), and dashed horizontal reference lines (a table's median and
/// best) labelled at the right. The axes' ranges are printed.
pub fn anytime_svg(
    title: &str,
    y_label: &str,
    series: &[(String, Vec<f64>)],
    references: &[(String, f64)],
) -> String {
    let (w, h, pad, right) = (720.0, 400.0, 56.0, 150.0);
    let (pw, ph) = (w - pad - right, h - 2.0 * pad);
    let n = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let finite = || {
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .chain(references.iter().map(|r| r.1))
            .filter(|v| v.is_finite())
    };
    let (lo, hi) = (
        finite().fold(f64::INFINITY, f64::min),
        finite().fold(f64::NEG_INFINITY, f64::max),
    );
    let (lo, hi) = if lo.is_finite() && hi > lo {
        let m = 0.03 * (hi - lo);
        (lo - m, hi + m)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    };
    let xp = |q: usize| {
        pad + if n > 1 {
            pw * q as f64 / (n - 1) as f64
        } else {
            pw / 2.0
        }
    };
    let yp = |v: f64| pad + ph * (1.0 - (v - lo) / (hi - lo));
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{pad}" y="22" font-size="13">{}</text><rect x="{pad}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><text x="{}" y="{}" text-anchor="end">{hi:.2}</text><text x="{}" y="{}" text-anchor="end">{lo:.2}</text><text x="{pad}" y="{}">query 1</text><text x="{}" y="{}" text-anchor="end">query {n}</text><text x="{pad}" y="{}">y: {}</text>"##,
        escape(title),
        pad - 4.0,
        pad + 10.0,
        pad - 4.0,
        pad + ph,
        pad + ph + 14.0,
        pad + pw,
        pad + ph + 14.0,
        pad + ph + 32.0,
        escape(y_label)
    );
    for (label, v) in references {
        let y = yp(*v);
        let _ = write!(
            s,
            r##"<line x1="{pad}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#777" stroke-dasharray="4 3"/><text x="{}" y="{:.1}" fill="#555">{} ({v:.2})</text>"##,
            pad + pw,
            pad + pw + 6.0,
            y + 4.0,
            escape(label)
        );
    }
    if !series.is_empty() {
        // The legend's box, so that a reference line crossing it stays readable.
        let top = pad + ph - 22.0 - 16.0 * (series.len() - 1) as f64;
        let _ = write!(
            s,
            r##"<rect x="{}" y="{top}" width="190" height="{}" fill="white" stroke="#ccc"/>"##,
            pad + pw - 176.0,
            16.0 * series.len() as f64 + 4.0
        );
    }
    for (k, (label, v)) in series.iter().enumerate() {
        let color = COLORS[(k + 1) % COLORS.len()];
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .filter(|(_, y)| y.is_finite())
            .map(|(q, &y)| format!("{:.1},{:.1}", xp(q), yp(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
            pts.join(" ")
        );
        // Bottom right: anytime curves rise to the top right and start low at the left.
        let ly = pad + ph - 10.0 - 16.0 * (series.len() - 1 - k) as f64;
        let lx = pad + pw - 170.0;
        let last = v.last().copied().unwrap_or(f64::NAN);
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{} ({last:.2})</text>"#,
            lx + 20.0,
            lx + 24.0,
            ly + 4.0,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}
