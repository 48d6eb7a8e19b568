//! Printing results: aligned tables for people, JSON (`--json`) for scripts.

use std::io::{self, Write};

use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// A plain text table with aligned columns.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
            let mut parts = Vec::new();
            for (cell, w) in cells.zip(&widths) {
                parts.push(format!("{cell:<w$}"));
            }
            writeln!(out, "{}", parts.join("  ").trim_end())
        };
        line(out, &mut self.headers.iter().copied())?;
        for row in &self.rows {
            line(out, &mut row.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

/// Prints `items` as JSON, or as the table `to_table` builds.
pub fn list<T: Serialize>(
    format: Format,
    items: &[T],
    to_table: impl FnOnce(&[T]) -> Table,
) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, items)?;
            writeln!(out)?;
        }
        Format::Table if items.is_empty() => writeln!(out, "(none)")?,
        Format::Table => to_table(items).write(&mut out)?,
    }
    Ok(())
}

/// Prints one item as JSON, or a human sentence.
pub fn item<T: Serialize>(
    format: Format,
    item: &T,
    sentence: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(item)?),
        Format::Table => println!("{}", sentence()),
    }
    Ok(())
}

pub fn opt(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["a".into(), "long name".into()]);
        t.row(vec!["longer-id".into(), "x".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ID         NAME\na          long name\nlonger-id  x\n"
        );
    }
}
