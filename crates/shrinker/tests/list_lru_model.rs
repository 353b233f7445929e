//! Model-based test of `ListLru` through the public API: random sequences of
//! add / remove / touch / contains / walk (with random verdict scripts)
//! against a `BTreeMap<(node, group), VecDeque<(key, value)>>` model; after
//! every step counts, contents (in order) and notify calls must match.
//!
//! Only the root group can be named from outside the crate until the group
//! tree lands, so this harness runs on several nodes and the root group; the
//! unit-level harness in `src/lru/list_lru/tests.rs` runs the same model with
//! four groups and reparenting.

use shrinker::{GroupId, Isolate, ListLru, LruKey, ReparentError};

fn gid(i: u32) -> GroupId {
    assert_eq!(i, 0, "only the root group is public");
    GroupId::ROOT
}

include!("../src/lru/list_lru/model.rs");

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn list_lru_matches_model(ops in proptest::collection::vec(op(3, 1), 0..80)) {
        run(3, 1, &ops)?;
    }
}
