//! The bot token never reaches a log line or an error, including what reqwest, hyper and
//! rustls log. This binary installs the kit's tracing forwarder as the loaded plugin does,
//! so dependency events are captured too; it has one test so that the forwarder's fallback
//! host is this test's host.

mod common;

use std::time::Duration;

use common::*;
use nanoclaw_fake_telegram::{Failure, UserMessage};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use nanoclaw_plugin_api::kit::tracing::level_filters::LevelFilter;
use nanoclaw_plugin_api::kit::{Channel, install_tracing};
use serde_json::json;

#[test]
fn the_token_appears_in_no_log_line_and_no_error() {
    let mem = MemoryHost::new();
    assert!(install_tracing(&mem.host(), LevelFilter::TRACE));
    let fake = fake();
    let mut errors: Vec<PluginError> = Vec::new();

    // A refused token at start.
    let other =
        nanoclaw_fake_telegram::FakeTelegram::start("999:ZZZdefGHIjklMNOpqrSTUvwxYZ0123456789")
            .expect("fake");
    let refused = create_with(mem.host(), settings(&other)).expect("create");
    errors.push(refused.start().expect_err("401"));
    refused.teardown();

    // Settings errors.
    errors.push(
        create_with(mem.host(), json!({"bot_token": format!("{TOKEN} ")}))
            .err()
            .expect("whitespace around the token"),
    );
    // The classic mistake: the token pasted into the base URL as well.
    for url in [
        format!("https://api.telegram.org/bot{TOKEN}"),
        format!("https://api.telegram.org/bot{TOKEN}/?x=1"),
    ] {
        let err = create_with(mem.host(), json!({"bot_token": TOKEN, "api_base_url": url}))
            .err()
            .expect("refused");
        assert!(err.message.contains("api_base_url"), "{err}");
        errors.push(err);
    }

    // A running plugin through every kind of failure.
    let channel = started(&fake, &mem);
    fake.send_user_message(UserMessage::private(ann(), "hi").photo(vec![1, 2, 3]))
        .expect("inject");
    wait_until("the DM", || mem.inbound().len() == 1);
    for failure in [
        Failure::DropConnection,
        Failure::ServerError,
        Failure::BadGateway,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
        Failure::Unauthorized,
    ] {
        fake.fail_next_method("sendMessage", 1, failure);
        errors.push(
            channel
                .deliver(OutboundMessage {
                    chat_id: "6037840640".into(),
                    text: "x".into(),
                    ..Default::default()
                })
                .expect_err("injected failure"),
        );
    }
    errors.push(
        channel
            .deliver(OutboundMessage {
                chat_id: "1".into(),
                text: "x".into(),
                ..Default::default()
            })
            .expect_err("unknown chat"),
    );
    fake.fail_next_method("getUpdates", 1, Failure::DropConnection);
    fake.send_user_message(UserMessage::private(ann(), "again"))
        .expect("inject");
    wait_until("the second DM", || mem.inbound().len() == 2);
    std::thread::sleep(Duration::from_millis(1200));
    channel.teardown();

    // An API that is not there at all.
    fake.stop();
    let gone = create_with(
        mem.host(),
        json!({"bot_token": TOKEN, "api_base_url": "http://127.0.0.1:9"}),
    )
    .expect("create");
    errors.push(gone.start().expect_err("nothing listens on port 9"));
    gone.teardown();

    let logs = mem.logs();
    assert!(
        logs.len() > 10,
        "the scenario logged ({} lines)",
        logs.len()
    );
    assert!(
        logs.iter()
            .any(|l| l.target.starts_with("hyper") || l.target.starts_with("reqwest")),
        "dependency events are captured too"
    );
    for line in &logs {
        assert!(
            !line.message.contains(TOKEN_SECRET),
            "token in a log line: {line:?}"
        );
    }
    assert!(errors.len() >= 8);
    for error in &errors {
        assert!(
            !error.message.contains(TOKEN_SECRET),
            "token in an error: {error}"
        );
    }
    for event in mem.inbound() {
        assert!(!format!("{event:?}").contains(TOKEN_SECRET));
    }
}
