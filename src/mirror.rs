//! The local git mirror (bare repository). The only module that imports `git2`.
