//! A hash map that is a plain vector while it holds a few entries.
//!
//! Most rooms have one or two subscribers on an edge and most connections one or two rooms,
//! but a `HashMap` allocates four slots plus control bytes for its first entry (≈ 250 bytes
//! for a room's subscriber). One entry is kept inline (no allocation at all); a few are a
//! vector holding exactly what it has, searched linearly; past [`PROMOTE`] entries the map
//! becomes a `HashMap` (and goes back below [`DEMOTE`]), so a room with 100,000 subscribers
//! still adds and removes one in constant time.

use std::collections::HashMap;
use std::collections::hash_map;
use std::hash::Hash;
use std::slice;

/// Entries above which the map is a `HashMap`.
const PROMOTE: usize = 16;
/// Entries below which a `HashMap` goes back to a vector.
const DEMOTE: usize = 4;

/// See the module docs.
#[derive(Debug)]
pub(crate) enum SmallMap<K, V> {
    /// Exactly one entry.
    One(K, V),
    /// None, or two up to [`PROMOTE`]: unordered, no duplicate keys.
    Few(Vec<(K, V)>),
    /// More than [`DEMOTE`] entries.
    Many(HashMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::One(k, old) if *k == key => Some(std::mem::replace(old, value)),
            SmallMap::One(..) => {
                let SmallMap::One(k, v) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                let mut few = Vec::with_capacity(2);
                few.extend([(k, v), (key, value)]);
                *self = SmallMap::Few(few);
                None
            }
            SmallMap::Few(v) if v.is_empty() => {
                *self = SmallMap::One(key, value);
                None
            }
            SmallMap::Few(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if v.len() >= PROMOTE {
                    let mut map: HashMap<K, V> = std::mem::take(v).into_iter().collect();
                    map.insert(key, value);
                    *self = SmallMap::Many(map);
                } else {
                    // Grown one slot at a time: a `Vec` would otherwise start at four.
                    v.reserve_exact(1);
                    v.push((key, value));
                }
                None
            }
            SmallMap::Many(m) => m.insert(key, value),
        }
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            SmallMap::One(k, _) if k == key => match std::mem::take(self) {
                SmallMap::One(_, value) => Some(value),
                _ => unreachable!("matched One above"),
            },
            SmallMap::One(..) => None,
            SmallMap::Few(v) => {
                let i = v.iter().position(|(k, _)| k == key)?;
                let (_, value) = v.swap_remove(i);
                if v.len() == 1 {
                    if let Some((k, last)) = v.pop() {
                        *self = SmallMap::One(k, last);
                    }
                } else if v.capacity() > 2 * v.len() {
                    v.shrink_to_fit();
                }
                Some(value)
            }
            SmallMap::Many(m) => {
                let value = m.remove(key)?;
                if m.len() < DEMOTE {
                    let mut few: Vec<(K, V)> = Vec::with_capacity(m.len());
                    few.extend(m.drain());
                    *self = SmallMap::Few(few);
                }
                Some(value)
            }
        }
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self {
            SmallMap::One(k, v) => (k == key).then_some(v),
            SmallMap::Few(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            SmallMap::Many(m) => m.get(key),
        }
    }

    /// The value of `key`, to change.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            SmallMap::One(k, v) => (k == key).then_some(v),
            SmallMap::Few(v) => v.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            SmallMap::Many(m) => m.get_mut(key),
        }
    }

    /// Whether `key` has a value.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Removes every entry, returning them.
    pub(crate) fn take_all(&mut self) -> Vec<(K, V)> {
        match std::mem::take(self) {
            SmallMap::One(k, v) => vec![(k, v)],
            SmallMap::Few(v) => v,
            SmallMap::Many(m) => m.into_iter().collect(),
        }
    }
}

impl<K, V> SmallMap<K, V> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::One(..) => 1,
            SmallMap::Few(v) => v.len(),
            SmallMap::Many(m) => m.len(),
        }
    }

    /// Whether there are no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        match self {
            SmallMap::One(k, v) => Iter::One(Some((k, v))),
            SmallMap::Few(v) => Iter::Few(v.iter()),
            SmallMap::Many(m) => Iter::Many(m.iter()),
        }
    }

    /// The values, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// The values, to change, in no particular order.
    pub(crate) fn values_mut(&mut self) -> ValuesMut<'_, K, V> {
        match self {
            SmallMap::One(_, v) => ValuesMut::One(Some(v)),
            SmallMap::Few(v) => ValuesMut::Few(v.iter_mut()),
            SmallMap::Many(m) => ValuesMut::Many(m.values_mut()),
        }
    }
}

/// Iterator over a [`SmallMap`]'s entries.
pub(crate) enum Iter<'a, K, V> {
    One(Option<(&'a K, &'a V)>),
    Few(slice::Iter<'a, (K, V)>),
    Many(hash_map::Iter<'a, K, V>),
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::One(one) => one.take(),
            Iter::Few(it) => it.next().map(|(k, v)| (k, v)),
            Iter::Many(it) => it.next(),
        }
    }
}

/// Iterator over a [`SmallMap`]'s values, to change them.
pub(crate) enum ValuesMut<'a, K, V> {
    One(Option<&'a mut V>),
    Few(slice::IterMut<'a, (K, V)>),
    Many(hash_map::ValuesMut<'a, K, V>),
}

impl<'a, K, V> Iterator for ValuesMut<'a, K, V> {
    type Item = &'a mut V;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ValuesMut::One(one) => one.take(),
            ValuesMut::Few(it) => it.next().map(|(_, v)| v),
            ValuesMut::Many(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_hash_map_and_back_keeping_every_entry() {
        let mut map = SmallMap::default();
        for i in 0..40u64 {
            assert_eq!(map.insert(i, i * 10), None);
            assert_eq!(map.len(), i as usize + 1);
        }
        assert!(matches!(map, SmallMap::Many(_)));
        assert_eq!(
            map.insert(7, 71),
            Some(70),
            "replacing returns the old value"
        );
        for i in (0..40u64).filter(|i| *i != 7) {
            assert_eq!(map.remove(&i), Some(i * 10));
        }
        assert!(
            matches!(map, SmallMap::One(7, 71)),
            "one entry left is inline"
        );
        assert_eq!(map.get(&7), Some(&71));
        assert_eq!(map.remove(&8), None);
        assert_eq!(map.remove(&7), Some(71));
        assert!(map.is_empty());
        assert!(matches!(&map, SmallMap::Few(v) if v.capacity() == 0));
        assert_eq!(map.remove(&7), None);
    }

    #[test]
    fn a_few_entries_take_exactly_their_room() {
        let mut map = SmallMap::default();
        map.insert("a", 1);
        assert!(matches!(map, SmallMap::One("a", 1)), "one entry is inline");
        assert_eq!(map.insert("a", 0), Some(1));
        assert_eq!(map.iter().collect::<Vec<_>>(), [(&"a", &0)]);
        *map.get_mut(&"a").unwrap() = 1;
        map.insert("b", 2);
        let SmallMap::Few(v) = &map else {
            panic!("two entries are a vector")
        };
        assert_eq!(v.capacity(), 2);
        map.insert("c", 5);
        assert_eq!(map.remove(&"c"), Some(5));
        *map.get_mut(&"b").unwrap() += 1;
        let mut all: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort();
        assert_eq!(all, [("a", 1), ("b", 3)]);
        for v in map.values_mut() {
            *v *= 2;
        }
        let mut values: Vec<_> = map.values().copied().collect();
        values.sort();
        assert_eq!(values, [2, 6]);
        assert_eq!(map.take_all().len(), 2);
        assert!(map.is_empty());
    }
}
