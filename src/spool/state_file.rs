//! `spool.state`: the persisted acknowledgement watermark, the next sequence number
//! and the directory's epoch, in two checksummed slots so a torn write never loses the
//! previous value.
//!
//! # Layout (two 48-byte slots, little-endian)
//!
//! ```text
//! 0 magic "ZLss" | 4 version u8 = 1 | 5..8 reserved | 8 generation u64
//! 16 acked_through u64 | 24 next_seq u64 | 32 epoch u64 | 40 reserved u32 | 44 crc32 of 0..44
//! ```
//!
//! Generation `g` is written to slot `g % 2` and `fdatasync`ed; the valid slot with the
//! highest generation wins. One `fdatasync` per update, no rename dance.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::segment::{sync_dir, u64_at};

const STATE_MAGIC: [u8; 4] = *b"ZLss";
const STATE_VERSION: u8 = 1;
const STATE_SLOT_LEN: usize = 48;
/// Name of the state file inside a spool directory.
pub const STATE_FILE: &str = "spool.state";

/// What the state file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolState {
    /// Every frame with a sequence number up to this one is acknowledged.
    pub acked_through: u64,
    /// No frame with a sequence number at or above this one was ever written, so a
    /// restart never reuses a number (frame ids stay unique even after every segment
    /// was deleted).
    pub next_seq: u64,
    /// Random id of this spool directory's incarnation, part of every frame id.
    pub epoch: u64,
}

/// The open state file and the generation last written.
pub struct StateFile {
    file: File,
    generation: u64,
    last: SpoolState,
}

impl StateFile {
    /// Opens `dir/spool.state`, or creates it with `fresh` when absent or unreadable
    /// (then every frame on disk is replayed: duplicates, never loss). Returns whether
    /// an existing file had to be reset.
    pub fn open(dir: &Path, fresh: SpoolState) -> io::Result<(StateFile, bool)> {
        let path = dir.join(STATE_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut best: Option<(u64, SpoolState)> = None;
        for slot in 0..2u64 {
            let mut buf = [0u8; STATE_SLOT_LEN];
            if file
                .read_exact_at(&mut buf, slot * STATE_SLOT_LEN as u64)
                .is_err()
            {
                continue;
            }
            if let Some((generation, state)) = decode_state(&buf) {
                if best.is_none_or(|(g, _)| generation > g) {
                    best = Some((generation, state));
                }
            }
        }
        match best {
            Some((generation, last)) => Ok((
                StateFile {
                    file,
                    generation,
                    last,
                },
                false,
            )),
            None => {
                let mut state = StateFile {
                    file,
                    generation: 0,
                    last: fresh,
                };
                state.write(fresh)?;
                sync_dir(dir)?;
                Ok((state, existed))
            }
        }
    }

    pub fn get(&self) -> SpoolState {
        self.last
    }

    /// Writes `state` into the older slot and `fdatasync`s it.
    pub fn write(&mut self, state: SpoolState) -> io::Result<()> {
        let generation = self.generation + 1;
        let slot = encode_state(generation, state);
        self.file
            .write_all_at(&slot, (generation % 2) * STATE_SLOT_LEN as u64)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.last = state;
        Ok(())
    }
}

fn encode_state(generation: u64, state: SpoolState) -> [u8; STATE_SLOT_LEN] {
    let mut b = [0u8; STATE_SLOT_LEN];
    b[0..4].copy_from_slice(&STATE_MAGIC);
    b[4] = STATE_VERSION;
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..24].copy_from_slice(&state.acked_through.to_le_bytes());
    b[24..32].copy_from_slice(&state.next_seq.to_le_bytes());
    b[32..40].copy_from_slice(&state.epoch.to_le_bytes());
    let crc = crc32fast::hash(&b[..44]);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_state(b: &[u8; STATE_SLOT_LEN]) -> Option<(u64, SpoolState)> {
    if b[0..4] != STATE_MAGIC || b[4] != STATE_VERSION {
        return None;
    }
    if crc32fast::hash(&b[..44]) != u32::from_le_bytes([b[44], b[45], b[46], b[47]]) {
        return None;
    }
    Some((
        u64_at(b, 8),
        SpoolState {
            acked_through: u64_at(b, 16),
            next_seq: u64_at(b, 24),
            epoch: u64_at(b, 32),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn state_file_survives_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = SpoolState {
            acked_through: 0,
            next_seq: 1,
            epoch: 9,
        };
        let (mut state, reset) = StateFile::open(dir.path(), fresh).unwrap();
        assert!(!reset);
        for n in 1..=5 {
            state
                .write(SpoolState {
                    acked_through: n,
                    next_seq: n + 1,
                    epoch: 9,
                })
                .unwrap();
        }
        drop(state);
        let (state, _) = StateFile::open(dir.path(), fresh).unwrap();
        assert_eq!(state.get().acked_through, 5);

        // Corrupt the newest slot (generation 6 lives in slot 0): the older one wins.
        let path = dir.path().join(STATE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (state, _) = StateFile::open(dir.path(), fresh).unwrap();
        assert_eq!(state.get().acked_through, 4);

        // Both slots gone: reset to `fresh`, reported.
        fs::write(&path, [0xAA; 96]).unwrap();
        let (state, reset) = StateFile::open(dir.path(), fresh).unwrap();
        assert!(reset);
        assert_eq!(state.get(), fresh);
    }
}
