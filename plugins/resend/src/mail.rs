//! Email text, without the network: addresses, Message-ID lists, threading, HTML → text,
//! quoted-reply trimming and sender authentication results.

/// Longest text handed to the host (characters); the rest is cut with a note.
pub(crate) const MAX_TEXT_CHARS: usize = 100_000;
/// Most Message-IDs kept per thread (the root and the latest ones).
pub(crate) const MAX_REFERENCES: usize = 20;
/// Longest Message-ID accepted (RFC 5322 line limit).
const MAX_ID_LEN: usize = 998;

/// `Ann Example <Ann@Example.org>` → (`ann@example.org`, `Some("Ann Example")`); `None`
/// when there is no plausible address. The address is lower-cased: one person, one user.
pub(crate) fn parse_mailbox(value: &str) -> Option<(String, Option<String>)> {
    let v = value.trim();
    let (name, addr) = match (v.rfind('<'), v.ends_with('>')) {
        (Some(open), true) => (v[..open].trim(), &v[open + 1..v.len() - 1]),
        _ => ("", v),
    };
    let addr = addr.trim();
    if !is_address(addr) {
        return None;
    }
    let name = name.trim_matches('"').trim();
    let name = (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.to_owned());
    Some((addr.to_ascii_lowercase(), name))
}

/// A plain `local@domain` address: one `@`, a dotted domain, no spaces, quotes, brackets or
/// control characters (nothing that could break a header).
pub(crate) fn is_address(addr: &str) -> bool {
    let Some((local, domain)) = addr.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && addr.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && addr
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | ',' | ';' | '\\'))
}

/// The domain of an address.
pub(crate) fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Message-IDs from a `References` / `In-Reply-To` value: RFC 5322's whitespace-separated
/// `<id>` list, or the JSON array form some APIs give. Each id keeps its angle brackets;
/// ids that are too long or hold control characters are dropped.
pub(crate) fn message_ids(value: &str) -> Vec<String> {
    let value = value.trim();
    let joined;
    let value = match serde_json::from_str::<Vec<String>>(value) {
        Ok(list) => {
            joined = list.join(" ");
            joined.as_str()
        }
        Err(_) => value,
    };
    let mut ids = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(len) = rest[open..].find('>') else {
            break;
        };
        let id = &rest[open..open + len + 1];
        if id.len() > 2 && id.len() <= MAX_ID_LEN && !id[1..id.len() - 1].contains(['<', ' ']) {
            ids.push(id.to_owned());
        }
        rest = &rest[open + len + 1..];
        if ids.len() > 200 {
            break;
        }
    }
    if ids.is_empty() {
        // Bare ids without brackets.
        ids = value
            .split_whitespace()
            .filter(|t| t.contains('@') && t.len() <= MAX_ID_LEN)
            .map(|t| format!("<{}>", t.trim_matches(['<', '>'])))
            .take(200)
            .collect();
    }
    ids.retain(|id| !id.chars().any(char::is_control));
    ids
}

/// `<id@host>` → `id@host` (the thread id the host sees).
pub(crate) fn bare(id: &str) -> &str {
    id.trim_start_matches('<').trim_end_matches('>')
}

/// The root of an email's thread: the first id of `References` (RFC 5322 keeps the root
/// first), else `In-Reply-To`, else the email's own Message-ID.
pub(crate) fn thread_root<'a>(
    references: &'a [String],
    in_reply_to: &'a [String],
    own: &'a str,
) -> &'a str {
    references
        .first()
        .or(in_reply_to.first())
        .map_or(own, String::as_str)
}

/// `Re: <subject>` unless it already starts with a reply prefix.
pub(crate) fn reply_subject(subject: &str) -> String {
    let s = subject.trim();
    let lower = s.to_ascii_lowercase();
    if s.is_empty() {
        "Re: your message".to_owned()
    } else if lower.starts_with("re:") || lower.starts_with("aw:") || lower.starts_with("sv:") {
        s.to_owned()
    } else {
        format!("Re: {s}")
    }
}

