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

mod docker;
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
    AGENT_MOUNT, ContainerSpec, GLOBAL_MOUNT, NetworkMode, ResourceLimits, SpecError, TMP_MOUNT,
    TmpfsOptions, UserIds, WORKSPACE,
};
