//! The LRU structures built on the registry: [`ListLru`](list_lru::ListLru)
//! (per-(node, group) lists that reparent, the kernel's `list_lru`) and
//! [`LruCache`](lru_cache::LruCache) (a keyed cache with its own shrinker).
//! They use the registry only through its public face.

pub mod list_lru;
pub mod lru_cache;
