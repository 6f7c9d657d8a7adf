//! `cachecore store-path PATH`.

use std::path::Path;

use anyhow::Context as _;
use cachecore::store_path::StoreDir;

pub fn run(path: &Path, name: Option<String>, store_dir: &str) -> anyhow::Result<()> {
    let name = match name {
        Some(n) => n,
        // Like `nix-store --add`: the last component of the path as given (a symlink is not
        // resolved), after making it absolute so `.` names the current directory.
        None => std::path::absolute(path)
            .ok()
            .and_then(|p| {
                p.components()
                    .next_back()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
            })
            .filter(|n| n != "/")
            .with_context(|| format!("{} has no file name to use; pass --name", path.display()))?,
    };
    let (nar_hash, _size) = cachecore::nar::hash_path(path)?;
    let dir = StoreDir::new(store_dir);
    let store_path = dir
        .make_source_path(&nar_hash, &name)
        .with_context(|| format!("cannot name {} {name:?}", path.display()))?;
    crate::stdout::outln!("{}", dir.full_path(&store_path))?;
    Ok(())
}
