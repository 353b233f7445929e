//! [`PercpuRef`]: the kernel's `percpu_ref`, a reference count that touches
//! no shared cache line while the object is live and becomes one exact atomic
//! counter when it is killed.
//!
//! # The problem
//!
//! A hot object (a device, a queue, a cgroup) is pinned and unpinned by every
//! operation on every thread. With one shared counter, each get and put
//! bounces the counter's cache line between cores, and the object's
//! "reference count" becomes the scalability limit. Yet the count only has to
//! be *exact* at one moment: when the owner wants the object gone and waits
//! for the last user.
//!
//! `percpu_ref` splits the life in two. While live, each get/put adds to a
//! slot private to the caller, and nobody knows the total. To shut down, the
//! owner *kills* the ref: it flips it to atomic mode, waits one RCU grace
//! period (after which no thread can still be adding to a slot), folds the
//! slots into one atomic counter and drops its own initial reference. From
//! then on the count is exact, and the put that takes it to zero runs the
//! release callback.
//!
//! # Slots in userspace: per thread, measured
//!
//! The kernel's slots are per CPU, updated with preemption off. Userspace has
//! no preemption control, so a per-CPU slot needs an atomic read-modify-write
//! (the thread may migrate between `sched_getcpu()` and the update). A slot
//! owned by one thread does not: its owner is the only writer, so a `Relaxed`
//! load and store suffice (the private `slot` module holds the index
//! allocator and the section protocol). Measured with
//! `examples/slot_choice.rs` on the 2-core development machine, shared with
//! other jobs (load ≈ 2.5), ns per get+put pair, each operation in its own
//! `shrinker_rcu` read-side section (as `PercpuRef` did then), median of 5
//! runs, two separate invocations:
//!
//! | slot choice | 1 thread | 2 threads |
//! |---|---|---|
//! | `Arc` clone+drop (reference) | 19–25 | 38–55 |
//! | one shared atomic counter | 26 | 37–63 |
//! | per CPU: glibc `sched_getcpu` (rseq) + atomic add | 20–21 | 39–47 |
//! | per thread: atomic add | 24–26 | 36–44 |
//! | per thread: owned, load + store | 9 | 18 |
//!
//! Per-CPU slots save the cache-line bounce but keep the `lock`-prefixed
//! instruction, which dominates here; owned per-thread slots drop both, so
//! they are what this type uses.
//!
//! # The fast path, instruction by instruction
//!
//! With slots chosen, the RCU read-side section that upstream's
//! `rcu_read_lock_sched()` stands for became the cost: two sections per
//! get+put (a thread-local nesting word loaded and stored twice each, the
//! registration and barrier-mode checks, the grace-period word), a lazily
//! initialised thread-local for the slot index, and one slot word carrying
//! both updates: 89 instructions per get+put under callgrind, with four
//! store-to-load dependencies through the nesting word and two through the
//! slot, 5.8–7.7 ns against 3.8–4.1 ns for `Arc` clone+drop in
//! `shrinker-bench refcount`. So the fast path is now its own section, the
//! userspace shape of `preempt_disable(); this_cpu_inc(); preempt_enable()`:
//! a `busy` flag in the thread's slot, which only the thread writes, and
//! which a switch to atomic waits for after a membarrier (the handshake is
//! drawn in the `slot` module). `get()` on x86-64 (`put()` is the same with
//! `incq 0x10(%rax)`, the slot's `puts`):
//!
//! ```text
//! mov  %fs:OFF,%rcx        slot index: one thread-local load, no "initialised?" check
//! cmp  0x18(%rdi),%rcx     index < slots.len()? an unclaimed or slot-less
//! jae  get_slow              thread's index is past every array: claim or count
//! mov  0x10(%rdi),%rdx     slots
//! shl  $0x7,%rcx           x 128 (CachePadded<Slot>)
//! lea  (%rdx,%rcx),%rax    &slots[index]
//! movq $0x1,(%rax)         1. busy = 1 (Relaxed); the compiler fence emits nothing
//! mov  0x30(%rdi),%rcx     2. mode (Acquire: a plain load on x86)
//! test $0x1,%cl               ATOMIC?
//! jne  slot_leave_atomic      yes: busy = 0 out of line, then the slow path
//! incq 0x8(%rax)           3. gets += 1: Relaxed load + store, fused by LLVM
//! movq $0x0,(%rax)         4. busy = 0 (Release: a plain store on x86)
//! ```
//!
//! Twelve instructions, no `lock` prefix, no fence, every access on the
//! thread's own cache line or on read-mostly ones (the ref's header): 24
//! instructions per get+put under callgrind. Gets and puts count in two
//! words (`gets`, `puts`; the slot holds `gets - puts`), so a get+put pair
//! carries one store-to-load dependency per word instead of two in a row.
//! Measured with `cargo run --release -p shrinker-bench -- refcount` on the
//! same machine, eight runs: 1.8–3.8 ns per get+put at 1 thread (0.44–0.56x
//! `Arc`); at 2 threads 1.8 and 2.4 ns (0.07x and 0.11x `Arc`, whose shared
//! counter bounces between the cores) in the two runs where the threads got
//! both cores, 3.9–6.8 ns (0.29–0.47x) in the six where other jobs (load
//! average 2–7) kept them from running at once: each thread's time then
//! includes its waits for a core, and `Arc`'s line bounces less.
//!
//! The costs:
//!
//! * Memory: each ref has `2 × available_parallelism` slots (8 to 128), each
//!   a `CachePadded` (128 bytes on x86-64). A thread whose index is past that
//!   uses the shared counter: correct, just not scalable.
//! * A switch to atomic issues one `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
//!   (an IPI to every CPU running a thread of the process) and may yield
//!   while a slot's owner is preempted inside its section. Without
//!   membarrier (old kernels, seccomp) no thread gets a slot and every get
//!   and put takes the shared counter in an RCU read-side section.
//! * Get and put are not async-signal-safe: a signal handler that takes or
//!   drops a reference on the thread it interrupted could end that thread's
//!   section early or overwrite its slot update. (Nor is entering an RCU
//!   read-side section.)
//!
//! # States
//!
//! The mode word holds two bits, changed only under the ref's switch mutex
//! and read locklessly by every get/put:
//!
//! | mode | `switching` | `count` | state |
//! |---|---|---|---|
//! | — | no | `BIAS` + unaccounted refs | **percpu live**: gets/puts go to slots |
//! | `ATOMIC` | yes | `BIAS` + unaccounted refs | **switching**: gets/puts go to `count`; the RCU callback has not summed the slots yet |
//! | `ATOMIC` | no | exact, ≥ 1 | **atomic live** |
//! | `ATOMIC \| DEAD` | either | exact (once summed), ≥ 1 | **dying**: `tryget_live` fails, `tryget` still succeeds |
//! | `ATOMIC \| DEAD` | no | 0 | **zero**: `release` has run; `reinit`/`resurrect` revive it |
//!
//! ```text
//!  new(NONE)            new(ATOMIC)               new(DEAD)
//!     |                     |                         |
//!     v                     v                         v
//! [percpu live] --switch_to_atomic--> [switching] --grace period, sum, confirm--> [atomic live]
//!     ^                                                                              |
//!     +--------- switch_to_percpu (ALLOW_REINIT, not forced atomic, not dead) -------+
//!
//! kill / kill_and_confirm (from either live state): set DEAD, switch to atomic
//! (confirm at once if already atomic), put the initial reference
//!     |
//!     v
//! [dying] --last put--> [zero]: release()
//!     |                    |
//!     +-- resurrect() -----+-- reinit() --> back to live (percpu if allowed)
//! ```
//!
//! # The bias
//!
//! While slots are in use, `count` carries `PERCPU_COUNT_BIAS` (2⁶³) plus the
//! references taken on it directly. Slots may individually go negative (a get
//! on one thread, the put on another); only their sum means anything. The
//! switch callback adds `sum − BIAS` in *one* atomic add: the bias keeps
//! `count` from reaching zero while references are still spread over the
//! slots, and removing it in the same add as the sum means there is no moment
//! where the count is exact but incomplete.
//!
//! The counter is modular, as the kernel's `atomic_long_t`: it does not
//! saturate. One call moves it by at most `isize::MAX` (larger `nr` panic
//! before any change), and `put_many(0)` is a no-op, so no single call can
//! turn a get into a put or re-run `release` on a zero count.
//!
//! # The switch to atomic, step by step
//!
//! 1. Under the switch mutex: if a switch is already in flight, chain the
//!    confirm to it and stop (it ends in atomic mode, which nothing can undo
//!    before it completes). Otherwise set `ATOMIC` (and `DEAD` for a kill),
//!    mark `switching`, take one reference for the switch itself ("put after
//!    confirmation").
//! 2. Outside the mutex: `call_rcu(switch_to_atomic_rcu)`.
//! 3. After the grace period, on the RCU worker: every slow-path get/put
//!    section that could have seen per-CPU mode has ended (the grace
//!    period's guarantee). Issue the heavy barrier (membarrier), after which
//!    every new fast-path section sees `ATOMIC`, and wait for each slot's
//!    `busy` flag to read 0, which ends the fast-path sections still open.
//!    Sum the slots; add `sum − BIAS` to `count`.
//! 4. Run the confirm callback, then the chained ones: from here on every
//!    thread sees the ref in atomic mode (and dead, for a kill), so
//!    `tryget_live` fails.
//! 5. Under the mutex, once no chained confirm is left, clear `switching`;
//!    then wake anyone waiting for it and put the switch's own reference —
//!    which may be the last one and run `release`.
//!
//! # Callbacks
//!
//! `release` runs in the context of the last put: any thread, or the RCU
//! worker. `confirm` runs on the RCU worker, or synchronously inside
//! `kill_and_confirm`/`switch_to_atomic` when the ref is already atomic. Both
//! must not block for long (they hold up every other RCU callback). Neither
//! runs with any lock of this crate held, nor inside an RCU read-side
//! section. There are no implied grace periods between kill and release.
//!
//! # Waiting and asynchronous forms
//!
//! `kill`, `kill_and_confirm` and `switch_to_atomic` never wait: a call that
//! finds a switch to atomic in flight chains its confirm to it (the switch
//! runs it right after its own, before it ends). They work anywhere,
//! including inside an RCU callback and inside an RCU read-side section.
//! `switch_to_atomic_sync` waits for a grace period and the RCU worker;
//! `switch_to_percpu` and `resurrect` wait for a switch in flight (`reinit`
//! cannot find one: a zero count means the last switch has ended).
//! Waiting there would deadlock inside a read-side section (the grace period
//! waits for it) or inside an RCU callback (the switch completes in a
//! callback the worker cannot reach while it runs the caller), so they panic
//! there, naming the misuse, before changing anything:
//! `switch_to_atomic_sync` always, the other two when a switch is in
//! flight.
//!
//! # Ordering
//!
//! * The mode word is loaded with `Acquire` (the kernel's `READ_ONCE` plus
//!   address dependency; Rust has no consume). It pairs with the `Release`
//!   store in `switch_to_percpu`, so a get that sees per-CPU mode also sees
//!   the zeroed slots.
//! * The fast path's `busy = 1` store and its mode load are ordered by the
//!   asymmetric barrier pair (a compiler fence here, membarrier in the
//!   switch); its `Release` store of `busy = 0` pairs with the switch's
//!   `Acquire` load of it, so the slot update happens-before the sum.
//! * Puts in atomic mode are `Release`; the put that reaches zero adds a
//!   `fence(Acquire)` before `release`, so every user's accesses
//!   happen-before `release`. Slot updates reach it through the sum
//!   instead: each section's `busy = 0` happens-before step 3 (and a
//!   slow-path section's end, through the grace period), whose `Release`
//!   add heads the release sequence that the final put acquires.
//! * `tryget`/`tryget_live` promise no ordering for the caller's data, as
//!   upstream: usually the pointer through which the ref was found is the
//!   "initialised" flag. When the count itself is (the swap device of
//!   `examples/swap_device.rs`), follow a successful `tryget_live` with
//!   `fence(Acquire)`: it pairs with the `Release` in
//!   [`resurrect`](PercpuRef::resurrect) and [`reinit`](PercpuRef::reinit).

