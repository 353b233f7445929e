//! The swap-device example (`examples/swap_device.rs`) as a stress test:
//! swapoff/swapon cycles against reader threads; every reader checks that the
//! device it pinned is fully initialised and not torn down. Sized by cycles,
//! capped in time.

#[path = "../examples/swap_device.rs"]
mod swap_device;

use std::time::Duration;

#[test]
fn readers_never_see_an_uninitialised_or_torn_down_device() {
    let report = swap_device::stress(2, 2, 300, Duration::from_secs(4));
    assert!(report.cycles > 0, "no swapoff/swapon cycle ran: {report:?}");
    assert!(
        report.hits > 0,
        "no lookup succeeded, nothing was checked: {report:?}"
    );
}

#[test]
fn a_device_that_was_never_switched_on_refuses_lookups() {
    let table = swap_device::SwapTable::new(1);
    let entry = swap_device::SwapEntry {
        device: 0,
        offset: 0,
    };
    assert!(table.get_device(entry).is_none());
    table.swapon(0, 5);
    let dev = table.get_device(entry).expect("swapped on");
    assert_eq!(dev.read(0), 5);
    let out_of_range = swap_device::SwapEntry {
        device: 0,
        offset: swap_device::SLOTS,
    };
    assert!(table.get_device(out_of_range).is_none());
    drop(dev);
    table.swapoff(0);
    assert!(table.get_device(entry).is_none());
}
