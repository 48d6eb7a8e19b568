use proptest::prelude::*;

use super::*;
use crate::kit::format::{LengthUnit, TextLimit};
use crate::kit::rendered::Part;

fn r(markdown: &str, markup: Markup) -> String {
    render_markdown(markdown, markup).text()
}

const SAMPLE: &str = "# Plan\n**Done.** See _the plan_, `a < b` and [docs](https://x.y/?a=1&b=2).\n\n\
                      - one\n- two ~~old~~\n\n> quoted\n\n```rust\nfn main() {}\n```";

#[test]
fn telegram_html() {
    assert_eq!(
        r(SAMPLE, Markup::TelegramHtml),
        "<b>Plan</b>\n<b>Done.</b> See <i>the plan</i>, <code>a &lt; b</code> and \
         <a href=\"https://x.y/?a=1&amp;b=2\">docs</a>.\n\n• one\n• two <s>old</s>\n\n\
         <blockquote>quoted</blockquote>\n\n\
         <pre><code class=\"language-rust\">fn main() {}</code></pre>"
    );
    // Raw HTML and entities are text; unknown link schemes show their label.
    assert_eq!(
        r(
            "a <b>x</b> & \"q\" [x](javascript:alert(1))",
            Markup::TelegramHtml
        ),
        "a &lt;b&gt;x&lt;/b&gt; &amp; &quot;q&quot; x"
    );
    assert_eq!(
        r("||secret|| but a || b", Markup::TelegramHtml),
        "<tg-spoiler>secret</tg-spoiler> but a || b"
    );
    // A heading's bold does not nest another bold; code never goes inside a link.
    assert_eq!(r("## Title **x**", Markup::TelegramHtml), "<b>Title x</b>");
    assert_eq!(
        r("[`run`](https://x.y)", Markup::TelegramHtml),
        "<a href=\"https://x.y\">run</a>"
    );
    // No nested quotes, and no <pre> inside a quote.
    assert_eq!(
        r("> a\n> > b", Markup::TelegramHtml),
        "<blockquote>a\nb</blockquote>"
    );
    assert_eq!(
        r("> a\n>\n> ```\n> x\n> ```", Markup::TelegramHtml),
        "<blockquote>a</blockquote>\n\n<pre>x</pre>"
    );
    assert_eq!(
        r("snake_case_name 2 * 3", Markup::TelegramHtml),
        "snake_case_name 2 * 3"
    );
    assert_eq!(r("---", Markup::TelegramHtml), "──────────");
    assert_eq!(r("  \n\n ", Markup::TelegramHtml), "");
}

#[test]
fn slack_mrkdwn() {
    assert_eq!(
        r(SAMPLE, Markup::SlackMrkdwn),
        "*Plan*\n*Done.* See _the plan_, `a &lt; b` and <https://x.y/?a=1&amp;b=2|docs>.\n\n\
         • one\n• two ~old~\n\n> quoted\n\n```\nfn main() {}\n```"
    );
    // Formatting markers cannot span lines in Slack: closed and reopened around a break.
    assert_eq!(r("**a\nb**", Markup::SlackMrkdwn), "*a*\n*b*");
    assert_eq!(
        r(
            "see https://x.y/a|b and [**bold** label](https://x.y)",
            Markup::SlackMrkdwn
        ),
        "see <https://x.y/a%7Cb> and <https://x.y|bold label>"
    );
    assert_eq!(r("> one\n>\n> two", Markup::SlackMrkdwn), "> one\n>\n> two");
}

#[test]
fn discord_markdown() {
    assert_eq!(
        r(SAMPLE, Markup::DiscordMarkdown),
        "# Plan\n**Done.** See *the plan*, `a < b` and [docs](https://x.y/?a=1&b=2).\n\n\
         - one\n- two ~~old~~\n\n> quoted\n\n```rust\nfn main() {}\n```"
    );
    // Literal markers are escaped; URLs are not (the backslash would end up in the link).
    assert_eq!(
        r(r"2 \* 3 = 6_000 https://x.y/a_b", Markup::DiscordMarkdown),
        r"2 \* 3 = 6\_000 https://x.y/a_b"
    );
    assert_eq!(
        r("\\# not a heading", Markup::DiscordMarkdown),
        "\\# not a heading"
    );
    assert_eq!(r("#### Small", Markup::DiscordMarkdown), "**Small**");
    assert_eq!(r("||x||", Markup::DiscordMarkdown), "||x||");
    assert_eq!(r("``a`b``", Markup::DiscordMarkdown), "``a`b``");
}

