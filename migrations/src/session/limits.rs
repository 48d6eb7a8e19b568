//! Bounds the host enforces on what an agent writes (the agent-runner keeps inside them; a
//! row beyond them is recorded `failed` with the reason, and nothing else is held up).

/// Longest `messages_out.id`, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 64;
/// Largest `messages_out.content` (JSON), in bytes.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// Longest text of one outbound message, in characters (it is split for the platform).
pub const MAX_TEXT_CHARS: usize = 40_000;
/// Files one outbound message may carry.
pub const MAX_FILES_PER_MESSAGE: usize = 10;
/// Largest single outbound file, in bytes.
pub const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// Largest total of one message's files, in bytes.
pub const MAX_MESSAGE_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Parts one message may be split into for a platform.
pub const MAX_PARTS: usize = 20;
/// Options of one question card.
pub const MAX_QUESTION_OPTIONS: usize = 10;
/// Longest other short field (ids, emoji, option labels, names), in bytes.
pub const MAX_SHORT_FIELD_BYTES: usize = 512;
