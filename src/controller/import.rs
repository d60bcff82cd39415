//! `--restoresnapshots` for the original Go controller's archives: every `<name>.tgz` at the
//! root of an ObjectstoreConfig's bucket that has no Snapshot CR is imported into the mirror
//! (`crate::import`), pushed to the store like any snapshot, and given a `Completed` Snapshot
//! CR annotated [`IMPORTED_FROM`]. The archive itself is left where it is (`--housekeepstore`
//! only ever deletes keys under the store's own `k8s-snap/` prefix); it is deleted only with
//! its imported Snapshot CR (the finalizer calls [`delete_archive`]), as the original deleted
//! a snapshot's file with its CR.
//!
//! Owns: finding, importing and registering the archives. Must not touch: the archive format
//! (in `crate::import`), other CRs' status, any key under the store prefix but through `sync`.

use std::collections::HashSet;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt};

use super::Context;
use super::crd::{self, Snapshot, SnapshotStatus, condition, set_condition};
use super::work::{self, StoreTarget, WorkError};
use crate::import::{self, ImportOptions, ImportSummary};
use crate::restore::status::phase;
use crate::store::ObjectStore;

/// Annotation of a Snapshot CR imported from an archive of the original controller: the
/// archive's `s3://bucket/key`.
pub const IMPORTED_FROM: &str = "clustersnapshot.rywt.io/imported-from";

/// The bucket root of an ObjectstoreConfig's store (where the original kept its archives).
fn bucket_root(target: &StoreTarget) -> StoreTarget {
    let mut root = target.clone();
    root.spec.prefix = None;
    root
}

/// The archives (`<name>.tgz`, no `/`) at the root of the bucket, by snapshot name.
async fn archives(root: &dyn ObjectStore) -> Result<Vec<(String, String)>, WorkError> {
    Ok(root
        .list("")
        .await?
        .into_iter()
        .filter(|o| !o.key.contains('/'))
        .filter_map(|o| {
            let name = o.key.strip_suffix(".tgz")?.to_owned();
            crate::mirror::validate_name("snapshot", &name)
                .is_ok()
                .then_some((name, o.key))
        })
        .collect())
}

/// Imports `key` of the bucket root into the mirror at `git_dir` (unless the mirror already
/// has the snapshot from an earlier, interrupted round) and pushes it to the store.
async fn import_one(
    root: &dyn ObjectStore,
    target: &StoreTarget,
    git_dir: &Path,
    data_dir: &Path,
    key: &str,
    label: &str,
) -> Result<(ImportSummary, Option<work::Pushed>), WorkError> {
    let tmp = import::fetch_archive(root, key, &import::download_dir(data_dir)).await?;
    let opts = ImportOptions {
        name: None,
        source: label.to_owned(),
    };
    let file = tmp.path().to_path_buf();
    let dir = git_dir.to_path_buf();
    // The same archive imported by an earlier round whose push or CR creation failed: import
    // it again. Any other snapshot of that name is left alone (the import then refuses).
    let name = import::archive_dir_name(label)?;
    let again = {
        let (dir, name, label) = (dir.clone(), name.clone(), label.to_owned());
        move || -> Result<(), WorkError> {
            let Ok(m) = crate::mirror::Mirror::open(&dir) else {
                return Ok(());
            };
            let mirror_error = |source| WorkError::Mirror {
                path: dir.clone(),
                source,
            };
            if let Some(info) = m.snapshot(&name).map_err(mirror_error)?
                && info.meta.imported_from.as_deref() == Some(label.as_str())
            {
                m.delete_snapshot(&name).map_err(mirror_error)?;
            }
            Ok(())
        }
    };
    tokio::task::spawn_blocking(again)
        .await
        .map_err(WorkError::Join)??;
    let summary = tokio::task::spawn_blocking(move || import::import_file(&file, &dir, &opts))
        .await
        .map_err(WorkError::Join)??;
    drop(tmp);
    if summary
        .available_until
        .is_some_and(|t| t <= jiff::Timestamp::now())
    {
        // Expired: no Snapshot resource, nothing pushed; the archive stays where it is.
        work::delete_snapshot_data(git_dir, &summary.name, None).await?;
        return Ok((summary, None));
    }
    let pushed = work::push_snapshot(git_dir, &summary.name, target).await?;
    Ok((summary, Some(pushed)))
}

