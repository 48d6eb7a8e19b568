//! What the host wants to run for one session, and its translation into a hardened
//! Docker create request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountType, ResourcesUlimits,
};

use super::mounts::AllowedMount;
use super::naming::{ContainerName, InstallId, LABEL_AGENT_GROUP, LABEL_INSTALL, LABEL_SESSION};

use nanoclaw_schema::session::layout;

/// The session's workspace, read-write.
pub const WORKSPACE: &str = layout::CONTAINER_WORKSPACE;
/// The host's inbound directory of the session (`inbound.db`, `inbox/`), read-only.
pub const INBOUND_MOUNT: &str = layout::CONTAINER_INBOUND_DIR;
/// The agent group directory, read-write (with read-only config files inside).
pub const AGENT_MOUNT: &str = layout::CONTAINER_AGENT_DIR;
/// The shared global memory, read-only.
pub const GLOBAL_MOUNT: &str = layout::CONTAINER_GLOBAL_DIR;
/// Where the agent group's operator-written config is mounted, read-only.
pub const CONFIG_MOUNT: &str = layout::CONTAINER_CONFIG_DIR;
/// The only writable path outside the mounts.
pub const TMP_MOUNT: &str = "/tmp";
/// Where the model-API proxy's directory (its socket) is mounted, read-only.
pub const PROXY_MOUNT: &str = layout::CONTAINER_PROXY_DIR;

const MIB: u64 = 1024 * 1024;
/// Docker refuses memory limits below 6 MiB.
const MIN_MEMORY: u64 = 6 * MIB;
const MIN_LOG_BYTES: u64 = 64 * 1024;
const MAX_ID_LEN: usize = 256;

/// Numeric user and group the container runs as. Both must be non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

impl UserIds {
    pub fn new(uid: u32, gid: u32) -> Self {
        Self { uid, gid }
    }
}

/// cgroup limits. Memory also caps swap (memory+swap = memory) and includes the `/tmp`
/// tmpfs, which is charged to the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CPU quota in thousandths of a CPU (1500 = one and a half CPUs); `None` = no quota.
    pub cpu_millis: Option<u32>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 1024 * MIB,
            pids: 512,
            cpu_millis: None,
        }
    }
}

/// Network the container joins. `host` and `container:<id>` modes are deliberately not
/// offered: they undo the network isolation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// Loopback only (the default; the agent talks to the host through the mounted DBs).
    #[default]
    None,
    /// Docker's default bridge (needs an engine started with a bridge).
    Bridge,
    /// A user-defined network, e.g. one whose only egress is a credential proxy.
    Named(String),
}

impl NetworkMode {
    fn as_docker(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Bridge => "bridge",
            Self::Named(name) => name,
        }
    }
}

/// The tmpfs mounted on `/tmp` (the root filesystem is read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmpfsOptions {
    pub size_bytes: u64,
    /// Allow executing files from `/tmp`. Off by default (`noexec`); turn it on if the
    /// agent's tools unpack and run binaries there.
    pub exec: bool,
}

impl Default for TmpfsOptions {
    fn default() -> Self {
        Self {
            size_bytes: 64 * MIB,
            exec: false,
        }
    }
}

/// Everything the host decides about one session's container.
///
/// Build it with [`ContainerSpec::new`] (safe defaults) and adjust the public fields. The
/// hardening is not configurable: non-root user, all capabilities dropped,
/// `no-new-privileges`, read-only root filesystem, memory and pids limits, private IPC, no
/// core dumps, bounded logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Session id; names the container and is stored in the `nanoclaw.session` label.
    pub session_id: String,
    /// Agent group id, stored in the `nanoclaw.agent-group` label.
    pub agent_group_id: String,
    /// A local image; the runner never pulls.
    pub image: String,
    /// Replaces the image's CMD when non-empty.
    pub command: Vec<String>,
    /// The session's workspace, mounted read-write at `/workspace`. Its entries `inbound`,
    /// `agent`, `global`, `config` and `extra` are reserved as mount points: the runner
    /// (re)creates them as plain directories.
    pub session_dir: PathBuf,
    /// The host's inbound directory of the session, mounted READ-ONLY at
    /// `/workspace/inbound`: the container reads `inbound.db` but can never write it.
    pub inbound_dir: Option<PathBuf>,
    /// Mounted read-write at `/workspace/agent`.
    pub agent_dir: PathBuf,
    /// Files or directories inside `agent_dir` (relative paths) mounted read-only over the
    /// read-write parent, e.g. `CLAUDE.md`, the agent's config. Each must exist and no
    /// component may be a symlink.
    pub agent_read_only: Vec<PathBuf>,
    /// Mounted read-only at `/workspace/global` when set.
    pub global_dir: Option<PathBuf>,
    /// Mounted read-only at `/workspace/config` when set: the group's config as the operator
    /// wrote it. It must live outside every directory an agent can write, so no agent can
    /// swap it for a link while another container starts.
    pub config_dir: Option<PathBuf>,
    /// The host's model-API proxy directory of this session (its socket), mounted
    /// read-only at `/run/nanoclaw`. The host owns it; the container can only connect.
    pub proxy_dir: Option<PathBuf>,
    /// Extra mounts that passed the allowlist, at `/workspace/extra/<name>`.
    pub extra_mounts: Vec<AllowedMount>,
    pub env: BTreeMap<String, String>,
    pub user: UserIds,
    pub limits: ResourceLimits,
    pub network: NetworkMode,
    pub tmp: TmpfsOptions,
    /// Run Docker's init (tini) as PID 1 so signals reach the agent and zombies are reaped.
    pub init: bool,
    /// Cap on the container's log file (json-file driver, one file).
    pub log_max_bytes: u64,
}

