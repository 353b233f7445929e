//! The lifetime mechanisms every layer above shares, each implemented once:
//!
//! * [`RcuArray`]: an array of pointers read lock-free under RCU, written
//!   and grown by copy under its writers' mutex (the shrinker id table, the
//!   group table, a `ListLru`'s per-group table).
//! * [`free_after_grace_period`] / [`retire_after_grace_period`]: give an
//!   unpublished allocation back once every reader that may still hold it
//!   has left its read section, promptly or lazily ([`Urgency`]).
//! * [`LiveRef`]: a reference count with a dying mark whose last `put`
//!   completes its owner's `Completion` (a shrinker object's pin, a group's
//!   pin).
//! * [`frames`]: the thread-local stack of "this thread is inside X"
//!   frames, for the misuse checks that would otherwise wait for
//!   themselves.
//!
//! Nothing here knows about shrinkers or groups; they sit above.

pub(crate) mod frames;
mod free;
mod live_ref;
mod rcu_array;

pub(crate) use free::{free_after_grace_period, retire_after_grace_period, Urgency};
pub(crate) use live_ref::LiveRef;
pub(crate) use rcu_array::{ArrayWriter, RcuArray};
