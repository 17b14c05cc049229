//! Segment files: an append-only log of frames on disk, the durable unit the embedded
//! store is moving to (issue 11: "one fsynced append per commit, every index derived from
//! the log"): the on-disk format of the fjall store's log and its recovery rules.
//!
//! # Layout
//!
//! A directory of segments named by the log position of their first byte
//! (`00000000000000000000.seg`, 20 digits). A position is a byte offset in the log as if
//! the segments were one file. Each frame is
//!
//! ```text
//! magic u32 LE (0x5345_414C, "SEAL") | length u32 LE | header CRC32 u32 LE (of magic+length)
//! payload (length bytes) | payload CRC32 u32 LE
//! ```
//!
//! The writer appends **one frame per group commit** (all of a group's records in one
//! payload), then `fdatasync`s, and only then may anything of the group be acknowledged.
//! A segment rolls (a new file, the directory fsynced) once it reaches the configured
//! size, at a frame boundary.
//!
//! # What a crash leaves, and what opening does with it
//!
//! Groups are written one after the other, each synced before the next starts, so a crash
//! can only tear the **last frame of the last segment**: its bytes may be partly on disk, in
//! any order of pages (delayed allocation can persist a later page and leave an earlier one
//! zero), and the file may be longer than what was written. Opening therefore:
//! - checks every frame of every segment but the last: any failure there is corruption;
//! - in the last segment, at the first frame that fails (short, bad header, bad payload
//!   CRC), searches the rest of the file for any complete valid frame. If one exists, the
//!   failure was not the last write: corruption. If none, the failed frame is a torn tail:
//!   it is truncated away (reported in [`Recovery`], for the caller to log), and appending
//!   continues from there;
//! - corruption is an error naming the segment file and the byte offset in it, and nothing
//!   is truncated or rewritten: the operator decides (restore from a backup, or move the
//!   segment aside knowingly).
//!
//! A torn tail was never acknowledged (its sync did not return). A synced last frame that
//! rots on disk looks exactly like a torn one; the caller must cross-check the recovered
//! end against what it derived or signed (index watermark, checkpoints) and refuse to go
//! on if the log ends before them.
//!
//! - crash while creating a segment: an empty (or torn-first-frame) last segment, handled
//!   as above; an empty last segment is reused.
//! - with preallocation ([`SegmentLog::preallocate`]): the last segment may end in zeros
//!   past its last frame (space filled ahead of the writer, or a chunk being filled). Zeros
//!   from the first failing position to the end of the file are the end of the log: not
//!   reported, not cut (the space stays for the writer). A crash during a roll leaves
//!   either the old segment last, zeros and all, or the new one behind an old one already
//!   trimmed to its last frame and synced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

const MAGIC: u32 = 0x5345_414C;
const HEADER: usize = 12;
const TRAILER: usize = 4;
/// Where a frame's payload starts, counted from the frame's position.
pub const PAYLOAD_OFFSET: u64 = HEADER as u64;
/// The largest payload a frame may carry (a group commit is bounded well below this).
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;
const SUFFIX: &str = "seg";

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment log I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that cannot be a torn last write. Nothing was changed on disk.
    #[error(
        "the log is corrupt: {file} at byte {offset}: {what}. Nothing was changed; restore the data directory from a backup (sealtrail refuses to drop records it cannot prove were never acknowledged)"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("a frame payload of {0} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    TooLarge(usize),
    /// An earlier write or sync failed in a way that leaves the log's end unknown.
    #[error("the log refuses appends after a failed write ({0}); restart the server")]
    Broken(String),
}

/// What opening found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Frames found intact, over all segments.
    pub frames: u64,
    /// A torn last frame that was cut off: the segment, the offset in it where the cut was
    /// made, and how many bytes were dropped.
    pub truncated: Option<(PathBuf, u64, u64)>,
}

/// The log's segments, open for appending at the end.
pub struct SegmentLog {
    dir: PathBuf,
    roll_bytes: u64,
    /// The last segment: its first log position and the file.
    base: u64,
    file: Arc<File>,
    /// Bytes in the last segment.
    len: u64,
    reader: LogReader,
    /// Set when a failed write or sync left the end unknown: appends refuse until reopen.
    broken: Option<String>,
    /// The thread that zero-fills the last segment ahead of the writer, once started
    /// ([`preallocate`](Self::preallocate)).
    zeroing: Option<Zeroing>,
    /// The thread that drops sealed segments from the page cache, once started
    /// ([`keep_cached`](Self::keep_cached)).
    uncaching: Option<Uncaching>,
}

/// Reads byte ranges of the log by position, from any thread (the writer registers each
/// new segment; older ones are opened on first use and kept open).
#[derive(Clone)]
pub struct LogReader {
    dir: PathBuf,
    files: Arc<RwLock<BTreeMap<u64, Option<Arc<File>>>>>,
    /// The log position after the last synced frame: nothing at or past it is read (the
    /// last segment may continue in zero-filled space, [`SegmentLog::preallocate`]).
    end: Arc<AtomicU64>,
}

impl LogReader {
    fn new(dir: &Path, bases: &[u64], end: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: Arc::new(RwLock::new(bases.iter().map(|&b| (b, None)).collect())),
            end: Arc::new(AtomicU64::new(end)),
        }
    }

    fn register(&self, base: u64) {
        self.files
            .write()
            .expect("segment map lock")
            .insert(base, None);
    }

    /// `len` bytes at log position `pos`. Only positions the writer has synced may be
    /// asked for. A frame never spans two segments, but a range may (a chain read joins
    /// the entries of neighbouring frames into one read): segments are contiguous in
    /// log positions (each starts where the previous one ends), so such a range is read
    /// piece by piece from each segment it covers.
    pub fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>, SegmentError> {
        let end = self.end.load(Ordering::Acquire);
        if pos + len as u64 > end {
            let (base, _, _) = self.segment_holding(pos.min(end.saturating_sub(1)))?;
            return Err(SegmentError::Corrupt {
                file: segment_path(&self.dir, base),
                offset: pos.saturating_sub(base),
                what: format!("{len} bytes were expected here, the log ends at position {end}"),
            });
        }
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let at = pos + done as u64;
            let (base, next, file) = self.segment_holding(at)?;
            let take = next.map_or(len - done, |next| (len - done).min((next - at) as usize));
            file.read_exact_at(&mut buf[done..done + take], at - base)
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        SegmentError::Corrupt {
                            file: segment_path(&self.dir, base),
                            offset: at - base,
                            what: format!(
                                "{take} bytes were expected here, the segment ends before"
                            ),
                        }
                    } else {
                        SegmentError::Io(e)
                    }
                })?;
            done += take;
        }
        Ok(buf)
    }

    /// The segment holding log position `pos`: its base, the next segment's base (where
    /// this one ends), and the open file.
    fn segment_holding(&self, pos: u64) -> Result<(u64, Option<u64>, Arc<File>), SegmentError> {
        let (base, next, file) = {
            let files = self.files.read().expect("segment map lock");
            let (&base, file) =
                files
                    .range(..=pos)
                    .next_back()
                    .ok_or_else(|| SegmentError::Corrupt {
                        file: self.dir.clone(),
                        offset: pos,
                        what: "no segment holds this log position".into(),
                    })?;
            let next = files.range(pos + 1..).next().map(|(&next, _)| next);
            (base, next, file.clone())
        };
        let file = match file {
            Some(file) => file,
            None => {
                let file = Arc::new(File::open(segment_path(&self.dir, base))?);
                self.files
                    .write()
                    .expect("segment map lock")
                    .insert(base, Some(file.clone()));
                file
            }
        };
        Ok((base, next, file))
    }
}

