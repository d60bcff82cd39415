//! The object store (local directory or S3) the mirror is pushed to. Not implemented yet.
