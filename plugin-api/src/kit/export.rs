//! What [`export_plugin!`](crate::export_plugin) expands to. Not a public API: the macro
//! calls these items through `$crate::kit::export`.

use std::mem::ManuallyDrop;
use std::path::PathBuf;

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};

use super::channel::ropt_str;
use super::guard::{guard, guard_or};
use super::prepare::{self, is_prepared};
use super::{Channel, Context, Host, with_current_host};
use crate::abi::{
    ChannelAdapter, ChannelAdapter_TO, ChannelAdapterBox, Health, HealthStatus, HostServicesBox,
    Manifest, OutboundMessage, PluginConfig, PluginError, PluginMod, PluginModRef, WebhookRequest,
    WebhookResponse,
};

/// Builds the manifest of `C` (guarded: a panic yields an empty manifest, which the host
/// rejects as invalid instead of dying).
pub fn manifest<C: Channel>() -> Manifest {
    guard_or(
        || {
            let info = C::INFO;
            Manifest {
                name: info.name.into(),
                channel_type: info.channel_type.into(),
                version: info.version.into(),
                abi_version: crate::ABI_VERSION.into(),
                capabilities: info.capabilities,
                max_text_length: info.max_text_length,
                description: info.description.into(),
                extra_json: manifest_extra(&info).into(),
            }
        },
        |_| Manifest::default(),
    )
}

/// The channel's own extra JSON with the text format added (`markup`, `text_unit`): the
/// manifest has no fields for them, and its layout cannot change within 1.x.
fn manifest_extra(info: &super::ChannelInfo) -> String {
    let mut extra = match serde_json::from_str::<serde_json::Value>(info.extra_json) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    extra.insert("markup".to_owned(), info.markup.name().into());
    extra.insert("text_unit".to_owned(), info.text_unit.name().into());
    serde_json::Value::Object(extra).to_string()
}

/// The root module of a plugin whose channel is `C`.
pub fn root_module<C: Channel>(manifest: extern "C" fn() -> Manifest) -> PluginModRef {
    PluginMod {
        manifest,
        create: create::<C>,
        channels: no_channels,
        create_channel: no_bundle,
    }
    .leak_into_prefix()
}

extern "C" fn no_channels() -> RVec<Manifest> {
    RVec::new()
}

extern "C" fn no_bundle(
    channel_type: RString,
    _config: PluginConfig,
    _services: HostServicesBox,
) -> RResult<ChannelAdapterBox, PluginError> {
    RResult::RErr(PluginError::unsupported(format_args!(
        "this library carries one channel, not a bundle; creating {channel_type:?}"
    )))
}

/// The manifest of a bundle: its name, version and description, no channel type of its own.
pub fn bundle_manifest(name: &str, version: &str, description: &str) -> Manifest {
    Manifest {
        name: name.into(),
        channel_type: RString::new(),
        version: version.into(),
        abi_version: crate::ABI_VERSION.into(),
        capabilities: crate::abi::Capabilities::NONE,
        max_text_length: 0,
        description: description.into(),
        extra_json: RString::new(),
    }
}

/// The root module of a bundle (see [`export_channels!`](crate::export_channels)).
pub fn bundle_root_module(
    manifest: extern "C" fn() -> Manifest,
    channels: extern "C" fn() -> RVec<Manifest>,
    create_channel: extern "C" fn(
        RString,
        PluginConfig,
        HostServicesBox,
    ) -> RResult<ChannelAdapterBox, PluginError>,
) -> PluginModRef {
    PluginMod {
        manifest,
        create: bundle_create,
        channels,
        create_channel,
    }
    .leak_into_prefix()
}

extern "C" fn bundle_create(
    _config: PluginConfig,
    _services: HostServicesBox,
) -> RResult<ChannelAdapterBox, PluginError> {
    RResult::RErr(PluginError::unsupported(
        "create() of a bundle (name the channel: the host calls create_channel)",
    ))
}

/// The error of a bundle asked for a channel it does not carry.
pub fn not_bundled(channel_type: &str) -> RResult<ChannelAdapterBox, PluginError> {
    RResult::RErr(PluginError::not_found(format!(
        "this bundle carries no channel {channel_type:?}"
    )))
}

/// The ABI `create`: installs the tracing forwarder, builds the context, calls `C::create`.
pub extern "C" fn create<C: Channel>(
    config: PluginConfig,
    services: HostServicesBox,
) -> RResult<ChannelAdapterBox, PluginError> {
    guard(|| {
        let host = Host::new(services);
        super::log::install_plugin_tracing(&host, C::log_crate());
        let ctx = Context {
            instance_name: config.instance_name.into_string(),
            settings_json: config.settings_json.into_string(),
            data_dir: PathBuf::from(config.data_dir.into_string()),
            extra_json: config.extra_json.into_string(),
            host: host.clone(),
        };
        let channel = with_current_host(&host, || C::create(ctx))?;
        Ok(ChannelAdapter_TO::from_value(
            Adapter {
                channel: ManuallyDrop::new(channel),
                host,
            },
            TD_Opaque,
        ))
    })
}

