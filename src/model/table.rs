//! Handles and the tables that hold device objects.
//!
//! A handle is 64 bits: the low 32 are a slot index, the high 32 the slot's
//! generation when the handle was issued (never 0, so handle 0 is never
//! valid). A slot's generation moves on every time it is freed, so a stale
//! handle can never name the slot's next occupant: keys are not reused while
//! anything may still refer to them.
//!
//! Tables are published RCU-style (docs/design.md §6): readers load an immutable
//! snapshot (`arc_swap`) and never take the writers' lock; writers serialise
//! on the device's writer lock, build the next snapshot from the current one
//! (`imbl` maps share structure, so that is O(log n)) and publish it. An
//! object removed from a table stays alive while a reader holds its `Arc`;
//! it is never put back, so a lookup racing a destroy cannot resurrect it.

use std::sync::Arc;

use arc_swap::ArcSwap;

pub type Handle = u64;

fn split(h: Handle) -> (u32, u32) {
    (h as u32, (h >> 32) as u32)
}

fn join(index: u32, generation: u32) -> Handle {
    (u64::from(generation) << 32) | u64::from(index)
}

/// What a handle that is not live refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    /// Never issued (index or generation beyond anything handed out).
    Unknown,
    /// Issued once; the object is gone.
    Stale,
}

/// Hands out handles; writer side only.
#[derive(Debug)]
pub struct Slots {
    /// Current generation of each slot (odd: in use; even: free).
    generations: Vec<u32>,
    free: Vec<u32>,
    live: usize,
    limit: usize,
}

impl Slots {
    pub fn new(limit: usize) -> Self {
        Slots {
            generations: Vec::new(),
            free: Vec::new(),
            live: 0,
            limit,
        }
    }

    pub fn live(&self) -> usize {
        self.live
    }

    /// A new handle, or None when `limit` objects are live.
    pub fn alloc(&mut self) -> Option<Handle> {
        if self.live >= self.limit {
            return None;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.generations.len()).ok()?;
                self.generations.push(0);
                i
            }
        };
        let g = &mut self.generations[index as usize];
        // Odd generations are live ones; wrapping skips 0 so no handle is 0.
        *g = g.wrapping_add(1);
        if *g == 0 {
            *g = 1;
        }
        self.live += 1;
        Some(join(index, *g))
    }

    /// Frees a live handle; a dead one is left alone (returns false).
    pub fn free(&mut self, h: Handle) -> bool {
        if self.check(h).is_err() {
            return false;
        }
        let (index, _) = split(h);
        let g = &mut self.generations[index as usize];
        *g = g.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        true
    }

    /// Ok when `h` is live; otherwise whether it was ever issued.
    pub fn check(&self, h: Handle) -> Result<(), Dead> {
        let (index, generation) = split(h);
        let Some(&current) = self.generations.get(index as usize) else {
            return Err(Dead::Unknown);
        };
        if generation == 0 || generation > current {
            return Err(Dead::Unknown);
        }
        if generation == current && current % 2 == 1 {
            Ok(())
        } else {
            Err(Dead::Stale)
        }
    }
}

/// A handle-keyed table with lock-free readers.
pub struct Table<V> {
    map: ArcSwap<imbl::HashMap<Handle, Arc<V>>>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            map: ArcSwap::from_pointee(imbl::HashMap::new()),
        }
    }
}

impl<V> Table<V> {
    /// Reader: the object behind `h`, if it is in the table now.
    pub fn get(&self, h: Handle) -> Option<Arc<V>> {
        self.map.load().get(&h).cloned()
    }

    /// Reader: a consistent snapshot of the whole table.
    pub fn snapshot(&self) -> Arc<imbl::HashMap<Handle, Arc<V>>> {
        self.map.load_full()
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writer (caller holds the device's writer lock).
    pub fn insert(&self, h: Handle, v: Arc<V>) {
        let mut next = (**self.map.load()).clone();
        next.insert(h, v);
        self.map.store(Arc::new(next));
    }

    /// Writer (caller holds the device's writer lock).
    pub fn remove(&self, h: Handle) -> Option<Arc<V>> {
        let mut next = (**self.map.load()).clone();
        let v = next.remove(&h);
        if v.is_some() {
            self.map.store(Arc::new(next));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_never_zero_and_never_reused_for_a_new_object() {
        let mut s = Slots::new(2);
        let a = s.alloc().unwrap();
        assert_ne!(a, 0);
        assert!(s.free(a));
        let b = s.alloc().unwrap();
        assert_eq!(a as u32, b as u32, "slot is recycled");
        assert_ne!(a, b, "but the handle is not");
        assert_eq!(s.check(a), Err(Dead::Stale));
        assert_eq!(s.check(b), Ok(()));
        assert!(!s.free(a), "freeing a stale handle does nothing");
        assert_eq!(s.check(b), Ok(()));
    }

    #[test]
    fn forged_handles_are_unknown_and_limit_is_enforced() {
        let mut s = Slots::new(1);
        let a = s.alloc().unwrap();
        assert_eq!(s.check(0), Err(Dead::Unknown));
        assert_eq!(
            s.check(a + (2u64 << 32)),
            Err(Dead::Unknown),
            "future generation"
        );
        assert_eq!(s.check(a + 1), Err(Dead::Unknown), "index never used");
        assert_eq!(s.alloc(), None, "limit of 1 live object");
        s.free(a);
        assert!(s.alloc().is_some());
        assert_eq!(s.live(), 1);
    }

    #[test]
    fn reader_snapshot_survives_removal_and_removal_is_final() {
        let t: Table<u32> = Table::default();
        t.insert(7, Arc::new(1));
        let snap = t.snapshot();
        let held = t.get(7).unwrap();
        assert!(t.remove(7).is_some());
        assert_eq!(snap.get(&7).map(|v| **v), Some(1), "old snapshot unchanged");
        assert_eq!(*held, 1, "reader's Arc keeps the object alive");
        assert!(t.get(7).is_none());
        assert!(t.remove(7).is_none());
    }
}
