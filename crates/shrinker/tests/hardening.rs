//! Regression tests for the edges a hostile user found (issue "Hardening
//! at the edges"): each test is named after what broke, and each failed
//! (hung, panicked or miscounted) before its fix.
//!
//! Tests that could hang before their fix run the blocking call on a helper
//! thread and give up after a generous bound, so a regression fails the
//! suite instead of hanging it.
#![cfg(not(loom))]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use shrinker::{
    Count, GroupId, GroupObserver, Registered, Scan, Shrink, ShrinkControl, ShrinkRequest,
    ShrinkerBuilder, ShrinkerRegistry,
};

/// Far beyond anything these operations take when they work (milliseconds).
const HANG: Duration = Duration::from_secs(10);

fn registry(nodes: usize) -> Arc<ShrinkerRegistry> {
    Arc::new(ShrinkerRegistry::builder().nodes(nodes).build().unwrap())
}

fn req(group: GroupId, node: usize, priority: u8) -> ShrinkRequest {
    ShrinkRequest {
        node,
        priority,
        group,
    }
}

/// Run `f` on a helper thread; panic if it has not returned within
/// [`HANG`]. (The helper is left behind in that case: the test has failed.)
fn within_bound<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} did not return within {HANG:?}: it hangs"))
}

/// A cache whose `count` takes a while, so that walks overlap.
struct Slow {
    calls: AtomicUsize,
}

impl Shrink for Slow {
    fn count(&self, _: &ShrinkControl) -> Count {
        self.calls.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(2));
        Count::Objects(100)
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        Scan::Freed(sc.nr_to_scan())
    }
}

/// Item 2. Three threads run overlapping walks without pause (under
/// register churn, so with refcount pins); each walk's
/// `try_get` succeeded while another walk's pin was held, so the count never
/// reached zero and dropping the handle waited for good (> 10 s). A dying
/// mark now refuses new pins once unregistration has begun.
#[test]
fn unregister_is_not_starved_by_overlapping_walks() {
    let reg = registry(1);
    let s = ShrinkerBuilder::new("slow")
        .build_in(
            &reg,
            Slow {
                calls: AtomicUsize::new(0),
            },
        )
        .unwrap()
        .register();
    let stop = Arc::new(AtomicBool::new(false));
    // Register churn keeps the registry's gate closed (each unregister
    // re-arms it), so the walks pin with the refcount, as under any churn.
    let churn = {
        let (reg, stop) = (Arc::clone(&reg), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(
                    ShrinkerBuilder::new("churn")
                        .build_in(&reg, Ten)
                        .unwrap()
                        .register(),
                );
            }
        })
    };
    let walkers: Vec<_> = (0..3)
        .map(|_| {
            let (reg, stop) = (Arc::clone(&reg), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    reg.shrink(&req(GroupId::ROOT, 0, 12)).unwrap();
                }
            })
        })
        .collect();
    // Let the walks overlap.
    while s.calls.load(Ordering::Relaxed) < 6 {
        thread::sleep(Duration::from_millis(1));
    }
    let (tx, rx) = mpsc::channel();
    let unregister = thread::spawn(move || {
        drop(s);
        let _ = tx.send(());
    });
    let finished = rx.recv_timeout(HANG).is_ok();
    stop.store(true, Ordering::Relaxed);
    for w in walkers {
        w.join().unwrap();
    }
    churn.join().unwrap();
    unregister.join().unwrap();
    assert!(
        finished,
        "unregister starved by overlapping walks for {HANG:?}"
    );
    assert!(reg.is_empty());
}

/// A panic payload whose `Drop` panics: dropping the caught payload used to
/// unwind out of the walk with the shrinker's pin held.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("payload drop panics");
        }
    }
}

struct PanicsWithBadPayload {
    group_aware: bool,
}

impl Shrink for PanicsWithBadPayload {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(1000)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        let _ = self.group_aware;
        std::panic::panic_any(PanicsOnDrop)
    }
}

