//! The lifetime mechanisms every layer above shares, each implemented once:
//!
//! * [`RcuArray`]: an array of pointers read lock-free under RCU, written
//!   and grown by copy under its writers' mutex (the shrinker id table, the
//!   group table, a `ListLru`'s per-group table).
//! * [`free_after_grace_period`] / [`retire_after_grace_period`]: give an
//!   unpublished allocation back once every reader that may still hold it
//!   has left its read section.
//! * [`LiveRef`]: a reference count with a dying mark whose last `put`
//!   completes its owner's `Completion` (a shrinker object's pin, a group's
//!   pin).
//! * [`Recycler`]: a bounded cache of freed allocations of one type (the
//!   shrinker object's `kmem_cache`), so that register/unregister churn
//!   does not pay the allocator's cross-thread free and aligned allocation.
//! * [`frames`]: the thread-local stack of "this thread is inside X"
//!   frames, for the misuse checks that would otherwise wait for
//!   themselves.
//!
//! Nothing here knows about shrinkers or groups; they sit above.

pub(crate) mod frames;
mod free;
mod live_ref;
mod rcu_array;
#[cfg(not(loom))] // loom models free shrinker objects into a graveyard
mod recycle;

pub(crate) use free::{free_after_grace_period, retire_after_grace_period};
pub(crate) use live_ref::LiveRef;
pub(crate) use rcu_array::{ArrayWriter, RcuArray};
#[cfg(not(loom))]
pub(crate) use recycle::Recycler;
