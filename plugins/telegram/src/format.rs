//! The agent's Markdown, rendered as Telegram HTML (`parse_mode = "HTML"`).
//!
//! Telegram's HTML accepts a handful of tags and requires `<`, `>` and `&` to be escaped
//! everywhere else. Agents write CommonMark-ish Markdown; this renders the common parts:
//!
//! | Markdown | Telegram HTML |
//! |---|---|
//! | `**bold**`, `__bold__` | `<b>` |
//! | `*italic*`, `_italic_` (not inside words) | `<i>` |
//! | `~~strike~~` | `<s>` |
//! | `` `code` `` | `<code>` |
//! | fenced code blocks (```` ```lang ````, `~~~`) | `<pre><code class="language-lang">` |
//! | `[label](https://…)`, `<https://…>` | `<a href>` (http, https, mailto, tg only) |
//! | `# Heading` | `<b>Heading</b>` |
//! | `> quote` lines | `<blockquote>` |
//! | `- item`, `* item`, `+ item` | `• item` |
//! | tables (`\| a \| b \|` with a `---` row) | `<pre>` (monospace keeps the columns) |
//! | `---` alone on a line | a line of `─` |
//! | `\*` (backslash escapes) | `*` |
//!
//! Inline markup never spans lines, and every opening delimiter is only rendered when its
//! closing one is found on the same line, so the output is always well nested. Anything
//! else is text, escaped.

use nanoclaw_plugin_api::kit::split_text;

/// Telegram's limit for a message text, and the one this module enforces on raw HTML.
pub(crate) const MESSAGE_LIMIT: usize = 4096;
/// Telegram's limit for a caption.
pub(crate) const CAPTION_LIMIT: usize = 1024;

/// One message's worth of text: the Markdown source (sent as plain text when Telegram
/// refuses the HTML) and its rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub markdown: String,
    pub html: String,
}

/// Length as Telegram counts it at worst: UTF-16 code units.
pub(crate) fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Renders `markdown` and splits it so that both the HTML (tags included, which is stricter
/// than Telegram's count after parsing) and the plain Markdown fallback of every chunk stay
/// within `limit` UTF-16 code units. Splitting uses [`split_text`] on the Markdown, halving
/// until each piece fits. Empty or blank text gives no chunks.
pub(crate) fn render_chunks(markdown: &str, limit: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    render_into(markdown, limit.max(1), &mut out);
    out
}

fn render_into(markdown: &str, limit: usize, out: &mut Vec<Chunk>) {
    if markdown.trim().is_empty() {
        return;
    }
    let html = to_html(markdown);
    if utf16_len(&html) <= limit && utf16_len(markdown) <= limit {
        out.push(Chunk {
            markdown: markdown.to_owned(),
            html,
        });
        return;
    }
    let chars = markdown.chars().count();
    let pieces = split_text(markdown, (chars / 2).max(1));
    if pieces.len() <= 1 {
        // Cannot get smaller (one character that renders too long is impossible at the
        // limits used here); send it rather than loop.
        out.push(Chunk {
            markdown: markdown.to_owned(),
            html,
        });
        return;
    }
    for piece in pieces {
        render_into(&piece, limit, out);
    }
}

/// Escapes text for Telegram HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(text, &mut out);
    out
}

fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Renders Markdown as Telegram HTML.
pub(crate) fn to_html(markdown: &str) -> String {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();

        if let Some((fence, lang)) = fence_open(trimmed) {
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !is_fence_close(lines[i].trim(), fence) {
                body.push(lines[i]);
                i += 1;
            }
            i += 1; // the closing fence (or past the end when it is missing)
            out.push(code_block(&body.join("\n"), lang));
            continue;
        }

        if is_table_row(trimmed) && lines.get(i + 1).is_some_and(|l| is_table_rule(l.trim())) {
            let mut rows = Vec::new();
            while i < lines.len() && is_table_row(lines[i].trim_start()) {
                rows.push(lines[i].trim());
                i += 1;
            }
            out.push(format!("<pre>{}</pre>", escape(&rows.join("\n"))));
            continue;
        }

        if trimmed.starts_with('>') {
            let mut quoted = Vec::new();
            while i < lines.len() {
                let Some(rest) = lines[i].trim_start().strip_prefix('>') else {
                    break;
                };
                quoted.push(inline(rest.strip_prefix(' ').unwrap_or(rest)));
                i += 1;
            }
            out.push(format!("<blockquote>{}</blockquote>", quoted.join("\n")));
            continue;
        }

        out.push(block_line(line));
        i += 1;
    }
    out.join("\n")
}

