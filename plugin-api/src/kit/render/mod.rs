//! The agent's Markdown, parsed once, rendered per platform (feature `kit-render`).
//!
//! ```
//! use nanoclaw_plugin_api::kit::render::Document;
//! use nanoclaw_plugin_api::kit::{LengthUnit, Markup, TextLimit};
//!
//! let doc = Document::parse("**Done.** See `a < b` and [the docs](https://example.org).");
//! let html = doc.render(Markup::TelegramHtml);
//! assert_eq!(
//!     html.text(),
//!     "<b>Done.</b> See <code>a &lt; b</code> and <a href=\"https://example.org\">the docs</a>."
//! );
//! assert_eq!(doc.render(Markup::SlackMrkdwn).text(),
//!     "*Done.* See `a &lt; b` and <https://example.org|the docs>.");
//! // Split after rendering, in the platform's unit:
//! let parts = html.split(TextLimit::new(4096, LengthUnit::Utf16));
//! assert_eq!(parts.len(), 1);
//! ```
//!
//! [`Document::parse`] reads CommonMark with GitHub's tables, strikethrough and task lists,
//! plus `||spoilers||`, into a small model ([`Block`], [`Inline`]). Raw HTML in the Markdown
//! is text, not markup. [`Document::render`] writes it in a [`Markup`], degrading what the
//! platform lacks: headings become bold lines (or real headings where supported), lists get
//! `•` or numbers, tables become aligned monospace text (HTML tables in Matrix and email),
//! rules a line of `─`, images a link to the image, links without markup `label (url)`.
//! Links with a scheme other than http, https, mailto or tel are shown as their label only.
//! Blocks are separated the way the source separated them (a blank line or a line break),
//! because agents write for chat.
//!
//! The result is a [`Rendered`]: send it whole, or [`split`](Rendered::split) it within the
//! platform's limit.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use super::format::Markup;
use super::rendered::{Rendered, url_len};

mod writer;

#[cfg(test)]
mod tests;

/// A parsed Markdown message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    source: String,
    children: Vec<Child>,
}

/// A block and how the source separated it from the block before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The block.
    pub block: Block,
    /// A blank line came before it (a paragraph gap rather than a line break).
    pub after_blank_line: bool,
}

/// Block-level elements.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Block {
    /// Text.
    Paragraph(Vec<Inline>),
    /// `#` … `######`.
    Heading {
        /// 1 to 6.
        level: u8,
        /// The heading text.
        content: Vec<Inline>,
    },
    /// A fenced or indented code block.
    Code {
        /// The first word of the fence's info string (`rust`), if any.
        language: Option<String>,
        /// The code, without its final newline.
        code: String,
    },
    /// `> quote`.
    Quote(Vec<Child>),
    /// A bulleted (`start` = `None`) or numbered list.
    List {
        /// The number of the first item of a numbered list.
        start: Option<u64>,
        /// The items.
        items: Vec<ListItem>,
    },
    /// A GitHub table.
    Table {
        /// Header cells.
        header: Vec<Vec<Inline>>,
        /// Body rows of cells.
        rows: Vec<Vec<Vec<Inline>>>,
    },
    /// `---`.
    Rule,
}

/// One item of a [`Block::List`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListItem {
    /// `- [ ]` (false) or `- [x]` (true) task items.
    pub task: Option<bool>,
    /// The item's content.
    pub children: Vec<Child>,
    /// A blank line came before it (a loose list).
    pub after_blank_line: bool,
}

/// Inline elements.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inline {
    /// Text (raw HTML in the source is text too).
    Text(String),
    /// `` `code` ``.
    Code(String),
    /// `**strong**`.
    Strong(Vec<Inline>),
    /// `*emphasis*`.
    Emphasis(Vec<Inline>),
    /// `~~strikethrough~~`.
    Strikethrough(Vec<Inline>),
    /// `||spoiler||`.
    Spoiler(Vec<Inline>),
    /// `[label](url)`, `<url>`, and images (`![alt](url)`, shown as a link).
    Link {
        /// The destination.
        url: String,
        /// The label.
        content: Vec<Inline>,
    },
    /// A bare `http(s)://` URL in the text.
    Url(String),
    /// A line break (hard or soft: chat text keeps the author's lines).
    LineBreak,
}

