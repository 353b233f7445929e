//! Building, registering and unregistering a shrinker:
//! [`ShrinkerBuilder`] → [`Shrinker`] (built, unregistered) →
//! [`Registered`] (on the list) → back to your state.
//!
//! # Register (`shrinker_register`)
//!
//! 1. Under the registry mutex: append to the RCU list
//!    (`list_add_tail_rcu`) and publish the id. Walkers may now *see* the
//!    shrinker, but its count is 0, so `try_get` fails and they skip it.
//! 2. Outside the mutex, **last**: `refs.activate()` (count 1, Release). From here on
//!    walkers pin it; the Release pairs with their Acquire `try_get` and
//!    publishes everything written at build (the kernel's rule: the
//!    refcount is set last).
//!
//! # Unregister (`shrinker_free`)
//!
//! 0. Misuse checks: panics if the calling thread is inside a callback of
//!    this very shrinker (it would wait for itself), or inside an RCU read
//!    section (a callback that waits for a grace period would then wait for
//!    us while we wait for it).
//! 1. Close the registry's gate (registry/pin.rs): walks stop taking light pins. If
//!    the gate was open (no unregister lately), this waits for one grace
//!    period; under churn it is already closed and costs a mutex.
//! 2. Mark the shrinker dying, then drop the initial reference
//!    (`shrinker_put`). `try_get` fails from now on, even while walks still
//!    hold pins (the dying mark: registry/object.rs's `try_get`), so overlapping walks
//!    cannot keep the count up forever; a zero count never rises again.
//!    Unless that was the last
//!    reference, wait on the completion until every in-flight refcount pin
//!    has been put (the last `put` completes it). Then wait until every
//!    walker holding a walk pin on the registry is in a callout or done
//!    (never for a callback to return: registry/pin.rs, "Walk pins"), and
//!    no walker holds a light pin on this shrinker. "After that, no
//!    shrinker is running or will run again."
//! 3. Under the mutex: unlink (`list_del_rcu`: `next` stays for walkers
//!    standing on the node), clear and free the id.
//! 4. Take the private state back (nobody can call it any more) and free the
//!    node with `call_rcu` — after a grace period, without waiting for one.
//! 5. Leave the gate (dropping the hold, so a panic cannot leave it
//!    closed); the last one out arms its reopening.
//!
//! Unregistering waits for this shrinker's running callbacks, and for at
//! most one grace period per quiet spell: not for other shrinkers, not for
//! walks.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;

use super::object::ShrinkerObject;
use super::pin;
use super::walk::inside_callback_of;
use super::ShrinkerRegistry;
use crate::engine::NrDeferred;
use crate::engine::{DEFAULT_SEEKS, SHRINK_BATCH};
use crate::error::BuildError;
use crate::group_id::GroupId;
use crate::info::{ShrinkerFlags, ShrinkerId, ShrinkerStats};
use crate::shrink::Shrink;

/// Configures a shrinker (`shrinker_alloc` arguments plus the fields set
/// before `shrinker_register`).
///
/// # Examples
///
/// ```
/// use shrinker::{Count, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkerRegistry};
/// struct Dentries;
/// impl Shrink for Dentries {
///     fn count(&self, _: &ShrinkControl) -> Count { Count::Empty }
///     fn scan(&self, _: &mut ShrinkControl) -> Scan { Scan::Stop }
/// }
/// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
/// let s = ShrinkerBuilder::new("dentry")
///     .numa_aware(true)
///     .seeks(0) // free to recreate: trim aggressively
///     .batch(1024)
///     .build_in(&reg, Dentries)?;
/// assert_eq!(s.name(), "dentry");
/// let s = s.register();
/// assert_eq!(reg.len(), 1);
/// let _state: Dentries = s.unregister();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ShrinkerBuilder {
    name: String,
    flags: ShrinkerFlags,
    seeks: u32,
    batch: usize,
    object_bytes: usize,
}

impl ShrinkerBuilder {
    /// A shrinker called `name` (listed as `name-id`), not NUMA- or
    /// group-aware, `seeks` 2, `batch` 128.
    pub fn new(name: impl Into<String>) -> Self {
        ShrinkerBuilder {
            name: name.into(),
            flags: ShrinkerFlags::default(),
            seeks: DEFAULT_SEEKS,
            batch: SHRINK_BATCH,
            object_bytes: 0,
        }
    }

    /// Call it per node, with per-node deferred work (`SHRINKER_NUMA_AWARE`).
    pub fn numa_aware(mut self, on: bool) -> Self {
        self.flags.numa_aware = on;
        self
    }