impl ContainerSpec {
    pub fn new(
        session_id: impl Into<String>,
        agent_group_id: impl Into<String>,
        image: impl Into<String>,
        session_dir: impl Into<PathBuf>,
        agent_dir: impl Into<PathBuf>,
        user: UserIds,
    ) -> Self {
        Self {
            session_id: session_id.into(),
            agent_group_id: agent_group_id.into(),
            image: image.into(),
            command: Vec::new(),
            session_dir: session_dir.into(),
            inbound_dir: None,
            agent_dir: agent_dir.into(),
            agent_read_only: Vec::new(),
            global_dir: None,
            config_dir: None,
            proxy_dir: None,
            extra_mounts: Vec::new(),
            env: BTreeMap::new(),
            user,
            limits: ResourceLimits::default(),
            network: NetworkMode::None,
            tmp: TmpfsOptions::default(),
            init: true,
            log_max_bytes: 10 * MIB,
        }
    }
}

/// Why a spec cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "refusing to run an agent container as root (uid 0); give it the host's own non-root uid or a dedicated one such as 1000"
    )]
    RootUser,
    #[error(
        "refusing to run an agent container with gid 0 (the root group); give it a non-root gid"
    )]
    RootGroup,
    #[error("{what} {value:?} is invalid: {why}")]
    InvalidValue {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("{first} {first_path} and {second} {second_path} overlap; they must be separate trees")]
    Overlap {
        first: &'static str,
        first_path: PathBuf,
        second: &'static str,
        second_path: PathBuf,
    },
    #[error(
        "read-only path {path:?} must be a relative path of plain components inside the agent dir"
    )]
    BadReadOnlyPath { path: PathBuf },
    #[error(
        "read-only path {path} goes through a symlink; refusing to mount it (it could point anywhere on the host)"
    )]
    SymlinkInReadOnlyPath { path: PathBuf },
    #[error("mount source {path:?} is not valid UTF-8, which the engine API cannot carry")]
    NonUtf8Path { path: PathBuf },
    #[error("two mounts target {target}")]
    DuplicateTarget { target: String },
    #[error("mount point {path} in the session dir cannot be prepared: {why}")]
    Mountpoint { path: PathBuf, why: String },
}

/// A spec that passed validation: canonical paths, the name, and the create request.
#[derive(Clone, Debug)]
pub(crate) struct PreparedSpec {
    pub name: ContainerName,
    pub body: ContainerCreateBody,
    /// Canonical session dir, where [`Self::mountpoints`] live.
    pub session_dir: PathBuf,
    pub mountpoints: Vec<Mountpoint>,
}

/// A mount target under `/workspace`, i.e. inside the session dir, that the runner creates
/// before start so that Docker does not create it as root, and so that a symlink planted
/// there by an earlier container does not redirect the mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mountpoint {
    /// Relative to the session dir.
    pub rel: PathBuf,
    pub is_dir: bool,
}

