//! An address space with per-range read locks: the Linux page
//! fault's `lock_vma_under_rcu`, in userspace.
//!
//! An [`AddressSpace`] is a map of address ranges (the kernel's VMAs) under
//! one big lock, a [`RefLockDomain`] (the `mm_struct` and its `mmap_lock`).
//! Faults (lookups) are frequent and read-only; `map`, `unmap` and `protect`
//! are rarer and change the map.
//!
//! * **The index.** Beside the map kept under the big lock, writers publish a
//!   sorted snapshot of `(start, end, slot, key)` entries through an
//!   [`RcuPtr`]; readers search it under an RCU read-side section, without
//!   the big lock. The snapshot may be stale: a range it names may since have
//!   been unmapped, recycled into another address space, or changed.
//! * **The fast path** ([`AddressSpace::lock_range_under_rcu`]): search the
//!   snapshot, then [`RefLock::try_read`] the range, which checks after taking
//!   its reference that the range is still attached to *this* address space
//!   under the same key and not write-locked; then check the address against
//!   the range's bounds, as the kernel does. A detached range means the
//!   snapshot is stale: look again (`VMA_LOCK_MISS`). Any other failure falls
//!   back.
//! * **The fallback** ([`AddressSpace::lock_range_locked`]): take the big
//!   lock for reading, find the range in the map, [`RefLock::read_locked`],
//!   drop the big lock and keep the range locked.
//! * **Writers** take the big lock for writing, write-lock every range they
//!   change ([`RefLock::start_write`], which waits out the readers inside
//!   it), and let the end of the write cycle unlock them all at once.
//! * **Type-stable memory.** Ranges live in a [`RangeCache`] shared by all
//!   address spaces (the kernel's `SLAB_TYPESAFE_BY_RCU` VMA cache): an
//!   unmapped range goes back to a free list and may be mapped again, in the
//!   same or another address space, while a reader still holds a stale
//!   snapshot naming it. The reader's identity check catches that.
//!
//! Run it: `cargo run --release -p shrinker-sync --example address_space`.
//! It runs fault-like readers against mapping writers for a few seconds and
//! checks that every range a reader locked was attached, consistent and the
//! one it asked for; `tests/torture_reflock.rs` runs the same code, shorter,
//! and `shrinker-bench`'s `reflock` scenario measures it.

use shrinker_rcu::{read_lock, RcuPtr};
use shrinker_sync::{ReadLock, RefLock, RefLockDomain, TryReadError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The value every field of an unmapped range holds.
pub const POISON: u64 = 0xdead_dead_dead_dead;

/// How often the fast path looks again after finding a detached range.
const RETRIES: usize = 4;

/// One mapped range (`struct vm_area_struct`). Lives in a [`RangeCache`]
/// slot for as long as the cache, through any number of mappings.
///
/// Every field is an atomic accessed `Relaxed`: the [`RefLock`] protocol is
/// what orders them (writers store them only while the range is write-locked
/// or detached; readers load them only under a [`ReadLock`]).
#[derive(Debug)]
pub struct Range {
    lock: RefLock,
    start: AtomicU64,
    end: AtomicU64,
    prot: AtomicU32,
    /// The address space the range belongs to (`vm_mm`), as its id.
    asid: AtomicU64,
    /// The mapping's identity: unique per `map` in its address space.
    key: AtomicU64,
    /// A checksum of the fields above: a reader that sees a mix of two
    /// writes sees a mismatch.
    check: AtomicU64,
}

fn checksum(start: u64, end: u64, prot: u32, asid: u64, key: u64) -> u64 {
    start
        ^ end.rotate_left(13)
        ^ u64::from(prot).rotate_left(29)
        ^ asid.rotate_left(41)
        ^ key.rotate_left(53)
        ^ 0x9e37_79b9_7f4a_7c15
}

impl Range {
    fn new() -> Self {
        Range {
            lock: RefLock::new(),
            start: AtomicU64::new(POISON),
            end: AtomicU64::new(POISON),
            prot: AtomicU32::new(0),
            asid: AtomicU64::new(POISON),
            key: AtomicU64::new(POISON),
            check: AtomicU64::new(POISON),
        }
    }

    /// Writes every field; the caller holds the range write-locked or
    /// detached.
    fn set(&self, start: u64, end: u64, prot: u32, asid: u64, key: u64) {
        // Relaxed (all): ordered by the RefLock protocol; see the type docs.
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.prot.store(prot, Ordering::Relaxed);
        self.asid.store(asid, Ordering::Relaxed);
        self.key.store(key, Ordering::Relaxed);
        self.check
            .store(checksum(start, end, prot, asid, key), Ordering::Relaxed);
    }

    fn poison(&self) {
        self.set(POISON, POISON, 0, POISON, POISON);
        // Relaxed: as in set().
        self.check.store(POISON, Ordering::Relaxed);
    }
}

/// The shared, type-stable store of ranges (`vm_area_cachep`): a fixed
/// number of slots that are never freed while the cache lives, and a free
/// list.
#[derive(Debug)]
pub struct RangeCache {
    slots: Box<[Range]>,
    free: Mutex<Vec<u32>>,
}

impl RangeCache {
    /// A cache of `capacity` ranges.
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(RangeCache {
            slots: (0..capacity).map(|_| Range::new()).collect(),
            free: Mutex::new((0..capacity).rev().collect()),
        })
    }

    fn alloc(&self) -> Option<u32> {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn release(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(slot);
    }

    fn get(&self, slot: u32) -> &Range {
        &self.slots[slot as usize]
    }
}

/// One entry of the map and of the RCU-published index.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    end: u64,
    slot: u32,
    key: u64,
}