    /// Call it per memory group (`SHRINKER_MEMCG_AWARE`): group reclaim
    /// calls it for a group while its bit is set there
    /// ([`ShrinkerRegistry::set_shrinker_bit`]).
    pub fn group_aware(mut self, on: bool) -> Self {
        self.flags.group_aware = on;
        self
    }

    /// The cost of recreating an object, in "seeks" (default 2,
    /// `DEFAULT_SEEKS`). Higher means gentler reclaim; 0 means free to
    /// recreate: half of the cache is asked for at every priority.
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.seeks = seeks;
        self
    }

    /// Objects per scan call (default 128, `SHRINK_BATCH`; 0 means the
    /// default, as in the kernel).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = if batch == 0 { SHRINK_BATCH } else { batch };
        self
    }

    /// The size in bytes of one of this cache's objects, for reclaim that
    /// asks for bytes ([`Freed`](crate::Freed), the
    /// [`Reclaimer`](crate::reclaim::Reclaimer)): objects freed count this
    /// many bytes each unless a scan reports its own figure with
    /// [`ShrinkControl::report_freed_bytes`](crate::ShrinkControl::report_freed_bytes).
    /// Default 0: unknown (the reclaimer then relies on the usage its
    /// pressure source reads).
    pub fn object_bytes(mut self, bytes: usize) -> Self {
        self.object_bytes = bytes;
        self
    }

    /// Build in the [global](ShrinkerRegistry::global) registry.
    ///
    /// # Errors
    ///
    /// As [`build_in`](Self::build_in).
    ///
    /// # Blocking
    ///
    /// Takes the global registry's mutex (and, for a group-aware shrinker, its
    /// groups mutex) to allocate the id.
    #[cfg(not(loom))]
    pub fn build<S: Shrink>(self, state: S) -> Result<Shrinker<S>, BuildError> {
        self.build_in(ShrinkerRegistry::global(), state)
    }

    /// Allocate the shrinker in `registry`: its id and its deferred
    /// counters. Nothing is visible to reclaim until
    /// [`Shrinker::register`].
    ///
    /// # Errors
    ///
    /// [`BuildError::EmptyName`]; [`BuildError::TooManyShrinkers`] when the
    /// registry is full; [`BuildError::Alloc`] when memory runs out.
    ///
    /// # Blocking
    ///
    /// Takes the registry's mutex (and, for a group-aware shrinker, its groups
    /// mutex) to allocate the id.
    pub fn build_in<S: Shrink>(
        self,
        registry: &ShrinkerRegistry,
        state: S,
    ) -> Result<Shrinker<S>, BuildError> {
        if self.name.is_empty() {
            return Err(BuildError::EmptyName);
        }
        let nr = if self.flags.numa_aware {
            registry.nr_nodes()
        } else {
            1
        };
        let deferred = NrDeferred::try_new(nr)?;
        let id = registry.alloc_id()?;
        if self.flags.group_aware {
            // Every group's `ShrinkerInfo` must cover the id before the
            // shrinker can be registered (`expand_shrinker_info`).
            if let Err(e) = registry.inner.groups.expand_for(id) {
                registry.release_id(id);
                return Err(e);
            }
        }
        let shrink: NonNull<dyn Shrink> = NonNull::from(Box::leak(Box::new(state)));
        let object = ShrinkerObject::new(
            shrink,
            id,
            self.name.into_boxed_str(),
            self.flags,
            self.seeks,
            self.batch,
            self.object_bytes,
            deferred,
        )
        .boxed();
        Ok(Shrinker {
            handle: Handle {
                object: NonNull::from(Box::leak(object)),
                registry: registry.clone(),
                _state: PhantomData,
            },
        })
    }
}

/// What both handles hold: the shrinker object they own, its registry, and
/// (in the type) the state it was built with.
struct Handle<S: Shrink> {
    object: NonNull<ShrinkerObject>,
    registry: ShrinkerRegistry,
    _state: PhantomData<Box<S>>,
}

// SAFETY: a handle owns its object and its `S` (`Send + Sync`); the
// registry is a shared handle.
unsafe impl<S: Shrink> Send for Handle<S> {}
// SAFETY: `&Handle` gives `&S` (`Sync`) and read-only object fields.
unsafe impl<S: Shrink> Sync for Handle<S> {}

impl<S: Shrink> Handle<S> {
    #[inline]
    fn object(&self) -> &ShrinkerObject {
        // SAFETY: the object is freed only by `take_unshared` or
        // `unregister_inner`, which consume the handle.
        unsafe { self.object.as_ref() }
    }

    /// The state the shrinker was built with.
    #[inline]
    fn state(&self) -> &S {
        // SAFETY: `shrink` came from `Box::<S>::leak` in `build_in`; the
        // state is taken back only by `take_unshared` or
        // `unregister_inner`, which consume the handle.
        unsafe { &*self.object().shrink_ptr().as_ptr().cast::<S>() }
    }
}

