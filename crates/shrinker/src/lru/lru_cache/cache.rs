//! [`LruCache`](crate::LruCache): the handle, and its insert / lookup / remove paths.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use crate::{GroupId, Registered, ShrinkError};

use super::error::{CacheError, InsertError};
use super::store::*;

/// A concurrent key → value cache whose entries live on per-(node, group)
/// LRU lists, with a group-aware shrinker that evicts the least recently
/// used entries of the group (and, if [NUMA-aware](crate::LruCacheBuilder::numa_aware),
/// the node) under pressure, giving used entries a second chance.
///
/// See the [module documentation](crate::lru_cache) for the design. Values are handed
/// out as `Arc<V>`: a caller may hold one while reclaim evicts its entry
/// (the memory returns when the last `Arc` is dropped). Share the cache
/// between threads by reference or in an `Arc`.
///
/// # Examples
///
/// ```
/// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<String, u32>::builder("ages").build_in(&reg)?;
/// cache.insert(GroupId::ROOT, "ada".to_string(), 36)?;
/// assert_eq!(cache.get("ada").as_deref(), Some(&36));
/// assert_eq!(cache.remove("ada").as_deref(), Some(&36));
/// assert!(cache.get("ada").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    // Declared first, dropped first: unregister before the storage goes.
    pub(super) shrinker: Registered<Reclaim<K, V>>,
    pub(super) inner: Arc<CacheCore<K, V>>,
}

impl<K, V> fmt::Debug for LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LruCache")
            .field("name", &self.name())
            .field("shrinker_id", &self.shrinker_id())
            .field("numa_aware", &self.inner.numa_aware)
            .field("len", &self.len())
            .field("weight", &self.weight())
            .finish_non_exhaustive()
    }
}

