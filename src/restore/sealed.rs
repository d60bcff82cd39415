//! Opening a loaded snapshot's sealed Secret values (docs/encryption.md) before it is planned,
//! and the check that no sealed value reaches a plan.
//!
//! Owns: those two steps. Must not touch: the cryptography (`crypt`), git, clusters.

use super::LoadedSnapshot;
use crate::crypt::{self, CryptError, Identities};

impl LoadedSnapshot {
    /// The recipients the snapshot's metadata records (empty when it records none).
    fn recipients(&self) -> Vec<String> {
        self.encryption
            .as_ref()
            .map(|e| e.recipients.clone())
            .unwrap_or_default()
    }

    /// Opens every sealed value with `ids`, all or nothing. A snapshot without sealed values
    /// needs no identity; one with them fails without (or with a wrong one), naming the
    /// recipients it is sealed to. Returns how many values were opened.
    pub fn open_sealed(&mut self, ids: Option<&Identities>) -> Result<usize, CryptError> {
        let Some(ids) = ids else {
            self.ensure_opened()?;
            return Ok(0);
        };
        let recipients = self.recipients();
        let mut opened = Vec::with_capacity(self.objects.len());
        let mut n = 0;
        for o in &self.objects {
            if crypt::has_sealed(&o.object) {
                let mut object = o.object.clone();
                n +=
                    crypt::open_object(&mut object, ids, &self.name, o.path.as_str(), &recipients)?;
                opened.push(Some(object));
            } else {
                opened.push(None);
            }
        }
        for (o, new) in self.objects.iter_mut().zip(opened) {
            if let Some(object) = new {
                o.object = object;
            }
        }
        Ok(n)
    }

    /// An error naming the recipients when any sealed value is left.
    pub fn ensure_opened(&self) -> Result<(), CryptError> {
        if self.objects.iter().any(|o| crypt::has_sealed(&o.object)) {
            return Err(CryptError::NoIdentity {
                snapshot: self.name.clone(),
                recipients: self.recipients(),
            });
        }
        Ok(())
    }
}
