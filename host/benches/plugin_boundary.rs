//! Cost of the plugin boundary, on the real release-built test plugin.
//!
//! * Loading (measured by hand, printed first): a library can be loaded only once per path
//!   per process, so each measurement loads a fresh copy of the .so at a new path
//!   (`inspect` + `lib_header_from_path` + `init_root_module` + manifest + `create`).
//!   The very first load of the process also initialises abi_stable's global state.
//! * Calls (criterion): `health()` and `deliver()` called directly on the adapter (one FFI
//!   round trip each), the same through [`PluginHandle`] (semaphore + `spawn_blocking` +
//!   timeout), and an inbound webhook whose plugin calls back into `HostServices`.
//!
//! Run: `cargo bench -p nanoclaw --bench plugin_boundary`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Profile, test_plugin};
use criterion::Criterion;
use nanoclaw::plugins::handle::{CallLimits, PluginHandle};
use nanoclaw::plugins::loader;
use nanoclaw_plugin_api::abi::{
    ChannelAdapterBox, OutboundMessage, PluginConfig, PluginError, WebhookRequest,
};
use nanoclaw_plugin_api::kit::testing::MemoryHost;

const COPIES: usize = 20;

fn load_and_create(path: &Path, host: &MemoryHost) -> (loader::PluginLibrary, ChannelAdapterBox) {
    let lib = loader::open("bench", path, None).expect("plugin loads");
    let adapter = lib
        .create(
            PluginConfig {
                instance_name: "bench".into(),
                settings_json: "{}".into(),
                ..PluginConfig::default()
            },
            host.services(),
        )
        .expect("create");
    (lib, adapter)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn measure_loading(lib: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = MemoryHost::new();

    // inspect() alone: read + parse the object file, find the marker.
    let mut inspect = Vec::new();
    for _ in 0..COPIES {
        let t = Instant::now();
        black_box(loader::inspect(lib).expect("inspect"));
        inspect.push(t.elapsed());
    }
    inspect.sort();

    let first_copy = dir.path().join("libfirst.so");
    std::fs::copy(lib, &first_copy).expect("copy");
    let t = Instant::now();
    let first = load_and_create(&first_copy, &host);
    let first_load = t.elapsed();
    black_box(&first);

    let mut loads = Vec::new();
    for i in 0..COPIES {
        let copy = dir.path().join(format!("libcopy{i}.so"));
        std::fs::copy(lib, &copy).expect("copy");
        let t = Instant::now();
        black_box(load_and_create(&copy, &host));
        loads.push(t.elapsed());
    }
    loads.sort();

    let size = std::fs::metadata(lib).map(|m| m.len()).unwrap_or(0);
    println!(
        "plugin library: {} ({:.1} MiB)",
        lib.display(),
        size as f64 / 1048576.0
    );
    println!(
        "inspect (no dlopen), {COPIES} runs: p50 {:?}, p90 {:?}, max {:?}",
        percentile(&inspect, 0.5),
        percentile(&inspect, 0.9),
        inspect[inspect.len() - 1]
    );
    println!("first load in process (inspect + dlopen + layout check + create): {first_load:?}");
    println!(
        "later loads, {COPIES} fresh copies: min {:?}, p50 {:?}, p90 {:?}, max {:?}",
        loads[0],
        percentile(&loads, 0.5),
        percentile(&loads, 0.9),
        loads[loads.len() - 1]
    );
}

fn message() -> OutboundMessage {
    OutboundMessage {
        chat_id: "-1001234".into(),
        text: "The quick brown fox jumps over the lazy dog.".into(),
        ..OutboundMessage::default()
    }
}

fn bench_calls(c: &mut Criterion, lib: &Path) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("libcalls.so");
    std::fs::copy(lib, &copy).expect("copy");
    let host = MemoryHost::new();
    let (library, adapter) = load_and_create(&copy, &host);
    let handle = PluginHandle::new(
        "bench",
        library.manifest.clone(),
        adapter,
        CallLimits::default(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("boundary");
    group.bench_function("health_direct", |b| {
        b.iter(|| black_box(handle.raw_adapter().health()))
    });
    group.bench_function("deliver_direct", |b| {
        b.iter(|| black_box(handle.raw_adapter().deliver(message())))
    });
    group.bench_function("health_via_handle", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(handle.health().await);
                }
                t.elapsed()
            })
        })
    });
    group.bench_function("deliver_via_handle", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(handle.deliver(message()).await.expect("deliver"));
                }
                t.elapsed()
            })
        })
    });
    // Inbound: webhook into the plugin, which parses JSON and calls HostServices::on_inbound
    // back across the boundary. The host refuses, so nothing accumulates in memory.
    host.set_reject_inbound(Some(PluginError::other("bench")));
    let body = br#"{"chat_id":"-1001234","sender_handle":"6037840640","text":"hello"}"#;
    group.bench_function("webhook_with_inbound_callback_direct", |b| {
        b.iter(|| {
            let req = WebhookRequest {
                method: "POST".into(),
                path: "/".into(),
                body: body.to_vec().into(),
                ..WebhookRequest::default()
            };
            black_box(handle.raw_adapter().handle_webhook(req))
        })
    });
    group.finish();
    rt.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let lib = test_plugin(Profile::Release);
    measure_loading(&lib);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    bench_calls(&mut c, &lib);
    c.final_summary();
}
