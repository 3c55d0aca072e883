//! Per-key limits: records/s and bytes/s token buckets, and the key's share of the
//! spool.
//!
//! The buckets work on debt: a request is let in while its key's bucket holds at
//! least one token, and is charged what it really carried once it has been read (a
//! request's size and record count are known only then). A key over its rate is
//! refused before its body is read, until the bucket has refilled, and told how long
//! that takes (`Retry-After`). A bucket holds at most one second of its rate.
//!
//! Time is passed in (`now`), so the tests drive the buckets with their own clock.
//!
//! The spool share: each key keeps the sequence numbers and sizes of the frames it
//! appended that ClickHouse has not confirmed yet ([`SpoolShare`]); a key whose
//! unconfirmed bytes reach `spool_share × SPOOL_MAX_BYTES` is refused (429) while
//! the other keys still get in. The list is bounded: past [`MAX_FRAMES_TRACKED`]
//! entries its newest two are merged, which can only keep bytes counted a little
//! longer than they are unsent (the refusal errs on the side of the other keys).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A key's limits; `0` = unlimited for the rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLimits {
    pub records_per_sec: u64,
    pub bytes_per_sec: u64,
    /// 1–100.
    pub spool_share_percent: u8,
}

/// Parses a percentage 1–100.
pub fn percent(text: &str) -> Result<u8, String> {
    match text.trim_end_matches('%').parse::<u8>() {
        Ok(p) if (1..=100).contains(&p) => Ok(p),
        _ => Err("expected a percentage from 1 to 100".into()),
    }
}

/// A token bucket of `rate` tokens per second holding at most `rate` tokens (one
/// second's worth), which may go into debt.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// `Ok` when at least one token is there, else how long until there is.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// Takes `n` tokens, going into debt if there are fewer.
    pub fn charge(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// Keeps the tokens (capped at the new size) under a new rate.
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate as f64;
        self.tokens = self.tokens.min(self.rate);
    }

    pub fn tokens(&self) -> f64 {
        self.tokens
    }
}

/// The two buckets of one key (absent = unlimited).
#[derive(Debug, Default)]
pub struct Buckets {
    records: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

/// Which limit refused a request, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limited {
    Records { per_sec: u64, wait: Duration },
    Bytes { per_sec: u64, wait: Duration },
}

impl Limited {
    pub fn wait(&self) -> Duration {
        match self {
            Limited::Records { wait, .. } | Limited::Bytes { wait, .. } => *wait,
        }
    }
}

impl Buckets {
    pub fn new(limits: &KeyLimits, now: Instant) -> Buckets {
        let mut buckets = Buckets::default();
        buckets.configure(limits, now);
        buckets
    }

    /// Applies (new) limits, keeping the state of a bucket whose limit stays on.
    pub fn configure(&mut self, limits: &KeyLimits, now: Instant) {
        fn one(slot: &mut Option<TokenBucket>, rate: u64, now: Instant) {
            match (slot.as_mut(), rate) {
                (_, 0) => *slot = None,
                (Some(bucket), rate) => bucket.set_rate(rate, now),
                (None, rate) => *slot = Some(TokenBucket::new(rate, now)),
            }
        }
        one(&mut self.records, limits.records_per_sec, now);
        one(&mut self.bytes, limits.bytes_per_sec, now);
    }

    /// Whether a request may start now.
    pub fn check(&mut self, now: Instant) -> Result<(), Limited> {
        if let Some(b) = &mut self.records {
            b.check(now).map_err(|wait| Limited::Records {
                per_sec: b.rate as u64,
                wait,
            })?;
        }
        if let Some(b) = &mut self.bytes {
            b.check(now).map_err(|wait| Limited::Bytes {
                per_sec: b.rate as u64,
                wait,
            })?;
        }
        Ok(())
    }

    /// Charges what a request carried.
    pub fn charge(&mut self, records: u64, bytes: u64, now: Instant) {
        if let Some(b) = &mut self.records {
            b.charge(records, now);
        }
        if let Some(b) = &mut self.bytes {
            b.charge(bytes, now);
        }
    }
}

/// Most frames a key's [`SpoolShare`] lists; beyond, the newest two are merged.
pub const MAX_FRAMES_TRACKED: usize = 64;

