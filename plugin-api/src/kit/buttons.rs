//! Button ids for question cards: `ncq:<question_id>:<index>`.
//!
//! The option's index, not its value, goes into the id, because Telegram limits
//! `callback_data` to 64 bytes. The host keeps the question's options and maps the index
//! back. A tail that is not a number is kept as a literal value (older cards).

/// Prefix of question-card button ids.
pub const BUTTON_ID_PREFIX: &str = "ncq:";

/// The most bytes a button id may have on the strictest platform (Telegram).
pub const BUTTON_ID_MAX_BYTES: usize = 64;

/// The choice a button id carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonChoice<'a> {
    /// The option's index in the question.
    Index(u32),
    /// A literal value (ids written before indexes were used).
    Literal(&'a str),
}

/// A decoded button id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonId<'a> {
    /// The question id.
    pub question_id: &'a str,
    /// Which option.
    pub choice: ButtonChoice<'a>,
}

/// `ncq:<question_id>:<index>`. Keep question ids short: the whole id should stay within
/// [`BUTTON_ID_MAX_BYTES`].
pub fn encode_button_id(question_id: &str, index: u32) -> String {
    format!("{BUTTON_ID_PREFIX}{question_id}:{index}")
}

/// Decodes an id made by [`encode_button_id`]; `None` for ids that are not question-card
/// buttons (no `ncq:` prefix, no question id, or no option).
pub fn decode_button_id(id: &str) -> Option<ButtonId<'_>> {
    let rest = id.strip_prefix(BUTTON_ID_PREFIX)?;
    let (question_id, tail) = rest.rsplit_once(':')?;
    if question_id.is_empty() || tail.is_empty() {
        return None;
    }
    let choice = match tail.parse::<u32>() {
        Ok(index) if tail.bytes().all(|b| b.is_ascii_digit()) => ButtonChoice::Index(index),
        _ => ButtonChoice::Literal(tail),
    };
    Some(ButtonId {
        question_id,
        choice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_legacy() {
        let id = encode_button_id("q-17", 2);
        assert_eq!(id, "ncq:q-17:2");
        assert_eq!(
            decode_button_id(&id),
            Some(ButtonId {
                question_id: "q-17",
                choice: ButtonChoice::Index(2)
            })
        );
        assert_eq!(
            decode_button_id("ncq:q1:approve").map(|b| b.choice),
            Some(ButtonChoice::Literal("approve"))
        );
        assert_eq!(
            decode_button_id("ncq:q1:+3").map(|b| b.choice),
            Some(ButtonChoice::Literal("+3"))
        );
    }

    #[test]
    fn rejects_foreign_ids() {
        for id in [
            "",
            "ncq:",
            "ncq:q1",
            "ncq::1",
            "ncq:q1:",
            "other:q1:1",
            "NCQ:q1:1",
        ] {
            assert_eq!(decode_button_id(id), None, "{id}");
        }
    }

    proptest! {
        #[test]
        fn any_question_id_round_trips(q in "[^\u{0}]{1,40}", index in any::<u32>()) {
            let id = encode_button_id(&q, index);
            let decoded = decode_button_id(&id).expect("decodes");
            prop_assert_eq!(decoded.question_id, q.as_str());
            prop_assert_eq!(decoded.choice, ButtonChoice::Index(index));
        }
    }
}
