//! Opening a loaded snapshot's sealed Secret values (docs/encryption.md) before it is planned,
//! and the check that no sealed value reaches a plan.
//!
//! Owns: reading the snapshot's data key files (through `mirror`) and those two steps. Must
//! not touch: the cryptography (`crypt`), git internals, clusters.

use std::collections::BTreeMap;

use super::LoadedSnapshot;
use crate::crypt::{self, CryptError, Identities, Opener};
use crate::mirror::{CommitId, Mirror, MirrorError};

/// The wrapped data keys of the snapshot at `commit` (`.k8s-snap/keys/<id>.age`), by id.
pub(super) fn load_keys(
    mirror: &Mirror,
    commit: &CommitId,
) -> Result<BTreeMap<String, Vec<u8>>, MirrorError> {
    let mut keys = BTreeMap::new();
    mirror.walk_files(commit, crypt::KEYS_DIR, |file, bytes| {
        if let Some(id) = crypt::key_id_of_file(file) {
            keys.insert(id.to_owned(), bytes.to_vec());
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(keys)
}

impl LoadedSnapshot {
    /// The recipients the snapshot's metadata records (empty when it records none).
    fn recipients(&self) -> Vec<String> {
        self.encryption
            .as_ref()
            .map(|e| e.recipients.clone())
            .unwrap_or_default()
    }

    /// Whether an object may hold sealed values: a Secret, or an object of a resource with
    /// user-named sealed fields (recorded in the snapshot's metadata).
    fn may_hold_sealed(&self, o: &super::SnapshotObject, paths: &[crypt::SealedPath]) -> bool {
        (o.path.group().is_empty() && o.path.resource() == "secrets")
            || paths
                .iter()
                .any(|p| p.applies_to(o.path.group(), o.path.resource()))
    }

    /// The user-named sealed fields the snapshot's metadata records.
    fn sealed_paths(&self) -> Vec<crypt::SealedPath> {
        self.encryption
            .iter()
            .flat_map(|e| &e.paths)
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The user-named sealed fields, as masks for diffs: a plan holds their values opened.
    pub(crate) fn sealed_fields(&self) -> crate::tree::secret::SealedFields {
        let mut fields = crate::tree::secret::SealedFields::default();
        for p in self.sealed_paths() {
            fields.add(&p.group, &p.resource, p.fields);
        }
        fields
    }

    /// Opens every sealed value with `ids`, all or nothing. A snapshot without sealed values
    /// needs no identity; one with them fails without (or with a wrong one), naming the
    /// recipients it is sealed to. Returns how many values were opened.
    pub fn open_sealed(&mut self, ids: Option<&Identities>) -> Result<usize, CryptError> {
        let Some(ids) = ids else {
            self.ensure_opened()?;
            return Ok(0);
        };
        let paths = self.sealed_paths();
        if !self
            .objects
            .iter()
            .any(|o| self.may_hold_sealed(o, &paths) && has_sealed(&o.object))
        {
            return Ok(0);
        }
        let recipients = self.recipients();
        let opener = Opener::new(ids, &self.keys, &self.name, &recipients)?;
        let mut opened = Vec::with_capacity(self.objects.len());
        let mut n = 0;
        for o in &self.objects {
            if self.may_hold_sealed(o, &paths) && has_sealed(&o.object) {
                let mut object = o.object.value();
                n += crypt::open_object(
                    &mut object,
                    &opener,
                    &self.name,
                    self.moved_from
                        .get(o.path.as_str())
                        .map_or(o.path.as_str(), String::as_str),
                    &recipients,
                )?;
                opened.push(Some(object));
            } else {
                opened.push(None);
            }
        }
        for (o, new) in self.objects.iter_mut().zip(opened) {
            if let Some(object) = new {
                o.object = object.into();
            }
        }
        Ok(n)
    }

    /// An error naming the recipients when any sealed value is left.
    pub fn ensure_opened(&self) -> Result<(), CryptError> {
        let paths = self.sealed_paths();
        if self
            .objects
            .iter()
            .any(|o| self.may_hold_sealed(o, &paths) && has_sealed(&o.object))
        {
            return Err(CryptError::NoIdentity {
                snapshot: self.name.clone(),
                recipients: self.recipients(),
            });
        }
        Ok(())
    }
}

/// [`crypt::has_sealed`] of an object, without building the tree of one whose text holds no
/// string starting like a sealed value (`k8s-snap:v2:`, `k8s-snap:age:v1:`).
fn has_sealed(o: &super::CompactObject) -> bool {
    o.mentions("\"k8s-snap:") && crypt::has_sealed(&o.value())
}
