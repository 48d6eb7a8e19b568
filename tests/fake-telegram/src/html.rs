//! Telegram's `parse_mode = "HTML"`, checked as strictly as Telegram does: only its tags,
//! properly nested and closed, and `<` / `&` only as part of a tag or an entity. The result
//! is the plain text a user sees.

/// Parses Telegram HTML into plain text, or the error Telegram would give (without the
/// `Bad Request: can't parse entities: ` prefix).
pub fn parse(html: &str) -> Result<String, String> {
    const TAGS: [&str; 16] = [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    ];
    let mut out = String::with_capacity(html.len());
    let mut stack: Vec<String> = Vec::new();
    let bytes = html.as_bytes();
    let mut i = 0;
    while i < html.len() {
        match bytes[i] {
            b'<' => {
                let end = html[i..]
                    .find('>')
                    .map(|e| e + i)
                    .ok_or_else(|| format!("Unclosed start tag at byte offset {i}"))?;
                let inner = &html[i + 1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        Some(open) => {
                            return Err(format!(
                                "Unmatched end tag at byte offset {i}, expected \"</{open}>\", \
                                 found \"</{name}>\""
                            ));
                        }
                        None => {
                            return Err(format!("Unexpected end tag at byte offset {i}"));
                        }
                    }
                } else {
                    let name = inner
                        .split(|c: char| c.is_whitespace())
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if !TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    let attrs = inner[name.len()..].trim();
                    if name == "a" && !attrs.starts_with("href=") {
                        return Err(format!("Can't find href of a link at byte offset {i}"));
                    }
                    if name == "span" && !attrs.contains("tg-spoiler") {
                        return Err(format!(
                            "Tag \"span\" must have class \"tg-spoiler\" at byte offset {i}"
                        ));
                    }
                    if let Some(parent) = stack.last()
                        && (parent == "code" || parent == "pre")
                        && !(parent == "pre" && name == "code")
                    {
                        return Err(format!(
                            "Can't use tag \"{name}\" inside \"{parent}\" at byte offset {i}"
                        ));
                    }
                    stack.push(name);
                }
                i = end + 1;
            }
            b'&' => {
                let end = html[i..]
                    .find(';')
                    .map(|e| e + i)
                    .filter(|&e| e - i <= 10)
                    .ok_or_else(|| {
                        format!("Can't find end of the entity starting at byte offset {i}")
                    })?;
                let entity = &html[i + 1..end];
                let c = match entity {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    _ => numeric_entity(entity).ok_or_else(|| {
                        format!("Unsupported HTML entity \"&{entity};\" at byte offset {i}")
                    })?,
                };
                out.push(c);
                i = end + 1;
            }
            _ => {
                let next = html[i..].find(['<', '&']).map_or(html.len(), |n| n + i);
                out.push_str(&html[i..next]);
                i = next;
            }
        }
    }
    match stack.pop() {
        Some(open) => Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        )),
        None => Ok(out),
    }
}

fn numeric_entity(entity: &str) -> Option<char> {
    let digits = entity.strip_prefix('#')?;
    let code = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    char::from_u32(code)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_telegram_html() {
        assert_eq!(
            parse("<b>bold</b> &lt;x&gt; &amp; &quot;").as_deref(),
            Ok("bold <x> & \"")
        );
        assert_eq!(
            parse("<pre><code class=\"language-rust\">fn x()</code></pre>").as_deref(),
            Ok("fn x()")
        );
        assert_eq!(
            parse("<a href=\"https://x\">l</a> a > b").as_deref(),
            Ok("l a > b")
        );
        assert_eq!(parse("&#128578;&#x41;").as_deref(), Ok("🙂A"));
    }

    #[test]
    fn refuses_what_telegram_refuses() {
        for bad in [
            "<foo>x</foo>",
            "<b>x",
            "<b>x</i>",
            "x</b>",
            "a < b",
            "a & b",
            "&nbsp;",
            "<code><b>x</b></code>",
            "<a>x</a>",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
