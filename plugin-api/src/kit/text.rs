//! Splitting long text for platforms with a length limit.

/// Splits `text` into chunks of at most `max_chars` characters (Unicode scalar values).
///
/// Each cut goes at the last paragraph break (`\n\n`) within the limit, else the last
/// newline, else the last space, else exactly at the limit (never inside a character).
/// A break at the very start of the window doesn't count. Each chunk loses its trailing
/// whitespace and the rest of the text its leading whitespace; empty chunks are dropped.
/// `max_chars == 0` means no limit.
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    if max_chars == 0 {
        let whole = text.trim_end();
        if !whole.is_empty() {
            chunks.push(whole.to_owned());
        }
        return chunks;
    }
    let mut rest = text;
    loop {
        // Byte index just past the `max_chars`-th character, or None if `rest` fits.
        let Some((limit, _)) = rest.char_indices().nth(max_chars) else {
            let last = rest.trim_end();
            if !last.is_empty() {
                chunks.push(last.to_owned());
            }
            return chunks;
        };
        let window = &rest[..limit];
        let cut = [window.rfind("\n\n"), window.rfind('\n'), window.rfind(' ')]
            .into_iter()
            .flatten()
            .find(|&at| at > 0)
            .unwrap_or(limit);
        let chunk = rest[..cut].trim_end();
        if !chunk.is_empty() {
            chunks.push(chunk.to_owned());
        }
        rest = rest[cut..].trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::split_text;
    use proptest::prelude::*;

    #[test]
    fn prefers_paragraphs_then_lines_then_spaces() {
        assert_eq!(
            split_text("aaaa bbbb\ncccc\n\ndddd", 16),
            ["aaaa bbbb\ncccc", "dddd"]
        );
        assert_eq!(
            split_text("aaaa bbbb\ncccc dddd", 16),
            ["aaaa bbbb", "cccc dddd"]
        );
        assert_eq!(split_text("aaaa bbbb cccc", 10), ["aaaa bbbb", "cccc"]);
        assert_eq!(split_text("abcdefghij", 4), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn short_and_empty_text() {
        assert_eq!(split_text("hello", 10), ["hello"]);
        assert_eq!(split_text("hello  \n", 5), ["hello"]);
        assert!(split_text("", 10).is_empty());
        assert!(split_text(" \n\n ", 2).is_empty());
        assert_eq!(split_text("no limit at all", 0), ["no limit at all"]);
    }

    #[test]
    fn never_cuts_inside_a_character() {
        let text = "ééééé🙂🙂🙂";
        let chunks = split_text(text, 3);
        assert_eq!(chunks, ["ééé", "éé🙂", "🙂🙂"]);
    }

    #[test]
    fn break_at_window_start_is_ignored() {
        // A newline at position 0 can't be a cut point (it would make an empty chunk);
        // the text's own leading whitespace is kept, only the rest is left-trimmed.
        assert_eq!(split_text("\nabcdef", 3), ["\nab", "cde", "f"]);
        assert_eq!(split_text("ab\n\ncdef", 3), ["ab", "cde", "f"]);
    }

    /// Checks the contract: every chunk is non-empty, within the limit, has no trailing
    /// whitespace, and the chunks are the original text in order with only the trimmed
    /// whitespace between them removed.
    fn check(text: &str, max: usize) -> Result<(), TestCaseError> {
        let chunks = split_text(text, max);
        let mut rest = text;
        for chunk in &chunks {
            prop_assert!(!chunk.is_empty());
            prop_assert!(chunk.chars().count() <= max, "chunk too long: {:?}", chunk);
            prop_assert_eq!(chunk.trim_end(), chunk.as_str());
            // Only whitespace may have been dropped before this chunk.
            if !rest.starts_with(chunk.as_str()) {
                rest = rest.trim_start();
            }
            prop_assert!(
                rest.starts_with(chunk.as_str()),
                "{:?} not next in {:?}",
                chunk,
                rest
            );
            rest = &rest[chunk.len()..];
        }
        prop_assert!(rest.trim().is_empty(), "text left over: {:?}", rest);
        Ok(())
    }

    proptest! {
        #[test]
        fn chunks_rejoin_to_the_original(text in "(\\PC|[ \n\t]){0,300}", max in 1usize..40) {
            check(&text, max)?;
        }

        #[test]
        fn wordy_text(words in proptest::collection::vec("[a-zé🙂]{1,12}", 0..60),
                      seps in proptest::collection::vec(prop::sample::select(vec![" ", "\n", "\n\n", "  "]), 60),
                      max in 1usize..30) {
            let mut text = String::new();
            for (w, s) in words.iter().zip(seps.iter()) {
                text.push_str(w);
                text.push_str(s);
            }
            check(&text, max)?;
        }
    }
}