/// Subjects come from strangers: one line, no control characters, bounded.
pub(crate) fn clean_subject(subject: &str) -> String {
    let one_line: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    one_line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// HTML → readable text, safely: tags dropped (never interpreted), `script`, `style`,
/// `head` and comments dropped with their content, blocks and `<br>` as line breaks, list
/// items as `- `, links as `label (url)` when the URL adds something, entities decoded.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(1 << 20));
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    let mut href: Option<String> = None;
    let mut link_start = 0usize;
    while !rest.is_empty() {
        if let Some(end_tag) = skip_until {
            match find_ci(rest, end_tag) {
                Some(at) => {
                    rest = &rest[at + end_tag.len()..];
                    rest = rest.split_once('>').map_or("", |(_, r)| r);
                    skip_until = None;
                }
                None => break,
            }
            continue;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.split_once("-->").map_or("", |(_, r)| r);
            continue;
        }
        if rest.starts_with('<') {
            let Some(close) = rest.find('>') else {
                break;
            };
            let tag = &rest[1..close];
            rest = &rest[close + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            match name.as_str() {
                "script" | "style" | "head" | "title" if !closing => {
                    skip_until = Some(match name.as_str() {
                        "script" => "</script",
                        "style" => "</style",
                        "head" => "</head",
                        _ => "</title",
                    });
                }
                "br" => out.push('\n'),
                "li" if !closing => {
                    newline(&mut out);
                    out.push_str("- ");
                }
                "a" if !closing => {
                    href = attribute(tag, "href");
                    link_start = out.len();
                }
                "a" => {
                    if let Some(url) = href.take() {
                        let label = out[link_start..].trim();
                        if (url.starts_with("http://") || url.starts_with("https://"))
                            && label != url
                        {
                            out.push_str(&format!(" ({url})"));
                        }
                    }
                }
                "p" | "div" | "tr" | "table" | "ul" | "ol" | "blockquote" | "h1" | "h2" | "h3"
                | "h4" | "h5" | "h6" | "hr" | "pre" | "section" | "article" | "header"
                | "footer" => newline(&mut out),
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        let text = decode_entities(&rest[..next]);
        // HTML whitespace collapses to one space.
        let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
        for c in text.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            } else {
                out.push(if c == '\u{a0}' { ' ' } else { c });
                last_space = false;
            }
        }
        rest = &rest[next..];
    }
    tidy_lines(&out)
}

fn newline(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Trims each line, and keeps at most one blank line in a row.
fn tidy_lines(text: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() && lines.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    (0..h.len().saturating_sub(n.len() - 1)).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// The value of attribute `name` in a tag's inside (`a href="x" …`).
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    let value = match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].split(q).next()?,
        _ => rest.split(|c: char| c.is_whitespace()).next()?,
    };
    Some(decode_entities(value).trim().to_owned())
}