/// Imports every archive of the original controller at the root of `config`'s bucket that
/// has no Snapshot CR, and creates its Snapshot CR `Completed`. Failures are logged per
/// archive (an archive that cannot be imported is left alone and named in the log).
pub async fn import_archives(ctx: &Context, config: &str, target: &StoreTarget) {
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.options.namespace);
    let existing: HashSet<String> = match api.list(&Default::default()).await {
        Ok(l) => l.into_iter().map(|s| s.name_any()).collect(),
        Err(e) => {
            tracing::warn!("restoresnapshots: listing snapshots: {e}");
            return;
        }
    };
    let root = match work::open_store(&bucket_root(target)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(config = %config, "restoresnapshots: archives: {e}");
            return;
        }
    };
    let found = match archives(&root).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(config = %config, "restoresnapshots: listing archives: {e}");
            return;
        }
    };
    let bucket = target.spec.bucket.trim();
    for (name, key) in found {
        if existing.contains(&name) {
            continue;
        }
        let label = format!("s3://{bucket}/{key}");
        let (summary, pushed) = match import_one(
            &root,
            target,
            &ctx.options.git_dir(),
            &ctx.options.data_dir,
            &key,
            &label,
        )
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(archive = %label, "restoresnapshots: importing the original's archive: {e}");
                continue;
            }
        };
        let Some(pushed) = pushed else {
            tracing::info!(archive = %label, "the original's archive has expired (availableUntil passed): not imported");
            continue;
        };
        let mut cr = Snapshot::new(
            &name,
            crd::SnapshotSpec {
                cluster_name: summary.cluster_name.clone(),
                available_until: summary.available_until.map(Time),
                objectstore_config: Some(config.to_owned()),
                ..Default::default()
            },
        );
        cr.metadata.annotations = Some(
            [
                (IMPORTED_FROM.to_owned(), label.clone()),
                (
                    super::snapshot::RESTORED_FROM_STORE.to_owned(),
                    "true".to_owned(),
                ),
            ]
            .into_iter()
            .collect(),
        );
        cr.metadata.finalizers = Some(vec![crd::SNAPSHOT_FINALIZER.to_owned()]);
        match api.create(&Default::default(), &cr).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => {
                tracing::warn!(snapshot = %name, "restoresnapshots: creating the CR: {e}");
                continue;
            }
        }
        let mut status = SnapshotStatus {
            phase: phase::COMPLETED.into(),
            cluster_name: summary.cluster_name.clone(),
            available_until: summary.available_until.map(Time),
            number_of_contents: summary.number_of_contents,
            snapshot_resource_version: summary.snapshot_resource_version.clone(),
            snapshot_timestamp: Some(Time(summary.snapshot_timestamp)),
            stored_timestamp: Some(Time(pushed.stored_at)),
            stored_file_size: pushed.stored_bytes,
            commit: Some(summary.commit.clone()),
            ..Default::default()
        };
        let msg = format!("imported from the original controller's archive {label}");
        for c in [condition::SUCCEEDED, condition::READY] {
            set_condition(
                &mut status.conditions,
                c,
                true,
                "ImportedFromArchive",
                &msg,
                Some(1),
            );
        }
        match super::patch_status(&api, "snapshot", &name, &status).await {
            Ok(()) => {
                tracing::info!(snapshot = %name, archive = %label, "imported the original's archive")
            }
            Err(e) => tracing::warn!(snapshot = %name, "restoresnapshots: {e}"),
        }
    }
}

/// Deletes the original's archive an imported Snapshot CR names (its [`IMPORTED_FROM`]
/// annotation), when the user deletes that CR. Only a key at the root of the CR's own
/// bucket is ever deleted.
pub async fn delete_archive(obj: &Snapshot, target: &StoreTarget) -> Result<(), WorkError> {
    let Some(label) = obj.annotations().get(IMPORTED_FROM) else {
        return Ok(());
    };
    let bucket = target.spec.bucket.trim();
    let Some(key) = label
        .strip_prefix("s3://")
        .and_then(|r| r.strip_prefix(bucket))
        .and_then(|r| r.strip_prefix('/'))
        .filter(|k| !k.contains('/') && k.ends_with(".tgz"))
    else {
        tracing::warn!(snapshot = %obj.name_any(), archive = %label, "not an archive of this Snapshot's bucket; left alone");
        return Ok(());
    };
    let root = work::open_store(&bucket_root(target)).await?;
    root.delete(key).await?;
    tracing::info!(snapshot = %obj.name_any(), archive = %label, "deleted the original's archive with its imported Snapshot");
    Ok(())
}
