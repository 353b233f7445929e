// The reference model for `ListLru`, shared by two harnesses. Not a module:
// it is `include!`d by `src/lru/list_lru/tests.rs` (unit level: groups and
// reparenting, since `GroupId`s other than the root can only be made inside
// the crate until the group tree lands) and by `tests/list_lru_model.rs`
// (the public API: nodes and the root group). The includer brings
// `ListLru`, `Isolate`, `LruKey`, `GroupId`, `ReparentError` into scope and
// defines `fn gid(u32) -> GroupId`.
//
// The model is a `BTreeMap<(node, group), VecDeque<(key id, value)>>`, head
// = least recently used, plus the forward map of reparented groups. After
// every step, every list's count and contents (in order) must match, and
// so must the sequence of notify calls.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

/// One step of a test case. Key operands index the keys minted so far
/// (modulo their number), so shrinking keeps them meaningful.
#[derive(Clone, Debug)]
enum Op {
    Add {
        node: usize,
        group: u32,
    },
    Remove(usize),
    Touch(usize),
    Contains(usize),
    Walk {
        node: usize,
        group: u32,
        budget: usize,
        script: Vec<Isolate>,
    },
    Reparent {
        from: u32,
        to: u32,
    },
}

fn verdict() -> impl Strategy<Value = Isolate> {
    prop_oneof![
        3 => Just(Isolate::Removed),
        1 => Just(Isolate::RemovedRetry),
        2 => Just(Isolate::Rotate),
        2 => Just(Isolate::Skip),
        1 => Just(Isolate::Retry),
        1 => Just(Isolate::Stop),
    ]
}

