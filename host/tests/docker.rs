//! Container runner tests against a real Docker engine.
//!
//! Each test that needs the engine prints `SKIP …` and returns when none is reachable
//! (start one as root: `dockerd --iptables=false --bridge=none > /tmp/dockerd.log 2>&1 &`).
//! Nothing is pulled: the test image is `FROM scratch` plus `tests/support/probe.rs`,
//! compiled here with `rustc` as a static binary and built through the engine's build API.
//! Every test uses its own data dir, hence its own install id, so tests running in parallel
//! (or other installs on the machine) never see each other's containers.

#[allow(dead_code)]
#[path = "support/probe.rs"]
mod probe;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use nanoclaw::container::{
    ContainerExit, ContainerName, ContainerSpec, DockerRunner, ExitStatus, InstallId,
    LABEL_INSTALL, MountAllowlist, MountRequest, ResourceLimits, RunnerConfig, RunnerError,
    SpecError, TmpfsOptions, UserIds,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

const MIB: u64 = 1024 * 1024;
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The probe image

static PROBE_IMAGE: OnceLock<Result<String, String>> = OnceLock::new();

/// Builds (once per test process) and returns the probe image tag.
fn probe_image() -> String {
    let result = PROBE_IMAGE.get_or_init(|| {
        // Its own thread and runtime: callers run on different per-test runtimes.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(build_probe_image())
        })
        .join()
        .map_err(|_| "probe image builder panicked".to_owned())?
    });
    match result {
        Ok(tag) => tag.clone(),
        Err(e) => panic!("cannot build the probe image: {e}"),
    }
}

fn rustc() -> PathBuf {
    if let Some(rustc) = std::env::var_os("RUSTC") {
        return rustc.into();
    }
    if let Some(cargo) = std::env::var_os("CARGO") {
        let sibling = Path::new(&cargo).with_file_name("rustc");
        if sibling.exists() {
            return sibling;
        }
    }
    PathBuf::from("rustc")
}

async fn build_probe_image() -> Result<String, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/probe.rs");
    let bin = work.path().join("probe");
    let out = std::process::Command::new(rustc())
        .args([
            "--edition",
            "2024",
            "-O",
            "-C",
            "target-feature=+crt-static",
        ])
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| format!("running rustc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rustc failed to build the static probe (glibc static libs, from libc6-dev, are needed):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let binary = std::fs::read(&bin).map_err(|e| e.to_string())?;
    let digest = Sha256::digest(&binary);
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let image = format!("nanoclaw-runner-probe:{tag}");

    let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
    if docker.inspect_image(&image).await.is_ok() {
        return Ok(image);
    }

    let dockerfile = b"FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\n";
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", &dockerfile[..], 0o644),
        ("probe", &binary[..], 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
            .map_err(|e| e.to_string())?;
    }
    let context = tar.into_inner().map_err(|e| e.to_string())?;
    let options = BuildImageOptionsBuilder::default()
        .t(&image)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| format!("image build: {e}"))?;
        if let Some(detail) = info.error_detail {
            return Err(format!("image build: {detail:?}"));
        }
    }
    Ok(image)
}

// ---------------------------------------------------------------------------------------
// Per-test environment

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    install: InstallId,
    runner: DockerRunner,
    exits: mpsc::Receiver<ContainerExit>,
    docker: Docker,
    image: String,
    user: UserIds,
}

/// Connects to the engine or prints why the test is skipped.
async fn env(test: &str) -> Option<Env> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical tempdir");
    let data = root.join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    let install = InstallId::from_data_dir(&data).expect("install id");
    let (tx, exits) = mpsc::channel(64);
    let runner = match DockerRunner::connect(RunnerConfig::new(install.clone()), tx).await {
        Ok(runner) => runner,
        Err(e @ RunnerError::EngineUnavailable { .. }) => {
            eprintln!("SKIP {test}: no Docker engine reachable: {e}");
            return None;
        }
        Err(e) => panic!("connect: {e}"),
    };
    let docker = Docker::connect_with_local_defaults().expect("raw client");

    // Run as our own uid/gid unless we are root; then use 1000 and hand the dirs over.
    let probe_file = root.join(".owner");
    std::fs::write(&probe_file, "").expect("write");
    let meta = std::fs::metadata(&probe_file).expect("stat");
    let user = if meta.uid() == 0 {
        UserIds::new(1000, 1000)
    } else {
        UserIds::new(meta.uid(), meta.gid())
    };
    Some(Env {
        _tmp: tmp,
        root,
        install,
        runner,
        exits,
        docker,
        image: probe_image(),
        user,
    })
}