//!
//! # Files
//!
//! | file | holds | uses |
//! |---|---|---|
//! | `slot.rs` | per-thread slots: the index allocator, the section's barrier pair | — |
//! | `state.rs` | the mode bits, [`InitFlags`], `RefData` (the shared data) | `slot.rs` |
//! | `count.rs` | the fast paths: get, tryget, put, the put that reaches zero | `state.rs`, `slot.rs` |
//! | `switch.rs` | kill, confirm, switching modes, resurrect, reinit | all three |
//! | `mod.rs` (this file) | [`PercpuRef`], the public face | all four |

use crate::sync::{Arc, AtomicIsize, AtomicUsize, Condvar, Mutex, Ordering};
use std::fmt;

mod count;
mod slot;
mod state;
mod switch;
#[cfg(all(test, not(loom)))]
mod tests;

pub use state::InitFlags;
use state::{Mode, RefData, SwitchState, ATOMIC_BIT, DEAD_BIT, PERCPU_COUNT_BIAS};
use switch::{panic_waiting_in_callback, panic_waiting_in_read_section};

/// A per-CPU reference count with an exact, atomic shutdown
/// (`struct percpu_ref`).
///
/// Gets and puts are manual, as in the kernel: every `get`/successful
/// `tryget` must be matched by one `put`. They never block: in per-CPU mode
/// each is a few plain loads and stores on the calling thread's own slot; in
/// atomic mode (or on a thread without a slot) a short RCU read-side section
/// around the shared counter. A thread's first get or put claims a slot
/// index under a mutex, once (the process's first also registers
/// membarrier). See the [module documentation](self) for the state machine,
/// the fast path and the orderings.
///
/// # Invariants
///
/// * The mode word changes only under the switch mutex; `DEAD` implies
///   `ATOMIC` (or a switch to atomic in flight).
/// * While `switching` is set, exactly one `switch_to_atomic_rcu` callback is
///   queued, holding one reference of its own; confirms chained to it run
///   before it clears `switching`.
/// * In per-CPU mode `count` carries the bias, so it cannot reach zero.
///
/// # Examples
///
/// ```
/// use shrinker_sync::{Completion, InitFlags, PercpuRef};
/// use std::sync::Arc;
///
/// let released = Arc::new(Completion::new());
/// let r = {
///     let released = Arc::clone(&released);
///     PercpuRef::new(move || released.complete_all(), InitFlags::NONE)
/// };
///
/// r.get(); // cheap: a slot of this thread
/// assert!(r.tryget_live());
/// r.put();
///
/// r.kill(); // drops the initial reference; still one user
/// r.put(); // the last put runs release, after the switch to atomic
/// released.wait();
/// assert!(r.is_zero());
/// ```
pub struct PercpuRef {
    data: Arc<RefData>,
}