/// What the big lock protects: the authoritative map (`mm->mm_mt`).
#[derive(Debug, Default)]
pub struct Map {
    ranges: BTreeMap<u64, Entry>,
    next_key: u64,
}

impl Map {
    /// The entry containing `addr`.
    fn find(&self, addr: u64) -> Option<Entry> {
        let (_, e) = self.ranges.range(..=addr).next_back()?;
        (addr < e.end).then_some(*e)
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.ranges
            .range(..end)
            .next_back()
            .is_some_and(|(_, e)| e.end > start)
    }
}

/// Why [`AddressSpace::map`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range is empty or overlaps a mapped one.
    Overlap,
    /// The range cache has no free slot.
    NoMemory,
}

/// How a lookup got its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Under RCU, without the big lock.
    Fast,
    /// Under the big read lock.
    Fallback,
}

/// A range read-locked by a lookup: its fields cannot change, and it cannot
/// be unmapped, until this is dropped.
#[derive(Debug)]
pub struct RangeGuard<'a> {
    range: &'a Range,
    _lock: ReadLock<'a>,
    /// How the lookup got it.
    pub path: Path,
}

impl std::ops::Deref for RangeGuard<'_> {
    type Target = Range;
    fn deref(&self) -> &Range {
        self.range
    }
}

impl Range {
    // Relaxed (all accessors): called with the range read-locked, or under
    // the big lock, where its fields cannot change.

    /// First address.
    pub fn start(&self) -> u64 {
        self.start.load(Ordering::Relaxed)
    }
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Relaxed)
    }
    /// Protection bits.
    pub fn prot(&self) -> u32 {
        self.prot.load(Ordering::Relaxed)
    }
    /// The owning address space's id.
    pub fn asid(&self) -> u64 {
        self.asid.load(Ordering::Relaxed)
    }
    /// The mapping's identity.
    pub fn key(&self) -> u64 {
        self.key.load(Ordering::Relaxed)
    }
    /// Whether the fields are those of one write (the checksum matches).
    pub fn is_consistent(&self) -> bool {
        self.check.load(Ordering::Relaxed)
            == checksum(
                self.start(),
                self.end(),
                self.prot(),
                self.asid(),
                self.key(),
            )
    }
}

static NEXT_ASID: AtomicU64 = AtomicU64::new(1);

