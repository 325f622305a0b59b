//! The engine's waiting room: requests wait per submitter and are taken round-robin, so one
//! optimization loop with a thousand queued evaluations cannot starve another.

use std::collections::{BTreeMap, VecDeque};

/// Round-robin over groups, FIFO within a group.
pub(super) struct FairQueue<T> {
    groups: BTreeMap<u64, VecDeque<T>>,
    /// The group served last; the next pop starts after it.
    last: Option<u64>,
    len: usize,
}

impl<T> FairQueue<T> {
    pub(super) fn new() -> Self {
        FairQueue {
            groups: BTreeMap::new(),
            last: None,
            len: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn push(&mut self, group: u64, item: T) {
        self.groups.entry(group).or_default().push_back(item);
        self.len += 1;
    }

    /// The group whose turn it is.
    fn next_group(&self) -> Option<u64> {
        let after = self
            .last
            .and_then(|last| self.groups.range(last + 1..).next().map(|(g, _)| *g));
        after.or_else(|| self.groups.keys().next().copied())
    }

    /// The item that would be popped next.
    pub(super) fn peek(&self) -> Option<&T> {
        self.next_group()
            .and_then(|g| self.groups.get(&g))
            .and_then(|q| q.front())
    }

    pub(super) fn pop(&mut self) -> Option<T> {
        let group = self.next_group()?;
        let queue = self.groups.get_mut(&group)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.groups.remove(&group);
        }
        self.last = Some(group);
        self.len -= usize::from(item.is_some());
        item
    }

    /// Drops every item for which `keep` is false.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for queue in self.groups.values_mut() {
            queue.retain(&mut keep);
        }
        self.groups.retain(|_, q| !q.is_empty());
        self.len = self.groups.values().map(VecDeque::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_take_turns() {
        let mut q = FairQueue::new();
        for i in 0..4 {
            q.push(1, format!("a{i}"));
        }
        q.push(2, "b0".to_string());
        q.push(2, "b1".to_string());
        q.push(7, "c0".to_string());
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn retain_and_peek() {
        let mut q = FairQueue::new();
        q.push(1, 1);
        q.push(1, 2);
        q.push(2, 3);
        q.retain(|x| *x != 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.peek(), Some(&2));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), None);
    }
}
