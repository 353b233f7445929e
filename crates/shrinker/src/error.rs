//! Typed errors at the API boundary.

use std::collections::TryReserveError;

use crate::group_id::GroupId;
use crate::info::ShrinkerId;

/// Building a shrinker or a registry failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Shrinkers need a name (it names them in listings and logs).
    #[error("a shrinker needs a non-empty name")]
    EmptyName,
    /// The registry already holds its maximum number of shrinkers.
    #[error("the registry is full: {max} shrinkers exist")]
    TooManyShrinkers {
        /// The registry's limit.
        max: u32,
    },
    /// A registry needs at least one node.
    #[error("a registry needs at least one node")]
    NoNodes,
    /// Memory for the shrinker's bookkeeping could not be allocated.
    #[error("allocating shrinker bookkeeping failed: {0}")]
    Alloc(#[from] TryReserveError),
}

/// A reclaim request or a by-hand call was invalid.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShrinkError {
    /// Priorities run from 12 (gentlest) to 0.
    #[error("priority {priority} is out of range 0..=12")]
    InvalidPriority {
        /// The priority asked for.
        priority: u8,
    },
    /// The node does not exist in this registry.
    #[error("node {node} does not exist (the registry has {nr_nodes})")]
    InvalidNode {
        /// The node asked for.
        node: usize,
        /// The registry's node count.
        nr_nodes: usize,
    },
    /// The memory group does not exist (never created, or removed).
    #[error("memory group {} does not exist", group.index())]
    NoSuchGroup {
        /// The group asked for.
        group: GroupId,
    },
    /// No registered shrinker has this id.
    #[error("no registered shrinker has id {id}")]
    NoSuchShrinker {
        /// The id asked for.
        id: ShrinkerId,
    },
}

/// Creating or removing a memory group failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// The group does not exist (never created, or removed).
    #[error("memory group {} does not exist", group.index())]
    NoSuchGroup {
        /// The group asked for.
        group: GroupId,
    },
    /// The root group always exists: it cannot be removed.
    #[error("the root memory group cannot be removed")]
    RootGroup,
    /// A group with children cannot be removed (the kernel's `rmdir` of a
    /// non-empty cgroup: `EBUSY`); remove the children first.
    #[error("memory group {} has {children} child group(s)", group.index())]
    HasChildren {
        /// The group asked for.
        group: GroupId,
        /// How many children it has.
        children: usize,
    },
    /// Every group index has been used (indices are never reused).
    #[error("no group index is left: {max} groups were created")]
    TooManyGroups {
        /// The number of indices.
        max: u32,
    },
    /// Memory for the group's bookkeeping could not be allocated.
    #[error("allocating group bookkeeping failed: {0}")]
    Alloc(#[from] TryReserveError),
}
