//! The objects a walk of the heap counts references to, found by address:
//! an open-addressing table of 4-byte indices into the list of objects (a
//! hash map of address and index took 17 bytes a slot). A check of a
//! million followed objects runs in a copy of the process, whose peak
//! memory is what the check costs.

/// A free slot.
const EMPTY: u32 = u32::MAX;

pub struct Chosen {
    objects: Vec<usize>,
    /// Indices into `objects`; a power of two, at least twice as many, so
    /// that most addresses that are not chosen meet a free slot at once.
    slots: Vec<u32>,
}

/// Objects are 16-byte aligned: the granule, spread over the table.
fn home(object: usize, slots: usize) -> usize {
    ((object >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) & (slots - 1)
}

impl Chosen {
    /// Indexes `objects` (distinct addresses; fewer than `u32::MAX`).
    pub fn new(objects: Vec<usize>) -> Chosen {
        let n = (objects.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![EMPTY; n];
        for (i, &object) in objects.iter().enumerate() {
            let mut at = home(object, n);
            while slots[at] != EMPTY {
                at = (at + 1) & (n - 1);
            }
            slots[at] = i as u32;
        }
        Chosen { objects, slots }
    }

    /// The index of `object`, if it is chosen.
    #[inline]
    pub fn get(&self, object: usize) -> Option<usize> {
        let n = self.slots.len();
        let mut at = home(object, n);
        loop {
            let i = self.slots[at];
            if i == EMPTY {
                return None;
            }
            if self.objects[i as usize] == object {
                return Some(i as usize);
            }
            at = (at + 1) & (n - 1);
        }
    }

    #[inline]
    pub fn contains(&self, object: usize) -> bool {
        self.get(object).is_some()
    }

    /// The chosen objects, in index order.
    pub fn objects(&self) -> &[usize] {
        &self.objects
    }

    /// The objects back, the index dropped.
    pub fn into_objects(self) -> Vec<usize> {
        self.objects
    }
}

#[cfg(test)]
mod tests {
    use super::Chosen;

    #[test]
    fn finds_each_chosen_object_and_nothing_else() {
        // Neighbouring objects, as a pool holds them, and scattered ones.
        let objects: Vec<usize> =
            (0..5000).map(|i| 0x7f00_0000_0000 + 32 * i).chain([0x1000, 0x5555_0010]).collect();
        let chosen = Chosen::new(objects.clone());
        for (i, &object) in objects.iter().enumerate() {
            assert_eq!(chosen.get(object), Some(i));
        }
        for other in [0x7f00_0000_0000 + 16, 0x7f00_0000_0000 + 32 * 5000, 0x2000, 0] {
            assert!(!chosen.contains(other), "{other:#x}");
        }
        assert_eq!(chosen.into_objects(), objects);
    }
}
