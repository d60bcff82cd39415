//! Restore: preference filter, rules, plan (diff tree vs live) and create-only apply.
//! Not implemented yet.
