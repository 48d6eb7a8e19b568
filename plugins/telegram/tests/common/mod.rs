//! Shared helpers: the fake, a plugin instance on a `MemoryHost`, a host that can hold an
//! inbound call, and waiting with a deadline.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nanoclaw_fake_telegram::{FakeTelegram, Person};
use nanoclaw_plugin_api::abi::{
    ActionEvent, HostServices, HostServices_TO, InboundEvent, LogLevel, PluginError,
};
use nanoclaw_plugin_api::abi_stable::sabi_trait::TD_Opaque;
use nanoclaw_plugin_api::abi_stable::std_types::{RArc, ROption, RResult, RStr, RString, RVec};
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use nanoclaw_plugin_api::kit::{Channel, Context, Host};
use nanoclaw_plugin_telegram::TelegramChannel;
use serde_json::{Value, json};

pub const TOKEN: &str = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";
/// The part of the token that is secret (it must never show up anywhere).
pub const TOKEN_SECRET: &str = "ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn fake() -> FakeTelegram {
    FakeTelegram::start(TOKEN).expect("start the fake Telegram")
}

pub fn ann() -> Person {
    Person::new(6_037_840_640, "Ann")
        .last_name("Lee")
        .username("annlee")
}

pub fn bob() -> Person {
    Person::new(7_000_000_001, "Bob")
}

pub fn settings(fake: &FakeTelegram) -> Value {
    json!({"bot_token": TOKEN, "api_base_url": fake.base_url(), "poll_timeout_secs": 5})
}

pub fn create_with(host: Host, settings: Value) -> Result<TelegramChannel, PluginError> {
    TelegramChannel::create(Context {
        instance_name: "telegram".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host,
    })
}

/// A started plugin on `mem`, pointed at `fake`.
pub fn started(fake: &FakeTelegram, mem: &MemoryHost) -> TelegramChannel {
    let channel = create_with(mem.host(), settings(fake)).expect("create");
    channel.start().expect("start");
    channel
}

/// Polls `check` until it gives `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()));
}

pub fn texts(mem: &MemoryHost) -> Vec<String> {
    mem.inbound().iter().map(|e| e.text.to_string()).collect()
}

/// A host that stores everything in a `MemoryHost` but can hold one inbound call *after*
/// the message was stored, as if the plugin were stopped before the host's answer came
/// back. Released by [`GateHost::release`].
#[derive(Clone)]
pub struct GateHost {
    pub mem: MemoryHost,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Default)]
struct Gate {
    hold_text: Option<String>,
    held: bool,
    released: bool,
    /// Messages with this text are refused (not stored) with this error.
    refuse: Option<(String, PluginError)>,
    refusals: u32,
}

impl GateHost {
    pub fn new(mem: MemoryHost) -> Self {
        Self {
            mem,
            gate: Arc::default(),
        }
    }

    /// The next inbound message with this text is stored, then its call blocks.
    pub fn hold(&self, text: &str) {
        let mut gate = self.gate.0.lock().expect("gate");
        gate.hold_text = Some(text.to_owned());
    }

    /// From now on, every message with this text is refused with `error`, as a host does
    /// with an event it cannot store; others are stored as usual.
    pub fn refuse(&self, text: &str, error: PluginError) {
        self.gate.0.lock().expect("gate").refuse = Some((text.to_owned(), error));
    }

    /// How many times a message was refused.
    pub fn refusals(&self) -> u32 {
        self.gate.0.lock().expect("gate").refusals
    }

    /// True once a call is being held.
    pub fn is_holding(&self) -> bool {
        self.gate.0.lock().expect("gate").held
    }

    pub fn release(&self) {
        let mut gate = self.gate.0.lock().expect("gate");
        gate.released = true;
        self.gate.1.notify_all();
    }

    pub fn host(&self) -> Host {
        Host::new(HostServices_TO::from_ptr(
            RArc::new(self.clone()),
            TD_Opaque,
        ))
    }
}

impl HostServices for GateHost {
    fn on_inbound(&self, event: InboundEvent) -> RResult<(), PluginError> {
        let text = event.text.to_string();
        {
            let mut gate = self.gate.0.lock().expect("gate");
            if let Some((refused, error)) = &gate.refuse
                && *refused == text
            {
                let error = error.clone();
                gate.refusals += 1;
                return RResult::RErr(error);
            }
        }
        let result = HostServices::on_inbound(&self.mem, event);
        let (lock, cvar) = &*self.gate;
        let mut gate = lock.lock().expect("gate");
        if gate.hold_text.as_deref() == Some(text.as_str()) {
            gate.hold_text = None;
            gate.held = true;
            while !gate.released {
                gate = cvar.wait(gate).expect("gate");
            }
        }
        result
    }
    fn on_action(&self, event: ActionEvent) -> RResult<(), PluginError> {
        HostServices::on_action(&self.mem, event)
    }
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        HostServices::log(&self.mem, level, target, message)
    }
    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
        HostServices::kv_get(&self.mem, key)
    }
    fn kv_set(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<(), PluginError> {
        HostServices::kv_set(&self.mem, key, value, ttl_ms)
    }
    fn kv_set_if_absent(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<bool, PluginError> {
        HostServices::kv_set_if_absent(&self.mem, key, value, ttl_ms)
    }
    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, PluginError> {
        HostServices::kv_delete(&self.mem, key)
    }
    fn subscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError> {
        HostServices::subscribe(&self.mem, thread)
    }
    fn unsubscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError> {
        HostServices::unsubscribe(&self.mem, thread)
    }
    fn is_subscribed(&self, thread: RStr<'_>) -> RResult<bool, PluginError> {
        HostServices::is_subscribed(&self.mem, thread)
    }
    fn lock_acquire(&self, name: RStr<'_>, ttl_ms: u64) -> RResult<ROption<RString>, PluginError> {
        HostServices::lock_acquire(&self.mem, name, ttl_ms)
    }
    fn lock_extend(
        &self,
        name: RStr<'_>,
        token: RStr<'_>,
        ttl_ms: u64,
    ) -> RResult<bool, PluginError> {
        HostServices::lock_extend(&self.mem, name, token, ttl_ms)
    }
    fn lock_release(&self, name: RStr<'_>, token: RStr<'_>) -> RResult<bool, PluginError> {
        HostServices::lock_release(&self.mem, name, token)
    }
    fn list_append(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        max_len: ROption<u32>,
        ttl_ms: ROption<u64>,
    ) -> RResult<u32, PluginError> {
        HostServices::list_append(&self.mem, key, value, max_len, ttl_ms)
    }
    fn list_get(&self, key: RStr<'_>) -> RResult<RVec<RString>, PluginError> {
        HostServices::list_get(&self.mem, key)
    }
    fn list_pop_front(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
        HostServices::list_pop_front(&self.mem, key)
    }
    fn extension(&self, method: RStr<'_>, args_json: RStr<'_>) -> RResult<RString, PluginError> {
        HostServices::extension(&self.mem, method, args_json)
    }
}