/// Item 3 ("a value dropped after the callback returns"): the payload of a
/// caught callback panic is the user's value; its `Drop` panicking is
/// contained like the callback's own panic, and the pin is released.
#[test]
fn panic_payload_whose_drop_panics_is_contained_and_pin_released() {
    let reg = registry(1);
    let s = ShrinkerBuilder::new("bad-payload")
        .build_in(&reg, PanicsWithBadPayload { group_aware: false })
        .unwrap()
        .register();
    let r = catch_unwind(AssertUnwindSafe(|| reg.shrink(&req(GroupId::ROOT, 0, 0))));
    assert!(
        matches!(r, Ok(Ok(_))),
        "the payload's panicking drop escaped the walk"
    );
    assert!(s.stats().panics >= 1);
    within_bound("unregister after a payload drop panic", move || drop(s));
}

/// A `tracing` subscriber that panics on every event: the shrinker crate
/// reports a callback's panic through `tracing`, outside the callback's
/// `catch_unwind`.
struct PanickingSubscriber;

impl tracing::Subscriber for PanickingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        panic!("the subscriber panics");
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

struct PanicsInCount;

impl Shrink for PanicsInCount {
    fn count(&self, _: &ShrinkControl) -> Count {
        panic!("count panics");
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Stop
    }
}

/// A one-node registry whose walks take light pins (`close_gate_first ==
/// false`: a new registry's gate is open) or refcount pins (`true`: an
/// unregister has just closed the gate, which stays closed until the
/// registry has been quiet for 20 ms).
fn registry_with_gate(close_gate_first: bool) -> Arc<ShrinkerRegistry> {
    let reg = registry(1);
    if close_gate_first {
        drop(
            ShrinkerBuilder::new("closer")
                .build_in(&reg, PanicsInCount)
                .unwrap()
                .register(),
        );
    }
    reg
}

/// Item 3: a panic outside the caught callback (here the `tracing`
/// subscriber that the crate reports the callback's panic to) unwinds
/// through the walk. The pin was released by straight-line code after the
/// callout, so it stayed held and unregister hung; pins are guards now.
/// Both pin kinds: the first walk runs with the gate open (light pin), the
/// second after an unregister closed it (refcount pin).
#[test]
fn panic_outside_the_callback_releases_the_shrinker_pin() {
    for close_gate_first in [false, true] {
        let reg = registry_with_gate(close_gate_first);
        let s = ShrinkerBuilder::new("panics")
            .build_in(&reg, PanicsInCount)
            .unwrap()
            .register();
        let r = tracing::subscriber::with_default(PanickingSubscriber, || {
            catch_unwind(AssertUnwindSafe(|| reg.shrink(&req(GroupId::ROOT, 0, 0))))
        });
        assert!(r.is_err(), "the subscriber's panic propagates");
        within_bound(
            "unregister after a panic unwound through the walk",
            move || drop(s),
        );
        assert!(reg.is_empty());
    }
}

/// Item 3, group walk: the group's pin is a guard too, so `remove_group`
/// does not wait for a walk that unwound.
#[test]
fn panic_outside_the_callback_releases_the_group_pin() {
    for close_gate_first in [false, true] {
        let reg = registry_with_gate(close_gate_first);
        let g = reg.create_group(GroupId::ROOT).unwrap();
        let s = ShrinkerBuilder::new("panics")
            .group_aware(true)
            .build_in(&reg, PanicsInCount)
            .unwrap()
            .register();
        s.set_bit(g, 0).unwrap();
        let r = tracing::subscriber::with_default(PanickingSubscriber, || {
            catch_unwind(AssertUnwindSafe(|| reg.shrink(&req(g, 0, 0))))
        });
        assert!(r.is_err(), "the subscriber's panic propagates");
        let reg2 = Arc::clone(&reg);
        within_bound(
            "remove_group after a panic unwound through its walk",
            move || reg2.remove_group(g).unwrap(),
        );
        within_bound(
            "unregister after a panic unwound through the walk",
            move || drop(s),
        );
    }
}

/// An observer that panics in `reparent`, and one that records.
struct PanickingObserver;
impl GroupObserver for PanickingObserver {
    fn reparent(&self, _: GroupId, _: GroupId) {
        panic!("observer panics");
    }
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(GroupId, GroupId)>>);
impl GroupObserver for Recorder {
    fn reparent(&self, from: GroupId, to: GroupId) {
        self.0.lock().unwrap().push((from, to));
    }
}