#[test]
fn teams_whatsapp_and_plain() {
    assert_eq!(
        r(SAMPLE, Markup::TeamsMarkdown),
        "**Plan**\n**Done.** See *the plan*, `a < b` and [docs](https://x.y/?a=1&b=2).\n\n\
         - one\n- two ~~old~~\n\n> quoted\n\n```rust\nfn main() {}\n```"
    );
    assert_eq!(
        r(SAMPLE, Markup::WhatsApp),
        "*Plan*\n*Done.* See _the plan_, `a < b` and docs (https://x.y/?a=1&b=2).\n\n\
         • one\n• two ~old~\n\n> quoted\n\n```fn main() {}```"
    );
    assert_eq!(
        r(SAMPLE, Markup::PlainText),
        "Plan\nDone. See the plan, a < b and docs (https://x.y/?a=1&b=2).\n\n\
         • one\n• two old\n\n> quoted\n\nfn main() {}"
    );
    assert_eq!(
        r("1. a\n2. b\n   - c\n- [x] done", Markup::PlainText),
        "1. a\n2. b\n   • c\n☑ done"
    );
}

#[test]
fn matrix_and_email_html() {
    let doc = Document::parse(SAMPLE);
    let matrix = doc.render(Markup::MatrixHtml);
    assert_eq!(
        matrix.text(),
        "<h1>Plan</h1><p><strong>Done.</strong> See <em>the plan</em>, <code>a &lt; b</code> \
         and <a href=\"https://x.y/?a=1&amp;b=2\">docs</a>.</p><ul><li>one</li><li>two \
         <del>old</del></li></ul><blockquote><p>quoted</p></blockquote>\
         <pre><code class=\"language-rust\">fn main() {}</code></pre>"
    );
    assert_eq!(
        matrix.plain(),
        "Plan\nDone. See the plan, a < b and docs.\n\n• one\n• two old\n\nquoted\n\nfn main() {}"
    );
    assert_eq!(
        r("| a | b |\n|---|---|\n| 1 | **2** |", Markup::EmailHtml),
        "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td>\
         <td><strong>2</strong></td></tr></tbody></table>"
    );
    assert_eq!(
        render_markdown("| a | b |\n|---|---|\n| 1 | 2 |", Markup::MatrixHtml).plain(),
        "a | b\n1 | 2"
    );
    assert_eq!(
        r("3. three\n4. four", Markup::MatrixHtml),
        "<ol start=\"3\"><li>three</li><li>four</li></ol>"
    );
    assert_eq!(
        r("||s||", Markup::MatrixHtml),
        "<p><span data-mx-spoiler>s</span></p>"
    );
}

#[test]
fn tables_become_aligned_monospace() {
    let table = "| name | n |\n|---|--:|\n| alpha | 1 |\n| b | 22 |";
    assert_eq!(
        r(table, Markup::TelegramHtml),
        "<pre>name  | n\n------+---\nalpha | 1\nb     | 22</pre>"
    );
    assert_eq!(
        r(table, Markup::SlackMrkdwn),
        "```\nname  | n\n------+---\nalpha | 1\nb     | 22\n```"
    );
}

#[test]
fn verbatim_is_the_source() {
    let doc = Document::parse("**x** <y>");
    assert_eq!(doc.render(Markup::Verbatim).text(), "**x** <y>");
    assert_eq!(doc.source(), "**x** <y>");
}

#[test]
fn code_blocks_reopen_with_their_fence_and_language() {
    let code: String = (0..40).map(|i| format!("let x{i} = {i};\n")).collect();
    let md = format!("```rust\n{code}```");
    for markup in [Markup::TelegramHtml, Markup::DiscordMarkdown] {
        let parts = render_markdown(&md, markup).split(TextLimit::new(200, LengthUnit::Utf16));
        assert!(parts.len() > 2, "{parts:?}");
        for p in &parts {
            let (open, close) = match markup {
                Markup::TelegramHtml => ("<pre><code class=\"language-rust\">", "</code></pre>"),
                _ => ("```rust\n", "\n```"),
            };
            assert!(p.text.starts_with(open) && p.text.ends_with(close), "{p:?}");
            // Cut at line ends: every part holds whole lines.
            assert!(
                p.plain
                    .lines()
                    .all(|l| l.starts_with("let x") && l.ends_with(';')),
                "{p:?}"
            );
        }
    }
}

