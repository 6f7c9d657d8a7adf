//! `sign`: add a signature to narinfos already in a cache, as `nix store sign --store URL`
//! does: for paths pushed unsigned, or signed by a key that is being replaced. Only the `Sig`
//! lines change — and, for a narinfo with frame digests (`FramesHash`, see
//! [`crate::access::frame_digests`]), a `FramesSig` by the same key is added, after checking
//! that the digests are in the cache, hash to `FramesHash` and describe the NAR object's seek
//! table, and that the listing hashes to `ListingHash` (a signer vouches only for what it
//! checked; this reads the digests, the listing and the object's last bytes, no frame). A
//! narinfo that already carries this key's signatures is left as it is, so running it again
//! writes nothing.

use std::sync::Arc;

use futures::StreamExt as _;

use super::{OpError, Progress};
use crate::access::{FramesClaim, NarAccess};
use crate::error::ErrorKind;
use crate::hash::Hash;
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
    /// Narinfos written with the new signature (or `FramesSig`).
    pub signed: usize,
    /// Narinfos that carried this key's signatures already (left as they were).
    pub already: usize,
    /// Of the narinfos written, those given a `FramesSig`.
    pub frames_signed: usize,
    /// Narinfos whose frame digests failed a check, so that no `FramesSig` was added (readers
    /// checking frames read their NARs whole): one sentence each, naming the path and cause.
    pub frames_refused: Vec<String>,
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
        let sig = !signed_by(&info, signer.as_ref())?;
        let claim = FramesClaim::of(&info).filter(|c| !c.signed_by(&info, signer.as_ref()));
        if sig || claim.is_some() {
            todo.push((info, sig, claim));
        } else {
            summary.already += 1;
        }
    }
    progress.planned(todo.len(), 0, summary.already);
    let mut writes = futures::stream::iter(todo.into_iter().map(|(mut info, sig, claim)| {
        let progress = progress.clone();
        async move {
            if sig {
                info.sign(signer.as_ref())?;
            }
            let mut refused = None;
            if let Some(claim) = &claim {
                match check_claim(cache, &info, claim).await? {
                    Ok(()) => claim.add_signature(&mut info, signer.as_ref()),
                    Err(why) => refused = Some(why),
                }
            }
            let written = sig || refused.is_none();
            if written {
                cache.put_narinfo(&info).await?;
            }
            progress.path_done(&info.store_dir.full_path(&info.store_path));
            Ok::<_, OpError>((written, claim.is_some() && refused.is_none(), refused))
        }
    }))
    .buffer_unordered(jobs.max(1));
    while let Some(done) = writes.next().await {
        let (written, framed, refused) = done?;
        summary.signed += usize::from(written);
        summary.frames_signed += usize::from(framed);
        if !written {
            summary.already += 1;
        }
        summary.frames_refused.extend(refused);
    }
    summary.frames_refused.sort();
    Ok(summary)
}

/// Checks what a `FramesSig` over `claim` would vouch for: the frame digests against the NAR
/// object's seek table ([`NarAccess::check_frame_digests`]) and the listing against
/// `ListingHash`. `Ok(Err(why))`, a sentence naming the path, when the cache's objects fail
/// it; `Err` when the cache could not be read.
async fn check_claim(
    cache: &BinaryCache,
    info: &NarInfo,
    claim: &FramesClaim,
) -> Result<Result<(), String>, OpError> {
    let path = info.store_dir.full_path(&info.store_path);
    let refused = |why: String| Ok(Err(format!("{path}: no FramesSig added: {why}")));
    let checked = match NarAccess::new(cache, info.clone()) {
        Ok(nar) => nar.check_frame_digests(claim).await.map(drop),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => {}
        // The cache's objects are bad (or the NAR is missing): refused; the cache could not
        // be read (or the local side failed): an error.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Corrupt | ErrorKind::NotFound | ErrorKind::Unsupported
            ) =>
        {
            return refused(e.to_string())
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(expected) = &claim.listing {
        match cache.listing_bytes(&info.store_path).await {
            Ok(Some(bytes)) => {
                let actual = Hash::digest(expected.algo(), &bytes);
                if actual != *expected {
                    return refused(format!(
                        "its listing hashes to {actual}, but the narinfo's ListingHash is \
                         {expected}"
                    ));
                }
            }
            Ok(None) => {
                return refused(
                    "its listing is missing, but the narinfo's ListingHash names one".into(),
                )
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                return refused(format!("its listing cannot be read: {e}"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Ok(()))
}
