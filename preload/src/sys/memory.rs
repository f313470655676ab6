//! Which addresses can be read: followed objects whose free went unseen may
//! point into memory the allocator has since given back to the system.

use std::ops::Range;

/// The readable mappings of this process, sorted, from `/proc/self/maps`.
pub struct Readable(Vec<Range<usize>>);

impl Readable {
    pub fn now() -> Readable {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut ranges: Vec<Range<usize>> = maps
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (range, perms) = (fields.next()?, fields.next()?);
                if !perms.starts_with('r') {
                    return None;
                }
                let (start, end) = range.split_once('-')?;
                Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        Readable(ranges)
    }

    /// True when `len` bytes at `address` are all in one readable mapping.
    pub fn contains(&self, address: usize, len: usize) -> bool {
        let i = self.0.partition_point(|r| r.start <= address);
        i > 0 && self.0[i - 1].contains(&address) && address + len <= self.0[i - 1].end
    }

    /// The readable parts of `range`.
    pub fn within(&self, range: &Range<usize>) -> Vec<Range<usize>> {
        self.0
            .iter()
            .filter(|r| r.start < range.end && range.start < r.end)
            .map(|r| r.start.max(range.start)..r.end.min(range.end))
            .collect()
    }
}
