//! What an [`LruCache`](super::LruCache) operation refuses: [`CacheError`], [`InsertError`].

use std::fmt;

use crate::GroupId;

/// An [`LruCache`](crate::LruCache) operation named a node or a group that does not exist;
/// nothing was changed.
///
/// # Examples
///
/// ```
/// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
/// let err = cache.evict(3, GroupId::ROOT, 1).unwrap_err();
/// assert_eq!(err, CacheError::InvalidNode { node: 3, nr_nodes: 1 });
/// assert_eq!(err.to_string(), "node 3 does not exist (the registry has 1)");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// The node does not exist in the cache's registry.
    #[error("node {node} does not exist (the registry has {nr_nodes})")]
    InvalidNode {
        /// The node asked for (to insert on, or to evict from).
        node: usize,
        /// The node count of the cache's registry.
        nr_nodes: usize,
    },
    /// The memory group does not exist in the cache's registry (never
    /// created there, or removed).
    #[error("memory group {} does not exist", group.index())]
    NoSuchGroup {
        /// The group asked for.
        group: GroupId,
    },
}

/// An insert was refused ([`LruCache::insert`](crate::LruCache::insert), [`LruCache::insert_on`](crate::LruCache::insert_on)):
/// why, and the key and value, handed back unchanged.
///
/// Its `Debug` and `Display` show only the [`CacheError`], so it is an
/// [`Error`](std::error::Error) for any `K` and `V` (and converts into a
/// `Box<dyn Error>` with `?`); [`From`] turns it into the bare
/// [`CacheError`], dropping the key and value.
///
/// # Examples
///
/// ```
/// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
/// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
/// let cache = LruCache::<u32, String>::builder("c").build_in(&reg)?;
/// let err = cache.insert_on(3, GroupId::ROOT, 1, "one".to_string()).unwrap_err();
/// assert_eq!(err.kind(), CacheError::InvalidNode { node: 3, nr_nodes: 1 });
/// assert_eq!(err.to_string(), "node 3 does not exist (the registry has 1)");
/// // Nothing is lost: retry on node 0.
/// let (_, key, value) = err.into_parts();
/// cache.insert(GroupId::ROOT, key, value)?;
/// assert_eq!(cache.get(&1).as_deref().map(String::as_str), Some("one"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct InsertError<K, V> {
    pub(super) kind: CacheError,
    pub(super) key: K,
    pub(super) value: V,
}

impl<K, V> InsertError<K, V> {
    /// Why the insert was refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let g = reg.create_group(GroupId::ROOT)?;
    /// reg.remove_group(g)?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let err = cache.insert(g, 1, 10).unwrap_err();
    /// assert_eq!(err.kind(), CacheError::NoSuchGroup { group: g });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn kind(&self) -> CacheError {
        self.kind
    }

    /// The key that was not inserted.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let err = cache.insert_on(9, GroupId::ROOT, 1, 10).unwrap_err();
    /// assert_eq!(*err.key(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The value that was not inserted.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, u32>::builder("c").build_in(&reg)?;
    /// let err = cache.insert_on(9, GroupId::ROOT, 1, 10).unwrap_err();
    /// assert_eq!(*err.value(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn value(&self) -> &V {
        &self.value
    }

    /// Why, the key and the value, by value.
    ///
    /// # Examples
    ///
    /// ```
    /// use shrinker::{CacheError, GroupId, LruCache, ShrinkerRegistry};
    /// let reg = ShrinkerRegistry::builder().nodes(1).build()?;
    /// let cache = LruCache::<u32, Vec<u8>>::builder("c").build_in(&reg)?;
    /// let err = cache.insert_on(9, GroupId::ROOT, 1, vec![1, 2]).unwrap_err();
    /// let (kind, key, value) = err.into_parts();
    /// assert_eq!(kind, CacheError::InvalidNode { node: 9, nr_nodes: 1 });
    /// assert_eq!((key, value), (1, vec![1, 2]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn into_parts(self) -> (CacheError, K, V) {
        (self.kind, self.key, self.value)
    }
}

impl<K, V> fmt::Debug for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<K, V> fmt::Display for InsertError<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl<K, V> std::error::Error for InsertError<K, V> {}

impl<K, V> From<InsertError<K, V>> for CacheError {
    fn from(e: InsertError<K, V>) -> Self {
        e.kind
    }
}