/// A line that is not part of a multi-line block.
fn block_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    if let Some(text) = heading(trimmed) {
        return format!("<b>{}</b>", inline(text));
    }
    if is_rule(trimmed) {
        return "──────────".to_owned();
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(item) = trimmed.strip_prefix(bullet) {
            return format!("{indent}• {}", inline(item.trim_start()));
        }
    }
    inline(line)
}

fn fence_open(line: &str) -> Option<(&str, &str)> {
    for fence in ["```", "~~~"] {
        if let Some(rest) = line.strip_prefix(fence) {
            let extra = rest.len() - rest.trim_start_matches(fence.as_bytes()[0] as char).len();
            let fence = &line[..fence.len() + extra];
            let info = line[fence.len()..].trim();
            // A backtick fence's info string may not contain backticks (that is inline code).
            if fence.starts_with('`') && info.contains('`') {
                return None;
            }
            let lang = info.split_whitespace().next().unwrap_or_default();
            return Some((fence, lang));
        }
    }
    None
}

fn is_fence_close(line: &str, fence: &str) -> bool {
    let c = fence.as_bytes()[0] as char;
    line.len() >= fence.len() && line.chars().all(|x| x == c)
}

fn code_block(body: &str, lang: &str) -> String {
    let lang: String = lang
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '#' | '.'))
        .collect();
    if lang.is_empty() {
        format!("<pre>{}</pre>", escape(body))
    } else {
        format!(
            "<pre><code class=\"language-{lang}\">{}</code></pre>",
            escape(body)
        )
    }
}

fn heading(line: &str) -> Option<&str> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &line[hashes..];
    if rest.is_empty() {
        return None;
    }
    rest.strip_prefix(' ')
        .or_else(|| rest.strip_prefix('\t'))
        .map(|t| t.trim().trim_end_matches('#').trim_end())
}

fn is_rule(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3
        && ['-', '*', '_']
            .iter()
            .any(|&c| compact.chars().all(|x| x == c))
}

fn is_table_row(line: &str) -> bool {
    let line = line.trim_end();
    line.starts_with('|') && line.len() > 1
}

fn is_table_rule(line: &str) -> bool {
    is_table_row(line)
        && line.contains('-')
        && line
            .chars()
            .all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t'))
}

// ---------------------------------------------------------------------------------------------
// Inline markup
// ---------------------------------------------------------------------------------------------

/// Renders one line of inline Markdown.
fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    render_inline(&chars, &mut out);
    out
}

fn render_inline(s: &[char], out: &mut String) {
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            '\\' if s.get(i + 1).is_some_and(char::is_ascii_punctuation) => {
                escape_char(s[i + 1], out);
                i += 2;
            }
            '`' => {
                let run = run_len(s, i, '`');
                match find_backtick_run(s, i + run, run) {
                    Some(end) => {
                        let code: String = s[i + run..end].iter().collect();
                        let code = strip_one_space(&code);
                        out.push_str("<code>");
                        escape_into(code, out);
                        out.push_str("</code>");
                        i = end + run;
                    }
                    None => {
                        for _ in 0..run {
                            out.push('`');
                        }
                        i += run;
                    }
                }
            }
            '*' | '_' | '~' => {
                if let Some(next) = emphasis(s, i, out) {
                    i = next;
                } else {
                    // Not an opener: the whole run is text.
                    let run = run_len(s, i, c);
                    for _ in 0..run {
                        out.push(c);
                    }
                    i += run;
                }
            }
            '[' => match link(s, i) {
                Some((label, url, next)) => {
                    push_link(&label, &url, out);
                    i = next;
                }
                None => {
                    out.push('[');
                    i += 1;
                }
            },
            '<' => match autolink(s, i) {
                Some((url, next)) => {
                    let label: Vec<char> = url.chars().collect();
                    push_link(&label, &url, out);
                    i = next;
                }
                None => {
                    out.push_str("&lt;");
                    i += 1;
                }
            },
            c => {
                escape_char(c, out);
                i += 1;
            }
        }
    }
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '&' => out.push_str("&amp;"),
        '"' => out.push_str("&quot;"),
        c => out.push(c),
    }
}

