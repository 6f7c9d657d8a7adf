//! Access records: which narinfos a `serve` replica answered, and when, so that `gc
//! --max-size` evicts the paths least recently *used* (not only pushed) and `gc --unused-for`
//! collects paths neither pushed nor read for a while.
//!
//! A replica keeps the hash parts of the narinfos it answers in memory (nothing is added to a
//! request but an insertion into a map) and appends, at most once per
//! [`FLUSH_EVERY`], one object `.cachecore/access/<time>-<unique>` listing them with the time
//! of their last read; it flushes once more when it stops. Append-only under unique names, as
//! the push index: replicas never contend, duplicates are harmless (the latest time wins).
//! A GC reads every record and merges them into one (deleting the ones it merged). Losing
//! them loses nothing but the access times (paths fall back to their push times).
//!
//! Format:
//!
//! ```text
//! cachecore-access 1
//! <hash part> <unix seconds of the last read>
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;

use super::roots::unix_secs;
use crate::store::{layout, BinaryCache, StoreError, WriteMode};

/// The first line of an access record.
pub const ACCESS_HEADER: &str = "cachecore-access 1";

/// How often a replica writes what it recorded (at most once in this time).
pub const FLUSH_EVERY: Duration = Duration::from_secs(60);

/// The largest access record read: 64 MiB (about 1.5 million paths).
pub const MAX_ACCESS_RECORD_BYTES: u64 = 64 << 20;

/// The body of a record of `last_read` (hash part → Unix seconds), sorted.
pub fn render(last_read: &HashMap<String, u64>) -> String {
    let mut lines: Vec<(&String, &u64)> = last_read.iter().collect();
    lines.sort();
    let mut out = format!("{ACCESS_HEADER}\n");
    for (hash, secs) in lines {
        out.push_str(&format!("{hash} {secs}\n"));
    }
    out
}

/// Parses a record into `into` (the later time wins), or says why it does not parse.
pub fn parse_into(bytes: &[u8], into: &mut HashMap<String, u64>) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(ACCESS_HEADER) {
        return Err(format!("line 1 is not `{ACCESS_HEADER}`"));
    }
    for (i, line) in lines.enumerate() {
        let parsed = line.split_once(' ').and_then(|(h, t)| {
            let ok = h.len() == crate::store_path::HASH_PART_LEN
                && h.bytes().all(|b| b.is_ascii_alphanumeric());
            Some((h, t.parse::<u64>().ok()?)).filter(|_| ok)
        });
        let Some((hash, secs)) = parsed else {
            return Err(format!(
                "line {}: {:?} is not `<hash part> <unix seconds>`",
                i + 2,
                crate::narinfo::excerpt(line)
            ));
        };
        let t = into.entry(hash.to_owned()).or_insert(secs);
        *t = (*t).max(secs);
    }
    Ok(())
}

/// What the access records of a cache say.
#[derive(Debug, Default)]
pub struct AccessRead {
    /// Hash part → Unix seconds of the last read any replica recorded.
    pub last_read: HashMap<String, u64>,
    /// Records that do not parse (`key: why`), left alone.
    pub problems: Vec<String>,
    /// The names of the records read (those that parse).
    pub records: Vec<String>,
}

/// Reads every access record of `cache`.
pub async fn read(cache: &BinaryCache) -> Result<AccessRead, StoreError> {
    let listed: Vec<crate::store::ObjectInfo> = cache
        .objects()
        .list(layout::ACCESS_DIR)
        .try_collect()
        .await?;
    let mut out = AccessRead::default();
    for meta in listed {
        let Some(name) = layout::access_record_name(&meta.key) else {
            continue;
        };
        let Some(bytes) = cache
            .objects()
            .get_bytes_limited(&meta.key, MAX_ACCESS_RECORD_BYTES)
            .await?
        else {
            continue;
        };
        match parse_into(&bytes, &mut out.last_read) {
            Ok(()) => out.records.push(name.to_owned()),
            Err(why) => out.problems.push(format!("{}: {why}", meta.key)),
        }
    }
    Ok(out)
}