/// Implements the ABI trait for any [`Channel`]: every method runs inside a panic guard,
/// with this instance's host as the destination of `tracing` events.
pub struct Adapter<C: Channel> {
    channel: ManuallyDrop<C>,
    host: Host,
}

impl<C: Channel> Adapter<C> {
    fn with<T>(&self, f: impl FnOnce(&C) -> T) -> T {
        with_current_host(&self.host, || f(&self.channel))
    }
}

impl<C: Channel> Drop for Adapter<C> {
    fn drop(&mut self) {
        let host = self.host.clone();
        let channel = &mut self.channel;
        guard_or(
            || {
                with_current_host(&host, || {
                    // SAFETY: `channel` is dropped exactly once, here, and never used again.
                    unsafe { ManuallyDrop::drop(channel) }
                })
            },
            |msg| {
                tracing::error!(
                    "{} panicked while being dropped: {msg}",
                    C::INFO.channel_type
                )
            },
        );
    }
}

impl<C: Channel> ChannelAdapter for Adapter<C> {
    fn start(&self) -> RResult<(), PluginError> {
        guard(|| self.with(|c| c.start()))
    }

    fn deliver(&self, message: OutboundMessage) -> RResult<ROption<RString>, PluginError> {
        guard(|| {
            self.with(|c| {
                if is_prepared(&message) {
                    return c.deliver(message);
                }
                // From a host that does not call `prepare` (ABI 1.0): prepare here and send
                // every part; the id is the first part's.
                let mut first = None;
                for part in prepare::seal(c.render(message)?, C::INFO.markup) {
                    let id = c.deliver(part)?;
                    if first.is_none() {
                        first = id;
                    }
                }
                Ok(first)
            })
            .map(|id| id.map(RString::from).into())
        })
    }

    fn prepare(&self, message: OutboundMessage) -> RResult<RVec<OutboundMessage>, PluginError> {
        guard(|| {
            if is_prepared(&message) {
                // Already a part: rendering it again would escape its markup twice.
                return Ok(RVec::from(vec![message]));
            }
            self.with(|c| c.render(message))
                .map(|parts| prepare::to_abi(parts, C::INFO.markup))
        })
    }

    fn set_typing(&self, chat_id: RStr<'_>, thread_id: ROption<RStr<'_>>) {
        guard_or(
            || self.with(|c| c.set_typing(chat_id.as_str(), ropt_str(thread_id))),
            |msg| tracing::error!("set_typing panicked: {msg}"),
        );
    }

    fn open_dm(&self, user_handle: RStr<'_>) -> RResult<RString, PluginError> {
        guard(|| {
            self.with(|c| c.open_dm(user_handle.as_str()))
                .map(RString::from)
        })
    }

    fn handle_webhook(&self, request: WebhookRequest) -> RResult<WebhookResponse, PluginError> {
        guard(|| self.with(|c| c.handle_webhook(request)))
    }

    fn health(&self) -> Health {
        guard_or(
            || self.with(|c| c.health()),
            |msg| Health::new(HealthStatus::DOWN, format!("health() panicked: {msg}"), 0),
        )
    }

    fn extension(&self, method: RStr<'_>, args_json: RStr<'_>) -> RResult<RString, PluginError> {
        guard(|| {
            self.with(|c| c.extension(method.as_str(), args_json.as_str()))
                .map(RString::from)
        })
    }

    fn teardown(&self) {
        guard_or(
            || self.with(|c| c.teardown()),
            |msg| tracing::error!("teardown panicked: {msg}"),
        );
    }
}

/// Exports a [`Channel`](crate::kit::Channel) implementation as a NanoClaw plugin.
///
/// Use it once, at the root of a `cdylib` crate: `nanoclaw_plugin_api::export_plugin!(MyChannel);`
///
/// It generates:
/// * the ABI marker: a `#[used]` 64-byte static `nanoclaw-plugin-abi=<version>` in its own
///   link section (`.nanoclaw_abi` on ELF), so the host can check the ABI version from the
///   file before running any plugin code;
/// * the manifest function, which reads the marker with `read_volatile` so the linker's
///   section garbage collection keeps it;
/// * abi_stable's exported `LibHeader` static for the root module, whose `create` builds
///   the channel and wraps every method in a panic guard.
#[macro_export]
macro_rules! export_plugin {
    ($channel:ty) => {
        $crate::__export_root_module!(
            $crate::kit::export::manifest::<$channel>(),
            $crate::kit::export::root_module::<$channel>
        );
    };
}