/// What both handles offer alike: their object (crate-internal), id and
/// name, and a deref to the state, so that the cache a shrinker shrinks
/// stays usable through its handle.
macro_rules! handle_common {
    ($($handle:ident),*) => {$(
        impl<S: Shrink> $handle<S> {
            #[inline]
            pub(crate) fn object(&self) -> &ShrinkerObject {
                self.handle.object()
            }

            /// The stable id (kept from build to unregister).
            #[must_use]
            pub fn id(&self) -> ShrinkerId {
                self.object().id
            }

            /// The name given to the builder (listed as `name-id`).
            #[must_use]
            pub fn name(&self) -> &str {
                &self.object().name
            }
        }

        impl<S: Shrink> Deref for $handle<S> {
            type Target = S;
            fn deref(&self) -> &S {
                self.handle.state()
            }
        }
    )*};
}

handle_common!(Shrinker, Registered);

/// A built, unregistered shrinker (`shrinker_alloc`'s result). Dropping it
/// frees it at once: nobody else has seen it.
#[must_use = "a shrinker does nothing until it is registered"]
pub struct Shrinker<S: Shrink> {
    handle: Handle<S>,
}

impl<S: Shrink> Shrinker<S> {
    /// Publish it to reclaim (`shrinker_register`; module doc, "Register").
    ///
    /// # Ordering
    ///
    /// Release: every write made before this call (the state's
    /// initialisation included) is visible to the callbacks.
    ///
    /// # Blocking
    ///
    /// Takes the registry mutex briefly; never waits for a walk.
    pub fn register(self) -> Registered<S> {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; the handle moves out once.
        let handle = unsafe { std::ptr::read(&this.handle) };
        // 1. SAFETY: built, unlinked, owned by us.
        unsafe { handle.registry.link(handle.object) };
        // 2. Release: pairs with the Acquire of `try_get`; publishes the
        // object and the state (module doc, "Register" step 2).
        handle.object().refs.activate();
        Registered { handle }
    }

    /// Free it and take the state back.
    pub fn into_inner(self) -> S {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; the handle moves out once.
        let handle = unsafe { std::ptr::read(&this.handle) };
        // SAFETY: never registered: nobody else ever saw the object.
        unsafe { take_unshared(handle.object, &handle.registry) }
    }
}

/// Free a node nobody else can reach and return its state.
///
/// # Safety
///
/// `node` was built by `build_in` with state type `S`, in `registry`; it is
/// unlinked with its id slot clear, and no other thread can reach it.
unsafe fn take_unshared<S: Shrink>(
    node: NonNull<ShrinkerObject>,
    registry: &ShrinkerRegistry,
) -> S {
    // SAFETY: exclusive owner (contract).
    let b = unsafe { Box::from_raw(node.as_ptr()) };
    registry.release_id(b.id);
    // SAFETY: `shrink` came from `Box::<S>::leak` in `build_in` (contract).
    *unsafe { Box::from_raw(b.shrink_ptr().as_ptr().cast::<S>()) }
}

impl<S: Shrink> Drop for Shrinker<S> {
    fn drop(&mut self) {
        // SAFETY: never registered: nobody else ever saw the object.
        drop(unsafe { take_unshared::<S>(self.handle.object, &self.handle.registry) });
    }
}

impl<S: Shrink> fmt::Debug for Shrinker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shrinker({}-{}, unregistered)", self.name(), self.id())
    }
}

/// A registered shrinker. Dropping it (or [`unregister`](Self::unregister))
/// unregisters it: module doc, "Unregister".
///
/// Derefs to the state, so the cache it shrinks stays usable through it.
#[must_use = "dropping the handle unregisters the shrinker at once"]
pub struct Registered<S: Shrink> {
    handle: Handle<S>,
}

impl<S: Shrink> Registered<S> {
    /// Mark this shrinker as possibly having objects in (`group`, `node`):
    /// [`ShrinkerRegistry::set_shrinker_bit`] with its own id. Call it after
    /// making a per-group list non-empty (a [`ListLru`](crate::ListLru)'s
    /// notify hook does).
    ///
    /// # Errors
    ///
    /// As [`ShrinkerRegistry::set_shrinker_bit`]: also
    /// [`ShrinkError::NoSuchShrinker`](crate::ShrinkError::NoSuchShrinker)
    /// if the shrinker is not group-aware (unless a group-aware shrinker
    /// with a higher id exists; the walk ignores such bits).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{Count, GroupId, Scan, Shrink, ShrinkControl, ShrinkerBuilder, ShrinkRequest, ShrinkerRegistry};
    /// struct Five;
    /// impl Shrink for Five {
    ///     fn count(&self, _: &ShrinkControl) -> Count { Count::Objects(5) }
    ///     fn scan(&self, sc: &mut ShrinkControl) -> Scan { Scan::Freed(sc.nr_to_scan().min(5)) }
    /// }
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// let s = ShrinkerBuilder::new("five").group_aware(true).build_in(&reg, Five)?.register();
    /// s.set_bit(g, 0)?;
    /// assert_eq!(reg.shrink(&ShrinkRequest { group: g, priority: 0, ..Default::default() })?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// As [`ShrinkerRegistry::set_shrinker_bit`].
    pub fn set_bit(&self, group: GroupId, node: usize) -> Result<(), crate::ShrinkError> {
        self.handle
            .registry
            .set_shrinker_bit(group, node, self.id())
    }

