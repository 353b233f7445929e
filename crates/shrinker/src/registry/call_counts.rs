//! `count` calls, counted per thread: the one statistic a walk bumps on
//! every visit, kept off every line another walker reads.
//!
//! # Why
//!
//! A shrinker's `count_calls` used to be a word in its object's hot line.
//! Every visit stored to it, so two threads walking the same registry
//! bounced that line between their cores once per shrinker: the only write
//! a visit made to memory another walker reads (the deferred count is
//! swapped only when non-zero, a light pin is a store to the walker's own
//! slot). On this machine it cost the 2-thread global walk about 2 ns of
//! its 10 per shrinker.
//!
//! # The design
//!
//! Each shrinker object takes a *counter slot* (a small integer, reused
//! after the object is freed). Each thread that calls shrinkers owns a
//! table of counters indexed by slot. A visit bumps its own thread's
//! counter with a Relaxed load and store: no read-modify-write, no line any
//! other thread writes. Reading the statistic sums, under one mutex, the
//! counters of every live thread plus what exited threads left behind.
//!
//! | who | does | under the mutex |
//! |---|---|---|
//! | a visit ([`bump`]) | `t[slot] += 1` on its own table (load + store) | no |
//! | a thread's first visit to a slot past its table ([`bump`], cold) | grows its table (copy, publish, free the old one) | yes |
//! | a read ([`read`]) | `left[slot] + Σ t[slot]` over live threads | yes |
//! | a thread's exit | adds its table into `left`, drops it | yes |
//! | freeing an object ([`release`]) | zeroes `left[slot]` and every `t[slot]`, frees the slot | yes |
//!
//! # Why the counts are exact
//!
//! * Each counter has one writer at a time: its thread, or a holder of the
//!   mutex zeroing a slot whose object is gone. A thread bumps a slot only
//!   while it holds a pin on the object that owns the slot. The object is
//!   freed (and [`release`] runs) only after unregistering waited for every
//!   pin, and a pin's release happens-before that wait returns (registry/pin.rs
//!   and `LiveRef`). So the last bump of the old object happens-before
//!   the zeroing store, which is thus last in the counter's modification
//!   order.
//! * The slot is handed out again under the same mutex, to an object that
//!   is then built and registered (Release), and a walker bumps it only
//!   after pinning that object (Acquire). So the zeroing store
//!   happens-before the walker's next load of its counter, which therefore
//!   reads 0 or its own later stores: no count of the old object leaks
//!   into the new one, and none of the new object's is lost.
//! * A table is replaced only by its own thread, under the mutex, and
//!   everyone else reads or zeroes tables only under the mutex; so the old
//!   table is freed at once (nobody can hold it), and the owner reads its
//!   table pointer without the mutex (nobody else writes it).
//! * A read is a sum of Relaxed loads under the mutex: exact for every bump
//!   that happened-before it, as a single shared counter would be.
//!
//! The loom model `count_calls_stay_exact_across_unregister_and_slot_reuse`
//! (tests/loom_lifecycle.rs) checks the second point.
//!
//! A thread whose tables are already gone (a walk run from another
//! thread-local's destructor) adds into `left` under the mutex instead.

use std::cell::Cell;
use std::ptr;

use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// One thread's counters, indexed by slot.
struct Table {
    counts: Box<[AtomicU64]>,
}