fn run_len(s: &[char], from: usize, c: char) -> usize {
    s[from..].iter().take_while(|&&x| x == c).count()
}

fn strip_one_space(code: &str) -> &str {
    if code.len() >= 2 && code.starts_with(' ') && code.ends_with(' ') && !code.trim().is_empty() {
        &code[1..code.len() - 1]
    } else {
        code
    }
}

/// The start of the next backtick run of exactly `len`, from `from`.
fn find_backtick_run(s: &[char], from: usize, len: usize) -> Option<usize> {
    let mut j = from;
    while j < s.len() {
        if s[j] == '`' {
            let run = run_len(s, j, '`');
            if run == len {
                return Some(j);
            }
            j += run;
        } else {
            j += 1;
        }
    }
    None
}

fn is_word(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric())
}

fn is_space(c: Option<&char>) -> bool {
    c.is_none_or(|c| c.is_whitespace())
}

/// Tries `**x**`, `__x__`, `~~x~~` (double) then `*x*`, `_x_` (single) at `i`. On success,
/// writes the element and returns the index after its closing delimiter.
fn emphasis(s: &[char], i: usize, out: &mut String) -> Option<usize> {
    let c = s[i];
    let run = run_len(s, i, c);
    let (width, tag) = match (c, run) {
        ('~', r) if r >= 2 => (2, "s"),
        ('~', _) => return None,
        (_, r) if r >= 2 => (2, "b"),
        _ => (1, "i"),
    };
    // Left-flanking: not followed by whitespace; `_` also not inside a word.
    if is_space(s.get(i + width)) || (c == '_' && i > 0 && is_word(s.get(i - 1))) {
        return None;
    }
    let close = find_closer(s, i + width, c, width)?;
    let mut inner = String::new();
    render_inline(&s[i + width..close], &mut inner);
    out.push('<');
    out.push_str(tag);
    out.push('>');
    out.push_str(&inner);
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
    Some(close + width)
}

/// The index of a closing delimiter (`width` × `c`) after `from`: not preceded by
/// whitespace, not the start of a longer run for singles, and for `_` not followed by a
/// word character. Code spans and backslash escapes are skipped.
fn find_closer(s: &[char], from: usize, c: char, width: usize) -> Option<usize> {
    let mut j = from;
    while j < s.len() {
        match s[j] {
            '\\' => j += 2,
            '`' => {
                let run = run_len(s, j, '`');
                j = match find_backtick_run(s, j + run, run) {
                    Some(end) => end + run,
                    None => j + run,
                };
            }
            x if x == c => {
                let run = run_len(s, j, c);
                let usable = if width == 1 { run == 1 } else { run >= 2 };
                let closes = usable
                    && j > from
                    && !is_space(s.get(j - 1))
                    && !(c == '_' && is_word(s.get(j + width)));
                if closes {
                    return Some(j);
                }
                j += run;
            }
            _ => j += 1,
        }
    }
    None
}

