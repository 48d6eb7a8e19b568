//! Rendered text as a stream of units, and splitting it within a platform's limit.
//!
//! A renderer (see [`render`](super::render), or [`Rendered::verbatim`]) emits *units*: glyphs
//! (one character, already escaped for the markup), spaces and line/paragraph breaks (where a
//! message may be cut), and the opening and closing of *wrappers* (a tag pair such as `<b>` …
//! `</b>`, a code fence, a quote's `> ` line prefix). Every unit carries its markup (what is
//! sent) and its plain text (what a reader sees, used for fallbacks such as Telegram's plain
//! re-send, Matrix's `body` or an email's text part).
//!
//! [`Rendered::split`] cuts that stream into [`Part`]s so that, in the platform's
//! [`LengthUnit`]:
//! * each part's markup and plain text are within the limit;
//! * wrappers open at a cut are closed at the end of the part and reopened at the start of
//!   the next (a code block keeps its fence and language), so every part is well formed;
//! * cuts prefer a paragraph break, then a line break, then a space, then any character
//!   boundary, and only as a last resort the inside of a URL or of a character sequence that
//!   draws as one (combining marks, emoji joined with ZWJ); a glyph (an escaped character,
//!   an HTML entity, a surrogate pair) is never cut;
//! * the separator at a cut (the break or space) is dropped, and nothing else: the parts'
//!   plain texts are the whole plain text, in order, minus whitespace at the cuts.

// Wrappers, retags and kept spaces are emitted only by the Markdown renderer.
#![cfg_attr(not(feature = "kit-render"), allow(dead_code))]

use super::format::{LengthUnit, TextLimit};

/// The smallest limit the splitter honours; smaller limits are raised to this (every
/// platform allows far more, and a part must fit a tag pair and a character).
pub const MIN_SPLIT_LIMIT: usize = 32;

/// The ellipsis [`Rendered::truncate`] appends.
pub const ELLIPSIS: &str = "…";

/// One message's worth of rendered text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part {
    /// The markup to send (HTML, mrkdwn, …).
    pub text: String,
    /// The same part as plain text, for fallbacks.
    pub plain: String,
}

/// How good a cut is just before a glyph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boundary {
    /// Any character boundary.
    Char,
    /// After a space that must be kept (inside code).
    Word,
    /// Inside a URL or a cluster that draws as one character: only if nothing else fits.
    Avoid,
}

/// A place where text may break, and how much it separates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gap {
    Line,
    Paragraph,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Opens a wrapper; the boundary says how good a cut just before it is.
    Open(u32, Boundary),
    Close,
    /// From here on, the innermost open wrapper reopens as this wrapper (an ordered list
    /// that must restart at the current item).
    Retag(u32),
    Glyph(Boundary),
    Space,
    Break(Gap),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unit {
    kind: Kind,
    markup: Span,
    plain: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Wrapper {
    open: String,
    close: String,
    /// Written after every line break inside the wrapper (a quote's `> `, a list item's
    /// hanging indent).
    prefix: String,
    /// The same for the plain text (whitespace only: indentation).
    plain_prefix: String,
}

/// Rendered text, ready to be sent whole ([`text`](Self::text)) or in parts
/// ([`split`](Self::split)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    markup: String,
    plain: String,
    units: Vec<Unit>,
    wrappers: Vec<Wrapper>,
}

/// Builds a [`Rendered`]: the renderers' only way to emit output.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    out: Rendered,
    stack: Vec<u32>,
}

fn len_u32(s: &str) -> u32 {
    u32::try_from(s.len()).unwrap_or(u32::MAX)
}