macro_rules! env_or_skip {
    ($name:expr) => {
        match env($name).await {
            Some(env) => env,
            None => return,
        }
    };
}

impl Env {
    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        self.give(&p);
        p
    }

    /// Makes a path writable by the container user.
    fn give(&self, path: &Path) {
        if std::fs::metadata(path).expect("stat").uid() != self.user.uid {
            std::os::unix::fs::chown(path, Some(self.user.uid), Some(self.user.gid))
                .expect("chown");
        }
    }

    /// A spec for `session` running the probe with `steps`.
    fn spec(&self, session: &str, steps: &[&str]) -> ContainerSpec {
        let session_dir = self.dir(&format!("sessions/{session}"));
        let agent_dir = self.dir(&format!("groups/{session}"));
        let mut spec = ContainerSpec::new(
            session,
            format!("ag-{session}"),
            self.image.clone(),
            session_dir,
            agent_dir,
            self.user,
        );
        spec.command = steps.iter().map(|s| (*s).to_owned()).collect();
        spec.limits = ResourceLimits {
            memory_bytes: 64 * MIB,
            pids: 64,
            cpu_millis: None,
        };
        spec.tmp = TmpfsOptions {
            size_bytes: 8 * MIB,
            exec: false,
        };
        spec
    }

    fn name(&self, session: &str) -> ContainerName {
        self.runner.container_name(session).expect("name")
    }

    async fn next_exit(&mut self) -> ContainerExit {
        tokio::time::timeout(EVENT_TIMEOUT, self.exits.recv())
            .await
            .expect("exit event in time")
            .expect("exit channel open")
    }

    async fn exists(&self, name: &ContainerName) -> bool {
        self.docker
            .inspect_container(name.as_str(), None)
            .await
            .is_ok()
    }

    async fn labelled(&self, install: &InstallId) -> Vec<String> {
        let filter = format!("{LABEL_INSTALL}={install}");
        let filters = std::collections::HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let mut names: Vec<String> = self
            .docker
            .list_containers(Some(options))
            .await
            .expect("list")
            .into_iter()
            .filter_map(|c| {
                c.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Env {
    /// Best effort: remove whatever a failed test left behind for this install.
    fn drop(&mut self) {
        let install = self.install.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(docker) = Docker::connect_with_local_defaults() else {
                    return;
                };
                let filter = format!("{LABEL_INSTALL}={install}");
                let filters = std::collections::HashMap::from([("label", vec![filter.as_str()])]);
                let options = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                for c in docker
                    .list_containers(Some(options))
                    .await
                    .unwrap_or_default()
                {
                    if let Some(id) = c.id {
                        let options = RemoveContainerOptionsBuilder::default().force(true).build();
                        let _ = docker.remove_container(&id, Some(options)).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn wait_for_line(path: &Path, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.lines().any(|l| l == line)
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never got line {line:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report_value<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in report:\n{report}"))
}

const EROFS: &str = "errno=30";

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn hardening_is_applied_and_enforced() {
    let mut env = env_or_skip!("hardening_is_applied_and_enforced");
    let mut spec = env.spec(
        "hard",
        &[
            "out:/workspace/report.txt",
            "ids",
            "net",
            "env:GREETING",
            "write:/workspace/written",
            "write:/workspace/agent/notes.txt",
            "write:/workspace/agent/CLAUDE.md",
            "write:/workspace/agent/mock.toml",
            "write:/workspace/agent/config/inner.txt",
            "write:/workspace/global/x",
            "write:/workspace/extra/ro/x",
            "write:/workspace/extra/rw/x",
            "write:/tmp/x",
            "write:/probe-root-write",
            "mark:done",
            "sleep:300",
        ],
    );
    spec.limits.cpu_millis = Some(500);
    spec.env
        .insert("GREETING".to_owned(), "hello world".to_owned());

    let agent = spec.agent_dir.clone();
    std::fs::write(agent.join("CLAUDE.md"), "# composed\n").expect("write");
    std::fs::write(agent.join("mock.toml"), "reply = 'x'\n").expect("write");
    let config = env.dir("groups/hard/config");
    std::fs::write(config.join("inner.txt"), "cfg\n").expect("write");
    spec.agent_read_only = vec!["CLAUDE.md".into(), "mock.toml".into(), "config".into()];
    spec.global_dir = Some(env.dir("global"));

    let shared_ro = env.dir("shared/ro");
    let shared_rw = env.dir("shared/rw");
    let allow = env.root.join("data/mount-allowlist.toml");
    std::fs::write(
        &allow,
        format!(
            "[[allow]]\npath = \"{}\"\n[[allow]]\npath = \"{}\"\nread_write = true\n",
            shared_ro.display(),
            shared_rw.display()
        ),
    )
    .expect("write allowlist");
    let check = MountAllowlist::load(&allow).expect("allowlist").check(&[
        MountRequest {
            host_path: shared_ro.clone(),
            container_name: None,
            read_write: true,
        },
        MountRequest {
            host_path: shared_rw.clone(),
            container_name: None,
            read_write: true,
        },
    ]);
    assert!(check.rejected.is_empty(), "{:?}", check.rejected);
    spec.extra_mounts = check.accepted;

    let handle = env.runner.start(&spec).await.expect("start");
    let report_path = spec.session_dir.join("report.txt");
    let report = wait_for_line(&report_path, "done").await;

    // What the engine says it applied.
    let info = env
        .docker
        .inspect_container(handle.name.as_str(), None)
        .await
        .expect("inspect");
    let config_ = info.config.expect("config");
    assert_eq!(
        config_.user.as_deref(),
        Some(format!("{}:{}", env.user.uid, env.user.gid).as_str())
    );
    let labels = config_.labels.expect("labels");
    assert_eq!(labels["nanoclaw.install"], env.install.as_str());
    assert_eq!(labels["nanoclaw.session"], "hard");
    assert_eq!(labels["nanoclaw.agent-group"], "ag-hard");
    let hc = info.host_config.expect("host config");
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.memory, Some(64 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(64 * 1024 * 1024));
    assert_eq!(hc.pids_limit, Some(64));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.init, Some(true));
    let tmpfs = hc.tmpfs.expect("tmpfs");
    assert!(tmpfs["/tmp"].contains("size=8388608"), "{tmpfs:?}");
    let mut mounts: Vec<(String, bool)> = info
        .mounts
        .expect("mounts")
        .into_iter()
        .map(|m| (m.destination.unwrap_or_default(), m.rw.unwrap_or(true)))
        .collect();
    mounts.sort();
    let expected: Vec<(String, bool)> = [
        ("/workspace", true),
        ("/workspace/agent", true),
        ("/workspace/agent/CLAUDE.md", false),
        ("/workspace/agent/config", false),
        ("/workspace/agent/mock.toml", false),
        ("/workspace/extra/ro", false),
        ("/workspace/extra/rw", true),
        ("/workspace/global", false),
    ]
    .into_iter()
    .map(|(d, rw)| (d.to_owned(), rw))
    .collect();
    assert_eq!(mounts, expected);

    // What the process inside sees and can do.
    assert_eq!(report_value(&report, "uid="), env.user.uid.to_string());
    assert_eq!(report_value(&report, "gid="), env.user.gid.to_string());
    assert_eq!(report_value(&report, "cap_eff="), "0000000000000000");
    assert_eq!(report_value(&report, "cap_bnd="), "0000000000000000");
    assert_eq!(report_value(&report, "no_new_privs="), "1");
    assert_eq!(report_value(&report, "net="), "lo");
    assert_eq!(report_value(&report, "env GREETING="), "hello world");
    for (path, outcome) in [
        ("/workspace/written", "ok"),
        ("/workspace/agent/notes.txt", "ok"),
        ("/workspace/agent/CLAUDE.md", EROFS),
        ("/workspace/agent/mock.toml", EROFS),
        ("/workspace/agent/config/inner.txt", EROFS),
        ("/workspace/global/x", EROFS),
        ("/workspace/extra/ro/x", EROFS),
        ("/workspace/extra/rw/x", "ok"),
        ("/tmp/x", "ok"),
        ("/probe-root-write", EROFS),
    ] {
        assert_eq!(
            report_value(&report, &format!("write {path} ")),
            outcome,
            "{path}"
        );
    }
    // ... and the host agrees.
    assert!(agent.join("notes.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(agent.join("CLAUDE.md")).expect("read"),
        "# composed\n"
    );
    assert_eq!(
        std::fs::read_to_string(config.join("inner.txt")).expect("read"),
        "cfg\n"
    );
    assert!(shared_rw.join("x").is_file());
    assert!(!shared_ro.join("x").exists());

    // Stop: docker-init forwards SIGTERM, so the probe dies well before the grace ends.
    let started = Instant::now();
    env.runner
        .stop(&handle.name, Duration::from_secs(20))
        .await
        .expect("stop");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!env.exists(&handle.name).await, "stopped container is gone");
    let exit = env.next_exit().await;
    assert_eq!(exit.session_id, "hard");
    assert_eq!(exit.agent_group_id, "ag-hard");
    assert!(exit.requested);
    assert_eq!(
        exit.status,
        ExitStatus::Exited {
            code: 143,
            oom_killed: false
        }
    );
    assert_eq!(handle.exited().await, exit.status);
    assert!(env.runner.list_managed().await.expect("list").is_empty());
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let mut env = env_or_skip!("exit_codes_are_reported");
    let ok = env
        .runner
        .start(&env.spec("ok", &["exit:0"]))
        .await
        .expect("start ok");
    let first = env.next_exit().await;
    let failing = env
        .runner
        .start(&env.spec("bad", &["stderr:agent blew up", "exit:3"]))
        .await
        .expect("start bad");
    let second = env.next_exit().await;

    assert_eq!(first.session_id, "ok");
    assert!(first.status.success());
    assert!(!first.requested);
    assert_eq!(first.log_tail, None);
    assert_eq!(ok.exited().await, first.status);

    assert_eq!(second.session_id, "bad");
    assert_eq!(second.status.code(), Some(3));
    assert!(!second.requested);
    let tail = second
        .log_tail
        .clone()
        .expect("log tail of a failed container");
    assert!(tail.contains("agent blew up"), "{tail:?}");
    assert_eq!(failing.exited().await, second.status);
    // Reported and removed: the name no longer refers to anything.
    assert!(matches!(
        env.runner.wait(&failing.name).await,
        Err(RunnerError::NotFound { .. })
    ));

    // `wait` on a container the runner is watching resolves with the watcher's result.
    let waited = env
        .runner
        .start(&env.spec("waited", &["sleep:1", "exit:4"]))
        .await
        .expect("start waited");
    assert_eq!(env.runner.wait(&waited.name).await.expect("wait"), 4);
    assert_eq!(env.next_exit().await.status.code(), Some(4));

    for name in [&ok.name, &failing.name, &waited.name] {
        assert!(!env.exists(name).await, "{name} removed after exit");
    }
}

#[tokio::test]
async fn wait_maps_engine_exit_codes() {
    let env = env_or_skip!("wait_maps_engine_exit_codes");
    // Containers the runner did not start: `wait` asks the engine, whose non-zero answer
    // arrives from bollard as an error carrying the code.
    for (suffix, code) in [("zero", 0), ("seven", 7)] {
        let name = env.name(&format!("raw-{suffix}"));
        let body = ContainerCreateBody {
            image: Some(env.image.clone()),
            cmd: Some(vec![format!("exit:{code}")]),
            user: Some("1000:1000".to_owned()),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(name.as_str())
            .build();
        env.docker
            .create_container(Some(options), body)
            .await
            .expect("create");
        env.docker
            .start_container(name.as_str(), None)
            .await
            .expect("start");
        assert_eq!(env.runner.wait(&name).await.expect("wait"), code);
        // Still there (the runner does not own it), so waiting again answers at once.
        assert_eq!(env.runner.wait(&name).await.expect("wait again"), code);
        assert!(!env.runner.is_running(&name).await.expect("is_running"));
        env.runner.remove(&name).await.expect("remove");
        assert!(!env.exists(&name).await);
    }
    let ghost = env.name("ghost");
    assert!(matches!(
        env.runner.wait(&ghost).await,
        Err(RunnerError::NotFound { .. })
    ));
    assert!(!env.runner.is_running(&ghost).await.expect("is_running"));
    // Stop/kill/remove of a missing container are no-ops.
    env.runner
        .stop(&ghost, Duration::from_secs(1))
        .await
        .expect("stop ghost");
    env.runner.kill(&ghost).await.expect("kill ghost");
    env.runner.remove(&ghost).await.expect("remove ghost");
}

#[tokio::test]
async fn kill_and_stop_without_init() {
    let mut env = env_or_skip!("kill_and_stop_without_init");
    let mut spec = env.spec("killme", &["sleep:300"]);
    spec.init = false;
    let handle = env.runner.start(&spec).await.expect("start");
    assert!(env.runner.is_running(&handle.name).await.expect("running"));
    env.runner.kill(&handle.name).await.expect("kill");
    assert!(!env.exists(&handle.name).await);
    let exit = env.next_exit().await;
    assert!(exit.requested);
    assert_eq!(exit.status.code(), Some(137));
    assert_eq!(exit.log_tail, None, "no log tail for a requested exit");

    // PID 1 without a handler ignores SIGTERM: stop escalates to SIGKILL after the grace.
    let mut spec = env.spec("stopme", &["sleep:300"]);
    spec.init = false;
    let handle = env.runner.start(&spec).await.expect("start");
    let started = Instant::now();
    env.runner
        .stop(&handle.name, Duration::from_secs(1))
        .await
        .expect("stop");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "stop took {took:?}");
    assert!(!env.exists(&handle.name).await);
    let exit = env.next_exit().await;
    assert_eq!(exit.status.code(), Some(137));
    assert!(exit.requested);
    assert!(matches!(
        env.runner.wait(&handle.name).await,
        Err(RunnerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn limits_are_enforced() {
    let mut env = env_or_skip!("limits_are_enforced");
    let mut spec = env.spec("oom", &["hog:256", "sleep:60"]);
    spec.limits.memory_bytes = 32 * MIB;
    spec.init = false;
    env.runner.start(&spec).await.expect("start");
    let exit = env.next_exit().await;
    assert_eq!(
        exit.status,
        ExitStatus::Exited {
            code: 137,
            oom_killed: true
        }
    );

    let mut spec = env.spec(
        "pids",
        &["out:/workspace/report.txt", "threads:200", "mark:done"],
    );
    spec.limits.pids = 16;
    env.runner.start(&spec).await.expect("start");
    let exit = env.next_exit().await;
    assert!(exit.status.success(), "{exit:?}");
    let report = std::fs::read_to_string(spec.session_dir.join("report.txt")).expect("report");
    let started: u32 = report_value(&report, "threads ")
        .parse()
        .expect("thread count");
    assert!(
        started < 16,
        "started {started} threads under a pids limit of 16"
    );
}

#[tokio::test]
async fn reaping_touches_only_this_install() {
    let mut env = env_or_skip!("reaping_touches_only_this_install");
    let other = env_or_skip!("reaping_touches_only_this_install");

    let a1 = env
        .runner
        .start(&env.spec("a1", &["sleep:300"]))
        .await
        .expect("a1");
    let a2 = env
        .runner
        .start(&env.spec("a2", &["sleep:300"]))
        .await
        .expect("a2");
    let b1 = other
        .runner
        .start(&other.spec("b1", &["sleep:300"]))
        .await
        .expect("b1");
    // An exited container of this install is an orphan too.
    let name = env.name("a3");
    let leftover = ContainerCreateBody {
        image: Some(env.image.clone()),
        cmd: Some(vec!["exit:0".to_owned()]),
        labels: Some(std::collections::HashMap::from([(
            LABEL_INSTALL.to_owned(),
            env.install.to_string(),
        )])),
        ..Default::default()
    };
    env.docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(name.as_str())
                    .build(),
            ),
            leftover,
        )
        .await
        .expect("create leftover");

    let mut managed: Vec<String> = env
        .runner
        .list_managed()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.name.to_string())
        .collect();
    managed.sort();
    assert_eq!(managed, [a1.name.as_str(), a2.name.as_str(), name.as_str()]);

    // A restarted host: a fresh runner for the same install knows nothing running...
    let (tx, _rx) = mpsc::channel(8);
    let restarted = DockerRunner::connect(RunnerConfig::new(env.install.clone()), tx)
        .await
        .expect("connect");
    // ...except a2, which it decides to keep.
    let keep = HashSet::from([a2.name.clone()]);
    let report = restarted.reap_orphans(&keep).await.expect("reap");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut reaped: Vec<String> = report.reaped.iter().map(|n| n.to_string()).collect();
    reaped.sort();
    assert_eq!(reaped, [a1.name.as_str(), name.as_str()]);

    assert_eq!(env.labelled(&env.install).await, [a2.name.as_str()]);
    assert_eq!(other.labelled(&other.install).await, [b1.name.as_str()]);
    assert!(other.runner.is_running(&b1.name).await.expect("b1"));

    // The original runner learns that a1 died without being asked.
    let exit = env.next_exit().await;
    assert_eq!(exit.session_id, "a1");
    assert!(!exit.requested);

    // The original runner's own reap keeps what it watches (a2) even if not listed.
    let report = env
        .runner
        .reap_orphans(&HashSet::new())
        .await
        .expect("reap");
    assert!(report.reaped.is_empty());
    env.runner
        .stop(&a2.name, Duration::from_secs(1))
        .await
        .expect("stop a2");
    other
        .runner
        .stop(&b1.name, Duration::from_secs(1))
        .await
        .expect("stop b1");
}

#[tokio::test]
async fn name_collisions_are_handled() {
    let mut env = env_or_skip!("name_collisions_are_handled");
    // A leftover with the session's name, e.g. from a crashed host.
    let name = env.name("dup");
    let body = ContainerCreateBody {
        image: Some(env.image.clone()),
        cmd: Some(vec!["sleep:300".to_owned()]),
        user: Some("1000:1000".to_owned()),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let old = env
        .docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(name.as_str())
                    .build(),
            ),
            body,
        )
        .await
        .expect("create leftover");
    env.docker
        .start_container(&old.id, None)
        .await
        .expect("start leftover");

    let spec = env.spec("dup", &["sleep:300"]);
    let handle = env.runner.start(&spec).await.expect("start over leftover");
    assert_eq!(handle.name, name);
    assert_ne!(handle.id, old.id);
    assert!(
        env.docker.inspect_container(&old.id, None).await.is_err(),
        "leftover removed"
    );

    // Starting again while this runner watches the live container is refused.
    assert!(matches!(
        env.runner.start(&spec).await,
        Err(RunnerError::AlreadyRunning { .. })
    ));
    assert!(env.runner.is_running(&name).await.expect("still running"));

    // Once it is stopped, the name is free again.
    env.runner
        .stop(&name, Duration::from_secs(5))
        .await
        .expect("stop");
    let exit = env.next_exit().await;
    assert!(exit.requested);
    let again = env.runner.start(&spec).await.expect("restart");
    assert_ne!(again.id, handle.id);
    env.runner.kill(&name).await.expect("kill");
    let exit = env.next_exit().await;
    assert_eq!(exit.status.code(), Some(137));
}

#[tokio::test]
async fn refusals_create_nothing() {
    let env = env_or_skip!("refusals_create_nothing");
    let mut spec = env.spec("root", &["exit:0"]);
    spec.user = UserIds::new(0, 0);
    let err = env.runner.start(&spec).await.expect_err("uid 0");
    assert!(
        matches!(err, RunnerError::Spec(SpecError::RootUser)),
        "{err}"
    );
    assert!(err.to_string().contains("root"), "{err}");

    let mut spec = env.spec("noimage", &["exit:0"]);
    spec.image = "nanoclaw-no-such-image:never".to_owned();
    assert!(
        !env.runner
            .image_exists(&spec.image)
            .await
            .expect("image_exists")
    );
    assert!(
        env.runner
            .image_exists(&env.image)
            .await
            .expect("image_exists")
    );
    let err = env.runner.start(&spec).await.expect_err("missing image");
    assert!(matches!(err, RunnerError::ImageMissing { .. }), "{err}");

    assert!(env.runner.list_managed().await.expect("list").is_empty());
}

#[tokio::test]
async fn exit_watch_outlives_the_request_timeout() {
    let Some(mut env) = env("exit_watch_outlives_the_request_timeout").await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(8);
    let mut config = RunnerConfig::new(env.install.clone());
    config.request_timeout = Duration::from_secs(1);
    let runner = DockerRunner::connect(config, tx).await.expect("connect");
    runner
        .start(&env.spec("slow", &["sleep:3", "exit:5"]))
        .await
        .expect("start");
    let exit = tokio::time::timeout(EVENT_TIMEOUT, rx.recv())
        .await
        .expect("in time")
        .expect("event");
    assert_eq!(exit.status.code(), Some(5));
    // The default runner saw nothing: events go to the runner that started the container.
    assert!(env.exits.try_recv().is_err());
}

#[tokio::test]
async fn unreachable_engine_error_says_how_to_start_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let install = InstallId::from_data_dir(tmp.path()).expect("install");

    // No socket file at all.
    let mut config = RunnerConfig::new(install.clone());
    config.socket = Some(tmp.path().join("no-such-docker.sock"));
    let (tx, _rx) = mpsc::channel(1);
    let err = DockerRunner::connect(config, tx)
        .await
        .expect_err("bogus socket");
    let text = err.to_string();
    assert!(
        matches!(err, RunnerError::EngineUnavailable { .. }),
        "{text}"
    );
    assert!(text.contains("no-such-docker.sock"), "{text}");
    assert!(
        text.contains("dockerd --iptables=false --bridge=none"),
        "{text}"
    );
    assert!(text.contains("systemctl start docker"), "{text}");

    // A stale socket file nobody listens on.
    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let mut config = RunnerConfig::new(install);
    config.socket = Some(stale);
    let (tx, _rx) = mpsc::channel(1);
    let err = DockerRunner::connect(config, tx)
        .await
        .expect_err("stale socket");
    assert!(
        matches!(err, RunnerError::EngineUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("dockerd"), "{err}");
}

/// Cold start on this machine: `start` (create + start) until the process inside has run.
/// Run with `cargo test -p nanoclaw --test docker -- --ignored cold_start --nocapture`.
#[tokio::test]
#[ignore = "measurement, not a check"]
async fn cold_start_timing() {
    let mut env = env_or_skip!("cold_start_timing");
    let mut start_ms = Vec::new();
    let mut ready_ms = Vec::new();
    for i in 0..15 {
        let session = format!("cold{i}");
        let spec = env.spec(&session, &["touch:/workspace/ready", "sleep:300"]);
        let marker = spec.session_dir.join("ready");
        let t0 = Instant::now();
        let handle = env.runner.start(&spec).await.expect("start");
        let started = t0.elapsed();
        while !marker.exists() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let ready = t0.elapsed();
        start_ms.push(started.as_secs_f64() * 1000.0);
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        env.runner.kill(&handle.name).await.expect("kill");
        env.next_exit().await;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (s50, smin, smax) = stats(&mut start_ms);
    let (r50, rmin, rmax) = stats(&mut ready_ms);
    println!("cold start over {} runs:", start_ms.len());
    println!("  start() returned : p50 {s50:.1} ms, min {smin:.1} ms, max {smax:.1} ms");
    println!("  process ran      : p50 {r50:.1} ms, min {rmin:.1} ms, max {rmax:.1} ms");
}