/// `[label](url)` at `i`: the label's characters, the URL and the index after `)`.
fn link(s: &[char], i: usize) -> Option<(Vec<char>, String, usize)> {
    let mut depth = 0usize;
    let mut j = i;
    let close = loop {
        match s.get(j)? {
            '\\' => j += 1,
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    break j;
                }
            }
            _ => {}
        }
        j += 1;
    };
    if s.get(close + 1) != Some(&'(') {
        return None;
    }
    let mut depth = 0usize;
    let mut k = close + 1;
    let end = loop {
        match s.get(k)? {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break k;
                }
            }
            c if c.is_whitespace() => return None,
            _ => {}
        }
        k += 1;
    };
    let url: String = s[close + 2..end].iter().collect();
    if !allowed_url(&url) {
        return None;
    }
    Some((s[i + 1..close].to_vec(), url, end + 1))
}

/// `<https://…>` at `i`.
fn autolink(s: &[char], i: usize) -> Option<(String, usize)> {
    let end = s[i + 1..].iter().position(|&c| c == '>')? + i + 1;
    let url: String = s[i + 1..end].iter().collect();
    (allowed_url(&url) && !url.contains(char::is_whitespace)).then_some((url, end + 1))
}

fn allowed_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://", "mailto:", "tg://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme) && lower.len() > scheme.len())
}

