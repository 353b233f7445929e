//! loom model of RcuPtr publication: a reader that loads the new pointer sees
//! its initialisation (Release swap / Acquire load).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p shrinker-rcu --test loom_ptr`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use shrinker_rcu::{rcu_barrier, read_lock, RcuList, RcuPtr};

struct Obj(UnsafeCell<u32>);

// SAFETY: written only before publication; loom checks the ordering.
unsafe impl Sync for Obj {}

impl Obj {
    fn read(&self) -> u32 {
        // SAFETY: loom tracks this access and reports any race.
        self.0.with(|v| unsafe { *v })
    }
}

#[test]
fn publish_then_read() {
    loom::model(|| {
        let p: Arc<RcuPtr<Obj>> = Arc::new(RcuPtr::null());
        let reader = {
            let p = p.clone();
            thread::spawn(move || {
                let g = read_lock();
                if let Some(o) = p.load(&g) {
                    assert_eq!(o.read(), 42);
                }
                drop(g);
            })
        };
        let obj = Obj(UnsafeCell::new(0));
        // Initialise through the cell so loom sees the write.
        // SAFETY: not yet shared.
        obj.0.with_mut(|v| unsafe { *v = 42 });
        assert!(p.replace(obj).is_none());
        reader.join().unwrap();
        rcu_barrier();
    });
}

#[test]
fn list_push_then_iterate() {
    loom::model(|| {
        let list: Arc<RcuList<Obj>> = Arc::new(RcuList::new());
        let reader = {
            let list = list.clone();
            thread::spawn(move || {
                let g = read_lock();
                for o in list.iter(&g) {
                    assert_eq!(o.read(), 7);
                }
                drop(g);
            })
        };
        for _ in 0..2 {
            let obj = Obj(UnsafeCell::new(0));
            // SAFETY: not yet shared.
            obj.0.with_mut(|v| unsafe { *v = 7 });
            list.lock().push_back(obj);
        }
        reader.join().unwrap();
    });
}