/// An address space (`struct mm_struct`): ranges under a big lock, an
/// RCU-readable index, ranges from a shared [`RangeCache`].
pub struct AddressSpace {
    id: u64,
    cache: Arc<RangeCache>,
    mm: RefLockDomain<Map>,
    index: RcuPtr<Vec<Entry>>,
}

impl AddressSpace {
    /// An empty address space drawing ranges from `cache`.
    pub fn new(cache: &Arc<RangeCache>) -> Self {
        AddressSpace {
            // Relaxed: a unique number, nothing published through it.
            id: NEXT_ASID.fetch_add(1, Ordering::Relaxed),
            cache: Arc::clone(cache),
            mm: RefLockDomain::new(Map::default()),
            index: RcuPtr::new(Vec::new()),
        }
    }

    /// This address space's id (what [`Range::asid`] reports).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The page fault's lookup: the fast path, else the big lock.
    #[inline]
    pub fn lock_range(&self, addr: u64) -> Option<RangeGuard<'_>> {
        self.lock_range_under_rcu(addr)
            .or_else(|| self.lock_range_locked(addr))
    }

    /// The fast path (`lock_vma_under_rcu`): `None` means "not found or not
    /// lockable now; ask the big lock".
    #[inline]
    pub fn lock_range_under_rcu(&self, addr: u64) -> Option<RangeGuard<'_>> {
        let rcu = read_lock();
        for _ in 0..RETRIES {
            let snapshot = self.index.load(&rcu)?;
            // The last entry starting at or below `addr`.
            let i = snapshot
                .partition_point(|e| e.start <= addr)
                .checked_sub(1)?;
            let e = snapshot[i];
            if addr >= e.end {
                return None;
            }
            // The slot outlives the RCU section: the cache never frees it.
            let range = self.cache.get(e.slot);
            match range.lock.try_read(&self.mm, e.key) {
                Ok(lock) => {
                    let guard = RangeGuard {
                        range,
                        _lock: lock,
                        path: Path::Fast,
                    };
                    // Locked, attached here under the key: now the bounds
                    // are stable; check them as the kernel does.
                    return (guard.start() <= addr && addr < guard.end()).then_some(guard);
                }
                // Unmapped since the snapshot: a newer one may have its
                // replacement (VMA_LOCK_MISS).
                Err(TryReadError::Detached) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// The fallback: find and read-lock the range under the big read lock,
    /// which is released before returning.
    pub fn lock_range_locked(&self, addr: u64) -> Option<RangeGuard<'_>> {
        let map = self.mm.read();
        let e = map.find(addr)?;
        let range = self.cache.get(e.slot);
        let lock = range.lock.read_locked(&map, e.key).ok()?;
        Some(RangeGuard {
            range,
            _lock: lock,
            path: Path::Fallback,
        })
    }

    /// The design the per-range locks replaced: hold the big lock for
    /// reading for the whole lookup, and run `f` on the range under it.
    pub fn with_range_big_lock<R>(&self, addr: u64, f: impl FnOnce(&Range) -> R) -> Option<R> {
        let map = self.mm.read();
        let e = map.find(addr)?;
        Some(f(self.cache.get(e.slot)))
    }

    /// A write cycle that changes no range: takes the big lock for writing,
    /// runs `work` under it, and releases it. It stands for `mmap_lock` held
    /// for something no lookup is after (an unrelated `munmap`'s page-table
    /// teardown, say): lookups through the big lock wait for it, the fast
    /// path does not (no range is write-locked). The writer of
    /// `shrinker-bench`'s `reflock` scenario is made of these.
    pub fn with_write_lock<R>(&self, work: impl FnOnce() -> R) -> R {
        let _map = self.mm.write();
        work()
    }

    /// Maps `[start, end)` with `prot`; returns the mapping's key.
    pub fn map(&self, start: u64, end: u64, prot: u32) -> Result<u64, MapError> {
        let mut map = self.mm.write();
        if start >= end || map.overlaps(start, end) {
            return Err(MapError::Overlap);
        }
        let slot = self.cache.alloc().ok_or(MapError::NoMemory)?;
        let key = map.next_key;
        map.next_key += 1;
        let range = self.cache.get(slot);
        // Attached and write-locked until the write cycle ends: readers that
        // find it early fail and fall back.
        range.lock.attach(&map, key);
        range.set(start, end, prot, self.id, key);
        map.ranges.insert(
            start,
            Entry {
                start,
                end,
                slot,
                key,
            },
        );
        self.publish(&map);
        Ok(key)
    }

    /// Unmaps the range starting at `start`; `false` if there is none.
    pub fn unmap(&self, start: u64) -> bool {
        let mut map = self.mm.write();
        let Some(e) = map.ranges.remove(&start) else {
            return false;
        };
        let range = self.cache.get(e.slot);
        range.lock.start_write(&map); // waits out the readers inside it
        self.publish(&map); // out of the index (mas_store_gfp(NULL))
        range.lock.detach(&map); // waits out transient readers
        range.poison();
        self.cache.release(e.slot); // may be mapped again, anywhere, at once
        true
    }

    /// Changes the protection of the range starting at `start`.
    pub fn protect(&self, start: u64, prot: u32) -> bool {
        let map = self.mm.write();
        let Some(e) = map.ranges.get(&start).copied() else {
            return false;
        };
        let range = self.cache.get(e.slot);
        range.lock.start_write(&map);
        range.set(e.start, e.end, prot, self.id, e.key);
        true
    } // end_write_all: the range is readable again

    fn publish(&self, map: &Map) {
        // The old snapshot is freed after a grace period.
        self.index.store(map.ranges.values().copied().collect());
    }
}

