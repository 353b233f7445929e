//! The swap-device pattern (Linux `mm/swapfile.c`, 2021): a
//! [`PercpuRef`] that doubles as the "initialised" flag of an object that is
//! never freed.
//!
//! A swap entry is a long-lived handle: it names a device by index and an
//! offset on it, and may sit in a page table for hours while the device is
//! swapped off and on again. The device structures live in a table and are
//! never freed; what comes and goes is their *contents*. So the handle cannot
//! be protected by RCU-freeing the device. Instead each device carries a
//! `percpu_ref` (`users`) that is live exactly while the contents are valid:
//!
//! * **swapon**: initialise the fields, then `resurrect` the ref. From that
//!   store on, `tryget_live` succeeds.
//! * **get_device** (`get_swap_device`): `tryget_live`, then an *acquire*
//!   (the kernel's `smp_rmb()`), so that no field is read before the ref was
//!   seen live: `tryget_live` alone promises no ordering, and without the
//!   acquire a reader could read fields from before swapon finished.
//! * **swapoff**: `kill` the ref, `synchronize_rcu` (after which no new
//!   `tryget_live` succeeds), wait for the completion that the release
//!   callback signals (after which no user is left), then tear down.
//!
//! Run it: `cargo run --release -p shrinker-sync --example swap_device`. It
//! runs swapon/swapoff cycles against reader threads for a few seconds and
//! checks that no reader ever sees an uninitialised or torn-down device; the
//! test `tests/torture_swap_device.rs` runs the same code, shorter.

use shrinker_sync::{Completion, InitFlags, PercpuRef};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Slots per device.
pub const SLOTS: usize = 64;
/// A slot of a device that was never switched on.
const UNINIT: u64 = 0;
/// A slot of a device that has been switched off.
const POISON: u64 = u64::MAX;

/// One swap device (`struct swap_info_struct`). Never freed; its contents
/// are valid exactly while `users` is live.
pub struct SwapDevice {
    /// Live while swapped on (`si->users`). Created dead.
    users: PercpuRef,
    /// Signalled by `users`' release callback (`si->comp`).
    comp: Arc<Completion>,
    /// Which swapon this is; every slot of the map holds it while on.
    generation: AtomicU64,
    /// Number of usable slots (`si->max`); 0 while off.
    max: AtomicUsize,
    /// The swap map; `POISON` while off, `UNINIT` before the first swapon.
    map: Box<[AtomicU64]>,
}

// Every field below is written and read with Relaxed atomics on purpose: the
// users ref and the completion are what must order them (the property under
// test), not the accesses themselves.

impl SwapDevice {
    fn new() -> Self {
        let comp = Arc::new(Completion::new());
        let release = {
            let comp = Arc::clone(&comp);
            // swap_users_ref_free(): the last user is gone.
            move || comp.complete()
        };
        SwapDevice {
            // alloc_swap_info(): percpu_ref_init(.., PERCPU_REF_INIT_DEAD).
            users: PercpuRef::new(release, InitFlags::DEAD),
            comp,
            generation: AtomicU64::new(UNINIT),
            max: AtomicUsize::new(0),
            map: (0..SLOTS).map(|_| AtomicU64::new(UNINIT)).collect(),
        }
    }
}

/// A long-lived handle naming a device and a slot on it (`swp_entry_t`).
#[derive(Clone, Copy, Debug)]
pub struct SwapEntry {
    /// Index of the device in the table (`swp_type`).
    pub device: usize,
    /// Slot on the device (`swp_offset`).
    pub offset: usize,
}

/// The device table (`swap_info[]`): allocated once, never freed.
pub struct SwapTable {
    devices: Box<[SwapDevice]>,
}

/// A pinned device: swapoff waits until it is dropped (`put_swap_device`).
pub struct DeviceRef<'a> {
    dev: &'a SwapDevice,
}

impl DeviceRef<'_> {
    /// The device's generation.
    pub fn generation(&self) -> u64 {
        // Relaxed: ordered after swapon by get_device()'s acquire.
        self.dev.generation.load(Ordering::Relaxed)
    }

    /// Reads slot `offset` of the swap map.
    pub fn read(&self, offset: usize) -> u64 {
        // Relaxed: as above.
        self.dev.map[offset].load(Ordering::Relaxed)
    }
}

impl Drop for DeviceRef<'_> {
    fn drop(&mut self) {
        // put_swap_device(): Release; the last put runs release -> complete.
        self.dev.users.put();
    }
}

impl SwapTable {
    /// `n` devices, all swapped off.
    pub fn new(n: usize) -> Self {
        SwapTable {
            devices: (0..n).map(|_| SwapDevice::new()).collect(),
        }
    }

