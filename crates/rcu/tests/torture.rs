//! rcutorture in miniature.
//!
//! Updaters keep replacing the objects in a few RCU-protected slots and
//! dispose of the old ones through every path the crate offers (deferred drop,
//! `synchronize_rcu` + drop, `call_rcu`, `call_rcu_lazy`, the polled API).
//! Readers check, inside their sections, that every object they reach is
//! alive and intact — at the start of the section *and again at its end*,
//! after a random delay — and that each slot's generation never goes
//! backwards. Dropping an object poisons it first, so a premature free shows up
//! as a poisoned read; under AddressSanitizer (CI) it shows up as a
//! use-after-free report. Reader threads also start and exit throughout.
//!
//! Sized by iterations with a time cap, so it is short under sanitizers.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shrinker_rcu::{
    call_rcu, call_rcu_lazy, cond_synchronize, get_state, rcu_barrier, read_lock, synchronize_rcu,
    RcuList, RcuPtr,
};

const ALIVE: u64 = 0xA11CE_A11CE;
const POISON: u64 = 0xDEAD_DEAD_DEAD;
const SLOTS: usize = 4;

static CREATED: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Obj {
    magic: AtomicU64,
    generation: u64,
    payload: [AtomicU64; 4],
}

impl Obj {
    fn new(generation: u64) -> Self {
        CREATED.fetch_add(1, Ordering::Relaxed);
        Obj {
            magic: AtomicU64::new(ALIVE),
            generation,
            payload: std::array::from_fn(|i| AtomicU64::new(generation ^ i as u64)),
        }
    }

    /// Panics if the object was dropped or torn.
    fn check(&self) -> u64 {
        let magic = self.magic.load(Ordering::Relaxed);
        assert_eq!(magic, ALIVE, "reader saw a freed object (magic {magic:#x})");
        for (i, p) in self.payload.iter().enumerate() {
            assert_eq!(
                p.load(Ordering::Relaxed),
                self.generation ^ i as u64,
                "torn object"
            );
        }
        self.generation
    }
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.magic.store(POISON, Ordering::Relaxed);
        for p in &self.payload {
            p.store(POISON, Ordering::Relaxed);
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn scale() -> (u64, Duration) {
    // (updates per updater, time cap): the cap is what normally ends the run.
    if std::env::var_os("SHRINKER_SANITIZE").is_some() {
        (200_000, Duration::from_secs(3))
    } else {
        (1_000_000, Duration::from_secs(3))
    }
}

struct Shared {
    slots: Vec<RcuPtr<Obj>>,
    list: RcuList<Obj>,
    stop: AtomicBool,
    reads: AtomicU64,
}

/// One reader thread: `rounds` sections, or until `stop`.
fn reader(shared: Arc<Shared>, seed: u64, rounds: Option<u64>) {
    let mut rng = seed | 1;
    let mut last = [0u64; SLOTS];
    let mut done = 0u64;
    while !shared.stop.load(Ordering::Relaxed) && rounds.is_none_or(|r| done < r) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let g = read_lock();
        let i = (rng % SLOTS as u64) as usize;
        let obj = shared.slots[i].load(&g).expect("slots are never null");
        let generation = obj.check();
        assert!(
            generation >= last[i],
            "slot {i} went back from {} to {generation}",
            last[i]
        );
        last[i] = generation;
        // Sometimes nest and walk the list; always linger a little; then
        // re-check: the object must still be alive at the end of the section.
        if rng & 0x10 != 0 {
            let inner = read_lock();
            for o in shared.list.iter(&inner) {
                o.check();
            }
            drop(inner);
        }
        for _ in 0..(rng & 0xff) {
            std::hint::spin_loop();
        }
        if rng & 0xfff == 0 {
            thread::yield_now();
        }
        assert_eq!(obj.check(), generation);
        drop(g);
        done += 1;
    }
    shared.reads.fetch_add(done, Ordering::Relaxed);
}

/// One updater thread, owning one slot (so its generations only grow).
fn updater(shared: Arc<Shared>, slot: usize, updates: u64, deadline: Instant) -> u64 {
    let mut n = 0u64;
    for generation in 1..=updates {
        if Instant::now() > deadline {
            break;
        }
        let old = shared.slots[slot]
            .replace(Obj::new(generation))
            .expect("never null");
        match generation % 6 {
            0 => drop(old), // deferred drop
            1 => {
                synchronize_rcu();
                drop(old.try_into_box().expect("grace period has passed"));
            }
            2 => call_rcu(move || drop(old)),
            3 => call_rcu_lazy(move || drop(old)),
            4 => {
                let cookie = get_state();
                cond_synchronize(cookie);
                drop(old.into_box());
            }
            _ => {
                // Exercise the list: add one, remove the oldest.
                let mut w = shared.list.lock();
                w.push_back(Obj::new(generation));
                if w.len() > 8 {
                    let first = w.iter().next().map(|o| o.generation);
                    drop(w.remove_first(|o| Some(o.generation) == first));
                }
                drop(old);
            }
        }
        n += 1;
    }
    n
}

#[test]
fn rcutorture() {
    let (updates, cap) = scale();
    let deadline = Instant::now() + cap;
    let shared = Arc::new(Shared {
        slots: (0..SLOTS).map(|_| RcuPtr::new(Obj::new(0))).collect(),
        list: RcuList::new(),
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
    });

    let readers: Vec<_> = (0..2u64)
        .map(|s| {
            let shared = shared.clone();
            thread::spawn(move || reader(shared, s * 7919 + 1, None))
        })
        .collect();

    // Short-lived readers: threads that register, read a little and exit.
    let churn = {
        let shared = shared.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let s = shared.clone();
                thread::spawn(move || reader(s, n * 31 + 5, Some(200)))
                    .join()
                    .unwrap();
                n += 1;
            }
            n
        })
    };

    let updaters: Vec<_> = (0..SLOTS)
        .map(|slot| {
            let shared = shared.clone();
            thread::spawn(move || updater(shared, slot, updates, deadline))
        })
        .collect();

    let total_updates: u64 = updaters.into_iter().map(|h| h.join().unwrap()).sum();
    shared.stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let short_lived = churn.join().unwrap();
    let reads = shared.reads.load(Ordering::Relaxed);

    assert!(total_updates > 0);
    assert!(reads > 1000, "readers barely ran");
    assert!(short_lived > 0, "no short-lived reader thread ran");

    // Nothing leaks: after the barrier, every object is gone.
    drop(Arc::try_unwrap(shared).ok().expect("sole owner"));
    rcu_barrier();
    assert_eq!(
        DROPPED.load(Ordering::Relaxed),
        CREATED.load(Ordering::Relaxed),
        "objects leaked (or dropped twice)"
    );
    eprintln!(
        "rcutorture: {total_updates} updates, {reads} reads, {short_lived} short-lived reader \
         threads, barrier mode {:?}",
        shrinker_rcu::barrier_mode()
    );
}