impl Builder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, kind: Kind, markup: &str, plain: &str) {
        let m0 = len_u32(&self.out.markup);
        self.out.markup.push_str(markup);
        let p0 = len_u32(&self.out.plain);
        self.out.plain.push_str(plain);
        self.out.units.push(Unit {
            kind,
            markup: Span {
                start: m0,
                end: len_u32(&self.out.markup),
            },
            plain: Span {
                start: p0,
                end: len_u32(&self.out.plain),
            },
        });
    }

    fn add_wrapper(&mut self, open: &str, close: &str, prefix: &str) -> u32 {
        self.out.wrappers.push(Wrapper {
            open: open.to_owned(),
            close: close.to_owned(),
            prefix: prefix.to_owned(),
            plain_prefix: String::new(),
        });
        u32::try_from(self.out.wrappers.len() - 1).unwrap_or(u32::MAX)
    }

    /// Opens a wrapper: `open` now, `close` when closed (and at a cut), `prefix` after each
    /// line break inside it.
    pub(crate) fn open(&mut self, open: &str, close: &str, prefix: &str) {
        self.open_at(open, close, prefix, Boundary::Char);
    }

    /// [`open`](Self::open), with how good a cut just before it is.
    pub(crate) fn open_at(&mut self, open: &str, close: &str, prefix: &str, boundary: Boundary) {
        let id = self.add_wrapper(open, close, prefix);
        self.stack.push(id);
        self.push(Kind::Open(id, boundary), "", "");
    }

    /// Closes the innermost wrapper.
    pub(crate) fn close(&mut self) {
        if self.stack.pop().is_some() {
            self.push(Kind::Close, "", "");
        }
    }

    /// The innermost wrapper reopens as `open` in later parts (same close and prefix).
    pub(crate) fn retag(&mut self, open: &str) {
        let Some(&top) = self.stack.last() else {
            return;
        };
        let (close, prefix, plain_prefix) = {
            let w = &self.out.wrappers[top as usize];
            (w.close.clone(), w.prefix.clone(), w.plain_prefix.clone())
        };
        let id = self.add_wrapper(open, &close, &prefix);
        self.out.wrappers[id as usize].plain_prefix = plain_prefix;
        if let Some(last) = self.stack.last_mut() {
            *last = id;
        }
        self.push(Kind::Retag(id), "", "");
    }

    /// Indents the plain text of lines after breaks inside the innermost wrapper.
    pub(crate) fn indent_plain(&mut self, indent: &str) {
        if let Some(&top) = self.stack.last() {
            indent.clone_into(&mut self.out.wrappers[top as usize].plain_prefix);
        }
    }

    /// The plain-text indentation of every open wrapper.
    pub(crate) fn plain_prefix(&self) -> String {
        self.stack
            .iter()
            .map(|&id| self.out.wrappers[id as usize].plain_prefix.as_str())
            .collect()
    }

    /// The line prefixes of every open wrapper, outermost first.
    pub(crate) fn prefix(&self) -> String {
        self.stack
            .iter()
            .map(|&id| self.out.wrappers[id as usize].prefix.as_str())
            .collect()
    }

    /// One unsplittable piece of output (a character, an entity, a bullet, `<br>`).
    pub(crate) fn glyph(&mut self, markup: &str, plain: &str, boundary: Boundary) {
        self.push(Kind::Glyph(boundary), markup, plain);
    }

    /// A space where a line may wrap (dropped at a cut).
    pub(crate) fn space(&mut self, markup: &str, plain: &str) {
        self.push(Kind::Space, markup, plain);
    }

    /// A line or paragraph break (dropped at a cut).
    pub(crate) fn brk(&mut self, gap: Gap, markup: &str, plain: &str) {
        self.push(Kind::Break(gap), markup, plain);
    }

    pub(crate) fn finish(mut self) -> Rendered {
        while !self.stack.is_empty() {
            self.close();
        }
        self.out
    }
}

/// Characters drawn together with the one before them: a cut between them is avoided.
pub(crate) fn joins_previous(prev: Option<char>, c: char) -> bool {
    let combining = matches!(c as u32,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F
        // zero-width joiner, variation selectors, skin tones, tag characters
        | 0x200D | 0xFE00..=0xFE0F | 0xE0100..=0xE01EF | 0x1F3FB..=0x1F3FF | 0xE0020..=0xE007F);
    let regional = |ch: char| (0x1F1E6..=0x1F1FF).contains(&(ch as u32));
    combining || prev == Some('\u{200D}') || (regional(c) && prev.is_some_and(regional))
}

