//! Named entries in insertion order with lookups by name: what a module keeps its parameters,
//! buffers, children and pruning hooks in.
//!
//! PyTorch's modules keep `OrderedDict`s: `state_dict` follows insertion order, a pruned
//! `weight` leaves its place and `weight_orig` joins at the end. Checkpoints of large models
//! put tens of thousands of tensors in one module, so every operation here (lookup, append,
//! removal from the middle) must stay far below linear: entries carry an increasing sequence
//! number, ordered in a B-tree, and names map to it.

use std::collections::{BTreeMap, HashMap};

/// Entries by name, in insertion order.
#[derive(Clone)]
pub(crate) struct Ordered<T> {
    entries: BTreeMap<u64, (String, T)>,
    index: HashMap<String, u64>,
    next: u64,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            index: HashMap::new(),
            next: 0,
        }
    }
}

impl<T> Ordered<T> {
    /// The entry `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&T> {
        self.index.get(name).map(|seq| &self.entries[seq].1)
    }

    /// The entry `name`, mutably.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        let seq = self.index.get(name)?;
        self.entries.get_mut(seq).map(|(_, value)| value)
    }

    /// Whether there is an entry `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Appends `value` as `name`, which must not be taken.
    pub(crate) fn push(&mut self, name: String, value: T) {
        debug_assert!(!self.index.contains_key(&name), "{name} is taken");
        let seq = self.next;
        self.next += 1;
        self.index.insert(name.clone(), seq);
        self.entries.insert(seq, (name, value));
    }

    /// Removes the entry `name` and returns it.
    pub(crate) fn remove(&mut self, name: &str) -> Option<T> {
        let seq = self.index.remove(name)?;
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
}
