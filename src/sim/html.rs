//! The self-contained HTML report of `rota simulate --out DIR` (`report.html`): the workload,
//! the table with its legend, the verdict and every chart, in one file with inline CSS and
//! inline SVG, so it opens in a browser with no network. Must not: reference any external
//! resource (no script, font, stylesheet or image URL), or compute figures.

use super::report::{LEGEND, TABLE_HEADERS};

/// What the report shows, all already computed.
#[derive(Debug)]
pub struct HtmlReport<'a> {
    /// The one-line workload description.
    pub workload: &'a str,
    /// Table cells, one row per policy, in [`TABLE_HEADERS`] order.
    pub rows: &'a [[String; 12]],
    /// Verdict paragraphs.
    pub verdict: &'a [String],
    /// Further notes (unplaceable jobs, replay time).
    pub notes: &'a [String],
    /// `(heading, SVG document)` per chart, in display order.
    pub charts: &'a [(String, String)],
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1250px;margin:2em auto;color:#222}\
table{border-collapse:collapse}th,td{padding:3px 8px;border-bottom:1px solid #ccc}\
td{text-align:right;font-variant-numeric:tabular-nums}td:first-child{text-align:left}\
.legend{font-size:90%;color:#444}.verdict{background:#f4f7fb;padding:0.6em 1em}\
svg{max-width:100%;height:auto}";

/// The whole report as one HTML document.
pub fn render(report: &HtmlReport<'_>) -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<title>rota simulate report</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n<h1>rota simulate: policy comparison</h1>\n");
    out.push_str(&format!("<p>{}</p>\n", escape(report.workload)));
    out.push_str(&table(report.rows));
    out.push_str("<ul class=\"legend\">");
    for line in LEGEND {
        out.push_str(&format!("<li>{}</li>", escape(line)));
    }
    out.push_str("</ul>\n<div class=\"verdict\">");
    for line in report.verdict {
        out.push_str(&format!("<p>{}</p>", escape(line)));
    }
    out.push_str("</div>\n");
    for note in report.notes {
        out.push_str(&format!("<p class=\"legend\">{}</p>\n", escape(note)));
    }
    for (heading, svg) in report.charts {
        out.push_str(&format!("<h2>{}</h2>\n", escape(heading)));
        out.push_str(strip_xml_declaration(svg));
        out.push('\n');
    }
    out.push_str("</body></html>\n");
    out
}

fn table(rows: &[[String; 12]]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for header in TABLE_HEADERS {
        out.push_str(&format!("<th>{}</th>", escape(header)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(&format!("<td>{}</td>", escape(cell)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
    out
}

/// An SVG file may start with `<?xml …?>`, which is not allowed inside HTML.
fn strip_xml_declaration(svg: &str) -> &str {
    match svg.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.find("?>").map_or(svg, |end| &rest[end + 2..]),
        None => svg,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_one_document_without_external_resources() {
        let rows = vec![std::array::from_fn(|i| format!("<{i}>"))];
        let charts = vec![(
            "c".to_string(),
            "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"></svg>".to_string(),
        )];
        let html = render(&HtmlReport {
            workload: "w",
            rows: &rows,
            verdict: &["v & w".to_string()],
            notes: &[],
            charts: &charts,
        });
        assert!(html.contains("<td>&lt;1&gt;</td>") && html.contains("v &amp; w"));
        assert!(!html.contains("<?xml") && html.contains("<svg"));
        assert!(!html.contains("src=") && !html.contains("href="));
    }
}