/// `&amp;` `&lt;` `&gt;` `&quot;` `&#39;` `&apos;` `&nbsp;` and numeric references;
/// anything else stays as written.
pub(crate) fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32)
                .filter(|c| !c.is_control() || *c == '\n' || *c == '\t'),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops the quoted history a mail client appends to a reply (`> …` lines at the end and
/// the `On … wrote:` line above them), so the agent reads what is new. A message that is
/// nothing but a quote is kept as it is.
pub(crate) fn strip_quoted_reply(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines.len();
    while cut > 0 {
        let line = lines[cut - 1].trim();
        if line.is_empty() || line.starts_with('>') {
            cut -= 1;
        } else {
            break;
        }
    }
    if cut == lines.len() || !lines[cut..].iter().any(|l| l.trim().starts_with('>')) {
        return text.trim().to_owned();
    }
    if cut > 0 && lines[cut - 1].trim_end().ends_with("wrote:") {
        // `On <date>, Ann <ann@…>` may be wrapped before a lone `wrote:`.
        let lone = lines[cut - 1].trim() == "wrote:";
        cut -= 1;
        if lone && cut > 0 && lines[cut - 1].trim_start().starts_with("On ") {
            cut -= 1;
        }
    } else if cut > 1
        && lines[cut - 1].trim_end().ends_with(':')
        && lines[cut - 2].trim_start().starts_with("On ")
    {
        // `On <date>, Ann <ann@…>` wrapped before `wrote:`.
        cut -= 2;
    }
    let kept = lines[..cut].join("\n");
    if kept.trim().is_empty() {
        text.trim().to_owned()
    } else {
        kept.trim().to_owned()
    }
}

/// Cuts `text` to [`MAX_TEXT_CHARS`].
pub(crate) fn bounded(text: String) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_TEXT_CHARS).collect();
    cut.push_str("\n[… the rest of this email was cut]");
    cut
}

/// What the `Authentication-Results` headers say about the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SenderAuth {
    /// DMARC passed for the From domain.
    Pass,
    /// No DMARC pass for the From domain (absent, none, fail, or another domain).
    NotPassed(String),
}