/// Operations on `nodes` nodes and groups `0..groups` (reparenting only if
/// there is more than one group).
fn op(nodes: usize, groups: u32) -> BoxedStrategy<Op> {
    let common = prop_oneof![
        4 => (0..nodes, 0..groups).prop_map(|(node, group)| Op::Add { node, group }),
        2 => any::<usize>().prop_map(Op::Remove),
        2 => any::<usize>().prop_map(Op::Touch),
        1 => any::<usize>().prop_map(Op::Contains),
        2 => (0..nodes, 0..groups, 0..12usize, proptest::collection::vec(verdict(), 1..6))
            .prop_map(|(node, group, budget, script)| Op::Walk { node, group, budget, script }),
    ];
    if groups > 1 {
        prop_oneof![
            12 => common,
            1 => (0..groups, 0..groups).prop_map(|(from, to)| Op::Reparent { from, to }),
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

type List = VecDeque<(usize, u64)>;

#[derive(Default)]
struct Model {
    lists: BTreeMap<(usize, u32), List>,
    forward: BTreeMap<u32, u32>,
}

impl Model {
    fn live(&self, mut g: u32) -> u32 {
        while let Some(&f) = self.forward.get(&g) {
            g = f;
        }
        g
    }

    fn find(&mut self, id: usize) -> Option<(&mut List, usize)> {
        self.lists
            .values_mut()
            .find_map(|l| l.iter().position(|e| e.0 == id).map(|p| (l, p)))
    }

    /// The walk algorithm, on a `VecDeque`: returns (values seen, values
    /// isolated).
    fn walk(list: &mut List, budget: &mut usize, script: &[Isolate]) -> (Vec<u64>, Vec<u64>) {
        let (mut seen, mut out) = (Vec::new(), Vec::new());
        let mut cur = list.front().map(|e| e.0);
        let mut step = 0;
        while let Some(id) = cur {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let pos = list.iter().position(|e| e.0 == id).expect("cursor on list");
            let next = list.get(pos + 1).map(|e| e.0);
            seen.push(list[pos].1);
            let v = script[step % script.len()];
            step += 1;
            match v {
                Isolate::Removed => {
                    out.push(list.remove(pos).expect("pos").1);
                    cur = next;
                }
                Isolate::RemovedRetry => {
                    out.push(list.remove(pos).expect("pos").1);
                    cur = list.front().map(|e| e.0);
                }
                Isolate::Rotate => {
                    let e = list.remove(pos).expect("pos");
                    list.push_back(e);
                    cur = next;
                }
                Isolate::Skip => cur = next,
                Isolate::Retry => cur = list.front().map(|e| e.0),
                Isolate::Stop => break,
            }
        }
        (seen, out)
    }
}

/// Run `ops` against a `ListLru` and the model, checking after each step.
fn run(nodes: usize, groups: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let notified = Arc::new(Mutex::new(Vec::new()));
    let sink = notified.clone();
    let lru = ListLru::with_notify(nodes, move |node, g| sink.lock().unwrap().push((node, g)));
    let mut model = Model::default();
    let mut expect_notify: Vec<(usize, GroupId)> = Vec::new();
    let mut keys: Vec<LruKey> = Vec::new();
    let mut next_value = 0u64;

    for op in ops {
        match op {
            &Op::Add { node, group } => {
                let live = model.live(group);
                let l = model.lists.entry((node, live)).or_default();
                if l.is_empty() {
                    expect_notify.push((node, gid(live)));
                }
                l.push_back((keys.len(), next_value));
                let k = lru.add(node, gid(group), next_value);
                prop_assert_eq!(k.node(), node);
                keys.push(k);
                next_value += 1;
            }
            &Op::Remove(i) if !keys.is_empty() => {
                let id = i % keys.len();
                let want = model.find(id).map(|(l, p)| l.remove(p).expect("pos").1);
                prop_assert_eq!(lru.remove(keys[id]), want);
            }
            &Op::Touch(i) if !keys.is_empty() => {
                let id = i % keys.len();
                let want = match model.find(id) {
                    Some((l, p)) => {
                        let e = l.remove(p).expect("pos");
                        l.push_back(e);
                        true
                    }
                    None => false,
                };
                prop_assert_eq!(lru.touch(keys[id]), want);
            }
            &Op::Contains(i) if !keys.is_empty() => {
                let id = i % keys.len();
                let want = model.find(id).is_some();
                prop_assert_eq!(lru.contains(keys[id]), want);
            }
            Op::Remove(_) | Op::Touch(_) | Op::Contains(_) => {}
            Op::Walk {
                node,
                group,
                budget,
                script,
            } => {
                let (node, group) = (*node, *group);
                let mut model_budget = *budget;
                let l = model.lists.entry((node, group)).or_default();
                let (want_seen, want_out) = Model::walk(l, &mut model_budget, script);
                let mut real_budget = *budget;
                let mut seen = Vec::new();
                let mut step = 0;
                let out = lru.walk(node, gid(group), &mut real_budget, |v| {
                    seen.push(*v);
                    let verdict = script[step % script.len()];
                    step += 1;
                    verdict
                });
                prop_assert_eq!(seen, want_seen);
                prop_assert_eq!(out, want_out);
                prop_assert_eq!(real_budget, model_budget);
            }
            &Op::Reparent { from, to } => {
                let want = if from == to {
                    Err(ReparentError::IntoItself(gid(from)))
                } else if let Some(&into) = model.forward.get(&from) {
                    Err(ReparentError::AlreadyReparented {
                        group: gid(from),
                        into: gid(into),
                    })
                } else if model.live(to) == from {
                    Err(ReparentError::IntoItself(gid(from)))
                } else {
                    let live = model.live(to);
                    for node in 0..nodes {
                        let moved = model.lists.remove(&(node, from)).unwrap_or_default();
                        let l = model.lists.entry((node, live)).or_default();
                        if l.is_empty() && !moved.is_empty() {
                            expect_notify.push((node, gid(live)));
                        }
                        // Moved items go first: reclaimed before `to`'s own.
                        for v in moved.into_iter().rev() {
                            l.push_front(v);
                        }
                    }
                    model.forward.insert(from, live);
                    Ok(())
                };
                prop_assert_eq!(lru.reparent(gid(from), gid(to)), want);
            }
        }

        // Counts and contents, in order, of every list.
        let mut total = 0;
        for node in 0..nodes {
            let mut node_total = 0;
            for g in 0..groups {
                let want: Vec<u64> = model
                    .lists
                    .get(&(node, g))
                    .map(|l| l.iter().map(|e| e.1).collect())
                    .unwrap_or_default();
                prop_assert_eq!(lru.count(node, gid(g)), want.len());
                let mut budget = want.len() + 1;
                let mut got = Vec::new();
                let out = lru.walk(node, gid(g), &mut budget, |v| {
                    got.push(*v);
                    Isolate::Skip
                });
                prop_assert!(out.is_empty());
                prop_assert_eq!(got, want.clone());
                node_total += want.len();
            }
            prop_assert_eq!(lru.count_node(node), node_total);
            total += node_total;
        }
        prop_assert_eq!(lru.len(), total);
        prop_assert_eq!(&*notified.lock().unwrap(), &expect_notify);
    }
    Ok(())
}