impl<K, V> LruCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Insert `key` → `value` in `group`, on node 0: [`insert_on`] with
    /// node 0 (the only node a [NUMA-unaware](crate::LruCacheBuilder::numa_aware)
    /// cache uses).
    ///
    /// [`insert_on`]: Self::insert_on
    ///
    /// # Errors
    ///
    /// As [`insert_on`](Self::insert_on): the key and value come back in
    /// the [`InsertError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, &str>::builder("c").build_in(&reg)?;
    /// assert_eq!(cache.insert(GroupId::ROOT, 1, "a")?, None);
    /// assert_eq!(cache.insert(GroupId::ROOT, 1, "b")?.as_deref(), Some(&"a"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock and a list lock, briefly; never waits for
    /// reclaim or for a grace period.
    ///
    /// # Panics
    ///
    /// If the weigher panics (the cache is left unchanged).
    #[inline]
    pub fn insert(
        &self,
        group: GroupId,
        key: K,
        value: V,
    ) -> Result<Option<Arc<V>>, InsertError<K, V>> {
        self.insert_on(0, group, key, value)
    }

    /// Insert `key` → `value` as the newest entry of (`node`, `group`),
    /// its referenced bit clear, and return the value it replaces (as
    /// [`HashMap::insert`](std::collections::HashMap::insert) does; [`get_or_insert_with`] hands back the
    /// value in the cache instead). A replaced entry leaves its list: the
    /// new one is placed on (`node`, `group`), whatever group the old one
    /// was in.
    ///
    /// A [NUMA-unaware](crate::LruCacheBuilder::numa_aware) cache (the default)
    /// checks that `node` exists and places the entry on node 0.
    ///
    /// If `group` is being removed concurrently, the entry ends up in its
    /// parent (module doc, "Memory groups").
    ///
    /// [`get_or_insert_with`]: Self::get_or_insert_with
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock (exclusively) and, under it, the list's
    /// lock (and, on the first entry ever placed in a (group, node), the
    /// registry's groups mutex). Over the
    /// [capacity](crate::LruCacheBuilder::max_weight), then walks its own list as
    /// [`evict`](Self::evict) does, with no lock held on entry.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidNode`]; [`CacheError::NoSuchGroup`] if `group`
    /// does not exist (never created in this registry, or removed). Then
    /// nothing is inserted and `key` and `value` come back in the
    /// [`InsertError`].
    ///
    /// # Panics
    ///
    /// If the weigher panics; the cache is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").numa_aware(true).build_in(&reg)?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// cache.insert_on(1, g, 7, 70)?;
    /// assert_eq!(cache.group_len(g), 1);
    /// reg.remove_group(g)?;
    /// let err = cache.insert_on(1, g, 8, 80).unwrap_err();
    /// assert_eq!(err.kind(), CacheError::NoSuchGroup { group: g });
    /// assert_eq!(err.into_parts().2, 80, "the value comes back");
    /// assert_eq!(cache.get(&7).as_deref(), Some(&70), "moved to the root, still there");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_on(
        &self,
        node: usize,
        group: GroupId,
        key: K,
        value: V,
    ) -> Result<Option<Arc<V>>, InsertError<K, V>> {
        let home = match self.check(node, group) {
            Ok(home) => home,
            Err(kind) => return Err(InsertError { kind, key, value }),
        };
        // User code first, before any lock or change (module doc, "Panics").
        let weight = self.inner.weigh(&key, &value);
        let inner = &*self.inner;
        let Placed::New { old, referenced } =
            inner.place(home, group, key, Arc::new(value), weight, false)
        else {
            unreachable!("LruCache: a replacing insert never finds the key occupied")
        };
        let old = old.map(|old| {
            // After the shard lock: `None` if a walk isolated the old item
            // (its dispose will find another seq).
            drop(inner.lru.remove(old.lru));
            old.value
        });
        inner.enforce_limit(home, group, &referenced);
        Ok(old)
    }

    /// The value for `key`; if it has none, insert `f()` in `group` on
    /// node 0 and return that: [`get_or_insert_with_on`] with node 0.
    ///
    /// [`get_or_insert_with_on`]: Self::get_or_insert_with_on
    ///
    /// # Errors
    ///
    /// As [`get_or_insert_with_on`](Self::get_or_insert_with_on).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, String>::builder("c").build_in(&reg)?;
    /// let v = cache.get_or_insert_with(GroupId::ROOT, 1, || "computed".to_string())?;
    /// assert_eq!(*v, "computed");
    /// // Present now: `f` is not called.
    /// let v = cache.get_or_insert_with(GroupId::ROOT, 1, || unreachable!())?;
    /// assert_eq!(*v, "computed");
    /// assert_eq!((cache.stats().misses, cache.stats().hits), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock and a list lock, briefly; never waits for
    /// reclaim or for a grace period. `f` runs outside every lock.
    ///
    /// # Panics
    ///
    /// If `f` or the weigher panics (the cache is left unchanged).
    #[inline]
    pub fn get_or_insert_with(
        &self,
        group: GroupId,
        key: K,
        f: impl FnOnce() -> V,
    ) -> Result<Arc<V>, CacheError> {
        self.get_or_insert_with_on(0, group, key, f)
    }

    /// The value for `key`, as [`get`](Self::get) (a hit sets the entry's
    /// referenced bit); if it has none, compute `f()` and insert it as
    /// [`insert_on`](Self::insert_on) does, and return it.
    ///
    /// The protocol:
    ///
    /// 1. Look `key` up under the shard's read lock: a hit counts a hit and
    ///    returns, whatever group the entry is in; `f` is not called and
    ///    `node` and `group` are not checked.
    /// 2. A miss counts a miss; then `node` and `group` are checked (an
    ///    error returns before `f` is called).
    /// 3. With no lock held: call `f` once, and the weigher.
    /// 4. Take the shard's write lock. If another thread inserted `key`
    ///    since step 1, return *its* value, marked referenced, and drop the
    ///    one `f` computed after unlocking (it was never visible; nothing
    ///    else is counted). Else insert the computed value (counted as an
    ///    insert) and return it.
    ///
    /// So `f` runs at most once per call, but two threads that miss the
    /// same key at once may both run it; the first to reach step 4 wins and
    /// both get its value. (To run it once per key, serialise the misses
    /// yourself.) A `remove` or an eviction between steps 1 and 4 is not
    /// noticed: the computed value is inserted.
    ///
    /// # Blocking
    ///
    /// As [`get`](Self::get) on a hit; as [`insert_on`](Self::insert_on)
    /// on a miss, plus whatever `f` does (no lock of the cache is held).
    ///
    /// # Errors
    ///
    /// On a miss: [`CacheError::InvalidNode`], [`CacheError::NoSuchGroup`].
    /// Then `f` is not called and `key` is dropped.
    ///
    /// # Panics
    ///
    /// If `f` or the weigher panics; the cache is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(2).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").numa_aware(true).build_in(&reg)?;
    /// let v = cache.get_or_insert_with_on(1, GroupId::ROOT, 7, || 49)?;
    /// assert_eq!((*v, cache.evict(1, GroupId::ROOT, 1)?), (49, 1));
    /// assert_eq!(
    ///     cache.get_or_insert_with_on(2, GroupId::ROOT, 7, || unreachable!()),
    ///     Err(CacheError::InvalidNode { node: 2, nr_nodes: 2 })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_insert_with_on(
        &self,
        node: usize,
        group: GroupId,
        key: K,
        f: impl FnOnce() -> V,
    ) -> Result<Arc<V>, CacheError> {
        // 1.
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        // 2.
        let home = self.check(node, group)?;
        // 3. User code, no lock held (module doc, "Panics").
        let value = f();
        let weight = self.inner.weigh(&key, &value);
        let value = Arc::new(value);
        let inner = &*self.inner;
        // 4.
        match inner.place(home, group, key, Arc::clone(&value), weight, true) {
            Placed::New { old, referenced } => {
                debug_assert!(old.is_none(), "a vacant-only insert replaced an entry");
                inner.enforce_limit(home, group, &referenced);
                Ok(value)
            }
            Placed::Occupied { existing, unused } => {
                // Outside the shard lock.
                drop(unused);
                drop(value);
                Ok(existing)
            }
        }
    }

    /// Validate (node, group), set the shrinker's bit early (module doc,
    /// "Memory groups"), and return the node whose lists get the entry.
    fn check(&self, node: usize, group: GroupId) -> Result<usize, CacheError> {
        self.inner.check_node(node)?;
        let home = self.inner.home(node);
        match self.shrinker.set_bit(group, home) {
            Ok(()) => Ok(home),
            Err(ShrinkError::InvalidNode { node, nr_nodes }) => {
                Err(CacheError::InvalidNode { node, nr_nodes })
            }
            Err(ShrinkError::NoSuchGroup { group }) => Err(CacheError::NoSuchGroup { group }),
            // Our id is a registered group-aware shrinker's: covered by
            // every group's units since build.
            Err(e) => unreachable!("LruCache: setting a registered shrinker's bit failed: {e}"),
        }
    }

    /// The value for `key`, setting the entry's referenced bit: the next
    /// reclaim pass that reaches it clears the bit and spares it (module
    /// doc, "Recency").
    ///
    /// # Ordering
    ///
    /// The bit is set with Relaxed operations after the lookup; a reclaim
    /// pass running at the same moment may miss it (and evict the entry,
    /// which the caller's `Arc` keeps alive).
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock for reading, and no list lock. Waits only
    /// for a writer of the same shard (an insert, a remove, a dispose).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// cache.insert(GroupId::ROOT, 2, 20)?;
    /// assert_eq!(cache.get(&1).as_deref(), Some(&10)); // 1 is referenced now
    /// // A pass over two items: 1 gets a second chance, 2 is evicted.
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 2)?, 1);
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.inner.shard(key);
        let value = read(&shard.state).map.get(key).map(|e| {
            mark_referenced(&e.referenced);
            Arc::clone(&e.value)
        });
        bump(if value.is_some() {
            &shard.stats.hits
        } else {
            &shard.stats.misses
        });
        value
    }

    /// The value for `key`, without setting the entry's referenced bit or
    /// counting a hit or miss.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// cache.insert(GroupId::ROOT, 2, 20)?;
    /// assert_eq!(cache.peek(&1).as_deref(), Some(&10)); // not referenced
    /// assert_eq!(cache.evict(0, GroupId::ROOT, 1)?, 1);
    /// assert!(!cache.contains_key(&1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock for reading.
    #[must_use]
    pub fn peek<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(&self.inner.shard(key).state)
            .map
            .get(key)
            .map(|e| Arc::clone(&e.value))
    }

    /// Remove `key`'s entry and return its value.
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock (exclusively), then, after dropping it,
    /// the entry's list lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, 10)?;
    /// assert_eq!(cache.remove(&1).as_deref(), Some(&10));
    /// assert_eq!(cache.remove(&1), None);
    /// assert_eq!(cache.group_len(GroupId::ROOT), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.inner.shard(key);
        let (k, e) = {
            let mut st = write(&shard.state);
            let (k, e) = st.map.remove_entry(key)?;
            st.weight = st.weight.wrapping_sub(e.weight);
            (k, e)
        };
        bump(&shard.stats.removed);
        self.inner.account(0, e.weight);
        // After the shard lock: `None` if a walk isolated the item (its
        // dispose will find no entry).
        drop(self.inner.lru.remove(e.lru));
        drop(k);
        Some(e.value)
    }

    /// Whether `key` has an entry (without setting its referenced bit).
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, ()>::builder("c").build_in(&reg)?;
    /// cache.insert(GroupId::ROOT, 1, ())?;
    /// assert!(cache.contains_key(&1) && !cache.contains_key(&2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// Takes the key's shard lock for reading.
    #[must_use]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(&self.inner.shard(key).state).map.contains_key(key)
    }
}