impl Drop for AddressSpace {
    /// `exit_mmap`: detach every range and give it back to the cache.
    fn drop(&mut self) {
        let mut map = self.mm.write();
        let ranges = std::mem::take(&mut map.ranges);
        self.publish(&map);
        for e in ranges.values() {
            let range = self.cache.get(e.slot);
            range.lock.start_write(&map);
            range.lock.detach(&map);
            range.poison();
            self.cache.release(e.slot);
        }
    }
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("id", &self.id)
            .field("mm", &self.mm)
            .finish_non_exhaustive()
    }
}

// -----------------------------------------------------------------------------
// The stress run
// -----------------------------------------------------------------------------

/// Pages.
pub const PAGE: u64 = 4096;
/// Long-lived ranges per address space: `[i * 16, i * 16 + 8)` pages.
pub const FIXED: u64 = 16;
/// Where the writers' short-lived ranges go.
pub const CHURN_BASE: u64 = 1 << 32;

/// Maps the long-lived ranges of the stress run and the bench.
pub fn map_fixed(space: &AddressSpace, n: u64) {
    for i in 0..n {
        space
            .map(i * 16 * PAGE, (i * 16 + 8) * PAGE, 1)
            .expect("fixed ranges are disjoint and the cache is large enough");
    }
}

/// What a stress run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Lookups served by the fast path.
    pub fast: u64,
    /// Lookups served by the big read lock.
    pub fallback: u64,
    /// Lookups of unmapped addresses.
    pub misses: u64,
    /// map + protect + unmap rounds.
    pub rounds: u64,
}

/// A small xorshift generator: the stress run needs no quality.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Checks one lookup of `addr` in `space`; panics on any inconsistency.
fn check_lookup(space: &AddressSpace, addr: u64, fixed: bool, report: &mut Report) {
    match space.lock_range(addr) {
        Some(g) => {
            assert_eq!(g.asid(), space.id(), "locked another address space's range");
            assert!(
                g.start() <= addr && addr < g.end(),
                "locked a range that does not contain {addr:#x}: {:#x}..{:#x}",
                g.start(),
                g.end()
            );
            assert!(g.is_consistent(), "torn or poisoned range: {g:?}");
            match g.path {
                Path::Fast => report.fast += 1,
                Path::Fallback => report.fallback += 1,
            }
        }
        None => {
            assert!(!fixed, "a long-lived range was not found at {addr:#x}");
            report.misses += 1;
        }
    }
}

