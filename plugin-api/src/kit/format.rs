//! What a channel's text looks like on the wire: its markup and how its length is counted.
//!
//! These types are always part of the kit (the manifest carries them); turning Markdown into
//! a markup needs the `kit-render` feature ([`render`](super::render)).

use std::fmt;

/// The markup a channel renders the agent's Markdown into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Markup {
    /// The text exactly as the agent wrote it (Markdown source), only split. The default, and
    /// the only markup available without the `kit-render` feature.
    #[default]
    Verbatim,
    /// Markdown rendered as plain text: no markers, lists with bullets, links as
    /// `label (url)` (SMS, iMessage, an email's text part).
    PlainText,
    /// Telegram Bot API HTML (`parse_mode = "HTML"`): b, i, s, code, pre, a, blockquote,
    /// tg-spoiler; everything else escaped.
    TelegramHtml,
    /// Slack mrkdwn: `*bold*`, `_italic_`, `~strike~`, `<url|label>`; `&`, `<`, `>` escaped.
    SlackMrkdwn,
    /// Discord Markdown: `**bold**`, `*italic*`, `~~strike~~`, `||spoiler||`, headings 1-3,
    /// masked links; backslash escapes.
    DiscordMarkdown,
    /// The Markdown subset Microsoft Teams and Webex both render in plain messages: bold,
    /// italic, strikethrough, lists, code, quotes, links (no headings, rules or tables).
    TeamsMarkdown,
    /// WhatsApp: `*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ```mono``` ````,
    /// `> quote`; links as `label (url)`.
    WhatsApp,
    /// Matrix `org.matrix.custom.html` (`formatted_body`); the plain part is the `body`.
    MatrixHtml,
    /// HTML for an email body; the plain part is the `text/plain` alternative.
    EmailHtml,
}

impl Markup {
    /// Every markup, for listings and tests.
    pub const ALL: [Self; 9] = [
        Self::Verbatim,
        Self::PlainText,
        Self::TelegramHtml,
        Self::SlackMrkdwn,
        Self::DiscordMarkdown,
        Self::TeamsMarkdown,
        Self::WhatsApp,
        Self::MatrixHtml,
        Self::EmailHtml,
    ];

    /// The name used in the manifest (`telegram_html`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Verbatim => "verbatim",
            Self::PlainText => "plain_text",
            Self::TelegramHtml => "telegram_html",
            Self::SlackMrkdwn => "slack_mrkdwn",
            Self::DiscordMarkdown => "discord_markdown",
            Self::TeamsMarkdown => "teams_markdown",
            Self::WhatsApp => "whatsapp",
            Self::MatrixHtml => "matrix_html",
            Self::EmailHtml => "email_html",
        }
    }

    /// The markup with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// True for the HTML markups (tags must balance in every part).
    pub const fn is_html(self) -> bool {
        matches!(
            self,
            Self::TelegramHtml | Self::MatrixHtml | Self::EmailHtml
        )
    }
}

impl fmt::Display for Markup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a platform counts the length of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LengthUnit {
    /// Unicode scalar values (Rust `char`s).
    #[default]
    Chars,
    /// UTF-16 code units, as Telegram and Discord count (an emoji outside the BMP is 2).
    Utf16,
    /// UTF-8 bytes (Webex, Matrix event sizes).
    Bytes,
}

impl LengthUnit {
    /// The name used in the manifest (`chars`, `utf16`, `bytes`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Chars => "chars",
            Self::Utf16 => "utf16",
            Self::Bytes => "bytes",
        }
    }

    /// The unit with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Chars, Self::Utf16, Self::Bytes]
            .into_iter()
            .find(|u| u.name() == name)
    }

    /// The length of one character in this unit.
    pub const fn of_char(self, c: char) -> usize {
        match self {
            Self::Chars => 1,
            Self::Utf16 => c.len_utf16(),
            Self::Bytes => c.len_utf8(),
        }
    }

    /// The length of `text` in this unit.
    pub fn measure(self, text: &str) -> usize {
        match self {
            Self::Chars => text.chars().count(),
            Self::Utf16 => text.chars().map(char::len_utf16).sum(),
            Self::Bytes => text.len(),
        }
    }
}

impl fmt::Display for LengthUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// At most `max` [`LengthUnit`]s per message; `max == 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TextLimit {
    /// The maximum, 0 = none.
    pub max: usize,
    /// How it is counted.
    pub unit: LengthUnit,
}

impl TextLimit {
    /// No limit.
    pub const NONE: Self = Self {
        max: 0,
        unit: LengthUnit::Chars,
    };

    /// `max` units of `unit` (0 = no limit).
    pub const fn new(max: usize, unit: LengthUnit) -> Self {
        Self { max, unit }
    }

    /// True when there is no limit.
    pub const fn is_unlimited(self) -> bool {
        self.max == 0
    }

    /// True when `text` is within the limit.
    pub fn fits(self, text: &str) -> bool {
        self.is_unlimited() || self.unit.measure(text) <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Markup::ALL {
            assert_eq!(Markup::from_name(m.name()), Some(m));
        }
        assert_eq!(Markup::from_name("html"), None);
        for u in [LengthUnit::Chars, LengthUnit::Utf16, LengthUnit::Bytes] {
            assert_eq!(LengthUnit::from_name(&u.to_string()), Some(u));
        }
    }

    #[test]
    fn units_count_like_the_platforms() {
        let text = "é🙂a";
        assert_eq!(LengthUnit::Chars.measure(text), 3);
        assert_eq!(LengthUnit::Utf16.measure(text), 4);
        assert_eq!(LengthUnit::Bytes.measure(text), 7);
        assert_eq!(LengthUnit::Utf16.of_char('🙂'), 2);
        assert!(TextLimit::new(4, LengthUnit::Utf16).fits(text));
        assert!(!TextLimit::new(6, LengthUnit::Bytes).fits(text));
        assert!(TextLimit::NONE.fits(&"x".repeat(100_000)));
    }
}