impl Document {
    /// Parses `markdown`. Never fails: anything that is not markup is text.
    pub fn parse(markdown: &str) -> Self {
        let options =
            Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
        let events: Vec<(Event<'_>, std::ops::Range<usize>)> = Parser::new_ext(markdown, options)
            .into_offset_iter()
            .collect();
        let mut reader = Reader {
            source: markdown,
            newlines: markdown.match_indices('\n').map(|(i, _)| i).collect(),
            events,
            at: 0,
            task: None,
        };
        let children = reader.blocks(None);
        Self {
            source: markdown.to_owned(),
            children,
        }
    }

    /// The top-level blocks.
    pub fn children(&self) -> &[Child] {
        &self.children
    }

    /// The Markdown it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders in `markup` ([`Markup::Verbatim`] gives the source back, trimmed).
    pub fn render(&self, markup: Markup) -> Rendered {
        match markup {
            Markup::Verbatim => Rendered::verbatim(&self.source),
            _ => writer::render(&self.children, markup),
        }
    }
}

/// Parses `markdown` and renders it in `markup`.
pub fn render_markdown(markdown: &str, markup: Markup) -> Rendered {
    match markup {
        Markup::Verbatim => Rendered::verbatim(markdown),
        _ => Document::parse(markdown).render(markup),
    }
}

/// Turns pulldown-cmark's events into the model.
struct Reader<'a> {
    source: &'a str,
    /// Byte offsets of the source's newlines (to tell blank-line gaps from line breaks).
    newlines: Vec<usize>,
    events: Vec<(Event<'a>, std::ops::Range<usize>)>,
    at: usize,
    /// The task marker of the list item being read.
    task: Option<bool>,
}

fn is_inline_start(event: &Event<'_>) -> bool {
    match event {
        Event::Start(tag) => matches!(
            tag,
            Tag::Emphasis
                | Tag::Strong
                | Tag::Strikethrough
                | Tag::Superscript
                | Tag::Subscript
                | Tag::Link { .. }
                | Tag::Image { .. }
        ),
        Event::Text(_)
        | Event::Code(_)
        | Event::InlineMath(_)
        | Event::Html(_)
        | Event::InlineHtml(_)
        | Event::FootnoteReference(_)
        | Event::SoftBreak
        | Event::HardBreak
        | Event::TaskListMarker(_) => true,
        _ => false,
    }
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<(Event<'a>, std::ops::Range<usize>)> {
        let item = self.events.get(self.at).cloned();
        self.at += 1;
        item
    }

    fn peek(&self) -> Option<&Event<'a>> {
        self.events.get(self.at).map(|(e, _)| e)
    }

    fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset)
    }

    /// True when a blank line (or a quote's empty `>` line) lies between the end of the
    /// previous block and `start`.
    fn blank_between(&self, prev_end: usize, start: usize) -> bool {
        if prev_end == 0 || start <= prev_end {
            return false;
        }
        // The line holding the previous block's last character (its newline, if any).
        let last = self.line_of(prev_end - 1);
        let next = self.line_of(start);
        next >= last + 2
    }

    /// Reads blocks until the end of the container `end` (`None`: the document).
    fn blocks(&mut self, end: Option<&TagEnd>) -> Vec<Child> {
        let mut children: Vec<Child> = Vec::new();
        let mut prev_end: Option<usize> = None;
        loop {
            let Some(event) = self.peek() else {
                return children;
            };
            if let (Event::End(tag), Some(want)) = (event, end)
                && tag == want
            {
                self.at += 1;
                return children;
            }
            if matches!(event, Event::End(_)) {
                // An end we did not open (should not happen): skip it.
                self.at += 1;
                continue;
            }
            let start = self.events[self.at].1.start;
            let (block, block_end) = if is_inline_start(event) {
                let (inlines, last) = self.inlines_until_block();
                (Some(Block::Paragraph(inlines)), last)
            } else {
                self.block()
            };
            if let Some(block) = block {
                let after_blank_line = prev_end.is_some_and(|p| self.blank_between(p, start));
                children.push(Child {
                    block,
                    after_blank_line,
                });
                // A block's source range may take in the blank lines after it (lists do):
                // its end is its last visible character.
                let content = self
                    .source
                    .get(start..block_end.max(start))
                    .unwrap_or_default()
                    .trim_end();
                prev_end = Some(start + content.len());
            }
        }
    }

    /// Inline events directly inside a container (tight list items): an implicit paragraph.
    fn inlines_until_block(&mut self) -> (Vec<Inline>, usize) {
        let mut out = Vec::new();
        let mut last = 0;
        while let Some(event) = self.peek() {
            if !is_inline_start(event) {
                break;
            }
            let Some((event, range)) = self.next() else {
                break;
            };
            last = range.end;
            self.inline(event, &mut out);
        }
        (finish_inlines(out, true), last)
    }

    /// Reads one block starting at the current event; returns it (if it is one we keep) and
    /// where it ended in the source.
    fn block(&mut self) -> (Option<Block>, usize) {
        let Some((event, range)) = self.next() else {
            return (None, 0);
        };
        let block = match event {
            Event::Start(Tag::Paragraph) => {
                Block::Paragraph(self.inlines(&TagEnd::Paragraph, true))
            }
            Event::Start(Tag::Heading { level, .. }) => Block::Heading {
                level: level as u8,
                content: self.inlines(&TagEnd::Heading(level), true),
            },
            Event::Start(Tag::BlockQuote(kind)) => {
                Block::Quote(self.blocks(Some(&TagEnd::BlockQuote(kind))))
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let language = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split_whitespace()
                        .next()
                        .map(str::to_owned)
                        .filter(|l| !l.is_empty()),
                    CodeBlockKind::Indented => None,
                };
                let mut code = self.raw_text(&TagEnd::CodeBlock);
                if code.ends_with('\n') {
                    code.pop();
                }
                Block::Code { language, code }
            }
            Event::Start(Tag::HtmlBlock) => {
                let html = self.raw_text(&TagEnd::HtmlBlock);
                let text = html.trim_end_matches('\n');
                let mut inlines = Vec::new();
                for (i, line) in text.split('\n').enumerate() {
                    if i > 0 {
                        inlines.push(Inline::LineBreak);
                    }
                    inlines.push(Inline::Text(line.to_owned()));
                }
                Block::Paragraph(finish_inlines(inlines, true))
            }
            Event::Start(Tag::List(start)) => {
                let ordered = start.is_some();
                let mut items = Vec::new();
                let mut prev_end: Option<usize> = None;
                loop {
                    match self.next() {
                        Some((Event::Start(Tag::Item), item)) => {
                            let saved = self.task.take();
                            let children = self.blocks(Some(&TagEnd::Item));
                            let after_blank_line =
                                prev_end.is_some_and(|p| self.blank_between(p, item.start));
                            let end = self.at.saturating_sub(1);
                            prev_end = self.events.get(end).map(|(_, r)| {
                                let text = self.source.get(item.start..r.end).unwrap_or_default();
                                item.start + text.trim_end().len()
                            });
                            items.push(ListItem {
                                task: self.task.take(),
                                children,
                                after_blank_line,
                            });
                            self.task = saved;
                        }
                        Some((Event::End(TagEnd::List(o)), _)) if o == ordered => break,
                        Some(_) => {}
                        None => break,
                    }
                }
                Block::List { start, items }
            }
            Event::Start(Tag::Table(_)) => self.table(),
            Event::Rule => Block::Rule,
            Event::Start(tag) => {
                // Anything else (footnotes, definition lists, metadata are not enabled):
                // keep its text.
                let end = tag.to_end();
                let text = self.raw_text(&end);
                Block::Paragraph(finish_inlines(vec![Inline::Text(text)], true))
            }
            _ => return (None, range.end),
        };
        let end = self
            .events
            .get(self.at.saturating_sub(1))
            .map_or(range.end, |(_, r)| r.end.max(range.start));
        (Some(block), end)
    }

    /// All text until `end` (code blocks, HTML blocks).
    fn raw_text(&mut self, end: &TagEnd) -> String {
        let mut text = String::new();
        let mut depth = 0usize;
        while let Some((event, _)) = self.next() {
            match event {
                Event::End(ref e) if e == end && depth == 0 => break,
                Event::Start(_) => depth += 1,
                Event::End(_) => depth = depth.saturating_sub(1),
                Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) | Event::Code(t) => {
                    text.push_str(&t)
                }
                Event::SoftBreak | Event::HardBreak => text.push('\n'),
                _ => {}
            }
        }
        text
    }

    fn table(&mut self) -> Block {
        let mut header = Vec::new();
        let mut rows = Vec::new();
        let mut row: Vec<Vec<Inline>> = Vec::new();
        while let Some((event, _)) = self.next() {
            match event {
                Event::Start(Tag::TableCell) => row.push(self.inlines(&TagEnd::TableCell, true)),
                Event::End(TagEnd::TableHead) => header = std::mem::take(&mut row),
                Event::End(TagEnd::TableRow) => rows.push(std::mem::take(&mut row)),
                Event::End(TagEnd::Table) => break,
                _ => {}
            }
        }
        Block::Table { header, rows }
    }

    /// Inline content until `end`. `autolink`: find bare URLs in the text (not inside links).
    fn inlines(&mut self, end: &TagEnd, autolink: bool) -> Vec<Inline> {
        let mut out = Vec::new();
        while let Some((event, _)) = self.next() {
            if let Event::End(e) = &event
                && e == end
            {
                break;
            }
            self.inline(event, &mut out);
        }
        finish_inlines(out, autolink)
    }

    fn inline(&mut self, event: Event<'a>, out: &mut Vec<Inline>) {
        match event {
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) | Event::InlineMath(t) => {
                push_text(out, &t)
            }
            Event::FootnoteReference(t) => push_text(out, &format!("[^{t}]")),
            Event::Code(t) => out.push(Inline::Code(t.to_string())),
            Event::SoftBreak | Event::HardBreak => out.push(Inline::LineBreak),
            Event::TaskListMarker(done) => self.task = Some(done),
            Event::Start(Tag::Emphasis) => {
                out.push(Inline::Emphasis(self.inlines(&TagEnd::Emphasis, true)))
            }
            Event::Start(Tag::Strong) => {
                out.push(Inline::Strong(self.inlines(&TagEnd::Strong, true)))
            }
            Event::Start(Tag::Strikethrough) => out.push(Inline::Strikethrough(
                self.inlines(&TagEnd::Strikethrough, true),
            )),
            Event::Start(Tag::Superscript) => out.extend(self.inlines(&TagEnd::Superscript, true)),
            Event::Start(Tag::Subscript) => out.extend(self.inlines(&TagEnd::Subscript, true)),
            Event::Start(Tag::Link { dest_url, .. }) => {
                let content = self.inlines(&TagEnd::Link, false);
                out.push(Inline::Link {
                    url: dest_url.to_string(),
                    content,
                });
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                let mut content = self.inlines(&TagEnd::Image, false);
                if content.is_empty() {
                    content.push(Inline::Text(dest_url.to_string()));
                }
                out.push(Inline::Link {
                    url: dest_url.to_string(),
                    content,
                });
            }
            Event::Start(tag) => {
                let end = tag.to_end();
                out.extend(self.inlines(&end, true));
            }
            _ => {}
        }
    }
}

