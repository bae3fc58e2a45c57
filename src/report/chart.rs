//! Horizontal bar charts as inline SVG: the report stays one self-contained page.

use std::fmt::Write as _;

use html_escape::encode_text as esc;

/// A horizontal bar chart as inline SVG: (label, value, shown text), values in [0, max].
pub fn bars(title: &str, subtitle: &str, items: &[(String, f64, String)], max: f64) -> String {
    let row = 22.0;
    let label_w = 210.0;
    let bar_w = 380.0;
    let h = row * items.len() as f64 + 34.0;
    let mut s = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 680 {h}\" width=\"680\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        s,
        "<text x=\"0\" y=\"14\" class=\"t\">{}</text><text x=\"0\" y=\"28\" class=\"s\">{}</text>",
        esc(title),
        esc(subtitle)
    );
    for (i, (label, v, shown)) in items.iter().enumerate() {
        let y = 36.0 + i as f64 * row;
        let w = if max > 0.0 {
            (v / max).clamp(0.0, 1.0) * bar_w
        } else {
            0.0
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"l\" text-anchor=\"end\">{}</text><rect x=\"{}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" class=\"b\"/><text x=\"{}\" y=\"{}\" class=\"v\">{}</text>",
            label_w - 6.0,
            y + 13.0,
            esc(label),
            label_w,
            y + 2.0,
            row - 6.0,
            label_w + w + 5.0,
            y + 13.0,
            esc(shown)
        );
    }
    s.push_str("</svg></figure>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_maximum_and_escape_labels() {
        let items = vec![
            ("a & b".to_string(), 1.0, "100 %".to_string()),
            ("c".to_string(), 0.5, "50 %".to_string()),
            ("d".to_string(), 7.0, "700 %".to_string()),
        ];
        let svg = bars("T", "t", &items, 1.0);
        assert!(svg.contains("a &amp; b"));
        assert!(svg.contains(r#"width="380.0""#) && svg.contains(r#"width="190.0""#));
        assert_eq!(
            svg.matches(r#"width="380.0""#).count(),
            2,
            "values over the maximum are cut"
        );
        assert!(bars("T", "t", &items, 0.0).contains(r#"width="0.0""#));
    }
}