/// A key's spooled frames not yet confirmed by ClickHouse.
#[derive(Debug, Default)]
pub struct SpoolShare {
    /// `(sequence number, bytes)`, ascending; a merged entry has the later number.
    frames: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl SpoolShare {
    /// Frame `seq` of `bytes` was appended for this key.
    pub fn appended(&mut self, seq: u64, bytes: u64) {
        // Appends of concurrent requests can finish out of order: keep it sorted by
        // merging into the last entry when this one is older.
        match self.frames.back_mut() {
            Some(last) if last.0 > seq => last.1 += bytes,
            _ => self.frames.push_back((seq, bytes)),
        }
        self.bytes += bytes;
        if self.frames.len() > MAX_FRAMES_TRACKED {
            let (seq, newer) = self.frames.pop_back().unwrap_or_default();
            if let Some(last) = self.frames.back_mut() {
                *last = (seq, last.1 + newer);
            }
        }
    }

    /// Bytes still unsent once every frame up to `acked_through` is confirmed.
    pub fn unsent(&mut self, acked_through: u64) -> u64 {
        while let Some(&(seq, bytes)) = self.frames.front() {
            if seq > acked_through {
                break;
            }
            self.frames.pop_front();
            self.bytes -= bytes;
        }
        self.bytes
    }

    /// Bytes counted now (pruned or not): an upper bound of [`unsent`](Self::unsent).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn tracked_frames(&self) -> usize {
        self.frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_one_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        assert!(b.check(t0).is_ok());
        b.charge(100, t0);
        // Empty: one token comes after 10 ms.
        assert_eq!(b.check(t0), Err(ms(10)));
        assert!(b.check(t0 + ms(10)).is_ok());
        // Never more than one second's worth, however long it rested.
        b.charge(0, t0 + Duration::from_secs(60));
        assert_eq!(b.tokens(), 100.0);
    }

    #[test]
    fn debt_is_paid_back_before_the_next_request() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        // A request of 40 records when 10 tokens were there: let in, 30 in debt.
        b.charge(40, t0);
        let wait = b.check(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(3100));
        assert!(b.check(t0 + ms(3000)).is_err());
        assert!(b.check(t0 + ms(3100)).is_ok());
    }

    #[test]
    fn buckets_say_which_limit_refused_and_zero_is_unlimited() {
        let t0 = Instant::now();
        let limits = KeyLimits {
            records_per_sec: 0,
            bytes_per_sec: 1000,
            spool_share_percent: 100,
        };
        let mut b = Buckets::new(&limits, t0);
        b.charge(1_000_000, 500, t0);
        assert!(b.check(t0).is_ok(), "records are unlimited");
        b.charge(0, 600, t0);
        match b.check(t0) {
            Err(Limited::Bytes {
                per_sec: 1000,
                wait,
            }) => assert_eq!(wait, ms(101)),
            other => panic!("{other:?}"),
        }
        // Raising the limit keeps the debt; removing it lifts the refusal.
        b.configure(
            &KeyLimits {
                bytes_per_sec: 2000,
                ..limits.clone()
            },
            t0,
        );
        assert!(b.check(t0).is_err());
        b.configure(
            &KeyLimits {
                bytes_per_sec: 0,
                records_per_sec: 5,
                ..limits
            },
            t0,
        );
        assert!(b.check(t0).is_ok());
        b.charge(5, 0, t0);
        assert!(matches!(
            b.check(t0),
            Err(Limited::Records { per_sec: 5, .. })
        ));
    }

    #[test]
    fn spool_share_counts_until_confirmed_and_stays_bounded() {
        let mut s = SpoolShare::default();
        s.appended(5, 100);
        s.appended(7, 50);
        s.appended(6, 10); // finished after 7: merged into 7's entry
        assert_eq!(s.unsent(4), 160);
        assert_eq!(s.unsent(5), 60);
        assert_eq!(s.unsent(6), 60, "6 was merged into 7: still counted");
        assert_eq!(s.unsent(7), 0);
        for seq in 10..1000 {
            s.appended(seq, 1);
        }
        assert!(s.tracked_frames() <= MAX_FRAMES_TRACKED);
        assert_eq!(s.unsent(9), 990);
        assert!(s.unsent(500) >= 499, "merging only keeps bytes longer");
        assert_eq!(s.unsent(999), 0);
    }

    #[test]
    fn percent_is_1_to_100() {
        assert_eq!(percent("50"), Ok(50));
        assert_eq!(percent("100%"), Ok(100));
        assert!(percent("0").is_err());
        assert!(percent("101").is_err());
        assert!(percent("half").is_err());
    }
}
