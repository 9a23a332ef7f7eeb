//! Tables in the vendor's layout: upper-case headers, columns separated by at least three
//! spaces, cells that may span several lines (verification patterns, administrator lists).

use std::borrow::Cow;

use tke_client::untrusted::sanitize;

/// A table to print.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; a cell may hold several lines.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                for l in cell_lines(c) {
                    widths[i] = widths[i].max(l.chars().count());
                }
            }
        }
        let mut out = String::new();
        let line = |cells: &[&str], out: &mut String| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                s.push_str(c);
                if i + 1 < cells.len() {
                    let pad = widths[i] - c.chars().count() + 3;
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&self.headers, &mut out);
        for r in &self.rows {
            let split: Vec<Vec<Cow<'_, str>>> = r.iter().map(|c| cell_lines(c)).collect();
            let height = split.iter().map(|l| l.len()).max().unwrap_or(1).max(1);
            for k in 0..height {
                let cells: Vec<&str> = (0..n)
                    .map(|i| split.get(i).and_then(|l| l.get(k)).map_or("", |c| c))
                    .collect();
                line(&cells, &mut out);
            }
        }
        out
    }
}

/// The lines of a cell, each with what could paint a terminal escaped: cells hold text
/// from units and servers (locations, names), and a line break is ours only.
fn cell_lines(cell: &str) -> Vec<Cow<'_, str>> {
    cell.lines().map(sanitize).collect()
}

/// A verification pattern on two lines of 32 hex digits, as the vendor shows it; zeros
/// for an empty register.
pub fn vp_lines(vp: Option<&tke_proto::Vp>) -> String {
    let hex = vp.map(|v| v.to_hex()).unwrap_or_else(|| "0".repeat(64));
    format!("{}\n{}", &hex[..32], &hex[32..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_spans_lines() {
        let mut t = Table::new(&["CRYPTO UNIT NUM", "STATUS"]);
        t.row(vec!["1".into(), "Valid\nabc".into()]);
        assert_eq!(
            t.render(),
            "CRYPTO UNIT NUM   STATUS\n1                 Valid\n                  abc\n"
        );
    }
}
