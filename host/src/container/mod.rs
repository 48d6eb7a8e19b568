//! The container runner: one hardened Docker container per active session.
//!
//! * [`ContainerSpec`] says what to run for a session: image, the session/agent/global
//!   directories, nested read-only config files, allowlisted extra mounts, env, user,
//!   limits, network. Hardening (non-root, `cap_drop: ALL`, `no-new-privileges`, read-only
//!   root with a size-limited `/tmp` tmpfs, memory and pids limits) is always applied.
//! * [`MountAllowlist`] turns operator-approved [`MountRequest`]s into [`AllowedMount`]s,
//!   the only kind of extra mount a spec accepts.
//! * [`DockerRunner`] starts, stops, kills and waits for containers on the engine, watches
//!   each started container and reports its exit as a [`ContainerExit`], and reaps this
//!   install's orphans at host start.
//! * [`InstallId`] and [`ContainerName`] keep installs apart: every container is named
//!   `nanoclaw-<install id>-<session>` and labelled `nanoclaw.install=<install id>`.
//!
//! # Lifecycle, as the host drives it
//!
//! 1. At startup: `InstallId::from_data_dir(data_dir)`, create an `mpsc` channel, then
//!    `DockerRunner::connect(RunnerConfig::new(install_id), tx)`. On
//!    [`RunnerError::EngineUnavailable`] print the error (it says how to start the engine)
//!    and exit. Then `reap_orphans(&HashSet::new())` before starting any session.
//! 2. Per spawn: `MountAllowlist::load(&data_dir.join(mounts::ALLOWLIST_FILE))` (cheap;
//!    reloading picks up edits; on error log it and use no extra mounts), `check` the agent
//!    group's requests, build a [`ContainerSpec`], `start` it. `start` refuses with
//!    [`RunnerError::AlreadyRunning`] while the previous container of the session has not
//!    been reported as exited.
//! 3. Drain the channel: each [`ContainerExit`] means that session's container is gone
//!    (exited on its own, crashed, OOM-killed, or stopped by the host: see `requested`).
//!    Exactly one event per started container; the container has been removed already.
//! 4. To end a session's container: `stop(name, grace)` (SIGTERM, SIGKILL after grace) or
//!    `kill(name)`; both return once it is gone, and the exit event still arrives.

mod docker;
pub mod image_build;
pub mod mounts;
mod naming;
mod spec;

pub use docker::{
    ContainerExit, ContainerHandle, DockerRunner, ExitStatus, ManagedContainer, ReapReport,
    RunnerConfig, RunnerError,
};
pub use mounts::{
    AllowedMount, AllowedRoot, AllowlistError, MountAllowlist, MountCheck, MountRejection,
    MountRequest, RejectedMount,
};
pub use naming::{
    ContainerName, InstallId, LABEL_AGENT_GROUP, LABEL_INSTALL, LABEL_SESSION, NAME_PREFIX,
};
pub use spec::{
    AGENT_MOUNT, CONFIG_MOUNT, ContainerSpec, GLOBAL_MOUNT, INBOUND_MOUNT, NetworkMode,
    ResourceLimits, SpecError, TMP_MOUNT, TmpfsOptions, UserIds, WORKSPACE,
};