impl Table {
    fn new(len: usize) -> Box<Table> {
        Box::new(Table {
            counts: (0..len).map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

/// A live thread's entry: the table it currently uses. Replaced (by the
/// owner) and read (by others) only under the mutex.
struct ThreadEntry {
    id: u64,
    table: *mut Table,
}

// SAFETY: `table` is owned by the entry (a leaked box), accessed by other
// threads only under the mutex that guards the entry.
unsafe impl Send for ThreadEntry {}

#[derive(Default)]
struct State {
    threads: Vec<ThreadEntry>,
    /// Counts left by exited threads, indexed by slot.
    left: Vec<u64>,
    /// Slots free for reuse; `next` is the first never handed out.
    free: Vec<u32>,
    next: u32,
    next_thread: u64,
}

impl Drop for State {
    fn drop(&mut self) {
        for e in self.threads.drain(..) {
            // SAFETY: a listed entry owns its leaked table; the state is
            // going away, so nobody else can reach it.
            drop(unsafe { Box::from_raw(e.table) });
        }
    }
}

#[cfg(not(loom))]
static STATE: Mutex<State> = Mutex::new(State {
    threads: Vec::new(),
    left: Vec::new(),
    free: Vec::new(),
    next: 0,
    next_thread: 0,
});

#[cfg(loom)]
loom::lazy_static! {
    static ref STATE: Mutex<State> = Mutex::new(State::default());
}

fn state() -> crate::sync::MutexGuard<'static, State> {
    lock(&STATE)
}

/// The calling thread's table, for the fast path: a pointer to its
/// counters and their number (null and 0 until its first bump, and again
/// once its exit has folded the table).
#[derive(Clone, Copy)]
struct Fast {
    counts: *const AtomicU64,
    len: usize,
}

impl Fast {
    const NONE: Fast = Fast {
        counts: ptr::null(),
        len: 0,
    };
}

/// Registers the thread's entry on its first grow and folds it at exit.
struct Owner {
    id: Cell<Option<u64>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Under loom a thread-local destructor may not take a loom lock
        // (loom runs it outside the model's thread); the thread's entry
        // stays listed instead, so reads still count it, and the model
        // folds explicitly (`exit_thread`).
        #[cfg(not(loom))]
        self.fold();
    }
}

impl Owner {
    /// The thread's exit: add its counts into what exited threads leave
    /// and drop its table.
    fn fold(&self) {
        let Some(id) = self.id.take() else { return };
        let _ = FAST.try_with(|f| f.set(Fast::NONE));
        let mut st = state();
        let Some(i) = st.threads.iter().position(|e| e.id == id) else {
            return;
        };
        let entry = st.threads.swap_remove(i);
        // SAFETY: the entry owned this leaked box; it is out of the list,
        // and its thread (us) will not use it again (`FAST` cleared).
        let table = unsafe { Box::from_raw(entry.table) };
        if st.left.len() < table.counts.len() {
            let n = table.counts.len();
            st.left.resize(n, 0);
        }
        for (l, c) in st.left.iter_mut().zip(table.counts.iter()) {
            // Relaxed: we are the table's only bumper, and the zeroing
            // stores it could race with are made under the mutex we hold.
            *l = l.saturating_add(c.load(Ordering::Relaxed));
        }
    }
}

#[cfg(not(loom))]
thread_local! {
    static FAST: Cell<Fast> = const { Cell::new(Fast::NONE) };
    static OWNER: Owner = const { Owner { id: Cell::new(None) } };
}

#[cfg(loom)]
loom::thread_local! {
    static FAST: Cell<Fast> = Cell::new(Fast::NONE);
    static OWNER: Owner = Owner { id: Cell::new(None) };
}

/// Fold the calling thread's counters now, as its exit would (for the loom
/// model: loom runs no thread-local destructor that takes a loom lock).
#[cfg(loom)]
pub(crate) fn exit_thread() {
    OWNER.with(Owner::fold);
}

/// A counter slot for a new shrinker object.
pub(crate) fn alloc() -> u32 {
    let mut st = state();
    if let Some(s) = st.free.pop() {
        return s;
    }
    let s = st.next;
    st.next = s
        .checked_add(1)
        .expect("more than u32::MAX shrinker objects alive");
    s
}

/// Give `slot` back: its object is freed, so no thread can bump it any
/// more (module doc). Zeroes every count of it first.
pub(crate) fn release(slot: u32) {
    let mut st = state();
    let i = slot as usize;
    for e in &st.threads {
        // SAFETY: a listed entry's table is live while we hold the mutex.
        let t = unsafe { &*e.table };
        if let Some(c) = t.counts.get(i) {
            // Relaxed: ordered after the slot's last bump by the pins'
            // release and before its next use by the mutex (module doc).
            c.store(0, Ordering::Relaxed);
        }
    }
    if let Some(l) = st.left.get_mut(i) {
        *l = 0;
    }
    st.free.push(slot);
}

/// Count one call on `slot` for the calling thread.
#[inline]
pub(crate) fn bump(slot: u32) {
    let i = slot as usize;
    // `Cell::get` of a const thread-local: no lazy initialisation, no
    // closure state; a torn-down `FAST` reads as an empty table.
    let Fast { counts, len } = FAST.try_with(Cell::get).unwrap_or(Fast::NONE);
    if i < len {
        // SAFETY: `counts` points to this thread's live table of `len`
        // counters: only this thread replaces or frees it (`grow`,
        // `Owner::drop`, which clears `FAST` first).
        let c = unsafe { &*counts.add(i) };
        // Relaxed load + store, not `fetch_add`: this thread is the
        // counter's only writer while it may bump (module doc).
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    } else {
        bump_slow(i);
    }
}

/// First bump of a slot past the thread's table: grow it (registering the
/// thread on its first call), or, with the thread's tables gone, count in
/// `left`.
#[cold]
#[inline(never)]
fn bump_slow(i: usize) {
    let grown = OWNER.try_with(|owner| {
        let mut st = state();
        let listed = owner
            .id
            .get()
            .and_then(|id| st.threads.iter().position(|e| e.id == id));
        // SAFETY: our own entry's table: only we replace or free it, and
        // the others who read it hold the mutex, which we hold.
        let old = listed.map(|k| unsafe { Box::from_raw(st.threads[k].table) });
        let old_len = old.as_ref().map_or(0, |t| t.counts.len());
        let new = Table::new((i + 1).max(old_len * 2).max(64));
        if let Some(old) = &old {
            for (n, o) in new.counts.iter().zip(old.counts.iter()) {
                // Relaxed: the other writers (zeroing) hold the mutex we hold.
                n.store(o.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        drop(old);
        let c = &new.counts[i];
        // Relaxed: a fresh table nobody else can reach before we unlock.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let fast = Fast {
            counts: new.counts.as_ptr(),
            len: new.counts.len(),
        };
        let table = Box::into_raw(new);
        match listed {
            Some(k) => st.threads[k].table = table,
            None => {
                let id = st.next_thread;
                st.next_thread += 1;
                st.threads.push(ThreadEntry { id, table });
                owner.id.set(Some(id));
            }
        }
        drop(st);
        let _ = FAST.try_with(|f| f.set(fast));
    });
    if grown.is_err() {
        let mut st = state();
        if st.left.len() <= i {
            st.left.resize(i + 1, 0);
        }
        st.left[i] = st.left[i].saturating_add(1);
    }
}

/// The calls counted on `slot`: exact for every bump that happened-before
/// this read.
pub(crate) fn read(slot: u32) -> u64 {
    let st = state();
    let i = slot as usize;
    let mut sum = st.left.get(i).copied().unwrap_or(0);
    for e in &st.threads {
        // SAFETY: a listed entry's table is live while we hold the mutex.
        let t = unsafe { &*e.table };
        if let Some(c) = t.counts.get(i) {
            // Relaxed: a bump that happened-before this read is ordered
            // before it by that happens-before edge; the owner's store it
            // may race with is a statistic's snapshot (module doc).
            sum = sum.saturating_add(c.load(Ordering::Relaxed));
        }
    }
    sum
}