pub(crate) fn prepare(
    spec: &ContainerSpec,
    install: &InstallId,
) -> Result<PreparedSpec, SpecError> {
    if spec.user.uid == 0 {
        return Err(SpecError::RootUser);
    }
    if spec.user.gid == 0 {
        return Err(SpecError::RootGroup);
    }
    check_id("session id", &spec.session_id)?;
    check_id("agent group id", &spec.agent_group_id)?;
    let name = ContainerName::for_session(install, &spec.session_id).ok_or_else(|| {
        SpecError::InvalidValue {
            what: "session id",
            value: spec.session_id.clone(),
            why: "cannot form a container name",
        }
    })?;
    check_image(&spec.image)?;
    for arg in &spec.command {
        if arg.contains('\0') {
            return Err(invalid("command argument", arg, "contains NUL"));
        }
    }
    let env = env_list(&spec.env)?;
    check_limits(spec)?;
    let network = check_network(&spec.network)?;

    let session_dir = canonical_dir("session dir", &spec.session_dir)?;
    let agent_dir = canonical_dir("agent dir", &spec.agent_dir)?;
    check_disjoint("session dir", &session_dir, "agent dir", &agent_dir)?;
    let global_dir = match &spec.global_dir {
        Some(dir) => {
            let dir = canonical_dir("global dir", dir)?;
            check_disjoint("global dir", &dir, "agent dir", &agent_dir)?;
            check_disjoint("global dir", &dir, "session dir", &session_dir)?;
            Some(dir)
        }
        None => None,
    };
    let config_dir = match &spec.config_dir {
        Some(dir) => {
            let dir = canonical_dir("config dir", dir)?;
            check_disjoint("config dir", &dir, "agent dir", &agent_dir)?;
            check_disjoint("config dir", &dir, "session dir", &session_dir)?;
            Some(dir)
        }
        None => None,
    };

    let mut mounts = vec![
        bind(&session_dir, WORKSPACE.to_owned(), false)?,
        bind(&agent_dir, AGENT_MOUNT.to_owned(), false)?,
    ];
    let mut targets: HashSet<String> = mounts.iter().filter_map(|m| m.target.clone()).collect();
    let mut mountpoints = vec![Mountpoint {
        rel: PathBuf::from("agent"),
        is_dir: true,
    }];

    if let Some(inbound) = &spec.inbound_dir {
        let dir = canonical_dir("inbound dir", inbound)?;
        check_disjoint("inbound dir", &dir, "session dir", &session_dir)?;
        check_disjoint("inbound dir", &dir, "agent dir", &agent_dir)?;
        push_unique(
            &mut mounts,
            &mut targets,
            bind(&dir, INBOUND_MOUNT.to_owned(), true)?,
        )?;
        mountpoints.push(Mountpoint {
            rel: PathBuf::from("inbound"),
            is_dir: true,
        });
    }

    for rel in &spec.agent_read_only {
        let (source, rel_str) = read_only_source(&agent_dir, rel)?;
        push_unique(
            &mut mounts,
            &mut targets,
            bind(&source, format!("{AGENT_MOUNT}/{rel_str}"), true)?,
        )?;
    }

    if let Some(global) = &global_dir {
        push_unique(
            &mut mounts,
            &mut targets,
            bind(global, GLOBAL_MOUNT.to_owned(), true)?,
        )?;
        mountpoints.push(Mountpoint {
            rel: PathBuf::from("global"),
            is_dir: true,
        });
    }

    if let Some(config) = &config_dir {
        push_unique(
            &mut mounts,
            &mut targets,
            bind(config, CONFIG_MOUNT.to_owned(), true)?,
        )?;
        mountpoints.push(Mountpoint {
            rel: PathBuf::from("config"),
            is_dir: true,
        });
    }

    if let Some(proxy) = &spec.proxy_dir {
        let dir = canonical_dir("proxy dir", proxy)?;
        for (what, other) in [("session dir", &session_dir), ("agent dir", &agent_dir)] {
            check_disjoint("proxy dir", &dir, what, other)?;
        }
        push_unique(
            &mut mounts,
            &mut targets,
            bind(&dir, PROXY_MOUNT.to_owned(), true)?,
        )?;
    }

    for extra in &spec.extra_mounts {
        let meta = std::fs::metadata(extra.host_path()).map_err(|source| SpecError::Io {
            what: "extra mount",
            path: extra.host_path().to_owned(),
            source,
        })?;
        push_unique(
            &mut mounts,
            &mut targets,
            bind(
                extra.host_path(),
                extra.container_path(),
                !extra.read_write(),
            )?,
        )?;
        mountpoints.push(Mountpoint {
            rel: Path::new("extra").join(extra.name()),
            is_dir: meta.is_dir(),
        });
    }

    let labels = HashMap::from([
        (LABEL_INSTALL.to_owned(), install.as_str().to_owned()),
        (LABEL_SESSION.to_owned(), spec.session_id.clone()),
        (LABEL_AGENT_GROUP.to_owned(), spec.agent_group_id.clone()),
    ]);

    let mut tmp_opts = vec![
        "rw".to_owned(),
        "nosuid".to_owned(),
        "nodev".to_owned(),
        if spec.tmp.exec { "exec" } else { "noexec" }.to_owned(),
        format!("size={}", spec.tmp.size_bytes),
        "mode=1777".to_owned(),
    ];
    tmp_opts.dedup();

    let memory = to_i64("memory limit", spec.limits.memory_bytes)?;
    let host_config = HostConfig {
        mounts: Some(mounts),
        tmpfs: Some(HashMap::from([(TMP_MOUNT.to_owned(), tmp_opts.join(","))])),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        privileged: Some(false),
        memory: Some(memory),
        memory_swap: Some(memory),
        pids_limit: Some(i64::from(spec.limits.pids)),
        nano_cpus: spec
            .limits
            .cpu_millis
            .map(|millis| i64::from(millis) * 1_000_000),
        network_mode: Some(network.to_owned()),
        init: Some(spec.init),
        ipc_mode: Some("private".to_owned()),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("core".to_owned()),
            soft: Some(0),
            hard: Some(0),
        }]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), spec.log_max_bytes.to_string()),
                ("max-file".to_owned(), "1".to_owned()),
            ])),
        }),
        auto_remove: Some(false),
        ..Default::default()
    };

    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        labels: Some(labels),
        user: Some(format!("{}:{}", spec.user.uid, spec.user.gid)),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    };

    Ok(PreparedSpec {
        name,
        body,
        session_dir,
        mountpoints,
    })
}