/// The byte length of a bare `http://` / `https://` URL at the start of `text`, without
/// trailing punctuation that ends the sentence rather than the URL.
pub(crate) fn url_len(text: &str) -> Option<usize> {
    let starts = |scheme: &str| {
        text.as_bytes()
            .get(..scheme.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(scheme.as_bytes()))
    };
    let scheme = if starts("https://") {
        8
    } else if starts("http://") {
        7
    } else {
        return None;
    };
    let end = text
        .char_indices()
        .find(|&(_, c)| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
        .map_or(text.len(), |(i, _)| i);
    let mut url = &text[..end];
    loop {
        let trimmed = url.trim_end_matches(['.', ',', ':', ';', '!', '?', '\'', '*', '_', '~']);
        let trimmed = match trimmed.strip_suffix(')') {
            // A closing parenthesis belongs to the URL only when it has an opening one.
            Some(inner) if inner.matches('(').count() < trimmed.matches(')').count() => inner,
            _ => trimmed,
        };
        if trimmed.len() == url.len() {
            break;
        }
        url = trimmed;
    }
    (url.len() > scheme).then_some(url.len())
}

/// Emits `text` as plain glyphs, spaces and breaks with no escaping (a URL is kept whole
/// where it can be): the units of [`Rendered::verbatim`].
fn verbatim_into(b: &mut Builder, text: &str) {
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if c == '\n' {
            let run = rest.len() - rest.trim_start_matches('\n').len();
            let gap = if run > 1 { Gap::Paragraph } else { Gap::Line };
            b.brk(gap, &rest[..run], &rest[..run]);
            rest = &rest[run..];
            prev = Some('\n');
            continue;
        }
        if c == ' ' {
            b.space(" ", " ");
            rest = &rest[1..];
            prev = Some(' ');
            continue;
        }
        if let Some(len) = url_len(rest).filter(|_| !prev.is_some_and(char::is_alphanumeric)) {
            for (i, ch) in rest[..len].char_indices() {
                let s = &rest[i..i + ch.len_utf8()];
                let boundary = if i == 0 {
                    Boundary::Char
                } else {
                    Boundary::Avoid
                };
                b.glyph(s, s, boundary);
            }
            prev = rest[..len].chars().last();
            rest = &rest[len..];
            continue;
        }
        let s = &rest[..c.len_utf8()];
        let boundary = if joins_previous(prev, c) {
            Boundary::Avoid
        } else {
            Boundary::Char
        };
        b.glyph(s, s, boundary);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
}

/// Where a part ends and what it leaves out.
struct Cut {
    /// Units `[start, end)` belong to the part.
    end: usize,
    /// The next part starts here (`end`, or `end + 1` when the separator is dropped).
    next: usize,
    /// Per wrapper open at the start: reopened in this part (false when there is no room).
    reopen: Vec<bool>,
    /// Wrappers opened inside the part that are left out for lack of room.
    skipped_opens: Vec<usize>,
}

#[derive(Clone, Copy)]
enum Emit {
    Open(u32),
    Close(u32),
    Unit(usize),
}

impl Rendered {
    /// `text` exactly as given, split only at its own spaces and newlines (for channels that
    /// pass the agent's text through: [`Markup::Verbatim`](super::Markup::Verbatim)).
    pub fn verbatim(text: &str) -> Self {
        let mut b = Builder::new();
        verbatim_into(&mut b, text.trim());
        b.finish()
    }

    /// True when there is nothing to send (only whitespace).
    pub fn is_empty(&self) -> bool {
        !self.units.iter().any(|u| matches!(u.kind, Kind::Glyph(_)))
    }

    /// All of it as one part (`None` when empty).
    pub fn whole(&self) -> Option<Part> {
        let start = self.units.len();
        self.emit(0, start, &[], &[], &[], None)
    }

    /// All of the markup.
    pub fn text(&self) -> String {
        self.whole().map(|p| p.text).unwrap_or_default()
    }

    /// All of the plain text.
    pub fn plain(&self) -> String {
        self.whole().map(|p| p.plain).unwrap_or_default()
    }

    fn markup_of(&self, u: &Unit) -> &str {
        &self.markup[u.markup.start as usize..u.markup.end as usize]
    }

    fn plain_of(&self, u: &Unit) -> &str {
        &self.plain[u.plain.start as usize..u.plain.end as usize]
    }

    fn wrapper(&self, id: u32) -> &Wrapper {
        &self.wrappers[id as usize]
    }

    fn pair_cost(&self, id: u32, unit: LengthUnit) -> usize {
        let w = self.wrapper(id);
        unit.measure(&w.open) + unit.measure(&w.close)
    }

    /// Splits into parts within `limit` (see the module docs). An empty rendering gives no
    /// parts; no limit gives one part.
    pub fn split(&self, limit: TextLimit) -> Vec<Part> {
        if limit.is_unlimited() {
            return self.whole().into_iter().collect();
        }
        self.split_with(limit.max.max(MIN_SPLIT_LIMIT), limit.unit, None)
            .0
    }

    /// The first part within `limit`, with [`ELLIPSIS`] at its end when the text did not
    /// fit whole (for edits, which replace one message). `None` when empty.
    pub fn truncate(&self, limit: TextLimit) -> Option<Part> {
        let whole = self.whole()?;
        if limit.fits(&whole.text) && limit.fits(&whole.plain) {
            return Some(whole);
        }
        let room = limit
            .max
            .max(MIN_SPLIT_LIMIT)
            .saturating_sub(limit.unit.measure(ELLIPSIS));
        let (mut parts, _) = self.split_with(room, limit.unit, Some(1));
        if parts.is_empty() {
            return None;
        }
        Some(parts.swap_remove(0))
    }

    /// The parts, and whether it stopped early at `max_parts` (then the last part carries
    /// the ellipsis).
    fn split_with(
        &self,
        max: usize,
        unit: LengthUnit,
        max_parts: Option<usize>,
    ) -> (Vec<Part>, bool) {
        let mut parts = Vec::new();
        let mut stack: Vec<u32> = Vec::new();
        let mut pos = 0;
        while pos < self.units.len() {
            let cut = self.fit(pos, &stack, max, unit);
            let last =
                max_parts.is_some_and(|n| parts.len() + 1 >= n) && cut.next < self.units.len();
            let suffix = last.then_some(ELLIPSIS);
            if let Some(part) = self.emit(
                pos,
                cut.end,
                &stack,
                &cut.reopen,
                &cut.skipped_opens,
                suffix,
            ) {
                parts.push(part);
            }
            if last {
                return (parts, true);
            }
            self.walk(&mut stack, pos, cut.next);
            pos = cut.next;
        }
        (parts, false)
    }

    /// Applies the wrapper changes of `units[from..to]` to `stack`.
    fn walk(&self, stack: &mut Vec<u32>, from: usize, to: usize) {
        for u in &self.units[from..to] {
            match u.kind {
                Kind::Open(id, _) => stack.push(id),
                Kind::Close => {
                    stack.pop();
                }
                Kind::Retag(id) => {
                    if let Some(top) = stack.last_mut() {
                        *top = id;
                    }
                }
                _ => {}
            }
        }
    }

    /// The cost of the first glyph at or after `from`: room a part must keep for content.
    fn next_glyph_cost(&self, from: usize, unit: LengthUnit) -> usize {
        self.units[from..]
            .iter()
            .find(|u| matches!(u.kind, Kind::Glyph(_)))
            .map_or(0, |u| {
                unit.measure(self.markup_of(u))
                    .max(unit.measure(self.plain_of(u)))
            })
    }

    /// Finds where the part starting at `start` (with `stack` open) must end.
    fn fit(&self, start: usize, stack: &[u32], max: usize, unit: LengthUnit) -> Cut {
        // Reopen what is open, leaving room for at least one glyph; drop the outermost
        // wrappers when there is none (only ever with tiny limits).
        let reserve = self.next_glyph_cost(start, unit);
        let mut reopen = vec![true; stack.len()];
        let mut cost_m: usize = stack.iter().map(|&id| self.pair_cost(id, unit)).sum();
        for (i, &id) in stack.iter().enumerate() {
            if cost_m + reserve <= max {
                break;
            }
            reopen[i] = false;
            cost_m -= self.pair_cost(id, unit);
        }
        let mut cost_p = 0usize;
        let mut has_glyph = false;
        let mut skipped_opens = Vec::new();
        // Best cut before unit j, by preference: paragraph, line, word, char, avoid.
        let mut best: [Option<usize>; 5] = [None; 5];
        for j in start..self.units.len() {
            let u = &self.units[j];
            let (add_m, add_p) = match u.kind {
                Kind::Open(id, boundary) => {
                    if has_glyph {
                        best[if boundary == Boundary::Avoid { 4 } else { 3 }] = Some(j);
                    }
                    let pair = self.pair_cost(id, unit);
                    if !has_glyph && cost_m + pair + self.next_glyph_cost(j, unit) > max {
                        skipped_opens.push(j);
                        continue;
                    }
                    (pair, 0)
                }
                Kind::Close | Kind::Retag(_) => (0, 0),
                Kind::Glyph(boundary) => {
                    if has_glyph {
                        let slot = match boundary {
                            Boundary::Word => 2,
                            Boundary::Char => 3,
                            Boundary::Avoid => 4,
                        };
                        best[slot] = Some(j);
                    }
                    (
                        unit.measure(self.markup_of(u)),
                        unit.measure(self.plain_of(u)),
                    )
                }
                Kind::Space | Kind::Break(_) => {
                    if has_glyph {
                        let slot = match u.kind {
                            Kind::Break(Gap::Paragraph) => 0,
                            Kind::Break(Gap::Line) => 1,
                            _ => 2,
                        };
                        best[slot] = Some(j);
                    }
                    (
                        unit.measure(self.markup_of(u)),
                        unit.measure(self.plain_of(u)),
                    )
                }
            };
            if cost_m + add_m > max || cost_p + add_p > max {
                let Some(end) = best.iter().flatten().next().copied() else {
                    // Not even one glyph fits: take it anyway rather than loop (cannot
                    // happen at MIN_SPLIT_LIMIT or above).
                    return Cut {
                        end: j + 1,
                        next: j + 1,
                        reopen,
                        skipped_opens,
                    };
                };
                let dropped = matches!(self.units[end].kind, Kind::Space | Kind::Break(_));
                return Cut {
                    end,
                    next: if dropped { end + 1 } else { end },
                    reopen,
                    skipped_opens,
                };
            }
            cost_m += add_m;
            cost_p += add_p;
            if matches!(u.kind, Kind::Glyph(_)) {
                has_glyph = true;
            }
        }
        Cut {
            end: self.units.len(),
            next: self.units.len(),
            reopen,
            skipped_opens,
        }
    }

    /// Writes units `[start, end)` as one part: open wrappers reopened first, closed last,
    /// `suffix` before the closes; whitespace at either end and wrappers with nothing
    /// inside left out. `None` when the part would have no glyph.
    fn emit(
        &self,
        start: usize,
        end: usize,
        stack: &[u32],
        reopen: &[bool],
        skipped_opens: &[usize],
        suffix: Option<&str>,
    ) -> Option<Part> {
        let mut items: Vec<Emit> = Vec::with_capacity(end - start + 2 * stack.len());
        let mut frames: Vec<(u32, bool)> = Vec::with_capacity(stack.len() + 4);
        for (i, &id) in stack.iter().enumerate() {
            let active = reopen.get(i).copied().unwrap_or(true);
            frames.push((id, active));
            if active {
                items.push(Emit::Open(id));
            }
        }
        for j in start..end {
            match self.units[j].kind {
                Kind::Open(id, _) => {
                    let active = !skipped_opens.contains(&j);
                    frames.push((id, active));
                    if active {
                        items.push(Emit::Open(id));
                    }
                }
                Kind::Close => {
                    if let Some((id, true)) = frames.pop() {
                        items.push(Emit::Close(id));
                    }
                }
                Kind::Retag(id) => {
                    if let Some(top) = frames.last_mut() {
                        top.0 = id;
                    }
                }
                _ => items.push(Emit::Unit(j)),
            }
        }
        let is_glyph =
            |e: &Emit| matches!(e, Emit::Unit(j) if matches!(self.units[*j].kind, Kind::Glyph(_)));
        // A part of whitespace alone (spaces kept inside code) is no message.
        let visible = items.iter().any(|e| match e {
            Emit::Unit(j) => {
                let u = &self.units[*j];
                matches!(u.kind, Kind::Glyph(_))
                    && (self.plain_of(u).chars().any(|c| !c.is_whitespace())
                        || self.markup_of(u).chars().any(|c| !c.is_whitespace()))
            }
            _ => false,
        });
        if !visible {
            return None;
        }
        let first_glyph = items.iter().position(is_glyph)?;
        let last_glyph = items.iter().rposition(is_glyph).unwrap_or(first_glyph);
        let mut keep = vec![true; items.len()];
        for (i, item) in items.iter().enumerate() {
            if (i < first_glyph || i > last_glyph) && matches!(item, Emit::Unit(_)) {
                keep[i] = false;
            }
        }
        let suffix_at = items.len();
        for (id, active) in frames.into_iter().rev() {
            if active {
                items.push(Emit::Close(id));
                keep.push(true);
            }
        }
        // Tag pairs around nothing visible go (they would show as literal markers in
        // Markdown flavours, and as empty elements in HTML).
        let mut open_at: Vec<(usize, bool)> = Vec::new();
        for i in 0..items.len() {
            match items[i] {
                Emit::Open(_) => open_at.push((i, false)),
                Emit::Close(_) => {
                    if let Some((o, seen)) = open_at.pop() {
                        if !seen {
                            keep[o] = false;
                            keep[i] = false;
                        } else if let Some(parent) = open_at.last_mut() {
                            parent.1 = true;
                        }
                    }
                }
                Emit::Unit(_) => {
                    if keep[i]
                        && is_glyph(&items[i])
                        && let Some(top) = open_at.last_mut()
                    {
                        top.1 = true;
                    }
                }
            }
        }
        // A parent that saw a child with content has content too.
        let mut part = Part::default();
        for (i, item) in items.iter().enumerate() {
            if i == suffix_at
                && let Some(s) = suffix
            {
                part.text.push_str(s);
                part.plain.push_str(s);
            }
            if !keep[i] {
                continue;
            }
            match *item {
                Emit::Open(id) => part.text.push_str(&self.wrapper(id).open),
                Emit::Close(id) => part.text.push_str(&self.wrapper(id).close),
                Emit::Unit(j) => {
                    let u = &self.units[j];
                    part.text.push_str(self.markup_of(u));
                    part.plain.push_str(self.plain_of(u));
                }
            }
        }
        if suffix_at == items.len()
            && let Some(s) = suffix
        {
            part.text.push_str(s);
            part.plain.push_str(s);
        }
        Some(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::format::LengthUnit::{Bytes, Chars, Utf16};

    fn parts(r: &Rendered, max: usize, unit: LengthUnit) -> Vec<String> {
        r.split(TextLimit::new(max, unit))
            .into_iter()
            .map(|p| p.text)
            .collect()
    }

    #[test]
    fn verbatim_prefers_paragraphs_lines_then_words() {
        let para = format!("{}\n\n{}", "a".repeat(20), "b ".repeat(20));
        let r = Rendered::verbatim(&para);
        assert_eq!(
            parts(&r, 40, Chars),
            ["a".repeat(20), "b ".repeat(20).trim_end().to_owned()]
        );
        let lines = format!("{} {}\n{}", "a".repeat(15), "b".repeat(15), "c".repeat(15));
        assert_eq!(
            parts(&Rendered::verbatim(&lines), 33, Chars),
            [
                format!("{} {}", "a".repeat(15), "b".repeat(15)),
                "c".repeat(15)
            ]
        );
        let words = "word ".repeat(20);
        for p in parts(&Rendered::verbatim(&words), 32, Chars) {
            assert!(
                p.len() <= 32 && !p.starts_with(' ') && !p.ends_with(' '),
                "{p:?}"
            );
            assert!(p.split(' ').all(|w| w == "word"), "{p:?}");
        }
        assert!(
            Rendered::verbatim(" \n\n ")
                .split(TextLimit::new(40, Chars))
                .is_empty()
        );
        assert_eq!(
            parts(&Rendered::verbatim("all of it"), 0, Chars),
            ["all of it"]
        );
    }

    #[test]
    fn urls_and_clusters_are_kept_whole_where_possible() {
        let url = "https://example.org/a/very/long/path?with=query&and=more";
        let text = format!("see{url} and {url}.");
        let r = Rendered::verbatim(&text);
        let split = parts(&r, 64, Chars);
        assert!(
            split.iter().any(|p| p.ends_with(url) || p.contains(url)),
            "{split:?}"
        );
        assert_eq!(
            url_len("https://x.y/(a)b)."),
            Some("https://x.y/(a)b".len())
        );
        assert_eq!(url_len("http://x.y/a)"), Some("http://x.y/a".len()));
        assert_eq!(url_len("https://"), None);
        // Family emoji (ZWJ sequence) and a flag: never cut inside when a space is near.
        let family = "👨\u{200D}👩\u{200D}👧";
        let text = format!("{} {family}🇫🇷", "x".repeat(20));
        for p in parts(&Rendered::verbatim(&text), 32, Utf16) {
            assert!(
                !p.starts_with('\u{200D}') && !p.ends_with('\u{200D}'),
                "{p:?}"
            );
        }
    }

    #[test]
    fn surrogate_pairs_and_bytes_are_counted_per_unit() {
        let text = "🙂".repeat(40);
        for p in parts(&Rendered::verbatim(&text), 33, Utf16) {
            assert!(p.encode_utf16().count() <= 33);
        }
        for p in parts(&Rendered::verbatim(&"é".repeat(40)), 33, Bytes) {
            assert!(p.len() <= 33);
        }
    }

    #[test]
    fn wrappers_close_and_reopen_at_cuts() {
        let mut b = Builder::new();
        b.open("<b>", "</b>", "");
        for (i, w) in ["alpha", "beta", "gamma", "delta", "epsilon"]
            .iter()
            .enumerate()
        {
            if i > 0 {
                b.space(" ", " ");
            }
            for c in w.chars() {
                let s = c.to_string();
                b.glyph(&s, &s, Boundary::Char);
            }
        }
        b.close();
        let r = b.finish();
        assert_eq!(r.text(), "<b>alpha beta gamma delta epsilon</b>");
        assert_eq!(
            parts(&r, 32, Chars),
            ["<b>alpha beta gamma delta</b>", "<b>epsilon</b>"]
        );
        let t = r.truncate(TextLimit::new(32, Chars)).expect("one part");
        assert_eq!(t.text, "<b>alpha beta gamma delta…</b>");
        assert_eq!(t.plain, "alpha beta gamma delta…");
    }

    #[test]
    fn empty_wrappers_are_left_out() {
        let mut b = Builder::new();
        for c in "x".repeat(30).chars() {
            let s = c.to_string();
            b.glyph(&s, &s, Boundary::Char);
        }
        b.space(" ", " ");
        b.open("**", "**", "");
        b.open("_", "_", "");
        for c in "word".chars() {
            let s = c.to_string();
            b.glyph(&s, &s, Boundary::Char);
        }
        let r = b.finish();
        assert_eq!(
            parts(&r, 32, Chars),
            ["x".repeat(30), "**_word_**".to_owned()]
        );
    }
}
