//! Criterion benches of the format layer: NAR pack and read, narinfo parse, sha256 hashing.
//! Side-by-side comparisons against Nix itself are in `benches/nar-vs-nix.sh`.

use std::hint::black_box;
use std::io::{self, Write as _};
use std::path::Path;

use cachecore::hash::{HashAlgo, HashingWriter};
use cachecore::nar;
use cachecore::narinfo::NarInfo;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A tree of `dirs` directories holding `files` files of `size` bytes each.
fn make_tree(root: &Path, dirs: usize, files: usize, size: usize) -> u64 {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for d in 0..dirs {
        let dir = root.join(format!("dir-{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("file-{f}")), &data).unwrap();
        }
    }
    (dirs * files * size) as u64
}

fn pack(c: &mut Criterion) {
    let mut group = c.benchmark_group("nar_pack");
    for (label, dirs, files, size) in [
        ("small-files", 50, 100, 2_000),
        ("large-files", 4, 4, 8 << 20),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = make_tree(tmp.path(), dirs, files, size);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(BenchmarkId::new("pack", label), tmp.path(), |b, p| {
            b.iter(|| nar::pack(p, io::sink()).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("hash_path", label), tmp.path(), |b, p| {
            b.iter(|| nar::hash_path(p).unwrap())
        });
        let mut packed = Vec::new();
        nar::pack(tmp.path(), &mut packed).unwrap();
        group.bench_with_input(
            BenchmarkId::new("read_listing", label),
            &packed,
            |b, packed| b.iter(|| nar::Listing::from_nar(&packed[..]).unwrap()),
        );
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let data = vec![7u8; 16 << 20];
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("sha256_16MiB", |b| {
        b.iter(|| {
            let mut w = HashingWriter::new(HashAlgo::Sha256, io::sink());
            w.write_all(black_box(&data)).unwrap();
            w.finish().0
        })
    });
    group.finish();
}

fn narinfo(c: &mut Criterion) {
    let text = include_str!("../../cachecore/testdata/nix-2.8-signed.narinfo");
    c.bench_function("narinfo_parse", |b| {
        b.iter(|| NarInfo::parse(black_box(text)).unwrap())
    });
    let info = NarInfo::parse(text).unwrap();
    c.bench_function("narinfo_serialize", |b| {
        b.iter(|| black_box(&info).to_string())
    });
}

criterion_group!(benches, pack, hashing, narinfo);
criterion_main!(benches);