/// Creates the mount points inside the session dir as plain directories (or files, for a
/// file mount), replacing symlinks or files found in their place.
pub(crate) fn ensure_mountpoints(prepared: &PreparedSpec) -> Result<(), SpecError> {
    let mut extra_done = false;
    for mp in &prepared.mountpoints {
        if !extra_done && mp.rel.starts_with("extra") {
            ensure_entry(&prepared.session_dir, Path::new("extra"), true)?;
            extra_done = true;
        }
        ensure_entry(&prepared.session_dir, &mp.rel, mp.is_dir)?;
    }
    Ok(())
}

fn ensure_entry(session_dir: &Path, rel: &Path, want_dir: bool) -> Result<(), SpecError> {
    let path = session_dir.join(rel);
    let fail = |why: String| SpecError::Mountpoint {
        path: path.clone(),
        why,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::remove_file(&path).map_err(|e| fail(format!("removing symlink: {e}")))?;
        }
        Ok(meta) if meta.is_dir() && want_dir => return Ok(()),
        Ok(meta) if meta.is_file() && !want_dir => return Ok(()),
        Ok(meta) if meta.is_dir() => {
            // A directory where a file mount goes: only an empty one may be replaced.
            std::fs::remove_dir(&path)
                .map_err(|e| fail(format!("a directory is in the way: {e}")))?;
        }
        Ok(_) => {
            std::fs::remove_file(&path).map_err(|e| fail(format!("removing stale entry: {e}")))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let created = if want_dir {
        std::fs::create_dir(&path)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map(drop)
    };
    created.map_err(|e| fail(e.to_string()))
}

fn bind(source: &Path, target: String, read_only: bool) -> Result<Mount, SpecError> {
    // The engine API is JSON: a path that is not UTF-8 cannot be passed through intact.
    let source = source.to_str().ok_or_else(|| SpecError::NonUtf8Path {
        path: source.to_owned(),
    })?;
    Ok(Mount {
        target: Some(target),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn push_unique(
    mounts: &mut Vec<Mount>,
    targets: &mut HashSet<String>,
    mount: Mount,
) -> Result<(), SpecError> {
    let target = mount.target.clone().unwrap_or_default();
    if !targets.insert(target.clone()) {
        return Err(SpecError::DuplicateTarget { target });
    }
    mounts.push(mount);
    Ok(())
}

/// Validates a nested read-only path and returns its host source and container suffix.
fn read_only_source(agent_dir: &Path, rel: &Path) -> Result<(PathBuf, String), SpecError> {
    let bad = || SpecError::BadReadOnlyPath {
        path: rel.to_owned(),
    };
    let mut parts = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    // Walk with lstat: no component may be a symlink, or the mount could be pointed at any
    // host path by whoever can write the (agent-writable) group folder.
    let mut source = agent_dir.to_owned();
    for part in &parts {
        source.push(part);
        let meta = std::fs::symlink_metadata(&source).map_err(|e| SpecError::Io {
            what: "read-only path",
            path: source.clone(),
            source: e,
        })?;
        if meta.file_type().is_symlink() {
            return Err(SpecError::SymlinkInReadOnlyPath { path: source });
        }
    }
    Ok((source, parts.join("/")))
}

fn canonical_dir(what: &'static str, path: &Path) -> Result<PathBuf, SpecError> {
    let canonical = path.canonicalize().map_err(|source| SpecError::Io {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !canonical.is_dir() {
        return Err(SpecError::NotADirectory {
            what,
            path: canonical,
        });
    }
    Ok(canonical)
}

fn check_disjoint(
    first: &'static str,
    a: &Path,
    second: &'static str,
    b: &Path,
) -> Result<(), SpecError> {
    if a.starts_with(b) || b.starts_with(a) {
        return Err(SpecError::Overlap {
            first,
            first_path: a.to_owned(),
            second,
            second_path: b.to_owned(),
        });
    }
    Ok(())
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> SpecError {
    SpecError::InvalidValue {
        what,
        value: value.to_owned(),
        why,
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), SpecError> {
    if id.is_empty() {
        return Err(invalid(what, id, "is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(what, id, "is longer than 256 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(what, id, "contains control characters"));
    }
    Ok(())
}

fn check_image(image: &str) -> Result<(), SpecError> {
    if image.is_empty() {
        return Err(invalid("image", image, "is empty"));
    }
    if image.starts_with('-') || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "image",
            image,
            "must not start with `-` or contain whitespace",
        ));
    }
    Ok(())
}

fn env_list(env: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    env.iter()
        .map(|(key, value)| {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(invalid(
                    "environment variable name",
                    key,
                    "must be non-empty without `=` or NUL",
                ));
            }
            if value.contains('\0') {
                return Err(invalid("environment variable value", value, "contains NUL"));
            }
            Ok(format!("{key}={value}"))
        })
        .collect()
}

fn check_limits(spec: &ContainerSpec) -> Result<(), SpecError> {
    let limits = &spec.limits;
    if limits.memory_bytes < MIN_MEMORY {
        return Err(invalid(
            "memory limit",
            &limits.memory_bytes.to_string(),
            "must be at least 6 MiB",
        ));
    }
    if limits.pids == 0 {
        return Err(invalid("pids limit", "0", "must be positive"));
    }
    if limits.cpu_millis == Some(0) {
        return Err(invalid("cpu quota", "0", "must be positive (or None)"));
    }
    if spec.tmp.size_bytes == 0 {
        return Err(invalid("/tmp size", "0", "must be positive"));
    }
    if spec.tmp.size_bytes > limits.memory_bytes {
        return Err(invalid(
            "/tmp size",
            &spec.tmp.size_bytes.to_string(),
            "exceeds the memory limit it is charged to",
        ));
    }
    if spec.log_max_bytes < MIN_LOG_BYTES {
        return Err(invalid(
            "log size cap",
            &spec.log_max_bytes.to_string(),
            "must be at least 64 KiB",
        ));
    }
    Ok(())
}

fn check_network(network: &NetworkMode) -> Result<&str, SpecError> {
    if let NetworkMode::Named(name) = network {
        let mut chars = name.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !well_formed {
            return Err(invalid(
                "network name",
                name,
                "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            ));
        }
        if matches!(name.as_str(), "host" | "none" | "bridge" | "default") {
            return Err(invalid(
                "network name",
                name,
                "is a built-in mode; use NetworkMode::None or NetworkMode::Bridge (host networking is not allowed)",
            ));
        }
    }
    Ok(network.as_docker())
}

fn to_i64(what: &'static str, v: u64) -> Result<i64, SpecError> {
    i64::try_from(v).map_err(|_| invalid(what, &v.to_string(), "is too large"))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::container::mounts::{MountAllowlist, MountRequest};

    struct Fx {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fx {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().canonicalize().expect("canonical");
            for d in ["session", "group", "global", "shared/proj", "data"] {
                fs::create_dir_all(root.join(d)).expect("mkdir");
            }
            fs::write(root.join("group/CLAUDE.md"), "# agent").expect("write");
            fs::create_dir(root.join("group/.claude-fragments")).expect("mkdir");
            Self { _dir: dir, root }
        }

        fn spec(&self) -> ContainerSpec {
            ContainerSpec::new(
                "sess-1",
                "ag-1",
                "nanoclaw-agent:latest",
                self.root.join("session"),
                self.root.join("group"),
                UserIds::new(1000, 1000),
            )
        }
    }

    fn install() -> InstallId {
        InstallId::parse("00112233aabb").expect("id")
    }

    fn host_config(p: &PreparedSpec) -> &HostConfig {
        p.body.host_config.as_ref().expect("host config")
    }

    fn mount_for<'a>(p: &'a PreparedSpec, target: &str) -> &'a Mount {
        host_config(p)
            .mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.target.as_deref() == Some(target))
            .unwrap_or_else(|| panic!("no mount at {target}"))
    }

    #[test]
    fn defaults_are_hardened() {
        let fx = Fx::new();
        let p = prepare(&fx.spec(), &install()).expect("prepare");
        let hc = host_config(&p);
        assert_eq!(p.body.user.as_deref(), Some("1000:1000"));
        assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            hc.security_opt.as_deref(),
            Some(&["no-new-privileges".to_owned()][..])
        );
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.memory, Some(1024 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.pids_limit, Some(512));
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.init, Some(true));
        assert_eq!(hc.ipc_mode.as_deref(), Some("private"));
        assert_eq!(hc.auto_remove, Some(false));
        let tmp = hc.tmpfs.as_ref().expect("tmpfs").get("/tmp").expect("/tmp");
        assert_eq!(tmp, "rw,nosuid,nodev,noexec,size=67108864,mode=1777");
        let log = hc.log_config.as_ref().expect("log config");
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert!(p.body.cmd.is_none());
        assert_eq!(p.name.as_str(), "nanoclaw-00112233aabb-sess-1");
        let labels = p.body.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_INSTALL], "00112233aabb");
        assert_eq!(labels[LABEL_SESSION], "sess-1");
        assert_eq!(labels[LABEL_AGENT_GROUP], "ag-1");
    }

    #[test]
    fn limits_network_and_env_are_applied() {
        let fx = Fx::new();
        let mut spec = fx.spec();
        spec.limits = ResourceLimits {
            memory_bytes: 256 * MIB,
            pids: 64,
            cpu_millis: Some(1500),
        };
        spec.network = NetworkMode::Named("nanoclaw-egress".to_owned());
        spec.tmp = TmpfsOptions {
            size_bytes: 8 * MIB,
            exec: true,
        };
        spec.env.insert("TZ".to_owned(), "Europe/Paris".to_owned());
        spec.env.insert("A".to_owned(), "x=y".to_owned());
        spec.command = vec!["/bin/agent".to_owned(), "--flag".to_owned()];
        let p = prepare(&spec, &install()).expect("prepare");
        let hc = host_config(&p);
        assert_eq!(hc.memory, Some(256 * 1024 * 1024));
        assert_eq!(hc.pids_limit, Some(64));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.network_mode.as_deref(), Some("nanoclaw-egress"));
        assert!(hc.tmpfs.as_ref().expect("tmpfs")["/tmp"].contains(",exec,size=8388608,"));
        assert_eq!(
            p.body.env.as_deref(),
            Some(&["A=x=y".to_owned(), "TZ=Europe/Paris".to_owned()][..])
        );
        assert_eq!(p.body.cmd.as_deref(), Some(&spec.command[..]));
    }

    #[test]
    fn root_is_refused() {
        let fx = Fx::new();
        let mut spec = fx.spec();
        spec.user = UserIds::new(0, 1000);
        let err = prepare(&spec, &install()).expect_err("root");
        assert!(matches!(err, SpecError::RootUser));
        assert!(err.to_string().contains("uid 0"), "{err}");
        spec.user = UserIds::new(1000, 0);
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::RootGroup)
        ));
    }

    #[test]
    fn the_model_proxy_directory_is_mounted_read_only_and_kept_apart() {
        let fx = Fx::new();
        fs::create_dir_all(fx.root.join("data/proxy/sess-1")).expect("mkdir");
        let mut spec = fx.spec();
        spec.proxy_dir = Some(fx.root.join("data/proxy/sess-1"));
        let p = prepare(&spec, &install()).expect("prepare");
        let m = mount_for(&p, PROXY_MOUNT);
        assert_eq!(m.read_only, Some(true));
        assert_eq!(
            m.source.as_deref(),
            fx.root.join("data/proxy/sess-1").to_str()
        );
        // Never inside a directory the agent writes.
        spec.proxy_dir = Some(fx.root.join("session"));
        assert!(prepare(&spec, &install()).is_err());
    }

    #[test]
    fn mounts_cover_workspace_agent_nested_ro_global_and_extras() {
        let fx = Fx::new();
        let mut spec = fx.spec();
        spec.agent_read_only = vec![
            PathBuf::from("CLAUDE.md"),
            PathBuf::from(".claude-fragments"),
        ];
        spec.global_dir = Some(fx.root.join("global"));
        let allow = fx.root.join("data/mount-allowlist.toml");
        fs::write(
            &allow,
            format!(
                "[[allow]]\npath = \"{}\"\nread_write = true\n",
                fx.root.join("shared").display()
            ),
        )
        .expect("write");
        let list = MountAllowlist::load_with_home(&allow, None).expect("allowlist");
        let check = list.check(&[MountRequest {
            host_path: fx.root.join("shared/proj"),
            container_name: None,
            read_write: true,
        }]);
        spec.extra_mounts = check.accepted;
        let p = prepare(&spec, &install()).expect("prepare");

        let ws = mount_for(&p, "/workspace");
        assert_eq!(ws.source.as_deref(), fx.root.join("session").to_str());
        assert_eq!(ws.read_only, Some(false));
        assert_eq!(ws.typ, Some(MountType::BIND));
        assert_eq!(mount_for(&p, "/workspace/agent").read_only, Some(false));
        let claude = mount_for(&p, "/workspace/agent/CLAUDE.md");
        assert_eq!(claude.read_only, Some(true));
        assert_eq!(
            claude.source.as_deref(),
            fx.root.join("group/CLAUDE.md").to_str()
        );
        assert_eq!(
            mount_for(&p, "/workspace/agent/.claude-fragments").read_only,
            Some(true)
        );
        assert_eq!(mount_for(&p, "/workspace/global").read_only, Some(true));
        assert_eq!(
            mount_for(&p, "/workspace/extra/proj").read_only,
            Some(false)
        );
        assert_eq!(host_config(&p).mounts.as_ref().map(Vec::len), Some(6));
        assert_eq!(
            p.mountpoints,
            vec![
                Mountpoint {
                    rel: "agent".into(),
                    is_dir: true
                },
                Mountpoint {
                    rel: "global".into(),
                    is_dir: true
                },
                Mountpoint {
                    rel: "extra/proj".into(),
                    is_dir: true
                },
            ]
        );
    }

    #[test]
    fn nested_read_only_paths_must_be_plain_and_inside() {
        let fx = Fx::new();
        for bad in ["", "/etc/passwd", "../session", "a/../../x", "./CLAUDE.md"] {
            let mut spec = fx.spec();
            spec.agent_read_only = vec![PathBuf::from(bad)];
            assert!(
                matches!(
                    prepare(&spec, &install()),
                    Err(SpecError::BadReadOnlyPath { .. })
                ),
                "{bad:?}"
            );
        }
        let mut spec = fx.spec();
        spec.agent_read_only = vec![PathBuf::from("missing.toml")];
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::Io { .. })
        ));
    }

    #[test]
    fn nested_read_only_symlinks_are_refused() {
        let fx = Fx::new();
        symlink("/etc/hostname", fx.root.join("group/mock.toml")).expect("symlink");
        let outside = fx.root.join("global");
        symlink(&outside, fx.root.join("group/linkdir")).expect("symlink");
        fs::write(outside.join("inner.md"), "x").expect("write");
        for rel in ["mock.toml", "linkdir/inner.md"] {
            let mut spec = fx.spec();
            spec.agent_read_only = vec![PathBuf::from(rel)];
            assert!(
                matches!(
                    prepare(&spec, &install()),
                    Err(SpecError::SymlinkInReadOnlyPath { .. })
                ),
                "{rel}"
            );
        }
    }

    #[test]
    fn non_utf8_mount_sources_are_refused() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let fx = Fx::new();
        let odd = fx.root.join(OsStr::from_bytes(b"sess-\xff"));
        fs::create_dir(&odd).expect("mkdir");
        let mut spec = fx.spec();
        spec.session_dir = odd;
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::NonUtf8Path { .. })
        ));
    }

    #[test]
    fn duplicate_nested_paths_are_refused() {
        let fx = Fx::new();
        let mut spec = fx.spec();
        spec.agent_read_only = vec![PathBuf::from("CLAUDE.md"), PathBuf::from("CLAUDE.md")];
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::DuplicateTarget { .. })
        ));
    }

    #[test]
    fn overlapping_trees_are_refused() {
        let fx = Fx::new();
        // The upstream hazard: an agent whose folder is the global dir gets it read-write.
        let mut spec = fx.spec();
        spec.global_dir = Some(fx.root.join("group"));
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::Overlap { .. })
        ));
        let mut spec = fx.spec();
        spec.agent_dir = fx.root.join("session");
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::Overlap { .. })
        ));
        let mut spec = fx.spec();
        fs::create_dir(fx.root.join("session/inner")).expect("mkdir");
        spec.agent_dir = fx.root.join("session/inner");
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::Overlap { .. })
        ));
    }

    #[test]
    fn missing_or_non_dir_paths_are_refused() {
        let fx = Fx::new();
        let mut spec = fx.spec();
        spec.session_dir = fx.root.join("nope");
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::Io { .. })
        ));
        let mut spec = fx.spec();
        spec.agent_dir = fx.root.join("group/CLAUDE.md");
        assert!(matches!(
            prepare(&spec, &install()),
            Err(SpecError::NotADirectory { .. })
        ));
    }

    #[test]
    fn invalid_values_are_refused() {
        let fx = Fx::new();
        type Mutation = Box<dyn Fn(&mut ContainerSpec)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|s| s.session_id.clear()),
            Box::new(|s| s.session_id = "a\nb".to_owned()),
            Box::new(|s| s.agent_group_id.clear()),
            Box::new(|s| s.image.clear()),
            Box::new(|s| s.image = "--privileged".to_owned()),
            Box::new(|s| s.image = "img latest".to_owned()),
            Box::new(|s| s.command = vec!["a\0b".to_owned()]),
            Box::new(|s| {
                s.env.insert("A=B".to_owned(), "x".to_owned());
            }),
            Box::new(|s| {
                s.env.insert(String::new(), "x".to_owned());
            }),
            Box::new(|s| {
                s.env.insert("A".to_owned(), "x\0".to_owned());
            }),
            Box::new(|s| s.limits.memory_bytes = 1024),
            Box::new(|s| s.limits.memory_bytes = u64::MAX),
            Box::new(|s| s.limits.pids = 0),
            Box::new(|s| s.limits.cpu_millis = Some(0)),
            Box::new(|s| s.tmp.size_bytes = 0),
            Box::new(|s| s.tmp.size_bytes = 2 * 1024 * MIB),
            Box::new(|s| s.log_max_bytes = 10),
            Box::new(|s| s.network = NetworkMode::Named("host".to_owned())),
            Box::new(|s| s.network = NetworkMode::Named("container:abc".to_owned())),
            Box::new(|s| s.network = NetworkMode::Named(String::new())),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut spec = fx.spec();
            mutate(&mut spec);
            let err = prepare(&spec, &install()).expect_err(&format!("case {i} accepted"));
            assert!(
                matches!(err, SpecError::InvalidValue { .. }),
                "case {i}: {err}"
            );
        }
    }

    #[test]
    fn mountpoints_are_created_and_symlinks_replaced() {
        let fx = Fx::new();
        let session = fx.root.join("session");
        // An earlier container planted a symlink where the agent dir mounts.
        symlink("/etc", session.join("agent")).expect("symlink");
        fs::write(session.join("global"), "not a dir").expect("write");
        let mut spec = fx.spec();
        spec.global_dir = Some(fx.root.join("global"));
        let file = fx.root.join("shared/notes.md");
        fs::write(&file, "n").expect("write");
        let allow = fx.root.join("data/mount-allowlist.toml");
        fs::write(
            &allow,
            format!(
                "[[allow]]\npath = \"{}\"\n",
                fx.root.join("shared").display()
            ),
        )
        .expect("write");
        let list = MountAllowlist::load_with_home(&allow, None).expect("allowlist");
        spec.extra_mounts = list
            .check(&[MountRequest {
                host_path: file,
                container_name: None,
                read_write: false,
            }])
            .accepted;
        assert_eq!(spec.extra_mounts.len(), 1);

        let p = prepare(&spec, &install()).expect("prepare");
        ensure_mountpoints(&p).expect("mountpoints");
        let agent = fs::symlink_metadata(session.join("agent")).expect("agent");
        assert!(agent.is_dir() && !agent.file_type().is_symlink());
        assert!(
            fs::symlink_metadata(session.join("global"))
                .expect("global")
                .is_dir()
        );
        assert!(
            fs::symlink_metadata(session.join("extra"))
                .expect("extra")
                .is_dir()
        );
        assert!(
            fs::symlink_metadata(session.join("extra/notes.md"))
                .expect("file")
                .is_file()
        );
        // Idempotent.
        ensure_mountpoints(&p).expect("again");
        assert!(
            fs::read_dir("/etc").is_ok(),
            "the symlink target was not touched"
        );
    }

    #[test]
    fn non_empty_dir_in_place_of_a_file_mountpoint_is_an_error() {
        let fx = Fx::new();
        let session = fx.root.join("session");
        fs::create_dir_all(session.join("extra/notes.md/keep")).expect("mkdir");
        let p = PreparedSpec {
            name: ContainerName::parse("nanoclaw-x").expect("name"),
            body: ContainerCreateBody::default(),
            session_dir: session.clone(),
            mountpoints: vec![Mountpoint {
                rel: "extra/notes.md".into(),
                is_dir: false,
            }],
        };
        assert!(matches!(
            ensure_mountpoints(&p),
            Err(SpecError::Mountpoint { .. })
        ));
        assert!(session.join("extra/notes.md/keep").is_dir());
    }
}
