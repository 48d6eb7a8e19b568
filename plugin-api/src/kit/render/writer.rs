//! Writes the document model as units of one markup.

use super::{Block, Child, Inline, ListItem};
use crate::kit::format::Markup;
use crate::kit::rendered::{Boundary, Builder, Gap, Rendered, joins_previous};

/// What a piece of text is, for escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Normal,
    Code,
    Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Strong,
    Emphasis,
    Strike,
    Spoiler,
}

/// The rule line where a platform has no `<hr>`.
const RULE: &str = "──────────";

pub(super) fn render(children: &[Child], markup: Markup) -> Rendered {
    let mut w = Writer {
        b: Builder::new(),
        m: markup,
        line_start: true,
        fmts: Vec::new(),
        inline_wrappers: Vec::new(),
        in_link: false,
        in_tg_quote: false,
        tight_item: false,
        glue: false,
    };
    w.blocks(children);
    w.b.finish()
}

struct Writer {
    b: Builder,
    m: Markup,
    /// The next glyph starts a line (Markdown flavours escape `#`, `-`, `+` there).
    line_start: bool,
    /// Inline formats open now: the same one is never nested.
    fmts: Vec<Fmt>,
    /// Inline wrappers open now (open, close), to close and reopen around line breaks in
    /// markups whose markers cannot span lines.
    inline_wrappers: Vec<(String, String)>,
    in_link: bool,
    /// Inside a Telegram `<blockquote>` (which cannot nest).
    in_tg_quote: bool,
    /// Inside an HTML list item without blank lines: paragraphs get no `<p>`.
    tight_item: bool,
    /// The last glyph was a marker (a bullet, `## `) that must not end a part alone.
    glue: bool,
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Link schemes that are shown as links; anything else shows its label only.
fn allowed_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    ["http://", "https://", "mailto:", "tel:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
        && !url.chars().any(char::is_control)
}

/// The plain text of inlines (table cells, labels compared with their URL).
fn plain_of(inlines: &[Inline]) -> String {
    let mut out = String::new();
    for inline in inlines {
        match inline {
            Inline::Text(t) | Inline::Code(t) | Inline::Url(t) => out.push_str(t),
            Inline::Strong(c)
            | Inline::Emphasis(c)
            | Inline::Strikethrough(c)
            | Inline::Spoiler(c)
            | Inline::Link { content: c, .. } => out.push_str(&plain_of(c)),
            Inline::LineBreak => out.push(' '),
        }
    }
    out
}

fn contains_code(children: &[Child]) -> bool {
    children.iter().any(|c| match &c.block {
        Block::Code { .. } | Block::Table { .. } => true,
        Block::Quote(inner) => contains_code(inner),
        Block::List { items, .. } => items.iter().any(|i| contains_code(&i.children)),
        _ => false,
    })
}

/// A run of backticks longer than any inside `code` (Markdown flavours that allow it).
fn fence_for(code: &str, min: usize) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in code.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(min.max(longest + 1))
}

impl Writer {
    fn html_blocks(&self) -> bool {
        matches!(self.m, Markup::MatrixHtml | Markup::EmailHtml)
    }

    /// Markers that cannot span lines: close inline wrappers before a line break.
    fn markers_per_line(&self) -> bool {
        matches!(self.m, Markup::SlackMrkdwn | Markup::WhatsApp)
    }

    fn open_block(&mut self, open: &str, close: &str, prefix: &str) {
        self.b.open(open, close, prefix);
        self.line_start = true;
    }

    /// A separator between blocks, or a line break inside one.
    fn gap(&mut self, gap: Gap) {
        let plain = match gap {
            Gap::Line => format!("\n{}", self.b.plain_prefix()),
            Gap::Paragraph => format!("\n\n{}", self.b.plain_prefix()),
        };
        let markup = if self.html_blocks() {
            String::new()
        } else {
            let prefix = self.b.prefix();
            match gap {
                Gap::Line => format!("\n{prefix}"),
                Gap::Paragraph => format!("\n{}\n{prefix}", prefix.trim_end()),
            }
        };
        self.b.brk(gap, &markup, &plain);
        self.line_start = true;
        self.glue = false;
    }

