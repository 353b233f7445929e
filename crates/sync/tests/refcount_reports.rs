//! How `Refcount` reports saturation: once per kind through `tracing`, or a
//! panic per event with `set_panic_on_saturate`. The switch and the once-only
//! latches are process-wide, so this binary holds a single test that walks
//! through them in order.

use shrinker_sync::refcount::{self, Saturation};
use shrinker_sync::Refcount;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Counts ERROR events from the refcount target.
struct CountReports(Arc<AtomicUsize>);

impl Subscriber for CountReports {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let m = event.metadata();
        if m.target() == "shrinker_sync::refcount" && *m.level() == tracing::Level::ERROR {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A named operation, the value it starts from and the report it must raise.
type Case = (&'static str, Box<dyn Fn(&Refcount)>, i32, Saturation);

fn panic_message(r: std::thread::Result<()>) -> String {
    let payload = r.expect_err("expected a panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn reports_once_per_kind_then_panics_when_asked() {
    let reports = Arc::new(AtomicUsize::new(0));
    let subscriber = CountReports(Arc::clone(&reports));
    tracing::subscriber::with_default(subscriber, || {
        // Once per kind: the second use-after-free stays silent...
        Refcount::new(0).inc();
        Refcount::new(0).inc();
        assert_eq!(reports.load(Ordering::Relaxed), 1);
        // ...but another kind reports.
        Refcount::new(1).dec();
        assert_eq!(reports.load(Ordering::Relaxed), 2);
        // dec_not_one on zero reports an underflow without saturating.
        let r = Refcount::new(0);
        assert!(r.dec_not_one());
        assert_eq!(r.read(), 0);
        assert_eq!(reports.load(Ordering::Relaxed), 3);
    });

    // With the switch on, every event panics, after saturating.
    refcount::set_panic_on_saturate(true);
    let cases: [Case; 5] = [
        (
            "inc on zero",
            Box::new(|r| r.inc()),
            0,
            Saturation::AddOnZero,
        ),
        (
            "add overflow",
            Box::new(|r| r.add(2)),
            Refcount::MAX,
            Saturation::AddOverflow,
        ),
        (
            "inc_not_zero overflow",
            Box::new(|r| assert!(r.inc_not_zero())),
            Refcount::MAX,
            Saturation::AddNotZeroOverflow,
        ),
        ("dec to zero", Box::new(|r| r.dec()), 1, Saturation::DecLeak),
        (
            "dec_and_test below zero",
            Box::new(|r| assert!(!r.dec_and_test())),
            0,
            Saturation::SubUnderflow,
        ),
    ];
    for (name, op, start, kind) in cases {
        let r = Refcount::new(start);
        let msg = panic_message(panic::catch_unwind(AssertUnwindSafe(|| op(&r))));
        assert_eq!(msg, kind.to_string(), "{name}");
        assert_eq!(
            r.read(),
            Refcount::SATURATED,
            "{name}: saturated before the panic"
        );
    }
    // Healthy operations never panic.
    let r = Refcount::new(1);
    r.inc();
    assert!(!r.dec_and_test());
    assert!(r.dec_and_test());
    refcount::set_panic_on_saturate(false);
    Refcount::new(0).inc(); // back to a (silent, already reported) warning
}