fn push_link(label: &[char], url: &str, out: &mut String) {
    out.push_str("<a href=\"");
    escape_into(url, out);
    out.push_str("\">");
    if label.is_empty() {
        escape_into(url, out);
    } else {
        render_inline(label, out);
    }
    out.push_str("</a>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inline_markup() {
        assert_eq!(
            to_html("**bold** and __bold__"),
            "<b>bold</b> and <b>bold</b>"
        );
        assert_eq!(to_html("*it* and _it_"), "<i>it</i> and <i>it</i>");
        assert_eq!(to_html("~~gone~~"), "<s>gone</s>");
        assert_eq!(
            to_html("use `a < b && c`"),
            "use <code>a &lt; b &amp;&amp; c</code>"
        );
        assert_eq!(
            to_html("``code with ` inside``"),
            "<code>code with ` inside</code>"
        );
        assert_eq!(
            to_html("**bold *and italic* text**"),
            "<b>bold <i>and italic</i> text</b>"
        );
        assert_eq!(
            to_html("see [the docs](https://example.org/a?b=1&c=\"2\")"),
            "see <a href=\"https://example.org/a?b=1&amp;c=&quot;2&quot;\">the docs</a>"
        );
        assert_eq!(
            to_html("<https://example.org>"),
            "<a href=\"https://example.org\">https://example.org</a>"
        );
        assert_eq!(
            to_html("[**b** label](http://x.y)"),
            "<a href=\"http://x.y\"><b>b</b> label</a>"
        );
    }

    #[test]
    fn things_that_are_not_markup_stay_text() {
        assert_eq!(to_html("snake_case_name"), "snake_case_name");
        assert_eq!(to_html("2 * 3 * 4"), "2 * 3 * 4");
        assert_eq!(to_html("a <b> & c"), "a &lt;b&gt; &amp; c");
        assert_eq!(to_html("**unclosed bold"), "**unclosed bold");
        assert_eq!(to_html("`unclosed code"), "`unclosed code");
        assert_eq!(to_html("\\*not italic\\*"), "*not italic*");
        assert_eq!(
            to_html("[x](javascript:alert(1))"),
            "[x](javascript:alert(1))"
        );
        assert_eq!(to_html("[x] (y)"), "[x] (y)");
        assert_eq!(to_html("<not a link>"), "&lt;not a link&gt;");
        assert_eq!(to_html("~single~"), "~single~");
        assert_eq!(to_html("a ** b **"), "a ** b **");
        assert_eq!(to_html("* * *"), "──────────");
    }

    #[test]
    fn blocks() {
        assert_eq!(
            to_html("```rust\nfn main() { a < b }\n```\nafter"),
            "<pre><code class=\"language-rust\">fn main() { a &lt; b }</code></pre>\nafter"
        );
        assert_eq!(to_html("~~~\nplain\n~~~"), "<pre>plain</pre>");
        assert_eq!(
            to_html("```\nnever closed **x**"),
            "<pre>never closed **x**</pre>"
        );
        assert_eq!(to_html("## Title **x**"), "<b>Title <b>x</b></b>");
        assert_eq!(to_html("#hashtag"), "#hashtag");
        assert_eq!(
            to_html("> quoted *a*\n> two\nafter"),
            "<blockquote>quoted <i>a</i>\ntwo</blockquote>\nafter"
        );
        assert_eq!(
            to_html("- one\n  * two\n+ three"),
            "• one\n  • two\n• three"
        );
        assert_eq!(to_html("1. first"), "1. first");
        assert_eq!(to_html("---"), "──────────");
        assert_eq!(
            to_html("| a | b |\n|---|:-:|\n| 1 | <2> |\nafter"),
            "<pre>| a | b |\n|---|:-:|\n| 1 | &lt;2&gt; |</pre>\nafter"
        );
    }

    #[test]
    fn chunks_respect_the_limit_and_keep_the_text() {
        let text = "word ".repeat(2000);
        let chunks = render_chunks(&text, MESSAGE_LIMIT);
        assert!(chunks.len() >= 3);
        for chunk in &chunks {
            assert!(utf16_len(&chunk.html) <= MESSAGE_LIMIT);
            assert!(utf16_len(&chunk.markdown) <= MESSAGE_LIMIT);
        }
        let joined: Vec<&str> = chunks
            .iter()
            .flat_map(|c| c.markdown.split_whitespace())
            .collect();
        assert_eq!(joined.len(), 2000);

        // Escaping makes 3000 `<` four times longer: the HTML must be split.
        let lt = "<".repeat(3000);
        let chunks = render_chunks(&lt, MESSAGE_LIMIT);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        assert!(chunks.iter().all(|c| utf16_len(&c.html) <= MESSAGE_LIMIT));
        assert_eq!(chunks.iter().map(|c| c.markdown.len()).sum::<usize>(), 3000);
        assert!(render_chunks("  \n ", MESSAGE_LIMIT).is_empty());
    }

    /// A strict check of the output: only the tags we emit, properly nested, and no raw
    /// `<`, `>` or `&` outside tags and entities.
    fn well_formed(html: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = html;
        while let Some(pos) = rest.find(['<', '>', '&']) {
            let tail = &rest[pos..];
            if tail.starts_with('>') {
                return Err(format!("raw > in {html:?}"));
            }
            if let Some(after) = tail.strip_prefix('&') {
                let ok = ["&lt;", "&gt;", "&amp;", "&quot;"]
                    .iter()
                    .any(|e| tail.starts_with(e));
                if !ok {
                    return Err(format!("raw & in {html:?}"));
                }
                rest = after;
                continue;
            }
            let end = tail
                .find('>')
                .ok_or_else(|| format!("unclosed tag in {html:?}"))?;
            let tag = &tail[1..end];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("bad nesting at </{name}> in {html:?}"));
                }
            } else {
                let name = tag.split(' ').next().unwrap_or_default();
                if !["b", "i", "s", "code", "pre", "a", "blockquote"].contains(&name) {
                    return Err(format!("unexpected tag <{tag}> in {html:?}"));
                }
                stack.push(name.to_owned());
            }
            rest = &tail[end + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?} in {html:?}"))
        }
    }

    proptest! {
        #[test]
        fn output_is_always_well_formed(text in "([a-z <>&\"\\\\*_~`\\[\\]()#>|\\-\n]|https://x){0,80}") {
            let html = to_html(&text);
            prop_assert!(well_formed(&html).is_ok(), "{}", well_formed(&html).unwrap_err());
        }

        #[test]
        fn chunks_always_fit(text in "([a-z <&*`\n]|é|🙂){0,400}", limit in 16usize..64) {
            for chunk in render_chunks(&text, limit) {
                prop_assert!(utf16_len(&chunk.html) <= limit, "{:?}", chunk);
                prop_assert!(utf16_len(&chunk.markdown) <= limit, "{:?}", chunk);
                prop_assert!(well_formed(&chunk.html).is_ok());
            }
        }
    }
}
