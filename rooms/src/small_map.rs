//! An ordered map that is a sorted `Vec` while small and a `BTreeMap` once large.
//!
//! Most rooms have a handful of members and most users a handful of connections, but a
//! `BTreeMap` allocates a whole node (eleven slots) for its first entry: a one-member room cost
//! more than a kilobyte of presence. A sorted vector holds exactly what it has; past
//! [`PROMOTE`] entries the map becomes a `BTreeMap`, so inserting into a large room stays
//! logarithmic (and it goes back below [`DEMOTE`]). Serialized as a plain map, so snapshots
//! read the same either way.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Entries above which the map is a `BTreeMap`.
const PROMOTE: usize = 32;
/// Entries below which a `BTreeMap` goes back to a vector.
const DEMOTE: usize = 8;

/// See the module docs.
#[derive(Clone)]
pub(crate) enum SmallMap<K, V> {
    /// Sorted by key, no duplicates.
    Small(Vec<(K, V)>),
    /// More than [`DEMOTE`] entries.
    Large(BTreeMap<K, V>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Small(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            SmallMap::Small(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
                Err(i) => {
                    // Grown one slot at a time: a `Vec` would otherwise start at four.
                    v.reserve_exact(1);
                    v.insert(i, (key, value));
                    if v.len() > PROMOTE {
                        *self = SmallMap::Large(std::mem::take(v).into_iter().collect());
                    }
                    None
                }
            },
            SmallMap::Large(m) => m.insert(key, value),
        }
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            SmallMap::Small(v) => {
                let i = v.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                let (_, value) = v.remove(i);
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(value)
            }
            SmallMap::Large(m) => {
                let value = m.remove(key)?;
                if m.len() < DEMOTE {
                    *self = SmallMap::Small(std::mem::take(m).into_iter().collect());
                }
                Some(value)
            }
        }
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self {
            SmallMap::Small(v) => v
                .binary_search_by(|(k, _)| k.cmp(key))
                .ok()
                .map(|i| &v[i].1),
            SmallMap::Large(m) => m.get(key),
        }
    }

    /// The value of `key`, mutably.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            SmallMap::Small(v) => v
                .binary_search_by(|(k, _)| k.cmp(key))
                .ok()
                .map(|i| &mut v[i].1),
            SmallMap::Large(m) => m.get_mut(key),
        }
    }

    /// The value of `key`, inserted as `V::default()` if absent.
    pub(crate) fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        if let SmallMap::Small(v) = self
            && v.len() >= PROMOTE
            && v.binary_search_by(|(k, _)| k.cmp(&key)).is_err()
        {
            *self = SmallMap::Large(std::mem::take(v).into_iter().collect());
        }
        match self {
            SmallMap::Small(v) => {
                let i = match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(i) => i,
                    Err(i) => {
                        v.reserve_exact(1);
                        v.insert(i, (key, V::default()));
                        i
                    }
                };
                &mut v[i].1
            }
            SmallMap::Large(m) => m.entry(key).or_default(),
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::Small(v) => v.len(),
            SmallMap::Large(m) => m.len(),
        }
    }

    /// Whether there are no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in key order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        match self {
            SmallMap::Small(v) => Box::new(v.iter().map(|(k, v)| (k, v))),
            SmallMap::Large(m) => Box::new(m.iter()),
        }
    }

    /// Entries after `after` (all if `None`) in key order: costs what is read, not the map.
    pub(crate) fn after(&self, after: Option<&K>) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        use std::ops::Bound;
        match self {
            SmallMap::Small(v) => {
                let start = after.map_or(0, |a| v.partition_point(|(k, _)| k <= a));
                Box::new(v[start..].iter().map(|(k, v)| (k, v)))
            }
            SmallMap::Large(m) => {
                let from = after.map_or(Bound::Unbounded, Bound::Excluded);
                Box::new(m.range((from, Bound::Unbounded)))
            }
        }
    }
}

impl<K: Ord, V: PartialEq> PartialEq for SmallMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<K: fmt::Debug + Ord, V: fmt::Debug> fmt::Debug for SmallMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for SmallMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = SmallMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = SmallMap::default();
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map behaves as a `BTreeMap` through promotion and demotion, and serializes as one.
    #[test]
    fn agrees_with_a_btreemap_across_sizes() {
        let mut small = SmallMap::default();
        let mut model = BTreeMap::new();
        // A fixed pseudo-random walk that grows past PROMOTE, shrinks below DEMOTE and regrows.
        let mut x: u64 = 7;
        for step in 0..4000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 80;
            let grow = (step / 500) % 2 == 0;
            // Two in three steps insert while growing, one in three while shrinking.
            let mostly = !(x >> 20).is_multiple_of(3);
            if mostly == grow {
                assert_eq!(small.insert(key, step), model.insert(key, step));
            } else {
                assert_eq!(small.remove(&key), model.remove(&key));
            }
            *small.get_or_default(key + 100) += 1;
            *model.entry(key + 100).or_default() += 1;
            assert_eq!(small.len(), model.len());
            assert_eq!(small.get(&key), model.get(&key));
            let after = key;
            assert!(small.after(Some(&after)).eq(model.range(after + 1..)));
            if step.is_multiple_of(97) {
                assert!(small.iter().eq(model.iter()));
                let json = serde_json::to_string(&small).unwrap();
                assert_eq!(json, serde_json::to_string(&model).unwrap());
                let back: SmallMap<u64, u64> = serde_json::from_str(&json).unwrap();
                assert_eq!(back, small);
            }
        }
    }
}