/// Checks `Authentication-Results` values (RFC 8601) for `dmarc=pass` with
/// `header.from=<domain>`. With `server_id`, only results stamped by that receiving server
/// (the value's first token) count: a sender can write its own `Authentication-Results`.
pub(crate) fn dmarc_result(
    results: &[String],
    domain: &str,
    server_id: Option<&str>,
) -> SenderAuth {
    let mut seen = Vec::new();
    for value in results {
        let mut parts = value.split(';');
        let authserv = parts.next().unwrap_or_default().trim();
        let authserv = authserv.split_whitespace().next().unwrap_or_default();
        if let Some(id) = server_id
            && !authserv.eq_ignore_ascii_case(id)
        {
            continue;
        }
        for method in parts {
            let tokens: Vec<String> = method
                .split_whitespace()
                .map(str::to_ascii_lowercase)
                .collect();
            let Some(result) = tokens.first().and_then(|t| t.strip_prefix("dmarc=")) else {
                continue;
            };
            let from = tokens
                .iter()
                .find_map(|t| t.strip_prefix("header.from="))
                .unwrap_or_default();
            if result == "pass" && from.eq_ignore_ascii_case(domain) {
                return SenderAuth::Pass;
            }
            seen.push(format!("dmarc={result} header.from={from}"));
        }
    }
    SenderAuth::NotPassed(if seen.is_empty() {
        "no DMARC result".to_owned()
    } else {
        seen.join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_and_addresses() {
        assert_eq!(
            parse_mailbox("Ann Example <Ann@Example.ORG>"),
            Some(("ann@example.org".into(), Some("Ann Example".into())))
        );
        assert_eq!(
            parse_mailbox("\"Bob\" <bob@example.net>"),
            Some(("bob@example.net".into(), Some("Bob".into())))
        );
        assert_eq!(
            parse_mailbox("carl@example.com"),
            Some(("carl@example.com".into(), None))
        );
        for bad in [
            "",
            "nobody",
            "a@b",
            "x <a@b.c\r\nBcc: e@f.g>",
            "a b@c.d",
            "@c.d",
        ] {
            assert_eq!(parse_mailbox(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn message_id_lists_in_both_forms() {
        assert_eq!(
            message_ids("<a@x>  <b@y>\r\n <c@z>"),
            vec!["<a@x>", "<b@y>", "<c@z>"]
        );
        assert_eq!(message_ids(r#"["<a@x>","<b@y>"]"#), vec!["<a@x>", "<b@y>"]);
        assert_eq!(message_ids("a@x"), vec!["<a@x>"]);
        assert!(message_ids("").is_empty());
        let refs = message_ids("<root@x> <mid@x>");
        let irt = message_ids("<mid@x>");
        assert_eq!(thread_root(&refs, &irt, "<own@x>"), "<root@x>");
        assert_eq!(thread_root(&[], &irt, "<own@x>"), "<mid@x>");
        assert_eq!(thread_root(&[], &[], "<own@x>"), "<own@x>");
        assert_eq!(bare("<own@x>"), "own@x");
    }

    #[test]
    fn subjects() {
        assert_eq!(reply_subject("Hello"), "Re: Hello");
        assert_eq!(reply_subject("RE: Hello"), "RE: Hello");
        assert_eq!(reply_subject(""), "Re: your message");
        assert_eq!(clean_subject("a\r\nBcc: x\tb"), "a Bcc: x b");
    }

    #[test]
    fn html_becomes_text_without_running_anything() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head><body>\
            <p>Hello <b>Ann</b>,</p><script>alert('x')</script><!-- hidden -->\
            <p>See <a href=\"https://example.org/doc\">the doc</a> &amp; \
            <a href=\"https://x.y\">https://x.y</a>.</p><ul><li>one</li><li>two</li></ul>\
            line<br>break &lt;tag&gt; &#233;&#x263A;&nbsp;ok</body></html>";
        assert_eq!(
            html_to_text(html),
            "Hello Ann,\n\nSee the doc (https://example.org/doc) & https://x.y.\n\n- one\n- two\nline\nbreak <tag> é☺ ok"
        );
        assert_eq!(html_to_text("<p>unclosed <script>x"), "unclosed");
        assert_eq!(html_to_text("a &bogus; &#0; b"), "a &bogus; &#0; b");
    }

    #[test]
    fn quoted_history_is_trimmed() {
        let reply = "Sounds good.\n\nOn Tue, 3 Dec 2026 at 15:00, Agent <agent@bot.example.com> wrote:\n> earlier\n> text\n";
        assert_eq!(strip_quoted_reply(reply), "Sounds good.");
        let wrapped = "Yes\n\nOn Tue, 3 Dec 2026, Agent <agent@bot.example.com>\nwrote:\n> x";
        assert_eq!(strip_quoted_reply(wrapped), "Yes");
        assert_eq!(strip_quoted_reply("> only a quote"), "> only a quote");
        assert_eq!(
            strip_quoted_reply("> quoted\nmy answer below"),
            "> quoted\nmy answer below"
        );
    }

    #[test]
    fn dmarc_results() {
        let ses = "amazonses.com; spf=pass (spfCheck: domain of example.org designates 1.2.3.4 as permitted sender) client-ip=1.2.3.4; envelope-from=ann@example.org; helo=mail.example.org; dkim=pass header.i=@example.org; dmarc=pass header.from=example.org;".to_owned();
        assert_eq!(
            dmarc_result(std::slice::from_ref(&ses), "example.org", None),
            SenderAuth::Pass
        );
        assert_eq!(
            dmarc_result(
                std::slice::from_ref(&ses),
                "example.org",
                Some("amazonses.com")
            ),
            SenderAuth::Pass
        );
        // A result written by someone else does not count when the server is named.
        assert!(matches!(
            dmarc_result(
                std::slice::from_ref(&ses),
                "example.org",
                Some("mx.resend.com")
            ),
            SenderAuth::NotPassed(_)
        ));
        assert!(matches!(
            dmarc_result(&[ses], "other.org", None),
            SenderAuth::NotPassed(_)
        ));
        let fail = "mx.example; dmarc=fail (p=reject) header.from=example.org".to_owned();
        assert_eq!(
            dmarc_result(&[fail], "example.org", None),
            SenderAuth::NotPassed("dmarc=fail header.from=example.org".into())
        );
        assert!(matches!(
            dmarc_result(&[], "example.org", None),
            SenderAuth::NotPassed(_)
        ));
    }
}