    fn blocks(&mut self, children: &[Child]) {
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                self.gap(if child.after_blank_line {
                    Gap::Paragraph
                } else {
                    Gap::Line
                });
            }
            self.block(&child.block);
        }
    }

    fn block(&mut self, block: &Block) {
        match block {
            Block::Paragraph(inlines) => {
                if self.html_blocks() && !self.tight_item {
                    self.open_block("<p>", "</p>", "");
                    self.inlines(inlines);
                    self.b.close();
                } else {
                    self.inlines(inlines);
                }
            }
            Block::Heading { level, content } => self.heading(*level, content),
            Block::Code { language, code } => self.code_block(language.as_deref(), code),
            Block::Quote(children) => self.quote(children),
            Block::List { start, items } => self.list(*start, items),
            Block::Table { header, rows } => self.table(header, rows),
            Block::Rule => {
                let markup = if self.html_blocks() { "<hr>" } else { RULE };
                self.b.glyph(markup, RULE, Boundary::Char);
                self.line_start = false;
            }
        }
    }

    fn heading(&mut self, level: u8, content: &[Inline]) {
        if plain_of(content).trim().is_empty() {
            return;
        }
        match self.m {
            Markup::MatrixHtml | Markup::EmailHtml => {
                let level = level.clamp(1, 6);
                self.open_block(&format!("<h{level}>"), &format!("</h{level}>"), "");
                self.inlines(content);
                self.b.close();
            }
            Markup::DiscordMarkdown if level <= 3 => {
                let marker = format!("{} ", "#".repeat(usize::from(level)));
                self.b.glyph(&marker, "", Boundary::Char);
                self.line_start = false;
                self.glue = true;
                self.inlines(content);
            }
            _ => self.styled(Fmt::Strong, content),
        }
    }

    fn code_block(&mut self, language: Option<&str>, code: &str) {
        let lang: String = language
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '#' | '.'))
            .collect();
        let prefix = self.b.prefix();
        let wrapped = match self.m {
            Markup::TelegramHtml | Markup::MatrixHtml | Markup::EmailHtml => {
                if lang.is_empty() {
                    self.open_block("<pre>", "</pre>", "");
                } else {
                    self.open_block(
                        &format!("<pre><code class=\"language-{lang}\">"),
                        "</code></pre>",
                        "",
                    );
                }
                true
            }
            Markup::DiscordMarkdown | Markup::TeamsMarkdown => {
                let fence = fence_for(code, 3);
                self.open_block(
                    &format!("{fence}{lang}\n{prefix}"),
                    &format!("\n{prefix}{fence}"),
                    "",
                );
                true
            }
            Markup::SlackMrkdwn => {
                self.open_block(&format!("```\n{prefix}"), &format!("\n{prefix}```"), "");
                true
            }
            Markup::WhatsApp => {
                self.open_block("```", "```", "");
                true
            }
            Markup::PlainText | Markup::Verbatim => false,
        };
        self.text(code, Ctx::Code);
        if wrapped {
            self.b.close();
        }
        self.line_start = false;
    }

    fn quote(&mut self, children: &[Child]) {
        match self.m {
            Markup::TelegramHtml => {
                if self.in_tg_quote {
                    // Telegram cannot nest quotes: the inner one joins the outer.
                    self.blocks(children);
                } else if contains_code(children) {
                    // Keep `<pre>` out of `<blockquote>`: quote the runs around code.
                    for (i, child) in children.iter().enumerate() {
                        if i > 0 {
                            self.gap(if child.after_blank_line {
                                Gap::Paragraph
                            } else {
                                Gap::Line
                            });
                        }
                        if contains_code(std::slice::from_ref(child)) {
                            self.block(&child.block);
                        } else {
                            self.tg_quoted(std::slice::from_ref(child));
                        }
                    }
                } else {
                    self.tg_quoted(children);
                }
            }
            Markup::MatrixHtml | Markup::EmailHtml => {
                self.open_block("<blockquote>", "</blockquote>", "");
                let tight = std::mem::replace(&mut self.tight_item, false);
                self.blocks(children);
                self.tight_item = tight;
                self.b.close();
            }
            _ => {
                self.open_block("> ", "", "> ");
                self.blocks(children);
                self.b.close();
            }
        }
    }

    fn tg_quoted(&mut self, children: &[Child]) {
        self.open_block("<blockquote>", "</blockquote>", "");
        self.in_tg_quote = true;
        self.blocks(children);
        self.in_tg_quote = false;
        self.b.close();
    }

    fn list(&mut self, start: Option<u64>, items: &[ListItem]) {
        let html = self.html_blocks();
        if html {
            match start {
                Some(1) => self.open_block("<ol>", "</ol>", ""),
                Some(n) => self.open_block(&format!("<ol start=\"{n}\">"), "</ol>", ""),
                None => self.open_block("<ul>", "</ul>", ""),
            }
        }
        for (i, item) in items.iter().enumerate() {
            let number = start.map(|n| n.saturating_add(i as u64));
            if i > 0 {
                self.gap(if item.after_blank_line {
                    Gap::Paragraph
                } else {
                    Gap::Line
                });
            }
            let plain_bullet = match (item.task, number) {
                (Some(true), _) => "☑ ".to_owned(),
                (Some(false), _) => "☐ ".to_owned(),
                (None, Some(n)) => format!("{n}. "),
                (None, None) => "• ".to_owned(),
            };
            let bullet = match self.m {
                Markup::DiscordMarkdown | Markup::TeamsMarkdown
                    if number.is_none() && item.task.is_none() =>
                {
                    "- ".to_owned()
                }
                Markup::MatrixHtml | Markup::EmailHtml if item.task.is_none() => String::new(),
                _ => plain_bullet.clone(),
            };
            let indent = " ".repeat(plain_bullet.chars().count());
            if html {
                if let Some(n) = number {
                    // A part cut inside this list reopens it at this item's number.
                    self.b.retag(&format!("<ol start=\"{n}\">"));
                }
                self.open_block("<li>", "</li>", "");
            } else {
                self.open_block("", "", &indent);
            }
            self.b.indent_plain(&indent);
            self.b.glyph(&bullet, &plain_bullet, Boundary::Char);
            self.line_start = true;
            self.glue = true;
            let children: Vec<Child> = item
                .children
                .iter()
                .enumerate()
                .map(|(k, c)| Child {
                    block: c.block.clone(),
                    after_blank_line: k > 0 && c.after_blank_line,
                })
                .collect();
            let tight = std::mem::replace(
                &mut self.tight_item,
                html && !children.iter().any(|c| c.after_blank_line),
            );
            self.blocks(&children);
            self.tight_item = tight;
            self.b.close();
        }
        if html {
            self.b.close();
        }
    }

    fn table(&mut self, header: &[Vec<Inline>], rows: &[Vec<Vec<Inline>>]) {
        if self.html_blocks() {
            self.open_block("<table>", "</table>", "");
            self.open_block("<thead>", "</thead>", "");
            self.html_row(header, "th");
            self.b.close();
            self.open_block("<tbody>", "</tbody>", "");
            for row in rows {
                self.gap(Gap::Line);
                self.html_row(row, "td");
            }
            self.b.close();
            self.b.close();
            return;
        }
        // Aligned monospace text: the one table every chat client shows the same.
        let columns = std::iter::once(header.len())
            .chain(rows.iter().map(Vec::len))
            .max()
            .unwrap_or(0);
        let cells = |row: &[Vec<Inline>]| -> Vec<String> {
            (0..columns)
                .map(|i| row.get(i).map(|c| plain_of(c)).unwrap_or_default())
                .collect()
        };
        let head = cells(header);
        let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r)).collect();
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&head).chain(body.iter()) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |row: &[String]| -> String {
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_owned()
        };
        let rule = widths
            .iter()
            .map(|w| "-".repeat((*w).max(1)))
            .collect::<Vec<_>>()
            .join("-+-");
        let mut grid = vec![line(&head), rule];
        grid.extend(body.iter().map(|r| line(r)));
        self.code_block(None, &grid.join("\n"));
    }

    fn html_row(&mut self, cells: &[Vec<Inline>], tag: &str) {
        self.open_block("<tr>", "</tr>", "");
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                // Columns apart in the plain text too.
                self.b.glyph("", " | ", Boundary::Char);
            }
            self.open_block(&format!("<{tag}>"), &format!("</{tag}>"), "");
            self.inlines(cell);
            self.b.close();
        }
        self.b.close();
    }

    // -----------------------------------------------------------------------------------------
    // Inlines
    // -----------------------------------------------------------------------------------------

    fn inlines(&mut self, inlines: &[Inline]) {
        for inline in inlines {
            match inline {
                Inline::Text(t) => self.text(t, Ctx::Normal),
                Inline::Code(c) => self.inline_code(c),
                Inline::Strong(c) => self.styled(Fmt::Strong, c),
                Inline::Emphasis(c) => self.styled(Fmt::Emphasis, c),
                Inline::Strikethrough(c) => self.styled(Fmt::Strike, c),
                Inline::Spoiler(c) => self.styled(Fmt::Spoiler, c),
                Inline::Link { url, content } => self.link(url, content),
                Inline::Url(url) => self.bare_url(url),
                Inline::LineBreak => self.line_break(),
            }
        }
    }

    fn pair(&self, fmt: Fmt) -> Option<(&'static str, &'static str)> {
        use Markup::*;
        Some(match (fmt, self.m) {
            (Fmt::Strong, TelegramHtml) => ("<b>", "</b>"),
            (Fmt::Strong, MatrixHtml | EmailHtml) => ("<strong>", "</strong>"),
            (Fmt::Strong, SlackMrkdwn | WhatsApp) => ("*", "*"),
            (Fmt::Strong, DiscordMarkdown | TeamsMarkdown) => ("**", "**"),
            (Fmt::Emphasis, TelegramHtml) => ("<i>", "</i>"),
            (Fmt::Emphasis, MatrixHtml | EmailHtml) => ("<em>", "</em>"),
            (Fmt::Emphasis, SlackMrkdwn | WhatsApp) => ("_", "_"),
            (Fmt::Emphasis, DiscordMarkdown | TeamsMarkdown) => ("*", "*"),
            (Fmt::Strike, TelegramHtml | EmailHtml) => ("<s>", "</s>"),
            (Fmt::Strike, MatrixHtml) => ("<del>", "</del>"),
            (Fmt::Strike, SlackMrkdwn | WhatsApp) => ("~", "~"),
            (Fmt::Strike, DiscordMarkdown | TeamsMarkdown) => ("~~", "~~"),
            (Fmt::Spoiler, TelegramHtml) => ("<tg-spoiler>", "</tg-spoiler>"),
            (Fmt::Spoiler, MatrixHtml) => ("<span data-mx-spoiler>", "</span>"),
            (Fmt::Spoiler, DiscordMarkdown) => ("||", "||"),
            _ => return None,
        })
    }

    fn open_inline(&mut self, open: &str, close: &str) {
        // Right after a bullet or heading marker, a cut here would strand the marker.
        let boundary = if self.glue {
            Boundary::Avoid
        } else {
            Boundary::Char
        };
        self.b.open_at(open, close, "", boundary);
        self.inline_wrappers
            .push((open.to_owned(), close.to_owned()));
    }

    fn close_inline(&mut self) {
        self.inline_wrappers.pop();
        self.b.close();
    }

    fn styled(&mut self, fmt: Fmt, content: &[Inline]) {
        // Slack shows link labels as plain text; a format never nests in itself.
        let plain_label = self.in_link && self.m == Markup::SlackMrkdwn;
        match self.pair(fmt) {
            Some((open, close)) if !self.fmts.contains(&fmt) && !plain_label => {
                self.open_inline(open, close);
                self.fmts.push(fmt);
                self.inlines(content);
                self.fmts.pop();
                self.close_inline();
            }
            _ => self.inlines(content),
        }
    }

    fn inline_code(&mut self, code: &str) {
        let (open, close) = match self.m {
            Markup::TelegramHtml if self.in_link => (String::new(), String::new()),
            Markup::TelegramHtml | Markup::MatrixHtml | Markup::EmailHtml => {
                ("<code>".to_owned(), "</code>".to_owned())
            }
            Markup::SlackMrkdwn if self.in_link => (String::new(), String::new()),
            Markup::SlackMrkdwn | Markup::WhatsApp => ("`".to_owned(), "`".to_owned()),
            Markup::DiscordMarkdown | Markup::TeamsMarkdown => {
                let fence = fence_for(code, 1);
                // A space keeps a backtick at either end apart from the fence.
                let pad = if code.starts_with('`') || code.ends_with('`') {
                    " "
                } else {
                    ""
                };
                (format!("{fence}{pad}"), format!("{pad}{fence}"))
            }
            Markup::PlainText | Markup::Verbatim => (String::new(), String::new()),
        };
        if open.is_empty() {
            self.text(code, Ctx::Normal);
            return;
        }
        self.open_inline(&open, &close);
        self.text(code, Ctx::Code);
        self.close_inline();
    }

    fn link(&mut self, url: &str, content: &[Inline]) {
        let label = plain_of(content);
        if !allowed_url(url) || self.in_link {
            self.inlines(content);
            return;
        }
        let same = label.trim() == url.trim() || label.is_empty();
        match self.m {
            Markup::TelegramHtml | Markup::MatrixHtml | Markup::EmailHtml => {
                self.open_inline(&format!("<a href=\"{}\">", html_escape(url)), "</a>");
                self.in_link = true;
                if label.is_empty() {
                    self.text(url, Ctx::Url);
                } else {
                    self.inlines(content);
                }
                self.in_link = false;
                self.close_inline();
            }
            Markup::SlackMrkdwn => {
                let target = slack_url(url);
                if same {
                    self.slack_link(url);
                } else {
                    self.open_inline(&format!("<{target}|"), ">");
                    self.in_link = true;
                    self.inlines(content);
                    self.in_link = false;
                    self.close_inline();
                }
            }
            Markup::DiscordMarkdown | Markup::TeamsMarkdown => {
                if same {
                    self.text(url, Ctx::Url);
                } else {
                    let target = url
                        .replace(' ', "%20")
                        .replace('(', "%28")
                        .replace(')', "%29");
                    self.open_inline("[", &format!("]({target})"));
                    self.in_link = true;
                    self.inlines(content);
                    self.in_link = false;
                    self.close_inline();
                }
            }
            Markup::WhatsApp | Markup::PlainText | Markup::Verbatim => {
                if same {
                    self.text(url, Ctx::Url);
                } else {
                    self.inlines(content);
                    self.b.space(" ", " ");
                    self.text("(", Ctx::Normal);
                    self.text(url, Ctx::Url);
                    self.text(")", Ctx::Normal);
                }
            }
        }
    }

    fn bare_url(&mut self, url: &str) {
        match self.m {
            Markup::SlackMrkdwn if !self.in_link => self.slack_link(url),
            _ => self.text(url, Ctx::Url),
        }
    }

    /// A URL in Slack's `<…>`, one glyph per character (cut only as a last resort), the
    /// brackets riding on the first and last.
    fn slack_link(&mut self, url: &str) {
        let count = url.chars().count();
        for (k, (i, c)) in url.char_indices().enumerate() {
            let mut markup = String::new();
            if k == 0 {
                markup.push('<');
            }
            markup.push_str(&slack_url(&url[i..i + c.len_utf8()]));
            if k + 1 == count {
                markup.push('>');
            }
            let boundary = if k == 0 && !std::mem::take(&mut self.glue) {
                Boundary::Char
            } else {
                Boundary::Avoid
            };
            self.b.glyph(&markup, &url[i..i + c.len_utf8()], boundary);
        }
        self.line_start = false;
    }

    fn line_break(&mut self) {
        if self.html_blocks() {
            let plain = format!("\n{}", self.b.plain_prefix());
            self.b.brk(Gap::Line, "<br>", &plain);
            self.line_start = true;
            return;
        }
        if self.markers_per_line() && !self.inline_wrappers.is_empty() {
            let open = std::mem::take(&mut self.inline_wrappers);
            for _ in &open {
                self.b.close();
            }
            self.gap(Gap::Line);
            for (o, c) in &open {
                self.b.open(o, c, "");
            }
            self.inline_wrappers = open;
            return;
        }
        self.gap(Gap::Line);
    }

    /// Text, escaped for the markup; spaces and newlines become break opportunities.
    fn text(&mut self, text: &str, ctx: Ctx) {
        let mut prev: Option<char> = None;
        let mut after_space = false;
        let mut ticks = 0;
        for (i, c) in text.char_indices() {
            if c == '\n' {
                if ctx == Ctx::Code {
                    let plain = format!("\n{}", self.b.plain_prefix());
                    if self.html_blocks() || self.m == Markup::TelegramHtml {
                        self.b.brk(Gap::Line, "\n", &plain);
                    } else {
                        self.b
                            .brk(Gap::Line, &format!("\n{}", self.b.prefix()), &plain);
                    }
                    self.line_start = true;
                } else {
                    self.line_break();
                }
                prev = Some(c);
                after_space = false;
                ticks = 0;
                continue;
            }
            if c == ' ' && ctx == Ctx::Normal {
                self.b.space(" ", " ");
                ticks = 0;
                prev = Some(c);
                self.line_start = false;
                continue;
            }
            let plain = &text[i..i + c.len_utf8()];
            ticks = if c == '`' { ticks + 1 } else { 0 };
            let escaped = if ticks == 3 && self.markers_per_line() {
                // Slack and WhatsApp cannot escape a fence: a zero-width space breaks it.
                ticks = 1;
                Some("\u{200B}`".to_owned())
            } else {
                self.escape(c, ctx)
            };
            let boundary = if (ctx == Ctx::Url && i > 0)
                || joins_previous(prev, c)
                || std::mem::take(&mut self.glue)
            {
                Boundary::Avoid
            } else if after_space {
                Boundary::Word
            } else {
                Boundary::Char
            };
            match escaped {
                Some(markup) => self.b.glyph(&markup, plain, boundary),
                None => self.b.glyph(plain, plain, boundary),
            }
            after_space = c == ' ';
            prev = Some(c);
            self.line_start = false;
        }
    }

    /// The markup for `c`, or `None` when it stands for itself.
    fn escape(&self, c: char, ctx: Ctx) -> Option<String> {
        match self.m {
            Markup::TelegramHtml | Markup::MatrixHtml | Markup::EmailHtml => match c {
                '&' => Some("&amp;".into()),
                '<' => Some("&lt;".into()),
                '>' => Some("&gt;".into()),
                '"' => Some("&quot;".into()),
                _ => None,
            },
            Markup::SlackMrkdwn => match c {
                '&' => Some("&amp;".into()),
                '<' => Some("&lt;".into()),
                '>' => Some("&gt;".into()),
                _ => None,
            },
            Markup::DiscordMarkdown | Markup::TeamsMarkdown if ctx == Ctx::Normal => {
                let always = matches!(
                    c,
                    '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' | '>'
                );
                let at_start = self.line_start && matches!(c, '#' | '-' | '+');
                (always || at_start).then(|| format!("\\{c}"))
            }
            _ => None,
        }
    }
}

/// A URL inside Slack's `<…>`: `|` and angle brackets would end it early.
fn slack_url(url: &str) -> String {
    url.replace('&', "&amp;")
        .replace('|', "%7C")
        .replace('<', "%3C")
        .replace('>', "%3E")
}
