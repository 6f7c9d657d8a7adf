//! Random access into a large NAR over real HTTP: reading a 1 KiB file inside a ~600 MiB store
//! path fetches its narinfo, its listing and under 2% of the NAR's compressed size, counted by
//! the HTTP server that serves the cache (Python's http.server with ranges).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use cachecore::ops::{self, NoProgress, PushOptions};
use cachecore::store::BinaryCache;
use cachecore::store_path::StoreDir;
use common::http_server::HttpServer;
use common::{text_bytes, Xorshift};

/// ~600 MiB in 300 files of 2 MiB under a/ and z/, and `m/needle.txt` (1 KiB) between them in
/// NAR order. Returns the needle's contents.
fn generate_tree(root: &Path) -> Vec<u8> {
    // Seed 0: the same tree on every run.
    let mut rng = Xorshift::new(0);
    for dir in ["a", "z"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for i in 0..150 {
            let mut f =
                std::fs::File::create(root.join(dir).join(format!("lib{i:03}.py"))).unwrap();
            f.write_all(&text_bytes(&mut rng, 2 << 20)).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("m")).unwrap();
    let needle = text_bytes(&mut rng, 1024);
    std::fs::write(root.join("m/needle.txt"), &needle).unwrap();
    needle
}

#[test]
fn reading_a_small_file_of_a_600_mib_path_fetches_under_2_percent_of_its_nar() {
    let work = tempfile::tempdir().unwrap();
    let (tree, cache_dir) = (work.path().join("tree"), work.path().join("cache"));
    let needle = generate_tree(&tree);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let writer = BinaryCache::open(cache_dir.to_str().unwrap()).unwrap();
    let (path, summary) = rt
        .block_on(ops::push_add(
            &writer,
            &StoreDir::default(),
            &tree,
            "big-tree",
            &PushOptions::default(),
            Arc::new(NoProgress),
        ))
        .unwrap();
    assert_eq!(summary.pushed, 1);
    assert!(summary.nar_bytes > 600_000_000, "{summary:?}");

    let server = HttpServer::serve(&cache_dir);
    let cache = BinaryCache::open(&server.url()).unwrap();
    let info = rt.block_on(cache.narinfo(&path)).unwrap().unwrap();
    let file_size = info.file_size.unwrap();
    server.reset_counts();

    let out = SharedBuf::default();
    rt.block_on(ops::cat_file(&cache, &path, "m/needle.txt", out.clone()))
        .unwrap();
    assert_eq!(out.bytes(), needle, "the file read by ranges");

    let served = server.served();
    let hash = path.hash_part();
    let narinfo_key = format!("{hash}.narinfo");
    let listing_key = format!("{hash}.ls");
    let nar_key = info.url.clone();
    eprintln!(
        "NarSize {} FileSize {file_size}; served: {served:?}",
        info.nar_size
    );
    assert_eq!(served.get(&narinfo_key).map(|c| c.0), Some(1), "{served:?}");
    assert_eq!(served.get(&listing_key).map(|c| c.0), Some(1), "{served:?}");
    let (nar_requests, nar_bytes) = served.get(&nar_key).copied().unwrap_or_default();
    // (A key counted with no request is the tail of a read begun before the counts were reset.)
    assert!(
        served
            .iter()
            .filter(|(_, (requests, _))| *requests > 0)
            .all(|(k, _)| [&narinfo_key, &listing_key, &nar_key].contains(&k)),
        "only the narinfo, the listing and the NAR are read: {served:?}"
    );
    // The seek table (one tail probe) and the frame holding the file.
    assert!(
        (1..=3).contains(&nar_requests),
        "{nar_requests} requests of the NAR"
    );
    let share = nar_bytes as f64 / file_size as f64;
    eprintln!(
        "read {nar_bytes} bytes of a {file_size}-byte .nar.zst in {nar_requests} ranged GETs: {:.3}%",
        share * 100.0
    );
    assert!(
        share < 0.02,
        "{nar_bytes} bytes of the NAR fetched, {:.2}% of its {file_size} bytes",
        share * 100.0
    );

    // A second file read through the same cache fetches its own frames, nothing twice.
    server.reset_counts();
    let file = rt
        .block_on(ops::open_file(&cache, &path, "z/lib149.py"))
        .unwrap();
    let tail = rt
        .block_on(file.read(file.size() - 100..file.size()))
        .unwrap();
    let expected = std::fs::read(tree.join("z/lib149.py")).unwrap();
    assert_eq!(&tail[..], &expected[expected.len() - 100..]);
    let nar_bytes = server.served().get(&nar_key).map_or(0, |c| c.1);
    assert!(nar_bytes < file_size / 50, "{nar_bytes}");
}

/// A `Write` whose bytes the test can read after handing it away.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