#[test]
fn formatting_closes_and_reopens_across_parts() {
    let md = format!("**{}**", "bold words ".repeat(30).trim_end());
    for (markup, open, close) in [
        (Markup::TelegramHtml, "<b>", "</b>"),
        (Markup::SlackMrkdwn, "*", "*"),
        (Markup::DiscordMarkdown, "**", "**"),
        (Markup::WhatsApp, "*", "*"),
    ] {
        let parts = render_markdown(&md, markup).split(TextLimit::new(64, LengthUnit::Chars));
        assert!(parts.len() > 3);
        for p in &parts {
            assert!(
                p.text.starts_with(open) && p.text.ends_with(close),
                "{markup}: {p:?}"
            );
            assert!(!p.text.contains(&format!("{open} ")), "{markup}: {p:?}");
        }
    }
}

#[test]
fn edits_are_cut_with_an_ellipsis() {
    let words = "word ".repeat(100);
    let long = render_markdown(&format!("**{}**", words.trim_end()), Markup::TelegramHtml);
    let part = long
        .truncate(TextLimit::new(100, LengthUnit::Utf16))
        .expect("part");
    assert!(part.text.encode_utf16().count() <= 100, "{part:?}");
    assert!(part.text.ends_with("…</b>"), "{part:?}");
    let short = render_markdown("short", Markup::TelegramHtml);
    assert_eq!(
        short.truncate(TextLimit::new(100, LengthUnit::Utf16)),
        Some(Part {
            text: "short".into(),
            plain: "short".into()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Checks that `html` only uses `markup`'s tags, properly nested (and Telegram's nesting
/// rules), with `&` only in entities; returns the visible text.
fn check_html(html: &str, markup: Markup) -> Result<String, String> {
    let allowed: &[&str] = match markup {
        Markup::TelegramHtml => &[
            "b",
            "i",
            "s",
            "code",
            "pre",
            "a",
            "blockquote",
            "tg-spoiler",
        ],
        _ => &[
            "p",
            "br",
            "strong",
            "em",
            "del",
            "s",
            "code",
            "pre",
            "a",
            "blockquote",
            "ul",
            "ol",
            "li",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "hr",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
            "span",
        ],
    };
    let void = ["br", "hr"];
    let mut stack: Vec<String> = Vec::new();
    let mut visible = String::new();
    let mut rest = html;
    while let Some(pos) = rest.find(['<', '>', '&']) {
        visible.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with('>') {
            return Err(format!("raw > in {html:?}"));
        }
        if tail.starts_with('&') {
            let (entity, c) = [
                ("&lt;", '<'),
                ("&gt;", '>'),
                ("&amp;", '&'),
                ("&quot;", '"'),
            ]
            .into_iter()
            .find(|(e, _)| tail.starts_with(e))
            .ok_or_else(|| format!("raw & in {html:?}"))?;
            visible.push(c);
            rest = &tail[entity.len()..];
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
            if !allowed.contains(&name) {
                return Err(format!("unexpected tag <{tag}> in {html:?}"));
            }
            if markup == Markup::TelegramHtml {
                let inside = |t: &str| stack.iter().any(|s| s == t);
                let ok = match name {
                    _ if inside("pre")
                        && !(name == "code" && stack.last().map(String::as_str) == Some("pre")) =>
                    {
                        false
                    }
                    _ if stack.last().map(String::as_str) == Some("code") => false,
                    "blockquote" => !inside("blockquote"),
                    "pre" => !inside("blockquote") && !inside("a"),
                    "code" => !inside("a"),
                    "a" => !inside("a"),
                    _ => true,
                };
                if !ok {
                    return Err(format!("<{name}> inside {stack:?} in {html:?}"));
                }
            }
            if !void.contains(&name) {
                stack.push(name.to_owned());
            }
        }
        rest = &tail[end + 1..];
    }
    visible.push_str(rest);
    if stack.is_empty() {
        Ok(visible)
    } else {
        Err(format!("unclosed {stack:?} in {html:?}"))
    }
}

fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn check_split(markdown: &str, markup: Markup, limit: TextLimit) -> Result<(), TestCaseError> {
    let rendered = render_markdown(markdown, markup);
    let whole = rendered.whole();
    let parts = rendered.split(limit);
    prop_assert_eq!(whole.is_none(), parts.is_empty());
    for p in &parts {
        prop_assert!(
            limit.fits(&p.text),
            "{} over {:?}: {:?}",
            markup,
            limit,
            p.text
        );
        prop_assert!(
            limit.fits(&p.plain),
            "{} plain over {:?}: {:?}",
            markup,
            limit,
            p.plain
        );
        prop_assert!(!p.plain.trim().is_empty(), "{} empty part {:?}", markup, p);
        if markup.is_html() {
            let visible = check_html(&p.text, markup);
            prop_assert!(visible.is_ok(), "{}: {}", markup, visible.unwrap_err());
        }
        if matches!(markup, Markup::SlackMrkdwn | Markup::WhatsApp) {
            prop_assert!(
                p.text.matches("```").count() % 2 == 0,
                "{}: unbalanced fences {:?}",
                markup,
                p.text
            );
        }
    }
    let Some(whole) = whole else { return Ok(()) };
    // Nothing lost, nothing added, in order: the parts' plain texts are the whole plain
    // text but for whitespace at the cuts; for HTML, the same holds for the visible text.
    let joined: String = parts.iter().map(|p| p.plain.as_str()).collect();
    prop_assert_eq!(squash(&joined), squash(&whole.plain));
    if markup.is_html() {
        let visible: String = parts
            .iter()
            .map(|p| check_html(&p.text, markup).unwrap_or_default())
            .collect();
        let whole_visible = check_html(&whole.text, markup);
        prop_assert!(
            whole_visible.is_ok(),
            "{}",
            whole_visible.clone().unwrap_err()
        );
        prop_assert_eq!(squash(&visible), squash(&whole_visible.unwrap_or_default()));
    }
    Ok(())
}

fn markdown_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,12}".prop_map(|w| format!("{w} ")),
        1 => Just("**".to_owned()),
        1 => Just("*".to_owned()),
        1 => Just("_".to_owned()),
        1 => Just("~~".to_owned()),
        1 => Just("||".to_owned()),
        1 => Just("`".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\n\n".to_owned()),
        1 => Just("\n> ".to_owned()),
        1 => Just("\n- ".to_owned()),
        1 => Just("\n1. ".to_owned()),
        1 => Just("\n# ".to_owned()),
        1 => Just("\n```rust\nlet a = b < c;\n".to_owned()),
        1 => Just("\n```\n".to_owned()),
        1 => Just("\n| a | b |\n|---|---|\n| 1 | 2 |\n".to_owned()),
        1 => Just("[link *x*](https://e.x/a_b?c=1&d=2) ".to_owned()),
        1 => Just("https://example.com/some/long/path?q=1 ".to_owned()),
        1 => Just("<b>&amp; \" ' ".to_owned()),
        1 => Just("🙂👨\u{200D}👩\u{200D}👧é ".to_owned()),
        1 => Just("\\* ".to_owned()),
    ]
}

fn markdown() -> impl Strategy<Value = String> {
    proptest::collection::vec(markdown_piece(), 0..60).prop_map(|v| v.concat())
}

fn unit() -> impl Strategy<Value = LengthUnit> {
    prop::sample::select(vec![
        LengthUnit::Chars,
        LengthUnit::Utf16,
        LengthUnit::Bytes,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_markup_splits_within_the_limit_well_formed_and_whole(
        md in markdown(),
        max in 32usize..160,
        unit in unit(),
    ) {
        for markup in Markup::ALL {
            check_split(&md, markup, TextLimit::new(max, unit))?;
        }
    }

    #[test]
    fn whole_renderings_are_well_formed(md in markdown()) {
        for markup in [Markup::TelegramHtml, Markup::MatrixHtml, Markup::EmailHtml] {
            let html = render_markdown(&md, markup).text();
            let checked = check_html(&html, markup);
            prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
        }
    }

    #[test]
    fn truncation_fits_and_is_well_formed(md in markdown(), max in 32usize..120, unit in unit()) {
        let limit = TextLimit::new(max, unit);
        for markup in [Markup::TelegramHtml, Markup::DiscordMarkdown, Markup::MatrixHtml] {
            if let Some(part) = render_markdown(&md, markup).truncate(limit) {
                prop_assert!(limit.fits(&part.text), "{:?}", part);
                if markup.is_html() {
                    let checked = check_html(&part.text, markup);
                    prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
                }
            }
        }
    }
}
