//! Which sequence numbers are resolved (acknowledged by the consumer, or known lost to
//! quarantine): a low-watermark plus the disjoint ranges resolved above it.
//!
//! INSERTs run concurrently, so acks arrive out of order; the watermark only moves
//! when the lowest outstanding frame is resolved. Ranges rather than a set of numbers,
//! because acks come per INSERT (a run of frames) and a quarantined segment tail can
//! skip thousands of numbers at once.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct AckTracker {
    /// Every sequence number `<= watermark` is resolved.
    watermark: u64,
    /// Resolved, disjoint, non-adjacent ranges above `watermark + 1`: start → end
    /// (inclusive).
    ranges: BTreeMap<u64, u64>,
}

impl AckTracker {
    pub fn new(watermark: u64) -> AckTracker {
        AckTracker {
            watermark,
            ranges: BTreeMap::new(),
        }
    }

    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Marks `first..=last` resolved; returns whether the watermark moved.
    pub fn resolve(&mut self, first: u64, last: u64) -> bool {
        if last <= self.watermark || first > last {
            return false;
        }
        let mut start = first.max(self.watermark + 1);
        let mut end = last;
        // Merge every range that overlaps or touches [start, end].
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end.saturating_add(1))
            .rev()
            .take_while(|&(_, &e)| e.saturating_add(1) >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        if start == self.watermark + 1 {
            self.watermark = end;
            true
        } else {
            self.ranges.insert(start, end);
            false
        }
    }

    /// Whether every number in `first..=last` is resolved.
    pub fn covers(&self, first: u64, last: u64) -> bool {
        if last <= self.watermark {
            return true;
        }
        let first = first.max(self.watermark + 1);
        self.ranges
            .range(..=first)
            .next_back()
            .is_some_and(|(_, &e)| e >= last)
    }

    /// Whether `seq` is resolved.
    pub fn is_resolved(&self, seq: u64) -> bool {
        self.covers(seq, seq)
    }

    /// Resolved numbers above the watermark (acked out of order).
    pub fn resolved_above(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;

    #[test]
    fn out_of_order_acks_move_the_watermark_only_when_contiguous() {
        let mut acks = AckTracker::new(0);
        assert!(!acks.resolve(3, 4));
        assert!(!acks.resolve(7, 7));
        assert_eq!(acks.watermark(), 0);
        assert!(acks.covers(3, 4) && !acks.covers(3, 5));
        assert!(!acks.resolve(5, 5)); // 3..=5 merged
        assert!(acks.covers(3, 5));
        assert!(acks.resolve(1, 2)); // 1..=5
        assert_eq!(acks.watermark(), 5);
        assert!(acks.resolve(6, 6)); // 6 joins 7
        assert_eq!(acks.watermark(), 7);
        assert_eq!(acks.resolved_above(), 0);
        assert!(!acks.resolve(2, 7), "old acks are no-ops");
    }

    #[test]
    fn random_orders_match_a_naive_model() {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let n = 64u64;
            let mut chunks: Vec<(u64, u64)> = Vec::new();
            let mut s = 1;
            while s <= n {
                let len = 1 + (s * 7 + n) % 5;
                let e = (s + len - 1).min(n);
                chunks.push((s, e));
                s = e + 1;
            }
            chunks.shuffle(&mut rng);
            let mut acks = AckTracker::new(0);
            let mut model = vec![false; n as usize + 1];
            for (s, e) in chunks {
                acks.resolve(s, e);
                for seq in s..=e {
                    model[seq as usize] = true;
                }
                let expected = (1..=n)
                    .take_while(|&q| model[q as usize])
                    .last()
                    .unwrap_or(0);
                assert_eq!(acks.watermark(), expected);
                for seq in 1..=n {
                    assert_eq!(acks.is_resolved(seq), model[seq as usize], "seq {seq}");
                }
            }
            assert_eq!(acks.watermark(), n);
        }
    }
}
