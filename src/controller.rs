//! The CRD-driven controller (Snapshot, Restore, RestorePreference, ObjectstoreConfig in
//! `clustersnapshot.rywt.io/v1alpha1`). Not implemented yet.
