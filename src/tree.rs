//! The snapshot tree format v1: content paths, canonical object form and canonical YAML.