impl PercpuRef {
    /// A new ref holding its initial reference (unless `InitFlags::DEAD`);
    /// `release` runs each time the count drops to zero (`percpu_ref_init`).
    ///
    /// `release` may run on any thread that puts, or on the RCU worker; it must
    /// not block for long and must not wait for a mode switch of this ref.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// assert!(!r.is_zero());
    /// let dead = PercpuRef::new(|| {}, InitFlags::DEAD);
    /// assert!(dead.is_zero() && dead.is_dying());
    /// ```
    #[must_use]
    pub fn new<F>(release: F, flags: InitFlags) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        let dead = flags.contains(InitFlags::DEAD);
        let atomic = dead || flags.contains(InitFlags::ATOMIC);
        let mut mode = 0;
        let mut count: isize = 0;
        if atomic {
            mode |= ATOMIC_BIT;
        } else {
            count = PERCPU_COUNT_BIAS;
        }
        if dead {
            mode |= DEAD_BIT;
        } else {
            count = count.wrapping_add(1);
        }
        let slots = slot::new_slots();
        Self {
            data: Arc::new(RefData {
                mode: AtomicUsize::new(mode),
                count: AtomicIsize::new(count),
                slots,
                release: Box::new(release),
                switch: Mutex::new(SwitchState {
                    force_atomic: flags.contains(InitFlags::ATOMIC),
                    allow_reinit: atomic || flags.contains(InitFlags::ALLOW_REINIT),
                    switching: false,
                    chained: Vec::new(),
                }),
                switched: Condvar::new(),
            }),
        }
    }

    /// Takes a reference (`percpu_ref_get`).
    ///
    /// Valid on a ref that is live or dying; the caller must hold a reference
    /// or otherwise know the count cannot reach zero concurrently.
    ///
    /// # Ordering
    ///
    /// **Unordered** for the caller's data. The reference the caller already
    /// holds is what orders its accesses (as for `Arc::clone`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get();
    /// r.put();
    /// ```
    #[inline]
    pub fn get(&self) {
        self.data.get_many(1);
    }

    /// Takes `nr` references (`percpu_ref_get_many`); see [`get`](Self::get).
    /// `nr == 0` takes nothing.
    ///
    /// # Ordering
    ///
    /// **Unordered** for the caller's data.
    ///
    /// # Panics
    ///
    /// If `nr > isize::MAX`, before changing anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get_many(3);
    /// r.put_many(3);
    /// ```
    #[inline]
    #[track_caller]
    pub fn get_many(&self, nr: usize) {
        self.data.get_many(nr);
    }

    /// Takes a reference unless the count is zero (`percpu_ref_tryget`).
    ///
    /// Succeeds while dying: "not freed yet" is all it checks. Use
    /// [`tryget_live`](Self::tryget_live) to refuse new users once killed.
    ///
    /// # Ordering
    ///
    /// **No ordering promised for the caller's data** on success (upstream
    /// parity; see the module docs for when to add `fence(Acquire)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// assert!(r.tryget());
    /// r.put();
    /// ```
    #[inline]
    #[must_use = "a successful tryget takes a reference that must be put"]
    pub fn tryget(&self) -> bool {
        self.data.tryget_many(1, false)
    }

    /// Takes `nr` references unless the count is zero
    /// (`percpu_ref_tryget_many`); see [`tryget`](Self::tryget). With
    /// `nr == 0` it takes nothing and says whether the count is non-zero.
    ///
    /// # Ordering
    ///
    /// **No ordering promised for the caller's data** on success.
    ///
    /// # Panics
    ///
    /// If `nr > isize::MAX`, before changing anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(r.tryget_many(2));
    /// r.put_many(2);
    /// ```
    #[inline]
    #[must_use = "a successful tryget takes references that must be put"]
    #[track_caller]
    pub fn tryget_many(&self, nr: usize) -> bool {
        self.data.tryget_many(nr, false)
    }

    /// Takes a reference unless the ref is dead or zero
    /// (`percpu_ref_tryget_live`).
    ///
    /// After [`kill`](Self::kill) *returns* this may still succeed on threads
    /// that have not yet seen the kill; once the confirm callback of
    /// [`kill_and_confirm`](Self::kill_and_confirm) has run, it fails on
    /// every thread (for calls ordered after the confirm).
    ///
    /// # Ordering
    ///
    /// **No ordering promised for the caller's data** on success (upstream
    /// parity). If the count is the object's "initialised" flag, follow
    /// success with `std::sync::atomic::fence(Acquire)`, which pairs with the
    /// `Release` in [`resurrect`](Self::resurrect)/[`reinit`](Self::reinit);
    /// see `examples/swap_device.rs`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(r.tryget_live());
    /// r.put();
    /// r.kill();
    /// assert!(!PercpuRef::new(|| {}, InitFlags::DEAD).tryget_live());
    /// ```
    #[inline]
    #[must_use = "a successful tryget_live takes a reference that must be put"]
    pub fn tryget_live(&self) -> bool {
        self.data.tryget_many(1, true)
    }

    /// Drops a reference (`percpu_ref_put`); the put that takes the count to
    /// zero runs `release`, after returning from its RCU read-side section.
    ///
    /// # Ordering
    ///
    /// **Release** for the caller's accesses: they happen-before `release`
    /// (through the slot section's `Release` end and the switch's sum for a
    /// per-CPU put, through the `Release` decrement and the final
    /// `fence(Acquire)` for an atomic one).
    ///
    /// # Panics
    ///
    /// With `release`'s panic, if this put drops the last reference and
    /// `release` panics (the count is zero by then).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get();
    /// r.put();
    /// ```
    #[inline]
    pub fn put(&self) {
        self.data.put_many(1);
    }

    /// Drops `nr` references (`percpu_ref_put_many`); see [`put`](Self::put).
    ///
    /// `nr == 0` drops nothing and never runs `release` (upstream's
    /// `atomic_long_sub_and_test(0, …)` on a zero count would run it again).
    ///
    /// # Ordering
    ///
    /// **Release** for the caller's accesses.
    ///
    /// # Panics
    ///
    /// If `nr > isize::MAX`, before changing anything; with `release`'s
    /// panic, as [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// r.get_many(4);
    /// r.put_many(4);
    /// ```
    #[inline]
    #[track_caller]
    pub fn put_many(&self, nr: usize) {
        self.data.put_many(nr);
    }

    /// Kills the ref: `tryget_live` starts failing, the count becomes exact
    /// after a grace period, and the initial reference is dropped
    /// (`percpu_ref_kill`).
    ///
    /// Call it exactly once per life. `release` runs when the last user puts,
    /// which may be inside this call. There is no implied grace period
    /// between kill and release.
    ///
    /// May be called anywhere, including inside an RCU callback (a `release`
    /// or `confirm` of another ref, a `call_rcu` closure) and inside an RCU
    /// read-side section.
    ///
    /// # Blocking
    ///
    /// Never waits: the switch to atomic completes after a grace period, on
    /// the RCU worker; if one is already in flight (after
    /// `switch_to_atomic`), the kill joins it. Takes the ref's switch mutex
    /// briefly.
    ///
    /// # Panics
    ///
    /// If the ref is already dead (killed twice, or created with
    /// `InitFlags::DEAD` and never revived), before any change. With
    /// `release`'s panic if it runs inside this call, after the kill is
    /// complete.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.kill();
    /// assert!(r.is_dying());
    /// ```
    #[track_caller]
    pub fn kill(&self) {
        RefData::kill(&self.data, None);
    }

    /// [`kill`](Self::kill), then `confirm` once every thread sees the ref
    /// dead (`percpu_ref_kill_and_confirm`).
    ///
    /// `confirm` runs on the RCU worker after the grace period, or inside this
    /// call if the ref was already atomic with no switch in flight. It runs
    /// before `release`. After it has run, every `tryget_live` ordered after
    /// it fails. If a switch to atomic was in flight, `confirm` runs right
    /// after that switch's own confirm, on the RCU worker.
    ///
    /// # Blocking
    ///
    /// As [`kill`](Self::kill).
    ///
    /// # Panics
    ///
    /// As [`kill`](Self::kill); and with `confirm`'s panic when it runs
    /// inside this call, after the kill is complete (the initial reference
    /// dropped, `release` run if it was the last).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{Completion, InitFlags, PercpuRef};
    /// use std::sync::Arc;
    ///
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.get(); // a user still holds it
    /// let confirmed = Arc::new(Completion::new());
    /// let c = Arc::clone(&confirmed);
    /// r.kill_and_confirm(move || c.complete_all());
    /// confirmed.wait();
    /// assert!(!r.tryget_live(), "dead on every thread after confirm");
    /// r.put();
    /// ```
    #[track_caller]
    pub fn kill_and_confirm<F>(&self, confirm: F)
    where
        F: FnOnce() + Send + 'static,
    {
        RefData::kill(&self.data, Some(Box::new(confirm)));
    }

    /// Switches to atomic mode and keeps the ref there until
    /// [`switch_to_percpu`](Self::switch_to_percpu)
    /// (`percpu_ref_switch_to_atomic`); `confirm` runs once every thread
    /// uses the atomic counter.
    ///
    /// The setting survives kill and reinit. `confirm` runs on the RCU worker
    /// after the grace period; inside this call if the ref is already atomic
    /// with no switch in flight; after the in-flight switch's confirms if
    /// there is one. Like [`kill`](Self::kill), it may be called inside an
    /// RCU callback or read-side section.
    ///
    /// # Blocking
    ///
    /// Never waits (the switch mutex is taken briefly).
    ///
    /// # Panics
    ///
    /// With `confirm`'s panic when it runs inside this call (the switch is
    /// complete by then).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// r.switch_to_atomic(move || tx.send(()).unwrap()); // already atomic: confirms at once
    /// rx.recv().unwrap();
    /// ```
    pub fn switch_to_atomic<F>(&self, confirm: F)
    where
        F: FnOnce() + Send + 'static,
    {
        RefData::switch_to_atomic(&self.data, Some(Box::new(confirm)));
    }

    /// [`switch_to_atomic`](Self::switch_to_atomic) and wait until the switch
    /// is confirmed (`percpu_ref_switch_to_atomic_sync`). The caller must make
    /// sure nobody switches back to per-CPU mode meanwhile.
    ///
    /// # Blocking
    ///
    /// Waits for a grace period and the RCU worker (unless the ref is already
    /// atomic with no switch in flight).
    ///
    /// # Panics
    ///
    /// Inside an RCU read-side section (the grace period would wait for the
    /// caller) and inside an RCU callback (the switch completes in a callback
    /// the worker cannot reach while it runs the caller), whatever the ref's
    /// state, before any change. Use [`switch_to_atomic`](Self::switch_to_atomic)
    /// with a confirm callback there.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// r.switch_to_atomic_sync();
    /// r.switch_to_percpu();
    /// ```
    #[track_caller]
    pub fn switch_to_atomic_sync(&self) {
        const CALLER: &str = "PercpuRef::switch_to_atomic_sync";
        // Refused before any change, whatever the ref's state: this form
        // exists to wait for a grace period and the RCU worker.
        if shrinker_rcu::in_callback() {
            panic_waiting_in_callback(CALLER);
        }
        if shrinker_rcu::in_read_section() {
            panic_waiting_in_read_section(CALLER);
        }
        RefData::switch_to_atomic(&self.data, None);
        let st = self.data.lock();
        drop(
            self.data
                .wait_switched(st, "PercpuRef::switch_to_atomic_sync"),
        );
    }

    /// Lets the ref return to per-CPU mode (`percpu_ref_switch_to_percpu`).
    ///
    /// Switches at once when the ref is live and atomic; on a dying ref the
    /// switch happens at the next `reinit`/`resurrect`. Needs
    /// `InitFlags::ALLOW_REINIT` (implied by `ATOMIC` and `DEAD`) once the
    /// ref has left per-CPU mode; without it the ref stays atomic and the
    /// fact is reported once.
    ///
    /// # Blocking
    ///
    /// Waits for a switch to atomic in flight, if any: until its grace period
    /// ends and the RCU worker runs it.
    ///
    /// # Panics
    ///
    /// If a switch to atomic is in flight and the caller is inside an RCU
    /// read-side section or an RCU callback, where waiting for it would
    /// deadlock; before any change.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// r.switch_to_percpu();
    /// r.get();
    /// r.put();
    /// ```
    #[track_caller]
    pub fn switch_to_percpu(&self) {
        let d = &self.data;
        let mut st = d.may_wait(d.lock(), "PercpuRef::switch_to_percpu");
        st.force_atomic = false;
        let (st, pending) = RefData::switch_mode(d, st, None, "PercpuRef::switch_to_percpu");
        drop(st);
        pending.run();
    }

    /// Revives a killed ref: clears dead, takes a new initial reference and
    /// returns to per-CPU mode if allowed (`percpu_ref_resurrect`).
    ///
    /// The ref may be dying (users still hold references) or zero. If
    /// `release` frees what the ref protects, the caller must make sure it
    /// does not run while this call is in progress. `tryget`/`tryget_live`
    /// may run concurrently.
    ///
    /// # Ordering
    ///
    /// **Release**: everything written before this call is visible to a
    /// thread whose `tryget_live` succeeds on the revived ref and that then
    /// executes `fence(Acquire)`.
    ///
    /// # Blocking
    ///
    /// Waits for the kill's switch to atomic, if still in flight: until its
    /// grace period ends and the RCU worker runs it.
    ///
    /// # Panics
    ///
    /// If the ref is not dead ("resurrect of a live ref"); if a switch to
    /// atomic is in flight and the caller is inside an RCU read-side section
    /// or an RCU callback, where waiting for it would deadlock. Both before
    /// any change.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::DEAD);
    /// r.resurrect();
    /// assert!(r.tryget_live());
    /// r.put();
    /// ```
    #[track_caller]
    pub fn resurrect(&self) {
        let d = &self.data;
        let st = d.lock();
        if !d.mode().is_dead() {
            drop(st);
            panic!("PercpuRef::resurrect on a live ref: only a killed ref can be resurrected");
        }
        RefData::resurrect_locked(d, st, "PercpuRef::resurrect");
    }

    /// Revives a ref whose count reached zero (`percpu_ref_reinit`): as
    /// [`resurrect`](Self::resurrect), but requires the count to be zero.
    ///
    /// # Ordering
    ///
    /// **Release**, as [`resurrect`](Self::resurrect).
    ///
    /// # Blocking
    ///
    /// Never waits in practice: a zero count means the last switch to atomic
    /// has completed (the switch holds a reference until it ends). So it may
    /// be called inside an RCU callback, a `release` run by the RCU worker
    /// included.
    ///
    /// # Panics
    ///
    /// If the count is not zero ("reinit of a non-zero ref"), before any
    /// change.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::ATOMIC);
    /// r.kill(); // the last reference: count reaches zero, release runs
    /// assert!(r.is_zero());
    /// r.reinit();
    /// assert!(!r.is_zero() && !r.is_dying());
    /// ```
    #[track_caller]
    pub fn reinit(&self) {
        let d = &self.data;
        let st = d.lock();
        if !d.is_zero() {
            drop(st);
            panic!("PercpuRef::reinit of a non-zero ref: wait for release, or use resurrect");
        }
        RefData::resurrect_locked(d, st, "PercpuRef::reinit");
    }

    /// Whether the count is zero (`percpu_ref_is_zero`). Always `false` in
    /// per-CPU mode and while a switch to atomic is in flight.
    ///
    /// # Ordering
    ///
    /// **Acquire** when it returns `true`: every user's accesses before its
    /// final put happen-before the caller's next step.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(!r.is_zero());
    /// ```
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.data.is_zero()
    }

    /// Whether the ref has been killed and not revived
    /// (`percpu_ref_is_dying`). A snapshot: the caller must synchronise
    /// against concurrent state changes.
    ///
    /// # Ordering
    ///
    /// **Unordered** (`Relaxed`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker_sync::{InitFlags, PercpuRef};
    /// let r = PercpuRef::new(|| {}, InitFlags::NONE);
    /// assert!(!r.is_dying());
    /// r.kill();
    /// assert!(r.is_dying());
    /// ```
    #[must_use]
    pub fn is_dying(&self) -> bool {
        // Relaxed: a snapshot, as upstream.
        Mode(self.data.mode.load(Ordering::Relaxed)).is_dead()
    }
}

impl fmt::Debug for PercpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PercpuRef")
            .field("mode", &self.data.mode())
            .field("is_zero", &self.data.is_zero())
            .finish_non_exhaustive()
    }
}
