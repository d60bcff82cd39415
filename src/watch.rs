//! File drops: a watched directory of restore requests. Not implemented yet.