/// Runs `readers` fault-like reader threads against one writer for at most
/// `max_rounds` writer rounds or `time_cap`. Two address spaces share one
/// range cache, so unmapped ranges are recycled across them; a third,
/// short-lived address space is created and destroyed again and again, so
/// readers' stale pointers also reach domains that are going away.
pub fn stress(readers: usize, max_rounds: u64, time_cap: Duration) -> Report {
    let cache = RangeCache::new(128);
    let spaces = [AddressSpace::new(&cache), AddressSpace::new(&cache)];
    for s in &spaces {
        map_fixed(s, FIXED);
    }
    let stop = AtomicBool::new(false);
    let total = Mutex::new(Report::default());
    let started = Instant::now();
    let mut rounds = 0;
    std::thread::scope(|sc| {
        for r in 0..readers {
            let (spaces, stop, total) = (&spaces, &stop, &total);
            sc.spawn(move || {
                let mut report = Report::default();
                let mut rng = 0x2545_f491_4f6c_dd1d ^ (r as u64 + 1);
                // Relaxed: a stop flag; the scope's join orders the rest.
                while !stop.load(Ordering::Relaxed) {
                    let x = xorshift(&mut rng);
                    let space = &spaces[(x & 1) as usize];
                    if x & 2 == 0 {
                        // A long-lived range: must always be found.
                        let page = (x >> 8) % FIXED * 16 + (x >> 32) % 8;
                        check_lookup(space, page * PAGE, true, &mut report);
                        if x & 0xf0 == 0 {
                            // The old design, for comparison: the big lock alone.
                            let seen = space.with_range_big_lock(page * PAGE, |r| {
                                (r.asid(), r.is_consistent())
                            });
                            assert_eq!(seen, Some((space.id(), true)), "big-lock lookup");
                        }
                    } else {
                        // The churn area: found or not, but never wrong.
                        let page = (x >> 8) % 64;
                        check_lookup(space, CHURN_BASE + page * PAGE, false, &mut report);
                    }
                }
                let mut t = total.lock().unwrap_or_else(PoisonError::into_inner);
                t.fast += report.fast;
                t.fallback += report.fallback;
                t.misses += report.misses;
            });
        }
        // Stop the readers even if the writer panics.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                // Relaxed: a stop flag.
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut mapped: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        while rounds < max_rounds && started.elapsed() < time_cap {
            for (s, space) in spaces.iter().enumerate() {
                let x = xorshift(&mut rng);
                let start = CHURN_BASE + (x >> 8) % 64 * PAGE;
                if space.map(start, start + PAGE * (1 + x % 3), 1).is_ok() {
                    mapped[s].push(start);
                }
                space.protect((x >> 20) % FIXED * 16 * PAGE, (x % 7) as u32);
                if mapped[s].len() > 8 || x & 4 == 0 {
                    if let Some(old) = mapped[s].pop() {
                        assert!(space.unmap(old));
                    }
                }
            }
            // A write cycle that changes nothing: the long-lived ranges stay
            // readable through it.
            spaces[(rounds & 1) as usize].with_write_lock(std::hint::spin_loop);
            if rounds % 16 == 0 {
                // A short-lived address space takes ranges from the shared
                // cache and gives them back on drop.
                let transient = AddressSpace::new(&cache);
                map_fixed(&transient, 4);
                drop(transient);
            }
            rounds += 1;
        }
    });
    let mut report = total.into_inner().unwrap_or_else(PoisonError::into_inner);
    report.rounds = rounds;
    report
}

#[allow(dead_code)] // unused when the torture test or the bench includes this file
fn main() {
    let report = stress(2, u64::MAX, Duration::from_secs(3));
    println!(
        "address_space: {} writer rounds; {} lookups on the fast path, {} through the big lock, \
         {} misses; every locked range was attached, consistent and the one asked for",
        report.rounds, report.fast, report.fallback, report.misses
    );
}