/// The redo file of an in-place rewrite ([`LogReader::patch`]).
const PATCH_INTENT: &str = "patch.intent";
const PATCH_MAGIC: &[u8; 8] = b"SEALPTCH";

impl LogReader {
    /// Overwrites byte ranges of frames already in the log, in place and crash-safely:
    /// each `(position, bytes)` replaces as many bytes at that log position. Used to
    /// erase a redacted record (issue 15): the caller rewrites the record entry with the
    /// same length and the frame's payload checksum, so every position and every index
    /// entry stays valid.
    ///
    /// A torn overwrite would leave a frame whose checksum fails, which opening reports
    /// as corruption. So the patches are first written whole to a redo file
    /// (`patch.intent`, durably: a temporary file, fsync, rename, directory fsync), then
    /// written in place and fdatasynced, then the redo file is removed. What a crash
    /// leaves:
    /// - before the redo file is renamed into place: the log unchanged (a stray
    ///   `patch.intent.tmp` is removed at the next open); the caller redoes it (the
    ///   indexer's watermark is still before the redaction);
    /// - after: the next open writes the patches again (they are idempotent) before it
    ///   checks any frame ([`apply_pending_patch`]), then removes the file.
    pub fn patch(&self, patches: &[(u64, Vec<u8>)]) -> Result<(), SegmentError> {
        write_intent(&self.dir, patches)?;
        write_patches(&self.dir, patches)?;
        std::fs::remove_file(self.dir.join(PATCH_INTENT))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// The redo file of `patches`, durably in place.
fn write_intent(dir: &Path, patches: &[(u64, Vec<u8>)]) -> Result<(), SegmentError> {
    {
        let mut intent = PATCH_MAGIC.to_vec();
        intent.extend_from_slice(&(patches.len() as u32).to_le_bytes());
        for (pos, bytes) in patches {
            intent.extend_from_slice(&pos.to_le_bytes());
            intent.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            intent.extend_from_slice(bytes);
        }
        let crc = crc32fast::hash(&intent);
        intent.extend_from_slice(&crc.to_le_bytes());
        crate::durable_file::write_durably(&dir.join(PATCH_INTENT), &intent, false)?;
    }
    Ok(())
}

/// Writes `patches` into the segments of `dir` and fdatasyncs each segment touched.
fn write_patches(dir: &Path, patches: &[(u64, Vec<u8>)]) -> Result<(), SegmentError> {
    let bases = segments(dir)?;
    let mut touched: BTreeMap<u64, File> = BTreeMap::new();
    for (pos, bytes) in patches {
        let Some(&base) = bases.iter().rev().find(|&&b| b <= *pos) else {
            return Err(SegmentError::Corrupt {
                file: dir.to_path_buf(),
                offset: *pos,
                what: "a patch names a log position no segment holds".into(),
            });
        };
        let file = match touched.entry(base) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(
                OpenOptions::new()
                    .write(true)
                    .open(segment_path(dir, base))?,
            ),
        };
        file.write_all_at(bytes, pos - base)?;
    }
    for file in touched.values() {
        file.sync_data()?;
    }
    Ok(())
}

/// Finishes a patch that a crash interrupted (see [`LogReader::patch`]); called before
/// the log's frames are checked. Returns how many patches it wrote again.
fn apply_pending_patch(dir: &Path) -> Result<usize, SegmentError> {
    let tmp = dir.join(PATCH_INTENT).with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_file(&tmp)?;
    }
    let path = dir.join(PATCH_INTENT);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |what: &str| SegmentError::Corrupt {
        file: path.clone(),
        offset: 0,
        what: what.to_string(),
    };
    // It was fsynced before it was renamed into place: any damage is not a torn write.
    if bytes.len() < 16
        || &bytes[..8] != PATCH_MAGIC
        || crc32fast::hash(&bytes[..bytes.len() - 4]).to_le_bytes() != bytes[bytes.len() - 4..]
    {
        return Err(corrupt(
            "the redo file of an interrupted rewrite is damaged",
        ));
    }
    let body = &bytes[..bytes.len() - 4];
    let count = u32::from_le_bytes(body[8..12].try_into().unwrap());
    let mut at = 12;
    let mut patches = Vec::new();
    for _ in 0..count {
        if body.len() < at + 12 {
            return Err(corrupt("the redo file ends inside a patch"));
        }
        let pos = u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(body[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 12;
        if body.len() < at + len {
            return Err(corrupt("the redo file ends inside a patch"));
        }
        patches.push((pos, body[at..at + len].to_vec()));
        at += len;
    }
    write_patches(dir, &patches)?;
    std::fs::remove_file(&path)?;
    File::open(dir)?.sync_all()?;
    tracing::warn!(
        patches = patches.len(),
        "finished an in-place rewrite of the log that a crash interrupted (a redaction)"
    );
    Ok(patches.len())
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{SUFFIX}"))
}

/// The segments in `dir`, by first position.
fn segments(dir: &Path) -> Result<Vec<u64>, SegmentError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(&format!(".{SUFFIX}"))
            && stem.len() == 20
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn header_crc(magic_and_len: &[u8]) -> u32 {
    crc32fast::hash(magic_and_len)
}

/// The frame starting at `at` in `bytes`: its payload range and its end, or why not.
fn frame_at(bytes: &[u8], at: usize) -> Result<(std::ops::Range<usize>, usize), String> {
    let rest = &bytes[at..];
    if rest.len() < HEADER {
        return Err(format!("{} bytes, short of a frame header", rest.len()));
    }
    let magic = u32::from_le_bytes(rest[0..4].try_into().unwrap());
    let len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(rest[8..12].try_into().unwrap());
    if magic != MAGIC || crc != header_crc(&rest[0..8]) || len > MAX_PAYLOAD {
        return Err("not a valid frame header".into());
    }
    if rest.len() < HEADER + len + TRAILER {
        return Err(format!(
            "a frame of {len} bytes that the file ends inside of"
        ));
    }
    let payload = &rest[HEADER..HEADER + len];
    let stored = u32::from_le_bytes(
        rest[HEADER + len..HEADER + len + TRAILER]
            .try_into()
            .unwrap(),
    );
    if stored != crc32fast::hash(payload) {
        return Err(format!(
            "a frame of {len} bytes whose payload checksum does not match"
        ));
    }
    Ok((at + HEADER..at + HEADER + len, at + HEADER + len + TRAILER))
}

/// Whether any complete valid frame starts after `from`.
fn any_valid_frame_after(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    (from + 1..bytes.len().saturating_sub(HEADER + TRAILER - 1))
        .filter(|&i| bytes[i..i + 4] == magic)
        .find(|&i| frame_at(bytes, i).is_ok())
}

/// Reads the frames of one segment: their payload ranges, and where reading stopped with
/// why (`None`: at the end, cleanly).
fn scan(bytes: &[u8]) -> (Vec<std::ops::Range<usize>>, Option<(usize, String)>) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Ok((payload, end)) => {
                frames.push(payload);
                at = end;
            }
            Err(why) => return (frames, Some((at, why))),
        }
    }
    (frames, None)
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, checks every frame, cuts off a torn last
    /// frame, and positions at the end. Segments roll at `roll_bytes`.
    pub fn open(dir: &Path, roll_bytes: u64) -> Result<(SegmentLog, Recovery), SegmentError> {
        Self::open_checking_from(dir, roll_bytes, 0)
    }

    /// [`open`](Self::open), but the frames of sealed segments that end at or before log
    /// position `check_from` are not read (their sizes are still checked to follow on
    /// without a gap): a restart reads only what it replays, not the whole log. Their
    /// checksums are checked whenever they are read ([`for_each_frame_from`](Self::for_each_frame_from),
    /// `sealtrail verify`).
    pub fn open_checking_from(
        dir: &Path,
        roll_bytes: u64,
        check_from: u64,
    ) -> Result<(SegmentLog, Recovery), SegmentError> {
        std::fs::create_dir_all(dir)?;
        apply_pending_patch(dir)?;
        let bases = segments(dir)?;
        let mut recovery = Recovery::default();
        let Some((&last, sealed)) = bases.split_last() else {
            let file = create_segment(dir, 0)?;
            return Ok((
                SegmentLog {
                    dir: dir.to_path_buf(),
                    roll_bytes,
                    base: 0,
                    file: Arc::new(file),
                    len: 0,
                    reader: LogReader::new(dir, &[0], 0),
                    broken: None,
                    zeroing: None,
                    uncaching: None,
                },
                recovery,
            ));
        };
        let mut expected = bases[0];
        for &base in sealed {
            let path = segment_path(dir, base);
            if base != expected {
                return Err(missing_before(path, expected));
            }
            let size = std::fs::metadata(&path)?.len();
            if base + size <= check_from {
                expected = base + size;
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let frames = scan_whole(&bytes, path)?;
            recovery.frames += frames.len() as u64;
            expected = base + bytes.len() as u64;
        }
        let path = segment_path(dir, last);
        if last != expected {
            return Err(missing_before(path, expected));
        }
        let bytes = std::fs::read(&path)?;
        let (frames, stop) = scan(&bytes);
        recovery.frames += frames.len() as u64;
        let mut len = bytes.len() as u64;
        // Zeros from the end of the last frame to the end of the file are space the
        // writer preallocated ([`preallocate`](Self::preallocate)), or a frame none of
        // whose bytes reached the disk: the log ends there, and the space is kept.
        let zero_tail = match &stop {
            Some((offset, _)) if bytes[*offset..].iter().all(|&b| b == 0) => Some(*offset),
            _ => None,
        };
        let stop = if zero_tail.is_some() { None } else { stop };
        if let Some((offset, what)) = stop {
            if let Some(valid) = any_valid_frame_after(&bytes, offset) {
                return Err(SegmentError::Corrupt {
                    file: path,
                    offset: offset as u64,
                    what: format!(
                        "{what}, followed by a valid frame at byte {valid}: not a torn last write"
                    ),
                });
            }
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(offset as u64)?;
            file.sync_all()?;
            recovery.truncated = Some((path.clone(), offset as u64, len - offset as u64));
            len = offset as u64;
        }
        if let Some(offset) = zero_tail {
            len = offset as u64;
        }
        let file = OpenOptions::new().write(true).open(&path)?;
        Ok((
            SegmentLog {
                dir: dir.to_path_buf(),
                roll_bytes,
                base: last,
                file: Arc::new(file),
                len,
                reader: LogReader::new(dir, &bases, last + len),
                broken: None,
                zeroing: None,
                uncaching: None,
            },
            recovery,
        ))
    }

    /// A reader of this log's synced bytes, for other threads.
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// The log position after the last frame.
    pub fn end(&self) -> u64 {
        self.base + self.len
    }

    /// Appends one frame and syncs it (`fdatasync`); returns its position. Only after this
    /// returns may anything in `payload` be acknowledged. A failure leaves the log
    /// unusable until reopened (the frame may be partly written; reopening cuts it off).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SegmentError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SegmentError::TooLarge(payload.len()));
        }
        if let Some(why) = &self.broken {
            return Err(SegmentError::Broken(why.clone()));
        }
        if self.len >= self.roll_bytes && self.len > 0 {
            self.roll()?;
        }
        // Header, payload and trailer are written as they are (no copy of a payload of
        // megabytes into one buffer); a failure between them leaves a partial frame, cut
        // off below like any other.
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = header_crc(&header[0..8]);
        header[8..12].copy_from_slice(&crc.to_le_bytes());
        let trailer: [u8; TRAILER] = crc32fast::hash(payload).to_le_bytes();
        let at = self.end();
        let frame_end = self.len + (HEADER + payload.len() + TRAILER) as u64;
        // Within the zero-filled space the frame is written without a lock; a frame that
        // goes past it is written while the zeroing thread is held off, so the thread
        // never writes zeros where a frame is (see `Zeroing`).
        let holding = match &self.zeroing {
            Some(z) if frame_end > z.shared.zeroed.load(Ordering::Acquire) => {
                Some(z.shared.state.lock().expect("zeroing lock"))
            }
            _ => None,
        };
        let file = &self.file;
        let len = self.len;
        let written = file
            .write_all_at(&header, len)
            .and_then(|()| file.write_all_at(payload, len + HEADER as u64))
            .and_then(|()| file.write_all_at(&trailer, len + (HEADER + payload.len()) as u64));
        if let Err(err) = written {
            // Nothing was synced: cut the partial frame off and stay usable (a full disk
            // must not need a restart). If even that fails, the end is unknown. (Any
            // zero-filled space past the frame goes with it; the thread fills it again.)
            let mut holding = match holding {
                Some(h) => Some(h),
                None => self
                    .zeroing
                    .as_ref()
                    .map(|z| z.shared.state.lock().expect("zeroing lock")),
            };
            if let Err(cut) = file.set_len(len) {
                self.broken = Some(format!(
                    "{err}; then cutting the partial frame failed: {cut}"
                ));
            }
            if let (Some(state), Some(z)) = (holding.as_mut(), &self.zeroing) {
                state.zeroed = len;
                z.shared.zeroed.store(len, Ordering::Release);
            }
            return Err(err.into());
        }
        if let (Some(mut state), Some(z)) = (holding, &self.zeroing) {
            // Past the zero-filled space: the file now ends at the frame.
            state.zeroed = state.zeroed.max(frame_end);
            z.shared.zeroed.store(state.zeroed, Ordering::Release);
        }
        if let Err(err) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages: what is on
            // disk is unknown, so nothing more is appended until a reopen checks it.
            self.broken = Some(format!("fdatasync failed: {err}"));
            return Err(err.into());
        }
        self.len = frame_end;
        self.reader.end.store(self.end(), Ordering::Release);
        if self
            .uncaching
            .as_ref()
            .is_some_and(|u| self.end() >= u.check_at)
        {
            self.uncache_cold();
        }
        if let Some(z) = &self.zeroing {
            z.shared.written.store(frame_end, Ordering::Release);
            if z.shared.zeroed.load(Ordering::Acquire) < frame_end + z.ahead / 2 {
                z.shared.wake.notify_one();
            }
        }
        Ok(at)
    }

    /// Starts a new segment at the current end. The old one is complete and synced (every
    /// append synced it); the new file and its directory entry are synced before use.
    ///
    /// With preallocation, the zero-filled space past the old segment's last frame is cut
    /// off first, and that is synced before the new segment exists: a sealed segment
    /// ends at its last frame (segments are contiguous in log positions), so a crash
    /// leaves either the old segment last (zeros at its end are fine there) or a new
    /// segment behind a trimmed one.
    fn roll(&mut self) -> Result<(), SegmentError> {
        let base = self.end();
        let mut held = self
            .zeroing
            .as_ref()
            .map(|z| z.shared.state.lock().expect("zeroing lock"));
        if held.is_some() && self.file.metadata()?.len() > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
        }
        let file = Arc::new(create_segment(&self.dir, base)?);
        if let (Some(state), Some(z)) = (held.as_mut(), &self.zeroing) {
            state.file = file.clone();
            state.zeroed = 0;
            z.shared.zeroed.store(0, Ordering::Release);
            z.shared.written.store(0, Ordering::Release);
            z.shared.wake.notify_one();
        }
        drop(held);
        self.file = file;
        self.base = base;
        self.len = 0;
        self.reader.register(base);
        self.uncache_cold();
        Ok(())
    }

    /// Keeps only the newest `window` bytes of sealed segments in the OS page cache: a
    /// thread asks the kernel (`posix_fadvise(POSIX_FADV_DONTNEED)`) to drop each sealed
    /// segment once the log's end has moved `window` bytes past it, and the segments read
    /// whole by [`for_each_frame_from`](Self::for_each_frame_from) (a replay, a rebuild)
    /// that lie that far back. 0: off (the kernel keeps what it likes).
    ///
    /// Why: the log only grows, and most of it is never read again, yet every byte written
    /// takes a page of the page cache that the kernel keeps while memory is free. On a
    /// virtual machine whose guest hands free memory back to the host (free page
    /// reporting: Firecracker, crosvm, cloud VMs with a balloon), each new page-cache page
    /// is a host fault: on this machine a sequential writer that lets its page cache grow
    /// spends 2.6 – 2.8 s of CPU per GiB written, one that drops what it synced 1 GiB
    /// behind 0.31 – 0.38 s. Dropped pages are reused by the next writes instead. Reads of
    /// records further back than the window go to the disk (0.06 – 0.11 ms a read here);
    /// the indexes are not affected.
    ///
    /// Only synced bytes are ever dropped (a sealed segment was synced by its last append
    /// and trimmed and synced by the roll), so this changes nothing on disk: the advice is
    /// a hint, and a crash at any point leaves the log as it was.
    pub fn keep_cached(&mut self, window: u64) -> Result<(), SegmentError> {
        if self.uncaching.is_some() || window == 0 {
            return Ok(());
        }
        let (to_thread, jobs) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("sealtrail-log-cold".into())
            .spawn(move || {
                while let Ok(path) = jobs.recv() {
                    drop_from_cache(&path);
                }
            })?;
        self.uncaching = Some(Uncaching {
            window,
            done_to: 0,
            check_at: 0,
            to_thread: Some(to_thread),
            thread: Some(thread),
        });
        self.uncache_cold();
        Ok(())
    }

    /// Hands the sealed segments that now lie a whole window behind the end to the
    /// uncaching thread, each once (after a roll, and after an append that reaches
    /// `check_at`).
    fn uncache_cold(&mut self) {
        let end = self.end();
        let Some(u) = &mut self.uncaching else {
            return;
        };
        let below = end.saturating_sub(u.window);
        let bases: Vec<u64> = {
            let files = self.reader.files.read().expect("segment map lock");
            files.range(u.done_to..).map(|(&base, _)| base).collect()
        };
        // A segment ends where the next one starts; the last one is not sealed.
        u.check_at = u64::MAX;
        for pair in bases.windows(2) {
            let (base, next) = (pair[0], pair[1]);
            if next > below {
                u.check_at = next.saturating_add(u.window);
                break;
            }
            if let Some(tx) = &u.to_thread {
                let _ = tx.send(segment_path(&self.dir, base));
            }
            u.done_to = next;
        }
    }

    /// Whether a segment ending at log position `segment_end` lies a whole
    /// [`keep_cached`](Self::keep_cached) window behind the end.
    fn is_cold(&self, segment_end: u64) -> bool {
        self.uncaching
            .as_ref()
            .is_some_and(|u| segment_end.saturating_add(u.window) <= self.end())
    }

    /// Starts a thread that keeps `ahead` bytes past the last frame of the last segment
    /// zero-filled and synced, in chunks of [`ZERO_CHUNK`], up to the segment size.
    ///
    /// Why: an `fdatasync` after an append that grows the file must also commit the new
    /// size and block allocation (on ext4, a journal commit); one that overwrites blocks
    /// already written has only the data to flush. Measured on this machine's disk
    /// (20 KB frames): 0.17 – 0.21 ms and 73 – 83 µs of CPU per `fdatasync` appending,
    /// 0.09 – 0.10 ms and 37 – 40 µs overwriting zeros. PostgreSQL zero-fills its WAL
    /// segments for the same reason.
    ///
    /// What it changes on disk: the last segment may end in zeros past its last frame,
    /// which opening takes as the end of the log (`open`), and a roll cuts them off the
    /// segment it seals. A crash mid-chunk leaves zeros too. Nothing is acknowledged
    /// differently: a frame is still answered only after its own `fdatasync`.
    pub fn preallocate(&mut self, ahead: u64) -> Result<(), SegmentError> {
        if self.zeroing.is_some() || ahead == 0 {
            return Ok(());
        }
        let size = self.file.metadata()?.len();
        let shared = Arc::new(ZeroShared {
            state: Mutex::new(ZeroState {
                file: self.file.clone(),
                zeroed: size,
                stop: false,
            }),
            wake: Condvar::new(),
            zeroed: AtomicU64::new(size),
            written: AtomicU64::new(self.len),
        });
        let cap = self.roll_bytes;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("sealtrail-log-zero".into())
                .spawn(move || zero_ahead(&shared, ahead, cap))?
        };
        self.zeroing = Some(Zeroing {
            shared,
            ahead,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Calls `f` with every frame's position and payload from log position `from` (a
    /// frame's start, or the end), in order, checking each frame's checksums. Reads one
    /// segment at a time, and only segments that end after `from`.
    pub fn for_each_frame_from<E: From<SegmentError>>(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for base in segments(&self.dir)? {
            let path = segment_path(&self.dir, base);
            let size = std::fs::metadata(&path).map_err(SegmentError::Io)?.len();
            if base + size <= from || base > self.end() {
                continue;
            }
            let skip = from.saturating_sub(base);
            let mut file = File::open(&path).map_err(SegmentError::Io)?;
            file.seek(SeekFrom::Start(skip)).map_err(SegmentError::Io)?;
            let mut bytes = Vec::new();
            if base == self.base {
                // The last segment ends at its last frame; zero-filled space may follow.
                (&mut file)
                    .take(self.len.saturating_sub(skip))
                    .read_to_end(&mut bytes)
                    .map_err(SegmentError::Io)?;
            } else {
                file.read_to_end(&mut bytes).map_err(SegmentError::Io)?;
            }
            let (frames, stop) = scan(&bytes);
            if let Some((offset, what)) = stop {
                return Err(SegmentError::Corrupt {
                    file: path,
                    offset: skip + offset as u64,
                    what,
                }
                .into());
            }
            for range in frames {
                let at = base + skip + (range.start - HEADER) as u64;
                f(at, &bytes[range])?;
            }
            if base != self.base && self.is_cold(base + size) {
                // Read whole for a replay or a rebuild, and a window behind the end.
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
            }
        }
        Ok(())
    }

    /// Every frame's payload from log position `from` (a frame's start, as returned by
    /// [`append`](Self::append)), in order, with its position (small logs and tests;
    /// [`for_each_frame_from`](Self::for_each_frame_from) reads a segment at a time).
    pub fn read_from(&self, from: u64) -> Result<Vec<(u64, Vec<u8>)>, SegmentError> {
        let mut out = Vec::new();
        self.for_each_frame_from(from, |at, payload| {
            out.push((at, payload.to_vec()));
            Ok::<(), SegmentError>(())
        })?;
        Ok(out)
    }
}

/// The frames of a segment that must be whole (sealed, or read after opening).
fn scan_whole(bytes: &[u8], path: PathBuf) -> Result<Vec<std::ops::Range<usize>>, SegmentError> {
    match scan(bytes) {
        (frames, None) => Ok(frames),
        (_, Some((offset, what))) => Err(SegmentError::Corrupt {
            file: path,
            offset: offset as u64,
            what,
        }),
    }
}

/// The error for a segment that does not start where the one before it ends.
fn missing_before(path: PathBuf, expected: u64) -> SegmentError {
    SegmentError::Corrupt {
        file: path,
        offset: 0,
        what: format!(
            "the segment before it ends at log position {expected}: a segment is missing"
        ),
    }
}

fn create_segment(dir: &Path, base: u64) -> Result<File, SegmentError> {
    // Written at positions (`pwrite`), not in append mode: Linux ignores the position
    // of a `pwrite` to a file opened for appending.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(segment_path(dir, base))?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The uncaching thread's handle ([`SegmentLog::keep_cached`]): dropping the log closes
/// the channel and joins the thread.
struct Uncaching {
    window: u64,
    /// Sealed segments ending at or before this log position were handed to the thread.
    done_to: u64,
    /// The end at which the oldest sealed segment not handed over yet turns cold (the
    /// appends check it; a roll sets it again).
    check_at: u64,
    to_thread: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Uncaching {
    fn drop(&mut self) {
        self.to_thread.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The default window of [`SegmentLog::keep_cached`] (`embedded.log_page_cache`).
pub const DEFAULT_PAGE_CACHE_WINDOW: u64 = 1024 * 1024 * 1024;

/// Asks the kernel to drop a segment file's pages from its page cache (a hint: a failure
/// changes nothing but the memory it keeps).
pub(crate) fn drop_from_cache(path: &Path) {
    let dropped = File::open(path).and_then(|file| {
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).map_err(Into::into)
    });
    if let Err(err) = dropped {
        tracing::debug!(path = %path.display(), %err, "could not drop a sealed segment from the page cache");
    }
}

/// Bytes the zeroing thread writes (and syncs) at a time.
pub const ZERO_CHUNK: u64 = 1024 * 1024;

/// The zeroing thread's handle ([`SegmentLog::preallocate`]). The protocol that keeps it
/// from ever writing where a frame is: it writes zeros only from `zeroed` on, holding
/// `state` while it writes and syncs a chunk, and raises `zeroed` after the sync; the
/// writer writes a frame without the lock only below `zeroed`, and a frame that reaches
/// past it under the lock (raising `zeroed` to the frame's end). A roll swaps the file
/// under the lock. Dropping the log stops and joins the thread, so no zeros are written
/// after the log is closed (a reopened log may be writing there).
struct Zeroing {
    shared: Arc<ZeroShared>,
    ahead: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct ZeroShared {
    state: Mutex<ZeroState>,
    wake: Condvar,
    /// `state.zeroed`, readable without the lock.
    zeroed: AtomicU64,
    /// The end of the last frame in the current segment (the writer's `len`).
    written: AtomicU64,
}

struct ZeroState {
    /// The last segment.
    file: Arc<File>,
    /// Bytes of it from the start that are frames or synced zeros.
    zeroed: u64,
    stop: bool,
}

impl Drop for Zeroing {
    fn drop(&mut self) {
        self.shared.state.lock().expect("zeroing lock").stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn zero_ahead(shared: &ZeroShared, ahead: u64, cap: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut failures = 0u32;
    let mut state = shared.state.lock().expect("zeroing lock");
    loop {
        if state.stop {
            return;
        }
        let target = shared
            .written
            .load(Ordering::Acquire)
            .saturating_add(ahead)
            .min(cap);
        if state.zeroed >= target {
            state = shared
                .wake
                .wait_timeout(state, std::time::Duration::from_millis(200))
                .expect("zeroing lock")
                .0;
            continue;
        }
        let from = state.zeroed;
        let to = (from + ZERO_CHUNK).min(cap);
        let file = state.file.clone();
        let mut done = Ok(());
        let mut at = from;
        while at < to && done.is_ok() {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            done = file.write_all_at(&ZEROS[..n], at);
            at += n as u64;
        }
        match done.and_then(|()| file.sync_data()) {
            Ok(()) => {
                failures = 0;
                state.zeroed = to;
                shared.zeroed.store(to, Ordering::Release);
            }
            Err(err) => {
                // A full disk, most likely: the writer appends as without preallocation
                // (zeros written so far are overwritten by frames or cut off by a roll).
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%err, "cannot zero-fill the log ahead of the writer; retrying every 5 s");
                }
                state = shared
                    .wake
                    .wait_timeout(state, std::time::Duration::from_secs(5))
                    .expect("zeroing lock")
                    .0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(log: &SegmentLog) -> Vec<Vec<u8>> {
        log.read_from(0)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    fn group(n: u32) -> Vec<u8> {
        format!("group {n} ")
            .repeat(1 + n as usize % 7)
            .into_bytes()
    }

    #[test]
    fn frames_come_back_in_order_across_rolls_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovery) = SegmentLog::open(dir.path(), 256).unwrap();
        assert_eq!(recovery, Recovery::default());
        let mut positions = Vec::new();
        for n in 0..40 {
            positions.push(log.append(&group(n)).unwrap());
        }
        assert!(segments(dir.path()).unwrap().len() > 3, "rolled");
        let end = log.end();
        drop(log);
        let (mut log, recovery) = SegmentLog::open(dir.path(), 256).unwrap();
        assert_eq!(recovery.frames, 40);
        assert_eq!(recovery.truncated, None);
        assert_eq!(log.end(), end);
        positions.push(log.append(&group(40)).unwrap());
        let all = log.read_from(0).unwrap();
        assert_eq!(all.len(), 41);
        for (n, (at, payload)) in all.iter().enumerate() {
            assert_eq!(*at, positions[n]);
            assert_eq!(*payload, group(n as u32));
        }
        let tail = log.read_from(positions[30]).unwrap();
        assert_eq!(tail.len(), 11);
        assert_eq!(tail[0].1, group(30));
    }

    /// The patch of frame `n` (as read at `at`): its payload with every byte upper-cased
    /// (same length), and its new checksum.
    fn upper_patch(at: u64, payload: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let new = payload.to_ascii_uppercase();
        let crc = crc32fast::hash(&new).to_le_bytes().to_vec();
        vec![
            (at + HEADER as u64, new.clone()),
            (at + (HEADER + new.len()) as u64, crc),
        ]
    }

    /// An in-place rewrite (a redaction's erasure) is seen by readers at once, and one
    /// that a crash cut short after its redo file was written is finished at the next
    /// open, before any frame is checked; a torn redo file (never renamed into place) is
    /// dropped and changes nothing.
    #[test]
    fn an_in_place_patch_survives_a_crash_at_any_step() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 256).unwrap();
        let mut positions = Vec::new();
        for n in 0..12 {
            positions.push(log.append(&group(n)).unwrap());
        }
        // live: the patch of frame 3 (a sealed segment) and of the last frame
        for n in [3usize, 11] {
            log.reader()
                .patch(&upper_patch(positions[n], &group(n as u32)))
                .unwrap();
        }
        assert!(!dir.path().join(PATCH_INTENT).exists());
        let read = payloads(&log);
        assert_eq!(read[3], group(3).to_ascii_uppercase());
        assert_eq!(read[11], group(11).to_ascii_uppercase());
        assert_eq!(read[4], group(4));
        drop(log);
        // a crash after the redo file, before the segment was written
        write_intent(dir.path(), &upper_patch(positions[7], &group(7))).unwrap();
        // and a torn redo file of another patch, never renamed into place
        std::fs::write(
            dir.path().join(PATCH_INTENT).with_extension("tmp"),
            b"SEALPT",
        )
        .unwrap();
        let (log, recovery) = SegmentLog::open(dir.path(), 256).unwrap();
        assert_eq!(recovery.frames, 12);
        assert!(!dir.path().join(PATCH_INTENT).exists());
        assert!(!dir.path().join(PATCH_INTENT).with_extension("tmp").exists());
        let read = payloads(&log);
        assert_eq!(read[7], group(7).to_ascii_uppercase());
        assert_eq!(read[3], group(3).to_ascii_uppercase());
        assert_eq!(read[6], group(6));
        // a damaged redo file is corruption, and changes nothing
        drop(log);
        write_intent(dir.path(), &upper_patch(positions[5], &group(5))).unwrap();
        let mut bytes = std::fs::read(dir.path().join(PATCH_INTENT)).unwrap();
        bytes[14] ^= 1;
        std::fs::write(dir.path().join(PATCH_INTENT), bytes).unwrap();
        assert!(matches!(
            SegmentLog::open(dir.path(), 256),
            Err(SegmentError::Corrupt { .. })
        ));
    }

    /// A range that runs over a segment's end (a chain read joining neighbouring frames'
    /// entries) is read from every segment it covers, byte for byte what the files hold.
    #[test]
    fn a_range_across_segments_reads_like_one_contiguous_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 256).unwrap();
        for n in 0..40 {
            log.append(&group(n)).unwrap();
        }
        let mut whole = Vec::new();
        for base in segments(dir.path()).unwrap() {
            assert_eq!(base, whole.len() as u64, "segments are contiguous");
            whole.extend(std::fs::read(segment_path(dir.path(), base)).unwrap());
        }
        assert_eq!(whole.len() as u64, log.end());
        let reader = log.reader();
        let bases = segments(dir.path()).unwrap();
        assert!(bases.len() > 3, "rolled");
        // From inside the first segment to inside the fourth, and exactly one segment.
        let (from, to) = (bases[0] + 10, bases[3] + 5);
        assert_eq!(
            reader.read_at(from, (to - from) as usize).unwrap(),
            &whole[from as usize..to as usize]
        );
        let one = (bases[2] - bases[1]) as usize;
        assert_eq!(
            reader.read_at(bases[1], one).unwrap(),
            &whole[bases[1] as usize..bases[2] as usize]
        );
        // Past the end of the log: corruption, not a short read.
        assert!(reader.read_at(log.end() - 4, 8).is_err());
    }

    /// Every way the last write can be cut short (any prefix of the frame on disk, or its
    /// pages persisted out of order with zeros between) is cut off at open, and every
    /// earlier frame is kept.
    #[test]
    fn a_torn_last_frame_is_cut_off_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 1 << 20).unwrap();
        for n in 0..5 {
            log.append(&group(n)).unwrap();
        }
        let good_end = log.end();
        log.append(&vec![7u8; 3000]).unwrap();
        drop(log);
        let path = segment_path(dir.path(), 0);
        let full = std::fs::read(&path).unwrap();
        let mut torn_versions: Vec<Vec<u8>> = (good_end as usize + 1..full.len())
            .step_by(97)
            .map(|cut| full[..cut].to_vec())
            .collect();
        // Pages persisted out of order: the header page zero, the rest there; or the
        // middle zero.
        let mut zero_head = full.clone();
        zero_head[good_end as usize..good_end as usize + 100].fill(0);
        torn_versions.push(zero_head);
        let mut zero_middle = full.clone();
        zero_middle[good_end as usize + 500..good_end as usize + 1500].fill(0);
        torn_versions.push(zero_middle);
        // The file grew but nothing of the frame reached the disk.
        // (A last frame none of whose bytes reached the disk is zeros, like the space
        // `preallocate` fills: the log ends there, nothing is reported or cut.)
        let mut all_zero = full.clone();
        all_zero[good_end as usize..].fill(0);
        std::fs::write(&path, &all_zero).unwrap();
        let (log, recovery) = SegmentLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((recovery.frames, recovery.truncated), (5, None));
        assert_eq!(log.end(), good_end);
        assert_eq!(payloads(&log), (0..5).map(group).collect::<Vec<_>>());
        drop(log);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full.len() as u64);
        for torn in torn_versions {
            std::fs::write(&path, &torn).unwrap();
            let (mut log, recovery) = SegmentLog::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(recovery.frames, 5);
            let (file, offset, dropped) = recovery.truncated.clone().expect("cut off");
            assert_eq!(file, path);
            assert_eq!(offset, good_end);
            assert_eq!(dropped, torn.len() as u64 - good_end);
            assert_eq!(log.end(), good_end);
            assert_eq!(payloads(&log), (0..5).map(group).collect::<Vec<_>>());
            // Appending goes on where the torn frame was.
            assert_eq!(log.append(b"after").unwrap(), good_end);
            drop(log);
            let (log, recovery) = SegmentLog::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(recovery.truncated, None);
            assert_eq!(payloads(&log).last().unwrap(), b"after");
        }
    }

    /// With preallocation the last segment runs ahead in zeros, a roll trims the segment
    /// it seals back to its last frame, and a reopened log (zeros and all) reads every
    /// frame and appends where the last one ended.
    #[test]
    fn preallocated_zeros_end_the_log_and_sealed_segments_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let roll = 2 * ZERO_CHUNK;
        let mut expected = Vec::new();
        for round in 0..3u32 {
            let (mut log, recovery) = SegmentLog::open(dir.path(), roll).unwrap();
            assert_eq!(recovery.truncated, None, "round {round}");
            assert_eq!(recovery.frames, expected.len() as u64);
            log.preallocate(2 * ZERO_CHUNK).unwrap();
            // Wait for the thread's first chunk, then write past it (some frames under
            // the lock, some within the zeros), across a roll.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::fs::metadata(segment_path(dir.path(), log.base))
                .unwrap()
                .len()
                <= log.len
            {
                assert!(std::time::Instant::now() < deadline, "nothing zero-filled");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            for n in 0..40u32 {
                let payload = vec![(round * 40 + n) as u8 | 1; 70_000 + n as usize * 997];
                log.append(&payload).unwrap();
                expected.push(payload);
            }
            let end = log.end();
            let last = segment_path(dir.path(), log.base);
            drop(log);
            let bases = segments(dir.path()).unwrap();
            assert!(bases.len() as u32 > round + 1, "rolled: {bases:?}");
            // Sealed segments are contiguous (each ends at its last frame).
            for w in bases.windows(2) {
                let size = std::fs::metadata(segment_path(dir.path(), w[0]))
                    .unwrap()
                    .len();
                assert_eq!(w[0] + size, w[1]);
            }
            let size = std::fs::metadata(&last).unwrap().len();
            assert!(*bases.last().unwrap() + size >= end);
            let (log, _) = SegmentLog::open(dir.path(), roll).unwrap();
            assert_eq!(log.end(), end);
            let read: Vec<Vec<u8>> = payloads(&log);
            assert!(read == expected, "round {round}: frames differ");
        }
    }

    /// Bytes of `path` in the page cache, by util-linux's `fincore`.
    fn cached_bytes(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("this test needs `fincore` (util-linux)");
        assert!(out.status.success(), "fincore: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `keep_cached`: sealed segments a window behind the end leave the page cache (by the
    /// thread after a roll, and right after a replay reads them), the newer ones and the
    /// last one stay, and every frame still reads back whole.
    #[test]
    fn sealed_segments_a_window_behind_the_end_leave_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (roll, window) = (256 * 1024, 512 * 1024);
        let (mut log, _) = SegmentLog::open(dir.path(), roll).unwrap();
        log.keep_cached(window).unwrap();
        let mut expected = Vec::new();
        for n in 0..40u32 {
            let payload = vec![n as u8 | 1; 60_000 + n as usize * 13];
            log.append(&payload).unwrap();
            expected.push(payload);
        }
        let end = log.end();
        let bases = segments(dir.path()).unwrap();
        assert!(bases.len() > 6, "rolled: {bases:?}");
        // (path, cold): a sealed segment is cold once it ends a window before the end.
        let sealed: Vec<(PathBuf, bool)> = bases
            .windows(2)
            .map(|w| (segment_path(dir.path(), w[0]), w[1] + window <= end))
            .collect();
        assert!(sealed.iter().filter(|(_, cold)| *cold).count() >= 3);
        assert!(
            sealed.iter().any(|(_, cold)| !cold),
            "some sealed ones are warm"
        );
        let last = segment_path(dir.path(), *bases.last().unwrap());
        let check = |why: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            for (path, cold) in &sealed {
                if *cold {
                    // The thread drops them soon after the roll that made them cold.
                    while cached_bytes(path) > 0 {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "{why}: {} is still cached",
                            path.display()
                        );
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                } else {
                    assert!(
                        cached_bytes(path) > 0,
                        "{why}: {} was dropped",
                        path.display()
                    );
                }
            }
            assert!(
                cached_bytes(&last) > 0,
                "{why}: the last segment was dropped"
            );
        };
        check("after appending");
        // A whole read (a replay) brings them back and drops the cold ones it read.
        assert!(payloads(&log) == expected, "frames differ");
        for (path, cold) in &sealed {
            if *cold {
                assert_eq!(cached_bytes(path), 0, "after a replay: {}", path.display());
            }
        }
        check("after a replay");
        // Records are read by position from dropped segments just the same.
        let reader = log.reader();
        let first = reader.read_at(PAYLOAD_OFFSET, 60_000).unwrap();
        assert!(first == expected[0]);
        // Off (0): nothing is dropped.
        drop(log);
        let (mut log, _) = SegmentLog::open(dir.path(), roll).unwrap();
        log.keep_cached(0).unwrap();
        assert!(payloads(&log) == expected);
        for (path, _) in &sealed {
            assert!(
                cached_bytes(path) > 0,
                "off: {} was dropped",
                path.display()
            );
        }
    }

    /// A flipped byte anywhere but in the last frame, in the last segment or an earlier
    /// one, is corruption: open refuses, names the file and offset, and changes nothing.
    #[test]
    fn a_flipped_byte_before_the_last_frame_refuses_to_open_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 200).unwrap();
        // At least 30 frames, and at least two in the last segment.
        let mut appended = 0;
        while appended < 30
            || log.len == 0
            || scan(&std::fs::read(segment_path(dir.path(), log.base)).unwrap())
                .0
                .len()
                < 2
        {
            log.append(&group(appended)).unwrap();
            appended += 1;
        }
        drop(log);
        let bases = segments(dir.path()).unwrap();
        assert!(bases.len() >= 3);
        let last = segment_path(dir.path(), *bases.last().unwrap());
        let earlier = segment_path(dir.path(), bases[1]);
        let last_bytes = std::fs::read(&last).unwrap();
        let (frames, _) = scan(&last_bytes);
        assert!(
            frames.len() >= 2,
            "{} frames in the last segment",
            frames.len()
        );
        let first_payload_byte = frames[0].start;
        for (path, at) in [
            (&earlier, 3usize),
            (&earlier, 20),
            (&last, first_payload_byte),
            (&last, 1),
        ] {
            let original = std::fs::read(path).unwrap();
            let mut flipped = original.clone();
            flipped[at] ^= 0x40;
            std::fs::write(path, &flipped).unwrap();
            let before: Vec<_> = bases
                .iter()
                .map(|b| std::fs::read(segment_path(dir.path(), *b)).unwrap())
                .collect();
            match SegmentLog::open(dir.path(), 200) {
                Err(SegmentError::Corrupt { file, offset, .. }) => {
                    assert_eq!(&file, path);
                    assert_eq!(offset, 0, "the frame holding byte {at} starts at 0 here");
                }
                Err(other) => panic!("{other}"),
                Ok(_) => panic!("opened a log with byte {at} of {} flipped", path.display()),
            }
            let after: Vec<_> = bases
                .iter()
                .map(|b| std::fs::read(segment_path(dir.path(), *b)).unwrap())
                .collect();
            assert_eq!(before, after, "nothing changed on disk");
            std::fs::write(path, &original).unwrap();
        }
        let (log, recovery) = SegmentLog::open(dir.path(), 200).unwrap();
        assert_eq!(recovery.frames, u64::from(appended));
        assert_eq!(payloads(&log), (0..appended).map(group).collect::<Vec<_>>());
    }

    /// The writer half of the SIGKILL test: appends until killed, printing each position
    /// once `append` has returned (what a caller would acknowledge). Run only by that test.
    #[test]
    #[ignore = "the writer half of frames_acknowledged_before_a_sigkill_survive_it"]
    fn sigkill_writer() {
        let Ok(dir) = std::env::var("SEALTRAIL_SEGMENT_WRITER_DIR") else {
            return;
        };
        use std::io::Write;
        let (mut log, _) = SegmentLog::open(Path::new(&dir), 64 * 1024).unwrap();
        // Zero-filled ahead, as the store runs it: a kill then also lands mid-chunk,
        // and between a roll's trim and the new segment.
        log.preallocate(32 * 1024).unwrap();
        let mut out = std::io::stdout().lock();
        for n in 0.. {
            let at = log.append(&group(n)).unwrap();
            writeln!(out, "ACK {at} {n}").unwrap();
            out.flush().unwrap();
        }
    }

    /// A writer SIGKILLed mid-append, five times over the same log: every frame whose
    /// append returned is there after reopening, in order, with its bytes.
    #[test]
    fn frames_acknowledged_before_a_sigkill_survive_it() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut acked: Vec<(u64, u32)> = Vec::new();
        for round in 0..5 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "segment::tests::sigkill_writer",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("SEALTRAIL_SEGMENT_WRITER_DIR", dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let mut this_round = Vec::new();
            while this_round.len() < 200 + round * 150 {
                let line = lines.next().expect("writer output").unwrap();
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let (at, n) = rest.split_once(' ').unwrap();
                    this_round.push((at.parse::<u64>().unwrap(), n.parse::<u32>().unwrap()));
                }
            }
            child.kill().unwrap();
            child.wait().unwrap();
            // Whatever the writer printed after we stopped reading was acknowledged too.
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let (at, n) = rest.split_once(' ').unwrap();
                    this_round.push((at.parse().unwrap(), n.parse().unwrap()));
                }
            }
            let (log, _) = SegmentLog::open(dir.path(), 64 * 1024).unwrap();
            let stored = log.read_from(0).unwrap();
            // Each round's writer numbers its groups from 0 again.
            acked.extend(this_round);
            assert!(
                stored.len() >= acked.len(),
                "round {round}: {} stored, {} acknowledged",
                stored.len(),
                acked.len()
            );
            for (at, n) in &acked {
                let found = stored
                    .iter()
                    .find(|(p, _)| p == at)
                    .unwrap_or_else(|| panic!("round {round}: frame at {at} lost"));
                assert_eq!(found.1, group(*n), "round {round}: frame at {at}");
            }
            let positions: Vec<u64> = stored.iter().map(|(p, _)| *p).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_missing_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 100).unwrap();
        for n in 0..20 {
            log.append(&group(n)).unwrap();
        }
        drop(log);
        let bases = segments(dir.path()).unwrap();
        std::fs::remove_file(segment_path(dir.path(), bases[1])).unwrap();
        let err = SegmentLog::open(dir.path(), 100).err().expect("refused");
        assert!(err.to_string().contains("a segment is missing"), "{err}");
    }
}
