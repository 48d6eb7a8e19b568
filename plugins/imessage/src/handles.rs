//! iMessage handles: phone numbers to E.164, emails lower-cased, so one person is one user;
//! chat guids.

/// Country calling codes for the `default_country` setting (ISO 3166 alpha-2).
const COUNTRIES: &[(&str, &str)] = &[
    ("US", "1"),
    ("CA", "1"),
    ("GB", "44"),
    ("IE", "353"),
    ("DE", "49"),
    ("AT", "43"),
    ("CH", "41"),
    ("FR", "33"),
    ("BE", "32"),
    ("NL", "31"),
    ("LU", "352"),
    ("ES", "34"),
    ("PT", "351"),
    ("IT", "39"),
    ("SE", "46"),
    ("NO", "47"),
    ("DK", "45"),
    ("FI", "358"),
    ("PL", "48"),
    ("CZ", "420"),
    ("AU", "61"),
    ("NZ", "64"),
    ("JP", "81"),
    ("KR", "82"),
    ("IN", "91"),
    ("SG", "65"),
    ("HK", "852"),
    ("BR", "55"),
    ("MX", "52"),
    ("ZA", "27"),
    ("IL", "972"),
];

/// The calling code of `country` (`US` → `1`).
pub(crate) fn calling_code(country: &str) -> Option<&'static str> {
    COUNTRIES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(country.trim()))
        .map(|(_, code)| *code)
}

/// A handle as one stable id: an email lower-cased, a phone number in E.164 (`+` and 8 to
/// 15 digits; national numbers get `country_code`, their trunk `0` dropped except in
/// Italy). `None` for anything else.
pub(crate) fn normalize(raw: &str, country_code: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.contains('@') {
        let lower = raw.to_ascii_lowercase();
        let (local, domain) = lower.split_once('@')?;
        let ok = !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && lower.len() <= 254
            && lower
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | '<' | '>' | '"' | ','));
        return ok.then_some(lower);
    }
    let mut digits = String::new();
    let mut plus = false;
    for (i, c) in raw.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '(' | ')' | '.' | '\u{a0}' => {}
            _ => return None,
        }
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if country_code == "1" {
        match digits.len() {
            10 => format!("1{digits}"),
            11 if digits.starts_with('1') => digits,
            _ => return None,
        }
    } else if country_code == "39" {
        format!("39{digits}")
    } else {
        format!(
            "{country_code}{}",
            digits.strip_prefix('0').unwrap_or(&digits)
        )
    };
    let len = international.len();
    if !(8..=15).contains(&len) || international.starts_with('0') {
        return None;
    }
    Some(format!("+{international}"))
}

/// `iMessage;+;chat123` is a group; `iMessage;-;+1555…` / `SMS;-;…` a one-to-one chat.
pub(crate) fn is_group_guid(guid: &str) -> bool {
    guid.contains(";+;")
}

/// A chat guid BlueBubbles accepts: `<service>;<-|+>;<identifier>`, no control characters.
pub(crate) fn is_chat_guid(guid: &str) -> bool {
    let parts: Vec<&str> = guid.split(';').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && matches!(parts[1], "-" | "+")
        && !parts[2].is_empty()
        && guid.len() <= 256
        && !guid.chars().any(char::is_control)
}

/// A message guid (an id we put in a request): letters, digits and `-:_/.`.
pub(crate) fn is_message_guid(guid: &str) -> bool {
    !guid.is_empty()
        && guid.len() <= 128
        && guid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '_' | '/' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_one_handle() {
        for raw in [
            "+1 (555) 123-4567",
            "555-123-4567",
            "15551234567",
            "+15551234567",
            "001 555 123 4567",
        ] {
            assert_eq!(
                normalize(raw, "1").as_deref(),
                Some("+15551234567"),
                "{raw}"
            );
        }
        assert_eq!(
            normalize("030 1234567", "49").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize("+49 30 1234567", "1").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize("06 1234 5678", "39").as_deref(),
            Some("+390612345678")
        );
        assert_eq!(
            normalize("07700 900123", "44").as_deref(),
            Some("+447700900123")
        );
        assert_eq!(
            normalize("Bob@iCloud.COM", "1").as_deref(),
            Some("bob@icloud.com")
        );
        for bad in [
            "",
            "12",
            "+1 555 CALL NOW",
            "bob@",
            "a;b@c.d",
            "555-1234",
            "+0123456789",
        ] {
            assert_eq!(normalize(bad, "1"), None, "{bad:?}");
        }
        assert_eq!(calling_code("us"), Some("1"));
        assert_eq!(calling_code("XX"), None);
    }

    #[test]
    fn guids() {
        assert!(is_group_guid("iMessage;+;chat493787383944215683"));
        assert!(!is_group_guid("iMessage;-;+15551234567"));
        assert!(is_chat_guid("SMS;-;+15551234567"));
        assert!(!is_chat_guid("iMessage;-;"));
        assert!(!is_chat_guid("+15551234567"));
        assert!(is_message_guid("8F3A1C2B-7D1C-4B5E-9F00-000000000001"));
        assert!(is_message_guid("p:0/8F3A1C2B-7D1C"));
        assert!(!is_message_guid("x?password=y"));
    }
}