/// Exports several [`Channel`](crate::kit::Channel)s from one `cdylib` (a bundle): the host
/// loads the library once and creates each instance with the channel it names
/// (`channel = "…"` in `plugins.toml`). Channels in one library share one copy of the
/// runtime, HTTP and TLS stacks, which is what keeps many channels small. Each entry may
/// carry attributes, e.g. `#[cfg(feature = "telegram")]`, to build a smaller bundle.
///
/// ```ignore
/// nanoclaw_plugin_api::export_channels!(
///     #[cfg(feature = "telegram")] nanoclaw_plugin_telegram::TelegramChannel,
///     #[cfg(feature = "slack")] nanoclaw_plugin_slack::SlackChannel,
/// );
/// ```
///
/// The bundle's own manifest carries the invoking crate's name, version and description.
#[macro_export]
macro_rules! export_channels {
    ($( $(#[$attr:meta])* $channel:ty ),+ $(,)?) => {
        #[doc(hidden)]
        extern "C" fn __nanoclaw_bundle_channels(
        ) -> $crate::abi_stable::std_types::RVec<$crate::abi::Manifest> {
            #[allow(unused_mut)]
            let mut all = $crate::abi_stable::std_types::RVec::new();
            $( $(#[$attr])* all.push($crate::kit::export::manifest::<$channel>()); )+
            all
        }

        #[doc(hidden)]
        extern "C" fn __nanoclaw_bundle_create(
            channel_type: $crate::abi_stable::std_types::RString,
            config: $crate::abi::PluginConfig,
            services: $crate::abi::HostServicesBox,
        ) -> $crate::abi_stable::std_types::RResult<
            $crate::abi::ChannelAdapterBox,
            $crate::abi::PluginError,
        > {
            $(
                $(#[$attr])*
                if channel_type.as_str()
                    == <$channel as $crate::kit::Channel>::INFO.channel_type
                {
                    return $crate::kit::export::create::<$channel>(config, services);
                }
            )+
            let _ = (config, services);
            $crate::kit::export::not_bundled(channel_type.as_str())
        }

        #[doc(hidden)]
        fn __nanoclaw_bundle_root(
            manifest: extern "C" fn() -> $crate::abi::Manifest,
        ) -> $crate::abi::PluginModRef {
            $crate::kit::export::bundle_root_module(
                manifest,
                __nanoclaw_bundle_channels,
                __nanoclaw_bundle_create,
            )
        }

        $crate::__export_root_module!(
            $crate::kit::export::bundle_manifest(
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_DESCRIPTION"),
            ),
            __nanoclaw_bundle_root
        );
    };
}

/// What both export macros share: the ABI marker, the manifest function that keeps it, and
/// abi_stable's library header whose constructor builds the root module with `$root`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_root_module {
    ($manifest:expr, $root:path) => {
        #[doc(hidden)]
        #[used]
        #[cfg_attr(
            target_os = "macos",
            unsafe(link_section = "__DATA,__nanoclaw_abi")
        )]
        #[cfg_attr(windows, unsafe(link_section = ".ncabi"))]
        #[cfg_attr(
            not(any(target_os = "macos", windows)),
            unsafe(link_section = ".nanoclaw_abi")
        )]
        static __NANOCLAW_PLUGIN_ABI_MARKER: [u8; $crate::ABI_MARKER_LEN] = $crate::ABI_MARKER;

        #[doc(hidden)]
        extern "C" fn __nanoclaw_plugin_manifest() -> $crate::abi::Manifest {
            // Reading the marker makes it reachable from exported code, so `--gc-sections`
            // cannot drop its section.
            // SAFETY: a valid, aligned, initialised static.
            let _ = unsafe {
                ::core::ptr::read_volatile(::core::ptr::addr_of!(__NANOCLAW_PLUGIN_ABI_MARKER))
            };
            $manifest
        }

        #[doc(hidden)]
        fn __nanoclaw_plugin_root_module() -> $crate::abi::PluginModRef {
            $root(__nanoclaw_plugin_manifest)
        }

        /// abi_stable's library header (what `#[export_root_module]` would generate).
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::abi_stable::library::LibHeader = {
            extern "C" fn __nanoclaw_constructor() -> $crate::abi_stable::library::RootModuleResult
            {
                $crate::abi_stable::library::__call_root_module_loader(
                    __nanoclaw_plugin_root_module,
                )
            }
            // SAFETY: the constructor returns the erased `PluginModRef` built by
            // `__call_root_module_loader` for that same type.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<
                    $crate::abi::PluginModRef,
                >(
                    __nanoclaw_constructor,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
