//! `cachecore store-path PATH`.

use std::path::Path;

use anyhow::Context as _;
use cachecore::store_path::StoreDir;

pub fn run(path: &Path, name: Option<String>, store_dir: &str) -> anyhow::Result<()> {
    let name = match name {
        Some(n) => n,
        None => path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .with_context(|| format!("{} has no file name to use; pass --name", path.display()))?,
    };
    let (nar_hash, _size) = cachecore::nar::hash_path(path)?;
    let dir = StoreDir::new(store_dir);
    let store_path = dir
        .make_source_path(&nar_hash, &name)
        .with_context(|| format!("cannot name {} {name:?}", path.display()))?;
    println!("{}", dir.full_path(&store_path));
    Ok(())
}