    /// The registry it is registered in.
    #[must_use]
    pub fn registry(&self) -> &ShrinkerRegistry {
        &self.handle.registry
    }

    /// Statistics so far.
    #[must_use]
    pub fn stats(&self) -> ShrinkerStats {
        self.object().stats_snapshot()
    }

    /// Unregister, wait for in-flight callbacks, and hand the state back.
    ///
    /// # Blocking
    ///
    /// Until every callback of *this* shrinker that is running has returned;
    /// and, if no shrinker of the registry was unregistered in the last few
    /// milliseconds, for one RCU grace period (module doc, step 1). Never
    /// for another shrinker or a walk.
    ///
    /// # Panics
    ///
    /// From inside one of this shrinker's own callbacks (it would wait for
    /// itself forever), and inside an RCU read-side section. The shrinker
    /// then stays registered.
    pub fn unregister(self) -> S {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped; the handle moves out once.
        let handle = unsafe { std::ptr::read(&this.handle) };
        // SAFETY: the handle was registered with state type `S` and is
        // consumed.
        unsafe { unregister_inner::<S>(handle.object, &handle.registry) }
    }
}

/// Steps 0–4 of the module doc.
///
/// # Safety
///
/// `node` was built with state type `S` in `registry` and registered; the
/// caller gives up its handle.
#[track_caller]
unsafe fn unregister_inner<S: Shrink>(
    node: NonNull<ShrinkerObject>,
    registry: &ShrinkerRegistry,
) -> S {
    // SAFETY: registered, so live until step 4 (contract).
    let n = unsafe { node.as_ref() };
    // 0.
    if inside_callback_of(node) {
        panic!(
            "shrinker {}-{} unregistered from inside its own callback: unregister waits for \
             every running callback of the shrinker, including this one, and would deadlock",
            n.name, n.id
        );
    }
    if shrinker_rcu::in_read_section() {
        panic!(
            "shrinker {}-{} unregistered inside an RCU read-side section: unregister may sleep \
             until a callback returns, and a callback that waits for a grace period would wait \
             for this section: deadlock",
            n.name, n.id
        );
    }
    // 1. Close the gate: walks stop taking light pins, and every light pin
    // taken before is visible to step 2b (registry/pin.rs).
    let gate_hold = registry.inner.gate.enter();
    // 2. Refuse new pins (the dying mark), drop the initial reference, and
    // wait until the pins already in flight are put
    // (`LiveRef::kill_and_wait`). Acquire (dec_and_test's if ours was the
    // last reference, else the completion's mutex, which the last `put`
    // completes): every pin's accesses happen-before what follows.
    n.refs.kill_and_wait(&n.done);
    // 2b. Wait until every walk pin on this registry is in a callout or
    // gone, then wait out light pins on this shrinker (Acquire on each
    // slot: their callouts happen-before what follows).
    pin::wait_for_walkers(&registry.inner.gate);
    pin::wait_for_light_pins(node.as_ptr());
    // 3. SAFETY: linked, count zero, every walk pin in a callout (it sees
    // the gate closed after it), no light pin.
    unsafe { registry.unlink(node) };
    // 4. SAFETY: `shrink` came from `Box::<S>::leak` in `build_in`; the
    // count is zero for good, so no thread can call it any more.
    let state = *unsafe { Box::from_raw(n.shrink_ptr().as_ptr().cast::<S>()) };
    // SAFETY: unlinked, id cleared, count zero; ours to give up.
    unsafe { registry.free_rcu(node) };
    // 5. The last unregister out arms the gate's reopening.
    drop(gate_hold);
    state
}

impl<S: Shrink> Drop for Registered<S> {
    fn drop(&mut self) {
        // SAFETY: registered with state `S`; the handle is going away.
        drop(unsafe { unregister_inner::<S>(self.handle.object, &self.handle.registry) });
    }
}

impl<S: Shrink> fmt::Debug for Registered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registered({}-{})", self.name(), self.id())
    }
}