fn push_text(out: &mut Vec<Inline>, text: &str) {
    if let Some(Inline::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else if !text.is_empty() {
        out.push(Inline::Text(text.to_owned()));
    }
}

/// Bare URLs and `||spoilers||` in a container's text nodes.
fn finish_inlines(inlines: Vec<Inline>, autolink: bool) -> Vec<Inline> {
    let inlines = spoilers(inlines);
    if !autolink {
        return inlines;
    }
    let mut out = Vec::with_capacity(inlines.len());
    for inline in inlines {
        match inline {
            Inline::Text(text) => split_urls(&text, &mut out),
            Inline::Spoiler(content) => out.push(Inline::Spoiler(finish_inlines(content, true))),
            other => out.push(other),
        }
    }
    out
}

fn split_urls(text: &str, out: &mut Vec<Inline>) {
    let mut rest = text;
    let mut i = 0;
    while let Some(c) = rest[i..].chars().next() {
        let after_word = rest[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric);
        if matches!(c, 'h' | 'H')
            && !after_word
            && let Some(len) = url_len(&rest[i..])
        {
            push_text(out, &rest[..i]);
            out.push(Inline::Url(rest[i..i + len].to_owned()));
            rest = &rest[i + len..];
            i = 0;
            continue;
        }
        i += c.len_utf8();
    }
    push_text(out, rest);
}

/// A `||` marker or an inline, while pairing spoilers.
enum Piece {
    Node(Inline),
    Marker,
}

/// Pairs `||` markers in text nodes into [`Inline::Spoiler`]s: an opener is followed by
/// non-space, a closer preceded by non-space (so `a || b` stays text).
fn spoilers(inlines: Vec<Inline>) -> Vec<Inline> {
    let has_marker = inlines
        .iter()
        .any(|i| matches!(i, Inline::Text(t) if t.contains("||")));
    if !has_marker {
        return inlines;
    }
    let mut pieces = Vec::new();
    for inline in inlines {
        match inline {
            Inline::Text(text) => {
                for (i, chunk) in text.split("||").enumerate() {
                    if i > 0 {
                        pieces.push(Piece::Marker);
                    }
                    if !chunk.is_empty() {
                        pieces.push(Piece::Node(Inline::Text(chunk.to_owned())));
                    }
                }
            }
            other => pieces.push(Piece::Node(other)),
        }
    }
    let starts_solid = |p: Option<&Piece>| match p {
        Some(Piece::Node(Inline::Text(t))) => t.chars().next().is_some_and(|c| !c.is_whitespace()),
        Some(Piece::Node(_)) => true,
        _ => false,
    };
    let ends_solid = |p: Option<&Piece>| match p {
        Some(Piece::Node(Inline::Text(t))) => {
            t.chars().next_back().is_some_and(|c| !c.is_whitespace())
        }
        Some(Piece::Node(_)) => true,
        _ => false,
    };
    let mut i = 0;
    while i < pieces.len() {
        if matches!(pieces[i], Piece::Marker) && starts_solid(pieces.get(i + 1)) {
            let closer = (i + 2..pieces.len())
                .find(|&j| matches!(pieces[j], Piece::Marker) && ends_solid(pieces.get(j - 1)));
            if let Some(j) = closer {
                let mut content = Vec::new();
                for piece in pieces.drain(i + 1..j) {
                    match piece {
                        Piece::Node(Inline::Text(t)) => push_text(&mut content, &t),
                        Piece::Node(n) => content.push(n),
                        Piece::Marker => push_text(&mut content, "||"),
                    }
                }
                // The opener is at `i`, the closer now right after it.
                pieces.drain(i..i + 2);
                pieces.insert(i, Piece::Node(Inline::Spoiler(content)));
            }
        }
        i += 1;
    }
    // Unpaired markers are text again.
    let mut out: Vec<Inline> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Node(Inline::Text(t)) => push_text(&mut out, &t),
            Piece::Node(n) => out.push(n),
            Piece::Marker => push_text(&mut out, "||"),
        }
    }
    out
}