    /// Switches device `device` on as its `generation`-th life
    /// (`enable_swap_info`). Calls for one device must be serialised with
    /// its `swapoff` (the kernel's `swapon_mutex`).
    pub fn swapon(&self, device: usize, generation: u64) {
        let dev = &self.devices[device];
        assert!(generation != UNINIT && generation != POISON);
        // 1. Initialise every field (setup_swap_info()).
        dev.generation.store(generation, Ordering::Relaxed);
        for slot in dev.map.iter() {
            slot.store(generation, Ordering::Relaxed);
        }
        dev.max.store(SLOTS, Ordering::Relaxed);
        // 2. The previous life's token was consumed by its swapoff; start clean.
        dev.comp.reinit();
        // 3. "Finished initializing swap device": publish. Release: pairs with
        //    the acquire in get_device().
        dev.users.resurrect();
    }

    /// Pins the device `entry` names, if it is swapped on and `entry` is in
    /// range (`get_swap_device`).
    pub fn get_device(&self, entry: SwapEntry) -> Option<DeviceRef<'_>> {
        let dev = self.devices.get(entry.device)?;
        // 1. Pin the device unless it is off or going off.
        if !dev.users.tryget_live() {
            return None;
        }
        let pinned = DeviceRef { dev };
        // 2. Acquire (the kernel's smp_rmb()): pairs with the Release in
        //    resurrect(); no field is read before the ref was seen live.
        fence(Ordering::Acquire);
        // 3. Now the fields are those of a fully initialised life.
        if entry.offset >= dev.max.load(Ordering::Relaxed) {
            return None; // `pinned` drops: put
        }
        Some(pinned)
    }

    /// Switches device `device` off and tears it down (`swapoff`).
    pub fn swapoff(&self, device: usize) {
        let dev = &self.devices[device];
        // 1. No new users once every thread sees the kill.
        dev.users.kill();
        // 2. After this grace period no tryget_live can succeed any more (and,
        //    in the kernel, RCU-protected swap-cache users are gone too).
        shrinker_rcu::synchronize_rcu();
        // 3. Wait for the last user's put: release signals the completion.
        dev.comp.wait();
        assert!(dev.users.is_zero());
        // 4. Tear down: nobody can be looking.
        dev.max.store(0, Ordering::Relaxed);
        for slot in dev.map.iter() {
            slot.store(POISON, Ordering::Relaxed);
        }
    }
}

/// What a stress run did.
#[derive(Debug, Default)]
pub struct Report {
    /// swapoff + swapon cycles completed.
    pub cycles: u64,
    /// Successful lookups (each checked).
    pub hits: u64,
    /// Lookups that found the device off.
    pub misses: u64,
}

/// Runs swapoff/swapon cycles over `devices` devices against `readers`
/// reader threads, for at most `max_cycles` cycles or `time_cap`, whichever
/// comes first. Panics if a reader ever sees an uninitialised, torn-down or
/// mixed-up device.
pub fn stress(devices: usize, readers: usize, max_cycles: u64, time_cap: Duration) -> Report {
    assert!(devices >= 1);
    let table = SwapTable::new(devices);
    for d in 0..devices {
        table.swapon(d, 1);
    }
    let stop = AtomicBool::new(false);
    let hits = AtomicU64::new(0);
    let misses = AtomicU64::new(0);
    let start = Instant::now();
    let mut cycles = 0;
    std::thread::scope(|s| {
        for r in 0..readers {
            let (table, stop, hits, misses) = (&table, &stop, &hits, &misses);
            s.spawn(move || {
                let (mut h, mut m) = (0, 0);
                let mut i = r;
                // Relaxed: a stop flag; the scope's join orders the rest.
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_add(7);
                    let entry = SwapEntry {
                        device: i % devices,
                        offset: i % SLOTS,
                    };
                    match table.get_device(entry) {
                        Some(dev) => {
                            let generation = dev.generation();
                            let v = dev.read(entry.offset);
                            assert_ne!(v, UNINIT, "read an uninitialised device: {entry:?}");
                            assert_ne!(v, POISON, "read a torn-down device: {entry:?}");
                            assert_eq!(v, generation, "fields from two lives: {entry:?}");
                            h += 1;
                        }
                        None => m += 1,
                    }
                }
                hits.fetch_add(h, Ordering::Relaxed);
                misses.fetch_add(m, Ordering::Relaxed);
            });
        }
        // Stop the readers even if the updater panics, or the scope never ends.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                // Relaxed: a stop flag.
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // The updater: one device at a time, so others stay usable.
        while cycles < max_cycles && start.elapsed() < time_cap {
            let d = (cycles as usize) % devices;
            table.swapoff(d);
            table.swapon(d, cycles + 2);
            cycles += 1;
        }
    });
    Report {
        cycles,
        hits: hits.into_inner(),
        misses: misses.into_inner(),
    }
}

#[allow(dead_code)] // unused when tests/torture_swap_device.rs includes this file
fn main() {
    let report = stress(2, 2, 100_000, Duration::from_secs(3));
    println!(
        "swap_device: {} swapoff/swapon cycles, {} checked lookups, {} refused while off; \
         no reader saw an uninitialised or torn-down device",
        report.cycles, report.hits, report.misses
    );
}