/// Writes a record of `last_read` (nothing for none); returns its name.
pub async fn write(
    cache: &BinaryCache,
    last_read: &HashMap<String, u64>,
) -> Result<Option<String>, StoreError> {
    if last_read.is_empty() {
        return Ok(None);
    }
    let unique = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let name = format!("{}-{unique:016x}", unix_secs(SystemTime::now()));
    cache
        .objects()
        .put(
            &layout::access_record(&name),
            Bytes::from(render(last_read)),
            WriteMode::Overwrite,
        )
        .await?;
    Ok(Some(name))
}

/// Merges the records `read` came from into one (written first), then deletes them. Nothing
/// for fewer than two.
pub async fn compact(cache: &BinaryCache, read: &AccessRead) -> Result<(), StoreError> {
    if read.records.len() < 2 {
        return Ok(());
    }
    write(cache, &read.last_read).await?;
    for name in &read.records {
        cache.objects().delete(&layout::access_record(name)).await?;
    }
    Ok(())
}

/// What a `serve` replica records: the narinfos it answered since its last flush.
#[derive(Debug)]
pub struct AccessRecorder {
    cache: BinaryCache,
    seen: Mutex<HashMap<String, u64>>,
}

impl AccessRecorder {
    /// A recorder writing to `cache`.
    pub fn new(cache: BinaryCache) -> Self {
        AccessRecorder {
            cache,
            seen: Mutex::default(),
        }
    }

    /// Notes that the narinfo of `hash` was read now (in memory only).
    pub fn record(&self, hash: &str) {
        let now = unix_secs(SystemTime::now());
        self.lock().insert(hash.to_owned(), now);
    }

    /// Writes what was recorded since the last flush, if anything, as one record; what could
    /// not be written is kept for the next flush.
    pub async fn flush(&self) -> Result<Option<String>, StoreError> {
        let taken = std::mem::take(&mut *self.lock());
        match write(&self.cache, &taken).await {
            Ok(name) => Ok(name),
            Err(e) => {
                let mut seen = self.lock();
                for (h, t) in taken {
                    let slot = seen.entry(h).or_insert(t);
                    *slot = (*slot).max(t);
                }
                Err(e)
            }
        }
    }

    /// Flushes every `every` until `stop` completes, then once more (what a failed write held
    /// is written by the next flush; the last one's failure is the task's result).
    pub fn spawn_flusher(
        self: std::sync::Arc<Self>,
        every: Duration,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = self.flush().await;
                    }
                    () = &mut stop => break,
                }
            }
            self.flush().await.map(drop)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn records_round_trip_merge_and_compact() {
        let cache = BinaryCache::open("memory://").unwrap();
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let recorder = AccessRecorder::new(cache.clone());
        assert_eq!(recorder.flush().await.unwrap(), None);
        recorder.record(&a);
        recorder.flush().await.unwrap().unwrap();
        write(&cache, &HashMap::from([(a.clone(), 1), (b.clone(), 7)]))
            .await
            .unwrap();
        let read_back = read(&cache).await.unwrap();
        assert_eq!(read_back.records.len(), 2);
        assert!(read_back.last_read[&a] > 1_000_000_000);
        assert_eq!(read_back.last_read[&b], 7);
        compact(&cache, &read_back).await.unwrap();
        let again = read(&cache).await.unwrap();
        assert_eq!(
            (again.records.len(), again.last_read),
            (1, read_back.last_read)
        );
        let mut m = HashMap::new();
        assert_eq!(
            parse_into(b"cachecore-access 1\nxyz 1\n", &mut m).unwrap_err(),
            "line 2: \"xyz 1\" is not `<hash part> <unix seconds>`"
        );
    }
}
