//! `sign`: add a signature to narinfos already in a cache, as `nix store sign --store URL`
//! does: for paths pushed unsigned, or signed by a key that is being replaced. Only the `Sig`
//! lines change; a narinfo that already carries this key's signature is left as it is, so
//! running it again writes nothing.

use std::sync::Arc;

use futures::StreamExt as _;

use super::{OpError, Progress};
use crate::narinfo::NarInfo;
use crate::signing::Signer;
use crate::store::BinaryCache;
use crate::store_path::StorePath;

/// Which narinfos [`sign`] signs.
#[derive(Debug, Clone, Copy)]
pub enum SignPaths<'a> {
    /// These store paths and their closures (as the cache's narinfos give them).
    Closures(&'a [StorePath]),
    /// Every narinfo in the cache.
    All,
}

/// What a [`sign`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignSummary {
    /// Narinfos written with the new signature.
    pub signed: usize,
    /// Narinfos that carried this key's signature already (left as they were).
    pub already: usize,
}

/// Whether `info` carries `signer`'s signature of its fingerprint (ed25519 signatures are
/// deterministic: the signature it would write now is the one it wrote before).
pub fn signed_by(info: &NarInfo, signer: &dyn Signer) -> Result<bool, OpError> {
    let sig = signer.sign(info.fingerprint()?.as_bytes()).to_string();
    Ok(info.signatures.contains(&sig))
}

/// Adds `signer`'s signature to the narinfos `which` names, `jobs` written at once; each is
/// reported through `progress` as it is done. Works on every store kind; through a
/// `cachecore serve` the token must allow signing.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{ops::{self, SignPaths}, signing::{SecretKey, Signer}, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let key: Arc<dyn Signer> = Arc::new(SecretKey::generate("cache.example.org-1").unwrap());
/// let first = ops::sign(&cache, SignPaths::All, &key, 4, Arc::new(NoProgress)).await.unwrap();
/// assert_eq!((first.signed, first.already), (1, 0));
/// // Again: nothing to do.
/// let again = ops::sign(&cache, SignPaths::All, &key, 4, Arc::new(NoProgress)).await.unwrap();
/// assert_eq!((again.signed, again.already), (0, 1));
/// assert_eq!(cache.narinfo(&path).await.unwrap().unwrap().signatures.len(), 1);
/// # });
/// ```
pub async fn sign(
    cache: &BinaryCache,
    which: SignPaths<'_>,
    signer: &Arc<dyn Signer>,
    jobs: usize,
    progress: Arc<dyn Progress>,
) -> Result<SignSummary, OpError> {
    super::require_writable(cache)?;
    let all;
    let roots = match which {
        SignPaths::Closures(roots) => roots,
        // Every path, as `ls` lists them (a `cachecore serve` answers for itself).
        SignPaths::All => {
            all = super::list_paths(cache)
                .await?
                .iter()
                .filter_map(|p| StorePath::from_base_name(p.rsplit('/').next()?).ok())
                .collect::<Vec<_>>();
            &all[..]
        }
    };
    let infos = crate::graph::closure(cache, roots)
        .await
        .map_err(OpError::Graph)?;
    let mut summary = SignSummary::default();
    let mut todo = Vec::new();
    for info in infos {
        if signed_by(&info, signer.as_ref())? {
            summary.already += 1;
        } else {
            todo.push(info);
        }
    }
    progress.planned(todo.len(), 0, summary.already);
    let mut writes = futures::stream::iter(todo.into_iter().map(|mut info| {
        let progress = progress.clone();
        async move {
            info.sign(signer.as_ref())?;
            cache.put_narinfo(&info).await?;
            progress.path_done(&info.store_dir.full_path(&info.store_path));
            Ok::<(), OpError>(())
        }
    }))
    .buffer_unordered(jobs.max(1));
    while let Some(written) = writes.next().await {
        written?;
        summary.signed += 1;
    }
    Ok(summary)
}
