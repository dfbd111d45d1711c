//! Named entries in insertion order with lookups by name: what a module keeps its parameters,
//! buffers, children and pruning hooks in.
//!
//! PyTorch's modules keep `OrderedDict`s: `state_dict` follows insertion order, a pruned
//! `weight` leaves its place and `weight_orig` joins at the end. Checkpoints of large models
//! put tens of thousands of tensors in one module, so every operation here (lookup, append,
//! removal from the middle) must stay far below linear: entries carry an increasing sequence
//! number, ordered in a B-tree, and names map to it. Checkpoints with many small modules hold
//! hundreds of thousands of these maps, mostly of one or two entries: those are searched by a
//! scan, and the index by name is only built once a map grows past [`INDEXED_FROM`] entries.

use std::collections::{BTreeMap, HashMap};

/// Maps of more entries than this keep an index by name; smaller ones are scanned.
pub(crate) const INDEXED_FROM: usize = 16;

/// Entries by name, in insertion order.
#[derive(Clone)]
pub(crate) struct Ordered<T> {
    entries: BTreeMap<u64, (String, T)>,
    /// Each entry's sequence number by name, once there are more than [`INDEXED_FROM`].
    index: Option<HashMap<String, u64>>,
    next: u64,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            index: None,
            next: 0,
        }
    }
}

impl<T> Ordered<T> {
    /// The sequence number of the entry `name`.
    fn seq(&self, name: &str) -> Option<u64> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => (self.entries.iter())
                .find(|(_, (entry, _))| entry == name)
                .map(|(&seq, _)| seq),
        }
    }

    /// The entry `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&T> {
        self.seq(name).map(|seq| &self.entries[&seq].1)
    }

    /// The entry `name`, mutably.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        let seq = self.seq(name)?;
        self.entries.get_mut(&seq).map(|(_, value)| value)
    }

    /// Whether there is an entry `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.seq(name).is_some()
    }

    /// Appends `value` as `name`, which must not be taken.
    pub(crate) fn push(&mut self, name: String, value: T) {
        debug_assert!(!self.contains(&name), "{name} is taken");
        let seq = self.next;
        self.next += 1;
        match &mut self.index {
            Some(index) => {
                index.insert(name.clone(), seq);
            }
            None if self.entries.len() >= INDEXED_FROM => {
                let mut index: HashMap<String, u64> = (self.entries.iter())
                    .map(|(&seq, (entry, _))| (entry.clone(), seq))
                    .collect();
                index.insert(name.clone(), seq);
                self.index = Some(index);
            }
            None => {}
        }
        self.entries.insert(seq, (name, value));
    }

    /// Removes the entry `name` and returns it.
    pub(crate) fn remove(&mut self, name: &str) -> Option<T> {
        let seq = self.seq(name)?;
        if let Some(index) = &mut self.index {
            index.remove(name);
        }
        self.entries.remove(&seq).map(|(_, value)| value)
    }

    /// Moves the entry `name` to the end.
    pub(crate) fn move_to_end(&mut self, name: &str) {
        if let Some(value) = self.remove(name) {
            self.push(name.to_owned(), value);
        }
    }

    /// The entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries
            .values()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// The entries in order, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut T)> {
        self.entries
            .values_mut()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// The values in order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|(_, value)| value)
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Ordered;

    #[test]
    fn keeps_insertion_order_through_removals_and_moves() {
        let mut entries = Ordered::default();
        for (name, value) in [("a", 1), ("b", 2), ("c", 3)] {
            entries.push(name.to_owned(), value);
        }
        assert_eq!(entries.remove("a"), Some(1));
        entries.push("a_orig".to_owned(), 1);
        entries.move_to_end("b");
        let order: Vec<(&str, &i32)> = entries.iter().collect();
        assert_eq!(order, [("c", &3), ("a_orig", &1), ("b", &2)]);
        assert_eq!(entries.get("a_orig"), Some(&1));
        assert!(!entries.contains("a"));
        assert_eq!(entries.iter().count(), 3);
    }

    #[test]
    fn large_maps_find_every_entry_through_their_index_as_small_ones_do() {
        let mut entries = Ordered::default();
        let count = 3 * super::INDEXED_FROM;
        for i in 0..count {
            entries.push(format!("t{i}"), i);
            for j in 0..=i {
                assert_eq!(entries.get(&format!("t{j}")), Some(&j), "after {i} pushes");
            }
            assert!(!entries.contains(&format!("t{}", i + 1)));
        }
        assert!(entries.index.is_some());
        for i in (0..count).step_by(3) {
            assert_eq!(entries.remove(&format!("t{i}")), Some(i));
        }
        entries.move_to_end("t1");
        *entries.get_mut("t2").expect("kept") += 100;
        for i in 0..count {
            let expected = match i % 3 {
                0 => None,
                2 if i == 2 => Some(102),
                _ => Some(i),
            };
            assert_eq!(entries.get(&format!("t{i}")).copied(), expected, "t{i}");
        }
        let order: Vec<&str> = entries.iter().map(|(name, _)| name).collect();
        assert_eq!(order.first(), Some(&"t2"));
        assert_eq!(order.last(), Some(&"t1"));
        assert_eq!(order.len(), count - count / 3);
    }
}