/// Item 5: a panicking `GroupObserver` left the group half-removed
/// (unpublished, never freed, its deferred work nowhere). The removal now
/// completes, the other observers are told, and the panic is counted.
#[test]
fn panicking_group_observer_does_not_leave_a_half_removed_group() {
    let reg = registry(1);
    let bad: Arc<dyn GroupObserver> = Arc::new(PanickingObserver);
    let good = Arc::new(Recorder::default());
    reg.observe_groups(Arc::downgrade(&bad));
    let good_dyn: Arc<dyn GroupObserver> = good.clone();
    reg.observe_groups(Arc::downgrade(&good_dyn));
    let parent = reg.create_group(GroupId::ROOT).unwrap();
    let g = reg.create_group(parent).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| reg.remove_group(g)));
    assert!(matches!(r, Ok(Ok(()))), "removal completes: {r:?}");
    assert_eq!(reg.group_observer_panics(), 1);
    assert_eq!(*good.0.lock().unwrap(), vec![(g, parent)]);
    assert!(reg.group_parent(g).is_err(), "the group is gone");
    assert_eq!(
        reg.groups_under(parent),
        vec![parent],
        "unlinked from its parent"
    );
    // The parent can be removed: the child no longer holds it.
    reg.remove_group(parent).unwrap();
    assert_eq!(reg.nr_groups(), 1);
    assert_eq!(reg.group_observer_panics(), 2);
}

struct Ten;
impl Shrink for Ten {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(10)
    }
    fn scan(&self, sc: &mut ShrinkControl) -> Scan {
        Scan::Freed(sc.nr_to_scan())
    }
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Item 7: `shrink` (and by-hand `count`/`scan`) inside an RCU read section
/// ran the callbacks inside the caller's section, breaking the `Shrink`
/// contract (callbacks may block and synchronize). It panics now, naming
/// the misuse, before calling any callback.
#[test]
fn shrink_inside_a_read_section_panics_naming_the_misuse() {
    let reg = registry(1);
    let s: Registered<Ten> = ShrinkerBuilder::new("ten")
        .build_in(&reg, Ten)
        .unwrap()
        .register();
    let id = s.id();
    type Call<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let calls: [Call<'_>; 3] = [
        (
            "shrink",
            Box::new(|| {
                let _ = reg.shrink(&req(GroupId::ROOT, 0, 0));
            }),
        ),
        (
            "count",
            Box::new(|| {
                let _ = reg.count(id, 0);
            }),
        ),
        (
            "scan",
            Box::new(|| {
                let _ = reg.scan(id, 0, 1);
            }),
        ),
    ];
    for (what, call) in calls {
        let count_calls = s.stats().count_calls;
        let guard = shrinker_rcu::read_lock();
        let e = catch_unwind(AssertUnwindSafe(&call)).expect_err(what);
        drop(guard);
        let msg = panic_text(&*e);
        assert!(
            msg.contains("inside an RCU read-side section"),
            "{what}: {msg}"
        );
        assert_eq!(
            s.stats().count_calls,
            count_calls,
            "{what}: no callback ran"
        );
        // Outside a section it works.
        call();
    }
}

/// Defers work without scanning: the batch is larger than any count.
struct Huge;
impl Shrink for Huge {
    fn count(&self, _: &ShrinkControl) -> Count {
        Count::Objects(usize::MAX)
    }
    fn scan(&self, _: &mut ShrinkControl) -> Scan {
        Scan::Stop
    }
}

/// Item 11: `stats()` summed per-node deferred counts with `+`, which
/// panicked in debug builds (and wrapped in release) once their sum passed
/// `u64::MAX`. It saturates now, and so does every step of the engine on
/// the largest count a shrinker can report.
#[test]
fn stats_saturate_on_huge_deferred_counts() {
    let reg = registry(3);
    let s = ShrinkerBuilder::new("huge")
        .numa_aware(true)
        .batch(usize::MAX)
        .build_in(&reg, Huge)
        .unwrap()
        .register();
    for node in 0..3 {
        // delta = usize::MAX (saturated) / 2, below the batch: all deferred.
        assert_eq!(reg.shrink(&req(GroupId::ROOT, node, 0)).unwrap(), 0);
    }
    assert_eq!(s.stats().deferred, u64::MAX);
    assert_eq!(reg.shrinkers()[0].stats.deferred, u64::MAX);
}
