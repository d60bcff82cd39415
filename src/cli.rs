//! The command line: flag parsing, validated options, output formats (`-o table|json|yaml`),
//! progress and exit codes. The only module that prints; everything else returns values.
